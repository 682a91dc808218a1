/*
 * The key center's rows in the center's store (src/store/ops_keycenter.c: cards, sessions;
 * ops_keycenter_mail.c: the mailbox and the relay log; migration 10): the key cards it enrolled,
 * each with its two key chains sealed at rest (the service seals and opens them: the store only
 * keeps bytes), the deliveries waiting for their recipients, the log of every relay (no key, no
 * content), and the hashes of the mailbox sessions' tokens.
 *
 * As every typed operation: one transaction each or the caller's (kh_store_run_tx), a kh_err,
 * outputs written only on success. Card serials are u64 on the wire and kept as SQL integers
 * (1..INT64_MAX). Row callbacks get pointers valid during the call only.
 */
#ifndef KEYHOLE_STORE_KEYCENTER_H
#define KEYHOLE_STORE_KEYCENTER_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/cert.h"
#include "keyhole/store.h"

#define KH_STORE_KC_ADDR_MAX 64
/* A chain state or a message key sealed at rest: nonce (12) | ciphertext (32) | tag (16). */
#define KH_STORE_KC_SEALED_LEN 60
#define KH_STORE_KC_SERIAL_MAX ((uint64_t)INT64_MAX)

enum kh_store_kc_state { KH_STORE_KC_ENROLLED = 1, KH_STORE_KC_ACTIVE = 2, KH_STORE_KC_BLOCKED = 3 };
/* "enrolled", "active", "blocked"; "?" for anything else. */
const char *kh_store_kc_state_name(enum kh_store_kc_state s);

struct kh_store_kc_card {
	uint64_t serial;
	char address[KH_STORE_KC_ADDR_MAX + 1]; /* "" once replaced */
	enum kh_store_kc_state state;
	uint8_t sign_cert[KH_CERT_MAX];
	size_t sign_cert_len;
	uint8_t code_mac[32];
	int64_t code_fails, code_window_start;
	uint64_t send_pos, recv_pos;
	uint8_t send_state[KH_STORE_KC_SEALED_LEN], recv_state[KH_STORE_KC_SEALED_LEN];
	int has_post; /* last_post_hash is set */
	uint8_t last_post_hash[32];
	int64_t hello_time;
	uint64_t replaced_by; /* 0: none */
	int64_t created, activated; /* activated 0: never */
	int64_t waiting; /* messages in its mailbox (lists only; 0 elsewhere) */
};
typedef kh_err (*kh_store_kc_card_fn)(void *arg, const struct kh_store_kc_card *c);

/* A new card (state, chains, code from c; created = now, the rest zero). KH_ERR_EXISTS when the
 * serial or the address is taken, KH_ERR_INVAL for a field out of range. */
KH_WARN_UNUSED kh_err kh_store_kc_card_add(struct kh_store *s, const struct kh_store_kc_card *c, int64_t now);
/* The card, by serial or by address; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_card_get(struct kh_store *s, uint64_t serial, struct kh_store_kc_card *c);
KH_WARN_UNUSED kh_err kh_store_kc_card_by_address(struct kh_store *s, const char *address,
						  struct kh_store_kc_card *c);
/*
 * Take the card's row for this transaction (a write of it to itself: PostgreSQL's row lock, what
 * SQLite's one writer has already): two relays touching one card go one after the other, the
 * second reading what the first wrote. KH_ERR_NOTFOUND.
 */
KH_WARN_UNUSED kh_err kh_store_kc_card_lock(struct kh_store *s, uint64_t serial);
/* Every card in serial order, with its waiting count. */
KH_WARN_UNUSED kh_err kh_store_kc_cards_list(struct kh_store *s, kh_store_kc_card_fn fn, void *arg);

/* The card's state (activated set to now when it becomes active and was not). KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_card_state(struct kh_store *s, uint64_t serial, enum kh_store_kc_state state,
					     int64_t now);
/* The failed access code attempts of the card's current window. */
KH_WARN_UNUSED kh_err kh_store_kc_code_fails(struct kh_store *s, uint64_t serial, int64_t fails, int64_t window_start);
/* The send chain moved on: its new position and sealed state, and the hash of the post relayed. */
KH_WARN_UNUSED kh_err kh_store_kc_send_set(struct kh_store *s, uint64_t serial, uint64_t pos,
					   const uint8_t state[static KH_STORE_KC_SEALED_LEN],
					   const uint8_t post_hash[static 32]);
/* The receive chain moved on. */
KH_WARN_UNUSED kh_err kh_store_kc_recv_set(struct kh_store *s, uint64_t serial, uint64_t pos,
					   const uint8_t state[static KH_STORE_KC_SEALED_LEN]);
/* The session nonce of time t is used: KH_ERR_REPLAY unless t is later than the last one used. */
KH_WARN_UNUSED kh_err kh_store_kc_hello_use(struct kh_store *s, uint64_t serial, int64_t t);
/* Card old is replaced by new: blocked, its address given up (the caller gives it to new). */
KH_WARN_UNUSED kh_err kh_store_kc_card_replaced(struct kh_store *s, uint64_t old, uint64_t by);

/* ---- the mailbox ---- */

struct kh_store_kc_mail {
	uint64_t recipient, idx, sender;
	const char *sender_address;
	const uint8_t *msg; /* the delivery (NULL in lists) */
	size_t msg_len;
	int has_key;
	uint8_t key_sealed[KH_STORE_KC_SEALED_LEN];
	int64_t size; /* of the delivery */
	int64_t created;
};
typedef kh_err (*kh_store_kc_mail_fn)(void *arg, const struct kh_store_kc_mail *m);

/* Queue a delivery (key_sealed taken when has_key). KH_ERR_EXISTS for an index taken. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_add(struct kh_store *s, const struct kh_store_kc_mail *m);
/* Deliveries waiting for the recipient. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_count(struct kh_store *s, uint64_t recipient, int64_t *n);
/* Those waiting, in index order, without their bytes. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_list(struct kh_store *s, uint64_t recipient, kh_store_kc_mail_fn fn, void *arg);
/* One, with its bytes and sealed key; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_get(struct kh_store *s, uint64_t recipient, uint64_t idx,
					   kh_store_kc_mail_fn fn, void *arg);
/* The first waiting for recipient with an index above after (0: the first); KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_next(struct kh_store *s, uint64_t recipient, uint64_t after,
					    kh_store_kc_mail_fn fn, void *arg);
/* Gone, its sealed key with it; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_mail_delete(struct kh_store *s, uint64_t recipient, uint64_t idx);

/* ---- the relay log ---- */

struct kh_store_kc_relay {
	int64_t id;
	uint64_t sender, send_idx;
	uint64_t recipient, recv_idx; /* 0, 0: refused (no such active recipient) */
	int64_t size, time;
};
typedef kh_err (*kh_store_kc_relay_fn)(void *arg, const struct kh_store_kc_relay *r);

KH_WARN_UNUSED kh_err kh_store_kc_relay_add(struct kh_store *s, const struct kh_store_kc_relay *r);
/* The relay of post send_idx of sender; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_kc_relay_find(struct kh_store *s, uint64_t sender, uint64_t send_idx,
					     struct kh_store_kc_relay *r);
/* In id order. */
KH_WARN_UNUSED kh_err kh_store_kc_relays_list(struct kh_store *s, kh_store_kc_relay_fn fn, void *arg);

/* ---- mailbox sessions (their tokens kept as SHA-256) ---- */

/* A session for serial until expires; the expired ones of every card go first. KH_ERR_LIMIT when
 * the card has max live sessions already. */
KH_WARN_UNUSED kh_err kh_store_kc_session_add(struct kh_store *s, const uint8_t hash[static 32], uint64_t serial,
					      int64_t expires, int64_t now, unsigned max);
/* The card of a live session; KH_ERR_NOTFOUND (also when expired). */
KH_WARN_UNUSED kh_err kh_store_kc_session_find(struct kh_store *s, const uint8_t hash[static 32], int64_t now,
					       uint64_t *serial);

#endif
