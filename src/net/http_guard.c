/*
 * The HTTP server's table of client addresses (docs/internals/http.md "Per-address limits"): a
 * token bucket per address for the open routes' request budget, and the time until which an
 * address that missed a receive deadline is refused new connections. The table has a fixed
 * size (KH__GUARD_SETS sets of KH__GUARD_WAYS entries), so no number of addresses makes it
 * grow: a new address takes the entry of its set that matters least (one whose bucket is full,
 * which is the same as not being there). IPv4 addresses count one by one; an IPv6 address counts
 * by its /64, the block one subscriber line usually gets. The set is chosen by a hash keyed with
 * a random value drawn at start, so an outsider cannot aim many addresses at one set.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "keyhole/crypto.h"
#include "http_int.h"

#define SETS KH__GUARD_SETS
#define WAYS KH__GUARD_WAYS
#define MILLI 1000 /* a token is 1000 milli-tokens: refills are computed per millisecond */

struct slot {
	uint8_t key[16];
	uint8_t used;
	int64_t last_ms;     /* when tokens was last brought up to date */
	int64_t tokens;      /* milli-tokens */
	int64_t ban_until_ms;
};

struct kh__guard {
	pthread_mutex_t mu;
	uint64_t seed[2];
	unsigned rate, burst; /* tokens per second, bucket size; rate 0: no budget */
	struct slot slots[SETS][WAYS];
};

kh_err kh__guard_new(unsigned rate, unsigned burst, struct kh__guard **out)
{
	struct kh__guard *g = calloc(1, sizeof *g);
	kh_err r;

	if (!g)
		return KH_ERR_NOMEM;
	if ((r = kh_random((uint8_t *)g->seed, sizeof g->seed)) != KH_OK) {
		free(g);
		return r;
	}
	if (pthread_mutex_init(&g->mu, NULL) != 0) {
		free(g);
		return KH_ERR_NOMEM;
	}
	g->rate = rate;
	g->burst = burst ? burst : (rate ? rate : 1);
	*out = g;
	return KH_OK;
}

void kh__guard_free(struct kh__guard *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->mu);
	free(g);
}

/* The key an address counts under (16 bytes); 0 for an address family the table does not know. */
static int addr_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (!sa)
		return 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		key[10] = key[11] = 0xff; /* the IPv4-mapped form, which a /64 key never has */
		memcpy(key + 12, &in->sin_addr, 4);
		return 1;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(a, mapped, 12) == 0) {
			memcpy(key, a, 16); /* an IPv4 client on an IPv6 socket: the same key as over IPv4 */
			return 1;
		}
		memcpy(key, a, 8); /* the /64 */
		return 1;
	}
	return 0;
}

/* The set of a key: a keyed multiply-xorshift over its two halves. */
static size_t set_of(const struct kh__guard *g, const uint8_t key[16])
{
	uint64_t a, b, x;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	x = (a ^ g->seed[0]) * 0x9E3779B97F4A7C15ull;
	x ^= x >> 29;
	x = (x ^ b ^ g->seed[1]) * 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (size_t)(x % SETS);
}

/* Bring a slot's tokens up to now. */
static void refill(const struct kh__guard *g, struct slot *s, int64_t now_ms)
{
	int64_t cap = (int64_t)g->burst * MILLI, dt = now_ms - s->last_ms;

	if (dt > 0) {
		/* rate tokens per second = rate milli-tokens per millisecond */
		if (dt > cap) /* no overflow below; beyond this the bucket is full anyway */
			dt = cap;
		s->tokens += dt * (int64_t)g->rate;
		if (s->tokens > cap)
			s->tokens = cap;
		s->last_ms = now_ms;
	}
}

/*
 * The slot of key, or (create) a new one in its set: an unused entry, else the one whose loss
 * matters least: not banned and with the fullest bucket, else the ban that ends first. NULL when
 * absent and !create.
 */
static struct slot *find(struct kh__guard *g, const uint8_t key[16], int64_t now_ms, int create)
{
	struct slot *set = g->slots[set_of(g, key)], *victim = NULL;
	int64_t best = 0;

	for (int i = 0; i < WAYS; i++)
		if (set[i].used && memcmp(set[i].key, key, 16) == 0)
			return &set[i];
	if (!create)
		return NULL;
	for (int i = 0; i < WAYS && !victim; i++)
		if (!set[i].used)
			victim = &set[i];
	for (int i = 0; i < WAYS && !victim; i++) {
		int64_t score;
		refill(g, &set[i], now_ms);
		/* banned: below any bucket, the sooner its ban ends the better a victim */
		score = set[i].ban_until_ms > now_ms ? -(set[i].ban_until_ms - now_ms) - 1 : set[i].tokens;
		if (i == 0 || score > best) {
			best = score;
			victim = &set[i];
		}
	}
	memset(victim, 0, sizeof *victim);
	memcpy(victim->key, key, 16);
	victim->used = 1;
	victim->last_ms = now_ms;
	victim->tokens = (int64_t)g->burst * MILLI;
	return victim;
}

unsigned kh__guard_take(struct kh__guard *g, const struct sockaddr *sa, int64_t now_ms)
{
	uint8_t key[16];
	struct slot *s;
	unsigned wait = 0;

	if (!g || !g->rate || !addr_key(sa, key))
		return 0;
	pthread_mutex_lock(&g->mu);
	s = find(g, key, now_ms, 1);
	refill(g, s, now_ms);
	if (s->tokens >= MILLI) {
		s->tokens -= MILLI;
	} else {
		/* the milliseconds until one whole token, rounded up to whole seconds (Retry-After) */
		int64_t ms = (MILLI - s->tokens + g->rate - 1) / g->rate;
		wait = (unsigned)((ms + 999) / 1000);
		if (wait == 0)
			wait = 1;
	}
	pthread_mutex_unlock(&g->mu);
	return wait;
}

void kh__guard_ban(struct kh__guard *g, const struct sockaddr *sa, int64_t until_ms, int64_t now_ms)
{
	uint8_t key[16];
	struct slot *s;

	if (!g || !addr_key(sa, key))
		return;
	pthread_mutex_lock(&g->mu);
	s = find(g, key, now_ms, 1);
	if (s->ban_until_ms < until_ms)
		s->ban_until_ms = until_ms;
	pthread_mutex_unlock(&g->mu);
}

int kh__guard_banned(struct kh__guard *g, const struct sockaddr *sa, int64_t now_ms)
{
	uint8_t key[16];
	struct slot *s;
	int banned = 0;

	if (!g || !addr_key(sa, key))
		return 0;
	pthread_mutex_lock(&g->mu);
	s = find(g, key, now_ms, 0);
	banned = s && s->ban_until_ms > now_ms;
	pthread_mutex_unlock(&g->mu);
	return banned;
}
