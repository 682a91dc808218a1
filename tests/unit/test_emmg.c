/*
 * Unit tests for both EMMG<->MUX engines (include/keyhole/emmg.h): the EMMG client talking to the
 * mux engine in memory through whole sessions (versions 2 and 3, sections and TS packets), the
 * datagrams the mux hands on equal to the sections provisioned and the pacing computed from the
 * allocation (the mux allocating less than asked); each error_status the mux emits, each followed
 * by a good message still answered; the client failing on the mux's errors, answering its tests
 * and following a new allocation; the back-off.
 */
#include <string.h>

#include "keyhole/emmg.h"
#include "testutil.h"

#define CLIENT 0x4B480007u

static struct kh_emmmux_cfg mcfg;
static struct kh_emmmux_conn mconn;
static struct kh_emmg cli;
static uint8_t got[1 << 16]; /* the datagrams the mux handed on, back to back */
static size_t got_len, got_calls;
static int busy_answer;
static uint8_t reply[KH_EMMG_OUT_MAX];
static size_t reply_len;
static int closed;
static struct kh_sim_msg rmsg;
static uint8_t req[KH_EMMG_DATA_MAX];

static void on_data(void *ctx, uint16_t data_id, int ts, const uint8_t *dg, size_t n)
{
	(void)ctx, (void)ts;
	assert_int_equal(data_id, 0x0021);
	assert_true(got_len + n <= sizeof got);
	memcpy(got + got_len, dg, n);
	got_len += n;
	got_calls++;
}

static int busy(void *ctx, uint32_t client)
{
	(void)ctx, (void)client;
	return busy_answer;
}

static int setup(void **state)
{
	(void)state;
	kh_emmmux_cfg_defaults(&mcfg);
	mcfg.client_id = CLIENT;
	mcfg.max_bandwidth = 300;
	mcfg.max_streams = 2;
	mcfg.on_data = on_data;
	mcfg.busy = busy;
	kh_emmmux_conn_init(&mconn);
	got_len = got_calls = 0;
	busy_answer = 0;
	return 0;
}

/* A message to the mux at now_ms; its answer parsed into rmsg. */
static void to_mux(const uint8_t *m, size_t n, uint64_t now_ms)
{
	assert_int_equal(kh_emmmux_handle(&mcfg, &mconn, m, n, now_ms, reply, sizeof reply, &reply_len, &closed),
			 KH_OK);
	if (reply_len)
		assert_int_equal(kh_sim_parse(KH_SIM_EMMG, reply, reply_len, &rmsg, NULL), KH_SIM_OK);
}

static void built_to_mux(struct kh_sim_builder *b, uint64_t now_ms)
{
	size_t n = 0;
	assert_int_equal(kh_sim_finish(b, &n, NULL), KH_OK);
	to_mux(b->buf, n, now_ms);
}

static uint16_t ru16(uint16_t type)
{
	uint16_t v = 0;
	assert_int_equal(kh_sim_u16(&rmsg, type, 0, &v), KH_OK);
	return v;
}

static void expect(uint16_t type, uint16_t status)
{
	assert_true(reply_len > 0);
	assert_int_equal(rmsg.type, type);
	if (status)
		assert_int_equal(ru16(KH_SIM_P_ERROR_STATUS), status);
}

/* An EMM-like section of len bytes (3-byte header included), its bytes from seed. */
static size_t section(uint8_t *p, size_t len, unsigned seed)
{
	p[0] = 0x82;
	p[1] = (uint8_t)(0x70u | ((len - 3u) >> 8));
	p[2] = (uint8_t)(len - 3u);
	for (size_t i = 3; i < len; i++)
		p[i] = (uint8_t)(seed * 17u + i);
	return len;
}

/* The client's setup through the mux: channel, stream, bandwidth. */
static void client_setup(uint8_t version, uint8_t ts, uint16_t ask, uint64_t now_ms)
{
	struct kh_emmg_cfg c = {.client_id = CLIENT, .channel_id = 5, .stream_id = 9, .data_id = 0x0021,
				.bandwidth = ask, .version = version, .ts_packets = ts};
	uint8_t msg[KH_EMMG_OUT_MAX];
	size_t n = 0;

	kh_emmg_init(&cli, &c);
	assert_int_equal(kh_emmg_start(&cli, msg, sizeof msg, &n), KH_OK);
	assert_int_equal(cli.state, KH_EMMG_CHANNEL);
	for (int step = 0; step < 3; step++) {
		to_mux(msg, n, now_ms);
		assert_true(reply_len > 0);
		assert_int_equal(rmsg.version, version);
		assert_int_equal(kh_emmg_handle(&cli, reply, reply_len, now_ms, msg, sizeof msg, &n), KH_OK);
	}
	assert_int_equal(n, 0);
	assert_int_equal(cli.state, KH_EMMG_READY);
}

/* Provision `secs` through the mux at the earliest times the pacing allows; checks the pacing. */
static void run_carousel(const uint8_t *secs, size_t n)
{
	size_t off = 0, len = 0, msgs = 0;
	uint64_t now = cli.ready_ms;

	while (off < n) {
		size_t before = off;
		uint64_t t;

		assert_int_equal(kh_emmg_provision(&cli, secs, n, &off, now, req, sizeof req, &len), KH_OK);
		if (len == 0) {
			size_t sl = 3u + (((size_t)secs[off + 1] & 0x0Fu) << 8 | secs[off + 2]);
			t = kh_emmg_send_at(&cli, (sl + 1u + 183u) / 184u * 188u);
			assert_true(t > now); /* nothing went: it was too early */
			now = t;
			continue;
		}
		assert_true(off > before);
		/* the allocation honoured: what went by now is within allocated kbit/s since ready */
		assert_true(cli.sent * 8u <= (now - cli.ready_ms) * cli.allocated);
		to_mux(req, len, now);
		assert_int_equal(reply_len, 0); /* accepted: no exceeded_bandwidth */
		msgs++;
	}
	assert_true(msgs > 1); /* paced in several messages, not one burst */
}

static void test_session_sections(void **state)
{
	static uint8_t secs[40000];
	size_t n = 0;
	unsigned k = 0;
	uint8_t msg[KH_EMMG_OUT_MAX];
	size_t len = 0;

	(void)state;
	client_setup(2, 0, 500, 1000);
	assert_int_equal(cli.allocated, 300); /* the mux allocated less than asked */
	while (n + 200 < sizeof secs)
		n += section(secs + n, 40u + (k * 37u) % 150u, k), k++;
	run_carousel(secs, n);
	assert_int_equal(got_len, n);
	assert_memory_equal(got, secs, n);
	assert_int_equal(got_calls, k); /* one section per datagram */
	/* about n TS bytes at 300 kbit/s: the pacing took its time */
	assert_true(cli.sent * 8u / 300u >= 1000u);
	assert_int_equal(mconn.stats.exceeded, 0);
	assert_int_equal(kh_emmg_close(&cli, msg, sizeof msg, &len), KH_OK);
	to_mux(msg, len, 999999);
	assert_int_equal(reply_len, 0);
	assert_int_equal(closed, 1);
	assert_int_equal(mconn.open, 0);
}

static void test_session_packets_v3(void **state)
{
	static uint8_t secs[6000];
	size_t n = 0;
	unsigned k = 0;

	(void)state;
	client_setup(3, 1, 100, 0);
	assert_int_equal(cli.allocated, 100); /* less than the maximum: what was asked */
	while (n + 400 < sizeof secs)
		n += section(secs + n, 100u + (k * 53u) % 290u, k), k++;
	run_carousel(secs, n);
	/* each datagram is the section packetised: pointer_field 0 then the section */
	assert_int_equal(got_len % 188u, 0);
	assert_int_equal(got[0], 0x47);
	assert_int_equal(got[1] & 0x40, 0x40);
	assert_int_equal(got[4], 0);
	assert_memory_equal(got + 5, secs, 100);
	assert_int_equal(got_calls, k);
}

/* ---- the mux's refusals ---- */

static void m_start(struct kh_sim_builder *b, uint8_t v, uint16_t type, uint32_t client, uint16_t ch)
{
	kh_sim_start(b, KH_SIM_EMMG, v, type, req, sizeof req);
	kh_sim_add_u32(b, KH_SIM_P_CLIENT_ID, client);
	kh_sim_add_u16(b, KH_SIM_P_DATA_CHANNEL_ID, ch);
}

static void m_channel(uint16_t type, uint32_t client, uint16_t ch, uint8_t flag)
{
	struct kh_sim_builder b;
	m_start(&b, 3, type, client, ch);
	if (type == KH_SIM_EMMG_CHANNEL_SETUP)
		kh_sim_add_u8(&b, KH_SIM_P_EMM_SECTION_TSPKT, flag);
	built_to_mux(&b, 0);
}

static void m_stream_setup(uint16_t ch, uint16_t st, uint16_t data_id, uint8_t type)
{
	struct kh_sim_builder b;
	m_start(&b, 3, KH_SIM_EMMG_STREAM_SETUP, CLIENT, ch);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, st);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, data_id);
	kh_sim_add_u8(&b, KH_SIM_P_DATA_TYPE, type);
	built_to_mux(&b, 0);
}

static void m_stream(uint16_t type, uint16_t st, int bw)
{
	struct kh_sim_builder b;
	m_start(&b, 3, type, CLIENT, 5);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, st);
	if (bw >= 0)
		kh_sim_add_u16(&b, KH_SIM_P_BANDWIDTH, (uint16_t)bw);
	built_to_mux(&b, 0);
}

static void m_data(uint16_t st, uint16_t data_id, const uint8_t *dg, size_t n, uint64_t now_ms)
{
	struct kh_sim_builder b;
	static uint8_t copy[KH_EMMG_DATA_MAX];

	memcpy(copy, dg, n);
	m_start(&b, 3, KH_SIM_EMMG_DATA_PROVISION, CLIENT, 5);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, st);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, data_id);
	kh_sim_add(&b, KH_SIM_P_DATAGRAM, copy, n);
	built_to_mux(&b, now_ms);
}

/* After a refusal the connection still answers: channel_test gets channel_status. */
static void still_answers(void)
{
	m_channel(KH_SIM_EMMG_CHANNEL_TEST, CLIENT, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_STATUS, 0);
	assert_int_equal(closed, 0);
}

static void raw(const char *hex)
{
	uint8_t m[64];
	long n = kh_test_unhex(hex, m, sizeof m);
	assert_true(n > 0);
	to_mux(m, (size_t)n, 0);
}

static void test_mux_parse_errors(void **state)
{
	(void)state;
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_STATUS, 0);
	raw("03 0011 00");						/* short header */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_INVALID_MESSAGE);
	still_answers();
	raw("04 0012 000E 0001 0004 4B480007 0003 0002 0005"); /* version 4 */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNSUPPORTED_VERSION);
	still_answers();
	raw("03 0099 0000"); /* no such type */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_MESSAGE_TYPE);
	still_answers();
	raw("03 0013 0013 0001 0004 4B480007 0003 0002 0005 0002 0001 00"); /* channel_status: a mux's */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_MESSAGE_TYPE);
	still_answers();
	raw("03 0012 FFFF"); /* announces more than a message may hold */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_MESSAGE_TOO_LONG);
	still_answers();
	raw("03 0012 0013 0001 0004 4B480007 0003 0002 0005 0099 0001 00"); /* parameter 0x0099 */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_PARAM_TYPE);
	still_answers();
	raw("03 0012 000D 0001 0003 4B4800 0003 0002 0005"); /* client_id of 3 bytes */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_INCONSISTENT_LENGTH);
	still_answers();
	raw("03 0012 0006 0003 0002 0005"); /* no client_id */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_MISSING_PARAM);
	still_answers();
	assert_int_equal(mconn.stats.errors_sent, 8);
}

static void test_mux_channel_errors(void **state)
{
	(void)state;
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT + 1, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID);
	busy_answer = 1;
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_CLIENT_ID_IN_USE);
	busy_answer = 0;
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 2);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_INVALID_VALUE);
	m_channel(KH_SIM_EMMG_CHANNEL_TEST, CLIENT, 5, 0); /* nothing is open yet */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CHANNEL_ID);
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_STATUS, 0);
	assert_int_equal(ru16(KH_SIM_P_DATA_CHANNEL_ID), 5);
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_CHANNEL_ID_IN_USE);
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 6, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_TOO_MANY_CHANNELS);
	m_channel(KH_SIM_EMMG_CHANNEL_TEST, CLIENT, 6, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CHANNEL_ID);
	m_channel(KH_SIM_EMMG_CHANNEL_TEST, CLIENT + 1, 5, 0);
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID);
	still_answers();
}

static void test_mux_stream_errors(void **state)
{
	uint8_t sec[300], bad[10] = {0x82, 0x70, 0x20};
	size_t n = section(sec, sizeof sec, 1);

	(void)state;
	m_channel(KH_SIM_EMMG_CHANNEL_SETUP, CLIENT, 5, 0);
	m_stream_setup(4, 1, 0x21, 0); /* another channel */
	expect(KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CHANNEL_ID);
	m_stream_setup(5, 1, 0x21, 1); /* private data: not an EMM */
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_INVALID_VALUE);
	m_stream_setup(5, 1, 0x21, 0);
	expect(KH_SIM_EMMG_STREAM_STATUS, 0);
	assert_int_equal(ru16(KH_SIM_P_DATA_ID), 0x21);
	m_stream_setup(5, 1, 0x22, 0);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_STREAM_ID_IN_USE);
	m_stream_setup(5, 2, 0x21, 0);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_DATA_ID_IN_USE);
	m_stream_setup(5, 2, 0x22, 0);
	expect(KH_SIM_EMMG_STREAM_STATUS, 0);
	m_stream_setup(5, 3, 0x23, 0); /* max_streams 2 */
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_TOO_MANY_STREAMS_CHANNEL);
	m_stream(KH_SIM_EMMG_STREAM_TEST, 7, -1);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_STREAM_ID);
	m_stream(KH_SIM_EMMG_STREAM_TEST, 2, -1);
	expect(KH_SIM_EMMG_STREAM_STATUS, 0);
	m_stream(KH_SIM_EMMG_STREAM_BW_REQUEST, 1, 8); /* 8 kbit/s: 1 byte per ms */
	expect(KH_SIM_EMMG_STREAM_BW_ALLOCATION, 0);
	assert_int_equal(ru16(KH_SIM_P_BANDWIDTH), 8);
	m_stream(KH_SIM_EMMG_STREAM_BW_REQUEST, 1, -1); /* no bandwidth: the allocation is told again */
	assert_int_equal(ru16(KH_SIM_P_BANDWIDTH), 8);
	m_data(1, 0x22, sec, n, 0); /* the other stream's data_id */
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_DATA_ID);
	m_data(1, 0x21, bad, sizeof bad, 0); /* not a whole section */
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_INVALID_VALUE);
	m_data(9, 0x21, sec, n, 0);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_STREAM_ID);
	assert_int_equal(got_len, 0);
	/* 4096 bytes of burst at 1 byte/ms: 10 sections of 376 TS bytes fit, the 11th does not */
	for (int i = 0; i < 10; i++) {
		m_data(1, 0x21, sec, n, 0);
		assert_int_equal(reply_len, 0);
	}
	m_data(1, 0x21, sec, n, 0);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_EXCEEDED_BANDWIDTH);
	assert_int_equal(got_len, 10 * n); /* the refused one is not handed on */
	m_data(1, 0x21, sec, n, 376); /* 376 ms later there is credit again */
	assert_int_equal(reply_len, 0);
	assert_int_equal(got_len, 11 * n);
	assert_int_equal(mconn.stats.exceeded, 1);
	m_stream(KH_SIM_EMMG_STREAM_CLOSE_REQUEST, 1, -1);
	expect(KH_SIM_EMMG_STREAM_CLOSE_RESPONSE, 0);
	m_data(1, 0x21, sec, n, 1000);
	expect(KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_STREAM_ID);
	still_answers();
}

/* ---- the client's side of trouble ---- */

/* A message as the mux sends it to the client (channel 5, stream 9). */
static size_t from_mux(uint8_t *m, size_t cap, uint16_t type, uint16_t status, int bw)
{
	struct kh_sim_builder b;
	size_t n = 0;

	kh_sim_start(&b, KH_SIM_EMMG, 2, type, m, cap);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, CLIENT);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, 5);
	if (type != KH_SIM_EMMG_CHANNEL_TEST && type != KH_SIM_EMMG_CHANNEL_ERROR)
		kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, 9);
	if (status)
		kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, status);
	if (bw >= 0)
		kh_sim_add_u16(&b, KH_SIM_P_BANDWIDTH, (uint16_t)bw);
	assert_int_equal(kh_sim_finish(&b, &n, NULL), KH_OK);
	return n;
}

static void test_client(void **state)
{
	uint8_t m[256], out[KH_EMMG_OUT_MAX], secs[600];
	struct kh_emmg_cfg keep;
	size_t n, len = 0, off = 0, sn = section(secs, 300, 2);

	(void)state;
	sn += section(secs + sn, 300, 3);
	client_setup(2, 0, 200, 50);
	keep = cli.cfg;
	assert_int_equal(cli.allocated, 200);
	/* the mux's tests are answered */
	n = from_mux(m, sizeof m, KH_SIM_EMMG_CHANNEL_TEST, 0, -1);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 60, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_sim_parse(KH_SIM_EMMG, out, len, &rmsg, NULL), KH_SIM_OK);
	assert_int_equal(rmsg.type, KH_SIM_EMMG_CHANNEL_STATUS);
	n = from_mux(m, sizeof m, KH_SIM_EMMG_STREAM_TEST, 0, -1);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 60, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_sim_parse(KH_SIM_EMMG, out, len, &rmsg, NULL), KH_SIM_OK);
	assert_int_equal(rmsg.type, KH_SIM_EMMG_STREAM_STATUS);
	assert_int_equal(ru16(KH_SIM_P_DATA_ID), 0x21);
	/* a lower allocation later: the pacing follows it from then on */
	n = from_mux(m, sizeof m, KH_SIM_EMMG_STREAM_BW_ALLOCATION, 0, 8);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 70, out, sizeof out, &len), KH_OK);
	assert_int_equal(cli.allocated, 8);
	assert_int_equal(kh_emmg_send_at(&cli, 376), 50u + 376u);
	assert_int_equal(kh_emmg_provision(&cli, secs, sn, &off, 50u + 375u, out, sizeof out, &len), KH_OK);
	assert_int_equal(len, 0);
	assert_int_equal(off, 0);
	assert_int_equal(kh_emmg_provision(&cli, secs, sn, &off, 50u + 376u, req, sizeof req, &len), KH_OK);
	assert_true(len > 0);
	assert_int_equal(off, 300); /* one section: the second would be early */
	/* a stream_error from the mux: failed, the status kept, nothing more provisioned */
	n = from_mux(m, sizeof m, KH_SIM_EMMG_STREAM_ERROR, KH_SIM_EMMG_ERR_EXCEEDED_BANDWIDTH, -1);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 500, out, sizeof out, &len), KH_OK);
	assert_int_equal(len, 0);
	assert_int_equal(cli.state, KH_EMMG_FAILED);
	assert_int_equal(cli.error, KH_SIM_EMMG_ERR_EXCEEDED_BANDWIDTH);
	assert_int_equal(cli.error_type, KH_SIM_EMMG_STREAM_ERROR);
	assert_int_equal(kh_emmg_provision(&cli, secs, sn, &off, 100000, req, sizeof req, &len), KH_ERR_INVAL);
	assert_int_equal(kh_emmg_send_at(&cli, 1), UINT64_MAX);
	/* a channel_error during the setup fails it too */
	kh_emmg_init(&cli, &keep);
	assert_int_equal(kh_emmg_start(&cli, out, sizeof out, &len), KH_OK);
	n = from_mux(m, sizeof m, KH_SIM_EMMG_CHANNEL_ERROR, KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID, -1);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 0, out, sizeof out, &len), KH_OK);
	assert_int_equal(cli.state, KH_EMMG_FAILED);
	assert_int_equal(cli.error, KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID);
	/* an answer out of turn (an allocation before the stream is set up) fails it */
	kh_emmg_init(&cli, &keep);
	assert_int_equal(kh_emmg_start(&cli, out, sizeof out, &len), KH_OK);
	n = from_mux(m, sizeof m, KH_SIM_EMMG_STREAM_BW_ALLOCATION, 0, 100);
	assert_int_equal(kh_emmg_handle(&cli, m, n, 0, out, sizeof out, &len), KH_OK);
	assert_int_equal(cli.state, KH_EMMG_FAILED);
	/* garbage fails it */
	kh_emmg_init(&cli, &keep);
	assert_int_equal(kh_emmg_start(&cli, out, sizeof out, &len), KH_OK);
	assert_int_equal(kh_emmg_handle(&cli, m, 3, 0, out, sizeof out, &len), KH_OK);
	assert_int_equal(cli.state, KH_EMMG_FAILED);
}

static void test_cost_and_backoff(void **state)
{
	uint8_t s[400];

	(void)state;
	assert_int_equal(kh_emmg_cost(0, s, section(s, 183, 0)), 188);
	assert_int_equal(kh_emmg_cost(0, s, section(s, 184, 0)), 376); /* the pointer_field spills */
	assert_int_equal(kh_emmg_cost(0, s, section(s, 184, 0) - 1), 0);
	s[0] = 0x47;
	assert_int_equal(kh_emmg_cost(1, s, 376), 0); /* the second packet has no sync byte */
	s[188] = 0x47;
	assert_int_equal(kh_emmg_cost(1, s, 376), 376);
	assert_int_equal(kh_emmg_cost(1, s, 375), 0);
	assert_int_equal(kh_emmg_backoff_ms(0), 1000);
	assert_int_equal(kh_emmg_backoff_ms(1), 2000);
	assert_int_equal(kh_emmg_backoff_ms(4), 16000);
	assert_int_equal(kh_emmg_backoff_ms(5), KH_EMMG_BACKOFF_MAX_MS);
	assert_int_equal(kh_emmg_backoff_ms(60), KH_EMMG_BACKOFF_MAX_MS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_session_sections, setup),
		cmocka_unit_test_setup(test_session_packets_v3, setup),
		cmocka_unit_test_setup(test_mux_parse_errors, setup),
		cmocka_unit_test_setup(test_mux_channel_errors, setup),
		cmocka_unit_test_setup(test_mux_stream_errors, setup),
		cmocka_unit_test_setup(test_client, setup),
		cmocka_unit_test_setup(test_cost_and_backoff, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
