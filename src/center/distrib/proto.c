/*
 * The distribution server's side of the second path (include/keyhole/distsrv.h). Every message
 * from the processor arrives through the client host, which may have made it up: the hello's
 * certificates must chain to the root as a processor's, and the answer must be signed by the key
 * of the certificate the hello named, so a public key substituted by the host (the seed's ¶45)
 * fails here before anything is encrypted to it.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/distsrv.h"

kh_err kh_dist_server_init(struct kh_dist_server *s, const uint8_t sk[static KH_ED25519_SK_LEN], const uint8_t *cert,
			   size_t cert_len, const uint8_t root_pk[static 32])
{
	struct kh_cert_info ci;
	kh_err r;

	memset(s, 0, sizeof *s);
	if (!cert || !cert_len || cert_len > sizeof s->cert)
		return KH_ERR_INVAL;
	if ((r = kh_cert_check(cert, cert_len, root_pk, KH_ROLE_DISTRIBUTOR, KH_CERT_KEY_ED25519, 0, &ci)) != KH_OK)
		return r;
	memcpy(s->sk, sk, sizeof s->sk);
	if ((r = kh_ed25519_public(s->sk, s->pk)) != KH_OK || !kh_ct_eq(s->pk, ci.pub, sizeof s->pk)) {
		kh_wipe(s, sizeof *s);
		return r != KH_OK ? r : KH_ERR_CERT_KEY;
	}
	memcpy(s->cert, cert, cert_len);
	s->cert_len = cert_len;
	s->serial = ci.ua;
	memcpy(s->root_pk, root_pk, sizeof s->root_pk);
	return kh_dist_cert_hash(cert, cert_len, s->cert_hash);
}

/* Every tag of 1..max, once. */
#define ALL(max) ((1u << ((max) + 1)) - 2u)

kh_err kh_dist_srv_hello(const struct kh_dist_server *s, const uint8_t *msg, size_t n, uint64_t now,
			 struct kh_dist_peer *p)
{
	struct kh_tlv t[KH_DIST_T_CERT_PAIR + 1];
	struct kh_cert_info si, pi;
	kh_err r;

	memset(p, 0, sizeof *p);
	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(msg, n, t, KH_DIST_T_CERT_PAIR, ALL(KH_DIST_T_CERT_PAIR))) != KH_OK)
		return r;
	if (t[KH_DIST_T_RC].len != KH_DIST_NONCE_LEN || t[KH_DIST_T_CERT_SIGN].len > KH_CERT_MAX ||
	    t[KH_DIST_T_CERT_PAIR].len > KH_CERT_MAX)
		return KH_ERR_FORMAT;
	if ((r = kh_cert_check(t[KH_DIST_T_CERT_SIGN].v, t[KH_DIST_T_CERT_SIGN].len, s->root_pk, KH_ROLE_PROCESSOR,
			       KH_CERT_KEY_ED25519, now, &si)) != KH_OK ||
	    (r = kh_cert_check(t[KH_DIST_T_CERT_PAIR].v, t[KH_DIST_T_CERT_PAIR].len, s->root_pk, KH_ROLE_PROCESSOR,
			       KH_CERT_KEY_X25519, now, &pi)) != KH_OK)
		return r;
	if (si.ua != pi.ua)
		return KH_ERR_CERT_KEY; /* two processors' certificates: whose key would we encrypt to? */
	if ((r = kh_dist_cert_hash(t[KH_DIST_T_CERT_SIGN].v, t[KH_DIST_T_CERT_SIGN].len, p->fp)) != KH_OK ||
	    (r = kh_dist_cert_hash(t[KH_DIST_T_CERT_PAIR].v, t[KH_DIST_T_CERT_PAIR].len, p->pair_hash)) != KH_OK)
		return r;
	memcpy(p->rc, t[KH_DIST_T_RC].v, sizeof p->rc);
	memcpy(p->sign_pk, si.pub, sizeof p->sign_pk);
	memcpy(p->pair_pk, pi.pub, sizeof p->pair_pk);
	p->ua = si.ua;
	return KH_OK;
}

kh_err kh_dist_srv_auth(const struct kh_dist_server *s, struct kh_dist_peer *p, struct kh_wr *out)
{
	uint8_t msg[KH_DIST_MSG_MAX], sig[KH_ED25519_SIG_LEN];
	struct kh_wr w;
	kh_err r;

	if ((r = kh_random(p->rs, sizeof p->rs)) != KH_OK)
		return r;
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_auth_msg(p->rc, p->rs, p->fp, p->pair_hash, &w)) != KH_OK ||
	    (r = kh_ed25519_sign(s->sk, msg, w.len, sig)) != KH_OK)
		return r;
	kh_tlv_put(out, KH_DIST_T_RS, p->rs, sizeof p->rs);
	kh_tlv_put(out, KH_DIST_T_CERT_S, s->cert, s->cert_len);
	return kh_tlv_put(out, KH_DIST_T_AUTH_SIG, sig, sizeof sig);
}

kh_err kh_dist_srv_resp(const struct kh_dist_server *s, const struct kh_dist_peer *p, const uint8_t *msg, size_t n)
{
	struct kh_tlv t[KH_DIST_T_RESP_SIG + 1];
	uint8_t m[KH_DIST_MSG_MAX];
	struct kh_wr w;
	kh_err r;

	memset(t, 0, sizeof t);
	if ((r = kh_tlv_take(msg, n, t, KH_DIST_T_RESP_SIG, ALL(KH_DIST_T_RESP_SIG))) != KH_OK)
		return r;
	if (t[KH_DIST_T_RESP_SIG].len != KH_ED25519_SIG_LEN)
		return KH_ERR_FORMAT;
	kh_wr_init(&w, m, sizeof m);
	if ((r = kh_dist_resp_msg(p->rs, p->rc, s->cert_hash, &w)) != KH_OK)
		return r;
	return kh_ed25519_verify(p->sign_pk, m, w.len, t[KH_DIST_T_RESP_SIG].v) == KH_OK ? KH_OK : KH_ERR_DIST_SIGNATURE;
}

kh_err kh_dist_srv_key(const struct kh_dist_server *s, const struct kh_dist_peer *p, const struct kh_dist_prog *prog,
		       const uint8_t kx[static KH_KEY_LEN], struct kh_wr *out)
{
	uint8_t wrapped[KH_DIST_WRAP_LEN], msg[KH_DIST_MSG_MAX], sig[KH_ED25519_SIG_LEN];
	struct kh_wr w;
	kh_err r;

	if ((r = kh_dist_wrap(p->pair_pk, prog, kx, wrapped)) != KH_OK)
		return r;
	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_key_msg(p->rc, p->rs, p->fp, prog, wrapped, &w)) != KH_OK ||
	    (r = kh_ed25519_sign(s->sk, msg, w.len, sig)) != KH_OK)
		return r;
	kh_tlv_put_u32(out, KH_DIST_T_PROGRAM, prog->program);
	kh_tlv_put_u32(out, KH_DIST_T_VERSION, prog->version);
	kh_tlv_put(out, KH_DIST_T_MANIFEST_HASH, prog->manifest_hash, KH_SHA256_LEN);
	kh_tlv_put_u32(out, KH_DIST_T_CHUNKS, prog->chunks);
	kh_tlv_put(out, KH_DIST_T_HE, prog->he, KH_SHA256_LEN);
	kh_tlv_put(out, KH_DIST_T_WRAPPED, wrapped, sizeof wrapped);
	return kh_tlv_put(out, KH_DIST_T_KEY_SIG, sig, sizeof sig);
}

kh_err kh_dist_srv_program_sig(const struct kh_dist_server *s, const uint8_t fp[static KH_SHA256_LEN],
			       const struct kh_dist_prog *prog, const uint8_t receipt[static KH_DIST_RECEIPT_LEN],
			       uint8_t sig[static KH_ED25519_SIG_LEN])
{
	uint8_t msg[KH_DIST_MSG_MAX];
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, msg, sizeof msg);
	if ((r = kh_dist_program_msg(fp, prog, receipt, &w)) != KH_OK)
		return r;
	return kh_ed25519_sign(s->sk, msg, w.len, sig);
}

kh_err kh_dist_srv_package(const uint8_t kx[static KH_KEY_LEN], struct kh_dist_prog *prog, const uint8_t *manifest,
			   size_t manifest_len, const uint8_t *pt, size_t len, kh_dist_put_fn put, void *ctx)
{
	static const size_t hdr_max = KH_DIST_PKG_HDR_MAX;
	struct kh_dist_manifest man;
	uint8_t hdr[KH_DIST_PKG_HDR_MAX], ct[KH_DIST_CHUNK_CT_MAX], h[KH_SHA256_LEN];
	size_t line;
	struct kh_wr w;
	kh_err r;

	if (!len || (len - 1) / KH_DIST_CHUNK_MAX + 1 > KH_DIST_CHUNKS_MAX)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_dist_manifest_parse(manifest, manifest_len, &man, &line)) != KH_OK)
		return r;
	prog->chunks = (uint32_t)((len - 1) / KH_DIST_CHUNK_MAX + 1);
	if ((r = kh_sha256(manifest, manifest_len, prog->manifest_hash)) != KH_OK ||
	    (r = kh_dist_chain_init(prog, h)) != KH_OK)
		return r;
	kh_wr_init(&w, hdr, hdr_max);
	if ((r = kh_dist_pkg_head(&w, prog->program, prog->version, manifest, manifest_len, prog->chunks)) != KH_OK ||
	    (r = put(ctx, hdr, w.len)) != KH_OK)
		return r;
	for (uint32_t i = 0; i < prog->chunks; i++) {
		size_t off = (size_t)i * KH_DIST_CHUNK_MAX, k = len - off < KH_DIST_CHUNK_MAX ? len - off : KH_DIST_CHUNK_MAX;

		if ((r = kh_dist_chunk_seal(kx, prog, i, pt + off, k, ct)) != KH_OK ||
		    (r = kh_dist_chain_step(h, ct + k)) != KH_OK || (r = put(ctx, ct, k + KH_TAG_LEN)) != KH_OK)
			return r;
	}
	memcpy(prog->he, h, sizeof h);
	return KH_OK;
}

/* ---- the server's identity: a center identity with role distributor (keyhole/identity.h) ---- */

kh_err kh_dist_identity_new(struct kh_authority *a, const char *dir, uint32_t *serial)
{
	return kh_identity_new(a, dir, KH_ROLE_DISTRIBUTOR, serial);
}

kh_err kh_dist_identity_load(const char *dir, struct kh_dist_server *s)
{
	struct kh_identity id;
	kh_err r = kh_identity_load(dir, KH_ROLE_DISTRIBUTOR, &id);

	if (r == KH_OK)
		r = kh_dist_server_init(s, id.sk, id.cert, id.cert_len, id.root_pk);
	kh_wipe(&id, sizeof id);
	return r;
}
