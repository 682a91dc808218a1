/*
 * bench/util.h: what the benchmarks of bench/ share, so that they measure, summarise and print
 * alike: the clock, the statistics over rounds (median, min, max), the `bench=` and `ratio=`
 * output lines (docs/performance.md), CPU pinning, and the module daemons forked for the UNIX
 * socket and PC/SC benchmarks with the helpers to connect to and stop them, the synthetic
 * stream's packet headers. Not a library of its own:
 * CMakeLists.txt compiles bench/util.c into every bench/bench_*.c executable.
 */
#ifndef KH_BENCH_UTIL_H
#define KH_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keyhole/transport.h"

#define BENCH_MAX_ROUNDS 99 /* the largest -r; arrays of per-round figures have this many slots */

/* CLOCK_MONOTONIC in seconds. */
double bench_now_s(void);
/*
 * Give n 188-byte packets of random payload the headers of a clear component on PID 0x100:
 * one in 20 with an 8-byte adaptation field, one in 500 with an adaptation field only (no
 * payload), continuity counters counting.
 */
void bench_ts_headers(uint8_t *pkts, size_t n);

/* qsort comparator for doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

struct bench_stats {
	double med, min, max;
};

/* Median, min and max of v[0..n-1], 1 <= n <= BENCH_MAX_ROUNDS; v is left as it is. */
struct bench_stats bench_stats_of(const double *v, int n);

/*
 * One result line, `bench=<name> unit=<unit> median=<x> min=<x> max=<x> rounds=<n>`, the figures
 * being bench_stats_of(v, rounds) printed with prec decimals.
 */
void bench_print(const char *name, const char *unit, int prec, const double *v, int rounds);

/*
 * One ratio line, `ratio=<name> value=<x> min=<x> max=<x> rounds=<n> note="<note>"`, from the
 * ratios computed within each round, v[0..rounds-1]; two decimals.
 */
void bench_print_ratio(const char *name, const double *v, int rounds, const char *note);

/*
 * Pin this process to the CPU it is running on; processes forked afterwards inherit the mask.
 * Returns that CPU, or -1 when it cannot (nothing printed).
 */
int bench_pin(void);

/* The comment line of the output header saying whether the run is pinned (cpu >= 0) or not. */
void bench_print_pin(int cpu);

/*
 * Fork a module daemon: a child that opens its own software module from module_path and serves
 * it on the UNIX socket sock (kh_serve_unix) until SIGTERM, or until this process dies
 * (PR_SET_PDEATHSIG). The child first closes the close_n descriptors of close_fds that are >= 0
 * (sockets only this process may hold). prog prefixes the child's error messages. Returns the
 * child's pid in this process, or -1 when fork fails; the child never returns.
 */
pid_t bench_spawn_daemon(const char *prog, const char *module_path, const char *sock, const int *close_fds,
			 int close_n);

/*
 * Fork a card side of the vsmartcard-vpcd reader driver: a child that opens its own software
 * module from module_path and plugs it into the driver listening on 127.0.0.1:port
 * (kh_serve_vpcd; the ATR names the module's role), until SIGTERM or until this process dies; the card is
 * in the reader while the child runs. As bench_spawn_daemon otherwise.
 */
pid_t bench_spawn_vpcd(const char *prog, const char *module_path, uint16_t port);

/* kh_transport_unix to sock, retried for up to ~5 s while the daemon has not bound it yet. */
KH_WARN_UNUSED kh_err bench_connect_retry(struct kh_transport *t, const char *sock);

/*
 * kh_transport_pcsc to reader, retried for up to ~10 s while pcscd does not list the reader or
 * has not seen the card in it yet (it looks every 400 ms). KH_ERR_PCSC_SERVICE at once: no pcscd.
 */
KH_WARN_UNUSED kh_err bench_pcsc_connect_retry(struct kh_transport *t, const char *reader);

/* SIGTERM the child *pid and wait for it, then set *pid to -1; does nothing when *pid <= 0. */
void bench_reap(pid_t *pid);

/*
 * Make a fresh directory from template into dir: a path ("/tmp/name-XXXXXX"), or a bare name
 * ("name-XXXXXX") made under $TMPDIR (/tmp when unset); shorter than cap. KH_OK,
 * or KH_ERR_IO with dir set to "" (so that teardown knows there is nothing to remove).
 */
KH_WARN_UNUSED kh_err bench_mkdtemp(char *dir, size_t cap, const char *template);

/* Remove the directory dir and everything below it. Returns 0, or -1 when something remains. */
int bench_rmtree(const char *dir);

#endif
