/*
 * vpcd framing and our ATR (docs/internals/pcsc.md). No I/O here: fuzz/fuzz_vpcd.c feeds it
 * whatever bytes it likes.
 */
#include <string.h>

#include "device/vpcd.h"

kh_err kh_vpcd_take(const uint8_t *buf, size_t n, size_t max, struct kh_vpcd_msg *msg, size_t *used)
{
	size_t len;

	if (n < 2)
		return KH_ERR_TRUNCATED;
	len = (size_t)buf[0] << 8 | buf[1];
	if (len == 0)
		return KH_ERR_FORMAT;
	if (len > max)
		return KH_ERR_TOO_LARGE;
	if (n - 2 < len)
		return KH_ERR_TRUNCATED;
	memset(msg, 0, sizeof *msg);
	if (len == 1) {
		msg->is_ctrl = 1;
		msg->ctrl = buf[2];
	} else {
		msg->apdu = buf + 2;
		msg->apdu_len = len;
	}
	*used = 2 + len;
	return KH_OK;
}

size_t kh_vpcd_frame(uint8_t *out, size_t cap, const uint8_t *payload, size_t len)
{
	if (len == 0 || len > KH_VPCD_MAX_PAYLOAD || cap < 2 || cap - 2 < len)
		return 0;
	out[0] = (uint8_t)(len >> 8);
	out[1] = (uint8_t)len;
	memmove(out + 2, payload, len);
	return 2 + len;
}

/*
 * TS 3B (direct convention); T0 8C: TD1 follows, 12 historical bytes; TD1 01: T=1, nothing
 * more. Historical bytes: category 80 (COMPACT-TLV follows), 57 "Keyhole" (tag 5, card issuer's
 * data), 62 role version (tag 6, pre-issuing data: the applet set). TCK makes T0..TCK XOR to 0.
 */
void kh_vpcd_atr(uint8_t role, uint8_t atr[static KH_VPCD_ATR_LEN])
{
	static const uint8_t head[] = {0x3B, 0x8C, 0x01, 0x80, 0x57, 'K', 'e', 'y', 'h', 'o', 'l', 'e', 0x62};
	uint8_t x = 0;

	memcpy(atr, head, sizeof head);
	atr[13] = role;
	atr[14] = 0x01; /* version of the Keyhole APDU set */
	for (size_t i = 1; i < KH_VPCD_ATR_LEN - 1; i++)
		x ^= atr[i];
	atr[KH_VPCD_ATR_LEN - 1] = x;
}

int kh_vpcd_atr_tck_ok(const uint8_t *atr, size_t len)
{
	uint8_t x = 0;

	if (len < 3)
		return 0;
	for (size_t i = 1; i < len; i++)
		x ^= atr[i];
	return x == 0;
}
