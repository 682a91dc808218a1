/*
 * libFuzzer harness: the module's reader of its own sealed state (module.c's deserialise, the
 * runtime's TLVs, each applet's section, blob versions 1 and 2). kh_module_load opens a blob only
 * when it authenticates under the root key, so fuzz_module, which hands it raw bytes, never gets
 * past the tag. Here the input is the *plaintext*: the harness seals it itself, as the format
 * says (docs/internals/module.md) and with base crypto only:
 *
 *   "KHMS" | u8 version | u64 counter | nonce (12) | AES-256-GCM(state key, aad = these 25 bytes)
 *   state key = HKDF-SHA256(root key, no salt, "keyhole module state v1", 32)
 *
 * The first input byte picks the blob version (bit 0 set: version 1, the flat list before
 * sections; clear: version 2); the rest is the state. The blob goes to kh_module_load in a fresh
 * module (static aligned memory, a constant root key, a store that keeps the last blob, a fixed
 * clock (fuzz_common.h's), the deterministic random source reseeded per input).
 *
 * Invariants:
 * - A refusal is one of the loader's documented codes for malformed contents, and leaves the
 *   module byte-identical; a blob too large for the module is TOO_LARGE. A state sealed right
 *   never fails as STATE_AUTH, ROLLBACK or VERSION.
 * - An accepted state holds the blob's counter and is stored again by the module's own code
 *   (persist(), below): that store succeeds, with counter + 1. The blob it wrote loads into
 *   another fresh module, which then answers GET INFO, GET CERT (both), CAS STATUS and HELLO
 *   exactly as the first, and holds the same persistent state: the runtime's fields, and every
 *   applet's slot its role stores (a section a role does not write is read, then dropped, by
 *   design). Stored once more, it writes the same plaintext: load(save(load(x))) is a fixed point.
 * - An older counter is then refused as ROLLBACK, with the module unchanged.
 *
 * No command stores a module's state unchanged, and the runtime's serialiser is static, so this
 * file compiles module.c into itself (the library's copy is then not linked) and calls persist()
 * directly: the module's own sealing, not a copy of it, and nothing changed in the module.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/crypto.h"
#include "keyhole/module.h"
#include "keyhole/usage.h"

#include "fuzz_common.h"

#include "module/module.c"

/* Any key does (the harness seals its input under it): fuzz_module's. */
static const uint8_t fz_state_root[KH_ROOT_KEY_LEN] = {
	0x6b, 0x68, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x72, 0x6f, 0x6f, 0x74, 0x2d, 0x6b, 0x65, 0x79,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
};
/* the counter the input is sealed under */
#define FZ_STATE_COUNTER 41u

#define MEM_SIZE (1u << 17)
/* Plaintexts up to this size are sealed, a little past what a blob may hold (TOO_LARGE). */
#define PLAIN_CAP (KH_STATE_PLAIN_MAX + 64)

static struct kh_rng_det rng;
static int trace; /* FZ_STATE_TRACE set: say what each load answered */
static _Alignas(16) uint8_t mem_a[MEM_SIZE], mem_b[MEM_SIZE], snap[MEM_SIZE];
static uint8_t state_key[32];
static uint8_t sealed[KH_MODULE_BLOB_HDR_LEN + PLAIN_CAP + KH_TAG_LEN];
static uint8_t plain_a[KH_MODULE_BLOB_MAX], plain_b[KH_MODULE_BLOB_MAX];

/* The last blob the store callback saw. */
static struct {
	uint8_t blob[KH_MODULE_BLOB_MAX];
	size_t len;
	uint64_t counter;
} st;

static kh_err store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	uint64_t hdr = 0;

	(void)ctx;
	/* the blob's clear header names the counter the module asks to store */
	CHECK(len <= sizeof st.blob && kh_module_blob_counter(blob, len, &hdr) == KH_OK && hdr == counter);
	st.counter = counter;
	st.len = len;
	memcpy(st.blob, blob, len);
	return KH_OK;
}

static const struct kh_module_env env = {store, fz_cas_now, NULL};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char label[] = "keyhole module state v1";

	(void)argc, (void)argv;
	if (kh_module_size() > MEM_SIZE) {
		fprintf(stderr, "fuzz_state: kh_module_size() %zu > %u: raise MEM_SIZE\n", kh_module_size(), MEM_SIZE);
		__builtin_trap();
	}
	CHECK(kh_hkdf(fz_state_root, sizeof fz_state_root, NULL, 0, (const uint8_t *)label, sizeof label - 1,
		      state_key, sizeof state_key) == KH_OK);
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	trace = getenv("FZ_STATE_TRACE") != NULL;
	return 0;
}

/* The plaintext sealed as a module seals its state; returns the blob's length. */
static size_t seal(uint8_t version, uint64_t counter, const uint8_t *pt, size_t n)
{
	static const uint8_t nonce[KH_NONCE_LEN] = "fuzz state.";

	memcpy(sealed, "KHMS", 4);
	sealed[4] = version;
	kh_put_be64(sealed + 5, counter);
	memcpy(sealed + 13, nonce, KH_NONCE_LEN);
	CHECK(kh_aead_seal(state_key, sealed + 13, sealed, KH_MODULE_BLOB_HDR_LEN, pt, n,
			   sealed + KH_MODULE_BLOB_HDR_LEN) == KH_OK);
	return KH_MODULE_BLOB_HDR_LEN + n + KH_TAG_LEN;
}

/* The plaintext of a blob the module stored (it must open under the state key); its length. */
static size_t unseal(const uint8_t *blob, size_t len, uint8_t *pt)
{
	CHECK(len >= KH_MODULE_BLOB_HDR_LEN + KH_TAG_LEN && memcmp(blob, "KHMS", 4) == 0);
	CHECK(blob[4] == KH_MODULE_BLOB_V2); /* a store writes the newest version only */
	CHECK(kh_aead_open(state_key, blob + 13, blob, KH_MODULE_BLOB_HDR_LEN, blob + KH_MODULE_BLOB_HDR_LEN,
			   len - KH_MODULE_BLOB_HDR_LEN, pt) == KH_OK);
	return len - KH_MODULE_BLOB_HDR_LEN - KH_TAG_LEN;
}

static struct kh_module *fresh(uint8_t *mem)
{
	struct kh_module *m = NULL;

	CHECK(kh_module_init(mem, MEM_SIZE, fz_state_root, &env, &m) == KH_OK && m != NULL);
	return m;
}

/* What a host can learn of a module without changing it: each command's whole answer. */
#define NFACTS 5
struct facts {
	uint8_t r[NFACTS][KH_APDU_MAX_RESP];
	size_t n[NFACTS];
};

static void facts_of(struct kh_module *m, struct facts *f)
{
	static const uint8_t cmds[NFACTS][5 + KH_HELLO_NONCE_MIN] = {
		{0x80, KH_INS_GET_INFO, 0x00, 0x00},
		{0x80, KH_INS_GET_CERT, 0x00, 0x00, 0x00},
		{0x80, KH_INS_GET_CERT, 0x01, 0x00, 0x00},
		{0x80, KH_INS_CAS_STATUS, 0x00, 0x00},
		{0x80, KH_INS_HELLO, 0x00, 0x00, KH_HELLO_NONCE_MIN, 'f', 'u', 'z', 'z', ' ', 's', 't', 'a', 't', 'e',
		 ' ', 'n', 'o', 'n', 'c', 'e'},
	};
	static const size_t lens[NFACTS] = {4, 5, 5, 4, 5 + KH_HELLO_NONCE_MIN};
	uint64_t counter = kh_module_counter(m);

	for (size_t i = 0; i < NFACTS; i++) {
		f->n[i] = kh_module_process(m, cmds[i], lens[i], f->r[i], sizeof f->r[i]);
		CHECK(f->n[i] >= 2 && f->n[i] <= sizeof f->r[i]);
	}
	CHECK(kh_module_counter(m) == counter); /* none of them stores */
}

static void same_facts(const struct facts *a, const struct facts *b)
{
	for (size_t i = 0; i < NFACTS; i++)
		CHECK(a->n[i] == b->n[i] && memcmp(a->r[i], b->r[i], a->n[i]) == 0);
}

/* Bytes past a field's length or a list's count mean nothing (a repeated tag may leave some): zero
 * them, so that two states compare by what they hold. */
#define ZERO_TAIL(arr, n) memset((arr) + (n), 0, sizeof(arr) - (n) * sizeof((arr)[0]))
static void settle(struct kh_persist *p)
{
	struct kh_cas_state *c = &p->app.cas;

	ZERO_TAIL(p->sign_cert, p->sign_cert_len);
	ZERO_TAIL(p->pair_cert, p->pair_cert_len);
	ZERO_TAIL(c->keys, c->nkeys);
	ZERO_TAIL(c->rights, c->nrights);
	ZERO_TAIL(c->events, c->nevents);
	ZERO_TAIL(c->log, c->nlog);
	ZERO_TAIL(c->signers, c->nsigners);
	ZERO_TAIL(c->revoked, c->nrevoked);
}

/* The persistent state two modules hold, as far as a store keeps it: the runtime's fields, and
 * the applets' slots when the role writes their section (applet_cas.c's: the whole slot area;
 * applet_kc.c's: the key card's slot). */
static void same_state(const struct kh_module *a, const struct kh_module *b)
{
	static struct kh_persist pa, pb;

	pa = a->p;
	pb = b->p;
	settle(&pa);
	settle(&pb);
	CHECK(memcmp(&pa, &pb, offsetof(struct kh_persist, app)) == 0);
	if (kh__applet_cas.state->roles & KH_ROLE_BIT(pa.role)) {
		CHECK(memcmp(&pa.app, &pb.app, sizeof pa.app) == 0);
		CHECK(memcmp(&a->live, &b->live, sizeof a->live) == 0);
	}
	if (kh__applet_kc.state->roles & KH_ROLE_BIT(pa.role))
		CHECK(memcmp(&pa.app.kc, &pb.app.kc, sizeof pa.app.kc) == 0);
	kh_wipe(&pa, sizeof pa);
	kh_wipe(&pb, sizeof pb);
}

/* A load the module refused: a malformed contents code, nothing changed. */
static void refused(kh_err r, size_t blen)
{
	if (blen > KH_MODULE_BLOB_MAX)
		CHECK(r == KH_ERR_TOO_LARGE);
	CHECK(r == KH_ERR_FORMAT || r == KH_ERR_TLV_TAG || r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING ||
	      r == KH_ERR_TOO_LARGE || r == KH_ERR_STATE_SECTION || r == KH_ERR_STATE_VERSION);
	CHECK(memcmp(snap, mem_a, kh_module_size()) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct facts fa, fb;
	struct kh_module *a, *b;
	size_t blen, na, nb;
	kh_err r;

	if (size < 1 || size - 1 > PLAIN_CAP)
		return 0;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	memset(&st, 0, sizeof st);
	blen = seal(data[0] & 1 ? KH_MODULE_BLOB_V1 : KH_MODULE_BLOB_V2, FZ_STATE_COUNTER, data + 1, size - 1);

	a = fresh(mem_a);
	memcpy(snap, mem_a, kh_module_size());
	r = kh_module_load(a, sealed, blen, 0);
	if (trace)
		fprintf(stderr, "fuzz_state: version %u, %zu bytes: %s\n", data[0] & 1 ? 1u : 2u, size - 1,
			r == KH_OK ? "loaded" : kh_strerror(r));
	if (r != KH_OK) {
		refused(r, blen);
		kh_module_wipe(a);
		return 0;
	}
	CHECK(blen <= KH_MODULE_BLOB_MAX && kh_module_counter(a) == FZ_STATE_COUNTER);

	/* Stored again by the module itself: it can always seal what it accepted. */
	CHECK(persist(a) == KH_OK);
	CHECK(st.counter == FZ_STATE_COUNTER + 1 && kh_module_counter(a) == st.counter);
	na = unseal(st.blob, st.len, plain_a);
	facts_of(a, &fa);

	/* ... and that blob is the same module again. */
	b = fresh(mem_b);
	CHECK(kh_module_load(b, st.blob, st.len, FZ_STATE_COUNTER + 1) == KH_OK);
	CHECK(kh_module_counter(b) == FZ_STATE_COUNTER + 1);
	facts_of(b, &fb);
	same_facts(&fa, &fb);
	same_state(a, b);

	/* Stored once more: the same plaintext, byte for byte. */
	CHECK(persist(b) == KH_OK && st.counter == FZ_STATE_COUNTER + 2);
	nb = unseal(st.blob, st.len, plain_b);
	CHECK(na == nb && memcmp(plain_a, plain_b, na) == 0);

	/* The older blob is now a rollback, and changes nothing. */
	memcpy(snap, mem_b, kh_module_size());
	CHECK(kh_module_load(b, sealed, blen, 0) == KH_ERR_ROLLBACK);
	CHECK(memcmp(snap, mem_b, kh_module_size()) == 0);

	kh_module_wipe(a);
	kh_module_wipe(b);
	return 0;
}
