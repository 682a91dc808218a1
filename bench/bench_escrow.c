/*
 * bench_escrow: the escrow of seed 003 end to end (docs/performance.md "Escrow"), next to the raw
 * operations it is built on, measured in the same run.
 *
 *   purchases  C clients (-c, default 32), each a buyer's host with a device of its own (a
 *              software module in this process), buying the same listing again and again with
 *              the real client (kh_escrow_buy): the device's request, the escrow over HTTP on
 *              loopback (the real service on an SQLite file, durable: every hold and every
 *              settlement is fsynced before its answer), the signing process on its UNIX socket
 *              (a thread of this program), the device's unblinding and notice, the notice
 *              settled. The hosts' own files go to a tmpfs when there is one (/dev/shm): what is
 *              measured is the escrow, not the buyer's disk.
 *   raw_rsa    the escrow's floor: RSA private operations (EVP_PKEY_decrypt, RSA_NO_PADDING,
 *              blinding on) of the same key size on one thread.
 *   blind, unblind  the device's two operations (kh_rsa_blind; kh_rsa_unblind, which also checks
 *              m^e = c) against the same arithmetic done with OpenSSL's BIGNUM directly, plainly
 *              (raw_blind: r^e mod n times c; raw_unblind: r^-1, times z, m^e, for an r of the
 *              modulus's size): what deriving r from its seed, checking gcd(r, n) = 1 and the
 *              constant-time paths cost.
 *
 * With the purchases, what they cost: the CPU time of the whole process (escrow, signing process,
 * buyers and their devices) per purchase, and how busy the machine's cores were meanwhile (below
 * 100 %: the purchases wait on something other than CPU: the store's commits). The buyers' threads
 * are named "buyer", the signing process's "secmod" (`perf report --sort comm` tells them apart
 * from the HTTP server's).
 *
 * Ratios within each round: purchases_vs_raw_rsa, blind_vs_raw, unblind_vs_raw. Output:
 * bench=<name> unit=ops/s median= min= max= rounds=, ratio=<name> value= ... note=. Nothing
 * asserts on time; the exit status is non-zero only when something fails.
 *
 *   bench_escrow [-r ROUNDS] [-t SECONDS] [-c CLIENTS]
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "keyhole/authority.h"
#include "keyhole/device.h"
#include "keyhole/escrow.h"
#include "keyhole/escrowclient.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/secmod.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"
#include "keyhole/store_escrow.h"
#include "util.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		kh_err e_ = (x);                                                                   \
		if (e_ != KH_OK) {                                                                 \
			fprintf(stderr, "bench_escrow: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,   \
				kh_strerror(e_));                                                  \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

#define CLIENTS_MAX 128
#define PRICE 100

struct client {
	pthread_t th;
	struct kh_softmod *sm;
	struct kh_transport t;
	struct kh_escrow_client *ec;
	char base[400];
	_Atomic int *go;
	unsigned done;
	int failed;
	char why[256];
};

static char offer_path[400], khe_path[400];
static double stop_at;

static void *client_loop(void *arg)
{
	struct client *c = arg;
	struct kh_escrow_bought b;
	kh_err r;

	pthread_setname_np(pthread_self(), "buyer");
	while (!atomic_load(c->go))
		sched_yield();
	while (bench_now_s() < stop_at || !c->done) {
		if ((r = kh_escrow_buy(c->ec, &c->t, offer_path, khe_path, c->base, &b)) != KH_OK ||
		    b.outcome != KH_ESCROW_DELIVERED) {
			snprintf(c->why, sizeof c->why, "%s: %s", kh_strerror(r), kh_escrow_client_error(c->ec));
			c->failed = 1;
			return NULL;
		}
		c->done++;
	}
	return NULL;
}

/* CPU seconds of this process so far, every thread (user and system). */
static double cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- the raw references ---- */

static double raw_rsa(EVP_PKEY *pk, const uint8_t *x, size_t nlen, double secs)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
	uint8_t z[KH_RSA_MAX_LEN];
	unsigned n = 0;
	double t0, t;

	if (!ctx || EVP_PKEY_decrypt_init(ctx) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) <= 0)
		exit(1);
	t0 = bench_now_s();
	do {
		size_t outl = nlen;
		if (EVP_PKEY_decrypt(ctx, z, &outl, x, nlen) <= 0)
			exit(1);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	EVP_PKEY_CTX_free(ctx);
	return n / (t - t0);
}

struct bn_ref {
	BN_CTX *ctx;
	BN_MONT_CTX *mont;
	BIGNUM *n, *e, *r, *c, *z, *a, *b;
};

/* raw_blind: a = r^e mod n, then a * c mod n. */
static double raw_blind(struct bn_ref *k, double secs)
{
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		if (!BN_mod_exp_mont(k->a, k->r, k->e, k->n, k->ctx, k->mont) || !BN_mod_mul(k->a, k->a, k->c, k->n, k->ctx))
			exit(1);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	return n / (t - t0);
}

/* raw_unblind: b = r^-1, a = z * b, then a^e (compared with c). */
static double raw_unblind(struct bn_ref *k, double secs)
{
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		if (!BN_mod_inverse(k->b, k->r, k->n, k->ctx) || !BN_mod_mul(k->a, k->z, k->b, k->n, k->ctx) ||
		    !BN_mod_exp_mont(k->b, k->a, k->e, k->n, k->ctx, k->mont))
			exit(1);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	return n / (t - t0);
}

static double keyhole_blind(const uint8_t *n, size_t nlen, const uint8_t *c, const uint8_t *seed, double secs)
{
	uint8_t out[KH_RSA_MAX_LEN];
	unsigned k = 0;
	double t0 = bench_now_s(), t;

	do {
		CHECK(kh_rsa_blind(n, nlen, c, seed, out));
		k++;
	} while ((t = bench_now_s()) - t0 < secs);
	return k / (t - t0);
}

static double keyhole_unblind(const uint8_t *n, size_t nlen, const uint8_t *c, const uint8_t *seed, const uint8_t *z,
			      double secs)
{
	uint8_t m[KH_RSA_MAX_LEN];
	unsigned k = 0;
	double t0 = bench_now_s(), t;

	do {
		CHECK(kh_rsa_unblind(n, nlen, c, seed, z, m));
		k++;
	} while ((t = bench_now_s()) - t0 < secs);
	kh_wipe(m, sizeof m);
	return k / (t - t0);
}

/* ---- the escrow's processes ---- */

static struct kh_secmod *sm;
static volatile sig_atomic_t sm_stop, sm_ready;
static char sm_sock[400];

static void *secmod_thread(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "secmod"); /* its connections' threads inherit it */
	if (kh_secmod_serve(sm, sm_sock, CLIENTS_MAX + 8, &sm_stop, &sm_ready) != KH_OK)
		sm_ready = -1;
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_escrow [-r ROUNDS] [-t SECONDS] [-c CLIENTS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int rounds = 5, clients = 32, opt;
	double secs = 2.0;
	char dir[256], hostdir[256], adir[300], edir[300], keys[300], db[300], plain[300], listing_path[400];
	struct kh_escrow_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_escrow_service *svc;
	struct kh_authority *a;
	struct kh_http *h;
	struct kh_store *st;
	struct client *cl;
	pthread_t smt;
	_Atomic int go = 0;
	double fig[8][BENCH_MAX_ROUNDS], ratio[3][BENCH_MAX_ROUNDS], cores = (double)sysconf(_SC_NPROCESSORS_ONLN);
	uint8_t listing[KH_ESCROW_LISTING_MAX], n[KH_RSA_MAX_LEN], c[KH_RSA_MAX_LEN], seed[32], cp[KH_RSA_MAX_LEN],
		z[KH_RSA_MAX_LEN], content[4096];
	size_t llen = 0, nlen = 0;
	char url[64], tok[KH_ESCROW_TOKEN_B64];
	int64_t id, avail;
	uint32_t serial;
	EVP_PKEY *pk;
	struct kh_escrow_listing l;
	struct bn_ref k;

	while ((opt = getopt(argc, argv, "r:t:c:")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'c': clients = atoi(optarg); break;
		default: usage();
		}
	}
	if (rounds < 1 || rounds > BENCH_MAX_ROUNDS || secs <= 0 || clients < 1 || clients > CLIENTS_MAX || optind != argc)
		usage();
	CHECK(bench_mkdtemp(dir, sizeof dir, "bench-escrow-XXXXXX"));
	snprintf(hostdir, sizeof hostdir, "%s", dir);
	{
		struct stat sb;
		/* the hosts' files on a tmpfs when there is one */
		if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) &&
		    bench_mkdtemp(hostdir, sizeof hostdir, "/dev/shm/bench-escrow-host-XXXXXX") != KH_OK)
			snprintf(hostdir, sizeof hostdir, "%s", dir);
	}
	snprintf(adir, sizeof adir, "%s/auth", dir);
	snprintf(edir, sizeof edir, "%s/escrow", dir);
	snprintf(keys, sizeof keys, "%s/keys", dir);
	snprintf(db, sizeof db, "%s/escrow.db", dir);
	snprintf(sm_sock, sizeof sm_sock, "%s/sm.sock", dir);
	snprintf(plain, sizeof plain, "%s/content", hostdir);
	snprintf(listing_path, sizeof listing_path, "%s/listing", hostdir);
	snprintf(offer_path, sizeof offer_path, "%s/c.offer", hostdir);
	snprintf(khe_path, sizeof khe_path, "%s/c.khe", hostdir);
	CHECK(kh_authority_init(adir, "Bench operator"));
	CHECK(kh_authority_open(adir, &a));
	CHECK(kh_identity_new(a, edir, KH_ROLE_ESCROW, &serial));
	CHECK(kh_secmod_open(keys, &sm, NULL, 0));
	if (pthread_create(&smt, NULL, secmod_thread, NULL) != 0)
		return 1;
	while (!sm_ready)
		usleep(1000);
	if (sm_ready < 0)
		return 1;

	/* accounts: a seller and a buyer account per client, funded for any run */
	CHECK(kh_store_open(db, &st));
	CHECK(kh_escrow_account_new(st, "seller", "EUR", 0, &id, tok));
	if (!(cl = calloc((size_t)clients, sizeof *cl)))
		return 1;
	cfg.db = db;
	cfg.dir = edir;
	cfg.secmod = sm_sock;
	CHECK(kh_escrow_service_new(&cfg, &svc, NULL));
	hcfg.threads = 4 * (unsigned)clients + 8;
	CHECK(kh_http_new(&hcfg, &h));
	CHECK(kh_escrow_service_add_routes(svc, h));
	CHECK(kh_http_start(h));
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)kh_http_port(h));
	{
		struct kh_escrow_client *s;
		CHECK(kh_escrow_client_new(url, NULL, tok, &s));
		CHECK(kh_escrow_list(s, "bench-content", PRICE, 0, "bench", listing, &llen));
		kh_escrow_client_free(s);
	}
	CHECK(kh_file_write_new(listing_path, listing, llen, 0600));
	CHECK(kh_random(content, sizeof content));
	CHECK(kh_file_write_new(plain, content, sizeof content, 0600));
	CHECK(kh_escrow_seal_content(listing, llen, plain, 0, khe_path, offer_path));
	for (int i = 0; i < clients; i++) {
		struct kh_issued *iss = calloc(1, sizeof *iss);
		char name[32];
		if (!iss)
			return 1;
		snprintf(name, sizeof name, "buyer%d", i);
		CHECK(kh_escrow_account_new(st, name, "EUR", 0, &id, tok));
		CHECK(kh_store_escrow_deposit(st, id, INT64_C(1) << 50, NULL, 0, &avail));
		CHECK(kh_escrow_client_new(url, NULL, tok, &cl[i].ec));
		CHECK(kh_softmod_new_blank(&cl[i].sm));
		kh_transport_inproc(&cl[i].t, kh_softmod_module(cl[i].sm));
		CHECK(kh_authority_personalise(a, &cl[i].t, KH_ROLE_BUYER, 0, iss));
		free(iss);
		snprintf(cl[i].base, sizeof cl[i].base, "%s/b%d", hostdir, i);
		cl[i].go = &go;
	}
	kh_store_close(st);

	/* the raw references on the listing's own key size */
	CHECK(kh_escrow_listing_parse(listing, llen, NULL, &l));
	CHECK(kh_rsa_spki_modulus(l.key, l.keylen, n, &nlen));
	/* a key of the listing's size held here, so that z = c'^d is a genuine answer */
	if (!(pk = EVP_RSA_gen((unsigned)(8 * nlen))))
		return 1;
	{
		uint8_t spki[KH_RSA_SPKI_MAX], *p = spki;
		int sl = i2d_PUBKEY(pk, NULL);
		EVP_PKEY_CTX *x;
		size_t zl = nlen;
		if (sl <= 0 || sl > (int)sizeof spki || i2d_PUBKEY(pk, &p) != sl)
			return 1;
		CHECK(kh_rsa_spki_modulus(spki, (size_t)sl, n, &nlen));
		CHECK(kh_random(seed, sizeof seed));
		CHECK(kh_random(c, nlen));
		c[0] &= 0x3F; /* below n */
		CHECK(kh_rsa_blind(n, nlen, c, seed, cp));
		if (!(x = EVP_PKEY_CTX_new(pk, NULL)) || EVP_PKEY_decrypt_init(x) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_padding(x, RSA_NO_PADDING) <= 0 || EVP_PKEY_decrypt(x, z, &zl, cp, nlen) <= 0)
			return 1;
		EVP_PKEY_CTX_free(x);
	}
	memset(&k, 0, sizeof k);
	if (!(k.ctx = BN_CTX_new()) || !(k.mont = BN_MONT_CTX_new()) || !(k.n = BN_bin2bn(n, (int)nlen, NULL)) ||
	    !(k.e = BN_new()) || !BN_set_word(k.e, KH_RSA_E) || !(k.r = BN_new()) || !BN_rand_range(k.r, k.n) ||
	    !(k.c = BN_bin2bn(c, (int)nlen, NULL)) || !(k.z = BN_bin2bn(z, (int)nlen, NULL)) || !(k.a = BN_new()) ||
	    !(k.b = BN_new()) || !BN_MONT_CTX_set(k.mont, k.n, k.ctx))
		return 1;

	printf("# bench_escrow: %d clients, %zu-bit listing key, %s hosts' files, %.2f s rounds\n", clients, 8 * nlen,
	       strcmp(hostdir, dir) ? "tmpfs" : "disk", secs);
	for (int r = 0; r < rounds; r++) {
		unsigned before = 0, after = 0;
		double t0, t1, c0, c1;

		fig[1][r] = raw_rsa(pk, c, nlen, secs / 4);
		fig[2][r] = keyhole_blind(n, nlen, c, seed, secs / 8);
		fig[3][r] = raw_blind(&k, secs / 8);
		fig[4][r] = keyhole_unblind(n, nlen, c, seed, z, secs / 8);
		fig[5][r] = raw_unblind(&k, secs / 8);
		if (fig[4][r] < 0)
			return 1;
		atomic_store(&go, 0);
		for (int i = 0; i < clients; i++) {
			before += cl[i].done;
			cl[i].done = 0;
		}
		(void)before;
		c0 = cpu_s();
		t0 = bench_now_s();
		stop_at = t0 + secs;
		for (int i = 0; i < clients; i++)
			if (pthread_create(&cl[i].th, NULL, client_loop, &cl[i]) != 0)
				return 1;
		atomic_store(&go, 1);
		for (int i = 0; i < clients; i++) {
			pthread_join(cl[i].th, NULL);
			if (cl[i].failed) {
				fprintf(stderr, "bench_escrow: client %d: %s\n", i, cl[i].why);
				return 1;
			}
			after += cl[i].done;
		}
		t1 = bench_now_s();
		c1 = cpu_s();
		fig[6][r] = after ? 1e3 * (c1 - c0) / after : 0;
		fig[7][r] = 100 * (c1 - c0) / (cores * (t1 - t0));
		fig[0][r] = after / (t1 - t0);
		ratio[0][r] = fig[0][r] / fig[1][r];
		ratio[1][r] = fig[2][r] / fig[3][r];
		ratio[2][r] = fig[4][r] / fig[5][r];
		fprintf(stderr, "bench_escrow: round %d of %d done\n", r + 1, rounds);
	}
	bench_print("escrow_purchases", "ops/s", 1, fig[0], rounds);
	bench_print("escrow_cpu_per_purchase", "ms", 2, fig[6], rounds);
	bench_print("escrow_cores_busy", "%", 0, fig[7], rounds);
	bench_print("escrow_raw_rsa", "ops/s", 1, fig[1], rounds);
	bench_print("escrow_blind", "ops/s", 0, fig[2], rounds);
	bench_print("escrow_raw_blind", "ops/s", 0, fig[3], rounds);
	bench_print("escrow_unblind", "ops/s", 0, fig[4], rounds);
	bench_print("escrow_raw_unblind", "ops/s", 0, fig[5], rounds);
	bench_print_ratio("purchases_vs_raw_rsa", ratio[0], rounds,
			  "whole purchases (request, hold, answer, unblind, notice, settlement) per RSA private "
			  "operation on one thread");
	bench_print_ratio("blind_vs_raw", ratio[1], rounds,
			  "kh_rsa_blind (r from its seed, r^-1 as the gcd check, constant-time r^e) vs BIGNUM");
	bench_print_ratio("unblind_vs_raw", ratio[2], rounds,
			  "kh_rsa_unblind (r^-1 again from the seed, constant-time m^e check) vs BIGNUM");

	/* the ledger after it all */
	{
		struct kh_store_escrow_audit *au = calloc(1, sizeof *au);
		if (!au)
			return 1;
		CHECK(kh_store_open(db, &st));
		CHECK(kh_store_escrow_audit(st, au));
		printf("# audit: %lld movements, %lld purchases, the ledger balances\n", (long long)au->movements,
		       (long long)au->purchases);
		kh_store_close(st);
		free(au);
	}
	kh_http_free(h);
	kh_escrow_service_free(svc);
	sm_stop = 1;
	pthread_join(smt, NULL);
	kh_secmod_free(sm);
	for (int i = 0; i < clients; i++) {
		kh_escrow_client_free(cl[i].ec);
		kh_softmod_free(cl[i].sm);
	}
	free(cl);
	EVP_PKEY_free(pk);
	BN_free(k.n);
	BN_free(k.e);
	BN_free(k.r);
	BN_free(k.c);
	BN_free(k.z);
	BN_free(k.a);
	BN_free(k.b);
	BN_MONT_CTX_free(k.mont);
	BN_CTX_free(k.ctx);
	kh_authority_free(a);
	if (strcmp(hostdir, dir) != 0)
		bench_rmtree(hostdir);
	return bench_rmtree(dir) == 0 ? 0 : 1;
}
