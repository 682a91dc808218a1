/*
 * A program to sell in the tests of the processor runner (tests/unit/test_proc.c and the
 * distribution CLI tests): it reports, one line each, what its confinement lets it do. It carries
 * a marker string that the tests look for wherever plaintext must never be (the host's memory,
 * the disk): the marker is assembled at run time, so only this program's image holds it whole.
 *
 *   proc_probe [OUTSIDE]   OUTSIDE: a path outside the working directory it tries to create
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <unistd.h>

static const char marker[] = "KEYHOLE-PROGRAM-PLAINTEXT-MARKER-5d1c9e";

static const char *result(int ok)
{
	return ok ? "ok" : errno == EACCES ? "EACCES" : errno == EPERM ? "EPERM" : strerror(errno);
}

int main(int argc, char **argv)
{
	int fd;

	printf("probe ran: %s\n", argv[0]);
	printf("marker length %zu\n", strlen(marker));
	printf("dumpable=%d\n", prctl(PR_GET_DUMPABLE));
	fd = open("inside.txt", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	printf("inside=%s\n", result(fd >= 0));
	if (fd >= 0)
		close(fd);
	if (argc > 1) {
		fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
		printf("outside=%s\n", result(fd >= 0));
		if (fd >= 0)
			close(fd);
	}
	printf("ptrace=%s\n", result(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0));
	return 3;
}
