/*
 * keyhole demo, fourth act: escrowed licence keys (docs/protocols/escrow.md), one line per step.
 * The escrow's signing process is a real daemon, `keyhole escrow secmod` started from this very
 * binary; the escrow itself runs in this process (kh_escrow_service on kh_http, 127.0.0.1, an
 * ephemeral port) on the center's database; the operator's, the seller's and the buyer's steps are
 * the real subcommands (kh_cmd_escrow, kh_cmd_seller, kh_cmd_buyer, kh_cmd_card), run in-process
 * with their output in DIR/log/. The buyer's device is a module file of role buyer.
 */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "cli/escrow.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/store.h"
#include "keyhole/store_escrow.h"

extern char **environ;

#define SONG "a song only bea's device can open, sold through an escrow that never learns its key"

enum { F_LOG, F_ID, F_KEYS, F_SOCK, F_DB, F_SELLER, F_BUYER, F_SHOP_TOK, F_BEA_TOK, F_SONG, F_LISTING, F_BASE,
       F_OFFER, F_KHE, F_DEV, F_DEV2, F_BOUGHT, F_LIC, F_OUT, F_OUT2, F_N };

struct act {
	const struct kh__demo_paths *p;
	char f[F_N][4200];
	char url[64];
	pid_t secmod;
};

#define STEP(cond, ...)                                                                            \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "keyhole: demo: " __VA_ARGS__);                            \
			fputc('\n', stderr);                                                       \
			return KH_EXIT_FAIL;                                                       \
		}                                                                                  \
	} while (0)

/* `keyhole escrow secmod` as a child process of this one, waited for until its socket is there. */
static int start_secmod(struct act *a)
{
	char self[4200];
	char *argv[] = {"keyhole", "escrow", "secmod", "--keys", a->f[F_KEYS], "--socket", a->f[F_SOCK], NULL};
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	struct stat st;

	if (n <= 0)
		return kh_cli_fail("/proc/self/exe", KH_ERR_IO);
	self[n] = 0;
	if (posix_spawn(&a->secmod, self, NULL, NULL, argv, environ) != 0) {
		a->secmod = 0;
		return kh_cli_fail("escrow secmod", KH_ERR_IO);
	}
	for (int i = 0; i < 200; i++) {
		if (stat(a->f[F_SOCK], &st) == 0 && S_ISSOCK(st.st_mode))
			return KH_EXIT_OK;
		usleep(50 * 1000);
	}
	fprintf(stderr, "keyhole: demo: the signing process did not start\n");
	return KH_EXIT_FAIL;
}

/* An account's money as the ledger has it; -1 when it cannot be read. */
static int64_t available(struct act *a, const char *name)
{
	struct kh_store_escrow_account acc;
	struct kh_store *st;
	int64_t v = -1;

	if (kh_store_open(a->f[F_DB], &st) != KH_OK)
		return -1;
	if (kh_store_escrow_account_find(st, name, &acc) == KH_OK)
		v = acc.available;
	kh_store_close(st);
	return v;
}

static int story(struct act *a)
{
	const char *log = a->f[F_LOG];
	char v[256];
	uint8_t *o = NULL;
	size_t n = 0;

	STEP(kh__demo_run(log, "escrow-shop", kh_cmd_escrow, "account", "add", "--db", a->f[F_DB], "--name", "shop",
			  "--currency", "EUR", "--token-out", a->f[F_SHOP_TOK], (char *)NULL) == 0 &&
		     kh__demo_run(log, "escrow-bea", kh_cmd_escrow, "account", "add", "--db", a->f[F_DB], "--name", "bea",
				  "--currency", "EUR", "--token-out", a->f[F_BEA_TOK], (char *)NULL) == 0 &&
		     kh__demo_run(log, "escrow-deposit", kh_cmd_escrow, "account", "deposit", "--db", a->f[F_DB],
				  "--name", "bea", "--amount", "5000", (char *)NULL) == 0,
	     "the escrow's accounts could not be opened");
	kh__demo_say("escrow: the authority certified an escrow (%s); its listings' RSA keys live only in its signing "
		     "process (keyhole escrow secmod); a seller, shop, and a buyer, bea, with 5000 EUR cents, on %s",
		     kh__demo_value(log, "escrow-init", "escrow", v, sizeof v) ? v : "?", a->url);

	STEP(kh_file_write_new(a->f[F_SONG], (const uint8_t *)SONG "\n", sizeof SONG, 0644) == KH_OK &&
		     kh__demo_run(log, "seller-list", kh_cmd_seller, "list", "--escrow", a->url, "--token-file",
				  a->f[F_SHOP_TOK], "--content", "song-1", "--price", "1250", "--out", a->f[F_LISTING],
				  (char *)NULL) == 0 &&
		     kh__demo_run(log, "seller-encrypt", kh_cmd_seller, "encrypt", "--listing", a->f[F_LISTING], "--in",
				  a->f[F_SONG], "--out", a->f[F_BASE], (char *)NULL) == 0,
	     "the seller could not list or encrypt its content");
	kh__demo_say("seller list, encrypt: a listing at 1250 with a key of its own; the song encrypted under a fresh "
		     "K, and K encrypted to the listing's key (RSA-OAEP): the buyer gets both, the escrow neither");

	STEP(kh__demo_run(log, "issue-buyer", kh_cmd_card, "issue", "--authority", a->p->authority, "--role", "buyer",
			  "--out", a->f[F_DEV], (char *)NULL) == 0 &&
		     kh__demo_run(log, "buyer-buy", kh_cmd_buyer, "buy", "--escrow", a->url, "--token-file",
				  a->f[F_BEA_TOK], "--device", a->f[F_DEV], "--offer", a->f[F_OFFER], "--content",
				  a->f[F_KHE], "--out", a->f[F_BOUGHT], (char *)NULL) == 0,
	     "the purchase failed");
	STEP(available(a, "bea") == 5000 - 1250 && available(a, "shop") == 1250, "the money did not move once");
	kh__demo_say("buyer buy: bea's device blinded K's cipher with r only it knows; the escrow held 1250, answered "
		     "on the blinded value; the device unblinded, checked m^e = c and the content's commitment, and "
		     "said delivered: shop is paid 1250");

	STEP(kh__demo_run(log, "buyer-open", kh_cmd_buyer, "open", "--device", a->f[F_DEV], "--licence", a->f[F_LIC],
			  "--content", a->f[F_KHE], "--out", a->f[F_OUT], (char *)NULL) == 0,
	     "the content did not open");
	STEP(kh_file_read(a->f[F_OUT], 4096, &o, &n) == KH_OK && n == sizeof SONG && memcmp(o, SONG, n - 1) == 0,
	     "the content opened to other bytes");
	kh_file_free(o, n);
	kh__demo_say("buyer open: the device decrypted the song chunk by chunk: \"%.40s...\"", SONG);

	STEP(kh__demo_run(log, "issue-other", kh_cmd_card, "issue", "--authority", a->p->authority, "--role", "buyer",
			  "--out", a->f[F_DEV2], (char *)NULL) == 0 &&
		     kh__demo_refused(log, "buyer-open-other", kh_cmd_buyer, "open", "--device", a->f[F_DEV2],
				      "--licence", a->f[F_LIC], "--content", a->f[F_KHE], "--out", a->f[F_OUT2],
				      (char *)NULL),
	     "the licence opened on another device");
	STEP(access(a->f[F_OUT2], F_OK) != 0, "a refused open left a file");
	STEP(kh__demo_run(log, "escrow-audit", kh_cmd_escrow, "audit", "--db", a->f[F_DB], (char *)NULL) == 0,
	     "the ledger does not balance");
	kh__demo_say("the licence opens on no other device; escrow audit: every balance recomputed from the ledger's "
		     "entries, deposited = available + held + paid out, to the unit");
	return KH_EXIT_OK;
}

int kh__demo_escrow(const struct kh__demo_paths *p)
{
	struct kh_escrow_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_escrow_service *svc = NULL;
	struct kh_http *h = NULL;
	struct act *a = calloc(1, sizeof *a);
	static const char *const names[F_N] = {"log",
					       "escrow",
					       "escrow-keys",
					       "secmod.sock",
					       "center.db",
					       "shop",
					       "bea",
					       "shop/shop.token",
					       "bea/bea.token",
					       "shop/song.txt",
					       "shop/song.listing",
					       "shop/song",
					       "shop/song.offer",
					       "shop/song.khe",
					       "bea/bea.card",
					       "bea/other.card",
					       "bea/bea-song",
					       "bea/bea-song.lic",
					       "bea/song.txt",
					       "bea/stolen.txt"};
	const char *what = NULL;
	int rc = KH_EXIT_FAIL;
	kh_err r;

	if (!a)
		return kh_cli_fail("demo", KH_ERR_NOMEM);
	a->p = p;
	for (int i = 0; i < F_N; i++)
		snprintf(a->f[i], sizeof a->f[i], "%s/%s", p->dir, names[i]);
	if (mkdir(a->f[F_SELLER], 0700) != 0 || mkdir(a->f[F_BUYER], 0700) != 0) {
		rc = kh_cli_fail(a->f[F_BUYER], KH_ERR_IO);
		goto out;
	}
	if (kh__demo_run(a->f[F_LOG], "escrow-init", kh_cmd_escrow, "init", "--authority", p->authority, "--dir",
			 a->f[F_ID], (char *)NULL) != 0 ||
	    start_secmod(a) != KH_EXIT_OK)
		goto out;
	cfg.db = a->f[F_DB];
	cfg.dir = a->f[F_ID];
	cfg.secmod = a->f[F_SOCK];
	if ((r = kh_escrow_service_new(&cfg, &svc, &what)) != KH_OK) {
		rc = kh_cli_fail(what ? what : "escrow", r);
		goto out;
	}
	hcfg.host = "127.0.0.1";
	if ((r = kh_http_new(&hcfg, &h)) != KH_OK || (r = kh_escrow_service_add_routes(svc, h)) != KH_OK ||
	    (r = kh_http_start(h)) != KH_OK) {
		rc = kh_cli_fail("escrow", r);
		goto out;
	}
	snprintf(a->url, sizeof a->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(h));
	rc = story(a);
out:
	if (h)
		kh_http_stop(h);
	kh_http_free(h);
	kh_escrow_service_free(svc);
	if (a->secmod > 0) {
		kill(a->secmod, SIGTERM);
		waitpid(a->secmod, NULL, 0);
	}
	free(a);
	return rc;
}
