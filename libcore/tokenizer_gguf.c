/* tokenizer_gguf.c: build the tokenizer from a GGUF file's tokenizer.ggml.*
 * metadata (model, pre, tokens, token_type, merges, bos/eos/padding ids,
 * add_bos_token) and
 * tokenizer.chat_template.
 *
 * Only tokenizer.ggml.model = "gpt2" (byte-level BPE) is supported. The token
 * type array, when present, must have one entry per token; special ids must be
 * in range (an out-of-range one is an error, not silently dropped). Nothing
 * read here is kept: the tokenizer copies what it needs.
 */
#include "tokenizer_int.h"

#include "err.h"
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

static int opt_id(const cllm_gguf *g, const char *key, size_t n_tokens, int *out) {
    *out = -1;
    if (cllm_gguf_find(g, key) < 0) return 0;
    int64_t v;
    int rc = cllm_gguf_get_int(g, key, &v);
    if (rc) return rc;
    if (v < 0 || (uint64_t)v >= n_tokens)
        return cllm_error(CLLM_EFORMAT, "%s = %lld is not a token id (vocab %zu)", key, (long long)v, n_tokens);
    *out = (int)v;
    return 0;
}

int cllm_tokenizer_from_gguf(cllm_tokenizer **out, const cllm_gguf *g) {
    *out = NULL;
    cllm_gguf_str model, pre = { NULL, 0 }, tmpl = { NULL, 0 };
    int rc = cllm_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (strcmp(model.s, "gpt2"))
        return cllm_error(CLLM_EUNSUP, "tokenizer model \"%s\" is not supported (only byte-level BPE, \"gpt2\")",
                          model.s);
    if (cllm_gguf_find(g, "tokenizer.ggml.pre") >= 0 && (rc = cllm_gguf_get_str(g, "tokenizer.ggml.pre", &pre)))
        return rc;
    if (cllm_gguf_find(g, "tokenizer.chat_template") >= 0 &&
        (rc = cllm_gguf_get_str(g, "tokenizer.chat_template", &tmpl)))
        return rc;
    const cllm_gguf_str *toks, *merges = NULL;
    size_t n_tok, n_merges = 0, n_types = 0;
    const int32_t *types = NULL;
    if ((rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &n_tok))) return rc;
    if (!n_tok) return cllm_error(CLLM_EFORMAT, "tokenizer.ggml.tokens is empty");
    if (cllm_gguf_find(g, "tokenizer.ggml.token_type") >= 0) {
        if ((rc = cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &n_types))) return rc;
        if (n_types != n_tok)
            return cllm_error(CLLM_EFORMAT, "tokenizer.ggml.token_type has %zu entries for %zu tokens", n_types, n_tok);
    }
    if ((rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.merges", &merges, &n_merges))) return rc;

    cllm_tokenizer_spec spec = {0};
    spec.n_tokens = n_tok;
    spec.token_types = types;
    spec.n_merges = n_merges;
    spec.pre = pre.s;
    spec.chat_template = tmpl.s;
    if ((rc = opt_id(g, "tokenizer.ggml.bos_token_id", n_tok, &spec.bos_id)) ||
        (rc = opt_id(g, "tokenizer.ggml.eos_token_id", n_tok, &spec.eos_id)) ||
        (rc = opt_id(g, "tokenizer.ggml.padding_token_id", n_tok, &spec.pad_id)))
        return rc;
    /* llama.cpp's converter writes it true for Llama 3 (its tokenizer.json
     * post-processor prepends <|begin_of_text|>), false for SmolLM2 and Qwen2 */
    if (cllm_gguf_find(g, "tokenizer.ggml.add_bos_token") >= 0 &&
        (rc = cllm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &spec.add_bos)))
        return rc;

    const char **tp = cllm_malloc(n_tok * sizeof *tp);
    size_t *tl = cllm_malloc(n_tok * sizeof *tl);
    const char **mp = cllm_malloc((n_merges ? n_merges : 1) * sizeof *mp);
    size_t *ml = cllm_malloc((n_merges ? n_merges : 1) * sizeof *ml);
    if (!tp || !tl || !mp || !ml) { rc = CLLM_ENOMEM; goto done; }
    for (size_t i = 0; i < n_tok; i++) { tp[i] = toks[i].s; tl[i] = toks[i].len; }
    for (size_t i = 0; i < n_merges; i++) { mp[i] = merges[i].s; ml[i] = merges[i].len; }
    spec.tokens = tp;
    spec.token_lens = tl;
    spec.merges = mp;
    spec.merge_lens = ml;
    rc = cllm_tokenizer_new(out, &spec);
done:
    free(tp); free(tl); free(mp); free(ml);
    return rc;
}
