/* keyhole decoder status: the card's public conditional-access facts. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/decoder.h"
#include "keyhole/cas.h"
#include "keyhole/host.h"
#include "keyhole/softmodule.h"
#include "keyhole/upload.h"

static const char status_help[] =
	"usage: keyhole decoder status --card SPEC\n"
	"\n"
	"Print the card's public conditional-access facts: credit, rights with their dates,\n"
	"purchases, service key ids and versions (never the keys), EMM sequence counters.\n"
	"\n"
	"  -c, --card SPEC          the smart card (card file, unix:PATH, or pcsc:READER)\n";

/* ---- status ---- */

static const char *date(uint64_t t, char *buf, size_t cap)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (t == 0 || !gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "%llu", (unsigned long long)t);
	return buf;
}

int kh__cli_decoder_status(int argc, char **argv)
{
	static const struct option lo[] = {{"card", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	const char *card_s = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_transport card = {0};
	struct kh_host_cas *cas = NULL;
	struct kh_cas_status *st = NULL;
	struct kh_module_info info;
	char what[4200], a[32], b[32];
	int c, rc = KH_EXIT_FAIL;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:h", lo, NULL)) != -1) {
		switch (c) {
		case 'c': card_s = optarg; break;
		case 'h': fputs(status_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("decoder status", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("decoder status", "unexpected argument '%s'", argv[optind]);
	if (!card_s)
		return kh_cli_usage("decoder status", "--card is required");
	if (!(cas = calloc(1, sizeof *cas)) || !(st = calloc(1, sizeof *st))) {
		kh_cli_fail("decoder", KH_ERR_NOMEM);
		goto out;
	}
	if ((r = kh_cli_open_module(card_s, NULL, &sm, &card, what, sizeof what)) != KH_OK) {
		kh_cli_fail(what, r);
		goto out;
	}
	/* Status goes straight to the card: no channel, so no trust anchor is needed. */
	kh_host_cas_init(cas, NULL, NULL, &card, 0);
	if ((r = kh_host_info(&card, &info)) != KH_OK || (r = kh_host_cas_status(cas, st)) != KH_OK) {
		kh_cli_fail(card_s, r);
		goto out;
	}
	printf("card %08X\n", info.ua);
	printf("credit %u\n", st->credit);
	if (st->has_group)
		printf("group %u\n", st->group);
	else
		printf("group none\n");
	printf("emm seq unique %u group %u all %u\n", st->seq[KH_EMM_UNIQUE], st->seq[KH_EMM_GROUP],
	       st->seq[KH_EMM_ALL]);
	printf("last reload %u\n", st->last_reload);
	printf("export %s\n", st->export_ok ? "authorised" : "not authorised");
	for (size_t i = 0; i < st->nrights; i++)
		printf("right product %u from %s until %s\n", st->rights[i].product,
		       date(st->rights[i].start, a, sizeof a), date(st->rights[i].end, b, sizeof b));
	for (size_t i = 0; i < st->nkeys; i++)
		printf("key id %u version %u\n", st->keys[i].id, st->keys[i].version);
	for (size_t i = 0; i < st->nsigners; i++)
		printf("signer %s %08X\n", kh_role_name((enum kh_role)st->signers[i].role) ?
						    kh_role_name((enum kh_role)st->signers[i].role) : "unknown",
		       st->signers[i].serial);
	for (size_t i = 0; i < st->npurchases && i < KH_CAS_STATUS_MAX_PURCHASES; i++)
		printf("purchase event %u price %u at %s\n", st->purchases[i].event, st->purchases[i].price,
		       date(st->purchases[i].time, a, sizeof a));
	printf("purchases %u\n", st->npurchases);
	printf("ecms %u cws %u refused %u emms %u\n", st->n_ecm, st->n_cw, st->n_refused, st->n_emm);
	rc = KH_EXIT_OK;
out:
	if (cas)
		kh_host_cas_wipe(cas);
	free(cas);
	free(st);
	kh_transport_close(&card);
	kh_softmod_free(sm);
	return rc;
}
