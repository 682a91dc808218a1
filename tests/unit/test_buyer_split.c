/*
 * The buyer device's split-key commands (src/module/applet_buy.c, docs/protocols/escrow.md;
 * include/keyhole/escrow.h and shamir.h), driven in APDUs only. This test plays the seller, who
 * splits K by Shamir into the device's share (granted: sealed to the device's pairing key for the
 * content's header) and one share per escrow (c_i = RSA-OAEP(listing key i, share record i,
 * label = listing id i)), and the escrows, whose answers BUY FINISH opens to a share it keeps in
 * the purchase's slot. BUY COMBINE then settles every purchase it names at once.
 *
 * What is asserted is what money depends on: the state of every slot after (BUY LIST, byte for
 * byte where nothing may change), each notice's outcome and reason (delivered pays the seller,
 * failed refunds the buyer), and whether a licence came that opens the content. A refusal settles
 * nothing and leaves the shares combinable; shares that do not fit, or a key that is not the
 * content's, fail every purchase named; a share slot survives a power cycle, and a buyer section
 * of the version before shares (written here by hand, sealed under the module's root key) loads.
 */
#include <stdlib.h>
#include <string.h>

#include "buyerutil.h"
#include "keyhole/device.h"
#include "keyhole/escrow.h"
#include "keyhole/file.h"
#include "keyhole/module.h"
#include "keyhole/shamir.h"
#include "testutil.h"
#include "world.h"

#define NKEYS 4 /* listing keys, one per escrow of a split */
#define SLOTS 16
#define LIST_MAX (SLOTS * (3 + KH_ESCROW_SLOT_LEN))

struct sx {
	struct world *w;
	uint8_t esk[32], epk[32];
	struct listing_key key[NKEYS];
	uint8_t pt[PT_LEN];
	struct mod b2;       /* another buyer device */
	uint8_t b2_pair[32]; /* its pairing key */
	/* per test: the device under test, fresh */
	struct mod b;
	uint8_t sign_pk[32], pair_pk[32];
	uint8_t ans[KH_ESCROW_ANSWER_MAX]; /* the last escrow answer buy_answered() made */
	size_t anslen;
};

/* A split of K among the device (share 1) and n - 1 escrows (share i + 2 for escrow i). */
struct split {
	unsigned t, n;
	uint8_t k[KH_SHAMIR_LEN];            /* the content's key */
	struct offer o[NKEYS];               /* escrow i's offer: its listing, c_i, the content */
	struct kh_shamir_rec rec[NKEYS];     /* escrow i's share record */
	struct kh_shamir_rec dev;            /* the device's, naming it */
	uint8_t grant[KH_SHAMIR_SEALED_LEN]; /* dev sealed to the device for the content */
};

/* A purchase the device holds, and the offer it was bought on. */
struct bought {
	uint8_t pid[KH_ESCROW_ID_LEN];
	const struct offer *o;
};

/* What BUY COMBINE answered: the notices in order, then the licence. */
struct combined {
	struct kh_escrow_notice n[KH_SHAMIR_MAX_N];
	size_t nn;
	uint8_t licence[KH_ESCROW_LICENCE_LEN];
	int has_licence;
};

struct list {
	uint8_t b[LIST_MAX];
	size_t n;
};

/* ---- the seller ---- */

/* A device share record sealed to pk for the header whose hash is hh, into out: a grant. */
static void seal_dev(const struct kh_shamir_rec *rec, const uint8_t pk[static 32], const uint8_t hh[static 32],
		     uint8_t out[static KH_SHAMIR_SEALED_LEN])
{
	assert_int_equal(kh_shamir_share_seal(pk, hh, KH_SHA256_LEN, rec, out), KH_OK);
}

/* A T-of-N split for the device under test: the content sealed under kc (a fresh K below P when
 * NULL), the shares made of ks (kc when NULL); listings at escrows ESCROW_UA + i on key i. */
static struct split *make_split(struct sx *x, unsigned t, unsigned n, const uint8_t *kc, const uint8_t *ks)
{
	struct split *s = calloc(1, sizeof *s);
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N];
	uint8_t m[KH_SHAMIR_REC_LEN];

	assert_non_null(s);
	assert_true(n >= 2 && n - 1 <= NKEYS);
	s->t = t;
	s->n = n;
	if (kc)
		memcpy(s->k, kc, sizeof s->k);
	else
		assert_int_equal(kh_shamir_random_secret(s->k), KH_OK);
	assert_int_equal(kh_shamir_split(ks ? ks : s->k, t, n, sh), KH_OK);
	for (unsigned i = 0; i + 1 < n; i++) {
		struct kh_shamir_rec *r = &s->rec[i];
		offer_listing(&s->o[i], x->esk, ESCROW_UA + i, &x->key[i], 500 + i);
		offer_content(&s->o[i], x->pt, s->k);
		r->t = (uint8_t)t;
		r->n = (uint8_t)n;
		r->index = (uint8_t)(i + 2);
		r->s = sh[i + 1];
		memcpy(r->id, s->o[i].id, sizeof r->id);
		assert_int_equal(kh_shamir_rec_encode(r, m), KH_OK);
		offer_c(&s->o[i], &x->key[i], m, sizeof m);
	}
	s->dev.t = (uint8_t)t;
	s->dev.n = (uint8_t)n;
	s->dev.index = 1;
	s->dev.s = sh[0];
	kh_escrow_device_share_id(x->b.ua, s->dev.id);
	seal_dev(&s->dev, x->pair_pk, s->o[0].h.hash, s->grant);
	kh_wipe(sh, sizeof sh);
	return s;
}

/* ---- the device ---- */

static void list_of(struct kh_transport *t, struct list *l)
{
	size_t dl = 0;

	assert_int_equal(cmd(t, KH_INS_BUY_LIST, NULL, 0, &dl), 0x9000);
	assert_true(dl <= sizeof l->b);
	memcpy(l->b, rbuf, dl);
	l->n = dl;
}

/* BUY LIST's slot of pid: its state, *reason its reason; 0 when the device holds no such slot. */
static uint8_t slot_state(struct kh_transport *t, const uint8_t *pid, uint8_t *reason)
{
	struct list l;

	list_of(t, &l);
	for (size_t i = 0; i < l.n; i += 3 + KH_ESCROW_SLOT_LEN) {
		assert_int_equal(l.b[i], KH_ESCROW_T_SLOT);
		assert_int_equal((size_t)l.b[i + 1] << 8 | l.b[i + 2], KH_ESCROW_SLOT_LEN);
		if (memcmp(l.b + i + 5, pid, KH_ESCROW_ID_LEN) == 0) {
			*reason = l.b[i + 4];
			return l.b[i + 3];
		}
	}
	return 0;
}

/* BUY START on o and BUY FINISH with the escrow's answer (key k): the status word and the request's
 * purchase id into p; the answer kept in x->ans. */
static uint16_t buy_answered(struct sx *x, const struct offer *o, const struct listing_key *k, struct bought *p,
			     size_t *dl)
{
	uint8_t req[KH_ESCROW_REQUEST_MAX];
	size_t reqlen = 0;
	struct kh_escrow_request q;

	assert_int_equal(buy_start(&x->b.t, o, req, &reqlen), 0x9000);
	assert_int_equal(kh_escrow_request_parse(req, reqlen, x->sign_pk, &q), KH_OK);
	memcpy(p->pid, q.purchase, sizeof p->pid);
	p->o = o;
	x->anslen = escrow_answer(x->esk, x->sign_pk, req, reqlen, k, 1, 0, x->ans);
	return buy_finish(&x->b.t, o, x->ans, x->anslen, dl);
}

/* Buy escrow i's share of s: BUY FINISH answers the slot alone, holding a share, no notice. */
static void buy_share(struct sx *x, const struct split *s, unsigned i, struct bought *p)
{
	size_t dl = 0;
	uint8_t reason = 0xFF;

	assert_int_equal(buy_answered(x, &s->o[i], &x->key[i], p, &dl), 0x9000);
	assert_int_equal(dl, 3 + KH_ESCROW_SLOT_LEN);
	assert_int_equal(rbuf[0], KH_ESCROW_T_SLOT);
	assert_int_equal(rbuf[3], KH_ESCROW_SLOT_SHARE);
	assert_int_equal(rbuf[4], KH_ESCROW_R_NONE);
	assert_memory_equal(rbuf + 5, p->pid, KH_ESCROW_ID_LEN);
	assert_memory_equal(rbuf + 5 + KH_ESCROW_ID_LEN, s->o[i].id, KH_ESCROW_ID_LEN);
	assert_int_equal(kh_get_be32(rbuf + 5 + 2 * KH_ESCROW_ID_LEN), ESCROW_UA + i);
	/* the share is in no answer: neither y nor the record */
	assert_null(memmem(rbuf, dl, s->rec[i].s.y, KH_SHAMIR_LEN));
	assert_int_equal(slot_state(&x->b.t, p->pid, &reason), KH_ESCROW_SLOT_SHARE);
}

/* BUY COMBINE on t: header of o, grant (glen bytes), purchases p[0..np-1]. */
static uint16_t combine(struct kh_transport *t, const struct offer *o, const uint8_t *grant, size_t glen,
			const struct bought *const *p, size_t np, size_t *dl)
{
	uint8_t d[KH_APDU_MAX_DATA], ids[KH_SHAMIR_MAX_N * KH_ESCROW_ID_LEN];
	size_t n = 0;

	assert_true(np <= KH_SHAMIR_MAX_N);
	for (size_t i = 0; i < np; i++)
		memcpy(ids + i * KH_ESCROW_ID_LEN, p[i]->pid, KH_ESCROW_ID_LEN);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, o->header, o->hlen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_GRANT, grant, glen);
	n = tlv(d, sizeof d, n, KH_ESCROW_T_PURCHASES, ids, np * KH_ESCROW_ID_LEN);
	return cmd(t, KH_INS_BUY_COMBINE, d, n, dl);
}

/* BUY COMBINE's answer in rbuf: notices, each signed by the device, then at most one licence. */
static void read_combined(struct sx *x, size_t dl, struct combined *c)
{
	struct kh_rd rd;
	struct kh_tlv t;
	int k;

	memset(c, 0, sizeof *c);
	kh_rd_init(&rd, rbuf, dl);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		assert_false(c->has_licence); /* the licence comes last */
		if (t.tag == KH_ESCROW_T_NOTICE) {
			assert_int_equal(t.len, KH_ESCROW_NOTICE_LEN);
			assert_true(c->nn < KH_SHAMIR_MAX_N);
			assert_int_equal(kh_escrow_notice_parse(t.v, t.len, x->sign_pk, &c->n[c->nn++]), KH_OK);
		} else {
			assert_int_equal(t.tag, KH_ESCROW_T_LICENCE);
			assert_int_equal(t.len, KH_ESCROW_LICENCE_LEN);
			memcpy(c->licence, t.v, t.len);
			c->has_licence = 1;
		}
	}
	assert_int_equal(k, 0);
}

/* A combine that settled: one notice per purchase named, in order, each with outcome and reason,
 * a licence exactly when delivered; and BUY LIST says the same of every slot. */
static void expect_settled(struct sx *x, size_t dl, const struct bought *const *p, size_t np, uint8_t reason,
			   struct combined *c)
{
	uint8_t state = reason == KH_ESCROW_R_NONE ? KH_ESCROW_SLOT_DELIVERED : KH_ESCROW_SLOT_FAILED, r = 0xFF;

	read_combined(x, dl, c);
	assert_int_equal(c->nn, np);
	for (size_t i = 0; i < np; i++) {
		assert_memory_equal(c->n[i].purchase, p[i]->pid, KH_ESCROW_ID_LEN);
		assert_memory_equal(c->n[i].listing, p[i]->o->id, KH_ESCROW_ID_LEN);
		assert_int_equal(c->n[i].device, x->b.ua);
		assert_int_equal(c->n[i].outcome, reason == KH_ESCROW_R_NONE ? KH_ESCROW_DELIVERED : KH_ESCROW_FAILED);
		assert_int_equal(c->n[i].reason, reason);
	}
	assert_int_equal(c->has_licence, reason == KH_ESCROW_R_NONE);
	for (size_t i = 0; i < np; i++) {
		assert_int_equal(slot_state(&x->b.t, p[i]->pid, &r), state);
		assert_int_equal(r, reason);
	}
}

/* A command's answer in rbuf (dl bytes) that is pid's notice: failed with reason, no licence, and
 * BUY LIST says the same. */
static void expect_failed(struct sx *x, size_t dl, const uint8_t *pid, uint8_t reason, struct settled *st)
{
	uint8_t r = 0xFF;

	read_settled(x->sign_pk, dl, st);
	assert_memory_equal(st->notice.purchase, pid, KH_ESCROW_ID_LEN);
	assert_int_equal(st->notice.outcome, KH_ESCROW_FAILED);
	assert_int_equal(st->notice.reason, reason);
	assert_false(st->has_licence);
	assert_int_equal(slot_state(&x->b.t, pid, &r), KH_ESCROW_SLOT_FAILED);
	assert_int_equal(r, reason);
}

/* Combine p with s's grant and expect every purchase settled with reason. */
static void combine_settles(struct sx *x, const struct split *s, const struct bought *const *p, size_t np,
			    uint8_t reason, struct combined *c)
{
	size_t dl = 0;

	assert_int_equal(combine(&x->b.t, &s->o[0], s->grant, sizeof s->grant, p, np, &dl), 0x9000);
	/* K is in no answer, delivered or not */
	assert_null(memmem(rbuf, dl, s->k, sizeof s->k));
	expect_settled(x, dl, p, np, reason, c);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
	struct sx *x = calloc(1, sizeof *x);
	assert_non_null(x);
	world_setup((void **)&x->w);
	assert_int_equal(kh_ed25519_keygen(x->esk, x->epk), KH_OK);
	for (size_t i = 0; i < NKEYS; i++)
		make_key(&x->key[i], 2048);
	assert_int_equal(kh_random(x->pt, sizeof x->pt), KH_OK);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b2);
	device_key(&x->b2.t, x->w->root_pk, 1, x->b2_pair);
	*state = x;
	return 0;
}

static int group_teardown(void **state)
{
	struct sx *x = *state;
	for (size_t i = 0; i < NKEYS; i++)
		EVP_PKEY_free(x->key[i].pk);
	kh_softmod_free(x->b2.sm);
	world_teardown((void **)&x->w);
	free(x);
	return 0;
}

/* Each test on a buyer device of its own, fresh. */
static int dev_setup(void **state)
{
	struct sx *x = *state;
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->b);
	device_key(&x->b.t, x->w->root_pk, 0, x->sign_pk);
	device_key(&x->b.t, x->w->root_pk, 1, x->pair_pk);
	return 0;
}

static int dev_teardown(void **state)
{
	struct sx *x = *state;
	kh_softmod_free(x->b.sm);
	x->b.sm = NULL;
	return 0;
}

/* ---- the tests ---- */

/* Device and two of three escrows (T = 3, N = 4; escrow 1 never asked): K recovered, every
 * purchase delivered, a licence that opens the content. */
static void test_combine(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL);
	struct bought a, c;
	const struct bought *p[] = {&a, &c};
	struct combined cb;
	struct settled again;
	size_t dl = 0;
	uint16_t osw;

	buy_share(x, s, 0, &a);
	/* a share slot has no notice yet, and the escrow's answer again is refused */
	assert_int_equal(by_purchase(&x->b.t, KH_INS_BUY_NOTICE, a.pid, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	assert_int_equal(buy_finish(&x->b.t, &s->o[0], x->ans, x->anslen, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	buy_share(x, s, 2, &c);

	combine_settles(x, s, p, 2, KH_ESCROW_R_NONE, &cb);
	assert_int_equal(cb.n[0].escrow, ESCROW_UA);
	assert_int_equal(cb.n[1].escrow, ESCROW_UA + 2);
	assert_true(read_content(x->pt, &x->b.t, &s->o[0], cb.licence, &osw));
	/* each purchase's notice again, with a licence that opens the content too */
	assert_int_equal(by_purchase(&x->b.t, KH_INS_BUY_NOTICE, c.pid, &dl), 0x9000);
	read_settled(x->sign_pk, dl, &again);
	assert_memory_equal(&again.notice, &cb.n[1], sizeof again.notice);
	assert_true(again.has_licence);
	assert_true(read_content(x->pt, &x->b.t, &s->o[0], again.licence, &osw));
	/* settled: combined again, refused; and a delivered purchase cannot be cancelled */
	assert_int_equal(combine(&x->b.t, &s->o[0], s->grant, sizeof s->grant, p, 2, &dl),
			 kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	assert_int_equal(by_purchase(&x->b.t, KH_INS_BUY_CANCEL, a.pid, &dl), kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	/* the licence is this device's alone */
	assert_false(read_content(x->pt, &x->b2.t, &s->o[0], cb.licence, &osw));
	assert_int_equal(osw, kh_err_to_sw(KH_ERR_LICENCE));
	free(s);
}

/* One refusal of BUY COMBINE: its status word, and BUY LIST byte for byte as before. */
struct refusal {
	const char *what;
	const struct offer *header;
	const uint8_t *grant;
	size_t glen;
	const struct bought *p[3];
	size_t np;
	kh_err want;
};

/*
 * Every refusal settles nothing: the purchases named stay shares, the others as they were, and
 * the same shares combine afterwards.
 */
static void test_refusals(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL), *other = make_split(x, 3, 4, NULL, NULL);
	uint8_t to_b2[KH_SHAMIR_SEALED_LEN], other_hdr[KH_SHAMIR_SEALED_LEN], flipped[KH_SHAMIR_SEALED_LEN];
	uint8_t names_b2[KH_SHAMIR_SEALED_LEN], req[KH_ESCROW_REQUEST_MAX];
	struct kh_escrow_request q;
	struct kh_shamir_rec rec;
	struct bought a0, a1, b0, pend, ghost;
	struct list before, after;
	struct combined cb;
	size_t reqlen = 0, dl = 0;
	uint64_t stored;

	buy_share(x, s, 0, &a0);
	buy_share(x, s, 1, &a1);
	buy_share(x, other, 0, &b0);
	/* a purchase pending: started, never answered */
	assert_int_equal(buy_start(&x->b.t, &s->o[2], req, &reqlen), 0x9000);
	assert_int_equal(kh_escrow_request_parse(req, reqlen, NULL, &q), KH_OK);
	memcpy(pend.pid, q.purchase, sizeof pend.pid);
	pend.o = &s->o[2];
	assert_int_equal(kh_random(ghost.pid, sizeof ghost.pid), KH_OK);
	ghost.o = &s->o[1];

	/* grants that must not open: to another device, for another content, a byte flipped, and one
	 * sealed to this device but made for another */
	seal_dev(&s->dev, x->b2_pair, s->o[0].h.hash, to_b2);
	seal_dev(&s->dev, x->pair_pk, other->o[0].h.hash, other_hdr);
	memcpy(flipped, s->grant, sizeof flipped);
	flipped[KH_SHAMIR_SEALED_LEN / 2] ^= 0x01;
	rec = s->dev;
	kh_escrow_device_share_id(x->b2.ua, rec.id);
	seal_dev(&rec, x->pair_pk, s->o[0].h.hash, names_b2);

	const struct refusal cases[] = {
		{"no such purchase", &s->o[0], s->grant, sizeof s->grant, {&a0, &ghost}, 2, KH_ERR_NOTFOUND},
		{"a purchase pending", &s->o[0], s->grant, sizeof s->grant, {&a0, &pend}, 2, KH_ERR_PURCHASE_STATE},
		{"a share of other content", &s->o[0], s->grant, sizeof s->grant, {&a0, &b0}, 2, KH_ERR_AUTH},
		{"the shares under another header", &other->o[0], s->grant, sizeof s->grant, {&a0, &a1}, 2, KH_ERR_AUTH},
		{"a purchase named twice", &s->o[0], s->grant, sizeof s->grant, {&a0, &a1, &a0}, 3, KH_ERR_FORMAT},
		{"a grant to another device", &s->o[0], to_b2, sizeof to_b2, {&a0, &a1}, 2, KH_ERR_AUTH},
		{"a grant for another header", &s->o[0], other_hdr, sizeof other_hdr, {&a0, &a1}, 2, KH_ERR_AUTH},
		{"a grant with a byte flipped", &s->o[0], flipped, sizeof flipped, {&a0, &a1}, 2, KH_ERR_AUTH},
		{"a grant cut short", &s->o[0], s->grant, sizeof s->grant - 1, {&a0, &a1}, 2, KH_ERR_TRUNCATED},
		{"a grant naming another device", &s->o[0], names_b2, sizeof names_b2, {&a0, &a1}, 2, KH_ERR_AUTH},
		{"too few shares", &s->o[0], s->grant, sizeof s->grant, {&a0}, 1, KH_ERR_SHARES},
		{"no purchase", &s->o[0], s->grant, sizeof s->grant, {NULL}, 0, KH_ERR_FORMAT},
	};

	list_of(&x->b.t, &before);
	assert_int_equal(before.n, 4 * (3 + KH_ESCROW_SLOT_LEN));
	stored = kh_module_counter(kh_softmod_module(x->b.sm));
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct refusal *r = &cases[i];
		print_message("refusal: %s\n", r->what);
		assert_int_equal(combine(&x->b.t, r->header, r->grant, r->glen, r->p, r->np, &dl), kh_err_to_sw(r->want));
		assert_int_equal(dl, 0);
		list_of(&x->b.t, &after);
		assert_int_equal(after.n, before.n);
		assert_memory_equal(after.b, before.b, before.n);
		/* and nothing was stored */
		assert_int_equal(kh_module_counter(kh_softmod_module(x->b.sm)), stored);
	}
	/* purchases that are not whole ids */
	{
		uint8_t d[KH_APDU_MAX_DATA];
		size_t n = 0;
		n = tlv(d, sizeof d, n, KH_ESCROW_T_HEADER, s->o[0].header, s->o[0].hlen);
		n = tlv(d, sizeof d, n, KH_ESCROW_T_GRANT, s->grant, sizeof s->grant);
		n = tlv(d, sizeof d, n, KH_ESCROW_T_PURCHASES, a0.pid, KH_ESCROW_ID_LEN - 1);
		assert_int_equal(cmd(&x->b.t, KH_INS_BUY_COMBINE, d, n, &dl), kh_err_to_sw(KH_ERR_FORMAT));
		list_of(&x->b.t, &after);
		assert_memory_equal(after.b, before.b, before.n);
	}

	/* the same shares, combined as they should be: delivered; the others untouched */
	{
		const struct bought *p[] = {&a1, &a0};
		uint8_t r = 0xFF;
		combine_settles(x, s, p, 2, KH_ESCROW_R_NONE, &cb);
		assert_int_equal(slot_state(&x->b.t, b0.pid, &r), KH_ESCROW_SLOT_SHARE);
		assert_int_equal(slot_state(&x->b.t, pend.pid, &r), KH_ESCROW_SLOT_PENDING);
	}
	free(s);
	free(other);
}

/* Escrow i's share of a and escrow j's of b bought, combined with g's grant: both purchases
 * settled with reason. */
static void two_settle(struct sx *x, const struct split *g, const struct split *a, unsigned i, const struct split *b,
		       unsigned j, uint8_t reason)
{
	struct bought p0, p1;
	const struct bought *p[] = {&p0, &p1};
	struct combined cb;

	buy_share(x, a, i, &p0);
	buy_share(x, b, j, &p1);
	combine_settles(x, g, p, 2, reason, &cb);
}

/*
 * Shares the device cannot make the content's key of: every purchase named fails, no licence.
 * Shares of two splits of the same K whose T or N differ do not fit (reason shares); shares of a
 * split of another key, or of two splits of one shape (exactly T shares cannot tell), give a key
 * the content does not commit to (reason commit).
 */
static void test_failed_combine(void **state)
{
	struct sx *x = *state;
	uint8_t k2[KH_SHAMIR_LEN];
	struct split *sp[5];

	assert_int_equal(kh_shamir_random_secret(k2), KH_OK);
	sp[0] = make_split(x, 3, 4, NULL, NULL);
	sp[1] = make_split(x, 3, 5, sp[0]->k, NULL); /* N differs */
	sp[2] = make_split(x, 2, 4, sp[0]->k, NULL); /* T differs */
	sp[3] = make_split(x, 3, 4, sp[0]->k, NULL); /* the same shape, another polynomial */
	sp[4] = make_split(x, 3, 4, NULL, k2);       /* the seller split another content's key */

	/* device and escrow 0 of the 3-of-4 split, escrow 1 of the 3-of-5 one */
	two_settle(x, sp[0], sp[0], 0, sp[1], 1, KH_ESCROW_R_SHARES);
	/* the 2-of-4 split's grant and escrow 1 would be enough; a share of the 3-of-4 split with them
	 * fails both */
	two_settle(x, sp[2], sp[2], 1, sp[0], 2, KH_ESCROW_R_SHARES);
	two_settle(x, sp[0], sp[0], 0, sp[3], 1, KH_ESCROW_R_COMMIT);
	two_settle(x, sp[4], sp[4], 0, sp[4], 1, KH_ESCROW_R_COMMIT);
	for (size_t i = 0; i < 5; i++)
		free(sp[i]);
}

/* BUY FINISH of an 88-byte plaintext that is not a share of this listing: failed, reason key. */
static void test_share_of_another_listing(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL);
	uint8_t m[KH_SHAMIR_REC_LEN];
	struct kh_shamir_rec rec = s->rec[0];
	struct offer *o = calloc(1, sizeof *o);
	struct settled st;
	struct bought p;
	size_t dl = 0;

	assert_non_null(o);
	/* escrow 0's share, but naming escrow 1's listing */
	*o = s->o[0];
	memcpy(rec.id, s->o[1].id, sizeof rec.id);
	assert_int_equal(kh_shamir_rec_encode(&rec, m), KH_OK);
	offer_c(o, &x->key[0], m, sizeof m);
	assert_int_equal(buy_answered(x, o, &x->key[0], &p, &dl), 0x9000);
	expect_failed(x, dl, p.pid, KH_ESCROW_R_KEY, &st);

	/* 88 bytes that are no share record at all */
	*o = s->o[0];
	assert_int_equal(kh_shamir_rec_encode(&s->rec[0], m), KH_OK);
	m[0] ^= 0x01;
	offer_c(o, &x->key[0], m, sizeof m);
	assert_int_equal(buy_answered(x, o, &x->key[0], &p, &dl), 0x9000);
	expect_failed(x, dl, p.pid, KH_ESCROW_R_KEY, &st);
	free(o);
	free(s);
}

/* A share slot may be given up (no content was shown): failed, cancelled; combined later, refused
 * with nothing changed. */
static void test_cancel_share(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL);
	struct bought a0, a1;
	const struct bought *p[] = {&a0, &a1};
	struct list before, after;
	struct settled st, again;
	size_t dl = 0;
	uint8_t r = 0xFF;

	buy_share(x, s, 0, &a0);
	buy_share(x, s, 1, &a1);
	assert_int_equal(by_purchase(&x->b.t, KH_INS_BUY_CANCEL, a0.pid, &dl), 0x9000);
	expect_failed(x, dl, a0.pid, KH_ESCROW_R_CANCELLED, &st);
	/* cancelled again: the same notice */
	assert_int_equal(by_purchase(&x->b.t, KH_INS_BUY_CANCEL, a0.pid, &dl), 0x9000);
	read_settled(x->sign_pk, dl, &again);
	assert_memory_equal(&again.notice, &st.notice, sizeof st.notice);

	list_of(&x->b.t, &before);
	assert_int_equal(combine(&x->b.t, &s->o[0], s->grant, sizeof s->grant, p, 2, &dl),
			 kh_err_to_sw(KH_ERR_PURCHASE_STATE));
	list_of(&x->b.t, &after);
	assert_int_equal(after.n, before.n);
	assert_memory_equal(after.b, before.b, before.n);
	assert_int_equal(slot_state(&x->b.t, a1.pid, &r), KH_ESCROW_SLOT_SHARE);
	free(s);
}

/* A share slot survives a power cycle (the module saved, then opened from its file) and combines. */
static void test_power_cycle(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL);
	char *card = path_in(x->w->dir, "split-cycle.card");
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct bought a0, a2;
	const struct bought *p[] = {&a0, &a2};
	struct list before, after;
	struct combined cb;
	size_t dl = 0;
	uint16_t osw;

	buy_share(x, s, 0, &a0);
	buy_share(x, s, 2, &a2);
	list_of(&x->b.t, &before);
	assert_int_equal(kh_softmod_save(x->b.sm, card, NULL), KH_OK);
	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(sm));
	list_of(&t, &after);
	assert_int_equal(after.n, before.n);
	assert_memory_equal(after.b, before.b, before.n);
	assert_int_equal(combine(&t, &s->o[0], s->grant, sizeof s->grant, p, 2, &dl), 0x9000);
	read_combined(x, dl, &cb);
	assert_int_equal(cb.nn, 2);
	assert_int_equal(cb.n[0].outcome, KH_ESCROW_DELIVERED);
	assert_int_equal(cb.n[1].outcome, KH_ESCROW_DELIVERED);
	assert_true(cb.has_licence);
	assert_true(read_content(x->pt, &t, &s->o[0], cb.licence, &osw));
	kh_softmod_free(sm);
	free(card);
	free(s);
}

/* Shares hold their slots until combined: 16 of them, and the next purchase is refused until some
 * are settled. */
static void test_full_of_shares(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 4, NULL, NULL);
	struct bought p[SLOTS];
	struct list l;
	uint8_t req[KH_ESCROW_REQUEST_MAX];
	size_t reqlen = 0;

	for (size_t i = 0; i < SLOTS; i++)
		buy_share(x, s, i < 2 ? (unsigned)i : 2, &p[i]);
	list_of(&x->b.t, &l);
	assert_int_equal(l.n, SLOTS * (3 + KH_ESCROW_SLOT_LEN));
	for (size_t i = 0; i < l.n; i += 3 + KH_ESCROW_SLOT_LEN)
		assert_int_equal(l.b[i + 3], KH_ESCROW_SLOT_SHARE);
	assert_int_equal(buy_start(&x->b.t, &s->o[0], req, &reqlen), kh_err_to_sw(KH_ERR_PURCHASES_FULL));
	/* two of them combined make room */
	{
		const struct bought *q[] = {&p[0], &p[1]};
		struct combined cb;
		combine_settles(x, s, q, 2, KH_ESCROW_R_NONE, &cb);
	}
	assert_int_equal(buy_start(&x->b.t, &s->o[0], req, &reqlen), 0x9000);
	free(s);
}

/* More than T shares: all on the polynomial, delivered; one off it, or one repeated, fails them
 * all (shares). */
static void test_more_than_t(void **state)
{
	struct sx *x = *state;
	struct split *s = make_split(x, 3, 5, NULL, NULL);
	struct split *other = make_split(x, 3, 5, s->k, NULL); /* the same K and shape, another polynomial */
	struct bought b[4], c[3], d[3];
	struct combined cb;
	uint16_t osw;

	for (unsigned i = 0; i < 4; i++)
		buy_share(x, s, i, &b[i]);
	{
		const struct bought *p[] = {&b[0], &b[1], &b[2], &b[3]};
		combine_settles(x, s, p, 4, KH_ESCROW_R_NONE, &cb);
		assert_true(read_content(x->pt, &x->b.t, &s->o[0], cb.licence, &osw));
	}
	/* device, escrows 0 and 1 (T), and the other split's escrow 2 past them */
	buy_share(x, s, 0, &c[0]);
	buy_share(x, s, 1, &c[1]);
	buy_share(x, other, 2, &c[2]);
	{
		const struct bought *p[] = {&c[0], &c[1], &c[2]};
		combine_settles(x, s, p, 3, KH_ESCROW_R_SHARES, &cb);
	}
	/* escrow 0's share bought twice: the same x twice */
	buy_share(x, s, 0, &d[0]);
	buy_share(x, s, 0, &d[1]);
	buy_share(x, s, 1, &d[2]);
	{
		const struct bought *p[] = {&d[0], &d[1], &d[2]};
		combine_settles(x, s, p, 3, KH_ESCROW_R_SHARES, &cb);
	}
	free(s);
	free(other);
}

/* ---- a buyer section of version 1, by hand ---- */

/*
 * The sealed state (src/module/module.c, docs/internals/module.md): "KHMS" | u8 version | u64
 * counter | nonce, then AES-256-GCM under HKDF(root key, "", "keyhole module state v1") of a TLV
 * list in which each applet's section is T_SECTION | u16 len | u8 id | u8 version | u8 flags |
 * its TLVs. The buyer's (id 2): S_SEQ (1) u64, then one S_SLOT (2) per slot: state | reason |
 * purchase | listing | u32 escrow | binding (32) | secret (32) | u64 seq (V1_SLOT bytes), and in
 * version 2 x (32) | t | n | index after that.
 */
#define HDR 25
#define T_SECTION 0x80
#define BUY_ID 2
#define S_SLOT 2
#define V1_SLOT (2 + 2 * KH_ESCROW_ID_LEN + 4 + 32 + 32 + 8)
#define V2_SLOT (V1_SLOT + 32 + 3)

struct sealed {
	uint8_t hdr[HDR];
	uint8_t b[KH_MODULE_BLOB_MAX];
	size_t n;
};

static void state_key(const char *card, uint8_t key[static 32])
{
	static const char label[] = "keyhole module state v1";
	char *kp = kh_softmod_key_path(card);
	uint8_t *hex = NULL, root[32];
	size_t n = 0;

	assert_non_null(kp);
	assert_int_equal(kh_keyfile_read(kp, 256, &hex, &n), KH_OK);
	assert_int_equal(kh_hex_decode((const char *)hex, n, root, sizeof root), KH_OK);
	assert_int_equal(kh_hkdf(root, sizeof root, NULL, 0, (const uint8_t *)label, sizeof label - 1, key, 32), KH_OK);
	kh_wipe(root, sizeof root);
	kh_file_free(hex, n);
	free(kp);
}

/* The card file's state, opened (or, seal, sealed back in place with the same header). */
static void state_io(const char *card, struct sealed *st, int seal)
{
	uint8_t key[32], *d = NULL, *out;
	size_t n = 0;

	state_key(card, key);
	if (!seal) {
		assert_int_equal(kh_file_read(card, KH_MODULE_BLOB_MAX, &d, &n), KH_OK);
		assert_true(n >= HDR + KH_TAG_LEN);
		memcpy(st->hdr, d, HDR);
		assert_int_equal(st->hdr[4], 2);
		st->n = n - HDR - KH_TAG_LEN;
		assert_int_equal(kh_aead_open(key, d + 13, d, HDR, d + HDR, n - HDR, st->b), KH_OK);
		kh_file_free(d, n);
	} else {
		out = malloc(HDR + st->n + KH_TAG_LEN);
		assert_non_null(out);
		memcpy(out, st->hdr, HDR);
		assert_int_equal(kh_random(out + 13, KH_NONCE_LEN), KH_OK);
		assert_int_equal(kh_aead_seal(key, out + 13, out, HDR, st->b, st->n, out + HDR), KH_OK);
		assert_int_equal(kh_file_write_atomic(card, out, HDR + st->n + KH_TAG_LEN, 0600), KH_OK);
		free(out);
	}
	kh_wipe(key, sizeof key);
}

/* v: the buyer section of st rewritten as version 1 (each slot cut to its version 1 length), its
 * first slot's state byte set to state0 (0: kept); cut 0 keeps version 2 slots under version 1. */
static void buy_section_v1(const struct sealed *st, struct sealed *v, int cut, uint8_t state0)
{
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_wr w;
	size_t at = 0, nslots = 0;
	int k;

	memcpy(v->hdr, st->hdr, HDR);
	kh_wr_init(&w, v->b, sizeof v->b);
	kh_rd_init(&rd, st->b, st->n);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		struct kh_rd sr;
		struct kh_tlv s;
		uint8_t *sec;
		size_t start;

		if (t.tag != T_SECTION || t.v[0] != BUY_ID) {
			assert_int_equal(kh_tlv_put(&w, t.tag, t.v, t.len), KH_OK);
			continue;
		}
		assert_int_equal(t.v[1], 2); /* this build writes version 2 */
		assert_int_equal(kh_wr_reserve(&w, 6, &sec), KH_OK);
		start = w.len;
		kh_rd_init(&sr, t.v + 3, t.len - 3u);
		while ((k = kh_tlv_next(&sr, &s)) == 1) {
			uint8_t slot[V2_SLOT];
			if (s.tag != S_SLOT) {
				assert_int_equal(kh_tlv_put(&w, s.tag, s.v, s.len), KH_OK);
				continue;
			}
			assert_int_equal(s.len, V2_SLOT);
			memcpy(slot, s.v, s.len);
			if (nslots++ == 0 && state0)
				slot[0] = state0;
			assert_int_equal(kh_tlv_put(&w, S_SLOT, slot, cut ? V1_SLOT : V2_SLOT), KH_OK);
		}
		assert_int_equal(k, 0);
		sec[0] = T_SECTION;
		sec[1] = (uint8_t)((w.len - start + 3) >> 8);
		sec[2] = (uint8_t)(w.len - start + 3);
		sec[3] = BUY_ID;
		sec[4] = 1;
		sec[5] = t.v[2];
		at++;
	}
	assert_int_equal(k, 0);
	assert_int_equal(at, 1);
	assert_int_equal(nslots, 2);
	v->n = w.len;
}

/* kh_softmod_open of card with the state st: its error (the module freed). */
static kh_err open_with(const char *card, const struct sealed *st)
{
	struct sealed copy = *st;
	struct kh_softmod *sm = NULL;
	kh_err r;

	state_io(card, &copy, 1);
	r = kh_softmod_open(card, NULL, &sm, NULL);
	kh_softmod_free(sm);
	return r;
}

/*
 * A buyer section of version 1 (before shares: slots without x, t, n, index) still loads: a
 * device of the build before, holding a delivered and a pending purchase, written to its card
 * file; its state is opened here with the root key, the section rewritten as version 1 wrote it,
 * and sealed back. Opened, the device lists the same purchases; the delivered one's licence
 * opens the content (K kept) and the pending one finishes (r kept). A version 1 section holding
 * a share, or slots of the version 2 length, is refused.
 */
static void test_v1_section(void **state)
{
	struct sx *x = *state;
	char *card = path_in(x->w->dir, "split-v1.card");
	struct offer *o = calloc(2, sizeof *o);
	struct sealed *st = calloc(1, sizeof *st), *v = calloc(1, sizeof *v);
	uint8_t req[KH_ESCROW_REQUEST_MAX];
	struct kh_softmod *sm = NULL;
	struct kh_transport t;
	struct kh_escrow_request q;
	struct list before, after;
	struct settled done, s2;
	struct bought p;
	size_t reqlen = 0, dl = 0, anslen;
	uint16_t osw;

	assert_true(o && st && v);
	for (size_t i = 0; i < 2; i++) {
		offer_listing(&o[i], x->esk, ESCROW_UA, &x->key[i], 700);
		offer_content(&o[i], x->pt, NULL);
		offer_c(&o[i], &x->key[i], o[i].k, KH_ESCROW_KEY_LEN);
	}
	assert_int_equal(buy_answered(x, &o[0], &x->key[0], &p, &dl), 0x9000);
	read_settled(x->sign_pk, dl, &done);
	assert_int_equal(done.notice.outcome, KH_ESCROW_DELIVERED);
	assert_int_equal(buy_start(&x->b.t, &o[1], req, &reqlen), 0x9000);
	assert_int_equal(kh_escrow_request_parse(req, reqlen, x->sign_pk, &q), KH_OK);
	list_of(&x->b.t, &before);
	assert_int_equal(kh_softmod_save(x->b.sm, card, NULL), KH_OK);
	state_io(card, st, 0);

	/* refused: a share in a version 1 section; version 2 slots called version 1 */
	buy_section_v1(st, v, 1, KH_ESCROW_SLOT_SHARE);
	assert_int_equal(open_with(card, v), KH_ERR_FORMAT);
	buy_section_v1(st, v, 0, 0);
	assert_int_equal(open_with(card, v), KH_ERR_FORMAT);

	/* the section as version 1 wrote it */
	buy_section_v1(st, v, 1, 0);
	assert_int_equal(v->n, st->n - 2 * (32 + 3));
	state_io(card, v, 1);
	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	kh_transport_inproc(&t, kh_softmod_module(sm));
	list_of(&t, &after);
	assert_int_equal(after.n, before.n);
	assert_memory_equal(after.b, before.b, before.n);
	assert_int_equal(by_purchase(&t, KH_INS_BUY_NOTICE, p.pid, &dl), 0x9000);
	read_settled(x->sign_pk, dl, &s2);
	assert_memory_equal(&s2.notice, &done.notice, sizeof s2.notice);
	assert_true(s2.has_licence);
	assert_true(read_content(x->pt, &t, &o[0], s2.licence, &osw));
	anslen = escrow_answer(x->esk, x->sign_pk, req, reqlen, &x->key[1], 1, 0, x->ans);
	assert_int_equal(buy_finish(&t, &o[1], x->ans, anslen, &dl), 0x9000);
	read_settled(x->sign_pk, dl, &s2);
	assert_memory_equal(s2.notice.purchase, q.purchase, KH_ESCROW_ID_LEN);
	assert_int_equal(s2.notice.outcome, KH_ESCROW_DELIVERED);
	assert_true(read_content(x->pt, &t, &o[1], s2.licence, &osw));
	kh_softmod_free(sm);
	free(card);
	free(o);
	free(st);
	free(v);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, dev_setup, dev_teardown)
	const struct CMUnitTest tests[] = {
		T(test_combine),       T(test_refusals),     T(test_failed_combine), T(test_share_of_another_listing),
		T(test_cancel_share),  T(test_power_cycle),  T(test_full_of_shares), T(test_more_than_t),
		T(test_v1_section),
	};
#undef T
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
