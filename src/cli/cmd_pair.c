/*
 * keyhole pair: the decoder host's view of seed 000. Pair the CAM with its card by relaying bytes,
 * optionally pair a decoder module with the CAM first, then exchange sealed commands with the
 * card through the CAM. See keyhole-pair(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "keyhole/apdu.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/softmodule.h"

static const char pair_help[] =
	"usage: keyhole pair --cam SPEC --card SPEC [--decoder SPEC] [--count N] [--authority PATH]\n"
	"\n"
	"Act as the decoder's host: have the CAM pair with the card (it checks the card's\n"
	"certificate, sends Ci and A under HPKE, expects A back under the session key, and proves\n"
	"itself to the card), then send N sealed ECHO commands to the card through the CAM's channel\n"
	"and check each answer. With --decoder, the decoder module first pairs with the CAM the same\n"
	"way and proves its certificate there, and the CAM pairs with the card inside that channel.\n"
	"Every certificate is checked by a module, against the root personalised into it; this\n"
	"program only carries bytes. SPEC is a module file, run in-process, unix:PATH for a\n"
	"module daemon, or pcsc:READER for a module in a smart-card reader.\n"
	"\n"
	"  -m, --cam SPEC        the CAM\n"
	"  -c, --card SPEC       the smart card\n"
	"  -d, --decoder SPEC    the decoder module (keyhole card issue --role decoder)\n"
	"      --count N         sealed commands to exchange (default 3, at most 1000000)\n"
	"  -a, --authority PATH  not needed: the modules hold the root. Accepted so that older\n"
	"                        command lines keep working, and still checked to be an authority\n"
	"                        directory or a root certificate\n"
	"      --root PATH       old spelling of --authority\n";

static int echo_round(struct kh_transport *cam, struct kh_transport *card, int i)
{
	kh_err r = kh_cli_echo(cam, card);
	if (r != KH_OK)
		return kh_cli_fail("sealed command", r);
	printf("sealed command %d: card answered inside the channel\n", i);
	return KH_EXIT_OK;
}

int kh_cmd_pair(int argc, char **argv)
{
	enum { O_COUNT = 256 };
	static const struct option opts[] = {
		{"authority", required_argument, NULL, 'a'}, {"root", required_argument, NULL, 'a'},
		{"cam", required_argument, NULL, 'm'},       {"card", required_argument, NULL, 'c'},
		{"decoder", required_argument, NULL, 'd'},   {"count", required_argument, NULL, O_COUNT},
		{"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};
	const char *root = NULL, *cam_s = NULL, *card_s = NULL, *dec_s = NULL;
	struct kh_softmod *cam_sm = NULL, *card_sm = NULL, *dec_sm = NULL;
	struct kh_transport cam = {0}, card = {0}, dec = {0};
	struct kh_host_cas cas;
	uint8_t root_pk[32];
	uint64_t count = 3;
	int c, rc = KH_EXIT_FAIL;
	uint32_t card_ua;
	char what[4200];
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+a:m:c:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'a': root = optarg; break;
		case 'm': cam_s = optarg; break;
		case 'c': card_s = optarg; break;
		case 'd':
			/* before, --decoder took no value: "--decoder --count 3" must not read "--count" as a file */
			if (optarg[0] == '-' || !optarg[0])
				return kh_cli_usage("pair", "--decoder takes the decoder module (a module file, unix:PATH or pcsc:READER)");
			dec_s = optarg;
			break;
		case O_COUNT:
			if (kh_cli_parse_num(optarg, 1000000, &count) != 0)
				return kh_cli_usage("pair", "--count takes a number from 0 to 1000000");
			break;
		case 'h': fputs(pair_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("pair", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("pair", "unexpected argument '%s'", argv[optind]);
	if (!cam_s || !card_s)
		return kh_cli_usage("pair", "--cam and --card are required");

	if (root && (r = kh_cli_root_pk(root, root_pk)) != KH_OK)
		return kh_cli_fail(root, r);
	if ((r = kh_cli_open_module(cam_s, NULL, &cam_sm, &cam, what, sizeof what)) != KH_OK ||
	    (r = kh_cli_open_module(card_s, NULL, &card_sm, &card, what, sizeof what)) != KH_OK ||
	    (dec_s && (r = kh_cli_open_module(dec_s, NULL, &dec_sm, &dec, what, sizeof what)) != KH_OK)) {
		kh_cli_fail(what, r);
		goto out;
	}
	if (dec_s) {
		kh_host_cas_init(&cas, &dec, &cam, &card, 0);
		if ((r = kh_host_cas_connect(&cas)) != KH_OK) {
			kh_cli_fail("decoder-CAM-card pairing", r);
			goto out;
		}
		printf("decoder module paired with CAM %08X and proved its certificate there\n", cas.cam_ua);
		card_ua = cas.card_ua;
		kh_host_cas_wipe(&cas);
	} else if ((r = kh_host_pair_cam_card(&cam, &card, &card_ua)) != KH_OK) {
		kh_cli_fail("CAM-card pairing", r);
		goto out;
	}
	printf("CAM paired with card %08X\n", card_ua);
	for (uint64_t i = 1; i <= count; i++)
		if (echo_round(&cam, &card, (int)i) != KH_EXIT_OK)
			goto out;
	rc = KH_EXIT_OK;
out:
	kh_transport_close(&dec);
	kh_transport_close(&cam);
	kh_transport_close(&card);
	kh_softmod_free(dec_sm);
	kh_softmod_free(cam_sm);
	kh_softmod_free(card_sm);
	return rc;
}
