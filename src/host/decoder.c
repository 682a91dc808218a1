/*
 * The decoder engine (include/keyhole/decoder.h; contracts in docs/internals/decoder.md): from a
 * scrambled transport stream and a CAS session to a clear one. It implements the decoder side of
 * the protocol design "Pay-TV: ECM and EMM" and the headend's stream conventions: each new ECM (a
 * (table_id, cp) not answered last, and not a section the card refused) goes to the card; its
 * answer gives the key of crypto period cp in the slot of parity cp & 1 and the key of period
 * cp - 1 in the other, which never disturbs the running period. A refusal changes nothing (the
 * keys in force stay, the next repetition of a genuine ECM is still passed), so one forged or
 * foreign section cannot black out a period; the viewer hears why only when packets actually go
 * without a key. EMMs addressed to this card and newer than what it accepted go to it once.
 *
 * Several programmes: each programme played has its own state (struct prog: PMT and ECM PIDs,
 * the ECM path, its descrambler and keys, the crypto periods of its components); the PAT, the
 * CAT, the EMM path, the batch and the counts are the engine's. A packet of a component PID is
 * handled by the programme that owns the PID (the first whose PMT named it).
 *
 * Crypto periods: the engine follows the period of the component packets (a change of their
 * scrambling parity is the next period) and uses a key only for the period it belongs to, so a
 * lost ECM makes its period's packets dropped, never "descrambled" with the key of two periods
 * before; keys older than the previous period are forgotten.
 *
 * Ordering is the one invariant that matters: packets are held in one batch in input order, and
 * the batch is descrambled and written BEFORE any key of any programme changes, so every packet
 * meets the keys that were valid at its place in the stream. A scrambled packet enters the batch
 * only when its period has a key, and after descrambling any packet whose TSC is still set is
 * dropped, so a scrambled packet is never written.
 *
 * After the card accepted an EMM or made a purchase, and every cfg.export_every_ms of stream time
 * (the first programme's PCR), cfg.changed is told (seed 001: the moments to refresh the decoder's
 * memory M1); what it does with the card is the caller's business.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/decoder.h"
#include "keyhole/host.h"
#include "keyhole/log.h"
#include "keyhole/scramble.h"
#include "keyhole/ts.h"

#define PID_NONE 0xFFFFu
#define PCR_HZ 27000000ull
#define PCR_MOD (((uint64_t)1 << 33) * 300)
#define PCR_JUMP_MAX (60 * PCR_HZ) /* a larger step does not advance stream time (as the headend) */
#define EMM_RING 8 /* EMM seqs remembered per address type, so a carousel is passed once */
#define EMM_PIDS 4 /* EMM PIDs of the CAT followed */
#define PKT KH_TS_PACKET_LEN
#define SYNC 0x47u
#define INBUF (64 * PKT) /* kh_decoder_write's window */
#define NPIDS (KH_TS_PID_MAX + 1)
/*
 * A PID back at the parity it left fewer than GLITCH of its packets and GLITCH_SPAN packets of the
 * stream ago is taken as a glitch (an injected or misplaced packet), not as the next period:
 * periods last seconds (docs/internals/decoder.md, "Crypto periods").
 */
#define GLITCH 8
#define LEFT_CHOSEN 1
#define LEFT_RIGHTS 2
#define GLITCH_SPAN 64

/* One programme played (or waiting for its first ECM answer to know whether it may be). */
struct prog {
	int used, left; /* left: LEFT_CHOSEN (not chosen) or LEFT_RIGHTS (no rights, until an EMM) */
	int named;      /* chosen by the caller: never left out */
	int in;         /* known to be played: named, alone, clear, or an ECM of it answered (in the PAT) */
	uint16_t number, pmt_pid, ecm_pid, pcr_pid;
	uint8_t comp[NPIDS / 8]; /* its component PIDs (and PCR PID) */
	uint8_t pmt_cc;          /* continuity counter of the rewritten PMT */
	struct kh_ts_asm pmt_asm, ecm_asm;

	/* ECM path */
	int answered;   /* the card answered an ECM of it in this run */
	int have_last;  /* (last_tid, last_cp) was answered by the card */
	uint8_t last_tid;
	uint32_t last_cp;
	/* sections the card refused, byte for byte (a ring), so their repetitions stay away from it */
	unsigned nrefused, refused_pos;
	struct refused {
		size_t len;
		uint8_t sec[KH_ECM_MAX];
	} refused[KH_DECODER_REFUSED];
	/* why the card refused the latest ECM since one was answered: told when packets go keyless */
	kh_err why;
	int why_has_offer;
	struct kh_ppv_offer why_offer;
	int have_bought; /* auto-purchase tried for this event */
	uint32_t bought_event;
	int have_notice; /* last refusal told to the viewer, to tell each change once */
	kh_err notice;
	uint32_t notice_event;
	uint8_t ecm[KH_ECM_MAX];
	size_t ecm_len;

	/* descrambler: ours (open mode), or the decoder module's (ladder mode: one programme) */
	struct kh_scr *scr;
	uint8_t alg;
	size_t nscr; /* its scrambled packets in the batch */
	/*
	 * Crypto periods. The key in each parity's slot and the period it belongs to (in ladder
	 * mode the pair is in the decoder module; a slot forgotten here is never used there). a: the
	 * period of the ECM answered last (have_a), the anchor; top: the newest period a packet was
	 * put in (have_top); per PID of the programme, the period of its last scrambled packet, how
	 * many packets it has had in it (up to GLITCH) and whether it got there by a parity change.
	 * noecm_cp: the last period logged as keyless.
	 */
	int key_ok[2];
	uint32_t key_cp[2];
	int have_a, have_top, have_noecm;
	uint32_t a, top, cur, noecm_cp; /* cur: the period of the last scrambled packet */
	unsigned nslots;
	struct pid_period {
		uint32_t cp, flip_at; /* flip_at: pkts_in when it changed parity last */
		uint8_t known, run, flipped;
	} per[KH_TS_PMT_MAX_ES + 1], scratch;
};

struct kh_decoder {
	struct kh_decoder_config cfg;
	kh_err err; /* sticky */
	struct kh_decoder_stats st;
	int multi; /* more than one programme may be played: messages name theirs */

	/* the programmes, and which one owns a PID (1 + index, 0: none) and its slot there (1 + index) */
	struct prog prog[KH_DECODER_PROGRAMS];
	uint8_t owner[NPIDS], slot_of[NPIDS], role[NPIDS];
	uint16_t emm_pid[EMM_PIDS]; /* the CAT's, nemm of them */
	unsigned nemm;

	/* the PAT written: the input's programmes that are played, its own version and counter */
	int have_pat, pat_done; /* pat_done: the packet being handled completed a PAT */
	int pat_own;            /* the PAT written is ours (from then on, always: one continuity counter) */
	uint8_t pat_gen, pat_cc;
	struct kh_ts_pat pat, pat_out;

	/* stream time (27 MHz ticks since the first PCR) and the export period on it */
	uint16_t clock_pid;
	int have_pcr;
	uint64_t last_pcr, clock, every, next_tick;

	/* reconnecting, once per ECM */
	int tried;
	uint8_t tried_tid;
	uint32_t tried_cp;
	uint32_t card_ua; /* card of the last successful connect */

	/* EMM path */
	int have_status;
	struct kh_cas_status status;
	uint32_t emm_seen[3][EMM_RING];
	unsigned emm_n[3], emm_pos[3];
	/*
	 * The card's own EMMs it answered EMM_GAP, to pass again once the missing one arrived (the
	 * carousel may bring n+1 before n, a host may withhold n): for card pend_ua, unordered, the
	 * lowest seqs kept when full. Only a genuine EMM can get EMM_GAP (the card checks the tag
	 * first), so forged ones never take a slot.
	 */
	uint32_t pend_ua;
	unsigned npend;
	struct pending {
		uint32_t seq;
		size_t len;
		uint8_t sec[KH_EMM_MAX];
	} pend[KH_DECODER_EMM_PENDING];

	/* per-PID counts: row of a PID (1 + index, 0: none yet) */
	uint8_t row_of[NPIDS];
	unsigned nrows;
	struct kh_decoder_pid_stat rows[KH_DECODER_PIDS];
	int passed; /* the packet being handled went into the batch as it came */

	/* kh_decoder_write: the window of input bytes not yet taken, and whether it is in sync */
	int locked;
	size_t inlen;
	uint8_t in[INBUF];

	/* the batch: packets to write, in input order; per packet its row and scrambled programme */
	size_t nbatch, nscr;
	uint8_t batch[KH_DECODER_BATCH * PKT];
	uint8_t brow[KH_DECODER_BATCH], bprog[KH_DECODER_BATCH];
	uint8_t gather[KH_DECODER_BATCH * PKT]; /* one programme's scrambled packets, when several */

	struct kh_ts_asm pat_asm, cat_asm, emm_asm[EMM_PIDS];
	uint8_t sec[KH_TS_PRIVATE_MAX];
	/* rewriting a PMT or the PAT */
	struct kh_ts_pmt pmt, pmt_out;
	uint8_t pmt_desc[KH_TS_PSI_MAX];
	uint8_t psi_sec[KH_TS_PSI_MAX];
	uint8_t psi_pkts[8 * PKT];
};

static unsigned idx(const struct kh_decoder *d, const struct prog *g)
{
	return (unsigned)(g - d->prog);
}

static void tell(struct kh_decoder *d, const struct prog *g, kh_err reason, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void tell(struct kh_decoder *d, const struct prog *g, kh_err reason, const char *fmt, ...)
{
	char msg[256], line[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (d->multi && g)
		snprintf(line, sizeof line, "programme %u: %s", g->number, msg);
	else
		snprintf(line, sizeof line, "%s", msg);
	kh_log_info("decoder.notice", "reason=%s program=%u", reason ? kh_err_name(reason) : "OK", g ? g->number : 0);
	if (d->cfg.notify)
		d->cfg.notify(d->cfg.ctx, reason, line);
}

static void pending_reset(struct kh_decoder *d);
static void forget_refused(struct prog *g);
static kh_err write_pat(struct kh_decoder *d);
static kh_err decide_in(struct kh_decoder *d, struct prog *g, const char *why);

/* ---- per-PID counts ---- */

static struct kh_decoder_pid_stat *row(struct kh_decoder *d, uint16_t pid)
{
	struct kh_decoder_pid_stat *w;

	if (d->row_of[pid])
		return &d->rows[d->row_of[pid] - 1];
	if (d->nrows == KH_DECODER_PIDS)
		return NULL;
	w = &d->rows[d->nrows++];
	memset(w, 0, sizeof *w);
	w->pid = pid;
	d->row_of[pid] = (uint8_t)d->nrows;
	return w;
}

/* ---- the batch ---- */

static int is_comp(const struct prog *g, uint16_t pid)
{
	return (g->comp[pid >> 3] >> (pid & 7)) & 1;
}

static void set_comp(struct prog *g, uint16_t pid)
{
	g->comp[pid >> 3] = (uint8_t)(g->comp[pid >> 3] | (1u << (pid & 7)));
}

/* The programme in use that owns component pid, or NULL. */
static struct prog *owner(struct kh_decoder *d, uint16_t pid)
{
	struct prog *g;

	if (!d->owner[pid])
		return NULL;
	g = &d->prog[d->owner[pid] - 1];
	return g->used && is_comp(g, pid) ? g : NULL;
}

static int ladder(const struct kh_decoder *d)
{
	return (d->cfg.cas->flags & KH_HOST_CAS_LADDER) != 0;
}

static void forget_key(struct prog *g, unsigned par)
{
	g->key_ok[par] = 0;
	if (g->scr)
		kh_scr_clear_key(g->scr, (enum kh_scr_parity)par);
}

/* Descramble the batch's packets of g alone (other programmes' are scrambled with their keys). */
static kh_err descramble_one(struct kh_decoder *d, struct prog *g, int alone, size_t *skipped)
{
	size_t n = d->nbatch, k = 0;
	uint8_t want = (uint8_t)(idx(d, g) + 1);
	kh_err r;

	if (alone)
		return kh_scr_descramble(g->scr, d->batch, n, skipped);
	for (size_t i = 0; i < n; i++)
		if (d->bprog[i] == want)
			memcpy(d->gather + k++ * PKT, d->batch + i * PKT, PKT);
	if ((r = kh_scr_descramble(g->scr, d->gather, k, skipped)) != KH_OK)
		return r;
	k = 0;
	for (size_t i = 0; i < n; i++)
		if (d->bprog[i] == want)
			memcpy(d->batch + i * PKT, d->gather + k++ * PKT, PKT);
	return KH_OK;
}

static kh_err descramble(struct kh_decoder *d)
{
	size_t skipped = 0;
	kh_err r;

	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
		struct prog *g = &d->prog[j];
		if (!g->nscr)
			continue;
		/* Only packets whose period had a key entered the batch, and keys change only after
		 * a flush, so INVAL here would be a bug: treat every failure as final. */
		if (ladder(d)) {
			/* The decoder module descrambles (one programme in ladder mode). If it cannot
			 * (its channel to the CAM ended, the module went away), the batch's scrambled
			 * packets stay scrambled and are dropped; the next ECM loads keys again. */
			if ((r = kh_host_cas_descramble(d->cfg.cas, d->batch, d->nbatch)) != KH_OK) {
				kh_log_info("decoder.descramble_refused", "err=%s", kh_err_name(r));
				g->key_ok[0] = g->key_ok[1] = 0;
			}
		} else if (!g->scr) {
			d->err = KH_ERR_INTERNAL;
			return d->err;
		} else if ((r = descramble_one(d, g, g->nscr == d->nscr, &skipped)) != KH_OK) {
			d->err = r == KH_ERR_INVAL ? KH_ERR_INTERNAL : r;
			return d->err;
		}
	}
	return KH_OK;
}

static kh_err flush(struct kh_decoder *d)
{
	size_t kept = 0, left = 0, n = d->nbatch;
	kh_err r;

	if (d->err)
		return d->err;
	if (n == 0)
		return KH_OK;
	if (d->nscr > 0 && (r = descramble(d)) != KH_OK)
		return r;
	/* Whatever still says scrambled (a packet the descrambler skipped) is not written. Only
	 * component packets entered the batch scrambled: they count as keyless. */
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = d->batch + i * PKT;
		struct kh_decoder_pid_stat *w = d->brow[i] ? &d->rows[d->brow[i] - 1] : NULL;
		if ((p[3] >> 6) != KH_TS_SC_CLEAR) {
			left++;
			if (w)
				w->dropped++;
			continue;
		}
		if (w) {
			w->out++;
			w->descrambled += d->bprog[i] != 0;
		}
		if (kept != i)
			memmove(d->batch + kept * PKT, p, PKT);
		kept++;
	}
	if (left > d->nscr)
		left = d->nscr;
	d->st.descrambled += d->nscr - left;
	d->st.dropped_nokey += left;
	d->nbatch = 0;
	d->nscr = 0;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		d->prog[j].nscr = 0;
	if (kept && d->cfg.out && (r = d->cfg.out(d->cfg.ctx, d->batch, kept)) != KH_OK) {
		d->err = r;
		return r;
	}
	d->st.pkts_out += kept;
	return KH_OK;
}

/* Put p in the batch, counted on pid's row; g: the programme whose keys descramble it (NULL: clear). */
static kh_err emit(struct kh_decoder *d, const uint8_t *p, uint16_t pid, struct prog *g)
{
	memcpy(d->batch + d->nbatch * PKT, p, PKT);
	d->brow[d->nbatch] = d->row_of[pid];
	d->bprog[d->nbatch] = g ? (uint8_t)(idx(d, g) + 1) : 0;
	d->nbatch++;
	if (g) {
		d->nscr++;
		g->nscr++;
	}
	return d->nbatch == KH_DECODER_BATCH ? flush(d) : KH_OK;
}

/* The packet being handled goes out as it came (or descrambled). */
static kh_err pass(struct kh_decoder *d, const uint8_t *p, uint16_t pid, struct prog *g)
{
	d->passed = 1;
	return emit(d, p, pid, g);
}

/* ---- keys and crypto periods ---- */

/* Forget both keys and the anchor (the card went away, another programme). */
static kh_err clear_keys(struct kh_decoder *d, struct prog *g)
{
	kh_err r = flush(d);
	forget_key(g, KH_SCR_EVEN);
	forget_key(g, KH_SCR_ODD);
	g->have_a = 0;
	return r;
}

/* Forget what the PIDs' packets said about periods: the next packets take theirs from the ECM. */
static void periods_reset(struct prog *g, const char *why)
{
	if (g->have_top)
		kh_log_info("decoder.periods_reset", "why=%s program=%u top=%u ecm=%u", why, g->number, g->top, g->a);
	for (unsigned i = 0; i < g->nslots; i++)
		g->per[i].known = 0;
	g->have_top = 0;
}

/*
 * A scrambled packet of component pid with parity par: the crypto period it belongs to
 * (docs/internals/decoder.md, "Crypto periods"). A PID's periods follow its parity: the same
 * parity is the same period, the other one the next; a return to the parity it left fewer than
 * GLITCH packets ago is the period before (a packet injected or out of place, on either side of
 * the change, costs that packet only). A PID without a recent period takes one from the ECM
 * answered last (cp a: the stream is in a - 1 or a) or, once the stream has gone past it (the
 * next ECMs lost or refused), from the newest period seen, never an older one.
 */
static uint32_t period_of(struct kh_decoder *d, struct prog *g, uint16_t pid, unsigned par, struct pid_period **qp)
{
	static const struct pid_period none;
	struct pid_period *q = d->slot_of[pid] ? &g->per[d->slot_of[pid] - 1] : &g->scratch;
	int ahead = g->have_top && (int32_t)(g->top - g->a) >= 0;
	uint32_t base = ahead ? g->top : g->a, now = (uint32_t)d->st.pkts_in, p;

	if (q == &g->scratch)
		*q = none; /* a PID without a slot: never sure of its period */
	if (q->known && (int32_t)(q->cp - (base - 1u)) < 0)
		q->known = 0; /* silent for a period or more: what it said is stale */
	if (!q->known) {
		p = (base & 1u) == par ? base : ahead ? base + 1u : base - 1u;
		q->cp = p;
		q->run = 1;
		q->flipped = 0;
		q->known = 1;
	} else if ((q->cp & 1u) == par) {
		p = q->cp;
		if (q->run < GLITCH)
			q->run++;
	} else if (q->flipped && q->run < GLITCH && now - q->flip_at < GLITCH_SPAN) {
		p = q->cp - 1u;
		q->cp = p;
		q->run = GLITCH;
		q->flipped = 0;
	} else {
		p = q->cp + 1u;
		q->cp = p;
		q->run = 1;
		q->flipped = 1;
		q->flip_at = now;
	}
	*qp = q;
	if (!g->have_top || (int32_t)(p - g->top) > 0) {
		g->top = p;
		g->have_top = 1;
	}
	return p;
}

/*
 * Has the packet's period p (of a PID that is sure of it) a key? Keys older than the period
 * before p are forgotten first (after a flush: held packets may still need them).
 */
static kh_err period_key(struct kh_decoder *d, struct prog *g, uint16_t pid, unsigned par, int *ok)
{
	struct pid_period *q;
	uint32_t p;
	kh_err r;

	*ok = 0;
	if (!g->have_a)
		return KH_OK; /* no ECM answered yet: no key, no period */
	p = period_of(d, g, pid, par, &q);
	if (q->run >= GLITCH)
		for (unsigned s = 0; s < 2; s++) {
			if (!g->key_ok[s] || (int32_t)(g->key_cp[s] - (p - 1u)) >= 0)
				continue;
			if ((r = flush(d)) != KH_OK)
				return r;
			kh_log_debug("decoder.key_forgotten", "program=%u cp=%u period=%u", g->number, g->key_cp[s], p);
			forget_key(g, s);
		}
	g->cur = p;
	*ok = g->key_ok[par] && g->key_cp[par] == p;
	return KH_OK;
}

/* Our descrambler for g, of cw's algorithm, keyed with cw's pair; KH_ERR_FORMAT if it does not fit. */
static kh_err open_keys(struct kh_decoder *d, struct prog *g, const struct kh_cw_answer *cw, size_t klen)
{
	kh_err r;

	if (cw->sealed_len || cw->cw_len != klen)
		return KH_ERR_FORMAT;
	if (!g->scr || g->alg != cw->alg) {
		kh_scr_free(g->scr);
		g->scr = NULL;
		g->key_ok[0] = g->key_ok[1] = 0;
		if ((r = kh_scr_new((enum kh_scr_alg)cw->alg, 0, &g->scr)) != KH_OK) {
			d->err = r;
			return r;
		}
	}
	if (kh_scr_set_key(g->scr, KH_SCR_EVEN, cw->even, cw->cw_len) != KH_OK ||
	    kh_scr_set_key(g->scr, KH_SCR_ODD, cw->odd, cw->cw_len) != KH_OK) {
		forget_key(g, KH_SCR_EVEN);
		forget_key(g, KH_SCR_ODD);
		return KH_ERR_FORMAT;
	}
	return KH_OK;
}

/*
 * Keys from the card's answer for crypto period cp: CW_cp in the slot of parity cp & 1 and
 * CW_{cp-1} in the other (the headend's convention). Nothing changes unless the answer fits:
 * KH_ERR_FORMAT when it does not fit a descrambler or the mode, the decoder module's refusal to
 * load it in ladder mode (its pair before stays, as ours).
 */
static kh_err set_keys(struct kh_decoder *d, struct prog *g, const struct kh_cw_answer *cw)
{
	size_t klen = kh_scr_keylen((enum kh_scr_alg)cw->alg);
	unsigned par = cw->cp & 1u;
	kh_err r;

	if ((r = flush(d)) != KH_OK)
		return r;
	if (klen == 0)
		return KH_ERR_FORMAT;
	if (ladder(d)) {
		/* the sealed pair goes to the decoder module's descrambler as it came */
		if (!cw->sealed_len)
			return KH_ERR_FORMAT;
		if ((r = kh_host_cas_load(d->cfg.cas, cw)) != KH_OK)
			return r;
	} else if ((r = open_keys(d, g, cw, klen)) != KH_OK) {
		return r;
	}
	g->alg = cw->alg;
	g->key_ok[par] = g->key_ok[par ^ 1u] = 1;
	g->key_cp[par] = cw->cp;
	g->key_cp[par ^ 1u] = cw->cp - 1u;
	/* A genuine ECM for cp: the stream is in cp - 1 or cp. Periods numbered otherwise than
	 * from the ECM before (a restarted headend, a splice, a recording), or packets that went
	 * past it, are forgotten: the next packets take their periods from this ECM. */
	if (g->have_a && (uint32_t)(cw->cp - g->a) > 2u)
		periods_reset(g, "ecm_jump");
	else if (g->have_top && (int32_t)(g->top - cw->cp) > 0)
		periods_reset(g, "ahead_of_ecm");
	g->a = cw->cp;
	g->have_a = 1;
	g->have_noecm = 0;
	return KH_OK;
}

/* ---- ECMs ---- */

/* Tell the viewer why there is no picture, once per change of reason (and of event). */
static void refusal(struct kh_decoder *d, struct prog *g, kh_err r, const struct kh_ppv_offer *o, int channel)
{
	uint32_t ev = o ? o->event : 0;

	if (g->have_notice && g->notice == r && g->notice_event == ev)
		return;
	g->have_notice = 1;
	g->notice = r;
	g->notice_event = ev;
	if (channel) {
		tell(d, g, r, "lost the sealed channel to the card (%s): card removed or swapped? "
			      "pairing again at the next ECM", kh_strerror(r));
		return;
	}
	switch (r) {
	case KH_ERR_NO_RIGHT: tell(d, g, r, "no subscription for this channel"); break;
	case KH_ERR_RIGHT_EXPIRED: tell(d, g, r, "subscription expired"); break;
	case KH_ERR_RIGHT_NOT_STARTED: tell(d, g, r, "subscription not yet valid"); break;
	case KH_ERR_NOT_PURCHASED:
		if (o)
			tell(d, g, r, "pay-per-view event %u: price %u, credit %u \xe2\x80\x94 run 'keyhole decoder buy'",
			     o->event, o->price, o->credit);
		else
			tell(d, g, r, "pay-per-view event not purchased \xe2\x80\x94 run 'keyhole decoder buy'");
		break;
	case KH_ERR_CREDIT_LOW:
		if (o)
			tell(d, g, r, "pay-per-view event %u costs %u but the card holds only %u credit", o->event,
			     o->price, o->credit);
		else
			tell(d, g, r, "credit too low for this pay-per-view event");
		break;
	case KH_ERR_NO_KEY:
		tell(d, g, r, "the card holds no key for this channel's ECMs (no subscription for this channel)");
		break;
	case KH_ERR_LADDER_REQUIRED:
		tell(d, g, r, "this channel needs a decoder that keeps control words in its decoder module (key ladder)");
		break;
	default: tell(d, g, r, "the card refused the ECM: %s", kh_strerror(r)); break;
	}
}

/* The card could not authenticate the section: anyone can put such a one on the ECM PID. */
static int unauthentic(kh_err r)
{
	return r == KH_ERR_AUTH || r == KH_ERR_SIGNATURE || r == KH_ERR_UNKNOWN_SIGNER || r == KH_ERR_NO_KEY ||
	       r == KH_ERR_FORMAT || r == KH_ERR_TLV_TAG || r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING ||
	       r == KH_ERR_TOO_LARGE || r == KH_ERR_VERSION;
}

/*
 * The card's word, on an ECM it authenticated, that this card may not watch the programme: what
 * leaves an automatically chosen programme out. A section the card could not authenticate (NO_KEY
 * included: anyone can name a key the card lacks) never does.
 */
static int no_rights(kh_err r)
{
	return r == KH_ERR_NO_RIGHT || r == KH_ERR_RIGHT_EXPIRED || r == KH_ERR_RIGHT_NOT_STARTED ||
	       r == KH_ERR_NOT_PURCHASED || r == KH_ERR_CREDIT_LOW || r == KH_ERR_LADDER_REQUIRED;
}

/*
 * The card refused an ECM: no key changes. Remember why, to tell the viewer when packets go
 * without a key; the card's word on a section it authenticated (no right, not bought, ...) is
 * not replaced by a later section it could not authenticate (a forged or foreign one).
 */
static void note_refusal(struct prog *g, kh_err r, const struct kh_ppv_offer *o)
{
	if (g->why && unauthentic(r) && !unauthentic(g->why))
		return;
	g->why = r;
	g->why_has_offer = o != NULL;
	if (o)
		g->why_offer = *o;
}

/* ECM sections are public: comparing them needs no constant time. */
static int was_refused(const struct prog *g, const uint8_t *sec, size_t n)
{
	for (unsigned i = 0; i < g->nrefused; i++)
		if (g->refused[i].len == n && memcmp(g->refused[i].sec, sec, n) == 0)
			return 1;
	return 0;
}

static void remember_refused(struct prog *g, const uint8_t *sec, size_t n)
{
	struct refused *f = &g->refused[g->refused_pos];

	if (n > sizeof f->sec)
		return;
	memcpy(f->sec, sec, n);
	f->len = n;
	g->refused_pos = (g->refused_pos + 1) % KH_DECODER_REFUSED;
	if (g->nrefused < KH_DECODER_REFUSED)
		g->nrefused++;
}

/* The card's verdicts may change (an EMM taken, another card): pass refused sections again. */
static void forget_refused(struct prog *g)
{
	g->nrefused = 0;
	g->refused_pos = 0;
}

static void forget_refused_all(struct kh_decoder *d)
{
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		forget_refused(&d->prog[j]);
}

/* A scrambled component packet without a key for its period: count it, say why once. */
static void keyless(struct kh_decoder *d, struct prog *g)
{
	d->st.dropped_nokey++;
	if (g->why) {
		refusal(d, g, g->why, g->why_has_offer ? &g->why_offer : NULL, 0);
		return;
	}
	if (!g->have_a)
		return; /* no ECM answered yet: the first has not come */
	d->st.dropped_noecm++;
	if (!g->have_noecm || g->noecm_cp != g->cur) {
		g->have_noecm = 1;
		g->noecm_cp = g->cur;
		kh_log_info("decoder.no_ecm", "cp=%u program=%u", g->cur, g->number);
	}
}

/*
 * An automatically chosen programme the card has no rights for, and never answered an ECM of:
 * out of the output from here on (its PMT, ECM and component packets dropped, a PAT written at
 * once without it, under a new version), until the card accepts an EMM (take_back).
 */
static void clock_follow(struct kh_decoder *d);

static kh_err leave_out(struct kh_decoder *d, struct prog *g, kh_err why)
{
	kh_err r = flush(d);

	g->left = LEFT_RIGHTS;
	d->pat_gen++;
	d->st.left_out++;
	kh_log_info("decoder.left_out", "program=%u err=%s", g->number, kh_err_name(why));
	clock_follow(d);
	tell(d, g, why, "left out of the output: the card refused its ECM (%s)", kh_strerror(why));
	if (r == KH_OK && d->have_pat)
		r = write_pat(d);
	return r;
}

static kh_err ecm_answered(struct kh_decoder *d, struct prog *g, const uint8_t *sec, size_t n,
			   const struct kh_ecm_hdr *h, struct kh_cw_answer *cw)
{
	kh_err e;

	d->st.ecm_answered++;
	kh_log_debug("decoder.ecm", "program=%u cp=%u alg=%u", g->number, (unsigned)cw->cp, (unsigned)cw->alg);
	e = set_keys(d, g, cw);
	kh_wipe(cw, sizeof *cw);
	if (e != KH_OK) {
		if (d->err)
			return d->err;
		/* an answer that fits no descrambler: the keys in force stay */
		d->st.ecm_refused++;
		kh_log_info("decoder.ecm_unusable", "err=%s", kh_err_name(e));
		remember_refused(g, sec, n);
		note_refusal(g, e, NULL);
		return KH_OK;
	}
	g->answered = 1;
	if ((e = decide_in(d, g, "ecm_answered")) != KH_OK)
		return e;
	g->have_last = 1;
	g->last_tid = h->table_id;
	g->last_cp = h->cp;
	g->why = KH_OK;
	if (g->have_notice) {
		g->have_notice = 0;
		tell(d, g, KH_OK, "access granted: descrambling with %s", kh_scr_alg_name((enum kh_scr_alg)g->alg));
	}
	return KH_OK;
}

static kh_err pass_ecm(struct kh_decoder *d, struct prog *g, const uint8_t *sec, size_t n, const struct kh_ecm_hdr *h)
{
	struct kh_cw_answer cw;
	struct kh_ppv_offer offer, bought;
	int have_offer = 0;
	kh_err r, e;

	d->st.ecm_passed++;
	memset(&offer, 0, sizeof offer);
	r = kh_host_cas_ecm(d->cfg.cas, sec, n, &cw, &offer);
	if (r == KH_OK)
		return ecm_answered(d, g, sec, n, h, &cw);
	kh_wipe(&cw, sizeof cw);
	d->st.ecm_refused++;
	have_offer = r == KH_ERR_NOT_PURCHASED || r == KH_ERR_CREDIT_LOW;
	kh_log_info("decoder.ecm_refused", "err=%s program=%u table_id=0x%02X cp=%u", kh_err_name(r), g->number,
		    h->table_id, h->cp);
	if (r == KH_ERR_NOT_PURCHASED && (d->cfg.flags & KH_DECODER_F_BUY) &&
	    !(g->have_bought && g->bought_event == offer.event)) {
		/* Once per event: the card decides from the authenticated ECM, never from us. */
		g->have_bought = 1;
		g->bought_event = offer.event;
		memset(&bought, 0, sizeof bought);
		e = kh_host_cas_purchase(d->cfg.cas, sec, n, &bought);
		if (e == KH_OK) {
			d->st.purchases++;
			tell(d, g, KH_OK, "bought pay-per-view event %u for %u; credit now %u", bought.event,
			     bought.price, bought.credit);
			if (d->cfg.changed)
				d->cfg.changed(d->cfg.ctx, KH_DECODER_CHANGED_PURCHASE);
			return pass_ecm(d, g, sec, n, h);
		}
		kh_log_info("decoder.purchase_refused", "err=%s event=%u", kh_err_name(e), offer.event);
		r = e;
		if (r == KH_ERR_CREDIT_LOW && bought.event == 0)
			bought = offer;
		offer = bought;
		have_offer = r == KH_ERR_NOT_PURCHASED || r == KH_ERR_CREDIT_LOW;
	}
	if (!d->cfg.cas->connected) {
		/* The channel is gone (the card pulled or swapped): every programme's keys go with
		 * it, and this ECM's next repetition reconnects (once per ECM). */
		for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
			if ((e = clear_keys(d, &d->prog[j])) != KH_OK)
				return e;
			d->prog[j].have_last = 0;
		}
		g->why = KH_OK;
		refusal(d, g, r, NULL, 1);
		return KH_OK;
	}
	/* One programme alone in the stream is never left out: the viewer hears why it is black. */
	if (d->multi && !g->named && !g->answered && no_rights(r))
		return leave_out(d, g, r);
	/* A refusal changes nothing: the keys in force stay, the next genuine ECM is passed. */
	remember_refused(g, sec, n);
	note_refusal(g, r, have_offer ? &offer : NULL);
	return KH_OK;
}

/* The channel to the card is gone: pair again, once per ECM. 1 when paired. */
static int reconnect(struct kh_decoder *d, struct prog *g, const struct kh_ecm_hdr *h, kh_err *err)
{
	kh_err r;

	*err = KH_OK;
	if (d->tried && d->tried_tid == h->table_id && d->tried_cp == h->cp)
		return 0;
	d->tried = 1;
	d->tried_tid = h->table_id;
	d->tried_cp = h->cp;
	d->st.reconnects++;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		if ((*err = clear_keys(d, &d->prog[j])) != KH_OK)
			return 0;
	if ((r = kh_host_cas_connect(d->cfg.cas)) != KH_OK) {
		if (!g->have_notice || g->notice != r) {
			g->have_notice = 1;
			g->notice = r;
			g->notice_event = 0;
			tell(d, g, r, "cannot pair with the card (%s); trying again at the next ECM", kh_strerror(r));
		}
		return 0;
	}
	if (d->cfg.cas->card_ua != d->card_ua) {
		/* Another card: its rights, group and EMM counters are its own. */
		d->have_status = 0;
		memset(d->emm_n, 0, sizeof d->emm_n);
		pending_reset(d);
		tell(d, g, KH_OK, "paired with card %08X", d->cfg.cas->card_ua);
	} else {
		tell(d, g, KH_OK, "paired with card %08X again", d->cfg.cas->card_ua);
	}
	d->card_ua = d->cfg.cas->card_ua;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		d->prog[j].have_notice = 0;
	forget_refused_all(d);
	return 1;
}

static kh_err on_ecm(struct kh_decoder *d, struct prog *g, const uint8_t *sec, size_t n)
{
	struct kh_ecm_hdr h;
	kh_err r;

	if ((r = kh_ecm_peek(sec, n, &h)) != KH_OK) {
		kh_log_debug("decoder.ecm_bad", "err=%s", kh_err_name(r));
		return KH_OK;
	}
	memcpy(g->ecm, sec, n);
	g->ecm_len = n;
	if ((d->cfg.flags & KH_DECODER_F_PASSIVE) || g->left)
		return KH_OK;
	if (g->have_last && g->last_tid == h.table_id && g->last_cp == h.cp)
		return KH_OK; /* a repetition of the ECM answered last */
	if (was_refused(g, sec, n))
		return KH_OK; /* a repetition of a section the card refused */
	if (!d->cfg.cas->connected && !reconnect(d, g, &h, &r))
		return r;
	return pass_ecm(d, g, sec, n, &h);
}

/*
 * The card took an EMM: the programmes left out for lack of rights are played again (in the next
 * PAT written), and their next ECM decides anew.
 */
static void take_back(struct kh_decoder *d)
{
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
		struct prog *g = &d->prog[j];
		if (!g->used || g->left != LEFT_RIGHTS)
			continue;
		g->left = 0;
		g->have_notice = 0;
		d->pat_gen++;
		d->st.left_out--;
		kh_log_info("decoder.taken_back", "program=%u", g->number);
	}
	clock_follow(d);
}

kh_err kh_decoder_drop_channel(struct kh_decoder *d)
{
	kh_err r = KH_OK, e;

	if (!d)
		return KH_ERR_INVAL;
	if (d->err)
		return d->err;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
		if ((e = clear_keys(d, &d->prog[j])) != KH_OK && r == KH_OK)
			r = e;
		d->prog[j].have_last = 0;
	}
	kh_host_cas_wipe(d->cfg.cas);
	d->tried = 0; /* the next ECM, a repetition included, pairs with the card there now */
	/* what the old card refused, the new one may answer: its refusals and the programmes left
	 * out for want of rights are forgotten (take_back also rewrites the PAT) */
	forget_refused_all(d);
	take_back(d);
	kh_log_info("decoder.channel_dropped", "reconnects=%u", d->st.reconnects);
	if (r != KH_OK)
		d->err = r;
	return r;
}

/* ---- EMMs ---- */

static int emm_seen(const struct kh_decoder *d, unsigned type, uint32_t seq)
{
	for (unsigned i = 0; i < d->emm_n[type]; i++)
		if (d->emm_seen[type][i] == seq)
			return 1;
	return 0;
}

static void emm_see(struct kh_decoder *d, unsigned type, uint32_t seq)
{
	d->emm_seen[type][d->emm_pos[type]] = seq;
	d->emm_pos[type] = (d->emm_pos[type] + 1) % EMM_RING;
	if (d->emm_n[type] < EMM_RING)
		d->emm_n[type]++;
}

/* Let the carousel's next repetition of seq through again (no EMM has seq 0). */
static void emm_unsee(struct kh_decoder *d, unsigned type, uint32_t seq)
{
	for (unsigned i = 0; i < d->emm_n[type]; i++)
		if (d->emm_seen[type][i] == seq)
			d->emm_seen[type][i] = 0;
}

static void pending_reset(struct kh_decoder *d)
{
	d->npend = 0;
	d->pend_ua = d->cfg.cas->card_ua;
	d->st.emm_pending = 0;
}

static int pending_has(const struct kh_decoder *d, uint32_t seq)
{
	for (unsigned i = 0; i < d->npend; i++)
		if (d->pend[i].seq == seq)
			return 1;
	return 0;
}

static void pending_drop(struct kh_decoder *d, unsigned i)
{
	if (i != --d->npend)
		d->pend[i] = d->pend[d->npend];
	d->st.emm_pending = d->npend;
}

/*
 * Hold a unique EMM the card answered EMM_GAP. When the set is full, the highest seq makes room
 * for a lower one (the card needs the lower first) and is let through the carousel again; 0 when
 * sec was not held.
 */
static int pending_put(struct kh_decoder *d, uint32_t seq, const uint8_t *sec, size_t n)
{
	unsigned at = d->npend, hi = 0;

	if (d->pend_ua != d->cfg.cas->card_ua)
		pending_reset(d);
	if (n > KH_EMM_MAX)
		return 0; /* the card refuses such an EMM before its tag: cannot happen */
	if (at == KH_DECODER_EMM_PENDING) {
		for (unsigned i = 1; i < at; i++)
			if (d->pend[i].seq > d->pend[hi].seq)
				hi = i;
		if (d->pend[hi].seq < seq)
			return 0;
		emm_unsee(d, KH_EMM_UNIQUE, d->pend[hi].seq);
		d->st.emm_unheld++;
		at = hi;
	} else {
		d->npend++;
	}
	d->pend[at].seq = seq;
	d->pend[at].len = n;
	memcpy(d->pend[at].sec, sec, n);
	d->st.emm_pending = d->npend;
	return 1;
}

/* The card took an EMM: its counters (perhaps its group, its rights) moved. */
static void emm_taken(struct kh_decoder *d, unsigned type, uint32_t addr, uint32_t seq)
{
	d->st.emm_accepted++;
	kh_log_info("decoder.emm", "type=%u addr=%08X seq=%u", type, addr, seq);
	d->have_status = 0;
	if (d->cfg.changed)
		d->cfg.changed(d->cfg.ctx, KH_DECODER_CHANGED_EMM);
	forget_refused_all(d); /* rights may have arrived: show the card the ECMs it refused again */
	take_back(d);
}

/*
 * After the card accepted an EMM: pass the held ones that now follow its last unique seq, in
 * order, and forget those it has. One that the card refuses now is let through the carousel
 * again and ends the round.
 */
static void pending_retry(struct kh_decoder *d)
{
	struct kh_cas_status st;
	uint32_t last, seq;
	kh_err r;

	if (d->npend == 0)
		return;
	if (d->pend_ua != d->cfg.cas->card_ua) {
		pending_reset(d);
		return;
	}
	if ((r = kh_host_cas_status(d->cfg.cas, &st)) != KH_OK) {
		kh_log_info("decoder.status_failed", "err=%s", kh_err_name(r));
		return;
	}
	last = st.seq[KH_EMM_UNIQUE];
	for (;;) {
		unsigned next = KH_DECODER_EMM_PENDING;
		for (unsigned i = 0; i < d->npend;) {
			if (d->pend[i].seq <= last) {
				pending_drop(d, i); /* applied meanwhile: a replay now */
				continue;
			}
			i++;
		}
		for (unsigned i = 0; i < d->npend; i++)
			if (d->pend[i].seq == last + 1)
				next = i;
		if (next == KH_DECODER_EMM_PENDING)
			break;
		seq = d->pend[next].seq;
		d->st.emm_passed++;
		r = kh_host_cas_emm(d->cfg.cas, d->pend[next].sec, d->pend[next].len);
		pending_drop(d, next);
		if (r != KH_OK) {
			kh_log_info("decoder.emm_refused", "type=%u addr=%08X seq=%u err=%s", KH_EMM_UNIQUE, d->pend_ua,
				    seq, kh_err_name(r));
			emm_unsee(d, KH_EMM_UNIQUE, seq);
			break;
		}
		emm_taken(d, KH_EMM_UNIQUE, d->pend_ua, seq);
		last = seq;
	}
	d->have_status = 0;
}

static kh_err on_emm(struct kh_decoder *d, struct prog *unused, const uint8_t *sec, size_t n)
{
	struct kh_emm_hdr h;
	kh_err r;

	(void)unused;
	if (d->cfg.flags & KH_DECODER_F_PASSIVE)
		return KH_OK;
	if ((r = kh_emm_peek(sec, n, &h)) != KH_OK || h.addr_type > KH_EMM_ALL) {
		kh_log_debug("decoder.emm_bad", "err=%s", kh_err_name(r ? r : KH_ERR_FORMAT));
		return KH_OK;
	}
	if (h.addr_type == KH_EMM_UNIQUE && (d->cfg.cas->card_ua == 0 || h.addr != d->cfg.cas->card_ua))
		return KH_OK;
	if (!d->have_status) {
		if ((r = kh_host_cas_status(d->cfg.cas, &d->status)) != KH_OK) {
			kh_log_info("decoder.status_failed", "err=%s", kh_err_name(r));
			return KH_OK;
		}
		d->have_status = 1;
	}
	if (h.addr_type == KH_EMM_GROUP && (!d->status.has_group || h.addr != d->status.group))
		return KH_OK;
	if (h.seq <= d->status.seq[h.addr_type] || emm_seen(d, h.addr_type, h.seq))
		return KH_OK;
	if (h.addr_type == KH_EMM_UNIQUE && d->pend_ua == h.addr && pending_has(d, h.seq))
		return KH_OK;
	d->st.emm_passed++;
	r = kh_host_cas_emm(d->cfg.cas, sec, n);
	if (r == KH_ERR_EMM_GAP && h.addr_type == KH_EMM_UNIQUE) {
		/* Genuine, but an earlier one is missing (withheld, or later in the carousel): hold it. */
		int held = pending_put(d, h.seq, sec, n);
		d->st.emm_gaps++;
		if (held)
			emm_see(d, h.addr_type, h.seq);
		else
			d->st.emm_unheld++;
		kh_log_info("decoder.emm_gap", "addr=%08X seq=%u card_last=%u held=%s pending=%u", h.addr, h.seq,
			    d->status.seq[KH_EMM_UNIQUE], held ? "yes" : "no", d->npend);
		return KH_OK;
	}
	/*
	 * Only what the card judged genuine counts as seen: taken, a replay, or refused for its
	 * commands. A forgery (AUTH, SIGNATURE, UNKNOWN_SIGNER, a revoked or lapsed signer) or an EMM
	 * the card has no key for yet must not hide the genuine EMM of that number.
	 */
	if (r == KH_OK || r == KH_ERR_EMM_REPLAY ||
	    (r != KH_ERR_AUTH && r != KH_ERR_SIGNATURE && r != KH_ERR_UNKNOWN_SIGNER && r != KH_ERR_NO_KEY &&
	     r != KH_ERR_REVOKED && r != KH_ERR_CERT_EXPIRED && r != KH_ERR_NOT_ADDRESSED))
		emm_see(d, h.addr_type, h.seq);
	if (r != KH_OK) {
		kh_log_info("decoder.emm_refused", "type=%u addr=%08X seq=%u err=%s", h.addr_type, h.addr, h.seq,
			    kh_err_name(r));
		return KH_OK;
	}
	emm_taken(d, h.addr_type, h.addr, h.seq);
	pending_retry(d);
	return KH_OK;
}

/* ---- tables ---- */

typedef kh_err (*section_fn)(struct kh_decoder *d, struct prog *g, const uint8_t *sec, size_t n);

/* Push one packet into a, and hand each complete section to fn (with g). */
static kh_err sections(struct kh_decoder *d, struct prog *g, struct kh_ts_asm *a, const uint8_t *p, section_fn fn)
{
	size_t len;
	kh_err r;
	int k;

	if (kh_ts_asm_push(a, p, PKT) != KH_OK)
		return KH_OK;
	while ((k = kh_ts_asm_pop(a, d->sec, sizeof d->sec, &len)) != 0) {
		if (k < 0) {
			if (k == KH_ERR_BUF)
				break;
			continue;
		}
		if ((r = fn(d, g, d->sec, len)) != KH_OK)
			return r;
	}
	return KH_OK;
}

static void set_pid(struct kh_ts_asm *a, uint16_t *cur, uint16_t pid, size_t max)
{
	if (*cur == pid)
		return;
	*cur = pid;
	if (pid != PID_NONE && kh_ts_asm_init(a, pid, max) != KH_OK)
		*cur = PID_NONE;
}

/* No programme named: every programme of the PAT is a candidate. */
static int auto_mode(const struct kh_decoder *d)
{
	return d->cfg.nprograms == 0 && d->cfg.program == 0;
}

static int is_named(const struct kh_decoder *d, uint16_t number)
{
	if (d->cfg.nprograms == 0)
		return d->cfg.program == number;
	for (unsigned i = 0; i < d->cfg.nprograms; i++)
		if (d->cfg.programs[i] == number)
			return 1;
	return 0;
}

static struct prog *find_prog(struct kh_decoder *d, uint16_t number)
{
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		if (d->prog[j].used && d->prog[j].number == number)
			return &d->prog[j];
	return NULL;
}

/* Listed in the PAT written: chosen, not left out, and known to be played. */
static int played(const struct prog *g)
{
	return g->used && !g->left && g->in;
}

/* g is known to be played now: listed in the PAT from here on (a PAT is written at once). */
static kh_err decide_in(struct kh_decoder *d, struct prog *g, const char *why)
{
	if (g->in || g->left)
		return KH_OK;
	g->in = 1;
	d->pat_gen++;
	kh_log_info("decoder.program_in", "program=%u why=%s", g->number, why);
	return d->have_pat ? write_pat(d) : KH_OK;
}

/* The first programme chosen and not left out (stream time, the stats, the latest ECM), or NULL. */
static const struct prog *first(const struct kh_decoder *d)
{
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		if (d->prog[j].used && !d->prog[j].left)
			return &d->prog[j];
	return NULL;
}

/* Stream time follows the first programme played's PCR; another PCR PID starts it anew. */
static void clock_follow(struct kh_decoder *d)
{
	const struct prog *g = first(d);
	uint16_t pid = g ? g->pcr_pid : PID_NONE;

	if (pid != d->clock_pid)
		d->have_pcr = 0;
	d->clock_pid = pid;
}

/* Stop following g: its keys wiped, its PIDs free. */
static kh_err retire(struct kh_decoder *d, struct prog *g)
{
	kh_err r = flush(d);
	uint8_t me = (uint8_t)(idx(d, g) + 1);

	kh_log_info("decoder.program_gone", "program=%u", g->number);
	for (unsigned pid = 0; pid < NPIDS; pid++)
		if (d->owner[pid] == me) {
			d->owner[pid] = 0;
			d->slot_of[pid] = 0;
		}
	kh_scr_free(g->scr);
	kh_wipe(g, sizeof *g);
	return r;
}

/* Follow programme number (PMT on pmt_pid); not played unless chosen (left 1). */
static void start(struct kh_decoder *d, uint16_t number, uint16_t pmt_pid, int chosen)
{
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
		struct prog *g = &d->prog[j];
		if (g->used)
			continue;
		memset(g, 0, sizeof *g);
		g->used = 1;
		g->left = chosen ? 0 : LEFT_CHOSEN;
		g->named = !auto_mode(d) && chosen;
		g->in = chosen && (g->named || !d->multi);
		g->number = number;
		g->pmt_pid = g->ecm_pid = g->pcr_pid = PID_NONE;
		set_pid(&g->pmt_asm, &g->pmt_pid, pmt_pid, KH_TS_PSI_MAX);
		d->role[pmt_pid] = KH_DECODER_ROLE_PSI;
		kh_log_info("decoder.program", "program=%u pmt_pid=%u played=%s", number, pmt_pid, chosen ? "yes" : "no");
		return;
	}
	kh_log_info("decoder.program_unfollowed", "program=%u", number);
}

/*
 * Is the i-th programme of the PAT played? Named ones; without names all of them, or only the
 * first with PASSIVE or a ladder session (the decoder module holds one pair of keys).
 */
static int chosen(const struct kh_decoder *d, uint16_t number, unsigned nth)
{
	if (!auto_mode(d))
		return is_named(d, number);
	if ((d->cfg.flags & KH_DECODER_F_PASSIVE) || ladder(d))
		return nth == 0;
	return 1;
}

static int in_pat(const struct kh_ts_pat *pat, uint16_t number, uint16_t pid)
{
	for (size_t i = 0; i < pat->n; i++)
		if (pat->prog[i].program_number == number && pat->prog[i].pid == pid)
			return 1;
	return 0;
}

static kh_err on_pat(struct kh_decoder *d, struct prog *unused, const uint8_t *sec, size_t n)
{
	unsigned nth = 0, nplay = 0;
	kh_err r;

	(void)unused;
	if (kh_ts_pat_parse(sec, n, &d->pat) != KH_OK || !d->pat.current)
		return KH_OK;
	/* programmes gone from the PAT, or moved to another PMT PID: forgotten (keys and all) */
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		if (d->prog[j].used && !in_pat(&d->pat, d->prog[j].number, d->prog[j].pmt_pid) &&
		    (r = retire(d, &d->prog[j])) != KH_OK)
			return r;
	for (size_t i = 0; i < d->pat.n; i++)
		if (d->pat.prog[i].program_number != 0)
			nplay += (unsigned)chosen(d, d->pat.prog[i].program_number, nth++);
	if (nplay > 1)
		d->multi = 1;
	nth = 0;
	for (size_t i = 0; i < d->pat.n; i++) {
		uint16_t number = d->pat.prog[i].program_number;
		int c;
		if (number == 0)
			continue;
		c = chosen(d, number, nth++);
		if (!find_prog(d, number))
			start(d, number, d->pat.prog[i].pid, c);
	}
	if (nplay == 0)
		kh_log_debug("decoder.no_program", "program=%u", d->cfg.program);
	d->have_pat = 1;
	d->pat_done = 1;
	clock_follow(d);
	return KH_OK;
}

/* Every programme of the input PAT is played: its packets go out as they came. */
static int pat_whole(const struct kh_decoder *d)
{
	for (size_t i = 0; i < d->pat.n; i++) {
		const struct kh_ts_pat_prog *pp = &d->pat.prog[i];
		const struct prog *g = NULL;
		for (unsigned j = 0; j < KH_DECODER_PROGRAMS && !g; j++)
			if (d->prog[j].used && d->prog[j].number == pp->program_number)
				g = &d->prog[j];
		if (pp->program_number != 0 && (!g || !played(g)))
			return 0;
	}
	return 1;
}

/* The PAT written: the input's, with only the programmes played (and the network PID). */
static kh_err write_pat(struct kh_decoder *d)
{
	struct kh_ts_pat *o = &d->pat_out;
	size_t len, plen;
	kh_err r;

	d->pat_own = 1;
	*o = d->pat;
	o->n = 0;
	o->version = (uint8_t)((d->pat.version + 1u + d->pat_gen) & 31u);
	o->section_number = o->last_section_number = 0;
	for (size_t i = 0; i < d->pat.n; i++) {
		const struct kh_ts_pat_prog *pp = &d->pat.prog[i];
		const struct prog *g = pp->program_number ? find_prog(d, pp->program_number) : NULL;
		if (pp->program_number == 0 || (g && played(g)))
			o->prog[o->n++] = *pp;
	}
	if (kh_ts_pat_build(o, d->psi_sec, sizeof d->psi_sec, &len) != KH_OK ||
	    kh_ts_packetise(KH_TS_PID_PAT, &d->pat_cc, d->psi_sec, len, d->psi_pkts, sizeof d->psi_pkts, &plen) != KH_OK)
		return KH_OK; /* cannot happen: never larger than the PAT parsed */
	for (size_t i = 0; i < plen / PKT; i++)
		if ((r = emit(d, d->psi_pkts + i * PKT, KH_TS_PID_PAT, NULL)) != KH_OK)
			return r;
	return KH_OK;
}

/* The EMM PIDs of the CAT's CA_descriptors for our CA system, in order, distinct: how many. */
static unsigned cat_emm_pids(const struct kh_decoder *d, const struct kh_ts_cat *cat, uint16_t *pids)
{
	struct kh_ts_desc_it it;
	struct kh_ts_ca_desc ca;
	const uint8_t *body;
	uint8_t tag, blen;
	unsigned n = 0, k;

	kh_ts_desc_it_init(&it, cat->desc, cat->desc_len);
	while (n < EMM_PIDS && kh_ts_desc_next(&it, &tag, &body, &blen) == 1) {
		if (tag != KH_TS_DESC_CA || kh_ts_ca_desc_parse(body, blen, &ca) != KH_OK ||
		    ca.ca_system_id != d->cfg.ca_system_id || ca.ca_pid == KH_TS_PID_PAT || ca.ca_pid == KH_TS_PID_CAT ||
		    ca.ca_pid == KH_TS_PID_NULL)
			continue;
		for (k = 0; k < n && pids[k] != ca.ca_pid; k++)
			;
		if (k == n)
			pids[n++] = ca.ca_pid;
	}
	return n;
}

/*
 * The CAT: the EMM PIDs to follow. Usually one; a multiplex put together from several
 * scramblers may name several (one per programme's headend): EMMs are taken from each, and the
 * card still sees each EMM once (the same seq on two PIDs is one EMM).
 */
static kh_err on_cat(struct kh_decoder *d, struct prog *unused, const uint8_t *sec, size_t n)
{
	struct kh_ts_cat cat;
	uint16_t pids[EMM_PIDS];
	unsigned k;

	(void)unused;
	if (kh_ts_cat_parse(sec, n, &cat) != KH_OK || !cat.current)
		return KH_OK;
	if ((k = cat_emm_pids(d, &cat, pids)) == 0)
		return KH_OK;
	if (k != d->nemm || memcmp(pids, d->emm_pid, k * sizeof pids[0]) != 0) {
		kh_log_info("decoder.emm_pid", "pid=%u pids=%u", pids[0], k);
		memset(d->emm_n, 0, sizeof d->emm_n);
	}
	for (unsigned i = 0; i < k; i++) {
		set_pid(&d->emm_asm[i], &d->emm_pid[i], pids[i], KH_TS_PRIVATE_MAX);
		if (d->emm_pid[i] != PID_NONE)
			d->role[d->emm_pid[i]] = KH_DECODER_ROLE_EMM;
	}
	for (unsigned i = k; i < EMM_PIDS; i++)
		d->emm_pid[i] = PID_NONE;
	d->nemm = k;
	return KH_OK;
}

/* Copy a descriptor loop without its CA and scrambling descriptors to out + *off. */
static void strip(const uint8_t *loop, size_t len, uint8_t *out, size_t cap, size_t *off)
{
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, blen;

	kh_ts_desc_it_init(&it, loop, len);
	while (kh_ts_desc_next(&it, &tag, &body, &blen) == 1) {
		if (tag == KH_TS_DESC_CA || tag == KH_TS_DESC_SCRAMBLING)
			continue;
		if (*off + 2u + blen > cap)
			return;
		out[*off] = tag;
		out[*off + 1] = blen;
		memcpy(out + *off + 2, body, blen);
		*off += 2u + blen;
	}
}

static uint8_t role_of_type(uint8_t stream_type)
{
	switch (stream_type) {
	case 0x01: case 0x02: case 0x10: case 0x1B: case 0x24: case 0x42: case 0xEA:
		return KH_DECODER_ROLE_VIDEO;
	case 0x03: case 0x04: case 0x0F: case 0x11: case 0x81: case 0x87:
		return KH_DECODER_ROLE_AUDIO;
	default: return KH_DECODER_ROLE_DATA;
	}
}

/* pid is a component of g: g owns it unless another programme played named it first. */
static void claim(struct kh_decoder *d, struct prog *g, uint16_t pid, uint8_t role)
{
	const struct prog *o = owner(d, pid);
	uint8_t me = (uint8_t)(idx(d, g) + 1);

	set_comp(g, pid);
	if (o && o != g)
		return;
	if (d->owner[pid] != me) {
		d->owner[pid] = me;
		d->slot_of[pid] = 0;
	}
	if (!d->slot_of[pid] && g->nslots < KH_TS_PMT_MAX_ES + 1) {
		g->per[g->nslots].known = 0;
		d->slot_of[pid] = (uint8_t)++g->nslots;
	}
	d->role[pid] = role;
}

/* The clear PMT of g: same program, no CA or scrambling descriptors, next version; written. */
static kh_err write_pmt(struct kh_decoder *d, struct prog *g)
{
	struct kh_ts_pmt *in = &d->pmt, *o = &d->pmt_out;
	size_t off = 0, len, plen;
	kh_err r;

	*o = *in;
	o->version = (uint8_t)((in->version + 1) & 31);
	o->desc = d->pmt_desc;
	strip(in->desc, in->desc_len, d->pmt_desc, sizeof d->pmt_desc, &off);
	o->desc_len = off;
	for (size_t i = 0; i < in->n; i++) {
		size_t start = off;
		strip(in->es[i].desc, in->es[i].desc_len, d->pmt_desc, sizeof d->pmt_desc, &off);
		o->es[i].desc = d->pmt_desc + start;
		o->es[i].desc_len = off - start;
	}
	if (kh_ts_pmt_build(o, d->psi_sec, sizeof d->psi_sec, &len) != KH_OK ||
	    kh_ts_packetise(g->pmt_pid, &g->pmt_cc, d->psi_sec, len, d->psi_pkts, sizeof d->psi_pkts, &plen) != KH_OK)
		return KH_OK; /* cannot happen: the clear PMT is never larger than the one parsed */
	for (size_t i = 0; i < plen / PKT; i++)
		if ((r = emit(d, d->psi_pkts + i * PKT, g->pmt_pid, NULL)) != KH_OK)
			return r;
	return KH_OK;
}

static kh_err on_pmt(struct kh_decoder *d, struct prog *g, const uint8_t *sec, size_t n)
{
	struct kh_ts_pmt *in = &d->pmt;
	struct kh_ts_ca_desc ca;
	uint16_t ecm_pid = PID_NONE;
	kh_err r;

	if (kh_ts_pmt_parse(sec, n, in) != KH_OK || !in->current || in->program_number != g->number)
		return KH_OK;
	memset(g->comp, 0, sizeof g->comp);
	for (size_t i = 0; i < in->n; i++)
		claim(d, g, in->es[i].pid, role_of_type(in->es[i].stream_type));
	if (in->pcr_pid != KH_TS_PID_NULL && !is_comp(g, in->pcr_pid))
		claim(d, g, in->pcr_pid, KH_DECODER_ROLE_PCR);
	g->pcr_pid = in->pcr_pid;
	if (kh_ts_ca_desc_find(in->desc, in->desc_len, d->cfg.ca_system_id, &ca) == KH_OK &&
	    ca.ca_pid != g->pmt_pid && ca.ca_pid > KH_TS_PID_CAT && ca.ca_pid != KH_TS_PID_NULL)
		ecm_pid = ca.ca_pid;
	if (ecm_pid != g->ecm_pid) {
		kh_log_info("decoder.ecm_pid", "program=%u pid=%u", g->number, ecm_pid);
		g->have_last = 0;
		forget_refused(g);
	}
	set_pid(&g->ecm_asm, &g->ecm_pid, ecm_pid, KH_TS_PRIVATE_MAX);
	if (g->ecm_pid != PID_NONE)
		d->role[g->ecm_pid] = KH_DECODER_ROLE_ECM;
	clock_follow(d);
	if (g->ecm_pid == PID_NONE && (r = decide_in(d, g, "clear")) != KH_OK)
		return r;
	return played(g) ? write_pmt(d, g) : KH_OK;
}

/* ---- stream time ---- */

/* A PCR of the first programme: advance the clock and tell the period when it is due. */
static void on_pcr(struct kh_decoder *d, const struct kh_ts_pkt *p)
{
	const uint8_t *a = p->af;
	uint64_t base, pcr, diff;

	base = (uint64_t)a[1] << 25 | (uint64_t)a[2] << 17 | (uint64_t)a[3] << 9 | (uint64_t)a[4] << 1 | a[5] >> 7;
	pcr = base * 300 + (((uint64_t)a[5] & 1) << 8 | a[6]);
	if (!d->have_pcr) {
		d->have_pcr = 1;
		d->last_pcr = pcr;
		if (d->next_tick < d->clock + d->every)
			d->next_tick = d->clock + d->every;
		return;
	}
	diff = (pcr + PCR_MOD - d->last_pcr) % PCR_MOD;
	d->last_pcr = pcr;
	if ((a[0] & 0x80) || diff > PCR_JUMP_MAX)
		return;
	d->clock += diff;
	if (d->every && d->clock >= d->next_tick) {
		d->next_tick += d->every;
		if (d->next_tick <= d->clock) /* PCRs further apart than the period: one tick */
			d->next_tick = d->clock + d->every;
		d->st.periods++;
		kh_log_debug("decoder.period", "stream_ms=%llu", (unsigned long long)(d->clock / (PCR_HZ / 1000)));
		if (d->cfg.changed)
			d->cfg.changed(d->cfg.ctx, KH_DECODER_CHANGED_PERIOD);
	}
}

/* ---- packets ---- */

/* A packet of g's PMT or ECM PID. */
static kh_err prog_psi(struct kh_decoder *d, struct prog *g, const uint8_t *p, uint16_t pid)
{
	if (pid == g->pmt_pid) {
		if (g->left)
			d->st.dropped_left++;
		else
			d->st.dropped_ca++;
		return sections(d, g, &g->pmt_asm, p, on_pmt);
	}
	d->st.dropped_ca++;
	return sections(d, g, &g->ecm_asm, p, on_ecm);
}

static kh_err on_pat_pkt(struct kh_decoder *d, const uint8_t *p)
{
	kh_err r;

	d->pat_done = 0;
	if ((r = sections(d, NULL, &d->pat_asm, p, on_pat)) != KH_OK)
		return r;
	if (!d->have_pat || (!d->pat_own && pat_whole(d)))
		return pass(d, p, KH_TS_PID_PAT, NULL); /* as it came (no PAT understood yet: as today) */
	d->st.dropped_ca++;
	return d->pat_done ? write_pat(d) : KH_OK;
}

static kh_err route(struct kh_decoder *d, const uint8_t *p, const struct kh_ts_pkt *pk, uint16_t *number)
{
	uint16_t pid = pk->pid;
	struct prog *g;
	kh_err r;
	int ok;

	if (pid == d->clock_pid && pk->af_len >= 7 && (pk->af[0] & 0x10))
		on_pcr(d, pk);
	if (pid == KH_TS_PID_PAT)
		return on_pat_pkt(d, p);
	if (pid == KH_TS_PID_CAT) {
		d->st.dropped_ca++;
		return sections(d, NULL, &d->cat_asm, p, on_cat);
	}
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++) {
		g = &d->prog[j];
		if (g->used && (pid == g->pmt_pid || pid == g->ecm_pid)) {
			*number = g->number;
			return prog_psi(d, g, p, pid);
		}
	}
	for (unsigned i = 0; i < d->nemm; i++)
		if (pid == d->emm_pid[i]) {
			d->st.dropped_ca++;
			return sections(d, NULL, &d->emm_asm[i], p, on_emm);
		}
	if ((g = owner(d, pid)) != NULL) {
		*number = g->number;
		if (g->left) {
			d->st.dropped_left++; /* a programme not played: none of its packets */
			return KH_OK;
		}
	}
	if (pk->scrambling == KH_TS_SC_CLEAR)
		return pass(d, p, pid, NULL);
	if (pk->scrambling == 1 || !g) {
		d->st.dropped_bad++; /* TSC 01, or scrambled outside the programmes: no key for it */
		return KH_OK;
	}
	if (d->cfg.flags & KH_DECODER_F_PASSIVE) {
		d->st.dropped_nokey++;
		return KH_OK;
	}
	if ((r = period_key(d, g, pid, pk->scrambling == KH_TS_SC_ODD ? KH_SCR_ODD : KH_SCR_EVEN, &ok)) != KH_OK)
		return r;
	if (!ok) {
		keyless(d, g);
		return KH_OK;
	}
	return pass(d, p, pid, g);
}

static kh_err one(struct kh_decoder *d, const uint8_t *p)
{
	struct kh_decoder_pid_stat *w;
	struct kh_ts_pkt pk;
	uint16_t number = 0;
	kh_err r;

	d->st.pkts_in++;
	if (kh_ts_parse(p, PKT, &pk) != KH_OK) {
		d->st.dropped_bad++;
		return KH_OK;
	}
	if (!(w = row(d, pk.pid)))
		d->st.pkts_uncounted++;
	d->passed = 0;
	r = route(d, p, &pk, &number);
	if (w) {
		w->in++;
		w->dropped += !d->passed;
		w->role = d->role[pk.pid];
		if (number)
			w->program = number;
	}
	return r;
}

kh_err kh_decoder_feed(struct kh_decoder *d, const uint8_t *pkts, size_t n)
{
	kh_err r;

	if (d->err)
		return d->err;
	if (n && !pkts)
		return KH_ERR_INVAL;
	for (size_t i = 0; i < n; i++)
		if ((r = one(d, pkts + i * PKT)) != KH_OK) {
			if (!d->err)
				d->err = r;
			return r;
		}
	return KH_OK;
}

/* ---- the packet cadence (kh_decoder_write) ---- */

/*
 * Take the packets of d->in that can be judged. In sync, a packet is taken when the byte after
 * it is a sync byte too (or, at the end of the stream, when nothing follows); otherwise the
 * packet in doubt is dropped and the cadence looked for again: three sync bytes 188 apart (at the
 * end of the stream, two whole packets that end it). What is passed over is counted. The bytes
 * that cannot be judged yet stay at the front of d->in.
 */
static kh_err drain(struct kh_decoder *d, int final)
{
	size_t pos = 0, len = d->inlen, i;
	kh_err r = KH_OK;
	int found;

	while (pos < len) {
		if (d->locked) {
			if (len - pos < PKT + (final ? 0u : 1u))
				break;
			if (d->in[pos] == SYNC && (len - pos == PKT || d->in[pos + PKT] == SYNC)) {
				if ((r = one(d, d->in + pos)) != KH_OK)
					break;
				pos += PKT;
				continue;
			}
			d->locked = 0;
			d->st.sync_lost++;
			kh_log_info("decoder.sync_lost", "packet=%llu", (unsigned long long)d->st.pkts_in);
			continue; /* the packet at pos cannot be the start of three: looked for after it */
		}
		found = 0;
		for (i = pos; i + 2 * PKT < len && !found; i++)
			found = d->in[i] == SYNC && d->in[i + PKT] == SYNC && d->in[i + 2 * PKT] == SYNC;
		if (found) {
			i--;
		} else if (final && len - pos >= 2 * PKT) {
			i = len - 2 * PKT; /* the end of the stream: two whole packets, nothing after */
			found = d->in[i] == SYNC && d->in[i + PKT] == SYNC;
		}
		if (found) {
			d->st.skipped_bytes += i - pos;
			pos = i;
			d->locked = 1;
			continue;
		}
		/* not found: keep the bytes a later call could still confirm (all of them at the end) */
		i = final ? len : len - pos > 2 * PKT ? len - 2 * PKT : pos;
		d->st.skipped_bytes += i - pos;
		pos = i;
		break;
	}
	if (final && r == KH_OK) { /* a cut last packet, or a tail that never was in sync */
		d->st.skipped_bytes += len - pos;
		pos = len;
	}
	memmove(d->in, d->in + pos, len - pos);
	d->inlen = len - pos;
	if (r != KH_OK && !d->err)
		d->err = r;
	return r;
}

kh_err kh_decoder_write(struct kh_decoder *d, const uint8_t *buf, size_t n)
{
	kh_err r;

	if (d->err)
		return d->err;
	if (n && !buf)
		return KH_ERR_INVAL;
	while (n) {
		size_t k = INBUF - d->inlen < n ? INBUF - d->inlen : n;
		memcpy(d->in + d->inlen, buf, k);
		d->inlen += k;
		buf += k;
		n -= k;
		if ((r = drain(d, 0)) != KH_OK)
			return r;
	}
	return KH_OK;
}

kh_err kh_decoder_finish(struct kh_decoder *d)
{
	kh_err r;

	if (d->err)
		return d->err;
	if (d->inlen && (r = drain(d, 1)) != KH_OK)
		return r;
	return flush(d);
}

kh_err kh_decoder_new(const struct kh_decoder_config *cfg, struct kh_decoder **out)
{
	struct kh_decoder *d;

	if (!cfg || !out || !cfg->cas || (cfg->flags & ~(KH_DECODER_F_BUY | KH_DECODER_F_PASSIVE)) ||
	    cfg->nprograms > KH_DECODER_PROGRAMS || (cfg->nprograms > 1 && (cfg->cas->flags & KH_HOST_CAS_LADDER)))
		return KH_ERR_INVAL;
	for (unsigned i = 0; i < cfg->nprograms; i++)
		if (cfg->programs[i] == 0)
			return KH_ERR_INVAL;
	if (!(d = calloc(1, sizeof *d)))
		return KH_ERR_NOMEM;
	d->cfg = *cfg;
	if (!d->cfg.ca_system_id)
		d->cfg.ca_system_id = KH_DECODER_CA_SYSTEM_ID;
	d->clock_pid = PID_NONE;
	for (unsigned i = 0; i < EMM_PIDS; i++)
		d->emm_pid[i] = PID_NONE;
	d->multi = cfg->nprograms > 1;
	d->role[KH_TS_PID_PAT] = d->role[KH_TS_PID_CAT] = KH_DECODER_ROLE_PSI;
	if (!(cfg->flags & KH_DECODER_F_PASSIVE))
		d->every = (uint64_t)cfg->export_every_ms * (PCR_HZ / 1000);
	d->card_ua = cfg->cas->connected ? cfg->cas->card_ua : 0;
	if (kh_ts_asm_init(&d->pat_asm, KH_TS_PID_PAT, KH_TS_PSI_MAX) != KH_OK ||
	    kh_ts_asm_init(&d->cat_asm, KH_TS_PID_CAT, KH_TS_PSI_MAX) != KH_OK) {
		free(d);
		return KH_ERR_INTERNAL;
	}
	*out = d;
	return KH_OK;
}

void kh_decoder_free(struct kh_decoder *d)
{
	if (!d)
		return;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		kh_scr_free(d->prog[j].scr);
	/* The batch holds clear content, the ECMs are public: only the keys are secret, and
	 * kh_scr_free wiped them. Wipe the rest anyway, it is cheap next to a stream. */
	kh_wipe(d, sizeof *d);
	free(d);
}

void kh_decoder_get_stats(const struct kh_decoder *d, struct kh_decoder_stats *st)
{
	const struct prog *g = first(d);

	*st = d->st;
	st->programs = 0;
	for (unsigned j = 0; j < KH_DECODER_PROGRAMS; j++)
		st->programs += (uint32_t)played(&d->prog[j]);
	st->program = g ? g->number : PID_NONE;
	st->pmt_pid = g ? g->pmt_pid : PID_NONE;
	st->ecm_pid = g ? g->ecm_pid : PID_NONE;
	st->emm_pid = d->emm_pid[0];
	st->stream_ms = d->clock / (PCR_HZ / 1000);
}

size_t kh_decoder_pid_stats(const struct kh_decoder *d, struct kh_decoder_pid_stat *out, size_t cap)
{
	for (size_t i = 0; i < d->nrows && i < cap; i++)
		out[i] = d->rows[i];
	return d->nrows;
}

const char *kh_decoder_role_name(unsigned role)
{
	static const char *const names[] = {"other", "PSI", "ECM", "EMM", "video", "audio", "data", "PCR"};

	return role < sizeof names / sizeof names[0] ? names[role] : "?";
}

int kh_decoder_last_ecm(const struct kh_decoder *d, uint8_t *buf, size_t cap, size_t *len)
{
	const struct prog *g = first(d);

	if (!g || g->ecm_len == 0 || cap < g->ecm_len)
		return 0;
	memcpy(buf, g->ecm, g->ecm_len);
	*len = g->ecm_len;
	return 1;
}
