/*
 * Unit tests for the DVB SimulCrypt codec (include/keyhole/simulcrypt.h): byte-exact vectors
 * worked out by hand from TS 103 197's tables, every message type of both interfaces built,
 * parsed and rebuilt, each refusal with the error_status of its interface's table (and the
 * builder refusing the same), the typed accessors, and the TCP splitter on partial input.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/simulcrypt.h"
#include "testutil.h"

#include "../tools/sim_samples.h"

/*
 * ECMG<->SCS v2 channel_setup: header 02 | 0001 (channel_setup) | 000E (14 bytes follow), then
 * ECM_channel_id (type 000E, length 0002, value 0001) and Super_CAS_id (type 0001, length 0004,
 * value 4B480001: CA_system_id 4B48, CA_subsystem_id 0001).
 */
static const uint8_t v_channel_setup[] = {0x02, 0x00, 0x01, 0x00, 0x0E, 0x00, 0x0E, 0x00, 0x02, 0x00,
					  0x01, 0x00, 0x01, 0x00, 0x04, 0x4B, 0x48, 0x00, 0x01};

/*
 * ECMG<->SCS v2 channel_status: 02 | 0003 | 0039 (57 = 6+5+6+6+6+6+6+5+5+6), then
 * ECM_channel_id 000E/2 = 0001, section_TSpkt_flag 0002/1 = 00 (sections), delay_start 0003/2 =
 * FF38 (-200 ms), delay_stop 0004/2 = 0064 (100 ms), ECM_rep_period 0007/2 = 0064 (100 ms),
 * max_streams 0008/2 = 0004, min_CP_duration 0009/2 = 0064 (100 x 100 ms), lead_CW 000A/1 = 01,
 * CW_per_msg 000B/1 = 02, max_comp_time 000C/2 = 01F4 (500 ms).
 */
static const uint8_t v_channel_status[] = {
	0x02, 0x00, 0x03, 0x00, 0x39, 0x00, 0x0E, 0x00, 0x02, 0x00, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00,
	0x00, 0x03, 0x00, 0x02, 0xFF, 0x38, 0x00, 0x04, 0x00, 0x02, 0x00, 0x64, 0x00, 0x07, 0x00, 0x02,
	0x00, 0x64, 0x00, 0x08, 0x00, 0x02, 0x00, 0x04, 0x00, 0x09, 0x00, 0x02, 0x00, 0x64, 0x00, 0x0A,
	0x00, 0x01, 0x01, 0x00, 0x0B, 0x00, 0x01, 0x02, 0x00, 0x0C, 0x00, 0x02, 0x01, 0xF4};

/*
 * ECMG<->SCS v2 stream_setup: 02 | 0101 | 0018 (4 x 6), then ECM_channel_id 000E/2 = 0001,
 * ECM_stream_id 000F/2 = 0001, ECM_id 0019/2 = 0101, nominal_CP_duration 0010/2 = 0064 (10 s).
 */
static const uint8_t v_stream_setup[] = {0x02, 0x01, 0x01, 0x00, 0x18, 0x00, 0x0E, 0x00, 0x02, 0x00, 0x01,
					 0x00, 0x0F, 0x00, 0x02, 0x00, 0x01, 0x00, 0x19, 0x00, 0x02, 0x01,
					 0x01, 0x00, 0x10, 0x00, 0x02, 0x00, 0x64};

/*
 * ECMG<->SCS v2 CW_provision: 02 | 0201 | 002E (6+6+6+14+14), then ECM_channel_id 0001,
 * ECM_stream_id 0001, CP_number 0012/2 = 0005, and two CP_CW_combination 0014/000A: CP 0005 with
 * CW 1122334455667788, CP 0006 with CW 2122232425262728 (CW_per_msg 2: current and next).
 */
static const uint8_t v_cw_provision[] = {
	0x02, 0x02, 0x01, 0x00, 0x2E, 0x00, 0x0E, 0x00, 0x02, 0x00, 0x01, 0x00, 0x0F, 0x00, 0x02, 0x00,
	0x01, 0x00, 0x12, 0x00, 0x02, 0x00, 0x05, 0x00, 0x14, 0x00, 0x0A, 0x00, 0x05, 0x11, 0x22, 0x33,
	0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0x14, 0x00, 0x0A, 0x00, 0x06, 0x21, 0x22, 0x23, 0x24, 0x25,
	0x26, 0x27, 0x28};

/*
 * ECMG<->SCS v2 ECM_response: 02 | 0202 | 001E (6+6+6+12), then ECM_channel_id 0001,
 * ECM_stream_id 0001, CP_number 0005, ECM_datagram 0015/0008 = a (toy) section 80 70 05 ...
 */
static const uint8_t v_ecm_response[] = {0x02, 0x02, 0x02, 0x00, 0x1E, 0x00, 0x0E, 0x00, 0x02, 0x00, 0x01,
					 0x00, 0x0F, 0x00, 0x02, 0x00, 0x01, 0x00, 0x12, 0x00, 0x02, 0x00,
					 0x05, 0x00, 0x15, 0x00, 0x08, 0x80, 0x70, 0x05, 0x00, 0x01, 0x02,
					 0x03, 0x04};

/*
 * EMMG<->MUX v2 data_provision: 02 | 0211 | 0024 (8+6+6+6+10), then client_id 0001/4 = 4B480001,
 * data_channel_id 0003/2 = 0001, data_stream_id 0004/2 = 0001, data_id 0008/2 = 0001, datagram
 * 0005/0006 = 82 70 03 AA BB CC (an EMM section).
 */
static const uint8_t v_data_provision[] = {0x02, 0x02, 0x11, 0x00, 0x24, 0x00, 0x01, 0x00, 0x04, 0x4B, 0x48,
					   0x00, 0x01, 0x00, 0x03, 0x00, 0x02, 0x00, 0x01, 0x00, 0x04, 0x00,
					   0x02, 0x00, 0x01, 0x00, 0x08, 0x00, 0x02, 0x00, 0x01, 0x00, 0x05,
					   0x00, 0x06, 0x82, 0x70, 0x03, 0xAA, 0xBB, 0xCC};

static struct kh_sim_msg msg; /* large: kept off the stack */

static void expect_built(struct kh_sim_builder *b, const uint8_t *want, size_t n)
{
	size_t len = 0;
	uint8_t again[256];
	size_t alen = 0;

	assert_int_equal(kh_sim_finish(b, &len, NULL), KH_OK);
	assert_int_equal(len, n);
	assert_memory_equal(b->buf, want, n);
	/* parse back and build again: the same bytes */
	assert_int_equal(kh_sim_parse(b->iface, want, n, &msg, NULL), KH_SIM_OK);
	assert_int_equal(kh_sim_rebuild(&msg, again, sizeof again, &alen), KH_OK);
	assert_int_equal(alen, n);
	assert_memory_equal(again, want, n);
}

static void test_vectors_ecmg(void **state)
{
	uint8_t buf[256];
	struct kh_sim_builder b;
	const uint8_t cw1[] = {0x00, 0x05, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
	const uint8_t cw2[] = {0x00, 0x06, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28};
	const uint8_t ecm[] = {0x80, 0x70, 0x05, 0x00, 0x01, 0x02, 0x03, 0x04};
	uint32_t u32;
	uint16_t u16;
	int16_t s16;
	uint8_t u8;
	const uint8_t *val;
	size_t vlen;

	(void)state;
	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CHANNEL_SETUP, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u32(&b, KH_SIM_P_SUPER_CAS_ID, 0x4B480001u);
	expect_built(&b, v_channel_setup, sizeof v_channel_setup);
	assert_int_equal(msg.version, 2);
	assert_int_equal(msg.type, KH_SIM_ECMG_CHANNEL_SETUP);
	assert_int_equal(kh_sim_u32(&msg, KH_SIM_P_SUPER_CAS_ID, 0, &u32), KH_OK);
	assert_int_equal(u32, 0x4B480001u);

	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CHANNEL_STATUS, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u8(&b, KH_SIM_P_SECTION_TSPKT_FLAG, 0);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_START, -200);
	kh_sim_add_s16(&b, KH_SIM_P_DELAY_STOP, 100);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_REP_PERIOD, 100);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_STREAMS, 4);
	kh_sim_add_u16(&b, KH_SIM_P_MIN_CP_DURATION, 100);
	kh_sim_add_u8(&b, KH_SIM_P_LEAD_CW, 1);
	kh_sim_add_u8(&b, KH_SIM_P_CW_PER_MSG, 2);
	kh_sim_add_u16(&b, KH_SIM_P_MAX_COMP_TIME, 500);
	expect_built(&b, v_channel_status, sizeof v_channel_status);
	assert_int_equal(kh_sim_s16(&msg, KH_SIM_P_DELAY_START, 0, &s16), KH_OK);
	assert_int_equal(s16, -200);
	assert_int_equal(kh_sim_s16(&msg, KH_SIM_P_DELAY_STOP, 0, &s16), KH_OK);
	assert_int_equal(s16, 100);
	assert_int_equal(kh_sim_u8(&msg, KH_SIM_P_CW_PER_MSG, 0, &u8), KH_OK);
	assert_int_equal(u8, 2);
	assert_int_equal(kh_sim_u16(&msg, KH_SIM_P_MAX_COMP_TIME, 0, &u16), KH_OK);
	assert_int_equal(u16, 500);
	/* optional ones absent; a wrong width is a format error, not a value */
	assert_int_equal(kh_sim_s16(&msg, KH_SIM_P_AC_DELAY_START, 0, &s16), KH_ERR_NOTFOUND);
	assert_int_equal(kh_sim_u16(&msg, KH_SIM_P_LEAD_CW, 0, &u16), KH_ERR_FORMAT);
	assert_int_equal(kh_sim_u8(&msg, KH_SIM_P_LEAD_CW, 1, &u8), KH_ERR_NOTFOUND);

	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_STREAM_SETUP, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, 0x0101);
	kh_sim_add_u16(&b, KH_SIM_P_NOMINAL_CP_DURATION, 100);
	expect_built(&b, v_stream_setup, sizeof v_stream_setup);
	assert_int_equal(kh_sim_u16(&msg, KH_SIM_P_ECM_ID, 0, &u16), KH_OK);
	assert_int_equal(u16, 0x0101);

	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CW_PROVISION, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 5);
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, cw1, sizeof cw1);
	kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, cw2, sizeof cw2);
	expect_built(&b, v_cw_provision, sizeof v_cw_provision);
	assert_int_equal(kh_sim_count(&msg, KH_SIM_P_CP_CW_COMBINATION), 2);
	assert_int_equal(kh_sim_bytes(&msg, KH_SIM_P_CP_CW_COMBINATION, 1, &val, &vlen), KH_OK);
	assert_int_equal(vlen, sizeof cw2);
	assert_memory_equal(val, cw2, sizeof cw2);
	assert_ptr_equal(val, v_cw_provision + 41); /* points into the input */

	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_ECM_RESPONSE, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 5);
	kh_sim_add(&b, KH_SIM_P_ECM_DATAGRAM, ecm, sizeof ecm);
	expect_built(&b, v_ecm_response, sizeof v_ecm_response);
}

static void test_vector_emmg(void **state)
{
	uint8_t buf[256];
	struct kh_sim_builder b;
	const uint8_t emm[] = {0x82, 0x70, 0x03, 0xAA, 0xBB, 0xCC};
	uint32_t u32;

	(void)state;
	kh_sim_start(&b, KH_SIM_EMMG, 2, KH_SIM_EMMG_DATA_PROVISION, buf, sizeof buf);
	kh_sim_add_u32(&b, KH_SIM_P_CLIENT_ID, 0x4B480001u);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_CHANNEL_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_STREAM_ID, 1);
	kh_sim_add_u16(&b, KH_SIM_P_DATA_ID, 1);
	kh_sim_add(&b, KH_SIM_P_DATAGRAM, emm, sizeof emm);
	expect_built(&b, v_data_provision, sizeof v_data_provision);
	assert_int_equal(kh_sim_u32(&msg, KH_SIM_P_CLIENT_ID, 0, &u32), KH_OK);
	assert_int_equal(u32, 0x4B480001u);
	/* the same bytes are not an ECMG<->SCS message */
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, v_data_provision, sizeof v_data_provision, &msg, NULL),
			 KH_SIM_UNKNOWN_TYPE);
}

static void test_every_type(void **state)
{
	uint8_t buf[512], again[512];
	size_t len, alen;

	(void)state;
	for (size_t i = 0; i < SIM_SAMPLES; i++) {
		for (uint8_t version = 2; version <= 3; version++) {
			enum kh_sim_iface other = sim_samples[i].iface == KH_SIM_ECMG ? KH_SIM_EMMG : KH_SIM_ECMG;

			if (sim_sample_build(i, version, buf, sizeof buf, &len) != KH_OK)
				fail_msg("sample %s (0x%04x) refused", sim_samples[i].name, sim_samples[i].type);
			assert_int_equal(kh_sim_parse(sim_samples[i].iface, buf, len, &msg, NULL), KH_SIM_OK);
			assert_int_equal(msg.type, sim_samples[i].type);
			assert_int_equal(msg.version, version);
			assert_int_equal(kh_sim_rebuild(&msg, again, sizeof again, &alen), KH_OK);
			assert_int_equal(alen, len);
			assert_memory_equal(again, buf, len);
			assert_true(kh_sim_known_type(sim_samples[i].iface, sim_samples[i].type));
			assert_false(kh_sim_known_type(other, sim_samples[i].type));
			/* each mandatory parameter left out: refused as missing, naming it */
			for (size_t k = 0; k < 12 && sim_samples[i].params[k] != 0; k++) {
				uint16_t t = sim_samples[i].params[k];
				struct kh_sim_builder b;
				uint8_t v[16];
				uint16_t culprit;
				enum kh_sim_status why;
				size_t n = 0;

				kh_sim_start(&b, sim_samples[i].iface, version, sim_samples[i].type, buf, sizeof buf);
				for (size_t j = 0; j < 12 && sim_samples[i].params[j] != 0; j++) {
					uint16_t pj = sim_samples[i].params[j];

					if (pj != t)
						kh_sim_add(&b, pj, v, sim_sample_value(sim_samples[i].iface, pj, v));
				}
				if (kh_sim_finish(&b, &n, &why) == KH_OK)
					continue; /* t was optional */
				assert_int_equal(why, KH_SIM_MISSING_PARAM);
				assert_int_equal(kh_sim_parse(sim_samples[i].iface, buf, b.len, &msg, &culprit),
						 KH_SIM_MISSING_PARAM);
				assert_int_equal(culprit, t);
			}
		}
	}
}

/* A refusal: the status, its error_status on the interface, the output untouched. */
static void expect_refused(enum kh_sim_iface iface, const uint8_t *m, size_t n, enum kh_sim_status st, uint16_t code)
{
	struct kh_sim_msg before;

	memset(&msg, 0xA5, sizeof msg);
	before = msg;
	assert_int_equal(kh_sim_parse(iface, m, n, &msg, NULL), st);
	assert_int_equal(kh_sim_error_status(iface, st), code);
	assert_memory_equal(&msg, &before, sizeof msg);
}

static void test_refusals(void **state)
{
	uint8_t m[64];
	uint16_t culprit;

	(void)state;
	/* shorter than a header */
	expect_refused(KH_SIM_ECMG, v_channel_setup, 4, KH_SIM_INVALID_MESSAGE, 0x0001);
	expect_refused(KH_SIM_EMMG, v_data_provision, 0, KH_SIM_INVALID_MESSAGE, 0x0001);
	/* protocol_version 1 and 4 */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[0] = 1;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_BAD_VERSION, 0x0002);
	m[0] = 4;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_BAD_VERSION, 0x0002);
	m[0] = 3; /* version 3 takes the same message */
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, m, sizeof v_channel_setup, &msg, NULL), KH_SIM_OK);
	m[0] = 2;
	/* message_type of the other interface, and one of nobody's */
	m[2] = 0x11;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_UNKNOWN_TYPE, 0x0003);
	m[1] = 0x03, m[2] = 0x01;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_UNKNOWN_TYPE, 0x0003);
	expect_refused(KH_SIM_EMMG, m, sizeof v_channel_setup, KH_SIM_UNKNOWN_TYPE, 0x0003);
	/* message_length over our 64 KiB: too long, from the header alone */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[3] = 0xFF, m[4] = 0xFF;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_TOO_LONG, 0x0004);
	expect_refused(KH_SIM_EMMG, m, sizeof v_channel_setup, KH_SIM_TOO_LONG, 0x0004);
	/* message_length not the bytes given (one more, one fewer) */
	m[3] = 0x00, m[4] = 0x0F;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_INVALID_MESSAGE, 0x0001);
	expect_refused(KH_SIM_ECMG, v_channel_setup, sizeof v_channel_setup - 1, KH_SIM_INVALID_MESSAGE, 0x0001);
	/* a parameter running past the end (Super_CAS_id says 5 bytes, the message has 4) */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[14] = 0x05;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_INVALID_MESSAGE, 0x0001);
	/* a dangling partial parameter header */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[4] = 0x10, m[19] = 0x00, m[20] = 0x01;
	expect_refused(KH_SIM_ECMG, m, 21, KH_SIM_INVALID_MESSAGE, 0x0001);
	/* unknown parameter_type (0x0050), and a known one this message does not carry (lead_CW):
	 * ECMG 0x000E, EMMG 0x000A */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[12] = 0x50;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_UNKNOWN_PARAM, 0x000E);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, m, sizeof v_channel_setup, &msg, &culprit), KH_SIM_UNKNOWN_PARAM);
	assert_int_equal(culprit, 0x0050);
	m[12] = 0x0A;
	expect_refused(KH_SIM_ECMG, m, sizeof v_channel_setup, KH_SIM_UNKNOWN_PARAM, 0x000E);
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[12] = 0x0F; /* ECM_stream_id: right length, wrong message */
	m[14] = 0x02;
	memcpy(m + 15, "\x00\x01", 2);
	m[4] = 0x0C;
	expect_refused(KH_SIM_ECMG, m, 17, KH_SIM_UNKNOWN_PARAM, 0x000E);
	memcpy(m, v_data_provision, sizeof v_data_provision);
	m[32] = 0x09; /* datagram -> 0x0009, not an EMMG parameter */
	expect_refused(KH_SIM_EMMG, m, sizeof v_data_provision, KH_SIM_UNKNOWN_PARAM, 0x000A);
	/* inconsistent length: Super_CAS_id of 2 bytes (ECMG 0x000F), an empty datagram (EMMG 0x000B) */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[4] = 0x0C, m[14] = 0x02;
	expect_refused(KH_SIM_ECMG, m, 17, KH_SIM_BAD_LENGTH, 0x000F);
	memcpy(m, v_data_provision, sizeof v_data_provision);
	m[33] = 0x00, m[34] = 0x00;
	m[4] = 0x1E;
	expect_refused(KH_SIM_EMMG, m, 35, KH_SIM_BAD_LENGTH, 0x000B);
	/* missing mandatory: channel_setup without Super_CAS_id (ECMG 0x0010); data_provision
	 * without its datagram (EMMG 0x000C) */
	memcpy(m, v_channel_setup, 11);
	m[4] = 0x06;
	expect_refused(KH_SIM_ECMG, m, 11, KH_SIM_MISSING_PARAM, 0x0010);
	memcpy(m, v_data_provision, 31);
	m[4] = 0x1A;
	expect_refused(KH_SIM_EMMG, m, 31, KH_SIM_MISSING_PARAM, 0x000C);
	/* a parameter given twice where once is allowed: invalid message */
	memcpy(m, v_channel_setup, 11);
	memcpy(m + 11, v_channel_setup + 5, 6);
	memcpy(m + 17, v_channel_setup + 11, 8);
	m[4] = 0x14;
	expect_refused(KH_SIM_ECMG, m, 25, KH_SIM_INVALID_MESSAGE, 0x0001);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, m, 25, &msg, &culprit), KH_SIM_INVALID_MESSAGE);
	assert_int_equal(culprit, KH_SIM_P_ECM_CHANNEL_ID);
	/* the culprit of a wrong length is that parameter; a good message has none */
	memcpy(m, v_channel_setup, sizeof v_channel_setup);
	m[4] = 0x0C, m[14] = 0x02;
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, m, 17, &msg, &culprit), KH_SIM_BAD_LENGTH);
	assert_int_equal(culprit, KH_SIM_P_SUPER_CAS_ID);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, v_channel_setup, sizeof v_channel_setup, &msg, &culprit), KH_SIM_OK);
	assert_int_equal(culprit, 0);
}

static void test_too_many_params(void **state)
{
	static uint8_t buf[2048];
	struct kh_sim_builder b;
	enum kh_sim_status why;
	size_t len;

	(void)state;
	/* a channel_error with KH_SIM_MAX_PARAMS parameters is taken, one more is too long */
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CHANNEL_ERROR, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 7);
	for (size_t i = 1; i < KH_SIM_MAX_PARAMS; i++)
		kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, (uint16_t)i);
	assert_int_equal(kh_sim_finish(&b, &len, &why), KH_OK);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, buf, len, &msg, NULL), KH_SIM_OK);
	assert_int_equal(kh_sim_count(&msg, KH_SIM_P_ERROR_STATUS), KH_SIM_MAX_PARAMS - 1);
	kh_sim_add_u16(&b, KH_SIM_P_ERROR_STATUS, 0x7000);
	assert_int_equal(kh_sim_finish(&b, &len, &why), KH_ERR_INVAL);
	assert_int_equal(why, KH_SIM_TOO_LONG);
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, buf, b.len, &msg, NULL), KH_SIM_TOO_LONG);
}

static void test_cw_lengths(void **state)
{
	uint8_t buf[128], comb[2 + 16] = {0x00, 0x07};
	struct kh_sim_builder b;
	enum kh_sim_status why;
	size_t len;

	(void)state;
	/* CP_CW_combination is CP_number and a control word of the scrambler's size: 8 (CSA) or 16
	 * (AES) bytes both taken, CP_number alone refused as a wrong length */
	for (size_t cw = 0; cw <= 16; cw += 8) {
		kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CW_PROVISION, buf, sizeof buf);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, 1);
		kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, 7);
		kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, 2 + cw);
		assert_int_equal(kh_sim_finish(&b, &len, &why), cw == 0 ? KH_ERR_INVAL : KH_OK);
		assert_int_equal(why, cw == 0 ? KH_SIM_BAD_LENGTH : KH_SIM_OK);
	}
}

static void test_builder_refuses(void **state)
{
	uint8_t buf[64];
	struct kh_sim_builder b;
	enum kh_sim_status why;
	size_t len = 99;

	(void)state;
	/* a version the parser refuses */
	kh_sim_start(&b, KH_SIM_ECMG, 1, KH_SIM_ECMG_CHANNEL_TEST, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	assert_int_equal(kh_sim_finish(&b, &len, &why), KH_ERR_INVAL);
	assert_int_equal(why, KH_SIM_BAD_VERSION);
	assert_int_equal(len, 99);
	/* a type of the other interface */
	kh_sim_start(&b, KH_SIM_EMMG, 2, KH_SIM_ECMG_CHANNEL_TEST, buf, sizeof buf);
	assert_int_equal(kh_sim_finish(&b, &len, &why), KH_ERR_INVAL);
	assert_int_equal(why, KH_SIM_UNKNOWN_TYPE);
	/* a wrong length */
	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CHANNEL_TEST, buf, sizeof buf);
	kh_sim_add_u32(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	assert_int_equal(kh_sim_finish(&b, &len, &why), KH_ERR_INVAL);
	assert_int_equal(why, KH_SIM_BAD_LENGTH);
	/* the buffer too small: sticky, even if later parameters would fit */
	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CHANNEL_SETUP, buf, 12);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, 1);
	kh_sim_add_u32(&b, KH_SIM_P_SUPER_CAS_ID, 1);
	assert_int_equal(kh_sim_finish(&b, &len, NULL), KH_ERR_BUF);
	kh_sim_start(&b, KH_SIM_ECMG, 2, KH_SIM_ECMG_CHANNEL_SETUP, buf, 4);
	assert_int_equal(kh_sim_finish(&b, &len, NULL), KH_ERR_BUF);
	assert_int_equal(len, 99);
}

static void test_splitter(void **state)
{
	uint8_t stream[sizeof v_channel_setup + sizeof v_data_provision];
	uint8_t big[5] = {0x02, 0x00, 0x01, 0xFF, 0xFC};
	size_t need = 0;

	(void)state;
	memcpy(stream, v_channel_setup, sizeof v_channel_setup);
	memcpy(stream + sizeof v_channel_setup, v_data_provision, sizeof v_data_provision);
	/* fewer than a header: ask for the header */
	for (size_t n = 0; n < KH_SIM_HEADER_LEN; n++) {
		assert_int_equal(kh_sim_frame(stream, n, &need), KH_SIM_OK);
		assert_int_equal(need, KH_SIM_HEADER_LEN);
	}
	/* any prefix from the header on: the first message's size, whatever follows */
	for (size_t n = KH_SIM_HEADER_LEN; n <= sizeof stream; n++) {
		assert_int_equal(kh_sim_frame(stream, n, &need), KH_SIM_OK);
		assert_int_equal(need, sizeof v_channel_setup);
	}
	assert_int_equal(kh_sim_parse(KH_SIM_ECMG, stream, need, &msg, NULL), KH_SIM_OK);
	assert_int_equal(kh_sim_frame(stream + need, sizeof stream - need, &need), KH_SIM_OK);
	assert_int_equal(need, sizeof v_data_provision);
	/* the largest message we take: 64 KiB in all; one byte more is too long */
	big[3] = 0xFF, big[4] = 0xFB;
	assert_int_equal(kh_sim_frame(big, 5, &need), KH_SIM_OK);
	assert_int_equal(need, KH_SIM_MAX_MSG);
	big[4] = 0xFC;
	need = 7;
	assert_int_equal(kh_sim_frame(big, 5, &need), KH_SIM_TOO_LONG);
	assert_int_equal(need, 7);
}

static void test_status_table(void **state)
{
	(void)state;
	/* the shared head of both tables, then where they part */
	assert_int_equal(kh_sim_error_status(KH_SIM_ECMG, KH_SIM_OK), 0);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_INVALID_MESSAGE), 0x0001);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_BAD_VERSION), 0x0002);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_UNKNOWN_TYPE), 0x0003);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_TOO_LONG), 0x0004);
	assert_int_equal(kh_sim_error_status(KH_SIM_ECMG, KH_SIM_UNKNOWN_PARAM), 0x000E);
	assert_int_equal(kh_sim_error_status(KH_SIM_ECMG, KH_SIM_BAD_LENGTH), 0x000F);
	assert_int_equal(kh_sim_error_status(KH_SIM_ECMG, KH_SIM_MISSING_PARAM), 0x0010);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_UNKNOWN_PARAM), 0x000A);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_BAD_LENGTH), 0x000B);
	assert_int_equal(kh_sim_error_status(KH_SIM_EMMG, KH_SIM_MISSING_PARAM), 0x000C);
	assert_string_equal(kh_sim_status_str(KH_SIM_MISSING_PARAM), "missing mandatory parameter");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors_ecmg),	cmocka_unit_test(test_vector_emmg),
		cmocka_unit_test(test_every_type),	cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_too_many_params), cmocka_unit_test(test_cw_lengths),
		cmocka_unit_test(test_builder_refuses),
		cmocka_unit_test(test_splitter),	cmocka_unit_test(test_status_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
