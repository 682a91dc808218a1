/*
 * Crypto facade: the only place Keyhole touches OpenSSL's primitives. Fixed
 * sizes are in the signatures. Every function writes its outputs only on success and wipes its
 * own temporaries on every path. Algorithms are fetched once per process and contexts reused
 * per thread, because a fresh fetch costs several times the operation.
 *
 * Randomness comes from OpenSSL's RAND_bytes unless a test installs a deterministic source
 * with kh_rng_set(); production code never does.
 */
#ifndef KEYHOLE_CRYPTO_H
#define KEYHOLE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_KEY_LEN 32       /* AES-256 and HKDF output keys */
#define KH_NONCE_LEN 12     /* AES-GCM nonce */
#define KH_TAG_LEN 16       /* AES-GCM tag */
#define KH_X25519_LEN 32    /* X25519 public and private keys, shared secret */
#define KH_ED25519_PK_LEN 32
#define KH_ED25519_SK_LEN 32 /* the 32-byte seed (RFC 8032 private key) */
#define KH_ED25519_SIG_LEN 64
#define KH_SHA256_LEN 32

/* ---- memory ---- */
/* Overwrite n bytes with zeros in a way the compiler may not elide (OPENSSL_cleanse). */
void kh_wipe(void *p, size_t n);
/* 1 when the n bytes are equal, 0 otherwise; time depends only on n (CRYPTO_memcmp). */
int kh_ct_eq(const void *a, const void *b, size_t n);

/* ---- random ---- */
typedef kh_err (*kh_rng_fn)(void *ctx, uint8_t *out, size_t n);
/* Install a source for tests (NULL restores OpenSSL's RAND_bytes). Not thread-safe. */
void kh_rng_set(kh_rng_fn fn, void *ctx);
KH_WARN_UNUSED kh_err kh_random(uint8_t *out, size_t n);

/* Deterministic source for tests: AES-256-CTR keystream from a seed. */
struct kh_rng_det {
	uint8_t key[32];
	uint64_t block;
};
void kh_rng_det_init(struct kh_rng_det *d, const uint8_t *seed, size_t seedlen);
kh_err kh_rng_det_fn(void *ctx, uint8_t *out, size_t n); /* ctx is a struct kh_rng_det */

/* ---- hashing and key derivation ---- */
KH_WARN_UNUSED kh_err kh_sha256(const uint8_t *in, size_t n, uint8_t out[static KH_SHA256_LEN]);
/* HKDF-SHA256 extract-and-expand (RFC 5869); salt may be NULL/0. outlen <= 255*32. */
KH_WARN_UNUSED kh_err kh_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
			      const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen);
/* The two halves, for HPKE's labeled construction. */
KH_WARN_UNUSED kh_err kh_hkdf_extract(const uint8_t *salt, size_t saltlen, const uint8_t *ikm,
				      size_t ikmlen, uint8_t prk[static 32]);
KH_WARN_UNUSED kh_err kh_hkdf_expand(const uint8_t prk[static 32], const uint8_t *info,
				     size_t infolen, uint8_t *out, size_t outlen);

/* ---- AEAD ---- */
enum kh_aead_alg {
	KH_AEAD_AES128_GCM = 1, /* key 16 bytes */
	KH_AEAD_AES256_GCM = 2, /* key 32 bytes */
	KH_AEAD_CHACHA20_POLY1305 = 3, /* key 32 bytes */
};
size_t kh_aead_keylen(enum kh_aead_alg alg);
/*
 * Seal ptlen bytes; ct receives ptlen + KH_TAG_LEN bytes (ciphertext then tag). pt and ct may
 * be the same buffer.
 */
KH_WARN_UNUSED kh_err kh_aead_seal_alg(enum kh_aead_alg alg, const uint8_t *key,
				       const uint8_t nonce[static KH_NONCE_LEN], const uint8_t *aad,
				       size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct);
/*
 * Open ctlen bytes (ciphertext then tag, ctlen >= KH_TAG_LEN); pt receives ctlen - KH_TAG_LEN
 * bytes, and is wiped when the tag does not verify (KH_ERR_AUTH). ct and pt may be the same.
 */
KH_WARN_UNUSED kh_err kh_aead_open_alg(enum kh_aead_alg alg, const uint8_t *key,
				       const uint8_t nonce[static KH_NONCE_LEN], const uint8_t *aad,
				       size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *pt);
/* AES-256-GCM, the default AEAD of the protocol design. */
KH_WARN_UNUSED kh_err kh_aead_seal(const uint8_t key[static KH_KEY_LEN],
				   const uint8_t nonce[static KH_NONCE_LEN], const uint8_t *aad,
				   size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct);
KH_WARN_UNUSED kh_err kh_aead_open(const uint8_t key[static KH_KEY_LEN],
				   const uint8_t nonce[static KH_NONCE_LEN], const uint8_t *aad,
				   size_t aadlen, const uint8_t *ct, size_t ctlen, uint8_t *pt);

/* ---- X25519 ---- */
KH_WARN_UNUSED kh_err kh_x25519_keygen(uint8_t sk[static KH_X25519_LEN], uint8_t pk[static KH_X25519_LEN]);
KH_WARN_UNUSED kh_err kh_x25519_public(const uint8_t sk[static KH_X25519_LEN], uint8_t pk[static KH_X25519_LEN]);
/* Shared secret; KH_ERR_CRYPTO for a low-order peer key (all-zero result). */
KH_WARN_UNUSED kh_err kh_x25519(const uint8_t sk[static KH_X25519_LEN], const uint8_t peer[static KH_X25519_LEN],
				uint8_t out[static KH_X25519_LEN]);
/*
 * The same when the caller already holds our public key pk (of sk): OpenSSL 3.0 otherwise
 * recomputes it on import, which costs more than the derive itself. pk must match sk.
 */
KH_WARN_UNUSED kh_err kh_x25519_kp(const uint8_t sk[static KH_X25519_LEN], const uint8_t pk[static KH_X25519_LEN],
				   const uint8_t peer[static KH_X25519_LEN], uint8_t out[static KH_X25519_LEN]);

/* ---- Ed25519 ---- */
KH_WARN_UNUSED kh_err kh_ed25519_keygen(uint8_t sk[static KH_ED25519_SK_LEN], uint8_t pk[static KH_ED25519_PK_LEN]);
KH_WARN_UNUSED kh_err kh_ed25519_public(const uint8_t sk[static KH_ED25519_SK_LEN], uint8_t pk[static KH_ED25519_PK_LEN]);
KH_WARN_UNUSED kh_err kh_ed25519_sign(const uint8_t sk[static KH_ED25519_SK_LEN], const uint8_t *msg, size_t n,
				      uint8_t sig[static KH_ED25519_SIG_LEN]);
/*
 * The same when the caller already holds the public key pk of sk: OpenSSL 3.0 otherwise derives it
 * again on import, which costs about as much as the signature. pk must be sk's (a wrong one makes a
 * signature that does not verify).
 */
KH_WARN_UNUSED kh_err kh_ed25519_sign_kp(const uint8_t sk[static KH_ED25519_SK_LEN],
					 const uint8_t pk[static KH_ED25519_PK_LEN], const uint8_t *msg, size_t n,
					 uint8_t sig[static KH_ED25519_SIG_LEN]);
/* KH_OK or KH_ERR_AUTH. */
KH_WARN_UNUSED kh_err kh_ed25519_verify(const uint8_t pk[static KH_ED25519_PK_LEN], const uint8_t *msg, size_t n,
					const uint8_t sig[static KH_ED25519_SIG_LEN]);

/* ---- RSA for the escrow (seed 003; src/base/crypto_rsa.c) ---- */
/*
 * Moduli are big-endian, nlen bytes, 2048 to 4096 bits in whole bytes, odd, top bit set; the
 * public exponent is always 65537. The device's blinding factor r is expanded from a 32-byte seed
 * (HKDF-SHA256, "keyhole escrow r v1", nlen + 32 bytes, reduced mod n).
 */
#define KH_RSA_E 65537u
#define KH_RSA_MIN_LEN 256u  /* 2048 bits */
#define KH_RSA_MAX_LEN 512u  /* 4096 bits */
#define KH_RSA_SEED_LEN 32u
#define KH_RSA_SPKI_MAX 600u /* a 4096-bit key's DER SubjectPublicKeyInfo is 550 bytes */
/* c' = c * r^e mod n (nlen bytes). KH_ERR_INVAL for a bad modulus or c >= n. */
KH_WARN_UNUSED kh_err kh_rsa_blind(const uint8_t *n, size_t nlen, const uint8_t *c,
				   const uint8_t seed[static KH_RSA_SEED_LEN], uint8_t *cprime);
/*
 * m = z * r^-1 mod n, checked: m^e mod n must equal c, else KH_ERR_UNBLIND (also for z >= n).
 * m (nlen bytes) is secret: the caller wipes it.
 */
KH_WARN_UNUSED kh_err kh_rsa_unblind(const uint8_t *n, size_t nlen, const uint8_t *c,
				     const uint8_t seed[static KH_RSA_SEED_LEN], const uint8_t *z, uint8_t *m);
/* OAEP (SHA-256, MGF1-SHA-256) decoding of an nlen-byte block; KH_ERR_UNBLIND when it does not decode
 * or holds more than cap bytes. */
KH_WARN_UNUSED kh_err kh_rsa_oaep_decode(const uint8_t *em, size_t nlen, const uint8_t *label, size_t labellen,
					 uint8_t *out, size_t cap, size_t *outlen);
/* OAEP (SHA-256) encryption to an RSA key given as DER SubjectPublicKeyInfo; c gets nlen bytes. */
KH_WARN_UNUSED kh_err kh_rsa_oaep_encrypt(const uint8_t *spki, size_t spkilen, const uint8_t *label,
					  size_t labellen, const uint8_t *in, size_t inlen,
					  uint8_t c[static KH_RSA_MAX_LEN], size_t *clen);
/* The modulus of such a key; KH_ERR_FORMAT for anything but RSA, e = 65537, 2048-4096 bits. */
KH_WARN_UNUSED kh_err kh_rsa_spki_modulus(const uint8_t *spki, size_t len, uint8_t n[static KH_RSA_MAX_LEN],
					  size_t *nlen);
/* KH_OK when x (xlen bytes) is an nlen-byte value in [2, n - 2], KH_ERR_BLIND_RANGE otherwise. */
KH_WARN_UNUSED kh_err kh_rsa_blinded_in_range(const uint8_t *n, size_t nlen, const uint8_t *x, size_t xlen);

#endif
