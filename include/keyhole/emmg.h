/*
 * The EMMG<->MUX interface of DVB SimulCrypt (ETSI TS 103 197 §6, TCP, protocol versions 2 and 3),
 * both sides, in the center zone: the EMMG client engine (`keyhole emmg`: sets up a channel and
 * one data stream, asks for bandwidth, provisions EMM sections paced to what the mux allocated)
 * and the mux server engine (`keyhole headend mux --emmg-listen`: answers channel/stream
 * messages, allocates bandwidth, hands the datagrams of data_provision to its caller, refuses
 * every bad message with the standard's error_status). docs/internals/emmg.md describes both.
 *
 * Protocol engines only: one whole message in (the caller frames the TCP stream with
 * kh_sim_frame), at most one message out, fixed-size state. Time is the caller's: a millisecond
 * clock passed in. Nothing here allocates or does I/O.
 *
 * Bandwidth is counted the same way on both sides (kh_emmg_cost): the transport stream bytes a
 * datagram takes once inserted (sections: each one from a new 188-byte packet behind a
 * pointer_field; TS packets: their bytes), at `kbit/s` = 1000 bits per second.
 */
#ifndef KEYHOLE_EMMG_H
#define KEYHOLE_EMMG_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/simulcrypt.h"

#define KH_EMMG_OUT_MAX 512u	      /* largest control message either engine makes */
#define KH_EMMG_DATA_MAX 16384u	      /* largest data_provision the client makes */
#define KH_EMMG_DATA_EMM 0u	      /* data_type of EMMs */
#define KH_EMMG_MUX_MAX_STREAMS 8u    /* streams per channel at the mux */
#define KH_EMMG_BURST_MS 1000u	      /* the mux lets a stream run this far ahead of its allocation */
#define KH_EMMG_BURST_MIN 4096u	      /* ... and at least this many bytes (a few sections) */
#define KH_EMMG_BACKOFF_MAX_MS 30000u /* longest wait before a new connection */

/* The transport-stream bytes of datagram dg[0..n) (see above); 0 when it is not whole sections
 * (ts_packets 0) or whole 188-byte packets starting with 0x47 (ts_packets 1). */
size_t kh_emmg_cost(int ts_packets, const uint8_t *dg, size_t n);

/* ---------------------------------------------------------------------------------------- */
/* EMMG (client)                                                                             */

struct kh_emmg_cfg {
	uint32_t client_id;  /* Super_CAS_id style: CA_system_id << 16 | subsystem */
	uint16_t channel_id; /* data_channel_id */
	uint16_t stream_id;  /* data_stream_id */
	uint16_t data_id;
	uint16_t bandwidth;  /* kbit/s asked for (stream_BW_request) */
	uint8_t version;     /* protocol_version, 2 or 3 */
	uint8_t ts_packets;  /* section_TSpkt_flag: 0 sections, 1 TS packets */
};

enum kh_emmg_state {
	KH_EMMG_IDLE = 0,   /* nothing sent yet (kh_emmg_start) */
	KH_EMMG_CHANNEL,    /* channel_setup sent, channel_status awaited */
	KH_EMMG_STREAM,     /* stream_setup sent, stream_status awaited */
	KH_EMMG_BANDWIDTH,  /* stream_BW_request sent, stream_BW_allocation awaited */
	KH_EMMG_READY,      /* data_provision may be sent (kh_emmg_provision) */
	KH_EMMG_CLOSED,     /* channel_close made: the connection ends */
	KH_EMMG_FAILED,     /* the mux refused something or broke the protocol: reconnect later */
};

struct kh_emmg {
	struct kh_emmg_cfg cfg;
	enum kh_emmg_state state;
	uint16_t allocated;   /* kbit/s the mux allocated */
	uint16_t error;       /* error_status of the channel_error / stream_error that failed us */
	uint16_t error_type;  /* message_type that failed us (the mux's error, or an unexpected one) */
	uint64_t ready_ms;    /* the caller's clock when the allocation came */
	uint64_t sent;        /* cost (kh_emmg_cost) of the data provisioned since */
	uint64_t errors_seen; /* channel_error / stream_error received */
	struct kh_sim_msg msg;
};

/* State to IDLE with cfg (copied). */
void kh_emmg_init(struct kh_emmg *e, const struct kh_emmg_cfg *cfg);
/* The channel_setup opening a connection; the state becomes CHANNEL. KH_ERR_INVAL unless IDLE. */
KH_WARN_UNUSED kh_err kh_emmg_start(struct kh_emmg *e, uint8_t *out, size_t cap, size_t *len);
/*
 * One whole message from the mux, at the caller's clock now_ms. *len gets the size of the message
 * to send back (0: none): the next setup step (stream_setup after channel_status,
 * stream_BW_request after stream_status), channel_status / stream_status to the mux's tests.
 * channel_error, stream_error, a message the EMMG cannot parse or one out of turn make the state
 * FAILED (e->error, e->error_type say which) with nothing to send; KH_OK all the same (the caller
 * logs and reconnects after kh_emmg_backoff_ms). KH_ERR_BUF when cap < KH_EMMG_OUT_MAX.
 */
KH_WARN_UNUSED kh_err kh_emmg_handle(struct kh_emmg *e, const uint8_t *in, size_t n, uint64_t now_ms, uint8_t *out,
				     size_t cap, size_t *len);
/*
 * When (the caller's clock, ms) data of `cost` more bytes may be sent without exceeding the
 * allocation: ready_ms + (sent + cost) * 8 / allocated. UINT64_MAX unless READY.
 */
uint64_t kh_emmg_send_at(const struct kh_emmg *e, uint64_t cost);
/*
 * A data_provision of the sections at secs[*off ..] (an EMM file: sections back to back), one
 * section per datagram, as many whole sections as fit in KH_EMMG_DATA_MAX and may be sent at
 * now_ms (kh_emmg_send_at); *off advances past them and e->sent grows by their cost. *len 0 when
 * none may go yet (or none is left). ts_packets: each section packetised (PID 0x1FFF, the mux
 * sets its own). KH_ERR_INVAL unless READY, KH_ERR_FORMAT when secs[*off] is not a whole
 * section, KH_ERR_TOO_LARGE when a section alone exceeds KH_EMMG_DATA_MAX.
 */
KH_WARN_UNUSED kh_err kh_emmg_provision(struct kh_emmg *e, const uint8_t *secs, size_t n, size_t *off,
					uint64_t now_ms, uint8_t *out, size_t cap, size_t *len);
/* The channel_close ending the session (any state once started); the state becomes CLOSED. */
KH_WARN_UNUSED kh_err kh_emmg_close(struct kh_emmg *e, uint8_t *out, size_t cap, size_t *len);
/* The wait before connection attempt `attempt` (0 the first after a failure): 1 s doubling up to
 * KH_EMMG_BACKOFF_MAX_MS. */
uint64_t kh_emmg_backoff_ms(unsigned attempt);
const char *kh_emmg_state_name(enum kh_emmg_state s);

/* ---------------------------------------------------------------------------------------- */
/* Mux (server)                                                                              */

/* The datagrams of an accepted data_provision, one call per datagram (whole sections, or whole
 * TS packets when the channel's section_TSpkt_flag is 1). */
typedef void (*kh_emmmux_data_fn)(void *ctx, uint16_t data_id, int ts_packets, const uint8_t *dg, size_t n);
/* Whether another connection has a channel open for client_id (client_ID_in_use); may be NULL. */
typedef int (*kh_emmmux_busy_fn)(void *ctx, uint32_t client_id);

struct kh_emmmux_cfg {
	uint32_t client_id;     /* the one client_id accepted */
	uint16_t max_bandwidth; /* kbit/s: a stream gets min(asked, this); this when it never asks */
	uint16_t max_streams;   /* per channel, <= KH_EMMG_MUX_MAX_STREAMS */
	kh_emmmux_data_fn on_data;
	kh_emmmux_busy_fn busy;
	void *ctx;
};

struct kh_emmmux_stream {
	uint8_t used;
	uint8_t data_type;
	uint16_t stream_id, data_id;
	uint16_t allocated; /* kbit/s */
	uint64_t since_ms;  /* the allocation's time: the credit starts full then */
	uint64_t spent;     /* cost received since */
};

struct kh_emmmux_stats {
	uint64_t messages, errors_sent, datagrams, bytes, exceeded;
};

/* One EMMG connection: at most one channel (one channel per TCP connection). */
struct kh_emmmux_conn {
	uint8_t open;
	uint8_t version;
	uint8_t ts_packets;
	uint16_t channel_id;
	uint32_t client_id;
	struct kh_emmmux_stream st[KH_EMMG_MUX_MAX_STREAMS];
	struct kh_emmmux_stats stats;
	struct kh_sim_msg msg; /* scratch, large */
};

void kh_emmmux_cfg_defaults(struct kh_emmmux_cfg *cfg);
void kh_emmmux_conn_init(struct kh_emmmux_conn *c);
/*
 * Handle one whole message in[0..n) at the caller's clock now_ms. *out_len gets the answer's size
 * (0: none), *close 1 when the connection should end (channel_close). Every refusal is answered
 * (channel_error / stream_error) and changes nothing; the return is KH_OK unless the answer
 * cannot be made (KH_ERR_BUF: cap below KH_EMMG_OUT_MAX).
 */
KH_WARN_UNUSED kh_err kh_emmmux_handle(const struct kh_emmmux_cfg *cfg, struct kh_emmmux_conn *c, const uint8_t *in,
				       size_t n, uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len,
				       int *close);
/* The channel_error for a stream that cannot be framed (kh_sim_frame's refusal): send, close. */
KH_WARN_UNUSED kh_err kh_emmmux_frame_error(const struct kh_emmmux_conn *c, enum kh_sim_status st, uint8_t *out,
					    size_t cap, size_t *out_len);

#endif
