/*
 * The upload session at the management center (seed 001; docs/protocols/upload.md). A decoder
 * opens a session for its current card and gets a fresh nonce; it then sends the card's hello
 * (the nonce signed by the card) and usage blocks: the current card's, and the one its memory M1
 * kept, which may be an older card's. The center:
 *
 *   - checks the hello against the session card's registered certificate (nothing counts
 *     without it);
 *   - separates the blocks by UA, checks each against its own card's certificate and opens it
 *     with that card's Ku; a tampered, cut or foreign block is recorded and skipped, and the
 *     rest of the session still counts;
 *   - records the purchases of the current card's blocks, and of a block of a card this
 *     subscriber replaced (a recovery: the old card is then closed, but only by a block made for
 *     M1 and not older than one already accepted), and invoices each purchase once, whatever
 *     block or session carries it again;
 *   - invoices each purchase at the center's catalogue price, never the block's, and flags a
 *     purchase whose block states another price (price_mismatch) or names an event the catalogue
 *     does not list (unknown_event, invoiced at 0);
 *   - keeps each block's hash: a second, different block under a known (UA, block_seq) is a card
 *     restored from a copy of its files, or a clone ("clone"): the card is flagged, the block's
 *     purchases are still invoiced (once each), and its log is not acknowledged;
 *   - answers with EMMs for the current card: ACK USAGE for the blocks it now holds, AUTHORISE
 *     EXPORT once no replaced card of the subscriber still awaits recovery, and a credit reload
 *     of what the card newly spent, never above the credit policy's ceiling (credit_reload()).
 *
 * The endpoints are open (decoders call them), so opening a session costs the center nothing it
 * keeps: the session is a token the center MACs (sid_make), stored only when its upload is
 * accepted. Anyone may open sessions for any card and take nothing from its decoder. A session
 * not used within the configured time is refused (session_expired), and one used is refused
 * again (session_closed).
 *
 * All of it, with the idempotency record of the answer, is one transaction: the answer is sent
 * only after it is durable, and a retried upload gets the same answer and changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/log.h"
#include "keyhole/usage.h"
#include "sms_int.h"

#define MAX_BLOCKS 8
#define NONCE_LEN 32

/*
 * Answer with the JSON text stored with the idempotency record (taken over: *text is NULL after),
 * marked Idempotent-Replayed when it is a replay. Sent as it is, not parsed and printed again.
 */
static kh_err reply_stored(struct kh_http_resp *resp, int status, char **text, size_t len, int replayed)
{
	kh_err r;

	if (replayed && (r = kh_http_resp_header(resp, "Idempotent-Replayed", "true")) != KH_OK)
		return r;
	r = kh_http_reply_text(resp, status, *text, len);
	*text = NULL;
	return r;
}

/* ---- POST /v1/upload/sessions {ua} ---- */

/* A session opened at opened is past its time (its upload is refused) once now is more than the
 * configured time after it: it lives at least upload_ttl seconds, at most one more. */
static int session_expired(const struct kh_sms *c, int64_t opened)
{
	return kh__sms_now(c) - opened > (int64_t)c->lim.upload_ttl;
}

/*
 * A session is stateless: its id is a token, base64url of
 *     version (1) | UA (4, big-endian) | opened at (4, Unix seconds, big-endian) | salt (8),
 * and its nonce is the MAC of that token under the center's session key: HMAC-SHA256(key,
 * label | token | 0x01), computed as a one-block HKDF-Expand (RFC 5869). Opening a session
 * stores nothing; the upload recomputes the nonce from the token, so only a token the center
 * made has the nonce the card signed, and the time in it cannot be moved. The session's row is
 * written when its upload is accepted, keyed by the nonce (unique): a second upload of one
 * session is refused.
 */
#define SID_VERSION 1
#define SID_SALT 8 /* sessions of one card in one second differ by it: they do not share a nonce */
#define SID_LEN (1 + 4 + 4 + SID_SALT)
#define SID_CHARS 23 /* kh_b64url_len(SID_LEN): an id as short as the integers it replaces */
#define NONCE_LABEL "keyhole upload session nonce v1"
/* A token opened later than this after the center's clock (seconds) is not one it made. */
#define SID_SKEW 60

struct sid {
	uint8_t b[SID_LEN];
	char text[SID_CHARS + 1];
	uint32_t ua;
	int64_t opened;
	uint8_t nonce[NONCE_LEN];
};

static kh_err sid_nonce(const struct kh_sms *c, struct sid *t)
{
	uint8_t info[sizeof NONCE_LABEL + SID_LEN];

	memcpy(info, NONCE_LABEL, sizeof NONCE_LABEL); /* the label and its NUL */
	memcpy(info + sizeof NONCE_LABEL, t->b, SID_LEN);
	return kh_hkdf_expand(c->k.session_key, info, sizeof info, t->nonce, NONCE_LEN);
}

/* A new session token for ua, opened now. */
static kh_err sid_make(const struct kh_sms *c, uint32_t ua, int64_t now, struct sid *t)
{
	kh_err r;

	t->b[0] = SID_VERSION;
	kh_put_be32(t->b + 1, ua);
	if (now < 0 || now > (int64_t)UINT32_MAX)
		return KH_ERR_INVAL; /* a clock outside 1970..2106 */
	kh_put_be32(t->b + 5, (uint32_t)now);
	if ((r = kh_random(t->b + 9, SID_SALT)) != KH_OK ||
	    (r = kh_b64url_encode(t->b, SID_LEN, t->text, sizeof t->text)) != KH_OK)
		return r;
	t->ua = ua;
	t->opened = now;
	return sid_nonce(c, t);
}

/* A session id from a path: KH_ERR_NOTFOUND unless it is a token of the current layout. */
static kh_err sid_parse(const struct kh_sms *c, const char *text, struct sid *t)
{
	size_t n = 0;

	if (!text || strlen(text) != SID_CHARS || kh_b64url_decode(text, SID_CHARS, t->b, SID_LEN, &n) != KH_OK ||
	    n != SID_LEN || t->b[0] != SID_VERSION)
		return KH_ERR_NOTFOUND;
	memcpy(t->text, text, SID_CHARS + 1);
	t->ua = kh_get_be32(t->b + 1);
	t->opened = (int64_t)kh_get_be32(t->b + 5);
	return sid_nonce(c, t);
}

/*
 * The card must be registered and active: read, not written. Nothing is stored, so opening costs
 * the center a read and a MAC, and however many sessions anyone opens for a card, they take
 * nothing from the card's own decoder. An Idempotency-Key is accepted and not needed: a retry
 * gets a new session, as good as the first.
 */
kh_err kh__sms_upload_open(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_sms *c = arg;
	json_t *body = kh_http_body(req), *o;
	struct kh_store_card card;
	struct kh_store *s;
	struct sid t;
	const char *ua;
	uint32_t u;
	kh_err r;

	ua = json_string_value(json_object_get(body, "ua"));
	if (!ua || kh__sms_parse_ua(ua, &u) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "ua: 8 hexadecimal digits");
	if ((r = kh__sms_db(c, &s)) != KH_OK)
		return r;
	if ((r = kh_store_card_get(s, u, &card)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? kh_http_reply_error(resp, r, "card not registered") : r;
	if (card.state != KH_CARD_ACTIVE) {
		struct kh__sms_why why = {"card_state", "only an active card opens a session"};
		return kh__sms_fail(resp, KH_ERR_DB_CONSTRAINT, &why);
	}
	if ((r = sid_make(c, u, kh__sms_now(c), &t)) != KH_OK)
		return r;
	o = json_pack("{s:s}", "session", t.text);
	if (!o || (r = kh_json_set_b64(o, "nonce", t.nonce, NONCE_LEN)) != KH_OK) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	return kh_http_reply(resp, 201, o);
}

/* ---- POST /v1/upload/sessions/{id} {hello, blocks} (Idempotency-Key) ---- */

struct block_in {
	uint8_t b[KH_USAGE_MAX];
	size_t n;
	int decoded; /* 0: not base64url at all */
	/* What the checks before the transaction found (check_block). */
	int named;                   /* a whole clear header names (ua, block_seq) */
	int version;                 /* another layout (version 1): named in the answer, not recorded */
	struct kh_usage_hdr h;
	uint8_t hash[32];            /* SHA-256 of the whole block, when decoded */
	enum kh_store_verdict crypto; /* OK, TAMPERED, TRUNCATED, or FOREIGN (no card, bad certificate) */
	struct kh_usage *u;          /* the contents, when OK */
};

struct upload_tx {
	struct kh_sms *c;
	struct sid sid;
	int64_t id; /* the session's row, written by the transaction that accepts its upload */
	char key[KH__SMS_IDEM_KEY_LEN]; /* the Idempotency-Key as the store keeps it (scoped) */
	uint8_t hash[KH_STORE_IDEM_HASH_LEN];
	uint8_t hello[KH_HELLO_LEN + 1];
	size_t hello_len;
	uint32_t emm_seq; /* the card's last unique EMM sequence number, as the decoder read it */
	size_t nblocks;
	struct block_in *blocks;
	char *answer; /* JSON text sent, or replayed */
	size_t answer_len;
	int replayed;
	unsigned queued;
	int64_t invoiced;
	uint64_t spent; /* what the session card newly spent, as invoiced: the reload's measure */
	int clone_cur;  /* a clone alarm on the session card in this upload: no ACK USAGE */
	/* What the answer flags, logged and counted once the upload has committed. */
	struct note {
		uint32_t ua, event, block_price, catalogue_price, block_seq;
		enum { NOTE_PRICE, NOTE_UNKNOWN_EVENT, NOTE_CLONE } kind;
	} *notes;
	size_t nnotes, cap_notes;
	struct kh__sms_why why;
};

/* Remember something to log once the upload is durable. */
static kh_err note(struct upload_tx *a, const struct note *n)
{
	if (a->nnotes == a->cap_notes) {
		size_t cap = a->cap_notes ? 2 * a->cap_notes : 16;
		struct note *p = realloc(a->notes, cap * sizeof *p);
		if (!p)
			return KH_ERR_NOMEM;
		a->notes = p;
		a->cap_notes = cap;
	}
	a->notes[a->nnotes++] = *n;
	return KH_OK;
}

/*
 * A card's certified signing key, checked against the operator root, and (ku not NULL) its uplink
 * key Ku. Both are kept once checked (until the certificate's expiry), keyed by the UA AND the
 * SHA-256 of the certificate the store holds now: an upload's checks then cost one indexed read
 * and a hash, not a certificate check and an HKDF more. The certificate is read every time
 * because another center on the same database may have deleted the card and registered the UA
 * again with another certificate; a cache keyed on the UA alone would go on trusting the old key
 * (kh__sms_card_forget only reaches this process). Ku is a secret derived from the master the
 * center holds anyway; the table is wiped with the master.
 */
static kh_err card_key(struct kh_store *s, struct kh_sms *c, uint32_t ua, uint8_t pk[static 32], uint8_t *ku)
{
	struct kh__sms_cardkey *slot = &c->cards.slot[ua % (sizeof c->cards.slot / sizeof c->cards.slot[0])];
	uint64_t now = (uint64_t)time(NULL);
	uint8_t der[KH_CERT_MAX], k[32], h[32];
	struct kh_cert_info ci;
	uint64_t gen;
	size_t n;
	int hit;
	kh_err r;

	if ((r = kh_store_card_cert(s, ua, der, sizeof der, &n)) != KH_OK || (r = kh_sha256(der, n, h)) != KH_OK)
		return r;
	pthread_mutex_lock(&c->cards.mu);
	gen = c->cards.gen;
	hit = slot->used && slot->ua == ua && now < slot->not_after && memcmp(slot->cert_hash, h, 32) == 0;
	if (hit) {
		memcpy(pk, slot->pub, 32);
		if (ku)
			memcpy(ku, slot->ku, 32);
	}
	pthread_mutex_unlock(&c->cards.mu);
	if (hit)
		return KH_OK;
	if ((r = kh_cert_check(der, n, c->k.root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, now, &ci)) != KH_OK)
		return r;
	if (ci.ua != ua)
		return KH_ERR_CERT;
	if ((r = kh_cas_card_ku(c->k.master, ua, k)) != KH_OK) {
		kh_wipe(k, sizeof k);
		return r;
	}
	memcpy(pk, ci.pub, 32);
	if (ku)
		memcpy(ku, k, 32);
	pthread_mutex_lock(&c->cards.mu);
	/* A card forgotten meanwhile (deleted) may have been read before: not kept. */
	if (c->cards.gen == gen) {
		slot->ua = ua;
		slot->used = 1;
		memcpy(slot->cert_hash, h, 32);
		memcpy(slot->pub, ci.pub, 32);
		memcpy(slot->ku, k, 32);
		slot->not_after = ci.not_after;
	}
	pthread_mutex_unlock(&c->cards.mu);
	kh_wipe(k, sizeof k);
	return KH_OK;
}

void kh__sms_card_forget(struct kh_sms *c, uint32_t ua)
{
	struct kh__sms_cardkey *slot = &c->cards.slot[ua % (sizeof c->cards.slot / sizeof c->cards.slot[0])];

	pthread_mutex_lock(&c->cards.mu);
	c->cards.gen++;
	if (slot->used && slot->ua == ua)
		kh_wipe(slot, sizeof *slot);
	pthread_mutex_unlock(&c->cards.mu);
}

/*
 * The cryptographic verdict on one block, before any write lock is taken: it depends only on the
 * bytes and on the card's registered certificate, which never changes. Whose block it is, and
 * whether it was seen, is decided inside the transaction (record_block).
 */
static kh_err check_block(struct kh_store *s, struct kh_sms *c, struct block_in *in, const uint8_t *snonce,
			  size_t snlen)
{
	uint8_t pk[32], ku[32];
	kh_err r, rr;

	in->crypto = KH_STORE_BLOCK_TRUNCATED;
	if (!in->decoded)
		return KH_OK;
	/* What tells a second, different block under the same number from the same one again. */
	if ((r = kh_sha256(in->b, in->n, in->hash)) != KH_OK)
		return r;
	r = kh_usage_peek(in->b, in->n, &in->h);
	if (r == KH_ERR_TRUNCATED && in->n >= KH_USAGE_HDR_LEN && in->b[0] == KH_USAGE_VERSION) {
		/* Cut short, but a whole clear header still names it: recorded as truncated. */
		in->h.ua = kh_get_be32(in->b + 1);
		in->h.block_seq = kh_get_be32(in->b + 5);
		in->h.card_time = kh_get_be64(in->b + 9);
		in->named = 1;
		return KH_OK;
	}
	if (r == KH_ERR_VERSION && in->n >= 9) {
		/* The old layout (usage.md: version 1 kept UA and block_seq at these offsets): the
		 * answer names it as refused for its version; nothing is recorded. */
		in->h.ua = kh_get_be32(in->b + 1);
		in->h.block_seq = kh_get_be32(in->b + 5);
		in->version = 1;
		return KH_OK;
	}
	if (r != KH_OK)
		return KH_OK; /* too large, less than a header, unknown flags: nothing names it */
	in->named = 1;
	if ((r = card_key(s, c, in->h.ua, pk, ku)) != KH_OK) {
		in->crypto = KH_STORE_BLOCK_FOREIGN; /* no such card, or its certificate does not check */
		return r == KH_ERR_NOTFOUND || r == KH_ERR_CERT || r == KH_ERR_CERT_EXPIRED || r == KH_ERR_CERT_ROLE
			       ? KH_OK
			       : r;
	}
	if (!(in->u = calloc(1, sizeof *in->u))) {
		kh_wipe(ku, sizeof ku);
		return KH_ERR_NOMEM;
	}
	/* a block bound to a session verifies only with this session's nonce */
	rr = kh_usage_open_bound(ku, pk, in->b, in->n, snonce, snlen, in->u);
	kh_wipe(ku, sizeof ku);
	in->crypto = rr == KH_OK ? KH_STORE_BLOCK_OK : rr == KH_ERR_AUTH ? KH_STORE_BLOCK_TAMPERED
									 : KH_STORE_BLOCK_TRUNCATED;
	return KH_OK;
}

struct session_view {
	struct kh_store_card cur;   /* the session's card */
	int outstanding;            /* replaced cards of the subscriber still awaiting recovery */
	uint32_t max_acked;         /* highest block of the current card now held */
	int to_ack;                 /* one of them carried purchases: the card's log can shrink */
};

static kh_err count_replaced(void *arg, const struct kh_store_card *k)
{
	struct session_view *v = arg;
	if (k->state == KH_CARD_REPLACED)
		v->outstanding++;
	return KH_OK;
}

/*
 * Invoice a genuine block's purchases at the center's catalogue price, each once by (UA, event,
 * time) whatever block or session carries it again. A block stating another price is flagged
 * (price_mismatch) and invoiced at the catalogue's; an event the catalogue does not list is
 * flagged (unknown_event) and invoiced at 0, for the operator to settle: the card's word alone
 * fixes no price. *flagged counts this block's newly flagged purchases. What the session's own
 * card spent, newly invoiced, is the measure of its reload: the lower of the two prices, so a
 * card never gets back more than it paid nor more than was invoiced.
 */
static kh_err invoice_block(struct kh_store *s, struct upload_tx *a, const struct session_view *v,
			    const struct block_in *in, int64_t subscriber_id, unsigned *flagged)
{
	kh_err r;

	for (size_t i = 0; i < in->u->npurchases; i++) {
		struct kh_store_purchase p = {
			.ua = in->h.ua,
			.event = in->u->purchases[i].event,
			.price = in->u->purchases[i].price,
			.time = (int64_t)in->u->purchases[i].time,
			.block_ua = in->h.ua,
			.block_seq = in->h.block_seq,
			.subscriber_id = subscriber_id,
		};
		struct note n = {.ua = p.ua, .event = p.event, .block_price = p.price, .block_seq = p.block_seq};
		int inv = 0;

		r = kh_store_event_price(s, p.event, &p.invoice_price);
		if (r == KH_ERR_NOTFOUND) {
			p.invoice_price = 0;
			p.flag = "unknown_event";
			n.kind = NOTE_UNKNOWN_EVENT;
		} else if (r != KH_OK) {
			return r;
		} else if (p.invoice_price != p.price) {
			p.flag = "price_mismatch";
			n.kind = NOTE_PRICE;
		}
		n.catalogue_price = p.invoice_price;
		if ((r = kh_store_purchase_invoice(s, &p, &inv)) != KH_OK)
			return r;
		if (!inv)
			continue; /* invoiced before: counted, flagged and logged then */
		a->invoiced++;
		if (in->h.ua == v->cur.ua)
			a->spent += p.invoice_price < p.price ? p.invoice_price : p.price;
		if (p.flag) {
			(*flagged)++;
			if ((r = note(a, &n)) != KH_OK)
				return r;
		}
	}
	return KH_OK;
}

/*
 * One block inside the transaction: whose it is, its verdict ("ok", "recovered", "not_m1",
 * "stale", "duplicate", "clone", "tampered", "foreign", "truncated", "version") recorded, and its
 * purchases recorded and invoiced.
 *
 * "clone": a genuine block of a card under a (UA, block_seq) already accepted with another hash,
 * or newer than the card's newest accepted block but with an older last reload id. A genuine
 * card does neither; one whose files were copied back does. The card is flagged, the block's
 * purchases are invoiced (each once), and the card's log is not acknowledged in this answer.
 *
 * A replaced card is closed as recovered only by a block of it that was made for M1 (flag
 * KH_USAGE_F_M1) and is not older than a block of it the center already accepted. A genuine
 * block of it that fails either test is still recorded and its purchases invoiced (they are the
 * subscriber's real purchases, and invoicing is idempotent), but the card stays outstanding:
 * "not_m1" for a block made for a session (EXPORT P1=0, which a decoder can obtain at any time
 * and keep), "stale" for an M1 block older than one already accepted (a decoder keeping an old
 * copy of M1 instead of its newest).
 */
static kh_err record_block(struct kh_store *s, struct upload_tx *a, struct session_view *v,
			   const struct block_in *in, json_t *out)
{
	struct kh_store_card owner;
	struct kh_store_block rec = {0};
	enum kh_store_verdict verdict, prev;
	const char *said;
	int recovery = 0, known = 0, closes = 0, same = 1, clone = 0, invoice = 0, found = 0;
	uint32_t rseq = 0, rcredit = 0, rreload = 0;
	unsigned flagged = 0;
	char ua[9];
	json_t *o;
	kh_err r;

	if (in->version) {
		kh__sms_ua_hex(in->h.ua, ua);
		o = json_pack("{s:s,s:I,s:s}", "ua", ua, "block_seq", (json_int_t)in->h.block_seq, "verdict", "version");
		return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
	}
	if (!in->named) {
		o = json_pack("{s:s,s:i,s:s}", "ua", "00000000", "block_seq", 0, "verdict", "truncated");
		return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
	}
	if (in->h.ua == v->cur.ua) {
		owner = v->cur; /* the session's own card: read once for the whole session */
		known = 1;
	} else if ((r = kh_store_card_get(s, in->h.ua, &owner)) == KH_OK) {
		known = 1;
	} else if (r != KH_ERR_NOTFOUND) {
		return r;
	}
	/* Whose block: the session's card, or one this subscriber's card replaced (a recovery). */
	if (known && in->h.ua == v->cur.ua)
		recovery = 0;
	else if (known && owner.subscriber_id == v->cur.subscriber_id && owner.subscriber_id &&
		 (owner.state == KH_CARD_REPLACED ||
		  (owner.state == KH_CARD_CLOSED && owner.closed_reason == KH_CARD_RECOVERED)))
		recovery = 1;
	else
		known = 0;
	verdict = known ? in->crypto : KH_STORE_BLOCK_FOREIGN;
	/* The card's newest accepted block before this one is recorded (rseq; for an old card, what
	 * makes its recovery block stale), and what it reported: a genuine card's last reload id
	 * never goes back, so a newer block with an older one comes from a card restored from a copy. */
	if (verdict == KH_STORE_BLOCK_OK &&
	    (r = kh_store_block_reported(s, in->h.ua, &found, &rseq, &rcredit, &rreload)) != KH_OK)
		return r;
	rec.ua = in->h.ua;
	rec.block_seq = in->h.block_seq;
	rec.verdict = verdict;
	rec.session_id = a->id;
	rec.hash = in->hash;
	if (verdict == KH_STORE_BLOCK_OK) {
		rec.reported = 1;
		rec.credit = in->u->credit;
		rec.last_reload = in->u->last_reload;
	}
	r = kh_store_block_record(s, &rec, &prev, &same);
	if (r == KH_ERR_EXISTS && verdict == KH_STORE_BLOCK_OK && prev == KH_STORE_BLOCK_OK && !same)
		r = kh_store_block_clone(s, in->h.ua, in->h.block_seq, in->hash, a->id);
	else if (r == KH_ERR_EXISTS)
		same = 1;
	if (r == KH_OK && !same) {
		/* Another genuine block under a number already accepted: the card's state was put back
		 * (or copied). Its purchases still count, once each; the card is flagged. The same
		 * clone again is a duplicate, as any block seen twice. */
		said = "clone";
		clone = invoice = 1;
	} else if (r == KH_ERR_EXISTS) {
		said = "duplicate";
		r = KH_OK;
	} else if (r != KH_OK) {
		return r;
	} else if (verdict != KH_STORE_BLOCK_OK) {
		said = verdict == KH_STORE_BLOCK_TAMPERED ? "tampered" : verdict == KH_STORE_BLOCK_FOREIGN ? "foreign"
													    : "truncated";
	} else {
		said = "ok";
		if (recovery && !(in->h.flags & KH_USAGE_F_M1))
			said = "not_m1";
		else if (recovery && in->h.block_seq < rseq)
			said = "stale";
		else if (recovery) {
			said = "recovered";
			closes = 1;
		}
		invoice = 1;
		if (found && in->h.block_seq > rseq && in->u->last_reload < rreload) {
			said = "clone"; /* recorded, invoiced, and flagged as a clone */
			clone = 1;
			closes = 0;
		}
		if (closes && owner.state == KH_CARD_REPLACED) {
			owner.state = KH_CARD_CLOSED;
			owner.closed_reason = KH_CARD_RECOVERED;
			if ((r = kh_store_card_update(s, &owner)) != KH_OK)
				return r;
			v->outstanding--;
		}
	}
	if (invoice && (r = invoice_block(s, a, v, in, owner.subscriber_id, &flagged)) != KH_OK)
		return r;
	if (clone) {
		struct note n = {.ua = in->h.ua, .block_seq = in->h.block_seq, .kind = NOTE_CLONE};
		if ((r = kh_store_card_clone_alarm(s, in->h.ua, in->h.block_seq)) != KH_OK || (r = note(a, &n)) != KH_OK)
			return r;
		if (in->h.ua == v->cur.ua) {
			a->clone_cur = 1;
			v->cur.clone_alarm_at = 1; /* flagged now, whatever the clock says */
		}
	}
	/* The card may let go of what this block carried, and of every block before it. */
	if (verdict == KH_STORE_BLOCK_OK && !clone && in->h.ua == v->cur.ua && in->h.block_seq > v->max_acked)
		v->max_acked = in->h.block_seq;
	if (verdict == KH_STORE_BLOCK_OK && !clone && in->h.ua == v->cur.ua && in->u && in->u->npurchases)
		v->to_ack = 1;
	kh__sms_ua_hex(in->h.ua, ua);
	o = json_pack("{s:s,s:I,s:s}", "ua", ua, "block_seq", (json_int_t)in->h.block_seq, "verdict", said);
	/* How many of its purchases were invoiced otherwise than the block said (flagged). */
	if (o && flagged && json_object_set_new(o, "price_flags", json_integer(flagged)) != 0) {
		json_decref(o);
		o = NULL;
	}
	return o && json_array_append_new(out, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

/*
 * The card's queued EMMs above the sequence number it reported, oldest first, as base64url
 * sections: every one it has not applied yet, not only this session's. A card applies an EMM
 * only above its last, so handing it a newer one first would make it refuse the older ones.
 */
#define ANSWER_EMMS_MAX 32
struct emm_collect {
	uint32_t above;
	size_t n;
	json_t *arr;
};

static kh_err collect_emm(void *arg, const struct kh_store_emm *e)
{
	struct emm_collect *ec = arg;
	size_t n = kh_b64url_len(e->len) + 1;
	char *b;
	json_t *str;

	if (e->seq <= ec->above)
		return KH_OK;
	ec->n++; /* at most ANSWER_EMMS_MAX: the rest goes next time, or by broadcast */
	if (!(b = malloc(n)))
		return KH_ERR_NOMEM;
	if (kh_b64url_encode(e->section, e->len, b, n) != KH_OK || !(str = json_string(b)) ||
	    json_array_append_new(ec->arr, str) != 0) {
		free(b);
		return KH_ERR_NOMEM;
	}
	free(b);
	return KH_OK;
}

/* The stored answer under the upload's key into a (KH_OK), or why not: KH_ERR_NOTFOUND, or
 * KH_ERR_IDEM_MISMATCH with the reason set. */
static kh_err replay(struct kh_store *s, struct upload_tx *a)
{
	uint8_t *stored = NULL;
	size_t n = 0;
	kh_err r = kh_store_idem_get(s, a->key, a->hash, &stored, &n);

	if (r == KH_OK) {
		free(a->answer);
		a->answer = (char *)stored;
		a->answer_len = n;
		a->replayed = 1;
	} else if (r == KH_ERR_IDEM_MISMATCH) {
		kh__sms_why(&a->why, r, NULL, "this Idempotency-Key was used for another request");
	}
	return r;
}

/* Whether a block of the upload names a card other than the session's (a possible recovery). */
static int other_cards(const struct upload_tx *a, uint32_t sua)
{
	for (size_t i = 0; i < a->nblocks; i++)
		if (a->blocks[i].named && a->blocks[i].h.ua != sua)
			return 1;
	return 0;
}

/*
 * The credit reload this upload queues for the session's card (*amount, 0: none). It gives back
 * what the card newly spent (a->spent: purchases invoiced for the first time, each at the lower
 * of its block's and the catalogue's price), so the card's credit returns to where it was, and
 * never more than the credit policy allows:
 *   - at most reload_amount per upload (0: uploads reload nothing);
 *   - never above the ceiling, the policy's initial_credit: what the card last reported in its
 *     newest accepted block, plus every reload queued for it since (reload id above the last one
 *     that block said it applied: "in flight", the card may not have them yet), plus this one,
 *     stays at or below it.
 * A free event (price 0) spends nothing and so reloads nothing; nor does a card that is not
 * active, one under a clone alarm (its reported credit cannot be trusted), or one whose newest
 * accepted block predates the center's recording of credit.
 */
static kh_err credit_reload(struct kh_store *s, const struct upload_tx *a, const struct session_view *v,
			    uint32_t *amount)
{
	uint32_t initial, per_upload, seq, credit, last_reload;
	uint64_t in_flight = 0, level, give;
	int found = 0;
	kh_err r;

	*amount = 0;
	if (!a->spent || v->cur.state != KH_CARD_ACTIVE || v->cur.clone_alarm_at)
		return KH_OK;
	if ((r = kh_store_credit_policy_get(s, &initial, &per_upload)) != KH_OK ||
	    (r = kh_store_block_reported(s, v->cur.ua, &found, &seq, &credit, &last_reload)) != KH_OK)
		return r;
	if (!found || !per_upload)
		return KH_OK;
	if ((r = kh_store_card_reloads_above(s, v->cur.ua, last_reload, &in_flight)) != KH_OK)
		return r;
	level = (uint64_t)credit + in_flight;
	if (level >= initial)
		return KH_OK;
	give = a->spent;
	if (give > per_upload)
		give = per_upload;
	if (give > initial - level)
		give = initial - level;
	*amount = (uint32_t)give;
	return KH_OK;
}

static kh_err upload_tx(struct kh_store *s, void *arg)
{
	struct upload_tx *a = arg;
	struct session_view v;
	struct kh__sms_emm e;
	struct emm_collect ec = {0};
	uint8_t cmd[16];
	uint32_t sua = a->sid.ua, amount = 0, reload_id;
	struct kh_wr w;
	json_t *blocks = NULL, *o = NULL;
	kh_err r;

	kh__sms_emm_init(&e, a->c, 0);
	free(a->answer); /* a busy retry starts again */
	a->answer = NULL;
	a->replayed = 0;
	a->queued = 0;
	a->invoiced = 0;
	a->spent = 0;
	a->clone_cur = 0;
	a->nnotes = 0;
	a->why = (struct kh__sms_why){0};
	/* The session's row, keyed by its nonce (unique): it exists once an upload of the session
	 * was accepted. The idempotency record was looked up before the transaction; it is read
	 * again here only if the session turns out to be used (a retry that raced its first try). */
	r = kh_store_upload_open(s, sua, a->sid.nonce, NONCE_LEN, a->sid.opened, &a->id);
	if (r == KH_ERR_EXISTS) {
		if ((r = replay(s, a)) != KH_ERR_NOTFOUND)
			return r;
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "session_closed",
				   "this session's upload was processed; open a new session");
	}
	if (r != KH_OK)
		return r;
	memset(&v, 0, sizeof v);
	if ((r = kh_store_card_get(s, sua, &v.cur)) != KH_OK)
		return r;
	/* The hello and the blocks' signatures were checked before this transaction (precheck). The
	 * subscriber's replaced cards matter only to authorise export or to recover a block of one. */
	if (v.cur.subscriber_id && (!v.cur.export_authorised || other_cards(a, sua)) &&
	    (r = kh_store_cards_of(s, v.cur.subscriber_id, count_replaced, &v)) != KH_OK)
		return r;
	if (!(blocks = json_array()))
		return KH_ERR_NOMEM;
	for (size_t i = 0; i < a->nblocks; i++)
		if ((r = record_block(s, a, &v, &a->blocks[i], blocks)) != KH_OK)
			goto out;

	kh__sms_emm_init(&e, a->c, sua);
	kh_wr_init(&w, cmd, sizeof cmd);
	/* ACK USAGE only lets purchases leave the card's log: none carried, nothing to send. A card
	 * that just showed a clone's block keeps its log: it is the evidence of what it bought. */
	if (v.max_acked && v.to_ack && !a->clone_cur)
		kh_emm_put_ack_usage(&w, v.max_acked);
	if (!v.cur.export_authorised && v.outstanding == 0 && v.cur.state == KH_CARD_ACTIVE) {
		kh_emm_put_auth_export(&w, 1);
		v.cur.export_authorised = 1;
		if ((r = kh_store_card_update(s, &v.cur)) != KH_OK)
			goto out;
	}
	if ((r = w.err) != KH_OK || (w.len && (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK))
		goto out;
	if ((r = credit_reload(s, a, &v, &amount)) != KH_OK)
		goto out;
	if (amount) {
		if ((r = kh_store_card_reload_add(s, sua, amount, &reload_id)) != KH_OK)
			goto out;
		kh_wr_init(&w, cmd, sizeof cmd);
		if ((r = kh_emm_put_add_credit(&w, amount, reload_id)) != KH_OK ||
		    (r = kh__sms_emm_cmd(s, &e, cmd, w.len)) != KH_OK)
			goto out;
	}
	if ((r = kh__sms_emm_flush(s, &e)) != KH_OK)
		goto out;
	a->queued = e.queued;
	if ((r = kh_store_upload_close(s, a->id)) != KH_OK)
		goto out;
	if (!(ec.arr = json_array())) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	ec.above = a->emm_seq;
	if ((r = kh_store_emm_fetch_addr_seq(s, KH_EMM_UNIQUE, sua, a->emm_seq, ANSWER_EMMS_MAX, collect_emm, &ec)) !=
	    KH_OK)
		goto out;
	o = json_pack("{s:s,s:O,s:O,s:I,s:b}", "session", a->sid.text, "blocks", blocks, "emms", ec.arr, "invoiced",
		      (json_int_t)a->invoiced, "export_authorised", v.cur.export_authorised);
	if (!o || !(a->answer = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	a->answer_len = strlen(a->answer);
	/* In the transaction that made the changes: the answer and what it says commit together. A
	 * key taken meanwhile (by another request) undoes this one: it gets that key's verdict. */
	r = kh__sms_idem_put(s, a->c, a->key, a->hash, a->answer, a->answer_len);
	if (r == KH_ERR_EXISTS) {
		r = replay(s, a);
		if (r == KH_OK) /* the same request answered meanwhile: its answer, none of this */
			r = KH_ERR_EXISTS;
	}
out:
	kh__sms_emm_wipe(&e);
	json_decref(o);
	json_decref(blocks);
	json_decref(ec.arr);
	return r;
}

/*
 * Before the transaction: the session's card answered this session's nonce (its hello), and
 * each block's signature and tag, against the certificates registered for the cards they name.
 * Reads only; the session and the certificates it reads never change once written.
 */
static kh_err precheck(struct kh_store *s, struct upload_tx *a)
{
	const uint8_t *nonce = a->sid.nonce;
	size_t nlen = NONCE_LEN;
	uint8_t pk[32], *stored = NULL;
	struct kh_usage_hdr hh;
	uint32_t sua = a->sid.ua;
	int64_t now = kh__sms_now(a->c);
	size_t n = 0;
	kh_err r;

	/* A retry of an upload already answered gets that answer, whatever has changed since (the
	 * session's time is up, a certificate expired): nothing is checked again. */
	r = kh_store_idem_get(s, a->key, a->hash, &stored, &n);
	if (r == KH_OK) {
		a->answer = (char *)stored;
		a->answer_len = n;
		a->replayed = 1;
		return KH_OK;
	}
	if (r == KH_ERR_IDEM_MISMATCH)
		return kh__sms_why(&a->why, r, NULL, "this Idempotency-Key was used for another request");
	if (r != KH_ERR_NOTFOUND)
		return r;
	/* Opened at a time the center has not reached: not a session it opened (or its clock went
	 * back by more than the skew allowed). */
	if (a->sid.opened > now + SID_SKEW)
		return kh__sms_why(&a->why, KH_ERR_NOTFOUND, NULL, "no such upload session");
	if (session_expired(a->c, a->sid.opened))
		return kh__sms_why(&a->why, KH_ERR_DB_CONSTRAINT, "session_expired",
				   "this session was not used in time; open a new session");
	if ((r = card_key(s, a->c, sua, pk, NULL)) != KH_OK)
		return kh__sms_why(&a->why, r, NULL, "the session's card certificate does not check");
	if (a->hello_len &&
	    (kh_hello_verify(pk, nonce, nlen, a->hello, a->hello_len, &hh) != KH_OK || hh.ua != sua))
		return kh__sms_why(&a->why, KH_ERR_AUTH, "hello", "the hello is not the session card's answer to its nonce");
	for (size_t i = 0; i < a->nblocks; i++)
		if ((r = check_block(s, a->c, &a->blocks[i], nonce, nlen)) != KH_OK)
			return r;
	if (a->hello_len)
		return KH_OK;
	/* No separate hello: a block of the session's card bound to this session's nonce is the
	 * card's answer to it (usage.h, KH_USAGE_F_SESSION), and one signature fewer to check. */
	for (size_t i = 0; i < a->nblocks; i++) {
		const struct block_in *in = &a->blocks[i];
		if (in->named && in->h.ua == sua && (in->h.flags & KH_USAGE_F_SESSION) && in->crypto == KH_STORE_BLOCK_OK)
			return KH_OK;
	}
	return kh__sms_why(&a->why, KH_ERR_AUTH, "hello",
			   "neither a hello nor a block of the session's card bound to its nonce answers it");
}

/* Once the upload is durable: a log line and a count for each thing it flagged. */
static void report_notes(const struct upload_tx *a)
{
	for (size_t i = 0; i < a->nnotes; i++) {
		const struct note *n = &a->notes[i];
		switch (n->kind) {
		case NOTE_PRICE:
			kh_log_warn("price_mismatch", "ua=%08X event=%u block_price=%u catalogue_price=%u block_seq=%u",
				    n->ua, n->event, n->block_price, n->catalogue_price, n->block_seq);
			if (a->c->n.price_mismatches)
				kh_metric_add(a->c->n.price_mismatches, 1);
			break;
		case NOTE_UNKNOWN_EVENT:
			kh_log_warn("unknown_event", "ua=%08X event=%u block_price=%u block_seq=%u", n->ua, n->event,
				    n->block_price, n->block_seq);
			if (a->c->n.unknown_events)
				kh_metric_add(a->c->n.unknown_events, 1);
			break;
		case NOTE_CLONE:
			kh_log_warn("clone_alarm", "ua=%08X block_seq=%u", n->ua, n->block_seq);
			if (a->c->n.clone_alarms)
				kh_metric_add(a->c->n.clone_alarms, 1);
			break;
		}
	}
}

kh_err kh__sms_upload(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct upload_tx a = {.c = arg};
	json_t *body = kh_http_body(req), *arr, *v;
	const char *key;
	struct kh_store *s;
	char *canon = NULL, *fp = NULL;
	size_t i;
	kh_err r;

	if (sid_parse(a.c, kh_http_param(req, "id"), &a.sid) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_NOTFOUND, "no such upload session");
	key = kh_http_idempotency_key(req);
	if (!key)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "an upload needs an Idempotency-Key header");
	if ((r = kh__sms_idem_key(req, KH__SMS_CALLER_OPEN, a.key)) != KH_OK)
		return r;
	arr = json_object_get(body, "blocks");
	if (!json_is_array(arr) || json_array_size(arr) > MAX_BLOCKS)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "blocks: an array of at most 8 base64url blocks");
	/* Optional: a block bound to the session (usage.h) answers the nonce as well. */
	r = kh_json_get_b64(body, "hello", a.hello, sizeof a.hello, &a.hello_len, 0);
	if (r == KH_ERR_NOTFOUND || (r == KH_OK && a.hello_len == 0))
		a.hello_len = 0;
	else if (r != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "hello: the card's hello, base64url");
	{
		/* Optional; without it every queued EMM of the card comes back (the card skips those it
		 * has, as replays). The decoder's word is enough: it can only cost itself EMMs. */
		int64_t seq = 0;
		kh_err e = kh__sms_json_int(body, "emm_seq", 0, UINT32_MAX, 0, &seq);
		if (e != KH_OK && e != KH_ERR_NOTFOUND)
			return kh_http_reply_error(resp, KH_ERR_INVAL, "emm_seq: the card's last EMM sequence number");
		a.emm_seq = (uint32_t)seq;
	}
	if (json_array_size(arr) && !(a.blocks = calloc(json_array_size(arr), sizeof *a.blocks)))
		return KH_ERR_NOMEM;
	json_array_foreach(arr, i, v) {
		const char *str = json_string_value(v);
		/* Not OK until checked (OK is 0, calloc's value): a block never looked at is refused. */
		a.blocks[i].crypto = KH_STORE_BLOCK_TRUNCATED;
		/* A block that is not base64url is still an answer line ("truncated"), not a 400. */
		a.blocks[i].decoded = str && kh_b64url_decode(str, strlen(str), a.blocks[i].b, sizeof a.blocks[i].b,
							       &a.blocks[i].n) == KH_OK;
	}
	a.nblocks = json_array_size(arr);
	/* The request the key stands for: this session and this body. */
	if (!(canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    asprintf(&fp, "POST\n/v1/upload/sessions/%s\n%s", a.sid.text, canon) < 0) {
		fp = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_sha256((const uint8_t *)fp, strlen(fp), a.hash)) != KH_OK || (r = kh__sms_db(a.c, &s)) != KH_OK)
		goto out;
	/* The signature checks first, with no write lock held: uploads then queue on the lock only
	 * for their SQL, not for their cryptography. A retry of an upload already answered is
	 * answered from its idempotency record here, with no check and no transaction. */
	if ((r = precheck(s, &a)) != KH_OK) {
		if (a.why.code || a.why.msg)
			r = kh__sms_fail(resp, r, &a.why);
		goto out;
	}
	if (a.replayed)
		goto answer;
	/* Committed with whatever other uploads are waiting, in one transaction and one fsync
	 * (SQLite), or on this thread's own connection (PostgreSQL): kh__sms_write. */
	r = kh__sms_write(a.c, upload_tx, &a);
	if (r == KH_ERR_EXISTS && a.replayed)
		goto answer; /* answered meanwhile under the same key: that answer, this one undone */
	if (r != KH_OK) {
		if (a.why.code || a.why.msg)
			r = kh__sms_fail(resp, r, &a.why);
		goto out;
	}
answer:
	if (!a.replayed) {
		kh__sms_count_emms(a.c, a.queued);
		kh__sms_count_blocks(a.c, (unsigned)a.nblocks);
		report_notes(&a);
	}
	r = reply_stored(resp, 200, &a.answer, a.answer_len, a.replayed);
out:
	free(canon);
	free(fp);
	free(a.answer);
	free(a.notes);
	for (i = 0; a.blocks && i < a.nblocks; i++) {
		if (a.blocks[i].u)
			kh_wipe(a.blocks[i].u, sizeof *a.blocks[i].u);
		free(a.blocks[i].u);
	}
	if (a.blocks)
		kh_wipe(a.blocks, a.nblocks * sizeof *a.blocks);
	free(a.blocks);
	return r;
}
