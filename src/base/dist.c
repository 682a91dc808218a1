/*
 * Program distribution (include/keyhole/dist.h, docs/protocols/distribution.md): what the
 * server and the processor sign, the key wrap, the chunks and their tag chain. Nothing here
 * allocates; plaintext and keys are wiped on every path.
 */
#include <string.h>

#include "keyhole/dist.h"

static const char label_auth[] = "keyhole dist v1 auth";
static const char label_resp[] = "keyhole dist v1 resp";
static const char label_key[] = "keyhole dist v1 key";
static const char label_program[] = "keyhole dist v1 program";
static const char label_chunks[] = "keyhole dist v1 chunks";
static const char label_chunk[] = "keyhole dist v1 chunk";
static const char info_wrap[] = "keyhole dist v1 key";

#define LABEL(w, l) kh_wr_bytes((w), (const uint8_t *)(l), sizeof(l) - 1)
#define BINDING_LEN (4 + 4 + KH_SHA256_LEN + 4 + KH_SHA256_LEN)
/* label | u32 program | u32 version | H(manifest) | u32 i | u8 last */
#define CHUNK_AAD_LEN (sizeof label_chunk - 1 + 4 + 4 + KH_SHA256_LEN + 4 + 1)

kh_err kh_dist_cert_hash(const uint8_t *der, size_t len, uint8_t out[static KH_SHA256_LEN])
{
	if (!der || !len)
		return KH_ERR_INVAL;
	return kh_sha256(der, len, out);
}

static void binding(struct kh_wr *w, const struct kh_dist_prog *p)
{
	kh_wr_u32(w, p->program);
	kh_wr_u32(w, p->version);
	kh_wr_bytes(w, p->manifest_hash, sizeof p->manifest_hash);
	kh_wr_u32(w, p->chunks);
	kh_wr_bytes(w, p->he, sizeof p->he);
}

kh_err kh_dist_auth_msg(const uint8_t rc[static KH_DIST_NONCE_LEN], const uint8_t rs[static KH_DIST_NONCE_LEN],
			const uint8_t fp[static KH_SHA256_LEN], const uint8_t pair_hash[static KH_SHA256_LEN],
			struct kh_wr *w)
{
	LABEL(w, label_auth);
	kh_wr_bytes(w, rc, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, rs, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, fp, KH_SHA256_LEN);
	kh_wr_bytes(w, pair_hash, KH_SHA256_LEN);
	return w->err;
}

kh_err kh_dist_resp_msg(const uint8_t rs[static KH_DIST_NONCE_LEN], const uint8_t rc[static KH_DIST_NONCE_LEN],
			const uint8_t server_hash[static KH_SHA256_LEN], struct kh_wr *w)
{
	LABEL(w, label_resp);
	kh_wr_bytes(w, rs, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, rc, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, server_hash, KH_SHA256_LEN);
	return w->err;
}

kh_err kh_dist_key_msg(const uint8_t rc[static KH_DIST_NONCE_LEN], const uint8_t rs[static KH_DIST_NONCE_LEN],
		       const uint8_t fp[static KH_SHA256_LEN], const struct kh_dist_prog *p,
		       const uint8_t wrapped[static KH_DIST_WRAP_LEN], struct kh_wr *w)
{
	LABEL(w, label_key);
	kh_wr_bytes(w, rc, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, rs, KH_DIST_NONCE_LEN);
	kh_wr_bytes(w, fp, KH_SHA256_LEN);
	binding(w, p);
	kh_wr_bytes(w, wrapped, KH_DIST_WRAP_LEN);
	return w->err;
}

kh_err kh_dist_program_msg(const uint8_t fp[static KH_SHA256_LEN], const struct kh_dist_prog *p,
			   const uint8_t receipt[static KH_DIST_RECEIPT_LEN], struct kh_wr *w)
{
	LABEL(w, label_program);
	kh_wr_bytes(w, fp, KH_SHA256_LEN);
	binding(w, p);
	kh_wr_bytes(w, receipt, KH_DIST_RECEIPT_LEN);
	return w->err;
}

/* HPKE aad of the wrap: u32 program | u32 version | H_E. */
static void wrap_aad(const struct kh_dist_prog *p, uint8_t aad[static 8 + KH_SHA256_LEN])
{
	kh_put_be32(aad, p->program);
	kh_put_be32(aad + 4, p->version);
	memcpy(aad + 8, p->he, KH_SHA256_LEN);
}

kh_err kh_dist_wrap(const uint8_t pair_pk[static KH_X25519_LEN], const struct kh_dist_prog *p,
		    const uint8_t kx[static KH_KEY_LEN], uint8_t wrapped[static KH_DIST_WRAP_LEN])
{
	uint8_t aad[8 + KH_SHA256_LEN];

	wrap_aad(p, aad);
	return kh_hpke_seal_base(pair_pk, (const uint8_t *)info_wrap, sizeof info_wrap - 1, aad, sizeof aad, kx,
				 KH_KEY_LEN, wrapped, wrapped + KH_HPKE_ENC_LEN);
}

kh_err kh_dist_unwrap(const uint8_t pair_sk[static KH_X25519_LEN], const struct kh_dist_prog *p,
		      const uint8_t wrapped[static KH_DIST_WRAP_LEN], uint8_t kx[static KH_KEY_LEN])
{
	uint8_t aad[8 + KH_SHA256_LEN];
	kh_err r;

	wrap_aad(p, aad);
	r = kh_hpke_open_base(pair_sk, wrapped, (const uint8_t *)info_wrap, sizeof info_wrap - 1, aad, sizeof aad,
			      wrapped + KH_HPKE_ENC_LEN, KH_KEY_LEN + KH_TAG_LEN, kx);
	if (r != KH_OK)
		kh_wipe(kx, KH_KEY_LEN);
	return r;
}

kh_err kh_dist_chain_init(const struct kh_dist_prog *p, uint8_t h[static KH_SHA256_LEN])
{
	uint8_t b[sizeof label_chunks - 1 + 4 + 4 + KH_SHA256_LEN + 4];
	struct kh_wr w;

	kh_wr_init(&w, b, sizeof b);
	LABEL(&w, label_chunks);
	kh_wr_u32(&w, p->program);
	kh_wr_u32(&w, p->version);
	kh_wr_bytes(&w, p->manifest_hash, KH_SHA256_LEN);
	kh_wr_u32(&w, p->chunks);
	if (w.err != KH_OK)
		return w.err;
	return kh_sha256(b, w.len, h);
}

kh_err kh_dist_chain_step(uint8_t h[static KH_SHA256_LEN], const uint8_t tag[static KH_TAG_LEN])
{
	uint8_t b[KH_SHA256_LEN + KH_TAG_LEN];

	memcpy(b, h, KH_SHA256_LEN);
	memcpy(b + KH_SHA256_LEN, tag, KH_TAG_LEN);
	return kh_sha256(b, sizeof b, h);
}

/* Nonce 0^4 | u32 i | u32 last, and the aad, of chunk i; KH_ERR_FORMAT when ptlen is wrong for it. */
static kh_err chunk_frame(const struct kh_dist_prog *p, uint32_t i, size_t ptlen, uint8_t nonce[static KH_NONCE_LEN],
			  uint8_t aad[static CHUNK_AAD_LEN])
{
	int last;
	struct kh_wr w;

	if (!p->chunks || p->chunks > KH_DIST_CHUNKS_MAX || i >= p->chunks)
		return KH_ERR_FORMAT;
	last = i == p->chunks - 1;
	if (ptlen == 0 || ptlen > KH_DIST_CHUNK_MAX || (!last && ptlen != KH_DIST_CHUNK_MAX))
		return KH_ERR_FORMAT;
	memset(nonce, 0, 4);
	kh_put_be32(nonce + 4, i);
	kh_put_be32(nonce + 8, (uint32_t)last);
	kh_wr_init(&w, aad, CHUNK_AAD_LEN);
	LABEL(&w, label_chunk);
	kh_wr_u32(&w, p->program);
	kh_wr_u32(&w, p->version);
	kh_wr_bytes(&w, p->manifest_hash, KH_SHA256_LEN);
	kh_wr_u32(&w, i);
	kh_wr_u8(&w, (uint8_t)last);
	return w.err;
}

kh_err kh_dist_chunk_seal(const uint8_t kx[static KH_KEY_LEN], const struct kh_dist_prog *p, uint32_t i,
			  const uint8_t *pt, size_t ptlen, uint8_t *ct)
{
	uint8_t nonce[KH_NONCE_LEN], aad[CHUNK_AAD_LEN];
	kh_err r;

	if ((r = chunk_frame(p, i, ptlen, nonce, aad)) != KH_OK)
		return r;
	return kh_aead_seal(kx, nonce, aad, sizeof aad, pt, ptlen, ct);
}

kh_err kh_dist_chunk_open(const uint8_t kx[static KH_KEY_LEN], const struct kh_dist_prog *p, uint32_t i,
			  const uint8_t *ct, size_t ctlen, uint8_t *pt)
{
	uint8_t nonce[KH_NONCE_LEN], aad[CHUNK_AAD_LEN];
	kh_err r;

	if (ctlen <= KH_TAG_LEN)
		return KH_ERR_FORMAT;
	if ((r = chunk_frame(p, i, ctlen - KH_TAG_LEN, nonce, aad)) != KH_OK)
		return r;
	return kh_aead_open(kx, nonce, aad, sizeof aad, ct, ctlen, pt);
}

/* ---- receipts ---- */

static const char label_receipt[] = "keyhole dist v1 receipt";
static const uint8_t receipt_magic[4] = {'K', 'H', 'R', 'C'};

/* What the server signs: the label, then the receipt's body. */
static kh_err receipt_msg(const uint8_t body[static KH_DIST_RECEIPT_BODY_LEN],
			  uint8_t msg[static sizeof label_receipt - 1 + KH_DIST_RECEIPT_BODY_LEN])
{
	memcpy(msg, label_receipt, sizeof label_receipt - 1);
	memcpy(msg + sizeof label_receipt - 1, body, KH_DIST_RECEIPT_BODY_LEN);
	return KH_OK;
}

kh_err kh_dist_receipt_sign(const struct kh_dist_receipt *r, const uint8_t sk[static KH_ED25519_SK_LEN],
			    uint8_t out[static KH_DIST_RECEIPT_BYTES])
{
	uint8_t msg[sizeof label_receipt - 1 + KH_DIST_RECEIPT_BODY_LEN];
	struct kh_wr w;
	kh_err e;

	kh_wr_init(&w, out, KH_DIST_RECEIPT_BODY_LEN);
	kh_wr_bytes(&w, receipt_magic, sizeof receipt_magic);
	kh_wr_u8(&w, KH_DIST_RECEIPT_VERSION);
	kh_wr_bytes(&w, r->id, sizeof r->id);
	kh_wr_u64(&w, r->account);
	kh_wr_u32(&w, r->program);
	kh_wr_u32(&w, r->version);
	kh_wr_bytes(&w, r->fp, sizeof r->fp);
	kh_wr_u32(&w, r->price);
	kh_wr_u64(&w, r->time);
	kh_wr_u32(&w, r->server);
	if (w.err != KH_OK || w.len != KH_DIST_RECEIPT_BODY_LEN)
		return KH_ERR_INTERNAL;
	if ((e = receipt_msg(out, msg)) != KH_OK)
		return e;
	return kh_ed25519_sign(sk, msg, sizeof msg, out + KH_DIST_RECEIPT_BODY_LEN);
}

kh_err kh_dist_receipt_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_dist_receipt *r)
{
	uint8_t msg[sizeof label_receipt - 1 + KH_DIST_RECEIPT_BODY_LEN];
	struct kh_dist_receipt t;
	struct kh_rd rd;
	uint8_t version;
	kh_err e;

	if (!b || n != KH_DIST_RECEIPT_BYTES || memcmp(b, receipt_magic, sizeof receipt_magic) != 0)
		return KH_ERR_FORMAT;
	kh_rd_init(&rd, b + sizeof receipt_magic, KH_DIST_RECEIPT_BODY_LEN - sizeof receipt_magic);
	if ((e = kh_rd_u8(&rd, &version)) != KH_OK)
		return KH_ERR_FORMAT;
	if (version != KH_DIST_RECEIPT_VERSION)
		return KH_ERR_VERSION;
	if (kh_rd_copy(&rd, t.id, sizeof t.id) != KH_OK || kh_rd_u64(&rd, &t.account) != KH_OK ||
	    kh_rd_u32(&rd, &t.program) != KH_OK || kh_rd_u32(&rd, &t.version) != KH_OK ||
	    kh_rd_copy(&rd, t.fp, sizeof t.fp) != KH_OK || kh_rd_u32(&rd, &t.price) != KH_OK ||
	    kh_rd_u64(&rd, &t.time) != KH_OK || kh_rd_u32(&rd, &t.server) != KH_OK || kh_rd_end(&rd) != KH_OK)
		return KH_ERR_FORMAT;
	if (pk) {
		if ((e = receipt_msg(b, msg)) != KH_OK)
			return e;
		if (kh_ed25519_verify(pk, msg, sizeof msg, b + KH_DIST_RECEIPT_BODY_LEN) != KH_OK)
			return KH_ERR_DIST_SIGNATURE;
	}
	*r = t;
	return KH_OK;
}
