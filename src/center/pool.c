/*
 * A center service's store connections. libmicrohttpd runs each connection on a thread of its own,
 * and a kh_store is one SQLite connection that is not thread-safe. A thread takes a store
 * connection from this pool on its first request and keeps it in a thread-specific slot until
 * it ends, when the connection goes back to the pool, still open; SQLite (WAL) lets readers run
 * beside the one writer. kh__pool_free closes them once the server's threads are gone.
 */
#include <stdlib.h>
#include <string.h>

#include "center/pool.h"

/* A thread ends (libmicrohttpd ends a connection's thread with the connection): its store
 * connection goes back to the pool for the next thread, open and ready. */
static void conn_release(void *v)
{
	struct kh__pool_conn *k = v;
	struct kh__pool *p = k->pool;
	size_t idle = 0, at = 0;

	pthread_mutex_lock(&p->mu);
	k->in_use = 0;
	for (size_t i = 0; i < p->nconns; i++) {
		idle += !p->conns[i]->in_use;
		if (p->conns[i] == k)
			at = i;
	}
	/* A burst of connections leaves many threads' worth of open databases: keep a few for the
	 * next ones, close the rest (each holds file descriptors, a statement cache, a page cache). */
	if (idle > KH__POOL_IDLE) {
		p->conns[at] = p->conns[--p->nconns];
		pthread_mutex_unlock(&p->mu);
		kh_store_close(k->st);
		free(k);
		return;
	}
	pthread_mutex_unlock(&p->mu);
}

kh_err kh__pool_get(struct kh__pool *p, struct kh_store **s)
{
	struct kh__pool_conn *k = pthread_getspecific(p->tls), **grown;
	struct kh_store_opts opts = {0};
	kh_err r = KH_OK;

	if (k) {
		*s = k->st;
		return KH_OK;
	}
	/* A free connection of the pool, else a new one, opened under the mutex: opening checks the
	 * schema, and a burst of new threads opening at once would only contend for that. */
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->nconns && !k; i++)
		if (!p->conns[i]->in_use)
			k = p->conns[i];
	if (!k) {
		opts.sync_normal = p->sync_normal;
		if (p->nconns == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 8;
			if ((grown = realloc(p->conns, cap * sizeof *grown)) == NULL) {
				r = KH_ERR_NOMEM;
				goto out;
			}
			p->conns = grown;
			p->cap = cap;
		}
		if ((k = calloc(1, sizeof *k)) == NULL) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		if ((r = kh_store_open_opts(p->db, &opts, &k->st)) != KH_OK) {
			free(k); /* the store logged it (event=store.error) */
			k = NULL;
			goto out;
		}
		k->pool = p;
		p->conns[p->nconns++] = k;
	}
	k->in_use = 1;
out:
	pthread_mutex_unlock(&p->mu);
	if (r != KH_OK)
		return r;
	if (pthread_setspecific(p->tls, k) != 0) {
		conn_release(k);
		return KH_ERR_NOMEM;
	}
	*s = k->st;
	return KH_OK;
}

kh_err kh__pool_init(struct kh__pool *p, const char *db, int sync_normal)
{
	memset(p, 0, sizeof *p);
	if (pthread_mutex_init(&p->mu, NULL) != 0)
		return KH_ERR_NOMEM;
	p->mu_ok = 1;
	if (pthread_key_create(&p->tls, conn_release) != 0)
		return KH_ERR_NOMEM;
	p->tls_ok = 1;
	p->sync_normal = sync_normal;
	if ((p->db = strdup(db)) == NULL)
		return KH_ERR_NOMEM;
	return KH_OK;
}

void kh__pool_free(struct kh__pool *p)
{
	/* the key first: no thread's destructor may touch a connection freed below */
	if (p->tls_ok)
		pthread_key_delete(p->tls);
	for (size_t i = 0; i < p->nconns; i++) {
		kh_store_close(p->conns[i]->st);
		free(p->conns[i]);
	}
	free(p->conns);
	if (p->mu_ok)
		pthread_mutex_destroy(&p->mu);
	free(p->db);
	memset(p, 0, sizeof *p);
}
