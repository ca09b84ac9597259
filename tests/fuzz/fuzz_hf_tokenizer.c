/* fuzz_hf_tokenizer.c: bytes as a HF tokenizer directory ->
 * cllm_tokenizer_from_hf_dir -> encode and decode.
 *
 * Bytes 0..1 (little-endian) give the length L of tokenizer.json, the next L
 * bytes are tokenizer.json, the rest is tokenizer_config.json (no such file
 * when the rest is empty: it is optional). Written to a private temporary
 * directory.
 *
 * Properties: a refusal carries a message; a tokenizer that loads has at
 * most 2 ids per input byte plus 2^16, bos/eos/pad ids in range (or -1), BOS added only with a BOS id, a 16-digit
 * hash; each id's text is found again by cllm_tokenizer_find (as that id or a
 * later one of the same text) and has a type 1..6. Fixed strings, one made of
 * the decoded tokens and one of the stored texts are encoded with and without
 * special tokens (a pre-tokenizer match that hits PCRE2's limits may refuse,
 * CLLM_ELIMIT; nothing else may): ids < vocab, decode gives a NUL-terminated
 * text equal to the tokens' token_bytes concatenated. A tokenizer without
 * special tokens or unk (every byte encodes alone as itself or as nothing)
 * decodes encode(s) to s minus the bytes it has no token for. The chat
 * template's output, when it has one, encodes.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fuzz.h"
#include "tokenizer.h"

#define MAX_CHECKED_IDS 65536 /* per-id checks up to this many ids */
#define MAX_TEXT 4096

static char dir[64];

static void cleanup(void) {
    static const char *const files[] = { "tokenizer.json", "tokenizer_config.json", NULL };
    fuzz_remove_dir(dir, files);
}

typedef struct tcase {
    const cllm_tokenizer *tok;
    size_t vocab;
    int plain;                    /* no special tokens, no unk: the round trip holds */
    unsigned char droppable[256]; /* plain: 1 when the byte has no token */
} tcase;

static void roundtrip(const tcase *T, const char *s, size_t len, int special) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = cllm_tokenizer_encode(T->tok, s, len, special, &ids, &n);
    if (rc) {
        if (rc != CLLM_ELIMIT || !*cllm_errmsg()) fuzz_fail("encode failed (%d): %s", rc, cllm_errmsg());
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= T->vocab) fuzz_fail("id %d at %zu outside vocab %zu", ids[i], i, T->vocab);
    char *text = NULL;
    size_t tlen = 0;
    if (cllm_tokenizer_decode(T->tok, ids, n, &text, &tlen)) fuzz_fail("decode failed: %s", cllm_errmsg());
    if (text[tlen] != 0) fuzz_fail("decode output not NUL-terminated");
    size_t at = 0;
    char buf[1024];
    for (size_t i = 0; i < n; i++) {
        size_t k;
        if (cllm_tokenizer_token_bytes(T->tok, ids[i], buf, sizeof buf, &k)) {
            if (k <= sizeof buf) fuzz_fail("token_bytes(%d) failed: %s", ids[i], cllm_errmsg());
            at += k; /* longer than buf: its length is still given */
            continue;
        }
        if (at + k > tlen || memcmp(text + at, buf, k)) fuzz_fail("token_bytes of id %d differ from decode", ids[i]);
        at += k;
    }
    if (at != tlen) fuzz_fail("token_bytes give %zu bytes, decode %zu", at, tlen);
    if (T->plain) {
        char *want = malloc(len + 1);
        size_t wl = 0;
        for (size_t i = 0; i < len; i++)
            if (!T->droppable[(unsigned char)s[i]]) want[wl++] = s[i];
        if (wl != tlen || memcmp(want, text, wl))
            fuzz_fail("decode(encode(s)) != s minus dropped bytes: %zu bytes in, %zu expected, %zu out", len, wl, tlen);
        free(want);
    }
    free(text);
    free(ids);
}

/* GPT-2's byte -> char map (the ByteLevel alphabet), as UTF-8. */
static size_t byte_char(unsigned b, char *o) {
    unsigned cp = b, n = 0;
    int self = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    if (!self) {
        for (unsigned c = 0; c < b; c++)
            if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff))) n++;
        cp = 0x100 + n;
    }
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* plain: no token of a special type, and each byte alone encodes as its
 * ByteLevel char's token or, without one, as nothing (no unk). */
static void classify(tcase *T) {
    T->plain = T->vocab <= MAX_CHECKED_IDS;
    for (size_t i = 0; T->plain && i < T->vocab; i++) {
        int ty = cllm_tokenizer_token_type(T->tok, (int32_t)i);
        if (ty == CLLM_TOK_CONTROL || ty == CLLM_TOK_USER_DEFINED || ty == CLLM_TOK_UNKNOWN) T->plain = 0;
    }
    for (int b = 0; T->plain && b < 256; b++) {
        char c = (char)b, u[2];
        int32_t *ids = NULL;
        size_t n = 0;
        int32_t want = cllm_tokenizer_find(T->tok, u, byte_char((unsigned)b, u));
        if (cllm_tokenizer_encode(T->tok, &c, 1, 0, &ids, &n)) T->plain = 0;
        else if (want < 0 ? n != 0 : n != 1 || ids[0] != want) T->plain = 0;
        T->droppable[b] = want < 0;
        free(ids);
    }
}

static void check_ids(const tcase *T) {
    const cllm_tokenizer *t = T->tok;
    int b = cllm_tokenizer_bos(t), e = cllm_tokenizer_eos(t), p = cllm_tokenizer_pad(t);
    if (b < -1 || e < -1 || p < -1 || (b >= 0 && (size_t)b >= T->vocab) || (e >= 0 && (size_t)e >= T->vocab) ||
        (p >= 0 && (size_t)p >= T->vocab))
        fuzz_fail("bos %d, eos %d, pad %d outside vocab %zu", b, e, p, T->vocab);
    if (cllm_tokenizer_add_bos(t) && b < 0) fuzz_fail("add_bos without a BOS id");
    const char *h = cllm_tokenizer_hash(t);
    if (strlen(h) != 16 || strspn(h, "0123456789abcdef") != 16) fuzz_fail("hash \"%s\"", h);
    cllm_tokenizer_pre_name(t);
    size_t lim = T->vocab < MAX_CHECKED_IDS ? T->vocab : MAX_CHECKED_IDS;
    for (size_t i = 0; i < lim; i++) {
        size_t l;
        const char *s = cllm_tokenizer_token_text(t, (int32_t)i, &l);
        if (!s || s[l]) fuzz_fail("text of id %zu missing or unterminated", i);
        int ty = cllm_tokenizer_token_type(t, (int32_t)i);
        if (ty < 1 || ty > 6) fuzz_fail("id %zu has type %d", i, ty);
        /* The vocabulary map: a later duplicate wins. */
        int32_t j = cllm_tokenizer_find(t, s, l);
        size_t l2;
        const char *s2 = j >= 0 ? cllm_tokenizer_token_text(t, j, &l2) : NULL;
        if (j < (int32_t)i || !s2 || l2 != l || memcmp(s, s2, l)) fuzz_fail("find(text of id %zu) gives %d", i, j);
    }
}

static void exercise(const cllm_tokenizer *tok, size_t size) {
    static tcase T;
    memset(&T, 0, sizeof T);
    T.tok = tok;
    T.vocab = cllm_tokenizer_vocab(tok);
    if (T.vocab == 0) fuzz_fail("a tokenizer without tokens loaded");
    /* Each token given takes a byte of the input or more, and at most as
     * many ids again plus 2^16 may be without a token: tables that grow with
     * the ids' values, not with the file, are an allocation blow-up. */
    if (T.vocab > 2 * size + 65536) fuzz_fail("vocab of %zu ids from %zu bytes", T.vocab, size);
    check_ids(&T);
    classify(&T);
    static const char *const fixed[] = {
        "Hello, world! 123 4567 x=3.14",
        " \t\n\r  two  spaces\n\n",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 \xf0\x9f\x99\x82",
        "\xff\xfe\xc3(\x80 \xed\xa0\x80",
        "'s 're 've don't I'M",
        "<|im_start|>user\nhi<|im_end|>\n<s></s><unk><|endoftext|>",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        roundtrip(&T, fixed[i], strlen(fixed[i]), 0);
        roundtrip(&T, fixed[i], strlen(fixed[i]), 1);
    }
    roundtrip(&T, "a\0b", 3, 1);
    /* Text made of the vocabulary, decoded and as stored, from ids spread
     * over the vocabulary: reaches the merges and the special tokens. */
    char *dec = malloc(MAX_TEXT), *raw = malloc(MAX_TEXT);
    size_t dl = 0, rl = 0, step = T.vocab / 97 + 1;
    for (size_t i = 0; i < T.vocab; i += step) {
        size_t k;
        if (!cllm_tokenizer_token_bytes(tok, (int32_t)i, dec + dl, MAX_TEXT - dl, &k)) dl += k;
        const char *s = cllm_tokenizer_token_text(tok, (int32_t)i, &k);
        if (s && k <= MAX_TEXT - rl) {
            memcpy(raw + rl, s, k);
            rl += k;
        }
    }
    roundtrip(&T, dec, dl, 0);
    roundtrip(&T, dec, dl, 1);
    roundtrip(&T, raw, rl, 1);
    free(dec);
    free(raw);
    char *chat = NULL;
    if (!cllm_chat_apply(tok, "What is 2+2?", &chat)) {
        if (strncmp(chat, "<|im_start|>", 12)) fuzz_fail("chat prompt does not start with <|im_start|>");
        roundtrip(&T, chat, strlen(chat), 1);
        free(chat);
    } else if (!*cllm_errmsg())
        fuzz_fail("chat_apply failed without a message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        if (fuzz_make_dir(dir, sizeof dir)) return 0;
        atexit(cleanup);
    }
    if (size < 2) return 0;
    size_t l = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (l > size) l = size;
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (fuzz_write_file(p, data, l)) return 0;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    if (size > l && fuzz_write_file(p, data + l, size - l)) return 0;
    cllm_tokenizer *tok;
    if (cllm_tokenizer_from_hf_dir(&tok, dir)) {
        if (!*cllm_errmsg()) fuzz_fail("refused without a message");
        if (tok) fuzz_fail("refused but a tokenizer returned");
        return 0;
    }
    exercise(tok, size);
    cllm_tokenizer_free(tok);
    return 0;
}
