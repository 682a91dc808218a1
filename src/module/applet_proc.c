/*
 * The processor applet: the tamper-resistant processor's side of program distribution
 * (docs/protocols/distribution.md, seed 002). The distribution server S talks to it through the
 * client host, which relays every message and can read, drop or replay any of them:
 *
 *   DIST HELLO     a fresh challenge Rc and our two certificates (a new session)
 *   DIST AUTH      S proves its certified key over our Rc; we answer over its Rs
 *   DIST KEY       the wrapped program key, signed by that session's S over Rc and Rs: we answer
 *                  a pending licence token, sealed under a key only we hold
 *   DIST ACTIVATE  S's signature over the program (given after the charge): the active token
 *   RUN OPEN       an active token and the package's manifest: only now is the key unwrapped
 *   RUN CHUNK      chunk i in, its plaintext out, strictly in order; the last answers only when
 *                  the chain of tags equals what S signed
 *   RUN CLOSE      forget the program key
 *
 * The RUN commands give plaintext: the processor daemon sends them only from its own runner,
 * never from the host's socket. Nothing here is persistent: the session, and the run in progress,
 * live in the applet's volatile slot (m->vol.proc), and licences live in the tokens the host
 * keeps, so the processor serves any number of programs with a fixed state.
 *
 * Every command is plain (never inside a paired channel), so the module's work buffers m->inner
 * and m->inner_resp are free for a token and its body while a command runs.
 */
#include <string.h>

#include "keyhole/dist.h"
#include "module/module_int.h"

enum { SESSION_NONE = 0, SESSION_HELLO, SESSION_AUTHED };
enum { RUN_NONE = 0, RUN_OPEN };
enum { LIC_PENDING = 1, LIC_ACTIVE = 2 };

static const char label_licence[] = "keyhole dist v1 licence";
static const uint8_t token_magic[4] = {'K', 'H', 'L', '1'};
/* The licence token: magic, nonce, the sealed body (LIC_* TLVs), its tag. */
#define TOKEN_BODY_MAX 256
#define TOKEN_MAX (sizeof token_magic + KH_NONCE_LEN + TOKEN_BODY_MAX + KH_TAG_LEN)
/* The most manifest bytes RUN OPEN takes (the rest of the command is the token). */
#define MANIFEST_MAX 3072

enum {
	LIC_T_STATE = 1,
	LIC_T_PROGRAM,
	LIC_T_VERSION,
	LIC_T_MANIFEST_HASH,
	LIC_T_CHUNKS,
	LIC_T_HE,
	LIC_T_WRAPPED,
	LIC_T_SERVER_SERIAL,
	LIC_T_SERVER_PK,
	LIC_T_RECEIPT,
	LIC_T_MAX = LIC_T_RECEIPT
};

struct licence {
	uint8_t state;
	struct kh_dist_prog prog;
	uint8_t wrapped[KH_DIST_WRAP_LEN];
	uint32_t server_serial;
	uint8_t server_pk[KH_ED25519_PK_LEN];
	uint8_t receipt[KH_DIST_RECEIPT_LEN];
};

/* ---- shared checks ---- */

static kh_err need_processor(const struct kh_module *m, const struct kh_apdu *a)
{
	if (a->p1 || a->p2)
		return KH_ERR_APDU_P1P2;
	if (m->p.lifecycle != KH_LC_PERSONALISED)
		return KH_ERR_NOT_PERSONALISED;
	return KH_OK;
}

#define BIT(tag) (1u << (tag))

static void session_end(struct kh_module *m)
{
	struct kh_proc_vol *v = &m->vol.proc;

	v->session = SESSION_NONE;
	kh_wipe(v->rc, sizeof v->rc);
	kh_wipe(v->rs, sizeof v->rs);
	kh_wipe(v->server_pk, sizeof v->server_pk);
	v->server_serial = 0;
}

static void run_end(struct kh_module *m)
{
	struct kh_proc_vol *v = &m->vol.proc;

	v->run = RUN_NONE;
	kh_wipe(v->kx, sizeof v->kx);
	kh_wipe(v->chain, sizeof v->chain);
	kh_wipe(&v->prog, sizeof v->prog);
	v->next = 0;
}

/* A new state loaded: no session, no run. */
static void proc_forget(struct kh_module *m)
{
	kh_wipe(&m->vol.proc, sizeof m->vol.proc);
}

/* fp(P) and the hash of our pairing certificate. */
static kh_err own_hashes(const struct kh_module *m, uint8_t fp[static KH_SHA256_LEN],
			 uint8_t pair_hash[static KH_SHA256_LEN])
{
	kh_err r = kh_dist_cert_hash(m->p.sign_cert, m->p.sign_cert_len, fp);
	return r != KH_OK ? r : kh_dist_cert_hash(m->p.pair_cert, m->p.pair_cert_len, pair_hash);
}

/* ---- licence tokens ---- */

static kh_err licence_key(const struct kh_module *m, uint8_t k[static KH_KEY_LEN])
{
	return kh_hkdf(m->p.pair_sk, sizeof m->p.pair_sk, NULL, 0, (const uint8_t *)label_licence,
		       sizeof label_licence - 1, k, KH_KEY_LEN);
}

/* Seal l into a token, written to resp as the TLV `tag`. */
static kh_err licence_seal(struct kh_module *m, const struct licence *l, struct kh_wr *resp)
{
	uint8_t key[KH_KEY_LEN], *tok = m->inner, *body = m->inner_resp;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, body, TOKEN_BODY_MAX);
	kh_tlv_put_u8(&w, LIC_T_STATE, l->state);
	kh_tlv_put_u32(&w, LIC_T_PROGRAM, l->prog.program);
	kh_tlv_put_u32(&w, LIC_T_VERSION, l->prog.version);
	kh_tlv_put(&w, LIC_T_MANIFEST_HASH, l->prog.manifest_hash, KH_SHA256_LEN);
	kh_tlv_put_u32(&w, LIC_T_CHUNKS, l->prog.chunks);
	kh_tlv_put(&w, LIC_T_HE, l->prog.he, KH_SHA256_LEN);
	kh_tlv_put(&w, LIC_T_WRAPPED, l->wrapped, KH_DIST_WRAP_LEN);
	kh_tlv_put_u32(&w, LIC_T_SERVER_SERIAL, l->server_serial);
	kh_tlv_put(&w, LIC_T_SERVER_PK, l->server_pk, KH_ED25519_PK_LEN);
	if (l->state == LIC_ACTIVE)
		kh_tlv_put(&w, LIC_T_RECEIPT, l->receipt, KH_DIST_RECEIPT_LEN);
	if ((r = w.err) != KH_OK)
		goto out;
	memcpy(tok, token_magic, sizeof token_magic);
	if ((r = kh_random(tok + sizeof token_magic, KH_NONCE_LEN)) != KH_OK || (r = licence_key(m, key)) != KH_OK)
		goto out;
	r = kh_aead_seal(key, tok + sizeof token_magic, token_magic, sizeof token_magic, body, w.len,
			 tok + sizeof token_magic + KH_NONCE_LEN);
	if (r == KH_OK)
		r = kh_tlv_put(resp, KH_DIST_T_TOKEN, tok, sizeof token_magic + KH_NONCE_LEN + w.len + KH_TAG_LEN);
out:
	kh_wipe(key, sizeof key);
	kh_wipe(body, TOKEN_BODY_MAX);
	kh_wipe(tok, TOKEN_MAX);
	return r;
}

static kh_err licence_read(const uint8_t *b, size_t n, struct licence *l)
{
	struct kh_tlv t[LIC_T_MAX + 1];
	unsigned need = BIT(LIC_T_STATE) | BIT(LIC_T_PROGRAM) | BIT(LIC_T_VERSION) | BIT(LIC_T_MANIFEST_HASH) |
			BIT(LIC_T_CHUNKS) | BIT(LIC_T_HE) | BIT(LIC_T_WRAPPED) | BIT(LIC_T_SERVER_SERIAL) |
			BIT(LIC_T_SERVER_PK);
	kh_err r;

	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(b, n, t, LIC_T_MAX, need)) != KH_OK || (r = kh_tlv_u8(&t[LIC_T_STATE], &l->state)) != KH_OK ||
	    (r = kh_tlv_u32(&t[LIC_T_PROGRAM], &l->prog.program)) != KH_OK ||
	    (r = kh_tlv_u32(&t[LIC_T_VERSION], &l->prog.version)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[LIC_T_MANIFEST_HASH], l->prog.manifest_hash, KH_SHA256_LEN)) != KH_OK ||
	    (r = kh_tlv_u32(&t[LIC_T_CHUNKS], &l->prog.chunks)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[LIC_T_HE], l->prog.he, KH_SHA256_LEN)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[LIC_T_WRAPPED], l->wrapped, KH_DIST_WRAP_LEN)) != KH_OK ||
	    (r = kh_tlv_u32(&t[LIC_T_SERVER_SERIAL], &l->server_serial)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[LIC_T_SERVER_PK], l->server_pk, KH_ED25519_PK_LEN)) != KH_OK)
		return r;
	if (l->state == LIC_ACTIVE)
		return t[LIC_T_RECEIPT].v ? kh_tlv_fixed(&t[LIC_T_RECEIPT], l->receipt, KH_DIST_RECEIPT_LEN)
					  : KH_ERR_FORMAT;
	return l->state == LIC_PENDING && !t[LIC_T_RECEIPT].v ? KH_OK : KH_ERR_FORMAT;
}

/* Open a token we made. Anything else (another processor's, altered, cut) is KH_ERR_LICENCE. */
static kh_err licence_open(struct kh_module *m, const struct kh_tlv *t, struct licence *l)
{
	uint8_t key[KH_KEY_LEN], *body = m->inner_resp;
	size_t blen;
	kh_err r;

	memset(l, 0, sizeof *l);
	if (t->len < sizeof token_magic + KH_NONCE_LEN + KH_TAG_LEN + 1 || t->len > TOKEN_MAX ||
	    memcmp(t->v, token_magic, sizeof token_magic) != 0)
		return KH_ERR_LICENCE;
	blen = t->len - sizeof token_magic - KH_NONCE_LEN - KH_TAG_LEN;
	if ((r = licence_key(m, key)) != KH_OK)
		return r;
	r = kh_aead_open(key, t->v + sizeof token_magic, token_magic, sizeof token_magic,
			 t->v + sizeof token_magic + KH_NONCE_LEN, blen + KH_TAG_LEN, body);
	kh_wipe(key, sizeof key);
	if (r == KH_OK && licence_read(body, blen, l) != KH_OK)
		r = KH_ERR_LICENCE; /* sealed by us, so never: a format this build does not read */
	else if (r == KH_ERR_AUTH)
		r = KH_ERR_LICENCE;
	kh_wipe(body, blen);
	if (r != KH_OK)
		kh_wipe(l, sizeof *l);
	return r;
}

/* ---- the session with the server ---- */

static kh_err h_hello(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_proc_vol *v = &m->vol.proc;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	session_end(m);
	if ((r = kh_random(v->rc, sizeof v->rc)) != KH_OK)
		return r;
	v->session = SESSION_HELLO;
	kh_tlv_put(resp, KH_DIST_T_RC, v->rc, sizeof v->rc);
	kh_tlv_put(resp, KH_DIST_T_CERT_SIGN, m->p.sign_cert, m->p.sign_cert_len);
	return kh_tlv_put(resp, KH_DIST_T_CERT_PAIR, m->p.pair_cert, m->p.pair_cert_len);
}

/* The checks of DIST AUTH; on success *ci is the server's certificate and sh its hash. */
static kh_err check_server(struct kh_module *m, const struct kh_tlv *t, struct kh_cert_info *ci,
			   uint8_t sh[static KH_SHA256_LEN])
{
	struct kh_proc_vol *v = &m->vol.proc;
	uint8_t fp[KH_SHA256_LEN], ph[KH_SHA256_LEN], msg[KH_DIST_MSG_MAX];
	struct kh_wr w;
	kh_err r;

	if (t[KH_DIST_T_RS].len != KH_DIST_NONCE_LEN || t[KH_DIST_T_AUTH_SIG].len != KH_ED25519_SIG_LEN ||
	    t[KH_DIST_T_CERT_S].len > KH_CERT_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh_cert_check(t[KH_DIST_T_CERT_S].v, t[KH_DIST_T_CERT_S].len, m->p.root_pk, KH_ROLE_DISTRIBUTOR,
			       KH_CERT_KEY_ED25519, kh__module_now(m), ci)) != KH_OK)
		return r;
	if ((r = own_hashes(m, fp, ph)) != KH_OK ||
	    (r = kh_dist_cert_hash(t[KH_DIST_T_CERT_S].v, t[KH_DIST_T_CERT_S].len, sh)) != KH_OK)
		return r;
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_auth_msg(v->rc, t[KH_DIST_T_RS].v, fp, ph, &w)) != KH_OK)
		return r;
	if (kh_ed25519_verify(ci->pub, msg, w.len, t[KH_DIST_T_AUTH_SIG].v) != KH_OK)
		return KH_ERR_DIST_SIGNATURE;
	return KH_OK;
}

static kh_err h_auth(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_proc_vol *v = &m->vol.proc;
	struct kh_tlv t[KH_DIST_T_AUTH_SIG + 1];
	struct kh_cert_info ci;
	uint8_t sh[KH_SHA256_LEN], msg[KH_DIST_MSG_MAX], sig[KH_ED25519_SIG_LEN];
	struct kh_wr w;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	if (v->session != SESSION_HELLO)
		return KH_ERR_DIST_SESSION;
	memset(t, 0, sizeof t);
	/* any refusal ends the session: the next try starts from a new Rc */
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_DIST_T_AUTH_SIG,
		      BIT(KH_DIST_T_RS) | BIT(KH_DIST_T_CERT_S) | BIT(KH_DIST_T_AUTH_SIG))) != KH_OK ||
	    (r = check_server(m, t, &ci, sh)) != KH_OK) {
		session_end(m);
		return r;
	}
	memcpy(v->rs, t[KH_DIST_T_RS].v, sizeof v->rs);
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_resp_msg(v->rs, v->rc, sh, &w)) != KH_OK ||
	    (r = kh_ed25519_sign(m->p.sign_sk, msg, w.len, sig)) != KH_OK) {
		session_end(m);
		return r;
	}
	memcpy(v->server_pk, ci.pub, sizeof v->server_pk);
	v->server_serial = ci.ua;
	v->session = SESSION_AUTHED;
	return kh_tlv_put(resp, KH_DIST_T_RESP_SIG, sig, sizeof sig);
}

/* DIST KEY's fields into *l (pending), its signature checked against the session. */
static kh_err check_key(struct kh_module *m, const struct kh_tlv *t, struct licence *l)
{
	struct kh_proc_vol *v = &m->vol.proc;
	uint8_t fp[KH_SHA256_LEN], ph[KH_SHA256_LEN], msg[KH_DIST_MSG_MAX];
	struct kh_wr w;
	kh_err r;

	if ((r = kh_tlv_u32(&t[KH_DIST_T_PROGRAM], &l->prog.program)) != KH_OK ||
	    (r = kh_tlv_u32(&t[KH_DIST_T_VERSION], &l->prog.version)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[KH_DIST_T_MANIFEST_HASH], l->prog.manifest_hash, KH_SHA256_LEN)) != KH_OK ||
	    (r = kh_tlv_u32(&t[KH_DIST_T_CHUNKS], &l->prog.chunks)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[KH_DIST_T_HE], l->prog.he, KH_SHA256_LEN)) != KH_OK ||
	    (r = kh_tlv_fixed(&t[KH_DIST_T_WRAPPED], l->wrapped, KH_DIST_WRAP_LEN)) != KH_OK)
		return r;
	if (t[KH_DIST_T_KEY_SIG].len != KH_ED25519_SIG_LEN || !l->prog.chunks || l->prog.chunks > KH_DIST_CHUNKS_MAX)
		return KH_ERR_FORMAT;
	if ((r = own_hashes(m, fp, ph)) != KH_OK)
		return r;
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_key_msg(v->rc, v->rs, fp, &l->prog, l->wrapped, &w)) != KH_OK)
		return r;
	if (kh_ed25519_verify(v->server_pk, msg, w.len, t[KH_DIST_T_KEY_SIG].v) != KH_OK)
		return KH_ERR_DIST_SIGNATURE;
	l->state = LIC_PENDING;
	l->server_serial = v->server_serial;
	memcpy(l->server_pk, v->server_pk, sizeof l->server_pk);
	return KH_OK;
}

static kh_err h_key(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_DIST_T_KEY_SIG + 1];
	struct licence l;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	if (m->vol.proc.session != SESSION_AUTHED)
		return KH_ERR_DIST_SESSION;
	memset(t, 0, sizeof t);
	memset(&l, 0, sizeof l);
	/* one key per session, refused or not: a second delivery starts from a new hello */
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_DIST_T_KEY_SIG,
		      BIT(KH_DIST_T_PROGRAM) | BIT(KH_DIST_T_VERSION) | BIT(KH_DIST_T_MANIFEST_HASH) |
			      BIT(KH_DIST_T_CHUNKS) | BIT(KH_DIST_T_HE) | BIT(KH_DIST_T_WRAPPED) |
			      BIT(KH_DIST_T_KEY_SIG))) == KH_OK &&
	    (r = check_key(m, t, &l)) == KH_OK)
		r = licence_seal(m, &l, resp);
	session_end(m);
	kh_wipe(&l, sizeof l);
	return r;
}

static kh_err h_activate(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_tlv t[KH_DIST_T_RECEIPT + 1];
	uint8_t fp[KH_SHA256_LEN], ph[KH_SHA256_LEN], msg[KH_DIST_MSG_MAX];
	struct licence l;
	struct kh_wr w;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_DIST_T_RECEIPT,
		      BIT(KH_DIST_T_TOKEN) | BIT(KH_DIST_T_PROGRAM_SIG) | BIT(KH_DIST_T_RECEIPT))) != KH_OK)
		return r;
	if (t[KH_DIST_T_PROGRAM_SIG].len != KH_ED25519_SIG_LEN || t[KH_DIST_T_RECEIPT].len != KH_DIST_RECEIPT_LEN)
		return KH_ERR_FORMAT;
	if ((r = licence_open(m, &t[KH_DIST_T_TOKEN], &l)) != KH_OK)
		return r;
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = own_hashes(m, fp, ph)) == KH_OK &&
	    (r = kh_dist_program_msg(fp, &l.prog, t[KH_DIST_T_RECEIPT].v, &w)) == KH_OK) {
		if (kh_ed25519_verify(l.server_pk, msg, w.len, t[KH_DIST_T_PROGRAM_SIG].v) != KH_OK)
			r = KH_ERR_DIST_SIGNATURE;
		else if (l.state == LIC_ACTIVE && !kh_ct_eq(l.receipt, t[KH_DIST_T_RECEIPT].v, KH_DIST_RECEIPT_LEN))
			r = KH_ERR_LICENCE; /* active under another receipt: nothing to change */
	}
	if (r == KH_OK) {
		l.state = LIC_ACTIVE;
		memcpy(l.receipt, t[KH_DIST_T_RECEIPT].v, KH_DIST_RECEIPT_LEN);
		r = licence_seal(m, &l, resp);
	}
	kh_wipe(&l, sizeof l);
	return r;
}

/* ---- running (the runner's commands, never the host's) ---- */

static kh_err h_run_open(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_proc_vol *v = &m->vol.proc;
	struct kh_tlv t[KH_DIST_T_MANIFEST + 1];
	uint8_t mh[KH_SHA256_LEN];
	struct licence l;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	run_end(m);
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(a->data, a->lc, t, KH_DIST_T_MANIFEST, BIT(KH_DIST_T_RUN_TOKEN) | BIT(KH_DIST_T_MANIFEST))) !=
	    KH_OK)
		return r;
	if (!t[KH_DIST_T_MANIFEST].len || t[KH_DIST_T_MANIFEST].len > MANIFEST_MAX)
		return KH_ERR_FORMAT;
	if ((r = licence_open(m, &t[KH_DIST_T_RUN_TOKEN], &l)) != KH_OK)
		return r;
	if (l.state != LIC_ACTIVE)
		r = KH_ERR_LICENCE_PENDING;
	else if ((r = kh_sha256(t[KH_DIST_T_MANIFEST].v, t[KH_DIST_T_MANIFEST].len, mh)) == KH_OK &&
		 !kh_ct_eq(mh, l.prog.manifest_hash, sizeof mh))
		r = KH_ERR_MANIFEST;
	if (r == KH_OK && kh_dist_unwrap(m->p.pair_sk, &l.prog, l.wrapped, v->kx) != KH_OK)
		r = KH_ERR_LICENCE; /* S signed a wrap that does not open for us */
	if (r == KH_OK && (r = kh_dist_chain_init(&l.prog, v->chain)) == KH_OK) {
		v->prog = l.prog;
		v->next = 0;
		v->run = RUN_OPEN;
		r = kh_wr_u32(resp, l.prog.chunks);
	}
	if (r != KH_OK)
		run_end(m);
	kh_wipe(&l, sizeof l);
	return r;
}

/* u32 i | chunk i: its plaintext out. Any refusal ends the run. */
static kh_err h_run_chunk(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	struct kh_proc_vol *v = &m->vol.proc;
	const uint8_t *ct = a->data + 4;
	size_t ctlen = a->lc >= 4 ? a->lc - 4 : 0;
	uint8_t *pt;
	kh_err r;

	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	if (v->run != RUN_OPEN)
		return KH_ERR_DIST_SESSION;
	if (a->lc < 4 + 1 + KH_TAG_LEN || ctlen > KH_DIST_CHUNK_CT_MAX) {
		run_end(m);
		return KH_ERR_APDU_LEN;
	}
	if (kh_get_be32(a->data) != v->next) {
		run_end(m);
		return KH_ERR_CHUNK;
	}
	if ((r = kh_wr_reserve(resp, ctlen - KH_TAG_LEN, &pt)) != KH_OK ||
	    (r = kh_dist_chunk_open(v->kx, &v->prog, v->next, ct, ctlen, pt)) != KH_OK ||
	    (r = kh_dist_chain_step(v->chain, ct + ctlen - KH_TAG_LEN)) != KH_OK)
		goto fail;
	if (++v->next == v->prog.chunks) {
		/* the last: the chunks are the ones the server signed, or nothing of the last goes out */
		r = kh_ct_eq(v->chain, v->prog.he, sizeof v->chain) ? KH_OK : KH_ERR_CHUNK;
		run_end(m);
		if (r != KH_OK)
			goto fail;
	}
	return KH_OK;
fail:
	kh_wipe(resp->p, resp->len);
	resp->len = 0;
	run_end(m);
	return r;
}

static kh_err h_run_close(struct kh_module *m, const struct kh_apdu *a, struct kh_wr *resp)
{
	kh_err r;

	(void)resp;
	if ((r = need_processor(m, a)) != KH_OK)
		return r;
	if (a->lc)
		return KH_ERR_APDU_LEN;
	run_end(m);
	return KH_OK;
}

#define PROC KH_ROLE_BIT(KH_ROLE_PROCESSOR)

/* None touches the sealed state: no transaction snapshot. */
static const struct kh_applet_ins proc_ins[] = {
	{KH_INS_DIST_HELLO, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_hello},
	{KH_INS_DIST_AUTH, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_auth},
	{KH_INS_DIST_KEY, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_key},
	{KH_INS_DIST_ACTIVATE, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_activate},
	{KH_INS_RUN_OPEN, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_run_open},
	{KH_INS_RUN_CHUNK, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_run_chunk},
	{KH_INS_RUN_CLOSE, KH_INSF_PLAIN | KH_INSF_NOTX, PROC, h_run_close},
};

const struct kh_applet kh__applet_proc = {"proc", KH_APPLET_INS(proc_ins), NULL, proc_forget};
