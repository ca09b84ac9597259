/* rng.h: the seeded random numbers of libcllm (xoshiro256** seeded through
 * splitmix64). The same seed gives the same stream on every machine. */
#ifndef CLLM_RNG_H
#define CLLM_RNG_H

#include <stdint.h>

typedef struct cllm_rng { uint64_t s[4]; } cllm_rng;

void cllm_rng_seed(cllm_rng *r, uint64_t seed);
uint64_t cllm_rng_next(cllm_rng *r);
/* Uniform integer in [0, n), n >= 1 (unbiased, by rejection). */
uint64_t cllm_rng_below(cllm_rng *r, uint64_t n);
/* Uniform float in [0, 1) with 24 random bits. */
float cllm_rng_float(cllm_rng *r);

#endif
