/*
 * bench_cas: the ECM-to-control-word path (decoder -> CAM -> card and back) and the
 * EMM apply rate, next to the raw AES-256-GCM work the path is made of, measured in the same run
 * on the same bytes (report ratios, never a bare time).
 *
 *   ecm_cw_inproc       kh_host_cas_ecm through in-process modules held in memory (a store of
 *                       the card's state is a memcpy): what the code costs. The decoder module
 *                       seals and opens the decoder<->CAM hop (open mode: it hands the host the
 *                       control words)
 *   ecm_cw_ladder_inproc the same in ladder mode (KH_HOST_CAS_LADDER), with modules of their own:
 *                       kh_host_cas_ecm (the CAM seals the control words under the decoder
 *                       module's ladder key) then kh_host_cas_load (LADDER LOAD: the decoder
 *                       module opens them into its descrambler)
 *   ecm_cw_inproc_file  the same through modules opened from their files (kh_softmod_open): the
 *                       card stores its sealed state every KH_CAS_USAGE_FLUSH (256) ECMs, and each
 *                       store writes the card file and the counter file with fsync
 *   ecm_cw_unix         the same through one kh_serve_unix daemon per module (forked, each opens
 *                       its own module from its files, as bench_pair does)
 *   ecm_cw_pcsc         the same through PC/SC: the CAM and the card each served by a forked
 *                       child on the card side of the vsmartcard-vpcd reader driver
 *                       (kh_serve_vpcd; each opens its own module from its files), the host
 *                       reaching them with kh_transport_pcsc through pcscd on the driver's two
 *                       readers, "NAME 00 00" (the CAM, port PORT) and "NAME 00 01" (the card,
 *                       PORT+1). Only with -V PORT: a pcscd with the driver must be running
 *                       (bench/pcsc.sh starts one of its own); without it one '#' line says it
 *                       was skipped
 *   aead_ref            the reference: raw EVP AES-256-GCM, contexts keyed once, on buffers of
 *                       the sizes the path uses: the ECM open with the service key and the raw
 *                       EVP Ed25519 verify of the ECM's signature (the card's check), then seal +
 *                       open of command and of response for one round trip per hop (decoder<->CAM,
 *                       CAM<->card): 1 + 2 x 4 = 9 calls
 *   aead_path           the same, but with every sealed round trip the path really makes: the
 *                       decoder<->CAM hop is crossed twice (CARD SEND, then CARD RESP carrying
 *                       the card's answer back), so 1 + 3 x 4 = 13 calls
 *   aead_path_ladder    aead_path with the ladder path's body sizes, plus the ladder's own AEAD
 *                       work: the CAM's seal of the control-word pair and the decoder module's
 *                       open (raw EVP AES-256-GCM, the ladder's aad, a context keyed once)
 *   emm_inproc          kh_host_cas_emm straight to an in-memory card (each EMM is applied and
 *                       the card's state sealed and "stored" in memory)
 *   emm_inproc_file     the same to a card opened from its files: every EMM is a durable store
 *   emm_unix            the same to the card's socket daemon (durable too)
 *
 * Descrambling, in Mbit/s of transport stream, on the same packets in the same run: a stream of S
 * (-s, default 4200) 188-byte packets of random payload (one in 20 with an 8-byte adaptation
 * field, one in 500 with an adaptation field only), scrambled with the even control word of one
 * ECM per algorithm; each timed pass descrambles the whole stream once, starting from a copy of
 * the scrambled stream (the copy untimed); D passes (-d, default 10) per round.
 *   desc_<alg>_ladder   kh_host_cas_descramble through the ladder world's in-memory decoder
 *                       module: DESCRAMBLE commands of 21 packets, each run by the module with
 *                       the control words it opened (LADDER LOAD of the CAM's sealed answer to
 *                       that ECM, before the round, untimed)
 *   desc_<alg>_host     kh_scr_descramble in this process with the same control words, both keys
 *                       set once (open mode: what a decoder does when the host holds the CWs)
 *   desc_csa2_raw_bs    dvbcsa_bs_decrypt on full batches of the same payloads (libdvbcsa's
 *                       bitslice, the primitive under ours; as bench_scramble)
 *   desc_aes_raw_cbc    one EVP AES-128-CBC decryption over as many bytes as the stream has
 *                       payload (a multiple of 16): the bulk rate of the AES under CISSA
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
 *   bench=<name> unit=Mbit/s median=<x> min=<x> max=<x> rounds=<R>   descrambling (per pass: us)
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

#include <dvbcsa/dvbcsa.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
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
	B_ECM_LADDER,
	B_ECM_FILE,
	B_ECM_UNIX,
	B_ECM_PCSC,
	B_AEAD_REF,
	B_AEAD_PATH,
	B_AEAD_LADDER,
	B_EMM_IN,
	B_EMM_FILE,
	B_EMM_UNIX,
	B_DESC_CSA_LADDER,
	B_DESC_CSA_HOST,
	B_DESC_CSA_RAW,
	B_DESC_CISSA_LADDER,
	B_DESC_CISSA_HOST,
	B_DESC_AES_RAW,
	NB
};

/* What a benchmark's operations are: EMMs, ECMs, or descrambling passes over the stream. */
enum { K_EMM, K_ECM, K_DESC };
/* What a benchmark's modules need besides this process: nothing, socket daemons, pcscd. */
enum { V_PROC, V_UNIX, V_PCSC };
/* The two algorithms descrambled: DVB-CSA2 and DVB-CISSA (AES). */
enum { D_CSA, D_CISSA, ND };

struct world;
struct bench {
	const char *name;
	const char *what;
	int kind, via;
	struct world *wd;
	double p50[BENCH_MAX_ROUNDS], p99[BENCH_MAX_ROUNDS], max[BENCH_MAX_ROUNDS], mean[BENCH_MAX_ROUNDS];
	double rate[BENCH_MAX_ROUNDS]; /* operations/s; Mbit/s of TS for K_DESC */
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
	struct world mem, file, unx, lad, pcs;
	int have_unix, have_pcsc;
	/* PC/SC: the vpcd driver's port (0: not given) and the readers' FRIENDLYNAME */
	unsigned vpcd_port;
	const char *vpcd_name;
	char reader[2][128];
	/* the sizes of the sealed bodies on the path, from one recorded ECM */
	size_t nxfer, cmd_body[MAX_XFER], resp_body[MAX_XFER];
	size_t ecm_ct; /* ciphertext bytes of an ECM (the TLV) */
	size_t lcmd_body[MAX_XFER], lresp_body[MAX_XFER]; /* the same on the ladder path */
	/* the reference */
	EVP_CIPHER *gcm;
	EVP_CIPHER_CTX *ecm_dec, *enc_c, *dec_c, *enc_r, *dec_r, *enc_l, *dec_l;
	EVP_PKEY *esg_pk; /* the ECM signer's public key, for the raw verify */
	EVP_MD_CTX *sig_ctx;
	uint8_t ckey[32], rkey[32], lkey[32];
	uint32_t ctr;
	int ref_ecm_i;
	/* descrambling: one ECM per algorithm, its CWs, the CAM's sealed answer, our descrambler */
	int dpasses;
	size_t npkts;
	struct {
		uint8_t ecm[KH_ECM_MAX];
		size_t ecm_len;
		uint8_t even[16], odd[16];
		size_t cw_len;
		struct kh_cw_answer sealed;
		struct kh_scr *host;
		uint8_t *scr; /* the stream scrambled with even */
	} d[ND];
	uint8_t *clear, *work;
	struct dvbcsa_bs_batch_s *batches; /* the payloads of work, full batches, NULL-separated */
	size_t nbatches;
	struct dvbcsa_bs_key_s *bskey;
	uint8_t *bulk;
	size_t bulk_len;
	EVP_CIPHER_CTX *cbc;
} W = {
	.mem = {.label = "memory", .cam_pid = -1, .card_pid = -1},
	.file = {.label = "files", .cam_pid = -1, .card_pid = -1},
	.unx = {.label = "unix", .cam_pid = -1, .card_pid = -1},
	.lad = {.label = "ladder", .cam_pid = -1, .card_pid = -1},
	.pcs = {.label = "pcsc", .cam_pid = -1, .card_pid = -1},
	.vpcd_name = "Virtual PCD",
};

static struct bench B[NB] = {
	[B_ECM_IN] = {"ecm_cw_inproc", "ECM -> CW decoder->CAM->card, in-process, modules in memory", 1, 0, &W.mem, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_LADDER] = {"ecm_cw_ladder_inproc", "the same in ladder mode: sealed CWs, then LADDER LOAD into the decoder module", 1, 0, &W.lad, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_FILE] = {"ecm_cw_inproc_file", "the same, modules opened from files (a durable store every 256 ECMs)", 1, 0, &W.file, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_UNIX] = {"ecm_cw_unix", "the same through two socket daemons (files, durable)", 1, V_UNIX, &W.unx, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_ECM_PCSC] = {"ecm_cw_pcsc", "the same through pcscd and two vpcd readers (files, durable)", 1, V_PCSC, &W.pcs, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_AEAD_REF] = {"aead_ref", "raw: ECM open + Ed25519 verify + AES-256-GCM 4 calls per hop x 2 hops", 1, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_AEAD_PATH] = {"aead_path", "raw: ECM open + Ed25519 verify + 4 GCM calls per sealed round trip", 1, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_AEAD_LADDER] = {"aead_path_ladder", "raw: aead_path on the ladder path's sizes + ladder seal + open", 1, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_IN] = {"emm_inproc", "EMM host->card, in-memory card (store = memcpy)", 0, 0, &W.mem, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_FILE] = {"emm_inproc_file", "EMM host->card, card from files (durable store, fsync)", 0, 0, &W.file, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_EMM_UNIX] = {"emm_unix", "EMM host->card daemon (durable store, fsync)", 0, V_UNIX, &W.unx, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_CSA_LADDER] = {"desc_csa2_ladder", "CSA2: DESCRAMBLE commands (21 packets) to the decoder module", 2, 0, &W.lad, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_CSA_HOST] = {"desc_csa2_host", "CSA2: kh_scr_descramble in the host (open mode)", 2, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_CSA_RAW] = {"desc_csa2_raw_bs", "CSA2: raw dvbcsa_bs_decrypt, full batches", 2, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_CISSA_LADDER] = {"desc_cissa_ladder", "CISSA: DESCRAMBLE commands (21 packets) to the decoder module", 2, 0, &W.lad, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_CISSA_HOST] = {"desc_cissa_host", "CISSA: kh_scr_descramble in the host (open mode)", 2, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
	[B_DESC_AES_RAW] = {"desc_aes_raw_cbc", "raw EVP AES-128-CBC decrypt over the payload bytes", 2, 0, NULL, {0}, {0}, {0}, {0}, {0}, NULL, 0, 0},
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

/*
 * The ladder's own AEAD work, raw: the CAM seals the pair (u8 cw_len | even | odd, CISSA: 33
 * bytes) under the ladder key with aad "keyhole ladder v1" | alg | cp, the decoder module opens
 * it. A counter nonce here (the CAM draws a random one).
 */
static int ladder_raw(uint32_t cp)
{
	uint8_t nonce[12] = {0}, aad[sizeof KH_LADDER_LABEL - 1 + 5], pt[33], ct[33 + 16], out[33];

	memcpy(aad, KH_LADDER_LABEL, sizeof KH_LADDER_LABEL - 1);
	aad[sizeof KH_LADDER_LABEL - 1] = KH_SCR_CISSA;
	kh_put_be32(aad + sizeof KH_LADDER_LABEL, cp);
	kh_put_be32(nonce + 8, cp);
	memset(pt, 0x5A, sizeof pt);
	pt[0] = 16;
	return evp_seal(W.enc_l, nonce, aad, (int)sizeof aad, pt, (int)sizeof pt, ct) &&
	       evp_open(W.dec_l, nonce, aad, (int)sizeof aad, ct, (int)sizeof pt, out);
}

static kh_err op_aead_ladder(int i)
{
	if (!ecm_open_raw(W.ecm[i], W.ecm_len[i]))
		return KH_ERR_CRYPTO;
	for (size_t k = 0; k < W.nxfer; k++)
		if (!chan_rt(W.lcmd_body[k], W.lresp_body[k]))
			return KH_ERR_CRYPTO;
	return ladder_raw((uint32_t)(1000 + i)) ? KH_OK : KH_ERR_CRYPTO;
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

/* LADDER LOAD of the CAM's sealed pair into the decoder module. */
static kh_err load(struct world *wd, const struct kh_cw_answer *a)
{
	return kh_host_cas_load(&wd->cas, a);
}

/* Ladder mode: the CAM's sealed pair for ECM i, then LADDER LOAD into the decoder module. */
static kh_err op_ecm_ladder(struct world *wd, int i)
{
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	kh_err r = kh_host_cas_ecm(&wd->cas, W.ecm[i], W.ecm_len[i], &a, &o);

	if (r == KH_OK && (a.cp != (uint32_t)(1000 + i) || a.cw_len != 0 || !a.sealed_len))
		r = KH_ERR_FORMAT;
	if (r == KH_OK)
		r = load(wd, &a);
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

/* ---- descrambling ---- */

#define PL KH_SCR_PACKET_LEN

/* The payload of packet p (its length; 0 for none), as the scrambler finds it. */
static size_t payload_of(uint8_t *p, uint8_t **d)
{
	unsigned afc = (p[3] >> 4) & 3u, off;

	if (afc == 2)
		return 0;
	off = afc == 1 ? 4 : 5u + p[4];
	*d = p + off;
	return off < PL ? PL - off : 0;
}

static void raw_csa(void)
{
	struct dvbcsa_bs_batch_s *b = W.batches;

	for (size_t i = 0; i < W.nbatches; i++) {
		dvbcsa_bs_decrypt(W.bskey, b, 184);
		while (b->data)
			b++;
		b++;
	}
}

static int raw_cbc(void)
{
	static const uint8_t iv[16];
	int ol;

	return EVP_CipherInit_ex2(W.cbc, NULL, NULL, iv, 0, NULL) == 1 &&
	       EVP_CipherUpdate(W.cbc, W.bulk, &ol, W.bulk, (int)W.bulk_len) == 1 && (size_t)ol == W.bulk_len;
}

/*
 * The stream, one ECM per algorithm with known control words, its sealed answer from the ladder
 * world's CAM, our descramblers, the raw primitives' inputs; and a check that the decoder module
 * and our descrambler both give the clear stream back.
 */
static kh_err desc_setup(void)
{
	size_t bytes = W.npkts * PL, fill = 0, k = 0, bs = (size_t)dvbcsa_bs_batch_size();
	EVP_CIPHER *cbc = NULL;
	kh_err r;

	if (!(W.clear = malloc(bytes)) || !(W.work = malloc(bytes)) ||
	    !(W.batches = calloc(W.npkts + W.npkts / bs + 2, sizeof *W.batches)))
		return KH_ERR_NOMEM;
	if ((r = kh_random(W.clear, bytes)) != KH_OK)
		return r;
	bench_ts_headers(W.clear, W.npkts);
	for (int a = 0; a < ND; a++) {
		struct kh_ecm e;
		struct kh_ppv_offer o;
		enum kh_scr_alg alg = a == D_CSA ? KH_SCR_CSA2 : KH_SCR_CISSA;

		memset(&e, 0, sizeof e);
		e.h.table_id = KH_ECM_TID_EVEN;
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.h.cp = (uint32_t)(900000 + a);
		e.alg = (uint8_t)alg;
		e.cw_len = (uint8_t)kh_scr_keylen(alg);
		e.access = KH_ECM_PRODUCT;
		e.product = PRODUCT;
		e.time = W.t0;
		W.d[a].cw_len = e.cw_len;
		if ((r = kh_random(W.d[a].even, e.cw_len)) != KH_OK || (r = kh_random(W.d[a].odd, e.cw_len)) != KH_OK)
			return r;
		memcpy(e.cw_even, W.d[a].even, e.cw_len);
		memcpy(e.cw_odd, W.d[a].odd, e.cw_len);
		r = kh_ecm_seal(W.skey, &W.esg, &e, W.d[a].ecm, sizeof W.d[a].ecm, &W.d[a].ecm_len);
		kh_wipe(&e, sizeof e);
		if (r != KH_OK ||
		    (r = kh_host_cas_ecm(&W.lad.cas, W.d[a].ecm, W.d[a].ecm_len, &W.d[a].sealed, &o)) != KH_OK)
			return r;
		if (!W.d[a].sealed.sealed_len)
			return KH_ERR_FORMAT;
		if ((r = kh_scr_new(alg, 0, &W.d[a].host)) != KH_OK ||
		    (r = kh_scr_set_key(W.d[a].host, KH_SCR_EVEN, W.d[a].even, W.d[a].cw_len)) != KH_OK ||
		    (r = kh_scr_set_key(W.d[a].host, KH_SCR_ODD, W.d[a].odd, W.d[a].cw_len)) != KH_OK)
			return r;
		if (!(W.d[a].scr = malloc(bytes)))
			return KH_ERR_NOMEM;
		memcpy(W.d[a].scr, W.clear, bytes);
		if ((r = kh_scr_scramble(W.d[a].host, W.d[a].scr, W.npkts, KH_SCR_EVEN)) != KH_OK)
			return r;
		/* what is measured gives the clear stream back: the decoder module and ours */
		memcpy(W.work, W.d[a].scr, bytes);
		if ((r = load(&W.lad, &W.d[a].sealed)) != KH_OK ||
		    (r = kh_host_cas_descramble(&W.lad.cas, W.work, W.npkts)) != KH_OK)
			return r;
		if (memcmp(W.work, W.clear, bytes) != 0)
			return KH_ERR_INTERNAL;
		memcpy(W.work, W.d[a].scr, bytes);
		if ((r = kh_scr_descramble(W.d[a].host, W.work, W.npkts, NULL)) != KH_OK)
			return r;
		if (memcmp(W.work, W.clear, bytes) != 0)
			return KH_ERR_INTERNAL;
	}
	/* raw CSA2: full batches of the payloads (>= 8 bytes) of work, keyed with the even CW */
	W.bulk_len = 0;
	for (size_t i = 0; i < W.npkts; i++) {
		uint8_t *d = NULL;
		size_t len = payload_of(W.work + i * PL, &d);
		W.bulk_len += len;
		if (len < 8)
			continue;
		W.batches[k].data = d;
		W.batches[k].len = (unsigned)len;
		k++;
		if (++fill == bs) {
			W.batches[k++].data = NULL;
			fill = 0;
			W.nbatches++;
		}
	}
	if (fill) {
		W.batches[k].data = NULL;
		W.nbatches++;
	}
	if (!(W.bskey = dvbcsa_bs_key_alloc()))
		return KH_ERR_NOMEM;
	dvbcsa_bs_key_set(W.d[D_CSA].even, W.bskey);
	memcpy(W.work, W.d[D_CSA].scr, bytes);
	raw_csa();
	for (size_t i = 0; i < W.npkts; i++) {
		uint8_t *d = NULL, *c = NULL;
		size_t len = payload_of(W.work + i * PL, &d);
		payload_of(W.clear + i * PL, &c);
		if (len >= 8 && memcmp(d, c, len) != 0)
			return KH_ERR_INTERNAL;
	}
	/* raw AES: as many bytes as the payloads, whole blocks, one CBC call */
	W.bulk_len -= W.bulk_len % 16;
	if (!(W.bulk = malloc(W.bulk_len)) || !(W.cbc = EVP_CIPHER_CTX_new()))
		return KH_ERR_NOMEM;
	memcpy(W.bulk, W.d[D_CISSA].scr, W.bulk_len);
	if (!(cbc = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL)) ||
	    EVP_CipherInit_ex2(W.cbc, cbc, W.d[D_CISSA].even, NULL, 0, NULL) != 1 || EVP_CIPHER_CTX_set_padding(W.cbc, 0) != 1 ||
	    !raw_cbc())
		r = KH_ERR_CRYPTO;
	EVP_CIPHER_free(cbc);
	return r;
}

static int desc_alg(int b)
{
	return b == B_DESC_CSA_LADDER || b == B_DESC_CSA_HOST || b == B_DESC_CSA_RAW ? D_CSA : D_CISSA;
}

/* One pass over the stream (work holds it scrambled). */
static kh_err desc_pass(int b)
{
	switch (b) {
	case B_DESC_CSA_LADDER:
	case B_DESC_CISSA_LADDER: return kh_host_cas_descramble(&W.lad.cas, W.work, W.npkts);
	case B_DESC_CSA_HOST: return kh_scr_descramble(W.d[D_CSA].host, W.work, W.npkts, NULL);
	case B_DESC_CISSA_HOST: return kh_scr_descramble(W.d[D_CISSA].host, W.work, W.npkts, NULL);
	case B_DESC_CSA_RAW: raw_csa(); return KH_OK;
	default: return raw_cbc() ? KH_OK : KH_ERR_CRYPTO;
	}
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

static kh_err world_connect(struct world *wd, struct kh_authority *a, unsigned flags)
{
	uint8_t ku[32];
	uint32_t ua;
	kh_err r;

	if ((r = issue(a, KH_ROLE_DECODER, NULL, &wd->dec_sm, &ua)) != KH_OK)
		return r;
	kh_transport_inproc(&wd->dec, kh_softmod_module(wd->dec_sm));
	kh_host_cas_init(&wd->cas, &wd->dec, &wd->cam, &wd->card, flags);
	if ((r = kh_authority_card_keys(a, wd->card_ua, wd->kp, ku)) != KH_OK)
		return r;
	kh_wipe(ku, sizeof ku);
	if ((r = provision(wd)) != KH_OK)
		return r;
	return kh_host_cas_connect(&wd->cas);
}

/*
 * The PC/SC world: the CAM and the card from files of their own, each plugged by a forked child
 * into one slot of the vpcd driver (the CAM on PORT, reader "NAME 00 00"; the card on PORT+1,
 * "NAME 00 01"), the host holding each reader through pcscd.
 */
static kh_err setup_pcsc(struct kh_authority *a)
{
	char cam[160], card[160];
	uint32_t ua;
	kh_err r;

	snprintf(cam, sizeof cam, "%s/cam_p.card", W.dir);
	snprintf(card, sizeof card, "%s/card_p.card", W.dir);
	snprintf(W.reader[0], sizeof W.reader[0], "%s 00 00", W.vpcd_name);
	snprintf(W.reader[1], sizeof W.reader[1], "%s 00 01", W.vpcd_name);
	if ((r = issue(a, KH_ROLE_CAM, cam, NULL, &ua)) != KH_OK ||
	    (r = issue(a, KH_ROLE_CARD, card, NULL, &W.pcs.card_ua)) != KH_OK)
		return r;
	if ((W.pcs.cam_pid = bench_spawn_vpcd("bench_cas", cam, (uint16_t)W.vpcd_port)) < 0 ||
	    (W.pcs.card_pid = bench_spawn_vpcd("bench_cas", card, (uint16_t)(W.vpcd_port + 1))) < 0)
		return KH_ERR_IO;
	for (int i = 0; i < 2; i++) {
		if ((r = bench_pcsc_connect_retry(i ? &W.pcs.card : &W.pcs.cam, W.reader[i])) != KH_OK) {
			fprintf(stderr, "bench_cas: PC/SC reader \"%s\" (vpcd port %u): %s\n", W.reader[i],
				W.vpcd_port + (unsigned)i, kh_strerror(r));
			if (i)
				kh_transport_close(&W.pcs.cam);
			return r;
		}
	}
	W.pcs.have_t = 2;
	if ((r = world_connect(&W.pcs, a, 0)) != KH_OK)
		return r;
	W.have_pcsc = 1;
	return KH_OK;
}

static kh_err setup(int want_unix, int want_pcsc)
{
	struct kh_authority *a = NULL;
	char p[4][160];
	uint32_t ua;
	kh_err r;

	if ((r = bench_mkdtemp(W.dir, sizeof W.dir, "kh-bench-cas-XXXXXX")) != KH_OK)
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
	if ((r = world_connect(&W.mem, a, 0)) != KH_OK)
		goto out;

	/* in memory, ladder mode */
	if ((r = issue(a, KH_ROLE_CAM, NULL, &W.lad.cam_sm, &ua)) != KH_OK ||
	    (r = issue(a, KH_ROLE_CARD, NULL, &W.lad.card_sm, &W.lad.card_ua)) != KH_OK)
		goto out;
	kh_transport_inproc(&W.lad.cam, kh_softmod_module(W.lad.cam_sm));
	kh_transport_inproc(&W.lad.card, kh_softmod_module(W.lad.card_sm));
	W.lad.have_t = 1;
	if ((r = world_connect(&W.lad, a, KH_HOST_CAS_LADDER)) != KH_OK)
		goto out;
	{
		/* The CAM must answer with a sealed pair: clear control words in ladder mode are a fault
		 * of the code measured, not something to measure. */
		struct kh_cw_answer cw;
		struct kh_ppv_offer o;
		if ((r = kh_host_cas_ecm(&W.lad.cas, W.ecm[0], W.ecm_len[0], &cw, &o)) != KH_OK)
			goto out;
		if (!cw.sealed_len) {
			kh_wipe(&cw, sizeof cw);
			fprintf(stderr, "bench_cas: ladder mode: the CAM answered clear control words\n");
			r = KH_ERR_LADDER;
			goto out;
		}
		kh_wipe(&cw, sizeof cw);
		if ((r = op_ecm_ladder(&W.lad, 0)) != KH_OK) {
			fprintf(stderr, "bench_cas: ladder mode: no sealed control words (%s)\n", kh_strerror(r));
			goto out;
		}
	}

	/* from files, in this process */
	snprintf(p[0], sizeof p[0], "%s/cam.card", W.dir);
	snprintf(p[1], sizeof p[1], "%s/card.card", W.dir);
	if ((r = issue(a, KH_ROLE_CAM, p[0], &W.file.cam_sm, &ua)) != KH_OK ||
	    (r = issue(a, KH_ROLE_CARD, p[1], &W.file.card_sm, &W.file.card_ua)) != KH_OK)
		goto out;
	kh_transport_inproc(&W.file.cam, kh_softmod_module(W.file.cam_sm));
	kh_transport_inproc(&W.file.card, kh_softmod_module(W.file.card_sm));
	W.file.have_t = 1;
	if ((r = world_connect(&W.file, a, 0)) != KH_OK)
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
		if ((r = world_connect(&W.unx, a, 0)) != KH_OK)
			goto out;
		W.have_unix = 1;
	}
	if (want_pcsc && (r = setup_pcsc(a)) != KH_OK)
		goto out;

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
	/* the same on the ladder path */
	{
		struct rec rc = {.inner = &W.lad.cam}, rd = {.inner = &W.lad.card};
		struct kh_transport rt = {rec_xfer, rec_close, &rc}, dt = {rec_xfer, rec_close, &rd};
		struct kh_transport *cam = W.lad.cas.cam, *card = W.lad.cas.card;
		W.lad.cas.cam = &rt;
		W.lad.cas.card = &dt;
		r = op_ecm_ladder(&W.lad, 0);
		W.lad.cas.cam = cam;
		W.lad.cas.card = card;
		if (r != KH_OK)
			goto out;
		if (rc.bad || rd.bad || rc.n != 2 || rd.n != 1) {
			fprintf(stderr, "bench_cas: unexpected ladder path: %zu CAM frames, %zu card frames\n", rc.n, rd.n);
			r = KH_ERR_INTERNAL;
			goto out;
		}
		W.lcmd_body[0] = rc.cmd[0];
		W.lresp_body[0] = rc.resp[0];
		W.lcmd_body[1] = rd.cmd[0];
		W.lresp_body[1] = rd.resp[0];
		W.lcmd_body[2] = rc.cmd[1];
		W.lresp_body[2] = rc.resp[1];
	}
	if ((r = desc_setup()) != KH_OK)
		goto out;
	W.ecm_ct = W.ecm_len[0] - KH_ECM_HDR_LEN - KH_CAS_TAG_LEN;

	/* the reference's contexts, keyed once */
	if ((r = kh_random(W.ckey, 32)) != KH_OK || (r = kh_random(W.rkey, 32)) != KH_OK ||
	    (r = kh_random(W.lkey, 32)) != KH_OK)
		goto out;
	r = KH_ERR_CRYPTO;
	if (!(W.gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) || !(W.ecm_dec = EVP_CIPHER_CTX_new()) ||
	    !(W.enc_c = EVP_CIPHER_CTX_new()) || !(W.dec_c = EVP_CIPHER_CTX_new()) || !(W.enc_r = EVP_CIPHER_CTX_new()) ||
	    !(W.dec_r = EVP_CIPHER_CTX_new()) || !(W.enc_l = EVP_CIPHER_CTX_new()) || !(W.dec_l = EVP_CIPHER_CTX_new()))
		goto out;
	if (EVP_DecryptInit_ex2(W.ecm_dec, W.gcm, W.skey, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_c, W.gcm, W.ckey, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_c, W.gcm, W.ckey, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_r, W.gcm, W.rkey, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_r, W.gcm, W.rkey, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_l, W.gcm, W.lkey, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_l, W.gcm, W.lkey, NULL, NULL) != 1)
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
	world_free(&W.lad);
	world_free(&W.pcs);
	for (int k = 0; k < ND; k++) {
		kh_scr_free(W.d[k].host);
		free(W.d[k].scr);
		kh_wipe(&W.d[k].sealed, sizeof W.d[k].sealed);
		kh_wipe(W.d[k].even, sizeof W.d[k].even);
		kh_wipe(W.d[k].odd, sizeof W.d[k].odd);
	}
	free(W.clear);
	free(W.work);
	free(W.batches);
	free(W.bulk);
	if (W.bskey)
		dvbcsa_bs_key_free(W.bskey);
	EVP_CIPHER_CTX_free(W.cbc);
	EVP_CIPHER_CTX_free(W.enc_l);
	EVP_CIPHER_CTX_free(W.dec_l);
	EVP_CIPHER_CTX_free(W.ecm_dec);
	EVP_PKEY_free(W.esg_pk);
	EVP_MD_CTX_free(W.sig_ctx);
	EVP_CIPHER_CTX_free(W.enc_c);
	EVP_CIPHER_CTX_free(W.dec_c);
	EVP_CIPHER_CTX_free(W.enc_r);
	EVP_CIPHER_CTX_free(W.dec_r);
	EVP_CIPHER_free(W.gcm);
	kh_wipe(W.skey, sizeof W.skey);
	kh_wipe(W.lkey, sizeof W.lkey);
	if (W.dir[0] && bench_rmtree(W.dir) != 0)
		fprintf(stderr, "bench_cas: could not remove %s\n", W.dir);
}

/* ---- rounds ---- */

static int selected(int b)
{
	return name_matches(b) && (B[b].via == V_PROC || (B[b].via == V_UNIX && W.have_unix) ||
				   (B[b].via == V_PCSC && W.have_pcsc));
}

static int nops(const struct bench *bb)
{
	return bb->kind == K_ECM ? W.ecms : bb->kind == K_EMM ? W.emms : W.dpasses;
}

static kh_err run_round(int b, int r)
{
	struct bench *bb = &B[b];
	int n = nops(bb);
	double t0, t1, sum = 0;
	kh_err e = KH_OK;

	if (bb->kind == K_EMM) /* untimed: this round's EMMs, with the card's next sequence numbers */
		for (int i = 0; i < n && e == KH_OK; i++)
			e = seal_emm(bb->wd, W.emm[i], &W.emm_len[i]);
	if (bb->kind == K_DESC && bb->wd) /* untimed: the decoder module loads this algorithm's pair */
		e = load(&W.lad, &W.d[desc_alg(b)].sealed);
	if (e != KH_OK)
		return e;
	t0 = now_us();
	for (int i = 0; i < n && e == KH_OK; i++) {
		double a;
		if (bb->kind == K_DESC) /* untimed: the scrambled stream again */
			memcpy(W.work, W.d[desc_alg(b)].scr, W.npkts * PL);
		a = now_us();
		switch (b) {
		case B_AEAD_REF: e = op_aead_ref(i); break;
		case B_AEAD_PATH: e = op_aead_path(i); break;
		case B_AEAD_LADDER: e = op_aead_ladder(i); break;
		case B_ECM_LADDER: e = op_ecm_ladder(bb->wd, i); break;
		default:
			e = bb->kind == K_DESC  ? desc_pass(b)
			    : bb->kind == K_ECM ? op_ecm(bb->wd, i)
						: op_emm(bb->wd, i);
			break;
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
	/* descrambling: Mbit/s of TS over the timed passes (the copies between them excluded) */
	bb->rate[r] = bb->kind == K_DESC ? (double)n * (double)(W.npkts * PL) * 8 / sum : n / ((t1 - t0) / 1e6);
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
	int by_rate; /* 1: Mbit/s of num over Mbit/s of den; 0: p50 of num over p50 of den */
};

static const struct ratio R[] = {
	{"ecm_cw_inproc_vs_aead", B_ECM_IN, B_AEAD_REF,
	 "p50 of ECM->CW in-process (memory) / raw EVP: ECM open + Ed25519 verify of its signature + AES-256-GCM "
	 "seal/open of command and response once per hop x 2 hops (contexts keyed once, same sizes)", 0},
	{"ecm_cw_inproc_vs_aead_path", B_ECM_IN, B_AEAD_PATH,
	 "the same / ECM open + verify + the 12 GCM calls of the round trips the path makes (decoder<->CAM twice, "
	 "CAM<->card once)", 0},
	{"ecm_cw_inproc_file_vs_inproc", B_ECM_FILE, B_ECM_IN, "p50, modules from files / in memory", 0},
	{"ecm_cw_unix_vs_inproc", B_ECM_UNIX, B_ECM_IN, "p50, two socket daemons (3 socket round trips per ECM) / in-process (memory)", 0},
	{"ecm_cw_pcsc_vs_unix", B_ECM_PCSC, B_ECM_UNIX,
	 "p50, pcscd + two vpcd readers (3 SCardTransmit per ECM) / two socket daemons, both from files", 0},
	{"ecm_cw_pcsc_vs_inproc", B_ECM_PCSC, B_ECM_IN, "p50, pcscd + two vpcd readers / in-process (memory)", 0},
	{"emm_inproc_file_vs_inproc", B_EMM_FILE, B_EMM_IN, "p50, durable store / store in memory", 0},
	{"emm_unix_vs_inproc_file", B_EMM_UNIX, B_EMM_FILE, "p50, daemon / in-process, both durable", 0},
	{"ecm_cw_ladder_inproc_vs_aead_path_ladder", B_ECM_LADDER, B_AEAD_LADDER,
	 "p50 of ECM->sealed CWs + LADDER LOAD in-process (memory) / raw EVP: ECM open + Ed25519 verify + the 12 GCM "
	 "calls of the ladder path's round trips + the ladder seal and open", 0},
	{"ecm_cw_ladder_inproc_vs_inproc", B_ECM_LADDER, B_ECM_IN,
	 "p50, ladder mode (sealed CWs, then LADDER LOAD) / open mode (clear CWs to the host), both in memory", 0},
	{"desc_csa2_ladder_vs_host", B_DESC_CSA_LADDER, B_DESC_CSA_HOST,
	 "Mbit/s, decoder module (DESCRAMBLE commands of 21 packets) / kh_scr_descramble in the host, same packets and CWs", 1},
	{"desc_csa2_ladder_vs_raw_bs", B_DESC_CSA_LADDER, B_DESC_CSA_RAW,
	 "Mbit/s, decoder module / raw dvbcsa_bs_decrypt in full batches on the same payloads", 1},
	{"desc_csa2_host_vs_raw_bs", B_DESC_CSA_HOST, B_DESC_CSA_RAW, "Mbit/s, kh_scr in the host / raw dvbcsa_bs_decrypt", 1},
	{"desc_cissa_ladder_vs_host", B_DESC_CISSA_LADDER, B_DESC_CISSA_HOST,
	 "Mbit/s, decoder module (DESCRAMBLE commands of 21 packets) / kh_scr_descramble in the host, same packets and CWs", 1},
	{"desc_cissa_ladder_vs_raw_cbc", B_DESC_CISSA_LADDER, B_DESC_AES_RAW,
	 "Mbit/s, decoder module / one raw EVP AES-128-CBC decryption over as many bytes as the payloads", 1},
	{"desc_cissa_host_vs_raw_cbc", B_DESC_CISSA_HOST, B_DESC_AES_RAW, "Mbit/s, kh_scr in the host / raw AES-128-CBC", 1},
};

static void print_results(int rounds)
{
	for (int b = 0; b < NB; b++) {
		if (!B[b].ran)
			continue;
		printf("bench=%s unit=us p50=%.2f p99=%.2f max=%.2f rounds=%d\n", B[b].name, med(B[b].p50, rounds),
		       med(B[b].p99, rounds), med(B[b].max, rounds), rounds);
		bench_print(B[b].name, B[b].kind == K_DESC ? "Mbit/s" : "ops/s", 1, B[b].rate, rounds);
		bench_print(B[b].name, "us", 3, B[b].mean, rounds);
	}
	for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
		double v[BENCH_MAX_ROUNDS];
		if (!B[R[i].num].ran || !B[R[i].den].ran)
			continue;
		/* the reference's p50 is its per-call time; each ratio is computed within a round */
		for (int r = 0; r < rounds; r++)
			v[r] = R[i].by_rate ? B[R[i].num].rate[r] / B[R[i].den].rate[r] : B[R[i].num].p50[r] / B[R[i].den].p50[r];
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
		if (!bb->ran || bb->kind == K_DESC)
			continue;
		qsort(bb->all, bb->nall, sizeof *bb->all, bench_cmp_double);
		printf("#   %-20s %9.2f %9.2f %9.1f %10.2f %10.1f %11.0f  %s\n", bb->name, med(bb->p50, rounds),
		       med(bb->p99, rounds), med(bb->max, rounds), pct(bb->all, bb->nall, 99), bb->all[bb->nall - 1],
		       med(bb->rate, rounds), bb->what);
	}
	printf("# descrambling: %zu packets (%.2f MB of TS) per pass, %d passes per round; p50 = one pass\n", W.npkts,
	       (double)(W.npkts * PL) / 1e6, W.dpasses);
	printf("#   %-20s %9s %11s  %s\n", "", "p50 us", "Mbit/s", "what");
	for (int b = 0; b < NB; b++)
		if (B[b].ran && B[b].kind == K_DESC)
			printf("#   %-20s %9.0f %11.1f  %s\n", B[b].name, med(B[b].p50, rounds), med(B[b].rate, rounds),
			       B[b].what);
	if (B[B_ECM_IN].ran) {
		double p99 = med(B[B_ECM_IN].p99, rounds);
		printf("# aim, p99 <= 1000 us in-process: ecm_cw_inproc p99 %.1f us (%s)", p99,
		       p99 <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_LADDER].ran)
			printf(", ecm_cw_ladder_inproc p99 %.1f us (%s)", med(B[B_ECM_LADDER].p99, rounds),
			       med(B[B_ECM_LADDER].p99, rounds) <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_FILE].ran)
			printf(", ecm_cw_inproc_file p99 %.1f us (%s)", med(B[B_ECM_FILE].p99, rounds),
			       med(B[B_ECM_FILE].p99, rounds) <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_UNIX].ran)
			printf(", ecm_cw_unix p99 %.1f us (%s)", med(B[B_ECM_UNIX].p99, rounds),
			       med(B[B_ECM_UNIX].p99, rounds) <= 1000 ? "met" : "NOT met");
		if (B[B_ECM_PCSC].ran)
			printf(", ecm_cw_pcsc p99 %.1f us (%s)", med(B[B_ECM_PCSC].p99, rounds),
			       med(B[B_ECM_PCSC].p99, rounds) <= 1000 ? "met" : "NOT met");
		printf("; a real smart card answers in 100,000-250,000 us\n");
	}
}

static const char usage[] =
	"usage: bench_cas [-r ROUNDS] [-e ECMS] [-m EMMS] [-d PASSES] [-s PACKETS] [-n] [-p] [-b NAME] [-t S]\n"
	"                 [-V PORT [-N NAME]]\n"
	"  -r ROUNDS  rounds per benchmark, 1..99 (default 7); figures are medians over rounds\n"
	"  -e ECMS    ECMs per round of each ECM benchmark (default 2000)\n"
	"  -m EMMS    EMMs per round of each EMM benchmark (default 200)\n"
	"  -d PASSES  descrambling passes over the stream per round of each descrambling benchmark\n"
	"             (default 10)\n"
	"  -s PACKETS 188-byte packets in the descrambling stream (default 4200: 200 DESCRAMBLE commands)\n"
	"  -n         skip the UNIX socket benchmarks\n"
	"  -p         pin this process and the module daemons to one CPU\n"
	"  -b NAME    run only the benchmarks whose name contains NAME\n"
	"  -V PORT    run ecm_cw_pcsc: a pcscd runs the vsmartcard-vpcd reader driver with its first\n"
	"             slot on 127.0.0.1:PORT and its second on PORT+1 (bench/pcsc.sh starts one)\n"
	"  -N NAME    the driver's FRIENDLYNAME in reader.conf (default \"Virtual PCD\"): the readers\n"
	"             are \"NAME 00 00\" (the CAM) and \"NAME 00 01\" (the card)\n"
	"  -t S       accepted and ignored (bench/run.sh passes bench_pair's options on; rounds here are\n"
	"             counted in operations, not seconds)\n";

int main(int argc, char **argv)
{
	int rounds = 7, no_unix = 0, pin = -1, c, rc = 1, any_unix = 0, want_pcsc;
	char *end;
	kh_err e;
	struct statfs sf;

	W.ecms = 2000;
	W.emms = 200;
	W.dpasses = 10;
	W.npkts = 4200;
	while ((c = getopt(argc, argv, "r:e:m:d:s:npb:t:V:N:h")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 'e': W.ecms = atoi(optarg); break;
		case 'm': W.emms = atoi(optarg); break;
		case 'd': W.dpasses = atoi(optarg); break;
		case 's': W.npkts = strtoul(optarg, NULL, 10); break;
		case 'n': no_unix = 1; break;
		case 'p': pin = 0; break;
		case 'b': only = optarg; break;
		case 't': break;
		case 'V':
			W.vpcd_port = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !W.vpcd_port || W.vpcd_port > 65534) {
				fputs(usage, stderr);
				return 2;
			}
			break;
		case 'N': W.vpcd_name = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || W.ecms < 1 || W.ecms > 1000000 ||
	    W.emms < 1 || W.emms > 1000000 || W.dpasses < 1 || W.dpasses > 100000 || W.npkts < 1 || W.npkts > 1000000) {
		fputs(usage, stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (pin == 0 && (pin = bench_pin()) < 0) {
		fprintf(stderr, "bench_cas: cannot pin to one CPU\n");
		return 1;
	}
	for (int b = 0; b < NB; b++)
		any_unix |= B[b].via == V_UNIX && name_matches(b);
	no_unix |= !any_unix;
	want_pcsc = name_matches(B_ECM_PCSC) && W.vpcd_port;

	W.ecm = calloc((size_t)W.ecms, sizeof *W.ecm);
	W.ecm_len = calloc((size_t)W.ecms, sizeof *W.ecm_len);
	W.emm = calloc((size_t)W.emms, sizeof *W.emm);
	W.emm_len = calloc((size_t)W.emms, sizeof *W.emm_len);
	W.lat = calloc((size_t)(W.ecms > W.emms ? W.ecms : W.emms) + (size_t)W.dpasses, sizeof *W.lat);
	for (int b = 0; b < NB; b++)
		if (!(B[b].all = calloc((size_t)rounds * (size_t)nops(&B[b]), sizeof *B[b].all)))
			goto out;
	if (!W.ecm || !W.ecm_len || !W.emm || !W.emm_len || !W.lat)
		goto out;

	if ((e = setup(!no_unix, want_pcsc)) != KH_OK) {
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
	printf("# ladder path: decoder->CAM CARD SEND %zu / answer %zu, CAM->card ECM %zu / answer %zu, decoder->CAM "
	       "CARD RESP %zu / answer (sealed control words) %zu; then LADDER LOAD (plain)\n",
	       W.lcmd_body[0], W.lresp_body[0], W.lcmd_body[1], W.lresp_body[1], W.lcmd_body[2], W.lresp_body[2]);
	if (W.have_pcsc)
		printf("# PC/SC: the CAM in \"%s\" (vpcd 127.0.0.1:%u), the card in \"%s\" (:%u), through pcscd\n",
		       W.reader[0], W.vpcd_port, W.reader[1], W.vpcd_port + 1);
	else if (name_matches(B_ECM_PCSC))
		printf("# ecm_cw_pcsc skipped: no -V PORT (it needs a pcscd running the vsmartcard-vpcd reader driver; "
		       "bench/pcsc.sh runs bench_cas with one of its own)\n");
	printf("# card files in %s (%s); a store of the card's state = 2 atomic file replacements, each with "
	       "fsync of the file and of the directory; ECM path stores every %d ECMs\n",
	       W.dir,
	       statfs(W.dir, &sf) != 0 ? "filesystem unknown" :
	       sf.f_type == 0x01021994 ? "tmpfs: fsync reaches no disk" :
	       sf.f_type == 0xEF53     ? "ext2/3/4" :
					 "not tmpfs",
	       256); /* KH_CAS_USAGE_FLUSH, src/module/module_int.h */
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
