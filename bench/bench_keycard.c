/*
 * bench_keycard: the key center relay of seed 004 (docs/performance.md "Key center relay"), next
 * to the raw work it cannot avoid, measured in the same run, rounds interleaved.
 *
 *   relay      C clients (-c, default 32), each a thread playing a key card and its host: its own
 *              simulated card (seed, send chain, signing certificate, made and enrolled as
 *              tests/unit/test_keycenter_service.c does, then activated over HTTP) and its own
 *              curl handle kept alive, posting 1 KB documents sealed with kh_kc_msg_seal under the
 *              next key of its chain to one of 4 recipients (every client writes to all four).
 *              The real key center service in this process (kh_keycenter_service_new, kh_http on
 *              127.0.0.1) on an SQLite file on disk, durable: each relay is committed (fsync)
 *              before its answer. Only 200 answers count; any other ends the run (exit 1), and
 *              the mailboxes must hold exactly as many deliveries. A mailbox holds
 *              KH_KEYCENTER_MAILBOX_MAX: one past an eighth full is emptied during the round (a thread
 *              named "mailman", one transaction each time), all of them after it. With the relay:
 *              the CPU time of the whole process per relayed message (the service and the
 *              clients' sealing) and how busy the machine's cores were.
 *   raw_relay  what a relay cannot avoid, on one thread: two HKDF derivations (key_i of the
 *              sender's chain, key_j of the recipient's), one AES-256-GCM open of the 1 KB post
 *              and one seal of the 1 KB delivery, through EVP directly.
 *   card_send  a real key card in this process (the module runtime in aligned memory, its sealed
 *              state kept in memory: a card's EEPROM write is not the host's disk), personalised
 *              by the authority and enrolled with a key center identity: KC SEND through
 *              kh_keycard_send, with a KC ACK every W-1 sends (the center's signature made outside
 *              the timing, the card's check of it inside). Against raw_hkdf2: the two HKDF calls a
 *              send derives (key_i and s_{i+1}) on the same thread.
 *   card_open  KC OPEN (kh_keycard_open) of deliveries sealed for consecutive j (sealed in batches
 *              outside the timing): key_j derived, chunk 0 opened in the card, the chain moved on.
 *              Against raw_open: two HKDF and one GCM open of a chunk 0.
 *   ack_sign   the center's signed ack (kh_kc_ack_sign, Ed25519) that each 200 answer carries,
 *              alone on one thread: a part of the relay's time that raw_relay leaves out.
 *
 * Ratios within each round: relay_vs_raw, relay_cpu_vs_raw (the raw relay's time per the process's
 * CPU time a relayed post), card_send_vs_raw_hkdf, card_open_vs_raw. -S runs the
 * store with synchronous=NORMAL: NOT durable, to show the share of the commits' fsync (its figures
 * are named *_not_durable). Nothing asserts on time; the exit status is non-zero only when
 * something fails.
 *
 *   bench_keycard [-r ROUNDS] [-t SECONDS] [-c CLIENTS] [-p] [-S]
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/hpke.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keycentersvc.h"
#include "keyhole/keyseq.h"
#include "keyhole/module.h"
#include "keyhole/store.h"
#include "keyhole/store_keycenter.h"
#include "util.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		kh_err e_ = (x);                                                                   \
		if (e_ != KH_OK) {                                                                 \
			fprintf(stderr, "bench_keycard: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				kh_strerror(e_));                                                  \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)
#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, "bench_keycard: " __VA_ARGS__);                                    \
		exit(1);                                                                           \
	} while (0)

#define CLIENTS_MAX 128
#define RECIPIENTS 4
#define DOC_LEN 1024
#define BATCH 256 /* deliveries sealed for KC OPEN at a time, outside the timing */
#define ANSWER_KEEP 512

/* ---------------------------------------------------------------- the relay */

/* A key card as the clients play it: what the card holds, and its host's address. */
struct sim_card {
	uint64_t serial;
	uint8_t seed[32], sk[32], pk[32];
	uint8_t cert[KH_CERT_MAX];
	size_t certlen;
	struct kh_keyseq send;
	char addr[KH_KC_ADDR_MAX + 1];
	char code[KH_KEYCENTER_CODE_SHOWN + 1];
};

/* An answer's first bytes (for the error message of a failure); the rest is counted and dropped. */
struct answer {
	char text[ANSWER_KEEP];
	size_t n;
};

struct client {
	pthread_t th;
	struct sim_card c;
	CURL *curl;
	struct curl_slist *hd;
	struct answer ans;
	const char *to[RECIPIENTS];
	uint8_t doc[DOC_LEN];
	uint8_t *msg;
	size_t cap;
	_Atomic int *go;
	unsigned done;
	uint64_t limit; /* the most posts this round (relay_round) */
	int failed;
	char why[ANSWER_KEEP + 128];
};

static char post_url[96], activate_url[96];
static double stop_at;

static size_t on_answer(char *d, size_t sz, size_t nm, void *arg)
{
	struct answer *a = arg;
	size_t n = sz * nm, room = sizeof a->text - 1 - a->n;

	memcpy(a->text + a->n, d, n < room ? n : room);
	a->n += n < room ? n : room;
	a->text[a->n] = '\0';
	return n;
}

/* One POST of body on the client's handle (its connection kept alive); the status, 0 for none. */
static long http_post(struct client *cl, const char *url, const char *ctype, const void *body, size_t len)
{
	char h[96];
	long status = 0;

	curl_slist_free_all(cl->hd);
	snprintf(h, sizeof h, "Content-Type: %s", ctype);
	cl->hd = curl_slist_append(NULL, h);
	/* no "Expect: 100-continue" wait for bodies above curl's threshold: one round trip a post */
	cl->hd = curl_slist_append(cl->hd, "Expect:");
	cl->ans.n = 0;
	cl->ans.text[0] = '\0';
	curl_easy_setopt(cl->curl, CURLOPT_URL, url);
	curl_easy_setopt(cl->curl, CURLOPT_HTTPHEADER, cl->hd);
	curl_easy_setopt(cl->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(cl->curl, CURLOPT_POSTFIELDSIZE, (long)len);
	if (curl_easy_perform(cl->curl) != CURLE_OK)
		return 0;
	curl_easy_getinfo(cl->curl, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

static void client_http(struct client *cl)
{
	if (!(cl->curl = curl_easy_init()))
		FAIL("curl_easy_init failed\n");
	curl_easy_setopt(cl->curl, CURLOPT_WRITEFUNCTION, on_answer);
	curl_easy_setopt(cl->curl, CURLOPT_WRITEDATA, &cl->ans);
	curl_easy_setopt(cl->curl, CURLOPT_TIMEOUT, 120L);
	curl_easy_setopt(cl->curl, CURLOPT_NOSIGNAL, 1L);
}

/* The next post of the card to `to`: KC SEND (its next key, the chain moved past it), then sealed. */
static size_t post_make(struct client *cl, const char *to)
{
	struct kh_kc_header h = {KH_KC_POST, cl->c.serial, cl->c.send.pos};
	uint8_t key[32];
	size_t n = 0;

	CHECK(kh_keyseq_key(&cl->c.send, h.index, 1, key));
	CHECK(kh_keyseq_advance(&cl->c.send, h.index + 1, 1));
	kh_put_be64(cl->doc, h.index);
	CHECK(kh_kc_msg_seal(key, &h, to, cl->doc, sizeof cl->doc, cl->msg, cl->cap, &n));
	kh_wipe(key, sizeof key);
	return n;
}

static void *client_loop(void *arg)
{
	struct client *cl = arg;
	uint64_t k = 0;

	pthread_setname_np(pthread_self(), "poster");
	while (!atomic_load(cl->go))
		sched_yield();
	while ((bench_now_s() < stop_at || !cl->done) && cl->done < cl->limit) {
		const char *to = cl->to[(cl->c.serial + k++) % RECIPIENTS];
		size_t n = post_make(cl, to);
		long st = http_post(cl, post_url, "application/octet-stream", cl->msg, n);
		if (st != 200) {
			snprintf(cl->why, sizeof cl->why, "post %llu to %s: HTTP %ld: %s",
				 (unsigned long long)(cl->c.send.pos - 1), to, st, cl->ans.text);
			cl->failed = 1;
			return NULL;
		}
		cl->done++;
	}
	return NULL;
}

/* What the relay's part of the run holds. */
struct relay {
	char db[300], kcdir[300];
	struct kh_authority *auth;
	struct kh_keycenter *kc;
	struct kh_keycenter_service *svc;
	struct kh_http *h;
	uint8_t center_pk[32];
	uint32_t center;
	struct sim_card rcp[RECIPIENTS];
	struct client *cl;
	int clients;
};

/* A card: its signing key certified by the authority (role keycard), its seed, its send chain. */
static void sim_card_new(struct relay *x, struct sim_card *c, const char *addr)
{
	uint32_t ua = 0;

	memset(c, 0, sizeof *c);
	CHECK(kh_authority_next_ua(x->auth, &ua));
	c->serial = ua;
	CHECK(kh_ed25519_keygen(c->sk, c->pk));
	CHECK(kh_authority_issue(x->auth, KH_ROLE_KEYCARD, ua, KH_CERT_KEY_ED25519, c->pk, "sign", c->cert,
				 sizeof c->cert, &c->certlen));
	CHECK(kh_random(c->seed, sizeof c->seed));
	CHECK(kh_keyseq_init(c->seed, c->serial, KH_KEYSEQ_SEND, &c->send));
	snprintf(c->addr, sizeof c->addr, "%s", addr);
}

/* KC ENROL as the card does it (its seed sealed to the center's enrolment key), then the station's enrolment. */
static void sim_card_enrol(struct relay *x, struct kh_store *st, struct sim_card *c)
{
	uint8_t rec[KH_KC_ENROLKEY_LEN], xpk[32], info[KH_KC_ENROL_INFO_LEN], sealed[KH_KC_SEALED_SEED_LEN];
	struct kh_keycenter_enrolment e = {c->serial, sealed, c->cert, c->certlen, c->addr, 0};
	struct kh_hpke_ctx hp;
	uint64_t serial = 0;
	uint32_t center = 0;

	CHECK(kh_keycenter_card_cert(x->kc, c->cert, c->certlen, (int64_t)time(NULL), &serial));
	if (serial != c->serial)
		FAIL("the card certificate's serial is not the card's\n");
	CHECK(kh_keycenter_enrolkey(x->kc, rec));
	CHECK(kh_kc_enrolkey_verify(x->center_pk, rec, sizeof rec, &center, xpk));
	kh_kc_enrol_info(center, c->serial, info);
	CHECK(kh_hpke_setup_s(&hp, KH_AEAD_AES128_GCM, xpk, info, sizeof info, NULL, sealed));
	CHECK(kh_hpke_seal(&hp, NULL, 0, c->seed, sizeof c->seed, sealed + KH_HPKE_ENC_LEN));
	kh_hpke_ctx_wipe(&hp);
	CHECK(kh_keycenter_enrol(x->kc, st, &e, (int64_t)time(NULL), c->code));
	kh_wipe(c->seed, sizeof c->seed); /* the card forgets it; its chain is all it needs */
}

/* POST /v1/activate with the card's access code, on the client's own handle. */
static void sim_card_activate(struct client *cl, const struct sim_card *c)
{
	char body[160];
	long st;

	snprintf(body, sizeof body, "{\"serial\": %llu, \"code\": \"%s\"}", (unsigned long long)c->serial, c->code);
	if ((st = http_post(cl, activate_url, "application/json", body, strlen(body))) != 200)
		FAIL("activating card %llu: HTTP %ld: %s\n", (unsigned long long)c->serial, st, cl->ans.text);
}

static void relay_setup(struct relay *x, const char *dir, int clients, int nosync)
{
	struct kh_keycenter_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_identity id;
	struct kh_store *st;
	struct client boot;
	char adir[300], url[64], addr[32];
	uint32_t serial = 0;

	snprintf(adir, sizeof adir, "%s/auth", dir);
	snprintf(x->kcdir, sizeof x->kcdir, "%s/keycenter", dir);
	snprintf(x->db, sizeof x->db, "%s/keycenter.db", dir);
	CHECK(kh_authority_init(adir, "Bench operator"));
	CHECK(kh_authority_open(adir, &x->auth));
	CHECK(kh_identity_new(x->auth, x->kcdir, KH_ROLE_KEYCENTER, &serial));
	CHECK(kh_keycenter_open(x->kcdir, &x->kc));
	CHECK(kh_identity_load(x->kcdir, KH_ROLE_KEYCENTER, &id));
	memcpy(x->center_pk, id.pk, sizeof x->center_pk);
	x->center = id.serial;
	kh_wipe(&id, sizeof id);
	cfg.db = x->db;
	cfg.dir = x->kcdir;
	cfg.store_sync_normal = nosync;
	CHECK(kh_keycenter_service_new(&cfg, &x->svc, NULL));
	hcfg.threads = 4 * (unsigned)clients + 8; /* one address holds a quarter of them at most */
	hcfg.raw_body_limit = kh_keycenter_post_max(KH_KEYCENTER_DOC_DEFAULT);
	CHECK(kh_http_new(&hcfg, &x->h));
	CHECK(kh_keycenter_service_add_routes(x->svc, x->h));
	CHECK(kh_http_start(x->h));
	snprintf(url, sizeof url, "http://127.0.0.1:%u", (unsigned)kh_http_port(x->h));
	snprintf(post_url, sizeof post_url, "%s/v1/messages", url);
	snprintf(activate_url, sizeof activate_url, "%s/v1/activate", url);

	if (!(x->cl = calloc((size_t)clients, sizeof *x->cl)))
		FAIL("out of memory\n");
	x->clients = clients;
	CHECK(kh_store_open(x->db, &st));
	memset(&boot, 0, sizeof boot);
	client_http(&boot);
	for (int r = 0; r < RECIPIENTS; r++) {
		snprintf(addr, sizeof addr, "r%d@bench", r);
		sim_card_new(x, &x->rcp[r], addr);
		sim_card_enrol(x, st, &x->rcp[r]);
		sim_card_activate(&boot, &x->rcp[r]);
	}
	curl_slist_free_all(boot.hd);
	curl_easy_cleanup(boot.curl);
	for (int i = 0; i < clients; i++) {
		struct client *cl = &x->cl[i];
		snprintf(addr, sizeof addr, "s%d@bench", i);
		sim_card_new(x, &cl->c, addr);
		sim_card_enrol(x, st, &cl->c);
		client_http(cl);
		sim_card_activate(cl, &cl->c);
		for (int r = 0; r < RECIPIENTS; r++)
			cl->to[r] = x->rcp[r].addr;
		CHECK(kh_random(cl->doc, sizeof cl->doc));
		cl->cap = (size_t)kh_kc_msg_size(KH_KC_ADDR_MAX, DOC_LEN);
		if (!(cl->msg = malloc(cl->cap)))
			FAIL("out of memory\n");
	}
	kh_store_close(st);
}

/* The deliveries waiting for one recipient, as a list to delete after the listing. */
struct mail_list {
	uint64_t idx[KH_KEYCENTER_MAILBOX_MAX + 1];
	size_t n;
};

static kh_err mail_seen(void *arg, const struct kh_store_kc_mail *m)
{
	struct mail_list *l = arg;

	if (l->n < sizeof l->idx / sizeof l->idx[0])
		l->idx[l->n++] = m->idx;
	return KH_OK;
}

struct drain {
	struct relay *x;
	struct mail_list *l;
	int64_t above; /* only the mailboxes holding at least this many; 0: every one */
	int64_t removed;
};

static kh_err drain_tx(struct kh_store *st, void *arg)
{
	struct drain *d = arg;
	int64_t waiting = 0;
	kh_err r;

	d->removed = 0;
	for (int i = 0; i < RECIPIENTS; i++) {
		uint64_t serial = d->x->rcp[i].serial;
		if (d->above && ((r = kh_store_kc_mail_count(st, serial, &waiting)) != KH_OK || waiting < d->above)) {
			if (r != KH_OK)
				return r;
			continue;
		}
		d->l->n = 0;
		if ((r = kh_store_kc_mail_list(st, serial, mail_seen, d->l)) != KH_OK)
			return r;
		for (size_t k = 0; k < d->l->n; k++)
			if ((r = kh_store_kc_mail_delete(st, serial, d->l->idx[k])) != KH_OK)
				return r;
		d->removed += (int64_t)d->l->n;
	}
	return KH_OK;
}

/* Empty the recipients' mailboxes holding at least above deliveries (0: all), in one transaction. */
static int64_t relay_drain(struct relay *x, struct kh_store *st, int64_t above)
{
	struct drain d = {x, calloc(1, sizeof *d.l), above, 0};

	if (!d.l)
		FAIL("out of memory\n");
	CHECK(kh_store_run_tx(st, drain_tx, &d));
	free(d.l);
	return d.removed;
}

/*
 * While the posts run: a mailbox past an eighth full is emptied, as its recipient's host would, so
 * that a fast round is never refused a full one (KH_ERR_LIMIT): relays are grouped in one commit
 * (the store's group committer), so thousands a second reach four mailboxes. Each emptying is one
 * transaction among hundreds of relays.
 */
struct mailman {
	struct relay *x;
	struct kh_store *st;
	_Atomic int stop;
	int64_t removed;
};

static void *mailman_loop(void *arg)
{
	struct mailman *mm = arg;
	struct timespec nap = {0, 5 * 1000 * 1000};

	pthread_setname_np(pthread_self(), "mailman");
	while (!atomic_load(&mm->stop)) {
		nanosleep(&nap, NULL);
		mm->removed += relay_drain(mm->x, mm->st, KH_KEYCENTER_MAILBOX_MAX / 8);
	}
	return NULL;
}

/* CPU seconds of this process so far, every thread (user and system). */
static double cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct relay_fig {
	double rate, cpu_ms, busy;
	unsigned msgs;
	int64_t delivered; /* the deliveries the mailboxes held, emptied during and after the round */
};

/* One round of posts from every client for secs; every answer must be 200. */
static struct relay_fig relay_round(struct relay *x, double secs)
{
	_Atomic int go = 0;
	struct relay_fig f = {0};
	struct mailman mm = {x, NULL, 0, 0};
	pthread_t mt;
	double t0, t1, c0, c1, cores = (double)sysconf(_SC_NPROCESSORS_ONLN);

	/* A round ends early rather than fill a mailbox (KH_ERR_LIMIT): each client posts at most its
	 * share of 7/8 of the four mailboxes' room (the emptying thread may not get the write lock
	 * between the group committer's batches in time). */
	for (int i = 0; i < x->clients; i++) {
		x->cl[i].done = 0;
		x->cl[i].limit = (uint64_t)(KH_KEYCENTER_MAILBOX_MAX * 7 / 8) * RECIPIENTS / (uint64_t)x->clients;
		x->cl[i].go = &go;
	}
	CHECK(kh_store_open(x->db, &mm.st));
	if (pthread_create(&mt, NULL, mailman_loop, &mm) != 0)
		FAIL("pthread_create failed\n");
	c0 = cpu_s();
	t0 = bench_now_s();
	stop_at = t0 + secs;
	for (int i = 0; i < x->clients; i++)
		if (pthread_create(&x->cl[i].th, NULL, client_loop, &x->cl[i]) != 0)
			FAIL("pthread_create failed\n");
	atomic_store(&go, 1);
	for (int i = 0; i < x->clients; i++) {
		pthread_join(x->cl[i].th, NULL);
		if (x->cl[i].failed)
			FAIL("client %d: %s\n", i, x->cl[i].why);
		f.msgs += x->cl[i].done;
	}
	t1 = bench_now_s();
	c1 = cpu_s();
	atomic_store(&mm.stop, 1);
	pthread_join(mt, NULL);
	f.delivered = mm.removed + relay_drain(x, mm.st, 0);
	kh_store_close(mm.st);
	f.rate = f.msgs / (t1 - t0);
	f.cpu_ms = 1e3 * (c1 - c0) / f.msgs;
	f.busy = 100 * (c1 - c0) / (cores * (t1 - t0));
	return f;
}

static void relay_free(struct relay *x)
{
	kh_http_free(x->h);
	kh_keycenter_service_free(x->svc);
	for (int i = 0; i < x->clients; i++) {
		curl_slist_free_all(x->cl[i].hd);
		curl_easy_cleanup(x->cl[i].curl);
		free(x->cl[i].msg);
		kh_wipe(&x->cl[i].c, sizeof x->cl[i].c);
	}
	free(x->cl);
	kh_wipe(x->rcp, sizeof x->rcp);
	kh_keycenter_close(x->kc);
	kh_authority_free(x->auth);
}

/* ---------------------------------------------------------------- the raw references */

/* The two labels of a chain's derivations, of their real lengths (keyhole/keyseq.h). */
static const char KEY_LABEL[] = "keyhole keyseq key v1";
static const char NEXT_LABEL[] = "keyhole keyseq next v1";
#define KEY_INFO_LEN (sizeof KEY_LABEL - 1 + 8 + 1 + 8)
#define AAD_LEN (KH_KC_HEADER_LEN + 8 + 1) /* a chunk's: header | k | flags */

struct raw {
	EVP_CIPHER_CTX *enc, *dec;
	uint8_t s_i[32], s_j[32], key_info_i[KEY_INFO_LEN], key_info_j[KEY_INFO_LEN], aad[AAD_LEN];
	uint8_t iv[12];
	uint8_t doc[DOC_LEN], post[DOC_LEN + KH_TAG_LEN], out[DOC_LEN + KH_TAG_LEN], pt[DOC_LEN];
	uint8_t env[KH_KC_ENVELOPE_MAX], chunk0[KH_KC_ENVELOPE_MAX + KH_TAG_LEN];
	size_t envlen;
};

static void gcm_seal(EVP_CIPHER_CTX *c, const uint8_t key[32], const uint8_t iv[12], const uint8_t *aad,
		     const uint8_t *pt, size_t n, uint8_t *ct)
{
	int l = 0;

	if (EVP_EncryptInit_ex(c, NULL, NULL, key, iv) != 1 || EVP_EncryptUpdate(c, NULL, &l, aad, AAD_LEN) != 1 ||
	    EVP_EncryptUpdate(c, ct, &l, pt, (int)n) != 1 || EVP_EncryptFinal_ex(c, ct + l, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KH_TAG_LEN, ct + n) != 1)
		FAIL("EVP AES-256-GCM seal failed\n");
}

/* Open n bytes of ciphertext then the tag; a tag that does not verify ends the run. */
static void gcm_open(EVP_CIPHER_CTX *c, const uint8_t key[32], const uint8_t iv[12], const uint8_t *aad,
		     const uint8_t *ct, size_t n, uint8_t *pt)
{
	int l = 0;

	if (EVP_DecryptInit_ex(c, NULL, NULL, key, iv) != 1 || EVP_DecryptUpdate(c, NULL, &l, aad, AAD_LEN) != 1 ||
	    EVP_DecryptUpdate(c, pt, &l, ct, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KH_TAG_LEN, (void *)(ct + n)) != 1 ||
	    EVP_DecryptFinal_ex(c, pt + l, &l) != 1)
		FAIL("EVP AES-256-GCM open failed\n");
}

static void key_info(uint8_t info[KEY_INFO_LEN], uint64_t serial, uint8_t dir, uint64_t i)
{
	memcpy(info, KEY_LABEL, sizeof KEY_LABEL - 1);
	kh_put_be64(info + sizeof KEY_LABEL - 1, serial);
	info[sizeof KEY_LABEL - 1 + 8] = dir;
	kh_put_be64(info + sizeof KEY_LABEL - 1 + 9, i);
}

static void hkdf32(const uint8_t s[32], const uint8_t *info, size_t n, uint8_t out[32])
{
	CHECK(kh_hkdf(s, 32, NULL, 0, info, n, out, 32));
}

/* The same states and labels every time: the keys come out the same, so the post opens every time. */
static void raw_setup(struct raw *w)
{
	uint8_t key[32];

	memset(w, 0, sizeof *w);
	if (!(w->enc = EVP_CIPHER_CTX_new()) || !(w->dec = EVP_CIPHER_CTX_new()) ||
	    EVP_EncryptInit_ex(w->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex(w->dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1)
		FAIL("EVP AES-256-GCM unavailable\n");
	CHECK(kh_random(w->s_i, sizeof w->s_i));
	CHECK(kh_random(w->s_j, sizeof w->s_j));
	CHECK(kh_random(w->doc, sizeof w->doc));
	CHECK(kh_random(w->aad, sizeof w->aad));
	key_info(w->key_info_i, 1001, KH_KEYSEQ_SEND, 7);
	key_info(w->key_info_j, 1002, KH_KEYSEQ_RECV, 9);
	w->iv[11] = 1;
	hkdf32(w->s_i, w->key_info_i, KEY_INFO_LEN, key);
	gcm_seal(w->enc, key, w->iv, w->aad, w->doc, DOC_LEN, w->post);
	CHECK(kh_kc_envelope_write("r0@bench", DOC_LEN, w->env, &w->envlen));
	gcm_seal(w->enc, key, w->iv, w->aad, w->env, w->envlen, w->chunk0);
	kh_wipe(key, sizeof key);
}

static void raw_free(struct raw *w)
{
	EVP_CIPHER_CTX_free(w->enc);
	EVP_CIPHER_CTX_free(w->dec);
	kh_wipe(w, sizeof *w);
}

/* raw_relay: key_i, key_j, the 1 KB post opened under key_i, the 1 KB delivery sealed under key_j. */
static double raw_relay(struct raw *w, double secs)
{
	uint8_t ki[32], kj[32];
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		hkdf32(w->s_i, w->key_info_i, KEY_INFO_LEN, ki);
		hkdf32(w->s_j, w->key_info_j, KEY_INFO_LEN, kj);
		gcm_open(w->dec, ki, w->iv, w->aad, w->post, DOC_LEN, w->pt);
		gcm_seal(w->enc, kj, w->iv, w->aad, w->pt, DOC_LEN, w->out);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	kh_wipe(ki, sizeof ki);
	kh_wipe(kj, sizeof kj);
	return n / (t - t0);
}

/* raw_hkdf2: what KC SEND derives, key_i and s_{i+1}. */
static double raw_hkdf2(struct raw *w, double secs)
{
	uint8_t k[32], s[32];
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		hkdf32(w->s_i, w->key_info_i, KEY_INFO_LEN, k);
		hkdf32(w->s_i, (const uint8_t *)NEXT_LABEL, sizeof NEXT_LABEL - 1, s);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	kh_wipe(k, sizeof k);
	kh_wipe(s, sizeof s);
	return n / (t - t0);
}

/* raw_open: what KC OPEN does at the least, key_j, s_{j+1} and chunk 0 opened under key_j. */
static double raw_open(struct raw *w, double secs)
{
	uint8_t k[32], s[32];
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		hkdf32(w->s_i, w->key_info_i, KEY_INFO_LEN, k);
		hkdf32(w->s_i, (const uint8_t *)NEXT_LABEL, sizeof NEXT_LABEL - 1, s);
		gcm_open(w->dec, k, w->iv, w->aad, w->chunk0, w->envlen, w->pt);
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	kh_wipe(k, sizeof k);
	kh_wipe(s, sizeof s);
	return n / (t - t0);
}

/* ack_sign: the center's signed ack that every 200 answer to a post carries, alone, as the center
 * makes it (kh_kc_ack_sign_kp: its public key given, not derived again). */
static double ack_sign(const uint8_t sk[32], const uint8_t pk[32], uint32_t center, double secs)
{
	uint8_t ack[KH_KC_ACK_LEN];
	unsigned n = 0;
	double t0 = bench_now_s(), t;

	do {
		CHECK(kh_kc_ack_sign_kp(sk, pk, center, 1001, n + 1, ack));
		n++;
	} while ((t = bench_now_s()) - t0 < secs);
	return n / (t - t0);
}

/* ---------------------------------------------------------------- the real key card */

/* The card's own memory: its sealed state kept here, as a card keeps it in its EEPROM. */
struct card_mem {
	uint8_t blob[KH_MODULE_BLOB_MAX];
	size_t len;
	uint64_t counter;
};

struct card {
	void *mem;
	struct kh_module *m;
	struct kh_transport t;
	struct card_mem nv;
	uint64_t serial;
	uint8_t center_sk[32], center_pk[32];
	uint32_t center;
	struct kh_keyseq recv; /* the center's copy of the card's receive chain, to seal deliveries */
	uint64_t next_j;       /* the next delivery to seal */
	uint8_t hdr[BATCH][KH_KC_HEADER_LEN], chunk0[BATCH][KH_KC_CHUNK0_MAX];
	size_t chunk0len[BATCH];
	uint8_t *msg;
	size_t cap;
};

static kh_err card_store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	struct card_mem *nv = ctx;

	if (len > sizeof nv->blob)
		return KH_ERR_TOO_LARGE;
	memcpy(nv->blob, blob, len);
	nv->len = len;
	nv->counter = counter;
	return KH_OK;
}

static uint64_t card_now(void *ctx)
{
	(void)ctx;
	return (uint64_t)time(NULL);
}

/* A blank card, personalised by the authority as a key card, enrolled with the center of kcdir. */
static void card_setup(struct card *k, struct kh_authority *a, const char *kcdir)
{
	struct kh_module_env env = {.store = card_store, .now = card_now, .ctx = &k->nv};
	uint8_t root[KH_ROOT_KEY_LEN], enrolkey[KH_KC_ENROLKEY_LEN], sealed[KH_KC_SEALED_SEED_LEN], seed[32],
		xsk[32], xpk[32], info[KH_KC_ENROL_INFO_LEN];
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct kh_identity id;

	if (!iss || posix_memalign(&k->mem, 16, kh_module_size()) != 0)
		FAIL("out of memory\n");
	CHECK(kh_random(root, sizeof root));
	CHECK(kh_module_init(k->mem, kh_module_size(), root, &env, &k->m));
	kh_wipe(root, sizeof root);
	kh_transport_inproc(&k->t, k->m);
	CHECK(kh_authority_personalise(a, &k->t, KH_ROLE_KEYCARD, 0, iss));
	free(iss);
	CHECK(kh_identity_load(kcdir, KH_ROLE_KEYCENTER, &id));
	CHECK(kh_kc_enrol_keypair(id.sk, xsk, xpk));
	CHECK(kh_kc_enrolkey_sign(id.sk, id.serial, xpk, enrolkey));
	CHECK(kh_keycard_enrol(&k->t, id.cert, id.cert_len, enrolkey, &k->serial, sealed));
	/* the center's side: the seed opened, the receive chain made from it */
	kh_kc_enrol_info(id.serial, k->serial, info);
	CHECK(kh_hpke_open_base(xsk, sealed, info, sizeof info, NULL, 0, sealed + KH_HPKE_ENC_LEN,
				KH_KEYSEQ_LEN + KH_TAG_LEN, seed));
	CHECK(kh_keyseq_init(seed, k->serial, KH_KEYSEQ_RECV, &k->recv));
	kh_wipe(seed, sizeof seed);
	kh_wipe(xsk, sizeof xsk);
	memcpy(k->center_sk, id.sk, sizeof k->center_sk);
	memcpy(k->center_pk, id.pk, sizeof k->center_pk);
	k->center = id.serial;
	kh_wipe(&id, sizeof id);
	k->next_j = k->recv.pos;
	k->cap = (size_t)kh_kc_msg_size(KH_KC_ADDR_MAX, DOC_LEN);
	if (!(k->msg = malloc(k->cap)))
		FAIL("out of memory\n");
}

static void card_free(struct card *k)
{
	kh_module_wipe(k->m);
	free(k->mem);
	free(k->msg);
	kh_wipe(k, sizeof *k);
}

/* card_send: KC SEND again and again; every W-1 sends a KC ACK of the last (signed outside the timing). */
static double card_send(struct card *k, double secs)
{
	uint8_t key[32], ack[KH_KC_ACK_LEN];
	uint64_t serial = 0, idx = 0;
	unsigned n = 0;
	double t0 = bench_now_s(), t, aside = 0;

	do {
		CHECK(kh_keycard_send(&k->t, &serial, &idx, key));
		if (++n % (KH_KEYSEQ_WINDOW - 1) == 0) {
			double s0 = bench_now_s();
			CHECK(kh_kc_ack_sign(k->center_sk, k->center, serial, idx, ack));
			aside += bench_now_s() - s0;
			CHECK(kh_keycard_ack(&k->t, ack, sizeof ack));
		}
	} while ((t = bench_now_s()) - t0 - aside < secs);
	/* the chain's window is the center's: acknowledge every key given, for the next round */
	CHECK(kh_kc_ack_sign(k->center_sk, k->center, serial, idx, ack));
	CHECK(kh_keycard_ack(&k->t, ack, sizeof ack));
	kh_wipe(key, sizeof key);
	return n / (t - t0 - aside);
}

/* Seal the next BATCH deliveries to the card (consecutive j) and keep their header and chunk 0. */
static void card_batch(struct card *k, const uint8_t *doc)
{
	uint8_t key[32];
	size_t n = 0, ctlen = 0;
	int last = 0;

	for (int b = 0; b < BATCH; b++) {
		struct kh_kc_header h = {KH_KC_DELIVERY, k->serial, k->next_j};
		CHECK(kh_keyseq_key(&k->recv, h.index, 1, key));
		CHECK(kh_keyseq_advance(&k->recv, h.index + 1, 1));
		CHECK(kh_kc_msg_seal(key, &h, "s0@bench", doc, DOC_LEN, k->msg, k->cap, &n));
		CHECK(kh_kc_chunk_frame(k->msg + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN, &ctlen, &last));
		memcpy(k->hdr[b], k->msg, KH_KC_HEADER_LEN);
		k->chunk0len[b] = KH_KC_CHUNK_HDR_LEN + ctlen;
		memcpy(k->chunk0[b], k->msg + KH_KC_HEADER_LEN, k->chunk0len[b]);
		k->next_j++;
	}
	kh_wipe(key, sizeof key);
}

/* card_open: KC OPEN of deliveries in order, each key_j compared with the one sealed under. */
static double card_open(struct card *k, const uint8_t *doc, double secs)
{
	uint8_t key[32];
	uint64_t j = 0;
	unsigned n = 0;
	double spent = 0;

	do {
		double t0;
		card_batch(k, doc);
		t0 = bench_now_s();
		for (int b = 0; b < BATCH; b++) {
			CHECK(kh_keycard_open(&k->t, k->hdr[b], k->chunk0[b], k->chunk0len[b], &j, key));
			n++;
		}
		spent += bench_now_s() - t0;
	} while (spent < secs);
	if (j != k->next_j - 1)
		FAIL("KC OPEN gave key %llu for delivery %llu\n", (unsigned long long)j,
		     (unsigned long long)(k->next_j - 1));
	kh_wipe(key, sizeof key);
	return n / spent;
}

/* ---------------------------------------------------------------- main */

static const char usage[] =
	"usage: bench_keycard [-r ROUNDS] [-t SECONDS] [-c CLIENTS] [-p] [-S]\n"
	"  -r ROUNDS   rounds, 1 to 99 (default 5)\n"
	"  -t SECONDS  length of one round of relayed posts (default 1); each reference takes a quarter\n"
	"  -c CLIENTS  posting clients, each a thread with its own card and connection, 1 to 128 (default 32)\n"
	"  -p          pin this process to one CPU\n"
	"  -S          the store with synchronous=NORMAL: NOT durable (to show the fsync's share)\n";

enum { F_RELAY, F_CPU, F_BUSY, F_RAW, F_SEND, F_HKDF2, F_OPEN, F_RAWOPEN, F_ACK, F_N };

static void print_all(double fig[F_N][BENCH_MAX_ROUNDS], double ratio[4][BENCH_MAX_ROUNDS], int rounds, int nosync)
{
	const char *sfx = nosync ? "_not_durable" : "";
	struct bench_stats st = bench_stats_of(ratio[0], rounds);
	char name[64];

	snprintf(name, sizeof name, "kc_relay%s", sfx);
	bench_print(name, "msgs/s", 1, fig[F_RELAY], rounds);
	snprintf(name, sizeof name, "kc_relay_cpu_per_msg%s", sfx);
	bench_print(name, "ms", 3, fig[F_CPU], rounds);
	snprintf(name, sizeof name, "kc_relay_cores_busy%s", sfx);
	bench_print(name, "%", 0, fig[F_BUSY], rounds);
	bench_print("kc_raw_relay", "msgs/s", 0, fig[F_RAW], rounds);
	bench_print("kc_ack_sign", "ops/s", 0, fig[F_ACK], rounds);
	bench_print("kc_card_send", "ops/s", 0, fig[F_SEND], rounds);
	bench_print("kc_raw_hkdf2", "ops/s", 0, fig[F_HKDF2], rounds);
	bench_print("kc_card_open", "ops/s", 0, fig[F_OPEN], rounds);
	bench_print("kc_raw_open", "ops/s", 0, fig[F_RAWOPEN], rounds);
	bench_print_ratio("relay_vs_raw", ratio[0], rounds,
			  nosync ? "relayed 1 KB posts, NOT durable (-S), per raw relay on one thread (aim >= 0.5)"
				 : "relayed 1 KB posts, each committed before its answer, per raw relay (2 HKDF, "
				   "GCM open + seal of 1 KB) on one thread (aim >= 0.5)");
	/* far below 0.01, where the ratio line's two decimals say 0.00 */
	printf("# relay_vs_raw to four decimals: median %.4f min %.4f max %.4f\n", st.med, st.min, st.max);
	bench_print_ratio("relay_cpu_vs_raw", ratio[3], rounds,
			  "the raw relay's time on one thread per CPU time of the process per relayed post: the share "
			  "of the relay's CPU that is the work it cannot avoid");
	bench_print_ratio("card_send_vs_raw_hkdf", ratio[1], rounds,
			  "KC SEND (APDU, chain moved, state sealed and stored; a KC ACK every W-1) per two HKDF");
	bench_print_ratio("card_open_vs_raw", ratio[2], rounds,
			  "KC OPEN (key_j in the window, chunk 0 opened, chain moved, state stored) per two HKDF "
			  "and a GCM open of chunk 0");
}

int main(int argc, char **argv)
{
	int rounds = 5, clients = 32, pin = -1, nosync = 0, c;
	double secs = 1.0, fig[F_N][BENCH_MAX_ROUNDS], ratio[4][BENCH_MAX_ROUNDS];
	char dir[256];
	struct relay *x = calloc(1, sizeof *x);
	struct card *k = calloc(1, sizeof *k);
	struct raw *w = calloc(1, sizeof *w);
	int64_t relayed = 0;

	while ((c = getopt(argc, argv, "r:t:c:pSh")) != -1) {
		switch (c) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'c': clients = atoi(optarg); break;
		case 'p': pin = 0; break;
		case 'S': nosync = 1; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || !(secs > 0.001 && secs < 60) || clients < 1 ||
	    clients > CLIENTS_MAX) {
		fputs(usage, stderr);
		return 2;
	}
	if (!x || !k || !w)
		FAIL("out of memory\n");
	if (pin == 0 && (pin = bench_pin()) < 0)
		FAIL("cannot pin to one CPU\n");
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		FAIL("curl_global_init failed\n");
	CHECK(bench_mkdtemp(dir, sizeof dir, "bench-keycard-XXXXXX"));
	relay_setup(x, dir, clients, nosync);
	card_setup(k, x->auth, x->kcdir);
	raw_setup(w);

	printf("# bench_keycard: %d rounds, %.2f s of posts a round, %d clients, %d-byte documents to %d recipients, "
	       "SQLite %s\n",
	       rounds, secs, clients, DOC_LEN, RECIPIENTS,
	       nosync ? "synchronous=NORMAL: NOT durable (-S)" : "durable (each relay committed before its answer)");
	bench_print_pin(pin);
	printf("# %s; %ld cores online\n", OpenSSL_version(OPENSSL_VERSION), sysconf(_SC_NPROCESSORS_ONLN));
	printf("# the key card's sealed state: %zu bytes, sealed again (AES-256-GCM) and stored at each KC SEND, "
	       "KC ACK and KC OPEN\n",
	       k->nv.len);
	fflush(stdout);
	for (int r = 0; r < rounds; r++) {
		struct relay_fig f;

		fig[F_RAW][r] = raw_relay(w, secs / 4);
		f = relay_round(x, secs);
		relayed += f.msgs;
		fig[F_RELAY][r] = f.rate;
		fig[F_CPU][r] = f.cpu_ms;
		fig[F_BUSY][r] = f.busy;
		fig[F_HKDF2][r] = raw_hkdf2(w, secs / 8);
		fig[F_SEND][r] = card_send(k, secs / 8);
		fig[F_RAWOPEN][r] = raw_open(w, secs / 8);
		fig[F_OPEN][r] = card_open(k, w->doc, secs / 8);
		fig[F_ACK][r] = ack_sign(k->center_sk, k->center_pk, k->center, secs / 8);
		ratio[0][r] = fig[F_RELAY][r] / fig[F_RAW][r];
		ratio[1][r] = fig[F_SEND][r] / fig[F_HKDF2][r];
		ratio[2][r] = fig[F_OPEN][r] / fig[F_RAWOPEN][r];
		ratio[3][r] = 1e3 / fig[F_RAW][r] / fig[F_CPU][r];
		if (f.delivered != (int64_t)f.msgs)
			FAIL("round %d: %u posts answered 200, but the mailboxes held %lld\n", r + 1, f.msgs,
			     (long long)f.delivered);
		fprintf(stderr, "bench_keycard: round %d of %d done\n", r + 1, rounds);
	}
	print_all(fig, ratio, rounds, nosync);
	printf("# %lld posts relayed and delivered, every one answered 200\n", (long long)relayed);
	relay_free(x);
	card_free(k);
	raw_free(w);
	free(x);
	free(k);
	free(w);
	curl_global_cleanup();
	return bench_rmtree(dir) == 0 ? 0 : 1;
}
