/* tokenizer.h: byte-level BPE (GPT-2 style) equal to HF `tokenizers`, and chat /
 * plain prompt templates.
 *
 * Encoding: special (added/control) tokens are matched first, the text between
 * them is split by the model's pre-tokenizer (PCRE2, Unicode properties), each
 * piece is mapped byte->unicode and merged by rank. Decoding maps back to the
 * exact bytes.
 */
#ifndef CLLM_TOKENIZER_H
#define CLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct cllm_tokenizer cllm_tokenizer;

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum { CLLM_TOK_NORMAL = 1, CLLM_TOK_UNKNOWN = 2, CLLM_TOK_CONTROL = 3,
       CLLM_TOK_USER_DEFINED = 4, CLLM_TOK_UNUSED = 5, CLLM_TOK_BYTE = 6 };

typedef struct cllm_tokenizer_spec {
    const char *const *tokens;  /* n_tokens strings in byte-mapped form */
    const size_t *token_lens;   /* their lengths (NULL: strlen) */
    size_t n_tokens;
    const int32_t *token_types; /* n_tokens, or NULL (all normal) */
    const char *const *merges;  /* "A B", rank = index */
    const size_t *merge_lens;
    size_t n_merges;
    const char *pre;            /* pre-tokenizer name: "smollm", "gpt2", "qwen2", "llama3", ... */
    const char *chat_template;  /* the model's Jinja template text, or NULL */
    int bos_id, eos_id, pad_id; /* -1 when absent */
    int add_bos;                /* the model starts every text with BOS (GGUF
                                   tokenizer.ggml.add_bos_token; Llama 3: 1) */
} cllm_tokenizer_spec;

int cllm_tokenizer_new(cllm_tokenizer **out, const cllm_tokenizer_spec *spec);

struct cllm_gguf;
/* Build from a GGUF file's tokenizer.ggml.* metadata. */
int cllm_tokenizer_from_gguf(cllm_tokenizer **out, const struct cllm_gguf *g);
/* Build from a HF model directory (tokenizer.json, tokenizer_config.json). */
int cllm_tokenizer_from_hf_dir(cllm_tokenizer **out, const char *dir);
void cllm_tokenizer_free(cllm_tokenizer *t);

/* Encode len bytes of text (any bytes: invalid UTF-8 is tokenized as bytes;
 * a byte without a one-byte token is dropped, as HF does). Control tokens are
 * recognised when parse_special, user-defined ones always. No BOS is added.
 * *ids is malloc'd (caller frees), also when *n is 0. */
int cllm_tokenizer_encode(const cllm_tokenizer *t, const char *text, size_t len,
                          int parse_special, int32_t **ids, size_t *n);
/* Decode to bytes (malloc'd, NUL-terminated; *len excludes the NUL). */
int cllm_tokenizer_decode(const cllm_tokenizer *t, const int32_t *ids, size_t n,
                          char **text, size_t *len);
/* Bytes of one token (for streaming output); special tokens give their text. */
int cllm_tokenizer_token_bytes(const cllm_tokenizer *t, int32_t id, char *buf, size_t cap, size_t *len);

/* Id of the token whose stored (byte-mapped) text is text[0..len), or -1. */
int32_t cllm_tokenizer_find(const cllm_tokenizer *t, const char *text, size_t len);
/* Stored text of a token (NUL-terminated, byte-mapped for normal tokens), or NULL. */
const char *cllm_tokenizer_token_text(const cllm_tokenizer *t, int32_t id, size_t *len);
/* CLLM_TOK_* type of a token, or -1 when id is out of range. */
int cllm_tokenizer_token_type(const cllm_tokenizer *t, int32_t id);

size_t cllm_tokenizer_vocab(const cllm_tokenizer *t);
int cllm_tokenizer_eos(const cllm_tokenizer *t);
int cllm_tokenizer_bos(const cllm_tokenizer *t);
int cllm_tokenizer_pad(const cllm_tokenizer *t);
/* 1 when a prompt must start with BOS, as HF's encode(add_special_tokens=True)
 * and llama.cpp do for this model (spec add_bos and a BOS id); 0 otherwise
 * (SmolLM2, Qwen2). cllm_tokenizer_encode never adds it: the prompt reader does. */
int cllm_tokenizer_add_bos(const cllm_tokenizer *t);
/* True for tokens generation stops at (EOS and the model's other end tokens). */
int cllm_tokenizer_is_eog(const cllm_tokenizer *t, int32_t id);

/* A content hash of vocab, merges, types and pre-tokenizer, as 16 hex digits. */
const char *cllm_tokenizer_hash(const cllm_tokenizer *t);
/* The GGUF tokenizer.ggml.pre name ("gpt2", "smollm", "qwen2", "llama-bpe")
 * whose pipeline splits text as t's pre-tokenizer does (same steps, same
 * ignore_merges), or NULL when none does. */
const char *cllm_tokenizer_pre_name(const cllm_tokenizer *t);

/* Prompt templates (docs/TOKENIZER.md).
 * chat: ChatML as the model's own template renders one user message with
 *       add_generation_prompt (default system prompt included when the model's
 *       template inserts one); CLLM_EUNSUP when the model is not ChatML.
 * name: "gsm8k" (the CLLM reference's), "raw" (the field "question" as is),
 *       "chat" (the field "question" through cllm_chat_apply), or a string
 *       with {field} placeholders filled from fields[]/values[] ({{ }} are
 *       literal braces; \n \t \\ are escapes). A missing field or an unknown
 *       bare name is CLLM_EINVAL. t may be NULL except for "chat".
 * Output is malloc'd text, to be encoded with parse_special = 1. */
int cllm_template_apply(const cllm_tokenizer *t, const char *template_name_or_string,
                        const char *const *fields, const char *const *values, size_t n_fields,
                        char **out);
int cllm_chat_apply(const cllm_tokenizer *t, const char *user_message, char **out);
/* 0 when cllm_template_apply knows the template (a name it takes, or a
 * string); CLLM_EINVAL with the message of an unknown bare name. For checking
 * an option before any input is read. */
int cllm_template_check(const char *template_name_or_string);

#endif
