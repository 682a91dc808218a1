/*
 * The escrow's signing process (include/keyhole/secmod.h), served in a thread of this test on a
 * UNIX socket in a temporary directory, and reached through the real client: a DECRYPT of
 * c' = m^e mod n gives m back (2048 and 3072 bits); c' outside [2, n-2] is BLIND_RANGE and the
 * edges 2 and n-2 are taken; an unknown key is NOTFOUND; a key written is loaded again after a
 * restart and gives the same z; key files and the directory that others can read are refused at
 * start; a garbage frame is answered with an error and the next client is served; the client
 * answers SECMOD while the process is gone and recovers when it is back; 32 threads at once get
 * their own answers.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keyhole/file.h"
#include "keyhole/secmod.h"
#include "testutil.h"

struct srv {
	char *tmp;
	char dir[512], sock[512];
	struct kh_secmod *s;
	pthread_t t;
	volatile sig_atomic_t stop, ready;
	kh_err rc;
	int running;
};

static void *serve_thread(void *arg)
{
	struct srv *v = arg;
	v->rc = kh_secmod_serve(v->s, v->sock, 8, &v->stop, &v->ready);
	return NULL;
}

static void srv_start(struct srv *v)
{
	char bad[4096];

	assert_int_equal(kh_secmod_open(v->dir, &v->s, bad, sizeof bad), KH_OK);
	v->stop = 0;
	v->ready = 0;
	v->rc = -1;
	assert_int_equal(pthread_create(&v->t, NULL, serve_thread, v), 0);
	while (!v->ready && v->rc == -1)
		usleep(1000);
	assert_int_equal(v->ready, 1);
	v->running = 1;
}

static void srv_stop(struct srv *v)
{
	if (!v->running)
		return;
	v->stop = 1;
	pthread_join(v->t, NULL);
	assert_int_equal(v->rc, KH_OK);
	kh_secmod_free(v->s);
	v->s = NULL;
	v->running = 0;
	/* the socket file goes with the process */
	assert_int_equal(access(v->sock, F_OK), -1);
}

static int setup(void **state)
{
	struct srv *v = calloc(1, sizeof *v);

	assert_non_null(v);
	v->tmp = kh_test_tmpdir();
	snprintf(v->dir, sizeof v->dir, "%s/keys", v->tmp);
	snprintf(v->sock, sizeof v->sock, "%s/secmod.sock", v->tmp);
	*state = v;
	return 0;
}

static int teardown(void **state)
{
	struct srv *v = *state;

	srv_stop(v);
	kh_test_rmdir(v->tmp);
	free(v);
	return 0;
}

/* ---- RSA on the public side, as the buyer's device computes it ---- */

struct pub {
	BIGNUM *n, *e;
	size_t len;
};

static void pub_read(const uint8_t *der, size_t n, struct pub *p)
{
	const unsigned char *q = der;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &q, (long)n);

	assert_non_null(pk);
	assert_ptr_equal(q, der + n);
	p->n = p->e = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &p->n), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &p->e), 1);
	assert_true(BN_is_word(p->e, 65537));
	p->len = (size_t)BN_num_bytes(p->n);
	EVP_PKEY_free(pk);
}

static void pub_free(struct pub *p)
{
	BN_free(p->n);
	BN_free(p->e);
}

/* m uniform in [2, n-2] (out: p->len bytes) and c = m^e mod n (cout). */
static void make_c(const struct pub *p, uint8_t *mout, uint8_t *cout)
{
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *m = BN_new(), *c = BN_new(), *lim = BN_dup(p->n);

	assert_non_null(ctx);
	assert_true(m && c && lim);
	assert_true(BN_sub_word(lim, 3));
	assert_true(BN_rand_range(m, lim));
	assert_true(BN_add_word(m, 2));
	assert_true(BN_mod_exp(c, m, p->e, p->n, ctx));
	assert_int_equal(BN_bn2binpad(m, mout, (int)p->len), (int)p->len);
	assert_int_equal(BN_bn2binpad(c, cout, (int)p->len), (int)p->len);
	BN_free(m);
	BN_free(c);
	BN_free(lim);
	BN_CTX_free(ctx);
}

/* n + delta as modulus-length bytes (delta small, may be negative). */
static void n_plus(const struct pub *p, long delta, uint8_t *out)
{
	BIGNUM *v = BN_dup(p->n);

	assert_non_null(v);
	if (delta >= 0)
		assert_true(BN_add_word(v, (BN_ULONG)delta));
	else
		assert_true(BN_sub_word(v, (BN_ULONG)-delta));
	assert_int_equal(BN_bn2binpad(v, out, (int)p->len), (int)p->len);
	BN_free(v);
}

static void keygen(struct kh_secmod_client *c, unsigned bits, uint8_t id[KH_SECMOD_ID_LEN], struct pub *p)
{
	uint8_t der[2048], der2[2048];
	size_t n, n2;

	assert_int_equal(kh_secmod_keygen(c, bits, id, der, sizeof der, &n), KH_OK);
	pub_read(der, n, p);
	assert_int_equal(BN_num_bits(p->n), (int)bits);
	/* PUBKEY gives the same key afterwards */
	assert_int_equal(kh_secmod_pubkey(c, id, der2, sizeof der2, &n2), KH_OK);
	assert_int_equal(n2, n);
	assert_memory_equal(der2, der, n);
}

static void roundtrip(void **state, unsigned bits)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN], m[512], cb[512], z[512];
	struct pub p;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, bits, id, &p);
	for (int i = 0; i < 4; i++) {
		make_c(&p, m, cb);
		memset(z, 0xAA, sizeof z);
		assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z), KH_OK);
		assert_memory_equal(z, m, p.len);
	}
	pub_free(&p);
	kh_secmod_client_close(c);
}

static void test_decrypt_2048(void **state)
{
	roundtrip(state, 2048);
}

static void test_decrypt_3072(void **state)
{
	roundtrip(state, 3072);
}

static void test_range_and_unknown(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN], other[KH_SECMOD_ID_LEN], cb[256], z[256], der[1024];
	struct pub p;
	size_t n;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	assert_int_equal(p.len, sizeof cb);
	/* 0, 1, n-1, n, n+1 and all ones: refused */
	memset(cb, 0, sizeof cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	cb[sizeof cb - 1] = 1;
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	n_plus(&p, -1, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	n_plus(&p, 0, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	n_plus(&p, 1, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	memset(cb, 0xFF, sizeof cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_ERR_BLIND_RANGE);
	/* the edges are inside: 2 and n-2 */
	memset(cb, 0, sizeof cb);
	cb[sizeof cb - 1] = 2;
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_OK);
	n_plus(&p, -2, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, sizeof cb, z), KH_OK);
	/* a value of another key size's length is not this key's */
	{
		uint8_t big[384] = {0};
		big[383] = 5;
		assert_int_equal(kh_secmod_decrypt(c, id, big, sizeof big, z), KH_ERR_FORMAT);
	}
	/* an unknown key */
	memcpy(other, id, sizeof other);
	other[0] ^= 1;
	assert_int_equal(kh_secmod_decrypt(c, other, cb, sizeof cb, z), KH_ERR_NOTFOUND);
	assert_int_equal(kh_secmod_pubkey(c, other, der, sizeof der, &n), KH_ERR_NOTFOUND);
	/* after the refusals the connection still serves */
	assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_OK);
	pub_free(&p);
	kh_secmod_client_close(c);
}

static void test_restart_reloads(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN], m[256], cb[256], z1[256], z2[256];
	char hex[2 * KH_SECMOD_ID_LEN + 1], path[1024];
	struct stat st;
	struct pub p;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	make_c(&p, m, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z1), KH_OK);
	/* the key's file: named by its id, private, in a private directory */
	kh_hex_encode(id, sizeof id, hex);
	snprintf(path, sizeof path, "%s/%s.key", v->dir, hex);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(v->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	srv_stop(v);
	srv_start(v);
	assert_int_equal(kh_secmod_count(v->s), 1);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z2), KH_OK);
	assert_memory_equal(z2, z1, p.len);
	assert_memory_equal(z2, m, p.len);
	pub_free(&p);
	kh_secmod_client_close(c);
}

/* A key written as PKCS#8 PEM by someone else (an operator's import) is loaded too. */
static void test_pem_key_loads(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	EVP_PKEY *pk = EVP_RSA_gen(2048);
	BIO *b = BIO_new(BIO_s_mem());
	uint8_t id[KH_SECMOD_ID_LEN], m[256], cb[256], z[256], der[1024];
	char path[1024], *pem;
	struct pub p;
	long pl;
	size_t n;

	assert_non_null(pk);
	assert_non_null(b);
	assert_int_equal(mkdir(v->dir, 0700), 0);
	assert_int_equal(PEM_write_bio_PKCS8PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL), 1);
	pl = BIO_get_mem_data(b, &pem);
	memset(id, 0x5A, sizeof id);
	snprintf(path, sizeof path, "%s/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a.key", v->dir);
	assert_int_equal(kh_file_write_new(path, (const uint8_t *)pem, (size_t)pl, 0600), KH_OK);
	BIO_free(b);
	EVP_PKEY_free(pk);
	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_OK);
	pub_read(der, n, &p);
	make_c(&p, m, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z), KH_OK);
	assert_memory_equal(z, m, p.len);
	pub_free(&p);
	kh_secmod_client_close(c);
}

static void test_private_files_only(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	struct kh_secmod *s = NULL;
	uint8_t id[KH_SECMOD_ID_LEN];
	char hex[2 * KH_SECMOD_ID_LEN + 1], path[1024], bad[4096];
	struct pub p;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	pub_free(&p);
	kh_secmod_client_close(c);
	srv_stop(v);
	kh_hex_encode(id, sizeof id, hex);
	snprintf(path, sizeof path, "%s/%s.key", v->dir, hex);
	/* a key file others may read: refused, and named */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(kh_secmod_open(v->dir, &s, bad, sizeof bad), KH_ERR_KEYFILE_PERM);
	assert_null(s);
	assert_string_equal(bad, path);
	assert_int_equal(chmod(path, 0600), 0);
	/* a directory others may enter */
	assert_int_equal(chmod(v->dir, 0755), 0);
	assert_int_equal(kh_secmod_open(v->dir, &s, bad, sizeof bad), KH_ERR_KEYFILE_PERM);
	assert_null(s);
	assert_int_equal(chmod(v->dir, 0700), 0);
	/* a .key file that is not a key, or not named by an id */
	snprintf(path, sizeof path, "%s/0123456789abcdef0123456789abcdef.key", v->dir);
	assert_int_equal(kh_file_write_new(path, (const uint8_t *)"junk", 4, 0600), KH_OK);
	assert_int_equal(kh_secmod_open(v->dir, &s, bad, sizeof bad), KH_ERR_FORMAT);
	assert_string_equal(bad, path);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof path, "%s/listing.key", v->dir);
	assert_int_equal(kh_file_write_new(path, (const uint8_t *)"junk", 4, 0600), KH_OK);
	assert_int_equal(kh_secmod_open(v->dir, &s, bad, sizeof bad), KH_ERR_FORMAT);
	assert_int_equal(unlink(path), 0);
	/* and with everything private again it starts, with its key */
	assert_int_equal(kh_secmod_open(v->dir, &s, bad, sizeof bad), KH_OK);
	assert_int_equal(kh_secmod_count(s), 1);
	kh_secmod_free(s);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	strcpy(sa.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* Send bytes, read one response frame; its status word, or -1 when the stream ended first. */
static int raw_ask(int fd, const uint8_t *p, size_t n)
{
	uint8_t r[KH_SECMOD_FRAME_MAX];
	size_t got = 0;

	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
	while (got < KH_SECMOD_HDR_LEN) {
		ssize_t k = recv(fd, r + got, sizeof r - got, 0);
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	assert_int_equal(r[2] << 8 | r[3], 0); /* a refusal carries nothing */
	return r[0] << 8 | r[1];
}

static void test_garbage_frames(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN], der[1024], frame[64];
	struct pub p;
	size_t n;
	int fd;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	pub_free(&p);
	fd = raw_connect(v->sock);
	/* another version, an unknown op, a body of the wrong size: answered, the stream goes on */
	memcpy(frame, "\x02\x09\x00\x10", 4);
	memcpy(frame + 4, id, 16);
	assert_int_equal(raw_ask(fd, frame, 20), kh_err_to_sw(KH_ERR_VERSION));
	memcpy(frame, "\x7f\x01\x00\x00", 4);
	assert_int_equal(raw_ask(fd, frame, 4), kh_err_to_sw(KH_ERR_APDU_INS));
	memcpy(frame, "\x01\x01\x00\x02\x04\x01", 6); /* KEYGEN of 1025 bits */
	assert_int_equal(raw_ask(fd, frame, 6), kh_err_to_sw(KH_ERR_FORMAT));
	memcpy(frame, "\x02\x01\x00\x0f", 4);
	assert_int_equal(raw_ask(fd, frame, 4 + 15), kh_err_to_sw(KH_ERR_FORMAT));
	/* a length past the bound: answered, then the connection is closed */
	memcpy(frame, "\x03\x01\xff\xff", 4);
	assert_int_equal(raw_ask(fd, frame, 4), kh_err_to_sw(KH_ERR_TOO_LARGE));
	{
		uint8_t x;
		assert_true(recv(fd, &x, 1, 0) <= 0);
	}
	close(fd);
	/* a client that sends half a frame and hangs up */
	fd = raw_connect(v->sock);
	assert_int_equal(send(fd, "\x03\x01\x01", 3, MSG_NOSIGNAL), 3);
	close(fd);
	/* the next client is served */
	assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_OK);
	kh_secmod_client_close(c);
	/* the parsers agree with what the socket answered */
	{
		struct kh_secmod_req q;
		const uint8_t *body;
		size_t blen;
		assert_int_equal(kh_secmod_req_parse(frame, 3, &q), KH_ERR_TRUNCATED);
		memcpy(frame, "\x02\x01\x00\x10", 4);
		assert_int_equal(kh_secmod_req_parse(frame, 21, &q), KH_ERR_TRAILING);
		assert_int_equal(kh_secmod_req_parse(frame, 20, &q), KH_OK);
		assert_int_equal(q.op, KH_SECMOD_PUBKEY);
		assert_int_equal(kh_secmod_resp_parse((const uint8_t *)"\x6a\x82\x00\x00", 4, &body, &blen),
				 KH_ERR_NOTFOUND);
		assert_int_equal(kh_secmod_resp_parse((const uint8_t *)"\x6a\x82\x00\x01\x00", 5, &body, &blen),
				 KH_ERR_FORMAT);
		assert_int_equal(kh_secmod_resp_parse((const uint8_t *)"\x90\x00\x00\x01\x07", 5, &body, &blen), KH_OK);
		assert_int_equal(blen, 1);
		assert_int_equal(body[0], 7);
	}
}

static void test_client_survives_restart(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN], m[256], cb[256], z[256], der[1024];
	struct pub p;
	size_t n;

	srv_start(v);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	make_c(&p, m, cb);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z), KH_OK);
	srv_stop(v);
	/* gone: every operation is SECMOD, nothing else */
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z), KH_ERR_SECMOD);
	assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_ERR_SECMOD);
	assert_int_equal(kh_secmod_keygen(c, 2048, id, der, sizeof der, &n), KH_ERR_SECMOD);
	/* back: the same client recovers by itself */
	srv_start(v);
	memset(z, 0, sizeof z);
	assert_int_equal(kh_secmod_decrypt(c, id, cb, p.len, z), KH_OK);
	assert_memory_equal(z, m, p.len);
	/* and once more with a pooled connection that outlived a restart */
	srv_stop(v);
	srv_start(v);
	assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_OK);
	pub_free(&p);
	kh_secmod_client_close(c);
}

/* A second process on a live socket is refused and the first keeps serving; a stale one is replaced. */
static void test_socket_owner(void **state)
{
	struct srv *v = *state;
	struct kh_secmod *s2 = NULL;
	struct kh_secmod_client *c;
	volatile sig_atomic_t stop = 0;
	uint8_t id[KH_SECMOD_ID_LEN];
	struct stat st;
	struct pub p;
	char bad[4096];
	int fd;

	srv_start(v);
	assert_int_equal(stat(v->sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(kh_secmod_open(v->dir, &s2, bad, sizeof bad), KH_OK);
	assert_int_equal(kh_secmod_serve(s2, v->sock, 4, &stop, NULL), KH_ERR_EXISTS);
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	pub_free(&p);
	srv_stop(v);
	/* a stale socket file (bound, nobody listening) is replaced */
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		strcpy(sa.sun_path, v->sock);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
		close(fd);
	}
	kh_secmod_free(s2);
	srv_start(v);
	assert_int_equal(kh_secmod_count(v->s), 1);
	{
		uint8_t der[1024];
		size_t n;
		assert_int_equal(kh_secmod_pubkey(c, id, der, sizeof der, &n), KH_OK);
	}
	kh_secmod_client_close(c);
	/* a regular file at the path is not taken for a socket */
	srv_stop(v);
	assert_int_equal(kh_file_write_new(v->sock, (const uint8_t *)"x", 1, 0600), KH_OK);
	assert_int_equal(kh_secmod_open(v->dir, &s2, bad, sizeof bad), KH_OK);
	assert_int_equal(kh_secmod_serve(s2, v->sock, 4, &stop, NULL), KH_ERR_EXISTS);
	kh_secmod_free(s2);
	assert_int_equal(unlink(v->sock), 0);
}

struct worker {
	struct kh_secmod_client *c;
	const uint8_t *id;
	const struct pub *p;
	int ok;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t m[256], cb[256], z[256];

	w->ok = 0;
	for (int i = 0; i < 3; i++) {
		make_c(w->p, m, cb);
		if (kh_secmod_decrypt(w->c, w->id, cb, w->p->len, z) != KH_OK || memcmp(z, m, w->p->len) != 0)
			return NULL;
	}
	w->ok = 1;
	return NULL;
}

static void test_concurrent_clients(void **state)
{
	struct srv *v = *state;
	struct kh_secmod_client *c;
	uint8_t id[KH_SECMOD_ID_LEN];
	struct worker w[32];
	pthread_t t[32];
	struct pub p;

	srv_start(v); /* 8 connections at once: the others wait their turn */
	assert_int_equal(kh_secmod_client_open(v->sock, &c), KH_OK);
	keygen(c, 2048, id, &p);
	for (int i = 0; i < 32; i++) {
		w[i] = (struct worker){.c = c, .id = id, .p = &p};
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < 32; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].ok, 1);
	}
	pub_free(&p);
	kh_secmod_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_decrypt_2048, setup, teardown),
		cmocka_unit_test_setup_teardown(test_decrypt_3072, setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_and_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_reloads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pem_key_loads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_private_files_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
