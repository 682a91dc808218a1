/*
 * What every harness shares: the libFuzzer entry points, the invariant check (prints the failed
 * condition, then traps so libFuzzer keeps the input), and the constants the seed corpus was
 * generated with (fuzz/gen_corpus.c uses the same), so the seeds stay valid inputs.
 */
#ifndef KH_FUZZ_COMMON_H
#define KH_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s: invariant failed: %s (line %d)\n", __FILE__, #c, __LINE__); \
			__builtin_trap();                                                          \
		}                                                                                  \
	} while (0)

/* every harness's kh_rng_det seed */
static const char fz_seed[] __attribute__((unused)) = "keyhole fuzz rng v1";
/* fuzz_pair_*, fuzz_sealed: ikm of the responder's X25519 key (a public test key) */
static const char fz_resp_ikm[] __attribute__((unused)) = "keyhole fuzz responder ikm v1, public test key";
/* the initiator's identity in PAIR OPEN */
static const uint8_t fz_pair_id[] __attribute__((unused)) = {'f', 'u', 'z', 'z', '-', 'c', 'a', 'm'};

#endif
