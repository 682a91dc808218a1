/*
 * Files the way a security tool must write them: whole or not at all (temporary file in the same
 * directory, fsync, rename or link, fsync of the directory), key files private (umask 077,
 * refused when group or others can access them or another uid owns them). Host and center
 * zones only.
 */
#ifndef KEYHOLE_FILE_H
#define KEYHOLE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keyhole/err.h"

/* Read a whole file (at most max bytes, KH_ERR_TOO_LARGE beyond) into a new buffer (free with kh_file_free). */
KH_WARN_UNUSED kh_err kh_file_read(const char *path, size_t max, uint8_t **data, size_t *len);
/* Free a buffer from kh_file_read, wiping it first. */
void kh_file_free(uint8_t *data, size_t len);
/*
 * Replace path atomically with data, created with the given mode (e.g. 0600, 0644). On failure
 * the old content (or absence) of path is kept, with one exception: KH_ERR_IO is also returned
 * when the new file was renamed into place but the fsync of its directory failed. The new
 * content may then already be in place (and may or may not survive a crash); a caller for which
 * that matters must re-read path rather than assume the old content is still there.
 */
KH_WARN_UNUSED kh_err kh_file_write_atomic(const char *path, const uint8_t *data, size_t len, mode_t mode);
/*
 * Create path with data and the given mode, only if nothing is at path yet: create-only; never
 * replaces an existing file (unlike kh_file_write_atomic). The file appears whole or not at all
 * (temporary file in the same directory, fsync, link(2) to path, fsync of the directory), so two
 * processes racing to create the same path cannot both succeed. Returns KH_ERR_EXISTS when
 * something (a file, a directory, a dangling symbolic link) is already at path, KH_ERR_IO on
 * other failures (also on a file system without hard links), KH_ERR_NOMEM, KH_ERR_INVAL on bad
 * arguments. On failure path is never replaced and, but for one case, the temporary file is
 * removed and path is left as it was. The exception, as for kh_file_write_atomic: KH_ERR_IO
 * after path was created, when the fsync of its directory failed (or, unlikely, the temporary
 * name could not be unlinked); path then holds the whole new content, which may not survive a
 * crash.
 */
KH_WARN_UNUSED kh_err kh_file_write_new(const char *path, const uint8_t *data, size_t len, mode_t mode);
/*
 * Like kh_file_read but refuses (KH_ERR_KEYFILE_PERM) a file that group or others can access,
 * or that is not owned by the effective uid (as OpenSSH refuses such private keys).
 */
KH_WARN_UNUSED kh_err kh_keyfile_read(const char *path, size_t max, uint8_t **data, size_t *len);
/* Hex helpers for key files: 2*n hex digits plus optional trailing newline. */
KH_WARN_UNUSED kh_err kh_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t n);
void kh_hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);

#endif
