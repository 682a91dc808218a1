/*
 * keyhole demo, third act: program distribution (docs/protocols/distribution.md), one line per
 * step. The distribution server runs in this process (kh_dist_service on kh_http, 127.0.0.1, an
 * ephemeral port) on the center's database; each buyer's processor is a real daemon, `keyhole
 * processor serve` started from this very binary; the operator's and the buyer's steps are the
 * real subcommands (kh_cmd_dist, kh_cmd_card), run in-process with their output in DIR/log/.
 * The buyer's files live in DIR/buyer: the test of "no plaintext on the buyer's disk" is a scan
 * of that directory for the program's text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "keyhole/distsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/store.h"
#include "keyhole/store_dist.h"
#include "keyhole/device.h"
#include "keyhole/transport.h"

#define PRICE "250"
#define DEPOSIT "1000"
#define LINE "hello from a program only this processor can run"

enum { F_LOG, F_DIST, F_MAN, F_PROG, F_PW, F_P1, F_P2, F_S1, F_S2, F_BUYER, F_BASE, F_PKG, F_LIC, F_RCPT, F_DB, F_N };

struct act {
	const struct kh__demo_paths *p;
	char f[F_N][4200];
	char url[64];
	pid_t daemon[2];
};

static int put(const char *path, const char *text, mode_t mode)
{
	kh_err r = kh_file_write_new(path, (const uint8_t *)text, strlen(text), mode);

	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(path, r);
}

/* `keyhole processor serve` for module on sock, as a child process of this one. */
static int start_processor(struct act *a, int k, const char *module, const char *sock)
{
	char *argv[] = {"keyhole", "processor", "serve", "--module", (char *)module, "--socket", (char *)sock, NULL};
	struct kh_transport t;

	if (kh__demo_spawn(argv, &a->daemon[k]) != 0)
		return KH_EXIT_FAIL;
	for (int i = 0; i < 100; i++) {
		if (kh_transport_unix(&t, sock) == KH_OK) {
			kh_transport_close(&t);
			return KH_EXIT_OK;
		}
		usleep(50 * 1000);
	}
	fprintf(stderr, "keyhole: demo: the processor daemon on %s did not start\n", sock);
	return KH_EXIT_FAIL;
}

static void stop_processors(struct act *a)
{
	for (int k = 0; k < 2; k++)
		kh__demo_reap(&a->daemon[k]);
}

struct bal {
	int64_t balance;
};

static kh_err got_balance(void *arg, const struct kh_store_dist_account *acc)
{
	((struct bal *)arg)->balance = acc->balance;
	return KH_OK;
}

static int64_t balance_of(struct act *a)
{
	struct kh_store *st;
	struct bal b = {-1};

	if (kh_store_open(a->f[F_DB], &st) != KH_OK)
		return -1;
	if (kh_store_dist_account_find(st, "alice", got_balance, &b) != KH_OK)
		b.balance = -1;
	kh_store_close(st);
	return b.balance;
}

/* 1 when a file of dir holds text (the buyer's files: none may). */
static int on_disk(const char *dir, const char *text)
{
	char cmd[4400];

	snprintf(cmd, sizeof cmd, "grep -rqF -- '%s' '%s'", text, dir);
	return system(cmd) == 0;
}

#define STEP KH_DEMO_STEP

static int story(struct act *a)
{
	const char *log = a->f[F_LOG];
	char v[256], out[4300];
	uint8_t *o = NULL;
	size_t n = 0;

	STEP(put(a->f[F_MAN], "name: hello\nversion: 1\nkind: script\ninterpreter: /bin/sh\n", 0644) == 0 &&
		     put(a->f[F_PROG], "echo \"" LINE "\"\n", 0644) == 0 &&
		     kh__demo_run(log, "dist-publish", kh_cmd_dist, "publish", "--db", a->f[F_DB], "--manifest",
				  a->f[F_MAN], "--program", a->f[F_PROG], "--price", PRICE, (char *)NULL) == 0 &&
		     put(a->f[F_PW], "correct horse battery\n", 0600) == 0 &&
		     kh__demo_run(log, "dist-account", kh_cmd_dist, "account", "add", "--db", a->f[F_DB], "--name",
				  "alice", "--password-file", a->f[F_PW], (char *)NULL) == 0 &&
		     kh__demo_run(log, "dist-deposit", kh_cmd_dist, "account", "deposit", "--db", a->f[F_DB], "--name",
				  "alice", "--amount", DEPOSIT, (char *)NULL) == 0,
	     "the catalogue and the account could not be set up");
	kh__demo_say("dist: the authority certified a distribution server (%s); it sells 'hello' v1 at " PRICE
		     " to alice (balance " DEPOSIT "), on %s",
		     kh__demo_value(log, "dist-init", "distributor", v, sizeof v) ? v : "?", a->url);

	STEP(kh__demo_run(log, "issue-p1", kh_cmd_card, "issue", "--authority", a->p->authority, "--role", "processor",
			  "--out", a->f[F_P1], (char *)NULL) == 0 &&
		     kh__demo_run(log, "issue-p2", kh_cmd_card, "issue", "--authority", a->p->authority, "--role",
				  "processor", "--out", a->f[F_P2], (char *)NULL) == 0 &&
		     start_processor(a, 0, a->f[F_P1], a->f[F_S1]) == 0 && start_processor(a, 1, a->f[F_P2], a->f[F_S2]) == 0,
	     "the processors could not be issued or started");
	kh__demo_say("processors: alice's and another buyer's, each issued by the authority, each its own daemon "
		     "(keyhole processor serve)");

	snprintf(out, sizeof out, "unix:%s", a->f[F_S1]);
	STEP(kh__demo_run(log, "dist-buy", kh_cmd_dist, "buy", "--server", a->url, "--user", "alice", "--password-file",
			  a->f[F_PW], "--processor", out, "--program", "1", "--out", a->f[F_BASE], (char *)NULL) == 0,
	     "dist buy failed");
	STEP(balance_of(a) == 1000 - 250, "the purchase was not charged once");
	STEP(!on_disk(a->f[F_BUYER], LINE), "the program's text reached the buyer's disk");
	kh__demo_say("dist buy: alice's PC relayed hello, proof, answer and key between server and processor, paid "
		     PRICE " (balance 750) and stored the package and its licence: no plaintext on its disk");

	STEP(kh__demo_run(log, "dist-run", kh_cmd_dist, "run", "--processor", out, "--package", a->f[F_PKG],
			  "--licence", a->f[F_LIC], (char *)NULL) == 0,
	     "dist run failed");
	snprintf(out, sizeof out, "%s/dist-run.out", log);
	STEP(kh_file_read(out, 65536, &o, &n) == KH_OK && n && memmem(o, n, LINE, strlen(LINE)), "the program did not run");
	kh_file_free(o, n);
	snprintf(out, sizeof out, "unix:%s", a->f[F_S1]);
	kh__demo_say("dist run: the processor decrypted it chunk by chunk into sealed memory and ran it: \"" LINE "\"");

	STEP(unlink(a->f[F_PKG]) == 0 && unlink(a->f[F_LIC]) == 0, "could not remove the package");
	STEP(kh__demo_run(log, "dist-get", kh_cmd_dist, "get", "--server", a->url, "--user", "alice", "--password-file",
			  a->f[F_PW], "--processor", out, "--receipt", a->f[F_RCPT], "--out", a->f[F_BASE], (char *)NULL) == 0 &&
		     kh__demo_run(log, "dist-run-2", kh_cmd_dist, "run", "--processor", out, "--package", a->f[F_PKG],
				  "--licence", a->f[F_LIC], (char *)NULL) == 0,
	     "fetching again on the receipt failed");
	STEP(balance_of(a) == 750, "fetching again charged something");
	kh__demo_say("dist get: the package and licence lost, fetched again on the signed receipt and run: nothing "
		     "charged (balance still 750)");

	snprintf(out, sizeof out, "unix:%s", a->f[F_S2]);
	STEP(kh__demo_refused(log, "dist-run-other", kh_cmd_dist, "run", "--processor", out, "--package",
			      a->f[F_PKG], "--licence", a->f[F_LIC], (char *)NULL),
	     "a copy ran on another processor");
	snprintf(out, sizeof out, "%s/dist-run-other.err", log);
	STEP(kh_file_read(out, 4096, &o, &n) == KH_OK && n, "the refusal said nothing");
	snprintf(v, sizeof v, "%.*s", (int)n, (const char *)o); /* "keyhole: dist run: WHO: WHY" */
	v[strcspn(v, "\n")] = 0;
	kh__demo_say("dist run on the other buyer's processor: a copy of the package and licence is refused (%s)",
		     strrchr(v, ':') ? strrchr(v, ':') + 2 : v);
	kh_file_free(o, n);
	return KH_EXIT_OK;
}

int kh__demo_dist(const struct kh__demo_paths *p)
{
	struct kh_dist_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_dist_service *svc = NULL;
	struct kh_http *h = NULL;
	struct act *a = calloc(1, sizeof *a);
	static const char *const names[F_N] = {"log",	   "dist",	"hello.manifest", "hello.sh",
					       "alice.pw", "proc1.card", "proc2.card",	   "proc1.sock",
					       "proc2.sock", "buyer",	"buyer/hello",	   "buyer/hello.khpk",
					       "buyer/hello.lic", "buyer/hello.receipt", "center.db"};
	const char *what = NULL;
	int rc = KH_EXIT_FAIL;
	kh_err r;

	if (!a)
		return kh_cli_fail("demo", KH_ERR_NOMEM);
	a->p = p;
	for (int i = 0; i < F_N; i++)
		snprintf(a->f[i], sizeof a->f[i], "%s/%s", p->dir, names[i]);
	if (mkdir(a->f[F_BUYER], 0700) != 0) {
		rc = kh_cli_fail(a->f[F_BUYER], KH_ERR_IO);
		goto out;
	}
	/* the server's identity first: it starts with it */
	if (kh__demo_run(a->f[F_LOG], "dist-init", kh_cmd_dist, "init", "--authority", p->authority, "--dir",
			 a->f[F_DIST], (char *)NULL) != 0)
		goto out;
	cfg.db = a->f[F_DB];
	cfg.dir = a->f[F_DIST];
	if ((r = kh_dist_service_new(&cfg, &svc, &what)) != KH_OK) {
		rc = kh_cli_fail(what ? what : "distribution server", r);
		goto out;
	}
	hcfg.host = "127.0.0.1";
	if ((r = kh_http_new(&hcfg, &h)) != KH_OK || (r = kh_dist_service_add_routes(svc, h)) != KH_OK ||
	    (r = kh_http_start(h)) != KH_OK) {
		rc = kh_cli_fail("distribution server", r);
		goto out;
	}
	snprintf(a->url, sizeof a->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(h));
	rc = story(a);
out:
	stop_processors(a);
	if (h)
		kh_http_stop(h);
	kh_http_free(h);
	kh_dist_service_free(svc);
	free(a);
	return rc;
}
