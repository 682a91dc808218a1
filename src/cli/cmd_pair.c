/*
 * keyhole pair: the decoder's view of seed 000. Pair the CAM with its card by relaying bytes,
 * optionally pair the decoder itself with the CAM first, then exchange sealed commands with the
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
	"usage: keyhole pair --root AUTHORITY --cam SPEC --card SPEC [--decoder] [--count N]\n"
	"\n"
	"Act as the decoder: have the CAM pair with the card (it checks the card's certificate,\n"
	"sends Ci and A under HPKE, and expects A back under the session key), then send N sealed\n"
	"ECHO commands to the card through the CAM's channel and check each answer. With --decoder,\n"
	"the decoder first pairs with the CAM the same way and asks it for its facts inside that\n"
	"channel. SPEC is a card file, run in-process, or unix:PATH for a module daemon.\n"
	"\n"
	"  -r, --root PATH   authority directory or root certificate (the decoder's trust anchor)\n"
	"  -m, --cam SPEC    the CAM\n"
	"  -c, --card SPEC   the smart card\n"
	"  -d, --decoder     also pair the decoder with the CAM\n"
	"  -n, --count N     sealed commands to exchange (default 3, at most 1000000)\n";

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
	static const struct option opts[] = {
		{"root", required_argument, NULL, 'r'}, {"cam", required_argument, NULL, 'm'},
		{"card", required_argument, NULL, 'c'}, {"decoder", no_argument, NULL, 'd'},
		{"count", required_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *root = NULL, *cam_s = NULL, *card_s = NULL;
	struct kh_softmod *cam_sm = NULL, *card_sm = NULL;
	struct kh_transport cam = {0}, card = {0};
	struct kh_link *link = NULL;
	uint8_t root_pk[32];
	long count = 3;
	int decoder = 0, c, rc = KH_EXIT_FAIL;
	uint32_t card_ua;
	char what[4200];
	char *end;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+r:m:c:dn:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r': root = optarg; break;
		case 'm': cam_s = optarg; break;
		case 'c': card_s = optarg; break;
		case 'd': decoder = 1; break;
		case 'n':
			count = strtol(optarg, &end, 10);
			if (end == optarg || *end || count < 0 || count > 1000000)
				return kh_cli_usage("pair", "--count takes a number from 0 to 1000000");
			break;
		case 'h': fputs(pair_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("pair", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("pair", "unexpected argument '%s'", argv[optind]);
	if (!root || !cam_s || !card_s)
		return kh_cli_usage("pair", "--root, --cam and --card are required");

	if ((r = kh_cli_root_pk(root, root_pk)) != KH_OK)
		return kh_cli_fail(root, r);
	if ((r = kh_cli_open_module(cam_s, NULL, &cam_sm, &cam, what, sizeof what)) != KH_OK ||
	    (r = kh_cli_open_module(card_s, NULL, &card_sm, &card, what, sizeof what)) != KH_OK) {
		kh_cli_fail(what, r);
		goto out;
	}
	if (decoder) {
		static const uint8_t id[] = "decoder";
		uint8_t inner[8], out[KH_APDU_MAX_RESP];
		struct kh_wr w;
		size_t n;

		if (!(link = malloc(sizeof *link))) {
			kh_cli_fail("pair", KH_ERR_NOMEM);
			goto out;
		}
		kh_link_init(link, root_pk, KH_ROLE_CAM, id, sizeof id - 1);
		if ((r = kh_host_link_pair(link, &cam, (uint64_t)time(NULL))) != KH_OK) {
			kh_cli_fail("decoder-CAM pairing", r);
			goto out;
		}
		printf("decoder paired with CAM %08X\n", link->peer.ua);
		kh_wr_init(&w, inner, sizeof inner);
		if ((r = kh_apdu_build(&w, KH_CLA, KH_INS_GET_INFO, 0, 0, NULL, 0, 0)) != KH_OK ||
		    (r = kh_host_link_cmd(link, &cam, inner, w.len, (uint64_t)time(NULL), out, sizeof out, &n)) != KH_OK) {
			kh_cli_fail("decoder-CAM sealed command", r);
			goto out;
		}
		printf("decoder asked the CAM for its facts inside the channel (%zu bytes)\n", n);
	}
	if ((r = kh_host_pair_cam_card(&cam, &card, &card_ua)) != KH_OK) {
		kh_cli_fail("CAM-card pairing", r);
		goto out;
	}
	printf("CAM paired with card %08X\n", card_ua);
	for (long i = 1; i <= count; i++)
		if (echo_round(&cam, &card, (int)i) != KH_EXIT_OK)
			goto out;
	rc = KH_EXIT_OK;
out:
	if (link) {
		kh_link_wipe(link);
		free(link);
	}
	kh_transport_close(&cam);
	kh_transport_close(&card);
	kh_softmod_free(cam_sm);
	kh_softmod_free(card_sm);
	return rc;
}
