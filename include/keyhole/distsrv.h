/*
 * The distribution server's side of the second path (center zone, src/center/distrib/proto.c;
 * docs/protocols/distribution.md): check a processor's hello and its answer, prove the server to
 * it, make the package of one delivery and the messages that bind its key, sign the program
 * signature that activates a licence. Pure functions of their inputs and the server's key: the
 * HTTP service around them keeps the sessions, the accounts and the money.
 */
#ifndef KEYHOLE_DISTSRV_H
#define KEYHOLE_DISTSRV_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/cert.h"
#include "keyhole/dist.h"
#include "keyhole/identity.h"

/* The server's identity: its Ed25519 key, certified by the root with role `distributor`. */
struct kh_dist_server {
	uint8_t sk[KH_ED25519_SK_LEN], pk[KH_ED25519_PK_LEN];
	uint8_t cert[KH_CERT_MAX];
	size_t cert_len;
	uint8_t cert_hash[KH_SHA256_LEN];
	uint32_t serial;
	uint8_t root_pk[32];
};

/* One processor's session as the server keeps it between the relayed messages (nothing secret). */
struct kh_dist_peer {
	uint8_t rc[KH_DIST_NONCE_LEN], rs[KH_DIST_NONCE_LEN];
	uint8_t fp[KH_SHA256_LEN], pair_hash[KH_SHA256_LEN];
	uint8_t sign_pk[KH_ED25519_PK_LEN], pair_pk[KH_X25519_LEN];
	uint32_t ua;
};

/*
 * Check the server's own certificate and key belong together and to root_pk, and fill s (sk, cert
 * and root given; the rest derived). KH_ERR_CERT_KEY when the key is not the certified one.
 */
KH_WARN_UNUSED kh_err kh_dist_server_init(struct kh_dist_server *s, const uint8_t sk[static KH_ED25519_SK_LEN],
					  const uint8_t *cert, size_t cert_len, const uint8_t root_pk[static 32]);

/*
 * A processor's hello {Rc, cert_sign, cert_pair}: both certificates from the root, role processor,
 * the same UA, an Ed25519 and an X25519 key, valid at now (0: not checked). Fills p.
 */
KH_WARN_UNUSED kh_err kh_dist_srv_hello(const struct kh_dist_server *s, const uint8_t *msg, size_t n, uint64_t now,
					struct kh_dist_peer *p);
/* The data of DIST AUTH for p, with a fresh Rs. */
KH_WARN_UNUSED kh_err kh_dist_srv_auth(const struct kh_dist_server *s, struct kh_dist_peer *p, struct kh_wr *out);
/* The processor's answer to it: KH_ERR_DIST_SIGNATURE unless signed by p's certified key over Rs, Rc and our certificate. */
KH_WARN_UNUSED kh_err kh_dist_srv_resp(const struct kh_dist_server *s, const struct kh_dist_peer *p, const uint8_t *msg,
				       size_t n);
/* The data of DIST KEY: kx wrapped to p's pairing key and bound to prog, Rc and Rs. */
KH_WARN_UNUSED kh_err kh_dist_srv_key(const struct kh_dist_server *s, const struct kh_dist_peer *p,
				      const struct kh_dist_prog *prog, const uint8_t kx[static KH_KEY_LEN], struct kh_wr *out);
/* The program signature that activates a licence of processor fp for this receipt. */
KH_WARN_UNUSED kh_err kh_dist_srv_program_sig(const struct kh_dist_server *s, const uint8_t fp[static KH_SHA256_LEN],
					      const struct kh_dist_prog *prog,
					      const uint8_t receipt[static KH_DIST_RECEIPT_LEN],
					      uint8_t sig[static KH_ED25519_SIG_LEN]);

/*
 * The package of one delivery: the program (len bytes) under kx, written through put (header,
 * then chunk after chunk); prog->program and version given, its chunks, manifest hash and H_E
 * filled. The manifest must parse (kh_dist_manifest_parse).
 */
typedef kh_err (*kh_dist_put_fn)(void *ctx, const uint8_t *b, size_t n);
KH_WARN_UNUSED kh_err kh_dist_srv_package(const uint8_t kx[static KH_KEY_LEN], struct kh_dist_prog *prog,
					  const uint8_t *manifest, size_t manifest_len, const uint8_t *pt, size_t len,
					  kh_dist_put_fn put, void *ctx);

/*
 * The server's identity in its own directory: distributor.key (its signing key, mode 0600),
 * distributor.crt (its certificate, PEM) and root.crt (the authority's root, PEM). _new makes
 * the key and has the authority a certify it as a distributor, with a serial of its own from
 * KH_DIST_SERIAL_BASE (dir is created, mode 0700, if missing; KH_ERR_EXISTS when it holds a key
 * already). _load reads them back and checks they belong together (kh_dist_server_init).
 */
#define KH_DIST_SERIAL_BASE KH_CENTER_SERIAL_BASE
struct kh_authority;
KH_WARN_UNUSED kh_err kh_dist_identity_new(struct kh_authority *a, const char *dir, uint32_t *serial);
KH_WARN_UNUSED kh_err kh_dist_identity_load(const char *dir, struct kh_dist_server *s);

#endif
