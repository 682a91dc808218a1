/*
 * The bounded cache of checked results (vcache.h): 2^k sets of WAYS entries, a key's set named
 * by its first bytes (a SHA-256: spread evenly), the way least recently used in the set replaced.
 * One mutex over it all: a look-up is a few comparisons of 32 bytes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "center/escrow/vcache.h"

#define WAYS 4
#define SLOTS_MAX 65536u

struct slot {
	uint8_t key[KH_SHA256_LEN];
	uint64_t used; /* the tick of its last use; 0: empty */
	size_t len;
};

struct kh__vcache {
	pthread_mutex_t mu;
	unsigned nsets, count;
	size_t vmax;
	uint64_t tick;
	struct slot *slots; /* nsets * WAYS */
	uint8_t *vals;      /* nsets * WAYS * vmax */
};

kh_err kh__vcache_new(unsigned slots, size_t vmax, struct kh__vcache **out)
{
	struct kh__vcache *c;
	unsigned n = WAYS;

	if (!out || slots > SLOTS_MAX || vmax == 0 || vmax > 65536)
		return KH_ERR_INVAL;
	while (n < slots)
		n <<= 1;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	c->nsets = n / WAYS;
	c->vmax = vmax;
	if (!(c->slots = calloc(n, sizeof *c->slots)) || !(c->vals = calloc(n, vmax)) ||
	    pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c->slots);
		free(c->vals);
		free(c);
		return KH_ERR_NOMEM;
	}
	*out = c;
	return KH_OK;
}

void kh__vcache_free(struct kh__vcache *c)
{
	if (!c)
		return;
	kh_wipe(c->vals, (size_t)c->nsets * WAYS * c->vmax);
	free(c->vals);
	free(c->slots);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static size_t set_of(const struct kh__vcache *c, const uint8_t *key)
{
	uint32_t h = (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];

	return (size_t)(h & (c->nsets - 1)) * WAYS;
}

/* The slot holding key in its set, or NULL. Under the lock. */
static struct slot *find(struct kh__vcache *c, const uint8_t *key, size_t *at)
{
	size_t base = set_of(c, key);

	for (size_t i = base; i < base + WAYS; i++) {
		if (c->slots[i].used && memcmp(c->slots[i].key, key, KH_SHA256_LEN) == 0) {
			*at = i;
			return &c->slots[i];
		}
	}
	return NULL;
}

int kh__vcache_get(struct kh__vcache *c, const uint8_t key[static KH_SHA256_LEN], void *val, size_t cap, size_t *len)
{
	struct slot *s;
	size_t at = 0;
	int hit = 0;

	if (!c || !val || !len)
		return 0;
	pthread_mutex_lock(&c->mu);
	if ((s = find(c, key, &at)) != NULL && s->len <= cap) {
		s->used = ++c->tick;
		memcpy(val, c->vals + at * c->vmax, s->len);
		*len = s->len;
		hit = 1;
	}
	pthread_mutex_unlock(&c->mu);
	return hit;
}

void kh__vcache_put(struct kh__vcache *c, const uint8_t key[static KH_SHA256_LEN], const void *val, size_t len)
{
	struct slot *s;
	size_t at = 0;

	if (!c || !val || len > c->vmax)
		return;
	pthread_mutex_lock(&c->mu);
	if ((s = find(c, key, &at)) == NULL) {
		size_t base = set_of(c, key);
		/* an empty way, else the least recently used one */
		at = base;
		for (size_t i = base; i < base + WAYS; i++)
			if (c->slots[i].used < c->slots[at].used)
				at = i;
		s = &c->slots[at];
		if (!s->used)
			c->count++;
		memcpy(s->key, key, KH_SHA256_LEN);
	}
	memcpy(c->vals + at * c->vmax, val, len);
	s->len = len;
	s->used = ++c->tick;
	pthread_mutex_unlock(&c->mu);
}

unsigned kh__vcache_count(struct kh__vcache *c)
{
	unsigned n;

	if (!c)
		return 0;
	pthread_mutex_lock(&c->mu);
	n = c->count;
	pthread_mutex_unlock(&c->mu);
	return n;
}

unsigned kh__vcache_slots(const struct kh__vcache *c)
{
	return c ? c->nsets * WAYS : 0;
}
