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
	/* The one directory the program may write under, made its working directory (NULL: it may
	 * write nowhere but the streams it was given). */
	const char *workdir;
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

#endif
