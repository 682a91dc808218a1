/*
 * The scrambler's input: finding the 188-byte packets in a byte stream that may be damaged
 * (garbage in front, a byte lost or added, a final packet cut short), and the census of the PIDs
 * an input uses, from which `keyhole headend scramble` chooses ECM and EMM PIDs that collide with
 * nothing (ISO/IEC 13818-1 §2.4.3.2 for the sync byte, §2.4.4 for the PAT, PMT and CAT).
 * docs/internals/headend.md "Input".
 *
 * No I/O: bytes in, packets (positions) and PIDs out.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/headend.h"
#include "keyhole/ts.h"

#define PL KH_TS_PACKET_LEN
#define SYNC 0x47

/* ---- finding packets ---- */

void kh_headend_sync_init(struct kh_headend_sync *s)
{
	memset(s, 0, sizeof *s);
}

static void skip(struct kh_headend_sync *s, size_t n)
{
	if (!n)
		return;
	if (!s->in_gap)
		s->gaps++;
	s->in_gap = 1;
	s->skipped += n;
}

/* The first q from which three sync bytes stand a packet apart, or len when none (yet). */
static size_t search(const uint8_t *buf, size_t len)
{
	for (size_t q = 0; q + 2 * PL < len; q++)
		if (buf[q] == SYNC && buf[q + PL] == SYNC && buf[q + 2 * PL] == SYNC)
			return q;
	return len;
}

/* At the end of the input: the first q from which at least two whole packets, and every whole
 * packet up to the end, begin with a sync byte; len when none. */
static size_t search_end(const uint8_t *buf, size_t len)
{
	for (size_t q = 0; q + 2 * PL <= len; q++) {
		size_t k = q;
		while (k + PL <= len && buf[k] == SYNC)
			k += PL;
		if (k + PL > len)
			return q;
	}
	return len;
}

size_t kh_headend_sync_find(struct kh_headend_sync *s, const uint8_t *buf, size_t len, int eof, size_t *off,
			    size_t *n)
{
	size_t p = 0, i, cnt = 0, used;

	*off = 0;
	*n = 0;
	if (!s->locked) {
		size_t q = search(buf, len);
		if (q == len && eof)
			q = search_end(buf, len);
		if (q == len) {
			/* nothing yet: keep what could still begin a run of three */
			size_t keep = eof ? 0 : len < 2 * PL ? len : 2 * PL;
			skip(s, len - keep);
			return len - keep;
		}
		skip(s, q);
		p = q;
		s->locked = 1;
	}
	/* in step at p: buf[p] is a sync byte; a packet goes out once the next one's is seen */
	for (i = p; i + PL <= len; i += PL) {
		if (i + PL < len) {
			if (buf[i + PL] != SYNC) {
				s->locked = 0; /* the packet at i lost or gained bytes: sought again from it */
				break;
			}
		} else if (!eof) {
			break;
		}
		cnt++;
	}
	used = p + cnt * PL;
	*off = p;
	*n = cnt;
	s->packets += cnt;
	if (cnt)
		s->in_gap = 0;
	if (s->locked && eof && used < len) { /* in step up to a tail that begins with a sync byte */
		s->cut += len - used;
		s->locked = 0;
		return len;
	}
	if (used == 0 && !s->locked)
		return kh_headend_sync_find(s, buf, len, eof, off, n); /* lost at once: seek from here */
	return used;
}

/* ---- the census of PIDs ---- */

#define MAX_PMT_PIDS 512

struct pmt_slot {
	uint16_t pid;
	struct kh_ts_asm a;
};

struct kh_headend_census {
	uint8_t use[KH_TS_PID_MAX + 1];
	uint16_t prog[KH_TS_PID_MAX + 1];
	uint8_t listed[65536 / 8], seen[65536 / 8]; /* programme numbers */
	size_t nlisted, nseen;                      /* nseen: listed ones whose PMT came */
	int have_pat;
	struct kh_ts_asm pat, cat;
	struct pmt_slot *pmt;
	size_t npmt;
	uint8_t sec[KH_TS_PSI_MAX];
	struct kh_ts_pat pt;
	struct kh_ts_pmt pm;
	struct kh_ts_cat ct;
};

kh_err kh_headend_census_new(struct kh_headend_census **out)
{
	struct kh_headend_census *c;
	kh_err r;

	if (!out)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh_ts_asm_init(&c->pat, KH_TS_PID_PAT, KH_TS_PSI_MAX)) != KH_OK ||
	    (r = kh_ts_asm_init(&c->cat, KH_TS_PID_CAT, KH_TS_PSI_MAX)) != KH_OK) {
		free(c);
		return r;
	}
	*out = c;
	return KH_OK;
}

void kh_headend_census_free(struct kh_headend_census *c)
{
	if (!c)
		return;
	free(c->pmt);
	free(c);
}

static int bit(const uint8_t *set, uint16_t i)
{
	return set[i >> 3] >> (i & 7) & 1;
}

static void set_bit(uint8_t *set, uint16_t i)
{
	set[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static void mark(struct kh_headend_census *c, uint16_t pid, enum kh_headend_pid_use u, uint16_t prog)
{
	if (pid > KH_TS_PID_MAX || (uint8_t)u <= c->use[pid])
		return;
	c->use[pid] = (uint8_t)u;
	c->prog[pid] = prog;
}

/* Every CA descriptor of a loop names a PID another CA system uses (its ECMs or EMMs). */
static void mark_ca(struct kh_headend_census *c, const uint8_t *loop, size_t len, uint16_t prog)
{
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, dl;

	kh_ts_desc_it_init(&it, loop, len);
	while (kh_ts_desc_next(&it, &tag, &body, &dl) == 1) {
		struct kh_ts_ca_desc ca;
		if (tag == KH_TS_DESC_CA && kh_ts_ca_desc_parse(body, dl, &ca) == KH_OK)
			mark(c, ca.ca_pid, KH_HEADEND_PID_CA, prog);
	}
}

static void on_pat(struct kh_headend_census *c, const uint8_t *sec, size_t n)
{
	if (kh_ts_pat_parse(sec, n, &c->pt) != KH_OK)
		return;
	c->have_pat = 1;
	for (size_t i = 0; i < c->pt.n; i++) {
		uint16_t num = c->pt.prog[i].program_number, pid = c->pt.prog[i].pid;
		size_t j;
		if (num == 0) {
			mark(c, pid, KH_HEADEND_PID_NIT, 0);
			continue;
		}
		mark(c, pid, KH_HEADEND_PID_PMT, num);
		if (!bit(c->listed, num)) {
			set_bit(c->listed, num);
			c->nlisted++;
			if (bit(c->seen, num))
				c->nseen++;
		}
		for (j = 0; j < c->npmt && c->pmt[j].pid != pid; j++)
			;
		if (j == c->npmt && c->npmt < MAX_PMT_PIDS && pid >= 0x0010 && pid < KH_TS_PID_NULL) {
			struct pmt_slot *q = realloc(c->pmt, (c->npmt + 1) * sizeof *q);
			if (!q)
				continue; /* a census is a best effort: the scrambler checks its own PMT */
			c->pmt = q;
			if (kh_ts_asm_init(&q[c->npmt].a, pid, KH_TS_PSI_MAX) == KH_OK) {
				q[c->npmt].pid = pid;
				c->npmt++;
			}
		}
	}
}

static void on_pmt(struct kh_headend_census *c, const uint8_t *sec, size_t n)
{
	struct kh_ts_pmt *m = &c->pm;

	if (kh_ts_pmt_parse(sec, n, m) != KH_OK)
		return;
	if (!bit(c->seen, m->program_number)) {
		set_bit(c->seen, m->program_number);
		if (bit(c->listed, m->program_number))
			c->nseen++;
	}
	if (m->pcr_pid != KH_TS_PID_NULL)
		mark(c, m->pcr_pid, KH_HEADEND_PID_PCR, m->program_number);
	mark_ca(c, m->desc, m->desc_len, m->program_number);
	for (size_t i = 0; i < m->n; i++) {
		mark(c, m->es[i].pid, KH_HEADEND_PID_COMPONENT, m->program_number);
		mark_ca(c, m->es[i].desc, m->es[i].desc_len, m->program_number);
	}
}

static void on_cat(struct kh_headend_census *c, const uint8_t *sec, size_t n)
{
	if (kh_ts_cat_parse(sec, n, &c->ct) == KH_OK)
		mark_ca(c, c->ct.desc, c->ct.desc_len, 0);
}

static void assemble(struct kh_headend_census *c, struct kh_ts_asm *a, const uint8_t *pkt,
		     void (*fn)(struct kh_headend_census *, const uint8_t *, size_t))
{
	size_t n;
	int got;

	if (kh_ts_asm_push(a, pkt, PL) != KH_OK)
		return;
	while ((got = kh_ts_asm_pop(a, c->sec, sizeof c->sec, &n)) != 0)
		if (got == 1 && kh_ts_section_check(c->sec, n) == KH_OK)
			fn(c, c->sec, n);
}

void kh_headend_census_feed(struct kh_headend_census *c, const uint8_t *pkts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *pkt = pkts + i * PL;
		struct kh_ts_pkt p;

		if (kh_ts_parse(pkt, PL, &p) != KH_OK)
			continue;
		if (p.pid != KH_TS_PID_NULL)
			mark(c, p.pid, KH_HEADEND_PID_CARRIED, 0);
		if (p.pid == KH_TS_PID_PAT) {
			assemble(c, &c->pat, pkt, on_pat);
		} else if (p.pid == KH_TS_PID_CAT) {
			assemble(c, &c->cat, pkt, on_cat);
		} else {
			for (size_t j = 0; j < c->npmt; j++)
				if (c->pmt[j].pid == p.pid)
					assemble(c, &c->pmt[j].a, pkt, on_pmt);
		}
	}
}

int kh_headend_census_complete(const struct kh_headend_census *c)
{
	return c->have_pat && c->nseen == c->nlisted;
}

enum kh_headend_pid_use kh_headend_census_use(const struct kh_headend_census *c, uint16_t pid, uint16_t *program)
{
	if (program)
		*program = pid <= KH_TS_PID_MAX ? c->prog[pid] : 0;
	return pid <= KH_TS_PID_MAX ? (enum kh_headend_pid_use)c->use[pid] : KH_HEADEND_PID_FREE;
}

const char *kh_headend_pid_use_name(enum kh_headend_pid_use u)
{
	switch (u) {
	case KH_HEADEND_PID_CARRIED: return "it carries packets";
	case KH_HEADEND_PID_CA: return "a CA descriptor names it";
	case KH_HEADEND_PID_PCR: return "the PCR PID";
	case KH_HEADEND_PID_COMPONENT: return "a component";
	case KH_HEADEND_PID_NIT: return "the network PID of the PAT";
	case KH_HEADEND_PID_PMT: return "the PMT PID";
	case KH_HEADEND_PID_FREE: break;
	}
	return "free";
}

kh_err kh_headend_census_pick(const struct kh_headend_census *c, uint16_t want, uint16_t avoid, uint16_t *pid)
{
	const unsigned lo = 0x0020, hi = 0x1FFE;

	if (!c || !pid || want < lo || want > hi)
		return KH_ERR_INVAL;
	for (unsigned i = 0; i <= hi - lo; i++) {
		uint16_t q = (uint16_t)(lo + (want - lo + i) % (hi - lo + 1));
		if (q != avoid && c->use[q] == KH_HEADEND_PID_FREE) {
			*pid = q;
			return KH_OK;
		}
	}
	return KH_ERR_NOTFOUND;
}
