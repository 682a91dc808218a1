/*
 * The scrambler's SCS over TCP (headend_scs.c): one connection to an ECMG with one channel and a
 * stream per scrambled service, driven by the protocol engine include/keyhole/scs.h, and the
 * headend engine's ECM hook (kh_headend_ecm_fn) on top: each crypto period's CW_provision sent,
 * its ECM_response awaited at most max_comp_time + a margin. A timeout, an error or a lost
 * connection makes that call fail (the scrambler goes degraded) and closes the connection; a
 * later call connects again (at most once a second). docs/internals/scs.md.
 */
#ifndef KH_CLI_HEADEND_SCS_H
#define KH_CLI_HEADEND_SCS_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/scs.h"

#define KH_SCS_MARGIN_MS 200 /* added to max_comp_time: loopback or LAN round trip and scheduling */

/* One service's stream. */
struct kh_scs_service {
	uint16_t ecm_id;
	uint16_t nominal_cp;	       /* the crypto period, 100 ms units */
	uint8_t ac[KH_SCS_AC_MAX];     /* access_criteria (kh_scs_access_criteria) */
	size_t ac_len;
};

struct kh_scs_client {
	char host[256];
	uint16_t port;
	uint32_t super_cas_id;
	unsigned n_svc;
	struct kh_scs_service svc[KH_SCS_STREAMS_MAX];
	/* state */
	int fd;			   /* -1: not connected */
	double retry_at;	   /* monotonic s: no new connection before */
	unsigned connects;	   /* connections set up (the first included) */
	struct kh_scs_channel ch;  /* the first connection's channel_status */
	struct kh_scs scs;
	size_t have;
	uint8_t in[KH_SIM_MAX_MSG];
	char why[400];		   /* the last failure, for the log (the host in it) */
};

/*
 * Connect and set up the channel and every service's stream, waiting at most timeout_ms for each
 * answer; c->ch then holds the ECMG's parameters. The fields above `state` are the caller's.
 * KH_ERR_TRANSPORT (c->why says what), KH_ERR_PEER_ERROR (the ECMG refused: c->why).
 */
KH_WARN_UNUSED kh_err kh_scs_client_open(struct kh_scs_client *c, int timeout_ms);
/* kh_headend_ecm_fn: ctx is a struct kh_scs_client. */
kh_err kh_scs_client_ecm(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, const uint8_t *next,
			 size_t cw_len, uint8_t *ecm, size_t cap, size_t *len);
/* channel_close when connected, then close the socket. */
void kh_scs_client_close(struct kh_scs_client *c);

#endif
