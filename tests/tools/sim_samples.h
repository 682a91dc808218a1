/*
 * One sample of every SimulCrypt message type (include/keyhole/simulcrypt.h), made with the
 * builder, for tests/unit/test_simulcrypt.c and tests/tools/sim_pcap.c. The parameter lists are
 * transcribed here again from TS 103 197 (not taken from the codec's tables), so a disagreement
 * between the two shows up as a refused build.
 */
#ifndef KH_SIM_SAMPLES_H
#define KH_SIM_SAMPLES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "keyhole/simulcrypt.h"

struct sim_sample {
	enum kh_sim_iface iface;
	uint16_t type;
	const char *name;
	uint16_t params[12]; /* parameter types in order, 0 ends */
};

#define E KH_SIM_ECMG
#define M KH_SIM_EMMG
static const struct sim_sample sim_samples[] = {
	{E, KH_SIM_ECMG_CHANNEL_SETUP, "channel_setup", {0x000E, 0x0001}},
	{E, KH_SIM_ECMG_CHANNEL_TEST, "channel_test", {0x000E}},
	{E,
	 KH_SIM_ECMG_CHANNEL_STATUS,
	 "channel_status",
	 {0x000E, 0x0002, 0x0003, 0x0004, 0x0007, 0x0008, 0x0009, 0x000A, 0x000B, 0x000C, 0x0016}},
	{E, KH_SIM_ECMG_CHANNEL_CLOSE, "channel_close", {0x000E}},
	{E, KH_SIM_ECMG_CHANNEL_ERROR, "channel_error", {0x000E, 0x7000, 0x7000, 0x7001}},
	{E, KH_SIM_ECMG_STREAM_SETUP, "stream_setup", {0x000E, 0x000F, 0x0019, 0x0010}},
	{E, KH_SIM_ECMG_STREAM_TEST, "stream_test", {0x000E, 0x000F}},
	{E, KH_SIM_ECMG_STREAM_STATUS, "stream_status", {0x000E, 0x000F, 0x0019, 0x0011}},
	{E, KH_SIM_ECMG_STREAM_CLOSE_REQUEST, "stream_close_request", {0x000E, 0x000F}},
	{E, KH_SIM_ECMG_STREAM_CLOSE_RESPONSE, "stream_close_response", {0x000E, 0x000F}},
	{E, KH_SIM_ECMG_STREAM_ERROR, "stream_error", {0x000E, 0x000F, 0x7000}},
	{E, KH_SIM_ECMG_CW_PROVISION, "CW_provision", {0x000E, 0x000F, 0x0012, 0x0014, 0x0014, 0x0013, 0x000D}},
	{E, KH_SIM_ECMG_ECM_RESPONSE, "ECM_response", {0x000E, 0x000F, 0x0012, 0x0015}},
	{M, KH_SIM_EMMG_CHANNEL_SETUP, "channel_setup", {0x0001, 0x0003, 0x0002}},
	{M, KH_SIM_EMMG_CHANNEL_TEST, "channel_test", {0x0001, 0x0003}},
	{M, KH_SIM_EMMG_CHANNEL_STATUS, "channel_status", {0x0001, 0x0003, 0x0002}},
	{M, KH_SIM_EMMG_CHANNEL_CLOSE, "channel_close", {0x0001, 0x0003}},
	{M, KH_SIM_EMMG_CHANNEL_ERROR, "channel_error", {0x0001, 0x0003, 0x7000, 0x7001}},
	{M, KH_SIM_EMMG_STREAM_SETUP, "stream_setup", {0x0001, 0x0003, 0x0004, 0x0008, 0x0007}},
	{M, KH_SIM_EMMG_STREAM_TEST, "stream_test", {0x0001, 0x0003, 0x0004}},
	{M, KH_SIM_EMMG_STREAM_STATUS, "stream_status", {0x0001, 0x0003, 0x0004, 0x0008, 0x0007}},
	{M, KH_SIM_EMMG_STREAM_CLOSE_REQUEST, "stream_close_request", {0x0001, 0x0003, 0x0004}},
	{M, KH_SIM_EMMG_STREAM_CLOSE_RESPONSE, "stream_close_response", {0x0001, 0x0003, 0x0004}},
	{M, KH_SIM_EMMG_STREAM_ERROR, "stream_error", {0x0001, 0x0003, 0x0004, 0x7000}},
	{M, KH_SIM_EMMG_STREAM_BW_REQUEST, "stream_BW_request", {0x0001, 0x0003, 0x0004, 0x0006}},
	{M, KH_SIM_EMMG_STREAM_BW_ALLOCATION, "stream_BW_allocation", {0x0001, 0x0003, 0x0004, 0x0006}},
	{M, KH_SIM_EMMG_DATA_PROVISION, "data_provision", {0x0001, 0x0003, 0x0004, 0x0008, 0x0005, 0x0005}},
};
#undef E
#undef M
#define SIM_SAMPLES (sizeof sim_samples / sizeof sim_samples[0])

/* A plausible value for a parameter: its fixed length, or a few bytes for a variable one. */
static inline size_t sim_sample_value(enum kh_sim_iface iface, uint16_t type, uint8_t *v)
{
	static const uint8_t cw[10] = {0x00, 0x05, 0x11, 0x22, 0x33, 0x66, 0x44, 0x55, 0x66, 0xFF};
	static const uint8_t sec[8] = {0x80, 0x70, 0x05, 0x00, 0x01, 0x02, 0x03, 0x04};
	static const uint8_t ecmg_len[0x1A] = {0, 4, 1, 2, 2, 2, 2, 2, 2, 2, 1, 1, 2,
					       3, 2, 2, 2, 1, 2, 2, 0, 0, 2, 2, 0, 2};
	static const uint8_t emmg_len[9] = {0, 4, 1, 2, 2, 0, 2, 1, 2};
	size_t n;

	if (type == KH_SIM_P_ERROR_STATUS) {
		v[0] = 0x00;
		v[1] = 0x01;
		return 2;
	}
	if (type == KH_SIM_P_ERROR_INFORMATION) {
		v[0] = 0x00;
		v[1] = 0x01;
		return 2;
	}
	if ((iface == KH_SIM_ECMG && (type == KH_SIM_P_ECM_DATAGRAM)) ||
	    (iface == KH_SIM_EMMG && type == KH_SIM_P_DATAGRAM)) {
		memcpy(v, sec, sizeof sec);
		return sizeof sec;
	}
	if (iface == KH_SIM_ECMG && type == KH_SIM_P_CP_CW_COMBINATION) {
		memcpy(v, cw, sizeof cw);
		return sizeof cw;
	}
	n = iface == KH_SIM_ECMG ? (type < sizeof ecmg_len ? ecmg_len[type] : 0)
				 : (type < sizeof emmg_len ? emmg_len[type] : 0);
	for (size_t i = 0; i < n; i++)
		v[i] = (uint8_t)(i == n - 1 ? 0x01 : 0x00); /* 1 in every width: a valid flag, id or count */
	return n;
}

/* Builds sample i (protocol version `version`) into buf; the builder's status. */
static inline kh_err sim_sample_build(size_t i, uint8_t version, uint8_t *buf, size_t cap, size_t *len)
{
	const struct sim_sample *s = &sim_samples[i];
	struct kh_sim_builder b;
	uint8_t v[16];

	kh_sim_start(&b, s->iface, version, s->type, buf, cap);
	for (size_t k = 0; k < 12 && s->params[k] != 0; k++)
		kh_sim_add(&b, s->params[k], v, sim_sample_value(s->iface, s->params[k], v));
	return kh_sim_finish(&b, len, NULL);
}

#endif
