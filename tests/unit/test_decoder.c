/*
 * The decoder engine (src/host/decoder.c) on synthetic transport streams built here as a headend
 * would: PAT, CAT naming the EMM PID, PMT naming the ECM PID (and the scrambling mode for AES),
 * EMMs sealed under the card's Kp (SET KEY, ENTITLE, ADD CREDIT), ECMs sealed under the service
 * key with CW_k in the slot of parity k and CW_{k-1} in the other, sent ahead of their period
 * (the lead) and repeated, and component packets scrambled per crypto period. Then through a
 * real decoder -> CAM -> card session (tests/unit/world.c): the clear output must be the clear
 * input, byte for byte, and must never hold a scrambled packet, whatever the card says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/authority.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/decoder.h"
#include "keyhole/host.h"
#include "keyhole/scramble.h"
#include "keyhole/ts.h"
#include "testutil.h"
#include "world.h"

#define PKT KH_TS_PACKET_LEN
#define PROGRAM 1
#define PMT_PID 0x100
#define VID_PID 0x101
#define AUD_PID 0x102
#define ECM_PID 0x200
#define EMM_PID 0x300
#define OTHER_PID 0x400 /* a clear PID outside the service (e.g. teletext of another program) */
#define CASID 0x4B48
#define PERIODS 6
#define PER_PERIOD 90
#define PRODUCT 7
#define EVENT 42
#define PRICE 30

/* ---- the headend side ---- */

struct scenario {
	enum kh_scr_alg alg;
	uint8_t access;  /* KH_ECM_PRODUCT or KH_ECM_EVENT */
	int set_key;     /* the card gets the service key */
	int entitle;     /* ... and the right to PRODUCT */
	uint32_t credit; /* ... and this credit (0: none) */
	uint32_t ua;     /* the card the unique EMM is for */
	uint32_t other_ua; /* a unique EMM for another card too (0: none) */
	/* hostile streams (0: none) */
	int lose_ecm;    /* 1 + k: every copy of ECM k left out */
	int forge;       /* just before the first copy of each ECM k >= 1, a copy with one byte changed */
	int foreign;     /* another operator's ECMs on the ECM PID, every few packets, with the
			  * (table_id, cp) of the genuine ones to come */
	int stagger;     /* the audio switches to each new period 20 of its packets after the video */
	int inject;      /* one video packet of the next period's parity injected mid-period */
	const uint8_t *sk; /* the service key (NULL: a random one) */
};

struct stream {
	uint8_t *ts;
	size_t n, cap; /* packets */
	uint8_t *clear; /* the component packets in clear, in stream order */
	size_t nclear, ccap;
	size_t ecm_pos[PERIODS];   /* stream packet index where ECM k first appears */
	size_t clear_at[PERIODS];  /* component packets before it */
	size_t period_at[PERIODS]; /* component packets before period k */
	int lose, forge;           /* from the scenario */
	uint8_t fecm[PERIODS][KH_ECM_MAX]; /* the foreign operator's ECMs */
	size_t fecm_len[PERIODS];
	uint8_t cc[KH_TS_PID_MAX + 1];
	uint8_t ecm[PERIODS][KH_ECM_MAX];
	size_t ecm_len[PERIODS];
	uint8_t emm[2][KH_EMM_MAX];
	size_t emm_len[2], nemm;
};

static uint8_t *slot(uint8_t **buf, size_t *n, size_t *cap)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 1024;
		*buf = realloc(*buf, *cap * PKT);
		assert_non_null(*buf);
	}
	return *buf + (*n)++ * PKT;
}

static void put_section(struct stream *s, uint16_t pid, const uint8_t *sec, size_t n)
{
	uint8_t pk[8 * PKT];
	size_t len;
	assert_int_equal(kh_ts_packetise(pid, &s->cc[pid], sec, n, pk, sizeof pk, &len), KH_OK);
	for (size_t i = 0; i < len / PKT; i++)
		memcpy(slot(&s->ts, &s->n, &s->cap), pk + i * PKT, PKT);
}

static void put_psi(struct stream *s, const struct scenario *sc)
{
	struct kh_ts_pat *pat = calloc(1, sizeof *pat);
	struct kh_ts_pmt *pmt = calloc(1, sizeof *pmt);
	struct kh_ts_cat cat;
	uint8_t sec[KH_TS_PSI_MAX], pdesc[64], cdesc[16];
	static const uint8_t lang[] = {0x0A, 4, 'e', 'n', 'g', 0}; /* ISO_639_language_descriptor */
	struct kh_wr w;
	size_t len;

	assert_non_null(pat);
	assert_non_null(pmt);
	pat->tsid = 1;
	pat->current = 1;
	pat->n = 2;
	pat->prog[0].program_number = 0; /* network PID */
	pat->prog[0].pid = 0x10;
	pat->prog[1].program_number = PROGRAM;
	pat->prog[1].pid = PMT_PID;
	assert_int_equal(kh_ts_pat_build(pat, sec, sizeof sec, &len), KH_OK);
	put_section(s, KH_TS_PID_PAT, sec, len);

	kh_wr_init(&w, cdesc, sizeof cdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, CASID, EMM_PID, NULL, 0), KH_OK);
	memset(&cat, 0, sizeof cat);
	cat.current = 1;
	cat.desc = cdesc;
	cat.desc_len = w.len;
	assert_int_equal(kh_ts_cat_build(&cat, sec, sizeof sec, &len), KH_OK);
	put_section(s, KH_TS_PID_CAT, sec, len);

	kh_wr_init(&w, pdesc, sizeof pdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, CASID, ECM_PID, NULL, 0), KH_OK);
	if (sc->alg != KH_SCR_CSA2)
		assert_int_equal(kh_ts_scrambling_desc_put(&w, sc->alg == KH_SCR_CISSA ? KH_TS_SCRAMBLING_CISSA1
											: KH_TS_SCRAMBLING_IDSA),
				 KH_OK);
	pmt->program_number = PROGRAM;
	pmt->version = 3;
	pmt->current = 1;
	pmt->pcr_pid = VID_PID;
	pmt->desc = pdesc;
	pmt->desc_len = w.len;
	pmt->n = 2;
	pmt->es[0].stream_type = 0x1B;
	pmt->es[0].pid = VID_PID;
	pmt->es[1].stream_type = 0x0F;
	pmt->es[1].pid = AUD_PID;
	pmt->es[1].desc = lang;
	pmt->es[1].desc_len = sizeof lang;
	assert_int_equal(kh_ts_pmt_build(pmt, sec, sizeof sec, &len), KH_OK);
	put_section(s, PMT_PID, sec, len);
	free(pat);
	free(pmt);
}

/* One component packet: varied shapes (adaptation fields, short payloads, unit starts). */
static void put_comp(struct stream *s, struct kh_scr *scr, size_t i, enum kh_scr_parity parity)
{
	uint16_t pid = i % 3 == 2 ? AUD_PID : VID_PID;
	uint8_t af[7] = {0x10, 1, 2, 3, 4, 5, 6}, payload[184], *p;
	struct kh_ts_pkt h;
	size_t af_len = i % 4 == 0 ? sizeof af : 0;
	size_t pl = i % 7 == 3 ? 100 : i % 11 == 5 ? 5 : 184 - (af_len ? af_len + 1 : 0);

	memset(&h, 0, sizeof h);
	h.pid = pid;
	h.pusi = i % 10 == 0;
	h.cc = s->cc[pid]++ & 15;
	s->cc[pid] &= 15;
	assert_int_equal(kh_random(payload, sizeof payload), KH_OK);
	p = slot(&s->ts, &s->n, &s->cap);
	assert_int_equal(kh_ts_build(p, &h, af_len ? af : NULL, af_len, payload, pl), KH_OK);
	memcpy(slot(&s->clear, &s->nclear, &s->ccap), p, PKT);
	assert_int_equal(kh_scr_scramble(scr, p, 1, parity), KH_OK);
}

static void put_clear_other(struct stream *s)
{
	uint8_t payload[184];
	struct kh_ts_pkt h;
	memset(&h, 0, sizeof h);
	memset(payload, 0x5A, sizeof payload);
	h.pid = OTHER_PID;
	h.cc = s->cc[OTHER_PID]++ & 15;
	s->cc[OTHER_PID] &= 15;
	assert_int_equal(kh_ts_build(slot(&s->ts, &s->n, &s->cap), &h, NULL, 0, payload, sizeof payload), KH_OK);
}

static void make_emm(struct world *w, const struct scenario *sc, uint32_t ua, const uint8_t sk[32], uint64_t t,
		     uint8_t *out, size_t *len)
{
	uint8_t cmds[KH_EMM_CMDS_MAX], kp[32], ku[32];
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, ua, 1, 0};
	struct kh_wr wr;

	kh_wr_init(&wr, cmds, sizeof cmds);
	if (sc->set_key)
		assert_int_equal(kh_emm_put_set_key(&wr, 1, 1, sk), KH_OK);
	if (sc->entitle)
		assert_int_equal(kh_emm_put_entitle(&wr, PRODUCT, t - 3600, t + 86400), KH_OK);
	if (sc->credit)
		assert_int_equal(kh_emm_put_add_credit(&wr, sc->credit, 1), KH_OK);
	(void)h;
	(void)kp;
	(void)ku;
	*len = world_emm(w->auth, ua, 1, cmds, wr.len, out, KH_EMM_MAX);
}

static void put_emms(struct stream *s)
{
	for (size_t i = 0; i < s->nemm; i++)
		put_section(s, EMM_PID, s->emm[i], s->emm_len[i]);
}

static void put_ecm(struct stream *s, int k)
{
	if (s->lose == k + 1)
		return;
	if (s->ecm_pos[k] == 0) {
		if (s->forge && k >= 1) {
			/* one byte changed, somewhere else each time: key id, cp, body, signature */
			static const size_t at[] = {3, 11, 40, 90, 200};
			uint8_t f[KH_ECM_MAX];
			memcpy(f, s->ecm[k], s->ecm_len[k]);
			f[at[k % 5] % s->ecm_len[k]] ^= 0x20;
			put_section(s, ECM_PID, f, s->ecm_len[k]);
		}
		s->ecm_pos[k] = s->n;
		s->clear_at[k] = s->nclear;
	}
	put_section(s, ECM_PID, s->ecm[k], s->ecm_len[k]);
}

static struct stream *make_stream(struct world *w, const struct scenario *sc, uint64_t t)
{
	struct stream *s = calloc(1, sizeof *s);
	uint8_t sk[32], cw[PERIODS + 1][16];
	size_t cwlen = kh_scr_keylen(sc->alg);
	struct kh_scr *scr = NULL;
	struct kh_ecm e;

	assert_non_null(s);
	s->lose = sc->lose_ecm;
	s->forge = sc->forge;
	if (sc->sk)
		memcpy(sk, sc->sk, sizeof sk);
	else
		assert_int_equal(kh_random(sk, sizeof sk), KH_OK);
	assert_int_equal(kh_random(&cw[0][0], sizeof cw), KH_OK);
	assert_int_equal(kh_scr_new(sc->alg, 0, &scr), KH_OK);
	for (int k = 0; k < PERIODS; k++) {
		const uint8_t *prev = cw[k ? k - 1 : PERIODS];
		memset(&e, 0, sizeof e);
		e.h.table_id = (uint8_t)(KH_ECM_TID_EVEN | (k & 1));
		e.h.key_id = 1;
		e.h.key_version = 1;
		e.h.cp = (uint32_t)k;
		e.alg = (uint8_t)sc->alg;
		e.cw_len = (uint8_t)cwlen;
		memcpy(k & 1 ? e.cw_odd : e.cw_even, cw[k], cwlen);
		memcpy(k & 1 ? e.cw_even : e.cw_odd, prev, cwlen);
		e.access = sc->access;
		e.product = PRODUCT;
		e.event = EVENT;
		e.price = PRICE;
		e.time = t;
		assert_int_equal(kh_ecm_seal(sk, world_ecm_signer(w->auth), &e, s->ecm[k], KH_ECM_MAX, &s->ecm_len[k]), KH_OK);
		if (sc->foreign) {
			/* the other operator's: its own service key under key id 1 (the card's tag check
			 * fails) or 9 (the card has no such key), its own signer, the same numbering */
			uint8_t fk[32];
			assert_int_equal(kh_random(fk, sizeof fk), KH_OK);
			e.h.key_id = k % 2 ? 9 : 1;
			assert_int_equal(kh_ecm_seal(fk, world_ecm_signer(w->foreign), &e, s->fecm[k], KH_ECM_MAX,
						     &s->fecm_len[k]),
					 KH_OK);
			kh_wipe(fk, sizeof fk);
		}
	}
	if (sc->other_ua)
		make_emm(w, sc, sc->other_ua, sk, t, s->emm[s->nemm], &s->emm_len[s->nemm]), s->nemm++;
	if (sc->set_key || sc->entitle || sc->credit)
		make_emm(w, sc, sc->ua, sk, t, s->emm[s->nemm], &s->emm_len[s->nemm]), s->nemm++;

	put_psi(s, sc);
	put_emms(s);
	put_ecm(s, 0);
	for (int k = 0; k < PERIODS; k++) {
		enum kh_scr_parity par = k & 1 ? KH_SCR_ODD : KH_SCR_EVEN;
		assert_int_equal(kh_scr_set_key(scr, par, cw[k], cwlen), KH_OK);
		s->period_at[k] = s->nclear;
		for (size_t i = 0; i < PER_PERIOD; i++) {
			if (sc->foreign && i % 9 == 4) { /* ahead of the genuine: the next periods' numbers */
				int j = (k + 1 + (int)(i / 9)) % PERIODS;
				put_section(s, ECM_PID, s->fecm[j], s->fecm_len[j]);
			}
			if (i == PER_PERIOD / 2) { /* the carousel: tables, EMMs and the ECM again */
				put_psi(s, sc);
				put_emms(s);
				put_ecm(s, k);
				put_clear_other(s);
			}
			if (i == PER_PERIOD * 3 / 4 && k + 1 < PERIODS)
				put_ecm(s, k + 1); /* the lead: ECM k+1 before period k ends */
			if (sc->inject && i == PER_PERIOD / 3) {
				/* someone else's packet on the video PID, with the other parity: not ours */
				struct kh_ts_pkt h = {0};
				uint8_t junk[184];
				assert_int_equal(kh_random(junk, sizeof junk), KH_OK);
				h.pid = VID_PID;
				h.cc = s->cc[VID_PID] & 15;
				h.scrambling = (uint8_t)(par == KH_SCR_ODD ? KH_TS_SC_EVEN : KH_TS_SC_ODD);
				assert_int_equal(kh_ts_build(slot(&s->ts, &s->n, &s->cap), &h, NULL, 0, junk, sizeof junk),
						 KH_OK);
			}
			if (sc->stagger && k > 0 && i < 60 && i % 3 == 2) /* audio, still in period k-1 */
				put_comp(s, scr, (size_t)k * PER_PERIOD + i, par == KH_SCR_ODD ? KH_SCR_EVEN : KH_SCR_ODD);
			else
				put_comp(s, scr, (size_t)k * PER_PERIOD + i, par);
		}
	}
	kh_scr_free(scr);
	kh_wipe(cw, sizeof cw);
	return s;
}

static void free_stream(struct stream *s)
{
	free(s->ts);
	free(s->clear);
	free(s);
}

/* ---- the decoder side ---- */

#define MAX_NOTES 32
struct sink {
	uint8_t *out;
	size_t n, cap;
	int nnotes;
	kh_err reason[MAX_NOTES];
	char msg[MAX_NOTES][256];
};

static kh_err sink_out(void *ctx, const uint8_t *pkts, size_t n)
{
	struct sink *k = ctx;
	for (size_t i = 0; i < n; i++)
		memcpy(slot(&k->out, &k->n, &k->cap), pkts + i * PKT, PKT);
	return KH_OK;
}

static void sink_notify(void *ctx, kh_err reason, const char *msg)
{
	struct sink *k = ctx;
	assert_true(k->nnotes < MAX_NOTES);
	k->reason[k->nnotes] = reason;
	snprintf(k->msg[k->nnotes], sizeof k->msg[0], "%s", msg);
	k->nnotes++;
}

static int notes_with(const struct sink *k, kh_err reason)
{
	int n = 0;
	for (int i = 0; i < k->nnotes; i++)
		n += k->reason[i] == reason;
	return n;
}

static const char *note_of(const struct sink *k, kh_err reason)
{
	for (int i = 0; i < k->nnotes; i++)
		if (k->reason[i] == reason)
			return k->msg[i];
	return "";
}

/* Set by a test: at the swap, the host saw the reader change and dropped the channel. */
static int drop_at_swap;

/*
 * Run the decoder over s in uneven chunks; when swap_at is non-zero, the session's card becomes
 * `swap` from that stream packet on (the card was pulled and another inserted), and with
 * drop_at_swap the channel is dropped there (kh_decoder_drop_channel, as a reader watch does).
 */
static void run(struct world *w, struct kh_host_cas *cas, const struct stream *s, unsigned flags,
		size_t swap_at, struct kh_transport *swap, struct sink *k, struct kh_decoder_stats *st)
{
	struct kh_decoder_config cfg = {0};
	struct kh_decoder *d = NULL;
	size_t i = 0, chunk = 1;

	(void)w;
	cfg.cas = cas;
	cfg.program = 0; /* the first program in the PAT */
	cfg.flags = flags;
	cfg.notify = sink_notify;
	cfg.out = sink_out;
	cfg.ctx = k;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_OK);
	while (i < s->n) {
		size_t n = chunk;
		if (n > s->n - i)
			n = s->n - i;
		if (swap_at && i < swap_at && i + n > swap_at)
			n = swap_at - i;
		if (swap_at && i == swap_at) {
			cas->card = swap;
			if (drop_at_swap)
				assert_int_equal(kh_decoder_drop_channel(d), KH_OK);
		}
		assert_int_equal(kh_decoder_feed(d, s->ts + i * PKT, n), KH_OK);
		i += n;
		chunk = chunk * 7 % 400 + 1; /* 1, 8, 57, ...: chunks across batch boundaries */
	}
	assert_int_equal(kh_decoder_finish(d), KH_OK);
	kh_decoder_get_stats(d, st);
	kh_decoder_free(d);
}

static void connect_card(struct world *w, struct kh_host_cas *cas, struct mod *card)
{
	kh_host_cas_init(cas, &w->dec.t, &w->cam.t, &card->t, 0);
	assert_int_equal(kh_host_cas_connect(cas), KH_OK);
	assert_int_equal(cas->card_ua, card->ua);
}

/*
 * Whatever happened: every output packet is clear, no ECM, EMM or CAT; the service's component
 * packets are exactly the clear ones in [0, a) and [b, nclear), in order: none descrambled with
 * a key of another period (it would come out as noise, unequal to its clear packet).
 */
static void check_output_gap(const struct stream *s, const struct sink *k, size_t a, size_t b)
{
	size_t want = 0, ncomp = 0;
	struct kh_ts_pkt p;

	for (size_t i = 0; i < k->n; i++) {
		const uint8_t *pk = k->out + i * PKT;
		assert_int_equal(kh_ts_parse(pk, PKT, &p), KH_OK);
		assert_int_equal(p.scrambling, KH_TS_SC_CLEAR);
		assert_int_not_equal(p.pid, ECM_PID);
		assert_int_not_equal(p.pid, EMM_PID);
		assert_int_not_equal(p.pid, KH_TS_PID_CAT);
		if (p.pid != VID_PID && p.pid != AUD_PID)
			continue;
		if (want == a)
			want = b;
		assert_true(want < s->nclear);
		assert_memory_equal(pk, s->clear + want * PKT, PKT);
		want++;
		ncomp++;
	}
	assert_int_equal(ncomp, a + (s->nclear - b));
}

/*
 * Whatever happened: every output packet parses and is clear; no ECM, EMM or CAT packet; the
 * service's component packets are exactly the first `expect` clear ones, in order.
 */
static void check_output(const struct stream *s, const struct sink *k, size_t expect)
{
	check_output_gap(s, k, expect, s->nclear);
}

/* The PMT that comes out: no CA or scrambling descriptor, other descriptors kept, version
 * bumped, CRC right, continuity counters in sequence. */
static void check_pmt(const struct sink *k)
{
	struct kh_ts_asm *a = calloc(1, sizeof *a);
	struct kh_ts_pmt *pmt = calloc(1, sizeof *pmt);
	uint8_t sec[KH_TS_PSI_MAX], tag, blen, mode;
	const uint8_t *body;
	struct kh_ts_desc_it it;
	struct kh_ts_ca_desc ca;
	int npmt = 0, last_cc = -1;
	size_t len;

	assert_non_null(a);
	assert_non_null(pmt);
	assert_int_equal(kh_ts_asm_init(a, PMT_PID, KH_TS_PSI_MAX), KH_OK);
	for (size_t i = 0; i < k->n; i++) {
		const uint8_t *pk = k->out + i * PKT;
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(pk, PKT, &p), KH_OK);
		if (p.pid != PMT_PID)
			continue;
		if (last_cc >= 0)
			assert_int_equal(p.cc, (last_cc + 1) & 15);
		last_cc = p.cc;
		assert_int_equal(kh_ts_asm_push(a, pk, PKT), KH_OK);
		while (kh_ts_asm_pop(a, sec, sizeof sec, &len) == 1) {
			assert_int_equal(kh_ts_section_check(sec, len), KH_OK);
			assert_int_equal(kh_ts_pmt_parse(sec, len, pmt), KH_OK);
			assert_int_equal(pmt->program_number, PROGRAM);
			assert_int_equal(pmt->version, 4);
			assert_int_equal(kh_ts_ca_desc_find(pmt->desc, pmt->desc_len, CASID, &ca), KH_ERR_NOTFOUND);
			assert_int_equal(kh_ts_scrambling_desc_find(pmt->desc, pmt->desc_len, &mode), KH_ERR_NOTFOUND);
			assert_int_equal(pmt->n, 2);
			assert_int_equal(pmt->es[1].pid, AUD_PID);
			kh_ts_desc_it_init(&it, pmt->es[1].desc, pmt->es[1].desc_len);
			assert_int_equal(kh_ts_desc_next(&it, &tag, &body, &blen), 1);
			assert_int_equal(tag, 0x0A);
			npmt++;
		}
	}
	assert_int_equal(npmt, 1 + PERIODS); /* every PMT of the input, rewritten */
	assert_int_equal(a->cc_errors, 0);
	free(a);
	free(pmt);
}

static void play_with_rights(struct world *w, enum kh_scr_alg alg)
{
	struct scenario sc = {.alg = alg, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .ua = w->c1.ua, .other_ua = w->c2.ua};
	uint64_t t = (uint64_t)time(NULL);
	struct stream *s = make_stream(w, &sc, t);
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output(s, &k, s->nclear);
	check_pmt(&k);
	assert_int_equal(st.dropped_nokey, 0);
	assert_int_equal(st.descrambled, s->nclear);
	assert_int_equal(st.ecm_passed, PERIODS); /* each ECM once, repetitions skipped */
	assert_int_equal(st.ecm_answered, PERIODS);
	assert_int_equal(st.ecm_refused, 0);
	/* the EMM for c1 passed once across the carousel; the one for c2 never */
	assert_int_equal(st.emm_passed, 1);
	assert_int_equal(st.emm_accepted, 1);
	assert_int_equal(st.reconnects, 0);
	assert_int_equal(st.ecm_pid, ECM_PID);
	assert_int_equal(st.emm_pid, EMM_PID);
	assert_int_equal(k.nnotes, 0);
	/* the clear PID outside the service passes; every input packet is accounted for */
	assert_int_equal(st.pkts_out, k.n);
	assert_int_equal(st.pkts_in, s->n);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

static void test_play_csa2(void **state) { play_with_rights(*state, KH_SCR_CSA2); }
static void test_play_cissa(void **state) { play_with_rights(*state, KH_SCR_CISSA); }
static void test_play_idsa(void **state) { play_with_rights(*state, KH_SCR_IDSA); }

/* The card holds the service key but no right: nothing of the service comes out, and the viewer
 * is told once. */
static void test_no_right(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 0, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output(s, &k, 0);
	check_pmt(&k);
	assert_int_equal(st.dropped_nokey, s->nclear);
	assert_int_equal(st.ecm_answered, 0);
	assert_int_equal(st.ecm_refused, st.ecm_passed);
	assert_true(st.ecm_passed >= PERIODS);
	assert_int_equal(k.nnotes, 1);
	assert_int_equal(k.reason[0], KH_ERR_NO_RIGHT);
	assert_string_equal(k.msg[0], "no subscription for this channel");
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

/*
 * c1 is entitled; halfway through period 2 it is pulled and c2 (same operator, no right)
 * answers in its place. The output keeps the packets up to the next ECM (their keys came from
 * c1 before the swap) and stops exactly there; the viewer hears of the lost channel, then of
 * c2's missing right.
 */
static void test_card_swap(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;
	size_t swap_at = s->ecm_pos[2] + 10;

	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, 0, swap_at, &w->c2.t, &k, &st);
	/* ECM 3 is the first new one after the swap */
	assert_true(s->ecm_pos[3] > swap_at);
	check_output(s, &k, s->clear_at[3]);
	assert_true(st.dropped_nokey > 0);
	assert_int_equal(st.descrambled + st.dropped_nokey, s->nclear);
	assert_true(st.reconnects >= 1);
	assert_int_equal(cas.card_ua, w->c2.ua);
	assert_true(k.nnotes >= 2);
	/* the first word is about the channel, not about rights */
	assert_true(k.reason[0] != KH_ERR_NO_RIGHT && k.reason[0] != KH_OK);
	assert_non_null(strstr(k.msg[0], "swapped"));
	/* then c2 paired, and it has no service key (its EMM is not in this stream) */
	assert_true(notes_with(&k, KH_ERR_NO_KEY) == 1 || notes_with(&k, KH_ERR_NO_RIGHT) == 1);
	assert_non_null(strstr(note_of(&k, KH_OK), "paired with card"));
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

/* Component packets among the first n stream packets. */
static size_t comps_before(const struct stream *s, size_t n)
{
	struct kh_ts_pkt p;
	size_t c = 0;

	for (size_t j = 0; j < n; j++)
		if (kh_ts_parse(s->ts + j * PKT, PKT, &p) == KH_OK && (p.pid == VID_PID || p.pid == AUD_PID))
			c++;
	return c;
}

/* The stream packet after the one that completes the first ECM section starting at or after n. */
static size_t after_next_ecm(const struct stream *s, size_t n)
{
	struct kh_ts_pkt p;
	size_t j = n;

	while (j < s->n && !(kh_ts_parse(s->ts + j * PKT, PKT, &p) == KH_OK && p.pid == ECM_PID && p.pusi))
		j++;
	assert_true(j < s->n);
	for (j++; j < s->n; j++) /* the section's other packets follow it */
		if (kh_ts_parse(s->ts + j * PKT, PKT, &p) != KH_OK || p.pid != ECM_PID || p.pusi)
			break;
	return j;
}

/*
 * As test_card_swap, but the host saw the reader change (decoder play's reader watch): the
 * channel is dropped at the swap itself, so the output stops exactly there, not at the next new
 * ECM: no packet after the swap meets c1's control words.
 */
static void test_card_swap_seen(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;
	size_t swap_at = s->ecm_pos[2] + 10;

	connect_card(w, &cas, &w->c1);
	drop_at_swap = 1;
	run(w, &cas, s, 0, swap_at, &w->c2.t, &k, &st);
	drop_at_swap = 0;
	assert_true(comps_before(s, swap_at) < s->clear_at[3]);
	check_output(s, &k, comps_before(s, swap_at));
	assert_int_equal(st.descrambled + st.dropped_nokey, s->nclear);
	assert_int_equal(cas.card_ua, w->c2.ua);
	assert_true(notes_with(&k, KH_ERR_NO_KEY) == 1 || notes_with(&k, KH_ERR_NO_RIGHT) == 1);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

/*
 * From a card without the right to one with it (c2 refused the ECMs, then c1 is put in): the
 * refusals were c2's, so the very next repetition of the ECM pairs with c1 and keys the stream;
 * nothing waits for the next new ECM.
 */
static void test_swap_to_entitled(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0}, k1 = {0};
	struct kh_decoder_stats st;
	size_t swap_at = s->ecm_pos[2] + 10, b;

	/* c1 takes its key and right from the stream first */
	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, 0, 0, NULL, &k1, &st);
	check_output(s, &k1, s->nclear);
	kh_host_cas_wipe(&cas);
	/* then the stream plays with c2 in the slot, and c1 goes in at swap_at */
	b = comps_before(s, after_next_ecm(s, swap_at));
	assert_true(after_next_ecm(s, swap_at) < s->ecm_pos[3]);
	connect_card(w, &cas, &w->c2);
	drop_at_swap = 1;
	run(w, &cas, s, 0, swap_at, &w->c1.t, &k, &st);
	drop_at_swap = 0;
	check_output_gap(s, &k, 0, b);
	assert_int_equal(cas.card_ua, w->c1.ua);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free(k1.out);
	free_stream(s);
}

/*
 * The same card comes back (its reader lost and found again): the channel is dropped at that
 * point and the next ECM, a repetition of the one answered last, pairs again. The output lacks
 * exactly the component packets between the two, and every packet after is descrambled again.
 */
static void test_reader_back(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CISSA, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;
	size_t swap_at = s->ecm_pos[2] + 10, a, b;

	connect_card(w, &cas, &w->c1);
	a = comps_before(s, swap_at);
	b = comps_before(s, after_next_ecm(s, swap_at));
	assert_true(a < b);                 /* the gap is not empty ... */
	assert_true(after_next_ecm(s, swap_at) < s->ecm_pos[3]); /* ... and ends at a repetition */
	drop_at_swap = 1;
	run(w, &cas, s, 0, swap_at, &w->c1.t, &k, &st);
	drop_at_swap = 0;
	check_output_gap(s, &k, a, b);
	assert_int_equal(st.dropped_nokey, b - a);
	assert_int_equal(st.reconnects, 1);
	assert_int_equal(cas.card_ua, w->c1.ua);
	assert_non_null(strstr(note_of(&k, KH_OK), "again"));
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

/* Pay-per-view: without --buy the viewer is told the price; with it the event is bought once. */
static void test_ppv(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_IDSA, .access = KH_ECM_EVENT, .set_key = 1, .entitle = 0, .credit = 100, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0}, k2 = {0};
	struct kh_decoder_stats st;
	struct kh_cas_status *cs = calloc(1, sizeof *cs);

	assert_non_null(cs);
	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output(s, &k, 0);
	assert_int_equal(k.nnotes, 1);
	assert_int_equal(k.reason[0], KH_ERR_NOT_PURCHASED);
	assert_string_equal(k.msg[0], "pay-per-view event 42: price 30, credit 100 \xe2\x80\x94 run 'keyhole decoder buy'");

	run(w, &cas, s, KH_DECODER_F_BUY, 0, NULL, &k2, &st);
	check_output(s, &k2, s->nclear);
	assert_int_equal(st.purchases, 1);
	assert_int_equal(kh_host_cas_status(&cas, cs), KH_OK);
	assert_int_equal(cs->credit, 70);
	assert_int_equal(cs->npurchases, 1);
	assert_int_equal(cs->purchases[0].event, EVENT);
	assert_non_null(strstr(note_of(&k2, KH_OK), "bought pay-per-view event 42 for 30; credit now 70"));
	kh_host_cas_wipe(&cas);
	free(cs);
	free(k.out);
	free(k2.out);
	free_stream(s);
}

static void test_ppv_credit_low(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_EVENT, .set_key = 1, .entitle = 0, .credit = 10, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	connect_card(w, &cas, &w->c1);
	run(w, &cas, s, KH_DECODER_F_BUY, 0, NULL, &k, &st);
	check_output(s, &k, 0);
	assert_int_equal(st.purchases, 0);
	assert_int_equal(k.nnotes, 1);
	assert_int_equal(k.reason[0], KH_ERR_CREDIT_LOW);
	assert_string_equal(k.msg[0], "pay-per-view event 42 costs 30 but the card holds only 10 credit");
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

/* Passive: tables followed, the service's ECM kept, no card spoken to, nothing scrambled out. */
static void test_passive(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CISSA, .access = KH_ECM_EVENT, .set_key = 1, .entitle = 0, .credit = 100, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_decoder_config cfg = {0};
	struct kh_decoder *d = NULL;
	struct kh_host_cas cas;
	struct sink k = {0};
	uint8_t ecm[KH_ECM_MAX];
	size_t len;

	kh_host_cas_init(&cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	cfg.cas = &cas;
	cfg.flags = KH_DECODER_F_PASSIVE;
	cfg.out = sink_out;
	cfg.ctx = &k;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_OK);
	assert_int_equal(kh_decoder_last_ecm(d, ecm, sizeof ecm, &len), 0);
	assert_int_equal(kh_decoder_feed(d, s->ts, s->ecm_pos[0] + 1), KH_OK);
	assert_int_equal(kh_decoder_last_ecm(d, ecm, sizeof ecm, &len), 1);
	assert_int_equal(len, s->ecm_len[0]);
	assert_memory_equal(ecm, s->ecm[0], len);
	assert_int_equal(kh_decoder_feed(d, s->ts, s->n), KH_OK);
	assert_int_equal(kh_decoder_finish(d), KH_OK);
	check_output(s, &k, 0);
	assert_false(cas.connected);
	kh_decoder_free(d);
	free(k.out);
	free_stream(s);
}

static void test_args(void **state)
{
	struct kh_decoder_config cfg = {0};
	struct kh_decoder *d = (struct kh_decoder *)state;
	struct kh_host_cas cas;

	(void)state;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_ERR_INVAL);
	cfg.cas = &cas;
	cfg.flags = 0x80;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_ERR_INVAL);
	assert_ptr_equal(d, (struct kh_decoder *)state);
	kh_decoder_free(NULL);
}

/* ---- the export period on stream time ---- */

#define PCR_MOD_T (((uint64_t)1 << 33) * 300)

struct ticks {
	size_t cur;      /* index of the packet being fed */
	size_t at[16];   /* packet index of each period tick */
	unsigned n, other;
};

static void on_changed(void *ctx, unsigned what)
{
	struct ticks *t = ctx;
	if (what != KH_DECODER_CHANGED_PERIOD) {
		t->other++;
		return;
	}
	assert_true(t->n < 16);
	t->at[t->n++] = t->cur;
}

/* A PCR-only packet on VID_PID (adaptation field of 183 bytes), flags as given. */
static void put_pcr(uint8_t *pk, uint64_t pcr, uint8_t cc, int discontinuity)
{
	struct kh_ts_pkt h = {0};
	uint8_t af[183];
	uint64_t base = pcr / 300, ext = pcr % 300;

	memset(af, 0xFF, sizeof af);
	af[0] = (uint8_t)(0x10 | (discontinuity ? 0x80 : 0));
	af[1] = (uint8_t)(base >> 25);
	af[2] = (uint8_t)(base >> 17);
	af[3] = (uint8_t)(base >> 9);
	af[4] = (uint8_t)(base >> 1);
	af[5] = (uint8_t)((base & 1) << 7 | 0x7E | ext >> 8);
	af[6] = (uint8_t)ext;
	h.pid = VID_PID;
	h.cc = cc;
	assert_int_equal(kh_ts_build(pk, &h, af, sizeof af, NULL, 0), KH_OK);
}

/*
 * cfg.export_every_ms: changed(PERIOD) every 2 s of the service's PCR time, across the 2^33 wrap;
 * a PCR flagged as a discontinuity (30 s ahead) and a step back do not advance the clock;
 * nothing in PASSIVE mode or with a period of 0.
 */
static void test_export_period(void **state)
{
	struct kh_ts_pat pat = {0};
	struct kh_ts_pmt pmt = {0};
	struct kh_decoder_config cfg = {0};
	struct kh_decoder_stats st;
	struct kh_decoder *d;
	struct kh_host_cas cas;
	struct ticks t;
	uint8_t sec[1024], *ts, cc_pat = 0, cc_pmt = 0;
	size_t n = 0, len, plen, cap = 600;
	uint64_t pcr = PCR_MOD_T - 3ull * 27000000; /* wraps 3 s in */
	uint8_t cc = 0;

	(void)state;
	memset(&cas, 0, sizeof cas);
	ts = malloc(cap * PKT);
	assert_non_null(ts);
	pat.tsid = 1;
	pat.current = 1;
	pat.n = 1;
	pat.prog[0].program_number = PROGRAM;
	pat.prog[0].pid = PMT_PID;
	pmt.program_number = PROGRAM;
	pmt.current = 1;
	pmt.pcr_pid = VID_PID;
	pmt.n = 1;
	pmt.es[0].stream_type = 0x02;
	pmt.es[0].pid = VID_PID;
	assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &len), KH_OK);
	assert_int_equal(kh_ts_packetise(KH_TS_PID_PAT, &cc_pat, sec, len, ts + n * PKT, PKT, &plen), KH_OK);
	n++;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &len), KH_OK);
	assert_int_equal(kh_ts_packetise(PMT_PID, &cc_pmt, sec, len, ts + n * PKT, PKT, &plen), KH_OK);
	n++;
	/* 10 s, a PCR every 40 ms: stream time 0 .. 9960 ms; ticks at 2, 4, 6 and 8 s */
	for (unsigned i = 0; i < 250; i++, pcr += 40 * 27000)
		put_pcr(ts + n++ * PKT, pcr % PCR_MOD_T, cc++ & 15, 0);
	/* 30 s ahead (below the 60 s a jump needs) with discontinuity_indicator: no time passes */
	pcr += 30ull * 27000000;
	put_pcr(ts + n++ * PKT, pcr % PCR_MOD_T, cc++ & 15, 1);
	/* 2 s on from there: 9960 .. 11960 ms, a tick at 10 s */
	for (unsigned i = 0; i < 50; i++)
		pcr += 40 * 27000, put_pcr(ts + n++ * PKT, pcr % PCR_MOD_T, cc++ & 15, 0);
	/* five seconds back: no time passes; then 1 s: 12960 ms, a tick at 12 s */
	pcr -= 5ull * 27000000;
	put_pcr(ts + n++ * PKT, pcr % PCR_MOD_T, cc++ & 15, 0);
	for (unsigned i = 0; i < 25; i++)
		pcr += 40 * 27000, put_pcr(ts + n++ * PKT, pcr % PCR_MOD_T, cc++ & 15, 0);
	assert_true(n <= cap);

	cfg.cas = &cas;
	cfg.changed = on_changed;
	cfg.ctx = &t;
	cfg.export_every_ms = 2000;
	for (int mode = 0; mode < 3; mode++) {
		memset(&t, 0, sizeof t);
		cfg.flags = mode == 1 ? KH_DECODER_F_PASSIVE : 0;
		cfg.export_every_ms = mode == 2 ? 0 : 2000;
		assert_int_equal(kh_decoder_new(&cfg, &d), KH_OK);
		for (t.cur = 0; t.cur < n; t.cur++) /* one packet at a time: the tick's packet is known */
			assert_int_equal(kh_decoder_feed(d, ts + t.cur * PKT, 1), KH_OK);
		assert_int_equal(kh_decoder_finish(d), KH_OK);
		kh_decoder_get_stats(d, &st);
		kh_decoder_free(d);
		assert_int_equal(st.stream_ms, 12960);
		assert_int_equal(t.other, 0);
		if (mode != 0) {
			assert_int_equal(t.n, 0);
			assert_int_equal(st.periods, 0);
			continue;
		}
		assert_int_equal(t.n, 6);
		assert_int_equal(st.periods, 6);
		/* packet 2 is the first PCR (t = 0); PCR i is at 40 i ms, so 2 s is PCR 50 */
		assert_int_equal(t.at[0], 2 + 50);
		assert_int_equal(t.at[1], 2 + 100);
		assert_int_equal(t.at[2], 2 + 150);
		assert_int_equal(t.at[3], 2 + 200);
		/* 10 s: 40 ms past 9960, the second PCR after the discontinuity (packets 252, 253) */
		assert_int_equal(t.at[4], 2 + 250 + 1);
		/* 12 s: 40 ms on from 11960, the first PCR after the step back (packet 303) */
		assert_int_equal(t.at[5], 2 + 250 + 1 + 50 + 1);
	}
	free(ts);
}

/* ---- the card's own EMMs out of order, or one withheld (EMM_GAP and the pending set) ---- */

struct gapper {
	struct world *w;
	struct scenario sc;
	struct stream *s;
	struct kh_host_cas cas;
	struct kh_decoder *d;
	struct sink k;
	uint8_t sk[32];
	uint32_t base; /* the card's last unique seq before the test */
	int cp;
	uint64_t t;
};

static void gap_setup(struct world *w, struct gapper *g)
{
	struct kh_decoder_config cfg = {0};
	struct kh_cas_status st;

	memset(g, 0, sizeof *g);
	g->w = w;
	g->sc = (struct scenario){.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	g->t = (uint64_t)time(NULL);
	assert_non_null(g->s = calloc(1, sizeof *g->s));
	assert_int_equal(kh_random(g->sk, sizeof g->sk), KH_OK);
	connect_card(w, &g->cas, &w->c1);
	assert_int_equal(kh_host_cas_status(&g->cas, &st), KH_OK);
	g->base = st.seq[KH_EMM_UNIQUE];
	cfg.cas = &g->cas;
	cfg.notify = sink_notify;
	cfg.out = sink_out;
	cfg.ctx = &g->k;
	assert_int_equal(kh_decoder_new(&cfg, &g->d), KH_OK);
	put_psi(g->s, &g->sc);
}

/* The card's unique EMM number base + i: 1 SET KEY + ENTITLE, 2 REVOKE, later ones ADD CREDIT 1. */
static void gap_emm(struct gapper *g, uint32_t i)
{
	uint8_t cmds[128], sec[KH_EMM_MAX];
	struct kh_wr wr;
	size_t n;

	kh_wr_init(&wr, cmds, sizeof cmds);
	if (i == 1) {
		assert_int_equal(kh_emm_put_set_key(&wr, 1, 1, g->sk), KH_OK);
		assert_int_equal(kh_emm_put_entitle(&wr, PRODUCT, g->t - 3600, g->t + 86400), KH_OK);
	} else if (i == 2) {
		assert_int_equal(kh_emm_put_revoke(&wr, PRODUCT), KH_OK);
	} else {
		assert_int_equal(kh_emm_put_add_credit(&wr, 1, i), KH_OK);
	}
	n = world_emm(g->w->auth, g->w->c1.ua, g->base + i, cmds, wr.len, sec, sizeof sec);
	put_section(g->s, EMM_PID, sec, n);
}

/* A section that looks like the card's EMM number base + i but is sealed under a key nobody has. */
static void gap_forged(struct gapper *g, uint32_t i)
{
	uint8_t key[32], cmds[32], sec[KH_EMM_MAX];
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, g->w->c1.ua, g->base + i, 0};
	struct kh_wr wr;
	size_t n;

	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&wr, 1000, i), KH_OK);
	assert_int_equal(kh_emm_seal(key, &h, cmds, wr.len, sec, sizeof sec, &n), KH_OK);
	put_section(g->s, EMM_PID, sec, n);
}

/* The next ECM for PRODUCT (a new crypto period, so the decoder passes it). */
static void gap_ecm(struct gapper *g)
{
	uint8_t sec[KH_ECM_MAX];
	struct kh_ecm e;
	size_t n;

	memset(&e, 0, sizeof e);
	e.h.table_id = (uint8_t)(KH_ECM_TID_EVEN | (g->cp & 1));
	e.h.key_id = 1;
	e.h.key_version = 1;
	e.h.cp = (uint32_t)g->cp++;
	e.alg = KH_SCR_CSA2;
	e.cw_len = (uint8_t)kh_scr_keylen(KH_SCR_CSA2);
	e.access = KH_ECM_PRODUCT;
	e.product = PRODUCT;
	e.time = g->t;
	assert_int_equal(kh_ecm_seal(g->sk, world_ecm_signer(g->w->auth), &e, sec, sizeof sec, &n), KH_OK);
	put_section(g->s, ECM_PID, sec, n);
}

/* A scrambled packet of the service's video in the period of the ECM put last (its payload is
 * never looked at: only what the engine does with it), after 100 packets of another PID (a
 * period lasts seconds, and many packets go by in it). */
static void gap_comp(struct gapper *g)
{
	struct kh_ts_pkt h = {0};
	uint8_t payload[184];

	for (int i = 0; i < 100; i++)
		put_clear_other(g->s);
	memset(payload, 0xA5, sizeof payload);
	h.pid = VID_PID;
	h.scrambling = (uint8_t)((g->cp - 1) & 1 ? KH_TS_SC_ODD : KH_TS_SC_EVEN);
	h.cc = g->s->cc[VID_PID]++ & 15;
	g->s->cc[VID_PID] &= 15;
	assert_int_equal(kh_ts_build(slot(&g->s->ts, &g->s->n, &g->s->cap), &h, NULL, 0, payload, sizeof payload),
			 KH_OK);
}

/* Feed what was built since the last call; the ECM answers so far. */
static void gap_feed(struct gapper *g, struct kh_decoder_stats *st)
{
	assert_int_equal(kh_decoder_feed(g->d, g->s->ts, g->s->n), KH_OK);
	g->s->n = 0;
	kh_decoder_get_stats(g->d, st);
}

static uint32_t gap_card_seq(struct gapper *g)
{
	struct kh_cas_status st;
	assert_int_equal(kh_host_cas_status(&g->cas, &st), KH_OK);
	return st.seq[KH_EMM_UNIQUE] - g->base;
}

static void gap_free(struct gapper *g)
{
	assert_int_equal(kh_decoder_finish(g->d), KH_OK);
	kh_decoder_free(g->d);
	kh_host_cas_wipe(&g->cas);
	free(g->k.out);
	free_stream(g->s);
}

/*
 * The attack: a host withholds the card's REVOKE (EMM n) and delivers n+1. The card refuses n+1
 * (EMM_GAP), so the REVOKE is not turned into a replay; the decoder holds n+1. While n is
 * withheld the product still plays — nothing newer than the REVOKE applies either. When n
 * arrives, n and then the held n+1 apply in that order in one pass, and the product stops.
 */
static void test_emm_gap_withheld_revoke(void **state)
{
	struct gapper g;
	struct kh_decoder_stats st;

	gap_setup(*state, &g);
	gap_emm(&g, 1);
	gap_emm(&g, 3); /* 2, the REVOKE, withheld */
	gap_ecm(&g);
	gap_comp(&g);
	gap_feed(&g, &st);
	assert_int_equal(gap_card_seq(&g), 1);
	assert_int_equal(st.emm_accepted, 1);
	assert_int_equal(st.emm_gaps, 1);
	assert_int_equal(st.emm_pending, 1);
	assert_int_equal(st.ecm_answered, 1);

	/* the carousel again without the REVOKE: 3 is held, not passed again */
	gap_emm(&g, 3);
	gap_ecm(&g);
	gap_comp(&g);
	gap_feed(&g, &st);
	assert_int_equal(st.emm_passed, 2);
	assert_int_equal(st.ecm_answered, 2);
	assert_int_equal(st.dropped_nokey, 0);

	/* the REVOKE at last: 2 then the held 3, and the product no longer plays: the packets of
	 * the refused ECM's period go without a key, and the viewer hears why */
	gap_emm(&g, 2);
	gap_ecm(&g);
	gap_comp(&g);
	gap_feed(&g, &st);
	assert_int_equal(gap_card_seq(&g), 3);
	assert_int_equal(st.emm_accepted, 3);
	assert_int_equal(st.emm_pending, 0);
	assert_int_equal(st.ecm_answered, 2);
	assert_int_equal(st.ecm_refused, 1);
	assert_int_equal(st.dropped_nokey, 1);
	assert_true(g.k.nnotes > 0);
	assert_int_equal(g.k.reason[g.k.nnotes - 1], KH_ERR_NO_RIGHT);
	gap_free(&g);
}

/*
 * A broadcast EMM forged under the operator's EMM signer serial (a key of the attacker's own) and
 * put on the stream before the genuine broadcast EMM of the same number must not make the genuine
 * one look seen: the card refuses the forgery (SIGNATURE), and then takes the genuine one.
 */
static void test_forged_broadcast_hides_nothing(void **state)
{
	struct gapper g;
	struct kh_decoder_stats st;
	uint8_t cmds[64], sec[KH_EMM_MAX], all[32], master[32], pk[32];
	struct kh_emm_hdr h = {0, KH_EMM_ALL, 0, 1, 0};
	struct kh_cas_signer op, fake;
	struct kh_cas_status cs;
	struct kh_wr wr;
	size_t n;

	gap_setup(*state, &g);
	gap_emm(&g, 1);
	/* the card's broadcast key, by its own EMM */
	assert_int_equal(kh_random(master, 32), KH_OK);
	assert_int_equal(kh_cas_all_key(master, all), KH_OK);
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_set_all_key(&wr, all), KH_OK);
	n = world_emm(g.w->auth, g.w->c1.ua, g.base + 2, cmds, wr.len, sec, sizeof sec);
	put_section(g.s, EMM_PID, sec, n);
	world_signer(g.w->auth, KH_ROLE_EMM_SIGNER, &op, NULL);
	fake.serial = op.serial;
	assert_int_equal(kh_ed25519_keygen(fake.sk, pk), KH_OK);
	kh_wr_init(&wr, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_entitle(&wr, 4242, g.t - 10, g.t + 10), KH_OK);
	assert_int_equal(kh_emm_seal_signed(all, &fake, &h, cmds, wr.len, sec, sizeof sec, &n), KH_OK);
	put_section(g.s, EMM_PID, sec, n);
	assert_int_equal(kh_emm_seal_signed(all, &op, &h, cmds, wr.len, sec, sizeof sec, &n), KH_OK);
	put_section(g.s, EMM_PID, sec, n);
	gap_ecm(&g);
	gap_feed(&g, &st);
	assert_int_equal(kh_host_cas_status(&g.cas, &cs), KH_OK);
	assert_int_equal(cs.seq[KH_EMM_ALL], 1);
	assert_int_equal(cs.nrights, 2);
	kh_wipe(&op, sizeof op);
	kh_wipe(&fake, sizeof fake);
	kh_wipe(master, sizeof master);
	kh_wipe(all, sizeof all);
	gap_free(&g);
}

/*
 * A carousel that carries the card's EMMs backwards (6, 5, 4, 3, 2 after 1) converges in the pass
 * that brings the missing one; forged sections with the card's address and any seq never take a
 * slot (the card refuses them before the sequence check) nor hide the genuine EMM of their seq;
 * and a flood of genuine later EMMs does not grow the set past KH_DECODER_EMM_PENDING: the lowest
 * are kept, the others come again with the next pass of the carousel.
 */
static void test_emm_gap_pending_set(void **state)
{
	struct gapper g;
	struct kh_decoder_stats st;
	const uint32_t top = 40;

	gap_setup(*state, &g);
	gap_emm(&g, 1);
	for (uint32_t i = 6; i >= 3; i--)
		gap_emm(&g, i);
	gap_feed(&g, &st);
	assert_int_equal(st.emm_pending, 4);
	assert_int_equal(gap_card_seq(&g), 1);
	gap_emm(&g, 2);
	gap_feed(&g, &st);
	assert_int_equal(gap_card_seq(&g), 6);
	assert_int_equal(st.emm_pending, 0);

	/* forgeries first, for every seq to come: none is held, none hides the genuine one */
	for (uint32_t i = 7; i <= top; i++)
		gap_forged(&g, i);
	gap_feed(&g, &st);
	assert_int_equal(st.emm_pending, 0);
	assert_int_equal(st.emm_gaps, 4);

	/* 8..top, 7 withheld: at most KH_DECODER_EMM_PENDING held, the lowest */
	for (uint32_t i = top; i >= 8; i--)
		gap_emm(&g, i);
	for (uint32_t i = 8; i <= top; i++)
		gap_forged(&g, i);
	gap_feed(&g, &st);
	assert_int_equal(st.emm_pending, KH_DECODER_EMM_PENDING);
	assert_true(st.emm_unheld > 0);
	assert_int_equal(gap_card_seq(&g), 6);

	/* 7 arrives: the held ones apply at once; the carousel's next passes bring the rest */
	gap_emm(&g, 7);
	gap_feed(&g, &st);
	assert_int_equal(gap_card_seq(&g), 7 + KH_DECODER_EMM_PENDING);
	for (int pass = 0; pass < 4; pass++) {
		for (uint32_t i = 8; i <= top; i++)
			gap_emm(&g, i);
		gap_feed(&g, &st);
	}
	assert_int_equal(gap_card_seq(&g), top);
	assert_int_equal(st.emm_pending, 0);
	gap_free(&g);
}

/* ---- hostile streams: forged and foreign ECMs, lost ECMs, a restart, damaged bytes ---- */

static void connect_mode(struct world *w, struct kh_host_cas *cas, struct mod *card, unsigned flags)
{
	kh_host_cas_init(cas, &w->dec.t, &w->cam.t, &card->t, flags);
	assert_int_equal(kh_host_cas_connect(cas), KH_OK);
	assert_int_equal(cas->card_ua, card->ua);
}

/*
 * A forged copy (one byte changed) just before the first copy of each new ECM, or another
 * operator's ECMs with the same numbers all along the ECM PID: the card refuses them and
 * nothing changes, so the programme plays whole, bit-exact, with not one packet dropped, the
 * genuine repetitions still reaching the card; each foreign section goes to the card once, and
 * the viewer is told nothing (the picture never stopped). Open mode and key ladder.
 */
static void refused_change_nothing(struct world *w, unsigned flags, int forge, int foreign)
{
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	sc.alg = foreign ? KH_SCR_CISSA : KH_SCR_CSA2;
	sc.forge = forge;
	sc.foreign = foreign;
	s = make_stream(w, &sc, (uint64_t)time(NULL));
	connect_mode(w, &cas, &w->c1, flags);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output(s, &k, s->nclear);
	assert_int_equal(st.dropped_nokey, 0);
	assert_int_equal(st.descrambled, s->nclear);
	assert_int_equal(st.ecm_answered, PERIODS);
	assert_true(st.ecm_refused >= (forge ? 1u : PERIODS / 2u));
	assert_int_equal(st.ecm_refused, st.ecm_passed - PERIODS);
	if (foreign) /* each foreign section once, not at every repetition */
		assert_true(st.ecm_passed <= 2 * PERIODS);
	assert_int_equal(k.nnotes, 0);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

static void test_forged_ecm(void **state) { refused_change_nothing(*state, 0, 1, 0); }
static void test_forged_ecm_ladder(void **state) { refused_change_nothing(*state, KH_HOST_CAS_LADDER, 1, 0); }
static void test_foreign_ecms(void **state) { refused_change_nothing(*state, 0, 0, 1); }
static void test_foreign_ecms_ladder(void **state) { refused_change_nothing(*state, KH_HOST_CAS_LADDER, 0, 1); }

/*
 * Every copy of ECM 2 lost: period 2's packets have no key until ECM 3 (which carries CW_2 in its
 * other slot) arrives, and are dropped and counted, never "descrambled" with CW_0, the key of
 * the same parity two periods before; from ECM 3 on, everything plays again.
 */
static void lost_ecm(struct world *w, unsigned flags)
{
	struct scenario sc = {.alg = KH_SCR_IDSA, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;
	size_t lost;

	sc.lose_ecm = 1 + 2;
	s = make_stream(w, &sc, (uint64_t)time(NULL));
	assert_true(s->clear_at[3] > s->period_at[2]);
	lost = s->clear_at[3] - s->period_at[2];
	connect_mode(w, &cas, &w->c1, flags);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output_gap(s, &k, s->period_at[2], s->clear_at[3]);
	assert_int_equal(st.dropped_nokey, lost);
	assert_int_equal(st.dropped_noecm, lost);
	assert_int_equal(st.descrambled, s->nclear - lost);
	assert_int_equal(st.ecm_answered, PERIODS - 1);
	assert_int_equal(k.nnotes, 0);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

static void test_lost_ecm(void **state) { lost_ecm(*state, 0); }
static void test_lost_ecm_ladder(void **state) { lost_ecm(*state, KH_HOST_CAS_LADDER); }

/*
 * Packets that do not switch with the others: the audio switches to each new period 20 of its
 * packets late (still under the key before); and one injected video packet with the parity of
 * the next period in the middle of each period. Each PID's periods follow its own parity, and a
 * lone packet of the other parity is taken for what it is: the programme plays whole, only the
 * injected packets are dropped (they have no key), and no period is skipped.
 */
static void odd_parities(struct world *w, unsigned flags, int stagger, int inject)
{
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .ua = w->c1.ua};
	struct stream *s;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	sc.stagger = stagger;
	sc.inject = inject;
	s = make_stream(w, &sc, (uint64_t)time(NULL));
	connect_mode(w, &cas, &w->c1, flags);
	run(w, &cas, s, 0, 0, NULL, &k, &st);
	check_output(s, &k, s->nclear);
	assert_int_equal(st.descrambled, s->nclear);
	assert_int_equal(st.dropped_nokey, inject ? PERIODS : 0);
	assert_int_equal(k.nnotes, 0);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_stream(s);
}

static void test_staggered_switch(void **state) { odd_parities(*state, 0, 1, 0); }
static void test_injected_parity(void **state) { odd_parities(*state, KH_HOST_CAS_LADDER, 0, 1); }

/* The headend restarts (crypto periods numbered from 0 again): the decoder follows at once. */
static void test_restart(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	uint8_t sk[32];
	uint64_t t = (uint64_t)time(NULL);
	struct stream *a, *b, c;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder_stats st;

	assert_int_equal(kh_random(sk, sizeof sk), KH_OK);
	sc.sk = sk;
	a = make_stream(w, &sc, t);
	b = make_stream(w, &sc, t);
	memset(&c, 0, sizeof c);
	c.n = a->n + b->n;
	c.nclear = a->nclear + b->nclear;
	assert_non_null(c.ts = malloc(c.n * PKT));
	assert_non_null(c.clear = malloc(c.nclear * PKT));
	memcpy(c.ts, a->ts, a->n * PKT);
	memcpy(c.ts + a->n * PKT, b->ts, b->n * PKT);
	memcpy(c.clear, a->clear, a->nclear * PKT);
	memcpy(c.clear + a->nclear * PKT, b->clear, b->nclear * PKT);
	connect_mode(w, &cas, &w->c1, 0);
	run(w, &cas, &c, 0, 0, NULL, &k, &st);
	check_output(&c, &k, c.nclear);
	assert_int_equal(st.dropped_nokey, 0);
	assert_int_equal(st.ecm_answered, 2 * PERIODS);
	kh_host_cas_wipe(&cas);
	kh_wipe(sk, sizeof sk);
	free(k.out);
	free(c.ts);
	free(c.clear);
	free_stream(a);
	free_stream(b);
}

/* Write buf to a new engine in chunks of `chunk` bytes (kh_decoder_write), then finish. */
static void run_bytes(struct kh_host_cas *cas, const uint8_t *buf, size_t len, size_t chunk, struct sink *k,
		      struct kh_decoder_stats *st)
{
	struct kh_decoder_config cfg = {0};
	struct kh_decoder *d = NULL;

	memset(k, 0, sizeof *k);
	cfg.cas = cas;
	cfg.notify = sink_notify;
	cfg.out = sink_out;
	cfg.ctx = k;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_OK);
	for (size_t off = 0; off < len; off += chunk)
		assert_int_equal(kh_decoder_write(d, buf + off, len - off < chunk ? len - off : chunk), KH_OK);
	assert_int_equal(kh_decoder_finish(d), KH_OK);
	kh_decoder_get_stats(d, st);
	kh_decoder_free(d);
}

/* k is ref with exactly one packet missing. */
static void check_minus_one(const struct sink *ref, const struct sink *k)
{
	size_t m = 0;

	assert_int_equal(k->n + 1, ref->n);
	while (m < k->n && memcmp(k->out + m * PKT, ref->out + m * PKT, PKT) == 0)
		m++;
	if (m < k->n)
		assert_memory_equal(k->out + m * PKT, ref->out + (m + 1) * PKT, (k->n - m) * PKT);
}

/* Not a byte of the sync value in garbage (so the expected counts are exact). */
static void garbage(uint8_t *g, size_t n)
{
	assert_int_equal(kh_random(g, n), KH_OK);
	for (size_t i = 0; i < n; i++)
		if (g[i] == 0x47)
			g[i] = 0x46;
}

/*
 * kh_decoder_write finds the packet cadence: 100 bytes of garbage first, a byte lost inside a
 * packet, 500 bytes of garbage between two packets, the last packet cut, the stream given a
 * byte at a time; what it passes over is counted, every packet it takes is whole, and the rest
 * of the stream plays as from a clean input. Garbage alone, or nothing, gives no packet at all.
 */
static void test_resync(void **state)
{
	struct world *w = *state;
	struct scenario sc = {.alg = KH_SCR_CSA2, .access = KH_ECM_PRODUCT, .set_key = 1, .entitle = 1, .credit = 0, .ua = w->c1.ua, .other_ua = 0};
	struct stream *s = make_stream(w, &sc, (uint64_t)time(NULL));
	struct kh_host_cas cas;
	struct sink ref = {0}, k;
	struct kh_decoder_stats st;
	size_t len = s->n * PKT, j, at;
	uint8_t *buf = malloc(len + 1000), g[1000];
	struct kh_ts_pkt p;

	assert_non_null(buf);
	connect_mode(w, &cas, &w->c1, 0);
	run(w, &cas, s, 0, 0, NULL, &ref, &st);
	check_output(s, &ref, s->nclear);

	/* a component packet in the middle, to damage */
	for (j = s->n / 2; j < s->n; j++)
		if (kh_ts_parse(s->ts + j * PKT, PKT, &p) == KH_OK && p.pid == VID_PID)
			break;
	assert_true(j + 1 < s->n);
	at = j * PKT;

	/* garbage first */
	garbage(g, 100);
	memcpy(buf, g, 100);
	memcpy(buf + 100, s->ts, len);
	run_bytes(&cas, buf, len + 100, 4099, &k, &st);
	assert_int_equal(k.n, ref.n);
	assert_memory_equal(k.out, ref.out, ref.n * PKT);
	assert_int_equal(st.skipped_bytes, 100);
	assert_int_equal(st.sync_lost, 0);
	assert_int_equal(st.pkts_in, s->n);
	free(k.out);

	/* one byte lost inside packet j: that packet goes, the cadence is found again right after */
	memcpy(buf, s->ts, at + 50);
	memcpy(buf + at + 50, s->ts + at + 51, len - at - 51);
	run_bytes(&cas, buf, len - 1, 1000, &k, &st);
	check_minus_one(&ref, &k);
	assert_int_equal(st.skipped_bytes, PKT - 1);
	assert_int_equal(st.sync_lost, 1);
	assert_int_equal(st.pkts_in, s->n - 1);
	free(k.out);

	/* 500 bytes of garbage after packet j: j is in doubt (it may have lost its end) and goes */
	garbage(g, 500);
	memcpy(buf, s->ts, at + PKT);
	memcpy(buf + at + PKT, g, 500);
	memcpy(buf + at + PKT + 500, s->ts + at + PKT, len - at - PKT);
	run_bytes(&cas, buf, len + 500, 65536, &k, &st);
	check_minus_one(&ref, &k);
	assert_int_equal(st.skipped_bytes, PKT + 500);
	assert_int_equal(st.sync_lost, 1);
	free(k.out);

	/* the last packet cut (a component packet) */
	run_bytes(&cas, s->ts, len - 100, 7777, &k, &st);
	check_minus_one(&ref, &k);
	assert_int_equal(st.skipped_bytes, PKT - 100);
	assert_int_equal(st.sync_lost, 0);
	free(k.out);

	/* a byte at a time */
	run_bytes(&cas, s->ts, len, 1, &k, &st);
	assert_int_equal(k.n, ref.n);
	assert_memory_equal(k.out, ref.out, ref.n * PKT);
	assert_int_equal(st.skipped_bytes, 0);
	free(k.out);

	/* no transport stream at all, or nothing */
	garbage(buf, len);
	run_bytes(&cas, buf, len, 5000, &k, &st);
	assert_int_equal(k.n, 0);
	assert_int_equal(st.pkts_in, 0);
	assert_int_equal(st.skipped_bytes, len);
	free(k.out);
	run_bytes(&cas, buf, 0, 1, &k, &st);
	assert_int_equal(st.pkts_in, 0);
	assert_int_equal(st.skipped_bytes, 0);
	free(k.out);

	/* two packets alone are a stream; one alone is not */
	run_bytes(&cas, s->ts, 2 * PKT, 100, &k, &st);
	assert_int_equal(st.pkts_in, 2);
	free(k.out);
	run_bytes(&cas, s->ts, PKT, 100, &k, &st);
	assert_int_equal(st.pkts_in, 0);
	assert_int_equal(st.skipped_bytes, PKT);
	free(k.out);

	kh_host_cas_wipe(&cas);
	free(buf);
	free(ref.out);
	free_stream(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_export_period),
		cmocka_unit_test_setup_teardown(test_play_csa2, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_play_cissa, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_play_idsa, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_no_right, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_card_swap, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_card_swap_seen, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_reader_back, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_swap_to_entitled, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_ppv, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_ppv_credit_low, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_passive, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_emm_gap_withheld_revoke, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_emm_gap_pending_set, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_forged_broadcast_hides_nothing, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_forged_ecm, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_forged_ecm_ladder, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_foreign_ecms, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_foreign_ecms_ladder, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_lost_ecm, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_lost_ecm_ladder, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_restart, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_staggered_switch, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_injected_parity, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_resync, world_setup, world_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
