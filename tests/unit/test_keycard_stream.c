/*
 * The host's streaming seal and open of the relay's messages (src/host/keycard_stream.c) against
 * the in-memory record functions of include/keyhole/keycard.h: the stream seals byte for byte
 * what kh_kc_msg_seal seals (and the same again after a rewind), and opens what it seals; a
 * message flipped, cut at a chunk boundary, grown by a byte, with chunks swapped or under another
 * key is refused by both, and the open leaves no file behind (nor touches one already there).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardclient.h"
#include "testutil.h"

static const size_t sizes[] = {0, 1, 65535, 65536, 65537, 200000};
#define ADDR "bob@example.org"
#define SERIAL UINT64_C(0x1122334455667788)

struct fixture {
	char *dir;
	uint8_t key[32];
	uint8_t *doc;
	size_t len;
	uint8_t *msg; /* kh_kc_msg_seal's */
	size_t mlen;
};

static void put_file(const char *path, const uint8_t *b, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static char *path_in(const char *dir, const char *name)
{
	char *p = NULL;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* Entries of dir besides . and .. */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* A random document of len bytes and its message (dir, index 7) sealed in memory. */
static void make(struct fixture *f, size_t len, uint8_t dir)
{
	struct kh_kc_header h = {dir, SERIAL, 7};
	size_t cap;

	f->dir = kh_test_tmpdir();
	assert_int_equal(kh_random(f->key, sizeof f->key), KH_OK);
	f->len = len;
	f->doc = malloc(len + 1);
	assert_non_null(f->doc);
	assert_int_equal(kh_random(f->doc, len), KH_OK);
	cap = (size_t)kh_kc_msg_size(strlen(ADDR), len);
	f->msg = malloc(cap + 1);
	assert_non_null(f->msg);
	assert_int_equal(kh_kc_msg_seal(f->key, &h, ADDR, f->doc, len, f->msg, cap, &f->mlen), KH_OK);
	assert_int_equal(f->mlen, cap);
}

static void drop(struct fixture *f)
{
	kh_test_rmdir(f->dir);
	free(f->doc);
	free(f->msg);
	memset(f, 0, sizeof *f);
}

/* The stream's seal of f's document, through the sealer read cap bytes at a time. */
static uint8_t *stream_seal(struct fixture *f, size_t cap, int rewind_midway, size_t *n)
{
	struct kh_kc_header h = {KH_KC_POST, SERIAL, 7};
	struct kh_kc_sealer *s = NULL;
	char *in = path_in(f->dir, "doc");
	uint8_t *out = malloc(f->mlen + cap), *buf = malloc(cap);
	size_t got = 0, at = 0;
	int fd;

	assert_non_null(out);
	assert_non_null(buf);
	put_file(in, f->doc, f->len);
	fd = open(in, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(kh_kc_sealer_new(f->key, &h, ADDR, fd, f->len, &s), KH_OK);
	assert_int_equal(kh_kc_sealer_size(s), f->mlen);
	if (rewind_midway) {
		/* half a message, then from the start: the same bytes as a first go */
		for (size_t k = 0; k < f->mlen / 2; k += got)
			assert_int_equal(kh_kc_sealer_read(s, buf, cap, &got), KH_OK);
		kh_kc_sealer_rewind(s);
	}
	do {
		assert_int_equal(kh_kc_sealer_read(s, out + at, cap, &got), KH_OK);
		at += got;
		assert_true(at <= f->mlen);
	} while (got > 0);
	kh_kc_sealer_free(s);
	close(fd);
	free(buf);
	free(in);
	*n = at;
	return out;
}

static void test_seal_matches(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct fixture f;
		uint8_t *got;
		size_t n = 0;

		make(&f, sizes[i], KH_KC_POST);
		got = stream_seal(&f, 65536, 0, &n);
		assert_int_equal(n, f.mlen);
		assert_memory_equal(got, f.msg, f.mlen);
		free(got);
		got = stream_seal(&f, 1000, 1, &n); /* reads across chunk boundaries, and a rewind */
		assert_int_equal(n, f.mlen);
		assert_memory_equal(got, f.msg, f.mlen);
		free(got);
		drop(&f);
	}
}

static void test_seal_fd(void **state)
{
	struct kh_kc_header h = {KH_KC_POST, SERIAL, 7};
	struct fixture f;
	char *in, *out;
	uint8_t *got;
	size_t n = 0;
	int fi, fo;

	(void)state;
	make(&f, 200000, KH_KC_POST);
	in = path_in(f.dir, "doc");
	out = path_in(f.dir, "msg");
	put_file(in, f.doc, f.len);
	fi = open(in, O_RDONLY);
	fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(kh_kc_seal_fd(f.key, &h, ADDR, fi, f.len, fo), KH_OK);
	close(fo);
	got = kh_test_slurp(out, &n);
	assert_int_equal(n, f.mlen);
	assert_memory_equal(got, f.msg, n);
	free(got);
	/* a document shorter than announced (it changed under the sender) is refused */
	assert_int_equal(ftruncate(fo = open(in, O_WRONLY), 100000), 0);
	close(fo);
	fo = open(out, O_WRONLY | O_TRUNC);
	assert_int_equal(kh_kc_seal_fd(f.key, &h, ADDR, fi, f.len, fo), KH_ERR_IO);
	close(fo);
	close(fi);
	/* an address the envelope cannot carry */
	assert_int_equal(kh_kc_seal_fd(f.key, &h, "Bob@example.org", fi, f.len, fo), KH_ERR_FORMAT);
	free(in);
	free(out);
	drop(&f);
}

/* Open the message bytes m (n) into DIR/out under key: the result, and the document on success. */
static kh_err stream_open(const char *dir, const uint8_t key[32], const uint8_t *m, size_t n, struct kh_kc_envelope *e,
			  uint64_t *written)
{
	struct kh_kc_header h;
	char *in = path_in(dir, "in.khm"), *out = path_in(dir, "out"), msg[256];
	int fd;
	kh_err r;

	put_file(in, m, n);
	fd = open(in, O_RDONLY);
	assert_true(fd >= 0);
	r = kh_kc_open_to(key, fd, out, &h, e, written, msg, sizeof msg);
	if (r == KH_OK) {
		assert_int_equal(h.dir, KH_KC_DELIVERY);
		assert_true(h.serial == SERIAL && h.index == 7);
	} else {
		assert_true(msg[0] != '\0');
	}
	close(fd);
	unlink(in);
	free(in);
	free(out);
	return r;
}

static void test_open_roundtrip(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct kh_kc_envelope e;
		struct fixture f;
		uint64_t w = 99;
		struct stat st;
		char *out;
		uint8_t *got;
		size_t n = 0;

		make(&f, sizes[i], KH_KC_DELIVERY);
		assert_int_equal(stream_open(f.dir, f.key, f.msg, f.mlen, &e, &w), KH_OK);
		assert_int_equal(w, f.len);
		assert_int_equal(e.length, f.len);
		assert_string_equal(e.addr, ADDR);
		out = path_in(f.dir, "out");
		got = kh_test_slurp(out, &n);
		assert_int_equal(n, f.len);
		assert_memory_equal(got, f.doc, n);
		assert_int_equal(stat(out, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		assert_int_equal(entries(f.dir), 1); /* no temporary file left */
		free(got);
		free(out);
		drop(&f);
	}
}

static void test_read_head(void **state)
{
	uint8_t hdr[KH_KC_HEADER_LEN], c0[KH_KC_CHUNK0_MAX];
	struct kh_kc_header h;
	struct fixture f;
	size_t c0len = 0;
	char *in;
	int fd;

	(void)state;
	make(&f, 65537, KH_KC_DELIVERY);
	in = path_in(f.dir, "m");
	put_file(in, f.msg, f.mlen);
	fd = open(in, O_RDONLY);
	assert_int_equal(kh_kc_read_head(fd, hdr, &h, c0, &c0len), KH_OK);
	assert_memory_equal(hdr, f.msg, KH_KC_HEADER_LEN);
	assert_int_equal(c0len, KH_KC_CHUNK_HDR_LEN + 2 + strlen(ADDR) + 8 + KH_TAG_LEN);
	assert_memory_equal(c0, f.msg + KH_KC_HEADER_LEN, c0len);
	assert_true(h.dir == KH_KC_DELIVERY && h.serial == SERIAL && h.index == 7);
	close(fd);
	/* cut within chunk 0: truncated */
	put_file(in, f.msg, KH_KC_HEADER_LEN + c0len - 1);
	fd = open(in, O_RDONLY);
	assert_int_equal(kh_kc_read_head(fd, hdr, &h, c0, &c0len), KH_ERR_TRUNCATED);
	close(fd);
	free(in);
	drop(&f);
}

/* Both opens refuse m (n bytes) under key, and no file is left in the fixture's directory. */
static void refused(struct fixture *f, const uint8_t key[32], const uint8_t *m, size_t n)
{
	struct kh_kc_envelope e;
	struct kh_kc_header h;
	uint8_t *doc = malloc(f->len + 1);
	uint64_t w = 0;
	size_t dl = 0;

	assert_non_null(doc);
	assert_int_not_equal(kh_kc_msg_open(key, m, n, &h, &e, doc, f->len, &dl), KH_OK);
	free(doc);
	assert_int_not_equal(stream_open(f->dir, key, m, n, &e, &w), KH_OK);
	assert_int_equal(entries(f->dir), 0);
}

/* Offsets of each chunk's start in f's message, and the end (*count of them). */
static size_t bounds(const struct fixture *f, size_t *b)
{
	size_t at = KH_KC_HEADER_LEN, k = 0;

	while (at < f->mlen) {
		b[k++] = at;
		at += KH_KC_CHUNK_HDR_LEN + kh_get_be32(f->msg + at + 1);
	}
	b[k++] = at;
	return k;
}

static void test_tampered(void **state)
{
	static const size_t tsizes[] = {0, 65536, 200000};

	(void)state;
	for (size_t i = 0; i < sizeof tsizes / sizeof tsizes[0]; i++) {
		struct fixture f;
		size_t b[8], nb;
		uint8_t *m, other[32];

		make(&f, tsizes[i], KH_KC_DELIVERY);
		m = malloc(f.mlen + 1);
		assert_non_null(m);
		nb = bounds(&f, b);
		assert_int_equal(nb, kh_kc_doc_chunks(f.len) + 2);
		assert_int_equal(b[nb - 1], f.mlen);
		/* a flipped byte: in the header, and about every chunk's framing, body and tag */
		for (size_t k = 0; k < nb; k++) {
			size_t at[] = {b[k], b[k] + 1, b[k] + 4, b[k] + 5, b[k] - 1, k == 0 ? 3 : b[k] - 16};
			for (size_t j = 0; j < sizeof at / sizeof at[0]; j++) {
				if (at[j] >= f.mlen)
					continue;
				memcpy(m, f.msg, f.mlen);
				m[at[j]] ^= 0x01;
				refused(&f, f.key, m, f.mlen);
			}
		}
		/* cut at every chunk boundary, and a byte short of it */
		for (size_t k = 0; k + 1 < nb; k++) {
			refused(&f, f.key, f.msg, b[k]);
			refused(&f, f.key, f.msg, b[k + 1] - 1);
		}
		/* a byte too many */
		memcpy(m, f.msg, f.mlen);
		m[f.mlen] = 0;
		refused(&f, f.key, m, f.mlen + 1);
		/* another key */
		assert_int_equal(kh_random(other, sizeof other), KH_OK);
		refused(&f, other, f.msg, f.mlen);
		/* two chunks of the same size swapped */
		if (nb >= 5) {
			size_t n1 = b[2] - b[1];
			assert_int_equal(b[3] - b[2], n1);
			memcpy(m, f.msg, f.mlen);
			memcpy(m + b[1], f.msg + b[2], n1);
			memcpy(m + b[2], f.msg + b[1], n1);
			refused(&f, f.key, m, f.mlen);
		}
		free(m);
		drop(&f);
	}
}

/* A refused open leaves the file already at --out as it was. */
static void test_refused_keeps_old(void **state)
{
	struct kh_kc_envelope e;
	struct kh_kc_header h;
	struct fixture f;
	char *in, *out, msg[256];
	uint8_t *got;
	uint64_t w = 0;
	size_t n = 0;
	int fd;

	(void)state;
	make(&f, 200000, KH_KC_DELIVERY);
	in = path_in(f.dir, "in.khm");
	out = path_in(f.dir, "out");
	put_file(out, (const uint8_t *)"old", 3);
	put_file(in, f.msg, f.mlen - 1);
	fd = open(in, O_RDONLY);
	assert_int_not_equal(kh_kc_open_to(f.key, fd, out, &h, &e, &w, msg, sizeof msg), KH_OK);
	close(fd);
	got = kh_test_slurp(out, &n);
	assert_int_equal(n, 3);
	assert_memory_equal(got, "old", 3);
	free(got);
	assert_int_equal(entries(f.dir), 2);
	/* and the whole message replaces it */
	put_file(in, f.msg, f.mlen);
	fd = open(in, O_RDONLY);
	assert_int_equal(kh_kc_open_to(f.key, fd, out, &h, &e, &w, msg, sizeof msg), KH_OK);
	close(fd);
	got = kh_test_slurp(out, &n);
	assert_int_equal(n, f.len);
	assert_memory_equal(got, f.doc, n);
	free(got);
	assert_int_equal(entries(f.dir), 2);
	free(in);
	free(out);
	drop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_seal_matches),    cmocka_unit_test(test_seal_fd),
	    cmocka_unit_test(test_open_roundtrip),  cmocka_unit_test(test_read_head),
	    cmocka_unit_test(test_tampered),        cmocka_unit_test(test_refused_keeps_old),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
