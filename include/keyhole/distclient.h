/*
 * The client host's side of program distribution (seed 002, docs/protocols/distribution.md):
 * log in to a distribution server, read its catalogue, and buy a program or fetch it again on a
 * receipt by relaying the second path between the server and the buyer's processor. The client
 * carries opaque bytes both ways and stores what it is given (the encrypted package, the licence
 * token, the receipt): it never holds a key that opens anything, nor a byte of the program's
 * plaintext. The module is reached through a struct kh_transport only (the processor daemon's
 * socket); running a package is the device zone's (kh_processor_run in keyhole/runner.h).
 *
 * Files written for an output base BASE, each whole or not at all (temporary file in the same
 * directory, fsync, rename, fsync of the directory):
 *   BASE.khpk     the package, as the server sent it
 *   BASE.lic      the active licence token
 *   BASE.receipt  the signed receipt (KH_DIST_RECEIPT_BYTES)
 *   BASE.part     while a charge may be under way: what finishing the purchase needs
 *                 (kh_dist_part), written before the charge is asked and removed only once the
 *                 licence and the receipt are durable. A fetch that finds it resumes at the
 *                 charge, which the server answers with the same receipt and no second debit.
 * Host zone.
 */
#ifndef KEYHOLE_DISTCLIENT_H
#define KEYHOLE_DISTCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/err.h"
#include "keyhole/transport.h"

/* The largest package the client takes (bytes): a larger answer is a transport failure. */
#define KH_DIST_CLIENT_PKG_MAX (256u * 1024u * 1024u)
/* The largest licence token a processor answers (bytes). */
#define KH_DIST_TOKEN_MAX 512u
/* Charge requests sent at most, on transport failures and 5xx answers (the charge is idempotent). */
#define KH_DIST_CHARGE_ATTEMPTS 4u
#define KH_DIST_CHARGE_BACKOFF_MS 200u
/* Longest server URL kept (and accepted in a state file). */
#define KH_DIST_URL_MAX 1024u
/* What the server or the transport said about the last failure (printable ASCII, one line). */
#define KH_DIST_CLIENT_MSG_MAX 256u

struct kh_dist_client;

/*
 * A client of the server at url (https://, or http:// to the loopback host only:
 * kh_http_url_check), verifying its certificate against cacert (a PEM file; NULL: the system's
 * store). KH_ERR_INVAL for a URL refused, KH_ERR_NOMEM, KH_ERR_INTERNAL.
 */
KH_WARN_UNUSED kh_err kh_dist_client_new(const char *url, const char *cacert, struct kh_dist_client **out);
/* Free, wiping the session token. NULL does nothing. */
void kh_dist_client_free(struct kh_dist_client *c);
/* The server's (or the transport's) words about the last failure, "" when there are none. */
const char *kh_dist_client_error(const struct kh_dist_client *c);

/*
 * Log in (POST /v1/sessions): the session token is kept in c (wiped by kh_dist_client_free) and
 * sent with every later request. The caller wipes its password. KH_ERR_UNAUTHORISED for a wrong
 * name or password; KH_ERR_TRANSPORT when no answer came; KH_ERR_FORMAT for an answer that is
 * not the API's; any other refusal as the server's error code names it (KH_ERR_PEER_ERROR for
 * one this build does not know).
 */
KH_WARN_UNUSED kh_err kh_dist_login(struct kh_dist_client *c, const char *name, const char *password);

/* One program of the catalogue. */
struct kh_dist_listing {
	uint32_t id, version;
	uint64_t price;
	char name[KH_DIST_NAME_MAX + 1];
};

/*
 * Every program of the catalogue (GET /v1/programs, page after page), each handed to fn in the
 * server's order; a non-KH_OK return of fn ends the walk with that code. KH_ERR_FORMAT for an
 * answer that is not the API's (a name outside the manifest's characters included), or a next
 * page that does not move forward.
 */
KH_WARN_UNUSED kh_err kh_dist_list(struct kh_dist_client *c, kh_err (*fn)(void *arg, const struct kh_dist_listing *p),
				   void *arg);

/* What a purchase or a fetch again ended with. */
struct kh_dist_result {
	uint32_t program, version;
	uint32_t price;                        /* the receipt's */
	int charged;                           /* 1: this delivery moved money */
	int64_t balance;                       /* the account's after the charge */
	int resumed;                           /* 1: finished from BASE.part */
	uint8_t receipt[KH_DIST_RECEIPT_BYTES];
	uint8_t receipt_id[KH_DIST_RECEIPT_LEN];
};

/*
 * Buy program (receipt NULL) or fetch again on receipt (KH_DIST_RECEIPT_BYTES bytes; program is
 * then ignored), through the processor module behind proc, and write BASE.khpk, BASE.lic and
 * BASE.receipt. c must be logged in. When BASE.part is there, the purchase it records is finished
 * instead (*res->resumed set), whatever program or receipt was asked for.
 *
 * Refused before anything is sent: KH_ERR_EXISTS when BASE.receipt holds another receipt (a
 * purchase would replace it), KH_ERR_FORMAT for a receipt or a BASE.part that is not one,
 * KH_ERR_INVAL for a BASE.part of another server. Then any refusal of the server or the
 * processor as its code. On failure before the charge was asked, or when the server refused the
 * charge in a way that proves nothing was charged (KH_ERR_FUNDS; KH_ERR_DIST_SESSION, a delivery
 * never keyed), nothing is left of BASE.*; otherwise, from the charge on, BASE.part stays (and
 * only it), and *charge_maybe is set to 1: running the same fetch again finishes the purchase.
 * *res is written only on success.
 */
KH_WARN_UNUSED kh_err kh_dist_fetch(struct kh_dist_client *c, struct kh_transport *proc, uint32_t program,
				    const uint8_t *receipt, const char *base, struct kh_dist_result *res, int *charge_maybe);

/* ---- the state file BASE.part ----
 *
 *   keyhole dist part 1\n
 *   server URL\n
 *   delivery ID\n              decimal, 1 to 2^63-1
 *   package HEX\n              the package's SHA-256, 64 lowercase hexadecimal digits
 *   token B64URL\n             the pending licence token, 1 to KH_DIST_TOKEN_MAX bytes
 *
 * Nothing else: no other line, no line twice, no carriage return. */

struct kh_dist_part {
	char url[KH_DIST_URL_MAX + 1];
	uint64_t delivery;
	uint8_t package_hash[KH_SHA256_LEN];
	uint8_t token[KH_DIST_TOKEN_MAX];
	size_t token_len;
};

/* The largest state file (bytes). */
#define KH_DIST_PART_MAX 2048u

/* Write p as a state file into out (cap bytes); *len its length. KH_ERR_BUF, KH_ERR_INVAL. */
KH_WARN_UNUSED kh_err kh_dist_part_format(const struct kh_dist_part *p, char *out, size_t cap, size_t *len);
/* Read a state file of n bytes: KH_ERR_FORMAT for anything but the lines above. *p only on success. */
KH_WARN_UNUSED kh_err kh_dist_part_parse(const uint8_t *b, size_t n, struct kh_dist_part *p);

#endif
