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

/*
 * The split-key variant: encrypt the file in under a fresh K (below the sharing field's prime)
 * and share K among the buyer's device and the escrows of the nl listings (one listing per
 * escrow, all for the same content): the device's share and any `need` of the escrows' recover
 * K (threshold need + 1 of nl + 1 shares), fewer escrows learn nothing of it. The content goes
 * to content_out, offer i (listing i, c_i = RSA-OAEP(listing key i, share record i)) to
 * offer_outs[i], the device's share (the seller's to grant to each buyer's device, never to hand
 * out as it is) to share_out, mode 0600. All new files, and none left when one fails.
 * KH_ERR_INVAL unless 1 <= need <= nl <= 15, for listings of different content, or two listings
 * at one escrow (it would hold two shares).
 */
KH_WARN_UNUSED kh_err kh_escrow_seal_split(const uint8_t *const *listings, const size_t *llens, size_t nl,
					   unsigned need, const char *in, uint32_t chunk, const char *content_out,
					   const char *const *offer_outs, const char *share_out);
/*
 * Grant the device's share in share_file (private to its owner) to the buyer device whose
 * pairing certificate is cert (DER; checked: from the authority whose root key is root_pk,
 * role buyer, an X25519 key, valid now): the share, naming the device, sealed to that key for
 * the content's header, to out (a new file). *device: the device's serial.
 */
KH_WARN_UNUSED kh_err kh_escrow_grant(const char *share_file, const char *content, const uint8_t *cert, size_t certlen,
				      const uint8_t root_pk[static 32], const char *out, uint32_t *device);
/* The header of the escrowed content file content: KH_ERR_IO when it cannot be read, else the
 * header parser's codes; hb keeps its bytes. */
KH_WARN_UNUSED kh_err kh_escrow_header_read(const char *content, uint8_t hb[static KH_ESCROW_HEADER_MAX],
					    struct kh_escrow_header *h);

/* ---- the buyer ---- */

struct kh_escrow_bought {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t outcome; /* enum kh_escrow_outcome */
	uint8_t reason;  /* enum kh_escrow_reason */
	char state[16];  /* the escrow's state of the purchase after the notice */
	int resumed;     /* 1: a purchase left under way (BASE.purchase) was finished */
	int share;       /* 1: the purchase bought one share of a split key, which the device keeps
			  * (no notice yet, outcome 0): BASE.purchase stays until kh_escrow_combine */
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
 * Give up the purchase under way in BASE.purchase (pending, or a share held): the escrow's answer
 * is asked first when it never came (a refusal: nothing was held, and the device's purchase is
 * cancelled), then the device cancels it and signs `failed`, reason cancelled, which goes to
 * BASE.notice and to the escrow (it refunds the buyer), and BASE.purchase is removed. A purchase
 * the device delivered cannot be cancelled (KH_ERR_PURCHASE_STATE).
 */
KH_WARN_UNUSED kh_err kh_escrow_cancel(struct kh_escrow_client *c, struct kh_transport *dev, const char *base,
				       struct kh_escrow_bought *out);

/*
 * The split-key variant: combine the shares the device holds for the purchases of parts (n BASE
 * names of kh_escrow_buy, each a share held; clients[i] the escrow of parts[i], with the
 * buyer's token there) with the device's own share, grant (kh_escrow_grant), for content. The device settles
 * them all at once: the licence to base.lic when delivered; then each part's notice to
 * PART.notice and to its escrow, and PART.purchase removed. Run again after any failure, it tells
 * the escrows not yet told. An escrow that cannot be told does not stop the others (its error is
 * returned once they were). Messages go to clients[0], or the part's own client.
 */
struct kh_escrow_combined {
	uint8_t outcome; /* enum kh_escrow_outcome */
	uint8_t reason;  /* enum kh_escrow_reason */
	size_t told;     /* escrows told */
	int resumed;     /* 1: the device had combined them before */
};
KH_WARN_UNUSED kh_err kh_escrow_combine(struct kh_escrow_client *const *clients, const char *const *parts, size_t n,
					struct kh_transport *dev, const char *grant, const char *content,
					const char *base, struct kh_escrow_combined *out);
/* The device's pairing certificate (pairing 1: its X25519 key, what a seller grants a share to)
 * or its signing certificate (0), DER, into der (KH_CERT_MAX bytes do). */
KH_WARN_UNUSED kh_err kh_escrow_device_cert(struct kh_transport *dev, int pairing, uint8_t *der, size_t cap,
					    size_t *n);

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
