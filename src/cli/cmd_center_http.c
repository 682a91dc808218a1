/*
 * keyhole center, the wire: one operator request to the management center over the service
 * layer's client (kh_http_client, src/net/http_client.c, which holds the transport rules: TLS
 * verified against --cacert or the system's store, no redirects, bounded times), the bearer
 * token in its header and nowhere else, the Idempotency-Key of a write and its one retry after
 * a lost answer, the API's error envelope turned into the command's one error line, and
 * the pages of a list followed to the end. See keyhole-center(1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "keyhole/crypto.h"
#include "keyhole/http.h"

/* The largest answer taken: a page of 1000 items with room to spare. */
#define CENTER_ANSWER_MAX (16u * 1024 * 1024)

int kh_cli_center_open(struct kh_cli_center *c, const char *url, const char *cacert, const char *token)
{
	size_t bl = strlen(url);
	kh_err r;

	memset(c, 0, sizeof *c);
	while (bl > 0 && url[bl - 1] == '/')
		bl--;
	if (!(c->base = strndup(url, bl)))
		return kh_cli_fail("center", KH_ERR_NOMEM);
	c->shown = url;
	if (token) {
		if (asprintf(&c->auth, "Authorization: Bearer %s", token) < 0) {
			c->auth = NULL;
			return kh_cli_fail("center", KH_ERR_NOMEM);
		}
		c->authlen = strlen(c->auth);
	}
	if ((r = kh_http_client_new(cacert, "keyhole-center/" KH_VERSION, CENTER_ANSWER_MAX, &c->client)) != KH_OK)
		return kh_cli_fail("libcurl", r);
	return KH_EXIT_OK;
}

void kh_cli_center_close(struct kh_cli_center *c)
{
	kh_http_client_free(c->client);
	if (c->auth) {
		kh_wipe(c->auth, c->authlen);
		free(c->auth);
	}
	free(c->base);
	memset(c, 0, sizeof *c);
}

int kh_cli_center_idem_new(char key[static KH_CLI_IDEM_MAX + 1])
{
	uint8_t b[16];

	if (kh_random(b, sizeof b) != KH_OK)
		return -1;
	for (size_t i = 0; i < sizeof b; i++)
		snprintf(key + 2 * i, 3, "%02x", b[i]);
	kh_wipe(b, sizeof b);
	return 0;
}

void kh_cli_answer_free(struct kh_cli_answer *a)
{
	json_decref(a->json);
	free(a->text);
	memset(a, 0, sizeof *a);
}

/* What the center said goes on one line: no control character reaches the terminal. */
static void one_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* "keyhole center: STATUS CODE: MESSAGE", from the API's error envelope when there is one. */
void kh_cli_center_report(const struct kh_cli_answer *a)
{
	const json_t *e = json_object_get(a->json, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	char buf[512];

	if (!code) /* readyz: {"status": "not_ready", "reason": "..."} */
		code = json_string_value(json_object_get(a->json, "status"));
	if (!msg)
		msg = json_string_value(json_object_get(a->json, "reason"));
	snprintf(buf, sizeof buf, "%ld %s: %s", a->status, code ? code : "error",
		 msg ? msg : "the center's answer carries no error message");
	one_line(buf);
	fprintf(stderr, "keyhole center: %s\n", buf);
}

int kh_cli_center_call(struct kh_cli_center *c, const char *method, const char *target, const json_t *body,
		       unsigned flags, struct kh_cli_answer *a)
{
	const char *hdrs[6];
	char *url = NULL, *text = NULL, *idem = NULL, err[256] = "";
	size_t n = 0;
	int is_write = strcmp(method, "GET") != 0, rc = KH_EXIT_FAIL;
	kh_err r = KH_ERR_NOMEM;

	memset(a, 0, sizeof *a);
	if (asprintf(&url, "%s%s", c->base, target) < 0) {
		url = NULL;
		goto out;
	}
	hdrs[n++] = "Accept: application/json";
	if (body) {
		hdrs[n++] = "Content-Type: application/json";
		if (!(text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER)))
			goto out;
	}
	if (c->auth && !(flags & KH_CLI_CALL_OPEN))
		hdrs[n++] = c->auth;
	if (is_write) {
		if (asprintf(&idem, "Idempotency-Key: %s", c->idem) < 0) {
			idem = NULL;
			goto out;
		}
		hdrs[n++] = idem;
	}
	hdrs[n] = NULL;
	/*
	 * A write that got no answer is sent once more with the same key, whether or not it went
	 * out: the center keeps the Idempotency-Key of every write (creations, card actions,
	 * subscriptions, reloads, bulk jobs, the credit policy, key rotations, the rights renewal,
	 * renames, closings and deletions) in the transaction that does it, so a write it did already
	 * answers its first answer again and is not done twice. A read is simply reported.
	 */
	for (int attempt = 0; attempt < 2; attempt++) {
		kh_cli_answer_free(a);
		r = kh_http_client_send(c->client, method, url, hdrs, text, &a->status, &a->json, &a->text, &a->len,
					err, sizeof err);
		if (r != KH_ERR_TRANSPORT || !is_write)
			break;
	}
	if (r == KH_ERR_TRANSPORT) {
		one_line(err);
		fprintf(stderr, "keyhole center: %s: no answer (%s)\n", c->shown, err[0] ? err : "transport failure");
		goto out;
	}
	if (r != KH_OK)
		goto out;
	if (!(flags & KH_CLI_CALL_ANY_STATUS) && (a->status < 200 || a->status > 299)) {
		kh_cli_center_report(a);
		r = KH_OK;
		goto out;
	}
	if (!a->json || !a->text) {
		fprintf(stderr, "keyhole center: %ld: the center's answer is not JSON\n", a->status);
		r = KH_OK;
		goto out;
	}
	rc = KH_EXIT_OK;
out:
	if (r != KH_OK && r != KH_ERR_TRANSPORT)
		kh_cli_fail("center", r);
	if (rc != KH_EXIT_OK)
		kh_cli_answer_free(a);
	free(idem);
	free(text);
	free(url);
	return rc;
}

int kh_cli_center_list(struct kh_cli_center *c, const char *target, const char *items, const char *cursor,
		       int all, struct kh_cli_answer *a)
{
	struct kh_cli_answer page;
	json_t *acc = NULL, *arr, *nc;
	char *t = NULL, *cur = NULL;
	int rc = KH_EXIT_FAIL;

	memset(a, 0, sizeof *a);
	if (cursor && !(cur = strdup(cursor)))
		return kh_cli_fail("center", KH_ERR_NOMEM);
	for (;;) {
		free(t);
		t = NULL;
		if (cur && !(t = kh_cli_url_add(target, "cursor", cur))) {
			kh_cli_fail("center", KH_ERR_NOMEM);
			break;
		}
		if (kh_cli_center_call(c, "GET", t ? t : target, NULL, 0, &page) != KH_EXIT_OK)
			break;
		arr = json_object_get(page.json, items);
		nc = json_object_get(page.json, "next_cursor");
		if (!json_is_array(arr) || (nc && !json_is_null(nc) && !json_is_string(nc))) {
			fprintf(stderr, "keyhole center: %ld: the center's answer is not a list of %s\n", page.status,
				items);
			kh_cli_answer_free(&page);
			break;
		}
		if (!all) { /* the page as answered */
			*a = page;
			rc = KH_EXIT_OK;
			break;
		}
		if (!acc) {
			acc = json_incref(page.json);
		} else if (json_array_extend(json_object_get(acc, items), arr) != 0) {
			kh_cli_answer_free(&page);
			kh_cli_fail("center", KH_ERR_NOMEM);
			break;
		}
		if (!json_is_string(nc)) {
			kh_cli_answer_free(&page);
			if (json_object_set_new(acc, "next_cursor", json_null()) != 0) {
				kh_cli_fail("center", KH_ERR_NOMEM);
				break;
			}
			a->status = 200;
			a->json = acc;
			acc = NULL;
			rc = KH_EXIT_OK;
			break;
		}
		if (cur && strcmp(cur, json_string_value(nc)) == 0) {
			/* a center that answers the cursor it was given would be followed forever */
			fprintf(stderr, "keyhole center: the center answered the cursor it was sent as the next one\n");
			kh_cli_answer_free(&page);
			break;
		}
		free(cur);
		cur = strdup(json_string_value(nc));
		kh_cli_answer_free(&page);
		if (!cur) {
			kh_cli_fail("center", KH_ERR_NOMEM);
			break;
		}
	}
	json_decref(acc);
	free(cur);
	free(t);
	return rc;
}

/* RFC 3986 unreserved characters go as they are; every other byte as %XX. */
static int put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '.' || ch == '_' || ch == '~') {
			if (fputc(ch, f) == EOF)
				return -1;
		} else if (fprintf(f, "%%%02X", ch) < 0) {
			return -1;
		}
	}
	return 0;
}

/* target?name=value (or &name=), or the value alone when target is NULL; value percent-encoded. */
static char *escaped(const char *target, const char *name, const char *value)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int bad = 0;

	if (!f)
		return NULL;
	if (target)
		bad = fputs(target, f) == EOF || fputc(strchr(target, '?') ? '&' : '?', f) == EOF ||
		      fputs(name, f) == EOF || fputc('=', f) == EOF;
	bad = bad || put_escaped(f, value) != 0;
	if (fclose(f) != 0 || bad) {
		free(out);
		return NULL;
	}
	return out;
}

char *kh_cli_url_add(const char *target, const char *name, const char *value)
{
	return escaped(target, name, value);
}

char *kh_cli_url_segment(const char *s)
{
	return escaped(NULL, NULL, s);
}
