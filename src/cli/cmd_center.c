/*
 * keyhole center: the operator's command-line client of the management center's API
 * (docs/api/openapi.yaml), one subcommand per resource and verb. The commands are data: each is
 * a row of `leaves` (method, path, the options it takes and where each goes: the path, the query
 * or the JSON body), so that every command parses, checks, documents (--help) and reports the
 * same way. This file holds the tables, the help and the dispatch; running a command is
 * cmd_center_run.c, the wire cmd_center_http.c, what a person reads cmd_center_out.c (their
 * common header: center.h). See keyhole-center(1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/center.h"
#include "cli/cli.h"

const struct center_opt kh__center_opts[] = {
	{{"center", required_argument, NULL, O_CENTER}, "URL", K_URL,
	 "the center's base URL: https://HOST[:PORT]; http:// only to 127.0.0.1,\n"
	 "localhost or [::1] unless --insecure-http (default: $KEYHOLE_CENTER)"},
	{{"cacert", required_argument, NULL, O_CACERT}, "FILE", K_FILE,
	 "PEM CA certificates to trust for the center (default: $KEYHOLE_CACERT,\n"
	 "else the system's); peer and host name are always checked"},
	{{"token-file", required_argument, NULL, 'T'}, "FILE", K_FILE,
	 "the operator's bearer token, one line in a file private to its owner\n"
	 "(default: $KEYHOLE_TOKEN_FILE); never printed"},
	{{"insecure-http", no_argument, NULL, O_INSECURE}, NULL, K_FLAG,
	 "allow plain http to any host (a test network only)"},
	{{"json", no_argument, NULL, O_JSON}, NULL, K_FLAG, "print the center's JSON answer as it came"},
	{{"limit", required_argument, NULL, O_LIMIT}, "N", K_LIMIT, "items per page, 1 to 1000 (the center's default: 100)"},
	{{"cursor", required_argument, NULL, O_CURSOR}, "C", K_TEXT, "start at this page (a next_cursor the center answered)"},
	{{"all", no_argument, NULL, 'A'}, NULL, K_FLAG,
	 "every page: follow next_cursor to the end (--json: one document\n"
	 "with every item)"},
	{{"idempotency-key", required_argument, NULL, O_IDEM}, "K", K_IDEM,
	 "the write's Idempotency-Key, 1 to 128 visible characters (default: 16\n"
	 "random bytes in hex); the center does a write once per key, and the\n"
	 "same write again with it gets the first answer"},
	{{"name", required_argument, NULL, 'n'}, "NAME", K_TEXT, "the name"},
	{{"name-prefix", required_argument, NULL, O_NAME_PREFIX}, "P", K_TEXT, "only the subscribers whose name starts with P"},
	{{"subscriber", required_argument, NULL, O_SUBSCRIBER}, "ID", K_ID, "the subscriber"},
	{{"product", required_argument, NULL, O_PRODUCT}, "P", K_CAT, "the subscription product"},
	{{"channel", required_argument, NULL, O_CHANNEL}, "C", K_CAT, "the channel"},
	{{"event", required_argument, NULL, O_EVENT}, "E", K_CAT, "the pay-per-view event"},
	{{"price", required_argument, NULL, O_PRICE}, "N", K_U32, "the event's price, taken from the card's credit"},
	{{"start", required_argument, NULL, O_START}, "T", K_TIME,
	 "from T: Unix seconds, now, now+N, now-N or +N (from now); default now"},
	{{"end", required_argument, NULL, O_END}, "T", K_TIME,
	 "until T, excluded: Unix seconds, now+N, ... or +N (after the start)"},
	{{"since", required_argument, NULL, O_SINCE}, "T", K_TIME, "only from T on (Unix seconds, now, now-N, ...)"},
	{{"until", required_argument, NULL, O_UNTIL}, "T", K_TIME, "only before T (Unix seconds, now, now-N, ...)"},
	{{"state", required_argument, NULL, O_STATE}, "S", K_STATE,
	 "only the cards in state S: issued, active, replaced or closed"},
	{{"role", required_argument, NULL, 'r'}, "ROLE", K_ROLE, "only the modules of role ROLE: card or cam"},
	{{"cert", required_argument, NULL, O_CERT}, "FILE", K_FILE,
	 "the card's signing certificate, PEM or DER, as 'card issue' writes it\n"
	 "(AUTHORITY/issued/card-UA-sign.crt)"},
	{{"by", required_argument, NULL, O_BY}, "UA", K_UA, "the issued card that takes its place"},
	{{"initial-credit", required_argument, NULL, O_INITIAL_CREDIT}, "N", K_U32,
	 "the credit a newly assigned card starts with"},
	{{"reload-amount", required_argument, NULL, O_RELOAD_AMOUNT}, "N", K_U32, "the credit 'card reload' adds"},
	{{"key-id", required_argument, NULL, O_KEY_ID}, "N", K_KEYID, "service key id, 0 to 255"},
	{{"ua", required_argument, NULL, 'u'}, "UA", K_UA, "only this card's sessions"},
	{{"all-subscribers", no_argument, NULL, O_ALL_SUBSCRIBERS}, NULL, K_FLAG,
	 "every subscriber that has an active card (one job)"},
	{{"help", no_argument, NULL, 'h'}, NULL, K_FLAG, "print this help"},
};
const size_t kh__center_nopts = sizeof kh__center_opts / sizeof kh__center_opts[0];
_Static_assert(sizeof kh__center_opts / sizeof kh__center_opts[0] <= KH__CENTER_MAXOPT, "raise KH__CENTER_MAXOPT");

size_t kh__center_opt_index(int val)
{
	for (size_t i = 0; i < kh__center_nopts; i++)
		if (kh__center_opts[i].o.val == val)
			return i;
	return kh__center_nopts;
}

const struct center_use *kh__center_use_of(const struct center_leaf *l, size_t i)
{
	for (const struct center_use *u = l->use; u->opt; u++)
		if (kh__center_opt_index(u->opt) == i)
			return u;
	return NULL;
}

int kh__center_takes(const struct center_leaf *l, size_t i)
{
	return i < KH__CENTER_NCOMMON || i == kh__center_nopts - 1 ||
	       ((l->flags & L_LIST) && i < KH__CENTER_NCOMMON + KH__CENTER_NLIST) ||
	       (KH__CENTER_WRITE(l) && i == KH__CENTER_IDEM) || kh__center_use_of(l, i);
}

/* ---- commands ---- */

/* The show, rename and delete of a catalogue item (product, channel, event) at PATH/{id}. */
#define SHOW_RENAME_DELETE(group, path, a_noun, noun, delete_about)                                  \
	{group, "show", "GET", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL, "show " a_noun,            \
	 "Show " noun " ID.", {{0}}},                                                                  \
	{group, "rename", "PATCH", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL,                        \
	 "change " a_noun "'s name", "Change " noun " ID's name.", {{'n', 'b', "name", 1, "the new name"}}}, \
	{group, "delete", "DELETE", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL, "remove " a_noun,     \
	 "Remove " noun " ID" delete_about, {{0}}}

static const struct center_leaf leaves[] = {
	{"subscriber", "add", "POST", "/v1/subscribers", NULL, NULL, K_FLAG, 0, NULL, NULL, "create a subscriber",
	 "Create a subscriber; prints it with the id the center gave it.",
	 {{'n', 'b', "name", 1, "the subscriber's name"}}},
	{"subscriber", "list", "GET", "/v1/subscribers", NULL, NULL, K_FLAG, L_LIST, "subscribers", NULL,
	 "list the subscribers", "List the subscribers, by id.", {{O_NAME_PREFIX, 'q', "name_prefix", 0, NULL}}},
	{"subscriber", "show", "GET", "/v1/subscribers/{pos}", NULL, "ID", K_ID, 0, NULL, NULL,
	 "show a subscriber with its cards, subscriptions and invoices",
	 "Show subscriber ID with its cards, subscriptions and invoices.", {{0}}},
	{"subscriber", "rename", "PATCH", "/v1/subscribers/{pos}", NULL, "ID", K_ID, 0, NULL, NULL,
	 "change a subscriber's name", "Change subscriber ID's name.", {{'n', 'b', "name", 1, "the new name"}}},
	{"subscriber", "close", "DELETE", "/v1/subscribers/{pos}", NULL, "ID", K_ID, 0, NULL, NULL,
	 "close a subscriber (kept for its invoices)",
	 "Close subscriber ID: it is kept for its invoices and takes no new card or subscription.\n"
	 "Refused (409 conflict) while one of its cards is active or a subscription has not ended.",
	 {{0}}},
	{"subscriber", "subscriptions", "GET", "/v1/subscribers/{pos}/subscriptions", NULL, "ID", K_ID, L_LIST,
	 "subscriptions", NULL, "list a subscriber's subscriptions", "List subscriber ID's subscriptions.", {{0}}},

	{"card", "register", "POST", "/v1/cards", NULL, NULL, K_FLAG, 0, NULL, NULL,
	 "register an issued card from its signing certificate",
	 "Register an issued card from its signing certificate: the center checks it against the\n"
	 "operator root and keeps the card in state issued. The file is sent as the API wants it\n"
	 "(DER in base64url).",
	 {{O_CERT, 'b', "certificate", 1, NULL}}},
	{"card", "list", "GET", "/v1/cards", NULL, NULL, K_FLAG, L_LIST, "cards", NULL, "list the cards",
	 "List the cards, by unique address.",
	 {{O_STATE, 'q', "state", 0, NULL},
	  {O_SUBSCRIBER, 'q', "subscriber", 0, "only this subscriber's cards"},
	  {'r', 'q', "role", 0, NULL}}},
	{"card", "show", "GET", "/v1/cards/{pos}", NULL, "UA", K_UA, 0, NULL, NULL, "show a card", "Show card UA.",
	 {{0}}},
	{"card", "assign", "POST", "/v1/cards/{pos}/assign", NULL, "UA", K_UA, 0, NULL, NULL,
	 "give an issued card to a subscriber",
	 "Give the issued card UA to a subscriber: it becomes active, and the EMMs that carry its\n"
	 "keys, rights and initial credit are queued.",
	 {{O_SUBSCRIBER, 'b', "subscriber_id", 1, "the subscriber (who has no active card)"}}},
	{"card", "replace", "POST", "/v1/cards/{pos}/replace", NULL, "UA", K_UA, 0, NULL, NULL,
	 "replace an active card by an issued one",
	 "Replace the active card UA by an issued one, for the same subscriber. UA becomes\n"
	 "replaced; the new card may export its usage data once UA's is recovered or forfeited.",
	 {{O_BY, 'b', "new_ua", 1, NULL}}},
	{"card", "forfeit", "POST", "/v1/cards/{pos}/forfeit", NULL, "UA", K_UA, 0, NULL, NULL,
	 "give up a replaced card's usage data",
	 "Give up the usage data of the replaced card UA: it is closed, and the subscriber's active\n"
	 "card may export once no other replaced card awaits recovery.",
	 {{0}}},
	{"card", "reload", "POST", "/v1/cards/{pos}/reload", NULL, "UA", K_UA, 0, NULL, NULL,
	 "add the credit policy's reload amount to a card",
	 "Queue the credit policy's reload amount for the active card UA. Once per Idempotency-Key:\n"
	 "the same key again answers the first answer and queues nothing.",
	 {{0}}},
	{"card", "delete", "DELETE", "/v1/cards/{pos}", NULL, "UA", K_UA, 0, NULL, NULL,
	 "remove a card never assigned",
	 "Remove card UA, registered and never assigned (state issued). A card that was used stays,\n"
	 "for its invoices: refused (409 conflict).",
	 {{0}}},
	{"card", "emm", "GET", "/v1/cards/{pos}/emm-queue", NULL, "UA", K_UA, L_LIST, "emms", "section",
	 "list the EMMs queued for a card", "List the EMMs queued for card UA, in queue order (the sections not shown).",
	 {{0}}},

	{"product", "add", "POST", "/v1/products", NULL, NULL, K_FLAG, 0, NULL, NULL, "add a subscription product",
	 "Add a subscription product.",
	 {{O_PRODUCT, 'b', "id", 0, "its id, carried in ECMs and EMMs (default: the next free one)"},
	  {'n', 'b', "name", 1, "its name"}}},
	{"product", "list", "GET", "/v1/products", NULL, NULL, K_FLAG, L_LIST, "products", NULL, "list the products",
	 "List the products, by id.", {{0}}},
	SHOW_RENAME_DELETE("product", "/v1/products", "a product", "product",
			   "; refused (409 conflict) while a subscription or a channel refers to it."),

	{"channel", "add", "POST", "/v1/channels", NULL, NULL, K_FLAG, 0, NULL, NULL, "add a channel",
	 "Add a channel covered by a product.",
	 {{O_CHANNEL, 'b', "id", 0, "its id (default: the next free one)"},
	  {'n', 'b', "name", 1, "its name"},
	  {O_PRODUCT, 'b', "product_id", 1, "the product that covers it"}}},
	{"channel", "list", "GET", "/v1/channels", NULL, NULL, K_FLAG, L_LIST, "channels", NULL, "list the channels",
	 "List the channels, by id.", {{O_PRODUCT, 'q', "product", 0, "only the channels of this product"}}},
	SHOW_RENAME_DELETE("channel", "/v1/channels", "a channel", "channel", "."),

	{"event", "add", "POST", "/v1/events", NULL, NULL, K_FLAG, 0, NULL, NULL, "add a pay-per-view event",
	 "Add a pay-per-view event on a channel, with its price and times.",
	 {{O_EVENT, 'b', "id", 0, "its id (default: the next free one)"},
	  {'n', 'b', "name", 1, "its name"},
	  {O_PRICE, 'b', "price", 1, NULL},
	  {O_CHANNEL, 'b', "channel_id", 1, "the channel it is on"},
	  {O_START, 'b', "start", 0, NULL},
	  {O_END, 'b', "end", 1, NULL}}},
	{"event", "list", "GET", "/v1/events", NULL, NULL, K_FLAG, L_LIST, "events", NULL, "list the events",
	 "List the pay-per-view events, by id.",
	 {{O_SINCE, 'q', "since", 0, "only the events that start at T or later"},
	  {O_UNTIL, 'q', "until", 0, "only the events that start before T"}}},
	SHOW_RENAME_DELETE("event", "/v1/events", "an event", "event", "; refused (409 conflict) once a card bought it."),

	{"credit-policy", "show", "GET", "/v1/credit-policy", NULL, NULL, K_FLAG, 0, NULL, NULL,
	 "show the credit policy", "Show the credit policy: a new card's initial credit, the reload amount.", {{0}}},
	{"credit-policy", "set", "PUT", "/v1/credit-policy", NULL, NULL, K_FLAG, 0, NULL, NULL,
	 "set the credit policy", "Set the credit policy.",
	 {{O_INITIAL_CREDIT, 'b', "initial_credit", 1, NULL}, {O_RELOAD_AMOUNT, 'b', "reload_amount", 1, NULL}}},

	{"service-keys", "list", "GET", "/v1/service-keys", NULL, NULL, K_FLAG, L_TABLE, "service_keys", NULL,
	 "list the service key ids and versions (never a key)",
	 "List the service key ids and versions, never a key.", {{0}}},
	{"service-keys", "rotate", "POST", "/v1/service-keys/rotate", NULL, NULL, K_FLAG, 0, NULL, NULL,
	 "add the next version of a service key",
	 "Add the next version of a service key and queue it for every active card (an unfinished\n"
	 "rotation is resumed). Scramble with it only once the cards have it.",
	 {{O_KEY_ID, 'b', "key_id", 1, NULL}}},

	{"rights", "renew", "POST", "/v1/rights/renew", NULL, NULL, K_FLAG, L_EMPTY, NULL, NULL,
	 "send the rights of the current window",
	 "Send every subscription the right for the current rights window (the center does it at\n"
	 "start and hourly; a window done already queues nothing).",
	 {{0}}},

	{NULL, "subscribe", "POST", "/v1/subscribers/{subscriber}/subscriptions", "/v1/products/{product}/subscriptions",
	 NULL, K_FLAG, L_SUBSCRIBE, NULL, NULL, "subscribe subscribers to a product (or renew)",
	 "Subscribe a subscriber to a product, or renew (a right per product: a renewal replaces\n"
	 "it); the right is queued for the subscriber's active card. With --subscriber given more\n"
	 "than once, or --all-subscribers, one job does them all (the Idempotency-Key names it: the\n"
	 "same command with the same key resumes it).",
	 {{O_SUBSCRIBER, 'x', NULL, 0, "the subscriber (may be repeated)"},
	  {O_ALL_SUBSCRIBERS, 'x', NULL, 0, NULL},
	  {O_PRODUCT, 'x', NULL, 1, NULL},
	  {O_START, 'x', NULL, 0, NULL},
	  {O_END, 'x', NULL, 1, NULL}}},
	{NULL, "unsubscribe", "DELETE", "/v1/subscribers/{subscriber}/subscriptions/{product}", NULL, NULL, K_FLAG, 0,
	 NULL, NULL, "remove a subscriber's right to a product",
	 "Remove a subscriber's right to a product; the revocation is queued for its active card.",
	 {{O_SUBSCRIBER, 'p', "subscriber", 1, NULL}, {O_PRODUCT, 'p', "product", 1, NULL}}},
	{NULL, "invoices", "GET", "/v1/invoices", "/v1/subscribers/{subscriber}/invoices", NULL, K_FLAG, L_LIST,
	 "invoices", NULL, "list the invoices", "List the invoices (pay-per-view purchases that reached the center), by time.",
	 {{O_SUBSCRIBER, 'p', "subscriber", 0, "only this subscriber's"},
	  {O_SINCE, 'q', "since", 0, NULL},
	  {O_UNTIL, 'q', "until", 0, NULL}}},
	{NULL, "uploads", "GET", "/v1/upload/sessions", NULL, NULL, K_FLAG, L_LIST, "sessions", NULL,
	 "list the decoders' upload sessions", "List the decoders' upload sessions (never a nonce or a key).",
	 {{'u', 'q', "card", 0, NULL}}},
	{NULL, "jobs", "GET", "/v1/jobs", "/v1/jobs/{pos}", "ID", K_TEXT, L_LIST | L_POS_OPT, "jobs", NULL,
	 "list the bulk jobs, or show one",
	 "List the bulk jobs (subscriptions, rights renewals) with their progress, or show job ID\n"
	 "(its id as the list gives it).",
	 {{0}}},
	{NULL, "health", "GET", "/healthz", NULL, NULL, K_FLAG, L_HEALTH, NULL, NULL,
	 "is the center up (healthz) and its database writable (readyz)",
	 "Ask the center whether it serves (/healthz) and whether its database takes writes\n"
	 "(/readyz). Exit 0 when both say so. Needs no token.",
	 {{0}}},
};
#define NLEAF (sizeof leaves / sizeof leaves[0])

/* ---- help ---- */

static void opt_line(FILE *f, const struct center_opt *o, const char *help)
{
	char lhs[64], sh[8] = "      ";
	const char *h = help ? help : o->help;

	if (o->o.val < 128)
		snprintf(sh, sizeof sh, "  -%c, ", o->o.val);
	snprintf(lhs, sizeof lhs, "%s--%s%s%s", sh, o->o.name, o->arg ? " " : "", o->arg ? o->arg : "");
	fprintf(f, "%-27s ", lhs);
	for (; *h; h++) {
		fputc(*h, f);
		if (*h == '\n')
			fprintf(f, "%28s", "");
	}
	fputc('\n', f);
}

static const char *prog_of(const struct center_leaf *l, char *buf, size_t cap)
{
	snprintf(buf, cap, "center %s%s%s", l->group ? l->group : "", l->group ? " " : "", l->name);
	return buf;
}

void kh__center_help(const struct center_leaf *l)
{
	char prog[64], word[96];
	size_t col;

	prog_of(l, prog, sizeof prog);
	col = (size_t)printf("usage: keyhole %s", prog);
#define WORD(...)                                                   \
	do {                                                        \
		int n_ = snprintf(word, sizeof word, __VA_ARGS__);  \
		if (col + (size_t)n_ + 1 > 96)                      \
			col = (size_t)printf("\n          ") - 1; \
		col += (size_t)printf(" %s", word);                 \
	} while (0)
	if (l->pos)
		WORD(l->flags & L_POS_OPT ? "[%s]" : "%s", l->pos);
	for (const struct center_use *u = l->use; u->opt; u++) {
		const struct center_opt *o = &kh__center_opts[kh__center_opt_index(u->opt)];
		WORD("%s--%s%s%s%s", u->req ? "" : "[", o->o.name, o->arg ? " " : "", o->arg ? o->arg : "",
		     u->req ? "" : "]");
	}
	if (l->flags & L_LIST)
		WORD("[--limit N] [--cursor C] [--all]");
	if (KH__CENTER_WRITE(l))
		WORD("[--idempotency-key K]");
	WORD("[common options]");
#undef WORD
	printf("\n\n%s\n\n", l->about);
	for (const struct center_use *u = l->use; u->opt; u++)
		opt_line(stdout, &kh__center_opts[kh__center_opt_index(u->opt)], u->help);
	if (l->flags & L_LIST)
		for (size_t i = KH__CENTER_NCOMMON; i < KH__CENTER_NCOMMON + KH__CENTER_NLIST; i++)
			opt_line(stdout, &kh__center_opts[i], NULL);
	if (KH__CENTER_WRITE(l))
		opt_line(stdout, &kh__center_opts[KH__CENTER_IDEM], NULL);
	printf("%sCommon options (here, or before the resource: keyhole center --center URL ...):\n",
	       l->use[0].opt || (l->flags & L_LIST) || KH__CENTER_WRITE(l) ? "\n" : "");
	for (size_t i = 0; i < KH__CENTER_NCOMMON; i++)
		opt_line(stdout, &kh__center_opts[i], NULL);
	opt_line(stdout, &kh__center_opts[kh__center_nopts - 1], NULL);
	printf("\nPrints a table (lists) or key: value lines; --json the answer unchanged. An error of the\n"
	       "center is one line 'keyhole center: STATUS CODE: MESSAGE' and exit status 1.\n");
}

static const char *cur_group; /* the resource being dispatched, NULL at the top */

static const struct center_leaf *cur_leaf(const char *group, const char *name)
{
	for (size_t i = 0; i < NLEAF; i++)
		if (((!group && !leaves[i].group) || (group && leaves[i].group && !strcmp(group, leaves[i].group))) &&
		    !strcmp(name, leaves[i].name))
			return &leaves[i];
	return NULL;
}

static int leaf_main(int argc, char **argv)
{
	const struct center_leaf *l = cur_leaf(cur_group, argv[0]);
	char prog[64];

	if (!l)
		return kh_cli_usage("center", "unknown command '%s'", argv[0]);
	prog_of(l, prog, sizeof prog);
	if (kh_cli_wants_help(argc, argv)) {
		kh__center_help(l);
		return KH_EXIT_OK;
	}
	return kh__center_run(l, prog, argc, argv);
}

/* ---- dispatch ---- */

static int group_main(int argc, char **argv)
{
	struct kh_cli_cmd tab[16];
	char prog[64];
	size_t n = 0;

	cur_group = argv[0];
	for (size_t i = 0; i < NLEAF && n < sizeof tab / sizeof tab[0]; i++)
		if (leaves[i].group && !strcmp(leaves[i].group, argv[0]))
			tab[n++] = (struct kh_cli_cmd){leaves[i].name, leaf_main, leaves[i].summary};
	snprintf(prog, sizeof prog, "center %s", argv[0]);
	return kh_cli_dispatch(prog, tab, n, argc, argv);
}

static const struct kh_cli_cmd groups[] = {
	{"subscriber", group_main, "create, list, show, rename and close subscribers; their subscriptions"},
	{"card", group_main, "register, list, show, assign, replace, forfeit, reload and delete cards; their EMMs"},
	{"product", group_main, "add, list, show, rename and delete subscription products"},
	{"channel", group_main, "add, list, show, rename and delete channels"},
	{"event", group_main, "add, list, show, rename and delete pay-per-view events"},
	{"credit-policy", group_main, "show and set the credit policy"},
	{"service-keys", group_main, "list the service key versions; rotate a key"},
	{"rights", group_main, "renew the subscription rights of the current window"},
};
#define NGROUP (sizeof groups / sizeof groups[0])

static void center_help(const struct kh_cli_cmd *tab, size_t n)
{
	kh_cli_list(stdout, "center", tab, n);
	printf("\nThe operator's client of the management center's API (keyhole serve). Common options,\n"
	       "on every command or before the resource (keyhole center --center URL card list):\n");
	for (size_t i = 0; i < KH__CENTER_NCOMMON; i++)
		opt_line(stdout, &kh__center_opts[i], NULL);
	printf("\nThe environment gives the defaults: KEYHOLE_CENTER (--center), KEYHOLE_CACERT (--cacert),\n"
	       "KEYHOLE_TOKEN_FILE (--token-file); an option on the command line wins.\n");
}

int kh_cmd_center(int argc, char **argv)
{
	struct kh_cli_cmd tab[NGROUP + 8];
	struct option lo[KH__CENTER_NCOMMON + 2];
	char **nargv;
	size_t n = 0, k;
	int c, first, rc;

	for (size_t i = 0; i < NGROUP; i++)
		tab[n++] = groups[i];
	for (size_t i = 0; i < NLEAF; i++)
		if (!leaves[i].group && n < sizeof tab / sizeof tab[0])
			tab[n++] = (struct kh_cli_cmd){leaves[i].name, leaf_main, leaves[i].summary};
	cur_group = NULL;
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
		center_help(tab, n);
		return KH_EXIT_OK;
	}
	/* the common options before the resource go after its command, where it parses them */
	for (k = 0; k < KH__CENTER_NCOMMON; k++)
		lo[k] = kh__center_opts[k].o;
	lo[k++] = kh__center_opts[kh__center_nopts - 1].o;
	memset(&lo[k], 0, sizeof lo[k]);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+T:h", lo, NULL)) != -1) {
		if (c == 'h') {
			center_help(tab, n);
			return KH_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return kh_cli_usage("center", "unknown or incomplete option '%s'", argv[optind - 1]);
	}
	first = optind;
	if (first == 1)
		return kh_cli_dispatch("center", tab, n, argc, argv);
	if (first >= argc)
		return kh_cli_usage("center", "a command is required after the options");
	if (!(nargv = calloc((size_t)argc + 1, sizeof *nargv)))
		return kh_cli_fail("center", KH_ERR_NOMEM);
	k = 0;
	nargv[k++] = argv[0];
	for (int i = first; i < argc; i++)
		nargv[k++] = argv[i];
	for (int i = 1; i < first; i++)
		nargv[k++] = argv[i];
	rc = kh_cli_dispatch("center", tab, n, argc, nargv);
	free(nargv);
	return rc;
}
