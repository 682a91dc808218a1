/*
 * A key card's host, the client of the key center (include/keyhole/keycardclient.h; seed 004,
 * docs/protocols/keycenter.md): activation, a post sealed while it is uploaded, the mailbox
 * fetched to files, a delivery opened through the card. The message keys the card gives out
 * are held only while their message is sealed or opened, and wiped on every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/api_int.h"
#include "host/keycard_int.h"
#include "keyhole/crypto.h"
#include "keyhole/keycardclient.h"
#include "keyhole/keycardhost.h"

struct kh_keycard_client {
	struct kh__api api;
};

kh_err kh_keycard_client_new(const char *url, const char *cacert, struct kh_keycard_client **out)
{
	struct kh_keycard_client *c;
	kh_err r;

	if (!out)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh__api_init(&c->api, url, cacert, KH_KC_ANSWER_MAX)) != KH_OK) {
		free(c);
		return r;
	}
	*out = c;
	return KH_OK;
}

void kh_keycard_client_free(struct kh_keycard_client *c)
{
	if (!c)
		return;
	kh__api_free(&c->api);
	free(c);
}

const char *kh_keycard_client_error(const struct kh_keycard_client *c)
{
	return c ? c->api.msg : "";
}

static void pause_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

/* The card said no to a command: its words. */
static kh_err card_refused(struct kh_keycard_client *c, const char *cmd, kh_err r)
{
	kh__api_say(&c->api, "the key card refused %s: %s", cmd, kh_strerror(r));
	return r;
}

static kh_err not_the_api(struct kh_keycard_client *c, const char *what)
{
	kh__api_say(&c->api, "%s: the key center's answer is not the API's", what);
	return KH_ERR_FORMAT;
}

/* ---- activation ---- */

/* An access code: groups of letters and digits joined by '-', at most 64 characters. */
static int code_ok(const char *code)
{
	size_t n = strlen(code);

	if (n == 0 || n > 64 || code[0] == '-' || code[n - 1] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((code[i] >= 'A' && code[i] <= 'Z') || (code[i] >= 'a' && code[i] <= 'z') ||
		      (code[i] >= '0' && code[i] <= '9') || code[i] == '-'))
			return 0;
	return 1;
}

kh_err kh_keycard_activate(struct kh_keycard_client *c, uint64_t serial, const char *code,
			   struct kh_keycard_activated *out)
{
	char body[160];
	const char *addr, *state;
	json_t *ans = NULL;
	int64_t s;
	kh_err r;

	if (!c || !code || !out || serial == 0 || serial > INT64_MAX)
		return KH_ERR_INVAL;
	c->api.msg[0] = 0;
	if (!code_ok(code)) {
		kh__api_say(&c->api, "an access code is letters and digits in groups joined by '-'");
		return KH_ERR_INVAL;
	}
	/* the code is a secret: built here, where it can be wiped, not in jansson */
	snprintf(body, sizeof body, "{\"serial\":%" PRIu64 ",\"code\":\"%s\"}", serial, code);
	r = kh__api_call_json(&c->api, "activate", "POST", "/v1/activate", body, 200, &ans);
	kh_wipe(body, sizeof body);
	if (r != KH_OK)
		return r;
	addr = json_string_value(json_object_get(ans, "address"));
	state = json_string_value(json_object_get(ans, "state"));
	r = KH_OK;
	if (kh__api_get_int(ans, "serial", 1, INT64_MAX, &s) != 0 || (uint64_t)s != serial || !addr || !state ||
	    kh_kc_addr_check(addr, strlen(addr)) != KH_OK)
		r = not_the_api(c, "activate");
	else if (strcmp(state, "active") != 0) {
		kh__api_say(&c->api, "activate: the key center says the card is %.32s, not active", state);
		r = KH_ERR_NOT_ACTIVE;
	}
	if (r == KH_OK) {
		out->serial = serial;
		snprintf(out->address, sizeof out->address, "%s", addr);
	}
	json_decref(ans);
	return r;
}

/* ---- acks ---- */

/*
 * The center's latest ack for card serial (GET /v1/cards/S/ack) into ack; *has 0 when it has
 * none yet (null).
 */
static kh_err get_ack(struct kh_keycard_client *c, uint64_t serial, uint8_t ack[static KH_KC_ACK_LEN], int *has)
{
	char target[64];
	json_t *ans = NULL, *a;
	int64_t s;
	size_t n = 0;
	kh_err r = KH_OK;

	snprintf(target, sizeof target, "/v1/cards/%" PRIu64 "/ack", serial);
	if ((r = kh__api_call_json(&c->api, "ack", "GET", target, NULL, 200, &ans)) != KH_OK)
		return r;
	a = json_object_get(ans, "ack");
	*has = 0;
	if (kh__api_get_int(ans, "serial", 1, INT64_MAX, &s) != 0 || (uint64_t)s != serial || !a)
		r = not_the_api(c, "ack");
	else if (!json_is_null(a) && kh_json_get_b64(ans, "ack", ack, KH_KC_ACK_LEN, &n, 1) != KH_OK)
		r = not_the_api(c, "ack");
	else
		*has = !json_is_null(a);
	json_decref(ans);
	return r;
}

/* The center's latest ack for the card, given to it. */
static kh_err pass_ack(struct kh_keycard_client *c, struct kh_transport *card, uint64_t serial)
{
	uint8_t ack[KH_KC_ACK_LEN];
	int has = 0;
	kh_err r;

	if ((r = get_ack(c, serial, ack, &has)) != KH_OK)
		return r;
	if (!has) {
		kh__api_say(&c->api, "the key center has no ack for card %08" PRIX64 " to give it", serial);
		return KH_ERR_NOTFOUND;
	}
	if ((r = kh_keycard_ack(card, ack, sizeof ack)) != KH_OK)
		return card_refused(c, "the center's ack (KC ACK)", r);
	return KH_OK;
}

/* ---- a post ---- */

/* KC SEND; when the card waits for an ack, the center's is given to it and KC SEND asked once more. */
static kh_err next_key(struct kh_keycard_client *c, struct kh_transport *card, uint64_t *serial, uint64_t *index,
		       uint8_t key[static 32])
{
	struct kh_keycard_status st;
	kh_err r = kh_keycard_send(card, serial, index, key);

	if (r != KH_ERR_KEY_AHEAD)
		return r == KH_OK ? KH_OK : card_refused(c, "a message key (KC SEND)", r);
	if ((r = kh_keycard_status(card, &st)) != KH_OK)
		return card_refused(c, "its status (KC STATUS)", r);
	if ((r = pass_ack(c, card, st.serial)) != KH_OK)
		return r;
	if ((r = kh_keycard_send(card, serial, index, key)) != KH_OK)
		return card_refused(c, "a message key (KC SEND) after the center's ack", r);
	return KH_OK;
}

static kh_err sealer_read(void *ctx, uint8_t *buf, size_t cap, size_t *n)
{
	return kh_kc_sealer_read(ctx, buf, cap, n);
}

static void sealer_rewind(void *ctx)
{
	kh_kc_sealer_rewind(ctx);
}

/* One upload of the whole message (from its first byte): the status and the answer. */
static kh_err upload_once(struct kh_keycard_client *c, struct kh_kc_sealer *s, long *status, json_t **ans)
{
	const char *hdrs[] = {"Content-Type: application/octet-stream", "Accept: application/json", NULL};
	struct kh_http_stream st = {sealer_read, sealer_rewind, s, kh_kc_sealer_size(s), NULL, NULL};
	char *url = NULL, err[256] = "";
	kh_err r;

	if (asprintf(&url, "%s/v1/messages", c->api.base) < 0)
		return KH_ERR_NOMEM;
	kh_kc_sealer_rewind(s);
	r = kh_http_client_stream(c->api.http, "POST", url, hdrs, &st, status, ans, err, sizeof err);
	if (r == KH_ERR_TRANSPORT)
		kh__api_say(&c->api, "send: no answer from %s: %s", c->api.base, err);
	else if (r != KH_OK)
		kh__api_say(&c->api, "send: the document could not be read to the end (did it change?): %s",
			    kh_strerror(r));
	free(url);
	return r;
}

/* Upload, again with the same bytes after a transport failure or a 5xx answer. */
static kh_err upload(struct kh_keycard_client *c, struct kh_kc_sealer *s, long *status, json_t **ans)
{
	kh_err r;

	for (unsigned i = 0;; i++) {
		*ans = NULL;
		*status = 0;
		r = upload_once(c, s, status, ans);
		if ((r != KH_ERR_TRANSPORT && !(r == KH_OK && *status >= 500)) || i == KH_KC_SEND_RETRIES)
			return r;
		json_decref(*ans);
		*ans = NULL;
		pause_ms(KH_KC_SEND_BACKOFF_MS << i);
	}
}

/* The center's 200 to a post: the ack given to the card. */
static kh_err posted(struct kh_keycard_client *c, struct kh_transport *card, json_t *ans, const char *to,
		     struct kh_keycard_sent *out)
{
	uint8_t ack[KH_KC_ACK_LEN];
	const char *got_to = json_string_value(json_object_get(ans, "to"));
	const json_t *dup = json_object_get(ans, "duplicate");
	int64_t s, i;
	size_t n = 0;
	kh_err r;

	if (kh__api_get_int(ans, "serial", 1, INT64_MAX, &s) != 0 ||
	    kh__api_get_int(ans, "index", 1, INT64_MAX, &i) != 0 || (uint64_t)s != out->serial ||
	    (uint64_t)i != out->index || !got_to || strcmp(got_to, to) != 0 || !json_is_boolean(dup) ||
	    kh_json_get_b64(ans, "ack", ack, sizeof ack, &n, 1) != KH_OK)
		return not_the_api(c, "send");
	out->duplicate = json_is_true(dup);
	if ((r = kh_keycard_ack(card, ack, sizeof ack)) != KH_OK) {
		kh__api_say(&c->api, "message %" PRIu64 " reached the key center, but the key card refused its ack: %s",
			    out->index, kh_strerror(r));
		return r;
	}
	out->acked = 1;
	return KH_OK;
}

/* What the center's refusal of a post means for the card and the user. */
static kh_err refused_post(struct kh_keycard_client *c, struct kh_transport *card, long status, json_t *ans,
			   const char *to, struct kh_keycard_sent *out)
{
	kh_err r = kh__api_refused(&c->api, "send", status, ans);

	if (r == KH_ERR_RECIPIENT) {
		/* the center spent the index: its ack moves the card past it */
		out->spent = 1;
		out->acked = pass_ack(c, card, out->serial) == KH_OK;
		kh__api_say(&c->api,
			    "no active key card has the address %s: message %" PRIu64 " is spent all the same%s", to,
			    out->index, out->acked ? "" : " (and the card did not get the center's ack)");
	} else if (r == KH_ERR_LIMIT) {
		kh__api_say(&c->api, "the mailbox of %s is full: nothing was delivered; send again later", to);
	}
	return r;
}

/* The document in, open and regular: its descriptor and length. */
static kh_err open_doc(struct kh_keycard_client *c, const char *in, int *fd, uint64_t *len)
{
	struct stat st;

	if ((*fd = open(in, O_RDONLY | O_CLOEXEC)) < 0) {
		kh__api_say(&c->api, "%s: %s", in, strerror(errno));
		return KH_ERR_IO;
	}
	if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		kh__api_say(&c->api, "%s: not a regular file (the message's length is needed before it is sent)", in);
		close(*fd);
		*fd = -1;
		return KH_ERR_INVAL;
	}
	*len = (uint64_t)st.st_size;
	return KH_OK;
}

kh_err kh_keycard_post(struct kh_keycard_client *c, struct kh_transport *card, const char *to, const char *in,
		       struct kh_keycard_sent *out)
{
	struct kh_kc_sealer *s = NULL;
	struct kh_kc_header h = {KH_KC_POST, 0, 0};
	uint8_t key[32];
	json_t *ans = NULL;
	long status = 0;
	int fd = -1;
	kh_err r;

	if (!c || !card || !to || !in || !out)
		return KH_ERR_INVAL;
	memset(out, 0, sizeof *out);
	c->api.msg[0] = 0;
	if (kh_kc_addr_check(to, strlen(to)) != KH_OK) {
		kh__api_say(&c->api, "not an address: 1 to 64 of a-z 0-9 . _ + - with one @ inside");
		return KH_ERR_INVAL;
	}
	if ((r = open_doc(c, in, &fd, &out->length)) != KH_OK)
		return r;
	if ((r = next_key(c, card, &h.serial, &h.index, key)) != KH_OK)
		goto out;
	out->serial = h.serial;
	out->index = h.index;
	r = kh_kc_sealer_new(key, &h, to, fd, out->length, &s);
	kh_wipe(key, sizeof key);
	if (r != KH_OK)
		goto out;
	if ((r = upload(c, s, &status, &ans)) != KH_OK) {
		if (r == KH_ERR_TRANSPORT)
			kh__api_say(&c->api, "no answer from the key center after %u tries: message %" PRIu64
				    " may have reached it (sent again, it would be the same message)",
				    KH_KC_SEND_RETRIES + 1, out->index);
		goto out;
	}
	if (status == 200 && json_is_object(ans)) {
		out->spent = 1;
		r = posted(c, card, ans, to, out);
	} else if (status == 200) {
		r = not_the_api(c, "send");
	} else {
		r = refused_post(c, card, status, ans, to, out);
	}
out:
	kh_wipe(key, sizeof key);
	kh_kc_sealer_free(s);
	json_decref(ans);
	close(fd);
	return r;
}

/* ---- the mailbox ---- */

/* A JSON body {"serial": S} plus, with key, one base64url field (and a second). */
static char *serial_body(uint64_t serial, const char *k1, const uint8_t *v1, size_t n1, const char *k2,
			 const uint8_t *v2, size_t n2)
{
	json_t *o = json_object();
	char *s = NULL;

	if (o && json_object_set_new(o, "serial", json_integer((json_int_t)serial)) == 0 &&
	    (!k1 || kh_json_set_b64(o, k1, v1, n1) == KH_OK) && (!k2 || kh_json_set_b64(o, k2, v2, n2) == KH_OK))
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

/* What a session token may hold: it becomes a header line. */
#define TOKEN_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/="

/* The center's challenge for the card st describes. */
static kh_err challenge(struct kh_keycard_client *c, const struct kh_keycard_status *st,
			uint8_t nonce[static KH_KC_NONCE_LEN])
{
	json_t *ans = NULL;
	int64_t center;
	size_t n = 0;
	char *body;
	kh_err r;

	if (!(body = serial_body(st->serial, NULL, NULL, 0, NULL, NULL, 0)))
		return KH_ERR_NOMEM;
	r = kh__api_call_json(&c->api, "session", "POST", "/v1/sessions/challenge", body, 200, &ans);
	free(body);
	if (r != KH_OK)
		return r;
	if (kh__api_get_int(ans, "center", 1, UINT32_MAX, &center) != 0 ||
	    kh_json_get_b64(ans, "nonce", nonce, KH_KC_NONCE_LEN, &n, 1) != KH_OK) {
		r = not_the_api(c, "session");
	} else if ((uint32_t)center != st->center) {
		kh__api_say(&c->api, "the key card is enrolled with key center %08" PRIX32 ", this is %08" PRIX32,
			    st->center, (uint32_t)center);
		r = KH_ERR_NOT_ENROLLED;
	}
	json_decref(ans);
	return r;
}

/* The card's hello over nonce for a session: its token kept in c. */
static kh_err hello(struct kh_keycard_client *c, struct kh_transport *card, const struct kh_keycard_status *st,
		    const uint8_t nonce[static KH_KC_NONCE_LEN])
{
	uint8_t sig[KH_ED25519_SIG_LEN];
	json_t *ans = NULL;
	const char *tok;
	uint64_t s2 = 0;
	char *body;
	kh_err r;

	if ((r = kh_keycard_hello(card, nonce, &s2, sig)) != KH_OK)
		return card_refused(c, "to sign the center's challenge (KC HELLO)", r);
	if (s2 != st->serial)
		return not_the_api(c, "the key card's hello");
	if (!(body = serial_body(st->serial, "nonce", nonce, KH_KC_NONCE_LEN, "signature", sig, sizeof sig)))
		return KH_ERR_NOMEM;
	r = kh__api_call_json(&c->api, "session", "POST", "/v1/sessions", body, 200, &ans);
	free(body);
	if (r != KH_OK)
		return r;
	tok = json_string_value(json_object_get(ans, "token"));
	if (!tok || !*tok || strspn(tok, TOKEN_CHARS) != strlen(tok))
		r = not_the_api(c, "session");
	else
		r = kh__api_set_token(&c->api, tok);
	kh__api_drop_secret_json(ans, "token");
	return r;
}

/*
 * Challenge, KC HELLO, session. A center whose challenges are stamped to the second takes one
 * hello per card and second: a session opened just before (a fetch run again at once) makes
 * this one a replay, so it is asked once more a second later.
 */
static kh_err session(struct kh_keycard_client *c, struct kh_transport *card, uint64_t *serial)
{
	uint8_t nonce[KH_KC_NONCE_LEN];
	struct kh_keycard_status st;
	kh_err r;

	if ((r = kh_keycard_status(card, &st)) != KH_OK)
		return card_refused(c, "its status (KC STATUS)", r);
	*serial = st.serial;
	if (st.center == 0) {
		kh__api_say(&c->api, "the key card is not enrolled with a key center");
		return KH_ERR_NOT_ENROLLED;
	}
	for (int i = 0;; i++) {
		if ((r = challenge(c, &st, nonce)) != KH_OK)
			return r;
		if ((r = hello(c, card, &st, nonce)) != KH_ERR_REPLAY || i == 1)
			return r;
		pause_ms(KH_KC_SESSION_AGAIN_MS);
	}
}

static int by_index(const void *a, const void *b)
{
	uint64_t x = ((const struct kh_keycard_mail *)a)->index, y = ((const struct kh_keycard_mail *)b)->index;

	return (x > y) - (x < y);
}

/* The mailbox's list into *m (malloc'd, *n entries). */
static kh_err list_mail(struct kh_keycard_client *c, uint64_t serial, struct kh_keycard_mail **m, size_t *n)
{
	json_t *ans = NULL, *msgs, *e;
	int64_t s;
	size_t i;
	kh_err r;

	*m = NULL;
	*n = 0;
	if ((r = kh__api_call_json(&c->api, "mailbox", "GET", "/v1/mailbox", NULL, 200, &ans)) != KH_OK)
		return r;
	msgs = json_object_get(ans, "messages");
	if (kh__api_get_int(ans, "serial", 1, INT64_MAX, &s) != 0 || (uint64_t)s != serial || !json_is_array(msgs)) {
		json_decref(ans);
		return not_the_api(c, "mailbox");
	}
	if (json_array_size(msgs) && !(*m = calloc(json_array_size(msgs), sizeof **m))) {
		json_decref(ans);
		return KH_ERR_NOMEM;
	}
	json_array_foreach(msgs, i, e)
	{
		struct kh_keycard_mail *x = &(*m)[i];
		const char *from = json_string_value(json_object_get(e, "from"));
		int64_t idx, size, rec = 0;
		if (kh__api_get_int(e, "index", 1, INT64_MAX, &idx) != 0 ||
		    kh__api_get_int(e, "size", 1, INT64_MAX, &size) != 0 || !from ||
		    kh_kc_addr_check(from, strlen(from)) != KH_OK) {
			r = not_the_api(c, "mailbox");
			break;
		}
		x->index = (uint64_t)idx;
		x->size = (uint64_t)size;
		/* only shown: Unix seconds when the center gives them so, else 0 */
		(void)kh__api_get_int(e, "received", INT64_MIN, INT64_MAX, &rec);
		x->received = rec;
		snprintf(x->from, sizeof x->from, "%s", from);
		(*n)++;
	}
	json_decref(ans);
	/* in index order: opening one skips the unopened ones behind it for good */
	if (r == KH_OK && *n > 1)
		qsort(*m, *n, sizeof **m, by_index);
	if (r != KH_OK) {
		free(*m);
		*m = NULL;
		*n = 0;
	}
	return r;
}

struct sink_fd {
	int fd;
	uint64_t got, max;
};

static kh_err to_fd(void *ctx, const uint8_t *buf, size_t n)
{
	struct sink_fd *s = ctx;

	if (n > s->max - s->got)
		return KH_ERR_TOO_LARGE;
	s->got += n;
	return kh__kc_write_all(s->fd, buf, n);
}

/* GET /v1/mailbox/INDEX into fd: exactly m->size bytes, a delivery to card serial of that index. */
static kh_err download(struct kh_keycard_client *c, const struct kh_keycard_mail *m, uint64_t serial, int fd)
{
	const char *hdrs[] = {"Accept: application/octet-stream", c->api.auth, NULL};
	struct sink_fd sk = {fd, 0, m->size};
	struct kh_http_stream st = {NULL, NULL, NULL, 0, to_fd, &sk};
	uint8_t hdr[KH_KC_HEADER_LEN], c0[KH_KC_CHUNK0_MAX];
	struct kh_kc_header h;
	char *url = NULL, err[256] = "";
	json_t *ans = NULL;
	long status = 0;
	size_t c0len = 0;
	kh_err r;

	if (asprintf(&url, "%s/v1/mailbox/%" PRIu64, c->api.base, m->index) < 0)
		return KH_ERR_NOMEM;
	r = kh_http_client_stream(c->api.http, "GET", url, hdrs, &st, &status, &ans, err, sizeof err);
	free(url);
	if (r == KH_ERR_TRANSPORT)
		kh__api_say(&c->api, "message %" PRIu64 ": no answer from %s: %s", m->index, c->api.base, err);
	else if (r != KH_OK)
		kh__api_say(&c->api, "message %" PRIu64 ": %s", m->index,
			    r == KH_ERR_TOO_LARGE ? "larger than the mailbox said" : kh_strerror(r));
	else if (status != 200)
		r = kh__api_refused(&c->api, "message", status, ans);
	else if (sk.got != m->size || kh_kc_read_head(fd, hdr, &h, c0, &c0len) != KH_OK || h.dir != KH_KC_DELIVERY ||
		 h.serial != serial || h.index != m->index) {
		kh__api_say(&c->api, "message %" PRIu64 ": the key center sent something else than that delivery",
			    m->index);
		r = KH_ERR_FORMAT;
	}
	json_decref(ans);
	return r;
}

/* 1 when the files a and b hold the same bytes. */
static int same_bytes(int a, int b)
{
	uint8_t x[8192], y[8192];
	uint64_t off = 0;
	size_t nx, ny;

	for (;;) {
		if (kh__kc_read_at(a, off, x, sizeof x, &nx) != KH_OK ||
		    kh__kc_read_at(b, off, y, sizeof y, &ny) != KH_OK || nx != ny || memcmp(x, y, nx) != 0)
			return 0;
		if (nx == 0)
			return 1;
		off += nx;
	}
}

/* The temporary file tmp (its fd) made final at path, or found there already (*resumed). */
static kh_err settle(struct kh_keycard_client *c, const char *tmp, int fd, const char *path, int *resumed)
{
	int old;

	if (link(tmp, path) == 0)
		return kh__kc_fsync_dir_of(path);
	if (errno != EEXIST || (old = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		kh__api_say(&c->api, "%s: %s", path, strerror(errno));
		return KH_ERR_IO;
	}
	*resumed = same_bytes(fd, old);
	close(old);
	if (!*resumed) {
		kh__api_say(&c->api, "%s holds other bytes than the key center's delivery: move it away", path);
		return KH_ERR_EXISTS;
	}
	return KH_OK;
}

/* One message to DIR/INDEX.khm, durably. */
static kh_err save(struct kh_keycard_client *c, struct kh_keycard_mail *m, uint64_t serial, const char *dir)
{
	char *path = NULL, *tmp = NULL;
	int fd;
	kh_err r;

	if (asprintf(&path, "%s/%" PRIu64 ".khm", dir, m->index) < 0)
		return KH_ERR_NOMEM;
	if ((fd = kh__kc_temp_beside(path, &tmp)) < 0) {
		kh__api_say(&c->api, "%s: no temporary file beside it: %s", path, strerror(errno));
		free(path);
		return KH_ERR_IO;
	}
	if ((r = download(c, m, serial, fd)) == KH_OK && fsync(fd) != 0) {
		kh__api_say(&c->api, "%s: %s", tmp, strerror(errno));
		r = KH_ERR_IO;
	}
	if (r == KH_OK)
		r = settle(c, tmp, fd, path, &m->resumed);
	close(fd);
	unlink(tmp);
	free(tmp);
	free(path);
	return r;
}

static kh_err delete_mail(struct kh_keycard_client *c, uint64_t index)
{
	char target[64];
	json_t *ans = NULL;
	long status = 0;
	kh_err r;

	snprintf(target, sizeof target, "/v1/mailbox/%" PRIu64, index);
	if ((r = kh__api_call(&c->api, "delete", "DELETE", target, NULL, &status, &ans, NULL, NULL)) != KH_OK)
		return r;
	if (status < 200 || status > 299)
		r = kh__api_refused(&c->api, "delete", status, ans);
	json_decref(ans);
	return r;
}

kh_err kh_keycard_fetch(struct kh_keycard_client *c, struct kh_transport *card, const char *dir,
			kh_err (*fn)(void *arg, const struct kh_keycard_mail *m), void *arg)
{
	struct kh_keycard_mail *m = NULL;
	struct stat st;
	uint64_t serial = 0;
	size_t n = 0;
	kh_err r;

	if (!c || !card || !dir)
		return KH_ERR_INVAL;
	c->api.msg[0] = 0;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		kh__api_say(&c->api, "%s: not a directory", dir);
		return KH_ERR_IO;
	}
	if ((r = session(c, card, &serial)) != KH_OK || (r = list_mail(c, serial, &m, &n)) != KH_OK)
		return r;
	for (size_t i = 0; i < n && r == KH_OK; i++) {
		if ((r = save(c, &m[i], serial, dir)) != KH_OK)
			break;
		/* durable here: only now may the center forget it */
		if ((r = delete_mail(c, m[i].index)) == KH_OK && fn)
			r = fn(arg, &m[i]);
	}
	free(m);
	return r;
}

/* ---- open ---- */

kh_err kh_keycard_open_file(struct kh_transport *card, const char *in, const char *out, uint64_t *index,
			    struct kh_kc_envelope *e, char *msg, size_t msgcap)
{
	uint8_t hdr[KH_KC_HEADER_LEN], c0[KH_KC_CHUNK0_MAX], key[32];
	struct kh_keycard_status st;
	struct kh_kc_header h, h2;
	uint64_t idx = 0, written = 0;
	size_t c0len = 0;
	int fd;
	kh_err r;

	if (!card || !in || !out || !index || !e || !msg || !msgcap)
		return KH_ERR_INVAL;
	msg[0] = 0;
	if ((fd = open(in, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(msg, msgcap, "%s: %s", in, strerror(errno));
		return KH_ERR_IO;
	}
	if ((r = kh_kc_read_head(fd, hdr, &h, c0, &c0len)) != KH_OK) {
		snprintf(msg, msgcap, "%s: not a key center message: %s", in, kh_strerror(r));
	} else if (h.dir != KH_KC_DELIVERY) {
		snprintf(msg, msgcap, "%s is a card's post to the center, not a delivery", in);
		r = KH_ERR_FORMAT;
	} else if ((r = kh_keycard_status(card, &st)) != KH_OK) {
		snprintf(msg, msgcap, "the key card refused its status (KC STATUS): %s", kh_strerror(r));
	} else if (st.serial != h.serial) {
		snprintf(msg, msgcap, "%s is for key card %08" PRIX64 ", not this one (%08" PRIX64 ")", in, h.serial,
			 st.serial);
		r = KH_ERR_INVAL;
	} else if ((r = kh_keycard_open(card, hdr, c0, c0len, &idx, key)) != KH_OK) {
		snprintf(msg, msgcap, "the key card refused to open message %" PRIu64 " (KC OPEN): %s", h.index,
			 kh_strerror(r));
	} else if (idx != h.index) {
		snprintf(msg, msgcap, "the key card gave the key of message %" PRIu64 " for %" PRIu64, idx, h.index);
		r = KH_ERR_FORMAT;
	} else if ((r = kh_kc_open_to(key, fd, out, &h2, e, &written, msg, msgcap)) == KH_OK) {
		*index = idx;
	}
	kh_wipe(key, sizeof key);
	close(fd);
	return r;
}
