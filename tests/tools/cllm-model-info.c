/* cllm-model-info: load a model (GGUF file or HF directory), print its
 * hyperparameters, tensor count and tokenizer hash; with --convert OUT save it (GGUF when OUT
 * ends in .gguf, else a HF directory) in --dtype f32|f16|bf16; --rope-dim N
 * first sets the RoPE to cover N of each head's dimensions (a partial-RoPE
 * model for the tests: tests/sh/train.sh). --threads N
 * loads it on N start-up threads (libcore/startup.h; default: the CPUs of the
 * affinity mask), and --time prints the load's wall time (load_s) last
 * (tests/tools/bench-load.sh).
 * Exit 0 on success, 1 on a load/save error ("cllm-model-info: FILE: message"),
 * 2 on a usage error. A test tool: the binaries in cmd/ are the product.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "model.h"
#include "startup.h"
#include "tokenizer.h"

static const char *prog = "cllm-model-info";

static int fail(const char *file) {
    const char *msg = cllm_errmsg();
    size_t n = strlen(file);
    if (!strncmp(msg, file, n) && msg[n] == ':') fprintf(stderr, "%s: %s\n", prog, msg);
    else fprintf(stderr, "%s: %s: %s\n", prog, file, msg);
    return 1;
}

static int usage(void) {
    fprintf(stderr, "usage: %s MODEL [--convert OUT] [--dtype f32|f16|bf16] [--rope-dim N] [--threads N] [--time]\n", prog);
    return 2;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *dtype = "f32";
    int timed = 0, rope_dim = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--convert") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 64) return usage();
            cllm_set_startup_threads((int)n);
        } else if (!strcmp(argv[i], "--rope-dim") && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 2 || n % 2 || n > 1 << 16) return usage();
            rope_dim = (int)n;
        } else if (!strcmp(argv[i], "--time")) timed = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dtype = argv[++i];
        else if (!strcmp(argv[i], "--help")) { usage(); return 0; }
        else if (argv[i][0] == '-' && argv[i][1]) return usage();
        else if (!in) in = argv[i];
        else return usage();
    }
    if (!in) return usage();
    if (strcmp(dtype, "f32") && strcmp(dtype, "f16") && strcmp(dtype, "bf16")) return usage();
    cllm_model m;
    double t0 = cllm_now_s();
    if (cllm_model_load(&m, in)) return fail(in);
    double load_s = cllm_now_s() - t0;
    if (rope_dim) {
        if (rope_dim > m.cfg.head_dim) {
            fprintf(stderr, "%s: --rope-dim %d: the head has %d dimensions\n", prog, rope_dim, m.cfg.head_dim);
            cllm_model_free(&m);
            return 2;
        }
        m.cfg.rope_dim = rope_dim;
    }
    const cllm_config *c = &m.cfg;
    printf("arch\t%s\nname\t%s\nn_layer\t%d\nd_model\t%d\nn_head\t%d\nn_head_kv\t%d\nhead_dim\t%d\n"
           "d_ff\t%d\nvocab\t%d\nmax_ctx\t%d\nrope_theta\t%g\nrope_dim\t%d\nrms_eps\t%g\ntied\t%d\n"
           "qkv_bias\t%d\nbos_id\t%d\neos_id\t%d\npad_id\t%d\ntensors\t%d\nparams\t%zu\ntokenizer\t%s\n",
           c->arch, c->name, c->n_layer, c->d_model, c->n_head, c->n_head_kv, c->head_dim, c->d_ff, c->vocab,
           c->max_ctx, (double)c->rope_theta, c->rope_dim, (double)c->rms_eps, c->tied, c->qkv_bias, c->bos_id,
           c->eos_id, c->pad_id, m.n_tensors, m.n_params, m.tok ? cllm_tokenizer_hash(m.tok) : "none");
    if (timed) printf("startup_threads\t%d\nload_s\t%.4f\n", cllm_startup_threads(), load_s);
    int rc = 0;
    if (out && cllm_model_save(&m, out, dtype)) rc = fail(out);
    cllm_model_free(&m);
    return rc;
}
