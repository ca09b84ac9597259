/* make-tiny: write a tiny random LLaMA model as a HF directory (config.json,
 * model.safetensors, tokenizer.json, tokenizer_config.json) for the training
 * tests, without Python.
 *
 * The tokenizer is SmolLM2's cut down to its first V ids (default 512): the
 * special tokens (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2, ...), the
 * byte alphabet, and the merges whose parts and result all lie below V, with
 * SmolLM2's pre-tokenizer and chat template. A cut BPE is still a valid BPE
 * (it just merges less), so text round-trips; the LM head stays small (V x C)
 * where the full 49152-token vocabulary would make it the whole cost of a
 * tiny model's training step.
 *
 * Usage: make-tiny -o DIR [--from SmolLM2.gguf] [--vocab V] [--layers L]
 *                  [--dim C] [--heads NH] [--kv-heads NKV] [--ff F]
 *                  [--ctx N] [--seed S] [--std X]
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "err.h"
#include "gguf.h"
#include "model.h"
#include "rng.h"
#include "tokenizer.h"

static double gauss(cllm_rng *r) {
    double u1 = (cllm_rng_next(r) >> 11) * (1.0 / 9007199254740992.0), u2 = (cllm_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static int write_tokenizer(const char *gguf_path, const char *dir, int V) {
    cllm_gguf *g;
    int rc = cllm_gguf_open(&g, gguf_path);
    if (rc) return rc;
    const cllm_gguf_str *toks, *merges;
    size_t n_tok, n_merges, n_types;
    const int32_t *types;
    cllm_gguf_str tmpl = { NULL, 0 };
    if ((rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &n_tok)) ||
        (rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.merges", &merges, &n_merges)) ||
        (rc = cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &n_types))) {
        cllm_gguf_close(g);
        return rc;
    }
    if (cllm_gguf_find(g, "tokenizer.chat_template") >= 0) cllm_gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    if ((size_t)V > n_tok || n_types != n_tok) {
        cllm_gguf_close(g);
        return cllm_error(CLLM_EINVAL, "--vocab %d: the source has %zu tokens", V, n_tok);
    }
    json_t *vocab = json_object(), *added = json_array(), *jm = json_array();
    for (int i = 0; i < V; i++) {
        json_object_setn_new(vocab, toks[i].s, toks[i].len, json_integer(i));
        if (types[i] == CLLM_TOK_CONTROL || types[i] == CLLM_TOK_USER_DEFINED)
            json_array_append_new(added, json_pack("{s:i, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", i, "content", toks[i].s,
                                                   toks[i].len, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized",
                                                   types[i] != CLLM_TOK_CONTROL, "special", types[i] == CLLM_TOK_CONTROL));
    }
    /* Keep the merges whose parts and result are in the cut vocabulary. */
    size_t kept = 0;
    for (size_t i = 0; i < n_merges; i++) {
        const char *s = merges[i].s, *sp = memchr(s, ' ', merges[i].len);
        if (!sp) continue;
        size_t la = (size_t)(sp - s), lb = merges[i].len - la - 1;
        char *joined = malloc(la + lb + 1);
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        joined[la + lb] = 0;
        char *a = strndup(s, la), *b = strndup(sp + 1, lb);
        json_t *ia = json_object_get(vocab, a), *ib = json_object_get(vocab, b), *ij = json_object_get(vocab, joined);
        if (ia && ib && ij) {
            json_array_append_new(jm, json_stringn(s, merges[i].len));
            kept++;
        }
        free(a);
        free(b);
        free(joined);
    }
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1);
    json_t *pt = json_pack("{s:s, s:[{s:s, s:b}, O]}", "type", "Sequence", "pretokenizers", "type", "Digits",
                           "individual_digits", 1, bl);
    json_t *tj = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:O, s:O, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
                           "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer",
                           pt, "post_processor", bl, "decoder", bl, "model", "type", "BPE", "dropout", "unk_token",
                           "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                           "ignore_merges", 0, "vocab", vocab, "merges", jm);
    json_decref(bl);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!tj || json_dump_file(tj, path, JSON_COMPACT)) rc = cllm_error(CLLM_EIO, "%s: cannot write", path);
    json_decref(tj);
    json_t *tc = json_pack("{s:s, s:b, s:s, s:s, s:s}", "tokenizer_class", "GPT2Tokenizer", "clean_up_tokenization_spaces",
                           0, "bos_token", "<|im_start|>", "eos_token", "<|im_end|>", "pad_token", "<|im_end|>");
    if (tc && tmpl.s) json_object_set_new(tc, "chat_template", json_stringn(tmpl.s, tmpl.len));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!rc && (!tc || json_dump_file(tc, path, JSON_INDENT(1)))) rc = cllm_error(CLLM_EIO, "%s: cannot write", path);
    json_decref(tc);
    cllm_gguf_close(g);
    if (!rc) fprintf(stderr, "make-tiny: vocabulary %d tokens, %zu merges\n", V, kept);
    return rc;
}

int main(int argc, char **argv) {
    static const struct option lo[] = {
        { "output", required_argument, 0, 'o' }, { "from", required_argument, 0, 'F' },
        { "vocab", required_argument, 0, 'v' },  { "layers", required_argument, 0, 'L' },
        { "dim", required_argument, 0, 'C' },    { "heads", required_argument, 0, 'H' },
        { "kv-heads", required_argument, 0, 'K' }, { "ff", required_argument, 0, 'f' },
        { "ctx", required_argument, 0, 'x' },    { "seed", required_argument, 0, 's' },
        { "std", required_argument, 0, 'd' },    { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    const char *out = NULL, *from = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    long long V = 512, L = 2, C = 64, NH = 4, NKV = 2, F = 128, CTX = 1024, seed = 1;
    double std = 0.02;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'F': from = optarg; break;
        case 'v': if (cllm_cli_int("--vocab", optarg, 300, 49152, &V)) return 2; break;
        case 'L': if (cllm_cli_int("--layers", optarg, 1, 64, &L)) return 2; break;
        case 'C': if (cllm_cli_int("--dim", optarg, 8, 4096, &C)) return 2; break;
        case 'H': if (cllm_cli_int("--heads", optarg, 1, 64, &NH)) return 2; break;
        case 'K': if (cllm_cli_int("--kv-heads", optarg, 1, 64, &NKV)) return 2; break;
        case 'f': if (cllm_cli_int("--ff", optarg, 8, 16384, &F)) return 2; break;
        case 'x': if (cllm_cli_int("--ctx", optarg, 16, 1 << 20, &CTX)) return 2; break;
        case 's': if (cllm_cli_int("--seed", optarg, 0, INT64_MAX, &seed)) return 2; break;
        case 'd': if (cllm_cli_double("--std", optarg, 0, 1, &std)) return 2; break;
        case 'h': printf("usage: make-tiny -o DIR [--from GGUF] [--vocab V] [--layers L] [--dim C] [--heads NH] "
                         "[--kv-heads NKV] [--ff F] [--ctx N] [--seed S] [--std X]\n"); return 0;
        default: return 2;
        }
    }
    if (!out) return cllm_cli_usage_error("no output directory (-o DIR)");
    if (C % NH || NH % NKV) return cllm_cli_usage_error("--dim must be a multiple of --heads, --heads of --kv-heads");
    cllm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "llama");
    snprintf(cfg.name, sizeof cfg.name, "tiny-smollm2-v%lld", V);
    cfg.n_layer = (int)L;
    cfg.d_model = (int)C;
    cfg.n_head = (int)NH;
    cfg.n_head_kv = (int)NKV;
    cfg.head_dim = (int)(C / NH);
    cfg.d_ff = (int)F;
    cfg.vocab = (int)V;
    cfg.max_ctx = (int)CTX;
    cfg.rope_theta = 10000.0f;
    cfg.rms_eps = 1e-5f;
    cfg.tied = 1;
    cfg.bos_id = 1;
    cfg.eos_id = 2;
    cfg.pad_id = 2;
    cllm_model m;
    if (cllm_model_alloc(&m, &cfg)) return cllm_cli_fail();
    cllm_rng r;
    cllm_rng_seed(&r, (uint64_t)seed);
    for (int i = 0; i < m.n_tensors; i++) {
        const cllm_tensor_info *t = &m.tensors[i];
        float *p = m.params + t->offset;
        for (size_t j = 0; j < t->numel; j++) p[j] = t->n_dims == 1 ? 1.0f : (float)(std * gauss(&r));
    }
    int rc = cllm_model_save(&m, out, "f32");
    if (!rc) rc = write_tokenizer(from, out, (int)V);
    cllm_model_free(&m);
    if (rc) return cllm_cli_fail();
    /* Check that it loads back with its tokenizer. */
    if (cllm_model_load(&m, out)) return cllm_cli_fail();
    int ok = m.tok != NULL && cllm_tokenizer_eos(m.tok) == 2;
    cllm_model_free(&m);
    if (!ok) { cllm_cli_error("%s: the tokenizer did not load as expected", out); return 1; }
    return 0;
}
