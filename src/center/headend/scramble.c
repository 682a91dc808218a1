/*
 * The headend's streaming scrambler: a clear MPEG-TS programme in, the same programme
 * scrambled out (DVB-CSA2, DVB-CISSA or ATIS-IDSA through kh_scr_*), with what a decoder needs
 * to descramble it: ECMs on the ECM PID (one per crypto period, repeated), the operator's EMMs
 * cycled on the EMM PID, a PMT rewritten to name the ECM PID (CA_descriptor) and the scrambling
 * mode, and a CAT naming the EMM PID (ISO/IEC 13818-1 §2.4.4, ETSI EN 300 468, the protocol design
 * "Pay-TV: ECM and EMM").
 *
 * Crypto periods run on stream time, the programme's PCR (27 MHz, wrapping at 2^33 * 300),
 * never on wall time, so a file is scrambled the same way however fast it is read. A packet
 * takes the time of the last PCR before it. docs/internals/headend.md tells the ECM timing.
 *
 * A protocol engine in the house sense: no I/O (packets out through a sink callback), fixed
 * buffers allocated once (memory flat however long the stream), a sticky error. One damaged
 * packet is dropped and counted, never an error: only what cannot be handled safely stops it (a
 * programme scrambled already, a PAT or PMT that puts something on the ECM or EMM PID).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/headend.h"
#include "keyhole/ts.h"

#define OUT_CAP 512 /* packets staged before the scrambler runs and the sink is called */
#define PCR_HZ 27000000ull
#define PCR_MOD (((uint64_t)1 << 33) * 300)
/* A PCR step larger than this (or backwards, or flagged as a discontinuity) does not advance
 * stream time: it is a splice or a loop of the source, not a minute of programme. */
#define PCR_JUMP_MAX (60 * PCR_HZ)
#define QCAP 512 /* REPLACE/GROW: packets of ours waiting for a null packet to replace */

struct kh_headend {
	struct kh_headend_cfg cfg; /* cfg.emm points at our own copy */
	uint8_t *emm;
	size_t emm_len, emm_count, emm_off;
	size_t emm_new; /* offset of the first EMM added while running and not yet sent (emm_len: none) */
	kh_headend_sink sink;
	void *sink_ctx;
	kh_headend_cw_fn cw_fn;
	void *cw_ctx;
	struct kh_scr *scr;
	kh_err err;
	char why[400];
	int started;

	/* PSI */
	int have_pat, have_pmt;
	uint16_t program, pmt_pid, pcr_pid;
	uint8_t comp[(KH_TS_PID_MAX + 1) / 8]; /* component PIDs, a bitmap */
	uint8_t cc_pmt, cc_cat, cc_ecm, cc_emm;
	size_t cat_len, pmt_len;
	uint8_t cat[KH_TS_PSI_MAX];
	uint8_t pmt_out[KH_TS_PSI_MAX];

	/* stream time, 27 MHz ticks since the first PCR */
	int have_t0;
	uint64_t last_pcr, clock;
	uint64_t period, lead, ecm_iv, emm_iv;
	uint64_t next_ecm, next_emm;
	uint32_t announced; /* the newest ECM's crypto period */
	size_t cw_len;
	uint8_t cw[2][KH_CAS_CW_MAX]; /* by parity: CW_k in slot k & 1 */
	size_t ecm_len;
	uint8_t ecm[KH_ECM_MAX];

	/* REPLACE and GROW: our packets wait here, in order, for a null (or dropped) input packet */
	size_t q_head, q_n;
	uint64_t q_in, q_out;  /* packets queued and taken, ever */
	uint64_t ecm_mark[2];  /* by parity: q_in once the newest announced ECM of it was queued */
	uint64_t q_t[QCAP];    /* stream time each waiting packet was queued */
	uint8_t q[QCAP * KH_TS_PACKET_LEN];
	uint64_t holes;        /* null and dropped input packets: the bandwidth we may take */

	/* GROW: PCRs restamped on the rate measured between the first two */
	int pcr_seen;
	uint64_t pcr0, pcr0_in, pcr0_out, tick_num, tick_den;
	uint8_t stamped[KH_TS_PACKET_LEN];

	/* output staging: packets in order; those to scramble are listed by index */
	size_t nout, nscr;
	int scr_parity;
	uint16_t scr_idx[OUT_CAP];
	uint8_t out[OUT_CAP * KH_TS_PACKET_LEN];
	uint8_t batch[OUT_CAP * KH_TS_PACKET_LEN];

	struct kh_headend_stats st;
	unsigned scrambled_run; /* component packets in a row that arrived scrambled */
	struct kh_ts_asm pat_asm, pmt_asm, cat_asm;
	struct kh_ts_pat pat;
	struct kh_ts_pmt pmt;
	uint8_t sec[KH_TS_PRIVATE_MAX];
};

__attribute__((format(printf, 3, 4))) static kh_err fail(struct kh_headend *h, kh_err r, const char *fmt, ...)
{
	va_list ap;
	if (h->err != KH_OK)
		return h->err;
	va_start(ap, fmt);
	vsnprintf(h->why, sizeof h->why, fmt, ap);
	va_end(ap);
	h->err = r;
	return r;
}

const char *kh_headend_why(const struct kh_headend *h)
{
	return h->err != KH_OK ? h->why : "";
}

void kh_headend_stats(const struct kh_headend *h, struct kh_headend_stats *st)
{
	*st = h->st;
	st->stream_ms = h->clock / (PCR_HZ / 1000);
}

void kh_headend_set_cw_fn(struct kh_headend *h, kh_headend_cw_fn fn, void *ctx)
{
	h->cw_fn = fn;
	h->cw_ctx = ctx;
}

void kh_headend_free(struct kh_headend *h)
{
	if (!h)
		return;
	kh_scr_free(h->scr);
	if (h->emm) {
		kh_wipe(h->emm, h->emm_len);
		free(h->emm);
	}
	kh_wipe(h, sizeof *h); /* service key, CWs, and the clear packets staged */
	free(h);
}

static int pid_ok(uint16_t pid)
{
	return pid >= 0x0010 && pid <= 0x1FFE;
}

kh_err kh_headend_new(const struct kh_headend_cfg *cfg, kh_headend_sink sink, void *sink_ctx,
		      struct kh_headend **out)
{
	struct kh_headend *h = NULL;
	uint8_t desc[16];
	struct kh_wr w;
	struct kh_ts_cat cat = {0};
	size_t off = 0, n;
	const uint8_t *sec;
	int more;
	kh_err r;

	if (!cfg || !sink || !out || kh_scr_keylen(cfg->alg) == 0 ||
	    (cfg->csa_reduce && cfg->alg != KH_SCR_CSA2) ||
	    (cfg->access != KH_ECM_PRODUCT && cfg->access != KH_ECM_EVENT) ||
	    cfg->period_s < KH_HEADEND_PERIOD_MIN || cfg->period_s > KH_HEADEND_PERIOD_MAX ||
	    cfg->lead_ms >= cfg->period_s * 1000u || cfg->ecm_interval_ms < 10 || cfg->emm_interval_ms < 10 ||
	    cfg->ecm_interval_ms > 60000 || cfg->emm_interval_ms > 60000 || !pid_ok(cfg->ecm_pid) ||
	    !pid_ok(cfg->emm_pid) || cfg->ecm_pid == cfg->emm_pid || (cfg->emm_len && !cfg->emm) ||
	    (cfg->nulls != KH_HEADEND_NULL_INSERT && cfg->nulls != KH_HEADEND_NULL_REPLACE &&
	     cfg->nulls != KH_HEADEND_NULL_GROW))
		return KH_ERR_INVAL;
	/* the EMM file: whole sections, each one an EMM */
	while ((more = kh_headend_emm_next(cfg->emm, cfg->emm_len, &off, &sec, &n)) == 1)
		;
	if (more < 0)
		return more;
	if (!(h = calloc(1, sizeof *h)))
		return KH_ERR_NOMEM;
	h->cfg = *cfg;
	h->cfg.emm = NULL;
	h->sink = sink;
	h->sink_ctx = sink_ctx;
	if (cfg->emm_len) {
		if (!(h->emm = malloc(cfg->emm_len))) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		memcpy(h->emm, cfg->emm, cfg->emm_len);
		h->emm_len = cfg->emm_len;
		off = 0;
		while (kh_headend_emm_next(h->emm, h->emm_len, &off, &sec, &n) == 1)
			h->emm_count++;
	}
	h->emm_new = h->emm_len;
	if ((r = kh_scr_new(cfg->alg, cfg->csa_reduce ? KH_SCR_F_CSA_REDUCE : 0, &h->scr)) != KH_OK)
		goto out;
	h->cw_len = kh_scr_keylen(cfg->alg);
	h->period = (uint64_t)cfg->period_s * PCR_HZ;
	h->lead = (uint64_t)cfg->lead_ms * (PCR_HZ / 1000);
	h->ecm_iv = (uint64_t)cfg->ecm_interval_ms * (PCR_HZ / 1000);
	h->emm_iv = (uint64_t)cfg->emm_interval_ms * (PCR_HZ / 1000);
	/* our CAT, until the input brings one to merge ours into */
	kh_wr_init(&w, desc, sizeof desc);
	if ((r = kh_ts_ca_desc_put(&w, cfg->ca_system_id, cfg->emm_pid, NULL, 0)) != KH_OK)
		goto out;
	cat.current = 1;
	cat.desc = desc;
	cat.desc_len = w.len;
	if ((r = kh_ts_cat_build(&cat, h->cat, sizeof h->cat, &h->cat_len)) != KH_OK)
		goto out;
	if ((r = kh_ts_asm_init(&h->pat_asm, KH_TS_PID_PAT, KH_TS_PSI_MAX)) != KH_OK ||
	    (r = kh_ts_asm_init(&h->cat_asm, KH_TS_PID_CAT, KH_TS_PSI_MAX)) != KH_OK)
		goto out;
	*out = h;
	h = NULL;
out:
	kh_headend_free(h);
	return r;
}

kh_err kh_headend_emm_add(struct kh_headend *h, const uint8_t *emm, size_t len)
{
	size_t off = 0, n, count = 0;
	const uint8_t *sec;
	uint8_t *q;
	int more;

	if (!h || (len && !emm))
		return KH_ERR_INVAL;
	while ((more = kh_headend_emm_next(emm, len, &off, &sec, &n)) == 1)
		count++;
	if (more < 0)
		return more;
	if (len == 0)
		return KH_OK;
	if (len > KH_HEADEND_FEED_MAX || h->emm_len > KH_HEADEND_FEED_MAX - len)
		return KH_ERR_TOO_LARGE;
	/*
	 * realloc, not copy-and-wipe: EMMs are sealed for their cards, not secret (kh_headend_free
	 * wipes them as hygiene only), and this runs in the packet path; a large block grows in
	 * place or by remapping, so the stall is about the new bytes, not the whole carousel.
	 */
	if (!(q = realloc(h->emm, h->emm_len + len)))
		return KH_ERR_NOMEM;
	memcpy(q + h->emm_len, emm, len);
	/* emm_new stays on the first added EMM not yet sent, or (none pending) is the old end: the
	 * first of these */
	h->emm = q;
	h->emm_len += len;
	h->emm_count += count;
	if (!h->started)
		h->emm_new = h->emm_len; /* the start sends them all anyway */
	return KH_OK;
}

/* ---- output ---- */

static kh_err flush(struct kh_headend *h)
{
	kh_err r;

	if (h->nscr) {
		for (size_t i = 0; i < h->nscr; i++)
			memcpy(h->batch + i * KH_TS_PACKET_LEN, h->out + (size_t)h->scr_idx[i] * KH_TS_PACKET_LEN,
			       KH_TS_PACKET_LEN);
		r = kh_scr_scramble(h->scr, h->batch, h->nscr, (enum kh_scr_parity)h->scr_parity);
		if (r != KH_OK)
			return fail(h, r, "scrambling failed");
		for (size_t i = 0; i < h->nscr; i++)
			memcpy(h->out + (size_t)h->scr_idx[i] * KH_TS_PACKET_LEN, h->batch + i * KH_TS_PACKET_LEN,
			       KH_TS_PACKET_LEN);
		h->nscr = 0;
	}
	if (h->nout) {
		if ((r = h->sink(h->sink_ctx, h->out, h->nout)) != KH_OK)
			return fail(h, r, "writing the output failed");
		h->st.out += h->nout;
		h->nout = 0;
	}
	return KH_OK;
}

/* Stage one packet; parity < 0: as it is, else scrambled with that parity. */
static kh_err put_pkt(struct kh_headend *h, const uint8_t *pkt, int parity)
{
	kh_err r;

	if (h->nout == OUT_CAP || (parity >= 0 && h->nscr && parity != h->scr_parity))
		if ((r = flush(h)) != KH_OK)
			return r;
	memcpy(h->out + h->nout * KH_TS_PACKET_LEN, pkt, KH_TS_PACKET_LEN);
	if (parity >= 0) {
		h->scr_idx[h->nscr++] = (uint16_t)h->nout;
		h->scr_parity = parity;
	}
	h->nout++;
	return KH_OK;
}

/* ---- REPLACE and GROW: our packets take the place of null packets ---- */

static const uint8_t *q_at(const struct kh_headend *h, size_t i)
{
	return h->q + ((h->q_head + i) % QCAP) * KH_TS_PACKET_LEN;
}

/* Null bandwidth over the stream so far, bit/s, from a packet count (0 before time moved). */
static unsigned long long rate_of(const struct kh_headend *h, uint64_t pkts)
{
	if (!h->clock)
		return 0;
	return (unsigned long long)((double)pkts * KH_TS_PACKET_LEN * 8 * (double)PCR_HZ / (double)h->clock);
}

/*
 * A packet of ours found no null packet in time. REPLACE stops, saying what was needed; GROW
 * inserts every waiting packet here (the PCRs after it are restamped).
 */
static kh_err late(struct kh_headend *h, const char *what)
{
	kh_err r;

	if (h->cfg.nulls != KH_HEADEND_NULL_GROW)
		return fail(h, KH_ERR_TOO_LARGE,
			    "not enough null packets (at %llu ms of stream time%s): the ECM, EMM and PSI "
			    "packets need about %llu kbit/s, the input's null and dropped packets give %llu "
			    "kbit/s; --grow inserts them and restamps the PCRs",
			    (unsigned long long)(h->clock / (PCR_HZ / 1000)), what, rate_of(h, h->q_in) / 1000,
			    rate_of(h, h->holes) / 1000);
	while (h->q_n) {
		if ((r = put_pkt(h, q_at(h, 0), -1)) != KH_OK)
			return r;
		h->q_head = (h->q_head + 1) % QCAP;
		h->q_n--;
		h->q_out++;
		h->st.inserted++;
	}
	return KH_OK;
}

/* The oldest waiting packet has waited longer than one ECM repetition interval. */
static kh_err check_late(struct kh_headend *h)
{
	if (h->q_n && h->clock - h->q_t[h->q_head] > h->ecm_iv)
		return late(h, ": a packet waited longer than the ECM interval");
	return KH_OK;
}

static kh_err enqueue(struct kh_headend *h, const uint8_t *pkt)
{
	size_t at;
	kh_err r;

	if (h->q_n == QCAP && (r = late(h, ": too many packets waiting")) != KH_OK)
		return r;
	at = (h->q_head + h->q_n) % QCAP;
	memcpy(h->q + at * KH_TS_PACKET_LEN, pkt, KH_TS_PACKET_LEN);
	h->q_t[at] = h->clock;
	h->q_n++;
	h->q_in++;
	return KH_OK;
}

/* An input packet that does not go out (a null packet, or one dropped): a waiting packet of ours
 * takes its place, else a null packet, so the count of packets stays. */
static kh_err hole(struct kh_headend *h, const uint8_t *pkt, int is_null)
{
	uint8_t null_pkt[KH_TS_PACKET_LEN];
	kh_err r;

	h->holes++;
	if (h->q_n) {
		r = put_pkt(h, q_at(h, 0), -1);
		h->q_head = (h->q_head + 1) % QCAP;
		h->q_n--;
		h->q_out++;
		h->st.replaced++;
		return r;
	}
	if (is_null)
		return put_pkt(h, pkt, -1);
	memset(null_pkt, 0xFF, sizeof null_pkt);
	null_pkt[0] = 0x47;
	null_pkt[1] = 0x1F;
	null_pkt[3] = 0x10;
	return put_pkt(h, null_pkt, -1);
}

static kh_err put_section(struct kh_headend *h, uint16_t pid, uint8_t *cc, const uint8_t *sec, size_t n)
{
	uint8_t pk[(KH_TS_PRIVATE_MAX / 183 + 2) * KH_TS_PACKET_LEN];
	size_t len;
	kh_err r;

	if ((r = kh_ts_packetise(pid, cc, sec, n, pk, sizeof pk, &len)) != KH_OK)
		return fail(h, r, "packetising a section on PID 0x%04X failed", pid);
	for (size_t i = 0; i < len; i += KH_TS_PACKET_LEN) {
		if (h->cfg.nulls == KH_HEADEND_NULL_INSERT)
			r = put_pkt(h, pk + i, -1);
		else
			r = enqueue(h, pk + i);
		if (r != KH_OK)
			return r;
	}
	return KH_OK;
}

/* ---- ECMs and EMMs ---- */

static kh_err emit_ecm(struct kh_headend *h)
{
	h->st.ecm++;
	return put_section(h, h->cfg.ecm_pid, &h->cc_ecm, h->ecm, h->ecm_len);
}

static kh_err emit_emm(struct kh_headend *h)
{
	const uint8_t *sec;
	size_t n;

	if (h->emm_new < h->emm_len) { /* newly added EMMs first, once, then the cycle resumes */
		if (kh_headend_emm_next(h->emm, h->emm_len, &h->emm_new, &sec, &n) != 1)
			return fail(h, KH_ERR_INTERNAL, "EMM carousel changed");
		h->st.emm++;
		return put_section(h, h->cfg.emm_pid, &h->cc_emm, sec, n);
	}
	if (kh_headend_emm_next(h->emm, h->emm_len, &h->emm_off, &sec, &n) != 1) {
		h->emm_off = 0; /* cycle */
		if (kh_headend_emm_next(h->emm, h->emm_len, &h->emm_off, &sec, &n) != 1)
			return fail(h, KH_ERR_INTERNAL, "EMM file changed");
	}
	h->st.emm++;
	return put_section(h, h->cfg.emm_pid, &h->cc_emm, sec, n);
}

static kh_err new_cw(struct kh_headend *h, uint8_t cw[KH_CAS_CW_MAX])
{
	kh_err r;
	if ((r = kh_random(cw, h->cw_len)) != KH_OK)
		return fail(h, r, "no random control word");
	if (h->cfg.csa_reduce)
		kh_scr_cw_reduce(cw);
	return KH_OK;
}

/*
 * Start crypto period k's ECM: a fresh CW_k in slot k & 1 (the other slot keeps CW_{k-1}, still
 * running), the scrambler's key of that parity, the ECM sealed once and sent now. Packets staged
 * with the old key of that parity are scrambled first.
 */
static kh_err announce(struct kh_headend *h, uint32_t k)
{
	struct kh_ecm e;
	unsigned p = k & 1u;
	kh_err r;

	if ((r = flush(h)) != KH_OK)
		return r;
	if (k == 0 && (r = new_cw(h, h->cw[1])) != KH_OK) /* CW_{-1}: never used, never logged */
		return r;
	if ((r = new_cw(h, h->cw[p])) != KH_OK)
		return r;
	if (h->cw_fn)
		h->cw_fn(h->cw_ctx, k, h->cw[p], h->cw_len);
	if ((r = kh_scr_set_key(h->scr, (enum kh_scr_parity)p, h->cw[p], h->cw_len)) != KH_OK)
		return fail(h, r, "setting the scrambling key failed");
	memset(&e, 0, sizeof e);
	e.h.table_id = p ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
	e.h.key_id = h->cfg.key_id;
	e.h.key_version = h->cfg.key_version;
	e.h.cp = k;
	e.alg = (uint8_t)h->cfg.alg;
	e.cw_len = (uint8_t)h->cw_len;
	memcpy(e.cw_even, h->cw[0], h->cw_len);
	memcpy(e.cw_odd, h->cw[1], h->cw_len);
	e.access = h->cfg.access;
	e.product = h->cfg.product;
	e.event = h->cfg.event;
	e.price = h->cfg.price;
	e.time = h->cfg.time + (uint64_t)k * h->cfg.period_s;
	e.revoked_version = h->cfg.revoked_version;
	e.flags = h->cfg.ecm_flags;
	r = kh_ecm_seal(h->cfg.service_key, &h->cfg.ecm_signer, &e, h->ecm, sizeof h->ecm, &h->ecm_len);
	kh_wipe(&e, sizeof e);
	if (r != KH_OK)
		return fail(h, r, "sealing the ECM of crypto period %lu failed", (unsigned long)k);
	h->announced = k;
	h->next_ecm = h->clock + h->ecm_iv;
	if ((r = emit_ecm(h)) != KH_OK)
		return r;
	h->ecm_mark[p] = h->q_in;
	return KH_OK;
}

/* The start of the service, right after the first PMT: every EMM once, then ECM 0, before any
 * scrambled packet. */
static kh_err start(struct kh_headend *h)
{
	size_t off = 0, n;
	const uint8_t *sec;
	kh_err r;

	h->started = 1;
	h->emm_new = h->emm_len; /* every EMM goes out now */
	while (kh_headend_emm_next(h->emm, h->emm_len, &off, &sec, &n) == 1) {
		h->st.emm++;
		if ((r = put_section(h, h->cfg.emm_pid, &h->cc_emm, sec, n)) != KH_OK)
			return r;
	}
	h->next_emm = h->emm_iv;
	return announce(h, 0);
}

/* After stream time moved: new ECMs lead ahead of their period, repetitions, the EMM cycle. */
static kh_err timers(struct kh_headend *h)
{
	uint64_t due = (h->clock + h->lead) / h->period;
	kh_err r;

	while (h->announced < due)
		if ((r = announce(h, h->announced + 1)) != KH_OK)
			return r;
	if (h->clock >= h->next_ecm) {
		if ((r = emit_ecm(h)) != KH_OK)
			return r;
		h->next_ecm += h->ecm_iv;
		if (h->next_ecm <= h->clock) /* PCRs further apart than the interval: no burst */
			h->next_ecm = h->clock + h->ecm_iv;
	}
	if (h->emm_count && h->clock >= h->next_emm) {
		if ((r = emit_emm(h)) != KH_OK)
			return r;
		h->next_emm += h->emm_iv;
		if (h->next_emm <= h->clock)
			h->next_emm = h->clock + h->emm_iv;
	}
	return KH_OK;
}

static kh_err on_pcr(struct kh_headend *h, const struct kh_ts_pkt *p)
{
	const uint8_t *a = p->af;
	uint64_t base, pcr, diff;
	kh_err r;

	base = (uint64_t)a[1] << 25 | (uint64_t)a[2] << 17 | (uint64_t)a[3] << 9 | (uint64_t)a[4] << 1 | a[5] >> 7;
	pcr = base * 300 + (((uint64_t)a[5] & 1) << 8 | a[6]);
	if (!h->have_t0) {
		h->have_t0 = 1;
		h->last_pcr = pcr;
		return timers(h);
	}
	diff = (pcr + PCR_MOD - h->last_pcr) % PCR_MOD;
	h->last_pcr = pcr;
	if ((a[0] & 0x80) || diff > PCR_JUMP_MAX)
		return KH_OK;
	h->clock += diff;
	if ((r = timers(h)) != KH_OK)
		return r;
	return check_late(h);
}

/*
 * GROW: the PCR packet about to be staged, its PCR made that of its output index at the rate the
 * input had between its first two PCRs (ticks per packet as a fraction, tick_num / tick_den), so
 * the packets inserted do not make the PCR-implied timing run slow. The first PCR is the anchor.
 */
static const uint8_t *restamp(struct kh_headend *h, const uint8_t *pkt)
{
	uint64_t in = h->st.in - 1, out = h->st.out + h->nout, d, q, rem, v, base, ext;
	uint8_t *a;

	if (!h->pcr_seen || (h->pcr_seen == 1 && (in == h->pcr0_in || h->last_pcr == h->pcr0))) {
		h->pcr_seen = 1;
		h->pcr0 = h->last_pcr;
		h->pcr0_in = in;
		h->pcr0_out = out;
		return pkt;
	}
	if (h->pcr_seen == 1) {
		h->pcr_seen = 2;
		h->tick_num = (h->last_pcr + PCR_MOD - h->pcr0) % PCR_MOD;
		h->tick_den = in - h->pcr0_in;
	}
	d = out - h->pcr0_out;
	q = h->tick_num / h->tick_den;
	rem = h->tick_num % h->tick_den;
	v = (h->pcr0 + d * q + (d / h->tick_den) * rem + (d % h->tick_den) * rem / h->tick_den) % PCR_MOD;
	base = v / 300;
	ext = v % 300;
	memcpy(h->stamped, pkt, KH_TS_PACKET_LEN);
	a = h->stamped + 5; /* the adaptation field's flags, then the PCR */
	a[1] = (uint8_t)(base >> 25);
	a[2] = (uint8_t)(base >> 17);
	a[3] = (uint8_t)(base >> 9);
	a[4] = (uint8_t)(base >> 1);
	a[5] = (uint8_t)((base & 1) << 7 | 0x7E | ext >> 8);
	a[6] = (uint8_t)ext;
	h->st.restamped++;
	return h->stamped;
}

/* ---- PSI ---- */

/*
 * The input's CAT: its descriptors stay (another CA system's EMM PID), but a CA descriptor of our
 * CA system, and ours is added; the version moves on from the input's so a receiver reads it anew.
 */
static kh_err on_cat(struct kh_headend *h, const uint8_t *sec, size_t n)
{
	struct kh_ts_cat cat;
	uint8_t loop[KH_TS_PSI_MAX];
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, len;
	struct kh_wr w;
	kh_err r;

	if (kh_ts_cat_parse(sec, n, &cat) != KH_OK || cat.section_number != 0 || cat.last_section_number != 0)
		return KH_OK; /* damaged, or a CAT of several sections: ours alone */
	kh_wr_init(&w, loop, sizeof loop);
	kh_ts_desc_it_init(&it, cat.desc, cat.desc_len);
	while (kh_ts_desc_next(&it, &tag, &body, &len) == 1) {
		struct kh_ts_ca_desc ca;
		if (tag == KH_TS_DESC_CA && kh_ts_ca_desc_parse(body, len, &ca) == KH_OK &&
		    ca.ca_system_id == h->cfg.ca_system_id)
			continue;
		kh_wr_u8(&w, tag);
		kh_wr_u8(&w, len);
		kh_wr_bytes(&w, body, len);
	}
	r = kh_ts_ca_desc_put(&w, h->cfg.ca_system_id, h->cfg.emm_pid, NULL, 0);
	if (r != KH_OK || w.err != KH_OK)
		return fail(h, KH_ERR_TOO_LARGE, "the CAT has no room for our CA descriptor");
	cat.desc = loop;
	cat.desc_len = w.len;
	cat.version = (uint8_t)((cat.version + 1) & 31);
	if ((r = kh_ts_cat_build(&cat, h->cat, sizeof h->cat, &h->cat_len)) != KH_OK)
		return fail(h, r, "the CAT with our CA descriptor does not fit a section");
	return KH_OK;
}

static int collides(const struct kh_headend *h, uint16_t pid)
{
	return pid == h->cfg.ecm_pid || pid == h->cfg.emm_pid;
}

static kh_err on_pat(struct kh_headend *h, const uint8_t *sec, size_t n)
{
	const struct kh_ts_pat_prog *chosen = NULL;

	if (kh_ts_pat_parse(sec, n, &h->pat) != KH_OK)
		return KH_OK; /* a damaged repetition: the next one will do */
	for (size_t i = 0; i < h->pat.n; i++) {
		const struct kh_ts_pat_prog *pp = &h->pat.prog[i];
		if (collides(h, pp->pid))
			return fail(h, KH_ERR_EXISTS, "PID 0x%04X (ECM or EMM PID) is used in the PAT", pp->pid);
		if (!chosen && pp->program_number != 0 &&
		    (h->cfg.program == 0 || pp->program_number == h->cfg.program))
			chosen = pp;
	}
	if (!chosen) {
		if (h->cfg.program)
			return fail(h, KH_ERR_NOTFOUND, "program %u is not in the PAT", h->cfg.program);
		return fail(h, KH_ERR_NOTFOUND, "the PAT lists no program");
	}
	if (chosen->pid < 0x0010 || chosen->pid == KH_TS_PID_NULL)
		return fail(h, KH_ERR_FORMAT, "the PAT puts the PMT on reserved PID 0x%04X", chosen->pid);
	if (!h->have_pat || chosen->pid != h->pmt_pid) {
		kh_err r = kh_ts_asm_init(&h->pmt_asm, chosen->pid, KH_TS_PSI_MAX);
		if (r != KH_OK)
			return fail(h, r, "PMT assembler");
		h->pmt_pid = chosen->pid;
	}
	h->program = chosen->program_number;
	h->have_pat = 1;
	return KH_OK;
}

static kh_err on_pmt(struct kh_headend *h, const uint8_t *sec, size_t n)
{
	struct kh_ts_pmt *m = &h->pmt;
	uint8_t loop[KH_TS_PSI_MAX];
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, len;
	struct kh_wr w;
	kh_err r;

	if (kh_ts_pmt_parse(sec, n, m) != KH_OK || m->program_number != h->program)
		return KH_OK; /* damaged, or another program's PMT sharing the PID */
	if (collides(h, m->pcr_pid) && m->pcr_pid != KH_TS_PID_NULL)
		return fail(h, KH_ERR_EXISTS, "PID 0x%04X (ECM or EMM PID) is the PCR PID of the PMT", m->pcr_pid);
	for (size_t i = 0; i < m->n; i++)
		if (collides(h, m->es[i].pid))
			return fail(h, KH_ERR_EXISTS, "PID 0x%04X (ECM or EMM PID) is a component of the PMT",
				    m->es[i].pid);
	memset(h->comp, 0, sizeof h->comp);
	for (size_t i = 0; i < m->n; i++)
		h->comp[m->es[i].pid >> 3] |= (uint8_t)(1u << (m->es[i].pid & 7));
	h->pcr_pid = m->pcr_pid;

	/* program_info: the input's descriptors but its CA signalling, then ours */
	kh_wr_init(&w, loop, sizeof loop);
	kh_ts_desc_it_init(&it, m->desc, m->desc_len);
	while (kh_ts_desc_next(&it, &tag, &body, &len) == 1) {
		struct kh_ts_ca_desc ca;
		if (tag == KH_TS_DESC_SCRAMBLING)
			continue;
		if (tag == KH_TS_DESC_CA && kh_ts_ca_desc_parse(body, len, &ca) == KH_OK &&
		    ca.ca_system_id == h->cfg.ca_system_id)
			continue;
		kh_wr_u8(&w, tag);
		kh_wr_u8(&w, len);
		kh_wr_bytes(&w, body, len);
	}
	r = kh_ts_ca_desc_put(&w, h->cfg.ca_system_id, h->cfg.ecm_pid, NULL, 0);
	if (r == KH_OK && h->cfg.alg == KH_SCR_CISSA)
		r = kh_ts_scrambling_desc_put(&w, KH_TS_SCRAMBLING_CISSA1);
	else if (r == KH_OK && h->cfg.alg == KH_SCR_IDSA)
		r = kh_ts_scrambling_desc_put(&w, KH_TS_SCRAMBLING_IDSA);
	if (r != KH_OK || w.err != KH_OK)
		return fail(h, KH_ERR_TOO_LARGE, "the PMT has no room for the CA descriptors");
	m->desc = loop;
	m->desc_len = w.len;
	m->version = (uint8_t)((m->version + 1) & 31);
	if ((r = kh_ts_pmt_build(m, h->pmt_out, sizeof h->pmt_out, &h->pmt_len)) != KH_OK)
		return fail(h, r, "the PMT with CA descriptors does not fit a section");
	h->have_pmt = 1;
	/* the CAT goes out with every PMT, so a decoder tuning in finds both together */
	h->st.psi += 2;
	if ((r = put_section(h, KH_TS_PID_CAT, &h->cc_cat, h->cat, h->cat_len)) != KH_OK)
		return r;
	if ((r = put_section(h, h->pmt_pid, &h->cc_pmt, h->pmt_out, h->pmt_len)) != KH_OK)
		return r;
	/* The first PMT starts the service: a decoder now knows the EMM PID (from the CAT just sent)
	 * and the ECM PID, so the EMMs and ECM 0 that follow reach it before any scrambled packet. */
	return h->started ? KH_OK : start(h);
}

/* Feed one packet to an assembler and handle every section it completes. */
static kh_err assemble(struct kh_headend *h, struct kh_ts_asm *a, const uint8_t *pkt,
		       kh_err (*fn)(struct kh_headend *, const uint8_t *, size_t))
{
	size_t n;
	int got;
	kh_err r;

	if (kh_ts_asm_push(a, pkt, KH_TS_PACKET_LEN) != KH_OK)
		return KH_OK; /* refused packet (TEI, scrambled PSI): the assembler has reset */
	while ((got = kh_ts_asm_pop(a, h->sec, sizeof h->sec, &n)) != 0) {
		if (got < 0)
			continue; /* a section dropped: look for the next */
		if (kh_ts_section_check(h->sec, n) != KH_OK)
			continue;
		if ((r = fn(h, h->sec, n)) != KH_OK)
			return r;
	}
	return KH_OK;
}

/* ---- packets ---- */

/* A packet of the input that does not go out as it is: INSERT drops it, REPLACE and GROW put one
 * of ours or a null packet in its place. */
static kh_err drop(struct kh_headend *h, const uint8_t *pkt)
{
	return h->cfg.nulls == KH_HEADEND_NULL_INSERT ? KH_OK : hole(h, pkt, 0);
}

/*
 * REPLACE and GROW: a component packet of crypto period k is about to be scrambled; its ECM should
 * be out. GROW inserts it if it is not; REPLACE scrambles the programme's first packets (period
 * 0, ECM 0 still waiting for a null packet) all the same: a receiver starts with ECM 0, as one
 * tuning in mid-stream would, and no packet of the programme ever goes out in clear. A later
 * period's packet before its ECM stops the run. KH_OK, or an error.
 */
static kh_err ecm_out(struct kh_headend *h, unsigned k)
{
	if (h->cfg.nulls == KH_HEADEND_NULL_INSERT || h->q_out >= h->ecm_mark[k & 1u])
		return KH_OK;
	if (h->cfg.nulls == KH_HEADEND_NULL_REPLACE && k == 0) {
		h->st.before_ecm++;
		return KH_OK;
	}
	return late(h, ": a crypto period began before its ECM was out");
}

static kh_err pass(struct kh_headend *h, const uint8_t *pkt, int is_pcr)
{
	if (is_pcr && h->cfg.nulls == KH_HEADEND_NULL_GROW)
		pkt = restamp(h, pkt);
	return put_pkt(h, pkt, -1);
}

static kh_err one(struct kh_headend *h, const uint8_t *pkt)
{
	struct kh_ts_pkt p;
	unsigned k;
	int is_pcr;
	kh_err r;

	h->st.in++;
	if (kh_ts_parse(pkt, KH_TS_PACKET_LEN, &p) != KH_OK) {
		h->st.damaged++; /* a reserved adaptation_field_control, an impossible length: dropped */
		return drop(h, pkt);
	}
	if (p.pid == KH_TS_PID_NULL) {
		h->st.nulls_in++;
		if (h->cfg.nulls != KH_HEADEND_NULL_INSERT)
			return hole(h, pkt, 1);
	}
	if (p.pid == KH_TS_PID_PAT) {
		if ((r = assemble(h, &h->pat_asm, pkt, on_pat)) != KH_OK)
			return r;
		return put_pkt(h, pkt, -1);
	}
	if (p.pid == KH_TS_PID_CAT) {
		h->st.dropped++; /* merged into ours, which goes out with every PMT */
		if ((r = assemble(h, &h->cat_asm, pkt, on_cat)) != KH_OK)
			return r;
		return drop(h, pkt);
	}
	if (collides(h, p.pid)) {
		h->st.foreign++; /* a PID no table named: ours in the output */
		return drop(h, pkt);
	}
	if (h->have_pat && p.pid == h->pmt_pid) {
		h->st.dropped++; /* replaced by the rewritten PMT */
		if ((r = assemble(h, &h->pmt_asm, pkt, on_pmt)) != KH_OK)
			return r;
		return drop(h, pkt);
	}
	if (!h->have_pmt) {
		h->st.dropped++; /* which PIDs to scramble is not known yet */
		return drop(h, pkt);
	}
	is_pcr = p.pid == h->pcr_pid && p.af_len >= 7 && (p.af[0] & 0x10);
	if (is_pcr && (r = on_pcr(h, &p)) != KH_OK)
		return r;
	if (!(h->comp[p.pid >> 3] & (1u << (p.pid & 7))) || !p.payload_len)
		return pass(h, pkt, is_pcr);
	if (p.scrambling != KH_TS_SC_CLEAR) {
		/* One such packet is damage (a flipped bit): it cannot be scrambled again, and passed on
		 * as it is a decoder would descramble it with our key into garbage, so it is dropped.
		 * A run of them is a programme scrambled already: refused. */
		h->st.scrambled_in++;
		if (++h->scrambled_run >= KH_HEADEND_SCRAMBLED_RUN)
			return fail(h, KH_ERR_FORMAT,
				    "the programme is scrambled already (%u component packets in a row arrive "
				    "scrambled, the last on PID 0x%04X): give a clear programme",
				    (unsigned)h->scrambled_run, p.pid);
		return KH_OK;
	}
	h->scrambled_run = 0;
	k = (unsigned)(h->clock / h->period);
	h->st.period = k;
	if ((r = ecm_out(h, k)) != KH_OK)
		return r;
	h->st.scrambled++;
	if (is_pcr && h->cfg.nulls == KH_HEADEND_NULL_GROW)
		pkt = restamp(h, pkt);
	return put_pkt(h, pkt, (int)(k & 1u));
}

kh_err kh_headend_feed(struct kh_headend *h, const uint8_t *pkts, size_t n)
{
	kh_err r;

	if (h->err != KH_OK)
		return h->err;
	for (size_t i = 0; i < n; i++)
		if ((r = one(h, pkts + i * KH_TS_PACKET_LEN)) != KH_OK)
			return fail(h, r, "processing failed");
	return KH_OK;
}

kh_err kh_headend_finish(struct kh_headend *h)
{
	if (h->err != KH_OK)
		return h->err;
	if (!h->have_pmt)
		return fail(h, KH_ERR_NOTFOUND, h->have_pat ? "no PMT of program %u in the input"
							    : "no PAT in the input (program %u)",
			    h->have_pat ? h->program : h->cfg.program);
	/* REPLACE and GROW: packets of ours still waiting when the stream ends are left out, as a
	 * multiplex cut there would: nothing after them needs them */
	return flush(h);
}
