/*
 * Group commit (include/keyhole/store.h, docs/internals/store.md): many threads' transaction
 * functions run in one write transaction, each in its own savepoint, and share its one durable
 * commit. Callers queue a job and wait on its own condition variable (so a batch's end wakes only
 * the callers it concerns, not every waiter); whoever finds no batch running leads the next. The
 * leader's turn is the only time the group's connection is used, so the connection needs no lock
 * of its own beyond the "leading" flag. On a backend without group_batch (PostgreSQL), a batch
 * runs its jobs one transaction each.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "keyhole/log.h"
#include "store_int.h"

#define DEFAULT_BATCH 64
#define BATCH_ATTEMPTS 5

struct job {
	kh_store_tx_fn fn;
	void *arg;
	kh_err r;
	int done;
	pthread_cond_t cv; /* its caller waits on it: woken when done, or to lead the next batch */
	struct job *next;
};

struct kh_store_group {
	pthread_mutex_t mu;
	struct kh_store *s;
	struct job *head, **tail;
	unsigned waiting;
	int leading;
	unsigned max_batch;
	uint64_t batches, jobs;
};

kh_err kh_store_group_new(const char *url, const struct kh_store_opts *opts, unsigned max_batch,
			  struct kh_store_group **out)
{
	struct kh_store_group *g;
	kh_err r;

	if (url == NULL || out == NULL)
		return KH_ERR_INVAL;
	if ((g = calloc(1, sizeof *g)) == NULL)
		return KH_ERR_NOMEM;
	if (pthread_mutex_init(&g->mu, NULL) != 0) {
		free(g);
		return KH_ERR_NOMEM;
	}
	if ((r = kh_store_open_opts(url, opts, &g->s)) != KH_OK) {
		pthread_mutex_destroy(&g->mu);
		free(g);
		return r;
	}
	g->tail = &g->head;
	g->max_batch = max_batch ? max_batch : DEFAULT_BATCH;
	*out = g;
	return KH_OK;
}

void kh_store_group_free(struct kh_store_group *g)
{
	if (g == NULL)
		return;
	kh_store_close(g->s);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

static void pause_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Every job of the batch gets r (the batch as a whole failed: nothing of it is kept). */
static void fail_all(struct job *b, kh_err r)
{
	for (; b; b = b->next)
		b->r = r;
}

/*
 * One attempt at the batch: begin, each job in its savepoint, commit. Returns KH_OK when the
 * batch committed (each job's own result is in its r), else the batch's error.
 */
static kh_err attempt(struct kh_store *s, struct job *b)
{
	kh_err r;

	if ((r = kh_store_begin(s)) != KH_OK)
		return r;
	for (struct job *j = b; j; j = j->next) {
		if ((r = kh__savepoint(s)) != KH_OK)
			goto abort;
		j->r = j->fn(s, j->arg);
		r = j->r == KH_OK ? kh__savepoint_release(s) : kh__savepoint_undo(s);
		if (r != KH_OK)
			goto abort; /* the transaction itself is gone or broken: nothing of it stands */
	}
	return kh_store_commit(s); /* rolls back by itself when it fails */
abort:
	kh_store_rollback(s);
	return r;
}

static void run_batch(struct kh_store_group *g, struct job *b)
{
	kh_err r = KH_ERR_DB_BUSY;

	/* A server that commits for many connections at once (PostgreSQL) gains nothing from the
	 * batch: each job is a transaction of its own, with kh_store_run_tx's retry. */
	if (!g->s->be->group_batch) {
		for (struct job *j = b; j; j = j->next)
			j->r = kh_store_run_tx(g->s, j->fn, j->arg);
		return;
	}
	for (int n = 0; n < BATCH_ATTEMPTS; n++) {
		if (n > 0) {
			kh_log_debug("store.group_retry", "attempt=%d", n + 1);
			kh__count_retry();
			pause_ms(1L << n);
		}
		r = attempt(g->s, b);
		if (r != KH_ERR_DB_BUSY)
			break;
	}
	if (r != KH_OK)
		fail_all(b, r);
}

kh_err kh_store_group_run(struct kh_store_group *g, kh_store_tx_fn fn, void *arg)
{
	struct job me = {.fn = fn, .arg = arg, .r = KH_ERR_INTERNAL};

	if (g == NULL || fn == NULL)
		return KH_ERR_INVAL;
	if (pthread_cond_init(&me.cv, NULL) != 0)
		return KH_ERR_NOMEM;
	pthread_mutex_lock(&g->mu);
	*g->tail = &me;
	g->tail = &me.next;
	g->waiting++;
	while (!me.done) {
		struct job *batch, *last;
		unsigned n;

		if (g->leading) {
			pthread_cond_wait(&me.cv, &g->mu);
			continue;
		}
		/* Lead: take what is queued (up to max_batch), run it with the lock released. */
		g->leading = 1;
		batch = last = g->head;
		for (n = 1; n < g->max_batch && last->next; n++)
			last = last->next;
		g->head = last->next;
		if (g->head == NULL)
			g->tail = &g->head;
		last->next = NULL;
		g->waiting -= n;
		pthread_mutex_unlock(&g->mu);

		run_batch(g, batch);

		pthread_mutex_lock(&g->mu);
		for (struct job *j = batch, *next; j; j = next) {
			next = j->next; /* j may be gone once done is set and the mutex released */
			j->done = 1;
			if (j != &me)
				pthread_cond_signal(&j->cv);
		}
		g->batches++;
		g->jobs += n;
		g->leading = 0;
		/* Only the callers whose jobs are done are woken, and the first one queued, to lead. */
		if (g->head)
			pthread_cond_signal(&g->head->cv);
	}
	pthread_mutex_unlock(&g->mu);
	pthread_cond_destroy(&me.cv);
	return me.r;
}

void kh_store_group_stats(struct kh_store_group *g, uint64_t *batches, uint64_t *jobs, unsigned *waiting)
{
	pthread_mutex_lock(&g->mu);
	if (batches)
		*batches = g->batches;
	if (jobs)
		*jobs = g->jobs;
	if (waiting)
		*waiting = g->waiting;
	pthread_mutex_unlock(&g->mu);
}

int kh_store_group_batches(const struct kh_store_group *g)
{
	return g != NULL && g->s->be->group_batch;
}
