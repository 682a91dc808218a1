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

/*
 * fuzz_ecm, fuzz_emm, fuzz_cas (pay-TV): the keys the harnesses open and seal with, and the card
 * fuzz_cas personalises (public test values). The service key has id FZ_CAS_KEY_ID, version
 * FZ_CAS_KEY_VERSION; fuzz_cas installs it, the group and broadcast keys, a right to
 * FZ_CAS_PRODUCT and FZ_CAS_CREDIT of credit in setup, with unique EMM seq 1.
 */
#define FZ_CAS_UA 0x00001234u
#define FZ_CAS_GROUP 0x00000077u
#define FZ_CAS_KEY_ID 1
#define FZ_CAS_KEY_VERSION 1u
#define FZ_CAS_PRODUCT 100u
#define FZ_CAS_CREDIT 1000u
#define FZ_CAS_NOW 1800000000u
static const uint8_t fz_cas_skey[32] __attribute__((unused)) = "keyhole fuzz service key v1....";
static const uint8_t fz_cas_kp[32] __attribute__((unused)) = "keyhole fuzz card Kp v1........";
static const uint8_t fz_cas_ku[32] __attribute__((unused)) = "keyhole fuzz card Ku v1........";
static const uint8_t fz_cas_gkey[32] __attribute__((unused)) = "keyhole fuzz group key v1......";
static const uint8_t fz_cas_akey[32] __attribute__((unused)) = "keyhole fuzz all key v1........";

/*
 * fuzz_usage: the card's Ed25519 signing seed (a public test value); the harness derives the
 * public key with kh_ed25519_public. Blocks are sealed under fz_cas_ku.
 */
static const uint8_t fz_usage_sign_sk[32] __attribute__((unused)) = "keyhole fuzz card sign key v1..";

#endif
