/*
 * keyhole authority: create the operator authority (root key and certificate, management master
 * key, ECM and EMM signers), make the signers an older authority lacks, and show what it holds.
 * See keyhole-authority(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keyhole/authority.h"
#include "keyhole/crypto.h"

static const char init_help[] =
	"usage: keyhole authority init [--name NAME] [--validity-days N] DIR\n"
	"\n"
	"Create an operator authority in DIR: an Ed25519 root key and self-signed X.509 root\n"
	"certificate, the management master key from which card keys are diversified, and the\n"
	"ECM and EMM signers (Ed25519 keys certified by the root) whose signatures cards check.\n"
	"Key files are written mode 0600. DIR must not already hold an authority.\n"
	"\n"
	"  -n, --name NAME          operator name written into certificates (default \"Keyhole operator\")\n"
	"      --validity-days N    certificates issued are valid N days (1 to 7305; default 1827,\n"
	"                           five years), kept in DIR/validity-days\n";

static const char show_help[] =
	"usage: keyhole authority show DIR\n"
	"\n"
	"Print the operator name and the root key fingerprint (SHA-256 of the public key).\n"
	"Refuses key files that group or others can read.\n";

static const char signers_help[] =
	"usage: keyhole authority signers DIR\n"
	"\n"
	"Make the ECM signer and the EMM signer of the authority in DIR if it lacks them (an\n"
	"authority made before signers existed): an Ed25519 key each, certified by the root with\n"
	"role ecm-signer or emm-signer, in DIR/<role>.key (mode 0600) and DIR/issued/. Prints each\n"
	"signer's serial. A signer already there is never replaced.\n";

/*
 * The shape of `authority show` and `authority signers`: help, or exactly one DIR, opened.
 * -1 with *a set to go on; otherwise the exit status (help printed, or the error said).
 */
static int open_one(const char *cmd, const char *help, int argc, char **argv, struct kh_authority **a)
{
	kh_err r;

	if (kh_cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return KH_EXIT_OK;
	}
	if (argc >= 2 && argv[1][0] == '-')
		return kh_cli_usage(cmd, "unknown option '%s'", argv[1]);
	if (argc != 2)
		return kh_cli_usage(cmd, "exactly one directory is required");
	if ((r = kh_authority_open(argv[1], a)) != KH_OK)
		return kh_cli_fail(argv[1], r);
	return -1;
}

static int cmd_signers(int argc, char **argv)
{
	static const enum kh_role roles[] = {KH_ROLE_ECM_SIGNER, KH_ROLE_EMM_SIGNER};
	struct kh_authority *a = NULL;
	unsigned made = 0;
	int rc;
	kh_err r;

	if ((rc = open_one("authority signers", signers_help, argc, argv, &a)) != -1)
		return rc;
	r = kh_authority_signers_ensure(a, &made);
	kh_authority_free(a);
	if (r != KH_OK)
		return kh_cli_fail(argv[1], r);
	for (size_t i = 0; i < 2; i++) {
		struct kh_cas_signer sg;
		if ((r = kh_authority_signer_load(argv[1], roles[i], &sg, NULL, 0, NULL)) != KH_OK)
			return kh_cli_fail(kh_role_name(roles[i]), r);
		printf("%s %08lX\n", kh_role_name(roles[i]), (unsigned long)sg.serial);
		kh_wipe(&sg, sizeof sg);
	}
	printf("%u signer(s) made\n", made);
	return KH_EXIT_OK;
}

static int cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
					     {"validity-days", required_argument, NULL, 'V'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *name = "Keyhole operator";
	uint64_t days = 0;
	kh_err r;
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			name = optarg;
			break;
		case 'V':
			if (kh_cli_parse_num(optarg, KH_AUTHORITY_VALIDITY_MAX, &days) != 0 || days < 1)
				return kh_cli_usage("authority init", "--validity-days takes a number of days from 1 to %d",
						    KH_AUTHORITY_VALIDITY_MAX);
			break;
		case 'h':
			fputs(init_help, stdout);
			return KH_EXIT_OK;
		default:
			return kh_cli_usage("authority init", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return kh_cli_usage("authority init", "exactly one directory is required");
	/* The library's limit, checked here so a name too long is a usage error, not a failure. */
	if (!*name || strlen(name) > KH_AUTHORITY_NAME_MAX || strpbrk(name, "/=,+\"\\<>;\n"))
		return kh_cli_usage("authority init", "--name must be 1-%d characters without / = , + \" \\ < > ;",
				    KH_AUTHORITY_NAME_MAX);
	if ((r = kh_authority_init_days(argv[optind], name, (unsigned)days)) != KH_OK)
		return kh_cli_fail(argv[optind], r);
	printf("authority created in %s (root certificate %s/root.crt)\n", argv[optind], argv[optind]);
	return KH_EXIT_OK;
}

static int cmd_show(int argc, char **argv)
{
	struct kh_authority *a = NULL;
	uint8_t pk[32], fp[32];
	int rc;
	kh_err r;

	if ((rc = open_one("authority show", show_help, argc, argv, &a)) != -1)
		return rc;
	kh_authority_root_pk(a, pk);
	if ((r = kh_sha256(pk, sizeof pk, fp)) != KH_OK) {
		kh_authority_free(a);
		return kh_cli_fail("fingerprint", r);
	}
	printf("operator: %s\nroot key sha256: ", kh_authority_name(a));
	for (size_t i = 0; i < sizeof fp; i++)
		printf("%02x", fp[i]);
	printf("\n");
	kh_authority_free(a);
	return KH_EXIT_OK;
}

static const struct kh_cli_cmd sub[] = {
	{"init", cmd_init, "create a new operator authority in a directory"},
	{"show", cmd_show, "show an authority's operator name and root key fingerprint"},
	{"signers", cmd_signers, "make the ECM and EMM signers an authority lacks"},
};

int kh_cmd_authority(int argc, char **argv)
{
	return kh_cli_dispatch("authority", sub, sizeof sub / sizeof sub[0], argc, argv);
}
