/*
 * keyhole serve: the embedded default's center process. It hosts the management
 * center (src/center/sms/, keyhole/sms.h) on one HTTP/1.1 + JSON port under /v1, with /metrics,
 * until SIGTERM or SIGINT, and then stops gracefully: requests in flight are answered. This file
 * is options, signals and the ready line; see keyhole-serve(1).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "keyhole/file.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/sms.h"
#include "keyhole/store.h"

/* The open endpoints' budget per client address unless --open-rate / --open-burst say. */
#define SERVE_OPEN_RATE 50u
#define SERVE_OPEN_BURST 200u

static const char serve_help[] =
	"usage: keyhole serve --db DB --authority DIR [--listen HOST:PORT] [--cert FILE --key FILE]\n"
	"           [--threads N] [--token-file FILE] [--no-operator-auth]\n"
	"           [--session-ttl SECONDS] [--bulk-chunk N] [--rights-ttl DAYS]\n"
	"           [--open-rate N] [--open-burst N] [--header-timeout SECONDS] [--idempotency-ttl SECONDS]\n"
	"\n"
	"Serve the management center's operator API (HTTP/1.1 + JSON under /v1, /metrics, and the\n"
	"probes /healthz: serving, /readyz: database writable) until SIGTERM or SIGINT, then stop\n"
	"after answering the requests in flight. When ready, print one\n"
	"line 'listening=HOST:PORT' on standard output (the port actually bound: useful with port 0).\n"
	"Logs go to standard error, one key=value line per event (level info unless KEYHOLE_LOG says).\n"
	"\n"
	"      --db DB            the center's database: an SQLite file, FILE or sqlite:FILE (created\n"
	"                         with mode 0600; it, its -wal and its -shm must be private and writable),\n"
	"                         or PostgreSQL, postgresql://... as libpq takes it (service files, PG*\n"
	"                         variables and ~/.pgpass too)\n"
	"  -a, --authority DIR    the operator authority (root.crt, master.key)\n"
	"  -l, --listen HOST:PORT numeric address and port (default 127.0.0.1:8480; [::1]:PORT for IPv6;\n"
	"                         localhost means 127.0.0.1; port 0 picks a free one)\n"
	"      --cert FILE        PEM certificate chain: serve HTTPS (TLS 1.3) ...\n"
	"      --key FILE         ... with this PEM private key (private to its owner, and the key of the\n"
	"                         chain's first certificate)\n"
	"  -t, --threads N        connections served at once, one thread each, 1 to 1024 (default 256)\n"
	"  -T, --token-file FILE  the operator's bearer token (a key file, private to its owner, 16 or\n"
	"                         more bytes; a final newline is ignored): the operator endpoints then\n"
	"                         want 'Authorization: Bearer TOKEN'. Without it they answer anyone who\n"
	"                         can reach the port, and a warning says so. Upload sessions, the EMM\n"
	"                         queues and /metrics stay open: what they carry is signed or sealed.\n"
	"                         On an address other than loopback --cert is required (the operator's\n"
	"                         data, the service keys and the token must not cross a network in\n"
	"                         clear), and so is the token...\n"
	"      --no-operator-auth ... unless this says the operator API is protected some other way\n"
	"                         (not with --token-file)\n"
	"      --session-ttl S    an upload session not used within S seconds is refused, 1 to 86400\n"
	"                         (default 600)\n"
	"      --open-rate N      requests per second one client address may make to the open endpoints\n"
	"                         (upload sessions, the EMM queues), 0 to 100000, 0 for no limit\n"
	"                         (default 50); beyond it: 429 with Retry-After\n"
	"      --open-burst N     requests one address may make at once before --open-rate applies,\n"
	"                         1 to 100000 (default 200)\n"
	"      --header-timeout S a request's head must be in within S seconds, 1 to 300 (default 10),\n"
	"                         its body within S more plus 1 s per 32 KiB; a connection that misses\n"
	"                         it is closed, and its address refused for 3 x S seconds\n"
	"      --idempotency-ttl S  how long a request's Idempotency-Key is remembered, 60 to 2592000\n"
	"                         seconds (default 86400); older answers are deleted\n"
	"      --sessions-per-card N  obsolete (upload sessions are stored only once used): accepted,\n"
	"                         1 to 64, and ignored\n"
	"      --bulk-chunk N     subscribers per transaction of a bulk subscription, 1 to 100000\n"
	"                         (default 2000)\n"
	"      --rights-ttl DAYS  a card is sent subscription rights at most DAYS ahead, 1 to 3650\n"
	"                         (default 31), renewed every DAYS/2 by a sweep the server runs hourly\n"
	"                         (and POST /v1/rights/renew): a card cut off from its EMMs loses its\n"
	"                         rights at most DAYS after the last renewal it received\n";

int kh_cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'D'},
					     {"authority", required_argument, NULL, 'a'},
					     {"listen", required_argument, NULL, 'l'},
					     {"cert", required_argument, NULL, 'C'},
					     {"key", required_argument, NULL, 'K'},
					     {"threads", required_argument, NULL, 't'},
					     {"token-file", required_argument, NULL, 'T'},
					     {"no-operator-auth", no_argument, NULL, 'N'},
					     {"session-ttl", required_argument, NULL, 'S'},
					     {"sessions-per-card", required_argument, NULL, 'P'},
					     {"bulk-chunk", required_argument, NULL, 'B'},
					     {"rights-ttl", required_argument, NULL, 'R'},
					     {"open-rate", required_argument, NULL, 'O'},
					     {"open-burst", required_argument, NULL, 'U'},
					     {"header-timeout", required_argument, NULL, 'H'},
					     {"idempotency-ttl", required_argument, NULL, 'I'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *db = NULL, *authdir = NULL, *listen = "127.0.0.1:8480", *cert = NULL, *key = NULL, *what = NULL;
	const char *tokenfile = NULL;
	int no_auth = 0, db_existed = 1;
	char why[4400];
	uint8_t *token = NULL;
	size_t tokenlen = 0, tokenread = 0;
	struct kh_sms_config scfg = {0};
	struct kh_http_config hcfg = {0};
	struct kh_sms *sms = NULL;
	struct kh_http *h = NULL;
	char host[64];
	uint16_t port = 0;
	unsigned long threads = KH_HTTP_THREADS;
	unsigned open_rate = SERVE_OPEN_RATE;
	int sessions_per_card = 0;
	sigset_t set;
	int c, rc;
	kh_err r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+a:l:t:T:h", opts, NULL)) != -1) {
		switch (c) {
		case 'D': db = optarg; break;
		case 'a': authdir = optarg; break;
		case 'l': listen = optarg; break;
		case 'C': cert = optarg; break;
		case 'K': key = optarg; break;
		case 'T': tokenfile = optarg; break;
		case 'N': no_auth = 1; break;
		case 't': {
			uint64_t v;
			if (kh_cli_parse_num(optarg, 1024, &v) != 0 || v < 1)
				return kh_cli_usage("serve", "--threads takes a number from 1 to 1024");
			threads = (unsigned long)v;
			break;
		}
		case 'S':
		case 'P':
		case 'B':
		case 'R':
		case 'O':
		case 'U':
		case 'H':
		case 'I': {
			/* the limits of the center (struct kh_sms_config) and of the HTTP server (struct
			 * kh_http_config), each with its range */
			uint64_t v;
			unsigned long min = c == 'O' ? 0 : c == 'I' ? KH_SMS_IDEM_TTL_MIN : 1;
			unsigned long max = c == 'S'		? 86400
					    : c == 'P'		? 64
					    : c == 'B'		? KH_SMS_BULK_CHUNK_MAX
					    : c == 'R'		? KH_SMS_RIGHTS_TTL_MAX / 86400
					    : c == 'O' || c == 'U' ? 100000
					    : c == 'H'		? 300
								: KH_SMS_IDEM_TTL_MAX;
			const char *name = c == 'S'   ? "--session-ttl"
					   : c == 'P' ? "--sessions-per-card"
					   : c == 'B' ? "--bulk-chunk"
					   : c == 'R' ? "--rights-ttl"
					   : c == 'O' ? "--open-rate"
					   : c == 'U' ? "--open-burst"
					   : c == 'H' ? "--header-timeout"
						      : "--idempotency-ttl";
			if (kh_cli_parse_num(optarg, max, &v) != 0 || v < min)
				return kh_cli_usage("serve", "%s takes a number from %lu to %lu", name, min, max);
			if (c == 'S')
				scfg.upload_session_ttl = (unsigned)v;
			else if (c == 'P')
				sessions_per_card = 1; /* obsolete: checked, then ignored */
			else if (c == 'B')
				scfg.bulk_chunk = (unsigned)v;
			else if (c == 'R')
				scfg.rights_ttl = (unsigned)v * 86400u;
			else if (c == 'O')
				open_rate = (unsigned)v;
			else if (c == 'U')
				hcfg.open_burst = (unsigned)v;
			else if (c == 'H')
				hcfg.head_timeout_s = (unsigned)v;
			else
				scfg.idempotency_ttl = (unsigned)v;
			break;
		}
		case 'h': fputs(serve_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage("serve", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage("serve", "unexpected argument '%s'", argv[optind]);
	if (!db || !authdir)
		return kh_cli_usage("serve", "--db and --authority are required");
	if (kh_cli_parse_listen(listen, host, sizeof host, &port) != 0)
		return kh_cli_usage("serve", "--listen takes HOST:PORT (numeric), e.g. 127.0.0.1:8480");
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (!kh_cli_numeric_host(host))
		return kh_cli_usage("serve", "--listen: '%s' is not a numeric address (say 127.0.0.1, [::1] or 0.0.0.0)",
				    host);
	if ((cert == NULL) != (key == NULL))
		return kh_cli_usage("serve", "--cert and --key go together");
	if (tokenfile && no_auth)
		return kh_cli_usage("serve", "--token-file and --no-operator-auth exclude each other");
	if (!kh_cli_loopback_host(host)) {
		/*
		 * Beyond loopback the operator API moves money and rights and hands out the service
		 * keys: always over TLS, and behind the token unless the operator says it is guarded
		 * some other way.
		 */
		if (!cert)
			return kh_cli_usage("serve", "--listen %s is not loopback: serve it over TLS (--cert and --key)",
					    host);
		if (!tokenfile && !no_auth)
			return kh_cli_usage("serve", "--listen %s is not loopback: give --token-file (or --no-operator-auth)",
					    host);
	}

	/*
	 * The signals that stop the server are blocked before any thread starts, so every thread
	 * inherits the mask and only sigwait below receives them.
	 */
	kh_cli_block_stop_signals(&set);

	/*
	 * A start that fails says so in one line (keyhole: WHAT: error), so the store's own error
	 * log stays quiet until the server runs, unless KEYHOLE_LOG asks for it.
	 */
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level((enum kh_log_level)(KH_LOG_ERROR + 1));
	scfg.db = db;
	scfg.authority_dir = authdir;
	/* Every input is checked before anything is created: a start that fails leaves no file. */
	if (cert && kh_cli_check_tls(cert, key) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	if (kh_store_check(db, &db_existed, why, sizeof why) != KH_OK) {
		fprintf(stderr, "keyhole: %s\n", why);
		return KH_EXIT_FAIL;
	}
	if (tokenfile) {
		if ((r = kh_keyfile_read(tokenfile, 4096, &token, &tokenread)) != KH_OK)
			return kh_cli_fail(tokenfile, r);
		tokenlen = tokenread;
		while (tokenlen && (token[tokenlen - 1] == '\n' || token[tokenlen - 1] == '\r'))
			tokenlen--;
		if (tokenlen < 16) {
			kh_file_free(token, tokenread);
			fprintf(stderr, "keyhole: %s: an operator token has at least 16 bytes\n", tokenfile);
			return KH_EXIT_FAIL;
		}
		scfg.operator_token = token;
		scfg.token_len = tokenlen;
	}
	r = kh_sms_new(&scfg, &sms, &what);
	if (token)
		kh_file_free(token, tokenread);
	if (r != KH_OK) {
		rc = kh_cli_fail(what ? what : "management center", r);
		goto out;
	}
	hcfg.host = host;
	hcfg.port = port;
	hcfg.cert_file = cert;
	hcfg.key_file = key;
	hcfg.threads = (unsigned)threads;
	hcfg.open_rate = open_rate;
	if (open_rate && !hcfg.open_burst)
		hcfg.open_burst = SERVE_OPEN_BURST;
	if ((r = kh_http_new(&hcfg, &h)) != KH_OK) {
		rc = kh_cli_fail("http server", r);
		goto out;
	}
	if ((r = kh_sms_add_routes(sms, h)) != KH_OK) {
		rc = kh_cli_fail("routes", r);
		goto out;
	}
	if ((r = kh_http_start(h)) != KH_OK) {
		rc = kh_cli_fail(listen, r);
		goto out;
	}
	/* The rights renewal: at once, then hourly (a window swept already costs a few reads). */
	if ((r = kh_sms_renew_start(sms, 0)) != KH_OK) {
		rc = kh_cli_fail("rights renewal", r);
		goto out;
	}
	/* A server logs its requests: info unless the operator chose a level. */
	if (getenv("KEYHOLE_LOG") == NULL)
		kh_log_set_level(KH_LOG_INFO);
	port = kh_http_port(h);
	if (!db_existed)
		kh_log_info("serve.new_database", "path=%s msg=\"no database was there: a new one was created, with "
			    "service key 1 version 1\"", db);
	kh_log_info("serve.start", "listen=%s%s%s:%u tls=%d threads=%lu operator_auth=%d", strchr(host, ':') ? "[" : "",
		    host, strchr(host, ':') ? "]" : "", (unsigned)port, cert != NULL, threads, tokenfile != NULL);
	if (sessions_per_card)
		kh_log_warn("serve.obsolete_option",
			    "option=--sessions-per-card msg=\"ignored: upload sessions are stored only once used\"");
	if (!tokenfile)
		kh_log_warn("serve.operator_api_open",
			    "msg=\"no --token-file: anyone who reaches this port can run the operator API\"");
	kh_cli_serve_until_signal("serve", host, h, &set);
	rc = KH_EXIT_OK;
out:
	kh_http_free(h);
	kh_sms_free(sms);
	/* A start that failed after creating the database leaves no file behind. */
	if (rc != KH_EXIT_OK && !db_existed && kh_store_remove(db) != KH_OK)
		fprintf(stderr, "keyhole: %s: could not remove the database this failed start created\n", db);
	return rc;
}
