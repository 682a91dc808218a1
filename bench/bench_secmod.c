/*
 * bench_secmod: what the escrow's signing process (include/keyhole/secmod.h) costs per private
 * operation, next to the raw OpenSSL operation on the same key in the same run.
 *
 *   raw     EVP_PKEY_decrypt with RSA_NO_PADDING of a 2048-bit key on one thread, one context
 *           reused (the floor), on random values in [2, n-2]
 *   sock1   the same operation through the process's UNIX socket (a server thread of this
 *           program, the real client): one client thread, one request at a time
 *   sockN   N client threads at once (-c, default 32) sharing one client (its connection pool),
 *           as the front end's concurrent purchases do: on a machine of k cores this can reach
 *           about k times raw
 *
 * Ratios (computed within each round): sock1_vs_raw = sock1 / raw (the socket's overhead; 1.00
 * none), sockN_vs_raw = sockN / raw (how many cores' worth the process uses). Every benchmark
 * runs R rounds (-r, default 5) of ~T seconds (-t, default 0.3), at least one operation each,
 * rounds interleaved. Output: bench=<name> unit=ops/s median= min= max= rounds=, ratio=<name>
 * value= min= max= rounds= note=. Nothing asserts on time; the exit status is non-zero only when
 * an operation fails or gives a wrong answer.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/secmod.h"

#include "util.h"

#define VALUES 64 /* random c' cycled through */
#define CLIENTS_MAX 256

enum { F_RAW, F_SOCK1, F_SOCKN, NF };
static double fig[NF][BENCH_MAX_ROUNDS];

static struct {
	char dir[256], keys[300], sock[300];
	struct kh_secmod *sm;
	struct kh_secmod_client *cl;
	pthread_t srv;
	int srv_running;
	volatile sig_atomic_t stop, ready;
	kh_err srv_rc;
	uint8_t id[KH_SECMOD_ID_LEN];
	EVP_PKEY *pk; /* the same key, read from its file, for the raw reference */
	EVP_PKEY_CTX *ctx;
	uint8_t c[VALUES][256];
	size_t len;
} W;

static void *serve(void *arg)
{
	(void)arg;
	W.srv_rc = kh_secmod_serve(W.sm, W.sock, KH_SECMOD_THREADS_MAX, &W.stop, &W.ready);
	return NULL;
}

/* Random values c' in [2, n-2] for the key's public half. */
static kh_err make_values(const uint8_t *der, size_t dl)
{
	const unsigned char *q = der;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &q, (long)dl);
	BIGNUM *n = NULL, *v = BN_new(), *lim = NULL;
	kh_err r = KH_ERR_CRYPTO;

	if (!pub || !v || !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) || !(lim = BN_dup(n)) ||
	    !BN_sub_word(lim, 3))
		goto out;
	W.len = (size_t)BN_num_bytes(n);
	if (W.len != 256)
		goto out;
	for (int i = 0; i < VALUES; i++)
		if (!BN_rand_range(v, lim) || !BN_add_word(v, 2) || BN_bn2binpad(v, W.c[i], (int)W.len) < 0)
			goto out;
	r = KH_OK;
out:
	EVP_PKEY_free(pub);
	BN_free(n);
	BN_free(v);
	BN_free(lim);
	return r;
}

static kh_err setup(void)
{
	uint8_t der[2048], *kd = NULL;
	char hex[2 * KH_SECMOD_ID_LEN + 1], path[400];
	size_t dl, kn = 0;
	kh_err r;

	if ((r = bench_mkdtemp(W.dir, sizeof W.dir, "bench-secmod-XXXXXX")) != KH_OK)
		return r;
	snprintf(W.keys, sizeof W.keys, "%s/keys", W.dir);
	snprintf(W.sock, sizeof W.sock, "%s/secmod.sock", W.dir);
	if ((r = kh_secmod_open(W.keys, &W.sm, NULL, 0)) != KH_OK)
		return r;
	W.srv_rc = -1;
	if (pthread_create(&W.srv, NULL, serve, NULL) != 0)
		return KH_ERR_IO;
	W.srv_running = 1;
	while (!W.ready && W.srv_rc == -1)
		(void)nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	if (!W.ready)
		return W.srv_rc;
	if ((r = kh_secmod_client_open(W.sock, &W.cl)) != KH_OK)
		return r;
	if ((r = kh_secmod_keygen(W.cl, 2048, W.id, der, sizeof der, &dl)) != KH_OK)
		return r;
	if ((r = make_values(der, dl)) != KH_OK)
		return r;
	kh_hex_encode(W.id, sizeof W.id, hex);
	snprintf(path, sizeof path, "%s/%s.key", W.keys, hex);
	if ((r = kh_keyfile_read(path, 16384, &kd, &kn)) != KH_OK)
		return r;
	{
		const unsigned char *q = kd;
		PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &q, (long)kn);
		W.pk = p8 ? EVP_PKCS82PKEY(p8) : NULL;
		PKCS8_PRIV_KEY_INFO_free(p8);
	}
	kh_file_free(kd, kn);
	if (!W.pk || !(W.ctx = EVP_PKEY_CTX_new_from_pkey(NULL, W.pk, NULL)) || EVP_PKEY_decrypt_init(W.ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(W.ctx, RSA_NO_PADDING) <= 0)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

static void teardown(void)
{
	if (W.srv_running) {
		W.stop = 1;
		pthread_join(W.srv, NULL);
	}
	kh_secmod_client_close(W.cl);
	kh_secmod_free(W.sm);
	EVP_PKEY_CTX_free(W.ctx);
	EVP_PKEY_free(W.pk);
	if (W.dir[0])
		(void)bench_rmtree(W.dir);
}

/* One raw operation on value i; its z into z. */
static kh_err raw_op(int i, uint8_t *z)
{
	size_t zl = W.len;
	return EVP_PKEY_decrypt(W.ctx, z, &zl, W.c[i % VALUES], W.len) > 0 && zl == W.len ? KH_OK : KH_ERR_CRYPTO;
}

struct worker {
	double until;
	unsigned long ops;
	kh_err r;
	int first;
	pthread_t t;
};

static void *sock_loop(void *arg)
{
	struct worker *w = arg;
	uint8_t z[256];

	w->ops = 0;
	w->r = KH_OK;
	do {
		if ((w->r = kh_secmod_decrypt(W.cl, W.id, W.c[(w->first + (int)w->ops) % VALUES], W.len, z)) != KH_OK)
			break;
		w->ops++;
	} while (bench_now_s() < w->until);
	return NULL;
}

/* ops/s of the socket with n client threads for ~secs. */
static kh_err sock_round(int n, double secs, double *rate)
{
	struct worker w[CLIENTS_MAX];
	double t0 = bench_now_s(), t1;
	unsigned long ops = 0;
	kh_err r = KH_OK;
	int started = 0;

	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){.until = t0 + secs, .first = i};
		if (pthread_create(&w[i].t, NULL, sock_loop, &w[i]) != 0) {
			r = KH_ERR_IO;
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(w[i].t, NULL);
		ops += w[i].ops;
		if (w[i].r != KH_OK)
			r = w[i].r;
	}
	t1 = bench_now_s();
	*rate = (double)ops / (t1 - t0);
	return r;
}

static kh_err raw_round(double secs, double *rate)
{
	uint8_t z[256];
	double t0 = bench_now_s(), t1;
	unsigned long ops = 0;
	kh_err r;

	do {
		if ((r = raw_op((int)ops, z)) != KH_OK)
			return r;
		ops++;
	} while ((t1 = bench_now_s()) < t0 + secs);
	*rate = (double)ops / (t1 - t0);
	return KH_OK;
}

/* Before timing: the socket's answer is the raw answer, for every value. */
static kh_err same_answers(void)
{
	uint8_t a[256], b[256];
	kh_err r;

	for (int i = 0; i < VALUES; i++) {
		if ((r = raw_op(i, a)) != KH_OK || (r = kh_secmod_decrypt(W.cl, W.id, W.c[i], W.len, b)) != KH_OK)
			return r;
		if (memcmp(a, b, W.len) != 0)
			return KH_ERR_INTERNAL;
	}
	return KH_OK;
}

static const char usage[] =
	"usage: bench_secmod [-r ROUNDS] [-t SECONDS] [-c CLIENTS] [-p]\n"
	"  -r ROUNDS   rounds per benchmark, 1 to 99 (default 5)\n"
	"  -t SECONDS  length of one round (default 0.3)\n"
	"  -c CLIENTS  client threads of the concurrent benchmark, 1 to 256 (default 32)\n"
	"  -p          pin this process to one CPU\n"
	"  -n, -b NAME accepted for bench/run.sh, ignored\n";

int main(int argc, char **argv)
{
	int rounds = 5, clients = 32, pin = -1, c, rc = 1;
	double secs = 0.3, ratio1[BENCH_MAX_ROUNDS], ration[BENCH_MAX_ROUNDS];
	char name[64];
	kh_err e = KH_OK;

	while ((c = getopt(argc, argv, "r:t:c:pnb:h")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'c': clients = atoi(optarg); break;
		case 'p': pin = 0; break;
		case 'n':
		case 'b': break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || !(secs > 0.001 && secs < 60) || clients < 1 ||
	    clients > CLIENTS_MAX) {
		fputs(usage, stderr);
		return 2;
	}
	if (pin == 0 && (pin = bench_pin()) < 0) {
		fprintf(stderr, "bench_secmod: cannot pin to one CPU\n");
		return 1;
	}
	if ((e = setup()) != KH_OK || (e = same_answers()) != KH_OK) {
		fprintf(stderr, "bench_secmod: setup: %s\n", kh_strerror(e));
		goto out;
	}
	printf("# bench_secmod: %d rounds of %.2f s per benchmark, rounds interleaved; RSA-2048, %d clients\n", rounds,
	       secs, clients);
	bench_print_pin(pin);
	printf("# %s; the signing process is a thread of this program, on a UNIX socket\n",
	       OpenSSL_version(OPENSSL_VERSION));
	fflush(stdout);
	for (int r = 0; r < rounds; r++) {
		if ((e = raw_round(secs, &fig[F_RAW][r])) != KH_OK || (e = sock_round(1, secs, &fig[F_SOCK1][r])) != KH_OK ||
		    (e = sock_round(clients, secs, &fig[F_SOCKN][r])) != KH_OK) {
			fprintf(stderr, "bench_secmod: %s\n", kh_strerror(e));
			goto out;
		}
		ratio1[r] = fig[F_SOCK1][r] / fig[F_RAW][r];
		ration[r] = fig[F_SOCKN][r] / fig[F_RAW][r];
	}
	bench_print("rsa2048_raw", "ops/s", 0, fig[F_RAW], rounds);
	bench_print("rsa2048_secmod_1", "ops/s", 0, fig[F_SOCK1], rounds);
	snprintf(name, sizeof name, "rsa2048_secmod_%d", clients);
	bench_print(name, "ops/s", 0, fig[F_SOCKN], rounds);
	bench_print_ratio("secmod_1_vs_raw", ratio1, rounds, "one client through the socket / raw on one thread");
	snprintf(name, sizeof name, "secmod_%d_vs_raw", clients);
	bench_print_ratio(name, ration, rounds, "concurrent clients through the socket / raw on one thread");
	rc = 0;
out:
	fflush(stdout);
	teardown();
	return rc;
}
