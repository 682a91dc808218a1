/*
 * The processor runner (include/keyhole/runner.h): decrypt a package through the processor
 * module into a sealed memory file, and execute it in a confined child.
 *
 * The plaintext exists in two places only: the module's answer buffer, wiped after each chunk,
 * and the memory file, which has no name in any file system and is emptied before it is closed
 * when anything fails. The child is confined before it executes anything:
 *   - PR_SET_DUMPABLE 0 and RLIMIT_CORE 0: no core file, no ptrace attach by its user;
 *   - run by root, it runs as an unprivileged user (nobody unless told otherwise);
 *   - an ELF image that is execute-only (mode 0111): the kernel keeps a process whose image its
 *     user cannot read non-dumpable across execve, so the program stays untraceable (a script
 *     cannot have that: its interpreter must read it, and a readable interpreter is dumpable);
 *   - Landlock: every kind of write refused outside the working directory (and /dev/null);
 *   - no_new_privs and a seccomp filter: ptrace and process_vm_readv/writev answer EPERM.
 * Someone with root on the machine sees through all of this; a real tamper-resistant processor
 * runs the decrypted code inside the chip.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/dist.h"
#include "keyhole/runner.h"

struct run {
	struct kh_transport *proc;
	int pkg_fd, mem_fd;
	struct kh_dist_pkg pkg;
	struct kh_dist_manifest man;
	uint8_t hdr[KH_DIST_PKG_HDR_MAX];
	uint8_t data[4 + KH_DIST_CHUNK_CT_MAX]; /* a command's data: a chunk, or the token */
	uint8_t cmd[KH_APDU_MAX_CMD];
	uint8_t resp[KH_APDU_MAX_RESP];
	char *why;
	size_t cap;
};

static kh_err say(struct run *R, kh_err r, const char *what)
{
	if (R->why && R->cap)
		snprintf(R->why, R->cap, "%s: %s", what, kh_strerror(r));
	return r;
}

/* One command to the processor; its answer's data in R->resp (*n bytes). */
static kh_err call(struct run *R, uint8_t ins, const uint8_t *data, size_t lc, size_t *n)
{
	const uint8_t *d;
	size_t rlen = 0, dl = 0;
	uint16_t sw;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, R->cmd, sizeof R->cmd);
	if ((r = kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, lc, 0)) != KH_OK)
		return r;
	r = kh_transport_xfer(R->proc, R->cmd, w.len, R->resp, sizeof R->resp, &rlen);
	kh_wipe(R->cmd, w.len);
	if (r != KH_OK)
		return r;
	if ((r = kh_apdu_resp(R->resp, rlen, &d, &dl, &sw)) != KH_OK)
		return r;
	if (sw != KH_SW_OK) {
		kh_wipe(R->resp, rlen);
		return kh_err_from_sw(sw);
	}
	*n = dl;
	return KH_OK;
}

static kh_err read_at(int fd, uint8_t *b, size_t n, uint64_t off)
{
	while (n) {
		ssize_t k = pread(fd, b, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k == 0 ? KH_ERR_TRUNCATED : KH_ERR_IO;
		b += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return KH_OK;
}

static kh_err write_all(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t k = write(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return KH_ERR_IO;
		b += k;
		n -= (size_t)k;
	}
	return KH_OK;
}

/* The header and manifest, checked against the file's size. */
static kh_err read_header(struct run *R)
{
	struct stat st;
	size_t len, line;
	ssize_t k;
	kh_err r;

	if (fstat(R->pkg_fd, &st) != 0 || !S_ISREG(st.st_mode))
		return say(R, KH_ERR_IO, "package");
	len = (uint64_t)st.st_size < sizeof R->hdr ? (size_t)st.st_size : sizeof R->hdr;
	do
		k = pread(R->pkg_fd, R->hdr, len, 0);
	while (k < 0 && errno == EINTR);
	if (k < 0 || (size_t)k != len)
		return say(R, KH_ERR_IO, "package");
	if ((r = kh_dist_pkg_parse(R->hdr, len, (uint64_t)st.st_size, &R->pkg)) != KH_OK)
		return say(R, r == KH_ERR_TRUNCATED ? KH_ERR_FORMAT : r, "package");
	if ((r = kh_dist_manifest_parse(R->pkg.manifest, R->pkg.manifest_len, &R->man, &line)) != KH_OK)
		return say(R, r, "package manifest");
	return KH_OK;
}

/* RUN OPEN, then every chunk through RUN CHUNK into the memory file. */
static kh_err decrypt(struct run *R, const uint8_t *token, size_t toklen)
{
	uint8_t *data = R->data;
	struct kh_wr w;
	size_t n;
	kh_err r;

	kh_wr_init(&w, data, sizeof R->data);
	kh_tlv_put(&w, KH_DIST_T_RUN_TOKEN, token, toklen);
	if ((r = kh_tlv_put(&w, KH_DIST_T_MANIFEST, R->pkg.manifest, R->pkg.manifest_len)) != KH_OK)
		return say(R, KH_ERR_TOO_LARGE, "licence token");
	if ((r = call(R, KH_INS_RUN_OPEN, data, w.len, &n)) != KH_OK)
		return say(R, r, "processor");
	if (n != 4 || kh_get_be32(R->resp + 0) != R->pkg.chunks) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	for (uint32_t i = 0; i < R->pkg.chunks; i++) {
		size_t len = kh_dist_pkg_chunk_len(&R->pkg, i);

		kh_put_be32(data, i);
		if ((r = read_at(R->pkg_fd, data + 4, len, kh_dist_pkg_chunk_off(&R->pkg, i))) != KH_OK)
			return say(R, r, "package");
		if ((r = call(R, KH_INS_RUN_CHUNK, data, 4 + len, &n)) != KH_OK)
			return say(R, r, "processor");
		r = write_all(R->mem_fd, R->resp, n);
		kh_wipe(R->resp, n);
		if (r != KH_OK)
			goto out;
	}
	return KH_OK;
out:
	/* best effort: the module also forgets the key on its own at the next RUN OPEN */
	(void)call(R, KH_INS_RUN_CLOSE, NULL, 0, &n);
	return say(R, r, "processor");
}

/* ---- the child's confinement ---- */

static int landlock_abi(void)
{
	long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	return v < 0 ? 0 : (int)v;
}

/* Every write access this kernel's Landlock knows. */
static uint64_t write_access(int abi)
{
	uint64_t a = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
		     LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
		     LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		     LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
	if (abi >= 2)
		a |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
	if (abi >= 3)
		a |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
	return a;
}

static int allow_beneath(int ruleset, int dir, uint64_t access)
{
	struct landlock_path_beneath_attr pb = {.allowed_access = access, .parent_fd = dir};

	return (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
}

/* In the child: writes only beneath workdir (and to /dev/null). 0, or -1. */
static int confine_writes(int workdir)
{
	int abi = landlock_abi(), fd, null, rc = -1;
	uint64_t file_write = LANDLOCK_ACCESS_FS_WRITE_FILE;
	struct landlock_ruleset_attr attr = {.handled_access_fs = write_access(abi)};

#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
	if (abi >= 3)
		file_write |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
	if (abi < 1 || (fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0)) < 0)
		return -1;
	if ((null = open("/dev/null", O_PATH | O_CLOEXEC)) >= 0 &&
	    (workdir < 0 || allow_beneath(fd, workdir, attr.handled_access_fs) == 0) &&
	    allow_beneath(fd, null, file_write) == 0 && syscall(SYS_landlock_restrict_self, fd, 0) == 0)
		rc = 0;
	if (null >= 0)
		close(null);
	close(fd);
	return rc;
}

#if defined(__x86_64__)
#define RUN_AUDIT_ARCH AUDIT_ARCH_X86_64
#define RUN_X32_BIT 0x40000000u /* x32 system calls: refused, they would bypass the list below */
#elif defined(__aarch64__)
#define RUN_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* In the child: ptrace and cross-process memory access answer EPERM. 0, or -1. */
static int confine_tracing(void)
{
#ifdef RUN_AUDIT_ARCH
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, RUN_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef RUN_X32_BIT
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, RUN_X32_BIT, 4, 0),
#endif
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ptrace, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};

	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0 ? 0 : -1;
#else
	return -1;
#endif
}

/* In the child: one line to its standard error, and exit 126 (the program was not run). */
static void refuse(const char *step)
{
	const char *e = strerror(errno);

	if (write(2, "keyhole runner: ", 16) < 0 || write(2, step, strlen(step)) < 0 || write(2, ": ", 2) < 0 ||
	    write(2, e, strlen(e)) < 0 || write(2, "\n", 1) < 0)
		_exit(126);
	_exit(126);
}

/* The child: streams, confinement, then the program. Never returns. */
static void child(const struct run *R, const struct kh_run_opts *o)
{
	static char *const env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", NULL};
	const char *argv[3 + 64];
	struct rlimit none = {0, 0};
	char self[32];
	int null = open("/dev/null", O_RDWR | O_CLOEXEC), fds[3] = {o->fd_in, o->fd_out, o->fd_err}, n = 0;

	for (int i = 0; i < 3; i++)
		if (dup2(fds[i] >= 0 ? fds[i] : null, i) < 0)
			_exit(126);
	/* root runs nothing it bought as root: the program gets an unprivileged user */
	if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(o->gid ? o->gid : KH_RUN_NOBODY) != 0 ||
			       setuid(o->uid ? o->uid : KH_RUN_NOBODY) != 0))
		refuse("changing to an unprivileged user");
	if (prctl(PR_SET_DUMPABLE, 0) != 0 || setrlimit(RLIMIT_CORE, &none) != 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		refuse("no core, no tracing, no new privileges");
	if (o->workdir_fd >= 0 && fchdir(o->workdir_fd) != 0)
		refuse("the working directory");
	if (confine_writes(o->workdir_fd) != 0)
		refuse("Landlock");
	if (confine_tracing() != 0)
		refuse("seccomp");
	if (R->man.kind == KH_DIST_SCRIPT) {
		/* the interpreter reads the script through /proc/self/fd: keep it open across exec */
		if (fcntl(R->mem_fd, F_SETFD, 0) != 0)
			refuse("the script");
		snprintf(self, sizeof self, "/proc/self/fd/%d", R->mem_fd);
		argv[n++] = R->man.interpreter;
		argv[n++] = self;
	} else {
		argv[n++] = R->man.entry;
	}
	for (size_t i = 0; o->args && o->args[i] && n < (int)(sizeof argv / sizeof argv[0]) - 1; i++)
		argv[n++] = o->args[i];
	argv[n] = NULL;
	if (R->man.kind == KH_DIST_SCRIPT)
		execve(R->man.interpreter, (char *const *)argv, env);
	else
		fexecve(R->mem_fd, (char *const *)argv, env);
	refuse("exec");
}

/* The memory file made read-only for good, and unreadable too for an ELF. */
static kh_err seal(struct run *R)
{
	mode_t mode = R->man.kind == KH_DIST_SCRIPT ? 0555 : 0111;

	if (fchmod(R->mem_fd, mode) != 0 ||
	    fcntl(R->mem_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
		return KH_ERR_IO;
	return KH_OK;
}

static kh_err execute(struct run *R, const struct kh_run_opts *o, int *status)
{
	pid_t pid;
	int st;

	if ((pid = fork()) < 0)
		return say(R, KH_ERR_IO, "fork");
	if (pid == 0)
		child(R, o);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return say(R, KH_ERR_IO, "wait");
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
	return KH_OK;
}

kh_err kh_run_package(struct kh_transport *proc, int pkg_fd, const uint8_t *token, size_t toklen,
		      const struct kh_run_opts *o, int *status, char *why, size_t cap)
{
	struct run *R;
	kh_err r;

	if (why && cap)
		why[0] = 0;
	if (!proc || pkg_fd < 0 || !token || !toklen || !o || !status)
		return KH_ERR_INVAL;
	if (landlock_abi() < 1) {
		if (why && cap)
			snprintf(why, cap, "this kernel offers no Landlock: a program could write anywhere");
		return KH_ERR_NOT_BUILT;
	}
	if (!(R = calloc(1, sizeof *R)))
		return KH_ERR_NOMEM;
	R->proc = proc;
	R->pkg_fd = pkg_fd;
	R->why = why;
	R->cap = cap;
	R->mem_fd = -1;
	if ((r = read_header(R)) != KH_OK)
		goto out;
	if ((R->mem_fd = memfd_create("keyhole-program", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0) {
		r = say(R, KH_ERR_IO, "memfd_create");
		goto out;
	}
	if ((r = decrypt(R, token, toklen)) != KH_OK)
		goto out;
	if ((r = seal(R)) != KH_OK) {
		say(R, r, "sealing the program");
		goto out;
	}
	r = execute(R, o, status);
out:
	if (R->mem_fd >= 0) {
		/* emptied first, so its pages go back now, not at the last close; a sealed one (the
		 * program ran) refuses with EPERM, which is fine */
		int e = ftruncate(R->mem_fd, 0);
		(void)e;
		close(R->mem_fd);
	}
	kh_wipe(R, sizeof *R);
	free(R);
	return r;
}
