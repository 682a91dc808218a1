/*
 * A transport carries command and response APDUs between a host (or the center's
 * personalisation station) and a module, and nothing else. This is the contract every zone
 * talks to a module through (base); the carriers — in-process, a UNIX socket to a module daemon,
 * later PC/SC — are the device zone's and are declared in keyhole/device.h. Every carrier moves
 * exactly the same bytes.
 */
#ifndef KEYHOLE_TRANSPORT_H
#define KEYHOLE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_transport {
	/* Send one command APDU, receive its response APDU (data || SW) into resp. */
	kh_err (*xfer)(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen);
	void (*close)(void *ctx);
	void *ctx;
};

/*
 * Send cmd (len bytes), receive the response into resp (cap bytes) and its length into *rlen
 * (written only on success). KH_ERR_TRANSPORT when the module cannot be reached or its answer is
 * not a framed response APDU of 2 to cap bytes. On a socket such a failure is final: the
 * connection is closed and every later call returns KH_ERR_TRANSPORT (kh_transport_close() is
 * still needed to free it). KH_ERR_TOO_LARGE for a command over KH_APDU_MAX_CMD, which sends
 * nothing and leaves the transport usable.
 */
KH_WARN_UNUSED kh_err kh_transport_xfer(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp,
					size_t cap, size_t *rlen);
void kh_transport_close(struct kh_transport *t);

#endif
