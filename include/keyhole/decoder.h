/*
 * The decoder engine (the protocol design "Pay-TV: ECM and EMM"; docs/internals/decoder.md):
 * takes a scrambled MPEG-TS, follows PAT -> PMT -> ECM PID and CAT -> EMM PID, hands ECMs and
 * EMMs to the card through a kh_host_cas session (decoder -> CAM -> card, seed 000), sets the
 * control words the card answers into a descrambler, and writes a clear TS of the chosen
 * services (one or several programmes of a multiplex, each with its own ECM PID, algorithm and
 * keys): ECM and EMM packets and the CAT dropped, the PAT rewritten to list only the programmes
 * played, each PMT rewritten without CA_descriptors and scrambling_descriptors, every component
 * packet descrambled with its own programme's keys valid at its position in the stream, or
 * dropped when its crypto period has no key. A packet is never written still scrambled, nor
 * descrambled with the key of another crypto period or another programme. EMMs (one EMM PID,
 * named by the CAT) reach the card once, whatever the number of programmes.
 *
 * The engine does no file or network I/O of its own: bytes in (kh_decoder_write, which finds the
 * 188-byte packet cadence and finds it again after damage) or aligned packets in
 * (kh_decoder_feed), packets out through a callback, viewer messages through another; the card
 * is reached only through the session the caller set up. Memory is fixed at kh_decoder_new
 * (about 440 KB): section assemblers, one batch of KH_DECODER_BATCH packets, the input window
 * of kh_decoder_write, the state of up to KH_DECODER_PROGRAMS programmes (the ECMs the card
 * refused, the crypto period of each component), the per-PID counts.
 *
 * Not thread-safe; one engine per stream.
 */
#ifndef KEYHOLE_DECODER_H
#define KEYHOLE_DECODER_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_DECODER_CA_SYSTEM_ID 0x4B48u /* "KH" */
/* Packets descrambled together (kh_scr_descramble batches within a call). */
#define KH_DECODER_BATCH 256
/*
 * The card's own EMMs it answered EMM_GAP (an earlier one is missing), held to be passed again
 * once the gap is filled: at most this many, each at most KH_EMM_MAX bytes, memory taken at
 * kh_decoder_new. When full, the lowest sequence numbers are kept (the next ones the card needs).
 */
#define KH_DECODER_EMM_PENDING 8
/*
 * ECM sections the card refused, remembered byte for byte so that their repetitions are not
 * passed again (forgotten when the card accepts an EMM, pairs anew or the programme changes).
 */
#define KH_DECODER_REFUSED 8

/* Programmes played at once (the rest of a larger multiplex is left out, and said so). */
#define KH_DECODER_PROGRAMS 16
/* PIDs counted one by one (kh_decoder_pid_stats); PIDs beyond are counted in pids_uncounted only. */
#define KH_DECODER_PIDS 64

/* kh_decoder_config.flags */
/* On NOT_PURCHASED, buy the event the ECM names (once per event) and pass the ECM again. */
#define KH_DECODER_F_BUY 0x1u
/*
 * Talk to no card: follow the tables and keep the service's latest ECM (kh_decoder_last_ecm)
 * only; component packets are all dropped. Used to find the event to buy before playing.
 */
#define KH_DECODER_F_PASSIVE 0x2u

struct kh_host_cas;
struct kh_decoder;

/*
 * A message for the viewer (one line, no newline, valid during the call only). reason is the
 * code behind it (KH_ERR_NO_RIGHT, KH_ERR_CHAN_AUTH, ...; KH_OK for good news such as
 * "access granted" or a purchase made).
 */
typedef void (*kh_decoder_notify_fn)(void *ctx, kh_err reason, const char *msg);
/* kh_decoder_changed_fn what */
#define KH_DECODER_CHANGED_EMM 1u      /* the card accepted an EMM */
#define KH_DECODER_CHANGED_PURCHASE 2u /* the card made an impulse purchase (KH_DECODER_F_BUY) */
#define KH_DECODER_CHANGED_PERIOD 3u   /* export_every_ms of stream time went by (nothing changed) */
/*
 * The card's own data changed, or a period of stream time went by (seed 001: the moments to
 * refresh the decoder's memory M1, "each time the content of M2 is modified, or at regular
 * interval", see include/keyhole/m1.h). Called right after the card's answer while a section is
 * being handled, or at the PCR packet that ended the period; the callee may talk to the card
 * through the session (cfg.cas->card, e.g. kh_m1_export) but must not call the engine. It cannot
 * fail the stream.
 */
typedef void (*kh_decoder_changed_fn)(void *ctx, unsigned what);
/* n whole clear packets (n * 188 bytes). A non-KH_OK return becomes the engine's sticky error. */
typedef kh_err (*kh_decoder_out_fn)(void *ctx, const uint8_t *pkts, size_t n);

struct kh_decoder_config {
	struct kh_host_cas *cas;   /* initialised (kh_host_cas_init), connected or not; not owned */
	/*
	 * The programmes to play: programs[0..nprograms-1] (program_numbers, played whatever the
	 * card says), or, when nprograms is 0, program alone when it is not 0. With neither: every
	 * programme of the PAT (up to KH_DECODER_PROGRAMS, in PAT order) except those whose ECMs the
	 * card refuses for lack of rights before it answered any of them (the programme is then left
	 * out of the output and the viewer told once; docs/internals/decoder.md, "Several
	 * programmes"). With KH_DECODER_F_PASSIVE or a ladder session (KH_HOST_CAS_LADDER: the decoder
	 * module holds one key pair) and neither: the first programme of the PAT only; a ladder
	 * session with nprograms > 1 is KH_ERR_INVAL.
	 */
	uint16_t program;
	uint16_t programs[KH_DECODER_PROGRAMS];
	unsigned nprograms;
	uint16_t ca_system_id;     /* 0 = KH_DECODER_CA_SYSTEM_ID */
	unsigned flags;            /* KH_DECODER_F_* */
	kh_decoder_notify_fn notify; /* NULL: messages are only logged */
	kh_decoder_out_fn out;     /* NULL: output is discarded */
	kh_decoder_changed_fn changed; /* NULL: not wanted */
	void *ctx;                 /* passed to the callbacks */
	/*
	 * Tell changed(KH_DECODER_CHANGED_PERIOD) every this many ms of stream time (0: never; not
	 * in PASSIVE mode). Stream time is the service's PCR (the PMT's PCR_PID), counted as the
	 * headend counts it: from the first PCR, by the difference of consecutive PCRs modulo the
	 * 2^33 wrap; a PCR with discontinuity_indicator set, a step backwards or a step over 60 s
	 * does not advance it (a splice, a loop of the source). The first tick is one period after
	 * the first PCR; a PCR gap over several periods gives one tick, not a burst.
	 */
	uint32_t export_every_ms;
};

struct kh_decoder_stats {
	uint64_t pkts_in, pkts_out; /* pkts_in: packets in sync (kh_decoder_write) or fed */
	uint64_t descrambled;    /* scrambled component packets written clear */
	uint64_t dropped_nokey;  /* scrambled component packets dropped: no key for their crypto period */
	uint64_t dropped_noecm;  /* of those, packets of a crypto period whose ECM did not come (lost or
				  * damaged) although an earlier period's did: never given an older key */
	uint64_t dropped_ca;     /* ECM, EMM and CAT packets (by design), PMT packets (rewritten) */
	uint64_t dropped_bad;    /* unparsable packets, TSC 01, scrambled packets of other PIDs */
	uint64_t skipped_bytes;  /* kh_decoder_write: bytes outside the packet cadence (garbage, a
				  * packet cut by a lost byte, a cut last packet) */
	uint32_t sync_lost;      /* kh_decoder_write: times the cadence was lost and looked for again */
	uint32_t ecm_passed, ecm_answered, ecm_refused;
	uint32_t emm_passed, emm_accepted;
	uint32_t emm_gaps;       /* unique EMMs the card answered EMM_GAP (an earlier one missing) */
	uint32_t emm_pending;    /* such EMMs held now, to pass again once the gap is filled */
	uint32_t emm_unheld;     /* EMM_GAP answers not held or pushed out (the set was full) */
	uint32_t reconnects;     /* kh_host_cas_connect attempts after a channel failure */
	uint32_t purchases;      /* automatic purchases made (KH_DECODER_F_BUY) */
	uint32_t periods;        /* changed(KH_DECODER_CHANGED_PERIOD) calls (export_every_ms) */
	uint64_t dropped_left;   /* packets of programmes left out (no rights) or not chosen: their PMT,
				  * ECM and component PIDs */
	uint64_t pkts_uncounted; /* packets of PIDs beyond the KH_DECODER_PIDS counted one by one */
	uint32_t programs;       /* programmes in the output now (listed in the PAT written) */
	uint32_t left_out;       /* programmes left out for lack of rights now (an EMM the card
				  * accepts takes them back) */
	uint64_t stream_ms;      /* stream time since the first PCR of the first programme played */
	/* the first programme played (0xFFFF while unknown) */
	uint16_t program, pmt_pid, ecm_pid, emm_pid;
};

/* kh_decoder_pid_stat.role */
enum kh_decoder_role {
	KH_DECODER_ROLE_OTHER = 0, /* in no programme played (SI, another programme's clear PID) */
	KH_DECODER_ROLE_PSI,       /* PAT, CAT, a PMT */
	KH_DECODER_ROLE_ECM,
	KH_DECODER_ROLE_EMM,
	KH_DECODER_ROLE_VIDEO,
	KH_DECODER_ROLE_AUDIO,
	KH_DECODER_ROLE_DATA, /* a component of another stream_type (subtitles, private data) */
	KH_DECODER_ROLE_PCR,  /* the PCR PID when it carries no component */
};

/* What happened to the packets of one PID. */
struct kh_decoder_pid_stat {
	uint16_t pid;
	uint16_t program; /* the programme it belongs to (its latest role), 0: none */
	uint8_t role;     /* enum kh_decoder_role */
	uint64_t in;      /* packets in */
	uint64_t out;     /* packets written (rewritten tables included) */
	uint64_t descrambled; /* scrambled packets written clear */
	uint64_t dropped; /* packets in not written as they came (ECM/EMM/CAT, a PMT replaced by its
			   * rewrite, no key, damaged, a programme left out) */
};

/*
 * New engine for cfg (copied; cfg->cas must outlive the engine). *out on success.
 * KH_ERR_INVAL: cas NULL, or an unknown flag; KH_ERR_NOMEM.
 */
KH_WARN_UNUSED kh_err kh_decoder_new(const struct kh_decoder_config *cfg, struct kh_decoder **out);
/* Wipe the keys and free. NULL does nothing. Does not flush: call kh_decoder_finish first. */
void kh_decoder_free(struct kh_decoder *d);

/*
 * Feed n packets (n * 188 bytes; any n, 0 included), aligned: a packet that does not start with
 * the sync byte is dropped and counted (dropped_bad). Packets are written (through cfg->out) in
 * input order, possibly later: up to KH_DECODER_BATCH are held, and all are written before keys
 * change and by kh_decoder_finish. Card refusals and channel failures are not errors (the
 * viewer is notified, the stream goes on). Errors: the sticky error of a failed output
 * callback, KH_ERR_NOMEM / KH_ERR_CRYPTO from the descrambler; after one, every call returns it.
 */
KH_WARN_UNUSED kh_err kh_decoder_feed(struct kh_decoder *d, const uint8_t *pkts, size_t n);
/*
 * Write n bytes of a transport stream (any n, cut anywhere). The engine locks on the 188-byte
 * cadence where three sync bytes (0x47) follow each other 188 bytes apart, takes a packet only
 * when the next one starts with a sync byte too, and when the cadence breaks (a lost or
 * inserted byte, garbage) drops the packet in doubt and looks for three again; bytes outside
 * the cadence are counted (skipped_bytes, sync_lost). The last bytes wait for the next call or
 * for kh_decoder_finish. Errors as kh_decoder_feed. Use either this or kh_decoder_feed for a
 * stream, not both.
 */
KH_WARN_UNUSED kh_err kh_decoder_write(struct kh_decoder *d, const uint8_t *buf, size_t n);
/*
 * End of stream: the bytes kh_decoder_write still holds are taken (the last packet needs no
 * successor; a stream that never locked is taken from two packets on), then every packet held
 * is written out. Same errors as kh_decoder_feed. stats.pkts_in == 0 afterwards means the input
 * held no transport stream at all.
 */
KH_WARN_UNUSED kh_err kh_decoder_finish(struct kh_decoder *d);

/*
 * The card (or CAM) in a reader was pulled, swapped or lost with its reader: every packet held
 * is written out under the keys it came with, then every programme's keys and the channel are
 * dropped, so no control word of the old channel serves a packet fed after this call. The next
 * ECM (a repetition of the one answered last included) pairs again with whatever card is there.
 * Errors as kh_decoder_feed.
 */
KH_WARN_UNUSED kh_err kh_decoder_drop_channel(struct kh_decoder *d);

void kh_decoder_get_stats(const struct kh_decoder *d, struct kh_decoder_stats *st);

/*
 * The counted PIDs in order of their first packet: copies up to cap of them to out and returns
 * how many there are (at most KH_DECODER_PIDS).
 */
size_t kh_decoder_pid_stats(const struct kh_decoder *d, struct kh_decoder_pid_stat *out, size_t cap);
/* "video", "audio", "ECM", ... */
const char *kh_decoder_role_name(unsigned role);

/*
 * The latest ECM section seen for the (first) service (whole section, at most 256 bytes): returns 1 and
 * copies it to buf (*len bytes), 0 when none was seen yet or cap is short.
 */
int kh_decoder_last_ecm(const struct kh_decoder *d, uint8_t *buf, size_t cap, size_t *len);

#endif
