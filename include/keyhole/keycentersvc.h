/*
 * The key center (center zone, src/center/keycenter/; seed 004): it enrols key cards (their
 * seeds sealed to it, their chains kept sealed at rest in its store, keyhole/store_keycenter.h),
 * activates them with a one-time access code, relays their posts as deliveries to the card that
 * has the envelope's address, and keeps the deliveries until their recipient's host fetches them
 * in a mailbox session the card signed for. `keyhole keycenter` runs it.
 *
 * Its one secret is its identity's signing key (keyhole/identity.h, role keycenter); every other
 * key derives from it (HKDF-SHA256, empty salt): the state key ("keyhole keycenter state v1")
 * seals chain states and waiting deliveries' keys, the code key ("keyhole keycenter code v1")
 * MACs access codes, the nonce key ("keyhole keycenter nonce v1") MACs session challenges, and
 * the X25519 enrolment key is kh_kc_enrol_keypair's. A copy of the database without the key
 * opens nothing; a row swapped or rolled back fails to open (the sealing binds serial and
 * position).
 */
#ifndef KEYHOLE_KEYCENTERSVC_H
#define KEYHOLE_KEYCENTERSVC_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/keycard.h"
#include "keyhole/keyseq.h"
#include "keyhole/store.h"

/* An access code: 16 characters of Crockford base32, shown as XXXX-XXXX-XXXX-XXXX. */
#define KH_KEYCENTER_CODE_LEN 16
#define KH_KEYCENTER_CODE_SHOWN 19
/* At most this many failed activations per card per window; the next is KH_ERR_LIMIT. */
#define KH_KEYCENTER_CODE_TRIES 5
#define KH_KEYCENTER_CODE_WINDOW (15 * 60)
/* A session challenge is good this long (seconds); a session lasts KH_KEYCENTER_SESSION_S. */
#define KH_KEYCENTER_NONCE_AGE 120
#define KH_KEYCENTER_SESSION_S (15 * 60)
#define KH_KEYCENTER_SESSIONS_MAX 8
/* Deliveries waiting for one card at most: a post beyond is KH_ERR_LIMIT, its index NOT spent. */
#define KH_KEYCENTER_MAILBOX_MAX 1024
#define KH_KEYCENTER_DOC_DEFAULT (16u * 1024u * 1024u)
/* The largest document `--max-document` allows (a message is held in memory whole). */
#define KH_KEYCENTER_DOC_MAX (256u * 1024u * 1024u)

struct kh_keycenter;

/* The key center of dir (its identity, role keycenter), its keys derived. kh_keycenter_close wipes them. */
KH_WARN_UNUSED kh_err kh_keycenter_open(const char *dir, struct kh_keycenter **out);
void kh_keycenter_close(struct kh_keycenter *kc);
uint32_t kh_keycenter_serial(const struct kh_keycenter *kc);

/* ---- the enrolment station (`keyhole keycenter enrol`) ---- */

/* The center's certificate (DER) and its enrolment key record, what KC ENROL gives the card. */
const uint8_t *kh_keycenter_cert(const struct kh_keycenter *kc, size_t *len);
KH_WARN_UNUSED kh_err kh_keycenter_enrolkey(const struct kh_keycenter *kc, uint8_t out[static KH_KC_ENROLKEY_LEN]);
/* A card's signing certificate: our authority's, role keycard, Ed25519, valid at now; its serial. */
KH_WARN_UNUSED kh_err kh_keycenter_card_cert(const struct kh_keycenter *kc, const uint8_t *der, size_t n, int64_t now,
					     uint64_t *serial);
/*
 * Before the card is touched: address valid (KH_ERR_FORMAT), not another card's (KH_ERR_EXISTS)
 * unless that card is the one it replaces; replaces (0: none) a card that exists (KH_ERR_NOTFOUND)
 * and was not replaced already (KH_ERR_EXISTS).
 */
KH_WARN_UNUSED kh_err kh_keycenter_enrol_check(struct kh_store *st, const char *address, uint64_t replaces);

struct kh_keycenter_enrolment {
	uint64_t serial;                           /* the card's, as KC ENROL gave it */
	const uint8_t *sealed;                     /* KH_KC_SEALED_SEED_LEN: its seed sealed to us */
	const uint8_t *cert;                       /* its signing certificate (DER) */
	size_t cert_len;
	const char *address;
	uint64_t replaces;                         /* 0: none */
};

/*
 * Enrol: open the seed, make both chains, wipe the seed, make the access code and store the card
 * (state enrolled) with its code's MAC, in one transaction; with replaces, that card blocked, its
 * address moved, and every delivery waiting for it sealed again for the new card, in the same
 * one. code gets the code as shown (XXXX-XXXX-XXXX-XXXX): it is stored nowhere.
 */
KH_WARN_UNUSED kh_err kh_keycenter_enrol(const struct kh_keycenter *kc, struct kh_store *st,
					 const struct kh_keycenter_enrolment *e, int64_t now,
					 char code[static KH_KEYCENTER_CODE_SHOWN + 1]);
/* Block a card: no post, no mail, no session. KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_keycenter_block(struct kh_store *st, uint64_t serial);
/* The card's two chains as the store has them, unsealed (KH_ERR_AUTH: not under this center's key,
 * or rows swapped or rolled back). The caller wipes them. */
KH_WARN_UNUSED kh_err kh_keycenter_chains(const struct kh_keycenter *kc, struct kh_store *st, uint64_t serial,
					  struct kh_keyseq *send, struct kh_keyseq *recv);

/* ---- the service (`keyhole keycenter serve`) ---- */

struct kh_keycenter_service;
struct kh_http;

struct kh_keycenter_service_config {
	const char *db;        /* store URL (kh_store_open) */
	const char *dir;       /* the identity */
	unsigned window;       /* W, 1..KH_KEYSEQ_WINDOW_MAX; 0: KH_KEYSEQ_WINDOW */
	uint64_t max_document; /* bytes, 1..KH_KEYCENTER_DOC_MAX; 0: KH_KEYCENTER_DOC_DEFAULT */
	int store_sync_normal; /* 1: synchronous=NORMAL (NOT durable; benchmarks only) */
	int64_t (*clock)(void *ctx); /* Unix seconds (NULL: time()); for tests */
	void *clock_ctx;
};

/* The largest post for a document of max_document bytes: the HTTP server's raw body limit. */
size_t kh_keycenter_post_max(uint64_t max_document);

KH_WARN_UNUSED kh_err kh_keycenter_service_new(const struct kh_keycenter_service_config *cfg,
					       struct kh_keycenter_service **out, const char **what);
/* The /v1 routes (before kh_http_start); the server's raw_body_limit should be kh_keycenter_post_max. */
KH_WARN_UNUSED kh_err kh_keycenter_service_add_routes(struct kh_keycenter_service *s, struct kh_http *h);
/* Only once the HTTP server has stopped. NULL ok. */
void kh_keycenter_service_free(struct kh_keycenter_service *s);

#endif
