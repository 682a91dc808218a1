/*
 * The engine of `keyhole ts inspect`: one pass over a transport stream's bytes, bounded memory,
 * no key. It finds packets (and finds them again after garbage), counts every PID, reads PCRs,
 * assembles PAT, CAT, PMT and the sections on the CA PIDs of one CA system, and reads the clear
 * headers of Keyhole ECMs and EMMs (kh_ecm_peek, kh_emm_peek). cmd_ts.c prints what it found.
 */
#ifndef KH_CLI_TS_INSPECT_H
#define KH_CLI_TS_INSPECT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/ts.h"

#define KH_TSI_MAX_ES 64       /* components kept per programme (the rest counted) */
#define KH_TSI_MAX_CA 32       /* CA descriptors kept per programme, and in the CAT */
#define KH_TSI_MAX_ASM 256     /* PIDs whose sections are assembled */
#define KH_TSI_MAX_CAPIDS 32   /* CA PIDs whose ECMs/EMMs are decoded */
#define KH_TSI_MAX_GAPS 4096   /* ECM intervals kept per CA PID for the median */

/* Roles of a PID, as the tables name it. */
enum {
	KH_TSI_R_PAT = 1u << 0,
	KH_TSI_R_CAT = 1u << 1,
	KH_TSI_R_PMT = 1u << 2,
	KH_TSI_R_ES = 1u << 3,
	KH_TSI_R_PCR = 1u << 4,
	KH_TSI_R_ECM = 1u << 5,   /* named by a PMT's CA descriptor of our CA system */
	KH_TSI_R_EMM = 1u << 6,   /* named by the CAT's CA descriptor of our CA system */
	KH_TSI_R_CA = 1u << 7,    /* named by another CA system's descriptor */
	KH_TSI_R_NIT = 1u << 8,
};

struct kh_tsi_ca {
	uint16_t es_pid;  /* the component it is on; 0 with es_level 0 */
	uint8_t es_level; /* 0: programme level (or CAT), 1: component */
	uint16_t sysid;
	uint16_t capid;
	uint8_t priv_len;
};

struct kh_tsi_es {
	uint16_t pid;
	uint8_t type;
	const char *name; /* a static string */
};

struct kh_tsi_prog {
	uint16_t number;
	uint16_t pmt_pid;
	uint16_t pcr_pid;
	uint8_t have_pmt;
	size_t nes, es_dropped;
	struct kh_tsi_es es[KH_TSI_MAX_ES];
	size_t nca;
	struct kh_tsi_ca ca[KH_TSI_MAX_CA];
};

struct kh_tsi_pid {
	uint64_t pkts;
	uint64_t sc[4];      /* transport_scrambling_control of packets with a payload */
	uint64_t af_only;    /* packets without payload (not counted in sc) */
	uint64_t invalid;    /* a sync byte but not a valid packet */
	uint64_t cc_errors;
	uint64_t psi_errors; /* PSI sections that did not assemble, check or parse */
	int last_cc;
	uint8_t dup;
	unsigned role;
	uint16_t prog;       /* programme of a component (first one naming it) */
	const char *name;    /* stream type name of a component */
	uint8_t stype;
	/* PCR: ticks of 27 MHz and packets between consecutive PCRs (discontinuities left out) */
	uint8_t pcr_seen;
	uint64_t pcr_last, pcr_last_idx, pcr_ticks, pcr_pkts, pcrs;
};

struct kh_tsi_ecm {
	uint8_t table_id, key_id;
	uint32_t key_version, cp, signer;
};

struct kh_tsi_emm {
	uint8_t table_id, addr_type;
	uint32_t addr, seq, signer;
};

struct kh_tsi_capid {
	uint16_t pid;
	uint64_t sections, malformed, other;
	uint64_t ecms, cp_changes;
	struct kh_tsi_ecm ecm_first, ecm_last;
	uint64_t last_ecm_idx;
	size_t ngaps;
	uint32_t gaps[KH_TSI_MAX_GAPS]; /* packets between consecutive ECMs */
	uint64_t emms[3];
	struct kh_tsi_emm emm_first[3], emm_last[3];
};

struct kh_tsi_asm;

struct kh_tsi {
	uint16_t casid; /* the CA system whose ECMs and EMMs are decoded */
	/* input */
	uint8_t *buf;
	size_t have, cap;
	int synced;
	uint64_t bytes, skipped, truncated, npkts, invalid, tei;
	/* what was found */
	int first_pcr_pid; /* -1: none */
	struct kh_tsi_pid *pids; /* 8192 */
	size_t nprogs;
	struct kh_tsi_prog *progs; /* KH_TS_PAT_MAX_PROGRAMS */
	uint8_t have_pat, have_cat;
	uint16_t tsid;
	size_t ncat;
	struct kh_tsi_ca cat[KH_TSI_MAX_CA];
	size_t ncapids;
	struct kh_tsi_capid *capids[KH_TSI_MAX_CAPIDS];
	size_t nasm;
	struct kh_tsi_asm *asms[KH_TSI_MAX_ASM];
	int16_t *asm_of; /* 8192: index into asms or -1 */
	uint8_t sec[KH_TS_PRIVATE_MAX];
};

/* KH_OK, or KH_ERR_NOMEM. */
kh_err kh_tsi_init(struct kh_tsi *t, uint16_t casid);
void kh_tsi_free(struct kh_tsi *t);
/* Take n more bytes of the stream (any amount; packets are found across calls). */
kh_err kh_tsi_feed(struct kh_tsi *t, const uint8_t *p, size_t n);
/* The stream ended: what is left is a packet cut short (counted in truncated) or garbage. */
void kh_tsi_finish(struct kh_tsi *t);
/* Before t's first feed: decode from the start the CA PIDs of our system that from (a finished
 * pass over the same stream) found, so an ECM or EMM before the table naming its PID counts. */
void kh_tsi_prime(struct kh_tsi *t, const struct kh_tsi *from);

/* Results, once finished. */
/* The mux bitrate (bit/s) from the first PCR PID's PCRs; 0 when there is none (or one PCR). */
double kh_tsi_mux_rate(const struct kh_tsi *t);
/* A PID's bitrate: its share of the packets at its programme's PCR rate (or the mux rate). */
double kh_tsi_pid_rate(const struct kh_tsi *t, uint16_t pid);
/* The median ECM interval on c in ms (packet time at the mux rate); -1 when unknown. */
double kh_tsi_ecm_interval_ms(const struct kh_tsi *t, struct kh_tsi_capid *c);
/* "clear", "scrambled even", "scrambled odd", "scrambled even+odd", "mixed", or "none" (no
 * packet with a payload). */
const char *kh_tsi_scrambling_state(const struct kh_tsi_pid *p);
/* A short name of a PID's role: "PAT", "PMT", "ECM", a component's stream type, ... */
const char *kh_tsi_role_name(const struct kh_tsi *t, uint16_t pid);
const char *kh_tsi_emm_type_name(unsigned addr_type);

#endif
