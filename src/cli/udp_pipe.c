/*
 * udp:// for the command line: a thread between a socket and a pipe. See udp_pipe.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/udp_pipe.h"
#include "keyhole/crypto.h"
#include "keyhole/tsip.h"

#define PL KH_TSIP_PKT
#define SLICE_MS 200

struct kh__cli_udp {
	const char *url;
	int out;         /* 1: to the network */
	int pfd[2];      /* the pipe; the thread's end stays, the command's is handed out */
	int started, finished;
	volatile sig_atomic_t stop;
	int err;         /* the thread's failure: an errno, or -1 for a socket failure */
	unsigned idle_ms;
	int regulate;
	struct kh_tsip_in *in;
	struct kh_tsip_out *o;
	pthread_t th;
	uint8_t buf[64 * PL];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Input: datagrams into the pipe until the idle time after the last one, a stop, or the
 * command's end closed. */
static void *in_main(void *arg)
{
	struct kh__cli_udp *u = arg;
	uint64_t last = 0;

	while (!u->stop) {
		long got = kh_tsip_in_read(u->in, u->buf, sizeof u->buf, SLICE_MS);
		if (got < 0 && got != -2) {
			u->err = -1;
			break;
		}
		if (got > 0) {
			last = now_ns();
			if (write_all(u->pfd[1], u->buf, (size_t)got) != 0)
				break; /* the command stopped reading */
		} else if (last && u->idle_ms && now_ns() - last >= (uint64_t)u->idle_ms * 1000000u) {
			break;
		}
	}
	close(u->pfd[1]);
	u->pfd[1] = -1;
	return NULL;
}

/* The 27 MHz PCR of a packet: 1, or 0 when it carries none. */
static int pcr27(const uint8_t *p, uint64_t *pcr)
{
	if (!(p[3] & 0x20) || p[4] < 7 || !(p[5] & 0x10))
		return 0;
	*pcr = ((uint64_t)p[6] << 25 | (uint64_t)p[7] << 17 | (uint64_t)p[8] << 9 | (uint64_t)p[9] << 1 |
		(uint64_t)(p[10] >> 7)) * 300 + ((uint64_t)(p[10] & 1) << 8 | p[11]);
	return 1;
}

struct pace {
	int anchored;
	unsigned pid;
	uint64_t pcr0, t0, last;
};

/* With regulate: wait until a packet's PCR-derived time (the first PCR's PID only). */
static kh_err pace(struct kh__cli_udp *u, struct pace *pc, const uint8_t *p)
{
	unsigned pid = (unsigned)(p[1] & 0x1F) << 8 | p[2];
	uint64_t pcr, off, due, now;
	kh_err e;

	if (!u->regulate || !pcr27(p, &pcr) || (pc->anchored && pid != pc->pid))
		return KH_OK;
	if (!pc->anchored || pcr < pc->last) { /* the first PCR, or a wrap or jump back: anchor again */
		*pc = (struct pace){.anchored = 1, .pid = pid, .pcr0 = pcr, .t0 = now_ns(), .last = pcr};
		return KH_OK;
	}
	pc->last = pcr;
	off = (pcr - pc->pcr0) * 1000 / 27; /* ns */
	due = pc->t0 + off;
	if ((now = now_ns()) >= due)
		return KH_OK;
	if ((e = kh_tsip_out_flush(u->o)) != KH_OK)
		return e;
	struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000u), .tv_nsec = (long)((due - now) % 1000000000u)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !u->stop)
		;
	return KH_OK;
}

/* Output: the pipe's packets to the network until the command's end is closed. */
static void *out_main(void *arg)
{
	struct kh__cli_udp *u = arg;
	struct pace pc = {0};
	size_t have = 0;

	for (;;) {
		ssize_t got = read(u->pfd[0], u->buf + have, sizeof u->buf - have);
		size_t whole;
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			u->err = got < 0 ? errno : 0;
			break;
		}
		have += (size_t)got;
		whole = have / PL;
		for (size_t i = 0; i < whole && !u->err; i++)
			if (pace(u, &pc, u->buf + i * PL) != KH_OK || kh_tsip_out_write(u->o, u->buf + i * PL, 1) != KH_OK)
				u->err = -1;
		if (u->err)
			break;
		memmove(u->buf, u->buf + whole * PL, have - whole * PL);
		have -= whole * PL;
	}
	if (!u->err && kh_tsip_out_flush(u->o) != KH_OK)
		u->err = -1;
	close(u->pfd[0]); /* a failure: the command's writes fail (EPIPE) */
	u->pfd[0] = -1;
	return NULL;
}

/* The thread started with no stop signal to take. */
static int start(struct kh__cli_udp *u)
{
	sigset_t all, old;
	int e;

	sigemptyset(&all);
	sigaddset(&all, SIGINT);
	sigaddset(&all, SIGTERM);
	sigaddset(&all, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	e = pthread_create(&u->th, NULL, u->out ? out_main : in_main, u);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	u->started = e == 0;
	return e;
}

static int open_common(const char *cmd, const char *url, struct kh_tsip_url *pu, struct kh__cli_udp **u)
{
	*u = NULL;
	if (kh_tsip_url_parse(url, pu) != KH_OK)
		return kh_cli_usage(cmd, "%s: a network address is udp://[SRC@]HOST:PORT[?ttl=N&pkts=N&local=ADDR&rtp=1]",
				    url);
	if (!(*u = calloc(1, sizeof **u)))
		return kh_cli_fail(cmd, KH_ERR_NOMEM);
	(*u)->url = url;
	(*u)->pfd[0] = (*u)->pfd[1] = -1;
	if (pipe2((*u)->pfd, O_CLOEXEC) != 0)
		return kh_cli_fail(cmd, KH_ERR_IO);
	return KH_EXIT_OK;
}

int kh__cli_udp_in(const char *cmd, const char *url, unsigned idle_ms, int *fd, struct kh__cli_udp **u)
{
	struct kh_tsip_url pu;
	kh_err e;
	int rc;

	if ((rc = open_common(cmd, url, &pu, u)) != KH_EXIT_OK)
		return rc;
	(*u)->idle_ms = idle_ms;
	if ((e = kh_tsip_in_open(&pu, &(*u)->in)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: %s\n", url, e == KH_ERR_IO ? strerror(errno) : kh_strerror(e));
		return KH_EXIT_FAIL;
	}
	if (start(*u) != 0)
		return kh_cli_fail(cmd, KH_ERR_IO);
	*fd = (*u)->pfd[0];
	(*u)->pfd[0] = -1; /* the command closes it */
	return KH_EXIT_OK;
}

int kh__cli_udp_out(const char *cmd, const char *url, int regulate, int *fd, struct kh__cli_udp **u)
{
	struct kh_tsip_url pu;
	kh_err e;
	int rc;

	if ((rc = open_common(cmd, url, &pu, u)) != KH_EXIT_OK)
		return rc;
	(*u)->out = 1;
	(*u)->regulate = regulate;
	if ((e = kh_tsip_out_open(&pu, &(*u)->o)) != KH_OK) {
		fprintf(stderr, "keyhole: %s: %s\n", url, e == KH_ERR_IO ? strerror(errno) : kh_strerror(e));
		return KH_EXIT_FAIL;
	}
	if (start(*u) != 0)
		return kh_cli_fail(cmd, KH_ERR_IO);
	*fd = (*u)->pfd[1];
	(*u)->pfd[1] = -1; /* the command's end: closed by kh__cli_udp_finish through *fd's owner */
	return KH_EXIT_OK;
}

static void join(struct kh__cli_udp *u)
{
	if (!u->started)
		return;
	pthread_join(u->th, NULL);
	u->started = 0;
}

int kh__cli_udp_finish(struct kh__cli_udp *u)
{
	u->finished = 1;
	if (!u->out)
		u->stop = 1;
	join(u);
	if (u->in) {
		const struct kh_tsip_stats *st = kh_tsip_in_stats(u->in);
		if (st->dropped || st->lost || st->cc_errors)
			fprintf(stderr,
				"keyhole: warning: %s: %llu datagram(s) received, %llu dropped (not whole 188-byte "
				"packets), %llu lost by RTP sequence, %llu TS continuity break(s)\n",
				u->url, (unsigned long long)st->datagrams, (unsigned long long)st->dropped,
				(unsigned long long)st->lost, (unsigned long long)st->cc_errors);
	}
	if (u->err) {
		fprintf(stderr, "keyhole: %s: %s\n", u->url, u->err > 0 ? strerror(u->err) : "sending failed");
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

void kh__cli_udp_free(struct kh__cli_udp *u)
{
	if (!u)
		return;
	u->stop = 1;
	join(u);
	for (int i = 0; i < 2; i++)
		if (u->pfd[i] >= 0)
			close(u->pfd[i]);
	kh_tsip_in_close(u->in);
	kh_tsip_out_close(u->o);
	kh_wipe(u->buf, sizeof u->buf);
	free(u);
}
