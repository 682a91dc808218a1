/*
 * keyhole seller and keyhole buyer: the escrow's clients (docs/protocols/escrow.md; the library
 * is include/keyhole/escrowclient.h). The seller lists content and encrypts it for the listing;
 * the buyer's host relays between the buyer's device and the escrow, opens what it bought through
 * the device, and shows where each purchase stands.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/escrow.h"
#include "keyhole/device.h"
#include "keyhole/escrowclient.h"
#include "keyhole/file.h"
#include "keyhole/softmodule.h"

/* --escrow, --token-file, --cacert: a client of the escrow, with the account's token. */
int kh_cli_escrow_client(const char *P, const char *url, const char *tfile, const char *cacert,
		       struct kh_escrow_client **c)
{
	char *tok = NULL;
	kh_err r;
	int rc;

	if (tfile && (rc = kh_cli_read_token(tfile, &tok)) != KH_EXIT_OK)
		return rc;
	r = kh_escrow_client_new(url, cacert, tok, c);
	kh_cli_free_token(tok);
	if (r == KH_ERR_INVAL)
		return kh_cli_usage(P, "--escrow takes an http:// or https:// URL");
	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail("escrow", r);
}

/* A failure of the client: its own words when it has them. */
int kh_cli_escrow_fail(struct kh_escrow_client *c, const char *what, kh_err r)
{
	const char *m = kh_escrow_client_error(c);

	if (m && *m) {
		fprintf(stderr, "keyhole: %s\n", m);
		return KH_EXIT_FAIL;
	}
	return kh_cli_fail(what, r);
}

/* --device SPEC: a module file run in-process, unix:PATH for a daemon, or pcsc:READER. */
int kh_cli_escrow_device(const char *spec, struct kh_softmod **sm, struct kh_transport *t)
{
	char what[4400] = "";
	kh_err r = kh_cli_open_module(spec, NULL, sm, t, what, sizeof what);

	return r == KH_OK ? KH_EXIT_OK : kh_cli_fail(what[0] ? what : spec, r);
}

void kh_cli_escrow_device_close(struct kh_softmod *sm, struct kh_transport *t)
{
	kh_transport_close(t);
	kh_softmod_free(sm);
}

/* The escrow's client and the buyer's device, both or neither. An exit status. */
static int open_both(const char *P, const char *url, const char *tfile, const char *cacert, const char *dev,
		     struct kh_escrow_client **c, struct kh_softmod **sm, struct kh_transport *t)
{
	int rc = kh_cli_escrow_client(P, url, tfile, cacert, c);

	if (rc == KH_EXIT_OK && (rc = kh_cli_escrow_device(dev, sm, t)) != KH_EXIT_OK) {
		kh_escrow_client_free(*c);
		*c = NULL;
	}
	return rc;
}

static void print_account(const struct kh_escrow_account_info *a)
{
	printf("account %s available=%lld held=%lld deposited=%lld withdrawn=%lld %s\n", a->name,
	       (long long)a->available, (long long)a->held, (long long)a->deposited, (long long)a->withdrawn,
	       a->currency);
}

/* ---------------------------------------------------------------- seller */

static const char list_help[] =
	"usage: keyhole seller list --escrow URL --token-file FILE --content ID --price N --out FILE\n"
	"           [--deadline SECONDS] [--cacert FILE]\n"
	"\n"
	"Ask the escrow for a listing of content ID at price N (in the smallest unit of the seller's\n"
	"currency): the escrow makes an RSA key for this listing alone and signs the listing. The\n"
	"request is named by the content and the price, so running the same command again gets the\n"
	"same listing. The signed listing goes to FILE (new). Prints 'listing ID'.\n"
	"\n"
	"      --escrow URL      the escrow (keyhole escrow serve)\n"
	"  -T, --token-file FILE the seller account's API token (private to its owner)\n"
	"      --content ID      1 to 64 printable characters, no space\n"
	"      --price N         1 to 9007199254740992\n"
	"  -o, --out FILE       where the listing goes\n"
	"      --deadline S      seconds a buyer's payment stays held without a word from its device\n"
	"                        before it is paid to the seller (default: the escrow's)\n"
	"      --cacert FILE     PEM CA certificates to check the escrow's HTTPS certificate with\n";

static int cmd_list(int argc, char **argv)
{
	static const char *const P = "seller list";
	const char *url = NULL, *tfile = NULL, *content = NULL, *price = NULL, *out = NULL, *deadline = NULL,
		   *cacert = NULL;
	struct kh_cli_optv ov[] = {{"escrow", &url, 1, 0},	{"token-file", &tfile, 1, 'T'}, {"content", &content, 1, 0},
				   {"price", &price, 1, 0},	{"out", &out, 1, 'o'},	      {"deadline", &deadline, 0, 0},
				   {"cacert", &cacert, 0, 0}};
	struct kh_escrow_client *c = NULL;
	struct kh_escrow_listing l;
	uint8_t buf[KH_ESCROW_LISTING_MAX];
	char idem[160], hex[33];
	uint64_t p = 0, dl = 0;
	size_t n = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, list_help, ov, 7, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!kh_escrow_content_ok(content))
		return kh_cli_usage(P, "--content takes 1 to 64 printable characters, no space");
	if (kh_cli_parse_num(price, KH_ESCROW_PRICE_MAX, &p) != 0 || p < 1)
		return kh_cli_usage(P, "--price takes a number from 1 to 9007199254740992");
	if (deadline && (kh_cli_parse_num(deadline, 31622400, &dl) != 0 || dl < 1))
		return kh_cli_usage(P, "--deadline takes a number of seconds from 1 to 31622400");
	if ((rc = kh_cli_escrow_client(P, url, tfile, cacert, &c)) != KH_EXIT_OK)
		return rc;
	snprintf(idem, sizeof idem, "list:%s:%llu:%llu", content, (unsigned long long)p, (unsigned long long)dl);
	if ((r = kh_escrow_list(c, content, p, (uint32_t)dl, idem, buf, &n)) != KH_OK) {
		rc = kh_cli_escrow_fail(c, "list", r);
	} else if ((r = kh_file_write_new(out, buf, n, 0644)) != KH_OK) {
		rc = kh_cli_fail(out, r);
	} else if ((r = kh_escrow_listing_parse(buf, n, NULL, &l)) != KH_OK) {
		rc = kh_cli_fail(out, r);
	} else {
		kh_hex_encode(l.id, sizeof l.id, hex);
		printf("listing %s\n", hex);
		rc = KH_EXIT_OK;
	}
	kh_escrow_client_free(c);
	return rc;
}

static const char encrypt_help[] =
	"usage: keyhole seller encrypt --listing FILE --in FILE --out BASE\n"
	"\n"
	"Encrypt the file under a fresh key K in AES-256-GCM chunks, into BASE.khe (the content, with\n"
	"a header that commits to K), and write BASE.offer: the listing and K encrypted to the\n"
	"listing's key (RSA-OAEP), which only the escrow can open, and only for a buyer's device.\n"
	"Give a buyer both files. K is forgotten. Neither file may exist already.\n"
	"\n"
	"      --listing FILE  the listing (keyhole seller list)\n"
	"  -i, --in FILE       the content\n"
	"  -o, --out BASE      BASE.khe and BASE.offer are written\n";

static int cmd_encrypt(int argc, char **argv)
{
	static const char *const P = "seller encrypt";
	const char *lfile = NULL, *in = NULL, *base = NULL;
	struct kh_cli_optv ov[] = {{"listing", &lfile, 1, 0}, {"in", &in, 1, 'i'}, {"out", &base, 1, 'o'}};
	char *khe = NULL, *off = NULL;
	uint8_t *l = NULL;
	size_t ln = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, encrypt_help, ov, 3, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (asprintf(&khe, "%s.khe", base) < 0 || asprintf(&off, "%s.offer", base) < 0) {
		free(khe);
		return kh_cli_fail("encrypt", KH_ERR_NOMEM);
	}
	if ((r = kh_file_read(lfile, KH_ESCROW_LISTING_MAX, &l, &ln)) != KH_OK) {
		rc = kh_cli_fail(lfile, r);
	} else if ((r = kh_escrow_seal_content(l, ln, in, 0, khe, off)) != KH_OK) {
		rc = kh_cli_fail(r == KH_ERR_EXISTS ? khe : r == KH_ERR_FORMAT || r == KH_ERR_TRUNCATED ? lfile : in, r);
	} else {
		printf("content %s offer %s\n", khe, off);
		rc = KH_EXIT_OK;
	}
	kh_file_free(l, ln);
	free(khe);
	free(off);
	return rc;
}

static const char account_help[] =
	"usage: keyhole seller account --escrow URL --token-file FILE [--withdraw N --idempotency-key KEY]\n"
	"           [--cacert FILE]\n"
	"\n"
	"Show the account's money at the escrow: available (paid to it and not withdrawn), held (its\n"
	"own purchases waiting for their device's word), deposited and withdrawn. With --withdraw, pay\n"
	"N out of the available money first (money held for a sale is not the seller's until the\n"
	"buyer's device confirms it, or its deadline passes); KEY names the withdrawal, so a repeat\n"
	"pays nothing more. Prints 'account NAME available=N held=N deposited=N withdrawn=N CUR'.\n"
	"\n"
	"      --escrow URL      the escrow\n"
	"  -T, --token-file FILE the account's API token\n"
	"      --withdraw N      what to pay out, 1 to 9007199254740992\n"
	"      --idempotency-key KEY  1 to 128 visible characters\n"
	"      --cacert FILE     PEM CA certificates to check the escrow's HTTPS certificate with\n";

static int cmd_account(int argc, char **argv)
{
	static const char *const P = "seller account";
	const char *url = NULL, *tfile = NULL, *amount = NULL, *key = NULL, *cacert = NULL;
	struct kh_cli_optv ov[] = {{"escrow", &url, 1, 0},	{"token-file", &tfile, 1, 'T'}, {"withdraw", &amount, 0, 0},
				   {"idempotency-key", &key, 0, 0}, {"cacert", &cacert, 0, 0}};
	struct kh_escrow_account_info a;
	struct kh_escrow_client *c = NULL;
	uint64_t v = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, account_help, ov, 5, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((amount == NULL) != (key == NULL))
		return kh_cli_usage(P, "--withdraw and --idempotency-key go together");
	if (amount && (kh_cli_parse_num(amount, KH_ESCROW_PRICE_MAX, &v) != 0 || v < 1))
		return kh_cli_usage(P, "--withdraw takes a number from 1 to 9007199254740992");
	if ((rc = kh_cli_escrow_client(P, url, tfile, cacert, &c)) != KH_EXIT_OK)
		return rc;
	r = amount ? kh_escrow_withdraw(c, (int64_t)v, key, &a) : kh_escrow_account_info(c, &a);
	if (r == KH_ERR_INVAL)
		rc = kh_cli_usage(P, "--idempotency-key takes 1 to 128 visible characters");
	else if (r != KH_OK)
		rc = kh_cli_escrow_fail(c, "account", r);
	else
		print_account(&a);
	kh_escrow_client_free(c);
	return rc;
}

static const struct kh_cli_cmd seller_sub[] = {
	{"list", cmd_list, "ask the escrow for a listing: a key of its own for one content at one price"},
	{"encrypt", cmd_encrypt, "encrypt content for a listing: the content file and the buyer's offer"},
	{"split", kh_cmd_seller_split, "encrypt content with its key split among several escrows and the device"},
	{"grant", kh_cmd_seller_grant, "grant a split key's device share to one buyer's device"},
	{"account", cmd_account, "the seller's money at the escrow; withdraw what was paid"},
};

int kh_cmd_seller(int argc, char **argv)
{
	return kh_cli_dispatch("seller", seller_sub, sizeof seller_sub / sizeof seller_sub[0], argc, argv);
}

/* ---------------------------------------------------------------- buyer */

static const char buy_help[] =
	"usage: keyhole buyer buy --escrow URL --token-file FILE --device SPEC --offer FILE\n"
	"           --content FILE --out BASE [--cacert FILE]\n"
	"\n"
	"Buy the offer's content for the buyer's device: the device blinds the seller's encrypted key\n"
	"and signs the request, the escrow holds the price and answers, the device unblinds the answer,\n"
	"checks it, and signs its notice, which settles the purchase: delivered (the seller is paid;\n"
	"BASE.lic, a licence only this device opens, is written) or failed (the buyer is refunded).\n"
	"BASE.notice keeps the notice. While a purchase is under way BASE.purchase keeps it: the same\n"
	"command finishes it after any failure, never paying twice. Prints 'delivered PURCHASE' or\n"
	"'failed PURCHASE REASON', then the escrow's state of it. Exits 1 when the purchase failed.\n"
	"An offer of one share of a split key (keyhole seller split) leaves the share on the device,\n"
	"unsettled, and BASE.purchase in place: prints 'share PURCHASE held on the device'; keyhole\n"
	"buyer combine settles it once enough escrows have answered.\n"
	"\n"
	"      --escrow URL      the escrow\n"
	"  -T, --token-file FILE the buyer account's API token\n"
	"      --device SPEC     the buyer's device: a module file (run in-process), unix:PATH for a\n"
	"                        daemon (keyhole card serve), or pcsc:READER in a smart-card reader\n"
	"      --offer FILE      the seller's offer (keyhole seller encrypt or split)\n"
	"      --content FILE    the encrypted content\n"
	"  -o, --out BASE        BASE.lic, BASE.notice (and BASE.purchase while under way)\n"
	"      --cacert FILE     PEM CA certificates to check the escrow's HTTPS certificate with\n";

const char *const kh_cli_escrow_reasons[6] = {"none", "unblind", "key", "commit", "cancelled", "shares"};

static int cmd_buy(int argc, char **argv)
{
	static const char *const P = "buyer buy";
	const char *url = NULL, *tfile = NULL, *dev = NULL, *offer = NULL, *content = NULL, *base = NULL, *cacert = NULL;
	struct kh_cli_optv ov[] = {{"escrow", &url, 1, 0},	    {"token-file", &tfile, 1, 'T'}, {"device", &dev, 1, 0},
				   {"offer", &offer, 1, 0},	    {"content", &content, 1, 0},  {"out", &base, 1, 'o'},
				   {"cacert", &cacert, 0, 0}};
	struct kh_escrow_client *c = NULL;
	struct kh_escrow_bought b;
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	char hex[33];
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, buy_help, ov, 7, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_both(P, url, tfile, cacert, dev, &c, &sm, &t)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_escrow_buy(c, &t, offer, content, base, &b)) != KH_OK) {
		rc = kh_cli_escrow_fail(c, "buy", r);
	} else {
		kh_hex_encode(b.purchase, sizeof b.purchase, hex);
		if (b.share)
			printf("share %s held on the device (keyhole buyer combine settles it)%s\n", hex,
			       b.resumed ? " (resumed)" : "");
		else if (b.outcome == KH_ESCROW_DELIVERED)
			printf("delivered %s escrow=%s%s\n", hex, b.state, b.resumed ? " (resumed)" : "");
		else
			printf("failed %s %s escrow=%s%s\n", hex, b.reason < 6 ? kh_cli_escrow_reasons[b.reason] : "?", b.state,
			       b.resumed ? " (resumed)" : "");
		rc = b.share || b.outcome == KH_ESCROW_DELIVERED ? KH_EXIT_OK : KH_EXIT_FAIL;
	}
	kh_cli_escrow_device_close(sm, &t);
	kh_escrow_client_free(c);
	return rc;
}

static const char cancel_help[] =
	"usage: keyhole buyer cancel --escrow URL --token-file FILE --device SPEC --out BASE\n"
	"           [--cacert FILE]\n"
	"\n"
	"Give up the purchase under way in BASE.purchase (its answer not yet unblinded, or a share of a\n"
	"split key held on the device): the escrow is asked for its answer first if it never came (a\n"
	"refusal means nothing was held), then the device cancels the purchase and signs a failed\n"
	"notice, kept in BASE.notice and sent to the escrow, which refunds the buyer; BASE.purchase is\n"
	"removed. A purchase the device delivered cannot be given up. Prints 'cancelled PURCHASE\n"
	"escrow=STATE'.\n"
	"\n"
	"      --escrow URL      the purchase's escrow\n"
	"  -T, --token-file FILE the buyer account's API token\n"
	"      --device SPEC     the buyer's device (module file, unix:PATH, or pcsc:READER)\n"
	"  -o, --out BASE        the purchase's BASE, as keyhole buyer buy was given it\n"
	"      --cacert FILE     PEM CA certificates to check the escrow's HTTPS certificate with\n";

static int cmd_cancel(int argc, char **argv)
{
	static const char *const P = "buyer cancel";
	const char *url = NULL, *tfile = NULL, *dev = NULL, *base = NULL, *cacert = NULL;
	struct kh_cli_optv ov[] = {{"escrow", &url, 1, 0},	{"token-file", &tfile, 1, 'T'}, {"device", &dev, 1, 0},
				   {"out", &base, 1, 'o'}, {"cacert", &cacert, 0, 0}};
	struct kh_escrow_client *c = NULL;
	struct kh_escrow_bought b;
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	char hex[33];
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, cancel_help, ov, 5, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_both(P, url, tfile, cacert, dev, &c, &sm, &t)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_escrow_cancel(c, &t, base, &b)) != KH_OK) {
		rc = kh_cli_escrow_fail(c, "cancel", r);
	} else {
		kh_hex_encode(b.purchase, sizeof b.purchase, hex);
		printf("cancelled %s escrow=%s\n", hex, b.state);
	}
	kh_cli_escrow_device_close(sm, &t);
	kh_escrow_client_free(c);
	return rc;
}

static const char open_help[] =
	"usage: keyhole buyer open --device SPEC --licence FILE --content FILE --out FILE\n"
	"\n"
	"Decrypt bought content through the buyer's device, which holds its key: the licence opens only\n"
	"on the device it was made for, and only the content it was bought for. The plaintext goes to\n"
	"FILE only: a regular file appears whole (written beside it, then renamed into place) or not at\n"
	"all; a FIFO, a device or - (standard output) is written as it comes. A chunk that does not\n"
	"verify stops it (exit 1), and nothing is left at a regular FILE.\n"
	"\n"
	"      --device SPEC   the buyer's device (module file, unix:PATH, or pcsc:READER)\n"
	"      --licence FILE  BASE.lic from keyhole buyer buy\n"
	"      --content FILE  the encrypted content\n"
	"  -o, --out FILE      where the plaintext goes\n";

static int cmd_open(int argc, char **argv)
{
	static const char *const P = "buyer open";
	const char *dev = NULL, *lic = NULL, *content = NULL, *out = NULL;
	struct kh_cli_optv ov[] = {{"device", &dev, 1, 0}, {"licence", &lic, 1, 0}, {"content", &content, 1, 0},
				   {"out", &out, 1, 'o'}};
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	char msg[512];
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, open_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = kh_cli_escrow_device(dev, &sm, &t)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_escrow_open(&t, lic, content, out, msg, sizeof msg)) != KH_OK) {
		if (msg[0])
			fprintf(stderr, "keyhole: %s\n", msg);
		else
			kh_cli_fail(content, r);
		rc = KH_EXIT_FAIL;
	}
	kh_cli_escrow_device_close(sm, &t);
	return rc;
}

static const char status_help[] =
	"usage: keyhole buyer status --device SPEC [--escrow URL --token-file FILE] [--cacert FILE]\n"
	"\n"
	"Show every purchase the buyer's device holds (it keeps the last 16), one a line: 'PURCHASE\n"
	"LISTING DEVICE-STATE [REASON] escrow=STATE price=N deadline=T'; with --escrow, the escrow's\n"
	"state of each (held, delivered, failed, swept; unknown for one it refused) and the account's\n"
	"money last.\n"
	"\n"
	"      --device SPEC     the buyer's device (module file, unix:PATH, or pcsc:READER)\n"
	"      --escrow URL      the escrow\n"
	"  -T, --token-file FILE the buyer account's API token\n"
	"      --cacert FILE     PEM CA certificates to check the escrow's HTTPS certificate with\n";

static kh_err print_status(void *arg, const struct kh_escrow_status *s)
{
	static const char *const states[] = {"?", "pending", "delivered", "failed", "share"};
	char p[33], l[33];

	(void)arg;
	kh_hex_encode(s->purchase, sizeof s->purchase, p);
	kh_hex_encode(s->listing, sizeof s->listing, l);
	printf("%s %s %s", p, l, s->device_state <= 4 ? states[s->device_state] : "?");
	if (s->device_state == KH_ESCROW_SLOT_FAILED)
		printf(" %s", s->reason < 6 ? kh_cli_escrow_reasons[s->reason] : "?");
	if (s->escrow_state[0])
		printf(" escrow=%s price=%lld deadline=%lld", s->escrow_state, (long long)s->price,
		       (long long)s->deadline);
	printf("\n");
	return KH_OK;
}

static int cmd_status(int argc, char **argv)
{
	static const char *const P = "buyer status";
	const char *dev = NULL, *url = NULL, *tfile = NULL, *cacert = NULL;
	struct kh_cli_optv ov[] = {{"device", &dev, 1, 0}, {"escrow", &url, 0, 0}, {"token-file", &tfile, 0, 'T'},
				   {"cacert", &cacert, 0, 0}};
	struct kh_escrow_client *c = NULL;
	struct kh_escrow_account_info a;
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, status_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((url == NULL) != (tfile == NULL))
		return kh_cli_usage(P, "--escrow and --token-file go together");
	if (url && (rc = kh_cli_escrow_client(P, url, tfile, cacert, &c)) != KH_EXIT_OK)
		return rc;
	if ((rc = kh_cli_escrow_device(dev, &sm, &t)) == KH_EXIT_OK) {
		if ((r = kh_escrow_status(c, &t, print_status, NULL)) != KH_OK)
			rc = c ? kh_cli_escrow_fail(c, "status", r) : kh_cli_fail(dev, r);
		else if (c && (r = kh_escrow_account_info(c, &a)) != KH_OK)
			rc = kh_cli_escrow_fail(c, "account", r);
		else if (c)
			print_account(&a);
		kh_cli_escrow_device_close(sm, &t);
	}
	kh_escrow_client_free(c);
	return rc;
}

static const struct kh_cli_cmd buyer_sub[] = {
	{"buy", cmd_buy, "buy an offer for the buyer's device through the escrow"},
	{"open", cmd_open, "decrypt bought content through the buyer's device"},
	{"status", cmd_status, "the purchases the device holds, and the escrow's word on each"},
	{"cancel", cmd_cancel, "give up a purchase under way (or a share held): the escrow refunds it"},
	{"cert", kh_cmd_buyer_cert, "the device's pairing certificate, for a seller's grant"},
	{"combine", kh_cmd_buyer_combine, "recover a split key from escrows' shares and the device's"},
};

int kh_cmd_buyer(int argc, char **argv)
{
	return kh_cli_dispatch("buyer", buyer_sub, sizeof buyer_sub / sizeof buyer_sub[0], argc, argv);
}
