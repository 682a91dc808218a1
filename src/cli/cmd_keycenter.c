/*
 * keyhole keycenter: the key center of seed 004 (docs/protocols/keycenter.md,
 * include/keyhole/keycentersvc.h) — `init` (its identity, certified by the authority), `enrol`
 * (the personalisation station: a key card's seed sealed to the center, its chains stored, its
 * access code shown once), `block`, `list` and `log` on the store directly, and `serve` (its
 * HTTP API). Card serials are printed and read as unique addresses are: 8 hexadecimal digits.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keycentersvc.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"
#include "keyhole/store_keycenter.h"

#define KC_LISTEN "127.0.0.1:8492"
#define KC_OPEN_RATE 20u
#define KC_OPEN_BURST 100u

enum { O_DB = 256, O_DIR, O_KEY, O_ADDRESS, O_REPLACES, O_JSON, O_WINDOW, O_MAXDOC };

/* ---------------------------------------------------------------- init */

static const char init_help[] =
	"usage: keyhole keycenter init --authority DIR --dir DIR\n"
	"\n"
	"Make the key center's identity in DIR (created, mode 0700): its Ed25519 signing key\n"
	"(keycenter.key, mode 0600), made here and never shown to the authority, from which every\n"
	"other key of the center derives (the key that seals card states at rest, the access code\n"
	"and session keys, the enrolment key cards seal their seeds to); its certificate from the\n"
	"authority with role keycenter (keycenter.crt) and the authority's root (root.crt). Prints\n"
	"'keycenter SERIAL'. Refuses a DIR that holds a key already.\n"
	"\n"
	"  -a, --authority DIR  the operator authority that certifies it\n"
	"      --dir DIR        the key center's directory\n";

static int cmd_init(int argc, char **argv)
{
	return kh_cli_identity_init("keycenter init", init_help, KH_ROLE_KEYCENTER, argc, argv);
}

/* ---------------------------------------------------------------- enrol */

static const char enrol_help[] =
	"usage: keyhole keycenter enrol --dir DIR --db DB --card SPEC [--key FILE] --address ADDR\n"
	"           [--replaces SERIAL]\n"
	"\n"
	"The personalisation station: check the key card's signing certificate (our authority's,\n"
	"role keycard), give the card the center's certificate and enrolment key (KC ENROL), open\n"
	"the seed it sealed to the center, store both of its key chains sealed under the center's\n"
	"key and register it under ADDR, not yet active. Prints 'enrolled keycard SERIAL as ADDR;\n"
	"access code: XXXX-XXXX-XXXX-XXXX' (SERIAL: 8 hexadecimal digits, as 'card info' prints the\n"
	"card's unique address). The access code activates the card (POST /v1/activate); it is\n"
	"shown this once and kept only as its MAC. Refuses an address another card has, a card\n"
	"enrolled already (here or with another key center), and writes nothing then.\n"
	"\n"
	"      --dir DIR          the key center's identity (keyhole keycenter init)\n"
	"      --db DB            the database: an SQLite file (made if missing) or a postgresql:// URL\n"
	"  -c, --card SPEC        the key card: a module file, unix:PATH or pcsc:READER\n"
	"      --key FILE         the card file's root key (default: beside it)\n"
	"      --address ADDR     the card's address: 1 to 64 of a-z 0-9 . _ + - and one @\n"
	"      --replaces SERIAL  the card this one replaces: blocked, its address and the messages\n"
	"                         waiting for it moved to this card (sealed again for it)\n";

/* The card's signing certificate (GET CERT P1=1) into der. */
static kh_err card_cert(struct kh_transport *t, uint8_t der[static KH_CERT_MAX], size_t *n)
{
	uint16_t sw = 0;

	return kh_host_apdu(t, KH_INS_GET_CERT, 1, NULL, 0, der, KH_CERT_MAX, n, &sw);
}

struct enrol_args {
	const char *dir, *db, *card, *key, *address;
	uint64_t replaces;
};

/* The card's part: its certificate checked, KC ENROL answered; then the center's, in one transaction. */
static int enrol_card(const struct enrol_args *a, const struct kh_keycenter *kc, struct kh_store *st)
{
	uint8_t der[KH_CERT_MAX], rec[KH_KC_ENROLKEY_LEN], sealed[KH_KC_SEALED_SEED_LEN];
	char what[4200], code[KH_KEYCENTER_CODE_SHOWN + 1];
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	const uint8_t *cert;
	size_t n = 0, certlen = 0;
	uint64_t serial = 0, card = 0;
	kh_err r;

	if ((r = kh_cli_open_module(a->card, a->key, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	cert = kh_keycenter_cert(kc, &certlen);
	if ((r = card_cert(&t, der, &n)) != KH_OK ||
	    (r = kh_keycenter_card_cert(kc, der, n, (int64_t)time(NULL), &serial)) != KH_OK ||
	    (r = kh_keycenter_enrolkey(kc, rec)) != KH_OK ||
	    (r = kh_keycard_enrol(&t, cert, certlen, rec, &card, sealed)) != KH_OK)
		goto out;
	if (card != serial) {
		r = KH_ERR_CERT; /* the card answers for another serial than its certificate's */
		goto out;
	}
	{
		struct kh_keycenter_enrolment e = {serial, sealed, der, n, a->address, a->replaces};
		if ((r = kh_keycenter_enrol(kc, st, &e, (int64_t)time(NULL), code)) != KH_OK)
			goto out;
	}
	printf("enrolled keycard %08llX as %s; access code: %s\n", (unsigned long long)serial, a->address, code);
	kh_wipe(code, sizeof code);
out:
	kh_wipe(sealed, sizeof sealed);
	kh_transport_close(&t);
	kh_softmod_free(sm);
	if (r == KH_ERR_EXISTS) {
		fprintf(stderr, "keyhole: %s: keycard %08llX is enrolled here already, or its address was taken\n", a->card,
			(unsigned long long)serial);
		return KH_EXIT_FAIL;
	}
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(a->card, r);
}

/* Before the card is touched: the address free (or the replaced card's), the replaced card there. */
static int enrol_check(const struct enrol_args *a, struct kh_store *st)
{
	kh_err r = kh_keycenter_enrol_check(st, a->address, a->replaces);

	if (r == KH_ERR_EXISTS && a->replaces) {
		fprintf(stderr, "keyhole: %s: the address is another card's, or keycard %08llX was replaced already\n",
			a->address, (unsigned long long)a->replaces);
		return KH_EXIT_FAIL;
	}
	if (r == KH_ERR_EXISTS) {
		fprintf(stderr, "keyhole: %s: the address is another card's\n", a->address);
		return KH_EXIT_FAIL;
	}
	if (r == KH_ERR_NOTFOUND) {
		fprintf(stderr, "keyhole: %08llX: no such keycard to replace\n", (unsigned long long)a->replaces);
		return KH_EXIT_FAIL;
	}
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(a->db, r);
}

static int cmd_enrol(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, O_DIR},
					     {"db", required_argument, NULL, O_DB},
					     {"card", required_argument, NULL, 'c'},
					     {"key", required_argument, NULL, O_KEY},
					     {"address", required_argument, NULL, O_ADDRESS},
					     {"replaces", required_argument, NULL, O_REPLACES},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "keycenter enrol";
	unsigned char seen[512] = {0};
	struct enrol_args a = {0};
	struct kh_keycenter *kc = NULL;
	struct kh_store *st = NULL;
	uint32_t ua = 0;
	int c, rc, made = 0;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case O_DIR: a.dir = optarg; break;
		case O_DB: a.db = optarg; break;
		case 'c': a.card = optarg; break;
		case O_KEY: a.key = optarg; break;
		case O_ADDRESS: a.address = optarg; break;
		case O_REPLACES:
			if (kh_cli_parse_ua(optarg, &ua) != 0)
				return kh_cli_usage(P, "--replaces takes a keycard's serial: %s", KH_CLI_UA_FORMS);
			a.replaces = ua;
			break;
		case 'h': fputs(enrol_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if (!a.dir || !a.db || !a.card || !a.address)
		return kh_cli_usage(P, "--dir, --db, --card and --address are required");
	if (kh_kc_addr_check(a.address, strlen(a.address)) != KH_OK)
		return kh_cli_usage(P, "--address takes 1 to %d characters of a-z 0-9 . _ + - and one @", KH_KC_ADDR_MAX);
	if ((r = kh_keycenter_open(a.dir, &kc)) != KH_OK)
		return kh_cli_fail(a.dir, r);
	if ((rc = kh_cli_db_open(a.db, &st, &made)) == KH_EXIT_OK && (rc = enrol_check(&a, st)) == KH_EXIT_OK)
		rc = enrol_card(&a, kc, st);
	if (st)
		kh_cli_db_close(a.db, st, made, rc);
	kh_keycenter_close(kc);
	return rc;
}

/* ---------------------------------------------------------------- block */

static const char block_help[] =
	"usage: keyhole keycenter block --dir DIR --db DB SERIAL\n"
	"\n"
	"Block the keycard SERIAL (8 hexadecimal digits, as 'enrol' printed it): it can no longer\n"
	"post, open a mailbox session or be activated, and posts to its address are refused as\n"
	"unknown_recipient (unless a replacement card has the address: keyhole keycenter enrol\n"
	"--replaces). Prints 'blocked keycard SERIAL'.\n"
	"\n"
	"      --dir DIR  the key center's identity\n"
	"      --db DB    the key center's database\n";

static int cmd_block(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, O_DIR},
					     {"db", required_argument, NULL, O_DB},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "keycenter block";
	unsigned char seen[512] = {0};
	const char *dir = NULL, *db = NULL;
	struct kh_keycenter *kc = NULL;
	struct kh_store *st = NULL;
	uint32_t ua = 0;
	int c, rc, made = 0;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case O_DIR: dir = optarg; break;
		case O_DB: db = optarg; break;
		case 'h': fputs(block_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (!dir || !db)
		return kh_cli_usage(P, "--dir and --db are required");
	if (optind + 1 != argc)
		return kh_cli_usage(P, "one SERIAL is required");
	if (kh_cli_parse_ua(argv[optind], &ua) != 0)
		return kh_cli_usage(P, "SERIAL takes %s", KH_CLI_UA_FORMS);
	/* the operator of this center: its identity opens */
	if ((r = kh_keycenter_open(dir, &kc)) != KH_OK)
		return kh_cli_fail(dir, r);
	kh_keycenter_close(kc);
	if ((rc = kh_cli_db_open(db, &st, &made)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_keycenter_block(st, ua)) == KH_ERR_NOTFOUND) {
		fprintf(stderr, "keyhole: %08X: no such keycard\n", (unsigned)ua);
		rc = KH_EXIT_FAIL;
	} else if (r != KH_OK) {
		rc = kh_cli_fail(db, r);
	} else {
		printf("blocked keycard %08X\n", (unsigned)ua);
	}
	kh_cli_db_close(db, st, made, rc);
	return rc;
}

/* ---------------------------------------------------------------- list and log */

static const char list_help[] =
	"usage: keyhole keycenter list --db DB [--json]\n"
	"\n"
	"The enrolled keycards, one line each: 'SERIAL ADDRESS STATE send=N recv=N waiting=N' (the\n"
	"positions of its send and receive chains, the messages waiting in its mailbox; ADDRESS '-'\n"
	"once replaced). Chain states are never shown.\n"
	"\n"
	"      --db DB   the key center's database\n"
	"      --json    one JSON array of objects instead\n";

static const char log_help[] =
	"usage: keyhole keycenter log --db DB [--json]\n"
	"\n"
	"The relay log, oldest first, one line each: 'ID TIME SENDER#INDEX -> RECIPIENT#INDEX\n"
	"SIZE' ('-> refused' when no active card had the address: the sender's index was spent all\n"
	"the same). It holds serials, indexes and sizes: no key and no content.\n"
	"\n"
	"      --db DB   the key center's database\n"
	"      --json    one JSON array of objects instead\n";

/* --db DB [--json]: the shared command line of list and log. */
static int db_json_parse(const char *prog, const char *help, int argc, char **argv, const char **db, int *json)
{
	static const struct option opts[] = {{"db", required_argument, NULL, O_DB},
					     {"json", no_argument, NULL, O_JSON},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	unsigned char seen[512] = {0};
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(prog, "--%s is given twice", dup);
		switch (c) {
		case O_DB: *db = optarg; break;
		case O_JSON: *json = 1; break;
		case 'h': fputs(help, stdout); return -1;
		default: return kh_cli_usage(prog, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(prog, "unexpected argument '%s'", argv[optind]);
	if (!*db)
		return kh_cli_usage(prog, "--db is required");
	return KH_EXIT_OK;
}

static kh_err card_out(void *arg, const struct kh_store_kc_card *c)
{
	json_t *a = arg, *o;

	if (!a) {
		printf("%08llX %s %s send=%llu recv=%llu waiting=%lld\n", (unsigned long long)c->serial,
		       c->address[0] ? c->address : "-", kh_store_kc_state_name(c->state),
		       (unsigned long long)c->send_pos, (unsigned long long)c->recv_pos, (long long)c->waiting);
		return KH_OK;
	}
	o = json_pack("{s:I, s:s?, s:s, s:I, s:I, s:I, s:I, s:I}", "serial", (json_int_t)c->serial, "address",
		      c->address[0] ? c->address : NULL, "state", kh_store_kc_state_name(c->state), "send_pos",
		      (json_int_t)c->send_pos, "recv_pos", (json_int_t)c->recv_pos, "waiting", (json_int_t)c->waiting,
		      "created", (json_int_t)c->created, "replaced_by", (json_int_t)c->replaced_by);
	return o && json_array_append_new(a, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

static kh_err relay_out(void *arg, const struct kh_store_kc_relay *x)
{
	json_t *a = arg, *o;

	if (!a) {
		if (x->recipient)
			printf("%lld %lld %08llX#%llu -> %08llX#%llu %lld\n", (long long)x->id, (long long)x->time,
			       (unsigned long long)x->sender, (unsigned long long)x->send_idx,
			       (unsigned long long)x->recipient, (unsigned long long)x->recv_idx, (long long)x->size);
		else
			printf("%lld %lld %08llX#%llu -> refused %lld\n", (long long)x->id, (long long)x->time,
			       (unsigned long long)x->sender, (unsigned long long)x->send_idx, (long long)x->size);
		return KH_OK;
	}
	o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "id", (json_int_t)x->id, "time", (json_int_t)x->time, "sender",
		      (json_int_t)x->sender, "index", (json_int_t)x->send_idx, "size", (json_int_t)x->size,
		      "recipient", (json_int_t)x->recipient);
	if (o && x->recipient && json_object_set_new(o, "recv_index", json_integer((json_int_t)x->recv_idx)) != 0) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	if (o && !x->recipient && json_object_set_new(o, "recipient", json_null()) != 0) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	return o && json_array_append_new(a, o) == 0 ? KH_OK : KH_ERR_NOMEM;
}

static int list_or_log(const char *prog, const char *help, int argc, char **argv, int log)
{
	const char *db = NULL;
	struct kh_store *st = NULL;
	json_t *a = NULL;
	int json = 0, rc;
	kh_err r;

	if ((rc = db_json_parse(prog, help, argc, argv, &db, &json)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((r = kh_store_open(db, &st)) != KH_OK)
		return kh_cli_fail(db, r);
	if (json && !(a = json_array())) {
		kh_store_close(st);
		return kh_cli_fail(prog, KH_ERR_NOMEM);
	}
	r = log ? kh_store_kc_relays_list(st, relay_out, a) : kh_store_kc_cards_list(st, card_out, a);
	kh_store_close(st);
	if (r == KH_OK && a) {
		if (json_dumpf(a, stdout, JSON_INDENT(2)) != 0)
			r = KH_ERR_IO;
		putchar('\n');
	}
	json_decref(a);
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(db, r);
}

static int cmd_list(int argc, char **argv)
{
	return list_or_log("keycenter list", list_help, argc, argv, 0);
}

static int cmd_log(int argc, char **argv)
{
	return list_or_log("keycenter log", log_help, argc, argv, 1);
}

/* ---------------------------------------------------------------- serve */

static const char serve_help[] =
	"usage: keyhole keycenter serve --db DB --dir DIR [--listen HOST:PORT] [--cert FILE --key FILE]\n"
	"           [--threads N] [--window W] [--max-document BYTES] [--open-rate N] [--open-burst N]\n"
	"\n"
	"Serve the key center's API (HTTP/1.1 under /v1, and /metrics; docs/api/keycenter.yaml):\n"
	"cards are activated with their access code, posts are relayed to the card with the\n"
	"envelope's address (each in one transaction, the sender's index spent once its post opened),\n"
	"deliveries wait in mailboxes their cards open sessions for. When ready, print one line\n"
	"'listening=HOST:PORT'; stop on SIGTERM or SIGINT after answering the requests in flight. Logs\n"
	"go to standard error, one key=value line per event (one per relay: serials, indexes, size).\n"
	"\n"
	"      --db DB               the database: an SQLite file (made if missing) or a\n"
	"                            postgresql:// URL\n"
	"      --dir DIR             the key center's identity (keyhole keycenter init)\n"
	"  -l, --listen HOST:PORT    numeric address and port (default 127.0.0.1:8492; port 0 picks\n"
	"                            a free one); beyond loopback --cert and --key are required\n"
	"      --cert FILE           PEM certificate chain: serve HTTPS (TLS 1.3) ...\n"
	"      --key FILE            ... with this PEM private key (private to its owner)\n"
	"  -t, --threads N           connections served at once, 1 to 1024 (default 256)\n"
	"      --window W            how far past a card's last relayed post an index may be, 1 to\n"
	"                            4096 (default 64)\n"
	"      --max-document BYTES  the largest document a post may carry, 1 to 268435456 (default\n"
	"                            16777216); a larger post is refused (413) before it is read\n"
	"      --open-rate N         requests per second from one address to the open endpoints, 0 to\n"
	"                            100000, 0 for no limit (default 20); beyond it: 429\n"
	"      --open-burst N        how many of them one address may make at once, 1 to 100000\n"
	"                            (default 100)\n";

static kh_err kc_make(void *ctx, void **svc, const char **what)
{
	return kh_keycenter_service_new(ctx, (struct kh_keycenter_service **)svc, what);
}

static kh_err kc_routes(void *svc, struct kh_http *h)
{
	return kh_keycenter_service_add_routes(svc, h);
}

static void kc_free(void *svc)
{
	kh_keycenter_service_free(svc);
}

static int kc_option(void *ctx, int opt, const char *arg)
{
	static const char *const P = "keycenter serve";
	struct kh_keycenter_service_config *cfg = ctx;
	uint64_t v;

	switch (opt) {
	case O_WINDOW:
		if (kh_cli_parse_num(arg, KH_KEYSEQ_WINDOW_MAX, &v) != 0 || v < 1)
			return kh_cli_usage(P, "--window takes a number from 1 to %u", KH_KEYSEQ_WINDOW_MAX);
		cfg->window = (unsigned)v;
		return KH_EXIT_OK;
	case O_MAXDOC:
		if (kh_cli_parse_num(arg, KH_KEYCENTER_DOC_MAX, &v) != 0 || v < 1)
			return kh_cli_usage(P, "--max-document takes a number of bytes from 1 to %u", KH_KEYCENTER_DOC_MAX);
		cfg->max_document = v;
		return KH_EXIT_OK;
	default: return -1;
	}
}

static int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'D'},
					     {"dir", required_argument, NULL, 'd'},
					     {"listen", required_argument, NULL, 'l'},
					     {"cert", required_argument, NULL, 'C'},
					     {"key", required_argument, NULL, 'K'},
					     {"threads", required_argument, NULL, 't'},
					     {"window", required_argument, NULL, O_WINDOW},
					     {"max-document", required_argument, NULL, O_MAXDOC},
					     {"open-rate", required_argument, NULL, 'O'},
					     {"open-burst", required_argument, NULL, 'U'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct kh_keycenter_service_config cfg = {0};
	struct kh_cli_serve sv = {.prog = "keycenter serve",
				  .name = "keycenter",
				  .what = "key center",
				  .listen = KC_LISTEN,
				  .listen_default = KC_LISTEN,
				  .threads = KH_HTTP_THREADS,
				  .open_rate = KC_OPEN_RATE,
				  .open_burst = KC_OPEN_BURST,
				  .make = kc_make,
				  .routes = kc_routes,
				  .free = kc_free};
	int rc;

	if ((rc = kh_cli_serve_parse(&sv, opts, serve_help, argc, argv, kc_option, &cfg)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	cfg.db = sv.db;
	cfg.dir = sv.dir;
	sv.raw_body_limit = kh_keycenter_post_max(cfg.max_document ? cfg.max_document : KH_KEYCENTER_DOC_DEFAULT);
	sv.ctx = &cfg;
	return kh_cli_serve_run(&sv);
}

/* ---------------------------------------------------------------- dispatch */

static const struct kh_cli_cmd sub[] = {
	{"init", cmd_init, "make the key center's identity, certified by the authority"},
	{"enrol", cmd_enrol, "enrol a key card: its seed sealed to the center, its access code shown once"},
	{"block", cmd_block, "block a key card: no posts, no mail, no sessions"},
	{"list", cmd_list, "the enrolled key cards, their chain positions and waiting mail"},
	{"log", cmd_log, "the relay log: serials, indexes and sizes"},
	{"serve", cmd_serve, "serve the key center's API over HTTP"},
};

int kh_cmd_keycenter(int argc, char **argv)
{
	return kh_cli_dispatch("keycenter", sub, sizeof sub / sizeof sub[0], argc, argv);
}
