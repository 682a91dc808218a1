/*
 * The processor runner (device zone, src/device/runner.c): the part of a tamper-resistant
 * processor that executes what its module decrypts (docs/protocols/distribution.md). It stands on
 * the processor's side of the wall: the host hands it a package and a licence token, never sees
 * a plaintext byte, and gets back the program's exit status. The module decrypts the package
 * chunk by chunk into a sealed anonymous memory file, which is executed in a child that cannot
 * write outside the working directory it was given (Landlock), cannot be traced or dumped
 * (PR_SET_DUMPABLE, no core, an execute-only image) and cannot trace others (seccomp).
 */
#ifndef KEYHOLE_RUNNER_H
#define KEYHOLE_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/transport.h"

struct kh_run_opts {
	/* The one directory the program may write under (an open descriptor of it), made its working
	 * directory; -1: it may write nowhere but the streams it was given. */
	int workdir_fd;
	/* Its arguments after argv[0], NULL-terminated (NULL: none). */
	char *const *args;
	/* Its standard streams (-1: /dev/null). */
	int fd_in, fd_out, fd_err;
	/* When the runner is root, the user and group the program runs as (0: KH_RUN_NOBODY); the
	 * working directory must be theirs to write. Otherwise it runs as the runner's user. */
	unsigned uid, gid;
};

#define KH_RUN_NOBODY 65534u

/*
 * Run the package in pkg_fd (read with pread, from offset 0) under the licence token, through
 * the processor module behind proc: check the package's header and manifest, RUN OPEN, decrypt
 * every chunk in order into a memory file, and execute it only once the module has accepted the
 * last chunk. *status is the program's exit status, or 128 + the signal that ended it. On a
 * refusal nothing runs, the memory file is emptied and closed, and why (cap bytes) says what
 * failed in one line. Refuses to run (KH_ERR_NOT_BUILT) where the kernel lacks Landlock.
 */
KH_WARN_UNUSED kh_err kh_run_package(struct kh_transport *proc, int pkg_fd, const uint8_t *token, size_t toklen,
				     const struct kh_run_opts *o, int *status, char *why, size_t cap);

/* ---- the processor daemon (src/device/procd.c): the module on a socket, and its runner ----
 *
 * The host reaches the processor only through the daemon's socket: the module's APDUs (every one
 * but RUN OPEN, RUN CHUNK and RUN CLOSE, which answer APDU_INS there), and a run request (class
 * KH_CLA_DAEMON, INS KH_DAEMON_RUN) carrying the licence token and the program's arguments as
 * TLVs {1: token, 2: argument, repeated}, with the descriptors of the package, standard input,
 * output and error, and optionally the working directory. The answer is u32 exit status || 9000,
 * or a one-line reason || the refusal's status word.
 */
#define KH_DAEMON_RUN 0x01
#define KH_RUN_ARGS_MAX 64

#include <signal.h>

struct kh_module;

/* Serve the processor module m on a UNIX socket at path until *stop (as kh_serve_unix). */
KH_WARN_UNUSED kh_err kh_serve_processor(const char *path, struct kh_module *m, volatile sig_atomic_t *stop);

/*
 * The host's side of a run request over t (a socket transport to the daemon): o's descriptors
 * (-1 streams are sent as /dev/null) and arguments, *status as kh_run_package gives it. On a
 * refusal, why (cap bytes) holds the daemon's reason.
 */
KH_WARN_UNUSED kh_err kh_processor_run(struct kh_transport *t, int pkg_fd, const uint8_t *token, size_t toklen,
				       const struct kh_run_opts *o, int *status, char *why, size_t cap);

#endif
