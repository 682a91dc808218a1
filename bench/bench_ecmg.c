/*
 * bench_ecmg: the SimulCrypt ECMG (`keyhole ecmg serve`, include/keyhole/ecmg.h) as an SCS sees
 * it, next to raw ECM sealing in the same run (report ratios, never a bare time).
 *
 * Set-up: a throwaway directory with an authority and a headend key file (the `keyhole` binary
 * beside this one, or -K PATH), then a real `keyhole ecmg serve` process on loopback TCP. C (-c,
 * default 7) SCS connections, each a channel with S (-s, default 15, at most 16) streams: 105
 * streams, a hundred services' worth. Every CW_provision carries two CWs (lead_CW 1).
 *   ecm_rtt_lone_p50 / _p99      CW_provision -> ECM_response, one request outstanding at a time,
 *                                round robin over every stream of every connection (the load of
 *                                a headend, whose streams change period seconds apart)
 *   ecm_rtt_busy_p50 / _p99      the same with every stream's request outstanding at once (all
 *                                periods changing together: the worst burst), in microseconds
 *   ecm_busy                     ECM_responses per second in the busy mode (the ECMG saturated)
 *   ecm_raw_seal                 kh_ecm_seal of the same ECM (same key, same signer), one thread
 * ratio ecm_busy_vs_raw is ECMs/s over raw seals/s within each round; aims (not asserted):
 * p99 <= 1 ms (lone) and >= 0.5x raw. Both processes share the machine's cores.
 *
 * R rounds (-r, default 7) of ~T seconds (-t, default 0.5) per mode; a percentile is taken within
 * a round, the median over rounds printed. Output: bench=<name> unit= median= min= max= rounds=,
 * ratio=<name> ...; '#' lines are comments. Exit status non-zero only when something fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/ecmg.h"
#include "keyhole/headend.h"
#include "keyhole/scramble.h"
#include "keyhole/simulcrypt.h"

#include "util.h"

#define MAX_CONN 64
#define CAS_ID ((uint32_t)KH_HEADEND_DEFAULT_CA_SYSTEM_ID << 16)

enum { B_LONE_P50, B_LONE_P99, B_BUSY_P50, B_BUSY_P99, B_BUSY, B_RAW, B_COUNT };
static const char *bench_name[B_COUNT] = {
	"ecm_rtt_lone_p50", "ecm_rtt_lone_p99", "ecm_rtt_busy_p50", "ecm_rtt_busy_p99", "ecm_busy", "ecm_raw_seal",
};
static const char *bench_unit[B_COUNT] = {"us", "us", "us", "us", "ECMs/s", "ECMs/s"};
static double fig[B_COUNT][BENCH_MAX_ROUNDS];
static double ratio[BENCH_MAX_ROUNDS];

/* One SCS connection: its socket, the bytes read so far, when each stream's request left. */
struct scs {
	int fd;
	size_t have;
	uint8_t in[4096];
	double sent[KH_ECMG_MAX_STREAMS];
	uint16_t cp[KH_ECMG_MAX_STREAMS];
};

static struct scs conn[MAX_CONN];
static int n_conn = 7, n_streams = 15;
static double *lat;
static size_t lat_n, lat_cap;
static struct kh_sim_msg msg; /* large: parsed answers */

static void die(const char *what)
{
	fprintf(stderr, "bench_ecmg: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
	exit(1);
}

static void must(kh_err r, const char *what)
{
	if (r != KH_OK) {
		fprintf(stderr, "bench_ecmg: %s: %s\n", what, kh_strerror(r));
		exit(1);
	}
}

/* Run the keyhole binary with args, its output into log; exits on failure. */
static void run_keyhole(const char *keyhole, const char *log, char *const argv[])
{
	int st = 0;
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) < 0)
		die("fork");
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0)
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		execv(keyhole, argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench_ecmg: %s %s failed (see %s)\n", keyhole, argv[1], log);
		exit(1);
	}
}

/* `keyhole ecmg serve` on a free loopback port; returns its pid, the port into *port. */
static pid_t spawn_ecmg(const char *keyhole, const char *keys, const char *log, uint16_t *port)
{
	char line[128], maxc[16];
	pid_t pid, parent = getpid();
	int fds[2];
	FILE *f;

	snprintf(maxc, sizeof maxc, "%d", n_conn);
	if (pipe(fds) != 0)
		die("pipe");
	fflush(stdout);
	if ((pid = fork()) < 0)
		die("fork");
	if (pid == 0) {
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent || lfd < 0)
			_exit(1);
		dup2(fds[1], 1);
		dup2(lfd, 2);
		close(fds[0]);
		close(fds[1]);
		close(lfd);
		execl(keyhole, keyhole, "ecmg", "serve", "--keys", keys, "--listen", "127.0.0.1:0", "--product", "1",
		      "--max-connections", maxc, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	if (!(f = fdopen(fds[0], "r")))
		die("fdopen");
	if (!fgets(line, sizeof line, f) || sscanf(line, "listening=127.0.0.1:%hu", port) != 1) {
		fprintf(stderr, "bench_ecmg: %s ecmg serve did not start (see %s)\n", keyhole, log);
		exit(1);
	}
	fclose(f);
	return pid;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("send to the ECMG");
		p += w;
		n -= (size_t)w;
	}
}

static void send_built(struct scs *c, struct kh_sim_builder *b)
{
	size_t n = 0;
	must(kh_sim_finish(b, &n, NULL), "building a message");
	send_all(c->fd, b->buf, n);
}

/* Whether a whole message is in c->in: then parsed into msg and dropped from c->in. */
static int next_msg(struct scs *c)
{
	size_t need = 0;

	if (kh_sim_frame(c->in, c->have, &need) != KH_SIM_OK)
		die("the ECMG sent an unframeable message");
	if (c->have < need)
		return 0;
	if (kh_sim_parse(KH_SIM_ECMG, c->in, need, &msg, NULL) != KH_SIM_OK)
		die("the ECMG sent a malformed message");
	memmove(c->in, c->in + need, c->have - need);
	c->have -= need;
	return 1;
}

/* Read what the socket has (waiting for it when block). */
static void pump(struct scs *c, int block)
{
	ssize_t n;

	do
		n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, block ? 0 : MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && !block && errno == EAGAIN)
		return;
	if (n <= 0)
		die("the ECMG hung up");
	c->have += (size_t)n;
}

/* Block until one whole message is in c->in; parse it into msg. */
static void take_msg(struct scs *c)
{
	while (!next_msg(c))
		pump(c, 1);
}

static void expect(struct scs *c, uint16_t type)
{
	take_msg(c);
	if (msg.type != type) {
		fprintf(stderr, "bench_ecmg: wanted message 0x%04x, got 0x%04x\n", type, msg.type);
		exit(1);
	}
}

static void open_conn(struct scs *c, int ch, uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	uint8_t buf[256];
	struct kh_sim_builder b;
	int one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		die("connecting to the ECMG");
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CHANNEL_SETUP, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, (uint16_t)ch);
	kh_sim_add_u32(&b, KH_SIM_P_SUPER_CAS_ID, CAS_ID);
	send_built(c, &b);
	expect(c, KH_SIM_ECMG_CHANNEL_STATUS);
	for (int s = 0; s < n_streams; s++) {
		kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_STREAM_SETUP, buf, sizeof buf);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, (uint16_t)ch);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, (uint16_t)s);
		kh_sim_add_u16(&b, KH_SIM_P_ECM_ID, (uint16_t)(ch << 5 | s));
		kh_sim_add_u16(&b, KH_SIM_P_NOMINAL_CP_DURATION, 100);
		send_built(c, &b);
		expect(c, KH_SIM_ECMG_STREAM_STATUS);
	}
}

/* CW_provision of the stream's next CP (CW_cp, CW_cp+1); its send time noted. */
static void provision(struct scs *c, int ch, int s)
{
	uint8_t buf[256], comb[2 + 8];
	struct kh_sim_builder b;
	uint16_t cp = c->cp[s]++;

	kh_sim_start(&b, KH_SIM_ECMG, 3, KH_SIM_ECMG_CW_PROVISION, buf, sizeof buf);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_CHANNEL_ID, (uint16_t)ch);
	kh_sim_add_u16(&b, KH_SIM_P_ECM_STREAM_ID, (uint16_t)s);
	kh_sim_add_u16(&b, KH_SIM_P_CP_NUMBER, cp);
	for (unsigned k = 0; k < 2; k++) {
		comb[0] = (uint8_t)((cp + k) >> 8);
		comb[1] = (uint8_t)(cp + k);
		memset(comb + 2, (int)(cp + k + (unsigned)s), 8); /* a CW per period: its value is no matter */
		kh_sim_add(&b, KH_SIM_P_CP_CW_COMBINATION, comb, sizeof comb);
	}
	c->sent[s] = bench_now_s();
	send_built(c, &b);
}

static void note_latency(double us)
{
	if (lat_n == lat_cap) {
		lat_cap = lat_cap ? 2 * lat_cap : 65536;
		if (!(lat = realloc(lat, lat_cap * sizeof *lat)))
			die("out of memory");
	}
	lat[lat_n++] = us;
}

/* The stream the ECM_response in msg answers; its latency noted. */
static int answered(struct scs *c)
{
	uint16_t s = 0;

	if (msg.type != KH_SIM_ECMG_ECM_RESPONSE || kh_sim_u16(&msg, KH_SIM_P_ECM_STREAM_ID, 0, &s) != KH_OK ||
	    s >= n_streams) {
		fprintf(stderr, "bench_ecmg: an answer other than an ECM_response (0x%04x)\n", msg.type);
		exit(1);
	}
	note_latency((bench_now_s() - c->sent[s]) * 1e6);
	return s;
}

static double percentile(double p)
{
	size_t i;

	qsort(lat, lat_n, sizeof *lat, bench_cmp_double);
	i = (size_t)(p * (double)(lat_n - 1) + 0.5);
	return lat[i];
}

/* One request at a time, round robin over every stream of every connection. */
static void round_lone(int round, double secs)
{
	double end = bench_now_s() + secs;
	int ch = 0, s = 0;

	lat_n = 0;
	while (bench_now_s() < end || lat_n < 10) {
		provision(&conn[ch], ch + 1, s);
		expect(&conn[ch], KH_SIM_ECMG_ECM_RESPONSE);
		(void)answered(&conn[ch]);
		if (++ch == n_conn) {
			ch = 0;
			s = (s + 1) % n_streams;
		}
	}
	fig[B_LONE_P50][round] = percentile(0.50);
	fig[B_LONE_P99][round] = percentile(0.99);
}

/* Every stream's request outstanding: each answer is followed at once by that stream's next. */
static void round_busy(int round, double secs)
{
	struct pollfd pf[MAX_CONN];
	double t0 = bench_now_s(), end = t0 + secs, t1;
	size_t out = 0;

	lat_n = 0;
	for (int ch = 0; ch < n_conn; ch++) {
		pf[ch] = (struct pollfd){.fd = conn[ch].fd, .events = POLLIN};
		for (int s = 0; s < n_streams; s++, out++)
			provision(&conn[ch], ch + 1, s);
	}
	while (out > 0) {
		int more = bench_now_s() < end;
		if (poll(pf, (nfds_t)n_conn, 5000) <= 0)
			die("the ECMG stopped answering");
		for (int ch = 0; ch < n_conn; ch++) {
			struct scs *c = &conn[ch];
			if (!pf[ch].revents)
				continue;
			pump(c, 0);
			while (next_msg(c)) {
				int s = answered(c);
				out--;
				if (more) {
					provision(c, ch + 1, s);
					out++;
				}
			}
		}
	}
	t1 = bench_now_s();
	fig[B_BUSY][round] = (double)lat_n / (t1 - t0);
	fig[B_BUSY_P50][round] = percentile(0.50);
	fig[B_BUSY_P99][round] = percentile(0.99);
}

/* kh_ecm_seal of the ECM the ECMG makes, in this thread. */
static void round_raw(int round, double secs, const uint8_t key[KH_CAS_KEY_LEN], const struct kh_cas_signer *sg)
{
	uint8_t out[KH_ECM_MAX];
	struct kh_ecm e;
	double t0 = bench_now_s(), t1;
	size_t n = 0, done = 0;

	memset(&e, 0, sizeof e);
	e.h.key_id = 1;
	e.alg = KH_SCR_CSA2;
	e.cw_len = 8;
	e.access = KH_ECM_PRODUCT;
	e.product = 1;
	do {
		for (int i = 0; i < 64; i++, done++) {
			e.h.cp = (uint32_t)done;
			e.h.table_id = (done & 1) ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
			memset(e.cw_even, (int)done, 8);
			must(kh_ecm_seal(key, sg, &e, out, sizeof out, &n), "kh_ecm_seal");
		}
		t1 = bench_now_s();
	} while (t1 - t0 < secs);
	kh_wipe(&e, sizeof e);
	fig[B_RAW][round] = (double)done / (t1 - t0);
}

/* The key file's service key 1 and ECM signer, as `ecmg serve` reads them. */
static void load_keys(const char *path, uint8_t key[KH_CAS_KEY_LEN], struct kh_cas_signer *sg)
{
	struct kh_headend_keys *k = NULL;
	uint32_t ver = 0;
	size_t line = 0;

	must(kh_headend_keys_load(path, &k, &line), path);
	must(kh_headend_keys_get(k, 1, 0, key, &ver), "service key 1");
	must(kh_headend_keys_signer(k, KH_ROLE_ECM_SIGNER, sg, NULL, NULL), "ECM signer");
	kh_headend_keys_free(k);
}

static const char usage[] =
	"usage: bench_ecmg [-r ROUNDS] [-t SECONDS] [-c CONNECTIONS] [-s STREAMS] [-K KEYHOLE]\n"
	"  -r  rounds (default 7)          -t  seconds per mode per round (default 0.5)\n"
	"  -c  SCS connections (default 7) -s  streams per connection (default 15, at most 16)\n"
	"  -K  the keyhole binary (default: the one beside this program)\n";

static void default_keyhole(char *path, size_t cap)
{
	ssize_t n = readlink("/proc/self/exe", path, cap - 16);
	char *slash;

	if (n <= 0)
		die("readlink /proc/self/exe");
	path[n] = 0;
	slash = strrchr(path, '/');
	snprintf(slash ? slash + 1 : path, 16, "keyhole");
}

static void setup_dir(const char *keyhole, const char *dir, char *keys, size_t cap)
{
	char auth[320], log[320];

	snprintf(auth, sizeof auth, "%s/auth", dir);
	snprintf(log, sizeof log, "%s/keyhole.log", dir);
	snprintf(keys, cap, "%s/h.keys", dir);
	run_keyhole(keyhole, log, (char *const[]){(char *)keyhole, "authority", "init", auth, NULL});
	run_keyhole(keyhole, log,
		    (char *const[]){(char *)keyhole, "headend", "keys", "init", "--authority", auth, "--out", keys,
				    NULL});
}

static void report(int rounds)
{
	printf("# ECMG: %d SCS connections x %d streams over loopback TCP to `keyhole ecmg serve`\n", n_conn,
	       n_streams);
	for (int b = 0; b < B_COUNT; b++)
		bench_print(bench_name[b], bench_unit[b], b < B_BUSY ? 1 : 0, fig[b], rounds);
	for (int r = 0; r < rounds; r++)
		ratio[r] = fig[B_BUSY][r] / fig[B_RAW][r];
	bench_print_ratio("ecm_busy_vs_raw", ratio, rounds, "aim >= 0.5; lone p99 aim <= 1000 us");
}

int main(int argc, char **argv)
{
	char keyhole[4096] = "", dir[256], keys[320], log[320];
	uint8_t key[KH_CAS_KEY_LEN];
	struct kh_cas_signer sg;
	int rounds = 7, opt, st = 0;
	double secs = 0.5;
	uint16_t port = 0;
	pid_t pid;

	while ((opt = getopt(argc, argv, "r:t:c:s:K:h")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'c': n_conn = atoi(optarg); break;
		case 's': n_streams = atoi(optarg); break;
		case 'K': snprintf(keyhole, sizeof keyhole, "%s", optarg); break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > BENCH_MAX_ROUNDS || secs <= 0 || n_conn < 1 ||
	    n_conn > MAX_CONN || n_streams < 1 || n_streams > (int)KH_ECMG_MAX_STREAMS) {
		fputs(usage, stderr);
		return 2;
	}
	if (!keyhole[0])
		default_keyhole(keyhole, sizeof keyhole);
	must(bench_mkdtemp(dir, sizeof dir, "bench_ecmg-XXXXXX"), "mkdtemp");
	setup_dir(keyhole, dir, keys, sizeof keys);
	load_keys(keys, key, &sg);
	snprintf(log, sizeof log, "%s/ecmg.log", dir);
	pid = spawn_ecmg(keyhole, keys, log, &port);
	for (int ch = 0; ch < n_conn; ch++)
		open_conn(&conn[ch], ch + 1, port);
	for (int r = 0; r < rounds; r++) {
		round_raw(r, secs, key, &sg);
		round_lone(r, secs);
		round_busy(r, secs);
		fprintf(stderr, "bench_ecmg: round %d of %d done\n", r + 1, rounds);
	}
	report(rounds);
	for (int ch = 0; ch < n_conn; ch++)
		close(conn[ch].fd);
	kill(pid, SIGTERM);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench_ecmg: ecmg serve ended with status %d (log in %s)\n", st, dir);
		return 1;
	}
	kh_wipe(key, sizeof key);
	kh_wipe(&sg, sizeof sg);
	free(lat);
	if (bench_rmtree(dir) != 0)
		fprintf(stderr, "bench_ecmg: could not remove %s\n", dir);
	return 0;
}
