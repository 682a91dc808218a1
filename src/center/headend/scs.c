/*
 * The SCS protocol engine (include/keyhole/scs.h, docs/internals/scs.md): one channel to an ECMG,
 * its streams, the messages an SCS sends, and each message from the ECMG turned into one event,
 * with TS-packet ECMs put back into their section.
 */
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/scs.h"

#define TS_LEN 188u

kh_err kh_scs_init(struct kh_scs *s, uint32_t super_cas_id, uint16_t channel_id, uint8_t version)
{
	if (version != 2 && version != 3)
		return KH_ERR_INVAL;
	memset(s, 0, sizeof *s);
	s->super_cas_id = super_cas_id;
	s->channel_id = channel_id;
	s->version = version;
	return KH_OK;
}

static kh_err start(struct kh_scs *s, struct kh_sim_builder *b, uint16_t type, uint8_t *out, size_t cap)
{
	if (cap < KH_SCS_MSG_MAX)
		return KH_ERR_BUF;
	kh_sim_start(b, KH_SIM_ECMG, s->version, type, out, cap);
	kh_sim_add_u16(b, KH_SIM_P_ECM_CHANNEL_ID, s->channel_id);
	return KH_OK;
}

static kh_err finish(struct kh_sim_builder *b, size_t *len)
{
	return kh_sim_finish(b, len, NULL);
}

kh_err kh_scs_channel_setup(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;
	kh_err r;

	if (s->state != KH_SCS_IDLE)
		return KH_ERR_INVAL;
	if ((r = start(s, &b, KH_SIM_ECMG_CHANNEL_SETUP, out, cap)) != KH_OK)
		return r;
	kh_sim_add_u32(&b, KH_SIM_P_SUPER_CAS_ID, s->super_cas_id);
	if ((r = finish(&b, len)) == KH_OK)
		s->state = KH_SCS_SETTING_UP;
	return r;
}

/* A message of the channel alone (channel_test, channel_close), on the open channel. */
static kh_err channel_only(struct kh_scs *s, uint16_t type, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;
	kh_err r;

	if (s->state != KH_SCS_OPEN)
		return KH_ERR_INVAL;
	if ((r = start(s, &b, type, out, cap)) != KH_OK)
		return r;
	return finish(&b, len);
}

kh_err kh_scs_channel_test(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len)
{
	return channel_only(s, KH_SIM_ECMG_CHANNEL_TEST, out, cap, len);
}

kh_err kh_scs_channel_close(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len)
{
	kh_err r = channel_only(s, KH_SIM_ECMG_CHANNEL_CLOSE, out, cap, len);

	if (r == KH_OK)
		s->state = KH_SCS_CLOSED;
	return r;
}

kh_err kh_scs_channel_status(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len)
{
	const struct kh_scs_channel *c = &s->ch;
	struct kh_sim_builder b;
	kh_err r;

	if (s->state != KH_SCS_OPEN)
		return KH_ERR_INVAL;
	if ((r = start(s, &b, KH_SIM_ECMG_CHANNEL_STATUS, out, cap)) != KH_OK)
		return r;
	kh_sim_add_u8(&b, KH_SIM_P_SECTION_TSPKT_FLAG, c->section_tspkt);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_START, c->delay_start);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_STOP, c->delay_stop);
	kh_sim_add_s16(&b, KH_SIM_P_TRANSITION_DELAY_START, c->transition_start);
	kh_sim_add_s16(&b, KH_SIM_P_TRANSITION_DELAY_STOP, c->transition_stop);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_REP_PERIOD, c->ecm_rep_period);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_STREAMS, c->max_streams);
	kh_sim_add_u16(&b, KH_SIM_P_MIN_CP_DURATION, c->min_cp_duration);
	kh_sim_add_u8(&b, KH_SIM_P_LEAD_CW, c->lead_cw);
	kh_sim_add_u8(&b, KH_SIM_P_CW_PER_MSG, c->cw_per_msg);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_COMP_TIME, c->max_comp_time);
	return finish(&b, len);
}

/* The stream at idx in state want (1 set up, 2 open), or NULL. */
static struct kh_scs_stream *stream_at(struct kh_scs *s, unsigned idx, uint8_t want)
{
	if (s->state != KH_SCS_OPEN || idx >= KH_SCS_STREAMS_MAX || s->st[idx].state != want)
		return NULL;
	return &s->st[idx];
}

/* A message of one stream: the channel and the stream's id. */
static kh_err stream_msg(struct kh_scs *s, const struct kh_scs_stream *t, struct kh_sim_builder *b, uint16_t type,
			 uint8_t *out, size_t cap)
{
	kh_err r = start(s, b, type, out, cap);

	if (r == KH_OK)
		kh_sim_add_u16(b, KH_SIM_P_ECM_STREAM_ID, t->stream_id);
	return r;
}

kh_err kh_scs_stream_status(struct kh_scs *s, unsigned idx, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_scs_stream *t = stream_at(s, idx, 2);
	struct kh_sim_builder b;
	kh_err r;

	if (!t)
		return KH_ERR_INVAL;
	if ((r = stream_msg(s, t, &b, KH_SIM_ECMG_STREAM_STATUS, out, cap)) != KH_OK)
		return r;
	kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, t->ecm_id);
	kh_sim_add_u8(&b, KH_SIM_P_AC_TRANSFER_MODE, 1);
	return finish(&b, len);
}

/* Whether another stream than idx uses stream_id or ecm_id; how many streams are in use. */
static int clash(const struct kh_scs *s, unsigned idx, uint16_t stream_id, uint16_t ecm_id, unsigned *used)
{
	int bad = 0;

	*used = 0;
	for (unsigned i = 0; i < KH_SCS_STREAMS_MAX; i++) {
		if (!s->st[i].state || i == idx)
			continue;
		(*used)++;
		bad |= s->st[i].stream_id == stream_id || s->st[i].ecm_id == ecm_id;
	}
	return bad;
}

kh_err kh_scs_stream_setup(struct kh_scs *s, unsigned idx, uint16_t stream_id, uint16_t ecm_id, uint16_t nominal_cp,
			   uint8_t *out, size_t cap, size_t *len)
{
	struct kh_scs_stream *t = stream_at(s, idx, 0);
	struct kh_sim_builder b;
	unsigned used = 0;
	kh_err r;

	struct kh_scs_stream n = {.state = 1, .stream_id = stream_id, .ecm_id = ecm_id, .nominal_cp = nominal_cp};

	if (!t || nominal_cp == 0 || clash(s, idx, stream_id, ecm_id, &used) || used >= s->ch.max_streams)
		return KH_ERR_INVAL;
	if ((r = stream_msg(s, &n, &b, KH_SIM_ECMG_STREAM_SETUP, out, cap)) != KH_OK)
		return r;
	kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, ecm_id);
	kh_sim_add_u16(&b, KH_SIM_P_NOMINAL_CP_DURATION, nominal_cp);
	if ((r = finish(&b, len)) == KH_OK)
		*t = n;
	return r;
}

kh_err kh_scs_stream_close(struct kh_scs *s, unsigned idx, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_scs_stream *t = stream_at(s, idx, 2);
	struct kh_sim_builder b;
	kh_err r;

	if (!t)
		return KH_ERR_INVAL;
	if ((r = stream_msg(s, t, &b, KH_SIM_ECMG_STREAM_CLOSE_REQUEST, out, cap)) != KH_OK)
		return r;
	if ((r = finish(&b, len)) == KH_OK)
		t->state = 3; /* closing: the response forgets it */
	return r;
}

/* One CP_CW_combination: CP number and CW. */
static void add_cw(struct kh_sim_builder *b, uint16_t cp, const uint8_t *cw, size_t cw_len)
{
	uint8_t comb[2 + 16];

	comb[0] = (uint8_t)(cp >> 8);
	comb[1] = (uint8_t)cp;
	memcpy(comb + 2, cw, cw_len);
	kh_sim_add(b, KH_SIM_P_CP_CW_COMBINATION, comb, 2 + cw_len);
	kh_wipe(comb, sizeof comb);
}

kh_err kh_scs_cw_provision(struct kh_scs *s, unsigned idx, uint16_t cp, const uint8_t *cw, const uint8_t *next,
			   size_t cw_len, const uint8_t *ac, size_t ac_len, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_scs_stream *t = stream_at(s, idx, 2);
	struct kh_sim_builder b;
	kh_err r;

	if (!t || (cw_len != 8 && cw_len != 16) || ac_len > KH_SCS_AC_MAX || (ac_len && !ac))
		return KH_ERR_INVAL;
	if ((r = stream_msg(s, t, &b, KH_SIM_ECMG_CW_PROVISION, out, cap)) != KH_OK)
		return r;
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, cp);
	add_cw(&b, cp, cw, cw_len);
	if (next)
		add_cw(&b, (uint16_t)(cp + 1u), next, cw_len);
	if (ac_len)
		kh_sim_add(&b, KH_SIM_P_ACCESS_CRITERIA, ac, ac_len);
	if ((r = finish(&b, len)) != KH_OK) {
		kh_wipe(out, cap < KH_SCS_MSG_MAX ? cap : KH_SCS_MSG_MAX);
		return r;
	}
	t->waiting = 1;
	t->cp = cp;
	return KH_OK;
}

size_t kh_scs_access_criteria(uint8_t access, uint32_t product, uint32_t event, uint32_t price,
			      uint8_t out[KH_SCS_AC_MAX])
{
	if (access == KH_ECM_PRODUCT) {
		out[0] = 0x01; /* KH_ECMG_AC_PRODUCT */
		kh_put_be32(out + 1, product);
		return 5;
	}
	if (access == KH_ECM_EVENT) {
		out[0] = 0x02; /* KH_ECMG_AC_EVENT */
		kh_put_be32(out + 1, event);
		kh_put_be32(out + 5, price);
		return 9;
	}
	return 0;
}

/* ---- from the ECMG ---- */

/* channel_status: every parameter the SCS needs, into s->ch. KH_ERR_FORMAT when one is absent. */
static kh_err read_channel(const struct kh_sim_msg *m, struct kh_scs_channel *c)
{
	struct kh_scs_channel n;

	memset(&n, 0, sizeof n);
	if (kh_sim_u8(m, KH_SIM_P_SECTION_TSPKT_FLAG, 0, &n.section_tspkt) != KH_OK || n.section_tspkt > 1 ||
	    kh_sim_s16(m, KH_SIM_P_DELAY_START, 0, &n.delay_start) != KH_OK ||
	    kh_sim_s16(m, KH_SIM_P_DELAY_STOP, 0, &n.delay_stop) != KH_OK ||
	    kh_sim_u16(m, KH_SIM_P_ECM_REP_PERIOD, 0, &n.ecm_rep_period) != KH_OK ||
	    kh_sim_u16(m, KH_SIM_P_MAX_STREAMS, 0, &n.max_streams) != KH_OK ||
	    kh_sim_u16(m, KH_SIM_P_MIN_CP_DURATION, 0, &n.min_cp_duration) != KH_OK ||
	    kh_sim_u8(m, KH_SIM_P_LEAD_CW, 0, &n.lead_cw) != KH_OK ||
	    kh_sim_u8(m, KH_SIM_P_CW_PER_MSG, 0, &n.cw_per_msg) != KH_OK ||
	    kh_sim_u16(m, KH_SIM_P_MAX_COMP_TIME, 0, &n.max_comp_time) != KH_OK)
		return KH_ERR_FORMAT;
	/* optional in the standard */
	(void)kh_sim_s16(m, KH_SIM_P_TRANSITION_DELAY_START, 0, &n.transition_start);
	(void)kh_sim_s16(m, KH_SIM_P_TRANSITION_DELAY_STOP, 0, &n.transition_stop);
	if (n.max_streams > KH_SCS_STREAMS_MAX)
		n.max_streams = KH_SCS_STREAMS_MAX; /* all this SCS will ask for */
	*c = n;
	return KH_OK;
}

/* The index of the stream a message names (any state but none), or -1. */
static int find_stream(const struct kh_scs *s, const struct kh_sim_msg *m)
{
	uint16_t id;

	if (kh_sim_u16(m, KH_SIM_P_ECM_STREAM_ID, 0, &id) != KH_OK)
		return -1;
	for (unsigned i = 0; i < KH_SCS_STREAMS_MAX; i++)
		if (s->st[i].state && s->st[i].stream_id == id)
			return (int)i;
	return -1;
}

/* A datagram in TS packets back into its section: payloads after the pointer_field, in order. */
static kh_err reassemble(const uint8_t *d, size_t n, uint8_t *sec, size_t cap, size_t *len)
{
	size_t have = 0, want = 0;

	if (n == 0 || n % TS_LEN)
		return KH_ERR_FORMAT;
	for (size_t off = 0; off < n && (!want || have < want); off += TS_LEN) {
		const uint8_t *p = d + off;
		unsigned afc = (p[3] >> 4) & 3u;
		size_t hdr = afc == 3 ? 5u + p[4] : 4u, take;

		if (p[0] != 0x47 || !(afc & 1u) || hdr >= TS_LEN || !!(p[1] & 0x40) != (off == 0))
			return KH_ERR_FORMAT;
		if (off == 0) {
			hdr += 1u + p[hdr]; /* the pointer_field and what it skips */
			if (hdr + 3 > TS_LEN)
				return KH_ERR_FORMAT;
			want = 3u + (((size_t)p[hdr + 1] & 0x0F) << 8 | p[hdr + 2]);
			if (want > cap)
				return KH_ERR_BUF;
		}
		take = TS_LEN - hdr < want - have ? TS_LEN - hdr : want - have;
		memcpy(sec + have, p + hdr, take);
		have += take;
	}
	if (have != want)
		return KH_ERR_FORMAT;
	*len = have;
	return KH_OK;
}

/* The ECM datagram as one whole section in ecm. */
static kh_err read_ecm(const struct kh_scs *s, const struct kh_sim_msg *m, uint8_t *ecm, size_t cap, size_t *len)
{
	const uint8_t *d;
	size_t n;

	if (kh_sim_bytes(m, KH_SIM_P_ECM_DATAGRAM, 0, &d, &n) != KH_OK)
		return KH_ERR_FORMAT;
	if (s->ch.section_tspkt)
		return reassemble(d, n, ecm, cap, len);
	if (n < 3 || n != 3u + (((size_t)d[1] & 0x0F) << 8 | d[2]))
		return KH_ERR_FORMAT;
	if (n > cap)
		return KH_ERR_BUF;
	memcpy(ecm, d, n);
	*len = n;
	return KH_OK;
}

static kh_err on_ecm(struct kh_scs *s, int i, struct kh_scs_event *ev, uint8_t *ecm, size_t cap)
{
	struct kh_scs_stream *t = &s->st[i];
	uint16_t cp = 0;
	kh_err r;

	if (t->state != 2 || !t->waiting || kh_sim_u16(&s->msg, KH_SIM_P_CP_NUMBER, 0, &cp) != KH_OK || cp != t->cp)
		return KH_ERR_FORMAT;
	if ((r = read_ecm(s, &s->msg, ecm, cap, &ev->ecm_len)) != KH_OK)
		return r;
	t->waiting = 0;
	ev->type = KH_SCS_EV_ECM;
	ev->cp = cp;
	return KH_OK;
}

/* A stream's message from the ECMG. */
static kh_err on_stream(struct kh_scs *s, struct kh_scs_event *ev, uint8_t *ecm, size_t cap)
{
	const struct kh_sim_msg *m = &s->msg;
	int i = find_stream(s, m);
	struct kh_scs_stream *t;

	if (i < 0)
		return KH_ERR_FORMAT;
	t = &s->st[i];
	ev->stream = (unsigned)i;
	switch (m->type) {
	case KH_SIM_ECMG_STREAM_STATUS:
		if (t->state != 1 && t->state != 2)
			return KH_ERR_FORMAT;
		t->state = 2;
		ev->type = KH_SCS_EV_STREAM_STATUS;
		return KH_OK;
	case KH_SIM_ECMG_STREAM_CLOSE_RESPONSE:
		if (t->state != 3)
			return KH_ERR_FORMAT;
		memset(t, 0, sizeof *t);
		ev->type = KH_SCS_EV_STREAM_CLOSED;
		return KH_OK;
	case KH_SIM_ECMG_STREAM_ERROR:
		(void)kh_sim_u16(m, KH_SIM_P_ERROR_STATUS, 0, &ev->error);
		ev->cp = t->cp;
		t->waiting = 0;
		if (t->state == 1)
			memset(t, 0, sizeof *t); /* its set-up was refused */
		ev->type = KH_SCS_EV_STREAM_ERROR;
		return KH_OK;
	case KH_SIM_ECMG_STREAM_TEST:
		ev->type = KH_SCS_EV_STREAM_TEST;
		return t->state == 2 ? KH_OK : KH_ERR_FORMAT;
	case KH_SIM_ECMG_STREAM_CLOSE_REQUEST:
		ev->type = KH_SCS_EV_CLOSE_REQUEST;
		return KH_OK;
	case KH_SIM_ECMG_ECM_RESPONSE:
		return on_ecm(s, i, ev, ecm, cap);
	default:
		return KH_ERR_FORMAT; /* a message only an SCS sends */
	}
}

/* A channel's message from the ECMG; KH_ERR_FORMAT for a message type an ECMG does not send. */
static kh_err on_channel(struct kh_scs *s, struct kh_scs_event *ev)
{
	const struct kh_sim_msg *m = &s->msg;
	kh_err r;

	switch (m->type) {
	case KH_SIM_ECMG_CHANNEL_STATUS:
		if (s->state != KH_SCS_SETTING_UP && s->state != KH_SCS_OPEN)
			return KH_ERR_FORMAT;
		if ((r = read_channel(m, &s->ch)) != KH_OK)
			return r;
		s->state = KH_SCS_OPEN;
		ev->type = KH_SCS_EV_CHANNEL_STATUS;
		return KH_OK;
	case KH_SIM_ECMG_CHANNEL_ERROR:
		(void)kh_sim_u16(m, KH_SIM_P_ERROR_STATUS, 0, &ev->error);
		s->state = KH_SCS_CLOSED;
		ev->type = KH_SCS_EV_CHANNEL_ERROR;
		return KH_OK;
	case KH_SIM_ECMG_CHANNEL_TEST:
		ev->type = KH_SCS_EV_CHANNEL_TEST;
		return s->state == KH_SCS_OPEN ? KH_OK : KH_ERR_FORMAT;
	default:
		return KH_ERR_FORMAT;
	}
}

kh_err kh_scs_handle(struct kh_scs *s, const uint8_t *in, size_t n, struct kh_scs_event *ev, uint8_t *ecm,
		     size_t cap)
{
	uint16_t ch = 0;
	kh_err r;

	memset(ev, 0, sizeof *ev);
	if (kh_sim_parse(KH_SIM_ECMG, in, n, &s->msg, NULL) != KH_SIM_OK)
		return KH_ERR_FORMAT;
	if (kh_sim_u16(&s->msg, KH_SIM_P_ECM_CHANNEL_ID, 0, &ch) != KH_OK || ch != s->channel_id)
		return KH_ERR_FORMAT;
	if (s->msg.type < KH_SIM_ECMG_STREAM_SETUP)
		r = on_channel(s, ev);
	else
		r = on_stream(s, ev, ecm, cap);
	if (r != KH_OK)
		memset(ev, 0, sizeof *ev);
	return r;
}
