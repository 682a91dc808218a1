/*
 * Unit tests for the ECMG protocol engine (include/keyhole/ecmg.h): an SCS written here with the
 * SimulCrypt builder sets up channels and streams, provisions 100 crypto periods and opens every
 * ECM_response's ECM with the service key (exactly the CWs provisioned for that CP) and checks its
 * signature; each error_status the ECMG emits; a malformed message followed by a good one; two
 * channels with several streams; access criteria from the SCS; TS packet output; closing.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/ecmg.h"
#include "keyhole/scramble.h"
#include "testutil.h"

#define CAS 0x4B480001u

static struct kh_ecmg_cfg cfg;
static uint8_t signer_pk[32];
static struct kh_ecmg_conn conn_a, conn_b;
static uint8_t reply[KH_ECMG_OUT_MAX];
static size_t reply_len;
static int closed;
static struct kh_sim_msg rmsg; /* the parsed reply */
static uint8_t req[1024];

static int setup(void **state)
{
	(void)state;
	kh_ecmg_cfg_defaults(&cfg);
	cfg.super_cas_id = CAS;
	cfg.key_id = 3;
	cfg.key_version = 7;
	cfg.product = 42;
	cfg.time = 1700000000u;
	if (kh_random(cfg.service_key, sizeof cfg.service_key) != KH_OK)
		return -1;
	cfg.signer.serial = 9001;
	if (kh_ed25519_keygen(cfg.signer.sk, signer_pk) != KH_OK)
		return -1;
	kh_ecmg_conn_init(&conn_a);
	kh_ecmg_conn_init(&conn_b);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kh_wipe(&cfg, sizeof cfg);
	return 0;
}

/* Send one message of n bytes; the reply (if any) is parsed into rmsg. */
static void send_raw(struct kh_ecmg_conn *c, const uint8_t *m, size_t n)
{
	assert_int_equal(kh_ecmg_handle(&cfg, c, m, n, reply, sizeof reply, &reply_len, &closed), KH_OK);
	if (reply_len)
		assert_int_equal(kh_sim_parse(KH_SIM_ECMG, reply, reply_len, &rmsg, NULL), KH_SIM_OK);
}

static void send_built(struct kh_ecmg_conn *c, struct kh_sim_builder *b)
{
	size_t n = 0;
	assert_int_equal(kh_sim_finish(b, &n, NULL), KH_OK);
	send_raw(c, b->buf, n);
}

static uint16_t ru16(uint16_t type)
{
	uint16_t v = 0;
	assert_int_equal(kh_sim_u16(&rmsg, type, 0, &v), KH_OK);
	return v;
}

static void expect_channel_error(uint16_t status)
{
	assert_true(reply_len > 0);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_CHANNEL_ERROR);
	assert_int_equal(ru16(KH_SIM_P_ERROR_STATUS), status);
}

static void expect_stream_error(uint16_t status)
{
	assert_true(reply_len > 0);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_STREAM_ERROR);
	assert_int_equal(ru16(KH_SIM_P_ERROR_STATUS), status);
}

static void channel_setup(struct kh_ecmg_conn *c, uint8_t v, uint16_t ch, uint32_t cas)
{
	struct kh_sim_builder b;
	kh_sim_start(&b, KH_SIM_ECMG, v, KH_SIM_ECMG_CHANNEL_SETUP, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u32(&b, KH_SIM_P_SUPER_CAS_ID, cas);
	send_built(c, &b);
}

static void channel_only(struct kh_ecmg_conn *c, uint8_t v, uint16_t type, uint16_t ch)
{
	struct kh_sim_builder b;
	kh_sim_start(&b, KH_SIM_ECMG, v, type, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	send_built(c, &b);
}

static void stream_setup(struct kh_ecmg_conn *c, uint8_t v, uint16_t ch, uint16_t st, uint16_t ecm_id)
{
	struct kh_sim_builder b;
	kh_sim_start(&b, KH_SIM_ECMG, v, KH_SIM_ECMG_STREAM_SETUP, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, st);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, ecm_id);
	kh_sim_add_u16(&b, KH_SIM_P_NOMINAL_CP_DURATION, 100);
	send_built(c, &b);
}

static void stream_pair(struct kh_ecmg_conn *c, uint8_t v, uint16_t type, uint16_t ch, uint16_t st)
{
	struct kh_sim_builder b;
	kh_sim_start(&b, KH_SIM_ECMG, v, type, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, st);
	send_built(c, &b);
}

/* The CW of crypto period cp on stream st: distinct for every (st, cp). */
static void cw_of(uint16_t st, uint16_t cp, uint8_t cw[8])
{
	for (unsigned i = 0; i < 8; i++)
		cw[i] = (uint8_t)(st * 31u + cp * 7u + i * 13u + (cp >> 8));
}

/* CW_provision for cp with the CWs of cp and cp+1 (lead_CW 1, CW_per_msg 2), optional ac. */
static void cw_provision(struct kh_ecmg_conn *c, uint8_t v, uint16_t ch, uint16_t st, uint16_t cp,
			 const uint8_t *ac, size_t ac_len)
{
	struct kh_sim_builder b;
	uint8_t comb[10];

	kh_sim_start(&b, KH_SIM_ECMG, v, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, st);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, cp);
	for (uint16_t k = cp; k <= (uint16_t)(cp + 1); k++) {
		comb[0] = (uint8_t)(k >> 8);
		comb[1] = (uint8_t)k;
		cw_of(st, k, comb + 2);
		kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
	}
	if (ac)
		kh_sim_add(&b, KH_SIM_P_ACCESS_CRITERIA, ac, ac_len);
	send_built(c, &b);
}

/* The ECM section of the reply (from TS packets when the ECMG sends those). */
static size_t reply_ecm(uint8_t *sec, size_t cap)
{
	const uint8_t *d;
	size_t n;

	assert_int_equal(kh_sim_bytes(&rmsg, KH_SIM_P_ECM_DATAGRAM, 0, &d, &n), KH_OK);
	if (!cfg.ts_packets) {
		assert_true(n <= cap);
		memcpy(sec, d, n);
		return n;
	}
	assert_int_equal(n % 188, 0);
	size_t out = 0;
	for (size_t off = 0; off < n; off += 188) {
		const uint8_t *p = d + off;
		size_t hdr = 4;
		assert_int_equal(p[0], 0x47);
		assert_int_equal(!!(p[1] & 0x40), off == 0);
		if (off == 0) {
			assert_int_equal(p[4], 0); /* pointer_field */
			hdr = 5;
		}
		assert_true(out + 188 - hdr <= cap);
		memcpy(sec + out, p + hdr, 188 - hdr);
		out += 188 - hdr;
	}
	return 3 + (((size_t)sec[1] & 0x0F) << 8 | sec[2]); /* section_length: the stuffing goes */
}

/*
 * The reply is the ECM_response of (ch, st, cp): it opens to exactly the CWs provisioned, and
 * its header says cp + 1 (the highest CP of the two combinations): a Keyhole decoder reads an
 * ECM of cp n as CW_n in slot n & 1 and CW_{n-1} in the other.
 */
static void expect_ecm(uint8_t v, uint16_t ch, uint16_t st, uint16_t cp, struct kh_ecm *e)
{
	uint8_t sec[4 * 188], want[8];
	size_t n;

	assert_true(reply_len > 0);
	assert_int_equal(rmsg.version, v);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_ECM_RESPONSE);
	assert_int_equal(ru16(KH_SIM_P_ECM_CHANNEL_ID), ch);
	assert_int_equal(ru16(KH_SIM_P_ECM_STREAM_ID), st);
	assert_int_equal(ru16(KH_SIM_P_CP_NUMBER), cp);
	n = reply_ecm(sec, sizeof sec);
	assert_int_equal(kh_ecm_verify(signer_pk, sec, n), KH_OK);
	assert_int_equal(kh_ecm_open(cfg.service_key, sec, n, e), KH_OK);
	assert_int_equal(e->h.cp, (uint32_t)cp + 1u);
	assert_int_equal(e->h.table_id, (cp & 1) ? KH_ECM_TID_EVEN : KH_ECM_TID_ODD);
	assert_int_equal(e->h.key_id, 3);
	assert_int_equal(e->h.key_version, 7);
	assert_int_equal(e->h.signer, 9001);
	assert_int_equal(e->alg, KH_SCR_CSA2);
	assert_int_equal(e->cw_len, 8);
	cw_of(st, cp, want);
	assert_memory_equal((cp & 1) ? e->cw_odd : e->cw_even, want, 8);
	cw_of(st, (uint16_t)(cp + 1), want);
	assert_memory_equal((cp & 1) ? e->cw_even : e->cw_odd, want, 8);
	/* a flipped byte of the section is refused: the test can tell a bad ECM */
	sec[n - 1] ^= 1;
	assert_int_not_equal(kh_ecm_verify(signer_pk, sec, n), KH_OK);
}

static void open_channel(struct kh_ecmg_conn *c, uint8_t v, uint16_t ch)
{
	channel_setup(c, v, ch, CAS);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_CHANNEL_STATUS);
	assert_int_equal(rmsg.version, v);
	assert_int_equal(ru16(KH_SIM_P_ECM_CHANNEL_ID), ch);
}

static void open_stream(struct kh_ecmg_conn *c, uint8_t v, uint16_t ch, uint16_t st, uint16_t ecm_id)
{
	stream_setup(c, v, ch, st, ecm_id);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_STREAM_STATUS);
	assert_int_equal(ru16(KH_SIM_P_ECM_STREAM_ID), st);
	assert_int_equal(ru16(KH_SIM_P_ECM_ID), ecm_id);
}

static void test_session(void **state)
{
	struct kh_ecm e;
	uint8_t u8 = 0;
	int16_t s16 = 0;

	(void)state;
	open_channel(&conn_a, 3, 1);
	assert_int_equal(kh_sim_u8(&rmsg, KH_SIM_P_SECTION_TSPKT_FLAG, 0, &u8), KH_OK);
	assert_int_equal(u8, 0);
	assert_int_equal(kh_sim_u8(&rmsg, KH_SIM_P_LEAD_CW, 0, &u8), KH_OK);
	assert_int_equal(u8, 1);
	assert_int_equal(kh_sim_u8(&rmsg, KH_SIM_P_CW_PER_MSG, 0, &u8), KH_OK);
	assert_int_equal(u8, 2);
	assert_int_equal(kh_sim_s16(&rmsg, KH_SIM_P_DELAY_START, 0, &s16), KH_OK);
	assert_int_equal(s16, 200);
	assert_int_equal(ru16(KH_SIM_P_MAX_STREAMS), KH_ECMG_MAX_STREAMS);
	assert_int_equal(kh_sim_count(&rmsg, KH_SIM_P_TRANSITION_DELAY_START), 1);
	assert_int_equal(kh_sim_count(&rmsg, KH_SIM_P_ECM_REP_PERIOD), 1);
	assert_int_equal(kh_sim_count(&rmsg, KH_SIM_P_MIN_CP_DURATION), 1);
	assert_int_equal(kh_sim_count(&rmsg, KH_SIM_P_MAX_COMP_TIME), 1);

	channel_only(&conn_a, 3, KH_SIM_ECMG_CHANNEL_TEST, 1);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_CHANNEL_STATUS);

	open_stream(&conn_a, 3, 1, 5, 0x0105);
	stream_pair(&conn_a, 3, KH_SIM_ECMG_STREAM_TEST, 1, 5);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_STREAM_STATUS);
	assert_int_equal(ru16(KH_SIM_P_ECM_ID), 0x0105);

	for (uint16_t cp = 0; cp < 100; cp++) {
		cfg.time = 1700000000u + cp; /* the clock moves on */
		cw_provision(&conn_a, 3, 1, 5, cp, NULL, 0);
		expect_ecm(3, 1, 5, cp, &e);
		assert_int_equal(e.access, KH_ECM_PRODUCT);
		assert_int_equal(e.product, 42);
		assert_int_equal(e.time, 1700000000u + cp);
		kh_wipe(&e, sizeof e);
	}

	stream_pair(&conn_a, 3, KH_SIM_ECMG_STREAM_CLOSE_REQUEST, 1, 5);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_STREAM_CLOSE_RESPONSE);
	assert_int_equal(ru16(KH_SIM_P_ECM_STREAM_ID), 5);
	cw_provision(&conn_a, 3, 1, 5, 100, NULL, 0);
	expect_stream_error(KH_SIM_ECMG_ERR_UNKNOWN_STREAM_ID);

	channel_only(&conn_a, 3, KH_SIM_ECMG_CHANNEL_CLOSE, 1);
	assert_int_equal(reply_len, 0);
	assert_int_equal(closed, 1);
	channel_only(&conn_a, 3, KH_SIM_ECMG_CHANNEL_TEST, 1);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID);
}

/* Version 2 is answered in version 2; the SCS's access criteria choose an event or a product. */
static void test_v2_access_criteria(void **state)
{
	const uint8_t event[] = {KH_ECMG_AC_EVENT, 0, 0, 0x01, 0x02, 0, 0, 0x01, 0xF4};
	const uint8_t product[] = {KH_ECMG_AC_PRODUCT, 0, 0, 0, 77};
	const uint8_t bad[] = {0x07, 0, 0, 0, 77};
	struct kh_ecm e;

	(void)state;
	open_channel(&conn_a, 2, 9);
	open_stream(&conn_a, 2, 9, 1, 0x0001);
	assert_int_equal(rmsg.version, 2);
	cw_provision(&conn_a, 2, 9, 1, 4, event, sizeof event);
	expect_ecm(2, 9, 1, 4, &e);
	assert_int_equal(e.access, KH_ECM_EVENT);
	assert_int_equal(e.event, 0x0102);
	assert_int_equal(e.price, 500);
	cw_provision(&conn_a, 2, 9, 1, 5, product, sizeof product);
	expect_ecm(2, 9, 1, 5, &e);
	assert_int_equal(e.access, KH_ECM_PRODUCT);
	assert_int_equal(e.product, 77);
	cw_provision(&conn_a, 2, 9, 1, 6, bad, sizeof bad);
	expect_stream_error(KH_SIM_ECMG_ERR_INVALID_VALUE);
	assert_int_equal(rmsg.version, 2);
	kh_wipe(&e, sizeof e);
}

/* One CW only (CW_per_msg 1): the ECM is labelled with CP_number itself, its CW in its own slot. */
static void test_one_cw(void **state)
{
	struct kh_sim_builder b;
	uint8_t comb[10], sec[4 * 188], want[8];
	struct kh_ecm e;
	size_t n;

	(void)state;
	open_channel(&conn_a, 3, 1);
	open_stream(&conn_a, 3, 1, 2, 0x20);
	for (uint16_t cp = 6; cp < 8; cp++) {
		kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 2);
		kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, cp);
		comb[0] = 0;
		comb[1] = (uint8_t)cp;
		cw_of(2, cp, comb + 2);
		kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
		send_built(&conn_a, &b);
		assert_int_equal(rmsg.type, KH_SIM_ECMG_ECM_RESPONSE);
		assert_int_equal(ru16(KH_SIM_P_CP_NUMBER), cp);
		n = reply_ecm(sec, sizeof sec);
		assert_int_equal(kh_ecm_open(cfg.service_key, sec, n, &e), KH_OK);
		assert_int_equal(e.h.cp, cp);
		assert_int_equal(e.h.table_id, (cp & 1) ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN);
		cw_of(2, cp, want);
		assert_memory_equal((cp & 1) ? e.cw_odd : e.cw_even, want, 8);
		kh_wipe(&e, sizeof e);
	}
}

/* Each refusal of the codec: a channel_error with its status; the next good message answered. */
static void test_parse_errors(void **state)
{
	struct kh_sim_builder b;
	size_t n = 0;
	uint8_t m[64];

	(void)state;
	open_channel(&conn_a, 3, 1);

	/* protocol_version 4 */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CHANNEL_TEST, m, sizeof m);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	assert_int_equal(kh_sim_finish(&b, &n, NULL), KH_OK);
	m[0] = 4;
	send_raw(&conn_a, m, n);
	expect_channel_error(KH_SIM_ECMG_ERR_UNSUPPORTED_VERSION);
	assert_int_equal(ru16(KH_SIM_P_ECM_CHANNEL_ID), 1);
	m[0] = 3;
	/* message_length not the bytes given */
	send_raw(&conn_a, m, n - 1);
	expect_channel_error(KH_SIM_ECMG_ERR_INVALID_MESSAGE);
	/* an unknown message_type */
	m[2] = 0x77;
	send_raw(&conn_a, m, n);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_MESSAGE_TYPE);
	m[2] = (uint8_t)KH_SIM_ECMG_CHANNEL_TEST;
	/* a parameter of the wrong length */
	m[8] = 3;
	send_raw(&conn_a, m, n);
	assert_true(reply_len > 0);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_CHANNEL_ERROR);
	assert_true(ru16(KH_SIM_P_ERROR_STATUS) == KH_SIM_ECMG_ERR_INCONSISTENT_LENGTH ||
		    ru16(KH_SIM_P_ERROR_STATUS) == KH_SIM_ECMG_ERR_INVALID_MESSAGE);
	m[8] = 2;
	/* an unknown parameter type */
	m[6] = 0x55;
	send_raw(&conn_a, m, n);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_PARAM_TYPE);
	m[6] = (uint8_t)KH_SIM_P_ECM_CHANNEL_ID;
	/* channel_test without ECM_channel_id */
	const uint8_t bare[] = {3, 0x00, 0x02, 0x00, 0x00};
	send_raw(&conn_a, bare, sizeof bare);
	expect_channel_error(KH_SIM_ECMG_ERR_MISSING_PARAM);
	/* a message only an ECMG sends */
	stream_pair(&conn_a, 3, KH_SIM_ECMG_STREAM_CLOSE_RESPONSE, 1, 1);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_MESSAGE_TYPE);
	/* a header announcing too much: the splitter's refusal, answered before closing */
	const uint8_t huge[] = {3, 0x00, 0x02, 0xFF, 0xFF};
	size_t need = 0;
	assert_int_equal(kh_sim_frame(huge, sizeof huge, &need), KH_SIM_TOO_LONG);
	assert_int_equal(kh_ecmg_frame_error(&conn_a, KH_SIM_TOO_LONG, reply, sizeof reply, &reply_len), KH_OK);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, reply, reply_len, &rmsg, NULL), KH_SIM_OK);
	expect_channel_error(KH_SIM_ECMG_ERR_MESSAGE_TOO_LONG);
	/* and after all that, the good message is still answered */
	send_raw(&conn_a, m, n);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_CHANNEL_STATUS);
	assert_int_equal(closed, 0);
}

/* The ECMG's own statuses, each leaving the state as it was. */
static void test_state_errors(void **state)
{
	struct kh_sim_builder b;
	uint8_t comb[10] = {0};
	struct kh_ecm e;
	size_t n = 0;

	(void)state;
	channel_only(&conn_a, 3, KH_SIM_ECMG_CHANNEL_TEST, 1);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID);
	stream_setup(&conn_a, 3, 1, 1, 1);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID);
	channel_setup(&conn_a, 3, 1, CAS + 1);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_SUPER_CAS_ID);
	open_channel(&conn_a, 3, 1);
	channel_setup(&conn_a, 3, 1, CAS);
	expect_channel_error(KH_SIM_ECMG_ERR_CHANNEL_ID_IN_USE);
	channel_setup(&conn_a, 3, 2, CAS);
	expect_channel_error(KH_SIM_ECMG_ERR_TOO_MANY_CHANNELS);
	channel_only(&conn_a, 3, KH_SIM_ECMG_CHANNEL_TEST, 2);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID);

	open_stream(&conn_a, 3, 1, 1, 0x10);
	stream_setup(&conn_a, 3, 1, 1, 0x11);
	expect_stream_error(KH_SIM_ECMG_ERR_STREAM_ID_IN_USE);
	stream_setup(&conn_a, 3, 1, 2, 0x10);
	expect_stream_error(KH_SIM_ECMG_ERR_ECM_ID_IN_USE);
	stream_pair(&conn_a, 3, KH_SIM_ECMG_STREAM_TEST, 1, 3);
	expect_stream_error(KH_SIM_ECMG_ERR_UNKNOWN_STREAM_ID);
	for (uint16_t s = 2; s <= KH_ECMG_MAX_STREAMS; s++)
		open_stream(&conn_a, 3, 1, s, (uint16_t)(0x10 + s));
	stream_setup(&conn_a, 3, 1, 100, 0x100);
	expect_stream_error(KH_SIM_ECMG_ERR_TOO_MANY_STREAMS_CHANNEL);

	/* a CW_provision without the CW of its own CP */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 8);
	comb[1] = 9;
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
	send_built(&conn_a, &b);
	expect_stream_error(KH_SIM_ECMG_ERR_NOT_ENOUGH_CW);
	/* a CW of the wrong length for CSA2 */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 8);
	comb[1] = 8;
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, 6);
	send_built(&conn_a, &b);
	expect_stream_error(KH_SIM_ECMG_ERR_INVALID_VALUE);
	/* a CP_CW_combination too short to hold even its CP_number */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 8);
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, 1);
	if (kh_sim_finish(&b, &n, NULL) == KH_OK) { /* the codec may already refuse it */
		send_raw(&conn_a, req, n);
		assert_true(reply_len > 0);
		assert_true(rmsg.type == KH_SIM_ECMG_STREAM_ERROR || rmsg.type == KH_SIM_ECMG_CHANNEL_ERROR);
	}
	/* two CWs of one parity */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, req, sizeof req);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 8);
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
	comb[1] = 10;
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
	send_built(&conn_a, &b);
	expect_stream_error(KH_SIM_ECMG_ERR_INVALID_VALUE);
	/* a CW_provision for another channel id */
	cw_provision(&conn_a, 3, 2, 1, 8, NULL, 0);
	expect_channel_error(KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID);
	/* none of that hurt stream 1 */
	cw_provision(&conn_a, 3, 1, 1, 8, NULL, 0);
	expect_ecm(3, 1, 1, 8, &e);
	kh_wipe(&e, sizeof e);
}

/* Two channels (two connections), several streams each, interleaved; ECMs as TS packets. */
static void test_two_channels(void **state)
{
	struct kh_ecm e;

	(void)state;
	cfg.ts_packets = 1;
	open_channel(&conn_a, 3, 1);
	open_channel(&conn_b, 2, 1); /* the same id on another connection is another channel */
	for (uint16_t s = 1; s <= 3; s++) {
		open_stream(&conn_a, 3, 1, s, (uint16_t)(0x100 + s));
		open_stream(&conn_b, 2, 1, s, (uint16_t)(0x200 + s));
	}
	for (uint16_t cp = 250; cp < 262; cp++) {
		for (uint16_t s = 1; s <= 3; s++) {
			cw_provision(&conn_a, 3, 1, s, cp, NULL, 0);
			expect_ecm(3, 1, s, cp, &e);
			cw_provision(&conn_b, 2, 1, s, cp, NULL, 0);
			expect_ecm(2, 1, s, cp, &e);
		}
	}
	stream_pair(&conn_a, 3, KH_SIM_ECMG_STREAM_CLOSE_REQUEST, 1, 2);
	assert_int_equal(rmsg.type, KH_SIM_ECMG_STREAM_CLOSE_RESPONSE);
	cw_provision(&conn_a, 3, 1, 2, 300, NULL, 0);
	expect_stream_error(KH_SIM_ECMG_ERR_UNKNOWN_STREAM_ID);
	cw_provision(&conn_b, 2, 1, 2, 300, NULL, 0); /* the other channel's stream 2 lives on */
	expect_ecm(2, 1, 2, 300, &e);
	channel_only(&conn_b, 2, KH_SIM_ECMG_CHANNEL_CLOSE, 1);
	assert_int_equal(closed, 1);
	cw_provision(&conn_a, 3, 1, 3, 300, NULL, 0);
	expect_ecm(3, 1, 3, 300, &e);
	kh_wipe(&e, sizeof e);
	cfg.ts_packets = 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_v2_access_criteria, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_cw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_channels, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
