/*
 * The escrow protocol's records (include/keyhole/escrow.h, docs/protocols/escrow.md, seed 003):
 * listing, request, answer, notice, the content container's header and chunks, the offer. Base
 * zone and allocation-free: the buyer's device parses and signs with these as the escrow does.
 */
#include <string.h>

#include "keyhole/escrow.h"

#define VERSION 1
#define SIG_LABEL_MAX 32

static const uint8_t magic_listing[4] = {'K', 'H', 'L', 'S'};
static const uint8_t magic_request[4] = {'K', 'H', 'B', 'Q'};
static const uint8_t magic_answer[4] = {'K', 'H', 'B', 'A'};
static const uint8_t magic_notice[4] = {'K', 'H', 'B', 'N'};
static const uint8_t magic_header[4] = {'K', 'H', 'E', 'C'};
static const uint8_t magic_offer[4] = {'K', 'H', 'O', 'F'};

static const char label_listing[] = "keyhole escrow v1 listing";
static const char label_request[] = "keyhole escrow v1 request";
static const char label_answer[] = "keyhole escrow v1 answer";
static const char label_notice[] = "keyhole escrow v1 notice";
static const char label_commit[] = "keyhole escrow v1 commit";
static const char label_chunks[] = "keyhole escrow v1 chunks";

void kh_escrow_device_share_id(uint32_t device, uint8_t id[static KH_ESCROW_ID_LEN])
{
	memset(id, 0, KH_ESCROW_ID_LEN);
	memcpy(id, "KHDV", 4);
	kh_put_be32(id + KH_ESCROW_ID_LEN - 4, device);
}

int kh_escrow_currency_ok(const char *cur)
{
	for (size_t i = 0; i < KH_ESCROW_CUR_LEN; i++)
		if (cur[i] < 'A' || cur[i] > 'Z')
			return 0;
	return cur[KH_ESCROW_CUR_LEN] == '\0';
}

int kh_escrow_content_ok(const char *id)
{
	size_t n = 0;

	for (; id[n]; n++)
		if (n == KH_ESCROW_CONTENT_MAX || id[n] <= ' ' || id[n] > '~')
			return 0;
	return n > 0;
}

/* ---- signatures: Ed25519 over label | body ---- */

#define SIGNED_MAX (SIG_LABEL_MAX + KH_ESCROW_LISTING_MAX)
_Static_assert(KH_ESCROW_REQUEST_MAX <= KH_ESCROW_LISTING_MAX && KH_ESCROW_ANSWER_MAX <= KH_ESCROW_LISTING_MAX,
	       "one message buffer serves every signed record");

static kh_err sig_msg(const char *label, const uint8_t *body, size_t n, uint8_t *msg, size_t *mlen)
{
	size_t ll = strlen(label);

	if (ll > SIG_LABEL_MAX || n > KH_ESCROW_LISTING_MAX)
		return KH_ERR_INTERNAL;
	memcpy(msg, label, ll);
	memcpy(msg + ll, body, n);
	*mlen = ll + n;
	return KH_OK;
}

/* Sign the record written so far to w since `start`, appending the signature. */
static kh_err sign_tail(struct kh_wr *w, size_t start, const char *label, const uint8_t sk[static 32])
{
	uint8_t msg[SIGNED_MAX], *sig;
	size_t mlen;
	kh_err r;

	if (w->err != KH_OK)
		return w->err;
	if ((r = sig_msg(label, w->p + start, w->len - start, msg, &mlen)) != KH_OK ||
	    (r = kh_wr_reserve(w, KH_ED25519_SIG_LEN, &sig)) != KH_OK)
		return r;
	return kh_ed25519_sign(sk, msg, mlen, sig);
}

/* b is body | signature; check the signature when pk is given. */
static kh_err verify_tail(const uint8_t *b, size_t n, const char *label, const uint8_t *pk)
{
	uint8_t msg[SIGNED_MAX];
	size_t mlen;
	kh_err r;

	if (!pk)
		return KH_OK;
	if (n < KH_ED25519_SIG_LEN)
		return KH_ERR_TRUNCATED;
	if ((r = sig_msg(label, b, n - KH_ED25519_SIG_LEN, msg, &mlen)) != KH_OK)
		return r;
	return kh_ed25519_verify(pk, msg, mlen, b + n - KH_ED25519_SIG_LEN);
}

/* The magic and version at the start of a record. */
static kh_err rd_head(struct kh_rd *rd, const uint8_t magic[static 4])
{
	uint8_t m[4], v;

	if (kh_rd_copy(rd, m, 4) != KH_OK || kh_rd_u8(rd, &v) != KH_OK)
		return KH_ERR_TRUNCATED;
	if (memcmp(m, magic, 4) != 0)
		return KH_ERR_FORMAT;
	return v == VERSION ? KH_OK : KH_ERR_VERSION;
}

static void wr_head(struct kh_wr *w, const uint8_t magic[static 4])
{
	kh_wr_bytes(w, magic, 4);
	kh_wr_u8(w, VERSION);
}

static kh_err rd_currency(struct kh_rd *rd, char cur[static KH_ESCROW_CUR_LEN + 1])
{
	kh_err r = kh_rd_copy(rd, (uint8_t *)cur, KH_ESCROW_CUR_LEN);

	cur[KH_ESCROW_CUR_LEN] = '\0';
	return r != KH_OK ? r : kh_escrow_currency_ok(cur) ? KH_OK : KH_ERR_FORMAT;
}

/* u8 length | content id */
static kh_err rd_content(struct kh_rd *rd, char id[static KH_ESCROW_CONTENT_MAX + 1])
{
	uint8_t n;
	kh_err r;

	if ((r = kh_rd_u8(rd, &n)) != KH_OK)
		return r;
	if (n > KH_ESCROW_CONTENT_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh_rd_copy(rd, (uint8_t *)id, n)) != KH_OK)
		return r;
	id[n] = '\0';
	return strlen(id) == n && kh_escrow_content_ok(id) ? KH_OK : KH_ERR_FORMAT;
}

static kh_err wr_content(struct kh_wr *w, const char *id)
{
	if (!kh_escrow_content_ok(id))
		return KH_ERR_INVAL;
	kh_wr_u8(w, (uint8_t)strlen(id));
	return kh_wr_bytes(w, (const uint8_t *)id, strlen(id));
}

/* u16 nlen | nlen bytes, nlen an RSA size we take. */
static kh_err rd_bignum(struct kh_rd *rd, const uint8_t **p, size_t *nlen)
{
	uint16_t n;
	kh_err r;

	if ((r = kh_rd_u16(rd, &n)) != KH_OK)
		return r;
	if (n < KH_RSA_MIN_LEN || n > KH_RSA_MAX_LEN || n % 8)
		return KH_ERR_FORMAT;
	*nlen = n;
	return kh_rd_ref(rd, p, n);
}

static kh_err wr_bignum(struct kh_wr *w, const uint8_t *p, size_t nlen)
{
	if (nlen < KH_RSA_MIN_LEN || nlen > KH_RSA_MAX_LEN || nlen % 8)
		return KH_ERR_INVAL;
	kh_wr_u16(w, (uint16_t)nlen);
	return kh_wr_bytes(w, p, nlen);
}

/* The signed record's end: the signature, then nothing. */
static kh_err rd_sig_end(struct kh_rd *rd)
{
	const uint8_t *sig;
	kh_err r = kh_rd_ref(rd, &sig, KH_ED25519_SIG_LEN);

	return r != KH_OK ? r : kh_rd_end(rd);
}

static int price_ok(uint64_t p)
{
	return p >= 1 && p <= KH_ESCROW_PRICE_MAX;
}

/* ---- listing ---- */

kh_err kh_escrow_listing_sign(const struct kh_escrow_listing *l, const uint8_t sk[static 32], struct kh_wr *w)
{
	size_t start = w->len;
	kh_err r;

	if (!price_ok(l->price) || !kh_escrow_currency_ok(l->currency) || !l->deadline || !l->keylen ||
	    l->keylen > KH_RSA_SPKI_MAX)
		return KH_ERR_INVAL;
	wr_head(w, magic_listing);
	kh_wr_bytes(w, l->id, sizeof l->id);
	kh_wr_u32(w, l->escrow);
	kh_wr_u64(w, l->seller);
	kh_wr_u64(w, l->price);
	kh_wr_bytes(w, (const uint8_t *)l->currency, KH_ESCROW_CUR_LEN);
	kh_wr_u32(w, l->deadline);
	kh_wr_u64(w, l->created);
	if ((r = wr_content(w, l->content)) != KH_OK)
		return r;
	kh_wr_u16(w, (uint16_t)l->keylen);
	kh_wr_bytes(w, l->key, l->keylen);
	return sign_tail(w, start, label_listing, sk);
}

kh_err kh_escrow_listing_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_escrow_listing *l)
{
	struct kh_escrow_listing t;
	struct kh_rd rd;
	uint16_t klen;
	kh_err r;

	memset(&t, 0, sizeof t);
	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_listing)) != KH_OK)
		return r;
	if ((r = kh_rd_copy(&rd, t.id, sizeof t.id)) != KH_OK || (r = kh_rd_u32(&rd, &t.escrow)) != KH_OK ||
	    (r = kh_rd_u64(&rd, &t.seller)) != KH_OK || (r = kh_rd_u64(&rd, &t.price)) != KH_OK ||
	    (r = rd_currency(&rd, t.currency)) != KH_OK || (r = kh_rd_u32(&rd, &t.deadline)) != KH_OK ||
	    (r = kh_rd_u64(&rd, &t.created)) != KH_OK || (r = rd_content(&rd, t.content)) != KH_OK ||
	    (r = kh_rd_u16(&rd, &klen)) != KH_OK)
		return r;
	if (!price_ok(t.price) || !t.deadline || !klen || klen > KH_RSA_SPKI_MAX)
		return KH_ERR_FORMAT;
	t.keylen = klen;
	if ((r = kh_rd_ref(&rd, &t.key, t.keylen)) != KH_OK || (r = rd_sig_end(&rd)) != KH_OK ||
	    (r = verify_tail(b, n, label_listing, pk)) != KH_OK)
		return r;
	*l = t;
	return KH_OK;
}

/* ---- request ---- */

kh_err kh_escrow_request_sign(const struct kh_escrow_request *q, const uint8_t sk[static 32], struct kh_wr *w)
{
	size_t start = w->len;
	kh_err r;

	if (!price_ok(q->price) || !kh_escrow_currency_ok(q->currency))
		return KH_ERR_INVAL;
	wr_head(w, magic_request);
	kh_wr_bytes(w, q->purchase, sizeof q->purchase);
	kh_wr_bytes(w, q->listing, sizeof q->listing);
	kh_wr_u32(w, q->escrow);
	kh_wr_u64(w, q->price);
	kh_wr_bytes(w, (const uint8_t *)q->currency, KH_ESCROW_CUR_LEN);
	kh_wr_u32(w, q->device);
	if ((r = wr_bignum(w, q->cprime, q->nlen)) != KH_OK)
		return r;
	return sign_tail(w, start, label_request, sk);
}

kh_err kh_escrow_request_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_escrow_request *q)
{
	struct kh_escrow_request t;
	struct kh_rd rd;
	kh_err r;

	memset(&t, 0, sizeof t);
	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_request)) != KH_OK)
		return r;
	if ((r = kh_rd_copy(&rd, t.purchase, sizeof t.purchase)) != KH_OK ||
	    (r = kh_rd_copy(&rd, t.listing, sizeof t.listing)) != KH_OK || (r = kh_rd_u32(&rd, &t.escrow)) != KH_OK ||
	    (r = kh_rd_u64(&rd, &t.price)) != KH_OK || (r = rd_currency(&rd, t.currency)) != KH_OK ||
	    (r = kh_rd_u32(&rd, &t.device)) != KH_OK || (r = rd_bignum(&rd, &t.cprime, &t.nlen)) != KH_OK ||
	    (r = rd_sig_end(&rd)) != KH_OK)
		return r;
	if (!price_ok(t.price))
		return KH_ERR_FORMAT;
	if ((r = verify_tail(b, n, label_request, pk)) != KH_OK)
		return r;
	*q = t;
	return KH_OK;
}

/* ---- answer ---- */

kh_err kh_escrow_answer_sign(const struct kh_escrow_answer *a, const uint8_t sk[static 32], struct kh_wr *w)
{
	size_t start = w->len;
	kh_err r;

	wr_head(w, magic_answer);
	kh_wr_bytes(w, a->purchase, sizeof a->purchase);
	kh_wr_bytes(w, a->listing, sizeof a->listing);
	kh_wr_u32(w, a->escrow);
	kh_wr_bytes(w, a->request_hash, sizeof a->request_hash);
	kh_wr_u64(w, a->deadline);
	if ((r = wr_bignum(w, a->z, a->nlen)) != KH_OK)
		return r;
	return sign_tail(w, start, label_answer, sk);
}

kh_err kh_escrow_answer_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_escrow_answer *a)
{
	struct kh_escrow_answer t;
	struct kh_rd rd;
	kh_err r;

	memset(&t, 0, sizeof t);
	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_answer)) != KH_OK)
		return r;
	if ((r = kh_rd_copy(&rd, t.purchase, sizeof t.purchase)) != KH_OK ||
	    (r = kh_rd_copy(&rd, t.listing, sizeof t.listing)) != KH_OK || (r = kh_rd_u32(&rd, &t.escrow)) != KH_OK ||
	    (r = kh_rd_copy(&rd, t.request_hash, sizeof t.request_hash)) != KH_OK ||
	    (r = kh_rd_u64(&rd, &t.deadline)) != KH_OK || (r = rd_bignum(&rd, &t.z, &t.nlen)) != KH_OK ||
	    (r = rd_sig_end(&rd)) != KH_OK || (r = verify_tail(b, n, label_answer, pk)) != KH_OK)
		return r;
	*a = t;
	return KH_OK;
}

/* ---- notice ---- */

static int notice_ok(const struct kh_escrow_notice *t)
{
	if (t->outcome == KH_ESCROW_DELIVERED)
		return t->reason == KH_ESCROW_R_NONE;
	return t->outcome == KH_ESCROW_FAILED && t->reason >= KH_ESCROW_R_UNBLIND && t->reason <= KH_ESCROW_R_SHARES;
}

kh_err kh_escrow_notice_sign(const struct kh_escrow_notice *t, const uint8_t sk[static 32], struct kh_wr *w)
{
	size_t start = w->len;

	if (!notice_ok(t))
		return KH_ERR_INVAL;
	wr_head(w, magic_notice);
	kh_wr_bytes(w, t->purchase, sizeof t->purchase);
	kh_wr_bytes(w, t->listing, sizeof t->listing);
	kh_wr_u32(w, t->escrow);
	kh_wr_u32(w, t->device);
	kh_wr_u8(w, t->outcome);
	kh_wr_u8(w, t->reason);
	return sign_tail(w, start, label_notice, sk);
}

kh_err kh_escrow_notice_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_escrow_notice *t)
{
	struct kh_escrow_notice x;
	struct kh_rd rd;
	kh_err r;

	memset(&x, 0, sizeof x);
	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_notice)) != KH_OK)
		return r;
	if ((r = kh_rd_copy(&rd, x.purchase, sizeof x.purchase)) != KH_OK ||
	    (r = kh_rd_copy(&rd, x.listing, sizeof x.listing)) != KH_OK || (r = kh_rd_u32(&rd, &x.escrow)) != KH_OK ||
	    (r = kh_rd_u32(&rd, &x.device)) != KH_OK || (r = kh_rd_u8(&rd, &x.outcome)) != KH_OK ||
	    (r = kh_rd_u8(&rd, &x.reason)) != KH_OK || (r = rd_sig_end(&rd)) != KH_OK)
		return r;
	if (!notice_ok(&x))
		return KH_ERR_FORMAT;
	if ((r = verify_tail(b, n, label_notice, pk)) != KH_OK)
		return r;
	*t = x;
	return KH_OK;
}

/* ---- the content container ---- */

static kh_err commit_of(const uint8_t *hb, size_t upto, const uint8_t k[static KH_ESCROW_KEY_LEN],
			uint8_t out[static KH_SHA256_LEN])
{
	uint8_t salt[KH_SHA256_LEN];
	kh_err r = kh_sha256(hb, upto, salt);

	return r != KH_OK ? r
			  : kh_hkdf(k, KH_ESCROW_KEY_LEN, salt, sizeof salt, (const uint8_t *)label_commit,
				    sizeof label_commit - 1, out, KH_SHA256_LEN);
}

kh_err kh_escrow_header_make(const char *content, uint32_t chunk, uint64_t length,
			     const uint8_t k[static KH_ESCROW_KEY_LEN], struct kh_wr *w)
{
	size_t start = w->len;
	uint8_t *commit;
	kh_err r;

	if (!chunk || chunk > KH_ESCROW_CHUNK_MAX || !length || (length - 1) / chunk >= UINT32_MAX)
		return KH_ERR_INVAL;
	wr_head(w, magic_header);
	if ((r = wr_content(w, content)) != KH_OK)
		return r;
	kh_wr_u32(w, chunk);
	kh_wr_u64(w, length);
	if ((r = kh_wr_reserve(w, KH_SHA256_LEN, &commit)) != KH_OK)
		return r;
	return commit_of(w->p + start, w->len - start - KH_SHA256_LEN, k, commit);
}

kh_err kh_escrow_header_parse(const uint8_t *b, size_t n, struct kh_escrow_header *h)
{
	struct kh_escrow_header t;
	struct kh_rd rd;
	kh_err r;

	memset(&t, 0, sizeof t);
	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_header)) != KH_OK)
		return r;
	if ((r = rd_content(&rd, t.content)) != KH_OK || (r = kh_rd_u32(&rd, &t.chunk)) != KH_OK ||
	    (r = kh_rd_u64(&rd, &t.length)) != KH_OK || (r = kh_rd_copy(&rd, t.commit, sizeof t.commit)) != KH_OK)
		return r;
	if (!t.chunk || t.chunk > KH_ESCROW_CHUNK_MAX || !t.length || (t.length - 1) / t.chunk >= UINT32_MAX)
		return KH_ERR_FORMAT;
	t.chunks = (t.length - 1) / t.chunk + 1;
	t.len = n - rd.n;
	if ((r = kh_sha256(b, t.len, t.hash)) != KH_OK)
		return r;
	*h = t;
	return KH_OK;
}

kh_err kh_escrow_header_check(const struct kh_escrow_header *h, const uint8_t *hb,
			      const uint8_t k[static KH_ESCROW_KEY_LEN])
{
	uint8_t c[KH_SHA256_LEN];
	kh_err r = commit_of(hb, h->len - KH_SHA256_LEN, k, c);

	if (r == KH_OK && !kh_ct_eq(c, h->commit, sizeof c))
		r = KH_ERR_AUTH;
	kh_wipe(c, sizeof c);
	return r;
}

kh_err kh_escrow_chunk_key(const uint8_t k[static KH_ESCROW_KEY_LEN], uint8_t ck[static KH_KEY_LEN])
{
	return kh_hkdf(k, KH_ESCROW_KEY_LEN, NULL, 0, (const uint8_t *)label_chunks, sizeof label_chunks - 1, ck,
		       KH_KEY_LEN);
}

size_t kh_escrow_chunk_len(const struct kh_escrow_header *h, uint64_t i)
{
	if (i >= h->chunks)
		return 0;
	return i + 1 < h->chunks ? h->chunk : (size_t)(h->length - (h->chunks - 1) * h->chunk);
}

/* nonce 0^4 | u64 i; aad SHA-256(header) | u32 i | u8 last */
static void chunk_nonce_aad(const struct kh_escrow_header *h, uint64_t i, uint8_t nonce[static KH_NONCE_LEN],
			    uint8_t aad[static KH_SHA256_LEN + 5])
{
	memset(nonce, 0, 4);
	kh_put_be64(nonce + 4, i);
	memcpy(aad, h->hash, KH_SHA256_LEN);
	kh_put_be32(aad + KH_SHA256_LEN, (uint32_t)i);
	aad[KH_SHA256_LEN + 4] = i + 1 == h->chunks;
}

kh_err kh_escrow_chunk_seal(const uint8_t ck[static KH_KEY_LEN], const struct kh_escrow_header *h, uint64_t i,
			    const uint8_t *pt, size_t ptlen, uint8_t *ct)
{
	uint8_t nonce[KH_NONCE_LEN], aad[KH_SHA256_LEN + 5];

	if (i >= h->chunks || ptlen != kh_escrow_chunk_len(h, i))
		return KH_ERR_INVAL;
	chunk_nonce_aad(h, i, nonce, aad);
	return kh_aead_seal(ck, nonce, aad, sizeof aad, pt, ptlen, ct);
}

kh_err kh_escrow_chunk_open(const uint8_t ck[static KH_KEY_LEN], const struct kh_escrow_header *h, uint64_t i,
			    const uint8_t *ct, size_t ctlen, uint8_t *pt)
{
	uint8_t nonce[KH_NONCE_LEN], aad[KH_SHA256_LEN + 5];

	if (i >= h->chunks || ctlen != kh_escrow_chunk_len(h, i) + KH_TAG_LEN)
		return KH_ERR_CHUNK;
	chunk_nonce_aad(h, i, nonce, aad);
	return kh_aead_open(ck, nonce, aad, sizeof aad, ct, ctlen, pt) == KH_OK ? KH_OK : KH_ERR_CHUNK;
}

/* ---- the offer ---- */

kh_err kh_escrow_offer_make(const uint8_t *listing, size_t llen, const uint8_t *c, size_t clen, struct kh_wr *w)
{
	if (!llen || llen > KH_ESCROW_LISTING_MAX)
		return KH_ERR_INVAL;
	wr_head(w, magic_offer);
	kh_wr_u16(w, (uint16_t)llen);
	kh_wr_bytes(w, listing, llen);
	return wr_bignum(w, c, clen);
}

kh_err kh_escrow_offer_parse(const uint8_t *b, size_t n, const uint8_t **listing, size_t *llen, const uint8_t **c,
			     size_t *clen)
{
	struct kh_rd rd;
	uint16_t l;
	kh_err r;

	kh_rd_init(&rd, b, n);
	if ((r = rd_head(&rd, magic_offer)) != KH_OK || (r = kh_rd_u16(&rd, &l)) != KH_OK)
		return r;
	if (!l || l > KH_ESCROW_LISTING_MAX)
		return KH_ERR_FORMAT;
	*llen = l;
	if ((r = kh_rd_ref(&rd, listing, l)) != KH_OK || (r = rd_bignum(&rd, c, clen)) != KH_OK)
		return r;
	return kh_rd_end(&rd);
}
