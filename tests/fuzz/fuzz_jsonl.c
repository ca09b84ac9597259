/* fuzz_jsonl.c: bytes as a JSONL file -> cllm_jsonl_next -> cllm_json_to_record
 * (with each text-field choice) -> cllm_mp_scan/build -> JSON rendering.
 *
 * Properties: every record the converter packs scans as one complete msgpack
 * map (or is refused by the scanner's depth limit, never read out of bounds),
 * carries a string "type", and renders back as JSON that jansson parses.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "fuzz.h"
#include "json.h"
#include "records.h"

static void check_packed(const cllm_packbuf *b) {
    size_t used, nv;
    int rc = cllm_mp_scan((const uint8_t *)b->data, b->size, &used, &nv);
    if (rc == CLLM_ELIMIT) return;  /* nested deeper than the stream reader accepts */
    if (rc != CLLM_MP_COMPLETE || used != b->size)
        fuzz_fail("packed record does not scan (rc %d, %zu of %zu bytes)", rc, rc == 0 ? used : 0, b->size);
    cllm_value *nodes = malloc(nv * sizeof *nodes);
    if (!nodes) return;
    cllm_mp_build((const uint8_t *)b->data, nodes);
    if (nodes[0].type != CLLM_MP_MAP) fuzz_fail("packed record is not a map");
    const cllm_value *t = cllm_mp_get(&nodes[0], "type");
    if (!t || t->type != CLLM_MP_STR || t->n == 0) fuzz_fail("packed record lacks a string type");
    cllm_strbuf js = {0};
    cllm_value_to_json(&js, &nodes[0]);
    if (!js.error && js.s) {
        json_error_t err;
        json_t *v = json_loadb(js.s, js.len, JSON_ALLOW_NUL, &err);
        if (!v) fuzz_fail("record renders as invalid JSON (%s): %.200s", err.text, js.s);
        json_decref(v);
    }
    cllm_strbuf_free(&js);
    free(nodes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;  /* fmemopen refuses size 0 on old glibc */
    cllm_jsonl *j;
    if (cllm_jsonl_open_file(&j, f, "fuzz.jsonl", 1)) { fclose(f); return 0; }
    static const char *const fields[] = { NULL, "question", "x" };
    cllm_packbuf b = {0};
    json_t *obj;
    uint64_t line, last = 0;
    int rc;
    /* Unlike cllm-cat, go on after a bad line: more lines get exercised. */
    while ((rc = cllm_jsonl_next(j, &obj, &line)) != CLLM_EOF) {
        if (rc == CLLM_EFORMAT) continue;
        if (rc) break;
        if (line <= last) fuzz_fail("line numbers not increasing");
        last = line;
        if (!json_is_object(obj)) fuzz_fail("cllm_jsonl_next returned a non-object");
        for (size_t k = 0; k < sizeof fields / sizeof *fields; k++)
            if (cllm_json_to_record(&b, obj, (int64_t)line - 1, fields[k]) == 0) check_packed(&b);
        json_decref(obj);
    }
    cllm_packbuf_free(&b);
    cllm_jsonl_close(j);
    return 0;
}
