/*
 * Shamir secret sharing of a licence key over GF(P), P = 2^256 - 189 (seed 003, Fig. 5: the
 * split-key variant of the escrow). A seller splits K into N shares of which any T recover it:
 * one share is sealed to the buyer device's own certified X25519 key (HPKE), the others each go
 * to a different escrow under that escrow's listing key, so no escrow alone, nor the buyer
 * without the device, learns K. docs/internals/shamir.md has the field, the record and the
 * constant-time notes.
 *
 * Numbers are 32-byte big-endian integers. x is public (it travels with the share and says
 * nothing of K); y and the secret are secret. Nothing here allocates except OpenSSL's BIGNUM
 * code inside src/base/shamir.c, so the module zone may call every function.
 *
 * The share record (KH_SHAMIR_REC_LEN bytes, fixed):
 *   "KHSH" | u8 version=1 | u8 T | u8 N | u8 index | x(32) | y(32) | id(16)
 * id names what the share was made for: an escrow's listing, or the buyer's device.
 *
 * The device's sealed share (KH_SHAMIR_SEALED_LEN bytes, fixed):
 *   enc(32) | HPKE-AES-128-GCM(pk, info, aad = "keyhole shamir share v1" | pk, record) (104)
 */
#ifndef KEYHOLE_SHAMIR_H
#define KEYHOLE_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_SHAMIR_LEN 32     /* a field element: secret, x or y */
#define KH_SHAMIR_MIN_T 2
#define KH_SHAMIR_MAX_N 16   /* most shares in a split, and so the highest threshold */
#define KH_SHAMIR_ID_LEN 16
#define KH_SHAMIR_VERSION 1
#define KH_SHAMIR_REC_LEN (4 + 4 + 2 * KH_SHAMIR_LEN + KH_SHAMIR_ID_LEN)   /* 88 */
#define KH_SHAMIR_SEALED_LEN (32 + KH_SHAMIR_REC_LEN + 16)                 /* 136 */
#define KH_SHAMIR_AAD_LABEL "keyhole shamir share v1"

/* The field's modulus, big-endian. */
extern const uint8_t kh_shamir_p[KH_SHAMIR_LEN];

struct kh_shamir_share {
	uint8_t x[KH_SHAMIR_LEN]; /* 1 .. P-1 */
	uint8_t y[KH_SHAMIR_LEN]; /* 0 .. P-1: f(x) */
};

struct kh_shamir_rec {
	uint8_t t;     /* threshold, 2..16 */
	uint8_t n;     /* shares in the split, t..16 */
	uint8_t index; /* which of them, 1..n */
	struct kh_shamir_share s;
	uint8_t id[KH_SHAMIR_ID_LEN]; /* the listing or the device the share was made for */
};

/*
 * Split secret (< P, KH_ERR_INVAL otherwise) into n shares, any t of which recover it:
 * 2 <= t <= n <= 16 (KH_ERR_INVAL otherwise). f(X) = secret + a_1 X + ... + a_{t-1} X^{t-1} with
 * each a_j uniform in [0, P); x_i uniform in [1, P) and distinct; y_i = f(x_i). Randomness comes
 * from kh_random in this order: a_1 .. a_{t-1}, then x_1 .. x_n, 32 bytes per draw, a draw of
 * P or more (or a zero or repeated x) drawn again; KH_ERR_CRYPTO if 8 draws in a row are
 * refused. shares (n entries) is written only on success; every coefficient is wiped.
 */
KH_WARN_UNUSED kh_err kh_shamir_split(const uint8_t secret[static KH_SHAMIR_LEN], unsigned t, unsigned n,
				      struct kh_shamir_share *shares);
/*
 * Recover the secret from k shares of a split of threshold t (2..16, KH_ERR_INVAL otherwise):
 * Lagrange interpolation at 0 of the first t shares. KH_ERR_SHARES when k < t or k > 16, for an
 * x that is 0 or >= P, a y >= P, two shares with the same x, or (k > t) a share beyond the t-th
 * that does not lie on the polynomial of the first t. secret is written only on success.
 */
KH_WARN_UNUSED kh_err kh_shamir_combine(const struct kh_shamir_share *shares, size_t k, unsigned t,
					uint8_t secret[static KH_SHAMIR_LEN]);
/* A secret uniform in [0, P) (the licence key K), from kh_random as for a coefficient. */
KH_WARN_UNUSED kh_err kh_shamir_random_secret(uint8_t out[static KH_SHAMIR_LEN]);

/* The record of rec into out; KH_ERR_INVAL for a field the parser would refuse. */
KH_WARN_UNUSED kh_err kh_shamir_rec_encode(const struct kh_shamir_rec *rec, uint8_t out[static KH_SHAMIR_REC_LEN]);
/*
 * Parse a record of exactly len bytes: KH_ERR_TRUNCATED when it ends early, KH_ERR_FORMAT for
 * another magic, KH_ERR_VERSION for another version, KH_ERR_TRAILING for bytes after it, then
 * KH_ERR_FORMAT for T, N or index out of range, x = 0, x >= P or y >= P. *rec only on success.
 */
KH_WARN_UNUSED kh_err kh_shamir_rec_parse(const uint8_t *b, size_t len, struct kh_shamir_rec *rec);

/*
 * Seal rec to the X25519 public key pk (HPKE base mode, AES-128-GCM): info (at most 256 bytes,
 * e.g. listing id and purchase id) must be given again to open it. KH_ERR_INVAL for a record
 * kh_shamir_rec_encode refuses.
 */
KH_WARN_UNUSED kh_err kh_shamir_share_seal(const uint8_t pk[static 32], const uint8_t *info, size_t infolen,
					   const struct kh_shamir_rec *rec,
					   uint8_t out[static KH_SHAMIR_SEALED_LEN]);
/*
 * Open a sealed share with the key pair (sk, pk) it was sealed to: KH_ERR_TRUNCATED or
 * KH_ERR_TRAILING when len is not KH_SHAMIR_SEALED_LEN, KH_ERR_AUTH for another key, another
 * info, a pk that is not sk's or any changed byte, then kh_shamir_rec_parse's errors. No
 * allocation; *rec only on success, the plaintext wiped on every path.
 */
KH_WARN_UNUSED kh_err kh_shamir_share_open(const uint8_t sk[static 32], const uint8_t pk[static 32],
					   const uint8_t *info, size_t infolen, const uint8_t *blob, size_t len,
					   struct kh_shamir_rec *rec);

#endif
