/*
 * The pay-TV path between decoder, CAM and card: the ECM/EMM codec, the card's CAS
 * applet, and the decoder's CAS session. Each refusal is checked for its own status word and for
 * changing nothing (the card's public CAS status is compared before and after).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/scramble.h"
#include "testutil.h"
#include "world.h"

#define PRODUCT 7
#define EVENT 55

struct cas_world {
	struct world *w;
	uint8_t skey[32];
	uint64_t t0;
	uint32_t seq;
	struct kh_host_cas cas;
};

static int setup(void **state)
{
	struct cas_world *cw = calloc(1, sizeof *cw);
	assert_non_null(cw);
	assert_int_equal(world_setup((void **)&cw->w), 0);
	assert_int_equal(kh_random(cw->skey, sizeof cw->skey), KH_OK);
	cw->t0 = (uint64_t)time(NULL);
	kh_host_cas_init(&cw->cas, &cw->w->dec.t, &cw->w->cam.t, &cw->w->c1.t, 0);
	*state = cw;
	return 0;
}

static int teardown(void **state)
{
	struct cas_world *cw = *state;
	kh_host_cas_wipe(&cw->cas);
	world_teardown((void **)&cw->w);
	free(cw);
	return 0;
}

/* A unique EMM for ua with the commands in cmds, sealed under its Kp. */
static size_t make_emm(struct cas_world *cw, uint32_t ua, uint32_t seq, const uint8_t *cmds, size_t n,
		       uint8_t *out, size_t cap)
{
	return world_emm(cw->w->auth, ua, seq, cmds, n, out, cap);
}

static struct kh_cas_status status_of(struct kh_transport *card)
{
	struct kh_host_cas c = {0};
	struct kh_cas_status st;
	c.card = card;
	assert_int_equal(kh_host_cas_status(&c, &st), KH_OK);
	return st;
}

/* Service key 1 v1, a right to PRODUCT for [t0 - 100, t0 + 100), 100 credits (reload 1). */
static void provision(struct cas_world *cw, struct mod *card)
{
	uint8_t cmds[512], emm[KH_EMM_MAX];
	struct kh_wr w;
	size_t n;

	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_key(&w, 1, 1, cw->skey), KH_OK);
	assert_int_equal(kh_emm_put_entitle(&w, PRODUCT, cw->t0 - 100, cw->t0 + 100), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&w, 100, 1), KH_OK);
	n = make_emm(cw, card->ua, status_of(&card->t).seq[KH_EMM_UNIQUE] + 1, cmds, w.len, emm, sizeof emm);
	struct kh_host_cas direct = cw->cas;
	direct.card = &card->t;
	assert_int_equal(kh_host_cas_emm(&direct, emm, n), KH_OK);
}

static size_t make_ecm(struct cas_world *cw, uint8_t access, uint32_t what, uint32_t price, uint64_t t,
		       uint32_t key_version, uint8_t *out, size_t cap)
{
	struct kh_ecm e;
	size_t len;

	memset(&e, 0, sizeof e);
	e.h.table_id = KH_ECM_TID_EVEN;
	e.h.key_id = 1;
	e.h.key_version = key_version;
	e.h.cp = 4;
	e.alg = KH_SCR_CISSA;
	e.cw_len = 16;
	memset(e.cw_even, 0xE0, 16);
	memset(e.cw_odd, 0x0D, 16);
	e.access = access;
	if (access == KH_ECM_PRODUCT)
		e.product = what;
	else {
		e.event = what;
		e.price = price;
	}
	e.time = t;
	assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(cw->w->auth), &e, out, cap, &len), KH_OK);
	return len;
}

/* ---- codec ---- */

static void test_codec(void **state)
{
	struct cas_world *cw = *state;
	uint8_t sec[KH_ECM_MAX], bad[KH_ECM_MAX];
	struct kh_ecm e;
	struct kh_ecm_hdr h;
	size_t n = make_ecm(cw, KH_ECM_EVENT, EVENT, 30, cw->t0, 1, sec, sizeof sec);

	assert_int_equal(kh_ecm_peek(sec, n, &h), KH_OK);
	assert_int_equal(h.cp, 4);
	assert_int_equal(kh_ecm_open(cw->skey, sec, n, &e), KH_OK);
	assert_int_equal(e.event, EVENT);
	assert_int_equal(e.price, 30);
	assert_int_equal(e.time, cw->t0);
	assert_int_equal(e.cw_even[0], 0xE0);
	/* every framing fault has its own code */
	assert_int_equal(kh_ecm_peek(sec, n - 1, &h), KH_ERR_TRUNCATED);
	memcpy(bad, sec, n);
	bad[n] = 0;
	assert_int_equal(kh_ecm_peek(bad, n + 1, &h), KH_ERR_TRAILING);
	memcpy(bad, sec, n);
	bad[3] = 1; /* an unsigned ECM of the first format */
	assert_int_equal(kh_ecm_peek(bad, n, &h), KH_ERR_VERSION);
	bad[3] = 2;
	bad[0] = 0x82;
	assert_int_equal(kh_ecm_peek(bad, n, &h), KH_ERR_FORMAT);
	/* any bit of the header or the body: the tag fails */
	for (size_t i = 4; i < n - KH_CAS_TRAILER_LEN; i += 7) {
		memcpy(bad, sec, n);
		bad[i] ^= 0x01;
		assert_int_equal(kh_ecm_open(cw->skey, bad, n, &e), KH_ERR_AUTH);
	}
	/* any bit at all, the signer's serial and the signature too: the signature fails */
	{
		uint8_t pk[32];
		const struct kh_cas_signer *sg = world_ecm_signer(cw->w->auth);
		assert_int_equal(kh_ed25519_public(sg->sk, pk), KH_OK);
		assert_int_equal(kh_ecm_verify(pk, sec, n), KH_OK);
		assert_int_equal(h.signer, sg->serial);
		for (size_t i = 4; i < n; i += 5) {
			memcpy(bad, sec, n);
			bad[i] ^= 0x01;
			assert_int_equal(kh_ecm_verify(pk, bad, n), KH_ERR_SIGNATURE);
		}
	}
	/* the toggled table_id is authenticated too */
	memcpy(bad, sec, n);
	bad[0] = KH_ECM_TID_ODD;
	assert_int_equal(kh_ecm_open(cw->skey, bad, n, &e), KH_ERR_AUTH);
}

/* ---- EMMs ---- */

static void test_emm_rules(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t cmds[128], emm[KH_EMM_MAX], emm2[KH_EMM_MAX];
	struct kh_cas_status before, after;
	struct kh_wr wr;
	size_t n, n2;

	provision(cw, &w->c1);
	before = status_of(&w->c1.t);
	assert_int_equal(before.credit, 100);
	assert_int_equal(before.nrights, 1);
	assert_int_equal(before.rights[0].product, PRODUCT);
	assert_int_equal(before.nkeys, 1);
	assert_int_equal(before.seq[KH_EMM_UNIQUE], 1);

	/* replayed: same seq */
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 50, 2), KH_OK);
	n = make_emm(cw, w->c1.ua, 1, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_REPLAY);
	/* forged: a new seq but one flipped bit */
	n = make_emm(cw, w->c1.ua, 2, cmds, wr.len, emm, sizeof emm);
	memcpy(emm2, emm, n);
	emm2[n - 20] ^= 0x80;
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n), KH_ERR_AUTH);
	/* another card's EMM */
	n2 = make_emm(cw, w->c2.ua, 2, cmds, wr.len, emm2, sizeof emm2);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n2), KH_ERR_NOT_ADDRESSED);
	/* another operator's key for our UA */
	{
		uint8_t kp[32], ku[32];
		struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, w->c1.ua, 3, 0};
		assert_int_equal(kh_authority_card_keys(w->foreign, w->c1.ua, kp, ku), KH_OK);
		assert_int_equal(kh_emm_seal(kp, &h, cmds, wr.len, emm2, sizeof emm2, &n2), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n2), KH_ERR_AUTH);
	}
	/* a group EMM to a card in no group, a broadcast EMM to a card without the key */
	{
		uint8_t k[32] = {0};
		struct kh_emm_hdr g = {0, KH_EMM_GROUP, 9, 1, 0}, all = {0, KH_EMM_ALL, 0, 1, 0};
		struct kh_cas_signer sg;
		world_signer(w->auth, KH_ROLE_EMM_SIGNER, &sg, NULL);
		assert_int_equal(kh_emm_seal_signed(k, &sg, &g, cmds, wr.len, emm2, sizeof emm2, &n2), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n2), KH_ERR_NOT_ADDRESSED);
		assert_int_equal(kh_emm_seal_signed(k, &sg, &all, cmds, wr.len, emm2, sizeof emm2, &n2), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n2), KH_ERR_NO_KEY);
	}
	/* all-or-nothing: a valid credit followed by an unknown command applies nothing */
	{
		uint8_t bad[64];
		struct kh_wr b;
		kh_wr_init(&b, bad, sizeof bad);
		assert_int_equal(kh_emm_put_add_credit(&b, 50, 2), KH_OK);
		assert_int_equal(kh_tlv_put_u8(&b, 0x7E, 1), KH_OK);
		n2 = make_emm(cw, w->c1.ua, 2, bad, b.len, emm2, sizeof emm2);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm2, n2), KH_ERR_TLV_TAG);
	}
	after = status_of(&w->c1.t);
	assert_int_equal(after.credit, before.credit);
	assert_int_equal(after.last_reload, before.last_reload);
	/* ... but the genuine, in-order EMM used up its number: one the card cannot take must not
	 * hold back every EMM after it */
	assert_int_equal(after.seq[KH_EMM_UNIQUE], before.seq[KH_EMM_UNIQUE] + 1);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_REPLAY);

	/* the credit re-issued as seq 3 applies once; its reload id cannot be applied again */
	n = make_emm(cw, w->c1.ua, 3, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	assert_int_equal(status_of(&w->c1.t).credit, 150);
	/* a host that withholds seq 4 and delivers seq 5 gets a gap, not a replay of 4 later */
	n = make_emm(cw, w->c1.ua, 5, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_GAP);
	assert_int_equal(status_of(&w->c1.t).seq[KH_EMM_UNIQUE], 3);
	n = make_emm(cw, w->c1.ua, 4, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	n = make_emm(cw, w->c1.ua, 5, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	after = status_of(&w->c1.t);
	assert_int_equal(after.credit, 150);
	assert_int_equal(after.seq[KH_EMM_UNIQUE], 5);

	/* group membership by unique EMM, then a group EMM */
	{
		uint8_t gk[32], gc[64], master_free[32];
		struct kh_wr g;
		struct kh_emm_hdr gh = {0, KH_EMM_GROUP, 9, 1, 0};
		struct kh_cas_signer sg;
		world_signer(w->auth, KH_ROLE_EMM_SIGNER, &sg, NULL);
		assert_int_equal(kh_random(master_free, 32), KH_OK);
		assert_int_equal(kh_cas_group_key(master_free, 9, gk), KH_OK);
		kh_wr_init(&g, gc, sizeof gc);
		assert_int_equal(kh_emm_put_set_group(&g, 9, gk, 0), KH_OK);
		n = make_emm(cw, w->c1.ua, 6, gc, g.len, emm, sizeof emm);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
		kh_wr_init(&g, gc, sizeof gc);
		assert_int_equal(kh_emm_put_entitle(&g, 8, cw->t0, cw->t0 + 10), KH_OK);
		assert_int_equal(kh_emm_seal_signed(gk, &sg, &gh, gc, g.len, emm, sizeof emm, &n), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_REPLAY);
		after = status_of(&w->c1.t);
		assert_int_equal(after.nrights, 2);
		assert_true(after.has_group);
		assert_int_equal(after.group, 9);
		/* a group key may only arrive under the card's own key */
		kh_wr_init(&g, gc, sizeof gc);
		assert_int_equal(kh_emm_put_set_group(&g, 10, gk, 0), KH_OK);
		gh.seq = 2;
		assert_int_equal(kh_emm_seal_signed(gk, &sg, &gh, gc, g.len, emm, sizeof emm, &n), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_SCOPE);

		/* A card joining group 11 where its sequence stands at 5 takes none of the group's
		 * older EMMs (a right granted at 3 and revoked at 4, say), only what comes after. */
		{
			uint8_t gk11[32], old_form[40];
			struct kh_emm_hdr g11 = {0, KH_EMM_GROUP, 11, 3, 0};
			uint32_t useq = status_of(&w->c1.t).seq[KH_EMM_UNIQUE];
			assert_int_equal(kh_cas_group_key(master_free, 11, gk11), KH_OK);
			/* the first form of SET GROUP, without the sequence, is refused */
			kh_put_be32(old_form, 11);
			memcpy(old_form + 4, gk11, 32);
			kh_wr_init(&g, gc, sizeof gc);
			assert_int_equal(kh_tlv_put(&g, KH_EMM_SET_GROUP, old_form, 36), KH_OK);
			n = make_emm(cw, w->c1.ua, ++useq, gc, g.len, emm, sizeof emm);
			assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_FORMAT);
			assert_int_equal(status_of(&w->c1.t).group, 9);
			kh_wr_init(&g, gc, sizeof gc);
			assert_int_equal(kh_emm_put_set_group(&g, 11, gk11, 5), KH_OK);
			n = make_emm(cw, w->c1.ua, ++useq, gc, g.len, emm, sizeof emm);
			assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
			assert_int_equal(status_of(&w->c1.t).seq[KH_EMM_GROUP], 5);
			kh_wr_init(&g, gc, sizeof gc);
			assert_int_equal(kh_emm_put_entitle(&g, 12, cw->t0, cw->t0 + 10), KH_OK);
			assert_int_equal(kh_emm_seal_signed(gk11, &sg, &g11, gc, g.len, emm, sizeof emm, &n), KH_OK);
			assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_REPLAY);
			g11.seq = 6;
			assert_int_equal(kh_emm_seal_signed(gk11, &sg, &g11, gc, g.len, emm, sizeof emm, &n), KH_OK);
			assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
			assert_int_equal(status_of(&w->c1.t).nrights, 3);
			kh_wipe(gk11, sizeof gk11);
		}
	}
}

/* ---- attacks by someone who took the shared keys out of one card ---- */

/* The broadcast key and a service key, as held by every card: the attacker has them too. */
static void give_shared(struct cas_world *cw, struct mod *card, uint8_t all[32])
{
	uint8_t cmds[64], emm[KH_EMM_MAX], master[32];
	struct kh_wr w;
	size_t n;

	assert_int_equal(kh_random(master, 32), KH_OK);
	assert_int_equal(kh_cas_all_key(master, all), KH_OK);
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_all_key(&w, all), KH_OK);
	n = make_emm(cw, card->ua, status_of(&card->t).seq[KH_EMM_UNIQUE] + 1, cmds, w.len, emm, sizeof emm);
	struct kh_host_cas direct = cw->cas;
	direct.card = &card->t;
	assert_int_equal(kh_host_cas_emm(&direct, emm, n), KH_OK);
}

static void assert_same_rights(const struct kh_cas_status *a, struct kh_cas_status b_)
{
	const struct kh_cas_status *b = &b_;
	assert_int_equal(a->credit, b->credit);
	assert_int_equal(a->last_reload, b->last_reload);
	assert_int_equal(a->nrights, b->nrights);
	assert_int_equal(a->nkeys, b->nkeys);
	assert_memory_equal(a->seq, b->seq, sizeof a->seq);
	assert_int_equal(a->npurchases, b->npurchases);
}

/*
 * Before the fix, a broadcast EMM sealed with the broadcast key taken from one card gave every
 * card product 999 and a million credit, and pushed the reload id to its end so that genuine
 * reloads were answered OK and ignored. Now only the EMM signer's signature makes a group or
 * broadcast EMM believed, and credit, reload ids, export and keys of one card move only under
 * its own Kp.
 */
static void test_forged_broadcast(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t all[32], cmds[128], emm[KH_EMM_MAX], fake_sk[32], fake_pk[32];
	struct kh_emm_hdr ha = {0, KH_EMM_ALL, 0, 1, 0};
	struct kh_cas_status before, after;
	struct kh_cas_signer op, fake;
	struct kh_wr wr;
	size_t n;

	provision(cw, &w->c1);
	give_shared(cw, &w->c1, all);
	before = status_of(&w->c1.t);
	assert_int_equal(before.nsigners, 2);
	world_signer(w->auth, KH_ROLE_EMM_SIGNER, &op, NULL);
	assert_int_equal(kh_ed25519_keygen(fake_sk, fake_pk), KH_OK);

	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_entitle(&wr, 999, 0, UINT64_MAX / 2), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&wr, 1000000, 0xFFFFFFFFu), KH_OK);

	/* 1. the old, unsigned format under the broadcast key: refused as a version, not read */
	{
		uint8_t *p = emm;
		size_t total = KH_EMM_HDR_LEN + wr.len + KH_CAS_TAG_LEN;
		p[0] = KH_EMM_TID_ALL;
		p[1] = (uint8_t)(0x70 | ((total - 3) >> 8));
		p[2] = (uint8_t)(total - 3);
		p[3] = 1;
		p[4] = KH_EMM_ALL;
		memset(p + 5, 0, 4);
		kh_put_be32(p + 9, 1);
		assert_int_equal(kh_random(p + 13, 12), KH_OK);
		assert_int_equal(kh_aead_seal(all, p + 13, p, KH_EMM_HDR_LEN, cmds, wr.len, p + KH_EMM_HDR_LEN), KH_OK);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, total), KH_ERR_VERSION);
	}
	/* 2. signed with the attacker's own key under the operator's signer serial */
	fake.serial = op.serial;
	memcpy(fake.sk, fake_sk, 32);
	assert_int_equal(kh_emm_seal_signed(all, &fake, &ha, cmds, wr.len, emm, sizeof emm, &n), KH_OK);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_SIGNATURE);
	/* 3. under a serial the card was never given */
	fake.serial = op.serial + 7;
	assert_int_equal(kh_emm_seal_signed(all, &fake, &ha, cmds, wr.len, emm, sizeof emm, &n), KH_OK);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_UNKNOWN_SIGNER);
	/* 4. even the operator's signature does not move one card's credit in a broadcast */
	assert_int_equal(kh_emm_seal_signed(all, &op, &ha, cmds, wr.len, emm, sizeof emm, &n), KH_OK);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_EMM_SCOPE);
	after = status_of(&w->c1.t);
	assert_same_rights(&before, after);

	/* 5. a reload id at the top of the range, even under Kp, is refused: nothing applies (its
	 * number is used up, so it blocks nothing after it) */
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 1000000, 0xFFFFFFFFu), KH_OK);
	n = make_emm(cw, w->c1.ua, before.seq[KH_EMM_UNIQUE] + 1, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_RELOAD_JUMP);
	after = status_of(&w->c1.t);
	assert_int_equal(after.seq[KH_EMM_UNIQUE], ++before.seq[KH_EMM_UNIQUE]);
	assert_same_rights(&before, after);
	/* and the genuine reload of +50 that follows is applied, not ignored */
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 50, before.last_reload + 1), KH_OK);
	n = make_emm(cw, w->c1.ua, before.seq[KH_EMM_UNIQUE] + 1, cmds, wr.len, emm, sizeof emm);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	assert_int_equal(status_of(&w->c1.t).credit, before.credit + 50);

	/* 6. the operator's genuine broadcast of a right is applied */
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_entitle(&wr, 77, cw->t0, cw->t0 + 10), KH_OK);
	ha.seq = 2;
	assert_int_equal(kh_emm_seal_signed(all, &op, &ha, cmds, wr.len, emm, sizeof emm, &n), KH_OK);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	assert_int_equal(status_of(&w->c1.t).nrights, before.nrights + 1);

	/* 7. a signer's certificate must be the root's and a signer's: a card's is refused, and
	 * another operator's signer too */
	{
		uint8_t der[KH_CERT_MAX], resp[KH_CERT_MAX + 2];
		size_t dl, rl;
		assert_int_equal(send_apdu(&w->c2.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &rl),
				 KH_SW_OK);
		uint8_t big[KH_CERT_MAX + 8];
		struct kh_wr bw;
		kh_wr_init(&bw, big, sizeof big);
		assert_int_equal(kh_emm_put_set_signer(&bw, resp, rl), KH_OK);
		before = status_of(&w->c1.t);
		n = make_emm(cw, w->c1.ua, before.seq[KH_EMM_UNIQUE] + 1, big, bw.len, emm, sizeof emm);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_CERT_ROLE);
		dl = world_signer(w->foreign, KH_ROLE_EMM_SIGNER, NULL, der);
		kh_wr_init(&bw, big, sizeof big);
		assert_int_equal(kh_emm_put_set_signer(&bw, der, dl), KH_OK);
		n = make_emm(cw, w->c1.ua, before.seq[KH_EMM_UNIQUE] + 2, big, bw.len, emm, sizeof emm);
		assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_ERR_CERT);
		before.seq[KH_EMM_UNIQUE] += 2; /* each used up its number, and changed nothing else */
		assert_same_rights(&before, status_of(&w->c1.t));
		assert_int_equal(status_of(&w->c1.t).nsigners, 2);
	}
	kh_wipe(&op, sizeof op);
	kh_wipe(&fake, sizeof fake);
	kh_wipe(fake_sk, sizeof fake_sk);
}

/*
 * Before the fix, a service key taken from one card forged an ECM for the event at price 0, which
 * every card bought for nothing. Now the ECM's access criteria carry the headend's signature.
 */
static void test_forged_ecm(void **state)
{
	struct cas_world *cw = *state;
	uint8_t ecm[KH_ECM_MAX], fake_pk[32];
	struct kh_cas_signer fake;
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	struct kh_cas_status before;
	struct kh_ecm e;
	size_t n;

	provision(cw, &cw->w->c1);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	before = status_of(&cw->w->c1.t);
	memset(&e, 0, sizeof e);
	e.h.table_id = KH_ECM_TID_EVEN;
	e.h.key_id = 1;
	e.h.key_version = 1;
	e.alg = KH_SCR_CISSA;
	e.cw_len = 16;
	e.access = KH_ECM_EVENT;
	e.event = EVENT;
	e.price = 0;
	e.time = cw->t0;
	fake.serial = world_ecm_signer(cw->w->auth)->serial;
	assert_int_equal(kh_ed25519_keygen(fake.sk, fake_pk), KH_OK);
	assert_int_equal(kh_ecm_seal(cw->skey, &fake, &e, ecm, sizeof ecm, &n), KH_OK);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, ecm, n, &o), KH_ERR_SIGNATURE);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_SIGNATURE);
	fake.serial++;
	assert_int_equal(kh_ecm_seal(cw->skey, &fake, &e, ecm, sizeof ecm, &n), KH_OK);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, ecm, n, &o), KH_ERR_UNKNOWN_SIGNER);
	assert_same_rights(&before, status_of(&cw->w->c1.t));
	/* the genuine ECM, signed by the headend, is bought at its price */
	n = make_ecm(cw, KH_ECM_EVENT, EVENT, 30, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, ecm, n, &o), KH_OK);
	assert_int_equal(status_of(&cw->w->c1.t).credit, before.credit - 30);
	kh_wipe(&fake, sizeof fake);
}

/* Broadcast the operator's revoked list (version, the UAs l[0..nl)) as the seq-th broadcast EMM,
 * signed and sealed under the broadcast key all; the card must accept it. */
static void send_revoked(struct cas_world *cw, const uint8_t all[32], uint32_t seq, uint32_t version,
			 const uint32_t *l, size_t nl)
{
	struct kh_emm_hdr ha = {.addr_type = KH_EMM_ALL, .seq = seq};
	uint8_t cmds[256], emm[KH_EMM_MAX];
	struct kh_cas_signer op;
	struct kh_wr wr;
	size_t n;

	world_signer(cw->w->auth, KH_ROLE_EMM_SIGNER, &op, NULL);
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_revoked(&wr, version, l, nl), KH_OK);
	assert_int_equal(kh_emm_seal_signed(all, &op, &ha, cmds, wr.len, emm, sizeof emm, &n), KH_OK);
	assert_int_equal(kh_host_cas_emm(&cw->cas, emm, n), KH_OK);
	kh_wipe(&op, sizeof op);
}

/*
 * The card judges certificates by its own clock, the newest ECM time the operator signed, so a
 * host that says "now = 0" (which skips the validity check) or an old date proves nothing; and a
 * CAM whose key leaked is revoked by a signed broadcast list, refused at CAM AUTH.
 */
static void test_clock_and_revocation(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t ecm[KH_ECM_MAX], all[32];
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	uint32_t cam = w->cam.ua, other = cam + 1000;
	size_t n;

	provision(cw, &w->c1);
	give_shared(cw, &w->c1, all);

	/* revocation: a list naming another module changes nothing for our CAM */
	send_revoked(cw, all, 1, 1, &other, 1);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	/* the list that names it: the card no longer accepts the CAM's proof */
	{
		uint32_t l[2] = {other, cam};
		send_revoked(cw, all, 2, 2, l, 2);
	}
	kh_host_cas_wipe(&cw->cas);
	kh_host_cas_init(&cw->cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_ERR_REVOKED);
	assert_false(cw->cas.connected);
	/* an older list (a replayed broadcast of version 1) does not bring the CAM back */
	send_revoked(cw, all, 3, 1, &other, 1);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_ERR_REVOKED);
	/* a newer, empty list does */
	send_revoked(cw, all, 4, 3, NULL, 0);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);

	/* A host that withholds the next list (version 4, naming our CAM) gains nothing: the
	 * operator's ECMs ask for version 4, and a card holding 3 gives no control words. */
	{
		struct kh_ecm e;
		memset(&e, 0, sizeof e);
		e.h.table_id = KH_ECM_TID_EVEN;
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.h.cp = 9;
		e.alg = KH_SCR_CISSA;
		e.cw_len = 16;
		e.access = KH_ECM_PRODUCT;
		e.product = PRODUCT;
		e.time = cw->t0;
		e.revoked_version = 4;
		assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(w->auth), &e, ecm, sizeof ecm, &n), KH_OK);
		assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_LIST_STALE);
		/* the list arrives: the CAM on the channel already open is refused at the next ECM */
		send_revoked(cw, all, 5, 4, &cam, 1);
		assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(w->auth), &e, ecm, sizeof ecm, &n), KH_OK);
		assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_REVOKED);
		/* version 5 lets it back in, and an ECM asking for 4 is then answered */
		send_revoked(cw, all, 6, 5, NULL, 0);
		kh_host_cas_wipe(&cw->cas);
		kh_host_cas_init(&cw->cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
		assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
		assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(w->auth), &e, ecm, sizeof ecm, &n), KH_OK);
		assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	}

	/* the clock. A genuine ECM dated after its signer's certificate runs out (the year 2100) is
	 * refused and does not move the clock: one recording of it cannot make every certificate
	 * look expired on every card. */
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, 4102444800u, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_CERT_EXPIRED);
	/* A clock that lags (the last ECM the card saw was a month ago) still accepts a CAM issued
	 * since: a lower bound of the time says "expired", never "not yet valid". */
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0 - 30 * 86400, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_RIGHT_NOT_STARTED);
	kh_host_cas_wipe(&cw->cas);
	kh_host_cas_init(&cw->cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	/* A CAM certified for one day: once a genuine ECM three days on has moved the card's clock,
	 * the card refuses that CAM, whatever time the host claims (0 used to skip the check). */
	{
		struct kh_authority *a1;
		struct mod shortcam;
		struct kh_host_cas c2;
		char *vf = path_in(w->auth_dir, "validity-days");
		FILE *f = fopen(vf, "w");
		assert_non_null(f);
		fputs("1\n", f);
		fclose(f);
		assert_int_equal(kh_authority_open(w->auth_dir, &a1), KH_OK);
		make_mod(a1, KH_ROLE_CAM, &shortcam);
		kh_authority_free(a1);
		kh_host_cas_init(&c2, &w->dec.t, &shortcam.t, &w->c1.t, 0);
		assert_int_equal(kh_host_cas_connect(&c2), KH_OK);
		n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0 + 3 * 86400, 1, ecm, sizeof ecm);
		assert_int_equal(kh_host_cas_ecm(&c2, ecm, n, &a, &o), KH_ERR_RIGHT_EXPIRED);
		kh_host_cas_wipe(&c2);
		kh_host_cas_init(&c2, &w->dec.t, &shortcam.t, &w->c1.t, 0);
		assert_int_equal(kh_host_cas_connect(&c2), KH_ERR_CERT_EXPIRED);
		assert_int_equal(kh_host_cas_connect(&c2), KH_ERR_CERT_EXPIRED);
		kh_host_cas_wipe(&c2);
		/* the five-year CAM is still good */
		kh_host_cas_wipe(&cw->cas);
		kh_host_cas_init(&cw->cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
		assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
		kh_softmod_free(shortcam.sm);
		free(vf);
	}
}

/*
 * The operator's ladder policy, signed in the ECM: a decoder without the key ladder gets
 * LADDER_REQUIRED from the CAM (as a card verdict: the session stays up) and no control word; a
 * decoder module with the ladder gets the sealed pair, loads it, and its descrambler holds the
 * ECM's control words. A host cannot strip the flag: it is inside the signed, sealed ECM and the
 * card's sealed answer.
 */
static void test_ladder_policy(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t ecm[KH_ECM_MAX], zero[KH_CAS_CW_MAX] = {0};
	struct kh_host_cas lad;
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	struct kh_ecm e;
	size_t n;

	provision(cw, &w->c1);
	memset(&e, 0, sizeof e);
	e.h.table_id = KH_ECM_TID_ODD;
	e.h.key_id = 1;
	e.h.key_version = 1;
	e.h.cp = 5;
	e.alg = KH_SCR_CISSA;
	e.cw_len = 16;
	memset(e.cw_even, 0xE1, 16);
	memset(e.cw_odd, 0x0E, 16);
	e.access = KH_ECM_PRODUCT;
	e.product = PRODUCT;
	e.time = cw->t0;
	e.flags = KH_ECM_F_LADDER;
	e.flags = 0x02; /* no such policy */
	assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(w->auth), &e, ecm, sizeof ecm, &n), KH_ERR_INVAL);
	e.flags = KH_ECM_F_LADDER;
	assert_int_equal(kh_ecm_seal(cw->skey, world_ecm_signer(w->auth), &e, ecm, sizeof ecm, &n), KH_OK);

	/* open mode: refused, nothing handed over, still connected */
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	memset(&a, 0, sizeof a);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_LADDER_REQUIRED);
	assert_memory_equal(a.even, zero, sizeof zero);
	assert_true(cw->cas.connected);
	/* an ECM without the flag is answered on the same session */
	{
		uint8_t plain[KH_ECM_MAX];
		size_t pn = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, plain, sizeof plain);
		assert_int_equal(kh_host_cas_ecm(&cw->cas, plain, pn, &a, &o), KH_OK);
		assert_int_equal(a.cw_len, 16);
	}

	/* ladder mode: the sealed pair, which only the decoder module opens */
	kh_host_cas_init(&lad, &w->dec.t, &w->cam.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_host_cas_connect(&lad), KH_OK);
	memset(&a, 0, sizeof a);
	assert_int_equal(kh_host_cas_ecm(&lad, ecm, n, &a, &o), KH_OK);
	assert_int_equal(a.cw_len, 0);
	assert_true(a.sealed_len > 0);
	assert_memory_equal(a.even, zero, sizeof zero);
	assert_int_equal(a.cp, 5);
	assert_int_equal(kh_host_cas_load(&lad, &a), KH_OK);
	kh_host_cas_wipe(&lad);
	kh_wipe(&a, sizeof a);
}

/* The host's first half of kh_host_cas_connect only: the decoder module pairs with the CAM and
 * proves itself; nothing is sent toward the card. */
static void dec_to_cam(struct kh_transport *dec, struct kh_transport *cam)
{
	uint8_t resp[KH_APDU_MAX_RESP], camresp[KH_APDU_MAX_RESP];
	size_t dlen, clen;
	uint16_t sw;

	assert_int_equal(kh_host_apdu(dec, KH_INS_CARD_START, 0, NULL, 0, resp, sizeof resp, &dlen, &sw), KH_OK);
	for (int i = 0; sw == KH_SW_RELAY && i < 8; i++) {
		assert_int_equal(kh_transport_xfer(cam, resp, dlen, camresp, sizeof camresp, &clen), KH_OK);
		assert_int_equal(kh_host_apdu(dec, KH_INS_CARD_RESP, 0, camresp, clen, resp, sizeof resp, &dlen, &sw),
				 KH_OK);
	}
	assert_int_equal(sw, KH_SW_OK);
	assert_int_equal(dlen, 4);
}

/*
 * A decoder module whose keys leaked is revoked by the same signed list: the CAM names the decoder
 * it serves in its CAM AUTH, so the card refuses control words on a channel already open for it
 * and refuses the next pairing; and the revoked decoder cannot borrow a channel the CAM opened
 * for another decoder, since a different decoder proving itself ends the CAM's card channel.
 */
static void test_decoder_revocation(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t ecm[KH_ECM_MAX], all[32], zero[KH_CAS_CW_MAX] = {0};
	struct kh_host_cas other;
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	struct mod d2;
	uint32_t dec = w->dec.ua;
	size_t n;

	provision(cw, &w->c1);
	give_shared(cw, &w->c1, all);
	make_mod(w->auth, KH_ROLE_DECODER, &d2);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);

	/* the list names our decoder module: no control words on the open channel, no new pairing */
	send_revoked(cw, all, 1, 1, &dec, 1);
	memset(&a, 0, sizeof a);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_REVOKED);
	assert_memory_equal(a.even, zero, sizeof zero);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_ERR_REVOKED);

	/* another, unrevoked decoder module works */
	kh_host_cas_init(&other, &d2.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(&other), KH_OK);
	assert_int_equal(kh_host_cas_ecm(&other, ecm, n, &a, &o), KH_OK);
	/* the revoked one pairs with the CAM and proves itself (the CAM holds no list), and the host
	 * sends no CARD START, hoping to use the card channel the CAM opened for the other: that
	 * channel ended when another decoder proved itself, so no control word */
	dec_to_cam(&w->dec.t, &w->cam.t);
	cw->cas.connected = 1;
	cw->cas.card_ua = w->c1.ua;
	memset(&a, 0, sizeof a);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NOT_PAIRED);
	assert_memory_equal(a.even, zero, sizeof zero);
	assert_memory_equal(a.odd, zero, sizeof zero);

	/* its own CARD START is refused by the card */
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_ERR_REVOKED);
	/* a newer, empty list lets it back in */
	send_revoked(cw, all, 2, 2, NULL, 0);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	kh_wipe(&a, sizeof a);
	kh_softmod_free(d2.sm);
}

/* ---- ECMs through decoder -> CAM -> card ---- */

static void test_ecm_rights(void **state)
{
	struct cas_world *cw = *state;
	uint8_t ecm[KH_ECM_MAX];
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	size_t n;

	provision(cw, &cw->w->c1);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	assert_int_equal(cw->cas.card_ua, cw->w->c1.ua);

	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	assert_int_equal(a.alg, KH_SCR_CISSA);
	assert_int_equal(a.cw_len, 16);
	assert_int_equal(a.even[15], 0xE0);
	assert_int_equal(a.odd[0], 0x0D);
	assert_int_equal(a.cp, 4);

	/* the right ends at t0 + 100: an ECM broadcast then gets nothing */
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0 + 100, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_RIGHT_EXPIRED);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0 - 101, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_RIGHT_NOT_STARTED);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT + 1, 0, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NO_RIGHT);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 2, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NO_KEY);
	/* refusals leave the session up */
	assert_true(cw->cas.connected);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	struct kh_cas_status st = status_of(&cw->w->c1.t);
	assert_int_equal(st.n_cw, 2);
	assert_int_equal(st.n_refused, 4);
	/* ECMs stored nothing; CAS FLUSH stores the counters once, then has nothing to do */
	struct kh_module *cm = kh_softmod_module(cw->w->c1.sm);
	uint64_t c0 = kh_module_counter(cm);
	assert_int_equal(kh_host_cas_flush(&cw->cas), KH_OK);
	assert_int_equal(kh_module_counter(cm), c0 + 1);
	assert_int_equal(kh_host_cas_flush(&cw->cas), KH_OK);
	assert_int_equal(kh_module_counter(cm), c0 + 1);
}

static void test_ppv(void **state)
{
	struct cas_world *cw = *state;
	uint8_t ecm[KH_ECM_MAX], dear[KH_ECM_MAX], sub[KH_ECM_MAX];
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	size_t n, nd, ns;

	provision(cw, &cw->w->c1);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	n = make_ecm(cw, KH_ECM_EVENT, EVENT, 30, cw->t0, 1, ecm, sizeof ecm);
	memset(&o, 0, sizeof o);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NOT_PURCHASED);
	assert_int_equal(o.event, EVENT);
	assert_int_equal(o.price, 30);
	assert_int_equal(o.credit, 100);

	/* bought once, charged once */
	assert_int_equal(kh_host_cas_purchase(&cw->cas, ecm, n, &o), KH_OK);
	assert_int_equal(o.credit, 70);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, ecm, n, &o), KH_OK);
	assert_int_equal(o.credit, 70);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	struct kh_cas_status st = status_of(&cw->w->c1.t);
	assert_int_equal(st.credit, 70);
	assert_int_equal(st.npurchases, 1);
	assert_int_equal(st.purchases[0].event, EVENT);
	assert_int_equal(st.purchases[0].price, 30);

	/* too dear: refused, credit untouched, the offer says why */
	nd = make_ecm(cw, KH_ECM_EVENT, EVENT + 1, 71, cw->t0, 1, dear, sizeof dear);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, dear, nd, &a, &o), KH_ERR_CREDIT_LOW);
	assert_int_equal(o.price, 71);
	assert_int_equal(o.credit, 70);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, dear, nd, &o), KH_ERR_CREDIT_LOW);
	assert_int_equal(status_of(&cw->w->c1.t).credit, 70);
	assert_int_equal(status_of(&cw->w->c1.t).npurchases, 1);
	/* a subscription ECM cannot be "bought" */
	ns = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, sub, sizeof sub);
	assert_int_equal(kh_host_cas_purchase(&cw->cas, sub, ns, &o), KH_ERR_FORMAT);
	assert_int_equal(status_of(&cw->w->c1.t).credit, 70);
}

/* Control words never leave the card for a host, nor the CAM for a host in clear. */
static void test_cw_paths(void **state)
{
	struct cas_world *cw = *state;
	struct world *w = cw->w;
	uint8_t ecm[KH_ECM_MAX], inner[KH_APDU_MAX_CMD], out[KH_APDU_MAX_RESP];
	struct kh_wr wr;
	size_t n, outlen;
	struct kh_link *l = calloc(1, sizeof *l);
	uint32_t ua;

	assert_non_null(l);
	provision(cw, &w->c1);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, ecm, sizeof ecm);
	kh_wr_init(&wr, inner, sizeof inner);
	assert_int_equal(kh_apdu_build(&wr, KH_CLA, KH_INS_ECM, 0, 0, ecm, n, 0), KH_OK);

	/* a plain ECM to the card: no channel at all */
	assert_int_equal(send_apdu(&w->c1.t, KH_CLA, KH_INS_ECM, 0, 0, ecm, n, out, sizeof out, &outlen),
			 kh_err_to_sw(KH_ERR_APDU_INS));
	/* a host that pairs with the card itself: a channel, but no CAM proved itself on it */
	kh_link_init(l, w->root_pk, KH_ROLE_CARD, (const uint8_t *)"host", 4);
	assert_int_equal(kh_host_link_pair(l, &w->c1.t, cw->t0), KH_OK);
	assert_int_equal(kh_host_link_cmd(l, &w->c1.t, inner, wr.len, cw->t0, out, sizeof out, &outlen), KH_OK);
	assert_int_equal(outlen, 2);
	assert_int_equal(out[0] << 8 | out[1], kh_err_to_sw(KH_ERR_CHAN_UNPROVEN));
	/* the CAM paired in plain: it refuses to carry an ECM the decoder did not seal */
	assert_int_equal(kh_host_pair_cam_card(&w->cam.t, &w->c1.t, &ua), KH_OK);
	assert_int_equal(kh_host_card_cmd(&w->cam.t, &w->c1.t, inner, wr.len, out, sizeof out, &outlen),
			 KH_ERR_CW_PLAIN);
	kh_link_wipe(l);
	free(l);
}

/* A card swapped mid-stream: the next ECM fails at the CAM and the session drops. */
static void test_swap(void **state)
{
	struct cas_world *cw = *state;
	uint8_t ecm[KH_ECM_MAX];
	struct kh_cw_answer a;
	struct kh_ppv_offer o;
	size_t n;

	provision(cw, &cw->w->c1);
	provision(cw, &cw->w->c2);
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	n = make_ecm(cw, KH_ECM_PRODUCT, PRODUCT, 0, cw->t0, 1, ecm, sizeof ecm);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
	/* a card with no channel: it refuses, the CAM passes the refusal on and wipes its keys */
	cw->cas.card = &cw->w->c2.t;
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NOT_PAIRED);
	assert_false(cw->cas.connected);
	/* a card with a channel of its own (another CAM's): its answer does not open at our CAM */
	cw->cas.card = &cw->w->c1.t;
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	{
		struct kh_link *l = calloc(1, sizeof *l);
		assert_non_null(l);
		kh_link_init(l, cw->w->root_pk, KH_ROLE_CARD, (const uint8_t *)"other", 5);
		assert_int_equal(kh_host_link_pair(l, &cw->w->c2.t, cw->t0), KH_OK);
		kh_link_wipe(l);
		free(l);
	}
	cw->cas.card = &cw->w->c2.t;
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_CHAN_AUTH);
	assert_false(cw->cas.connected);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_ERR_NOT_PAIRED);
	/* pairing again with the new card works; it is a card in its own right */
	assert_int_equal(kh_host_cas_connect(&cw->cas), KH_OK);
	assert_int_equal(cw->cas.card_ua, cw->w->c2.ua);
	assert_int_equal(kh_host_cas_ecm(&cw->cas, ecm, n, &a, &o), KH_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_codec, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emm_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_broadcast, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_ecm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clock_and_revocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_decoder_revocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ladder_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ecm_rights, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ppv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cw_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swap, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
