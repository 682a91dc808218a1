/*
 * The escrow's HTTP API (include/keyhole/escrowsvc.h, docs/protocols/escrow.md, seed 003):
 * accounts, listings, purchases, notices, withdrawals. Every movement of money is one transaction
 * of the ledger (keyhole/store_escrow.h); every private RSA operation is the signing process's
 * (keyhole/secmod.h), so this process never holds a listing's private key.
 *
 * A purchase is answered in one transaction: the buyer's request is checked (its device's
 * certificate from our authority, role buyer; its signature; its listing, price and escrow; c' in
 * [2, n-2]; the funds, read first so an unfunded buyer cannot make the signing process work for
 * nothing), then z = c'^d comes from the signing process and the answer is signed, and only then
 * are the hold and the answer committed together. A purchase is thus never held without its
 * answer on record; a crash before the commit leaves nothing, and the retry (the same request,
 * with the same Idempotency-Key) computes the same z and signs the same answer (Ed25519 is
 * deterministic) into the one hold. A purchase already on record answers what it recorded.
 *
 * SQLite commits through the group committer (one fsync for every purchase waiting at once);
 * PostgreSQL, whose server commits many connections at once, on the thread's own connection.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "center/escrow/vcache.h"
#include "center/pool.h"
#include "keyhole/cert.h"
#include "keyhole/escrow.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/log.h"
#include "keyhole/secmod.h"
#include "keyhole/store_escrow.h"

/* The device certificates the authority's check passed, and the moduli of listings' keys, kept by
 * the SHA-256 of their bytes (vcache.h): a buyer's device is checked in full once, not at every
 * request and notice. A miss, or a hit the clock does not allow, is the full check. */
#define CERTS_CACHED 4096
#define MODULI_CACHED 1024

struct kh_escrow_service {
	struct kh_identity id;
	struct kh_secmod_client *secmod;
	struct kh__pool pool;
	struct kh_store_group *writer;
	struct kh__vcache *certs, *moduli;
	unsigned key_bits, deadline, sweep_every;
	int64_t (*clock)(void *ctx);
	void *clock_ctx;
	struct {
		pthread_t th;
		pthread_mutex_t mu;
		pthread_cond_t cv;
		int started, stop, sync_ok;
	} sweeper;
};

static const char label_idem[] = "keyhole escrow v1 idempotency";
static const char label_listing_id[] = "keyhole escrow v1 listing id";

static int64_t now_of(const struct kh_escrow_service *s)
{
	return s->clock ? s->clock(s->clock_ctx) : (int64_t)time(NULL);
}

static kh_err db(struct kh_escrow_service *s, struct kh_store **st)
{
	return kh__pool_get(&s->pool, st);
}

/* Run fn in one durable write transaction: the group's on SQLite, this thread's on PostgreSQL. */
static kh_err write_tx(struct kh_escrow_service *s, kh_store_tx_fn fn, void *arg)
{
	struct kh_store *st;
	kh_err r;

	if (kh_store_group_batches(s->writer))
		return kh_store_group_run(s->writer, fn, arg);
	if ((r = db(s, &st)) != KH_OK)
		return r;
	return kh_store_run_tx(st, fn, arg);
}

/* ---------------------------------------------------------------- request helpers */

/* The account of the request's token: "Authorization: Bearer TOKEN". */
static kh_err auth(struct kh_http_req *req, struct kh_store *st, int64_t *account)
{
	const char *h = kh_http_header(req, "Authorization");
	uint8_t tok[KH_ESCROW_TOKEN_LEN], hash[KH_SHA256_LEN];
	size_t n = 0;
	kh_err r;

	if (!h || strncmp(h, "Bearer ", 7) != 0 ||
	    kh_b64url_decode(h + 7, strlen(h + 7), tok, sizeof tok, &n) != KH_OK || n != sizeof tok)
		return KH_ERR_UNAUTHORISED;
	r = kh_sha256(tok, sizeof tok, hash);
	kh_wipe(tok, sizeof tok);
	if (r != KH_OK)
		return r;
	r = kh_store_escrow_token_find(st, hash, account);
	return r == KH_ERR_NOTFOUND ? KH_ERR_UNAUTHORISED : r;
}

/* The request's Idempotency-Key, required, bound to the account and the kind of request:
 * SHA-256(label | kind | u64 account | key), the first 16 bytes. */
static kh_err idem_of(struct kh_http_req *req, const char *kind, int64_t account, uint8_t out[static 16])
{
	const char *k = kh_http_idempotency_key(req);
	uint8_t b[sizeof label_idem + 16 + 8 + KH_HTTP_IDEM_KEY_MAX], h[KH_SHA256_LEN];
	size_t n = 0, kl;
	kh_err r;

	if (!k || (kl = strlen(k)) > KH_HTTP_IDEM_KEY_MAX || strlen(kind) > 16)
		return KH_ERR_IDEM_REQUIRED;
	memcpy(b, label_idem, sizeof label_idem - 1);
	n = sizeof label_idem - 1;
	memcpy(b + n, kind, strlen(kind) + 1);
	n += strlen(kind) + 1;
	kh_put_be64(b + n, (uint64_t)account);
	n += 8;
	memcpy(b + n, k, kl);
	n += kl;
	if ((r = kh_sha256(b, n, h)) == KH_OK)
		memcpy(out, h, 16);
	return r;
}

/* Ids in paths and JSON: 32 lower-case hex digits. */
static void hex_of(const uint8_t id[static 16], char out[static 33])
{
	kh_hex_encode(id, 16, out);
}

static kh_err id_of(const char *hex, uint8_t id[static 16])
{
	if (!hex || strlen(hex) != 32 || strspn(hex, "0123456789abcdef") != 32)
		return KH_ERR_NOTFOUND;
	return kh_hex_decode(hex, 32, id, 16) == KH_OK ? KH_OK : KH_ERR_NOTFOUND;
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

/* A body's integer field in [lo, hi]; absent: dflt (or KH_ERR_FORMAT when dflt < 0). */
static kh_err body_int(struct kh_http_req *req, const char *key, int64_t lo, int64_t hi, int64_t dflt, int64_t *v)
{
	json_t *b = kh_http_body(req), *x = b ? json_object_get(b, key) : NULL;

	if (!x) {
		if (dflt < 0)
			return KH_ERR_FORMAT;
		*v = dflt;
		return KH_OK;
	}
	if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
		return KH_ERR_FORMAT;
	*v = json_integer_value(x);
	return KH_OK;
}

/* ---------------------------------------------------------------- listings */

struct listing_copy {
	int found;
	uint8_t key_id[KH_STORE_ESCROW_ID_LEN];
	int64_t seller, price, deadline;
	char currency[4];
	char content[KH_STORE_ESCROW_CONTENT_MAX + 1];
	uint8_t pub[KH_STORE_ESCROW_PUBKEY_MAX];
	size_t publen;
	uint8_t signed_bytes[KH_STORE_ESCROW_SIGNED_MAX];
	size_t signed_len;
};

static kh_err listing_found(void *arg, const struct kh_store_escrow_listing *l)
{
	struct listing_copy *c = arg;

	if (l->pubkey_len > sizeof c->pub || l->signed_len > sizeof c->signed_bytes)
		return KH_ERR_FORMAT;
	c->found = 1;
	memcpy(c->key_id, l->key_id, sizeof c->key_id);
	c->seller = l->seller;
	c->price = l->price;
	c->deadline = l->deadline_secs;
	memcpy(c->currency, l->currency, sizeof c->currency);
	snprintf(c->content, sizeof c->content, "%s", l->content);
	memcpy(c->pub, l->pubkey, l->pubkey_len);
	c->publen = l->pubkey_len;
	memcpy(c->signed_bytes, l->signed_bytes, l->signed_len);
	c->signed_len = l->signed_len;
	return KH_OK;
}

static kh_err listing_json(const uint8_t id[static 16], const struct listing_copy *c, json_t **out)
{
	char hex[33];
	json_t *o;

	hex_of(id, hex);
	o = json_pack("{s:s, s:I, s:s, s:s, s:I, s:I}", "id", hex, "seller", (json_int_t)c->seller, "content",
		      c->content, "currency", c->currency, "price", (json_int_t)c->price, "deadline",
		      (json_int_t)c->deadline);
	if (!o || kh_json_set_b64(o, "listing", c->signed_bytes, c->signed_len) != KH_OK ||
	    kh_json_set_b64(o, "key", c->pub, c->publen) != KH_OK) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	*out = o;
	return KH_OK;
}

/* The same listing asked again under one Idempotency-Key: the first one, if it is the same ask. */
static kh_err listing_again(struct kh_http_resp *resp, const uint8_t id[static 16], const struct listing_copy *c,
			    int64_t account, const char *content, int64_t price)
{
	json_t *o;
	kh_err r;

	if (c->seller != account || strcmp(c->content, content) != 0 || c->price != price)
		return KH_ERR_IDEM_MISMATCH;
	if ((r = listing_json(id, c, &o)) != KH_OK)
		return r;
	return kh_http_reply(resp, 200, o);
}

/* POST /v1/listings {content, price[, deadline]}: a listing with a key of its own. */
static kh_err h_listing_new(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	json_t *b = kh_http_body(req), *o;
	struct kh_store_escrow_account acct;
	struct kh_escrow_listing l;
	struct kh_store_escrow_listing sl;
	struct listing_copy *c = NULL;
	uint8_t idem[16], h[KH_SHA256_LEN], buf[sizeof label_listing_id + 16];
	uint8_t signed_bytes[KH_ESCROW_LISTING_MAX];
	const char *content;
	int64_t account, price, deadline, now = now_of(s);
	struct kh_store *st;
	struct kh_wr w;
	kh_err r;

	if ((r = db(s, &st)) != KH_OK || (r = auth(req, st, &account)) != KH_OK ||
	    (r = idem_of(req, "listing", account, idem)) != KH_OK)
		return r;
	if (!b || !(content = json_string_value(json_object_get(b, "content"))) || !kh_escrow_content_ok(content) ||
	    (r = body_int(req, "price", 1, KH_STORE_ESCROW_AMOUNT_MAX, -1, &price)) != KH_OK ||
	    (r = body_int(req, "deadline", 1, KH_ESCROW_DEADLINE_MAX, s->deadline, &deadline)) != KH_OK)
		return KH_ERR_FORMAT;
	if ((r = kh_store_escrow_account_get(st, account, &acct)) != KH_OK)
		return r;
	/* the listing's id follows from the Idempotency-Key: a retry finds the first one */
	memcpy(buf, label_listing_id, sizeof label_listing_id - 1);
	memcpy(buf + sizeof label_listing_id - 1, idem, sizeof idem);
	if ((r = kh_sha256(buf, sizeof label_listing_id - 1 + sizeof idem, h)) != KH_OK)
		return r;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	r = kh_store_escrow_listing_get(st, h, listing_found, c);
	if (r == KH_OK) {
		r = listing_again(resp, h, c, account, content, price);
		goto out;
	}
	if (r != KH_ERR_NOTFOUND)
		goto out;
	/* each listing is a key made and kept on disk: one account cannot fill the disk with them */
	{
		int64_t have = 0;
		if ((r = kh_store_escrow_listing_count(st, account, &have)) != KH_OK)
			goto out;
		if (have >= KH_ESCROW_LISTINGS_MAX) {
			r = KH_ERR_LIMIT;
			goto out;
		}
	}

	memset(&l, 0, sizeof l);
	memcpy(l.id, h, sizeof l.id);
	if ((r = kh_secmod_keygen(s->secmod, s->key_bits, c->key_id, c->pub, sizeof c->pub, &c->publen)) != KH_OK)
		goto out;
	l.escrow = s->id.serial;
	l.seller = (uint64_t)account;
	l.price = (uint64_t)price;
	memcpy(l.currency, acct.currency, sizeof l.currency);
	l.deadline = (uint32_t)deadline;
	l.created = (uint64_t)now;
	snprintf(l.content, sizeof l.content, "%s", content);
	l.key = c->pub;
	l.keylen = c->publen;
	kh_wr_init(&w, signed_bytes, sizeof signed_bytes);
	if ((r = kh_escrow_listing_sign(&l, s->id.sk, &w)) != KH_OK)
		goto out;
	memset(&sl, 0, sizeof sl);
	memcpy(sl.id, l.id, sizeof sl.id);
	sl.seller = account;
	sl.content = content;
	sl.price = price;
	memcpy(sl.currency, acct.currency, sizeof sl.currency);
	sl.deadline_secs = deadline;
	memcpy(sl.key_id, c->key_id, sizeof sl.key_id);
	sl.pubkey = c->pub;
	sl.pubkey_len = c->publen;
	sl.signed_bytes = signed_bytes;
	sl.signed_len = w.len;
	r = kh_store_escrow_listing_add(st, &sl, now);
	if (r == KH_ERR_EXISTS) {
		/* the same key asked twice at once: the other made it first (our key is left unused) */
		memset(c, 0, sizeof *c);
		if ((r = kh_store_escrow_listing_get(st, h, listing_found, c)) == KH_OK)
			r = listing_again(resp, h, c, account, content, price);
		goto out;
	}
	if (r != KH_OK)
		goto out;
	kh_log_info("escrow.listing", "seller=%lld price=%lld currency=%s", (long long)account, (long long)price,
		    acct.currency);
	c->seller = account;
	c->price = price;
	c->deadline = deadline;
	memcpy(c->currency, acct.currency, sizeof c->currency);
	snprintf(c->content, sizeof c->content, "%s", content);
	memcpy(c->signed_bytes, signed_bytes, w.len);
	c->signed_len = w.len;
	if ((r = listing_json(h, c, &o)) == KH_OK)
		r = kh_http_reply(resp, 201, o);
out:
	free(c);
	return r;
}

/* GET /v1/listings/{id} */
static kh_err h_listing_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	struct listing_copy *c;
	uint8_t id[16];
	struct kh_store *st;
	json_t *o;
	kh_err r;

	if ((r = id_of(kh_http_param(req, "id"), id)) != KH_OK || (r = db(s, &st)) != KH_OK)
		return r;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh_store_escrow_listing_get(st, id, listing_found, c)) == KH_OK && (r = listing_json(id, c, &o)) == KH_OK)
		r = kh_http_reply(resp, 200, o);
	free(c);
	return r;
}

/* ---------------------------------------------------------------- purchases */

static kh_err purchase_found(void *arg, const struct kh_store_escrow_purchase *p)
{
	memcpy(arg, p, sizeof *p);
	return KH_OK;
}

static kh_err purchase_json(const struct kh_store_escrow_purchase *p, const char *currency, json_t **out)
{
	char hex[33], lhex[33];
	json_t *o;

	hex_of(p->id, hex);
	hex_of(p->listing, lhex);
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id", hex, "listing", lhex, "state",
		      kh_store_escrow_state_name(p->state), "price", (json_int_t)p->price, "deadline",
		      (json_int_t)p->deadline, "buyer", (json_int_t)p->buyer, "seller", (json_int_t)p->seller);
	if (!o || (currency && json_object_set_new(o, "currency", json_string(currency)) != 0) ||
	    (p->answer_len && kh_json_set_b64(o, "answer", p->answer, p->answer_len) != KH_OK)) {
		json_decref(o);
		return KH_ERR_NOMEM;
	}
	*out = o;
	return KH_OK;
}

/* What a purchase's transaction does: the hold, then its answer, together. */
struct buy_tx {
	const struct kh_store_escrow_hold *hold;
	const uint8_t *answer;
	size_t answer_len;
	int64_t now;
	struct kh_store_escrow_purchase *out;
	int repeat;
};

static kh_err buy_tx(struct kh_store *st, void *arg)
{
	struct buy_tx *t = arg;
	kh_err r;

	t->repeat = 0;
	if ((r = kh_store_escrow_purchase_hold(st, t->hold, t->now, t->out, &t->repeat)) != KH_OK)
		return r;
	/* a repeat already answered keeps its answer (the same bytes: z and Ed25519 are deterministic) */
	if (t->out->answer_len)
		return KH_OK;
	if ((r = kh_store_escrow_purchase_answer(st, t->hold->id, t->answer, t->answer_len)) != KH_OK)
		return r;
	memcpy(t->out->answer, t->answer, t->answer_len);
	t->out->answer_len = t->answer_len;
	return KH_OK;
}

/* The modulus of the listing's key (n, *nlen), parsed once per key. */
static kh_err listing_modulus(struct kh_escrow_service *s, const struct listing_copy *c,
			      uint8_t n[static KH_RSA_MAX_LEN], size_t *nlen)
{
	uint8_t h[KH_SHA256_LEN];
	kh_err r;

	if ((r = kh_sha256(c->pub, c->publen, h)) != KH_OK)
		return r;
	if (kh__vcache_get(s->moduli, h, n, KH_RSA_MAX_LEN, nlen))
		return KH_OK;
	if ((r = kh_rsa_spki_modulus(c->pub, c->publen, n, nlen)) == KH_OK)
		kh__vcache_put(s->moduli, h, n, *nlen);
	return r;
}

/* A certificate the check passed, and when: the same answer holds from then until notAfter. */
struct cert_ok {
	struct kh_cert_info ci;
	int64_t checked;
};

/*
 * The device's certificate: our authority's, role buyer, valid now, for the device the record
 * names; its key into pk. Checked in full unless these very bytes passed the check before and now
 * is between that check and the certificate's notAfter (so it is valid now as it was then).
 */
static kh_err device_cert(struct kh_escrow_service *s, struct kh_http_req *req, uint32_t device, uint8_t pk[static 32])
{
	uint8_t der[KH_CERT_MAX], h[KH_SHA256_LEN];
	struct cert_ok ok;
	struct kh_cert_info ci;
	int64_t now = now_of(s);
	size_t n = 0, okn = 0;
	kh_err r;

	if ((r = body_b64(req, "certificate", der, sizeof der, &n)) != KH_OK || (r = kh_sha256(der, n, h)) != KH_OK)
		return r;
	if (kh__vcache_get(s->certs, h, &ok, sizeof ok, &okn) && okn == sizeof ok && now >= ok.checked &&
	    (uint64_t)now <= ok.ci.not_after) {
		ci = ok.ci;
	} else {
		if ((r = kh_cert_check(der, n, s->id.root_pk, KH_ROLE_BUYER, KH_CERT_KEY_ED25519, (uint64_t)now, &ci)) !=
		    KH_OK)
			return r;
		memset(&ok, 0, sizeof ok);
		ok.ci = ci;
		ok.checked = now;
		kh__vcache_put(s->certs, h, &ok, sizeof ok);
	}
	if (ci.ua != device)
		return KH_ERR_CERT;
	memcpy(pk, ci.pub, 32);
	return KH_OK;
}

/* POST /v1/purchases {request, certificate} */
static kh_err h_purchase(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	uint8_t rq[KH_ESCROW_REQUEST_MAX], pk[32], n[KH_RSA_MAX_LEN], z[KH_RSA_MAX_LEN];
	uint8_t ans[KH_ESCROW_ANSWER_MAX];
	struct kh_store_escrow_purchase *p = NULL;
	struct kh_store_escrow_account acct;
	struct kh_store_escrow_hold hold;
	struct kh_escrow_request q;
	struct kh_escrow_answer an;
	struct listing_copy *c = NULL;
	struct buy_tx t;
	struct kh_store *st;
	int64_t account, now = now_of(s);
	size_t rqlen = 0, nlen = 0;
	struct kh_wr w;
	json_t *o;
	kh_err r;

	memset(&hold, 0, sizeof hold);
	if ((r = db(s, &st)) != KH_OK || (r = auth(req, st, &account)) != KH_OK ||
	    (r = idem_of(req, "purchase", account, hold.idem)) != KH_OK ||
	    (r = body_b64(req, "request", rq, sizeof rq, &rqlen)) != KH_OK ||
	    (r = kh_escrow_request_parse(rq, rqlen, NULL, &q)) != KH_OK)
		return r;
	/* a device certified by our authority, and its signature */
	if ((r = device_cert(s, req, q.device, pk)) != KH_OK || (r = kh_escrow_request_parse(rq, rqlen, pk, &q)) != KH_OK)
		return r;
	if (q.escrow != s->id.serial)
		return KH_ERR_NOTFOUND; /* a listing of another escrow */
	if (!(c = calloc(1, sizeof *c)) || !(p = calloc(1, sizeof *p))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	/* already on record (a retry): its answer as recorded */
	if ((r = kh_store_escrow_purchase_get(st, q.purchase, purchase_found, p)) == KH_OK && p->answer_len) {
		uint8_t rh[KH_SHA256_LEN];
		if ((r = kh_sha256(rq, rqlen, rh)) != KH_OK)
			goto out;
		if (!kh_ct_eq(rh, p->request_hash, sizeof rh) || p->buyer != account) {
			r = KH_ERR_EXISTS;
			goto out;
		}
		goto reply;
	}
	if (r != KH_OK && r != KH_ERR_NOTFOUND)
		goto out;
	if ((r = kh_store_escrow_listing_get(st, q.listing, listing_found, c)) != KH_OK)
		goto out;
	if ((uint64_t)c->price != q.price || strcmp(c->currency, q.currency) != 0) {
		r = KH_ERR_FORMAT; /* the device signed another price than the listing's */
		goto out;
	}
	if ((r = listing_modulus(s, c, n, &nlen)) != KH_OK)
		goto out;
	if (q.nlen != nlen) {
		r = KH_ERR_BLIND_RANGE;
		goto out;
	}
	if ((r = kh_rsa_blinded_in_range(n, nlen, q.cprime, q.nlen)) != KH_OK)
		goto out;
	/* funds first (a read): the signing process works only for a buyer who can pay */
	if ((r = kh_store_escrow_account_get(st, account, &acct)) != KH_OK)
		goto out;
	if (strcmp(acct.currency, c->currency) != 0) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if (acct.available < c->price) {
		r = KH_ERR_FUNDS;
		goto out;
	}
	if ((r = kh_secmod_decrypt(s->secmod, c->key_id, q.cprime, q.nlen, z)) != KH_OK)
		goto out;

	memcpy(hold.id, q.purchase, sizeof hold.id);
	memcpy(hold.listing, q.listing, sizeof hold.listing);
	hold.buyer = account;
	hold.device_ua = q.device;
	hold.request = rq;
	hold.request_len = rqlen;
	hold.deadline = now + c->deadline;
	memset(&an, 0, sizeof an);
	memcpy(an.purchase, q.purchase, sizeof an.purchase);
	memcpy(an.listing, q.listing, sizeof an.listing);
	an.escrow = s->id.serial;
	an.deadline = (uint64_t)hold.deadline;
	an.z = z;
	an.nlen = nlen;
	kh_wr_init(&w, ans, sizeof ans);
	if ((r = kh_sha256(rq, rqlen, hold.request_hash)) != KH_OK)
		goto out;
	memcpy(an.request_hash, hold.request_hash, sizeof an.request_hash);
	if ((r = kh_escrow_answer_sign(&an, s->id.sk, &w)) != KH_OK)
		goto out;
	t = (struct buy_tx){.hold = &hold, .answer = ans, .answer_len = w.len, .now = now, .out = p};
	if ((r = write_tx(s, buy_tx, &t)) != KH_OK)
		goto out;
	if (!t.repeat)
		kh_log_info("escrow.hold", "buyer=%lld device=%u price=%lld", (long long)account, (unsigned)q.device,
			    (long long)p->price);
reply:
	if ((r = purchase_json(p, c->found ? c->currency : NULL, &o)) == KH_OK)
		r = kh_http_reply(resp, 200, o);
out:
	kh_wipe(z, sizeof z);
	free(c);
	free(p);
	return r;
}

/* The purchase of the path, if the account is its buyer or its seller. */
static kh_err purchase_of(struct kh_escrow_service *s, struct kh_http_req *req, struct kh_store **st,
			  struct kh_store_escrow_purchase *p, int64_t *account)
{
	uint8_t id[16];
	kh_err r;

	if ((r = db(s, st)) != KH_OK || (r = auth(req, *st, account)) != KH_OK ||
	    (r = id_of(kh_http_param(req, "id"), id)) != KH_OK ||
	    (r = kh_store_escrow_purchase_get(*st, id, purchase_found, p)) != KH_OK)
		return r;
	return p->buyer == *account || p->seller == *account ? KH_OK : KH_ERR_NOTFOUND;
}

/* GET /v1/purchases/{id} */
static kh_err h_purchase_get(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	struct kh_store_escrow_purchase *p = calloc(1, sizeof *p);
	struct kh_store *st;
	int64_t account;
	json_t *o;
	kh_err r;

	if (!p)
		return KH_ERR_NOMEM;
	if ((r = purchase_of(s, req, &st, p, &account)) == KH_OK && (r = purchase_json(p, NULL, &o)) == KH_OK)
		r = kh_http_reply(resp, 200, o);
	free(p);
	return r;
}

struct settle_tx {
	const uint8_t *id;
	enum kh_store_escrow_state outcome;
	const uint8_t *notice;
	size_t notice_len;
	int64_t now;
	enum kh_store_escrow_state after;
	int repeat;
};

static kh_err settle_tx(struct kh_store *st, void *arg)
{
	struct settle_tx *t = arg;

	t->repeat = 0;
	return kh_store_escrow_purchase_settle(st, t->id, t->outcome, t->notice, t->notice_len, t->now, &t->after,
					       &t->repeat);
}

/* POST /v1/purchases/{id}/notice {notice, certificate}: the device's word settles the purchase. */
static kh_err h_notice(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	struct kh_store_escrow_purchase *p = calloc(1, sizeof *p);
	uint8_t nb[KH_ESCROW_NOTICE_LEN + 1], pk[32];
	struct kh_escrow_notice t;
	struct settle_tx x;
	struct kh_store *st;
	int64_t account;
	size_t nlen = 0;
	json_t *o;
	kh_err r;

	if (!p)
		return KH_ERR_NOMEM;
	if ((r = purchase_of(s, req, &st, p, &account)) != KH_OK)
		goto out;
	if (p->buyer != account) {
		r = KH_ERR_NOTFOUND; /* the seller reads a purchase, only its buyer settles it */
		goto out;
	}
	if ((r = body_b64(req, "notice", nb, sizeof nb, &nlen)) != KH_OK ||
	    (r = device_cert(s, req, p->device_ua, pk)) != KH_OK || (r = kh_escrow_notice_parse(nb, nlen, pk, &t)) != KH_OK)
		goto out;
	if (!kh_ct_eq(t.purchase, p->id, sizeof t.purchase) || !kh_ct_eq(t.listing, p->listing, sizeof t.listing) ||
	    t.escrow != s->id.serial || t.device != p->device_ua) {
		r = KH_ERR_AUTH; /* another purchase's notice */
		goto out;
	}
	x = (struct settle_tx){.id = p->id,
			       .outcome = t.outcome == KH_ESCROW_DELIVERED ? KH_STORE_ESCROW_DELIVERED : KH_STORE_ESCROW_FAILED,
			       .notice = nb,
			       .notice_len = nlen,
			       .now = now_of(s)};
	if ((r = write_tx(s, settle_tx, &x)) != KH_OK)
		goto out;
	if (!x.repeat)
		kh_log_info("escrow.settle", "buyer=%lld seller=%lld price=%lld outcome=%s reason=%u", (long long)p->buyer,
			    (long long)p->seller, (long long)p->price, kh_store_escrow_state_name(x.after),
			    (unsigned)t.reason);
	p->state = x.after;
	if ((r = purchase_json(p, NULL, &o)) == KH_OK && json_object_set_new(o, "repeat", json_boolean(x.repeat)) != 0) {
		json_decref(o);
		r = KH_ERR_NOMEM;
	}
	if (r == KH_OK)
		r = kh_http_reply(resp, 200, o);
out:
	free(p);
	return r;
}

/* ---------------------------------------------------------------- accounts */

static kh_err account_json(const struct kh_store_escrow_account *a, json_t **out)
{
	*out = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "name", a->name, "currency", a->currency, "available",
			 (json_int_t)a->available, "held", (json_int_t)a->held, "deposited",
			 (json_int_t)a->deposited, "withdrawn", (json_int_t)a->withdrawn);
	return *out ? KH_OK : KH_ERR_NOMEM;
}

/* GET /v1/account */
static kh_err h_account(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	struct kh_store_escrow_account a;
	struct kh_store *st;
	int64_t account;
	json_t *o;
	kh_err r;

	if ((r = db(s, &st)) != KH_OK || (r = auth(req, st, &account)) != KH_OK ||
	    (r = kh_store_escrow_account_get(st, account, &a)) != KH_OK || (r = account_json(&a, &o)) != KH_OK)
		return r;
	return kh_http_reply(resp, 200, o);
}

/* POST /v1/withdrawals {amount}: paid out of the account's available money. */
static kh_err h_withdraw(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_escrow_service *s = arg;
	struct kh_store_escrow_account a;
	uint8_t idem[16];
	struct kh_store *st;
	int64_t account, amount, available;
	json_t *o;
	kh_err r;

	if ((r = db(s, &st)) != KH_OK || (r = auth(req, st, &account)) != KH_OK ||
	    (r = idem_of(req, "withdrawal", account, idem)) != KH_OK ||
	    (r = body_int(req, "amount", 1, KH_STORE_ESCROW_AMOUNT_MAX, -1, &amount)) != KH_OK ||
	    (r = kh_store_escrow_withdraw(st, account, amount, idem, now_of(s), &available)) != KH_OK ||
	    (r = kh_store_escrow_account_get(st, account, &a)) != KH_OK)
		return r;
	kh_log_info("escrow.withdraw", "account=%lld amount=%lld", (long long)account, (long long)amount);
	if ((r = account_json(&a, &o)) != KH_OK)
		return r;
	return kh_http_reply(resp, 200, o);
}

/* ---------------------------------------------------------------- the sweeper */

kh_err kh_escrow_service_sweep(struct kh_escrow_service *s, unsigned *count)
{
	struct kh_store *st;
	unsigned n = 0, total = 0;
	kh_err r;

	if ((r = db(s, &st)) != KH_OK)
		return r;
	do {
		if ((r = kh_store_escrow_sweep(st, now_of(s), KH_STORE_ESCROW_SWEEP_MAX, &n)) != KH_OK)
			return r;
		total += n;
	} while (n == KH_STORE_ESCROW_SWEEP_MAX);
	if (total)
		kh_log_info("escrow.sweep", "posted=%u", total);
	if (count)
		*count = total;
	return KH_OK;
}

static void *sweeper(void *arg)
{
	struct kh_escrow_service *s = arg;
	struct timespec until;

	pthread_mutex_lock(&s->sweeper.mu);
	while (!s->sweeper.stop) {
		pthread_mutex_unlock(&s->sweeper.mu);
		if (kh_escrow_service_sweep(s, NULL) != KH_OK)
			kh_log_warn("escrow.sweep_failed", "msg=\"the sweep will run again\"");
		pthread_mutex_lock(&s->sweeper.mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += s->sweep_every;
		while (!s->sweeper.stop && pthread_cond_timedwait(&s->sweeper.cv, &s->sweeper.mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&s->sweeper.mu);
	return NULL;
}

kh_err kh_escrow_service_start_sweeper(struct kh_escrow_service *s)
{
	if (!s || !s->sweeper.sync_ok || s->sweeper.started)
		return KH_ERR_INVAL;
	if (pthread_create(&s->sweeper.th, NULL, sweeper, s) != 0)
		return KH_ERR_NOMEM;
	s->sweeper.started = 1;
	return KH_OK;
}

/* ---------------------------------------------------------------- the service */

kh_err kh_escrow_service_new(const struct kh_escrow_service_config *cfg, struct kh_escrow_service **out,
			     const char **what)
{
	static const char dbw[] = "database", smw[] = "signing process socket";
	struct kh_escrow_service *s;
	struct kh_store *st;
	kh_err r;

	if (what)
		*what = NULL;
	if (!cfg || !cfg->db || !cfg->dir || !cfg->secmod || !out)
		return KH_ERR_INVAL;
	if ((cfg->key_bits && !kh_secmod_bits_ok(cfg->key_bits)) || cfg->deadline > KH_ESCROW_DEADLINE_MAX ||
	    cfg->sweep_every > 86400)
		return KH_ERR_INVAL;
	if (!(s = calloc(1, sizeof *s)))
		return KH_ERR_NOMEM;
	s->key_bits = cfg->key_bits ? cfg->key_bits : KH_SECMOD_BITS_DEFAULT;
	s->deadline = cfg->deadline ? cfg->deadline : KH_ESCROW_DEADLINE;
	s->sweep_every = cfg->sweep_every ? cfg->sweep_every : KH_ESCROW_SWEEP_EVERY;
	s->clock = cfg->clock;
	s->clock_ctx = cfg->clock_ctx;
	if (pthread_mutex_init(&s->sweeper.mu, NULL) != 0) {
		free(s);
		return KH_ERR_NOMEM;
	}
	if (pthread_cond_init(&s->sweeper.cv, NULL) != 0) {
		pthread_mutex_destroy(&s->sweeper.mu);
		free(s);
		return KH_ERR_NOMEM;
	}
	s->sweeper.sync_ok = 1;
	if ((r = kh__vcache_new(CERTS_CACHED, sizeof(struct cert_ok), &s->certs)) != KH_OK ||
	    (r = kh__vcache_new(MODULI_CACHED, KH_RSA_MAX_LEN, &s->moduli)) != KH_OK)
		goto fail;
	if ((r = kh_identity_load(cfg->dir, KH_ROLE_ESCROW, &s->id)) != KH_OK) {
		if (what)
			*what = cfg->dir;
		goto fail;
	}
	if ((r = kh_secmod_client_open(cfg->secmod, &s->secmod)) != KH_OK) {
		if (what)
			*what = smw;
		goto fail;
	}
	/* The first connection now, on this thread: a database that cannot open fails the start. */
	if ((r = kh__pool_init(&s->pool, cfg->db, cfg->store_sync_normal)) != KH_OK || (r = db(s, &st)) != KH_OK) {
		if (what)
			*what = dbw;
		goto fail;
	}
	{
		struct kh_store_opts opts = {.sync_normal = cfg->store_sync_normal};
		if ((r = kh_store_group_new(cfg->db, &opts, 0, &s->writer)) != KH_OK) {
			if (what)
				*what = dbw;
			goto fail;
		}
	}
	*out = s;
	return KH_OK;
fail:
	kh_escrow_service_free(s);
	return r;
}

kh_err kh_escrow_service_add_routes(struct kh_escrow_service *s, struct kh_http *h)
{
	const struct kh_http_route routes[] = {
		{"GET", "/v1/account", h_account, s, 0},
		{"POST", "/v1/withdrawals", h_withdraw, s, 0},
		{"POST", "/v1/listings", h_listing_new, s, 0},
		{"GET", "/v1/listings/{id}", h_listing_get, s, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/purchases", h_purchase, s, 0},
		{"GET", "/v1/purchases/{id}", h_purchase_get, s, 0},
		{"POST", "/v1/purchases/{id}/notice", h_notice, s, 0},
	};

	if (!s || !h)
		return KH_ERR_INVAL;
	return kh_http_add_routes(h, routes, sizeof routes / sizeof routes[0]);
}

void kh_escrow_service_free(struct kh_escrow_service *s)
{
	if (!s)
		return;
	if (s->sweeper.started) {
		pthread_mutex_lock(&s->sweeper.mu);
		s->sweeper.stop = 1;
		pthread_cond_broadcast(&s->sweeper.cv);
		pthread_mutex_unlock(&s->sweeper.mu);
		pthread_join(s->sweeper.th, NULL);
	}
	if (s->sweeper.sync_ok) {
		pthread_cond_destroy(&s->sweeper.cv);
		pthread_mutex_destroy(&s->sweeper.mu);
	}
	kh_store_group_free(s->writer);
	kh__pool_free(&s->pool);
	kh_secmod_client_close(s->secmod);
	kh__vcache_free(s->certs);
	kh__vcache_free(s->moduli);
	kh_wipe(s, sizeof *s);
	free(s);
}
