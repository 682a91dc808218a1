/*
 * Files the way a security tool must write them: whole or not at all (temporary file in the same
 * directory, fsync, rename, fsync of the directory), key files private (umask 077, refused when
 * group or others can access them). Host and center zones only.
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
/* Replace path atomically with data, created with the given mode (e.g. 0600, 0644). */
KH_WARN_UNUSED kh_err kh_file_write_atomic(const char *path, const uint8_t *data, size_t len, mode_t mode);
/* Like kh_file_read but refuses (KH_ERR_KEYFILE_PERM) a file that group or others can access. */
KH_WARN_UNUSED kh_err kh_keyfile_read(const char *path, size_t max, uint8_t **data, size_t *len);
/* Hex helpers for key files: 2*n hex digits plus optional trailing newline. */
KH_WARN_UNUSED kh_err kh_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t n);
void kh_hex_encode(const uint8_t *in, size_t n, char *out /* 2n+1 */);

#endif
