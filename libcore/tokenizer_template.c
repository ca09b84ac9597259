/* tokenizer_template.c: prompt templates.
 *
 * Chat: ChatML as the model's Jinja template renders one user message with
 * add_generation_prompt. The template is not executed: it is scanned for a
 * string literal "<|im_start|>system\n<text><|im_end|>" whose <text> has no
 * quote or brace (a literal default system prompt, as SmolLM2's and Qwen2's
 * templates carry); that text, Jinja-unescaped, is inserted as the system turn.
 * A template without one inserts no system turn.
 *
 * Plain: "gsm8k" (the CLLM reference's prompt), "raw" (the question as is),
 * "chat" (the question through the chat template), or a template string where
 * {name} is replaced by the field of that name, {{ and }} are literal braces
 * and \n, \t, \\ are escapes (so a shell argument can carry newlines).
 * Field values are inserted verbatim. Output is malloc'd and NUL-terminated.
 */
#include "tokenizer_int.h"

#include "err.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf { char *s; size_t n, cap; } sbuf;

static int sb_add(sbuf *b, const char *s, size_t n) {
    size_t need;
    if (cllm_add_size(b->n, n, &need) || cllm_add_size(need, 1, &need))
        return cllm_error(CLLM_ELIMIT, "template output too long");
    if (need > b->cap && cllm_grow((void **)&b->s, &b->cap, need, 1)) return CLLM_ENOMEM;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

static int sb_str(sbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

int cllm_chat_template_scan(const char *tmpl, int *chatml, char **sys) {
    *chatml = strstr(tmpl, "<|im_start|>") != NULL;
    *sys = NULL;
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e || e == q) continue;
        size_t n = (size_t)(e - q);
        if (memchr(q, '\'', n) || memchr(q, '"', n) || memchr(q, '{', n) || memchr(q, '}', n)) continue;
        char *o = cllm_malloc(n + 1);
        if (!o) return CLLM_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (q[i] == '\\' && i + 1 < n) {
                char d = q[++i];
                o[k++] = d == 'n' ? '\n' : d == 't' ? '\t' : d == 'r' ? '\r' : d;
            } else {
                o[k++] = q[i];
            }
        }
        o[k] = 0;
        *sys = o;
        return 0;
    }
    return 0;
}

int cllm_chat_apply(const cllm_tokenizer *t, const char *user_message, char **out) {
    *out = NULL;
    int chatml;
    const char *sys;
    if (!t || !user_message) return cllm_error(CLLM_EINVAL, "chat: no tokenizer or message");
    cllm_tokenizer_chat_info(t, &chatml, &sys);
    if (!chatml) return cllm_error(CLLM_EUNSUP, "the model's chat template is not ChatML");
    sbuf b = {0};
    int rc = 0;
    if (sys) {
        if ((rc = sb_str(&b, "<|im_start|>system\n")) || (rc = sb_str(&b, sys)) ||
            (rc = sb_str(&b, "<|im_end|>\n")))
            goto fail;
    }
    if ((rc = sb_str(&b, "<|im_start|>user\n")) || (rc = sb_str(&b, user_message)) ||
        (rc = sb_str(&b, "<|im_end|>\n<|im_start|>assistant\n")))
        goto fail;
    *out = b.s;
    return 0;
fail:
    free(b.s);
    return rc;
}

static const char *field_value(const char *name, size_t n, const char *const *fields,
                               const char *const *values, size_t n_fields) {
    for (size_t i = 0; i < n_fields; i++)
        if (fields[i] && strlen(fields[i]) == n && !memcmp(fields[i], name, n)) return values[i];
    return NULL;
}

static int expand(const char *tmpl, const char *const *fields, const char *const *values, size_t n_fields,
                  char **out) {
    sbuf b = {0};
    int rc = sb_add(&b, "", 0);
    if (rc) return rc;
    for (const char *p = tmpl; *p && !rc;) {
        if (p[0] == '{' && p[1] == '{') { rc = sb_add(&b, "{", 1); p += 2; continue; }
        if (p[0] == '}' && p[1] == '}') { rc = sb_add(&b, "}", 1); p += 2; continue; }
        if (p[0] == '\\' && (p[1] == 'n' || p[1] == 't' || p[1] == '\\')) {
            rc = sb_add(&b, p[1] == 'n' ? "\n" : p[1] == 't' ? "\t" : "\\", 1);
            p += 2;
            continue;
        }
        if (p[0] == '{' && (isalpha((unsigned char)p[1]) || p[1] == '_')) {
            const char *q = p + 1;
            while (isalnum((unsigned char)*q) || *q == '_') q++;
            if (*q == '}') {
                const char *v = field_value(p + 1, (size_t)(q - p - 1), fields, values, n_fields);
                if (!v) {
                    rc = cllm_error(CLLM_EINVAL, "template field {%.*s} has no value", (int)(q - p - 1), p + 1);
                    break;
                }
                rc = sb_str(&b, v);
                p = q + 1;
                continue;
            }
        }
        rc = sb_add(&b, p, 1);
        p++;
    }
    if (rc) { free(b.s); return rc; }
    *out = b.s;
    return 0;
}

int cllm_template_apply(const cllm_tokenizer *t, const char *name, const char *const *fields,
                        const char *const *values, size_t n_fields, char **out) {
    *out = NULL;
    int rc;
    if (!name) return cllm_error(CLLM_EINVAL, "no template");
    if (n_fields && (!fields || !values)) return cllm_error(CLLM_EINVAL, "template fields missing");
    if (!strcmp(name, "gsm8k"))
        return expand("Question:\n{question}\nAnswer:\nLet's think step by step.\n", fields, values, n_fields, out);
    if (!strcmp(name, "raw")) return expand("{question}", fields, values, n_fields, out);
    if (!strcmp(name, "chat") || !strcmp(name, "chatml")) {
        const char *q = field_value("question", 8, fields, values, n_fields);
        if (!q) return cllm_error(CLLM_EINVAL, "template field {question} has no value");
        return cllm_chat_apply(t, q, out);
    }
    if ((rc = cllm_template_check(name))) return rc;
    return expand(name, fields, values, n_fields, out);
}

int cllm_template_check(const char *name) {
    if (!name) return cllm_error(CLLM_EINVAL, "no template");
    if (!strcmp(name, "gsm8k") || !strcmp(name, "raw") || !strcmp(name, "chat") || !strcmp(name, "chatml")) return 0;
    /* A bare name (or nothing at all) that is not one of those is a misspelt
     * name, not a template string. */
    if (!strchr(name, '{')) {
        const char *p = name;
        while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == '-')) p++;
        if (!*p) return cllm_error(CLLM_EINVAL, "unknown template \"%s\" (gsm8k, raw, chat, or a string with {field})", name);
    }
    return 0;
}
