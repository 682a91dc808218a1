/*
 * PSI sections (ISO/IEC 13818-1 §2.4.4): CRC-32/MPEG-2, the per-PID section assembler, the
 * section packetiser, PAT, PMT and CAT parse and build, and the descriptors conditional access
 * needs: CA_descriptor 0x09 (§2.6.16) and the DVB scrambling_descriptor 0x65 (EN 300 468
 * §6.2.32). Section header fields are read with biTStream's accessors (through ts/bitstream.h, its
 * inline code under relaxed warnings); the CRC is our own, bit by bit, so that it does not share
 * a table with the library the tests compare it against.
 */
#include <string.h>

#include "ts/bitstream.h"

#include "keyhole/ts.h"

#define SHORT_HDR 3u /* table_id, flags + section_length */
#define LONG_HDR 8u  /* ... + table_id_extension, version, section numbers */
#define CRC_LEN 4u

uint32_t kh_ts_crc32(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xFFFFFFFFu;

	for (size_t i = 0; i < n; i++) {
		crc ^= (uint32_t)p[i] << 24;
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x80000000u) ? (crc << 1) ^ 0x04C11DB7u : crc << 1;
	}
	return crc;
}

size_t kh_ts_section_max(uint8_t table_id)
{
	return (table_id >= 0x80 && table_id <= 0x8F) ? KH_TS_PRIVATE_MAX : KH_TS_PSI_MAX;
}

kh_err kh_ts_section_check(const uint8_t *s, size_t n)
{
	size_t total;

	if (s == NULL || n < SHORT_HDR)
		return KH_ERR_TRUNCATED;
	total = SHORT_HDR + psi_get_length(s);
	if (total > kh_ts_section_max(psi_get_tableid(s)))
		return KH_ERR_TOO_LARGE;
	if (n < total)
		return KH_ERR_TRUNCATED;
	if (n > total)
		return KH_ERR_TRAILING;
	if (psi_get_syntax(s)) {
		if (n < LONG_HDR + CRC_LEN)
			return KH_ERR_FORMAT;
		if (kh_ts_crc32(s, n) != 0)
			return KH_ERR_CRC;
	}
	return KH_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Assembler                                                                                 */

kh_err kh_ts_asm_init(struct kh_ts_asm *a, uint16_t pid, size_t max)
{
	if (a == NULL || pid > KH_TS_PID_MAX)
		return KH_ERR_INVAL;
	memset(a, 0, sizeof *a);
	a->pid = pid;
	if (max < KH_TS_PSI_MAX)
		max = KH_TS_PSI_MAX;
	if (max > KH_TS_PRIVATE_MAX)
		max = KH_TS_PRIVATE_MAX;
	a->max = (uint16_t)max;
	a->last_cc = -1;
	a->start = 1;
	return KH_OK;
}

static void drop_partial(struct kh_ts_asm *a)
{
	if (a->collecting)
		a->dropped++;
	a->collecting = 0;
	a->have = a->need = 0;
}

static void drop_packet(struct kh_ts_asm *a)
{
	a->pl_len = a->pos = a->limit = 0;
	a->start = 1;
}

void kh_ts_asm_reset(struct kh_ts_asm *a)
{
	drop_partial(a);
	drop_packet(a);
	a->last_cc = -1;
	a->dup = 0;
}

kh_err kh_ts_asm_push(struct kh_ts_asm *a, const uint8_t *pkt, size_t n)
{
	struct kh_ts_pkt k;
	kh_err r;

	if ((r = kh_ts_parse(pkt, n, &k)) != KH_OK)
		return r;
	if (k.pid != a->pid)
		return KH_ERR_INVAL;
	drop_packet(a);
	if (k.tei || k.scrambling != KH_TS_SC_CLEAR) {
		kh_ts_asm_reset(a);
		return KH_ERR_FORMAT;
	}
	if (k.af_len > 0 && (k.af[0] & 0x80)) {
		/* discontinuity_indicator: the counter may jump, and nothing in progress survives */
		drop_partial(a);
		a->last_cc = -1;
	}
	if (k.payload_len == 0)
		return KH_OK; /* the counter only moves with a payload */
	if (a->last_cc >= 0) {
		if (k.cc == a->last_cc && !a->dup) {
			a->dup = 1; /* one duplicate allowed: drop it */
			return KH_OK;
		}
		if (k.cc != ((a->last_cc + 1) & 0x0F)) {
			a->cc_errors++;
			drop_partial(a);
		}
	}
	a->last_cc = k.cc;
	a->dup = 0;

	memcpy(a->pl, k.payload, k.payload_len);
	a->pl_len = k.payload_len;
	if (k.pusi) {
		size_t ptr = a->pl[0];

		if (1 + ptr >= a->pl_len) {
			kh_ts_asm_reset(a);
			a->last_cc = k.cc;
			return KH_ERR_FORMAT;
		}
		a->start = 1 + ptr;
		a->pos = a->collecting ? 1 : a->start;
		a->limit = a->collecting ? a->start : a->pl_len;
	} else {
		a->start = a->pl_len + 1;
		a->pos = a->collecting ? 0 : a->pl_len;
		a->limit = a->pl_len;
	}
	return KH_OK;
}

static size_t take(struct kh_ts_asm *a, size_t want, size_t end)
{
	size_t t = end - a->pos;

	if (t > want)
		t = want;
	memcpy(a->sec + a->have, a->pl + a->pos, t);
	a->have += t;
	a->pos += t;
	return t;
}

int kh_ts_asm_pop(struct kh_ts_asm *a, uint8_t *out, size_t cap, size_t *len)
{
	for (;;) {
		if (!a->collecting) {
			if (a->pos < a->start) {
				if (a->start > a->pl_len) {
					a->pos = a->pl_len;
					return 0; /* no unit start in this packet */
				}
				a->pos = a->start;
			}
			if (a->pos >= a->pl_len)
				return 0;
			if (a->pl[a->pos] == 0xFF) {
				a->pos = a->pl_len; /* stuffing to the end of the packet */
				return 0;
			}
			a->collecting = 1;
			a->have = a->need = 0;
			a->limit = a->pl_len;
			continue;
		}
		if (a->need != 0 && a->have == a->need) {
			if (out == NULL || cap < a->need)
				return KH_ERR_BUF;
			memcpy(out, a->sec, a->need);
			*len = a->need;
			a->collecting = 0;
			a->have = a->need = 0;
			return 1;
		}
		if (a->pos >= a->limit) {
			if (a->limit < a->pl_len) {
				/* the next section starts here: the one in progress was cut short */
				drop_partial(a);
				return KH_ERR_TRUNCATED;
			}
			return 0;
		}
		if (a->have < SHORT_HDR) {
			(void)take(a, SHORT_HDR - a->have, a->limit);
			if (a->have == SHORT_HDR) {
				size_t total = SHORT_HDR + psi_get_length(a->sec);
				size_t cap_sec = kh_ts_section_max(a->sec[0]);

				if (cap_sec > a->max)
					cap_sec = a->max;
				if (total > cap_sec) {
					drop_partial(a);
					/* the rest of it is unusable: resume at the next unit start */
					a->pos = a->pos < a->start ? a->start : a->pl_len;
					return KH_ERR_TOO_LARGE;
				}
				a->need = total;
			}
			continue;
		}
		(void)take(a, a->need - a->have, a->limit);
	}
}

size_t kh_ts_packets_for(size_t n)
{
	return (n + 1 + (KH_TS_PACKET_LEN - KH_TS_HEADER_LEN) - 1) / (KH_TS_PACKET_LEN - KH_TS_HEADER_LEN);
}

kh_err kh_ts_packetise(uint16_t pid, uint8_t *cc, const uint8_t *sec, size_t n, uint8_t *out,
		       size_t cap, size_t *out_len)
{
	const size_t body = KH_TS_PACKET_LEN - KH_TS_HEADER_LEN;
	size_t npk, done = 0;
	uint8_t c;

	if (pid > KH_TS_PID_MAX || cc == NULL || sec == NULL || n < SHORT_HDR || out_len == NULL)
		return KH_ERR_INVAL;
	if (n > KH_TS_PRIVATE_MAX)
		return KH_ERR_TOO_LARGE;
	npk = kh_ts_packets_for(n);
	if (out == NULL || cap / KH_TS_PACKET_LEN < npk)
		return KH_ERR_BUF;
	c = *cc & 0x0F;
	for (size_t i = 0; i < npk; i++) {
		uint8_t *p = out + i * KH_TS_PACKET_LEN, *q = p + KH_TS_HEADER_LEN;
		size_t room = body, t;

		p[0] = KH_TS_SYNC;
		p[1] = (uint8_t)((i == 0 ? 0x40 : 0x00) | (pid >> 8));
		p[2] = (uint8_t)pid;
		p[3] = (uint8_t)(0x10 | c);
		c = (uint8_t)((c + 1) & 0x0F);
		if (i == 0) {
			*q++ = 0; /* pointer_field */
			room--;
		}
		t = n - done < room ? n - done : room;
		memcpy(q, sec + done, t);
		done += t;
		memset(q + t, 0xFF, room - t);
	}
	*cc = c;
	*out_len = npk * KH_TS_PACKET_LEN;
	return KH_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptors                                                                               */

void kh_ts_desc_it_init(struct kh_ts_desc_it *it, const uint8_t *loop, size_t len)
{
	it->p = loop;
	it->n = loop ? len : 0;
}

int kh_ts_desc_next(struct kh_ts_desc_it *it, uint8_t *tag, const uint8_t **body, uint8_t *len)
{
	size_t l;

	if (it->n == 0)
		return 0;
	if (it->n < 2 || it->n - 2 < (l = it->p[1])) {
		it->p += it->n;
		it->n = 0;
		return KH_ERR_TRUNCATED;
	}
	*tag = it->p[0];
	*len = (uint8_t)l;
	*body = it->p + 2;
	it->p += 2 + l;
	it->n -= 2 + l;
	return 1;
}

kh_err kh_ts_desc_loop_check(const uint8_t *loop, size_t len)
{
	struct kh_ts_desc_it it;
	const uint8_t *b;
	uint8_t t, l;
	int k;

	kh_ts_desc_it_init(&it, loop, len);
	while ((k = kh_ts_desc_next(&it, &t, &b, &l)) == 1)
		;
	return k == 0 ? KH_OK : KH_ERR_TRUNCATED;
}

kh_err kh_ts_ca_desc_put(struct kh_wr *w, uint16_t ca_system_id, uint16_t ca_pid,
			 const uint8_t *priv, size_t priv_len)
{
	uint8_t *p;
	kh_err r;

	if (ca_pid > KH_TS_PID_MAX || (priv_len > 0 && priv == NULL))
		return KH_ERR_INVAL;
	if (priv_len > 255 - 4)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_wr_reserve(w, 6 + priv_len, &p)) != KH_OK)
		return r;
	p[0] = KH_TS_DESC_CA;
	p[1] = (uint8_t)(4 + priv_len);
	p[2] = (uint8_t)(ca_system_id >> 8);
	p[3] = (uint8_t)ca_system_id;
	p[4] = (uint8_t)(0xE0 | ca_pid >> 8); /* 3 reserved bits set */
	p[5] = (uint8_t)ca_pid;
	if (priv_len > 0)
		memcpy(p + 6, priv, priv_len);
	return KH_OK;
}

kh_err kh_ts_ca_desc_parse(const uint8_t *body, size_t len, struct kh_ts_ca_desc *out)
{
	if (body == NULL || len < 4)
		return KH_ERR_TRUNCATED;
	out->ca_system_id = (uint16_t)(body[0] << 8 | body[1]);
	out->ca_pid = (uint16_t)((body[2] & 0x1F) << 8 | body[3]);
	out->priv = len > 4 ? body + 4 : NULL;
	out->priv_len = len - 4;
	return KH_OK;
}

kh_err kh_ts_ca_desc_find(const uint8_t *loop, size_t len, uint16_t ca_system_id,
			  struct kh_ts_ca_desc *out)
{
	struct kh_ts_desc_it it;
	struct kh_ts_ca_desc d;
	const uint8_t *b;
	uint8_t t, l;
	int k;
	kh_err r;

	kh_ts_desc_it_init(&it, loop, len);
	while ((k = kh_ts_desc_next(&it, &t, &b, &l)) == 1) {
		if (t != KH_TS_DESC_CA)
			continue;
		if ((r = kh_ts_ca_desc_parse(b, l, &d)) != KH_OK)
			return r;
		if (d.ca_system_id == ca_system_id) {
			*out = d;
			return KH_OK;
		}
	}
	return k == 0 ? KH_ERR_NOTFOUND : k;
}

kh_err kh_ts_scrambling_desc_put(struct kh_wr *w, uint8_t mode)
{
	uint8_t *p;
	kh_err r;

	if ((r = kh_wr_reserve(w, 3, &p)) != KH_OK)
		return r;
	p[0] = KH_TS_DESC_SCRAMBLING;
	p[1] = 1;
	p[2] = mode;
	return KH_OK;
}

kh_err kh_ts_scrambling_desc_find(const uint8_t *loop, size_t len, uint8_t *mode)
{
	struct kh_ts_desc_it it;
	const uint8_t *b;
	uint8_t t, l;
	int k;

	kh_ts_desc_it_init(&it, loop, len);
	while ((k = kh_ts_desc_next(&it, &t, &b, &l)) == 1) {
		if (t != KH_TS_DESC_SCRAMBLING)
			continue;
		if (l < 1)
			return KH_ERR_FORMAT;
		*mode = b[0];
		return KH_OK;
	}
	return k == 0 ? KH_ERR_NOTFOUND : k;
}

static enum kh_ts_es_kind private_pes_kind(const uint8_t *desc, size_t desc_len)
{
	struct kh_ts_desc_it it;
	const uint8_t *b;
	uint8_t t, l;

	kh_ts_desc_it_init(&it, desc, desc_len);
	while (kh_ts_desc_next(&it, &t, &b, &l) == 1) {
		switch (t) {
		case 0x6A: /* AC-3 */
		case 0x7A: /* enhanced AC-3 */
		case 0x7B: /* DTS */
		case 0x7C: /* AAC */
			return KH_TS_ES_AUDIO;
		case 0x56: /* teletext */
		case 0x59: /* DVB subtitling */
			return KH_TS_ES_SUBTITLES;
		default:
			break;
		}
	}
	return KH_TS_ES_DATA;
}

enum kh_ts_es_kind kh_ts_es_kind(uint8_t stream_type, const uint8_t *desc, size_t desc_len)
{
	switch (stream_type) {
	case 0x01: case 0x02: case 0x10: case 0x1B: case 0x1F: case 0x20: case 0x24: case 0x33: case 0x42:
	case 0xD1: case 0xEA:
		return KH_TS_ES_VIDEO;
	case 0x03: case 0x04: case 0x0F: case 0x11: case 0x1C: case 0x81: case 0x87:
		return KH_TS_ES_AUDIO;
	case 0x06:
		return private_pes_kind(desc, desc_len);
	default:
		return KH_TS_ES_DATA;
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Tables                                                                                    */

/* Common checks of a long-form section with this table_id; the body (body, body_len) lies between the
 * 8-byte header and the CRC. */
static kh_err long_section(const uint8_t *s, size_t n, uint8_t tid, const uint8_t **body,
			   size_t *body_len)
{
	kh_err r;

	if ((r = kh_ts_section_check(s, n)) != KH_OK)
		return r;
	if (psi_get_tableid(s) != tid || !psi_get_syntax(s))
		return KH_ERR_FORMAT;
	*body = s + LONG_HDR;
	*body_len = n - LONG_HDR - CRC_LEN;
	return KH_OK;
}

kh_err kh_ts_pat_parse(const uint8_t *s, size_t n, struct kh_ts_pat *out)
{
	struct kh_ts_pat pat;
	const uint8_t *b;
	size_t bl;
	kh_err r;

	if ((r = long_section(s, n, KH_TS_TID_PAT, &b, &bl)) != KH_OK)
		return r;
	if (bl % 4 != 0 || bl / 4 > KH_TS_PAT_MAX_PROGRAMS)
		return KH_ERR_FORMAT;
	memset(&pat, 0, sizeof pat);
	pat.tsid = psi_get_tableidext(s);
	pat.version = psi_get_version(s);
	pat.current = psi_get_current(s) ? 1 : 0;
	pat.section_number = psi_get_section(s);
	pat.last_section_number = psi_get_lastsection(s);
	pat.n = bl / 4;
	for (size_t i = 0; i < pat.n; i++, b += 4) {
		pat.prog[i].program_number = (uint16_t)(b[0] << 8 | b[1]);
		pat.prog[i].pid = (uint16_t)((b[2] & 0x1F) << 8 | b[3]);
	}
	memcpy(out, &pat, sizeof pat);
	return KH_OK;
}

kh_err kh_ts_pmt_parse(const uint8_t *s, size_t n, struct kh_ts_pmt *out)
{
	struct kh_ts_pmt pmt;
	const uint8_t *b;
	size_t bl, pil, pos;
	kh_err r;

	if ((r = long_section(s, n, KH_TS_TID_PMT, &b, &bl)) != KH_OK)
		return r;
	if (psi_get_section(s) != 0 || psi_get_lastsection(s) != 0 || bl < 4)
		return KH_ERR_FORMAT;
	memset(&pmt, 0, sizeof pmt);
	pmt.program_number = psi_get_tableidext(s);
	pmt.version = psi_get_version(s);
	pmt.current = psi_get_current(s) ? 1 : 0;
	pmt.pcr_pid = (uint16_t)((b[0] & 0x1F) << 8 | b[1]);
	pil = (size_t)(b[2] & 0x0F) << 8 | b[3];
	if (pil > bl - 4 || kh_ts_desc_loop_check(b + 4, pil) != KH_OK)
		return KH_ERR_FORMAT;
	pmt.desc = pil ? b + 4 : NULL;
	pmt.desc_len = pil;
	for (pos = 4 + pil; pos < bl;) {
		struct kh_ts_pmt_es *e;
		size_t eil;

		if (bl - pos < 5 || pmt.n >= KH_TS_PMT_MAX_ES)
			return KH_ERR_FORMAT;
		eil = (size_t)(b[pos + 3] & 0x0F) << 8 | b[pos + 4];
		if (eil > bl - pos - 5 || kh_ts_desc_loop_check(b + pos + 5, eil) != KH_OK)
			return KH_ERR_FORMAT;
		e = &pmt.es[pmt.n++];
		e->stream_type = b[pos];
		e->pid = (uint16_t)((b[pos + 1] & 0x1F) << 8 | b[pos + 2]);
		e->desc = eil ? b + pos + 5 : NULL;
		e->desc_len = eil;
		pos += 5 + eil;
	}
	memcpy(out, &pmt, sizeof pmt);
	return KH_OK;
}

kh_err kh_ts_cat_parse(const uint8_t *s, size_t n, struct kh_ts_cat *out)
{
	struct kh_ts_cat cat;
	const uint8_t *b;
	size_t bl;
	kh_err r;

	if ((r = long_section(s, n, KH_TS_TID_CAT, &b, &bl)) != KH_OK)
		return r;
	if (kh_ts_desc_loop_check(b, bl) != KH_OK)
		return KH_ERR_FORMAT;
	memset(&cat, 0, sizeof cat);
	cat.version = psi_get_version(s);
	cat.current = psi_get_current(s) ? 1 : 0;
	cat.section_number = psi_get_section(s);
	cat.last_section_number = psi_get_lastsection(s);
	cat.desc = bl ? b : NULL;
	cat.desc_len = bl;
	*out = cat;
	return KH_OK;
}

/* Start a long-form section in w (section_length filled in by finish). */
static void begin(struct kh_wr *w, uint8_t tid, uint16_t ext, uint8_t version, uint8_t current,
		  uint8_t secno, uint8_t last)
{
	(void)kh_wr_u8(w, tid);
	(void)kh_wr_u16(w, 0xB000); /* syntax 1, '0', reserved 11, length later */
	(void)kh_wr_u16(w, ext);
	(void)kh_wr_u8(w, (uint8_t)(0xC0 | (version & 0x1F) << 1 | (current ? 1 : 0)));
	(void)kh_wr_u8(w, secno);
	(void)kh_wr_u8(w, last);
}

/* Fill in section_length and the CRC, copy to out. */
static kh_err finish(struct kh_wr *w, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = w->len + CRC_LEN;
	size_t sl = n - SHORT_HDR;

	if (w->err == KH_ERR_BUF || n > KH_TS_PSI_MAX)
		return KH_ERR_TOO_LARGE;
	if (w->err != KH_OK)
		return w->err;
	w->p[1] = (uint8_t)(0xB0 | sl >> 8);
	w->p[2] = (uint8_t)sl;
	kh_put_be32(w->p + w->len, kh_ts_crc32(w->p, w->len));
	if (out == NULL || len == NULL || cap < n)
		return KH_ERR_BUF;
	memcpy(out, w->p, n);
	*len = n;
	return KH_OK;
}

kh_err kh_ts_pat_build(const struct kh_ts_pat *pat, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t tmp[KH_TS_PSI_MAX];
	struct kh_wr w;

	if (pat == NULL || pat->version > 31 || pat->n > KH_TS_PAT_MAX_PROGRAMS)
		return KH_ERR_INVAL;
	for (size_t i = 0; i < pat->n; i++)
		if (pat->prog[i].pid > KH_TS_PID_MAX)
			return KH_ERR_INVAL;
	kh_wr_init(&w, tmp, sizeof tmp - CRC_LEN);
	begin(&w, KH_TS_TID_PAT, pat->tsid, pat->version, pat->current, pat->section_number,
	      pat->last_section_number);
	for (size_t i = 0; i < pat->n; i++) {
		(void)kh_wr_u16(&w, pat->prog[i].program_number);
		(void)kh_wr_u16(&w, (uint16_t)(0xE000 | pat->prog[i].pid));
	}
	return finish(&w, out, cap, len);
}

kh_err kh_ts_pmt_build(const struct kh_ts_pmt *pmt, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t tmp[KH_TS_PSI_MAX];
	struct kh_wr w;

	if (pmt == NULL || pmt->version > 31 || pmt->n > KH_TS_PMT_MAX_ES ||
	    pmt->pcr_pid > KH_TS_PID_MAX || (pmt->desc_len > 0 && pmt->desc == NULL))
		return KH_ERR_INVAL;
	if (pmt->desc_len > 0x3FF)
		return KH_ERR_TOO_LARGE;
	if (kh_ts_desc_loop_check(pmt->desc, pmt->desc_len) != KH_OK)
		return KH_ERR_FORMAT;
	for (size_t i = 0; i < pmt->n; i++) {
		const struct kh_ts_pmt_es *e = &pmt->es[i];

		if (e->pid > KH_TS_PID_MAX || (e->desc_len > 0 && e->desc == NULL))
			return KH_ERR_INVAL;
		if (e->desc_len > 0x3FF)
			return KH_ERR_TOO_LARGE;
		if (kh_ts_desc_loop_check(e->desc, e->desc_len) != KH_OK)
			return KH_ERR_FORMAT;
	}
	kh_wr_init(&w, tmp, sizeof tmp - CRC_LEN);
	begin(&w, KH_TS_TID_PMT, pmt->program_number, pmt->version, pmt->current, 0, 0);
	(void)kh_wr_u16(&w, (uint16_t)(0xE000 | pmt->pcr_pid));
	(void)kh_wr_u16(&w, (uint16_t)(0xF000 | pmt->desc_len));
	(void)kh_wr_bytes(&w, pmt->desc, pmt->desc_len);
	for (size_t i = 0; i < pmt->n; i++) {
		const struct kh_ts_pmt_es *e = &pmt->es[i];

		(void)kh_wr_u8(&w, e->stream_type);
		(void)kh_wr_u16(&w, (uint16_t)(0xE000 | e->pid));
		(void)kh_wr_u16(&w, (uint16_t)(0xF000 | e->desc_len));
		(void)kh_wr_bytes(&w, e->desc, e->desc_len);
	}
	return finish(&w, out, cap, len);
}

kh_err kh_ts_cat_build(const struct kh_ts_cat *cat, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t tmp[KH_TS_PSI_MAX];
	struct kh_wr w;

	if (cat == NULL || cat->version > 31 || (cat->desc_len > 0 && cat->desc == NULL))
		return KH_ERR_INVAL;
	if (cat->desc_len > KH_TS_PSI_MAX)
		return KH_ERR_TOO_LARGE;
	if (kh_ts_desc_loop_check(cat->desc, cat->desc_len) != KH_OK)
		return KH_ERR_FORMAT;
	kh_wr_init(&w, tmp, sizeof tmp - CRC_LEN);
	begin(&w, KH_TS_TID_CAT, 0xFFFF, cat->version, cat->current, cat->section_number,
	      cat->last_section_number);
	(void)kh_wr_bytes(&w, cat->desc, cat->desc_len);
	return finish(&w, out, cap, len);
}
