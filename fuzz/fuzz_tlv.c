/*
 * libFuzzer harness: the TLV codec and the bounded reader/writer under it (src/base/buf.c),
 * which every module command body, the sealed module state and GET INFO answers go through.
 *
 * Pass 1 walks the input with kh_tlv_next until the clean end or an error: each value lies
 * inside the input and right after its header; the integer and fixed-size accessors agree with
 * the length; re-encoding the TLVs read so far with kh_tlv_put gives back exactly the bytes
 * they were read from (the whole input when the walk ended cleanly); an error is
 * KH_ERR_TRUNCATED and sticks (every later call returns it and moves nothing). The re-encoding
 * into a writer one byte too small must fail with a sticky KH_ERR_BUF without overrunning.
 *
 * Pass 2 drives a reader with a script taken from the input (first byte: script length, then
 * one opcode per byte, the rest is the data read) and checks every call against a model:
 * position, values, and the sticky error.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"

#include "fuzz_common.h"

#define MAX_IN (1u << 17)

static struct kh_rng_det rng;
static uint8_t enc[MAX_IN + 8];
static uint8_t scratch[1u << 16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char seed[] = "keyhole fuzz rng v1";

	(void)argc, (void)argv;
	kh_rng_det_init(&rng, (const uint8_t *)seed, sizeof seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	return 0;
}

/* The accessors of one TLV agree with its length. */
static void check_accessors(const struct kh_tlv *t)
{
	uint8_t v8 = 0, fixed[32];
	uint32_t v32 = 0;
	uint64_t v64 = 0;

	if (kh_tlv_u8(t, &v8) == KH_OK)
		CHECK(t->len == 1 && v8 == t->v[0]);
	else
		CHECK(t->len != 1);
	if (kh_tlv_u32(t, &v32) == KH_OK)
		CHECK(t->len == 4 && v32 == kh_get_be32(t->v));
	else
		CHECK(t->len != 4);
	if (kh_tlv_u64(t, &v64) == KH_OK)
		CHECK(t->len == 8 && v64 == kh_get_be64(t->v));
	else
		CHECK(t->len != 8);
	if (kh_tlv_fixed(t, fixed, sizeof fixed) == KH_OK)
		CHECK(t->len == 32 && memcmp(fixed, t->v, 32) == 0);
	else
		CHECK(t->len != 32);
}

/* After an error: every call fails with it and moves nothing. */
static void check_sticky(struct kh_rd *rd, kh_err e)
{
	const uint8_t *p0 = rd->p, *p = NULL;
	size_t n0 = rd->n, n = 1;
	struct kh_tlv t;
	uint8_t b8;
	uint16_t b16;
	uint32_t b32;
	uint64_t b64;

	CHECK(e < 0);
	CHECK(rd->err == e);
	CHECK(kh_tlv_next(rd, &t) == e);
	CHECK(kh_rd_u8(rd, &b8) == e && kh_rd_u16(rd, &b16) == e && kh_rd_u32(rd, &b32) == e &&
	      kh_rd_u64(rd, &b64) == e);
	CHECK(kh_rd_ref(rd, &p, 0) == e && kh_rd_copy(rd, &b8, 1) == e);
	CHECK(kh_rd_end(rd) == e);
	CHECK(rd->p == p0 && rd->n == n0);
	kh_rd_rest(rd, &p, &n);
	CHECK(n == 0 && rd->p == p0 && rd->n == n0 && rd->err == e);
}

static void walk(const uint8_t *data, size_t size)
{
	struct kh_rd rd;
	struct kh_wr w, small;
	struct kh_tlv t;
	size_t done = 0; /* bytes of the input covered by complete TLVs */
	int k;

	kh_rd_init(&rd, data, size);
	kh_wr_init(&w, enc, sizeof enc);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		CHECK(t.tag == data[done] && t.len == (uint16_t)(data[done + 1] << 8 | data[done + 2]));
		CHECK(t.v == data + done + 3);
		CHECK(t.v + t.len <= data + size);
		done += 3u + t.len;
		CHECK(rd.p == data + done && rd.n == size - done && rd.err == KH_OK);
		check_accessors(&t);
		CHECK(kh_tlv_put(&w, t.tag, t.v, t.len) == KH_OK);
	}
	/* The TLVs read re-encode to the bytes they came from. */
	CHECK(w.err == KH_OK && w.len == done && (done == 0 || memcmp(enc, data, done) == 0));
	if (k == 0) {
		CHECK(done == size && rd.n == 0 && rd.err == KH_OK);
		CHECK(kh_rd_end(&rd) == KH_OK);
		CHECK(kh_tlv_next(&rd, &t) == 0);
	} else {
		/* A header or value that overruns the input; the error sticks. */
		CHECK(k == KH_ERR_TRUNCATED);
		CHECK(size - done < 3 || size - done < 3u + (size_t)(data[done + 1] << 8 | data[done + 2]));
		check_sticky(&rd, k);
	}

	/* The same TLVs into a writer one byte too small: refused, sticky, within capacity. */
	if (done > 0) {
		size_t cap = done - 1, len;
		kh_err e = KH_OK;

		kh_wr_init(&small, enc, cap);
		kh_rd_init(&rd, data, done);
		while (kh_tlv_next(&rd, &t) == 1) {
			e = kh_tlv_put(&small, t.tag, t.v, t.len);
			CHECK(small.len <= cap);
		}
		CHECK(e == KH_ERR_BUF && small.err == KH_ERR_BUF);
		len = small.len;
		CHECK(kh_tlv_put_u8(&small, 1, 2) == KH_ERR_BUF && kh_tlv_put_u32(&small, 1, 2) == KH_ERR_BUF &&
		      kh_tlv_put_u64(&small, 1, 2) == KH_ERR_BUF && kh_wr_u8(&small, 0) == KH_ERR_BUF &&
		      kh_tlv_put(&small, 1, NULL, 0) == KH_ERR_BUF);
		CHECK(small.len == len);
	}
}

/* A reader driven by a script, against a model. */
static void script(const uint8_t *data, size_t size)
{
	const uint8_t *ops, *in, *p;
	size_t nops, pos = 0, n, len, want;
	struct kh_rd rd;
	struct kh_tlv t;
	kh_err sticky = KH_OK, e = KH_OK;
	uint8_t v8;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;
	size_t i;

	if (size < 1)
		return;
	nops = data[0] % 32;
	if (nops > size - 1)
		nops = size - 1;
	ops = data + 1;
	in = data + 1 + nops;
	len = size - 1 - nops;
	kh_rd_init(&rd, in, len);

	for (i = 0; i < nops; i++) {
		uint8_t op = ops[i];
		size_t left = len - pos;

		switch (op & 7) {
		case 0:
			want = 1;
			e = kh_rd_u8(&rd, &v8);
			if (e == KH_OK)
				CHECK(v8 == in[pos]);
			break;
		case 1:
			want = 2;
			e = kh_rd_u16(&rd, &v16);
			if (e == KH_OK)
				CHECK(v16 == (uint16_t)(in[pos] << 8 | in[pos + 1]));
			break;
		case 2:
			want = 4;
			e = kh_rd_u32(&rd, &v32);
			if (e == KH_OK)
				CHECK(v32 == kh_get_be32(in + pos));
			break;
		case 3:
			want = 8;
			e = kh_rd_u64(&rd, &v64);
			if (e == KH_OK)
				CHECK(v64 == kh_get_be64(in + pos));
			break;
		case 4:
			want = op >> 3;
			e = kh_rd_copy(&rd, scratch, want);
			if (e == KH_OK)
				CHECK(want == 0 || memcmp(scratch, in + pos, want) == 0);
			break;
		case 5:
			want = (size_t)(op >> 3) * 8;
			p = NULL;
			e = kh_rd_ref(&rd, &p, want);
			if (e == KH_OK)
				CHECK(p == in + pos);
			break;
		case 6: {
			int k = kh_tlv_next(&rd, &t);
			if (sticky != KH_OK) {
				CHECK(k == sticky);
				continue;
			}
			if (left == 0) {
				CHECK(k == 0);
				continue;
			}
			if (left >= 3 && left >= 3u + (size_t)(in[pos + 1] << 8 | in[pos + 2])) {
				CHECK(k == 1 && t.v == in + pos + 3);
				pos += 3u + t.len;
			} else {
				CHECK(k == KH_ERR_TRUNCATED);
				/* kh_tlv_next consumes the header parts it could read before failing. */
				sticky = KH_ERR_TRUNCATED;
				CHECK(rd.err == sticky);
				pos = len - rd.n;
			}
			CHECK(rd.n == len - pos);
			continue;
		}
		default:
			p = NULL;
			n = 99;
			kh_rd_rest(&rd, &p, &n);
			if (sticky != KH_OK) {
				CHECK(n == 0);
			} else {
				CHECK(p == in + pos && n == left);
				pos = len;
			}
			CHECK(rd.n == len - pos);
			continue;
		}
		if (sticky != KH_OK) {
			CHECK(e == sticky);
		} else if (want <= left) {
			CHECK(e == KH_OK);
			pos += want;
		} else {
			CHECK(e == KH_ERR_TRUNCATED);
			sticky = e;
		}
		CHECK(rd.n == len - pos && rd.err == sticky);
	}
	if (sticky != KH_OK)
		CHECK(kh_rd_end(&rd) == sticky);
	else
		CHECK(kh_rd_end(&rd) == (pos == len ? KH_OK : KH_ERR_TRAILING));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MAX_IN)
		return 0;
	walk(data, size);
	script(data, size);
	return 0;
}
