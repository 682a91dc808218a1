/*
 * ISO/IEC 7816-4 §5.1 command APDU parsing and building, and response splitting. The parser
 * accepts exactly the seven cases of the standard and nothing in between: a body whose length
 * disagrees with its own Lc is refused, never guessed at.
 */
#include "keyhole/apdu.h"

kh_err kh_apdu_parse(const uint8_t *b, size_t len, struct kh_apdu *a)
{
	struct kh_apdu t = {0};

	if (!b || len < 4)
		return KH_ERR_APDU_LEN;
	t.cla = b[0];
	t.ins = b[1];
	t.p1 = b[2];
	t.p2 = b[3];
	if (len == 4) {
		/* case 1 */
	} else if (len == 5) {
		t.has_le = 1; /* case 2S */
		t.le = b[4] ? b[4] : 256;
	} else if (b[4] != 0) {
		t.lc = b[4];
		t.data = b + 5;
		if (len == 5 + t.lc) {
			/* case 3S */
		} else if (len == 6 + t.lc) {
			t.has_le = 1; /* case 4S */
			t.le = b[5 + t.lc] ? b[5 + t.lc] : 256;
		} else {
			return KH_ERR_APDU_LEN;
		}
	} else if (len == 7) {
		t.has_le = 1; /* case 2E */
		t.le = (size_t)(b[5] << 8 | b[6]);
		if (!t.le)
			t.le = 65536;
	} else if (len > 7) {
		t.lc = (size_t)(b[5] << 8 | b[6]);
		t.data = b + 7;
		if (t.lc == 0)
			return KH_ERR_APDU_LEN;
		if (len == 7 + t.lc) {
			/* case 3E */
		} else if (len == 9 + t.lc) {
			t.has_le = 1; /* case 4E */
			t.le = (size_t)(b[7 + t.lc] << 8 | b[8 + t.lc]);
			if (!t.le)
				t.le = 65536;
		} else {
			return KH_ERR_APDU_LEN;
		}
	} else {
		return KH_ERR_APDU_LEN;
	}
	if (t.lc > KH_APDU_MAX_DATA)
		return KH_ERR_TOO_LARGE;
	*a = t;
	return KH_OK;
}

kh_err kh_apdu_build(struct kh_wr *w, uint8_t cla, uint8_t ins, uint8_t p1, uint8_t p2,
		     const uint8_t *data, size_t lc, size_t le)
{
	int ext = lc > 255 || le > 256;

	if (lc > 65535 || le > 65536)
		return w->err = KH_ERR_TOO_LARGE;
	kh_wr_u8(w, cla);
	kh_wr_u8(w, ins);
	kh_wr_u8(w, p1);
	kh_wr_u8(w, p2);
	if (ext) {
		kh_wr_u8(w, 0);
		if (lc) {
			kh_wr_u16(w, (uint16_t)lc);
			kh_wr_bytes(w, data, lc);
		}
		if (le)
			kh_wr_u16(w, (uint16_t)(le == 65536 ? 0 : le));
	} else {
		if (lc) {
			kh_wr_u8(w, (uint8_t)lc);
			kh_wr_bytes(w, data, lc);
		}
		if (le)
			kh_wr_u8(w, (uint8_t)(le == 256 ? 0 : le));
	}
	return w->err;
}

kh_err kh_apdu_resp(const uint8_t *buf, size_t len, const uint8_t **data, size_t *dlen, uint16_t *sw)
{
	if (!buf || len < 2)
		return KH_ERR_APDU_LEN;
	*data = buf;
	*dlen = len - 2;
	*sw = (uint16_t)(buf[len - 2] << 8 | buf[len - 1]);
	return KH_OK;
}
