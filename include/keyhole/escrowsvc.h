/*
 * The escrow as a service (center zone, src/center/escrow/service.c and admin.c; seed 003,
 * docs/protocols/escrow.md): accounts and their money, sellers' listings (one RSA key each, in
 * the signing process: keyhole/secmod.h), buyers' purchases held, answered, then posted to the
 * seller or given back, on the center's store (keyhole/store_escrow.h). `keyhole escrow serve`
 * hosts it.
 */
#ifndef KEYHOLE_ESCROWSVC_H
#define KEYHOLE_ESCROWSVC_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/store.h"

struct kh_escrow_service;
struct kh_http;

struct kh_escrow_service_config {
	const char *db;     /* store URL (kh_store_open) */
	const char *dir;    /* the escrow's identity, role escrow (keyhole/identity.h) */
	const char *secmod; /* the signing process's socket */
	unsigned key_bits;  /* listing keys: 2048 (0), 3072 or 4096 */
	/* How long a purchase's payment stays held without a notice, seconds, when the seller's
	 * listing does not say (0: KH_ESCROW_DEADLINE; 1 to KH_ESCROW_DEADLINE_MAX). */
	unsigned deadline;
	/* Seconds between two sweeps of the purchases past their deadline (0: KH_ESCROW_SWEEP_EVERY;
	 * the sweeper runs on every instance, and two never post one purchase twice). */
	unsigned sweep_every;
	/* 1: the store's synchronous=NORMAL (NOT durable; benchmarks only). */
	int store_sync_normal;
	/* The clock of deadlines and certificates, Unix seconds (NULL: time()). For tests. */
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};

#define KH_ESCROW_DEADLINE (7u * 86400u)
#define KH_ESCROW_DEADLINE_MAX (366u * 86400u)
#define KH_ESCROW_SWEEP_EVERY 60u
/* Listings one seller account may have: each is an RSA key on the signing process's disk. */
#define KH_ESCROW_LISTINGS_MAX 1000
/* An account's API token: 32 random bytes, base64url (43 characters); kept as its SHA-256. */
#define KH_ESCROW_TOKEN_LEN 32
#define KH_ESCROW_TOKEN_B64 44

/*
 * Open the service: the identity in cfg->dir (its key kept in memory, wiped by
 * kh_escrow_service_free), a client of the signing process (not connected until used) and the
 * store (created or migrated). On failure *what (may be NULL) names what failed.
 */
KH_WARN_UNUSED kh_err kh_escrow_service_new(const struct kh_escrow_service_config *cfg,
					    struct kh_escrow_service **out, const char **what);
/* Add the /v1 routes to h (before kh_http_start); s must outlive h's threads. */
KH_WARN_UNUSED kh_err kh_escrow_service_add_routes(struct kh_escrow_service *s, struct kh_http *h);
/* Start the sweeper thread (after kh_http_start, or alone); stopped by kh_escrow_service_free. */
KH_WARN_UNUSED kh_err kh_escrow_service_start_sweeper(struct kh_escrow_service *s);
/* One sweep now: the purchases past their deadline posted to their sellers; *count of them. */
KH_WARN_UNUSED kh_err kh_escrow_service_sweep(struct kh_escrow_service *s, unsigned *count);
/* Stop the sweeper, close the store connections and the signing process's, wipe the keys, free.
 * Only once the HTTP server has stopped. NULL ok. */
void kh_escrow_service_free(struct kh_escrow_service *s);

/* ---- what the operator does on the store directly (`keyhole escrow account ...`) ---- */

/*
 * A new account in currency (three upper-case letters) with empty buckets, and its API token
 * (base64url, NUL-terminated, into token): shown once, kept only as its SHA-256. KH_ERR_EXISTS
 * for a name taken, KH_ERR_INVAL for a bad name or currency.
 */
KH_WARN_UNUSED kh_err kh_escrow_account_new(struct kh_store *st, const char *name, const char *currency, int64_t now,
					    int64_t *id, char token[static KH_ESCROW_TOKEN_B64]);
/* A fresh token for the account: the old ones stop working. */
KH_WARN_UNUSED kh_err kh_escrow_account_token(struct kh_store *st, int64_t account, int64_t now,
					      char token[static KH_ESCROW_TOKEN_B64]);

#endif
