/*
 * The SCS (center zone): the SimulCrypt synchroniser's side of the ECMG<->SCS interface (ETSI
 * TS 103 197 §5, protocol versions 2 and 3), so that the headend's scrambler takes its ECMs from
 * an ECMG (`keyhole headend scramble --ecmg`), Keyhole's (`keyhole ecmg serve`) or another's.
 * docs/internals/scs.md describes the exchange and the timing.
 *
 * This is the protocol engine only, one channel (one TCP connection): the messages to send are
 * built into the caller's buffer, each whole message received (the caller frames the stream
 * with kh_sim_frame) is turned into one event. Nothing here allocates or does I/O.
 */
#ifndef KEYHOLE_SCS_H
#define KEYHOLE_SCS_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/simulcrypt.h"

#define KH_SCS_STREAMS_MAX 16u /* streams (services) per channel */
#define KH_SCS_MSG_MAX 256u    /* largest message the SCS sends (a CW_provision with 16-byte CWs) */
#define KH_SCS_AC_MAX 9u       /* largest access_criteria (ecmg.h: 02 | event | price) */

/* The channel's parameters from channel_status (TS 103 197 §5.4). */
struct kh_scs_channel {
	uint8_t section_tspkt;	   /* 0: ECMs as sections, 1: as TS packets */
	int16_t delay_start, delay_stop, transition_start, transition_stop; /* ms */
	uint16_t ecm_rep_period;   /* ms */
	uint16_t max_streams;
	uint16_t min_cp_duration;  /* 100 ms units */
	uint8_t lead_cw, cw_per_msg;
	uint16_t max_comp_time;	   /* ms */
};

enum kh_scs_state {
	KH_SCS_IDLE = 0,   /* nothing sent */
	KH_SCS_SETTING_UP, /* channel_setup sent, no channel_status yet */
	KH_SCS_OPEN,	   /* channel_status received */
	KH_SCS_CLOSED,	   /* channel_close sent, or a channel_error: start again on a new connection */
};

struct kh_scs_stream {
	uint8_t state; /* 0 none, 1 stream_setup sent, 2 open (stream_status received) */
	uint16_t stream_id, ecm_id, nominal_cp;
	uint8_t waiting; /* a CW_provision sent and not answered */
	uint16_t cp;	 /* its CP_number */
};

struct kh_scs {
	uint32_t super_cas_id;
	uint16_t channel_id;
	uint8_t version; /* 2 or 3 */
	enum kh_scs_state state;
	struct kh_scs_channel ch;
	struct kh_scs_stream st[KH_SCS_STREAMS_MAX];
	struct kh_sim_msg msg; /* scratch, large */
};

enum kh_scs_event_type {
	KH_SCS_EV_NONE = 0,
	KH_SCS_EV_CHANNEL_STATUS, /* channel open (or a channel_test's answer): s->ch filled */
	KH_SCS_EV_STREAM_STATUS,  /* stream `stream` open (or a stream_test's answer) */
	KH_SCS_EV_STREAM_CLOSED,  /* stream_close_response */
	KH_SCS_EV_ECM,		  /* ECM_response for stream `stream`, CP `cp`: the section in ecm */
	KH_SCS_EV_CHANNEL_ERROR,  /* channel_error `error`: the channel is closed */
	KH_SCS_EV_STREAM_ERROR,	  /* stream_error `error` for `stream` (its pending CW_provision failed) */
	KH_SCS_EV_CHANNEL_TEST,	  /* the ECMG's channel_test: send kh_scs_channel_test's answer */
	KH_SCS_EV_STREAM_TEST,	  /* the ECMG's stream_test for `stream` */
	KH_SCS_EV_CLOSE_REQUEST,  /* the ECMG's stream_close_request for `stream` */
};

struct kh_scs_event {
	enum kh_scs_event_type type;
	unsigned stream; /* index into s->st */
	uint16_t cp;
	uint16_t error;	 /* error_status */
	size_t ecm_len;	 /* KH_SCS_EV_ECM: the section's bytes in the caller's ecm buffer */
};

/* A new channel's state: nothing sent. version 2 or 3 (KH_ERR_INVAL otherwise). */
KH_WARN_UNUSED kh_err kh_scs_init(struct kh_scs *s, uint32_t super_cas_id, uint16_t channel_id, uint8_t version);

/* The messages to send, built into out (cap >= KH_SCS_MSG_MAX; KH_ERR_BUF otherwise). */
/* channel_setup: from IDLE only (KH_ERR_INVAL). */
KH_WARN_UNUSED kh_err kh_scs_channel_setup(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len);
/* channel_test, the keep-alive (the ECMG answers channel_status). OPEN only. */
KH_WARN_UNUSED kh_err kh_scs_channel_test(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len);
/*
 * The answers to the ECMG's own tests (KH_SCS_EV_CHANNEL_TEST / _STREAM_TEST): channel_status
 * with the channel's parameters as received, stream_status of stream idx, as TS 103 197 has the
 * peer answer a test. OPEN only.
 */
KH_WARN_UNUSED kh_err kh_scs_channel_status(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len);
KH_WARN_UNUSED kh_err kh_scs_stream_status(struct kh_scs *s, unsigned idx, uint8_t *out, size_t cap, size_t *len);
/* channel_close; the state becomes CLOSED. */
KH_WARN_UNUSED kh_err kh_scs_channel_close(struct kh_scs *s, uint8_t *out, size_t cap, size_t *len);
/*
 * stream_setup of stream idx (< KH_SCS_STREAMS_MAX, unused) on the open channel: ECM_stream_id
 * stream_id, ECM_id ecm_id, nominal_CP_duration in 100 ms units (1..65535). KH_ERR_INVAL for a
 * closed channel, a used index, a stream_id or ECM_id another stream has, more streams than the
 * channel's max_streams, or a zero duration.
 */
KH_WARN_UNUSED kh_err kh_scs_stream_setup(struct kh_scs *s, unsigned idx, uint16_t stream_id, uint16_t ecm_id,
					  uint16_t nominal_cp, uint8_t *out, size_t cap, size_t *len);
/* stream_close_request of stream idx (open); the stream is forgotten. */
KH_WARN_UNUSED kh_err kh_scs_stream_close(struct kh_scs *s, unsigned idx, uint8_t *out, size_t cap, size_t *len);
/*
 * CW_provision of CP cp on stream idx (open): CP_CW_combinations (cp, cw) and, when next is not
 * NULL, (cp + 1, next) (lead_CW 1), cw_len 8 or 16; the access_criteria ac[0..ac_len) when
 * ac_len > 0 (at most KH_SCS_AC_MAX). The stream then waits for that CP's ECM_response. The CWs
 * are in out: the caller wipes it after sending.
 */
KH_WARN_UNUSED kh_err kh_scs_cw_provision(struct kh_scs *s, unsigned idx, uint16_t cp, const uint8_t *cw,
					  const uint8_t *next, size_t cw_len, const uint8_t *ac, size_t ac_len,
					  uint8_t *out, size_t cap, size_t *len);
/*
 * The access_criteria Keyhole's ECMG reads (ecmg.h): 01 | product for access KH_ECM_PRODUCT,
 * 02 | event | price for KH_ECM_EVENT. Returns the length (5 or 9), 0 for another access.
 */
size_t kh_scs_access_criteria(uint8_t access, uint32_t product, uint32_t event, uint32_t price,
			      uint8_t out[KH_SCS_AC_MAX]);

/*
 * One whole message from the ECMG, in[0..n), into *ev. An ECM_response's datagram goes into
 * ecm[0..cap) as one whole section: as it came in section mode, reassembled from its TS packets
 * (188 bytes each, the first with payload_unit_start and a pointer_field, stuffing dropped) in TS
 * packet mode. Refused, the state unchanged: KH_ERR_FORMAT (a message kh_sim_parse refuses, an
 * ECMG-side message type other than those above, a channel or stream this SCS does not have, a
 * response nobody waits for, a datagram that is no whole section or not of the mode announced),
 * KH_ERR_BUF (the section longer than cap). A channel_error or stream_error is KH_OK with its
 * event: the caller decides (after a channel_error the state is CLOSED).
 */
KH_WARN_UNUSED kh_err kh_scs_handle(struct kh_scs *s, const uint8_t *in, size_t n, struct kh_scs_event *ev,
				    uint8_t *ecm, size_t cap);

#endif
