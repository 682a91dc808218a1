/*
 * bench_pair: what the paired channel of seed 000 costs, next to the primitives it is made of,
 * all measured in the same run (report ratios, never a bare time).
 *
 *   primitives  X25519 derive / keygen / public, Ed25519 verify of a certificate-sized message,
 *               X.509 parse and the whole certificate check, HKDF, HPKE seal/open of the 48-byte
 *               PAIR OPEN secret, the four AES-256-GCM calls of a sealed round trip (facade and
 *               raw EVP), and a minimal framed round trip over a UNIX socket to another process
 *               (one send per frame, as transport.c does, and two)
 *   x25519_derive_withpub: kh_x25519_kp, the derive HPKE uses (our public key handed in)
 *   protocol    CAM<->card pairing and sealed ECHO round trips, decoder<->CAM link pairing and
 *               sealed ECHO, in-process and through the UNIX socket transport (module daemons
 *               forked from this process)
 *
 * Every benchmark runs R rounds (-r, default 7) of ~T seconds (-t, default 0.3); the rounds of
 * all benchmarks are interleaved (round 1 of each, then round 2 of each, ...) so that a noisy
 * spell on this shared machine hits numerator and denominator of a ratio alike. A ratio is the
 * median over rounds of the ratio computed within each round.
 *
 * Output: one line per result,
 *   bench=<name> unit=ops/s median=<x> min=<x> max=<x> rounds=<R>
 *   bench=<name> unit=us median=<x> min=<x> max=<x> rounds=<R>
 *   ratio=<name> value=<x> min=<x> max=<x> rounds=<R> note="..."
 * then a human summary after a line "# summary". Lines starting with '#' are comments.
 * Nothing here asserts on time; the exit status is non-zero only when an operation fails.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/hpke.h"
#include "keyhole/pair.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"

#include "util.h"

#define ECHO_DATA 16   /* ECHO carries 16 bytes: inner command 21 bytes, inner response 18 */
#define HPKE_PT 48     /* Ci (32) || A (16), the PAIR OPEN secret */
#define RTT_BYTES 64   /* payload of the raw socket round trip, about a sealed command's APDU */

/* ---- benchmarks ---- */

typedef kh_err (*op_fn)(void);

enum {
	B_X_DERIVE,
	B_X_DERIVE_EVP,
	B_X_DERIVE_KP,
	B_X_KEYGEN,
	B_X_PUBLIC,
	B_ED_VERIFY,
	B_X509_PARSE,
	B_CERT_CHECK,
	B_HKDF,
	B_HPKE_SEAL,
	B_HPKE_OPEN,
	B_AEAD_KH,
	B_AEAD_EVP_REKEY,
	B_AEAD_EVP,
	B_UNIX_RTT,
	B_UNIX_RTT_SPLIT,
	B_PAIR_IN,
	B_CMD_IN,
	B_LPAIR_IN,
	B_LCMD_IN,
	B_PAIR_UNIX,
	B_CMD_UNIX,
	B_LPAIR_UNIX,
	B_LCMD_UNIX,
	NB
};

struct bench {
	const char *name;
	const char *what;
	op_fn fn;
	op_fn prep; /* untimed, before each round */
	unsigned batch;
	double rate[BENCH_MAX_ROUNDS]; /* ops per second, per round */
};

/* ---- the world the benchmarks run in (set up once, untimed) ---- */

static struct {
	char dir[64];
	char auth_dir[128], cam_path[128], card_path[128], cam_sock[128], card_sock[128];
	/* the daemons' own modules: a module file is held by one process at a time */
	char cam_dpath[128], card_dpath[128];
	struct kh_softmod *cam_sm, *card_sm;
	struct kh_transport cam, card;     /* in-process */
	struct kh_transport cam_u, card_u; /* UNIX socket */
	int have_unix;
	pid_t cam_pid, card_pid, pong_pid, pong2_pid;
	int pong_fd, pong2_fd;
	uint8_t root_pk[32];
	struct kh_link *link;
	uint8_t echo_cmd[32];
	size_t echo_cmd_len;
	uint8_t echo_msg[ECHO_DATA];

	/* primitives */
	uint8_t x_sk[32], x_pk[32], peer_sk[32], peer_pk[32];
	EVP_PKEY *evp_sk, *evp_peer;
	EVP_PKEY_CTX *evp_dctx, *evp_fromdata;
	uint8_t ed_sk[32], ed_pk[32], ed_sig[64];
	uint8_t ed_msg[KH_CERT_MAX];
	size_t ed_msg_len;
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
	uint8_t hpke_pt[HPKE_PT], hpke_enc[32], hpke_ct[HPKE_PT + 16], cam_id[5];
	uint8_t aead_key_c[32], aead_key_r[32];
	uint8_t cmd_body[ECHO_DATA + 5], resp_body[ECHO_DATA + 2];
	uint32_t ctr;
	EVP_CIPHER *gcm;
	EVP_CIPHER_CTX *enc_c, *dec_c, *enc_r, *dec_r, *rekey;
} W = {.cam_pid = -1, .card_pid = -1, .pong_pid = -1, .pong2_pid = -1, .pong_fd = -1, .pong2_fd = -1};

static const char info_pair[] = "keyhole pair v1";
static const char label_keys[] = "keyhole pair v1 keys";

static uint64_t now_unix(void)
{
	return (uint64_t)time(NULL);
}

/* ---- primitives ---- */

static kh_err op_x_derive(void)
{
	uint8_t out[32];
	return kh_x25519(W.x_sk, W.peer_pk, out);
}

/* The floor: keys imported once, one EVP_PKEY_derive on a prepared context. */
static kh_err op_x_derive_evp(void)
{
	uint8_t out[32];
	size_t len = sizeof out;
	return EVP_PKEY_derive(W.evp_dctx, out, &len) == 1 && len == 32 ? KH_OK : KH_ERR_CRYPTO;
}

/*
 * What kh_x25519 would cost if it were handed the public key too (a proposed change): importing
 * private and public together skips the fixed-base multiplication OpenSSL does to find the
 * public key of a bare private key. Same allocations as kh_x25519 otherwise.
 */
static kh_err op_x_derive_kp(void)
{
	uint8_t out[32];
	return kh_x25519_kp(W.x_sk, W.x_pk, W.peer_pk, out);
}

static kh_err op_x_keygen(void)
{
	uint8_t sk[32], pk[32];
	return kh_x25519_keygen(sk, pk);
}

static kh_err op_x_public(void)
{
	uint8_t pk[32];
	return kh_x25519_public(W.x_sk, pk);
}

static kh_err op_ed_verify(void)
{
	return kh_ed25519_verify(W.ed_pk, W.ed_msg, W.ed_msg_len, W.ed_sig);
}

static kh_err op_x509_parse(void)
{
	const unsigned char *p = W.cert;
	X509 *x = d2i_X509(NULL, &p, (long)W.cert_len);
	if (!x)
		return KH_ERR_CERT;
	X509_free(x);
	return KH_OK;
}

static kh_err op_cert_check(void)
{
	struct kh_cert_info ci;
	return kh_cert_check(W.cert, W.cert_len, W.root_pk, KH_ROLE_CARD, KH_CERT_KEY_X25519, now_unix(), &ci);
}

/* One HKDF call as pair.c's derive() makes it: 32-byte ikm, 32-byte salt, 64 bytes out. */
static kh_err op_hkdf(void)
{
	uint8_t k[64];
	return kh_hkdf(W.x_sk, 32, W.peer_pk, 32, (const uint8_t *)label_keys, sizeof label_keys - 1, k, sizeof k);
}

static kh_err op_hpke_seal(void)
{
	uint8_t enc[32], ct[HPKE_PT + 16];
	return kh_hpke_seal_base(W.x_pk, (const uint8_t *)info_pair, sizeof info_pair - 1, W.cam_id,
				 sizeof W.cam_id, W.hpke_pt, sizeof W.hpke_pt, enc, ct);
}

static kh_err op_hpke_open(void)
{
	uint8_t pt[HPKE_PT];
	return kh_hpke_open_base(W.x_sk, W.hpke_enc, (const uint8_t *)info_pair, sizeof info_pair - 1, W.cam_id,
				 sizeof W.cam_id, W.hpke_ct, sizeof W.hpke_ct, pt);
}

static void nonce_hdr(uint32_t ctr, uint8_t nonce[12], uint8_t hdr[5])
{
	memset(nonce, 0, 12);
	kh_put_be32(nonce + 8, ctr);
	hdr[0] = 1;
	kh_put_be32(hdr + 1, ctr);
}

/* The AEAD work of one sealed round trip through the facade: seal+open 21 bytes, seal+open 18. */
static kh_err op_aead_kh(void)
{
	uint8_t nonce[12], hdr[5], ct[64], pt[64];
	kh_err r;

	nonce_hdr(++W.ctr, nonce, hdr);
	if ((r = kh_aead_seal(W.aead_key_c, nonce, hdr, 5, W.cmd_body, sizeof W.cmd_body, ct)) != KH_OK ||
	    (r = kh_aead_open(W.aead_key_c, nonce, hdr, 5, ct, sizeof W.cmd_body + 16, pt)) != KH_OK ||
	    (r = kh_aead_seal(W.aead_key_r, nonce, hdr, 5, W.resp_body, sizeof W.resp_body, ct)) != KH_OK)
		return r;
	return kh_aead_open(W.aead_key_r, nonce, hdr, 5, ct, sizeof W.resp_body + 16, pt);
}

/*
 * Raw EVP AES-256-GCM. key == NULL: the context was keyed once, only the nonce changes (the
 * floor). key != NULL: re-key the same context on every call without freeing it.
 */
static int evp_seal(EVP_CIPHER_CTX *c, const uint8_t *key, const uint8_t nonce[12], const uint8_t hdr[5],
		    const uint8_t *pt, int n, uint8_t *ct)
{
	int l;
	return EVP_EncryptInit_ex2(c, NULL, key, nonce, NULL) == 1 && EVP_EncryptUpdate(c, NULL, &l, hdr, 5) == 1 &&
	       EVP_EncryptUpdate(c, ct, &l, pt, n) == 1 && EVP_EncryptFinal_ex(c, ct + n, &l) == 1 &&
	       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, ct + n) == 1;
}

static int evp_open(EVP_CIPHER_CTX *c, const uint8_t *key, const uint8_t nonce[12], const uint8_t hdr[5],
		    uint8_t *ct, int n, uint8_t *pt)
{
	int l;
	return EVP_DecryptInit_ex2(c, NULL, key, nonce, NULL) == 1 &&
	       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, ct + n) == 1 &&
	       EVP_DecryptUpdate(c, NULL, &l, hdr, 5) == 1 && EVP_DecryptUpdate(c, pt, &l, ct, n) == 1 &&
	       EVP_DecryptFinal_ex(c, pt + n, &l) == 1;
}

static kh_err op_aead_evp(void)
{
	uint8_t nonce[12], hdr[5], ct[64], pt[64];
	const int nc = (int)sizeof W.cmd_body, nr = (int)sizeof W.resp_body;

	nonce_hdr(++W.ctr, nonce, hdr);
	if (evp_seal(W.enc_c, NULL, nonce, hdr, W.cmd_body, nc, ct) && evp_open(W.dec_c, NULL, nonce, hdr, ct, nc, pt) &&
	    evp_seal(W.enc_r, NULL, nonce, hdr, W.resp_body, nr, ct) && evp_open(W.dec_r, NULL, nonce, hdr, ct, nr, pt))
		return KH_OK;
	return KH_ERR_CRYPTO;
}

static kh_err op_aead_evp_rekey(void)
{
	uint8_t nonce[12], hdr[5], ct[64], pt[64];
	const int nc = (int)sizeof W.cmd_body, nr = (int)sizeof W.resp_body;
	EVP_CIPHER_CTX *c = W.rekey;

	nonce_hdr(++W.ctr, nonce, hdr);
	if (evp_seal(c, W.aead_key_c, nonce, hdr, W.cmd_body, nc, ct) &&
	    evp_open(c, W.aead_key_c, nonce, hdr, ct, nc, pt) &&
	    evp_seal(c, W.aead_key_r, nonce, hdr, W.resp_body, nr, ct) &&
	    evp_open(c, W.aead_key_r, nonce, hdr, ct, nr, pt))
		return KH_OK;
	return KH_ERR_CRYPTO;
}

/* ---- a minimal framed round trip over a UNIX socket, to another process ---- */

static int full_io(int fd, uint8_t *p, size_t n, int out)
{
	while (n) {
		ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Child: echo length-prefixed frames until the peer hangs up. */
static void pong(int fd)
{
	uint8_t buf[4 + 512];
	for (;;) {
		uint32_t n;
		if (full_io(fd, buf, 4, 0) != 0)
			break;
		n = kh_get_be32(buf);
		if (n > 512 || full_io(fd, buf + 4, n, 0) != 0 || full_io(fd, buf, 4 + n, 1) != 0)
			break;
	}
	_exit(0);
}

/* One send of header and payload, then header and payload read back (as the transport reads). */
static kh_err op_unix_rtt(void)
{
	uint8_t buf[4 + RTT_BYTES];
	memset(buf, 0xA5, sizeof buf);
	kh_put_be32(buf, RTT_BYTES);
	if (full_io(W.pong_fd, buf, sizeof buf, 1) != 0 || full_io(W.pong_fd, buf, 4, 0) != 0 ||
	    kh_get_be32(buf) != RTT_BYTES || full_io(W.pong_fd, buf + 4, RTT_BYTES, 0) != 0)
		return KH_ERR_TRANSPORT;
	return KH_OK;
}

/* The same with header and payload in two sends, both ways (how transport.c framed before). */
static void pong_split(int fd)
{
	uint8_t buf[4 + 512];
	for (;;) {
		uint32_t n;
		if (full_io(fd, buf, 4, 0) != 0)
			break;
		n = kh_get_be32(buf);
		if (n > 512 || full_io(fd, buf + 4, n, 0) != 0 || full_io(fd, buf, 4, 1) != 0 ||
		    full_io(fd, buf + 4, n, 1) != 0)
			break;
	}
	_exit(0);
}

static kh_err op_unix_rtt_split(void)
{
	uint8_t buf[4 + RTT_BYTES];
	memset(buf, 0xA5, sizeof buf);
	kh_put_be32(buf, RTT_BYTES);
	if (full_io(W.pong2_fd, buf, 4, 1) != 0 || full_io(W.pong2_fd, buf + 4, RTT_BYTES, 1) != 0 ||
	    full_io(W.pong2_fd, buf, 4, 0) != 0 || kh_get_be32(buf) != RTT_BYTES ||
	    full_io(W.pong2_fd, buf + 4, RTT_BYTES, 0) != 0)
		return KH_ERR_TRANSPORT;
	return KH_OK;
}

/* ---- protocol ---- */

static kh_err pair_on(struct kh_transport *cam, struct kh_transport *card)
{
	uint32_t ua;
	return kh_host_pair_cam_card(cam, card, &ua);
}

static kh_err cmd_on(struct kh_transport *cam, struct kh_transport *card)
{
	uint8_t out[KH_APDU_MAX_RESP];
	size_t n;
	kh_err r;
	if ((r = kh_host_card_cmd(cam, card, W.echo_cmd, W.echo_cmd_len, out, sizeof out, &n)) != KH_OK)
		return r;
	return n == ECHO_DATA + 2 && memcmp(out, W.echo_msg, ECHO_DATA) == 0 ? KH_OK : KH_ERR_FORMAT;
}

static kh_err lpair_on(struct kh_transport *cam)
{
	return kh_host_link_pair(W.link, cam, now_unix());
}

static kh_err lcmd_on(struct kh_transport *cam)
{
	uint8_t out[KH_APDU_MAX_RESP];
	size_t n;
	kh_err r;
	if ((r = kh_host_link_cmd(W.link, cam, W.echo_cmd, W.echo_cmd_len, now_unix(), out, sizeof out, &n)) != KH_OK)
		return r;
	return n == ECHO_DATA + 2 && memcmp(out, W.echo_msg, ECHO_DATA) == 0 ? KH_OK : KH_ERR_FORMAT;
}

static kh_err op_pair_in(void) { return pair_on(&W.cam, &W.card); }
static kh_err op_cmd_in(void) { return cmd_on(&W.cam, &W.card); }
static kh_err op_lpair_in(void) { return lpair_on(&W.cam); }
static kh_err op_lcmd_in(void) { return lcmd_on(&W.cam); }
static kh_err op_pair_unix(void) { return pair_on(&W.cam_u, &W.card_u); }
static kh_err op_cmd_unix(void) { return cmd_on(&W.cam_u, &W.card_u); }
static kh_err op_lpair_unix(void) { return lpair_on(&W.cam_u); }
static kh_err op_lcmd_unix(void) { return lcmd_on(&W.cam_u); }

static struct bench B[NB] = {
	[B_X_DERIVE] = {"x25519_derive", "kh_x25519: import both keys, derive (what HPKE calls)", op_x_derive, NULL, 1, {0}},
	[B_X_DERIVE_EVP] = {"x25519_derive_evp", "EVP_PKEY_derive on a prepared context (floor)", op_x_derive_evp, NULL, 1, {0}},
	[B_X_DERIVE_KP] = {"x25519_derive_withpub", "kh_x25519_kp: derive when our public key is known (as HPKE does)", op_x_derive_kp, NULL, 1, {0}},
	[B_X_KEYGEN] = {"x25519_keygen", "kh_x25519_keygen: 32 random bytes + public key", op_x_keygen, NULL, 1, {0}},
	[B_X_PUBLIC] = {"x25519_public", "kh_x25519_public: public key of a private key", op_x_public, NULL, 1, {0}},
	[B_ED_VERIFY] = {"ed25519_verify", "kh_ed25519_verify of a certificate-sized message", op_ed_verify, NULL, 1, {0}},
	[B_X509_PARSE] = {"x509_parse", "d2i_X509 + X509_free of the card's pairing certificate", op_x509_parse, NULL, 1, {0}},
	[B_CERT_CHECK] = {"cert_check", "kh_cert_check of the card's pairing certificate", op_cert_check, NULL, 1, {0}},
	[B_HKDF] = {"hkdf", "kh_hkdf 32-byte ikm -> 64 bytes (one EVP_KDF call)", op_hkdf, NULL, 1, {0}},
	[B_HPKE_SEAL] = {"hpke_seal_base_48", "kh_hpke_seal_base of 48 bytes", op_hpke_seal, NULL, 1, {0}},
	[B_HPKE_OPEN] = {"hpke_open_base_48", "kh_hpke_open_base of 48 bytes", op_hpke_open, NULL, 1, {0}},
	[B_AEAD_KH] = {"aead_kh_rt", "kh_aead seal+open 21 B and seal+open 18 B (4 calls)", op_aead_kh, NULL, 1, {0}},
	[B_AEAD_EVP_REKEY] = {"aead_evp_rekey_rt", "same 4 calls, raw EVP, one context re-keyed per call", op_aead_evp_rekey, NULL, 1, {0}},
	[B_AEAD_EVP] = {"aead_evp_rt", "same 4 calls, raw EVP, contexts keyed once (floor)", op_aead_evp, NULL, 1, {0}},
	[B_UNIX_RTT] = {"unix_rtt", "framed 64-byte round trip to an echo process (floor)", op_unix_rtt, NULL, 1, {0}},
	[B_UNIX_RTT_SPLIT] = {"unix_rtt_split", "the same, header and payload sent separately", op_unix_rtt_split, NULL, 1, {0}},
	[B_PAIR_IN] = {"pair_inproc", "CAM<->card pairing, in-process (5 APDUs)", op_pair_in, NULL, 1, {0}},
	[B_CMD_IN] = {"cmd_inproc", "sealed ECHO 16 B CAM->card, in-process (3 APDUs)", op_cmd_in, op_pair_in, 1, {0}},
	[B_LPAIR_IN] = {"link_pair_inproc", "decoder<->CAM pairing, in-process (2 APDUs)", op_lpair_in, NULL, 1, {0}},
	[B_LCMD_IN] = {"link_cmd_inproc", "sealed ECHO 16 B decoder->CAM, in-process (1 APDU)", op_lcmd_in, op_lpair_in, 1, {0}},
	[B_PAIR_UNIX] = {"pair_unix", "CAM<->card pairing, UNIX sockets (5 APDUs)", op_pair_unix, NULL, 1, {0}},
	[B_CMD_UNIX] = {"cmd_unix", "sealed ECHO 16 B CAM->card, UNIX sockets (3 APDUs)", op_cmd_unix, op_pair_unix, 1, {0}},
	[B_LPAIR_UNIX] = {"link_pair_unix", "decoder<->CAM pairing, UNIX socket (2 APDUs)", op_lpair_unix, NULL, 1, {0}},
	[B_LCMD_UNIX] = {"link_cmd_unix", "sealed ECHO 16 B decoder->CAM, UNIX socket (1 APDU)", op_lcmd_unix, op_lpair_unix, 1, {0}},
};

/* ---- ratios, computed within each round ---- */

/* Seconds per operation in round r; NaN when the benchmark did not run (-b, -n). */
#define T(b) (B[b].rate[r] > 0 ? 1.0 / B[b].rate[r] : NAN)

static double r_pair_asym(int r)
{
	return T(B_PAIR_IN) / (T(B_ED_VERIFY) + 2 * T(B_X_DERIVE) + T(B_X_KEYGEN) + T(B_X_PUBLIC));
}
static double r_pair_floor(int r)
{
	return T(B_PAIR_IN) / (T(B_ED_VERIFY) + T(B_X_KEYGEN) + 2 * T(B_X_DERIVE_EVP));
}
static double r_pair_steps(int r)
{
	return T(B_PAIR_IN) / (T(B_CERT_CHECK) + T(B_HPKE_SEAL) + T(B_HPKE_OPEN) + 2 * T(B_HKDF) + T(B_AEAD_KH) / 2);
}
static double r_lpair_steps(int r)
{
	return T(B_LPAIR_IN) / (T(B_CERT_CHECK) + T(B_HPKE_SEAL) + T(B_HPKE_OPEN) + 2 * T(B_HKDF) + T(B_AEAD_KH) / 2);
}
static double r_hpke_seal_parts(int r)
{
	return T(B_HPKE_SEAL) / (T(B_X_KEYGEN) + T(B_X_DERIVE));
}
static double r_hpke_open_parts(int r)
{
	return T(B_HPKE_OPEN) / (T(B_X_DERIVE) + T(B_X_PUBLIC));
}
static double r_hpke_hkdf(int r)
{
	return T(B_HPKE_OPEN) / (T(B_X_DERIVE) + T(B_X_PUBLIC) + 8 * T(B_HKDF));
}
static double r_x_facade(int r)
{
	return T(B_X_DERIVE) / T(B_X_DERIVE_EVP);
}
static double r_cert_verify(int r)
{
	return T(B_CERT_CHECK) / T(B_ED_VERIFY);
}
static double r_cert_parts(int r)
{
	return T(B_CERT_CHECK) / (T(B_X509_PARSE) + T(B_ED_VERIFY));
}
static double r_x_withpub(int r)
{
	return T(B_X_DERIVE) / T(B_X_DERIVE_KP);
}
static double r_rtt_split(int r)
{
	return T(B_UNIX_RTT_SPLIT) / T(B_UNIX_RTT);
}
static double r_cmd_evp(int r)
{
	return T(B_CMD_IN) / T(B_AEAD_EVP);
}
static double r_cmd_kh(int r)
{
	return T(B_CMD_IN) / T(B_AEAD_KH);
}
static double r_lcmd_evp(int r)
{
	return T(B_LCMD_IN) / T(B_AEAD_EVP);
}
static double r_aead_facade(int r)
{
	return T(B_AEAD_KH) / T(B_AEAD_EVP);
}
static double r_aead_rekey(int r)
{
	return T(B_AEAD_EVP_REKEY) / T(B_AEAD_EVP);
}
static double r_pair_sock(int r)
{
	return T(B_PAIR_UNIX) / T(B_PAIR_IN);
}
static double r_cmd_sock(int r)
{
	return T(B_CMD_UNIX) / T(B_CMD_IN);
}
static double r_lpair_sock(int r)
{
	return T(B_LPAIR_UNIX) / T(B_LPAIR_IN);
}
static double r_lcmd_sock(int r)
{
	return T(B_LCMD_UNIX) / T(B_LCMD_IN);
}
static double r_cmd_xfer(int r)
{
	return (T(B_CMD_UNIX) - T(B_CMD_IN)) / 3 / T(B_UNIX_RTT);
}
static double r_pair_xfer(int r)
{
	return (T(B_PAIR_UNIX) - T(B_PAIR_IN)) / 5 / T(B_UNIX_RTT);
}
static double r_lcmd_xfer(int r)
{
	return (T(B_LCMD_UNIX) - T(B_LCMD_IN)) / T(B_UNIX_RTT);
}
#undef T

static const struct {
	const char *name;
	double (*fn)(int r);
	int needs_unix;
	const char *note;
} R[] = {
	{"pair_inproc_vs_asym_ops", r_pair_asym, 0,
	 "handshake / (ed25519_verify + 2 x25519_derive + x25519_keygen + x25519_public): the asymmetric calls "
	 "pair.c and hpke.c make (cert check 1 verify; HPKE seal keygen-equivalent + derive; HPKE open derive + public)"},
	{"pair_inproc_vs_asym_floor", r_pair_floor, 0,
	 "handshake / (ed25519_verify + x25519_keygen + 2 x25519_derive_evp): the unavoidable asymmetric work"},
	{"pair_inproc_vs_crypto_steps", r_pair_steps, 0,
	 "handshake / (cert_check + hpke_seal_base_48 + hpke_open_base_48 + 2 hkdf + aead_kh_rt/2): all its crypto; "
	 "the rest is APDUs, relay and module bookkeeping"},
	{"link_pair_inproc_vs_crypto_steps", r_lpair_steps, 0, "decoder<->CAM handshake / the same crypto sum"},
	{"hpke_seal_vs_x25519_calls", r_hpke_seal_parts, 0, "HPKE seal vs its X25519 calls"},
	{"hpke_open_vs_x25519_calls", r_hpke_open_parts, 0, "HPKE open vs its X25519 calls"},
	{"hpke_open_vs_x25519_calls_and_hkdf", r_hpke_hkdf, 0,
	 "HPKE open vs its X25519 calls and its 8 HKDF calls (2 KEM + 6 key schedule)"},
	{"x25519_derive_vs_evp", r_x_facade, 0,
	 "facade derive (imports the private key, which computes its public key) vs a bare EVP derive"},
	{"x25519_derive_vs_withpub", r_x_withpub, 0,
	 "facade derive vs the same with the public key passed in (no fixed-base multiplication)"},
	{"cert_check_vs_ed25519_verify", r_cert_verify, 0, "X.509 parse and checks on top of the signature"},
	{"cert_check_vs_parse_plus_verify", r_cert_parts, 0,
	 "cert check vs d2i_X509 + Ed25519 verify; the rest is extension caching and name checks"},
	{"cmd_inproc_vs_aead_evp", r_cmd_evp, 0,
	 "sealed round trip vs 2x(AES-256-GCM seal+open) raw EVP on the same bytes, contexts keyed once"},
	{"cmd_inproc_vs_aead_kh", r_cmd_kh, 0, "sealed round trip vs the same 4 AEAD calls through kh_aead_*"},
	{"link_cmd_inproc_vs_aead_evp", r_lcmd_evp, 0, "decoder->CAM sealed round trip vs 2x(seal+open) raw EVP"},
	{"aead_kh_vs_evp", r_aead_facade, 0, "kh_aead_* (re-key and reset per call) vs contexts keyed once"},
	{"aead_evp_rekey_vs_evp", r_aead_rekey, 0, "re-keying one context per call (no reset) vs keyed once"},
	{"pair_unix_vs_inproc", r_pair_sock, 1, "socket vs in-process, CAM<->card pairing"},
	{"cmd_unix_vs_inproc", r_cmd_sock, 1, "socket vs in-process, CAM<->card sealed round trip"},
	{"link_pair_unix_vs_inproc", r_lpair_sock, 1, "socket vs in-process, decoder<->CAM pairing"},
	{"link_cmd_unix_vs_inproc", r_lcmd_sock, 1, "socket vs in-process, decoder<->CAM sealed round trip"},
	{"unix_rtt_split_vs_unix_rtt", r_rtt_split, 1,
	 "framed socket round trip with header and payload sent separately vs in one send (transport.c)"},
	{"cmd_socket_per_apdu_vs_unix_rtt", r_cmd_xfer, 1,
	 "(cmd_unix - cmd_inproc) / 3 APDUs vs a minimal framed socket round trip"},
	{"pair_socket_per_apdu_vs_unix_rtt", r_pair_xfer, 1,
	 "(pair_unix - pair_inproc) / 5 APDUs vs a minimal framed socket round trip"},
	{"link_cmd_socket_per_apdu_vs_unix_rtt", r_lcmd_xfer, 1,
	 "(link_cmd_unix - link_cmd_inproc) / 1 APDU vs a minimal framed socket round trip"},
};
#define NR (sizeof R / sizeof R[0])

/* ---- timing ---- */

static int is_unix(int b)
{
	return b == B_UNIX_RTT || b == B_UNIX_RTT_SPLIT || b == B_PAIR_UNIX || b == B_CMD_UNIX || b == B_LPAIR_UNIX ||
	       b == B_LCMD_UNIX;
}

static const char *only; /* -b: run only the benchmark of this name, or those whose name contains it */

static int name_matches(int b)
{
	if (!only)
		return 1;
	for (int i = 0; i < NB; i++)
		if (strcmp(B[i].name, only) == 0)
			return i == b;
	return strstr(B[b].name, only) != NULL;
}

static int selected(int b)
{
	return name_matches(b) && (!is_unix(b) || W.have_unix);
}

static kh_err fail(int b, const char *phase, kh_err e)
{
	fprintf(stderr, "bench_pair: %s %s failed: %s\n", B[b].name, phase, kh_strerror(e));
	return e;
}

/* Warm up for ~50 ms and pick a batch of ~2 ms, so the clock is read rarely. */
static kh_err calibrate(int b)
{
	double t0, t;
	unsigned long n = 0;
	kh_err e;

	if (B[b].prep && (e = B[b].prep()) != KH_OK)
		return fail(b, "preparation", e);
	t0 = bench_now_s();
	do {
		if ((e = B[b].fn()) != KH_OK)
			return fail(b, "operation", e);
		n++;
		t = bench_now_s();
	} while (t - t0 < 0.05);
	B[b].batch = (unsigned)(0.002 / ((t - t0) / (double)n));
	if (B[b].batch < 1)
		B[b].batch = 1;
	return KH_OK;
}

static kh_err run_round(int b, int round, double secs)
{
	unsigned long n = 0;
	double t0, t;
	kh_err e;

	if (B[b].prep && (e = B[b].prep()) != KH_OK)
		return fail(b, "preparation", e);
	t0 = bench_now_s();
	do {
		for (unsigned i = 0; i < B[b].batch; i++)
			if ((e = B[b].fn()) != KH_OK)
				return fail(b, "operation", e);
		n += B[b].batch;
		t = bench_now_s();
	} while (t - t0 < secs);
	B[b].rate[round] = (double)n / (t - t0);
	return KH_OK;
}

/* ---- setup and teardown ---- */

static kh_err issue(struct kh_authority *a, const char *path, enum kh_role role, struct kh_issued *iss)
{
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	kh_err r;

	if ((r = kh_softmod_new_blank(&sm)) != KH_OK)
		return r;
	kh_transport_inproc(&t, kh_softmod_module(sm));
	if ((r = kh_authority_personalise(a, &t, role, 0, iss)) == KH_OK)
		r = kh_softmod_save(sm, path, NULL);
	kh_softmod_free(sm);
	return r;
}

static kh_err setup_primitives(const struct kh_issued *card)
{
	X509 *x;
	const unsigned char *p = card->pair_der;
	int tbs;
	kh_err r;

	if ((r = kh_x25519_keygen(W.x_sk, W.x_pk)) != KH_OK || (r = kh_x25519_keygen(W.peer_sk, W.peer_pk)) != KH_OK)
		return r;
	W.evp_sk = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, W.x_sk, 32);
	W.evp_peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, W.peer_pk, 32);
	if (!W.evp_sk || !W.evp_peer || !(W.evp_dctx = EVP_PKEY_CTX_new_from_pkey(NULL, W.evp_sk, NULL)) ||
	    EVP_PKEY_derive_init(W.evp_dctx) != 1 || EVP_PKEY_derive_set_peer(W.evp_dctx, W.evp_peer) != 1 ||
	    !(W.evp_fromdata = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL)))
		return KH_ERR_CRYPTO;

	/* Ed25519 over a message as long as the signed part of the card's pairing certificate. */
	memcpy(W.cert, card->pair_der, card->pair_len);
	W.cert_len = card->pair_len;
	if (!(x = d2i_X509(NULL, &p, (long)card->pair_len)))
		return KH_ERR_CERT;
	tbs = i2d_re_X509_tbs(x, NULL);
	X509_free(x);
	if (tbs <= 0 || (size_t)tbs > sizeof W.ed_msg)
		return KH_ERR_CERT;
	W.ed_msg_len = (size_t)tbs;
	if ((r = kh_random(W.ed_msg, W.ed_msg_len)) != KH_OK || (r = kh_ed25519_keygen(W.ed_sk, W.ed_pk)) != KH_OK ||
	    (r = kh_ed25519_sign(W.ed_sk, W.ed_msg, W.ed_msg_len, W.ed_sig)) != KH_OK)
		return r;

	/* HPKE to our own key pair, so the open side has the private key. */
	W.cam_id[0] = KH_ROLE_CAM;
	kh_put_be32(W.cam_id + 1, 1);
	if ((r = kh_random(W.hpke_pt, sizeof W.hpke_pt)) != KH_OK ||
	    (r = kh_hpke_seal_base(W.x_pk, (const uint8_t *)info_pair, sizeof info_pair - 1, W.cam_id, sizeof W.cam_id,
				   W.hpke_pt, sizeof W.hpke_pt, W.hpke_enc, W.hpke_ct)) != KH_OK)
		return r;

	/* AEAD: the inner ECHO command (21 bytes) and its response (18 bytes). */
	if ((r = kh_random(W.aead_key_c, 32)) != KH_OK || (r = kh_random(W.aead_key_r, 32)) != KH_OK)
		return r;
	memcpy(W.cmd_body, W.echo_cmd, sizeof W.cmd_body);
	memcpy(W.resp_body, W.echo_msg, ECHO_DATA);
	W.resp_body[ECHO_DATA] = 0x90;
	W.resp_body[ECHO_DATA + 1] = 0x00;
	if (!(W.gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) || !(W.enc_c = EVP_CIPHER_CTX_new()) ||
	    !(W.dec_c = EVP_CIPHER_CTX_new()) || !(W.enc_r = EVP_CIPHER_CTX_new()) ||
	    !(W.dec_r = EVP_CIPHER_CTX_new()) || !(W.rekey = EVP_CIPHER_CTX_new()))
		return KH_ERR_CRYPTO;
	if (EVP_EncryptInit_ex2(W.enc_c, W.gcm, W.aead_key_c, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_c, W.gcm, W.aead_key_c, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.enc_r, W.gcm, W.aead_key_r, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(W.dec_r, W.gcm, W.aead_key_r, NULL, NULL) != 1 ||
	    EVP_EncryptInit_ex2(W.rekey, W.gcm, NULL, NULL, NULL) != 1)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

static kh_err setup(void)
{
	struct kh_authority *a = NULL;
	struct kh_issued *iss = NULL;
	struct kh_wr w;
	kh_err r;

	if ((r = bench_mkdtemp(W.dir, sizeof W.dir, "kh-bench-XXXXXX")) != KH_OK)
		return r;
	snprintf(W.auth_dir, sizeof W.auth_dir, "%s/authority", W.dir);
	snprintf(W.cam_path, sizeof W.cam_path, "%s/cam.card", W.dir);
	snprintf(W.card_path, sizeof W.card_path, "%s/card.card", W.dir);
	snprintf(W.cam_dpath, sizeof W.cam_dpath, "%s/cam-d.card", W.dir);
	snprintf(W.card_dpath, sizeof W.card_dpath, "%s/card-d.card", W.dir);
	snprintf(W.cam_sock, sizeof W.cam_sock, "%s/cam.sock", W.dir);
	snprintf(W.card_sock, sizeof W.card_sock, "%s/card.sock", W.dir);

	if ((r = kh_random(W.echo_msg, sizeof W.echo_msg)) != KH_OK)
		return r;
	kh_wr_init(&w, W.echo_cmd, sizeof W.echo_cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, KH_INS_ECHO, 0, 0, W.echo_msg, ECHO_DATA, 0)) != KH_OK)
		return r;
	W.echo_cmd_len = w.len;
	if (W.echo_cmd_len != ECHO_DATA + 5)
		return KH_ERR_INTERNAL;

	if (!(iss = calloc(1, sizeof *iss)))
		return KH_ERR_NOMEM;
	if ((r = kh_authority_init(W.auth_dir, "Keyhole bench operator")) != KH_OK ||
	    (r = kh_authority_open(W.auth_dir, &a)) != KH_OK)
		goto out;
	kh_authority_root_pk(a, W.root_pk);
	/* the daemons' modules first: iss keeps the in-process card's certificates */
	if ((r = issue(a, W.cam_dpath, KH_ROLE_CAM, iss)) != KH_OK || (r = issue(a, W.card_dpath, KH_ROLE_CARD, iss)) != KH_OK ||
	    (r = issue(a, W.cam_path, KH_ROLE_CAM, iss)) != KH_OK || (r = issue(a, W.card_path, KH_ROLE_CARD, iss)) != KH_OK)
		goto out;
	if ((r = setup_primitives(iss)) != KH_OK)
		goto out;
	if ((r = kh_softmod_open(W.cam_path, NULL, &W.cam_sm, NULL)) != KH_OK ||
	    (r = kh_softmod_open(W.card_path, NULL, &W.card_sm, NULL)) != KH_OK)
		goto out;
	kh_transport_inproc(&W.cam, kh_softmod_module(W.cam_sm));
	kh_transport_inproc(&W.card, kh_softmod_module(W.card_sm));
	if (!(W.link = calloc(1, sizeof *W.link))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	kh_link_init(W.link, W.root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
out:
	free(iss);
	kh_authority_free(a);
	return r;
}

/* Fork an echo process on a socketpair; *fd receives our end. */
static kh_err spawn_echo(void (*fn)(int), pid_t *pid, int *fd)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return KH_ERR_IO;
	fflush(stdout);
	fflush(stderr);
	if ((*pid = fork()) == 0) {
		close(sv[0]);
		if (W.pong_fd >= 0)
			close(W.pong_fd);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		fn(sv[1]);
	}
	close(sv[1]);
	if (*pid < 0) {
		close(sv[0]);
		return KH_ERR_IO;
	}
	*fd = sv[0];
	return KH_OK;
}

/* The socket side: two echo processes for the floor, then the two module daemons. */
static kh_err setup_unix(void)
{
	int echo_fds[2];
	kh_err r;

	if ((r = spawn_echo(pong, &W.pong_pid, &W.pong_fd)) != KH_OK ||
	    (r = spawn_echo(pong_split, &W.pong2_pid, &W.pong2_fd)) != KH_OK)
		return r;
	echo_fds[0] = W.pong_fd;
	echo_fds[1] = W.pong2_fd;
	/* Only this process may hold the echo processes' sockets, so that they see it hang up. */
	if ((W.cam_pid = bench_spawn_daemon("bench_pair", W.cam_dpath, W.cam_sock, echo_fds, 2)) < 0 ||
	    (W.card_pid = bench_spawn_daemon("bench_pair", W.card_dpath, W.card_sock, echo_fds, 2)) < 0)
		return KH_ERR_IO;
	if ((r = bench_connect_retry(&W.cam_u, W.cam_sock)) != KH_OK)
		return r;
	if ((r = bench_connect_retry(&W.card_u, W.card_sock)) != KH_OK) {
		kh_transport_close(&W.cam_u);
		return r;
	}
	W.have_unix = 1;
	return KH_OK;
}

static void teardown(void)
{
	if (W.have_unix) {
		kh_transport_close(&W.cam_u);
		kh_transport_close(&W.card_u);
		W.have_unix = 0;
	}
	if (W.pong_fd >= 0) {
		close(W.pong_fd);
		W.pong_fd = -1;
	}
	if (W.pong2_fd >= 0) {
		close(W.pong2_fd);
		W.pong2_fd = -1;
	}
	bench_reap(&W.cam_pid);
	bench_reap(&W.card_pid);
	bench_reap(&W.pong_pid);
	bench_reap(&W.pong2_pid);
	if (W.link) {
		kh_link_wipe(W.link);
		free(W.link);
	}
	kh_softmod_free(W.cam_sm);
	kh_softmod_free(W.card_sm);
	EVP_PKEY_CTX_free(W.evp_dctx);
	EVP_PKEY_CTX_free(W.evp_fromdata);
	EVP_PKEY_free(W.evp_sk);
	EVP_PKEY_free(W.evp_peer);
	EVP_CIPHER_CTX_free(W.enc_c);
	EVP_CIPHER_CTX_free(W.dec_c);
	EVP_CIPHER_CTX_free(W.enc_r);
	EVP_CIPHER_CTX_free(W.dec_r);
	EVP_CIPHER_CTX_free(W.rekey);
	EVP_CIPHER_free(W.gcm);
	if (W.dir[0] && bench_rmtree(W.dir) != 0)
		fprintf(stderr, "bench_pair: could not remove %s\n", W.dir);
}

/* ---- output ---- */

static void print_results(int rounds)
{
	double us[BENCH_MAX_ROUNDS];

	for (int b = 0; b < NB; b++) {
		if (!selected(b))
			continue;
		bench_print(B[b].name, "ops/s", 1, B[b].rate, rounds);
		for (int r = 0; r < rounds; r++)
			us[r] = 1e6 / B[b].rate[r];
		bench_print(B[b].name, "us", 3, us, rounds);
	}
	for (size_t i = 0; i < NR; i++) {
		double v[BENCH_MAX_ROUNDS];
		int ok = !R[i].needs_unix || W.have_unix;
		for (int r = 0; ok && r < rounds; r++) {
			v[r] = R[i].fn(r);
			ok = isfinite(v[r]); /* NaN: a benchmark it needs did not run */
		}
		if (ok)
			bench_print_ratio(R[i].name, v, rounds, R[i].note);
	}
}

static double med_us(int b, int rounds)
{
	double us[BENCH_MAX_ROUNDS];
	for (int r = 0; r < rounds; r++)
		us[r] = 1e6 / B[b].rate[r];
	return bench_stats_of(us, rounds).med;
}

static void print_summary(int rounds)
{
	printf("# summary (medians of %d rounds; per-op time, rate, spread = (max-min)/median)\n", rounds);
	for (int b = 0; b < NB; b++) {
		struct bench_stats s;
		if (!selected(b))
			continue;
		s = bench_stats_of(B[b].rate, rounds);
		printf("#   %-20s %10.2f us %11.0f /s  %5.1f%%  %s\n", B[b].name, 1e6 / s.med, s.med,
		       100.0 * (s.max - s.min) / s.med, B[b].what);
	}
	if (only)
		return;
	{
		double pair = med_us(B_PAIR_IN, rounds), cc = med_us(B_CERT_CHECK, rounds);
		double hs = med_us(B_HPKE_SEAL, rounds), ho = med_us(B_HPKE_OPEN, rounds);
		double hk = med_us(B_HKDF, rounds), ae = med_us(B_AEAD_KH, rounds) / 2;
		double rest = pair - cc - hs - ho - 2 * hk - ae;
		printf("# CAM<->card handshake %.1f us: cert check %.1f, HPKE seal %.1f, HPKE open %.1f, "
		       "2 HKDF %.1f, 2 AEAD %.1f, rest (APDUs, relay, module, cache effects) %.1f\n",
		       pair, cc, hs, ho, 2 * hk, ae, rest);
		printf("#   of which X25519: 2 derive %.1f + keygen %.1f + public %.1f; Ed25519 verify %.1f; "
		       "HKDF calls in the handshake: 18 (8 per HPKE setup, 1 per side for the channel keys)\n",
		       2 * med_us(B_X_DERIVE, rounds), med_us(B_X_KEYGEN, rounds), med_us(B_X_PUBLIC, rounds),
		       med_us(B_ED_VERIFY, rounds));
	}
	printf("# sealed round trip CAM->card %.2f us in-process vs %.2f us for its 4 AEAD calls via kh_aead "
	       "and %.2f us raw EVP keyed once\n",
	       med_us(B_CMD_IN, rounds), med_us(B_AEAD_KH, rounds), med_us(B_AEAD_EVP, rounds));
	if (W.have_unix)
		printf("# sockets: pairing %.1f us (+%.1f over 5 APDUs), sealed round trip %.1f us (+%.1f over 3 APDUs); "
		       "minimal framed socket round trip %.1f us\n",
		       med_us(B_PAIR_UNIX, rounds), med_us(B_PAIR_UNIX, rounds) - med_us(B_PAIR_IN, rounds),
		       med_us(B_CMD_UNIX, rounds), med_us(B_CMD_UNIX, rounds) - med_us(B_CMD_IN, rounds),
		       med_us(B_UNIX_RTT, rounds));
}

static const char usage[] =
	"usage: bench_pair [-r ROUNDS] [-t SECONDS] [-n] [-p] [-b NAME]\n"
	"  -r ROUNDS   rounds per benchmark, 1..99 (default 7); medians are over rounds\n"
	"  -t SECONDS  length of one round (default 0.3)\n"
	"  -n          skip the UNIX socket benchmarks\n"
	"  -p          pin this process and every process it forks to one CPU (socket round trips\n"
	"              then cost a context switch instead of a cross-CPU wake-up)\n"
	"  -b NAME     run only the benchmark NAME, or those whose name contains NAME (profiling)\n";

int main(int argc, char **argv)
{
	int rounds = 7, no_unix = 0, pin = -1, c, rc = 1;
	double secs = 0.3;
	kh_err e;

	while ((c = getopt(argc, argv, "r:t:npb:h")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'n': no_unix = 1; break;
		case 'p': pin = 0; break;
		case 'b': only = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || !(secs > 0.001 && secs < 60)) {
		fputs(usage, stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Before any fork: the module daemons and echo processes inherit the mask. */
	if (pin == 0 && (pin = bench_pin()) < 0) {
		fprintf(stderr, "bench_pair: cannot pin to one CPU\n");
		return 1;
	}

	if ((e = setup()) != KH_OK) {
		fprintf(stderr, "bench_pair: setup: %s\n", kh_strerror(e));
		goto out;
	}
	if (only) {
		int any = 0;
		for (int b = 0; b < NB; b++)
			any |= is_unix(b) && name_matches(b);
		no_unix |= !any;
	}
	if (!no_unix && (e = setup_unix()) != KH_OK) {
		fprintf(stderr, "bench_pair: socket daemons: %s\n", kh_strerror(e));
		goto out;
	}
	printf("# bench_pair: %d rounds of %.2f s per benchmark, rounds interleaved across benchmarks\n", rounds, secs);
	bench_print_pin(pin);
	printf("# %s; certificate %zu bytes, Ed25519 message %zu bytes (its signed part); ECHO inner %zu B, response %d B\n",
	       OpenSSL_version(OPENSSL_VERSION), W.cert_len, W.ed_msg_len, W.echo_cmd_len, ECHO_DATA + 2);
	fflush(stdout);

	for (int b = 0; b < NB; b++) {
		if (!selected(b))
			continue;
		if (calibrate(b) != KH_OK)
			goto out;
	}
	for (int r = 0; r < rounds; r++) {
		for (int b = 0; b < NB; b++) {
			if (!selected(b))
				continue;
			if (run_round(b, r, secs) != KH_OK)
				goto out;
		}
	}
	print_results(rounds);
	print_summary(rounds);
	rc = 0;
out:
	fflush(stdout);
	teardown();
	return rc;
}
