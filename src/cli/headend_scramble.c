/*
 * keyhole headend scramble: the streaming scrambler on the command line: options, the input's
 * census and PIDs, the output file, the center's EMM queue polled in a thread, progress and the
 * damage warning. The engine is src/center/headend/scramble.c. The command is cut by job, at the
 * end of the file: parse (struct scr_opts), prepare (struct scr_run: token, keys, EMMs, input,
 * output), run, report, and run_close, the one cleanup of every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/headend.h"
#include "cli/udp_pipe.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/authority.h"
#include "keyhole/headend.h"
#include "keyhole/store.h"
#include "keyhole/ts.h"
#include "keyhole/tsip.h"
#include "cli/headend_scs.h"

static const char scramble_help[] =
	"usage: keyhole headend scramble --keys FILE [--in FILE|-] [--out FILE|-] --alg csa2|cissa|idsa\n"
	"           (--product P | --event E [--price N]) [--service PROGRAM[:SETTINGS]]... [--key-id N]\n"
	"           [--no-video] [--no-audio] [--no-subtitles] [--data]\n"
	"           [--key-version V] [--period SECONDS] [--lead MS] [--ecm-interval MS] [--emm FILE]...\n"
	"           [--emm-interval MS] [--ecm-pid PID] [--emm-pid PID] [--ca-system-id ID]\n"
	"           [--time UNIX] [--csa-reduce] [--ladder-only] [--grow] [--cw-log FILE]\n"
	"           [--center URL [--cacert FILE] [--insecure-http] [--token-file FILE]\n"
	"           [--center-since ID] [--emm-poll SECONDS]]\n"
	"           [--regulate] [--idle-timeout SECONDS] [--ecmg HOST:PORT --super-cas-id ID] [-v]\n"
	"\n"
	"Scramble one programme of an MPEG transport stream (or several: --service given several\n"
	"times): its components are scrambled with a\n"
	"fresh control word per crypto period (on the stream's PCR time), ECMs go out on the ECM PID,\n"
	"the EMMs of --emm are cycled on the EMM PID, the PMT gains a CA descriptor and the CAT\n"
	"names the EMM PID (an input CAT's descriptors are kept). On a constant-bitrate input (null\n"
	"packets among the first) the added packets replace null packets: size and PCRs are kept,\n"
	"and a run short of null packets fails saying the bandwidth needed (or, with --grow, inserts\n"
	"them and restamps the PCRs). Output to a file appears only when complete. With --center,\n"
	"the center's broadcast EMM queue is fetched at start and carried like --emm's (both: the\n"
	"files' EMMs first), then polled again every --emm-poll seconds: new EMMs go out next, then\n"
	"join the cycle.\n"
	"\n"
	"Damaged input costs what it damaged, not the run: packets are found again after garbage or a\n"
	"lost byte (three sync bytes 188 bytes apart), a final packet cut short, a packet that is not\n"
	"a TS packet and a component packet that arrives scrambled are dropped, and one warning line\n"
	"at the end counts them. A programme that is scrambled already (32 component packets in a\n"
	"row) is refused. An option that takes a value may be given once, but --emm.\n"
	"\n"
	"  -k, --keys FILE         the headend key file\n"
	"  -i, --in FILE           input transport stream (default -, standard input)\n"
	"  -o, --out FILE          output transport stream (default -, standard output; refused when\n"
	"                          that is a terminal, unless --out - is given)\n"
	"                          --in and --out also take udp://[SRC@]HOST:PORT[?ttl=N&pkts=N&\n"
	"                          local=ADDR&rtp=1]: a TS over UDP (RTP with rtp=1), multicast too\n"
	"      --regulate          with --out udp://: send at the stream's PCR rate\n"
	"      --idle-timeout S    with --in udp://: end the input S seconds after the last datagram\n"
	"      --alg ALG           csa2, cissa or idsa\n"
	"      --product P         subscription product the programme belongs to\n"
	"      --event E           pay-per-view event ...\n"
	"      --price N           ... and its price; with --center the price is the catalogue's\n"
	"                          (GET URL/v1/events/E): --price may be left out, and one that\n"
	"                          differs is refused, as is an event the catalogue does not list\n"
	"  -s, --service PROGRAM[:SETTINGS]\n"
	"                          program_number to scramble (default: the first in the PAT); may be\n"
	"                          repeated, each programme with its own control words and ECM PID;\n"
	"                          SETTINGS (KEY=VALUE,...) override the options below for it: alg=,\n"
	"                          product=, event=, price=, key-id=, ecm-pid=, components=\n"
	"                          (video+audio+subtitles+data)\n"
	"      --no-video          leave video components in clear (scrambled by default)\n"
	"      --no-audio          leave audio components in clear (scrambled by default)\n"
	"      --no-subtitles      leave subtitles in clear (scrambled by default)\n"
	"      --data              scramble the other components too (clear by default)\n"
	"      --key-id N          service key sealing the ECMs (default 1)\n"
	"      --key-version V     its version (default: the highest in the key file)\n"
	"      --period SECONDS    crypto period, 5 to 30 (default 10)\n"
	"      --lead MS           ECM of a period goes out this long before it (default 1000)\n"
	"      --ecm-interval MS   ECM repetition (default 100)\n"
	"      --emm FILE          EMMs to play out (concatenated 'headend emm' files); may be\n"
	"                          repeated: every file's EMMs, in the order given\n"
	"      --emm-interval MS   one EMM every MS (default 100)\n"
	"      --ecm-pid PID       default 0x0FF0, or the next PID above it the input does not use\n"
	"      --emm-pid PID       default 0x0FF1, likewise; a PID given that the input uses (in its\n"
	"                          PAT, PMTs, CAT or first packets) is refused\n"
	"  -C, --ca-system-id ID   default 0x4B48\n"
	"      --time UNIX         broadcast time of the first crypto period (default now)\n"
	"      --csa-reduce        csa2: 48-bit control words (common practice)\n"
	"      --ladder-only       the ECMs say (signed) that the control words go only to a\n"
	"                          decoder module under the key ladder (decoder play --ladder);\n"
	"                          the CAM refuses other decoders with 'ladder required'\n"
	"      --grow              constant bitrate short of null packets: insert the packets\n"
	"                          and restamp every later PCR instead of failing\n"
	"      --cw-log FILE       TEST AID: write every control word to FILE, in clear\n"
	"      --center URL        the management center: GET URL/v1/emm?since=ID, every page\n"
	"                          (https://HOST[:PORT]; http:// only to 127.0.0.1, localhost,\n"
	"                          [::1] unless --insecure-http)\n"
	"      --cacert FILE       PEM CA certificates to trust for the center (default: the\n"
	"                          system's); peer and host name are always checked\n"
	"      --insecure-http     allow plain http to any host (a test network only)\n"
	"  -T, --token-file FILE   the operator's bearer token, for the catalogue (--event);\n"
	"                          private to its owner, like a key file\n"
	"      --center-since ID   only the EMMs with a queue id above ID (default 0: all)\n"
	"      --emm-poll SECONDS  poll the queue again every SECONDS of wall time, in a thread\n"
	"                          (default 30; 0: only at start); a failed poll is a warning\n"
	"      --ecmg HOST:PORT    take every ECM from this SimulCrypt ECMG (ETSI TS 103 197), as its\n"
	"                          SCS: a stream per service, CW_provision each crypto period at its\n"
	"                          start plus the ECMG's delay_start; ECMs repeated every\n"
	"                          ECM_rep_period unless --ecm-interval; --lead unused. An ECM late\n"
	"                          (max_comp_time + 200 ms) or an ECMG gone: the control word is\n"
	"                          kept, said on stderr, the ECMG tried again (docs/internals/scs.md)\n"
	"      --super-cas-id ID   with --ecmg: the Super_CAS_id to ask the ECMG for\n"
	"  -v, --verbose           say on stderr the ECM and EMM PIDs, the catalogue's price, how\n"
	"                          many EMMs came from the center and the last id (at start and\n"
	"                          after each poll that brought some)\n";

/* ---- scramble ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

struct sink {
	int fd;
	int err; /* errno of a failed write: EPIPE, ENOSPC, EFBIG name the cause */
};

static kh_err write_all(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	size_t len = n * KH_TS_PACKET_LEN;
	while (len) {
		ssize_t w = write(s->fd, p, len);
		if (w < 0) {
			if (errno == EINTR && !interrupted)
				continue;
			s->err = errno;
			return KH_ERR_IO;
		}
		p += w;
		len -= (size_t)w;
	}
	return KH_OK;
}

/* --cw-log: one line per control word, "HEX" (one service) or "PROGRAM HEX" (several). */
struct cwlog {
	FILE *f;
	const struct kh_headend_cfg *cfg;
};

static void log_cw(void *ctx, unsigned svc, uint32_t cp, const uint8_t *cw, size_t len)
{
	const struct cwlog *l = ctx;
	char hex[2 * KH_CAS_CW_MAX + 1];
	(void)cp;
	kh_hex_encode(cw, len, hex);
	if (l->cfg->nsvc > 1)
		fprintf(l->f, "%u %s\n", l->cfg->svc[svc].program, hex);
	else
		fprintf(l->f, "%s\n", hex);
	kh_wipe(hex, sizeof hex);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The continuous feed's side of the packet path: whatever the poller thread fetched since the
 * last look goes into the carousel. A mutex and a copy of the carousel: no network wait here.
 */
struct poll_ctx {
	struct kh_headend_poller *p; /* NULL: no polling */
	const char *center;
	int verbose;
};

static void take_polled(struct kh_headend *h, const struct poll_ctx *pc)
{
	uint8_t *emm = NULL;
	size_t len = 0, n = 0;
	int64_t last = 0;
	unsigned failed = 0;
	char why[256];
	kh_err r;

	if (!pc->p)
		return;
	if (kh_headend_poller_take(pc->p, &emm, &len, &n, &last, &failed, why, sizeof why)) {
		if ((r = kh_headend_emm_add(h, emm, len)) != KH_OK)
			fprintf(stderr, "keyhole: warning: %s: %zu new EMM(s) not carried: %s\n", pc->center, n,
				kh_strerror(r));
		else if (pc->verbose)
			fprintf(stderr, "keyhole headend scramble: %zu new EMM(s) from the center, last id %lld\n", n,
				(long long)last);
	}
	free(emm);
	if (failed)
		fprintf(stderr, "keyhole: warning: %s: EMM poll failed: %s; going on with the EMMs held\n",
			pc->center, why);
}

/*
 * The input, read in chunks: packets are found in the bytes (kh_headend_sync), so that garbage,
 * a lost byte or a cut final packet costs what it damaged and not the run.
 */
enum { CHUNK = 256 * 188 };

struct reader {
	int fd;
	uint8_t buf[CHUNK];
	size_t pos, have; /* the bytes not consumed yet: buf[pos .. pos + have) */
	int eof;
	int net; /* udp:// input: a stop signal is its end, as a file's end */
	uint64_t bytes;
	struct kh_headend_sync sync;
};

/*
 * The next run of packets (*pkts points into rd's buffer: use them before calling again): 1, or
 * 0 at the end of the input, -1 when reading failed, -2 when a signal asked to stop.
 */
static int next_run(struct reader *rd, const uint8_t **pkts, size_t *n)
{
	for (;;) {
		ssize_t got;
		if (rd->have || rd->eof) {
			size_t off, cnt, used;
			if (!rd->have)
				return 0;
			used = kh_headend_sync_find(&rd->sync, rd->buf + rd->pos, rd->have, rd->eof, &off, &cnt);
			*pkts = rd->buf + rd->pos + off;
			rd->pos += used;
			rd->have -= used;
			if (cnt) {
				*n = cnt;
				return 1;
			}
			if (used)
				continue;
			if (rd->eof)
				return 0; /* (the sync always consumes at the end: never reached) */
		}
		memmove(rd->buf, rd->buf + rd->pos, rd->have);
		rd->pos = 0;
		got = read(rd->fd, rd->buf + rd->have, CHUNK - rd->have);
		if (interrupted && !rd->net)
			return -2;
		if (got < 0) {
			if (errno != EINTR)
				return -1;
			rd->eof = interrupted; /* (net only) */
			continue;
		}
		if (got == 0 || interrupted)
			rd->eof = 1;
		rd->have += (size_t)got;
		rd->bytes += (uint64_t)got;
	}
}

/*
 * Before the scrambler starts, the first packets of the input are read and kept, to learn what
 * PIDs the input uses: at least PRESCAN_MIN packets and until the PAT and every PMT it lists have
 * been seen, at most PRESCAN_MAX (a bounded memory; memory does not grow with the stream).
 */
#define PRESCAN_MIN 1024u
#define PRESCAN_MAX (8u * 1024 * 1024 / KH_TS_PACKET_LEN)

struct prescan {
	uint8_t *pkts;
	size_t n, cap;
};

static void prescan_free(struct prescan *ps)
{
	if (ps->pkts) {
		kh_wipe(ps->pkts, ps->cap * KH_TS_PACKET_LEN);
		free(ps->pkts);
	}
	memset(ps, 0, sizeof *ps);
}

/* Read into ps and c until the census knows enough (or the input ends). KH_OK, KH_ERR_NOMEM,
 * KH_ERR_IO (reading failed, or with *stopped set: a signal asked to stop). */
static kh_err prescan(struct reader *rd, struct kh_headend_census *c, struct prescan *ps, int *stopped)
{
	const uint8_t *p;
	size_t n;
	int got;

	while (ps->n < PRESCAN_MAX && (ps->n < PRESCAN_MIN || !kh_headend_census_complete(c))) {
		if ((got = next_run(rd, &p, &n)) <= 0) {
			if (got == 0)
				break;
			*stopped = got == -2;
			return KH_ERR_IO;
		}
		if (ps->n + n > ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 2 * PRESCAN_MIN;
			uint8_t *q;
			while (cap < ps->n + n)
				cap *= 2;
			if (!(q = malloc(cap * KH_TS_PACKET_LEN)))
				return KH_ERR_NOMEM;
			if (ps->pkts) { /* copy and wipe: clear programme, as the engine's staging */
				memcpy(q, ps->pkts, ps->n * KH_TS_PACKET_LEN);
				kh_wipe(ps->pkts, ps->cap * KH_TS_PACKET_LEN);
				free(ps->pkts);
			}
			ps->pkts = q;
			ps->cap = cap;
		}
		memcpy(ps->pkts + ps->n * KH_TS_PACKET_LEN, p, n * KH_TS_PACKET_LEN);
		ps->n += n;
		kh_headend_census_feed(c, p, n);
	}
	return KH_OK;
}

/* "a component (program 1)" */
static void pid_use(const struct kh_headend_census *c, uint16_t pid, char *out, size_t cap)
{
	uint16_t prog = 0;
	enum kh_headend_pid_use u = kh_headend_census_use(c, pid, &prog);

	if (prog)
		snprintf(out, cap, "%s (program %u)", kh_headend_pid_use_name(u), prog);
	else
		snprintf(out, cap, "%s", kh_headend_pid_use_name(u));
}

/*
 * The ECMG's side of the packet path (--ecmg): a line for each time a service had to keep its
 * control word at a period start (the engine's counters), with the client's last failure.
 */
struct ecmg_watch {
	struct kh_scs_client *c; /* NULL: no ECMG */
	unsigned nsvc;
	uint64_t degraded[KH_HEADEND_SERVICES_MAX];
};

static void watch_ecmg(const struct kh_headend *h, struct ecmg_watch *w)
{
	struct kh_headend_svc_stats st;

	if (!w->c)
		return;
	for (unsigned i = 0; i < w->nsvc; i++) {
		if (kh_headend_svc_stats(h, i, &st) != KH_OK || st.degraded == w->degraded[i])
			continue;
		w->degraded[i] = st.degraded;
		fprintf(stderr,
			"keyhole headend scramble: ECMG late: kept the control word of period %lu (program %u)%s%s\n",
			(unsigned long)st.period, (unsigned)st.program, w->c->why[0] ? ": " : "", w->c->why);
	}
}

/* Feed n packets to the engine. On error *what names the culprit. */
static kh_err feed(struct kh_headend *h, const uint8_t *p, size_t n, const char **what, const char *inname,
		   const char *outname)
{
	kh_err r = kh_headend_feed(h, p, n);
	if (r != KH_OK)
		*what = r == KH_ERR_IO ? outname : inname;
	return r;
}

/* Streams the input through the engine: the packets of the prescan first. On error *what names
 * the culprit. */
static kh_err pump(struct kh_headend *h, struct reader *rd, const struct prescan *ps, const char **what,
		   const char *inname, const char *outname, const struct poll_ctx *pc, struct ecmg_watch *ew)
{
	int tty = isatty(2), shown = 0, got;
	double t0 = now_s(), last = t0;
	const uint8_t *p;
	size_t n;
	kh_err r;

	if (ps->n && (r = feed(h, ps->pkts, ps->n, what, inname, outname)) != KH_OK)
		goto out;
	for (;;) {
		if ((got = next_run(rd, &p, &n)) <= 0) {
			if (got == 0)
				break;
			*what = got == -2 ? "headend scramble" : inname;
			r = KH_ERR_IO;
			goto out;
		}
		if ((r = feed(h, p, n, what, inname, outname)) != KH_OK)
			goto out;
		take_polled(h, pc);
		watch_ecmg(h, ew);
		if (tty) {
			double t = now_s();
			if (t - last >= 0.5) {
				struct kh_headend_stats st;
				kh_headend_stats(h, &st);
				fprintf(stderr, "\rkeyhole headend scramble: %llu packets, %.1f Mb/s, crypto period %lu ",
					(unsigned long long)st.in, (double)rd->bytes * 8 / 1e6 / (t - t0),
					(unsigned long)st.period);
				last = t;
				shown = 1;
			}
		}
	}
	if ((r = kh_headend_finish(h)) != KH_OK)
		*what = r == KH_ERR_IO ? outname : inname;
	watch_ecmg(h, ew);
out:
	if (shown)
		fputc('\n', stderr);
	return r;
}

/* One warning line at the end of a run that had to skip or drop something of its input. */
static void warn_damage(const char *inname, const struct kh_headend_sync *sy, const struct kh_headend_stats *st)
{
	char line[600];
	size_t n = 0;

#define PART(...)                                                                                          \
	do {                                                                                               \
		if (n < sizeof line)                                                                       \
			n += (size_t)snprintf(line + n, sizeof line - n, "%s", n ? "; " : "");             \
		if (n < sizeof line)                                                                       \
			n += (size_t)snprintf(line + n, sizeof line - n, __VA_ARGS__);                     \
	} while (0)
	if (sy->skipped)
		PART("%llu byte(s) skipped in %llu place(s) to find the packets again", (unsigned long long)sy->skipped,
		     (unsigned long long)sy->gaps);
	if (sy->cut)
		PART("a final packet cut short (%llu bytes) dropped", (unsigned long long)sy->cut);
	if (st->damaged)
		PART("%llu packet(s) that are not TS packets dropped", (unsigned long long)st->damaged);
	if (st->scrambled_in)
		PART("%llu component packet(s) that arrived scrambled dropped", (unsigned long long)st->scrambled_in);
	if (st->foreign)
		PART("%llu packet(s) on the ECM or EMM PID dropped", (unsigned long long)st->foreign);
#undef PART
	if (n)
		fprintf(stderr, "keyhole: warning: %s: damaged input: %s\n", inname, line);
}

static int parse_ms(const char *s, unsigned lo, unsigned hi, unsigned *v)
{
	uint64_t x;
	if (kh_cli_parse_num(s, hi, &x) != 0 || x < lo)
		return -1;
	*v = (unsigned)x;
	return 0;
}

/* Read the EMM files in order and concatenate them; each is checked, and a bad one named. */
static int read_emms(const char *const *paths, size_t npaths, uint8_t **emm, size_t *emm_len)
{
	for (size_t i = 0; i < npaths; i++) {
		uint8_t *data = NULL, *all;
		size_t len = 0, off = 0, n;
		const uint8_t *sec;
		int more;
		kh_err r;

		if ((r = kh_file_read(paths[i], KH_HEADEND_FEED_MAX, &data, &len)) != KH_OK)
			return kh_cli_fail(paths[i], r);
		while ((more = kh_headend_emm_next(data, len, &off, &sec, &n)) == 1)
			;
		if (more < 0 || len > KH_HEADEND_FEED_MAX - *emm_len) {
			kh_file_free(data, len);
			return kh_cli_fail(paths[i], more < 0 ? (kh_err)more : KH_ERR_TOO_LARGE);
		}
		if (!(all = realloc(*emm, *emm_len + len + 1))) {
			kh_file_free(data, len);
			return kh_cli_fail(paths[i], KH_ERR_NOMEM);
		}
		if (len)
			memcpy(all + *emm_len, data, len);
		*emm = all;
		*emm_len += len;
		kh_file_free(data, len);
	}
	return KH_EXIT_OK;
}

/* ---- the command: options, preparation, the run, the report ---- */

static const char P[] = "headend scramble";

enum {
	O_ALG = 256, O_PRODUCT, O_EVENT, O_PRICE, O_KEYID, O_KEYVER, O_PERIOD, O_LEAD,
	O_ECMIV, O_EMM, O_EMMIV, O_ECMPID, O_EMMPID, O_TIME, O_REDUCE, O_LADDER, O_CWLOG, O_CENTER,
	O_CACERT, O_INSECURE, O_SINCE, O_POLL, O_GROW, O_REGULATE, O_IDLE, O_NOVIDEO, O_NOAUDIO, O_NOSUBS, O_DATA,
	O_ECMG, O_SCID
};
static const struct option scramble_opts[] = {
	{"keys", required_argument, NULL, 'k'},         {"in", required_argument, NULL, 'i'},
	{"out", required_argument, NULL, 'o'},          {"alg", required_argument, NULL, O_ALG},
	{"product", required_argument, NULL, O_PRODUCT}, {"event", required_argument, NULL, O_EVENT},
	{"price", required_argument, NULL, O_PRICE},    {"service", required_argument, NULL, 's'},
	{"key-id", required_argument, NULL, O_KEYID},   {"key-version", required_argument, NULL, O_KEYVER},
	{"period", required_argument, NULL, O_PERIOD},  {"lead", required_argument, NULL, O_LEAD},
	{"ecm-interval", required_argument, NULL, O_ECMIV}, {"emm", required_argument, NULL, O_EMM},
	{"emm-interval", required_argument, NULL, O_EMMIV}, {"ecm-pid", required_argument, NULL, O_ECMPID},
	{"emm-pid", required_argument, NULL, O_EMMPID}, {"ca-system-id", required_argument, NULL, 'C'},
	{"time", required_argument, NULL, O_TIME},      {"csa-reduce", no_argument, NULL, O_REDUCE},
	{"ladder-only", no_argument, NULL, O_LADDER},   {"grow", no_argument, NULL, O_GROW},
	{"cw-log", required_argument, NULL, O_CWLOG},   {"center", required_argument, NULL, O_CENTER},
	{"cacert", required_argument, NULL, O_CACERT},  {"insecure-http", no_argument, NULL, O_INSECURE},
	{"center-since", required_argument, NULL, O_SINCE}, {"verbose", no_argument, NULL, 'v'},
	{"emm-poll", required_argument, NULL, O_POLL},  {"token-file", required_argument, NULL, 'T'},
	{"regulate", no_argument, NULL, O_REGULATE}, {"idle-timeout", required_argument, NULL, O_IDLE},
	{"no-video", no_argument, NULL, O_NOVIDEO},     {"no-audio", no_argument, NULL, O_NOAUDIO},
	{"no-subtitles", no_argument, NULL, O_NOSUBS},  {"data", no_argument, NULL, O_DATA},
	{"ecmg", required_argument, NULL, O_ECMG},      {"super-cas-id", required_argument, NULL, O_SCID},
	{"help", no_argument, NULL, 'h'},               {NULL, 0, NULL, 0}};

/* What one service's options say, and which were given (a --service spec over the defaults). */
struct svc_opt {
	struct kh_headend_service v;
	uint32_t price_given;
	int have_product, have_event, have_price, have_ecm_pid, have_alg;
};

/* The options of one run, parsed and checked. */
struct scr_opts {
	struct kh_headend_cfg cfg;       /* the engine's settings; the key file's keys once read */
	struct svc_opt dflt;             /* --alg, --product, ...: every service's unless its spec says */
	struct svc_opt svc[KH_HEADEND_SERVICES_MAX]; /* as built: cfg.svc's, with what was given */
	const char **specs;              /* the --service values, nspec of them */
	size_t nspec;
	unsigned comp_off, comp_on;      /* --no-video/--no-audio/--no-subtitles, --data */
	struct kh_headend_feed_cfg fcfg; /* the center (center NULL: none) */
	const char *keys, *inpath, *outpath, *cwlog, *tokfile;
	const char *inname;    /* the input as messages name it */
	const char **emmpaths; /* the --emm files in the order given, nemm of them */
	size_t nemm;
	unsigned poll_s, idle_s; /* --emm-poll, --idle-timeout */
	const char *ecmg;        /* --ecmg HOST:PORT */
	uint32_t super_cas_id;
	int have_scid, have_ecmiv;
	int regulate;
	int verbose, have_poll, have_emm_pid;
};

/* Whether pid is taken by us already: the EMM PID (emm: chosen already) or the ECM PID of a
 * service (the first n services', chosen already, and any given). */
static int ours(const struct scr_opts *o, uint16_t pid, unsigned n, int emm)
{
	if (emm && pid == o->cfg.emm_pid)
		return 1;
	for (unsigned i = 0; i < o->cfg.nsvc; i++)
		if ((i < n || o->svc[i].have_ecm_pid) && pid == o->cfg.svc[i].ecm_pid)
			return 1;
	return 0;
}

/* What a run holds; run_close releases it on every path. */
struct scr_run {
	char *tok;        /* the operator's bearer token (--token-file) */
	uint8_t *emm;     /* the EMMs to cycle: the files', then the center's */
	size_t emm_len;
	uint8_t *cemm;    /* the center's, as fetched */
	int64_t last_id;  /* the highest queue id the start fetched */
	struct reader *rd;
	struct kh_headend_census *census;
	struct prescan ps;
	struct kh_headend *h;
	FILE *cwf;        /* --cw-log */
	struct cwlog cwl;
	struct sink sk;
	struct kh_cli_out outf;
	struct poll_ctx pc;
	struct kh__cli_udp *uin, *uout; /* udp:// input and output */
	struct kh_scs_client *scs;       /* --ecmg */
	struct ecmg_watch ew;
};

/* One option of the center, the files and the talk into o: KH_EXIT_OK, KH_EXIT_USAGE (told), or
 * -1 for an option it does not know. */
static int take_feed(struct scr_opts *o, int c, const char *arg)
{
	uint64_t x;

	switch (c) {
	case 'k': o->keys = arg; break;
	case 'i': o->inpath = arg; break;
	case 'o': o->outpath = arg; break;
	case 'v': o->verbose = 1; break;
	case O_EMM: o->emmpaths[o->nemm++] = arg; break;
	case O_CWLOG: o->cwlog = arg; break;
	case O_CENTER: o->fcfg.center = arg; break;
	case O_CACERT: o->fcfg.cacert = arg; break;
	case O_INSECURE: o->fcfg.insecure_http = 1; break;
	case 'T': o->tokfile = arg; break;
	case O_SINCE:
		if (kh_cli_parse_num(arg, INT64_MAX, &x) != 0)
			return kh_cli_usage(P, "--center-since takes a queue id (0 or more)");
		o->fcfg.since = (int64_t)x;
		break;
	case O_REGULATE: o->regulate = 1; break;
	case O_ECMG: o->ecmg = arg; break;
	case O_SCID:
		if (kh__cli_u32(arg, &o->super_cas_id) != 0)
			return kh_cli_usage(P, "--super-cas-id takes a 32-bit number (CA_system_id << 16 | subsystem)");
		o->have_scid = 1;
		break;
	case O_IDLE:
		if (kh_cli_parse_num(arg, 86400, &x) != 0 || x == 0)
			return kh_cli_usage(P, "--idle-timeout takes seconds, 1 to 86400");
		o->idle_s = (unsigned)x;
		break;
	case O_POLL:
		if (kh_cli_parse_num(arg, 86400, &x) != 0)
			return kh_cli_usage(P, "--emm-poll takes seconds, 0 to 86400");
		o->poll_s = (unsigned)x;
		o->have_poll = 1;
		break;
	default: return -1;
	}
	return KH_EXIT_OK;
}

/* One value of what a service's ECMs say into v: "alg", "product", "event", "price", "key-id",
 * "ecm-pid", "components". 0, or -1 with why (a usage message) filled. */
static int svc_value(struct svc_opt *v, const char *key, size_t klen, const char *arg, char *why, size_t cap)
{
#define KEY(k) (klen == sizeof k - 1 && strncmp(key, k, klen) == 0)
	uint64_t x;

	if (KEY("alg")) {
		if (strcmp(arg, "csa2") == 0)
			v->v.alg = KH_SCR_CSA2;
		else if (strcmp(arg, "cissa") == 0)
			v->v.alg = KH_SCR_CISSA;
		else if (strcmp(arg, "idsa") == 0)
			v->v.alg = KH_SCR_IDSA;
		else
			return snprintf(why, cap, "alg must be csa2, cissa or idsa"), -1;
		v->have_alg = 1;
	} else if (KEY("product") || KEY("event")) {
		int prod = KEY("product");
		if (kh__cli_u32(arg, prod ? &v->v.product : &v->v.event) != 0)
			return snprintf(why, cap, "%s takes a number", prod ? "product" : "event"), -1;
		*(prod ? &v->have_product : &v->have_event) = 1;
	} else if (KEY("price")) {
		if (kh__cli_u32(arg, &v->price_given) != 0)
			return snprintf(why, cap, "price takes a number"), -1;
		v->have_price = 1;
	} else if (KEY("key-id")) {
		if (kh_cli_parse_num(arg, 255, &x) != 0)
			return snprintf(why, cap, "key-id takes a number from 0 to 255"), -1;
		v->v.key_id = (uint8_t)x;
	} else if (KEY("ecm-pid")) {
		if (kh_cli_parse_num(arg, 0x1FFE, &x) != 0 || x < 0x10)
			return snprintf(why, cap, "ecm-pid takes a PID from 0x0010 to 0x1FFE"), -1;
		v->v.ecm_pid = (uint16_t)x;
		v->have_ecm_pid = 1;
	} else if (KEY("components")) {
		unsigned c = 0;
		for (const char *p = arg; *p;) {
			size_t n = strcspn(p, "+");
			if (n == 5 && strncmp(p, "video", 5) == 0)
				c |= KH_HEADEND_C_VIDEO;
			else if (n == 5 && strncmp(p, "audio", 5) == 0)
				c |= KH_HEADEND_C_AUDIO;
			else if (n == 9 && strncmp(p, "subtitles", 9) == 0)
				c |= KH_HEADEND_C_SUBTITLES;
			else if (n == 4 && strncmp(p, "data", 4) == 0)
				c |= KH_HEADEND_C_DATA;
			else
				return snprintf(why, cap, "components takes video, audio, subtitles, data joined by +"), -1;
			p += n + (p[n] == '+');
		}
		if (!c)
			return snprintf(why, cap, "components takes video, audio, subtitles, data joined by +"), -1;
		v->v.components = c;
	} else {
		return snprintf(why, cap, "unknown setting '%.*s' (alg, product, event, price, key-id, ecm-pid, "
					  "components)", (int)klen, key), -1;
	}
	return 0;
#undef KEY
}

/* What the ECMs say: algorithm, access, service key. As take_feed. */
static int take_access(struct scr_opts *o, int c, const char *arg)
{
	static const char *const key[] = {[O_ALG - 256] = "alg", [O_PRODUCT - 256] = "product",
					  [O_EVENT - 256] = "event", [O_PRICE - 256] = "price",
					  [O_KEYID - 256] = "key-id"};
	struct kh_headend_cfg *cfg = &o->cfg;
	char why[120];

	switch (c) {
	case O_ALG:
	case O_PRODUCT:
	case O_EVENT:
	case O_PRICE:
	case O_KEYID:
		if (svc_value(&o->dflt, key[c - 256], strlen(key[c - 256]), arg, why, sizeof why) != 0)
			return kh_cli_usage(P, "--%s", why);
		break;
	case O_KEYVER:
		if (kh__cli_u32(arg, &o->dflt.v.key_version) != 0 || o->dflt.v.key_version == 0)
			return kh_cli_usage(P, "--key-version takes a number from 1");
		break;
	case O_REDUCE: o->dflt.v.csa_reduce = 1; break;
	case O_NOVIDEO: o->comp_off |= KH_HEADEND_C_VIDEO; break;
	case O_NOAUDIO: o->comp_off |= KH_HEADEND_C_AUDIO; break;
	case O_NOSUBS: o->comp_off |= KH_HEADEND_C_SUBTITLES; break;
	case O_DATA: o->comp_on |= KH_HEADEND_C_DATA; break;
	case O_LADDER: cfg->ecm_flags |= KH_ECM_F_LADDER; break;
	case O_GROW: cfg->nulls = KH_HEADEND_NULL_GROW; break;
	default: return take_feed(o, c, arg);
	}
	return KH_EXIT_OK;
}

/* The stream's shape: programme, timing, PIDs, CA system. As take_feed. */
static int take_stream(struct scr_opts *o, int c, const char *arg)
{
	struct kh_headend_cfg *cfg = &o->cfg;
	uint64_t x;

	switch (c) {
	case 's':
		if (o->nspec == KH_HEADEND_SERVICES_MAX)
			return kh_cli_usage(P, "at most %d --service", KH_HEADEND_SERVICES_MAX);
		o->specs[o->nspec++] = arg;
		break;
	case O_PERIOD:
		if (parse_ms(arg, KH_HEADEND_PERIOD_MIN, KH_HEADEND_PERIOD_MAX, &cfg->period_s) != 0)
			return kh_cli_usage(P, "--period takes 5 to 30 seconds");
		break;
	case O_LEAD:
		if (parse_ms(arg, 0, 29999, &cfg->lead_ms) != 0)
			return kh_cli_usage(P, "--lead takes milliseconds, less than the period");
		break;
	case O_ECMIV:
	case O_EMMIV:
		if (parse_ms(arg, 10, 60000, c == O_ECMIV ? &cfg->ecm_interval_ms : &cfg->emm_interval_ms) != 0)
			return kh_cli_usage(P, "%s takes 10 to 60000 ms", c == O_ECMIV ? "--ecm-interval" : "--emm-interval");
		o->have_ecmiv |= c == O_ECMIV;
		break;
	case O_ECMPID:
	case O_EMMPID:
		if (kh_cli_parse_num(arg, 0x1FFE, &x) != 0 || x < 0x10)
			return kh_cli_usage(P, "%s takes a PID from 0x0010 to 0x1FFE", c == O_ECMPID ? "--ecm-pid" : "--emm-pid");
		if (c == O_ECMPID) {
			o->dflt.v.ecm_pid = (uint16_t)x;
			o->dflt.have_ecm_pid = 1;
		} else {
			cfg->emm_pid = (uint16_t)x;
			o->have_emm_pid = 1;
		}
		break;
	case 'C':
		if (kh_cli_parse_num(arg, 0xFFFF, &x) != 0)
			return kh_cli_usage(P, "--ca-system-id takes a 16-bit number");
		cfg->ca_system_id = (uint16_t)x;
		break;
	case O_TIME:
		if (kh_cli_parse_time(arg, &cfg->time) != 0)
			return kh_cli_usage(P, "--time takes Unix seconds (or now, now+N, now-N)");
		break;
	default: return take_access(o, c, arg);
	}
	return KH_EXIT_OK;
}

/* The rules between options, once all are read: KH_EXIT_OK or KH_EXIT_USAGE (told). */
static int check(const struct scr_opts *o)
{
	const struct kh_headend_cfg *cfg = &o->cfg;
	const struct kh_headend_feed_cfg *f = &o->fcfg;

	if (!o->keys)
		return kh_cli_usage(P, "--keys and --alg are required");
	for (unsigned i = 0; i < cfg->nsvc; i++) {
		const struct svc_opt *v = &o->svc[i];
		if (!v->have_alg)
			return kh_cli_usage(P, o->nspec > 1 ? "--service %u: give alg= or --alg" : "--keys and --alg are required",
					    cfg->svc[i].program);
		if (v->have_product == v->have_event || (v->have_product && v->have_price) ||
		    (v->have_event && !v->have_price && !f->center))
			return kh_cli_usage(P, "give either --product or --event with --price (with --center, the price "
					       "may come from the center's catalogue)%s", o->nspec > 1 ? ", for each --service" : "");
		if (cfg->svc[i].csa_reduce && cfg->svc[i].alg != KH_SCR_CSA2)
			return kh_cli_usage(P, "--csa-reduce is for --alg csa2 only");
		if (!cfg->svc[i].components)
			return kh_cli_usage(P, "--no-video, --no-audio and --no-subtitles leave nothing to scramble");
		for (unsigned j = 0; j < i; j++) {
			if (cfg->svc[j].program == cfg->svc[i].program)
				return kh_cli_usage(P, "--service is given twice for program %u", cfg->svc[i].program);
			if (v->have_ecm_pid && o->svc[j].have_ecm_pid && cfg->svc[j].ecm_pid == cfg->svc[i].ecm_pid)
				return kh_cli_usage(P, "ECM PID 0x%04X is given to two services", cfg->svc[i].ecm_pid);
		}
		if (v->have_ecm_pid && o->have_emm_pid && cfg->svc[i].ecm_pid == cfg->emm_pid)
			return kh_cli_usage(P, "--ecm-pid and --emm-pid must differ");
	}
	if (cfg->lead_ms >= cfg->period_s * 1000u)
		return kh_cli_usage(P, "--lead must be shorter than the period");
	if (!f->center && (f->cacert || f->insecure_http || f->since || o->have_poll || o->tokfile))
		return kh_cli_usage(P, "--cacert, --insecure-http, --center-since, --emm-poll and --token-file go "
				       "with --center");
	if (f->center && kh_headend_feed_url_check(f->center, f->insecure_http) != KH_OK)
		return kh_cli_usage(P, "--center takes a base URL https://HOST[:PORT] (http:// only to 127.0.0.1, "
				       "localhost or [::1] unless --insecure-http)");
	struct kh_tsip_url u;
	for (int i = 0; i < 2; i++) {
		const char *p = i ? o->outpath : o->inpath;
		if (kh_tsip_is_url(p) && kh_tsip_url_parse(p, &u) != KH_OK)
			return kh_cli_usage(P, "%s: a network address is udp://[SRC@]HOST:PORT[?ttl=N&pkts=N&local=ADDR&"
					       "rtp=1]", p);
	}
	if (o->idle_s && !kh_tsip_is_url(o->inpath ? o->inpath : "-"))
		return kh_cli_usage(P, "--idle-timeout goes with --in udp://...");
	if (o->regulate && (!o->outpath || !kh_tsip_is_url(o->outpath)))
		return kh_cli_usage(P, "--regulate goes with --out udp://...");
	if (!o->ecmg != !o->have_scid)
		return kh_cli_usage(P, "--ecmg and --super-cas-id go together");
	char host[256];
	uint16_t port;
	if (o->ecmg && (kh_cli_parse_listen(o->ecmg, host, sizeof host, &port) != 0 || port == 0))
		return kh_cli_usage(P, "--ecmg: '%s' is not HOST:PORT", o->ecmg);
	return kh_cli_refuse_tty_out(P, o->outpath);
}

/*
 * The services, into o->svc and o->cfg.svc: each --service PROGRAM[:KEY=VALUE,...] over the
 * defaults (--alg, --product, ...; --ecm-pid is the first service's), or one service (the first
 * program of the PAT) when none is given. KH_EXIT_OK or KH_EXIT_USAGE (told).
 */
static int build_services(struct scr_opts *o)
{
	unsigned comp = (KH_HEADEND_C_DEFAULT | o->comp_on) & ~o->comp_off;
	char why[160];
	uint64_t x;

	o->cfg.nsvc = o->nspec ? (unsigned)o->nspec : 1;
	for (unsigned i = 0; i < o->cfg.nsvc; i++) {
		struct svc_opt *v = &o->svc[i];
		const char *spec = o->nspec ? o->specs[i] : NULL, *p;
		char num[8];
		size_t n;

		*v = o->dflt;
		v->v.components = comp;
		if (i > 0)
			v->have_ecm_pid = 0; /* --ecm-pid is the first service's */
		if (spec) {
			n = strcspn(spec, ":");
			if (n == 0 || n >= sizeof num)
				return kh_cli_usage(P, "--service takes PROGRAM[:alg=...,product=...,...]");
			memcpy(num, spec, n);
			num[n] = 0;
			if (kh_cli_parse_num(num, 0xFFFF, &x) != 0 || x == 0)
				return kh_cli_usage(P, "--service takes a program number from 1 to 65535");
			v->v.program = (uint16_t)x;
			for (p = spec[n] ? spec + n + 1 : spec + n; *p;) {
				size_t len = strcspn(p, ","), klen = strcspn(p, "=");
				char val[64];
				if (klen >= len || len - klen - 1 >= sizeof val)
					return kh_cli_usage(P, "--service %s: settings are KEY=VALUE, comma-separated", spec);
				memcpy(val, p + klen + 1, len - klen - 1);
				val[len - klen - 1] = 0;
				if (strncmp(p, "event", klen) == 0 && klen == 5)
					v->have_product = 0; /* the spec's access replaces the default's */
				if (strncmp(p, "product", klen) == 0 && klen == 7)
					v->have_event = v->have_price = 0;
				if (svc_value(v, p, klen, val, why, sizeof why) != 0)
					return kh_cli_usage(P, "--service %s: %s", spec, why);
				p += len + (p[len] == ',');
			}
		}
		v->v.access = v->have_product ? KH_ECM_PRODUCT : KH_ECM_EVENT;
		v->v.price = v->price_given;
		if (!v->have_product)
			v->v.product = 0;
		if (!v->have_event)
			v->v.event = v->v.price = 0;
		o->cfg.svc[i] = v->v;
	}
	return KH_EXIT_OK;
}

/*
 * The command line into o (o's defaults first): KH_EXIT_OK, KH_EXIT_USAGE or KH_EXIT_FAIL (told
 * in one line), or -1 after printing the help. run_close is safe after any of them.
 */
static int parse(int argc, char **argv, struct scr_opts *o)
{
	unsigned char seen[512] = {0};
	int c, rc;

	memset(o, 0, sizeof *o);
	o->inpath = "-";
	o->poll_s = 30;
	o->dflt.v.key_id = 1;
	o->dflt.v.ecm_pid = 0x0FF0;
	o->cfg.period_s = 10;
	o->cfg.lead_ms = 1000;
	o->cfg.ecm_interval_ms = 100;
	o->cfg.emm_interval_ms = 100;
	o->cfg.emm_pid = 0x0FF1;
	o->cfg.ca_system_id = KH_HEADEND_DEFAULT_CA_SYSTEM_ID;
	o->cfg.time = (uint64_t)time(NULL);
	if (!(o->emmpaths = calloc((size_t)argc + 1, sizeof *o->emmpaths)) ||
	    !(o->specs = calloc((size_t)argc + 1, sizeof *o->specs)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:i:o:s:C:T:vh", scramble_opts, NULL)) != -1) {
		const char *dup = c == O_EMM || c == 's' ? NULL : kh_cli_twice(scramble_opts, c, seen);
		if (dup)
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		if (c == 'h') {
			fputs(scramble_help, stdout);
			return -1;
		}
		if ((rc = take_stream(o, c, optarg)) < 0)
			return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		if (rc != KH_EXIT_OK)
			return rc;
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if ((rc = build_services(o)) != KH_EXIT_OK || (rc = check(o)) != 0)
		return rc;
	if (!o->outpath)
		o->outpath = "-";
	o->inname = strcmp(o->inpath, "-") == 0 ? "standard input" : o->inpath;
	return KH_EXIT_OK;
}

/* The key file's service key (into o->cfg), ECM signer and revoked version. KH_EXIT_OK or
 * KH_EXIT_FAIL (told). */
static int open_keys(struct scr_opts *o)
{
	struct kh_headend_cfg *cfg = &o->cfg;
	struct kh_headend_keys *k = NULL;
	size_t line = 0;
	kh_err r;

	if ((r = kh_headend_keys_load(o->keys, &k, &line)) != KH_OK)
		return kh__cli_keys_fail(o->keys, line, r);
	for (unsigned i = 0; i < cfg->nsvc; i++) {
		struct kh_headend_service *v = &cfg->svc[i];
		r = kh_headend_keys_get(k, v->key_id, v->key_version, v->service_key, &v->key_version);
		if (r != KH_OK) {
			kh_headend_keys_free(k);
			fprintf(stderr, "keyhole: %s: no service key %u%s\n", o->keys, v->key_id,
				v->key_version ? " of that version" : "");
			return KH_EXIT_FAIL;
		}
	}
	r = kh_headend_keys_signer(k, KH_ROLE_ECM_SIGNER, &cfg->ecm_signer, NULL, NULL);
	cfg->revoked_version = kh_headend_keys_revoked(k);
	kh_headend_keys_free(k);
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: %s: no ECM signer (keyhole headend keys init copies the authority's)\n",
			o->keys);
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

/* With --center and --event: the catalogue's price, the one the center invoices (a purchase must
 * cost that), into each event service of o->cfg. As open_keys. */
static int catalogue_price(struct scr_opts *o, const char *tok)
{
	for (unsigned i = 0; i < o->cfg.nsvc; i++) {
		struct kh_headend_service *v = &o->cfg.svc[i];
		uint32_t price = 0;
		char why[256];
		kh_err r;

		if (v->access != KH_ECM_EVENT)
			continue;
		if ((r = kh_headend_event_price(&o->fcfg, tok, v->event, &price, why, sizeof why)) != KH_OK) {
			fprintf(stderr, "keyhole: %s: %s\n", o->fcfg.center, why[0] ? why : kh_strerror(r));
			return KH_EXIT_FAIL;
		}
		if (o->svc[i].have_price && price != o->svc[i].price_given) {
			fprintf(stderr,
				"keyhole: %s: --price %lu differs from the catalogue's price of event %lu (%lu); leave "
				"--price out to take the catalogue's\n",
				o->fcfg.center, (unsigned long)o->svc[i].price_given, (unsigned long)v->event,
				(unsigned long)price);
			return KH_EXIT_FAIL;
		}
		v->price = price;
		if (o->verbose)
			fprintf(stderr, "keyhole headend scramble: event %lu costs %lu in the center's catalogue\n",
				(unsigned long)v->event, (unsigned long)price);
	}
	return KH_EXIT_OK;
}

/* With --center: its broadcast EMM queue, after the files' EMMs in s->emm. As open_keys. */
static int fetch_center(const struct scr_opts *o, struct scr_run *s)
{
	size_t cemm_len = 0, cemm_n = 0;
	uint8_t *all;
	char why[256];
	kh_err r;

	if ((r = kh_headend_feed_fetch(&o->fcfg, &s->cemm, &cemm_len, &cemm_n, &s->last_id, why, sizeof why)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: %s\n", o->fcfg.center, why[0] ? why : kh_strerror(r));
		return KH_EXIT_FAIL;
	}
	if (o->verbose)
		fprintf(stderr, "keyhole headend scramble: %zu EMM(s) from the center, last id %lld\n", cemm_n,
			(long long)s->last_id);
	if (!cemm_len)
		return KH_EXIT_OK;
	if (!(all = realloc(s->emm, s->emm_len + cemm_len)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	memcpy(all + s->emm_len, s->cemm, cemm_len);
	s->emm = all;
	s->emm_len += cemm_len;
	return KH_EXIT_OK;
}

/* A PID given must be free in the input. KH_EXIT_OK or KH_EXIT_FAIL (told). */
static int pid_free(const struct kh_headend_census *c, const char *inname, const char *opt, uint16_t pid)
{
	char use[100];

	if (kh_headend_census_use(c, pid, NULL) == KH_HEADEND_PID_FREE)
		return KH_EXIT_OK;
	pid_use(c, pid, use, sizeof use);
	fprintf(stderr, "keyhole: %s: %s 0x%04X is in use in the input: %s; leave it out to have a free PID chosen\n",
		inname, opt, pid, use);
	return KH_EXIT_FAIL;
}

/*
 * The ECM and EMM PIDs: one given (explicit) must be free in the input, else the run is refused;
 * one not given is the first PID from 0x0FF1 (EMMs) / 0x0FF0 (ECMs of the first service, then
 * upwards) that neither the input nor another of ours uses. With verbose, says which on stderr.
 * Returns KH_EXIT_OK or KH_EXIT_FAIL (the message printed).
 */
static int choose_pids(const struct kh_headend_census *c, const char *inname, struct scr_opts *o)
{
	struct kh_headend_cfg *cfg = &o->cfg;
	uint16_t pid;

	if (o->have_emm_pid && pid_free(c, inname, "--emm-pid", cfg->emm_pid) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	for (unsigned i = 0; i < cfg->nsvc; i++)
		if (o->svc[i].have_ecm_pid &&
		    pid_free(c, inname, o->nspec > 1 ? "ecm-pid=" : "--ecm-pid", cfg->svc[i].ecm_pid) != KH_EXIT_OK)
			return KH_EXIT_FAIL;
	if (!o->have_emm_pid) {
		for (pid = 0x0FF1; ours(o, pid, 0, 0) || kh_headend_census_use(c, pid, NULL) != KH_HEADEND_PID_FREE;)
			if (kh_headend_census_pick(c, pid == 0x1FFE ? 0x0020 : (uint16_t)(pid + 1), 0, &pid) != KH_OK)
				goto full;
		cfg->emm_pid = pid;
	}
	for (unsigned i = 0; i < cfg->nsvc; i++) {
		if (o->svc[i].have_ecm_pid)
			continue;
		for (pid = 0x0FF0; ours(o, pid, i, 1) || kh_headend_census_use(c, pid, NULL) != KH_HEADEND_PID_FREE;)
			if (kh_headend_census_pick(c, pid == 0x1FFE ? 0x0020 : (uint16_t)(pid + 1), 0, &pid) != KH_OK)
				goto full;
		cfg->svc[i].ecm_pid = pid;
	}
	if (o->verbose) {
		char use[100];
		fprintf(stderr, "keyhole headend scramble: ");
		for (unsigned i = 0; i < cfg->nsvc; i++) {
			fprintf(stderr, "ECM PID 0x%04X", cfg->svc[i].ecm_pid);
			if (cfg->nsvc > 1)
				fprintf(stderr, " (program %u)", cfg->svc[i].program);
			if (i == 0 && cfg->svc[0].ecm_pid != 0x0FF0 && !o->svc[0].have_ecm_pid &&
			    kh_headend_census_use(c, 0x0FF0, NULL) != KH_HEADEND_PID_FREE) {
				pid_use(c, 0x0FF0, use, sizeof use);
				fprintf(stderr, " (0x0FF0 is in use in the input: %s)", use);
			}
			fprintf(stderr, ", ");
		}
		fprintf(stderr, "EMM PID 0x%04X", cfg->emm_pid);
		if (cfg->emm_pid != 0x0FF1 && !o->have_emm_pid &&
		    kh_headend_census_use(c, 0x0FF1, NULL) != KH_HEADEND_PID_FREE) {
			pid_use(c, 0x0FF1, use, sizeof use);
			fprintf(stderr, " (0x0FF1 is in use in the input: %s)", use);
		}
		fputc('\n', stderr);
	}
	return KH_EXIT_OK;
full:
	fprintf(stderr, "keyhole: %s: no free PID left for the ECMs and EMMs\n", inname);
	return KH_EXIT_FAIL;
}

/*
 * Where the CA packets go: --grow as asked; else in place of null packets when the first packets
 * of the input have any (a constant-bitrate multiplex), else inserted as a variable-bitrate
 * stream takes them.
 */
static void choose_nulls(const struct prescan *ps, struct scr_opts *o)
{
	const char *how;
	size_t nulls = 0;

	for (size_t i = 0; i < ps->n; i++) {
		const uint8_t *p = ps->pkts + i * KH_TS_PACKET_LEN;
		if (((p[1] & 0x1F) << 8 | p[2]) == KH_TS_PID_NULL)
			nulls++;
	}
	if (o->cfg.nulls != KH_HEADEND_NULL_GROW)
		o->cfg.nulls = nulls ? KH_HEADEND_NULL_REPLACE : KH_HEADEND_NULL_INSERT;
	if (!o->verbose)
		return;
	if (o->cfg.nulls == KH_HEADEND_NULL_GROW)
		how = "replace null packets, else are inserted (PCRs restamped)";
	else if (nulls)
		how = "replace null packets (size and PCRs kept)";
	else
		how = "are inserted (a variable-bitrate stream)";
	fprintf(stderr, "keyhole headend scramble: %zu null packet(s) in the first %zu: ECM/EMM packets %s\n", nulls,
		ps->n, how);
}

/* The input opened and its first packets read, the ECM and EMM PIDs chosen from what they use.
 * As open_keys. */
static int open_input(struct scr_opts *o, struct scr_run *s)
{
	struct sigaction sa;
	int stopped = 0;
	kh_err r;

	if (!(s->rd = calloc(1, sizeof *s->rd)) || kh_headend_census_new(&s->census) != KH_OK)
		return kh_cli_fail(P, KH_ERR_NOMEM);
	s->rd->fd = -1;
	if (strcmp(o->inpath, "-") == 0) {
		s->rd->fd = 0;
	} else if (kh_tsip_is_url(o->inpath)) {
		int rc = kh__cli_udp_in(P, o->inpath, o->idle_s * 1000u, &s->rd->fd, &s->uin);
		if (rc != KH_EXIT_OK)
			return rc;
		s->rd->net = 1;
	} else if ((s->rd->fd = open(o->inpath, O_RDONLY | O_CLOEXEC)) < 0)
		return kh_cli_fail(o->inpath, errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((r = prescan(s->rd, s->census, &s->ps, &stopped)) != KH_OK) {
		if (!stopped)
			return kh_cli_fail(o->inname, r);
		fprintf(stderr, "keyhole: %s: interrupted\n", P);
		return KH_EXIT_FAIL;
	}
	if (s->ps.n == 0) {
		fprintf(stderr, "keyhole: %s: not a transport stream (no 188-byte packets found)\n", o->inname);
		return KH_EXIT_FAIL;
	}
	choose_nulls(&s->ps, o);
	return choose_pids(s->census, o->inname, o);
}

/* The engine, the control-word log, the output and the poller of the center's queue. As
 * open_keys. */
static int open_output(struct scr_opts *o, struct scr_run *s)
{
	kh_err r;

	o->cfg.emm = s->emm;
	o->cfg.emm_len = s->emm_len;
	if ((r = kh_headend_new(&o->cfg, write_all, &s->sk, &s->h)) != KH_OK)
		return kh_cli_fail(P, r);
	if (o->cwlog) {
		int fd = open(o->cwlog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || !(s->cwf = fdopen(fd, "w"))) {
			if (fd >= 0)
				close(fd);
			return kh_cli_fail(o->cwlog, KH_ERR_IO);
		}
		s->cwl.f = s->cwf;
		s->cwl.cfg = &o->cfg;
		kh_headend_set_cw_fn(s->h, log_cw, &s->cwl);
	}
	if (kh_tsip_is_url(o->outpath)) { /* a socket: nothing to rename */
		int rc = kh__cli_udp_out(P, o->outpath, o->regulate, &s->sk.fd, &s->uout);
		if (rc != KH_EXIT_OK)
			return rc;
	} else if (kh_cli_out_open(&s->outf, o->outpath) != KH_EXIT_OK) {
		return KH_EXIT_FAIL;
	} else {
		s->sk.fd = s->outf.fd;
	}
	if (o->fcfg.center && o->poll_s) {
		struct kh_headend_feed_cfg pf = o->fcfg;
		pf.since = s->last_id; /* from the highest id the start fetched */
		if ((r = kh_headend_poller_start(&pf, o->poll_s, &s->pc.p)) != KH_OK)
			return kh_cli_fail(P, r);
		s->pc.center = o->fcfg.center;
		s->pc.verbose = o->verbose;
	}
	return KH_EXIT_OK;
}

/*
 * --ecmg: connected, the channel and a stream per service set up (ECM_id its ECM PID, the crypto
 * period, its access criteria); the ECM repetition the ECMG's unless --ecm-interval. As open_keys.
 */
static int open_ecmg(struct scr_opts *o, struct scr_run *s)
{
	struct kh_scs_client *c;
	kh_err r;

	if (!o->ecmg)
		return KH_EXIT_OK;
	if (!(c = s->scs = calloc(1, sizeof *c)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	c->fd = -1;
	(void)kh_cli_parse_listen(o->ecmg, c->host, sizeof c->host, &c->port); /* checked by check() */
	c->super_cas_id = o->super_cas_id;
	c->n_svc = o->cfg.nsvc;
	for (unsigned i = 0; i < o->cfg.nsvc; i++) {
		const struct kh_headend_service *v = &o->cfg.svc[i];
		c->svc[i].ecm_id = v->ecm_pid;
		c->svc[i].nominal_cp = (uint16_t)(o->cfg.period_s * 10u);
		c->svc[i].ac_len = kh_scs_access_criteria(v->access, v->product, v->event, v->price, c->svc[i].ac);
	}
	if ((r = kh_scs_client_open(c, 5000)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: ECMG %s: %s\n", P, o->ecmg, c->why);
		return KH_EXIT_FAIL;
	}
	if (!o->have_ecmiv && c->ch.ecm_rep_period)
		o->cfg.ecm_interval_ms = c->ch.ecm_rep_period < 10 ? 10u : c->ch.ecm_rep_period;
	s->ew.c = c;
	s->ew.nsvc = o->cfg.nsvc;
	return KH_EXIT_OK;
}

/* The engine takes its ECMs from the ECMG, delay_start after each period's start. As open_keys. */
static int use_ecmg(const struct scr_opts *o, struct scr_run *s)
{
	kh_err r;

	if (!s->scs)
		return KH_EXIT_OK;
	if ((r = kh_headend_set_ecm_fn(s->h, kh_scs_client_ecm, s->scs, s->scs->ch.delay_start)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: ECMG %s: delay_start %d ms is out of range\n", P, o->ecmg,
			s->scs->ch.delay_start);
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

/* Everything the run needs, in the order a failure is told: token, keys, EMMs, input, ECMG,
 * output. */
static int prepare(struct scr_opts *o, struct scr_run *s)
{
	if (o->tokfile && kh_cli_read_token(o->tokfile, &s->tok) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (open_keys(o) != KH_EXIT_OK || read_emms(o->emmpaths, o->nemm, &s->emm, &s->emm_len) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (o->fcfg.center && catalogue_price(o, s->tok) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (o->fcfg.center && fetch_center(o, s) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (open_input(o, s) != KH_EXIT_OK || open_ecmg(o, s) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (open_output(o, s) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	return use_ecmg(o, s);
}

/* The stream through the engine. KH_EXIT_OK, or KH_EXIT_FAIL with the culprit named. */
static int run(const struct scr_opts *o, struct scr_run *s)
{
	const char *what = NULL, *why;
	kh_err r = pump(s->h, s->rd, &s->ps, &what, o->inname, o->outpath, &s->pc, &s->ew);

	prescan_free(&s->ps);
	if (r == KH_OK)
		return KH_EXIT_OK;
	why = kh_headend_why(s->h);
	if (strcmp(what, P) == 0)
		fprintf(stderr, "keyhole: %s: interrupted\n", P);
	else if (*why && r != KH_ERR_IO)
		fprintf(stderr, "keyhole: %s: %s\n", what, why);
	else if (r == KH_ERR_IO && what == o->outpath && s->sk.err)
		fprintf(stderr, "keyhole: %s: %s\n", strcmp(what, "-") == 0 ? "standard output" : what,
			s->sk.err == EPIPE ? "the reader closed the pipe; stopped" : strerror(s->sk.err));
	else
		kh_cli_fail(strcmp(what, "-") == 0 ? "standard output" : what, r);
	return KH_EXIT_FAIL;
}

/* A run that went through: the control-word log closed, the output in place, the damage told. */
static int report(const struct scr_opts *o, struct scr_run *s)
{
	struct kh_headend_stats st;

	if (s->cwf) {
		int bad = fflush(s->cwf) != 0 || ferror(s->cwf);
		bad |= fclose(s->cwf) != 0;
		s->cwf = NULL;
		if (bad)
			return kh_cli_fail(o->cwlog, KH_ERR_IO);
	}
	if (s->uout) {
		close(s->sk.fd); /* the sender's end of input: it sends what is left and stops */
		s->sk.fd = -1;
		if (kh__cli_udp_finish(s->uout) != KH_EXIT_OK)
			return KH_EXIT_FAIL;
	}
	s->sk.fd = -1;
	if (!s->uout && kh_cli_out_commit(&s->outf, o->outpath) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (s->uin && kh__cli_udp_finish(s->uin) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	kh_headend_stats(s->h, &st);
	warn_damage(o->inname, &s->rd->sync, &st);
	if (s->scs) {
		kh_scs_client_close(s->scs);
		if (st.ecm_late)
			fprintf(stderr,
				"keyhole headend scramble: ECMG late: %llu ECM request(s) not answered, %llu period "
				"start(s) with the control word kept\n", (unsigned long long)st.ecm_late,
				(unsigned long long)st.degraded);
	}
	if (o->verbose && o->cfg.nulls != KH_HEADEND_NULL_INSERT)
		fprintf(stderr,
			"keyhole headend scramble: %llu packet(s) in place of null or dropped packets, %llu inserted, "
			"%llu PCR(s) restamped, %llu component packet(s) scrambled before ECM 0 was out\n",
			(unsigned long long)st.replaced, (unsigned long long)st.inserted,
			(unsigned long long)st.restamped, (unsigned long long)st.before_ecm);
	return KH_EXIT_OK;
}

/* Every path out: a failed run leaves neither output nor control-word log; keys and clear
 * programme wiped. */
static void run_close(struct scr_opts *o, struct scr_run *s)
{
	if (s->cwf) {
		fclose(s->cwf);
		unlink(o->cwlog);
	}
	kh_cli_out_close(&s->outf);
	kh_headend_poller_stop(s->pc.p);
	if (s->rd) {
		if (s->rd->fd > 0)
			close(s->rd->fd);
		kh_wipe(s->rd->buf, sizeof s->rd->buf);
		free(s->rd);
	}
	if (s->uout && s->sk.fd >= 0)
		close(s->sk.fd); /* first: the sender waits for its end of input */
	kh__cli_udp_free(s->uout);
	kh__cli_udp_free(s->uin);
	prescan_free(&s->ps);
	kh_headend_census_free(s->census);
	kh_headend_free(s->h);
	if (s->scs) {
		kh_scs_client_close(s->scs);
		kh_wipe(s->scs, sizeof *s->scs);
		free(s->scs);
	}
	kh_wipe(&o->cfg, sizeof o->cfg);
	if (s->emm) {
		kh_wipe(s->emm, s->emm_len);
		free(s->emm);
	}
	free(s->cemm);
	free(o->emmpaths);
	free(o->specs);
	kh_cli_free_token(s->tok);
}

int kh__cli_headend_scramble(int argc, char **argv)
{
	struct scr_opts o;
	struct scr_run s = {.sk = {.fd = -1}, .outf = {.fd = -1}};
	int rc = parse(argc, argv, &o);

	if (rc < 0)
		rc = KH_EXIT_OK; /* --help */
	else if (rc == KH_EXIT_OK)
		rc = prepare(&o, &s) == KH_EXIT_OK && run(&o, &s) == KH_EXIT_OK ? report(&o, &s) : KH_EXIT_FAIL;
	run_close(&o, &s);
	return rc;
}
