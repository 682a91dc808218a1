/*
 * The ECMG<->SCS protocol engine (include/keyhole/ecmg.h, docs/internals/ecmg.md): channel and
 * stream state of one connection, each refusal answered with the standard's error_status, and
 * CW_provision turned into a Keyhole ECM sealed and signed as the headend's scrambler does.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/buf.h"
#include "keyhole/ecmg.h"
#include "keyhole/headend.h"
#include "keyhole/scramble.h"

#define TS_LEN 188u
#define TS_PAYLOAD 184u

/* An answer being made: the connection's reply version and the buffer. */
struct reply {
	struct kh_sim_builder b;
	size_t *len;
};

void kh_ecmg_cfg_defaults(struct kh_ecmg_cfg *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->super_cas_id = (uint32_t)KH_HEADEND_DEFAULT_CA_SYSTEM_ID << 16;
	cfg->alg = KH_SCR_CSA2;
	cfg->key_id = 1;
	cfg->access = KH_ECM_PRODUCT;
	cfg->delay_start = 200; /* >= 0: the ECM of CP k overwrites CW_{k-1} (docs/internals/ecmg.md) */
	cfg->delay_stop = 0;
	cfg->ecm_rep_period = 100;
	cfg->min_cp_duration = 10; /* 1 s, in units of 100 ms */
	cfg->max_comp_time = 100;
	cfg->max_streams = KH_ECMG_MAX_STREAMS;
}

void kh_ecmg_conn_init(struct kh_ecmg_conn *c)
{
	memset(c, 0, sizeof *c);
}

static kh_err finish(struct kh_sim_builder *b, size_t *len)
{
	return kh_sim_finish(b, len, NULL);
}

/* channel_error: channel id (the connection's when the message's cannot be read), status, and
 * the culprit parameter_type as error_information when there is one. */
static kh_err channel_error(uint8_t version, uint16_t ch, uint16_t status, uint16_t culprit, uint8_t *out, size_t cap,
			    size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_ECMG, version, KH_SIM_ECMG_CHANNEL_ERROR, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, status);
	if (culprit)
		kh_sim_add_u16(&b, KH_SIM_P_ERROR_INFORMATION, culprit);
	return finish(&b, len);
}

static kh_err stream_error(uint8_t version, uint16_t ch, uint16_t st, uint16_t status, uint8_t *out, size_t cap,
			   size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_ECMG, version, KH_SIM_ECMG_STREAM_ERROR, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, st);
	kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, status);
	return finish(&b, len);
}

kh_err kh_ecmg_frame_error(const struct kh_ecmg_conn *c, enum kh_sim_status st, uint8_t *out, size_t cap,
			   size_t *out_len)
{
	uint8_t v = c->open ? c->version : 2;
	return channel_error(v, c->channel_id, kh_sim_error_status(KH_SIM_ECMG, st), 0, out, cap, out_len);
}

static kh_err channel_status(const struct kh_ecmg_cfg *cfg, const struct kh_ecmg_conn *c, uint8_t version,
			     uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_ECMG, version, KH_SIM_ECMG_CHANNEL_STATUS, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, c->channel_id);
	kh_sim_add_u8(&b, KH_SIM_P_SECTION_TSPKT_FLAG, cfg->ts_packets ? 1 : 0);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_START, cfg->delay_start);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_STOP, cfg->delay_stop);
	kh_sim_add_s16(&b, KH_SIM_P_TRANSITION_DELAY_START, cfg->transition_start);
	kh_sim_add_s16(&b, KH_SIM_P_TRANSITION_DELAY_STOP, cfg->transition_stop);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_REP_PERIOD, cfg->ecm_rep_period);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_STREAMS, cfg->max_streams);
	kh_sim_add_u16(&b, KH_SIM_P_MIN_CP_DURATION, cfg->min_cp_duration);
	kh_sim_add_u8(&b, KH_SIM_P_LEAD_CW, 1);
	kh_sim_add_u8(&b, KH_SIM_P_CW_PER_MSG, 2);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_COMP_TIME, cfg->max_comp_time);
	return finish(&b, len);
}

static kh_err stream_reply(uint16_t type, const struct kh_ecmg_conn *c, const struct kh_ecmg_stream *s,
			   uint8_t version, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_ECMG, version, type, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, c->channel_id);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, s->stream_id);
	if (type == KH_SIM_ECMG_STREAM_STATUS) {
		kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, s->ecm_id);
		kh_sim_add_u8(&b, KH_SIM_P_AC_TRANSFER_MODE, 1); /* access_criteria are read when sent */
	}
	return finish(&b, len);
}

static struct kh_ecmg_stream *find_stream(struct kh_ecmg_conn *c, uint16_t id)
{
	for (size_t i = 0; i < KH_ECMG_MAX_STREAMS; i++)
		if (c->st[i].used && c->st[i].stream_id == id)
			return &c->st[i];
	return NULL;
}

/* ---- channel messages ---- */

static kh_err on_channel_setup(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, uint8_t *out, size_t cap,
			       size_t *len)
{
	const struct kh_sim_msg *m = &c->msg;
	uint16_t ch = 0;
	uint32_t cas = 0;

	(void)kh_sim_u16(m, KH_SIM_P_ECM_CHANNEL_ID, 0, &ch);
	(void)kh_sim_u32(m, KH_SIM_P_SUPER_CAS_ID, 0, &cas);
	if (c->open)
		return channel_error(m->version, ch,
				     ch == c->channel_id ? KH_SIM_ECMG_ERR_CHANNEL_ID_IN_USE
							 : KH_SIM_ECMG_ERR_TOO_MANY_CHANNELS,
				     0, out, cap, len);
	if (cas != cfg->super_cas_id)
		return channel_error(m->version, ch, KH_SIM_ECMG_ERR_UNKNOWN_SUPER_CAS_ID, KH_SIM_P_SUPER_CAS_ID, out,
				     cap, len);
	c->open = 1;
	c->channel_id = ch;
	c->version = m->version;
	return channel_status(cfg, c, m->version, out, cap, len);
}

/* The channel of a message: 0 when it is this connection's open channel, else the error_status. */
static uint16_t check_channel(const struct kh_ecmg_conn *c, uint16_t *ch)
{
	*ch = 0;
	(void)kh_sim_u16(&c->msg, KH_SIM_P_ECM_CHANNEL_ID, 0, ch);
	if (!c->open || *ch != c->channel_id)
		return KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID;
	return 0;
}

/* ---- stream messages ---- */

static struct kh_ecmg_stream *free_slot(struct kh_ecmg_conn *c, const struct kh_ecmg_cfg *cfg)
{
	size_t used = 0;
	struct kh_ecmg_stream *slot = NULL;

	for (size_t i = 0; i < KH_ECMG_MAX_STREAMS; i++) {
		if (c->st[i].used)
			used++;
		else if (!slot)
			slot = &c->st[i];
	}
	return used < cfg->max_streams ? slot : NULL;
}

static kh_err on_stream_setup(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, uint16_t ch, uint8_t *out,
			      size_t cap, size_t *len)
{
	const struct kh_sim_msg *m = &c->msg;
	uint16_t sid = 0, ecm_id = 0, cp = 0;
	struct kh_ecmg_stream *s;

	(void)kh_sim_u16(m, KH_SIM_P_ECM_STREAM_ID, 0, &sid);
	(void)kh_sim_u16(m, KH_SIM_P_ECM_ID, 0, &ecm_id);
	(void)kh_sim_u16(m, KH_SIM_P_NOMINAL_CP_DURATION, 0, &cp);
	if (find_stream(c, sid))
		return stream_error(m->version, ch, sid, KH_SIM_ECMG_ERR_STREAM_ID_IN_USE, out, cap, len);
	for (size_t i = 0; i < KH_ECMG_MAX_STREAMS; i++)
		if (c->st[i].used && c->st[i].ecm_id == ecm_id)
			return stream_error(m->version, ch, sid, KH_SIM_ECMG_ERR_ECM_ID_IN_USE, out, cap, len);
	if (cp == 0)
		return stream_error(m->version, ch, sid, KH_SIM_ECMG_ERR_INVALID_VALUE, out, cap, len);
	if (!(s = free_slot(c, cfg)))
		return stream_error(m->version, ch, sid, KH_SIM_ECMG_ERR_TOO_MANY_STREAMS_CHANNEL, out, cap, len);
	s->used = 1;
	s->stream_id = sid;
	s->ecm_id = ecm_id;
	s->nominal_cp = cp;
	return stream_reply(KH_SIM_ECMG_STREAM_STATUS, c, s, m->version, out, cap, len);
}

/* The access criteria of an ECM: the configured ones, or the SCS's (format in ecmg.h). */
static int access_criteria(const struct kh_ecmg_cfg *cfg, const struct kh_sim_msg *m, struct kh_ecm *e)
{
	const uint8_t *v;
	size_t n;

	e->access = cfg->access;
	e->product = cfg->product;
	e->event = cfg->event;
	e->price = cfg->price;
	if (kh_sim_bytes(m, KH_SIM_P_ACCESS_CRITERIA, 0, &v, &n) != KH_OK)
		return 0;
	if (n == 5 && v[0] == KH_ECMG_AC_PRODUCT) {
		e->access = KH_ECM_PRODUCT;
		e->product = kh_get_be32(v + 1);
		e->event = e->price = 0;
		return 0;
	}
	if (n == 9 && v[0] == KH_ECMG_AC_EVENT) {
		e->access = KH_ECM_EVENT;
		e->event = kh_get_be32(v + 1);
		e->price = kh_get_be32(v + 5);
		e->product = 0;
		return 0;
	}
	return -1;
}

/*
 * The control words: each CP_CW_combination goes to the slot of its CP's parity. The CW of
 * CP_number itself must be there (not_enough_CW), two of one parity or a wrong length is an
 * invalid value. *label gets the ECM's header cp (docs/internals/ecmg.md "Crypto period label"):
 * CP_number + 1 when the next period's CW is there (lead_CW 1), else CP_number, so that a
 * Keyhole decoder, which reads an ECM of cp n as CW_n in slot n & 1 and CW_{n-1} in the other,
 * finds each CW under its own period. Returns 0 or the error_status.
 */
static uint16_t control_words(const struct kh_ecmg_cfg *cfg, const struct kh_sim_msg *m, uint16_t cp,
			      struct kh_ecm *e, uint32_t *label)
{
	size_t cw_len = cfg->alg == KH_SCR_CSA2 ? 8u : 16u;
	unsigned seen = 0;
	int own = 0, next = 0;
	const uint8_t *v;
	size_t n;

	e->cw_len = (uint8_t)cw_len;
	for (size_t i = 0; kh_sim_bytes(m, KH_SIM_P_CP_CW_COMBINATION, i, &v, &n) == KH_OK; i++) {
		uint16_t k;
		unsigned p;

		if (n != 2 + cw_len) /* before reading CP: a short one has none */
			return KH_SIM_ECMG_ERR_INVALID_VALUE;
		k = (uint16_t)(v[0] << 8 | v[1]);
		p = k & 1u;
		if (seen & (1u << p))
			return KH_SIM_ECMG_ERR_INVALID_VALUE;
		seen |= 1u << p;
		own |= k == cp;
		next |= k == (uint16_t)(cp + 1u);
		memcpy(p ? e->cw_odd : e->cw_even, v + 2, cw_len);
	}
	*label = next ? (uint32_t)cp + 1u : cp;
	return own ? 0 : KH_SIM_ECMG_ERR_NOT_ENOUGH_CW;
}

/* The ECM section as the datagram: as it is, or in TS packets (PID 0x1FFF: the mux sets it). */
static size_t packetise(const uint8_t *sec, size_t n, uint8_t *pk, size_t cap)
{
	size_t off = 0, out = 0;
	unsigned cc = 0;

	while (off < n && out + TS_LEN <= cap) {
		uint8_t *p = pk + out;
		size_t room = TS_PAYLOAD - (off == 0 ? 1u : 0u);
		size_t take = n - off < room ? n - off : room;
		size_t hdr = 4;

		p[0] = 0x47;
		p[1] = (uint8_t)((off == 0 ? 0x40u : 0u) | 0x1Fu);
		p[2] = 0xFF;
		p[3] = (uint8_t)(0x10u | (cc++ & 0x0Fu));
		if (off == 0)
			p[hdr++] = 0; /* pointer_field */
		memcpy(p + hdr, sec + off, take);
		memset(p + hdr + take, 0xFF, TS_LEN - hdr - take);
		off += take;
		out += TS_LEN;
	}
	return off == n ? out : 0;
}

static kh_err ecm_response(const struct kh_ecmg_cfg *cfg, const struct kh_ecmg_conn *c, uint16_t ch, uint16_t sid,
			   uint16_t cp, const uint8_t *ecm, size_t n, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t pk[2 * TS_LEN];
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_ECMG, c->msg.version, KH_SIM_ECMG_ECM_RESPONSE, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, sid);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, cp);
	if (cfg->ts_packets) {
		size_t pn = packetise(ecm, n, pk, sizeof pk);
		if (pn == 0)
			return KH_ERR_BUF;
		kh_sim_add(&b, KH_SIM_P_ECM_DATAGRAM, pk, pn);
	} else {
		kh_sim_add(&b, KH_SIM_P_ECM_DATAGRAM, ecm, n);
	}
	return finish(&b, len);
}

/* Seal the ECM labelled cp as the headend's scrambler does (scramble.c, announce). */
static kh_err seal(const struct kh_ecmg_cfg *cfg, struct kh_ecm *e, uint32_t cp, uint8_t *ecm, size_t *n)
{
	e->h.table_id = (cp & 1u) ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
	e->h.key_id = cfg->key_id;
	e->h.key_version = cfg->key_version;
	e->h.cp = cp;
	e->alg = cfg->alg;
	e->time = cfg->time;
	e->revoked_version = cfg->revoked_version;
	e->flags = cfg->ecm_flags;
	return kh_ecm_seal(cfg->service_key, &cfg->signer, e, ecm, KH_ECM_MAX, n);
}

static kh_err on_cw_provision(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, uint16_t ch,
			      const struct kh_ecmg_stream *s, uint8_t *out, size_t cap, size_t *len)
{
	const struct kh_sim_msg *m = &c->msg;
	uint8_t ecm[KH_ECM_MAX];
	struct kh_ecm e;
	uint16_t cp = 0, status;
	uint32_t label = 0;
	size_t n = 0;
	kh_err r;

	memset(&e, 0, sizeof e);
	(void)kh_sim_u16(m, KH_SIM_P_CP_NUMBER, 0, &cp);
	status = control_words(cfg, m, cp, &e, &label);
	if (!status && access_criteria(cfg, m, &e) != 0)
		status = KH_SIM_ECMG_ERR_INVALID_VALUE;
	if (status) {
		kh_wipe(&e, sizeof e);
		return stream_error(m->version, ch, s->stream_id, status, out, cap, len);
	}
	r = seal(cfg, &e, label, ecm, &n);
	kh_wipe(&e, sizeof e);
	if (r != KH_OK)
		return r;
	return ecm_response(cfg, c, ch, s->stream_id, cp, ecm, n, out, cap, len);
}

static kh_err on_stream(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, uint16_t ch, uint8_t *out,
			size_t cap, size_t *len)
{
	const struct kh_sim_msg *m = &c->msg;
	uint16_t sid = 0;
	struct kh_ecmg_stream *s;

	if (m->type == KH_SIM_ECMG_STREAM_SETUP)
		return on_stream_setup(cfg, c, ch, out, cap, len);
	(void)kh_sim_u16(m, KH_SIM_P_ECM_STREAM_ID, 0, &sid);
	if (!(s = find_stream(c, sid)))
		return stream_error(m->version, ch, sid, KH_SIM_ECMG_ERR_UNKNOWN_STREAM_ID, out, cap, len);
	switch (m->type) {
	case KH_SIM_ECMG_STREAM_TEST:
		return stream_reply(KH_SIM_ECMG_STREAM_STATUS, c, s, m->version, out, cap, len);
	case KH_SIM_ECMG_STREAM_CLOSE_REQUEST: {
		struct kh_ecmg_stream gone = *s;
		memset(s, 0, sizeof *s);
		return stream_reply(KH_SIM_ECMG_STREAM_CLOSE_RESPONSE, c, &gone, m->version, out, cap, len);
	}
	default:
		return on_cw_provision(cfg, c, ch, s, out, cap, len);
	}
}

/* Messages only an ECMG sends (status, response, error) are out of place from an SCS. */
static int scs_sends(uint16_t type)
{
	switch (type) {
	case KH_SIM_ECMG_CHANNEL_SETUP:
	case KH_SIM_ECMG_CHANNEL_TEST:
	case KH_SIM_ECMG_CHANNEL_CLOSE:
	case KH_SIM_ECMG_STREAM_SETUP:
	case KH_SIM_ECMG_STREAM_TEST:
	case KH_SIM_ECMG_STREAM_CLOSE_REQUEST:
	case KH_SIM_ECMG_CW_PROVISION:
		return 1;
	default:
		return 0;
	}
}

static kh_err dispatch(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, uint8_t *out, size_t cap,
		       size_t *len, int *close)
{
	const struct kh_sim_msg *m = &c->msg;
	uint16_t ch, status;

	if (m->type == KH_SIM_ECMG_CHANNEL_SETUP)
		return on_channel_setup(cfg, c, out, cap, len);
	if ((status = check_channel(c, &ch)) != 0)
		return channel_error(m->version, ch, status, KH_SIM_P_ECM_CHANNEL_ID, out, cap, len);
	if (m->type == KH_SIM_ECMG_CHANNEL_TEST)
		return channel_status(cfg, c, m->version, out, cap, len);
	if (m->type == KH_SIM_ECMG_CHANNEL_CLOSE) {
		kh_ecmg_conn_init(c);
		*close = 1;
		return KH_OK;
	}
	return on_stream(cfg, c, ch, out, cap, len);
}

kh_err kh_ecmg_handle(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, const uint8_t *in, size_t n,
		      uint8_t *out, size_t cap, size_t *out_len, int *close)
{
	enum kh_sim_status st;
	uint16_t culprit = 0;
	uint8_t v;

	*out_len = 0;
	*close = 0;
	if (cap < KH_ECMG_OUT_MAX)
		return KH_ERR_BUF;
	st = kh_sim_parse(KH_SIM_ECMG, in, n, &c->msg, &culprit);
	v = (st == KH_SIM_OK) ? c->msg.version : (c->open ? c->version : 2);
	if (st == KH_SIM_OK && !scs_sends(c->msg.type)) {
		st = KH_SIM_UNKNOWN_TYPE;
		culprit = 0;
	}
	if (st != KH_SIM_OK)
		return channel_error(v, c->channel_id, kh_sim_error_status(KH_SIM_ECMG, st), culprit, out, cap,
				     out_len);
	return dispatch(cfg, c, out, cap, out_len, close);
}
