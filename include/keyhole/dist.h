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

/* ---- the package: "KHPK" | u8 1 | u32 program | u32 version | u32 manifest length | manifest |
 * u32 n | chunk 0 .. chunk n-1 (every chunk but the last KH_DIST_CHUNK_CT_MAX bytes) ---- */

#define KH_DIST_PKG_VERSION 1
#define KH_DIST_MANIFEST_MAX 3072u /* bytes: what RUN OPEN carries beside the token */
/* The bytes before the manifest, and after it before the first chunk. */
#define KH_DIST_PKG_HEAD_LEN (4 + 1 + 4 + 4 + 4)
#define KH_DIST_PKG_HDR_MAX (KH_DIST_PKG_HEAD_LEN + KH_DIST_MANIFEST_MAX + 4)

struct kh_dist_pkg {
	uint32_t program, version;
	uint32_t chunks;
	const uint8_t *manifest; /* into the bytes parsed */
	size_t manifest_len;
	size_t hdr_len;    /* where chunk 0 starts */
	uint64_t last_len; /* bytes of the last chunk, its tag included */
};

/* The header of a package of n chunks (the chunks follow it). */
KH_WARN_UNUSED kh_err kh_dist_pkg_head(struct kh_wr *w, uint32_t program, uint32_t version, const uint8_t *manifest,
				       size_t manifest_len, uint32_t n);
/*
 * Read a package's header from its first bytes (b, len: at least the header, at most all of it)
 * and check that a file of file_size bytes holds exactly its chunks: KH_ERR_TRUNCATED when len is
 * short of the header, KH_ERR_FORMAT / KH_ERR_VERSION / KH_ERR_TOO_LARGE for a bad header, and
 * KH_ERR_FORMAT when the size does not fit the chunk count (cut, or something appended).
 */
KH_WARN_UNUSED kh_err kh_dist_pkg_parse(const uint8_t *b, size_t len, uint64_t file_size, struct kh_dist_pkg *p);
/* Where chunk i starts in the file and how long it is (i < p->chunks). */
uint64_t kh_dist_pkg_chunk_off(const struct kh_dist_pkg *p, uint32_t i);
size_t kh_dist_pkg_chunk_len(const struct kh_dist_pkg *p, uint32_t i);

/* ---- the receipt: what the server signs when it charges (or releases) a delivery ----
 *
 *   "KHRC" | u8 1 | receipt id (16) | u64 account | u32 program | u32 version | fp(P) (32) |
 *   u32 price | u64 time | u32 server serial | Sig_S("keyhole dist v1 receipt" | every byte before)
 *
 * Fixed length. The server keeps every receipt it signed; a receipt presented again is checked
 * against its own signature and against its record (kh_store_dist_receipt_read). */

#define KH_DIST_RECEIPT_VERSION 1
#define KH_DIST_RECEIPT_BODY_LEN (4 + 1 + KH_DIST_RECEIPT_LEN + 8 + 4 + 4 + KH_SHA256_LEN + 4 + 8 + 4)
#define KH_DIST_RECEIPT_BYTES (KH_DIST_RECEIPT_BODY_LEN + KH_ED25519_SIG_LEN)

struct kh_dist_receipt {
	uint8_t id[KH_DIST_RECEIPT_LEN];
	uint64_t account;
	uint32_t program, version;
	uint8_t fp[KH_SHA256_LEN];
	uint32_t price;
	uint64_t time;
	uint32_t server; /* the signing server's certificate serial */
};

/* The signed receipt into out (KH_DIST_RECEIPT_BYTES), signed with the server's key sk. */
KH_WARN_UNUSED kh_err kh_dist_receipt_sign(const struct kh_dist_receipt *r, const uint8_t sk[static KH_ED25519_SK_LEN],
					   uint8_t out[static KH_DIST_RECEIPT_BYTES]);
/*
 * Read a receipt of n bytes into *r: KH_ERR_FORMAT for a wrong length or magic, KH_ERR_VERSION
 * for another version. With pk (not NULL) the signature is checked too: KH_ERR_DIST_SIGNATURE
 * when it does not verify. *r is written only on success.
 */
KH_WARN_UNUSED kh_err kh_dist_receipt_parse(const uint8_t *b, size_t n, const uint8_t *pk, struct kh_dist_receipt *r);

/* ---- the manifest: the package's clear description, "key: value" lines ----
 *
 *   name: hello            1 to 64 of [A-Za-z0-9._+-]
 *   version: 3             1 to 32 of the same
 *   kind: elf              elf (an executable of this machine) or script (run by its interpreter)
 *   interpreter: /bin/sh   an absolute path, for a script only (required then)
 *   entry: main            the program's name as it runs (argv[0]); the name when absent
 *   requires: libc.so.6    repeated, up to 16: what the program imports (the clear import table)
 *
 * Each line ends in "
"; no other key, no key twice, nothing but printable ASCII. */

#define KH_DIST_NAME_MAX 64
#define KH_DIST_PATH_MAX 256
#define KH_DIST_REQUIRES_MAX 16

enum kh_dist_kind { KH_DIST_ELF = 1, KH_DIST_SCRIPT = 2 };

struct kh_dist_manifest {
	char name[KH_DIST_NAME_MAX + 1];
	char version[KH_DIST_NAME_MAX + 1];
	enum kh_dist_kind kind;
	char interpreter[KH_DIST_PATH_MAX + 1];
	char entry[KH_DIST_NAME_MAX + 1];
	unsigned nrequires;
	char requires[KH_DIST_REQUIRES_MAX][KH_DIST_NAME_MAX + 1];
};

/* KH_ERR_FORMAT (with the line number in *line, from 1) for anything but a manifest as above. */
KH_WARN_UNUSED kh_err kh_dist_manifest_parse(const uint8_t *b, size_t len, struct kh_dist_manifest *m, size_t *line);

#endif
