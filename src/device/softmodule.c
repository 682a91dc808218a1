/*
 * Software module host (include/keyhole/softmodule.h): the chip around a kh_module — memory,
 * root key, sealed-state storage and a monotonic counter — built from files.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/log.h"
#include "keyhole/module.h"
#include "keyhole/softmodule.h"

struct kh_softmod {
	void *mem;
	struct kh_module *m;
	char *card_path; /* NULL while held in memory */
	char *ctr_path;
	uint8_t root_key[KH_ROOT_KEY_LEN];
	uint8_t blob[KH_MODULE_BLOB_MAX]; /* last stored blob (memory mode) */
	size_t bloblen;
	uint64_t fixed_now;
	int lock_fd;           /* the key file, flock'ed while we hold the module (-1: none) */
	uint64_t disk_counter; /* the counter of the card file as we last read or wrote it */
};

char *kh_softmod_key_path(const char *card)
{
	size_t n = strlen(card);
	char *k = malloc(n + 5);
	if (!k)
		return NULL;
	if (n > 5 && strcmp(card + n - 5, ".card") == 0) {
		memcpy(k, card, n - 5);
		strcpy(k + n - 5, ".key");
	} else {
		memcpy(k, card, n);
		strcpy(k + n, ".key");
	}
	return k;
}

static uint64_t now_cb(void *ctx)
{
	struct kh_softmod *s = ctx;
	return s->fixed_now ? s->fixed_now : (uint64_t)time(NULL);
}

static kh_err write_counter(const char *path, uint64_t c)
{
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", c);
	return kh_file_write_atomic(path, (const uint8_t *)buf, (size_t)n, 0600);
}

static kh_err store_cb(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	struct kh_softmod *s = ctx;
	kh_err r;

	if (len > sizeof s->blob)
		return KH_ERR_TOO_LARGE;
	if (s->card_path) {
		/* Someone wrote the card file behind our back: never overwrite what it holds. */
		uint8_t *cur = NULL;
		size_t curlen = 0;
		uint64_t c = 0;
		r = kh_file_read(s->card_path, KH_MODULE_BLOB_MAX, &cur, &curlen);
		if (r == KH_OK)
			r = kh_module_blob_counter(cur, curlen, &c);
		kh_file_free(cur, curlen);
		if (r != KH_OK || c != s->disk_counter) {
			kh_log_warn("softmod.changed", "file=%s counter=%llu expected=%llu", s->card_path,
				    (unsigned long long)c, (unsigned long long)s->disk_counter);
			return KH_ERR_MODULE_CHANGED;
		}
		/* State first, then the counter: a crash in between leaves a newer state and an older
		 * counter, which still loads; the reverse order could lock the card out. */
		if ((r = kh_file_write_atomic(s->card_path, blob, len, 0600)) != KH_OK)
			return r;
		s->disk_counter = counter;
		/* The state is in place; a counter that lags behind it still loads (see above), so a
		 * failure here does not make the command fail. */
		if (write_counter(s->ctr_path, counter) != KH_OK)
			kh_log_warn("softmod.counter", "error=%s counter=%llu", kh_err_name(KH_ERR_IO),
				    (unsigned long long)counter);
	}
	memcpy(s->blob, blob, len);
	s->bloblen = len;
	return KH_OK;
}

static kh_err alloc(struct kh_softmod **out)
{
	struct kh_softmod *s = calloc(1, sizeof *s);
	if (!s)
		return KH_ERR_NOMEM;
	if (posix_memalign(&s->mem, 16, kh_module_size()) != 0) {
		free(s);
		return KH_ERR_NOMEM;
	}
	s->lock_fd = -1;
	*out = s;
	return KH_OK;
}

static kh_err start(struct kh_softmod *s)
{
	struct kh_module_env env = {.store = store_cb, .now = now_cb, .ctx = s};
	return kh_module_init(s->mem, kh_module_size(), s->root_key, &env, &s->m);
}

static kh_err read_counter(const char *path, uint64_t *c)
{
	uint8_t *d = NULL;
	size_t n;
	char buf[32], *end;
	kh_err r = kh_file_read(path, 31, &d, &n);

	*c = 0;
	if (r == KH_ERR_NOTFOUND)
		return KH_ERR_COUNTER_MISSING;
	if (r != KH_OK)
		return r;
	memcpy(buf, d, n);
	buf[n] = 0;
	kh_file_free(d, n);
	errno = 0;
	*c = strtoull(buf, &end, 10);
	if (errno || end == buf || (*end && strcmp(end, "\n") != 0))
		return KH_ERR_FORMAT;
	return KH_OK;
}

kh_err kh_softmod_open(const char *card_path, const char *key_path, struct kh_softmod **out,
		       enum kh_softmod_file *which)
{
	enum kh_softmod_file w = KH_SOFTMOD_CARD;
	struct kh_softmod *s = NULL;
	uint8_t *key = NULL, *blob = NULL;
	size_t keylen = 0, bloblen = 0;
	char *kp = NULL;
	uint64_t min;
	kh_err r;

	if (!key_path && !(key_path = kp = kh_softmod_key_path(card_path)))
		return KH_ERR_NOMEM;
	if ((r = alloc(&s)) != KH_OK)
		goto out;
	if (!(s->card_path = strdup(card_path)) ||
	    asprintf(&s->ctr_path, "%s.ctr", card_path) < 0) {
		s->ctr_path = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	w = KH_SOFTMOD_KEY;
	if ((r = kh_keyfile_read(key_path, 256, &key, &keylen)) != KH_OK)
		goto out;
	if ((s->lock_fd = open(key_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		r = errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO;
		goto out;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		r = errno == EWOULDBLOCK ? KH_ERR_MODULE_BUSY : KH_ERR_IO;
		w = KH_SOFTMOD_CARD;
		goto out;
	}
	if ((r = kh_hex_decode((const char *)key, keylen, s->root_key, sizeof s->root_key)) != KH_OK)
		goto out;
	w = KH_SOFTMOD_CARD;
	if ((r = kh_file_read(card_path, KH_MODULE_BLOB_MAX, &blob, &bloblen)) != KH_OK)
		goto out;
	w = KH_SOFTMOD_COUNTER;
	if ((r = read_counter(s->ctr_path, &min)) != KH_OK)
		goto out;
	w = KH_SOFTMOD_CARD;
	if ((r = start(s)) != KH_OK)
		goto out;
	/* The module holds its state key now; the root key has no further use here. */
	kh_wipe(s->root_key, sizeof s->root_key);
	if ((r = kh_module_load(s->m, blob, bloblen, min)) != KH_OK) {
		if (r == KH_ERR_ROLLBACK)
			w = KH_SOFTMOD_COUNTER;
		goto out;
	}
	s->disk_counter = kh_module_counter(s->m);
	*out = s;
	s = NULL;
out:
	kh_file_free(key, keylen);
	kh_file_free(blob, bloblen);
	free(kp);
	kh_softmod_free(s);
	if (r != KH_OK && which)
		*which = w;
	return r;
}

kh_err kh_softmod_new_blank(struct kh_softmod **out)
{
	struct kh_softmod *s = NULL;
	kh_err r;

	if ((r = alloc(&s)) != KH_OK)
		return r;
	if ((r = kh_random(s->root_key, sizeof s->root_key)) != KH_OK || (r = start(s)) != KH_OK) {
		kh_softmod_free(s);
		return r;
	}
	*out = s;
	return KH_OK;
}

kh_err kh_softmod_check_free(const char *card_path, const char *key_path)
{
	char *kp = NULL, *ctr = NULL, *dir = NULL, *slash;
	struct stat st;
	kh_err r = KH_OK;

	if (!key_path && !(key_path = kp = kh_softmod_key_path(card_path)))
		return KH_ERR_NOMEM;
	if (asprintf(&ctr, "%s.ctr", card_path) < 0) {
		ctr = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (stat(card_path, &st) == 0 || stat(key_path, &st) == 0 || stat(ctr, &st) == 0) {
		r = KH_ERR_EXISTS;
		goto out;
	}
	if ((slash = strrchr(card_path, '/')) && slash != card_path) {
		if (!(dir = strndup(card_path, (size_t)(slash - card_path)))) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
			r = KH_ERR_NOTFOUND;
	}
out:
	free(kp);
	free(ctr);
	free(dir);
	return r;
}

kh_err kh_softmod_save(struct kh_softmod *s, const char *card_path, const char *key_path)
{
	char hex[2 * KH_ROOT_KEY_LEN + 2], cbuf[32];
	char *kp = NULL, *ctr = NULL, *cp = NULL;
	int made_key = 0, made_card = 0, n;
	kh_err r;

	if (s->card_path)
		return KH_ERR_INVAL;
	if (!key_path && !(key_path = kp = kh_softmod_key_path(card_path)))
		return KH_ERR_NOMEM;
	if (!(cp = strdup(card_path)) || asprintf(&ctr, "%s.ctr", card_path) < 0) {
		ctr = NULL;
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* A clear refusal up front; the create-only writes below are what makes it hold. */
	if ((r = kh_softmod_check_free(card_path, key_path)) != KH_OK)
		goto out;
	/* A blank module has stored nothing yet: its first sealed state is the one written. */
	if (!s->bloblen && (r = kh_module_seal(s->m)) != KH_OK)
		goto out;
	kh_hex_encode(s->root_key, sizeof s->root_key, hex);
	strcat(hex, "\n");
	/*
	 * Key first: a card file without its key would be useless, a stray key file harmless. Each
	 * file is created only if absent, so a concurrent issue to the same path cannot pair our key
	 * with its card. KH_ERR_IO may come after the file was created: it is ours to remove.
	 */
	r = kh_file_write_new(key_path, (const uint8_t *)hex, strlen(hex), 0600);
	made_key = r == KH_OK || r == KH_ERR_IO;
	if (r != KH_OK)
		goto out;
	r = kh_file_write_new(card_path, s->blob, s->bloblen, 0600);
	made_card = r == KH_OK || r == KH_ERR_IO;
	if (r != KH_OK)
		goto out;
	n = snprintf(cbuf, sizeof cbuf, "%" PRIu64 "\n", kh_module_counter(s->m));
	if ((r = kh_file_write_new(ctr, (const uint8_t *)cbuf, (size_t)n, 0600)) != KH_OK) {
		if (r == KH_ERR_IO)
			unlink(ctr);
		goto out;
	}
	s->card_path = cp;
	s->ctr_path = ctr;
	s->disk_counter = kh_module_counter(s->m);
	cp = ctr = NULL;
	kh_wipe(s->root_key, sizeof s->root_key);
	r = KH_OK;
out:
	if (r != KH_OK) {
		if (made_card)
			unlink(card_path);
		if (made_key)
			unlink(key_path);
	}
	kh_wipe(hex, sizeof hex);
	free(kp);
	free(ctr);
	free(cp);
	return r;
}

struct kh_module *kh_softmod_module(struct kh_softmod *s)
{
	return s->m;
}

void kh_softmod_set_time(struct kh_softmod *s, uint64_t now)
{
	s->fixed_now = now;
}

void kh_softmod_free(struct kh_softmod *s)
{
	if (!s)
		return;
	if (s->m)
		kh_module_wipe(s->m);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* and the lock goes with it */
	free(s->mem);
	free(s->card_path);
	free(s->ctr_path);
	kh_wipe(s, sizeof *s);
	free(s);
}

long kh_softmod_holder(const char *card_path, const char *key_path)
{
	char *kp = NULL, line[256];
	struct stat st;
	long pid = 0, p;
	unsigned maj, min;
	unsigned long ino;
	FILE *f;

	if (!key_path && !(key_path = kp = kh_softmod_key_path(card_path)))
		return 0;
	if (stat(key_path, &st) != 0 || !(f = fopen("/proc/locks", "r"))) {
		free(kp);
		return 0;
	}
	/* "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's line has "->" after "1:" */
	while (!pid && fgets(line, sizeof line, f))
		if (sscanf(line, "%*d: FLOCK %*s WRITE %ld %x:%x:%lu", &p, &maj, &min, &ino) == 4 &&
		    maj == major(st.st_dev) && min == minor(st.st_dev) && ino == (unsigned long)st.st_ino)
			pid = p;
	fclose(f);
	free(kp);
	return pid;
}
