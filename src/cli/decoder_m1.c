/*
 * keyhole decoder init and m1, and the decoder's memory M1 as play, buy and connect keep it
 * (seed 001: the card's usage blocks, sealed for the center, kept through a card swap;
 * include/keyhole/m1.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/decoder.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/log.h"

static const char init_help[] =
	"usage: keyhole decoder init --m1 DIR\n"
	"\n"
	"Make the decoder's memory M1: the directory DIR (mode 0700, if absent) and its local key\n"
	"DIR/m1.key (32 random bytes in hex, mode 0600), under which M1 is sealed. Fails if the key\n"
	"exists already. play and buy make the same on first use of --m1 DIR.\n"
	"\n"
	"  -M, --m1 DIR             the M1 directory\n"
	"      --dir DIR            old spelling of --m1\n";

static const char m1_help[] =
	"usage: keyhole decoder m1 --m1 DIR\n"
	"\n"
	"Say what the decoder's memory M1 in DIR holds: the card (UA), the block number and its size\n"
	"— never its contents, which only the center can read. Prints 'm1 empty' when it holds\n"
	"nothing. Fails when the file does not open under DIR/m1.key (changed, or another key).\n"
	"\n"
	"  -M, --m1 DIR             the M1 directory\n";

/* ---- M1 ---- */

int kh__cli_m1_open(struct kh__cli_m1 *m, const char *dir)
{
	kh_err r;

	memset(m, 0, sizeof *m);
	if (!dir)
		return KH_EXIT_OK;
	if ((r = kh_m1_key(dir, 1, m->key)) != KH_OK)
		return kh_cli_fail(dir, r);
	m->dir = dir;
	return KH_EXIT_OK;
}

void kh__cli_m1_update(struct kh__cli_m1 *m, struct kh_host_cas *cas, const char *why)
{
	struct kh_m1_info info;
	kh_err r;

	if (!m->dir)
		return;
	r = kh_m1_export(cas->card, m->dir, m->key, cas->card_ua, &info);
	if (r == KH_OK) {
		m->stored++;
		kh_log_info("decoder.m1", "why=%s ua=%08X seq=%u", why, info.ua, info.block_seq);
		return;
	}
	if (r == KH_ERR_EXPORT_DENIED || r == KH_ERR_ROLLBACK) {
		m->kept++;
		kh_log_info("decoder.m1_kept", "why=%s err=%s", why, kh_err_name(r));
		return;
	}
	if (r != m->last) {
		m->last = r;
		fprintf(stderr, "keyhole: M1 %s: %s; M1 left as it was\n", m->dir, kh_strerror(r));
	}
}

void kh__cli_m1_close(struct kh__cli_m1 *m)
{
	kh_wipe(m, sizeof *m);
}

/* ---- init, m1 ---- */

/* The one option of init and m1, --m1 (init also takes its old spelling --dir), into *dir;
 * KH_EXIT_OK, usage, or -1 after help. */
static int dir_opt(const char *cmd, const char *help, int old_dir, int argc, char **argv, const char **dir)
{
	static const struct option with_dir[] = {{"m1", required_argument, NULL, 'M'},
						 {"dir", required_argument, NULL, 'M'}, /* old spelling */
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	const struct option *lo = old_dir ? with_dir : (const struct option[]){{"m1", required_argument, NULL, 'M'},
									      {"help", no_argument, NULL, 'h'},
									      {NULL, 0, NULL, 0}};
	int c;

	*dir = NULL;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+M:h", lo, NULL)) != -1) {
		switch (c) {
		case 'M': *dir = optarg; break;
		case 'h': fputs(help, stdout); return -1;
		default: return kh_cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!*dir || !**dir)
		return kh_cli_usage(cmd, "--m1 is required");
	return KH_EXIT_OK;
}

int kh__cli_decoder_init(int argc, char **argv)
{
	uint8_t key[KH_M1_KEY_LEN];
	const char *dir;
	int rc;
	kh_err r;

	if ((rc = dir_opt("decoder init", init_help, 1, argc, argv, &dir)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	/* Look first: init makes a key, it never adopts one. */
	if ((r = kh_m1_key(dir, 0, key)) == KH_OK) {
		kh_wipe(key, sizeof key);
		fprintf(stderr, "keyhole: %s/%s: %s\n", dir, KH_M1_KEYFILE, kh_strerror(KH_ERR_EXISTS));
		return KH_EXIT_FAIL;
	}
	if (r != KH_ERR_NOTFOUND)
		return kh_cli_fail(dir, r);
	r = kh_m1_key(dir, 1, key);
	kh_wipe(key, sizeof key);
	if (r != KH_OK)
		return kh_cli_fail(dir, r);
	printf("m1 key %s/%s\n", dir, KH_M1_KEYFILE);
	return KH_EXIT_OK;
}

int kh__cli_decoder_m1(int argc, char **argv)
{
	uint8_t key[KH_M1_KEY_LEN];
	struct kh_m1_info info;
	const char *dir;
	int rc;
	kh_err r;

	if ((rc = dir_opt("decoder m1", m1_help, 0, argc, argv, &dir)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	/* No key yet means no M1 yet: nothing has ever been stored there. */
	if ((r = kh_m1_key(dir, 0, key)) == KH_ERR_NOTFOUND) {
		printf("m1 empty\n");
		return KH_EXIT_OK;
	}
	if (r != KH_OK)
		return kh_cli_fail(dir, r);
	r = kh_m1_stat(dir, key, &info);
	kh_wipe(key, sizeof key);
	if (r == KH_ERR_NOTFOUND) {
		printf("m1 empty\n");
		return KH_EXIT_OK;
	}
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: %s/%s: %s\n", dir, KH_M1_FILE, kh_strerror(r));
		return KH_EXIT_FAIL;
	}
	printf("card %08X\n", info.ua);
	printf("block_seq %u\n", info.block_seq);
	printf("size %zu\n", info.len);
	return KH_EXIT_OK;
}
