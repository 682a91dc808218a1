/*
 * The key card host's client (src/host/keycard_client.c) against two real key cards (the applet,
 * in-process) and a key center played by this test on libmicrohttpd: the API of the brief, with
 * the center's rules on indexes (a post relayed once, the same bytes answered as a duplicate,
 * anything else under a spent index a replay, an unknown recipient spending the index) and
 * faults on demand (answers lost after the relay, lost before it, server errors, a delete that
 * fails). What is checked: the card and the center stay in step, a retried post is the same
 * bytes and is relayed once, the mailbox lands whole in files and is deleted only then, and a
 * delivery opens only on its card and only whole.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/hpke.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardclient.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keyseq.h"
#include "testutil.h"
#include "world.h"

#define W KH_KEYSEQ_WINDOW
#define CODE "ABCD-EFGH-JKMN-PQRS"
#define MAIL_MAX 8

struct fmail {
	uint64_t index;
	char from[KH_KC_ADDR_MAX + 1];
	uint8_t *msg;
	size_t len;
};

/* The center's record of one card. */
struct fcard {
	struct mod m;
	uint64_t serial;
	char addr[KH_KC_ADDR_MAX + 1];
	int active;
	uint8_t pk[32];
	struct kh_keyseq send, recv;
	uint64_t last; /* the last post relayed */
	uint8_t last_hash[32];
	char last_to[KH_KC_ADDR_MAX + 1];
	uint8_t ack[KH_KC_ACK_LEN];
	int has_ack;
	uint8_t nonce[32];
	char token[65];
	struct fmail mail[MAIL_MAX];
	size_t nmail;
};

struct fc {
	struct world *w;
	struct kh_identity center;
	struct fcard card[2]; /* alice, bob */
	struct MHD_Daemon *d;
	char url[64];
	pthread_mutex_t mu;
	/* faults, each spent as it happens */
	unsigned drop_before, drop_after, fail500, fail_delete, replay_hello;
	/* what the center saw */
	unsigned posts, relayed, challenges;
	uint8_t post_hash[16][32];
};

struct body {
	uint8_t *p;
	size_t len;
};

/* ---- the center's answers ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const void *b, size_t n, const char *type)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)b, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result q;

	MHD_add_response_header(r, "Content-Type", type);
	q = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return q;
}

static enum MHD_Result reply_json(struct MHD_Connection *conn, unsigned status, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	enum MHD_Result q = reply(conn, status, s, strlen(s), "application/json");

	free(s);
	json_decref(o);
	return q;
}

static enum MHD_Result reply_err(struct MHD_Connection *conn, kh_err e)
{
	return reply_json(conn, (unsigned)kh_err_http(e),
			  json_pack("{s:{s:s,s:s}}", "error", "code", kh_err_json(e), "message", kh_strerror(e)));
}

static json_t *b64(const uint8_t *p, size_t n)
{
	char s[512];

	assert_int_equal(kh_b64url_encode(p, n, s, sizeof s), KH_OK);
	return json_string(s);
}

static struct fcard *by_serial(struct fc *x, uint64_t serial)
{
	for (int i = 0; i < 2; i++)
		if (x->card[i].serial == serial)
			return &x->card[i];
	return NULL;
}

static struct fcard *by_addr(struct fc *x, const char *addr)
{
	for (int i = 0; i < 2; i++)
		if (strcmp(x->card[i].addr, addr) == 0 && x->card[i].active)
			return &x->card[i];
	return NULL;
}

static struct fcard *by_token(struct fc *x, struct MHD_Connection *conn)
{
	const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");

	for (int i = 0; a && i < 2; i++)
		if (x->card[i].token[0] && strncmp(a, "Bearer ", 7) == 0 && strcmp(a + 7, x->card[i].token) == 0)
			return &x->card[i];
	return NULL;
}

static enum MHD_Result activate(struct fc *x, struct MHD_Connection *conn, json_t *in)
{
	struct fcard *c = by_serial(x, (uint64_t)json_integer_value(json_object_get(in, "serial")));
	const char *code = json_string_value(json_object_get(in, "code"));

	if (!c || !code || strcmp(code, CODE) != 0)
		return reply_err(conn, KH_ERR_ACCESS_CODE);
	c->active = 1;
	return reply_json(conn, 200, json_pack("{s:I,s:s,s:s}", "serial", (json_int_t)c->serial, "address", c->addr,
					       "state", "active"));
}

static void sign_ack(struct fc *x, struct fcard *s)
{
	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, s->serial, s->last, s->ack), KH_OK);
	s->has_ack = 1;
}

static json_t *ack_answer(struct fcard *s, const char *to, int dup)
{
	return json_pack("{s:I,s:I,s:s,s:o,s:b}", "serial", (json_int_t)s->serial, "index", (json_int_t)s->last, "to",
			 to, "ack", b64(s->ack, sizeof s->ack), "duplicate", dup);
}

/* The 200 to a post relayed (now or before), unless a fault loses it. */
static enum MHD_Result relayed(struct fc *x, struct MHD_Connection *conn, json_t *ans)
{
	if (x->drop_after && x->drop_after--) {
		json_decref(ans);
		return MHD_NO;
	}
	return reply_json(conn, 200, ans);
}

/* The document of a post, sealed again for the recipient r. */
static void deliver(struct fcard *s, struct fcard *r, const uint8_t *doc, size_t len)
{
	struct kh_kc_header h = {KH_KC_DELIVERY, r->serial, r->recv.pos};
	struct fmail *m = &r->mail[r->nmail++];
	uint8_t key[32];
	size_t cap = (size_t)kh_kc_msg_size(strlen(s->addr), len);

	assert_true(r->nmail <= MAIL_MAX);
	assert_int_equal(kh_keyseq_key(&r->recv, h.index, W, key), KH_OK);
	m->index = h.index;
	memcpy(m->from, s->addr, sizeof m->from);
	m->msg = malloc(cap);
	assert_int_equal(kh_kc_msg_seal(key, &h, s->addr, doc, len, m->msg, cap, &m->len), KH_OK);
	assert_int_equal(kh_keyseq_advance(&r->recv, h.index + 1, W), KH_OK);
}

/* A post: its rules as in docs/protocols/keycenter.md "Sending". */
static enum MHD_Result post(struct fc *x, struct MHD_Connection *conn, const struct body *b)
{
	struct kh_kc_header h;
	struct kh_kc_envelope e;
	struct fcard *s, *r;
	uint8_t key[32], hash[32], *doc;
	size_t dl = 0;
	kh_err err;

	assert_int_equal(kh_sha256(b->p, b->len, hash), KH_OK);
	if (x->posts < 16)
		memcpy(x->post_hash[x->posts], hash, 32);
	x->posts++;
	if (x->drop_before && x->drop_before--)
		return MHD_NO;
	if (x->fail500 && x->fail500--)
		return reply_err(conn, KH_ERR_INTERNAL);
	if ((err = kh_kc_header_parse(b->p, b->len, &h)) != KH_OK || h.dir != KH_KC_POST)
		return reply_err(conn, KH_ERR_FORMAT);
	if (!(s = by_serial(x, h.serial)))
		return reply_err(conn, KH_ERR_NOTFOUND);
	if (!s->active)
		return reply_err(conn, KH_ERR_NOT_ACTIVE);
	if (h.index <= s->last) {
		if (h.index == s->last && memcmp(hash, s->last_hash, 32) == 0)
			return relayed(x, conn, ack_answer(s, s->last_to, 1));
		return reply_err(conn, KH_ERR_REPLAY);
	}
	if ((err = kh_keyseq_key(&s->send, h.index, W, key)) != KH_OK)
		return reply_err(conn, err);
	doc = malloc(b->len + 1);
	if ((err = kh_kc_msg_open(key, b->p, b->len, &h, &e, doc, b->len, &dl)) != KH_OK) {
		free(doc);
		return reply_err(conn, err);
	}
	assert_int_equal(kh_keyseq_advance(&s->send, h.index + 1, W), KH_OK);
	s->last = h.index;
	memcpy(s->last_hash, hash, 32);
	memcpy(s->last_to, e.addr, sizeof s->last_to);
	sign_ack(x, s);
	if ((r = by_addr(x, e.addr)))
		deliver(s, r, doc, dl);
	free(doc);
	if (!r)
		return reply_err(conn, KH_ERR_RECIPIENT);
	x->relayed++;
	return relayed(x, conn, ack_answer(s, e.addr, 0));
}

static enum MHD_Result get_ack(struct fc *x, struct MHD_Connection *conn, uint64_t serial)
{
	struct fcard *c = by_serial(x, serial);

	if (!c)
		return reply_err(conn, KH_ERR_NOTFOUND);
	return reply_json(conn, 200, json_pack("{s:I,s:I,s:o}", "serial", (json_int_t)c->serial, "index",
					       (json_int_t)c->last,
					       "ack", c->has_ack ? b64(c->ack, sizeof c->ack) : json_null()));
}

static enum MHD_Result challenge(struct fc *x, struct MHD_Connection *conn, json_t *in)
{
	struct fcard *c = by_serial(x, (uint64_t)json_integer_value(json_object_get(in, "serial")));

	if (!c)
		return reply_err(conn, KH_ERR_NOTFOUND);
	x->challenges++;
	assert_int_equal(kh_random(c->nonce, sizeof c->nonce), KH_OK);
	return reply_json(conn, 200, json_pack("{s:I,s:o}", "center", (json_int_t)x->center.serial, "nonce",
					       b64(c->nonce, sizeof c->nonce)));
}

static enum MHD_Result session(struct fc *x, struct MHD_Connection *conn, json_t *in)
{
	struct fcard *c = by_serial(x, (uint64_t)json_integer_value(json_object_get(in, "serial")));
	uint8_t nonce[32], sig[64], m[KH_KC_HELLO_MSG_LEN], t[16];
	size_t n1 = 0, n2 = 0;

	if (!c || kh_json_get_b64(in, "nonce", nonce, sizeof nonce, &n1, 1) != KH_OK ||
	    kh_json_get_b64(in, "signature", sig, sizeof sig, &n2, 1) != KH_OK || memcmp(nonce, c->nonce, 32) != 0)
		return reply_err(conn, KH_ERR_UNAUTHORISED);
	kh_kc_hello_msg(x->center.serial, c->serial, nonce, m);
	if (kh_ed25519_verify(c->pk, m, sizeof m, sig) != KH_OK)
		return reply_err(conn, KH_ERR_UNAUTHORISED);
	if (x->replay_hello && x->replay_hello--)
		return reply_err(conn, KH_ERR_REPLAY); /* a center taking one hello a second */
	assert_int_equal(kh_random(t, sizeof t), KH_OK);
	kh_hex_encode(t, sizeof t, c->token);
	return reply_json(conn, 200, json_pack("{s:s,s:I}", "token", c->token, "expires", (json_int_t)4102444800));
}

static enum MHD_Result mailbox(struct fc *x, struct MHD_Connection *conn)
{
	struct fcard *c = by_token(x, conn);
	json_t *list;

	if (!c)
		return reply_err(conn, KH_ERR_UNAUTHORISED);
	list = json_array();
	for (size_t i = c->nmail; i-- > 0;) /* newest first: the client puts them in order */
		json_array_append_new(list, json_pack("{s:I,s:s,s:I,s:I}", "index", (json_int_t)c->mail[i].index,
						      "from", c->mail[i].from, "size", (json_int_t)c->mail[i].len,
						      "received", (json_int_t)1800000000));
	return reply_json(conn, 200, json_pack("{s:I,s:o}", "serial", (json_int_t)c->serial, "messages", list));
}

static enum MHD_Result one_mail(struct fc *x, struct MHD_Connection *conn, const char *method, uint64_t index)
{
	struct fcard *c = by_token(x, conn);

	if (!c)
		return reply_err(conn, KH_ERR_UNAUTHORISED);
	for (size_t i = 0; i < c->nmail; i++) {
		struct fmail *m = &c->mail[i];
		if (m->index != index)
			continue;
		if (strcmp(method, "GET") == 0)
			return reply(conn, 200, m->msg, m->len, "application/octet-stream");
		if (x->fail_delete && x->fail_delete--)
			return reply_err(conn, KH_ERR_INTERNAL);
		free(m->msg);
		memmove(m, m + 1, (c->nmail - i - 1) * sizeof *m);
		c->nmail--;
		return reply_json(conn, 200, json_pack("{s:I}", "index", (json_int_t)index));
	}
	return reply_err(conn, KH_ERR_NOTFOUND);
}

static enum MHD_Result route(struct fc *x, struct MHD_Connection *conn, const char *url, const char *method,
			     const struct body *b)
{
	json_t *in = b->len && b->p[0] == '{' ? json_loadb((const char *)b->p, b->len, 0, NULL) : NULL;
	unsigned long long n = 0;
	enum MHD_Result q;
	char tail[8] = "";

	if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/activate") == 0)
		q = activate(x, conn, in);
	else if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/messages") == 0)
		q = post(x, conn, b);
	else if (strcmp(method, "GET") == 0 && sscanf(url, "/v1/cards/%llu/%3s", &n, tail) == 2 &&
		 strcmp(tail, "ack") == 0)
		q = get_ack(x, conn, n);
	else if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/sessions/challenge") == 0)
		q = challenge(x, conn, in);
	else if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/sessions") == 0)
		q = session(x, conn, in);
	else if (strcmp(method, "GET") == 0 && strcmp(url, "/v1/mailbox") == 0)
		q = mailbox(x, conn);
	else if (sscanf(url, "/v1/mailbox/%llu", &n) == 1)
		q = one_mail(x, conn, method, n);
	else
		q = reply_err(conn, KH_ERR_NOTFOUND);
	json_decref(in);
	return q;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *data, size_t *size, void **ctx)
{
	struct fc *x = cls;
	struct body *b = *ctx;
	enum MHD_Result q;

	(void)version;
	if (!b) {
		*ctx = calloc(1, sizeof *b);
		return MHD_YES;
	}
	if (*size) {
		b->p = realloc(b->p, b->len + *size + 1);
		memcpy(b->p + b->len, data, *size);
		b->len += *size;
		*size = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&x->mu);
	q = route(x, conn, url, method, b);
	pthread_mutex_unlock(&x->mu);
	return q;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **ctx, enum MHD_RequestTerminationCode t)
{
	struct body *b = *ctx;

	(void)cls, (void)conn, (void)t;
	if (b) {
		free(b->p);
		free(b);
	}
	*ctx = NULL;
}

/* ---- the world: a center, two enrolled cards ---- */

static void enrol(struct fc *x, struct fcard *c, const char *addr)
{
	uint8_t sealed[KH_KC_SEALED_SEED_LEN], seed[32], info[KH_KC_ENROL_INFO_LEN], xsk[32], xpk[32];
	uint8_t ek[KH_KC_ENROLKEY_LEN], der[KH_CERT_MAX];
	struct kh_cert_info ci;
	uint16_t sw = 0;
	size_t n = 0;

	make_mod(x->w->auth, KH_ROLE_KEYCARD, &c->m);
	assert_int_equal(kh_kc_enrol_keypair(x->center.sk, xsk, xpk), KH_OK);
	assert_int_equal(kh_kc_enrolkey_sign(x->center.sk, x->center.serial, xpk, ek), KH_OK);
	assert_int_equal(kh_keycard_enrol(&c->m.t, x->center.cert, x->center.cert_len, ek, &c->serial, sealed), KH_OK);
	kh_kc_enrol_info(x->center.serial, c->serial, info);
	assert_int_equal(kh_hpke_open_base(xsk, sealed, info, sizeof info, NULL, 0, sealed + 32,
					   KH_KEYSEQ_LEN + KH_TAG_LEN, seed),
			 KH_OK);
	assert_int_equal(kh_keyseq_init(seed, c->serial, KH_KEYSEQ_SEND, &c->send), KH_OK);
	assert_int_equal(kh_keyseq_init(seed, c->serial, KH_KEYSEQ_RECV, &c->recv), KH_OK);
	kh_wipe(seed, sizeof seed);
	kh_wipe(xsk, sizeof xsk);
	assert_int_equal(kh_host_apdu(&c->m.t, KH_INS_GET_CERT, 1, NULL, 0, der, sizeof der, &n, &sw), KH_OK);
	assert_int_equal(kh_cert_read(der, n, &ci), KH_OK);
	memcpy(c->pk, ci.pub, 32);
	snprintf(c->addr, sizeof c->addr, "%s", addr);
}

static int setup(void **state)
{
	struct fc *x = calloc(1, sizeof *x);
	const union MHD_DaemonInfo *di;
	char *dir;
	uint32_t serial;

	assert_non_null(x);
	world_setup((void **)&x->w);
	dir = path_in(x->w->dir, "kc");
	assert_int_equal(kh_identity_new(x->w->auth, dir, KH_ROLE_KEYCENTER, &serial), KH_OK);
	assert_int_equal(kh_identity_load(dir, KH_ROLE_KEYCENTER, &x->center), KH_OK);
	free(dir);
	enrol(x, &x->card[0], "alice@kc");
	enrol(x, &x->card[1], "bob@kc");
	pthread_mutex_init(&x->mu, NULL);
	x->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, x,
				MHD_OPTION_NOTIFY_COMPLETED, on_done, x, MHD_OPTION_END);
	assert_non_null(x->d);
	di = MHD_get_daemon_info(x->d, MHD_DAEMON_INFO_BIND_PORT);
	assert_non_null(di);
	snprintf(x->url, sizeof x->url, "http://127.0.0.1:%u", (unsigned)di->port);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fc *x = *state;

	MHD_stop_daemon(x->d);
	for (int i = 0; i < 2; i++) {
		for (size_t k = 0; k < x->card[i].nmail; k++)
			free(x->card[i].mail[k].msg);
		kh_softmod_free(x->card[i].m.sm);
	}
	pthread_mutex_destroy(&x->mu);
	kh_wipe(&x->center, sizeof x->center);
	world_teardown((void **)&x->w);
	free(x);
	return 0;
}

/* ---- helpers ---- */

static struct kh_keycard_client *client(struct fc *x)
{
	struct kh_keycard_client *c = NULL;

	assert_int_equal(kh_keycard_client_new(x->url, NULL, &c), KH_OK);
	return c;
}

static struct kh_keycard_status status_of(struct fcard *c)
{
	struct kh_keycard_status st;

	assert_int_equal(kh_keycard_status(&c->m.t, &st), KH_OK);
	return st;
}

/* A random document of len bytes in DIR/name; its bytes (malloc'd). */
static uint8_t *doc_file(struct fc *x, const char *name, size_t len)
{
	char *p = path_in(x->w->dir, name);
	uint8_t *d = malloc(len + 1);
	FILE *f = fopen(p, "wb");

	assert_non_null(f);
	assert_int_equal(kh_random(d, len), KH_OK);
	assert_int_equal(fwrite(d, 1, len, f), len);
	fclose(f);
	free(p);
	return d;
}

static void activate_both(struct fc *x)
{
	struct kh_keycard_client *c = client(x);
	struct kh_keycard_activated a;

	for (int i = 0; i < 2; i++) {
		assert_int_equal(kh_keycard_activate(c, x->card[i].serial, CODE, &a), KH_OK);
		assert_string_equal(a.address, x->card[i].addr);
	}
	kh_keycard_client_free(c);
}

static kh_err send_doc(struct fc *x, struct fcard *from, const char *to, const char *name,
		       struct kh_keycard_sent *s)
{
	struct kh_keycard_client *c = client(x);
	char *p = path_in(x->w->dir, name);
	kh_err r = kh_keycard_post(c, &from->m.t, to, p, s);

	if (r != KH_OK)
		assert_true(kh_keycard_client_error(c)[0] != '\0');
	kh_keycard_client_free(c);
	free(p);
	return r;
}

static kh_err count_mail(void *arg, const struct kh_keycard_mail *m)
{
	(*(unsigned *)arg)++;
	(void)m;
	return KH_OK;
}

static kh_err fetch(struct fc *x, struct fcard *to, const char *dir, unsigned *n)
{
	struct kh_keycard_client *c = client(x);
	kh_err r;

	*n = 0;
	r = kh_keycard_fetch(c, &to->m.t, dir, count_mail, n);
	kh_keycard_client_free(c);
	return r;
}

/* ---- tests ---- */

static void test_activate(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_client *c = client(x);
	struct kh_keycard_activated a;

	assert_int_equal(kh_keycard_activate(c, x->card[0].serial, "ABCD-EFGH-JKMN-PQRT", &a), KH_ERR_ACCESS_CODE);
	assert_non_null(strstr(kh_keycard_client_error(c), "access_code"));
	assert_int_equal(x->card[0].active, 0);
	assert_int_equal(kh_keycard_activate(c, x->card[0].serial, "ABCD EFGH", &a), KH_ERR_INVAL);
	assert_int_equal(kh_keycard_activate(c, x->card[0].serial, CODE, &a), KH_OK);
	assert_int_equal(a.serial, x->card[0].serial);
	assert_string_equal(a.address, "alice@kc");
	kh_keycard_client_free(c);
	/* a URL the client refuses */
	assert_int_equal(kh_keycard_client_new("http://example.org", NULL, &c), KH_ERR_INVAL);
}

/* A post to an address no active card has spends the index, and the card takes the ack. */
static void test_unknown_recipient(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	uint8_t *d;

	activate_both(x);
	d = doc_file(x, "d", 1000);
	assert_int_equal(send_doc(x, &x->card[0], "carol@kc", "d", &s), KH_ERR_RECIPIENT);
	assert_int_equal(s.index, 1);
	assert_true(s.spent && s.acked);
	assert_int_equal(x->card[0].last, 1);
	assert_int_equal(status_of(&x->card[0]).acked, 1);
	assert_int_equal(status_of(&x->card[0]).send, 2);
	free(d);
}

/* Send, fetch, open; open again; a second message; the older one no longer opens. */
static void test_send_fetch_open(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	struct kh_kc_envelope e;
	char *dir = path_in(x->w->dir, "inbox"), *in1, *in2, *out, msg[512];
	uint8_t *d1, *d2, *got;
	uint64_t idx = 0;
	size_t n = 0;
	unsigned k = 0;

	activate_both(x);
	d1 = doc_file(x, "d1", 200000);
	d2 = doc_file(x, "d2", 0);
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d1", &s), KH_OK);
	assert_true(s.index == 1 && s.length == 200000 && !s.duplicate && s.acked);
	assert_int_equal(status_of(&x->card[0]).acked, 1);
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d2", &s), KH_OK);
	assert_int_equal(s.index, 2);
	assert_int_equal(x->card[1].nmail, 2);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(fetch(x, &x->card[1], dir, &k), KH_OK);
	assert_int_equal(k, 2);
	assert_int_equal(x->card[1].nmail, 0); /* deleted once stored */
	in1 = path_in(dir, "1.khm");
	in2 = path_in(dir, "2.khm");
	out = path_in(dir, "doc");
	/* the sender's card cannot open it */
	assert_int_not_equal(kh_keycard_open_file(&x->card[0].m.t, in1, out, &idx, &e, msg, sizeof msg), KH_OK);
	assert_non_null(strstr(msg, "not this one"));
	assert_int_equal(access(out, F_OK), -1);
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, in1, out, &idx, &e, msg, sizeof msg), KH_OK);
	assert_int_equal(idx, 1);
	assert_string_equal(e.addr, "alice@kc");
	got = kh_test_slurp(out, &n);
	assert_int_equal(n, 200000);
	assert_memory_equal(got, d1, n);
	free(got);
	/* the same again: the card gives the last key again for the very same bytes */
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, in1, out, &idx, &e, msg, sizeof msg), KH_OK);
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, in2, out, &idx, &e, msg, sizeof msg), KH_OK);
	assert_true(idx == 2 && e.length == 0);
	got = kh_test_slurp(out, &n);
	assert_int_equal(n, 0);
	free(got);
	/* behind the chain now */
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, in1, out, &idx, &e, msg, sizeof msg), KH_ERR_KEY_BEHIND);
	free(in1);
	free(in2);
	free(out);
	free(dir);
	free(d1);
	free(d2);
}

/* Answers lost after the relay: the same bytes again, the center answers duplicate, one delivery. */
static void test_retry_same_bytes(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	uint8_t *d;

	activate_both(x);
	d = doc_file(x, "d", 70000);
	x->drop_after = 2;
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_true(s.duplicate && s.acked && s.index == 1);
	assert_int_equal(x->posts, 3);
	assert_int_equal(x->relayed, 1);
	assert_int_equal(x->card[1].nmail, 1);
	assert_memory_equal(x->post_hash[0], x->post_hash[1], 32);
	assert_memory_equal(x->post_hash[0], x->post_hash[2], 32);
	assert_int_equal(status_of(&x->card[0]).acked, 1);
	/* server errors before the relay: again, not a duplicate */
	x->fail500 = 2;
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_true(!s.duplicate && s.index == 2);
	assert_int_equal(x->posts, 6);
	assert_int_equal(x->card[1].nmail, 2);
	free(d);
}

/* No answer at all: KH_ERR_TRANSPORT after 1 + KH_KC_SEND_RETRIES tries of the same bytes; the
 * card's next key comes after the center's ack of a later post covers it (key_ahead path). */
static void test_no_answer_then_key_ahead(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	uint64_t serial, index;
	uint8_t *d, key[32];
	unsigned given = 0;
	kh_err r;

	activate_both(x);
	d = doc_file(x, "d", 10);
	x->drop_before = KH_KC_SEND_RETRIES + 1;
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_ERR_TRANSPORT);
	assert_int_equal(x->posts, KH_KC_SEND_RETRIES + 1);
	for (unsigned i = 1; i < x->posts; i++)
		assert_memory_equal(x->post_hash[0], x->post_hash[i], 32);
	assert_int_equal(x->relayed, 0);
	/* relayed but never acknowledged to the card: its window fills */
	x->drop_after = KH_KC_SEND_RETRIES + 1;
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_ERR_TRANSPORT);
	assert_int_equal(x->relayed, 1);
	assert_int_equal(x->card[0].last, 2);
	assert_int_equal(status_of(&x->card[0]).acked, 0);
	while ((r = kh_keycard_send(&x->card[0].m.t, &serial, &index, key)) == KH_OK)
		given++;
	kh_wipe(key, sizeof key);
	assert_int_equal(r, KH_ERR_KEY_AHEAD);
	assert_int_equal(given, W - 2);
	/* the client fetches the center's ack (post 2), gives it, and gets key 65 */
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_int_equal(s.index, W + 1);
	assert_int_equal(status_of(&x->card[0]).acked, W + 1);
	assert_int_equal(x->card[1].nmail, 2);
	free(d);
}

/* A fetch that stopped before the delete goes on: the file kept, the message deleted; a file with
 * other bytes stops it. */
static void test_fetch_resume(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	char *dir = path_in(x->w->dir, "inbox"), *f1, *f2;
	uint8_t *d, *a, *b;
	size_t na = 0, nb = 0;
	unsigned k = 0;
	struct stat st;
	FILE *f;

	activate_both(x);
	d = doc_file(x, "d", 5000);
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_int_equal(mkdir(dir, 0700), 0);
	x->fail_delete = 1;
	assert_int_not_equal(fetch(x, &x->card[1], dir, &k), KH_OK);
	assert_int_equal(k, 0);
	assert_int_equal(x->card[1].nmail, 2);
	f1 = path_in(dir, "1.khm");
	f2 = path_in(dir, "2.khm");
	a = kh_test_slurp(f1, &na);
	assert_int_equal(na, x->card[1].mail[0].len);
	assert_memory_equal(a, x->card[1].mail[0].msg, na);
	assert_int_equal(stat(f1, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(access(f2, F_OK), -1);
	/* 2.khm there already with other bytes: refused, kept, not deleted at the center */
	f = fopen(f2, "wb");
	fputs("other", f);
	fclose(f);
	assert_int_equal(fetch(x, &x->card[1], dir, &k), KH_ERR_EXISTS);
	assert_int_equal(k, 1); /* 1 was deleted: its file was the same */
	assert_int_equal(x->card[1].nmail, 1);
	b = kh_test_slurp(f2, &nb);
	assert_int_equal(nb, 5);
	free(b);
	unlink(f2);
	/* the center refuses the first hello as a replay: a second session is asked */
	x->replay_hello = 1;
	x->challenges = 0;
	assert_int_equal(fetch(x, &x->card[1], dir, &k), KH_OK);
	assert_int_equal(x->challenges, 2);
	assert_int_equal(k, 1);
	assert_int_equal(x->card[1].nmail, 0);
	/* nothing but the two messages in the directory: no temporary file left */
	{
		DIR *dd = opendir(dir);
		struct dirent *de;
		int n = 0;
		while ((de = readdir(dd)))
			n += de->d_name[0] != '.';
		closedir(dd);
		assert_int_equal(n, 2);
	}
	free(a);
	free(f1);
	free(f2);
	free(dir);
	free(d);
}

/* A delivery flipped in a later chunk: the card opens chunk 0 (and moves), the rest fails, no
 * file is left; the intact delivery still opens (the last key again). */
static void test_open_tampered(void **state)
{
	struct fc *x = *state;
	struct kh_keycard_sent s;
	struct kh_kc_envelope e;
	char *dir = path_in(x->w->dir, "inbox"), *in, *bad, *out, msg[512];
	uint8_t *d, *m;
	uint64_t idx = 0;
	size_t n = 0;
	unsigned k = 0;
	FILE *f;

	activate_both(x);
	d = doc_file(x, "d", 140000);
	assert_int_equal(send_doc(x, &x->card[0], "bob@kc", "d", &s), KH_OK);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(fetch(x, &x->card[1], dir, &k), KH_OK);
	in = path_in(dir, "1.khm");
	bad = path_in(x->w->dir, "bad.khm");
	out = path_in(x->w->dir, "doc");
	m = kh_test_slurp(in, &n);
	m[n - 100] ^= 1;
	f = fopen(bad, "wb");
	assert_int_equal(fwrite(m, 1, n, f), n);
	fclose(f);
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, bad, out, &idx, &e, msg, sizeof msg), KH_ERR_AUTH);
	assert_int_equal(access(out, F_OK), -1);
	/* a post is not a delivery */
	m[5] = KH_KC_POST;
	f = fopen(bad, "wb");
	assert_int_equal(fwrite(m, 1, n, f), n);
	fclose(f);
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, bad, out, &idx, &e, msg, sizeof msg), KH_ERR_FORMAT);
	assert_int_equal(kh_keycard_open_file(&x->card[1].m.t, in, out, &idx, &e, msg, sizeof msg), KH_OK);
	free(m);
	m = kh_test_slurp(out, &n);
	assert_int_equal(n, 140000);
	assert_memory_equal(m, d, n);
	free(m);
	free(in);
	free(bad);
	free(out);
	free(dir);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_activate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_recipient, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_send_fetch_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_same_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_answer_then_key_ahead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fetch_resume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_tampered, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
