/*
 * keyhole demo, fifth act: the key center relay (docs/protocols/keycenter.md), one line per step.
 * The key center runs in this process (kh_keycenter_service on kh_http, 127.0.0.1, an ephemeral
 * port) on its own database; the operator's and the users' steps are the real subcommands
 * (kh_cmd_keycenter, kh_cmd_keycard, kh_cmd_card) run in-process with their output in DIR/log/.
 * Two users, ana and ben, have key cards (module files of role keycard). The replay is made here
 * the way an attacker would: a post's very bytes sent again, once as a retry (relayed once) and
 * once after a newer post (refused). The keys' fingerprints show that ana's key for a message and
 * ben's key for its delivery are not the same key, and that neither card gave the other's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>
#include <jansson.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardclient.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keycentersvc.h"
#include "keyhole/softmodule.h"

#define LETTER "a letter for ben: only his key card can open it, and ana's card never held his key"
#define PS "p.s. a retried post is relayed once; an old one is refused"

enum { F_LOG, F_ID, F_DB, F_ANA, F_BEN, F_ANA_CARD, F_BEN_CARD, F_LETTER, F_PS2, F_INBOX, F_OUT1, F_OUT2, F_OUT3,
       F_N };

struct act {
	const struct kh__demo_paths *p;
	char f[F_N][4200];
	char url[64];
	struct kh_keycenter_service *svc;
	struct kh_http *h;
};

#define STEP KH_DEMO_STEP

/* The access code an enrolment printed (LOG/NAME.out, after "access code: "), into code. */
static int code_of(const char *log, const char *name, char code[static KH_KEYCENTER_CODE_SHOWN + 1])
{
	char path[4300], line[512];
	const char *at;
	FILE *f;
	int found = 0;

	snprintf(path, sizeof path, "%s/%s.out", log, name);
	if (!(f = fopen(path, "r")))
		return 0;
	while (!found && fgets(line, sizeof line, f))
		if ((at = strstr(line, "access code: ")) && strlen(at + 13) >= KH_KEYCENTER_CODE_SHOWN) {
			memcpy(code, at + 13, KH_KEYCENTER_CODE_SHOWN);
			code[KH_KEYCENTER_CODE_SHOWN] = 0;
			found = 1;
		}
	fclose(f);
	return found;
}

/* The first 8 bytes of SHA-256(key), in hex: a key's fingerprint, which shows nothing of it. */
static void fingerprint(const uint8_t key[static 32], char out[static 17])
{
	uint8_t h[KH_SHA256_LEN];

	if (kh_sha256(key, 32, h) != KH_OK)
		memset(h, 0, sizeof h);
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* ---- a post's bytes, sent as they are ---- */

struct mem {
	const uint8_t *p;
	size_t n, at;
};

static kh_err mem_read(void *ctx, uint8_t *buf, size_t cap, size_t *n)
{
	struct mem *m = ctx;

	*n = m->n - m->at < cap ? m->n - m->at : cap;
	memcpy(buf, m->p + m->at, *n);
	m->at += *n;
	return KH_OK;
}

static void mem_rewind(void *ctx)
{
	((struct mem *)ctx)->at = 0;
}

/* POST /v1/messages of msg as it is: the HTTP status, and "duplicate" or the error code in what. */
static long post_raw(struct act *a, const uint8_t *msg, size_t n, char *what, size_t cap)
{
	static const char *const hdr[] = {"Content-Type: application/octet-stream", NULL};
	struct kh_http_client *c = NULL;
	struct mem m = {msg, n, 0};
	struct kh_http_stream s = {mem_read, mem_rewind, &m, n, NULL, NULL};
	char url[128], err[256];
	json_t *ans = NULL;
	long status = 0;

	snprintf(url, sizeof url, "%s/v1/messages", a->url);
	snprintf(what, cap, "?");
	if (kh_http_client_new(NULL, "keyhole-demo", KH_KC_ANSWER_MAX, &c) != KH_OK ||
	    kh_http_client_stream(c, "POST", url, hdr, &s, &status, &ans, err, sizeof err) != KH_OK)
		status = 0;
	if (ans) {
		const char *code = json_string_value(json_object_get(json_object_get(ans, "error"), "code"));
		if (code)
			snprintf(what, cap, "%s", code);
		else
			snprintf(what, cap, "%s", json_is_true(json_object_get(ans, "duplicate")) ? "duplicate" : "relayed");
	}
	json_decref(ans);
	kh_http_client_free(c);
	return status;
}

/*
 * Ana's card gives the key of her next post (KC SEND); the postscript is sealed to ben under it and
 * posted twice, the second time exactly as a host retrying a lost answer would: relayed once. The
 * post's bytes go to *msg (the caller frees them), its key's fingerprint to fp.
 */
static int post_twice(struct act *a, uint8_t **msg, size_t *n, uint64_t *index, char fp[static 17])
{
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_kc_header h = {KH_KC_POST, 0, 0};
	uint8_t key[32];
	char what[4200], w1[64], w2[64];
	size_t cap = kh_kc_msg_size(KH_KC_ADDR_MAX, sizeof PS - 1);
	long s1, s2;
	kh_err r;

	*msg = malloc(cap);
	STEP(*msg, "out of memory");
	if ((r = kh_cli_open_module(a->f[F_ANA_CARD], NULL, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	r = kh_keycard_send(&t, &h.serial, &h.index, key);
	kh_transport_close(&t);
	kh_softmod_free(sm);
	if (r != KH_OK)
		return kh_cli_fail("ana's key card", r);
	r = kh_kc_msg_seal(key, &h, "ben@keycenter.demo", (const uint8_t *)PS, sizeof PS - 1, *msg, cap, n);
	fingerprint(key, fp);
	kh_wipe(key, sizeof key);
	STEP(r == KH_OK, "the postscript could not be sealed: %s", kh_strerror(r));
	*index = h.index;
	s1 = post_raw(a, *msg, *n, w1, sizeof w1);
	s2 = post_raw(a, *msg, *n, w2, sizeof w2);
	STEP(s1 == 200 && strcmp(w1, "relayed") == 0, "the postscript was not relayed (%ld %s)", s1, w1);
	STEP(s2 == 200 && strcmp(w2, "duplicate") == 0, "the retried postscript was not answered as a duplicate (%ld %s)",
	     s2, w2);
	return KH_EXIT_OK;
}

/* Ben's card opens delivery j (the file fetched) for its key's fingerprint; KH_EXIT_OK. */
static int ben_key(struct act *a, const char *file, char fp[static 17])
{
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_kc_header h;
	uint8_t hdr[KH_KC_HEADER_LEN], c0[KH_KC_CHUNK0_MAX], key[32];
	size_t c0len = 0;
	uint64_t j = 0;
	char what[4200];
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	kh_err r;

	STEP(fd >= 0, "%s: cannot be read", file);
	r = kh_kc_read_head(fd, hdr, &h, c0, &c0len);
	close(fd);
	STEP(r == KH_OK, "%s: %s", file, kh_strerror(r));
	if ((r = kh_cli_open_module(a->f[F_BEN_CARD], NULL, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	r = kh_keycard_open(&t, hdr, c0, c0len, &j, key);
	kh_transport_close(&t);
	kh_softmod_free(sm);
	STEP(r == KH_OK && j == h.index, "ben's card did not open %s: %s", file, kh_strerror(r));
	fingerprint(key, fp);
	kh_wipe(key, sizeof key);
	return KH_EXIT_OK;
}

static int same_file(const char *path, const char *text)
{
	uint8_t *o = NULL;
	size_t n = 0;
	int same = kh_file_read(path, 4096, &o, &n) == KH_OK && n == strlen(text) && memcmp(o, text, n) == 0;

	kh_file_free(o, n);
	return same;
}

static int story(struct act *a)
{
	const char *log = a->f[F_LOG], *url = a->url;
	char fp_a[17], fp_b[17], why[64];
	char in1[4300], in2[4300], in3[4300];
	uint8_t *ps = NULL;
	size_t psn = 0;
	uint64_t psi = 0;
	long st;

	STEP(kh__demo_run(log, "ana-letter-send", kh_cmd_keycard, "send", "--center", url, "--card", a->f[F_ANA_CARD],
			  "--to", "ben@keycenter.demo", "--in", a->f[F_LETTER], (char *)NULL) == 0,
	     "ana's letter was not sent");
	kh__demo_say("keycard send: ana's card gave the key of her post 1 and moved past it; her host sealed the letter "
		     "and ben's address under it; the center opened it, sealed it under ben's next receive key and "
		     "acknowledged (the card keeps the ack)");

	STEP(post_twice(a, &ps, &psn, &psi, fp_a) == KH_EXIT_OK, "the postscript failed");
	STEP(kh_file_write_new(a->f[F_PS2], (const uint8_t *)"p.p.s.\n", 7, 0644) == KH_OK &&
		     kh__demo_run(log, "ana-pps-send", kh_cmd_keycard, "send", "--center", url, "--card",
				  a->f[F_ANA_CARD], "--to", "ben@keycenter.demo", "--in", a->f[F_PS2], (char *)NULL) == 0,
	     "ana's third post was not sent");
	st = post_raw(a, ps, psn, why, sizeof why);
	free(ps);
	STEP(st == 409 && strcmp(why, "replay") == 0, "the old post was not refused as a replay (%ld %s)", st, why);
	kh__demo_say("replay: ana's post %llu sent twice as a retry is relayed once; sent again after her post %llu, the "
		     "center refuses it (%s): its index is behind her chain",
		     (unsigned long long)psi, (unsigned long long)psi + 1, why);

	STEP(mkdir(a->f[F_INBOX], 0700) == 0 &&
		     kh__demo_run(log, "ben-fetch", kh_cmd_keycard, "fetch", "--center", url, "--card", a->f[F_BEN_CARD],
				  "--out-dir", a->f[F_INBOX], (char *)NULL) == 0,
	     "ben's mailbox was not fetched");
	snprintf(in1, sizeof in1, "%s/1.khm", a->f[F_INBOX]);
	snprintf(in2, sizeof in2, "%s/2.khm", a->f[F_INBOX]);
	snprintf(in3, sizeof in3, "%s/3.khm", a->f[F_INBOX]);
	STEP(kh__demo_run(log, "ben-open-1", kh_cmd_keycard, "open", "--card", a->f[F_BEN_CARD], "--in", in1, "--out",
			  a->f[F_OUT1], (char *)NULL) == 0 &&
		     same_file(a->f[F_OUT1], LETTER "\n"),
	     "ben's letter did not open to ana's bytes");
	kh__demo_say("keycard fetch, open: ben's card signed the center's challenge for his mailbox; three deliveries; "
		     "his card checked the letter's first chunk under its receive key 1 before giving it: \"%.40s...\"",
		     LETTER);
	STEP(ben_key(a, in2, fp_b) == KH_EXIT_OK &&
		     kh__demo_run(log, "ben-open-2", kh_cmd_keycard, "open", "--card", a->f[F_BEN_CARD], "--in", in2,
				  "--out", a->f[F_OUT2], (char *)NULL) == 0 &&
		     same_file(a->f[F_OUT2], PS) &&
		     kh__demo_run(log, "ben-open-3", kh_cmd_keycard, "open", "--card", a->f[F_BEN_CARD], "--in", in3,
				  "--out", a->f[F_OUT3], (char *)NULL) == 0,
	     "ben's other deliveries did not open");
	STEP(strcmp(fp_a, fp_b) != 0, "ana's and ben's keys are the same");
	STEP(kh__demo_run(log, "keycenter-log", kh_cmd_keycenter, "log", "--db", a->f[F_DB], (char *)NULL) == 0,
	     "the relay log could not be read");
	kh__demo_say("two keys: ana's card sealed the postscript under %s..., ben's card opened it under %s... (key "
		     "fingerprints, SHA-256); only the center made both, and both chains have moved past them: "
		     "keycenter log shows serials and indexes, no key",
		     fp_a, fp_b);
	return KH_EXIT_OK;
}

/* The center's identity, both cards enrolled and activated, the service started. */
static int start(struct act *a)
{
	struct kh_keycenter_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	const char *log = a->f[F_LOG], *what = NULL;
	char code_a[KH_KEYCENTER_CODE_SHOWN + 1], code_b[KH_KEYCENTER_CODE_SHOWN + 1];
	kh_err r;

	STEP(kh__demo_run(log, "keycenter-init", kh_cmd_keycenter, "init", "--authority", a->p->authority, "--dir",
			  a->f[F_ID], (char *)NULL) == 0 &&
		     kh__demo_run(log, "issue-ana", kh_cmd_card, "issue", "--authority", a->p->authority, "--role",
				  "keycard", "--out", a->f[F_ANA_CARD], (char *)NULL) == 0 &&
		     kh__demo_run(log, "issue-ben", kh_cmd_card, "issue", "--authority", a->p->authority, "--role",
				  "keycard", "--out", a->f[F_BEN_CARD], (char *)NULL) == 0 &&
		     kh__demo_run(log, "enrol-ana", kh_cmd_keycenter, "enrol", "--dir", a->f[F_ID], "--db", a->f[F_DB],
				  "--card", a->f[F_ANA_CARD], "--address", "ana@keycenter.demo", (char *)NULL) == 0 &&
		     kh__demo_run(log, "enrol-ben", kh_cmd_keycenter, "enrol", "--dir", a->f[F_ID], "--db", a->f[F_DB],
				  "--card", a->f[F_BEN_CARD], "--address", "ben@keycenter.demo", (char *)NULL) == 0 &&
		     code_of(log, "enrol-ana", code_a) && code_of(log, "enrol-ben", code_b),
	     "the key cards could not be enrolled");
	kh__demo_say("keycenter init, enrol: the authority certified a key center; ana's and ben's key cards each drew "
		     "a seed and sealed it to the center's enrolment key; the center keeps their chains sealed at rest "
		     "and printed an access code for each (ana's %s)",
		     code_a);

	cfg.db = a->f[F_DB];
	cfg.dir = a->f[F_ID];
	if ((r = kh_keycenter_service_new(&cfg, &a->svc, &what)) != KH_OK)
		return kh_cli_fail(what ? what : "keycenter", r);
	hcfg.host = "127.0.0.1";
	hcfg.raw_body_limit = kh_keycenter_post_max(KH_KEYCENTER_DOC_DEFAULT);
	if ((r = kh_http_new(&hcfg, &a->h)) != KH_OK || (r = kh_keycenter_service_add_routes(a->svc, a->h)) != KH_OK ||
	    (r = kh_http_start(a->h)) != KH_OK)
		return kh_cli_fail("keycenter", r);
	snprintf(a->url, sizeof a->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(a->h));

	STEP(kh__demo_run(log, "ana-activate", kh_cmd_keycard, "activate", "--center", a->url, "--card",
			  a->f[F_ANA_CARD], "--code", code_a, (char *)NULL) == 0 &&
		     kh__demo_run(log, "ben-activate", kh_cmd_keycard, "activate", "--center", a->url, "--card",
				  a->f[F_BEN_CARD], "--code", code_b, (char *)NULL) == 0,
	     "the key cards could not be activated");
	STEP(kh__demo_refused(log, "ben-activate-wrong", kh_cmd_keycard, "activate", "--center", a->url, "--card",
			      a->f[F_BEN_CARD], "--code", "0000-0000-0000-0000", (char *)NULL),
	     "a wrong access code was taken");
	kh__demo_say("keycard activate: ana and ben activated their cards at %s with their codes (compared in "
		     "constant time; a wrong one is refused, five per 15 minutes)",
		     a->url);
	return KH_EXIT_OK;
}

int kh__demo_keycenter(const struct kh__demo_paths *p)
{
	struct act *a = calloc(1, sizeof *a);
	static const char *const names[F_N] = {"log",          "keycenter",     "keycenter.db",     "ana",
					       "ben",          "ana/ana.card",  "ben/ben.card",     "ana/letter.txt",
					       "ana/pps.txt",  "ben/inbox",     "ben/letter.txt",   "ben/ps.txt",
					       "ben/pps.txt"};
	int rc = KH_EXIT_FAIL;

	if (!a)
		return kh_cli_fail("demo", KH_ERR_NOMEM);
	a->p = p;
	for (int i = 0; i < F_N; i++)
		snprintf(a->f[i], sizeof a->f[i], "%s/%s", p->dir, names[i]);
	if (mkdir(a->f[F_ANA], 0700) != 0 || mkdir(a->f[F_BEN], 0700) != 0 ||
	    kh_file_write_new(a->f[F_LETTER], (const uint8_t *)LETTER "\n", sizeof LETTER, 0644) != KH_OK) {
		rc = kh_cli_fail(a->f[F_ANA], KH_ERR_IO);
		goto out;
	}
	if ((rc = start(a)) == KH_EXIT_OK)
		rc = story(a);
out:
	if (a->h)
		kh_http_stop(a->h);
	kh_http_free(a->h);
	kh_keycenter_service_free(a->svc);
	free(a);
	return rc;
}
