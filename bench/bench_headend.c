/*
 * bench_headend: how many services one core scrambles in real time, per algorithm, with the
 * headend's streaming scrambler (include/keyhole/headend.h) on a 40 Mbit/s constant-bitrate
 * multiplex, next to the raw primitive on the same bytes in the same run.
 *
 * The multiplex, made in memory once: S seconds (-s, default 10) of 188-byte packets at
 * 40 Mbit/s, 8 programmes, each a video PID (~4.15 Mbit/s, carrying the programme's PCR every 20
 * to 40 ms, the programmes differing) and an audio PID (~0.2 Mbit/s); the PAT and the 8 PMTs
 * every 100 ms (the first ones in the first packets); null packets in the ~13 % left. Every PCR
 * is its packet's index in stream time: PCR0 + index * 188 * 8 / 40e6 s, so the stream is truly
 * constant-bitrate and the engine's clock runs at 40 Mbit/s.
 *
 * Per algorithm (csa2, cissa, idsa), per round:
 *   headend_<alg>       a new engine (8 services, each its own random service key, ECMs signed
 *                       by a random Ed25519 ECM signer, REPLACE mode, 10 s crypto periods, an
 *                       ECM every 100 ms per service) fed the whole multiplex in 7-packet
 *                       datagrams to kh_headend_finish, into a sink that only counts. Its
 *                       figure is the real-time factor: stream seconds per wall second, one
 *                       thread. headend_<alg>_services_per_core is 8 times that;
 *                       _services_per_core_cpu the same over the thread's CPU time instead
 *                       of wall time (the figure for a core of its own, when other work
 *                       shares this machine's).
 *   raw_<alg>           kh_scr_scramble alone over exactly the component packets the engine
 *                       scrambles, batched as the engine batches them: one call per programme
 *                       each time 2048 packets of the stream are staged or one programme has 256
 *                       to scramble (the engine's flush). Same unit.
 *   raw_<alg>_big       the same packets in calls of up to 1024 packets of one programme: what
 *                       the primitive does when batches are as large as it likes.
 * ratio=headend_<alg>_vs_raw is raw time / engine time within each round: the share of the
 * engine's time that is the cipher (1 would be a free engine); what is left is parsing, PSI,
 * ECMs, null replacement and the copies. ratio=raw_<alg>_vs_big says what the engine's batch
 * size costs the primitive itself. The _cpu ratios are the same over the thread's CPU time
 * (steadier when other work shares the machine). Every engine run is checked: as many packets
 * out as in, every component packet scrambled (as many as raw_<alg> scrambles), ECMs out for
 * every service, nothing inserted, the engine's stream time that of the multiplex; a run that is
 * not so ends the bench with exit status 1.
 *
 * R rounds (-r, default 7), the three algorithms interleaved within each round; medians over
 * rounds. -a ALG runs one algorithm only (for perf record). -p pins the process to one CPU.
 * Output: bench= and ratio= lines (bench/util.h), '#' lines are comments. Set-up (making the
 * multiplex, gathering the raw batches, copying the clear packets back before each raw pass) is
 * not timed; the engine's kh_headend_new is. docs/performance.md "Headend: a 40 Mbit/s
 * multiplex" has the figures.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dvbcsa/dvbcsa.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/headend.h"
#include "keyhole/scramble.h"
#include "keyhole/ts.h"

#include "util.h"

#define PL KH_TS_PACKET_LEN
#define NPROG 8
#define MUX_BPS 40e6
#define PKT_S (PL * 8 / MUX_BPS)    /* seconds per packet slot */
#define VIDEO_BPS 4.15e6
#define AUDIO_BPS 0.2e6
#define PSI_S 0.1                   /* PAT and PMTs every 100 ms */
#define PCR0 (27000000ull * 3600)   /* the first slot's PCR: one hour */
#define PCR_TICKS_NUM 10152ull      /* 27 MHz ticks per slot at 40 Mbit/s: 188 * 8 * 27e6 / 40e6 = 1015.2 */
#define PCR_TICKS_DEN 10ull
#define PMT_PID(p) (0x0100u + 0x10u * (unsigned)(p))
#define VID_PID(p) (PMT_PID(p) + 1u)
#define AUD_PID(p) (PMT_PID(p) + 2u)
#define ECM_PID(p) (0x0F00u + (unsigned)(p))
#define EMM_PID 0x0FF0u
#define CHUNK 2048  /* the engine's output chunk (OUT_CAP in src/center/headend/scramble.c) ... */
#define SCR_BATCH 256 /* ... cut short once a programme has this many to scramble (SCR_BATCH there) */
#define BIG 1024    /* raw_<alg>_big: packets per call */
#define DGRAM 7     /* packets per feed call, as in a UDP datagram */
#define NALG 3

enum { B_ENGINE, B_SVC, B_SVC_CPU, B_RAW, B_BIG, B_PER_ALG };

static const enum kh_scr_alg algs[NALG] = {KH_SCR_CSA2, KH_SCR_CISSA, KH_SCR_IDSA};
static const char *alg_tag[NALG] = {"csa2", "cissa", "idsa"};
static double fig[NALG][B_PER_ALG][BENCH_MAX_ROUNDS];
static double ratio_raw[NALG][BENCH_MAX_ROUNDS], ratio_big[NALG][BENCH_MAX_ROUNDS];
static double ratio_raw_cpu[NALG][BENCH_MAX_ROUNDS], ratio_big_cpu[NALG][BENCH_MAX_ROUNDS];

static uint8_t *mux;        /* the multiplex, never changed */
static size_t n_pkts;       /* its packets */
static double stream_s;     /* its stream time, n_pkts slots */
static uint8_t *clear;      /* the component packets, programme after programme, clear */
static uint8_t *work;       /* the same, scrambled by the raw passes */
static size_t n_comp;       /* component packets (with payload) */

struct batch {
	size_t off, n; /* packets into clear/work */
	unsigned prog;
};
static struct batch *eb, *bb; /* the engine's batches (chunk by chunk), the big ones */
static size_t n_eb, n_bb;

/* What the last engine run did, for the '#' lines. */
static struct kh_headend_stats last_st;

static void must(kh_err r, const char *what)
{
	if (r != KH_OK) {
		fprintf(stderr, "bench_headend: %s: %s\n", what, kh_strerror(r));
		exit(1);
	}
}

static void *must_alloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "bench_headend: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

/* ---- the multiplex ---- */

/* One elementary stream of the schedule: its next slot is due at `due` (in slots). */
struct es {
	uint16_t pid;
	unsigned prog;
	int video;
	double due, every; /* slots */
	uint8_t cc;
	uint64_t sent;
	double last_pcr_slot, pcr_every; /* video: slots between PCRs */
};

struct psi {
	uint8_t pkt[NPROG + 1][PL]; /* the PAT, then the PMTs, one packet each */
	uint8_t cc[NPROG + 1];
	unsigned pending;           /* of this 100 ms burst still to send */
	double due;                 /* slot of the next burst */
};

static void make_psi(struct psi *ps)
{
	struct kh_ts_pat pat = {0};
	uint8_t sec[1024];
	size_t slen, plen;

	memset(ps, 0, sizeof *ps);
	pat.tsid = 0x4B;
	pat.current = 1;
	pat.n = NPROG;
	for (unsigned p = 0; p < NPROG; p++) {
		pat.prog[p].program_number = (uint16_t)(p + 1);
		pat.prog[p].pid = (uint16_t)PMT_PID(p);
	}
	must(kh_ts_pat_build(&pat, sec, sizeof sec, &slen), "PAT");
	must(kh_ts_packetise(KH_TS_PID_PAT, &ps->cc[0], sec, slen, ps->pkt[0], PL, &plen), "PAT packet");
	for (unsigned p = 0; p < NPROG; p++) {
		struct kh_ts_pmt pmt = {0};
		pmt.program_number = (uint16_t)(p + 1);
		pmt.current = 1;
		pmt.pcr_pid = (uint16_t)VID_PID(p);
		pmt.n = 2;
		pmt.es[0].stream_type = 0x1B; /* H.264 */
		pmt.es[0].pid = (uint16_t)VID_PID(p);
		pmt.es[1].stream_type = 0x0F; /* AAC */
		pmt.es[1].pid = (uint16_t)AUD_PID(p);
		must(kh_ts_pmt_build(&pmt, sec, sizeof sec, &slen), "PMT");
		must(kh_ts_packetise((uint16_t)PMT_PID(p), &ps->cc[p + 1], sec, slen, ps->pkt[p + 1], PL, &plen),
		     "PMT packet");
	}
	for (unsigned i = 0; i <= NPROG; i++)
		ps->cc[i] = 0; /* each repetition takes the next counter (below) */
}

static void init_es(struct es *es)
{
	for (unsigned p = 0; p < NPROG; p++) {
		struct es *v = &es[2 * p], *a = &es[2 * p + 1];
		memset(v, 0, 2 * sizeof *v);
		v->pid = (uint16_t)VID_PID(p);
		a->pid = (uint16_t)AUD_PID(p);
		v->prog = a->prog = p;
		v->video = 1;
		v->every = MUX_BPS / VIDEO_BPS; /* slots per packet */
		a->every = MUX_BPS / AUDIO_BPS;
		/* the programmes start apart, after the first PAT and PMTs */
		v->due = NPROG + 1 + p * v->every / NPROG;
		a->due = NPROG + 1 + p * a->every / NPROG;
		/* PCRs every 20 to 40 ms, a different interval per programme */
		v->pcr_every = (0.020 + 0.020 * p / (NPROG - 1)) / PKT_S;
		v->last_pcr_slot = -1e9;
	}
}

static void put_pcr(uint8_t af[7], size_t slot)
{
	uint64_t pcr = PCR0 + (uint64_t)slot * PCR_TICKS_NUM / PCR_TICKS_DEN, base = pcr / 300, ext = pcr % 300;

	af[0] = 0x10; /* PCR_flag */
	af[1] = (uint8_t)(base >> 25);
	af[2] = (uint8_t)(base >> 17);
	af[3] = (uint8_t)(base >> 9);
	af[4] = (uint8_t)(base >> 1);
	af[5] = (uint8_t)((base & 1) << 7 | 0x7E | ext >> 8);
	af[6] = (uint8_t)ext;
}

/* One packet of e into out at slot: video with a PCR when one is due, audio with a short last
 * payload now and then (a PES ending: stuffing in the adaptation field). */
static void es_packet(struct es *e, uint8_t *out, size_t slot, const uint8_t *pool, size_t pool_len)
{
	struct kh_ts_pkt h = {0};
	uint8_t af[7];
	size_t af_len = 0, pl_len = 184;
	const uint8_t *pl = pool + (e->sent * 61 + e->pid * 17) % (pool_len - 184);

	h.pid = e->pid;
	h.cc = e->cc;
	e->cc = (uint8_t)((e->cc + 1) & 15);
	if (e->video) {
		h.pusi = e->sent % 64 == 0;
		if ((double)slot - e->last_pcr_slot >= e->pcr_every) {
			put_pcr(af, slot);
			af_len = sizeof af;
			pl_len = 176;
			e->last_pcr_slot = (double)slot;
		}
	} else {
		h.pusi = e->sent % 8 == 0;
		if (e->sent % 8 == 7)
			pl_len = 100;
	}
	e->sent++;
	must(kh_ts_build(out, &h, af_len ? af : NULL, af_len, pl, pl_len), "building a packet");
}

static void null_packet(uint8_t *out)
{
	memset(out, 0xFF, PL);
	out[0] = 0x47;
	out[1] = 0x1F;
	out[2] = 0xFF;
	out[3] = 0x10;
}

/* The elementary stream most overdue at slot, or NULL when none is due. */
static struct es *due_es(struct es *es, size_t slot)
{
	struct es *best = NULL;
	for (unsigned i = 0; i < 2 * NPROG; i++)
		if (es[i].due <= (double)slot && (!best || es[i].due < best->due))
			best = &es[i];
	return best;
}

static void make_mux(double secs, size_t *nulls)
{
	static struct psi ps;
	struct es es[2 * NPROG];
	uint8_t *pool;
	size_t pool_len = 64 * 1024;

	n_pkts = (size_t)(secs / PKT_S + 0.5);
	stream_s = (double)n_pkts * PKT_S;
	mux = must_alloc(n_pkts * PL);
	pool = must_alloc(pool_len);
	must(kh_random(pool, pool_len), "random payloads");
	make_psi(&ps);
	init_es(es);
	*nulls = 0;
	for (size_t i = 0; i < n_pkts; i++) {
		uint8_t *out = mux + i * PL;
		struct es *e;
		if ((double)i >= ps.due) {
			ps.pending = NPROG + 1;
			ps.due += PSI_S / PKT_S;
		}
		if (ps.pending) {
			unsigned k = NPROG + 1 - ps.pending--;
			memcpy(out, ps.pkt[k], PL);
			out[3] = (uint8_t)((out[3] & 0xF0) | ps.cc[k]);
			ps.cc[k] = (uint8_t)((ps.cc[k] + 1) & 15);
		} else if ((e = due_es(es, i)) != NULL) {
			es_packet(e, out, i, pool, pool_len);
			e->due += e->every;
		} else {
			null_packet(out);
			(*nulls)++;
		}
	}
	free(pool);
}

/* ---- the raw batches ---- */

/* The programme whose component pid is, or -1. */
static int prog_of(uint16_t pid)
{
	for (unsigned p = 0; p < NPROG; p++)
		if (pid == VID_PID(p) || pid == AUD_PID(p))
			return (int)p;
	return -1;
}

static int has_payload(const uint8_t *pkt)
{
	return (pkt[3] & 0x10) != 0;
}

/*
 * Gather the component packets with a payload, programme after programme (clear), and the two
 * batch lists over them: the engine's (a batch per programme at each flush: CHUNK slots staged, or
 * SCR_BATCH packets of one programme; a programme's packets of one flush are contiguous in its
 * run), and runs of up to BIG packets per programme.
 */
static void make_batches(void)
{
	size_t count[NPROG] = {0}, start[NPROG], fill[NPROG], n_chunks = (n_pkts + CHUNK - 1) / CHUNK;

	for (size_t i = 0; i < n_pkts; i++) {
		const uint8_t *pk = mux + i * PL;
		int p = prog_of((uint16_t)((pk[1] & 0x1F) << 8 | pk[2]));
		if (p >= 0 && has_payload(pk))
			count[p]++;
	}
	n_comp = 0;
	for (unsigned p = 0; p < NPROG; p++) {
		start[p] = fill[p] = n_comp;
		n_comp += count[p];
	}
	clear = must_alloc(n_comp * PL);
	work = must_alloc(n_comp * PL);
	eb = must_alloc((n_comp / SCR_BATCH + n_chunks + 1) * NPROG * sizeof *eb);
	bb = must_alloc((n_comp / BIG + NPROG) * sizeof *bb);
	n_eb = n_bb = 0;
	{
		size_t before[NPROG], staged = 0;
		memcpy(before, fill, sizeof before);
		for (size_t i = 0; i < n_pkts; i++) {
			const uint8_t *pk = mux + i * PL;
			int p = prog_of((uint16_t)((pk[1] & 0x1F) << 8 | pk[2])), full = 0;
			if (p >= 0 && has_payload(pk)) {
				memcpy(clear + fill[p]++ * PL, pk, PL);
				full = fill[p] - before[p] == SCR_BATCH;
			}
			if (++staged < CHUNK && !full && i + 1 < n_pkts)
				continue;
			for (unsigned q = 0; q < NPROG; q++)
				if (fill[q] > before[q])
					eb[n_eb++] = (struct batch){before[q], fill[q] - before[q], q};
			memcpy(before, fill, sizeof before);
			staged = 0;
		}
	}
	for (unsigned p = 0; p < NPROG; p++)
		for (size_t o = start[p]; o < start[p] + count[p]; o += BIG)
			bb[n_bb++] = (struct batch){o, start[p] + count[p] - o < BIG ? start[p] + count[p] - o : BIG, p};
}

/* ---- the runs ---- */

struct counter {
	uint64_t pkts;
};

static kh_err count_sink(void *ctx, const uint8_t *pkts, size_t n)
{
	(void)pkts;
	((struct counter *)ctx)->pkts += n;
	return KH_OK;
}

static void make_cfg(struct kh_headend_cfg *cfg, enum kh_scr_alg alg, const struct kh_cas_signer *sg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->nsvc = NPROG;
	for (unsigned p = 0; p < NPROG; p++) {
		struct kh_headend_service *s = &cfg->svc[p];
		s->program = (uint16_t)(p + 1);
		s->alg = alg;
		s->access = KH_ECM_PRODUCT;
		s->product = 100 + p;
		s->ecm_pid = (uint16_t)ECM_PID(p);
		s->key_id = (uint8_t)(p + 1);
		s->key_version = 1;
		must(kh_random(s->service_key, sizeof s->service_key), "service key");
	}
	cfg->ecm_signer = *sg;
	cfg->period_s = 10;
	cfg->lead_ms = 1000;
	cfg->ecm_interval_ms = 100;
	cfg->emm_interval_ms = 1000;
	cfg->emm_pid = EMM_PID;
	cfg->ca_system_id = KH_HEADEND_DEFAULT_CA_SYSTEM_ID;
	cfg->time = 1700000000ull;
	cfg->nulls = KH_HEADEND_NULL_REPLACE;
}

/* What every engine run must have done; anything else means the figure measures something else. */
static void check_run(struct kh_headend *h, const struct counter *c, const char *tag)
{
	struct kh_headend_stats st;
	const char *bad = NULL;

	kh_headend_stats(h, &st);
	if (st.in != n_pkts || c->pkts != n_pkts)
		bad = "packets out differ from packets in";
	else if (st.scrambled != n_comp)
		bad = "not every component packet was scrambled";
	else if (st.inserted || st.damaged || st.scrambled_in)
		bad = "packets inserted, or input taken as damaged";
	else if (st.stream_ms + 100 < (uint64_t)(stream_s * 1000) || st.stream_ms > (uint64_t)(stream_s * 1000))
		bad = "the engine's clock did not run at 40 Mbit/s";
	for (unsigned p = 0; p < NPROG && !bad; p++) {
		struct kh_headend_svc_stats ss;
		must(kh_headend_svc_stats(h, p, &ss), "service stats");
		if (!ss.ecm)
			bad = "a service had no ECM out";
	}
	if (bad) {
		fprintf(stderr,
			"bench_headend: %s: %s (in %llu, out %llu of %zu; scrambled %llu of %zu; inserted %llu; "
			"%llu ms of %.0f)\n",
			tag, bad, (unsigned long long)st.in, (unsigned long long)c->pkts, n_pkts,
			(unsigned long long)st.scrambled, n_comp, (unsigned long long)st.inserted,
			(unsigned long long)st.stream_ms, stream_s * 1000);
		exit(1);
	}
	last_st = st;
}

/* This thread's CPU time in seconds: what "per core" means when other work shares the cores. */
static double cpu_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The engine over the whole multiplex: seconds of wall time, and of this thread's CPU in *cpu. */
static double run_engine(int a, const struct kh_cas_signer *sg, double *cpu)
{
	static struct kh_headend_cfg cfg;
	struct kh_headend *h;
	struct counter c = {0};
	double t0, c0, t;

	make_cfg(&cfg, algs[a], sg);
	c0 = cpu_now_s();
	t0 = bench_now_s();
	must(kh_headend_new(&cfg, count_sink, &c, &h), "kh_headend_new");
	for (size_t i = 0; i < n_pkts; i += DGRAM) {
		kh_err r = kh_headend_feed(h, mux + i * PL, n_pkts - i < DGRAM ? n_pkts - i : DGRAM);
		if (r != KH_OK) {
			fprintf(stderr, "bench_headend: %s: %s\n", alg_tag[a], kh_headend_why(h));
			exit(1);
		}
	}
	must(kh_headend_finish(h), "kh_headend_finish");
	t = bench_now_s() - t0;
	*cpu = cpu_now_s() - c0;
	check_run(h, &c, alg_tag[a]);
	kh_headend_free(h);
	kh_wipe(&cfg, sizeof cfg);
	return t;
}

/* The primitive over the batches b[0..n): seconds of wall time, of CPU in *cpu (the copy back
 * to clear is not timed). */
static double run_raw(struct kh_scr **scr, const struct batch *b, size_t n, double *cpu)
{
	double t0, c0, t;

	memcpy(work, clear, n_comp * PL);
	c0 = cpu_now_s();
	t0 = bench_now_s();
	for (size_t i = 0; i < n; i++)
		must(kh_scr_scramble(scr[b[i].prog], work + b[i].off * PL, b[i].n, KH_SCR_EVEN), "kh_scr_scramble");
	t = bench_now_s() - t0;
	*cpu = cpu_now_s() - c0;
	return t;
}

static void round_alg(int a, struct kh_scr **scr, const struct kh_cas_signer *sg, int r)
{
	double ce, cr, cb, te = run_engine(a, sg, &ce), tr = run_raw(scr, eb, n_eb, &cr), tb = run_raw(scr, bb, n_bb, &cb);

	fig[a][B_ENGINE][r] = stream_s / te;
	fig[a][B_SVC][r] = NPROG * stream_s / te;
	fig[a][B_SVC_CPU][r] = NPROG * stream_s / ce;
	ratio_raw_cpu[a][r] = cr / ce;
	ratio_big_cpu[a][r] = cb / cr;
	fig[a][B_RAW][r] = stream_s / tr;
	fig[a][B_BIG][r] = stream_s / tb;
	ratio_raw[a][r] = tr / te;
	ratio_big[a][r] = tb / tr;
}

static void print_alg(int a, int rounds)
{
	char name[64], note[160];

	snprintf(name, sizeof name, "headend_%s", alg_tag[a]);
	bench_print(name, "x_realtime", 2, fig[a][B_ENGINE], rounds);
	snprintf(name, sizeof name, "headend_%s_services_per_core", alg_tag[a]);
	bench_print(name, "services", 1, fig[a][B_SVC], rounds);
	snprintf(name, sizeof name, "headend_%s_services_per_core_cpu", alg_tag[a]);
	bench_print(name, "services", 1, fig[a][B_SVC_CPU], rounds);
	snprintf(name, sizeof name, "raw_%s", alg_tag[a]);
	bench_print(name, "x_realtime", 2, fig[a][B_RAW], rounds);
	snprintf(name, sizeof name, "raw_%s_big", alg_tag[a]);
	bench_print(name, "x_realtime", 2, fig[a][B_BIG], rounds);
	snprintf(name, sizeof name, "headend_%s_vs_raw", alg_tag[a]);
	snprintf(note, sizeof note, "raw time / engine time: the cipher's share of the engine's time");
	bench_print_ratio(name, ratio_raw[a], rounds, note);
	snprintf(name, sizeof name, "raw_%s_vs_big", alg_tag[a]);
	snprintf(note, sizeof note, "big-batch time / engine-batch time: what the engine's flushes (%d slots, %d of a "
				    "programme) cost", CHUNK, SCR_BATCH);
	bench_print_ratio(name, ratio_big[a], rounds, note);
	snprintf(name, sizeof name, "headend_%s_vs_raw_cpu", alg_tag[a]);
	bench_print_ratio(name, ratio_raw_cpu[a], rounds, "the same over CPU time");
	snprintf(name, sizeof name, "raw_%s_vs_big_cpu", alg_tag[a]);
	bench_print_ratio(name, ratio_big_cpu[a], rounds, "the same over CPU time");
}

static void new_scramblers(struct kh_scr *scr[NALG][NPROG])
{
	uint8_t k[KH_SCR_AES_KEY_LEN];

	for (int a = 0; a < NALG; a++)
		for (unsigned p = 0; p < NPROG; p++) {
			must(kh_random(k, sizeof k), "key");
			must(kh_scr_new(algs[a], 0, &scr[a][p]), "kh_scr_new");
			must(kh_scr_set_key(scr[a][p], KH_SCR_EVEN, k, kh_scr_keylen(algs[a])), "kh_scr_set_key");
		}
	kh_wipe(k, sizeof k);
}

static void print_header(size_t nulls, int rounds, int cpu)
{
	printf("# bench_headend: %.2f s of a 40 Mbit/s multiplex (%zu packets, %.1f MB), %d programmes: "
	       "video %.2f + audio %.2f Mbit/s each, PAT and PMTs every 100 ms, %.1f %% null packets\n",
	       stream_s, n_pkts, (double)(n_pkts * PL) / 1e6, NPROG, VIDEO_BPS / 1e6, AUDIO_BPS / 1e6,
	       100.0 * (double)nulls / (double)n_pkts);
	printf("# %zu component packets (%.1f %%) scrambled per run; the engine's batches: %zu calls of %.1f packets "
	       "on average, the big ones %zu calls; libdvbcsa bitslice batch %u packets; %d rounds, one thread\n",
	       n_comp, 100.0 * (double)n_comp / (double)n_pkts, n_eb, (double)n_comp / (double)n_eb, n_bb,
	       dvbcsa_bs_batch_size(), rounds);
	bench_print_pin(cpu);
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_headend [-s stream-seconds] [-r rounds] [-a csa2|cissa|idsa] [-p]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static struct kh_scr *scr[NALG][NPROG];
	struct kh_cas_signer sg = {.serial = 4242};
	uint8_t pk[KH_ED25519_PK_LEN];
	double secs = 10;
	int rounds = 7, pin = 0, cpu = -1, only = -1, o;
	size_t nulls;

	while ((o = getopt(argc, argv, "s:r:a:p")) != -1) {
		if (o == 'a') {
			for (int a = 0; a < NALG; a++)
				if (!strcmp(optarg, alg_tag[a]))
					only = a;
			if (only < 0)
				return usage();
		} else if (o == 's')
			secs = atof(optarg);
		else if (o == 'r')
			rounds = atoi(optarg);
		else if (o == 'p')
			pin = 1;
		else
			return usage();
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || !(secs >= 0.5 && secs <= 120))
		return usage();
	if (pin)
		cpu = bench_pin();
	must(kh_ed25519_keygen(sg.sk, pk), "ECM signer");
	make_mux(secs, &nulls);
	make_batches();
	new_scramblers(scr);
	print_header(nulls, rounds, cpu);
	for (int r = 0; r < rounds; r++)
		for (int a = 0; a < NALG; a++)
			if (only < 0 || a == only)
				round_alg(a, scr[a], &sg, r);
	printf("# last engine run: %llu ECM and %llu PSI sections, %llu packets of ours in place of the %llu nulls "
	       "in, %llu component packets scrambled before ECM 0 was out; stream time %llu ms\n",
	       (unsigned long long)last_st.ecm, (unsigned long long)last_st.psi, (unsigned long long)last_st.replaced,
	       (unsigned long long)last_st.nulls_in,
	       (unsigned long long)last_st.before_ecm, (unsigned long long)last_st.stream_ms);
	for (int a = 0; a < NALG; a++)
		if (only < 0 || a == only)
			print_alg(a, rounds);

	for (int a = 0; a < NALG; a++)
		for (unsigned p = 0; p < NPROG; p++)
			kh_scr_free(scr[a][p]);
	kh_wipe(&sg, sizeof sg);
	free(eb);
	free(bb);
	free(clear);
	free(work);
	free(mux);
	return 0;
}
