/*
 * The engine of `keyhole ts inspect` (ts_inspect.h). Bytes are taken in any amount; packets are
 * found by three sync bytes 188 bytes apart (as the headend's reader does) and lost again when a
 * packet does not start with one. Sections come from the ts/psi assemblers and parsers, ECM and
 * EMM headers from the CAS codec's peek functions: nothing here trusts a length of its own.
 * Memory is bounded: per-PID counters for the 8192 PIDs, at most KH_TSI_MAX_ASM assemblers and
 * KH_TSI_MAX_CAPIDS decoded CA PIDs.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/ts_inspect.h"
#include "keyhole/cas.h"

#define NPIDS (KH_TS_PID_MAX + 1u)
#define CHUNK 65536u
#define PCR_MOD (((uint64_t)1 << 33) * 300u)
#define PCR_HZ 27000000.0
#define PCR_MAX_GAP ((uint64_t)27000000u * 5u) /* a larger step is a discontinuity */

struct kh_tsi_asm {
	struct kh_ts_asm a;
};

kh_err kh_tsi_init(struct kh_tsi *t, uint16_t casid)
{
	memset(t, 0, sizeof *t);
	t->casid = casid;
	t->first_pcr_pid = -1;
	t->cap = CHUNK + 3 * KH_TS_PACKET_LEN;
	t->buf = malloc(t->cap);
	t->pids = calloc(NPIDS, sizeof *t->pids);
	t->progs = calloc(KH_TS_PAT_MAX_PROGRAMS, sizeof *t->progs);
	t->asm_of = malloc(NPIDS * sizeof *t->asm_of);
	if (t->buf == NULL || t->pids == NULL || t->progs == NULL || t->asm_of == NULL) {
		kh_tsi_free(t);
		return KH_ERR_NOMEM;
	}
	for (size_t i = 0; i < NPIDS; i++) {
		t->pids[i].last_cc = -1;
		t->asm_of[i] = -1;
	}
	return KH_OK;
}

void kh_tsi_free(struct kh_tsi *t)
{
	for (size_t i = 0; i < t->nasm; i++)
		free(t->asms[i]);
	for (size_t i = 0; i < t->ncapids; i++)
		free(t->capids[i]);
	free(t->buf);
	free(t->pids);
	free(t->progs);
	free(t->asm_of);
	t->buf = NULL;
	t->pids = NULL;
	t->progs = NULL;
	t->asm_of = NULL;
	t->nasm = t->ncapids = 0;
}

/* ---- names ---- */

static const char *es_desc_name(const uint8_t *loop, size_t len)
{
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, dlen;

	kh_ts_desc_it_init(&it, loop, len);
	while (kh_ts_desc_next(&it, &tag, &body, &dlen) == 1) {
		switch (tag) {
		case 0x59:
			return "DVB subtitles";
		case 0x56:
			return "DVB teletext";
		case 0x6A:
			return "AC-3";
		case 0x7A:
			return "E-AC-3";
		default:
			break;
		}
	}
	return "private PES data";
}

static const char *stream_type_name(uint8_t type, const uint8_t *desc, size_t desc_len)
{
	switch (type) {
	case 0x01:
		return "MPEG-1 video";
	case 0x02:
		return "MPEG-2 video";
	case 0x03:
		return "MPEG-1 audio (MP2)";
	case 0x04:
		return "MPEG-2 audio (MP2)";
	case 0x05:
		return "private sections";
	case 0x06:
		return es_desc_name(desc, desc_len);
	case 0x0B:
	case 0x0D:
		return "DSM-CC";
	case 0x0F:
		return "AAC";
	case 0x10:
		return "MPEG-4 video";
	case 0x11:
		return "AAC (LATM)";
	case 0x15:
		return "metadata";
	case 0x1B:
		return "H.264";
	case 0x24:
		return "HEVC";
	case 0x33:
		return "VVC";
	case 0x81:
		return "AC-3";
	case 0x86:
		return "SCTE-35";
	case 0x87:
		return "E-AC-3";
	default:
		return "unknown";
	}
}

/* A PID no table named: the DVB SI PIDs of EN 300 468 by their number. */
static const char *dvb_pid_name(uint16_t pid)
{
	switch (pid) {
	case 0x0010:
		return "NIT (DVB)";
	case 0x0011:
		return "SDT/BAT (DVB)";
	case 0x0012:
		return "EIT (DVB)";
	case 0x0013:
		return "RST (DVB)";
	case 0x0014:
		return "TDT/TOT (DVB)";
	default:
		return "unreferenced";
	}
}

const char *kh_tsi_role_name(const struct kh_tsi *t, uint16_t pid)
{
	const struct kh_tsi_pid *p = &t->pids[pid];

	if (pid == KH_TS_PID_NULL)
		return "null";
	if (p->role & KH_TSI_R_PAT)
		return "PAT";
	if (p->role & KH_TSI_R_CAT)
		return "CAT";
	if (p->role & KH_TSI_R_PMT)
		return "PMT";
	if (p->role & KH_TSI_R_ECM)
		return "ECM";
	if (p->role & KH_TSI_R_EMM)
		return "EMM";
	if (p->role & KH_TSI_R_CA)
		return "CA";
	if (p->role & KH_TSI_R_ES)
		return p->name;
	if (p->role & KH_TSI_R_PCR)
		return "PCR";
	if (p->role & KH_TSI_R_NIT)
		return "NIT";
	return dvb_pid_name(pid);
}

const char *kh_tsi_emm_type_name(unsigned addr_type)
{
	static const char *const n[] = {"unique", "group", "all"};
	return addr_type < 3 ? n[addr_type] : "unknown";
}

/* ---- tables ---- */

static void want_sections(struct kh_tsi *t, uint16_t pid)
{
	struct kh_tsi_asm *a;
	size_t max;

	if (t->asm_of[pid] >= 0 || t->nasm == KH_TSI_MAX_ASM)
		return;
	if ((a = malloc(sizeof *a)) == NULL)
		return; /* that PID's sections go unread; the counts stay right */
	max = (t->pids[pid].role & (KH_TSI_R_ECM | KH_TSI_R_EMM)) ? KH_TS_PRIVATE_MAX : KH_TS_PSI_MAX;
	if (kh_ts_asm_init(&a->a, pid, max) != KH_OK) {
		free(a);
		return;
	}
	t->asms[t->nasm] = a;
	t->asm_of[pid] = (int16_t)t->nasm++;
}

static struct kh_tsi_capid *capid_of(struct kh_tsi *t, uint16_t pid, int make)
{
	struct kh_tsi_capid *c;

	for (size_t i = 0; i < t->ncapids; i++)
		if (t->capids[i]->pid == pid)
			return t->capids[i];
	if (!make || t->ncapids == KH_TSI_MAX_CAPIDS || (c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	c->pid = pid;
	t->capids[t->ncapids++] = c;
	return c;
}

/* A CA PID named by a descriptor: ours are decoded (ECM from a PMT, EMM from the CAT). */
static void ca_pid_named(struct kh_tsi *t, uint16_t sysid, uint16_t capid, unsigned role)
{
	if (sysid != t->casid) {
		t->pids[capid].role |= KH_TSI_R_CA;
		return;
	}
	t->pids[capid].role |= role;
	if (capid_of(t, capid, 1) != NULL)
		want_sections(t, capid);
}

void kh_tsi_prime(struct kh_tsi *t, const struct kh_tsi *from)
{
	for (size_t i = 0; i < from->ncapids; i++) {
		uint16_t pid = from->capids[i]->pid;
		t->pids[pid].role |= from->pids[pid].role & (KH_TSI_R_ECM | KH_TSI_R_EMM);
		if (capid_of(t, pid, 1) != NULL)
			want_sections(t, pid);
	}
}

/* Every CA descriptor of a loop into list (at most KH_TSI_MAX_CA), each PID named. */
static void take_ca_loop(struct kh_tsi *t, const uint8_t *loop, size_t len, uint16_t es_pid, int es_level,
			 struct kh_tsi_ca *list, size_t *n, unsigned role)
{
	struct kh_ts_desc_it it;
	struct kh_ts_ca_desc ca;
	const uint8_t *body;
	uint8_t tag, dlen;

	kh_ts_desc_it_init(&it, loop, len);
	while (kh_ts_desc_next(&it, &tag, &body, &dlen) == 1) {
		if (tag != KH_TS_DESC_CA || kh_ts_ca_desc_parse(body, dlen, &ca) != KH_OK)
			continue;
		ca_pid_named(t, ca.ca_system_id, ca.ca_pid, role);
		if (*n == KH_TSI_MAX_CA)
			continue;
		list[*n].es_pid = es_pid;
		list[*n].es_level = (uint8_t)es_level;
		list[*n].sysid = ca.ca_system_id;
		list[*n].capid = ca.ca_pid;
		list[*n].priv_len = (uint8_t)ca.priv_len;
		(*n)++;
	}
}

static const struct kh_tsi_prog *prog_find(const struct kh_tsi *t, uint16_t number)
{
	for (size_t i = 0; i < t->nprogs; i++)
		if (t->progs[i].number == number)
			return &t->progs[i];
	return NULL;
}

static struct kh_tsi_prog *prog_of(struct kh_tsi *t, uint16_t number, int make)
{
	for (size_t i = 0; i < t->nprogs; i++)
		if (t->progs[i].number == number)
			return &t->progs[i];
	if (!make || t->nprogs == KH_TS_PAT_MAX_PROGRAMS)
		return NULL;
	t->progs[t->nprogs].number = number;
	return &t->progs[t->nprogs++];
}

static void on_pat(struct kh_tsi *t, const uint8_t *s, size_t n)
{
	static struct kh_ts_pat pat; /* large; the engine is used by one thread */
	struct kh_tsi_prog *p;

	if (kh_ts_section_check(s, n) != KH_OK || kh_ts_pat_parse(s, n, &pat) != KH_OK) {
		t->pids[KH_TS_PID_PAT].psi_errors++;
		return;
	}
	t->have_pat = 1;
	t->tsid = pat.tsid;
	for (size_t i = 0; i < pat.n; i++) {
		if (pat.prog[i].program_number == 0) {
			t->pids[pat.prog[i].pid].role |= KH_TSI_R_NIT;
			continue;
		}
		if ((p = prog_of(t, pat.prog[i].program_number, 1)) == NULL)
			continue;
		p->pmt_pid = pat.prog[i].pid;
		t->pids[p->pmt_pid].role |= KH_TSI_R_PMT;
		want_sections(t, p->pmt_pid);
	}
}

static void take_es(struct kh_tsi *t, struct kh_tsi_prog *p, const struct kh_ts_pmt_es *e)
{
	struct kh_tsi_pid *ps = &t->pids[e->pid];
	const char *name = stream_type_name(e->stream_type, e->desc, e->desc_len);

	take_ca_loop(t, e->desc, e->desc_len, e->pid, 1, p->ca, &p->nca, KH_TSI_R_ECM);
	if (!(ps->role & KH_TSI_R_ES)) {
		ps->role |= KH_TSI_R_ES;
		ps->prog = p->number;
		ps->name = name;
		ps->stype = e->stream_type;
	}
	if (p->nes == KH_TSI_MAX_ES) {
		p->es_dropped++;
		return;
	}
	p->es[p->nes].pid = e->pid;
	p->es[p->nes].type = e->stream_type;
	p->es[p->nes].name = name;
	p->nes++;
}

static void on_pmt(struct kh_tsi *t, uint16_t pid, const uint8_t *s, size_t n)
{
	static struct kh_ts_pmt pmt;
	struct kh_tsi_prog *p;

	if (kh_ts_section_check(s, n) != KH_OK || kh_ts_pmt_parse(s, n, &pmt) != KH_OK) {
		t->pids[pid].psi_errors++;
		return;
	}
	/* a PMT PID may carry other tables' sections too: only the programme the PAT put here */
	if ((p = prog_of(t, pmt.program_number, 0)) == NULL || p->pmt_pid != pid)
		return;
	p->have_pmt = 1;
	p->pcr_pid = pmt.pcr_pid;
	p->nes = p->es_dropped = p->nca = 0;
	if (pmt.pcr_pid != KH_TS_PID_NULL)
		t->pids[pmt.pcr_pid].role |= KH_TSI_R_PCR;
	take_ca_loop(t, pmt.desc, pmt.desc_len, 0, 0, p->ca, &p->nca, KH_TSI_R_ECM);
	for (size_t i = 0; i < pmt.n; i++)
		take_es(t, p, &pmt.es[i]);
}

static void on_cat(struct kh_tsi *t, const uint8_t *s, size_t n)
{
	struct kh_ts_cat cat;

	if (kh_ts_section_check(s, n) != KH_OK || kh_ts_cat_parse(s, n, &cat) != KH_OK) {
		t->pids[KH_TS_PID_CAT].psi_errors++;
		return;
	}
	t->have_cat = 1;
	t->ncat = 0;
	take_ca_loop(t, cat.desc, cat.desc_len, 0, 0, t->cat, &t->ncat, KH_TSI_R_EMM);
}

static void on_ecm(struct kh_tsi_capid *c, const struct kh_ecm_hdr *h, uint64_t idx)
{
	struct kh_tsi_ecm e = {h->table_id, h->key_id, h->key_version, h->cp, h->signer};

	if (c->ecms == 0)
		c->ecm_first = e;
	else {
		if (e.cp != c->ecm_last.cp)
			c->cp_changes++;
		if (c->ngaps < KH_TSI_MAX_GAPS && idx - c->last_ecm_idx <= UINT32_MAX)
			c->gaps[c->ngaps++] = (uint32_t)(idx - c->last_ecm_idx);
	}
	c->ecm_last = e;
	c->last_ecm_idx = idx;
	c->ecms++;
}

static void on_emm(struct kh_tsi_capid *c, const struct kh_emm_hdr *h)
{
	struct kh_tsi_emm e = {h->table_id, h->addr_type, h->addr, h->seq, h->signer};

	if (h->addr_type > 2)
		return;
	if (c->emms[h->addr_type]++ == 0)
		c->emm_first[h->addr_type] = e;
	c->emm_last[h->addr_type] = e;
}

/* A section on a CA PID of our system: a malformed one is counted, never fatal. */
static void on_ca_section(struct kh_tsi *t, uint16_t pid, const uint8_t *s, size_t n, uint64_t idx)
{
	struct kh_tsi_capid *c = capid_of(t, pid, 0);
	struct kh_ecm_hdr eh;
	struct kh_emm_hdr mh;

	if (c == NULL)
		return;
	c->sections++;
	if (s[0] == KH_ECM_TID_EVEN || s[0] == KH_ECM_TID_ODD) {
		if (kh_ecm_peek(s, n, &eh) == KH_OK)
			on_ecm(c, &eh, idx);
		else
			c->malformed++;
	} else if (s[0] >= KH_EMM_TID_UNIQUE && s[0] <= KH_EMM_TID_ALL) {
		if (kh_emm_peek(s, n, &mh) == KH_OK)
			on_emm(c, &mh);
		else
			c->malformed++;
	} else {
		c->other++;
	}
}

static void on_section(struct kh_tsi *t, uint16_t pid, const uint8_t *s, size_t n, uint64_t idx)
{
	unsigned role = t->pids[pid].role;

	if (role & (KH_TSI_R_ECM | KH_TSI_R_EMM))
		on_ca_section(t, pid, s, n, idx);
	else if (pid == KH_TS_PID_PAT && s[0] == KH_TS_TID_PAT)
		on_pat(t, s, n);
	else if (pid == KH_TS_PID_CAT && s[0] == KH_TS_TID_CAT)
		on_cat(t, s, n);
	else if ((role & KH_TSI_R_PMT) && s[0] == KH_TS_TID_PMT)
		on_pmt(t, pid, s, n);
}

static void assemble(struct kh_tsi *t, uint16_t pid, const uint8_t *pkt, uint64_t idx)
{
	struct kh_ts_asm *a = &t->asms[t->asm_of[pid]]->a;
	size_t len;
	int rc;

	if (kh_ts_asm_push(a, pkt, KH_TS_PACKET_LEN) != KH_OK)
		return;
	while ((rc = kh_ts_asm_pop(a, t->sec, sizeof t->sec, &len)) != 0) {
		if (rc == 1) {
			on_section(t, pid, t->sec, len, idx);
			continue;
		}
		if (rc != KH_ERR_TOO_LARGE && rc != KH_ERR_TRUNCATED)
			break;
		struct kh_tsi_capid *c = capid_of(t, pid, 0);
		if (c != NULL)
			c->malformed++;
		else
			t->pids[pid].psi_errors++;
	}
}

/* ---- packets ---- */

static void on_pcr(struct kh_tsi *t, struct kh_tsi_pid *ps, uint16_t pid, const uint8_t *af, uint64_t idx)
{
	uint64_t base = ((uint64_t)af[1] << 25) | ((uint64_t)af[2] << 17) | ((uint64_t)af[3] << 9) |
			((uint64_t)af[4] << 1) | (af[5] >> 7);
	uint64_t pcr = base * 300u + (((uint64_t)(af[5] & 1u) << 8) | af[6]);
	uint64_t d;

	if (ps->pcr_seen && !(af[0] & 0x80)) {
		d = (pcr + PCR_MOD - ps->pcr_last) % PCR_MOD;
		if (d > 0 && d <= PCR_MAX_GAP) {
			ps->pcr_ticks += d;
			ps->pcr_pkts += idx - ps->pcr_last_idx;
		}
	}
	ps->pcr_seen = 1;
	ps->pcr_last = pcr;
	ps->pcr_last_idx = idx;
	ps->pcrs++;
	if (t->first_pcr_pid < 0)
		t->first_pcr_pid = pid;
}

/* Continuity: a packet with payload takes the next counter (one duplicate allowed); a
 * discontinuity_indicator starts again. */
static void continuity(struct kh_tsi_pid *ps, const struct kh_ts_pkt *k)
{
	int disc = k->af_len > 0 && (k->af[0] & 0x80);

	if (!(k->afc & 1))
		return;
	if (ps->last_cc >= 0 && !disc) {
		if (k->cc == ps->last_cc && !ps->dup) {
			ps->dup = 1;
			return;
		}
		if (k->cc != ((ps->last_cc + 1) & 15))
			ps->cc_errors++;
	}
	ps->dup = 0;
	ps->last_cc = k->cc;
}

static void on_packet(struct kh_tsi *t, const uint8_t *p)
{
	uint64_t idx = t->npkts++;
	uint16_t pid = (uint16_t)(((p[1] & 0x1Fu) << 8) | p[2]);
	struct kh_tsi_pid *ps = &t->pids[pid];
	struct kh_ts_pkt k;

	ps->pkts++;
	if (kh_ts_parse(p, KH_TS_PACKET_LEN, &k) != KH_OK) {
		ps->invalid++;
		t->invalid++;
		return;
	}
	if (k.tei) {
		t->tei++;
		return; /* its bits cannot be believed */
	}
	if (k.afc & 1)
		ps->sc[k.scrambling]++;
	else
		ps->af_only++;
	if (pid == KH_TS_PID_NULL)
		return;
	continuity(ps, &k);
	if (k.af_len >= 7 && (k.af[0] & 0x10))
		on_pcr(t, ps, pid, k.af, idx);
	if (t->asm_of[pid] >= 0)
		assemble(t, pid, p, idx);
}

/* ---- bytes ---- */

static void start(struct kh_tsi *t)
{
	t->pids[KH_TS_PID_PAT].role |= KH_TSI_R_PAT;
	t->pids[KH_TS_PID_CAT].role |= KH_TSI_R_CAT;
	want_sections(t, KH_TS_PID_PAT);
	want_sections(t, KH_TS_PID_CAT);
}

/* Is there a sync byte at q? 1 yes, 0 no, -1 not known yet (more bytes needed). At the end of
 * the stream a position beyond it counts as yes. */
static int sync_at(const struct kh_tsi *t, size_t q, int eof)
{
	if (q >= t->have)
		return eof ? 1 : -1;
	return t->buf[q] == KH_TS_SYNC;
}

/* Take every whole packet of buf; returns how many bytes were used. */
static size_t scan(struct kh_tsi *t, int eof)
{
	size_t pos = 0;
	int a, b;

	while (t->have - pos >= KH_TS_PACKET_LEN) {
		if (t->synced && t->buf[pos] == KH_TS_SYNC) {
			on_packet(t, t->buf + pos);
			pos += KH_TS_PACKET_LEN;
			continue;
		}
		t->synced = 0;
		if (t->buf[pos] == KH_TS_SYNC) {
			a = sync_at(t, pos + KH_TS_PACKET_LEN, eof);
			b = sync_at(t, pos + 2 * KH_TS_PACKET_LEN, eof);
			if (a < 0 || (a == 1 && b < 0))
				break;
			if (a == 1 && b == 1) {
				t->synced = 1;
				continue;
			}
		}
		pos++;
		t->skipped++;
	}
	return pos;
}

kh_err kh_tsi_feed(struct kh_tsi *t, const uint8_t *p, size_t n)
{
	size_t take, used;

	if (t->bytes == 0 && n > 0)
		start(t);
	t->bytes += n;
	while (n > 0) {
		take = t->cap - t->have;
		if (take > n)
			take = n;
		memcpy(t->buf + t->have, p, take);
		t->have += take;
		p += take;
		n -= take;
		used = scan(t, 0);
		memmove(t->buf, t->buf + used, t->have - used);
		t->have -= used;
	}
	return KH_OK;
}

static int cmp_capid(const void *a, const void *b)
{
	uint16_t x = (*(struct kh_tsi_capid *const *)a)->pid, y = (*(struct kh_tsi_capid *const *)b)->pid;
	return (x > y) - (x < y);
}

void kh_tsi_finish(struct kh_tsi *t)
{
	size_t used = scan(t, 1);
	size_t left = t->have - used;

	/* reported in PID order, whatever order the tables named them in */
	qsort(t->capids, t->ncapids, sizeof t->capids[0], cmp_capid);
	if (left > 0 && t->synced && t->buf[used] == KH_TS_SYNC)
		t->truncated = left;
	else
		t->skipped += left;
	t->have = 0;
}

/* ---- results ---- */

static double pcr_rate(const struct kh_tsi_pid *ps)
{
	if (ps->pcr_ticks == 0)
		return 0;
	return (double)ps->pcr_pkts * KH_TS_PACKET_LEN * 8.0 * PCR_HZ / (double)ps->pcr_ticks;
}

double kh_tsi_mux_rate(const struct kh_tsi *t)
{
	return t->first_pcr_pid < 0 ? 0 : pcr_rate(&t->pids[t->first_pcr_pid]);
}

double kh_tsi_pid_rate(const struct kh_tsi *t, uint16_t pid)
{
	const struct kh_tsi_pid *ps = &t->pids[pid];
	double rate = 0;
	const struct kh_tsi_prog *p;

	if (t->npkts == 0)
		return 0;
	if ((ps->role & KH_TSI_R_ES) && (p = prog_find(t, ps->prog)) != NULL && p->have_pmt &&
	    p->pcr_pid != KH_TS_PID_NULL)
		rate = pcr_rate(&t->pids[p->pcr_pid]);
	if (rate == 0)
		rate = kh_tsi_mux_rate(t);
	return rate * (double)ps->pkts / (double)t->npkts;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

double kh_tsi_ecm_interval_ms(const struct kh_tsi *t, struct kh_tsi_capid *c)
{
	double rate = kh_tsi_mux_rate(t);

	if (c->ngaps == 0 || rate == 0)
		return -1;
	qsort(c->gaps, c->ngaps, sizeof c->gaps[0], cmp_u32);
	return (double)c->gaps[c->ngaps / 2] * KH_TS_PACKET_LEN * 8.0 * 1000.0 / rate;
}

const char *kh_tsi_scrambling_state(const struct kh_tsi_pid *p)
{
	uint64_t clear = p->sc[0], even = p->sc[2], odd = p->sc[3], resv = p->sc[1];

	if (clear + even + odd + resv == 0)
		return "none";
	if (even + odd + resv == 0)
		return "clear";
	if (clear > 0 || resv > 0)
		return "mixed";
	if (even > 0 && odd > 0)
		return "scrambled even+odd";
	return even > 0 ? "scrambled even" : "scrambled odd";
}
