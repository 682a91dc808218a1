/*
 * keyhole decoder: the set-top box on the command line. This file holds the command table and
 * the two commands that run a stream: `play` pairs decoder module -> CAM -> card (seed 000),
 * runs the decoder engine (include/keyhole/decoder.h) over a scrambled transport stream and
 * writes the clear one; `buy` makes an impulse purchase of the pay-per-view event a stream's ECM
 * names. With --m1 DIR both keep the decoder's memory M1 up to date (decoder_m1.c, with `init`
 * and `m1`); `status` is decoder_status.c; `connect`, the upload session with the management
 * center, is decoder_connect.c. See keyhole-decoder(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/decoder.h"
#include "cli/udp_pipe.h"
#include "keyhole/cas.h"
#include "keyhole/decoder.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/log.h"
#include "keyhole/softmodule.h"
#include "keyhole/ts.h"
#include "keyhole/tsip.h"
#include "keyhole/upload.h"

#define READ_PACKETS 512 /* packets read per fread */

static const char play_help[] =
	"usage: keyhole decoder play --decoder SPEC --cam SPEC --card SPEC [--ladder]\n"
	"                            [--in FILE|-|udp://...] [--out FILE|-] [--service PROGRAM]... [--buy]\n"
	"                            [--ca-system-id ID] [--m1 DIR [--export-every SECONDS]]\n"
	"                            [--idle-timeout SECONDS] [-v]\n"
	"\n"
	"Pair the decoder module with the CAM (it proves its certificate there) and the CAM with the\n"
	"card, then read a scrambled MPEG-TS,\n"
	"pass its ECMs and EMMs to the card and write the programmes in clear: ECM, EMM and CAT\n"
	"packets dropped, the PAT listing only the programmes played, each PMT without CA and\n"
	"scrambling descriptors, packets the card gave no key for dropped. Without --service, every\n"
	"programme the card has rights for and the clear ones are played: a programme whose ECM the\n"
	"card refuses for want of rights before answering any is left out, with one line. At the\n"
	"end, one line per PID on stderr: programme, role, packets in, out, descrambled, dropped.\n"
	"An ECM the card refuses changes nothing; a key serves only its own crypto period. Bytes\n"
	"outside the 188-byte packet cadence are skipped and counted. Messages for the viewer go to\n"
	"stderr, one line each. Exit status 1, with the reason on the last line, when no\n"
	"programme is one the card has rights for, when not one scrambled packet of the programmes\n"
	"could be descrambled, when the input is not\n"
	"a transport stream, on SIGINT or SIGTERM, when the reader of the output goes away or the\n"
	"output cannot be written; a --out FILE is then not written. The card stores its\n"
	"counters however play ends.\n"
	"\n"
	"  -d, --decoder SPEC       the decoder module: a module file, unix:PATH for a daemon, or\n"
	"                           pcsc:READER for a module in a smart-card reader (pcsc: the\n"
	"                           first reader with a card); a card or CAM pulled from its reader,\n"
	"                           put in, or lost with pcscd ends the channel at once: the next\n"
	"                           ECM pairs with the card there then, and a reader gone is waited\n"
	"                           for\n"
	"  -m, --cam SPEC           the CAM, in the same forms\n"
	"  -c, --card SPEC          the smart card, in the same forms\n"
	"  -L, --ladder             key ladder: the CAM seals the control words for the decoder\n"
	"                           module, which descrambles; this process never holds one\n"
	"                           (default: the decoder module hands them over, we descramble)\n"
	"  -i, --in FILE            scrambled TS to read (default -, standard input), or\n"
	"                           udp://[SRC@]HOST:PORT[?local=ADDR&rtp=1] to receive it (UDP or\n"
	"                           RTP, multicast joined); a stop signal or --idle-timeout ends it\n"
	"      --idle-timeout S     with --in udp://: the input ends S seconds after the last\n"
	"                           datagram (the first is waited for)\n"
	"  -o, --out FILE           clear TS to write (default -, standard output; refused when\n"
	"                           that is a terminal, unless --out - is given); a file is\n"
	"                           written under a temporary name and renamed when complete\n"
	"  -s, --service PROGRAM    program_number to play; may be repeated, up to 16 (default:\n"
	"                           every programme the card has rights for; with --ladder, one:\n"
	"                           the first in the PAT)\n"
	"  -C, --ca-system-id ID    CA_system_id to follow (default 0x4B48)\n"
	"  -b, --buy                buy a pay-per-view event the card has not bought, once\n"
	"  -M, --m1 DIR             keep the decoder's memory M1 in DIR: after the card accepts an\n"
	"                           EMM or makes a purchase, and at the end of the stream, ask it\n"
	"                           for a usage block for M1 (given only while the center has\n"
	"                           authorised export) and store it (DIR and its key are made on\n"
	"                           first use; default: no M1)\n"
	"      --export-every SECONDS  with --m1: also every SECONDS of stream time (the\n"
	"                           programme's PCR; 1 to 86400; default: only on changes and at\n"
	"                           the end)\n"
	"  -v, --verbose            print a summary on stderr at the end (M1 blocks stored included)\n";

static const char buy_help[] =
	"usage: keyhole decoder buy --decoder SPEC --cam SPEC --card SPEC --in FILE|- [--service PROGRAM]\n"
	"                           [--ca-system-id ID] [--m1 DIR]\n"
	"\n"
	"Read the stream until the first ECM of the service and have the card buy the pay-per-view\n"
	"event it names, at the price it names (the card reads both from the authenticated ECM).\n"
	"Prints 'bought event E for P; credit now C' or 'event E already bought'.\n"
	"\n"
	"  -d, --decoder SPEC       the decoder module\n"
	"  -m, --cam SPEC           the CAM\n"
	"  -c, --card SPEC          the smart card\n"
	"  -i, --in FILE            scrambled TS to read (- for standard input)\n"
	"  -s, --service PROGRAM    program_number (default: the first in the PAT)\n"
	"  -C, --ca-system-id ID    CA_system_id to follow (default 0x4B48)\n"
	"  -M, --m1 DIR             after a purchase, refresh the decoder's memory M1 in DIR\n";

/* ---- shared ---- */

struct opts {
	const char *dec, *cam, *card, *in, *out, *m1;
	long service, casid, export_every, idle;
	uint16_t services[KH_DECODER_PROGRAMS]; /* play: every --service (service: the first) */
	unsigned nservices;
	int buy, verbose, ladder;
};

static int num(const char *cmd, const char *opt, const char *s, long max, long *v)
{
	uint64_t x;
	if (kh_cli_parse_num(s, (uint64_t)max, &x) != 0)
		return kh_cli_usage(cmd, "%s takes a number from 0 to %ld", opt, max);
	*v = (long)x;
	return KH_EXIT_OK;
}

/*
 * One --service: play takes several (up to KH_DECODER_PROGRAMS, each once, 0 only alone: the
 * default), buy one.
 */
static int add_service(const char *cmd, int play, const char *arg, struct opts *o)
{
	long v = 0;

	if (num(cmd, "--service", arg, 0xFFFF, &v) != KH_EXIT_OK)
		return KH_EXIT_USAGE;
	if (o->nservices && !play)
		return kh_cli_usage(cmd, "--service is given once");
	if (o->nservices == KH_DECODER_PROGRAMS)
		return kh_cli_usage(cmd, "--service is given at most %u times", KH_DECODER_PROGRAMS);
	if (o->nservices && (v == 0 || o->service == 0))
		return kh_cli_usage(cmd, "--service 0 (the default) goes alone");
	for (unsigned i = 0; i < o->nservices; i++)
		if (o->services[i] == v)
			return kh_cli_usage(cmd, "--service %ld is given twice", v);
	if (o->nservices == 0)
		o->service = v;
	o->services[o->nservices++] = (uint16_t)v;
	return KH_EXIT_OK;
}

/* Parse the options of play and buy; KH_EXIT_OK, KH_EXIT_USAGE, or -1 after printing help. */
static int parse(const char *cmd, const char *help, int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"decoder", required_argument, NULL, 'd'}, {"cam", required_argument, NULL, 'm'},
		{"ladder", no_argument, NULL, 'L'},
		{"card", required_argument, NULL, 'c'},  {"in", required_argument, NULL, 'i'},
		{"out", required_argument, NULL, 'o'},   {"service", required_argument, NULL, 's'},
		{"ca-system-id", required_argument, NULL, 'C'}, {"buy", no_argument, NULL, 'b'},
		{"verbose", no_argument, NULL, 'v'},    {"m1", required_argument, NULL, 'M'},
		{"export-every", required_argument, NULL, 'E'}, {"help", no_argument, NULL, 'h'},
		{"idle-timeout", required_argument, NULL, 0x100},
		{NULL, 0, NULL, 0}};
	int c, play = strcmp(cmd, "decoder play") == 0;

	memset(o, 0, sizeof *o);
	o->casid = KH_DECODER_CA_SYSTEM_ID;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+d:m:c:i:o:s:C:M:Lbvh", lo, NULL)) != -1) {
		switch (c) {
		case 'd': o->dec = optarg; break;
		case 'm': o->cam = optarg; break;
		case 'c': o->card = optarg; break;
		case 'i': o->in = optarg; break;
		case 'M':
			if (!*optarg)
				return kh_cli_usage(cmd, "--m1 takes a directory");
			o->m1 = optarg;
			break;
		case 'o':
			if (!play)
				return kh_cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
			o->out = optarg;
			break;
		case 's':
			if (add_service(cmd, play, optarg, o) != KH_EXIT_OK)
				return KH_EXIT_USAGE;
			break;
		case 'C':
			if (num(cmd, "--ca-system-id", optarg, 0xFFFF, &o->casid) != KH_EXIT_OK)
				return KH_EXIT_USAGE;
			if (o->casid == 0)
				return kh_cli_usage(cmd, "--ca-system-id takes a number from 1 to 65535");
			break;
		case 'E':
			if (!play)
				return kh_cli_usage(cmd, "--export-every is an option of decoder play");
			if (num(cmd, "--export-every", optarg, 86400, &o->export_every) != KH_EXIT_OK)
				return KH_EXIT_USAGE;
			if (o->export_every == 0)
				return kh_cli_usage(cmd, "--export-every takes seconds, 1 to 86400");
			break;
		case 0x100:
			if (!play)
				return kh_cli_usage(cmd, "--idle-timeout is an option of decoder play");
			if (num(cmd, "--idle-timeout", optarg, 86400, &o->idle) != KH_EXIT_OK)
				return KH_EXIT_USAGE;
			if (o->idle == 0)
				return kh_cli_usage(cmd, "--idle-timeout takes seconds, 1 to 86400");
			break;
		case 'b':
		case 'v':
		case 'L':
			if (!play)
				return kh_cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
			*(c == 'b' ? &o->buy : c == 'v' ? &o->verbose : &o->ladder) = 1;
			break;
		case 'h': fputs(help, stdout); return -1;
		default: return kh_cli_usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (!o->dec || !o->cam || !o->card)
		return kh_cli_usage(cmd, "--decoder, --cam and --card are required");
	if (!play && !o->in)
		return kh_cli_usage(cmd, "--in is required");
	if (o->export_every && !o->m1)
		return kh_cli_usage(cmd, "--export-every goes with --m1");
	if (o->ladder && o->nservices > 1)
		return kh_cli_usage(cmd, "--ladder plays one programme: give --service once");
	if (o->idle && !kh_tsip_is_url(o->in))
		return kh_cli_usage(cmd, "--idle-timeout goes with --in udp://...");
	if (!play && kh_tsip_is_url(o->in))
		return kh_cli_usage(cmd, "decoder buy reads a file (or -), not the network");
	return KH_EXIT_OK;
}

/* The three modules and the CAS session over them. */
struct modules {
	struct kh_softmod *dec_sm, *cam_sm, *card_sm;
	struct kh_transport dec, cam, card;
	struct kh_host_cas cas;
};

static int open_modules(const struct opts *o, struct modules *m)
{
	char what[4200];
	kh_err r;

	if ((r = kh_cli_open_module(o->dec, NULL, &m->dec_sm, &m->dec, what, sizeof what)) != KH_OK ||
	    (r = kh_cli_open_module(o->cam, NULL, &m->cam_sm, &m->cam, what, sizeof what)) != KH_OK ||
	    (r = kh_cli_open_module(o->card, NULL, &m->card_sm, &m->card, what, sizeof what)) != KH_OK)
		return kh_cli_fail(what, r);
	kh_host_cas_init(&m->cas, &m->dec, &m->cam, &m->card, o->ladder ? KH_HOST_CAS_LADDER : 0);
	return KH_EXIT_OK;
}

static void close_modules(struct modules *m)
{
	kh_host_cas_wipe(&m->cas);
	kh_transport_close(&m->dec);
	kh_transport_close(&m->cam);
	kh_transport_close(&m->card);
	kh_softmod_free(m->dec_sm);
	kh_softmod_free(m->cam_sm);
	kh_softmod_free(m->card_sm);
}

struct play_ctx {
	int fd;     /* the clear stream's output */
	int err;    /* errno of a failed write */
	struct kh__cli_m1 *m1;
	struct kh_host_cas *cas;
	char why[256]; /* the last bad news the viewer was told */
};

static void notify_viewer(void *ctx, kh_err reason, const char *msg)
{
	struct play_ctx *p = ctx;

	fprintf(stderr, "keyhole: %s\n", msg);
	if (p && reason != KH_OK)
		snprintf(p->why, sizeof p->why, "%s", msg);
}

/* SIGINT or SIGTERM while playing: stop reading, tell the card, leave nothing half-written. */
static volatile sig_atomic_t play_stop;

static void on_stop(int sig)
{
	play_stop = sig;
}

static kh_err write_out(void *ctx, const uint8_t *pkts, size_t n)
{
	struct play_ctx *p = ctx;
	size_t len = n * KH_TS_PACKET_LEN;

	while (len) {
		ssize_t w = write(p->fd, pkts, len);
		if (w <= 0) {
			if (w < 0 && errno == EINTR && !play_stop)
				continue;
			p->err = w < 0 ? errno : EIO;
			return KH_ERR_IO;
		}
		pkts += w;
		len -= (size_t)w;
	}
	return KH_OK;
}

static void card_changed(void *ctx, unsigned what)
{
	struct play_ctx *p = ctx;
	kh__cli_m1_update(p->m1, p->cas,
		  what == KH_DECODER_CHANGED_PURCHASE ? "purchase"
		  : what == KH_DECODER_CHANGED_PERIOD ? "period"
						      : "emm");
}

/* How often the readers are looked at while the input is idle, and while a reader is gone. */
#define WATCH_MS 200

static void nap_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/*
 * The readers of the modules named pcsc:READER, watched as a set-top box watches its card slot
 * (docs/internals/pcsc.md). A card pulled or put in, or a reader lost and found again, drops the
 * channel before the next bytes are fed: no control word of the old channel serves a packet
 * that comes after, and the next ECM pairs with whatever card is there. While a reader is gone
 * nothing is read: the stream waits for it.
 */
struct watch {
	struct kh_transport *t[3];
	const char *role[3];
	int any;
};

static void watch_init(struct watch *w, struct modules *m)
{
	memset(w, 0, sizeof *w);
	if (!m)
		return;
	w->t[0] = &m->dec;
	w->t[1] = &m->cam;
	w->t[2] = &m->card;
	w->role[0] = "decoder module";
	w->role[1] = "CAM";
	w->role[2] = "card";
	for (unsigned i = 0; i < 3; i++)
		w->any |= kh_transport_is_pcsc(w->t[i]);
}

/* Look at every reader once; those gone are waited for (nothing is read meanwhile). */
static kh_err watch_readers(struct watch *w, struct kh_decoder *d)
{
	enum kh_pcsc_event ev[3];
	unsigned gone = 0, back = 0, drop = 0;
	kh_err r;

	if (!w->any)
		return KH_OK;
	for (unsigned i = 0; i < 3; i++) {
		ev[i] = kh_transport_pcsc_poll(w->t[i]);
		if (ev[i] == KH_PCSC_GONE) {
			fprintf(stderr, "keyhole: the %s's reader '%s' is gone (pcscd stopped, or the reader "
					"unplugged); waiting for it\n",
				w->role[i], kh_transport_pcsc_reader(w->t[i]));
			gone |= 1u << i;
		}
	}
	if (gone && (r = kh_decoder_drop_channel(d)) != KH_OK)
		return r;
	while (gone && !play_stop) {
		nap_ms(WATCH_MS);
		for (unsigned i = 0; i < 3; i++) {
			if (!(gone & (1u << i)) || (ev[i] = kh_transport_pcsc_poll(w->t[i])) == KH_PCSC_GONE)
				continue;
			gone &= ~(1u << i);
			back |= 1u << i;
			fprintf(stderr, "keyhole: the %s's reader '%s' is back%s\n", w->role[i],
				kh_transport_pcsc_reader(w->t[i]),
				kh_transport_pcsc_present(w->t[i]) ? "" : ", with no card in it");
		}
	}
	for (unsigned i = 0; i < 3; i++) {
		if (ev[i] != KH_PCSC_CHANGED)
			continue;
		drop = 1;
		if (kh_transport_pcsc_present(w->t[i]))
			fprintf(stderr, "keyhole: a %s is in reader '%s': pairing with it at the next ECM\n",
				w->role[i], kh_transport_pcsc_reader(w->t[i]));
		else if (!(back & (1u << i)))
			fprintf(stderr, "keyhole: the %s was taken out of reader '%s'\n", w->role[i],
				kh_transport_pcsc_reader(w->t[i]));
	}
	return drop ? kh_decoder_drop_channel(d) : KH_OK;
}

/*
 * Wait until fd has bytes, looking at the readers every WATCH_MS meanwhile and once more when
 * the bytes are there, so that a swap made while the input was idle is seen before they are fed.
 */
static kh_err wait_input(int fd, struct watch *w, struct kh_decoder *d)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int ready;
	kh_err r;

	if (!w->any)
		return KH_OK;
	do {
		ready = poll(&p, 1, WATCH_MS) != 0; /* an error (EINTR) is read's to report */
		if ((r = watch_readers(w, d)) != KH_OK)
			return r;
	} while (!ready && !play_stop);
	return KH_OK;
}

/*
 * Read fd into the engine (which finds the packets in the bytes) until the end of the input, a
 * stop signal, or, with stop_at_ecm, until the engine has seen an ECM of the service. *rerr: the
 * errno of a failed read (KH_ERR_IO then). With modules in PC/SC readers, the readers are
 * watched (struct watch) before each read and while the input is idle.
 */
static kh_err pump(int fd, struct kh_decoder *d, struct modules *m, int stop_at_ecm, int *rerr)
{
	static uint8_t buf[READ_PACKETS * KH_TS_PACKET_LEN];
	uint8_t one[KH_ECM_MAX];
	struct watch w;
	size_t len;
	ssize_t got;
	kh_err r;

	*rerr = 0;
	watch_init(&w, m);
	while (!play_stop) {
		if ((r = wait_input(fd, &w, d)) != KH_OK)
			return r;
		if (play_stop)
			break;
		if ((got = read(fd, buf, sizeof buf)) < 0) {
			if (errno == EINTR)
				continue;
			*rerr = errno;
			return KH_ERR_IO;
		}
		if (got == 0)
			return KH_OK;
		if ((r = kh_decoder_write(d, buf, (size_t)got)) != KH_OK)
			return r;
		if (stop_at_ecm && kh_decoder_last_ecm(d, one, sizeof one, &len))
			return KH_OK;
	}
	return KH_OK;
}

/* The input: "-" (or none) is standard input. -1 with errno set when it does not open. */
static int open_in(const char *path)
{
	if (!path || strcmp(path, "-") == 0)
		return STDIN_FILENO;
	return open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

static const char *in_name(const char *path)
{
	return !path || strcmp(path, "-") == 0 ? "standard input" : path;
}

/* ---- play ---- */

static void summary(const struct kh_decoder *d, const struct kh__cli_m1 *m1)
{
	struct kh_decoder_stats s;

	kh_decoder_get_stats(d, &s);
	fprintf(stderr,
		"keyhole: program %u: %llu packets in, %llu out, %llu descrambled, %llu dropped without a key "
		"(%llu of crypto periods whose ECM did not come), %llu CA/PSI packets dropped or rewritten, "
		"%llu damaged or foreign dropped, %llu bytes outside the packets skipped\n",
		s.program, (unsigned long long)s.pkts_in, (unsigned long long)s.pkts_out,
		(unsigned long long)s.descrambled, (unsigned long long)s.dropped_nokey,
		(unsigned long long)s.dropped_noecm, (unsigned long long)s.dropped_ca,
		(unsigned long long)s.dropped_bad, (unsigned long long)s.skipped_bytes);
	fprintf(stderr,
		"keyhole: ECMs passed %u, answered %u, refused %u; EMMs passed %u, accepted %u; reconnects %u; "
		"purchases %u\n",
		s.ecm_passed, s.ecm_answered, s.ecm_refused, s.emm_passed, s.emm_accepted, s.reconnects,
		s.purchases);
	if (s.emm_gaps)
		fprintf(stderr, "keyhole: EMM gaps: %u EMM(s) for this card came before an earlier one; %u held, "
				"%u not held\n",
			s.emm_gaps, s.emm_pending, s.emm_unheld);
	if (m1->dir)
		fprintf(stderr, "keyhole: M1: %u block(s) stored, %u kept as they were; %u export period(s) in "
				"%llu ms of stream time\n",
			m1->stored, m1->kept, s.periods, (unsigned long long)s.stream_ms);
}

static int by_pid(const void *a, const void *b)
{
	const struct kh_decoder_pid_stat *x = a, *y = b;

	return (int)x->pid - (int)y->pid;
}

/*
 * The --service programmes no packet of the stream belonged to (no PAT listed them): a warning
 * line each. Returns 1 when every one named is absent (nothing of what was asked played).
 */
static int absent_services(const struct kh_decoder *d, const struct opts *o)
{
	struct kh_decoder_pid_stat rows[KH_DECODER_PIDS];
	size_t n = kh_decoder_pid_stats(d, rows, KH_DECODER_PIDS);
	struct kh_decoder_stats s;
	unsigned absent = 0;

	kh_decoder_get_stats(d, &s);
	if (s.pkts_uncounted || o->nservices == 0 || o->services[0] == 0)
		return 0; /* PIDs not counted one by one, or no programme named */
	for (unsigned i = 0; i < o->nservices; i++) {
		size_t j = 0;
		while (j < n && rows[j].program != o->services[i])
			j++;
		if (j < n)
			continue;
		fprintf(stderr, "keyhole: %sprogram %u is not in the stream (no PAT lists it)\n",
			o->nservices > 1 ? "warning: " : "", o->services[i]);
		absent++;
	}
	return absent == o->nservices;
}

/* One line per PID, in PID order: what came in, went out, was descrambled, dropped. */
static void pid_report(const struct kh_decoder *d)
{
	struct kh_decoder_pid_stat rows[KH_DECODER_PIDS];
	struct kh_decoder_stats s;
	size_t n = kh_decoder_pid_stats(d, rows, KH_DECODER_PIDS);
	char prog[16];

	qsort(rows, n, sizeof rows[0], by_pid);
	for (size_t i = 0; i < n; i++) {
		if (rows[i].program)
			snprintf(prog, sizeof prog, "%u", rows[i].program);
		else
			snprintf(prog, sizeof prog, "-");
		fprintf(stderr, "keyhole: pid %u program %s %s: in %llu out %llu descrambled %llu dropped %llu\n",
			rows[i].pid, prog, kh_decoder_role_name(rows[i].role), (unsigned long long)rows[i].in,
			(unsigned long long)rows[i].out, (unsigned long long)rows[i].descrambled,
			(unsigned long long)rows[i].dropped);
	}
	kh_decoder_get_stats(d, &s);
	if (s.pkts_uncounted)
		fprintf(stderr, "keyhole: %llu packet(s) of PIDs beyond the first %u not counted by PID\n",
			(unsigned long long)s.pkts_uncounted, KH_DECODER_PIDS);
}

/* The stream is over: the card may now store its usage counters at leisure, and M1 take its
 * latest block (the counters moved, if nothing else). */
static void card_end(struct modules *m, struct kh__cli_m1 *m1)
{
	kh_err r;

	if ((r = kh_host_cas_flush(&m->cas)) != KH_OK)
		kh_log_info("cas.flush.refused", "error=%s", kh_err_name(r));
	kh__cli_m1_update(m1, &m->cas, "end");
}

/* Why the programme could not be descrambled at all, when the viewer was told nothing. */
static const char *why_nothing(const struct kh_decoder_stats *s)
{
	if (s->ecm_pid == 0xFFFF)
		return "the programme names no ECM for this CA system (see --ca-system-id)";
	if (s->ecm_passed == 0)
		return "no ECM of the programme came in the stream";
	return "no ECM of the programme gave a key for its packets";
}

static int play(int argc, char **argv)
{
	struct opts o;
	struct modules *m = NULL;
	struct kh_decoder *d = NULL;
	struct kh_decoder_config cfg;
	struct kh_decoder_stats s;
	struct play_ctx pc;
	struct sigaction sa, old_int, old_term, old_pipe, old_xfsz;
	struct kh__cli_m1 m1;
	const char *out_name;
	struct kh_cli_out out = {.fd = -1};
	int rc, in = -1, rerr = 0, connected = 0, handlers = 0;
	struct kh__cli_udp *uin = NULL;
	kh_err r;

	memset(&m1, 0, sizeof m1);
	memset(&pc, 0, sizeof pc);
	pc.fd = -1;
	if ((rc = parse("decoder play", play_help, argc, argv, &o)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = kh_cli_refuse_tty_out("decoder play", o.out)) != 0)
		return rc;
	rc = KH_EXIT_FAIL;
	out_name = !o.out || strcmp(o.out, "-") == 0 ? "standard output" : o.out;
	if (!(m = calloc(1, sizeof *m))) {
		kh_cli_fail("decoder", KH_ERR_NOMEM);
		goto out;
	}
	if (open_modules(&o, m) != KH_EXIT_OK || kh__cli_m1_open(&m1, o.m1) != KH_EXIT_OK)
		goto out;
	if (kh_tsip_is_url(o.in)) {
		if ((rc = kh__cli_udp_in("decoder play", o.in, (unsigned)o.idle * 1000u, &in, &uin)) != KH_EXIT_OK)
			goto out;
		rc = KH_EXIT_FAIL;
	} else if ((in = open_in(o.in)) < 0) {
		fprintf(stderr, "keyhole: %s: %s\n", o.in, strerror(errno));
		goto out;
	}
	if ((r = kh_host_cas_connect(&m->cas)) != KH_OK) {
		kh_cli_fail("pairing decoder, CAM and card", r);
		goto out;
	}
	connected = 1;
	if (kh_cli_out_open(&out, o.out) != KH_EXIT_OK)
		goto out;
	pc.fd = out.fd;
	/*
	 * From here on a stop is an orderly end: SIGINT and SIGTERM stop the reading (no
	 * SA_RESTART, so a blocked read returns), a reader that went away is EPIPE rather than
	 * death by SIGPIPE, a file over the size limit EFBIG rather than death by SIGXFSZ.
	 */
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	play_stop = 0;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, &old_pipe);
	sigaction(SIGXFSZ, &sa, &old_xfsz);
	handlers = 1;

	memset(&cfg, 0, sizeof cfg);
	cfg.cas = &m->cas;
	cfg.program = (uint16_t)o.service;
	if (o.nservices > 1) {
		memcpy(cfg.programs, o.services, o.nservices * sizeof o.services[0]);
		cfg.nprograms = o.nservices;
	}
	cfg.ca_system_id = (uint16_t)o.casid;
	cfg.flags = o.buy ? KH_DECODER_F_BUY : 0;
	cfg.notify = notify_viewer;
	cfg.out = write_out;
	cfg.changed = card_changed;
	cfg.export_every_ms = (uint32_t)o.export_every * 1000u;
	pc.m1 = &m1;
	pc.cas = &m->cas;
	cfg.ctx = &pc;
	if ((r = kh_decoder_new(&cfg, &d)) != KH_OK) {
		kh_cli_fail("decoder", r);
		goto out;
	}
	r = pump(in, d, m, 0, &rerr);
	if (r == KH_OK && !play_stop)
		r = kh_decoder_finish(d);
	/* However the stream ended (interrupted, the reader gone, the disk full included) */
	card_end(m, &m1);
	connected = 0;
	if (play_stop) {
		fprintf(stderr, "keyhole: decoder play: interrupted\n");
		goto out;
	}
	if (r == KH_ERR_IO && pc.err == EPIPE) {
		fprintf(stderr, "keyhole: %s: the reader closed the pipe; stopped\n", out_name);
		goto out;
	}
	if (r == KH_ERR_IO && pc.err) {
		fprintf(stderr, "keyhole: %s: %s\n", out_name, strerror(pc.err));
		goto out;
	}
	if (r == KH_ERR_IO && rerr) {
		fprintf(stderr, "keyhole: %s: %s\n", in_name(o.in), strerror(rerr));
		goto out;
	}
	if (r != KH_OK) {
		kh_cli_fail("decoder", r);
		goto out;
	}
	kh_decoder_get_stats(d, &s);
	pid_report(d); /* before a failure's line: the last line says why */
	if (o.verbose)
		summary(d, &m1);
	if (s.pkts_in == 0) {
		fprintf(stderr, "keyhole: %s: not a transport stream (no 188-byte packets)\n", in_name(o.in));
		goto out;
	}
	if (s.skipped_bytes)
		fprintf(stderr,
			"keyhole: warning: %s: %llu byte(s) outside the 188-byte packet cadence skipped (cadence "
			"lost %u time(s))\n",
			in_name(o.in), (unsigned long long)s.skipped_bytes, s.sync_lost);
	if (absent_services(d, &o))
		goto out;
	if (s.programs == 0 && s.left_out > 0) {
		fprintf(stderr, "keyhole: not one programme of the stream is one the card has rights for (%u left out)\n",
			s.left_out);
		goto out;
	}
	if (s.descrambled == 0 && s.dropped_nokey > 0) {
		if (s.programs > 1)
			fprintf(stderr, "keyhole: not one packet of the %u programmes could be descrambled: %s\n",
				s.programs, pc.why[0] ? pc.why : why_nothing(&s));
		else
			fprintf(stderr, "keyhole: program %u: not one packet could be descrambled: %s\n", s.program,
				pc.why[0] ? pc.why : why_nothing(&s));
		goto out;
	}
	if (kh_cli_out_commit(&out, o.out) != KH_EXIT_OK)
		goto out;
	if (uin && kh__cli_udp_finish(uin) != KH_EXIT_OK)
		goto out;
	if (s.emm_pending)
		fprintf(stderr, "keyhole: %u EMM(s) for this card wait for an earlier one the stream did not "
				"carry: 'keyhole decoder connect' fetches it from the center\n",
			s.emm_pending);
	rc = KH_EXIT_OK;
out:
	if (connected) /* a failure after pairing: the card still stores its counters */
		card_end(m, &m1);
	kh_cli_out_close(&out); /* a run that failed leaves no half-written output */
	if (in > STDERR_FILENO)
		close(in);
	kh__cli_udp_free(uin); /* after its pipe's reading end is closed */
	if (handlers) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
		sigaction(SIGPIPE, &old_pipe, NULL);
		sigaction(SIGXFSZ, &old_xfsz, NULL);
	}
	kh_decoder_free(d);
	kh__cli_m1_close(&m1);
	if (m) {
		close_modules(m);
		kh_wipe(m, sizeof *m);
		free(m);
	}
	return rc;
}

/* ---- buy ---- */

static int buy(int argc, char **argv)
{
	struct opts o;
	struct modules *m = NULL;
	struct kh_decoder *d = NULL;
	struct kh_decoder_config cfg;
	struct kh_cas_status *st = NULL;
	struct kh_ppv_offer offer;
	uint8_t ecm[KH_ECM_MAX];
	size_t ecm_len = 0;
	struct kh_decoder_stats ds;
	struct kh__cli_m1 m1;
	int in = -1, rerr, rc, before = 0;
	kh_err r;

	memset(&m1, 0, sizeof m1);
	play_stop = 0;
	if ((rc = parse("decoder buy", buy_help, argc, argv, &o)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	rc = KH_EXIT_FAIL;
	if (!(m = calloc(1, sizeof *m)) || !(st = calloc(1, sizeof *st))) {
		kh_cli_fail("decoder", KH_ERR_NOMEM);
		goto out;
	}
	if (open_modules(&o, m) != KH_EXIT_OK || kh__cli_m1_open(&m1, o.m1) != KH_EXIT_OK)
		goto out;
	if ((in = open_in(o.in)) < 0) {
		fprintf(stderr, "keyhole: %s: %s\n", o.in, strerror(errno));
		goto out;
	}
	memset(&cfg, 0, sizeof cfg);
	cfg.cas = &m->cas;
	cfg.program = (uint16_t)o.service;
	cfg.ca_system_id = (uint16_t)o.casid;
	cfg.flags = KH_DECODER_F_PASSIVE;
	if ((r = kh_decoder_new(&cfg, &d)) != KH_OK) {
		kh_cli_fail("decoder", r);
		goto out;
	}
	if ((r = pump(in, d, m, 1, &rerr)) != KH_OK) {
		if (rerr)
			fprintf(stderr, "keyhole: %s: %s\n", in_name(o.in), strerror(rerr));
		else
			kh_cli_fail(in_name(o.in), r);
		goto out;
	}
	if (!kh_decoder_last_ecm(d, ecm, sizeof ecm, &ecm_len)) {
		/* the end of the input: take its last packets too */
		if ((r = kh_decoder_finish(d)) != KH_OK) {
			kh_cli_fail("decoder", r);
			goto out;
		}
		kh_decoder_get_stats(d, &ds);
		if (ds.pkts_in == 0)
			fprintf(stderr, "keyhole: %s: not a transport stream (no 188-byte packets)\n", in_name(o.in));
		else if (!kh_decoder_last_ecm(d, ecm, sizeof ecm, &ecm_len))
			fprintf(stderr, "keyhole: %s: no ECM for the service in the stream\n", o.in);
		if (!ecm_len)
			goto out;
	}
	if ((r = kh_host_cas_connect(&m->cas)) != KH_OK) {
		kh_cli_fail("pairing decoder, CAM and card", r);
		goto out;
	}
	/* The card answers a repeated purchase as it answered the first: look before buying. */
	if ((r = kh_host_cas_status(&m->cas, st)) != KH_OK) {
		kh_cli_fail("card status", r);
		goto out;
	}
	memset(&offer, 0, sizeof offer);
	r = kh_host_cas_purchase(&m->cas, ecm, ecm_len, &offer);
	if (r == KH_ERR_CREDIT_LOW) {
		fprintf(stderr, "keyhole: event %u costs %u but the card holds only %u credit\n", offer.event,
			offer.price, offer.credit);
		goto out;
	}
	if (r == KH_ERR_FORMAT && m->cas.connected) {
		fprintf(stderr, "keyhole: the service's ECM names no pay-per-view event (a subscription channel)\n");
		goto out;
	}
	if (r != KH_OK) {
		kh_cli_fail("purchase", r);
		goto out;
	}
	for (size_t i = 0; i < st->npurchases && i < KH_CAS_STATUS_MAX_PURCHASES; i++)
		if (st->purchases[i].event == offer.event)
			before = 1;
	if (before || (st->credit == offer.credit && offer.price != 0)) {
		printf("event %u already bought\n", offer.event);
	} else {
		printf("bought event %u for %u; credit now %u\n", offer.event, offer.price, offer.credit);
		fflush(stdout);
		kh__cli_m1_update(&m1, &m->cas, "purchase");
	}
	rc = KH_EXIT_OK;
out:
	if (in > STDERR_FILENO)
		close(in);
	kh_decoder_free(d);
	kh__cli_m1_close(&m1);
	free(st);
	if (m) {
		close_modules(m);
		kh_wipe(m, sizeof *m);
		free(m);
	}
	return rc;
}

int kh_cmd_decoder(int argc, char **argv)
{
	static const struct kh_cli_cmd tab[] = {
		{"play", play, "descramble a transport stream with the card's control words"},
		{"buy", buy, "buy the pay-per-view event a stream's ECM names"},
		{"status", kh__cli_decoder_status, "show the card's credit, rights, purchases and keys"},
		{"init", kh__cli_decoder_init, "make the decoder's memory M1 and its local key"},
		{"m1", kh__cli_decoder_m1, "show which card's usage block the decoder's memory M1 holds"},
		{"connect", kh__cli_decoder_connect, "upload the card's and M1's usage blocks to the center, apply its EMMs"},
	};
	return kh_cli_dispatch("decoder", tab, sizeof tab / sizeof tab[0], argc, argv);
}
