/*
 * keyhole center, running one command (a row of the table in cmd_center.c): its options parsed
 * and checked by kind, the environment's defaults where the command line is silent, the path,
 * query and JSON body built from where each option goes, the request (or every page of a list)
 * and the answer printed. See keyhole-center(1).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "keyhole/cert.h"
#include "keyhole/file.h"
#include "keyhole/http.h"

/* ---- values ---- */

static const char *kind_rule(enum center_kind k)
{
	switch (k) {
	case K_URL:
		return "a base URL https://HOST[:PORT] (http:// only to 127.0.0.1, localhost or [::1] unless "
		       "--insecure-http)";
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
static int value(enum center_kind k, const char *s, json_t **out)
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

/* The text of a checked value (malloc'd), percent-encoded when it goes into a path. */
static char *plain_text(const json_t *v, int path)
{
	char *s = NULL;
	if (json_is_integer(v))
		return asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0 ? NULL : s;
	return path ? kh_cli_url_segment(json_string_value(v)) : strdup(json_string_value(v));
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
	const struct center_leaf *l;
	const char *prog;
	const char *raw[KH__CENTER_MAXOPT]; /* the option values as given, by index */
	json_t *val[KH__CENTER_MAXOPT];     /* ... checked */
	int flag[KH__CENTER_MAXOPT];        /* the flags given */
	json_t *subs;                       /* subscribe: every --subscriber */
	const char *pos;                    /* the argument */
	json_t *posval;
	uint64_t start, end;                /* --start and --end, with the command that takes them */
	int bulk;                           /* subscribe: one job for several or all */
	int list;                           /* the answer is a list */
};

#define RAW(R, o) ((R)->raw[kh__center_opt_index(o)])
#define VAL(R, o) ((R)->val[kh__center_opt_index(o)])
#define FLAG(R, o) ((R)->flag[kh__center_opt_index(o)])

/* getopt_long's table and short letters for what command l takes. */
static void getopt_table(const struct center_leaf *l, struct option lo[static KH__CENTER_MAXOPT + 1],
			 char shorts[static 2 * KH__CENTER_MAXOPT + 1])
{
	size_t n = 0, k = 0;

	for (size_t i = 0; i < kh__center_nopts; i++) {
		const struct center_opt *o = &kh__center_opts[i];
		if (!kh__center_takes(l, i))
			continue;
		lo[n++] = o->o;
		if (o->o.val < 128) {
			shorts[k++] = (char)o->o.val;
			if (o->arg)
				shorts[k++] = ':';
		}
	}
	memset(&lo[n], 0, sizeof lo[n]);
	shorts[k] = 0;
}

/* The command line into R, every value checked. KH_EXIT_OK, or KH_EXIT_USAGE after one line. */
static int parse(struct run *R, int argc, char **argv)
{
	struct option lo[KH__CENTER_MAXOPT + 1];
	char shorts[2 * KH__CENTER_MAXOPT + 1];
	unsigned char seen[512] = {0};
	const struct center_opt *o;
	const char *dup;
	size_t i;
	int c, pr;

	getopt_table(R->l, lo, shorts);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		dup = c == O_SUBSCRIBER && (R->l->flags & L_SUBSCRIBE) ? NULL : kh_cli_twice(lo, c, seen);
		if (dup)
			return kh_cli_usage(R->prog, "--%s is given twice (it takes one value)", dup);
		if (c == '?' || c == ':' || (i = kh__center_opt_index(c)) == kh__center_nopts)
			return kh_cli_usage(R->prog, "unknown or incomplete option '%s'", argv[optind - 1]);
		o = &kh__center_opts[i];
		if (!o->arg) {
			R->flag[i] = 1;
			continue;
		}
		R->raw[i] = optarg;
		json_decref(R->val[i]);
		R->val[i] = NULL;
		/* --start and --end are read together below: END may count from START */
		if (c != O_START && c != O_END && value(o->kind, optarg, &R->val[i]) != 0)
			return kh_cli_usage(R->prog, "--%s takes %s", o->o.name, kind_rule(o->kind));
		if (c == O_SUBSCRIBER && json_array_append(R->subs, R->val[i]) != 0)
			return kh_cli_fail("center", KH_ERR_NOMEM);
	}
	if (optind < argc && R->l->pos) {
		R->pos = argv[optind++];
		if (value(R->l->pos_kind, R->pos, &R->posval) != 0)
			return kh_cli_usage(R->prog, "%s takes %s", R->l->pos, kind_rule(R->l->pos_kind));
	}
	if (optind < argc)
		return kh_cli_usage(R->prog, "unexpected argument '%s'", argv[optind]);
	if (R->l->pos && !R->pos && !(R->l->flags & L_POS_OPT))
		return kh_cli_usage(R->prog, "%s is required", R->l->pos);
	for (const struct center_use *u = R->l->use; u->opt; u++) {
		i = kh__center_opt_index(u->opt);
		if (u->req && !R->raw[i] && !R->flag[i])
			return kh_cli_usage(R->prog, "--%s is required", kh__center_opts[i].o.name);
	}
	if (kh__center_use_of(R->l, kh__center_opt_index(O_END))) {
		pr = kh_cli_parse_period(RAW(R, O_START) ? RAW(R, O_START) : "now", RAW(R, O_END), &R->start, &R->end);
		if (pr == -1 || R->end > INT64_MAX)
			return kh_cli_usage(R->prog, "--start and --end take Unix seconds, now, now+N, now-N or +N");
		if (pr == -2)
			return kh_cli_usage(R->prog, "--end is not after --start");
	}
	if (R->l->flags & L_SUBSCRIBE) {
		if ((json_array_size(R->subs) == 0) == !FLAG(R, O_ALL_SUBSCRIBERS))
			return kh_cli_usage(R->prog, "give --subscriber (one or more) or --all-subscribers");
		R->bulk = FLAG(R, O_ALL_SUBSCRIBERS) || json_array_size(R->subs) > 1;
	}
	R->list = (R->l->flags & (L_LIST | L_TABLE)) && !((R->l->flags & L_POS_OPT) && R->pos);
	return KH_EXIT_OK;
}

/*
 * Where the center is and how to reach it (the command line wins over the environment), the
 * files the command reads, then the center opened with the Idempotency-Key of its writes. An exit
 * status: KH_EXIT_USAGE for a center not named or not allowed, KH_EXIT_FAIL for a file.
 */
static int reach(struct run *R, struct kh_cli_center *c)
{
	const char *url = RAW(R, O_CENTER) ? RAW(R, O_CENTER) : getenv("KEYHOLE_CENTER");
	const char *cacert = RAW(R, O_CACERT) ? RAW(R, O_CACERT) : getenv("KEYHOLE_CACERT");
	const char *tokfile = RAW(R, 'T') ? RAW(R, 'T') : getenv("KEYHOLE_TOKEN_FILE");
	char *tok = NULL;
	int rc;

	if (!url || !*url)
		return kh_cli_usage(R->prog, "--center URL is required (or KEYHOLE_CENTER in the environment)");
	if (kh_http_url_check(url, FLAG(R, O_INSECURE)) != KH_OK)
		return kh_cli_usage(R->prog, "%s takes %s", RAW(R, O_CENTER) ? "--center" : "KEYHOLE_CENTER",
				    kind_rule(K_URL));
	if (cacert && !*cacert)
		cacert = NULL;
	if (tokfile && !*tokfile)
		tokfile = NULL;
	if (cacert && access(cacert, R_OK) != 0) {
		fprintf(stderr, "keyhole: %s: %s\n", cacert, strerror(errno));
		return KH_EXIT_FAIL;
	}
	if (RAW(R, O_CERT)) { /* the file's name becomes its content */
		json_decref(VAL(R, O_CERT));
		VAL(R, O_CERT) = NULL;
		if (cert_b64(RAW(R, O_CERT), &VAL(R, O_CERT)) != KH_EXIT_OK)
			return KH_EXIT_FAIL;
	}
	if (tokfile && kh_cli_read_token(tokfile, &tok) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	rc = kh_cli_center_open(c, url, cacert, tok);
	kh_cli_free_token(tok);
	if (rc != KH_EXIT_OK)
		return rc;
	if (R->raw[KH__CENTER_IDEM])
		snprintf(c->idem, sizeof c->idem, "%s", R->raw[KH__CENTER_IDEM]);
	else if (kh_cli_center_idem_new(c->idem) != 0)
		return kh_cli_fail("random", KH_ERR_CRYPTO);
	return KH_EXIT_OK;
}

/* The path of template t, NULL when one of its {keys} was not given (or out of memory: *nomem). */
static char *fill(const struct run *R, const char *t, int *nomem)
{
	char *out = NULL, *seg;
	size_t len = 0, kl;
	FILE *f = open_memstream(&out, &len);
	int ok = 1;

	if (!f) {
		*nomem = 1;
		return NULL;
	}
	while (*t && ok) {
		const json_t *v = NULL;
		if (*t != '{') {
			fputc(*t++, f);
			continue;
		}
		kl = strcspn(t + 1, "}");
		if (kl == 3 && strncmp(t + 1, "pos", 3) == 0) {
			v = R->posval;
		} else if (R->l->flags & L_SUBSCRIBE) { /* its own: {subscriber} (the one) or {product} */
			v = strncmp(t + 1, "product", kl) == 0 ? VAL(R, O_PRODUCT) : json_array_get(R->subs, 0);
		} else {
			for (const struct center_use *u = R->l->use; u->opt; u++)
				if (u->where == 'p' && strlen(u->key) == kl && strncmp(u->key, t + 1, kl) == 0)
					v = R->val[kh__center_opt_index(u->opt)];
		}
		if (!v) {
			ok = 0;
		} else if (!(seg = plain_text(v, 1))) {
			*nomem = 1;
			ok = 0;
		} else {
			fputs(seg, f);
			free(seg);
			t += kl + 2;
		}
	}
	if (fclose(f) != 0)
		*nomem = 1, ok = 0;
	if (!ok) {
		free(out);
		return NULL;
	}
	return out;
}

/* The request's target: its path (the alternative when all it names is given) and query. */
static char *make_target(const struct run *R)
{
	char *target = NULL, *q, *t;
	int nomem = 0;

	if ((R->l->flags & L_SUBSCRIBE) && !R->bulk)
		target = fill(R, R->l->path, &nomem);
	else if (!(R->l->path_alt && (target = fill(R, R->l->path_alt, &nomem))) && !nomem)
		target = fill(R, R->l->path, &nomem);
	for (const struct center_use *u = R->l->use; target && u->opt; u++) {
		const json_t *v = R->val[kh__center_opt_index(u->opt)];
		if (u->where != 'q' || !v)
			continue;
		t = (q = plain_text(v, 0)) ? kh_cli_url_add(target, u->key, q) : NULL;
		free(q);
		free(target);
		target = t;
	}
	if (target && R->list && R->val[KH__CENTER_NCOMMON]) { /* --limit */
		t = (q = plain_text(R->val[KH__CENTER_NCOMMON], 0)) ? kh_cli_url_add(target, "limit", q) : NULL;
		free(q);
		free(target);
		target = t;
	}
	return target;
}

/* The request's JSON body, NULL for none (*body); -1 when out of memory. */
static int make_body(const struct run *R, json_t **body)
{
	const struct center_leaf *l = R->l;
	json_t *b;
	int e = 0;

	*body = NULL;
	if (!KH__CENTER_WRITE(l) || !strcmp(l->method, "DELETE"))
		return 0;
	if (!(b = json_object()))
		return -1;
	if (l->flags & L_SUBSCRIBE) {
		if (FLAG(R, O_ALL_SUBSCRIBERS)) /* one job: every subscriber with an active card */
			e = json_object_set_new(b, "all", json_true());
		else if (R->bulk) /* one job: these */
			e = json_object_set(b, "subscribers", R->subs);
		else /* POST /v1/subscribers/{id}/subscriptions */
			e = json_object_set(b, "product_id", VAL(R, O_PRODUCT));
	}
	for (const struct center_use *u = l->use; u->opt && !e; u++) {
		const json_t *v = R->val[kh__center_opt_index(u->opt)];
		if (u->where == 'b' && v)
			e = json_object_set(b, u->key, (json_t *)v);
	}
	if (!e && kh__center_use_of(l, kh__center_opt_index(O_END)))
		e = json_object_set_new(b, "start", json_integer((json_int_t)R->start)) ||
		    json_object_set_new(b, "end", json_integer((json_int_t)R->end));
	if (e) {
		json_decref(b);
		return -1;
	}
	if (json_object_size(b) == 0 && !(l->flags & L_EMPTY))
		json_decref(b);
	else
		*body = b;
	return 0;
}

static int print_answer(const struct run *R, const struct kh_cli_answer *a)
{
	const json_t *nc;

	if (FLAG(R, O_JSON)) {
		if (a->text) {
			fwrite(a->text, 1, a->len, stdout);
			if (a->len == 0 || a->text[a->len - 1] != '\n')
				putchar('\n');
		} else if (json_dumpf(a->json, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0) {
			return kh_cli_fail("standard output", KH_ERR_IO);
		} else {
			putchar('\n');
		}
	} else if (R->list) {
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
	unsigned how = KH_CLI_CALL_OPEN | KH_CLI_CALL_ANY_STATUS;
	int rc = KH_EXIT_FAIL;

	if (kh_cli_center_call(c, "GET", "/healthz", NULL, how, &hz) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (kh_cli_center_call(c, "GET", "/readyz", NULL, how, &rz) != KH_EXIT_OK) {
		kh_cli_answer_free(&hz);
		return KH_EXIT_FAIL;
	}
	if (json) {
		printf("{\"healthz\":%.*s,\"readyz\":%.*s}\n", (int)hz.len, hz.text, (int)rz.len, rz.text);
	} else {
		const char *hs = json_string_value(json_object_get(hz.json, "status"));
		const char *rs = json_string_value(json_object_get(rz.json, "status"));
		printf("healthz: %ld %s\nreadyz: %ld %s\n", hz.status, hs ? hs : "-", rz.status, rs ? rs : "-");
	}
	if (fflush(stdout) != 0)
		fprintf(stderr, "keyhole: standard output: %s\n", strerror(errno));
	else if (hz.status != 200 || rz.status != 200)
		kh_cli_center_report(hz.status != 200 ? &hz : &rz);
	else
		rc = KH_EXIT_OK;
	kh_cli_answer_free(&hz);
	kh_cli_answer_free(&rz);
	return rc;
}

/* The request (every page of a list with --all) and its answer printed. */
static int ask(const struct run *R, struct kh_cli_center *c)
{
	struct kh_cli_answer a = {0};
	json_t *body = NULL;
	char *target;
	int rc;

	if (R->l->flags & L_HEALTH)
		return health(c, FLAG(R, O_JSON));
	if (!(target = make_target(R)) || make_body(R, &body) != 0) {
		free(target);
		return kh_cli_fail("center", KH_ERR_NOMEM);
	}
	if (R->list && (R->l->flags & L_LIST))
		rc = kh_cli_center_list(c, target, R->l->items, RAW(R, O_CURSOR), FLAG(R, 'A'), &a);
	else
		rc = kh_cli_center_call(c, R->l->method, target, body, 0, &a);
	if (rc == KH_EXIT_OK && R->list && !json_is_array(json_object_get(a.json, R->l->items))) {
		fprintf(stderr, "keyhole center: %ld: the center's answer is not a list of %s\n", a.status,
			R->l->items);
		rc = KH_EXIT_FAIL;
	}
	if (rc == KH_EXIT_OK)
		rc = print_answer(R, &a);
	kh_cli_answer_free(&a);
	json_decref(body);
	free(target);
	return rc;
}

int kh__center_run(const struct center_leaf *l, const char *prog, int argc, char **argv)
{
	struct kh_cli_center center = {0};
	struct run R;
	int rc;

	memset(&R, 0, sizeof R);
	R.l = l;
	R.prog = prog;
	if (!(R.subs = json_array()))
		rc = kh_cli_fail("center", KH_ERR_NOMEM);
	else if ((rc = parse(&R, argc, argv)) == KH_EXIT_OK && (rc = reach(&R, &center)) == KH_EXIT_OK)
		rc = ask(&R, &center);
	kh_cli_center_close(&center);
	for (size_t i = 0; i < kh__center_nopts; i++)
		json_decref(R.val[i]);
	json_decref(R.posval);
	json_decref(R.subs);
	return rc;
}
