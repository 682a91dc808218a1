/*
 * The demo's narrator: one numbered step of the story per line on stdout. Its own file so that
 * both halves of the demo (cmd_demo.c, demo_paytv.c) call it and neither calls back into the
 * other: cmd_demo.c -> demo_paytv.c -> demo_say.c, one way.
 */
#include <stdarg.h>
#include <stdio.h>

#include "cli/demo.h"

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
