/*
 * The demo's narrator (one numbered step of the story per line on stdout) and its hands (a
 * subcommand run in-process with its output kept in the log directory). Their own file so that
 * every act of the demo (cmd_demo.c, demo_paytv.c, demo_dist.c) calls them and none calls back
 * into another: cmd_demo.c -> demo_*.c -> demo_say.c, one way.
 */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "keyhole/file.h"

extern char **environ;

static int step;

void kh__demo_say(const char *fmt, ...)
{
	va_list ap;
	printf("%2d. ", ++step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static int runv(const char *logdir, const char *name, int (*fn)(int, char **), va_list ap, int quiet)
{
	char *argv[40], out[4200], err[4200];
	int argc = 0, fo, fe, so, se, rc;

	argv[argc++] = (char *)name;
	while (argc < 39 && (argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	argv[argc] = NULL;
	snprintf(out, sizeof out, "%s/%s.out", logdir, name);
	snprintf(err, sizeof err, "%s/%s.err", logdir, name);
	fflush(stdout);
	fflush(stderr);
	fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fe = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	so = dup(1);
	se = dup(2);
	if (fo < 0 || fe < 0 || so < 0 || se < 0) {
		rc = KH_EXIT_FAIL;
		goto out;
	}
	dup2(fo, 1);
	dup2(fe, 2);
	rc = fn(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
out:
	if (fo >= 0)
		close(fo);
	if (fe >= 0)
		close(fe);
	if (so >= 0)
		close(so);
	if (se >= 0)
		close(se);
	if (rc != KH_EXIT_OK && !quiet) {
		uint8_t *e = NULL;
		size_t n = 0;
		if (kh_file_read(err, 65536, &e, &n) == KH_OK && n)
			fprintf(stderr, "%.*s", (int)n, (const char *)e);
		fprintf(stderr, "keyhole: demo: step '%s' failed (exit %d)\n", name, rc);
		kh_file_free(e, n);
	}
	return rc;
}

int kh__demo_run(const char *logdir, const char *name, int (*fn)(int, char **), ...)
{
	va_list ap;
	int rc;

	va_start(ap, fn);
	rc = runv(logdir, name, fn, ap, 0);
	va_end(ap);
	return rc;
}

int kh__demo_refused(const char *logdir, const char *name, int (*fn)(int, char **), ...)
{
	va_list ap;
	int rc;

	va_start(ap, fn);
	rc = runv(logdir, name, fn, ap, 1);
	va_end(ap);
	if (rc != KH_EXIT_FAIL)
		fprintf(stderr, "keyhole: demo: step '%s' was to be refused, and exited %d\n", name, rc);
	return rc == KH_EXIT_FAIL;
}

/* The value after "key " on a line of DIR/log/NAME.out (what status, m1 and connect print). */
int kh__demo_value(const char *logdir, const char *name, const char *key, char *val, size_t cap)
{
	char path[4200], line[512];
	size_t kl = strlen(key);
	FILE *f;
	int found = 0;

	snprintf(path, sizeof path, "%s/%s.out", logdir, name);
	if (!(f = fopen(path, "r")))
		return 0;
	while (!found && fgets(line, sizeof line, f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
			snprintf(val, cap, "%s", line + kl + 1);
			val[strcspn(val, "\n")] = 0;
			found = 1;
		}
	fclose(f);
	return found;
}

int kh__demo_spawn(char *const argv[], pid_t *pid)
{
	char self[4200];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	*pid = 0;
	if (n <= 0) {
		fprintf(stderr, "keyhole: demo: /proc/self/exe: cannot find this program\n");
		return -1;
	}
	self[n] = 0;
	if (posix_spawn(pid, self, NULL, NULL, argv, environ) != 0) {
		*pid = 0;
		fprintf(stderr, "keyhole: demo: %s %s: cannot start it\n", argv[1], argv[2] ? argv[2] : "");
		return -1;
	}
	return 0;
}

void kh__demo_reap(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGTERM);
		waitpid(*pid, NULL, 0);
	}
	*pid = 0;
}
