/* test_tokenizer.c: the tokenizer against HF `tokenizers` golden ids, plus unit
 * tests of the BPE on a tiny hand-made vocab and of the prompt templates.
 *
 * Golden (tests/golden/tokenizer_golden.py): tests/golden/tokenizer_ids.txt has
 * one "TAG ids..." line per string: q<i>/a<i> for GSM8K test line i (read at
 * test time from $CLLM_DATA/gsm8k_test.jsonl), h<i> for line i of
 * tests/golden/tokenizer_hard.jsonl, chat for the chat prompt of "hello".
 * Without the model file the golden part is skipped with a note.
 */
#include "check.h"

#include "clock.h"
#include "err.h"
#include "gguf.h"
#include "json.h"
#include "prompts.h"
#include "stream.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

#include <jansson.h>
#include <sys/stat.h>
#include <time.h>

/* SmolLM2-135M-Instruct's tokenizer content hash: it changes only when the
 * hash definition or the tokenizer data changes. */
#define SMOLLM2_HASH "daac54284b581638"

static int ids_eq(const int32_t *a, size_t na, const int32_t *b, size_t nb, size_t *pos) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    *pos = i;
    return na == nb && i == na;
}

/* ---- tiny vocab ------------------------------------------------------------ */

static void test_tiny(void) {
    /* bytes: a b c ! and space (as U+0120), plus merges */
    static const char *toks[] = { "a", "b", "c", "!", "\xc4\xa0", "ab", "abc", "aa", "\xc4\xa0" "a", "<s>", "<s>x",
                                  "bc", "<u>" };
    static const int32_t types[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 1, 4 };
    static const char *merges[] = { "a a", "a b", "ab c", "\xc4\xa0 a", "b c" };
    cllm_tokenizer_spec sp = { .tokens = toks, .n_tokens = 13, .token_types = types, .merges = merges,
                               .n_merges = 5, .pre = "gpt2", .bos_id = 9, .eos_id = 9, .pad_id = -1 };
    cllm_tokenizer *t = NULL;
    CHECK_OK(cllm_tokenizer_new(&t, &sp));
    if (!t) return;
    struct { const char *s; int ps; int32_t ids[8]; size_t n; } cases[] = {
        { "aaa", 1, { 7, 0 }, 2 },          /* leftmost of equal ranks: (aa)(a) */
        { "abc", 1, { 6 }, 1 },             /* a b -> ab (rank 1) before b c (rank 4), then ab c */
        { "bc", 1, { 11 }, 1 },
        { "a a", 1, { 0, 8 }, 2 },          /* " a" is one piece */
        { "<s>x<s>", 1, { 10, 9 }, 2 },     /* longest special at a position */
        { "<s>", 0, { 0 }, 0 },             /* parse_special off: '<', 's', '>' have no token: dropped */
        { "a<u>b", 0, { 0, 12, 1 }, 3 },    /* user-defined tokens match even without parse_special */
        { "a\x01" "b", 1, { 0, 1 }, 2 },    /* 0x01 has no token: dropped ("a" then "\x01b" piece) */
        { "", 1, { 0 }, 0 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int32_t *ids = NULL;
        size_t n = 0, pos;
        CHECK_OK(cllm_tokenizer_encode(t, cases[k].s, strlen(cases[k].s), cases[k].ps, &ids, &n));
        CHECK_MSG(ids_eq(ids, n, cases[k].ids, cases[k].n, &pos), "tiny case %zu (\"%s\"): differs at %zu", k,
                  cases[k].s, pos);
        free(ids);
    }
    char *txt;
    size_t len;
    int32_t dec[] = { 8, 6, 4, 10 };
    CHECK_OK(cllm_tokenizer_decode(t, dec, 4, &txt, &len));
    CHECK_STR(txt, " aabc <s>x");
    CHECK_EQ_INT(len, 10);
    free(txt);
    int32_t bad[] = { 13 };
    CHECK(cllm_tokenizer_decode(t, bad, 1, &txt, &len) == CLLM_EINVAL);
    char buf[4];
    CHECK(cllm_tokenizer_token_bytes(t, 10, buf, 2, &len) == CLLM_ELIMIT && len == 4);
    CHECK_OK(cllm_tokenizer_token_bytes(t, 4, buf, sizeof buf, &len));
    CHECK(len == 1 && buf[0] == ' ');
    CHECK(cllm_tokenizer_is_eog(t, 9) && !cllm_tokenizer_is_eog(t, 0));
    CHECK_EQ_INT(cllm_tokenizer_find(t, "abc", 3), 6);
    CHECK_EQ_INT(cllm_tokenizer_find(t, "abd", 3), -1);
    CHECK_EQ_INT(strlen(cllm_tokenizer_hash(t)), 16);
    /* no chat template and no <|im_start|>: chat is unsupported */
    char *out = NULL;
    CHECK(cllm_chat_apply(t, "hi", &out) == CLLM_EUNSUP && !out);
    cllm_tokenizer_free(t);

    /* bad specs */
    static const char *bad_merges[] = { "a z" };
    cllm_tokenizer_spec b2 = sp;
    b2.merges = bad_merges;
    b2.n_merges = 1;
    CHECK(cllm_tokenizer_new(&t, &b2) == CLLM_EFORMAT && !t);
    b2 = sp;
    b2.pre = "no-such-pre";
    CHECK(cllm_tokenizer_new(&t, &b2) == CLLM_EUNSUP && !t);
    TEST_OK("tokenizer_tiny_bpe");
}

static void test_templates(void) {
    const char *f[] = { "question", "answer" }, *v[] = { "What is 2+2?", "4" };
    char *out = NULL;
    CHECK_OK(cllm_template_apply(NULL, "gsm8k", f, v, 2, &out));
    CHECK_STR(out, "Question:\nWhat is 2+2?\nAnswer:\nLet's think step by step.\n");
    free(out);
    CHECK_OK(cllm_template_apply(NULL, "Q: {question}\\nA: {answer} {{x}}", f, v, 2, &out));
    CHECK_STR(out, "Q: What is 2+2?\nA: 4 {x}");
    free(out);
    CHECK_OK(cllm_template_apply(NULL, "raw", f, v, 2, &out));
    CHECK_STR(out, "What is 2+2?");
    free(out);
    out = NULL;
    CHECK(cllm_template_apply(NULL, "{nope}", f, v, 2, &out) == CLLM_EINVAL && !out);
    CHECK(cllm_template_apply(NULL, "nosuchname", f, v, 2, &out) == CLLM_EINVAL && !out);
    /* a bare word with '-' or '_' is a name too (a typo), not a template string */
    CHECK(cllm_template_apply(NULL, "gsm-8k", f, v, 2, &out) == CLLM_EINVAL && !out);
    /* {name} is the whole field name, never a prefix of one */
    CHECK(cllm_template_apply(NULL, "{q}", f, v, 2, &out) == CLLM_EINVAL && !out);
    CHECK(cllm_template_apply(NULL, "{questio}", f, v, 2, &out) == CLLM_EINVAL && !out);
    /* the option's check, before any prompt: the names, and any string, pass;
     * a bare word that is no name (or nothing) does not; fields are not looked at */
    CHECK_OK(cllm_template_check("gsm8k"));
    CHECK_OK(cllm_template_check("raw"));
    CHECK_OK(cllm_template_check("chat"));
    CHECK_OK(cllm_template_check("chatml"));
    CHECK_OK(cllm_template_check("{nope}"));
    CHECK_OK(cllm_template_check("Say: hi"));
    CHECK(cllm_template_check("nosuchname") == CLLM_EINVAL && strstr(cllm_errmsg(), "unknown template \"nosuchname\""));
    CHECK(cllm_template_check("gsm-8k") == CLLM_EINVAL);
    CHECK(cllm_template_check("") == CLLM_EINVAL);
    CHECK(cllm_template_check(NULL) == CLLM_EINVAL);
    /* names with '_' and digits; \t, \\ escapes; a '{' not opening a name is literal */
    const char *f3[] = { "_x", "my_field2", "q" }, *v3[] = { "U", "M", "Q" };
    CHECK_OK(cllm_template_apply(NULL, "{_x}\\t{my_field2}\\\\n{q}\\\\{{1} {q", f3, v3, 3, &out));
    CHECK_STR(out, "U\tM\\nQ\\{1} {q");
    free(out);

    /* default system prompt detection */
    int chatml;
    char *sys = NULL;
    const char *qwen2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
                        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    CHECK_OK(cllm_chat_template_scan(qwen2, &chatml, &sys));
    CHECK(chatml);
    CHECK_STR(sys, "You are a helpful assistant.");
    free(sys);
    const char *nosys = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                        "{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + "
                        "messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}";
    CHECK_OK(cllm_chat_template_scan(nosys, &chatml, &sys));
    CHECK(chatml && sys == NULL);
    CHECK_OK(cllm_chat_template_scan("{{ bos_token }}[INST]", &chatml, &sys));
    CHECK(!chatml && sys == NULL);
    /* a real newline after "system" as well as an escaped one */
    CHECK_OK(cllm_chat_template_scan("{{ '<|im_start|>system\nSys A<|im_end|>' }}", &chatml, &sys));
    CHECK_STR(sys, "Sys A");
    free(sys);
    /* an empty or brace-holding text is skipped: the next literal counts */
    CHECK_OK(cllm_chat_template_scan("'<|im_start|>system\\n<|im_end|>' '<|im_start|>system\\n{{ s }}<|im_end|>' "
                                     "'<|im_start|>system\\nSecond<|im_end|>'", &chatml, &sys));
    CHECK(chatml);
    CHECK_STR(sys, "Second");
    free(sys);
    CHECK_OK(cllm_chat_template_scan("'<|im_start|>system\\n{{ s }}<|im_end|>'", &chatml, &sys));
    CHECK(chatml && sys == NULL);
    /* Jinja escapes in the text: \n \t \r and \X -> X; a final lone backslash stays */
    CHECK_OK(cllm_chat_template_scan("'<|im_start|>system\\nA\\tB\\\\C\\rD\\nE\\<|im_end|>'", &chatml, &sys));
    CHECK_STR(sys, "A\tB\\C\rD\nE\\");
    free(sys);
    TEST_OK("tokenizer_templates");
}

/* ---- the real tokenizer ------------------------------------------------- */

typedef struct golden { char tag[16]; int32_t *ids; size_t n; } golden;

static golden *read_golden(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return NULL; }
    golden *g = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        if (line[0] == '#') continue;
        if (n == cap) { cap = cap ? cap * 2 : 4096; g = realloc(g, cap * sizeof *g); }
        golden *e = &g[n++];
        memset(e, 0, sizeof *e);
        char *p = line;
        size_t k = 0;
        while (*p && *p != ' ' && *p != '\n' && k + 1 < sizeof e->tag) e->tag[k++] = *p++;
        size_t icap = 0;
        for (;;) {
            while (*p == ' ') p++;
            if (*p < '0' || *p > '9') break;
            if (e->n == icap) { icap = icap ? icap * 2 : 64; e->ids = realloc(e->ids, icap * sizeof *e->ids); }
            e->ids[e->n++] = (int32_t)strtol(p, &p, 10);
        }
    }
    free(line);
    fclose(f);
    *count = n;
    return g;
}

typedef struct str { char *s; size_t n; char tag[16]; } str;

static str *read_strings(size_t *count) {
    str *v = NULL;
    size_t n = 0, cap = 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/gsm8k_test.jsonl", test_data_dir());
    const char *files[2] = { path, "tests/golden/tokenizer_hard.jsonl" };
    for (int fi = 0; fi < 2; fi++) {
        FILE *f = fopen(files[fi], "r");
        if (!f) { fprintf(stderr, "cannot open %s\n", files[fi]); continue; }
        char *line = NULL;
        size_t lcap = 0, ln = 0;
        ssize_t got;
        while ((got = getline(&line, &lcap, f)) > 0) {
            json_error_t err;
            json_t *j = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &err);
            if (!j) { fprintf(stderr, "%s:%zu: %s\n", files[fi], ln + 1, err.text); ln++; continue; }
            const char *keys[2] = { fi ? "s" : "question", fi ? NULL : "answer" };
            for (int k = 0; k < 2 && keys[k]; k++) {
                json_t *s = json_object_get(j, keys[k]);
                if (n == cap) { cap = cap ? cap * 2 : 4096; v = realloc(v, cap * sizeof *v); }
                v[n].n = json_string_length(s);
                v[n].s = malloc(v[n].n + 1);
                memcpy(v[n].s, json_string_value(s), v[n].n);
                v[n].s[v[n].n] = 0;
                snprintf(v[n].tag, sizeof v[n].tag, "%s%zu", fi ? "h" : (k ? "a" : "q"), ln);
                n++;
            }
            json_decref(j);
            ln++;
        }
        free(line);
        fclose(f);
    }
    *count = n;
    return v;
}

/* The bytes that have no single-byte token are dropped by encoding. */
static size_t strip_dropped(const cllm_tokenizer *t, const char *s, size_t n, char *o) {
    static const cllm_tokenizer *cached;
    static unsigned char keep[256];
    if (cached != t) {
        for (unsigned b = 0; b < 256; b++) {
            /* GPT-2 byte map */
            unsigned cp = b;
            if (!((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))) {
                unsigned m = 0;
                for (unsigned c = 0; c < b; c++)
                    if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae))) m++;
                cp = 0x100 + m;
            }
            char u[2];
            size_t ul;
            if (cp < 0x80) { u[0] = (char)cp; ul = 1; }
            else { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3f)); ul = 2; }
            keep[b] = cllm_tokenizer_find(t, u, ul) >= 0;
        }
        cached = t;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep[(unsigned char)s[i]]) o[k++] = s[i];
    return k;
}

static int roundtrip(const cllm_tokenizer *t, const char *s, size_t n, const char *what) {
    int32_t *ids = NULL;
    size_t ni = 0, len = 0;
    char *txt = NULL;
    int ok = 1;
    CHECK_OK(cllm_tokenizer_encode(t, s, n, 1, &ids, &ni));
    CHECK_OK(cllm_tokenizer_decode(t, ids, ni, &txt, &len));
    char *want = malloc(n + 1);
    size_t wn = strip_dropped(t, s, n, want);
    if (!txt || len != wn || memcmp(txt, want, wn)) {
        fprintf(stderr, "roundtrip of %s differs (%zu vs %zu bytes)\n", what, len, wn);
        ok = 0;
    }
    free(want);
    free(txt);
    free(ids);
    return ok;
}


static int write_text(const char *path, const char *text);

/* ---- the prompt source (prompts.c) ---------------------------------------- */

/* What one prompt came out as. */
typedef struct got {
    int64_t id;
    uint64_t index;
    char text[200];       /* "" when tokens were given */
    char answer[40];      /* "-" when none */
    size_t n_tok;
    int32_t tok0;
} got;

/* Read every prompt of path under o: the count, and the last return code
 * (CLLM_EOF at a clean end) in *last. */
static int read_prompts(const char *path, const cllm_prompt_opts *o, const cllm_tokenizer *t, got *g, int max,
                        int *last) {
    cllm_prompts *s = NULL;
    int n = 0;
    *last = cllm_prompts_open(&s, path, o, t);
    if (*last) return 0;
    cllm_prompt p = { 0 };
    while ((*last = cllm_prompts_next(s, &p)) == 0 && n < max) {
        g[n].id = p.id;
        g[n].index = p.index;
        snprintf(g[n].text, sizeof g[n].text, "%s", p.text ? p.text : "");
        snprintf(g[n].answer, sizeof g[n].answer, "%s", p.answer ? p.answer : "-");
        g[n].n_tok = p.tokens.n;
        g[n].tok0 = p.tokens.n ? p.tokens.ids[0] : -1;
        n++;
    }
    cllm_prompt_free(&p);
    cllm_prompts_close(s);
    return n;
}

/* A stream of one header and the given records (JSON objects). */
static void write_stream(const char *path, const char *const *recs, size_t n) {
    cllm_writer *w = NULL;
    CHECK_OK(cllm_writer_open(&w, path, 1));
    if (!w) return;
    cllm_packbuf b = { 0 };
    char *argv[] = { "test" };
    cllm_header_rec h = { "test_tokenizer", "m", 49152, "0123456789abcdef", 1, argv };
    CHECK_OK(cllm_rec_header_pack(&b, &h));
    CHECK_OK(cllm_writer_put_header(w, b.data, b.size));
    for (size_t i = 0; i < n; i++) {
        json_error_t err;
        json_t *j = json_loads(recs[i], 0, &err);
        CHECK_MSG(j != NULL, "%s: %s", recs[i], err.text);
        cllm_packbuf_reset(&b);
        if (j) CHECK_OK(cllm_json_pack(&b, j));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        json_decref(j);
    }
    CHECK_OK(cllm_writer_close(w));
    cllm_packbuf_free(&b);
}

static void test_prompts(const cllm_tokenizer *t) {
    mkdir("tests/tmp", 0777);
    got g[8];
    int n, last;
    cllm_prompt_opts o = { 0 };

    /* JSONL (cllm-gen(1)): blank and blank-looking lines are not prompts; the
     * text is --field, else the first of text, prompt, question; ids 0, 1, ...
     * by position unless the object has a non-negative integer id (0 too);
     * "tokens" are used as they are. */
    CHECK(write_text("tests/tmp/p.jsonl",
                     "{\"question\":\"Q0\",\"answer\":\"A0\"}\r\n"
                     "\n"
                     "{\"id\":7,\"prompt\":\"P1\",\"question\":\"Qx\"}\n"
                     "  \t \n"
                     "{\"text\":\"T2\",\"prompt\":\"x\",\"id\":-3}\n"
                     "{\"id\":0,\"tokens\":[5,2147483647]}\n"
                     "  {\"a\":\"1\",\"b\":\"2\",\"c\":\"3\",\"question\":\"Q4\",\"id\":\"s\"}  \n") == 0);
    n = read_prompts("tests/tmp/p.jsonl", &o, t, g, 8, &last);
    CHECK_EQ_INT(last, CLLM_EOF);
    CHECK_EQ_INT(n, 5);
    if (n == 5) {
        static const int64_t ids[] = { 0, 7, 2, 0, 4 };
        static const char *texts[] = { "Q0", "P1", "T2", "", "Q4" };
        for (int i = 0; i < 5; i++) {
            CHECK_EQ_INT(g[i].id, ids[i]);
            CHECK_EQ_INT(g[i].index, i);
            CHECK_STR(g[i].text, texts[i]);
        }
        CHECK_STR(g[0].answer, "A0");
        CHECK_STR(g[1].answer, "-");
        CHECK(g[3].n_tok == 2 && g[3].tok0 == 5);
        CHECK(g[0].n_tok > 0 && g[4].n_tok > 0);
    }
    /* --shard i/N: exactly the prompts whose index % N == i, indexes and ids kept */
    int seen[5] = { 0 };
    for (uint64_t i = 0; i < 3; i++) {
        o.shard_i = i;
        o.shard_n = 3;
        n = read_prompts("tests/tmp/p.jsonl", &o, t, g, 8, &last);
        CHECK_EQ_INT(last, CLLM_EOF);
        for (int k = 0; k < n; k++) {
            CHECK_EQ_INT(g[k].index % 3, i);
            if (g[k].index < 5) seen[g[k].index]++;
        }
    }
    for (int k = 0; k < 5; k++) CHECK_MSG(seen[k] == 1, "prompt %d is in %d shards of 3", k, seen[k]);
    o.shard_i = 1;
    o.shard_n = 2;
    n = read_prompts("tests/tmp/p.jsonl", &o, t, g, 8, &last);
    CHECK(n == 2 && g[0].id == 7 && g[0].index == 1 && g[1].id == 0 && g[1].index == 3);
    o.shard_i = o.shard_n = 0;

    /* --field and --answer-field */
    o.field = "c";
    o.answer_field = "b";
    CHECK(write_text("tests/tmp/f.jsonl", "{\"c\":\"C0\",\"b\":\"B0\",\"question\":\"Q\"}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(last == CLLM_EOF && n == 1);
    if (n == 1) { CHECK_STR(g[0].text, "C0"); CHECK_STR(g[0].answer, "B0"); }
    /* a missing --field is an error naming the line (blank lines counted) ... */
    CHECK(write_text("tests/tmp/f.jsonl", "{\"c\":\"x\",\"question\":\"P\"}\n\n{\"question\":\"Q\"}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && last == CLLM_ESCHEMA);
    CHECK_MSG(strstr(cllm_errmsg(), "tests/tmp/f.jsonl:3: ") && strstr(cllm_errmsg(), "no string field \"c\""), "%s",
              cllm_errmsg());
    /* ... unless a template string fills the prompt from other fields */
    o.template = "<{question}>";
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 2 && last == CLLM_EOF && !strcmp(g[0].text, "<P>") && !strcmp(g[1].text, "<Q>"));
    /* a named template takes the --field text as its question, over the object's own */
    o.template = "gsm8k";
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK_MSG(n >= 1 && !strcmp(g[0].text, "Question:\nx\nAnswer:\nLet's think step by step.\n"), "%s",
              n >= 1 ? g[0].text : cllm_errmsg());
    o.field = o.answer_field = NULL;
    /* a template field missing: the error names the line */
    o.template = "{nope}";
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_EINVAL);
    CHECK_MSG(strstr(cllm_errmsg(), "tests/tmp/f.jsonl:1: "), "%s", cllm_errmsg());
    /* named templates and chat take the chosen text as {question} */
    CHECK(write_text("tests/tmp/f.jsonl", "{\"prompt\":\"hi\"}\n") == 0);
    o.template = "gsm8k";
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && !strcmp(g[0].text, "Question:\nhi\nAnswer:\nLet's think step by step.\n"));
    o.template = NULL;
    o.chat = 1;
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && strstr(g[0].text, "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    CHECK(n == 1 && g[0].tok0 == 1); /* <|im_start|> is its control token */
    o.chat = 0;
    /* a prompt with no tokens at all is an error */
    CHECK(write_text("tests/tmp/f.jsonl", "{\"text\":\"\"}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_ESCHEMA && strstr(cllm_errmsg(), "f.jsonl:1: ") && strstr(cllm_errmsg(), "empty"));
    /* token ids out of range */
    CHECK(write_text("tests/tmp/f.jsonl", "{\"tokens\":[1]}\n{\"tokens\":[-1]}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && last == CLLM_ESCHEMA && strstr(cllm_errmsg(), "f.jsonl:2: "));
    CHECK(write_text("tests/tmp/f.jsonl", "{\"tokens\":[2147483648]}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_ESCHEMA);
    /* not an object, bad JSON: errors with the line number */
    CHECK(write_text("tests/tmp/f.jsonl", "{\"text\":\"a\"}\n\n[1]\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && last == CLLM_EFORMAT && strstr(cllm_errmsg(), "f.jsonl:3: not a JSON object"));
    CHECK(write_text("tests/tmp/f.jsonl", "{\"text\":\"a\"}\n\"s\"\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 1 && last == CLLM_EFORMAT && strstr(cllm_errmsg(), "f.jsonl:2: not a JSON object"));
    TEST_OK("prompts_jsonl");

    /* prompts.h: "'{' (after blanks) is JSONL": a JSONL file that starts with
     * a blank line or indentation is still JSONL, not text lines. */
    CHECK(write_text("tests/tmp/f.jsonl", "\n  {\"question\":\"Q\"}\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK_MSG(n == 1 && !strcmp(g[0].text, "Q"), "a JSONL file starting with a blank line read as text: \"%s\"",
              n > 0 ? g[0].text : "");
    TEST_OK("prompts_jsonl_after_blanks");

    /* text lines: one prompt per non-blank line (CR LF ends a line too); ids
     * count prompts, not lines; --lines reads JSON as text */
    CHECK(write_text("tests/tmp/p.txt", "a\r\n\n \t\nb c\nd\r\n  \ne\n") == 0);   /* blanks only: no prompt */
    n = read_prompts("tests/tmp/p.txt", &o, t, g, 8, &last);
    CHECK(last == CLLM_EOF && n == 4);
    if (n == 4) {
        static const char *texts[] = { "a", "b c", "d", "e" };
        for (int i = 0; i < 4; i++) { CHECK_EQ_INT(g[i].id, i); CHECK_STR(g[i].text, texts[i]); }
    }
    o.shard_i = 1;
    o.shard_n = 2;
    o.template = "<{text}>";
    n = read_prompts("tests/tmp/p.txt", &o, t, g, 8, &last);
    CHECK(n == 2 && g[0].id == 1 && !strcmp(g[0].text, "<b c>") && g[1].id == 3 && !strcmp(g[1].text, "<e>"));
    o.shard_i = 0;
    o.template = "gsm8k";
    n = read_prompts("tests/tmp/p.txt", &o, t, g, 8, &last);
    CHECK(n == 2 && g[0].id == 0 && g[1].id == 2 && !strcmp(g[1].text, "Question:\nd\nAnswer:\nLet's think step by step.\n"));
    o.shard_i = o.shard_n = 0;
    o.template = "{nope}";
    n = read_prompts("tests/tmp/p.txt", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_EINVAL);
    CHECK_MSG(strstr(cllm_errmsg(), "tests/tmp/p.txt:1: "), "%s", cllm_errmsg());
    CHECK(write_text("tests/tmp/p.txt", "\n\nx\n") == 0);
    n = read_prompts("tests/tmp/p.txt", &o, t, g, 8, &last);
    CHECK_MSG(n == 0 && strstr(cllm_errmsg(), "tests/tmp/p.txt:3: "), "%s", cllm_errmsg());
    o.template = NULL;
    CHECK_EQ_INT(cllm_prompt_opt(&o, CLLM_OPT_LINES, NULL), 0);
    CHECK(write_text("tests/tmp/f.jsonl", "{\"text\":\"a\"}\n[1]\n") == 0);
    n = read_prompts("tests/tmp/f.jsonl", &o, t, g, 8, &last);
    CHECK(n == 2 && !strcmp(g[0].text, "{\"text\":\"a\"}") && !strcmp(g[1].text, "[1]"));
    o.input = CLLM_IN_AUTO;
    TEST_OK("prompts_lines");

    /* a stream: prompt records only (others pass by, uncounted); the text is
     * --field or the first of text, prompt, question */
    static const char *recs[] = {
        "{\"type\":\"prompt\",\"id\":0,\"question\":\"S0\",\"answer\":\"B0\"}",
        "{\"type\":\"metric\",\"name\":\"x\",\"value\":1}",
        "{\"type\":\"prompt\",\"id\":5,\"prompt\":\"S1\",\"question\":\"x\",\"z\":\"Z1\"}",
        "{\"type\":\"prompt\",\"id\":6,\"tokens\":[3,4]}",
    };
    write_stream("tests/tmp/p.zst", recs, 4);
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK(last == CLLM_EOF && n == 3);
    if (n == 3) {
        CHECK(g[0].id == 0 && g[0].index == 0 && !strcmp(g[0].text, "S0") && !strcmp(g[0].answer, "B0"));
        CHECK(g[1].id == 5 && g[1].index == 1 && !strcmp(g[1].text, "S1") && !strcmp(g[1].answer, "-"));
        CHECK(g[2].id == 6 && g[2].index == 2 && g[2].n_tok == 2 && g[2].tok0 == 3);
    }
    /* skippable zstd frames (0x184D2A50..5F) may come first: still a stream */
    FILE *zf = fopen("tests/tmp/p.zst", "rb"), *sf = fopen("tests/tmp/skip.zst", "wb");
    CHECK(zf && sf);
    if (zf && sf) {
        fwrite("\x5f\x2a\x4d\x18\x02\x00\x00\x00" "ab", 1, 10, sf);
        char buf[4096];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, zf)) > 0) fwrite(buf, 1, k, sf);
    }
    if (zf) fclose(zf);
    if (sf) fclose(sf);
    n = read_prompts("tests/tmp/skip.zst", &o, t, g, 8, &last);
    CHECK_MSG(last == CLLM_EOF && n == 3, "a stream after a skippable frame: %d prompts, %s", n, cllm_errmsg());
    o.shard_i = 1;
    o.shard_n = 2;
    o.field = "z";
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK(last == CLLM_EOF && n == 1 && g[0].id == 5 && g[0].index == 1 && !strcmp(g[0].text, "Z1"));
    o.shard_i = o.shard_n = 0;
    /* --field names the text over a record's tokens, as for JSONL objects */
    static const char *both[] = { "{\"type\":\"prompt\",\"id\":1,\"tokens\":[3,4],\"z\":\"Z\"}" };
    write_stream("tests/tmp/p.zst", both, 1);
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK_MSG(n == 1 && !strcmp(g[0].text, "Z") && g[0].tok0 != 3, "--field z on a record with tokens: %s",
              n == 1 ? g[0].text : cllm_errmsg());
    o.field = NULL;
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK(n == 1 && g[0].n_tok == 2 && g[0].tok0 == 3);   /* without it, the tokens */
    static const char *neg[] = { "{\"type\":\"prompt\",\"id\":-1,\"tokens\":[3]}" };
    write_stream("tests/tmp/p.zst", neg, 1);
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_ESCHEMA && strstr(cllm_errmsg(), "negative id"));
    static const char *empty[] = { "{\"type\":\"prompt\",\"id\":1,\"tokens\":[]}" };
    write_stream("tests/tmp/p.zst", empty, 1);
    n = read_prompts("tests/tmp/p.zst", &o, t, g, 8, &last);
    CHECK(n == 0 && last == CLLM_ESCHEMA && strstr(cllm_errmsg(), "empty tokens"));
    TEST_OK("prompts_stream");
}

/* ---- HF directory --------------------------------------------------------- */

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* A tokenizer.json + tokenizer_config.json equal to the GGUF's tokenizer, in
 * the layout HF writes (merges as "a b" strings; the [a, b] pair layout that
 * tokenizers >= 0.20 writes was checked by hand, see docs/TOKENIZER.md). */
static int write_hf_dir(const cllm_gguf *g, const char *dir) {
    const cllm_gguf_str *toks, *merges;
    const int32_t *types;
    size_t nt, nm, ny;
    cllm_gguf_str tmpl;
    if (cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &nt) ||
        cllm_gguf_get_arr_str(g, "tokenizer.ggml.merges", &merges, &nm) ||
        cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &ny) ||
        cllm_gguf_get_str(g, "tokenizer.chat_template", &tmpl))
        return -1;
    json_t *vocab = json_object(), *jm = json_array(), *added = json_array();
    for (size_t i = 0; i < nt; i++) {
        json_object_setn_new(vocab, toks[i].s, toks[i].len, json_integer((json_int_t)i));
        if (types[i] == 3)
            json_array_append_new(added, json_pack("{s:I,s:s,s:b,s:b}", "id", (json_int_t)i, "content", toks[i].s,
                                                   "special", 1, "normalized", 0));
    }
    for (size_t i = 0; i < nm; i++) json_array_append_new(jm, json_stringn(merges[i].s, merges[i].len));
    json_t *tj = json_pack("{s:s,s:o,s:n,s:{s:s,s:[{s:s,s:b},{s:s,s:b,s:b,s:b}]},s:{s:s,s:n,s:b,s:b,s:o,s:o},s:{s:s}}",
                           "version", "1.0", "added_tokens", added, "normalizer",
                           "pre_tokenizer", "type", "Sequence", "pretokenizers",
                           "type", "Digits", "individual_digits", 1,
                           "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1,
                           "model", "type", "BPE", "unk_token", "fuse_unk", 0, "byte_fallback", 0, "vocab", vocab,
                           "merges", jm, "decoder", "type", "ByteLevel");
    json_t *cfg = json_pack("{s:s,s:{s:s},s:s,s:s}", "bos_token", "<|im_start|>", "eos_token", "content", "<|im_end|>",
                            "pad_token", "<|im_end|>", "chat_template", tmpl.s);
    char path[1024];
    int rc = 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!tj || json_dump_file(tj, path, JSON_COMPACT)) rc = -1;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!cfg || json_dump_file(cfg, path, JSON_COMPACT)) rc = -1;
    json_decref(tj);
    json_decref(cfg);
    return rc;
}

static void test_hf_errors(void) {
    static const struct { const char *json; int rc; } cases[] = {
        { "{}", CLLM_EFORMAT },
        { "[1]", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"Lowercase\"}}", CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true}}", CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Metaspace\"}}", CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0},\"merges\":[]}}", CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999999},\"merges\":[]}}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":\"x\"}]}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}", CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"]]},"
          "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"|\"},\"behavior\":\"Isolated\"}}", 0 },
    };
    mkdir("tests/tmp", 0777);
    mkdir("tests/tmp/hf-bad", 0777);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cllm_tokenizer *t = NULL;
        CHECK(write_text("tests/tmp/hf-bad/tokenizer.json", cases[i].json) == 0);
        int rc = cllm_tokenizer_from_hf_dir(&t, "tests/tmp/hf-bad");
        CHECK_MSG(rc == cases[i].rc, "hf case %zu: rc %d (%s)", i, rc, cllm_errmsg());
        if (rc == 0 && t) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK_OK(cllm_tokenizer_encode(t, "ab|ab", 5, 1, &ids, &n));
            CHECK(n == 2 && ids[0] == 2 && ids[1] == 2); /* '|' has no token: dropped */
            free(ids);
        }
        CHECK(rc == 0 || !t);
        cllm_tokenizer_free(t);
    }
    cllm_tokenizer *t = NULL;
    CHECK(cllm_tokenizer_from_hf_dir(&t, "tests/tmp/no-such-dir") == CLLM_EIO && !t);
    TEST_OK("tokenizer_hf_errors");
}

/* ---- gaps found by mutation testing (docs/RELIABILITY.md) ---------------- */

/* Encode text and compare with the expected ids. */
static void enc_is(const cllm_tokenizer *t, const char *s, size_t len, int ps, const int32_t *want, size_t nw,
                   const char *what) {
    int32_t *ids = NULL;
    size_t n = 0, pos = 0;
    CHECK_OK(cllm_tokenizer_encode(t, s, len, ps, &ids, &n));
    CHECK_MSG(ids && ids_eq(ids, n, want, nw, &pos), "%s: differs at %zu (%zu ids)", what, pos, n);
    free(ids);
}
#define ENC_IS(t, s, ps, what, ...) do { static const int32_t w_[] = { __VA_ARGS__ }; \
    enc_is(t, s, sizeof s - 1, ps, w_, sizeof w_ / sizeof w_[0], what); } while (0)

/* Decode one id and compare with the expected bytes. */
static void dec_is(const cllm_tokenizer *t, int32_t id, const char *want, size_t wn) {
    char *txt = NULL;
    size_t len = 0;
    CHECK_OK(cllm_tokenizer_decode(t, &id, 1, &txt, &len));
    CHECK_MSG(txt && len == wn && !memcmp(txt, want, wn), "decode of %d: %zu bytes, want %zu", id, len, wn);
    free(txt);
}

static void test_tiny_rules(void) {
    /* 0 a, 1 b, 2 c, 3 ab, 4 bc, 5 abc, 6 <unk> (UNKNOWN), 7 </s> and 12 <|im_end|> (NORMAL: not end tokens),
     * 8 "a" U+0144 and 10 "\xc4" "a" (outside the byte map: raw), 9 U+0143 (the map's last char, byte 0xad),
     * 11 a CONTROL token holding U+0120 (special: its text as is), 13 bc again (a later duplicate wins) */
    static const char *toks[] = { "a", "b", "c", "ab", "bc", "abc", "<unk>", "</s>", "a\xc5\x84", "\xc5\x83",
                                  "\xc4" "a", "\xc4\xa0<t>", "<|im_end|>", "bc" };
    static const int32_t types[] = { 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 3, 1, 1 };
    /* (a, b) is given twice: the later rank (2) wins, as HF's merge map, so (b, c) at rank 1 goes first */
    static const char *merges[] = { "a b", "b c", "a b" };
    cllm_tokenizer_spec sp = { .tokens = toks, .n_tokens = 14, .token_types = types, .merges = merges,
                               .n_merges = 3, .pre = "gpt2", .bos_id = 14, .eos_id = -5, .pad_id = 14 };
    cllm_tokenizer *t = NULL;
    CHECK_OK(cllm_tokenizer_new(&t, &sp));
    if (!t) return;
    CHECK_EQ_INT(cllm_tokenizer_find(t, "bc", 2), 13);
    ENC_IS(t, "abc", 1, "later duplicate merge and token", 0, 13);
    ENC_IS(t, "a<unk>b", 1, "UNKNOWN is special with parse_special", 0, 6, 1);
    /* without parse_special an UNKNOWN token is text, whose bytes have no token here */
    ENC_IS(t, "a<unk>b", 0, "UNKNOWN is text without parse_special", 0, 1);
    dec_is(t, 8, "a\xc5\x84", 3);
    dec_is(t, 9, "\xad", 1);
    dec_is(t, 10, "\xc4" "a", 2);
    dec_is(t, 11, "\xc4\xa0<t>", 5);
    char buf[8];
    size_t len = 0;
    CHECK_OK(cllm_tokenizer_token_bytes(t, 11, buf, 5, &len)); /* an exact fit */
    CHECK(len == 5 && !memcmp(buf, "\xc4\xa0<t>", 5));
    CHECK(cllm_tokenizer_token_bytes(t, -1, buf, sizeof buf, &len) == CLLM_EINVAL);
    CHECK(cllm_tokenizer_token_bytes(t, 14, buf, sizeof buf, &len) == CLLM_EINVAL);
    int32_t neg = -1;
    char *txt = NULL;
    CHECK(cllm_tokenizer_decode(t, &neg, 1, &txt, &len) == CLLM_EINVAL && !txt);
    CHECK(cllm_tokenizer_token_text(t, 14, &len) == NULL && cllm_tokenizer_token_text(t, -1, &len) == NULL);
    CHECK_EQ_INT(cllm_tokenizer_token_type(t, 6), CLLM_TOK_UNKNOWN);
    CHECK_EQ_INT(cllm_tokenizer_token_type(t, -1), -1);
    CHECK_EQ_INT(cllm_tokenizer_token_type(t, 14), -1);
    /* ids out of [0, n_vocab) in the spec are absent, never stored */
    CHECK(cllm_tokenizer_bos(t) == -1 && cllm_tokenizer_eos(t) == -1 && cllm_tokenizer_pad(t) == -1);
    /* end tokens are special ones only (docs/TOKENIZER.md) */
    CHECK(!cllm_tokenizer_is_eog(t, 7) && !cllm_tokenizer_is_eog(t, 12));
    /* ChatML needs both markers in the vocab */
    char *out = NULL;
    CHECK(cllm_chat_apply(t, "hi", &out) == CLLM_EUNSUP && !out);
    /* *ids is malloc'd also when *n is 0 (tokenizer.h), and no text is fine when len is 0 */
    int32_t *ids = NULL;
    size_t n = 1;
    CHECK_OK(cllm_tokenizer_encode(t, NULL, 0, 1, &ids, &n));
    CHECK(ids && n == 0);
    free(ids);
    ids = NULL;
    CHECK_OK(cllm_tokenizer_encode(t, "", 0, 1, &ids, &n));
    CHECK(ids && n == 0);
    free(ids);
    cllm_tokenizer_free(t);

    /* no merges at all: bytes stay single tokens */
    cllm_tokenizer_spec s0 = { .tokens = toks, .n_tokens = 3, .pre = "gpt2", .bos_id = -1, .eos_id = -1, .pad_id = -1 };
    CHECK_OK(cllm_tokenizer_new(&t, &s0));
    if (t) ENC_IS(t, "ab", 1, "no merges", 0, 1);
    cllm_tokenizer_free(t);

    /* llama3 sets ignore_merges (docs/TOKENIZER.md): "abc" is a token, emitted whole; gpt2 merges it */
    static const char *merges1[] = { "a b" };
    cllm_tokenizer_spec s1 = { .tokens = toks, .n_tokens = 6, .merges = merges1, .n_merges = 1, .pre = "llama3",
                               .bos_id = -1, .eos_id = -1, .pad_id = -1 };
    CHECK_OK(cllm_tokenizer_new(&t, &s1));
    if (t) ENC_IS(t, "abc", 1, "llama3 ignore_merges", 5);
    cllm_tokenizer_free(t);
    s1.pre = "gpt2";
    CHECK_OK(cllm_tokenizer_new(&t, &s1));
    if (t) ENC_IS(t, "abc", 1, "gpt2 merges", 3, 2);
    cllm_tokenizer_free(t);

    /* smollm: Digits(individual) first, so "12" is two pieces even though the merge "1 2" exists */
    static const char *dtoks[] = { "1", "2", "12" }, *dmerges[] = { "1 2" };
    cllm_tokenizer_spec s2 = { .tokens = dtoks, .n_tokens = 3, .merges = dmerges, .n_merges = 1, .pre = "smollm",
                               .bos_id = -1, .eos_id = -1, .pad_id = -1 };
    CHECK_OK(cllm_tokenizer_new(&t, &s2));
    if (t) ENC_IS(t, "12", 1, "smollm digits", 0, 1);
    cllm_tokenizer_free(t);
    s2.pre = "gpt2";
    CHECK_OK(cllm_tokenizer_new(&t, &s2));
    if (t) ENC_IS(t, "12", 1, "gpt2 digits", 2);
    cllm_tokenizer_free(t);
    s2.pre = "qwen2";   /* \p{N}: one digit a piece */
    CHECK_OK(cllm_tokenizer_new(&t, &s2));
    if (t) ENC_IS(t, "1212", 1, "qwen2 digits", 0, 1, 0, 1);
    cllm_tokenizer_free(t);
    s2.pre = "llama3";  /* \p{N}{1,3}: "121" then "2"; "121" is no token, so merges: 12 1 */
    CHECK_OK(cllm_tokenizer_new(&t, &s2));
    if (t) ENC_IS(t, "1212", 1, "llama3 digits", 2, 0, 1);
    cllm_tokenizer_free(t);

    /* bad specs */
    cllm_tokenizer_spec b = s1;
    b.n_tokens = 0;
    CHECK(cllm_tokenizer_new(&t, &b) == CLLM_EINVAL && !t);
    b = s1;
    b.merges = NULL;
    CHECK(cllm_tokenizer_new(&t, &b) == CLLM_EINVAL && !t);
    static const char *holey[] = { "a", NULL, "c" };
    b = s0;
    b.tokens = holey;
    CHECK(cllm_tokenizer_new(&t, &b) == CLLM_EFORMAT && !t);
    static const char *m_nospace[] = { "ab" }, *m_nores[] = { "c a" }, *m_noleft[] = { "z a" };
    const char *const *badm[] = { m_nospace, m_nores, m_noleft };
    for (int k = 0; k < 3; k++) {
        b = s1;
        b.merges = badm[k];
        CHECK_MSG(cllm_tokenizer_new(&t, &b) == CLLM_EFORMAT && !t, "bad merge %d accepted", k);
    }
    /* a missing left part is an error even when the concatenation is a token (10 is "\xc4" "a") */
    static const char *m_noleft2[] = { "\xc4 a" };
    b = sp;
    b.merges = m_noleft2;
    b.n_merges = 1;
    CHECK(cllm_tokenizer_new(&t, &b) == CLLM_EFORMAT && !t);
    /* the internal constructor: unk id range, step patterns, at most CLLM_PRE_MAX_STEPS steps */
    cllm_pretok_step st[CLLM_PRE_MAX_STEPS + 1];
    for (int k = 0; k < CLLM_PRE_MAX_STEPS + 1; k++) st[k] = (cllm_pretok_step){ CLLM_PRE_DIGITS, NULL, 1 };
    cllm_tok_opts o = { st, CLLM_PRE_MAX_STEPS, -1, 0 };
    CHECK_OK(cllm_tokenizer_new_ex(&t, &s1, &o));
    cllm_tokenizer_free(t);
    o.n_steps = CLLM_PRE_MAX_STEPS + 1;
    CHECK(cllm_tokenizer_new_ex(&t, &s1, &o) == CLLM_ELIMIT && !t);
    o.n_steps = 1;
    o.unk_id = 6;
    CHECK(cllm_tokenizer_new_ex(&t, &s1, &o) == CLLM_EFORMAT && !t);
    o.unk_id = 5;
    CHECK_OK(cllm_tokenizer_new_ex(&t, &s1, &o));
    cllm_tokenizer_free(t);
    o.unk_id = -1;
    st[0] = (cllm_pretok_step){ CLLM_PRE_REGEX, NULL, 0 };
    CHECK(cllm_tokenizer_new_ex(&t, &s1, &o) == CLLM_EINVAL && !t);
    TEST_OK("tokenizer_tiny_rules");
}

/* Two special tokens of the same text (a GGUF can hold them; HF cannot): the
 * later id wins in encoding as in cllm_tokenizer_find, the one rule of the
 * vocabulary map (a Python dict, llama.cpp's map). Before session 17 encoding
 * took the earlier id and find the later. Also a USER_DEFINED and a CONTROL
 * token of one text, so that the later one wins whichever type it has. */
static void test_duplicate_specials(void) {
    static const char *toks[] = { "a", "<x>", "b", "<x>", "<y>", "<y>" };
    static const int32_t types[] = { 1, 3, 1, 3, 4, 3 };   /* 3 CONTROL, 4 USER_DEFINED */
    cllm_tokenizer_spec sp = { .tokens = toks, .n_tokens = 6, .token_types = types, .pre = "gpt2",
                               .bos_id = -1, .eos_id = -1, .pad_id = -1 };
    cllm_tokenizer *t = NULL;
    CHECK_OK(cllm_tokenizer_new(&t, &sp));
    if (!t) return;
    CHECK_EQ_INT(cllm_tokenizer_find(t, "<x>", 3), 3);
    CHECK_EQ_INT(cllm_tokenizer_find(t, "<y>", 3), 5);
    ENC_IS(t, "a<x>b<x>", 1, "duplicate CONTROL text", 0, 3, 2, 3);
    ENC_IS(t, "<y>a", 1, "duplicate text, USER_DEFINED then CONTROL", 5, 0);
    cllm_tokenizer_free(t);
    TEST_OK("tokenizer_duplicate_specials");
}

/* Write tests/tmp/hf-mut/tokenizer.json (and tokenizer_config.json when cfg)
 * and load the directory. */
static int hf_load(const char *json, const char *cfg, cllm_tokenizer **t) {
    mkdir("tests/tmp", 0777);
    mkdir("tests/tmp/hf-mut", 0777);
    CHECK(write_text("tests/tmp/hf-mut/tokenizer.json", json) == 0);
    if (cfg) CHECK(write_text("tests/tmp/hf-mut/tokenizer_config.json", cfg) == 0);
    else remove("tests/tmp/hf-mut/tokenizer_config.json");
    return cllm_tokenizer_from_hf_dir(t, "tests/tmp/hf-mut");
}

#define HF_AB "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"
#define DIG "{\"type\":\"Digits\",\"individual_digits\":true}"
#define BL_NOREGEX "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}"

static void test_hf_rules(void) {
    static const struct { const char *json, *cfg; int rc; } cases[] = {
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"Removed\"}}", NULL, CLLM_EUNSUP },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"Isolated\",\"invert\":true}}", NULL, CLLM_EUNSUP },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Split\",\"behavior\":\"Isolated\"}}", NULL, CLLM_EFORMAT },
        { HF_AB ",\"pre_tokenizer\":{\"individual_digits\":true}}", NULL, CLLM_EFORMAT },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\"}}", NULL, CLLM_EFORMAT },
        /* pre-tokenizers nest up to depth 4 (the top one is depth 0) */
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":["
          "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":[" DIG "]}]}]}]}}", NULL, 0 },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":["
          "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\","
          "\"pretokenizers\":[" DIG "]}]}]}]}]}}", NULL, CLLM_EUNSUP },
        /* CLLM_PRE_MAX_STEPS (8) steps, then one more of either kind */
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[" DIG "," DIG "," DIG "," DIG "," DIG ","
          DIG "," DIG "," DIG "]}}", NULL, 0 },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[" DIG "," DIG "," DIG "," DIG "," DIG ","
          DIG "," DIG "," DIG "," DIG "]}}", NULL, CLLM_ELIMIT },
        { HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[" DIG "," DIG "," DIG "," DIG "," DIG ","
          DIG "," DIG "," DIG ",{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"Isolated\"}]}}",
          NULL, CLLM_ELIMIT },
        { HF_AB ",\"normalizer\":{\"type\":\"NFC\"}}", NULL, 0 },
        { HF_AB ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[]}}", NULL, 0 },
        { HF_AB ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}}", NULL, 0 },
        { HF_AB ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Lowercase\"}]}}",
          NULL, CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0},\"merges\":[]}}", NULL, CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}}", NULL, CLLM_EUNSUP },
        { "{\"model\":{\"type\":\"BPE\",\"dropout\":0.0,\"vocab\":{\"a\":0},\"merges\":[]}}", NULL, 0 },
        { HF_AB ",\"added_tokens\":{}}", NULL, CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":16777216},\"merges\":[]}}", NULL, CLLM_EFORMAT },
        /* ids without a token: at most as many as the tokens given plus 2^16 (one id near 2^24 in a
         * 50-byte file made 16M-entry tables, 540 MB: found by fuzz_hf_tokenizer) */
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":16777215},\"merges\":[]}}", NULL, CLLM_ELIMIT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":65539},\"merges\":[]}}", NULL, 0 },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":65540},\"merges\":[]}}", NULL, CLLM_ELIMIT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
          "\"added_tokens\":[{\"id\":65539,\"content\":\"<s>\"}]}", NULL, 0 },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", NULL, CLLM_EFORMAT },
        { HF_AB ",\"added_tokens\":[{\"id\":3}]}", NULL, CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"a\",\"vocab\":{\"a\":0},\"merges\":[]},"
          "\"added_tokens\":[{\"id\":1}]}", NULL, CLLM_EFORMAT },
        { HF_AB ",\"added_tokens\":[{\"id\":-1,\"content\":\"<s>\"}]}", NULL, CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", NULL, CLLM_EFORMAT },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\",\"c\"]]}}", NULL,
          CLLM_EFORMAT },
        /* added-token options that change where the token matches (HF: 'a  <L>  b' -> a, '  <L>', ' ', ' b'):
         * refused, not ignored; false ones are fine */
        { HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<L>\",\"lstrip\":true}]}", NULL, CLLM_EUNSUP },
        { HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<R>\",\"rstrip\":true}]}", NULL, CLLM_EUNSUP },
        { HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<W>\",\"single_word\":true}]}", NULL, CLLM_EUNSUP },
        { HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"lstrip\":false,\"rstrip\":false,"
          "\"single_word\":false,\"normalized\":false,\"special\":true}]}", NULL, 0 },
        { HF_AB "}", "{\"bos_token\":", CLLM_EFORMAT },
        { HF_AB "}", "[\"<s>\"]", CLLM_EFORMAT },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cllm_tokenizer *t = NULL;
        int rc = hf_load(cases[i].json, cases[i].cfg, &t);
        CHECK_MSG(rc == cases[i].rc, "hf rule case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc,
                  rc ? cllm_errmsg() : "");
        CHECK(rc == 0 || !t);
        cllm_tokenizer_free(t);
    }

    cllm_tokenizer *t = NULL;
    /* a String pattern is literal: "." does not match "a" or "b" */
    CHECK_OK(hf_load(HF_AB ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                     "\"pattern\":{\"String\":\".\"},\"behavior\":\"Isolated\"}," BL_NOREGEX "]}}", NULL, &t));
    if (t) ENC_IS(t, "ab", 1, "String split is literal", 2);
    cllm_tokenizer_free(t);
    t = NULL;
    /* unk_token: a byte without a symbol becomes it, one per byte (fuse_unk false), in a 1- and a 2-byte piece */
    CHECK_OK(hf_load("{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,"
                     "\"<unk>\":3},\"merges\":[\"a b\"]},\"pre_tokenizer\":{\"type\":\"ByteLevel\","
                     "\"add_prefix_space\":false,\"use_regex\":true}}", NULL, &t));
    if (t) {
        ENC_IS(t, "a\x01" "b", 1, "unk in a 1-byte piece", 0, 3, 1);
        ENC_IS(t, "\x01\x01" "ab", 1, "unk in a 2-byte piece", 3, 3, 2);
    }
    cllm_tokenizer_free(t);
    t = NULL;
    /* ignore_merges: a piece that is a token is emitted whole */
    const char *im = "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,"
                     "\"abc\":4},\"merges\":[\"a b\"]},\"pre_tokenizer\":{\"type\":\"ByteLevel\","
                     "\"add_prefix_space\":false,\"use_regex\":true}}";
    char js[1024], h1[17] = "", h2[17] = "";
    snprintf(js, sizeof js, im, "true");
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) { ENC_IS(t, "abc", 1, "ignore_merges true", 4); snprintf(h1, sizeof h1, "%s", cllm_tokenizer_hash(t)); }
    cllm_tokenizer_free(t);
    t = NULL;
    snprintf(js, sizeof js, im, "false");
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) { ENC_IS(t, "abc", 1, "ignore_merges false", 3, 2); snprintf(h2, sizeof h2, "%s", cllm_tokenizer_hash(t)); }
    cllm_tokenizer_free(t);
    t = NULL;
    CHECK_MSG(strcmp(h1, h2) != 0, "ignore_merges does not enter the hash");

    /* Digits: individual_digits true splits "12", false keeps it one piece; the default is false (HF) */
    const char *dg = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"1\":0,\"2\":1,\"12\":2},\"merges\":[\"1 2\"]},"
                     "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\"%s}," BL_NOREGEX "]}}";
    const char *dv[3] = { ",\"individual_digits\":true", ",\"individual_digits\":false", "" };
    char dh[3][17] = { "", "", "" };
    for (int k = 0; k < 3; k++) {
        snprintf(js, sizeof js, dg, dv[k]);
        CHECK_OK(hf_load(js, NULL, &t));
        if (!t) continue;
        if (k == 0) ENC_IS(t, "12", 1, "individual digits", 0, 1);
        else ENC_IS(t, "12", 1, "digit runs", 2);
        snprintf(dh[k], sizeof dh[k], "%s", cllm_tokenizer_hash(t));
        cllm_tokenizer_free(t);
        t = NULL;
    }
    CHECK(strcmp(dh[0], dh[1]) != 0 && !strcmp(dh[1], dh[2]));
    /* Digits knows the digits of Unicode 17 (HF: Rust's char::is_numeric):
     * U+11DE0 U+11DE1 split apart, so the merge of their bytes across the two
     * cannot apply (HF tokenizers 0.23.3: [7, 8]; as one piece it gave [9]) */
    const char *d17 = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xc3\xb0\":0,\"\xc4\xb3\":1,\"\xc2\xb7\":2,\"\xc5\x82\":3,"
                      "\"\xc2\xa1\":4,\"\xc3\xb0\xc4\xb3\":5,\"\xc3\xb0\xc4\xb3\xc2\xb7\":6,\"\xc3\xb0\xc4\xb3\xc2\xb7\xc5\x82\":7,"
                      "\"\xc3\xb0\xc4\xb3\xc2\xb7\xc2\xa1\":8,\"\xc3\xb0\xc4\xb3\xc2\xb7\xc5\x82\xc3\xb0\xc4\xb3\xc2\xb7\xc2\xa1\":9},"
                      "\"merges\":[\"\xc3\xb0 \xc4\xb3\",\"\xc3\xb0\xc4\xb3 \xc2\xb7\",\"\xc3\xb0\xc4\xb3\xc2\xb7 \xc5\x82\","
                      "\"\xc3\xb0\xc4\xb3\xc2\xb7 \xc2\xa1\",\"\xc3\xb0\xc4\xb3\xc2\xb7\xc5\x82 \xc3\xb0\xc4\xb3\xc2\xb7\xc2\xa1\"]},"
                      "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[" DIG "," BL_NOREGEX "]}}";
    CHECK_OK(hf_load(d17, NULL, &t));
    if (t) ENC_IS(t, "\xf0\x91\xb7\xa0\xf0\x91\xb7\xa1", 1, "Unicode 17 digits, individual", 7, 8);
    cllm_tokenizer_free(t);
    t = NULL;
    /* ByteLevel use_regex defaults to true (HF): the same tokenizer as with it set */
    const char *bl = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":"
                     "{\"type\":\"ByteLevel\",\"add_prefix_space\":false%s}}";
    snprintf(js, sizeof js, bl, ",\"use_regex\":true");
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) snprintf(h1, sizeof h1, "%s", cllm_tokenizer_hash(t));
    cllm_tokenizer_free(t);
    t = NULL;
    snprintf(js, sizeof js, bl, "");
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) CHECK_STR(cllm_tokenizer_hash(t), h1);
    cllm_tokenizer_free(t);
    t = NULL;

    /* \S inside a class stays a class member: [\S]+ splits "ab ab" at the space, so Ġ a cannot merge */
    const char *sp = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\xc4\xa0\":3,\"\xc4\xa0" "a\":4},"
                     "\"merges\":[\"\xc4\xa0 a\",\"a b\"]},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                     "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\\\S]+\"},\"behavior\":\"Isolated\"}," BL_NOREGEX "]}}";
    CHECK_OK(hf_load(sp, NULL, &t));
    if (t) ENC_IS(t, "ab ab", 1, "[\\S]+ split", 2, 3, 2);
    cllm_tokenizer_free(t);
    t = NULL;
    /* a ']' first in a class is a member, and the \s after it is still inside: "a] b" -> a, "] ", b */
    const char *br = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"]\":2,\"\xc4\xa0\":3,\"a]\":4,"
                     "\"]\xc4\xa0\":5},\"merges\":[\"a ]\",\"] \xc4\xa0\"]},\"pre_tokenizer\":{\"type\":\"Sequence\","
                     "\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[]\\\\s]+\"},\"behavior\":"
                     "\"Isolated\"}," BL_NOREGEX "]}}";
    CHECK_OK(hf_load(br, NULL, &t));
    if (t) ENC_IS(t, "a] b", 1, "[]\\s]+ split", 0, 5, 1);
    cllm_tokenizer_free(t);
    t = NULL;
    /* and after "[^": [^]\s]+ matches a and b, "] " is the gap between them */
    snprintf(js, sizeof js, "%s", br);
    char *cl = strstr(js, "[]");
    if (cl) memmove(cl + 2, cl + 1, strlen(cl + 1) + 1), cl[1] = '^';
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) ENC_IS(t, "a] b", 1, "[^]\\s]+ split", 0, 5, 1);
    cllm_tokenizer_free(t);
    t = NULL;
    /* a POSIX class inside a class does not end it: [[:punct:]\s]+ takes "] " whole (it did not: the ']' of
     * [:punct:] ended the class for the \s rewrite, so \s became a nested class and the pattern never matched) */
    snprintf(js, sizeof js, "%s", br);
    cl = strstr(js, "[]");
    if (cl) memmove(cl + 10, cl + 2, strlen(cl + 2) + 1), memcpy(cl + 1, "[:punct:]", 9); /* "[]" -> "[[:punct:]" */
    CHECK_OK(hf_load(js, NULL, &t));
    if (t) ENC_IS(t, "a] b", 1, "[[:punct:]\\s]+ split", 0, 5, 1);
    cllm_tokenizer_free(t);
    t = NULL;
    /* a pattern that also matches empty: empty pieces are dropped (tokenizer_int.h), "bab" -> b|a|b */
    CHECK_OK(hf_load("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ba\":2},\"merges\":[\"b a\"]},"
                     "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                     "{\"Regex\":\"a*\"},\"behavior\":\"Isolated\"}," BL_NOREGEX "]}}", NULL, &t));
    if (t) ENC_IS(t, "bab", 1, "a* split", 1, 0, 1);
    cllm_tokenizer_free(t);
    t = NULL;
    /* \w is Unicode (Oniguruma): "é!" splits after é, so © ! (rank 0) cannot merge across */
    const char *uw = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xc3\x83\":0,\"\xc2\xa9\":1,\"!\":2,\"\xc3\x83\xc2\xa9\":3,"
                     "\"\xc2\xa9!\":4},\"merges\":[\"\xc2\xa9 !\",\"\xc3\x83 \xc2\xa9\"]},\"pre_tokenizer\":{\"type\":"
                     "\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},"
                     "\"behavior\":\"Isolated\"}," BL_NOREGEX "]}}";
    CHECK_OK(hf_load(uw, NULL, &t));
    if (t) ENC_IS(t, "\xc3\xa9!", 1, "\\w+ split", 3, 2);
    cllm_tokenizer_free(t);
    t = NULL;

    /* tokenizer_config.json: a token named there that is only an added token; a chat_template list takes
     * the "default" entry wherever it is, else the first */
    const char *ad = HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<|im_start|>\",\"special\":true},"
                     "{\"id\":4,\"content\":\"<|im_end|>\",\"special\":true}]}";
    static const struct { const char *cfg, *sys; } ct[] = {
        { "{\"bos_token\":\"<|im_start|>\",\"chat_template\":[{\"name\":\"default\",\"template\":"
          "\"'<|im_start|>system\\\\nD<|im_end|>'\"},{\"name\":\"tool_use\",\"template\":"
          "\"'<|im_start|>system\\\\nT<|im_end|>'\"}]}", "D" },
        { "{\"bos_token\":\"<|im_start|>\",\"chat_template\":[{\"name\":\"tool_use\",\"template\":"
          "\"'<|im_start|>system\\\\nT<|im_end|>'\"},{\"name\":\"default\",\"template\":"
          "\"'<|im_start|>system\\\\nD<|im_end|>'\"}]}", "D" },
        { "{\"bos_token\":\"<|im_start|>\",\"chat_template\":[{\"name\":\"one\",\"template\":"
          "\"'<|im_start|>system\\\\nO<|im_end|>'\"},{\"name\":\"two\",\"template\":"
          "\"'<|im_start|>system\\\\nW<|im_end|>'\"}]}", "O" },
    };
    for (size_t k = 0; k < sizeof ct / sizeof ct[0]; k++) {
        CHECK_OK(hf_load(ad, ct[k].cfg, &t));
        if (!t) continue;
        int chatml = 0;
        const char *sys = NULL;
        CHECK_EQ_INT(cllm_tokenizer_bos(t), 3);
        CHECK_OK(cllm_tokenizer_chat_info(t, &chatml, &sys));
        CHECK_MSG(chatml && sys && !strcmp(sys, ct[k].sys), "chat_template list %zu: system %s", k, sys ? sys : "-");
        cllm_tokenizer_free(t);
        t = NULL;
    }

    /* BOS before every text (HF encode with add_special_tokens): a TemplateProcessing post-processor that
     * starts with a special token, alone or in a Sequence (Llama 3.1), unless tokenizer_config's
     * add_bos_token says otherwise; the prompt reader prepends it once. It was never added. */
    const char *pp = HF_AB ",\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":true}],"
                     "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
                     "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                     "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\","
                     "\"ids\":[3],\"tokens\":[\"<s>\"]}}}]}}";
    static const struct { const char *cfg; int add, bos; } bc[] = {
        { NULL, 1, 3 },                                        /* the post-processor's token, no config */
        { "{\"add_bos_token\":false,\"bos_token\":\"<s>\"}", 0, 3 },
        { "{\"add_bos_token\":true,\"bos_token\":\"a\"}", 1, 0 },  /* the config's own bos_token */
    };
    for (size_t k = 0; k < sizeof bc / sizeof bc[0]; k++) {
        CHECK_OK(hf_load(pp, bc[k].cfg, &t));
        if (!t) continue;
        CHECK_MSG(cllm_tokenizer_add_bos(t) == bc[k].add && cllm_tokenizer_bos(t) == bc[k].bos,
                  "bos case %zu: add_bos %d bos %d", k, cllm_tokenizer_add_bos(t), cllm_tokenizer_bos(t));
        if (k == 0) {
            got g[4];
            int last;
            cllm_prompt_opts po = { 0 };
            po.input = CLLM_IN_LINES;
            CHECK(write_text("tests/tmp/bos.txt", "ab\n<s>ab\n") == 0);
            int n = read_prompts("tests/tmp/bos.txt", &po, t, g, 4, &last);
            CHECK(last == CLLM_EOF && n == 2);
            if (n == 2) {
                CHECK_MSG(g[0].n_tok == 2 && g[0].tok0 == 3, "BOS prompt: %zu tokens, first %d", g[0].n_tok, g[0].tok0);
                CHECK_MSG(g[1].n_tok == 2 && g[1].tok0 == 3, "text with BOS: %zu tokens, first %d", g[1].n_tok, g[1].tok0);
            }
        }
        cllm_tokenizer_free(t);
        t = NULL;
    }
    /* a post-processor without a leading special token (SmolLM2's ByteLevel one) adds nothing */
    CHECK_OK(hf_load(HF_AB ",\"post_processor\":{\"type\":\"ByteLevel\"}}", NULL, &t));
    if (t) CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 0);
    cllm_tokenizer_free(t);
    t = NULL;
    TEST_OK("tokenizer_hf_rules");
}

/* A GGUF holding only tokenizer metadata: the base is model gpt2, no pre, no
 * chat template, tokens a b ab <s> (CONTROL), merge "a b", bos 3; a variant
 * changes one thing (the empty one has no token_type or bos either, so that
 * only the emptiness is wrong). */
enum { GV_BASE, GV_LLAMA, GV_PRE, GV_EMPTY, GV_SHORT_TYPES, GV_NO_TYPES, GV_BOS_N, GV_NO_BOS, GV_ADD_BOS,
       GV_ADD_BOS_NO_BOS, GV_N };

static int gguf_tok(int v, cllm_tokenizer **t) {
    const char *path = "tests/tmp/tok-mut.gguf";
    const char *toks[] = { "a", "b", "ab", "<s>" }, *merges[] = { "a b" };
    const int32_t types[] = { 1, 1, 1, 3 };
    cllm_gguf_writer *w = NULL;
    cllm_gguf *g = NULL;
    *t = NULL;
    mkdir("tests/tmp", 0777);
    CHECK_OK(cllm_gguf_writer_new(&w));
    if (!w) return -1;
    CHECK_OK(cllm_gguf_writer_set_str(w, "general.architecture", "llama", 5));
    CHECK_OK(cllm_gguf_writer_set_str(w, "tokenizer.ggml.model", v == GV_LLAMA ? "llama" : "gpt2",
                                      v == GV_LLAMA ? 5 : 4));
    if (v == GV_PRE) CHECK_OK(cllm_gguf_writer_set_str(w, "tokenizer.ggml.pre", "llama3", 6));
    CHECK_OK(cllm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, v == GV_EMPTY ? 0 : 4));
    if (v != GV_NO_TYPES && v != GV_EMPTY) CHECK_OK(cllm_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types,
                                                                v == GV_SHORT_TYPES ? 3 : 4));
    CHECK_OK(cllm_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1));
    if (v != GV_NO_BOS && v != GV_EMPTY && v != GV_ADD_BOS_NO_BOS)
        CHECK_OK(cllm_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", v == GV_BOS_N ? 4 : 3));
    if (v == GV_ADD_BOS || v == GV_ADD_BOS_NO_BOS) CHECK_OK(cllm_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1));
    if (v == GV_BASE) CHECK_OK(cllm_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 0));
    CHECK_OK(cllm_gguf_writer_write(w, path));
    cllm_gguf_writer_free(w);
    CHECK_OK(cllm_gguf_open(&g, path));
    if (!g) return -1;
    int rc = cllm_tokenizer_from_gguf(t, g);
    cllm_gguf_close(g);
    return rc;
}

static void test_gguf_rules(void) {
    static const int want[GV_N] = { 0, CLLM_EUNSUP, 0, CLLM_EFORMAT, CLLM_EFORMAT, 0, CLLM_EFORMAT, 0, 0, 0 };
    char base_hash[17] = "";
    for (int v = 0; v < GV_N; v++) {
        cllm_tokenizer *t = NULL;
        int rc = gguf_tok(v, &t);
        CHECK_MSG(rc == want[v], "gguf variant %d: rc %d, want %d (%s)", v, rc, want[v], rc ? cllm_errmsg() : "");
        if (!t) continue;
        switch (v) {
        case GV_BASE:   /* no pre: the GPT-2 regex, as "gpt2" names it */
            CHECK_EQ_INT(cllm_tokenizer_bos(t), 3);
            CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 0);   /* add_bos_token false */
            CHECK_EQ_INT(cllm_tokenizer_token_type(t, 3), CLLM_TOK_CONTROL);
            ENC_IS(t, "a<s>ab", 1, "gguf base", 0, 3, 2);
            snprintf(base_hash, sizeof base_hash, "%s", cllm_tokenizer_hash(t));
            break;
        case GV_PRE:    /* the pre name is read: llama3 hashes differently */
            CHECK(base_hash[0] && strcmp(cllm_tokenizer_hash(t), base_hash) != 0);
            break;
        case GV_NO_TYPES: /* all normal: <s> is text (whose bytes have no token) */
            CHECK_EQ_INT(cllm_tokenizer_token_type(t, 3), CLLM_TOK_NORMAL);
            ENC_IS(t, "a<s>ab", 1, "gguf without token_type", 0, 2);
            break;
        case GV_NO_BOS:
            CHECK_EQ_INT(cllm_tokenizer_bos(t), -1);
            CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 0);
            break;
        case GV_ADD_BOS:        /* llama.cpp's converter writes it for Llama 3; it was not read */
            CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 1);
            CHECK_STR(cllm_tokenizer_hash(t), base_hash);   /* it does not change how text splits */
            break;
        case GV_ADD_BOS_NO_BOS: /* nothing to add */
            CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 0);
            break;
        }
        CHECK(rc == 0 || !t);
        cllm_tokenizer_free(t);
    }
    /* the same spec built directly with pre "gpt2" hashes as the base */
    const char *toks[] = { "a", "b", "ab", "<s>" }, *merges[] = { "a b" };
    const int32_t types[] = { 1, 1, 1, 3 };
    cllm_tokenizer_spec sp = { .tokens = toks, .n_tokens = 4, .token_types = types, .merges = merges, .n_merges = 1,
                               .pre = "gpt2", .bos_id = 3, .eos_id = -1, .pad_id = -1 };
    cllm_tokenizer *t = NULL;
    CHECK_OK(cllm_tokenizer_new(&t, &sp));
    if (t) CHECK_STR(cllm_tokenizer_hash(t), base_hash);
    cllm_tokenizer_free(t);
    TEST_OK("tokenizer_gguf_rules");
}


/* The GGUF's vocab and merges under the qwen2 and llama3 pre-tokenizers, against
 * tests/golden/tokenizer_pre_ids.txt (HF Split(Regex) + ByteLevel(use_regex=False)). */
static void test_other_pre(const cllm_gguf *g, const str *strs, size_t ns) {
    const cllm_gguf_str *toks, *merges;
    const int32_t *types;
    size_t nt, nm, ny, ng = 0;
    if (cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &nt) ||
        cllm_gguf_get_arr_str(g, "tokenizer.ggml.merges", &merges, &nm) ||
        cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &ny)) {
        CHECK_MSG(0, "gguf tokenizer arrays: %s", cllm_errmsg());
        return;
    }
    const char **tp = malloc(nt * sizeof *tp), **mp = malloc(nm * sizeof *mp);
    size_t *tl = malloc(nt * sizeof *tl), *ml = malloc(nm * sizeof *ml);
    for (size_t i = 0; i < nt; i++) { tp[i] = toks[i].s; tl[i] = toks[i].len; }
    for (size_t i = 0; i < nm; i++) { mp[i] = merges[i].s; ml[i] = merges[i].len; }
    golden *gold = read_golden("tests/golden/tokenizer_pre_ids.txt", &ng);
    const char *pres[2] = { "qwen2", "llama3" }, tags[2] = { 'Q', 'L' };
    size_t checked = 0, bad = 0;
    for (int p = 0; p < 2; p++) {
        cllm_tokenizer_spec sp = { .tokens = tp, .token_lens = tl, .n_tokens = nt, .token_types = types, .merges = mp,
                                   .merge_lens = ml, .n_merges = nm, .pre = pres[p], .bos_id = -1, .eos_id = -1,
                                   .pad_id = -1 };
        cllm_tokenizer *t = NULL;
        CHECK_OK(cllm_tokenizer_new(&t, &sp));
        if (!t) continue;
        CHECK(strcmp(cllm_tokenizer_hash(t), SMOLLM2_HASH) != 0);
        for (size_t k = 0; k < ng; k++) {
            if (gold[k].tag[0] != tags[p]) continue;
            /* Qh<i> is hard string i, Qq<i> is GSM8K question i */
            char want[16];
            const str *src = NULL;
            for (size_t i = 0; i < ns && !src; i++) {
                snprintf(want, sizeof want, "%c%s", tags[p], strs[i].tag);
                if (!strcmp(want, gold[k].tag)) src = &strs[i];
            }
            if (!src) { CHECK_MSG(0, "no string for %s", gold[k].tag); continue; }
            int32_t *ids = NULL;
            size_t n = 0, pos;
            CHECK_OK(cllm_tokenizer_encode(t, src->s, src->n, 1, &ids, &n));
            if (!ids_eq(ids, n, gold[k].ids, gold[k].n, &pos) && !bad++)
                fprintf(stderr, "first %s mismatch: %s at token %zu: got %d, want %d\n  text: %.200s\n", pres[p],
                        gold[k].tag, pos, pos < n ? ids[pos] : -1, pos < gold[k].n ? gold[k].ids[pos] : -1, src->s);
            checked++;
            free(ids);
        }
        cllm_tokenizer_free(t);
    }
    CHECK_MSG(bad == 0, "%zu of %zu strings differ under qwen2/llama3 pre-tokenizers", bad, checked);
    CHECK_EQ_INT(checked, 2 * (53 + 200));
    for (size_t i = 0; i < ng; i++) free(gold[i].ids);
    free(gold); free(tp); free(tl); free(mp); free(ml);
    TEST_OK("tokenizer_qwen2_llama3_pre");
}


/* Random bytes, random specials and long runs: no crash, bytes survive, and a
 * 256 KiB piece stays fast (the merge heap keeps BPE at O(n log n)). */
static void test_stress(const cllm_tokenizer *t) {
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    static const char *frag[] = { "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", " ", "\n", "1", "é",
                                  "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "'s", "a", "\xc3", "\x80" };
    char buf[512];
    int bad = 0;
    for (int k = 0; k < 400; k++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t n = (size_t)(x >> 33) % 200, len = 0;
        while (len < n) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            if (k & 1) {
                buf[len++] = (char)(x >> 56);
            } else {
                const char *f = frag[(x >> 40) % (sizeof frag / sizeof frag[0])];
                size_t fl = strlen(f);
                if (len + fl > sizeof buf) break;
                memcpy(buf + len, f, fl);
                len += fl;
            }
        }
        char what[32];
        snprintf(what, sizeof what, "random string %d", k);
        bad += !roundtrip(t, buf, len, what);
    }
    CHECK_EQ_INT(bad, 0);
    size_t big = 1 << 18;
    char *s = malloc(big);
    const char *fills = " a!\n";
    for (int f = 0; f < 4; f++) {
        memset(s, fills[f], big);
        double t0 = cllm_now_s();
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cllm_tokenizer_encode(t, s, big, 1, &ids, &n));
        double dt = cllm_now_s() - t0;
        CHECK(n > 0 && n < big);
        printf("256 KiB of 0x%02x: %zu tokens in %.3f s\n", fills[f], n, dt);
        CHECK_MSG(dt < (getenv("CLLM_SAN") ? 20.0 : 3.0), "256 KiB of '%c' took %.2f s", fills[f], dt);
        free(ids);
        CHECK(roundtrip(t, s, big, "256 KiB run"));
    }
    free(s);
    TEST_OK("tokenizer_stress");
}

/* cllm_tokenizer_find of every proper prefix of every token (the hash probes
 * pass tokens that share a prefix with the key) against a binary search of the
 * sorted token texts: the exact token, the later one of duplicates, or -1. */
static const cllm_gguf_str *fp_toks;
static int fp_cmp(const void *a, const void *b) {
    const cllm_gguf_str *x = &fp_toks[*(const int32_t *)a], *y = &fp_toks[*(const int32_t *)b];
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : *(const int32_t *)a > *(const int32_t *)b;
}
static int32_t fp_find(const int32_t *ord, size_t nt, const char *s, size_t len) {
    size_t lo = 0, hi = nt;
    int32_t found = -1;
    while (lo < hi) { /* the last entry <= (s, len) */
        size_t mid = (lo + hi) / 2;
        const cllm_gguf_str *x = &fp_toks[ord[mid]];
        size_t n = x->len < len ? x->len : len;
        int c = memcmp(x->s, s, n);
        if (!c) c = x->len < len ? -1 : x->len > len;
        if (c <= 0) { if (!c) found = ord[mid]; lo = mid + 1; } else hi = mid;
    }
    return found;
}
static void check_find_prefixes(const cllm_tokenizer *t, const cllm_gguf *g) {
    size_t nt = 0, checked = 0, bad = 0;
    if (cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &fp_toks, &nt)) { CHECK_MSG(0, "%s", cllm_errmsg()); return; }
    int32_t *ord = malloc(nt * sizeof *ord);
    for (size_t i = 0; i < nt; i++) ord[i] = (int32_t)i;
    qsort(ord, nt, sizeof *ord, fp_cmp);
    for (size_t i = 0; i < nt; i++) {
        for (size_t l = 0; l <= fp_toks[i].len; l++) {
            int32_t want = fp_find(ord, nt, fp_toks[i].s, l), have = cllm_tokenizer_find(t, fp_toks[i].s, l);
            if (have != want && !bad++) fprintf(stderr, "find of %zu bytes of token %zu: %d, want %d\n", l, i, have, want);
            checked++;
        }
    }
    CHECK_MSG(bad == 0, "%zu of %zu lookups differ", bad, checked);
    free(ord);
}

static void test_real(void) {
    cllm_gguf *g = NULL;
    cllm_tokenizer *t = NULL, *t2 = NULL;
    FILE *mf = fopen(test_model_path(), "rb");
    if (!mf) {
        printf("skip tokenizer_golden: no model at %s (make setup)\n", test_model_path());
        return;
    }
    fclose(mf);
    CHECK_OK(cllm_gguf_open(&g, test_model_path()));
    if (!g) return;
    CHECK_OK(cllm_tokenizer_from_gguf(&t, g));
    CHECK_OK(cllm_tokenizer_from_gguf(&t2, g));
    if (!t || !t2) goto out;
    CHECK_EQ_INT(cllm_tokenizer_vocab(t), 49152);
    CHECK_EQ_INT(cllm_tokenizer_bos(t), 1);
    CHECK_EQ_INT(cllm_tokenizer_eos(t), 2);
    CHECK_EQ_INT(cllm_tokenizer_pad(t), 2);
    CHECK_EQ_INT(cllm_tokenizer_add_bos(t), 0);   /* add_bos_token false: bos 1 is <|im_start|>, not prepended */
    CHECK(cllm_tokenizer_is_eog(t, 2) && cllm_tokenizer_is_eog(t, 0) && !cllm_tokenizer_is_eog(t, 1));
    CHECK_STR(cllm_tokenizer_hash(t), cllm_tokenizer_hash(t2));
    CHECK_STR(cllm_tokenizer_hash(t), SMOLLM2_HASH);
    check_find_prefixes(t, g);
    TEST_OK("tokenizer_gguf_load_hash");

    size_t ng = 0, ns = 0;
    golden *gold = read_golden("tests/golden/tokenizer_ids.txt", &ng);
    str *strs = read_strings(&ns);
    CHECK_MSG(ns == 2 * 1319 + 53, "read %zu strings", ns);
    CHECK_MSG(ng == ns + 1, "read %zu golden lines for %zu strings", ng, ns);
    size_t mism = 0, ntok = 0, nbytes = 0, rt_bad = 0;
    double t0 = cllm_now_s();
    for (size_t i = 0; i < ns && i < ng; i++) {
        int32_t *ids = NULL;
        size_t n = 0, pos;
        CHECK_OK(cllm_tokenizer_encode(t, strs[i].s, strs[i].n, 1, &ids, &n));
        ntok += n;
        nbytes += strs[i].n;
        if (strcmp(gold[i].tag, strs[i].tag)) {
            CHECK_MSG(0, "golden line %zu is %s, string is %s", i, gold[i].tag, strs[i].tag);
        } else if (!ids_eq(ids, n, gold[i].ids, gold[i].n, &pos)) {
            if (!mism++) {
                fprintf(stderr, "first mismatch: %s at token %zu: got %d, want %d (%zu vs %zu tokens)\n  text: %.200s\n",
                        strs[i].tag, pos, pos < n ? ids[pos] : -1, pos < gold[i].n ? gold[i].ids[pos] : -1, n,
                        gold[i].n, strs[i].s);
            }
        }
        free(ids);
    }
    double dt = cllm_now_s() - t0;
    CHECK_MSG(mism == 0, "%zu of %zu strings differ from the golden", mism, ns);
    printf("encoded %zu strings (%zu bytes, %zu tokens) in %.3f s\n", ns, nbytes, ntok, dt);
    TEST_OK("tokenizer_golden_equal");

    /* the same tokenizer from a HF directory: same hash, same ids */
    cllm_tokenizer *th = NULL;
    mkdir("tests/tmp", 0777);
    mkdir("tests/tmp/hf-smollm2", 0777);
    CHECK(write_hf_dir(g, "tests/tmp/hf-smollm2") == 0);
    CHECK_OK(cllm_tokenizer_from_hf_dir(&th, "tests/tmp/hf-smollm2"));
    if (th) {
        CHECK_STR(cllm_tokenizer_hash(th), SMOLLM2_HASH);
        CHECK_EQ_INT(cllm_tokenizer_bos(th), 1);
        CHECK_EQ_INT(cllm_tokenizer_eos(th), 2);
        CHECK_EQ_INT(cllm_tokenizer_pad(th), 2);
        size_t hm = 0;
        for (size_t i = 0; i < ns && i < ng; i++) {
            int32_t *ids = NULL;
            size_t n = 0, pos;
            CHECK_OK(cllm_tokenizer_encode(th, strs[i].s, strs[i].n, 1, &ids, &n));
            hm += !ids_eq(ids, n, gold[i].ids, gold[i].n, &pos);
            free(ids);
        }
        CHECK_MSG(hm == 0, "HF-directory tokenizer: %zu strings differ", hm);
        char *c1 = NULL, *c2 = NULL;
        CHECK_OK(cllm_chat_apply(th, "hello", &c1));
        CHECK_OK(cllm_chat_apply(t, "hello", &c2));
        CHECK_STR(c1, c2);
        free(c1);
        free(c2);
    }
    cllm_tokenizer_free(th);
    TEST_OK("tokenizer_hf_dir");

    /* GSM8K alone, timed */
    t0 = cllm_now_s();
    for (size_t i = 0; i < ns && i < 2 * 1319; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cllm_tokenizer_encode(t, strs[i].s, strs[i].n, 1, &ids, &n));
        free(ids);
    }
    dt = cllm_now_s() - t0;
    printf("GSM8K test (2638 strings) encoded in %.3f s\n", dt);
    const char *san = getenv("CLLM_SAN");
    if (!(san && *san && strcmp(san, "0"))) CHECK_MSG(dt < 1.0, "GSM8K took %.3f s", dt);
    TEST_OK("tokenizer_gsm8k_speed");

    for (size_t i = 0; i < ns; i++) rt_bad += !roundtrip(t, strs[i].s, strs[i].n, strs[i].tag);
    CHECK_EQ_INT(rt_bad, 0);
    /* invalid UTF-8: defined, no crash, bytes survive */
    static const char *inval[] = { "\xe2\x82", "a\xc3\x28z", "\xed\xa0\x80 surrogate", "\xf4\x90\x80\x80",
                                   "\x80\x80\x80", "12\xe2\x82" "34 x\xff\xfey", "\xc0\xaf", "<|im_\xe2\x82start|>" };
    for (size_t i = 0; i < sizeof inval / sizeof inval[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "invalid utf-8 #%zu", i);
        CHECK(roundtrip(t, inval[i], strlen(inval[i]), what));
    }
    TEST_OK("tokenizer_roundtrip");

    /* chat template */
    char *chat = NULL;
    CHECK_OK(cllm_chat_apply(t, "hello", &chat));
    CHECK_STR(chat, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
    if (chat && ng == ns + 1) {
        int32_t *ids = NULL;
        size_t n = 0, pos;
        CHECK_OK(cllm_tokenizer_encode(t, chat, strlen(chat), 1, &ids, &n));
        CHECK_STR(gold[ns].tag, "chat");
        CHECK_MSG(ids_eq(ids, n, gold[ns].ids, gold[ns].n, &pos), "chat ids differ at %zu", pos);
        free(ids);
        /* without parse_special the markers are text */
        CHECK_OK(cllm_tokenizer_encode(t, chat, strlen(chat), 0, &ids, &n));
        CHECK(n > 0 && ids[0] != 1);
        free(ids);
    }
    free(chat);
    const char *fld[] = { "question" }, *val[] = { "hello" };
    CHECK_OK(cllm_template_apply(t, "chat", fld, val, 1, &chat));
    CHECK(chat && strstr(chat, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"));
    free(chat);
    CHECK_OK(cllm_template_apply(t, "chatml", fld, val, 1, &chat)); /* an alias of chat */
    CHECK(chat && strstr(chat, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"));
    free(chat);
    TEST_OK("tokenizer_chat_template");

    test_prompts(t);
    test_other_pre(g, strs, ns);
    test_stress(t);

    for (size_t i = 0; i < ng; i++) free(gold[i].ids);
    for (size_t i = 0; i < ns; i++) free(strs[i].s);
    free(gold);
    free(strs);
out:
    cllm_tokenizer_free(t);
    cllm_tokenizer_free(t2);
    cllm_gguf_close(g);
}

int main(void) {
    test_tiny();
    test_templates();
    test_hf_errors();
    test_tiny_rules();
    test_duplicate_specials();
    test_hf_rules();
    test_gguf_rules();
    test_real();
    TEST_END();
}
