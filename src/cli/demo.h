/*
 * What the two halves of `keyhole demo` share (cmd_demo.c: seed 000's pairing story and the
 * command; demo_paytv.c: the pay-TV story with the management center, seed 001).
 */
#ifndef KH_CLI_DEMO_H
#define KH_CLI_DEMO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* One numbered step of the story on stdout. */
void kh__demo_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Run a subcommand in-process (fn with argv NAME, then the NULL-terminated arguments), its
 * standard output and error in LOGDIR/NAME.out and .err; on a failure its error output is shown
 * with a line naming the step. Returns its exit status.
 */
int kh__demo_run(const char *logdir, const char *name, int (*fn)(int, char **), ...);
/* The same for a step that must be refused: 1 when it exited 1 (its reason in LOGDIR/NAME.err). */
int kh__demo_refused(const char *logdir, const char *name, int (*fn)(int, char **), ...);
/* An act's step that must hold, else the act stops: one line on stderr, KH_EXIT_FAIL. */
#define KH_DEMO_STEP(cond, ...)                                                                    \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "keyhole: demo: " __VA_ARGS__);                            \
			fputc('\n', stderr);                                                       \
			return KH_EXIT_FAIL;                                                       \
		}                                                                                  \
	} while (0)
/* This very binary started as a child process with argv (argv[0] "keyhole", NULL-terminated): 0
 * with *pid, else a line on stderr and -1 (*pid 0). */
int kh__demo_spawn(char *const argv[], pid_t *pid);
/* A child of kh__demo_spawn stopped with SIGTERM and waited for; *pid 0 after (0: nothing). */
void kh__demo_reap(pid_t *pid);
/* The value after "key " on a line of LOGDIR/NAME.out into val (cap bytes): 1 when found. */
int kh__demo_value(const char *logdir, const char *name, const char *key, char *val, size_t cap);

struct kh__demo_paths {
	const char *dir;       /* the demo's directory */
	const char *authority; /* the operator authority */
	const char *cam, *card1, *card2;
	const char *dec;       /* the decoder module (role decoder), for decoder play and buy */
	uint32_t ua1, ua2, ua_dec;
};

/*
 * The pay-TV story on the modules the pairing story issued (their files closed): the center,
 * the operator's API calls, the headend on a real ffmpeg clip, the decoder watching through its
 * decoder module (with the key ladder), a PPV purchase, the card replacement and the recovery.
 * KH_EXIT_OK or KH_EXIT_FAIL (one line on stderr said why).
 */
int kh__demo_paytv(const struct kh__demo_paths *p);
/*
 * The program-distribution story on the same authority: a distribution server, a program
 * published and bought for one processor, run, lost and fetched again on the receipt for
 * nothing, and a copy refused on another processor. KH_EXIT_OK or KH_EXIT_FAIL.
 */
int kh__demo_dist(const struct kh__demo_paths *p);
/*
 * The escrow story on the same authority: an escrow with its signing process, a seller's listing
 * and encrypted content, a buyer's device that buys it (the escrow never sees the key), opens it,
 * and whose licence opens on no other device; the ledger audited. KH_EXIT_OK or KH_EXIT_FAIL.
 */
int kh__demo_escrow(const struct kh__demo_paths *p);
/*
 * The key center story on the same authority: a key center, two users' key cards enrolled and
 * activated, a letter relayed from one to the other, a replay refused, and the two keys shown to
 * differ. KH_EXIT_OK or KH_EXIT_FAIL.
 */
int kh__demo_keycenter(const struct kh__demo_paths *p);

#endif
