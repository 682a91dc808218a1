/*
 * The UNIX-socket transport and the module daemon (src/device/transport.c) against peers that
 * misbehave. Daemon side: a client that stalls in the middle of a frame, or trickles it one byte
 * at a time, loses the one connection slot to the next client; SIGTERM stops a daemon blocked
 * on such a client at once, with or without SA_RESTART. Client side: an answer that breaks the
 * framing (too long, cut short, no status word) ends the connection for good, so that no later
 * command is paired with leftover bytes.
 *
 * The daemon runs in a forked child on a blank module (GET INFO answers on it) with its log in
 * the test's temporary directory; the lying daemons of the client tests are forked children too.
 * Time is asserted only as a generous "did not hang" bound; an alarm kills a test that hangs.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/device.h"
#include "keyhole/log.h"
#include "keyhole/module.h"
#include "keyhole/transport.h"
#include "testutil.h"

/* A test that hangs is killed by SIGALRM after this long (its daemons die with it). */
#define HANG_GUARD_S 60
/* "Did not hang": every wait the tests make is bounded by this. */
#define PATIENCE_MS 5000

static const uint8_t get_info[] = {KH_CLA, KH_INS_GET_INFO, 0, 0};

struct fixture {
	char *dir;
	char sock[200];
	char log[200];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f || !(f->dir = kh_test_tmpdir())) {
		free(f);
		return -1;
	}
	snprintf(f->sock, sizeof f->sock, "%s/m.sock", f->dir);
	snprintf(f->log, sizeof f->log, "%s/daemon.log", f->dir);
	alarm(HANG_GUARD_S);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	alarm(0);
	kh_test_rmdir(f->dir);
	free(f);
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* ---- the daemon, in a child ---- */

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static kh_err store_ok(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	(void)ctx;
	(void)blob;
	(void)len;
	(void)counter;
	return KH_OK;
}

/* Runs in the child: 0 when kh_serve_unix_opts() returned KH_OK, 10+ for a setup failure. */
static int daemon_main(const struct fixture *f, unsigned timeout_ms, int sa_flags)
{
	struct kh_module_env env = {.store = store_ok};
	struct kh_serve_opts o = {.timeout_ms = timeout_ms};
	struct sigaction sa;
	struct kh_module *m;
	uint8_t root[KH_ROOT_KEY_LEN];
	void *mem;
	int fd;
	kh_err r;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = sa_flags;
	if (sigaction(SIGTERM, &sa, NULL) != 0)
		return 10;
	if ((fd = open(f->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0 || dup2(fd, 2) < 0)
		return 11;
	close(fd);
	kh_log_set_level(KH_LOG_INFO);
	memset(root, 0x5a, sizeof root);
	if (posix_memalign(&mem, 16, kh_module_size()) != 0)
		return 12;
	if (kh_module_init(mem, kh_module_size(), root, &env, &m) != KH_OK)
		return 13;
	r = kh_serve_unix_opts(f->sock, m, &stop, &o);
	kh_module_wipe(m);
	free(mem);
	return r == KH_OK ? 0 : 14;
}

static pid_t fork_child(void)
{
	pid_t parent = getpid(), pid;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Die with the test (the hang guard) rather than keep a socket. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(99);
	}
	return pid;
}

static pid_t start_daemon(const struct fixture *f, unsigned timeout_ms, int sa_flags)
{
	pid_t pid = fork_child();
	if (pid == 0)
		_exit(daemon_main(f, timeout_ms, sa_flags));
	return pid;
}

/* The child's exit code once it exits, or -1 if it still runs after ms (it is then killed). */
static int wait_exit(pid_t pid, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	int st;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		assert_int_equal(w, 0);
		if (now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		sleep_ms(10);
	}
}

static void stop_daemon(const struct fixture *f, pid_t pid)
{
	struct stat st;
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(wait_exit(pid, PATIENCE_MS), 0);
	assert_int_equal(lstat(f->sock, &st), -1);
	assert_int_equal(errno, ENOENT);
}

static int log_has(const struct fixture *f, const char *needle)
{
	static char buf[65536];
	FILE *fp = fopen(f->log, "r");
	size_t n;
	if (!fp)
		return 0;
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

/* ---- raw clients ---- */

static void sockaddr_of(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	assert_true(strlen(path) < sizeof sa->sun_path);
	strcpy(sa->sun_path, path);
}

/* Connect to the daemon, retrying while it starts. */
static int raw_connect(const char *path)
{
	struct sockaddr_un sa;
	uint64_t end = now_ms() + PATIENCE_MS;
	sockaddr_of(path, &sa);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
			return fd;
		close(fd);
		if (now_ms() >= end)
			fail_msg("no daemon on %s", path);
		sleep_ms(10);
	}
}

static void send_bytes(int fd, const uint8_t *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void recv_bytes(int fd, uint8_t *p, size_t n)
{
	while (n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t k;
		assert_int_equal(poll(&pf, 1, PATIENCE_MS), 1);
		k = recv(fd, p, n, 0);
		assert_true(k > 0);
		p += k;
		n -= (size_t)k;
	}
}

/* One GET INFO by hand, proving the daemon is serving this connection. */
static void raw_get_info(int fd)
{
	uint8_t frame[4 + sizeof get_info], hdr[4], resp[KH_APDU_MAX_RESP];
	uint32_t len;
	kh_put_be32(frame, sizeof get_info);
	memcpy(frame + 4, get_info, sizeof get_info);
	send_bytes(fd, frame, sizeof frame);
	recv_bytes(fd, hdr, 4);
	len = kh_get_be32(hdr);
	assert_in_range(len, 3, sizeof resp);
	recv_bytes(fd, resp, len);
	assert_int_equal(resp[len - 2] << 8 | resp[len - 1], 0x9000);
}

/* The peer hung up on fd within ms: end of stream, or a reset when it left our bytes unread. */
static int hung_up(int fd, int ms)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	uint8_t b;
	ssize_t k;
	if (poll(&pf, 1, ms) != 1)
		return 0;
	k = recv(fd, &b, 1, MSG_DONTWAIT);
	return k == 0 || (k < 0 && errno == ECONNRESET);
}

static void assert_get_info(struct kh_transport *t)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t n = 0;
	assert_int_equal(kh_transport_xfer(t, get_info, sizeof get_info, resp, sizeof resp, &n), KH_OK);
	assert_true(n > 2);
	assert_int_equal(resp[n - 2] << 8 | resp[n - 1], 0x9000);
}

/* ---- daemon side ---- */

/* Two bytes of a length, then nothing: the daemon hangs up on it and serves the next client. */
static void test_stalled_client_loses_the_slot(void **state)
{
	struct fixture *f = *state;
	static const uint8_t half_length[2] = {0, 0};
	struct kh_transport t;
	pid_t pid = start_daemon(f, 300, 0);
	int stalled = raw_connect(f->sock);
	uint64_t t0;

	send_bytes(stalled, half_length, sizeof half_length);
	/* Queued behind the stalled client: served only once the daemon gives up on it. */
	t0 = now_ms();
	assert_int_equal(kh_transport_unix(&t, f->sock), KH_OK);
	assert_get_info(&t);
	assert_true(now_ms() - t0 < PATIENCE_MS);
	assert_true(hung_up(stalled, PATIENCE_MS));
	close(stalled);
	assert_get_info(&t); /* and the good client stays served */
	kh_transport_close(&t);

	stop_daemon(f, pid);
	assert_true(log_has(f, "event=serve.timeout timeout_ms=300 apdus=0"));
	assert_true(log_has(f, "event=serve.disconnect apdus=0 reason=timeout"));
	assert_true(log_has(f, "event=serve.disconnect apdus=2 reason=")); /* eof or stop: a race */
}

/* A whole length, then one byte of the APDU every 50 ms: each read is quick, the frame is not. */
static void test_trickling_client_is_cut_off(void **state)
{
	struct fixture *f = *state;
	enum { BODY = 100 };
	struct kh_transport t;
	uint8_t hdr[4], zero = 0;
	pid_t pid = start_daemon(f, 300, 0);
	int fd = raw_connect(f->sock), sent = 0, cut = 0;

	raw_get_info(fd);
	kh_put_be32(hdr, BODY);
	send_bytes(fd, hdr, sizeof hdr);
	/* BODY bytes would take 5 s; the daemon allows the frame 300 ms (cut by 600 ms). */
	while (sent < BODY && !cut) {
		if (send(fd, &zero, 1, MSG_NOSIGNAL) != 1) {
			assert_true(errno == EPIPE || errno == ECONNRESET);
			cut = 1;
		} else {
			sent++;
			cut = hung_up(fd, 50);
		}
	}
	assert_true(cut);
	assert_true(sent < BODY);
	close(fd);

	assert_int_equal(kh_transport_unix(&t, f->sock), KH_OK);
	assert_get_info(&t);
	kh_transport_close(&t);
	stop_daemon(f, pid);
	assert_true(log_has(f, "event=serve.disconnect apdus=1 reason=timeout"));
}

/*
 * SIGTERM while the daemon waits for the rest of a frame: it stops at once, although the frame
 * limit is a minute. The old daemon retried the interrupted read and hung until the client left.
 */
static void stop_mid_frame(const struct fixture *f, int sa_flags)
{
	static const uint8_t half_length[2] = {0, 0};
	pid_t pid = start_daemon(f, 60000, sa_flags);
	int fd = raw_connect(f->sock);
	struct stat st;

	raw_get_info(fd); /* the daemon is now serving fd */
	send_bytes(fd, half_length, sizeof half_length);
	sleep_ms(200); /* let it block in the read of the other two bytes */
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(wait_exit(pid, PATIENCE_MS), 0);
	assert_true(hung_up(fd, PATIENCE_MS));
	close(fd);
	assert_int_equal(lstat(f->sock, &st), -1);
	assert_true(log_has(f, "event=serve.disconnect apdus=1 reason=stop"));
}

static void test_sigterm_stops_a_stalled_daemon(void **state)
{
	stop_mid_frame(*state, 0);
}

static void test_sigterm_stops_a_stalled_daemon_sa_restart(void **state)
{
	stop_mid_frame(*state, SA_RESTART);
}

/* ---- client side ---- */

/* What a lying daemon answers to the first command (the length is sent as len_bytes of BE32). */
struct lie {
	const char *what;
	uint32_t len;
	size_t len_bytes;
	uint8_t body[8];
	size_t body_len;
	int hangup; /* shut the connection down for writing after the answer */
	size_t cap; /* the client's response buffer; 0: twice KH_APDU_MAX_RESP */
	kh_err expect;
};

static const struct lie lies[] = {
	{"length one over the largest response", KH_APDU_MAX_RESP + 1, 4, {0x90, 0}, 2, 0, 0, KH_ERR_TRANSPORT},
	{"length 4 GiB - 1", 0xFFFFFFFFu, 4, {0x90, 0}, 2, 0, 0, KH_ERR_TRANSPORT},
	{"answer larger than the caller's buffer", 6, 4, {1, 2, 3, 4, 0x90, 0}, 6, 0, 4, KH_ERR_TRANSPORT},
	{"answer cut short", 10, 4, {1, 2, 3}, 3, 1, 0, KH_ERR_TRANSPORT},
	{"length cut short", 2, 2, {0}, 0, 1, 0, KH_ERR_TRANSPORT},
	{"no status word", 1, 4, {0x90}, 1, 0, 0, KH_ERR_TRANSPORT},
	{"hang-up before answering", 0, 0, {0}, 0, 1, 0, KH_ERR_TRANSPORT},
	{"a good answer", 2, 4, {0x90, 0}, 2, 0, 0, KH_OK},
};

/*
 * Runs in the child: answer one command with the lie, then expect nothing more but the client
 * hanging up. 0 when so, 1 when the client sent more bytes, 2 when it never hung up, 3+ setup.
 */
static int liar_main(int lfd, const struct lie *l)
{
	struct timeval tv = {PATIENCE_MS / 1000, 0};
	uint8_t buf[4 + KH_APDU_MAX_CMD], answer[4 + sizeof l->body];
	size_t extra = 0;
	int c;

	if ((c = accept(lfd, NULL, NULL)) < 0)
		return 3;
	close(lfd);
	if (setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return 4;
	/* one command frame (the client sends it in one piece) */
	if (recv(c, buf, sizeof buf, 0) < 4)
		return 5;
	kh_put_be32(answer, l->len);
	memcpy(answer + l->len_bytes, l->body, l->body_len);
	if (send(c, answer, l->len_bytes + l->body_len, MSG_NOSIGNAL) != (ssize_t)(l->len_bytes + l->body_len))
		return 6;
	if (l->hangup)
		shutdown(c, SHUT_WR);
	for (;;) {
		ssize_t k = recv(c, buf, sizeof buf, 0);
		if (k > 0) {
			extra += (size_t)k;
			continue;
		}
		if (k == 0 || errno == ECONNRESET)
			return extra ? 1 : 0;
		if (errno != EINTR)
			return 2;
	}
}

static void one_lie(const struct fixture *f, const struct lie *l)
{
	struct sockaddr_un sa;
	struct kh_transport t;
	uint8_t resp[2 * KH_APDU_MAX_RESP], big[KH_APDU_MAX_CMD + 1];
	size_t cap = l->cap ? l->cap : sizeof resp, n = 12345;
	pid_t pid;
	int lfd;

	print_message("lie: %s\n", l->what);
	unlink(f->sock);
	sockaddr_of(f->sock, &sa);
	assert_true((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(lfd, 1), 0);
	if ((pid = fork_child()) == 0)
		_exit(liar_main(lfd, l));
	close(lfd);

	assert_int_equal(kh_transport_unix(&t, f->sock), KH_OK);
	assert_int_equal(kh_transport_xfer(&t, get_info, sizeof get_info, resp, cap, &n), l->expect);
	if (l->expect == KH_OK) {
		assert_int_equal(n, l->body_len);
		assert_memory_equal(resp, l->body, n);
		/* a command too large to send is the caller's error: nothing sent, still usable */
		memset(big, 0, sizeof big);
		assert_int_equal(kh_transport_xfer(&t, big, sizeof big, resp, cap, &n), KH_ERR_TOO_LARGE);
		kh_transport_close(&t);
		assert_int_equal(wait_exit(pid, PATIENCE_MS), 0);
		return;
	}
	assert_int_equal(n, 12345); /* *rlen is written only on success */
	/* Broken for good: later calls fail without touching the stream... */
	for (int i = 0; i < 3; i++)
		assert_int_equal(kh_transport_xfer(&t, get_info, sizeof get_info, resp, cap, &n), KH_ERR_TRANSPORT);
	assert_int_equal(kh_transport_xfer(&t, big, sizeof big, resp, cap, &n), KH_ERR_TRANSPORT);
	/* ...which the client closed at the failure, before kh_transport_close(): no byte after it. */
	assert_int_equal(wait_exit(pid, PATIENCE_MS), 0);
	kh_transport_close(&t); /* still frees the context (ASan would report the leak) */
	assert_null(t.ctx);
	assert_int_equal(kh_transport_xfer(&t, get_info, sizeof get_info, resp, cap, &n), KH_ERR_TRANSPORT);
}

static void test_client_drops_a_broken_stream(void **state)
{
	for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++)
		one_lie(*state, &lies[i]);
}

/*
 * The regression the review found, against the real daemon: after an answer too large for the
 * caller's buffer the old client kept the connection, so the daemon kept serving it (and the
 * next command read the rest of that answer). Now the daemon sees the hang-up at once and serves
 * the next host while the broken transport is still open.
 */
static void test_client_small_buffer_against_daemon(void **state)
{
	struct fixture *f = *state;
	struct kh_transport t;
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t n = 0;
	pid_t pid = start_daemon(f, 60000, 0);
	int fd;

	close(raw_connect(f->sock)); /* wait for it */
	assert_int_equal(kh_transport_unix(&t, f->sock), KH_OK);
	assert_get_info(&t);
	assert_int_equal(kh_transport_xfer(&t, get_info, sizeof get_info, resp, 3, &n), KH_ERR_TRANSPORT);
	assert_int_equal(kh_transport_xfer(&t, get_info, sizeof get_info, resp, sizeof resp, &n), KH_ERR_TRANSPORT);
	fd = raw_connect(f->sock);
	raw_get_info(fd);
	close(fd);
	kh_transport_close(&t);
	stop_daemon(f, pid);
	assert_true(log_has(f, "event=serve.disconnect apdus=2 reason=eof"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stalled_client_loses_the_slot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trickling_client_is_cut_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_stops_a_stalled_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_stops_a_stalled_daemon_sa_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_drops_a_broken_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_small_buffer_against_daemon, setup, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
