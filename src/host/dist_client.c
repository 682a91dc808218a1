/*
 * The client host of program distribution (seed 002; contract in include/keyhole/distclient.h,
 * the protocol in docs/protocols/distribution.md). Two paths meet here: HTTPS to the server, and
 * module commands to the buyer's processor. Every second-path message is carried as opaque bytes
 * from one to the other; what the client keeps is what it may keep: an encrypted package, tokens
 * sealed under a key only the processor holds, and a receipt.
 *
 * Crash safety rests on the server's charge being idempotent per delivery: before the charge is
 * asked, BASE.part records the delivery and the pending token, so a client that dies (or loses
 * the answer) asks the same charge again and gets the same receipt, never a second debit.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/distclient.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "host/api_int.h"

#define LIST_PAGE 100

struct kh_dist_client {
	struct kh__api api; /* the server: its URL, the session token once logged in, the last words */
};

/* ---- the first path ---- */

kh_err kh_dist_client_new(const char *url, const char *cacert, struct kh_dist_client **out)
{
	struct kh_dist_client *c;
	kh_err r;

	if (!url || !out || strlen(url) > KH_DIST_URL_MAX)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh__api_init(&c->api, url, cacert, KH_DIST_CLIENT_PKG_MAX)) != KH_OK) {
		free(c);
		return r;
	}
	*out = c;
	return KH_OK;
}

void kh_dist_client_free(struct kh_dist_client *c)
{
	if (!c)
		return;
	kh__api_free(&c->api);
	free(c);
}

const char *kh_dist_client_error(const struct kh_dist_client *c)
{
	return c ? c->api.msg : "";
}

kh_err kh_dist_login(struct kh_dist_client *c, const char *name, const char *password)
{
	static const char P[] = "log in";
	char body[2048];
	struct kh_wr w;
	json_t *resp = NULL, *tok;
	const char *t;
	kh_err r;

	c->api.msg[0] = 0;
	if (!name || !password)
		return KH_ERR_INVAL;
	/* the body is written here, not by jansson: its copies of the password would not be wiped */
	kh_wr_init(&w, (uint8_t *)body, sizeof body - 1);
	kh_wr_bytes(&w, (const uint8_t *)"{\"name\":", 8);
	kh__api_put_json_string(&w, name);
	kh_wr_bytes(&w, (const uint8_t *)",\"password\":", 12);
	kh__api_put_json_string(&w, password);
	kh_wr_u8(&w, '}');
	if (w.err != KH_OK) {
		kh_wipe(body, sizeof body);
		kh__api_say(&c->api, "%s: the name or the password is too long", P);
		return KH_ERR_TOO_LARGE;
	}
	body[w.len] = 0;
	r = kh__api_call_json(&c->api, P, "POST", "/v1/sessions", body, 201, &resp);
	kh_wipe(body, sizeof body);
	if (r != KH_OK)
		return r;
	tok = json_object_get(resp, "token");
	t = json_string_value(tok);
	if (!t || !*t || strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") != strlen(t)) {
		kh__api_drop_secret_json(resp, "token");
		kh__api_say(&c->api, "%s: the server's answer carries no session token", P);
		return KH_ERR_FORMAT;
	}
	kh__api_free_secret(c->api.auth);
	if (asprintf(&c->api.auth, "Authorization: Bearer %s", t) < 0)
		c->api.auth = NULL;
	kh__api_drop_secret_json(resp, "token");
	return c->api.auth ? KH_OK : KH_ERR_NOMEM;
}

static int good_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 1 && n <= KH_DIST_NAME_MAX &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-") == n;
}

kh_err kh_dist_list(struct kh_dist_client *c, kh_err (*fn)(void *arg, const struct kh_dist_listing *p), void *arg)
{
	static const char P[] = "catalogue";
	int64_t after = 0, next;
	char target[64];
	kh_err r;

	c->api.msg[0] = 0;
	for (;;) {
		json_t *resp = NULL, *list, *e;
		size_t i;

		if (after)
			snprintf(target, sizeof target, "/v1/programs?after=%" PRId64 "&limit=%d", after, LIST_PAGE);
		else
			snprintf(target, sizeof target, "/v1/programs?limit=%d", LIST_PAGE);
		if ((r = kh__api_call_json(&c->api, P, "GET", target, NULL, 200, &resp)) != KH_OK)
			return r;
		list = json_object_get(resp, "programs");
		r = json_is_array(list) ? KH_OK : KH_ERR_FORMAT;
		json_array_foreach(list, i, e)
		{
			struct kh_dist_listing l = {0};
			const char *name = json_string_value(json_object_get(e, "name"));
			int64_t id, ver, price;

			if (r != KH_OK)
				break;
			if (kh__api_get_int(e, "id", 1, UINT32_MAX, &id) != 0 || kh__api_get_int(e, "version", 0, UINT32_MAX, &ver) != 0 ||
			    kh__api_get_int(e, "price", 0, INT64_MAX, &price) != 0 || !good_name(name)) {
				r = KH_ERR_FORMAT;
				break;
			}
			l.id = (uint32_t)id;
			l.version = (uint32_t)ver;
			l.price = (uint64_t)price;
			memcpy(l.name, name, strlen(name) + 1);
			r = fn(arg, &l);
		}
		next = 0;
		if (r == KH_OK && json_object_get(resp, "next") &&
		    (kh__api_get_int(resp, "next", 1, INT64_MAX, &next) != 0 || next <= after))
			r = KH_ERR_FORMAT;
		json_decref(resp);
		if (r == KH_ERR_FORMAT && !c->api.msg[0])
			kh__api_say(&c->api, "%s: the server's answer is not the API's", P);
		if (r != KH_OK || !next)
			return r;
		after = next;
	}
}

/* ---- the state file ---- */

static const char part_magic[] = "keyhole dist part 1\n";

kh_err kh_dist_part_format(const struct kh_dist_part *p, char *out, size_t cap, size_t *len)
{
	char hex[2 * KH_SHA256_LEN + 1], tok[KH_DIST_TOKEN_MAX * 2];
	int n;

	if (!p || !out || !len || !p->url[0] || p->delivery == 0 || p->delivery > INT64_MAX || p->token_len == 0 ||
	    p->token_len > KH_DIST_TOKEN_MAX || strpbrk(p->url, "\r\n"))
		return KH_ERR_INVAL;
	kh_hex_encode(p->package_hash, KH_SHA256_LEN, hex);
	if (kh_b64url_encode(p->token, p->token_len, tok, sizeof tok) != KH_OK)
		return KH_ERR_INVAL;
	n = snprintf(out, cap, "%sserver %s\ndelivery %" PRIu64 "\npackage %s\ntoken %s\n", part_magic, p->url,
		     p->delivery, hex, tok);
	kh_wipe(tok, sizeof tok);
	if (n < 0 || (size_t)n >= cap) {
		kh_wipe(out, cap);
		return KH_ERR_BUF;
	}
	*len = (size_t)n;
	return KH_OK;
}

/* The next line of b (from *off) that starts with key and a space: its value and length. */
static int part_line(const uint8_t *b, size_t n, size_t *off, const char *key, const char **v, size_t *vl)
{
	size_t kl = strlen(key), e;
	const uint8_t *nl;

	if (*off >= n || !(nl = memchr(b + *off, '\n', n - *off)))
		return -1;
	e = (size_t)(nl - b);
	if (e - *off <= kl + 1 || memcmp(b + *off, key, kl) != 0 || b[*off + kl] != ' ')
		return -1;
	*v = (const char *)b + *off + kl + 1;
	*vl = e - (*off + kl + 1);
	for (size_t i = 0; i < *vl; i++)
		if ((*v)[i] < 0x21 || (*v)[i] > 0x7E)
			return -1;
	*off = e + 1;
	return 0;
}

kh_err kh_dist_part_parse(const uint8_t *b, size_t n, struct kh_dist_part *out)
{
	struct kh_dist_part p;
	const char *v;
	size_t off = sizeof part_magic - 1, vl;
	uint64_t d = 0;
	kh_err r = KH_ERR_FORMAT;

	memset(&p, 0, sizeof p);
	if (!b || !out || n > KH_DIST_PART_MAX || n < off || memcmp(b, part_magic, off) != 0)
		return KH_ERR_FORMAT;
	if (part_line(b, n, &off, "server", &v, &vl) != 0 || vl > KH_DIST_URL_MAX)
		goto out;
	memcpy(p.url, v, vl);
	if (kh_http_url_check(p.url, 0) != KH_OK)
		goto out;
	if (part_line(b, n, &off, "delivery", &v, &vl) != 0 || vl > 19 || v[0] == '0')
		goto out;
	for (size_t i = 0; i < vl; i++) {
		if (v[i] < '0' || v[i] > '9')
			goto out;
		d = d * 10 + (uint64_t)(v[i] - '0');
	}
	if (d > INT64_MAX)
		goto out;
	p.delivery = d;
	if (part_line(b, n, &off, "package", &v, &vl) != 0 || vl != 2 * KH_SHA256_LEN ||
	    strspn(v, "0123456789abcdef") < vl || kh_hex_decode(v, vl, p.package_hash, KH_SHA256_LEN) != KH_OK)
		goto out;
	if (part_line(b, n, &off, "token", &v, &vl) != 0 ||
	    kh_b64url_decode(v, vl, p.token, sizeof p.token, &p.token_len) != KH_OK || p.token_len == 0)
		goto out;
	if (off != n)
		goto out;
	*out = p;
	r = KH_OK;
out:
	kh_wipe(&p, sizeof p);
	return r;
}

/* ---- files ---- */

struct paths {
	char *pkg, *lic, *rcpt, *part, *dir;
};

static void paths_free(struct paths *f)
{
	free(f->pkg);
	free(f->lic);
	free(f->rcpt);
	free(f->part);
	free(f->dir);
}

static kh_err paths_make(const char *base, struct paths *f)
{
	const char *slash = strrchr(base, '/');

	memset(f, 0, sizeof *f);
	if (asprintf(&f->pkg, "%s.khpk", base) < 0 || asprintf(&f->lic, "%s.lic", base) < 0 ||
	    asprintf(&f->rcpt, "%s.receipt", base) < 0 || asprintf(&f->part, "%s.part", base) < 0 ||
	    !(f->dir = slash ? strndup(base, slash == base ? 1 : (size_t)(slash - base)) : strdup("."))) {
		paths_free(f);
		memset(f, 0, sizeof *f);
		return KH_ERR_NOMEM;
	}
	return KH_OK;
}

/* Remove path (absent is fine) and make the removal durable. */
static kh_err remove_durably(const char *path, const char *dir)
{
	int fd;
	kh_err r = KH_OK;

	if (unlink(path) != 0 && errno != ENOENT)
		return KH_ERR_IO;
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return KH_ERR_IO;
	if (fsync(fd) != 0)
		r = KH_ERR_IO;
	close(fd);
	return r;
}

/* The whole of a small file, or KH_ERR_NOTFOUND when it is absent. */
static kh_err read_small(const char *path, size_t max, uint8_t **b, size_t *n)
{
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return KH_ERR_NOTFOUND;
	return kh_file_read(path, max, b, n);
}

/* ---- the second path ---- */

/* One command to the processor; its answer's data in resp (KH_APDU_MAX_RESP bytes). */
static kh_err to_processor(struct kh_dist_client *c, struct kh_transport *proc, uint8_t ins, const char *name,
			   const uint8_t *d, size_t n, uint8_t *resp, size_t *dlen)
{
	uint16_t sw = 0;
	kh_err r;

	if ((r = kh_host_apdu(proc, ins, 0, d, n, resp, KH_APDU_MAX_RESP, dlen, &sw)) != KH_OK)
		kh__api_say(&c->api, "the processor refused %s: %s", name, kh_strerror(r));
	return r;
}

/*
 * A command whose answer is a licence token ({1: token}: DIST KEY answers the pending one, DIST
 * ACTIVATE the active one), the token into tok.
 */
static kh_err token_cmd(struct kh_dist_client *c, struct kh_transport *proc, uint8_t ins, const char *name,
			const uint8_t *d, size_t n, uint8_t *tok, size_t *toklen)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_rd rd;
	struct kh_tlv t;
	size_t rn = 0;
	kh_err r;

	if ((r = to_processor(c, proc, ins, name, d, n, resp, &rn)) != KH_OK)
		return r;
	r = KH_ERR_FORMAT;
	kh_rd_init(&rd, resp, rn);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == KH_DIST_T_TOKEN && t.len > 0 && t.len <= KH_DIST_TOKEN_MAX) {
			memcpy(tok, t.v, t.len);
			*toklen = t.len;
			r = KH_OK;
			break;
		}
	if (r != KH_OK)
		kh__api_say(&c->api, "the processor's answer to %s carries no licence token", name);
	kh_wipe(resp, sizeof resp);
	return r;
}

/* A JSON body of one base64url field (and, with num_key, one integer before it). */
static char *b64_body(const char *num_key, uint64_t num, const char *key, const uint8_t *v, size_t n)
{
	json_t *o = json_object();
	char *s = NULL;

	if (o && (!num_key || json_object_set_new(o, num_key, json_integer((json_int_t)num)) == 0) &&
	    kh_json_set_b64(o, key, v, n) == KH_OK)
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

struct delivery {
	uint64_t id;
	uint8_t token[KH_DIST_TOKEN_MAX]; /* pending, then active */
	size_t token_len;
	uint8_t pkg_hash[KH_SHA256_LEN];
	uint32_t program, version; /* the package's */
	int64_t package_size;
};

/* Hello, auth, key: a keyed delivery and the pending token. */
static kh_err start(struct kh_dist_client *c, struct kh_transport *proc, uint32_t program, const uint8_t *receipt,
		    struct delivery *d)
{
	uint8_t resp[KH_APDU_MAX_RESP], msg[KH_APDU_MAX_DATA];
	char *body = NULL, target[64];
	json_t *ans = NULL;
	size_t n, mlen;
	int64_t v;
	kh_err r;

	if ((r = to_processor(c, proc, KH_INS_DIST_HELLO, "DIST HELLO", NULL, 0, resp, &n)) != KH_OK)
		return r;
	if (receipt) {
		json_t *o = json_object();
		if (o && kh_json_set_b64(o, "receipt", receipt, KH_DIST_RECEIPT_BYTES) == KH_OK &&
		    kh_json_set_b64(o, "hello", resp, n) == KH_OK)
			body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(o);
	} else {
		body = b64_body("program", program, "hello", resp, n);
	}
	if (!body)
		return KH_ERR_NOMEM;
	r = kh__api_call_json(&c->api, "delivery", "POST", "/v1/deliveries", body, 201, &ans);
	free(body);
	if (r != KH_OK)
		return r;
	r = KH_ERR_FORMAT;
	if (kh__api_get_int(ans, "id", 1, INT64_MAX, &v) != 0 ||
	    kh_json_get_b64(ans, "auth", msg, sizeof msg, &mlen, 0) != KH_OK) {
		kh__api_say(&c->api, "delivery: the server's answer is not the API's");
		goto out;
	}
	d->id = (uint64_t)v;
	json_decref(ans);
	ans = NULL;
	if ((r = to_processor(c, proc, KH_INS_DIST_AUTH, "the server's proof (DIST AUTH)", msg, mlen, resp, &n)) !=
	    KH_OK)
		goto out;
	r = KH_ERR_NOMEM;
	if (!(body = b64_body(NULL, 0, "resp", resp, n)))
		goto out;
	snprintf(target, sizeof target, "/v1/deliveries/%" PRIu64 "/resp", d->id);
	r = kh__api_call_json(&c->api, "delivery", "POST", target, body, 200, &ans);
	free(body);
	if (r != KH_OK)
		goto out;
	r = KH_ERR_FORMAT;
	if (kh__api_get_int(ans, "package_size", 1, KH_DIST_CLIENT_PKG_MAX, &d->package_size) != 0 ||
	    kh_json_get_b64(ans, "key", msg, sizeof msg, &mlen, 0) != KH_OK) {
		kh__api_say(&c->api, "delivery: the server's answer is not the API's");
		goto out;
	}
	r = token_cmd(c, proc, KH_INS_DIST_KEY, "the program key (DIST KEY)", msg, mlen, d->token, &d->token_len);
out:
	json_decref(ans);
	kh_wipe(resp, sizeof resp);
	return r;
}

/*
 * The delivery's package, checked (its size, header, program and version, and with check_hash its
 * SHA-256 against d->pkg_hash), written durably to path; d->pkg_hash is then the package's.
 */
static kh_err get_package(struct kh_dist_client *c, struct delivery *d, int check_hash, const char *path)
{
	uint8_t got[KH_SHA256_LEN];
	char target[64], *text = NULL;
	size_t len = 0;
	json_t *resp = NULL;
	struct kh_dist_pkg pkg;
	long status = 0;
	kh_err r;

	snprintf(target, sizeof target, "/v1/deliveries/%" PRIu64 "/package", d->id);
	if ((r = kh__api_call(&c->api, "package", "GET", target, NULL, &status, &resp, &text, &len)) != KH_OK)
		return r;
	if (status != 200) {
		r = kh__api_refused(&c->api, "package", status, resp);
		goto out;
	}
	r = KH_ERR_FORMAT;
	if (!text || (d->package_size && (uint64_t)d->package_size != len) ||
	    kh_dist_pkg_parse((const uint8_t *)text, len < KH_DIST_PKG_HDR_MAX ? len : KH_DIST_PKG_HDR_MAX, len,
			      &pkg) != KH_OK) {
		kh__api_say(&c->api, "package: the server sent a package that is not one (or not of the size it announced)");
		goto out;
	}
	if ((r = kh_sha256((const uint8_t *)text, len, got)) != KH_OK)
		goto out;
	if (check_hash && !kh_ct_eq(got, d->pkg_hash, KH_SHA256_LEN)) {
		r = KH_ERR_FORMAT;
		kh__api_say(&c->api, "package: the server sent other bytes than those of the purchase under way");
		goto out;
	}
	memcpy(d->pkg_hash, got, sizeof got);
	d->program = pkg.program;
	d->version = pkg.version;
	if ((r = kh_file_write_atomic(path, (const uint8_t *)text, len, 0644)) != KH_OK)
		kh__api_say(&c->api, "%s: %s", path, kh_strerror(r));
out:
	json_decref(resp);
	free(text);
	return r;
}

static void pause_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/*
 * The charge (retried: it is idempotent per delivery), then activation of the pending token.
 * *uncharged is set when the server refused the charge in a way that proves this delivery was
 * never charged: funds short, or a delivery not yet keyed (a charged one answers its receipt).
 */
static kh_err charge(struct kh_dist_client *c, struct kh_transport *proc, struct delivery *d, struct kh_dist_result *res,
		     int *uncharged)
{
	uint8_t sig[KH_ED25519_SIG_LEN], cmd[KH_APDU_MAX_DATA];
	struct kh_dist_receipt rc;
	char target[64];
	json_t *ans = NULL, *ch;
	size_t n;
	struct kh_wr w;
	kh_err r = KH_ERR_TRANSPORT;

	snprintf(target, sizeof target, "/v1/deliveries/%" PRIu64 "/charge", d->id);
	/* asked again after a lost answer or a server error: the same receipt, never a second debit */
	for (unsigned i = 1;; i++) {
		json_t *a = NULL;
		long status = 0;

		r = kh__api_call(&c->api, "charge", "POST", target, "{}", &status, &a, NULL, NULL);
		if (r == KH_OK && status == 200 && json_is_object(a)) {
			ans = a;
			break;
		}
		if (r == KH_OK)
			r = status == 200 ? KH_ERR_FORMAT : kh__api_refused(&c->api, "charge", status, a);
		json_decref(a);
		if ((status == 402 && r == KH_ERR_FUNDS) || (status == 409 && r == KH_ERR_DIST_SESSION))
			*uncharged = 1;
		if ((r != KH_ERR_TRANSPORT && status < 500) || i == KH_DIST_CHARGE_ATTEMPTS)
			return r;
		pause_ms(KH_DIST_CHARGE_BACKOFF_MS << (i - 1));
	}
	if (!ans)
		return r;
	r = KH_ERR_FORMAT;
	ch = json_object_get(ans, "charged");
	if (kh_json_get_b64(ans, "receipt", res->receipt, sizeof res->receipt, &n, 1) != KH_OK ||
	    kh_json_get_b64(ans, "program_sig", sig, sizeof sig, &n, 1) != KH_OK || !json_is_boolean(ch) ||
	    kh__api_get_int(ans, "balance", INT64_MIN, INT64_MAX, &res->balance) != 0 ||
	    kh_dist_receipt_parse(res->receipt, sizeof res->receipt, NULL, &rc) != KH_OK) {
		kh__api_say(&c->api, "charge: the server's answer is not the API's");
		goto out;
	}
	if (rc.program != d->program || rc.version != d->version) {
		kh__api_say(&c->api, "charge: the receipt is for another program than the package");
		goto out;
	}
	res->charged = json_is_true(ch);
	res->program = rc.program;
	res->version = rc.version;
	res->price = rc.price;
	memcpy(res->receipt_id, rc.id, sizeof rc.id);
	/* activation: the program signature turns the pending token into an active one */
	kh_wr_init(&w, cmd, sizeof cmd);
	kh_tlv_put(&w, KH_DIST_T_TOKEN, d->token, d->token_len);
	kh_tlv_put(&w, KH_DIST_T_PROGRAM_SIG, sig, sizeof sig);
	if ((r = kh_tlv_put(&w, KH_DIST_T_RECEIPT, rc.id, sizeof rc.id)) != KH_OK)
		goto out;
	r = token_cmd(c, proc, KH_INS_DIST_ACTIVATE, "activation (DIST ACTIVATE)", cmd, w.len, d->token, &d->token_len);
out:
	json_decref(ans);
	return r;
}

/* Write the state file for d (durably). */
static kh_err write_part(struct kh_dist_client *c, const struct delivery *d, const char *path)
{
	struct kh_dist_part p;
	char text[KH_DIST_PART_MAX];
	size_t n = 0;
	kh_err r;

	memset(&p, 0, sizeof p);
	memcpy(p.url, c->api.base, strlen(c->api.base));
	p.delivery = d->id;
	memcpy(p.package_hash, d->pkg_hash, sizeof p.package_hash);
	memcpy(p.token, d->token, d->token_len);
	p.token_len = d->token_len;
	if ((r = kh_dist_part_format(&p, text, sizeof text, &n)) == KH_OK &&
	    (r = kh_file_write_atomic(path, (const uint8_t *)text, n, 0600)) != KH_OK)
		kh__api_say(&c->api, "%s: %s", path, kh_strerror(r));
	kh_wipe(&p, sizeof p);
	kh_wipe(text, sizeof text);
	return r;
}

/* Before anything is sent: what BASE.part or BASE.receipt say about this fetch. */
static kh_err look(struct kh_dist_client *c, const struct paths *f, const uint8_t *receipt, struct delivery *d,
		   int *resume)
{
	uint8_t *b = NULL;
	size_t n = 0;
	struct kh_dist_part p;
	kh_err r;

	*resume = 0;
	r = read_small(f->part, KH_DIST_PART_MAX, &b, &n);
	if (r == KH_OK) {
		r = kh_dist_part_parse(b, n, &p);
		kh_file_free(b, n);
		if (r != KH_OK) {
			kh__api_say(&c->api, "%s is not a purchase's state file", f->part);
			return r;
		}
		if (strcmp(p.url, c->api.base) != 0) {
			kh__api_say(&c->api, "%s is a purchase from %s: finish it there", f->part, p.url);
			kh_wipe(&p, sizeof p);
			return KH_ERR_INVAL;
		}
		d->id = p.delivery;
		memcpy(d->pkg_hash, p.package_hash, sizeof d->pkg_hash);
		memcpy(d->token, p.token, p.token_len);
		d->token_len = p.token_len;
		kh_wipe(&p, sizeof p);
		*resume = 1;
		return KH_OK;
	}
	if (r != KH_ERR_NOTFOUND) {
		kh__api_say(&c->api, "%s: %s", f->part, kh_strerror(r));
		return r;
	}
	r = read_small(f->rcpt, KH_DIST_RECEIPT_BYTES + 1, &b, &n);
	if (r == KH_ERR_NOTFOUND)
		return KH_OK;
	if (r == KH_OK) {
		int same = receipt && n == KH_DIST_RECEIPT_BYTES && memcmp(b, receipt, n) == 0;
		kh_file_free(b, n);
		if (same)
			return KH_OK;
		kh__api_say(&c->api, "%s holds another receipt: it would be replaced; choose another --out", f->rcpt);
		return KH_ERR_EXISTS;
	}
	kh__api_say(&c->api, "%s: %s", f->rcpt, kh_strerror(r));
	return r;
}

kh_err kh_dist_fetch(struct kh_dist_client *c, struct kh_transport *proc, uint32_t program, const uint8_t *receipt,
		     const char *base, struct kh_dist_result *res, int *charge_maybe)
{
	struct kh_dist_result out;
	struct kh_dist_receipt given;
	struct delivery d;
	struct paths f;
	int resume = 0, wrote_pkg = 0, wrote_lic = 0, uncharged = 0;
	uint8_t *old = NULL;
	size_t oldn = 0;
	kh_err r;

	if (!c || !proc || !base || !*base || !res || !charge_maybe)
		return KH_ERR_INVAL;
	*charge_maybe = 0;
	c->api.msg[0] = 0;
	memset(&out, 0, sizeof out);
	memset(&d, 0, sizeof d);
	if (receipt && (r = kh_dist_receipt_parse(receipt, KH_DIST_RECEIPT_BYTES, NULL, &given)) != KH_OK) {
		kh__api_say(&c->api, "the receipt is not one: %s", kh_strerror(r));
		return KH_ERR_FORMAT;
	}
	if ((r = paths_make(base, &f)) != KH_OK)
		return r;
	if ((r = look(c, &f, receipt, &d, &resume)) != KH_OK)
		goto out;
	out.resumed = resume;
	if (resume) {
		/* the charge may have happened: from here on, BASE.part is what stays */
		*charge_maybe = 1;
		wrote_pkg = 1; /* a package a crash left is rewritten from the server's, checked */
		if ((r = get_package(c, &d, 1, f.pkg)) != KH_OK)
			goto out;
	} else {
		if ((r = start(c, proc, program, receipt, &d)) != KH_OK)
			goto out;
		if ((r = get_package(c, &d, 0, f.pkg)) != KH_OK)
			goto out;
		wrote_pkg = 1;
		if ((receipt && (d.program != given.program || d.version != given.version)) ||
		    (!receipt && d.program != program)) {
			r = KH_ERR_FORMAT;
			kh__api_say(&c->api, "package: the server sent another program than the one asked for");
			goto out;
		}
		if ((r = write_part(c, &d, f.part)) != KH_OK)
			goto out;
		*charge_maybe = 1;
	}
	if ((r = charge(c, proc, &d, &out, &uncharged)) != KH_OK) {
		/* refused before any debit: the state file has nothing to finish */
		if (uncharged && remove_durably(f.part, f.dir) == KH_OK)
			*charge_maybe = 0;
		goto out;
	}
	if (receipt && !resume && memcmp(out.receipt, receipt, sizeof out.receipt) != 0) {
		r = KH_ERR_FORMAT;
		kh__api_say(&c->api, "charge: the server answered another receipt than the one presented");
		goto out;
	}
	/* a receipt already there must be this one: another is never replaced */
	if ((r = read_small(f.rcpt, KH_DIST_RECEIPT_BYTES + 1, &old, &oldn)) == KH_OK) {
		int same = oldn == sizeof out.receipt && memcmp(old, out.receipt, oldn) == 0;
		kh_file_free(old, oldn);
		if (!same) {
			r = KH_ERR_EXISTS;
			kh__api_say(&c->api, "%s holds another receipt: it would be replaced; move it away", f.rcpt);
			goto out;
		}
	} else if (r != KH_ERR_NOTFOUND) {
		goto out;
	}
	if ((r = kh_file_write_atomic(f.lic, d.token, d.token_len, 0600)) != KH_OK) {
		kh__api_say(&c->api, "%s: %s", f.lic, kh_strerror(r));
		goto out;
	}
	wrote_lic = 1;
	if ((r = kh_file_write_atomic(f.rcpt, out.receipt, sizeof out.receipt, 0644)) != KH_OK) {
		kh__api_say(&c->api, "%s: %s", f.rcpt, kh_strerror(r));
		goto out;
	}
	/* everything the purchase gives is durable: the state file may go */
	if ((r = remove_durably(f.part, f.dir)) != KH_OK) {
		kh__api_say(&c->api, "%s: %s", f.part, kh_strerror(r));
		goto out;
	}
	*charge_maybe = 0;
	*res = out;
	r = KH_OK;
out:
	if (r != KH_OK) {
		/* nothing half done stays but the state file, and that only once a charge was asked */
		if (wrote_lic)
			(void)unlink(f.lic);
		if (wrote_pkg)
			(void)unlink(f.pkg);
		if (!c->api.msg[0])
			kh__api_say(&c->api, "%s", kh_strerror(r));
	}
	kh_wipe(&d, sizeof d);
	kh_wipe(&out, sizeof out);
	paths_free(&f);
	return r;
}
