/*
 * keyhole keycard: a key card's host (seed 004, docs/protocols/keycenter.md; the library is
 * include/keyhole/keycardclient.h). Shows the card's state, activates it at the key center,
 * sends a document sealed under the card's next send key, fetches the mailbox to files, and
 * opens a delivery with the key the card gives for it. See keyhole-keycard(1).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keyhole/keycardclient.h"
#include "keyhole/keycardhost.h"
#include "keyhole/softmodule.h"

#define CARD_OPTS                                                                                          \
	"  -c, --card SPEC      the key card: a module file, run in-process, unix:PATH for a daemon,\n" \
	"                       or pcsc:READER for a card in a smart-card reader\n" \
	"      --key KEYFILE    the card file's root key (default: FILE with .card replaced by .key)\n"
#define CENTER_OPTS                                                               \
	"      --center URL     the key center (keyhole keycenter serve)\n"         \
	"      --cacert FILE    PEM CA certificates to check the key center's HTTPS certificate with\n"

/* The card named on the command line, opened; an exit status. */
static int open_card(const char *spec, const char *key, struct kh_softmod **sm, struct kh_transport *t)
{
	char what[4400] = "";
	kh_err r = kh_cli_open_module(spec, key, sm, t, what, sizeof what);

	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(what[0] ? what : spec, r);
}

static void close_card(struct kh_softmod *sm, struct kh_transport *t)
{
	kh_transport_close(t);
	kh_softmod_free(sm);
}

/* A client of the key center; an exit status. */
static int open_center(const char *P, const char *url, const char *cacert, struct kh_keycard_client **c)
{
	kh_err r = kh_keycard_client_new(url, cacert, c);

	if (r == KH_ERR_INVAL)
		return kh_cli_usage(P, "--center takes an https:// URL (or http:// to the loopback host)");
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail("key center", r);
}

/* A failure of the client: its own words when it has them. */
static int client_fail(struct kh_keycard_client *c, const char *what, kh_err r)
{
	const char *m = kh_keycard_client_error(c);

	if (m && *m) {
		fprintf(stderr, "keyhole: %s\n", m);
		return KH_EXIT_FAIL;
	}
	return kh_cli_fail(what, r);
}

/* ---------------------------------------------------------------- status */

static const char status_help[] =
	"usage: keyhole keycard status --card SPEC [--key KEYFILE]\n"
	"\n"
	"Ask a key card for its public state (KC STATUS): its serial (its unique address) and the\n"
	"key center it is enrolled with (00000000: none), both in hexadecimal; the index its send\n"
	"chain gives next, the last post the center acknowledged and the lowest index its receive\n"
	"chain still opens.\n"
	"\n" CARD_OPTS;

static int cmd_status(int argc, char **argv)
{
	static const char *const P = "keycard status";
	const char *card = NULL, *key = NULL;
	struct kh_cli_optv ov[] = {{"card", &card, 1, 'c'}, {"key", &key, 0, 0}};
	struct kh_keycard_status st;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, status_help, ov, 2, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_card(card, key, &sm, &t)) != KH_EXIT_OK)
		return rc;
	r = kh_keycard_status(&t, &st);
	close_card(sm, &t);
	if (r != KH_OK)
		return kh_cli_fail(card, r);
	printf("serial: %08" PRIX64 "\ncenter: %08" PRIX32 "\n", st.serial, st.center);
	printf("send: %" PRIu64 "\nacked: %" PRIu64 "\nrecv: %" PRIu64 "\n", st.send, st.acked, st.recv);
	return KH_EXIT_OK;
}

/* ---------------------------------------------------------------- activate */

static const char activate_help[] =
	"usage: keyhole keycard activate --center URL (--serial SERIAL | --card SPEC [--key KEYFILE])\n"
	"           (--code CODE | --code-file FILE) [--cacert FILE]\n"
	"\n"
	"Activate a key card at its key center with the access code given with it. Until then the\n"
	"card can neither send nor receive. Five wrong codes lock activation for a while. Prints\n"
	"'activated SERIAL as ADDRESS'.\n"
	"\n" CENTER_OPTS
	"      --serial SERIAL  the card's serial: 8 hexadecimal digits as 'keycard status' and\n"
	"                       'keycenter enrol' print it, or 0x and 1 to 8\n" CARD_OPTS
	"      --code CODE      the access code (XXXX-XXXX-XXXX-XXXX)\n"
	"      --code-file FILE the same, read from a file only its owner may read (kept out of\n"
	"                       the process list and the shell's history)\n";

/* The serial of --serial, or of the card --card names; an exit status. */
static int serial_of(const char *P, const char *num, const char *card, const char *key, uint64_t *serial)
{
	struct kh_keycard_status st;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	kh_err r;
	int rc;

	uint32_t ua = 0;

	if (num) {
		/* a card's serial is its unique address, written as every UA is */
		if (kh_cli_parse_ua(num, &ua) != 0)
			return kh_cli_usage(P, "--serial takes a card's serial: %s", KH_CLI_UA_FORMS);
		*serial = ua;
		return KH_EXIT_OK;
	}
	if ((rc = open_card(card, key, &sm, &t)) != KH_EXIT_OK)
		return rc;
	r = kh_keycard_status(&t, &st);
	close_card(sm, &t);
	if (r != KH_OK)
		return kh_cli_fail(card, r);
	*serial = st.serial;
	return KH_EXIT_OK;
}

static int cmd_activate(int argc, char **argv)
{
	static const char *const P = "keycard activate";
	const char *url = NULL, *cacert = NULL, *num = NULL, *card = NULL, *key = NULL, *code = NULL,
		   *code_file = NULL;
	struct kh_cli_optv ov[] = {{"center", &url, 1, 0},	   {"cacert", &cacert, 0, 0}, {"serial", &num, 0, 0},
				   {"card", &card, 0, 'c'},	   {"key", &key, 0, 0},	      {"code", &code, 0, 0},
				   {"code-file", &code_file, 0, 0}};
	char *filed = NULL;
	struct kh_keycard_activated a;
	struct kh_keycard_client *c = NULL;
	uint64_t serial = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, activate_help, ov, 7, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!num == !card)
		return kh_cli_usage(P, "give either --serial or --card");
	if (key && !card)
		return kh_cli_usage(P, "--key goes with --card");
	if (!code == !code_file)
		return kh_cli_usage(P, "give either --code or --code-file");
	if (code_file) {
		if ((rc = kh_cli_read_token(code_file, &filed)) != KH_EXIT_OK)
			return rc;
		code = filed;
	}
	if ((rc = open_center(P, url, cacert, &c)) != KH_EXIT_OK) {
		kh_cli_free_token(filed);
		return rc;
	}
	if ((rc = serial_of(P, num, card, key, &serial)) == KH_EXIT_OK) {
		if ((r = kh_keycard_activate(c, serial, code, &a)) != KH_OK)
			rc = r == KH_ERR_INVAL ? kh_cli_usage(P, "--code takes the access code (XXXX-XXXX-XXXX-XXXX)")
					       : client_fail(c, "activate", r);
		else
			printf("activated %08" PRIX64 " as %s\n", a.serial, a.address);
	}
	kh_keycard_client_free(c);
	kh_cli_free_token(filed);
	return rc;
}

/* ---------------------------------------------------------------- send */

static const char send_help[] =
	"usage: keyhole keycard send --center URL --card SPEC [--key KEYFILE] --to ADDRESS --in FILE\n"
	"           [--cacert FILE]\n"
	"\n"
	"Send the file to the key card at ADDRESS through the key center: the card gives the key of\n"
	"its next message (KC SEND), the file is sealed under it chunk by chunk while it is uploaded,\n"
	"and the center's acknowledgement goes back to the card (KC ACK). When the upload gets no\n"
	"answer it is sent again, the very same bytes, up to 3 times: the center relays it once. The\n"
	"key is forgotten when the command ends. Prints 'sent INDEX to ADDRESS (N bytes)'.\n"
	"\n" CENTER_OPTS CARD_OPTS
	"      --to ADDRESS     the recipient's address (name@center)\n"
	"  -i, --in FILE        the document, a regular file of any size\n";

static int cmd_send(int argc, char **argv)
{
	static const char *const P = "keycard send";
	const char *url = NULL, *cacert = NULL, *card = NULL, *key = NULL, *to = NULL, *in = NULL;
	struct kh_cli_optv ov[] = {{"center", &url, 1, 0}, {"cacert", &cacert, 0, 0}, {"card", &card, 1, 'c'},
				   {"key", &key, 0, 0},	   {"to", &to, 1, 0},	     {"in", &in, 1, 'i'}};
	struct kh_keycard_client *c = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_keycard_sent s;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, send_help, ov, 6, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (kh_kc_addr_check(to, strlen(to)) != KH_OK)
		return kh_cli_usage(P, "--to takes an address: 1 to 64 of a-z 0-9 . _ + - with one @ inside");
	if ((rc = open_center(P, url, cacert, &c)) != KH_EXIT_OK)
		return rc;
	if ((rc = open_card(card, key, &sm, &t)) != KH_EXIT_OK) {
		kh_keycard_client_free(c);
		return rc;
	}
	if ((r = kh_keycard_post(c, &t, to, in, &s)) != KH_OK)
		rc = client_fail(c, "send", r);
	else
		printf("sent %" PRIu64 " to %s (%" PRIu64 " bytes)%s\n", s.index, to, s.length,
		       s.duplicate ? " (the center had it already)" : "");
	close_card(sm, &t);
	kh_keycard_client_free(c);
	return rc;
}

/* ---------------------------------------------------------------- fetch */

static const char fetch_help[] =
	"usage: keyhole keycard fetch --center URL --card SPEC [--key KEYFILE] --out-dir DIR\n"
	"           [--cacert FILE]\n"
	"\n"
	"Fetch the card's mailbox: the card signs the center's challenge (KC HELLO) for a session,\n"
	"each message is written to DIR/INDEX.khm (mode 0600, whole or not at all) and only then\n"
	"deleted at the center. Run again after a failure, it goes on where it stopped. Prints one\n"
	"line per message: 'INDEX from ADDRESS (N bytes)'. The messages stay sealed: 'keycard open'\n"
	"opens them, in index order.\n"
	"\n" CENTER_OPTS CARD_OPTS "      --out-dir DIR    the directory the messages go to (it must exist)\n";

static kh_err print_mail(void *arg, const struct kh_keycard_mail *m)
{
	(void)arg;
	printf("%" PRIu64 " from %s (%" PRIu64 " bytes)%s\n", m->index, m->from, m->size,
	       m->resumed ? " (kept from before)" : "");
	return fflush(stdout) == 0 ? KH_OK : KH_ERR_IO;
}

static int cmd_fetch(int argc, char **argv)
{
	static const char *const P = "keycard fetch";
	const char *url = NULL, *cacert = NULL, *card = NULL, *key = NULL, *dir = NULL;
	struct kh_cli_optv ov[] = {{"center", &url, 1, 0},
				   {"cacert", &cacert, 0, 0},
				   {"card", &card, 1, 'c'},
				   {"key", &key, 0, 0},
				   {"out-dir", &dir, 1, 0}};
	struct kh_keycard_client *c = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, fetch_help, ov, 5, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_center(P, url, cacert, &c)) != KH_EXIT_OK)
		return rc;
	if ((rc = open_card(card, key, &sm, &t)) != KH_EXIT_OK) {
		kh_keycard_client_free(c);
		return rc;
	}
	if ((r = kh_keycard_fetch(c, &t, dir, print_mail, NULL)) != KH_OK)
		rc = client_fail(c, "fetch", r);
	close_card(sm, &t);
	kh_keycard_client_free(c);
	return rc;
}

/* ---------------------------------------------------------------- open */

static const char open_help[] =
	"usage: keyhole keycard open --card SPEC [--key KEYFILE] --in FILE.khm --out FILE\n"
	"\n"
	"Open a message 'keycard fetch' wrote: the card checks its first chunk and gives its key (KC\n"
	"OPEN), and the document is decrypted and checked chunk by chunk into a temporary file beside\n"
	"FILE (mode 0600), renamed over FILE only when all of it verified; nothing is left when it\n"
	"does not. A FIFO or a device is written in place. The same message opens again; an older\n"
	"one than the last opened does not. Prints 'opened INDEX from ADDRESS (N bytes)'.\n"
	"\n" CARD_OPTS
	"  -i, --in FILE        the message\n"
	"  -o, --out FILE       where the document goes\n";

static int cmd_open(int argc, char **argv)
{
	static const char *const P = "keycard open";
	const char *card = NULL, *key = NULL, *in = NULL, *out = NULL;
	struct kh_cli_optv ov[] = {
		{"card", &card, 1, 'c'}, {"key", &key, 0, 0}, {"in", &in, 1, 'i'}, {"out", &out, 1, 'o'}};
	struct kh_softmod *sm = NULL;
	struct kh_transport t = {0};
	struct kh_kc_envelope e;
	char msg[4400];
	uint64_t index = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, open_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_card(card, key, &sm, &t)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_keycard_open_file(&t, in, out, &index, &e, msg, sizeof msg)) != KH_OK) {
		fprintf(stderr, "keyhole: %s\n", msg[0] ? msg : kh_strerror(r));
		rc = KH_EXIT_FAIL;
	} else {
		printf("opened %" PRIu64 " from %s (%" PRIu64 " bytes)\n", index, e.addr, e.length);
	}
	close_card(sm, &t);
	return rc;
}

static const struct kh_cli_cmd sub[] = {
	{"status", cmd_status, "show a key card's serial, key center and chain positions"},
	{"activate", cmd_activate, "activate a key card at its key center with its access code"},
	{"send", cmd_send, "send a file to an address, sealed under the card's next key"},
	{"fetch", cmd_fetch, "fetch the card's mailbox from the key center to files"},
	{"open", cmd_open, "open a fetched message with the key the card gives for it"},
};

int kh_cmd_keycard(int argc, char **argv)
{
	return kh_cli_dispatch("keycard", sub, sizeof sub / sizeof sub[0], argc, argv);
}
