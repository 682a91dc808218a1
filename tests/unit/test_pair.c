/*
 * Seed 000 pairing engine (src/base/pair.c), tested below the module: PAIR OPEN, the answer,
 * the sealed channel in both directions, the re-key limits and the idle link. Every refusal is
 * checked for its exact error code and for leaving the channel byte-identical (pair.h: "on any
 * error nothing changes").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/pair.h"
#include "testutil.h"

#define T0 1700000000u
#define SEALED_MAX 256

static const uint8_t test_id[] = {'d', 'e', 'c', 'o', 'd', 'e', 'r', '7'};

/* One handshake between an initiator I and a responder R, with the bytes that crossed. */
struct pairing {
	uint8_t skR[32], pkR[32];
	struct kh_pair_hs hs;
	struct kh_chan ci, cr;
	uint8_t open[KH_PAIR_OPEN_MAX + 8];
	size_t openlen;
	uint8_t ans[KH_PAIR_ANSWER_LEN + 8];
	size_t anslen;
};

/* A sealed message and its length. */
struct msg {
	uint8_t b[SEALED_MAX];
	size_t n;
};

static int all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

static void keygen(struct pairing *p)
{
	memset(p, 0, sizeof *p);
	assert_int_equal(kh_x25519_keygen(p->skR, p->pkR), KH_OK);
}

/* Step 2: I makes PAIR OPEN to pkR. */
static void make_open(struct pairing *p)
{
	struct kh_wr w;
	kh_wr_init(&w, p->open, sizeof p->open);
	assert_int_equal(kh_pair_open_make(&p->hs, p->pkR, test_id, sizeof test_id, &w), KH_OK);
	p->openlen = w.len;
	assert_int_equal(p->openlen, 2 + sizeof test_id + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + KH_TAG_LEN);
	assert_int_equal(p->hs.pending, 1);
}

/* Step 3: R answers. */
static void answer(struct pairing *p)
{
	struct kh_wr w;
	kh_wr_init(&w, p->ans, sizeof p->ans);
	assert_int_equal(kh_pair_open_answer(p->skR, p->open, p->openlen, T0, &p->cr, &w), KH_OK);
	p->anslen = w.len;
	assert_int_equal(p->anslen, KH_PAIR_ANSWER_LEN);
}

/* Steps 2-4 with a fresh responder key. */
static void pair_up(struct pairing *p)
{
	keygen(p);
	make_open(p);
	answer(p);
	assert_int_equal(kh_pair_finish(&p->hs, p->ans, p->anslen, T0, &p->ci), KH_OK);
}

static void seal_cmd(struct kh_chan *ci, const uint8_t *body, size_t n, struct msg *m)
{
	struct kh_wr w;
	kh_wr_init(&w, m->b, sizeof m->b);
	assert_int_equal(kh_chan_seal_cmd(ci, body, n, &w), KH_OK);
	m->n = w.len;
	assert_int_equal(m->n, n + KH_CHAN_OVERHEAD);
}

static void open_cmd_ok(struct kh_chan *cr, const struct msg *m, const uint8_t *want, size_t wantlen)
{
	uint8_t body[SEALED_MAX];
	size_t blen = 0;
	assert_int_equal(kh_chan_open_cmd(cr, m->b, m->n, body, sizeof body, &blen), KH_OK);
	assert_int_equal(blen, wantlen);
	assert_memory_equal(body, want, wantlen);
}

static void seal_resp(struct kh_chan *cr, const uint8_t *body, size_t n, struct msg *m)
{
	struct kh_wr w;
	kh_wr_init(&w, m->b, sizeof m->b);
	assert_int_equal(kh_chan_seal_resp(cr, body, n, &w), KH_OK);
	m->n = w.len;
	assert_int_equal(m->n, n + KH_CHAN_OVERHEAD);
}

static void open_resp_ok(struct kh_chan *ci, const struct msg *m, const uint8_t *want, size_t wantlen)
{
	uint8_t body[SEALED_MAX];
	size_t blen = 0;
	assert_int_equal(kh_chan_open_resp(ci, m->b, m->n, body, sizeof body, &blen), KH_OK);
	assert_int_equal(blen, wantlen);
	assert_memory_equal(body, want, wantlen);
}

/* R must refuse msg with exactly want and leave its channel byte-identical. */
static void cmd_refused(struct kh_chan *cr, const uint8_t *b, size_t n, kh_err want)
{
	struct kh_chan before = *cr;
	uint8_t body[SEALED_MAX];
	size_t blen = 12345;
	kh_err r = kh_chan_open_cmd(cr, b, n, body, sizeof body, &blen);
	if (r != want)
		fprintf(stderr, "open_cmd len %zu: got %s, want %s\n", n, kh_err_name(r), kh_err_name(want));
	assert_int_equal(r, want);
	assert_memory_equal(&before, cr, sizeof before);
	assert_int_equal(blen, 12345);
}

/* Same at I for responses. */
static void resp_refused(struct kh_chan *ci, const uint8_t *b, size_t n, kh_err want)
{
	struct kh_chan before = *ci;
	uint8_t body[SEALED_MAX];
	size_t blen = 12345;
	kh_err r = kh_chan_open_resp(ci, b, n, body, sizeof body, &blen);
	if (r != want)
		fprintf(stderr, "open_resp len %zu: got %s, want %s\n", n, kh_err_name(r), kh_err_name(want));
	assert_int_equal(r, want);
	assert_memory_equal(&before, ci, sizeof before);
	assert_int_equal(blen, 12345);
}

/* R must refuse PAIR OPEN with exactly want: no answer written, channel byte-identical. */
static void open_refused(const uint8_t skR[32], const uint8_t *b, size_t n, struct kh_chan *cr, kh_err want)
{
	struct kh_chan before = *cr;
	uint8_t out[64];
	struct kh_wr w;
	kh_err r;

	memset(out, 0xA5, sizeof out);
	kh_wr_init(&w, out, sizeof out);
	r = kh_pair_open_answer(skR, b, n, T0 + 99, cr, &w);
	if (r != want)
		fprintf(stderr, "open_answer len %zu: got %s, want %s\n", n, kh_err_name(r), kh_err_name(want));
	assert_int_equal(r, want);
	assert_int_equal(w.len, 0);
	assert_memory_equal(&before, cr, sizeof before);
}

/* I must refuse the answer with exactly want; its channel byte-identical, handshake wiped. */
static void finish_refused(struct kh_pair_hs *hs, const uint8_t *b, size_t n, struct kh_chan *ci, kh_err want)
{
	struct kh_chan before = *ci;
	kh_err r = kh_pair_finish(hs, b, n, T0 + 99, ci);
	if (r != want)
		fprintf(stderr, "finish len %zu: got %s, want %s\n", n, kh_err_name(r), kh_err_name(want));
	assert_int_equal(r, want);
	assert_memory_equal(&before, ci, sizeof before);
	assert_true(all_zero(hs, sizeof *hs));
}

/* ---- happy path ---- */

static void test_pair_happy(void **state)
{
	struct pairing *p = calloc(1, sizeof *p), *q = calloc(1, sizeof *q);
	struct msg cmd, resp;
	uint8_t body[64];
	(void)state;
	assert_non_null(p);
	assert_non_null(q);

	pair_up(p);
	assert_true(all_zero(&p->hs, sizeof p->hs)); /* handshake secrets wiped after finish */
	assert_int_equal(p->ci.open, 1);
	assert_int_equal(p->cr.open, 1);
	assert_int_equal(p->ci.initiator, 1);
	assert_int_equal(p->cr.initiator, 0);
	assert_memory_equal(p->ci.k_send, p->cr.k_recv, 32);
	assert_memory_equal(p->ci.k_recv, p->cr.k_send, 32);
	assert_memory_not_equal(p->ci.k_send, p->ci.k_recv, 32);
	assert_false(all_zero(p->ci.k_send, 32));
	assert_int_equal(p->ci.sent, 0);
	assert_int_equal(p->ci.accepted, 0);
	assert_int_equal(p->cr.accepted, 0);
	assert_int_equal(p->ci.max_msgs, KH_CHAN_MAX_MSGS);
	assert_int_equal(p->cr.max_msgs, KH_CHAN_MAX_MSGS);
	assert_int_equal(p->ci.opened_at, T0);
	assert_int_equal(p->cr.opened_at, T0);
	assert_int_equal(p->open[0], KH_PAIR_VERSION);
	assert_int_equal(p->open[1], sizeof test_id);
	assert_memory_equal(p->open + 2, test_id, sizeof test_id);
	assert_int_equal(p->ans[0], KH_PAIR_VERSION);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 0);

	/* A second handshake with the same responder gives independent keys. */
	memcpy(q->skR, p->skR, 32);
	memcpy(q->pkR, p->pkR, 32);
	make_open(q);
	answer(q);
	assert_int_equal(kh_pair_finish(&q->hs, q->ans, q->anslen, T0, &q->ci), KH_OK);
	assert_memory_not_equal(p->ci.k_send, q->ci.k_send, 32);
	assert_memory_not_equal(p->open, q->open, p->openlen);

	/* Several rounds, every length from empty up; counters advance by one per round. */
	for (uint32_t i = 1; i <= 40; i++) {
		size_t n = (i - 1) % sizeof body;
		for (size_t k = 0; k < n; k++)
			body[k] = (uint8_t)(i * 7 + k);
		seal_cmd(&p->ci, body, n, &cmd);
		assert_int_equal(cmd.b[0], KH_PAIR_VERSION);
		assert_int_equal(kh_get_be32(cmd.b + 1), i);
		assert_int_equal(p->ci.sent, i);
		open_cmd_ok(&p->cr, &cmd, body, n);
		assert_int_equal(p->cr.accepted, i);
		/* the response carries the same counter, under the other key */
		for (size_t k = 0; k < n; k++)
			body[k] ^= 0xFF;
		seal_resp(&p->cr, body, n, &resp);
		assert_int_equal(kh_get_be32(resp.b + 1), i);
		if (n)
			assert_memory_not_equal(resp.b + 5, cmd.b + 5, n);
		open_resp_ok(&p->ci, &resp, body, n);
		assert_int_equal(p->ci.accepted, i);
		assert_int_equal(p->ci.sent, i);
	}
	/* The key of the other handshake opens nothing of this one. */
	seal_cmd(&p->ci, body, 8, &cmd);
	cmd_refused(&q->cr, cmd.b, cmd.n, KH_ERR_CHAN_AUTH);
	open_cmd_ok(&p->cr, &cmd, body, 8);

	kh_wipe(p, sizeof *p);
	kh_wipe(q, sizeof *q);
	free(p);
	free(q);
}

static void test_pair_args(void **state)
{
	struct pairing p;
	uint8_t id[KH_PAIR_ID_MAX + 1] = {0};
	uint8_t buf[KH_PAIR_OPEN_MAX + 8];
	struct kh_wr w;
	(void)state;

	keygen(&p);
	/* idlen over the maximum is refused by the maker, nothing written, no handshake pending */
	kh_wr_init(&w, buf, sizeof buf);
	assert_int_equal(kh_pair_open_make(&p.hs, p.pkR, id, sizeof id, &w), KH_ERR_INVAL);
	assert_int_equal(w.len, 0);
	assert_int_equal(p.hs.pending, 0);
	/* the maximum id and the empty id both pair */
	kh_wr_init(&w, buf, sizeof buf);
	assert_int_equal(kh_pair_open_make(&p.hs, p.pkR, id, KH_PAIR_ID_MAX, &w), KH_OK);
	assert_int_equal(w.len, KH_PAIR_OPEN_MAX);
	{
		uint8_t ans[KH_PAIR_ANSWER_LEN];
		struct kh_wr wa;
		kh_wr_init(&wa, ans, sizeof ans);
		assert_int_equal(kh_pair_open_answer(p.skR, buf, w.len, T0, &p.cr, &wa), KH_OK);
		assert_int_equal(kh_pair_finish(&p.hs, ans, wa.len, T0, &p.ci), KH_OK);
		assert_memory_equal(p.ci.k_send, p.cr.k_recv, 32);
	}
	kh_wr_init(&w, buf, sizeof buf);
	assert_int_equal(kh_pair_open_make(&p.hs, p.pkR, NULL, 0, &w), KH_OK);
	assert_int_equal(w.len, 2 + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + KH_TAG_LEN);
	{
		uint8_t ans[KH_PAIR_ANSWER_LEN];
		struct kh_wr wa;
		kh_wr_init(&wa, ans, sizeof ans);
		assert_int_equal(kh_pair_open_answer(p.skR, buf, w.len, T0, &p.cr, &wa), KH_OK);
		assert_int_equal(kh_pair_finish(&p.hs, ans, wa.len, T0, &p.ci), KH_OK);
	}
	kh_wipe(&p, sizeof p);
}

/* ---- PAIR OPEN refused ---- */

static void test_open_refused(void **state)
{
	struct pairing *p = calloc(1, sizeof *p), *other = calloc(1, sizeof *other);
	uint8_t m[KH_PAIR_OPEN_MAX + 8];
	size_t n, idl = sizeof test_id;
	(void)state;
	assert_non_null(p);
	assert_non_null(other);

	/* R already holds a channel: every refusal must leave it exactly as it is. */
	pair_up(p);
	make_open(p);
	n = p->openlen;
	memcpy(m, p->open, n);

	/* sealed to another responder's key */
	keygen(other);
	open_refused(other->skR, m, n, &p->cr, KH_ERR_PAIR_OPEN);

	/* version byte */
	for (int v = 0; v < 256; v++) {
		if (v == KH_PAIR_VERSION)
			continue;
		m[0] = (uint8_t)v;
		open_refused(p->skR, m, n, &p->cr, KH_ERR_VERSION);
	}
	m[0] = KH_PAIR_VERSION;

	/* truncated at every length */
	for (size_t k = 0; k < n; k++)
		open_refused(p->skR, m, k, &p->cr, KH_ERR_TRUNCATED);
	/* one trailing byte (any value) */
	m[n] = 0;
	open_refused(p->skR, m, n + 1, &p->cr, KH_ERR_TRAILING);
	m[n] = 0xFF;
	open_refused(p->skR, m, n + 1, &p->cr, KH_ERR_TRAILING);

	/* any single bit flipped in id, enc or ct */
	for (size_t i = 2; i < n; i++) {
		for (int b = 0; b < 8; b++) {
			m[i] ^= (uint8_t)(1u << b);
			open_refused(p->skR, m, n, &p->cr, KH_ERR_PAIR_OPEN);
			m[i] ^= (uint8_t)(1u << b);
		}
	}
	/* a flipped idlen moves every boundary: too long, cut short, or bytes left over */
	for (int b = 0; b < 8; b++) {
		uint8_t nl = (uint8_t)(idl ^ (1u << b));
		kh_err want = nl > KH_PAIR_ID_MAX ? KH_ERR_FORMAT : nl > idl ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
		m[1] = nl;
		open_refused(p->skR, m, n, &p->cr, want);
	}
	m[1] = (uint8_t)idl;

	/* idlen > 32, with exactly as many bytes as such an id would need */
	{
		uint8_t big[2 + 255 + 32 + 64];
		for (unsigned il = KH_PAIR_ID_MAX + 1; il <= 255; il += (il < 40 ? 1 : 43)) {
			size_t bn = 2 + il + 32 + KH_PAIR_CI_LEN + KH_PAIR_A_LEN + KH_TAG_LEN;
			memset(big, 0x5A, sizeof big);
			big[0] = KH_PAIR_VERSION;
			big[1] = (uint8_t)il;
			open_refused(p->skR, big, bn, &p->cr, KH_ERR_FORMAT);
		}
	}

	/* and the untouched message still opens */
	{
		uint8_t ans[KH_PAIR_ANSWER_LEN];
		struct kh_wr w;
		kh_wr_init(&w, ans, sizeof ans);
		assert_int_equal(kh_pair_open_answer(p->skR, m, n, T0 + 5, &p->cr, &w), KH_OK);
		assert_int_equal(p->cr.opened_at, T0 + 5);
		assert_int_equal(p->cr.accepted, 0);
	}
	kh_wipe(p, sizeof *p);
	free(p);
	free(other);
}

/* ---- the answer refused ---- */

static void test_answer_refused(void **state)
{
	struct pairing *p = calloc(1, sizeof *p), *q = calloc(1, sizeof *q);
	struct kh_pair_hs saved, zero;
	uint8_t a[KH_PAIR_ANSWER_LEN + 8];
	size_t n;
	(void)state;
	assert_non_null(p);
	assert_non_null(q);
	memset(&zero, 0, sizeof zero);

	/* I already holds an open channel, so "untouched" means something. */
	pair_up(p);
	make_open(p);
	answer(p);
	saved = p->hs;
	n = p->anslen;
	memcpy(a, p->ans, n);

	/* every bit: the version byte -> VERSION, the rest -> PAIR_AUTH */
	for (size_t i = 0; i < n; i++) {
		for (int b = 0; b < 8; b++) {
			a[i] ^= (uint8_t)(1u << b);
			p->hs = saved;
			finish_refused(&p->hs, a, n, &p->ci, i == 0 ? KH_ERR_VERSION : KH_ERR_PAIR_AUTH);
			a[i] ^= (uint8_t)(1u << b);
		}
	}
	/* truncated at every length, one trailing byte */
	for (size_t k = 0; k < n; k++) {
		p->hs = saved;
		finish_refused(&p->hs, a, k, &p->ci, KH_ERR_TRUNCATED);
	}
	a[n] = 0;
	p->hs = saved;
	finish_refused(&p->hs, a, n + 1, &p->ci, KH_ERR_TRAILING);

	/* an answer from a different handshake with the same responder */
	memcpy(q->skR, p->skR, 32);
	memcpy(q->pkR, p->pkR, 32);
	make_open(q);
	answer(q);
	p->hs = saved;
	finish_refused(&p->hs, q->ans, q->anslen, &p->ci, KH_ERR_PAIR_AUTH);
	/* ...and the genuine answer to that one is still good for its own handshake */
	assert_int_equal(kh_pair_finish(&q->hs, q->ans, q->anslen, T0, &q->ci), KH_OK);
	assert_memory_equal(q->ci.k_send, q->cr.k_recv, 32);

	/* finish without a handshake pending: nothing at all happens */
	{
		struct kh_chan before = p->ci;
		assert_int_equal(kh_pair_finish(&zero, a, n, T0, &p->ci), KH_ERR_PAIR_STATE);
		assert_memory_equal(&before, &p->ci, sizeof before);
	}
	/* the genuine answer now finishes, then a second finish is out of order */
	p->hs = saved;
	assert_int_equal(kh_pair_finish(&p->hs, a, n, T0 + 7, &p->ci), KH_OK);
	assert_true(all_zero(&p->hs, sizeof p->hs));
	assert_memory_equal(p->ci.k_send, p->cr.k_recv, 32);
	assert_int_equal(p->ci.opened_at, T0 + 7);
	{
		struct kh_chan before = p->ci;
		assert_int_equal(kh_pair_finish(&p->hs, a, n, T0, &p->ci), KH_ERR_PAIR_STATE);
		assert_memory_equal(&before, &p->ci, sizeof before);
	}
	kh_wipe(&saved, sizeof saved);
	kh_wipe(p, sizeof *p);
	kh_wipe(q, sizeof *q);
	free(p);
	free(q);
}

/* ---- sealed commands at the responder ---- */

static void test_cmd_refused(void **state)
{
	static const uint8_t b1[] = "first command", b2[] = "second", b3[] = "third one";
	struct pairing *p = calloc(1, sizeof *p);
	struct msg c1, c2, c3, x;
	(void)state;
	assert_non_null(p);

	pair_up(p);
	/* not paired yet at R's side of a wiped channel, wrong direction */
	{
		struct kh_chan none;
		memset(&none, 0, sizeof none);
		seal_cmd(&p->ci, b1, sizeof b1, &c1);
		cmd_refused(&none, c1.b, c1.n, KH_ERR_NOT_PAIRED);
		cmd_refused(&p->ci, c1.b, c1.n, KH_ERR_NOT_PAIRED); /* an initiator does not open commands */
	}
	open_cmd_ok(&p->cr, &c1, b1, sizeof b1);

	/* replay of the command just accepted */
	cmd_refused(&p->cr, c1.b, c1.n, KH_ERR_CHAN_REPLAY);

	seal_cmd(&p->ci, b2, sizeof b2, &c2);
	seal_cmd(&p->ci, b3, sizeof b3, &c3);
	assert_int_equal(kh_get_be32(c2.b + 1), 2);
	assert_int_equal(kh_get_be32(c3.b + 1), 3);

	/* truncated: every prefix; shorter than the header and tag -> TRUNCATED, else the tag fails */
	for (size_t k = 0; k < c2.n; k++)
		cmd_refused(&p->cr, c2.b, k, k < KH_CHAN_OVERHEAD ? KH_ERR_TRUNCATED : KH_ERR_CHAN_AUTH);
	/* one byte more */
	x = c2;
	x.b[x.n++] = 0;
	cmd_refused(&p->cr, x.b, x.n, KH_ERR_CHAN_AUTH);
	/* any bit in ciphertext or tag */
	x = c2;
	for (size_t i = 5; i < x.n; i++)
		for (int b = 0; b < 8; b++) {
			x.b[i] ^= (uint8_t)(1u << b);
			cmd_refused(&p->cr, x.b, x.n, KH_ERR_CHAN_AUTH);
			x.b[i] ^= (uint8_t)(1u << b);
		}
	/* wrong version */
	for (int v = 0; v < 256; v++) {
		if (v == KH_PAIR_VERSION)
			continue;
		x.b[0] = (uint8_t)v;
		cmd_refused(&p->cr, x.b, x.n, KH_ERR_VERSION);
	}
	x.b[0] = KH_PAIR_VERSION;
	/* a response (other key) reflected back as a command */
	{
		struct msg r;
		seal_resp(&p->cr, b1, sizeof b1, &r); /* counter 1, already accepted */
		cmd_refused(&p->cr, r.b, r.n, KH_ERR_CHAN_REPLAY);
		kh_put_be32(r.b + 1, 2); /* with a fresh counter it fails the tag */
		cmd_refused(&p->cr, r.b, r.n, KH_ERR_CHAN_AUTH);
	}
	/* body buffer too small */
	{
		struct kh_chan before = p->cr;
		uint8_t small[4];
		size_t blen = 99;
		assert_int_equal(kh_chan_open_cmd(&p->cr, c2.b, c2.n, small, sizeof small, &blen), KH_ERR_TOO_LARGE);
		assert_memory_equal(&before, &p->cr, sizeof before);
		assert_int_equal(blen, 99);
	}

	/* reordered: 3 delivered, then 2 */
	open_cmd_ok(&p->cr, &c3, b3, sizeof b3);
	assert_int_equal(p->cr.accepted, 3);
	cmd_refused(&p->cr, c2.b, c2.n, KH_ERR_CHAN_REPLAY);
	cmd_refused(&p->cr, c3.b, c3.n, KH_ERR_CHAN_REPLAY);
	cmd_refused(&p->cr, c1.b, c1.n, KH_ERR_CHAN_REPLAY);

	/* after all those refusals the channel goes on */
	{
		struct msg c4, r4;
		static const uint8_t b4[] = "fourth";
		seal_cmd(&p->ci, b4, sizeof b4, &c4);
		open_cmd_ok(&p->cr, &c4, b4, sizeof b4);
		seal_resp(&p->cr, b4, sizeof b4, &r4);
		/* I sent 2 and 3 without taking their answers; the answer to 4 is the outstanding one */
		open_resp_ok(&p->ci, &r4, b4, sizeof b4);
	}
	kh_wipe(p, sizeof *p);
	free(p);
}

/*
 * A bit flipped in the counter of a command: the message is not authentic, so R must say so
 * (CHAN_AUTH) or, when the forged counter is not fresh, CHAN_REPLAY. Any other code (e.g.
 * CHAN_REKEY for a forged counter above the re-key limit) misreports a forgery.
 */
static void test_cmd_counter_flip(void **state)
{
	static const uint8_t b[] = "counter";
	struct pairing *p = calloc(1, sizeof *p);
	struct msg c1, c2;
	int bad = 0;
	(void)state;
	assert_non_null(p);

	pair_up(p);
	seal_cmd(&p->ci, b, sizeof b, &c1);
	open_cmd_ok(&p->cr, &c1, b, sizeof b);
	seal_cmd(&p->ci, b, sizeof b, &c2); /* counter 2, accepted is 1 */
	for (size_t i = 1; i < 5; i++)
		for (int k = 0; k < 8; k++) {
			struct kh_chan before = p->cr;
			uint8_t body[64];
			size_t blen;
			uint32_t ctr;
			kh_err r, want;
			c2.b[i] ^= (uint8_t)(1u << k);
			ctr = kh_get_be32(c2.b + 1);
			want = ctr <= 1 ? KH_ERR_CHAN_REPLAY : KH_ERR_CHAN_AUTH;
			r = kh_chan_open_cmd(&p->cr, c2.b, c2.n, body, sizeof body, &blen);
			assert_memory_equal(&before, &p->cr, sizeof before);
			if (r != want) {
				fprintf(stderr, "forged counter %u: got %s, want %s\n", (unsigned)ctr, kh_err_name(r),
					kh_err_name(want));
				bad++;
			}
			c2.b[i] ^= (uint8_t)(1u << k);
		}
	open_cmd_ok(&p->cr, &c2, b, sizeof b);
	kh_wipe(p, sizeof *p);
	free(p);
	assert_int_equal(bad, 0);
}

/* ---- sealed responses at the initiator ---- */

static void test_resp_refused(void **state)
{
	static const uint8_t q1[] = "query 1", a1[] = "answer one", q2[] = "query 2", a2[] = "answer two";
	struct pairing *p = calloc(1, sizeof *p), *o = calloc(1, sizeof *o);
	struct msg c, r1, r2, x;
	(void)state;
	assert_non_null(p);
	assert_non_null(o);

	pair_up(p);
	/* a responder's channel does not open responses */
	seal_cmd(&p->ci, q1, sizeof q1, &c);
	open_cmd_ok(&p->cr, &c, q1, sizeof q1);
	seal_resp(&p->cr, a1, sizeof a1, &r1);
	resp_refused(&p->cr, r1.b, r1.n, KH_ERR_NOT_PAIRED);
	/* I's own command reflected as a response: right counter, wrong key */
	resp_refused(&p->ci, c.b, c.n, KH_ERR_CHAN_AUTH);
	/* a response with the right counter from another channel */
	pair_up(o);
	{
		struct msg oc, orr;
		seal_cmd(&o->ci, q1, sizeof q1, &oc);
		open_cmd_ok(&o->cr, &oc, q1, sizeof q1);
		seal_resp(&o->cr, a1, sizeof a1, &orr);
		resp_refused(&p->ci, orr.b, orr.n, KH_ERR_CHAN_AUTH);
	}

	/* truncated at every prefix */
	for (size_t k = 0; k < r1.n; k++)
		resp_refused(&p->ci, r1.b, k, k < KH_CHAN_OVERHEAD ? KH_ERR_TRUNCATED : KH_ERR_CHAN_AUTH);
	x = r1;
	x.b[x.n++] = 0;
	resp_refused(&p->ci, x.b, x.n, KH_ERR_CHAN_AUTH);
	/* every bit: version -> VERSION, counter -> REPLAY (not the outstanding one), body/tag -> AUTH */
	x = r1;
	for (size_t i = 0; i < x.n; i++)
		for (int b = 0; b < 8; b++) {
			x.b[i] ^= (uint8_t)(1u << b);
			resp_refused(&p->ci, x.b, x.n,
				     i == 0 ? KH_ERR_VERSION : i < 5 ? KH_ERR_CHAN_REPLAY : KH_ERR_CHAN_AUTH);
			x.b[i] ^= (uint8_t)(1u << b);
		}
	/* body buffer too small */
	{
		struct kh_chan before = p->ci;
		uint8_t small[4];
		size_t blen = 99;
		assert_int_equal(kh_chan_open_resp(&p->ci, r1.b, r1.n, small, sizeof small, &blen), KH_ERR_TOO_LARGE);
		assert_memory_equal(&before, &p->ci, sizeof before);
	}

	open_resp_ok(&p->ci, &r1, a1, sizeof a1);
	/* the same response again: counter already taken */
	resp_refused(&p->ci, r1.b, r1.n, KH_ERR_CHAN_REPLAY);

	/* a response whose counter is not the outstanding command's */
	seal_cmd(&p->ci, q2, sizeof q2, &c);
	resp_refused(&p->ci, r1.b, r1.n, KH_ERR_CHAN_REPLAY); /* old answer to the new question */
	open_cmd_ok(&p->cr, &c, q2, sizeof q2);
	seal_resp(&p->cr, a2, sizeof a2, &r2);
	{
		/* an authentic answer relabelled with a future counter */
		x = r2;
		kh_put_be32(x.b + 1, 3);
		resp_refused(&p->ci, x.b, x.n, KH_ERR_CHAN_REPLAY);
	}
	open_resp_ok(&p->ci, &r2, a2, sizeof a2);
	assert_int_equal(p->ci.accepted, 2);
	assert_int_equal(p->ci.sent, 2);

	/* R answers only what it accepted */
	{
		struct pairing *z = calloc(1, sizeof *z);
		struct kh_wr w;
		uint8_t out[64];
		assert_non_null(z);
		pair_up(z);
		kh_wr_init(&w, out, sizeof out);
		assert_int_equal(kh_chan_seal_resp(&z->cr, a1, sizeof a1, &w), KH_ERR_PAIR_STATE);
		kh_wr_init(&w, out, sizeof out);
		assert_int_equal(kh_chan_seal_resp(&z->ci, a1, sizeof a1, &w), KH_ERR_NOT_PAIRED);
		kh_wr_init(&w, out, sizeof out);
		assert_int_equal(kh_chan_seal_cmd(&z->cr, a1, sizeof a1, &w), KH_ERR_NOT_PAIRED);
		assert_int_equal(z->cr.sent, 0);
		kh_wipe(z, sizeof *z);
		free(z);
	}
	kh_wipe(p, sizeof *p);
	kh_wipe(o, sizeof *o);
	free(p);
	free(o);
}

/* ---- re-key limits ---- */

static void test_rekey_limits(void **state)
{
	static const uint8_t b[] = "x";
	struct pairing *p = calloc(1, sizeof *p);
	struct msg c[4];
	(void)state;
	assert_non_null(p);

	pair_up(p);
	p->ci.max_msgs = 3;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 0);
		seal_cmd(&p->ci, b, sizeof b, &c[i]);
	}
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 1);
	{
		struct kh_chan before = p->ci;
		uint8_t out[64];
		struct kh_wr w;
		kh_wr_init(&w, out, sizeof out);
		assert_int_equal(kh_chan_seal_cmd(&p->ci, b, sizeof b, &w), KH_ERR_CHAN_REKEY);
		assert_memory_equal(&before, &p->ci, sizeof before);
		assert_int_equal(w.len, 0);
	}

	/* age: due at opened_at + KH_CHAN_MAX_AGE, not one second before; a clock gone back too */
	pair_up(p);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 0);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0 + KH_CHAN_MAX_AGE - 1), 0);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0 + KH_CHAN_MAX_AGE), 1);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0 + 10 * KH_CHAN_MAX_AGE), 1);
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0 - 1), 1);
	/* a closed channel always needs pairing */
	{
		struct kh_chan none;
		memset(&none, 0, sizeof none);
		assert_int_equal(kh_chan_needs_rekey(&none, 0), 1);
	}
	/* the message limit at its default: due exactly at KH_CHAN_MAX_MSGS */
	p->ci.sent = KH_CHAN_MAX_MSGS - 1;
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 0);
	p->ci.sent = KH_CHAN_MAX_MSGS;
	assert_int_equal(kh_chan_needs_rekey(&p->ci, T0), 1);

	/* R with a lowered limit refuses a counter above it, and changes nothing */
	pair_up(p);
	p->cr.max_msgs = 2;
	for (int i = 0; i < 3; i++)
		seal_cmd(&p->ci, b, sizeof b, &c[i]);
	open_cmd_ok(&p->cr, &c[0], b, sizeof b);
	open_cmd_ok(&p->cr, &c[1], b, sizeof b);
	cmd_refused(&p->cr, c[2].b, c[2].n, KH_ERR_CHAN_REKEY);
	assert_int_equal(p->cr.accepted, 2);
	/* a fresh pairing restores the default limit */
	pair_up(p);
	assert_int_equal(p->cr.max_msgs, KH_CHAN_MAX_MSGS);
	kh_wipe(p, sizeof *p);
	free(p);
}

/* ---- the link state machine before pairing ---- */

static void test_link_idle(void **state)
{
	struct kh_link *l = calloc(1, sizeof *l);
	uint8_t root[32], out[KH_APDU_MAX_CMD];
	static const uint8_t inner[] = {KH_CLA, KH_INS_ECHO, 0, 0, 1, 0x42};
	static const uint8_t get_cert[] = {KH_CLA, KH_INS_GET_CERT, 0, 0, 0};
	enum kh_link_result res;
	struct kh_wr w;
	(void)state;
	assert_non_null(l);

	memset(root, 0x11, sizeof root);
	kh_link_init(l, root, KH_ROLE_CAM, (const uint8_t *)"decoder", 7);
	assert_int_equal(l->state, KH_LINK_IDLE);
	assert_int_equal(l->idlen, 7);
	assert_int_equal(l->peer_role, KH_ROLE_CAM);

	kh_wr_init(&w, out, sizeof out);
	assert_int_equal(kh_link_send(l, inner, sizeof inner, T0, &w), KH_ERR_NOT_PAIRED);
	assert_int_equal(w.len, 0);
	assert_int_equal(l->state, KH_LINK_IDLE);
	/* no response is expected while idle */
	{
		static const uint8_t ok[] = {0x90, 0x00};
		assert_int_equal(kh_link_step(l, ok, sizeof ok, T0, &w, &res), KH_ERR_PAIR_STATE);
		assert_int_equal(w.len, 0);
	}

	/* start: GET CERT (case 2, Le 256); sending while the pairing runs is out of order */
	assert_int_equal(kh_link_start(l, &w), KH_OK);
	assert_int_equal(w.len, sizeof get_cert);
	assert_memory_equal(out, get_cert, sizeof get_cert);
	assert_int_equal(l->state, KH_LINK_WANT_CERT);
	kh_wr_init(&w, out, sizeof out);
	assert_int_equal(kh_link_send(l, inner, sizeof inner, T0, &w), KH_ERR_PAIR_STATE);
	assert_int_equal(w.len, 0);

	/* the peer refuses GET CERT: its error comes back and the link falls back to idle */
	{
		static const uint8_t np[] = {0x69, 0x85};
		assert_int_equal(kh_link_step(l, np, sizeof np, T0, &w, &res), KH_ERR_NOT_PERSONALISED);
		assert_int_equal(l->state, KH_LINK_IDLE);
	}
	/* a response too short to hold a status word */
	assert_int_equal(kh_link_start(l, &w), KH_OK);
	kh_wr_init(&w, out, sizeof out);
	{
		static const uint8_t one[] = {0x90};
		assert_int_equal(kh_link_step(l, one, sizeof one, T0, &w, &res), KH_ERR_APDU_LEN);
		assert_int_equal(l->state, KH_LINK_IDLE);
	}
	/* a certificate that is garbage */
	kh_wr_init(&w, out, sizeof out);
	assert_int_equal(kh_link_start(l, &w), KH_OK);
	kh_wr_init(&w, out, sizeof out);
	{
		static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x00, 0x90, 0x00};
		assert_int_equal(kh_link_step(l, junk, sizeof junk, T0, &w, &res), KH_ERR_CERT);
		assert_int_equal(l->state, KH_LINK_IDLE);
		assert_int_equal(w.len, 0);
	}
	kh_link_wipe(l);
	free(l);
}

/*
 * A host records PAIR OPEN and the sealed commands that follow, then replays them. The responder
 * draws a fresh Nr each time, so the replayed PAIR OPEN yields keys nobody else knows: the
 * replayed commands fail to authenticate instead of being accepted again, and no answer is ever
 * sealed twice under one key and nonce.
 */
static void test_open_replay(void **state)
{
	struct pairing *p = calloc(1, sizeof *p);
	static const uint8_t body1[] = {0x80, 0x10, 0x00, 0x00};
	uint8_t ans2[KH_PAIR_ANSWER_LEN], body[SEALED_MAX];
	struct kh_chan genuine, before;
	struct kh_wr w;
	struct msg m1, r1;
	size_t blen;

	(void)state;
	assert_non_null(p);
	pair_up(p);
	seal_cmd(&p->ci, body1, sizeof body1, &m1);
	open_cmd_ok(&p->cr, &m1, body1, sizeof body1);
	seal_resp(&p->cr, body1, sizeof body1, &r1);
	genuine = p->cr;

	/* the replayed PAIR OPEN opens (anyone may pair), but into a channel with new keys */
	kh_wr_init(&w, ans2, sizeof ans2);
	assert_int_equal(kh_pair_open_answer(p->skR, p->open, p->openlen, T0 + 1, &p->cr, &w), KH_OK);
	assert_int_equal(w.len, KH_PAIR_ANSWER_LEN);
	assert_memory_not_equal(ans2 + 1, p->ans + 1, KH_PAIR_NR_LEN);
	assert_memory_not_equal(p->cr.k_recv, genuine.k_recv, 32);
	assert_memory_not_equal(p->cr.k_send, genuine.k_send, 32);
	assert_int_equal(p->cr.accepted, 0);

	/* the recorded command: refused, and nothing moves */
	before = p->cr;
	assert_int_equal(kh_chan_open_cmd(&p->cr, m1.b, m1.n, body, sizeof body, &blen), KH_ERR_CHAN_AUTH);
	assert_memory_equal(&p->cr, &before, sizeof before);

	/* the old answer does not finish a new handshake either */
	make_open(p);
	assert_int_equal(kh_pair_finish(&p->hs, ans2, sizeof ans2, T0, &p->ci), KH_ERR_PAIR_AUTH);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pair_happy),
		cmocka_unit_test(test_pair_args),
		cmocka_unit_test(test_open_refused),
		cmocka_unit_test(test_answer_refused),
		cmocka_unit_test(test_open_replay),
		cmocka_unit_test(test_cmd_refused),
		cmocka_unit_test(test_cmd_counter_flip),
		cmocka_unit_test(test_resp_refused),
		cmocka_unit_test(test_rekey_limits),
		cmocka_unit_test(test_link_idle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
