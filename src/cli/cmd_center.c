/*
 * keyhole center: the operator's command-line client of the management center's API
 * (docs/api/openapi.yaml), one subcommand per resource and verb. The commands are data: each is
 * a row of `leaves` (method, path, the options it takes and where each goes: the path, the query
 * or the JSON body), so that every command parses, checks, documents (--help) and reports the
 * same way. The wire is cmd_center_http.c, what a person reads cmd_center_out.c. See
 * keyhole-center(1).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keyhole/cert.h"
#include "keyhole/file.h"
#include "keyhole/http.h"

/* ---- options ---- */

enum kind {
	K_FLAG,   /* no value */
	K_URL,    /* the center's base URL */
	K_FILE,   /* a file name */
	K_TEXT,   /* a name, a cursor: not empty, no control characters */
	K_ID,     /* a subscriber: 1 to 2^63-1 */
	K_CAT,    /* a product, channel or event: 1 to 2^32-1 */
	K_U32,    /* a price, an amount: 0 to 2^32-1 */
	K_KEYID,  /* a service key id: 0 to 255 */
	K_LIMIT,  /* items per page: 1 to 1000 */
	K_TIME,   /* Unix seconds, now, now+N, now-N (+N too in --start, --end) */
	K_UA,     /* a unique address */
	K_STATE,  /* a card's state */
	K_ROLE,   /* a card's role */
	K_IDEM,   /* an Idempotency-Key */
};

enum {
	O_CENTER = 256, O_CACERT, O_INSECURE, O_JSON, O_LIMIT, O_CURSOR, O_IDEM, O_NAME_PREFIX, O_SUBSCRIBER,
	O_PRODUCT, O_CHANNEL, O_EVENT, O_PRICE, O_START, O_END, O_SINCE, O_UNTIL, O_STATE, O_CERT, O_BY,
	O_INITIAL_CREDIT, O_RELOAD_AMOUNT, O_KEY_ID, O_ALL_SUBSCRIBERS,
};

struct copt {
	struct option o;
	const char *arg; /* the value's name in the help, NULL for a flag */
	enum kind kind;
	const char *help; /* default meaning; a command may say it its own way */
};

/* Every option of every `center` command; the first five are common to all, the next three to lists. */
static const struct copt copts[] = {
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
	 "random bytes in hex); a repeat with the same key is done once"},
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
#define NOPT (sizeof copts / sizeof copts[0])
#define NCOMMON 5
#define NLIST 3
#define IDX_IDEM (NCOMMON + NLIST)

static size_t opt_index(int val)
{
	for (size_t i = 0; i < NOPT; i++)
		if (copts[i].o.val == val)
			return i;
	return NOPT;
}

/* ---- commands ---- */

#define L_LIST 1u      /* a paged list: --limit, --cursor, --all */
#define L_TABLE 2u     /* a list in one answer */
#define L_POS_OPT 4u   /* the argument may be left out: then path_alt, a list */
#define L_EMPTY 8u     /* a write with an empty JSON object as body */
#define L_SUBSCRIBE 16u
#define L_HEALTH 32u

struct use {
	int opt;
	char where;       /* 'p' path {key}, 'q' query key=, 'b' body "key":, 'x' the command's own */
	const char *key;
	int req;
	const char *help; /* NULL: the option's own */
};

struct leaf {
	const char *group; /* NULL: directly under center */
	const char *name;
	const char *method;
	const char *path;     /* {pos} is the argument, {key} an option's value ('p') */
	const char *path_alt; /* tried first when all its {keys} are given (L_POS_OPT: without the argument) */
	const char *pos;      /* the argument's name, NULL for none */
	enum kind pos_kind;
	unsigned flags;
	const char *items; /* a list's key in the answer */
	const char *hide;  /* fields not shown in tables */
	const char *summary;
	const char *about;
	struct use use[7];
};

#define WRITE(l) (strcmp((l)->method, "GET") != 0)

/* The show, rename and delete of a catalogue item (product, channel, event) at PATH/{id}. */
#define SHOW_RENAME_DELETE(group, path, a_noun, noun, delete_about)                                     \
	{group, "show", "GET", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL, "show " a_noun,              \
	 "Show " noun " ID.", {{0}}},                                                                   \
	{group, "rename", "PATCH", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL, "change " a_noun "'s name", \
	 "Change " noun " ID's name.", {{'n', 'b', "name", 1, "the new name"}}},                        \
	{group, "delete", "DELETE", path "/{pos}", NULL, "ID", K_CAT, 0, NULL, NULL, "remove " a_noun,      \
	 "Remove " noun " ID" delete_about, {{0}}}

static const struct leaf leaves[] = {
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
	 "list the bulk subscription jobs, or show one",
	 "List the bulk subscription jobs (progress, done), or show job ID.", {{0}}},
	{NULL, "health", "GET", "/healthz", NULL, NULL, K_FLAG, L_HEALTH, NULL, NULL,
	 "is the center up (healthz) and its database writable (readyz)",
	 "Ask the center whether it serves (/healthz) and whether its database takes writes\n"
	 "(/readyz). Exit 0 when both say so. Needs no token.",
	 {{0}}},
};
#define NLEAF (sizeof leaves / sizeof leaves[0])

/* ---- help ---- */

static void opt_line(FILE *f, const struct copt *o, const char *help)
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

static const char *prog_of(const struct leaf *l, char *buf, size_t cap)
{
	snprintf(buf, cap, "center %s%s%s", l->group ? l->group : "", l->group ? " " : "", l->name);
	return buf;
}

static void leaf_help(const struct leaf *l)
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
	for (const struct use *u = l->use; u->opt; u++) {
		const struct copt *o = &copts[opt_index(u->opt)];
		WORD("%s--%s%s%s%s", u->req ? "" : "[", o->o.name, o->arg ? " " : "", o->arg ? o->arg : "",
		     u->req ? "" : "]");
	}
	if (l->flags & L_LIST)
		WORD("[--limit N] [--cursor C] [--all]");
	if (WRITE(l))
		WORD("[--idempotency-key K]");
	WORD("[common options]");
#undef WORD
	printf("\n\n%s\n\n", l->about);
	for (const struct use *u = l->use; u->opt; u++)
		opt_line(stdout, &copts[opt_index(u->opt)], u->help);
	if (l->flags & L_LIST)
		for (size_t i = NCOMMON; i < NCOMMON + NLIST; i++)
			opt_line(stdout, &copts[i], NULL);
	if (WRITE(l))
		opt_line(stdout, &copts[IDX_IDEM], NULL);
	printf("%sCommon options (here, or before the resource: keyhole center --center URL ...):\n",
	       l->use[0].opt || (l->flags & L_LIST) || WRITE(l) ? "\n" : "");
	for (size_t i = 0; i < NCOMMON; i++)
		opt_line(stdout, &copts[i], NULL);
	opt_line(stdout, &copts[NOPT - 1], NULL);
	printf("\nPrints a table (lists) or key: value lines; --json the answer unchanged. An error of the\n"
	       "center is one line 'keyhole center: STATUS CODE: MESSAGE' and exit status 1.\n");
}

/* ---- values ---- */

static const char *kind_rule(enum kind k)
{
	switch (k) {
	case K_URL: return "a base URL https://HOST[:PORT] (http:// only to 127.0.0.1, localhost or [::1] unless --insecure-http)";
	case K_FILE: return "a file";
	case K_TEXT: return "a text, not empty, without control characters";
	case K_ID: return "an id: a number from 1";
	case K_CAT: return "an id from 1 to 4294967295";
	case K_U32: return "a number from 0 to 4294967295";
	case K_KEYID: return "a number from 0 to 255";
	case K_LIMIT: return "a number from 1 to 1000";
	case K_TIME: return "Unix seconds, now, now+N or now-N";
	case K_UA: return KH_CLI_UA_FORMS;
	case K_STATE: return "issued, active, replaced or closed";
	case K_ROLE: return "card or cam";
	case K_IDEM: return "1 to 128 visible ASCII characters";
	case K_FLAG: break;
	}
	return "no value";
}

/* Check s as a value of kind k; *out is its JSON (numbers as integers, a UA as 8 digits). 0 or -1. */
static int value(enum kind k, const char *s, json_t **out)
{
	uint64_t v = 0, max = 0;
	uint32_t ua;
	char buf[16];

	*out = NULL;
	switch (k) {
	case K_ID: max = INT64_MAX; break;
	case K_CAT: case K_U32: max = UINT32_MAX; break;
	case K_KEYID: max = 255; break;
	case K_LIMIT: max = 1000; break;
	case K_TIME:
		if (kh_cli_parse_time(s, &v) != 0 || v > INT64_MAX)
			return -1;
		*out = json_integer((json_int_t)v);
		return *out ? 0 : -1;
	case K_UA:
		if (kh_cli_parse_ua(s, &ua) != 0)
			return -1;
		snprintf(buf, sizeof buf, "%08X", ua);
		*out = json_string(buf);
		return *out ? 0 : -1;
	case K_STATE:
		if (strcmp(s, "issued") && strcmp(s, "active") && strcmp(s, "replaced") && strcmp(s, "closed"))
			return -1;
		break;
	case K_ROLE:
		if (strcmp(s, "card") && strcmp(s, "cam"))
			return -1;
		break;
	case K_IDEM:
		if (strlen(s) > KH_CLI_IDEM_MAX)
			return -1;
		for (const char *p = s; *p; p++)
			if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
				return -1;
		break;
	case K_TEXT: case K_FILE: case K_URL:
		for (const char *p = s; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return -1;
		break;
	case K_FLAG: return -1;
	}
	if (max) {
		if (kh_cli_parse_num(s, max, &v) != 0 || (v == 0 && k != K_U32 && k != K_KEYID))
			return -1;
		*out = json_integer((json_int_t)v);
		return *out ? 0 : -1;
	}
	if (!*s)
		return -1;
	*out = json_string(s);
	return *out ? 0 : -1;
}

/* The text of a checked value, as it goes into a path or a query. */
static char *value_text(const json_t *v)
{
	char *s = NULL;
	if (json_is_integer(v))
		return asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0 ? NULL : s;
	return kh_cli_url_segment(json_string_value(v));
}

/* The certificate file (PEM or DER) as the API takes it: DER in unpadded base64url. */
static int cert_b64(const char *path, json_t **out)
{
	uint8_t *data = NULL, der[KH_CERT_MAX];
	size_t len = 0, dlen = 0;
	char b64[2 * KH_CERT_MAX];
	kh_err r;

	if ((r = kh_file_read(path, 64 * 1024, &data, &len)) != KH_OK)
		return kh_cli_fail(path, r);
	if (len >= 10 && memmem(data, len, "-----BEGIN", 10)) {
		r = kh_cert_pem_to_der((const char *)data, len, der, sizeof der, &dlen);
	} else if (len > 0 && len <= sizeof der && data[0] == 0x30) {
		memcpy(der, data, len);
		dlen = len;
		r = KH_OK;
	} else {
		r = KH_ERR_CERT;
	}
	kh_file_free(data, len);
	if (r == KH_OK)
		r = kh_b64url_encode(der, dlen, b64, sizeof b64);
	if (r != KH_OK)
		return kh_cli_fail(path, r == KH_ERR_BUF ? KH_ERR_CERT : r);
	if (!(*out = json_string(b64)))
		return kh_cli_fail(path, KH_ERR_NOMEM);
	return KH_EXIT_OK;
}

/* ---- running a command ---- */

struct run {
	const struct leaf *l;
	const char *prog;
	const char *raw[NOPT];  /* the option values as given */
	json_t *val[NOPT];      /* ... checked */
	int flag[NOPT];
	json_t *subs;           /* subscribe: every --subscriber */
	const char *pos;
	json_t *posval;
	uint64_t start, end;
};

static const struct use *use_of(const struct leaf *l, size_t i)
{
	for (const struct use *u = l->use; u->opt; u++)
		if (opt_index(u->opt) == i)
			return u;
	return NULL;
}

/* The path of template t, NULL when one of its {keys} was not given (or out of memory: *nomem). */
static char *fill(const struct run *R, const char *t, int *nomem)
{
	char *out = NULL, *seg;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int ok = 1;

	if (!f) {
		*nomem = 1;
		return NULL;
	}
	while (*t && ok) {
		const char *e;
		const json_t *v = NULL;
		if (*t != '{') {
			fputc(*t++, f);
			continue;
		}
		e = strchr(t, '}');
		if ((size_t)(e - t - 1) == 3 && strncmp(t + 1, "pos", 3) == 0) {
			v = R->posval;
		} else {
			for (const struct use *u = R->l->use; u->opt; u++)
				if (u->where == 'p' && strlen(u->key) == (size_t)(e - t - 1) &&
				    strncmp(u->key, t + 1, (size_t)(e - t - 1)) == 0)
					v = R->val[opt_index(u->opt)];
			if (R->l->flags & L_SUBSCRIBE) /* its own: {subscriber} (one) and {product} */
				v = strncmp(t + 1, "product", 7) == 0 ? R->val[opt_index(O_PRODUCT)]
									: json_array_get(R->subs, 0);
		}
		if (!v) {
			ok = 0;
			break;
		}
		if (!(seg = value_text(v))) {
			*nomem = 1;
			ok = 0;
			break;
		}
		fputs(seg, f);
		free(seg);
		t = e + 1;
	}
	if (fclose(f) != 0)
		*nomem = 1, ok = 0;
	if (!ok) {
		free(out);
		return NULL;
	}
	return out;
}

static int add_query(char **target, const char *name, const json_t *v)
{
	char *s = value_text(v), *t;
	char *plain = NULL;

	if (!s)
		return -1;
	/* value_text escaped a string for a path: the query escapes it itself */
	if (json_is_string(v)) {
		free(s);
		if (!(plain = strdup(json_string_value(v))))
			return -1;
		s = plain;
	}
	t = kh_cli_url_add(*target, name, s);
	free(s);
	if (!t)
		return -1;
	free(*target);
	*target = t;
	return 0;
}

/* The request's JSON body, NULL for none (*body) ; -1 when out of memory. */
static int make_body(const struct run *R, json_t **body)
{
	const struct leaf *l = R->l;
	json_t *b;

	*body = NULL;
	if (!WRITE(l) || !strcmp(l->method, "DELETE"))
		return 0;
	if (!(b = json_object()))
		return -1;
	if (l->flags & L_SUBSCRIBE) {
		int e;
		if (R->flag[opt_index(O_ALL_SUBSCRIBERS)]) /* one job: every subscriber with an active card */
			e = json_object_set_new(b, "all", json_true());
		else if (json_array_size(R->subs) > 1) /* one job: these */
			e = json_object_set(b, "subscribers", R->subs);
		else /* POST /v1/subscribers/{id}/subscriptions */
			e = json_object_set(b, "product_id", R->val[opt_index(O_PRODUCT)]);
		if (e != 0)
			goto nomem;
	}
	for (const struct use *u = l->use; u->opt; u++) {
		size_t i = opt_index(u->opt);
		if (u->where == 'b' && R->val[i] && json_object_set(b, u->key, R->val[i]) != 0)
			goto nomem;
	}
	if ((use_of(l, opt_index(O_END))) &&
	    (json_object_set_new(b, "start", json_integer((json_int_t)R->start)) != 0 ||
	     json_object_set_new(b, "end", json_integer((json_int_t)R->end)) != 0))
		goto nomem;
	if (json_object_size(b) == 0 && !(l->flags & L_EMPTY)) {
		json_decref(b);
		return 0;
	}
	*body = b;
	return 0;
nomem:
	json_decref(b);
	return -1;
}

static int print_answer(const struct run *R, const struct kh_cli_answer *a, int json, int list)
{
	const json_t *nc;

	if (json) {
		if (a->text) {
			fwrite(a->text, 1, a->len, stdout);
			if (a->len == 0 || a->text[a->len - 1] != '\n')
				putchar('\n');
		} else if (json_dumpf(a->json, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 || putchar('\n') == EOF) {
			return kh_cli_fail("standard output", KH_ERR_IO);
		}
	} else if (list) {
		if (kh_cli_print_table(stdout, "", json_object_get(a->json, R->l->items), R->l->hide,
				       R->l->items) != KH_EXIT_OK)
			return KH_EXIT_FAIL;
		if ((nc = json_object_get(a->json, "next_cursor")) && json_is_string(nc))
			printf("next cursor: %s (--cursor %s, or --all for every page)\n", json_string_value(nc),
			       json_string_value(nc));
	} else if (kh_cli_print_item(stdout, "", a->json, R->l->hide) != KH_EXIT_OK) {
		return KH_EXIT_FAIL;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "keyhole: standard output: %s\n", strerror(errno));
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

/* health: GET /healthz, then /readyz; both open. */
static int health(struct kh_cli_center *c, int json)
{
	struct kh_cli_answer hz, rz;
	int rc = KH_EXIT_FAIL, hok, rok;

	if (kh_cli_center_call(c, "GET", "/healthz", NULL, KH_CLI_CALL_OPEN | KH_CLI_CALL_ANY_STATUS, &hz) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (kh_cli_center_call(c, "GET", "/readyz", NULL, KH_CLI_CALL_OPEN | KH_CLI_CALL_ANY_STATUS, &rz) != KH_EXIT_OK) {
		kh_cli_answer_free(&hz);
		return KH_EXIT_FAIL;
	}
	hok = hz.status == 200;
	rok = rz.status == 200;
	if (json) {
		printf("{\"healthz\":%.*s,\"readyz\":%.*s}\n", (int)hz.len, hz.text, (int)rz.len, rz.text);
	} else {
		const char *hs = json_string_value(json_object_get(hz.json, "status"));
		const char *rs = json_string_value(json_object_get(rz.json, "status"));
		printf("healthz: %ld %s\nreadyz: %ld %s\n", hz.status, hs ? hs : "-", rz.status, rs ? rs : "-");
	}
	if (fflush(stdout) != 0)
		fprintf(stderr, "keyhole: standard output: %s\n", strerror(errno));
	else if (!hok || !rok)
		kh_cli_center_report(!hok ? &hz : &rz);
	else
		rc = KH_EXIT_OK;
	kh_cli_answer_free(&hz);
	kh_cli_answer_free(&rz);
	return rc;
}

static const struct leaf *cur_leaf(const char *group, const char *name)
{
	for (size_t i = 0; i < NLEAF; i++)
		if (((!group && !leaves[i].group) || (group && leaves[i].group && !strcmp(group, leaves[i].group))) &&
		    !strcmp(name, leaves[i].name))
			return &leaves[i];
	return NULL;
}

static const char *cur_group; /* the resource being dispatched, NULL at the top */

/* Whether command l takes option i. */
static int takes(const struct leaf *l, size_t i)
{
	return i < NCOMMON || i == NOPT - 1 || ((l->flags & L_LIST) && i < NCOMMON + NLIST) ||
	       (WRITE(l) && i == IDX_IDEM) || use_of(l, i);
}

static int leaf_main(int argc, char **argv)
{
	struct option lo[NOPT + 1];
	char prog[64], shorts[32] = "", *tok = NULL, *target = NULL;
	unsigned char seen[512] = {0};
	struct kh_cli_center center = {0};
	struct kh_cli_answer ans = {0};
	struct run R;
	json_t *body = NULL;
	const char *url, *cacert, *tokfile, *from;
	size_t n = 0, i;
	int c, rc = KH_EXIT_USAGE, nomem = 0, list;

	memset(&R, 0, sizeof R);
	R.l = cur_leaf(cur_group, argv[0]);
	if (!R.l)
		return kh_cli_usage("center", "unknown command '%s'", argv[0]);
	R.prog = prog_of(R.l, prog, sizeof prog);
	if (kh_cli_wants_help(argc, argv)) {
		leaf_help(R.l);
		return KH_EXIT_OK;
	}
	for (i = 0; i < NOPT; i++) {
		if (!takes(R.l, i))
			continue;
		lo[n++] = copts[i].o;
		if (copts[i].o.val < 128) {
			size_t sl = strlen(shorts);
			shorts[sl] = (char)copts[i].o.val;
			shorts[sl + 1] = 0;
			if (copts[i].arg)
				strcat(shorts, ":");
		}
	}
	memset(&lo[n], 0, sizeof lo[n]);
	if (!(R.subs = json_array())) {
		rc = kh_cli_fail("center", KH_ERR_NOMEM);
		goto out;
	}
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		const char *dup = c == O_SUBSCRIBER && (R.l->flags & L_SUBSCRIBE) ? NULL : kh_cli_twice(lo, c, seen);
		if (dup) {
			kh_cli_usage(R.prog, "--%s is given twice (it takes one value)", dup);
			goto out;
		}
		if (c == '?' || c == ':' || (i = opt_index(c)) == NOPT) {
			kh_cli_usage(R.prog, "unknown or incomplete option '%s'", argv[optind - 1]);
			goto out;
		}
		if (!copts[i].arg) {
			R.flag[i] = 1;
			continue;
		}
		R.raw[i] = optarg;
		json_decref(R.val[i]);
		if (copts[i].kind != K_TIME && value(copts[i].kind, optarg, &R.val[i]) != 0) {
			kh_cli_usage(R.prog, "--%s takes %s", copts[i].o.name, kind_rule(copts[i].kind));
			goto out;
		}
		if (c == O_SUBSCRIBER && json_array_append(R.subs, R.val[i]) != 0) {
			rc = kh_cli_fail("center", KH_ERR_NOMEM);
			goto out;
		}
	}
	if (optind < argc && R.l->pos && !R.pos) {
		R.pos = argv[optind++];
		if (value(R.l->pos_kind, R.pos, &R.posval) != 0) {
			kh_cli_usage(R.prog, "%s takes %s", R.l->pos, kind_rule(R.l->pos_kind));
			goto out;
		}
	}
	if (optind < argc) {
		kh_cli_usage(R.prog, "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (R.l->pos && !R.pos && !(R.l->flags & L_POS_OPT)) {
		kh_cli_usage(R.prog, "%s is required", R.l->pos);
		goto out;
	}
	for (const struct use *u = R.l->use; u->opt; u++) {
		i = opt_index(u->opt);
		if (u->req && !R.raw[i] && !R.flag[i]) {
			kh_cli_usage(R.prog, "--%s is required", copts[i].o.name);
			goto out;
		}
		if (copts[i].kind == K_TIME && R.raw[i] && u->opt != O_START && u->opt != O_END &&
		    value(K_TIME, R.raw[i], &R.val[i]) != 0) {
			kh_cli_usage(R.prog, "--%s takes %s", copts[i].o.name, kind_rule(K_TIME));
			goto out;
		}
	}
	if (use_of(R.l, opt_index(O_END))) {
		const char *s = R.raw[opt_index(O_START)] ? R.raw[opt_index(O_START)] : "now";
		int pr = kh_cli_parse_period(s, R.raw[opt_index(O_END)], &R.start, &R.end);
		if (pr == -1 || R.end > INT64_MAX) {
			kh_cli_usage(R.prog, "--start and --end take Unix seconds, now, now+N, now-N or +N");
			goto out;
		}
		if (pr == -2) {
			kh_cli_usage(R.prog, "--end is not after --start");
			goto out;
		}
	}
	if ((R.l->flags & L_SUBSCRIBE) &&
	    (json_array_size(R.subs) == 0) == !R.flag[opt_index(O_ALL_SUBSCRIBERS)]) {
		kh_cli_usage(R.prog, "give --subscriber (one or more) or --all-subscribers");
		goto out;
	}
	/* where the center is, and how to reach it: flags win over the environment */
	url = R.raw[0] ? R.raw[0] : getenv("KEYHOLE_CENTER");
	from = R.raw[0] ? "--center" : "KEYHOLE_CENTER";
	cacert = R.raw[1] ? R.raw[1] : getenv("KEYHOLE_CACERT");
	tokfile = R.raw[2] ? R.raw[2] : getenv("KEYHOLE_TOKEN_FILE");
	if (!url || !*url) {
		kh_cli_usage(R.prog, "--center URL is required (or KEYHOLE_CENTER in the environment)");
		goto out;
	}
	if (kh_http_url_check(url, R.flag[3]) != KH_OK) {
		kh_cli_usage(R.prog, "%s takes %s", from, kind_rule(K_URL));
		goto out;
	}
	if (cacert && !*cacert)
		cacert = NULL;
	if (tokfile && !*tokfile)
		tokfile = NULL;
	rc = KH_EXIT_FAIL;
	if (cacert && access(cacert, R_OK) != 0) {
		fprintf(stderr, "keyhole: %s: %s\n", cacert, strerror(errno));
		goto out;
	}
	i = opt_index(O_CERT);
	if (R.raw[i] && (json_decref(R.val[i]), R.val[i] = NULL, cert_b64(R.raw[i], &R.val[i])) != KH_EXIT_OK)
		goto out;
	if (tokfile && kh_cli_read_token(tokfile, &tok) != KH_EXIT_OK)
		goto out;
	if (kh_cli_center_open(&center, url, cacert, tok) != KH_EXIT_OK)
		goto out;
	if (R.raw[IDX_IDEM])
		snprintf(center.idem, sizeof center.idem, "%s", R.raw[IDX_IDEM]);
	else if (kh_cli_center_idem_new(center.idem) != 0) {
		kh_cli_fail("random", KH_ERR_CRYPTO);
		goto out;
	}
	if (R.l->flags & L_HEALTH) {
		rc = health(&center, R.flag[4]);
		goto out;
	}
	/* the path: the alternative when all it names is given (jobs ID, invoices --subscriber, a bulk job) */
	list = (R.l->flags & (L_LIST | L_TABLE)) && !((R.l->flags & L_POS_OPT) && R.pos);
	if ((R.l->flags & L_SUBSCRIBE) && json_array_size(R.subs) == 1 && !R.flag[opt_index(O_ALL_SUBSCRIBERS)])
		target = fill(&R, R.l->path, &nomem);
	else if (!(R.l->path_alt && (target = fill(&R, R.l->path_alt, &nomem))) && !nomem)
		target = fill(&R, R.l->path, &nomem);
	if (!target || nomem) {
		kh_cli_fail("center", KH_ERR_NOMEM);
		goto out;
	}
	for (const struct use *u = R.l->use; u->opt; u++)
		if (u->where == 'q' && R.val[opt_index(u->opt)] && add_query(&target, u->key, R.val[opt_index(u->opt)]) != 0)
			nomem = 1;
	if (list && R.val[NCOMMON] && add_query(&target, "limit", R.val[NCOMMON]) != 0)
		nomem = 1;
	if (nomem || make_body(&R, &body) != 0) {
		kh_cli_fail("center", KH_ERR_NOMEM);
		goto out;
	}
	if (list && (R.l->flags & L_LIST))
		rc = kh_cli_center_list(&center, target, R.l->items, R.raw[NCOMMON + 1], R.flag[NCOMMON + 2], &ans);
	else
		rc = kh_cli_center_call(&center, R.l->method, target, body, 0, &ans);
	if (rc == KH_EXIT_OK && list && !json_is_array(json_object_get(ans.json, R.l->items))) {
		fprintf(stderr, "keyhole center: %ld: the center's answer is not a list of %s\n", ans.status,
			R.l->items);
		rc = KH_EXIT_FAIL;
	}
	if (rc == KH_EXIT_OK)
		rc = print_answer(&R, &ans, R.flag[4], list);
out:
	kh_cli_answer_free(&ans);
	kh_cli_center_close(&center);
	kh_cli_free_token(tok);
	json_decref(body);
	free(target);
	for (i = 0; i < NOPT; i++)
		json_decref(R.val[i]);
	json_decref(R.posval);
	json_decref(R.subs);
	return rc;
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
	for (size_t i = 0; i < NCOMMON; i++)
		opt_line(stdout, &copts[i], NULL);
	printf("\nThe environment gives the defaults: KEYHOLE_CENTER (--center), KEYHOLE_CACERT (--cacert),\n"
	       "KEYHOLE_TOKEN_FILE (--token-file); an option on the command line wins.\n");
}

int kh_cmd_center(int argc, char **argv)
{
	struct kh_cli_cmd tab[NGROUP + 8];
	struct option lo[NCOMMON + 2];
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
	for (k = 0; k < NCOMMON; k++)
		lo[k] = copts[k].o;
	lo[k++] = copts[NOPT - 1].o;
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
