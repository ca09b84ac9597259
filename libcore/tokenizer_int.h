/* tokenizer_int.h: internals shared by the tokenizer's source files
 * (tokenizer.c: core BPE, pre-tokenizers, encode/decode, hash;
 *  tokenizer_load.c: GGUF and HF-directory loaders;
 *  tokenizer_template.c: chat and plain prompt templates).
 *
 * A pre-tokenizer is a pipeline of split steps. Each step splits every piece
 * the previous step produced into sub-pieces; the pieces of the last step are
 * byte-mapped and merged by BPE. A step is "isolated" splitting: matches and
 * the gaps between them each become a piece (empty pieces are dropped).
 * The canonical text of a pipeline (cllm_pretok_describe) enters the hash, so
 * a GGUF "smollm" tokenizer and the equal HF tokenizer.json hash the same.
 */
#ifndef CLLM_TOKENIZER_INT_H
#define CLLM_TOKENIZER_INT_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

enum cllm_pretok_kind {
    CLLM_PRE_REGEX = 1,      /* isolated split on a PCRE2 pattern */
    CLLM_PRE_DIGITS = 2,     /* HF Digits: \p{N} runs (or single chars) isolated */
};

typedef struct cllm_pretok_step {
    int kind;                /* enum cllm_pretok_kind */
    const char *pattern;     /* CLLM_PRE_REGEX: the pattern (as HF writes it) */
    int individual;          /* CLLM_PRE_DIGITS: one piece per numeric char */
} cllm_pretok_step;

#define CLLM_PRE_MAX_STEPS 8

/* The regex of HF ByteLevel(use_regex=true) and GPT-2. */
extern const char cllm_pre_gpt2_pattern[];

/* Options beyond the public spec. */
typedef struct cllm_tok_opts {
    const cllm_pretok_step *steps;  /* the pipeline; NULL: from spec->pre */
    int n_steps;
    int unk_id;         /* -1: bytes missing from the vocab are dropped (HF, unk_token null) */
    int ignore_merges;  /* HF BPE ignore_merges: a piece that is a token is emitted whole */
} cllm_tok_opts;

/* Pipeline and options of a GGUF tokenizer.ggml.pre name; returns the number
 * of steps, or 0 when the name is unknown. */
int cllm_pretok_from_name(const char *name, cllm_tok_opts *opts, cllm_pretok_step *steps);

/* The tokenizer.json pre_tokenizer (*out, a new reference) that HF
 * `tokenizers` and cllm_tokenizer_from_hf_dir read as the pipeline of the
 * GGUF tokenizer.ggml.pre name pre; *ignore_merges is what the BPE model
 * then needs. CLLM_EUNSUP when the name is unknown. */
struct json_t;
int cllm_hf_pre_tokenizer(const char *pre, struct json_t **out, int *ignore_merges);

/* Internal constructor: spec plus options (NULL: cllm_tokenizer_new). */
int cllm_tokenizer_new_ex(cllm_tokenizer **out, const cllm_tokenizer_spec *spec, const cllm_tok_opts *opts);

/* The chat-template facts the constructor extracted from the model's template. */
int cllm_tokenizer_chat_info(const cllm_tokenizer *t, int *chatml, const char **default_system);

/* Find the default system prompt a ChatML Jinja template inserts: returns a
 * malloc'd string in *sys (NULL when it inserts none) and sets *chatml when
 * the template looks like ChatML. 0 or CLLM_ENOMEM. */
int cllm_chat_template_scan(const char *tmpl, int *chatml, char **sys);

#endif
