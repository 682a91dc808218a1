/*
 * What several subcommands share (cli/cli.h): the parser of commands whose options each take one
 * value (`dist`, `escrow`), and opening the center's store for an operator's command, removing a
 * database the failed command itself created.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "keyhole/store.h"

/* getopt over opts (values only, plus --help); KH_EXIT_OK to go on, -1 after --help, else exit status. */
int kh_cli_optv_parse(const char *prog, const char *help, struct kh_cli_optv *ov, size_t n, int argc, char **argv)
{
	struct option opts[16];
	unsigned char seen[512] = {0};
	char shorts[40] = "+h";
	size_t k = 2;
	int c;

	if (n + 2 > sizeof opts / sizeof opts[0])
		return KH_EXIT_FAIL;
	for (size_t i = 0; i < n; i++) {
		opts[i] = (struct option){ov[i].name, required_argument, NULL, ov[i].letter ? ov[i].letter : 256 + (int)i};
		if (ov[i].letter) {
			shorts[k++] = ov[i].letter;
			shorts[k++] = ':';
			shorts[k] = 0;
		}
	}
	opts[n] = (struct option){"help", no_argument, NULL, 'h'};
	opts[n + 1] = (struct option){NULL, 0, NULL, 0};
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		size_t i;

		if (dup)
			return kh_cli_usage(prog, "--%s is given twice (it takes one value)", dup);
		if (c == 'h') {
			fputs(help, stdout);
			return -1;
		}
		for (i = 0; i < n && opts[i].val != c; i++)
			;
		if (i == n)
			return kh_cli_usage(prog, "unknown or incomplete option '%s'", argv[optind - 1]);
		*ov[i].val = optarg;
	}
	if (optind != argc)
		return kh_cli_usage(prog, "unexpected argument '%s'", argv[optind]);
	for (size_t i = 0; i < n; i++)
		if (ov[i].required && !*ov[i].val)
			return kh_cli_usage(prog, "--%s is required", ov[i].name);
	return KH_EXIT_OK;
}

/* The store db names, made if missing (*made then 1, so that a failure can remove it). */
int kh_cli_db_open(const char *db, struct kh_store **st, int *made)
{
	char why[4400] = "";
	int exists = 1;
	kh_err r;

	*made = 0;
	if (kh_store_check(db, &exists, why, sizeof why) != KH_OK) {
		fprintf(stderr, "keyhole: %s\n", why[0] ? why : db);
		return KH_EXIT_FAIL;
	}
	if ((r = kh_store_open(db, st)) != KH_OK)
		return kh_cli_fail(db, r);
	*made = !exists;
	return KH_EXIT_OK;
}

void kh_cli_db_close(const char *db, struct kh_store *st, int made, int rc)
{
	kh_store_close(st);
	if (rc != KH_EXIT_OK && made && kh_store_remove(db) != KH_OK)
		fprintf(stderr, "keyhole: %s: could not remove the database this failed command created\n", db);
}
