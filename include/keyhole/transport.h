/*
 * Transports carry command and response APDUs between a host and a module, and nothing else
 *. Every transport moves exactly the same bytes: in-process (a function call into
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

/* In-process: bytes through kh_module_process(). The module stays owned by the caller. */
void kh_transport_inproc(struct kh_transport *t, struct kh_module *m);
/* Connect to a module daemon's socket. */
KH_WARN_UNUSED kh_err kh_transport_unix(struct kh_transport *t, const char *path);

/* Default time a daemon's client has to send one command frame, or take one response. */
#define KH_SERVE_TIMEOUT_MS 5000

struct kh_serve_opts {
	/*
	 * Once a frame has begun, it must be sent or taken whole within this many milliseconds
	 * (each blocking read or write gets SO_RCVTIMEO/SO_SNDTIMEO of it; a client trickling
	 * bytes is cut off after at most twice it). Otherwise the connection ends and the next
	 * client is served. 0 means KH_SERVE_TIMEOUT_MS. Idle time between frames is not limited.
	 */
	unsigned timeout_ms;
};

/*
 * Serve module m on a UNIX socket at path (mode 0600) until *stop becomes non-zero (a signal
 * handler sets it). *stop is honoured within about 200 ms when idle, and at once when the signal
 * interrupts a read or write blocked on a stalled client: poll() and the timed socket calls fail
 * with EINTR whether or not the handler has SA_RESTART (a stop set by another thread waits for
 * the socket timeout instead). One connection at a time, as a card reader has one host; the
 * socket file is removed on return. KH_ERR_EXISTS when something already listens there or path
 * is not a socket, KH_ERR_IO when it cannot listen. kh_serve_unix() uses the defaults;
 * kh_serve_unix_opts() takes opts (NULL for the defaults).
 */
KH_WARN_UNUSED kh_err kh_serve_unix(const char *path, struct kh_module *m, volatile sig_atomic_t *stop);
KH_WARN_UNUSED kh_err kh_serve_unix_opts(const char *path, struct kh_module *m, volatile sig_atomic_t *stop,
					 const struct kh_serve_opts *opts);

#endif
