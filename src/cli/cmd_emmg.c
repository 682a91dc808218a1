/*
 * `keyhole emmg`: the SimulCrypt EMMG (include/keyhole/emmg.h, docs/internals/emmg.md). Fetches
 * the management center's broadcast EMM queue and provisions it to a mux over EMMG<->MUX, cycling
 * it as a carousel (EMMs newer than the last poll first, then the cycle again), paced to the
 * bandwidth the mux allocated. A failed connection is tried again after a growing back-off;
 * SIGINT / SIGTERM end it with channel_close.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keyhole/emmg.h"
#include "keyhole/headend.h"
#include "keyhole/log.h"

#define P "emmg"

static const char help[] =
	"usage: keyhole emmg --center URL --mux HOST:PORT [--client-id ID] [--data-id N]\n"
	"           [--bandwidth KBITS] [--cacert FILE] [--insecure-http] [--poll SECONDS]\n"
	"           [--protocol-version 2|3] [--ts-packets] [--once]\n"
	"\n"
	"Provision the management center's broadcast EMMs to a multiplexer over the DVB SimulCrypt\n"
	"EMMG<->MUX interface (ETSI TS 103 197, TCP): channel_setup, stream_setup, a bandwidth\n"
	"request, then data_provision of the EMM sections, cycled as a carousel and paced so the\n"
	"bandwidth the mux allocated (which may be less than asked) is never exceeded. The center is\n"
	"polled for new EMMs, which go out before the cycle resumes. A refused or lost connection is\n"
	"tried again after a back-off (1 s doubling to 30 s); SIGINT or SIGTERM send channel_close\n"
	"and stop it. With --once the queue is sent once, the channel closed, and counts printed.\n"
	"\n"
	"      --center URL          the management center (https://HOST[:PORT]; http:// only to\n"
	"                            127.0.0.1, localhost or [::1] unless --insecure-http)\n"
	"      --mux HOST:PORT       the multiplexer's EMMG<->MUX port\n"
	"      --client-id ID        client_id (CA_system_id << 16 | subsystem; default 0x4B480000)\n"
	"      --data-id N           data_id of the stream (default 1)\n"
	"      --bandwidth KBITS     bandwidth to ask for, kbit/s (default 64)\n"
	"      --cacert FILE         PEM CA certificates to trust for the center\n"
	"      --insecure-http       allow plain http to any host (a test network only)\n"
	"      --poll SECONDS        poll the center's EMM queue this often (default 10)\n"
	"      --protocol-version V  SimulCrypt protocol version 2 or 3 (default 2)\n"
	"      --ts-packets          send the EMMs as TS packets (section_TSpkt_flag 1)\n"
	"      --once                send the queue once, close and exit\n"
	"  -h, --help                this help\n";

enum { O_CENTER = 256, O_MUX, O_CLIENT, O_DATA, O_BW, O_CACERT, O_INSECURE, O_POLL, O_VERSION, O_TSPKT, O_ONCE };

static const struct option opts[] = {
	{"center", required_argument, NULL, O_CENTER},	 {"mux", required_argument, NULL, O_MUX},
	{"client-id", required_argument, NULL, O_CLIENT},	 {"data-id", required_argument, NULL, O_DATA},
	{"bandwidth", required_argument, NULL, O_BW},		 {"cacert", required_argument, NULL, O_CACERT},
	{"insecure-http", no_argument, NULL, O_INSECURE},	 {"poll", required_argument, NULL, O_POLL},
	{"protocol-version", required_argument, NULL, O_VERSION}, {"ts-packets", no_argument, NULL, O_TSPKT},
	{"once", no_argument, NULL, O_ONCE},			 {"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0}};

struct emmg_opts {
	const char *mux;
	uint64_t poll_s;
	int once;
	struct kh_headend_feed_cfg feed;
	struct kh_emmg_cfg cfg;
};

/* The EMMs: the cycle (every section fetched, in queue order) and where the carousel is. */
struct carousel {
	uint8_t *buf;
	size_t len;
	size_t off;		   /* next section of the cycle */
	size_t fresh, fresh_end; /* new EMMs to send before the cycle resumes */
	uint64_t sections_sent, bytes_sent, cycles;
};

struct session {
	int fd;
	size_t have;
	char why[160]; /* why the session failed, for the log (or the one error line of --once) */
	struct kh_emmg e;
	uint8_t in[KH_SIM_MAX_MSG];
};

static int take(void *ctx, int c, const char *arg)
{
	struct emmg_opts *o = ctx;
	uint64_t v = 0;
	int rc = KH_EXIT_OK;

	switch (c) {
	case O_CENTER:
		o->feed.center = arg;
		break;
	case O_MUX:
		o->mux = arg;
		break;
	case O_CACERT:
		o->feed.cacert = arg;
		break;
	case O_INSECURE:
		o->feed.insecure_http = 1;
		break;
	case O_TSPKT:
		o->cfg.ts_packets = 1;
		break;
	case O_ONCE:
		o->once = 1;
		break;
	case O_CLIENT:
		rc = kh_cli_num_opt(P, "client-id", arg, UINT32_MAX, &v);
		o->cfg.client_id = (uint32_t)v;
		break;
	case O_DATA:
		rc = kh_cli_num_opt(P, "data-id", arg, UINT16_MAX, &v);
		o->cfg.data_id = (uint16_t)v;
		break;
	case O_BW:
		if ((rc = kh_cli_num_opt(P, "bandwidth", arg, UINT16_MAX, &v)) == KH_EXIT_OK && v == 0)
			rc = kh_cli_usage(P, "--bandwidth must be at least 1 kbit/s");
		o->cfg.bandwidth = (uint16_t)v;
		break;
	case O_POLL:
		if ((rc = kh_cli_num_opt(P, "poll", arg, 86400, &o->poll_s)) == KH_EXIT_OK && o->poll_s == 0)
			rc = kh_cli_usage(P, "--poll must be at least 1 second");
		break;
	case O_VERSION:
		if ((rc = kh_cli_num_opt(P, "protocol-version", arg, 3, &v)) == KH_EXIT_OK && v < 2)
			rc = kh_cli_usage(P, "--protocol-version is 2 or 3");
		o->cfg.version = (uint8_t)v;
		break;
	default:
		return -1;
	}
	return rc;
}

/* KH_EXIT_OK, KH_EXIT_USAGE, or -1 after the help. */
static int parse(int argc, char **argv, struct emmg_opts *o)
{
	int rc;

	memset(o, 0, sizeof *o);
	o->cfg = (struct kh_emmg_cfg){.client_id = (uint32_t)KH_HEADEND_DEFAULT_CA_SYSTEM_ID << 16,
				      .channel_id = 1, .stream_id = 1, .data_id = 1, .bandwidth = 64, .version = 2};
	o->poll_s = 10;
	if ((rc = kh_cli_options(P, argc, argv, "+h", opts, help, take, o)) != KH_EXIT_OK)
		return rc;
	if (!o->feed.center)
		return kh_cli_usage(P, "--center is required");
	if (!o->mux)
		return kh_cli_usage(P, "--mux is required");
	if (kh_headend_feed_url_check(o->feed.center, o->feed.insecure_http) != KH_OK)
		return kh_cli_usage(P, "--center: '%s' is not https:// (http:// only to the loopback host unless "
				       "--insecure-http)",
				    o->feed.center);
	return KH_EXIT_OK;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A TCP connection to HOST:PORT, or -1 (errno-style reason in *why). */
static int dial(const char *spec, const char **why)
{
	char host[256], port_s[8];
	struct addrinfo hints, *ai = NULL;
	uint16_t port = 0;
	int fd = -1;

	*why = "not HOST:PORT";
	if (kh_cli_parse_listen(spec, host, sizeof host, &port) != 0 || port == 0)
		return -1;
	snprintf(port_s, sizeof port_s, "%u", (unsigned)port);
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	*why = "cannot resolve the host";
	if (getaddrinfo(host, port_s, &hints, &ai) != 0 || !ai)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		close(fd);
		fd = -1;
	}
	*why = fd < 0 ? strerror(errno) : "";
	freeaddrinfo(ai);
	return fd;
}

/* Why the session failed: the mux's error_status, or a message out of turn. */
static void failure(struct session *s)
{
	const struct kh_emmg *e = &s->e;

	if (e->error_type == KH_SIM_EMMG_CHANNEL_ERROR || e->error_type == KH_SIM_EMMG_STREAM_ERROR)
		snprintf(s->why, sizeof s->why, "the mux sent %s with error_status 0x%04X",
			 e->error_type == KH_SIM_EMMG_CHANNEL_ERROR ? "channel_error" : "stream_error",
			 (unsigned)e->error);
	else
		snprintf(s->why, sizeof s->why, "the mux sent message_type 0x%04X out of turn, or garbage",
			 (unsigned)e->error_type);
}

/* New EMMs at the end of the cycle, and to go out before it resumes. 0, or -1 out of memory. */
static int carousel_add(struct carousel *c, uint8_t *emm, size_t n)
{
	uint8_t *p = realloc(c->buf, c->len + n);

	if (!p)
		return -1;
	memcpy(p + c->len, emm, n);
	c->buf = p;
	if (c->fresh >= c->fresh_end)
		c->fresh = c->len;
	c->len += n;
	c->fresh_end = c->len;
	return 0;
}

static size_t section_at(const struct carousel *c, size_t off)
{
	if (off + 3 > c->len)
		return 0;
	return 3u + (((size_t)c->buf[off + 1] & 0x0Fu) << 8 | c->buf[off + 2]);
}

static uint64_t count_sections(const struct carousel *c, size_t from, size_t to)
{
	uint64_t k = 0;

	while (from < to) {
		from += section_at(c, from);
		k++;
	}
	return k;
}

/* Where the next data comes from: the fresh EMMs, else the cycle (wrapping unless once). */
static size_t *cursor(struct carousel *c, int once, size_t *end)
{
	if (c->fresh < c->fresh_end) {
		*end = c->fresh_end;
		return &c->fresh;
	}
	if (c->off >= c->len && !once && c->len > 0) {
		c->off = 0;
		c->cycles++;
	}
	*end = c->len;
	return &c->off;
}

/* One data_provision if the pacing lets one go now. 0, or -1 when the connection failed. *wait
 * gets the milliseconds until the next one may go (capped by the caller). */
static int provide(struct session *s, struct carousel *c, int once, uint64_t *wait)
{
	static uint8_t msg[KH_EMMG_DATA_MAX];
	size_t end = 0, *at = cursor(c, once, &end), before = *at, len = 0;
	uint64_t now = now_ms(), t;
	kh_err r;

	if (*at >= end)
		return 0;
	if ((r = kh_emmg_provision(&s->e, c->buf, end, at, now, msg, sizeof msg, &len)) != KH_OK) {
		snprintf(s->why, sizeof s->why, "an EMM section cannot be provisioned (%s)", kh_err_json(r));
		return -1;
	}
	if (len) {
		if (kh_cli_send_all(s->fd, msg, len) != 0)
			return -1;
		c->sections_sent += count_sections(c, before, *at);
		c->bytes_sent += *at - before;
	}
	at = cursor(c, once, &end);
	if (*at < end) {
		size_t sl = section_at(c, *at);
		t = kh_emmg_send_at(&s->e, kh_emmg_cost(0, c->buf + *at, sl));
		*wait = t > now ? t - now : 0;
	}
	return 0;
}

/* Every whole message from the mux handled. 0 to go on, -1 when the session failed. */
static int drain(struct session *s)
{
	uint8_t out[KH_EMMG_OUT_MAX];
	size_t need = 0, olen = 0;

	for (;;) {
		if (kh_sim_frame(s->in, s->have, &need) != KH_SIM_OK) {
			snprintf(s->why, sizeof s->why, "the mux sent a message too long to frame");
			return -1;
		}
		if (s->have < need)
			return 0;
		if (kh_emmg_handle(&s->e, s->in, need, now_ms(), out, sizeof out, &olen) != KH_OK)
			return -1;
		if (s->e.state == KH_EMMG_FAILED) {
			failure(s);
			return -1;
		}
		if (olen && kh_cli_send_all(s->fd, out, olen) != 0)
			return -1;
		memmove(s->in, s->in + need, s->have - need);
		s->have -= need;
	}
}

static int read_mux(struct session *s)
{
	ssize_t n = recv(s->fd, s->in + s->have, sizeof s->in - s->have, 0);

	if (n < 0 && errno == EINTR)
		return 0;
	if (n <= 0) {
		snprintf(s->why, sizeof s->why, "the mux closed the connection (state %s)",
			 kh_emmg_state_name(s->e.state));
		return -1;
	}
	s->have += (size_t)n;
	return drain(s);
}

/* channel_close, then wait (2 s at most) for the mux to close its side: it has read everything. */
static void close_channel(struct session *s)
{
	uint8_t out[KH_EMMG_OUT_MAX], sink[512];
	size_t len = 0;
	struct pollfd pf = {.fd = s->fd, .events = POLLIN};

	if (kh_emmg_close(&s->e, out, sizeof out, &len) == KH_OK && kh_cli_send_all(s->fd, out, len) == 0) {
		(void)shutdown(s->fd, SHUT_WR);
		for (int i = 0; i < 20 && poll(&pf, 1, 100) >= 0; i++)
			if ((pf.revents & (POLLIN | POLLHUP)) && recv(s->fd, sink, sizeof sink, 0) <= 0)
				break;
	}
}

static void take_new(struct kh_headend_poller *p, struct carousel *c)
{
	uint8_t *emm = NULL;
	size_t len = 0, count = 0;

	if (p && kh_headend_poller_take(p, &emm, &len, &count, NULL, NULL, NULL, 0) == 1) {
		if (carousel_add(c, emm, len) != 0)
			kh_log_error("emmg.memory", "dropped_sections=%zu", count);
		free(emm);
	}
}

/* One connection. 0 when done (--once sent, or a stop signal), 1 when it failed; *ready 1 once
 * the mux allocated bandwidth (the back-off starts again). */
static int session(const struct emmg_opts *o, struct session *s, struct carousel *c, struct kh_headend_poller *p,
		   int *ready)
{
	volatile sig_atomic_t *stop = kh_cli_stop_signals();
	uint8_t out[KH_EMMG_OUT_MAX];
	size_t len = 0;
	const char *why = "";

	s->have = 0;
	snprintf(s->why, sizeof s->why, "the connection failed");
	if ((s->fd = dial(o->mux, &why)) < 0) {
		snprintf(s->why, sizeof s->why, "cannot connect: %s", why);
		return 1;
	}
	kh_emmg_init(&s->e, &o->cfg);
	if (kh_emmg_start(&s->e, out, sizeof out, &len) != KH_OK || kh_cli_send_all(s->fd, out, len) != 0)
		return 1;
	while (!*stop) {
		uint64_t wait = 500;
		struct pollfd pf = {.fd = s->fd, .events = POLLIN};

		take_new(p, c);
		if (s->e.state == KH_EMMG_READY) {
			*ready = 1;
			if (provide(s, c, o->once, &wait) != 0)
				return 1;
			if (o->once && c->off >= c->len)
				break;
		}
		if (poll(&pf, 1, (int)(wait < 500 ? wait : 500)) > 0 && read_mux(s) != 0)
			return 1;
	}
	close_channel(s);
	return 0;
}

/* Wait ms, waking for a stop signal. */
static void back_off(uint64_t ms)
{
	volatile sig_atomic_t *stop = kh_cli_stop_signals();

	for (uint64_t t = 0; t < ms && !*stop; t += 100)
		(void)poll(NULL, 0, 100);
}

static int first_fetch(struct emmg_opts *o, struct carousel *c)
{
	uint8_t *emm = NULL;
	size_t len = 0, count = 0;
	int64_t last = 0;
	char why[256];
	kh_err r = kh_headend_feed_fetch(&o->feed, &emm, &len, &count, &last, why, sizeof why);

	if (r != KH_OK) {
		if (o->once) {
			fprintf(stderr, "keyhole: %s: %s\n", P, why);
			return KH_EXIT_FAIL;
		}
		kh_log_warn("emmg.emm_fetch_failed", "reason=\"%s\"", why); /* the poller tries again */
		return KH_EXIT_OK;
	}
	o->feed.since = last;
	if (emm && carousel_add(c, emm, len) != 0) {
		free(emm);
		return kh_cli_fail(P, KH_ERR_NOMEM);
	}
	free(emm);
	c->fresh = c->fresh_end = 0; /* the first queue is the cycle itself */
	return KH_EXIT_OK;
}

static int run(struct emmg_opts *o, struct carousel *c)
{
	volatile sig_atomic_t *stop = kh_cli_stop_signals();
	struct kh_headend_poller *p = NULL;
	struct session *s = calloc(1, sizeof *s);
	unsigned attempt = 0;
	uint64_t wait;
	int rc = KH_EXIT_OK;

	if (!s)
		return kh_cli_fail(P, KH_ERR_NOMEM);
	if (!o->once && kh_headend_poller_start(&o->feed, (unsigned)o->poll_s, &p) != KH_OK) {
		free(s);
		return kh_cli_fail(P, KH_ERR_NOMEM);
	}
	while (!*stop) {
		int ready = 0, done = session(o, s, c, p, &ready) == 0;
		if (s->fd >= 0)
			close(s->fd);
		if (done)
			break;
		if (o->once) {
			fprintf(stderr, "keyhole: %s: mux %s: %s\n", P, o->mux, s->why);
			rc = KH_EXIT_FAIL;
			break;
		}
		attempt = ready ? 0 : attempt + 1; /* a session that got going starts the back-off again */
		wait = kh_emmg_backoff_ms(attempt ? attempt - 1 : 0);
		kh_log_warn("emmg.session_failed", "mux=%s reason=\"%s\" retry_ms=%llu", o->mux, s->why,
			    (unsigned long long)wait);
		back_off(wait);
	}
	kh_headend_poller_stop(p);
	free(s);
	return rc;
}

int kh_cmd_emmg(int argc, char **argv)
{
	struct emmg_opts o;
	struct carousel c;
	int rc;

	if ((rc = parse(argc, argv, &o)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	memset(&c, 0, sizeof c);
	(void)kh_cli_stop_signals();
	if ((rc = first_fetch(&o, &c)) == KH_EXIT_OK)
		rc = run(&o, &c);
	if (rc == KH_EXIT_OK)
		printf("sections=%llu bytes=%llu cycles=%llu\n", (unsigned long long)c.sections_sent,
		       (unsigned long long)c.bytes_sent, (unsigned long long)c.cycles);
	free(c.buf);
	return rc;
}
