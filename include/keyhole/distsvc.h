/*
 * The distribution server as a service (center zone, src/center/distrib/service.c and admin.c):
 * the first path of program distribution over the HTTP layer (keyhole/http.h) — accounts and
 * their sessions, the catalogue, deliveries, charges and receipts — on the center's store
 * (keyhole/store_dist.h), around the second path's engine (keyhole/distsrv.h). `keyhole dist
 * serve` hosts it. The API: docs/protocols/distribution.md.
 */
#ifndef KEYHOLE_DISTSVC_H
#define KEYHOLE_DISTSVC_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/store.h"

struct kh_dist_service;
struct kh_http;

struct kh_dist_service_config {
	const char *db;  /* store URL (kh_store_open) */
	const char *dir; /* the server's identity (kh_dist_identity_load) */
	/* How long a login lasts, seconds (0: KH_DIST_SESSION_TTL; 60 to 86400). */
	unsigned session_ttl;
	/* 1: the store's synchronous=NORMAL (NOT durable; benchmarks only). */
	int store_sync_normal;
	/* The clock of sessions, certificates and receipts, Unix seconds (NULL: time()). For tests. */
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};

#define KH_DIST_SESSION_TTL 3600u
/* The largest program a publisher may upload. */
#define KH_DIST_PROGRAM_MAX (256u * 1024u * 1024u)
/* Passwords: 1 to this many bytes. */
#define KH_DIST_PASSWORD_MAX 1024u

/*
 * Open the service: the identity in cfg->dir (its key kept in memory, wiped by
 * kh_dist_service_free) and the store (created or migrated). On failure *what (may be NULL)
 * names what failed: the database or the directory.
 */
KH_WARN_UNUSED kh_err kh_dist_service_new(const struct kh_dist_service_config *cfg, struct kh_dist_service **out,
					  const char **what);
/* Add the /v1 routes to h (before kh_http_start); s must outlive h's threads. */
KH_WARN_UNUSED kh_err kh_dist_service_add_routes(struct kh_dist_service *s, struct kh_http *h);
/* Close the store connections, wipe the keys, free. Only once the HTTP server has stopped. NULL ok. */
void kh_dist_service_free(struct kh_dist_service *s);

/* ---- what the operator does on the store directly (`keyhole dist account|publish`) ---- */

/*
 * The scrypt of a password (N = 2^15, r = 8, p = 1, through OpenSSL's KDF) with a 16-byte salt.
 * KH_ERR_INVAL for a password of 0 or more than KH_DIST_PASSWORD_MAX bytes.
 */
KH_WARN_UNUSED kh_err kh_dist_password_hash(const char *pw, size_t len, const uint8_t salt[static 16],
					    uint8_t out[static 32]);
/* A new account (fresh salt, the password's hash) with balance 0; KH_ERR_EXISTS for a name taken. */
KH_WARN_UNUSED kh_err kh_dist_account_new(struct kh_store *st, const char *name, const char *pw, size_t len,
					  int64_t now, int64_t *id);
/*
 * Publish a program: the manifest must parse (KH_ERR_FORMAT, with its line in *line when not
 * NULL), its version be a number from 1 to 2^32 - 1 (the catalogue's version: KH_ERR_FORMAT,
 * line 0, otherwise); the code 1 to KH_DIST_PROGRAM_MAX bytes (KH_ERR_TOO_LARGE). KH_ERR_EXISTS
 * for a name and version published already.
 */
KH_WARN_UNUSED kh_err kh_dist_publish(struct kh_store *st, const uint8_t *manifest, size_t mlen, const uint8_t *code,
				      size_t clen, uint32_t price, int64_t now, int64_t *id,
				      size_t *line);

#endif
