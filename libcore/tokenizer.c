/* tokenizer.c: byte-level BPE equal to HF `tokenizers` (BPE model, ByteLevel
 * pre-tokenizer and decoder, added tokens), token for token.
 *
 * Encoding, in order:
 *  1. Special tokens (GGUF types CONTROL, UNKNOWN, USER_DEFINED; HF added
 *     tokens) are found in the raw bytes, leftmost first, longest at a
 *     position (HF's aho-corasick LeftmostLongest). CONTROL/UNKNOWN ones only
 *     when parse_special; USER_DEFINED ones always (as HF and llama.cpp do).
 *  2. The text between them goes through the pre-tokenizer pipeline (see
 *     tokenizer_int.h): PCRE2 with PCRE2_UTF|PCRE2_UCP|PCRE2_MATCH_INVALID_UTF.
 *     `\s`/`\S` in patterns are rewritten to Unicode White_Space, which is what
 *     Oniguruma (HF's regex engine) means by `\s` (PCRE2's UCP `\s` also takes
 *     U+180E), and `\p{L}`/`\p{N}` are widened by the Unicode 15-16 letters
 *     and numbers an older PCRE2 does not know (L_NEW, N_NEW). Invalid UTF-8 never matches a pattern, so bytes of an invalid
 *     sequence end up in the gap pieces between matches and are then tokenized
 *     as bytes like any other: the input is bytes, nothing is rejected.
 *  3. Each piece is mapped byte -> GPT-2 unicode char, one symbol per byte;
 *     a byte whose one-char symbol is missing from the vocab is dropped (HF
 *     with unk_token null; SmolLM2 lacks 21 such bytes, e.g. 0x04, 0xff), or
 *     becomes the unk token when one is configured (HF directory with
 *     unk_token). Adjacent symbols are merged by rank, lowest rank first, ties
 *     leftmost (a binary heap with stale entries skipped, as HF does), so a
 *     piece of any length costs O(n log n).
 * Decoding concatenates each token's bytes: normal tokens map their chars back
 * through the inverse byte map (a token with a char outside the map gives its
 * raw UTF-8, like HF's ByteLevel decoder); special tokens give their text.
 *
 * Invariants: every id stored or returned is in [0, n_vocab); vocab and merge
 * hash tables are open addressing with power-of-two capacity and load <= 1/2;
 * the tokenizer is immutable after construction, so encode/decode may run on
 * several threads at once (each call makes its own PCRE2 match data).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer_int.h"

#include "err.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cllm_pre_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char pre_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char pre_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Unicode White_Space, the body of a character class. */
#define WS_BODY "\\t-\\r\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/* Letters (L_NEW) and numbers (N_NEW) of Unicode 15.0 to 16.0, which HF's
 * Oniguruma classes as \p{L} / \p{N} and PCRE2 before 10.43 (Unicode 14;
 * Debian 12 has 10.42) as unassigned: \p{L} and \p{N} in patterns are
 * widened by them, so that text in these scripts splits as in HF whichever
 * PCRE2 is linked (a newer one has them already; the union is the same).
 * Made with tokenizers 0.23.3: each code point that is Cn in Unicode 14 tested
 * against HF's \p{L} and \p{N}. */
#define L_NEW \
    "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}" \
    "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}\\x{1123f}-\\x{11240}" \
    "\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}" \
    "\\x{11bc0}-\\x{11be0}\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}\\x{1342f}" \
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}\\x{16d40}-\\x{16d6c}\\x{18cff}" \
    "\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}" \
    "\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}"
#define N_NEW \
    "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}\\x{11f50}-\\x{11f59}" \
    "\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}" \
    "\\x{1e4f0}-\\x{1e4f9}\\x{1e5f1}-\\x{1e5fa}"

/* HF's Digits step asks Rust's char::is_numeric, which knows Unicode 17
 * (tokenizers 0.23.3), where its regexes (Oniguruma) and N_NEW stop at 16:
 * the digits added in 17 (Tolong Siki, and U+16FF4-16FF6), each code point
 * compared with HF. \p{N} is widened by N_NEW when the pattern is compiled. */
#define DIGITS_CLASS "[\\p{N}\\x{11de0}-\\x{11de9}\\x{16ff4}-\\x{16ff6}]"

int cllm_pretok_from_name(const char *name, cllm_tok_opts *o, cllm_pretok_step *steps) {
    o->steps = steps;
    o->unk_id = -1;
    o->ignore_merges = 0;
    o->n_steps = 0;
    if (!name || !*name || !strcmp(name, "default") || !strcmp(name, "gpt2") || !strcmp(name, "gpt-2")) {
        steps[0] = (cllm_pretok_step){ CLLM_PRE_REGEX, cllm_pre_gpt2_pattern, 0 };
        o->n_steps = 1;
    } else if (!strcmp(name, "smollm") || !strcmp(name, "starcoder") || !strcmp(name, "refact")) {
        steps[0] = (cllm_pretok_step){ CLLM_PRE_DIGITS, NULL, 1 };
        steps[1] = (cllm_pretok_step){ CLLM_PRE_REGEX, cllm_pre_gpt2_pattern, 0 };
        o->n_steps = 2;
    } else if (!strcmp(name, "llama3") || !strcmp(name, "llama-bpe") || !strcmp(name, "llama-v3")) {
        steps[0] = (cllm_pretok_step){ CLLM_PRE_REGEX, pre_llama3_pattern, 0 };
        o->n_steps = 1;
        o->ignore_merges = 1;
    } else if (!strcmp(name, "qwen2")) {
        steps[0] = (cllm_pretok_step){ CLLM_PRE_REGEX, pre_qwen2_pattern, 0 };
        o->n_steps = 1;
    }
    return o->n_steps;
}

/* ---- small helpers ---------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ULL; }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* GPT-2 byte -> code point. */
static unsigned byte_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff))) n++;
    return 0x100 + n;
}

static size_t utf8_put(unsigned cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2; /* byte_cp() < 0x800 */
}

/* ---- the tokenizer ------------------------------------------------------ */

typedef struct merge_slot { uint64_t key; uint32_t rank; int32_t id; } merge_slot;

typedef struct pre_step {
    pcre2_code *re;
} pre_step;

struct cllm_tokenizer {
    size_t n_vocab;
    char *tok_pool;          /* token texts as stored (byte-mapped), NUL after each */
    size_t *tok_off;         /* n_vocab + 1 */
    char *dec_pool;          /* decoded bytes of each token */
    size_t *dec_off;         /* n_vocab + 1 */
    int32_t *types;
    uint32_t *vslot;         /* id + 1, 0 empty */
    size_t vmask;
    merge_slot *mslot;       /* key 0 never used: ids are < 2^31 and (0,0) is stored +1 */
    size_t mmask;
    int32_t byte_id[256];
    char bmap[256][2];       /* byte -> its GPT-2 char in UTF-8 */
    unsigned char bmap_len[256];
    int32_t *special;        /* ids, by first byte then longest first */
    size_t n_special;
    uint32_t sp_first[257];  /* bucket [sp_first[b], sp_first[b+1]) */
    int n_steps;
    pre_step steps[CLLM_PRE_MAX_STEPS];
    int bos, eos, pad, unk;
    int add_bos;             /* spec add_bos, and bos >= 0 */
    int ignore_merges;
    uint64_t pre_hash;       /* the pipeline and ignore_merges (pipeline_hash) */
    int32_t *eog;
    size_t n_eog;
    int chatml;
    char *chat_system;
    char hash[17];
};

static size_t tok_len(const cllm_tokenizer *t, int32_t id) { return t->tok_off[id + 1] - t->tok_off[id] - 1; }
static const char *tok_str(const cllm_tokenizer *t, int32_t id) { return t->tok_pool + t->tok_off[id]; }

static int32_t vocab_find(const cllm_tokenizer *t, const char *s, size_t n) {
    size_t h = (size_t)fnv1a(FNV_OFFSET, s, n) & t->vmask;
    for (;;) {
        uint32_t v = t->vslot[h];
        if (!v) return -1;
        int32_t id = (int32_t)(v - 1);
        if (tok_len(t, id) == n && !memcmp(tok_str(t, id), s, n)) return id;
        h = (h + 1) & t->vmask;
    }
}

static inline uint64_t merge_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static const merge_slot *merge_find(const cllm_tokenizer *t, int32_t a, int32_t b) {
    if (!t->mslot) return NULL;
    uint64_t k = merge_key(a, b);
    size_t h = (size_t)mix64(k) & t->mmask;
    for (;;) {
        const merge_slot *s = &t->mslot[h];
        if (!s->key) return NULL;
        if (s->key == k) return s;
        h = (h + 1) & t->mmask;
    }
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Rewrite \s and \S to Unicode White_Space (see the file comment), and
 * widen \p{L} and \p{N} by L_NEW and N_NEW. */
static char *rewrite_pattern(const char *p) {
    size_t n = strlen(p), cap;
    /* the longest expansion per pattern byte: \p{L} (5 bytes) to [\p{L}L_NEW] */
    if (cllm_mul_size(n, sizeof WS_BODY + sizeof L_NEW + 4, &cap) || cllm_add_size(cap, 1, &cap)) {
        cllm_error(CLLM_ELIMIT, "pre-tokenizer pattern too long");
        return NULL;
    }
    char *o = cllm_malloc(cap);
    if (!o) return NULL;
    size_t k = 0;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[++i];
            if (d == 's') {
                k += (size_t)sprintf(o + k, in_class ? "%s" : "[%s]", WS_BODY);
            } else if (d == 'S' && !in_class) {
                k += (size_t)sprintf(o + k, "[^%s]", WS_BODY);
            } else if (d == 'p' && i + 3 < n && p[i + 1] == '{' && (p[i + 2] == 'L' || p[i + 2] == 'N') &&
                       p[i + 3] == '}') {
                char cl = p[i + 2];
                k += (size_t)sprintf(o + k, in_class ? "\\p{%c}%s" : "[\\p{%c}%s]", cl, cl == 'L' ? L_NEW : N_NEW);
                i += 3;
            } else {
                o[k++] = c;
                o[k++] = d;
            }
            continue;
        }
        o[k++] = c;
        if (in_class && c == '[' && i + 2 < n && (p[i + 1] == ':' || p[i + 1] == '.' || p[i + 1] == '=')) {
            /* a POSIX class ([:punct:], [.x.], [=x=]) inside a class: copied whole, its ']' does not end the class */
            size_t j = i + 2;
            while (j + 1 < n && !(p[j] == p[i + 1] && p[j + 1] == ']')) j++;
            if (j + 1 < n) {
                memcpy(o + k, p + i + 1, j + 1 - i);
                k += j + 1 - i;
                i = j + 1;
            }
        } else if (!in_class && c == '[') {
            in_class = 1;
            if (i + 1 < n && p[i + 1] == '^') o[k++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') o[k++] = p[++i];
        } else if (in_class && c == ']') {
            in_class = 0;
        }
    }
    o[k] = 0;
    return o;
}

static int compile_re(pcre2_code **out, const char *pattern) {
    char *pat = rewrite_pattern(pattern);
    if (!pat) return CLLM_ENOMEM;
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return cllm_error(CLLM_EFORMAT, "pre-tokenizer pattern does not compile at %zu: %s", (size_t)eo,
                          (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    *out = re;
    return 0;
}

void cllm_tokenizer_free(cllm_tokenizer *t) {
    if (!t) return;
    free(t->tok_pool); free(t->tok_off); free(t->dec_pool); free(t->dec_off);
    free(t->types); free(t->vslot); free(t->mslot); free(t->special); free(t->eog);
    free(t->chat_system);
    for (int i = 0; i < t->n_steps; i++) pcre2_code_free(t->steps[i].re);
    free(t);
}

static int is_special_type(int32_t ty) {
    return ty == CLLM_TOK_CONTROL || ty == CLLM_TOK_USER_DEFINED || ty == CLLM_TOK_UNKNOWN;
}

/* Decoded bytes of normal token text s: the inverse byte map, or s itself if
 * some char is outside the map. Writes at most n bytes to o. */
static size_t decode_token(const unsigned char *s, size_t n, const int16_t *inv, char *o) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t l;
        if (s[i] < 0x80) { cp = s[i]; l = 1; }
        else if ((s[i] & 0xe0) == 0xc0 && i + 1 < n && (s[i + 1] & 0xc0) == 0x80) {
            cp = ((unsigned)(s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f); l = 2;
        } else { cp = 0xffffffffu; l = 1; }
        if (cp >= 0x144 || inv[cp] < 0) { memcpy(o, s, n); return n; }
        o[k++] = (char)inv[cp];
        i += l;
    }
    return k;
}

static void pre_describe_hash(uint64_t *h, const cllm_pretok_step *steps, int n_steps) {
    for (int i = 0; i < n_steps; i++) {
        char buf[32];
        if (steps[i].kind == CLLM_PRE_DIGITS) {
            snprintf(buf, sizeof buf, "digits:%d|", steps[i].individual ? 1 : 0);
            *h = fnv1a(*h, buf, strlen(buf));
        } else {
            *h = fnv1a(*h, "regex:", 6);
            *h = fnv1a(*h, steps[i].pattern, strlen(steps[i].pattern) + 1);
        }
    }
}

/* Hash of a pre-tokenizer pipeline with its ignore_merges flag: equal for
 * two tokenizers that split text alike (cllm_tokenizer_pre_name). */
static uint64_t pipeline_hash(const cllm_pretok_step *steps, int n_steps, int ignore_merges) {
    uint64_t h = FNV_OFFSET;
    pre_describe_hash(&h, steps, n_steps);
    if (ignore_merges) h = fnv1a(h, "ignore_merges", 13);
    return h;
}

static int build_specials(cllm_tokenizer *t) {
    size_t n = 0;
    for (size_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->types[i]) && tok_len(t, (int32_t)i)) n++;
    t->special = cllm_malloc((n ? n : 1) * sizeof *t->special);
    if (!t->special) return CLLM_ENOMEM;
    /* counting sort by first byte, then longest first within a bucket */
    uint32_t cnt[257] = {0};
    for (size_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->types[i]) && tok_len(t, (int32_t)i)) cnt[(unsigned char)tok_str(t, (int32_t)i)[0] + 1]++;
    for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
    memcpy(t->sp_first, cnt, sizeof cnt);
    uint32_t fill[256];
    memcpy(fill, cnt, sizeof fill);
    for (size_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->types[i]) && tok_len(t, (int32_t)i))
            t->special[fill[(unsigned char)tok_str(t, (int32_t)i)[0]]++] = (int32_t)i;
    /* Longest first, and of equal lengths the later id first, so that of two
     * specials with one text the later is matched, as the vocabulary map's
     * later duplicate wins (cllm_tokenizer_find). Insertion sort: buckets are small. */
    for (int b = 0; b < 256; b++) {
        for (uint32_t i = t->sp_first[b] + 1; i < t->sp_first[b + 1]; i++) {
            int32_t x = t->special[i];
            uint32_t j = i;
            while (j > t->sp_first[b] && (tok_len(t, t->special[j - 1]) < tok_len(t, x) ||
                   (tok_len(t, t->special[j - 1]) == tok_len(t, x) && t->special[j - 1] < x))) {
                t->special[j] = t->special[j - 1];
                j--;
            }
            t->special[j] = x;
        }
    }
    t->n_special = n;
    return 0;
}

static int build_eog(cllm_tokenizer *t) {
    static const char *const names[] = { "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
                                         "<|end_of_text|>", "<end_of_turn>", "<|end|>", "</s>" };
    t->eog = cllm_malloc((sizeof names / sizeof names[0] + 1) * sizeof *t->eog);
    if (!t->eog) return CLLM_ENOMEM;
    if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = vocab_find(t, names[i], strlen(names[i]));
        if (id >= 0 && id != t->eos && is_special_type(t->types[id])) t->eog[t->n_eog++] = id;
    }
    return 0;
}

int cllm_tokenizer_new_ex(cllm_tokenizer **out, const cllm_tokenizer_spec *spec, const cllm_tok_opts *opts) {
    *out = NULL;
    if (!spec || !spec->tokens || spec->n_tokens == 0)
        return cllm_error(CLLM_EINVAL, "tokenizer has no tokens");
    if (spec->n_tokens > (size_t)INT32_MAX - 1)
        return cllm_error(CLLM_ELIMIT, "tokenizer has %zu tokens, more than supported", spec->n_tokens);
    if (spec->n_merges && !spec->merges) return cllm_error(CLLM_EINVAL, "tokenizer merges missing");
    cllm_pretok_step named[CLLM_PRE_MAX_STEPS];
    cllm_tok_opts o;
    if (opts) {
        o = *opts;
    } else if (!cllm_pretok_from_name(spec->pre, &o, named)) {
        return cllm_error(CLLM_EUNSUP, "unknown pre-tokenizer \"%s\"", spec->pre);
    }
    const cllm_pretok_step *steps = o.steps;
    int n_steps = o.n_steps, unk_id = o.unk_id;
    if (n_steps < 0 || n_steps > CLLM_PRE_MAX_STEPS || (n_steps && !steps))
        return cllm_error(CLLM_ELIMIT, "pre-tokenizer has %d steps, at most %d supported", n_steps, CLLM_PRE_MAX_STEPS);

    cllm_tokenizer *t = cllm_calloc(1, sizeof *t);
    if (!t) return CLLM_ENOMEM;
    int rc = CLLM_ENOMEM;
    size_t n = spec->n_tokens;
    t->n_vocab = n;
    t->unk = unk_id;
    t->ignore_merges = o.ignore_merges;

    /* token pool */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!spec->tokens[i]) { rc = cllm_error(CLLM_EFORMAT, "token %zu missing", i); goto fail; }
        size_t l = spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
        if (cllm_add_size(total, l, &total) || cllm_add_size(total, 1, &total)) {
            rc = cllm_error(CLLM_ELIMIT, "token texts too large"); goto fail;
        }
    }
    t->tok_pool = cllm_malloc(total);
    t->tok_off = cllm_malloc((n + 1) * sizeof *t->tok_off);
    t->dec_off = cllm_malloc((n + 1) * sizeof *t->dec_off);
    t->types = cllm_malloc(n * sizeof *t->types);
    if (!t->tok_pool || !t->tok_off || !t->dec_off || !t->types) goto fail;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
        t->tok_off[i] = off;
        memcpy(t->tok_pool + off, spec->tokens[i], l);
        t->tok_pool[off + l] = 0;
        off += l + 1;
        int32_t ty = spec->token_types ? spec->token_types[i] : CLLM_TOK_NORMAL;
        t->types[i] = ty;
    }
    t->tok_off[n] = off;

    /* vocab hash (a later duplicate wins, as a Python dict / llama.cpp map) */
    size_t vcap = pow2_at_least(n * 2);
    t->vslot = cllm_calloc(vcap, sizeof *t->vslot);
    if (!t->vslot) goto fail;
    t->vmask = vcap - 1;
    for (size_t i = 0; i < n; i++) {
        const char *s = tok_str(t, (int32_t)i);
        size_t l = tok_len(t, (int32_t)i);
        size_t h = (size_t)fnv1a(FNV_OFFSET, s, l) & t->vmask;
        for (;;) {
            uint32_t v = t->vslot[h];
            if (!v) { t->vslot[h] = (uint32_t)i + 1; break; }
            if (tok_len(t, (int32_t)(v - 1)) == l && !memcmp(tok_str(t, (int32_t)(v - 1)), s, l)) {
                t->vslot[h] = (uint32_t)i + 1; break;
            }
            h = (h + 1) & t->vmask;
        }
    }

    /* byte map, byte symbols, decoded pool */
    int16_t inv[0x144];
    for (int i = 0; i < 0x144; i++) inv[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        char u[2];
        unsigned cp = byte_cp(b);
        inv[cp] = (int16_t)b;
        size_t ul = utf8_put(cp, u);
        memcpy(t->bmap[b], u, ul);
        t->bmap_len[b] = (unsigned char)ul;
        t->byte_id[b] = vocab_find(t, u, ul);
    }
    t->dec_pool = cllm_malloc(total);
    if (!t->dec_pool) goto fail;
    off = 0;
    for (size_t i = 0; i < n; i++) {
        t->dec_off[i] = off;
        const char *s = tok_str(t, (int32_t)i);
        size_t l = tok_len(t, (int32_t)i);
        if (is_special_type(t->types[i])) { memcpy(t->dec_pool + off, s, l); off += l; }
        else off += decode_token((const unsigned char *)s, l, inv, t->dec_pool + off);
    }
    t->dec_off[n] = off;

    /* merges: (left id, right id) -> (rank, merged id); a later duplicate wins (HF) */
    if (spec->n_merges) {
        size_t mcap = pow2_at_least(spec->n_merges * 2);
        t->mslot = cllm_calloc(mcap, sizeof *t->mslot);
        if (!t->mslot) goto fail;
        t->mmask = mcap - 1;
        if (spec->n_merges > UINT32_MAX) { rc = cllm_error(CLLM_ELIMIT, "too many merges"); goto fail; }
        char small[256];
        for (size_t r = 0; r < spec->n_merges; r++) {
            const char *m = spec->merges[r];
            if (!m) { rc = cllm_error(CLLM_EFORMAT, "merge %zu missing", r); goto fail; }
            size_t l = spec->merge_lens ? spec->merge_lens[r] : strlen(m);
            const char *sp = l > 1 ? memchr(m + 1, ' ', l - 1) : NULL;
            if (!sp) { rc = cllm_error(CLLM_EFORMAT, "merge %zu has no space: \"%.*s\"", r, (int)(l > 64 ? 64 : l), m); goto fail; }
            size_t la = (size_t)(sp - m), lb = l - la - 1;
            int32_t a = vocab_find(t, m, la), b = vocab_find(t, sp + 1, lb);
            char *cat = l <= sizeof small ? small : cllm_malloc(l);
            if (!cat) goto fail;
            memcpy(cat, m, la);
            memcpy(cat + la, sp + 1, lb);
            int32_t c = vocab_find(t, cat, la + lb);
            if (cat != small) free(cat);
            if (a < 0 || b < 0 || c < 0) {
                rc = cllm_error(CLLM_EFORMAT, "merge %zu \"%.*s\" uses a token not in the vocab", r,
                                (int)(l > 64 ? 64 : l), m);
                goto fail;
            }
            uint64_t k = merge_key(a, b);
            size_t h = (size_t)mix64(k) & t->mmask;
            while (t->mslot[h].key && t->mslot[h].key != k) h = (h + 1) & t->mmask;
            t->mslot[h] = (merge_slot){ k, (uint32_t)r, c };
        }
    }

    if ((rc = build_specials(t))) goto fail;

    for (int i = 0; i < n_steps; i++) {
        const char *pat = steps[i].kind == CLLM_PRE_DIGITS ? (steps[i].individual ? DIGITS_CLASS : DIGITS_CLASS "+")
                                                            : steps[i].pattern;
        if (steps[i].kind != CLLM_PRE_DIGITS && steps[i].kind != CLLM_PRE_REGEX) {
            rc = cllm_error(CLLM_EINVAL, "bad pre-tokenizer step kind %d", steps[i].kind); goto fail;
        }
        if (!pat) { rc = cllm_error(CLLM_EINVAL, "pre-tokenizer step %d has no pattern", i); goto fail; }
        if ((rc = compile_re(&t->steps[i].re, pat))) goto fail;
        t->n_steps = i + 1;
    }

    t->bos = spec->bos_id >= 0 && (size_t)spec->bos_id < n ? spec->bos_id : -1;
    t->eos = spec->eos_id >= 0 && (size_t)spec->eos_id < n ? spec->eos_id : -1;
    t->pad = spec->pad_id >= 0 && (size_t)spec->pad_id < n ? spec->pad_id : -1;
    t->add_bos = spec->add_bos && t->bos >= 0;
    if (unk_id >= 0 && (size_t)unk_id >= n) { rc = cllm_error(CLLM_EFORMAT, "unknown token id %d out of range", unk_id); goto fail; }
    if ((rc = build_eog(t))) goto fail;

    if (spec->chat_template) {
        if ((rc = cllm_chat_template_scan(spec->chat_template, &t->chatml, &t->chat_system))) goto fail;
    } else {
        t->chatml = vocab_find(t, "<|im_start|>", 12) >= 0 && vocab_find(t, "<|im_end|>", 10) >= 0;
    }

    t->pre_hash = pipeline_hash(steps, n_steps, o.ignore_merges);
    /* content hash: pre-tokenizer, tokens with types, merges. UNUSED tokens
     * (ids without a token: "" in a HF directory's gaps, "[PAD<id>]" where a
     * GGUF fills them up to the embedding's rows, as llama.cpp's converter
     * and cllm's GGUF writer do) count by their type alone, and trailing ones
     * not at all: no text reaches them (they are neither merged into nor
     * matched as specials), so the two forms of one tokenizer hash alike. */
    uint64_t h = fnv1a(FNV_OFFSET, "cllm-tokenizer-1", 16);
    pre_describe_hash(&h, steps, n_steps);
    if (o.ignore_merges) h = fnv1a(h, "ignore_merges", 13);
    size_t n_used = n;
    while (n_used && t->types[n_used - 1] == CLLM_TOK_UNUSED) n_used--;
    uint64_t nv = n_used;
    h = fnv1a(h, &nv, sizeof nv);
    for (size_t i = 0; i < n_used; i++) {
        int32_t ty = t->types[i];
        uint64_t l = ty == CLLM_TOK_UNUSED ? 0 : tok_len(t, (int32_t)i);
        h = fnv1a(h, &l, sizeof l);
        h = fnv1a(h, tok_str(t, (int32_t)i), (size_t)l);
        h = fnv1a(h, &ty, sizeof ty);
    }
    uint64_t nm = spec->n_merges;
    h = fnv1a(h, &nm, sizeof nm);
    for (size_t r = 0; r < spec->n_merges; r++) {
        uint64_t l = spec->merge_lens ? spec->merge_lens[r] : strlen(spec->merges[r]);
        h = fnv1a(h, &l, sizeof l);
        h = fnv1a(h, spec->merges[r], (size_t)l);
    }
    snprintf(t->hash, sizeof t->hash, "%016llx", (unsigned long long)h);

    *out = t;
    return 0;
fail:
    cllm_tokenizer_free(t);
    return rc;
}

int cllm_tokenizer_new(cllm_tokenizer **out, const cllm_tokenizer_spec *spec) {
    return cllm_tokenizer_new_ex(out, spec, NULL);
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct idvec { int32_t *v; size_t n, cap; } idvec;

static int push_id(idvec *o, int32_t id) {
    if (o->n == o->cap && cllm_grow((void **)&o->v, &o->cap, o->n + 1, sizeof *o->v)) return CLLM_ENOMEM;
    o->v[o->n++] = id;
    return 0;
}

typedef struct heap_ent { uint32_t rank, pos; } heap_ent;

static int heap_less(heap_ent a, heap_ent b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_ent *hp, size_t *n, heap_ent e) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!heap_less(e, hp[p])) break;
        hp[i] = hp[p];
        i = p;
    }
    hp[i] = e;
}

static heap_ent heap_pop(heap_ent *hp, size_t *n) {
    heap_ent top = hp[0], last = hp[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap_less(hp[c + 1], hp[c])) c++;
        if (!heap_less(hp[c], last)) break;
        hp[i] = hp[c];
        i = c;
    }
    if (m) hp[i] = last;
    return top;
}

typedef struct bpe_work {
    int32_t *id;
    int32_t *prev, *next;
    heap_ent *heap;
    char *map;              /* 2 * cap bytes: the byte-mapped piece (ignore_merges) */
    size_t cap;
} bpe_work;

static int bpe_reserve(bpe_work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t c = w->cap ? w->cap : 64;
    while (c < n) c *= 2;
    size_t hb;
    if (cllm_mul_size(c, 2 * sizeof(heap_ent), &hb)) return cllm_error(CLLM_ELIMIT, "piece too long");
    int32_t *a = cllm_realloc(w->id, c * sizeof *a);
    if (!a) return CLLM_ENOMEM;
    w->id = a;
    if (!(a = cllm_realloc(w->prev, c * sizeof *a))) return CLLM_ENOMEM;
    w->prev = a;
    if (!(a = cllm_realloc(w->next, c * sizeof *a))) return CLLM_ENOMEM;
    w->next = a;
    heap_ent *h = cllm_realloc(w->heap, hb);
    if (!h) return CLLM_ENOMEM;
    w->heap = h;
    char *mp = cllm_realloc(w->map, 2 * c);
    if (!mp) return CLLM_ENOMEM;
    w->map = mp;
    w->cap = c;
    return 0;
}

static int bpe_piece(const cllm_tokenizer *t, const unsigned char *p, size_t len, bpe_work *w, idvec *o) {
    if (len == 1) {
        int32_t id = t->byte_id[p[0]];
        if (id < 0) id = t->unk;
        return id >= 0 ? push_id(o, id) : 0;
    }
    int rc = bpe_reserve(w, len);
    if (rc) return rc;
    if (t->ignore_merges) {
        size_t k = 0;
        for (size_t i = 0; i < len; i++) {
            memcpy(w->map + k, t->bmap[p[i]], t->bmap_len[p[i]]);
            k += t->bmap_len[p[i]];
        }
        int32_t id = vocab_find(t, w->map, k);
        if (id >= 0) return push_id(o, id);
    }
    size_t m = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id < 0) id = t->unk;
        if (id < 0) continue; /* dropped: no symbol for this byte */
        w->id[m] = id;
        w->prev[m] = (int32_t)m - 1;
        w->next[m] = (int32_t)m + 1;
        m++;
    }
    if (!m) return 0;
    w->next[m - 1] = -1;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < m; i++) {
        const merge_slot *s = merge_find(t, w->id[i], w->id[i + 1]);
        if (s) heap_push(w->heap, &hn, (heap_ent){ s->rank, (uint32_t)i });
    }
    while (hn) {
        heap_ent e = heap_pop(w->heap, &hn);
        int32_t i = (int32_t)e.pos;
        if (w->id[i] < 0) continue;            /* merged away */
        int32_t j = w->next[i];
        if (j < 0) continue;
        const merge_slot *s = merge_find(t, w->id[i], w->id[j]);
        if (!s || s->rank != e.rank) continue; /* stale */
        w->id[i] = s->id;
        w->id[j] = -1;
        w->next[i] = w->next[j];
        if (w->next[j] >= 0) w->prev[w->next[j]] = i;
        if (w->prev[i] >= 0) {
            const merge_slot *q = merge_find(t, w->id[w->prev[i]], w->id[i]);
            if (q) heap_push(w->heap, &hn, (heap_ent){ q->rank, (uint32_t)w->prev[i] });
        }
        if (w->next[i] >= 0) {
            const merge_slot *q = merge_find(t, w->id[i], w->id[w->next[i]]);
            if (q) heap_push(w->heap, &hn, (heap_ent){ q->rank, (uint32_t)i });
        }
    }
    for (int32_t i = 0; i >= 0; i = w->next[i])
        if ((rc = push_id(o, w->id[i]))) return rc;
    return 0;
}

typedef struct enc_ctx {
    const cllm_tokenizer *t;
    pcre2_match_data *md;
    bpe_work w;
    idvec out;
} enc_ctx;

static int pretok(enc_ctx *c, int step, const char *s, size_t len) {
    if (!len) return 0;
    if (step == c->t->n_steps) return bpe_piece(c->t, (const unsigned char *)s, len, &c->w, &c->out);
    const pcre2_code *re = c->t->steps[step].re;
    size_t off = 0;
    int rc;
    while (off < len) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, len, off, PCRE2_NOTEMPTY, c->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            return cllm_error(CLLM_ELIMIT, "pre-tokenizer match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms || ms < off || me > len) break; /* cannot happen with PCRE2_NOTEMPTY */
        if ((rc = pretok(c, step + 1, s + off, ms - off))) return rc;
        if ((rc = pretok(c, step + 1, s + ms, me - ms))) return rc;
        off = me;
    }
    return pretok(c, step + 1, s + off, len - off);
}

/* Leftmost-longest special token in [from, len): returns its start or len. */
static size_t find_special(const cllm_tokenizer *t, const char *s, size_t from, size_t len, int parse_special,
                           int32_t *id) {
    for (size_t i = from; i < len; i++) {
        unsigned b = (unsigned char)s[i];
        for (uint32_t k = t->sp_first[b]; k < t->sp_first[b + 1]; k++) {
            int32_t x = t->special[k];
            size_t l = tok_len(t, x);
            if (!parse_special && t->types[x] != CLLM_TOK_USER_DEFINED) continue;
            if (l <= len - i && !memcmp(s + i, tok_str(t, x), l)) { *id = x; return i; }
        }
    }
    return len;
}

int cllm_tokenizer_encode(const cllm_tokenizer *t, const char *text, size_t len,
                          int parse_special, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len)) return cllm_error(CLLM_EINVAL, "encode: no tokenizer or text");
    if (len > (size_t)INT32_MAX) return cllm_error(CLLM_ELIMIT, "encode: text of %zu bytes is too long", len);
    enc_ctx c = { .t = t };
    int rc = 0;
    if (t->n_steps && !(c.md = pcre2_match_data_create(1, NULL))) return cllm_error(CLLM_ENOMEM, "out of memory");
    size_t pos = 0;
    while (pos < len) {
        int32_t sid = -1;
        size_t st = t->n_special ? find_special(t, text, pos, len, parse_special, &sid) : len;
        if ((rc = pretok(&c, 0, text + pos, st - pos))) goto done;
        if (st == len) break;
        if ((rc = push_id(&c.out, sid))) goto done;
        pos = st + tok_len(t, sid);
    }
done:
    pcre2_match_data_free(c.md);
    free(c.w.id); free(c.w.prev); free(c.w.next); free(c.w.heap); free(c.w.map);
    if (rc) { free(c.out.v); return rc; }
    if (!c.out.v && !(c.out.v = cllm_malloc(sizeof *c.out.v))) return CLLM_ENOMEM;
    *ids = c.out.v;
    *n = c.out.n;
    return 0;
}

/* ---- decoding and queries --------------------------------------------- */

int cllm_tokenizer_decode(const cllm_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    if (!t || (!ids && n)) return cllm_error(CLLM_EINVAL, "decode: no tokenizer or ids");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return cllm_error(CLLM_EINVAL, "decode: token id %d out of range [0, %zu)", ids[i], t->n_vocab);
        if (cllm_add_size(total, t->dec_off[ids[i] + 1] - t->dec_off[ids[i]], &total))
            return cllm_error(CLLM_ELIMIT, "decode: text too long");
    }
    if (cllm_add_size(total, 1, &total)) return cllm_error(CLLM_ELIMIT, "decode: text too long");
    char *o = cllm_malloc(total);
    if (!o) return CLLM_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
        memcpy(o + k, t->dec_pool + t->dec_off[ids[i]], l);
        k += l;
    }
    o[k] = 0;
    *text = o;
    *len = k;
    return 0;
}

int cllm_tokenizer_token_bytes(const cllm_tokenizer *t, int32_t id, char *buf, size_t cap, size_t *len) {
    *len = 0;
    if (!t || id < 0 || (size_t)id >= t->n_vocab)
        return cllm_error(CLLM_EINVAL, "token id %d out of range", id);
    size_t l = t->dec_off[id + 1] - t->dec_off[id];
    *len = l;
    if (l > cap) return cllm_error(CLLM_ELIMIT, "token %d has %zu bytes, buffer holds %zu", id, l, cap);
    memcpy(buf, t->dec_pool + t->dec_off[id], l);
    return 0;
}

int32_t cllm_tokenizer_find(const cllm_tokenizer *t, const char *text, size_t len) {
    return t ? vocab_find(t, text, len) : -1;
}

const char *cllm_tokenizer_token_text(const cllm_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return NULL;
    if (len) *len = tok_len(t, id);
    return tok_str(t, id);
}

int cllm_tokenizer_token_type(const cllm_tokenizer *t, int32_t id) {
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return -1;
    return t->types[id];
}

size_t cllm_tokenizer_vocab(const cllm_tokenizer *t) { return t->n_vocab; }
int cllm_tokenizer_eos(const cllm_tokenizer *t) { return t->eos; }
int cllm_tokenizer_bos(const cllm_tokenizer *t) { return t->bos; }
int cllm_tokenizer_pad(const cllm_tokenizer *t) { return t->pad; }
int cllm_tokenizer_add_bos(const cllm_tokenizer *t) { return t->add_bos; }

int cllm_tokenizer_is_eog(const cllm_tokenizer *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}

const char *cllm_tokenizer_hash(const cllm_tokenizer *t) { return t->hash; }

const char *cllm_tokenizer_pre_name(const cllm_tokenizer *t) {
    /* The names llama.cpp's converter writes for these pipelines. */
    static const char *const names[] = { "gpt2", "smollm", "qwen2", "llama-bpe" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cllm_pretok_step steps[CLLM_PRE_MAX_STEPS];
        cllm_tok_opts o;
        int n = cllm_pretok_from_name(names[i], &o, steps);
        if (n && pipeline_hash(steps, n, o.ignore_merges) == t->pre_hash) return names[i];
    }
    return NULL;
}

int cllm_tokenizer_chat_info(const cllm_tokenizer *t, int *chatml, const char **default_system) {
    *chatml = t->chatml;
    *default_system = t->chat_system;
    return 0;
}
