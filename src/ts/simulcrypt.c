/*
 * DVB SimulCrypt message codec (include/keyhole/simulcrypt.h). biTStream's <bitstream/dvb/sim.h>
 * gives the layout (the header accessors) and the type constants, checked against ours below;
 * the validation is ours: sim.h checks only minimum lengths and counts, and accepts parameters
 * no message carries.
 */
#include <string.h>

#include "ts/bitstream.h"

#include "keyhole/simulcrypt.h"

/* Our constants are the standard's; sim.h is an independent transcription of the same tables. */
_Static_assert(KH_SIM_ECMG_CHANNEL_SETUP == ECMG_TYPE_CHANNEL_SETUP && KH_SIM_ECMG_ECM_RESPONSE == ECMG_TYPE_ECM &&
		       KH_SIM_ECMG_CW_PROVISION == ECMG_TYPE_CW && KH_SIM_ECMG_STREAM_ERROR == ECMG_TYPE_STREAM_ERROR,
	       "ECMG message types");
_Static_assert(KH_SIM_EMMG_CHANNEL_SETUP == EMMG_TYPE_CHANNEL_SETUP &&
		       KH_SIM_EMMG_DATA_PROVISION == EMMG_TYPE_DATA_PROVISION &&
		       KH_SIM_EMMG_STREAM_BW_ALLOCATION == EMMG_TYPE_BW_ALLOC,
	       "EMMG message types");
_Static_assert(KH_SIM_P_ECM_ID == ECMG_PARAM_ECMID && KH_SIM_P_CP_CW_COMBINATION == ECMG_PARAM_CPCWCOMB &&
		       KH_SIM_P_AC_TRANSFER_MODE == ECMG_PARAM_ACCESSCRITMODE &&
		       KH_SIM_P_ERROR_STATUS == ECMG_PARAM_ERRORSTATUS &&
		       KH_SIM_P_ERROR_INFORMATION == ECMG_PARAM_ERRORINFO,
	       "ECMG parameter types");
_Static_assert(KH_SIM_P_CLIENT_ID == EMMG_PARAM_CLIENTID && KH_SIM_P_DATA_ID == EMMG_PARAM_DATAID &&
		       KH_SIM_P_DATAGRAM == EMMG_PARAM_DATAGRAM && KH_SIM_P_BANDWIDTH == EMMG_PARAM_BANDWIDTH,
	       "EMMG parameter types");
_Static_assert(KH_SIM_HEADER_LEN == TLVH_HEADER_SIZE + TLV_HEADER_SIZE, "header size");

#define VAR 0xFFFFu /* no upper bound on a parameter's length */

/* Lengths the standard fixes (min == max) or bounds. */
struct plen {
	uint16_t type, min, max;
};

static const struct plen ecmg_len[] = {
	{KH_SIM_P_SUPER_CAS_ID, 4, 4},
	{KH_SIM_P_SECTION_TSPKT_FLAG, 1, 1},
	{KH_SIM_P_DELAY_START, 2, 2},
	{KH_SIM_P_DELAY_STOP, 2, 2},
	{KH_SIM_P_TRANSITION_DELAY_START, 2, 2},
	{KH_SIM_P_TRANSITION_DELAY_STOP, 2, 2},
	{KH_SIM_P_ECM_REP_PERIOD, 2, 2},
	{KH_SIM_P_MAX_STREAMS, 2, 2},
	{KH_SIM_P_MIN_CP_DURATION, 2, 2},
	{KH_SIM_P_LEAD_CW, 1, 1},
	{KH_SIM_P_CW_PER_MSG, 1, 1},
	{KH_SIM_P_MAX_COMP_TIME, 2, 2},
	{KH_SIM_P_ACCESS_CRITERIA, 0, VAR},
	{KH_SIM_P_ECM_CHANNEL_ID, 2, 2},
	{KH_SIM_P_ECM_STREAM_ID, 2, 2},
	{KH_SIM_P_NOMINAL_CP_DURATION, 2, 2},
	{KH_SIM_P_AC_TRANSFER_MODE, 1, 1},
	{KH_SIM_P_CP_NUMBER, 2, 2},
	{KH_SIM_P_CP_DURATION, 2, 2},
	{KH_SIM_P_CP_CW_COMBINATION, 3, VAR}, /* CP_number (2) and a control word of at least a byte */
	{KH_SIM_P_ECM_DATAGRAM, 1, VAR},
	{KH_SIM_P_AC_DELAY_START, 2, 2},
	{KH_SIM_P_AC_DELAY_STOP, 2, 2},
	{KH_SIM_P_CW_ENCRYPTION, 0, VAR},
	{KH_SIM_P_ECM_ID, 2, 2},
	{KH_SIM_P_ERROR_STATUS, 2, 2},
	{KH_SIM_P_ERROR_INFORMATION, 0, VAR},
};

static const struct plen emmg_len[] = {
	{KH_SIM_P_CLIENT_ID, 4, 4},
	{KH_SIM_P_EMM_SECTION_TSPKT, 1, 1},
	{KH_SIM_P_DATA_CHANNEL_ID, 2, 2},
	{KH_SIM_P_DATA_STREAM_ID, 2, 2},
	{KH_SIM_P_DATAGRAM, 1, VAR},
	{KH_SIM_P_BANDWIDTH, 2, 2},
	{KH_SIM_P_DATA_TYPE, 1, 1},
	{KH_SIM_P_DATA_ID, 2, 2},
	{KH_SIM_P_ERROR_STATUS, 2, 2},
	{KH_SIM_P_ERROR_INFORMATION, 0, VAR},
};

/* How often a parameter may appear in one message: min 0 or 1, max 1 or unbounded. */
struct card {
	uint16_t type;
	uint8_t min;
	uint8_t many;
};

struct rules {
	uint16_t type;
	const struct card *c;
	size_t n;
};

#define ONE(t) {(t), 1, 0}
#define OPT(t) {(t), 0, 0}
#define SOME(t) {(t), 1, 1}
#define ANY(t) {(t), 0, 1}
#define RULES(t, a) {(t), (a), sizeof(a) / sizeof((a)[0])}

/* ECMG<->SCS (TS 103 197 §5.3, §5.4; protocol versions 2 and 3). */
static const struct card e_ch_setup[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_SUPER_CAS_ID)};
static const struct card e_ch_only[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID)};
static const struct card e_ch_status[] = {
	ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_SECTION_TSPKT_FLAG), OPT(KH_SIM_P_AC_DELAY_START),
	OPT(KH_SIM_P_AC_DELAY_STOP), ONE(KH_SIM_P_DELAY_START), ONE(KH_SIM_P_DELAY_STOP),
	OPT(KH_SIM_P_TRANSITION_DELAY_START), OPT(KH_SIM_P_TRANSITION_DELAY_STOP), ONE(KH_SIM_P_ECM_REP_PERIOD),
	ONE(KH_SIM_P_MAX_STREAMS), ONE(KH_SIM_P_MIN_CP_DURATION), ONE(KH_SIM_P_LEAD_CW),
	ONE(KH_SIM_P_CW_PER_MSG), ONE(KH_SIM_P_MAX_COMP_TIME)};
static const struct card e_ch_error[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), SOME(KH_SIM_P_ERROR_STATUS),
					 ANY(KH_SIM_P_ERROR_INFORMATION)};
static const struct card e_st_setup[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID),
					 ONE(KH_SIM_P_ECM_ID), ONE(KH_SIM_P_NOMINAL_CP_DURATION)};
static const struct card e_st_pair[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID)};
static const struct card e_st_status[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID),
					  ONE(KH_SIM_P_ECM_ID), ONE(KH_SIM_P_AC_TRANSFER_MODE)};
static const struct card e_st_error[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID),
					 SOME(KH_SIM_P_ERROR_STATUS), ANY(KH_SIM_P_ERROR_INFORMATION)};
static const struct card e_cw[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID),
				   ONE(KH_SIM_P_CP_NUMBER),	 OPT(KH_SIM_P_CW_ENCRYPTION),
				   SOME(KH_SIM_P_CP_CW_COMBINATION), OPT(KH_SIM_P_CP_DURATION),
				   OPT(KH_SIM_P_ACCESS_CRITERIA)};
static const struct card e_ecm[] = {ONE(KH_SIM_P_ECM_CHANNEL_ID), ONE(KH_SIM_P_ECM_STREAM_ID),
				    ONE(KH_SIM_P_CP_NUMBER), ONE(KH_SIM_P_ECM_DATAGRAM)};

static const struct rules ecmg_rules[] = {
	RULES(KH_SIM_ECMG_CHANNEL_SETUP, e_ch_setup),	   RULES(KH_SIM_ECMG_CHANNEL_TEST, e_ch_only),
	RULES(KH_SIM_ECMG_CHANNEL_STATUS, e_ch_status),	   RULES(KH_SIM_ECMG_CHANNEL_CLOSE, e_ch_only),
	RULES(KH_SIM_ECMG_CHANNEL_ERROR, e_ch_error),	   RULES(KH_SIM_ECMG_STREAM_SETUP, e_st_setup),
	RULES(KH_SIM_ECMG_STREAM_TEST, e_st_pair),	   RULES(KH_SIM_ECMG_STREAM_STATUS, e_st_status),
	RULES(KH_SIM_ECMG_STREAM_CLOSE_REQUEST, e_st_pair), RULES(KH_SIM_ECMG_STREAM_CLOSE_RESPONSE, e_st_pair),
	RULES(KH_SIM_ECMG_STREAM_ERROR, e_st_error),	   RULES(KH_SIM_ECMG_CW_PROVISION, e_cw),
	RULES(KH_SIM_ECMG_ECM_RESPONSE, e_ecm),
};

/* EMMG<->MUX over TCP (TS 103 197 §6.2; versions 2 and 3): data_channel_id and data_stream_id
 * are mandatory in data_provision on TCP (optional only on UDP, which we do not take). */
static const struct card m_ch_setup[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
					 ONE(KH_SIM_P_EMM_SECTION_TSPKT)};
static const struct card m_ch_pair[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID)};
static const struct card m_ch_error[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
					 SOME(KH_SIM_P_ERROR_STATUS), ANY(KH_SIM_P_ERROR_INFORMATION)};
static const struct card m_st_setup[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
					 ONE(KH_SIM_P_DATA_STREAM_ID), ONE(KH_SIM_P_DATA_ID),
					 ONE(KH_SIM_P_DATA_TYPE)};
static const struct card m_st_three[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
					 ONE(KH_SIM_P_DATA_STREAM_ID)};
static const struct card m_st_error[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
					 ONE(KH_SIM_P_DATA_STREAM_ID), SOME(KH_SIM_P_ERROR_STATUS),
					 ANY(KH_SIM_P_ERROR_INFORMATION)};
static const struct card m_st_bw[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
				      ONE(KH_SIM_P_DATA_STREAM_ID), OPT(KH_SIM_P_BANDWIDTH)};
static const struct card m_data[] = {ONE(KH_SIM_P_CLIENT_ID), ONE(KH_SIM_P_DATA_CHANNEL_ID),
				     ONE(KH_SIM_P_DATA_STREAM_ID), ONE(KH_SIM_P_DATA_ID), SOME(KH_SIM_P_DATAGRAM)};

static const struct rules emmg_rules[] = {
	RULES(KH_SIM_EMMG_CHANNEL_SETUP, m_ch_setup),	     RULES(KH_SIM_EMMG_CHANNEL_TEST, m_ch_pair),
	RULES(KH_SIM_EMMG_CHANNEL_STATUS, m_ch_setup),	     RULES(KH_SIM_EMMG_CHANNEL_CLOSE, m_ch_pair),
	RULES(KH_SIM_EMMG_CHANNEL_ERROR, m_ch_error),	     RULES(KH_SIM_EMMG_STREAM_SETUP, m_st_setup),
	RULES(KH_SIM_EMMG_STREAM_TEST, m_st_three),	     RULES(KH_SIM_EMMG_STREAM_STATUS, m_st_setup),
	RULES(KH_SIM_EMMG_STREAM_CLOSE_REQUEST, m_st_three), RULES(KH_SIM_EMMG_STREAM_CLOSE_RESPONSE, m_st_three),
	RULES(KH_SIM_EMMG_STREAM_ERROR, m_st_error),	     RULES(KH_SIM_EMMG_STREAM_BW_REQUEST, m_st_bw),
	RULES(KH_SIM_EMMG_STREAM_BW_ALLOCATION, m_st_bw),    RULES(KH_SIM_EMMG_DATA_PROVISION, m_data),
};

static const struct rules *rules_of(enum kh_sim_iface iface, uint16_t type)
{
	const struct rules *r = iface == KH_SIM_ECMG ? ecmg_rules : emmg_rules;
	size_t n = iface == KH_SIM_ECMG ? sizeof ecmg_rules / sizeof ecmg_rules[0]
					: sizeof emmg_rules / sizeof emmg_rules[0];

	if (iface != KH_SIM_ECMG && iface != KH_SIM_EMMG)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (r[i].type == type)
			return &r[i];
	return NULL;
}

static const struct plen *plen_of(enum kh_sim_iface iface, uint16_t type)
{
	const struct plen *l = iface == KH_SIM_ECMG ? ecmg_len : emmg_len;
	size_t n = iface == KH_SIM_ECMG ? sizeof ecmg_len / sizeof ecmg_len[0] : sizeof emmg_len / sizeof emmg_len[0];

	for (size_t i = 0; i < n; i++)
		if (l[i].type == type)
			return &l[i];
	return NULL;
}

static const struct card *card_of(const struct rules *r, uint16_t type)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->c[i].type == type)
			return &r->c[i];
	return NULL;
}

int kh_sim_known_type(enum kh_sim_iface iface, uint16_t type)
{
	return rules_of(iface, type) != NULL;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

enum kh_sim_status kh_sim_frame(const uint8_t *buf, size_t len, size_t *need)
{
	size_t total;

	if (len < KH_SIM_HEADER_LEN) {
		*need = KH_SIM_HEADER_LEN;
		return KH_SIM_OK;
	}
	total = KH_SIM_HEADER_LEN + tlv_get_length(buf + TLVH_HEADER_SIZE);
	if (total > KH_SIM_MAX_MSG)
		return KH_SIM_TOO_LONG;
	*need = total;
	return KH_SIM_OK;
}

/* Checks one parameter against the message's rules; counts[] holds how often each card was seen. */
static enum kh_sim_status check_param(enum kh_sim_iface iface, const struct rules *r, const struct kh_sim_param *p,
				      size_t *counts)
{
	const struct card *c = card_of(r, p->type);
	const struct plen *l = plen_of(iface, p->type);

	if (c == NULL || l == NULL)
		return KH_SIM_UNKNOWN_PARAM;
	if (p->len < l->min || p->len > l->max)
		return KH_SIM_BAD_LENGTH;
	if (counts[c - r->c]++ > 0 && !c->many)
		return KH_SIM_INVALID_MESSAGE;
	return KH_SIM_OK;
}

static enum kh_sim_status check_header(enum kh_sim_iface iface, const uint8_t *buf, size_t len)
{
	size_t need;

	if (len < KH_SIM_HEADER_LEN)
		return KH_SIM_INVALID_MESSAGE;
	if (kh_sim_frame(buf, len, &need) != KH_SIM_OK || len > KH_SIM_MAX_MSG)
		return KH_SIM_TOO_LONG;
	if (tlvh_get_version(buf) != 2 && tlvh_get_version(buf) != 3)
		return KH_SIM_BAD_VERSION;
	if (need != len)
		return KH_SIM_INVALID_MESSAGE;
	if (rules_of(iface, tlv_get_type(buf + TLVH_HEADER_SIZE)) == NULL)
		return KH_SIM_UNKNOWN_TYPE;
	return KH_SIM_OK;
}

/* Walks the parameters into m->p; on a refusal *culprit names the parameter. */
static enum kh_sim_status walk(enum kh_sim_iface iface, const struct rules *r, const uint8_t *buf, size_t len,
			       struct kh_sim_msg *m, uint16_t *culprit)
{
	size_t counts[16] = {0};
	size_t off = KH_SIM_HEADER_LEN;
	enum kh_sim_status st;

	m->n = 0;
	while (off < len) {
		struct kh_sim_param p;

		if (len - off < TLV_HEADER_SIZE)
			return KH_SIM_INVALID_MESSAGE;
		p.type = tlv_get_type(buf + off);
		p.len = tlv_get_length(buf + off);
		*culprit = p.type;
		if (len - off - TLV_HEADER_SIZE < p.len)
			return KH_SIM_INVALID_MESSAGE;
		p.val = buf + off + TLV_HEADER_SIZE;
		st = check_param(iface, r, &p, counts);
		if (st != KH_SIM_OK)
			return st;
		if (m->n == KH_SIM_MAX_PARAMS)
			return KH_SIM_TOO_LONG;
		m->p[m->n++] = p;
		off += TLV_HEADER_SIZE + p.len;
	}
	for (size_t i = 0; i < r->n; i++) {
		if (counts[i] < r->c[i].min) {
			*culprit = r->c[i].type;
			return KH_SIM_MISSING_PARAM;
		}
	}
	*culprit = 0;
	return KH_SIM_OK;
}

enum kh_sim_status kh_sim_parse(enum kh_sim_iface iface, const uint8_t *buf, size_t len, struct kh_sim_msg *out,
				uint16_t *culprit)
{
	struct kh_sim_msg m;
	uint16_t who = 0;
	enum kh_sim_status st = check_header(iface, buf, len);

	if (st == KH_SIM_OK) {
		const struct rules *r = rules_of(iface, tlv_get_type(buf + TLVH_HEADER_SIZE));

		_Static_assert(sizeof e_ch_status / sizeof e_ch_status[0] <= 16, "counts[] too small");
		st = walk(iface, r, buf, len, &m, &who);
	}
	if (culprit != NULL)
		*culprit = st == KH_SIM_OK ? 0 : who;
	if (st != KH_SIM_OK)
		return st;
	m.iface = iface;
	m.version = tlvh_get_version(buf);
	m.type = tlv_get_type(buf + TLVH_HEADER_SIZE);
	memcpy(out, &m, offsetof(struct kh_sim_msg, p) + m.n * sizeof m.p[0]);
	return KH_SIM_OK;
}

uint16_t kh_sim_error_status(enum kh_sim_iface iface, enum kh_sim_status st)
{
	int ecmg = iface == KH_SIM_ECMG;

	switch (st) {
	case KH_SIM_OK:
		return 0;
	case KH_SIM_INVALID_MESSAGE:
		return KH_SIM_ECMG_ERR_INVALID_MESSAGE;
	case KH_SIM_BAD_VERSION:
		return KH_SIM_ECMG_ERR_UNSUPPORTED_VERSION;
	case KH_SIM_UNKNOWN_TYPE:
		return KH_SIM_ECMG_ERR_UNKNOWN_MESSAGE_TYPE;
	case KH_SIM_TOO_LONG:
		return KH_SIM_ECMG_ERR_MESSAGE_TOO_LONG;
	case KH_SIM_UNKNOWN_PARAM:
		return ecmg ? KH_SIM_ECMG_ERR_UNKNOWN_PARAM_TYPE : KH_SIM_EMMG_ERR_UNKNOWN_PARAM_TYPE;
	case KH_SIM_BAD_LENGTH:
		return ecmg ? KH_SIM_ECMG_ERR_INCONSISTENT_LENGTH : KH_SIM_EMMG_ERR_INCONSISTENT_LENGTH;
	case KH_SIM_MISSING_PARAM:
		return ecmg ? KH_SIM_ECMG_ERR_MISSING_PARAM : KH_SIM_EMMG_ERR_MISSING_PARAM;
	}
	return ecmg ? KH_SIM_ECMG_ERR_UNKNOWN : KH_SIM_EMMG_ERR_UNKNOWN;
}

const char *kh_sim_status_str(enum kh_sim_status st)
{
	switch (st) {
	case KH_SIM_OK:
		return "ok";
	case KH_SIM_INVALID_MESSAGE:
		return "invalid message";
	case KH_SIM_BAD_VERSION:
		return "unsupported protocol version";
	case KH_SIM_UNKNOWN_TYPE:
		return "unknown message_type";
	case KH_SIM_TOO_LONG:
		return "message too long";
	case KH_SIM_UNKNOWN_PARAM:
		return "unknown parameter_type";
	case KH_SIM_BAD_LENGTH:
		return "inconsistent length for parameter";
	case KH_SIM_MISSING_PARAM:
		return "missing mandatory parameter";
	}
	return "unknown status";
}

size_t kh_sim_count(const struct kh_sim_msg *m, uint16_t type)
{
	size_t k = 0;

	for (size_t i = 0; i < m->n; i++)
		k += m->p[i].type == type;
	return k;
}

const struct kh_sim_param *kh_sim_find(const struct kh_sim_msg *m, uint16_t type, size_t nth)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->p[i].type == type && nth-- == 0)
			return &m->p[i];
	return NULL;
}

static kh_err find_len(const struct kh_sim_msg *m, uint16_t type, size_t nth, size_t width, const uint8_t **val)
{
	const struct kh_sim_param *p = kh_sim_find(m, type, nth);

	if (p == NULL)
		return KH_ERR_NOTFOUND;
	if (p->len != width)
		return KH_ERR_FORMAT;
	*val = p->val;
	return KH_OK;
}

kh_err kh_sim_u8(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint8_t *out)
{
	const uint8_t *v;
	kh_err e = find_len(m, type, nth, 1, &v);

	if (e == KH_OK)
		*out = v[0];
	return e;
}

kh_err kh_sim_u16(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint16_t *out)
{
	const uint8_t *v;
	kh_err e = find_len(m, type, nth, 2, &v);

	if (e == KH_OK)
		*out = rd16(v);
	return e;
}

kh_err kh_sim_s16(const struct kh_sim_msg *m, uint16_t type, size_t nth, int16_t *out)
{
	uint16_t u;
	kh_err e = kh_sim_u16(m, type, nth, &u);

	/* two's complement on the wire; converted without implementation-defined behaviour */
	if (e == KH_OK)
		*out = u < 0x8000u ? (int16_t)u : (int16_t)(-(int32_t)(0x10000u - u));
	return e;
}

kh_err kh_sim_u32(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint32_t *out)
{
	const uint8_t *v;
	kh_err e = find_len(m, type, nth, 4, &v);

	if (e == KH_OK)
		*out = (uint32_t)rd16(v) << 16 | rd16(v + 2);
	return e;
}

kh_err kh_sim_bytes(const struct kh_sim_msg *m, uint16_t type, size_t nth, const uint8_t **val, size_t *len)
{
	const struct kh_sim_param *p = kh_sim_find(m, type, nth);

	if (p == NULL)
		return KH_ERR_NOTFOUND;
	*val = p->val;
	*len = p->len;
	return KH_OK;
}

/* --- builder ------------------------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

void kh_sim_start(struct kh_sim_builder *b, enum kh_sim_iface iface, uint8_t version, uint16_t type, uint8_t *buf,
		  size_t cap)
{
	memset(b, 0, sizeof *b);
	b->iface = iface;
	b->buf = buf;
	b->cap = cap;
	b->err = KH_OK;
	if (buf == NULL || cap < KH_SIM_HEADER_LEN) {
		b->err = KH_ERR_BUF;
		return;
	}
	tlvh_set_version(buf, version);
	tlv_set_type(buf + TLVH_HEADER_SIZE, type);
	tlv_set_length(buf + TLVH_HEADER_SIZE, 0);
	b->len = KH_SIM_HEADER_LEN;
}

void kh_sim_add(struct kh_sim_builder *b, uint16_t type, const uint8_t *val, size_t len)
{
	if (b->err != KH_OK)
		return;
	if (len > 0xFFFFu || (len > 0 && val == NULL)) {
		b->err = KH_ERR_INVAL;
		b->why = KH_SIM_BAD_LENGTH;
		return;
	}
	if (b->cap - b->len < TLV_HEADER_SIZE + len) {
		b->err = KH_ERR_BUF;
		return;
	}
	put16(b->buf + b->len, type);
	put16(b->buf + b->len + 2, (uint16_t)len);
	if (len > 0)
		memcpy(b->buf + b->len + TLV_HEADER_SIZE, val, len);
	b->len += TLV_HEADER_SIZE + len;
}

void kh_sim_add_u8(struct kh_sim_builder *b, uint16_t type, uint8_t v)
{
	kh_sim_add(b, type, &v, 1);
}

void kh_sim_add_u16(struct kh_sim_builder *b, uint16_t type, uint16_t v)
{
	uint8_t t[2];

	put16(t, v);
	kh_sim_add(b, type, t, 2);
}

void kh_sim_add_s16(struct kh_sim_builder *b, uint16_t type, int16_t v)
{
	kh_sim_add_u16(b, type, (uint16_t)v);
}

void kh_sim_add_u32(struct kh_sim_builder *b, uint16_t type, uint32_t v)
{
	uint8_t t[4];

	put16(t, (uint16_t)(v >> 16));
	put16(t + 2, (uint16_t)v);
	kh_sim_add(b, type, t, 4);
}

kh_err kh_sim_finish(struct kh_sim_builder *b, size_t *len, enum kh_sim_status *why)
{
	struct kh_sim_msg check;
	enum kh_sim_status st;

	if (b->err == KH_OK && b->len > KH_SIM_MAX_MSG) {
		b->err = KH_ERR_INVAL;
		b->why = KH_SIM_TOO_LONG;
	}
	if (b->err == KH_OK) {
		tlv_set_length(b->buf + TLVH_HEADER_SIZE, (uint16_t)(b->len - KH_SIM_HEADER_LEN));
		st = kh_sim_parse(b->iface, b->buf, b->len, &check, NULL);
		if (st != KH_SIM_OK) {
			b->err = KH_ERR_INVAL;
			b->why = st;
		}
	}
	if (why != NULL)
		*why = b->why;
	if (b->err == KH_OK && len != NULL)
		*len = b->len;
	return b->err;
}

kh_err kh_sim_rebuild(const struct kh_sim_msg *m, uint8_t *buf, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, m->iface, m->version, m->type, buf, cap);
	for (size_t i = 0; i < m->n; i++)
		kh_sim_add(&b, m->p[i].type, m->p[i].val, m->p[i].len);
	return kh_sim_finish(&b, len, NULL);
}
