/*
 * libFuzzer harness: the mux side of EMMG<->MUX (include/keyhole/emmg.h, kh_emmmux_handle), which
 * takes whatever bytes an EMMG connection sends.
 *
 * The first input byte sets the mux's configuration (max_bandwidth, max_streams, whether
 * client_ID is in use elsewhere); the second, how far the clock moves per message; the rest is a
 * TCP byte stream cut by kh_sim_frame, each message handed to the engine at once. Checked:
 * - the engine returns KH_OK (the answer always fits KH_EMMG_OUT_MAX) and never asks to close
 *   except after a channel_close that was accepted;
 * - every answer parses as EMMG<->MUX and is one a mux sends (status, allocation, close_response,
 *   error); a channel_error or stream_error carries an error_status of the standard's table;
 * - a refusal changes nothing: the channel and streams are as before (counters aside);
 * - every datagram handed on lies inside the message, is whole sections or whole TS packets as
 *   the channel said (kh_emmg_cost non-zero), and comes only from an accepted data_provision
 *   for a stream that exists, within the allocation (the engine's credit);
 * - an allocation never exceeds max_bandwidth.
 */
#include <string.h>

#include "keyhole/emmg.h"

#include "fuzz_common.h"

static struct kh_emmmux_cfg cfg;
static struct kh_emmmux_conn conn, before;
static const uint8_t *msg_lo, *msg_hi;
static size_t handed;
static int busy_flag;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

static void on_data(void *ctx, uint16_t data_id, int ts, const uint8_t *dg, size_t n)
{
	(void)ctx, (void)data_id;
	CHECK(dg >= msg_lo && dg + n <= msg_hi);
	CHECK(kh_emmg_cost(ts, dg, n) > 0);
	CHECK(ts == conn.ts_packets);
	handed++;
}

static int busy(void *ctx, uint32_t client)
{
	(void)ctx, (void)client;
	return busy_flag;
}

static int mux_sends(uint16_t t)
{
	return t == KH_SIM_EMMG_CHANNEL_STATUS || t == KH_SIM_EMMG_CHANNEL_ERROR || t == KH_SIM_EMMG_STREAM_STATUS ||
	       t == KH_SIM_EMMG_STREAM_CLOSE_RESPONSE || t == KH_SIM_EMMG_STREAM_ERROR ||
	       t == KH_SIM_EMMG_STREAM_BW_ALLOCATION;
}

/* The state a refusal must leave as it was: channel and streams. */
static int same_state(const struct kh_emmmux_conn *a, const struct kh_emmmux_conn *b)
{
	return a->open == b->open && a->version == b->version && a->ts_packets == b->ts_packets &&
	       a->channel_id == b->channel_id && a->client_id == b->client_id &&
	       memcmp(a->st, b->st, sizeof a->st) == 0;
}

static void check_answer(const uint8_t *out, size_t len)
{
	static struct kh_sim_msg m;
	uint16_t status = 0, bw = 0;

	CHECK(kh_sim_parse(KH_SIM_EMMG, out, len, &m, NULL) == KH_SIM_OK);
	CHECK(mux_sends(m.type));
	if (m.type == KH_SIM_EMMG_CHANNEL_ERROR || m.type == KH_SIM_EMMG_STREAM_ERROR) {
		CHECK(kh_sim_u16(&m, KH_SIM_P_ERROR_STATUS, 0, &status) == KH_OK);
		CHECK(status >= 0x0001 && status <= 0x0014);
		CHECK(same_state(&conn, &before));
	}
	if (m.type == KH_SIM_EMMG_STREAM_BW_ALLOCATION) {
		CHECK(kh_sim_u16(&m, KH_SIM_P_BANDWIDTH, 0, &bw) == KH_OK);
		CHECK(bw <= cfg.max_bandwidth);
	}
}

static void one(const uint8_t *m, size_t n, uint64_t now)
{
	uint8_t out[KH_EMMG_OUT_MAX];
	size_t len = 0, was = handed;
	int close = 0, was_open = conn.open;

	before = conn;
	msg_lo = m;
	msg_hi = m + n;
	CHECK(kh_emmmux_handle(&cfg, &conn, m, n, now, out, sizeof out, &len, &close) == KH_OK);
	if (len)
		check_answer(out, len);
	if (handed != was)
		CHECK(len == 0 && conn.open); /* data only when accepted, on an open channel */
	if (close)
		CHECK(was_open && len == 0 && !conn.open);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t now = 0, step;
	size_t need;

	if (size < 2)
		return 0;
	kh_emmmux_cfg_defaults(&cfg);
	cfg.client_id = 0x4B480000u;
	cfg.max_bandwidth = (uint16_t)(1u + (data[0] & 0x3Fu) * 40u);
	cfg.max_streams = (uint16_t)(1u + ((data[0] >> 6) & 1u) * 3u);
	busy_flag = data[0] >> 7;
	cfg.on_data = on_data;
	cfg.busy = busy;
	step = data[1];
	kh_emmmux_conn_init(&conn);
	handed = 0;
	data += 2, size -= 2;
	while (size > 0) {
		if (kh_sim_frame(data, size, &need) != KH_SIM_OK) {
			uint8_t out[KH_EMMG_OUT_MAX];
			size_t len = 0;
			before = conn; /* the refusal of what cannot be framed changes nothing either */
			CHECK(kh_emmmux_frame_error(&conn, KH_SIM_TOO_LONG, out, sizeof out, &len) == KH_OK);
			check_answer(out, len);
			return 0;
		}
		if (need > size)
			need = size; /* the end of the stream: a cut message, handed as it is */
		one(data, need, now);
		now += step;
		data += need, size -= need;
	}
	return 0;
}
