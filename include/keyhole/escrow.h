/*
 * The escrow protocol's messages (seed 003, docs/protocols/escrow.md): what the escrow, the
 * seller, the buyer's host and the buyer's device exchange, as fixed binary records. Base zone:
 * the device parses them as the escrow does. Every multi-byte integer is big-endian; every
 * signature is Ed25519 over a label naming the record, then every byte of the record before it.
 *
 *   listing  "KHLS" | u8 1 | listing id (16) | u32 escrow | u64 seller | u64 price | currency (3)
 *            | u32 deadline (s) | u64 created | u8 len | content id | u16 len | key (DER SPKI)
 *            | Sig_E("keyhole escrow v1 listing" | ...)
 *   request  "KHBQ" | u8 1 | purchase id (16) | listing id (16) | u32 escrow | u64 price
 *            | currency (3) | u32 device | u16 nlen | c' | Sig_D("keyhole escrow v1 request" | ...)
 *   answer   "KHBA" | u8 1 | purchase id | listing id | u32 escrow | SHA-256(request)
 *            | u64 deadline (unix time) | u16 nlen | z | Sig_E("keyhole escrow v1 answer" | ...)
 *   notice   "KHBN" | u8 1 | purchase id | listing id | u32 escrow | u32 device | u8 outcome
 *            | u8 reason | Sig_D("keyhole escrow v1 notice" | ...)
 *   content  "KHEC" | u8 1 | u8 len | content id | u32 chunk size | u64 length | commit (32),
 *            then the chunks: AES-256-GCM under HKDF(K, "", "keyhole escrow v1 chunks"), nonce
 *            0^4 | u64 i, aad SHA-256(header) | u32 i | u8 last, each chunk size bytes (the
 *            last may be shorter) followed by its tag.
 *   offer    "KHOF" | u8 1 | u16 len | listing | u16 nlen | c: what the seller hands a buyer
 *            beside the content file, c = RSA-OAEP-SHA256(listing key, K, label = listing id).
 *
 * The commit binds the header to K: HKDF(K, SHA-256(header up to the commit), "keyhole escrow v1
 * commit", 32). A device that recovers a K whose commit does not match has proof the key is not
 * the content's, before it has shown a byte of it.
 */
#ifndef KEYHOLE_ESCROW_H
#define KEYHOLE_ESCROW_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/err.h"

#define KH_ESCROW_ID_LEN 16
#define KH_ESCROW_CUR_LEN 3
#define KH_ESCROW_CONTENT_MAX 64
#define KH_ESCROW_KEY_LEN 32 /* K */
/* The records' largest sizes (a 4096-bit listing key). */
#define KH_ESCROW_LISTING_MAX (4 + 1 + 16 + 4 + 8 + 8 + 3 + 4 + 8 + 1 + KH_ESCROW_CONTENT_MAX + 2 + KH_RSA_SPKI_MAX + 64)
#define KH_ESCROW_REQUEST_MAX (4 + 1 + 16 + 16 + 4 + 8 + 3 + 4 + 2 + KH_RSA_MAX_LEN + 64)
#define KH_ESCROW_ANSWER_MAX (4 + 1 + 16 + 16 + 4 + 32 + 8 + 2 + KH_RSA_MAX_LEN + 64)
#define KH_ESCROW_NOTICE_LEN (4 + 1 + 16 + 16 + 4 + 4 + 1 + 1 + 64)
#define KH_ESCROW_HEADER_MAX (4 + 1 + 1 + KH_ESCROW_CONTENT_MAX + 4 + 8 + 32)
#define KH_ESCROW_OFFER_MAX (4 + 1 + 2 + KH_ESCROW_LISTING_MAX + 2 + KH_RSA_MAX_LEN)
/* Chunks fit one device command with their index and tag. */
#define KH_ESCROW_CHUNK_MAX 3968u
#define KH_ESCROW_PRICE_MAX (UINT64_C(1) << 53)

/*
 * The buyer device's commands (INS 30-3E, docs/protocols/escrow.md "The device"): their data and
 * answers are TLV lists of these tags.
 *   BUY START     listing, c, header hash            -> request
 *   BUY FINISH    listing, c, header, answer         -> notice (+ licence when delivered)
 *   BUY NOTICE    purchase                           -> notice (+ licence when delivered)
 *   BUY CANCEL    purchase                           -> notice (failed, cancelled)
 *   BUY LIST                                         -> one slot TLV per purchase held
 *   CONTENT OPEN  licence, header                    -> u64 length | u64 chunks
 *   CONTENT CHUNK u32 i | chunk i (not TLV)          -> its plaintext
 *   BUY COMBINE   header, grant, purchases            -> one notice per purchase (+ licence when
 *                                                        delivered)
 * In the split-key variant c opens to a share record (include/keyhole/shamir.h) instead of K:
 * BUY FINISH then keeps the share in the purchase's slot and answers the slot (state share), no
 * notice; BUY COMBINE opens the device's own share (the grant: sealed to the device's pairing
 * key, HPKE info = the content header's hash), adds the shares the named purchases hold, and
 * settles them all at once: delivered when the key recovered opens the header's commitment.
 */
enum {
	KH_ESCROW_T_LISTING = 1,
	KH_ESCROW_T_C = 2,
	KH_ESCROW_T_HEADER_HASH = 3,
	KH_ESCROW_T_HEADER = 4,
	KH_ESCROW_T_ANSWER = 5,
	KH_ESCROW_T_PURCHASE = 6,
	KH_ESCROW_T_REQUEST = 7,
	KH_ESCROW_T_NOTICE = 8,
	KH_ESCROW_T_LICENCE = 9,
	KH_ESCROW_T_SLOT = 10, /* u8 state | u8 reason | purchase | listing | u32 escrow */
	KH_ESCROW_T_GRANT = 11,     /* the device's share, sealed to it (KH_SHAMIR_SEALED_LEN) */
	KH_ESCROW_T_PURCHASES = 12, /* purchase ids, one after the other */
	KH_ESCROW_T_MAX = KH_ESCROW_T_PURCHASES
};
/* BUY LIST's slot states. */
enum { KH_ESCROW_SLOT_PENDING = 1, KH_ESCROW_SLOT_DELIVERED = 2, KH_ESCROW_SLOT_FAILED = 3, KH_ESCROW_SLOT_SHARE = 4 };
#define KH_ESCROW_SLOT_LEN (2 + 2 * KH_ESCROW_ID_LEN + 4)
/* The licence: "KHBT" | nonce | AES-256-GCM(device key, purchase | listing | K) | tag. It opens any
 * content whose header commits to its K. */
#define KH_ESCROW_LICENCE_LEN (4 + KH_NONCE_LEN + 2 * KH_ESCROW_ID_LEN + KH_ESCROW_KEY_LEN + KH_TAG_LEN)

struct kh_escrow_listing {
	uint8_t id[KH_ESCROW_ID_LEN];
	uint32_t escrow; /* the escrow's certificate serial */
	uint64_t seller; /* the seller's account at that escrow */
	uint64_t price;  /* in the currency's smallest unit, 1..2^53 */
	char currency[KH_ESCROW_CUR_LEN + 1];
	uint32_t deadline; /* seconds after the hold at which an unsettled purchase goes to the seller */
	uint64_t created;
	char content[KH_ESCROW_CONTENT_MAX + 1];
	const uint8_t *key; /* DER SubjectPublicKeyInfo (RSA, e = 65537), into the parsed bytes */
	size_t keylen;
};

struct kh_escrow_request {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t listing[KH_ESCROW_ID_LEN];
	uint32_t escrow;
	uint64_t price;
	char currency[KH_ESCROW_CUR_LEN + 1];
	uint32_t device; /* the buyer device's certificate serial (its UA) */
	const uint8_t *cprime;
	size_t nlen;
};

struct kh_escrow_answer {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t listing[KH_ESCROW_ID_LEN];
	uint32_t escrow;
	uint8_t request_hash[KH_SHA256_LEN];
	uint64_t deadline;
	const uint8_t *z;
	size_t nlen;
};

enum kh_escrow_outcome { KH_ESCROW_DELIVERED = 1, KH_ESCROW_FAILED = 2 };
enum kh_escrow_reason {
	KH_ESCROW_R_NONE = 0,
	KH_ESCROW_R_UNBLIND = 1,   /* the answer does not unblind to the seller's c (m^e != c) */
	KH_ESCROW_R_KEY = 2,       /* what it unblinds to is no OAEP-encoded key for this listing */
	KH_ESCROW_R_COMMIT = 3,    /* the key does not match the content's commitment */
	KH_ESCROW_R_CANCELLED = 4, /* the buyer gave up before an answer was unblinded (or combined) */
	KH_ESCROW_R_SHARES = 5,    /* the key shares do not fit together (split key) */
};

struct kh_escrow_notice {
	uint8_t purchase[KH_ESCROW_ID_LEN];
	uint8_t listing[KH_ESCROW_ID_LEN];
	uint32_t escrow;
	uint32_t device;
	uint8_t outcome; /* enum kh_escrow_outcome */
	uint8_t reason;  /* enum kh_escrow_reason; NONE exactly when delivered */
};

struct kh_escrow_header {
	char content[KH_ESCROW_CONTENT_MAX + 1];
	uint32_t chunk;  /* chunk size, 1..KH_ESCROW_CHUNK_MAX */
	uint64_t length; /* plaintext bytes, >= 1 */
	uint8_t commit[KH_SHA256_LEN];
	uint64_t chunks; /* derived: ceil(length / chunk) */
	uint8_t hash[KH_SHA256_LEN]; /* derived: SHA-256 of the header's bytes */
	size_t len;      /* derived: the header's length in bytes */
};

/* The id in the record of a device's own share of a split key: "KHDV" | 8 zero bytes | u32 the
 * device's certificate serial. */
void kh_escrow_device_share_id(uint32_t device, uint8_t id[static KH_ESCROW_ID_LEN]);

/* "XYZ": three upper-case ASCII letters. */
int kh_escrow_currency_ok(const char *cur);
/* A content id: 1..64 bytes of printable ASCII without space. */
int kh_escrow_content_ok(const char *id);

/*
 * Each parse checks the record's shape and bounds (KH_ERR_FORMAT, _TRUNCATED, _TRAILING,
 * _VERSION); with pk it also checks the signature (KH_ERR_AUTH). Pointers in the result point
 * into b. Each sign appends the record to w, signed with sk.
 */
KH_WARN_UNUSED kh_err kh_escrow_listing_sign(const struct kh_escrow_listing *l, const uint8_t sk[static 32],
					     struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_escrow_listing_parse(const uint8_t *b, size_t n, const uint8_t *pk,
					      struct kh_escrow_listing *l);
KH_WARN_UNUSED kh_err kh_escrow_request_sign(const struct kh_escrow_request *q, const uint8_t sk[static 32],
					     struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_escrow_request_parse(const uint8_t *b, size_t n, const uint8_t *pk,
					      struct kh_escrow_request *q);
KH_WARN_UNUSED kh_err kh_escrow_answer_sign(const struct kh_escrow_answer *a, const uint8_t sk[static 32],
					    struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_escrow_answer_parse(const uint8_t *b, size_t n, const uint8_t *pk,
					     struct kh_escrow_answer *a);
KH_WARN_UNUSED kh_err kh_escrow_notice_sign(const struct kh_escrow_notice *t, const uint8_t sk[static 32],
					    struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_escrow_notice_parse(const uint8_t *b, size_t n, const uint8_t *pk,
					     struct kh_escrow_notice *t);

/* The content header: written from content, chunk, length and K (the commit is computed). */
KH_WARN_UNUSED kh_err kh_escrow_header_make(const char *content, uint32_t chunk, uint64_t length,
					    const uint8_t k[static KH_ESCROW_KEY_LEN], struct kh_wr *w);
/* Parse the header at the start of b (n may run on into the chunks); h->len says where it ends. */
KH_WARN_UNUSED kh_err kh_escrow_header_parse(const uint8_t *b, size_t n, struct kh_escrow_header *h);
/* KH_OK when K is the header's key (its commit matches), KH_ERR_AUTH otherwise. */
KH_WARN_UNUSED kh_err kh_escrow_header_check(const struct kh_escrow_header *h, const uint8_t *hb,
					     const uint8_t k[static KH_ESCROW_KEY_LEN]);
/* The chunk key of K. */
KH_WARN_UNUSED kh_err kh_escrow_chunk_key(const uint8_t k[static KH_ESCROW_KEY_LEN], uint8_t ck[static KH_KEY_LEN]);
/* Plaintext bytes of chunk i (0 for i >= chunks). */
size_t kh_escrow_chunk_len(const struct kh_escrow_header *h, uint64_t i);
/* Seal chunk i (ptlen = kh_escrow_chunk_len) into ct (ptlen + KH_TAG_LEN bytes); open it back. */
KH_WARN_UNUSED kh_err kh_escrow_chunk_seal(const uint8_t ck[static KH_KEY_LEN], const struct kh_escrow_header *h,
					   uint64_t i, const uint8_t *pt, size_t ptlen, uint8_t *ct);
KH_WARN_UNUSED kh_err kh_escrow_chunk_open(const uint8_t ck[static KH_KEY_LEN], const struct kh_escrow_header *h,
					   uint64_t i, const uint8_t *ct, size_t ctlen, uint8_t *pt);

/* The offer: listing and c. Parse points into b. */
KH_WARN_UNUSED kh_err kh_escrow_offer_make(const uint8_t *listing, size_t llen, const uint8_t *c, size_t clen,
					   struct kh_wr *w);
KH_WARN_UNUSED kh_err kh_escrow_offer_parse(const uint8_t *b, size_t n, const uint8_t **listing, size_t *llen,
					    const uint8_t **c, size_t *clen);

#endif
