/*
 * bench_dist: what program distribution costs (docs/protocols/distribution.md), next to the raw
 * primitives it is made of, on the same bytes and in the same run (report ratios, never a bare
 * time).
 *
 *   delivery    a program of S bytes (-s, default 10 MiB) end to end, in-process. Server side:
 *               kh_dist_srv_package (every chunk sealed under a fresh Kx, H_E) into memory,
 *               kh_dist_srv_key (wrap + sign) and the program signature. Processor side: a
 *               processor module (a soft module, personalised by a throwaway authority) driven in
 *               APDUs as the runner drives it: DIST KEY, DIST ACTIVATE, RUN OPEN, then every RUN
 *               CHUNK, each plaintext written into a memory file (memfd) as the runner writes it
 *               (the runner's fork and exec are not measured). The session before each delivery
 *               (HELLO, AUTH) is set up untimed: it is the handshake below.
 *   raw         AES-256-GCM through EVP on the same plaintext in 3968-byte chunks, each with a
 *               nonce of its own and an aad as long as a chunk's: seal every chunk into memory,
 *               then open every chunk (tag checked) into memory; contexts keyed once (the floor).
 *   handshake   DIST HELLO; the server's check of it (two certificate checks); kh_dist_srv_auth
 *               (sign); DIST AUTH (the processor checks the server's certificate, verifies, signs);
 *               kh_dist_srv_resp (verify); kh_dist_srv_key (HPKE wrap + sign); DIST KEY (verify,
 *               and the licence token sealed).
 *   primitives  what the handshake is made of, alone: kh_cert_check of the processor's signing
 *               certificate, Ed25519 sign and verify of a message as long as DIST KEY's signed
 *               one, kh_hpke_seal_base of the 32-byte key (the wrap's info and aad lengths).
 *
 * Ratios are the floor's time over ours, computed within each round (1.00: no overhead; the aim
 * for delivery is >= 0.5, keyhole at most twice raw):
 *   delivery_vs_raw_aes_gcm           (raw seal + raw open) / (server side + processor side)
 *   delivery_server_vs_raw_seal       raw seal / server side
 *   delivery_processor_vs_raw_open    raw open / processor side
 *   handshake_vs_primitives           (3 cert_check + 3 sign + 3 verify + hpke_seal) / handshake
 *
 * Every benchmark runs R rounds (-r, default 7) of ~T seconds (-t, default 0.3), at least one
 * operation each; the rounds are interleaved across benchmarks (round 1 of each, then round 2 of
 * each, ...) so that a noisy spell on a shared machine hits numerator and denominator alike.
 * Output: bench=<name> unit=<unit> median= min= max= rounds=, ratio=<name> value= min= max=
 * rounds= note=; '#' lines are comments, then a human summary after "# summary". -n and -b (of
 * bench_pair, given by bench/run.sh) are accepted and ignored: nothing here uses a socket.
 * Nothing asserts on time; the exit status is non-zero only when an operation fails.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/host.h"
#include "keyhole/hpke.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"

#include "util.h"

#define PROGRAM 7u
#define VERSION 3u
#define SERVER_UA (KH_DIST_SERIAL_BASE + 1)
#define CHUNK_AAD_LEN (21 + 4 + 4 + KH_SHA256_LEN + 4 + 1) /* a chunk's aad: label, binding, i, last */
#define TOKEN_MAX 512

static const char manifest[] = "name: bench\nversion: 1\nkind: elf\n";
static const char info_wrap[] = "keyhole dist v1 key"; /* the wrap's HPKE info */
static const uint8_t receipt_id[KH_DIST_RECEIPT_LEN] = "bench-receipt-01";

/* ---- figures: seconds per operation, per round ---- */

enum {
	F_SERVER,  /* delivery, server side */
	F_PROC,    /* delivery, processor side */
	F_RAW_SEAL,
	F_RAW_OPEN,
	F_HANDSHAKE,
	F_CERT,
	F_SIGN,
	F_VERIFY,
	F_HPKE,
	NF
};
static double fig[NF][BENCH_MAX_ROUNDS];

/* ---- the world, set up once (untimed) ---- */

static struct {
	char dir[64], auth_dir[128];
	struct kh_softmod *sm;
	struct kh_transport proc;
	struct kh_dist_server srv;
	uint8_t *pt;      /* the program */
	size_t len;
	uint8_t *pkg;     /* the package the server writes */
	size_t pkg_len, pkg_cap;
	int mem_fd;       /* where the processor side writes the plaintext */
	struct kh_dist_prog prog; /* the handshake's binding (the package's, once made) */
	uint8_t kx[KH_KEY_LEN];
	/* primitives */
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
	uint8_t msg[KH_DIST_MSG_MAX], sig[KH_ED25519_SIG_LEN];
	size_t msg_len;
	uint8_t pair_pk[KH_X25519_LEN], aad[8 + KH_SHA256_LEN];
	/* raw AES-256-GCM */
	EVP_CIPHER *gcm;
	EVP_CIPHER_CTX *enc, *dec;
	uint8_t raw_key[32], raw_aad[CHUNK_AAD_LEN];
	uint8_t *raw_ct, *raw_pt;
	/* one APDU's answer */
	uint8_t resp[KH_APDU_MAX_RESP];
	uint8_t data[4 + KH_DIST_CHUNK_CT_MAX];
} W = {.mem_fd = -1};

static uint64_t now_unix(void)
{
	return (uint64_t)time(NULL);
}

/* One command to the processor; its answer's data in W.resp (*n bytes). */
static kh_err proc_cmd(uint8_t ins, const uint8_t *data, size_t len, size_t *n)
{
	uint16_t sw;
	return kh_host_apdu(&W.proc, ins, 0, data, len, W.resp, sizeof W.resp, n, &sw);
}

/* The licence token the processor answered (tag 1 of W.resp, n bytes) into tok. */
static kh_err token_of(size_t n, uint8_t *tok, size_t *toklen)
{
	struct kh_tlv t[KH_DIST_T_TOKEN + 1];
	kh_err r;

	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(W.resp, n, t, KH_DIST_T_TOKEN, 1u << KH_DIST_T_TOKEN)) != KH_OK)
		return r;
	if (t[KH_DIST_T_TOKEN].len > TOKEN_MAX)
		return KH_ERR_TOO_LARGE;
	memcpy(tok, t[KH_DIST_T_TOKEN].v, t[KH_DIST_T_TOKEN].len);
	*toklen = t[KH_DIST_T_TOKEN].len;
	return KH_OK;
}

/* HELLO, its check, AUTH and the check of the answer: an authenticated session in *p. */
static kh_err session(struct kh_dist_peer *p)
{
	uint8_t auth[2048];
	struct kh_wr w;
	size_t n;
	kh_err r;

	if ((r = proc_cmd(KH_INS_DIST_HELLO, NULL, 0, &n)) != KH_OK ||
	    (r = kh_dist_srv_hello(&W.srv, W.resp, n, now_unix(), p)) != KH_OK)
		return r;
	kh_wr_init(&w, auth, sizeof auth);
	if ((r = kh_dist_srv_auth(&W.srv, p, &w)) != KH_OK || (r = proc_cmd(KH_INS_DIST_AUTH, auth, w.len, &n)) != KH_OK)
		return r;
	return kh_dist_srv_resp(&W.srv, p, W.resp, n);
}

/* The server's DIST KEY for p, sent: the pending token into tok. */
static kh_err key_step(const struct kh_dist_peer *p, uint8_t *tok, size_t *toklen, double *t_srv, double *t_proc)
{
	uint8_t key[1024];
	struct kh_wr w;
	double t0 = bench_now_s(), t1;
	size_t n;
	kh_err r;

	kh_wr_init(&w, key, sizeof key);
	if ((r = kh_dist_srv_key(&W.srv, p, &W.prog, W.kx, &w)) != KH_OK)
		return r;
	t1 = bench_now_s();
	r = proc_cmd(KH_INS_DIST_KEY, key, w.len, &n);
	if (r == KH_OK)
		r = token_of(n, tok, toklen);
	*t_srv += t1 - t0;
	*t_proc += bench_now_s() - t1;
	return r;
}

static kh_err put_pkg(void *ctx, const uint8_t *b, size_t n)
{
	(void)ctx;
	if (n > W.pkg_cap - W.pkg_len)
		return KH_ERR_BUF;
	memcpy(W.pkg + W.pkg_len, b, n);
	W.pkg_len += n;
	return KH_OK;
}

/* The processor's side of a run, as the runner does it: RUN OPEN, every chunk into the memfd. */
static kh_err run(const uint8_t *tok, size_t toklen)
{
	struct kh_dist_pkg pk;
	struct kh_wr w;
	size_t n;
	kh_err r;

	if ((r = kh_dist_pkg_parse(W.pkg, W.pkg_len, W.pkg_len, &pk)) != KH_OK)
		return r;
	kh_wr_init(&w, W.data, sizeof W.data);
	kh_tlv_put(&w, KH_DIST_T_RUN_TOKEN, tok, toklen);
	if ((r = kh_tlv_put(&w, KH_DIST_T_MANIFEST, pk.manifest, pk.manifest_len)) != KH_OK ||
	    (r = proc_cmd(KH_INS_RUN_OPEN, W.data, w.len, &n)) != KH_OK)
		return r;
	if (n != 4 || kh_get_be32(W.resp) != pk.chunks)
		return KH_ERR_FORMAT;
	for (uint32_t i = 0; i < pk.chunks; i++) {
		size_t len = kh_dist_pkg_chunk_len(&pk, i);

		kh_put_be32(W.data, i);
		memcpy(W.data + 4, W.pkg + kh_dist_pkg_chunk_off(&pk, i), len);
		if ((r = proc_cmd(KH_INS_RUN_CHUNK, W.data, 4 + len, &n)) != KH_OK)
			return r;
		if (write(W.mem_fd, W.resp, n) != (ssize_t)n)
			return KH_ERR_IO;
		kh_wipe(W.resp, n);
	}
	return KH_OK;
}

/* ---- operations: each adds the seconds of its timed parts into t[] ---- */

/* One delivery: the session untimed, then the server's work and the processor's. */
static kh_err op_delivery(double t[2])
{
	uint8_t tok[TOKEN_MAX], sig[KH_ED25519_SIG_LEN], act[TOKEN_MAX + 128];
	struct kh_dist_peer p;
	struct kh_wr w;
	size_t toklen, n;
	double t0, t1;
	kh_err r;

	if ((r = session(&p)) != KH_OK)
		return r;
	if (ftruncate(W.mem_fd, 0) != 0 || lseek(W.mem_fd, 0, SEEK_SET) != 0)
		return KH_ERR_IO;
	W.pkg_len = 0;
	/* the server: a fresh key, the package, the key message */
	t0 = bench_now_s();
	if ((r = kh_random(W.kx, sizeof W.kx)) != KH_OK ||
	    (r = kh_dist_srv_package(W.kx, &W.prog, (const uint8_t *)manifest, sizeof manifest - 1, W.pt, W.len, put_pkg,
				     NULL)) != KH_OK)
		return r;
	t[0] += bench_now_s() - t0;
	if ((r = key_step(&p, tok, &toklen, &t[0], &t[1])) != KH_OK)
		return r;
	/* the server's program signature after the charge; the processor activates */
	t0 = bench_now_s();
	if ((r = kh_dist_srv_program_sig(&W.srv, p.fp, &W.prog, receipt_id, sig)) != KH_OK)
		return r;
	t1 = bench_now_s();
	kh_wr_init(&w, act, sizeof act);
	kh_tlv_put(&w, KH_DIST_T_TOKEN, tok, toklen);
	kh_tlv_put(&w, KH_DIST_T_PROGRAM_SIG, sig, sizeof sig);
	if ((r = kh_tlv_put(&w, KH_DIST_T_RECEIPT, receipt_id, sizeof receipt_id)) != KH_OK ||
	    (r = proc_cmd(KH_INS_DIST_ACTIVATE, act, w.len, &n)) != KH_OK || (r = token_of(n, tok, &toklen)) != KH_OK ||
	    (r = run(tok, toklen)) != KH_OK)
		return r;
	t[0] += t1 - t0;
	t[1] += bench_now_s() - t1;
	/* the plaintext arrived whole */
	if (lseek(W.mem_fd, 0, SEEK_CUR) != (off_t)W.len)
		return KH_ERR_FORMAT;
	return KH_OK;
}

static int raw_chunk(EVP_CIPHER_CTX *c, int enc, uint32_t i, const uint8_t *in, int n, uint8_t *out, uint8_t *tag)
{
	uint8_t nonce[12] = {0};
	int l;

	kh_put_be32(nonce + 4, i);
	if (EVP_CipherInit_ex2(c, NULL, NULL, nonce, enc, NULL) != 1 ||
	    (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, KH_TAG_LEN, tag) != 1) ||
	    EVP_CipherUpdate(c, NULL, &l, W.raw_aad, sizeof W.raw_aad) != 1 || EVP_CipherUpdate(c, out, &l, in, n) != 1 ||
	    EVP_CipherFinal_ex(c, out + n, &l) != 1)
		return 0;
	return !enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, KH_TAG_LEN, tag) == 1;
}

/* Every chunk of the program through raw AES-256-GCM: sealed into W.raw_ct, or opened from it. */
static kh_err raw_pass(int enc)
{
	size_t chunks = (W.len - 1) / KH_DIST_CHUNK_MAX + 1;

	for (size_t i = 0; i < chunks; i++) {
		size_t off = i * KH_DIST_CHUNK_MAX, k = W.len - off < KH_DIST_CHUNK_MAX ? W.len - off : KH_DIST_CHUNK_MAX;
		uint8_t *ct = W.raw_ct + i * KH_DIST_CHUNK_CT_MAX;

		if (!raw_chunk(enc ? W.enc : W.dec, enc, (uint32_t)i, enc ? W.pt + off : ct, (int)k,
			       enc ? ct : W.raw_pt + off, ct + k))
			return KH_ERR_CRYPTO;
	}
	return KH_OK;
}

/* Raw AES-256-GCM: seal every chunk (t[0]), then open every chunk (t[1]). */
static kh_err op_raw(double t[2])
{
	double t0 = bench_now_s(), t1;
	kh_err r;

	if ((r = raw_pass(1)) != KH_OK)
		return r;
	t1 = bench_now_s();
	if ((r = raw_pass(0)) != KH_OK)
		return r;
	t[0] += t1 - t0;
	t[1] += bench_now_s() - t1;
	return KH_OK;
}

/* The whole handshake, every step timed. */
static kh_err op_handshake(double t[2])
{
	struct kh_dist_peer p;
	uint8_t tok[TOKEN_MAX];
	double t0 = bench_now_s(), ts = 0, tp = 0;
	size_t toklen;
	kh_err r;

	if ((r = session(&p)) != KH_OK)
		return r;
	t[0] += bench_now_s() - t0;
	if ((r = key_step(&p, tok, &toklen, &ts, &tp)) != KH_OK)
		return r;
	t[0] += ts + tp;
	return KH_OK;
}

static kh_err op_cert(double t[2])
{
	struct kh_cert_info ci;
	double t0 = bench_now_s();
	kh_err r = kh_cert_check(W.cert, W.cert_len, W.srv.root_pk, KH_ROLE_PROCESSOR, KH_CERT_KEY_ED25519, now_unix(), &ci);
	t[0] += bench_now_s() - t0;
	return r;
}

static kh_err op_sign(double t[2])
{
	double t0 = bench_now_s();
	kh_err r = kh_ed25519_sign(W.srv.sk, W.msg, W.msg_len, W.sig);
	t[0] += bench_now_s() - t0;
	return r;
}

static kh_err op_verify(double t[2])
{
	double t0 = bench_now_s();
	kh_err r = kh_ed25519_verify(W.srv.pk, W.msg, W.msg_len, W.sig);
	t[0] += bench_now_s() - t0;
	return r;
}

static kh_err op_hpke(double t[2])
{
	uint8_t enc[KH_HPKE_ENC_LEN], ct[KH_KEY_LEN + KH_TAG_LEN];
	double t0 = bench_now_s();
	kh_err r = kh_hpke_seal_base(W.pair_pk, (const uint8_t *)info_wrap, sizeof info_wrap - 1, W.aad, sizeof W.aad,
				     W.kx, sizeof W.kx, enc, ct);
	t[0] += bench_now_s() - t0;
	return r;
}

static const struct {
	const char *name;
	kh_err (*fn)(double t[2]);
	int f0, f1; /* the figures of t[0] and t[1] (-1: none) */
} B[] = {
	{"delivery", op_delivery, F_SERVER, F_PROC},
	{"raw_aes_gcm", op_raw, F_RAW_SEAL, F_RAW_OPEN},
	{"handshake", op_handshake, F_HANDSHAKE, -1},
	{"cert_check", op_cert, F_CERT, -1},
	{"ed25519_sign", op_sign, F_SIGN, -1},
	{"ed25519_verify", op_verify, F_VERIFY, -1},
	{"hpke_seal_32", op_hpke, F_HPKE, -1},
};
#define NB (sizeof B / sizeof B[0])

/* One round of benchmark b: operations for ~secs of wall clock, at least one. */
static kh_err run_round(size_t b, int round, double secs)
{
	double t[2] = {0, 0}, end = bench_now_s() + secs;
	unsigned long n = 0;
	kh_err e;

	do {
		if ((e = B[b].fn(t)) != KH_OK) {
			fprintf(stderr, "bench_dist: %s failed: %s\n", B[b].name, kh_strerror(e));
			return e;
		}
		n++;
	} while (bench_now_s() < end);
	fig[B[b].f0][round] = t[0] / (double)n;
	if (B[b].f1 >= 0)
		fig[B[b].f1][round] = t[1] / (double)n;
	return KH_OK;
}

/* ---- setup and teardown ---- */

static kh_err setup_server(struct kh_authority *a)
{
	uint8_t sk[KH_ED25519_SK_LEN], pk[KH_ED25519_PK_LEN], der[KH_CERT_MAX];
	size_t len;
	kh_err r;

	if ((r = kh_ed25519_keygen(sk, pk)) == KH_OK &&
	    (r = kh_authority_issue(a, KH_ROLE_DISTRIBUTOR, SERVER_UA, KH_CERT_KEY_ED25519, pk, "sign", der, sizeof der,
				    &len)) == KH_OK) {
		uint8_t root[32];
		kh_authority_root_pk(a, root);
		r = kh_dist_server_init(&W.srv, sk, der, len, root);
	}
	kh_wipe(sk, sizeof sk);
	return r;
}

static kh_err setup_processor(struct kh_authority *a)
{
	struct kh_issued *iss = calloc(1, sizeof *iss);
	kh_err r;

	if (!iss)
		return KH_ERR_NOMEM;
	if ((r = kh_softmod_new_blank(&W.sm)) == KH_OK) {
		kh_transport_inproc(&W.proc, kh_softmod_module(W.sm));
		r = kh_authority_personalise(a, &W.proc, KH_ROLE_PROCESSOR, 0, iss);
	}
	kh_wipe(iss, sizeof *iss);
	free(iss);
	return r;
}

/* The program, the buffers, and one delivery made untimed (the handshake's binding is its). */
static kh_err setup_data(void)
{
	size_t chunks = (W.len - 1) / KH_DIST_CHUNK_MAX + 1;
	struct kh_dist_peer p;
	struct kh_tlv t[KH_DIST_T_CERT_PAIR + 1];
	struct kh_wr w;
	double untimed[2] = {0, 0};
	size_t n;
	kh_err r;

	W.pkg_cap = KH_DIST_PKG_HDR_MAX + chunks * KH_DIST_CHUNK_CT_MAX;
	if (!(W.pt = malloc(W.len)) || !(W.pkg = malloc(W.pkg_cap)) || !(W.raw_ct = malloc(chunks * KH_DIST_CHUNK_CT_MAX)) ||
	    !(W.raw_pt = malloc(W.len)))
		return KH_ERR_NOMEM;
	if ((W.mem_fd = memfd_create("bench-dist-program", MFD_CLOEXEC)) < 0)
		return KH_ERR_IO;
	if ((r = kh_random(W.pt, W.len)) != KH_OK || (r = kh_random(W.raw_key, sizeof W.raw_key)) != KH_OK ||
	    (r = kh_random(W.raw_aad, sizeof W.raw_aad)) != KH_OK)
		return r;
	W.prog.program = PROGRAM;
	W.prog.version = VERSION;
	if ((r = op_delivery(untimed)) != KH_OK)
		return r;
	/* the plaintext came back as it went in */
	{
		uint8_t *back = mmap(NULL, W.len, PROT_READ, MAP_SHARED, W.mem_fd, 0);
		int same;
		if (back == MAP_FAILED)
			return KH_ERR_IO;
		same = memcmp(back, W.pt, W.len) == 0;
		munmap(back, W.len);
		if (!same)
			return KH_ERR_FORMAT;
	}
	/* the primitives' inputs: the processor's certificate and pairing key, a KEY-sized message */
	if ((r = proc_cmd(KH_INS_DIST_HELLO, NULL, 0, &n)) != KH_OK ||
	    (r = kh_dist_srv_hello(&W.srv, W.resp, n, now_unix(), &p)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(W.resp, n, t, KH_DIST_T_CERT_PAIR, 0)) != KH_OK)
		return r;
	memcpy(W.cert, t[KH_DIST_T_CERT_SIGN].v, t[KH_DIST_T_CERT_SIGN].len);
	W.cert_len = t[KH_DIST_T_CERT_SIGN].len;
	memcpy(W.pair_pk, p.pair_pk, sizeof W.pair_pk);
	kh_put_be32(W.aad, PROGRAM);
	kh_put_be32(W.aad + 4, VERSION);
	memcpy(W.aad + 8, W.prog.he, KH_SHA256_LEN);
	kh_wr_init(&w, W.msg, sizeof W.msg);
	{
		/* the hello's Rc stands in for Rs too: only the message's length matters here */
		uint8_t wrapped[KH_DIST_WRAP_LEN] = {0};
		if ((r = kh_dist_key_msg(p.rc, p.rc, p.fp, &W.prog, wrapped, &w)) != KH_OK)
			return r;
	}
	W.msg_len = w.len;
	if ((r = kh_ed25519_sign(W.srv.sk, W.msg, W.msg_len, W.sig)) != KH_OK)
		return r;
	/* raw AES-256-GCM contexts, keyed once */
	if (!(W.gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) || !(W.enc = EVP_CIPHER_CTX_new()) ||
	    !(W.dec = EVP_CIPHER_CTX_new()) || EVP_EncryptInit_ex2(W.enc, W.gcm, W.raw_key, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec, W.gcm, W.raw_key, NULL, NULL) != 1)
		return KH_ERR_CRYPTO;
	if (op_raw(untimed) != KH_OK || memcmp(W.raw_pt, W.pt, W.len) != 0)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

static kh_err setup(void)
{
	struct kh_authority *a = NULL;
	kh_err r;

	if ((r = bench_mkdtemp(W.dir, sizeof W.dir, "kh-bench-dist-XXXXXX")) != KH_OK)
		return r;
	snprintf(W.auth_dir, sizeof W.auth_dir, "%s/authority", W.dir);
	if ((r = kh_authority_init(W.auth_dir, "Keyhole bench operator")) != KH_OK ||
	    (r = kh_authority_open(W.auth_dir, &a)) != KH_OK)
		goto out;
	if ((r = setup_server(a)) != KH_OK || (r = setup_processor(a)) != KH_OK)
		goto out;
	r = setup_data();
out:
	kh_authority_free(a);
	return r;
}

static void teardown(void)
{
	kh_softmod_free(W.sm);
	kh_wipe(&W.srv, sizeof W.srv);
	kh_wipe(W.kx, sizeof W.kx);
	OPENSSL_cleanse(W.raw_key, sizeof W.raw_key);
	EVP_CIPHER_CTX_free(W.enc);
	EVP_CIPHER_CTX_free(W.dec);
	EVP_CIPHER_free(W.gcm);
	if (W.mem_fd >= 0)
		close(W.mem_fd);
	free(W.pt);
	free(W.pkg);
	free(W.raw_ct);
	free(W.raw_pt);
	if (W.dir[0] && bench_rmtree(W.dir) != 0)
		fprintf(stderr, "bench_dist: could not remove %s\n", W.dir);
}

/* ---- output ---- */

/* fig[f] in another unit: scale * value, or MB per second of the program when mbs. */
static void print_fig(const char *name, const char *unit, int f, double scale, int mbs, int rounds)
{
	double v[BENCH_MAX_ROUNDS];
	for (int r = 0; r < rounds; r++)
		v[r] = mbs ? (double)W.len / fig[f][r] / 1e6 : fig[f][r] * scale;
	bench_print(name, unit, 3, v, rounds);
}

/* The same for the sum of two figures. */
static void print_sum(const char *name, const char *unit, int f, int g, double scale, int mbs, int rounds)
{
	double v[BENCH_MAX_ROUNDS];
	for (int r = 0; r < rounds; r++) {
		double s = fig[f][r] + fig[g][r];
		v[r] = mbs ? (double)W.len / s / 1e6 : s * scale;
	}
	bench_print(name, unit, 3, v, rounds);
}

static double prims(int r)
{
	return 3 * fig[F_CERT][r] + 3 * fig[F_SIGN][r] + 3 * fig[F_VERIFY][r] + fig[F_HPKE][r];
}

static double med(int f, int rounds)
{
	return bench_stats_of(fig[f], rounds).med;
}

static void print_results(int rounds)
{
	double v[BENCH_MAX_ROUNDS];

	print_sum("delivery", "ms", F_SERVER, F_PROC, 1e3, 0, rounds);
	print_sum("delivery", "MB/s", F_SERVER, F_PROC, 0, 1, rounds);
	print_fig("delivery_server", "ms", F_SERVER, 1e3, 0, rounds);
	print_fig("delivery_processor", "ms", F_PROC, 1e3, 0, rounds);
	print_sum("raw_aes_gcm", "ms", F_RAW_SEAL, F_RAW_OPEN, 1e3, 0, rounds);
	print_sum("raw_aes_gcm", "MB/s", F_RAW_SEAL, F_RAW_OPEN, 0, 1, rounds);
	print_fig("raw_aes_gcm_seal", "ms", F_RAW_SEAL, 1e3, 0, rounds);
	print_fig("raw_aes_gcm_open", "ms", F_RAW_OPEN, 1e3, 0, rounds);
	print_fig("handshake", "us", F_HANDSHAKE, 1e6, 0, rounds);
	print_fig("cert_check", "us", F_CERT, 1e6, 0, rounds);
	print_fig("ed25519_sign", "us", F_SIGN, 1e6, 0, rounds);
	print_fig("ed25519_verify", "us", F_VERIFY, 1e6, 0, rounds);
	print_fig("hpke_seal_32", "us", F_HPKE, 1e6, 0, rounds);

	for (int r = 0; r < rounds; r++)
		v[r] = (fig[F_RAW_SEAL][r] + fig[F_RAW_OPEN][r]) / (fig[F_SERVER][r] + fig[F_PROC][r]);
	bench_print_ratio("delivery_vs_raw_aes_gcm", v, rounds,
			  "raw AES-256-GCM seal + open of the same chunks / the whole delivery (aim >= 0.5)");
	for (int r = 0; r < rounds; r++)
		v[r] = fig[F_RAW_SEAL][r] / fig[F_SERVER][r];
	bench_print_ratio("delivery_server_vs_raw_seal", v, rounds,
			  "raw seal / package (chunks, H_E) + key message + program signature");
	for (int r = 0; r < rounds; r++)
		v[r] = fig[F_RAW_OPEN][r] / fig[F_PROC][r];
	bench_print_ratio("delivery_processor_vs_raw_open", v, rounds,
			  "raw open / DIST KEY + ACTIVATE + RUN OPEN + every RUN CHUNK into a memfd");
	for (int r = 0; r < rounds; r++)
		v[r] = prims(r) / fig[F_HANDSHAKE][r];
	bench_print_ratio("handshake_vs_primitives", v, rounds,
			  "(3 cert_check + 3 ed25519_sign + 3 ed25519_verify + hpke_seal_32) / the handshake");
}

static void print_summary(int rounds)
{
	double srv = med(F_SERVER, rounds) * 1e3, proc = med(F_PROC, rounds) * 1e3;
	double seal = med(F_RAW_SEAL, rounds) * 1e3, open = med(F_RAW_OPEN, rounds) * 1e3;
	double hs = med(F_HANDSHAKE, rounds) * 1e6, cc = med(F_CERT, rounds) * 1e6, sg = med(F_SIGN, rounds) * 1e6;
	double vf = med(F_VERIFY, rounds) * 1e6, hp = med(F_HPKE, rounds) * 1e6;

	printf("# summary (medians of %d rounds)\n", rounds);
	printf("# delivery of %.2f MB: server %.2f ms + processor %.2f ms = %.2f ms; raw AES-256-GCM seal %.2f ms + "
	       "open %.2f ms = %.2f ms\n",
	       (double)W.len / 1e6, srv, proc, srv + proc, seal, open, seal + open);
	printf("# handshake %.1f us: 3 cert checks %.1f, 3 signs %.1f, 3 verifies %.1f, HPKE seal %.1f, rest "
	       "(APDUs, hashes, token, module) %.1f\n",
	       hs, 3 * cc, 3 * sg, 3 * vf, hp, hs - 3 * cc - 3 * sg - 3 * vf - hp);
}

static const char usage[] =
	"usage: bench_dist [-r ROUNDS] [-t SECONDS] [-s BYTES] [-p] [-n] [-b NAME]\n"
	"  -r ROUNDS   rounds per benchmark, 1..99 (default 7); medians are over rounds\n"
	"  -t SECONDS  length of one round (default 0.3); at least one operation a round\n"
	"  -s BYTES    size of the program delivered (default 10485760, 10 MiB)\n"
	"  -p          pin this process to one CPU\n"
	"  -n, -b NAME accepted for bench/run.sh, ignored\n";

int main(int argc, char **argv)
{
	int rounds = 7, pin = -1, c, rc = 1;
	double secs = 0.3;
	unsigned long long size = 10u << 20;
	char *end;
	kh_err e;

	while ((c = getopt(argc, argv, "r:t:s:pnb:h")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 's':
			errno = 0;
			size = strtoull(optarg, &end, 10);
			if (errno || *end || optarg[0] == '-')
				size = 0;
			break;
		case 'p': pin = 0; break;
		case 'n':
		case 'b': break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || !(secs > 0.001 && secs < 60) || size < 1 ||
	    size > (1ull << 30)) {
		fputs(usage, stderr);
		return 2;
	}
	W.len = (size_t)size;
	if (pin == 0 && (pin = bench_pin()) < 0) {
		fprintf(stderr, "bench_dist: cannot pin to one CPU\n");
		return 1;
	}
	if ((e = setup()) != KH_OK) {
		fprintf(stderr, "bench_dist: setup: %s\n", kh_strerror(e));
		goto out;
	}
	printf("# bench_dist: %d rounds of %.2f s per benchmark, rounds interleaved across benchmarks\n", rounds, secs);
	bench_print_pin(pin);
	printf("# %s; program %zu bytes in %u chunks, package %zu bytes; processor in-process (soft module)\n",
	       OpenSSL_version(OPENSSL_VERSION), W.len, W.prog.chunks, W.pkg_len);
	fflush(stdout);
	for (int r = 0; r < rounds; r++)
		for (size_t b = 0; b < NB; b++)
			if (run_round(b, r, secs) != KH_OK)
				goto out;
	print_results(rounds);
	print_summary(rounds);
	rc = 0;
out:
	fflush(stdout);
	teardown();
	return rc;
}
