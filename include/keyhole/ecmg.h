/*
 * The ECMG (center zone): the ECM generator side of the DVB SimulCrypt ECMG<->SCS interface
 * (ETSI TS 103 197 §5), protocol versions 2 and 3. An SCS opens a channel, streams within it, and
 * sends CW_provision for each crypto period; the ECMG answers ECM_response with a Keyhole ECM
 * (include/keyhole/cas.h) sealed under the configured service key and signed by the ECM signer,
 * as the headend's scrambler makes it. docs/internals/ecmg.md describes the state machine.
 *
 * This is the protocol engine only: one whole message in (the caller frames the TCP stream with
 * kh_sim_frame), at most one answer out, a fixed-size state per connection. Nothing here
 * allocates or does I/O.
 *
 * Access criteria in CW_provision (optional; otherwise the configured product or event):
 *   01 | u32 product id                  (5 bytes, a subscription product)
 *   02 | u32 event id | u32 price        (9 bytes, a pay-per-view event)
 * anything else is refused with error_status invalid_value.
 */
#ifndef KEYHOLE_ECMG_H
#define KEYHOLE_ECMG_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/cas.h"
#include "keyhole/err.h"
#include "keyhole/simulcrypt.h"

#define KH_ECMG_MAX_STREAMS 16u /* streams per channel (announced as max_streams) */
#define KH_ECMG_AC_PRODUCT 0x01u
#define KH_ECMG_AC_EVENT 0x02u
/* Largest answer: an ECM_response with an ECM as TS packets (two packets) and the header. */
#define KH_ECMG_OUT_MAX 512u

struct kh_ecmg_cfg {
	uint32_t super_cas_id;     /* CA_system_id << 16 | CA_subsystem_id the SCS must ask for */
	uint8_t alg;               /* enum kh_scr_alg: decides the CW length (8 CSA2, else 16) */
	uint8_t key_id;            /* service key sealing the ECMs */
	uint32_t key_version;
	uint8_t service_key[KH_CAS_KEY_LEN];
	struct kh_cas_signer signer; /* the key file's `signer ecm` */
	uint8_t access;            /* KH_ECM_PRODUCT or KH_ECM_EVENT */
	uint32_t product, event, price;
	uint32_t revoked_version;
	uint8_t ecm_flags;
	uint64_t time;             /* the ECMs' broadcast time, Unix seconds: the caller's clock, set
				    * before each message (an SCS gives no wall clock) */
	uint8_t ts_packets;        /* section_TSpkt_flag announced: 0 sections, 1 TS packets */
	/* announced in channel_status */
	int16_t delay_start, delay_stop, transition_start, transition_stop;
	uint16_t ecm_rep_period, min_cp_duration, max_comp_time;
	uint16_t max_streams; /* <= KH_ECMG_MAX_STREAMS */
};

struct kh_ecmg_stream {
	uint8_t used;
	uint16_t stream_id, ecm_id, nominal_cp;
};

/* One SCS connection: at most one channel (TS 103 197: one channel per TCP connection). */
struct kh_ecmg_conn {
	uint8_t open;
	uint16_t channel_id;
	uint8_t version;
	struct kh_ecmg_stream st[KH_ECMG_MAX_STREAMS];
	struct kh_sim_msg msg; /* scratch, large */
};

/* Sensible announced values (documented in docs/internals/ecmg.md); the keys are the caller's. */
void kh_ecmg_cfg_defaults(struct kh_ecmg_cfg *cfg);
void kh_ecmg_conn_init(struct kh_ecmg_conn *c);

/*
 * Handle one whole message in[0..n). *out_len gets the answer's size (0: none), *close 1 when the
 * connection should now end (after channel_close, or after an unrecoverable error). Refusals are
 * answered (channel_error / stream_error) and leave the state as it was; the return is KH_OK
 * unless the answer could not be made (KH_ERR_BUF: cap below KH_ECMG_OUT_MAX, a crypto error).
 */
KH_WARN_UNUSED kh_err kh_ecmg_handle(const struct kh_ecmg_cfg *cfg, struct kh_ecmg_conn *c, const uint8_t *in,
				     size_t n, uint8_t *out, size_t cap, size_t *out_len, int *close);
/*
 * The channel_error for a stream that cannot be framed (kh_sim_frame's KH_SIM_TOO_LONG): the
 * caller sends it and closes.
 */
KH_WARN_UNUSED kh_err kh_ecmg_frame_error(const struct kh_ecmg_conn *c, enum kh_sim_status st, uint8_t *out,
					  size_t cap, size_t *out_len);

#endif
