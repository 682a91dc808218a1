/*
 * libFuzzer harness: the DVB SimulCrypt codec (include/keyhole/simulcrypt.h), which an ECMG, an
 * SCS client, an EMMG and a mux side will all put outside bytes through.
 *
 * The first input byte picks the interface (bit 0: ECMG<->SCS or EMMG<->MUX); the rest is a TCP
 * byte stream cut by kh_sim_frame. For each message the splitter delimits:
 * - kh_sim_parse accepts it, or refuses with one of the enum's statuses, whose error_status is
 *   in the interface's table; a refusal leaves the output as it was;
 * - an accepted message: its version 2 or 3, its type known to the interface, every parameter
 *   inside the message in input order, back to back; the typed accessors agree with the lengths;
 *   kh_sim_rebuild gives back the input byte for byte, and fails with KH_ERR_BUF one byte short;
 * - the splitter agrees with the parser: a message one byte short never parses, the rest of the
 *   stream taken whole (when longer than the message) never parses, and when the splitter says
 *   too long so does the parser.
 */
#include <string.h>

#include "keyhole/simulcrypt.h"

#include "fuzz_common.h"

static struct kh_sim_msg msg, sentinel;
static uint8_t again[KH_SIM_MAX_MSG];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	memset(&sentinel, 0x5A, sizeof sentinel);
	return 0;
}

static int in_table(enum kh_sim_iface iface, uint16_t code)
{
	if (code == 0x0001 || code == 0x0002 || code == 0x0003 || code == 0x0004)
		return 1;
	if (iface == KH_SIM_ECMG)
		return code == 0x000E || code == 0x000F || code == 0x0010;
	return code == 0x000A || code == 0x000B || code == 0x000C;
}

static void check_accessors(void)
{
	for (size_t i = 0; i < msg.n; i++) {
		const struct kh_sim_param *p = &msg.p[i];
		uint8_t u8;
		uint16_t u16;
		uint32_t u32;
		size_t nth = 0;

		for (size_t j = 0; j < i; j++)
			nth += msg.p[j].type == p->type;
		CHECK(kh_sim_find(&msg, p->type, nth) == p);
		CHECK((kh_sim_u8(&msg, p->type, nth, &u8) == KH_OK) == (p->len == 1));
		CHECK((kh_sim_u16(&msg, p->type, nth, &u16) == KH_OK) == (p->len == 2));
		CHECK((kh_sim_u32(&msg, p->type, nth, &u32) == KH_OK) == (p->len == 4));
		if (p->len == 2)
			CHECK(u16 == ((unsigned)p->val[0] << 8 | p->val[1]));
	}
}

static void check_accepted(enum kh_sim_iface iface, const uint8_t *m, size_t n)
{
	size_t off = KH_SIM_HEADER_LEN, len = 0;

	CHECK(msg.iface == iface && (msg.version == 2 || msg.version == 3));
	CHECK(kh_sim_known_type(iface, msg.type));
	CHECK(msg.n <= KH_SIM_MAX_PARAMS);
	for (size_t i = 0; i < msg.n; i++) {
		CHECK(msg.p[i].val == m + off + 4);
		off += 4u + msg.p[i].len;
		CHECK(off <= n);
	}
	CHECK(off == n);
	check_accessors();
	CHECK(kh_sim_rebuild(&msg, again, sizeof again, &len) == KH_OK);
	CHECK(len == n && memcmp(again, m, n) == 0);
	CHECK(kh_sim_rebuild(&msg, again, n - 1, &len) == KH_ERR_BUF);
}

static enum kh_sim_status parse_checked(enum kh_sim_iface iface, const uint8_t *m, size_t n)
{
	uint16_t culprit = 0xFFFF;
	enum kh_sim_status st;

	memcpy(&msg, &sentinel, sizeof msg);
	st = kh_sim_parse(iface, m, n, &msg, &culprit);
	if (st == KH_SIM_OK) {
		CHECK(culprit == 0);
		check_accepted(iface, m, n);
		return st;
	}
	CHECK(st >= KH_SIM_INVALID_MESSAGE && st <= KH_SIM_MISSING_PARAM);
	CHECK(in_table(iface, kh_sim_error_status(iface, st)));
	CHECK(memcmp(&msg, &sentinel, sizeof msg) == 0);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum kh_sim_iface iface;
	size_t need;

	if (size < 1)
		return 0;
	iface = (data[0] & 1) ? KH_SIM_EMMG : KH_SIM_ECMG;
	data++, size--;
	while (size > 0) {
		enum kh_sim_status fr = kh_sim_frame(data, size, &need);

		if (fr == KH_SIM_TOO_LONG) {
			CHECK(size >= KH_SIM_HEADER_LEN);
			CHECK(parse_checked(iface, data, size) == KH_SIM_TOO_LONG);
			return 0;
		}
		CHECK(fr == KH_SIM_OK && need >= KH_SIM_HEADER_LEN && need <= KH_SIM_MAX_MSG);
		if (need > size) {
			/* an incomplete message never parses */
			CHECK(parse_checked(iface, data, size) != KH_SIM_OK);
			return 0;
		}
		if (need > KH_SIM_HEADER_LEN)
			CHECK(parse_checked(iface, data, need - 1) != KH_SIM_OK);
		if (size > need)
			CHECK(parse_checked(iface, data, size) != KH_SIM_OK);
		parse_checked(iface, data, need);
		data += need, size -= need;
	}
	return 0;
}
