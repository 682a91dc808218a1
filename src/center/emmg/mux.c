/*
 * The mux side of EMMG<->MUX (include/keyhole/emmg.h, docs/internals/emmg.md): one channel per
 * connection, streams within it, bandwidth allocated as min(asked, configured), data_provision's
 * datagrams handed to the caller while the stream keeps within its allocation. Every refusal is
 * answered with the standard's error_status and leaves the state as it was.
 */
#include <string.h>

#include "keyhole/emmg.h"

void kh_emmmux_cfg_defaults(struct kh_emmmux_cfg *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->client_id = 0x4B480000u;
	cfg->max_bandwidth = 1000;
	cfg->max_streams = KH_EMMG_MUX_MAX_STREAMS;
}

void kh_emmmux_conn_init(struct kh_emmmux_conn *c)
{
	memset(c, 0, sizeof *c);
}

/* What a message names: client, channel, stream (0 when it does not say). */
struct ids {
	uint32_t client;
	uint16_t ch, st;
};

static struct ids ids_of(const struct kh_sim_msg *m)
{
	struct ids x = {0, 0, 0};

	(void)kh_sim_u32(m, KH_SIM_P_CLIENT_ID, 0, &x.client);
	(void)kh_sim_u16(m, KH_SIM_P_DATA_CHANNEL_ID, 0, &x.ch);
	(void)kh_sim_u16(m, KH_SIM_P_DATA_STREAM_ID, 0, &x.st);
	return x;
}

static kh_err channel_error(struct kh_emmmux_conn *c, uint8_t version, const struct ids *x, uint16_t status,
			    uint16_t culprit, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	c->stats.errors_sent++;
	kh_sim_start(&b, KH_SIM_EMMG, version, KH_SIM_EMMG_CHANNEL_ERROR, out, cap);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, x->client);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, x->ch);
	kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, status);
	if (culprit)
		kh_sim_add_u16(&b, KH_SIM_P_ERROR_INFORMATION, culprit);
	return kh_sim_finish(&b, len, NULL);
}

static kh_err stream_error(struct kh_emmmux_conn *c, const struct ids *x, uint16_t status, uint8_t *out,
			   size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	c->stats.errors_sent++;
	kh_sim_start(&b, KH_SIM_EMMG, c->msg.version, KH_SIM_EMMG_STREAM_ERROR, out, cap);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, x->client);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, x->ch);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, x->st);
	kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, status);
	return kh_sim_finish(&b, len, NULL);
}

kh_err kh_emmmux_frame_error(const struct kh_emmmux_conn *c, enum kh_sim_status st, uint8_t *out, size_t cap,
			     size_t *out_len)
{
	struct kh_emmmux_conn scratch;
	struct ids x = {c->client_id, c->channel_id, 0};

	kh_emmmux_conn_init(&scratch); /* the count is the caller's business: the connection ends */
	return channel_error(&scratch, c->open ? c->version : 2, &x, kh_sim_error_status(KH_SIM_EMMG, st), 0, out,
			     cap, out_len);
}

static kh_err channel_status(const struct kh_emmmux_conn *c, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_EMMG, c->msg.version, KH_SIM_EMMG_CHANNEL_STATUS, out, cap);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, c->client_id);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, c->channel_id);
	kh_sim_add_u8(&b, KH_SIM_P_EMM_SECTION_TSPKT, c->ts_packets);
	return kh_sim_finish(&b, len, NULL);
}

static kh_err stream_reply(const struct kh_emmmux_conn *c, uint16_t type, const struct kh_emmmux_stream *s,
			   uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	kh_sim_start(&b, KH_SIM_EMMG, c->msg.version, type, out, cap);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, c->client_id);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, c->channel_id);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, s->stream_id);
	if (type == KH_SIM_EMMG_STREAM_STATUS) {
		kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, s->data_id);
		kh_sim_add_u8(&b, KH_SIM_P_DATA_TYPE, s->data_type);
	}
	if (type == KH_SIM_EMMG_STREAM_BW_ALLOCATION)
		kh_sim_add_u16(&b, KH_SIM_P_BANDWIDTH, s->allocated);
	return kh_sim_finish(&b, len, NULL);
}

/* ---- channel ---- */

static kh_err on_channel_setup(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, const struct ids *x,
			       uint8_t *out, size_t cap, size_t *len)
{
	uint8_t flag = 0;

	(void)kh_sim_u8(&c->msg, KH_SIM_P_EMM_SECTION_TSPKT, 0, &flag);
	if (c->open)
		return channel_error(c, c->msg.version, x,
				     x->ch == c->channel_id ? KH_SIM_EMMG_ERR_CHANNEL_ID_IN_USE
							    : KH_SIM_EMMG_ERR_TOO_MANY_CHANNELS,
				     0, out, cap, len);
	if (x->client != cfg->client_id)
		return channel_error(c, c->msg.version, x, KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID, KH_SIM_P_CLIENT_ID, out,
				     cap, len);
	if (cfg->busy && cfg->busy(cfg->ctx, x->client))
		return channel_error(c, c->msg.version, x, KH_SIM_EMMG_ERR_CLIENT_ID_IN_USE, KH_SIM_P_CLIENT_ID, out,
				     cap, len);
	if (flag > 1)
		return channel_error(c, c->msg.version, x, KH_SIM_EMMG_ERR_INVALID_VALUE, KH_SIM_P_EMM_SECTION_TSPKT,
				     out, cap, len);
	c->open = 1;
	c->version = c->msg.version;
	c->client_id = x->client;
	c->channel_id = x->ch;
	c->ts_packets = flag;
	return channel_status(c, out, cap, len);
}

/* 0 when the message is about this connection's open channel, else the error_status. */
static uint16_t check_channel(const struct kh_emmmux_conn *c, const struct ids *x, uint16_t *culprit)
{
	if (!c->open || x->ch != c->channel_id) {
		*culprit = KH_SIM_P_DATA_CHANNEL_ID;
		return KH_SIM_EMMG_ERR_UNKNOWN_CHANNEL_ID;
	}
	if (x->client != c->client_id) {
		*culprit = KH_SIM_P_CLIENT_ID;
		return KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID;
	}
	return 0;
}

/* ---- streams ---- */

static struct kh_emmmux_stream *find_stream(struct kh_emmmux_conn *c, uint16_t id)
{
	for (size_t i = 0; i < KH_EMMG_MUX_MAX_STREAMS; i++)
		if (c->st[i].used && c->st[i].stream_id == id)
			return &c->st[i];
	return NULL;
}

static struct kh_emmmux_stream *free_slot(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c)
{
	struct kh_emmmux_stream *slot = NULL;
	size_t used = 0, max = cfg->max_streams;

	if (max == 0 || max > KH_EMMG_MUX_MAX_STREAMS)
		max = KH_EMMG_MUX_MAX_STREAMS;
	for (size_t i = 0; i < KH_EMMG_MUX_MAX_STREAMS; i++) {
		if (c->st[i].used)
			used++;
		else if (!slot)
			slot = &c->st[i];
	}
	return used < max ? slot : NULL;
}

static kh_err on_stream_setup(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, const struct ids *x,
			      uint64_t now_ms, uint8_t *out, size_t cap, size_t *len)
{
	uint16_t data_id = 0;
	uint8_t type = 0;
	struct kh_emmmux_stream *s;

	(void)kh_sim_u16(&c->msg, KH_SIM_P_DATA_ID, 0, &data_id);
	(void)kh_sim_u8(&c->msg, KH_SIM_P_DATA_TYPE, 0, &type);
	if (find_stream(c, x->st))
		return stream_error(c, x, KH_SIM_EMMG_ERR_STREAM_ID_IN_USE, out, cap, len);
	for (size_t i = 0; i < KH_EMMG_MUX_MAX_STREAMS; i++)
		if (c->st[i].used && c->st[i].data_id == data_id)
			return stream_error(c, x, KH_SIM_EMMG_ERR_DATA_ID_IN_USE, out, cap, len);
	if (type != KH_EMMG_DATA_EMM)
		return stream_error(c, x, KH_SIM_EMMG_ERR_INVALID_VALUE, out, cap, len); /* private data: not ours */
	if (!(s = free_slot(cfg, c)))
		return stream_error(c, x, KH_SIM_EMMG_ERR_TOO_MANY_STREAMS_CHANNEL, out, cap, len);
	memset(s, 0, sizeof *s);
	s->used = 1;
	s->stream_id = x->st;
	s->data_id = data_id;
	s->data_type = type;
	s->allocated = cfg->max_bandwidth; /* until it asks */
	s->since_ms = now_ms;
	return stream_reply(c, KH_SIM_EMMG_STREAM_STATUS, s, out, cap, len);
}

static kh_err on_bw_request(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, struct kh_emmmux_stream *s,
			    uint64_t now_ms, uint8_t *out, size_t cap, size_t *len)
{
	uint16_t want = 0;

	if (kh_sim_u16(&c->msg, KH_SIM_P_BANDWIDTH, 0, &want) == KH_OK) {
		s->allocated = want < cfg->max_bandwidth ? want : cfg->max_bandwidth;
		s->since_ms = now_ms;
		s->spent = 0;
	}
	return stream_reply(c, KH_SIM_EMMG_STREAM_BW_ALLOCATION, s, out, cap, len);
}

/* The credit of s at now_ms: a full burst at the allocation, growing at the allocated rate. */
static uint64_t credit(const struct kh_emmmux_stream *s, uint64_t now_ms)
{
	uint64_t burst = (uint64_t)s->allocated * KH_EMMG_BURST_MS / 8u;
	uint64_t elapsed = now_ms > s->since_ms ? now_ms - s->since_ms : 0;

	if (burst < KH_EMMG_BURST_MIN)
		burst = KH_EMMG_BURST_MIN;
	return burst + elapsed * s->allocated / 8u; /* kbit/s = bits per ms */
}

/* Every datagram whole (sections or packets, as the channel said); its total cost or 0. */
static uint64_t datagrams_cost(const struct kh_emmmux_conn *c)
{
	const uint8_t *dg;
	uint64_t total = 0;
	size_t n, one;

	for (size_t i = 0; kh_sim_bytes(&c->msg, KH_SIM_P_DATAGRAM, i, &dg, &n) == KH_OK; i++) {
		if ((one = kh_emmg_cost(c->ts_packets, dg, n)) == 0)
			return 0;
		total += one;
	}
	return total;
}

static kh_err on_data(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, struct kh_emmmux_stream *s,
		      const struct ids *x, uint64_t now_ms, uint8_t *out, size_t cap, size_t *len)
{
	uint16_t data_id = 0;
	uint64_t cost;
	const uint8_t *dg;
	size_t n;

	(void)kh_sim_u16(&c->msg, KH_SIM_P_DATA_ID, 0, &data_id);
	if (data_id != s->data_id)
		return stream_error(c, x, KH_SIM_EMMG_ERR_UNKNOWN_DATA_ID, out, cap, len);
	if ((cost = datagrams_cost(c)) == 0)
		return stream_error(c, x, KH_SIM_EMMG_ERR_INVALID_VALUE, out, cap, len);
	if (s->spent + cost > credit(s, now_ms)) {
		c->stats.exceeded++; /* dropped: the client runs clearly faster than allocated */
		return stream_error(c, x, KH_SIM_EMMG_ERR_EXCEEDED_BANDWIDTH, out, cap, len);
	}
	s->spent += cost;
	for (size_t i = 0; kh_sim_bytes(&c->msg, KH_SIM_P_DATAGRAM, i, &dg, &n) == KH_OK; i++) {
		c->stats.datagrams++;
		c->stats.bytes += n;
		if (cfg->on_data)
			cfg->on_data(cfg->ctx, data_id, c->ts_packets, dg, n);
	}
	return KH_OK;
}

static kh_err on_stream(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, const struct ids *x,
			uint64_t now_ms, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_emmmux_stream *s;

	if (c->msg.type == KH_SIM_EMMG_STREAM_SETUP)
		return on_stream_setup(cfg, c, x, now_ms, out, cap, len);
	if (!(s = find_stream(c, x->st)))
		return stream_error(c, x, KH_SIM_EMMG_ERR_UNKNOWN_STREAM_ID, out, cap, len);
	switch (c->msg.type) {
	case KH_SIM_EMMG_STREAM_TEST:
		return stream_reply(c, KH_SIM_EMMG_STREAM_STATUS, s, out, cap, len);
	case KH_SIM_EMMG_STREAM_CLOSE_REQUEST: {
		struct kh_emmmux_stream gone = *s;
		memset(s, 0, sizeof *s);
		return stream_reply(c, KH_SIM_EMMG_STREAM_CLOSE_RESPONSE, &gone, out, cap, len);
	}
	case KH_SIM_EMMG_STREAM_BW_REQUEST:
		return on_bw_request(cfg, c, s, now_ms, out, cap, len);
	default:
		return on_data(cfg, c, s, x, now_ms, out, cap, len);
	}
}

/* What an EMMG sends; status, allocation and close_response come from a mux only. */
static int emmg_sends(uint16_t type)
{
	switch (type) {
	case KH_SIM_EMMG_CHANNEL_SETUP:
	case KH_SIM_EMMG_CHANNEL_TEST:
	case KH_SIM_EMMG_CHANNEL_CLOSE:
	case KH_SIM_EMMG_CHANNEL_ERROR:
	case KH_SIM_EMMG_STREAM_SETUP:
	case KH_SIM_EMMG_STREAM_TEST:
	case KH_SIM_EMMG_STREAM_CLOSE_REQUEST:
	case KH_SIM_EMMG_STREAM_ERROR:
	case KH_SIM_EMMG_STREAM_BW_REQUEST:
	case KH_SIM_EMMG_DATA_PROVISION:
		return 1;
	default:
		return 0;
	}
}

static kh_err dispatch(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, uint64_t now_ms, uint8_t *out,
		       size_t cap, size_t *len, int *close)
{
	struct ids x = ids_of(&c->msg);
	uint16_t status, culprit = 0;

	if (c->msg.type == KH_SIM_EMMG_CHANNEL_SETUP)
		return on_channel_setup(cfg, c, &x, out, cap, len);
	if ((status = check_channel(c, &x, &culprit)) != 0)
		return channel_error(c, c->msg.version, &x, status, culprit, out, cap, len);
	switch (c->msg.type) {
	case KH_SIM_EMMG_CHANNEL_TEST:
		return channel_status(c, out, cap, len);
	case KH_SIM_EMMG_CHANNEL_CLOSE: {
		struct kh_emmmux_stats keep = c->stats;
		kh_emmmux_conn_init(c);
		c->stats = keep;
		*close = 1;
		return KH_OK;
	}
	case KH_SIM_EMMG_CHANNEL_ERROR:
	case KH_SIM_EMMG_STREAM_ERROR:
		return KH_OK; /* the EMMG's report: the caller logs it from c->msg; nothing to answer */
	default:
		return on_stream(cfg, c, &x, now_ms, out, cap, len);
	}
}

kh_err kh_emmmux_handle(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, const uint8_t *in, size_t n,
			uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len, int *close)
{
	struct ids x = {c->client_id, c->channel_id, 0};
	enum kh_sim_status st;
	uint16_t culprit = 0;
	uint8_t v;

	*out_len = 0;
	*close = 0;
	if (cap < KH_EMMG_OUT_MAX)
		return KH_ERR_BUF;
	c->stats.messages++;
	st = kh_sim_parse(KH_SIM_EMMG, in, n, &c->msg, &culprit);
	v = st == KH_SIM_OK ? c->msg.version : (c->open ? c->version : 2);
	if (st == KH_SIM_OK && !emmg_sends(c->msg.type)) {
		st = KH_SIM_UNKNOWN_TYPE;
		culprit = 0;
	}
	if (st != KH_SIM_OK)
		return channel_error(c, v, &x, kh_sim_error_status(KH_SIM_EMMG, st), culprit, out, cap, out_len);
	return dispatch(cfg, c, now_ms, out, cap, out_len, close);
}
