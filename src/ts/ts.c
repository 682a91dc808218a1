/*
 * MPEG-2 transport stream packets (ISO/IEC 13818-1 §2.4.3.2-§2.4.3.5): header parse with full
 * adaptation_field_length validation, packet build with adaptation-field stuffing, and the
 * transport_scrambling_control bits the scramblers set. Field layout comes from VideoLAN
 * biTStream's accessors; its headers are included here only, with the warnings our flags would
 * raise on its static inline functions silenced, never from include/keyhole/ts.h.
 */
#include <string.h>

#include "ts/bitstream.h"

#include "keyhole/ts.h"

kh_err kh_ts_parse(const uint8_t *p, size_t n, struct kh_ts_pkt *out)
{
	struct kh_ts_pkt k;
	size_t body = KH_TS_PACKET_LEN - KH_TS_HEADER_LEN, aflen;

	if (p == NULL || n < KH_TS_PACKET_LEN)
		return KH_ERR_TRUNCATED;
	if (n > KH_TS_PACKET_LEN)
		return KH_ERR_TRAILING;
	if (!ts_validate(p))
		return KH_ERR_FORMAT;
	memset(&k, 0, sizeof k);
	k.pid = ts_get_pid(p);
	k.tei = ts_get_transporterror(p) ? 1 : 0;
	k.pusi = ts_get_unitstart(p) ? 1 : 0;
	k.priority = ts_get_transportpriority(p) ? 1 : 0;
	k.scrambling = ts_get_scrambling(p);
	k.cc = ts_get_cc(p);
	k.afc = (uint8_t)((ts_has_adaptation(p) ? 2 : 0) | (ts_has_payload(p) ? 1 : 0));
	switch (k.afc) {
	case 1:
		k.payload = p + KH_TS_HEADER_LEN;
		k.payload_len = body;
		break;
	case 2:
		/* adaptation field only: it fills the packet exactly */
		aflen = ts_get_adaptation(p);
		if (aflen != body - 1)
			return KH_ERR_FORMAT;
		k.af = p + KH_TS_HEADER_LEN + 1;
		k.af_len = aflen;
		break;
	case 3:
		/* adaptation field and at least one payload byte */
		aflen = ts_get_adaptation(p);
		if (aflen > body - 2)
			return KH_ERR_FORMAT;
		k.af = p + KH_TS_HEADER_LEN + 1;
		k.af_len = aflen;
		k.payload = k.af + aflen;
		k.payload_len = body - 1 - aflen;
		break;
	default:
		return KH_ERR_FORMAT; /* 00 is reserved: decoders discard such packets */
	}
	*out = k;
	return KH_OK;
}

kh_err kh_ts_build(uint8_t out[static KH_TS_PACKET_LEN], const struct kh_ts_pkt *h,
		   const uint8_t *af, size_t af_len, const uint8_t *payload, size_t payload_len)
{
	uint8_t pkt[KH_TS_PACKET_LEN];
	const size_t body = KH_TS_PACKET_LEN - KH_TS_HEADER_LEN;
	size_t stuff, total_af;
	uint8_t *q;

	if (h == NULL || h->pid > KH_TS_PID_MAX || h->cc > 15 || h->scrambling > 3)
		return KH_ERR_INVAL;
	if ((af_len > 0 && af == NULL) || (payload_len > 0 && payload == NULL))
		return KH_ERR_INVAL;
	if (payload_len > body || af_len > body - 1 ||
	    (payload_len > 0 && af_len > 0 && 1 + af_len + payload_len > body) ||
	    (payload_len > 0 && payload_len < body && 1 + af_len + payload_len > body))
		return KH_ERR_TOO_LARGE;
	if (payload_len == body && af_len > 0)
		return KH_ERR_TOO_LARGE;

	memset(pkt, 0, sizeof pkt);
	ts_init(pkt);
	ts_set_pid(pkt, h->pid);
	ts_set_cc(pkt, h->cc);
	ts_set_scrambling(pkt, h->scrambling);
	if (h->tei)
		ts_set_transporterror(pkt);
	if (h->pusi)
		ts_set_unitstart(pkt);
	if (h->priority)
		ts_set_transportpriority(pkt);

	q = pkt + KH_TS_HEADER_LEN;
	if (payload_len == body) {
		ts_set_payload(pkt);
		memcpy(q, payload, payload_len);
	} else {
		/* adaptation field: given bytes, then stuffing up to the payload */
		total_af = body - 1 - payload_len;
		stuff = total_af - af_len;
		pkt[3] |= 0x20;
		if (payload_len > 0)
			ts_set_payload(pkt);
		*q++ = (uint8_t)total_af;
		if (af_len > 0) {
			memcpy(q, af, af_len);
			q += af_len;
		} else if (stuff > 0) {
			*q++ = 0x00; /* flags byte: nothing signalled */
			stuff--;
		}
		memset(q, 0xFF, stuff);
		q += stuff;
		if (payload_len > 0)
			memcpy(q, payload, payload_len);
	}
	memcpy(out, pkt, sizeof pkt);
	return KH_OK;
}

kh_err kh_ts_set_scrambling(uint8_t pkt[static KH_TS_PACKET_LEN], unsigned sc)
{
	if (sc > 3)
		return KH_ERR_INVAL;
	ts_set_scrambling(pkt, (uint8_t)sc);
	return KH_OK;
}
