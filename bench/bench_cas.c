/*
 * bench_cas: the ECM-to-control-word path of issue 3 (decoder -> CAM -> card and back) and the
 * EMM apply rate, next to the raw AES-256-GCM work the path is made of, measured in the same run
 * on the same bytes (report ratios, never a bare time).
 *
 *   ecm_cw_inproc       kh_host_cas_ecm through in-process modules held in memory (a store of
 *                       the card's state is a memcpy): what the code costs
 *   ecm_cw_inproc_file  the same through modules opened from their files (kh_softmod_open): the
 *                       card stores its sealed state every KH_CAS_USAGE_FLUSH (16) ECMs, and each
 *                       store writes the card file and the counter file with fsync
 *   ecm_cw_unix         the same through one kh_serve_unix daemon per module (forked, each opens
 *                       its own module from its files, as bench_pair does)
 *   aead_ref            the reference: raw EVP AES-256-GCM, contexts keyed once, on buffers of
 *                       the sizes the path uses: the ECM open with the service key and the raw
 *                       EVP Ed25519 verify of the ECM's signature (the card's check), then seal +
 *                       open of command and of response for one round trip per hop (decoder<->CAM,
 *                       CAM<->card): 1 + 2 x 4 = 9 calls
 *   aead_path           the same, but with every sealed round trip the path really makes: the
 *                       decoder<->CAM hop is crossed twice (CARD SEND, then CARD RESP carrying
 *                       the card's answer back), so 1 + 3 x 4 = 13 calls
 *   emm_inproc          kh_host_cas_emm straight to an in-memory card (each EMM is applied and
 *                       the card's state sealed and "stored" in memory)
 *   emm_inproc_file     the same to a card opened from its files: every EMM is a durable store
 *   emm_unix            the same to the card's socket daemon (durable too)
 *
 * Each round runs E ECMs (-e, default 2000) per ECM benchmark and M EMMs (-m, default 200) per
 * EMM benchmark, every operation timed alone. The E ECMs are distinct (each its own crypto period
 * number, control words and nonce), sealed once before the run and passed in the same order on
 * every path; the card opens each of them every time (it keeps no ECM cache). EMMs are sealed
 * before each round (untimed) with the card's next sequence numbers. The rounds of all benchmarks
 * are interleaved (round 1 of each, then round 2 of each, ...), R rounds (-r, default 7).
 *
 * Output, one line per result (medians over rounds of the per-round figure):
 *   bench=<name> unit=us p50=<x> p99=<x> max=<x> rounds=<R>         per-operation percentiles
 *   bench=<name> unit=ops/s median=<x> min=<x> max=<x> rounds=<R>    operations / wall time
 *   bench=<name> unit=us median=<x> min=<x> max=<x> rounds=<R>       mean time per operation
 *   ratio=<name> value=<x> min=<x> max=<x> rounds=<R> note="..."
 * then a human summary, every line starting with '#'. Nothing here asserts on time; the exit
 * status is non-zero only when an operation fails.
 */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/scramble.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"

#include "util.h"

#define PRODUCT 7
#define SEALED_OVERHEAD (5 + 16) /* u8 ver | u32 ctr | ... | tag */
#define MAX_XFER 8

/* ---- benchmarks ---- */

enum {
	B_ECM_IN,
	B_ECM_FILE,
	B_ECM_UNIX,
	B_AEAD_REF,
	B_AEAD_PATH,
	B_EMM_IN,
	B_EMM_FILE,
	B_EMM_UNIX,
	NB
};

struct world;
struct bench {
	const char *name;
	const char *what;
	int is_ecm, is_unix;
	struct world *wd;
	double p50[BENCH_MAX_ROUNDS], p99[BENCH_MAX_ROUNDS], max[BENCH_MAX_ROUNDS], mean[BENCH_MAX_ROUNDS];
	double rate[BENCH_MAX_ROUNDS];
	double *all; /* every sample of every round, microseconds, for the pooled percentiles */
	size_t nall;
	int ran;
};

/* A decoder with its CAM and card: modules, transports, the CAS session, the card's EMM state.
 * The decoder module is in memory in every world (it sits in the decoder itself). */
struct world {
	const char *label;
	struct kh_softmod *dec_sm, *cam_sm, *card_sm;
	struct kh_transport dec, cam, card;
	pid_t cam_pid, card_pid;
	int have_t;
	struct kh_host_cas cas;
	uint32_t card_ua, emm_seq, reload;
	uint8_t kp[32];
};

static struct {
	char dir[64];
	char auth_dir[128];
	uint8_t root_pk[32];
	uint8_t skey[32];
	struct kh_cas_signer esg;         /* the operator's ECM signer */
	uint8_t sg_der[2][KH_CERT_MAX];   /* ECM and EMM signer certificates, for SET SIGNER */
	size_t sg_len[2];
	uint64_t t0;
	int ecms, emms;
	uint8_t (*ecm)[KH_ECM_MAX];
	size_t *ecm_len;
	uint8_t (*emm)[KH_EMM_MAX];
	size_t *emm_len;
	double *lat;
	struct world mem, file, unx;
	int have_unix;
	/* the sizes of the sealed bodies on the path, from one recorded ECM */
	size_t nxfer, cmd_body[MAX_XFER], resp_body[MAX_XFER];
	size_t ecm_ct; /* ciphertext bytes of an ECM (the TLV) */
	/* the reference */
	EVP_CIPHER *gcm;
	EVP_CIPHER_CTX *ecm_dec, *enc_c, *dec_c, *enc_r, *dec_r;
	EVP_PKEY *esg_pk; /* the ECM signer's public key, for the raw verify */
	EVP_MD_CTX *sig_ctx;
	uint8_t ckey[32], rkey[32];
	uint32_t ctr;
	int ref_ecm_i;
} W = {
	.mem = {.label = "memory", .cam_pid = -1, .card_pid = -1},
	.file = {.label = "files", .cam_pid = -1, .card_pid = -1},
	.unx = {.label = "unix", .cam_pid = -1, .card_pid = -1},
};

static struct bench B[NB] = {
	[B_ECM_IN] = {"ecm_cw_inproc", "ECM -> CW decoder->CAM->card, in-process, modules in memory", 1, 0, &W.mem, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_FILE] = {"ecm_cw_inproc_file", "the same, modules opened from files (a durable store every 16 ECMs)", 1, 0, &W.file, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_UNIX] = {"ecm_cw_unix", "the same through two socket daemons (files, durable)", 1, 1, &W.unx, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_AEAD_REF] = {"aead_ref", "raw: ECM open + Ed25519 verify + AES-256-GCM 4 calls per hop x 2 hops", 1, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_AEAD_PATH] = {"aead_path", "raw: ECM open + Ed25519 verify + 4 GCM calls per sealed round trip", 1, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_IN] = {"emm_inproc", "EMM host->card, in-memory card (store = memcpy)", 0, 0, &W.mem, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_FILE] = {"emm_inproc_file", "EMM host->card, card from files (durable store, fsync)", 0, 0, &W.file, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_UNIX] = {"emm_unix", "EMM host->card daemon (durable store, fsync)", 0, 1, &W.unx, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
};

static const char *only;

static int name_matches(int b)
{
	return !only || strstr(B[b].name, only) != NULL;
}

static double now_us(void)
{
	return bench_now_s() * 1e6;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *s, size_t n, size_t p)
{
	size_t k = (p * n + 99) / 100; /* ceil(p% of n) */
	return s[k ? k - 1 : 0];
}

/* ---- recording transport: learn the sizes of the sealed frames of one ECM ---- */

struct rec {
	struct kh_transport *inner;
	size_t n, cmd[MAX_XFER], resp[MAX_XFER];
	int bad;
};

static kh_err rec_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct rec *r = ctx;
	struct kh_apdu a;
	kh_err e = kh_transport_xfer(r->inner, cmd, len, resp, cap, rlen);

	if (e != KH_OK)
		return e;
	if (r->n >= MAX_XFER || kh_apdu_parse(cmd, len, &a) != KH_OK || a.ins != KH_INS_SEALED ||
	    a.lc < SEALED_OVERHEAD || *rlen < SEALED_OVERHEAD + 2) {
		r->bad = 1;
		return KH_OK;
	}
	r->cmd[r->n] = a.lc - SEALED_OVERHEAD;
	r->resp[r->n] = *rlen - 2 - SEALED_OVERHEAD;
	r->n++;
	return KH_OK;
}

static void rec_close(void *ctx)
{
	(void)ctx;
}

/* ---- the reference: raw EVP AES-256-GCM, contexts keyed once ---- */

static int evp_seal(EVP_CIPHER_CTX *c, const uint8_t nonce[12], const uint8_t *aad, int aadlen, const uint8_t *pt,
		    int n, uint8_t *ct)
{
	int l;
	return EVP_EncryptInit_ex2(c, NULL, NULL, nonce, NULL) == 1 && EVP_EncryptUpdate(c, NULL, &l, aad, aadlen) == 1 &&
	       EVP_EncryptUpdate(c, ct, &l, pt, n) == 1 && EVP_EncryptFinal_ex(c, ct + n, &l) == 1 &&
	       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, ct + n) == 1;
}

static int evp_open(EVP_CIPHER_CTX *c, const uint8_t nonce[12], const uint8_t *aad, int aadlen, const uint8_t *ct,
		    int n, uint8_t *pt)
{
	int l;
	return EVP_DecryptInit_ex2(c, NULL, NULL, nonce, NULL) == 1 &&
	       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(uintptr_t)(ct + n)) == 1 &&
	       EVP_DecryptUpdate(c, NULL, &l, aad, aadlen) == 1 && EVP_DecryptUpdate(c, pt, &l, ct, n) == 1 &&
	       EVP_DecryptFinal_ex(c, pt + n, &l) == 1;
}

/* One sealed round trip: seal + open of a command body and of a response body, 5-byte aad. */
static int chan_rt(size_t cmd, size_t resp)
{
	uint8_t nonce[12] = {0}, hdr[5], body[KH_APDU_MAX_RESP], ct[KH_APDU_MAX_RESP + 16], pt[KH_APDU_MAX_RESP];

	W.ctr++;
	kh_put_be32(nonce + 8, W.ctr);
	hdr[0] = 1;
	kh_put_be32(hdr + 1, W.ctr);
	memset(body, 0x5A, cmd > resp ? cmd : resp);
	return evp_seal(W.enc_c, nonce, hdr, 5, body, (int)cmd, ct) && evp_open(W.dec_c, nonce, hdr, 5, ct, (int)cmd, pt) &&
	       evp_seal(W.enc_r, nonce, hdr, 5, body, (int)resp, ct) &&
	       evp_open(W.dec_r, nonce, hdr, 5, ct, (int)resp, pt);
}

/*
 * The ECM open on the real ECM bytes, with the service key (context keyed once), then the raw
 * Ed25519 verify of its signature (EVP, the signer's key parsed once) over the same message the
 * card checks: "keyhole ecm sig v2" | the section up to the signature.
 */
static int ecm_open_raw(const uint8_t *sec, size_t n)
{
	static const char label[] = "keyhole ecm sig v2";
	uint8_t pt[KH_ECM_MAX], msg[sizeof label + KH_ECM_MAX];
	size_t m = n - KH_CAS_SIG_LEN;
	int ok = evp_open(W.ecm_dec, sec + KH_ECM_HDR_LEN - KH_CAS_NONCE_LEN, sec, KH_ECM_HDR_LEN, sec + KH_ECM_HDR_LEN,
			  (int)(n - KH_ECM_HDR_LEN - KH_CAS_TAG_LEN - KH_CAS_TRAILER_LEN), pt);
	OPENSSL_cleanse(pt, sizeof pt);
	memcpy(msg, label, sizeof label - 1);
	memcpy(msg + sizeof label - 1, sec, m);
	return ok && EVP_DigestVerifyInit(W.sig_ctx, NULL, NULL, NULL, W.esg_pk) == 1 &&
	       EVP_DigestVerify(W.sig_ctx, sec + m, KH_CAS_SIG_LEN, msg, sizeof label - 1 + m) == 1;
}

/* Reference for ECM i: hop 1 = the first decoder<->CAM frame out, the last one back. */
static kh_err op_aead_ref(int i)
{
	size_t last = W.nxfer - 1;
	return ecm_open_raw(W.ecm[i], W.ecm_len[i]) && chan_rt(W.cmd_body[0], W.resp_body[last]) &&
			       chan_rt(W.cmd_body[1], W.resp_body[1]) ?
		       KH_OK :
		       KH_ERR_CRYPTO;
}

static kh_err op_aead_path(int i)
{
	if (!ecm_open_raw(W.ecm[i], W.ecm_len[i]))
		return KH_ERR_CRYPTO;
	for (size_t k = 0; k < W.nxfer; k++)
		if (!chan_rt(W.cmd_body[k], W.resp_body[k]))
			return KH_ERR_CRYPTO;
	return KH_OK;
}

/* ---- the operations ---- */

static kh_err op_ecm(struct world *wd, int i)
{
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	kh_err r = kh_host_cas_ecm(&wd->cas, W.ecm[i], W.ecm_len[i], &a, &o);
	if (r == KH_OK && (a.cp != (uint32_t)(1000 + i) || a.cw_len != 16))
		r = KH_ERR_FORMAT;
	kh_wipe(&a, sizeof a);
	return r;
}

static kh_err op_emm(struct world *wd, int i)
{
	return kh_host_cas_emm(&wd->cas, W.emm[i], W.emm_len[i]);
}

/* An EMM for wd's card: its next sequence number, one credit with the next reload id. */
static kh_err seal_emm(struct world *wd, uint8_t *out, size_t *len)
{
	uint8_t cmds[64];
	struct kh_wr w;
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, wd->card_ua, ++wd->emm_seq, 0};

	kh_wr_init(&w, cmds, sizeof cmds);
	if (kh_emm_put_add_credit(&w, 1, ++wd->reload) != KH_OK)
		return KH_ERR_INTERNAL;
	return kh_emm_seal(wd->kp, &h, cmds, w.len, out, KH_EMM_MAX, len);
}

/* ---- setup ---- */

static kh_err make_ecms(void)
{
	struct kh_ecm e;
	kh_err r = KH_OK;

	for (int i = 0; i < W.ecms && r == KH_OK; i++) {
		memset(&e, 0, sizeof e);
		e.h.table_id = i % 2 ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.h.cp = (uint32_t)(1000 + i);
		e.alg = KH_SCR_CISSA;
		e.cw_len = 16;
		e.access = KH_ECM_PRODUCT;
		e.product = PRODUCT;
		e.time = W.t0;
		if ((r = kh_random(e.cw_even, 16)) == KH_OK && (r = kh_random(e.cw_odd, 16)) == KH_OK)
			r = kh_ecm_seal(W.skey, &W.esg, &e, W.ecm[i], KH_ECM_MAX, &W.ecm_len[i]);
	}
	kh_wipe(&e, sizeof e);
	return r;
}

/* Give the card its service key and a right to PRODUCT, by one unique EMM under its Kp. */
static kh_err provision(struct world *wd)
{
	uint8_t cmds[KH_EMM_CMDS_MAX], emm[KH_EMM_MAX];
	struct kh_wr w;
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, wd->card_ua, ++wd->emm_seq, 0};
	size_t n;
	kh_err r;

	/* the operator's signers, one EMM each (a certificate may take more than half of one) */
	for (int i = 0; i < 2; i++) {
		struct kh_emm_hdr hs = {0, KH_EMM_UNIQUE, wd->card_ua, h.seq, 0};
		kh_wr_init(&w, cmds, sizeof cmds);
		if ((r = kh_emm_put_set_signer(&w, W.sg_der[i], W.sg_len[i])) != KH_OK ||
		    (r = kh_emm_seal(wd->kp, &hs, cmds, w.len, emm, sizeof emm, &n)) != KH_OK ||
		    (r = kh_host_cas_emm(&wd->cas, emm, n)) != KH_OK)
			return r;
		h.seq = ++wd->emm_seq;
	}
	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_set_key(&w, 1, 1, W.skey);
	if ((r = kh_emm_put_entitle(&w, PRODUCT, W.t0 - 86400, W.t0 + 86400 * 365)) != KH_OK)
		return r;
	if ((r = kh_emm_seal(wd->kp, &h, cmds, w.len, emm, sizeof emm, &n)) != KH_OK)
		return r;
	return kh_host_cas_emm(&wd->cas, emm, n);
}

/* A module personalised in memory; saved to path and reopened from its files when path != NULL. */
static kh_err issue(struct kh_authority *a, enum kh_role role, const char *path, struct kh_softmod **out,
		    uint32_t *ua)
{
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	kh_err r;

	if (!iss)
		return KH_ERR_NOMEM;
	if ((r = kh_softmod_new_blank(&sm)) != KH_OK)
		goto out;
	kh_transport_inproc(&t, kh_softmod_module(sm));
	if ((r = kh_authority_personalise(a, &t, role, 0, iss)) != KH_OK)
		goto out;
	*ua = iss->ua;
	if (path) {
		if ((r = kh_softmod_save(sm, path, NULL)) != KH_OK)
			goto out;
		kh_softmod_free(sm);
		sm = NULL;
		if (out && (r = kh_softmod_open(path, NULL, &sm, NULL)) != KH_OK)
			goto out;
	}
	if (out) {
		*out = sm;
		sm = NULL;
	}
out:
	kh_softmod_free(sm);
	free(iss);
	return r;
}

static kh_err world_connect(struct world *wd, struct kh_authority *a)
{
	uint8_t ku[32];
	uint32_t ua;
	kh_err r;

	if ((r = issue(a, KH_ROLE_DECODER, NULL, &wd->dec_sm, &ua)) != KH_OK)
		return r;
	kh_transport_inproc(&wd->dec, kh_softmod_module(wd->dec_sm));
	kh_host_cas_init(&wd->cas, &wd->dec, &wd->cam, &wd->card, 0);
	if ((r = kh_authority_card_keys(a, wd->card_ua, wd->kp, ku)) != KH_OK)
		return r;
	kh_wipe(ku, sizeof ku);
	if ((r = provision(wd)) != KH_OK)
		return r;
	return kh_host_cas_connect(&wd->cas);
}

static kh_err setup(int want_unix)
{
	struct kh_authority *a = NULL;
	char p[4][160];
	uint32_t ua;
	kh_err r;

	if ((r = bench_mkdtemp(W.dir, sizeof W.dir, "/tmp/kh-bench-cas-XXXXXX")) != KH_OK)
		return r;
	snprintf(W.auth_dir, sizeof W.auth_dir, "%s/authority", W.dir);
	W.t0 = (uint64_t)time(NULL);
	if ((r = kh_random(W.skey, sizeof W.skey)) != KH_OK)
		return r;
	if ((r = kh_authority_init(W.auth_dir, "Keyhole bench operator")) != KH_OK ||
	    (r = kh_authority_open(W.auth_dir, &a)) != KH_OK)
		goto out;
	kh_authority_root_pk(a, W.root_pk);
	if ((r = kh_authority_signer_load(W.auth_dir, KH_ROLE_ECM_SIGNER, &W.esg, W.sg_der[0], KH_CERT_MAX,
					  &W.sg_len[0])) != KH_OK ||
	    (r = kh_authority_signer_load(W.auth_dir, KH_ROLE_EMM_SIGNER, NULL, W.sg_der[1], KH_CERT_MAX,
					  &W.sg_len[1])) != KH_OK || (r = make_ecms()) != KH_OK)
		goto out;

	/* in memory */
	if ((r = issue(a, KH_ROLE_CAM, NULL, &W.mem.cam_sm, &ua)) != KH_OK ||
	    (r = issue(a, KH_ROLE_CARD, NULL, &W.mem.card_sm, &W.mem.card_ua)) != KH_OK)
		goto out;
	kh_transport_inproc(&W.mem.cam, kh_softmod_module(W.mem.cam_sm));
	kh_transport_inproc(&W.mem.card, kh_softmod_module(W.mem.card_sm));
	W.mem.have_t = 1;
	if ((r = world_connect(&W.mem, a)) != KH_OK)
		goto out;

	/* from files, in this process */
	snprintf(p[0], sizeof p[0], "%s/cam.card", W.dir);
	snprintf(p[1], sizeof p[1], "%s/card.card", W.dir);
	if ((r = issue(a, KH_ROLE_CAM, p[0], &W.file.cam_sm, &ua)) != KH_OK ||
	    (r = issue(a, KH_ROLE_CARD, p[1], &W.file.card_sm, &W.file.card_ua)) != KH_OK)
		goto out;
	kh_transport_inproc(&W.file.cam, kh_softmod_module(W.file.cam_sm));
	kh_transport_inproc(&W.file.card, kh_softmod_module(W.file.card_sm));
	W.file.have_t = 1;
	if ((r = world_connect(&W.file, a)) != KH_OK)
		goto out;

	/* from other files, each in its own daemon */
	if (want_unix) {
		snprintf(p[0], sizeof p[0], "%s/cam_u.card", W.dir);
		snprintf(p[1], sizeof p[1], "%s/card_u.card", W.dir);
		snprintf(p[2], sizeof p[2], "%s/cam.sock", W.dir);
		snprintf(p[3], sizeof p[3], "%s/card.sock", W.dir);
		if ((r = issue(a, KH_ROLE_CAM, p[0], NULL, &ua)) != KH_OK ||
		    (r = issue(a, KH_ROLE_CARD, p[1], NULL, &W.unx.card_ua)) != KH_OK)
			goto out;
		if ((W.unx.cam_pid = bench_spawn_daemon("bench_cas", p[0], p[2], NULL, 0)) < 0 ||
		    (W.unx.card_pid = bench_spawn_daemon("bench_cas", p[1], p[3], NULL, 0)) < 0) {
			r = KH_ERR_IO;
			goto out;
		}
		if ((r = bench_connect_retry(&W.unx.cam, p[2])) != KH_OK)
			goto out;
		if ((r = bench_connect_retry(&W.unx.card, p[3])) != KH_OK) {
			kh_transport_close(&W.unx.cam);
			goto out;
		}
		W.unx.have_t = 2;
		if ((r = world_connect(&W.unx, a)) != KH_OK)
			goto out;
		W.have_unix = 1;
	}

	/* the sizes of the sealed frames, from one ECM on the in-memory path */
	{
		struct rec rc = {.inner = &W.mem.cam};
		struct kh_transport rt = {rec_xfer, rec_close, &rc}, *cam = W.mem.cas.cam;
		W.mem.cas.cam = &rt;
		r = op_ecm(&W.mem, 0);
		W.mem.cas.cam = cam;
		if (r != KH_OK)
			goto out;
		/* the card's frames, recorded through the card transport */
		{
			struct rec rd = {.inner = &W.mem.card};
			struct kh_transport dt = {rec_xfer, rec_close, &rd}, *card = W.mem.cas.card;
			W.mem.cas.card = &dt;
			r = op_ecm(&W.mem, 0);
			W.mem.cas.card = card;
			if (r != KH_OK)
				goto out;
			/* expected: CAM frames CARD SEND, CARD RESP; one card frame in between */
			if (rc.bad || rd.bad || rc.n != 2 || rd.n != 1) {
				fprintf(stderr, "bench_cas: unexpected path: %zu CAM frames, %zu card frames\n", rc.n, rd.n);
				r = KH_ERR_INTERNAL;
				goto out;
			}
			W.nxfer = 3;
			W.cmd_body[0] = rc.cmd[0];
			W.resp_body[0] = rc.resp[0];
			W.cmd_body[1] = rd.cmd[0];
			W.resp_body[1] = rd.resp[0];
			W.cmd_body[2] = rc.cmd[1];
			W.resp_body[2] = rc.resp[1];
		}
	}
	W.ecm_ct = W.ecm_len[0] - KH_ECM_HDR_LEN - KH_CAS_TAG_LEN;

	/* the reference's contexts, keyed once */
	if ((r = kh_random(W.ckey, 32)) != KH_OK || (r = kh_random(W.rkey, 32)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	if (!(W.gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) || !(W.ecm_dec = EVP_CIPHER_CTX_new()) ||
	    !(W.enc_c = EVP_CIPHER_CTX_new()) || !(W.dec_c = EVP_CIPHER_CTX_new()) || !(W.enc_r = EVP_CIPHER_CTX_new()) ||
	    !(W.dec_r = EVP_CIPHER_CTX_new()))
		goto out;
	if (EVP_DecryptInit_ex2(W.ecm_dec, W.gcm, W.skey, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_c, W.gcm, W.ckey, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_c, W.gcm, W.ckey, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_r, W.gcm, W.rkey, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_r, W.gcm, W.rkey, NULL, NULL) != 1)
		goto out;
	{
		uint8_t pk[32];
		if (kh_ed25519_public(W.esg.sk, pk) != KH_OK ||
		    !(W.esg_pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, 32)) ||
		    !(W.sig_ctx = EVP_MD_CTX_new()))
			goto out;
	}
	r = op_aead_ref(0) == KH_OK ? KH_OK : KH_ERR_CRYPTO; /* the real ECM really opens and verifies */
out:
	kh_authority_free(a);
	return r;
}

static void world_free(struct world *wd)
{
	kh_host_cas_wipe(&wd->cas);
	if (wd->have_t == 2) {
		kh_transport_close(&wd->cam);
		kh_transport_close(&wd->card);
	}
	bench_reap(&wd->cam_pid);
	bench_reap(&wd->card_pid);
	kh_softmod_free(wd->dec_sm);
	kh_softmod_free(wd->cam_sm);
	kh_softmod_free(wd->card_sm);
	kh_wipe(wd->kp, sizeof wd->kp);
}

static void teardown(void)
{
	world_free(&W.mem);
	world_free(&W.file);
	world_free(&W.unx);
	EVP_CIPHER_CTX_free(W.ecm_dec);
	EVP_PKEY_free(W.esg_pk);
	EVP_MD_CTX_free(W.sig_ctx);
	EVP_CIPHER_CTX_free(W.enc_c);
	EVP_CIPHER_CTX_free(W.dec_c);
	EVP_CIPHER_CTX_free(W.enc_r);
	EVP_CIPHER_CTX_free(W.dec_r);
	EVP_CIPHER_free(W.gcm);
	kh_wipe(W.skey, sizeof W.skey);
	if (W.dir[0] && bench_rmtree(W.dir) != 0)
		fprintf(stderr, "bench_cas: could not remove %s\n", W.dir);
}

/* ---- rounds ---- */

static int selected(int b)
{
	return name_matches(b) && (!B[b].is_unix || W.have_unix);
}

static kh_err run_round(int b, int r)
{
	struct bench *bb = &B[b];
	int n = bb->is_ecm ? W.ecms : W.emms;
	double t0, t1, sum = 0;
	kh_err e = KH_OK;

	if (!bb->is_ecm) /* untimed: this round's EMMs, with the card's next sequence numbers */
		for (int i = 0; i < n && e == KH_OK; i++)
			e = seal_emm(bb->wd, W.emm[i], &W.emm_len[i]);
	if (e != KH_OK)
		return e;
	t0 = now_us();
	for (int i = 0; i < n && e == KH_OK; i++) {
		double a = now_us();
		switch (b) {
		case B_AEAD_REF: e = op_aead_ref(i); break;
		case B_AEAD_PATH: e = op_aead_path(i); break;
		default: e = bb->is_ecm ? op_ecm(bb->wd, i) : op_emm(bb->wd, i); break;
		}
		W.lat[i] = now_us() - a;
	}
	t1 = now_us();
	if (e != KH_OK) {
		fprintf(stderr, "bench_cas: %s: %s\n", bb->name, kh_strerror(e));
		return e;
	}
	for (int i = 0; i < n; i++)
		sum += W.lat[i];
	memcpy(bb->all + bb->nall, W.lat, (size_t)n * sizeof *W.lat);
	bb->nall += (size_t)n;
	qsort(W.lat, (size_t)n, sizeof *W.lat, bench_cmp_double);
	bb->p50[r] = pct(W.lat, (size_t)n, 50);
	bb->p99[r] = pct(W.lat, (size_t)n, 99);
	bb->max[r] = W.lat[n - 1];
	bb->mean[r] = sum / n;
	bb->rate[r] = n / ((t1 - t0) / 1e6);
	bb->ran = 1;
	return KH_OK;
}

/* ---- output ---- */

static double med(const double *v, int rounds)
{
	return bench_stats_of(v, rounds).med;
}

struct ratio {
	const char *name;
	int num, den;
	const char *note;
};

static const struct ratio R[] = {
	{"ecm_cw_inproc_vs_aead", B_ECM_IN, B_AEAD_REF,
	 "p50 of ECM->CW in-process (memory) / raw EVP: ECM open + Ed25519 verify of its signature + AES-256-GCM "
	 "seal/open of command and response once per hop x 2 hops (contexts keyed once, same sizes)"},
	{"ecm_cw_inproc_vs_aead_path", B_ECM_IN, B_AEAD_PATH,
	 "the same / ECM open + verify + the 12 GCM calls of the round trips the path makes (decoder<->CAM twice, "
	 "CAM<->card once)"},
	{"ecm_cw_inproc_file_vs_inproc", B_ECM_FILE, B_ECM_IN, "p50, modules from files / in memory"},
	{"ecm_cw_unix_vs_inproc", B_ECM_UNIX, B_ECM_IN, "p50, two socket daemons (3 socket round trips per ECM) / in-process (memory)"},
	{"emm_inproc_file_vs_inproc", B_EMM_FILE, B_EMM_IN, "p50, durable store / store in memory"},
	{"emm_unix_vs_inproc_file", B_EMM_UNIX, B_EMM_FILE, "p50, daemon / in-process, both durable"},
};

static void print_results(int rounds)
{
	for (int b = 0; b < NB; b++) {
		if (!B[b].ran)
			continue;
		printf("bench=%s unit=us p50=%.2f p99=%.2f max=%.2f rounds=%d\n", B[b].name, med(B[b].p50, rounds),
		       med(B[b].p99, rounds), med(B[b].max, rounds), rounds);
		bench_print(B[b].name, "ops/s", 1, B[b].rate, rounds);
		bench_print(B[b].name, "us", 3, B[b].mean, rounds);
	}
	for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
		double v[BENCH_MAX_ROUNDS];
		if (!B[R[i].num].ran || !B[R[i].den].ran)
			continue;
		/* the reference's p50 is its per-call time; each ratio is computed within a round */
		for (int r = 0; r < rounds; r++)
			v[r] = B[R[i].num].p50[r] / B[R[i].den].p50[r];
		bench_print_ratio(R[i].name, v, rounds, R[i].note);
	}
}

static void print_summary(int rounds)
{
	printf("# summary: per operation, medians over %d rounds of each round's figure; pooled = percentile of "
	       "all rounds' samples together\n",
	       rounds);
	printf("#   %-20s %9s %9s %9s %10s %10s %11s  %s\n", "", "p50 us", "p99 us", "max us", "pooled p99",
	       "pooled max", "ops/s", "what");
	for (int b = 0; b < NB; b++) {
		struct bench *bb = &B[b];
		if (!bb->ran)
			continue;
		qsort(bb->all, bb->nall, sizeof *bb->all, bench_cmp_double);
		printf("#   %-20s %9.2f %9.2f %9.1f %10.2f %10.1f %11.0f  %s\n", bb->name, med(bb->p50, rounds),
		       med(bb->p99, rounds), med(bb->max, rounds), pct(bb->all, bb->nall, 99), bb->all[bb->nall - 1],
		       med(bb->rate, rounds), bb->what);
	}
	if (B[B_ECM_IN].ran) {
		double p99 = med(B[B_ECM_IN].p99, rounds);
		printf("# issue 3 aim, p99 <= 1000 us in-process: ecm_cw_inproc p99 %.1f us (%s)", p99,
		       p99 <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_FILE].ran)
			printf(", ecm_cw_inproc_file p99 %.1f us (%s)", med(B[B_ECM_FILE].p99, rounds),
			       med(B[B_ECM_FILE].p99, rounds) <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_UNIX].ran)
			printf(", ecm_cw_unix p99 %.1f us (%s)", med(B[B_ECM_UNIX].p99, rounds),
			       med(B[B_ECM_UNIX].p99, rounds) <= 1000 ? "met" : "NOT met");
		printf("; a real smart card answers in 100,000-250,000 us\n");
	}
}

static const char usage[] =
	"usage: bench_cas [-r ROUNDS] [-e ECMS] [-m EMMS] [-n] [-p] [-b NAME] [-t S]\n"
	"  -r ROUNDS  rounds per benchmark, 1..99 (default 7); figures are medians over rounds\n"
	"  -e ECMS    ECMs per round of each ECM benchmark (default 2000)\n"
	"  -m EMMS    EMMs per round of each EMM benchmark (default 200)\n"
	"  -n         skip the UNIX socket benchmarks\n"
	"  -p         pin this process and the module daemons to one CPU\n"
	"  -b NAME    run only the benchmarks whose name contains NAME\n"
	"  -t S       accepted and ignored (bench/run.sh passes bench_pair's options on; rounds here are\n"
	"             counted in operations, not seconds)\n";

int main(int argc, char **argv)
{
	int rounds = 7, no_unix = 0, pin = -1, c, rc = 1, any_unix = 0;
	kh_err e;
	struct statfs sf;

	W.ecms = 2000;
	W.emms = 200;
	while ((c = getopt(argc, argv, "r:e:m:npb:t:h")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 'e': W.ecms = atoi(optarg); break;
		case 'm': W.emms = atoi(optarg); break;
		case 'n': no_unix = 1; break;
		case 'p': pin = 0; break;
		case 'b': only = optarg; break;
		case 't': break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || W.ecms < 1 || W.ecms > 1000000 ||
	    W.emms < 1 || W.emms > 1000000) {
		fputs(usage, stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (pin == 0 && (pin = bench_pin()) < 0) {
		fprintf(stderr, "bench_cas: cannot pin to one CPU\n");
		return 1;
	}
	for (int b = 0; b < NB; b++)
		any_unix |= B[b].is_unix && name_matches(b);
	no_unix |= !any_unix;

	W.ecm = calloc((size_t)W.ecms, sizeof *W.ecm);
	W.ecm_len = calloc((size_t)W.ecms, sizeof *W.ecm_len);
	W.emm = calloc((size_t)W.emms, sizeof *W.emm);
	W.emm_len = calloc((size_t)W.emms, sizeof *W.emm_len);
	W.lat = calloc((size_t)(W.ecms > W.emms ? W.ecms : W.emms), sizeof *W.lat);
	for (int b = 0; b < NB; b++)
		if (!(B[b].all = calloc((size_t)rounds * (size_t)(B[b].is_ecm ? W.ecms : W.emms), sizeof *B[b].all)))
			goto out;
	if (!W.ecm || !W.ecm_len || !W.emm || !W.emm_len || !W.lat)
		goto out;

	if ((e = setup(!no_unix)) != KH_OK) {
		fprintf(stderr, "bench_cas: setup: %s\n", kh_strerror(e));
		goto out;
	}
	printf("# bench_cas: %d rounds, %d ECMs per ECM benchmark and %d EMMs per EMM benchmark in each round, "
	       "rounds interleaved across benchmarks\n",
	       rounds, W.ecms, W.emms);
	bench_print_pin(pin);
	printf("# %s; ECM section %zu bytes (TLV %zu); sealed bodies per ECM: decoder->CAM CARD SEND %zu / answer %zu, "
	       "CAM->card ECM %zu / answer %zu, decoder->CAM CARD RESP %zu / answer (control words) %zu\n",
	       OpenSSL_version(OPENSSL_VERSION), W.ecm_len[0], W.ecm_ct, W.cmd_body[0], W.resp_body[0], W.cmd_body[1],
	       W.resp_body[1], W.cmd_body[2], W.resp_body[2]);
	printf("# card files in %s (%s); a store of the card's state = 2 atomic file replacements, each with "
	       "fsync of the file and of the directory; ECM path stores every %d ECMs\n",
	       W.dir,
	       statfs(W.dir, &sf) != 0 ? "filesystem unknown" :
	       sf.f_type == 0x01021994 ? "tmpfs: fsync reaches no disk" :
	       sf.f_type == 0xEF53     ? "ext2/3/4" :
					 "not tmpfs",
	       16);
	fflush(stdout);

	for (int r = 0; r < rounds; r++)
		for (int b = 0; b < NB; b++)
			if (selected(b) && run_round(b, r) != KH_OK)
				goto out;
	print_results(rounds);
	print_summary(rounds);
	rc = 0;
out:
	fflush(stdout);
	teardown();
	for (int b = 0; b < NB; b++)
		free(B[b].all);
	free(W.ecm);
	free(W.ecm_len);
	free(W.emm);
	free(W.emm_len);
	free(W.lat);
	return rc;
}
