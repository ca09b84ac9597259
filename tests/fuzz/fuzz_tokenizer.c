/* fuzz_tokenizer.c: SmolLM2's tokenizer (loaded once from the GGUF file named
 * by $CLLM_MODEL, default models/SmolLM2-135M-Instruct.Q4_1.gguf) on arbitrary
 * bytes, with and without special-token parsing; then decode.
 *
 * Properties (docs/TOKENIZER.md): every id is < vocab; decode(encode(s)) is s
 * with the bytes the vocab has no one-byte token for removed (computed here
 * once by encoding each byte alone); token_bytes of each id concatenates to the
 * same text. With the first byte odd the input also goes through the prompt
 * templates (cllm_template_apply with gsm8k and a {field} string, and
 * cllm_chat_apply), whose output must encode as well.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"

static cllm_tokenizer *tok;
static size_t vocab;
static unsigned char droppable[256];  /* 1: byte has no one-byte token */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("CLLM_MODEL");
    if (!path || !*path) path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    cllm_gguf *g;
    if (cllm_gguf_open(&g, path) || cllm_tokenizer_from_gguf(&tok, g)) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the tokenizer of %s: %s (set CLLM_MODEL)\n", path, cllm_errmsg());
        exit(1);
    }
    cllm_gguf_close(g);
    vocab = cllm_tokenizer_vocab(tok);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids;
        size_t n;
        if (cllm_tokenizer_encode(tok, &c, 1, 0, &ids, &n)) { fprintf(stderr, "encode of byte %d failed\n", b); exit(1); }
        droppable[b] = n == 0;
        free(ids);
    }
    return 0;
}

static void roundtrip(const char *s, size_t len, int special) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (cllm_tokenizer_encode(tok, s, len, special, &ids, &n)) fuzz_fail("encode failed: %s", cllm_errmsg());
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= vocab) fuzz_fail("id %d at %zu outside vocab %zu", ids[i], i, vocab);
    char *text = NULL;
    size_t tlen = 0;
    if (cllm_tokenizer_decode(tok, ids, n, &text, &tlen)) fuzz_fail("decode failed: %s", cllm_errmsg());
    if (text[tlen] != 0) fuzz_fail("decode output not NUL-terminated");
    /* Expected: s without the bytes that have no token. */
    char *want = malloc(len + 1);
    size_t wl = 0;
    for (size_t i = 0; i < len; i++)
        if (!droppable[(unsigned char)s[i]]) want[wl++] = s[i];
    if (wl != tlen || memcmp(want, text, wl))
        fuzz_fail("decode(encode(s)) != s minus dropped bytes (special %d): %zu bytes in, %zu expected, %zu out",
                  special, len, wl, tlen);
    /* Streaming output: token by token gives the same bytes. */
    size_t at = 0;
    char buf[256];
    for (size_t i = 0; i < n; i++) {
        size_t k;
        if (cllm_tokenizer_token_bytes(tok, ids[i], buf, sizeof buf, &k)) fuzz_fail("token_bytes(%d) failed", ids[i]);
        if (k > sizeof buf || at + k > tlen || memcmp(text + at, buf, k)) fuzz_fail("token_bytes of id %d differ", ids[i]);
        at += k;
    }
    if (at != tlen) fuzz_fail("token_bytes give %zu bytes, decode %zu", at, tlen);
    free(want);
    free(text);
    free(ids);
}

static void templates(const char *s, size_t len) {
    char *z = malloc(len + 1);
    memcpy(z, s, len);
    z[len] = 0;  /* templates take C strings: stop at the first NUL */
    const char *fields[] = { "question", "answer" };
    const char *values[] = { z, "42" };
    static const char *const names[] = { "gsm8k", "raw", "chat", "Q: {question}\\n{{x}} {answer}" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *out = NULL;
        if (cllm_template_apply(tok, names[i], fields, values, 2, &out) == 0) {
            roundtrip(out, strlen(out), 1);
            free(out);
        }
    }
    /* The input itself as a template string. */
    char *out = NULL;
    if (cllm_template_apply(tok, z, fields, values, 2, &out) == 0) free(out);
    if (cllm_chat_apply(tok, z, &out) == 0) free(out);
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *s = (const char *)data + 1;
    size_t len = size - 1;
    roundtrip(s, len, 0);
    roundtrip(s, len, 1);
    if (data[0] & 1) templates(s, len);
    return 0;
}
