/*
 * What the key card host's stream (src/host/keycard_stream.c) and its client of the key center
 * (src/host/keycard_client.c) share: whole reads and writes on descriptors, and the temporary
 * file beside a path that a write renames into place.
 */
#ifndef KH_HOST_KEYCARD_INT_H
#define KH_HOST_KEYCARD_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

/* n bytes at offset off of fd (pread), fewer only at its end (*got); KH_ERR_IO when it cannot be read. */
kh_err kh__kc_read_at(int fd, uint64_t off, uint8_t *buf, size_t n, size_t *got);
/* All n bytes to fd; KH_ERR_IO. */
kh_err kh__kc_write_all(int fd, const uint8_t *p, size_t n);
/* fsync of the directory path is in. */
kh_err kh__kc_fsync_dir_of(const char *path);
/* A new temporary file beside path (mode 0600): its descriptor, its name in *tmp (the caller
 * frees it); -1 with errno set when none could be made. */
int kh__kc_temp_beside(const char *path, char **tmp);

#endif
