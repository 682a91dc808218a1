/*
 * The key center relay's records (seed 004, docs/protocols/keycenter.md): what a key card, its
 * host and the key center exchange. Base zone, no allocation: the card parses them as the center
 * does. Integers are big-endian; signatures are Ed25519 over a label naming the record, then
 * every byte of the record before the signature.
 *
 *   message   header | chunk 0 | chunk 1 | ... | chunk n
 *     header  "KHKM" | u8 1 | u8 dir | u64 serial | u64 index                (22 bytes)
 *             dir 1: a card's post to the center, under key `index` of its send chain;
 *             dir 2: the center's delivery to a card, under key `index` of its receive chain
 *     chunk   u8 flags (bit 0: last) | u32 len | AES-256-GCM(key, nonce 0^4 | u64 k,
 *             aad header | u64 k | u8 flags, plaintext) (len = plaintext + 16)
 *     chunk 0 plaintext, the envelope: u8 1 | u8 len | address | u64 document length; the
 *             address is the recipient's in a post, the sender's in a delivery
 *     chunks 1..n: the document, KH_KC_CHUNK bytes each but the last (1..KH_KC_CHUNK); a
 *             document of 0 bytes has no chunk after the envelope, which is then the last
 *   ack       "KHKA" | u8 1 | u32 center | u64 serial | u64 index | Sig_C("keyhole keycenter ack v1" | ...)
 *             the center relayed the card's post `index` (and every post before it is spent)
 *   enrol key "KHKE" | u8 1 | u32 center | X25519 public key | Sig_C("keyhole keycenter enrol key v1" | ...)
 *             the key a card seals its seed to at enrolment
 *   hello     Sig_card("keyhole keycard hello v1" | u32 center | u64 serial | nonce (32)): the
 *             card's proof to the center that its host holds it (mailbox sessions)
 *
 * A message's key is used for that message only (each index once), so a fixed nonce per chunk
 * number is safe; the last flag and the document length in the envelope make a cut message fail.
 */
#ifndef KEYHOLE_KEYCARD_H
#define KEYHOLE_KEYCARD_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/err.h"
#include "keyhole/keyseq.h"

#define KH_KC_HEADER_LEN 22
#define KH_KC_CHUNK_HDR_LEN 5
#define KH_KC_CHUNK (64u * 1024u)    /* document bytes per chunk after the envelope */
#define KH_KC_ADDR_MAX 64            /* an address: 1..64 of [a-z0-9._+-@] */
#define KH_KC_ENVELOPE_MAX (1 + 1 + KH_KC_ADDR_MAX + 8)
/* Chunk 0 as it travels: what the card is given to check before it gives a receive key. */
#define KH_KC_CHUNK0_MAX (KH_KC_CHUNK_HDR_LEN + KH_KC_ENVELOPE_MAX + KH_TAG_LEN)
#define KH_KC_ACK_LEN (4 + 1 + 4 + 8 + 8 + KH_ED25519_SIG_LEN)
#define KH_KC_ENROLKEY_LEN (4 + 1 + 4 + 32 + KH_ED25519_SIG_LEN)
#define KH_KC_NONCE_LEN 32
/* The seed sealed to the center at enrolment: HPKE enc, then the seed and its tag. */
#define KH_KC_SEALED_SEED_LEN (32 + KH_KEYSEQ_LEN + KH_TAG_LEN)

enum kh_kc_dir { KH_KC_POST = 1, KH_KC_DELIVERY = 2 };

struct kh_kc_header {
	uint8_t dir; /* enum kh_kc_dir */
	uint64_t serial;
	uint64_t index;
};

struct kh_kc_envelope {
	uint8_t addr_len;
	char addr[KH_KC_ADDR_MAX + 1]; /* NUL-terminated */
	uint64_t length;               /* of the document */
};

/* 22 bytes of header. */
void kh_kc_header_write(const struct kh_kc_header *h, uint8_t out[static KH_KC_HEADER_LEN]);
/* KH_ERR_TRUNCATED, KH_ERR_FORMAT (magic, dir), KH_ERR_VERSION. Index 0 is refused (FORMAT). h is
 * written only on success. */
KH_WARN_UNUSED kh_err kh_kc_header_parse(const uint8_t *in, size_t n, struct kh_kc_header *h);

/* KH_OK when addr (len bytes) is a valid address, KH_ERR_FORMAT otherwise. */
KH_WARN_UNUSED kh_err kh_kc_addr_check(const char *addr, size_t len);

/* The envelope's plaintext into out (KH_KC_ENVELOPE_MAX); *len its size. KH_ERR_FORMAT for a bad address. */
KH_WARN_UNUSED kh_err kh_kc_envelope_write(const char *addr, uint64_t length, uint8_t *out, size_t *len);
KH_WARN_UNUSED kh_err kh_kc_envelope_parse(const uint8_t *in, size_t n, struct kh_kc_envelope *e);
/* Chunks after the envelope for a document of length bytes. */
uint64_t kh_kc_doc_chunks(uint64_t length);
/* Plaintext bytes of chunk k (1..chunks) of a document of length bytes. */
size_t kh_kc_chunk_len(uint64_t length, uint64_t k);

/*
 * Seal chunk k: out gets KH_KC_CHUNK_HDR_LEN + ptlen + KH_TAG_LEN bytes (flags, length, sealed
 * bytes). hdr is the message's 22-byte header. pt and the sealed part of out may not overlap.
 */
KH_WARN_UNUSED kh_err kh_kc_chunk_seal(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN],
				       uint64_t k, int last, const uint8_t *pt, size_t ptlen, uint8_t *out);
/*
 * Read chunk k's framing at in (n bytes available): *ctlen the sealed part's length, *last its flag.
 * KH_ERR_TRUNCATED when n is short of the framing or of the sealed part, KH_ERR_FORMAT for a
 * length below the tag, above KH_KC_CHUNK + tag, or unknown flag bits.
 */
KH_WARN_UNUSED kh_err kh_kc_chunk_frame(const uint8_t *in, size_t n, size_t *ctlen, int *last);
/* Open chunk k (its framing at in, n bytes from there): pt gets ctlen - 16 bytes; KH_ERR_AUTH on a bad tag. */
KH_WARN_UNUSED kh_err kh_kc_chunk_open(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN],
				       uint64_t k, const uint8_t *in, size_t n, uint8_t *pt, size_t *ptlen);

/*
 * A whole message held in memory (the center; tests): open it under key, checking every chunk, the
 * order, the last flag, the envelope's length and no trailing byte. doc receives the document
 * (cap bytes; KH_ERR_TOO_LARGE when it does not fit). h, e and doclen are written only on success;
 * on any error doc is wiped.
 */
KH_WARN_UNUSED kh_err kh_kc_msg_open(const uint8_t key[static 32], const uint8_t *msg, size_t n,
				     struct kh_kc_header *h, struct kh_kc_envelope *e, uint8_t *doc, size_t cap,
				     size_t *doclen);
/* Bytes of a message carrying a document of length bytes to/from addr (addr_len bytes). */
uint64_t kh_kc_msg_size(size_t addr_len, uint64_t length);
/* Seal a whole message into out (kh_kc_msg_size bytes; KH_ERR_BUF when cap is short). */
KH_WARN_UNUSED kh_err kh_kc_msg_seal(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr,
				     const uint8_t *doc, size_t doclen, uint8_t *out, size_t cap, size_t *outlen);

/* The center's ack of post `index` of card `serial`. */
KH_WARN_UNUSED kh_err kh_kc_ack_sign(const uint8_t sk[static 32], uint32_t center, uint64_t serial, uint64_t index,
				     uint8_t out[static KH_KC_ACK_LEN]);
/* The same when the center holds its public key pk too (a signature at about half the cost). */
KH_WARN_UNUSED kh_err kh_kc_ack_sign_kp(const uint8_t sk[static 32], const uint8_t pk[static 32], uint32_t center,
					uint64_t serial, uint64_t index, uint8_t out[static KH_KC_ACK_LEN]);
/* KH_ERR_FORMAT/VERSION/TRUNCATED/TRAILING, KH_ERR_SIGNATURE when it is not center pk's. */
KH_WARN_UNUSED kh_err kh_kc_ack_verify(const uint8_t pk[static 32], const uint8_t *in, size_t n, uint32_t *center,
				       uint64_t *serial, uint64_t *index);

/* The center's X25519 enrolment key, derived from its Ed25519 signing key (nothing more to keep). */
KH_WARN_UNUSED kh_err kh_kc_enrol_keypair(const uint8_t sk[static 32], uint8_t xsk[static 32], uint8_t xpk[static 32]);
KH_WARN_UNUSED kh_err kh_kc_enrolkey_sign(const uint8_t sk[static 32], uint32_t center, const uint8_t xpk[static 32],
					  uint8_t out[static KH_KC_ENROLKEY_LEN]);
KH_WARN_UNUSED kh_err kh_kc_enrolkey_verify(const uint8_t pk[static 32], const uint8_t *in, size_t n, uint32_t *center,
					    uint8_t xpk[static 32]);
/* HPKE info of a card's sealed seed: "keyhole keycard enrol v1" | u32 center | u64 serial (info holds 36). */
#define KH_KC_ENROL_INFO_LEN 36
void kh_kc_enrol_info(uint32_t center, uint64_t serial, uint8_t info[static KH_KC_ENROL_INFO_LEN]);
/* The message a card's hello signs (msg holds KH_KC_HELLO_MSG_LEN). */
#define KH_KC_HELLO_MSG_LEN (24 + 4 + 8 + KH_KC_NONCE_LEN)
void kh_kc_hello_msg(uint32_t center, uint64_t serial, const uint8_t nonce[static KH_KC_NONCE_LEN],
		     uint8_t msg[static KH_KC_HELLO_MSG_LEN]);

/*
 * The key card's commands (INS 90-9A, docs/protocols/keycenter.md "The key card"); TLV tags of
 * their data and answers:
 *   KC ENROL   cert (the center's signing certificate), enrolkey  -> serial, sealed seed
 *   KC SEND                                                     -> serial, index, key
 *   KC ACK     ack                                              -> (nothing)
 *   KC OPEN    header, chunk 0 (as it travels)                  -> index, key
 *   KC HELLO   nonce                                            -> serial, signature
 *   KC STATUS                                                   -> serial, center, send, acked, recv
 */
enum kh_kc_tag {
	KH_KC_T_CERT = 1,
	KH_KC_T_ENROLKEY = 2,
	KH_KC_T_SERIAL = 3,  /* u64 */
	KH_KC_T_SEALED = 4,  /* KH_KC_SEALED_SEED_LEN */
	KH_KC_T_INDEX = 5,   /* u64 */
	KH_KC_T_KEY = 6,     /* 32 */
	KH_KC_T_ACK = 7,     /* KH_KC_ACK_LEN */
	KH_KC_T_HEADER = 8,  /* KH_KC_HEADER_LEN */
	KH_KC_T_CHUNK = 9,   /* chunk 0, framing included */
	KH_KC_T_NONCE = 10,  /* 32 */
	KH_KC_T_SIG = 11,    /* 64 */
	KH_KC_T_CENTER = 12, /* u32: the center's serial (0: not enrolled) */
	KH_KC_T_SEND = 13,   /* u64: the send chain's position (next index it gives) */
	KH_KC_T_ACKED = 14,  /* u64: the highest post the center acknowledged */
	KH_KC_T_RECV = 15,   /* u64: the receive chain's position (lowest index it opens) */
	KH_KC_T_MAX = 15
};

#endif
