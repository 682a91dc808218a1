/*
 * The distribution server's HTTP API (include/keyhole/distsvc.h, docs/protocols/distribution.md):
 * log-in, catalogue, and each delivery's steps, every one a short transaction on the calling
 * thread's store connection. What a delivery must remember between the client's requests is
 * in its row: the server's half of the second-path session (nothing secret) and, once keyed, the
 * delivery's program key sealed under a key derived from the server's signing key, with the
 * delivery's id as associated data, so a stolen database opens no package and a sealed key moved
 * to another delivery opens nothing. The package is made again from that key on every fetch,
 * byte for byte the same. The charge moves the money and records the receipt in one transaction
 * (kh_store_dist_charge), so a retried charge answers the same receipt.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "center/pool.h"
#include "keyhole/dist.h"
#include "keyhole/distsrv.h"
#include "keyhole/distsvc.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/store_dist.h"

struct kh_dist_service {
	struct kh_dist_server srv;
	uint8_t rest[KH_KEY_LEN]; /* seals each delivery's Kx at rest */
	struct kh__pool pool;
	unsigned session_ttl;
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
};

static const char info_rest[] = "keyhole dist v1 kx at rest";
static const uint8_t rest_magic[4] = {'K', 'H', 'K', 'X'};
#define SEALED_KX_LEN (KH_NONCE_LEN + KH_KEY_LEN + KH_TAG_LEN)
#define TOKEN_LEN 32
#define PAGE_DEFAULT 100

static int64_t now_of(const struct kh_dist_service *s)
{
	return s->clock ? s->clock(s->clock_ctx) : (int64_t)time(NULL);
}

/* ---------------------------------------------------------------- what a delivery row keeps */

/* The server's half of the session and, once keyed, what the delivery binds: fixed layout. */
#define PEER_LEN (6 * 32 + 4 + 3 * 4 + 2 * 32)

static void peer_write(const struct kh_dist_peer *p, const struct kh_dist_prog *g, uint8_t out[static PEER_LEN])
{
	struct kh_wr w;

	kh_wr_init(&w, out, PEER_LEN);
	kh_wr_bytes(&w, p->rc, sizeof p->rc);
	kh_wr_bytes(&w, p->rs, sizeof p->rs);
	kh_wr_bytes(&w, p->fp, sizeof p->fp);
	kh_wr_bytes(&w, p->pair_hash, sizeof p->pair_hash);
	kh_wr_bytes(&w, p->sign_pk, sizeof p->sign_pk);
	kh_wr_bytes(&w, p->pair_pk, sizeof p->pair_pk);
	kh_wr_u32(&w, p->ua);
	kh_wr_u32(&w, g->program);
	kh_wr_u32(&w, g->version);
	kh_wr_u32(&w, g->chunks);
	kh_wr_bytes(&w, g->manifest_hash, sizeof g->manifest_hash);
	kh_wr_bytes(&w, g->he, sizeof g->he);
}

static kh_err peer_read(const struct kh_store_dist_delivery *d, struct kh_dist_peer *p, struct kh_dist_prog *g)
{
	struct kh_rd r;

	if (d->peer_len != PEER_LEN)
		return KH_ERR_DB;
	kh_rd_init(&r, d->peer, d->peer_len);
	if (kh_rd_copy(&r, p->rc, sizeof p->rc) != KH_OK || kh_rd_copy(&r, p->rs, sizeof p->rs) != KH_OK ||
	    kh_rd_copy(&r, p->fp, sizeof p->fp) != KH_OK || kh_rd_copy(&r, p->pair_hash, sizeof p->pair_hash) != KH_OK ||
	    kh_rd_copy(&r, p->sign_pk, sizeof p->sign_pk) != KH_OK ||
	    kh_rd_copy(&r, p->pair_pk, sizeof p->pair_pk) != KH_OK || kh_rd_u32(&r, &p->ua) != KH_OK ||
	    kh_rd_u32(&r, &g->program) != KH_OK || kh_rd_u32(&r, &g->version) != KH_OK ||
	    kh_rd_u32(&r, &g->chunks) != KH_OK || kh_rd_copy(&r, g->manifest_hash, sizeof g->manifest_hash) != KH_OK ||
	    kh_rd_copy(&r, g->he, sizeof g->he) != KH_OK || kh_rd_end(&r) != KH_OK)
		return KH_ERR_DB;
	return KH_OK;
}

static void rest_aad(int64_t id, uint8_t aad[static 12])
{
	memcpy(aad, rest_magic, sizeof rest_magic);
	kh_put_be64(aad + 4, (uint64_t)id);
}

static kh_err kx_seal(const struct kh_dist_service *s, int64_t id, const uint8_t kx[static KH_KEY_LEN],
		      uint8_t out[static SEALED_KX_LEN])
{
	uint8_t aad[12];
	kh_err r;

	rest_aad(id, aad);
	if ((r = kh_random(out, KH_NONCE_LEN)) != KH_OK)
		return r;
	return kh_aead_seal(s->rest, out, aad, sizeof aad, kx, KH_KEY_LEN, out + KH_NONCE_LEN);
}

static kh_err kx_open(const struct kh_dist_service *s, const struct kh_store_dist_delivery *d,
		      uint8_t kx[static KH_KEY_LEN])
{
	uint8_t aad[12];

	if (d->kx_len != SEALED_KX_LEN)
		return KH_ERR_DB;
	rest_aad(d->id, aad);
	return kh_aead_open(s->rest, d->kx_sealed, aad, sizeof aad, d->kx_sealed + KH_NONCE_LEN,
			    KH_KEY_LEN + KH_TAG_LEN, kx) == KH_OK
		       ? KH_OK
		       : KH_ERR_DB; /* not a key this server sealed for this delivery */
}

/* ---------------------------------------------------------------- requests */

static kh_err db(struct kh_dist_service *s, struct kh_store **st)
{
	return kh__pool_get(&s->pool, st);
}

/* The account of the request's session: "Authorization: Bearer TOKEN". */
static kh_err session(struct kh_dist_service *s, struct kh_http_req *req, struct kh_store *st, int64_t *account)
{
	const char *h = kh_http_header(req, "Authorization");
	uint8_t tok[TOKEN_LEN], hash[KH_SHA256_LEN];
	size_t n = 0;
	kh_err r;

	if (!h || strncmp(h, "Bearer ", 7) != 0 ||
	    kh_b64url_decode(h + 7, strlen(h + 7), tok, sizeof tok, &n) != KH_OK || n != sizeof tok)
		return KH_ERR_UNAUTHORISED;
	r = kh_sha256(tok, sizeof tok, hash);
	kh_wipe(tok, sizeof tok);
	if (r != KH_OK)
		return r;
	r = kh_store_dist_session_find(st, hash, now_of(s), account);
	return r == KH_ERR_NOTFOUND ? KH_ERR_UNAUTHORISED : r;
}

/* The {id} of the path, a positive integer. */
static kh_err path_id(struct kh_http_req *req, int64_t *id)
{
	const char *v = kh_http_param(req, "id");
	int64_t x = 0;

	if (!v || !*v || strlen(v) > 18)
		return KH_ERR_NOTFOUND;
	for (const char *c = v; *c; c++) {
		if (*c < '0' || *c > '9')
			return KH_ERR_NOTFOUND;
		x = x * 10 + (*c - '0');
	}
	if (x < 1)
		return KH_ERR_NOTFOUND;
	*id = x;
	return KH_OK;
}

/* A body's base64url field, required. */
static kh_err body_b64(struct kh_http_req *req, const char *key, uint8_t *out, size_t cap, size_t *n)
{
	json_t *b = kh_http_body(req);
	kh_err r;

	if (!b)
		return KH_ERR_FORMAT;
	r = kh_json_get_b64(b, key, out, cap, n, 0);
	return r == KH_ERR_NOTFOUND || r == KH_ERR_BUF ? KH_ERR_FORMAT : r;
}

/* This user's delivery of the path. */
static kh_err delivery_of(struct kh_dist_service *s, struct kh_http_req *req, struct kh_store **st,
			  struct kh_store_dist_delivery *d, int64_t *account)
{
	int64_t id;
	kh_err r;

	if ((r = db(s, st)) != KH_OK || (r = session(s, req, *st, account)) != KH_OK || (r = path_id(req, &id)) != KH_OK)
		return r;
	return kh_store_dist_delivery_read(*st, id, *account, d);
}

/* ---- POST /v1/sessions {name, password} */

struct login {
	uint8_t salt[KH_STORE_DIST_SALT_LEN], hash[KH_STORE_DIST_HASH_LEN];
	int64_t id;
};

static kh_err login_found(void *arg, const struct kh_store_dist_account *a)
{
	struct login *l = arg;

	memcpy(l->salt, a->salt, sizeof l->salt);
	memcpy(l->hash, a->hash, sizeof l->hash);
	l->id = a->id;
	return KH_OK;
}

static kh_err h_login(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	json_t *b = kh_http_body(req), *out;
	const char *name, *pw;
	struct login l = {0};
	uint8_t h[KH_STORE_DIST_HASH_LEN], tok[TOKEN_LEN], th[KH_SHA256_LEN];
	char tok64[64];
	struct kh_store *st;
	int64_t now = now_of(s), expires;
	unsigned purged;
	kh_err r;

	if (!b || !(name = json_string_value(json_object_get(b, "name"))) ||
	    !(pw = json_string_value(json_object_get(b, "password"))))
		return KH_ERR_FORMAT;
	if ((r = db(s, &st)) != KH_OK)
		return r;
	r = strlen(name) && strlen(name) <= KH_STORE_DIST_NAME_MAX ? kh_store_dist_account_find(st, name, login_found, &l)
								    : KH_ERR_NOTFOUND;
	if (r != KH_OK && r != KH_ERR_NOTFOUND && r != KH_ERR_INVAL)
		return r;
	/* An unknown name costs the same scrypt as a known one: the answer's time tells nothing. */
	if ((r = kh_dist_password_hash(pw, strlen(pw), l.salt, h)) != KH_OK)
		return r == KH_ERR_INVAL ? KH_ERR_UNAUTHORISED : r;
	if (l.id == 0 || !kh_ct_eq(h, l.hash, sizeof h)) {
		kh_log_info("dist.login_refused", "reason=credentials");
		return KH_ERR_UNAUTHORISED;
	}
	expires = now + (int64_t)s->session_ttl;
	if ((r = kh_random(tok, sizeof tok)) != KH_OK || (r = kh_sha256(tok, sizeof tok, th)) != KH_OK ||
	    (r = kh_b64url_encode(tok, sizeof tok, tok64, sizeof tok64)) != KH_OK ||
	    (r = kh_store_dist_session_add(st, th, l.id, expires)) != KH_OK)
		goto out;
	/* A few ended sessions go with every log-in: the table holds the live ones and little more. */
	if (kh_store_dist_session_purge(st, now, 16, &purged) != KH_OK)
		kh_log_warn("dist.session_purge", "msg=\"could not remove ended sessions\"");
	out = json_pack("{s:s, s:I}", "token", tok64, "expires", (json_int_t)expires);
	r = out ? kh_http_reply(resp, 201, out) : KH_ERR_NOMEM;
out:
	kh_wipe(tok, sizeof tok);
	kh_wipe(tok64, sizeof tok64);
	return r;
}

/* ---- GET /v1/account */

struct named {
	char name[KH_STORE_DIST_NAME_MAX + 1];
	int64_t balance;
};

static kh_err account_found(void *arg, const struct kh_store_dist_account *a)
{
	struct named *n = arg;

	snprintf(n->name, sizeof n->name, "%s", a->name);
	n->balance = a->balance;
	return KH_OK;
}

static kh_err h_account(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	struct kh_store *st;
	struct named n;
	int64_t account;
	json_t *out;
	kh_err r;

	if ((r = db(s, &st)) != KH_OK || (r = session(s, req, st, &account)) != KH_OK ||
	    (r = kh_store_dist_account_get(st, account, account_found, &n)) != KH_OK)
		return r;
	out = json_pack("{s:s, s:I}", "name", n.name, "balance", (json_int_t)n.balance);
	return out ? kh_http_reply(resp, 200, out) : KH_ERR_NOMEM;
}

/* ---- GET /v1/programs?after=ID&limit=N */

struct listing {
	json_t *arr;
	int64_t last;
};

static kh_err listed(void *arg, const struct kh_store_dist_program *p)
{
	struct listing *l = arg;
	json_t *o = json_pack("{s:I, s:s, s:I, s:I, s:s%}", "id", (json_int_t)p->id, "name", p->name, "version",
			      (json_int_t)p->version, "price", (json_int_t)p->price, "manifest",
			      (const char *)p->manifest, p->manifest_len);

	if (!o || json_array_append_new(l->arr, o) != 0)
		return KH_ERR_NOMEM;
	l->last = p->id;
	return KH_OK;
}

static kh_err query_num(struct kh_http_req *req, const char *name, int64_t dflt, int64_t max, int64_t *v)
{
	const char *q = kh_http_query(req, name);
	int64_t x = 0;

	if (!q) {
		*v = dflt;
		return KH_OK;
	}
	if (!*q || strlen(q) > 18)
		return KH_ERR_INVAL;
	for (const char *c = q; *c; c++) {
		if (*c < '0' || *c > '9')
			return KH_ERR_INVAL;
		x = x * 10 + (*c - '0');
	}
	if (x > max)
		return KH_ERR_INVAL;
	*v = x;
	return KH_OK;
}

static kh_err h_programs(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	struct kh_store_page page = {0};
	struct listing l = {0};
	struct kh_store *st;
	int64_t after, limit;
	json_t *out;
	int more = 0;
	kh_err r;

	if (query_num(req, "after", 0, INT64_MAX / 2, &after) != KH_OK)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "after must be a program id");
	if (query_num(req, "limit", PAGE_DEFAULT, KH_STORE_PAGE_MAX, &limit) != KH_OK || limit < 1)
		return kh_http_reply_error(resp, KH_ERR_INVAL, "limit must be an integer from 1 to 1000");
	page.limit = (unsigned)limit;
	page.after_set = 1;
	page.after = after;
	if ((r = db(s, &st)) != KH_OK)
		return r;
	if (!(l.arr = json_array()))
		return KH_ERR_NOMEM;
	if ((r = kh_store_dist_programs_page(st, &page, listed, &l, &more)) != KH_OK) {
		json_decref(l.arr);
		return r;
	}
	out = json_pack("{s:o}", "programs", l.arr);
	if (out && more && json_object_set_new(out, "next", json_integer(l.last)) != 0) {
		json_decref(out);
		out = NULL;
	}
	return out ? kh_http_reply(resp, 200, out) : KH_ERR_NOMEM;
}

/* ---- POST /v1/deliveries {program | receipt, hello} */

struct meta {
	uint32_t version;
};

static kh_err meta_found(void *arg, const struct kh_store_dist_program *p)
{
	((struct meta *)arg)->version = p->version;
	return KH_OK;
}

/*
 * A receipt presented to fetch again: this server's signature, its record, this user's, for the
 * processor of the hello. *program is the receipt's.
 */
static kh_err receipt_check(struct kh_dist_service *s, struct kh_store *st, const uint8_t *b, size_t n,
			    int64_t account, const struct kh_dist_peer *p, int64_t *program, uint8_t id[static 16])
{
	struct kh_dist_receipt rc;
	struct kh_store_dist_receipt rec;
	struct meta m = {0};
	kh_err r;

	if (kh_dist_receipt_parse(b, n, s->srv.pk, &rc) != KH_OK || rc.server != s->srv.serial)
		return KH_ERR_RECEIPT;
	if ((r = kh_store_dist_receipt_read(st, rc.id, &rec)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? KH_ERR_RECEIPT : r;
	/* The record is the truth: the signed copy must say what it says. */
	if (rec.account_id != account || (uint64_t)rec.account_id != rc.account || rec.program_id != (int64_t)rc.program ||
	    rec.price != rc.price || (uint64_t)rec.time != rc.time || !kh_ct_eq(rec.fp, rc.fp, sizeof rc.fp) ||
	    !kh_ct_eq(rc.fp, p->fp, sizeof rc.fp))
		return KH_ERR_RECEIPT;
	if ((r = kh_store_dist_program_meta(st, rec.program_id, meta_found, &m)) != KH_OK)
		return r;
	if (m.version != rc.version)
		return KH_ERR_RECEIPT;
	*program = rec.program_id;
	memcpy(id, rc.id, 16);
	return KH_OK;
}

static kh_err h_hello(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	json_t *b = kh_http_body(req), *jp, *out;
	uint8_t hello[3 * 3 + KH_DIST_NONCE_LEN + 2 * KH_CERT_MAX], rcpt[KH_DIST_RECEIPT_BYTES + 1];
	uint8_t auth[4 * 3 + KH_DIST_NONCE_LEN + KH_CERT_MAX + KH_ED25519_SIG_LEN];
	struct kh_store_dist_delivery d;
	struct kh_dist_peer p;
	struct kh_dist_prog g;
	struct meta m;
	struct kh_store *st;
	struct kh_wr w;
	size_t hn, rn;
	int64_t account, program = 0, id;
	char *auth64;
	kh_err r;

	if (!b)
		return KH_ERR_FORMAT;
	if ((r = db(s, &st)) != KH_OK || (r = session(s, req, st, &account)) != KH_OK)
		return r;
	if ((r = body_b64(req, "hello", hello, sizeof hello, &hn)) != KH_OK)
		return kh_http_reply_error(resp, r, "hello must be the processor's hello, base64url");
	jp = json_object_get(b, "program");
	if (!jp && !json_object_get(b, "receipt"))
		return kh_http_reply_error(resp, KH_ERR_FORMAT, "give the program to buy, or the receipt to fetch again");
	if (jp && (!json_is_integer(jp) || json_integer_value(jp) < 1))
		return kh_http_reply_error(resp, KH_ERR_FORMAT, "program must be a program id");
	/* Certificates that do not make a processor are that; anything else is not a hello at all. */
	if ((r = kh_dist_srv_hello(&s->srv, hello, hn, (uint64_t)now_of(s), &p)) != KH_OK)
		return r == KH_ERR_CERT || r == KH_ERR_CERT_ROLE || r == KH_ERR_CERT_EXPIRED || r == KH_ERR_CERT_KEY
			       ? r
			       : kh_http_reply_error(resp, KH_ERR_FORMAT, "hello is not a processor's hello");
	memset(&d, 0, sizeof d);
	memset(&g, 0, sizeof g);
	if (!json_object_get(b, "receipt")) {
		program = json_integer_value(jp);
		if ((r = kh_store_dist_program_meta(st, program, meta_found, &m)) != KH_OK)
			return r;
	} else {
		if (kh_json_get_b64(b, "receipt", rcpt, sizeof rcpt, &rn, 0) != KH_OK)
			return KH_ERR_RECEIPT;
		if ((r = receipt_check(s, st, rcpt, rn, account, &p, &program, d.refetch)) != KH_OK)
			return r;
		/* A receipt buys again exactly what it paid for: not a newer version, not another program. */
		if (jp && json_integer_value(jp) != program)
			return KH_ERR_RECEIPT;
		d.refetch_set = 1;
	}
	kh_wr_init(&w, auth, sizeof auth);
	if ((r = kh_dist_srv_auth(&s->srv, &p, &w)) != KH_OK)
		return r;
	d.account_id = account;
	d.program_id = program;
	memcpy(d.fp, p.fp, sizeof d.fp);
	peer_write(&p, &g, d.peer);
	d.peer_len = PEER_LEN;
	if ((r = kh_store_dist_delivery_add(st, &d, now_of(s), &id)) != KH_OK)
		return r;
	if (!(auth64 = malloc(kh_b64url_len(w.len) + 1)))
		return KH_ERR_NOMEM;
	if ((r = kh_b64url_encode(auth, w.len, auth64, kh_b64url_len(w.len) + 1)) == KH_OK) {
		out = json_pack("{s:I, s:s}", "id", (json_int_t)id, "auth", auth64);
		r = out ? kh_http_reply(resp, 201, out) : KH_ERR_NOMEM;
	}
	free(auth64);
	return r;
}

/* ---- the package, made from a delivery's key */

struct pkg {
	uint8_t *buf; /* NULL: only count */
	size_t len, cap;
};

static kh_err pkg_put(void *ctx, const uint8_t *b, size_t n)
{
	struct pkg *k = ctx;

	if (k->buf) {
		if (n > k->cap - k->len)
			return KH_ERR_INTERNAL;
		memcpy(k->buf + k->len, b, n);
	}
	k->len += n;
	return KH_OK;
}

struct making {
	const uint8_t *kx;
	struct kh_dist_prog *prog;
	struct pkg *pkg;
	int with_buf;
};

static kh_err make(void *arg, const struct kh_store_dist_program *p)
{
	struct making *m = arg;
	size_t chunks;

	if (!p->program_len)
		return KH_ERR_DB;
	m->prog->program = (uint32_t)p->id;
	m->prog->version = p->version;
	if (m->with_buf) {
		chunks = (p->program_len - 1) / KH_DIST_CHUNK_MAX + 1;
		m->pkg->cap = KH_DIST_PKG_HEAD_LEN + p->manifest_len + 4 + p->program_len + chunks * KH_TAG_LEN;
		if (!(m->pkg->buf = malloc(m->pkg->cap)))
			return KH_ERR_NOMEM;
	}
	return kh_dist_srv_package(m->kx, m->prog, p->manifest, p->manifest_len, p->program, p->program_len, pkg_put,
				   m->pkg);
}

/* ---- POST /v1/deliveries/{id}/resp {resp} */

static kh_err h_resp(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	uint8_t rb[128], kx[KH_KEY_LEN], sealed[SEALED_KX_LEN], peer[PEER_LEN];
	uint8_t key[7 * 3 + 3 * 4 + 2 * KH_SHA256_LEN + KH_DIST_WRAP_LEN + KH_ED25519_SIG_LEN];
	char key64[512];
	struct kh_store_dist_delivery d;
	struct kh_dist_peer p;
	struct kh_dist_prog g;
	struct pkg k = {0};
	struct making m = {kx, &g, &k, 0};
	struct kh_store *st;
	struct kh_wr w;
	int64_t account;
	size_t rn;
	json_t *out;
	kh_err r;

	if ((r = delivery_of(s, req, &st, &d, &account)) != KH_OK)
		return r;
	if ((r = body_b64(req, "resp", rb, sizeof rb, &rn)) != KH_OK)
		return kh_http_reply_error(resp, r, "resp must be the processor's answer, base64url");
	if (d.state != KH_STORE_DIST_HELLO)
		return KH_ERR_DIST_SESSION;
	memset(&g, 0, sizeof g);
	if ((r = peer_read(&d, &p, &g)) != KH_OK || (r = kh_dist_srv_resp(&s->srv, &p, rb, rn)) != KH_OK)
		return r;
	/* The processor proved itself: a key of this delivery's own, and what it binds. */
	if ((r = kh_random(kx, sizeof kx)) != KH_OK ||
	    (r = kh_store_dist_program_read(st, d.program_id, make, &m)) != KH_OK)
		goto out;
	kh_wr_init(&w, key, sizeof key);
	if ((r = kh_dist_srv_key(&s->srv, &p, &g, kx, &w)) != KH_OK || (r = kx_seal(s, d.id, kx, sealed)) != KH_OK)
		goto out;
	peer_write(&p, &g, peer);
	if ((r = kh_store_dist_delivery_step(st, d.id, KH_STORE_DIST_HELLO, KH_STORE_DIST_KEYED, peer, sizeof peer, sealed,
					     sizeof sealed, now_of(s))) != KH_OK ||
	    (r = kh_b64url_encode(key, w.len, key64, sizeof key64)) != KH_OK)
		goto out;
	out = json_pack("{s:s, s:I}", "key", key64, "package_size", (json_int_t)k.len);
	r = out ? kh_http_reply(resp, 200, out) : KH_ERR_NOMEM;
out:
	kh_wipe(kx, sizeof kx);
	kh_wipe(&d, sizeof d);
	return r;
}

/* ---- GET /v1/deliveries/{id}/package */

static kh_err h_package(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	uint8_t kx[KH_KEY_LEN];
	struct kh_store_dist_delivery d;
	struct kh_dist_peer p;
	struct kh_dist_prog g, made;
	struct pkg k = {0};
	struct making m = {kx, &made, &k, 1};
	struct kh_store *st;
	int64_t account;
	kh_err r;

	if ((r = delivery_of(s, req, &st, &d, &account)) != KH_OK)
		return r;
	if (d.state != KH_STORE_DIST_KEYED && d.state != KH_STORE_DIST_CHARGED)
		return KH_ERR_DIST_SESSION;
	memset(&made, 0, sizeof made);
	if ((r = peer_read(&d, &p, &g)) != KH_OK || (r = kx_open(s, &d, kx)) != KH_OK ||
	    (r = kh_store_dist_program_read(st, d.program_id, make, &m)) != KH_OK)
		goto out;
	/* The same key, the same program: the same bytes the processor's key message binds. */
	if (made.chunks != g.chunks || !kh_ct_eq(made.he, g.he, sizeof g.he) ||
	    !kh_ct_eq(made.manifest_hash, g.manifest_hash, sizeof g.manifest_hash)) {
		r = KH_ERR_DB;
		goto out;
	}
	r = kh_http_reply_bytes(resp, 200, "application/octet-stream", k.buf, k.len);
	k.buf = NULL;
out:
	free(k.buf);
	kh_wipe(kx, sizeof kx);
	kh_wipe(&d, sizeof d);
	return r;
}

/* ---- POST /v1/deliveries/{id}/charge */

static kh_err h_charge(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_dist_service *s = arg;
	uint8_t rid[KH_STORE_DIST_RECEIPT_LEN], rb[KH_DIST_RECEIPT_BYTES], sig[KH_ED25519_SIG_LEN];
	char r64[256], s64[128];
	struct kh_store_dist_delivery d;
	struct kh_store_dist_receipt rec;
	struct kh_dist_receipt rc;
	struct kh_dist_peer p;
	struct kh_dist_prog g;
	struct named n;
	struct kh_store *st;
	int64_t account;
	int charged = 0;
	json_t *out;
	kh_err r;

	if ((r = delivery_of(s, req, &st, &d, &account)) != KH_OK)
		return r;
	kh_wipe(d.kx_sealed, sizeof d.kx_sealed);
	if (d.state != KH_STORE_DIST_KEYED && d.state != KH_STORE_DIST_CHARGED)
		return KH_ERR_DIST_SESSION;
	if ((r = peer_read(&d, &p, &g)) != KH_OK || (r = kh_random(rid, sizeof rid)) != KH_OK ||
	    (r = kh_store_dist_charge(st, d.id, account, rid, now_of(s), &rec, &charged)) != KH_OK)
		return r;
	if (charged)
		kh_log_info("dist.charge", "delivery=%lld account=%lld program=%u price=%u", (long long)d.id,
			    (long long)account, g.program, rec.price);
	memset(&rc, 0, sizeof rc);
	memcpy(rc.id, rec.id, sizeof rc.id);
	rc.account = (uint64_t)rec.account_id;
	rc.program = (uint32_t)rec.program_id;
	rc.version = g.version;
	memcpy(rc.fp, rec.fp, sizeof rc.fp);
	rc.price = rec.price;
	rc.time = (uint64_t)rec.time;
	rc.server = s->srv.serial;
	if ((r = kh_dist_receipt_sign(&rc, s->srv.sk, rb)) != KH_OK ||
	    (r = kh_dist_srv_program_sig(&s->srv, p.fp, &g, rec.id, sig)) != KH_OK ||
	    (r = kh_b64url_encode(rb, sizeof rb, r64, sizeof r64)) != KH_OK ||
	    (r = kh_b64url_encode(sig, sizeof sig, s64, sizeof s64)) != KH_OK ||
	    (r = kh_store_dist_account_get(st, account, account_found, &n)) != KH_OK)
		return r;
	out = json_pack("{s:s, s:s, s:b, s:I}", "receipt", r64, "program_sig", s64, "charged", charged, "balance",
			(json_int_t)n.balance);
	return out ? kh_http_reply(resp, 200, out) : KH_ERR_NOMEM;
}

/* ---------------------------------------------------------------- the service */

kh_err kh_dist_service_new(const struct kh_dist_service_config *cfg, struct kh_dist_service **out, const char **what)
{
	static const char dbw[] = "database";
	struct kh_dist_service *s;
	struct kh_store *st;
	kh_err r;

	if (what)
		*what = NULL;
	if (!cfg || !cfg->db || !cfg->dir || !out)
		return KH_ERR_INVAL;
	if (cfg->session_ttl && (cfg->session_ttl < 60 || cfg->session_ttl > 86400))
		return KH_ERR_INVAL;
	if (!(s = calloc(1, sizeof *s)))
		return KH_ERR_NOMEM;
	s->session_ttl = cfg->session_ttl ? cfg->session_ttl : KH_DIST_SESSION_TTL;
	s->clock = cfg->clock;
	s->clock_ctx = cfg->clock_ctx;
	if ((r = kh_dist_identity_load(cfg->dir, &s->srv)) != KH_OK) {
		if (what)
			*what = cfg->dir;
		goto fail;
	}
	if ((r = kh_hkdf(s->srv.sk, 32, NULL, 0, (const uint8_t *)info_rest, sizeof info_rest - 1, s->rest,
			 sizeof s->rest)) != KH_OK)
		goto fail;
	/* The first connection now, on this thread: a database that cannot open fails the start. */
	if ((r = kh__pool_init(&s->pool, cfg->db, cfg->store_sync_normal)) != KH_OK || (r = db(s, &st)) != KH_OK) {
		if (what)
			*what = dbw;
		goto fail;
	}
	*out = s;
	return KH_OK;
fail:
	kh_dist_service_free(s);
	return r;
}

kh_err kh_dist_service_add_routes(struct kh_dist_service *s, struct kh_http *h)
{
	const struct kh_http_route routes[] = {
		{"POST", "/v1/sessions", h_login, s, KH_HTTP_ROUTE_OPEN},
		{"GET", "/v1/programs", h_programs, s, KH_HTTP_ROUTE_OPEN},
		{"GET", "/v1/account", h_account, s, 0},
		{"POST", "/v1/deliveries", h_hello, s, 0},
		{"POST", "/v1/deliveries/{id}/resp", h_resp, s, 0},
		{"GET", "/v1/deliveries/{id}/package", h_package, s, 0},
		{"POST", "/v1/deliveries/{id}/charge", h_charge, s, 0},
	};

	if (!s || !h)
		return KH_ERR_INVAL;
	return kh_http_add_routes(h, routes, sizeof routes / sizeof routes[0]);
}

void kh_dist_service_free(struct kh_dist_service *s)
{
	if (!s)
		return;
	kh__pool_free(&s->pool);
	kh_wipe(s, sizeof *s);
	free(s);
}
