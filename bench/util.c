/*
 * bench/util.c: the pieces the benchmarks of bench/ share (see util.h): the clock, the median,
 * min and max over rounds and the `bench=`/`ratio=` lines that print them, pinning to one CPU,
 * and the module daemons (and vpcd card sides) that the UNIX socket (and PC/SC) benchmarks fork,
 * connect to and stop. Keeping them
 * in one place keeps the output format of every benchmark the same (docs/performance.md).
 */
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "device/vpcd.h"
#include "keyhole/device.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"

#include "util.h"

double bench_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct bench_stats bench_stats_of(const double *v, int n)
{
	double s[BENCH_MAX_ROUNDS];
	struct bench_stats st;
	memcpy(s, v, (size_t)n * sizeof *s);
	qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
	st.min = s[0];
	st.max = s[n - 1];
	st.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	return st;
}

void bench_print(const char *name, const char *unit, int prec, const double *v, int rounds)
{
	struct bench_stats s = bench_stats_of(v, rounds);
	printf("bench=%s unit=%s median=%.*f min=%.*f max=%.*f rounds=%d\n", name, unit, prec, s.med, prec, s.min,
	       prec, s.max, rounds);
}

void bench_print_ratio(const char *name, const double *v, int rounds, const char *note)
{
	struct bench_stats s = bench_stats_of(v, rounds);
	printf("ratio=%s value=%.2f min=%.2f max=%.2f rounds=%d note=\"%s\"\n", name, s.med, s.min, s.max, rounds,
	       note);
}

int bench_pin(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	if (cpu < 0)
		return -1;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) == 0 ? cpu : -1;
}

void bench_print_pin(int cpu)
{
	if (cpu >= 0)
		printf("# pinned: every process of this run on CPU %d (-p)\n", cpu);
	else
		printf("# not pinned: processes may run on any CPU (-p pins them all to one)\n");
}

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
	(void)sig;
	g_stop = 1;
}

/*
 * Fork a module's server. In this process: the child's pid (-1 when fork fails). In the child:
 * 0 with *sm opened from module_path, after closing close_fds, catching SIGTERM and asking to be
 * sent it when this process dies; the child exits by itself when it cannot.
 */
static pid_t fork_module(const char *prog, const char *module_path, const int *close_fds, int close_n,
			 struct kh_softmod **sm)
{
	pid_t parent = getpid(), pid;
	struct sigaction sa;
	kh_err e;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) != 0)
		return pid;
	for (int i = 0; i < close_n; i++)
		if (close_fds[i] >= 0)
			close(close_fds[i]);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: poll() returns EINTR and the loop sees the flag */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(1);
	if ((e = kh_softmod_open(module_path, NULL, sm, NULL)) != KH_OK) {
		fprintf(stderr, "%s: daemon %s: %s\n", prog, module_path, kh_strerror(e));
		_exit(2);
	}
	return 0;
}

pid_t bench_spawn_daemon(const char *prog, const char *module_path, const char *sock, const int *close_fds,
			 int close_n)
{
	struct kh_softmod *sm = NULL;
	pid_t pid = fork_module(prog, module_path, close_fds, close_n, &sm);
	kh_err e;

	if (pid != 0)
		return pid;
	e = kh_serve_unix(sock, kh_softmod_module(sm), &g_stop);
	if (e != KH_OK)
		fprintf(stderr, "%s: daemon %s: %s\n", prog, sock, kh_strerror(e));
	kh_softmod_free(sm);
	_exit(e == KH_OK ? 0 : 3);
}

pid_t bench_spawn_vpcd(const char *prog, const char *module_path, uint16_t port)
{
	static volatile sig_atomic_t never; /* the card stays in the reader */
	struct kh_softmod *sm = NULL;
	struct kh_vpcd_opts o = {.host = "127.0.0.1", .port = port, .stop = &g_stop, .ejected = &never};
	pid_t pid = fork_module(prog, module_path, NULL, 0, &sm);
	kh_err e;

	if (pid != 0)
		return pid;
	e = kh_serve_vpcd(kh_softmod_module(sm), &o);
	if (e != KH_OK)
		fprintf(stderr, "%s: vpcd card 127.0.0.1:%u: %s\n", prog, (unsigned)port, kh_strerror(e));
	kh_softmod_free(sm);
	_exit(e == KH_OK ? 0 : 3);
}

kh_err bench_connect_retry(struct kh_transport *t, const char *sock)
{
	struct timespec ms10 = {0, 10 * 1000 * 1000};
	kh_err e = KH_ERR_NOTFOUND;
	for (int i = 0; i < 500 && e == KH_ERR_NOTFOUND; i++) {
		if ((e = kh_transport_unix(t, sock)) == KH_ERR_NOTFOUND)
			nanosleep(&ms10, NULL);
	}
	return e;
}

kh_err bench_pcsc_connect_retry(struct kh_transport *t, const char *reader)
{
	struct timespec ms50 = {0, 50 * 1000 * 1000};
	kh_err e = KH_ERR_NO_CARD;
	for (int i = 0; i < 200 && (e == KH_ERR_NO_CARD || e == KH_ERR_READER); i++) {
		if ((e = kh_transport_pcsc(t, reader)) == KH_ERR_NO_CARD || e == KH_ERR_READER)
			nanosleep(&ms50, NULL);
	}
	return e;
}

void bench_reap(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGTERM);
		waitpid(*pid, NULL, 0);
		*pid = -1;
	}
}

kh_err bench_mkdtemp(char *dir, size_t cap, const char *template)
{
	const char *parent = getenv("TMPDIR");
	int n;

	if (!parent || !*parent)
		parent = "/tmp";
	n = strchr(template, '/') ? snprintf(dir, cap, "%s", template) : snprintf(dir, cap, "%s/%s", parent, template);
	if (n < 0 || n >= (int)cap || !mkdtemp(dir)) {
		dir[0] = 0;
		return KH_ERR_IO;
	}
	return KH_OK;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int bench_rmtree(const char *dir)
{
	return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

void bench_ts_headers(uint8_t *pkts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = pkts + i * 188;
		p[0] = 0x47;
		p[1] = 0x01;
		p[2] = 0x00;
		if (i % 500 == 0) {
			p[3] = (uint8_t)(0x20 | (i & 15));
			p[4] = 183;
		} else if (i % 20 == 0) {
			p[3] = (uint8_t)(0x30 | (i & 15));
			p[4] = 7;
		} else {
			p[3] = (uint8_t)(0x10 | (i & 15));
		}
	}
}
