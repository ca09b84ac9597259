/* check.h: the assertions of the C unit tests.
 *
 * A test program exits 1 when any CHECK failed, printing file:line and what was
 * expected; it prints one "ok" line per passed group so a log shows what ran.
 * Tests run from the repository root; CLLM_MODEL and CLLM_DATA name the default
 * model and the data folder (tests/run.sh sets both).
 */
#ifndef CLLM_TEST_CHECK_H
#define CLLM_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    check_failures++; } } while (0)

#define CHECK_MSG(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); check_failures++; } } while (0)

/* A call into libcllm that must succeed (0). */
#define CHECK_OK(expr) do { int rc_ = (expr); if (rc_ != 0) { \
    fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, rc_, cllm_errmsg()); \
    check_failures++; } } while (0)

#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, a_, b_); \
    check_failures++; } } while (0)

#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); if (!a_ || !b_ || strcmp(a_, b_)) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" vs \"%s\")\n", __FILE__, __LINE__, #a, #b, \
            a_ ? a_ : "(null)", b_ ? b_ : "(null)"); check_failures++; } } while (0)

#define TEST_OK(name) do { if (!check_failures) printf("ok %s\n", name); } while (0)

#define TEST_END() return check_failures ? (fprintf(stderr, "%d check(s) failed\n", check_failures), 1) : 0

static inline const char *test_model_path(void) {
    const char *p = getenv("CLLM_MODEL");
    return p && *p ? p : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

static inline const char *test_data_dir(void) {
    const char *p = getenv("CLLM_DATA");
    return p && *p ? p : "../shared/data";
}

#endif
