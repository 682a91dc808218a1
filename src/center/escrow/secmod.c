/*
 * The escrow's signing process (seed 003, include/keyhole/secmod.h): one RSA key per listing,
 * held only here, and a raw private operation z = c'^d mod n on a blinded value for whoever
 * holds the UNIX socket (the HTTP front end, same uid). The private operation is OpenSSL's
 * (EVP_PKEY_decrypt, RSA_NO_PADDING) with its own base blinding and CRT consistency check left
 * on. Keys are files in a private directory, one per key, written whole before a KEYGEN is
 * answered; all are loaded at start into a table that connections read under a read lock.
 * The frames are parsed here too (strictly: exact lengths, one version, known ops).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/log.h"
#include "keyhole/secmod.h"

#define KEYFILE_MAX 16384       /* a 4096-bit PKCS#8 key in PEM is ~3.3 KB */
#define FRAME_TIMEOUT_MS 5000   /* a frame once begun must arrive within this */
#define POLL_MS 200             /* how often a blocked thread looks at the stop flag */
#define RSA_E 65537

/* ---- frames ---- */

int kh_secmod_bits_ok(unsigned bits)
{
	return bits == 2048 || bits == 3072 || bits == 4096;
}

static int clen_ok(size_t n)
{
	return n == 256 || n == 384 || n == 512;
}

/* Both frames' bytes 2-3 give the body's length: it is bounded and fills the n bytes exactly. */
static kh_err frame_len(const uint8_t *frame, size_t n, size_t *len)
{
	*len = (size_t)frame[2] << 8 | frame[3];
	if (*len > KH_SECMOD_BODY_MAX)
		return KH_ERR_TOO_LARGE;
	if (n < KH_SECMOD_HDR_LEN + *len)
		return KH_ERR_TRUNCATED;
	return n > KH_SECMOD_HDR_LEN + *len ? KH_ERR_TRAILING : KH_OK;
}

kh_err kh_secmod_req_parse(const uint8_t *frame, size_t n, struct kh_secmod_req *req)
{
	struct kh_secmod_req q = {0};
	size_t len;
	kh_err r;

	if (!frame || !req)
		return KH_ERR_INVAL;
	if (n < KH_SECMOD_HDR_LEN)
		return KH_ERR_TRUNCATED;
	if (frame[1] != KH_SECMOD_VERSION)
		return KH_ERR_VERSION;
	if ((r = frame_len(frame, n, &len)) != KH_OK)
		return r;
	q.op = frame[0];
	frame += KH_SECMOD_HDR_LEN;
	switch (q.op) {
	case KH_SECMOD_KEYGEN:
		if (len != 2)
			return KH_ERR_FORMAT;
		q.bits = (unsigned)frame[0] << 8 | frame[1];
		if (!kh_secmod_bits_ok(q.bits))
			return KH_ERR_FORMAT;
		break;
	case KH_SECMOD_PUBKEY:
		if (len != KH_SECMOD_ID_LEN)
			return KH_ERR_FORMAT;
		q.id = frame;
		break;
	case KH_SECMOD_DECRYPT:
		if (len < KH_SECMOD_ID_LEN || !clen_ok(len - KH_SECMOD_ID_LEN))
			return KH_ERR_FORMAT;
		q.id = frame;
		q.c = frame + KH_SECMOD_ID_LEN;
		q.clen = len - KH_SECMOD_ID_LEN;
		break;
	default:
		return KH_ERR_APDU_INS;
	}
	*req = q;
	return KH_OK;
}

kh_err kh_secmod_req_build(const struct kh_secmod_req *req, uint8_t *out, size_t cap, size_t *n)
{
	struct kh_wr w;
	size_t len;

	if (!req || !out || !n)
		return KH_ERR_INVAL;
	switch (req->op) {
	case KH_SECMOD_KEYGEN:
		if (!kh_secmod_bits_ok(req->bits))
			return KH_ERR_INVAL;
		len = 2;
		break;
	case KH_SECMOD_PUBKEY:
		if (!req->id)
			return KH_ERR_INVAL;
		len = KH_SECMOD_ID_LEN;
		break;
	case KH_SECMOD_DECRYPT:
		if (!req->id || !req->c || !clen_ok(req->clen))
			return KH_ERR_INVAL;
		len = KH_SECMOD_ID_LEN + req->clen;
		break;
	default:
		return KH_ERR_INVAL;
	}
	kh_wr_init(&w, out, cap);
	kh_wr_u8(&w, req->op);
	kh_wr_u8(&w, KH_SECMOD_VERSION);
	kh_wr_u16(&w, (uint16_t)len);
	if (req->op == KH_SECMOD_KEYGEN)
		kh_wr_u16(&w, (uint16_t)req->bits);
	else
		kh_wr_bytes(&w, req->id, KH_SECMOD_ID_LEN);
	if (req->op == KH_SECMOD_DECRYPT)
		kh_wr_bytes(&w, req->c, req->clen);
	if (w.err != KH_OK)
		return KH_ERR_BUF;
	*n = w.len;
	return KH_OK;
}

kh_err kh_secmod_resp_parse(const uint8_t *frame, size_t n, const uint8_t **body, size_t *blen)
{
	unsigned sw;
	size_t len;
	kh_err r;

	if (!frame || !body || !blen)
		return KH_ERR_INVAL;
	if (n < KH_SECMOD_HDR_LEN)
		return KH_ERR_TRUNCATED;
	sw = (unsigned)frame[0] << 8 | frame[1];
	if ((r = frame_len(frame, n, &len)) != KH_OK)
		return r;
	if (sw != KH_SW_OK) {
		kh_err e = kh_err_from_sw((uint16_t)sw);
		/* a refusal carries nothing; KH_OK may never come from another word */
		return len ? KH_ERR_FORMAT : e == KH_OK ? KH_ERR_FORMAT : e;
	}
	*body = frame + KH_SECMOD_HDR_LEN;
	*blen = len;
	return KH_OK;
}

/* ---- the key table ---- */

struct key {
	uint8_t id[KH_SECMOD_ID_LEN];
	EVP_PKEY *pk;
	BIGNUM *nm2;   /* n - 2: the largest c' accepted */
	size_t modlen; /* bytes of n */
	uint8_t *pub;  /* DER SubjectPublicKeyInfo */
	size_t publen;
};

struct kh_secmod {
	char *dir;
	pthread_rwlock_t lock; /* over keys, n, cap; a struct key never changes once in */
	struct key **keys;     /* sorted by id */
	size_t n, cap;
};

static void key_free(struct key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pk);
	BN_free(k->nm2);
	OPENSSL_free(k->pub);
	free(k);
}

/* The table entry of a private key: checks that it is RSA of a size we take with e = 65537. */
static kh_err key_new(EVP_PKEY *pk, const uint8_t id[KH_SECMOD_ID_LEN], struct key **out)
{
	BIGNUM *n = NULL, *e = NULL;
	unsigned char *der = NULL;
	struct key *k = NULL;
	int len, bits;
	kh_err r = KH_ERR_FORMAT;

	if (!EVP_PKEY_is_a(pk, "RSA") || (bits = EVP_PKEY_get_bits(pk)) <= 0 || !kh_secmod_bits_ok((unsigned)bits))
		return KH_ERR_FORMAT;
	if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) ||
	    !BN_is_word(e, RSA_E))
		goto out;
	r = KH_ERR_NOMEM;
	if (!(k = calloc(1, sizeof *k)))
		goto out;
	if ((len = i2d_PUBKEY(pk, &der)) <= 0 || (size_t)len > KH_SECMOD_BODY_MAX - KH_SECMOD_ID_LEN) {
		r = KH_ERR_CRYPTO;
		goto out;
	}
	k->pub = der;
	k->publen = (size_t)len;
	der = NULL;
	k->modlen = (size_t)BN_num_bytes(n);
	if (!(k->nm2 = BN_dup(n)) || !BN_sub_word(k->nm2, 2))
		goto out;
	memcpy(k->id, id, KH_SECMOD_ID_LEN);
	k->pk = pk;
	*out = k;
	k = NULL;
	r = KH_OK;
out:
	key_free(k);
	BN_free(n);
	BN_free(e);
	return r;
}

/* Index of id in the sorted table, or where it would go (*found says which). Lock held. */
static size_t key_pos(const struct kh_secmod *s, const uint8_t *id, int *found)
{
	size_t lo = 0, hi = s->n;

	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(s->keys[mid]->id, id, KH_SECMOD_ID_LEN);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The key of id, or NULL; a key stays valid until kh_secmod_free once found. */
static const struct key *key_find(struct kh_secmod *s, const uint8_t *id)
{
	const struct key *k = NULL;
	int found;
	size_t i;

	pthread_rwlock_rdlock(&s->lock);
	i = key_pos(s, id, &found);
	if (found)
		k = s->keys[i];
	pthread_rwlock_unlock(&s->lock);
	return k;
}

static kh_err key_insert(struct kh_secmod *s, struct key *k)
{
	kh_err r = KH_OK;
	int found;
	size_t i;

	pthread_rwlock_wrlock(&s->lock);
	i = key_pos(s, k->id, &found);
	if (found) {
		r = KH_ERR_EXISTS;
	} else if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct key **p = realloc(s->keys, cap * sizeof *p);
		if (!p)
			r = KH_ERR_NOMEM;
		else {
			s->keys = p;
			s->cap = cap;
		}
	}
	if (r == KH_OK) {
		memmove(s->keys + i + 1, s->keys + i, (s->n - i) * sizeof *s->keys);
		s->keys[i] = k;
		s->n++;
	}
	pthread_rwlock_unlock(&s->lock);
	return r;
}

/* ---- key files ---- */

/* A key file's name: 32 lower-case hex digits and ".key". 1 and the id, or 0. */
static int keyfile_name(const char *name, uint8_t id[KH_SECMOD_ID_LEN])
{
	size_t i;

	if (strlen(name) != 2 * KH_SECMOD_ID_LEN + 4 || strcmp(name + 2 * KH_SECMOD_ID_LEN, ".key") != 0)
		return 0;
	for (i = 0; i < 2 * KH_SECMOD_ID_LEN; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return 0;
	return kh_hex_decode(name, 2 * KH_SECMOD_ID_LEN, id, KH_SECMOD_ID_LEN) == KH_OK;
}

/* An encrypted key is refused, never prompted for: the process starts unattended. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* PKCS#8 in PEM or DER (the whole input), checked as a key pair. */
static kh_err key_parse(const uint8_t *d, size_t n, EVP_PKEY **out)
{
	static const char pem[] = "-----BEGIN";
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	kh_err r = KH_ERR_FORMAT;

	if (n > KEYFILE_MAX)
		return KH_ERR_TOO_LARGE;
	if (n >= sizeof pem - 1 && memcmp(d, pem, sizeof pem - 1) == 0) {
		BIO *b = BIO_new_mem_buf(d, (int)n);
		if (!b)
			return KH_ERR_NOMEM;
		pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
		BIO_free(b);
	} else {
		const unsigned char *p = d;
		PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)n);
		if (p8 && p == d + n)
			pk = EVP_PKCS82PKEY(p8);
		PKCS8_PRIV_KEY_INFO_free(p8);
	}
	if (!pk)
		goto out;
	/* a file damaged on disk (n, e, d, p, q that do not agree) is refused rather than used */
	if (!(ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) || EVP_PKEY_pairwise_check(ctx) != 1)
		goto out;
	*out = pk;
	pk = NULL;
	r = KH_OK;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return r;
}

static kh_err load_one(struct kh_secmod *s, const char *path, const uint8_t id[KH_SECMOD_ID_LEN])
{
	uint8_t *d = NULL;
	size_t n = 0;
	EVP_PKEY *pk = NULL;
	struct key *k = NULL;
	kh_err r;

	if ((r = kh_keyfile_read(path, KEYFILE_MAX, &d, &n)) != KH_OK)
		goto out;
	if ((r = key_parse(d, n, &pk)) != KH_OK)
		goto out;
	if ((r = key_new(pk, id, &k)) != KH_OK)
		goto out;
	pk = NULL; /* the entry's now */
	if ((r = key_insert(s, k)) != KH_OK)
		goto out;
	k = NULL;
out:
	key_free(k);
	EVP_PKEY_free(pk);
	kh_file_free(d, n);
	return r;
}

/* The directory exists (made here when absent), is a directory, ours, and private. */
static kh_err dir_check(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO;
	if (lstat(dir, &st) != 0)
		return KH_ERR_IO;
	if (!S_ISDIR(st.st_mode))
		return KH_ERR_EXISTS;
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid())
		return KH_ERR_KEYFILE_PERM;
	return KH_OK;
}

static void set_bad(char *bad, size_t cap, const char *what)
{
	if (bad && cap)
		snprintf(bad, cap, "%s", what);
}

kh_err kh_secmod_open(const char *keydir, struct kh_secmod **out, char *bad, size_t badcap)
{
	struct kh_secmod *s = NULL;
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d = NULL;
	uint8_t id[KH_SECMOD_ID_LEN];
	kh_err r;

	if (!keydir || !out || strlen(keydir) + 2 + 2 * KH_SECMOD_ID_LEN + 4 >= sizeof path)
		return KH_ERR_INVAL;
	set_bad(bad, badcap, keydir);
	if ((r = dir_check(keydir)) != KH_OK)
		return r;
	if (!(s = calloc(1, sizeof *s)) || !(s->dir = strdup(keydir))) {
		free(s);
		return KH_ERR_NOMEM;
	}
	pthread_rwlock_init(&s->lock, NULL);
	if (!(d = opendir(keydir))) {
		r = KH_ERR_IO;
		goto out;
	}
	while ((de = readdir(d)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 4 || strcmp(de->d_name + nl - 4, ".key") != 0)
			continue; /* not a key file: a temporary file of an interrupted write, or anything else */
		snprintf(path, sizeof path, "%s/%s", keydir, de->d_name);
		set_bad(bad, badcap, path);
		if (!keyfile_name(de->d_name, id)) {
			r = KH_ERR_FORMAT;
			goto out;
		}
		if ((r = load_one(s, path, id)) != KH_OK)
			goto out;
	}
	set_bad(bad, badcap, keydir);
	*out = s;
	s = NULL;
	r = KH_OK;
out:
	if (d)
		closedir(d);
	kh_secmod_free(s);
	return r;
}

void kh_secmod_free(struct kh_secmod *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		key_free(s->keys[i]);
	free(s->keys);
	free(s->dir);
	pthread_rwlock_destroy(&s->lock);
	free(s);
}

size_t kh_secmod_count(struct kh_secmod *s)
{
	size_t n;

	pthread_rwlock_rdlock(&s->lock);
	n = s->n;
	pthread_rwlock_unlock(&s->lock);
	return n;
}

/* ---- operations ---- */

/* A fresh key, written whole (mode 0600, never over another) before it joins the table. */
static kh_err keygen(struct kh_secmod *s, unsigned bits, const struct key **out)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	unsigned char *der = NULL;
	struct key *k = NULL;
	char path[PATH_MAX], hex[2 * KH_SECMOD_ID_LEN + 1];
	uint8_t id[KH_SECMOD_ID_LEN];
	int len = 0, tries;
	kh_err r = KH_ERR_CRYPTO;

	if (!(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) || EVP_PKEY_keygen_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) <= 0 || EVP_PKEY_generate(ctx, &pk) <= 0)
		goto out;
	if (!(p8 = EVP_PKEY2PKCS8(pk)) || (len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der)) <= 0)
		goto out;
	/* 16 random bytes make a name nobody has; link(2) refuses one that is taken anyway */
	for (tries = 0; tries < 3; tries++) {
		if ((r = kh_random(id, sizeof id)) != KH_OK)
			goto out;
		kh_hex_encode(id, sizeof id, hex);
		snprintf(path, sizeof path, "%s/%s.key", s->dir, hex);
		if ((r = kh_file_write_new(path, der, (size_t)len, 0600)) != KH_ERR_EXISTS)
			break;
	}
	if (r != KH_OK)
		goto out;
	if ((r = key_new(pk, id, &k)) != KH_OK)
		goto out;
	pk = NULL;
	if ((r = key_insert(s, k)) != KH_OK)
		goto out;
	kh_log_info("secmod.keygen", "id=%s bits=%u", hex, bits);
	*out = k;
	k = NULL;
out:
	if (der)
		OPENSSL_clear_free(der, (size_t)len);
	PKCS8_PRIV_KEY_INFO_free(p8);
	key_free(k);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	return r;
}

/* z = c'^d mod n, after the range check 2 <= c' <= n-2. */
static kh_err decrypt(const struct key *k, const uint8_t *c, size_t clen, uint8_t *z)
{
	EVP_PKEY_CTX *ctx = NULL;
	BIGNUM *v = NULL;
	size_t zl = k->modlen;
	kh_err r;

	if (clen != k->modlen)
		return KH_ERR_FORMAT;
	if (!(v = BN_bin2bn(c, (int)clen, NULL)))
		return KH_ERR_NOMEM;
	r = KH_ERR_BLIND_RANGE;
	if (BN_cmp(v, BN_value_one()) <= 0 || BN_cmp(v, k->nm2) > 0)
		goto out;
	r = KH_ERR_CRYPTO;
	if (!(ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL)) || EVP_PKEY_decrypt_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) <= 0 ||
	    EVP_PKEY_decrypt(ctx, z, &zl, c, clen) <= 0 || zl != k->modlen)
		goto out;
	r = KH_OK;
out:
	EVP_PKEY_CTX_free(ctx);
	BN_free(v);
	return r;
}

static size_t respond(uint8_t *resp, size_t cap, kh_err e, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	struct kh_wr w;

	if (e != KH_OK)
		a = b = NULL, an = bn = 0;
	kh_wr_init(&w, resp, cap);
	kh_wr_u16(&w, e == KH_OK ? (uint16_t)KH_SW_OK : kh_err_to_sw(e));
	kh_wr_u16(&w, (uint16_t)(an + bn));
	if (an)
		kh_wr_bytes(&w, a, an);
	if (bn)
		kh_wr_bytes(&w, b, bn);
	return w.err == KH_OK ? w.len : 0;
}

size_t kh_secmod_handle(struct kh_secmod *s, const uint8_t *frame, size_t n, uint8_t *resp, size_t cap)
{
	uint8_t z[KH_SECMOD_MOD_MAX];
	struct kh_secmod_req q;
	const struct key *k = NULL;
	size_t rn;
	kh_err r;

	if (cap < KH_SECMOD_FRAME_MAX)
		return 0;
	if ((r = kh_secmod_req_parse(frame, n, &q)) != KH_OK)
		return respond(resp, cap, r, NULL, 0, NULL, 0);
	if (q.op == KH_SECMOD_KEYGEN) {
		r = keygen(s, q.bits, &k);
		return respond(resp, cap, r, r == KH_OK ? k->id : NULL, KH_SECMOD_ID_LEN, r == KH_OK ? k->pub : NULL,
			       r == KH_OK ? k->publen : 0);
	}
	if (!(k = key_find(s, q.id)))
		return respond(resp, cap, KH_ERR_NOTFOUND, NULL, 0, NULL, 0);
	if (q.op == KH_SECMOD_PUBKEY)
		return respond(resp, cap, KH_OK, k->pub, k->publen, NULL, 0);
	r = decrypt(k, q.c, q.clen, z);
	rn = respond(resp, cap, r, z, k->modlen, NULL, 0);
	kh_wipe(z, sizeof z);
	return rn;
}

/* ---- the socket ---- */

struct server {
	struct kh_secmod *s;
	volatile sig_atomic_t *stop;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signalled when a connection ends */
	unsigned active;
	unsigned want; /* slots a waiting client needs: that many idle connections close */
};

struct conn {
	struct server *srv;
	int fd;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Wait for fd to be ready for ev, a slice at a time so that the stop flag is seen. 1 ready, 0
 * past the deadline (0: none) or told to stop, -1 on error.
 */
static int wait_fd(int fd, short ev, uint64_t deadline, volatile sig_atomic_t *stop)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = ev};
		int ms = POLL_MS, k;
		if (*stop)
			return 0;
		if (deadline) {
			uint64_t t = now_ms();
			if (t >= deadline)
				return 0;
			if (deadline - t < (uint64_t)ms)
				ms = (int)(deadline - t);
		}
		k = poll(&p, 1, ms);
		if (k < 0 && errno != EINTR)
			return -1;
		if (k > 0)
			return 1;
	}
}

/* Read exactly n bytes by the deadline: 1, or 0 on end of stream, timeout, stop or error. */
static int read_full(int fd, uint8_t *p, size_t n, uint64_t deadline, volatile sig_atomic_t *stop)
{
	while (n) {
		ssize_t k;
		if (wait_fd(fd, POLLIN, deadline, stop) != 1)
			return 0;
		k = recv(fd, p, n, MSG_DONTWAIT);
		if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
			return 0;
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		}
	}
	return 1;
}

static int write_full(int fd, const uint8_t *p, size_t n, uint64_t deadline, volatile sig_atomic_t *stop)
{
	while (n) {
		ssize_t k;
		if (wait_fd(fd, POLLOUT, deadline, stop) != 1)
			return 0;
		k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k < 0 && errno != EINTR && errno != EAGAIN)
			return 0;
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		}
	}
	return 1;
}

/*
 * One connection: frames until the peer hangs up, a frame times out, or we stop. A frame whose
 * length is past the bound is answered TOO_LARGE and the connection closed (its body unread,
 * the stream is out of step); every other frame is answered, refusals included, and the next
 * one read.
 */
static void *serve_conn(void *arg)
{
	struct conn *c = arg;
	struct server *srv = c->srv;
	uint8_t req[KH_SECMOD_FRAME_MAX], resp[KH_SECMOD_FRAME_MAX];
	unsigned long count = 0;

	for (;;) {
		size_t len, rn;
		uint64_t deadline;
		int k = wait_fd(c->fd, POLLIN, now_ms() + POLL_MS, srv->stop);
		if (k == 0 && !*srv->stop) {
			/* idle: give the slot up when a new client waits for one (the client's pool
			 * notices the closed connection and dials again) */
			int yield = 0;
			pthread_mutex_lock(&srv->mu);
			if (srv->want) {
				srv->want--;
				yield = 1;
			}
			pthread_mutex_unlock(&srv->mu);
			if (!yield)
				continue;
		}
		if (k != 1)
			break;
		deadline = now_ms() + FRAME_TIMEOUT_MS;
		if (!read_full(c->fd, req, KH_SECMOD_HDR_LEN, deadline, srv->stop))
			break;
		len = (size_t)req[2] << 8 | req[3];
		if (len > KH_SECMOD_BODY_MAX) {
			rn = respond(resp, sizeof resp, KH_ERR_TOO_LARGE, NULL, 0, NULL, 0);
			(void)write_full(c->fd, resp, rn, now_ms() + FRAME_TIMEOUT_MS, srv->stop);
			break;
		}
		if (!read_full(c->fd, req + KH_SECMOD_HDR_LEN, len, deadline, srv->stop))
			break;
		rn = kh_secmod_handle(srv->s, req, KH_SECMOD_HDR_LEN + len, resp, sizeof resp);
		if (!rn || !write_full(c->fd, resp, rn, now_ms() + FRAME_TIMEOUT_MS, srv->stop))
			break;
		kh_wipe(resp, rn);
		count++;
	}
	kh_log_debug("secmod.disconnect", "requests=%lu", count);
	close(c->fd);
	free(c);
	pthread_mutex_lock(&srv->mu);
	srv->active--;
	pthread_cond_broadcast(&srv->cv);
	pthread_mutex_unlock(&srv->mu);
	return NULL;
}

/* Only a process of our own uid may ask for a private operation. */
static int peer_ok(int fd)
{
	struct ucred cr;
	socklen_t l = sizeof cr;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || l != sizeof cr)
		return 0;
	return cr.uid == geteuid();
}

/* 1 when a process answers a connection at path. */
static int someone_listens(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return 0;
	ok = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0;
	close(fd);
	return ok;
}

static kh_err listen_on(const char *path, int *out)
{
	struct sockaddr_un sa;
	struct stat st;
	mode_t old;
	int fd;

	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	if (!path || !path[0] || strlen(path) >= sizeof sa.sun_path)
		return KH_ERR_INVAL;
	strcpy(sa.sun_path, path);
	if (someone_listens(&sa))
		return KH_ERR_EXISTS;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return KH_ERR_EXISTS;
		unlink(path); /* stale: its process is gone */
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return KH_ERR_IO;
	old = umask(0177); /* the file is born 0600: no moment where others may connect */
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		umask(old);
		close(fd);
		return errno == EADDRINUSE ? KH_ERR_EXISTS : KH_ERR_IO;
	}
	umask(old);
	if (chmod(path, 0600) != 0 || listen(fd, 64) != 0) {
		close(fd);
		unlink(path);
		return KH_ERR_IO;
	}
	*out = fd;
	return KH_OK;
}

/* Start a connection's thread; the slot is taken by the caller. 0, or -1 (fd closed). */
static int start_conn(struct server *srv, int fd, const pthread_attr_t *attr)
{
	struct conn *c = malloc(sizeof *c);
	pthread_t t;

	if (c) {
		c->srv = srv;
		c->fd = fd;
		if (pthread_create(&t, attr, serve_conn, c) == 0)
			return 0;
		free(c);
	}
	close(fd);
	return -1;
}

kh_err kh_secmod_serve(struct kh_secmod *s, const char *path, unsigned threads, volatile sig_atomic_t *stop,
		       volatile sig_atomic_t *ready)
{
	struct server srv = {.s = s, .stop = stop};
	pthread_attr_t attr;
	int fd = -1;
	kh_err r;

	if (!s || !stop || threads < 1 || threads > KH_SECMOD_THREADS_MAX)
		return KH_ERR_INVAL;
	if ((r = listen_on(path, &fd)) != KH_OK)
		return r;
	pthread_mutex_init(&srv.mu, NULL);
	pthread_cond_init(&srv.cv, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 1024 * 1024);
	kh_log_info("secmod.listen", "socket=%s keys=%zu threads=%u", path, kh_secmod_count(s), threads);
	if (ready)
		*ready = 1;
	while (!*stop) {
		int c;
		pthread_mutex_lock(&srv.mu);
		if (srv.active >= threads) {
			/*
			 * Every slot busy: a client waiting in the backlog gets the slot of an idle
			 * connection, so that pooled connections left open never lock others out.
			 */
			struct pollfd p = {.fd = fd, .events = POLLIN};
			struct timespec ts;
			if (!srv.want && poll(&p, 1, 0) == 1)
				srv.want = 1;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += POLL_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&srv.cv, &srv.mu, &ts);
			pthread_mutex_unlock(&srv.mu);
			continue;
		}
		srv.want = 0;
		pthread_mutex_unlock(&srv.mu);
		if (wait_fd(fd, POLLIN, 0, stop) != 1)
			continue;
		if ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				(void)poll(NULL, 0, 100);
			continue;
		}
		if (!peer_ok(c)) {
			kh_log_warn("secmod.refused", "reason=peer_uid");
			close(c);
			continue;
		}
		pthread_mutex_lock(&srv.mu);
		srv.active++;
		pthread_mutex_unlock(&srv.mu);
		if (start_conn(&srv, c, &attr) != 0) {
			pthread_mutex_lock(&srv.mu);
			srv.active--;
			pthread_mutex_unlock(&srv.mu);
		}
	}
	close(fd);
	unlink(path);
	/* every connection sees the flag within a poll slice; wait for the last one */
	pthread_mutex_lock(&srv.mu);
	while (srv.active)
		pthread_cond_wait(&srv.cv, &srv.mu);
	pthread_mutex_unlock(&srv.mu);
	pthread_attr_destroy(&attr);
	pthread_cond_destroy(&srv.cv);
	pthread_mutex_destroy(&srv.mu);
	kh_log_info("secmod.stop", "socket=%s", path);
	return KH_OK;
}
