/*
 * The decoder engine (src/host/decoder.c) on a multiplex built here: three programmes, each with
 * its own PMT, ECM PID, algorithm (CSA2, CISSA, IDSA) and product, their packets interleaved and
 * their crypto periods changing at different places; one EMM PID named by the CAT. The card (c1)
 * is entitled to the first two products. Without a choice the engine plays programmes 1 and 2:
 * each component packet written equal to its clear packet (so each was descrambled with its own
 * programme's key of its own period), programme 3 left out after its first refused ECM, the PAT
 * written never listing it, the EMM passed to the card once. Named programmes are never left
 * out; an EMM bringing the missing right takes a left-out programme back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
#define NPROG 3
#define EMM_PID 0x300
#define PERIODS 4
#define PER_PERIOD 120 /* packets of each programme per period */
#define SHIFT 40       /* programme j changes period j * SHIFT packets after programme 0 */

static const struct {
	uint16_t number, pmt, vid, aud, ecm;
	enum kh_scr_alg alg;
	uint32_t product;
} P[NPROG] = {
	{1, 0x100, 0x101, 0x102, 0x201, KH_SCR_CSA2, 7},
	{2, 0x110, 0x111, 0x112, 0x211, KH_SCR_CISSA, 8},
	{3, 0x120, 0x121, 0x122, 0x221, KH_SCR_IDSA, 9},
};

/* ---- the headend side ---- */

struct mux {
	uint8_t *ts;
	size_t n, cap;
	uint8_t *clear[NPROG]; /* each programme's component packets in clear, in stream order */
	size_t nclear[NPROG], ccap[NPROG];
	size_t late_at[NPROG]; /* component packets of the programme before the late EMM (0: none) */
	uint8_t cc[KH_TS_PID_MAX + 1];
	uint8_t ecm[NPROG][PERIODS][KH_ECM_MAX];
	size_t ecm_len[NPROG][PERIODS];
	uint8_t emm[2][KH_EMM_MAX];
	size_t emm_len[2];
	int nemm;
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

static void put_section(struct mux *m, uint16_t pid, const uint8_t *sec, size_t n)
{
	uint8_t pk[8 * PKT];
	size_t len;

	assert_int_equal(kh_ts_packetise(pid, &m->cc[pid], sec, n, pk, sizeof pk, &len), KH_OK);
	for (size_t i = 0; i < len / PKT; i++)
		memcpy(slot(&m->ts, &m->n, &m->cap), pk + i * PKT, PKT);
}

static void put_pmt(struct mux *m, int j)
{
	struct kh_ts_pmt *pmt = calloc(1, sizeof *pmt);
	uint8_t sec[KH_TS_PSI_MAX], desc[32];
	struct kh_wr w;
	size_t len;

	assert_non_null(pmt);
	kh_wr_init(&w, desc, sizeof desc);
	assert_int_equal(kh_ts_ca_desc_put(&w, KH_DECODER_CA_SYSTEM_ID, P[j].ecm, NULL, 0), KH_OK);
	if (P[j].alg != KH_SCR_CSA2)
		assert_int_equal(kh_ts_scrambling_desc_put(&w, P[j].alg == KH_SCR_CISSA ? KH_TS_SCRAMBLING_CISSA1
											 : KH_TS_SCRAMBLING_IDSA),
				 KH_OK);
	pmt->program_number = P[j].number;
	pmt->current = 1;
	pmt->pcr_pid = P[j].vid;
	pmt->desc = desc;
	pmt->desc_len = w.len;
	pmt->n = 2;
	pmt->es[0].stream_type = 0x1B;
	pmt->es[0].pid = P[j].vid;
	pmt->es[1].stream_type = 0x0F;
	pmt->es[1].pid = P[j].aud;
	assert_int_equal(kh_ts_pmt_build(pmt, sec, sizeof sec, &len), KH_OK);
	put_section(m, P[j].pmt, sec, len);
	free(pmt);
}

static void put_psi(struct mux *m)
{
	struct kh_ts_pat *pat = calloc(1, sizeof *pat);
	struct kh_ts_cat cat;
	uint8_t sec[KH_TS_PSI_MAX], cdesc[16];
	struct kh_wr w;
	size_t len;

	assert_non_null(pat);
	pat->tsid = 1;
	pat->version = 5;
	pat->current = 1;
	pat->n = NPROG;
	for (int j = 0; j < NPROG; j++) {
		pat->prog[j].program_number = P[j].number;
		pat->prog[j].pid = P[j].pmt;
	}
	assert_int_equal(kh_ts_pat_build(pat, sec, sizeof sec, &len), KH_OK);
	put_section(m, KH_TS_PID_PAT, sec, len);
	free(pat);
	kh_wr_init(&w, cdesc, sizeof cdesc);
	assert_int_equal(kh_ts_ca_desc_put(&w, KH_DECODER_CA_SYSTEM_ID, EMM_PID, NULL, 0), KH_OK);
	memset(&cat, 0, sizeof cat);
	cat.current = 1;
	cat.desc = cdesc;
	cat.desc_len = w.len;
	assert_int_equal(kh_ts_cat_build(&cat, sec, sizeof sec, &len), KH_OK);
	put_section(m, KH_TS_PID_CAT, sec, len);
	for (int j = 0; j < NPROG; j++)
		put_pmt(m, j);
}

static void put_comp(struct mux *m, int j, struct kh_scr *scr, size_t i, enum kh_scr_parity par)
{
	uint16_t pid = i % 3 == 2 ? P[j].aud : P[j].vid;
	uint8_t payload[184], *p;
	struct kh_ts_pkt h;

	memset(&h, 0, sizeof h);
	h.pid = pid;
	h.pusi = i % 10 == 0;
	h.cc = m->cc[pid]++ & 15;
	m->cc[pid] &= 15;
	assert_int_equal(kh_random(payload, sizeof payload), KH_OK);
	p = slot(&m->ts, &m->n, &m->cap);
	assert_int_equal(kh_ts_build(p, &h, NULL, 0, payload, sizeof payload), KH_OK);
	memcpy(slot(&m->clear[j], &m->nclear[j], &m->ccap[j]), p, PKT);
	assert_int_equal(kh_scr_scramble(scr, p, 1, par), KH_OK);
}

/* A unique EMM for ua: with seq 1 the service key and the products of rights[] (0 ends). */
static size_t make_emm(struct world *w, uint32_t ua, uint32_t seq, const uint8_t sk[32], const uint32_t *rights,
		       uint64_t t, uint8_t *out)
{
	uint8_t cmds[KH_EMM_CMDS_MAX];
	struct kh_wr wr;

	kh_wr_init(&wr, cmds, sizeof cmds);
	if (seq == 1)
		assert_int_equal(kh_emm_put_set_key(&wr, 1, 1, sk), KH_OK);
	for (; *rights; rights++)
		assert_int_equal(kh_emm_put_entitle(&wr, *rights, t - 3600, t + 86400), KH_OK);
	return world_emm(w->auth, ua, seq, cmds, wr.len, out, KH_EMM_MAX);
}

static void seal_ecms(struct world *w, struct mux *m, const uint8_t sk[32], uint8_t cw[NPROG][PERIODS + 1][16],
		      uint64_t t)
{
	struct kh_ecm e;

	for (int j = 0; j < NPROG; j++) {
		size_t cwlen = kh_scr_keylen(P[j].alg);
		for (int k = 0; k < PERIODS; k++) {
			memset(&e, 0, sizeof e);
			e.h.table_id = (uint8_t)(KH_ECM_TID_EVEN | (k & 1));
			e.h.key_id = 1;
			e.h.key_version = 1;
			e.h.cp = (uint32_t)k;
			e.alg = (uint8_t)P[j].alg;
			e.cw_len = (uint8_t)cwlen;
			memcpy(k & 1 ? e.cw_odd : e.cw_even, cw[j][k], cwlen);
			memcpy(k & 1 ? e.cw_even : e.cw_odd, cw[j][k ? k - 1 : PERIODS], cwlen);
			e.access = KH_ECM_PRODUCT;
			e.product = P[j].product;
			e.time = t;
			assert_int_equal(kh_ecm_seal(sk, world_ecm_signer(w->auth), &e, m->ecm[j][k], KH_ECM_MAX,
						     &m->ecm_len[j][k]),
					 KH_OK);
		}
	}
}

static void put_ecm(struct mux *m, int j, int k)
{
	put_section(m, P[j].ecm, m->ecm[j][k], m->ecm_len[j][k]);
}

/* The period of programme j at step s (s: 0 .. PERIODS * PER_PERIOD - 1 of programme 0). */
static int period_of(int j, size_t s)
{
	size_t shifted = s < (size_t)j * SHIFT ? 0 : s - (size_t)j * SHIFT;
	return (int)(shifted / PER_PERIOD);
}

/*
 * The multiplex: tables, the EMM and every programme's ECM 0 first; then the programmes' packets
 * in turn, each in its own period; the carousel every PER_PERIOD / 2 steps; each programme's ECM
 * k+1 ahead of its period. With late, a second EMM (seq 2, product 9) comes at the start of period 2.
 */
static struct mux *make_mux(struct world *w, uint32_t ua, int late)
{
	static const uint32_t first[] = {7, 8, 0}, more[] = {9, 0};
	struct mux *m = calloc(1, sizeof *m);
	uint8_t sk[32], cw[NPROG][PERIODS + 1][16];
	struct kh_scr *scr[NPROG];
	uint64_t t = (uint64_t)time(NULL);
	int cur[NPROG], sent[NPROG] = {0}; /* sent: the latest ECM put, repeated until the next */

	assert_non_null(m);
	assert_int_equal(kh_random(sk, sizeof sk), KH_OK);
	assert_int_equal(kh_random(&cw[0][0][0], sizeof cw), KH_OK);
	seal_ecms(w, m, sk, cw, t);
	m->emm_len[0] = make_emm(w, ua, 1, sk, first, t, m->emm[0]);
	m->nemm = 1;
	if (late)
		m->emm_len[1] = make_emm(w, ua, 2, sk, more, t, m->emm[1]);
	for (int j = 0; j < NPROG; j++) {
		assert_int_equal(kh_scr_new(P[j].alg, 0, &scr[j]), KH_OK);
		assert_int_equal(kh_scr_set_key(scr[j], KH_SCR_EVEN, cw[j][0], kh_scr_keylen(P[j].alg)), KH_OK);
		cur[j] = 0;
	}
	put_psi(m);
	put_section(m, EMM_PID, m->emm[0], m->emm_len[0]);
	for (int j = 0; j < NPROG; j++)
		put_ecm(m, j, 0);
	for (size_t s = 0; s < (size_t)PERIODS * PER_PERIOD; s++) {
		if (late && s == 2 * PER_PERIOD) {
			for (int j = 0; j < NPROG; j++)
				m->late_at[j] = m->nclear[j];
			m->nemm = 2;
		}
		if (s % (PER_PERIOD / 2) == PER_PERIOD / 4) {
			put_psi(m);
			for (int e = 0; e < m->nemm; e++)
				put_section(m, EMM_PID, m->emm[e], m->emm_len[e]);
		}
		for (int j = 0; j < NPROG; j++) {
			int k = period_of(j, s);
			size_t in = s - (size_t)j * SHIFT;
			if (s >= (size_t)j * SHIFT && in % PER_PERIOD == PER_PERIOD * 3 / 4 && k + 1 < PERIODS) {
				sent[j] = k + 1;
				put_ecm(m, j, k + 1); /* the lead */
			}
			if (s % 20 == (size_t)j)
				put_ecm(m, j, sent[j]); /* repetitions */
			if (k != cur[j] && k < PERIODS) {
				enum kh_scr_parity par = k & 1 ? KH_SCR_ODD : KH_SCR_EVEN;
				assert_int_equal(kh_scr_set_key(scr[j], par, cw[j][k], kh_scr_keylen(P[j].alg)), KH_OK);
				cur[j] = k;
			}
			put_comp(m, j, scr[j], s, cur[j] & 1 ? KH_SCR_ODD : KH_SCR_EVEN);
		}
	}
	for (int j = 0; j < NPROG; j++)
		kh_scr_free(scr[j]);
	kh_wipe(sk, sizeof sk);
	kh_wipe(cw, sizeof cw);
	return m;
}

static void free_mux(struct mux *m)
{
	free(m->ts);
	for (int j = 0; j < NPROG; j++)
		free(m->clear[j]);
	free(m);
}

/* ---- the decoder side ---- */

#define MAX_NOTES 16
struct sink {
	uint8_t *out;
	size_t n, cap;
	int nnotes;
	kh_err reason[MAX_NOTES];
	char msg[MAX_NOTES][300];
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

/* Play m through c1 with the programmes of cfg (program / programs), in uneven chunks. */
static struct kh_decoder *play(struct world *w, struct kh_host_cas *cas, const struct mux *m,
			       struct kh_decoder_config *cfg, struct sink *k)
{
	struct kh_decoder *d = NULL;
	size_t i = 0, chunk = 1;

	kh_host_cas_init(cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	assert_int_equal(kh_host_cas_connect(cas), KH_OK);
	cfg->cas = cas;
	cfg->notify = sink_notify;
	cfg->out = sink_out;
	cfg->ctx = k;
	assert_int_equal(kh_decoder_new(cfg, &d), KH_OK);
	while (i < m->n) {
		size_t n = chunk < m->n - i ? chunk : m->n - i;
		assert_int_equal(kh_decoder_feed(d, m->ts + i * PKT, n), KH_OK);
		i += n;
		chunk = chunk * 7 % 500 + 1;
	}
	assert_int_equal(kh_decoder_finish(d), KH_OK);
	return d;
}

static int prog_of(uint16_t pid)
{
	for (int j = 0; j < NPROG; j++)
		if (pid == P[j].vid || pid == P[j].aud)
			return j;
	return -1;
}

/*
 * Every output packet is clear and no ECM, EMM or CAT; programme j's component packets are its
 * clear packets [from[j], nclear) in order (from[j] == nclear: none at all); the PMTs of the
 * programmes in pmts (bit j) come out, no other.
 */
static void check_out(const struct mux *m, const struct sink *k, const size_t from[NPROG], unsigned pmts)
{
	size_t next[NPROG];
	struct kh_ts_pkt p;
	int pmt_seen[NPROG] = {0};

	memcpy(next, from, sizeof next);
	for (size_t i = 0; i < k->n; i++) {
		const uint8_t *pk = k->out + i * PKT;
		int j;
		assert_int_equal(kh_ts_parse(pk, PKT, &p), KH_OK);
		assert_int_equal(p.scrambling, KH_TS_SC_CLEAR);
		assert_true(p.pid != KH_TS_PID_CAT && p.pid != EMM_PID);
		for (j = 0; j < NPROG; j++) {
			assert_int_not_equal(p.pid, P[j].ecm);
			if (p.pid == P[j].pmt)
				pmt_seen[j] = 1;
		}
		if ((j = prog_of(p.pid)) < 0)
			continue;
		assert_true(next[j] < m->nclear[j]);
		assert_memory_equal(pk, m->clear[j] + next[j] * PKT, PKT);
		next[j]++;
	}
	for (int j = 0; j < NPROG; j++) {
		assert_int_equal(next[j], m->nclear[j]);
		assert_int_equal(pmt_seen[j], (pmts >> j) & 1);
	}
}

/* The programmes each PAT section of the output lists, as a bit set (1 << number); the last one. */
static unsigned pat_lists(const struct sink *k, unsigned *every)
{
	struct kh_ts_asm *a = calloc(1, sizeof *a);
	struct kh_ts_pat *pat = calloc(1, sizeof *pat);
	uint8_t sec[KH_TS_PSI_MAX];
	unsigned last = 0;
	size_t len;

	assert_non_null(a);
	assert_non_null(pat);
	*every = 0;
	assert_int_equal(kh_ts_asm_init(a, KH_TS_PID_PAT, KH_TS_PSI_MAX), KH_OK);
	for (size_t i = 0; i < k->n; i++) {
		if (((k->out[i * PKT + 1] & 0x1F) << 8 | k->out[i * PKT + 2]) != KH_TS_PID_PAT)
			continue;
		assert_int_equal(kh_ts_asm_push(a, k->out + i * PKT, PKT), KH_OK);
		while (kh_ts_asm_pop(a, sec, sizeof sec, &len) == 1) {
			assert_int_equal(kh_ts_pat_parse(sec, len, pat), KH_OK);
			last = 0;
			for (size_t e = 0; e < pat->n; e++)
				last |= 1u << pat->prog[e].program_number;
			*every |= last;
		}
	}
	assert_int_equal(a->cc_errors, 0);
	free(a);
	free(pat);
	return last;
}

/* The per-PID row of pid (fails when there is none). */
static struct kh_decoder_pid_stat row_of(const struct kh_decoder *d, uint16_t pid)
{
	struct kh_decoder_pid_stat rows[KH_DECODER_PIDS];
	size_t n = kh_decoder_pid_stats(d, rows, KH_DECODER_PIDS);

	for (size_t i = 0; i < n; i++)
		if (rows[i].pid == pid)
			return rows[i];
	fail_msg("no row for pid 0x%X", pid);
	return rows[0];
}

/* Nothing chosen: programmes 1 and 2 whole, programme 3 left out once, the EMM passed once. */
static void test_auto(void **state)
{
	struct world *w = *state;
	struct mux *m = make_mux(w, w->c1.ua, 0);
	struct kh_decoder_config cfg = {0};
	struct kh_decoder_stats st;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder *d = play(w, &cas, m, &cfg, &k);
	size_t from[NPROG] = {0, 0, m->nclear[2]};
	unsigned every, last;

	check_out(m, &k, from, 3);
	last = pat_lists(&k, &every);
	assert_int_equal(last, 1u << 1 | 1u << 2);
	assert_int_equal(every & (1u << 3), 0); /* never listed: it was not known to be played */
	kh_decoder_get_stats(d, &st);
	assert_int_equal(st.programs, 2);
	assert_int_equal(st.left_out, 1);
	assert_int_equal(st.descrambled, m->nclear[0] + m->nclear[1]);
	assert_int_equal(st.dropped_nokey, 0);
	assert_int_equal(st.emm_passed, 1); /* once for the multiplex, not once per programme */
	assert_int_equal(st.emm_accepted, 1);
	assert_int_equal(st.ecm_answered, 2 * PERIODS);
	assert_int_equal(st.ecm_refused, 1); /* programme 3's first ECM, then it is left out */
	assert_int_equal(st.program, 1);
	assert_int_equal(k.nnotes, 1);
	assert_int_equal(k.reason[0], KH_ERR_NO_RIGHT);
	assert_string_equal(k.msg[0], "programme 3: left out of the output: the card refused its ECM (no entitlement "
				      "for this programme)");
	for (int j = 0; j < NPROG; j++) {
		struct kh_decoder_pid_stat v = row_of(d, P[j].vid), a = row_of(d, P[j].aud), e = row_of(d, P[j].ecm);
		assert_int_equal(v.program, P[j].number);
		assert_int_equal(v.role, KH_DECODER_ROLE_VIDEO);
		assert_int_equal(a.role, KH_DECODER_ROLE_AUDIO);
		assert_int_equal(e.role, KH_DECODER_ROLE_ECM);
		assert_int_equal(e.out, 0);
		assert_int_equal(v.in + a.in, m->nclear[j]);
		assert_int_equal(v.descrambled + a.descrambled, j < 2 ? m->nclear[j] : 0);
		assert_int_equal(v.dropped + a.dropped, j < 2 ? 0 : m->nclear[j]);
		assert_int_equal(v.out, v.descrambled);
	}
	assert_int_equal(row_of(d, EMM_PID).role, KH_DECODER_ROLE_EMM);
	assert_int_equal(row_of(d, P[0].pmt).role, KH_DECODER_ROLE_PSI);
	assert_string_equal(kh_decoder_role_name(KH_DECODER_ROLE_VIDEO), "video");
	kh_decoder_free(d);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_mux(m);
}

/* Named programmes: played whatever the card says; the others out of the output. */
static void test_named(void **state)
{
	struct world *w = *state;
	struct mux *m = make_mux(w, w->c1.ua, 0);
	struct kh_decoder_config cfg = {.programs = {3, 2}, .nprograms = 2};
	struct kh_decoder_stats st;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder *d = play(w, &cas, m, &cfg, &k);
	size_t from[NPROG] = {m->nclear[0], 0, m->nclear[2]};
	unsigned every;

	check_out(m, &k, from, 6);
	/* programme 3 stays in the PAT (its PMT too) though none of its packets can be descrambled */
	assert_int_equal(pat_lists(&k, &every), 1u << 2 | 1u << 3);
	assert_int_equal(every, 1u << 2 | 1u << 3);
	kh_decoder_get_stats(d, &st);
	assert_int_equal(st.programs, 2);
	assert_int_equal(st.left_out, 0);
	assert_int_equal(st.descrambled, m->nclear[1]);
	assert_int_equal(st.dropped_nokey, m->nclear[2]);
	assert_int_equal(st.dropped_left, m->nclear[0] + (size_t)row_of(d, P[0].pmt).in);
	assert_int_equal(k.nnotes, 1);
	assert_string_equal(k.msg[0], "programme 3: no subscription for this channel");
	assert_int_equal(row_of(d, P[0].vid).out, 0);
	kh_decoder_free(d);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_mux(m);
}

/* An EMM bringing programme 3's right takes it back: played from its next ECM on. */
static void test_taken_back(void **state)
{
	struct world *w = *state;
	struct mux *m = make_mux(w, w->c1.ua, 1);
	struct kh_decoder_config cfg = {0};
	struct kh_decoder_stats st;
	struct kh_host_cas cas;
	struct sink k = {0};
	struct kh_decoder *d = play(w, &cas, m, &cfg, &k);
	struct kh_decoder_pid_stat v, a;
	unsigned every;

	kh_decoder_get_stats(d, &st);
	assert_int_equal(st.emm_accepted, 2);
	assert_int_equal(st.left_out, 0);
	assert_int_equal(st.programs, 3);
	assert_int_equal(pat_lists(&k, &every), 1u << 1 | 1u << 2 | 1u << 3);
	v = row_of(d, P[2].vid);
	a = row_of(d, P[2].aud);
	/* from the late EMM on at most the rest of the period running then is lost (its ECM was
	 * refused before the EMM and is not passed again until the next period's) */
	assert_true(v.descrambled + a.descrambled > 0);
	assert_true(v.descrambled + a.descrambled >= m->nclear[2] - m->late_at[2] - PER_PERIOD);
	assert_true(v.descrambled + a.descrambled <= m->nclear[2] - m->late_at[2]);
	assert_int_equal(st.descrambled, m->nclear[0] + m->nclear[1] + v.descrambled + a.descrambled);
	kh_decoder_free(d);
	kh_host_cas_wipe(&cas);
	free(k.out);
	free_mux(m);
}

/* Configuration errors. */
static void test_multi_args(void **state)
{
	struct world *w = *state;
	struct kh_decoder_config cfg = {0};
	struct kh_host_cas cas;
	struct kh_decoder *d = NULL;

	kh_host_cas_init(&cas, &w->dec.t, &w->cam.t, &w->c1.t, 0);
	cfg.cas = &cas;
	cfg.nprograms = KH_DECODER_PROGRAMS + 1;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_ERR_INVAL);
	cfg.nprograms = 2;
	cfg.programs[0] = 1; /* programs[1] is 0: no programme has number 0 */
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_ERR_INVAL);
	cfg.programs[1] = 2;
	kh_host_cas_init(&cas, &w->dec.t, &w->cam.t, &w->c1.t, KH_HOST_CAS_LADDER);
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_ERR_INVAL); /* the decoder module holds one pair */
	cfg.nprograms = 1;
	assert_int_equal(kh_decoder_new(&cfg, &d), KH_OK);
	kh_decoder_free(d);
	kh_host_cas_wipe(&cas);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_multi_args, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_auto, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_named, world_setup, world_teardown),
		cmocka_unit_test_setup_teardown(test_taken_back, world_setup, world_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
