/*
 * The card side of vsmartcard's vpcd reader driver (docs/internals/pcsc.md): the framing, with
 * no I/O (fuzz/fuzz_vpcd.c drives it), the ATR a Keyhole module answers with, and the TCP client
 * that plugs a module into pcscd's "Virtual PCD" reader.
 */
#ifndef KH_DEVICE_VPCD_H
#define KH_DEVICE_VPCD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_module;

/* The port the driver listens on when reader.conf does not say (its CHANNELID 0x8C7B). */
#define KH_VPCD_PORT 35963
/* One-byte payloads are the driver's control messages. */
enum kh_vpcd_ctrl { KH_VPCD_OFF = 0, KH_VPCD_ON = 1, KH_VPCD_RESET = 2, KH_VPCD_ATR = 4 };
/* The largest message either side sends: a 2-byte length and its payload. */
#define KH_VPCD_MAX_PAYLOAD 65535u
/* Our ATR: TS, T0, TD1, 12 historical bytes, TCK. */
#define KH_VPCD_ATR_LEN 16

/* One message taken from the stream: a control code, or a command APDU inside the input. */
struct kh_vpcd_msg {
	int is_ctrl;
	uint8_t ctrl;
	const uint8_t *apdu;
	size_t apdu_len;
};

/*
 * Take the first message from buf (n bytes received so far). KH_OK: *msg is set and *used says
 * how many bytes it took (2 + its length). KH_ERR_TRUNCATED: not all of it has arrived yet (read
 * more; nothing taken). KH_ERR_FORMAT: a zero-length message, which the driver never sends.
 * KH_ERR_TOO_LARGE: a message longer than max payload bytes.
 */
KH_WARN_UNUSED kh_err kh_vpcd_take(const uint8_t *buf, size_t n, size_t max, struct kh_vpcd_msg *msg, size_t *used);

/* Frame payload (len 1 to KH_VPCD_MAX_PAYLOAD) into out (cap bytes); the framed length, 0 if it does not fit. */
size_t kh_vpcd_frame(uint8_t *out, size_t cap, const uint8_t *payload, size_t len);

/*
 * The ATR of a Keyhole module of the given role (enum kh_role) into atr[KH_VPCD_ATR_LEN]: direct
 * convention, T=1 only, historical bytes "Keyhole" and the applet set (role, protocol version)
 * in COMPACT-TLV, and the check byte TCK.
 */
void kh_vpcd_atr(uint8_t role, uint8_t atr[static KH_VPCD_ATR_LEN]);

/* Whether atr (len bytes) has a TCK that makes the XOR of T0 through TCK zero. */
int kh_vpcd_atr_tck_ok(const uint8_t *atr, size_t len);

struct kh_vpcd_opts {
	const char *host; /* the reader driver's host (default 127.0.0.1) */
	uint16_t port;    /* its port (default KH_VPCD_PORT) */
	/* Non-zero: stop serving. Non-zero: the card is out of the reader (disconnected) until it drops to zero. */
	volatile sig_atomic_t *stop, *ejected;
};

/*
 * Serve module m to the vpcd reader driver until *o->stop: connect, answer, reconnect (every
 * 200 ms) when the driver or pcscd goes away, disconnect while *o->ejected. Command APDUs go
 * through kh_serve_apdu (the same rules as kh_serve_unix). KH_ERR_INVAL for a host that does not
 * resolve.
 */
KH_WARN_UNUSED kh_err kh_serve_vpcd(struct kh_module *m, const struct kh_vpcd_opts *o);

#endif
