/*
 * HPKE base mode (RFC 9180, mode_base = 0) with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256,
 * built on the crypto facade because OpenSSL 3.0 has no HPKE. AEADs: AES-128-GCM (the suite
 * The protocol design uses), AES-256-GCM and ChaCha20-Poly1305 (so the RFC's A.1 and A.2 vectors both
 * run). Allocation-free; usable from the module zone.
 *
 * Limits: info, exporter context and ikm are at most KH_HPKE_INPUT_MAX bytes (KH_ERR_TOO_LARGE),
 * ikm at least 32; a context refuses to seal or open once its sequence number would wrap
 * (KH_ERR_CHAN_REKEY). Open returns KH_ERR_TRUNCATED below 16 bytes and KH_ERR_AUTH on a bad tag,
 * with pt wiped. ct and pt may be the same buffer.
 */
#ifndef KEYHOLE_HPKE_H
#define KEYHOLE_HPKE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/crypto.h"

#define KH_HPKE_ENC_LEN 32
#define KH_HPKE_INPUT_MAX 256
#define KH_HPKE_KEM_X25519 0x0020
#define KH_HPKE_KDF_SHA256 0x0001

struct kh_hpke_ctx {
	enum kh_aead_alg aead; /* RFC aead_id: 1, 2 or 3, same numbering as enum kh_aead_alg */
	uint8_t key[32];
	uint8_t base_nonce[KH_NONCE_LEN];
	uint8_t exporter_secret[32];
	uint64_t seq;
};

/* DeriveKeyPair (RFC 9180 §7.1.3) for X25519. */
KH_WARN_UNUSED kh_err kh_hpke_derive_keypair(const uint8_t *ikm, size_t ikmlen,
					     uint8_t sk[static 32], uint8_t pk[static 32]);

/*
 * SetupBaseS: encapsulate to pkR. skE is the ephemeral private key for known-answer tests;
 * pass NULL to draw a fresh one from kh_random(). enc receives the 32-byte encapsulation.
 */
KH_WARN_UNUSED kh_err kh_hpke_setup_s(struct kh_hpke_ctx *c, enum kh_aead_alg aead,
				      const uint8_t pkR[static 32], const uint8_t *info, size_t infolen,
				      const uint8_t *skE, uint8_t enc[static KH_HPKE_ENC_LEN]);
/* SetupBaseR: decapsulate enc with skR. */
KH_WARN_UNUSED kh_err kh_hpke_setup_r(struct kh_hpke_ctx *c, enum kh_aead_alg aead,
				      const uint8_t enc[static KH_HPKE_ENC_LEN], const uint8_t skR[static 32],
				      const uint8_t *info, size_t infolen);
/* Context Seal/Open: ct is ptlen + 16 bytes; the sequence number advances only on success. */
KH_WARN_UNUSED kh_err kh_hpke_seal(struct kh_hpke_ctx *c, const uint8_t *aad, size_t aadlen,
				   const uint8_t *pt, size_t ptlen, uint8_t *ct);
KH_WARN_UNUSED kh_err kh_hpke_open(struct kh_hpke_ctx *c, const uint8_t *aad, size_t aadlen,
				   const uint8_t *ct, size_t ctlen, uint8_t *pt);
KH_WARN_UNUSED kh_err kh_hpke_export(const struct kh_hpke_ctx *c, const uint8_t *exp_ctx, size_t exp_ctx_len,
				     uint8_t *out, size_t outlen);
void kh_hpke_ctx_wipe(struct kh_hpke_ctx *c);

/* Single-shot API (RFC 9180 §6.1) in AES-128-GCM, the suite of the protocol design. */
KH_WARN_UNUSED kh_err kh_hpke_seal_base(const uint8_t pkR[static 32], const uint8_t *info, size_t infolen,
					const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t ptlen,
					uint8_t enc[static KH_HPKE_ENC_LEN], uint8_t *ct);
KH_WARN_UNUSED kh_err kh_hpke_open_base(const uint8_t skR[static 32], const uint8_t enc[static KH_HPKE_ENC_LEN],
					const uint8_t *info, size_t infolen, const uint8_t *aad, size_t aadlen,
					const uint8_t *ct, size_t ctlen, uint8_t *pt);

#endif
