/*
 * kh_upload_load: a test helper for tests/cli/test_upload_crash.sh (the crash test), built
 * beside the tests and never part of the installed `keyhole`. It drives many upload sessions at
 * once through the real decoder client (kh_upload_run over libcurl) and keeps a client-side
 * journal of what the center acknowledged, so the test can check after a kill -9 of the center
 * that every acknowledged block is stored exactly once and none lost.
 *
 *   prepare --center URL --db DB --authority AUTHDIR --cam CAM --events N CARD...
 *       apply to each card the EMMs the center queued for it (its keys and initial credit), then
 *       buy events 1..N (price 10) on it through the CAM with the center's current service key;
 *       prints "BUY UA EVENT PRICE" per purchase (the time is the card's to
 *       record).
 *   run --center URL --journal FILE --rounds N CARD...
 *       one thread per card, up to N upload sessions each (no M1), stopping a card at its first
 *       failed session. Before each upload POST the journal gets "SENT KEY URL BODY" (the
 *       Idempotency-Key and the exact request); after a 200 "ACK KEY UA SEQ VERDICT" per block
 *       and "ACKED KEY". Exits 0 whatever the center did; the journal is the record.
 *   retry --center URL --journal FILE
 *       re-POST every SENT without ACKED with the same key, path and body, to URL (the restarted
 *       center may listen on another port) (a decoder retrying after a
 *       lost reply), journalling the answers the same way plus "REPLAYED KEY 0|1"; exit 1 when
 *       one is not answered 200.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "keyhole/buf.h"
#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/scramble.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"
#include "keyhole/transport.h"
#include "keyhole/upload.h"

#include "httputil.h"

static pthread_mutex_t jlock = PTHREAD_MUTEX_INITIALIZER;
static FILE *journal;

static void die(const char *what, const char *why)
{
	fprintf(stderr, "kh_upload_load: %s: %s\n", what, why);
	exit(2);
}

static void jprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jprintf(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&jlock);
	va_start(ap, fmt);
	vfprintf(journal, fmt, ap);
	va_end(ap);
	fflush(journal);
	pthread_mutex_unlock(&jlock);
}

/* The block lines of a 200 answer, then ACKED. */
static void journal_answer(const char *key, json_t *resp)
{
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(resp, "blocks"), i, v)
		jprintf("ACK %s %s %lld %s\n", key, json_string_value(json_object_get(v, "ua")),
			(long long)json_integer_value(json_object_get(v, "block_seq")),
			json_string_value(json_object_get(v, "verdict")));
	jprintf("ACKED %s\n", key);
}

/* ---- curl for the small requests of prepare and retry ---- */

/* GET or POST (body non-NULL); the status, or 0 when no answer came. */
static long http(const char *url, const char *body, const char *key, struct reply *out)
{
	CURL *c = curl_easy_init();

	if (!c)
		die("curl", "init");
	(void)http_perform(c, url, NULL, body, key, NULL, 30L, out);
	curl_easy_cleanup(c);
	return out->status;
}

static void open_card(const char *path, struct kh_softmod **sm, struct kh_transport *t)
{
	kh_err r = kh_softmod_open(path, NULL, sm, NULL);
	if (r != KH_OK)
		die(path, kh_strerror(r));
	kh_transport_inproc(t, kh_softmod_module(*sm));
}

static uint32_t card_ua(struct kh_transport *t)
{
	struct kh_module_info i;
	kh_err r = kh_host_info(t, &i);
	if (r != KH_OK)
		die("card info", kh_strerror(r));
	return i.ua;
}

/* ---- prepare ---- */

static int prepare(const char *center, const char *db, const char *root, const char *dec_path,
		   const char *cam_path, unsigned events, char **cards, int ncards)
{
	struct kh_softmod *camsm, *decsm;
	struct kh_transport cam, dec;
	struct center_skey sk = {0};
	struct kh_cas_signer esg;
	char path[4096];
	kh_err r;

	if ((r = kh_authority_signer_load(root, KH_ROLE_ECM_SIGNER, &esg, NULL, 0, NULL)) != KH_OK)
		die(root, kh_strerror(r));
	if ((r = center_service_key(db, &sk)) != KH_OK)
		die(db, r == KH_ERR_NOTFOUND ? "no service key 1" : kh_strerror(r));
	open_card(cam_path, &camsm, &cam);
	open_card(dec_path, &decsm, &dec);
	for (int i = 0; i < ncards; i++) {
		struct kh_softmod *sm;
		struct kh_transport t;
		struct kh_host_cas cas;
		struct reply b;
		json_t *j, *e;
		uint32_t ua;
		size_t k;
		uint64_t now = (uint64_t)time(NULL);

		open_card(cards[i], &sm, &t);
		ua = card_ua(&t);
		snprintf(path, sizeof path, "%s/v1/cards/%08X/emm", center, ua);
		if (http(path, NULL, NULL, &b) != 200 || !(j = json_incref(b.json)))
			die(path, "no EMM list");
		reply_free(&b);
		json_array_foreach(json_object_get(j, "emms"), k, e) {
			uint8_t sec[KH_EMM_MAX];
			size_t n = 0;
			struct kh_host_cas direct = {0};
			direct.card = &t;
			if ((r = kh_json_get_b64(e, "section", sec, sizeof sec, &n, 0)) != KH_OK ||
			    (r = kh_host_cas_emm(&direct, sec, n)) != KH_OK)
				die("EMM", kh_strerror(r));
		}
		json_decref(j);
		kh_host_cas_init(&cas, &dec, &cam, &t, 0);
		if ((r = kh_host_cas_connect(&cas)) != KH_OK)
			die("CAM-card session", kh_strerror(r));
		for (uint32_t ev = 1; ev <= events; ev++) {
			struct kh_ecm ecm = {0};
			struct kh_ppv_offer o;
			uint8_t sec[KH_ECM_MAX];
			size_t len;

			ecm.h.table_id = KH_ECM_TID_EVEN;
			ecm.h.key_id = sk.id;
			ecm.h.key_version = sk.version;
			ecm.alg = KH_SCR_CSA2;
			ecm.cw_len = 8;
			ecm.access = KH_ECM_EVENT;
			ecm.event = ev;
			ecm.price = 10;
			ecm.time = now;
			if ((r = kh_ecm_seal(sk.key, &esg, &ecm, sec, sizeof sec, &len)) != KH_OK ||
			    (r = kh_host_cas_purchase(&cas, sec, len, &o)) != KH_OK)
				die("purchase", kh_strerror(r));
			printf("BUY %08X %u 10\n", ua, ev);
		}
		kh_host_cas_wipe(&cas);
		kh_transport_close(&t);
		kh_softmod_free(sm);
	}
	kh_wipe(&sk, sizeof sk);
	kh_wipe(&esg, sizeof esg);
	kh_transport_close(&cam);
	kh_softmod_free(camsm);
	kh_transport_close(&dec);
	kh_softmod_free(decsm);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- run ---- */

struct journaled {
	struct kh_upload_http real;
};

/* The real client's POST, with the upload request journalled before and its answer after. */
static kh_err post_journaled(void *ctx, const char *url, json_t *body, const char *ikey, int *status, json_t **resp)
{
	const char *key = ikey;
	struct journaled *jc = ctx;
	char *text = NULL;
	kh_err r;

	/* only the upload itself: the session's opening has its own key, and no blocks */
	if (key && !strstr(url, "/v1/upload/sessions/"))
		key = NULL;
	if (key) {
		if (!(text = json_dumps(body, JSON_COMPACT)))
			return KH_ERR_NOMEM;
		jprintf("SENT %s %s %s\n", key, url, text);
		free(text);
	}
	r = jc->real.post_json(jc->real.ctx, url, body, key ? key : ikey, status, resp);
	if (key && r == KH_OK && *status == 200 && json_is_object(*resp))
		journal_answer(key, *resp);
	return r;
}

struct worker {
	const char *center, *card;
	unsigned rounds, done;
	pthread_t th;
};

static void *run_card(void *arg)
{
	struct worker *wk = arg;
	struct kh_softmod *sm;
	struct kh_transport t;
	struct kh_upload_curl *cu = NULL;
	struct journaled jc;
	struct kh_upload_http http;
	struct kh_upload_config cfg = {0};
	struct kh_upload_result *res = calloc(1, sizeof *res);

	open_card(wk->card, &sm, &t);
	if (!res || kh_upload_curl_new(NULL, 0, &cu, &jc.real) != KH_OK)
		die("curl", "client");
	http.post_json = post_journaled;
	http.ctx = &jc;
	cfg.center = wk->center;
	cfg.card = &t;
	cfg.http = &http;
	cfg.backoff_ms = 50;
	for (unsigned refused = 0; wk->done < wk->rounds; wk->done++) {
		kh_err r;
		memset(res, 0, sizeof *res);
		if ((r = kh_upload_run(&cfg, res)) == KH_OK) {
			refused = 0;
			continue;
		}
		/* A connection the center refused (its --threads limit, with more cards than
		 * threads) is tried again a little later, as a decoder would; up to ~2 s in a row,
		 * so a killed center still ends the run. */
		if (r == KH_ERR_TRANSPORT && ++refused < 20) {
			wk->done--;
			usleep(100 * 1000);
			continue;
		}
		fprintf(stderr, "upload_load: %s: round %u: %s\n", wk->card, wk->done + 1, kh_err_name(r));
		break;
	}
	kh_upload_curl_free(cu);
	kh_transport_close(&t);
	kh_softmod_free(sm);
	free(res);
	return NULL;
}

static int run(const char *center, unsigned rounds, char **cards, int ncards)
{
	struct worker *wk = calloc((size_t)ncards, sizeof *wk);
	unsigned total = 0;

	if (!wk)
		die("run", "out of memory");
	for (int i = 0; i < ncards; i++) {
		wk[i].center = center;
		wk[i].card = cards[i];
		wk[i].rounds = rounds;
		if (pthread_create(&wk[i].th, NULL, run_card, &wk[i]) != 0)
			die("run", "pthread_create");
	}
	for (int i = 0; i < ncards; i++) {
		pthread_join(wk[i].th, NULL);
		total += wk[i].done;
	}
	printf("sessions completed %u\n", total);
	free(wk);
	return 0;
}

/* ---- retry ---- */

static int retry(const char *center, const char *journal_path)
{
	FILE *f = fopen(journal_path, "r");
	char *line = NULL, **keys = NULL, **urls = NULL, **bodies = NULL;
	size_t cap = 0, n = 0;
	unsigned ok = 0, replayed = 0;
	int rc = 0;

	if (!f)
		die(journal_path, "cannot read");
	while (getline(&line, &cap, f) > 0) {
		char key[200], url[512];
		int off = 0;
		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "SENT %199s %511s %n", key, url, &off) == 2 && off > 0) {
			keys = realloc(keys, (n + 1) * sizeof *keys);
			urls = realloc(urls, (n + 1) * sizeof *urls);
			bodies = realloc(bodies, (n + 1) * sizeof *bodies);
			if (!keys || !urls || !bodies)
				die("retry", "out of memory");
			keys[n] = strdup(key);
			urls[n] = strdup(url);
			bodies[n] = strdup(line + off);
			n++;
		} else if (sscanf(line, "ACKED %199s", key) == 1) {
			for (size_t i = 0; i < n; i++)
				if (keys[i] && strcmp(keys[i], key) == 0) {
					free(keys[i]);
					keys[i] = NULL;
				}
		}
	}
	free(line);
	fclose(f);
	for (size_t i = 0; i < n; i++) {
		struct reply b;
		json_t *j;
		long st;

		if (keys[i]) {
			/* each SENT of a key after the first is the client's own retry: one is enough */
			for (size_t k = i + 1; k < n; k++)
				if (keys[k] && strcmp(keys[k], keys[i]) == 0) {
					free(keys[k]);
					keys[k] = NULL;
				}
			/* the same request at the center's new address: its path, on --center */
			const char *p = strstr(urls[i], "/v1/");
			char url[1024];
			if (!p)
				die(urls[i], "not an upload URL");
			snprintf(url, sizeof url, "%s%s", center, p);
			st = http(url, bodies[i], keys[i], &b);
			j = st == 200 ? b.json : NULL;
			if (j) {
				journal_answer(keys[i], j);
				jprintf("REPLAYED %s %d\n", keys[i], b.replayed);
				ok++;
				replayed += (unsigned)b.replayed;
			} else {
				fprintf(stderr, "kh_upload_load: retry %s: HTTP %ld %s\n", keys[i], st, b.body ? b.body : "");
				rc = 1;
			}
			reply_free(&b);
		}
		free(keys[i]);
		free(urls[i]);
		free(bodies[i]);
	}
	free(keys);
	free(urls);
	free(bodies);
	printf("retried %u replayed %u\n", ok, replayed);
	return rc;
}

static const char usage[] =
	"usage: kh_upload_load prepare --center URL --db DB --authority AUTHDIR --decoder DEC --cam CAM\n"
	"                              --events N CARD...\n"
	"       kh_upload_load run --center URL --journal FILE --rounds N CARD...\n"
	"       kh_upload_load retry --center URL --journal FILE\n";

int main(int argc, char **argv)
{
	const char *center = NULL, *db = NULL, *root = NULL, *dec = NULL, *cam = NULL, *jpath = NULL;
	unsigned n = 0;
	int i, rc;

	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	for (i = 2; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (strcmp(argv[i], "--center") == 0)
			center = argv[i + 1];
		else if (strcmp(argv[i], "--db") == 0)
			db = argv[i + 1];
		else if (strcmp(argv[i], "--authority") == 0)
			root = argv[i + 1];
		else if (strcmp(argv[i], "--cam") == 0)
			cam = argv[i + 1];
		else if (strcmp(argv[i], "--decoder") == 0)
			dec = argv[i + 1];
		else if (strcmp(argv[i], "--journal") == 0)
			jpath = argv[i + 1];
		else if (strcmp(argv[i], "--events") == 0 || strcmp(argv[i], "--rounds") == 0)
			n = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else
			die(argv[i], "unknown option");
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (jpath && !(journal = fopen(jpath, "a")))
		die(jpath, "cannot append");
	if (strcmp(argv[1], "prepare") == 0 && center && db && root && dec && cam && n && i < argc)
		rc = prepare(center, db, root, dec, cam, n, argv + i, argc - i);
	else if (strcmp(argv[1], "run") == 0 && center && journal && n && i < argc)
		rc = run(center, n, argv + i, argc - i);
	else if (strcmp(argv[1], "retry") == 0 && center && journal && i == argc)
		rc = retry(center, jpath);
	else {
		fputs(usage, stderr);
		rc = 2;
	}
	if (journal)
		fclose(journal);
	curl_global_cleanup();
	return rc;
}
