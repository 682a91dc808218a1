/*
 * The split-key variant of the escrow (docs/protocols/escrow.md "Split key"): keyhole seller split
 * and grant, keyhole buyer cert and combine. K is shared among the buyer's device and several
 * escrows; each escrow sells its share as it sells a plain key (keyhole buyer buy), and the device
 * recovers K only with its own share and enough escrows' answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/escrow.h"
#include "keyhole/cert.h"
#include "keyhole/file.h"
#include "keyhole/shamir.h"

#define PARTS_MAX (KH_SHAMIR_MAX_N - 1)

/* "a,b,c" into at most PARTS_MAX non-empty items pointing into a copy (*buf, to free). */
static int split_list(const char *P, const char *opt, const char *list, char **buf, char **item, size_t *n)
{
	char *save = NULL, *tok;

	*n = 0;
	if (!(*buf = strdup(list)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	for (tok = strtok_r(*buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n == PARTS_MAX)
			return kh_cli_usage(P, "--%s takes at most %d items", opt, PARTS_MAX);
		item[(*n)++] = tok;
	}
	if (!*n || list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
		return kh_cli_usage(P, "--%s takes a comma-separated list without empty items", opt);
	return KH_EXIT_OK;
}

/* ---------------------------------------------------------------- seller split */

static const char split_help[] =
	"usage: keyhole seller split --listings FILE,FILE[,...] --need N --in FILE --out BASE\n"
	"\n"
	"Encrypt the file under a fresh key K, as seller encrypt does, but give no escrow K itself: K\n"
	"is split (Shamir's sharing over a 256-bit prime field) into one share for the buyer's device\n"
	"and one for each listing's escrow, so that the device's share and any N of the escrows'\n"
	"recover K, while fewer escrows, or escrows without the device, learn nothing of it. Each\n"
	"listing must be at an escrow of its own, all for the same content. Writes BASE.khe (the\n"
	"content), BASE.1.offer to BASE.M.offer (one per listing, in the order given: what buyers buy\n"
	"from each escrow) and BASE.share, the device's share (private, mode 0600: grant it to each\n"
	"buyer's device with keyhole seller grant, never hand it out). All new files, or none.\n"
	"Prints 'content BASE.khe offers M need N'.\n"
	"\n"
	"      --listings FILES  the listings (keyhole seller list), comma-separated, 1 to 15\n"
	"      --need N          escrows' shares a device needs: 1 to the number of listings\n"
	"  -i, --in FILE         the content\n"
	"  -o, --out BASE        where the files go\n";

int kh_cmd_seller_split(int argc, char **argv)
{
	static const char *const P = "seller split";
	const char *lists = NULL, *need = NULL, *in = NULL, *base = NULL;
	struct kh_cli_optv ov[] = {{"listings", &lists, 1, 0}, {"need", &need, 1, 0}, {"in", &in, 1, 'i'},
				   {"out", &base, 1, 'o'}};
	char *buf = NULL, *item[PARTS_MAX], *offer[PARTS_MAX] = {NULL}, *khe = NULL, *share = NULL;
	uint8_t *l[PARTS_MAX] = {NULL};
	size_t ll[PARTS_MAX] = {0}, n = 0;
	uint64_t k = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, split_help, ov, 4, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = split_list(P, "listings", lists, &buf, item, &n)) != KH_EXIT_OK)
		goto out;
	if (kh_cli_parse_num(need, n, &k) != 0 || k < 1) {
		rc = kh_cli_usage(P, "--need takes a number from 1 to %zu (the listings given)", n);
		goto out;
	}
	if (asprintf(&khe, "%s.khe", base) < 0 || asprintf(&share, "%s.share", base) < 0) {
		rc = kh_cli_fail(P, KH_ERR_NOMEM);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (asprintf(&offer[i], "%s.%zu.offer", base, i + 1) < 0) {
			rc = kh_cli_fail(P, KH_ERR_NOMEM);
			goto out;
		}
		if ((r = kh_file_read(item[i], KH_ESCROW_LISTING_MAX, &l[i], &ll[i])) != KH_OK) {
			rc = kh_cli_fail(item[i], r);
			goto out;
		}
	}
	r = kh_escrow_seal_split((const uint8_t *const *)l, ll, n, (unsigned)k, in, 0, khe, (const char *const *)offer,
				 share);
	if (r == KH_ERR_INVAL && n > 0) {
		fprintf(stderr, "keyhole: %s: the listings must be for one content, each at an escrow of its own, "
				"and %s must not be empty\n", P, in);
		rc = KH_EXIT_FAIL;
	} else if (r != KH_OK) {
		rc = kh_cli_fail(r == KH_ERR_EXISTS ? base : r == KH_ERR_FORMAT || r == KH_ERR_TRUNCATED ? lists : in, r);
	} else {
		printf("content %s offers %zu need %llu\n", khe, n, (unsigned long long)k);
		rc = KH_EXIT_OK;
	}
out:
	for (size_t i = 0; i < PARTS_MAX; i++) {
		if (l[i])
			kh_file_free(l[i], ll[i]);
		free(offer[i]);
	}
	free(khe);
	free(share);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- seller grant */

static const char grant_help[] =
	"usage: keyhole seller grant --share FILE --content FILE --cert FILE --authority PATH --out FILE\n"
	"\n"
	"Grant the device's share of a split key to one buyer's device: the share, naming the device,\n"
	"sealed (HPKE) to the X25519 key of the device's pairing certificate (keyhole buyer cert), for\n"
	"this content alone. The certificate must come from the authority, name the role buyer and be\n"
	"valid now. Only that device opens the grant. Prints 'grant FILE device SERIAL'.\n"
	"\n"
	"      --share FILE    BASE.share from keyhole seller split (private to its owner)\n"
	"      --content FILE  BASE.khe from keyhole seller split\n"
	"      --cert FILE     the buyer device's pairing certificate (PEM)\n"
	"  -a, --authority PATH  the authority's directory, or its root certificate (root.crt)\n"
	"  -o, --out FILE      where the grant goes (a new file)\n";

int kh_cmd_seller_grant(int argc, char **argv)
{
	static const char *const P = "seller grant";
	const char *share = NULL, *content = NULL, *cert = NULL, *root = NULL, *out = NULL;
	struct kh_cli_optv ov[] = {{"share", &share, 1, 0}, {"content", &content, 1, 0}, {"cert", &cert, 1, 0},
				   {"authority", &root, 1, 'a'}, {"out", &out, 1, 'o'}};
	uint8_t root_pk[32], der[KH_CERT_MAX], *pem = NULL;
	size_t pemlen = 0, derlen = 0;
	uint32_t device = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, grant_help, ov, 5, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((r = kh_cli_root_pk(root, root_pk)) != KH_OK)
		return kh_cli_fail(root, r);
	if ((r = kh_file_read(cert, 64 * 1024, &pem, &pemlen)) != KH_OK)
		return kh_cli_fail(cert, r);
	r = kh_cert_pem_to_der((const char *)pem, pemlen, der, sizeof der, &derlen);
	kh_file_free(pem, pemlen);
	if (r != KH_OK)
		return kh_cli_fail(cert, r);
	r = kh_escrow_grant(share, content, der, derlen, root_pk, out, &device);
	if (r == KH_ERR_CERT || r == KH_ERR_CERT_ROLE || r == KH_ERR_CERT_EXPIRED)
		return kh_cli_fail(cert, r);
	if (r != KH_OK)
		return kh_cli_fail(r == KH_ERR_EXISTS ? out : P, r);
	printf("grant %s device %u\n", out, device);
	return KH_EXIT_OK;
}

/* ---------------------------------------------------------------- buyer cert */

static const char cert_help[] =
	"usage: keyhole buyer cert --device SPEC --out FILE\n"
	"\n"
	"Write the buyer device's pairing certificate (PEM, its X25519 key; public): what a seller\n"
	"seals a split key's device share to (keyhole seller grant). Prints 'device SERIAL'.\n"
	"\n"
	"      --device SPEC   the buyer's device (module file, unix:PATH, or pcsc:READER)\n"
	"  -o, --out FILE      where the certificate goes (a new file)\n";

int kh_cmd_buyer_cert(int argc, char **argv)
{
	static const char *const P = "buyer cert";
	const char *dev = NULL, *out = NULL;
	struct kh_cli_optv ov[] = {{"device", &dev, 1, 0}, {"out", &out, 1, 'o'}};
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct kh_cert_info ci;
	uint8_t der[KH_CERT_MAX + 2];
	char pem[KH_CERT_PEM_MAX];
	size_t n = 0, pn = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, cert_help, ov, 2, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = kh_cli_escrow_device(dev, &sm, &t)) != KH_EXIT_OK)
		return rc;
	if ((r = kh_escrow_device_cert(&t, 1, der, sizeof der, &n)) != KH_OK ||
	    (r = kh_cert_read(der, n, &ci)) != KH_OK || (r = kh_cert_der_to_pem(der, n, pem, sizeof pem, &pn)) != KH_OK)
		rc = kh_cli_fail(dev, r);
	else if ((r = kh_file_write_new(out, (const uint8_t *)pem, pn, 0644)) != KH_OK)
		rc = kh_cli_fail(out, r);
	else
		printf("device %u\n", ci.ua);
	kh_cli_escrow_device_close(sm, &t);
	return rc;
}

/* ---------------------------------------------------------------- buyer combine */

static const char combine_help[] =
	"usage: keyhole buyer combine --device SPEC --grant FILE --content FILE --parts BASE,BASE[,...]\n"
	"           --escrow URL,URL[,...] --token-file FILE,FILE[,...] --out BASE [--cacert FILE]\n"
	"\n"
	"Recover a split key on the device from the shares it bought (keyhole buyer buy of each\n"
	"escrow's offer left the share on the device and BASE.purchase in place) and its own share\n"
	"(the seller's grant), then settle every part at once: when the key opens the content, every\n"
	"part is delivered (each escrow pays the seller) and BASE.lic, the licence, is written; when\n"
	"the shares do not fit together or the key is not the content's, every part fails (each escrow\n"
	"refunds the buyer) and no byte of the content was shown. Each part's notice goes to\n"
	"PART.notice and to its escrow, and PART.purchase is removed. Too few shares settle nothing:\n"
	"buy from another escrow first. Run again after a failure, it tells the escrows not yet told.\n"
	"Prints 'delivered BASE.lic escrows=N' or 'failed REASON escrows=N'; exits 1 when failed.\n"
	"\n"
	"      --device SPEC   the buyer's device (module file, unix:PATH, or pcsc:READER)\n"
	"      --grant FILE    the device's share, from the seller (keyhole seller grant)\n"
	"      --content FILE  the encrypted content\n"
	"      --parts BASES   the --out BASE of each share's keyhole buyer buy, comma-separated\n"
	"      --escrow URLS   each part's escrow, in the same order, comma-separated\n"
	"  -T, --token-file FILES  the buyer's API token at each of them, in the same order\n"
	"  -o, --out BASE      BASE.lic is written\n"
	"      --cacert FILE   PEM CA certificates to check the escrows' HTTPS certificates with\n";

int kh_cmd_buyer_combine(int argc, char **argv)
{
	static const char *const P = "buyer combine";
	const char *dev = NULL, *grant = NULL, *content = NULL, *parts = NULL, *urls = NULL, *tfiles = NULL,
		   *base = NULL, *cacert = NULL;
	struct kh_cli_optv ov[] = {{"device", &dev, 1, 0},   {"grant", &grant, 1, 0}, {"content", &content, 1, 0},
				   {"parts", &parts, 1, 0},  {"escrow", &urls, 1, 0}, {"token-file", &tfiles, 1, 'T'},
				   {"out", &base, 1, 'o'},   {"cacert", &cacert, 0, 0}};
	struct kh_escrow_client *c[PARTS_MAX] = {NULL};
	char *pbuf = NULL, *ubuf = NULL, *tbuf = NULL, *part[PARTS_MAX], *url[PARTS_MAX], *tok[PARTS_MAX];
	struct kh_escrow_combined out;
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	size_t np = 0, nu = 0, nt = 0;
	int rc, opened = 0;
	kh_err r;

	if ((rc = kh_cli_optv_parse(P, combine_help, ov, 8, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = split_list(P, "parts", parts, &pbuf, part, &np)) != KH_EXIT_OK ||
	    (rc = split_list(P, "escrow", urls, &ubuf, url, &nu)) != KH_EXIT_OK ||
	    (rc = split_list(P, "token-file", tfiles, &tbuf, tok, &nt)) != KH_EXIT_OK)
		goto out;
	if (np != nu || np != nt) {
		rc = kh_cli_usage(P, "--escrow and --token-file name one escrow and one token for each of the %zu parts", np);
		goto out;
	}
	for (size_t i = 0; i < np; i++)
		if ((rc = kh_cli_escrow_client(P, url[i], tok[i], cacert, &c[i])) != KH_EXIT_OK)
			goto out;
	if ((rc = kh_cli_escrow_device(dev, &sm, &t)) != KH_EXIT_OK)
		goto out;
	opened = 1;
	r = kh_escrow_combine(c, (const char *const *)part, np, &t, grant, content, base, &out);
	if (r != KH_OK) {
		/* the words of every escrow that had some, then the code */
		int said = 0;
		for (size_t i = 0; i < np; i++) {
			const char *m = kh_escrow_client_error(c[i]);
			if (m && *m) {
				fprintf(stderr, "keyhole: %s\n", m);
				said = 1;
			}
		}
		rc = said ? KH_EXIT_FAIL : kh_cli_fail("combine", r);
	} else if (out.outcome == KH_ESCROW_DELIVERED) {
		printf("delivered %s.lic escrows=%zu%s\n", base, out.told, out.resumed ? " (resumed)" : "");
	} else {
		printf("failed %s escrows=%zu%s\n", out.reason < 6 ? kh_cli_escrow_reasons[out.reason] : "?", out.told,
		       out.resumed ? " (resumed)" : "");
		rc = KH_EXIT_FAIL;
	}
out:
	if (opened)
		kh_cli_escrow_device_close(sm, &t);
	for (size_t i = 0; i < PARTS_MAX; i++)
		kh_escrow_client_free(c[i]);
	free(pbuf);
	free(ubuf);
	free(tbuf);
	return rc;
}
