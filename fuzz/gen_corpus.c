/*
 * Seed corpus generator for the libFuzzer harnesses (fuzz/README.md). Not built by CMake: run it
 * by hand when a seed must change, from a normal build's static libraries:
 *
 *   cmake -S . -B /tmp/build-gen -DCMAKE_BUILD_TYPE=Debug
 *   cmake --build /tmp/build-gen --target kh_center kh_host kh_module kh_sys kh_core
 *   gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Iinclude -Isrc fuzz/gen_corpus.c -o /tmp/gen_corpus \
 *       /tmp/build-gen/libkh_center.a /tmp/build-gen/libkh_host.a /tmp/build-gen/libkh_module.a \
 *       /tmp/build-gen/libkh_sys.a /tmp/build-gen/libkh_core.a -lcrypto -ldvbcsa
 *   /tmp/gen_corpus fuzz/corpus
 *
 * It replays, with the deterministic random source and the constants of the harnesses, exactly
 * what each harness sets up, then writes valid inputs and near-valid variants of them (files of
 * the same name are overwritten; others, such as crash-* regressions, are left alone). Every
 * step is checked as it goes: a module command that does not answer the status word expected,
 * or a forged certificate that kh_cert_check does not judge as expected, stops the run.
 *
 * A fresh throwaway authority (random Ed25519 root, in a temporary directory removed at the end)
 * signs the certificates, so every run prints a new root key: paste it into ROOT_PK of
 * fuzz/fuzz_cert.c. The seeds of fuzz_apdu, fuzz_pair_open, fuzz_pair_answer, fuzz_sealed and
 * fuzz_keycard do not depend on it and come out identical each run. The shared constants come from
 * fuzz_common.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/escrow.h"
#include "keyhole/file.h"
#include "keyhole/hpke.h"
#include "keyhole/keycard.h"
#include "keyhole/keyseq.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"
#include "keyhole/scramble.h"
#include "keyhole/shamir.h"
#include "keyhole/usage.h"

#include "fuzz_common.h"

/* ---- shared with the harnesses (keep equal) ---- */
#define FZ_PAIR_NOW 1000u
static const uint8_t fz_body1[] = {0x80, 0x10, 0x00, 0x00}; /* fuzz_sealed: the command sealed in setup */
static const uint8_t fz_module_root[KH_ROOT_KEY_LEN] = {
	0x6b, 0x68, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x72, 0x6f, 0x6f, 0x74, 0x2d, 0x6b, 0x65, 0x79,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
};
#define FZ_MODULE_NOW 1800000000u
/* ---- end of shared constants ---- */

static const char card_ikm[] = "keyhole fuzz card ikm v1, public test key"; /* the card the CAM seed pairs with */
#define CAM_UA 0x00005678u
#define CARD_UA 0x00001234u
#define CARD2_UA 0x00004321u
#define PEER_CARD_UA 0x00009abcu
#define DEC_UA 0x00009abdu
#define DEC_CAM_UA 0x00005679u /* the CAM the decoder module's seed pairs with */
#define BUYER_UA 0x0000b001u
#define ESCROW_UA 0xfe000020u

static const char *outdir;

static void die(const char *what, kh_err r)
{
	fprintf(stderr, "gen_corpus: %s: %s (%d)\n", what, kh_strerror(r), r);
	exit(1);
}

static void check(const char *what, kh_err r)
{
	if (r != KH_OK)
		die(what, r);
}

static void put(const char *harness, const char *name, const uint8_t *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", outdir, harness);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof path, "%s/%s/%s", outdir, harness, name);
	if ((f = fopen(path, "wb")) == NULL || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* put() of a copy with one byte XORed (negative index: from the end). */
static void put_flip(const char *harness, const char *name, const uint8_t *p, size_t n, long at, uint8_t x)
{
	uint8_t buf[16384];
	size_t i = at < 0 ? n - (size_t)(-at) : (size_t)at;

	if (n > sizeof buf || i >= n)
		die("put_flip", KH_ERR_INVAL);
	memcpy(buf, p, n);
	buf[i] ^= x;
	put(harness, name, buf, n);
}

/* put() of p followed by one extra byte. */
static void put_plus(const char *harness, const char *name, const uint8_t *p, size_t n, uint8_t extra)
{
	uint8_t buf[16384];

	if (n + 1 > sizeof buf)
		die("put_plus", KH_ERR_INVAL);
	memcpy(buf, p, n);
	buf[n] = extra;
	put(harness, name, buf, n + 1);
}

static uint8_t *slurp(const char *path, size_t *n)
{
	static uint8_t buf[8192];
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		perror(path);
		exit(1);
	}
	*n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	return buf;
}

/* ---- randomness: the harness's stream and a separate one for what the harness never draws ---- */

static struct kh_rng_det rng_fz, rng_gen;

static void use_fz(void)
{
	kh_rng_set(kh_rng_det_fn, &rng_fz);
}

static void use_gen(void)
{
	kh_rng_set(kh_rng_det_fn, &rng_gen);
}

/* ---- fuzz_apdu ---- */

static void gen_apdu(void)
{
	uint8_t buf[KH_APDU_MAX_CMD + 8], data[KH_APDU_MAX_DATA + 1];
	struct kh_wr w;
	size_t i;
	static const struct {
		const char *name;
		size_t lc, le;
	} cases[] = {
		{"case1", 0, 0},       {"case2s", 0, 16},      {"case2s-256", 0, 256}, {"case3s", 5, 0},
		{"case4s", 5, 256},    {"case2e", 0, 65536},   {"case3e", 300, 0},     {"case4e", 300, 1000},
		{"case4e-le16", 260, 16},
		/* The largest body accepted, and one byte more (also lifts libFuzzer's -max_len past 4096). */
		{"case4e-max", KH_APDU_MAX_DATA, 65536}, {"case3e-too-large", KH_APDU_MAX_DATA + 1, 0},
	};

	for (i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		kh_wr_init(&w, buf, sizeof buf);
		check("apdu build", kh_apdu_build(&w, KH_CLA, KH_INS_ECHO, 0, 0, data, cases[i].lc, cases[i].le));
		put("fuzz_apdu", cases[i].name, buf, w.len);
	}
	/* Near-valid: an Lc that disagrees with the body, short and extended, and a lone 00. */
	{
		static const uint8_t bad1[] = {0x80, 0x20, 0x00, 0x00, 0x04, 0x01, 0x02, 0x03};
		static const uint8_t bad2[] = {0x80, 0x20, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01};
		static const uint8_t bad3[] = {0x80, 0x20, 0x00, 0x00, 0x00, 0x00};
		static const uint8_t bad4[] = {0x80, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02};
		put("fuzz_apdu", "bad-short-lc", bad1, sizeof bad1);
		put("fuzz_apdu", "bad-ext-lc", bad2, sizeof bad2);
		put("fuzz_apdu", "bad-six", bad3, sizeof bad3);
		put("fuzz_apdu", "bad-ext-lc0", bad4, sizeof bad4);
	}
}

/* ---- fuzz_tlv ---- */

static void gen_tlv(const uint8_t root_pk[static 32])
{
	uint8_t buf[512], k[32];
	struct kh_wr w;

	memset(k, 0xa5, sizeof k);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, KH_ROLE_CARD);
	kh_tlv_put_u32(&w, 2, CARD_UA);
	kh_tlv_put(&w, 3, root_pk, 32);
	kh_tlv_put(&w, 4, k, 32);
	check("tlv", kh_tlv_put(&w, 5, k, 32));
	put("fuzz_tlv", "perso-init", buf, w.len);
	put("fuzz_tlv", "perso-init-cut", buf, w.len - 3);
	put_plus("fuzz_tlv", "perso-init-trailing", buf, w.len, 0x07);

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, KH_ROLE_CAM);
	kh_tlv_put_u32(&w, 2, CAM_UA);
	kh_tlv_put_u8(&w, 3, 2);
	kh_tlv_put_u64(&w, 4, 0x0102030405060708u);
	kh_tlv_put(&w, 9, NULL, 0);
	check("tlv", kh_tlv_put_u8(&w, 5, 3));
	put("fuzz_tlv", "get-info", buf, w.len);
	put_flip("fuzz_tlv", "get-info-biglen", buf, w.len, 2, 0x40);
}

/* ---- fuzz_pair_open ---- */

static void gen_pair_open(void)
{
	uint8_t sk[32], pk[32], id[KH_PAIR_ID_MAX], buf[KH_PAIR_OPEN_MAX];
	struct kh_pair_hs hs;
	struct kh_wr w;

	check("derive", kh_hpke_derive_keypair((const uint8_t *)fz_resp_ikm, sizeof fz_resp_ikm - 1, sk, pk));
	memset(id, 'I', sizeof id);
	use_gen();

	kh_wr_init(&w, buf, sizeof buf);
	check("open", kh_pair_open_make(&hs, pk, fz_pair_id, sizeof fz_pair_id, &w));
	put("fuzz_pair_open", "open-id8", buf, w.len);
	put_flip("fuzz_pair_open", "open-badtag", buf, w.len, -1, 0x01);
	put_flip("fuzz_pair_open", "open-badenc", buf, w.len, 2 + sizeof fz_pair_id, 0x80);
	put_flip("fuzz_pair_open", "open-badver", buf, w.len, 0, 0x03);
	put_flip("fuzz_pair_open", "open-badidlen", buf, w.len, 1, 0x20);
	put_plus("fuzz_pair_open", "open-trailing", buf, w.len, 0);
	put("fuzz_pair_open", "open-cut", buf, w.len - 1);

	kh_wr_init(&w, buf, sizeof buf);
	check("open", kh_pair_open_make(&hs, pk, NULL, 0, &w));
	put("fuzz_pair_open", "open-id0", buf, w.len);

	kh_wr_init(&w, buf, sizeof buf);
	check("open", kh_pair_open_make(&hs, pk, id, sizeof id, &w));
	put("fuzz_pair_open", "open-id32", buf, w.len);
	kh_wipe(sk, sizeof sk);
}

/* ---- fuzz_pair_answer and fuzz_sealed: the harnesses' common setup ---- */

struct pair_setup {
	uint8_t sk[32], pk[32];
	struct kh_pair_hs hs;
	uint8_t answer[KH_PAIR_ANSWER_LEN];
	struct kh_chan r, i; /* responder and initiator, just opened */
};

static void pair_setup(struct pair_setup *s)
{
	uint8_t open[KH_PAIR_OPEN_MAX];
	struct kh_wr w, wa;

	kh_rng_det_init(&rng_fz, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	use_fz();
	memset(s, 0, sizeof *s);
	check("derive", kh_hpke_derive_keypair((const uint8_t *)fz_resp_ikm, sizeof fz_resp_ikm - 1, s->sk, s->pk));
	kh_wr_init(&w, open, sizeof open);
	check("open make", kh_pair_open_make(&s->hs, s->pk, fz_pair_id, sizeof fz_pair_id, &w));
	kh_wr_init(&wa, s->answer, sizeof s->answer);
	check("open answer", kh_pair_open_answer(s->sk, open, w.len, FZ_PAIR_NOW, &s->r, &wa));
	if (wa.len != KH_PAIR_ANSWER_LEN)
		die("answer length", KH_ERR_INTERNAL);
	{
		struct kh_pair_hs hs = s->hs;
		check("finish", kh_pair_finish(&hs, s->answer, sizeof s->answer, FZ_PAIR_NOW, &s->i));
	}
	use_gen();
}

static void gen_pair_answer(void)
{
	struct pair_setup s;

	pair_setup(&s);
	put("fuzz_pair_answer", "answer", s.answer, sizeof s.answer);
	put_flip("fuzz_pair_answer", "answer-badtag", s.answer, sizeof s.answer, -1, 0x01);
	put_flip("fuzz_pair_answer", "answer-badA", s.answer, sizeof s.answer, 1, 0x01);
	put_flip("fuzz_pair_answer", "answer-badver", s.answer, sizeof s.answer, 0, 0x02);
	put_plus("fuzz_pair_answer", "answer-trailing", s.answer, sizeof s.answer, 0);
	put("fuzz_pair_answer", "answer-cut", s.answer, sizeof s.answer - 1);
}

static void gen_sealed(void)
{
	static const uint8_t body2[] = {0x80, 0x20, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};
	static const uint8_t rbody[] = {0x01, 0x00, 0x01, 0x01, 0x90, 0x00};
	uint8_t cmd1[64], cmd3[64], resp1[64], body[64];
	struct pair_setup s;
	struct kh_chan i, r;
	struct kh_wr w;
	size_t blen;

	pair_setup(&s);
	/* The harness's fixed state: the initiator has sealed fz_body1 (counter 1). */
	kh_wr_init(&w, cmd1, sizeof cmd1);
	check("seal cmd", kh_chan_seal_cmd(&s.i, fz_body1, sizeof fz_body1, &w));
	put("fuzz_sealed", "cmd1", cmd1, w.len);
	put_flip("fuzz_sealed", "cmd1-badtag", cmd1, w.len, -1, 0x01);
	put_flip("fuzz_sealed", "cmd1-badctr", cmd1, w.len, 4, 0x02);
	put_flip("fuzz_sealed", "cmd1-badver", cmd1, w.len, 0, 0x02);
	put("fuzz_sealed", "cmd1-cut", cmd1, w.len - 1);

	/* The answer to it. */
	r = s.r;
	check("open cmd", kh_chan_open_cmd(&r, cmd1, w.len, body, sizeof body, &blen));
	kh_wr_init(&w, resp1, sizeof resp1);
	check("seal resp", kh_chan_seal_resp(&r, rbody, sizeof rbody, &w));
	put("fuzz_sealed", "resp1", resp1, w.len);
	put_flip("fuzz_sealed", "resp1-badtag", resp1, w.len, -2, 0x10);

	/* Counter 3 (a gap is allowed), longer body; and an empty body. */
	i = s.i;
	i.sent = 2;
	kh_wr_init(&w, cmd3, sizeof cmd3);
	check("seal cmd3", kh_chan_seal_cmd(&i, body2, sizeof body2, &w));
	put("fuzz_sealed", "cmd3-echo", cmd3, w.len);
	i = s.i;
	kh_wr_init(&w, cmd3, sizeof cmd3);
	check("seal empty", kh_chan_seal_cmd(&i, NULL, 0, &w));
	put("fuzz_sealed", "cmd1-empty", cmd3, w.len);
	kh_chan_wipe(&i);
	kh_chan_wipe(&r);
}

/* ---- fuzz_module: APDU sequences as u16-length-prefixed chunks ---- */

struct seq {
	uint8_t b[16384];
	size_t n;
};

static struct kh_module *mod;
static _Alignas(16) uint8_t mod_mem[1 << 17];
static uint8_t rsp[KH_APDU_MAX_RESP];
static size_t rsp_len;

/* The last sealed state a module stored (fuzz_state's seeds are their plaintexts). */
static uint8_t last_blob[KH_MODULE_BLOB_MAX];
static size_t last_blob_len;

static kh_err store_ok(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	(void)ctx, (void)counter;
	if (len > sizeof last_blob)
		return KH_ERR_TOO_LARGE;
	memcpy(last_blob, blob, len);
	last_blob_len = len;
	return KH_OK;
}

static uint64_t fixed_now(void *ctx)
{
	(void)ctx;
	return FZ_MODULE_NOW;
}

/* What the harness does before its first command. */
static void mod_start(struct seq *s)
{
	static const struct kh_module_env env = {store_ok, fixed_now, NULL};

	if (kh_module_size() > sizeof mod_mem)
		die("module size", KH_ERR_BUF);
	kh_rng_det_init(&rng_fz, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	use_fz();
	check("module init", kh_module_init(mod_mem, sizeof mod_mem, fz_module_root, &env, &mod));
	s->n = 0;
}

/* Send one command (with the harness's stream), record it, expect a status word. */
static void mod_cmd(struct seq *s, const uint8_t *cmd, size_t len, uint16_t want_sw)
{
	uint16_t sw;

	if (s->n + 2 + len > sizeof s->b || len > 0xffff)
		die("seq full", KH_ERR_BUF);
	s->b[s->n] = (uint8_t)(len >> 8);
	s->b[s->n + 1] = (uint8_t)len;
	memcpy(s->b + s->n + 2, cmd, len);
	s->n += 2 + len;
	use_fz();
	rsp_len = kh_module_process(mod, cmd, len, rsp, sizeof rsp);
	use_gen();
	if (rsp_len < 2)
		die("module answer", KH_ERR_INTERNAL);
	sw = (uint16_t)(rsp[rsp_len - 2] << 8 | rsp[rsp_len - 1]);
	if (sw != want_sw) {
		fprintf(stderr, "gen_corpus: command INS %02X answered %04X, wanted %04X\n", len > 1 ? cmd[1] : 0,
			sw, want_sw);
		exit(1);
	}
	rsp_len -= 2;
}

static void mod_apdu(struct seq *s, uint8_t ins, uint8_t p1, const uint8_t *data, size_t lc, size_t le,
		     uint16_t want_sw)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;

	kh_wr_init(&w, cmd, sizeof cmd);
	check("build", kh_apdu_build(&w, KH_CLA, ins, p1, 0, data, lc, le));
	mod_cmd(s, cmd, w.len, want_sw);
}

/* The 32-byte value of tag in a TLV list. */
static void tlv_get32(const uint8_t *p, size_t n, uint8_t tag, uint8_t out[static 32])
{
	struct kh_rd rd;
	struct kh_tlv t;

	kh_rd_init(&rd, p, n);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == tag && kh_tlv_fixed(&t, out, 32) == KH_OK)
			return;
	die("tlv_get32", KH_ERR_FORMAT);
}

/* PERSO INIT and PERSO CERTS, the certificates issued (with the generator's stream) in between. */
static void mod_personalise(struct seq *s, struct kh_authority *a, enum kh_role role, uint32_t ua)
{
	uint8_t buf[KH_APDU_MAX_DATA], kp[32], ku[32], root[32], sign_pk[32], pair_pk[32];
	uint8_t sign_der[KH_CERT_MAX], pair_der[KH_CERT_MAX];
	size_t sign_len, pair_len;
	struct kh_wr w;

	kh_authority_root_pk(a, root);
	check("card keys", kh_authority_card_keys(a, ua, kp, ku));
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, (uint8_t)role);
	kh_tlv_put_u32(&w, 2, ua);
	kh_tlv_put(&w, 3, root, 32);
	kh_tlv_put(&w, 4, kp, 32);
	check("perso tlv", kh_tlv_put(&w, 5, ku, 32));
	mod_apdu(s, KH_INS_PERSO_INIT, 0, buf, w.len, 0, KH_SW_OK);
	tlv_get32(rsp, rsp_len, 1, sign_pk);
	tlv_get32(rsp, rsp_len, 2, pair_pk);
	check("issue sign", kh_authority_issue(a, role, ua, KH_CERT_KEY_ED25519, sign_pk, "sign", sign_der,
					       sizeof sign_der, &sign_len));
	check("issue pair", kh_authority_issue(a, role, ua, KH_CERT_KEY_X25519, pair_pk, "pair", pair_der,
					       sizeof pair_der, &pair_len));
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, 1, sign_der, sign_len);
	check("certs tlv", kh_tlv_put(&w, 2, pair_der, pair_len));
	mod_apdu(s, KH_INS_PERSO_CERTS, 0, buf, w.len, 0, KH_SW_OK);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
}

/* As a decoder toward this module: GET CERT, PAIR OPEN, then sealed GET INFO and ECHO. */
static void mod_pair_and_talk(struct seq *s, const uint8_t root[static 32], enum kh_role role)
{
	static const uint8_t get_info[] = {0x80, 0x10, 0x00, 0x00};
	static const uint8_t echo[] = {0x80, 0x20, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0x00};
	uint8_t buf[KH_APDU_MAX_DATA], body[KH_APDU_MAX_RESP];
	struct kh_cert_info ci;
	struct kh_pair_hs hs;
	struct kh_chan ch;
	struct kh_wr w;
	size_t blen;

	mod_apdu(s, KH_INS_GET_CERT, 0, NULL, 0, 256, KH_SW_OK);
	check("module cert", kh_cert_check(rsp, rsp_len, root, role, KH_CERT_KEY_X25519, FZ_MODULE_NOW, &ci));
	kh_wr_init(&w, buf, sizeof buf);
	check("open make", kh_pair_open_make(&hs, ci.pub, fz_pair_id, sizeof fz_pair_id, &w));
	mod_apdu(s, KH_INS_PAIR_OPEN, 0, buf, w.len, 0, KH_SW_OK);
	memset(&ch, 0, sizeof ch);
	check("finish", kh_pair_finish(&hs, rsp, rsp_len, FZ_MODULE_NOW, &ch));

	kh_wr_init(&w, buf, sizeof buf);
	check("seal", kh_chan_seal_cmd(&ch, get_info, sizeof get_info, &w));
	mod_apdu(s, KH_INS_SEALED, 0, buf, w.len, 0, KH_SW_OK);
	check("open resp", kh_chan_open_resp(&ch, rsp, rsp_len, body, sizeof body, &blen));

	kh_wr_init(&w, buf, sizeof buf);
	check("seal", kh_chan_seal_cmd(&ch, echo, sizeof echo, &w));
	mod_apdu(s, KH_INS_SEALED, 0, buf, w.len, 0, KH_SW_OK);
	check("open resp", kh_chan_open_resp(&ch, rsp, rsp_len, body, sizeof body, &blen));
	/* The same sealed command again: a replay, refused. */
	mod_apdu(s, KH_INS_SEALED, 0, buf, w.len, 0, kh_err_to_sw(KH_ERR_CHAN_REPLAY));
	kh_chan_wipe(&ch);
}

static void gen_module(struct kh_authority *a, const uint8_t root[static 32])
{
	static const uint8_t get_info[] = {0x80, 0x10, 0x00, 0x00};
	static const uint8_t junk[][8] = {
		{0x00, 0xa4, 0x04, 0x00, 0x00},             /* foreign class */
		{0x80, 0x99, 0x00, 0x00, 0x00},             /* unknown instruction */
		{0x80, 0x10, 0x00, 0x00, 0x02, 0x01, 0x02}, /* GET INFO with data */
		{0x80, 0x20, 0x00, 0x00, 0x01, 0x01},       /* ECHO outside the channel */
		{0x80, 0xc2, 0x00, 0x00, 0x01, 0x01},       /* SEALED before any pairing */
	};
	static const uint16_t junk_sw[] = {0x6E00, 0x6D00, 0x6700, 0x6D00, 0x6985};
	uint8_t card_sk[32], card_pk[32], der[KH_CERT_MAX], buf[KH_APDU_MAX_DATA], in[KH_APDU_MAX_DATA];
	uint8_t dresp[KH_APDU_MAX_RESP];
	struct kh_chan card_ch;
	struct kh_apdu ap;
	struct kh_wr w;
	size_t derlen, n, blen;
	struct seq s;
	size_t i;

	/* Blank module: public facts, then junk. */
	mod_start(&s);
	mod_cmd(&s, get_info, sizeof get_info, KH_SW_OK);
	put("fuzz_module", "blank-get-info", s.b, s.n);
	for (i = 0; i < sizeof junk / sizeof junk[0]; i++)
		mod_cmd(&s, junk[i], junk[i][4] ? 5u + junk[i][4] : 5u, junk_sw[i]);
	put("fuzz_module", "blank-junk", s.b, s.n);

	/* A card: personalised, then paired with and spoken to through the channel. */
	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_CARD, CARD_UA);
	mod_cmd(&s, get_info, sizeof get_info, KH_SW_OK);
	mod_apdu(&s, KH_INS_PERSO_INIT, 0, NULL, 0, 0, kh_err_to_sw(KH_ERR_PERSONALISED));
	mod_apdu(&s, KH_INS_GET_CERT, 1, NULL, 0, 0, KH_SW_OK);
	mod_pair_and_talk(&s, root, KH_ROLE_CARD);
	put("fuzz_module", "card-full", s.b, s.n);

	/* A CAM: personalised; pairs with a card (relayed), seals for it; and answers a decoder. */
	check("card key", kh_hpke_derive_keypair((const uint8_t *)card_ikm, sizeof card_ikm - 1, card_sk, card_pk));
	check("card cert", kh_authority_issue(a, KH_ROLE_CARD, PEER_CARD_UA, KH_CERT_KEY_X25519, card_pk, "pair", der,
					      sizeof der, &derlen));
	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_CAM, CAM_UA);
	mod_apdu(&s, KH_INS_CARD_START, 0, NULL, 0, 0, KH_SW_RELAY);
	/* The card's answer to GET CERT: its pairing certificate. */
	memcpy(buf, der, derlen);
	buf[derlen] = 0x90;
	buf[derlen + 1] = 0x00;
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, derlen + 2, 0, KH_SW_RELAY);
	/* PAIR OPEN for the card: answer it as the card would. */
	check("relayed open", kh_apdu_parse(rsp, rsp_len, &ap));
	memset(&card_ch, 0, sizeof card_ch);
	kh_wr_init(&w, buf, sizeof buf);
	check("card answer", kh_pair_open_answer(card_sk, ap.data, ap.lc, FZ_MODULE_NOW, &card_ch, &w));
	kh_wr_u16(&w, 0x9000);
	n = w.len;
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, n, 0, KH_SW_RELAY);
	/* CAM AUTH, sealed: the card opens it and answers 9000 (the generator does not check the
	 * CAM's signature; the module tests do). */
	check("relayed cam auth", kh_apdu_parse(rsp, rsp_len, &ap));
	check("card open auth", kh_chan_open_cmd(&card_ch, ap.data, ap.lc, in, sizeof in, &blen));
	kh_wr_init(&w, buf, sizeof buf);
	check("card seal auth", kh_chan_seal_resp(&card_ch, (const uint8_t[]){0x90, 0x00}, 2, &w));
	kh_wr_u16(&w, 0x9000);
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, w.len, 0, KH_SW_OK);
	if (rsp_len != 4 || kh_get_be32(rsp) != PEER_CARD_UA)
		die("paired card UA", KH_ERR_INTERNAL);
	/* A command for the card, sealed by the CAM; the card's sealed answer back. */
	mod_apdu(&s, KH_INS_CARD_SEND, 0, get_info, sizeof get_info, 0, KH_SW_RELAY);
	check("relayed sealed", kh_apdu_parse(rsp, rsp_len, &ap));
	check("card open", kh_chan_open_cmd(&card_ch, ap.data, ap.lc, in, sizeof in, &blen));
	kh_wr_init(&w, dresp, sizeof dresp);
	kh_tlv_put_u8(&w, 1, KH_ROLE_CARD);
	kh_tlv_put_u32(&w, 2, PEER_CARD_UA);
	check("card resp", kh_wr_u16(&w, 0x9000));
	kh_wr_init(&w, buf, sizeof buf);
	check("card seal", kh_chan_seal_resp(&card_ch, dresp, 11 + 2, &w));
	kh_wr_u16(&w, 0x9000);
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, w.len, 0, KH_SW_OK);
	if (rsp_len != 13 || memcmp(rsp, dresp, 13) != 0)
		die("relayed reply", KH_ERR_INTERNAL);
	mod_cmd(&s, get_info, sizeof get_info, KH_SW_OK);
	put("fuzz_module", "cam-card", s.b, s.n);
	/* The CAM toward its decoder, in the same session. */
	mod_pair_and_talk(&s, root, KH_ROLE_CAM);
	put("fuzz_module", "cam-card-decoder", s.b, s.n);

	/* A second card, sent a PAIR OPEN that is not one (refused), then asked for its certificate. */
	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_CARD, CARD2_UA);
	mod_apdu(&s, KH_INS_PAIR_OPEN, 0, fz_pair_id, sizeof fz_pair_id, 0, kh_err_to_sw(KH_ERR_VERSION));
	mod_apdu(&s, KH_INS_GET_CERT, 0, NULL, 0, 256, KH_SW_OK);
	put("fuzz_module", "card-bad-open", s.b, s.n);
	kh_module_wipe(mod);
	kh_wipe(card_sk, sizeof card_sk);
	kh_chan_wipe(&card_ch);
}

/*
 * A buyer device (fuzz_module) in the split-key escrow (docs/protocols/escrow.md): the generator
 * plays the seller, who splits K (T = 3) among the device (its share granted: sealed to the
 * device's pairing key for the content's header) and two escrows (c_i = RSA-OAEP(listing key i,
 * share record i)), and the escrows, whose private operation on the blinded c_i it does with
 * OpenSSL. The device buys both shares (BUY START, BUY FINISH: each a slot holding a share); BUY
 * COMBINE is refused with too few shares and with a flipped grant, then delivers; the licence
 * opens the content. The second seed combines a share of another split of K (more escrows):
 * every purchase fails (shares). The listing keys are fresh each run; the module's own draws
 * come from the harness's stream, so the escrows' answers open in the harness too.
 */
struct buyer_split {
	EVP_PKEY *key[3];
	uint8_t esk[32];
	uint8_t k[KH_SHAMIR_LEN];
	uint8_t header[KH_ESCROW_HEADER_MAX];
	size_t hlen;
	struct kh_escrow_header h;
	uint8_t listing[3][KH_ESCROW_LISTING_MAX];
	size_t llen[3];
	uint8_t c[3][KH_RSA_MAX_LEN];
	size_t clen[3];
	uint8_t grant[KH_SHAMIR_SEALED_LEN];
};

/* The DER SubjectPublicKeyInfo of an RSA key into out (KH_RSA_SPKI_MAX bytes): its length. */
static size_t rsa_spki(EVP_PKEY *k, uint8_t *out)
{
	unsigned char *p = out;
	int len = i2d_PUBKEY(k, NULL);

	if (len <= 0 || (size_t)len > KH_RSA_SPKI_MAX || i2d_PUBKEY(k, &p) != len)
		die("rsa spki", KH_ERR_CRYPTO);
	return (size_t)len;
}

/* Split b->k (T = t of n) into the device's share, sealed to pair_pk, and n - 1 listings' shares
 * at escrows ESCROW_UA + i, on keys b->key[i]. */
static void buyer_split_make(struct buyer_split *b, unsigned t, unsigned n, const uint8_t pair_pk[static 32])
{
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N];
	struct kh_shamir_rec rec;
	struct kh_escrow_listing l;
	uint8_t spki[KH_RSA_SPKI_MAX], m[KH_SHAMIR_REC_LEN];
	struct kh_wr w;

	check("split", kh_shamir_split(b->k, t, n, sh));
	for (unsigned i = 0; i + 1 < n; i++) {
		memset(&l, 0, sizeof l);
		check("listing id", kh_random(l.id, sizeof l.id));
		l.escrow = ESCROW_UA + i;
		l.seller = 7;
		l.price = 250;
		memcpy(l.currency, "EUR", 4);
		l.deadline = 3600;
		l.created = FZ_MODULE_NOW;
		strcpy(l.content, "fuzz-song");
		l.key = spki;
		l.keylen = rsa_spki(b->key[i], spki);
		kh_wr_init(&w, b->listing[i], sizeof b->listing[i]);
		check("listing", kh_escrow_listing_sign(&l, b->esk, &w));
		b->llen[i] = w.len;
		memset(&rec, 0, sizeof rec);
		rec.t = (uint8_t)t;
		rec.n = (uint8_t)n;
		rec.index = (uint8_t)(i + 2);
		rec.s = sh[i + 1];
		memcpy(rec.id, l.id, sizeof rec.id);
		check("share record", kh_shamir_rec_encode(&rec, m));
		check("c", kh_rsa_oaep_encrypt(spki, l.keylen, l.id, sizeof l.id, m, sizeof m, b->c[i], &b->clen[i]));
	}
	memset(&rec, 0, sizeof rec);
	rec.t = (uint8_t)t;
	rec.n = (uint8_t)n;
	rec.index = 1;
	rec.s = sh[0];
	kh_escrow_device_share_id(BUYER_UA, rec.id);
	check("grant", kh_shamir_share_seal(pair_pk, b->h.hash, sizeof b->h.hash, &rec, b->grant));
	kh_wipe(sh, sizeof sh);
	kh_wipe(&rec, sizeof rec);
	kh_wipe(m, sizeof m);
}

/* BUY START and BUY FINISH of b's share i, the escrow's z = c'^d made here: the purchase id. */
static void buyer_buy_share(struct seq *s, const struct buyer_split *b, size_t i, uint8_t pid[static KH_ESCROW_ID_LEN])
{
	uint8_t buf[KH_APDU_MAX_DATA], req[KH_ESCROW_REQUEST_MAX], z[KH_RSA_MAX_LEN], ans[KH_ESCROW_ANSWER_MAX];
	struct kh_escrow_request q;
	struct kh_escrow_answer an;
	struct kh_tlv t[KH_ESCROW_T_MAX + 1];
	EVP_PKEY_CTX *c;
	size_t zlen, reqlen;
	struct kh_wr w;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_ESCROW_T_LISTING, b->listing[i], b->llen[i]);
	kh_tlv_put(&w, KH_ESCROW_T_C, b->c[i], b->clen[i]);
	check("start tlv", kh_tlv_put(&w, KH_ESCROW_T_HEADER_HASH, b->h.hash, sizeof b->h.hash));
	mod_apdu(s, KH_INS_BUY_START, 0, buf, w.len, 0, KH_SW_OK);
	memset(t, 0, sizeof t);
	check("request tlv", kh_tlv_take(rsp, rsp_len, t, KH_ESCROW_T_MAX, 1u << KH_ESCROW_T_REQUEST));
	reqlen = t[KH_ESCROW_T_REQUEST].len;
	memcpy(req, t[KH_ESCROW_T_REQUEST].v, reqlen);
	check("request", kh_escrow_request_parse(req, reqlen, NULL, &q));
	memcpy(pid, q.purchase, KH_ESCROW_ID_LEN);
	zlen = q.nlen;
	if ((c = EVP_PKEY_CTX_new(b->key[i], NULL)) == NULL || EVP_PKEY_decrypt_init(c) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(c, RSA_NO_PADDING) <= 0 || EVP_PKEY_decrypt(c, z, &zlen, q.cprime, q.nlen) <= 0 ||
	    zlen != q.nlen)
		die("escrow z", KH_ERR_CRYPTO);
	EVP_PKEY_CTX_free(c);
	memset(&an, 0, sizeof an);
	memcpy(an.purchase, q.purchase, sizeof an.purchase);
	memcpy(an.listing, q.listing, sizeof an.listing);
	an.escrow = q.escrow;
	check("request hash", kh_sha256(req, reqlen, an.request_hash));
	an.deadline = FZ_MODULE_NOW + 3600;
	an.z = z;
	an.nlen = zlen;
	kh_wr_init(&w, ans, sizeof ans);
	check("answer", kh_escrow_answer_sign(&an, b->esk, &w));
	zlen = w.len;
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_ESCROW_T_LISTING, b->listing[i], b->llen[i]);
	kh_tlv_put(&w, KH_ESCROW_T_C, b->c[i], b->clen[i]);
	kh_tlv_put(&w, KH_ESCROW_T_HEADER, b->header, b->hlen);
	check("finish tlv", kh_tlv_put(&w, KH_ESCROW_T_ANSWER, ans, zlen));
	mod_apdu(s, KH_INS_BUY_FINISH, 0, buf, w.len, 0, KH_SW_OK);
	if (rsp_len != 3 + KH_ESCROW_SLOT_LEN || rsp[0] != KH_ESCROW_T_SLOT || rsp[3] != KH_ESCROW_SLOT_SHARE)
		die("share slot", KH_ERR_INTERNAL);
}

/* BUY COMBINE: header, grant (glen bytes), the n purchases in pids. */
static void buyer_combine(struct seq *s, const struct buyer_split *b, const uint8_t *grant, size_t glen,
			  const uint8_t *pids, size_t n, uint16_t want_sw)
{
	uint8_t buf[KH_APDU_MAX_DATA];
	struct kh_wr w;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_ESCROW_T_HEADER, b->header, b->hlen);
	kh_tlv_put(&w, KH_ESCROW_T_GRANT, grant, glen);
	check("combine tlv", kh_tlv_put(&w, KH_ESCROW_T_PURCHASES, pids, n * KH_ESCROW_ID_LEN));
	mod_apdu(s, KH_INS_BUY_COMBINE, 0, buf, w.len, 0, want_sw);
}

static void gen_module_buyer(struct kh_authority *a, const uint8_t root[static 32])
{
	static const uint8_t plain[100] = "keyhole fuzz buyer content: two chunks of plaintext under the split key";
	uint8_t pair_pk[32], epk[32], ck[KH_KEY_LEN], buf[KH_APDU_MAX_DATA], pids[3 * KH_ESCROW_ID_LEN];
	uint8_t chunk[2][64 + KH_TAG_LEN], licence[KH_ESCROW_LICENCE_LEN], flipped[KH_SHAMIR_SEALED_LEN];
	struct buyer_split *b = calloc(1, sizeof *b), *wide = calloc(1, sizeof *wide);
	struct kh_cert_info ci;
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_wr w;
	struct seq s;
	size_t i, n = 0;

	if (!b || !wide)
		die("buyer", KH_ERR_NOMEM);
	check("escrow key", kh_ed25519_keygen(b->esk, epk));
	for (i = 0; i < 3; i++)
		if ((b->key[i] = EVP_RSA_gen(2048)) == NULL)
			die("listing key", KH_ERR_CRYPTO);
	check("K", kh_shamir_random_secret(b->k));
	kh_wr_init(&w, b->header, sizeof b->header);
	check("header", kh_escrow_header_make("fuzz-song", 64, sizeof plain, b->k, &w));
	b->hlen = w.len;
	check("header parse", kh_escrow_header_parse(b->header, b->hlen, &b->h));
	check("chunk key", kh_escrow_chunk_key(b->k, ck));
	for (i = 0; i < 2; i++)
		check("chunk", kh_escrow_chunk_seal(ck, &b->h, i, plain + 64 * i, kh_escrow_chunk_len(&b->h, i), chunk[i]));
	kh_wipe(ck, sizeof ck);

	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_BUYER, BUYER_UA);
	mod_apdu(&s, KH_INS_GET_CERT, 0, NULL, 0, 256, KH_SW_OK);
	check("buyer cert", kh_cert_check(rsp, rsp_len, root, KH_ROLE_BUYER, KH_CERT_KEY_X25519, FZ_MODULE_NOW, &ci));
	memcpy(pair_pk, ci.pub, sizeof pair_pk);
	*wide = *b;
	buyer_split_make(b, 3, 3, pair_pk);
	buyer_buy_share(&s, b, 0, pids);
	buyer_buy_share(&s, b, 1, pids + KH_ESCROW_ID_LEN);
	mod_apdu(&s, KH_INS_BUY_LIST, 0, NULL, 0, 0, KH_SW_OK);
	buyer_combine(&s, b, b->grant, sizeof b->grant, pids, 1, kh_err_to_sw(KH_ERR_SHARES));
	memcpy(flipped, b->grant, sizeof flipped);
	flipped[40] ^= 0x01;
	buyer_combine(&s, b, flipped, sizeof flipped, pids, 2, kh_err_to_sw(KH_ERR_AUTH));
	buyer_combine(&s, b, b->grant, sizeof b->grant, pids, 2, KH_SW_OK);
	kh_rd_init(&rd, rsp, rsp_len);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == KH_ESCROW_T_LICENCE && t.len == sizeof licence) {
			memcpy(licence, t.v, sizeof licence);
			n++;
		}
	if (n != 1)
		die("licence", KH_ERR_INTERNAL);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_ESCROW_T_LICENCE, licence, sizeof licence);
	check("open tlv", kh_tlv_put(&w, KH_ESCROW_T_HEADER, b->header, b->hlen));
	mod_apdu(&s, KH_INS_CONTENT_OPEN, 0, buf, w.len, 0, KH_SW_OK);
	for (i = 0; i < 2; i++) {
		size_t cl = kh_escrow_chunk_len(&b->h, i);
		kh_put_be32(buf, (uint32_t)i);
		memcpy(buf + 4, chunk[i], cl + KH_TAG_LEN);
		mod_apdu(&s, KH_INS_CONTENT_CHUNK, 0, buf, 4 + cl + KH_TAG_LEN, 0, KH_SW_OK);
		if (rsp_len != cl || memcmp(rsp, plain + 64 * i, cl) != 0)
			die("content", KH_ERR_INTERNAL);
	}
	mod_apdu(&s, KH_INS_CONTENT_CLOSE, 0, NULL, 0, 0, KH_SW_OK);
	kh_wr_init(&w, buf, sizeof buf);
	check("notice tlv", kh_tlv_put(&w, KH_ESCROW_T_PURCHASE, pids, KH_ESCROW_ID_LEN));
	mod_apdu(&s, KH_INS_BUY_NOTICE, 0, buf, w.len, 0, KH_SW_OK);
	put("fuzz_module", "buyer-split-combine", s.b, s.n);

	/* Another split of the same K, 3 of 4: its share and the first split's do not fit. */
	buyer_split_make(wide, 3, 4, pair_pk);
	buyer_buy_share(&s, b, 0, pids);
	buyer_buy_share(&s, wide, 2, pids + KH_ESCROW_ID_LEN);
	buyer_combine(&s, b, b->grant, sizeof b->grant, pids, 2, KH_SW_OK);
	/* the first of them, failed already: cancelled, its notice again */
	kh_wr_init(&w, buf, sizeof buf);
	check("cancel tlv", kh_tlv_put(&w, KH_ESCROW_T_PURCHASE, pids, KH_ESCROW_ID_LEN));
	mod_apdu(&s, KH_INS_BUY_CANCEL, 0, buf, w.len, 0, KH_SW_OK);
	put("fuzz_module", "buyer-split-mismatch", s.b, s.n);

	kh_module_wipe(mod);
	for (i = 0; i < 3; i++)
		EVP_PKEY_free(b->key[i]);
	kh_wipe(b, sizeof *b);
	kh_wipe(wide, sizeof *wide);
	free(b);
	free(wide);
}

/* 188-byte TS packets i..i+k-1 of a made-up PID: payload only, adaptation field and payload,
 * adaptation field only, in turn; payload bytes from the index. */
static void ts_packets(uint8_t *p, size_t k, unsigned i0)
{
	for (size_t i = 0; i < k; i++, p += 188) {
		unsigned j = i0 + (unsigned)i;
		memset(p, 0, 188);
		p[0] = 0x47;
		p[1] = 0x01;
		p[2] = 0x00;
		p[3] = (uint8_t)((j % 3 == 0 ? 0x10 : j % 3 == 1 ? 0x30 : 0x20) | (j & 15));
		if (j % 3)
			p[4] = j % 3 == 1 ? 7 : 183;
		for (size_t b = j % 3 == 0 ? 4 : 5u + p[4]; b < 188; b++)
			p[b] = (uint8_t)(b * 7 + j);
	}
}

/*
 * A decoder module (fuzz_module): personalised, it pairs with a CAM in ladder mode (CARD START,
 * P1 = 1), the generator answering as the CAM: its certificate, its PAIR OPEN answer, and its word
 * on CAM AUTH, after reading the ladder key the decoder module gave. Then control words sealed
 * under that key are loaded and packets descrambled; a pair with a flipped byte, clear control
 * words and a cut packet are refused. The second seed goes on: CARD START again ends the
 * channel, and the descrambler is empty.
 */
static void gen_module_decoder(struct kh_authority *a)
{
	static const char cam_ikm[] = "keyhole fuzz cam ikm v1, public test key";
	uint8_t cam_sk[32], cam_pk[32], der[KH_CERT_MAX], buf[KH_APDU_MAX_DATA], in[KH_APDU_MAX_DATA];
	uint8_t ks[32], pk[4 * 188], tlv[128], bad[128];
	struct kh_cw_answer cw;
	struct kh_chan cam_ch;
	struct kh_apdu ap, cauth;
	struct kh_scr *scr;
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_wr w;
	size_t derlen, blen, tl;
	struct seq s;
	int got = 0;

	check("cam key", kh_hpke_derive_keypair((const uint8_t *)cam_ikm, sizeof cam_ikm - 1, cam_sk, cam_pk));
	check("cam cert", kh_authority_issue(a, KH_ROLE_CAM, DEC_CAM_UA, KH_CERT_KEY_X25519, cam_pk, "pair", der,
					     sizeof der, &derlen));
	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_DECODER, DEC_UA);
	mod_apdu(&s, KH_INS_CARD_START, 1, NULL, 0, 0, KH_SW_RELAY);
	memcpy(buf, der, derlen);
	buf[derlen] = 0x90;
	buf[derlen + 1] = 0x00;
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, derlen + 2, 0, KH_SW_RELAY);
	check("relayed open", kh_apdu_parse(rsp, rsp_len, &ap));
	memset(&cam_ch, 0, sizeof cam_ch);
	kh_wr_init(&w, buf, sizeof buf);
	check("cam answer", kh_pair_open_answer(cam_sk, ap.data, ap.lc, FZ_MODULE_NOW, &cam_ch, &w));
	kh_wr_u16(&w, 0x9000);
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, w.len, 0, KH_SW_RELAY);
	/* CAM AUTH, sealed: the ladder key is its tag 3 (the generator does not check the signature) */
	check("relayed auth", kh_apdu_parse(rsp, rsp_len, &ap));
	check("cam open auth", kh_chan_open_cmd(&cam_ch, ap.data, ap.lc, in, sizeof in, &blen));
	check("auth apdu", kh_apdu_parse(in, blen, &cauth));
	if (cauth.ins != KH_INS_CAM_AUTH)
		die("not CAM AUTH", KH_ERR_FORMAT);
	kh_rd_init(&rd, cauth.data, cauth.lc);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == 3 && kh_tlv_fixed(&t, ks, sizeof ks) == KH_OK)
			got = 1;
	if (!got)
		die("no ladder key", KH_ERR_FORMAT);
	kh_wr_init(&w, buf, sizeof buf);
	check("cam seal auth", kh_chan_seal_resp(&cam_ch, (const uint8_t[]){0x90, 0x00}, 2, &w));
	kh_wr_u16(&w, 0x9000);
	mod_apdu(&s, KH_INS_CARD_RESP, 0, buf, w.len, 0, KH_SW_OK);
	if (rsp_len != 4 || kh_get_be32(rsp) != DEC_CAM_UA)
		die("paired CAM UA", KH_ERR_INTERNAL);

	/* CSA2 control words sealed under the ladder key, loaded; packets scrambled with them */
	memset(&cw, 0, sizeof cw);
	cw.alg = KH_SCR_CSA2;
	cw.cw_len = 8;
	cw.cp = 5;
	memset(cw.even, 0x11, 8);
	memset(cw.odd, 0x22, 8);
	kh_wr_init(&w, tlv, sizeof tlv);
	check("ladder seal", kh_cw_ladder_seal(ks, &cw, &w));
	tl = w.len;
	mod_apdu(&s, KH_INS_LADDER_LOAD, 0, tlv, tl, 0, KH_SW_OK);
	ts_packets(pk, 4, 0);
	check("scr", kh_scr_new(KH_SCR_CSA2, 0, &scr));
	check("scr key", kh_scr_set_key(scr, KH_SCR_EVEN, cw.even, 8));
	check("scr key", kh_scr_set_key(scr, KH_SCR_ODD, cw.odd, 8));
	check("scramble", kh_scr_scramble(scr, pk, 2, KH_SCR_EVEN));
	check("scramble", kh_scr_scramble(scr, pk + 2 * 188, 2, KH_SCR_ODD));
	kh_scr_free(scr);
	mod_apdu(&s, KH_INS_DESCRAMBLE, 0, pk, sizeof pk, 0, KH_SW_OK);
	memcpy(bad, tlv, tl);
	bad[tl - 3] ^= 0x04;
	mod_apdu(&s, KH_INS_LADDER_LOAD, 0, bad, tl, 0, kh_err_to_sw(KH_ERR_LADDER));
	kh_wr_init(&w, bad, sizeof bad);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, cw.alg);
	kh_tlv_put(&w, KH_CW_T_EVEN, cw.even, 8);
	kh_tlv_put(&w, KH_CW_T_ODD, cw.odd, 8);
	check("clear cw", kh_tlv_put_u32(&w, KH_CW_T_CP, cw.cp));
	mod_apdu(&s, KH_INS_LADDER_LOAD, 0, bad, w.len, 0, kh_err_to_sw(KH_ERR_FORMAT));
	mod_apdu(&s, KH_INS_DESCRAMBLE, 0, pk, 100, 0, kh_err_to_sw(KH_ERR_APDU_LEN));
	mod_apdu(&s, KH_INS_DESCRAMBLE, 1, pk, 188, 0, kh_err_to_sw(KH_ERR_APDU_P1P2));
	/* CISSA ones next */
	cw.alg = KH_SCR_CISSA;
	cw.cw_len = 16;
	cw.cp = 6;
	memset(cw.even, 0x33, 16);
	memset(cw.odd, 0x44, 16);
	kh_wr_init(&w, tlv, sizeof tlv);
	check("ladder seal", kh_cw_ladder_seal(ks, &cw, &w));
	tl = w.len;
	mod_apdu(&s, KH_INS_LADDER_LOAD, 0, tlv, tl, 0, KH_SW_OK);
	ts_packets(pk, 4, 4);
	mod_apdu(&s, KH_INS_DESCRAMBLE, 0, pk, sizeof pk, 0, KH_SW_OK);
	put("fuzz_module", "decoder-ladder", s.b, s.n);
	/* a new pairing ends the channel: nothing loaded any more, the old pair no longer opens */
	mod_apdu(&s, KH_INS_CARD_START, 0, NULL, 0, 0, KH_SW_RELAY);
	mod_apdu(&s, KH_INS_DESCRAMBLE, 0, pk, 188, 0, kh_err_to_sw(KH_ERR_LADDER));
	mod_apdu(&s, KH_INS_LADDER_LOAD, 0, tlv, tl, 0, kh_err_to_sw(KH_ERR_LADDER));
	put("fuzz_module", "decoder-ladder-restart", s.b, s.n);
	kh_module_wipe(mod);
	kh_chan_wipe(&cam_ch);
	kh_wipe(cam_sk, sizeof cam_sk);
	kh_wipe(ks, sizeof ks);
	kh_wipe(&cw, sizeof cw);
}

/* ---- fuzz_cert ---- */

/*
 * A certificate signed by the authority's root that the authority itself would never issue:
 * the near-valid seeds that let the fuzzer start past the signature check.
 */
struct forge {
	long version;                   /* X509_VERSION_1 or _3 */
	const char *ou, *ou2, *serial;  /* subject attributes (NULL: left out) */
	int type;                       /* EVP_PKEY_ED25519 or EVP_PKEY_X25519 */
	time_t not_before, not_after;   /* 0: now - 60 s / now + 10 years */
	const char *bc, *ku, *extra;    /* extensions (NULL: left out); extra is "OID=value" */
};

static size_t forge(const char *dir, const struct forge *f, uint8_t *der, size_t cap)
{
	char path[600], oid[64];
	unsigned char *p;
	uint8_t pub[32];
	size_t i;
	X509V3_CTX ctx;
	X509_NAME *nm;
	X509 *x, *rx;
	EVP_PKEY *rk, *pk;
	BIO *bio;
	int n;
	time_t now = time(NULL);

	snprintf(path, sizeof path, "%s/root.key", dir);
	if ((bio = BIO_new_file(path, "r")) == NULL || (rk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL)
		die("root key", KH_ERR_CRYPTO);
	BIO_free(bio);
	snprintf(path, sizeof path, "%s/root.crt", dir);
	if ((bio = BIO_new_file(path, "r")) == NULL || (rx = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL)
		die("root crt", KH_ERR_CRYPTO);
	BIO_free(bio);
	for (i = 0; i < sizeof pub; i++)
		pub[i] = (uint8_t)(0x11 * (i + 1));
	if ((pk = EVP_PKEY_new_raw_public_key(f->type, NULL, pub, 32)) == NULL || (x = X509_new()) == NULL ||
	    (nm = X509_NAME_new()) == NULL)
		die("forge alloc", KH_ERR_NOMEM);
	X509_NAME_add_entry_by_NID(nm, NID_organizationName, MBSTRING_UTF8, (const unsigned char *)"Fuzz Operator", -1, -1, 0);
	if (f->ou)
		X509_NAME_add_entry_by_NID(nm, NID_organizationalUnitName, MBSTRING_UTF8, (const unsigned char *)f->ou, -1, -1, 0);
	if (f->ou2)
		X509_NAME_add_entry_by_NID(nm, NID_organizationalUnitName, MBSTRING_UTF8, (const unsigned char *)f->ou2, -1, -1, 0);
	if (f->serial)
		X509_NAME_add_entry_by_NID(nm, NID_serialNumber, MBSTRING_UTF8, (const unsigned char *)f->serial, -1, -1, 0);
	X509_NAME_add_entry_by_NID(nm, NID_commonName, MBSTRING_UTF8, (const unsigned char *)"forged", -1, -1, 0);
	if (X509_set_version(x, f->version) != 1 || X509_set_subject_name(x, nm) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(rx)) != 1 || X509_set_pubkey(x, pk) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x4242) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), f->not_before ? f->not_before : now - 60) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), f->not_after ? f->not_after : now + 3650L * 86400) == NULL)
		die("forge fields", KH_ERR_CRYPTO);
	X509V3_set_ctx(&ctx, rx, x, NULL, NULL, 0);
	if (f->bc) {
		X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, NID_basic_constraints, f->bc);
		if (e == NULL || X509_add_ext(x, e, -1) != 1)
			die("forge bc", KH_ERR_CRYPTO);
		X509_EXTENSION_free(e);
	}
	if (f->ku) {
		X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, NID_key_usage, f->ku);
		if (e == NULL || X509_add_ext(x, e, -1) != 1)
			die("forge ku", KH_ERR_CRYPTO);
		X509_EXTENSION_free(e);
	}
	if (f->extra) {
		const char *eq = strchr(f->extra, '=');
		X509_EXTENSION *e;
		snprintf(oid, sizeof oid, "%.*s", (int)(eq - f->extra), f->extra);
		if ((e = X509V3_EXT_nconf(NULL, &ctx, oid, eq + 1)) == NULL || X509_add_ext(x, e, -1) != 1)
			die("forge extra", KH_ERR_CRYPTO);
		X509_EXTENSION_free(e);
	}
	if (X509_sign(x, rk, NULL) <= 0 || (n = i2d_X509(x, NULL)) <= 0 || (size_t)n > cap)
		die("forge sign", KH_ERR_CRYPTO);
	p = der;
	i2d_X509(x, &p);
	X509_NAME_free(nm);
	X509_free(x);
	X509_free(rx);
	EVP_PKEY_free(pk);
	EVP_PKEY_free(rk);
	return (size_t)n;
}

static void gen_cert(struct kh_authority *a, const char *dir, const uint8_t root_pk[static 32])
{
	static const struct {
		const char *name;
		struct forge f;
		int ok; /* what kh_cert_check(now = 0) must say */
	} forged[] = {
		{"forged-ca-with-role.der", {X509_VERSION_3, "card", NULL, "00000777", EVP_PKEY_X25519, 0, 0,
					     "critical,CA:TRUE", "critical,keyAgreement,keyCertSign", NULL}, 0},
		{"forged-ku-wrong.der", {X509_VERSION_3, "card", NULL, "00000777", EVP_PKEY_X25519, 0, 0,
					 "critical,CA:FALSE", "critical,digitalSignature", NULL}, 0},
		{"forged-critical-ext.der", {X509_VERSION_3, "cam", NULL, "00000777", EVP_PKEY_ED25519, 0, 0,
					     "critical,CA:FALSE", NULL, "1.3.6.1.4.1.99999.1=critical,ASN1:UTF8String:x"}, 0},
		{"forged-ua-7-digits.der", {X509_VERSION_3, "cam", NULL, "0000777", EVP_PKEY_ED25519, 0, 0, NULL, NULL,
					    NULL}, 0},
		{"forged-ua-not-hex.der", {X509_VERSION_3, "cam", NULL, "0000777G", EVP_PKEY_ED25519, 0, 0, NULL, NULL,
					   NULL}, 0},
		{"forged-role-unknown.der", {X509_VERSION_3, "toaster", NULL, "00000777", EVP_PKEY_ED25519, 0, 0, NULL,
					     NULL, NULL}, 0},
		{"forged-two-ou.der", {X509_VERSION_3, "card", "cam", "00000777", EVP_PKEY_ED25519, 0, 0, NULL, NULL,
				       NULL}, 0},
		{"forged-v1.der", {X509_VERSION_1, "card", NULL, "00000777", EVP_PKEY_ED25519, 0, 0, NULL, NULL, NULL}, 0},
		{"forged-expired.der", {X509_VERSION_3, "processor", NULL, "0000abcd", EVP_PKEY_ED25519, 946684800,
					978307200, "critical,CA:FALSE", "critical,digitalSignature", NULL}, 1},
		{"forged-no-ku.der", {X509_VERSION_3, "buyer", NULL, "FFFFFFFF", EVP_PKEY_X25519, 0, 0, NULL, NULL,
				      NULL}, 1},
		{"forged-no-bc-unknown-ext.der", {X509_VERSION_3, "distributor", NULL, "00000001", EVP_PKEY_X25519, 0, 0,
						  NULL, "keyAgreement", "1.3.6.1.4.1.99999.2=ASN1:NULL"}, 1},
	};
	uint8_t sk[32], pk[32], der[KH_CERT_MAX];
	struct kh_cert_info info;
	const uint8_t *root;
	size_t rootlen, len, n;
	char path[512];
	uint8_t *pem;

	kh_authority_root_der(a, &root, &rootlen);
	put("fuzz_cert", "root.der", root, rootlen);
	put_flip("fuzz_cert", "root-badsig.der", root, rootlen, -1, 0x01);
	snprintf(path, sizeof path, "%s/root.crt", dir);
	pem = slurp(path, &n);
	put("fuzz_cert", "root.pem", pem, n);

	for (n = 0; n < sizeof sk; n++)
		sk[n] = (uint8_t)(0x40 + n);
	check("ed pub", kh_ed25519_public(sk, pk));
	check("issue", kh_authority_issue(a, KH_ROLE_DECODER, 0x00000042u, KH_CERT_KEY_ED25519, pk, "sign", der,
					  sizeof der, &len));
	put("fuzz_cert", "decoder-sign.der", der, len);
	check("x pub", kh_x25519_public(sk, pk));
	check("issue", kh_authority_issue(a, KH_ROLE_KEYCARD, 0xABCDEF01u, KH_CERT_KEY_X25519, pk, "pair", der,
					  sizeof der, &len));
	put("fuzz_cert", "keycard-pair.der", der, len);
	put_flip("fuzz_cert", "keycard-pair-badsig.der", der, len, -1, 0x01);
	put_flip("fuzz_cert", "keycard-pair-badsubj.der", der, len, (long)len / 2, 0x01);
	put_plus("fuzz_cert", "keycard-pair-trailing.der", der, len, 0);
	put("fuzz_cert", "keycard-pair-cut.der", der, len - 1);
	snprintf(path, sizeof path, "%s/issued/keycard-ABCDEF01-pair.crt", dir);
	pem = slurp(path, &n);
	put("fuzz_cert", "keycard-pair.pem", pem, n);

	for (n = 0; n < sizeof forged / sizeof forged[0]; n++) {
		kh_err r;
		len = forge(dir, &forged[n].f, der, sizeof der);
		r = kh_cert_check(der, len, root_pk, KH_ROLE_NONE, KH_CERT_KEY_ANY, 0, &info);
		if ((r == KH_OK) != forged[n].ok) {
			fprintf(stderr, "gen_corpus: %s: kh_cert_check says %d\n", forged[n].name, r);
			exit(1);
		}
		put("fuzz_cert", forged[n].name, der, len);
	}
}


/* ---- fuzz_ecm, fuzz_emm, fuzz_cas: pay-TV messages under the keys of fuzz_common.h ---- */

/* The operator's signers of fuzz_common.h, and the forger's key (certified by nobody). */
static struct kh_cas_signer ecm_sg, emm_sg, ecm_forger, emm_forger;
static const uint8_t forger_sk[32] = "keyhole fuzz gen forger v1.....";

static void signers_init(void)
{
	ecm_sg.serial = FZ_CAS_ECM_SIGNER;
	memcpy(ecm_sg.sk, fz_cas_ecm_signer_sk, 32);
	emm_sg.serial = FZ_CAS_EMM_SIGNER;
	memcpy(emm_sg.sk, fz_cas_emm_signer_sk, 32);
	ecm_forger.serial = FZ_CAS_ECM_SIGNER;
	memcpy(ecm_forger.sk, forger_sk, 32);
	emm_forger.serial = FZ_CAS_EMM_SIGNER;
	memcpy(emm_forger.sk, forger_sk, 32);
}

/*
 * A section sealed around any plaintext (the codec's sealers refuse what is not well formed).
 * With a signer sg it is version 2 and signed (label: ECM or EMM), else the unsigned version 1.
 */
static size_t seal_raw(const uint8_t key[static 32], const struct kh_cas_signer *sg, const char *label, uint8_t tid,
		       uint8_t b1, uint32_t w1, uint32_t w2, const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	size_t body = KH_ECM_HDR_LEN + ptlen + KH_CAS_TAG_LEN, total = body + (sg ? KH_CAS_TRAILER_LEN : 0);

	out[0] = tid;
	out[1] = (uint8_t)(0x70 | ((total - 3) >> 8));
	out[2] = (uint8_t)(total - 3);
	out[3] = sg ? KH_CAS_VERSION_SIGNED : KH_CAS_VERSION;
	out[4] = b1;
	kh_put_be32(out + 5, w1);
	kh_put_be32(out + 9, w2);
	check("nonce", kh_random(out + 13, KH_CAS_NONCE_LEN));
	check("seal raw", kh_aead_seal(key, out + 13, out, KH_ECM_HDR_LEN, pt, ptlen, out + KH_ECM_HDR_LEN));
	if (sg) {
		kh_put_be32(out + body, sg->serial);
		if (!fz_sign_section(sg->sk, label, out, total, out + total - KH_CAS_SIG_LEN))
			die("sign raw", KH_ERR_INVAL);
	}
	return total;
}

/* An ECM's plaintext TLV, as kh_ecm_seal writes it (access 1: a = product; 2: a = event, b = price). */
static size_t ecm_pt(uint8_t *buf, size_t cap, uint8_t alg, int access, uint32_t a, uint32_t b, uint64_t t)
{
	uint8_t cw[16], ev[8];
	size_t cwlen = alg == KH_SCR_CSA2 ? 8 : 16, i;
	struct kh_wr w;

	for (i = 0; i < sizeof cw; i++)
		cw[i] = (uint8_t)(0xc0 + i);
	kh_wr_init(&w, buf, cap);
	kh_tlv_put(&w, KH_ECM_T_CW_EVEN, cw, cwlen);
	cw[0] ^= 0xff;
	kh_tlv_put(&w, KH_ECM_T_CW_ODD, cw, cwlen);
	kh_tlv_put_u8(&w, KH_ECM_T_ALG, alg);
	if (access == KH_ECM_PRODUCT) {
		kh_tlv_put_u32(&w, KH_ECM_T_PRODUCT, a);
	} else {
		kh_put_be32(ev, a);
		kh_put_be32(ev + 4, b);
		kh_tlv_put(&w, KH_ECM_T_EVENT, ev, sizeof ev);
	}
	check("ecm pt", kh_tlv_put_u64(&w, KH_ECM_T_TIME, t));
	return w.len;
}

/* A whole ECM under the service key, signed by sg. */
static size_t ecm_make_by(const struct kh_cas_signer *sg, uint8_t *out, uint8_t tid, uint8_t key_id, uint32_t cp,
			  uint8_t alg, int access, uint32_t a, uint32_t b)
{
	struct kh_ecm e;
	size_t len, i;

	memset(&e, 0, sizeof e);
	e.h.table_id = tid;
	e.h.key_id = key_id;
	e.h.key_version = FZ_CAS_KEY_VERSION;
	e.h.cp = cp;
	e.alg = alg;
	e.cw_len = alg == KH_SCR_CSA2 ? 8 : 16;
	for (i = 0; i < e.cw_len; i++) {
		e.cw_even[i] = (uint8_t)(0x10 + i);
		e.cw_odd[i] = (uint8_t)(0x20 + i);
	}
	e.access = (uint8_t)access;
	if (access == KH_ECM_PRODUCT) {
		e.product = a;
	} else {
		e.event = a;
		e.price = b;
	}
	e.time = FZ_CAS_NOW;
	check("ecm seal", kh_ecm_seal(fz_cas_skey, sg, &e, out, KH_ECM_MAX, &len));
	return len;
}

/* The same, signed by the operator's ECM signer. */
static size_t ecm_make(uint8_t *out, uint8_t tid, uint8_t key_id, uint32_t cp, uint8_t alg, int access, uint32_t a,
		       uint32_t b)
{
	return ecm_make_by(&ecm_sg, out, tid, key_id, cp, alg, access, a, b);
}

/* An authentic, signed ECM (crypto period 5) around any plaintext. */
static size_t ecm_raw(const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	return seal_raw(fz_cas_skey, &ecm_sg, fz_ecm_sig_label, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, FZ_CAS_KEY_VERSION, 5,
			pt, ptlen, out);
}

static void gen_ecm(void)
{
	uint8_t ecm[KH_ECM_MAX], pt[KH_ECM_MAX], buf[512];
	struct kh_wr w;
	size_t n, p;

	n = ecm_make(ecm, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 1, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_ecm", "product-csa2", ecm, n);
	put_flip("fuzz_ecm", "product-csa2-badtag", ecm, n, -1, 0x01);
	put_flip("fuzz_ecm", "product-csa2-badcp", ecm, n, 12, 0x01);
	put_flip("fuzz_ecm", "product-csa2-badver", ecm, n, 3, 0x03);
	put_flip("fuzz_ecm", "product-csa2-badtid", ecm, n, 0, 0x02);
	put_flip("fuzz_ecm", "product-csa2-syntax", ecm, n, 1, 0x80);
	put_flip("fuzz_ecm", "product-csa2-toolarge", ecm, n, 1, 0x0f);
	put_plus("fuzz_ecm", "product-csa2-trailing", ecm, n, 0);
	put("fuzz_ecm", "product-csa2-cut", ecm, n - 1);
	/* The trailer: serial and signature flipped (open still works: they are outside the tag). */
	put_flip("fuzz_ecm", "product-csa2-badsig", ecm, n, -1, 0x01);
	put_flip("fuzz_ecm", "product-csa2-badserial", ecm, n, -(long)KH_CAS_TRAILER_LEN, 0x01);
	/* Signed by another key under the signer's serial; by the EMM signer's key and serial. */
	n = ecm_make_by(&ecm_forger, ecm, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 1, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_ecm", "product-csa2-forged", ecm, n);
	n = ecm_make_by(&emm_sg, ecm, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 1, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_ecm", "product-csa2-emm-signer", ecm, n);
	/* Version 1 (no trailer, unsigned), as ECMs were: refused as a version. And a version-2
	 * header without a trailer. */
	p = ecm_pt(pt, sizeof pt, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0, FZ_CAS_NOW);
	n = seal_raw(fz_cas_skey, NULL, NULL, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, FZ_CAS_KEY_VERSION, 1, pt, p, ecm);
	put("fuzz_ecm", "v1-product", ecm, n);
	ecm[3] = KH_CAS_VERSION_SIGNED;
	put("fuzz_ecm", "v2-no-trailer", ecm, n);
	n = ecm_make(ecm, KH_ECM_TID_ODD, FZ_CAS_KEY_ID, 2, KH_SCR_CISSA, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_ecm", "product-aes", ecm, n);
	n = ecm_make(ecm, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 3, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	put("fuzz_ecm", "event-csa2", ecm, n);
	n = ecm_make(ecm, KH_ECM_TID_ODD, FZ_CAS_KEY_ID, 4, KH_SCR_IDSA, KH_ECM_EVENT, 8, 5000);
	put("fuzz_ecm", "event-aes", ecm, n);

	/* Authentic, but the TLV breaks a rule. */
	p = ecm_pt(pt, sizeof pt, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0, FZ_CAS_NOW);
	memcpy(pt + p, pt, 11); /* CW_EVEN twice */
	n = ecm_raw(pt, p + 11, ecm);
	put("fuzz_ecm", "tlv-duplicate", ecm, n);
	n = ecm_raw(pt, p - 11, ecm);
	put("fuzz_ecm", "tlv-no-time", ecm, n);
	kh_wr_init(&w, pt + p, sizeof pt - p);
	kh_tlv_put(&w, KH_ECM_T_EVENT, (const uint8_t *)"\0\0\0\7\0\0\1\0", 8);
	n = ecm_raw(pt, p + w.len, ecm);
	put("fuzz_ecm", "tlv-both-access", ecm, n);
	kh_wr_init(&w, pt + p, sizeof pt - p);
	kh_tlv_put_u8(&w, 9, 0);
	n = ecm_raw(pt, p + w.len, ecm);
	put("fuzz_ecm", "tlv-unknown-tag", ecm, n);
	n = ecm_raw(pt, p - 2, ecm);
	put("fuzz_ecm", "tlv-truncated", ecm, n);
	p = ecm_pt(pt, sizeof pt, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0, FZ_CAS_NOW);
	pt[25] = KH_SCR_CISSA; /* the ALG value: 16-byte CWs wanted, 8 given */
	n = ecm_raw(pt, p, ecm);
	put("fuzz_ecm", "tlv-cw-alg-mismatch", ecm, n);

	/* The card's answers, as the host reads them. */
	p = ecm_pt(pt, sizeof pt, KH_SCR_CSA2, KH_ECM_PRODUCT, 1, 0, 0);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, KH_SCR_CISSA);
	kh_tlv_put(&w, KH_CW_T_EVEN, pt + 3, 8);
	kh_tlv_put(&w, KH_CW_T_EVEN, pt + 3, 16);
	kh_tlv_put(&w, KH_CW_T_ODD, pt + 3, 16);
	check("cw answer", kh_tlv_put_u32(&w, KH_CW_T_CP, 42));
	put("fuzz_ecm", "answer-cw", buf, w.len);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u32(&w, KH_OFFER_T_EVENT, 7);
	kh_tlv_put_u32(&w, KH_OFFER_T_PRICE, 300);
	kh_tlv_put(&w, 9, NULL, 0);
	check("offer", kh_tlv_put_u32(&w, KH_OFFER_T_CREDIT, 1000));
	put("fuzz_ecm", "answer-offer", buf, w.len);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u32(&w, 1, 700);
	kh_tlv_put_u32(&w, 2, FZ_CAS_GROUP);
	kh_tlv_put_u32(&w, 3, 5);
	kh_tlv_put_u32(&w, 4, 0);
	kh_tlv_put_u32(&w, 5, 0);
	kh_tlv_put_u8(&w, 6, 1);
	kh_tlv_put(&w, 7, (const uint8_t *)"\0\1", 2);
	kh_tlv_put_u32(&w, 8, 3);
	kh_tlv_put_u32(&w, 9, 2);
	kh_tlv_put_u32(&w, 10, 1);
	kh_tlv_put_u32(&w, 11, 4);
	kh_tlv_put(&w, 12, (const uint8_t *)"\0\0\0\144\0\0\0\0\0\0\0\1\0\0\0\0\177\377\377\377", 20);
	kh_tlv_put(&w, 13, (const uint8_t *)"\1\0\0\0\1", 5);
	kh_tlv_put(&w, 14, (const uint8_t *)"\0\0\0\7\0\0\1\54\0\0\0\0\153\100\203\200", 16);
	kh_tlv_put(&w, 16, (const uint8_t *)"\10\377\0\0\1", 5);
	kh_tlv_put(&w, 16, (const uint8_t *)"\11\377\0\0\2", 5);
	check("status", kh_tlv_put_u32(&w, 15, 2));
	put("fuzz_ecm", "answer-status", buf, w.len);
}

static void gen_emm(void)
{
	static const uint8_t k2[32] = "gen corpus second key .........";
	/* SET SIGNER's value is a certificate the card checks; the codec does not look at it */
	static const uint8_t not_a_cert[] = {0x30, 0x03, 0x02, 0x01, 0x00};
	uint8_t cmds[512], sec[KH_EMM_MAX];
	struct kh_emm_hdr hu = {0, KH_EMM_UNIQUE, FZ_CAS_UA, 2, 0};
	struct kh_emm_hdr hg = {0, KH_EMM_GROUP, FZ_CAS_GROUP, 2, 0};
	struct kh_emm_hdr ha = {0, KH_EMM_ALL, 0, 2, 0};
	struct kh_wr w;
	size_t n;
	int i;

	for (i = KH_EMM_SET_KEY; i <= KH_EMM_SET_SIGNER; i++) {
		static const char *names[] = {"", "set-key", "entitle", "revoke", "add-credit", "auth-export",
					      "req-export", "set-group", "set-all-key", "ack-usage", "set-signer"};
		char name[32];
		kh_wr_init(&w, cmds, sizeof cmds);
		switch (i) {
		case KH_EMM_SET_KEY: kh_emm_put_set_key(&w, 2, 7, k2); break;
		case KH_EMM_ENTITLE: kh_emm_put_entitle(&w, 200, FZ_CAS_NOW - 10, FZ_CAS_NOW + 1000); break;
		case KH_EMM_REVOKE: kh_emm_put_revoke(&w, FZ_CAS_PRODUCT); break;
		case KH_EMM_ADD_CREDIT: kh_emm_put_add_credit(&w, 500, 2); break;
		case KH_EMM_AUTH_EXPORT: kh_emm_put_auth_export(&w, 1); break;
		case KH_EMM_REQ_EXPORT: kh_emm_put_req_export(&w); break;
		case KH_EMM_SET_GROUP: kh_emm_put_set_group(&w, 0x78, k2, 0); break;
		case KH_EMM_SET_ALL_KEY: kh_emm_put_set_all_key(&w, k2); break;
		case KH_EMM_ACK_USAGE: kh_emm_put_ack_usage(&w, 3); break;
		default: kh_emm_put_set_signer(&w, not_a_cert, sizeof not_a_cert); break;
		}
		check("emm cmd", w.err);
		check("emm seal", kh_emm_seal(fz_cas_kp, &hu, cmds, w.len, sec, sizeof sec, &n));
		snprintf(name, sizeof name, "unique-%s", names[i]);
		put("fuzz_emm", name, sec, n);
	}
	/* A card's own EMM is version 1: one made version 2 (with a trailer) is refused. */
	kh_wr_init(&w, cmds, sizeof cmds);
	check("unique v2 cmds", kh_emm_put_entitle(&w, 300, FZ_CAS_NOW, FZ_CAS_NOW + 86400));
	n = seal_raw(fz_cas_kp, &emm_sg, fz_emm_sig_label, KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, FZ_CAS_UA, 3, cmds,
		     w.len, sec);
	put("fuzz_emm", "unique-v2", sec, n);

	/* Group and broadcast EMMs: signed by the EMM signer (version 2). */
	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_set_key(&w, 2, 7, k2);
	check("group cmds", kh_emm_put_entitle(&w, 300, FZ_CAS_NOW, FZ_CAS_NOW + 86400));
	check("group seal", kh_emm_seal_signed(fz_cas_gkey, &emm_sg, &hg, cmds, w.len, sec, sizeof sec, &n));
	put("fuzz_emm", "group-signed", sec, n);
	put_flip("fuzz_emm", "group-badtag", sec, n, -(long)KH_CAS_TRAILER_LEN - 1, 0x01);
	put_flip("fuzz_emm", "group-badsig", sec, n, -1, 0x01);
	put_flip("fuzz_emm", "group-badserial", sec, n, -(long)KH_CAS_TRAILER_LEN, 0x01);
	put_flip("fuzz_emm", "group-type-tid-mismatch", sec, n, 4, 0x01);
	put_flip("fuzz_emm", "group-as-unique", sec, n, 4, 0x02);
	check("group forged", kh_emm_seal_signed(fz_cas_gkey, &emm_forger, &hg, cmds, w.len, sec, sizeof sec, &n));
	put("fuzz_emm", "group-forged", sec, n);
	check("group ecm signer", kh_emm_seal_signed(fz_cas_gkey, &ecm_sg, &hg, cmds, w.len, sec, sizeof sec, &n));
	put("fuzz_emm", "group-ecm-signer", sec, n);
	/* Version 1 (unsigned) group and broadcast EMMs, as they were: refused as a version. */
	n = seal_raw(fz_cas_gkey, NULL, NULL, KH_EMM_TID_GROUP, KH_EMM_GROUP, FZ_CAS_GROUP, 3, cmds, w.len, sec);
	put("fuzz_emm", "group-v1", sec, n);
	n = seal_raw(fz_cas_akey, NULL, NULL, KH_EMM_TID_ALL, KH_EMM_ALL, 0, 3, cmds, w.len, sec);
	put("fuzz_emm", "all-v1", sec, n);
	/* A per-card command under the group key: the codec seals it, the card refuses it. */
	kh_wr_init(&w, cmds, sizeof cmds);
	check("group credit", kh_emm_put_add_credit(&w, 100, 3));
	check("group seal", kh_emm_seal_signed(fz_cas_gkey, &emm_sg, &hg, cmds, w.len, sec, sizeof sec, &n));
	put("fuzz_emm", "group-add-credit", sec, n);
	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_revoke(&w, FZ_CAS_PRODUCT);
	check("all cmds", kh_emm_put_entitle(&w, 300, FZ_CAS_NOW, FZ_CAS_NOW + 86400));
	check("all seal", kh_emm_seal_signed(fz_cas_akey, &emm_sg, &ha, cmds, w.len, sec, sizeof sec, &n));
	put("fuzz_emm", "all-signed", sec, n);
	/* ALL must have address 0 (kh_emm_peek fills its header before refusing this one). */
	put_flip("fuzz_emm", "all-addr-nonzero", sec, n, 8, 0x01);
	put_flip("fuzz_emm", "all-badver", sec, n, 3, 0x03);
	put_flip("fuzz_emm", "all-toolarge", sec, n, 1, 0x0f);
	put_plus("fuzz_emm", "all-trailing", sec, n, 0);
	put("fuzz_emm", "all-cut", sec, n - 1);
	put("fuzz_emm", "all-no-trailer", sec, n - KH_CAS_TRAILER_LEN);
	/* An empty command list: the sealers refuse it, but one sealed by hand opens. */
	n = seal_raw(fz_cas_kp, NULL, NULL, KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, FZ_CAS_UA, 3, NULL, 0, sec);
	put("fuzz_emm", "unique-empty", sec, n);
	n = seal_raw(fz_cas_akey, &emm_sg, fz_emm_sig_label, KH_EMM_TID_ALL, KH_EMM_ALL, 0, 3, NULL, 0, sec);
	put("fuzz_emm", "all-empty", sec, n);
	/* The largest EMMs. */
	{
		static uint8_t big[KH_EMM_CMDS_MAX];
		memset(big, 0x11, sizeof big);
		check("big seal", kh_emm_seal(fz_cas_kp, &hu, big, sizeof big, sec, sizeof sec, &n));
		put("fuzz_emm", "unique-max", sec, n);
		check("big signed", kh_emm_seal_signed(fz_cas_gkey, &emm_sg, &hg, big, KH_EMM_SIGNED_CMDS_MAX, sec,
						       sizeof sec, &n));
		put("fuzz_emm", "group-max", sec, n);
	}
}

/* ---- fuzz_usage: the card's usage block and upload hello under the keys of fuzz_common.h ---- */

/* put() with the harness's selector byte in front. */
static void put_sel(const char *name, uint8_t sel, const uint8_t *p, size_t n)
{
	static uint8_t buf[4096];

	if (n + 1 > sizeof buf)
		die("put_sel", KH_ERR_INVAL);
	buf[0] = sel;
	memcpy(buf + 1, p, n);
	put("fuzz_usage", name, buf, n + 1);
}

/* A block's contents as the card writes them (applet_usage.c): np purchases. */
static size_t usage_pt(uint8_t *buf, size_t cap, size_t np, uint8_t export_ok)
{
	uint8_t v[16];
	struct kh_wr w;
	size_t i;

	kh_wr_init(&w, buf, cap);
	kh_tlv_put_u32(&w, KH_USAGE_T_CREDIT, FZ_CAS_CREDIT - 300);
	for (i = 0; i < np; i++) {
		kh_put_be32(v, (uint32_t)(7 + i));
		kh_put_be32(v + 4, (uint32_t)(100 + i));
		kh_put_be64(v + 8, FZ_CAS_NOW - 3600 + i);
		kh_tlv_put(&w, KH_USAGE_T_PURCHASE, v, 16);
	}
	kh_put_be32(v, 120);
	kh_put_be32(v + 4, 118);
	kh_put_be32(v + 8, 2);
	kh_put_be32(v + 12, 5);
	kh_tlv_put(&w, KH_USAGE_T_COUNTERS, v, 16);
	v[0] = 1;
	v[1] = 1;
	kh_tlv_put(&w, KH_USAGE_T_VERSIONS, v, 2);
	kh_tlv_put_u32(&w, KH_USAGE_T_RELOAD, 2);
	check("usage pt", kh_tlv_put_u8(&w, KH_USAGE_T_EXPORT, export_ok));
	return w.len;
}

/* Selector 8/10 input: u8 snlen | snonce | p. */
static void put_bound(const char *name, uint8_t sel, const uint8_t *snonce, size_t snlen, const uint8_t *p, size_t n)
{
	static uint8_t buf[4096];

	if (1 + snlen + n > sizeof buf)
		die("put_bound", KH_ERR_INVAL);
	buf[0] = (uint8_t)snlen;
	memcpy(buf + 1, snonce, snlen);
	memcpy(buf + 1 + snlen, p, n);
	put_sel(name, sel, buf, 1 + snlen + n);
}

/* Seeds of blocks bound to an upload session (KH_USAGE_F_SESSION, EXPORT P1=0 with a nonce). */
static void gen_usage_bound(const uint8_t pk[static 32])
{
	uint8_t pt[KH_USAGE_MAX], blk[KH_USAGE_MAX], snonce[KH_HELLO_NONCE_MAX + 1];
	struct kh_usage_hdr h = {FZ_CAS_UA, 5, FZ_CAS_NOW, KH_USAGE_F_SESSION};
	struct kh_usage u;
	size_t n, p;

	check("session nonce", kh_random(snonce, sizeof snonce));
	p = usage_pt(pt, sizeof pt, 1, 0);
	check("usage seal bound",
	      kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, snonce, 32, blk, sizeof blk, &n));
	check("usage open bound", kh_usage_open_bound(fz_cas_ku, pk, blk, n, snonce, 32, &u));
	if (kh_usage_open(fz_cas_ku, pk, blk, n, &u) != KH_ERR_AUTH)
		die("bound block opened without its nonce", KH_ERR_INVAL);
	put_bound("bound-block-nonce32", 8, snonce, 32, blk, n);
	/* The same block as a plain block (no nonce), with the wrong nonce, with none. */
	put_sel("block-bound-no-nonce", 0, blk, n);
	snonce[31] ^= 0x01;
	put_bound("bound-block-other-nonce", 8, snonce, 32, blk, n);
	snonce[31] ^= 0x01;
	put_bound("bound-block-nonce-cut", 8, snonce, 31, blk, n);
	put_bound("bound-block-empty-nonce", 8, snonce, 0, blk, n);
	/* Both M1 and SESSION: refused by peek whatever the signature. */
	blk[17] = KH_USAGE_F_M1 | KH_USAGE_F_SESSION;
	put_sel("block-bothflags", 0, blk, n);
	/* Bound with the shortest and the longest nonce, 64 purchases with the longest. */
	h.block_seq = 6;
	check("usage seal bound",
	      kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, snonce, KH_HELLO_NONCE_MIN, blk, sizeof blk, &n));
	check("usage open bound", kh_usage_open_bound(fz_cas_ku, pk, blk, n, snonce, KH_HELLO_NONCE_MIN, &u));
	put_bound("bound-block-nonce16", 8, snonce, KH_HELLO_NONCE_MIN, blk, n);
	h.block_seq = 7;
	p = usage_pt(pt, sizeof pt, KH_USAGE_MAX_PURCHASES, 1);
	check("usage seal bound",
	      kh_usage_seal_bound(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, snonce, KH_HELLO_NONCE_MAX, blk, sizeof blk, &n));
	check("usage open bound", kh_usage_open_bound(fz_cas_ku, pk, blk, n, snonce, KH_HELLO_NONCE_MAX, &u));
	put_bound("bound-block-nonce64-64-purchases", 8, snonce, KH_HELLO_NONCE_MAX, blk, n);
	/* An unbound block given a nonce: the nonce is ignored, it opens. */
	h.flags = 0;
	h.block_seq = 8;
	p = usage_pt(pt, sizeof pt, 1, 1);
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, blk, sizeof blk, &n));
	check("usage open bound", kh_usage_open_bound(fz_cas_ku, pk, blk, n, snonce, 32, &u));
	put_bound("bound-unbound-block", 8, snonce, 32, blk, n);
	/* Contents the harness seals bound (selector 10): nonces of 16, 32, 64 bytes, one too short
	 * and one too long (refused), and contents that break a rule. */
	put_bound("bound-contents-nonce16", 10, snonce, KH_HELLO_NONCE_MIN, pt, p);
	put_bound("bound-contents-nonce32", 10, snonce, 32, pt, p);
	put_bound("bound-contents-nonce64", 10, snonce, KH_HELLO_NONCE_MAX, pt, p);
	put_bound("bound-contents-nonce15", 10, snonce, KH_HELLO_NONCE_MIN - 1, pt, p);
	put_bound("bound-contents-nonce65", 10, snonce, KH_HELLO_NONCE_MAX + 1, pt, p);
	p = usage_pt(pt, sizeof pt, 3, 0);
	memcpy(pt + p, pt, 7); /* credit twice */
	put_bound("bound-contents-duplicate", 10, snonce, 32, pt, p + 7);
}

static void gen_usage(void)
{
	static const uint8_t other_ku[32] = "gen corpus other Ku ...........";
	uint8_t pt[KH_USAGE_MAX], blk[KH_USAGE_MAX], nonce[KH_HELLO_NONCE_MAX], pk[32];
	uint8_t msg[KH_HELLO_MSG_LEN(KH_HELLO_NONCE_MAX)], in[1 + KH_HELLO_NONCE_MAX + KH_HELLO_LEN];
	struct kh_usage_hdr h = {FZ_CAS_UA, 1, FZ_CAS_NOW, 0};
	struct kh_usage u;
	size_t n, p, i;
	struct kh_wr w;
	static const size_t nls[3] = {KH_HELLO_NONCE_MIN, 32, KH_HELLO_NONCE_MAX};

	check("usage pk", kh_ed25519_public(fz_usage_sign_sk, pk));
	/* Valid blocks: 0, 1 and 64 purchases, export 0 and 1 (selector 0: a block). */
	p = usage_pt(pt, sizeof pt, 0, 0);
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, blk, sizeof blk, &n));
	check("usage open", kh_usage_open(fz_cas_ku, pk, blk, n, &u));
	put_sel("block-0-purchases-export0", 0, blk, n);
	h.block_seq = 2;
	h.flags = KH_USAGE_F_M1; /* exported for M1, as only an authorised card does */
	p = usage_pt(pt, sizeof pt, 1, 1);
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, blk, sizeof blk, &n));
	check("usage open", kh_usage_open(fz_cas_ku, pk, blk, n, &u));
	put_sel("block-1-purchase-export1", 0, blk, n);
	/* Damaged: a flipped signature byte, one byte short, the old version 1, an unknown flag. */
	blk[n - 1] ^= 0x01;
	put_sel("block-badsig", 0, blk, n);
	blk[n - 1] ^= 0x01;
	put_sel("block-cut", 0, blk, n - 1);
	blk[0] = 1;
	put_sel("block-badver", 0, blk, n);
	blk[0] = 2; /* version 2: its nonce came from block_seq */
	put_sel("block-v2", 0, blk, n);
	blk[0] = KH_USAGE_VERSION;
	blk[17] |= 0x80;
	put_sel("block-badflags", 0, blk, n);
	h.flags = 0;
	h.block_seq = 3;
	p = usage_pt(pt, sizeof pt, KH_USAGE_MAX_PURCHASES, 1);
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p, blk, sizeof blk, &n));
	check("usage open", kh_usage_open(fz_cas_ku, pk, blk, n, &u));
	put_sel("block-64-purchases", 0, blk, n);
	/* Signed by the card but sealed under another Ku: the tag fails. */
	check("usage seal", kh_usage_seal(other_ku, fz_usage_sign_sk, &h, pt, p, blk, sizeof blk, &n));
	put_sel("block-other-ku", 0, blk, n);
	/* Authentic, but the contents break a rule: an unknown tag, a missing field. */
	h.block_seq = 4;
	p = usage_pt(pt, sizeof pt, 1, 0);
	kh_wr_init(&w, pt + p, sizeof pt - p);
	check("usage tag", kh_tlv_put_u8(&w, 9, 0));
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p + w.len, blk, sizeof blk, &n));
	put_sel("block-tlv-unknown-tag", 0, blk, n);
	check("usage seal", kh_usage_seal(fz_cas_ku, fz_usage_sign_sk, &h, pt, p - 4, blk, sizeof blk, &n));
	put_sel("block-tlv-no-export", 0, blk, n);
	/* Selector 2: the rest is also contents the harness seals (reaches the parser by mutation). */
	p = usage_pt(pt, sizeof pt, 1, 1);
	put_sel("contents-1-purchase", 2, pt, p);
	put_sel("contents-1-purchase-m1", 6, pt, p);
	p = usage_pt(pt, sizeof pt, 3, 0);
	memcpy(pt + p, pt, 7); /* credit twice */
	put_sel("contents-duplicate", 2, pt, p + 7);

	/* Hellos (selector 1: u8 noncelen | nonce | hello) with nonces of 16, 32 and 64 bytes. */
	for (i = 0; i < 3; i++) {
		char name[32];
		size_t nl = nls[i];
		check("nonce", kh_random(nonce, nl));
		in[0] = (uint8_t)nl;
		memcpy(in + 1, nonce, nl);
		kh_put_be32(in + 1 + nl, FZ_CAS_UA);
		kh_put_be32(in + 1 + nl + 4, 3);
		kh_put_be64(in + 1 + nl + 8, FZ_CAS_NOW);
		kh_hello_msg(nonce, nl, FZ_CAS_UA, 3, FZ_CAS_NOW, msg);
		check("hello sign", kh_ed25519_sign(fz_usage_sign_sk, msg, KH_HELLO_MSG_LEN(nl), in + 1 + nl + 16));
		check("hello verify", kh_hello_verify(pk, in + 1, nl, in + 1 + nl, KH_HELLO_LEN, &h));
		snprintf(name, sizeof name, "hello-nonce%zu", nl);
		put_sel(name, 1, in, 1 + nl + KH_HELLO_LEN);
		if (i == 1) {
			in[1 + nl + 16] ^= 0x01;
			put_sel("hello-badsig", 1, in, 1 + nl + KH_HELLO_LEN);
			in[1 + nl + 16] ^= 0x01;
			put_sel("hello-cut", 1, in, nl + KH_HELLO_LEN);
		}
	}

	/* Bound to an upload session (selector 8: u8 snlen | session nonce | block; 10: the rest is
	 * also contents the harness seals bound to that nonce). After the hellos, so their nonces
	 * are the same as before. */
	gen_usage_bound(pk);
}

/* fuzz_cas inputs: chunks of u8 mode | u16 length | bytes. */
static void chunk(struct seq *s, uint8_t mode, const uint8_t *p, size_t n)
{
	if (s->n + 3 + n > sizeof s->b || n > 0xffff)
		die("cas seq full", KH_ERR_BUF);
	s->b[s->n] = mode;
	s->b[s->n + 1] = (uint8_t)(n >> 8);
	s->b[s->n + 2] = (uint8_t)n;
	memcpy(s->b + s->n + 3, p, n);
	s->n += 3 + n;
}

/*
 * fuzz_cas's mode byte: kind (0 raw EMM, 1/2/3 unique/group/all command list, 4/5 raw ECM as
 * ECM/PURCHASE, 6/7 ECM plaintext as ECM/PURCHASE) | variant v << 3 (unique: 1..6 SET SIGNER of
 * the harness's signer v - 1 first, 7 a sequence number left out; group, all and plaintext ECMs:
 * the signer, 0 the one given in setup, 1..6 the harness's signer v - 1, 7 a forger).
 */
#define MODE(kind, v) ((uint8_t)((kind) | (v) << 3))

/* One EMM command list as a chunk of the given mode. */
enum { C_SET_KEY, C_ENTITLE, C_REVOKE, C_CREDIT, C_EXPORT, C_REQ, C_GROUP, C_ALL, C_ACK };
static void cmd_chunk(struct seq *s, uint8_t mode, int c, uint32_t a, uint64_t b, uint64_t d)
{
	static const uint8_t k2[32] = "gen corpus second key .........";
	uint8_t cmds[128];
	struct kh_wr w;

	kh_wr_init(&w, cmds, sizeof cmds);
	switch (c) {
	case C_SET_KEY: kh_emm_put_set_key(&w, (uint8_t)a, (uint32_t)b, k2); break;
	case C_ENTITLE: kh_emm_put_entitle(&w, a, b, d); break;
	case C_REVOKE: kh_emm_put_revoke(&w, a); break;
	case C_CREDIT: kh_emm_put_add_credit(&w, a, (uint32_t)b); break;
	case C_EXPORT: kh_emm_put_auth_export(&w, (int)a); break;
	case C_REQ: kh_emm_put_req_export(&w); break;
	case C_GROUP: kh_emm_put_set_group(&w, a, k2, (uint32_t)b); break;
	case C_ALL: kh_emm_put_set_all_key(&w, k2); break;
	default: kh_emm_put_ack_usage(&w, a); break;
	}
	check("cas cmd", w.err);
	chunk(s, mode, cmds, w.len);
}

static void ecm_chunk(struct seq *s, uint8_t mode, uint8_t alg, int access, uint32_t a, uint32_t b)
{
	uint8_t buf[KH_ECM_MAX];
	size_t n;

	if ((mode & 7) >= 6) {
		n = ecm_pt(buf, sizeof buf, alg, access, a, b, FZ_CAS_NOW);
	} else {
		n = ecm_make(buf, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 9, alg, access, a, b);
	}
	chunk(s, mode, buf, n);
}

static void gen_cas(void)
{
	static const uint8_t junk[] = {0x80, 0x70, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05};
	/* SET SIGNER with something that is no certificate: under Kp CERT, elsewhere EMM_SCOPE */
	static const uint8_t bad_signer[] = {KH_EMM_SET_SIGNER, 0x00, 0x05, 0x30, 0x03, 0x02, 0x01, 0x00};
	uint8_t cmds[128], sec[KH_EMM_MAX];
	struct kh_emm_hdr h;
	struct kh_wr w;
	struct seq s;
	size_t n;
	int i;

	/* Every EMM command, unique (signers: the setup's ECM signer again, then a new EMM signer);
	 * then group and all, with what they may carry, under the keys just set. */
	s.n = 0;
	cmd_chunk(&s, 1, C_SET_KEY, 2, 7, 0);
	cmd_chunk(&s, 1, C_ENTITLE, 200, FZ_CAS_NOW - 10, FZ_CAS_NOW + 1000);
	cmd_chunk(&s, 1, C_REVOKE, 200, 0, 0);
	cmd_chunk(&s, 1, C_CREDIT, 500, 2, 0);
	cmd_chunk(&s, 1, C_EXPORT, 1, 0, 0);
	cmd_chunk(&s, 1, C_REQ, 0, 0, 0);
	cmd_chunk(&s, 1, C_GROUP, 0x78, 0, 0);
	cmd_chunk(&s, 1, C_ALL, 0, 0, 0);
	cmd_chunk(&s, 1, C_ACK, 0, 0, 0);
	cmd_chunk(&s, MODE(1, 1), C_ENTITLE, 201, FZ_CAS_NOW - 10, FZ_CAS_NOW + 1000);
	cmd_chunk(&s, MODE(1, 4), C_REVOKE, 201, 0, 0);
	cmd_chunk(&s, 2, C_ENTITLE, 300, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	cmd_chunk(&s, 3, C_SET_KEY, 3, 1, 0);
	cmd_chunk(&s, MODE(3, 4), C_REVOKE, 300, 0, 0); /* the EMM signer just given */
	put("fuzz_cas", "emm-each-command", s.b, s.n);

	/* Per-card commands under the group or broadcast key: EMM_SCOPE, nothing applied (also
	 * after a command that is allowed there). */
	s.n = 0;
	cmd_chunk(&s, 2, C_CREDIT, 100, 2, 0);
	cmd_chunk(&s, 3, C_EXPORT, 1, 0, 0);
	cmd_chunk(&s, 2, C_REQ, 0, 0, 0);
	cmd_chunk(&s, 3, C_GROUP, 0x79, 0, 0);
	cmd_chunk(&s, 2, C_ALL, 0, 0, 0);
	cmd_chunk(&s, 3, C_ACK, 0, 0, 0);
	chunk(&s, 2, bad_signer, sizeof bad_signer);
	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_entitle(&w, 400, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	check("scope cmds", kh_emm_put_add_credit(&w, 100, 2));
	chunk(&s, 3, cmds, w.len);
	chunk(&s, 1, bad_signer, sizeof bad_signer);
	cmd_chunk(&s, 2, C_ENTITLE, 400, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	put("fuzz_cas", "emm-scope", s.b, s.n);

	/* Whole EMMs as the EMM maker sent them, one replayed; then inside the channel. */
	s.n = 0;
	kh_wr_init(&w, cmds, sizeof cmds);
	check("raw cmds", kh_emm_put_add_credit(&w, 50, 10));
	h = (struct kh_emm_hdr){0, KH_EMM_UNIQUE, FZ_CAS_UA, 2, 0};
	check("raw seal", kh_emm_seal(fz_cas_kp, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n);
	chunk(&s, 0, sec, n);
	kh_wr_init(&w, cmds, sizeof cmds);
	check("raw cmds", kh_emm_put_entitle(&w, 500, FZ_CAS_NOW, FZ_CAS_NOW + 86400));
	h = (struct kh_emm_hdr){0, KH_EMM_GROUP, FZ_CAS_GROUP, 10, 0};
	check("raw seal", kh_emm_seal_signed(fz_cas_gkey, &emm_sg, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0x80, sec, n);
	h = (struct kh_emm_hdr){0, KH_EMM_ALL, 0, 10, 0};
	check("raw seal", kh_emm_seal_signed(fz_cas_akey, &emm_sg, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n);
	chunk(&s, 0, sec, n);
	h = (struct kh_emm_hdr){0, KH_EMM_UNIQUE, FZ_CAS_UA + 1, 3, 0};
	check("raw seal", kh_emm_seal(fz_cas_kp, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n); /* not addressed to this card */
	cmd_chunk(&s, 0x81, C_CREDIT, 7, 11, 0);
	cmd_chunk(&s, 0x41, C_CREDIT, 7, 12, 0); /* reused seq: replay */
	cmd_chunk(&s, 0x42, C_ENTITLE, 7, 12, 13); /* reused group seq: replay */
	chunk(&s, 0, junk, sizeof junk);
	put("fuzz_cas", "emm-raw-channel-replay", s.b, s.n);

	/* Signed group and broadcast EMMs: by the signer the card knows (raw and sealed here), by the
	 * ECM signer's key, by a forger under the EMM signer's serial, by an EMM signer given only
	 * later; and unsigned version-1 ones. */
	s.n = 0;
	kh_wr_init(&w, cmds, sizeof cmds);
	check("signed cmds", kh_emm_put_entitle(&w, 600, FZ_CAS_NOW, FZ_CAS_NOW + 86400));
	h = (struct kh_emm_hdr){0, KH_EMM_GROUP, FZ_CAS_GROUP, 5, 0};
	check("signed seal", kh_emm_seal_signed(fz_cas_gkey, &emm_sg, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n);
	h = (struct kh_emm_hdr){0, KH_EMM_GROUP, FZ_CAS_GROUP, 6, 0};
	check("forged seal", kh_emm_seal_signed(fz_cas_gkey, &emm_forger, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n);
	check("ecm signer seal", kh_emm_seal_signed(fz_cas_gkey, &ecm_sg, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n);
	n = seal_raw(fz_cas_gkey, NULL, NULL, KH_EMM_TID_GROUP, KH_EMM_GROUP, FZ_CAS_GROUP, 7, cmds, w.len, sec);
	chunk(&s, 0, sec, n); /* version 1 */
	n = seal_raw(fz_cas_akey, NULL, NULL, KH_EMM_TID_ALL, KH_EMM_ALL, 0, 7, cmds, w.len, sec);
	chunk(&s, 0, sec, n); /* version 1 */
	h = (struct kh_emm_hdr){0, KH_EMM_ALL, 0, 8, 0};
	check("signed seal", kh_emm_seal_signed(fz_cas_akey, &emm_sg, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0x80, sec, n);
	cmd_chunk(&s, MODE(2, 0), C_ENTITLE, 601, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	cmd_chunk(&s, MODE(3, 0), C_ENTITLE, 602, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	cmd_chunk(&s, MODE(2, 1), C_ENTITLE, 603, FZ_CAS_NOW, FZ_CAS_NOW + 86400); /* ECM signer's key */
	cmd_chunk(&s, MODE(3, 7), C_ENTITLE, 604, FZ_CAS_NOW, FZ_CAS_NOW + 86400); /* forger */
	cmd_chunk(&s, MODE(2, 4), C_ENTITLE, 605, FZ_CAS_NOW, FZ_CAS_NOW + 86400); /* not given yet */
	cmd_chunk(&s, MODE(1, 4), C_REVOKE, 999, 0, 0);                            /* given now */
	cmd_chunk(&s, MODE(2, 4), C_ENTITLE, 605, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	cmd_chunk(&s, MODE(3, 2), C_REVOKE, 605, 0, 0);
	put("fuzz_cas", "emm-signed-group-all", s.b, s.n);

	/* Signer rotation: two more ECM signers given (the older of the two known is replaced), one
	 * older than both given again (ignored); ECMs from each. */
	s.n = 0;
	ecm_chunk(&s, MODE(6, 0), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, MODE(6, 3), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0); /* not given yet */
	cmd_chunk(&s, MODE(1, 3), C_ENTITLE, 700, FZ_CAS_NOW, FZ_CAS_NOW + 86400);
	ecm_chunk(&s, MODE(6, 3), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, MODE(6, 0), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	cmd_chunk(&s, MODE(1, 5), C_REVOKE, 700, 0, 0);
	ecm_chunk(&s, MODE(6, 5), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, MODE(6, 0), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0); /* replaced */
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);          /* so is this */
	cmd_chunk(&s, MODE(1, 1), C_REVOKE, 700, 0, 0);                            /* ignored */
	ecm_chunk(&s, MODE(7, 3), KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	put("fuzz_cas", "emm-set-signer-rotation", s.b, s.n);

	/* Reload ids: a jump of the window is applied, one more is RELOAD_JUMP, an old one skipped. */
	s.n = 0;
	cmd_chunk(&s, 1, C_CREDIT, 100, 1 + 1025, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, 1 + 1024, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, 1025 + 1024, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, 2049 + 1025, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, UINT32_MAX, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, 2, 0);
	cmd_chunk(&s, 1, C_CREDIT, 100, 2050, 0);
	put("fuzz_cas", "emm-reload-jump", s.b, s.n);

	/* The card's own EMMs in order only: one number left out is EMM_GAP, then the next one
	 * applies; raw ones too. */
	s.n = 0;
	cmd_chunk(&s, MODE(1, 7), C_CREDIT, 10, 2, 0);
	kh_wr_init(&w, cmds, sizeof cmds);
	check("gap cmds", kh_emm_put_add_credit(&w, 20, 3));
	h = (struct kh_emm_hdr){0, KH_EMM_UNIQUE, FZ_CAS_UA, 3, 0};
	check("gap seal", kh_emm_seal(fz_cas_kp, &h, cmds, w.len, sec, sizeof sec, &n));
	chunk(&s, 0, sec, n); /* seq 3 while the card is at 1 */
	cmd_chunk(&s, 1, C_CREDIT, 10, 2, 0);
	chunk(&s, 0, sec, n); /* now in order */
	cmd_chunk(&s, MODE(1, 7) | 0x80, C_CREDIT, 10, 4, 0);
	cmd_chunk(&s, 0x80 | 1, C_CREDIT, 10, 4, 0);
	put("fuzz_cas", "emm-unique-gap", s.b, s.n);

	/* Credit up to the top, then one more: refused (never wraps); bad command lists. */
	s.n = 0;
	cmd_chunk(&s, 1, C_CREDIT, UINT32_MAX - FZ_CAS_CREDIT, 5, 0);
	cmd_chunk(&s, 1, C_CREDIT, 1, 6, 0);
	cmd_chunk(&s, 1, C_CREDIT, 1, 5, 0); /* reload id already applied: skipped, accepted */
	cmd_chunk(&s, 2, C_GROUP, 0x79, 0, 0); /* group key only under Kp */
	chunk(&s, 1, (const uint8_t *)"\x0b\x00\x00", 3);
	chunk(&s, 1, (const uint8_t *)"\x06\x00\x01\x00", 4);
	chunk(&s, 1, (const uint8_t *)"\x04\x00\x08\x00\x00", 5);
	cmd_chunk(&s, 1, C_ENTITLE, 201, FZ_CAS_NOW, FZ_CAS_NOW);
	put("fuzz_cas", "emm-credit-top-and-bad", s.b, s.n);

	/* Subscriptions: covered, by plaintext too, not covered, expired, not started, no key. */
	s.n = 0;
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, 6, KH_SCR_CISSA, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, 0x46, KH_SCR_IDSA, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_PRODUCT, 999, 0);
	cmd_chunk(&s, 1, C_ENTITLE, 301, FZ_CAS_NOW - 1000, FZ_CAS_NOW - 10);
	cmd_chunk(&s, 1, C_ENTITLE, 302, FZ_CAS_NOW + 10, FZ_CAS_NOW + 1000);
	ecm_chunk(&s, 6, KH_SCR_CSA2, KH_ECM_PRODUCT, 301, 0);
	ecm_chunk(&s, 6, KH_SCR_CSA2, KH_ECM_PRODUCT, 302, 0);
	cmd_chunk(&s, 1, C_REVOKE, FZ_CAS_PRODUCT, 0, 0);
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	n = ecm_make(sec, KH_ECM_TID_EVEN, 5, 1, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	chunk(&s, 4, sec, n); /* a key the card does not hold */
	chunk(&s, 4, junk, sizeof junk);
	put("fuzz_cas", "ecm-product", s.b, s.n);

	/* Signed ECMs: the known signer's (raw and sealed here), a forger's under its serial, the EMM
	 * signer's key, a flipped signature, and an unsigned version-1 ECM. */
	s.n = 0;
	n = ecm_make(sec, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 9, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	chunk(&s, 4, sec, n);
	sec[n - 1] ^= 0x01;
	chunk(&s, 4, sec, n);
	n = ecm_make_by(&ecm_forger, sec, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 9, KH_SCR_CSA2, KH_ECM_PRODUCT,
			FZ_CAS_PRODUCT, 0);
	chunk(&s, 4, sec, n);
	n = ecm_make_by(&emm_sg, sec, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, 9, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	chunk(&s, 5, sec, n);
	{
		uint8_t pt[KH_ECM_MAX];
		size_t p = ecm_pt(pt, sizeof pt, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0, FZ_CAS_NOW);
		n = seal_raw(fz_cas_skey, NULL, NULL, KH_ECM_TID_EVEN, FZ_CAS_KEY_ID, FZ_CAS_KEY_VERSION, 9, pt, p, sec);
		chunk(&s, 4, sec, n); /* version 1 */
	}
	ecm_chunk(&s, MODE(6, 0), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, MODE(6, 1), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	ecm_chunk(&s, MODE(6, 2), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0); /* EMM signer's */
	ecm_chunk(&s, MODE(7, 7), KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);               /* forger */
	ecm_chunk(&s, MODE(7, 0), KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	put("fuzz_cas", "ecm-signed", s.b, s.n);

	/* Pay-per-view: offered, bought, watched, bought again (charged once). */
	s.n = 0;
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	ecm_chunk(&s, 5, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	ecm_chunk(&s, 4, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	ecm_chunk(&s, 5, KH_SCR_CSA2, KH_ECM_EVENT, 7, 300);
	ecm_chunk(&s, 5, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_cas", "ppv-buy", s.b, s.n);

	/* Too dear; credit added; bought (plaintext ECMs); one the price of all the credit. */
	s.n = 0;
	ecm_chunk(&s, 6, KH_SCR_IDSA, KH_ECM_EVENT, 8, 5000);
	ecm_chunk(&s, 7, KH_SCR_IDSA, KH_ECM_EVENT, 8, 5000);
	cmd_chunk(&s, 1, C_CREDIT, 10000, 7, 0);
	ecm_chunk(&s, 7, KH_SCR_IDSA, KH_ECM_EVENT, 8, 5000);
	ecm_chunk(&s, 6, KH_SCR_IDSA, KH_ECM_EVENT, 8, 5000);
	ecm_chunk(&s, 7, KH_SCR_CSA2, KH_ECM_EVENT, 9, 6000);
	ecm_chunk(&s, 7, KH_SCR_CSA2, KH_ECM_EVENT, 10, 1);
	put("fuzz_cas", "ppv-credit-low", s.b, s.n);

	/* Enough control words to flush the usage counters to the store. */
	s.n = 0;
	for (i = 0; i < 17; i++)
		ecm_chunk(&s, (uint8_t)(i & 1 ? 0x46 : 6), KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
	put("fuzz_cas", "ecm-usage-flush", s.b, s.n);

	/* CAM AUTH inside the proven channel (mode 4/5 with bit 7), each variant: the CAM again
	 * (accepted), with a ladder key or an unknown tag after it, a decoder proving itself to the
	 * card, labels and UA crossed, a foreign binding, raw bodies; the channel stays proven. */
	{
		static const uint8_t key[3 + 32] = {3, 0, 32, 'k'};
		static const uint8_t unknown[] = {9, 0, 1, 0};
		static const uint8_t raw_body[] = {1, 0, 3, 0x30, 0x01, 0x00, 2, 0, 2, 0xab, 0xcd};
		s.n = 0;
		chunk(&s, MODE(4, 1) | 0x80, NULL, 0);
		chunk(&s, MODE(4, 1) | 0x80, key, sizeof key);
		chunk(&s, MODE(5, 1) | 0x80, unknown, sizeof unknown);
		chunk(&s, MODE(4, 2) | 0x80, NULL, 0);
		chunk(&s, MODE(4, 3) | 0x80, NULL, 0);
		chunk(&s, MODE(4, 4) | 0x80, key + 3, 32);
		chunk(&s, MODE(4, 5) | 0x80, NULL, 0);
		chunk(&s, MODE(4, 6) | 0x80, key + 3, 32);
		chunk(&s, MODE(4, 7) | 0x80, NULL, 0);
		chunk(&s, MODE(4, 0) | 0x80, raw_body, sizeof raw_body);
		ecm_chunk(&s, 6, KH_SCR_CSA2, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
		chunk(&s, MODE(5, 1) | 0x80, NULL, 0);
		ecm_chunk(&s, 4, KH_SCR_CISSA, KH_ECM_PRODUCT, FZ_CAS_PRODUCT, 0);
		put("fuzz_cas", "cam-auth-roles", s.b, s.n);
	}
}

/* ---- fuzz_ladder: answers with control words, clear and sealed under fz_ladder_key ---- */

static size_t cw_clear_tlv(uint8_t *out, size_t cap, uint8_t alg, uint32_t cp)
{
	uint8_t cw[16];
	size_t len = alg == KH_SCR_CSA2 ? 8 : 16;
	struct kh_wr w;

	memset(cw, 0x5c, sizeof cw);
	kh_wr_init(&w, out, cap);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, alg);
	kh_tlv_put(&w, KH_CW_T_EVEN, cw, len);
	kh_tlv_put(&w, KH_CW_T_ODD, cw, len);
	check("clear tlv", kh_tlv_put_u32(&w, KH_CW_T_CP, cp));
	return w.len;
}

static size_t cw_sealed_tlv(uint8_t *out, size_t cap, const uint8_t key[static 32], uint8_t alg, uint32_t cp)
{
	struct kh_cw_answer a;
	struct kh_wr w;

	memset(&a, 0, sizeof a);
	a.alg = alg;
	a.cw_len = alg == KH_SCR_CSA2 ? 8 : 16;
	a.cp = cp;
	for (int i = 0; i < 16; i++) {
		a.even[i] = (uint8_t)(0x10 + i);
		a.odd[i] = (uint8_t)(0x90 + i);
	}
	kh_wr_init(&w, out, cap);
	check("ladder seal", kh_cw_ladder_seal(key, &a, &w));
	return w.len;
}

/* A sealed TLV around any plaintext: what only a holder of the key could make. */
static size_t cw_sealed_raw(uint8_t *out, size_t cap, uint8_t alg, uint32_t cp, const uint8_t *pt, size_t ptlen)
{
	uint8_t aad[sizeof KH_LADDER_LABEL - 1 + 5], sealed[KH_LADDER_SEALED_MAX];
	struct kh_wr w;

	if (KH_NONCE_LEN + ptlen + KH_TAG_LEN > sizeof sealed)
		die("raw ladder", KH_ERR_BUF);
	memcpy(aad, KH_LADDER_LABEL, sizeof KH_LADDER_LABEL - 1);
	aad[sizeof KH_LADDER_LABEL - 1] = alg;
	kh_put_be32(aad + sizeof KH_LADDER_LABEL, cp);
	check("nonce", kh_random(sealed, KH_NONCE_LEN));
	check("raw seal", kh_aead_seal(fz_ladder_key, sealed, aad, sizeof aad, pt, ptlen, sealed + KH_NONCE_LEN));
	kh_wr_init(&w, out, cap);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, alg);
	kh_tlv_put_u32(&w, KH_CW_T_CP, cp);
	check("raw tlv", kh_tlv_put(&w, KH_CW_T_LADDER, sealed, KH_NONCE_LEN + ptlen + KH_TAG_LEN));
	return w.len;
}

static void gen_ladder(void)
{
	static const uint8_t other[32] = "keyhole gen ladder other key v1";
	uint8_t b[256], pt[1 + 32];
	size_t n, m;

	n = cw_sealed_tlv(b, sizeof b, fz_ladder_key, KH_SCR_CSA2, 1);
	put("fuzz_ladder", "sealed-csa2", b, n);
	put_flip("fuzz_ladder", "sealed-csa2-flipped", b, n, -1, 0x01);
	put_flip("fuzz_ladder", "sealed-csa2-cp", b, n, 10, 0x01);
	put_flip("fuzz_ladder", "sealed-csa2-alg", b, n, 3, 0x03);
	put("fuzz_ladder", "sealed-csa2-cut", b, n - 1);
	n = cw_sealed_tlv(b, sizeof b, fz_ladder_key, KH_SCR_CISSA, 0x01020304u);
	put("fuzz_ladder", "sealed-cissa", b, n);
	n = cw_sealed_tlv(b, sizeof b, fz_ladder_key, KH_SCR_IDSA, 0xffffffffu);
	put("fuzz_ladder", "sealed-idsa", b, n);
	/* the same pair twice (a second tag 5), and clear control words beside it */
	memcpy(b + n, b + 11, n - 11);
	put("fuzz_ladder", "sealed-twice", b, n + n - 11);
	m = cw_clear_tlv(b + n, sizeof b - n, KH_SCR_IDSA, 0xffffffffu);
	put("fuzz_ladder", "sealed-and-clear", b, n + m);
	n = cw_sealed_tlv(b, sizeof b, other, KH_SCR_CISSA, 2);
	put("fuzz_ladder", "sealed-other-key", b, n);
	/* authentic, but a plaintext the format does not allow */
	memset(pt, 0x77, sizeof pt);
	pt[0] = 16;
	n = cw_sealed_raw(b, sizeof b, KH_SCR_CSA2, 3, pt, 1 + 32);
	put("fuzz_ladder", "sealed-wrong-cw-len", b, n);
	pt[0] = 8;
	n = cw_sealed_raw(b, sizeof b, KH_SCR_CSA2, 3, pt, 1 + 8);
	put("fuzz_ladder", "sealed-short-pair", b, n);
	n = cw_sealed_raw(b, sizeof b, 9, 3, pt, 1 + 16);
	put("fuzz_ladder", "sealed-unknown-alg", b, n);
	n = cw_clear_tlv(b, sizeof b, KH_SCR_CSA2, 7);
	put("fuzz_ladder", "clear-csa2", b, n);
	n = cw_clear_tlv(b, sizeof b, KH_SCR_CISSA, 7);
	put("fuzz_ladder", "clear-cissa", b, n);
	/* bit 7 of the first byte: the round trip takes alg and CW length as they come */
	put_flip("fuzz_ladder", "clear-cissa-raw-alg", b, n, 0, 0x80);
}

/*
 * fuzz_decoder inputs: the same chunks as fuzz_cas's (u8 mode | u16 length | bytes). Modes: 0 a
 * raw APDU for the decoder module (bit 7: relayed to the CAM), 1 LADDER LOAD, 2 DESCRAMBLE (bit
 * 7 raw length, bit 6 scrambled first, bit 5 odd parity), 3 an ECM down the path (bit 6: loaded),
 * 4 LADDER LOAD of a genuine pair with (position, xor) edits, 5 CAM AUTH from the harness as a
 * decoder (variant << 3), 6 public facts, 7 pair again (bit 6 open mode, bit 7 the CAM first).
 */
static void dec_ecm(struct seq *s, uint8_t mode, uint8_t alg, uint8_t flags, uint8_t fill)
{
	uint8_t c[34];

	c[0] = (uint8_t)(alg - 1);
	c[1] = flags;
	memset(c + 2, fill, 32);
	chunk(s, mode, c, sizeof c);
}

static void dec_apdu(struct seq *s, uint8_t mode, uint8_t ins, uint8_t p1, const uint8_t *data, size_t lc)
{
	uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;

	kh_wr_init(&w, cmd, sizeof cmd);
	check("dec apdu", kh_apdu_build(&w, KH_CLA, ins, p1, 0, data, lc, 0));
	chunk(s, mode, cmd, w.len);
}

static void gen_decoder(void)
{
	static const uint8_t get_info[] = {KH_CLA, KH_INS_GET_INFO, 0, 0};
	static const uint8_t flip_sealed[] = {0, 40, 0x01}, flip_cp[] = {0, 10, 0x80}, flip_alg[] = {0, 3, 0x01},
			     flip_tag[] = {0, 11, 0x02}, same[] = {0};
	uint8_t pk[21 * 188], b[256], inner[64], inner2[64];
	struct kh_wr w;
	struct seq s;
	size_t n;

	ts_packets(pk, 21, 0);

	/* Each algorithm: an ECM down the path and its pair loaded, packets scrambled with it and
	 * descrambled by the module (both parities), clear packets; the pairs again, altered. */
	s.n = 0;
	for (uint8_t alg = 1; alg <= 3; alg++) {
		dec_ecm(&s, 0x43, alg, (uint8_t)(alg & 1), (uint8_t)(0x20 * alg));
		chunk(&s, 0x42, pk, 3 * 188);
		chunk(&s, 0x62, pk + 3 * 188, 2 * 188);
		chunk(&s, 2, pk, 188);
	}
	chunk(&s, 4, same, sizeof same);
	chunk(&s, 0x42, pk, 21 * 188);
	chunk(&s, 4, flip_sealed, sizeof flip_sealed);
	chunk(&s, 4, flip_cp, sizeof flip_cp);
	chunk(&s, 4, flip_alg, sizeof flip_alg);
	chunk(&s, 4, flip_tag, sizeof flip_tag);
	chunk(&s, 0x42, pk, 188);
	n = cw_clear_tlv(b, sizeof b, KH_SCR_CISSA, 9);
	chunk(&s, 1, b, n);
	chunk(&s, 1, b, 5);
	chunk(&s, 0x82, pk, 100);
	dec_ecm(&s, 3, 2, 2, 0x55); /* no right */
	put("fuzz_decoder", "ladder-each-alg", s.b, s.n);

	/* Pairing again: the old pairs no longer open, nothing loaded; open mode (clear CWs, no
	 * ladder); the CAM paired with its card again first; ladder mode back. */
	s.n = 0;
	chunk(&s, 7, NULL, 0);
	chunk(&s, 2, pk, 188);
	chunk(&s, 4, same, sizeof same);
	dec_ecm(&s, 0x43, 1, 0, 0x31);
	chunk(&s, 0x42, pk, 4 * 188);
	chunk(&s, 0x47, NULL, 0);
	dec_ecm(&s, 3, 2, 0, 0x32);
	chunk(&s, 4, same, sizeof same);
	chunk(&s, 2, pk, 188);
	chunk(&s, 0xC7, NULL, 0);
	dec_ecm(&s, 0x43, 3, 1, 0x33);
	chunk(&s, 0x62, pk, 2 * 188);
	chunk(&s, 6, NULL, 0);
	put("fuzz_decoder", "pair-again-open-mode", s.b, s.n);

	/* CAM AUTH from a decoder the harness plays, each variant; then the decoder module's path is
	 * broken until it pairs again. */
	s.n = 0;
	{
		uint8_t key[3 + 32], chk[34];
		key[0] = 3;
		key[1] = 0;
		key[2] = 32;
		memset(key + 3, 0, 32);
		key[4] = 0; /* the ECM's flags byte: a product with a right */
		memset(chk, 0, sizeof chk);
		chunk(&s, 0x0D, NULL, 0);              /* v1: proven, no key: clear CWs */
		chunk(&s, 0x0D, key, sizeof key);      /* v1 + a key after it: sealed under it */
		chunk(&s, 0x15, chk, 32);              /* v2: a key from the chunk */
		chunk(&s, 0x35, chk, 32);              /* v6: the chunk is the key */
		chunk(&s, 0x35, chk, 31);              /* v6: 31 bytes: FORMAT, unproven */
		chunk(&s, 0x1D, NULL, 0);              /* v3: a CAM's certificate */
		chunk(&s, 0x25, NULL, 0);              /* v4: the CAM label */
		chunk(&s, 0x2D, NULL, 0);              /* v5: another UA */
		chunk(&s, 0x3D, NULL, 0);              /* v7: another root */
		chunk(&s, 0x0D, (const uint8_t[]){9, 0, 0}, 3); /* unknown tag */
		chunk(&s, 0x05, (const uint8_t[]){1, 0, 0, 2, 0, 0}, 6); /* v0: raw */
		dec_ecm(&s, 3, 1, 0, 0x41);
		chunk(&s, 7, NULL, 0);
		dec_ecm(&s, 0x43, 2, 0, 0x42);
		chunk(&s, 0x22, pk, 188);
	}
	put("fuzz_decoder", "cam-auth-from-decoder", s.b, s.n);

	/* Raw commands: a CARD START left unrelayed ends the channel; refusals of each command;
	 * a stray CARD RESP and a CARD SEND left unanswered; then relayed: a whole pairing, a command
	 * for the CAM, and one for the card that the CAM is left waiting on. */
	s.n = 0;
	dec_apdu(&s, 0, KH_INS_CARD_START, 2, NULL, 0);
	dec_apdu(&s, 0, KH_INS_DESCRAMBLE, 0, pk, 188);
	dec_apdu(&s, 0, KH_INS_LADDER_LOAD, 1, b, 4);
	dec_apdu(&s, 0, KH_INS_DESCRAMBLE, 0, NULL, 0);
	chunk(&s, 0, get_info, sizeof get_info);
	chunk(&s, 0, (const uint8_t[]){KH_CLA, 0x99, 0, 0}, 4);
	dec_apdu(&s, 0, KH_INS_CARD_RESP, 0, (const uint8_t[]){0x90, 0x00}, 2);
	dec_ecm(&s, 3, 1, 0, 0x51);
	dec_apdu(&s, 0, KH_INS_CARD_START, 1, NULL, 0);
	chunk(&s, 4, same, sizeof same);
	chunk(&s, 2, pk, 188);
	dec_apdu(&s, 0x80, KH_INS_CARD_START, 1, NULL, 0);
	dec_ecm(&s, 0x43, 2, 0, 0x52);
	chunk(&s, 0x42, pk, 188);
	dec_apdu(&s, 0, KH_INS_CARD_SEND, 0, get_info, sizeof get_info);
	dec_ecm(&s, 3, 2, 0, 0x53);
	dec_apdu(&s, 0x80, KH_INS_CARD_START, 1, NULL, 0);
	dec_apdu(&s, 0x80, KH_INS_CARD_SEND, 0, get_info, sizeof get_info);
	dec_ecm(&s, 3, 2, 0, 0x54);
	kh_wr_init(&w, inner, sizeof inner);
	check("inner", kh_apdu_build(&w, KH_CLA, KH_INS_CARD_SEND, 0, 0, get_info, sizeof get_info, 0));
	dec_apdu(&s, 0x80, KH_INS_CARD_SEND, 0, inner, w.len);
	dec_ecm(&s, 3, 2, 0, 0x55);
	kh_wr_init(&w, inner2, sizeof inner2);
	check("inner", kh_apdu_build(&w, KH_CLA, KH_INS_GET_INFO, 0, 0, NULL, 0, 0));
	dec_apdu(&s, 0x80, KH_INS_CARD_SEND, 0, inner2, w.len);
	chunk(&s, 0x87, NULL, 0);
	dec_ecm(&s, 0x43, 3, 0, 0x56);
	chunk(&s, 2, pk, 2 * 188);
	put("fuzz_decoder", "raw-commands", s.b, s.n);
}

/*
 * ---- fuzz_state: sealed-state plaintexts, after a byte that picks the blob version ----
 *
 * Real states: what this build stores for a personalised card, CAM and decoder module (under this
 * run's throwaway authority), and the three modules of tests/data/modules-v1/ (blob version 1,
 * opened with their own root keys), the card also as this build stores it again. Then states
 * made by hand from those parts: a card whose pay-TV section is full to every capacity, and
 * the loader's refusals (sections unknown, optional, newer, repeated, cut; a lifecycle past
 * PERSONALISED; each blob version given the other's list).
 */
#define STATE_HDR_LEN (4 + 1 + 8 + KH_NONCE_LEN) /* "KHMS" | version | counter | nonce */
#define STATE_V1 0x01 /* the selector byte: bit 0 set, blob version 1; clear, version 2 */
#define STATE_V2 0x00
#define STATE_SECTION 0x80 /* module.c's T_SECTION */
#define STATE_CARD_UA 0x00007001u
#define STATE_CAM_UA 0x00007002u
#define STATE_DEC_UA 0x00007003u
/* applet_cas.c's section tags (section 1, version 1) */
enum {
	CS_CREDIT = 0x40, CS_RELOAD, CS_SEQ, CS_GROUP, CS_ALL_KEY, CS_FLAGS, CS_KEY, CS_RIGHT, CS_EVENT, CS_LOG,
	CS_USAGE, CS_BLOCK_SEQ, CS_SIGNER, CS_CLOCK, CS_REVOKED
};

/* The plaintext of a blob sealed under root, with the state key as the module derives it. */
static size_t state_open(const uint8_t root[static 32], const uint8_t *blob, size_t len, uint8_t *pt)
{
	static const char label[] = "keyhole module state v1";
	uint8_t key[32];
	kh_err r;

	if (len < STATE_HDR_LEN + KH_TAG_LEN)
		die("state blob", KH_ERR_TRUNCATED);
	check("state key", kh_hkdf(root, 32, NULL, 0, (const uint8_t *)label, sizeof label - 1, key, sizeof key));
	r = kh_aead_open(key, blob + 13, blob, STATE_HDR_LEN, blob + STATE_HDR_LEN, len - STATE_HDR_LEN, pt);
	kh_wipe(key, sizeof key);
	check("state open", r);
	return len - STATE_HDR_LEN - KH_TAG_LEN;
}

/* A seed: the selector byte, then the plaintext (up to three parts, each may be empty). */
static void put_state(const char *name, uint8_t sel, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
		      const uint8_t *c, size_t nc)
{
	static uint8_t buf[1 + 3 * KH_MODULE_BLOB_MAX];

	buf[0] = sel;
	if (na)
		memcpy(buf + 1, a, na);
	if (nb)
		memcpy(buf + 1 + na, b, nb);
	if (nc)
		memcpy(buf + 1 + na + nb, c, nc);
	put("fuzz_state", name, buf, 1 + na + nb + nc);
}

/* Where a version-2 plaintext's first section starts (the runtime's TLVs come before it). */
static size_t state_split(const uint8_t *pt, size_t n)
{
	struct kh_rd rd;
	struct kh_tlv t;
	size_t at = 0;

	kh_rd_init(&rd, pt, n);
	while (kh_tlv_next(&rd, &t) == 1) {
		if (t.tag == STATE_SECTION)
			return at;
		at = n - rd.n;
	}
	return n;
}

/* A section: T_SECTION | id | version | flags | body. */
static size_t state_section(uint8_t *out, size_t cap, uint8_t id, uint8_t version, uint8_t flags,
			    const uint8_t *body, size_t n)
{
	uint8_t v[KH_MODULE_BLOB_MAX];
	struct kh_wr w;

	if (n + 3 > sizeof v)
		die("state section", KH_ERR_BUF);
	v[0] = id;
	v[1] = version;
	v[2] = flags;
	memcpy(v + 3, body, n);
	kh_wr_init(&w, out, cap);
	check("state section", kh_tlv_put(&w, STATE_SECTION, v, n + 3));
	return w.len;
}

/* The pay-TV section's body with every list at its capacity (module_int.h's KH_CAS_*). */
static size_t cas_full_body(uint8_t *out, size_t cap)
{
	uint8_t v[4 + 4 * 32];
	struct kh_wr w;
	size_t i;

	kh_wr_init(&w, out, cap);
	kh_tlv_put_u32(&w, CS_CREDIT, 123456);
	kh_tlv_put_u32(&w, CS_RELOAD, 77);
	for (i = 0; i < 3; i++)
		kh_put_be32(v + 4 * i, (uint32_t)(10 + i));
	kh_tlv_put(&w, CS_SEQ, v, 12);
	kh_put_be32(v, 0x77);
	memset(v + 4, 0x47, 32);
	kh_tlv_put(&w, CS_GROUP, v, 36);
	memset(v, 0x41, 32);
	kh_tlv_put(&w, CS_ALL_KEY, v, 32);
	v[0] = 1;
	v[1] = 1;
	kh_tlv_put(&w, CS_FLAGS, v, 2);
	for (i = 0; i < 8; i++) { /* KH_CAS_KEYS */
		v[0] = (uint8_t)(1 + i / 2);
		kh_put_be32(v + 1, (uint32_t)(1 + i % 2));
		memset(v + 5, (int)(0x50 + i), 32);
		kh_tlv_put(&w, CS_KEY, v, 37);
	}
	for (i = 0; i < 32; i++) { /* KH_CAS_RIGHTS */
		kh_put_be32(v, (uint32_t)(100 + i));
		kh_put_be64(v + 4, FZ_MODULE_NOW - 1000 * i);
		kh_put_be64(v + 12, FZ_MODULE_NOW + 1000 * i);
		kh_tlv_put(&w, CS_RIGHT, v, 20);
	}
	for (i = 0; i < 64; i++) /* KH_CAS_EVENTS */
		kh_tlv_put_u32(&w, CS_EVENT, (uint32_t)(500 + i));
	for (i = 0; i < 64; i++) { /* KH_CAS_LOG: the old 16-byte entries, then the 20-byte ones */
		kh_put_be32(v, (uint32_t)(500 + i));
		kh_put_be32(v + 4, (uint32_t)i);
		kh_put_be64(v + 8, FZ_MODULE_NOW - i);
		kh_put_be32(v + 16, (uint32_t)(i / 8));
		kh_tlv_put(&w, CS_LOG, v, i < 32 ? 16 : 20);
	}
	kh_put_be32(v, 1000);
	kh_put_be32(v + 4, 900);
	kh_put_be32(v + 8, 100);
	kh_put_be32(v + 12, 40);
	kh_tlv_put(&w, CS_USAGE, v, 16);
	kh_tlv_put_u32(&w, CS_BLOCK_SEQ, 8);
	for (i = 0; i < 4; i++) { /* KH_CAS_SIGNERS */
		v[0] = i < 2 ? KH_ROLE_ECM_SIGNER : KH_ROLE_EMM_SIGNER;
		kh_put_be32(v + 1, (uint32_t)(0xFF000001u + i));
		memset(v + 5, (int)(0x60 + i), 32);
		kh_put_be64(v + 37, FZ_MODULE_NOW + 86400);
		kh_tlv_put(&w, CS_SIGNER, v, 45);
	}
	kh_tlv_put_u64(&w, CS_CLOCK, FZ_MODULE_NOW - 60);
	kh_put_be32(v, 9);
	for (i = 0; i < 32; i++) /* KH_CAS_REVOKED */
		kh_put_be32(v + 4 + 4 * i, (uint32_t)(0x8000 + i));
	check("cas full", kh_tlv_put(&w, CS_REVOKED, v, sizeof v));
	return w.len;
}

/* A module of this build personalised in role at ua: its state's plaintext. */
static size_t state_of_role(struct kh_authority *a, enum kh_role role, uint32_t ua, uint8_t *pt)
{
	struct seq s;

	mod_start(&s);
	mod_personalise(&s, a, role, ua);
	kh_module_wipe(mod);
	return state_open(fz_module_root, last_blob, last_blob_len, pt);
}

/*
 * A module file of tests/data/modules-v1/ (NAME.card, its root key in NAME.key): its plaintext
 * (version 1); with again, that of the state this build stores after EXPORT (a card only).
 */
static size_t state_fixture(const char *name, int again, uint8_t *pt)
{
	static const struct kh_module_env env = {store_ok, fixed_now, NULL};
	static const uint8_t export[] = {0x80, KH_INS_EXPORT, 0x00, 0x00};
	char path[256];
	uint8_t root[32], blob[KH_MODULE_BLOB_MAX], *p;
	size_t n, len;

	snprintf(path, sizeof path, "tests/data/modules-v1/%s.key", name);
	p = slurp(path, &n);
	check("fixture key", kh_hex_decode((const char *)p, n, root, sizeof root));
	snprintf(path, sizeof path, "tests/data/modules-v1/%s.card", name);
	p = slurp(path, &len);
	if (len > sizeof blob)
		die("fixture", KH_ERR_TOO_LARGE);
	memcpy(blob, p, len);
	if (again) {
		check("fixture init", kh_module_init(mod_mem, sizeof mod_mem, root, &env, &mod));
		check("fixture load", kh_module_load(mod, blob, len, 0));
		last_blob_len = 0;
		use_fz();
		rsp_len = kh_module_process(mod, export, sizeof export, rsp, sizeof rsp);
		use_gen();
		if (rsp_len < 2 || rsp[rsp_len - 2] != 0x90 || last_blob_len == 0)
			die("fixture export", KH_ERR_INTERNAL);
		kh_module_wipe(mod);
		memcpy(blob, last_blob, last_blob_len);
		len = last_blob_len;
	}
	n = state_open(root, blob, len, pt);
	kh_wipe(root, sizeof root);
	return n;
}

static void gen_state(struct kh_authority *a)
{
	static uint8_t card[KH_MODULE_BLOB_MAX], cam[KH_MODULE_BLOB_MAX], dec[KH_MODULE_BLOB_MAX];
	static uint8_t v1[KH_MODULE_BLOB_MAX], body[KH_MODULE_BLOB_MAX], sec[KH_MODULE_BLOB_MAX];
	static const uint8_t opt_body[] = {0x01, 0x00, 0x01, 0x2a};
	size_t ncard, ncam, ndec, nv1, rt, nb, ns;
	uint8_t hdr[6];

	/* This build's states, and the lifecycle of the card's set back. */
	ncard = state_of_role(a, KH_ROLE_CARD, STATE_CARD_UA, card);
	put_state("card", STATE_V2, card, ncard, NULL, 0, NULL, 0);
	ncam = state_of_role(a, KH_ROLE_CAM, STATE_CAM_UA, cam);
	put_state("cam", STATE_V2, cam, ncam, NULL, 0, NULL, 0);
	ndec = state_of_role(a, KH_ROLE_DECODER, STATE_DEC_UA, dec);
	put_state("decoder", STATE_V2, dec, ndec, NULL, 0, NULL, 0);
	if (card[0] != 1 || card[2] != 1) /* the lifecycle TLV comes first */
		die("card state", KH_ERR_FORMAT);
	card[3] = 1;
	put_state("card-keyed", STATE_V2, card, ncard, NULL, 0, NULL, 0);
	card[3] = 3;
	put_state("lifecycle-past-personalised", STATE_V2, card, ncard, NULL, 0, NULL, 0);
	card[3] = 2;
	put_state("empty", STATE_V2, NULL, 0, NULL, 0, NULL, 0);

	/* The version-1 files, and the card as this build stores it again. */
	nv1 = state_fixture("card", 0, v1);
	put_state("v1-card", STATE_V1, v1, nv1, NULL, 0, NULL, 0);
	put_state("v1-card-as-v2", STATE_V2, v1, nv1, NULL, 0, NULL, 0);
	nb = state_fixture("cam", 0, body);
	put_state("v1-cam", STATE_V1, body, nb, NULL, 0, NULL, 0);
	nb = state_fixture("dec", 0, body);
	put_state("v1-dec", STATE_V1, body, nb, NULL, 0, NULL, 0);
	nb = state_fixture("card", 1, body);
	put_state("v1-card-stored-again", STATE_V2, body, nb, NULL, 0, NULL, 0);
	put_state("v2-card-as-v1", STATE_V1, body, nb, NULL, 0, NULL, 0);

	/* By hand: the card's runtime fields with sections made here. */
	rt = state_split(card, ncard);
	nb = cas_full_body(body, sizeof body);
	ns = state_section(sec, sizeof sec, 1, 1, 0x02, body, nb);
	put_state("card-full", STATE_V2, card, rt, sec, ns, NULL, 0);
	put_state("card-full-v1", STATE_V1, card, rt, body, nb, NULL, 0);
	put_state("card-full-twice", STATE_V2, card, rt, sec, ns, sec, ns);
	put_state("cam-with-card-section", STATE_V2, cam, state_split(cam, ncam), sec, ns, NULL, 0);
	put_state("sections-before-runtime", STATE_V2, sec, ns, card, rt, NULL, 0);
	ns = state_section(sec, sizeof sec, 1, 2, 0x02, body, nb);
	put_state("card-section-newer", STATE_V2, card, rt, sec, ns, NULL, 0);
	ns = state_section(sec, sizeof sec, 1, 0, 0x02, body, nb);
	put_state("card-section-version-0", STATE_V2, card, rt, sec, ns, NULL, 0);
	ns = state_section(sec, sizeof sec, 1, 1, 0x02, body, nb - 1);
	put_state("card-section-cut", STATE_V2, card, rt, sec, ns, NULL, 0);
	ns = state_section(sec, sizeof sec, 9, 1, 0x01, opt_body, sizeof opt_body);
	put_state("section-unknown-optional", STATE_V2, card, ncard, sec, ns, NULL, 0);
	ns = state_section(sec, sizeof sec, 9, 1, 0x00, opt_body, sizeof opt_body);
	put_state("section-unknown-mandatory", STATE_V2, card, ncard, sec, ns, NULL, 0);
	hdr[0] = STATE_SECTION;
	hdr[1] = 0;
	hdr[2] = 2;
	hdr[3] = 1;
	hdr[4] = 1;
	put_state("section-short", STATE_V2, card, rt, hdr, 5, NULL, 0);
	kh_wipe(card, sizeof card);
	kh_wipe(cam, sizeof cam);
	kh_wipe(dec, sizeof dec);
	kh_wipe(v1, sizeof v1);
	kh_wipe(body, sizeof body);
	kh_wipe(sec, sizeof sec);
}

/* fuzz_dist: a selector byte, then a package header with its file size, a manifest, a hello and
 * an answer in their TLV shapes, a chunk with its place, receipts (fixed bytes and deterministic
 * signatures: no randomness used). */
static kh_err put_pkg(void *ctx, const uint8_t *b, size_t n)
{
	struct kh_wr *w = ctx;
	return kh_wr_bytes(w, b, n);
}

/* fuzz_dist's receipts (selector 5, then the byte naming the bit the harness flips in a receipt
 * that parses): signed by the harness's server key, by another, with every field at 0 and at its
 * maximum; cut, one byte long, a flipped signature, version 2, another magic. */
#define FZ_DIST_SK_BYTE 0x5A /* shared with fuzz/fuzz_dist.c */
static void gen_dist_receipts(uint8_t *b)
{
	struct kh_dist_receipt r = {.account = 42, .program = 5, .version = 6, .price = 1500, .time = 1800000000u,
				    .server = KH_DIST_SERIAL_BASE + 1};
	uint8_t sk[32], other[32], *rc = b + 2;

	memset(sk, FZ_DIST_SK_BYTE, sizeof sk);
	memset(other, FZ_DIST_SK_BYTE + 1, sizeof other);
	memcpy(r.id, "receipt-0000001", 16);
	memset(r.fp, 0xF9, sizeof r.fp);
	b[0] = 5;
	b[1] = 100; /* flips a bit of the signature */
	check("dist receipt", kh_dist_receipt_sign(&r, sk, rc));
	put("fuzz_dist", "receipt", b, 2 + KH_DIST_RECEIPT_BYTES);
	put("fuzz_dist", "receipt-short", b, 1 + KH_DIST_RECEIPT_BYTES);
	b[2 + KH_DIST_RECEIPT_BYTES] = 0;
	put("fuzz_dist", "receipt-long", b, 3 + KH_DIST_RECEIPT_BYTES);
	rc[KH_DIST_RECEIPT_BYTES - 1] ^= 0x01;
	put("fuzz_dist", "receipt-sig-flipped", b, 2 + KH_DIST_RECEIPT_BYTES);
	rc[4] = 2;
	put("fuzz_dist", "receipt-version-2", b, 2 + KH_DIST_RECEIPT_BYTES);
	rc[4] = 1;
	rc[3] = 'D';
	put("fuzz_dist", "receipt-magic", b, 2 + KH_DIST_RECEIPT_BYTES);
	b[1] = 2; /* flips a bit of the magic */
	check("dist receipt", kh_dist_receipt_sign(&r, other, rc));
	put("fuzz_dist", "receipt-other-key", b, 2 + KH_DIST_RECEIPT_BYTES);
	b[1] = 4; /* flips a bit of the version */
	memset(&r, 0, sizeof r);
	check("dist receipt", kh_dist_receipt_sign(&r, sk, rc));
	put("fuzz_dist", "receipt-zero", b, 2 + KH_DIST_RECEIPT_BYTES);
	b[1] = 50; /* flips a bit of fp(P) */
	memset(&r, 0xFF, sizeof r);
	check("dist receipt", kh_dist_receipt_sign(&r, sk, rc));
	put("fuzz_dist", "receipt-max", b, 2 + KH_DIST_RECEIPT_BYTES);
	kh_wipe(sk, sizeof sk);
	kh_wipe(other, sizeof other);
}

static void gen_dist(void)
{
	static const char elf[] = "name: hello\nversion: 3\nkind: elf\nrequires: libc.so.6\n",
			  sh[] = "kind: script\ninterpreter: /bin/sh\nname: s\nversion: 1\nentry: run-s\n";
	static uint8_t pkg[3 * KH_DIST_CHUNK_CT_MAX + KH_DIST_PKG_HDR_MAX], pt[2 * KH_DIST_CHUNK_MAX + 100], b[4096];
	struct kh_dist_prog prog = {.program = 5, .version = 6};
	uint8_t kx[32], v[64];
	struct kh_dist_pkg hdr;
	struct kh_wr w;

	memset(kx, 0x77, sizeof kx);
	memset(pt, 0x2A, sizeof pt);
	kh_wr_init(&w, pkg, sizeof pkg);
	check("dist package", kh_dist_srv_package(kx, &prog, (const uint8_t *)elf, strlen(elf), pt, sizeof pt, put_pkg, &w));
	check("dist parse", kh_dist_pkg_parse(pkg, w.len, w.len, &hdr));
	b[0] = 0;
	kh_put_be32(b + 1, 0);
	kh_put_be32(b + 5, (uint32_t)w.len);
	memcpy(b + 9, pkg, hdr.hdr_len);
	put("fuzz_dist", "package-header", b, 9 + hdr.hdr_len);
	kh_put_be32(b + 5, (uint32_t)w.len + 1);
	put("fuzz_dist", "package-appended", b, 9 + hdr.hdr_len);
	b[0] = 1;
	memcpy(b + 1, elf, strlen(elf));
	put("fuzz_dist", "manifest-elf", b, 1 + strlen(elf));
	memcpy(b + 1, sh, strlen(sh));
	put("fuzz_dist", "manifest-script", b, 1 + strlen(sh));
	/* a hello and an answer: the shapes, with certificate-like bytes */
	memset(v, 0x11, sizeof v);
	b[0] = 2;
	kh_wr_init(&w, b + 1, sizeof b - 1);
	kh_tlv_put(&w, KH_DIST_T_RC, v, 32);
	kh_tlv_put(&w, KH_DIST_T_CERT_SIGN, pkg, 300);
	kh_tlv_put(&w, KH_DIST_T_CERT_PAIR, pkg, 300);
	put("fuzz_dist", "hello", b, 1 + w.len);
	b[0] = 3;
	kh_wr_init(&w, b + 1, sizeof b - 1);
	kh_tlv_put(&w, KH_DIST_T_RESP_SIG, v, 64);
	put("fuzz_dist", "resp", b, 1 + w.len);
	/* the last chunk of the package, at its place */
	b[0] = 4;
	kh_put_be32(b + 1, prog.chunks);
	kh_put_be32(b + 5, prog.chunks - 1);
	memcpy(b + 9, pkg + kh_dist_pkg_chunk_off(&hdr, prog.chunks - 1), kh_dist_pkg_chunk_len(&hdr, prog.chunks - 1));
	put("fuzz_dist", "chunk-last", b, 9 + kh_dist_pkg_chunk_len(&hdr, prog.chunks - 1));
	gen_dist_receipts(b);
}

/* ---- fuzz_keycard: the relay's records under the keys of fuzz_common.h (no randomness) ---- */

enum { KC_HEADER, KC_ENVELOPE, KC_CHUNK, KC_MSG, KC_ACK, KC_ENROLKEY }; /* fuzz_keycard's selectors */
#define KC_DOC_BIG 70000u                                           /* a document of two chunks */
#define KC_DOC_CAP (3u * KH_KC_CHUNK) /* fuzz_keycard's bound on a document (its DOC_CAP) */

static uint8_t kc_buf[2 + KH_KC_HEADER_LEN + KH_KC_CHUNK0_MAX + 2 * (KH_KC_CHUNK_HDR_LEN + KH_KC_CHUNK + KH_TAG_LEN)];

/*
 * A fuzz_keycard seed: the selector, then n bytes of p, with the byte at flip (when >= 0) XORed
 * with 0x01 and one extra byte (when extra >= 0) after them.
 */
static void kc_put(const char *name, uint8_t sel, const uint8_t *p, size_t n, long flip, int extra)
{
	if (n + 2 > sizeof kc_buf || (flip >= 0 && (size_t)flip >= n))
		die("kc_put", KH_ERR_INVAL);
	kc_buf[0] = sel;
	memmove(kc_buf + 1, p, n);
	if (flip >= 0)
		kc_buf[1 + flip] ^= 0x01;
	if (extra >= 0)
		kc_buf[1 + n++] = (uint8_t)extra;
	put("fuzz_keycard", name, kc_buf, 1 + n);
}

/* A message to or from addr under fz_kc_key: len bytes of letters (never 0x00 nor 0xA5). */
static size_t kc_msg(const struct kh_kc_header *h, const char *addr, size_t len, uint8_t *out, size_t cap)
{
	static uint8_t doc[KC_DOC_BIG];
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		doc[i] = (uint8_t)('a' + i % 26);
	check("kc msg", kh_kc_msg_seal(fz_kc_key, h, addr, doc, len, out, cap, &n));
	return n;
}

/* The framed length of the chunk at p (n bytes from there). */
static size_t kc_framed(const uint8_t *p, size_t n)
{
	size_t ctlen;
	int last;

	check("kc frame", kh_kc_chunk_frame(p, n, &ctlen, &last));
	return KH_KC_CHUNK_HDR_LEN + ctlen;
}

/* A chunk seed: the chunk number k, then the chunk (n bytes at p), flipped at flip (>= 0). */
static void kc_put_chunk(const char *name, uint8_t k, const uint8_t *p, size_t n, long flip)
{
	static uint8_t b[1 + KH_KC_CHUNK_HDR_LEN + KH_KC_CHUNK + KH_TAG_LEN];

	if (n + 1 > sizeof b)
		die("kc chunk", KH_ERR_INVAL);
	b[0] = k;
	memcpy(b + 1, p, n);
	kc_put(name, KC_CHUNK, b, n + 1, flip < 0 ? -1 : flip + 1, -1);
}

/* Chunk 0 alone after h, its envelope for addr claiming length bytes, flagged last or not. */
static size_t kc_chunk0_only(const struct kh_kc_header *h, const char *addr, uint64_t length, int last, uint8_t *out)
{
	uint8_t env[KH_KC_ENVELOPE_MAX];
	size_t envlen;

	kh_kc_header_write(h, out);
	check("kc env", kh_kc_envelope_write(addr, length, env, &envlen));
	check("kc chunk0", kh_kc_chunk_seal(fz_kc_key, out, 0, last, env, envlen, out + KH_KC_HEADER_LEN));
	return KH_KC_HEADER_LEN + KH_KC_CHUNK_HDR_LEN + envlen + KH_TAG_LEN;
}

static void gen_keycard_records(void)
{
	static const struct kh_kc_header del = {KH_KC_DELIVERY, FZ_KC_SERIAL, FZ_KC_INDEX};
	static const struct kh_kc_header post = {KH_KC_POST, FZ_KC_SERIAL, 1};
	static const struct kh_kc_header zero = {KH_KC_DELIVERY, FZ_KC_SERIAL, 0};
	uint8_t b[KH_KC_HEADER_LEN], env[KH_KC_ENVELOPE_MAX], a[KH_KC_ACK_LEN], e[KH_KC_ENROLKEY_LEN], xsk[32], xpk[32];
	char longest[KH_KC_ADDR_MAX + 1];
	size_t n;

	kh_kc_header_write(&post, b);
	kc_put("header-post", KC_HEADER, b, sizeof b, -1, -1);
	kh_kc_header_write(&del, b);
	kc_put("header-delivery", KC_HEADER, b, sizeof b, -1, -1);
	kc_put("header-cut", KC_HEADER, b, sizeof b - 1, -1, -1);
	b[5] = 3;
	kc_put("header-bad-dir", KC_HEADER, b, sizeof b, -1, -1);
	kh_kc_header_write(&del, b);
	b[4] = 2;
	kc_put("header-version-2", KC_HEADER, b, sizeof b, -1, -1);
	kh_kc_header_write(&zero, b);
	kc_put("header-index-0", KC_HEADER, b, sizeof b, -1, -1);

	check("env", kh_kc_envelope_write("alice@center", KC_DOC_BIG, env, &n));
	kc_put("envelope", KC_ENVELOPE, env, n, -1, -1);
	kc_put("envelope-cut", KC_ENVELOPE, env, n - 1, -1, -1);
	kc_put("envelope-trailing", KC_ENVELOPE, env, n, -1, 0);
	kc_put("envelope-version-2", KC_ENVELOPE, env, n, 0, -1); /* 1 ^ 1 = 0: another version */
	kc_put("envelope-capital", KC_ENVELOPE, env, n, 2, -1);   /* 'a' ^ 1 = '`': not an address character */
	memset(longest, 'x', KH_KC_ADDR_MAX);
	longest[KH_KC_ADDR_MAX / 2] = '@';
	longest[KH_KC_ADDR_MAX] = '\0';
	check("env longest", kh_kc_envelope_write(longest, UINT64_MAX, env, &n));
	kc_put("envelope-longest", KC_ENVELOPE, env, n, -1, -1);

	check("ack", kh_kc_ack_sign(fz_kc_center_sk, FZ_KC_CENTER, FZ_KC_SERIAL, 3, a));
	kc_put("ack", KC_ACK, a, sizeof a, -1, -1);
	kc_put("ack-flipped", KC_ACK, a, sizeof a, 24, -1); /* the index */
	kc_put("ack-cut", KC_ACK, a, sizeof a - 1, -1, -1);
	kc_put("ack-trailing", KC_ACK, a, sizeof a, -1, 0);
	kc_put("ack-version-0", KC_ACK, a, sizeof a, 4, -1);
	check("ack other", kh_kc_ack_sign(fz_kc_other_sk, FZ_KC_CENTER, FZ_KC_SERIAL, 3, a));
	kc_put("ack-other-center", KC_ACK, a, sizeof a, -1, -1);
	check("ack max", kh_kc_ack_sign(fz_kc_center_sk, UINT32_MAX, 0, UINT64_MAX, a));
	kc_put("ack-max", KC_ACK, a, sizeof a, -1, -1);

	check("enrol keypair", kh_kc_enrol_keypair(fz_kc_center_sk, xsk, xpk));
	check("enrolkey", kh_kc_enrolkey_sign(fz_kc_center_sk, FZ_KC_CENTER, xpk, e));
	kc_put("enrolkey", KC_ENROLKEY, e, sizeof e, -1, -1);
	kc_put("enrolkey-flipped", KC_ENROLKEY, e, sizeof e, 12, -1); /* the key */
	kc_put("enrolkey-cut", KC_ENROLKEY, e, sizeof e - 1, -1, -1);
	kc_put("enrolkey-trailing", KC_ENROLKEY, e, sizeof e, -1, 0);
	check("enrolkey other", kh_kc_enrolkey_sign(fz_kc_other_sk, FZ_KC_CENTER, xpk, e));
	kc_put("enrolkey-other-center", KC_ENROLKEY, e, sizeof e, -1, -1);
	kh_wipe(xsk, sizeof xsk);
}

static void gen_keycard(void)
{
	static const struct kh_kc_header del = {KH_KC_DELIVERY, FZ_KC_SERIAL, FZ_KC_INDEX};
	static const struct kh_kc_header post = {KH_KC_POST, FZ_KC_SERIAL, 1};
	static uint8_t m[sizeof kc_buf];
	size_t n, c0;

	gen_keycard_records();
	/* messages of 0 and 1 document bytes: whole, cut, flipped, with a trailing byte */
	n = kc_msg(&del, "alice@center", 0, m, sizeof m);
	kc_put("msg-0", KC_MSG, m, n, -1, -1);
	kc_put("msg-0-cut", KC_MSG, m, n - 1, -1, -1);
	kc_put("msg-0-flipped", KC_MSG, m, n, KH_KC_HEADER_LEN + KH_KC_CHUNK_HDR_LEN + 2, -1);
	kc_put("msg-0-trailing", KC_MSG, m, n, -1, 0);
	c0 = kc_framed(m + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN);
	kc_put_chunk("chunk0-last", 0, m + KH_KC_HEADER_LEN, c0, -1);
	n = kc_msg(&del, "alice@center", 1, m, sizeof m);
	kc_put("msg-1", KC_MSG, m, n, -1, -1);
	kc_put("msg-1-cut", KC_MSG, m, n - 1, -1, -1);
	kc_put("msg-1-flipped", KC_MSG, m, n, (long)n - 1, -1); /* the last chunk's tag */
	kc_put("msg-1-trailing", KC_MSG, m, n, -1, 0);
	kc_put("msg-1-header-flipped", KC_MSG, m, n, 10, -1); /* the serial: every chunk's AAD */
	c0 = kc_framed(m + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN);
	kc_put_chunk("chunk0", 0, m + KH_KC_HEADER_LEN, c0, -1);
	kc_put_chunk("chunk1", 1, m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0, -1);
	kc_put_chunk("chunk1-as-2", 2, m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0, -1);
	kc_put_chunk("chunk1-flag-2", 1, m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0, 0);
	m[KH_KC_HEADER_LEN + c0 + 4] = KH_TAG_LEN - 1;
	kc_put_chunk("chunk1-len-15", 1, m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0, -1);
	/* two chunks of document: whole, and its last chunk flipped (opened chunk 1 then wiped) */
	n = kc_msg(&del, "alice@center", KC_DOC_BIG, m, sizeof m);
	kc_put("msg-70000", KC_MSG, m, n, -1, -1);
	kc_put("msg-70000-flipped", KC_MSG, m, n, (long)n - 20, -1);
	c0 = kc_framed(m + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN);
	c0 += kc_framed(m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0);
	kc_put_chunk("chunk2", 2, m + KH_KC_HEADER_LEN + c0, n - KH_KC_HEADER_LEN - c0, -1);
	/* a post; envelopes at odds with their chunks or past the reader's bound */
	n = kc_msg(&post, "bob.smith+kc@center.example", 100, m, sizeof m);
	kc_put("msg-post-100", KC_MSG, m, n, -1, -1);
	n = kc_chunk0_only(&del, "alice@center", 0, 0, m);
	kc_put("msg-0-not-last", KC_MSG, m, n, -1, -1);
	n = kc_chunk0_only(&del, "alice@center", 1, 1, m);
	kc_put("msg-1-last-early", KC_MSG, m, n, -1, -1);
	n = kc_chunk0_only(&del, "alice@center", KC_DOC_CAP + 1, 0, m);
	kc_put("msg-past-cap", KC_MSG, m, n, -1, -1);
}

/*
 * A key card (fuzz_module) with its key center, which the generator plays with fz_kc_center_sk
 * (certified by the authority as a key center): blank, it refuses to send; KC ENROL with the
 * center's certificate and enrolment key (the generator opens the sealed seed with the center's
 * enrolment key and builds both chains), again (the same answer), KC SEND three times (each key
 * the center's), KC ACK of post 3, KC OPEN of delivery 1 (sealed under the receive chain's key),
 * again (the same key), a delivery 2 with chunk 0 flipped (refused), KC HELLO, KC STATUS. The
 * enrolled card's sealed states, before and after the open, are fuzz_state's seeds.
 */
#define KC_CARD_UA 0x0000c001u

/* The card's answer as a TLV list holding (at least) the tags of need. */
static void kc_answer(struct kh_tlv t[KH_KC_T_MAX + 1], uint32_t need)
{
	memset(t, 0, (KH_KC_T_MAX + 1) * sizeof t[0]);
	check("kc answer", kh_tlv_take(rsp, rsp_len, t, KH_KC_T_MAX, need));
}

static void kc_enrol(struct seq *s, struct kh_authority *a, uint8_t sealed[static KH_KC_SEALED_SEED_LEN])
{
	uint8_t pk[32], xsk[32], xpk[32], ek[KH_KC_ENROLKEY_LEN], der[KH_CERT_MAX], buf[KH_APDU_MAX_DATA];
	struct kh_tlv t[KH_KC_T_MAX + 1];
	struct kh_wr w;
	size_t derlen;

	check("center pk", kh_ed25519_public(fz_kc_center_sk, pk));
	check("center cert", kh_authority_issue(a, KH_ROLE_KEYCENTER, FZ_KC_CENTER, KH_CERT_KEY_ED25519, pk, "sign",
						der, sizeof der, &derlen));
	check("enrol keypair", kh_kc_enrol_keypair(fz_kc_center_sk, xsk, xpk));
	check("enrolkey", kh_kc_enrolkey_sign(fz_kc_center_sk, FZ_KC_CENTER, xpk, ek));
	kh_wipe(xsk, sizeof xsk);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_KC_T_CERT, der, derlen);
	check("enrol tlv", kh_tlv_put(&w, KH_KC_T_ENROLKEY, ek, sizeof ek));
	/* the card's own certificate is no key center's */
	mod_apdu(s, KH_INS_GET_CERT, 1, NULL, 0, 256, KH_SW_OK);
	{
		uint8_t bad[KH_APDU_MAX_DATA];
		struct kh_wr wb;
		kh_wr_init(&wb, bad, sizeof bad);
		kh_tlv_put(&wb, KH_KC_T_CERT, rsp, rsp_len);
		check("bad enrol tlv", kh_tlv_put(&wb, KH_KC_T_ENROLKEY, ek, sizeof ek));
		mod_apdu(s, KH_INS_KC_ENROL, 0, bad, wb.len, 0, kh_err_to_sw(KH_ERR_CERT_ROLE));
	}
	mod_apdu(s, KH_INS_KC_ENROL, 0, buf, w.len, 0, KH_SW_OK);
	kc_answer(t, 1u << KH_KC_T_SERIAL | 1u << KH_KC_T_SEALED);
	if (t[KH_KC_T_SEALED].len != KH_KC_SEALED_SEED_LEN)
		die("sealed seed", KH_ERR_FORMAT);
	memcpy(sealed, t[KH_KC_T_SEALED].v, KH_KC_SEALED_SEED_LEN);
	/* asked again by the same center: the same sealed seed */
	mod_apdu(s, KH_INS_KC_ENROL, 0, buf, w.len, 0, KH_SW_OK);
	kc_answer(t, 1u << KH_KC_T_SERIAL | 1u << KH_KC_T_SEALED);
	if (memcmp(sealed, t[KH_KC_T_SEALED].v, KH_KC_SEALED_SEED_LEN) != 0)
		die("sealed seed again", KH_ERR_INTERNAL);
}

/* The center's chains of the card, from its sealed seed. */
static void kc_chains(const uint8_t sealed[static KH_KC_SEALED_SEED_LEN], struct kh_keyseq *send,
		      struct kh_keyseq *recv)
{
	uint8_t xsk[32], xpk[32], info[KH_KC_ENROL_INFO_LEN], seed[KH_KEYSEQ_LEN];

	check("enrol keypair", kh_kc_enrol_keypair(fz_kc_center_sk, xsk, xpk));
	kh_kc_enrol_info(FZ_KC_CENTER, KC_CARD_UA, info);
	check("seed open", kh_hpke_open_base(xsk, sealed, info, sizeof info, NULL, 0, sealed + KH_HPKE_ENC_LEN,
					     KH_KEYSEQ_LEN + KH_TAG_LEN, seed));
	check("send chain", kh_keyseq_init(seed, KC_CARD_UA, KH_KEYSEQ_SEND, send));
	check("recv chain", kh_keyseq_init(seed, KC_CARD_UA, KH_KEYSEQ_RECV, recv));
	kh_wipe(seed, sizeof seed);
	kh_wipe(xsk, sizeof xsk);
}

/* KC OPEN of delivery j (its chunk 0 flipped when flip): the key the card gives is the center's. */
static void kc_open(struct seq *s, const struct kh_keyseq *recv, uint64_t j, int flip, uint16_t want_sw)
{
	static const uint8_t text[] = "a delivery to the key card";
	const struct kh_kc_header h = {KH_KC_DELIVERY, KC_CARD_UA, j};
	uint8_t key[32], msg[512], buf[KH_APDU_MAX_DATA];
	struct kh_tlv t[KH_KC_T_MAX + 1];
	struct kh_wr w;
	size_t n, c0;

	check("recv key", kh_keyseq_key(recv, j, KH_KEYSEQ_WINDOW, key));
	check("delivery", kh_kc_msg_seal(key, &h, "alice@center", text, sizeof text, msg, sizeof msg, &n));
	c0 = kc_framed(msg + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN);
	if (flip)
		msg[KH_KC_HEADER_LEN + KH_KC_CHUNK_HDR_LEN + 3] ^= 0x01;
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, KH_KC_T_HEADER, msg, KH_KC_HEADER_LEN);
	check("open tlv", kh_tlv_put(&w, KH_KC_T_CHUNK, msg + KH_KC_HEADER_LEN, c0));
	mod_apdu(s, KH_INS_KC_OPEN, 0, buf, w.len, 0, want_sw);
	if (want_sw == KH_SW_OK) {
		kc_answer(t, 1u << KH_KC_T_INDEX | 1u << KH_KC_T_KEY);
		if (t[KH_KC_T_KEY].len != 32 || memcmp(t[KH_KC_T_KEY].v, key, 32) != 0)
			die("delivery key", KH_ERR_INTERNAL);
	}
	kh_wipe(key, sizeof key);
}

/* The key card's section 3 in a state's plaintext (pt, n bytes): where its TLV starts and ends,
 * and where its body (after id, version and flags) starts. */
struct kc_sec {
	size_t start, body, end;
};

static struct kc_sec kc_section(const uint8_t *pt, size_t n)
{
	struct kc_sec r;
	struct kh_rd rd;
	struct kh_tlv t;

	kh_rd_init(&rd, pt, n);
	for (r.start = 0; kh_tlv_next(&rd, &t) == 1; r.start = n - rd.n)
		if (t.tag == STATE_SECTION && t.len >= 3 && t.v[0] == 3) {
			r.body = (size_t)(t.v + 3 - pt);
			r.end = n - rd.n;
			return r;
		}
	die("keycard section", KH_ERR_FORMAT);
	return r;
}

/* fuzz_state's seeds of the enrolled key card: as stored, and section 3 broken by hand. */
static void kc_states(const uint8_t *before, size_t nb, const uint8_t *after, size_t na)
{
	static uint8_t pt[KH_MODULE_BLOB_MAX];
	struct kc_sec sec = kc_section(after, na);
	struct kh_rd rd;
	struct kh_tlv t;

	put_state("keycard-enrolled", STATE_V2, before, nb, NULL, 0, NULL, 0);
	put_state("keycard-opened", STATE_V2, after, na, NULL, 0, NULL, 0);
	/* the send chain at position 0, which no chain ever is */
	memcpy(pt, after, na);
	kh_rd_init(&rd, pt + sec.body, sec.end - sec.body);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == 3 && t.len == 8 + KH_KEYSEQ_LEN)
			memset(pt + (t.v - pt), 0, 8);
	put_state("keycard-send-pos-0", STATE_V2, pt, na, NULL, 0, NULL, 0);
	/* the section without its last byte, and the section twice */
	put_state("keycard-section-cut", STATE_V2, after, sec.end - 1, NULL, 0, NULL, 0);
	put_state("keycard-section-twice", STATE_V2, after, na, after + sec.start, sec.end - sec.start, NULL, 0);
	/* the section without the runtime's fields before it: read before the card's serial */
	put_state("keycard-section-first", STATE_V2, after + sec.start, sec.end - sec.start, after, sec.start,
		  after + sec.end, na - sec.end);
}

static void gen_module_keycard(struct kh_authority *a)
{
	static uint8_t before[KH_MODULE_BLOB_MAX], after[KH_MODULE_BLOB_MAX];
	uint8_t sealed[KH_KC_SEALED_SEED_LEN], key[32], ackr[KH_KC_ACK_LEN], buf[KH_APDU_MAX_DATA];
	struct kh_tlv t[KH_KC_T_MAX + 1];
	struct kh_keyseq send, recv;
	struct kh_wr w;
	struct seq s;
	size_t nb, na;

	mod_start(&s);
	mod_personalise(&s, a, KH_ROLE_KEYCARD, KC_CARD_UA);
	mod_apdu(&s, KH_INS_KC_STATUS, 0, NULL, 0, 0, KH_SW_OK);
	mod_apdu(&s, KH_INS_KC_SEND, 0, NULL, 0, 0, kh_err_to_sw(KH_ERR_NOT_ENROLLED));
	kc_enrol(&s, a, sealed);
	kc_chains(sealed, &send, &recv);
	for (uint64_t i = 1; i <= 3; i++) {
		mod_apdu(&s, KH_INS_KC_SEND, 0, NULL, 0, 0, KH_SW_OK);
		kc_answer(t, 1u << KH_KC_T_INDEX | 1u << KH_KC_T_KEY);
		check("send key", kh_keyseq_key(&send, i, KH_KEYSEQ_WINDOW, key));
		if (t[KH_KC_T_INDEX].len != 8 || kh_get_be64(t[KH_KC_T_INDEX].v) != i || t[KH_KC_T_KEY].len != 32 ||
		    memcmp(t[KH_KC_T_KEY].v, key, 32) != 0)
			die("send key", KH_ERR_INTERNAL);
	}
	/* an ack of a post never keyed, then the center's ack of post 3 */
	check("ack", kh_kc_ack_sign(fz_kc_center_sk, FZ_KC_CENTER, KC_CARD_UA, 4, ackr));
	kh_wr_init(&w, buf, sizeof buf);
	check("ack tlv", kh_tlv_put(&w, KH_KC_T_ACK, ackr, sizeof ackr));
	mod_apdu(&s, KH_INS_KC_ACK, 0, buf, w.len, 0, kh_err_to_sw(KH_ERR_KEY_AHEAD));
	check("ack", kh_kc_ack_sign(fz_kc_center_sk, FZ_KC_CENTER, KC_CARD_UA, 3, ackr));
	kh_wr_init(&w, buf, sizeof buf);
	check("ack tlv", kh_tlv_put(&w, KH_KC_T_ACK, ackr, sizeof ackr));
	mod_apdu(&s, KH_INS_KC_ACK, 0, buf, w.len, 0, KH_SW_OK);
	nb = state_open(fz_module_root, last_blob, last_blob_len, before);
	kc_open(&s, &recv, 1, 0, KH_SW_OK);
	na = state_open(fz_module_root, last_blob, last_blob_len, after);
	kc_open(&s, &recv, 1, 0, KH_SW_OK);
	kc_open(&s, &recv, 2, 1, kh_err_to_sw(KH_ERR_AUTH));
	memset(buf, 0x4e, KH_KC_NONCE_LEN);
	kh_wr_init(&w, buf + KH_KC_NONCE_LEN, sizeof buf - KH_KC_NONCE_LEN);
	check("hello tlv", kh_tlv_put(&w, KH_KC_T_NONCE, buf, KH_KC_NONCE_LEN));
	mod_apdu(&s, KH_INS_KC_HELLO, 0, buf + KH_KC_NONCE_LEN, w.len, 0, KH_SW_OK);
	mod_apdu(&s, KH_INS_KC_STATUS, 0, NULL, 0, 0, KH_SW_OK);
	put("fuzz_module", "keycard-enrolled", s.b, s.n);
	kh_module_wipe(mod);
	kc_states(before, nb, after, na);
	kh_wipe(before, sizeof before);
	kh_wipe(after, sizeof after);
	kh_wipe(&send, sizeof send);
	kh_wipe(&recv, sizeof recv);
	kh_wipe(key, sizeof key);
}

int main(int argc, char **argv)
{
	char tmpl[] = "/tmp/kh-gen-corpus-XXXXXX";
	char dir[600], cmd[700];
	struct kh_authority *a;
	uint8_t root[32];
	size_t i;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (mkdtemp(tmpl) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(dir, sizeof dir, "%s/authority", tmpl);
	check("authority init", kh_authority_init(dir, "Fuzz Operator"));
	check("authority open", kh_authority_open(dir, &a));
	kh_authority_root_pk(a, root);
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus", 18);
	use_gen();

	gen_apdu();
	gen_tlv(root);
	gen_pair_open();
	gen_pair_answer();
	gen_sealed();
	gen_module(a, root);
	gen_module_decoder(a);
	gen_cert(a, dir, root);
	/* Pay-TV seeds: their own stream, so they come out the same each run. */
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus cas", 22);
	signers_init();
	gen_ecm();
	gen_emm();
	gen_cas();
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus ladder", 25);
	gen_ladder();
	gen_decoder();
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus usage", 24);
	gen_usage();
	gen_dist();
	gen_state(a); /* its modules issue certificates with the generator's stream */
	/* after every other seed, on a stream of its own: adding it moved no other seed */
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus buyer", 24);
	gen_module_buyer(a, root);
	/* the key center relay: fuzz_keycard's seeds use no randomness; the key card's, a stream of its own */
	gen_keycard();
	kh_rng_det_init(&rng_gen, (const uint8_t *)"keyhole gen corpus keycard", 26);
	gen_module_keycard(a);

	printf("ROOT_PK for fuzz/fuzz_cert.c:\n");
	for (i = 0; i < 32; i++)
		printf("0x%02x,%s", root[i], i % 16 == 15 ? "\n" : " ");
	kh_authority_free(a);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
	if (system(cmd) != 0)
		fprintf(stderr, "gen_corpus: could not remove %s\n", tmpl);
	return 0;
}
