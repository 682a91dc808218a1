/*
 * Whole-or-nothing files for the host and center zones (include/keyhole/file.h). A file is
 * replaced by writing a temporary file next to it, syncing it, renaming it over the old one and
 * syncing the directory, so a crash leaves either the old content or the new, never a mix.
 * A file that must not exist yet is made the same way but linked, not renamed, to its name, so
 * it never replaces anything. Key files are read only when they belong to the effective uid and
 * neither group nor others can access them (the rules OpenSSH applies to private keys), and the
 * hex helpers that encode keys run in time that depends only on the length, never on the key.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"

/* Outcome of open(2) as a code: a missing file is worth telling apart from a broken one. */
static kh_err open_err(int e)
{
	return e == ENOENT || e == ENOTDIR ? KH_ERR_NOTFOUND : KH_ERR_IO;
}

/*
 * Read a whole regular file. The buffer holds one byte more than the file and that byte is
 * zero, so a caller may treat text as a C string; only *len bytes are the file.
 */
static kh_err read_file(const char *path, size_t max, int private_only, uint8_t **data, size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0;
	ssize_t got;
	int fd = -1;
	kh_err r;

	if (path == NULL || data == NULL || len == NULL)
		return KH_ERR_INVAL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		r = open_err(errno);
		goto out;
	}
	/* fstat of the open file, not stat of the name, so the file checked is the file read. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		r = KH_ERR_IO;
		goto out;
	}
	/*
	 * A key file must be ours and private: one owned by someone else could have been put there
	 * (or be rewritten) by them, whatever its mode says (OpenSSH refuses such keys too).
	 */
	if (private_only && ((st.st_mode & 077) != 0 || st.st_uid != geteuid())) {
		r = KH_ERR_KEYFILE_PERM;
		goto out;
	}
	if (st.st_size < 0 || (unsigned long long)st.st_size > max) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	/* One spare byte: reading it means the file grew under us. */
	cap = (size_t)st.st_size + 1;
	if ((buf = malloc(cap)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	while (n < cap) {
		got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = KH_ERR_IO;
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n == cap) {
		r = n > max ? KH_ERR_TOO_LARGE : KH_ERR_IO;
		goto out;
	}
	buf[n] = 0;
	*data = buf;
	*len = n;
	buf = NULL;
	r = KH_OK;
out:
	if (buf != NULL) {
		kh_wipe(buf, cap);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return r;
}

kh_err kh_file_read(const char *path, size_t max, uint8_t **data, size_t *len)
{
	return read_file(path, max, 0, data, len);
}

kh_err kh_keyfile_read(const char *path, size_t max, uint8_t **data, size_t *len)
{
	return read_file(path, max, 1, data, len);
}

void kh_file_free(uint8_t *data, size_t len)
{
	if (data == NULL)
		return;
	kh_wipe(data, len);
	free(data);
}

static kh_err write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return KH_ERR_IO;
		p += w;
		n -= (size_t)w;
	}
	return KH_OK;
}

/* Make the rename itself durable: sync the directory that holds path. */
static kh_err sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = NULL;
	int fd = -1;
	kh_err r;

	if (slash == NULL)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	if (dir == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(fd) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	r = KH_OK;
out:
	if (fd >= 0)
		close(fd);
	free(dir);
	return r;
}

/*
 * Write data to a new temporary file next to path (path.tmp. and six random characters, from mkstemp), with the given mode,
 * synced and closed. On success *tmp_out names it (malloc'd) and the caller must rename, link
 * or unlink it; on failure nothing is left behind and *tmp_out is not written.
 */
static kh_err write_temp(const char *path, const uint8_t *data, size_t len, mode_t mode, char **tmp_out)
{
	static const char suffix[] = ".tmp.XXXXXX";
	char *tmp = NULL;
	size_t plen;
	int fd = -1, made = 0;
	kh_err r;

	plen = strlen(path);
	if ((tmp = malloc(plen + sizeof suffix)) == NULL) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, suffix, sizeof suffix);
	/* mkstemp creates the file 0600 and exclusively, so nobody reads it half-written. */
	if ((fd = mkstemp(tmp)) < 0) {
		r = KH_ERR_IO;
		goto out;
	}
	made = 1;
	/* fchmod ignores the umask: the mode asked for is the mode the file gets. */
	if (fchmod(fd, mode) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	if ((r = write_all(fd, data, len)) != KH_OK)
		goto out;
	if (fsync(fd) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		r = KH_ERR_IO;
		goto out;
	}
	fd = -1;
	*tmp_out = tmp;
	tmp = NULL;
	made = 0;
	r = KH_OK;
out:
	if (fd >= 0)
		close(fd);
	if (made)
		unlink(tmp);
	free(tmp);
	return r;
}

static int write_args_ok(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
	return path != NULL && *path != '\0' && (data != NULL || len == 0) && (mode & ~(mode_t)07777) == 0;
}

kh_err kh_file_write_atomic(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
	char *tmp = NULL;
	kh_err r;

	if (!write_args_ok(path, data, len, mode))
		return KH_ERR_INVAL;
	if ((r = write_temp(path, data, len, mode, &tmp)) != KH_OK)
		return r;
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		r = KH_ERR_IO;
		goto out;
	}
	/*
	 * The new content is in place; a failure here only means it may not survive a crash. It is
	 * still KH_ERR_IO (the write is not known to be durable), as file.h documents.
	 */
	r = sync_parent(path);
out:
	free(tmp);
	return r;
}

kh_err kh_file_write_new(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
	char *tmp = NULL;
	int e;
	kh_err r;

	if (!write_args_ok(path, data, len, mode))
		return KH_ERR_INVAL;
	if ((r = write_temp(path, data, len, mode, &tmp)) != KH_OK)
		return r;
	/*
	 * link(2), unlike rename(2), fails with EEXIST rather than replace what is at path (it does
	 * not follow a symbolic link there either), and it is atomic: of two processes linking to
	 * the same name, exactly one succeeds. The file is whole before it gets its name.
	 */
	if (link(tmp, path) != 0) {
		e = errno;
		unlink(tmp);
		r = e == EEXIST ? KH_ERR_EXISTS : KH_ERR_IO;
		goto out;
	}
	/* path now holds the content; the temporary name is only a second link to it. */
	if (unlink(tmp) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	r = sync_parent(path);
out:
	free(tmp);
	return r;
}

/*
 * Constant-time hex: the value of a digit is computed with masks rather than looked up or
 * branched on, so neither timing nor the cache tells which key bytes were decoded.
 */
/* All ones when lo <= x <= hi (x, lo, hi below 2^31), zero otherwise. */
static unsigned in_range(unsigned x, unsigned lo, unsigned hi)
{
	/* Either difference wraps to a value with the top bit set exactly when x is outside. */
	return ((((x - lo) | (hi - x)) >> (sizeof(unsigned) * 8 - 1)) & 1u) - 1u;
}

static unsigned hex_nibble(unsigned c, unsigned *bad)
{
	unsigned is_digit = in_range(c, '0', '9');
	unsigned is_lower = in_range(c | 0x20u, 'a', 'f');

	*bad |= ~(is_digit | is_lower) & 1u;
	return ((c - '0') & is_digit) | (((c | 0x20u) - 'a' + 10u) & is_lower);
}

kh_err kh_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t n)
{
	unsigned bad = 0;
	size_t i;
	int pass;

	if (hex == NULL || (out == NULL && n > 0) || n > (SIZE_MAX - 1) / 2)
		return KH_ERR_INVAL;
	if (hexlen != 2 * n && !(hexlen == 2 * n + 1 && hex[2 * n] == '\n'))
		return KH_ERR_FORMAT;
	/* Check every digit first so out is written only when the whole input is good. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n; i++) {
			unsigned hi = hex_nibble((unsigned char)hex[2 * i], &bad);
			unsigned lo = hex_nibble((unsigned char)hex[2 * i + 1], &bad);
			if (pass == 1)
				out[i] = (uint8_t)(hi << 4 | lo);
		}
		if (bad)
			return KH_ERR_FORMAT;
	}
	return KH_OK;
}

static char hex_digit(unsigned v)
{
	/* '0'+v for v < 10, 'a'+v-10 otherwise, without a branch on v. */
	unsigned over9 = 0u - ((9u - v) >> (sizeof(unsigned) * 8 - 1));
	return (char)('0' + v + (over9 & ('a' - '0' - 10u)));
}

void kh_hex_encode(const uint8_t *in, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex_digit(in[i] >> 4);
		out[2 * i + 1] = hex_digit(in[i] & 0xfu);
	}
	out[2 * n] = '\0';
}
