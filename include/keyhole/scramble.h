/*
 * Transport-stream scramblers (the design rules): DVB-CSA2 through libdvbcsa's bitslice
 * batches, DVB-CISSA v1 (ETSI TS 103 127: AES-128-CBC, IV "DVBTMCPTAESCISSA", residue clear)
 * and ATIS-IDSA (ATIS-0800006: AES-128 in ANSI/SCTE 52 = DVS-042 chaining, IV 0, the whole
 * payload scrambled). What each does to a packet, with sources: docs/internals/scrambling.md.
 *
 * A scrambler is a protocol engine in the house sense: bytes in, bytes out, no I/O. It works
 * IN PLACE on an array of n contiguous 188-byte TS packets and batches internally across the
 * packets of one call (CSA: full bitslice batches; AES: the blocks of many packets in one EVP
 * call), so callers should hand over many packets at a time (a few hundred or more); nothing is
 * kept between calls, so a call's last, partial batch is processed before it returns.
 *
 * Per packet: the 4-byte header and any adaptation field stay clear; only the payload is
 * scrambled, and transport_scrambling_control (TSC) says with which key: 10 even, 11 odd.
 * Packets without payload are left as they are. Payloads shorter than the cipher's minimum
 * (CSA2: 8 bytes, CISSA: 16 bytes) stay clear but still carry the TSC bits, as every other
 * payload-carrying packet does, so a descrambler treats all alike; IDSA has no minimum.
 *
 * Keys: even and odd, 8 bytes for CSA2 (control word), 16 bytes for the AES algorithms. They are
 * held only in the context (key schedules), overwritten on re-key and on kh_scr_clear_key(), and
 * wiped by kh_scr_free().
 *
 * A context is not thread-safe; use one per thread.
 */
#ifndef KEYHOLE_SCRAMBLE_H
#define KEYHOLE_SCRAMBLE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_SCR_PACKET_LEN 188
#define KH_SCR_CSA_CW_LEN 8
#define KH_SCR_AES_KEY_LEN 16

enum kh_scr_alg {
	KH_SCR_CSA2 = 1,  /* DVB-CSA2, 8-byte control words */
	KH_SCR_CISSA = 2, /* DVB-CISSA v1, AES-128-CBC, residue clear */
	KH_SCR_IDSA = 3,  /* ATIS-IDSA, AES-128 with DVS-042 residue handling */
};

enum kh_scr_parity {
	KH_SCR_EVEN = 0, /* TSC 10 */
	KH_SCR_ODD = 1,  /* TSC 11 */
};

/* kh_scr_new() flags. */
/*
 * CSA2 only: reduce every control word given to kh_scr_set_key() as the common 48-bit CW
 * practice does (byte 3 = byte 0 + 1 + 2, byte 7 = byte 4 + 5 + 6, mod 256). A headend using it
 * must put the reduced CW (kh_scr_cw_reduce()) in its ECMs; a decoder may set it or not, since
 * reducing a reduced CW changes nothing.
 */
#define KH_SCR_F_CSA_REDUCE 0x1u

struct kh_scr;

/* Key length of an algorithm (8 or 16), 0 for a value that is not an algorithm. */
size_t kh_scr_keylen(enum kh_scr_alg alg);
/* "DVB-CSA2", "DVB-CISSA", "ATIS-IDSA"; "unknown" otherwise. Never NULL. */
const char *kh_scr_alg_name(enum kh_scr_alg alg);
/* The CSA2 entropy reduction in place (see KH_SCR_F_CSA_REDUCE). */
void kh_scr_cw_reduce(uint8_t cw[static KH_SCR_CSA_CW_LEN]);

/*
 * New scrambler for alg with no keys set. flags: 0 or KH_SCR_F_CSA_REDUCE (CSA2 only).
 * *out receives the context on success; free it with kh_scr_free().
 * KH_ERR_INVAL: unknown alg or flag; KH_ERR_NOMEM; KH_ERR_CRYPTO: OpenSSL could not fetch AES.
 */
KH_WARN_UNUSED kh_err kh_scr_new(enum kh_scr_alg alg, unsigned flags, struct kh_scr **out);
/* Wipe the keys and free. NULL does nothing. */
void kh_scr_free(struct kh_scr *s);

/*
 * Set (or replace) the key of one parity; keylen must be kh_scr_keylen(alg). The old key
 * schedule is overwritten. The caller keeps ownership of key and should wipe its copy.
 * KH_ERR_INVAL: bad parity or length; KH_ERR_CRYPTO: OpenSSL failure (the parity is then left
 * without a key).
 */
KH_WARN_UNUSED kh_err kh_scr_set_key(struct kh_scr *s, enum kh_scr_parity parity,
				     const uint8_t *key, size_t keylen);
/* Overwrite the key of one parity and mark it unset. */
void kh_scr_clear_key(struct kh_scr *s, enum kh_scr_parity parity);
/* 1 when the parity has a key, 0 otherwise. */
int kh_scr_has_key(const struct kh_scr *s, enum kh_scr_parity parity);

/*
 * Scramble n packets (n * 188 bytes at pkts) in place with the key of parity, setting TSC to
 * 10/11 on every packet that carries a payload. Every packet must be a clear, well-formed TS
 * packet: sync byte 0x47, adaptation_field_control not 00, adaptation field inside the packet,
 * TSC 00. Packets are checked before any is changed: on KH_ERR_FORMAT (a packet breaks that
 * rule) or KH_ERR_INVAL (no key for parity, bad argument) nothing has been written.
 * n == 0 is KH_OK. KH_ERR_CRYPTO (OpenSSL failure, not expected) leaves pkts partly scrambled.
 * The caller chooses which packets to scramble (component PIDs, not PSI or null packets).
 */
KH_WARN_UNUSED kh_err kh_scr_scramble(struct kh_scr *s, uint8_t *pkts, size_t n,
				      enum kh_scr_parity parity);

/*
 * Descramble n packets in place: each packet with TSC 10 or 11 is descrambled with the key of
 * that parity and its TSC cleared to 00; packets with TSC 00 are clear already and left as
 * they are. Packets that cannot be handled — no sync byte, adaptation_field_control 00
 * (reserved), adaptation field running past the packet, TSC 01 (reserved) — are left exactly
 * as they are and counted in *skipped (NULL: not wanted), so that one damaged packet does not
 * cost its neighbours. KH_ERR_INVAL: a packet is scrambled with a parity that has no key (or a
 * bad argument); nothing has been written then. KH_ERR_CRYPTO as for kh_scr_scramble().
 * A wrong key is not detectable here: the payload comes out as noise.
 */
KH_WARN_UNUSED kh_err kh_scr_descramble(struct kh_scr *s, uint8_t *pkts, size_t n,
					size_t *skipped);

/*
 * The same in one call, for a caller that may hold no allocated context between calls (the
 * decoder module's descrambler): a context is made, keyed with even and/or odd (NULL: no key
 * for that parity; keylen as for kh_scr_set_key), run over pkts, then wiped and freed. Errors as
 * kh_scr_new, kh_scr_set_key and kh_scr_descramble; KH_ERR_INVAL also when no key is given.
 */
KH_WARN_UNUSED kh_err kh_scr_descramble_once(enum kh_scr_alg alg, unsigned flags, const uint8_t *even,
					     const uint8_t *odd, size_t keylen, uint8_t *pkts, size_t n,
					     size_t *skipped);

#endif
