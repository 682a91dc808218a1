/*
 * keyhole demo, second half: the pay-TV story of issues 3 and 4 (seed 001), one line per step.
 * The decoder's steps run through the decoder module the first half issued; the first watch uses
 * the key ladder, so the control words never leave that module.
 * The management center runs in this process (kh_sms on kh_http, 127.0.0.1, an ephemeral port)
 * and the demo is its operator, over HTTP with libcurl like any client. The headend, the decoder
 * and the upload session are the real subcommands (kh_cmd_headend, kh_cmd_decoder), run
 * in-process with their output kept in DIR/log/, so every step is one a user can type. The clip
 * is made by ffmpeg, and ffmpeg's framemd5 proves the descrambled frames; without ffmpeg the
 * media steps, and the replacement that needs them, are skipped with a line saying so.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "keyhole/authority.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/sms.h"

#define PRODUCT 7
#define CHANNEL 1
#define EVENT 55
#define PRICE 30
#define INITIAL 100
#define RELOAD 50

struct demo {
	const struct kh__demo_paths *p;
	CURL *curl;
	char base[64];
	char path[8][4096];
};

enum { P_DB, P_LOG, P_KEYS, P_CLIP, P_M1, P_CLEAR, P_TMP, P_TMP2 };

/* ---- the operator's HTTP client ---- */

struct body {
	char *p;
	size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct body *b = ud;
	size_t n = size * nmemb;
	char *q = realloc(b->p, b->len + n + 1);
	if (!q)
		return 0;
	memcpy(q + b->len, ptr, n);
	b->p = q;
	b->len += n;
	b->p[b->len] = 0;
	return n;
}

/* One API call; 0 when the status is want (*out, when wanted, gets the JSON answer). */
static int api(struct demo *d, const char *method, const char *path, const char *json, const char *idem, long want,
	       json_t **out)
{
	struct curl_slist *hdr = NULL;
	struct body b = {NULL, 0};
	char url[256], ih[160];
	long code = 0;
	CURLcode cr;

	snprintf(url, sizeof url, "%s%s", d->base, path);
	hdr = curl_slist_append(hdr, "Content-Type: application/json");
	if (idem) {
		snprintf(ih, sizeof ih, "Idempotency-Key: %s", idem);
		hdr = curl_slist_append(hdr, ih);
	}
	curl_easy_reset(d->curl);
	curl_easy_setopt(d->curl, CURLOPT_URL, url);
	curl_easy_setopt(d->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(d->curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(d->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(d->curl, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, hdr);
	if (json || strcmp(method, "POST") == 0) {
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDS, json ? json : "");
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDSIZE, (long)(json ? strlen(json) : 0));
	}
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, &b);
	cr = curl_easy_perform(d->curl);
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdr);
	if (cr == CURLE_OK)
		curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
	if (cr != CURLE_OK || code != want) {
		fprintf(stderr, "keyhole: demo: %s %s: %s%s\n", method, path,
			cr != CURLE_OK ? curl_easy_strerror(cr) : "status ", cr != CURLE_OK ? "" : b.p ? b.p : "");
		free(b.p);
		return -1;
	}
	if (out && !(*out = json_loadb(b.p ? b.p : "", b.len, 0, NULL))) {
		fprintf(stderr, "keyhole: demo: %s %s: the answer is not JSON\n", method, path);
		free(b.p);
		return -1;
	}
	free(b.p);
	return 0;
}

static long long jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* POST /v1/cards with the card's signing certificate (DER, base64url), as the authority issued it. */
static int register_card(struct demo *d, uint32_t ua)
{
	uint8_t *pem = NULL, der[4096];
	char *b64 = NULL, *json = NULL, path[4200];
	size_t pl = 0, dl = 0;
	int rc = -1;

	snprintf(path, sizeof path, "%s/issued/card-%08X-sign.crt", d->p->authority, ua);
	if (kh_file_read(path, 65536, &pem, &pl) != KH_OK || kh_cert_pem_to_der((const char *)pem, pl, der, sizeof der, &dl) != KH_OK) {
		fprintf(stderr, "keyhole: demo: %s: not a certificate\n", path);
		goto out;
	}
	if (!(b64 = malloc(kh_b64url_len(dl) + 1)) || kh_b64url_encode(der, dl, b64, kh_b64url_len(dl) + 1) != KH_OK ||
	    asprintf(&json, "{\"certificate\":\"%s\"}", b64) < 0) {
		json = NULL;
		goto out;
	}
	rc = api(d, "POST", "/v1/cards", json, NULL, 201, NULL);
out:
	kh_file_free(pem, pl);
	free(b64);
	free(json);
	return rc;
}

/* ---- the attacker of the protocol review ---- */


/*
 * Before signed broadcast EMMs, the broadcast key, which every card holds, was enough to give
 * every card every product and a million credit. Make that EMM as such an attacker would (the
 * key derived here is the one the center gave card 1; the signature is from a key of the
 * attacker's own under the operator's EMM signer's serial), broadcast it with the pay-per-view
 * stream, and let card 1's decoder play it.
 */
static int forged_broadcast(struct demo *d, const char *tnow)
{
	const struct kh__demo_paths *p = d->p;
	uint8_t *mhex = NULL, master[32], all[32], cmds[64], emm[KH_EMM_MAX], pk[32];
	struct kh_emm_hdr h = {0, KH_EMM_ALL, 0, 1, 0};
	struct kh_cas_signer fake;
	char mpath[4200], epath[4200], out[4200];
	size_t ml = 0, n = 0;
	struct kh_wr w;
	int rc = KH_EXIT_FAIL;

	snprintf(mpath, sizeof mpath, "%s/master.key", p->authority);
	snprintf(epath, sizeof epath, "%s/forged.emm", d->path[P_LOG]);
	snprintf(out, sizeof out, "%s/forged.ts", d->path[P_LOG]);
	if (kh_keyfile_read(mpath, 4096, &mhex, &ml) != KH_OK || kh_hex_decode((const char *)mhex, ml, master, 32) != KH_OK ||
	    kh_cas_all_key(master, all) != KH_OK ||
	    kh_authority_signer_load(p->authority, KH_ROLE_EMM_SIGNER, &fake, NULL, 0, NULL) != KH_OK ||
	    kh_ed25519_keygen(fake.sk, pk) != KH_OK) {
		fprintf(stderr, "keyhole: demo: the forged EMM could not be made\n");
		goto out;
	}
	kh_wr_init(&w, cmds, sizeof cmds);
	/* what the attack of old did, as far as a broadcast may still carry it: rights for nothing,
	 * and every subscriber's product taken away (a blackout) */
	kh_emm_put_entitle(&w, 999, 0, 4102444800u);
	kh_emm_put_revoke(&w, PRODUCT);
	if (w.err != KH_OK || kh_emm_seal_signed(all, &fake, &h, cmds, w.len, emm, sizeof emm, &n) != KH_OK ||
	    kh_file_write_atomic(epath, emm, n, 0600) != KH_OK)
		goto out;
	if (kh__demo_run(d->path[P_LOG], "forged-scramble", kh_cmd_headend, "scramble", "--keys", d->path[P_KEYS], "--alg", "cissa", "--product",
		"7", "--period", "5", "--time", tnow, "--emm", epath, "--in", d->path[P_CLIP], "--out", out,
		(char *)NULL) == 0)
		rc = kh__demo_run(d->path[P_LOG], "forged-play", kh_cmd_decoder, "play", "--decoder", p->dec, "--cam", p->cam, "--card",
			 p->card1, "--in", out, "--out", d->path[P_TMP], (char *)NULL);
out:
	kh_wipe(master, sizeof master);
	kh_wipe(all, sizeof all);
	kh_wipe(&fake, sizeof fake);
	kh_file_free(mhex, ml);
	return rc;
}

static long credit_of(struct demo *d, const char *card)
{
	char v[64];
	if (kh__demo_run(d->path[P_LOG], "status", kh_cmd_decoder, "status", "--card", card, (char *)NULL) != KH_EXIT_OK ||
	    !kh__demo_value(d->path[P_LOG], "status", "credit", v, sizeof v))
		return -1;
	return strtol(v, NULL, 10);
}

/* ---- ffmpeg ---- */

static int have_ffmpeg(void)
{
	return system("command -v ffmpeg >/dev/null 2>&1") == 0;
}

/* framemd5 of every video and audio frame of ts into md5 (header lines dropped); frames, or -1. */
static long frames(const char *ts, const char *md5)
{
	char cmd[9000];
	uint8_t *b = NULL;
	size_t n = 0;
	long lines = 0;

	snprintf(cmd, sizeof cmd,
		 "ffmpeg -nostdin -v error -i '%s' -map 0:v -map 0:a -f framemd5 - 2>/dev/null | grep -v '^#' >'%s'", ts,
		 md5);
	if (system(cmd) != 0 || kh_file_read(md5, 64u << 20, &b, &n) != KH_OK)
		return -1;
	for (size_t i = 0; i < n; i++)
		lines += b[i] == '\n';
	kh_file_free(b, n);
	return lines;
}

/* Frames of ts when they all equal the clear clip's, else -1. */
static long bit_exact(struct demo *d, const char *ts)
{
	uint8_t *a = NULL, *b = NULL;
	size_t an = 0, bn = 0;
	long n = frames(ts, d->path[P_TMP2]);
	int same;

	if (n <= 0 || kh_file_read(d->path[P_CLEAR], 64u << 20, &a, &an) != KH_OK)
		return -1;
	if (kh_file_read(d->path[P_TMP2], 64u << 20, &b, &bn) != KH_OK) {
		kh_file_free(a, an);
		return -1;
	}
	same = an == bn && memcmp(a, b, an) == 0;
	kh_file_free(a, an);
	kh_file_free(b, bn);
	return same ? n : -1;
}

/* ---- the story ---- */

#define CHECK(cond, ...)                                                                               \
	do {                                                                                           \
		if (!(cond)) {                                                                         \
			fprintf(stderr, "keyhole: demo: " __VA_ARGS__);                                \
			fputc('\n', stderr);                                                           \
			goto out;                                                                      \
		}                                                                                      \
	} while (0)

static int story(struct demo *d)
{
	const struct kh__demo_paths *p = d->p;
	char body[256], path[128], since[32], tnow[32], ua1[16], ua2[16], v[128], scr[8400], ppv[4200];
	json_t *j = NULL, *arr;
	long long queued = 0, last = 0;
	long nf, c0, c1;
	int rc = KH_EXIT_FAIL;
	uint64_t now = (uint64_t)time(NULL);

	snprintf(ua1, sizeof ua1, "%08X", p->ua1);
	snprintf(ua2, sizeof ua2, "%08X", p->ua2);
	snprintf(tnow, sizeof tnow, "%llu", (unsigned long long)now);

	/* the operator sets up the catalogue and the subscriber */
	snprintf(body, sizeof body, "{\"initial_credit\":%d,\"reload_amount\":%d}", INITIAL, RELOAD);
	if (api(d, "PUT", "/v1/credit-policy", body, NULL, 200, NULL) ||
	    api(d, "POST", "/v1/products", "{\"id\":7,\"name\":\"Demo Sports\"}", NULL, 201, NULL) ||
	    api(d, "POST", "/v1/channels", "{\"id\":1,\"name\":\"Demo Sports 1\",\"product_id\":7}", NULL, 201, NULL))
		goto out;
	snprintf(body, sizeof body, "{\"id\":%d,\"name\":\"The Final\",\"price\":%d,\"channel_id\":%d,\"start\":%llu,\"end\":%llu}",
		 EVENT, PRICE, CHANNEL, (unsigned long long)now - 60, (unsigned long long)now + 86400);
	if (api(d, "POST", "/v1/events", body, NULL, 201, NULL))
		goto out;
	kh__demo_say("operator: credit policy (%d to start, reloads of %d), product %d on channel %d, pay-per-view "
		     "event %d at %d",
		     INITIAL, RELOAD, PRODUCT, CHANNEL, EVENT, PRICE);

	if (api(d, "POST", "/v1/subscribers", "{\"name\":\"Ada\"}", NULL, 201, NULL) || register_card(d, p->ua1) ||
	    register_card(d, p->ua2))
		goto out;
	snprintf(path, sizeof path, "/v1/cards/%s/assign", ua1);
	if (api(d, "POST", path, "{\"subscriber_id\":1}", NULL, 200, &j))
		goto out;
	queued += jint(j, "emms_queued");
	json_decref(j);
	j = NULL;
	snprintf(body, sizeof body, "{\"product_id\":%d,\"start\":%llu,\"end\":%llu}", PRODUCT,
		 (unsigned long long)now - 60, (unsigned long long)now + 30 * 86400);
	if (api(d, "POST", "/v1/subscribers/1/subscriptions", body, NULL, 201, &j))
		goto out;
	queued += jint(j, "emms_queued");
	json_decref(j);
	j = NULL;
	kh__demo_say("operator: subscriber 1 (Ada); cards %s and %s registered from their certificates; card %s "
		     "assigned and subscribed to product %d: %lld EMM(s) queued for it",
		     ua1, ua2, ua1, PRODUCT, queued);

	if (!have_ffmpeg()) {
		kh__demo_say("ffmpeg is not installed: skipping the media steps (headend, decoder, pay-per-view, the card "
			     "replacement and its recovery); scripts/install-deps installs it");
		return KH_EXIT_OK;
	}

	/* the headend: the center's service keys, a real clip, the center's EMM queue in the stream */
	snprintf(scr, sizeof scr,
		 "ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=6:size=160x120:rate=25 -f lavfi "
		 "-i sine=frequency=440:duration=6 -c:v mpeg2video -c:a mp2 -f mpegts '%s' </dev/null",
		 d->path[P_CLIP]);
	CHECK(system(scr) == 0, "ffmpeg could not make the clip");
	CHECK((nf = frames(d->path[P_CLIP], d->path[P_CLEAR])) > 0, "ffmpeg decoded no frame of the clip");
	if (kh__demo_run(d->path[P_LOG], "keys-init", kh_cmd_headend, "keys", "init", "--authority", p->authority, "--out", d->path[P_KEYS],
		(char *)NULL) ||
	    kh__demo_run(d->path[P_LOG], "keys-import", kh_cmd_headend, "keys", "import", "--keys", d->path[P_KEYS], "--db", d->path[P_DB],
		(char *)NULL))
		goto out;
	snprintf(scr, sizeof scr, "%s/channel1.ts", p->dir);
	if (kh__demo_run(d->path[P_LOG], "scramble", kh_cmd_headend, "scramble", "--keys", d->path[P_KEYS], "--alg", "cissa", "--product", "7",
		"--period", "5", "--time", tnow, "--center", d->base, "-v", "--in", d->path[P_CLIP], "--out", scr,
		(char *)NULL))
		goto out;
	snprintf(ppv, sizeof ppv, "%s/ppv.ts", p->dir);
	if (kh__demo_run(d->path[P_LOG], "scramble-ppv", kh_cmd_headend, "scramble", "--keys", d->path[P_KEYS], "--alg", "cissa", "--event",
		"55", "--price", "30", "--period", "5", "--time", tnow, "--center", d->base, "--in", d->path[P_CLIP],
		"--out", ppv, (char *)NULL))
		goto out;
	kh__demo_say("headend: took the center's service keys, scrambled a 6 s ffmpeg clip (%ld frames) for channel "
		     "%d and event %d, carrying the center's EMM queue (GET /v1/emm)",
		     nf, CHANNEL, EVENT);

	/* the subscriber watches, with the key ladder: the control words go sealed to the decoder
	 * module, which descrambles */
	if (kh__demo_run(d->path[P_LOG], "play", kh_cmd_decoder, "play", "--decoder", p->dec, "--cam", p->cam, "--card", p->card1, "--ladder",
		"--m1", d->path[P_M1], "--in", scr, "--out", d->path[P_TMP], (char *)NULL))
		goto out;
	CHECK((nf = bit_exact(d, d->path[P_TMP])) > 0, "card 1's picture is not the clip's");
	CHECK((c0 = credit_of(d, p->card1)) == INITIAL, "card 1's credit is %ld, not the center's %d", c0, INITIAL);
	kh__demo_say("decoder, with its proven decoder module and the key ladder: card %s took its EMMs from the "
		     "broadcast and watches channel %d, all %ld frames bit-exact (ffmpeg framemd5), credit %ld; the "
		     "CAM sealed each pair of control words for decoder module %08X, which descrambled: the control "
		     "words stay in the decoder module",
		     ua1, CHANNEL, nf, c0, p->ua_dec);

	/* pay-per-view, bought once */
	if (kh__demo_run(d->path[P_LOG], "buy", kh_cmd_decoder, "buy", "--decoder", p->dec, "--cam", p->cam, "--card", p->card1, "--m1",
		d->path[P_M1], "--in", ppv, (char *)NULL) ||
	    (c1 = credit_of(d, p->card1)) != c0 - PRICE)
		CHECK(0, "the purchase did not take %d from the credit", PRICE);
	if (kh__demo_run(d->path[P_LOG], "buy-again", kh_cmd_decoder, "buy", "--decoder", p->dec, "--cam", p->cam, "--card", p->card1,
		"--m1", d->path[P_M1], "--in", ppv, (char *)NULL))
		goto out;
	CHECK(credit_of(d, p->card1) == c1, "buying event %d again charged again", EVENT);
	CHECK(kh__demo_run(d->path[P_LOG], "m1", kh_cmd_decoder, "m1", "--m1", d->path[P_M1], (char *)NULL) == 0 &&
		      kh__demo_value(d->path[P_LOG], "m1", "card", v, sizeof v) && strcmp(v, ua1) == 0,
	      "M1 does not hold card 1's block");
	kh__demo_say("pay-per-view: card %s bought event %d offline for %d (credit %ld -> %ld), buying it again "
		     "charged nothing; the decoder's M1 keeps the card's signed usage block",
		     ua1, EVENT, PRICE, c0, c1);

	/* an attacker who read the broadcast key out of card 1 broadcasts an EMM for every card */
	if (forged_broadcast(d, tnow) != 0)
		goto out;
	CHECK(bit_exact(d, d->path[P_TMP]) == nf, "card 1 stopped watching channel %d after the forged EMM", CHANNEL);
	CHECK(credit_of(d, p->card1) == c1, "the forged broadcast EMM changed card 1's credit");
	CHECK(kh__demo_value(d->path[P_LOG], "status", "emm", v, sizeof v) && strstr(v, "all 0") != NULL,
	      "the forged broadcast EMM was applied (card 1's broadcast sequence moved)");
	kh__demo_say("attack: a broadcast EMM made with the broadcast key read out of card %s (product 999 for "
		     "everyone, product %d revoked for everyone), signed with a key of its own under the operator's "
		     "EMM signer's serial: refused (operator signature does not verify); card %s still watches "
		     "channel %d bit-exactly, credit %ld",
		     ua1, PRODUCT, ua1, CHANNEL, c1);

	/* the card is replaced before the decoder ever connected: its purchase is only in M1 */
	if (api(d, "GET", "/v1/emm", NULL, NULL, 200, &j))
		goto out;
	last = jint(j, "last_id");
	json_decref(j);
	j = NULL;
	snprintf(path, sizeof path, "/v1/cards/%s/replace", ua1);
	snprintf(body, sizeof body, "{\"new_ua\":\"%s\"}", ua2);
	if (api(d, "POST", path, body, NULL, 200, &j))
		goto out;
	queued = jint(j, "emms_queued");
	json_decref(j);
	j = NULL;
	kh__demo_say("operator: card %s lost, replaced by card %s: %lld EMM(s) queued for it, not yet authorised to "
		     "export (card %s's purchase has not reached the center)",
		     ua1, ua2, queued, ua1);

	snprintf(since, sizeof since, "%lld", last);
	if (kh__demo_run(d->path[P_LOG], "scramble-2", kh_cmd_headend, "scramble", "--keys", d->path[P_KEYS], "--alg", "cissa", "--product",
		"7", "--period", "5", "--time", tnow, "--center", d->base, "--center-since", since, "--in",
		d->path[P_CLIP], "--out", scr, (char *)NULL) ||
	    kh__demo_run(d->path[P_LOG], "play-2", kh_cmd_decoder, "play", "--decoder", p->dec, "--cam", p->cam, "--card", p->card2, "--m1",
		d->path[P_M1], "--in", scr, "--out", d->path[P_TMP], (char *)NULL))
		goto out;
	CHECK((nf = bit_exact(d, d->path[P_TMP])) > 0, "card 2's picture is not the clip's");
	CHECK(kh__demo_run(d->path[P_LOG], "m1", kh_cmd_decoder, "m1", "--m1", d->path[P_M1], (char *)NULL) == 0 &&
		      kh__demo_value(d->path[P_LOG], "m1", "card", v, sizeof v) && strcmp(v, ua1) == 0,
	      "M1 no longer holds card 1's block");
	kh__demo_say("headend and decoder: the next broadcast carries card %s's EMMs (--center-since %lld); it watches "
		     "channel %d, %ld frames bit-exact; M1 still holds card %s's block",
		     ua2, last, CHANNEL, nf, ua1);

	/* the decoder connects: recovery */
	if (kh__demo_run(d->path[P_LOG], "connect", kh_cmd_decoder, "connect", "--center", d->base, "--card", p->card2, "--m1",
		d->path[P_M1], (char *)NULL))
		goto out;
	snprintf(path, sizeof path, "block %s", ua1);
	CHECK(kh__demo_value(d->path[P_LOG], "connect", path, v, sizeof v) && strstr(v, "recovered"), "card 1's block was not recovered");
	snprintf(path, sizeof path, "/v1/cards/%s", ua1);
	if (api(d, "GET", path, NULL, NULL, 200, &j))
		goto out;
	CHECK(strcmp(json_string_value(json_object_get(j, "state")) ? json_string_value(json_object_get(j, "state")) : "",
		     "closed") == 0,
	      "card 1 is not closed");
	json_decref(j);
	j = NULL;
	if (api(d, "GET", "/v1/subscribers/1/invoices", NULL, NULL, 200, &j))
		goto out;
	arr = json_is_array(j) ? j : json_object_get(j, "invoices");
	CHECK(json_array_size(arr) == 1 && jint(json_array_get(arr, 0), "price") == PRICE,
	      "the center did not invoice the one purchase");
	json_decref(j);
	j = NULL;
	CHECK(kh__demo_value(d->path[P_LOG], "connect", "m1", v, sizeof v) && strncmp(v, "updated", 7) == 0, "M1 was not updated");
	CHECK(kh__demo_run(d->path[P_LOG], "status-2", kh_cmd_decoder, "status", "--card", p->card2, (char *)NULL) == 0 &&
		      kh__demo_value(d->path[P_LOG], "status-2", "export", v, sizeof v) && strcmp(v, "authorised") == 0,
	      "card 2 is not authorised to export");
	c1 = credit_of(d, p->card2);
	/* Card 2 spent nothing and holds the policy's ceiling (its initial credit): no reload. */
	CHECK(c1 == INITIAL, "card 2's credit is %ld, not %d", c1, INITIAL);
	kh__demo_say("decoder connect: card %s's block recovered from M1, event %d invoiced once (%d), card %s closed; "
		     "card %s authorised (credit %ld: it spent nothing, so no reload); only then M1 took card %s's block",
		     ua1, EVENT, PRICE, ua1, ua2, c1, ua2);
	rc = KH_EXIT_OK;
out:
	json_decref(j);
	return rc;
}

int kh__demo_paytv(const struct kh__demo_paths *p)
{
	struct kh_sms_config scfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_sms *sms = NULL;
	struct kh_http *h = NULL;
	struct demo *d;
	const char *what = NULL;
	int rc = KH_EXIT_FAIL;
	kh_err r;

	if (!(d = calloc(1, sizeof *d)))
		return kh_cli_fail("demo", KH_ERR_NOMEM);
	d->p = p;
	snprintf(d->path[P_DB], sizeof d->path[0], "%s/center.db", p->dir);
	snprintf(d->path[P_LOG], sizeof d->path[0], "%s/log", p->dir);
	snprintf(d->path[P_KEYS], sizeof d->path[0], "%s/headend.keys", p->dir);
	snprintf(d->path[P_CLIP], sizeof d->path[0], "%s/clip.ts", p->dir);
	snprintf(d->path[P_M1], sizeof d->path[0], "%s/m1", p->dir);
	snprintf(d->path[P_CLEAR], sizeof d->path[0], "%s/clip.md5", p->dir);
	snprintf(d->path[P_TMP], sizeof d->path[0], "%s/watched.ts", p->dir);
	snprintf(d->path[P_TMP2], sizeof d->path[0], "%s/watched.md5", p->dir);
	if (mkdir(d->path[P_LOG], 0700) != 0) {
		rc = kh_cli_fail(d->path[P_LOG], KH_ERR_IO);
		goto out;
	}
	/* the center's own log stays quiet, as in keyhole serve before it runs */
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level((enum kh_log_level)(KH_LOG_ERROR + 1));
	scfg.db = d->path[P_DB];
	scfg.authority_dir = p->authority;
	if ((r = kh_sms_new(&scfg, &sms, &what)) != KH_OK) {
		rc = kh_cli_fail(what ? what : "management center", r);
		goto out;
	}
	hcfg.host = "127.0.0.1";
	hcfg.port = 0;
	hcfg.threads = 0; /* KH_HTTP_THREADS */
	if ((r = kh_http_new(&hcfg, &h)) != KH_OK || (r = kh_sms_add_routes(sms, h)) != KH_OK ||
	    (r = kh_http_start(h)) != KH_OK) {
		rc = kh_cli_fail("management center", r);
		goto out;
	}
	snprintf(d->base, sizeof d->base, "http://127.0.0.1:%u", (unsigned)kh_http_port(h));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(d->curl = curl_easy_init())) {
		rc = kh_cli_fail("libcurl", KH_ERR_INTERNAL);
		goto out;
	}
	kh__demo_say("center: the management center (kh_sms) serves its operator API on %s, database %s", d->base,
		     d->path[P_DB]);
	rc = story(d);
out:
	if (d->curl) {
		curl_easy_cleanup(d->curl);
		curl_global_cleanup();
	}
	if (h)
		kh_http_stop(h);
	kh_http_free(h);
	kh_sms_free(sms);
	free(d);
	return rc;
}
