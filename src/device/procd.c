/*
 * The processor daemon (include/keyhole/runner.h): a processor module served on a UNIX socket,
 * the runner beside it. The host's commands reach the module as any module daemon's do, and as
 * there, not the three that answer plaintext (transport.c refuses them on every socket): only
 * the runner sends those, in this process. A run request
 * brings the package and the program's streams as descriptors (SCM_RIGHTS), so the daemon needs
 * no access to the host's files and the program writes straight to the host's terminal or pipe.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/runner.h"

enum { T_TOKEN = 1, T_ARG = 2 };
#define ARG_MAX 4096

static size_t reply(uint8_t *resp, size_t cap, kh_err r, const char *why, uint32_t status)
{
	struct kh_wr w;
	uint16_t sw = kh_err_to_sw(r);

	kh_wr_init(&w, resp, cap - 2);
	if (r == KH_OK)
		kh_wr_u32(&w, status);
	else if (why && why[0])
		kh_wr_bytes(&w, (const uint8_t *)why, strnlen(why, 200));
	resp[w.len] = (uint8_t)(sw >> 8);
	resp[w.len + 1] = (uint8_t)sw;
	return w.len + 2;
}

/* A run request: parse, run through this module, answer. */
static size_t run_request(void *ctx, const uint8_t *req, size_t n, const int *fds, int nfds, uint8_t *resp, size_t cap)
{
	static char args[KH_RUN_ARGS_MAX][ARG_MAX + 1]; /* one request at a time: the daemon's */
	char *argv[KH_RUN_ARGS_MAX + 1], why[256] = "";
	struct kh_transport self;
	struct kh_run_opts o;
	struct kh_apdu a;
	struct kh_rd rd;
	struct kh_tlv t, token = {0};
	int k, status = 0;
	size_t na = 0;
	kh_err r;

	if (kh_apdu_parse(req, n, &a) != KH_OK || a.ins != KH_DAEMON_RUN || a.p1 || a.p2)
		return reply(resp, cap, KH_ERR_APDU_INS, NULL, 0);
	if (nfds != 4 && nfds != 5)
		return reply(resp, cap, KH_ERR_FORMAT, "a run request brings the package, three streams and maybe a directory", 0);
	kh_rd_init(&rd, a.data, a.lc);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag == T_TOKEN && !token.v) {
			token = t;
		} else if (t.tag == T_ARG && na < KH_RUN_ARGS_MAX && t.len <= ARG_MAX && !memchr(t.v, 0, t.len)) {
			memcpy(args[na], t.v, t.len);
			args[na][t.len] = 0;
			argv[na] = args[na];
			na++;
		} else {
			return reply(resp, cap, KH_ERR_FORMAT, "a run request's arguments are refused", 0);
		}
	}
	if (k < 0 || !token.v)
		return reply(resp, cap, KH_ERR_FORMAT, "a run request needs a licence token", 0);
	argv[na] = NULL;
	o = (struct kh_run_opts){.args = argv, .fd_in = fds[1], .fd_out = fds[2], .fd_err = fds[3],
				 .workdir_fd = nfds == 5 ? fds[4] : -1};
	kh_transport_inproc(&self, ctx);
	r = kh_run_package(&self, fds[0], token.v, token.len, &o, &status, why, sizeof why);
	for (size_t i = 0; i < na; i++)
		kh_wipe(args[i], strlen(args[i]));
	return reply(resp, cap, r, why, (uint32_t)status);
}

kh_err kh_serve_processor(const char *path, struct kh_module *m, volatile sig_atomic_t *stop)
{
	struct kh_serve_opts o = {.request = run_request, .ctx = m};

	/* the daemon holds program keys and plaintext for a moment: no core, no tracing by its user */
	if (prctl(PR_SET_DUMPABLE, 0) != 0)
		return KH_ERR_IO;
	return kh_serve_unix_opts(path, m, stop, &o);
}

kh_err kh_processor_run(struct kh_transport *t, int pkg_fd, const uint8_t *token, size_t toklen,
			const struct kh_run_opts *o, int *status, char *why, size_t cap)
{
	uint8_t data[KH_APDU_MAX_DATA], cmd[KH_APDU_MAX_CMD], resp[KH_APDU_MAX_RESP];
	int null = -1, fds[5], nfds = 4;
	const uint8_t *d;
	size_t rlen, dl;
	uint16_t sw;
	struct kh_wr w, c;
	kh_err r;

	if (why && cap)
		why[0] = 0;
	kh_wr_init(&w, data, sizeof data);
	kh_tlv_put(&w, T_TOKEN, token, toklen);
	for (size_t i = 0; o->args && o->args[i]; i++)
		if (i >= KH_RUN_ARGS_MAX || strlen(o->args[i]) > ARG_MAX)
			return KH_ERR_TOO_LARGE;
		else
			kh_tlv_put(&w, T_ARG, (const uint8_t *)o->args[i], strlen(o->args[i]));
	if (w.err != KH_OK)
		return KH_ERR_TOO_LARGE;
	kh_wr_init(&c, cmd, sizeof cmd);
	if ((r = kh_apdu_build(&c, KH_CLA_DAEMON, KH_DAEMON_RUN, 0, 0, data, w.len, 0)) != KH_OK)
		return r;
	if ((o->fd_in < 0 || o->fd_out < 0 || o->fd_err < 0) && (null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
		return KH_ERR_IO;
	fds[0] = pkg_fd;
	fds[1] = o->fd_in >= 0 ? o->fd_in : null;
	fds[2] = o->fd_out >= 0 ? o->fd_out : null;
	fds[3] = o->fd_err >= 0 ? o->fd_err : null;
	if (o->workdir_fd >= 0)
		fds[nfds++] = o->workdir_fd;
	r = kh_transport_unix_request(t, cmd, c.len, fds, nfds, resp, sizeof resp, &rlen);
	if (null >= 0)
		close(null);
	if (r != KH_OK)
		return r;
	if ((r = kh_apdu_resp(resp, rlen, &d, &dl, &sw)) != KH_OK)
		return r;
	if (sw != KH_SW_OK) {
		if (why && cap) {
			size_t k = dl < cap - 1 ? dl : cap - 1;
			for (size_t i = 0; i < k; i++)
				why[i] = d[i] >= ' ' && d[i] <= '~' ? (char)d[i] : '?';
			why[k] = 0;
		}
		return kh_err_from_sw(sw);
	}
	if (dl != 4)
		return KH_ERR_FORMAT;
	*status = (int)kh_get_be32(d);
	return KH_OK;
}
