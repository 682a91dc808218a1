/*
 * The processor applet (src/module/applet_proc.c, docs/protocols/distribution.md), driven in APDUs
 * only, with this test playing the distribution server: its key certified by the authority as a
 * distributor, its messages built with the shared codec (keyhole/dist.h). The whole second path
 * runs, then every attack on it that a host can mount: a server the root never certified, or
 * certified for another role; an answer replayed from another session or made for another
 * processor; a key message replayed, altered, or sent before the server proved itself; a licence
 * token altered, made by another processor, or never activated; a forged program signature; a
 * changed manifest; chunks flipped, reordered, skipped, cut short or appended to; and a server
 * that signed a chain the chunks do not make. Each refusal has its own error, and none leaves a
 * key behind.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/device.h"
#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/runner.h"
#include "testutil.h"
#include "world.h"

#define SERVER_UA 0xFE000001u
#define PROGRAM 7u
#define VERSION 3u
#define PT_LEN (2 * KH_DIST_CHUNK_MAX + 1000) /* three chunks, the last short */
#define NCHUNKS 3

struct server {
	uint8_t sk[32], pk[32];
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
};

struct pw {
	struct world *w;
	struct mod p1, p2; /* two processors */
	struct server s, fake_role, foreign;
	uint8_t pt[PT_LEN];
	const char *manifest;
	uint8_t ct[NCHUNKS][KH_DIST_CHUNK_CT_MAX];
	size_t ctlen[NCHUNKS];
	struct kh_dist_prog prog;
	uint8_t kx[32];
};

/* What a session with one processor gave the server. */
struct sess {
	uint8_t rc[32], rs[32];
	uint8_t fp[32], pair_hash[32];
	uint8_t pair_pk[32];
	uint8_t sign_pk[32];
};

static uint8_t rbuf[KH_APDU_MAX_RESP];

static uint16_t cmd(struct kh_transport *t, uint8_t ins, const uint8_t *d, size_t n, size_t *dlen)
{
	return send_apdu(t, KH_CLA, ins, 0, 0, d, n, rbuf, sizeof rbuf, dlen);
}

static void make_server(struct kh_authority *a, enum kh_role role, uint32_t ua, struct server *s)
{
	assert_int_equal(kh_ed25519_keygen(s->sk, s->pk), KH_OK);
	assert_int_equal(kh_authority_issue(a, role, ua, KH_CERT_KEY_ED25519, s->pk, "sign", s->cert, sizeof s->cert,
					    &s->cert_len),
			 KH_OK);
}

/* The package: three chunks of pt under a fresh Kx, and their chain. */
static void make_package(struct pw *x)
{
	uint8_t h[32];

	for (size_t i = 0; i < sizeof x->pt; i++)
		x->pt[i] = (uint8_t)(i * 7 + 1);
	memcpy(x->pt + 100, "KEYHOLE-PLAINTEXT-MARKER", 24);
	x->manifest = "{\"name\":\"hello\",\"version\":\"3\",\"entry\":\"main\",\"kind\":\"elf\"}";
	memset(&x->prog, 0, sizeof x->prog);
	x->prog.program = PROGRAM;
	x->prog.version = VERSION;
	x->prog.chunks = NCHUNKS;
	assert_int_equal(kh_sha256((const uint8_t *)x->manifest, strlen(x->manifest), x->prog.manifest_hash), KH_OK);
	assert_int_equal(kh_random(x->kx, sizeof x->kx), KH_OK);
	assert_int_equal(kh_dist_chain_init(&x->prog, h), KH_OK);
	for (uint32_t i = 0; i < NCHUNKS; i++) {
		size_t n = i < NCHUNKS - 1 ? KH_DIST_CHUNK_MAX : PT_LEN - 2 * KH_DIST_CHUNK_MAX;
		assert_int_equal(kh_dist_chunk_seal(x->kx, &x->prog, i, x->pt + i * KH_DIST_CHUNK_MAX, n, x->ct[i]),
				 KH_OK);
		x->ctlen[i] = n + KH_TAG_LEN;
		assert_int_equal(kh_dist_chain_step(h, x->ct[i] + n), KH_OK);
	}
	memcpy(x->prog.he, h, 32);
}

static int setup(void **state)
{
	struct pw *x = calloc(1, sizeof *x);
	assert_non_null(x);
	world_setup((void **)&x->w);
	make_mod(x->w->auth, KH_ROLE_PROCESSOR, &x->p1);
	make_mod(x->w->auth, KH_ROLE_PROCESSOR, &x->p2);
	make_server(x->w->auth, KH_ROLE_DISTRIBUTOR, SERVER_UA, &x->s);
	make_server(x->w->auth, KH_ROLE_ECM_SIGNER, SERVER_UA + 1, &x->fake_role);
	make_server(x->w->foreign, KH_ROLE_DISTRIBUTOR, SERVER_UA, &x->foreign);
	make_package(x);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct pw *x = *state;
	kh_softmod_free(x->p1.sm);
	kh_softmod_free(x->p2.sm);
	world_teardown((void **)&x->w);
	kh_wipe(x, sizeof *x);
	free(x);
	return 0;
}

/* The TLV `tag` of the last answer (n bytes). */
static const uint8_t *field(size_t n, uint8_t tag, size_t *len)
{
	struct kh_rd rd;
	struct kh_tlv t;
	kh_rd_init(&rd, rbuf, n);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == tag) {
			*len = t.len;
			return t.v;
		}
	fail_msg("tag %u not in the answer", tag);
	return NULL;
}

/* HELLO, and the server's checks of it (as a distribution server makes them). */
static void hello(struct pw *x, struct mod *p, struct sess *s)
{
	struct kh_cert_info si, pi;
	const uint8_t *v;
	size_t n, len;

	memset(s, 0, sizeof *s);
	assert_int_equal(cmd(&p->t, KH_INS_DIST_HELLO, NULL, 0, &n), KH_SW_OK);
	v = field(n, KH_DIST_T_RC, &len);
	assert_int_equal(len, 32);
	memcpy(s->rc, v, 32);
	v = field(n, KH_DIST_T_CERT_SIGN, &len);
	assert_int_equal(kh_cert_check(v, len, x->w->root_pk, KH_ROLE_PROCESSOR, KH_CERT_KEY_ED25519, 0, &si), KH_OK);
	assert_int_equal(kh_dist_cert_hash(v, len, s->fp), KH_OK);
	memcpy(s->sign_pk, si.pub, 32);
	v = field(n, KH_DIST_T_CERT_PAIR, &len);
	assert_int_equal(kh_cert_check(v, len, x->w->root_pk, KH_ROLE_PROCESSOR, KH_CERT_KEY_X25519, 0, &pi), KH_OK);
	assert_int_equal(si.ua, pi.ua);
	assert_int_equal(kh_dist_cert_hash(v, len, s->pair_hash), KH_OK);
	memcpy(s->pair_pk, pi.pub, 32);
	assert_int_equal(kh_random(s->rs, 32), KH_OK);
}

/* The DIST AUTH command of server sv for session s (fp_for: the processor it names). */
static size_t auth_cmd(const struct server *sv, const struct sess *s, const uint8_t rc[32], uint8_t *out)
{
	uint8_t msg[KH_DIST_MSG_MAX], sig[64];
	struct kh_wr w, o;

	kh_wr_init(&w, msg, sizeof msg);
	assert_int_equal(kh_dist_auth_msg(rc, s->rs, s->fp, s->pair_hash, &w), KH_OK);
	assert_int_equal(kh_ed25519_sign(sv->sk, msg, w.len, sig), KH_OK);
	kh_wr_init(&o, out, 2048);
	kh_tlv_put(&o, KH_DIST_T_RS, s->rs, 32);
	kh_tlv_put(&o, KH_DIST_T_CERT_S, sv->cert, sv->cert_len);
	assert_int_equal(kh_tlv_put(&o, KH_DIST_T_AUTH_SIG, sig, 64), KH_OK);
	return o.len;
}

/* AUTH accepted, and the processor's answer checked as the server does. */
static void auth_ok(struct pw *x, struct mod *p, const struct sess *s)
{
	uint8_t c[2048], msg[KH_DIST_MSG_MAX], sh[32];
	const uint8_t *sig;
	struct kh_wr w;
	size_t n, len;

	assert_int_equal(cmd(&p->t, KH_INS_DIST_AUTH, c, auth_cmd(&x->s, s, s->rc, c), &n), KH_SW_OK);
	sig = field(n, KH_DIST_T_RESP_SIG, &len);
	assert_int_equal(len, 64);
	assert_int_equal(kh_dist_cert_hash(x->s.cert, x->s.cert_len, sh), KH_OK);
	kh_wr_init(&w, msg, sizeof msg);
	assert_int_equal(kh_dist_resp_msg(s->rs, s->rc, sh, &w), KH_OK);
	assert_int_equal(kh_ed25519_verify(s->sign_pk, msg, w.len, sig), KH_OK);
}

/* The DIST KEY command for session s, with the binding prog and the key wrapped to pair_pk. */
static size_t key_cmd(const struct server *sv, const struct sess *s, const struct kh_dist_prog *prog,
		      const uint8_t kx[32], uint8_t *out)
{
	uint8_t wrapped[KH_DIST_WRAP_LEN], msg[KH_DIST_MSG_MAX], sig[64];
	struct kh_wr w, o;

	assert_int_equal(kh_dist_wrap(s->pair_pk, prog, kx, wrapped), KH_OK);
	kh_wr_init(&w, msg, sizeof msg);
	assert_int_equal(kh_dist_key_msg(s->rc, s->rs, s->fp, prog, wrapped, &w), KH_OK);
	assert_int_equal(kh_ed25519_sign(sv->sk, msg, w.len, sig), KH_OK);
	kh_wr_init(&o, out, 1024);
	kh_tlv_put_u32(&o, KH_DIST_T_PROGRAM, prog->program);
	kh_tlv_put_u32(&o, KH_DIST_T_VERSION, prog->version);
	kh_tlv_put(&o, KH_DIST_T_MANIFEST_HASH, prog->manifest_hash, 32);
	kh_tlv_put_u32(&o, KH_DIST_T_CHUNKS, prog->chunks);
	kh_tlv_put(&o, KH_DIST_T_HE, prog->he, 32);
	kh_tlv_put(&o, KH_DIST_T_WRAPPED, wrapped, sizeof wrapped);
	assert_int_equal(kh_tlv_put(&o, KH_DIST_T_KEY_SIG, sig, 64), KH_OK);
	return o.len;
}

/* A token answered in rbuf (n bytes) into tok. */
static size_t token_of(size_t n, uint8_t *tok)
{
	size_t len;
	const uint8_t *v = field(n, KH_DIST_T_TOKEN, &len);
	memcpy(tok, v, len);
	return len;
}

/* hello, auth, key: the pending token for prog on processor p. */
static size_t deliver(struct pw *x, struct mod *p, struct sess *s, const struct kh_dist_prog *prog, uint8_t *tok)
{
	uint8_t c[1024];
	size_t n;

	hello(x, p, s);
	auth_ok(x, p, s);
	assert_int_equal(cmd(&p->t, KH_INS_DIST_KEY, c, key_cmd(&x->s, s, prog, x->kx, c), &n), KH_SW_OK);
	return token_of(n, tok);
}

static size_t activate_cmd(const struct server *sv, const uint8_t fp[32], const struct kh_dist_prog *prog,
			   const uint8_t receipt[16], const uint8_t *tok, size_t toklen, uint8_t *out)
{
	uint8_t msg[KH_DIST_MSG_MAX], sig[64];
	struct kh_wr w, o;

	kh_wr_init(&w, msg, sizeof msg);
	assert_int_equal(kh_dist_program_msg(fp, prog, receipt, &w), KH_OK);
	assert_int_equal(kh_ed25519_sign(sv->sk, msg, w.len, sig), KH_OK);
	kh_wr_init(&o, out, 1024);
	kh_tlv_put(&o, KH_DIST_T_TOKEN, tok, toklen);
	kh_tlv_put(&o, KH_DIST_T_PROGRAM_SIG, sig, 64);
	assert_int_equal(kh_tlv_put(&o, KH_DIST_T_RECEIPT, receipt, 16), KH_OK);
	return o.len;
}

static size_t run_open_cmd(const uint8_t *tok, size_t toklen, const char *manifest, uint8_t *out)
{
	struct kh_wr o;
	kh_wr_init(&o, out, 4096);
	kh_tlv_put(&o, KH_DIST_T_RUN_TOKEN, tok, toklen);
	assert_int_equal(kh_tlv_put(&o, KH_DIST_T_MANIFEST, (const uint8_t *)manifest, strlen(manifest)), KH_OK);
	return o.len;
}

static uint16_t chunk(struct mod *p, uint32_t i, const uint8_t *ct, size_t ctlen, size_t *n)
{
	uint8_t c[4 + KH_DIST_CHUNK_CT_MAX];
	kh_put_be32(c, i);
	memcpy(c + 4, ct, ctlen);
	return cmd(&p->t, KH_INS_RUN_CHUNK, c, 4 + ctlen, n);
}

/* The whole package through RUN OPEN and RUN CHUNK: the plaintext comes back, chunk by chunk. */
static void run_ok(struct pw *x, struct mod *p, const uint8_t *tok, size_t toklen)
{
	uint8_t c[4096];
	size_t n;

	assert_int_equal(cmd(&p->t, KH_INS_RUN_OPEN, c, run_open_cmd(tok, toklen, x->manifest, c), &n), KH_SW_OK);
	assert_int_equal(n, 4);
	assert_int_equal(kh_get_be32(rbuf), NCHUNKS);
	for (uint32_t i = 0; i < NCHUNKS; i++) {
		assert_int_equal(chunk(p, i, x->ct[i], x->ctlen[i], &n), KH_SW_OK);
		assert_int_equal(n, x->ctlen[i] - KH_TAG_LEN);
		assert_memory_equal(rbuf, x->pt + i * KH_DIST_CHUNK_MAX, n);
	}
	/* the run is over: the key is gone */
	assert_int_equal(chunk(p, NCHUNKS, x->ct[0], x->ctlen[0], &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
}

static const uint8_t receipt[16] = "receipt-0000001";

/* ---- the whole second path, then a run ---- */

static void test_flow(void **state)
{
	struct pw *x = *state;
	uint8_t tok[512], act[512], c[1024];
	size_t toklen, actlen, n;
	struct sess s;

	toklen = deliver(x, &x->p1, &s, &x->prog, tok);
	/* the token names nothing in clear: no program key, no plaintext, not even the program */
	assert_true(toklen > 16);
	assert_null(memmem(tok, toklen, x->kx, 32));
	/* pending: nothing runs */
	assert_int_equal(cmd(&x->p1.t, KH_INS_RUN_OPEN, c, run_open_cmd(tok, toklen, x->manifest, c), &n),
			 kh_err_to_sw(KH_ERR_LICENCE_PENDING));
	assert_int_equal(n, 0);
	/* the program signature, after the charge: active */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &x->prog, receipt, tok, toklen, c),
			     &n),
			 KH_SW_OK);
	actlen = token_of(n, act);
	run_ok(x, &x->p1, act, actlen);
	/* and again: a licence is not used up by a run */
	run_ok(x, &x->p1, act, actlen);
	/* activating twice with the same receipt is harmless; another receipt is refused */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &x->prog, receipt, act, actlen, c),
			     &n),
			 KH_SW_OK);
	{
		static const uint8_t other[16] = "receipt-0000002";
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
				     activate_cmd(&x->s, s.fp, &x->prog, other, act, actlen, c), &n),
				 kh_err_to_sw(KH_ERR_LICENCE));
	}
	/* RUN CLOSE forgets the key mid-run */
	assert_int_equal(cmd(&x->p1.t, KH_INS_RUN_OPEN, c, run_open_cmd(act, actlen, x->manifest, c), &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, 0, x->ct[0], x->ctlen[0], &n), KH_SW_OK);
	assert_int_equal(cmd(&x->p1.t, KH_INS_RUN_CLOSE, NULL, 0, &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, 1, x->ct[1], x->ctlen[1], &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
}

/* ---- the server must be the root's distributor, proving itself over our Rc ---- */

static void test_server_refused(void **state)
{
	struct pw *x = *state;
	uint8_t c[2048];
	struct sess s, s2;
	size_t n;

	/* a distributor certificate from another root */
	hello(x, &x->p1, &s);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->foreign, &s, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_CERT));
	/* the session is over: even the genuine server must start again */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->s, &s, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SESSION));
	/* a key the root certified, but not as a distributor */
	hello(x, &x->p1, &s);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->fake_role, &s, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_CERT_ROLE));
	/* the genuine server's answer to an earlier session (another Rc) */
	hello(x, &x->p1, &s);
	hello(x, &x->p1, &s2);
	memcpy(s2.rs, s.rs, 32);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->s, &s2, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	/* an answer made for another processor, with this one's Rc */
	hello(x, &x->p2, &s2);
	hello(x, &x->p1, &s);
	memcpy(s2.rc, s.rc, 32);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->s, &s2, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	/* AUTH with no HELLO before it */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, auth_cmd(&x->s, &s, s.rc, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SESSION));
	/* a card has no such instruction */
	assert_int_equal(cmd(&x->w->c1.t, KH_INS_DIST_HELLO, NULL, 0, &n), kh_err_to_sw(KH_ERR_APDU_INS));
}

/* ---- the key message: this session's, this server's, unaltered ---- */

static void test_key_refused(void **state)
{
	struct pw *x = *state;
	uint8_t c[1024], old[1024];
	struct kh_dist_prog p;
	struct sess s, s2;
	size_t n, oldlen;

	/* before the server proved itself */
	hello(x, &x->p1, &s);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, c, key_cmd(&x->s, &s, &x->prog, x->kx, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SESSION));
	/* a genuine key message replayed into a later session */
	hello(x, &x->p1, &s);
	auth_ok(x, &x->p1, &s);
	oldlen = key_cmd(&x->s, &s, &x->prog, x->kx, old);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, old, oldlen, &n), KH_SW_OK);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, old, oldlen, &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
	hello(x, &x->p1, &s2);
	auth_ok(x, &x->p1, &s2);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, old, oldlen, &n), kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	/* altered: the version (a receipt for version 3 must not open version 4), a byte anywhere */
	hello(x, &x->p1, &s);
	auth_ok(x, &x->p1, &s);
	n = key_cmd(&x->s, &s, &x->prog, x->kx, c);
	c[3 + 4 + 3 + 3] ^= 1; /* the version's last byte */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, c, n, &n), kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	for (size_t pos = 0; pos < oldlen; pos += 37) {
		hello(x, &x->p1, &s);
		auth_ok(x, &x->p1, &s);
		n = key_cmd(&x->s, &s, &x->prog, x->kx, c);
		c[pos] ^= 0x40;
		assert_int_not_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, c, n, &n), KH_SW_OK);
	}
	/* a chunk count out of range, even signed */
	p = x->prog;
	p.chunks = 0;
	hello(x, &x->p1, &s);
	auth_ok(x, &x->p1, &s);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, c, key_cmd(&x->s, &s, &p, x->kx, c), &n),
			 kh_err_to_sw(KH_ERR_FORMAT));
}

/* ---- licences: ours, activated, for this program ---- */

static void test_licence_refused(void **state)
{
	struct pw *x = *state;
	uint8_t tok[512], tok2[512], act[512], c[4096];
	size_t toklen, tok2len, actlen, n;
	struct sess s, s2;

	toklen = deliver(x, &x->p1, &s, &x->prog, tok);
	tok2len = deliver(x, &x->p2, &s2, &x->prog, tok2);
	/* the program signature for another processor, for another receipt than signed, forged */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
			     activate_cmd(&x->s, s2.fp, &x->prog, receipt, tok, toklen, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	n = activate_cmd(&x->s, s.fp, &x->prog, receipt, tok, toklen, c);
	c[n - 1] ^= 1; /* the receipt id */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, n, &n), kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
			     activate_cmd(&x->foreign, s.fp, &x->prog, receipt, tok, toklen, c), &n),
			 kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	/* another processor's token, even with a signature for us */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
			     activate_cmd(&x->s, s.fp, &x->prog, receipt, tok2, tok2len, c), &n),
			 kh_err_to_sw(KH_ERR_LICENCE));
	/* a token altered anywhere, or cut */
	for (size_t pos = 0; pos < toklen; pos += 11) {
		uint8_t bad[512];
		memcpy(bad, tok, toklen);
		bad[pos] ^= 0x01;
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
				     activate_cmd(&x->s, s.fp, &x->prog, receipt, bad, toklen, c), &n),
				 kh_err_to_sw(KH_ERR_LICENCE));
	}
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c,
			     activate_cmd(&x->s, s.fp, &x->prog, receipt, tok, toklen - 1, c), &n),
			 kh_err_to_sw(KH_ERR_LICENCE));
	/* activated, then run with a changed manifest, or on the other processor */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &x->prog, receipt, tok, toklen, c),
			     &n),
			 KH_SW_OK);
	actlen = token_of(n, act);
	assert_int_equal(cmd(&x->p1.t, KH_INS_RUN_OPEN, c,
			     run_open_cmd(act, actlen, "{\"name\":\"hello\",\"version\":\"3\",\"entry\":\"evil\",\"kind\":\"elf\"}", c),
			     &n),
			 kh_err_to_sw(KH_ERR_MANIFEST));
	assert_int_equal(cmd(&x->p2.t, KH_INS_RUN_OPEN, c, run_open_cmd(act, actlen, x->manifest, c), &n),
			 kh_err_to_sw(KH_ERR_LICENCE));
	/* none of these left a run open */
	assert_int_equal(chunk(&x->p1, 0, x->ct[0], x->ctlen[0], &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
}

/* ---- the chunks: each in its place, unaltered, the ones the server signed ---- */

static size_t active(struct pw *x, const struct kh_dist_prog *prog, uint8_t *act)
{
	uint8_t tok[512], c[1024];
	struct sess s;
	size_t toklen, n;

	toklen = deliver(x, &x->p1, &s, prog, tok);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, prog, receipt, tok, toklen, c), &n),
			 KH_SW_OK);
	return token_of(n, act);
}

static void open_run(struct pw *x, const uint8_t *act, size_t actlen)
{
	uint8_t c[4096];
	size_t n;
	assert_int_equal(cmd(&x->p1.t, KH_INS_RUN_OPEN, c, run_open_cmd(act, actlen, x->manifest, c), &n), KH_SW_OK);
}

static void test_chunks_refused(void **state)
{
	struct pw *x = *state;
	uint8_t act[512], bad[KH_DIST_CHUNK_CT_MAX];
	struct kh_dist_prog p;
	size_t actlen, n;

	actlen = active(x, &x->prog, act);
	/* a flipped byte: refused, nothing of it answered, the run over */
	open_run(x, act, actlen);
	memcpy(bad, x->ct[0], x->ctlen[0]);
	bad[5] ^= 0x80;
	assert_int_equal(chunk(&x->p1, 0, bad, x->ctlen[0], &n), kh_err_to_sw(KH_ERR_AUTH));
	assert_int_equal(n, 0);
	assert_int_equal(chunk(&x->p1, 0, x->ct[0], x->ctlen[0], &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
	/* reordered: chunk 1 given as chunk 0 fails its nonce */
	open_run(x, act, actlen);
	assert_int_equal(chunk(&x->p1, 0, x->ct[1], x->ctlen[1], &n), kh_err_to_sw(KH_ERR_AUTH));
	/* skipped: chunk 1 before chunk 0 */
	open_run(x, act, actlen);
	assert_int_equal(chunk(&x->p1, 1, x->ct[1], x->ctlen[1], &n), kh_err_to_sw(KH_ERR_CHUNK));
	/* cut: the short last chunk given in the middle has the wrong length for its place */
	open_run(x, act, actlen);
	assert_int_equal(chunk(&x->p1, 0, x->ct[0], x->ctlen[0], &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, 1, x->ct[2], x->ctlen[2], &n), kh_err_to_sw(KH_ERR_FORMAT));
	/* appended: after the last, nothing more is taken */
	open_run(x, act, actlen);
	for (uint32_t i = 0; i < NCHUNKS; i++)
		assert_int_equal(chunk(&x->p1, i, x->ct[i], x->ctlen[i], &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, NCHUNKS, x->ct[1], x->ctlen[1], &n), kh_err_to_sw(KH_ERR_DIST_SESSION));
	/* a server that signed a chain these chunks do not make: the last answers nothing */
	p = x->prog;
	p.he[0] ^= 1;
	actlen = active(x, &p, act);
	open_run(x, act, actlen);
	assert_int_equal(chunk(&x->p1, 0, x->ct[0], x->ctlen[0], &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, 1, x->ct[1], x->ctlen[1], &n), KH_SW_OK);
	assert_int_equal(chunk(&x->p1, 2, x->ct[2], x->ctlen[2], &n), kh_err_to_sw(KH_ERR_CHUNK));
	assert_int_equal(n, 0);
}

/* ---- the runner: a real program, decrypted into memory and run confined ---- */

/* The server's package of pt (len bytes) for prog's program and version, written to path. */
static void package_file(const uint8_t *pt, size_t len, const char *manifest, const uint8_t kx[32],
			 struct kh_dist_prog *prog, const char *path)
{
	uint8_t hdr[KH_DIST_PKG_HDR_MAX], h[32], ct[KH_DIST_CHUNK_CT_MAX];
	struct kh_wr w;
	FILE *f;

	prog->chunks = (uint32_t)((len + KH_DIST_CHUNK_MAX - 1) / KH_DIST_CHUNK_MAX);
	assert_int_equal(kh_sha256((const uint8_t *)manifest, strlen(manifest), prog->manifest_hash), KH_OK);
	assert_int_equal(kh_dist_chain_init(prog, h), KH_OK);
	kh_wr_init(&w, hdr, sizeof hdr);
	assert_int_equal(kh_dist_pkg_head(&w, prog->program, prog->version, (const uint8_t *)manifest,
					  strlen(manifest), prog->chunks),
			 KH_OK);
	assert_non_null(f = fopen(path, "wb"));
	assert_int_equal(fwrite(hdr, 1, w.len, f), w.len);
	for (uint32_t i = 0; i < prog->chunks; i++) {
		size_t n = i + 1 < prog->chunks ? KH_DIST_CHUNK_MAX : len - (size_t)i * KH_DIST_CHUNK_MAX;
		assert_int_equal(kh_dist_chunk_seal(kx, prog, i, pt + (size_t)i * KH_DIST_CHUNK_MAX, n, ct), KH_OK);
		assert_int_equal(kh_dist_chain_step(h, ct + n), KH_OK);
		assert_int_equal(fwrite(ct, 1, n + KH_TAG_LEN, f), n + KH_TAG_LEN);
	}
	assert_int_equal(fclose(f), 0);
	memcpy(prog->he, h, 32);
}

/* A directory the program may write to: made, and the program's when the runner runs it as nobody
 * (under root; the test directory then lets nobody through). */
static void program_dir(struct pw *x, const char *path)
{
	assert_int_equal(mkdir(path, 0700), 0);
	if (geteuid() == 0) {
		assert_int_equal(chmod(x->w->dir, 0711), 0);
		assert_int_equal(chown(path, KH_RUN_NOBODY, KH_RUN_NOBODY), 0);
	}
}

/* Run the package at pkg under act on p1; its standard output into *out (NUL-terminated). */
static kh_err run_pkg(struct pw *x, const char *pkg, const uint8_t *act, size_t actlen, const char *workdir,
		      char *const *args, int *status, char **out)
{
	char *outp = path_in(x->w->dir, "out.txt"), why[256];
	struct kh_run_opts o = {.args = args, .fd_in = -1, .fd_err = -1};
	int fd = open(pkg, O_RDONLY | O_CLOEXEC);
	size_t n;
	kh_err r;

	assert_true(fd >= 0);
	o.fd_out = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(o.fd_out >= 0);
	o.workdir_fd = open(workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(o.workdir_fd >= 0);
	r = kh_run_package(&x->p1.t, fd, act, actlen, &o, status, why, sizeof why);
	close(o.workdir_fd);
	close(fd);
	close(o.fd_out);
	*out = (char *)kh_test_slurp(outp, &n);
	if (r != KH_OK)
		assert_true(why[0] != 0);
	free(outp);
	return r;
}

static void test_run(void **state)
{
	struct pw *x = *state;
	const char *probe = getenv("KH_PROC_PROBE");
	char *pkg = path_in(x->w->dir, "probe.khpk"), *work = path_in(x->w->dir, "work"),
	     *other = path_in(x->w->dir, "other"), *outside = path_in(other, "outside.txt"),
	     *inside = path_in(work, "inside.txt"), *out;
	char *args[] = {outside, NULL};
	static const char manifest[] = "name: probe\nversion: 1\nkind: elf\nrequires: libc.so.6\n";
	uint8_t *elf, act[512], tok[512], c[1024];
	struct kh_dist_prog prog = {.program = 41, .version = 1};
	size_t elflen, actlen, toklen, n;
	struct sess s;
	int status = -1;

	assert_non_null(probe);
	/* work and other: both the program's user's to write, as far as file modes go; only the
	 * confinement keeps it out of other */
	program_dir(x, work);
	program_dir(x, other);
	elf = kh_test_slurp(probe, &elflen);
	package_file(elf, elflen, manifest, x->kx, &prog, pkg);

	/* pending: the runner gets nothing to run, and nothing runs */
	toklen = deliver(x, &x->p1, &s, &prog, tok);
	assert_int_equal(run_pkg(x, pkg, tok, toklen, work, args, &status, &out), KH_ERR_LICENCE_PENDING);
	assert_string_equal(out, "");
	free(out);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &prog, receipt, tok, toklen, c), &n),
			 KH_SW_OK);
	actlen = token_of(n, act);

	assert_int_equal(run_pkg(x, pkg, act, actlen, work, args, &status, &out), KH_OK);
	assert_int_equal(status, 3);
	assert_non_null(strstr(out, "probe ran: probe\n"));
	/* an execute-only image: not dumpable even after execve, so its user cannot trace it */
	assert_non_null(strstr(out, "dumpable=0\n"));
	assert_non_null(strstr(out, "inside=ok\n"));
	assert_non_null(strstr(out, "outside=EACCES\n"));
	assert_non_null(strstr(out, "ptrace=EPERM\n"));
	assert_int_equal(access(inside, F_OK), 0);
	assert_int_equal(access(outside, F_OK), -1);
	free(out);

	/* a byte of the package changed on disk: refused at that chunk, nothing run */
	{
		int fd = open(pkg, O_RDWR);
		uint8_t b;
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, &b, 1, 5000), 1);
		b ^= 1;
		assert_int_equal(pwrite(fd, &b, 1, 5000), 1);
		close(fd);
		assert_int_equal(unlink(inside), 0);
		assert_int_equal(run_pkg(x, pkg, act, actlen, work, args, &status, &out), KH_ERR_AUTH);
		assert_string_equal(out, "");
		assert_int_equal(access(inside, F_OK), -1);
		free(out);
	}
	/* cut by one byte, or one byte appended: the header's geometry refuses it before the processor sees it */
	assert_int_equal(truncate(pkg, 1000), 0);
	assert_int_equal(run_pkg(x, pkg, act, actlen, work, args, &status, &out), KH_ERR_FORMAT);
	free(out);

	/* a script, run by its interpreter */
	{
		static const char sh[] = "echo script ran \"$1\"\necho x > \"$1\" 2>/dev/null || echo outside refused\n";
		static const char sman[] = "name: s\nversion: 1\nkind: script\ninterpreter: /bin/sh\n";
		struct kh_dist_prog sp = {.program = 42, .version = 1};
		package_file((const uint8_t *)sh, strlen(sh), sman, x->kx, &sp, pkg);
		toklen = deliver(x, &x->p1, &s, &sp, tok);
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &sp, receipt, tok, toklen, c),
				     &n),
				 KH_SW_OK);
		actlen = token_of(n, act);
		assert_int_equal(run_pkg(x, pkg, act, actlen, work, args, &status, &out), KH_OK);
		assert_int_equal(status, 0);
		assert_non_null(strstr(out, "script ran"));
		assert_non_null(strstr(out, "outside refused"));
		assert_int_equal(access(outside, F_OK), -1);
		free(out);
	}
	free(elf);
	free(pkg);
	free(inside);
	free(work);
	free(other);
	free(outside);
}

/* ---- the server's engine (keyhole/distsrv.h) against the processor ---- */

static kh_err put_file(void *ctx, const uint8_t *b, size_t n)
{
	return fwrite(b, 1, n, ctx) == n ? KH_OK : KH_ERR_IO;
}

/* hello through the engine, from the processor's answer in rbuf (n bytes) */
static void test_server_engine(void **state)
{
	struct pw *x = *state;
	struct kh_dist_server srv, other;
	struct kh_dist_peer peer, peer2;
	struct kh_dist_prog prog = {.program = 50, .version = 2};
	uint8_t hello1[4096], hello2[4096], c[2048], resp1[128], sig[64], tok[512], act[512], kx[32];
	size_t h1, h2, n, r1, toklen, actlen;
	static const char manifest[] = "name: p\nversion: 2\nkind: script\ninterpreter: /bin/sh\n";
	static const char script[] = "echo engine ran\n";
	char *pkg = path_in(x->w->dir, "engine.khpk"), *out;
	int status;
	FILE *f;

	assert_int_equal(kh_dist_server_init(&srv, x->s.sk, x->s.cert, x->s.cert_len, x->w->root_pk), KH_OK);
	/* a key that is not the certified one, a certificate of another role or root */
	assert_int_equal(kh_dist_server_init(&other, x->fake_role.sk, x->s.cert, x->s.cert_len, x->w->root_pk),
			 KH_ERR_CERT_KEY);
	assert_int_equal(kh_dist_server_init(&other, x->fake_role.sk, x->fake_role.cert, x->fake_role.cert_len,
					     x->w->root_pk),
			 KH_ERR_CERT_ROLE);
	assert_int_equal(kh_dist_server_init(&other, x->foreign.sk, x->foreign.cert, x->foreign.cert_len, x->w->root_pk),
			 KH_ERR_CERT);

	assert_int_equal(cmd(&x->p2.t, KH_INS_DIST_HELLO, NULL, 0, &h2), KH_SW_OK);
	memcpy(hello2, rbuf, h2);
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_HELLO, NULL, 0, &h1), KH_SW_OK);
	memcpy(hello1, rbuf, h1);
	/* a hello with p1's challenge and p2's certificates: the host substitutes a processor, then
	 * relays to p1; p1's answer is not p2's key's signature */
	{
		struct kh_wr w;
		struct kh_tlv t;
		struct kh_rd rd;
		uint8_t mixed[4096];
		kh_wr_init(&w, mixed, sizeof mixed);
		kh_rd_init(&rd, hello1, h1);
		assert_int_equal(kh_tlv_next(&rd, &t), 1);
		kh_tlv_put(&w, t.tag, t.v, t.len);
		kh_rd_init(&rd, hello2, h2);
		assert_int_equal(kh_tlv_next(&rd, &t), 1);
		while (kh_tlv_next(&rd, &t) == 1)
			kh_tlv_put(&w, t.tag, t.v, t.len);
		assert_int_equal(kh_dist_srv_hello(&srv, mixed, w.len, 0, &peer2), KH_OK);
		kh_wr_init(&w, c, sizeof c);
		assert_int_equal(kh_dist_srv_auth(&srv, &peer2, &w), KH_OK);
		/* p1 refuses an auth made for p2's certificates */
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, w.len, &n), kh_err_to_sw(KH_ERR_DIST_SIGNATURE));
	}
	/* the genuine session, all through the engine */
	assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_HELLO, NULL, 0, &h1), KH_SW_OK);
	memcpy(hello1, rbuf, h1);
	assert_int_equal(kh_dist_srv_hello(&srv, hello1, h1, 0, &peer), KH_OK);
	{
		struct kh_wr w;
		kh_wr_init(&w, c, sizeof c);
		assert_int_equal(kh_dist_srv_auth(&srv, &peer, &w), KH_OK);
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, w.len, &r1), KH_SW_OK);
		memcpy(resp1, rbuf, r1);
	}
	assert_int_equal(kh_dist_srv_resp(&srv, &peer, resp1, r1), KH_OK);
	/* the same answer for another session (another Rs), or another processor's */
	peer2 = peer;
	peer2.rs[0] ^= 1;
	assert_int_equal(kh_dist_srv_resp(&srv, &peer2, resp1, r1), KH_ERR_DIST_SIGNATURE);
	peer2 = peer;
	memcpy(peer2.sign_pk, x->s.pk, 32);
	assert_int_equal(kh_dist_srv_resp(&srv, &peer2, resp1, r1), KH_ERR_DIST_SIGNATURE);
	/* a hello whose certificates come from another root: a self-made processor */
	{
		struct mod fake;
		make_mod(x->w->foreign, KH_ROLE_PROCESSOR, &fake);
		assert_int_equal(cmd(&fake.t, KH_INS_DIST_HELLO, NULL, 0, &n), KH_SW_OK);
		assert_int_equal(kh_dist_srv_hello(&srv, rbuf, n, 0, &peer2), KH_ERR_CERT);
		kh_softmod_free(fake.sm);
	}
	/* a card's certificates are not a processor's */
	{
		struct kh_wr w;
		uint8_t m[4096], rc[32] = {0};
		size_t cl;
		kh_wr_init(&w, m, sizeof m);
		kh_tlv_put(&w, KH_DIST_T_RC, rc, 32);
		assert_int_equal(send_apdu(&x->w->c1.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, rbuf, sizeof rbuf, &cl), KH_SW_OK);
		kh_tlv_put(&w, KH_DIST_T_CERT_SIGN, rbuf, cl);
		assert_int_equal(send_apdu(&x->w->c1.t, KH_CLA, KH_INS_GET_CERT, 0, 0, NULL, 0, rbuf, sizeof rbuf, &cl), KH_SW_OK);
		kh_tlv_put(&w, KH_DIST_T_CERT_PAIR, rbuf, cl);
		assert_int_equal(kh_dist_srv_hello(&srv, m, w.len, 0, &peer2), KH_ERR_CERT_ROLE);
	}

	/* the package, the key, the program signature: a script that runs */
	assert_int_equal(kh_random(kx, sizeof kx), KH_OK);
	assert_non_null(f = fopen(pkg, "wb"));
	assert_int_equal(kh_dist_srv_package(kx, &prog, (const uint8_t *)manifest, strlen(manifest), (const uint8_t *)script,
					     strlen(script), put_file, f),
			 KH_OK);
	assert_int_equal(fclose(f), 0);
	{
		struct kh_wr w;
		kh_wr_init(&w, c, sizeof c);
		assert_int_equal(kh_dist_srv_key(&srv, &peer, &prog, kx, &w), KH_OK);
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_KEY, c, w.len, &n), KH_SW_OK);
		toklen = token_of(n, tok);
	}
	assert_int_equal(kh_dist_srv_program_sig(&srv, peer.fp, &prog, receipt, sig), KH_OK);
	{
		struct kh_wr w;
		kh_wr_init(&w, c, sizeof c);
		kh_tlv_put(&w, KH_DIST_T_TOKEN, tok, toklen);
		kh_tlv_put(&w, KH_DIST_T_PROGRAM_SIG, sig, 64);
		kh_tlv_put(&w, KH_DIST_T_RECEIPT, receipt, 16);
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_ACTIVATE, c, w.len, &n), KH_SW_OK);
		actlen = token_of(n, act);
	}
	{
		char *work = path_in(x->w->dir, "w2");
		program_dir(x, work);
		assert_int_equal(run_pkg(x, pkg, act, actlen, work, NULL, &status, &out), KH_OK);
		assert_int_equal(status, 0);
		assert_string_equal(out, "engine ran\n");
		free(out);
		free(work);
	}
	/* a manifest that does not parse is never packaged */
	assert_non_null(f = fopen(pkg, "wb"));
	assert_int_equal(kh_dist_srv_package(kx, &prog, (const uint8_t *)"name: x\n", 8, (const uint8_t *)script,
					     strlen(script), put_file, f),
			 KH_ERR_FORMAT);
	fclose(f);
	kh_wipe(&srv, sizeof srv);
	free(pkg);
}

/* ---- the server's identity: its key made in its directory, certified by the authority ---- */

static void test_identity(void **state)
{
	struct pw *x = *state;
	char *d1 = path_in(x->w->dir, "srv1"), *d2 = path_in(x->w->dir, "srv2"), *k1 = path_in(d1, "distributor.key"),
	     *c1 = path_in(d1, "distributor.crt"), *c2 = path_in(d2, "distributor.crt");
	struct kh_dist_server srv;
	uint32_t s1 = 0, s2 = 0;
	struct stat st;

	assert_int_equal(kh_dist_identity_new(x->w->auth, d1, &s1), KH_OK);
	assert_int_equal(kh_dist_identity_new(x->w->auth, d2, &s2), KH_OK);
	assert_true(s1 >= KH_DIST_SERIAL_BASE && s1 < KH_SIGNER_SERIAL_BASE);
	assert_true(s2 != s1);
	assert_int_equal(stat(k1, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(kh_dist_identity_load(d1, &srv), KH_OK);
	assert_int_equal(srv.serial, s1);
	/* the server's certificate is one the processor takes */
	{
		uint8_t c[2048];
		struct kh_wr w;
		struct kh_dist_peer peer;
		size_t n;
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_HELLO, NULL, 0, &n), KH_SW_OK);
		assert_int_equal(kh_dist_srv_hello(&srv, rbuf, n, 0, &peer), KH_OK);
		kh_wr_init(&w, c, sizeof c);
		assert_int_equal(kh_dist_srv_auth(&srv, &peer, &w), KH_OK);
		assert_int_equal(cmd(&x->p1.t, KH_INS_DIST_AUTH, c, w.len, &n), KH_SW_OK);
		assert_int_equal(kh_dist_srv_resp(&srv, &peer, rbuf, n), KH_OK);
	}
	/* never made twice over */
	assert_int_equal(kh_dist_identity_new(x->w->auth, d1, NULL), KH_ERR_EXISTS);
	/* another server's certificate beside this key; a key others may read */
	assert_int_equal(rename(c2, c1), 0);
	assert_int_equal(kh_dist_identity_load(d1, &srv), KH_ERR_CERT_KEY);
	assert_int_equal(chmod(k1, 0644), 0);
	assert_int_not_equal(kh_dist_identity_load(d1, &srv), KH_OK);
	kh_wipe(&srv, sizeof srv);
	free(d1);
	free(d2);
	free(k1);
	free(c1);
	free(c2);
}

/* ---- the daemon: the host's socket carries everything but the runner's commands ---- */

struct served {
	struct kh_module *m;
	const char *path;
	volatile sig_atomic_t stop;
	kh_err r;
};

static void *serve_thread(void *arg)
{
	struct served *sv = arg;
	sv->r = kh_serve_processor(sv->path, sv->m, &sv->stop);
	return NULL;
}

static void test_daemon(void **state)
{
	struct pw *x = *state;
	const char *probe = getenv("KH_PROC_PROBE");
	char *sock = path_in(x->w->dir, "proc.sock"), *pkg = path_in(x->w->dir, "probe.khpk"),
	     *outp = path_in(x->w->dir, "out.txt"), *work = path_in(x->w->dir, "work"), why[256], *out;
	static const char manifest[] = "name: probe\nversion: 1\nkind: elf\n";
	struct served sv = {.m = kh_softmod_module(x->p1.sm), .path = sock};
	struct kh_dist_prog prog = {.program = 43, .version = 1};
	struct kh_transport t;
	struct kh_run_opts o = {.fd_in = -1, .fd_err = -1, .workdir_fd = -1};
	uint8_t *elf, tok[512], act[512], c[4096];
	size_t elflen, toklen, actlen, n;
	struct sess s;
	pthread_t th;
	int status = -1, fd;

	assert_non_null(probe);
	program_dir(x, work);
	elf = kh_test_slurp(probe, &elflen);
	package_file(elf, elflen, manifest, x->kx, &prog, pkg);
	assert_int_equal(pthread_create(&th, NULL, serve_thread, &sv), 0);
	for (int i = 0; i < 200 && kh_transport_unix(&t, sock) != KH_OK; i++)
		usleep(10000);
	/* the second path goes through the socket as it does in process */
	toklen = deliver(x, &x->p1, &s, &prog, tok);
	assert_int_equal(cmd(&t, KH_INS_DIST_ACTIVATE, c, activate_cmd(&x->s, s.fp, &prog, receipt, tok, toklen, c), &n),
			 KH_SW_OK);
	actlen = token_of(n, act);
	/* the runner's commands do not: not RUN OPEN with a good token, nor a chunk */
	assert_int_equal(cmd(&t, KH_INS_RUN_OPEN, c, run_open_cmd(act, actlen, manifest, c), &n),
			 kh_err_to_sw(KH_ERR_APDU_INS));
	assert_int_equal(cmd(&t, KH_INS_RUN_CLOSE, NULL, 0, &n), kh_err_to_sw(KH_ERR_APDU_INS));
	/* a run request: the program writes to the host's descriptor */
	fd = open(pkg, O_RDONLY | O_CLOEXEC);
	o.fd_out = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	o.workdir_fd = open(work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0 && o.fd_out >= 0 && o.workdir_fd >= 0);
	assert_int_equal(kh_processor_run(&t, fd, act, actlen, &o, &status, why, sizeof why), KH_OK);
	assert_int_equal(status, 3);
	close(o.fd_out);
	out = (char *)kh_test_slurp(outp, &n);
	assert_non_null(strstr(out, "probe ran: probe\n"));
	assert_non_null(strstr(out, "inside=ok\n"));
	free(out);
	/* a pending token: refused, with the reason in words */
	assert_int_equal(kh_processor_run(&t, fd, tok, toklen, &o, &status, why, sizeof why), KH_ERR_LICENCE_PENDING);
	assert_non_null(strstr(why, "not activated"));
	close(fd);
	close(o.workdir_fd);
	kh_transport_close(&t);
	sv.stop = 1;
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(sv.r, KH_OK);
	free(elf);
	free(sock);
	free(pkg);
	free(outp);
	free(work);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_flow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_licence_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_engine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
