/*
 * Shared pieces of the `keyhole` command: the subcommand table type, the two ways a command
 * ends badly (usage: exit 2; failure: exit 1, one line on stderr), and opening a module named on
 * the command line (a card file run in-process, or unix:PATH for a module daemon).
 */
#ifndef KH_CLI_H
#define KH_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keyhole/err.h"
#include "keyhole/transport.h"

#define KH_EXIT_OK 0
#define KH_EXIT_FAIL 1
#define KH_EXIT_USAGE 2

struct kh_cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help; /* one line */
};

/* Run argv[1] from tab; prints the table for --help / -h / help; usage error for anything else. */
int kh_cli_dispatch(const char *prog, const struct kh_cli_cmd *tab, size_t n, int argc, char **argv);
void kh_cli_list(FILE *f, const char *prog, const struct kh_cli_cmd *tab, size_t n);
/* "keyhole <prog>: <message>" plus "try 'keyhole <prog> --help'"; returns KH_EXIT_USAGE. */
int kh_cli_usage(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "keyhole: <what>: <error message>" (a database URL in what shown without its password,
 * kh_store_url_safe); returns KH_EXIT_FAIL. */
int kh_cli_fail(const char *what, kh_err e);
/*
 * A transport stream is binary: when no output was named (out NULL) and standard output is a
 * terminal, prints "keyhole <prog>: refusing to write a transport stream to a terminal" (a usage
 * error) and returns KH_EXIT_USAGE; 0 otherwise. An explicit "-" always writes.
 */
int kh_cli_refuse_tty_out(const char *prog, const char *out);
/*
 * Numbers on the command line are written one way in every command (docs/cli-options.md):
 * decimal, or hexadecimal after 0x; never octal, no sign, no spaces, the whole string. Returns 0
 * and *v when s is such a number no greater than max, -1 otherwise.
 */
int kh_cli_parse_num(const char *s, uint64_t max, uint64_t *v);
/*
 * A unique address is always hexadecimal: 8 digits as 'card info' prints it (0000000C), or 0x
 * and 1 to 8 digits (0xC). A short form without 0x (12, 0C) is refused, so that no one's
 * decimal is read as hexadecimal. 0 is refused (no module has it). Returns 0 or -1.
 */
int kh_cli_parse_ua(const char *s, uint32_t *v);
/* The message a refused UA gets, for kh_cli_usage("%s takes ... %s", opt, KH_CLI_UA_FORMS). */
#define KH_CLI_UA_FORMS "8 hexadecimal digits as 'card info' prints it (0000000C), or 0x and 1 to 8 (0xC)"
/*
 * A time on the command line (docs/cli-options.md): Unix seconds, now, now+N or now-N (N
 * seconds). Returns 0 and *v, -1 for anything else.
 */
int kh_cli_parse_time(const char *s, uint64_t *v);
/*
 * A period: START is a time (kh_cli_parse_time) or +N (N seconds from now); END is a time or +N
 * (N seconds after START). Returns 0, -1 for a field that is none of these, -2 for END not after
 * START.
 */
int kh_cli_parse_period(const char *start, const char *end, uint64_t *s, uint64_t *e);
struct option;
/*
 * An option that takes one value may be given once: a second one would silently replace the
 * first. Returns the option's long name when c (getopt_long's answer) is such an option seen
 * before in this command line (seen: 512 zeroed bytes, one per answer), else NULL. Options that
 * accumulate (--emm, --entitle, ...) are not asked about; flags may be repeated.
 */
const char *kh_cli_twice(const struct option *opts, int c, unsigned char seen[static 512]);
/*
 * The operator's bearer token from a private file (kh_keyfile_read: refused when group or others
 * may read it): one line of visible ASCII characters, its newline dropped. *tok is a
 * NUL-terminated copy (wipe and free it with kh_cli_free_token). Returns KH_EXIT_OK, or
 * KH_EXIT_FAIL after one line on stderr naming the file (never its content).
 */
int kh_cli_read_token(const char *path, char **tok);
/* Wipe and free a token from kh_cli_read_token; NULL does nothing. */
void kh_cli_free_token(char *tok);
/* 1 when argv holds -h or --help (checked before anything else runs). */
int kh_cli_wants_help(int argc, char **argv);
/*
 * An output path that names something other than a regular file (a device such as /dev/null, a
 * FIFO, a socket) is written in place: a temporary file renamed over it would replace the device
 * with a regular file, and a reader on the FIFO would get nothing. Returns the descriptor opened
 * for writing (>= 0), -1 when path is a regular file or does not exist (write a temporary file
 * and rename it), -2 when it could not be opened (errno says why).
 */
int kh_cli_open_special(const char *path);
/* "HOST:PORT" or "[V6]:PORT" into host (cap bytes) and port: 0, or -1 when it is not that. */
int kh_cli_parse_listen(const char *s, char *host, size_t cap, uint16_t *port);
/* 1 for a numeric IPv4 or IPv6 address, else 0. */
int kh_cli_numeric_host(const char *host);
/*
 * A TCP socket listening on spec ("HOST:PORT", option opt of command prog; port 0: any free one),
 * and "listening=HOST:PORT" on standard output once it is (the port the system gave). Returns the
 * descriptor, -2 after a usage line (spec is not HOST:PORT), -1 after a failure line.
 */
int kh_cli_tcp_listen(const char *prog, const char *opt, const char *spec, int backlog);
/* All of p on a socket (MSG_NOSIGNAL, EINTR retried): 0, or -1 when the peer is gone. */
int kh_cli_send_all(int fd, const uint8_t *p, size_t n);
/* The number option --name of command prog, at most max: KH_EXIT_OK, or KH_EXIT_USAGE (told). */
int kh_cli_num_opt(const char *prog, const char *name, const char *s, uint64_t max, uint64_t *v);
/*
 * The getopt_long loop of a command that takes options only: an option given twice is a usage
 * error (every option takes one value), -h/--help prints help and returns -1, every other option
 * goes to take(ctx, c, optarg), which returns KH_EXIT_OK, a told KH_EXIT_USAGE/KH_EXIT_FAIL, or
 * -1 for an option it does not know; an argument left over is a usage error. Returns KH_EXIT_OK,
 * KH_EXIT_USAGE or KH_EXIT_FAIL (told), or -1 after the help.
 */
int kh_cli_options(const char *prog, int argc, char **argv, const char *shortopts, const struct option *opts,
		   const char *help, int (*take)(void *ctx, int c, const char *arg), void *ctx);
/* 1 for a loopback address: 127.0.0.0/8, ::1, or 127.0.0.0/8 mapped into IPv6. */
int kh_cli_loopback_host(const char *host);
/*
 * --cert and --key before a server starts: the chain's first certificate parses, the key file is
 * private and parses, and is the certificate's. Prints the one-line error naming the file;
 * returns KH_EXIT_OK or KH_EXIT_FAIL.
 */
int kh_cli_check_tls(const char *cert, const char *key);
/*
 * Block SIGINT and SIGTERM (before any thread starts, so that every thread inherits the mask and
 * only sigwait receives them) into set, and ignore SIGPIPE.
 */
void kh_cli_block_stop_signals(sigset_t *set);
/*
 * A server that started: print 'listening=HOST:PORT' (the port bound), wait for SIGINT or
 * SIGTERM in set, log PREFIX.stop and stop h gracefully.
 */
struct kh_http;
void kh_cli_serve_until_signal(const char *prefix, const char *host, struct kh_http *h, sigset_t *set);
/*
 * A stream's output (headend scramble, decoder play): standard output for NULL or "-"; a
 * device, FIFO or socket written in place (kh_cli_open_special); any other path a temporary
 * file beside it (mode 0666 less the umask), renamed over the path only by kh_cli_out_commit, so
 * a run that fails leaves no half-written file and the old one untouched.
 */
struct kh_cli_out {
	int fd;    /* where to write */
	char *tmp; /* the temporary file's name, NULL when written in place */
};
/* KH_EXIT_OK, or KH_EXIT_FAIL with one line on stderr naming path. */
int kh_cli_out_open(struct kh_cli_out *o, const char *path);
/* All written: fsync, close and rename the temporary file over path (nothing to do in place).
 * KH_EXIT_OK, or KH_EXIT_FAIL with one line on stderr; kh_cli_out_close is still needed. */
int kh_cli_out_commit(struct kh_cli_out *o, const char *path);
/* On every path out: close what is open; a temporary file not committed is removed. */
void kh_cli_out_close(struct kh_cli_out *o);

struct kh_softmod;
/*
 * A module named by spec: "unix:PATH" connects to a daemon, anything else is a card file. On
 * error, what (whatlen bytes) receives the file or socket the error is about.
 */
KH_WARN_UNUSED kh_err kh_cli_open_module(const char *spec, const char *key, struct kh_softmod **sm,
					 struct kh_transport *t, char *what, size_t whatlen);
/*
 * Personalise a new software module from the authority in authdir and write it to card_path
 * (key file key_path, NULL for the default). ua 0 takes the next address; *issued_ua says which.
 * On error *what names what failed (the card path, the authority, "personalisation").
 */
KH_WARN_UNUSED kh_err kh_cli_issue(const char *authdir, int role, uint32_t ua, const char *card_path,
				   const char *key_path, uint32_t *issued_ua, const char **what);
/*
 * One sealed ECHO of 16 fresh random bytes to the card through the CAM's channel; KH_OK only when
 * the card answered exactly those bytes and 9000 (KH_ERR_FORMAT otherwise).
 */
KH_WARN_UNUSED kh_err kh_cli_echo(struct kh_transport *cam, struct kh_transport *card);
/* The operator root public key from an authority directory or a root certificate file. */
KH_WARN_UNUSED kh_err kh_cli_root_pk(const char *path, uint8_t pk[static 32]);

int kh_cmd_authority(int argc, char **argv);
/* A daemon's stop: SIGINT and SIGTERM set the flag returned, SIGPIPE is ignored (a client may hang up). */
volatile sig_atomic_t *kh_cli_stop_signals(void);

int kh_cmd_card(int argc, char **argv);
int kh_cmd_processor(int argc, char **argv);
int kh_cmd_dist(int argc, char **argv);
int kh_cmd_escrow(int argc, char **argv);
int kh_cmd_keycenter(int argc, char **argv);
int kh_cmd_seller(int argc, char **argv);
int kh_cmd_buyer(int argc, char **argv);
int kh_cmd_pair(int argc, char **argv);
int kh_cmd_demo(int argc, char **argv);
int kh_cmd_keycard(int argc, char **argv);
int kh_cmd_headend(int argc, char **argv);
int kh_cmd_ecmg(int argc, char **argv);
int kh_cmd_emmg(int argc, char **argv);
int kh_cmd_decoder(int argc, char **argv);
int kh_cmd_ts(int argc, char **argv);
int kh_cmd_serve(int argc, char **argv);
int kh_cmd_center(int argc, char **argv);
int kh_cmd_store(int argc, char **argv);

/* The options of a subcommand whose options each take one value, stored by index. */
struct kh_cli_optv {
	const char *name;
	const char **val;
	int required;
	char letter; /* its short option, or 0 */
};
/* getopt over ov (values only, plus --help): KH_EXIT_OK to go on, -1 after --help, else the exit
 * status (a one-line usage error printed). */
int kh_cli_optv_parse(const char *prog, const char *help, struct kh_cli_optv *ov, size_t n, int argc, char **argv);
struct kh_store;
/* Open the store db, made if missing (*made then 1, so that a failure can remove it). */
int kh_cli_db_open(const char *db, struct kh_store **st, int *made);
/* Close it; when rc is a failure and the command made the database, remove it. */
void kh_cli_db_close(const char *db, struct kh_store *st, int made, int rc);

/*
 * Run a center service's `serve` once its options are parsed: check the address (numeric; beyond
 * loopback only with TLS) and the database, make the service, serve its routes until SIGTERM or
 * SIGINT, free it. A database the failed start itself created is removed. Returns the exit status.
 */
struct kh_cli_serve {
	const char *prog;           /* "dist serve", for usage errors */
	const char *name;           /* log events' prefix ("dist") */
	const char *what;           /* the service named in errors ("distribution server") */
	const char *db, *dir, *listen, *listen_default, *cert, *key;
	unsigned threads, open_rate, open_burst;
	size_t raw_body_limit;      /* the largest body of a raw route (0: none larger than JSON's) */
	kh_err (*make)(void *ctx, void **svc, const char **what); /* what: "database" or a path */
	kh_err (*routes)(void *svc, struct kh_http *h);
	kh_err (*started)(void *svc); /* after the server listens (NULL: nothing) */
	void (*free)(void *svc);
	void *ctx;
};
int kh_cli_serve_run(const struct kh_cli_serve *c);
/*
 * The options every service's serve takes, as getopt_long answers them: 'D' --db, 'd' --dir,
 * 'l' --listen, 'C' --cert, 'K' --key, 't' --threads, 'O' --open-rate, 'U' --open-burst, into c.
 * KH_EXIT_OK when taken, -1 for another option, else the usage error's status (one line printed).
 */
int kh_cli_serve_option(struct kh_cli_serve *c, int opt, const char *arg);
/*
 * A center service's `init`: --authority DIR and --dir DIR parsed (help on --help), the service's
 * identity made in DIR with the authority's certificate for role, and 'NAME SERIAL' printed (NAME
 * the role's name). The command's exit status.
 */
int kh_cli_identity_init(const char *prog, const char *help, int role, int argc, char **argv);
/*
 * A serve command's whole command line: getopt_long over opts (short options "l:t:h"), each
 * option at most once, the shared ones into c, the others to own(ctx, opt, arg) (KH_EXIT_OK when
 * taken, -1 for an option it does not know, else the usage error's status), --help printing help.
 * KH_EXIT_OK to serve, -1 after --help, else the exit status.
 */
int kh_cli_serve_parse(struct kh_cli_serve *c, const struct option *opts, const char *help, int argc, char **argv,
		       int (*own)(void *ctx, int opt, const char *arg), void *ctx);

#endif
