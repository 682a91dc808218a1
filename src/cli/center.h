/*
 * keyhole center inside src/cli/: the commands as data (cmd_center.c: the tables, --help and the
 * dispatch), running one (cmd_center_run.c: options, values, the request, the output), the wire
 * (cmd_center_http.c) and what a person reads (cmd_center_out.c). Not for other commands.
 */
#ifndef KH_CLI_CENTER_H
#define KH_CLI_CENTER_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

/* ---- options ---- */

enum center_kind {
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

struct center_opt {
	struct option o;
	const char *arg; /* the value's name in the help, NULL for a flag */
	enum center_kind kind;
	const char *help; /* default meaning; a command may say it its own way */
};

/*
 * Every option of every `center` command: the first KH__CENTER_NCOMMON are common to all, the
 * next KH__CENTER_NLIST to the lists, then --idempotency-key (writes); --help is the last.
 */
extern const struct center_opt kh__center_opts[];
extern const size_t kh__center_nopts;
#define KH__CENTER_MAXOPT 40 /* at least kh__center_nopts (checked where the table is) */
#define KH__CENTER_NCOMMON 5
#define KH__CENTER_NLIST 3
#define KH__CENTER_IDEM (KH__CENTER_NCOMMON + KH__CENTER_NLIST)
/* The index of the option getopt_long answers val for, kh__center_nopts when none. */
size_t kh__center_opt_index(int val);

/* ---- commands ---- */

#define L_LIST 1u      /* a paged list: --limit, --cursor, --all */
#define L_TABLE 2u     /* a list in one answer */
#define L_POS_OPT 4u   /* the argument may be left out: then path_alt, a list */
#define L_EMPTY 8u     /* a write with an empty JSON object as body */
#define L_SUBSCRIBE 16u
#define L_HEALTH 32u

struct center_use {
	int opt;
	char where;       /* 'p' path {key}, 'q' query key=, 'b' body "key":, 'x' the command's own */
	const char *key;
	int req;
	const char *help; /* NULL: the option's own */
};

struct center_leaf {
	const char *group; /* NULL: directly under center */
	const char *name;
	const char *method;
	const char *path;     /* {pos} is the argument, {key} an option's value ('p') */
	const char *path_alt; /* tried first when all its {keys} are given (L_POS_OPT: without the argument) */
	const char *pos;      /* the argument's name, NULL for none */
	enum center_kind pos_kind;
	unsigned flags;
	const char *items; /* a list's key in the answer */
	const char *hide;  /* fields not shown in tables */
	const char *summary;
	const char *about;
	struct center_use use[7];
};

#define KH__CENTER_WRITE(l) (strcmp((l)->method, "GET") != 0)

/* What command l says of option i (an index into kh__center_opts), NULL when it has no use for it. */
const struct center_use *kh__center_use_of(const struct center_leaf *l, size_t i);
/* Whether command l takes option i: one of its own, or common, or a list's or a write's. */
int kh__center_takes(const struct center_leaf *l, size_t i);
/* The help of command l, on standard output. */
void kh__center_help(const struct center_leaf *l);
/* Run command l (prog: "center GROUP NAME") with its arguments (argv[0] is its name). An exit status. */
int kh__center_run(const struct center_leaf *l, const char *prog, int argc, char **argv);

/* ---- the wire (cmd_center_http.c) and the output (cmd_center_out.c) */

struct kh_http_client;

/* An Idempotency-Key this command writes or takes (--idempotency-key): 1 to 128 visible characters. */
#define KH_CLI_IDEM_MAX 128

/* A center the command talks to: its base URL, the client, the bearer token's header line. */
struct kh_cli_center {
	struct kh_http_client *client;
	char *base;       /* the base URL without a final '/' */
	const char *shown;/* the URL as given, for error lines */
	char *auth;       /* "Authorization: Bearer TOKEN" or NULL; wiped when closed */
	size_t authlen;
	char idem[KH_CLI_IDEM_MAX + 1]; /* the Idempotency-Key every write of this command sends */
};

/* One answer: its status, its JSON, and its bytes as they came (what --json prints). */
struct kh_cli_answer {
	long status;
	json_t *json;
	char *text; /* NULL for a list put together from its pages */
	size_t len;
};

/*
 * Open a center (url already checked with kh_http_url_check; cacert NULL: the system's store;
 * token NULL: none, else copied into the header line). KH_EXIT_OK, or KH_EXIT_FAIL after one line.
 */
int kh_cli_center_open(struct kh_cli_center *c, const char *url, const char *cacert, const char *token);
/* Free and wipe what kh_cli_center_open made; safe on a zeroed or half-opened struct. */
void kh_cli_center_close(struct kh_cli_center *c);
/* A fresh Idempotency-Key: 16 bytes of OpenSSL's RNG in hex. 0, or -1 when the RNG failed. */
int kh_cli_center_idem_new(char key[static KH_CLI_IDEM_MAX + 1]);
void kh_cli_answer_free(struct kh_cli_answer *a);

#define KH_CLI_CALL_OPEN 1u       /* an open endpoint: the token is not sent */
#define KH_CLI_CALL_ANY_STATUS 2u /* any JSON answer is KH_EXIT_OK, whatever its status */
/*
 * One request: method to target (a path and query under the base URL), body JSON or NULL. A
 * write (any method but GET) carries c->idem as Idempotency-Key and, when no answer came, is sent
 * once more with the same key: the center keeps every write's key, so a write it did already
 * answers its first answer and is not done twice. KH_EXIT_OK with a 2xx JSON answer in *a (the caller frees it);
 * KH_EXIT_FAIL after one line on stderr: "keyhole center: STATUS CODE: MESSAGE" from the API's
 * error envelope, or the transport failure. The token never appears in any line.
 */
int kh_cli_center_call(struct kh_cli_center *c, const char *method, const char *target, const json_t *body,
		       unsigned flags, struct kh_cli_answer *a);
/* The one error line of an answer: "keyhole center: STATUS CODE: MESSAGE" (the error envelope). */
void kh_cli_center_report(const struct kh_cli_answer *a);
/*
 * A list: GET target (its query may already hold filters and limit), from cursor (NULL: the
 * start). all 0: the page as answered; all 1: every page, following next_cursor until it is
 * null, put together as one answer {items: [every item], "next_cursor": null} (text NULL).
 */
int kh_cli_center_list(struct kh_cli_center *c, const char *target, const char *items, const char *cursor,
		       int all, struct kh_cli_answer *a);
/* target + "?name=value" (or "&..."), value percent-encoded; malloc'd, NULL when out of memory. */
char *kh_cli_url_add(const char *target, const char *name, const char *value);
/* s percent-encoded as one path segment; malloc'd, NULL when out of memory. */
char *kh_cli_url_segment(const char *s);
/*
 * A list of objects as a table (header of the scalar fields' names in capitals, one aligned row
 * per item, fields in hide (comma-separated) left out); "no WHAT" when empty. Each line starts
 * with indent. KH_EXIT_OK or KH_EXIT_FAIL after one line.
 */
int kh_cli_print_table(FILE *f, const char *indent, const json_t *items, const char *hide, const char *what);
/* One object as "key: value" lines; its lists of objects as tables indented below their key. */
int kh_cli_print_item(FILE *f, const char *indent, const json_t *obj, const char *hide);

#endif
