/*
 * libFuzzer harness: a whole module driven through kh_module_process, the boundary a host (or
 * anything on the wire to a card) reaches. Each input starts a BLANK module afresh — a static
 * aligned buffer, a constant root key, a store that accepts and remembers the last blob, a
 * fixed clock, the deterministic random source reseeded — and feeds it the command APDUs split
 * from the input as u16 big-endian length-prefixed chunks (a short last chunk is taken as is).
 * The seeds (fuzz/gen_corpus.c) personalise a card and a CAM, pair with them and talk through
 * the channel, and personalise a decoder module that pairs with a CAM in ladder mode, loads
 * sealed control words and descrambles, so the fuzzer starts from a module in service, not only
 * a blank one.
 *
 * Invariants: every response is 2..cap bytes and a refusal is the status word alone (LADDER
 * LOAD answers nothing else even when it succeeds; DESCRAMBLE answers as many bytes as it was
 * given, whole 188-byte packets); a store
 * is asked for counter + 1, with a blob whose clear header says so; the counter never moves
 * otherwise. At the end: kh_module_load of the raw input is refused (it cannot be sealed under
 * the root key) with the module byte-identical; the last stored blob loads back, at its own
 * counter, giving the same public facts and certificates; and a blob below the minimum counter
 * is refused as a rollback, again with the module unchanged.
 */
#include <stdio.h>
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/crypto.h"
#include "keyhole/module.h"

#include "fuzz_common.h"

static const uint8_t fz_module_root[KH_ROOT_KEY_LEN] = {
	0x6b, 0x68, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x72, 0x6f, 0x6f, 0x74, 0x2d, 0x6b, 0x65, 0x79,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
};
#define FZ_MODULE_NOW 1800000000u

#define MEM_SIZE (1u << 17)
#define MAX_CMDS 64
#define INFO_PREFIX 26 /* GET INFO: role, UA, lifecycle and counter TLVs */

static struct kh_rng_det rng;
static _Alignas(16) uint8_t mem[MEM_SIZE];
static _Alignas(16) uint8_t snap[MEM_SIZE];
static uint8_t resp[KH_APDU_MAX_RESP];

/* What the store callback saw. */
static struct {
	uint8_t blob[KH_MODULE_BLOB_MAX];
	size_t len;
	uint64_t counter; /* of the last blob stored; 0 when none */
	uint64_t expect;  /* the counter the module holds: the next store must be expect + 1 */
} st;

static kh_err store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	uint64_t hdr = 0;

	(void)ctx;
	CHECK(counter == st.expect + 1);
	CHECK(len <= sizeof st.blob);
	CHECK(kh_module_blob_counter(blob, len, &hdr) == KH_OK && hdr == counter);
	memcpy(st.blob, blob, len);
	st.len = len;
	st.counter = counter;
	return KH_OK;
}

static uint64_t fixed_now(void *ctx)
{
	(void)ctx;
	return FZ_MODULE_NOW;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	if (kh_module_size() > MEM_SIZE) {
		fprintf(stderr, "fuzz_module: kh_module_size() %zu > %u: raise MEM_SIZE\n", kh_module_size(), MEM_SIZE);
		__builtin_trap();
	}
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	return 0;
}

/* One command; the invariants every response obeys. Returns the response length. */
static size_t process(struct kh_module *m, const uint8_t *cmd, size_t len)
{
	uint64_t before = kh_module_counter(m);
	size_t n;
	uint16_t sw;

	n = kh_module_process(m, cmd, len, resp, sizeof resp);
	CHECK(n >= 2 && n <= sizeof resp);
	sw = fz_sw_of(resp, n);
	if (sw != KH_SW_OK && sw != KH_SW_RELAY)
		CHECK(n == 2);
	CHECK(sw != KH_SW_RELAY || n > 2); /* a relay request carries the APDU to relay */
	{
		/* A decoder module's own commands: LADDER LOAD answers nothing but its status word,
		 * DESCRAMBLE exactly as many bytes as it was given. */
		struct kh_apdu a;
		if (kh_apdu_parse(cmd, len, &a) == KH_OK && a.cla == KH_CLA) {
			if (a.ins == KH_INS_LADDER_LOAD)
				CHECK(n == 2);
			if (a.ins == KH_INS_DESCRAMBLE && sw == KH_SW_OK)
				CHECK(n == a.lc + 2 && a.lc % 188 == 0);
		}
	}
	/* The counter moves only by a store, and by one. */
	CHECK(kh_module_counter(m) == before || kh_module_counter(m) == before + 1);
	CHECK(kh_module_counter(m) == st.expect || kh_module_counter(m) == st.expect + 1);
	if (kh_module_counter(m) == before + 1)
		CHECK(st.counter == kh_module_counter(m));
	st.expect = kh_module_counter(m);
	/* Too small for any answer: nothing. */
	CHECK(kh_module_process(m, cmd, len, resp, 1) == 0);
	return n;
}

/* GET INFO's fixed prefix and both GET CERT answers, for comparing before and after a reload. */
struct facts {
	uint8_t info[INFO_PREFIX + 2];
	size_t info_len;
	uint8_t cert[2][KH_APDU_MAX_RESP];
	size_t cert_len[2];
};

static void facts_of(struct kh_module *m, struct facts *f)
{
	static const uint8_t get_info[] = {0x80, 0x10, 0x00, 0x00};
	uint8_t get_cert[] = {0x80, 0xCA, 0x00, 0x00, 0x00};
	size_t n, i;

	n = process(m, get_info, sizeof get_info);
	CHECK(fz_sw_of(resp, n) == KH_SW_OK && n >= INFO_PREFIX + 2);
	memcpy(f->info, resp, INFO_PREFIX);
	f->info_len = INFO_PREFIX;
	for (i = 0; i < 2; i++) {
		get_cert[2] = (uint8_t)i;
		n = process(m, get_cert, sizeof get_cert);
		memcpy(f->cert[i], resp, n);
		f->cert_len[i] = n;
	}
}

static void check_reload(struct kh_module *m, const uint8_t *data, size_t size)
{
	size_t msize = kh_module_size();
	struct facts a, b;
	kh_err r;

	/* The raw input is no sealed state of ours: refused, nothing changes. */
	memcpy(snap, m, msize);
	r = kh_module_load(m, data, size, 0);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_FORMAT || r == KH_ERR_VERSION || r == KH_ERR_TOO_LARGE || r == KH_ERR_STATE_AUTH ||
		      r == KH_ERR_ROLLBACK);
		CHECK(memcmp(snap, m, msize) == 0);
	} else {
		/* Only possible when the input is a blob this module sealed (a seed or a mutation hitting one). */
		CHECK(size == st.len && memcmp(data, st.blob, size) == 0);
	}
	if (st.counter == 0)
		return;

	/* The last state stored loads back and is the same module. */
	facts_of(m, &a);
	memcpy(snap, m, msize);
	CHECK(kh_module_load(m, st.blob, st.len, st.counter + 1) == KH_ERR_ROLLBACK);
	CHECK(memcmp(snap, m, msize) == 0);
	CHECK(kh_module_load(m, st.blob, st.len, st.counter) == KH_OK);
	CHECK(kh_module_counter(m) == st.counter);
	facts_of(m, &b);
	CHECK(memcmp(a.info, b.info, INFO_PREFIX) == 0);
	CHECK(a.cert_len[0] == b.cert_len[0] && memcmp(a.cert[0], b.cert[0], a.cert_len[0]) == 0);
	CHECK(a.cert_len[1] == b.cert_len[1] && memcmp(a.cert[1], b.cert[1], a.cert_len[1]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kh_module_env env = {store, fixed_now, NULL};
	struct kh_module *m = NULL;
	size_t off = 0, ncmds = 0;

	if (size > 3 * KH_MODULE_BLOB_MAX)
		return 0;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	memset(&st, 0, sizeof st);
	CHECK(kh_module_init(mem, sizeof mem, fz_module_root, &env, &m) == KH_OK && m != NULL);
	CHECK(kh_module_counter(m) == 0);

	while (size - off >= 2 && ncmds < MAX_CMDS) {
		size_t len = (size_t)(data[off] << 8 | data[off + 1]);
		off += 2;
		if (len > size - off)
			len = size - off;
		process(m, data + off, len);
		off += len;
		ncmds++;
	}
	check_reload(m, data, size);
	kh_module_wipe(m);
	return 0;
}
