/*
 * A key card's host (seed 004, docs/protocols/keycenter.md): the client of the key center's
 * HTTP API (src/host/keycard_client.c) and the streaming seal and open of the relay's messages
 * (src/host/keycard_stream.c). The host carries a document to the center sealed chunk by chunk
 * under the key its card gives out for that one message, and opens what the center delivered
 * under the key the card gives for it: a document is never held whole in memory, and its
 * plaintext is written only where the caller says. Host zone; the card is reached through a
 * struct kh_transport only (include/keyhole/keycardhost.h).
 */
#ifndef KEYHOLE_KEYCARDCLIENT_H
#define KEYHOLE_KEYCARDCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/keycard.h"
#include "keyhole/transport.h"

/* Sends of one message after a transport failure or a 5xx answer: the same bytes each time. */
#define KH_KC_SEND_RETRIES 3u
#define KH_KC_SEND_BACKOFF_MS 200u
/* A session refused as a replay (one hello a second) is asked again once, this much later. */
#define KH_KC_SESSION_AGAIN_MS 1100u
/* The largest JSON answer of the center taken (bytes). */
#define KH_KC_ANSWER_MAX (1024u * 1024u)

/* ---- streaming seal ---- */

struct kh_kc_sealer;

/*
 * A sealer of the message (header h) carrying the document of length bytes read from fd (with
 * pread, from offset 0: the file's position is not used) to addr, under key (copied; wiped with
 * the sealer). KH_ERR_FORMAT for a bad address, KH_ERR_NOMEM.
 */
KH_WARN_UNUSED kh_err kh_kc_sealer_new(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr,
				       int fd, uint64_t length, struct kh_kc_sealer **out);
/* Every byte of the message (kh_kc_msg_size). */
uint64_t kh_kc_sealer_size(const struct kh_kc_sealer *s);
/*
 * The message's next bytes into buf (at most cap; *n 0 at its end). KH_ERR_IO when the document
 * cannot be read or is shorter than announced (it changed under the sealer).
 */
KH_WARN_UNUSED kh_err kh_kc_sealer_read(struct kh_kc_sealer *s, uint8_t *buf, size_t cap, size_t *n);
/* Back to the first byte: the message sealed again is byte for byte the same (same key, same nonces). */
void kh_kc_sealer_rewind(struct kh_kc_sealer *s);
/* Wipe (key, plaintext) and free; NULL does nothing. */
void kh_kc_sealer_free(struct kh_kc_sealer *s);
/* The whole message to outfd (a test's and a tool's way). */
KH_WARN_UNUSED kh_err kh_kc_seal_fd(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr,
				    int infd, uint64_t length, int outfd);

/* ---- streaming open ---- */

/*
 * The start of a message read from fd at offset 0: its header (bytes and fields) and chunk 0 as
 * it travels (framing included), what the card checks before it gives the key. KH_ERR_TRUNCATED
 * for a file that ends early, the header's and framing's codes, KH_ERR_FORMAT for a chunk 0
 * longer than an envelope.
 */
KH_WARN_UNUSED kh_err kh_kc_read_head(int fd, uint8_t hdr[static KH_KC_HEADER_LEN], struct kh_kc_header *h,
				      uint8_t chunk0[static KH_KC_CHUNK0_MAX], size_t *chunk0len);
/*
 * Open the message in infd (from offset 0) under key, writing the document to outfd as each
 * chunk is verified: the header, every chunk's tag, their order, the last flag, the envelope's
 * length and no trailing byte are checked. *h, *e and *written (document bytes written) are set
 * on success. On failure some verified chunks may have been written: the caller discards them.
 */
KH_WARN_UNUSED kh_err kh_kc_open_fd(const uint8_t key[static 32], int infd, int outfd, struct kh_kc_header *h,
				    struct kh_kc_envelope *e, uint64_t *written);
/*
 * The same into the file out: a regular file (or nothing yet) gets a temporary file beside it
 * (mode 0600), fsynced and renamed over out only once everything verified, and removed on any
 * failure; a FIFO, character device or socket is written in place. msg (msgcap bytes) says what
 * failed.
 */
KH_WARN_UNUSED kh_err kh_kc_open_to(const uint8_t key[static 32], int infd, const char *out, struct kh_kc_header *h,
				    struct kh_kc_envelope *e, uint64_t *written, char *msg, size_t msgcap);

/* ---- the key center's client ---- */

struct kh_keycard_client;

/*
 * A client of the key center at url (https://, or http:// to the loopback host only), its
 * certificate checked against cacert (PEM; NULL: the system's store). KH_ERR_INVAL for a URL
 * refused.
 */
KH_WARN_UNUSED kh_err kh_keycard_client_new(const char *url, const char *cacert, struct kh_keycard_client **out);
/* Free, wiping the mailbox session's token. NULL does nothing. */
void kh_keycard_client_free(struct kh_keycard_client *c);
/* The center's or the transport's words about the last failure, "" when none (one line, ASCII). */
const char *kh_keycard_client_error(const struct kh_keycard_client *c);

struct kh_keycard_activated {
	uint64_t serial;
	char address[KH_KC_ADDR_MAX + 1];
};
/*
 * Activate card serial with its access code (POST /v1/activate). KH_ERR_ACCESS_CODE, KH_ERR_LIMIT
 * (too many wrong codes: wait), KH_ERR_BLOCKED as the center names them.
 */
KH_WARN_UNUSED kh_err kh_keycard_activate(struct kh_keycard_client *c, uint64_t serial, const char *code,
					  struct kh_keycard_activated *out);

struct kh_keycard_sent {
	uint64_t serial, index;
	uint64_t length; /* the document's bytes */
	int duplicate;   /* 1: the center had the message already (an earlier try got through) */
	int spent;       /* 1: the index is spent whatever the outcome (it reached the center) */
	int acked;       /* 1: the card took the center's ack */
};
/*
 * Send the regular file in to the card addressed to: KC SEND (serial, index, key; KH_ERR_KEY_AHEAD
 * once means the card waits for an ack: it is fetched from the center and given, and KC SEND
 * asked again), the message sealed while it is uploaded (POST /v1/messages), the same bytes
 * again after a transport failure or a 5xx answer (at most KH_KC_SEND_RETRIES times), then the
 * center's ack to the card (KC ACK). KH_ERR_RECIPIENT: no such card, the index spent all the
 * same (its ack is given to the card). The message's key is wiped on every path.
 */
KH_WARN_UNUSED kh_err kh_keycard_post(struct kh_keycard_client *c, struct kh_transport *card, const char *to,
				      const char *in, struct kh_keycard_sent *out);

/* One message of the card's mailbox, as the center lists it. */
struct kh_keycard_mail {
	uint64_t index;
	char from[KH_KC_ADDR_MAX + 1];
	uint64_t size;    /* of the delivery, bytes */
	int64_t received; /* Unix seconds (0 when the center gives another form) */
	int resumed;      /* 1: it was in the directory already, identical (a run before stopped) */
};
/*
 * Open a mailbox session for the card (challenge, KC HELLO, session: its token kept in c), list
 * the mailbox, and for each message write DIR/INDEX.khm (temporary file, fsync, rename, mode
 * 0600), then delete it at the center; fn (may be NULL) is told of each once it is deleted. A
 * file there already with the same bytes is kept and the message deleted; with other bytes,
 * KH_ERR_EXISTS and nothing more is done. A non-KH_OK return of fn ends the walk with it.
 */
KH_WARN_UNUSED kh_err kh_keycard_fetch(struct kh_keycard_client *c, struct kh_transport *card, const char *dir,
				       kh_err (*fn)(void *arg, const struct kh_keycard_mail *m), void *arg);

/*
 * Open the delivery in the file in (header: a delivery to this card) with the key the card
 * gives for it (KC OPEN) into out (kh_kc_open_to's rules). msg (msgcap bytes) says what failed.
 * *e names the sender and the document's length, *index the message.
 */
KH_WARN_UNUSED kh_err kh_keycard_open_file(struct kh_transport *card, const char *in, const char *out,
					   uint64_t *index, struct kh_kc_envelope *e, char *msg, size_t msgcap);

#endif
