/*
 * The EMMG client engine (include/keyhole/emmg.h, docs/internals/emmg.md): channel_setup,
 * stream_setup, stream_BW_request in turn, then data_provision of EMM sections paced so the
 * bandwidth the mux allocated is never exceeded; the mux's tests answered, its errors fatal to
 * the connection (the caller reconnects after a back-off).
 */
#include <string.h>

#include "keyhole/emmg.h"

#define TS_LEN 188u
#define TS_PAYLOAD 184u

/* A section's whole length from its header, 0 when fewer than 3 bytes are there. */
static size_t section_len(const uint8_t *p, size_t n)
{
	if (n < 3)
		return 0;
	return 3u + (((size_t)p[1] & 0x0Fu) << 8 | p[2]);
}

/* Packets a section takes from a new packet: a pointer_field byte, then the section. */
static size_t section_cost(size_t len)
{
	return (len + 1u + TS_PAYLOAD - 1u) / TS_PAYLOAD * TS_LEN;
}

size_t kh_emmg_cost(int ts_packets, const uint8_t *dg, size_t n)
{
	size_t off = 0, cost = 0;

	if (n == 0)
		return 0;
	if (ts_packets) {
		if (n % TS_LEN)
			return 0;
		for (off = 0; off < n; off += TS_LEN)
			if (dg[off] != 0x47)
				return 0;
		return n;
	}
	while (off < n) {
		size_t len = section_len(dg + off, n - off);
		if (len == 0 || len > n - off)
			return 0;
		cost += section_cost(len);
		off += len;
	}
	return cost;
}

const char *kh_emmg_state_name(enum kh_emmg_state s)
{
	static const char *const names[] = {"idle", "channel setup", "stream setup", "bandwidth request",
					    "ready", "closed", "failed"};
	return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

uint64_t kh_emmg_backoff_ms(unsigned attempt)
{
	uint64_t ms = 1000;

	while (attempt-- > 0 && ms < KH_EMMG_BACKOFF_MAX_MS)
		ms *= 2;
	return ms < KH_EMMG_BACKOFF_MAX_MS ? ms : KH_EMMG_BACKOFF_MAX_MS;
}

void kh_emmg_init(struct kh_emmg *e, const struct kh_emmg_cfg *cfg)
{
	memset(e, 0, sizeof *e);
	e->cfg = *cfg;
}

/* Every message of ours starts with client_id and data_channel_id. */
static void start(const struct kh_emmg *e, struct kh_sim_builder *b, uint16_t type, uint8_t *out, size_t cap)
{
	kh_sim_start(b, KH_SIM_EMMG, e->cfg.version, type, out, cap);
	kh_sim_add_u32(b, KH_SIM_P_CLIENT_ID, e->cfg.client_id);
	kh_sim_add_u16(b, KH_SIM_P_DATA_CHANNEL_ID, e->cfg.channel_id);
}

static kh_err channel_msg(const struct kh_emmg *e, uint16_t type, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	start(e, &b, type, out, cap);
	if (type != KH_SIM_EMMG_CHANNEL_CLOSE)
		kh_sim_add_u8(&b, KH_SIM_P_EMM_SECTION_TSPKT, e->cfg.ts_packets);
	return kh_sim_finish(&b, len, NULL);
}

static kh_err stream_msg(const struct kh_emmg *e, uint16_t type, uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;

	start(e, &b, type, out, cap);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, e->cfg.stream_id);
	if (type == KH_SIM_EMMG_STREAM_SETUP || type == KH_SIM_EMMG_STREAM_STATUS) {
		kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, e->cfg.data_id);
		kh_sim_add_u8(&b, KH_SIM_P_DATA_TYPE, KH_EMMG_DATA_EMM);
	}
	if (type == KH_SIM_EMMG_STREAM_BW_REQUEST)
		kh_sim_add_u16(&b, KH_SIM_P_BANDWIDTH, e->cfg.bandwidth);
	return kh_sim_finish(&b, len, NULL);
}

kh_err kh_emmg_start(struct kh_emmg *e, uint8_t *out, size_t cap, size_t *len)
{
	kh_err r;

	*len = 0;
	if (e->state != KH_EMMG_IDLE)
		return KH_ERR_INVAL;
	if ((r = channel_msg(e, KH_SIM_EMMG_CHANNEL_SETUP, out, cap, len)) == KH_OK)
		e->state = KH_EMMG_CHANNEL;
	return r;
}

kh_err kh_emmg_close(struct kh_emmg *e, uint8_t *out, size_t cap, size_t *len)
{
	kh_err r;

	*len = 0;
	if (e->state == KH_EMMG_IDLE)
		return KH_ERR_INVAL;
	if ((r = channel_msg(e, KH_SIM_EMMG_CHANNEL_CLOSE, out, cap, len)) == KH_OK)
		e->state = KH_EMMG_CLOSED;
	return r;
}

static kh_err failed(struct kh_emmg *e, uint16_t type, uint16_t status)
{
	e->state = KH_EMMG_FAILED;
	e->error_type = type;
	e->error = status;
	return KH_OK;
}

/* The message is about our channel (and stream, when it names one). */
static int ours(const struct kh_emmg *e, const struct kh_sim_msg *m)
{
	uint32_t client = 0;
	uint16_t ch = 0, st = e->cfg.stream_id;

	(void)kh_sim_u32(m, KH_SIM_P_CLIENT_ID, 0, &client);
	(void)kh_sim_u16(m, KH_SIM_P_DATA_CHANNEL_ID, 0, &ch);
	(void)kh_sim_u16(m, KH_SIM_P_DATA_STREAM_ID, 0, &st);
	return client == e->cfg.client_id && ch == e->cfg.channel_id && st == e->cfg.stream_id;
}

/* The allocation: the stream may send from now on at that rate. */
static kh_err on_allocation(struct kh_emmg *e, uint64_t now_ms)
{
	uint16_t bw = 0;

	if (kh_sim_u16(&e->msg, KH_SIM_P_BANDWIDTH, 0, &bw) != KH_OK || bw == 0)
		return failed(e, KH_SIM_EMMG_STREAM_BW_ALLOCATION, 0); /* no bandwidth: nothing can go */
	e->allocated = bw;
	if (e->state == KH_EMMG_BANDWIDTH) {
		e->state = KH_EMMG_READY;
		e->ready_ms = now_ms;
		e->sent = 0;
	}
	return KH_OK;
}

/* The answer a state expects: channel_status, stream_status, stream_BW_allocation. */
static uint16_t awaited(enum kh_emmg_state s)
{
	switch (s) {
	case KH_EMMG_CHANNEL:
		return KH_SIM_EMMG_CHANNEL_STATUS;
	case KH_EMMG_STREAM:
		return KH_SIM_EMMG_STREAM_STATUS;
	case KH_EMMG_BANDWIDTH:
		return KH_SIM_EMMG_STREAM_BW_ALLOCATION;
	default:
		return 0;
	}
}

static kh_err step(struct kh_emmg *e, uint64_t now_ms, uint8_t *out, size_t cap, size_t *len)
{
	uint16_t t = e->msg.type;

	if (t == KH_SIM_EMMG_CHANNEL_TEST)
		return channel_msg(e, KH_SIM_EMMG_CHANNEL_STATUS, out, cap, len);
	if (t == KH_SIM_EMMG_STREAM_TEST)
		return stream_msg(e, KH_SIM_EMMG_STREAM_STATUS, out, cap, len);
	if (t == KH_SIM_EMMG_STREAM_BW_ALLOCATION && (e->state == KH_EMMG_BANDWIDTH || e->state == KH_EMMG_READY))
		return on_allocation(e, now_ms); /* a new allocation at any time: the rate changes */
	if (t != awaited(e->state))
		return failed(e, t, 0);
	if (e->state == KH_EMMG_CHANNEL) {
		e->state = KH_EMMG_STREAM;
		return stream_msg(e, KH_SIM_EMMG_STREAM_SETUP, out, cap, len);
	}
	e->state = KH_EMMG_BANDWIDTH;
	return stream_msg(e, KH_SIM_EMMG_STREAM_BW_REQUEST, out, cap, len);
}

kh_err kh_emmg_handle(struct kh_emmg *e, const uint8_t *in, size_t n, uint64_t now_ms, uint8_t *out, size_t cap,
		      size_t *len)
{
	uint16_t status = 0;

	*len = 0;
	if (cap < KH_EMMG_OUT_MAX)
		return KH_ERR_BUF;
	if (e->state == KH_EMMG_IDLE || e->state == KH_EMMG_CLOSED || e->state == KH_EMMG_FAILED)
		return KH_OK; /* nothing more is expected on this connection */
	if (kh_sim_parse(KH_SIM_EMMG, in, n, &e->msg, NULL) != KH_SIM_OK)
		return failed(e, 0, 0);
	if (e->msg.type == KH_SIM_EMMG_CHANNEL_ERROR || e->msg.type == KH_SIM_EMMG_STREAM_ERROR) {
		e->errors_seen++;
		(void)kh_sim_u16(&e->msg, KH_SIM_P_ERROR_STATUS, 0, &status);
		return failed(e, e->msg.type, status);
	}
	if (!ours(e, &e->msg))
		return failed(e, e->msg.type, 0);
	return step(e, now_ms, out, cap, len);
}

uint64_t kh_emmg_send_at(const struct kh_emmg *e, uint64_t cost)
{
	uint64_t bits;

	if (e->state != KH_EMMG_READY || e->allocated == 0)
		return UINT64_MAX;
	bits = (e->sent + cost) * 8u;
	/* kbit/s is bits per ms: round up so the rate is never exceeded */
	return e->ready_ms + (bits + e->allocated - 1u) / e->allocated;
}

/* Section sec[0..len) as TS packets on PID 0x1FFF into pk (cap bytes); their size, 0 when short. */
static size_t packetise(const uint8_t *sec, size_t len, uint8_t *pk, size_t cap)
{
	size_t off = 0, out = 0;
	unsigned cc = 0;

	while (off < len) {
		uint8_t *p = pk + out;
		size_t hdr = 4, room = TS_PAYLOAD - (off == 0 ? 1u : 0u);
		size_t take = len - off < room ? len - off : room;

		if (out + TS_LEN > cap)
			return 0;
		p[0] = 0x47;
		p[1] = (uint8_t)((off == 0 ? 0x40u : 0u) | 0x1Fu);
		p[2] = 0xFF;
		p[3] = (uint8_t)(0x10u | (cc++ & 0x0Fu));
		if (off == 0)
			p[hdr++] = 0;
		memcpy(p + hdr, sec + off, take);
		memset(p + hdr + take, 0xFF, TS_LEN - hdr - take);
		off += take;
		out += TS_LEN;
	}
	return out;
}

/* One section as a datagram; 0 when the message would grow past KH_EMMG_DATA_MAX. */
static int add_section(const struct kh_emmg *e, struct kh_sim_builder *b, const uint8_t *sec, size_t len)
{
	uint8_t pk[KH_EMMG_DATA_MAX];
	size_t pn = len;

	if (e->cfg.ts_packets && (pn = packetise(sec, len, pk, sizeof pk)) == 0)
		return 0;
	if (b->len + 4u + pn > KH_EMMG_DATA_MAX)
		return 0;
	kh_sim_add(b, KH_SIM_P_DATAGRAM, e->cfg.ts_packets ? pk : sec, pn);
	return 1;
}

kh_err kh_emmg_provision(struct kh_emmg *e, const uint8_t *secs, size_t n, size_t *off, uint64_t now_ms,
			 uint8_t *out, size_t cap, size_t *len)
{
	struct kh_sim_builder b;
	size_t count = 0, at = *off;
	uint64_t cost = 0;
	kh_err r;

	*len = 0;
	if (e->state != KH_EMMG_READY)
		return KH_ERR_INVAL;
	start(e, &b, KH_SIM_EMMG_DATA_PROVISION, out, cap < KH_EMMG_DATA_MAX ? cap : KH_EMMG_DATA_MAX);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, e->cfg.stream_id);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, e->cfg.data_id);
	while (at < n) {
		size_t sl = section_len(secs + at, n - at);
		if (sl == 0 || sl > n - at)
			return KH_ERR_FORMAT;
		if (kh_emmg_send_at(e, cost + section_cost(sl)) > now_ms)
			break;
		if (!add_section(e, &b, secs + at, sl)) {
			if (count == 0)
				return KH_ERR_TOO_LARGE;
			break;
		}
		cost += section_cost(sl);
		at += sl;
		count++;
	}
	if (count == 0)
		return KH_OK;
	if ((r = kh_sim_finish(&b, len, NULL)) != KH_OK) {
		*len = 0;
		return r;
	}
	e->sent += cost;
	*off = at;
	return KH_OK;
}
