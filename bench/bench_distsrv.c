/*
 * bench_distsrv: the distribution server under load (docs/performance.md "Distribution server").
 * The real service (keyhole/distsvc.h) on the real store (an SQLite file), over HTTP on
 * loopback, and C clients (threads), each with a processor module of its own, each buying the
 * same program again and again through the whole sequence: hello, the server's proof, the
 * processor's answer, the key, the package, the charge, the activation. Figures: deliveries per
 * second, median over rounds. The raw figure beside it: the server's own cryptography per
 * delivery (two processor certificates checked, three Ed25519 signatures and one verification,
 * the HPKE wrap, the program encrypted twice, once to bind it and once for the download),
 * measured alone in the same run on the same program, on as many threads as the machine has
 * cores: how much of the ceiling the service keeps.
 *
 *   bench_distsrv [-r ROUNDS] [-t SECONDS] [-c CLIENTS] [-s PROGRAM_BYTES]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/authority.h"
#include "keyhole/device.h"
#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/distsvc.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"
#include "keyhole/store_dist.h"
#include "util.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		kh_err e_ = (x);                                                                   \
		if (e_ != KH_OK) {                                                                 \
			fprintf(stderr, "bench_distsrv: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				kh_strerror(e_));                                                  \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

#define CLIENTS_MAX 256

struct client {
	pthread_t th;
	struct kh_softmod *sm;
	struct kh_transport t;
	char name[32], auth[128];
	uint16_t port;
	struct kh_http_client *hc;
	int64_t program;
	_Atomic int *go;
	unsigned done;
	int failed;
};

static int64_t rounds_stop_ns;

/* One request on hc: its status (0 when no answer came), the JSON answer into *out (may be
 * NULL), or with rawlen the body's length only. */
static long req(struct kh_http_client *hc, uint16_t port, const char *method, const char *path, const char *auth,
		const char *body, json_t **out, size_t *rawlen)
{
	const char *hdr[3] = {"Content-Type: application/json", auth, NULL};
	char url[256], err[256], *text = NULL;
	json_t *j = NULL;
	size_t tlen = 0;
	long status = 0;

	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)port, path);
	if (kh_http_client_send(hc, method, url, hdr, body, &status, &j, rawlen ? &text : NULL, rawlen ? &tlen : NULL,
				err, sizeof err) != KH_OK)
		status = 0;
	if (rawlen)
		*rawlen = tlen;
	if (out)
		*out = j;
	else
		json_decref(j);
	free(text);
	return status;
}

static char *b64(const uint8_t *b, size_t n)
{
	char *s = malloc(kh_b64url_len(n) + 1);
	if (!s || kh_b64url_encode(b, n, s, kh_b64url_len(n) + 1) != KH_OK)
		exit(1);
	return s;
}

static size_t unb64(json_t *j, const char *key, uint8_t *out, size_t cap)
{
	size_t n = 0;
	if (kh_json_get_b64(j, key, out, cap, &n, 0) != KH_OK)
		exit(1);
	return n;
}

/* One whole delivery; 0 on success. */
static int deliver(struct client *c)
{
	uint8_t resp[KH_APDU_MAX_RESP], msg[4096], tok[512], sig[64], rc[KH_DIST_RECEIPT_BYTES];
	char path[96], *body = NULL, *s64 = NULL;
	size_t n, toklen, pkglen;
	json_t *j = NULL;
	int64_t id;
	uint16_t sw;
	struct kh_wr w;

	if (kh_host_apdu(&c->t, KH_INS_DIST_HELLO, 0, NULL, 0, resp, sizeof resp, &n, &sw) != KH_OK)
		return -1;
	s64 = b64(resp, n);
	if (asprintf(&body, "{\"program\":%lld,\"hello\":\"%s\"}", (long long)c->program, s64) < 0)
		return -1;
	free(s64);
	if (req(c->hc, c->port, "POST", "/v1/deliveries", c->auth, body, &j, NULL) != 201)
		return -1;
	free(body);
	id = json_integer_value(json_object_get(j, "id"));
	n = unb64(j, "auth", msg, sizeof msg);
	json_decref(j);
	if (kh_host_apdu(&c->t, KH_INS_DIST_AUTH, 0, msg, n, resp, sizeof resp, &n, &sw) != KH_OK)
		return -1;
	s64 = b64(resp, n);
	if (asprintf(&body, "{\"resp\":\"%s\"}", s64) < 0)
		return -1;
	free(s64);
	snprintf(path, sizeof path, "/v1/deliveries/%lld/resp", (long long)id);
	if (req(c->hc, c->port, "POST", path, c->auth, body, &j, NULL) != 200)
		return -1;
	free(body);
	n = unb64(j, "key", msg, sizeof msg);
	json_decref(j);
	if (kh_host_apdu(&c->t, KH_INS_DIST_KEY, 0, msg, n, resp, sizeof resp, &n, &sw) != KH_OK || n < 3)
		return -1;
	toklen = n - 3;
	memcpy(tok, resp + 3, toklen);
	snprintf(path, sizeof path, "/v1/deliveries/%lld/package", (long long)id);
	if (req(c->hc, c->port, "GET", path, c->auth, NULL, NULL, &pkglen) != 200 || pkglen == 0)
		return -1;
	snprintf(path, sizeof path, "/v1/deliveries/%lld/charge", (long long)id);
	if (req(c->hc, c->port, "POST", path, c->auth, NULL, &j, NULL) != 200)
		return -1;
	unb64(j, "receipt", rc, sizeof rc);
	unb64(j, "program_sig", sig, sizeof sig);
	json_decref(j);
	kh_wr_init(&w, msg, sizeof msg);
	kh_tlv_put(&w, KH_DIST_T_TOKEN, tok, toklen);
	kh_tlv_put(&w, KH_DIST_T_PROGRAM_SIG, sig, sizeof sig);
	kh_tlv_put(&w, KH_DIST_T_RECEIPT, rc + 5, KH_DIST_RECEIPT_LEN);
	if (w.err != KH_OK || kh_host_apdu(&c->t, KH_INS_DIST_ACTIVATE, 0, msg, w.len, resp, sizeof resp, &n, &sw) != KH_OK)
		return -1;
	return 0;
}

static int64_t now_ns(void)
{
	return (int64_t)(bench_now_s() * 1e9);
}

static void *client_main(void *arg)
{
	struct client *c = arg;

	while (!atomic_load(c->go))
		usleep(1000);
	while (now_ns() < rounds_stop_ns) {
		if (deliver(c) != 0) {
			c->failed = 1;
			break;
		}
		c->done++;
	}
	return NULL;
}

/* ---- the raw figure: the server's cryptography per delivery, alone */

struct raw {
	pthread_t th;
	const struct kh_dist_server *srv;
	const uint8_t *hello;
	size_t hello_len;
	const uint8_t *manifest, *program;
	size_t mlen, plen;
	int64_t stop;
	unsigned done, refused;
};

static kh_err count_put(void *ctx, const uint8_t *b, size_t n)
{
	(void)b;
	*(size_t *)ctx += n;
	return KH_OK;
}

static void *raw_main(void *arg)
{
	struct raw *r = arg;
	uint8_t out[4096], kx[32], sig[64], rb[KH_DIST_RECEIPT_BYTES], rid[16] = {1};
	struct kh_dist_receipt rc = {0};
	struct kh_dist_peer p;
	struct kh_dist_prog g;
	struct kh_wr w;
	size_t len;

	while (now_ns() < r->stop) {
		memset(&g, 0, sizeof g);
		g.program = 1;
		g.version = 1;
		CHECK(kh_dist_srv_hello(r->srv, r->hello, r->hello_len, 0, &p));
		kh_wr_init(&w, out, sizeof out);
		CHECK(kh_dist_srv_auth(r->srv, &p, &w));
		/* the processor's answer, checked: one Ed25519 verification (of a signature that fails
		 * here, which costs the same) */
		r->refused += kh_ed25519_verify(p.sign_pk, out, 64, out + 64) != KH_OK;
		CHECK(kh_random(kx, sizeof kx));
		for (int k = 0; k < 2; k++) {
			len = 0;
			CHECK(kh_dist_srv_package(kx, &g, r->manifest, r->mlen, r->program, r->plen, count_put, &len));
		}
		kh_wr_init(&w, out, sizeof out);
		CHECK(kh_dist_srv_key(r->srv, &p, &g, kx, &w));
		CHECK(kh_dist_receipt_sign(&rc, r->srv->sk, rb));
		CHECK(kh_dist_srv_program_sig(r->srv, p.fp, &g, rid, sig));
		r->done++;
	}
	return NULL;
}

static int fail(int line)
{
	fprintf(stderr, "bench_distsrv: set-up failed (line %d)\n", line);
	return 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_distsrv [-r ROUNDS] [-t SECONDS] [-c CLIENTS] [-s PROGRAM_BYTES]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int rounds = 3, clients = 32, opt;
	double secs = 3.0;
	size_t psize = 64 * 1024;
	char dir[256], adir[300], sdir[300], db[300];
	static const char manifest[] = "name: bench\nversion: 1\nkind: script\ninterpreter: /bin/sh\n";
	struct kh_authority *a = NULL;
	struct kh_dist_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_dist_service *svc = NULL;
	struct kh_http *h = NULL;
	struct kh_dist_server srv;
	struct kh_store *st;
	struct client *cl;
	_Atomic int go = 0;
	double rate[BENCH_MAX_ROUNDS], raw[BENCH_MAX_ROUNDS], ratio[BENCH_MAX_ROUNDS];
	uint8_t *program, hello[4096];
	size_t hello_len;
	int64_t prog_id, acct, bal;
	uint32_t serial;
	uint16_t sw;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	while ((opt = getopt(argc, argv, "r:t:c:s:")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'c': clients = atoi(optarg); break;
		case 's': psize = (size_t)strtoul(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (rounds < 1 || rounds > BENCH_MAX_ROUNDS || secs <= 0 || clients < 1 || clients > CLIENTS_MAX || psize < 1 ||
	    psize > KH_DIST_PROGRAM_MAX || optind != argc)
		usage();
	if (ncpu < 1)
		ncpu = 1;
	CHECK(bench_mkdtemp(dir, sizeof dir, "bench-distsrv-XXXXXX"));
	snprintf(adir, sizeof adir, "%s/auth", dir);
	snprintf(sdir, sizeof sdir, "%s/srv", dir);
	snprintf(db, sizeof db, "%s/dist.db", dir);
	CHECK(kh_authority_init(adir, "Bench operator"));
	CHECK(kh_authority_open(adir, &a));
	CHECK(kh_dist_identity_new(a, sdir, &serial));
	CHECK(kh_dist_identity_load(sdir, &srv));
	if (!(program = malloc(psize)))
		return fail(289);
	CHECK(kh_random(program, psize));
	CHECK(kh_store_open(db, &st));
	CHECK(kh_dist_publish(st, (const uint8_t *)manifest, sizeof manifest - 1, program, psize, 1, 0, &prog_id, NULL));
	if (!(cl = calloc((size_t)clients, sizeof *cl)))
		return fail(294);
	for (int i = 0; i < clients; i++) {
		struct kh_issued *iss = calloc(1, sizeof *iss);
		if (!iss)
			return fail(298);
		snprintf(cl[i].name, sizeof cl[i].name, "buyer%d", i);
		CHECK(kh_dist_account_new(st, cl[i].name, "bench-password", 14, 0, &acct));
		CHECK(kh_store_dist_deposit(st, acct, UINT32_MAX, 0, &bal));
		CHECK(kh_softmod_new_blank(&cl[i].sm));
		kh_transport_inproc(&cl[i].t, kh_softmod_module(cl[i].sm));
		CHECK(kh_authority_personalise(a, &cl[i].t, KH_ROLE_PROCESSOR, 0, iss));
		free(iss);
		cl[i].program = prog_id;
		CHECK(kh_http_client_new(NULL, "bench_distsrv", 64u * 1024u * 1024u, &cl[i].hc));
		cl[i].go = &go;
	}
	kh_store_close(st);
	cfg.db = db;
	cfg.dir = sdir;
	CHECK(kh_dist_service_new(&cfg, &svc, NULL));
	/* every client keeps its connection: from one address, a server takes a quarter of its threads */
	hcfg.threads = 4 * (unsigned)clients + 8;
	CHECK(kh_http_new(&hcfg, &h));
	CHECK(kh_dist_service_add_routes(svc, h));
	CHECK(kh_http_start(h));
	for (int i = 0; i < clients; i++) {
		char body[128];
		json_t *j = NULL;
		cl[i].port = kh_http_port(h);
		snprintf(body, sizeof body, "{\"name\":\"%s\",\"password\":\"bench-password\"}", cl[i].name);
		long code = req(cl[i].hc, cl[i].port, "POST", "/v1/sessions", NULL, body, &j, NULL);
		if (code != 201) {
			fprintf(stderr, "bench_distsrv: log-in %d answered %ld\n", i, code);
			return 1;
		}
		snprintf(cl[i].auth, sizeof cl[i].auth, "Authorization: Bearer %s",
			 json_string_value(json_object_get(j, "token")));
		json_decref(j);
	}
	/* a hello for the raw figure */
	CHECK(kh_host_apdu(&cl[0].t, KH_INS_DIST_HELLO, 0, NULL, 0, hello, sizeof hello, &hello_len, &sw));

	printf("# bench_distsrv: %d clients, program %zu bytes, %.1f s per round, %d rounds, %ld cores\n", clients, psize,
	       secs, rounds, ncpu);
	for (int r = 0; r < rounds; r++) {
		unsigned total = 0, rawn = 0;
		double t0;
		struct raw rw[64];
		long nraw = ncpu < 64 ? ncpu : 64;

		for (int i = 0; i < clients; i++)
			cl[i].done = 0;
		atomic_store(&go, 0);
		rounds_stop_ns = INT64_MAX;
		for (int i = 0; i < clients; i++)
			if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0)
				return fail(346);
		t0 = bench_now_s();
		rounds_stop_ns = now_ns() + (int64_t)(secs * 1e9);
		atomic_store(&go, 1);
		for (int i = 0; i < clients; i++) {
			pthread_join(cl[i].th, NULL);
			if (cl[i].failed) {
				fprintf(stderr, "bench_distsrv: a delivery failed\n");
				return fail(354);
			}
			total += cl[i].done;
		}
		rate[r] = total / (bench_now_s() - t0);

		t0 = bench_now_s();
		for (long k = 0; k < nraw; k++) {
			memset(&rw[k], 0, sizeof rw[k]);
			rw[k].srv = &srv;
			rw[k].hello = hello;
			rw[k].hello_len = hello_len;
			rw[k].manifest = (const uint8_t *)manifest;
			rw[k].mlen = sizeof manifest - 1;
			rw[k].program = program;
			rw[k].plen = psize;
			rw[k].stop = now_ns() + (int64_t)(secs * 1e9);
			if (pthread_create(&rw[k].th, NULL, raw_main, &rw[k]) != 0)
				return fail(372);
		}
		for (long k = 0; k < nraw; k++) {
			pthread_join(rw[k].th, NULL);
			rawn += rw[k].done;
		}
		raw[r] = rawn / (bench_now_s() - t0);
		ratio[r] = rate[r] / raw[r];
		fprintf(stderr, "bench_distsrv: round %d of %d done\n", r + 1, rounds);
	}
	bench_print("dist_deliveries", "deliveries/s", 1, rate, rounds);
	bench_print("dist_server_crypto_raw", "deliveries/s", 1, raw, rounds);
	bench_print_ratio("dist_deliveries_vs_server_crypto", ratio, rounds,
			  "whole deliveries over HTTP with the store, against the server's cryptography alone");

	kh_http_free(h);
	kh_dist_service_free(svc);
	for (int i = 0; i < clients; i++) {
		kh_softmod_free(cl[i].sm);
		kh_http_client_free(cl[i].hc);
	}
	free(cl);
	free(program);
	kh_authority_free(a);
	kh_wipe(&srv, sizeof srv);
	bench_rmtree(dir);
	return 0;
}
