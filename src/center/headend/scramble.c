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

#define OUT_CAP 2048 /* packets staged before the scrambler runs and the sink is called ... */
#define SCR_BATCH 256 /* ... or once a service has this many to scramble: CSA2's bitslice batches fill */
#define PCR_HZ 27000000ull
#define PCR_MOD (((uint64_t)1 << 33) * 300)
/* A PCR step larger than this (or backwards, or flagged as a discontinuity) does not advance
 * stream time: it is a splice or a loop of the source, not a minute of programme. */
#define PCR_JUMP_MAX (60 * PCR_HZ)
#define PCR_GAP_MAX (PCR_HZ / 10) /* ISO/IEC 13818-1: PCRs at most 100 ms apart */
#define LA_MAX 8192 /* packets waiting for the next PCR: 100 ms of a 120 Mbit/s mux */
#define QCAP 512    /* REPLACE/GROW: packets of ours waiting for a null packet to replace */
#define PCR_PIDS 32 /* GROW: PIDs whose PCRs are restamped */
#define NO_SVC 0xFF

/* One service being scrambled. */
struct svc {
	struct kh_headend_service c; /* its settings (components: never 0 here) */
	struct kh_scr *scr;
	size_t cw_len;

	/* PSI */
	int have_pmt, started;
	uint16_t program, pmt_pid, pcr_pid;
	uint8_t cc_pmt, cc_ecm;
	unsigned ncomp;
	size_t pmt_len, in_len;
	uint8_t pmt_out[KH_TS_PSI_MAX];
	uint8_t in_pmt[KH_TS_PSI_MAX]; /* the input's section pmt_out was made from */
	struct kh_ts_asm pmt_asm;

	/* ECMs made here: ECM k = CW_k and CW_{k-1}, out lead before period k */
	uint32_t announced;           /* the newest ECM's crypto period */
	uint8_t cw[2][KH_CAS_CW_MAX]; /* by parity: CW_k in slot k & 1 */

	/* ECMs from outside: ECM(c) = CW_c and CW_{c+1} */
	uint32_t cur;       /* the CP scrambling now */
	uint32_t known;     /* ECM(known - 1) is out: receivers can have CW_known */
	uint32_t drawn;     /* the highest CP with a CW drawn */
	uint64_t pidx;      /* period index (stream time / period) of the last period start seen */
	uint64_t cur_start; /* stream time cur began */
	uint64_t retry_at;  /* after a failed ask, not before this */
	uint8_t xcw[4][KH_CAS_CW_MAX]; /* by CP & 3 */

	uint64_t next_ecm;  /* the ECM on air is repeated then */
	size_t ecm_len;     /* 0: none on air yet */
	uint8_t ecm[KH_TS_PRIVATE_MAX];
	uint64_t ecm_mark[2]; /* REPLACE/GROW, by parity: q_in once the ECM giving that parity's CW was queued */

	/* staging: this service's packets to scramble, by index into the engine's out */
	size_t nscr;
	int parity;
	uint16_t idx[OUT_CAP];

	unsigned scrambled_run; /* component packets in a row that arrived scrambled */
	struct kh_headend_svc_stats st;
};

/* GROW: one PID's PCRs, restamped on the rate measured between its first two */
struct pcr_line {
	uint16_t pid;
	int seen;
	uint64_t last, pcr0, pcr0_in, pcr0_out, tick_num, tick_den;
};

struct kh_headend {
	struct kh_headend_cfg cfg; /* cfg.emm points at our own copy; cfg.svc's keys wiped (in svc) */
	unsigned nsvc;
	struct svc *svc;
	uint8_t pid_svc[KH_TS_PID_MAX + 1]; /* component PID -> service index, NO_SVC */
	uint8_t *emm;
	size_t emm_len, emm_count, emm_off;
	size_t emm_new; /* offset of the first EMM added while running and not yet sent (emm_len: none) */
	kh_headend_sink sink;
	void *sink_ctx;
	kh_headend_cw_fn cw_fn;
	void *cw_ctx;
	kh_headend_ecm_fn ecm_fn; /* outside ECMs (NULL: made here) */
	void *ecm_ctx;
	int64_t delay; /* ticks: the ECMG's delay_start */
	kh_err err;
	char why[400];
	int started; /* the first PMT of a service is out */
	unsigned pmts; /* services whose PMT has been seen */

	/* PSI */
	int have_pat;
	uint8_t cc_cat, cc_emm;
	size_t cat_len;
	uint8_t cat[KH_TS_PSI_MAX];

	/* stream time, 27 MHz ticks since the first PCR of the first service. Packets wait in la
	 * for the PCR that ends their span, so each one's time is interpolated between the PCRs
	 * around it (la full, or the end: extrapolated at the last span's rate) */
	int have_t0;
	uint64_t last_pcr, pcr_clock, span, span_pkts;
	uint64_t clock;
	uint8_t *la;      /* LA_MAX packets */
	size_t la_n;      /* waiting in la */
	uint64_t la_done; /* packets of the current span handled already (la was full) */
	uint64_t period, lead, ecm_iv, emm_iv;
	uint64_t next_emm;
	uint64_t k_now, k_lead; /* clock / period, (clock + lead) / period: kept without dividing */

	/* REPLACE and GROW: our packets wait here, in order, for a null (or dropped) input packet */
	size_t q_head, q_n;
	uint64_t q_in, q_out;  /* packets queued and taken, ever */
	uint64_t q_t[QCAP];    /* stream time each waiting packet was queued */
	uint8_t q[QCAP * KH_TS_PACKET_LEN];
	uint64_t holes;        /* null and dropped input packets: the bandwidth we may take */

	/* GROW */
	size_t npcr;
	struct pcr_line pcr[PCR_PIDS];
	uint8_t stamped[KH_TS_PACKET_LEN];

	/* output staging: packets in order; each service lists those it scrambles */
	size_t nout;
	uint8_t out[OUT_CAP * KH_TS_PACKET_LEN];
	uint8_t batch[OUT_CAP * KH_TS_PACKET_LEN];

	struct kh_headend_stats st;
	struct kh_ts_asm pat_asm, cat_asm;
	struct kh_ts_pat pat;
	struct kh_ts_pmt pmt;
	uint8_t sec[KH_TS_PRIVATE_MAX];
	uint8_t xecm[KH_TS_PRIVATE_MAX]; /* an outside ECM as it arrives */
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
	st->period = h->svc[0].st.period;
	st->stream_ms = h->clock / (PCR_HZ / 1000);
}

kh_err kh_headend_svc_stats(const struct kh_headend *h, unsigned i, struct kh_headend_svc_stats *st)
{
	if (!h || i >= h->nsvc || !st)
		return KH_ERR_INVAL;
	*st = h->svc[i].st;
	return KH_OK;
}

void kh_headend_set_cw_fn(struct kh_headend *h, kh_headend_cw_fn fn, void *ctx)
{
	h->cw_fn = fn;
	h->cw_ctx = ctx;
}

kh_err kh_headend_set_ecm_fn(struct kh_headend *h, kh_headend_ecm_fn fn, void *ctx, int delay_ms)
{
	if (!h || delay_ms < -30000 || delay_ms > 30000 || h->started)
		return KH_ERR_INVAL;
	h->ecm_fn = fn;
	h->ecm_ctx = ctx;
	h->delay = (int64_t)delay_ms * (int64_t)(PCR_HZ / 1000);
	return KH_OK;
}

void kh_headend_free(struct kh_headend *h)
{
	if (!h)
		return;
	if (h->svc) {
		for (unsigned i = 0; i < h->nsvc; i++)
			kh_scr_free(h->svc[i].scr);
		kh_wipe(h->svc, h->nsvc * sizeof *h->svc); /* service keys, CWs */
		free(h->svc);
	}
	if (h->emm) {
		kh_wipe(h->emm, h->emm_len);
		free(h->emm);
	}
	if (h->la) {
		kh_wipe(h->la, LA_MAX * KH_TS_PACKET_LEN); /* the clear programme */
		free(h->la);
	}
	kh_wipe(h, sizeof *h); /* the clear packets staged */
	free(h);
}

static int pid_ok(uint16_t pid)
{
	return pid >= 0x0010 && pid <= 0x1FFE;
}

static int svc_ok(const struct kh_headend_cfg *cfg, unsigned i)
{
	const struct kh_headend_service *v = &cfg->svc[i];

	if (kh_scr_keylen(v->alg) == 0 || (v->csa_reduce && v->alg != KH_SCR_CSA2) ||
	    (v->access != KH_ECM_PRODUCT && v->access != KH_ECM_EVENT) || !pid_ok(v->ecm_pid) ||
	    v->ecm_pid == cfg->emm_pid || (v->components & ~KH_HEADEND_C_ALL) || (v->program == 0 && cfg->nsvc > 1))
		return 0;
	for (unsigned j = 0; j < i; j++)
		if (cfg->svc[j].ecm_pid == v->ecm_pid || cfg->svc[j].program == v->program)
			return 0;
	return 1;
}

static int cfg_ok(const struct kh_headend_cfg *cfg)
{
	if (cfg->nsvc < 1 || cfg->nsvc > KH_HEADEND_SERVICES_MAX || cfg->period_s < KH_HEADEND_PERIOD_MIN ||
	    cfg->period_s > KH_HEADEND_PERIOD_MAX || cfg->lead_ms >= cfg->period_s * 1000u ||
	    cfg->ecm_interval_ms < 10 || cfg->emm_interval_ms < 10 || cfg->ecm_interval_ms > 60000 ||
	    cfg->emm_interval_ms > 60000 || !pid_ok(cfg->emm_pid) || (cfg->emm_len && !cfg->emm) ||
	    (cfg->nulls != KH_HEADEND_NULL_INSERT && cfg->nulls != KH_HEADEND_NULL_REPLACE &&
	     cfg->nulls != KH_HEADEND_NULL_GROW))
		return 0;
	for (unsigned i = 0; i < cfg->nsvc; i++)
		if (!svc_ok(cfg, i))
			return 0;
	return 1;
}

static kh_err svc_init(struct kh_headend *h, const struct kh_headend_cfg *cfg, unsigned i)
{
	struct svc *s = &h->svc[i];
	kh_err r;

	s->c = cfg->svc[i];
	if (!s->c.components)
		s->c.components = KH_HEADEND_C_DEFAULT;
	s->st.program = s->c.program;
	s->st.ecm_pid = s->c.ecm_pid;
	s->cw_len = kh_scr_keylen(s->c.alg);
	if ((r = kh_scr_new(s->c.alg, s->c.csa_reduce ? KH_SCR_F_CSA_REDUCE : 0, &s->scr)) != KH_OK)
		return r;
	return KH_OK;
}

kh_err kh_headend_new(const struct kh_headend_cfg *cfg, kh_headend_sink sink, void *sink_ctx,
		      struct kh_headend **out)
{
	struct kh_headend *h = NULL;
	size_t off = 0, n;
	const uint8_t *sec;
	int more;
	kh_err r;

	if (!cfg || !sink || !out || !cfg_ok(cfg))
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
	kh_wipe(h->cfg.svc, sizeof h->cfg.svc); /* the keys live in h->svc alone */
	h->sink = sink;
	h->sink_ctx = sink_ctx;
	memset(h->pid_svc, NO_SVC, sizeof h->pid_svc);
	h->nsvc = cfg->nsvc;
	if (!(h->svc = calloc(cfg->nsvc, sizeof *h->svc)) || !(h->la = malloc(LA_MAX * KH_TS_PACKET_LEN))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	for (unsigned i = 0; i < cfg->nsvc; i++)
		if ((r = svc_init(h, cfg, i)) != KH_OK)
			goto out;
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
	h->period = (uint64_t)cfg->period_s * PCR_HZ;
	h->lead = (uint64_t)cfg->lead_ms * (PCR_HZ / 1000);
	h->ecm_iv = (uint64_t)cfg->ecm_interval_ms * (PCR_HZ / 1000);
	h->emm_iv = (uint64_t)cfg->emm_interval_ms * (PCR_HZ / 1000);
	/* our CAT, until the input brings one to merge ours into */
	if ((r = kh_headend_cat_merge(NULL, 0, cfg->ca_system_id, cfg->emm_pid, h->cat, sizeof h->cat, &h->cat_len)) !=
	    KH_OK)
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

	for (unsigned k = 0; k < h->nsvc; k++) {
		struct svc *s = &h->svc[k];
		if (!s->nscr)
			continue;
		for (size_t i = 0; i < s->nscr; i++)
			memcpy(h->batch + i * KH_TS_PACKET_LEN, h->out + (size_t)s->idx[i] * KH_TS_PACKET_LEN,
			       KH_TS_PACKET_LEN);
		r = kh_scr_scramble(s->scr, h->batch, s->nscr, (enum kh_scr_parity)s->parity);
		if (r != KH_OK)
			return fail(h, r, "scrambling failed");
		for (size_t i = 0; i < s->nscr; i++)
			memcpy(h->out + (size_t)s->idx[i] * KH_TS_PACKET_LEN, h->batch + i * KH_TS_PACKET_LEN,
			       KH_TS_PACKET_LEN);
		s->nscr = 0;
	}
	if (h->nout) {
		if ((r = h->sink(h->sink_ctx, h->out, h->nout)) != KH_OK)
			return fail(h, r, "writing the output failed");
		h->st.out += h->nout;
		h->nout = 0;
	}
	return KH_OK;
}

/* Stage one packet; s NULL: as it is, else scrambled by s with that parity. */
static kh_err put_pkt(struct kh_headend *h, const uint8_t *pkt, struct svc *s, int parity)
{
	kh_err r;

	if (h->nout == OUT_CAP || (s && s->nscr && (parity != s->parity || s->nscr == SCR_BATCH)))
		if ((r = flush(h)) != KH_OK)
			return r;
	memcpy(h->out + h->nout * KH_TS_PACKET_LEN, pkt, KH_TS_PACKET_LEN);
	if (s) {
		s->idx[s->nscr++] = (uint16_t)h->nout;
		s->parity = parity;
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
		if ((r = put_pkt(h, q_at(h, 0), NULL, 0)) != KH_OK)
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
		r = put_pkt(h, q_at(h, 0), NULL, 0);
		h->q_head = (h->q_head + 1) % QCAP;
		h->q_n--;
		h->q_out++;
		h->st.replaced++;
		return r;
	}
	if (is_null)
		return put_pkt(h, pkt, NULL, 0);
	memset(null_pkt, 0xFF, sizeof null_pkt);
	null_pkt[0] = 0x47;
	null_pkt[1] = 0x1F;
	null_pkt[3] = 0x10;
	return put_pkt(h, null_pkt, NULL, 0);
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
			r = put_pkt(h, pk + i, NULL, 0);
		else
			r = enqueue(h, pk + i);
		if (r != KH_OK)
			return r;
	}
	return KH_OK;
}

/* ---- ECMs and EMMs ---- */

static kh_err emit_ecm(struct kh_headend *h, struct svc *s)
{
	h->st.ecm++;
	s->st.ecm++;
	return put_section(h, s->c.ecm_pid, &s->cc_ecm, s->ecm, s->ecm_len);
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

static kh_err new_cw(struct kh_headend *h, const struct svc *s, uint32_t cp, uint8_t cw[KH_CAS_CW_MAX], int log)
{
	kh_err r;
	if ((r = kh_random(cw, s->cw_len)) != KH_OK)
		return fail(h, r, "no random control word");
	if (s->c.csa_reduce)
		kh_scr_cw_reduce(cw);
	if (log && h->cw_fn)
		h->cw_fn(h->cw_ctx, (unsigned)(s - h->svc), cp, cw, s->cw_len);
	return KH_OK;
}

/*
 * Start crypto period k's ECM (made here): a fresh CW_k in slot k & 1 (the other slot keeps
 * CW_{k-1}, still running), the scrambler's key of that parity, the ECM sealed once and sent
 * now. Packets staged with the old key of that parity are scrambled first.
 */
static kh_err announce(struct kh_headend *h, struct svc *s, uint32_t k)
{
	struct kh_ecm e;
	unsigned p = k & 1u;
	kh_err r;

	if ((r = flush(h)) != KH_OK)
		return r;
	if (k == 0 && (r = new_cw(h, s, 0, s->cw[1], 0)) != KH_OK) /* CW_{-1}: never used, never logged */
		return r;
	if ((r = new_cw(h, s, k, s->cw[p], 1)) != KH_OK)
		return r;
	if ((r = kh_scr_set_key(s->scr, (enum kh_scr_parity)p, s->cw[p], s->cw_len)) != KH_OK)
		return fail(h, r, "setting the scrambling key failed");
	memset(&e, 0, sizeof e);
	e.h.table_id = p ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
	e.h.key_id = s->c.key_id;
	e.h.key_version = s->c.key_version;
	e.h.cp = k;
	e.alg = (uint8_t)s->c.alg;
	e.cw_len = (uint8_t)s->cw_len;
	memcpy(e.cw_even, s->cw[0], s->cw_len);
	memcpy(e.cw_odd, s->cw[1], s->cw_len);
	e.access = s->c.access;
	e.product = s->c.product;
	e.event = s->c.event;
	e.price = s->c.price;
	e.time = h->cfg.time + (uint64_t)k * h->cfg.period_s;
	e.revoked_version = h->cfg.revoked_version;
	e.flags = h->cfg.ecm_flags;
	r = kh_ecm_seal(s->c.service_key, &h->cfg.ecm_signer, &e, s->ecm, sizeof s->ecm, &s->ecm_len);
	kh_wipe(&e, sizeof e);
	if (r != KH_OK)
		return fail(h, r, "sealing the ECM of crypto period %lu failed", (unsigned long)k);
	s->announced = k;
	s->next_ecm = h->clock + h->ecm_iv;
	if ((r = emit_ecm(h, s)) != KH_OK)
		return r;
	s->ecm_mark[p] = h->q_in;
	return KH_OK;
}

/*
 * Outside ECMs: ask for ECM(c), c = s->known, which carries CW_c and CW_{c+1} (drawn now, the
 * first time). Had: it goes on air at once, receivers can have CW_{c+1}. Not had: counted, asked
 * again one ECM interval later; the ECM on air stays.
 */
static kh_err ask(struct kh_headend *h, struct svc *s)
{
	uint32_t c = s->known;
	size_t len = 0;
	kh_err r;

	if (s->drawn < c + 1) {
		if ((r = new_cw(h, s, c + 1, s->xcw[(c + 1) & 3], 1)) != KH_OK)
			return r;
		s->drawn = c + 1;
	}
	r = h->ecm_fn(h->ecm_ctx, (unsigned)(s - h->svc), c, s->xcw[c & 3], s->xcw[(c + 1) & 3], s->cw_len, h->xecm,
		      sizeof h->xecm, &len);
	if (r != KH_OK || len < 3 || len > sizeof h->xecm || kh_ts_section_check(h->xecm, len) != KH_OK) {
		h->st.ecm_late++; /* the ECM on air (if any) stays */
		s->retry_at = h->clock + h->ecm_iv;
		return KH_OK;
	}
	memcpy(s->ecm, h->xecm, len);
	s->ecm_len = len;
	s->known = c + 1;
	s->next_ecm = h->clock + h->ecm_iv;
	if ((r = emit_ecm(h, s)) != KH_OK)
		return r;
	s->ecm_mark[(c + 1) & 1u] = h->q_in;
	if (c == 0)
		s->ecm_mark[0] = h->q_in;
	return KH_OK;
}

/* Outside ECMs, the start of the service: CW_0 in the scrambler, ECM(0) asked for at once. */
static kh_err ext_start(struct kh_headend *h, struct svc *s)
{
	kh_err r;

	if ((r = new_cw(h, s, 0, s->xcw[0], 1)) != KH_OK)
		return r;
	if ((r = kh_scr_set_key(s->scr, KH_SCR_EVEN, s->xcw[0], s->cw_len)) != KH_OK)
		return fail(h, r, "setting the scrambling key failed");
	s->pidx = h->clock / h->period;
	s->cur_start = h->clock;
	return ask(h, s);
}

/*
 * Outside ECMs, as time goes: at each period start the next CP begins if receivers can have its
 * CW (else the current one goes on: degraded, counted); ECM(known) is asked for at the start of
 * its CP plus the ECMG's delay_start (a negative delay: before the CP that needs it begins).
 */
static kh_err ext_timers(struct kh_headend *h, struct svc *s)
{
	uint64_t pidx = h->k_now, due;
	kh_err r;

	while (s->pidx < pidx) {
		s->pidx++;
		if (s->known > s->cur) {
			if ((r = flush(h)) != KH_OK)
				return r;
			s->cur++;
			s->cur_start = s->pidx * h->period;
			if ((r = kh_scr_set_key(s->scr, (enum kh_scr_parity)(s->cur & 1u), s->xcw[s->cur & 3],
						s->cw_len)) != KH_OK)
				return fail(h, r, "setting the scrambling key failed");
		} else {
			h->st.degraded++;
			s->st.degraded++;
		}
	}
	if (s->known == s->cur)
		due = s->cur_start + (h->delay > 0 ? (uint64_t)h->delay : 0);
	else if (h->delay < 0 && (s->pidx + 1) * h->period >= (uint64_t)-h->delay)
		due = (s->pidx + 1) * h->period - (uint64_t)-h->delay;
	else
		return KH_OK;
	if (due < s->retry_at)
		due = s->retry_at;
	return h->clock >= due ? ask(h, s) : KH_OK;
}

/* The start of the service, right after its first PMT: ECM 0 before any scrambled packet (made
 * here, or asked for). */
static kh_err svc_start(struct kh_headend *h, struct svc *s)
{
	s->started = 1;
	return h->ecm_fn ? ext_start(h, s) : announce(h, s, 0);
}

/* The start of the output, right after the first PMT: every EMM once. */
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
	h->next_emm = h->clock + h->emm_iv;
	return KH_OK;
}

/* Each packet's stream time moved: new ECMs ahead of their period, repetitions, the EMM cycle. */
static kh_err timers(struct kh_headend *h)
{
	kh_err r;

	while (h->clock >= (h->k_now + 1) * h->period)
		h->k_now++;
	while (h->clock + h->lead >= (h->k_lead + 1) * h->period)
		h->k_lead++;
	for (unsigned i = 0; i < h->nsvc; i++) {
		struct svc *s = &h->svc[i];
		if (!s->started)
			continue;
		if (h->ecm_fn) {
			if ((r = ext_timers(h, s)) != KH_OK)
				return r;
		} else {
			uint64_t due = h->k_lead;
			while (s->announced < due)
				if ((r = announce(h, s, s->announced + 1)) != KH_OK)
					return r;
		}
		if (s->ecm_len && h->clock >= s->next_ecm) {
			if ((r = emit_ecm(h, s)) != KH_OK)
				return r;
			s->next_ecm += h->ecm_iv;
			if (s->next_ecm <= h->clock) /* time jumped further than the interval: no burst */
				s->next_ecm = h->clock + h->ecm_iv;
		}
	}
	if (h->started && h->emm_count && h->clock >= h->next_emm) {
		if ((r = emit_emm(h)) != KH_OK)
			return r;
		h->next_emm += h->emm_iv;
		if (h->next_emm <= h->clock)
			h->next_emm = h->clock + h->emm_iv;
	}
	return check_late(h);
}

static uint64_t pcr_of(const uint8_t *a)
{
	uint64_t base = (uint64_t)a[1] << 25 | (uint64_t)a[2] << 17 | (uint64_t)a[3] << 9 | (uint64_t)a[4] << 1 |
			a[5] >> 7;
	return base * 300 + (((uint64_t)a[5] & 1) << 8 | a[6]);
}

/*
 * GROW: a packet carrying a PCR about to be staged, its PCR made that of its output index at the
 * rate its PID had between its first two PCRs (ticks per packet as a fraction, tick_num /
 * tick_den), so the packets inserted do not make the PCR-implied timing run slow. The first PCR
 * of each PID is its anchor. A PID beyond PCR_PIDS keeps its PCRs.
 */
static const uint8_t *restamp(struct kh_headend *h, const uint8_t *pkt, const struct kh_ts_pkt *p)
{
	uint64_t in = h->st.in - 1, out = h->st.out + h->nout, pcr = pcr_of(p->af), d, q, rem, v, base, ext;
	struct pcr_line *l = NULL;
	uint8_t *a;

	for (size_t i = 0; i < h->npcr && !l; i++)
		if (h->pcr[i].pid == p->pid)
			l = &h->pcr[i];
	if (!l) {
		if (h->npcr == PCR_PIDS)
			return pkt;
		l = &h->pcr[h->npcr++];
		l->pid = p->pid;
	}
	if (!l->seen || (l->seen == 1 && (in == l->pcr0_in || pcr == l->pcr0))) {
		l->seen = 1;
		l->pcr0 = pcr;
		l->pcr0_in = in;
		l->pcr0_out = out;
		return pkt;
	}
	if (l->seen == 1) {
		l->seen = 2;
		l->tick_num = (pcr + PCR_MOD - l->pcr0) % PCR_MOD;
		l->tick_den = in - l->pcr0_in;
	}
	d = out - l->pcr0_out;
	q = l->tick_num / l->tick_den;
	rem = l->tick_num % l->tick_den;
	v = (l->pcr0 + d * q + (d / l->tick_den) * rem + (d % l->tick_den) * rem / l->tick_den) % PCR_MOD;
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
	kh_err r = kh_headend_cat_merge(sec, n, h->cfg.ca_system_id, h->cfg.emm_pid, h->cat, sizeof h->cat, &h->cat_len);

	if (r == KH_ERR_FORMAT)
		return KH_OK; /* damaged, or a CAT of several sections: ours stays */
	if (r != KH_OK)
		return fail(h, r, "the CAT has no room for our CA descriptor");
	return KH_OK;
}

/* One of our PIDs: an ECM PID of a service, or the EMM PID. */
static int collides(const struct kh_headend *h, uint16_t pid)
{
	if (pid == h->cfg.emm_pid)
		return 1;
	for (unsigned i = 0; i < h->nsvc; i++)
		if (pid == h->svc[i].c.ecm_pid)
			return 1;
	return 0;
}

static kh_err svc_pat(struct kh_headend *h, struct svc *s)
{
	const struct kh_ts_pat_prog *chosen = NULL;

	for (size_t i = 0; i < h->pat.n && !chosen; i++) {
		const struct kh_ts_pat_prog *pp = &h->pat.prog[i];
		if (pp->program_number != 0 && (s->c.program == 0 || pp->program_number == s->c.program))
			chosen = pp;
	}
	if (!chosen) {
		if (s->c.program)
			return fail(h, KH_ERR_NOTFOUND, "program %u is not in the PAT", s->c.program);
		return fail(h, KH_ERR_NOTFOUND, "the PAT lists no program");
	}
	if (chosen->pid < 0x0010 || chosen->pid == KH_TS_PID_NULL)
		return fail(h, KH_ERR_FORMAT, "the PAT puts the PMT of program %u on reserved PID 0x%04X",
			    chosen->program_number, chosen->pid);
	if (!h->have_pat || chosen->pid != s->pmt_pid) {
		kh_err r = kh_ts_asm_init(&s->pmt_asm, chosen->pid, KH_TS_PSI_MAX);
		if (r != KH_OK)
			return fail(h, r, "PMT assembler");
		s->pmt_pid = chosen->pid;
	}
	s->program = chosen->program_number;
	s->st.program = s->program;
	return KH_OK;
}

static kh_err on_pat(struct kh_headend *h, const uint8_t *sec, size_t n)
{
	kh_err r;

	if (kh_ts_pat_parse(sec, n, &h->pat) != KH_OK)
		return KH_OK; /* a damaged repetition: the next one will do */
	for (size_t i = 0; i < h->pat.n; i++)
		if (collides(h, h->pat.prog[i].pid))
			return fail(h, KH_ERR_EXISTS, "PID 0x%04X (an ECM or the EMM PID) is used in the PAT",
				    h->pat.prog[i].pid);
	for (unsigned i = 0; i < h->nsvc; i++)
		if ((r = svc_pat(h, &h->svc[i])) != KH_OK)
			return r;
	h->have_pat = 1;
	return KH_OK;
}

static unsigned kind_bit(const struct kh_ts_pmt_es *e)
{
	switch (kh_ts_es_kind(e->stream_type, e->desc, e->desc_len)) {
	case KH_TS_ES_VIDEO:
		return KH_HEADEND_C_VIDEO;
	case KH_TS_ES_AUDIO:
		return KH_HEADEND_C_AUDIO;
	case KH_TS_ES_SUBTITLES:
		return KH_HEADEND_C_SUBTITLES;
	default:
		return KH_HEADEND_C_DATA;
	}
}

/* The components the service scrambles, claimed in pid_svc (a PID another service scrambles
 * already is refused: it cannot go under two keys). */
static kh_err claim(struct kh_headend *h, struct svc *s, const struct kh_ts_pmt *m)
{
	uint8_t me = (uint8_t)(s - h->svc);

	for (size_t i = 0; i < m->n; i++) {
		uint16_t pid = m->es[i].pid;
		if (!(kind_bit(&m->es[i]) & s->c.components))
			continue;
		if (h->pid_svc[pid] != NO_SVC && h->pid_svc[pid] != me)
			return fail(h, KH_ERR_EXISTS, "PID 0x%04X is a component of programs %u and %u: it cannot be "
						      "scrambled under two keys",
				    pid, h->svc[h->pid_svc[pid]].program, s->program);
	}
	for (size_t pid = 0; pid <= KH_TS_PID_MAX; pid++)
		if (h->pid_svc[pid] == me)
			h->pid_svc[pid] = NO_SVC;
	s->ncomp = 0;
	for (size_t i = 0; i < m->n; i++)
		if (kind_bit(&m->es[i]) & s->c.components) {
			h->pid_svc[m->es[i].pid] = me;
			s->ncomp++;
		}
	s->st.components = s->ncomp;
	return KH_OK;
}

static kh_err send_pmt(struct kh_headend *h, struct svc *s);

static kh_err on_pmt(struct kh_headend *h, struct svc *s, const uint8_t *sec, size_t n)
{
	struct kh_ts_pmt *m = &h->pmt;
	uint8_t loop[KH_TS_PSI_MAX];
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, len;
	struct kh_wr w;
	kh_err r;

	if (s->have_pmt && n == s->in_len && memcmp(sec, s->in_pmt, n) == 0)
		return send_pmt(h, s); /* a repetition: as rewritten last time */
	if (kh_ts_pmt_parse(sec, n, m) != KH_OK || m->program_number != s->program)
		return KH_OK; /* damaged, or another program's PMT sharing the PID */
	if (collides(h, m->pcr_pid) && m->pcr_pid != KH_TS_PID_NULL)
		return fail(h, KH_ERR_EXISTS, "PID 0x%04X (an ECM or the EMM PID) is the PCR PID of program %u",
			    m->pcr_pid, s->program);
	for (size_t i = 0; i < m->n; i++)
		if (collides(h, m->es[i].pid))
			return fail(h, KH_ERR_EXISTS, "PID 0x%04X (an ECM or the EMM PID) is a component of program %u",
				    m->es[i].pid, s->program);
	if ((r = claim(h, s, m)) != KH_OK)
		return r;
	s->pcr_pid = m->pcr_pid;

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
	r = kh_ts_ca_desc_put(&w, h->cfg.ca_system_id, s->c.ecm_pid, NULL, 0);
	if (r == KH_OK && s->c.alg == KH_SCR_CISSA)
		r = kh_ts_scrambling_desc_put(&w, KH_TS_SCRAMBLING_CISSA1);
	else if (r == KH_OK && s->c.alg == KH_SCR_IDSA)
		r = kh_ts_scrambling_desc_put(&w, KH_TS_SCRAMBLING_IDSA);
	if (r != KH_OK || w.err != KH_OK)
		return fail(h, KH_ERR_TOO_LARGE, "the PMT of program %u has no room for the CA descriptors", s->program);
	m->desc = loop;
	m->desc_len = w.len;
	m->version = (uint8_t)((m->version + 1) & 31);
	if ((r = kh_ts_pmt_build(m, s->pmt_out, sizeof s->pmt_out, &s->pmt_len)) != KH_OK)
		return fail(h, r, "the PMT of program %u with CA descriptors does not fit a section", s->program);
	if (!s->have_pmt) {
		s->have_pmt = 1;
		h->pmts++;
	}
	memcpy(s->in_pmt, sec, n);
	s->in_len = n;
	return send_pmt(h, s);
}

/* The service's PMT as rewritten, after the CAT (first service), and the start of the output and
 * of the service with their first one. */
static kh_err send_pmt(struct kh_headend *h, struct svc *s)
{
	kh_err r;

	/* the CAT goes out with every PMT of the first service, so a decoder tuning in finds both
	 * together */
	if (s == h->svc) {
		h->st.psi++;
		if ((r = put_section(h, KH_TS_PID_CAT, &h->cc_cat, h->cat, h->cat_len)) != KH_OK)
			return r;
	}
	h->st.psi++;
	if ((r = put_section(h, s->pmt_pid, &s->cc_pmt, s->pmt_out, s->pmt_len)) != KH_OK)
		return r;
	/* The first PMT starts the output: a decoder now knows the EMM PID (from the CAT) and the ECM
	 * PID, so the EMMs and ECM 0 that follow reach it before any scrambled packet. */
	if (!h->started && (r = start(h)) != KH_OK)
		return r;
	return s->started ? KH_OK : svc_start(h, s);
}

/* Feed one packet to an assembler; every section it completes goes to fn (s: the service whose
 * PMT it may be, else NULL). */
static kh_err assemble(struct kh_headend *h, struct kh_ts_asm *a, struct svc *s, const uint8_t *pkt,
		       kh_err (*fn)(struct kh_headend *, struct svc *, const uint8_t *, size_t))
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
		if ((r = fn(h, s, h->sec, n)) != KH_OK)
			return r;
	}
	return KH_OK;
}

static kh_err pat_fn(struct kh_headend *h, struct svc *s, const uint8_t *sec, size_t n)
{
	(void)s;
	return on_pat(h, sec, n);
}

static kh_err cat_fn(struct kh_headend *h, struct svc *s, const uint8_t *sec, size_t n)
{
	(void)s;
	return on_cat(h, sec, n);
}

/* ---- packets ---- */

/* A packet of the input that does not go out as it is: INSERT drops it, REPLACE and GROW put one
 * of ours or a null packet in its place. */
static kh_err drop(struct kh_headend *h, const uint8_t *pkt)
{
	return h->cfg.nulls == KH_HEADEND_NULL_INSERT ? KH_OK : hole(h, pkt, 0);
}

/*
 * REPLACE and GROW: a component packet of s scrambled with the CW of parity par is about to go
 * out; the ECM giving that CW should be out. GROW inserts it if it is not; REPLACE scrambles the
 * programme's first packets (ECM 0 still waiting for a null packet) all the same: a receiver
 * starts with ECM 0, as one tuning in mid-stream would, and no packet of the programme ever goes
 * out in clear. A later period's packet before its ECM stops the run. KH_OK, or an error.
 */
static kh_err ecm_out(struct kh_headend *h, struct svc *s, int first, unsigned par)
{
	if (h->cfg.nulls == KH_HEADEND_NULL_INSERT || h->q_out >= s->ecm_mark[par])
		return KH_OK;
	if (h->cfg.nulls == KH_HEADEND_NULL_REPLACE && first) {
		h->st.before_ecm++;
		return KH_OK;
	}
	return late(h, ": a crypto period began before its ECM was out");
}

static kh_err pass(struct kh_headend *h, const uint8_t *pkt, const struct kh_ts_pkt *p, int has_pcr)
{
	if (has_pcr && h->cfg.nulls == KH_HEADEND_NULL_GROW)
		pkt = restamp(h, pkt, p);
	return put_pkt(h, pkt, NULL, 0);
}

/* A component packet of s with a payload. */
static kh_err component(struct kh_headend *h, struct svc *s, const uint8_t *pkt, const struct kh_ts_pkt *p,
			int has_pcr)
{
	uint32_t cp;
	unsigned par;
	kh_err r;

	if (p->scrambling != KH_TS_SC_CLEAR) {
		/* One such packet is damage (a flipped bit): it cannot be scrambled again, and passed on
		 * as it is a decoder would descramble it with our key into garbage, so it is dropped.
		 * A run of them is a programme scrambled already: refused. */
		h->st.scrambled_in++;
		if (++s->scrambled_run >= KH_HEADEND_SCRAMBLED_RUN)
			return fail(h, KH_ERR_FORMAT,
				    "program %u is scrambled already (%u component packets in a row arrive "
				    "scrambled, the last on PID 0x%04X): give a clear programme",
				    s->program, (unsigned)s->scrambled_run, p->pid);
		return KH_OK;
	}
	s->scrambled_run = 0;
	cp = h->ecm_fn ? s->cur : (uint32_t)h->k_now;
	par = cp & 1u;
	s->st.period = cp;
	if ((r = ecm_out(h, s, cp == 0, par)) != KH_OK)
		return r;
	h->st.scrambled++;
	s->st.scrambled++;
	if (has_pcr && h->cfg.nulls == KH_HEADEND_NULL_GROW)
		pkt = restamp(h, pkt, p);
	return put_pkt(h, pkt, s, (int)par);
}

/* A packet on a PMT PID of ours: to each service whose PMT goes there. Returns 1 when it was. */
static int pmt_pid(struct kh_headend *h, uint16_t pid, const uint8_t *pkt, kh_err *r)
{
	int hit = 0;

	*r = KH_OK;
	if (!h->have_pat)
		return 0;
	for (unsigned i = 0; i < h->nsvc && *r == KH_OK; i++)
		if (h->svc[i].pmt_pid == pid) {
			hit = 1;
			*r = assemble(h, &h->svc[i].pmt_asm, &h->svc[i], pkt, on_pmt);
		}
	return hit;
}

/* One packet at stream time t (never backwards). */
static kh_err one(struct kh_headend *h, const uint8_t *pkt, uint64_t t)
{
	struct kh_ts_pkt p;
	uint8_t si;
	int has_pcr;
	kh_err r;

	h->st.in++;
	if (t > h->clock)
		h->clock = t;
	if (h->have_t0 && (r = timers(h)) != KH_OK)
		return r;
	if (kh_ts_parse(pkt, KH_TS_PACKET_LEN, &p) != KH_OK) {
		h->st.damaged++; /* a reserved adaptation_field_control, an impossible length: dropped */
		return drop(h, pkt);
	}
	has_pcr = p.af_len >= 7 && (p.af[0] & 0x10);
	if (p.pid == KH_TS_PID_NULL) {
		h->st.nulls_in++;
		if (h->cfg.nulls != KH_HEADEND_NULL_INSERT)
			return hole(h, pkt, 1);
	}
	if (p.pid == KH_TS_PID_PAT) {
		if ((r = assemble(h, &h->pat_asm, NULL, pkt, pat_fn)) != KH_OK)
			return r;
		return put_pkt(h, pkt, NULL, 0);
	}
	if (p.pid == KH_TS_PID_CAT) {
		h->st.dropped++; /* merged into ours, which goes out with every PMT */
		if ((r = assemble(h, &h->cat_asm, NULL, pkt, cat_fn)) != KH_OK)
			return r;
		return drop(h, pkt);
	}
	if (collides(h, p.pid)) {
		h->st.foreign++; /* a PID no table named: ours in the output */
		return drop(h, pkt);
	}
	if (pmt_pid(h, p.pid, pkt, &r)) {
		if (r != KH_OK)
			return r;
		h->st.dropped++; /* replaced by the rewritten PMT */
		return drop(h, pkt);
	}
	if (h->pmts < h->nsvc) {
		h->st.dropped++; /* which PIDs to scramble is not known yet */
		return drop(h, pkt);
	}
	si = h->pid_svc[p.pid];
	if (si == NO_SVC || !p.payload_len)
		return pass(h, pkt, &p, has_pcr);
	return component(h, &h->svc[si], pkt, &p, has_pcr);
}

/*
 * The packets waiting in la, each at its time: the j-th packet of a span of n that advances stream
 * time by diff (the span ends with la's last packet, a PCR) at pcr_clock + diff * j / n; without
 * an end (end 0: la is full, or the input ended) at the last span's rate, at most PCR_GAP_MAX (or
 * one span) on, since PCRs are never further apart than that.
 */
static kh_err la_run(struct kh_headend *h, int end, uint64_t diff)
{
	uint64_t n = h->la_done + h->la_n, cap = h->span > PCR_GAP_MAX ? h->span : PCR_GAP_MAX;
	kh_err r = KH_OK;

	for (size_t i = 0; i < h->la_n && r == KH_OK; i++) {
		uint64_t j = h->la_done + i + 1, t = h->pcr_clock;
		if (end)
			t += diff * j / n;
		else if (h->span && h->span_pkts) {
			uint64_t jj = j > h->span_pkts * 64 ? h->span_pkts * 64 : j, d = h->span * jj / h->span_pkts;
			t += d < cap ? d : cap;
		}
		r = one(h, h->la + i * KH_TS_PACKET_LEN, t);
	}
	h->la_done = end ? 0 : n;
	h->la_n = 0;
	return r;
}

/* la ends with a PCR packet of the clock's PID: its span is known. */
static kh_err la_pcr(struct kh_headend *h, const uint8_t *af)
{
	uint64_t pcr = pcr_of(af), diff;
	uint64_t n = h->la_done + h->la_n;
	kh_err r;

	if (!h->have_t0) { /* the first PCR: time 0, and what came before it */
		h->have_t0 = 1;
		h->last_pcr = pcr;
		return la_run(h, 1, 0);
	}
	diff = (pcr + PCR_MOD - h->last_pcr) % PCR_MOD;
	h->last_pcr = pcr;
	if ((af[0] & 0x80) || diff > PCR_JUMP_MAX) {
		h->span = 0; /* a splice or a loop of the source: time stands */
		return la_run(h, 1, 0);
	}
	r = la_run(h, 1, diff);
	h->pcr_clock += diff;
	h->span = diff;
	h->span_pkts = n;
	return r;
}

kh_err kh_headend_feed(struct kh_headend *h, const uint8_t *pkts, size_t n)
{
	kh_err r = KH_OK;

	if (h->err != KH_OK)
		return h->err;
	for (size_t i = 0; i < n && r == KH_OK; i++) {
		const uint8_t *pkt = pkts + i * KH_TS_PACKET_LEN;

		if (!h->svc[0].have_pmt) { /* no clock yet */
			r = one(h, pkt, h->clock);
			continue;
		}
		memcpy(h->la + h->la_n++ * KH_TS_PACKET_LEN, pkt, KH_TS_PACKET_LEN);
		/* a PCR of the clock's PID: sync byte, PID, an adaptation field of 7 bytes or more with
		 * PCR_flag (one() checks the rest of the packet) */
		if (pkt[0] == 0x47 && ((pkt[1] & 0x1F) << 8 | pkt[2]) == h->svc[0].pcr_pid && (pkt[3] & 0x20) &&
		    pkt[4] >= 7 && pkt[4] <= 183 && (pkt[5] & 0x10))
			r = la_pcr(h, pkt + 5);
		else if (h->la_n == LA_MAX)
			r = la_run(h, 0, 0);
	}
	return r == KH_OK ? KH_OK : fail(h, r, "processing failed");
}

kh_err kh_headend_finish(struct kh_headend *h)
{
	kh_err r;

	if (h->err != KH_OK)
		return h->err;
	if ((r = la_run(h, 0, 0)) != KH_OK)
		return fail(h, r, "processing failed");
	for (unsigned i = 0; i < h->nsvc; i++) {
		const struct svc *s = &h->svc[i];
		if (!s->have_pmt)
			return fail(h, KH_ERR_NOTFOUND, h->have_pat ? "no PMT of program %u in the input"
								    : "no PAT in the input (program %u)",
				    h->have_pat ? s->program : s->c.program);
	}
	/* REPLACE and GROW: packets of ours still waiting when the stream ends are left out, as a
	 * multiplex cut there would: nothing after them needs them */
	return flush(h);
}
