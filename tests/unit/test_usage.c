/*
 * The card's usage data (seed 001): EXPORT blocks for an upload session and for the decoder's
 * memory M1 (only while the center authorises it), the upload hello, and the center's ACK that
 * lets purchases leave the card's log. Blocks are checked the way the center checks them: the
 * signature against the card's certified key, the body under Ku.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/host.h"
#include "keyhole/scramble.h"
#include "keyhole/usage.h"
#include "testutil.h"
#include "world.h"

struct uw {
	struct world *w;
	struct kh_host_cas cas;
	uint8_t skey[32], sign_pk[32], ku[32];
	uint32_t seq;
	uint64_t t0;
};

static int setup(void **state)
{
	struct uw *u = calloc(1, sizeof *u);
	uint8_t der[KH_CERT_MAX], resp[KH_APDU_MAX_RESP], kp[32];
	struct kh_cert_info ci;
	size_t n;

	assert_non_null(u);
	assert_int_equal(world_setup((void **)&u->w), 0);
	u->t0 = (uint64_t)time(NULL);
	assert_int_equal(kh_random(u->skey, 32), KH_OK);
	kh_host_cas_init(&u->cas, &u->w->dec.t, &u->w->cam.t, &u->w->c1.t, 0);
	/* what the center knows of card 1: its certified signing key and its Ku */
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &n),
			 KH_SW_OK);
	memcpy(der, resp, n);
	assert_int_equal(kh_cert_check(der, n, u->w->root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, u->t0, &ci), KH_OK);
	memcpy(u->sign_pk, ci.pub, 32);
	assert_int_equal(kh_authority_card_keys(u->w->auth, u->w->c1.ua, kp, u->ku), KH_OK);
	*state = u;
	return 0;
}

static int teardown(void **state)
{
	struct uw *u = *state;
	kh_host_cas_wipe(&u->cas);
	world_teardown((void **)&u->w);
	free(u);
	return 0;
}

static void emm(struct uw *u, const uint8_t *cmds, size_t n, kh_err want)
{
	uint8_t sec[KH_EMM_MAX];
	/* the card takes its own EMMs strictly in order; a genuine one it cannot apply uses up its
	 * number all the same */
	size_t len = world_emm(u->w->auth, u->w->c1.ua, u->seq + 1, cmds, n, sec, sizeof sec);
	struct kh_host_cas direct = u->cas;
	struct kh_cas_status st;
	assert_int_equal(kh_host_cas_emm(&u->cas, sec, len), want);
	direct.card = &u->w->c1.t;
	assert_int_equal(kh_host_cas_status(&direct, &st), KH_OK);
	u->seq = st.seq[KH_EMM_UNIQUE];
}

/* Service key, 100 credits, then two events bought through decoder -> CAM -> card. */
static void buy_two(struct uw *u, uint32_t first_event)
{
	uint8_t cmds[256], ecm[KH_ECM_MAX];
	struct kh_wr w;
	struct kh_ecm e;
	struct kh_ppv_offer o;
	size_t n;

	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_key(&w, 1, 1, u->skey), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&w, 100, u->seq + 1), KH_OK);
	emm(u, cmds, w.len, KH_OK);
	if (!u->cas.connected)
		assert_int_equal(kh_host_cas_connect(&u->cas), KH_OK);
	for (uint32_t ev = first_event; ev < first_event + 2; ev++) {
		memset(&e, 0, sizeof e);
		e.h.table_id = KH_ECM_TID_EVEN;
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.alg = KH_SCR_CSA2;
		e.cw_len = 8;
		e.access = KH_ECM_EVENT;
		e.event = ev;
		e.price = 30;
		e.time = u->t0;
		assert_int_equal(kh_ecm_seal(u->skey, world_ecm_signer(u->w->auth), &e, ecm, sizeof ecm, &n), KH_OK);
		assert_int_equal(kh_host_cas_purchase(&u->cas, ecm, n, &o), KH_OK);
	}
}

static size_t export(struct uw *u, uint8_t p1, uint8_t *blk, size_t cap, uint16_t *sw)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t n;

	*sw = send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, p1, 0, NULL, 0, resp, sizeof resp, &n);
	assert_true(n <= cap);
	memcpy(blk, resp, n);
	return n;
}

static void test_export_rules(void **state)
{
	struct uw *u = *state;
	uint8_t blk[KH_USAGE_MAX], blk2[KH_USAGE_MAX], cmds[16];
	struct kh_usage us;
	struct kh_wr w;
	uint16_t sw;
	size_t n, n2;

	buy_two(u, 55);
	/* a new card is not authorised to export to the decoder's memory */
	n = export(u, 1, blk, sizeof blk, &sw);
	assert_int_equal(sw, kh_err_to_sw(KH_ERR_EXPORT_DENIED));
	assert_int_equal(n, 0);
	/* for an upload session it always answers: block 1, the two purchases, the credit */
	n = export(u, 0, blk, sizeof blk, &sw);
	assert_int_equal(sw, KH_SW_OK);
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, n, &us), KH_OK);
	assert_int_equal(us.h.ua, u->w->c1.ua);
	assert_int_equal(us.h.block_seq, 1);
	assert_int_equal(us.credit, 40);
	assert_int_equal(us.npurchases, 2);
	assert_int_equal(us.purchases[0].event, 55);
	assert_int_equal(us.purchases[1].price, 30);
	assert_int_equal(us.export_ok, 0);
	/* made for a session: not marked for M1, in the signed header */
	assert_int_equal(us.h.flags, 0);
	assert_int_equal(blk[17], 0);
	/* the center authorises: now a block for M1 is made, with the next number */
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_auth_export(&w, 1), KH_OK);
	emm(u, cmds, w.len, KH_OK);
	n2 = export(u, 1, blk2, sizeof blk2, &sw);
	assert_int_equal(sw, KH_SW_OK);
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk2, n2, &us), KH_OK);
	assert_int_equal(us.h.block_seq, 2);
	assert_int_equal(us.export_ok, 1);
	/* made for M1, and says so */
	assert_int_equal(us.h.flags, KH_USAGE_F_M1);
	assert_int_equal(blk2[0], KH_USAGE_VERSION);
	assert_int_equal(blk2[17], KH_USAGE_F_M1);
	/* the mark cannot be moved: a session block relabelled for M1 (or the reverse) is refused */
	{
		uint8_t bad[KH_USAGE_MAX];
		memcpy(bad, blk, n);
		bad[17] = KH_USAGE_F_M1;
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, bad, n, &us), KH_ERR_AUTH);
		memcpy(bad, blk2, n2);
		bad[17] = 0;
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, bad, n2, &us), KH_ERR_AUTH);
		/* an unknown flag, and the old layout (version 1), are refused before any key is used */
		bad[17] = 0x80;
		assert_int_equal(kh_usage_peek(bad, n2, &us.h), KH_ERR_FORMAT);
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, bad, n2, &us), KH_ERR_FORMAT);
		memcpy(bad, blk2, n2);
		bad[0] = 1;
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, bad, n2, &us), KH_ERR_VERSION);
		/* version 2 (its nonce came from block_seq) is refused as well, by peek and by open */
		bad[0] = 2;
		assert_int_equal(kh_usage_peek(bad, n2, &us.h), KH_ERR_VERSION);
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, bad, n2, &us), KH_ERR_VERSION);
	}
	/* no third destination: another P1 is refused, and no block number is spent on it */
	{
		uint8_t other[KH_USAGE_MAX];
		size_t n3 = export(u, 2, other, sizeof other, &sw);
		assert_int_equal(sw, kh_err_to_sw(KH_ERR_APDU_P1P2));
		assert_int_equal(n3, 0);
		n3 = export(u, 0, other, sizeof other, &sw);
		assert_int_equal(sw, KH_SW_OK);
		assert_int_equal(kh_usage_open(u->ku, u->sign_pk, other, n3, &us), KH_OK);
		assert_int_equal(us.h.block_seq, 3);
	}

	/* what the center refuses: any flipped bit, another card's keys, a cut block */
	for (size_t i = 0; i < n; i += 11) {
		uint8_t bad[KH_USAGE_MAX];
		memcpy(bad, blk, n);
		bad[i] ^= 0x20;
		kh_err r = kh_usage_open(u->ku, u->sign_pk, bad, n, &us);
		assert_true(r == KH_ERR_AUTH || r == KH_ERR_VERSION || r == KH_ERR_FORMAT);
	}
	{
		uint8_t kp2[32], ku2[32];
		assert_int_equal(kh_authority_card_keys(u->w->auth, u->w->c2.ua, kp2, ku2), KH_OK);
		assert_int_equal(kh_usage_open(ku2, u->sign_pk, blk, n, &us), KH_ERR_AUTH);
	}
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, n - 1, &us), KH_ERR_AUTH);
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, 20, &us), KH_ERR_TRUNCATED);
}

static void test_ack(void **state)
{
	struct uw *u = *state;
	uint8_t blk[KH_USAGE_MAX], cmds[16];
	struct kh_usage us;
	struct kh_wr w;
	uint16_t sw;
	size_t n;

	buy_two(u, 55);                   /* in block 1 */
	n = export(u, 0, blk, sizeof blk, &sw);
	assert_int_equal(sw, KH_SW_OK);
	buy_two(u, 60);                   /* not in any block yet */
	/* an ACK beyond the last block made is refused, and changes nothing */
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_ack_usage(&w, 2), KH_OK);
	emm(u, cmds, w.len, KH_ERR_FORMAT);
	/* ACK of block 1: events 55 and 56 leave the log, 60 and 61 stay */
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_ack_usage(&w, 1), KH_OK);
	emm(u, cmds, w.len, KH_OK);
	n = export(u, 0, blk, sizeof blk, &sw);
	assert_int_equal(sw, KH_SW_OK);
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, n, &us), KH_OK);
	assert_int_equal(us.h.block_seq, 2);
	assert_int_equal(us.npurchases, 2);
	assert_int_equal(us.purchases[0].event, 60);
	assert_int_equal(us.purchases[1].event, 61);
	/* the card's own status agrees: two purchases left in its log */
	struct kh_cas_status st;
	assert_int_equal(kh_host_cas_status(&u->cas, &st), KH_OK);
	assert_int_equal(st.npurchases, 2);
}

static void test_hello(void **state)
{
	struct uw *u = *state;
	uint8_t nonce[32], resp[KH_APDU_MAX_RESP], other[32];
	struct kh_usage_hdr h;
	size_t n;

	assert_int_equal(kh_random(nonce, sizeof nonce), KH_OK);
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_HELLO, 0, 0, nonce, sizeof nonce, resp, sizeof resp, &n),
			 KH_SW_OK);
	assert_int_equal(kh_hello_verify(u->sign_pk, nonce, sizeof nonce, resp, n, &h), KH_OK);
	assert_int_equal(h.ua, u->w->c1.ua);
	/* bound to that nonce, that card, and whole */
	memcpy(other, nonce, 32);
	other[0] ^= 1;
	assert_int_equal(kh_hello_verify(u->sign_pk, other, sizeof other, resp, n, &h), KH_ERR_AUTH);
	resp[0] ^= 1;
	assert_int_equal(kh_hello_verify(u->sign_pk, nonce, sizeof nonce, resp, n, &h), KH_ERR_AUTH);
	assert_int_equal(kh_hello_verify(u->sign_pk, nonce, sizeof nonce, resp, n - 1, &h), KH_ERR_TRUNCATED);
	/* a nonce too short to be one */
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_HELLO, 0, 0, nonce, 8, resp, sizeof resp, &n),
			 kh_err_to_sw(KH_ERR_APDU_LEN));
}

/* A block bound to an upload session: it verifies with that session's nonce only, it is never
 * also for M1, and the card refuses a nonce of the wrong size or on P1=1 without using a seq. */
static void test_bound(void **state)
{
	struct uw *u = *state;
	uint8_t nonce[32], other[32], resp[KH_APDU_MAX_RESP], blk[KH_USAGE_MAX];
	struct kh_usage got;
	struct kh_usage_hdr h;
	size_t n;
	uint32_t seq;

	assert_int_equal(kh_random(nonce, sizeof nonce), KH_OK);
	memcpy(other, nonce, sizeof other);
	other[31] ^= 0x80;
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, 0, 0, nonce, sizeof nonce, resp, sizeof resp, &n),
			 KH_SW_OK);
	memcpy(blk, resp, n);
	assert_int_equal(kh_usage_peek(blk, n, &h), KH_OK);
	assert_int_equal(h.flags, KH_USAGE_F_SESSION);
	seq = h.block_seq;
	assert_int_equal(kh_usage_open_bound(u->ku, u->sign_pk, blk, n, nonce, sizeof nonce, &got), KH_OK);
	assert_int_equal(got.h.block_seq, seq);
	/* another nonce, a shorter one, or none: the signature does not hold */
	assert_int_equal(kh_usage_open_bound(u->ku, u->sign_pk, blk, n, other, sizeof other, &got), KH_ERR_AUTH);
	assert_int_equal(kh_usage_open_bound(u->ku, u->sign_pk, blk, n, nonce, 31, &got), KH_ERR_AUTH);
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, n, &got), KH_ERR_AUTH);
	/* the flag is signed: clearing it does not make an unbound block */
	blk[17] = 0;
	assert_int_equal(kh_usage_open(u->ku, u->sign_pk, blk, n, &got), KH_ERR_AUTH);
	/* both flags at once is no block */
	blk[17] = KH_USAGE_F_M1 | KH_USAGE_F_SESSION;
	assert_int_equal(kh_usage_peek(blk, n, &h), KH_ERR_FORMAT);
	/* an unbound block ignores a nonce */
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, 0, 0, NULL, 0, resp, sizeof resp, &n), KH_SW_OK);
	assert_int_equal(kh_usage_open_bound(u->ku, u->sign_pk, resp, n, nonce, sizeof nonce, &got), KH_OK);
	assert_int_equal(got.h.block_seq, seq + 1);
	/* the card: a nonce too short, or one on P1=1, is refused and uses no block number */
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, 0, 0, nonce, 8, resp, sizeof resp, &n),
			 kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, 1, 0, nonce, sizeof nonce, resp, sizeof resp, &n),
			 kh_err_to_sw(KH_ERR_APDU_LEN));
	assert_int_equal(send_apdu(&u->w->c1.t, KH_CLA, KH_INS_EXPORT, 0, 0, nonce, sizeof nonce, resp, sizeof resp, &n),
			 KH_SW_OK);
	assert_int_equal(kh_usage_peek(resp, n, &h), KH_OK);
	assert_int_equal(h.block_seq, seq + 2);
	/* the sealing side keeps the rule too */
	{
		struct kh_usage_hdr hb = {.ua = 1, .block_seq = 1, .card_time = 1, .flags = KH_USAGE_F_M1};
		uint8_t sk[32] = {1}, out[KH_USAGE_MAX];
		size_t on;
		assert_int_equal(kh_usage_seal_bound(u->ku, sk, &hb, NULL, 0, nonce, sizeof nonce, out, sizeof out, &on),
				 KH_ERR_INVAL);
		hb.flags = KH_USAGE_F_SESSION;
		assert_int_equal(kh_usage_seal(u->ku, sk, &hb, NULL, 0, out, sizeof out, &on), KH_ERR_INVAL);
		assert_int_equal(kh_usage_seal_bound(u->ku, sk, &hb, NULL, 0, nonce, 8, out, sizeof out, &on),
				 KH_ERR_INVAL);
	}
}

/*
 * A card whose files are copied back makes the same block numbers again. Its blocks must still
 * never share a nonce under Ku: two blocks sealed with the very same header (UA, block_seq, time,
 * flags) and different contents carry different nonces, and so share no keystream; the same
 * contents twice give different ciphertexts too. Both still open.
 */
static void test_nonce_fresh(void **state)
{
	struct uw *u = *state;
	struct kh_usage_hdr h = {.ua = 7, .block_seq = 42, .card_time = 1000, .flags = 0};
	uint8_t sk[32], pk[32], c1[64], c2[64], v[16] = {0}, a[KH_USAGE_MAX], b[KH_USAGE_MAX], c[KH_USAGE_MAX];
	size_t na, nb, nc, clen;
	struct kh_usage got;
	struct kh_wr w;

	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	kh_wr_init(&w, c1, sizeof c1);
	kh_tlv_put_u32(&w, KH_USAGE_T_CREDIT, 100);
	kh_tlv_put(&w, KH_USAGE_T_COUNTERS, v, 16);
	kh_tlv_put(&w, KH_USAGE_T_VERSIONS, v, 2);
	kh_tlv_put_u32(&w, KH_USAGE_T_RELOAD, 1);
	kh_tlv_put_u8(&w, KH_USAGE_T_EXPORT, 0);
	assert_int_equal(w.err, KH_OK);
	clen = w.len;
	memcpy(c2, c1, clen);
	c2[6] ^= 0x5A; /* another credit: the rolled-back card's different block */
	assert_int_equal(kh_usage_seal(u->ku, sk, &h, c1, clen, a, sizeof a, &na), KH_OK);
	assert_int_equal(kh_usage_seal(u->ku, sk, &h, c2, clen, b, sizeof b, &nb), KH_OK);
	assert_int_equal(kh_usage_seal(u->ku, sk, &h, c1, clen, c, sizeof c, &nc), KH_OK);
	assert_int_equal(na, nb);
	assert_int_equal(na, nc);
	/* the same clear fields, but each block its own nonce */
	assert_memory_equal(a, b, KH_USAGE_NONCE_OFF);
	assert_memory_not_equal(a + KH_USAGE_NONCE_OFF, b + KH_USAGE_NONCE_OFF, KH_NONCE_LEN);
	assert_memory_not_equal(a + KH_USAGE_NONCE_OFF, c + KH_USAGE_NONCE_OFF, KH_NONCE_LEN);
	/* so the XOR of the ciphertexts is not the XOR of the contents (no shared keystream) */
	{
		int same_stream = 1;
		for (size_t i = 0; i < clen; i++)
			if ((a[KH_USAGE_HDR_LEN + i] ^ b[KH_USAGE_HDR_LEN + i]) != (c1[i] ^ c2[i]))
				same_stream = 0;
		assert_false(same_stream);
	}
	assert_memory_not_equal(a + KH_USAGE_HDR_LEN, c + KH_USAGE_HDR_LEN, clen + KH_TAG_LEN);
	assert_int_equal(kh_usage_open(u->ku, pk, a, na, &got), KH_OK);
	assert_int_equal(got.credit, 100);
	assert_int_equal(kh_usage_open(u->ku, pk, b, nb, &got), KH_OK);
	assert_int_equal(kh_usage_open(u->ku, pk, c, nc, &got), KH_OK);
	/* the nonce is in the header: under the signature, so nobody can swap it */
	a[KH_USAGE_NONCE_OFF] ^= 1;
	assert_int_equal(kh_usage_open(u->ku, pk, a, na, &got), KH_ERR_AUTH);
	kh_wipe(sk, sizeof sk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_export_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nonce_fresh, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
