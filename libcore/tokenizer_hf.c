/* tokenizer_hf.c: build the tokenizer from a HF model directory:
 * tokenizer.json (model BPE: vocab, merges as "a b" strings or [a, b] pairs,
 * unk_token, ignore_merges; added_tokens; normalizer; pre_tokenizer;
 * post_processor, for a TemplateProcessing that prepends BOS) and
 * tokenizer_config.json (bos/eos/pad tokens, add_bos_token, chat_template),
 * both optional except tokenizer.json.
 *
 * Supported pre_tokenizer: null, ByteLevel (add_prefix_space false), Digits,
 * Split (Regex or String pattern, behavior Isolated, invert false), and a
 * Sequence of these. Normalizer: null, or NFC which is accepted and NOT applied
 * (like llama.cpp; text that is already NFC, as almost all is, is unaffected).
 * Anything else is CLLM_EUNSUP with the name of what is unsupported, never a
 * silently different tokenizer; so is an added token with lstrip, rstrip or
 * single_word set (all false in SmolLM2, Qwen2 and Llama 3). Added tokens
 * become CONTROL (special) or USER_DEFINED types, so a HF directory and the
 * GGUF made from it hash alike.
 * Ids are checked: each in [0, 2^24), holes in the id space become empty
 * UNUSED tokens, at most as many as there are tokens plus 2^16.
 */
#include "tokenizer_int.h"

#include "err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HF_MAX_VOCAB (1 << 24)
/* Ids without a token (holes) beyond as many as there are tokens: each id
 * costs some 50 bytes of tables, so without a bound one id near 2^24 in a
 * 50-byte file made the loader allocate 540 MB. Real vocabularies are dense
 * or nearly so. */
#define HF_MAX_HOLES (1 << 16)

typedef struct hf_load {
    cllm_pretok_step steps[CLLM_PRE_MAX_STEPS];
    int n_steps;
    char *owned[CLLM_PRE_MAX_STEPS];   /* patterns built from String splits */
} hf_load;

static int add_step(hf_load *L, cllm_pretok_step s) {
    if (L->n_steps == CLLM_PRE_MAX_STEPS)
        return cllm_error(CLLM_ELIMIT, "tokenizer.json: more than %d pre-tokenizer steps", CLLM_PRE_MAX_STEPS);
    L->steps[L->n_steps++] = s;
    return 0;
}

static int bool_field(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A literal string as a PCRE2 pattern. */
static char *quote_literal(const char *s) {
    size_t n = strlen(s), cap;
    if (cllm_mul_size(n, 4, &cap) || cllm_add_size(cap, 1, &cap)) { cllm_error(CLLM_ELIMIT, "split pattern too long"); return NULL; }
    char *o = cllm_malloc(cap), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i])) *p++ = '\\';
        *p++ = s[i];
    }
    *p = 0;
    return o;
}

static int parse_pre(hf_load *L, json_t *pre, int depth) {
    if (!pre || json_is_null(pre)) return 0;
    if (depth > 4) return cllm_error(CLLM_EUNSUP, "tokenizer.json: pre_tokenizer nested too deeply");
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return cllm_error(CLLM_EFORMAT, "tokenizer.json: pre_tokenizer without a type");
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pre, "pretokenizers");
        if (!json_is_array(arr)) return cllm_error(CLLM_EFORMAT, "tokenizer.json: Sequence without pretokenizers");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = parse_pre(L, e, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        if (bool_field(pre, "add_prefix_space", 0))
            return cllm_error(CLLM_EUNSUP, "tokenizer.json: ByteLevel add_prefix_space is not supported");
        if (!bool_field(pre, "use_regex", 1)) return 0;
        return add_step(L, (cllm_pretok_step){ CLLM_PRE_REGEX, cllm_pre_gpt2_pattern, 0 });
    }
    if (!strcmp(type, "Digits"))
        return add_step(L, (cllm_pretok_step){ CLLM_PRE_DIGITS, NULL, bool_field(pre, "individual_digits", 0) });
    if (!strcmp(type, "Split")) {
        const char *beh = json_string_value(json_object_get(pre, "behavior"));
        if (!beh || strcmp(beh, "Isolated") || bool_field(pre, "invert", 0))
            return cllm_error(CLLM_EUNSUP, "tokenizer.json: Split with behavior %s%s is not supported",
                              beh ? beh : "(none)", bool_field(pre, "invert", 0) ? " inverted" : "");
        json_t *pat = json_object_get(pre, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        if (re) return add_step(L, (cllm_pretok_step){ CLLM_PRE_REGEX, re, 0 });
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (!lit) return cllm_error(CLLM_EFORMAT, "tokenizer.json: Split without a pattern");
        if (L->n_steps == CLLM_PRE_MAX_STEPS) return add_step(L, (cllm_pretok_step){0});
        char *q = quote_literal(lit);
        if (!q) return CLLM_ENOMEM;
        L->owned[L->n_steps] = q;
        return add_step(L, (cllm_pretok_step){ CLLM_PRE_REGEX, q, 0 });
    }
    return cllm_error(CLLM_EUNSUP, "tokenizer.json: pre_tokenizer %s is not supported", type);
}

int cllm_hf_pre_tokenizer(const char *pre, json_t **out, int *ignore_merges) {
    cllm_pretok_step steps[CLLM_PRE_MAX_STEPS];
    cllm_tok_opts o;
    *out = NULL;
    int n = cllm_pretok_from_name(pre, &o, steps);
    if (!n) return cllm_error(CLLM_EUNSUP, "unknown pre-tokenizer \"%s\"", pre);
    *ignore_merges = o.ignore_merges;
    /* Each step as parse_pre reads it back: the GPT-2 regex as the last step
     * is ByteLevel's own (use_regex); any other regex a Split before a
     * ByteLevel that only maps bytes (what HF writes for Qwen2 and Llama 3). */
    json_t *seq = json_array();
    int byte_level = 0;
    for (int i = 0; seq && i < n; i++) {
        json_t *st;
        if (steps[i].kind == CLLM_PRE_DIGITS)
            st = json_pack("{s:s, s:b}", "type", "Digits", "individual_digits", steps[i].individual);
        else if (i == n - 1 && !strcmp(steps[i].pattern, cllm_pre_gpt2_pattern)) {
            st = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                           "use_regex", 1);
            byte_level = 1;
        } else
            st = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", steps[i].pattern,
                           "behavior", "Isolated", "invert", 0);
        if (!st || json_array_append_new(seq, st)) { json_decref(seq); seq = NULL; }
    }
    if (seq && !byte_level &&
        json_array_append_new(seq, json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                             "trim_offsets", 0, "use_regex", 0))) {
        json_decref(seq);
        seq = NULL;
    }
    if (seq && json_array_size(seq) == 1) {  /* one step: itself, as HF writes GPT-2's */
        *out = json_incref(json_array_get(seq, 0));
        json_decref(seq);
    } else if (seq)
        *out = json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", seq);
    return *out ? 0 : cllm_error(CLLM_ENOMEM, "out of memory building a pre_tokenizer");
}

/* The token id a TemplateProcessing post-processor (alone, or in a Sequence,
 * as Llama 3.1 writes it) puts before a single text: what HF's
 * encode(add_special_tokens=True) prepends, e.g. Llama 3's <|begin_of_text|>.
 * -1 when there is none. */
static int template_prefix_id(json_t *pp, int depth) {
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type || depth > 4) return -1;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(pp, "processors"), i, e) {
            int id = template_prefix_id(e, depth + 1);
            if (id >= 0) return id;
        }
        return -1;
    }
    if (strcmp(type, "TemplateProcessing")) return -1;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    const char *name = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (!name) return -1;
    json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
    json_t *id = json_array_get(ids, 0);
    if (json_array_size(ids) != 1 || !json_is_integer(id) || json_integer_value(id) < 0 ||
        json_integer_value(id) >= HF_MAX_VOCAB)
        return -1;
    return (int)json_integer_value(id);
}

static int check_normalizer(json_t *nz) {
    if (!nz || json_is_null(nz)) return 0;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (type && !strcmp(type, "NFC")) return 0;
    if (type && !strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(nz, "normalizers");
        if (json_is_array(arr) && json_array_size(arr) == 0) return 0;
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = check_normalizer(e);
            if (rc) return rc;
        }
        return 0;
    }
    return cllm_error(CLLM_EUNSUP, "tokenizer.json: normalizer %s is not supported", type ? type : "(untyped)");
}

static json_t *load_json(const char *dir, const char *name, int required, int *rc) {
    char path[4096];
    *rc = 0;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        *rc = cllm_error(CLLM_EINVAL, "%s: path too long", dir);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (required) *rc = cllm_error(CLLM_EIO, "%s: cannot open", path);
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loadf(f, JSON_ALLOW_NUL, &err);
    fclose(f);
    if (!j) *rc = cllm_error(CLLM_EFORMAT, "%s:%d: %s", path, err.line, err.text);
    else if (!json_is_object(j)) { json_decref(j); j = NULL; *rc = cllm_error(CLLM_EFORMAT, "%s: not a JSON object", path); }
    return j;
}

/* A token named in tokenizer_config.json ("<s>" or {"content": "<s>"}), or -1. */
static int config_token(json_t *cfg, const char *key, json_t *vocab, json_t *added) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    const char *s = json_string_value(v);
    if (!s) return -1;
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && !strcmp(c, s)) return (int)json_integer_value(json_object_get(e, "id"));
    }
    json_t *id = json_object_get(vocab, s);
    return json_is_integer(id) ? (int)json_integer_value(id) : -1;
}

int cllm_tokenizer_from_hf_dir(cllm_tokenizer **out, const char *dir) {
    *out = NULL;
    int rc;
    json_t *tj = load_json(dir, "tokenizer.json", 1, &rc);
    if (!tj) return rc;
    json_t *cfg = load_json(dir, "tokenizer_config.json", 0, &rc);
    if (rc) { json_decref(tj); return rc; }

    hf_load L = {0};
    const char **toks = NULL, **mrg = NULL;
    size_t *tlen = NULL, *mlen = NULL;
    int32_t *types = NULL;
    char **mown = NULL;
    size_t n_tok = 0, n_m = 0;
    json_t *model = json_object_get(tj, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model) || !json_is_object(vocab) || !json_is_array(merges)) {
        rc = cllm_error(CLLM_EFORMAT, "%s/tokenizer.json: model lacks vocab or merges", dir);
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE")) { rc = cllm_error(CLLM_EUNSUP, "tokenizer.json: model %s is not supported (only BPE)", mtype); goto done; }
    if (bool_field(model, "byte_fallback", 0)) { rc = cllm_error(CLLM_EUNSUP, "tokenizer.json: BPE byte_fallback is not supported"); goto done; }
    if (json_is_real(json_object_get(model, "dropout")) && json_real_value(json_object_get(model, "dropout")) > 0) {
        rc = cllm_error(CLLM_EUNSUP, "tokenizer.json: BPE dropout is not supported"); goto done;
    }
    if (added && !json_is_array(added)) { rc = cllm_error(CLLM_EFORMAT, "tokenizer.json: added_tokens is not an array"); goto done; }
    if ((rc = check_normalizer(json_object_get(tj, "normalizer")))) goto done;
    if ((rc = parse_pre(&L, json_object_get(tj, "pre_tokenizer"), 0))) goto done;

    /* id space */
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= HF_MAX_VOCAB) {
            rc = cllm_error(CLLM_EFORMAT, "tokenizer.json: vocab id of \"%.64s\" is not in [0, %d)", key, HF_MAX_VOCAB);
            goto done;
        }
        if ((size_t)id + 1 > n_tok) n_tok = (size_t)id + 1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(added, i, e) {
        json_t *idv = json_object_get(e, "id");
        json_int_t id = json_integer_value(idv);
        if (!json_is_integer(idv) || id < 0 || id >= HF_MAX_VOCAB || !json_is_string(json_object_get(e, "content"))) {
            rc = cllm_error(CLLM_EFORMAT, "tokenizer.json: added token %zu lacks a valid id or content", i);
            goto done;
        }
        /* HF moves the whitespace around such a token into it (lstrip/rstrip)
         * or matches it only between non-word chars (single_word): text
         * would encode differently, so it is refused, not ignored */
        static const char *const opt[] = { "lstrip", "rstrip", "single_word" };
        for (int k = 0; k < 3; k++)
            if (bool_field(e, opt[k], 0)) {
                rc = cllm_error(CLLM_EUNSUP, "tokenizer.json: added token \"%.64s\" has %s, which is not supported",
                                json_string_value(json_object_get(e, "content")), opt[k]);
                goto done;
            }
        if ((size_t)id + 1 > n_tok) n_tok = (size_t)id + 1;
    }
    if (!n_tok) { rc = cllm_error(CLLM_EFORMAT, "tokenizer.json: empty vocab"); goto done; }
    size_t n_given = json_object_size(vocab) + json_array_size(added);
    if (n_tok > n_given && n_tok - n_given > n_given + HF_MAX_HOLES) {
        rc = cllm_error(CLLM_ELIMIT, "tokenizer.json: ids reach %zu with %zu tokens (more than %zu ids without a token)",
                        n_tok - 1, n_given, n_given + HF_MAX_HOLES);
        goto done;
    }
    toks = cllm_calloc(n_tok, sizeof *toks);
    tlen = cllm_calloc(n_tok, sizeof *tlen);
    types = cllm_calloc(n_tok, sizeof *types);
    if (!toks || !tlen || !types) { rc = CLLM_ENOMEM; goto done; }
    for (size_t k = 0; k < n_tok; k++) { toks[k] = ""; types[k] = CLLM_TOK_UNUSED; }
    json_object_foreach(vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        toks[id] = key;
        tlen[id] = strlen(key);
        types[id] = CLLM_TOK_NORMAL;
    }
    json_array_foreach(added, i, e) {
        size_t id = (size_t)json_integer_value(json_object_get(e, "id"));
        json_t *c = json_object_get(e, "content");
        toks[id] = json_string_value(c);
        tlen[id] = json_string_length(c);
        types[id] = json_is_true(json_object_get(e, "special")) ? CLLM_TOK_CONTROL : CLLM_TOK_USER_DEFINED;
    }

    /* merges: "a b" or ["a", "b"] */
    n_m = json_array_size(merges);
    mrg = cllm_calloc(n_m ? n_m : 1, sizeof *mrg);
    mlen = cllm_calloc(n_m ? n_m : 1, sizeof *mlen);
    mown = cllm_calloc(n_m ? n_m : 1, sizeof *mown);
    if (!mrg || !mlen || !mown) { rc = CLLM_ENOMEM; goto done; }
    json_array_foreach(merges, i, e) {
        if (json_is_string(e)) {
            mrg[i] = json_string_value(e);
            mlen[i] = json_string_length(e);
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            size_t la = json_string_length(json_array_get(e, 0)), lb = json_string_length(json_array_get(e, 1)), l;
            if (cllm_add_size(la, lb, &l) || cllm_add_size(l, 2, &l)) { rc = cllm_error(CLLM_ELIMIT, "merge too long"); goto done; }
            char *m = cllm_malloc(l);
            if (!m) { rc = CLLM_ENOMEM; goto done; }
            memcpy(m, json_string_value(json_array_get(e, 0)), la);
            m[la] = ' ';
            memcpy(m + la + 1, json_string_value(json_array_get(e, 1)), lb);
            m[la + lb + 1] = 0;
            mown[i] = m;
            mrg[i] = m;
            mlen[i] = la + lb + 1;
        } else {
            rc = cllm_error(CLLM_EFORMAT, "tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", i);
            goto done;
        }
    }

    cllm_tok_opts o = { L.steps, L.n_steps, -1, bool_field(model, "ignore_merges", 0) };
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk) {
        json_t *uid = json_object_get(vocab, unk);
        if (json_is_integer(uid)) o.unk_id = (int)json_integer_value(uid);
        json_array_foreach(added, i, e)
            if (!strcmp(json_string_value(json_object_get(e, "content")), unk))
                o.unk_id = (int)json_integer_value(json_object_get(e, "id"));
    }
    cllm_tokenizer_spec spec = { .tokens = toks, .token_lens = tlen, .n_tokens = n_tok, .token_types = types,
                                 .merges = mrg, .merge_lens = mlen, .n_merges = n_m, .pre = NULL,
                                 .bos_id = -1, .eos_id = -1, .pad_id = -1 };
    /* BOS before every text: tokenizer_config's add_bos_token when it has
     * one (transformers' Llama tokenizers rebuild the post-processor from
     * it), else the post-processor's own template (Llama 3 has no
     * add_bos_token and prepends <|begin_of_text|> there). */
    int pre_id = template_prefix_id(json_object_get(tj, "post_processor"), 0);
    json_t *ab = cfg ? json_object_get(cfg, "add_bos_token") : NULL;
    if (json_is_boolean(ab)) spec.add_bos = json_is_true(ab);
    else if (pre_id >= 0 && (size_t)pre_id < n_tok) spec.add_bos = 1;
    if (cfg) {
        spec.bos_id = config_token(cfg, "bos_token", vocab, added);
        spec.eos_id = config_token(cfg, "eos_token", vocab, added);
        spec.pad_id = config_token(cfg, "pad_token", vocab, added);
        json_t *ct = json_object_get(cfg, "chat_template");
        if (json_is_string(ct)) spec.chat_template = json_string_value(ct);
        else if (json_is_array(ct)) { /* [{name, template}]: the "default" one, else the first */
            json_array_foreach(ct, i, e) {
                const char *nm = json_string_value(json_object_get(e, "name"));
                const char *tx = json_string_value(json_object_get(e, "template"));
                if (tx && (!spec.chat_template || (nm && !strcmp(nm, "default")))) spec.chat_template = tx;
            }
        }
    }
    /* the token the template prepends is the one added, whatever bos_token says */
    if (spec.add_bos && pre_id >= 0 && (!json_is_boolean(ab) || spec.bos_id < 0)) spec.bos_id = pre_id;
    rc = cllm_tokenizer_new_ex(out, &spec, &o);
    if (rc) cllm_error_prefix(rc, "%s: ", dir);
done:
    for (int k = 0; k < CLLM_PRE_MAX_STEPS; k++) free(L.owned[k]);
    if (mown)
        for (size_t k = 0; k < n_m; k++) free(mown[k]);
    free(mown); free(mrg); free(mlen); free(toks); free(tlen); free(types);
    json_decref(tj);
    json_decref(cfg);
    return rc;
}
