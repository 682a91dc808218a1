/*
 * The relay's messages sealed and opened as streams (include/keyhole/keycardclient.h): one chunk
 * at a time through kh_kc_chunk_seal and kh_kc_chunk_open, so a document of any size passes
 * through a buffer of one chunk. The checks are kh_kc_msg_open's, in the same order: a cut, a
 * reordered chunk, a lost last flag or a byte too many fails as it does in memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "host/keycard_int.h"
#include "keyhole/keycardclient.h"

#define SEALED_MAX (KH_KC_CHUNK_HDR_LEN + KH_KC_CHUNK + KH_TAG_LEN)

kh_err kh__kc_read_at(int fd, uint64_t off, uint8_t *buf, size_t n, size_t *got)
{
	size_t at = 0;

	while (at < n) {
		ssize_t k = pread(fd, buf + at, n - at, (off_t)(off + at));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return KH_ERR_IO;
		if (k == 0)
			break;
		at += (size_t)k;
	}
	*got = at;
	return KH_OK;
}

kh_err kh__kc_write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return KH_ERR_IO;
		p += k;
		n -= (size_t)k;
	}
	return KH_OK;
}

/* ---- seal ---- */

struct kh_kc_sealer {
	uint8_t key[32];
	uint8_t hdr[KH_KC_HEADER_LEN];
	uint8_t env[KH_KC_ENVELOPE_MAX];
	size_t envlen;
	int fd;
	uint64_t length, chunks, size;
	uint64_t next; /* the chunk sealed next (0: the envelope); chunks + 1 once all are out */
	uint64_t off;  /* document bytes read */
	size_t have, at; /* bytes in out, and how many of them were given */
	uint8_t pt[KH_KC_CHUNK];
	uint8_t out[SEALED_MAX];
};

kh_err kh_kc_sealer_new(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr, int fd,
			uint64_t length, struct kh_kc_sealer **out)
{
	struct kh_kc_sealer *s;
	kh_err r;

	if (!h || !addr || fd < 0 || !out)
		return KH_ERR_INVAL;
	if (!(s = calloc(1, sizeof *s)))
		return KH_ERR_NOMEM;
	if ((r = kh_kc_envelope_write(addr, length, s->env, &s->envlen)) != KH_OK) {
		free(s);
		return r;
	}
	memcpy(s->key, key, 32);
	kh_kc_header_write(h, s->hdr);
	s->fd = fd;
	s->length = length;
	s->chunks = kh_kc_doc_chunks(length);
	s->size = kh_kc_msg_size(s->envlen - 10, length);
	kh_kc_sealer_rewind(s);
	*out = s;
	return KH_OK;
}

uint64_t kh_kc_sealer_size(const struct kh_kc_sealer *s)
{
	return s->size;
}

void kh_kc_sealer_rewind(struct kh_kc_sealer *s)
{
	kh_wipe(s->pt, sizeof s->pt);
	memcpy(s->out, s->hdr, KH_KC_HEADER_LEN);
	s->have = KH_KC_HEADER_LEN;
	s->at = 0;
	s->next = 0;
	s->off = 0;
}

void kh_kc_sealer_free(struct kh_kc_sealer *s)
{
	if (!s)
		return;
	kh_wipe(s, sizeof *s);
	free(s);
}

/* The next chunk into s->out. */
static kh_err seal_next(struct kh_kc_sealer *s)
{
	size_t len, got;
	kh_err r;

	if (s->next == 0) {
		r = kh_kc_chunk_seal(s->key, s->hdr, 0, s->chunks == 0, s->env, s->envlen, s->out);
		len = s->envlen;
	} else {
		len = kh_kc_chunk_len(s->length, s->next);
		if ((r = kh__kc_read_at(s->fd, s->off, s->pt, len, &got)) != KH_OK)
			return r;
		if (got != len)
			return KH_ERR_IO; /* shorter than announced: it changed while it was sent */
		r = kh_kc_chunk_seal(s->key, s->hdr, s->next, s->next == s->chunks, s->pt, len, s->out);
		kh_wipe(s->pt, len);
		s->off += len;
	}
	if (r != KH_OK)
		return r;
	s->have = KH_KC_CHUNK_HDR_LEN + len + KH_TAG_LEN;
	s->at = 0;
	s->next++;
	return KH_OK;
}

kh_err kh_kc_sealer_read(struct kh_kc_sealer *s, uint8_t *buf, size_t cap, size_t *n)
{
	size_t done = 0;
	kh_err r;

	while (done < cap) {
		if (s->at == s->have) {
			if (s->next > s->chunks)
				break;
			if ((r = seal_next(s)) != KH_OK)
				return r;
		}
		size_t k = s->have - s->at < cap - done ? s->have - s->at : cap - done;
		memcpy(buf + done, s->out + s->at, k);
		s->at += k;
		done += k;
	}
	*n = done;
	return KH_OK;
}

kh_err kh_kc_seal_fd(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr, int infd,
		     uint64_t length, int outfd)
{
	struct kh_kc_sealer *s = NULL;
	uint8_t buf[16384];
	size_t n = 0;
	kh_err r;

	if ((r = kh_kc_sealer_new(key, h, addr, infd, length, &s)) != KH_OK)
		return r;
	do {
		if ((r = kh_kc_sealer_read(s, buf, sizeof buf, &n)) == KH_OK)
			r = kh__kc_write_all(outfd, buf, n);
	} while (r == KH_OK && n > 0);
	kh_kc_sealer_free(s);
	return r;
}

/* ---- open ---- */

kh_err kh_kc_read_head(int fd, uint8_t hdr[static KH_KC_HEADER_LEN], struct kh_kc_header *h,
		       uint8_t chunk0[static KH_KC_CHUNK0_MAX], size_t *chunk0len)
{
	size_t got, ctlen;
	uint32_t len;
	int last;
	kh_err r;

	if ((r = kh__kc_read_at(fd, 0, hdr, KH_KC_HEADER_LEN, &got)) != KH_OK)
		return r;
	if ((r = kh_kc_header_parse(hdr, got, h)) != KH_OK)
		return r;
	if ((r = kh__kc_read_at(fd, KH_KC_HEADER_LEN, chunk0, KH_KC_CHUNK_HDR_LEN, &got)) != KH_OK)
		return r;
	if (got < KH_KC_CHUNK_HDR_LEN)
		return KH_ERR_TRUNCATED;
	len = kh_get_be32(chunk0 + 1);
	if (len < KH_TAG_LEN || len > KH_KC_ENVELOPE_MAX + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	if ((r = kh__kc_read_at(fd, KH_KC_HEADER_LEN + KH_KC_CHUNK_HDR_LEN, chunk0 + KH_KC_CHUNK_HDR_LEN, len, &got)) !=
	    KH_OK)
		return r;
	if ((r = kh_kc_chunk_frame(chunk0, KH_KC_CHUNK_HDR_LEN + got, &ctlen, &last)) != KH_OK)
		return r;
	*chunk0len = KH_KC_CHUNK_HDR_LEN + ctlen;
	return KH_OK;
}

/* What an open works in: one sealed chunk and its plaintext. */
struct opening {
	uint8_t ct[SEALED_MAX];
	uint8_t pt[KH_KC_CHUNK];
};

/* Chunk k (want plaintext bytes, the last when last) at offset *at of fd, opened and written to outfd. */
static kh_err open_chunk(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN], int fd,
			 uint64_t *at, uint64_t k, size_t want, int want_last, struct opening *o, int outfd)
{
	size_t got, ctlen, ptlen = 0;
	int last;
	kh_err r;

	if ((r = kh__kc_read_at(fd, *at, o->ct, KH_KC_CHUNK_HDR_LEN, &got)) != KH_OK)
		return r;
	if (got < KH_KC_CHUNK_HDR_LEN)
		return KH_ERR_TRUNCATED;
	ctlen = kh_get_be32(o->ct + 1);
	if (ctlen < KH_TAG_LEN || ctlen > KH_KC_CHUNK + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	if ((r = kh__kc_read_at(fd, *at + KH_KC_CHUNK_HDR_LEN, o->ct + KH_KC_CHUNK_HDR_LEN, ctlen, &got)) != KH_OK)
		return r;
	if ((r = kh_kc_chunk_frame(o->ct, KH_KC_CHUNK_HDR_LEN + got, &ctlen, &last)) != KH_OK)
		return r;
	if (ctlen - KH_TAG_LEN != want || last != want_last)
		return KH_ERR_FORMAT;
	if ((r = kh_kc_chunk_open(key, hdr, k, o->ct, KH_KC_CHUNK_HDR_LEN + ctlen, o->pt, &ptlen)) != KH_OK)
		return r;
	r = kh__kc_write_all(outfd, o->pt, ptlen);
	kh_wipe(o->pt, ptlen);
	*at += KH_KC_CHUNK_HDR_LEN + ctlen;
	return r;
}

/* The envelope of the message whose head is hdr and chunk0 (framing included). */
static kh_err open_envelope(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN],
			    const uint8_t *chunk0, size_t c0len, struct kh_kc_envelope *e)
{
	uint8_t env[KH_KC_ENVELOPE_MAX];
	size_t ptlen = 0;
	kh_err r;

	if ((r = kh_kc_chunk_open(key, hdr, 0, chunk0, c0len, env, &ptlen)) != KH_OK)
		return r;
	r = kh_kc_envelope_parse(env, ptlen, e);
	kh_wipe(env, sizeof env);
	if (r != KH_OK)
		return r;
	/* chunk 0 is the last exactly when the document is empty */
	return ((chunk0[0] & 1) != 0) == (kh_kc_doc_chunks(e->length) == 0) ? KH_OK : KH_ERR_FORMAT;
}

kh_err kh_kc_open_fd(const uint8_t key[static 32], int infd, int outfd, struct kh_kc_header *h,
		     struct kh_kc_envelope *e, uint64_t *written)
{
	uint8_t hdr[KH_KC_HEADER_LEN], chunk0[KH_KC_CHUNK0_MAX], extra;
	struct kh_kc_envelope env;
	struct kh_kc_header hd;
	struct opening *o;
	uint64_t at, chunks, done = 0;
	size_t c0len = 0, got = 0;
	kh_err r;

	if ((r = kh_kc_read_head(infd, hdr, &hd, chunk0, &c0len)) != KH_OK)
		return r;
	if ((r = open_envelope(key, hdr, chunk0, c0len, &env)) != KH_OK)
		return r;
	if (!(o = malloc(sizeof *o)))
		return KH_ERR_NOMEM;
	at = KH_KC_HEADER_LEN + c0len;
	chunks = kh_kc_doc_chunks(env.length);
	for (uint64_t k = 1; k <= chunks && r == KH_OK; k++) {
		size_t want = kh_kc_chunk_len(env.length, k);
		if ((r = open_chunk(key, hdr, infd, &at, k, want, k == chunks, o, outfd)) == KH_OK)
			done += want;
	}
	kh_wipe(o, sizeof *o);
	free(o);
	if (r == KH_OK && (r = kh__kc_read_at(infd, at, &extra, 1, &got)) == KH_OK && got != 0)
		r = KH_ERR_TRAILING;
	if (r != KH_OK)
		return r;
	*h = hd;
	*e = env;
	*written = done;
	return KH_OK;
}

/* A FIFO, character device or socket at path, opened for writing: >= 0; -1 when it is none of
 * these (or nothing); -2 when it could not be opened. */
static int open_in_place(const char *path)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd;

	if (stat(path, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode)))
		return -1;
	if (!S_ISSOCK(st.st_mode))
		return (fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY)) < 0 ? -2 : fd;
	if (strlen(path) >= sizeof sa.sun_path || (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -2;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -2;
	}
	return fd;
}

kh_err kh__kc_fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	kh_err r = KH_ERR_IO;
	int fd;

	if (!copy)
		return KH_ERR_NOMEM;
	if ((fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		if (fsync(fd) == 0)
			r = KH_OK;
		close(fd);
	}
	free(copy);
	return r;
}

int kh__kc_temp_beside(const char *path, char **tmp)
{
	char *copy = strdup(path), *base;
	int fd = -1;

	*tmp = NULL;
	if (!copy)
		return -1;
	base = strrchr(copy, '/');
	if (base)
		*base++ = '\0';
	if (asprintf(tmp, "%s/.%s.XXXXXX", base ? (*copy ? copy : "/") : ".", base ? base : copy) < 0)
		*tmp = NULL;
	else if ((fd = mkostemp(*tmp, O_CLOEXEC)) < 0 || fchmod(fd, 0600) != 0) {
		if (fd >= 0) {
			close(fd);
			unlink(*tmp);
			fd = -1;
		}
		free(*tmp);
		*tmp = NULL;
	}
	free(copy);
	return fd;
}

kh_err kh_kc_open_to(const uint8_t key[static 32], int infd, const char *out, struct kh_kc_header *h,
		     struct kh_kc_envelope *e, uint64_t *written, char *msg, size_t msgcap)
{
	char *tmp = NULL;
	int fd;
	kh_err r;

	if (msgcap)
		msg[0] = '\0';
	if ((fd = open_in_place(out)) == -2) {
		snprintf(msg, msgcap, "%s: %s", out, strerror(errno));
		return KH_ERR_IO;
	}
	if (fd >= 0) {
		r = kh_kc_open_fd(key, infd, fd, h, e, written);
		if (close(fd) != 0 && r == KH_OK)
			r = KH_ERR_IO;
		if (r != KH_OK)
			snprintf(msg, msgcap, "%s: %s (what came before the failure was written to it)", out,
				 kh_strerror(r));
		return r;
	}
	if ((fd = kh__kc_temp_beside(out, &tmp)) < 0) {
		snprintf(msg, msgcap, "%s: no temporary file beside it: %s", out, strerror(errno));
		return KH_ERR_IO;
	}
	r = kh_kc_open_fd(key, infd, fd, h, e, written);
	if (r != KH_OK)
		snprintf(msg, msgcap, "%s", kh_strerror(r));
	else if (fsync(fd) != 0)
		r = KH_ERR_IO;
	if (close(fd) != 0 && r == KH_OK)
		r = KH_ERR_IO;
	if (r == KH_OK && rename(tmp, out) != 0)
		r = KH_ERR_IO;
	if (r != KH_OK) {
		if (!*msg)
			snprintf(msg, msgcap, "%s: %s", out, strerror(errno));
		unlink(tmp);
	} else if ((r = kh__kc_fsync_dir_of(out)) != KH_OK) {
		snprintf(msg, msgcap, "%s: its directory could not be synced", out);
	}
	free(tmp);
	return r;
}
