/*
 * libFuzzer harness: what program distribution reads from outside (docs/protocols/distribution.md),
 * the first input byte choosing the reader:
 *   0  a package's header against a file size (the next 8 bytes, big-endian): on success the
 *      manifest lies inside what was given, and the chunks tile the file exactly, every one
 *      of them 17 to KH_DIST_CHUNK_CT_MAX bytes, all full but the last;
 *   1  a manifest: on success every field is what the grammar allows, and it reads the same
 *      again; on failure the struct is left blank and the line named is within the input;
 *   2  a processor's hello, as the server reads it (certificates against a fixed root);
 *   3  a processor's answer to AUTH, against a fixed session;
 *   4  a chunk under a fixed key, at the place the next 4 bytes name.
 * The processor's own readers (the module's DIST and RUN commands) are fuzz_module's.
 */
#include <string.h>

#include "keyhole/dist.h"
#include "keyhole/distsrv.h"

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void package(const uint8_t *d, size_t n)
{
	struct kh_dist_pkg p;
	uint64_t size;

	if (n < 8)
		return;
	size = (uint64_t)kh_get_be32(d) << 32 | kh_get_be32(d + 4);
	d += 8;
	n -= 8;
	if (kh_dist_pkg_parse(d, n, size, &p) != KH_OK)
		return;
	CHECK(p.manifest >= d && p.manifest + p.manifest_len <= d + n);
	CHECK(p.manifest_len >= 1 && p.manifest_len <= KH_DIST_MANIFEST_MAX);
	CHECK(p.hdr_len <= n && p.chunks >= 1 && p.chunks <= KH_DIST_CHUNKS_MAX);
	for (uint32_t i = 0; i + 1 < p.chunks; i += p.chunks > 64 ? p.chunks / 64 : 1)
		CHECK(kh_dist_pkg_chunk_len(&p, i) == KH_DIST_CHUNK_CT_MAX &&
		      kh_dist_pkg_chunk_off(&p, i + 1) == kh_dist_pkg_chunk_off(&p, i) + KH_DIST_CHUNK_CT_MAX);
	CHECK(kh_dist_pkg_chunk_len(&p, p.chunks - 1) > KH_TAG_LEN &&
	      kh_dist_pkg_chunk_len(&p, p.chunks - 1) <= KH_DIST_CHUNK_CT_MAX);
	CHECK(kh_dist_pkg_chunk_off(&p, p.chunks - 1) + kh_dist_pkg_chunk_len(&p, p.chunks - 1) == size);
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > KH_DIST_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      strchr("._+-", s[i])))
			return 0;
	return 1;
}

static void manifest(const uint8_t *d, size_t n)
{
	static struct kh_dist_manifest m, again, blank;
	static char text[KH_DIST_MANIFEST_MAX * 2];
	size_t line, len = 0;

	if (kh_dist_manifest_parse(d, n, &m, &line) != KH_OK) {
		CHECK(memcmp(&m, &blank, sizeof m) == 0);
		CHECK(line >= 1 && line <= n + 2);
		return;
	}
	CHECK(name_ok(m.name) && name_ok(m.version) && name_ok(m.entry));
	CHECK(m.kind == KH_DIST_ELF || m.kind == KH_DIST_SCRIPT);
	CHECK((m.kind == KH_DIST_SCRIPT) == (m.interpreter[0] == '/'));
	CHECK(m.nrequires <= KH_DIST_REQUIRES_MAX);
	/* written out again, it reads the same */
	len += (size_t)snprintf(text + len, sizeof text - len, "name: %s\nversion: %s\nkind: %s\nentry: %s\n", m.name,
				m.version, m.kind == KH_DIST_ELF ? "elf" : "script", m.entry);
	if (m.kind == KH_DIST_SCRIPT)
		len += (size_t)snprintf(text + len, sizeof text - len, "interpreter: %s\n", m.interpreter);
	for (unsigned i = 0; i < m.nrequires; i++)
		len += (size_t)snprintf(text + len, sizeof text - len, "requires: %s\n", m.requires[i]);
	if (len > KH_DIST_MANIFEST_MAX)
		return;
	CHECK(kh_dist_manifest_parse((const uint8_t *)text, len, &again, &line) == KH_OK);
	CHECK(memcmp(&m, &again, sizeof m) == 0);
}

static void server_side(uint8_t which, const uint8_t *d, size_t n)
{
	static struct kh_dist_server s;
	static struct kh_dist_peer p, q;
	static int ready;

	if (!ready) {
		memset(s.sk, 0x5A, sizeof s.sk);
		CHECK(kh_ed25519_public(s.sk, s.pk) == KH_OK);
		memset(s.root_pk, 0x33, sizeof s.root_pk);
		memset(s.cert_hash, 0x44, sizeof s.cert_hash);
		memset(&q, 0x11, sizeof q);
		memcpy(q.sign_pk, s.pk, sizeof q.sign_pk);
		ready = 1;
	}
	if (which == 2) {
		if (kh_dist_srv_hello(&s, d, n, 0, &p) == KH_OK)
			CHECK(0); /* nothing chains to a root whose key nobody holds */
	} else {
		kh_err r = kh_dist_srv_resp(&s, &q, d, n);
		CHECK(r != KH_OK); /* no signature over this session is in the input unless forged */
	}
}

static void chunk(const uint8_t *d, size_t n)
{
	static uint8_t pt[KH_DIST_CHUNK_CT_MAX];
	struct kh_dist_prog prog;
	uint8_t kx[KH_KEY_LEN];

	if (n < 8)
		return;
	memset(&prog, 0, sizeof prog);
	memset(kx, 0x77, sizeof kx);
	prog.program = 1;
	prog.version = 1;
	prog.chunks = kh_get_be32(d);
	if (n - 8 > KH_DIST_CHUNK_CT_MAX)
		return;
	if (kh_dist_chunk_open(kx, &prog, kh_get_be32(d + 4), d + 8, n - 8, pt) == KH_OK)
		CHECK(n - 8 > KH_TAG_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 5) {
	case 0: package(data + 1, size - 1); break;
	case 1: manifest(data + 1, size - 1); break;
	case 2:
	case 3: server_side((uint8_t)(data[0] % 5), data + 1, size - 1); break;
	default: chunk(data + 1, size - 1); break;
	}
	return 0;
}
