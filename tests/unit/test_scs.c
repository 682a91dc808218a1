/*
 * Unit tests for the SCS protocol engine (include/keyhole/scs.h) against Keyhole's ECMG engine
 * in the same process (kh_ecmg_handle): a whole session (channel_setup, the channel's parameters
 * read, two streams, CW_provisions whose ECMs open to exactly the CWs sent and are labelled
 * CP + 1, channel_test, stream_close, channel_close), the same in TS-packet mode (the section put
 * back together), the ECMG's errors (a wrong Super_CAS_id, an access criteria it refuses) as
 * events, and what the SCS refuses (its own misuse, answers nobody asked for, a bad datagram).
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/ecmg.h"
#include "keyhole/scramble.h"
#include "keyhole/scs.h"

#include "testutil.h"

#define CAS 0x4B480002u

static struct kh_ecmg_cfg cfg;
static struct kh_ecmg_conn ecmg;
static struct kh_scs scs;
static uint8_t signer_pk[32];
static uint8_t msg[KH_SCS_MSG_MAX], reply[KH_ECMG_OUT_MAX], ecm[4096];
static size_t msg_len, reply_len;
static struct kh_scs_event ev;

static int setup(void **state)
{
	(void)state;
	kh_ecmg_cfg_defaults(&cfg);
	cfg.super_cas_id = CAS;
	cfg.key_id = 1;
	cfg.key_version = 4;
	cfg.product = 42;
	cfg.time = 1700000000u;
	if (kh_random(cfg.service_key, sizeof cfg.service_key) != KH_OK)
		return -1;
	cfg.signer.serial = 77;
	if (kh_ed25519_keygen(cfg.signer.sk, signer_pk) != KH_OK)
		return -1;
	kh_ecmg_conn_init(&ecmg);
	return kh_scs_init(&scs, CAS, 3, 3) == KH_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	kh_wipe(&cfg, sizeof cfg);
	return 0;
}

/* The message in msg to the ECMG, its answer (there must be one) to the SCS: KH_OK or the SCS's. */
static kh_err exchange(void)
{
	int close = 0;

	assert_int_equal(kh_ecmg_handle(&cfg, &ecmg, msg, msg_len, reply, sizeof reply, &reply_len, &close), KH_OK);
	assert_true(reply_len > 0);
	return kh_scs_handle(&scs, reply, reply_len, &ev, ecm, sizeof ecm);
}

static void open_channel(void)
{
	assert_int_equal(kh_scs_channel_setup(&scs, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(scs.state, KH_SCS_SETTING_UP);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_CHANNEL_STATUS);
	assert_int_equal(scs.state, KH_SCS_OPEN);
}

static void open_stream(unsigned idx, uint16_t id, uint16_t ecm_id)
{
	assert_int_equal(kh_scs_stream_setup(&scs, idx, id, ecm_id, 100, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_STREAM_STATUS);
	assert_int_equal(ev.stream, idx);
}

static void cw_of(unsigned idx, uint16_t cp, uint8_t cw[8])
{
	for (unsigned i = 0; i < 8; i++)
		cw[i] = (uint8_t)(idx * 17u + cp * 5u + i * 11u);
}

/* CW_provision of cp on stream idx; the ECM that comes back opens to CW_cp and CW_cp+1, label cp+1. */
static void provision(unsigned idx, uint16_t cp, const uint8_t *ac, size_t ac_len, struct kh_ecm *e)
{
	uint8_t cw[8], next[8];

	cw_of(idx, cp, cw);
	cw_of(idx, (uint16_t)(cp + 1), next);
	assert_int_equal(kh_scs_cw_provision(&scs, idx, cp, cw, next, 8, ac, ac_len, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_ECM);
	assert_int_equal(ev.stream, idx);
	assert_int_equal(ev.cp, cp);
	assert_int_equal(kh_ecm_verify(signer_pk, ecm, ev.ecm_len), KH_OK);
	assert_int_equal(kh_ecm_open(cfg.service_key, ecm, ev.ecm_len, e), KH_OK);
	assert_int_equal(e->h.cp, (uint32_t)cp + 1u);
	assert_memory_equal((cp & 1) ? e->cw_odd : e->cw_even, cw, 8);
	assert_memory_equal((cp & 1) ? e->cw_even : e->cw_odd, next, 8);
}

static void session(int ts)
{
	uint8_t ac[KH_SCS_AC_MAX];
	size_t ac_len = kh_scs_access_criteria(KH_ECM_EVENT, 0, 0x0203, 150, ac);
	struct kh_ecm e;

	cfg.ts_packets = (uint8_t)ts;
	open_channel();
	assert_int_equal(scs.ch.section_tspkt, ts);
	assert_int_equal(scs.ch.delay_start, cfg.delay_start);
	assert_int_equal(scs.ch.ecm_rep_period, cfg.ecm_rep_period);
	assert_int_equal(scs.ch.max_comp_time, cfg.max_comp_time);
	assert_int_equal(scs.ch.lead_cw, 1);
	assert_int_equal(scs.ch.cw_per_msg, 2);
	assert_int_equal(scs.ch.max_streams, cfg.max_streams);
	open_stream(0, 10, 0x100);
	open_stream(4, 11, 0x101);
	for (uint16_t cp = 0; cp < 20; cp++) {
		provision(0, cp, NULL, 0, &e);
		assert_int_equal(e.access, KH_ECM_PRODUCT);
		assert_int_equal(e.product, 42);
		provision(4, (uint16_t)(cp + 1000), ac, ac_len, &e);
		assert_int_equal(e.access, KH_ECM_EVENT);
		assert_int_equal(e.event, 0x0203);
		assert_int_equal(e.price, 150);
	}
	kh_wipe(&e, sizeof e);
	/* keep-alive */
	assert_int_equal(kh_scs_channel_test(&scs, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_CHANNEL_STATUS);
	/* a stream closed; its index free again */
	assert_int_equal(kh_scs_stream_close(&scs, 4, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_STREAM_CLOSED);
	assert_int_equal(ev.stream, 4);
	assert_int_equal(scs.st[4].state, 0);
	assert_int_equal(kh_scs_channel_close(&scs, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(scs.state, KH_SCS_CLOSED);
}

static void test_session_sections(void **state)
{
	(void)state;
	session(0);
}

static void test_session_ts_packets(void **state)
{
	(void)state;
	session(1);
}

/* The ECMG's refusals arrive as events; the channel_error closes the channel. */
static void test_ecmg_errors(void **state)
{
	const uint8_t bad_ac[] = {0x07, 0, 0, 0, 1};
	uint8_t cw[8] = {1, 2, 3, 4, 5, 6, 7, 8};

	(void)state;
	open_channel();
	open_stream(1, 5, 0x200);
	assert_int_equal(kh_scs_cw_provision(&scs, 1, 9, cw, cw, 8, bad_ac, sizeof bad_ac, msg, sizeof msg, &msg_len),
			 KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_STREAM_ERROR);
	assert_int_equal(ev.error, KH_SIM_ECMG_ERR_INVALID_VALUE);
	assert_int_equal(ev.stream, 1);
	assert_int_equal(ev.cp, 9);
	assert_int_equal(scs.st[1].waiting, 0);
	assert_int_equal(scs.state, KH_SCS_OPEN);

	/* another SCS with a Super_CAS_id the ECMG does not serve */
	kh_ecmg_conn_init(&ecmg);
	assert_int_equal(kh_scs_init(&scs, CAS + 1, 3, 2), KH_OK);
	assert_int_equal(kh_scs_channel_setup(&scs, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(exchange(), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_CHANNEL_ERROR);
	assert_int_equal(ev.error, KH_SIM_ECMG_ERR_UNKNOWN_SUPER_CAS_ID);
	assert_int_equal(scs.state, KH_SCS_CLOSED);
	assert_int_equal(kh_scs_channel_test(&scs, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
}

/* What the SCS refuses: misuse of its own API, and messages it cannot take; its state stays. */
static void test_scs_refusals(void **state)
{
	uint8_t cw[16] = {0}, small[64];
	struct kh_scs before;

	(void)state;
	assert_int_equal(kh_scs_init(&scs, CAS, 1, 4), KH_ERR_INVAL);
	assert_int_equal(kh_scs_init(&scs, CAS, 3, 3), KH_OK);
	/* nothing on a channel not open */
	assert_int_equal(kh_scs_stream_setup(&scs, 0, 1, 1, 100, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	assert_int_equal(kh_scs_channel_setup(&scs, small, sizeof small, &msg_len), KH_ERR_BUF);
	open_channel();
	assert_int_equal(kh_scs_channel_setup(&scs, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	open_stream(0, 1, 0x10);
	assert_int_equal(kh_scs_stream_setup(&scs, 0, 2, 0x11, 100, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	assert_int_equal(kh_scs_stream_setup(&scs, 1, 1, 0x11, 100, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	assert_int_equal(kh_scs_stream_setup(&scs, 1, 2, 0x10, 100, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	assert_int_equal(kh_scs_stream_setup(&scs, 1, 2, 0x11, 0, msg, sizeof msg, &msg_len), KH_ERR_INVAL);
	assert_int_equal(kh_scs_stream_setup(&scs, KH_SCS_STREAMS_MAX, 2, 0x11, 100, msg, sizeof msg, &msg_len),
			 KH_ERR_INVAL);
	assert_int_equal(kh_scs_cw_provision(&scs, 0, 1, cw, NULL, 12, NULL, 0, msg, sizeof msg, &msg_len),
			 KH_ERR_INVAL); /* neither CSA2's nor AES's length */
	assert_int_equal(kh_scs_cw_provision(&scs, 1, 1, cw, NULL, 8, NULL, 0, msg, sizeof msg, &msg_len),
			 KH_ERR_INVAL); /* no such stream */

	/* an ECM_response nobody waits for (the stream has no CW_provision out) */
	assert_int_equal(kh_scs_cw_provision(&scs, 0, 5, cw, cw + 8, 8, NULL, 0, msg, sizeof msg, &msg_len), KH_OK);
	{
		int close = 0;
		assert_int_equal(kh_ecmg_handle(&cfg, &ecmg, msg, msg_len, reply, sizeof reply, &reply_len, &close),
				 KH_OK);
	}
	before = scs;
	scs.st[0].waiting = 0;
	assert_int_equal(kh_scs_handle(&scs, reply, reply_len, &ev, ecm, sizeof ecm), KH_ERR_FORMAT);
	assert_int_equal(ev.type, KH_SCS_EV_NONE);
	scs = before;
	/* too small a buffer for the section */
	assert_int_equal(kh_scs_handle(&scs, reply, reply_len, &ev, ecm, 20), KH_ERR_BUF);
	assert_int_equal(scs.st[0].waiting, 1);
	/* another channel's answer, a truncated one */
	reply[10] ^= 0x01; /* ECM_channel_id is the first parameter: its value is reply[9..10] */
	assert_int_equal(kh_scs_handle(&scs, reply, reply_len, &ev, ecm, sizeof ecm), KH_ERR_FORMAT);
	reply[10] ^= 0x01;
	assert_int_equal(kh_scs_handle(&scs, reply, reply_len - 1, &ev, ecm, sizeof ecm), KH_ERR_FORMAT);
	assert_int_equal(scs.st[0].waiting, 1);
	/* the good answer still goes through */
	assert_int_equal(kh_scs_handle(&scs, reply, reply_len, &ev, ecm, sizeof ecm), KH_OK);
	assert_int_equal(ev.type, KH_SCS_EV_ECM);
	/* a message only an SCS sends, coming from the ECMG */
	assert_int_equal(kh_scs_stream_status(&scs, 0, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(kh_scs_handle(&scs, msg, msg_len, &ev, ecm, sizeof ecm), KH_OK); /* stream_status: valid */
	assert_int_equal(kh_scs_cw_provision(&scs, 0, 6, cw, cw + 8, 8, NULL, 0, msg, sizeof msg, &msg_len), KH_OK);
	assert_int_equal(kh_scs_handle(&scs, msg, msg_len, &ev, ecm, sizeof ecm), KH_ERR_FORMAT);
	kh_wipe(msg, sizeof msg);
}

/* access criteria as the ECMG reads them */
static void test_access_criteria(void **state)
{
	uint8_t ac[KH_SCS_AC_MAX];
	const uint8_t prod[] = {1, 0, 0, 1, 2};
	const uint8_t evt[] = {2, 0, 0, 0, 9, 0, 0, 1, 0};

	(void)state;
	assert_int_equal(kh_scs_access_criteria(KH_ECM_PRODUCT, 258, 0, 0, ac), 5);
	assert_memory_equal(ac, prod, 5);
	assert_int_equal(kh_scs_access_criteria(KH_ECM_EVENT, 0, 9, 256, ac), 9);
	assert_memory_equal(ac, evt, 9);
	assert_int_equal(kh_scs_access_criteria(0, 1, 2, 3, ac), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_session_sections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_ts_packets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ecmg_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scs_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_access_criteria, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
