/* model.h: the one in-memory description of a LLaMA-family model.
 *
 * Whatever file a model came from (GGUF, HF safetensors), it is held as its
 * hyperparameters plus fp32 tensors in HF layout:
 *   - every matrix row-major [out, in], so y[o] = sum_i W[o*in + i] * x[i];
 *   - Q and K rows in HF order, i.e. RoPE rotates the half-split pairs
 *     (x[i], x[i + HS/2]) of each head (GGUF's adjacent-pair order is undone
 *     by the GGUF loader);
 *   - all parameters in one contiguous float array `params` (so an optimizer or a
 *     gradient buffer has the same layout), described by the table `tensors`,
 *     named as HF names them ("model.layers.3.self_attn.q_proj.weight").
 * Letters in shape comments: V vocab, C d_model, L layers, NH query heads,
 * NKV key/value heads, HS head size, F feed-forward width.
 */
#ifndef CLLM_MODEL_H
#define CLLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

struct cllm_tokenizer;

typedef struct cllm_config {
    char arch[32];         /* "llama", "qwen2", ... (GGUF general.architecture) */
    char name[128];        /* general.name or the directory name */
    int n_layer;           /* L */
    int d_model;           /* C */
    int n_head;            /* NH */
    int n_head_kv;         /* NKV (GQA: query head h uses kv head h / (NH/NKV)) */
    int head_dim;          /* HS */
    int d_ff;              /* F */
    int vocab;             /* V */
    int max_ctx;           /* context length the model was trained for */
    float rope_theta;      /* RoPE base */
    int rope_dim;          /* dimensions rotated per head (== HS for all supported models) */
    float rms_eps;         /* RMSNorm epsilon */
    int tied;              /* lm_head shares tok_emb */
    int qkv_bias;          /* q/k/v projections carry a bias (Qwen2) */
    int bos_id, eos_id, pad_id; /* -1 when the file does not say */
} cllm_config;

typedef struct cllm_layer_weights {
    float *attn_norm;      /* (C) */
    float *wq;             /* (NH*HS, C) */
    float *wk;             /* (NKV*HS, C) */
    float *wv;             /* (NKV*HS, C) */
    float *bq, *bk, *bv;   /* (NH*HS), (NKV*HS), (NKV*HS); NULL without qkv_bias */
    float *wo;             /* (C, NH*HS) */
    float *ffn_norm;       /* (C) */
    float *w_gate;         /* (F, C) */
    float *w_up;           /* (F, C) */
    float *w_down;         /* (C, F) */
} cllm_layer_weights;

typedef struct cllm_tensor_info {
    char name[96];         /* HF name */
    int n_dims;            /* 1 or 2 */
    int64_t shape[2];      /* HF order: shape[0] = rows (out), shape[1] = cols (in) */
    size_t offset;         /* in floats, into params */
    size_t numel;
} cllm_tensor_info;

typedef struct cllm_model {
    cllm_config cfg;
    float *params;         /* every parameter, contiguous */
    size_t n_params;
    cllm_tensor_info *tensors;
    int n_tensors;
    float *tok_emb;        /* (V, C) */
    float *out_norm;       /* (C) */
    float *lm_head;        /* (V, C); == tok_emb when cfg.tied */
    cllm_layer_weights *layers; /* [L] */
    struct cllm_tokenizer *tok; /* NULL when the file carries none */
    struct cllm_model_src *src; /* opaque: what the source file said beyond the
                                   weights (GGUF metadata, HF directory), kept so
                                   cllm_model_save can copy the tokenizer through;
                                   NULL for a model made by cllm_model_alloc */
} cllm_model;

/* Allocate params for cfg, build the tensor table and the pointers above
 * (cfg->rope_dim 0 is taken as head_dim; m->src and m->tok stay NULL).
 * The weights are zero. Returns 0 or a CLLM_E* code. */
int cllm_model_alloc(cllm_model *m, const cllm_config *cfg);

/* Load a model from a .gguf file or a HF directory (config.json + safetensors),
 * chosen by what path is. */
int cllm_model_load(cllm_model *m, const char *path);

/* Save as GGUF (path ends in .gguf; dtype "f32", "f16" or "bf16") or as a HF
 * directory (anything else). */
int cllm_model_save(const cllm_model *m, const char *path, const char *dtype);
/* Whether cllm_model_save(m, path) can be tried, checked before a long run
 * that ends in it: path not empty; an existing path a directory for a HF
 * model and not one for GGUF; a new one in an existing directory; for a HF
 * directory, m (when not NULL) one that HF can say (no partial RoPE:
 * rope_dim < head_dim is refused, CLLM_EUNSUP, as cllm_model_save refuses
 * it). Write permission is left to the save. Returns 0, CLLM_EINVAL,
 * CLLM_EIO or CLLM_EUNSUP. */
int cllm_model_save_check(const cllm_model *m, const char *path);

/* Find a tensor by HF name; NULL when absent. */
const cllm_tensor_info *cllm_model_tensor(const cllm_model *m, const char *name);

/* Round to bf16 (in place, to nearest even) every weight the CUDA backend
 * keeps in bf16: the embedding, the LM head and the layers' matrices; norms
 * and biases stay fp32, as on the device. With CLLM_FWD_BF16 (forward.h) the
 * CPU forward of such a model rounds where the device does: a reference
 * that tells the GPU's arithmetic from bf16's own rounding. */
void cllm_model_round_bf16(cllm_model *m);

void cllm_model_free(cllm_model *m);

/* The end-of-sequence token: the config's, else the tokenizer's; -1 when
 * neither names one. */
int cllm_model_eos_id(const cllm_model *m);
/* The token an initial guess of pads writes: the config's pad id, else the
 * tokenizer's pad token, else 0 (cllm-gen, cllm-bench and cllm-traj alike). */
int cllm_model_pad_id(const cllm_model *m);

#endif
