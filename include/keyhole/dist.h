/*
 * Program distribution to a tamper-resistant processor (docs/protocols/distribution.md): the
 * byte strings the distribution server and the processor sign, the binding of a delivery, the
 * package's chunk encryption and its tag chain. Shared by the processor applet, the server and
 * the processor runner, so that each message is written in one place.
 */
#ifndef KH_DIST_H
#define KH_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/err.h"
#include "keyhole/hpke.h"

#define KH_DIST_NONCE_LEN 32   /* Rc and Rs */
#define KH_DIST_RECEIPT_LEN 16 /* a receipt id */
/* A wrapped program key: HPKE enc, then Kx (32) sealed with its tag. */
#define KH_DIST_WRAP_LEN (KH_HPKE_ENC_LEN + KH_KEY_LEN + KH_TAG_LEN)
/* Plaintext bytes of every chunk but the last (which holds 1 to this many). */
#define KH_DIST_CHUNK_MAX 3968u
#define KH_DIST_CHUNK_CT_MAX (KH_DIST_CHUNK_MAX + KH_TAG_LEN)
/* The most chunks a package has (a program of up to about 4 GiB). */
#define KH_DIST_CHUNKS_MAX 1000000u
/* The longest signed message (kh_dist_key_msg). */
#define KH_DIST_MSG_MAX 320

/* Second-path TLV tags (each message's own list). */
enum {
	KH_DIST_T_RC = 1, /* hello */
	KH_DIST_T_CERT_SIGN = 2,
	KH_DIST_T_CERT_PAIR = 3,
};
enum {
	KH_DIST_T_RS = 1, /* auth */
	KH_DIST_T_CERT_S = 2,
	KH_DIST_T_AUTH_SIG = 3,
};
enum {
	KH_DIST_T_RESP_SIG = 1, /* the processor's answer to auth */
};
enum {
	KH_DIST_T_PROGRAM = 1, /* key */
	KH_DIST_T_VERSION = 2,
	KH_DIST_T_MANIFEST_HASH = 3,
	KH_DIST_T_CHUNKS = 4,
	KH_DIST_T_HE = 5,
	KH_DIST_T_WRAPPED = 6,
	KH_DIST_T_KEY_SIG = 7,
};
enum {
	KH_DIST_T_TOKEN = 1, /* activate */
	KH_DIST_T_PROGRAM_SIG = 2,
	KH_DIST_T_RECEIPT = 3,
};
enum {
	KH_DIST_T_RUN_TOKEN = 1, /* run open */
	KH_DIST_T_MANIFEST = 2,
};

/* What one delivery binds: the program, its version, its manifest and its encrypted chunks. */
struct kh_dist_prog {
	uint32_t program, version;
	uint32_t chunks; /* n, 1 to KH_DIST_CHUNKS_MAX */
	uint8_t manifest_hash[KH_SHA256_LEN];
	uint8_t he[KH_SHA256_LEN]; /* H_E, the chain of the chunks' tags */
};

/* SHA-256 of a certificate (fp(P) for a processor's signing certificate). */
KH_WARN_UNUSED kh_err kh_dist_cert_hash(const uint8_t *der, size_t len, uint8_t out[static KH_SHA256_LEN]);

/*
 * The signed messages, written into w (KH_DIST_MSG_MAX bytes are always enough):
 *   auth     "keyhole dist v1 auth" | Rc | Rs | fp(P) | SHA-256(cert_pair(P))      (server)
 *   resp     "keyhole dist v1 resp" | Rs | Rc | SHA-256(cert(S))                    (processor)
 *   key      "keyhole dist v1 key" | Rc | Rs | fp(P) | binding | wrapped             (server)
 *   program  "keyhole dist v1 program" | fp(P) | binding | receipt id                (server)
 * where binding = u32 program | u32 version | H(manifest) | u32 n | H_E.
 */
KH_WARN_UNUSED kh_err kh_dist_auth_msg(const uint8_t rc[static KH_DIST_NONCE_LEN], const uint8_t rs[static KH_DIST_NONCE_LEN],
				       const uint8_t fp[static KH_SHA256_LEN], const uint8_t pair_hash[static KH_SHA256_LEN],
				       struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_dist_resp_msg(const uint8_t rs[static KH_DIST_NONCE_LEN], const uint8_t rc[static KH_DIST_NONCE_LEN],
				       const uint8_t server_hash[static KH_SHA256_LEN], struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_dist_key_msg(const uint8_t rc[static KH_DIST_NONCE_LEN], const uint8_t rs[static KH_DIST_NONCE_LEN],
				      const uint8_t fp[static KH_SHA256_LEN], const struct kh_dist_prog *p,
				      const uint8_t wrapped[static KH_DIST_WRAP_LEN], struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_dist_program_msg(const uint8_t fp[static KH_SHA256_LEN], const struct kh_dist_prog *p,
					  const uint8_t receipt[static KH_DIST_RECEIPT_LEN], struct kh_wr *w);

/* Wrap Kx to a processor's pairing key, bound to the delivery (server), and unwrap it (processor). */
KH_WARN_UNUSED kh_err kh_dist_wrap(const uint8_t pair_pk[static KH_X25519_LEN], const struct kh_dist_prog *p,
				   const uint8_t kx[static KH_KEY_LEN], uint8_t wrapped[static KH_DIST_WRAP_LEN]);
KH_WARN_UNUSED kh_err kh_dist_unwrap(const uint8_t pair_sk[static KH_X25519_LEN], const struct kh_dist_prog *p,
				     const uint8_t wrapped[static KH_DIST_WRAP_LEN], uint8_t kx[static KH_KEY_LEN]);

/*
 * The tag chain: h_0 = SHA-256("keyhole dist v1 chunks" | u32 program | u32 version | H(manifest) |
 * u32 n), h_i+1 = SHA-256(h_i | tag of chunk i); H_E = h_n. p->he is not read.
 */
KH_WARN_UNUSED kh_err kh_dist_chain_init(const struct kh_dist_prog *p, uint8_t h[static KH_SHA256_LEN]);
KH_WARN_UNUSED kh_err kh_dist_chain_step(uint8_t h[static KH_SHA256_LEN], const uint8_t tag[static KH_TAG_LEN]);

/*
 * Chunk i of n (p->chunks) under Kx: ptlen plaintext bytes (exactly KH_DIST_CHUNK_MAX unless it is
 * the last, then 1 to that) into ptlen + KH_TAG_LEN bytes of ct, and back. Open refuses a chunk
 * whose length is wrong for its place (KH_ERR_FORMAT) or whose tag fails (KH_ERR_AUTH, pt wiped).
 */
KH_WARN_UNUSED kh_err kh_dist_chunk_seal(const uint8_t kx[static KH_KEY_LEN], const struct kh_dist_prog *p, uint32_t i,
					 const uint8_t *pt, size_t ptlen, uint8_t *ct);
KH_WARN_UNUSED kh_err kh_dist_chunk_open(const uint8_t kx[static KH_KEY_LEN], const struct kh_dist_prog *p, uint32_t i,
					 const uint8_t *ct, size_t ctlen, uint8_t *pt);

#endif
