/*
 * key=value event log on stderr (include/keyhole/log.h). Each event is formatted into one
 * buffer and written with a single write(2) so lines from concurrent threads do not interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/log.h"

static int level = -1;

static const char *names[] = {"debug", "info", "warn", "error"};

void kh_log_set_level(enum kh_log_level l)
{
	level = (int)l;
}

static int current(void)
{
	if (level < 0) {
		const char *e = getenv("KEYHOLE_LOG");
		level = KH_LOG_WARN;
		for (int i = 0; e && i < 4; i++)
			if (strcmp(e, names[i]) == 0)
				level = i;
	}
	return level;
}

int kh_log_enabled(enum kh_log_level l)
{
	return (int)l >= current();
}

void kh_log(enum kh_log_level l, const char *event, const char *fmt, ...)
{
	char line[1024];
	struct tm tm;
	time_t now = time(NULL);
	size_t n;
	int k;

	if (!kh_log_enabled(l))
		return;
	gmtime_r(&now, &tm);
	n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%SZ", &tm);
	k = snprintf(line + n, sizeof line - n, " level=%s event=%s", names[l], event);
	if (k > 0)
		n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
	if (fmt && *fmt && n < sizeof line - 2) {
		va_list ap;
		line[n++] = ' ';
		va_start(ap, fmt);
		k = vsnprintf(line + n, sizeof line - n, fmt, ap);
		va_end(ap);
		if (k > 0)
			n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
	}
	if (n >= sizeof line - 1)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* Nowhere left to report a failing stderr. */
	}
}
