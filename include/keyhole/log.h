/*
 * Logging: one line per event on stderr, key=value pairs:
 *     ts=2026-11-21T14:03:07Z level=info event=pair.open ua=00000001
 * The caller passes the event name and an optional printf-style tail of key=value pairs.
 * Never pass a secret: only identifiers, counters, error names. The level comes from
 * kh_log_set_level() or the KEYHOLE_LOG environment variable (debug, info, warn, error);
 * the default is warn so that commands stay quiet unless asked. Host and center zones only.
 */
#ifndef KEYHOLE_LOG_H
#define KEYHOLE_LOG_H

enum kh_log_level { KH_LOG_DEBUG = 0, KH_LOG_INFO = 1, KH_LOG_WARN = 2, KH_LOG_ERROR = 3 };

void kh_log_set_level(enum kh_log_level l);
int kh_log_enabled(enum kh_log_level l);
void kh_log(enum kh_log_level l, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define kh_log_debug(ev, ...) kh_log(KH_LOG_DEBUG, ev, __VA_ARGS__)
#define kh_log_info(ev, ...) kh_log(KH_LOG_INFO, ev, __VA_ARGS__)
#define kh_log_warn(ev, ...) kh_log(KH_LOG_WARN, ev, __VA_ARGS__)
#define kh_log_error(ev, ...) kh_log(KH_LOG_ERROR, ev, __VA_ARGS__)

#endif
