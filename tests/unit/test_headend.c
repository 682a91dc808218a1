/*
 * The headend (keyhole/headend.h): the key file's round trip and refusals (mode, malformed
 * lines named by number, unknown version), sequence counters that persist and never repeat,
 * EMMs that a card opens under its Kp and that carry what was asked; then a synthetic programme
 * (PAT, PMT, a video PID carrying the PCR every 10 ms, an audio PID) through the streaming
 * scrambler for each algorithm, its output checked packet by packet: TSC parity per crypto
 * period computed from the PCR (starting just before the 2^33 wrap), ECMs that open with the
 * service key and carry the CWs that descramble the packets back to the input, ECM timing (lead,
 * repetition), the PMT's CA and scrambling descriptors, the CAT, EMMs first, and continuity
 * counters on every PID. PID collisions are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/authority.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/headend.h"
#include "keyhole/scramble.h"
#include "keyhole/ts.h"
#include "testutil.h"

static const uint8_t master[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static char *path_in(const char *dir, const char *name)
{
	char *p;
	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void test_keys_roundtrip(void **state)
{
	struct kh_headend_keys *k, *k2;
	uint8_t *t1, *t2, key[32], key2[32], m[32];
	size_t n1, n2, line;
	uint32_t v, seq;
	char *dir = kh_test_tmpdir(), *p = path_in(dir, "h.keys");

	(void)state;
	assert_int_equal(kh_headend_keys_create(master, &k), KH_OK);
	assert_int_equal(kh_headend_keys_count(k), 1);
	assert_int_equal(kh_headend_keys_get(k, 1, 0, key, &v), KH_OK);
	assert_int_equal(v, 1);
	assert_int_equal(kh_headend_keys_seq(k, KH_EMM_ALL, 0), 0);
	assert_int_equal(kh_headend_keys_seq(k, KH_EMM_UNIQUE, 0x10), 0);
	/* rotation keeps two versions, the newest is the default */
	assert_int_equal(kh_headend_keys_rotate(k, 1, &v), KH_OK);
	assert_int_equal(v, 2);
	assert_int_equal(kh_headend_keys_rotate(k, 1, &v), KH_OK);
	assert_int_equal(v, 3);
	assert_int_equal(kh_headend_keys_count(k), 2);
	assert_int_equal(kh_headend_keys_get(k, 1, 1, key, NULL), KH_ERR_NOTFOUND);
	assert_int_equal(kh_headend_keys_get(k, 1, 0, key, &v), KH_OK);
	assert_int_equal(v, 3);
	assert_int_equal(kh_headend_keys_rotate(k, 9, &v), KH_OK);
	assert_int_equal(v, 1);
	assert_int_equal(kh_headend_keys_next_seq(k, KH_EMM_UNIQUE, 0xABCDEF01, &seq), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_headend_keys_next_seq(k, KH_EMM_GROUP, 7, &seq), KH_OK);
	assert_int_equal(kh_headend_keys_next_seq(k, KH_EMM_GROUP, 7, &seq), KH_OK);
	assert_int_equal(seq, 2);

	/* text round trip, and the file */
	assert_int_equal(kh_headend_keys_format(k, &t1, &n1), KH_OK);
	assert_int_equal(kh_headend_keys_parse(t1, n1, &k2, &line), KH_OK);
	assert_int_equal(kh_headend_keys_format(k2, &t2, &n2), KH_OK);
	assert_int_equal(n1, n2);
	assert_memory_equal(t1, t2, n1);
	kh_headend_keys_master(k2, m);
	assert_memory_equal(m, master, 32);
	assert_int_equal(kh_headend_keys_get(k2, 1, 3, key2, NULL), KH_OK);
	assert_int_equal(kh_headend_keys_get(k, 1, 3, key, NULL), KH_OK);
	assert_memory_equal(key, key2, 32);
	assert_int_equal(kh_headend_keys_seq(k2, KH_EMM_GROUP, 7), 2);
	assert_int_equal(kh_headend_keys_seq(k2, KH_EMM_UNIQUE, 0xABCDEF01), 1);
	kh_file_free(t2, n2);
	kh_headend_keys_free(k2);

	assert_int_equal(kh_headend_keys_save_new(k, p), KH_OK);
	assert_int_equal(kh_headend_keys_save_new(k, p), KH_ERR_EXISTS);
	assert_int_equal(kh_headend_keys_load(p, &k2, &line), KH_OK);
	kh_headend_keys_free(k2);
	chmod(p, 0644);
	assert_int_equal(kh_headend_keys_load(p, &k2, &line), KH_ERR_KEYFILE_PERM);
	chmod(p, 0600);
	/* the text never names a key in what 'show' would list: the file does, and only once each */
	assert_non_null(strstr((const char *)t1, "seq group 7 2\n"));
	assert_non_null(strstr((const char *)t1, "seq card ABCDEF01 1\n"));
	kh_file_free(t1, n1);
	kh_headend_keys_free(k);
	free(p);
	kh_test_rmdir(dir);
}

static void test_keys_malformed(void **state)
{
	static const char good_head[] = "keyhole-headend-keys 1\n"
					"master 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n"
					"service 1 1 0000000000000000000000000000000000000000000000000000000000000000\n";
	static const struct {
		const char *tail;
		kh_err err;
		size_t line;
	} cases[] = {
		{"seq all 0\n", KH_OK, 0},
		{"seq all 0\n# comment\n\nseq card 0000000A 3\n", KH_OK, 0},
		{"seq all x\n", KH_ERR_FORMAT, 4},
		{"seq all 0\nseq all 1\n", KH_ERR_FORMAT, 5},
		{"seq all 0\nseq card 0000000a 3\n", KH_ERR_FORMAT, 5}, /* upper-case hex only */
		{"seq all 0\nseq card 0A 3\n", KH_ERR_FORMAT, 5},
		{"seq all 0\nseq card 0000000A 3\nseq card 0000000A 4\n", KH_ERR_FORMAT, 6},
		{"seq all 0\nseq group 1 99999999999\n", KH_ERR_FORMAT, 5},
		{"seq all 0\nservice 1 2 00\n", KH_ERR_FORMAT, 5},
		{"seq all 0\nservice 1 1 0000000000000000000000000000000000000000000000000000000000000000\n",
		 KH_ERR_FORMAT, 5}, /* same id and version twice */
		{"seq all 0\nservice 1 2 0000000000000000000000000000000000000000000000000000000000000000\n"
		 "service 1 3 0000000000000000000000000000000000000000000000000000000000000000\n",
		 KH_ERR_FORMAT, 6}, /* a third version */
		{"seq all 0\nservice 256 1 0000000000000000000000000000000000000000000000000000000000000000\n",
		 KH_ERR_FORMAT, 5},
		{"seq all 0\nbogus\n", KH_ERR_FORMAT, 5},
		{"seq all 0 \n", KH_ERR_FORMAT, 4},
		{"seq all 0", KH_ERR_FORMAT, 4}, /* no final newline */
		{"", KH_ERR_FORMAT, 0},          /* no seq all */
	};
	struct kh_headend_keys *k;
	char buf[1024];
	size_t line;
	char *dir = kh_test_tmpdir(), *p = path_in(dir, "bad.keys");

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(buf, sizeof buf, "%s%s", good_head, cases[i].tail);
		write_text(p, buf, 0600);
		line = 777;
		k = NULL;
		assert_int_equal(kh_headend_keys_load(p, &k, &line), cases[i].err);
		if (cases[i].err != KH_OK) {
			assert_null(k);
			assert_int_equal(line, cases[i].line);
		}
		kh_headend_keys_free(k);
	}
	write_text(p, "keyhole-headend-keys 2\nmaster 00\n", 0600);
	assert_int_equal(kh_headend_keys_load(p, &k, &line), KH_ERR_VERSION);
	assert_int_equal(line, 1);
	write_text(p, "something else\n", 0600);
	assert_int_equal(kh_headend_keys_load(p, &k, &line), KH_ERR_FORMAT);
	assert_int_equal(line, 1);
	write_text(p, "keyhole-headend-keys 1\nmaster 0102\nseq all 0\n", 0600);
	assert_int_equal(kh_headend_keys_load(p, &k, &line), KH_ERR_FORMAT);
	assert_int_equal(line, 2);
	free(p);
	kh_test_rmdir(dir);
}

/* Walk an EMM's commands and count them by tag; the entitle one is checked field by field. */
static void check_cmds(const uint8_t *cmds, size_t n, unsigned counts[16], uint32_t product)
{
	struct kh_rd r;
	struct kh_tlv t;
	int got;

	kh_rd_init(&r, cmds, n);
	while ((got = kh_tlv_next(&r, &t)) == 1) {
		assert_true(t.tag < 16);
		counts[t.tag]++;
		if (t.tag == KH_EMM_ENTITLE) {
			assert_int_equal(t.len, 20);
			assert_int_equal((uint32_t)t.v[0] << 24 | (uint32_t)t.v[1] << 16 | t.v[2] << 8 | t.v[3], product);
		}
	}
	assert_int_equal(got, 0);
}

static void test_emm(void **state)
{
	struct kh_headend_keys *k;
	struct kh_headend_emm_req req = {0};
	uint8_t cmds[256], sec[KH_EMM_MAX], out[KH_EMM_MAX], kp[32];
	struct kh_emm_hdr h;
	struct kh_wr w;
	size_t len, n, line;
	uint32_t seq;
	unsigned counts[16] = {0};
	uint8_t emm_signer_pk[32];
	uint32_t signer_serial = 0;
	char *dir = kh_test_tmpdir(), *p = path_in(dir, "h.keys");

	(void)state;
	assert_int_equal(kh_headend_keys_create(master, &k), KH_OK);
	/* a group EMM needs the EMM signer: an authority's, key and certificate together */
	{
		struct kh_cas_signer sg;
		uint8_t der[KH_CERT_MAX];
		size_t dl;
		char *ad = path_in(dir, "authority");
		assert_int_equal(kh_authority_init(ad, "Headend test"), KH_OK);
		assert_int_equal(kh_authority_signer_load(ad, KH_ROLE_EMM_SIGNER, &sg, der, sizeof der, &dl), KH_OK);
		assert_int_equal(kh_headend_keys_set_signer(k, KH_ROLE_EMM_SIGNER, &sg, der, dl), KH_OK);
		assert_int_equal(kh_ed25519_public(sg.sk, emm_signer_pk), KH_OK);
		signer_serial = sg.serial;
		kh_wipe(&sg, sizeof sg);
		free(ad);
	}
	assert_int_equal(kh_headend_keys_save_new(k, p), KH_OK);
	kh_headend_keys_free(k);

	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_entitle(&w, 42, 1000, 2000), KH_OK);
	assert_int_equal(kh_emm_put_add_credit(&w, 500, 1), KH_OK);
	req.type = KH_EMM_UNIQUE;
	req.addr = 0x0000000A;
	req.cmds = cmds;
	req.cmds_len = w.len;
	req.service_keys = 1;
	req.set_group = 1;
	req.group = 3;
	req.set_all_key = 1;
	assert_int_equal(kh_headend_emm_issue(p, &req, sec, sizeof sec, &len, &seq, &line), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_emm_peek(sec, len, &h), KH_OK);
	assert_int_equal(h.table_id, KH_EMM_TID_UNIQUE);
	assert_int_equal(h.addr, 0x0A);
	assert_int_equal(h.seq, 1);
	assert_int_equal(kh_cas_card_kp(master, 0x0A, kp), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, len, out, sizeof out, &n), KH_OK);
	check_cmds(out, n, counts, 42);
	assert_int_equal(counts[KH_EMM_ENTITLE], 1);
	assert_int_equal(counts[KH_EMM_ADD_CREDIT], 1);
	assert_int_equal(counts[KH_EMM_SET_KEY], 1);
	assert_int_equal(counts[KH_EMM_SET_GROUP], 1);
	assert_int_equal(counts[KH_EMM_SET_ALL_KEY], 1);
	/* another card's key does not open it */
	assert_int_equal(kh_cas_card_kp(master, 0x0B, kp), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, len, out, sizeof out, &n), KH_ERR_AUTH);

	/* the seq persists and increases per address */
	assert_int_equal(kh_headend_emm_issue(p, &req, sec, sizeof sec, &len, &seq, &line), KH_OK);
	assert_int_equal(seq, 2);
	req.type = KH_EMM_GROUP;
	req.addr = 3;
	req.set_group = req.set_all_key = 0;
	assert_int_equal(kh_headend_emm_issue(p, &req, sec, sizeof sec, &len, &seq, &line), KH_OK);
	assert_int_equal(seq, 1);
	assert_int_equal(kh_cas_group_key(master, 3, kp), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, len, out, sizeof out, &n), KH_OK);
	/* signed by the key file's EMM signer */
	assert_int_equal(kh_emm_peek(sec, len, &h), KH_OK);
	assert_int_equal(h.signer, signer_serial);
	assert_int_equal(kh_emm_verify(emm_signer_pk, sec, len), KH_OK);
	sec[30] ^= 1;
	assert_int_equal(kh_emm_verify(emm_signer_pk, sec, len), KH_ERR_SIGNATURE);
	sec[30] ^= 1;
	req.type = KH_EMM_ALL;
	req.addr = 0;
	assert_int_equal(kh_headend_emm_issue(p, &req, sec, sizeof sec, &len, &seq, &line), KH_OK);
	assert_int_equal(kh_cas_all_key(master, kp), KH_OK);
	assert_int_equal(kh_emm_open(kp, sec, len, out, sizeof out, &n), KH_OK);
	/* SET_GROUP is for one card only; nothing issued then */
	req.set_group = 1;
	assert_int_equal(kh_headend_emm_issue(p, &req, sec, sizeof sec, &len, &seq, &line), KH_ERR_INVAL);
	assert_int_equal(kh_headend_keys_load(p, &k, &line), KH_OK);
	assert_int_equal(kh_headend_keys_seq(k, KH_EMM_UNIQUE, 0x0A), 2);
	assert_int_equal(kh_headend_keys_seq(k, KH_EMM_GROUP, 3), 1);
	assert_int_equal(kh_headend_keys_seq(k, KH_EMM_ALL, 0), 1);
	kh_headend_keys_free(k);
	/* a missing key file */
	assert_int_equal(kh_headend_emm_issue("/nonexistent/h.keys", &req, sec, sizeof sec, &len, &seq, &line),
			 KH_ERR_NOTFOUND);
	free(p);
	kh_test_rmdir(dir);
}

/* ---- the streaming scrambler on a synthetic programme ---- */

#define PMT_PID 0x0100
#define VID 0x0101 /* also the PCR PID */
#define AUD 0x0102
#define TICK_MS 10
#define TICKS 1700 /* 17 s: crypto periods 0..3 with 5 s periods */
#define PCR_MOD (((uint64_t)1 << 33) * 300)
#define PCR0 (PCR_MOD - 27000000ull * 7) /* wraps 7 s in */
#define PERIOD 5
#define LEAD_MS 1000
#define ECM_MS 100
#define ECM_PID 0x0FF0
#define EMM_PID 0x0FF1
#define BTIME 1700000000ull

struct outbuf {
	uint8_t *p;
	size_t n, cap; /* packets */
};

static kh_err sink(void *ctx, const uint8_t *pkts, size_t n)
{
	struct outbuf *o = ctx;
	if (o->n + n > o->cap) {
		o->cap = (o->n + n) * 2;
		o->p = realloc(o->p, o->cap * KH_TS_PACKET_LEN);
		assert_non_null(o->p);
	}
	memcpy(o->p + o->n * KH_TS_PACKET_LEN, pkts, n * KH_TS_PACKET_LEN);
	o->n += n;
	return KH_OK;
}

struct cwlog {
	uint32_t n;
	uint8_t cw[16][16];
	size_t len;
};

static void on_cw(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, size_t len)
{
	struct cwlog *l = ctx;
	assert_int_equal(svc, 0);
	assert_int_equal(cp, l->n);
	assert_true(l->n < 16);
	memcpy(l->cw[l->n++], cw, len);
	l->len = len;
}

/* program_info of make_input's PMT (none unless a test sets it) */
static const uint8_t *input_pmt_desc;
static size_t input_pmt_desc_len;

/* Input: PAT and PMT every 100 ms, per tick one video packet with PCR and one audio packet. */
static uint8_t *make_input(size_t *npk)
{
	uint8_t *in = malloc((size_t)TICKS * 4 * KH_TS_PACKET_LEN), sec[1024], pk[8 * KH_TS_PACKET_LEN];
	uint8_t cc_pat = 0, cc_pmt = 0, cc_v = 0, cc_a = 0, esd[] = {0x0A, 4, 'e', 'n', 'g', 0};
	struct kh_ts_pat pat = {0};
	struct kh_ts_pmt pmt = {0};
	size_t n = 0, plen, slen;

	assert_non_null(in);
	pat.tsid = 1;
	pat.current = 1;
	pat.n = 1;
	pat.prog[0].program_number = 1;
	pat.prog[0].pid = PMT_PID;
	pmt.program_number = 1;
	pmt.version = 4;
	pmt.current = 1;
	pmt.pcr_pid = VID;
	pmt.desc = input_pmt_desc;
	pmt.desc_len = input_pmt_desc_len;
	pmt.n = 2;
	pmt.es[0].stream_type = 0x02;
	pmt.es[0].pid = VID;
	pmt.es[1].stream_type = 0x03;
	pmt.es[1].pid = AUD;
	pmt.es[1].desc = esd;
	pmt.es[1].desc_len = sizeof esd;
	for (unsigned t = 0; t < TICKS; t++) {
		struct kh_ts_pkt h = {0};
		uint8_t af[7], pl[184];
		uint64_t pcr = (PCR0 + (uint64_t)t * TICK_MS * 27000) % PCR_MOD, base = pcr / 300, ext = pcr % 300;

		if (t % 10 == 0) {
			assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &slen), KH_OK);
			assert_int_equal(kh_ts_packetise(0, &cc_pat, sec, slen, pk, sizeof pk, &plen), KH_OK);
			memcpy(in + n++ * KH_TS_PACKET_LEN, pk, plen);
			assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &slen), KH_OK);
			assert_int_equal(kh_ts_packetise(PMT_PID, &cc_pmt, sec, slen, pk, sizeof pk, &plen), KH_OK);
			memcpy(in + n++ * KH_TS_PACKET_LEN, pk, plen);
		}
		af[0] = 0x10;
		af[1] = (uint8_t)(base >> 25);
		af[2] = (uint8_t)(base >> 17);
		af[3] = (uint8_t)(base >> 9);
		af[4] = (uint8_t)(base >> 1);
		af[5] = (uint8_t)((base & 1) << 7 | 0x7E | ext >> 8);
		af[6] = (uint8_t)ext;
		for (size_t i = 0; i < sizeof pl; i++)
			pl[i] = (uint8_t)(t * 7 + i * 13);
		h.pid = VID;
		h.pusi = t % 5 == 0;
		h.cc = cc_v++ & 15;
		assert_int_equal(kh_ts_build(in + n++ * KH_TS_PACKET_LEN, &h, af, sizeof af, pl, 176), KH_OK);
		h.pid = AUD;
		h.pusi = 0;
		h.cc = cc_a++ & 15;
		/* every fourth audio packet carries a short payload (a residue below one block) */
		assert_int_equal(kh_ts_build(in + n++ * KH_TS_PACKET_LEN, &h, NULL, 0, pl, t % 4 == 3 ? 11 : 184),
				 KH_OK);
	}
	*npk = n;
	return in;
}

static uint64_t pkt_pcr(const struct kh_ts_pkt *p)
{
	const uint8_t *a = p->af;
	uint64_t base = (uint64_t)a[1] << 25 | (uint64_t)a[2] << 17 | (uint64_t)a[3] << 9 | (uint64_t)a[4] << 1 |
			a[5] >> 7;
	return base * 300 + (((uint64_t)a[5] & 1) << 8 | a[6]);
}

static void make_emms(uint8_t *file, size_t cap, size_t *len)
{
	struct kh_headend_keys *k;
	struct kh_headend_emm_req req = {0};
	size_t n = 0, l;

	assert_int_equal(kh_headend_keys_create(master, &k), KH_OK);
	req.service_keys = 1;
	req.type = KH_EMM_UNIQUE;
	for (uint32_t ua = 1; ua <= 3; ua++) {
		req.addr = ua;
		assert_int_equal(kh_headend_emm_make(k, &req, file + n, cap - n, &l, NULL), KH_OK);
		n += l;
	}
	kh_headend_keys_free(k);
	*len = n;
}

static void run_alg(enum kh_scr_alg alg)
{
	struct kh_headend_cfg cfg = {.nsvc = 1};
	struct kh_headend *h;
	struct outbuf o = {0};
	struct cwlog log = {0};
	struct kh_ts_asm ecm_asm, emm_asm, pmt_asm, cat_asm;
	struct kh_scr *d;
	uint8_t *in, emmf[2048], sec[KH_TS_PRIVATE_MAX], skey[32];
	size_t nin, emm_len, n, vi = 0, ai = 0, emms_seen = 0, ecm_first_pkt = (size_t)-1;
	int cat_before_emm = 0;
	int cc[0x2000], got, first_scrambled = -1, have_pcr = 0, have_pmt = 0, have_cat = 0;
	uint64_t prev_el = 0, el = 0, ecm_first_el[8] = {0}, last_ecm_el = 0;
	uint32_t ecm_seen = 0, last_cp = 0, pending_cp = UINT32_MAX;
	unsigned npending = 0, pending_reps[8] = {0};
	uint64_t pend_prev = 0;

	in = make_input(&nin);
	make_emms(emmf, sizeof emmf, &emm_len);
	for (size_t i = 0; i < sizeof skey; i++)
		skey[i] = (uint8_t)(0xA0 + i);
	cfg.svc[0].alg = alg;
	cfg.svc[0].access = KH_ECM_PRODUCT;
	cfg.svc[0].product = 42;
	cfg.svc[0].key_id = 1;
	cfg.svc[0].key_version = 7;
	memcpy(cfg.svc[0].service_key, skey, 32);
	cfg.period_s = PERIOD;
	cfg.lead_ms = LEAD_MS;
	cfg.ecm_interval_ms = ECM_MS;
	cfg.emm_interval_ms = 100;
	cfg.svc[0].ecm_pid = ECM_PID;
	cfg.emm_pid = EMM_PID;
	cfg.ca_system_id = 0x4B48;
	cfg.time = BTIME;
	cfg.emm = emmf;
	cfg.emm_len = emm_len;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	kh_headend_set_cw_fn(h, on_cw, &log);
	/* fed in uneven chunks */
	for (size_t i = 0; i < nin;) {
		size_t c = nin - i < 333 ? nin - i : 333;
		assert_int_equal(kh_headend_feed(h, in + i * KH_TS_PACKET_LEN, c), KH_OK);
		i += c;
	}
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_free(h);
	/* 17 s with 5 s periods and 1 s lead: ECMs 0..3 */
	assert_int_equal(log.n, 4);
	assert_int_equal(log.len, kh_scr_keylen(alg));

	assert_int_equal(kh_scr_new(alg, 0, &d), KH_OK);
	assert_int_equal(kh_ts_asm_init(&ecm_asm, ECM_PID, KH_TS_PRIVATE_MAX), KH_OK);
	assert_int_equal(kh_ts_asm_init(&emm_asm, EMM_PID, KH_TS_PRIVATE_MAX), KH_OK);
	assert_int_equal(kh_ts_asm_init(&pmt_asm, PMT_PID, KH_TS_PSI_MAX), KH_OK);
	assert_int_equal(kh_ts_asm_init(&cat_asm, KH_TS_PID_CAT, KH_TS_PSI_MAX), KH_OK);
	for (size_t i = 0; i < 0x2000; i++)
		cc[i] = -1;

	for (size_t i = 0; i < o.n; i++) {
		uint8_t *pk = o.p + i * KH_TS_PACKET_LEN, copy[KH_TS_PACKET_LEN];
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(pk, KH_TS_PACKET_LEN, &p), KH_OK);
		/* continuity on every PID */
		if (p.payload_len) {
			if (cc[p.pid] >= 0)
				assert_int_equal(p.cc, (cc[p.pid] + 1) & 15);
			cc[p.pid] = p.cc;
		}
		if (p.pid == KH_TS_PID_CAT)
			cat_before_emm = 1;
		if (p.pid == EMM_PID) {
			struct kh_emm_hdr eh;
			/* a decoder learns the EMM PID from the CAT: the CAT comes first */
			assert_true(cat_before_emm);
			assert_int_equal(kh_ts_asm_push(&emm_asm, pk, KH_TS_PACKET_LEN), KH_OK);
			while ((got = kh_ts_asm_pop(&emm_asm, sec, sizeof sec, &n)) == 1) {
				assert_int_equal(kh_emm_peek(sec, n, &eh), KH_OK);
				emms_seen++;
			}
			assert_int_equal(got, 0);
			continue;
		}
		/* only the PSI that announces the service comes before the EMMs of the start */
		if (emms_seen < 3 && p.pid != KH_TS_PID_PAT && p.pid != KH_TS_PID_CAT && p.pid != PMT_PID)
			fail_msg("packet %zu (PID 0x%04X) before the three EMMs of the start", i, p.pid);
		if (p.pid == ECM_PID) {
			struct kh_ecm e;
			struct kh_ecm_hdr eh;
			assert_int_equal(kh_ts_asm_push(&ecm_asm, pk, KH_TS_PACKET_LEN), KH_OK);
			while ((got = kh_ts_asm_pop(&ecm_asm, sec, sizeof sec, &n)) == 1) {
				assert_int_equal(kh_ecm_peek(sec, n, &eh), KH_OK);
				assert_int_equal(kh_ecm_open(skey, sec, n, &e), KH_OK);
				assert_int_equal(e.h.key_id, 1);
				assert_int_equal(e.h.key_version, 7);
				assert_int_equal(e.h.table_id, e.h.cp & 1 ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN);
				assert_int_equal(e.alg, alg);
				assert_int_equal(e.access, KH_ECM_PRODUCT);
				assert_int_equal(e.product, 42);
				assert_int_equal(e.time, BTIME + (uint64_t)e.h.cp * PERIOD);
				assert_true(e.h.cp < log.n);
				/* CW_k in the slot of its parity, CW_{k-1} in the other */
				assert_memory_equal(e.h.cp & 1 ? e.cw_odd : e.cw_even, log.cw[e.h.cp], log.len);
				if (e.h.cp > 0)
					assert_memory_equal(e.h.cp & 1 ? e.cw_even : e.cw_odd, log.cw[e.h.cp - 1],
							    log.len);
				if (ecm_seen == 0 || e.h.cp != last_cp) {
					/* a new ECM: the next one in order; its CW goes into the descrambler */
					assert_int_equal(e.h.cp, ecm_seen == 0 ? 0 : last_cp + 1);
					assert_int_equal(kh_scr_set_key(d, (enum kh_scr_parity)(e.h.cp & 1),
									e.h.cp & 1 ? e.cw_odd : e.cw_even, e.cw_len),
							 KH_OK);
					if (e.h.cp == 0)
						ecm_first_pkt = i;
					pending_cp = e.h.cp; /* timing checked at the next PCR */
					npending = 1;
				} else {
					pending_cp = e.h.cp;
					npending = 2;
				}
				pend_prev = el;
				ecm_seen++;
				last_cp = e.h.cp;
				kh_wipe(&e, sizeof e);
			}
			assert_int_equal(got, 0);
			continue;
		}
		if (p.pid == PMT_PID) {
			struct kh_ts_pmt m;
			struct kh_ts_ca_desc ca;
			uint8_t mode;
			assert_int_equal(kh_ts_asm_push(&pmt_asm, pk, KH_TS_PACKET_LEN), KH_OK);
			while ((got = kh_ts_asm_pop(&pmt_asm, sec, sizeof sec, &n)) == 1) {
				assert_int_equal(kh_ts_pmt_parse(sec, n, &m), KH_OK);
				assert_int_equal(m.version, 5);
				assert_int_equal(m.n, 2);
				assert_int_equal(m.es[1].desc_len, 6); /* ES descriptors kept */
				assert_int_equal(kh_ts_ca_desc_find(m.desc, m.desc_len, 0x4B48, &ca), KH_OK);
				assert_int_equal(ca.ca_pid, ECM_PID);
				if (alg == KH_SCR_CSA2) {
					assert_int_equal(kh_ts_scrambling_desc_find(m.desc, m.desc_len, &mode),
							 KH_ERR_NOTFOUND);
				} else {
					assert_int_equal(kh_ts_scrambling_desc_find(m.desc, m.desc_len, &mode), KH_OK);
					assert_int_equal(mode, alg == KH_SCR_CISSA ? KH_TS_SCRAMBLING_CISSA1
										   : KH_TS_SCRAMBLING_IDSA);
				}
				if (!have_pmt)
					assert_true(have_cat); /* the CAT goes out with the PMT */
				have_pmt++;
			}
			continue;
		}
		if (p.pid == KH_TS_PID_CAT) {
			struct kh_ts_cat c;
			struct kh_ts_ca_desc ca;
			assert_int_equal(kh_ts_asm_push(&cat_asm, pk, KH_TS_PACKET_LEN), KH_OK);
			while ((got = kh_ts_asm_pop(&cat_asm, sec, sizeof sec, &n)) == 1) {
				assert_int_equal(kh_ts_cat_parse(sec, n, &c), KH_OK);
				assert_int_equal(kh_ts_ca_desc_find(c.desc, c.desc_len, 0x4B48, &ca), KH_OK);
				assert_int_equal(ca.ca_pid, EMM_PID);
				have_cat++;
			}
			continue;
		}
		if (p.pid == VID && p.af_len >= 7 && (p.af[0] & 0x10)) {
			uint64_t pcr = pkt_pcr(&p);
			prev_el = el;
			el = (pcr + PCR_MOD - PCR0) % PCR_MOD;
			have_pcr = 1;
			if (npending) {
				/* ECMs went out just before this PCR packet: lead and repetition */
				if (npending == 1 && pending_cp > 0) {
					uint64_t at = (uint64_t)pending_cp * PERIOD * 27000000 - LEAD_MS * 27000ull;
					assert_true(el >= at);
					assert_true(pend_prev < at);
					ecm_first_el[pending_cp] = el;
				} else if (npending == 2) {
					assert_int_equal(el - last_ecm_el, ECM_MS * 27000ull);
					pending_reps[pending_cp]++;
				}
				last_ecm_el = el;
				npending = 0;
			}
		}
		(void)prev_el;
		if ((p.pid == VID || p.pid == AUD) && p.payload_len) {
			unsigned k = (unsigned)(el / (PERIOD * 27000000ull));
			const uint8_t *orig;
			assert_true(have_pcr);
			assert_true(ecm_first_pkt < i);
			assert_int_equal(p.scrambling, 2 + (k & 1));
			if (first_scrambled < 0)
				first_scrambled = (int)i;
			/* the n-th output packet of a component is the n-th input packet of it */
			for (;;) {
				struct kh_ts_pkt q;
				size_t *idx = p.pid == VID ? &vi : &ai;
				assert_true(*idx < nin);
				orig = in + (*idx)++ * KH_TS_PACKET_LEN;
				assert_int_equal(kh_ts_parse(orig, KH_TS_PACKET_LEN, &q), KH_OK);
				if (q.pid == p.pid)
					break;
			}
			memcpy(copy, pk, sizeof copy);
			assert_int_equal(kh_scr_descramble(d, copy, 1, NULL), KH_OK);
			assert_memory_equal(copy, orig, KH_TS_PACKET_LEN);
		}
	}
	assert_true(have_pmt >= 10);
	assert_true(have_cat >= 10);
	assert_true(emms_seen > 3 + 100); /* the three at the start, then one every 100 ms */
	assert_int_equal(last_cp, 3);
	for (unsigned k = 1; k < 3; k++) {
		assert_true(ecm_first_el[k] > 0);
		/* repeated every 100 ms until the next ECM: a period's worth */
		assert_in_range(pending_reps[k], PERIOD * 1000 / ECM_MS - 2, PERIOD * 1000 / ECM_MS);
	}
	assert_true(first_scrambled > 0);
	kh_scr_free(d);
	free(o.p);
	free(in);
}

static void test_scramble_csa2(void **state)
{
	(void)state;
	run_alg(KH_SCR_CSA2);
}

static void test_scramble_cissa(void **state)
{
	(void)state;
	run_alg(KH_SCR_CISSA);
}

static void test_scramble_idsa(void **state)
{
	(void)state;
	run_alg(KH_SCR_IDSA);
}

static void test_collision_and_config(void **state)
{
	struct kh_headend_cfg cfg = {.nsvc = 1};
	struct kh_headend *h;
	struct outbuf o = {0};
	uint8_t *in, bad[3] = {0x82, 0x70, 0x05};
	size_t nin;

	(void)state;
	in = make_input(&nin);
	cfg.svc[0].alg = KH_SCR_CSA2;
	cfg.svc[0].access = KH_ECM_PRODUCT;
	cfg.period_s = 10;
	cfg.lead_ms = 1000;
	cfg.ecm_interval_ms = 100;
	cfg.emm_interval_ms = 100;
	cfg.svc[0].ecm_pid = AUD; /* a component */
	cfg.emm_pid = EMM_PID;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, 50), KH_ERR_EXISTS);
	assert_non_null(strstr(kh_headend_why(h), "0x0102"));
	assert_int_equal(kh_headend_feed(h, in, 1), KH_ERR_EXISTS); /* sticky */
	kh_headend_free(h);
	cfg.svc[0].ecm_pid = PMT_PID; /* in the PAT */
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, 50), KH_ERR_EXISTS);
	kh_headend_free(h);
	/* the wrong program */
	cfg.svc[0].ecm_pid = ECM_PID;
	cfg.svc[0].program = 9;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, 50), KH_ERR_NOTFOUND);
	kh_headend_free(h);
	/* no PMT at all */
	cfg.svc[0].program = 0;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_ERR_NOTFOUND);
	kh_headend_free(h);
	/* configuration refused */
	cfg.lead_ms = 10000;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_ERR_INVAL);
	cfg.lead_ms = 1000;
	cfg.period_s = 4;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_ERR_INVAL);
	cfg.period_s = 10;
	cfg.emm_pid = ECM_PID;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_ERR_INVAL);
	cfg.emm_pid = EMM_PID;
	cfg.emm = bad; /* an EMM file cut short */
	cfg.emm_len = sizeof bad;
	assert_int_not_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	free(o.p);
	free(in);
}

/* The EMM addresses on the EMM PID of o's packets [from, to), in order, into ua (at most cap). */
static size_t emm_addrs(const struct outbuf *o, size_t from, size_t to, uint32_t *ua, size_t cap)
{
	struct kh_ts_asm a;
	uint8_t sec[KH_TS_PRIVATE_MAX];
	size_t n, k = 0;
	int got;

	assert_int_equal(kh_ts_asm_init(&a, EMM_PID, KH_TS_PRIVATE_MAX), KH_OK);
	for (size_t i = from; i < to; i++) {
		const uint8_t *pk = o->p + i * KH_TS_PACKET_LEN;
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(pk, KH_TS_PACKET_LEN, &p), KH_OK);
		if (p.pid != EMM_PID)
			continue;
		assert_int_equal(kh_ts_asm_push(&a, pk, KH_TS_PACKET_LEN), KH_OK);
		while ((got = kh_ts_asm_pop(&a, sec, sizeof sec, &n)) == 1) {
			struct kh_emm_hdr eh;
			assert_int_equal(kh_emm_peek(sec, n, &eh), KH_OK);
			assert_true(k < cap);
			ua[k++] = eh.addr;
		}
	}
	return k;
}

/*
 * EMMs added while the engine runs (the continuous feed from the center): they go out next, in
 * order, then join the cycle; a malformed addition is refused whole; an addition before the
 * start joins the start's burst.
 */
static void test_emm_add(void **state)
{
	struct kh_headend_cfg cfg = {.nsvc = 1};
	struct kh_headend *h;
	struct outbuf o = {0};
	uint8_t *in, emmf[2048], bad[3] = {0x82, 0x70, 0x05};
	size_t nin, emm_len, len1, half, at, n, nb, j;
	uint32_t ua[4096];

	(void)state;
	in = make_input(&nin);
	make_emms(emmf, sizeof emmf, &emm_len); /* cards 1, 2, 3 */
	{
		size_t off = 0, sn;
		const uint8_t *sec;
		assert_int_equal(kh_headend_emm_next(emmf, emm_len, &off, &sec, &sn), 1);
		assert_int_equal(kh_headend_emm_next(emmf, emm_len, &off, &sec, &sn), 1);
		len1 = off; /* cards 1 and 2 */
	}
	cfg.svc[0].alg = KH_SCR_CSA2;
	cfg.svc[0].access = KH_ECM_PRODUCT;
	cfg.period_s = 10;
	cfg.lead_ms = 1000;
	cfg.ecm_interval_ms = 100;
	cfg.emm_interval_ms = 100;
	cfg.svc[0].ecm_pid = ECM_PID;
	cfg.emm_pid = EMM_PID;
	cfg.emm = emmf; /* cards 1 and 2 */
	cfg.emm_len = len1;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	half = nin / 2;
	assert_int_equal(kh_headend_feed(h, in, half), KH_OK);
	assert_int_not_equal(kh_headend_emm_add(h, bad, sizeof bad), KH_OK);
	assert_int_equal(kh_headend_emm_add(h, NULL, 0), KH_OK);
	at = o.n; /* everything before this went out before the addition */
	assert_int_equal(kh_headend_emm_add(h, emmf + len1, emm_len - len1), KH_OK); /* card 3 */
	assert_int_equal(kh_headend_feed(h, in + half * KH_TS_PACKET_LEN, nin - half), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_free(h);

	/* before the addition: cards 1 and 2 in turn (the engine stages up to 512 packets: what the
	 * sink had got at the addition is a lower bound) */
	nb = emm_addrs(&o, 0, at, ua, 4096);
	assert_true(nb > 5);
	n = emm_addrs(&o, 0, o.n, ua, 4096);
	for (j = 0; j < n && ua[j] == (j % 2 ? 2u : 1u); j++)
		;
	assert_true(j >= nb && j > 0);
	assert_true(n > j + 8);
	/* then card 3 at once (not when the cycle reaches it), and the cycle goes on where it was;
	 * card 3 is at its end now: after card 1 comes 2, 3, 1; after card 2 comes 3, 1, 2 */
	assert_int_equal(ua[j], 3);
	if (ua[j - 1] == 1) {
		assert_int_equal(ua[j + 1], 2);
		assert_int_equal(ua[j + 2], 3);
	} else {
		assert_int_equal(ua[j + 1], 3);
		assert_int_equal(ua[j + 2], 1);
	}
	for (size_t i = j + 4; i < n; i++)
		assert_int_equal(ua[i], ua[i - 3]);

	/* added before the first PMT: part of the start's burst, each once, in order */
	free(o.p);
	memset(&o, 0, sizeof o);
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_emm_add(h, emmf + len1, emm_len - len1), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, 40), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_free(h);
	n = emm_addrs(&o, 0, o.n, ua, 4096);
	assert_true(n >= 3);
	assert_int_equal(ua[0], 1);
	assert_int_equal(ua[1], 2);
	assert_int_equal(ua[2], 3);
	free(o.p);
	free(in);
}

/* ---- damaged input ---- */

/*
 * What the CLI's reader does: bytes arrive `chunk` at a time into a buffer of `room`, the sync
 * finds packets, which are appended to out (*nout packets).
 */
static void sync_all(const uint8_t *bytes, size_t len, size_t chunk, uint8_t *out, size_t *nout,
		     struct kh_headend_sync *s)
{
	enum { ROOM = 4 * KH_TS_PACKET_LEN };
	uint8_t buf[ROOM];
	size_t have = 0, given = 0;
	int eof = 0;

	kh_headend_sync_init(s);
	*nout = 0;
	for (;;) {
		size_t off, n, used;
		if (!eof && have < ROOM) { /* read */
			size_t take = chunk < ROOM - have ? chunk : ROOM - have;
			if (take > len - given)
				take = len - given;
			memcpy(buf + have, bytes + given, take);
			have += take;
			given += take;
			eof = given == len;
		}
		do {
			used = kh_headend_sync_find(s, buf, have, eof, &off, &n);
			assert_true(used <= have);
			assert_true(off + n * KH_TS_PACKET_LEN <= used);
			for (size_t i = 0; i < n; i++)
				assert_int_equal(buf[off + i * KH_TS_PACKET_LEN], 0x47);
			memcpy(out + *nout * KH_TS_PACKET_LEN, buf + off, n * KH_TS_PACKET_LEN);
			*nout += n;
			memmove(buf, buf + used, have - used);
			have -= used;
		} while (used && have);
		if (eof && have == 0)
			break;
		assert_true(eof ? used > 0 || have == 0 : 1); /* at the end every call moves on */
	}
}

/* Each damage, each chunk size: exactly the intact packets come out, the damage is counted. */
static void test_sync(void **state)
{
	static const size_t chunks[] = {1, 7, 187, 188, 189, 500, 1 << 20};
	uint8_t *in, *bytes, *want, *out;
	size_t nin, np = 60, len, nwant, nout;
	struct kh_headend_sync s;
	const size_t k = 25; /* the damaged packet */

	(void)state;
	in = make_input(&nin);
	assert_true(nin > np);
	bytes = malloc((np + 4) * KH_TS_PACKET_LEN);
	want = malloc((np + 4) * KH_TS_PACKET_LEN);
	out = malloc((np + 4) * KH_TS_PACKET_LEN);
	assert_non_null(bytes);
	assert_non_null(want);
	assert_non_null(out);
	for (int kind = 0; kind < 7; kind++) {
		uint64_t skipped = 0, cut = 0, gaps = 0;
		len = 0;
		nwant = 0;
		switch (kind) {
		case 0: /* clean */
			memcpy(bytes, in, np * KH_TS_PACKET_LEN);
			len = np * KH_TS_PACKET_LEN;
			break;
		case 1: /* 100 bytes of garbage in front, with sync bytes at the wrong spacing */
			for (size_t i = 0; i < 100; i++)
				bytes[i] = i % 37 == 0 ? 0x47 : (uint8_t)(i * 11);
			memcpy(bytes + 100, in, np * KH_TS_PACKET_LEN);
			len = 100 + np * KH_TS_PACKET_LEN;
			skipped = 100;
			gaps = 1;
			break;
		case 2: /* one byte lost in packet k */
			memcpy(bytes, in, k * KH_TS_PACKET_LEN + 50);
			memcpy(bytes + k * KH_TS_PACKET_LEN + 50, in + k * KH_TS_PACKET_LEN + 51,
			       (np - k) * KH_TS_PACKET_LEN - 51);
			len = np * KH_TS_PACKET_LEN - 1;
			skipped = 187;
			gaps = 1;
			break;
		case 3: /* one byte added in packet k */
			memcpy(bytes, in, k * KH_TS_PACKET_LEN + 50);
			bytes[k * KH_TS_PACKET_LEN + 50] = 0x47;
			memcpy(bytes + k * KH_TS_PACKET_LEN + 51, in + k * KH_TS_PACKET_LEN + 50,
			       (np - k) * KH_TS_PACKET_LEN - 50);
			len = np * KH_TS_PACKET_LEN + 1;
			skipped = 189;
			gaps = 1;
			break;
		case 4: /* the final packet cut short */
			memcpy(bytes, in, np * KH_TS_PACKET_LEN);
			len = np * KH_TS_PACKET_LEN - 88;
			cut = 100;
			break;
		case 5: /* no packet at all */
			for (size_t i = 0; i < 1000; i++)
				bytes[i] = (uint8_t)(i * 7 + 3) == 0x47 ? 0 : (uint8_t)(i * 7 + 3);
			len = 1000;
			skipped = 1000;
			gaps = 1;
			break;
		case 6: /* garbage in the middle between two whole packets, and twice */
			memcpy(bytes, in, 10 * KH_TS_PACKET_LEN);
			memset(bytes + 10 * KH_TS_PACKET_LEN, 0x47, 33);
			memcpy(bytes + 10 * KH_TS_PACKET_LEN + 33, in + 10 * KH_TS_PACKET_LEN, 30 * KH_TS_PACKET_LEN);
			len = 40 * KH_TS_PACKET_LEN + 33;
			memset(bytes + len, 0, 5);
			memcpy(bytes + len + 5, in + 40 * KH_TS_PACKET_LEN, 20 * KH_TS_PACKET_LEN);
			len += 5 + 20 * KH_TS_PACKET_LEN;
			/* the packet before a gap cannot be told from one that lost bytes, so it goes too;
			 * unless the gap begins with a sync byte, as the first does here */
			skipped = 33 + 5 + KH_TS_PACKET_LEN;
			gaps = 2;
			break;
		}
		for (size_t i = 0; i < np; i++) {
			int lost = (kind == 2 || kind == 3) ? i == k
				   : kind == 4		    ? i == np - 1
				   : kind == 5		    ? 1
				   : kind == 6		    ? i == 39
							    : 0;
			if (!lost)
				memcpy(want + nwant++ * KH_TS_PACKET_LEN, in + i * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN);
		}
		for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
			sync_all(bytes, len, chunks[c], out, &nout, &s);
			assert_int_equal(nout, nwant);
			assert_memory_equal(out, want, nwant * KH_TS_PACKET_LEN > 0 ? nwant * KH_TS_PACKET_LEN : 1);
			assert_int_equal(s.packets, nwant);
			assert_int_equal(s.skipped, skipped);
			assert_int_equal(s.cut, cut);
			assert_int_equal(s.gaps, gaps);
		}
	}
	free(bytes);
	free(want);
	free(out);
	free(in);
}

/* One packet of pid with a payload of 184 bytes (cc 0). */
static void one_packet(uint8_t *out, uint16_t pid)
{
	struct kh_ts_pkt h = {0};
	uint8_t pl[184] = {0};
	h.pid = pid;
	assert_int_equal(kh_ts_build(out, &h, NULL, 0, pl, sizeof pl), KH_OK);
}

/* What PIDs an input uses, and a free one picked past them. */
static void test_census(void **state)
{
	struct kh_headend_census *c;
	uint8_t *in, sec[1024], pk[4 * KH_TS_PACKET_LEN], cad[] = {0x09, 4, 0x12, 0x34, 0xE5, 0x00};
	struct kh_ts_pmt pmt = {0};
	struct kh_ts_pat pat = {0};
	size_t nin, slen, plen;
	uint16_t prog, pid;
	uint8_t cc = 0;

	(void)state;
	in = make_input(&nin);
	assert_int_equal(kh_headend_census_new(&c), KH_OK);
	assert_int_equal(kh_headend_census_complete(c), 0);
	kh_headend_census_feed(c, in, 1); /* the PAT alone: its PMT is still to come */
	assert_int_equal(kh_headend_census_complete(c), 0);
	assert_int_equal(kh_headend_census_use(c, PMT_PID, &prog), KH_HEADEND_PID_PMT);
	assert_int_equal(prog, 1);
	kh_headend_census_feed(c, in + KH_TS_PACKET_LEN, 40);
	assert_int_equal(kh_headend_census_complete(c), 1);
	assert_int_equal(kh_headend_census_use(c, VID, &prog), KH_HEADEND_PID_COMPONENT);
	assert_int_equal(prog, 1);
	assert_int_equal(kh_headend_census_use(c, AUD, NULL), KH_HEADEND_PID_COMPONENT);
	assert_int_equal(kh_headend_census_use(c, 0, NULL), KH_HEADEND_PID_CARRIED);
	assert_int_equal(kh_headend_census_use(c, ECM_PID, NULL), KH_HEADEND_PID_FREE);
	assert_int_equal(kh_headend_census_pick(c, ECM_PID, EMM_PID, &pid), KH_OK);
	assert_int_equal(pid, ECM_PID);
	assert_int_equal(kh_headend_census_pick(c, ECM_PID, ECM_PID, &pid), KH_OK);
	assert_int_equal(pid, ECM_PID + 1);
	assert_int_equal(kh_headend_census_pick(c, PMT_PID, 0, &pid), KH_OK);
	assert_int_equal(pid, AUD + 1); /* past the PMT, video and audio PIDs */
	assert_int_equal(kh_headend_census_pick(c, 0x0010, 0, &pid), KH_ERR_INVAL);

	/* a second programme whose PMT names a component on 0x0FF0 and another CA system's ECMs on
	 * 0x0500; a packet on 0x1FFE that no table names */
	pat.tsid = 1;
	pat.current = 1;
	pat.n = 2;
	pat.prog[0].program_number = 1;
	pat.prog[0].pid = PMT_PID;
	pat.prog[1].program_number = 2;
	pat.prog[1].pid = 0x0200;
	assert_int_equal(kh_ts_pat_build(&pat, sec, sizeof sec, &slen), KH_OK);
	assert_int_equal(kh_ts_packetise(0, &cc, sec, slen, pk, sizeof pk, &plen), KH_OK);
	kh_headend_census_feed(c, pk, plen / KH_TS_PACKET_LEN);
	assert_int_equal(kh_headend_census_complete(c), 0); /* programme 2's PMT not seen yet */
	pmt.program_number = 2;
	pmt.current = 1;
	pmt.pcr_pid = KH_TS_PID_NULL;
	pmt.desc = cad;
	pmt.desc_len = sizeof cad;
	pmt.n = 1;
	pmt.es[0].stream_type = 0x02;
	pmt.es[0].pid = ECM_PID;
	cc = 0;
	assert_int_equal(kh_ts_pmt_build(&pmt, sec, sizeof sec, &slen), KH_OK);
	assert_int_equal(kh_ts_packetise(0x0200, &cc, sec, slen, pk, sizeof pk, &plen), KH_OK);
	kh_headend_census_feed(c, pk, plen / KH_TS_PACKET_LEN);
	assert_int_equal(kh_headend_census_complete(c), 1);
	assert_int_equal(kh_headend_census_use(c, ECM_PID, &prog), KH_HEADEND_PID_COMPONENT);
	assert_int_equal(prog, 2);
	assert_int_equal(kh_headend_census_use(c, 0x0500, &prog), KH_HEADEND_PID_CA);
	assert_int_equal(prog, 2);
	assert_int_equal(kh_headend_census_pick(c, ECM_PID, EMM_PID, &pid), KH_OK);
	assert_int_equal(pid, ECM_PID + 2);
	one_packet(pk, 0x1FFE);
	kh_headend_census_feed(c, pk, 1);
	assert_int_equal(kh_headend_census_use(c, 0x1FFE, NULL), KH_HEADEND_PID_CARRIED);
	assert_int_equal(kh_headend_census_pick(c, 0x1FFE, 0, &pid), KH_OK);
	assert_int_equal(pid, 0x0020); /* wraps past the DVB tables' PIDs */
	kh_headend_census_free(c);
	free(in);
}

static void damaged_cfg(struct kh_headend_cfg *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->nsvc = 1;
	cfg->svc[0].alg = KH_SCR_CSA2;
	cfg->svc[0].access = KH_ECM_PRODUCT;
	cfg->period_s = 10;
	cfg->lead_ms = 1000;
	cfg->ecm_interval_ms = 100;
	cfg->emm_interval_ms = 100;
	cfg->svc[0].ecm_pid = ECM_PID;
	cfg->emm_pid = EMM_PID;
}

/* Index of the i-th audio packet after the first PMT. */
static size_t nth_audio(const uint8_t *in, size_t nin, size_t i)
{
	for (size_t j = 2; j < nin; j++) {
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(in + j * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &p), KH_OK);
		if (p.pid == AUD && i-- == 0)
			return j;
	}
	fail();
	return 0;
}

/*
 * One damaged packet costs that packet, counted: one that does not parse, a component packet
 * that arrives scrambled, a packet on the ECM PID. A run of KH_HEADEND_SCRAMBLED_RUN component
 * packets arriving scrambled is a programme scrambled already: refused.
 */
static void test_damaged_packets(void **state)
{
	struct kh_headend_cfg cfg;
	struct kh_headend_stats st;
	struct kh_headend *h;
	struct outbuf clean = {0}, o = {0};
	uint8_t *in, *bad, foreign[KH_TS_PACKET_LEN];
	size_t nin, a, b;

	(void)state;
	in = make_input(&nin);
	damaged_cfg(&cfg);
	assert_int_equal(kh_headend_new(&cfg, sink, &clean, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, nin), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_stats(h, &st);
	assert_int_equal(st.damaged + st.scrambled_in + st.foreign, 0);
	kh_headend_free(h);

	bad = malloc(nin * KH_TS_PACKET_LEN);
	assert_non_null(bad);
	memcpy(bad, in, nin * KH_TS_PACKET_LEN);
	a = nth_audio(in, nin, 100);
	b = nth_audio(in, nin, 200);
	bad[a * KH_TS_PACKET_LEN + 3] &= 0xCF; /* adaptation_field_control 00: reserved */
	bad[b * KH_TS_PACKET_LEN + 3] |= 0x80; /* TSC 10: scrambled */
	one_packet(foreign, ECM_PID);
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, bad, 300), KH_OK);
	assert_int_equal(kh_headend_feed(h, foreign, 1), KH_OK);
	assert_int_equal(kh_headend_feed(h, bad + 300 * KH_TS_PACKET_LEN, nin - 300), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_stats(h, &st);
	assert_int_equal(st.damaged, 1);
	assert_int_equal(st.scrambled_in, 1);
	assert_int_equal(st.foreign, 1);
	assert_int_equal(st.in, nin + 1);
	kh_headend_free(h);
	assert_int_equal(o.n, clean.n - 2); /* the two damaged packets, nothing else */
	free(o.p);

	/* KH_HEADEND_SCRAMBLED_RUN - 1 component packets in a row arrive scrambled: dropped; one more
	 * and the programme is scrambled already */
	for (int run = KH_HEADEND_SCRAMBLED_RUN - 1; run <= KH_HEADEND_SCRAMBLED_RUN; run++) {
		int n = 0;
		memcpy(bad, in, nin * KH_TS_PACKET_LEN);
		for (size_t j = a; j < nin && n < run; j++) {
			struct kh_ts_pkt p;
			assert_int_equal(kh_ts_parse(bad + j * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &p), KH_OK);
			if (p.pid == VID || p.pid == AUD) {
				bad[j * KH_TS_PACKET_LEN + 3] |= 0xC0;
				n++;
			}
		}
		memset(&o, 0, sizeof o);
		assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
		if (run < KH_HEADEND_SCRAMBLED_RUN) {
			assert_int_equal(kh_headend_feed(h, bad, nin), KH_OK);
			assert_int_equal(kh_headend_finish(h), KH_OK);
			kh_headend_stats(h, &st);
			assert_int_equal(st.scrambled_in, (uint64_t)run);
		} else {
			assert_int_equal(kh_headend_feed(h, bad, nin), KH_ERR_FORMAT);
			assert_non_null(strstr(kh_headend_why(h), "scrambled already"));
		}
		kh_headend_free(h);
		free(o.p);
	}
	free(bad);
	free(clean.p);
	free(in);
}

/* ---- constant bitrate: null packets replaced; the input's CAT kept ---- */

/* The input with a null packet after each of its packets (a constant-bitrate multiplex's
 * padding), and first a CAT naming another CA system's EMM PID. */
static uint8_t *make_padded(size_t *npk)
{
	/* another CA system's ECM PID in the PMT too */
	static const uint8_t foreign_ecm[] = {KH_TS_DESC_CA, 4, 0x0B, 0x00, 0xE5, 0x01};
	uint8_t *in, *out, desc[16], sec[256], pk[2 * KH_TS_PACKET_LEN], cc = 0;
	struct kh_ts_cat cat = {0};
	struct kh_wr w;
	size_t nin, n = 0, slen, plen;

	input_pmt_desc = foreign_ecm;
	input_pmt_desc_len = sizeof foreign_ecm;
	in = make_input(&nin);
	input_pmt_desc = NULL;
	input_pmt_desc_len = 0;
	out = malloc((2 * nin + 1) * KH_TS_PACKET_LEN);
	assert_non_null(out);
	kh_wr_init(&w, desc, sizeof desc);
	assert_int_equal(kh_ts_ca_desc_put(&w, 0x0B00, 0x0500, NULL, 0), KH_OK);
	cat.version = 3;
	cat.current = 1;
	cat.desc = desc;
	cat.desc_len = w.len;
	assert_int_equal(kh_ts_cat_build(&cat, sec, sizeof sec, &slen), KH_OK);
	assert_int_equal(kh_ts_packetise(KH_TS_PID_CAT, &cc, sec, slen, pk, sizeof pk, &plen), KH_OK);
	assert_int_equal(plen, KH_TS_PACKET_LEN);
	memcpy(out + n++ * KH_TS_PACKET_LEN, pk, KH_TS_PACKET_LEN);
	for (size_t i = 0; i < nin; i++) {
		uint8_t *q = out + (n + 1) * KH_TS_PACKET_LEN;
		memcpy(out + n * KH_TS_PACKET_LEN, in + i * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN);
		memset(q, 0xFF, KH_TS_PACKET_LEN);
		q[0] = 0x47;
		q[1] = 0x1F;
		q[3] = 0x10;
		n += 2;
	}
	free(in);
	*npk = n;
	return out;
}

/* The last CAT of an output holds the foreign CA descriptor and ours, version 4. */
static void check_cat(const struct outbuf *o)
{
	const uint8_t *sec = NULL;
	struct kh_ts_cat cat;
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, len;
	int foreign = 0, ours = 0;

	for (size_t i = 0; i < o->n; i++) {
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(o->p + i * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &p), KH_OK);
		if (p.pid == KH_TS_PID_CAT && p.pusi)
			sec = p.payload + 1 + p.payload[0];
	}
	assert_non_null(sec);
	assert_int_equal(kh_ts_cat_parse(sec, 3 + ((size_t)(sec[1] & 0x0F) << 8 | sec[2]), &cat), KH_OK);
	assert_int_equal(cat.version, 4);
	kh_ts_desc_it_init(&it, cat.desc, cat.desc_len);
	while (kh_ts_desc_next(&it, &tag, &body, &len) == 1) {
		struct kh_ts_ca_desc ca;
		assert_int_equal(tag, KH_TS_DESC_CA);
		assert_int_equal(kh_ts_ca_desc_parse(body, len, &ca), KH_OK);
		foreign += ca.ca_system_id == 0x0B00 && ca.ca_pid == 0x0500;
		ours += ca.ca_system_id == 0x4B48 && ca.ca_pid == EMM_PID;
	}
	assert_int_equal(foreign, 1);
	assert_int_equal(ours, 1);
}

/* The last PMT of an output holds the foreign CA descriptor and ours. */
static void check_pmt(const struct outbuf *o)
{
	const uint8_t *sec = NULL;
	struct kh_ts_pmt pmt;
	struct kh_ts_ca_desc ca;
	int foreign = 0, ours = 0;

	for (size_t i = 0; i < o->n; i++) {
		struct kh_ts_pkt p;
		assert_int_equal(kh_ts_parse(o->p + i * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &p), KH_OK);
		if (p.pid == PMT_PID && p.pusi)
			sec = p.payload + 1 + p.payload[0];
	}
	assert_non_null(sec);
	assert_int_equal(kh_ts_pmt_parse(sec, 3 + ((size_t)(sec[1] & 0x0F) << 8 | sec[2]), &pmt), KH_OK);
	foreign = kh_ts_ca_desc_find(pmt.desc, pmt.desc_len, 0x0B00, &ca) == KH_OK && ca.ca_pid == 0x0501;
	ours = kh_ts_ca_desc_find(pmt.desc, pmt.desc_len, 0x4B48, &ca) == KH_OK && ca.ca_pid == ECM_PID;
	assert_true(foreign && ours);
}

/* PCR packets of a stream: index and value, at most cap. */
static size_t pcr_list(const uint8_t *pkts, size_t n, size_t *idx, uint64_t *val, size_t cap)
{
	size_t k = 0;

	for (size_t i = 0; i < n && k < cap; i++) {
		struct kh_ts_pkt p;
		if (kh_ts_parse(pkts + i * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &p) != KH_OK || p.pid != VID ||
		    p.af_len < 7 || !(p.af[0] & 0x10))
			continue;
		idx[k] = i;
		val[k++] = pkt_pcr(&p);
	}
	return k;
}

static void test_null_replace(void **state)
{
	static size_t ia[TICKS], ib[TICKS];
	static uint64_t va[TICKS], vb[TICKS];
	struct kh_headend_cfg cfg;
	struct kh_headend_stats st;
	struct kh_headend *h;
	struct outbuf o = {0};
	uint8_t *in;
	size_t nin, na, nb;

	(void)state;
	in = make_padded(&nin);
	damaged_cfg(&cfg);
	cfg.ca_system_id = 0x4B48;
	cfg.nulls = KH_HEADEND_NULL_REPLACE;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, nin), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_stats(h, &st);
	kh_headend_free(h);
	assert_int_equal(o.n, nin); /* not one packet more */
	assert_true(st.replaced > 100);
	assert_int_equal(st.inserted, 0);
	assert_true(st.ecm > 100);
	na = pcr_list(in, nin, ia, va, TICKS);
	nb = pcr_list(o.p, o.n, ib, vb, TICKS);
	assert_int_equal(na, TICKS);
	assert_int_equal(nb, na);
	for (size_t i = 0; i < na; i++) {
		assert_int_equal(ia[i], ib[i]);
		assert_int_equal(va[i], vb[i]);
	}
	check_cat(&o);
	check_pmt(&o);
	free(o.p);
	free(in);
}

/* No null packets: REPLACE refuses with the bandwidth; GROW inserts and restamps the PCRs. */
static void test_null_short(void **state)
{
	static size_t idx[TICKS];
	static uint64_t val[TICKS];
	struct kh_headend_cfg cfg;
	struct kh_headend_stats st;
	struct kh_headend *h;
	struct outbuf o = {0};
	uint8_t *in;
	size_t nin, n;
	uint64_t num, den;

	(void)state;
	in = make_input(&nin);
	damaged_cfg(&cfg);
	cfg.nulls = KH_HEADEND_NULL_REPLACE;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, nin), KH_ERR_TOO_LARGE);
	assert_non_null(strstr(kh_headend_why(h), "not enough null packets"));
	assert_non_null(strstr(kh_headend_why(h), "kbit/s"));
	kh_headend_free(h);
	free(o.p);

	memset(&o, 0, sizeof o);
	cfg.nulls = KH_HEADEND_NULL_GROW;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, nin), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_stats(h, &st);
	kh_headend_free(h);
	assert_true(o.n > nin);
	assert_int_equal(o.n, nin + st.inserted);
	assert_int_equal(st.restamped, TICKS - 1);
	/* every PCR on the line through the first two, by output index (the 2^33 wrap included) */
	n = pcr_list(o.p, o.n, idx, val, TICKS);
	assert_int_equal(n, TICKS);
	num = (val[1] + PCR_MOD - val[0]) % PCR_MOD;
	den = idx[1] - idx[0];
	for (size_t i = 2; i < n; i++) {
		uint64_t want = (val[0] + (uint64_t)((double)(idx[i] - idx[0]) * (double)num / (double)den)) % PCR_MOD;
		uint64_t d = (val[i] + PCR_MOD - want) % PCR_MOD;
		assert_true(d <= 1 || d >= PCR_MOD - 1);
	}
	/* and they moved: the input's are 10 ms apart per tick, the grown stream's are not */
	assert_true(val[n - 1] != (PCR0 + (uint64_t)(TICKS - 1) * TICK_MS * 27000) % PCR_MOD);
	free(o.p);
	free(in);
}

/* ---- ECMs from outside (the SCS side): the hook, and degraded mode ---- */

struct outside {
	uint32_t calls, fails, fail_cp, fail_n;
	uint32_t last_ok;                /* the CP of the last ECM had, + 1 (0: none) */
	uint8_t cw[8][KH_CAS_CW_MAX];    /* CW_c by c, as the asks gave them */
	size_t cw_len;
	uint8_t skey[32];
	size_t nsec;
	uint8_t sec[8][KH_ECM_MAX];      /* the ECMs handed out, in order */
	size_t sec_len[8];
};

/* An ECMG in miniature: ECM(c) with CW_c and CW_{c+1}, labelled c + 1, sealed as Keyhole's ECMG
 * does; it fails fail_n times for CP fail_cp. */
static kh_err outside_ecm(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, const uint8_t *next,
			  size_t cw_len, uint8_t *ecm, size_t cap, size_t *len)
{
	struct outside *o = ctx;
	struct kh_cas_signer sg = {0};
	struct kh_ecm e = {0};

	assert_int_equal(svc, 0);
	assert_true(cp < 7);
	assert_true(cap >= KH_ECM_MAX);
	o->calls++;
	/* asked in order: again for the same CP after a failure, else the next one */
	assert_int_equal(cp, o->last_ok);
	if (cp > 0) /* the chain: CW_cp is what the ask for cp - 1 gave as the next one */
		assert_memory_equal(cw, o->cw[cp], cw_len);
	memcpy(o->cw[cp], cw, cw_len);
	memcpy(o->cw[cp + 1], next, cw_len);
	o->cw_len = cw_len;
	if (cp == o->fail_cp && o->fails < o->fail_n) {
		o->fails++;
		return KH_ERR_TRANSPORT;
	}
	e.h.table_id = ((cp + 1) & 1u) ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
	e.h.key_id = 1;
	e.h.key_version = 1;
	e.h.cp = cp + 1;
	e.alg = KH_SCR_CSA2;
	e.cw_len = (uint8_t)cw_len;
	memcpy((cp & 1u) ? e.cw_odd : e.cw_even, cw, cw_len);
	memcpy((cp & 1u) ? e.cw_even : e.cw_odd, next, cw_len);
	e.access = KH_ECM_PRODUCT;
	e.product = 42;
	e.time = BTIME;
	assert_int_equal(kh_ecm_seal(o->skey, &sg, &e, ecm, cap, len), KH_OK);
	assert_true(o->nsec < 8);
	memcpy(o->sec[o->nsec], ecm, *len);
	o->sec_len[o->nsec++] = *len;
	o->last_ok = cp + 1;
	return KH_OK;
}

static void test_outside_ecm(void **state)
{
	struct kh_headend_cfg cfg = {.nsvc = 1};
	struct kh_headend *h;
	struct kh_headend_stats st;
	struct kh_headend_svc_stats ss;
	struct outbuf o = {0};
	struct outside x = {.fail_cp = 1, .fail_n = 60};
	struct kh_ts_asm ecm_asm;
	uint8_t *in, sec[KH_TS_PRIVATE_MAX];
	size_t nin, n, ii = 0, got_ecm = 0;
	uint32_t cur = 0;
	int last_par = 0, got;
	struct kh_scr *d;
	(void)state;

	in = make_input(&nin);
	cfg.svc[0].alg = KH_SCR_CSA2;
	cfg.svc[0].access = KH_ECM_PRODUCT;
	cfg.svc[0].product = 42;
	cfg.svc[0].ecm_pid = ECM_PID;
	cfg.period_s = PERIOD;
	cfg.lead_ms = LEAD_MS;
	cfg.ecm_interval_ms = ECM_MS;
	cfg.emm_interval_ms = 100;
	cfg.emm_pid = EMM_PID;
	cfg.ca_system_id = 0x4B48;
	assert_int_equal(kh_headend_new(&cfg, sink, &o, &h), KH_OK);
	assert_int_equal(kh_headend_set_ecm_fn(h, outside_ecm, &x, 40000), KH_ERR_INVAL);
	assert_int_equal(kh_headend_set_ecm_fn(h, outside_ecm, &x, 0), KH_OK);
	assert_int_equal(kh_headend_feed(h, in, nin), KH_OK);
	assert_int_equal(kh_headend_finish(h), KH_OK);
	kh_headend_stats(h, &st);
	assert_int_equal(kh_headend_svc_stats(h, 0, &ss), KH_OK);
	assert_int_equal(kh_headend_svc_stats(h, 1, &ss), KH_ERR_INVAL);
	kh_headend_free(h);
	/* ECM(1), due at 5 s, is late for 6 s: the period starting at 10 s keeps CW_1 (degraded), the
	 * one at 15 s takes CW_2; ECM(0), ECM(1), ECM(2) were had */
	assert_int_equal(x.fails, 60);
	assert_int_equal(st.ecm_late, 60);
	assert_int_equal(st.degraded, 1);
	assert_int_equal(x.nsec, 3);
	assert_int_equal(x.last_ok, 3);

	/* the ECMs on the ECM PID are those handed out, in order; each component packet opens with
	 * the CW of the CP its parity changes count to (degraded: no change at 10 s) */
	assert_int_equal(kh_ts_asm_init(&ecm_asm, ECM_PID, KH_TS_PRIVATE_MAX), KH_OK);
	assert_int_equal(kh_scr_new(KH_SCR_CSA2, 0, &d), KH_OK);
	for (size_t i = 0; i < o.n; i++) {
		uint8_t *p = o.p + i * KH_TS_PACKET_LEN;
		struct kh_ts_pkt op, ip;
		assert_int_equal(kh_ts_parse(p, KH_TS_PACKET_LEN, &op), KH_OK);
		if (op.pid == ECM_PID) {
			assert_int_equal(kh_ts_asm_push(&ecm_asm, p, KH_TS_PACKET_LEN), KH_OK);
			while ((got = kh_ts_asm_pop(&ecm_asm, sec, sizeof sec, &n)) == 1) {
				/* a repetition of the newest, or the next one */
				if (!(got_ecm && n == x.sec_len[got_ecm - 1] && memcmp(sec, x.sec[got_ecm - 1], n) == 0)) {
					assert_true(got_ecm < x.nsec);
					assert_int_equal(n, x.sec_len[got_ecm]);
					assert_memory_equal(sec, x.sec[got_ecm], n);
					got_ecm++;
				}
			}
			continue;
		}
		if ((op.pid != VID && op.pid != AUD) || !op.payload_len)
			continue;
		/* the next component packet of the input */
		for (;; ii++) {
			assert_true(ii < nin);
			assert_int_equal(kh_ts_parse(in + ii * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN, &ip), KH_OK);
			if ((ip.pid == VID || ip.pid == AUD) && ip.payload_len)
				break;
		}
		assert_int_not_equal(op.scrambling, KH_TS_SC_CLEAR);
		if ((op.scrambling == KH_TS_SC_ODD) != last_par) {
			last_par = op.scrambling == KH_TS_SC_ODD;
			cur++;
		}
		assert_int_equal(last_par, (int)(cur & 1u));
		assert_int_equal(kh_scr_set_key(d, (enum kh_scr_parity)(cur & 1u), x.cw[cur], x.cw_len), KH_OK);
		assert_int_equal(kh_scr_descramble(d, p, 1, NULL), KH_OK);
		assert_memory_equal(p, in + ii * KH_TS_PACKET_LEN, KH_TS_PACKET_LEN);
		ii++;
	}
	assert_int_equal(got_ecm, 3);
	assert_int_equal(cur, 2); /* CPs 0, 1 (ten seconds: degraded once), 2 */
	assert_int_equal(ss.period, 2);
	assert_int_equal(ss.degraded, 1);
	kh_scr_free(d);
	free(o.p);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys_roundtrip),
		cmocka_unit_test(test_keys_malformed),
		cmocka_unit_test(test_emm),
		cmocka_unit_test(test_scramble_csa2),
		cmocka_unit_test(test_scramble_cissa),
		cmocka_unit_test(test_scramble_idsa),
		cmocka_unit_test(test_collision_and_config),
		cmocka_unit_test(test_emm_add),
		cmocka_unit_test(test_sync),
		cmocka_unit_test(test_census),
		cmocka_unit_test(test_damaged_packets),
		cmocka_unit_test(test_null_replace),
		cmocka_unit_test(test_null_short),
		cmocka_unit_test(test_outside_ecm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
