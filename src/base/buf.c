/*
 * Bounded reader/writer and TLV codec (include/keyhole/buf.h). The first failure sticks so
 * that a half-parsed message can never be mistaken for a whole one.
 */
#include <string.h>

#include "keyhole/buf.h"

void kh_rd_init(struct kh_rd *r, const uint8_t *p, size_t n)
{
	r->p = p;
	r->n = p ? n : 0;
	r->err = KH_OK;
}

kh_err kh_rd_ref(struct kh_rd *r, const uint8_t **p, size_t n)
{
	if (r->err != KH_OK)
		return r->err;
	if (n > r->n)
		return r->err = KH_ERR_TRUNCATED;
	*p = r->p;
	r->p += n;
	r->n -= n;
	return KH_OK;
}

kh_err kh_rd_copy(struct kh_rd *r, uint8_t *dst, size_t n)
{
	const uint8_t *p;
	kh_err e = kh_rd_ref(r, &p, n);
	if (e == KH_OK && n)
		memcpy(dst, p, n);
	return e;
}

kh_err kh_rd_u8(struct kh_rd *r, uint8_t *v)
{
	const uint8_t *p;
	kh_err e = kh_rd_ref(r, &p, 1);
	if (e == KH_OK)
		*v = p[0];
	return e;
}

kh_err kh_rd_u16(struct kh_rd *r, uint16_t *v)
{
	const uint8_t *p;
	kh_err e = kh_rd_ref(r, &p, 2);
	if (e == KH_OK)
		*v = (uint16_t)(p[0] << 8 | p[1]);
	return e;
}

kh_err kh_rd_u32(struct kh_rd *r, uint32_t *v)
{
	const uint8_t *p;
	kh_err e = kh_rd_ref(r, &p, 4);
	if (e == KH_OK)
		*v = kh_get_be32(p);
	return e;
}

kh_err kh_rd_u64(struct kh_rd *r, uint64_t *v)
{
	const uint8_t *p;
	kh_err e = kh_rd_ref(r, &p, 8);
	if (e == KH_OK)
		*v = kh_get_be64(p);
	return e;
}

void kh_rd_rest(struct kh_rd *r, const uint8_t **p, size_t *n)
{
	*p = r->p;
	*n = r->err == KH_OK ? r->n : 0;
	r->p += *n;
	r->n -= *n;
}

kh_err kh_rd_end(const struct kh_rd *r)
{
	if (r->err != KH_OK)
		return r->err;
	return r->n ? KH_ERR_TRAILING : KH_OK;
}

void kh_wr_init(struct kh_wr *w, uint8_t *p, size_t cap)
{
	w->p = p;
	w->cap = p ? cap : 0;
	w->len = 0;
	w->err = KH_OK;
}

kh_err kh_wr_reserve(struct kh_wr *w, size_t n, uint8_t **p)
{
	*p = NULL;
	if (w->err != KH_OK)
		return w->err;
	if (n > w->cap - w->len)
		return w->err = KH_ERR_BUF;
	*p = w->p + w->len;
	w->len += n;
	return KH_OK;
}

kh_err kh_wr_bytes(struct kh_wr *w, const uint8_t *src, size_t n)
{
	uint8_t *p;
	kh_err e = kh_wr_reserve(w, n, &p);
	if (e == KH_OK && n)
		memcpy(p, src, n);
	return e;
}

kh_err kh_wr_u8(struct kh_wr *w, uint8_t v)
{
	return kh_wr_bytes(w, &v, 1);
}

kh_err kh_wr_u16(struct kh_wr *w, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	return kh_wr_bytes(w, b, 2);
}

kh_err kh_wr_u32(struct kh_wr *w, uint32_t v)
{
	uint8_t b[4];
	kh_put_be32(b, v);
	return kh_wr_bytes(w, b, 4);
}

kh_err kh_wr_u64(struct kh_wr *w, uint64_t v)
{
	uint8_t b[8];
	kh_put_be64(b, v);
	return kh_wr_bytes(w, b, 8);
}

kh_err kh_tlv_put(struct kh_wr *w, uint8_t tag, const uint8_t *v, size_t len)
{
	if (w->err != KH_OK)
		return w->err;
	if (len > UINT16_MAX)
		return w->err = KH_ERR_TOO_LARGE;
	kh_wr_u8(w, tag);
	kh_wr_u16(w, (uint16_t)len);
	return kh_wr_bytes(w, v, len);
}

kh_err kh_tlv_put_u8(struct kh_wr *w, uint8_t tag, uint8_t v)
{
	return kh_tlv_put(w, tag, &v, 1);
}

kh_err kh_tlv_put_u32(struct kh_wr *w, uint8_t tag, uint32_t v)
{
	uint8_t b[4];
	kh_put_be32(b, v);
	return kh_tlv_put(w, tag, b, 4);
}

kh_err kh_tlv_put_u64(struct kh_wr *w, uint8_t tag, uint64_t v)
{
	uint8_t b[8];
	kh_put_be64(b, v);
	return kh_tlv_put(w, tag, b, 8);
}

int kh_tlv_next(struct kh_rd *r, struct kh_tlv *t)
{
	if (r->err != KH_OK)
		return r->err;
	if (r->n == 0)
		return 0;
	if (kh_rd_u8(r, &t->tag) != KH_OK || kh_rd_u16(r, &t->len) != KH_OK ||
	    kh_rd_ref(r, &t->v, t->len) != KH_OK)
		return r->err;
	return 1;
}

kh_err kh_tlv_fixed(const struct kh_tlv *t, uint8_t *dst, size_t n)
{
	if (t->len != n)
		return KH_ERR_FORMAT;
	if (n)
		memcpy(dst, t->v, n);
	return KH_OK;
}

kh_err kh_tlv_u8(const struct kh_tlv *t, uint8_t *v)
{
	return kh_tlv_fixed(t, v, 1);
}

kh_err kh_tlv_u32(const struct kh_tlv *t, uint32_t *v)
{
	if (t->len != 4)
		return KH_ERR_FORMAT;
	*v = kh_get_be32(t->v);
	return KH_OK;
}

kh_err kh_tlv_u64(const struct kh_tlv *t, uint64_t *v)
{
	if (t->len != 8)
		return KH_ERR_FORMAT;
	*v = kh_get_be64(t->v);
	return KH_OK;
}

kh_err kh_tlv_take(const uint8_t *d, size_t n, struct kh_tlv *t, unsigned max, uint32_t need)
{
	struct kh_rd rd;
	struct kh_tlv x;
	uint32_t seen = 0;
	int k;

	if (max == 0 || max >= 32)
		return KH_ERR_INVAL;
	kh_rd_init(&rd, d, n);
	while ((k = kh_tlv_next(&rd, &x)) == 1) {
		if (x.tag == 0 || x.tag > max)
			return KH_ERR_TLV_TAG;
		if (seen & (1u << x.tag))
			return KH_ERR_FORMAT;
		seen |= 1u << x.tag;
		t[x.tag] = x;
	}
	if (k < 0)
		return k;
	return (seen & need) == need ? KH_OK : KH_ERR_FORMAT;
}
