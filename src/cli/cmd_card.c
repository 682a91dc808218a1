/*
 * keyhole card: personalise a security module (card or CAM) from the authority, inspect one,
 * and serve one on a UNIX socket as a module daemon. See keyhole-card(1).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "device/vpcd.h"
#include "keyhole/authority.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/softmodule.h"

/* Options with no short form (a letter means one thing in every command: docs/cli-options.md). */
enum { O_KEY = 256, O_SOCKET, O_VPCD };

static const char issue_help[] =
	"usage: keyhole card issue --authority DIR --role card|cam|decoder|processor|buyer|keycard\n"
	"                          --out FILE [--ua UA] [--key KEYFILE]\n"
	"       keyhole card issue --authority DIR --role ROLE --card SPEC [--ua UA] [--key KEYFILE]\n"
	"\n"
	"Personalise a module: a blank module generates its own signing (Ed25519) and pairing (X25519)\n"
	"keys, the authority certifies them, and the module stores its state sealed under its root key.\n"
	"The certificates go to DIR/issued/.\n"
	"\n"
	"With --out, the module is a new software module: writes FILE (sealed state), KEYFILE (root\n"
	"key, mode 0600; default FILE with .card replaced by .key) and FILE.ctr (state counter).\n"
	"Existing files are never overwritten.\n"
	"\n"
	"With --card, the module is a blank one that exists already (keyhole card blank), personalised\n"
	"where it is: in a PC/SC reader, behind a module daemon, or in its file. A module that is not\n"
	"blank is refused before the authority takes a unique address or writes a certificate.\n"
	"\n"
	"  -a, --authority DIR  the operator authority\n"
	"  -r, --role ROLE      card, cam, decoder (a decoder module, for decoder play), processor\n"
	"                       (a buyer's processor, for keyhole processor serve), buyer (a\n"
	"                       buyer's device, for keyhole buyer) or keycard (a user's key card,\n"
	"                       for keyhole keycard)\n"
	"  -o, --out FILE       card file to create (conventionally NAME.card)\n"
	"  -c, --card SPEC      the blank module to personalise: pcsc:READER for the card in a PC/SC\n"
	"                       reader (exact name or unique prefix; pcsc: the first reader with a\n"
	"                       card), unix:PATH for a module daemon, or a module file, run\n"
	"                       in-process\n"
	"  -u, --ua UA          unique address to assign (default: the authority's next): 8\n"
	"                       hexadecimal digits as 'card info' prints it (0000000C), or 0x and\n"
	"                       1 to 8 digits (0xC)\n"
	"      --key KEYFILE    the module's root key: where to write it (--out), or the module\n"
	"                       file's (--card FILE; default FILE with .card replaced by .key;\n"
	"                       refused with --card pcsc: or unix:)\n";

static const char blank_help[] =
	"usage: keyhole card blank --out FILE [--key KEYFILE]\n"
	"\n"
	"Make a blank software module, as it leaves the factory: a fresh root key and no role, unique\n"
	"address, keys or certificates. Writes FILE (sealed state), KEYFILE (root key, mode 0600;\n"
	"default FILE with .card replaced by .key) and FILE.ctr (state counter); existing files are\n"
	"never overwritten. Personalise it with keyhole card issue --card, in its file or served in a\n"
	"reader (keyhole card serve --vpcd).\n"
	"\n"
	"  -o, --out FILE       card file to create (conventionally NAME.card)\n"
	"      --key KEYFILE    where to write the module's root key\n";

static const char info_help[] =
	"usage: keyhole card info --card SPEC [--key KEYFILE]\n"
	"\n"
	"Ask a module for its public facts (role, unique address, lifecycle, state counter) with a\n"
	"GET INFO command.\n"
	"\n"
	"  -c, --card SPEC      the module: a module file, run in-process, unix:PATH for a daemon,\n"
	"                       or pcsc:READER for the card in a PC/SC reader (exact name or\n"
	"                       unique prefix; pcsc: the first reader with a card)\n"
	"      --key KEYFILE    the module file's root key (default: FILE with .card replaced by .key)\n";

static const char serve_help[] =
	"usage: keyhole card serve --socket PATH --card FILE [--key KEYFILE]\n"
	"       keyhole card serve --vpcd [HOST:]PORT --card FILE [--key KEYFILE]\n"
	"\n"
	"Run the module in FILE as a daemon answering command APDUs on a UNIX socket (mode 0600),\n"
	"framed as a 4-byte big-endian length and the APDU bytes, or as the card in pcscd's\n"
	"vsmartcard-vpcd reader (the card side connects to the driver, and connects again whenever\n"
	"the driver or pcscd goes away). Every state change is sealed and written to FILE before its\n"
	"answer is sent. Stops on SIGINT or SIGTERM. With --vpcd, SIGUSR1 takes the card out of the\n"
	"reader and SIGUSR2 puts it back.\n"
	"\n"
	"      --socket PATH    the UNIX socket to create (clients name it unix:PATH)\n"
	"      --vpcd [HOST:]PORT  the vpcd reader driver to plug into (HOST default 127.0.0.1;\n"
	"                       the driver's default port is 35963)\n"
	"  -c, --card FILE      the module file (held locked while served)\n"
	"      --key KEYFILE    its root key (default: FILE with .card replaced by .key)\n";

/*
 * Personalise the blank module spec names where it is (a reader, a daemon, its file). On error
 * what (whatlen bytes) names what failed: the module, the authority, or the personalisation.
 */
static kh_err personalise(const char *authdir, enum kh_role role, uint32_t ua, const char *spec, const char *key,
			  uint32_t *issued_ua, char *what, size_t whatlen)
{
	struct kh_authority *a = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_issued *iss = calloc(1, sizeof *iss);
	char mod[4200];
	kh_err r;

	if (!iss)
		return KH_ERR_NOMEM;
	snprintf(what, whatlen, "%s", authdir);
	if ((r = kh_authority_open(authdir, &a)) != KH_OK)
		goto out;
	if ((r = kh_cli_open_module(spec, key, &sm, &t, mod, sizeof mod)) != KH_OK) {
		snprintf(what, whatlen, "%s", mod);
		goto out;
	}
	/* kh_authority_personalise refuses a module that is not blank before it spends anything. */
	snprintf(what, whatlen, "personalisation of %s", mod);
	if ((r = kh_authority_personalise(a, &t, role, ua, iss)) != KH_OK)
		goto out;
	*issued_ua = iss->ua;
out:
	kh_transport_close(&t);
	kh_softmod_free(sm);
	kh_authority_free(a);
	free(iss);
	return r;
}

static int cmd_issue(int argc, char **argv)
{
	static const struct option opts[] = {
		{"authority", required_argument, NULL, 'a'}, {"role", required_argument, NULL, 'r'},
		{"out", required_argument, NULL, 'o'},       {"card", required_argument, NULL, 'c'},
		{"ua", required_argument, NULL, 'u'},        {"key", required_argument, NULL, O_KEY},
		{"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};
	const char *dir = NULL, *out = NULL, *card = NULL, *key = NULL, *role_s = NULL, *what = NULL;
	unsigned char seen[512] = {0};
	char whatbuf[8400];
	const char *twice;
	enum kh_role role;
	uint32_t ua = 0;
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+a:r:o:c:u:h", opts, NULL)) != -1) {
		if ((twice = kh_cli_twice(opts, c, seen)) != NULL)
			return kh_cli_usage("card issue", "--%s is given twice (it takes one value)", twice);
		switch (c) {
		case 'a': dir = optarg; break;
		case 'r': role_s = optarg; break;
		case 'o': out = optarg; break;
		case 'c': card = optarg; break;
		case O_KEY: key = optarg; break;
		case 'u':
			if (kh_cli_parse_ua(optarg, &ua) != 0)
				return kh_cli_usage("card issue", "--ua takes a unique address: %s", KH_CLI_UA_FORMS);
			break;
		case 'h': fputs(issue_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("card issue", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("card issue", "unexpected argument '%s'", argv[optind]);
	if (!dir || !role_s)
		return kh_cli_usage("card issue", "--authority, --role and one of --out or --card are required");
	if (!!out == !!card)
		return kh_cli_usage("card issue", "one of --out (a new module file) or --card (a blank module) is "
						  "required, not both");
	if (card && key && (strncmp(card, "pcsc:", 5) == 0 || strncmp(card, "unix:", 5) == 0))
		return kh_cli_usage("card issue", "--key goes with a module file, not with %.5s", card);
	if (kh_role_parse(role_s, &role) != KH_OK ||
	    (role != KH_ROLE_CARD && role != KH_ROLE_CAM && role != KH_ROLE_DECODER && role != KH_ROLE_PROCESSOR &&
	     role != KH_ROLE_BUYER && role != KH_ROLE_KEYCARD))
		return kh_cli_usage("card issue", "--role must be card, cam, decoder, processor, buyer or keycard");

	if (card) {
		if ((r = personalise(dir, role, ua, card, key, &ua, whatbuf, sizeof whatbuf)) != KH_OK)
			return kh_cli_fail(whatbuf, r);
		out = card;
	} else if ((r = kh_cli_issue(dir, role, ua, out, key, &ua, &what)) != KH_OK) {
		return kh_cli_fail(what, r);
	}
	printf("issued %s %08X: %s (certificates %s/issued/%s-%08X-{sign,pair}.crt)\n", kh_role_name(role), ua,
	       out, dir, kh_role_name(role), ua);
	return KH_EXIT_OK;
}

static int cmd_blank(int argc, char **argv)
{
	static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
					     {"key", required_argument, NULL, O_KEY},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *out = NULL, *key = NULL;
	unsigned char seen[512] = {0};
	struct kh_softmod *sm = NULL;
	const char *twice;
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
		if ((twice = kh_cli_twice(opts, c, seen)) != NULL)
			return kh_cli_usage("card blank", "--%s is given twice (it takes one value)", twice);
		switch (c) {
		case 'o': out = optarg; break;
		case O_KEY: key = optarg; break;
		case 'h': fputs(blank_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("card blank", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("card blank", "unexpected argument '%s'", argv[optind]);
	if (!out)
		return kh_cli_usage("card blank", "--out is required");
	/* kh_softmod_save checks too; asking first spares making a module for nothing. */
	if ((r = kh_softmod_check_free(out, key)) == KH_OK && (r = kh_softmod_new_blank(&sm)) == KH_OK)
		r = kh_softmod_save(sm, out, key);
	kh_softmod_free(sm);
	if (r != KH_OK)
		return kh_cli_fail(out, r);
	printf("blank module: %s\n", out);
	return KH_EXIT_OK;
}

static const char *lifecycle_name(uint8_t l)
{
	return l == 0 ? "blank" : l == 1 ? "keys generated" : l == 2 ? "personalised" : "unknown";
}

static int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {{"card", required_argument, NULL, 'c'},
					     {"key", required_argument, NULL, O_KEY},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *card = NULL, *key = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_module_info info;
	char what[4200];
	int c;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': card = optarg; break;
		case O_KEY: key = optarg; break;
		case 'h': fputs(info_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("card info", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("card info", "unexpected argument '%s'", argv[optind]);
	if (!card)
		return kh_cli_usage("card info", "--card is required");
	if ((r = kh_cli_open_module(card, key, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	r = kh_host_info(&t, &info);
	kh_transport_close(&t);
	kh_softmod_free(sm);
	if (r != KH_OK)
		return kh_cli_fail(card, r);
	printf("role: %s\nunique address: %08X\nlifecycle: %s\nstate counter: %llu\n",
	       kh_role_name((enum kh_role)info.role) ? kh_role_name((enum kh_role)info.role) : "none", info.ua,
	       lifecycle_name(info.lifecycle), (unsigned long long)info.counter);
	return KH_EXIT_OK;
}

static volatile sig_atomic_t ejected;

static void on_eject(int sig)
{
	ejected = sig == SIGUSR1;
}

/* SIGUSR1 ejects the card, SIGUSR2 inserts it again. */
static void eject_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_eject;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
}

/* [HOST:]PORT, PORT 1 to 65535; host points into spec (or NULL), hostbuf holds it. */
static int parse_vpcd(const char *spec, char *hostbuf, size_t cap, const char **host, uint16_t *port)
{
	const char *colon = strrchr(spec, ':'), *p = colon ? colon + 1 : spec;
	char *end;
	unsigned long v;

	*host = NULL;
	if (colon) {
		size_t n = (size_t)(colon - spec);
		if (n == 0 || n >= cap)
			return -1;
		memcpy(hostbuf, spec, n);
		hostbuf[n] = '\0';
		*host = hostbuf;
	}
	if (*p < '0' || *p > '9')
		return -1;
	v = strtoul(p, &end, 10);
	if (*end || v == 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* Serve the module in sm as the card in a vpcd reader. */
static int serve_vpcd(struct kh_softmod *sm, const char *host, uint16_t port)
{
	struct kh_vpcd_opts o = {.host = host, .port = port, .ejected = &ejected};
	kh_err r;

	o.stop = kh_cli_stop_signals();
	eject_signals();
	if ((r = kh_serve_vpcd(kh_softmod_module(sm), &o)) != KH_OK)
		return kh_cli_fail(host ? host : "vpcd", r);
	return KH_EXIT_OK;
}

static int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {{"socket", required_argument, NULL, O_SOCKET},
					     {"vpcd", required_argument, NULL, O_VPCD},
					     {"card", required_argument, NULL, 'c'},
					     {"key", required_argument, NULL, O_KEY},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *sock = NULL, *vpcd = NULL, *card = NULL, *key = NULL, *host = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	char what[4200], hostbuf[256];
	uint16_t port = 0;
	int c, rc;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		switch (c) {
		case O_SOCKET: sock = optarg; break;
		case O_VPCD: vpcd = optarg; break;
		case 'c': card = optarg; break;
		case O_KEY: key = optarg; break;
		case 'h': fputs(serve_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("card serve", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("card serve", "unexpected argument '%s'", argv[optind]);
	if (!!sock == !!vpcd || !card)
		return kh_cli_usage("card serve", "--card and one of --socket or --vpcd are required");
	if (vpcd && parse_vpcd(vpcd, hostbuf, sizeof hostbuf, &host, &port) != 0)
		return kh_cli_usage("card serve", "--vpcd takes [HOST:]PORT with PORT 1 to 65535: '%s'", vpcd);
	if ((r = kh_cli_open_module(card, key, &sm, &t, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	if (!sm) {
		kh_transport_close(&t);
		return kh_cli_usage("card serve", "--card takes a card file, not a socket or a reader");
	}
	if (vpcd) {
		rc = serve_vpcd(sm, host, port);
		kh_softmod_free(sm);
		return rc;
	}
	r = kh_serve_unix(sock, kh_softmod_module(sm), kh_cli_stop_signals());
	kh_softmod_free(sm);
	if (r != KH_OK)
		return kh_cli_fail(sock, r);
	return KH_EXIT_OK;
}

static const struct kh_cli_cmd sub[] = {
	{"blank", cmd_blank, "make a blank module file, to be personalised with issue --card"},
	{"issue", cmd_issue, "personalise a new card or CAM, or a blank one, from the authority"},
	{"info", cmd_info, "show a module's role, unique address and lifecycle"},
	{"serve", cmd_serve, "serve a module on a UNIX socket or in a vpcd PC/SC reader"},
};

int kh_cmd_card(int argc, char **argv)
{
	return kh_cli_dispatch("card", sub, sizeof sub / sizeof sub[0], argc, argv);
}
