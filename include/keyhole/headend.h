/*
 * The pay-TV headend (center zone; the protocol design "Pay-TV: ECM and EMM"): the headend key
 * file (the operator's management master, the service keys that seal ECMs, the EMM sequence
 * counters), the making of EMMs for one card, a group or all cards, and the streaming scrambler
 * that turns a clear MPEG-TS programme into a scrambled one with its ECMs, EMMs, a CA-signalling
 * PMT and a CAT. docs/internals/headend.md describes the key file format and the ECM timing.
 *
 * The key file functions do file I/O (they are the headend's store); the scrambler engine does
 * none: packets in, packets out through a sink callback, control words out through an optional
 * callback (a test aid), with a sticky error.
 */
#ifndef KEYHOLE_HEADEND_H
#define KEYHOLE_HEADEND_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/err.h"
#include "keyhole/scramble.h"

/* ---------------------------------------------------------------------------------------- */
/* Key file                                                                                  */

#define KH_HEADEND_KEYFILE_MAX (16u * 1024 * 1024) /* largest key file read */
#define KH_HEADEND_KEY_VERSIONS 2                  /* versions kept per service key id */
#define KH_HEADEND_DEFAULT_CA_SYSTEM_ID 0x4B48u    /* "KH" */

struct kh_headend_keys;

/*
 * New key set in memory: a copy of master, service key id 1 version 1 (32 random bytes), every
 * EMM sequence counter at 0. KH_ERR_NOMEM, or kh_random's error.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_create(const uint8_t master[static 32], struct kh_headend_keys **out);
/*
 * Parse a key file's text (docs/internals/headend.md). KH_ERR_FORMAT for a malformed or
 * inconsistent line, KH_ERR_VERSION for an unknown header version; *line (may be NULL)
 * receives the 1-based number of the offending line (0 when the fault is not one line's: a
 * missing master or seq all). *out only on success.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_parse(const uint8_t *text, size_t len, struct kh_headend_keys **out,
					    size_t *line);
/* kh_keyfile_read (private mode required: KH_ERR_KEYFILE_PERM) and kh_headend_keys_parse. */
KH_WARN_UNUSED kh_err kh_headend_keys_load(const char *path, struct kh_headend_keys **out, size_t *line);
/* The file's text in a new buffer; free it with kh_file_free (it holds keys). */
KH_WARN_UNUSED kh_err kh_headend_keys_format(const struct kh_headend_keys *k, uint8_t **text, size_t *len);
/* Write the key file: create-only (KH_ERR_EXISTS when path exists) or atomic replacement, 0600. */
KH_WARN_UNUSED kh_err kh_headend_keys_save_new(const struct kh_headend_keys *k, const char *path);
KH_WARN_UNUSED kh_err kh_headend_keys_save(const struct kh_headend_keys *k, const char *path);
/* Wipe and free. NULL does nothing. */
void kh_headend_keys_free(struct kh_headend_keys *k);

/*
 * Take an exclusive flock(2) on the key file at path, for a read-modify-write that no other
 * headend process may interleave with. Because kh_headend_keys_save replaces the file (rename),
 * the lock is retaken until it is held on the file that is at path. *fd receives the descriptor
 * to give to kh_headend_keys_unlock. KH_ERR_NOTFOUND when path does not exist, KH_ERR_IO.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_lock(const char *path, int *fd);
void kh_headend_keys_unlock(int fd);

void kh_headend_keys_master(const struct kh_headend_keys *k, uint8_t master[static 32]);
/*
 * The version of the newest revoked list issued from this key file (0: none; a line `revoked N`),
 * which every ECM the scrambler makes then asks cards to hold; _set_ keeps the higher of the two.
 */
uint32_t kh_headend_keys_revoked(const struct kh_headend_keys *k);
void kh_headend_keys_set_revoked(struct kh_headend_keys *k, uint32_t version);
/*
 * The operator's ECM signer or EMM signer (role KH_ROLE_ECM_SIGNER / KH_ROLE_EMM_SIGNER) the key
 * file holds (a line `signer ecm|emm SERIAL KEY CERT`, copied from the authority by `keys init`):
 * its key and serial into sg (may be NULL; a private key: wipe it) and its DER certificate (der,
 * may be NULL; owned by k). KH_ERR_NOTFOUND when the file has none, KH_ERR_INVAL for another role.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_signer(const struct kh_headend_keys *k, enum kh_role role,
					     struct kh_cas_signer *sg, const uint8_t **der, size_t *len);
KH_WARN_UNUSED kh_err kh_headend_keys_set_signer(struct kh_headend_keys *k, enum kh_role role,
						 const struct kh_cas_signer *sg, const uint8_t *der, size_t len);
/* Number of service keys held, and the i-th (ordered by id, then version); key may be NULL. */
size_t kh_headend_keys_count(const struct kh_headend_keys *k);
void kh_headend_keys_at(const struct kh_headend_keys *k, size_t i, uint8_t *id, uint32_t *version,
			uint8_t key[KH_CAS_KEY_LEN]);
/*
 * Service key id at version (0: the highest held). *version_out (may be NULL) says which.
 * KH_ERR_NOTFOUND when the key file has no such key.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_get(const struct kh_headend_keys *k, uint8_t id, uint32_t version,
					  uint8_t key[static KH_CAS_KEY_LEN], uint32_t *version_out);
/*
 * Hold service key id at version with the given 32 bytes (another copy's key: the management
 * center's, `keyhole headend keys import`): an existing id/version is overwritten; when the id
 * then has more than KH_HEADEND_KEY_VERSIONS versions, the oldest are dropped. KH_ERR_INVAL for
 * version 0, KH_ERR_TOO_LARGE when the table is full.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_put(struct kh_headend_keys *k, uint8_t id, uint32_t version,
					  const uint8_t key[static KH_CAS_KEY_LEN]);
/*
 * Add the next version of service key id (version 1 for an id not held yet), 32 fresh random
 * bytes; keeps at most KH_HEADEND_KEY_VERSIONS versions of the id, dropping the oldest.
 * KH_ERR_TOO_LARGE when the version counter would wrap.
 */
KH_WARN_UNUSED kh_err kh_headend_keys_rotate(struct kh_headend_keys *k, uint8_t id, uint32_t *new_version);

/* The last EMM sequence number issued for an address (0 when none yet); for ALL, addr is 0. */
uint32_t kh_headend_keys_seq(const struct kh_headend_keys *k, enum kh_emm_addr type, uint32_t addr);
/* Increment it and return the new value (the seq to put in the next EMM). KH_ERR_TOO_LARGE at
 * 2^32-1, KH_ERR_INVAL for a bad type, KH_ERR_NOMEM. */
KH_WARN_UNUSED kh_err kh_headend_keys_next_seq(struct kh_headend_keys *k, enum kh_emm_addr type, uint32_t addr,
					       uint32_t *seq);
/* Counters held for groups and cards (ALL is always there and not counted), for listing. */
size_t kh_headend_keys_seq_count(const struct kh_headend_keys *k);
void kh_headend_keys_seq_at(const struct kh_headend_keys *k, size_t i, enum kh_emm_addr *type, uint32_t *addr,
			    uint32_t *seq);

/* ---------------------------------------------------------------------------------------- */
/* EMMs                                                                                      */

/* What one EMM should carry. cmds (may be NULL when cmds_len is 0) are ready-made commands
 * (kh_emm_put_*: entitle, revoke, credit, export); the flags add commands from the key file. */
struct kh_headend_emm_req {
	enum kh_emm_addr type;
	uint32_t addr;        /* UA, group number, or 0 for ALL */
	const uint8_t *cmds;
	size_t cmds_len;
	int service_keys;     /* SET_KEY for every service key held */
	int set_group;        /* SET_GROUP group and its key (UNIQUE only) */
	uint32_t group;
	int set_all_key;      /* SET_ALL_KEY (UNIQUE only) */
	uint32_t revoked_version; /* cmds carry a REVOKED LIST of this version: the key file keeps it,
				   * so every ECM made from it afterwards asks cards to hold it */
	int set_signers;      /* SET_SIGNER for the key file's signers (UNIQUE only): bit 0 the ECM
			       * signer, bit 1 the EMM signer (a certificate takes up to ~530 bytes,
			       * so with a long operator name the two need an EMM each) */
};

/*
 * Make one EMM section into out (cap >= KH_EMM_MAX is enough): the commands, sealed under Kp(UA),
 * the group key or the broadcast key diversified from k's master, with the address's next seq
 * (incremented in k, in memory only: the caller saves k before sending the EMM). *seq (may be
 * NULL) receives it. KH_ERR_INVAL: SET_GROUP/SET_ALL_KEY not for a card, no command at all, a
 * bad type; KH_ERR_TOO_LARGE: the commands do not fit one EMM. k is unchanged on failure.
 */
KH_WARN_UNUSED kh_err kh_headend_emm_make(struct kh_headend_keys *k, const struct kh_headend_emm_req *req,
					  uint8_t *out, size_t cap, size_t *len, uint32_t *seq);
/*
 * The durable form: lock the key file at path, load it, make the EMM, save the key file with the
 * new seq (atomically), unlock. The EMM exists only once its seq is on disk, so no two runs ever
 * issue one seq. *line as in kh_headend_keys_load.
 */
KH_WARN_UNUSED kh_err kh_headend_emm_issue(const char *path, const struct kh_headend_emm_req *req, uint8_t *out,
					   size_t cap, size_t *len, uint32_t *seq, size_t *line);
/*
 * Walk a file of concatenated EMM sections: returns 1 with the next section at *sec (*n bytes,
 * checked with kh_emm_peek), 0 at the clean end, or the error of a malformed section (with *off
 * at its offset). off starts at 0.
 */
KH_WARN_UNUSED int kh_headend_emm_next(const uint8_t *file, size_t len, size_t *off, const uint8_t **sec,
				       size_t *n);

/* ---------------------------------------------------------------------------------------- */
/* EMM feed from the management center (src/center/headend/feed.c)                          */

#define KH_HEADEND_FEED_MAX (64u * 1024 * 1024) /* bytes of EMM sections, as an EMM file */

struct kh_headend_feed_cfg {
	const char *center;  /* base URL: https://HOST[:PORT], or http:// to the loopback host */
	const char *cacert;  /* PEM CA certificates to trust for the center; NULL: the system's */
	int insecure_http;   /* allow plain http to any host (a test network only) */
	int64_t since;       /* fetch the EMMs with a queue id above this (0: the whole queue) */
};

/*
 * Whether url may be fetched: https://, or http:// to 127.0.0.1, localhost or [::1], or any
 * http:// when insecure_http. KH_ERR_INVAL otherwise (other schemes, user info, a query).
 */
KH_WARN_UNUSED kh_err kh_headend_feed_url_check(const char *url, int insecure_http);
/*
 * Fetch the center's broadcast EMM queue: GET {center}/v1/emm?since=ID&limit=1000, then again
 * from each page's last_id until a page is empty. Peer and host name are verified over https; no
 * redirects. On success *emm (malloc'd; the caller frees it; NULL when the queue is empty) holds
 * the sections in queue order, concatenated as an EMM file, *emm_len their bytes, *count (may be
 * NULL) how many, *last_id (may be NULL) the last queue id seen (cfg->since when none).
 * Errors: KH_ERR_INVAL (a URL the rules refuse), KH_ERR_TRANSPORT (no answer, or a status other
 * than 200), KH_ERR_FORMAT (not an EMM page, a section that is not one EMM), KH_ERR_TOO_LARGE
 * (more than KH_HEADEND_FEED_MAX bytes), KH_ERR_NOMEM. why (may be NULL) receives one line
 * saying what went wrong, or "" on success.
 */
KH_WARN_UNUSED kh_err kh_headend_feed_fetch(const struct kh_headend_feed_cfg *cfg, uint8_t **emm, size_t *emm_len,
					    size_t *count, int64_t *last_id, char *why, size_t whycap);

/*
 * The continuous feed: a thread that runs kh_headend_feed_fetch every every_s seconds of wall
 * time (monotonic clock; the first poll every_s after the start) from cfg->since, then from the
 * highest queue id fetched so far, and keeps what it got in a mailbox until it is taken. A
 * failed poll is counted, logged (warn, event=headend.emm_poll_failed) and retried at the next
 * period from the same id; a poll that brings EMMs logs event=headend.emm_poll (info). The
 * strings of cfg are copied. KH_ERR_INVAL (every_s 0, a URL the rules refuse), KH_ERR_NOMEM.
 */
struct kh_headend_poller;
KH_WARN_UNUSED kh_err kh_headend_poller_start(const struct kh_headend_feed_cfg *cfg, unsigned every_s,
					      struct kh_headend_poller **out);
/*
 * Empty the mailbox (a mutex, never a request: it does not wait for a poll in flight). Returns 1
 * when EMMs came: *emm (malloc'd, the caller frees it) holds *len bytes of sections in queue
 * order, *count (may be NULL) how many; else 0 with *emm NULL. *last_id (may be NULL) gets the
 * highest queue id fetched so far, *failed (may be NULL) the polls that failed since the last
 * call, why (may be NULL) the last failure's words ("" when none).
 */
int kh_headend_poller_take(struct kh_headend_poller *p, uint8_t **emm, size_t *len, size_t *count, int64_t *last_id,
			   unsigned *failed, char *why, size_t whycap);
/* Stop the thread (a poll in flight is aborted within about a second), drop the mailbox, free.
 * NULL does nothing. */
void kh_headend_poller_stop(struct kh_headend_poller *p);

/*
 * The ECMG-side key feed: GET {center}/v1/service-keys/material (an operator endpoint: token is
 * the operator's bearer token, or NULL when the center wants none) and every key of the answer
 * into k with kh_headend_keys_put (the two newest versions of each id at the center; versions
 * the center dropped are dropped here in turn as newer ones arrive). *count gets how many. The
 * transport rules are kh_headend_feed_fetch's; the answer's bytes, the parsed JSON and the keys
 * are wiped as they are freed (jansson's allocators are swapped for wiping ones during the call:
 * no other thread may use jansson meanwhile). Errors: KH_ERR_INVAL (the URL), KH_ERR_TRANSPORT,
 * KH_ERR_UNAUTHORISED (401/403: no or a wrong token), KH_ERR_FORMAT (not a list of keys: k is
 * then unchanged), KH_ERR_TOO_LARGE (k's table is full; k is then partly updated: do not save
 * it), KH_ERR_NOMEM; why as for kh_headend_feed_fetch.
 */
KH_WARN_UNUSED kh_err kh_headend_material_fetch(const struct kh_headend_feed_cfg *cfg, const char *token,
						struct kh_headend_keys *k, size_t *count, char *why, size_t whycap);

/*
 * The price of pay-per-view event `event` in the center's catalogue: GET {center}/v1/events (an
 * operator endpoint: token as for kh_headend_material_fetch, NULL when the center wants none).
 * KH_ERR_NOTFOUND when the catalogue does not list the event (why says so); KH_ERR_FORMAT when
 * the answer is not a list of events; KH_ERR_INVAL, KH_ERR_TRANSPORT, KH_ERR_UNAUTHORISED,
 * KH_ERR_NOMEM and why as for kh_headend_material_fetch.
 */
KH_WARN_UNUSED kh_err kh_headend_event_price(const struct kh_headend_feed_cfg *cfg, const char *token, uint32_t event,
					     uint32_t *price, char *why, size_t whycap);

/* ---------------------------------------------------------------------------------------- */
/* The scrambler's input (src/center/headend/input.c)                                        */

/*
 * Finding packets in a byte stream that may be damaged: leading garbage, a byte lost or added,
 * a final packet cut short. The cadence is taken (again) where three sync bytes (0x47) stand 188
 * bytes apart; while in step, a packet goes out only once the sync byte of the next one is seen
 * (or the input ends right after it), so a packet that lost or gained bytes is thrown away with
 * the garbage around it rather than passed on. At the end of the input two whole packets in step
 * up to the end are enough to take the cadence. Plain data, no allocation; zero it (or
 * kh_headend_sync_init) to start.
 */
struct kh_headend_sync {
	int locked;        /* in step with the 188-byte cadence */
	uint64_t packets;  /* packets found */
	uint64_t skipped;  /* bytes thrown away to find the cadence again (garbage, damaged packets) */
	uint64_t gaps;     /* places where bytes were thrown away */
	uint64_t cut;      /* bytes of a final packet cut short (0: none) */
	int in_gap;        /* (internal) the last bytes looked at were thrown away */
};

void kh_headend_sync_init(struct kh_headend_sync *s);
/*
 * Look at buf[0..len), the bytes not consumed yet (oldest first); eof: no more will come.
 * Returns how many bytes of the front are consumed; among them, *n whole packets start at
 * buf + *off (contiguous, each beginning with 0x47), the rest was skipped. A return of 0 (only
 * when !eof) asks for more bytes after these: keep room for at least 3 * 188 + 1. With eof each
 * call consumes at least one byte while len > 0, so calling until nothing is left ends.
 */
size_t kh_headend_sync_find(struct kh_headend_sync *s, const uint8_t *buf, size_t len, int eof, size_t *off,
			    size_t *n);

/*
 * What PIDs an input uses, from its first packets (before the scrambler starts, to choose an
 * ECM and an EMM PID that collide with nothing): every PID that carries packets, and what the
 * PSI says: the PAT's PMT PIDs (and network PID), every programme's PCR PID, components and the
 * PIDs its CA descriptors name (another CA system's ECMs), and the EMM PIDs of the CAT.
 */
enum kh_headend_pid_use {
	KH_HEADEND_PID_FREE = 0,
	KH_HEADEND_PID_CARRIED,   /* packets on it, named by no table seen */
	KH_HEADEND_PID_CA,        /* named by a CA descriptor (PMT or CAT) */
	KH_HEADEND_PID_PCR,       /* a programme's PCR PID */
	KH_HEADEND_PID_COMPONENT, /* an elementary stream of a programme */
	KH_HEADEND_PID_NIT,       /* the PAT's network PID */
	KH_HEADEND_PID_PMT,       /* a PMT PID of the PAT */
};

struct kh_headend_census;

KH_WARN_UNUSED kh_err kh_headend_census_new(struct kh_headend_census **out);
void kh_headend_census_free(struct kh_headend_census *c);
/* Take n whole packets (n * 188 bytes); packets that do not parse are ignored. */
void kh_headend_census_feed(struct kh_headend_census *c, const uint8_t *pkts, size_t n);
/* 1 once a PAT has been seen and the PMT of every programme it lists. */
int kh_headend_census_complete(const struct kh_headend_census *c);
/* What the input uses pid for (the most telling use); *program (may be NULL) the programme
 * it belongs to (0 when none, or not known). */
enum kh_headend_pid_use kh_headend_census_use(const struct kh_headend_census *c, uint16_t pid, uint16_t *program);
/* In words, for a message: "a component", "the PCR PID", ... */
const char *kh_headend_pid_use_name(enum kh_headend_pid_use u);
/*
 * The first PID from want upwards that the input does not use and that is not avoid, wrapping
 * after 0x1FFE to 0x0020 (0x0010 to 0x001F are the DVB tables' PIDs: never picked). want must be
 * from 0x0020 to 0x1FFE (KH_ERR_INVAL). KH_ERR_NOTFOUND when every PID is in use.
 */
KH_WARN_UNUSED kh_err kh_headend_census_pick(const struct kh_headend_census *c, uint16_t want, uint16_t avoid,
					     uint16_t *pid);

/* ---------------------------------------------------------------------------------------- */
/* Streaming scrambler                                                                       */

#define KH_HEADEND_PERIOD_MIN 5  /* seconds */
#define KH_HEADEND_PERIOD_MAX 30

/*
 * Where the packets the headend adds (ECMs, EMMs, the CAT, a PMT grown past the input's) go.
 * INSERT: between the input's packets, when they are due (a variable-bitrate input: the stream
 * grows, its PCRs keep their values). REPLACE: in place of the input's null packets (and of the
 * input packets the headend drops), so a constant-bitrate multiplex keeps its size and every PCR
 * its packet index and value; a packet that finds no null packet within one ECM interval of
 * stream time (or a period whose ECM is not out when its first packet must be scrambled) stops
 * the run with KH_ERR_TOO_LARGE and a message saying the null bandwidth needed and available; the
 * components pass in clear until ECM 0 is out (the first packets after the PMT). GROW: as
 * REPLACE, but a packet that finds no null packet in time is inserted, and every PCR from the
 * second on is restamped from its output packet index at the rate measured between the first two.
 */
enum kh_headend_nulls { KH_HEADEND_NULL_INSERT = 0, KH_HEADEND_NULL_REPLACE, KH_HEADEND_NULL_GROW };

/* Components of a programme the scrambler scrambles (TSDuck's choice: video, audio and
 * subtitles by default; data and other private streams only when asked). */
#define KH_HEADEND_C_VIDEO 0x01u
#define KH_HEADEND_C_AUDIO 0x02u
#define KH_HEADEND_C_SUBTITLES 0x04u
#define KH_HEADEND_C_DATA 0x08u /* every other elementary stream */
#define KH_HEADEND_C_DEFAULT (KH_HEADEND_C_VIDEO | KH_HEADEND_C_AUDIO | KH_HEADEND_C_SUBTITLES)
#define KH_HEADEND_C_ALL 0x0Fu

#define KH_HEADEND_SERVICES_MAX 16 /* services scrambled in one run */

/* One service (programme) of the multiplex to scramble, with its own keys and ECMs. */
struct kh_headend_service {
	uint16_t program;          /* program_number; 0 (first service only): the first non-zero one in the PAT */
	enum kh_scr_alg alg;
	int csa_reduce;            /* CSA2: reduce CWs to 48 bits (kh_scr_cw_reduce) */
	uint8_t access;            /* KH_ECM_PRODUCT or KH_ECM_EVENT */
	uint32_t product;
	uint32_t event, price;
	uint16_t ecm_pid;          /* 0x0010..0x1FFE, distinct from every other service's and the EMM PID */
	unsigned components;       /* KH_HEADEND_C_*: which components to scramble (0: the default) */
	uint8_t key_id;            /* service key sealing the ECMs */
	uint32_t key_version;
	uint8_t service_key[KH_CAS_KEY_LEN];
};

struct kh_headend_cfg {
	struct kh_headend_service svc[KH_HEADEND_SERVICES_MAX];
	unsigned nsvc;             /* services in svc (1..KH_HEADEND_SERVICES_MAX) */
	struct kh_cas_signer ecm_signer; /* signs every ECM (the key file's `signer ecm`) */
	uint32_t revoked_version;        /* the revoked list every card must hold (0: none) */
	uint8_t ecm_flags;               /* KH_ECM_F_*: the operator's policy, signed in every ECM */
	unsigned period_s;         /* crypto period, KH_HEADEND_PERIOD_MIN..MAX seconds */
	unsigned lead_ms;          /* ECM k goes out this long before period k (below period) */
	unsigned ecm_interval_ms;  /* ECM repetition, stream time (>= 10) */
	unsigned emm_interval_ms;  /* EMM cycle, stream time (>= 10) */
	uint16_t emm_pid;          /* 0x0010..0x1FFE */
	uint16_t ca_system_id;
	uint64_t time;             /* broadcast time of period 0, Unix seconds */
	const uint8_t *emm;        /* concatenated EMM sections (copied), may be NULL */
	size_t emm_len;
	enum kh_headend_nulls nulls; /* where the CA packets go (below) */
};

/* Where output packets go: n whole packets (n * 188 bytes). A non-KH_OK return stops the engine
 * (it becomes its sticky error). */
typedef kh_err (*kh_headend_sink)(void *ctx, const uint8_t *pkts, size_t n);
/* The control word of crypto period cp of service svc (an index into cfg.svc), called once per
 * period in period order before it is used (a test aid: `--cw-log`). cw is wiped after the call. */
typedef void (*kh_headend_cw_fn)(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, size_t len);

/*
 * An outside ECM generator (a DVB SimulCrypt ECMG, reached by the caller as the SCS: the
 * scrambler's `--ecmg`). With one set, the engine makes no ECM itself: for crypto period cp of
 * service svc (an index into cfg.svc) it draws CW_cp and CW_{cp+1} and asks for the ECM that
 * carries them (CW_per_msg 2, lead_CW 1: TS 103 197's CW_provision of CP cp), at stream time
 * start(cp) + delay_ms (the ECMG's delay_start; cp 0 at the start, before any packet is
 * scrambled). fn writes the ECM as one whole section into ecm (cap bytes, KH_TS_PRIVATE_MAX)
 * and returns KH_OK, or any error: the ECM is late, and the engine goes on in degraded mode
 * (the current control word and the ECM on air stay; the next period keeps CW_cp and its parity
 * until an ECM carrying CW_{cp+1} is out), asking again every ECM interval; stats count it. The
 * call is synchronous: fn waits for the ECMG (at most its max_comp_time, the caller's choice).
 */
typedef kh_err (*kh_headend_ecm_fn)(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, const uint8_t *next,
				    size_t cw_len, uint8_t *ecm, size_t cap, size_t *len);

struct kh_headend;

/*
 * New engine. The config is checked (KH_ERR_INVAL for a value out of range), the EMM file too
 * (its error, a malformed section); the service key is copied and cfg may be wiped after.
 * KH_ERR_NOMEM, KH_ERR_CRYPTO.
 */
KH_WARN_UNUSED kh_err kh_headend_new(const struct kh_headend_cfg *cfg, kh_headend_sink sink, void *sink_ctx,
				     struct kh_headend **out);
/*
 * Add EMM sections (concatenated, checked like cfg.emm; copied) to the carousel while the
 * engine runs (the continuous feed from the center). They go at the end of the cycle, and the
 * next EMMs inserted are these, in order, before the cycle resumes where it was; before the
 * start of the output they simply join the EMMs sent once at the start. KH_ERR_TOO_LARGE when
 * the carousel would exceed KH_HEADEND_FEED_MAX bytes (nothing added), a malformed section's
 * error (nothing added), KH_ERR_NOMEM. Does not touch the sticky error.
 */
KH_WARN_UNUSED kh_err kh_headend_emm_add(struct kh_headend *h, const uint8_t *emm, size_t len);
/* Optional: the control-word callback (set before the first feed). */
void kh_headend_set_cw_fn(struct kh_headend *h, kh_headend_cw_fn fn, void *ctx);
/* Optional: take every ECM from fn (above), delay_ms the ECMG's delay_start (-30000..30000 ms,
 * KH_ERR_INVAL otherwise). Set before the first feed. */
KH_WARN_UNUSED kh_err kh_headend_set_ecm_fn(struct kh_headend *h, kh_headend_ecm_fn fn, void *ctx, int delay_ms);
/* Wipe (keys, CWs) and free. NULL does nothing. */
void kh_headend_free(struct kh_headend *h);

/* Component packets in a row arriving scrambled that make the programme count as scrambled
 * already (fewer are damage: dropped and counted). */
#define KH_HEADEND_SCRAMBLED_RUN 32

/*
 * Feed n whole TS packets (n * 188 bytes). Output goes to the sink in chunks (a few hundred
 * packets; fixed buffers, whatever the length of the stream). What one damaged packet brings is
 * dropped and counted (kh_headend_stats), never an error: a packet that does not parse
 * (damaged), a component packet that arrives scrambled (scrambled_in), a packet on the ECM or
 * EMM PID that no table named (foreign). Errors are sticky: KH_ERR_FORMAT (the programme is
 * scrambled already: KH_HEADEND_SCRAMBLED_RUN component packets in a row arrive scrambled; the
 * PAT puts the PMT on a reserved PID), KH_ERR_NOTFOUND (the program is not in the PAT),
 * KH_ERR_EXISTS (the ECM or EMM PID is used by the PAT or the PMT), the sink's or a crypto
 * error. kh_headend_why says which in words.
 */
KH_WARN_UNUSED kh_err kh_headend_feed(struct kh_headend *h, const uint8_t *pkts, size_t n);
/* End of input: flush what is buffered. KH_ERR_NOTFOUND when no PMT of the program was seen. */
KH_WARN_UNUSED kh_err kh_headend_finish(struct kh_headend *h);
/* A one-line description of the sticky error (no secret in it), or "" when there is none. */
const char *kh_headend_why(const struct kh_headend *h);

struct kh_headend_stats {
	uint64_t in, out;       /* packets */
	uint64_t scrambled;     /* component packets with a payload, scrambled */
	uint64_t dropped;       /* input packets not passed on (before the PMT; the input's PMT and CAT) */
	uint64_t damaged;       /* input packets that are not TS packets (dropped) */
	uint64_t scrambled_in;  /* component packets that arrived scrambled (dropped) */
	uint64_t foreign;       /* input packets on the ECM or EMM PID (dropped: the PID is ours) */
	uint64_t ecm, emm, psi; /* sections inserted */
	uint64_t nulls_in;      /* null packets in the input */
	uint64_t replaced;      /* packets of ours that took the place of a null or dropped packet */
	uint64_t inserted;      /* packets of ours added to the stream in REPLACE/GROW (GROW only) */
	uint64_t before_ecm;    /* REPLACE: component packets scrambled before ECM 0 was out (a receiver
				 * starts at ECM 0, as one tuning in would) */
	uint64_t restamped;     /* GROW: PCRs rewritten */
	uint64_t ecm_late;      /* outside ECMs (kh_headend_set_ecm_fn) asked for and not had */
	uint64_t degraded;      /* period starts where a service kept its control word (no ECM out with
				 * the next one) */
	uint32_t period;        /* crypto period of the last packet (of the first service) */
	uint64_t stream_ms;     /* stream time since the first PCR */
};
void kh_headend_stats(const struct kh_headend *h, struct kh_headend_stats *st);

/* One service's share. */
struct kh_headend_svc_stats {
	uint16_t program;       /* its program_number (0 until the PAT named it) */
	uint16_t ecm_pid;
	unsigned components;    /* component PIDs scrambled */
	uint64_t scrambled;     /* component packets scrambled */
	uint64_t ecm;           /* ECM sections out */
	uint64_t degraded;      /* period starts where it kept its control word */
	uint32_t period;        /* crypto period in use (outside ECMs: the CP number) */
};
/* KH_ERR_INVAL when i is not a service. */
KH_WARN_UNUSED kh_err kh_headend_svc_stats(const struct kh_headend *h, unsigned i, struct kh_headend_svc_stats *st);

#endif
