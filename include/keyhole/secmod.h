/*
 * The escrow's signing process (seed 003) and its client. The escrow keeps one RSA key per
 * listing; the buyer's device sends c' = c * r^e mod n and the escrow answers z = c'^d mod n.
 * The private keys live only in the signing process (`keyhole escrow secmod`), which answers on
 * a UNIX socket: the HTTP front end never holds them, and reaches the process through the
 * client below. docs/internals/escrow-secmod.md describes the files, the frames and the modes.
 *
 * A frame, both ways, is a 4-byte header and a body of at most KH_SECMOD_BODY_MAX bytes, all
 * integers big-endian:
 *   request:  u8 op, u8 version (1), u16 length, body
 *   response: u16 status word (0x9000, or the word of a kh_err), u16 length, body
 * Bodies: KEYGEN u16 bits (2048, 3072 or 4096) -> key id (16) | public key (DER
 * SubjectPublicKeyInfo); PUBKEY key id -> public key; DECRYPT key id | c' (exactly the modulus
 * length, big-endian) -> z (the same length). A refusal has an empty body.
 */
#ifndef KEYHOLE_SECMOD_H
#define KEYHOLE_SECMOD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_SECMOD_VERSION 1
#define KH_SECMOD_ID_LEN 16
#define KH_SECMOD_HDR_LEN 4
#define KH_SECMOD_BODY_MAX 1024 /* a 4096-bit key's DER public key (550 bytes) fits twice */
#define KH_SECMOD_FRAME_MAX (KH_SECMOD_HDR_LEN + KH_SECMOD_BODY_MAX)
#define KH_SECMOD_MOD_MAX 512     /* bytes of the largest modulus (4096 bits) */
#define KH_SECMOD_BITS_DEFAULT 2048
#define KH_SECMOD_THREADS_DEFAULT 64 /* connections served at once by default */
#define KH_SECMOD_THREADS_MAX 1024

enum kh_secmod_op { KH_SECMOD_KEYGEN = 1, KH_SECMOD_PUBKEY = 2, KH_SECMOD_DECRYPT = 3 };

/* A request as the strict parser reads it; pointers lie inside the parsed frame. */
struct kh_secmod_req {
	uint8_t op;
	unsigned bits;     /* KEYGEN */
	const uint8_t *id; /* PUBKEY, DECRYPT: KH_SECMOD_ID_LEN bytes */
	const uint8_t *c;  /* DECRYPT: clen bytes (256, 384 or 512) */
	size_t clen;
};

/* 1 for a key size the process makes and loads (2048, 3072, 4096), else 0. */
int kh_secmod_bits_ok(unsigned bits);
/*
 * Read one request frame of exactly n bytes. KH_ERR_TRUNCATED for fewer bytes than the header
 * or its length says, KH_ERR_TRAILING for more, KH_ERR_VERSION for another version,
 * KH_ERR_TOO_LARGE for a length past KH_SECMOD_BODY_MAX, KH_ERR_APDU_INS for an unknown op,
 * KH_ERR_FORMAT for a body of the wrong size or an unsupported key size. *req is written only
 * on success.
 */
KH_WARN_UNUSED kh_err kh_secmod_req_parse(const uint8_t *frame, size_t n, struct kh_secmod_req *req);
/*
 * Write a request frame for req into out (cap bytes); *n its length. KH_ERR_INVAL for a request
 * the parser would refuse, KH_ERR_BUF when cap is too small.
 */
KH_WARN_UNUSED kh_err kh_secmod_req_build(const struct kh_secmod_req *req, uint8_t *out, size_t cap, size_t *n);
/*
 * Read one response frame of exactly n bytes: KH_OK with *body, *blen for status 0x9000, the
 * code of another status word (kh_err_from_sw) otherwise; KH_ERR_TRUNCATED, KH_ERR_TRAILING,
 * KH_ERR_TOO_LARGE for broken framing, KH_ERR_FORMAT for a refusal that carries a body.
 */
KH_WARN_UNUSED kh_err kh_secmod_resp_parse(const uint8_t *frame, size_t n, const uint8_t **body, size_t *blen);

/* ---- the signing process ---- */

struct kh_secmod;
/*
 * Open the key directory (created with mode 0700 when it does not exist; refused with
 * KH_ERR_KEYFILE_PERM when group or others can reach it or another user owns it) and load every
 * `<32 hex digits>.key` in it (PKCS#8, DER or PEM; an RSA key of 2048, 3072 or 4096 bits with
 * e = 65537). A key file that group or others can read, or another user owns, is
 * KH_ERR_KEYFILE_PERM; one that does not parse KH_ERR_FORMAT; *bad (NULL: not wanted, else
 * PATH_MAX bytes) then names the file. Other names in the directory are ignored.
 */
KH_WARN_UNUSED kh_err kh_secmod_open(const char *keydir, struct kh_secmod **out, char *bad, size_t badcap);
/* Free the process's state, private keys included; NULL does nothing. */
void kh_secmod_free(struct kh_secmod *s);
/* Number of keys held. */
size_t kh_secmod_count(struct kh_secmod *s);
/*
 * Answer one request frame (req, n bytes) into resp (cap >= KH_SECMOD_FRAME_MAX): the answer's
 * length. Never fails: a refusal is a response with the code's status word. A KEYGEN's key file
 * is written (and its directory synced) before the answer is made. Thread-safe.
 */
size_t kh_secmod_handle(struct kh_secmod *s, const uint8_t *req, size_t n, uint8_t *resp, size_t cap);
/*
 * Serve s on the UNIX socket path (mode 0600; only peers of this process's uid, SO_PEERCRED) with
 * a thread per connection, at most threads at once, until *stop is set; every thread is joined
 * before it returns and the socket file is removed. KH_ERR_EXISTS when a process answers at path
 * already or something other than a socket is there (a stale socket is replaced), KH_ERR_INVAL
 * for a bad path or thread count, KH_ERR_IO when the socket cannot be made. When ready is not
 * NULL, it is set to 1 once the socket listens.
 */
KH_WARN_UNUSED kh_err kh_secmod_serve(struct kh_secmod *s, const char *path, unsigned threads,
				      volatile sig_atomic_t *stop, volatile sig_atomic_t *ready);

/* ---- the client (the HTTP front end's side) ---- */

struct kh_secmod_client;
/*
 * A client of the process at path: nothing is connected yet. Thread-safe: each call takes a
 * connection from a small pool (opening one when none is idle, at most KH_SECMOD_POOL_MAX) and
 * puts it back. A pooled connection the process closed (it restarted) is replaced before use;
 * a PUBKEY or DECRYPT that fails on the way is sent once more on a fresh connection (both are
 * idempotent). KH_ERR_SECMOD when the process cannot be reached or breaks the frame.
 */
#define KH_SECMOD_POOL_MAX 64
KH_WARN_UNUSED kh_err kh_secmod_client_open(const char *path, struct kh_secmod_client **out);
/* Close every pooled connection and free c; no call may be under way. NULL does nothing. */
void kh_secmod_client_close(struct kh_secmod_client *c);
/*
 * A new key of bits bits: id (KH_SECMOD_ID_LEN bytes) and its public key, DER
 * SubjectPublicKeyInfo, into pub (cap bytes, *publen). The key is on the process's disk when
 * this returns KH_OK. A KEYGEN is not sent twice: when the connection breaks after it was sent,
 * KH_ERR_SECMOD (a key may then have been made that nobody knows of).
 */
KH_WARN_UNUSED kh_err kh_secmod_keygen(struct kh_secmod_client *c, unsigned bits, uint8_t id[static KH_SECMOD_ID_LEN],
				       uint8_t *pub, size_t cap, size_t *publen);
/* The public key of id (DER SubjectPublicKeyInfo) into pub; KH_ERR_NOTFOUND for an unknown id. */
KH_WARN_UNUSED kh_err kh_secmod_pubkey(struct kh_secmod_client *c, const uint8_t id[static KH_SECMOD_ID_LEN],
				       uint8_t *pub, size_t cap, size_t *publen);
/*
 * z = c'^d mod n for the key id: c' is clen bytes, exactly the modulus length, big-endian; z
 * (clen bytes) goes to z. KH_ERR_BLIND_RANGE for c' outside [2, n-2], KH_ERR_NOTFOUND for an
 * unknown id, KH_ERR_FORMAT for a clen that no key size has.
 */
KH_WARN_UNUSED kh_err kh_secmod_decrypt(struct kh_secmod_client *c, const uint8_t id[static KH_SECMOD_ID_LEN],
					const uint8_t *cb, size_t clen, uint8_t *z);

#endif
