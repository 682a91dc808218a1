/*
 * A bounded cache of results a service worked out from bytes a client sent, keyed by the
 * SHA-256 of those bytes (center zone, src/center/escrow/vcache.c): the escrow keeps there the
 * device certificates its authority's check passed, and the moduli of its listings' keys, so that
 * a device buying again is not parsed and verified again. What is kept is only ever a result the
 * full check gave; a miss is always the full check.
 *
 * A fixed table allocated once (set-associative, four ways a set, the least recently used way
 * replaced): never more than its slots, whatever the clients send. Thread-safe.
 */
#ifndef KH_CENTER_ESCROW_VCACHE_H
#define KH_CENTER_ESCROW_VCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/crypto.h"
#include "keyhole/err.h"

struct kh__vcache;

/* A cache of at least `slots` entries (rounded up to a power of two, at least 4, at most 65,536)
 * of values up to vmax bytes each. */
KH_WARN_UNUSED kh_err kh__vcache_new(unsigned slots, size_t vmax, struct kh__vcache **out);
/* Forget everything (values wiped) and free. NULL ok. */
void kh__vcache_free(struct kh__vcache *c);
/* The value kept under key into val (cap bytes, *len): 1, or 0 when none (or cap too small). */
int kh__vcache_get(struct kh__vcache *c, const uint8_t key[static KH_SHA256_LEN], void *val, size_t cap,
		   size_t *len);
/* Keep val (len <= vmax, else nothing kept) under key, in place of what the key had. */
void kh__vcache_put(struct kh__vcache *c, const uint8_t key[static KH_SHA256_LEN], const void *val, size_t len);
/* Entries kept now; the table's size. */
unsigned kh__vcache_count(struct kh__vcache *c);
unsigned kh__vcache_slots(const struct kh__vcache *c);

#endif
