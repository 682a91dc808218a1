/*
 * Transports carry command and response APDUs between a host and a module, and nothing else
 * (DESIGN.md §1). Every transport moves exactly the same bytes: in-process (a function call into
 * a module this process runs) or a UNIX socket to a module daemon (`keyhole card serve`). PC/SC
 * can follow with the same shape.
 *
 * Socket framing: each APDU is preceded by its length as a big-endian u32; one response per
 * command, in order. A frame longer than KH_APDU_MAX_CMD (commands) or KH_APDU_MAX_RESP
 * (responses) ends the connection.
 */
#ifndef KEYHOLE_TRANSPORT_H
#define KEYHOLE_TRANSPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_module;

struct kh_transport {
	/* Send one command APDU, receive its response APDU (data || SW) into resp. */
	kh_err (*xfer)(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen);
	void (*close)(void *ctx);
	void *ctx;
};

KH_WARN_UNUSED kh_err kh_transport_xfer(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp,
					size_t cap, size_t *rlen);
void kh_transport_close(struct kh_transport *t);

/* In-process: bytes through kh_module_process(). The module stays owned by the caller. */
void kh_transport_inproc(struct kh_transport *t, struct kh_module *m);
/* Connect to a module daemon's socket. */
KH_WARN_UNUSED kh_err kh_transport_unix(struct kh_transport *t, const char *path);

/*
 * Serve module m on a UNIX socket at path (mode 0600) until *stop becomes non-zero (a signal
 * handler sets it). One connection at a time, as a card reader has one host; the socket file is
 * removed on return. KH_ERR_EXISTS when something already listens there.
 */
KH_WARN_UNUSED kh_err kh_serve_unix(const char *path, struct kh_module *m, volatile sig_atomic_t *stop);

#endif
