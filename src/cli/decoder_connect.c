/*
 * keyhole decoder connect: the upload session with the management center (seed 001;
 * docs/protocols/upload.md, src/host/upload.c) that carries the card's block and M1's.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/decoder.h"
#include "keyhole/softmodule.h"
#include "keyhole/upload.h"

static const char connect_help[] =
	"usage: keyhole decoder connect --center URL --card SPEC --m1 DIR [--cacert FILE]\n"
	"                               [--insecure-http]\n"
	"\n"
	"Run an upload session with the management center (seed 001): open a session for the card,\n"
	"have the card sign the center's nonce, send the card's fresh usage block and the block the\n"
	"decoder's memory M1 holds (perhaps a replaced card's), hand the EMMs the center answers\n"
	"with to the card, and only then ask the card for a block for M1 (given only once the center\n"
	"has authorised it). Prints one line per block verdict, the EMMs applied and what became of\n"
	"M1. Exit 0 when the center answered, even if it refused a block.\n"
	"\n"
	"      --center URL         the center's base URL: https://HOST[:PORT]; http:// only to\n"
	"                           127.0.0.1, localhost or [::1] unless --insecure-http\n"
	"  -c, --card SPEC          the smart card (card file, unix:PATH, or pcsc:READER)\n"
	"  -M, --m1 DIR             the decoder's memory M1 (DIR and its key are made if absent)\n"
	"      --cacert FILE        PEM file of the CA certificates to trust for the center\n"
	"                           (default: the system's); peer and host name are always checked\n"
	"      --insecure-http      allow plain http to any host (a test network only)\n";

/* ---- connect ---- */

/* The failure of kh_upload_run, one line. */
static int connect_fail(const char *center, const struct kh_upload_curl *cu, const struct kh_upload_result *res,
			kh_err r)
{
	if (res->center_msg[0])
		fprintf(stderr, "keyhole: %s: the center refused the %s (%s)\n", center,
			res->session[0] ? "upload" : "session", res->center_msg);
	else if (r == KH_ERR_TRANSPORT && res->http_status >= 500)
		fprintf(stderr, "keyhole: %s: the center failed (HTTP %d) %d times\n", center, res->http_status,
			KH_UPLOAD_ATTEMPTS);
	else if (r == KH_ERR_TRANSPORT)
		fprintf(stderr, "keyhole: %s: no answer from the center after %d tries (%s)\n", center,
			KH_UPLOAD_ATTEMPTS, kh_upload_curl_error(cu));
	else if (r == KH_ERR_FORMAT && res->http_status)
		fprintf(stderr, "keyhole: %s: the center's answer is not an upload-session answer\n", center);
	else
		fprintf(stderr, "keyhole: %s: %s\n", res->http_status ? center : "card", kh_strerror(r));
	return KH_EXIT_FAIL;
}

static void connect_report(const char *dir, const struct kh_upload_result *res)
{
	printf("session %s card %08X block %u\n", res->session, res->card_ua, res->block_seq);
	for (size_t i = 0; i < res->nverdicts; i++)
		printf("block %08X %u: %s\n", res->verdicts[i].ua, res->verdicts[i].block_seq, res->verdicts[i].verdict);
	printf("emms applied %u\n", res->emms_applied);
	if (res->emms_replayed)
		printf("emms already applied %u\n", res->emms_replayed);
	if (res->emms_fetched)
		printf("emms fetched after the card's last %u\n", res->emms_fetched);
	if (res->emms_gap)
		printf("emms that came before an earlier one %u\n", res->emms_gap);
	if (res->emms_refused) {
		printf("emms refused %u\n", res->emms_refused);
		fprintf(stderr, "keyhole: the card refused %u EMM(s) of the center: %s\n", res->emms_refused,
			kh_strerror(res->emm_err));
	}
	if (!res->m1_tried) {
		printf("m1 not updated: unreadable, left as it was\n");
		return;
	}
	if (res->m1_export == KH_OK) {
		printf("m1 updated: card %08X block %u\n", res->card_ua, res->m1_new_seq);
		return;
	}
	if (res->m1_export == KH_ERR_EXPORT_DENIED) {
		if (res->m1_load == KH_OK)
			printf("m1 kept: card %08X not authorised to export; m1 holds card %08X block %u\n",
			       res->card_ua, res->m1_ua, res->m1_seq);
		else
			printf("m1 kept: card %08X not authorised to export; m1 empty\n", res->card_ua);
		return;
	}
	printf("m1 not updated: %s\n", kh_err_name(res->m1_export));
	fprintf(stderr, "keyhole: M1 %s: %s; M1 left as it was\n", dir, kh_strerror(res->m1_export));
}

int kh__cli_decoder_connect(int argc, char **argv)
{
	enum { OPT_INSECURE = 1000, OPT_CENTER, OPT_CACERT };
	static const struct option lo[] = {
		{"center", required_argument, NULL, OPT_CENTER}, {"card", required_argument, NULL, 'c'},
		{"m1", required_argument, NULL, 'M'},     {"cacert", required_argument, NULL, OPT_CACERT},
		{"insecure-http", no_argument, NULL, OPT_INSECURE}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *center = NULL, *card_s = NULL, *dir = NULL, *cacert = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport card = {0};
	struct kh_upload_curl *cu = NULL;
	struct kh_upload_http http;
	struct kh_upload_config cfg;
	struct kh_upload_result *res = NULL;
	struct kh__cli_m1 m1;
	char what[4200];
	int c, insecure = 0, rc = KH_EXIT_FAIL;
	kh_err r;

	memset(&m1, 0, sizeof m1);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:M:h", lo, NULL)) != -1) {
		switch (c) {
		case OPT_CENTER: center = optarg; break;
		case 'c': card_s = optarg; break;
		case 'M': dir = optarg; break;
		case OPT_CACERT: cacert = optarg; break;
		case OPT_INSECURE: insecure = 1; break;
		case 'h': fputs(connect_help, stdout); return KH_EXIT_OK;
		default:
			return kh_cli_usage("decoder connect", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("decoder connect", "unexpected argument '%s'", argv[optind]);
	if (!center || !card_s || !dir || !*dir)
		return kh_cli_usage("decoder connect", "--center, --card and --m1 are required");
	if (cacert && !*cacert)
		return kh_cli_usage("decoder connect", "--cacert takes a file");
	if (kh_upload_url_check(center, insecure) != KH_OK)
		return kh_cli_usage("decoder connect",
				    "--center takes https://HOST[:PORT] (http:// only to 127.0.0.1, localhost or "
				    "[::1] without --insecure-http)");
	if (cacert && access(cacert, R_OK) != 0) {
		fprintf(stderr, "keyhole: %s: %s\n", cacert, strerror(errno));
		return KH_EXIT_FAIL;
	}
	if (!(res = calloc(1, sizeof *res))) {
		kh_cli_fail("decoder", KH_ERR_NOMEM);
		goto out;
	}
	if (kh__cli_m1_open(&m1, dir) != KH_EXIT_OK)
		goto out;
	if ((r = kh_cli_open_module(card_s, NULL, &sm, &card, what, sizeof what)) != KH_OK) {
		kh_cli_fail(what, r);
		goto out;
	}
	if ((r = kh_upload_curl_new(cacert, insecure, &cu, &http)) != KH_OK) {
		kh_cli_fail("libcurl", r);
		goto out;
	}
	memset(&cfg, 0, sizeof cfg);
	cfg.center = center;
	cfg.card = &card;
	cfg.m1_dir = m1.dir;
	cfg.m1_key = m1.key;
	cfg.http = &http;
	if ((r = kh_upload_run(&cfg, res)) != KH_OK) {
		connect_fail(center, cu, res, r);
		goto out;
	}
	if (res->m1_load != KH_OK && res->m1_load != KH_ERR_NOTFOUND)
		fprintf(stderr, "keyhole: M1 %s: %s; its block was not sent and M1 is left as it was\n", dir,
			kh_strerror(res->m1_load));
	connect_report(dir, res);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "keyhole: standard output: %s\n", strerror(errno));
		goto out;
	}
	rc = KH_EXIT_OK;
out:
	kh_upload_curl_free(cu);
	kh_transport_close(&card);
	kh_softmod_free(sm);
	kh__cli_m1_close(&m1);
	free(res);
	return rc;
}
