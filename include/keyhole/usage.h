/*
 * The card's usage-data block (seed 001, the protocol design "Seed 001"; docs/protocols/usage.md): what
 * only the card knows — purchases, credit, usage counters, applet versions — exported as one
 * block that the decoder may keep (memory M1) and carry to the management center, which alone can
 * read it (Ku) and check that this card made it (the card's certified Ed25519 key).
 *
 *   header   u8 version=3 | u32 UA | u32 block_seq | u64 card_time | u8 flags |
 *            nonce(12)                                                         30 bytes
 *   body     AES-256-GCM(Ku, nonce, aad = header, TLV contents) | tag(16)
 *   sig      Ed25519(card signing key, header | body)                          64 bytes
 *
 * The nonce is 96 fresh random bits (kh_random) drawn for each block, carried in the header (so
 * under the signature and in the AEAD's associated data). It is not derived from block_seq: a
 * software card whose files are copied back re-uses its block numbers, and a nonce taken from
 * them would then seal a different block under the same key and nonce (the protocol design: no module
 * nonce from state a rollback restores). The center identifies a block by (UA, block_seq) and
 * the block's hash: the same block seen twice changes nothing; a different block under a known
 * (UA, block_seq) is a rolled-back or cloned card (docs/protocols/upload.md).
 *
 * flags says what the block was made for: KH_USAGE_F_M1 for the decoder's memory M1 (EXPORT
 * P1=1, only while the center authorises export), clear for an upload session (EXPORT P1=0).
 * It is in the header, so under the signature and in the AEAD's associated data: nobody but the
 * card can mark a block for M1. The center recovers a replaced card only from a block so marked.
 * KH_USAGE_F_SESSION marks a block made for one upload session (EXPORT P1=0 with the center's
 * nonce as data): its signature is then over header | body | nonce, the nonce not carried. Such a
 * block is the card's answer to the nonce as well as its data, so a session that carries one
 * needs no separate hello, and the block counts only in the session whose nonce it signed. A
 * block is never both for M1 and for a session.
 * Versions 1 (17-byte header, no flags) and 2 (18-byte header, nonce from block_seq) are refused
 * with KH_ERR_VERSION; their UA and block_seq sit at the same offsets, so a center can still
 * name such a block in its answer.
 *
 * The upload hello answers a center's nonce with the card's signature, so the center knows the
 * current card is present in this session:
 *   hello    u32 UA | u32 last block_seq | u64 card_time | Ed25519(sign key,
 *            "keyhole upload hello v1" | nonce | UA | last block_seq | card_time)
 */
#ifndef KEYHOLE_USAGE_H
#define KEYHOLE_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/err.h"

#define KH_USAGE_VERSION 3
#define KH_USAGE_NONCE_OFF 18 /* the block's AEAD nonce, 12 bytes, in the header */
#define KH_USAGE_HDR_LEN 30
/* Header flags. */
#define KH_USAGE_F_M1 0x01u      /* made for the decoder's memory M1 (EXPORT P1=1) */
#define KH_USAGE_F_SESSION 0x02u /* bound to an upload session: signed with the session's nonce */
#define KH_USAGE_F_ALL 0x03u     /* every flag this version knows; another bit set, or both, is
				  * KH_ERR_FORMAT */
#define KH_USAGE_SIG_LEN 64
#define KH_USAGE_MIN_LEN (KH_USAGE_HDR_LEN + 16 + KH_USAGE_SIG_LEN)
#define KH_USAGE_MAX 2048u
#define KH_USAGE_MAX_PURCHASES 64

#define KH_HELLO_LABEL "keyhole upload hello v1"
#define KH_HELLO_NONCE_MIN 16
#define KH_HELLO_NONCE_MAX 64
#define KH_HELLO_LEN (4 + 4 + 8 + 64)

/* Tags of the block's TLV contents. */
enum {
	KH_USAGE_T_CREDIT = 1,   /* u32 */
	KH_USAGE_T_PURCHASE = 2, /* repeated: u32 event | u32 price | u64 time */
	KH_USAGE_T_COUNTERS = 3, /* u32 ECMs | u32 CWs | u32 refused | u32 EMMs */
	KH_USAGE_T_VERSIONS = 4, /* u8 CAS applet version | u8 state format version */
	KH_USAGE_T_RELOAD = 5,   /* u32 last reload id applied */
	KH_USAGE_T_EXPORT = 6,   /* u8 export authorised when the block was made */
};

struct kh_usage_hdr {
	uint32_t ua;
	uint32_t block_seq;
	uint64_t card_time;
	uint8_t flags; /* KH_USAGE_F_* */
};

struct kh_usage {
	struct kh_usage_hdr h;
	uint32_t credit;
	uint32_t last_reload;
	uint32_t n_ecm, n_cw, n_refused, n_emm;
	uint8_t cas_version, state_version;
	uint8_t export_ok;
	size_t npurchases;
	struct { uint32_t event, price; uint64_t time; } purchases[KH_USAGE_MAX_PURCHASES];
};

/*
 * Seal a block (the card's side): contents is the TLV list, sign_sk the card's Ed25519 key. The
 * nonce is drawn here (kh_random; its error is returned). KH_ERR_BUF when cap is short, KH_ERR_TOO_LARGE above KH_USAGE_MAX, KH_ERR_INVAL for a flag
 * outside KH_USAGE_F_ALL.
 */
KH_WARN_UNUSED kh_err kh_usage_seal(const uint8_t ku[static 32], const uint8_t sign_sk[static 32],
				    const struct kh_usage_hdr *h, const uint8_t *contents, size_t len,
				    uint8_t *out, size_t cap, size_t *outlen);
/*
 * The same for a block bound to an upload session: snonce (KH_HELLO_NONCE_MIN..MAX bytes) is the
 * session's nonce, and h->flags must be KH_USAGE_F_SESSION (KH_ERR_INVAL otherwise). With snonce
 * NULL this is kh_usage_seal, and KH_USAGE_F_SESSION is refused.
 */
KH_WARN_UNUSED kh_err kh_usage_seal_bound(const uint8_t ku[static 32], const uint8_t sign_sk[static 32],
					  const struct kh_usage_hdr *h, const uint8_t *contents, size_t len,
					  const uint8_t *snonce, size_t snlen, uint8_t *out, size_t cap,
					  size_t *outlen);
/*
 * The clear header (anyone): KH_ERR_TRUNCATED, KH_ERR_TOO_LARGE, KH_ERR_VERSION (checked in that
 * order), then KH_ERR_FORMAT for a flag outside KH_USAGE_F_ALL.
 */
KH_WARN_UNUSED kh_err kh_usage_peek(const uint8_t *blk, size_t n, struct kh_usage_hdr *h);
/*
 * The center's side: the framing (as kh_usage_peek), the signature with the card's certified key
 * (KH_ERR_AUTH), the body under Ku (KH_ERR_AUTH), the contents (KH_ERR_TLV_TAG unknown tag,
 * KH_ERR_TRUNCATED a TLV cut short, KH_ERR_FORMAT a missing, repeated or malformed field). *u is
 * written only on success.
 */
KH_WARN_UNUSED kh_err kh_usage_open(const uint8_t ku[static 32], const uint8_t sign_pk[static 32],
				    const uint8_t *blk, size_t n, struct kh_usage *u);
/*
 * The same, in an upload session whose nonce is snonce (NULL: none). A block bound to a session
 * verifies only with that session's nonce (KH_ERR_AUTH otherwise, and always without one); a
 * block not bound to one ignores snonce.
 */
KH_WARN_UNUSED kh_err kh_usage_open_bound(const uint8_t ku[static 32], const uint8_t sign_pk[static 32],
					  const uint8_t *blk, size_t n, const uint8_t *snonce, size_t snlen,
					  struct kh_usage *u);

/* The message a card signs for an upload hello (len KH_HELLO_MSG_LEN(noncelen)). */
#define KH_HELLO_MSG_LEN(noncelen) (sizeof KH_HELLO_LABEL - 1 + (noncelen) + 16)
void kh_hello_msg(const uint8_t *nonce, size_t noncelen, uint32_t ua, uint32_t block_seq, uint64_t card_time,
		  uint8_t *msg);
/* Check a hello against the nonce and the card's certified key: KH_ERR_INVAL for a nonce
 * outside [16, 64] bytes, KH_ERR_TRUNCATED / KH_ERR_TRAILING for a hello of another length than
 * KH_HELLO_LEN, KH_ERR_AUTH for a signature that does not verify. *h only on success. */
KH_WARN_UNUSED kh_err kh_hello_verify(const uint8_t sign_pk[static 32], const uint8_t *nonce, size_t noncelen,
				      const uint8_t *hello, size_t n, struct kh_usage_hdr *h);

#endif
