/*
 * What every HTTP service command (`keyhole serve`, `keyhole dist serve`) checks before it starts:
 * the --listen address, whether it is loopback, and the --cert/--key pair (src/cli/cli.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "keyhole/authority.h"
#include "keyhole/cert.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/identity.h"
#include "keyhole/log.h"
#include "keyhole/store.h"

/* Largest PEM file read for --cert and --key (the HTTP server reads them with the same bound). */
#define PEM_MAX (1024 * 1024)

/* "HOST:PORT" or "[V6]:PORT" into host (cap bytes) and port. */
int kh_cli_parse_listen(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon, *h = s;
	size_t hn;
	char *end;
	unsigned long p;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		h = s + 1;
		hn = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		hn = (size_t)(colon - s);
	}
	if (hn == 0 || hn >= cap || colon[1] < '0' || colon[1] > '9')
		return -1;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (*end || errno || p > 65535)
		return -1;
	memcpy(host, h, hn);
	host[hn] = 0;
	*port = (uint16_t)p;
	return 0;
}

/* A numeric address (IPv4 or IPv6): 1, else 0. */
int kh_cli_numeric_host(const char *host)
{
	unsigned char a[16];

	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* A loopback address: 127.0.0.0/8, ::1, or 127.0.0.0/8 mapped into IPv6. */
int kh_cli_loopback_host(const char *host)
{
	unsigned char a[16];
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (inet_pton(AF_INET, host, a) == 1)
		return a[0] == 127;
	if (inet_pton(AF_INET6, host, a) != 1)
		return 0;
	if (memcmp(a, mapped, sizeof mapped) == 0)
		return a[12] == 127;
	for (int i = 0; i < 15; i++)
		if (a[i] != 0)
			return 0;
	return a[15] == 1;
}

/* An encrypted key is refused, never prompted for: a server starts unattended. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/*
 * --cert and --key before anything is created: the chain's first certificate parses, the key
 * file is private and parses, and the key is the certificate's (else every handshake fails).
 * Prints the one-line error naming the file; returns KH_EXIT_OK or KH_EXIT_FAIL.
 */
int kh_cli_check_tls(const char *cert, const char *key)
{
	uint8_t *cd = NULL, *kd = NULL;
	size_t cn = 0, kn = 0;
	BIO *b = NULL;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	int rc = KH_EXIT_FAIL;
	kh_err r;

	if (!kh_http_tls_supported()) {
		fprintf(stderr, "keyhole: %s: this program's HTTP server was built without TLS\n", cert);
		return KH_EXIT_FAIL;
	}
	if ((r = kh_file_read(cert, PEM_MAX, &cd, &cn)) != KH_OK)
		return kh_cli_fail(cert, r);
	if ((r = kh_keyfile_read(key, PEM_MAX, &kd, &kn)) != KH_OK) {
		kh_file_free(cd, cn);
		return kh_cli_fail(key, r);
	}
	if (cn > INT32_MAX || kn > INT32_MAX || (b = BIO_new_mem_buf(cd, (int)cn)) == NULL ||
	    (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) == NULL) {
		fprintf(stderr, "keyhole: %s: not a PEM certificate\n", cert);
		goto out;
	}
	BIO_free(b);
	if ((b = BIO_new_mem_buf(kd, (int)kn)) == NULL ||
	    (pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)) == NULL) {
		fprintf(stderr, "keyhole: %s: not a PEM private key (or one under a passphrase)\n", key);
		goto out;
	}
	if (X509_check_private_key(x, pk) != 1) {
		fprintf(stderr, "keyhole: %s: this private key is not the key of the certificate %s\n", key, cert);
		goto out;
	}
	rc = KH_EXIT_OK;
out:
	EVP_PKEY_free(pk);
	X509_free(x);
	BIO_free(b);
	kh_file_free(cd, cn);
	kh_file_free(kd, kn);
	return rc;
}

void kh_cli_block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void kh_cli_serve_until_signal(const char *prefix, const char *host, struct kh_http *h, sigset_t *set)
{
	const char *l = strchr(host, ':') ? "[" : "", *r = strchr(host, ':') ? "]" : "";
	char ev[64];
	int sig = 0;

	printf("listening=%s%s%s:%u\n", l, host, r, (unsigned)kh_http_port(h));
	fflush(stdout);
	while (sigwait(set, &sig) != 0)
		;
	snprintf(ev, sizeof ev, "%s.stop", prefix);
	kh_log_info(ev, "signal=%s", sig == SIGINT ? "INT" : "TERM");
	kh_http_stop(h);
}

int kh_cli_serve_run(const struct kh_cli_serve *c)
{
	const char *P = c->prog, *what = NULL;
	struct kh_http_config hcfg = {0};
	struct kh_http *h = NULL;
	void *svc = NULL;
	char host[64], why[4400] = "";
	uint16_t port = 0;
	int rc, db_existed = 1;
	sigset_t set;
	kh_err r;

	if (!c->db || !c->dir)
		return kh_cli_usage(P, "--db and --dir are required");
	if (kh_cli_parse_listen(c->listen, host, sizeof host, &port) != 0)
		return kh_cli_usage(P, "--listen takes HOST:PORT (numeric), e.g. %s", c->listen_default);
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (!kh_cli_numeric_host(host))
		return kh_cli_usage(P, "--listen: '%s' is not a numeric address (say 127.0.0.1, [::1] or 0.0.0.0)", host);
	if ((c->cert == NULL) != (c->key == NULL))
		return kh_cli_usage(P, "--cert and --key go together");
	/* Credentials and tokens never cross a network in clear. */
	if (!kh_cli_loopback_host(host) && !c->cert)
		return kh_cli_usage(P, "--listen %s is not loopback: serve it over TLS (--cert and --key)", host);

	kh_cli_block_stop_signals(&set);
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level((enum kh_log_level)(KH_LOG_ERROR + 1));
	if (c->cert && kh_cli_check_tls(c->cert, c->key) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (kh_store_check(c->db, &db_existed, why, sizeof why) != KH_OK) {
		fprintf(stderr, "keyhole: %s\n", why[0] ? why : c->db);
		return KH_EXIT_FAIL;
	}
	if ((r = c->make(c->ctx, &svc, &what)) != KH_OK) {
		rc = kh_cli_fail(what ? (strcmp(what, "database") == 0 ? c->db : what) : c->what, r);
		goto out;
	}
	hcfg.host = host;
	hcfg.port = port;
	hcfg.cert_file = c->cert;
	hcfg.key_file = c->key;
	hcfg.threads = c->threads;
	hcfg.open_rate = c->open_rate;
	hcfg.open_burst = c->open_burst;
	hcfg.raw_body_limit = c->raw_body_limit;
	if ((r = kh_http_new(&hcfg, &h)) != KH_OK) {
		rc = kh_cli_fail("http server", r);
		goto out;
	}
	if ((r = c->routes(svc, h)) != KH_OK) {
		rc = kh_cli_fail("routes", r);
		goto out;
	}
	if ((r = kh_http_start(h)) != KH_OK) {
		rc = kh_cli_fail(c->listen, r);
		goto out;
	}
	if (c->started && (r = c->started(svc)) != KH_OK) {
		rc = kh_cli_fail(c->what, r);
		goto out;
	}
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level(KH_LOG_INFO);
	port = kh_http_port(h);
	{
		char ev[32];
		snprintf(ev, sizeof ev, "%s.start", c->name);
		kh_log_info(ev, "listen=%s%s%s:%u tls=%d threads=%u", strchr(host, ':') ? "[" : "", host,
			    strchr(host, ':') ? "]" : "", (unsigned)port, c->cert != NULL, c->threads);
	}
	kh_cli_serve_until_signal(c->name, host, h, &set);
	rc = KH_EXIT_OK;
out:
	kh_http_free(h);
	if (svc)
		c->free(svc);
	if (rc != KH_EXIT_OK && !db_existed && kh_store_remove(c->db) != KH_OK)
		fprintf(stderr, "keyhole: %s: could not remove the database this failed start created\n", c->db);
	return rc;
}

int kh_cli_serve_option(struct kh_cli_serve *c, int opt, const char *arg)
{
	uint64_t v;

	switch (opt) {
	case 'D': c->db = arg; return KH_EXIT_OK;
	case 'd': c->dir = arg; return KH_EXIT_OK;
	case 'l': c->listen = arg; return KH_EXIT_OK;
	case 'C': c->cert = arg; return KH_EXIT_OK;
	case 'K': c->key = arg; return KH_EXIT_OK;
	case 't':
		if (kh_cli_parse_num(arg, 1024, &v) != 0 || v < 1)
			return kh_cli_usage(c->prog, "--threads takes a number from 1 to 1024");
		c->threads = (unsigned)v;
		return KH_EXIT_OK;
	case 'O':
	case 'U':
		if (kh_cli_parse_num(arg, 100000, &v) != 0 || (opt == 'U' && v < 1))
			return kh_cli_usage(c->prog, "%s takes a number from %d to 100000",
					    opt == 'O' ? "--open-rate" : "--open-burst", opt == 'O' ? 0 : 1);
		if (opt == 'O')
			c->open_rate = (unsigned)v;
		else
			c->open_burst = (unsigned)v;
		return KH_EXIT_OK;
	default: return -1;
	}
}

int kh_cli_serve_parse(struct kh_cli_serve *c, const struct option *opts, const char *help, int argc, char **argv,
		       int (*own)(void *ctx, int opt, const char *arg), void *ctx)
{
	unsigned char seen[512] = {0};
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+l:t:h", opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, opt, seen);
		int rc;

		if (dup)
			return kh_cli_usage(c->prog, "--%s is given twice (it takes one value)", dup);
		if (opt == 'h') {
			fputs(help, stdout);
			return -1;
		}
		if ((rc = kh_cli_serve_option(c, opt, optarg)) < 0 && (opt == '?' || (rc = own(ctx, opt, optarg)) < 0))
			return kh_cli_usage(c->prog, "unknown or incomplete option '%s'", argv[optind - 1]);
		if (rc != KH_EXIT_OK)
			return rc;
	}
	if (optind != argc)
		return kh_cli_usage(c->prog, "unexpected argument '%s'", argv[optind]);
	return KH_EXIT_OK;
}

int kh_cli_identity_init(const char *prog, const char *help, int role, int argc, char **argv)
{
	const char *auth = NULL, *dir = NULL;
	struct kh_cli_optv ov[] = {{"authority", &auth, 1, 'a'}, {"dir", &dir, 1, 0}};
	struct kh_authority *a = NULL;
	uint32_t serial = 0;
	int rc;
	kh_err r;

	if ((rc = kh_cli_optv_parse(prog, help, ov, 2, argc, argv)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((r = kh_authority_open(auth, &a)) != KH_OK)
		return kh_cli_fail(auth, r);
	r = kh_identity_new(a, dir, (enum kh_role)role, &serial);
	kh_authority_free(a);
	if (r != KH_OK)
		return kh_cli_fail(dir, r);
	printf("%s %08X\n", kh_role_name((enum kh_role)role), (unsigned)serial);
	return KH_EXIT_OK;
}

int kh_cli_tcp_listen(const char *prog, const char *opt, const char *spec, int backlog)
{
	char host[256], port_s[8];
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t slen = sizeof sa;
	uint16_t port = 0;
	int fd = -1, one = 1;

	if (kh_cli_parse_listen(spec, host, sizeof host, &port) != 0) {
		kh_cli_usage(prog, "%s: '%s' is not HOST:PORT", opt, spec);
		return -2;
	}
	snprintf(port_s, sizeof port_s, "%u", (unsigned)port);
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, port_s, &hints, &ai) != 0 || !ai) {
		fprintf(stderr, "keyhole: %s: cannot resolve %s\n", prog, host);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &slen) != 0) {
		fprintf(stderr, "keyhole: %s: cannot listen on %s: %s\n", prog, spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
					      : ((struct sockaddr_in *)&sa)->sin_port);
	printf("listening=%s:%u\n", host, (unsigned)port);
	fflush(stdout);
	return fd;
}

int kh_cli_options(const char *prog, int argc, char **argv, const char *shortopts, const struct option *opts,
		   const char *help, int (*take)(void *ctx, int c, const char *arg), void *ctx)
{
	unsigned char seen[512] = {0};
	int c, rc;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		const char *dup = kh_cli_twice(opts, c, seen);
		if (dup)
			return kh_cli_usage(prog, "--%s is given twice (it takes one value)", dup);
		if (c == 'h') {
			fputs(help, stdout);
			return -1;
		}
		if ((rc = take(ctx, c, optarg)) < 0)
			return kh_cli_usage(prog, "unknown or incomplete option '%s'", argv[optind - 1]);
		if (rc != KH_EXIT_OK)
			return rc;
	}
	if (optind != argc)
		return kh_cli_usage(prog, "unexpected argument '%s'", argv[optind]);
	return KH_EXIT_OK;
}

int kh_cli_send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int kh_cli_num_opt(const char *prog, const char *name, const char *s, uint64_t max, uint64_t *v)
{
	if (kh_cli_parse_num(s, max, v) != 0)
		return kh_cli_usage(prog, "--%s: '%s' is not a number up to %llu", name, s, (unsigned long long)max);
	return KH_EXIT_OK;
}
