/*
 * libFuzzer harness: the vpcd framing of `card serve --vpcd` (src/device/vpcd.c). The first
 * byte sets how the rest arrives (1 to 256 bytes per recv); the rest is the stream from the
 * reader driver. It is taken apart twice, whole and arriving piece by piece into a buffer the
 * size of the card side's, and both give the same messages and the same final error. Every
 * message framed again is the bytes it was taken from; a one-byte payload is exactly a control
 * message; an error is only TRUNCATED (more to come), FORMAT (zero length) or TOO_LARGE. The
 * ATR answered for each control byte as a role is 16 bytes, TS 3B, T=1, with a good TCK.
 */
#include <string.h>

#include "device/vpcd.h"
#include "keyhole/apdu.h"

#include "fuzz_common.h"

#define MAX_MSGS 4096

struct seen {
	size_t n, off[MAX_MSGS], len[MAX_MSGS];
	kh_err end;
};

static uint8_t inbuf[2 + KH_APDU_MAX_CMD], reframed[2 + KH_APDU_MAX_CMD];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

static void check_msg(const uint8_t *at, const struct kh_vpcd_msg *m, size_t used)
{
	uint8_t atr[KH_VPCD_ATR_LEN];
	size_t len = used - 2;

	CHECK(used >= 3 && used <= 2 + KH_APDU_MAX_CMD);
	CHECK(m->is_ctrl == (len == 1));
	if (m->is_ctrl) {
		CHECK(m->ctrl == at[2] && !m->apdu && !m->apdu_len);
		kh_vpcd_atr(m->ctrl, atr);
		CHECK(atr[0] == 0x3B && (atr[1] & 0x0F) == KH_VPCD_ATR_LEN - 4 && atr[2] == 0x01);
		CHECK(kh_vpcd_atr_tck_ok(atr, sizeof atr));
		CHECK(kh_vpcd_frame(reframed, sizeof reframed, &m->ctrl, 1) == used);
	} else {
		CHECK(m->apdu == at + 2 && m->apdu_len == len);
		CHECK(kh_vpcd_frame(reframed, sizeof reframed, m->apdu, m->apdu_len) == used);
		CHECK(kh_vpcd_frame(reframed, used - 1, m->apdu, m->apdu_len) == 0);
	}
	CHECK(memcmp(reframed, at, used) == 0);
}

/* The whole stream at once. */
static void whole(const uint8_t *d, size_t n, struct seen *s)
{
	struct kh_vpcd_msg m;
	size_t off = 0, used = 0;

	s->n = 0;
	while ((s->end = kh_vpcd_take(d + off, n - off, KH_APDU_MAX_CMD, &m, &used)) == KH_OK && s->n < MAX_MSGS) {
		check_msg(d + off, &m, used);
		s->off[s->n] = off;
		s->len[s->n++] = used;
		off += used;
	}
	CHECK(s->end == KH_OK || s->end == KH_ERR_TRUNCATED || s->end == KH_ERR_FORMAT || s->end == KH_ERR_TOO_LARGE);
}

/* The same stream arriving step bytes at a time into the card side's buffer: the same messages. */
static void pieces(const uint8_t *d, size_t n, size_t step, const struct seen *s)
{
	struct kh_vpcd_msg m;
	size_t off = 0, have = 0, k = 0, used;
	kh_err r = KH_ERR_TRUNCATED;

	while (off < n && k < s->n) {
		size_t take = n - off < step ? n - off : step;
		if (take > sizeof inbuf - have)
			take = sizeof inbuf - have;
		memcpy(inbuf + have, d + off, take);
		have += take;
		off += take;
		while (k < s->n && (r = kh_vpcd_take(inbuf, have, KH_APDU_MAX_CMD, &m, &used)) == KH_OK) {
			CHECK(used == s->len[k] && memcmp(inbuf, d + s->off[k], used) == 0);
			memmove(inbuf, inbuf + used, have - used);
			have -= used;
			k++;
		}
		if (r != KH_OK && r != KH_ERR_TRUNCATED)
			break;
	}
	CHECK(k == s->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct seen s;

	if (size < 1)
		return 0;
	whole(data + 1, size - 1, &s);
	pieces(data + 1, size - 1, (size_t)data[0] + 1, &s);
	return 0;
}
