/*
 * MPEG-2 transport stream packets and PSI sections (ISO/IEC 13818-1 §2.4.3, §2.4.4; ETSI
 * EN 300 468 for the scrambling_descriptor): packet header parse and build, a per-PID section
 * assembler, a section packetiser, CRC-32/MPEG-2, PAT, PMT and CAT parse and build, and the
 * CA_descriptor (0x09) and scrambling_descriptor (0x65) that carry conditional access.
 *
 * Nothing here allocates or does I/O: bytes in, bytes out, caller-provided buffers. Parsers
 * never trust a length from the input (every field is bounded by what was given), write their
 * outputs only on success, and may leave pointers in the output that point into the input
 * (documented per struct: valid as long as that input is). Builders write only on success.
 *
 * Errors (existing codes of err.h, until dedicated ones exist):
 *   KH_ERR_TRUNCATED  the input is shorter than a length field says (packet < 188 bytes,
 *                     section shorter than 3 + section_length, descriptor overrunning its loop)
 *   KH_ERR_TRAILING   bytes after the section's declared end
 *   KH_ERR_TOO_LARGE  a section_length above the limit (1024 bytes in all for PSI, 4096 for
 *                     private sections), a loop or a table too large to build
 *   KH_ERR_FORMAT     a malformed field: bad sync byte, reserved adaptation_field_control,
 *                     adaptation_field_length out of bounds, wrong table_id, section_syntax
 *                     missing
 *   KH_ERR_CRC        a section whose CRC-32 does not check
 *   KH_ERR_BUF        the output buffer is too small
 *   KH_ERR_INVAL      a caller error (PID above 0x1FFF, NULL where a buffer is required, ...)
 *   KH_ERR_NOTFOUND   no matching descriptor
 */
#ifndef KEYHOLE_TS_H
#define KEYHOLE_TS_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/err.h"

#define KH_TS_PACKET_LEN 188
#define KH_TS_HEADER_LEN 4
#define KH_TS_SYNC 0x47
#define KH_TS_PID_MAX 0x1FFFu
#define KH_TS_PID_PAT 0x0000u
#define KH_TS_PID_CAT 0x0001u
#define KH_TS_PID_NULL 0x1FFFu

/* transport_scrambling_control */
#define KH_TS_SC_CLEAR 0u
#define KH_TS_SC_EVEN 2u
#define KH_TS_SC_ODD 3u

/* Section limits (whole section, header and CRC included). */
#define KH_TS_PSI_MAX 1024u     /* PAT, PMT, CAT and every table_id below 0x80 */
#define KH_TS_PRIVATE_MAX 4096u /* private sections: ECM/EMM table_id 0x80-0x8F */

#define KH_TS_TID_PAT 0x00u
#define KH_TS_TID_CAT 0x01u
#define KH_TS_TID_PMT 0x02u

#define KH_TS_DESC_CA 0x09u
#define KH_TS_DESC_SCRAMBLING 0x65u

/* scrambling_mode of the scrambling_descriptor (EN 300 468 table 102; 0x70-0x7F: ATIS). */
#define KH_TS_SCRAMBLING_CSA2 0x02u
#define KH_TS_SCRAMBLING_CISSA1 0x10u
#define KH_TS_SCRAMBLING_IDSA 0x70u

/* ---------------------------------------------------------------------------------------- */
/* Packets                                                                                   */

/*
 * A parsed packet. af points at the adaptation field's body (after adaptation_field_length,
 * af_len bytes, stuffing included; NULL and 0 without an adaptation field) and payload at the
 * payload (payload_len bytes; NULL and 0 without one). Both point into the parsed packet.
 */
struct kh_ts_pkt {
	uint16_t pid;
	uint8_t tei;        /* transport_error_indicator */
	uint8_t pusi;       /* payload_unit_start_indicator */
	uint8_t priority;   /* transport_priority */
	uint8_t scrambling; /* transport_scrambling_control, 0..3 */
	uint8_t afc;        /* adaptation_field_control: 1 payload, 2 AF only, 3 AF + payload */
	uint8_t cc;         /* continuity_counter */
	const uint8_t *af;
	size_t af_len;
	const uint8_t *payload;
	size_t payload_len;
};

/*
 * Parse one packet of exactly KH_TS_PACKET_LEN bytes. Rules enforced: sync byte 0x47,
 * adaptation_field_control not 0 (reserved), adaptation_field_length exactly 183 when there is
 * no payload and at most 182 when there is one. A set transport_error_indicator is reported,
 * not refused. KH_ERR_TRUNCATED when n < 188, KH_ERR_TRAILING when n > 188, KH_ERR_FORMAT.
 */
KH_WARN_UNUSED kh_err kh_ts_parse(const uint8_t *p, size_t n, struct kh_ts_pkt *out);

/*
 * Build one packet into out[188] from h's pid, tei, pusi, priority, scrambling and cc (afc,
 * af, payload and their lengths are taken from the arguments, not from h): af_len bytes of
 * adaptation-field body (NULL/0 for none), then the payload. When they fill less than 184
 * bytes an adaptation field is added or extended with 0xFF stuffing, so payload sits at the
 * end of the packet (as PES payloads need). A packet that parses rebuilds byte-identically
 * from its kh_ts_pkt. KH_ERR_TOO_LARGE when they do not fit; KH_ERR_INVAL for a bad field.
 */
KH_WARN_UNUSED kh_err kh_ts_build(uint8_t out[static KH_TS_PACKET_LEN], const struct kh_ts_pkt *h,
				  const uint8_t *af, size_t af_len, const uint8_t *payload,
				  size_t payload_len);

/* Set transport_scrambling_control (0..3) of a packet in place; KH_ERR_INVAL for sc > 3. */
KH_WARN_UNUSED kh_err kh_ts_set_scrambling(uint8_t pkt[static KH_TS_PACKET_LEN], unsigned sc);

/* ---------------------------------------------------------------------------------------- */
/* Sections                                                                                  */

/* CRC-32/MPEG-2: polynomial 0x04C11DB7, init 0xFFFFFFFF, not reflected, no final xor. A
 * section with its CRC_32 field included gives 0. */
uint32_t kh_ts_crc32(const uint8_t *p, size_t n);

/* Maximum length of a whole section with this table_id: KH_TS_PRIVATE_MAX for 0x80-0x8F,
 * KH_TS_PSI_MAX otherwise. */
size_t kh_ts_section_max(uint8_t table_id);

/*
 * Check a whole section: n >= 3, 3 + section_length == n (KH_ERR_TRUNCATED when shorter,
 * KH_ERR_TRAILING when longer), within kh_ts_section_max (KH_ERR_TOO_LARGE), and when
 * section_syntax_indicator is set: at least 12 bytes (KH_ERR_FORMAT) and a CRC-32 that checks
 * (KH_ERR_CRC).
 */
KH_WARN_UNUSED kh_err kh_ts_section_check(const uint8_t *s, size_t n);

/*
 * Section assembler for one PID (caller-allocated, about 4.3 KB; no heap). Feed it packets with
 * kh_ts_asm_push, then call kh_ts_asm_pop until it returns 0 before pushing the next packet
 * (bytes of a packet not popped are discarded by the next push).
 *
 * Sections may span packets and several may share a packet; a section starts only in a packet
 * with payload_unit_start_indicator set, at its pointer_field; 0xFF where a table_id is
 * expected starts the packet's stuffing. A continuity error (a CC that is neither the next one
 * nor a first duplicate, which is dropped), a discontinuity_indicator, a packet with
 * transport_error_indicator or scrambling set, or a bad pointer_field drops any partial section
 * and waits for the next unit start. The assembler checks lengths, not CRCs: pass each section
 * to kh_ts_section_check or a table parser.
 */
struct kh_ts_asm {
	uint16_t pid;
	uint16_t max;       /* section size cap: KH_TS_PSI_MAX or KH_TS_PRIVATE_MAX */
	int last_cc;        /* -1 before the first packet with payload */
	int dup;            /* the last packet was a duplicate */
	int collecting;     /* a section is in progress */
	size_t have, need;  /* bytes held; expected total (0 while the header is incomplete) */
	uint8_t pl[KH_TS_PACKET_LEN];
	size_t pl_len, pos; /* current packet's payload and read position */
	size_t start;       /* where a new section may start in it (pl_len + 1: nowhere) */
	size_t limit;       /* where the section in progress must end in it (its pointer_field) */
	/* statistics, for callers and tests */
	uint32_t cc_errors;
	uint32_t dropped;   /* partial or oversized sections thrown away */
	uint8_t sec[KH_TS_PRIVATE_MAX];
};

/* max: KH_TS_PSI_MAX or KH_TS_PRIVATE_MAX (anything else is clamped into [KH_TS_PSI_MAX,
 * KH_TS_PRIVATE_MAX]). KH_ERR_INVAL for pid > 0x1FFF. */
KH_WARN_UNUSED kh_err kh_ts_asm_init(struct kh_ts_asm *a, uint16_t pid, size_t max);
/* Drop everything in progress (statistics kept). */
void kh_ts_asm_reset(struct kh_ts_asm *a);
/*
 * Take one packet (188 bytes). Errors from kh_ts_parse; KH_ERR_INVAL when its PID is not the
 * assembler's. A packet that parses but must be refused (TEI, scrambled, bad pointer_field)
 * resets the assembler and returns KH_ERR_FORMAT; a continuity error resets it but the packet
 * is used (a unit start in it can begin a new section) and KH_OK is returned (cc_errors counts).
 */
KH_WARN_UNUSED kh_err kh_ts_asm_push(struct kh_ts_asm *a, const uint8_t *pkt, size_t n);
/*
 * Next complete section: returns 1 and copies it to out (*len bytes), 0 when the packets so
 * far hold no further complete section, KH_ERR_TOO_LARGE when a section announced a length
 * above the cap (dropped; call again), KH_ERR_TRUNCATED when the next unit start cut a
 * section short (dropped; call again), KH_ERR_BUF when cap is too small (nothing consumed: call
 * again with a larger buffer).
 */
KH_WARN_UNUSED int kh_ts_asm_pop(struct kh_ts_asm *a, uint8_t *out, size_t cap, size_t *len);

/* Number of packets kh_ts_packetise makes for a section of n bytes. */
size_t kh_ts_packets_for(size_t n);
/*
 * Packetise one section on pid: the first packet has payload_unit_start_indicator and
 * pointer_field 0, continuity counters follow *cc (the first packet gets *cc, and *cc is left
 * at the next one to use), the last packet is stuffed with 0xFF, no adaptation field, clear.
 * Writes kh_ts_packets_for(n) * 188 bytes to out (*out_len); KH_ERR_BUF when cap is short,
 * KH_ERR_TOO_LARGE for n above KH_TS_PRIVATE_MAX, KH_ERR_INVAL for n < 3 or a bad pid.
 * Nothing is written and *cc is unchanged on failure.
 */
KH_WARN_UNUSED kh_err kh_ts_packetise(uint16_t pid, uint8_t *cc, const uint8_t *sec, size_t n,
				      uint8_t *out, size_t cap, size_t *out_len);

/* ---------------------------------------------------------------------------------------- */
/* Descriptors                                                                               */

/*
 * Walk a descriptor loop: returns 1 with *tag, *body (into the loop) and *len, 0 at the clean
 * end, KH_ERR_TRUNCATED when a descriptor overruns the loop (the iterator then stays at end).
 */
struct kh_ts_desc_it {
	const uint8_t *p;
	size_t n;
};
void kh_ts_desc_it_init(struct kh_ts_desc_it *it, const uint8_t *loop, size_t len);
KH_WARN_UNUSED int kh_ts_desc_next(struct kh_ts_desc_it *it, uint8_t *tag, const uint8_t **body,
				   uint8_t *len);
/* KH_OK when the loop is a whole number of well-formed descriptors, KH_ERR_TRUNCATED else. */
KH_WARN_UNUSED kh_err kh_ts_desc_loop_check(const uint8_t *loop, size_t len);

/* CA_descriptor: CA_system_id, CA_PID (ECM PID in a PMT, EMM PID in the CAT), private data
 * (pointing into the parsed descriptor). */
struct kh_ts_ca_desc {
	uint16_t ca_system_id;
	uint16_t ca_pid;
	const uint8_t *priv;
	size_t priv_len;
};

/* Append a whole CA_descriptor (tag, length, body). KH_ERR_INVAL for a PID above 0x1FFF,
 * KH_ERR_TOO_LARGE for more than 251 bytes of private data, the writer's error otherwise. */
KH_WARN_UNUSED kh_err kh_ts_ca_desc_put(struct kh_wr *w, uint16_t ca_system_id, uint16_t ca_pid,
					const uint8_t *priv, size_t priv_len);
/* Parse a CA_descriptor body (after tag and length): KH_ERR_TRUNCATED below 4 bytes. */
KH_WARN_UNUSED kh_err kh_ts_ca_desc_parse(const uint8_t *body, size_t len, struct kh_ts_ca_desc *out);
/* First CA_descriptor for ca_system_id in a loop: KH_OK, KH_ERR_NOTFOUND, or the loop's or
 * the descriptor's error. */
KH_WARN_UNUSED kh_err kh_ts_ca_desc_find(const uint8_t *loop, size_t len, uint16_t ca_system_id,
					 struct kh_ts_ca_desc *out);

/* scrambling_descriptor: one scrambling_mode byte. */
KH_WARN_UNUSED kh_err kh_ts_scrambling_desc_put(struct kh_wr *w, uint8_t mode);
/* First scrambling_descriptor in a loop: KH_OK, KH_ERR_NOTFOUND, KH_ERR_FORMAT when its body is
 * empty, or the loop's error. */
KH_WARN_UNUSED kh_err kh_ts_scrambling_desc_find(const uint8_t *loop, size_t len, uint8_t *mode);

/* What an elementary stream of a PMT carries, from its stream_type and, for PES private data
 * (0x06), its descriptors (AC-3, E-AC-3, DTS, AAC: audio; DVB subtitling, teletext: subtitles). */
enum kh_ts_es_kind { KH_TS_ES_VIDEO = 1, KH_TS_ES_AUDIO, KH_TS_ES_SUBTITLES, KH_TS_ES_DATA };
enum kh_ts_es_kind kh_ts_es_kind(uint8_t stream_type, const uint8_t *desc, size_t desc_len);

/* ---------------------------------------------------------------------------------------- */
/* Tables. One section each (section_number / last_section_number are kept for PAT and CAT;  */
/* a PMT has exactly one section). Reserved bits are ignored when parsing, set when building. */

#define KH_TS_PAT_MAX_PROGRAMS 253 /* (1024 - 12) / 4 */
#define KH_TS_PMT_MAX_ES 201       /* (1024 - 16) / 5 */

struct kh_ts_pat_prog {
	uint16_t program_number; /* 0: network_PID */
	uint16_t pid;
};

struct kh_ts_pat {
	uint16_t tsid;
	uint8_t version; /* 0..31 */
	uint8_t current; /* current_next_indicator */
	uint8_t section_number, last_section_number;
	size_t n;
	struct kh_ts_pat_prog prog[KH_TS_PAT_MAX_PROGRAMS];
};

struct kh_ts_pmt_es {
	uint8_t stream_type;
	uint16_t pid;
	const uint8_t *desc; /* ES_info descriptor loop (into the section when parsed) */
	size_t desc_len;
};

struct kh_ts_pmt {
	uint16_t program_number;
	uint8_t version;
	uint8_t current;
	uint16_t pcr_pid;
	const uint8_t *desc; /* program_info descriptor loop (into the section when parsed) */
	size_t desc_len;
	size_t n;
	struct kh_ts_pmt_es es[KH_TS_PMT_MAX_ES];
};

struct kh_ts_cat {
	uint8_t version;
	uint8_t current;
	uint8_t section_number, last_section_number;
	const uint8_t *desc; /* descriptor loop (into the section when parsed) */
	size_t desc_len;
};

/*
 * Parse a whole section (kh_ts_section_check first). KH_ERR_FORMAT for another table_id, a
 * missing section_syntax_indicator, a bad CRC, a loop that does not divide evenly or overruns,
 * a malformed descriptor loop, a PMT section_number other than 0. *out untouched on failure.
 */
KH_WARN_UNUSED kh_err kh_ts_pat_parse(const uint8_t *s, size_t n, struct kh_ts_pat *out);
KH_WARN_UNUSED kh_err kh_ts_pmt_parse(const uint8_t *s, size_t n, struct kh_ts_pmt *out);
KH_WARN_UNUSED kh_err kh_ts_cat_parse(const uint8_t *s, size_t n, struct kh_ts_cat *out);

/*
 * Build a whole section with its CRC into out (*len bytes). KH_ERR_INVAL for a field out of
 * range (version > 31, PID > 0x1FFF, n above the array), KH_ERR_FORMAT for a descriptor loop
 * that is not well formed, KH_ERR_TOO_LARGE above KH_TS_PSI_MAX, KH_ERR_BUF when cap is short.
 */
KH_WARN_UNUSED kh_err kh_ts_pat_build(const struct kh_ts_pat *pat, uint8_t *out, size_t cap, size_t *len);
KH_WARN_UNUSED kh_err kh_ts_pmt_build(const struct kh_ts_pmt *pmt, uint8_t *out, size_t cap, size_t *len);
KH_WARN_UNUSED kh_err kh_ts_cat_build(const struct kh_ts_cat *cat, uint8_t *out, size_t cap, size_t *len);

#endif
