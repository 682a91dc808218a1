/*
 * keyhole headend: the pay-TV headend on the command line. This file holds the command table
 * and `keys` (the headend key file: management master, service keys, EMM sequence counters);
 * `emm` (one EMM for a card, a group or all cards) is headend_emm.c; `scramble` (a clear
 * transport stream in, the scrambled one with its ECMs, EMMs, PMT and CAT out) is
 * headend_scramble.c. The engine is src/center/headend/ (keyhole/headend.h); these files are
 * options, files and progress. See keyhole-headend(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/headend.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/authority.h"
#include "keyhole/headend.h"
#include "keyhole/store.h"
#include "keyhole/ts.h"

static const char keys_init_help[] =
	"usage: keyhole headend keys init --authority DIR --out FILE\n"
	"\n"
	"Create a headend key file (mode 0600; never replaces an existing file) holding the\n"
	"operator's management master key (copied from DIR/master.key), service key 1 version 1\n"
	"(random) and the EMM sequence counters, all at 0.\n"
	"\n"
	"  -a, --authority DIR  the operator authority\n"
	"  -o, --out FILE       the key file to create\n";

static const char keys_rotate_help[] =
	"usage: keyhole headend keys rotate --keys FILE --key-id N\n"
	"\n"
	"Add the next version of service key N (a new random key; version 1 for a new id). At most\n"
	"two versions of an id are kept: the oldest is dropped. Send the new key to the cards\n"
	"(keyhole headend emm --service-keys) before scrambling with it (--key-version).\n"
	"\n"
	"  -k, --keys FILE  the headend key file\n"
	"      --key-id N   service key id, 0 to 255 (as 'headend scramble --key-id')\n"
	"      --id N       old spelling of --key-id\n";

static const char keys_show_help[] =
	"usage: keyhole headend keys show --keys FILE\n"
	"\n"
	"Print the service key ids and versions and the EMM sequence counters; never a key.\n"
	"\n"
	"  -k, --keys FILE  the headend key file\n";

static const char keys_import_help[] =
	"usage: keyhole headend keys import --keys FILE (--center URL [--cacert FILE]\n"
	"           [--token-file FILE] [--insecure-http] | --db DB)\n"
	"\n"
	"Copy the management center's service keys (the two newest versions of each id, the ones it\n"
	"sends to the cards) into the headend key file, so that ECMs are sealed under keys the cards\n"
	"hold. A version both hold is overwritten with the center's key; at most two versions of an\n"
	"id are kept. Run it again after a rotation at the center (POST /v1/service-keys/rotate).\n"
	"With --center the keys come over the operator API (GET URL/v1/service-keys/material): use\n"
	"https, since the answer holds the keys. With --db the center's database file is read\n"
	"directly (the headend on the center's machine; it may be in use by 'keyhole serve').\n"
	"\n"
	"  -k, --keys FILE        the headend key file (locked while it is updated)\n"
	"      --center URL       the management center: https://HOST[:PORT] (http:// only to\n"
	"                         127.0.0.1, localhost or [::1] unless --insecure-http)\n"
	"      --cacert FILE      PEM CA certificates to trust for the center (default: the\n"
	"                         system's); peer and host name are always checked\n"
	"  -T, --token-file FILE  the operator's bearer token ('serve --token-file'; private to\n"
	"                         its owner, like a key file)\n"
	"      --insecure-http    allow plain http to any host (a test network only: the keys\n"
	"                         would cross it in clear)\n"
	"      --db DB            the center's database (as 'keyhole serve --db'): read, never\n"
	"                         created\n"
	"      --store DB         old spelling of --db\n";

/* ---- small parsers ---- */

int kh__cli_u32(const char *s, uint32_t *v)
{
	uint64_t x;
	if (kh_cli_parse_num(s, UINT32_MAX, &x) != 0)
		return -1;
	*v = (uint32_t)x;
	return 0;
}

/* Split "a:b[:c]" into exactly want fields. */
int kh__cli_split(const char *s, char *buf, size_t cap, char **f, int want)
{
	int n = 0;
	char *p;
	if (strlen(s) >= cap)
		return -1;
	strcpy(buf, s);
	p = buf;
	for (;;) {
		if (n == want)
			return -1;
		f[n++] = p;
		p = strchr(p, ':');
		if (!p)
			break;
		*p++ = 0;
	}
	return n == want ? 0 : -1;
}

/* Report a key file error: "keyhole: FILE line N: message". */
int kh__cli_keys_fail(const char *path, size_t line, kh_err r)
{
	if (line) {
		fprintf(stderr, "keyhole: %s line %zu: %s\n", path, line, kh_strerror(r));
		return KH_EXIT_FAIL;
	}
	return kh_cli_fail(path, r);
}

/* ---- keys ---- */

static int cmd_keys_init(int argc, char **argv)
{
	static const struct option opts[] = {{"authority", required_argument, NULL, 'a'},
					     {"out", required_argument, NULL, 'o'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *dir = NULL, *out = NULL;
	struct kh_headend_keys *k = NULL;
	uint8_t *data = NULL, master[32];
	size_t len = 0;
	char *mpath = NULL;
	unsigned char seen[512] = {0};
	int c, rc;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+a:o:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage("headend keys init", "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case 'a': dir = optarg; break;
		case 'o': out = optarg; break;
		case 'h': fputs(keys_init_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("headend keys init", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("headend keys init", "unexpected argument '%s'", argv[optind]);
	if (!dir || !out)
		return kh_cli_usage("headend keys init", "--authority and --out are required");
	if (asprintf(&mpath, "%s/master.key", dir) < 0)
		return kh_cli_fail(dir, KH_ERR_NOMEM);
	if ((r = kh_keyfile_read(mpath, 4096, &data, &len)) != KH_OK ||
	    (r = kh_hex_decode((const char *)data, len, master, sizeof master)) != KH_OK) {
		rc = kh_cli_fail(mpath, r);
		goto out;
	}
	if ((r = kh_headend_keys_create(master, &k)) != KH_OK) {
		rc = kh_cli_fail("headend keys", r);
		goto out;
	}
	/* The ECM signer signs every ECM, the EMM signer every group and broadcast EMM. */
	for (int i = 0; i < 2; i++) {
		enum kh_role role = i ? KH_ROLE_EMM_SIGNER : KH_ROLE_ECM_SIGNER;
		struct kh_cas_signer sg;
		uint8_t der[KH_CERT_MAX];
		size_t dlen;
		r = kh_authority_signer_load(dir, role, &sg, der, sizeof der, &dlen);
		if (r == KH_OK)
			r = kh_headend_keys_set_signer(k, role, &sg, der, dlen);
		kh_wipe(&sg, sizeof sg);
		if (r != KH_OK) {
			if (r == KH_ERR_NOTFOUND)
				fprintf(stderr, "keyhole headend keys init: the authority in %s has no %s "
						"(keyhole authority signers %s makes it)\n",
					dir, kh_role_name(role), dir);
			else
				kh_cli_fail(kh_role_name(role), r);
			rc = KH_EXIT_FAIL;
			goto out;
		}
	}
	if ((r = kh_headend_keys_save_new(k, out)) != KH_OK) {
		rc = kh_cli_fail(out, r);
		goto out;
	}
	printf("headend key file %s created (service key 1 version 1)\n", out);
	rc = KH_EXIT_OK;
out:
	kh_wipe(master, sizeof master);
	kh_file_free(data, len);
	kh_headend_keys_free(k);
	free(mpath);
	return rc;
}

static int cmd_keys_rotate(int argc, char **argv)
{
	enum { O_KEYID = 256 };
	static const struct option opts[] = {{"keys", required_argument, NULL, 'k'},
					     {"key-id", required_argument, NULL, O_KEYID},
					     {"id", required_argument, NULL, O_KEYID}, /* old spelling */
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = NULL;
	struct kh_headend_keys *k = NULL;
	uint64_t id = 256;
	uint32_t v = 0;
	size_t line = 0;
	unsigned char seen[512] = {0};
	int c, fd = -1, rc;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage("headend keys rotate", "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case 'k': path = optarg; break;
		case O_KEYID:
			if (kh_cli_parse_num(optarg, 255, &id) != 0)
				return kh_cli_usage("headend keys rotate", "--key-id takes a number from 0 to 255");
			break;
		case 'h': fputs(keys_rotate_help, stdout); return KH_EXIT_OK;
		default:
			return kh_cli_usage("headend keys rotate", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("headend keys rotate", "unexpected argument '%s'", argv[optind]);
	if (!path || id > 255)
		return kh_cli_usage("headend keys rotate", "--keys and --key-id are required");
	if ((r = kh_headend_keys_lock(path, &fd)) != KH_OK)
		return kh_cli_fail(path, r);
	if ((r = kh_headend_keys_load(path, &k, &line)) != KH_OK) {
		rc = kh__cli_keys_fail(path, line, r);
		goto out;
	}
	if ((r = kh_headend_keys_rotate(k, (uint8_t)id, &v)) != KH_OK ||
	    (r = kh_headend_keys_save(k, path)) != KH_OK) {
		rc = kh_cli_fail(path, r);
		goto out;
	}
	printf("service key %u version %lu added\n", (unsigned)id, (unsigned long)v);
	rc = KH_EXIT_OK;
out:
	kh_headend_keys_unlock(fd);
	kh_headend_keys_free(k);
	return rc;
}

static int cmd_keys_show(int argc, char **argv)
{
	static const struct option opts[] = {{"keys", required_argument, NULL, 'k'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = NULL;
	struct kh_headend_keys *k = NULL;
	size_t line = 0;
	unsigned char seen[512] = {0};
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage("headend keys show", "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case 'k': path = optarg; break;
		case 'h': fputs(keys_show_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("headend keys show", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("headend keys show", "unexpected argument '%s'", argv[optind]);
	if (!path)
		return kh_cli_usage("headend keys show", "--keys is required");
	if ((r = kh_headend_keys_load(path, &k, &line)) != KH_OK)
		return kh__cli_keys_fail(path, line, r);
	for (size_t i = 0; i < kh_headend_keys_count(k); i++) {
		uint8_t id;
		uint32_t v;
		kh_headend_keys_at(k, i, &id, &v, NULL);
		printf("service key %u version %lu\n", id, (unsigned long)v);
	}
	printf("seq all %lu\n", (unsigned long)kh_headend_keys_seq(k, KH_EMM_ALL, 0));
	if (kh_headend_keys_revoked(k))
		printf("revoked list version %lu (every ECM asks cards to hold it)\n",
		       (unsigned long)kh_headend_keys_revoked(k));
	for (size_t i = 0; i < kh_headend_keys_seq_count(k); i++) {
		enum kh_emm_addr t;
		uint32_t a, s;
		kh_headend_keys_seq_at(k, i, &t, &a, &s);
		if (t == KH_EMM_GROUP)
			printf("seq group %lu %lu\n", (unsigned long)a, (unsigned long)s);
		else
			printf("seq card %08lX %lu\n", (unsigned long)a, (unsigned long)s);
	}
	kh_headend_keys_free(k);
	return KH_EXIT_OK;
}

struct import {
	struct kh_headend_keys *k;
	size_t n;
	kh_err r;
};

static kh_err take_key(void *arg, const struct kh_store_service_key *sk)
{
	struct import *im = arg;
	if (im->r == KH_OK && (im->r = kh_headend_keys_put(im->k, sk->key_id, sk->version, sk->key)) == KH_OK)
		im->n++;
	return KH_OK;
}

static int cmd_keys_import(int argc, char **argv)
{
	enum { O_CACERT = 256, O_INSECURE, O_DB, O_CENTER };
	static const struct option opts[] = {{"keys", required_argument, NULL, 'k'},
					     {"db", required_argument, NULL, O_DB},
					     {"store", required_argument, NULL, O_DB}, /* old spelling */
					     {"center", required_argument, NULL, O_CENTER},
					     {"cacert", required_argument, NULL, O_CACERT},
					     {"token-file", required_argument, NULL, 'T'},
					     {"insecure-http", no_argument, NULL, O_INSECURE},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	static const char *const P = "headend keys import";
	const char *path = NULL, *db = NULL, *tokfile = NULL;
	struct kh_headend_feed_cfg feed = {0};
	struct import im = {0};
	struct kh_store *st = NULL;
	char *tok = NULL;
	size_t line = 0;
	char why[256] = "";
	unsigned char seen[512] = {0};
	int c, fd = -1, rc = KH_EXIT_FAIL;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:T:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		switch (c) {
		case 'k': path = optarg; break;
		case O_DB: db = optarg; break;
		case O_CENTER: feed.center = optarg; break;
		case O_CACERT: feed.cacert = optarg; break;
		case 'T': tokfile = optarg; break;
		case O_INSECURE: feed.insecure_http = 1; break;
		case 'h': fputs(keys_import_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if (!path || !db == !feed.center)
		return kh_cli_usage(P, "--keys and one of --center and --db are required");
	if (!feed.center && (feed.cacert || tokfile || feed.insecure_http))
		return kh_cli_usage(P, "--cacert, --token-file and --insecure-http go with --center");
	if (feed.center && kh_headend_feed_url_check(feed.center, feed.insecure_http) != KH_OK)
		return kh_cli_usage(P, "--center takes a base URL https://HOST[:PORT] (http:// only to 127.0.0.1, "
				       "localhost or [::1] unless --insecure-http)");
	if (db) {
		/* the center's database is read, never made: an empty one would hold no key */
		int exists = 0;
		const char *file = db;

		if ((r = kh_store_check(db, &exists, why, sizeof why)) != KH_OK) {
			if (why[0])
				fprintf(stderr, "keyhole: %s\n", why);
			else
				kh_cli_fail(db, r);
			return KH_EXIT_FAIL;
		}
		if (!exists) {
			if (strncmp(file, "sqlite://", 9) == 0)
				file += 9;
			else if (strncmp(file, "sqlite:", 7) == 0)
				file += 7;
			fprintf(stderr, "keyhole: %s: no such database (the center's, as 'keyhole serve --db')\n", file);
			return KH_EXIT_FAIL;
		}
		why[0] = 0;
	}
	if (tokfile && kh_cli_read_token(tokfile, &tok) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if ((r = kh_headend_keys_lock(path, &fd)) != KH_OK) {
		rc = kh_cli_fail(path, r);
		goto out;
	}
	if ((r = kh_headend_keys_load(path, &im.k, &line)) != KH_OK) {
		rc = kh__cli_keys_fail(path, line, r);
		goto out;
	}
	if (feed.center) {
		/* under the key file's lock: the fetch is bounded (10 s to connect, 30 s in all) */
		r = kh_headend_material_fetch(&feed, tok, im.k, &im.n, why, sizeof why);
		if (r != KH_OK) {
			if (r == KH_ERR_TOO_LARGE)
				rc = kh_cli_fail(path, r);
			else
				fprintf(stderr, "keyhole: %s: %s\n", feed.center, why[0] ? why : kh_strerror(r));
			goto out;
		}
	} else if ((r = kh_store_open(db, &st)) != KH_OK ||
		   (r = kh_store_service_keys_current(st, take_key, &im)) != KH_OK) {
		rc = kh_cli_fail(db, r);
		goto out;
	}
	if (im.r != KH_OK) {
		rc = kh_cli_fail(path, im.r);
		goto out;
	}
	if (im.n == 0) {
		fprintf(stderr, "keyhole: %s: the center holds no service key\n", feed.center ? feed.center : db);
		goto out;
	}
	if ((r = kh_headend_keys_save(im.k, path)) != KH_OK) {
		rc = kh_cli_fail(path, r);
		goto out;
	}
	printf("%zu service key(s) imported from the center\n", im.n);
	rc = KH_EXIT_OK;
out:
	kh_store_close(st);
	kh_headend_keys_unlock(fd);
	kh_headend_keys_free(im.k);
	kh_cli_free_token(tok);
	return rc;
}

static const struct kh_cli_cmd keys_sub[] = {
	{"init", cmd_keys_init, "create a headend key file from the authority's master key"},
	{"rotate", cmd_keys_rotate, "add the next version of a service key"},
	{"import", cmd_keys_import, "take the management center's service keys"},
	{"show", cmd_keys_show, "list service key versions and EMM counters (never a key)"},
};

static int cmd_keys(int argc, char **argv)
{
	return kh_cli_dispatch("headend keys", keys_sub, sizeof keys_sub / sizeof keys_sub[0], argc, argv);
}

static const struct kh_cli_cmd sub[] = {
	{"keys", cmd_keys, "create, rotate, import and list the headend's keys"},
	{"emm", kh__cli_headend_emm, "make one EMM for a card, a group or all cards"},
	{"scramble", kh__cli_headend_scramble, "scramble a transport stream with ECMs, EMMs, PMT and CAT"},
	{"mux", kh__cli_headend_mux, "insert an EMMG's EMMs (SimulCrypt EMMG<->MUX) in place of null packets"},
};

int kh_cmd_headend(int argc, char **argv)
{
	return kh_cli_dispatch("headend", sub, sizeof sub / sizeof sub[0], argc, argv);
}
