/*
 * The escrow's clients (host zone, src/host/escrow_client.c and escrow_content.c; seed 003,
 * docs/protocols/escrow.md): the seller's (a listing; the content encrypted under a fresh K, and
 * the offer) and the buyer host's, which relays between the buyer's device and the escrow and
 * keeps what it may keep: the offer and the encrypted content, the device's request and the
 * escrow's answer while a purchase is under way (BASE.purchase), the licence sealed to the device
 * (BASE.lic) and the notice (BASE.notice). Nothing it holds opens the content without the device.
 */
#ifndef KEYHOLE_ESCROWCLIENT_H
#define KEYHOLE_ESCROWCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/escrow.h"
#include "keyhole/transport.h"

struct kh_escrow_client;

/*
 * A client of the escrow at url (http or https; https checked against cacert when given, else the
 * system's store) with the account's API token (NULL: only the open routes). KH_ERR_INVAL for a
 * bad URL.
 */
KH_WARN_UNUSED kh_err kh_escrow_client_new(const char *url, const char *cacert, const char *token,
					   struct kh_escrow_client **out);
void kh_escrow_client_free(struct kh_escrow_client *c);
/* The last failure in words (the escrow's refusal, or what did not answer); "" when none. */
const char *kh_escrow_client_error(const struct kh_escrow_client *c);

struct kh_escrow_account_info {
	char name[65];
	char currency[4];
	int64_t available, held, deposited, withdrawn;
};
KH_WARN_UNUSED kh_err kh_escrow_account_info(struct kh_escrow_client *c, struct kh_escrow_account_info *out);
/* Withdraw amount from the account's available money; idem names this withdrawal (a repeat moves
 * nothing). *out the account after it. */
KH_WARN_UNUSED kh_err kh_escrow_withdraw(struct kh_escrow_client *c, int64_t amount, const char *idem,
					 struct kh_escrow_account_info *out);

/* ---- the seller ---- */

/*
 * A listing of content at price (deadline: seconds a purchase's payment stays held without a
 * notice, 0 for the escrow's default), asked with the Idempotency-Key idem: asked again with the
 * same key, the escrow answers the same listing. Its signed bytes (checked: the escrow's record,
 * the content and price asked) into buf (KH_ESCROW_LISTING_MAX bytes), *len.
 */
KH_WARN_UNUSED kh_err kh_escrow_list(struct kh_escrow_client *c, const char *content, uint64_t price,
				     uint32_t deadline, const char *idem, uint8_t *buf, size_t *len);
/*
 * Encrypt the file in under a fresh K for the listing: the content container to content_out and
 * the offer (the listing, c = RSA-OAEP(listing key, K)) to offer_out, both new files (never
 * replacing one). K is wiped. chunk: plaintext bytes per chunk (0: KH_ESCROW_CHUNK_MAX).
 */
KH_WARN_UNUSED kh_err kh_escrow_seal_content(const uint8_t *listing, size_t llen, const char *in, uint32_t chunk,
					     const char *content_out, const char *offer_out);

/* ---- the buyer ---- */

struct kh_escrow_bought {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t outcome; /* enum kh_escrow_outcome */
	uint8_t reason;  /* enum kh_escrow_reason */
	char state[16];  /* the escrow's state of the purchase after the notice */
	int resumed;     /* 1: a purchase left under way (BASE.purchase) was finished */
};

/*
 * Buy the offer for the device dev: BUY START (the request kept in BASE.purchase before it is
 * sent), the escrow's answer (kept there too), BUY FINISH, the licence to BASE.lic and the notice
 * to BASE.notice, then the notice to the escrow. A purchase left under way in BASE.purchase is
 * finished, never started twice. A refusal by the escrow before it held anything cancels the
 * device's purchase and removes BASE.purchase; a failure on the way keeps it for the next run.
 */
KH_WARN_UNUSED kh_err kh_escrow_buy(struct kh_escrow_client *c, struct kh_transport *dev, const char *offer,
				    const char *content, const char *base, struct kh_escrow_bought *out);
/*
 * Decrypt content with the licence through the device dev into out: a new regular file (made
 * beside it and renamed into place once whole) or, when out is a FIFO, a device or "-" (standard
 * output), written as it goes. Nothing is left at out when a chunk is refused.
 */
KH_WARN_UNUSED kh_err kh_escrow_open(struct kh_transport *dev, const char *licence, const char *content,
				     const char *out, char *msg, size_t msgcap);

/*
 * What BASE.purchase keeps while a purchase is under way: the device's request (before it is
 * sent) and the escrow's answer (once it came; anslen 0 before). The file is
 * "KHPS" | u8 1 | u16 n | request | u16 n | answer, both records checked when read back.
 */
struct kh_escrow_pending {
	uint8_t req[KH_ESCROW_REQUEST_MAX];
	size_t reqlen;
	uint8_t ans[KH_ESCROW_ANSWER_MAX];
	size_t anslen;
};
#define KH_ESCROW_PENDING_MAX (4 + 1 + 2 + KH_ESCROW_REQUEST_MAX + 2 + KH_ESCROW_ANSWER_MAX)
/* Read the file's bytes: KH_ERR_FORMAT (or the records' own codes) for anything else; *p is
 * written only on success. */
KH_WARN_UNUSED kh_err kh_escrow_pending_parse(const uint8_t *b, size_t n, struct kh_escrow_pending *p);
/* Write them (out: KH_ESCROW_PENDING_MAX bytes), *n; what the parser would refuse is KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh_escrow_pending_format(const struct kh_escrow_pending *p, uint8_t *out, size_t cap,
					       size_t *n);

/* One purchase the device holds, with the escrow's word on it. */
struct kh_escrow_status {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t listing[KH_ESCROW_ID_LEN];
	uint8_t device_state; /* KH_ESCROW_SLOT_* */
	uint8_t reason;
	char escrow_state[16]; /* "held", "delivered", "failed", "swept"; "unknown" when the escrow
				* has no such purchase (it refused it); "" when not asked */
	int64_t price, deadline;
};
/* Every purchase the device holds, each with the escrow's state (c may be NULL: the device's only). */
KH_WARN_UNUSED kh_err kh_escrow_status(struct kh_escrow_client *c, struct kh_transport *dev,
				       kh_err (*fn)(void *arg, const struct kh_escrow_status *s), void *arg);

#endif
