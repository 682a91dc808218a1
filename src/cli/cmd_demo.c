/*
 * keyhole demo: Keyhole told as a story, one line per step, on the embedded defaults, all in a
 * temporary directory. First seed 000: the operator authority, a CAM, two cards and a decoder
 * module, and a second (foreign) operator with a card of its own; the demo plays the decoder,
 * relaying bytes between the CAM and whichever card is in the slot (every module in-process,
 * through the same APDU bytes a reader would carry). The decoder program itself holds no
 * certificate, and the CAM gives it no control words; the decoder module proves its own. Then,
 * on the same modules, the pay-TV story with the management center and seed 001's recovery
 * (demo_paytv.c). See keyhole-demo(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/softmodule.h"

static const char demo_help[] =
	"usage: keyhole demo [--keep DIR]\n"
	"\n"
	"Create an authority, a CAM, two cards and a decoder module in a temporary directory; pair\n"
	"the CAM with card 1 and exchange sealed commands; swap in card 2 without pairing and watch\n"
	"the CAM refuse it; pair with card 2; show a replayed answer and a foreign operator's card\n"
	"refused; have the decoder module prove itself to the CAM. Then the pay-TV story: a\n"
	"management center on 127.0.0.1, a subscriber and card 1 assigned, a headend scrambling an\n"
	"ffmpeg clip with the center's EMMs, the decoder watching it bit-exact with the key ladder,\n"
	"a pay-per-view purchase, card 1 replaced by card 2 and its purchase recovered through\n"
	"'decoder connect' (the media steps are skipped when ffmpeg is missing). Then program\n"
	"distribution: a distribution server, a program bought for one processor, run, lost and\n"
	"fetched again on its receipt for nothing, and a copy refused by another processor. Then\n"
	"escrowed licence keys: an escrow and its signing process, a seller's song listed and\n"
	"encrypted, bought for a buyer's device (the escrow never sees its key), opened, its licence\n"
	"refused on another device, and the ledger audited; then a film's key split among three\n"
	"escrows and the device, one escrow down, the other two and the device enough. Last, the\n"
	"key center: two users' key cards enrolled and activated, a letter relayed from one to the\n"
	"other, a retried post relayed once, an old one refused as a replay, and the two keys shown\n"
	"to be different keys.\n"
	"\n"
	"      --keep DIR   work in DIR (created; must not exist) and keep it afterwards\n";

/* A slot the decoder relays through: it can replay the last answer it saw, as an attacker would. */
struct slot {
	struct kh_transport *card;
	int replay;
	uint8_t last[KH_APDU_MAX_RESP];
	size_t lastlen;
};

static kh_err slot_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct slot *s = ctx;
	kh_err r;
	if (s->replay && s->lastlen && s->lastlen <= cap) {
		memcpy(resp, s->last, s->lastlen);
		*rlen = s->lastlen;
		return KH_OK;
	}
	if ((r = kh_transport_xfer(s->card, cmd, len, resp, cap, rlen)) != KH_OK)
		return r;
	if (*rlen <= sizeof s->last) {
		memcpy(s->last, resp, *rlen);
		s->lastlen = *rlen;
	}
	return KH_OK;
}

static kh_err issue(const char *auth, const char *path, enum kh_role role, uint32_t *ua)
{
	const char *what;
	return kh_cli_issue(auth, role, 0, path, NULL, ua, &what);
}

/*
 * Ask the CAM, inside the channel the decoder program paired itself (no certificate proven on
 * it), to carry an ECM to the card; the CAM's verdict. The bytes after the INS never matter: the
 * CAM refuses before it reads them.
 */
static kh_err ecm_unproven(struct kh_link *link, struct kh_transport *cam)
{
	static const uint8_t ecm[8] = {0x80};
	uint8_t card_cmd[32], inner[64], out[KH_APDU_MAX_RESP];
	struct kh_wr w;
	size_t n = 0;
	kh_err r;

	kh_wr_init(&w, card_cmd, sizeof card_cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, KH_INS_ECM, 0, 0, ecm, sizeof ecm, 0)) != KH_OK)
		return r;
	n = w.len;
	kh_wr_init(&w, inner, sizeof inner);
	if ((r = kh_apdu_build(&w, KH_CLA, KH_INS_CARD_SEND, 0, 0, card_cmd, n, 0)) != KH_OK)
		return r;
	if ((r = kh_host_link_cmd(link, cam, inner, w.len, (uint64_t)time(NULL), out, sizeof out, &n)) != KH_OK)
		return r;
	if (n < 2)
		return KH_ERR_FORMAT;
	return kh_err_from_sw((uint16_t)(out[n - 2] << 8 | out[n - 1]));
}

#define say kh__demo_say

#define TRY(what, expr)                                                                                \
	do {                                                                                           \
		kh_err e_ = (expr);                                                                    \
		if (e_ != KH_OK) {                                                                     \
			kh_cli_fail(what, e_);                                                         \
			goto out;                                                                      \
		}                                                                                      \
	} while (0)

/* A step that must be refused: the story fails if it is accepted. */
#define REFUSE(what, expr, err)                                                                        \
	do {                                                                                           \
		err = (expr);                                                                          \
		if (err == KH_OK) {                                                                    \
			fprintf(stderr, "keyhole: demo: %s was accepted\n", what);                     \
			goto out;                                                                      \
		}                                                                                      \
	} while (0)

int kh_cmd_demo(int argc, char **argv)
{
	static const struct option opts[] = {{"keep", required_argument, NULL, 'K'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	char tmpl[] = "/tmp/keyhole-demo-XXXXXX";
	char path[7][4096];
	const char *dir = NULL, *keep = NULL;
	struct kh_softmod *cam_sm = NULL, *c1_sm = NULL, *c2_sm = NULL, *fx_sm = NULL, *dec_sm = NULL;
	struct kh_transport cam, c1, c2, fx, dec, relay2;
	struct kh_host_cas cas;
	struct kh_link *link = NULL;
	struct slot slot2 = {0};
	uint32_t ua_cam, ua1, ua2, ua_dec, ua_fx, paired;
	struct kh_module_info info;
	uint8_t root_pk[32];
	int c, rc = KH_EXIT_FAIL;
	kh_err e;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'K': keep = optarg; break;
		case 'h': fputs(demo_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("demo", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("demo", "unexpected argument '%s'", argv[optind]);
	if (keep) {
		if (mkdir(keep, 0700) != 0)
			return kh_cli_fail(keep, KH_ERR_EXISTS);
		dir = keep;
	} else if (!(dir = mkdtemp(tmpl))) {
		return kh_cli_fail("temporary directory", KH_ERR_IO);
	}
	snprintf(path[0], sizeof path[0], "%s/authority", dir);
	snprintf(path[1], sizeof path[1], "%s/foreign-authority", dir);
	snprintf(path[2], sizeof path[2], "%s/cam.card", dir);
	snprintf(path[3], sizeof path[3], "%s/card1.card", dir);
	snprintf(path[4], sizeof path[4], "%s/card2.card", dir);
	snprintf(path[5], sizeof path[5], "%s/foreign.card", dir);
	snprintf(path[6], sizeof path[6], "%s/decoder.card", dir);

	printf("Keyhole demo: the paired CAM-card channel of seed 000, then pay-TV with the management center "
	       "(seed 001), in %s\n",
	       dir);
	TRY("authority", kh_authority_init(path[0], "Keyhole demo operator"));
	say("authority: operator root (Ed25519) and master key created in %s", path[0]);
	TRY("issue CAM", issue(path[0], path[2], KH_ROLE_CAM, &ua_cam));
	TRY("issue card 1", issue(path[0], path[3], KH_ROLE_CARD, &ua1));
	TRY("issue card 2", issue(path[0], path[4], KH_ROLE_CARD, &ua2));
	TRY("issue decoder module", issue(path[0], path[6], KH_ROLE_DECODER, &ua_dec));
	say("issued CAM %08X, card 1 %08X, card 2 %08X and decoder module %08X: keys made inside each module, "
	    "certified by the root",
	    ua_cam, ua1, ua2, ua_dec);
	TRY("foreign authority", kh_authority_init(path[1], "Some other operator"));
	TRY("issue foreign card", issue(path[1], path[5], KH_ROLE_CARD, &ua_fx));
	say("a foreign operator issued its own card %08X", ua_fx);

	TRY(path[2], kh_softmod_open(path[2], NULL, &cam_sm, NULL));
	TRY(path[3], kh_softmod_open(path[3], NULL, &c1_sm, NULL));
	TRY(path[4], kh_softmod_open(path[4], NULL, &c2_sm, NULL));
	TRY(path[5], kh_softmod_open(path[5], NULL, &fx_sm, NULL));
	TRY(path[6], kh_softmod_open(path[6], NULL, &dec_sm, NULL));
	kh_transport_inproc(&cam, kh_softmod_module(cam_sm));
	kh_transport_inproc(&c1, kh_softmod_module(c1_sm));
	kh_transport_inproc(&c2, kh_softmod_module(c2_sm));
	kh_transport_inproc(&fx, kh_softmod_module(fx_sm));
	kh_transport_inproc(&dec, kh_softmod_module(dec_sm));
	slot2.card = &c2;
	relay2.xfer = slot_xfer;
	relay2.close = NULL;
	relay2.ctx = &slot2;

	TRY("root", kh_cli_root_pk(path[0], root_pk));
	if (!(link = malloc(sizeof *link))) {
		kh_cli_fail("demo", KH_ERR_NOMEM);
		goto out;
	}
	kh_link_init(link, root_pk, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	TRY("decoder-CAM pairing", kh_host_link_pair(link, &cam, (uint64_t)time(NULL)));
	say("decoder paired with CAM %08X: checked its certificate, sent Ci and A under HPKE, got A back",
	    link->peer.ua);
	REFUSE("an ECM from a decoder without a certificate", ecm_unproven(link, &cam), e);
	if (e != KH_ERR_DECODER_UNPROVEN) {
		kh_cli_fail("an ECM from a decoder without a certificate", e);
		goto out;
	}
	say("this decoder program holds no certificate: an ECM it sends the CAM on that channel is refused (%s)",
	    kh_strerror(e));

	TRY("CAM-card pairing", kh_host_pair_cam_card(&cam, &c1, &paired));
	TRY("card 1 facts", kh_host_info(&c1, &info));
	say("card 1 inserted: CAM paired with card %08X and proved itself to it as CAM %08X (the decoder "
	    "only relayed sealed bytes)",
	    paired, info.chan_peer_ua);
	for (int i = 0; i < 3; i++)
		TRY("sealed command", kh_cli_echo(&cam, &c1));
	say("3 sealed commands exchanged with card 1, each under a fresh counter");

	REFUSE("card 2 without pairing", kh_cli_echo(&cam, &relay2), e);
	say("card 2 swapped in without pairing: it cannot answer the sealed command (%s); the CAM wipes its keys",
	    kh_strerror(e));
	REFUSE("a command after the swap", kh_cli_echo(&cam, &relay2), e);
	say("next command: %s - no more control words until the CAM pairs again", kh_strerror(e));

	TRY("CAM-card 2 pairing", kh_host_pair_cam_card(&cam, &relay2, &paired));
	TRY("sealed command", kh_cli_echo(&cam, &relay2));
	say("CAM paired with card %08X and exchanged a sealed command", paired);
	slot2.replay = 1;
	REFUSE("a replayed answer", kh_cli_echo(&cam, &relay2), e);
	slot2.replay = 0;
	say("a recorded answer of card 2 replayed by the host: refused (%s)", kh_strerror(e));

	REFUSE("foreign card", kh_host_pair_cam_card(&cam, &fx, &paired), e);
	say("the foreign operator's card: pairing refused (%s)", kh_strerror(e));
	say("every answer the CAM accepted came from the card it had paired with");

	/* the decoder module pairs with the CAM in the program's place and proves its certificate */
	kh_host_cas_init(&cas, &dec, &cam, &c1, KH_HOST_CAS_LADDER);
	TRY("decoder module, CAM and card", kh_host_cas_connect(&cas));
	TRY("CAM facts", kh_host_info(&cam, &info));
	if (!info.chan_open || info.chan_peer_ua != ua_dec || cas.card_ua != ua1) {
		fprintf(stderr, "keyhole: demo: the CAM does not hold decoder module %08X as proven\n", ua_dec);
		goto out;
	}
	say("decoder module %08X paired with CAM %08X and proved its decoder certificate inside the channel, "
	    "handing it a fresh key ladder key: control words now go to it, and only sealed for it",
	    info.chan_peer_ua, cas.cam_ua);
	kh_host_cas_wipe(&cas);

	/* the pay-TV story opens the module files itself: close them here first */
	kh_softmod_free(cam_sm);
	kh_softmod_free(c1_sm);
	kh_softmod_free(c2_sm);
	kh_softmod_free(dec_sm);
	cam_sm = c1_sm = c2_sm = dec_sm = NULL;
	{
		struct kh__demo_paths p = {.dir = dir,
					   .authority = path[0],
					   .cam = path[2],
					   .card1 = path[3],
					   .card2 = path[4],
					   .dec = path[6],
					   .ua1 = ua1,
					   .ua2 = ua2,
					   .ua_dec = ua_dec};
		if (kh__demo_paytv(&p) != KH_EXIT_OK)
			goto out;
		if (kh__demo_dist(&p) != KH_EXIT_OK)
			goto out;
		if (kh__demo_escrow(&p) != KH_EXIT_OK)
			goto out;
		if (kh__demo_keycenter(&p) != KH_EXIT_OK)
			goto out;
	}
	say("done: the pay-TV path, program distribution, escrowed licence keys and the key center relay ran on "
	    "Keyhole's own modules, centers, headend, decoder, processors, buyer devices and key cards");
	rc = KH_EXIT_OK;
out:
	if (link) {
		kh_link_wipe(link);
		free(link);
	}
	kh_softmod_free(cam_sm);
	kh_softmod_free(c1_sm);
	kh_softmod_free(c2_sm);
	kh_softmod_free(fx_sm);
	kh_softmod_free(dec_sm);
	if (!keep) {
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "keyhole: demo: could not remove %s\n", dir);
	}
	return rc;
}
