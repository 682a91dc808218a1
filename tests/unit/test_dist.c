/*
 * The distribution codec (keyhole/dist.h): the key wrap bound to its delivery, the chunks bound
 * to their place, the package header and its geometry against the file's size, and the manifest.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/dist.h"
#include "testutil.h"

static struct kh_dist_prog prog(void)
{
	struct kh_dist_prog p;
	memset(&p, 0, sizeof p);
	p.program = 9;
	p.version = 2;
	p.chunks = 2;
	memset(p.manifest_hash, 0x11, 32);
	memset(p.he, 0x22, 32);
	return p;
}

static void test_wrap(void **state)
{
	uint8_t sk[32], pk[32], kx[32], out[32], w[KH_DIST_WRAP_LEN], bad[KH_DIST_WRAP_LEN];
	struct kh_dist_prog p = prog(), q;

	(void)state;
	assert_int_equal(kh_x25519_keygen(sk, pk), KH_OK);
	assert_int_equal(kh_random(kx, 32), KH_OK);
	assert_int_equal(kh_dist_wrap(pk, &p, kx, w), KH_OK);
	assert_int_equal(kh_dist_unwrap(sk, &p, w, out), KH_OK);
	assert_memory_equal(kx, out, 32);
	/* bound to program, version and H_E: each change fails, and leaves no key behind */
	q = p, q.program++;
	assert_int_equal(kh_dist_unwrap(sk, &q, w, out), KH_ERR_AUTH);
	assert_memory_equal(out, (uint8_t[32]){0}, 32);
	q = p, q.version++;
	assert_int_equal(kh_dist_unwrap(sk, &q, w, out), KH_ERR_AUTH);
	q = p, q.he[31] ^= 1;
	assert_int_equal(kh_dist_unwrap(sk, &q, w, out), KH_ERR_AUTH);
	memcpy(bad, w, sizeof w);
	bad[40] ^= 1;
	assert_int_equal(kh_dist_unwrap(sk, &p, bad, out), KH_ERR_AUTH);
}

static void test_chunks(void **state)
{
	static uint8_t pt[KH_DIST_CHUNK_MAX], ct[KH_DIST_CHUNK_CT_MAX], back[KH_DIST_CHUNK_MAX];
	struct kh_dist_prog p = prog(), q;
	uint8_t kx[32];

	(void)state;
	memset(pt, 0x5C, sizeof pt);
	memset(kx, 7, sizeof kx);
	/* chunk 0 of 2 must be full; the last may be short, never empty or over */
	assert_int_equal(kh_dist_chunk_seal(kx, &p, 0, pt, 10, ct), KH_ERR_FORMAT);
	assert_int_equal(kh_dist_chunk_seal(kx, &p, 1, pt, 0, ct), KH_ERR_FORMAT);
	assert_int_equal(kh_dist_chunk_seal(kx, &p, 2, pt, 10, ct), KH_ERR_FORMAT);
	assert_int_equal(kh_dist_chunk_seal(kx, &p, 1, pt, 10, ct), KH_OK);
	assert_int_equal(kh_dist_chunk_open(kx, &p, 1, ct, 10 + KH_TAG_LEN, back), KH_OK);
	assert_memory_equal(back, pt, 10);
	/* the same bytes are not chunk 1 of a package of 3 (not the last there), nor of another
	 * manifest */
	q = p, q.chunks = 3;
	assert_int_equal(kh_dist_chunk_open(kx, &q, 1, ct, 10 + KH_TAG_LEN, back), KH_ERR_FORMAT);
	q = p, q.manifest_hash[0] ^= 1;
	assert_int_equal(kh_dist_chunk_open(kx, &q, 1, ct, 10 + KH_TAG_LEN, back), KH_ERR_AUTH);
	assert_int_equal(kh_dist_chunk_seal(kx, &p, 0, pt, KH_DIST_CHUNK_MAX, ct), KH_OK);
	/* chunk 0's bytes given as chunk 1 (the last) */
	assert_int_equal(kh_dist_chunk_open(kx, &p, 1, ct, KH_DIST_CHUNK_CT_MAX, back), KH_ERR_AUTH);
	assert_int_equal(kh_dist_chunk_open(kx, &p, 0, ct, KH_TAG_LEN, back), KH_ERR_FORMAT);
}

static void test_package(void **state)
{
	static const char man[] = "name: a\nversion: 1\nkind: elf\n";
	uint8_t b[KH_DIST_PKG_HDR_MAX];
	struct kh_dist_pkg p;
	struct kh_wr w;
	uint64_t full;

	(void)state;
	kh_wr_init(&w, b, sizeof b);
	assert_int_equal(kh_dist_pkg_head(&w, 5, 6, (const uint8_t *)man, strlen(man), 3), KH_OK);
	assert_int_equal(w.len, KH_DIST_PKG_HEAD_LEN + strlen(man) + 4);
	full = w.len + 2 * KH_DIST_CHUNK_CT_MAX;
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 17, &p), KH_OK);
	assert_int_equal(p.program, 5);
	assert_int_equal(p.version, 6);
	assert_int_equal(p.chunks, 3);
	assert_int_equal(p.manifest_len, strlen(man));
	assert_memory_equal(p.manifest, man, strlen(man));
	assert_int_equal(kh_dist_pkg_chunk_off(&p, 0), w.len);
	assert_int_equal(kh_dist_pkg_chunk_off(&p, 2), w.len + 2 * KH_DIST_CHUNK_CT_MAX);
	assert_int_equal(kh_dist_pkg_chunk_len(&p, 1), KH_DIST_CHUNK_CT_MAX);
	assert_int_equal(kh_dist_pkg_chunk_len(&p, 2), 17);
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + KH_DIST_CHUNK_CT_MAX, &p), KH_OK);
	/* cut into the last chunk's tag, one chunk missing, or something appended */
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 16, &p), KH_ERR_FORMAT);
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full, &p), KH_ERR_FORMAT);
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + KH_DIST_CHUNK_CT_MAX + 1, &p), KH_ERR_FORMAT);
	/* the header itself */
	assert_int_equal(kh_dist_pkg_parse(b, w.len - 1, full + 17, &p), KH_ERR_TRUNCATED);
	assert_int_equal(kh_dist_pkg_parse(b, 10, full + 17, &p), KH_ERR_TRUNCATED);
	b[4] = 2;
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 17, &p), KH_ERR_VERSION);
	b[4] = 1;
	b[0] = 'X';
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 17, &p), KH_ERR_FORMAT);
	b[0] = 'K';
	kh_put_be32(b + 13, KH_DIST_MANIFEST_MAX + 1);
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 17, &p), KH_ERR_TOO_LARGE);
	kh_put_be32(b + 13, 0);
	assert_int_equal(kh_dist_pkg_parse(b, w.len, full + 17, &p), KH_ERR_FORMAT);
	/* no chunks */
	kh_wr_init(&w, b, sizeof b);
	assert_int_equal(kh_dist_pkg_head(&w, 5, 6, (const uint8_t *)man, strlen(man), 0), KH_ERR_INVAL);
}

static kh_err manifest(const char *s, struct kh_dist_manifest *m, size_t *line)
{
	return kh_dist_manifest_parse((const uint8_t *)s, strlen(s), m, line);
}

/* A receipt reads back as signed; every flipped byte, a wrong length or another server's key is refused. */
static void test_receipt(void **state)
{
	uint8_t sk[64], pk[32], sk2[64], pk2[32], b[KH_DIST_RECEIPT_BYTES], c[KH_DIST_RECEIPT_BYTES + 1];
	struct kh_dist_receipt r, got;

	(void)state;
	memset(&r, 0, sizeof r);
	memset(r.id, 0xA5, sizeof r.id);
	r.account = 0x0102030405060708ull;
	r.program = 7;
	r.version = 3;
	memset(r.fp, 0x3C, sizeof r.fp);
	r.price = 1250;
	r.time = 1800000000;
	r.server = 0xFE000001u;
	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	assert_int_equal(kh_ed25519_keygen(sk2, pk2), KH_OK);
	assert_int_equal(kh_dist_receipt_sign(&r, sk, b), KH_OK);
	assert_int_equal(kh_dist_receipt_parse(b, sizeof b, pk, &got), KH_OK);
	assert_memory_equal(got.id, r.id, sizeof r.id);
	assert_memory_equal(got.fp, r.fp, sizeof r.fp);
	assert_true(got.account == r.account && got.program == r.program && got.version == r.version &&
		    got.price == r.price && got.time == r.time && got.server == r.server);
	assert_int_equal(kh_dist_receipt_parse(b, sizeof b, NULL, &got), KH_OK);
	assert_int_equal(kh_dist_receipt_parse(b, sizeof b, pk2, &got), KH_ERR_DIST_SIGNATURE);
	assert_int_equal(kh_dist_receipt_parse(b, sizeof b - 1, pk, &got), KH_ERR_FORMAT);
	memcpy(c, b, sizeof b);
	c[sizeof b] = 0;
	assert_int_equal(kh_dist_receipt_parse(c, sizeof c, pk, &got), KH_ERR_FORMAT);
	for (size_t i = 0; i < sizeof b; i++) {
		memcpy(c, b, sizeof b);
		c[i] ^= 0x01;
		assert_int_not_equal(kh_dist_receipt_parse(c, sizeof b, pk, &got), KH_OK);
	}
	memcpy(c, b, sizeof b);
	c[4] = 2;
	assert_int_equal(kh_dist_receipt_parse(c, sizeof b, NULL, &got), KH_ERR_VERSION);
	kh_wipe(sk, sizeof sk);
	kh_wipe(sk2, sizeof sk2);
}

static void test_manifest(void **state)
{
	static const char *const bad[] = {
		"",                                                  /* empty */
		"name: a\nversion: 1\nkind: elf",                    /* no last newline */
		"name: a\nversion: 1\n",                             /* no kind */
		"name: a\nversion: 1\nkind: exe\n",                  /* unknown kind */
		"name: a\nname: b\nversion: 1\nkind: elf\n",         /* twice */
		"name: a\nversion: 1\nkind: elf\ncolour: red\n",     /* unknown key */
		"name: a b\nversion: 1\nkind: elf\n",                /* a space in a name */
		"name: \nversion: 1\nkind: elf\n",                   /* empty value */
		"name:a\nversion: 1\nkind: elf\n",                   /* no space after the colon */
		"name: a\nversion: 1\nkind: script\n",               /* a script with no interpreter */
		"name: a\nversion: 1\nkind: elf\ninterpreter: /bin/sh\n", /* an ELF with one */
		"name: a\nversion: 1\nkind: script\ninterpreter: sh\n",   /* not absolute */
		"name: a\nversion: 1\nkind: script\ninterpreter: /bin/../sh\n",
		"name: a\nversion: 1\nkind: elf\n\n",                /* an empty line */
		"name: a\r\nversion: 1\nkind: elf\n",                /* a control character */
	};
	struct kh_dist_manifest m;
	size_t line;

	(void)state;
	assert_int_equal(manifest("name: hello\nversion: 3.1\nkind: elf\nrequires: libc.so.6\nrequires: libm.so.6\n", &m,
				  &line),
			 KH_OK);
	assert_string_equal(m.name, "hello");
	assert_string_equal(m.version, "3.1");
	assert_int_equal(m.kind, KH_DIST_ELF);
	assert_string_equal(m.entry, "hello");
	assert_int_equal(m.nrequires, 2);
	assert_string_equal(m.requires[1], "libm.so.6");
	assert_int_equal(manifest("kind: script\ninterpreter: /bin/sh\nname: s\nversion: 1\nentry: run-s\n", &m, &line),
			 KH_OK);
	assert_int_equal(m.kind, KH_DIST_SCRIPT);
	assert_string_equal(m.interpreter, "/bin/sh");
	assert_string_equal(m.entry, "run-s");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&m, 0xA5, sizeof m);
		assert_int_equal(manifest(bad[i], &m, &line), KH_ERR_FORMAT);
		assert_true(line >= 1);
		assert_string_equal(m.name, ""); /* nothing half-read */
	}
	/* the line named is the one at fault */
	assert_int_equal(manifest("name: a\nversion: 1\nkind: elf\ncolour: red\n", &m, &line), KH_ERR_FORMAT);
	assert_int_equal(line, 4);
	{
		char many[1024] = "name: a\nversion: 1\nkind: elf\n";
		for (int i = 0; i <= KH_DIST_REQUIRES_MAX; i++)
			strcat(many, "requires: x\n");
		assert_int_equal(manifest(many, &m, &line), KH_ERR_FORMAT);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wrap),
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_package),
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_receipt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
