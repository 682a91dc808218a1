/*
 * Inside the key center (src/center/keycenter/): its identity and the keys derived from it, and
 * the sealing of what the store keeps (keys.c), shared by the enrolment station (enrol.c), the
 * relay (relay.c) and the HTTP routes (service.c).
 */
#ifndef KH_KC_INT_H
#define KH_KC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "center/pool.h"
#include "keyhole/identity.h"
#include "keyhole/keycentersvc.h"
#include "keyhole/keyseq.h"
#include "keyhole/store_keycenter.h"

struct kh_keycenter {
	struct kh_identity id;
	uint8_t state_key[32]; /* seals chain states and waiting deliveries' keys at rest */
	uint8_t code_key[32];  /* MACs access codes */
	uint8_t nonce_key[32]; /* MACs session challenges */
};

struct kh_keycenter_service {
	struct kh_keycenter *kc;
	struct kh__pool pool;
	struct kh_store_group *writer; /* SQLite: concurrent writes share one commit (one fsync) */
	unsigned window;
	uint64_t max_document;
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};

/* What a post came to (relay.c): a delivery, a duplicate of the last one, or refused for want of
 * an active recipient (its index spent all the same). */
struct kh__kc_relayed {
	uint64_t serial, index;
	int duplicate, refused;
	char to[KH_KC_ADDR_MAX + 1];
	uint64_t recipient, j;
};

/* Relay the post msg (n bytes): every step in one transaction, run again on a busy store. */
KH_WARN_UNUSED kh_err kh__kc_relay(struct kh_keycenter_service *s, const uint8_t *msg, size_t n,
				   struct kh__kc_relayed *out);
int64_t kh__kc_now(const struct kh_keycenter_service *s);
/* Run fn in one write transaction, again while the store is busy: on SQLite through the group
 * committer (inside a savepoint of a transaction many writers share, committed once for all), on
 * PostgreSQL on this thread's connection. Either way fn's changes are durable when KH_OK returns,
 * and undone when fn fails. */
KH_WARN_UNUSED kh_err kh__kc_write(struct kh_keycenter_service *s, kh_store_tx_fn fn, void *arg);

/* A chain state sealed at rest: AES-256-GCM(state key, random nonce, "KHCS" | serial | dir | pos). */
KH_WARN_UNUSED kh_err kh__kc_chain_seal(const struct kh_keycenter *kc, const struct kh_keyseq *c,
					uint8_t out[static KH_STORE_KC_SEALED_LEN]);
/* The chain (serial, dir) at pos from its sealed state; KH_ERR_AUTH when it is not that one's. */
KH_WARN_UNUSED kh_err kh__kc_chain_open(const struct kh_keycenter *kc, uint64_t serial, enum kh_keyseq_dir dir,
					uint64_t pos, const uint8_t in[static KH_STORE_KC_SEALED_LEN],
					struct kh_keyseq *c);
/* A waiting delivery's key sealed at rest: aad "KHMK" | recipient | j. */
KH_WARN_UNUSED kh_err kh__kc_mkey_seal(const struct kh_keycenter *kc, uint64_t recipient, uint64_t j,
				       const uint8_t key[static 32], uint8_t out[static KH_STORE_KC_SEALED_LEN]);
KH_WARN_UNUSED kh_err kh__kc_mkey_open(const struct kh_keycenter *kc, uint64_t recipient, uint64_t j,
				       const uint8_t in[static KH_STORE_KC_SEALED_LEN], uint8_t key[static 32]);

/* A fresh access code, KH_KEYCENTER_CODE_LEN characters of Crockford base32 (no dashes). */
KH_WARN_UNUSED kh_err kh__kc_code_new(char code[static KH_KEYCENTER_CODE_LEN + 1]);
/* HMAC-SHA256(code key, u64 serial | code as typed, normalised: dashes and spaces out, upper case). */
KH_WARN_UNUSED kh_err kh__kc_code_mac(const struct kh_keycenter *kc, uint64_t serial, const char *typed,
				      uint8_t mac[static 32]);

/* The session challenge for serial at time t (u64 t | 24 bytes of HMAC(nonce key, serial | t)). */
KH_WARN_UNUSED kh_err kh__kc_nonce(const struct kh_keycenter *kc, uint64_t serial, int64_t t,
				   uint8_t nonce[static KH_KC_NONCE_LEN]);
/* KH_OK with *t when nonce is ours for serial (its MAC compared in constant time), KH_ERR_AUTH. */
KH_WARN_UNUSED kh_err kh__kc_nonce_check(const struct kh_keycenter *kc, uint64_t serial,
					 const uint8_t nonce[static KH_KC_NONCE_LEN], int64_t *t);

/* HMAC-SHA256 (RFC 5869's extract step is exactly HMAC(salt, ikm)). */
KH_WARN_UNUSED kh_err kh__kc_hmac(const uint8_t key[static 32], const uint8_t *msg, size_t n, uint8_t out[static 32]);

#endif
