/*
 * keyhole demo, fourth act: escrowed licence keys (docs/protocols/escrow.md), one line per step.
 * The escrow's signing process is a real daemon, `keyhole escrow secmod` started from this very
 * binary; the escrow itself runs in this process (kh_escrow_service on kh_http, 127.0.0.1, an
 * ephemeral port) on the center's database; the operator's, the seller's and the buyer's steps are
 * the real subcommands (kh_cmd_escrow, kh_cmd_seller, kh_cmd_buyer, kh_cmd_card), run in-process
 * with their output in DIR/log/. The buyer's device is a module file of role buyer. Then the
 * split key: two more escrows (identities, signing processes and databases of their own), the
 * key shared among the three and the device, one escrow down, the other two enough.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "cli/escrow.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/store.h"
#include "keyhole/store_escrow.h"

#define SONG "a song only bea's device can open, sold through an escrow that never learns its key"
#define FILM "a film no escrow alone can open: its key is shared among three escrows and bea's device"

enum { F_LOG, F_SELLER, F_BUYER, F_SHOP_TOK, F_BEA_TOK, F_SONG, F_LISTING, F_BASE,
       F_OFFER, F_KHE, F_DEV, F_DEV2, F_BOUGHT, F_LIC, F_OUT, F_OUT2, F_N };

/* One escrow: its identity, signing process, database and HTTP service (in this process). */
struct esc {
	char id[4200], keys[4200], sock[4200], db[4200];
	char url[64];
	pid_t secmod;
	struct kh_escrow_service *svc;
	struct kh_http *h;
};

struct act {
	const struct kh__demo_paths *p;
	char f[F_N][4200];
	struct esc e[3];
};

#define STEP KH_DEMO_STEP

/* `keyhole escrow secmod` as a child process of this one, waited for until its socket is there. */
static int start_secmod(struct esc *e)
{
	char *argv[] = {"keyhole", "escrow", "secmod", "--keys", e->keys, "--socket", e->sock, NULL};
	struct stat st;

	if (kh__demo_spawn(argv, &e->secmod) != 0)
		return KH_EXIT_FAIL;
	for (int i = 0; i < 200; i++) {
		if (stat(e->sock, &st) == 0 && S_ISSOCK(st.st_mode))
			return KH_EXIT_OK;
		usleep(50 * 1000);
	}
	fprintf(stderr, "keyhole: demo: the signing process did not start\n");
	return KH_EXIT_FAIL;
}

/* An account's money as the ledger of the database db has it; -1 when it cannot be read. */
static int64_t available(const char *db, const char *name)
{
	struct kh_store_escrow_account acc;
	struct kh_store *st;
	int64_t v = -1;

	if (kh_store_open(db, &st) != KH_OK)
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

	STEP(kh__demo_run(log, "escrow-shop", kh_cmd_escrow, "account", "add", "--db", a->e[0].db, "--name", "shop",
			  "--currency", "EUR", "--token-out", a->f[F_SHOP_TOK], (char *)NULL) == 0 &&
		     kh__demo_run(log, "escrow-bea", kh_cmd_escrow, "account", "add", "--db", a->e[0].db, "--name", "bea",
				  "--currency", "EUR", "--token-out", a->f[F_BEA_TOK], (char *)NULL) == 0 &&
		     kh__demo_run(log, "escrow-deposit", kh_cmd_escrow, "account", "deposit", "--db", a->e[0].db,
				  "--name", "bea", "--amount", "5000", (char *)NULL) == 0,
	     "the escrow's accounts could not be opened");
	kh__demo_say("escrow: the authority certified an escrow (%s); its listings' RSA keys live only in its signing "
		     "process (keyhole escrow secmod); a seller, shop, and a buyer, bea, with 5000 EUR cents, on %s",
		     kh__demo_value(log, "escrow-init", "escrow", v, sizeof v) ? v : "?", a->e[0].url);

	STEP(kh_file_write_new(a->f[F_SONG], (const uint8_t *)SONG "\n", sizeof SONG, 0644) == KH_OK &&
		     kh__demo_run(log, "seller-list", kh_cmd_seller, "list", "--escrow", a->e[0].url, "--token-file",
				  a->f[F_SHOP_TOK], "--content", "song-1", "--price", "1250", "--out", a->f[F_LISTING],
				  (char *)NULL) == 0 &&
		     kh__demo_run(log, "seller-encrypt", kh_cmd_seller, "encrypt", "--listing", a->f[F_LISTING], "--in",
				  a->f[F_SONG], "--out", a->f[F_BASE], (char *)NULL) == 0,
	     "the seller could not list or encrypt its content");
	kh__demo_say("seller list, encrypt: a listing at 1250 with a key of its own; the song encrypted under a fresh "
		     "K, and K encrypted to the listing's key (RSA-OAEP): the buyer gets both, the escrow neither");

	STEP(kh__demo_run(log, "issue-buyer", kh_cmd_card, "issue", "--authority", a->p->authority, "--role", "buyer",
			  "--out", a->f[F_DEV], (char *)NULL) == 0 &&
		     kh__demo_run(log, "buyer-buy", kh_cmd_buyer, "buy", "--escrow", a->e[0].url, "--token-file",
				  a->f[F_BEA_TOK], "--device", a->f[F_DEV], "--offer", a->f[F_OFFER], "--content",
				  a->f[F_KHE], "--out", a->f[F_BOUGHT], (char *)NULL) == 0,
	     "the purchase failed");
	STEP(available(a->e[0].db, "bea") == 5000 - 1250 && available(a->e[0].db, "shop") == 1250,
	     "the money did not move once");
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
	STEP(kh__demo_run(log, "escrow-audit", kh_cmd_escrow, "audit", "--db", a->e[0].db, (char *)NULL) == 0,
	     "the ledger does not balance");
	kh__demo_say("the licence opens on no other device; escrow audit: every balance recomputed from the ledger's "
		     "entries, deposited = available + held + paid out, to the unit");
	return KH_EXIT_OK;
}

/* Escrow number i (0, 1, 2) of the demo: its files under the demo's directory, the first on the
 * center's database; its identity certified, its signing process and its service started. */
static int escrow_start(struct act *a, int i)
{
	struct kh_escrow_service_config cfg = {0};
	struct kh_http_config hcfg = {0};
	struct esc *e = &a->e[i];
	const char *dir = a->p->dir, *what = NULL;
	char step[32];
	kh_err r;

	if (i == 0) {
		snprintf(e->id, sizeof e->id, "%s/escrow", dir);
		snprintf(e->keys, sizeof e->keys, "%s/escrow-keys", dir);
		snprintf(e->sock, sizeof e->sock, "%s/secmod.sock", dir);
		snprintf(e->db, sizeof e->db, "%s/center.db", dir);
	} else {
		snprintf(e->id, sizeof e->id, "%s/escrow%d", dir, i + 1);
		snprintf(e->keys, sizeof e->keys, "%s/escrow%d-keys", dir, i + 1);
		snprintf(e->sock, sizeof e->sock, "%s/secmod%d.sock", dir, i + 1);
		snprintf(e->db, sizeof e->db, "%s/escrow%d.db", dir, i + 1);
	}
	snprintf(step, sizeof step, i ? "escrow%d-init" : "escrow-init", i + 1);
	if (kh__demo_run(a->f[F_LOG], step, kh_cmd_escrow, "init", "--authority", a->p->authority, "--dir", e->id,
			 (char *)NULL) != 0 ||
	    start_secmod(e) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	cfg.db = e->db;
	cfg.dir = e->id;
	cfg.secmod = e->sock;
	if ((r = kh_escrow_service_new(&cfg, &e->svc, &what)) != KH_OK)
		return kh_cli_fail(what ? what : "escrow", r);
	hcfg.host = "127.0.0.1";
	if ((r = kh_http_new(&hcfg, &e->h)) != KH_OK || (r = kh_escrow_service_add_routes(e->svc, e->h)) != KH_OK ||
	    (r = kh_http_start(e->h)) != KH_OK)
		return kh_cli_fail("escrow", r);
	snprintf(e->url, sizeof e->url, "http://127.0.0.1:%u", (unsigned)kh_http_port(e->h));
	return KH_EXIT_OK;
}

/* The escrow's service and signing process stopped (what was started of them). */
static void escrow_stop(struct esc *e)
{
	if (e->h)
		kh_http_stop(e->h);
	kh_http_free(e->h);
	e->h = NULL;
	kh_escrow_service_free(e->svc);
	e->svc = NULL;
	kh__demo_reap(&e->secmod);
}

/* DIR/NAME into a buffer of the act's size. */
#define PATHF(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

static int split_story(struct act *a)
{
	const char *log = a->f[F_LOG], *dir = a->p->dir;
	char tok[3][4200], btok[3][4200], listing[3][4200], offer[3][4200], part[3][4200], step[32];
	char lists[3 * 4200 + 3], film[4200], base[4200], khe[4200], share[4200], pem[4200], grant[4200];
	char parts[2 * 4200 + 2], urls[160], toks[2 * 4200 + 2], lic[4200], out[4200], lbase[4200];
	uint8_t *o = NULL;
	size_t n = 0;

	for (int i = 1; i < 3; i++)
		STEP(escrow_start(a, i) == KH_EXIT_OK, "escrow %d did not start", i + 1);
	for (int i = 0; i < 3; i++) {
		PATHF(tok[i], "%s/shop/shop%d.token", dir, i + 1);
		PATHF(btok[i], "%s/bea/bea%d.token", dir, i + 1);
		PATHF(listing[i], "%s/shop/film%d.listing", dir, i + 1);
		PATHF(offer[i], "%s/shop/film.%d.offer", dir, i + 1);
		PATHF(part[i], "%s/bea/bea-film%d", dir, i + 1);
	}
	/* escrow 1's accounts are the song's; 2 and 3 open theirs */
	memcpy(tok[0], a->f[F_SHOP_TOK], sizeof tok[0]);
	memcpy(btok[0], a->f[F_BEA_TOK], sizeof btok[0]);
	for (int i = 1; i < 3; i++) {
		snprintf(step, sizeof step, "escrow%d-accounts", i + 1);
		STEP(kh__demo_run(log, step, kh_cmd_escrow, "account", "add", "--db", a->e[i].db, "--name", "shop",
				  "--currency", "EUR", "--token-out", tok[i], (char *)NULL) == 0 &&
			     kh__demo_run(log, step, kh_cmd_escrow, "account", "add", "--db", a->e[i].db, "--name", "bea",
					  "--currency", "EUR", "--token-out", btok[i], (char *)NULL) == 0 &&
			     kh__demo_run(log, step, kh_cmd_escrow, "account", "deposit", "--db", a->e[i].db, "--name",
					  "bea", "--amount", "5000", (char *)NULL) == 0,
		     "escrow %d's accounts could not be opened", i + 1);
	}
	PATHF(film, "%s/shop/film.txt", dir);
	PATHF(base, "%s/shop/film", dir);
	PATHF(khe, "%s/shop/film.khe", dir);
	PATHF(share, "%s/shop/film.share", dir);
	STEP(kh_file_write_new(film, (const uint8_t *)FILM "\n", sizeof FILM, 0644) == KH_OK, "%s", film);
	for (int i = 0; i < 3; i++) {
		snprintf(step, sizeof step, "seller-list-film%d", i + 1);
		STEP(kh__demo_run(log, step, kh_cmd_seller, "list", "--escrow", a->e[i].url, "--token-file", tok[i],
				  "--content", "film-1", "--price", "400", "--out", listing[i], (char *)NULL) == 0,
		     "the film could not be listed at escrow %d", i + 1);
	}
	snprintf(lists, sizeof lists, "%s,%s,%s", listing[0], listing[1], listing[2]);
	STEP(kh__demo_run(log, "seller-split", kh_cmd_seller, "split", "--listings", lists, "--need", "2", "--in", film,
			  "--out", base, (char *)NULL) == 0,
	     "the seller could not split the film's key");
	kh__demo_say("split key: two more escrows of their own (%s, %s); shop lists film-1 at 400 at all three and "
		     "splits its key (Shamir): bea's device's share and any 2 escrows' open it; 2 escrows alone learn "
		     "nothing of it",
		     a->e[1].url, a->e[2].url);

	PATHF(pem, "%s/bea/bea.pem", dir);
	PATHF(grant, "%s/bea/bea-film.grant", dir);
	STEP(kh__demo_run(log, "buyer-cert", kh_cmd_buyer, "cert", "--device", a->f[F_DEV], "--out", pem, (char *)NULL) ==
			     0 &&
		     kh__demo_run(log, "seller-grant", kh_cmd_seller, "grant", "--share", share, "--content", khe,
				  "--cert", pem, "--authority", a->p->authority, "--out", grant, (char *)NULL) == 0,
	     "the device's share could not be granted");
	kh__demo_say("seller grant: the device's share sealed (HPKE) to the pairing key of bea's device, for this film "
		     "alone; the seller keeps it for the next buyer");

	escrow_stop(&a->e[1]);
	STEP(kh__demo_run(log, "buyer-buy-film1", kh_cmd_buyer, "buy", "--escrow", a->e[0].url, "--token-file", btok[0],
			  "--device", a->f[F_DEV], "--offer", offer[0], "--content", khe, "--out", part[0],
			  (char *)NULL) == 0 &&
		     kh__demo_run(log, "buyer-buy-film3", kh_cmd_buyer, "buy", "--escrow", a->e[2].url, "--token-file",
				  btok[2], "--device", a->f[F_DEV], "--offer", offer[2], "--content", khe, "--out",
				  part[2], (char *)NULL) == 0,
	     "the shares could not be bought");
	kh__demo_say("escrow 2 goes down; buyer buy at escrows 1 and 3: each answers on a blinded share, the device "
		     "unblinds and keeps it, unsettled; 400 held at each");

	snprintf(parts, sizeof parts, "%s,%s", part[0], part[2]);
	snprintf(urls, sizeof urls, "%s,%s", a->e[0].url, a->e[2].url);
	snprintf(toks, sizeof toks, "%s,%s", btok[0], btok[2]);
	PATHF(lbase, "%s/bea/bea-film", dir);
	PATHF(lic, "%s/bea/bea-film.lic", dir);
	PATHF(out, "%s/bea/film.txt", dir);
	STEP(kh__demo_run(log, "buyer-combine", kh_cmd_buyer, "combine", "--device", a->f[F_DEV], "--grant", grant,
			  "--content", khe, "--parts", parts, "--escrow", urls, "--token-file", toks, "--out", lbase,
			  (char *)NULL) == 0,
	     "the shares did not combine");
	STEP(available(a->e[0].db, "shop") == 1250 + 400 && available(a->e[2].db, "shop") == 400 &&
		     available(a->e[0].db, "bea") == 5000 - 1250 - 400 && available(a->e[2].db, "bea") == 5000 - 400 &&
		     available(a->e[1].db, "bea") == 5000,
	     "the money did not move once at each escrow");
	kh__demo_say("buyer combine: the device recovered K from its share and escrows 1 and 3's, checked the film's "
		     "commitment and said delivered to both: each pays shop 400; escrow 2 moved nothing");

	STEP(kh__demo_run(log, "buyer-open-film", kh_cmd_buyer, "open", "--device", a->f[F_DEV], "--licence", lic,
			  "--content", khe, "--out", out, (char *)NULL) == 0,
	     "the film did not open");
	STEP(kh_file_read(out, 4096, &o, &n) == KH_OK && n == sizeof FILM && memcmp(o, FILM, n - 1) == 0,
	     "the film opened to other bytes");
	kh_file_free(o, n);
	for (int i = 0; i < 3; i++) {
		snprintf(step, sizeof step, "escrow%d-audit", i + 1);
		STEP(kh__demo_run(log, step, kh_cmd_escrow, "audit", "--db", a->e[i].db, (char *)NULL) == 0,
		     "escrow %d's ledger does not balance", i + 1);
	}
	kh__demo_say("buyer open: \"%.40s...\"; the three ledgers audited", FILM);
	return KH_EXIT_OK;
}

int kh__demo_escrow(const struct kh__demo_paths *p)
{
	struct act *a = calloc(1, sizeof *a);
	static const char *const names[F_N] = {"log",
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
	int rc = KH_EXIT_FAIL;

	if (!a)
		return kh_cli_fail("demo", KH_ERR_NOMEM);
	a->p = p;
	for (int i = 0; i < F_N; i++)
		snprintf(a->f[i], sizeof a->f[i], "%s/%s", p->dir, names[i]);
	if (mkdir(a->f[F_SELLER], 0700) != 0 || mkdir(a->f[F_BUYER], 0700) != 0) {
		rc = kh_cli_fail(a->f[F_BUYER], KH_ERR_IO);
		goto out;
	}
	if (escrow_start(a, 0) != KH_EXIT_OK)
		goto out;
	if ((rc = story(a)) == KH_EXIT_OK)
		rc = split_story(a);
out:
	for (int i = 0; i < 3; i++)
		escrow_stop(&a->e[i]);
	free(a);
	return rc;
}
