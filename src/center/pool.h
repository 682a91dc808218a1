/*
 * The store connections of a center service (the management center, the distribution server):
 * one per HTTP thread, since a kh_store is one connection and not thread-safe (center zone).
 */
#ifndef KH_CENTER_POOL_H
#define KH_CENTER_POOL_H

#include <pthread.h>
#include <stddef.h>

#include "keyhole/store.h"

/*
 * The store connections: one per HTTP thread (a kh_store is one SQLite connection and not
 * thread-safe), taken from the pool on a thread's first request and given back, still open,
 * when the thread ends (pool.c).
 */
struct kh__pool {
	char *db;
	int sync_normal;
	pthread_key_t tls;
	int tls_ok;
	pthread_mutex_t mu; /* guards conns and their in_use */
	int mu_ok;
	struct kh__pool_conn {
		struct kh__pool *pool;
		struct kh_store *st;
		int in_use; /* held by a live thread (its thread-specific slot) */
	} **conns;
	size_t nconns, cap;
};

/* Open the pool of connections to db; nothing is opened until the first kh__pool_get. */
KH_WARN_UNUSED kh_err kh__pool_init(struct kh__pool *p, const char *db, int sync_normal);
/* This thread's store connection (opened on first use). */
KH_WARN_UNUSED kh_err kh__pool_get(struct kh__pool *p, struct kh_store **s);
/* Close every connection; only once the threads that used them are gone. */
void kh__pool_free(struct kh__pool *p);

/* Idle store connections the pool keeps open for the next threads. */
#define KH__POOL_IDLE 16

#endif
