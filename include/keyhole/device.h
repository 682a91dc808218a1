/*
 * The device zone (src/device/): what carries APDUs to a module and what runs one. The software
 * chip itself is keyhole/softmodule.h; this header holds the carriers behind struct
 * kh_transport (keyhole/transport.h): a module run in this process, a UNIX-socket client of a
 * module daemon, and the daemon. Only this zone links the module runtime (src/module/); hosts
 * and centers see a module as a struct kh_transport and nothing more.
 *
 * Socket framing: each APDU is preceded by its length as a big-endian u32; one response per
 * command, in order. No socket carries a processor's RUN OPEN, RUN CHUNK or RUN CLOSE: those
 * answer plaintext and come only from the runner inside the processor daemon (keyhole/runner.h),
 * so a daemon answers them APDU_INS without its module seeing them. A frame longer than KH_APDU_MAX_CMD (commands) or KH_APDU_MAX_RESP
 * (responses) ends the connection.
 */
#ifndef KEYHOLE_DEVICE_H
#define KEYHOLE_DEVICE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/transport.h"

struct kh_module;

/* In-process: bytes through kh_module_process(). The module stays owned by the caller. */
void kh_transport_inproc(struct kh_transport *t, struct kh_module *m);
/* Connect to a module daemon's socket. */
KH_WARN_UNUSED kh_err kh_transport_unix(struct kh_transport *t, const char *path);

/*
 * The card in a PC/SC reader, through pcsc-lite: reader is the reader's name, or the start of
 * the only name that begins so, or "" for the first reader that has a card. The card is held
 * exclusively (T=1). Errors: KH_ERR_PCSC_SERVICE (no pcscd), KH_ERR_READER (no such reader, or
 * the name is ambiguous), KH_ERR_NO_CARD, KH_ERR_CARD_BUSY (another program holds the card).
 * Unlike a socket, a failed transfer is not final: it returns KH_ERR_TRANSPORT and the next one
 * connects again to the card then in the same reader.
 */
KH_WARN_UNUSED kh_err kh_transport_pcsc(struct kh_transport *t, const char *reader);
/* 1 when t is a PC/SC transport. */
int kh_transport_is_pcsc(const struct kh_transport *t);
/* The name of the reader a PC/SC transport holds (NULL for another transport). */
const char *kh_transport_pcsc_reader(const struct kh_transport *t);

/* What the reader of a PC/SC transport says now (kh_transport_pcsc_poll). */
enum kh_pcsc_event {
	KH_PCSC_SAME,    /* the card connected to is still there (any other transport says this) */
	KH_PCSC_CHANGED, /* a card went out or in since the last look, or pcscd came back: the card
			  * there now is not known to be the one before; the next transfer connects to it */
	KH_PCSC_NO_CARD, /* no card in the reader (reported CHANGED once before) */
	KH_PCSC_GONE,    /* pcscd or the reader is gone */
};
/* Look at the reader without waiting (one request to pcscd). */
enum kh_pcsc_event kh_transport_pcsc_poll(struct kh_transport *t);
/* 1 when the last look (kh_transport_pcsc_poll, or the connection) found a card in the reader. */
int kh_transport_pcsc_present(const struct kh_transport *t);

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
	/*
	 * A request to the daemon itself (a frame whose first byte is KH_CLA_DAEMON) with the
	 * descriptors that came with it (at most KH_DAEMON_FDS; the daemon closes them after): its
	 * answer, data || SW, into resp (cap bytes), and its length (2 or more). NULL: such frames
	 * are answered as an unknown class.
	 */
	size_t (*request)(void *ctx, const uint8_t *req, size_t n, const int *fds, int nfds, uint8_t *resp, size_t cap);
	void *ctx;
};

/* The class byte of a request to a daemon rather than its module, and the most descriptors one carries. */
#define KH_CLA_DAEMON 0xD0
#define KH_DAEMON_FDS 8

/*
 * Send a daemon request over a socket transport (kh_transport_unix) with nfds open descriptors
 * (0 to KH_DAEMON_FDS; they stay open here), and take its answer as kh_transport_xfer does.
 * KH_ERR_INVAL when t is not a socket transport.
 */
KH_WARN_UNUSED kh_err kh_transport_unix_request(struct kh_transport *t, const uint8_t *req, size_t n, const int *fds,
						int nfds, uint8_t *resp, size_t cap, size_t *rlen);

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

/*
 * Answer one command APDU from outside as a daemon's module does (kh_serve_unix, the vpcd card
 * side): a daemon request is an unknown class, the runner's instructions are refused, the rest
 * goes to kh_module_process (which seals and stores every state change before it answers).
 * The answer's length; resp needs KH_APDU_MAX_RESP bytes.
 */
size_t kh_serve_apdu(struct kh_module *m, const uint8_t *cmd, size_t n, uint8_t *resp, size_t cap);

#endif
