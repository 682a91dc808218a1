/* Helpers shared by the subcommands (cli.h). */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keyhole/apdu.h"
#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/softmodule.h"
#include "keyhole/store.h"

void kh_cli_list(FILE *f, const char *prog, const struct kh_cli_cmd *tab, size_t n)
{
	int w = 10;

	for (size_t i = 0; i < n; i++)
		if ((int)strlen(tab[i].name) > w)
			w = (int)strlen(tab[i].name);
	fprintf(f, "usage: keyhole %s%s<command> [options]\n\ncommands:\n", prog ? prog : "", prog ? " " : "");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  %-*s %s\n", w, tab[i].name, tab[i].help);
	fprintf(f, "\nRun 'keyhole %s%s<command> --help' for a command's options.\n", prog ? prog : "",
		prog ? " " : "");
}

int kh_cli_usage(const char *prog, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "keyhole%s%s: ", prog ? " " : "", prog ? prog : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'keyhole%s%s --help')\n", prog ? " " : "", prog ? prog : "");
	return KH_EXIT_USAGE;
}

int kh_cli_fail(const char *what, kh_err e)
{
	char safe[1024];

	/* what may be a database URL: never its password */
	kh_store_url_safe(what, safe, sizeof safe);
	fprintf(stderr, "keyhole: %s: %s\n", safe, kh_strerror(e));
	return KH_EXIT_FAIL;
}

int kh_cli_refuse_tty_out(const char *prog, const char *out)
{
	if (out || !isatty(STDOUT_FILENO))
		return 0;
	return kh_cli_usage(prog, "refusing to write a transport stream to a terminal: give --out FILE, "
				  "or --out - to write it there all the same");
}

static int hexdigit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int kh_cli_parse_num(const char *s, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;
	unsigned base = 10, d;

	if (!s || !*s)
		return -1;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!*s)
			return -1;
	}
	for (; *s; s++) {
		if (base == 16 ? !hexdigit(*s) : !(*s >= '0' && *s <= '9'))
			return -1;
		d = *s <= '9' ? (unsigned)(*s - '0') : (unsigned)((*s | 0x20) - 'a' + 10);
		if (d > max || x > (max - d) / base)
			return -1;
		x = x * base + d;
	}
	*v = x;
	return 0;
}

int kh_cli_parse_ua(const char *s, uint32_t *v)
{
	uint32_t x = 0;
	size_t n;

	if (!s)
		return -1;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		n = strlen(s);
		if (n < 1 || n > 8)
			return -1;
	} else if ((n = strlen(s)) != 8) {
		return -1;
	}
	for (; *s; s++) {
		if (!hexdigit(*s))
			return -1;
		x = x << 4 | (uint32_t)(*s <= '9' ? *s - '0' : (*s | 0x20) - 'a' + 10);
	}
	if (x == 0)
		return -1;
	*v = x;
	return 0;
}

int kh_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int kh_cli_open_special(const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) != 0 || S_ISREG(st.st_mode))
		return -1;
	if ((fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY)) < 0)
		return -2;
	return fd;
}

int kh_cli_out_open(struct kh_cli_out *o, const char *path)
{
	mode_t um;
	int fd;

	o->fd = -1;
	o->tmp = NULL;
	if (!path || strcmp(path, "-") == 0) {
		o->fd = STDOUT_FILENO;
		return KH_EXIT_OK;
	}
	if ((fd = kh_cli_open_special(path)) != -1) {
		/* a device, FIFO or socket: written in place, never renamed over */
		if (fd == -2) {
			fprintf(stderr, "keyhole: %s: %s\n", path, strerror(errno));
			return KH_EXIT_FAIL;
		}
		o->fd = fd;
		return KH_EXIT_OK;
	}
	if (asprintf(&o->tmp, "%s.tmp.XXXXXX", path) < 0) {
		o->tmp = NULL;
		return kh_cli_fail(path, KH_ERR_NOMEM);
	}
	/* mkstemp makes the file 0600; a transport stream is no secret, so the umask decides */
	um = umask(0);
	umask(um);
	if ((o->fd = mkostemp(o->tmp, O_CLOEXEC)) < 0 || fchmod(o->fd, 0666 & ~um) != 0) {
		fprintf(stderr, "keyhole: %s: %s\n", path, strerror(errno));
		kh_cli_out_close(o);
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}

int kh_cli_out_commit(struct kh_cli_out *o, const char *path)
{
	int fd = o->fd;

	if (!o->tmp)
		return KH_EXIT_OK;
	o->fd = -1;
	if (fsync(fd) != 0 || close(fd) != 0 || rename(o->tmp, path) != 0) {
		fprintf(stderr, "keyhole: %s: %s\n", path, strerror(errno));
		return KH_EXIT_FAIL;
	}
	free(o->tmp);
	o->tmp = NULL;
	return KH_EXIT_OK;
}

void kh_cli_out_close(struct kh_cli_out *o)
{
	if (o->fd > STDERR_FILENO)
		close(o->fd);
	o->fd = -1;
	if (o->tmp) { /* no half-written output */
		unlink(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
}

int kh_cli_dispatch(const char *prog, const struct kh_cli_cmd *tab, size_t n, int argc, char **argv)
{
	if (argc < 2)
		return kh_cli_usage(prog, "a command is required");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		if (argc > 2 && strcmp(argv[1], "help") == 0) {
			for (size_t i = 0; i < n; i++)
				if (strcmp(tab[i].name, argv[2]) == 0) {
					/* "help headend scramble" is "headend help scramble": the help of the
					 * command named, however deep */
					char *h[8] = {argv[2], (char *)"--help", NULL};
					if (argc > 3) {
						if (argc - 1 > (int)(sizeof h / sizeof h[0]) - 1)
							return kh_cli_usage(prog, "too many words after help");
						h[1] = (char *)"help";
						for (int k = 3; k < argc; k++)
							h[k - 1] = argv[k];
						h[argc - 1] = NULL;
						return tab[i].fn(argc - 1, h);
					}
					return tab[i].fn(2, h);
				}
			return kh_cli_usage(prog, "unknown command '%s'", argv[2]);
		}
		kh_cli_list(stdout, prog, tab, n);
		return KH_EXIT_OK;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(tab[i].name, argv[1]) == 0)
			return tab[i].fn(argc - 1, argv + 1);
	return kh_cli_usage(prog, "unknown command '%s'", argv[1]);
}

kh_err kh_cli_open_module(const char *spec, const char *key, struct kh_softmod **sm, struct kh_transport *t,
			  char *what, size_t whatlen)
{
	enum kh_softmod_file which = KH_SOFTMOD_CARD;
	char *defkey = NULL;
	kh_err r;

	*sm = NULL;
	snprintf(what, whatlen, "%s", spec);
	if (strncmp(spec, "unix:", 5) == 0)
		return kh_transport_unix(t, spec + 5);
	if (strncmp(spec, "pcsc:", 5) == 0) {
		if (spec[5])
			snprintf(what, whatlen, "reader '%s'", spec + 5);
		else
			snprintf(what, whatlen, "PC/SC (the first reader with a card)");
		return kh_transport_pcsc(t, spec + 5);
	}
	if ((r = kh_softmod_open(spec, key, sm, &which)) != KH_OK) {
		if (which == KH_SOFTMOD_KEY) {
			defkey = key ? NULL : kh_softmod_key_path(spec);
			snprintf(what, whatlen, "%s", key ? key : defkey ? defkey : spec);
		} else if (which == KH_SOFTMOD_COUNTER) {
			snprintf(what, whatlen, "%s.ctr", spec);
		}
		if (r == KH_ERR_MODULE_BUSY) {
			long pid = kh_softmod_holder(spec, key);
			if (pid > 0)
				snprintf(what, whatlen, "%s (held by process %ld)", spec, pid);
		}
		free(defkey);
		return r;
	}
	kh_transport_inproc(t, kh_softmod_module(*sm));
	return KH_OK;
}

kh_err kh_cli_root_pk(const char *path, uint8_t pk[static 32])
{
	struct stat st;
	char *file = NULL;
	uint8_t *pem = NULL, der[KH_CERT_MAX];
	size_t pemlen = 0, derlen;
	kh_err r;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (asprintf(&file, "%s/root.crt", path) < 0)
			return KH_ERR_NOMEM;
		path = file;
	}
	if ((r = kh_file_read(path, 64 * 1024, &pem, &pemlen)) != KH_OK)
		goto out;
	if ((r = kh_cert_pem_to_der((const char *)pem, pemlen, der, sizeof der, &derlen)) != KH_OK)
		goto out;
	r = kh_cert_root_pk(der, derlen, pk);
out:
	kh_file_free(pem, pemlen);
	free(file);
	return r;
}

kh_err kh_cli_issue(const char *authdir, int role, uint32_t ua, const char *card_path, const char *key_path,
		    uint32_t *issued_ua, const char **what)
{
	struct kh_authority *a = NULL;
	struct kh_softmod *sm = NULL;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	struct kh_transport t;
	kh_err r;

	if (!iss)
		return KH_ERR_NOMEM;
	/* Refuse before the authority hands out a UA or writes a certificate. */
	*what = card_path;
	if ((r = kh_softmod_check_free(card_path, key_path)) != KH_OK)
		goto out;
	*what = authdir;
	if ((r = kh_authority_open(authdir, &a)) != KH_OK)
		goto out;
	*what = "personalisation";
	if ((r = kh_softmod_new_blank(&sm)) != KH_OK)
		goto out;
	kh_transport_inproc(&t, kh_softmod_module(sm));
	if ((r = kh_authority_personalise(a, &t, (enum kh_role)role, ua, iss)) != KH_OK)
		goto out;
	/* The module exists only in memory until here: a failure above leaves no file behind. */
	*what = card_path;
	if ((r = kh_softmod_save(sm, card_path, key_path)) != KH_OK)
		goto out;
	*issued_ua = iss->ua;
out:
	free(iss);
	kh_softmod_free(sm);
	kh_authority_free(a);
	return r;
}

kh_err kh_cli_echo(struct kh_transport *cam, struct kh_transport *card)
{
	uint8_t inner[64], out[KH_APDU_MAX_RESP], msg[16];
	struct kh_wr w;
	size_t n;
	kh_err r;

	if ((r = kh_random(msg, sizeof msg)) != KH_OK)
		return r;
	kh_wr_init(&w, inner, sizeof inner);
	if ((r = kh_apdu_build(&w, KH_CLA, KH_INS_ECHO, 0, 0, msg, sizeof msg, 0)) != KH_OK)
		return r;
	if ((r = kh_host_card_cmd(cam, card, inner, w.len, out, sizeof out, &n)) != KH_OK)
		return r;
	if (n != sizeof msg + 2 || !kh_ct_eq(out, msg, sizeof msg) || out[n - 2] != 0x90 || out[n - 1] != 0)
		return KH_ERR_FORMAT;
	return KH_OK;
}

int kh_cli_parse_time(const char *s, uint64_t *v)
{
	uint64_t n = 0, now = (uint64_t)time(NULL);
	if (strncmp(s, "now", 3) != 0)
		return kh_cli_parse_num(s, UINT64_MAX / 2, v);
	if (s[3] == 0) {
		*v = now;
		return 0;
	}
	if ((s[3] != '+' && s[3] != '-') || kh_cli_parse_num(s + 4, UINT32_MAX * 100ull, &n) != 0)
		return -1;
	if (s[3] == '-' && n > now)
		return -1;
	*v = s[3] == '+' ? now + n : now - n;
	return 0;
}

int kh_cli_parse_period(const char *start, const char *end, uint64_t *s, uint64_t *e)
{
	uint64_t n;

	if (start[0] == '+') {
		if (kh_cli_parse_num(start + 1, UINT32_MAX * 100ull, &n) != 0)
			return -1;
		*s = (uint64_t)time(NULL) + n;
	} else if (kh_cli_parse_time(start, s) != 0) {
		return -1;
	}
	if (end[0] == '+') {
		if (kh_cli_parse_num(end + 1, UINT32_MAX * 100ull, &n) != 0)
			return -1;
		*e = *s + n;
	} else if (kh_cli_parse_time(end, e) != 0) {
		return -1;
	}
	return *e > *s ? 0 : -2;
}

const char *kh_cli_twice(const struct option *opts, int c, unsigned char seen[static 512])
{
	for (const struct option *o = opts; o->name; o++) {
		if (o->val != c || o->has_arg != required_argument || c < 0 || c >= 512)
			continue;
		if (seen[c])
			return o->name;
		seen[c] = 1;
		return NULL;
	}
	return NULL;
}

int kh_cli_read_token(const char *path, char **tok)
{
	uint8_t *data = NULL;
	size_t len = 0, n;
	int ok = 1;
	kh_err r;

	if ((r = kh_keyfile_read(path, 4096, &data, &len)) != KH_OK)
		return kh_cli_fail(path, r);
	n = len;
	while (n && (data[n - 1] == '\n' || data[n - 1] == '\r'))
		n--;
	for (size_t i = 0; i < n; i++)
		if (data[i] <= 0x20 || data[i] >= 0x7f) /* it goes into a header line */
			ok = 0;
	if (!ok || n == 0) {
		kh_file_free(data, len);
		fprintf(stderr, "keyhole: %s: not a token (one line of visible ASCII characters)\n", path);
		return KH_EXIT_FAIL;
	}
	if (!(*tok = malloc(n + 1))) {
		kh_file_free(data, len);
		return kh_cli_fail(path, KH_ERR_NOMEM);
	}
	memcpy(*tok, data, n);
	(*tok)[n] = 0;
	kh_file_free(data, len);
	return KH_EXIT_OK;
}

void kh_cli_free_token(char *tok)
{
	if (tok) {
		kh_wipe(tok, strlen(tok));
		free(tok);
	}
}

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

volatile sig_atomic_t *kh_cli_stop_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return &stop_flag;
}
