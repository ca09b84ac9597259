/* prompts.h: where the programs that take prompts (cllm-gen, cllm-traj,
 * cllm-bench) get them: a record stream of prompt records, a JSONL file (e.g.
 * GSM8K's {"question", "answer"}), or plain text lines. Each prompt becomes
 * token ids: records that carry tokens use them as they are; text goes
 * through the template (a named one such as gsm8k, or a string with {field}
 * placeholders filled from the object's string fields), then, with chat,
 * through the model's chat template, then the tokenizer.
 *
 * The kind of input is told from its first byte unless forced: a zstd frame
 * (0x28) or a skippable frame (0x5?) is a stream, '{' (after blanks) is JSONL,
 * anything else is text lines. Prompts get ids 0, 1, 2, ... in input order
 * unless a record or object carries a non-negative integer "id".
 */
#ifndef CLLM_PROMPTS_H
#define CLLM_PROMPTS_H

#include <stdint.h>

#include "records.h"
#include "tokenizer.h"

enum cllm_prompt_input { CLLM_IN_AUTO, CLLM_IN_STREAM, CLLM_IN_JSONL, CLLM_IN_LINES };

typedef struct cllm_prompt_opts {
    int input;                /* enum cllm_prompt_input */
    const char *field;        /* text field (NULL: text, prompt, question: the first present) */
    const char *answer_field; /* reference answer field (NULL: "answer") */
    const char *template;     /* NULL: the field's text as is */
    int chat;                 /* wrap in the model's chat template */
    uint64_t shard_i, shard_n;/* keep prompts whose index % shard_n == shard_i (n 0: all) */
} cllm_prompt_opts;

/* The command-line options of every program that reads prompts (cllm-gen,
 * cllm-traj, cllm-bench): splice CLLM_PROMPT_LONGOPTS into a getopt_long table
 * and hand each option code to cllm_prompt_opt(). */
enum { CLLM_OPT_FIELD = 0x1000, CLLM_OPT_ANSWER_FIELD, CLLM_OPT_TEMPLATE, CLLM_OPT_CHAT, CLLM_OPT_LINES,
       CLLM_OPT_SHARD };
#define CLLM_PROMPT_LONGOPTS                                          \
    { "field", required_argument, 0, CLLM_OPT_FIELD },               \
    { "answer-field", required_argument, 0, CLLM_OPT_ANSWER_FIELD }, \
    { "template", required_argument, 0, CLLM_OPT_TEMPLATE },         \
    { "chat", no_argument, 0, CLLM_OPT_CHAT },                       \
    { "lines", no_argument, 0, CLLM_OPT_LINES },                     \
    { "shard", required_argument, 0, CLLM_OPT_SHARD }

/* Apply option c (with its argument) to o: 0 when handled; CLLM_EXIT_USAGE
 * (message printed) for a bad value or an option that is none of these, so
 * it serves as the default case of a program's option switch. */
int cllm_prompt_opt(cllm_prompt_opts *o, int c, const char *arg);

typedef struct cllm_prompt {
    int64_t id;
    uint64_t index;           /* position in the input, from 0 */
    cllm_tokens tokens;
    char *text;               /* rendered prompt text (NULL when tokens were given) */
    char *answer;             /* reference answer (NULL when none) */
} cllm_prompt;

typedef struct cllm_prompts cllm_prompts;

/* Open path ("-"/NULL: stdin). tok may be NULL only if every prompt carries tokens. */
int cllm_prompts_open(cllm_prompts **out, const char *path, const cllm_prompt_opts *o,
                      const cllm_tokenizer *tok);
/* Next prompt (fills p, previous content freed): 0, CLLM_EOF, or an error
 * naming the input and the record or line. */
int cllm_prompts_next(cllm_prompts *s, cllm_prompt *p);
/* The header of a stream input (NULL for JSONL and lines). */
const cllm_value *cllm_prompts_header(const cllm_prompts *s);
void cllm_prompts_close(cllm_prompts *s);
void cllm_prompt_free(cllm_prompt *p);

#endif
