/*
 * Bounded reader and writer over caller-owned byte arrays, and the TLV codec of the protocol design
 * (u8 tag, u16 length, value; big-endian). Both are allocation-free so the module zone can use
 * them. Errors are sticky: after the first failure every further call fails with the same
 * code and moves nothing, so a parser may check once at the end. A reader never reads past its
 * end; a writer never writes past its capacity.
 */
#ifndef KEYHOLE_BUF_H
#define KEYHOLE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_rd {
	const uint8_t *p;
	size_t n;   /* bytes left */
	kh_err err; /* sticky */
};

struct kh_wr {
	uint8_t *p;
	size_t cap;
	size_t len;
	kh_err err; /* sticky */
};

void kh_rd_init(struct kh_rd *r, const uint8_t *p, size_t n);
KH_WARN_UNUSED kh_err kh_rd_u8(struct kh_rd *r, uint8_t *v);
KH_WARN_UNUSED kh_err kh_rd_u16(struct kh_rd *r, uint16_t *v);
KH_WARN_UNUSED kh_err kh_rd_u32(struct kh_rd *r, uint32_t *v);
KH_WARN_UNUSED kh_err kh_rd_u64(struct kh_rd *r, uint64_t *v);
/* Copy exactly n bytes out. */
KH_WARN_UNUSED kh_err kh_rd_copy(struct kh_rd *r, uint8_t *dst, size_t n);
/* Point at the next n bytes without copying (the pointer is into the reader's input). */
KH_WARN_UNUSED kh_err kh_rd_ref(struct kh_rd *r, const uint8_t **p, size_t n);
/* Everything left. */
void kh_rd_rest(struct kh_rd *r, const uint8_t **p, size_t *n);
/* KH_OK when the input was consumed exactly; KH_ERR_TRAILING when bytes remain; or the sticky error. */
KH_WARN_UNUSED kh_err kh_rd_end(const struct kh_rd *r);

void kh_wr_init(struct kh_wr *w, uint8_t *p, size_t cap);
kh_err kh_wr_u8(struct kh_wr *w, uint8_t v);
kh_err kh_wr_u16(struct kh_wr *w, uint16_t v);
kh_err kh_wr_u32(struct kh_wr *w, uint32_t v);
kh_err kh_wr_u64(struct kh_wr *w, uint64_t v);
kh_err kh_wr_bytes(struct kh_wr *w, const uint8_t *src, size_t n);
/* Reserve n bytes to be filled by the caller; *p is NULL on failure. */
kh_err kh_wr_reserve(struct kh_wr *w, size_t n, uint8_t **p);

/* TLV: u8 tag, u16 length, value. */
struct kh_tlv {
	uint8_t tag;
	uint16_t len;
	const uint8_t *v;
};

kh_err kh_tlv_put(struct kh_wr *w, uint8_t tag, const uint8_t *v, size_t len);
kh_err kh_tlv_put_u8(struct kh_wr *w, uint8_t tag, uint8_t v);
kh_err kh_tlv_put_u32(struct kh_wr *w, uint8_t tag, uint32_t v);
kh_err kh_tlv_put_u64(struct kh_wr *w, uint8_t tag, uint64_t v);
/*
 * Read the next TLV. Returns 1 when one was read, 0 at the clean end of input, or a negative
 * error (KH_ERR_TRUNCATED when a header or value overruns the input).
 */
KH_WARN_UNUSED int kh_tlv_next(struct kh_rd *r, struct kh_tlv *t);
/*
 * A whole TLV list whose tags are 1..max (max < 32), each at most once: t[tag] (t has max + 1
 * entries, zeroed by the caller) gets each one found. KH_ERR_TLV_TAG for a tag outside 1..max,
 * KH_ERR_FORMAT for one given twice or for a tag of `need` (a bit per tag) that is missing.
 */
KH_WARN_UNUSED kh_err kh_tlv_take(const uint8_t *d, size_t n, struct kh_tlv *t, unsigned max, uint32_t need);
/* Value of an integer TLV: its length must be exactly the integer's size (KH_ERR_FORMAT otherwise). */
KH_WARN_UNUSED kh_err kh_tlv_u8(const struct kh_tlv *t, uint8_t *v);
KH_WARN_UNUSED kh_err kh_tlv_u32(const struct kh_tlv *t, uint32_t *v);
KH_WARN_UNUSED kh_err kh_tlv_u64(const struct kh_tlv *t, uint64_t *v);
/* Copy a value of exactly n bytes (KH_ERR_FORMAT otherwise). */
KH_WARN_UNUSED kh_err kh_tlv_fixed(const struct kh_tlv *t, uint8_t *dst, size_t n);

static inline void kh_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t kh_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void kh_put_be64(uint8_t *p, uint64_t v)
{
	kh_put_be32(p, (uint32_t)(v >> 32));
	kh_put_be32(p + 4, (uint32_t)v);
}

static inline uint64_t kh_get_be64(const uint8_t *p)
{
	return (uint64_t)kh_get_be32(p) << 32 | kh_get_be32(p + 4);
}

#endif
