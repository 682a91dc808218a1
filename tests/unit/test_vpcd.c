/*
 * The card side of the vpcd reader driver (src/device/vpcd.c, vpcd_serve.c). Framing: a message
 * is taken only when whole, a zero length and an oversized one are refused, a one-byte payload is
 * a control message, framing again gives the same bytes, a writer too small gets nothing. The
 * ATR is the documented bytes with a TCK that checks. Over loopback, with this test playing the
 * driver: get-ATR is answered with the ATR, power and reset with nothing, GET INFO by the module
 * (and daemon requests and the runner's instructions refused as by the UNIX daemon), each
 * answer in one TCP segment; when the driver hangs up the card side connects again; while
 * ejected it stays away, and comes back when inserted.
 *
 * kh_serve_vpcd runs in a thread on a blank module; an alarm kills a test that hangs.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device/vpcd.h"
#include "keyhole/apdu.h"
#include "keyhole/device.h"
#include "keyhole/module.h"
#include "testutil.h"

#define HANG_GUARD_S 60
#define PATIENCE_MS 5000

static const uint8_t card_atr[KH_VPCD_ATR_LEN] = {0x3B, 0x8C, 0x01, 0x80, 0x57, 'K', 'e',  'y',
						   'h',  'o',  'l',  'e',  0x62, 0x01, 0x01, 0x61};

static void test_take(void **state)
{
	static const uint8_t atr_req[] = {0x00, 0x01, 0x04};
	static const uint8_t info[] = {0x00, 0x04, KH_CLA, KH_INS_GET_INFO, 0, 0, 0x00};
	static const uint8_t zero[] = {0x00, 0x00, 0x01};
	uint8_t big[2] = {(uint8_t)((KH_APDU_MAX_CMD + 1) >> 8), (uint8_t)(KH_APDU_MAX_CMD + 1)};
	struct kh_vpcd_msg m;
	size_t used = 99;

	(void)state;
	assert_int_equal(kh_vpcd_take(atr_req, 0, KH_APDU_MAX_CMD, &m, &used), KH_ERR_TRUNCATED);
	assert_int_equal(kh_vpcd_take(atr_req, 2, KH_APDU_MAX_CMD, &m, &used), KH_ERR_TRUNCATED);
	assert_int_equal(used, 99);
	assert_int_equal(kh_vpcd_take(atr_req, 3, KH_APDU_MAX_CMD, &m, &used), KH_OK);
	assert_true(m.is_ctrl);
	assert_int_equal(m.ctrl, KH_VPCD_ATR);
	assert_int_equal(used, 3);
	assert_int_equal(kh_vpcd_take(info, 5, KH_APDU_MAX_CMD, &m, &used), KH_ERR_TRUNCATED);
	assert_int_equal(kh_vpcd_take(info, sizeof info, KH_APDU_MAX_CMD, &m, &used), KH_OK);
	assert_false(m.is_ctrl);
	assert_ptr_equal(m.apdu, info + 2);
	assert_int_equal(m.apdu_len, 4);
	assert_int_equal(used, 6);
	assert_int_equal(kh_vpcd_take(zero, sizeof zero, KH_APDU_MAX_CMD, &m, &used), KH_ERR_FORMAT);
	assert_int_equal(kh_vpcd_take(big, sizeof big, KH_APDU_MAX_CMD, &m, &used), KH_ERR_TOO_LARGE);
}

static void test_frame(void **state)
{
	static const uint8_t payload[] = {0x90, 0x00};
	uint8_t out[8];

	(void)state;
	assert_int_equal(kh_vpcd_frame(out, sizeof out, payload, sizeof payload), 4);
	assert_memory_equal(out, ((const uint8_t[]){0x00, 0x02, 0x90, 0x00}), 4);
	assert_int_equal(kh_vpcd_frame(out, 3, payload, sizeof payload), 0);
	assert_int_equal(kh_vpcd_frame(out, sizeof out, payload, 0), 0);
}

static void test_atr(void **state)
{
	uint8_t atr[KH_VPCD_ATR_LEN];

	(void)state;
	kh_vpcd_atr(1, atr);
	assert_memory_equal(atr, card_atr, sizeof atr);
	assert_true(kh_vpcd_atr_tck_ok(atr, sizeof atr));
	kh_vpcd_atr(2, atr);
	assert_int_equal(atr[13], 2);
	assert_true(kh_vpcd_atr_tck_ok(atr, sizeof atr));
	atr[14] ^= 1;
	assert_false(kh_vpcd_atr_tck_ok(atr, sizeof atr));
}

/* ---- over loopback: this test is the driver ---- */

struct card {
	void *mem;
	struct kh_module *m;
	pthread_t th;
	volatile sig_atomic_t stop, ejected;
	struct kh_vpcd_opts o;
	kh_err r;
	int lfd;
	uint16_t port;
};

static kh_err store_ok(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	(void)ctx, (void)blob, (void)len, (void)counter;
	return KH_OK;
}

static void *card_main(void *arg)
{
	struct card *c = arg;
	c->r = kh_serve_vpcd(c->m, &c->o);
	return NULL;
}

static int setup(void **state)
{
	struct card *c = calloc(1, sizeof *c);
	struct kh_module_env env = {.store = store_ok};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	uint8_t root[KH_ROOT_KEY_LEN];

	if (!c || posix_memalign(&c->mem, 16, kh_module_size()) != 0)
		return -1;
	memset(root, 0x5a, sizeof root);
	if (kh_module_init(c->mem, kh_module_size(), root, &env, &c->m) != KH_OK)
		return -1;
	/* the driver's listening socket, on a port the kernel picks */
	if ((c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(c->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(c->lfd, 4) != 0 ||
	    getsockname(c->lfd, (struct sockaddr *)&sa, &sl) != 0)
		return -1;
	c->port = ntohs(sa.sin_port);
	c->o = (struct kh_vpcd_opts){.host = "127.0.0.1", .port = c->port, .stop = &c->stop,
				     .ejected = &c->ejected};
	alarm(HANG_GUARD_S);
	*state = c;
	return pthread_create(&c->th, NULL, card_main, c) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	struct card *c = *state;
	c->stop = 1;
	pthread_join(c->th, NULL);
	close(c->lfd);
	kh_module_wipe(c->m);
	free(c->mem);
	free(c);
	alarm(0);
	return 0;
}

/* The card side's next connection, or -1 when none comes within ms. */
static int accept_card(struct card *c, int ms)
{
	struct pollfd p = {.fd = c->lfd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return -1;
	return accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void send_msg(int fd, const uint8_t *payload, size_t len)
{
	uint8_t buf[2 + 64];
	size_t n = kh_vpcd_frame(buf, sizeof buf, payload, len);
	assert_true(n > 0);
	assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* One answer: it arrives whole in one read (one send, TCP_NODELAY); its payload length. */
static size_t recv_msg(int fd, uint8_t *payload, size_t cap)
{
	uint8_t buf[2 + KH_APDU_MAX_RESP];
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t k;
	size_t len;

	assert_int_equal(poll(&p, 1, PATIENCE_MS), 1);
	k = recv(fd, buf, sizeof buf, 0);
	assert_true(k >= 2);
	len = (size_t)buf[0] << 8 | buf[1];
	assert_int_equal((size_t)k, 2 + len);
	assert_true(len <= cap);
	memcpy(payload, buf + 2, len);
	return len;
}

/* Nothing more arrives on fd within ms. */
static void assert_quiet(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, ms), 0);
}

static uint16_t sw_of(const uint8_t *resp, size_t n)
{
	assert_true(n >= 2);
	return (uint16_t)(resp[n - 2] << 8 | resp[n - 1]);
}

static void test_serve(void **state)
{
	static const uint8_t on = KH_VPCD_ON, atr_req = KH_VPCD_ATR, reset = KH_VPCD_RESET;
	static const uint8_t info[] = {KH_CLA, KH_INS_GET_INFO, 0, 0, 0};
	static const uint8_t daemon_req[] = {KH_CLA_DAEMON, 0x01, 0, 0};
	static const uint8_t run_open[] = {KH_CLA, KH_INS_RUN_OPEN, 0, 0};
	struct card *c = *state;
	uint8_t resp[KH_APDU_MAX_RESP], blank_atr[KH_VPCD_ATR_LEN];
	size_t n;
	int fd = accept_card(c, PATIENCE_MS);

	assert_true(fd >= 0);
	kh_vpcd_atr(0, blank_atr); /* the ATR names the module's role now: this one is blank */
	send_msg(fd, &on, 1);
	send_msg(fd, &reset, 1);
	assert_quiet(fd, 100);
	send_msg(fd, &atr_req, 1);
	assert_int_equal(recv_msg(fd, resp, sizeof resp), KH_VPCD_ATR_LEN);
	assert_memory_equal(resp, blank_atr, KH_VPCD_ATR_LEN);
	send_msg(fd, info, sizeof info);
	n = recv_msg(fd, resp, sizeof resp);
	assert_int_equal(sw_of(resp, n), 0x9000);
	assert_true(n > 2);
	send_msg(fd, daemon_req, sizeof daemon_req);
	n = recv_msg(fd, resp, sizeof resp);
	assert_int_equal(n, 2);
	assert_int_equal(sw_of(resp, n), kh_err_to_sw(KH_ERR_APDU_CLA));
	send_msg(fd, run_open, sizeof run_open);
	n = recv_msg(fd, resp, sizeof resp);
	assert_int_equal(sw_of(resp, n), kh_err_to_sw(KH_ERR_APDU_INS));

	/* the driver goes away: the card side comes back by itself */
	close(fd);
	fd = accept_card(c, PATIENCE_MS);
	assert_true(fd >= 0);
	send_msg(fd, &atr_req, 1);
	assert_int_equal(recv_msg(fd, resp, sizeof resp), KH_VPCD_ATR_LEN);
	close(fd);
}

static void test_eject_insert(void **state)
{
	static const uint8_t atr_req = KH_VPCD_ATR;
	struct card *c = *state;
	uint8_t resp[KH_APDU_MAX_RESP], b;
	int fd = accept_card(c, PATIENCE_MS);

	assert_true(fd >= 0);
	c->ejected = 1;
	/* the card side hangs up */
	{
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, PATIENCE_MS), 1);
		assert_int_equal(recv(fd, &b, 1, 0), 0);
	}
	close(fd);
	/* and stays away while ejected: no connection in a second (five retry periods) */
	assert_int_equal(accept_card(c, 1000), -1);
	c->ejected = 0;
	fd = accept_card(c, PATIENCE_MS);
	assert_true(fd >= 0);
	send_msg(fd, &atr_req, 1);
	assert_int_equal(recv_msg(fd, resp, sizeof resp), KH_VPCD_ATR_LEN);
	close(fd);
}

static void test_broken_frame_reconnects(void **state)
{
	static const uint8_t zero[] = {0x00, 0x00};
	struct card *c = *state;
	uint8_t b;
	int fd = accept_card(c, PATIENCE_MS);
	struct pollfd p;

	assert_true(fd >= 0);
	assert_int_equal(send(fd, zero, sizeof zero, MSG_NOSIGNAL), 2);
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, PATIENCE_MS), 1);
	assert_int_equal(recv(fd, &b, 1, 0), 0);
	close(fd);
	fd = accept_card(c, PATIENCE_MS);
	assert_true(fd >= 0);
	close(fd);
}

static void test_stop(void **state)
{
	struct card *c = *state;
	int fd = accept_card(c, PATIENCE_MS);

	assert_true(fd >= 0);
	c->stop = 1;
	pthread_join(c->th, NULL);
	assert_int_equal(c->r, KH_OK);
	/* teardown joins again: start a thread that returns at once */
	assert_int_equal(pthread_create(&c->th, NULL, card_main, c), 0);
	close(fd);
}

static void test_bad_args(void **state)
{
	volatile sig_atomic_t stop = 0, ej = 0;
	struct kh_vpcd_opts o = {.port = 1, .stop = &stop, .ejected = &ej};

	(void)state;
	assert_int_equal(kh_serve_vpcd(NULL, &o), KH_ERR_INVAL);
	o.ejected = NULL;
	assert_int_equal(kh_serve_vpcd((struct kh_module *)&o, &o), KH_ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_take),
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_atr),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test_setup_teardown(test_serve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eject_insert, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_frame_reconnects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
