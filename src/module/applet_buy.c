/*
 * The buyer applet: a buyer's tamper-resistant device in the escrow protocol (seed 003,
 * docs/protocols/escrow.md). The seller encrypted its content under K and gave the buyer
 * c = RSA-OAEP(listing key, K); the escrow holds the listing's private key and is paid to use it,
 * but must never learn K, and the buyer must never hold K outside this device:
 *
 *   BUY START   we draw the seed of a blinding factor r, keep it sealed in a purchase slot with a
 *               hash of what we were given (listing, c, the content header's hash), and sign the
 *               request carrying c' = c * r^e mod n and the listing's price
 *   BUY FINISH  the escrow's z = c'^d: m = z * r^-1 must satisfy m^e = c before anything else;
 *               then K = OAEP-decode(m) must open the content header's commitment. Either way
 *               the slot is settled, r forgotten, and we sign the notice: `delivered` with a
 *               licence (K sealed under a key only we hold), or `failed` with the reason
 *   BUY NOTICE  the same notice (and licence) again, for a host that lost the answer
 *   BUY CANCEL  a purchase under way given up: `failed`, r forgotten, so no later answer opens
 *   BUY COMBINE the split-key variant: c opened to one share of K, not K, and BUY FINISH kept the
 *               share in its slot without a notice; our own share (sealed to our pairing key by
 *               the seller) and enough escrows' shares give K, which must open the content
 *               header's commitment; every purchase named is settled at once, the same way
 *   CONTENT OPEN / CHUNK / CLOSE   the licence's K decrypts the content for the host, chunk by
 *               chunk; K itself never leaves. The plaintext is what the buyer paid for, so it goes
 *               to the host (unlike a processor's program, which only its runner sees).
 *
 * A `failed` notice is signed only where no byte of the content was shown: the answer did not
 * unblind, the key did not decode, or it did not match the content's commitment. A host that
 * tampers with an answer therefore only gets its buyer refunded for a key it never had.
 *
 * The slots are persistent (a pending purchase's r must survive a power cycle: the money is held)
 * and answered only once stored; the content being decrypted is volatile (m->vol.buy).
 */
#include <string.h>

#include "keyhole/escrow.h"
#include "keyhole/shamir.h"
#include "module/module_int.h"

enum { SLOT_EMPTY = 0, SLOT_PENDING = KH_ESCROW_SLOT_PENDING, SLOT_DELIVERED = KH_ESCROW_SLOT_DELIVERED,
       SLOT_FAILED = KH_ESCROW_SLOT_FAILED, SLOT_SHARE = KH_ESCROW_SLOT_SHARE };

#define BUY_SECTION_ID 2
#define BUY_SECTION_VERSION 2 /* 1: slots without the share fields */
enum { S_SEQ = 1, S_SLOT = 2 };

static const char label_binding[] = "keyhole escrow v1 binding";
static const char label_licence[] = "keyhole escrow v1 licence";
static const uint8_t licence_magic[4] = {'K', 'H', 'B', 'T'};
#define LIC_BODY_LEN (2 * KH_ESCROW_ID_LEN + KH_ESCROW_KEY_LEN)

#define BIT(tag) (1u << (tag))

static kh_err need_buyer(const struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	return m->p.lifecycle == KH_LC_PERSONALISED ? KH_OK : KH_ERR_NOT_PERSONALISED;
}

static void content_close(struct kh_module *m)
{
	kh_wipe(&m->vol.buy, sizeof m->vol.buy);
}

/* ---- slots ---- */

static struct kh_buy_slot *slot_find(struct kh_module *m, const uint8_t purchase[static KH_ESCROW_ID_LEN])
{
	for (size_t i = 0; i < KH_BUY_SLOTS; i++) {
		struct kh_buy_slot *s = &m->p.app.buy.slot[i];
		if (s->state != SLOT_EMPTY && kh_ct_eq(s->purchase, purchase, KH_ESCROW_ID_LEN))
			return s;
	}
	return NULL;
}

/* An empty slot, else the settled one started first; NULL when every slot is under way (pending,
 * or holding a share). */
static struct kh_buy_slot *slot_free(struct kh_module *m)
{
	struct kh_buy_slot *best = NULL;

	for (size_t i = 0; i < KH_BUY_SLOTS; i++) {
		struct kh_buy_slot *s = &m->p.app.buy.slot[i];
		if (s->state == SLOT_EMPTY)
			return s;
		if ((s->state == SLOT_DELIVERED || s->state == SLOT_FAILED) && (!best || s->seq < best->seq))
			best = s;
	}
	return best;
}

/* The purchase a command names (TLV purchase). */
static kh_err slot_named(struct kh_module *m, const struct kh_apdu *a, struct kh_buy_slot **s)
{
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	kh_err r;

	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_ESCROW_T_MAX, BIT(KH_ESCROW_T_PURCHASE))) != KH_OK)
		return r;
	if (t[KH_ESCROW_T_PURCHASE].len != KH_ESCROW_ID_LEN)
		return KH_ERR_FORMAT;
	return (*s = slot_find(m, t[KH_ESCROW_T_PURCHASE].v)) ? KH_OK : KH_ERR_NOTFOUND;
}

/*
 * What BUY START was given, as one hash: the listing, c, and the content header's hash. BUY
 * FINISH must be given the same, so a host cannot swap the listing, c or the content in between.
 * The listing's length prefix keeps the parts apart; c's length is the listing key's.
 */
static kh_err binding_of(struct kh_module *m, const struct kh_tlv *listing, const struct kh_tlv *c,
			 const uint8_t hh[static KH_SHA256_LEN], uint8_t out[static KH_SHA256_LEN])
{
	struct kh_wr w;

	kh_wr_init(&w, m->inner, sizeof m->inner);
	kh_wr_bytes(&w, (const uint8_t *)label_binding, sizeof label_binding - 1);
	kh_wr_u16(&w, listing->len);
	kh_wr_bytes(&w, listing->v, listing->len);
	kh_wr_bytes(&w, c->v, c->len);
	kh_wr_bytes(&w, hh, KH_SHA256_LEN);
	return w.err != KH_OK ? w.err : kh_sha256(w.p, w.len, out);
}

/* The listing (not its signature: the escrow's own key is what the answer is checked against,
 * through m^e = c) and its modulus; c must be as long as the modulus. */
static kh_err listing_key(const struct kh_tlv *lt, const struct kh_tlv *c, struct kh_escrow_listing *l,
			  uint8_t n[static KH_RSA_MAX_LEN], size_t *nlen)
{
	kh_err r;

	if ((r = kh_escrow_listing_parse(lt->v, lt->len, NULL, l)) != KH_OK ||
	    (r = kh_rsa_spki_modulus(l->key, l->keylen, n, nlen)) != KH_OK)
		return r;
	return c->len == *nlen ? KH_OK : KH_ERR_FORMAT;
}

/* ---- notices and licences ---- */

static kh_err put_notice(struct kh_module *m, const struct kh_buy_slot *s, struct kh_wr *resp)
{
	struct kh_escrow_notice t;
	uint8_t b[KH_ESCROW_NOTICE_LEN];
	struct kh_wr w;
	kh_err r;

	memset(&t, 0, sizeof t);
	memcpy(t.purchase, s->purchase, sizeof t.purchase);
	memcpy(t.listing, s->listing, sizeof t.listing);
	t.escrow = s->escrow;
	t.device = m->p.ua;
	t.outcome = s->state == SLOT_DELIVERED ? KH_ESCROW_DELIVERED : KH_ESCROW_FAILED;
	t.reason = s->reason;
	kh_wr_init(&w, b, sizeof b);
	if ((r = kh_escrow_notice_sign(&t, m->p.sign_sk, &w)) != KH_OK)
		return r;
	return kh_tlv_put(resp, KH_ESCROW_T_NOTICE, b, w.len);
}

static kh_err licence_key(const struct kh_module *m, uint8_t k[static KH_KEY_LEN])
{
	return kh_hkdf(m->p.pair_sk, sizeof m->p.pair_sk, NULL, 0, (const uint8_t *)label_licence,
		       sizeof label_licence - 1, k, KH_KEY_LEN);
}

/* The licence of a delivered slot: its K sealed under a key only this device holds. */
static kh_err put_licence(struct kh_module *m, const struct kh_buy_slot *s, struct kh_wr *resp)
{
	uint8_t key[KH_KEY_LEN], body[LIC_BODY_LEN], tok[KH_ESCROW_LICENCE_LEN];
	kh_err r;

	memcpy(body, s->purchase, KH_ESCROW_ID_LEN);
	memcpy(body + KH_ESCROW_ID_LEN, s->listing, KH_ESCROW_ID_LEN);
	memcpy(body + 2 * KH_ESCROW_ID_LEN, s->secret, KH_ESCROW_KEY_LEN);
	memcpy(tok, licence_magic, sizeof licence_magic);
	if ((r = kh_random(tok + 4, KH_NONCE_LEN)) == KH_OK && (r = licence_key(m, key)) == KH_OK &&
	    (r = kh_aead_seal(key, tok + 4, licence_magic, sizeof licence_magic, body, sizeof body,
			      tok + 4 + KH_NONCE_LEN)) == KH_OK)
		r = kh_tlv_put(resp, KH_ESCROW_T_LICENCE, tok, sizeof tok);
	kh_wipe(key, sizeof key);
	kh_wipe(body, sizeof body);
	kh_wipe(tok, sizeof tok);
	return r;
}

/* A settled slot's answer: its notice, and its licence when delivered. */
static kh_err put_settled(struct kh_module *m, const struct kh_buy_slot *s, struct kh_wr *resp)
{
	kh_err r = put_notice(m, s, resp);

	return r == KH_OK && s->state == SLOT_DELIVERED ? put_licence(m, s, resp) : r;
}

/* ---- BUY START ---- */

static kh_err h_buy_start(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct kh_escrow_listing l;
	struct kh_escrow_request q;
	struct kh_buy_slot *s, ns;
	uint8_t n[KH_RSA_MAX_LEN], *cprime = m->inner_resp, *out;
	size_t nlen = 0;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_ESCROW_T_MAX,
			     BIT(KH_ESCROW_T_LISTING) | BIT(KH_ESCROW_T_C) | BIT(KH_ESCROW_T_HEADER_HASH))) != KH_OK)
		return r;
	if (t[KH_ESCROW_T_HEADER_HASH].len != KH_SHA256_LEN)
		return KH_ERR_FORMAT;
	if ((r = listing_key(&t[KH_ESCROW_T_LISTING], &t[KH_ESCROW_T_C], &l, n, &nlen)) != KH_OK)
		return r;
	if (!(s = slot_free(m)))
		return KH_ERR_PURCHASES_FULL;

	memset(&ns, 0, sizeof ns);
	ns.state = SLOT_PENDING;
	memcpy(ns.listing, l.id, sizeof ns.listing);
	ns.escrow = l.escrow;
	ns.seq = ++m->p.app.buy.seq;
	if ((r = kh_random(ns.purchase, sizeof ns.purchase)) != KH_OK || (r = kh_random(ns.secret, sizeof ns.secret)) != KH_OK ||
	    (r = binding_of(m, &t[KH_ESCROW_T_LISTING], &t[KH_ESCROW_T_C], t[KH_ESCROW_T_HEADER_HASH].v, ns.binding)) !=
		    KH_OK)
		goto out;
	if ((r = kh_rsa_blind(n, nlen, t[KH_ESCROW_T_C].v, ns.secret, cprime)) != KH_OK) {
		if (r == KH_ERR_INVAL)
			r = KH_ERR_FORMAT; /* c >= n */
		goto out;
	}

	memset(&q, 0, sizeof q);
	memcpy(q.purchase, ns.purchase, sizeof q.purchase);
	memcpy(q.listing, l.id, sizeof q.listing);
	q.escrow = l.escrow;
	q.price = l.price;
	memcpy(q.currency, l.currency, sizeof q.currency);
	q.device = m->p.ua;
	q.cprime = cprime;
	q.nlen = nlen;
	/* the request is the TLV's value: reserve its header, write, then fill in the length */
	if ((r = kh_wr_reserve(resp, 3, &out)) != KH_OK)
		goto out;
	if ((r = kh_escrow_request_sign(&q, m->p.sign_sk, resp)) != KH_OK)
		goto out;
	out[0] = KH_ESCROW_T_REQUEST;
	out[1] = (uint8_t)((resp->len - 3) >> 8);
	out[2] = (uint8_t)(resp->len - 3);
	kh_wipe(s, sizeof *s);
	*s = ns;
	m->dirty = 1; /* stored before the request goes out: its r survives a power cycle */
out:
	kh_wipe(&ns, sizeof ns);
	kh_wipe(cprime, KH_RSA_MAX_LEN);
	return r;
}

/* ---- BUY FINISH ---- */

/*
 * What z opens to, or the reason it opens to nothing: m = z * r^-1 must satisfy m^e = c, then its
 * OAEP decoding (label: the listing id) is K (KH_ESCROW_KEY_LEN bytes) or, in the split-key
 * variant, a share record (KH_SHAMIR_REC_LEN bytes) into out, *outlen its length.
 */
static uint8_t recover(struct kh_module *m, const struct kh_buy_slot *s, const uint8_t n[static KH_RSA_MAX_LEN],
		       size_t nlen, const uint8_t *c, const uint8_t *z, uint8_t out[static KH_SHAMIR_REC_LEN],
		       size_t *outlen, kh_err *err)
{
	uint8_t *em = m->inner_resp;
	uint8_t reason = KH_ESCROW_R_NONE;
	kh_err r;

	*err = KH_OK;
	*outlen = 0;
	if ((r = kh_rsa_unblind(n, nlen, c, s->secret, z, em)) != KH_OK) {
		if (r == KH_ERR_UNBLIND)
			reason = KH_ESCROW_R_UNBLIND;
		else
			*err = r;
	} else if (kh_rsa_oaep_decode(em, nlen, s->listing, KH_ESCROW_ID_LEN, out, KH_SHAMIR_REC_LEN, outlen) != KH_OK ||
		   (*outlen != KH_ESCROW_KEY_LEN && *outlen != KH_SHAMIR_REC_LEN)) {
		reason = KH_ESCROW_R_KEY;
	}
	kh_wipe(em, KH_RSA_MAX_LEN);
	if (reason != KH_ESCROW_R_NONE || *err != KH_OK) {
		kh_wipe(out, KH_SHAMIR_REC_LEN);
		*outlen = 0;
	}
	return reason;
}

/* The slot, as BUY LIST and a share's BUY FINISH show it (public: no secret in it). */
static kh_err put_slot(const struct kh_buy_slot *s, struct kh_wr *resp)
{
	uint8_t v[KH_ESCROW_SLOT_LEN];

	v[0] = s->state;
	v[1] = s->reason;
	memcpy(v + 2, s->purchase, KH_ESCROW_ID_LEN);
	memcpy(v + 2 + KH_ESCROW_ID_LEN, s->listing, KH_ESCROW_ID_LEN);
	kh_put_be32(v + 2 + 2 * KH_ESCROW_ID_LEN, s->escrow);
	return kh_tlv_put(resp, KH_ESCROW_T_SLOT, v, sizeof v);
}

/* Settle a slot: r (or its share) forgotten; delivered with K, or failed for reason. */
static void settle_slot(struct kh_buy_slot *s, uint8_t reason, const uint8_t k[static KH_ESCROW_KEY_LEN])
{
	kh_wipe(s->secret, sizeof s->secret);
	kh_wipe(s->x, sizeof s->x);
	s->t = s->n = s->index = 0;
	if (reason == KH_ESCROW_R_NONE) {
		s->state = SLOT_DELIVERED;
		memcpy(s->secret, k, KH_ESCROW_KEY_LEN);
	} else {
		s->state = SLOT_FAILED;
		s->reason = reason;
	}
}

static kh_err h_buy_finish(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct kh_escrow_listing l;
	struct kh_escrow_answer an;
	struct kh_escrow_header h;
	struct kh_shamir_rec rec;
	struct kh_buy_slot *s;
	uint8_t n[KH_RSA_MAX_LEN], bind[KH_SHA256_LEN], out[KH_SHAMIR_REC_LEN], reason;
	size_t nlen = 0, outlen = 0;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_ESCROW_T_MAX,
			     BIT(KH_ESCROW_T_LISTING) | BIT(KH_ESCROW_T_C) | BIT(KH_ESCROW_T_HEADER) |
				     BIT(KH_ESCROW_T_ANSWER))) != KH_OK)
		return r;
	if ((r = listing_key(&t[KH_ESCROW_T_LISTING], &t[KH_ESCROW_T_C], &l, n, &nlen)) != KH_OK ||
	    (r = kh_escrow_answer_parse(t[KH_ESCROW_T_ANSWER].v, t[KH_ESCROW_T_ANSWER].len, NULL, &an)) != KH_OK ||
	    (r = kh_escrow_header_parse(t[KH_ESCROW_T_HEADER].v, t[KH_ESCROW_T_HEADER].len, &h)) != KH_OK)
		return r;
	if (h.len != t[KH_ESCROW_T_HEADER].len || an.nlen != nlen)
		return KH_ERR_FORMAT;
	if (!(s = slot_find(m, an.purchase)))
		return KH_ERR_NOTFOUND;
	if (s->state != SLOT_PENDING)
		return KH_ERR_PURCHASE_STATE; /* settled: BUY NOTICE gives its notice again */
	/* the same listing, c and content as at BUY START, and an answer for that listing */
	if ((r = binding_of(m, &t[KH_ESCROW_T_LISTING], &t[KH_ESCROW_T_C], h.hash, bind)) != KH_OK)
		return r;
	if (!kh_ct_eq(bind, s->binding, sizeof bind) || !kh_ct_eq(an.listing, s->listing, KH_ESCROW_ID_LEN))
		return KH_ERR_AUTH;

	memset(&rec, 0, sizeof rec);
	reason = recover(m, s, n, nlen, t[KH_ESCROW_T_C].v, an.z, out, &outlen, &r);
	if (r != KH_OK)
		return r;
	if (reason == KH_ESCROW_R_NONE && outlen == KH_ESCROW_KEY_LEN) {
		if ((r = kh_escrow_header_check(&h, t[KH_ESCROW_T_HEADER].v, out)) == KH_ERR_AUTH)
			reason = KH_ESCROW_R_COMMIT;
		else if (r != KH_OK)
			goto out;
	} else if (reason == KH_ESCROW_R_NONE) {
		/* one share of a split key: for this listing, kept until BUY COMBINE */
		if (kh_shamir_rec_parse(out, outlen, &rec) != KH_OK || !kh_ct_eq(rec.id, s->listing, KH_ESCROW_ID_LEN)) {
			reason = KH_ESCROW_R_KEY;
		} else {
			kh_wipe(s->secret, sizeof s->secret);
			s->state = SLOT_SHARE;
			memcpy(s->binding, h.hash, sizeof s->binding);
			memcpy(s->secret, rec.s.y, sizeof s->secret);
			memcpy(s->x, rec.s.x, sizeof s->x);
			s->t = rec.t;
			s->n = rec.n;
			s->index = rec.index;
			m->dirty = 1;
			r = put_slot(s, resp);
			goto out;
		}
	}
	/* settled either way, and r forgotten: no later answer opens this purchase */
	settle_slot(s, reason, out);
	m->dirty = 1;
	r = put_settled(m, s, resp);
out:
	kh_wipe(out, sizeof out);
	kh_wipe(&rec, sizeof rec);
	return r;
}

/* ---- BUY COMBINE ---- */

/* The purchases a BUY COMBINE names: each holds a share of this content's key, none twice. */
static kh_err combine_slots(struct kh_module *m, const struct kh_tlv *pt, const uint8_t hh[static KH_SHA256_LEN],
			    struct kh_buy_slot **sl, size_t *np)
{
	if (!pt->len || pt->len % KH_ESCROW_ID_LEN || pt->len / KH_ESCROW_ID_LEN > KH_SHAMIR_MAX_N - 1)
		return KH_ERR_FORMAT;
	*np = pt->len / KH_ESCROW_ID_LEN;
	for (size_t i = 0; i < *np; i++) {
		if (!(sl[i] = slot_find(m, pt->v + i * KH_ESCROW_ID_LEN)))
			return KH_ERR_NOTFOUND;
		if (sl[i]->state != SLOT_SHARE)
			return KH_ERR_PURCHASE_STATE;
		if (!kh_ct_eq(sl[i]->binding, hh, KH_SHA256_LEN))
			return KH_ERR_AUTH; /* a share of other content */
		for (size_t j = 0; j < i; j++)
			if (sl[j] == sl[i])
				return KH_ERR_FORMAT;
	}
	return KH_OK;
}

/*
 * header, grant, purchases: our share opened, the purchases' shares added, K recovered and checked
 * against the header's commitment; then every purchase named settled the same way and its notice
 * answered, in the order named (and the licence once, when delivered). Too few shares, or a grant
 * we cannot unseal, being another device's or another content's, settle nothing: the buyer may still
 * buy from another escrow, or ask the seller again. Shares that do not fit together, or a key
 * that does not open the commitment, are the seller's fault: every purchase named fails (the
 * buyer is refunded), and no byte of the content was shown.
 */
static kh_err h_buy_combine(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	struct kh_escrow_header h;
	struct kh_shamir_rec dev;
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N];
	struct kh_buy_slot *sl[KH_SHAMIR_MAX_N - 1];
	uint8_t id[KH_ESCROW_ID_LEN], k[KH_ESCROW_KEY_LEN], reason = KH_ESCROW_R_NONE;
	size_t np = 0;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_ESCROW_T_MAX,
			     BIT(KH_ESCROW_T_HEADER) | BIT(KH_ESCROW_T_GRANT) | BIT(KH_ESCROW_T_PURCHASES))) != KH_OK)
		return r;
	if ((r = kh_escrow_header_parse(t[KH_ESCROW_T_HEADER].v, t[KH_ESCROW_T_HEADER].len, &h)) != KH_OK)
		return r;
	if (h.len != t[KH_ESCROW_T_HEADER].len)
		return KH_ERR_FORMAT;
	if ((r = combine_slots(m, &t[KH_ESCROW_T_PURCHASES], h.hash, sl, &np)) != KH_OK)
		return r;
	memset(&dev, 0, sizeof dev);
	memset(sh, 0, sizeof sh);
	memset(k, 0, sizeof k);
	kh_escrow_device_share_id(m->p.ua, id);
	if ((r = kh_shamir_share_open(m->p.pair_sk, m->p.pair_pk, h.hash, sizeof h.hash, t[KH_ESCROW_T_GRANT].v,
				      t[KH_ESCROW_T_GRANT].len, &dev)) != KH_OK)
		goto out;
	if (!kh_ct_eq(dev.id, id, sizeof id)) {
		r = KH_ERR_AUTH; /* sealed to us, but made for another device */
		goto out;
	}
	if (np + 1 < dev.t) {
		r = KH_ERR_SHARES; /* too few yet: nothing settles */
		goto out;
	}
	sh[0] = dev.s;
	for (size_t i = 0; i < np; i++) {
		if (sl[i]->t != dev.t || sl[i]->n != dev.n)
			reason = KH_ESCROW_R_SHARES; /* shares of two different splits */
		memcpy(sh[i + 1].x, sl[i]->x, KH_SHAMIR_LEN);
		memcpy(sh[i + 1].y, sl[i]->secret, KH_SHAMIR_LEN);
	}
	if (reason == KH_ESCROW_R_NONE) {
		if ((r = kh_shamir_combine(sh, np + 1, dev.t, k)) == KH_ERR_SHARES)
			reason = KH_ESCROW_R_SHARES;
		else if (r != KH_OK)
			goto out;
		else if ((r = kh_escrow_header_check(&h, t[KH_ESCROW_T_HEADER].v, k)) == KH_ERR_AUTH)
			reason = KH_ESCROW_R_COMMIT;
		else if (r != KH_OK)
			goto out;
	}
	for (size_t i = 0; i < np; i++)
		settle_slot(sl[i], reason, k);
	m->dirty = 1;
	r = KH_OK;
	for (size_t i = 0; i < np && r == KH_OK; i++)
		r = put_notice(m, sl[i], resp);
	if (r == KH_OK && reason == KH_ESCROW_R_NONE)
		r = put_licence(m, sl[0], resp);
out:
	kh_wipe(&dev, sizeof dev);
	kh_wipe(sh, sizeof sh);
	kh_wipe(k, sizeof k);
	return r;
}

/* ---- BUY NOTICE, BUY CANCEL, BUY LIST ---- */

/* purchase: a settled purchase's notice (and licence) again. */
static kh_err h_buy_notice(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_buy_slot *s;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK || (r = slot_named(m, a, &s)) != KH_OK)
		return r;
	return s->state == SLOT_PENDING || s->state == SLOT_SHARE ? KH_ERR_PURCHASE_STATE : put_settled(m, s, resp);
}

static kh_err h_buy_cancel(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_buy_slot *s;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK || (r = slot_named(m, a, &s)) != KH_OK)
		return r;
	if (s->state == SLOT_DELIVERED)
		return KH_ERR_PURCHASE_STATE;
	if (s->state == SLOT_PENDING || s->state == SLOT_SHARE) {
		/* a share alone shows nothing of the content: it may be given up too */
		settle_slot(s, KH_ESCROW_R_CANCELLED, s->secret);
		m->dirty = 1;
	}
	return put_notice(m, s, resp);
}

static kh_err h_buy_list(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	for (size_t i = 0; i < KH_BUY_SLOTS; i++) {
		const struct kh_buy_slot *s = &m->p.app.buy.slot[i];
		if (s->state != SLOT_EMPTY && (r = put_slot(s, resp)) != KH_OK)
			return r;
	}
	return KH_OK;
}

/* ---- CONTENT OPEN, CHUNK, CLOSE ---- */

static kh_err h_content_open(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_buy_vol *v = &m->vol.buy;
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	uint8_t key[KH_KEY_LEN], body[LIC_BODY_LEN];
	const struct kh_tlv *lt;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	content_close(m);
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_ESCROW_T_MAX, BIT(KH_ESCROW_T_LICENCE) | BIT(KH_ESCROW_T_HEADER))) !=
	    KH_OK)
		return r;
	lt = &t[KH_ESCROW_T_LICENCE];
	if ((r = kh_escrow_header_parse(t[KH_ESCROW_T_HEADER].v, t[KH_ESCROW_T_HEADER].len, &v->h)) != KH_OK)
		goto out;
	if (v->h.len != t[KH_ESCROW_T_HEADER].len || lt->len != KH_ESCROW_LICENCE_LEN ||
	    memcmp(lt->v, licence_magic, sizeof licence_magic) != 0) {
		r = KH_ERR_LICENCE;
		goto out;
	}
	if ((r = licence_key(m, key)) != KH_OK)
		goto out;
	r = kh_aead_open(key, lt->v + 4, licence_magic, sizeof licence_magic, lt->v + 4 + KH_NONCE_LEN,
			 LIC_BODY_LEN + KH_TAG_LEN, body);
	kh_wipe(key, sizeof key);
	if (r != KH_OK) {
		r = KH_ERR_LICENCE; /* another device's, or altered */
		goto out;
	}
	if ((r = kh_escrow_header_check(&v->h, t[KH_ESCROW_T_HEADER].v, body + 2 * KH_ESCROW_ID_LEN)) != KH_OK) {
		if (r == KH_ERR_AUTH)
			r = KH_ERR_MANIFEST; /* a licence for other content */
		goto out;
	}
	if ((r = kh_escrow_chunk_key(body + 2 * KH_ESCROW_ID_LEN, v->ck)) != KH_OK)
		goto out;
	v->open = 1;
	kh_wr_u64(resp, v->h.length);
	r = kh_wr_u64(resp, v->h.chunks);
out:
	kh_wipe(body, sizeof body);
	if (r != KH_OK)
		content_close(m);
	return r;
}

/* u32 i | chunk i: its plaintext. Chunks may come in any order (each carries its index and the
 * last one its flag under the tag); a refused chunk leaves the content open. */
static kh_err h_content_chunk(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_buy_vol *v = &m->vol.buy;
	size_t ctlen = a->lc >= 4 ? a->lc - 4 : 0;
	uint8_t *pt;
	kh_err r;

	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	if (!v->open)
		return KH_ERR_DIST_SESSION;
	if (a->lc < 4 + KH_TAG_LEN + 1)
		return KH_ERR_APDU_LEN;
	if ((r = kh_wr_reserve(resp, ctlen - KH_TAG_LEN, &pt)) != KH_OK)
		return r;
	if ((r = kh_escrow_chunk_open(v->ck, &v->h, kh_get_be32(a->data), a->data + 4, ctlen, pt)) != KH_OK) {
		kh_wipe(resp->p, resp->len);
		resp->len = 0;
	}
	return r;
}

static kh_err h_content_close(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	(void)resp;
	if ((r = need_buyer(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	content_close(m);
	return KH_OK;
}

/* ---- the section ---- */

static kh_err buy_save(const struct kh_persist *p, const struct kh_applet_live *l, struct kh_wr *w)
{
	const struct kh_buy_state *b = &p->app.buy;
	uint8_t v[KH_BUY_SLOT_LEN];
	kh_err r;

	(void)l;
	kh_tlv_put_u64(w, S_SEQ, b->seq);
	for (size_t i = 0; i < KH_BUY_SLOTS; i++) {
		const struct kh_buy_slot *s = &b->slot[i];
		uint8_t *q = v;
		if (s->state == SLOT_EMPTY)
			continue;
		*q++ = s->state;
		*q++ = s->reason;
		memcpy(q, s->purchase, KH_ESCROW_ID_LEN);
		q += KH_ESCROW_ID_LEN;
		memcpy(q, s->listing, KH_ESCROW_ID_LEN);
		q += KH_ESCROW_ID_LEN;
		kh_put_be32(q, s->escrow);
		q += 4;
		memcpy(q, s->binding, 32);
		q += 32;
		memcpy(q, s->secret, 32);
		q += 32;
		kh_put_be64(q, s->seq);
		q += 8;
		memcpy(q, s->x, 32);
		q += 32;
		*q++ = s->t;
		*q++ = s->n;
		*q = s->index;
		kh_tlv_put(w, S_SLOT, v, sizeof v);
	}
	r = w->err;
	kh_wipe(v, sizeof v);
	return r;
}

/* A slot of a version 1 section has no share fields, and no slot holds a share. */
static kh_err buy_slot_load(struct kh_buy_state *b, uint8_t version, const struct kh_tlv *t)
{
	const uint8_t *q = t->v;
	struct kh_buy_slot *s;
	size_t i;

	for (i = 0; i < KH_BUY_SLOTS && b->slot[i].state != SLOT_EMPTY; i++)
		;
	if (t->len != (version == 1 ? KH_BUY_SLOT_LEN_V1 : KH_BUY_SLOT_LEN) || i == KH_BUY_SLOTS ||
	    q[0] < SLOT_PENDING || q[0] > (version == 1 ? SLOT_FAILED : SLOT_SHARE))
		return KH_ERR_FORMAT;
	s = &b->slot[i];
	s->state = *q++;
	s->reason = *q++;
	memcpy(s->purchase, q, KH_ESCROW_ID_LEN);
	q += KH_ESCROW_ID_LEN;
	memcpy(s->listing, q, KH_ESCROW_ID_LEN);
	q += KH_ESCROW_ID_LEN;
	s->escrow = kh_get_be32(q);
	q += 4;
	memcpy(s->binding, q, 32);
	q += 32;
	memcpy(s->secret, q, 32);
	q += 32;
	s->seq = kh_get_be64(q);
	if (version == 1)
		return KH_OK;
	q += 8;
	memcpy(s->x, q, 32);
	q += 32;
	s->t = *q++;
	s->n = *q++;
	s->index = *q;
	return KH_OK;
}

static kh_err buy_load(struct kh_persist *p, struct kh_applet_live *l, uint8_t version, struct kh_rd *rd)
{
	struct kh_buy_state *b = &p->app.buy;
	struct kh_tlv t;
	int k;
	kh_err r = KH_OK;

	(void)l; /* version: 1 or 2, as the registry checked */
	while (r == KH_OK && (k = kh_tlv_next(rd, &t)) == 1) {
		if (t.tag == S_SEQ)
			r = kh_tlv_u64(&t, &b->seq);
		else if (t.tag == S_SLOT)
			r = buy_slot_load(b, version, &t);
		else
			r = KH_ERR_TLV_TAG;
	}
	return r == KH_OK && k < 0 ? k : r;
}

static void buy_reset(struct kh_persist *p, struct kh_applet_live *l)
{
	(void)l;
	kh_wipe(&p->app.buy, sizeof p->app.buy);
}

#define BUYER KH_ROLE_BIT(KH_ROLE_BUYER)

static const struct kh_applet_ins buy_ins[] = {
	{KH_INS_BUY_START, KH_INSF_PLAIN, BUYER, h_buy_start},
	{KH_INS_BUY_FINISH, KH_INSF_PLAIN, BUYER, h_buy_finish},
	{KH_INS_BUY_NOTICE, KH_INSF_PLAIN | KH_INSF_NOTX, BUYER, h_buy_notice},
	{KH_INS_BUY_CANCEL, KH_INSF_PLAIN, BUYER, h_buy_cancel},
	{KH_INS_BUY_LIST, KH_INSF_PLAIN | KH_INSF_NOTX, BUYER, h_buy_list},
	{KH_INS_BUY_COMBINE, KH_INSF_PLAIN, BUYER, h_buy_combine},
	{KH_INS_CONTENT_OPEN, KH_INSF_PLAIN | KH_INSF_NOTX, BUYER, h_content_open},
	{KH_INS_CONTENT_CHUNK, KH_INSF_PLAIN | KH_INSF_NOTX, BUYER, h_content_chunk},
	{KH_INS_CONTENT_CLOSE, KH_INSF_PLAIN | KH_INSF_NOTX, BUYER, h_content_close},
};

static const struct kh_applet_state buy_state = {
	.id = BUY_SECTION_ID,
	.version = BUY_SECTION_VERSION,
	.flags = 0, /* mandatory: a device that forgot a pending purchase's r would lose its money */
	.roles = BUYER,
	.max_len = KH_BUY_SECTION_MAX,
	.save = buy_save,
	.load = buy_load,
	.reset = buy_reset,
	.stored = NULL,
};

const struct kh_applet kh__applet_buy = {"buy", KH_APPLET_INS(buy_ins), &buy_state, content_close};
