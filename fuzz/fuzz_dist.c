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
 *   4  a chunk under a fixed key, at the place the next 4 bytes name;
 *   5  a receipt (kh_dist_receipt_parse), after one byte `flip`: without a key it parses exactly
 *      when it is KH_DIST_RECEIPT_BYTES long with the magic "KHRC" and version 1 (FORMAT,
 *      VERSION otherwise, the struct untouched), and its fields, written out again by an
 *      encoder of this harness's own, give its body byte for byte. With the fixed server key it
 *      parses exactly when it does without one and its last 64 bytes are the signature this
 *      harness works out over "keyhole dist v1 receipt" and the body (DIST_SIGNATURE
 *      otherwise). With that signature put in, it verifies, kh_dist_receipt_sign of its fields
 *      writes the same bytes, another key refuses it, and so does bit flip % 8 of byte
 *      flip % KH_DIST_RECEIPT_BYTES flipped, with the error that byte calls for.
 * The processor's own readers (the module's DIST and RUN commands) are fuzz_module's.
 * The fixed server key (32 bytes of 0x5A) is shared with fuzz/gen_corpus.c (keep equal).
 */
#include <string.h>

#include "keyhole/dist.h"
#include "keyhole/distsrv.h"

#include "fuzz_common.h"

/* The distribution server's signing key of selectors 3 and 5 (shared with fuzz/gen_corpus.c). */
#define FZ_DIST_SK_BYTE 0x5A

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
		memset(s.sk, FZ_DIST_SK_BYTE, sizeof s.sk);
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

/* The receipt's body as the format lays it out, written here without the library's writer. */
static void receipt_body(const struct kh_dist_receipt *r, uint8_t out[static KH_DIST_RECEIPT_BODY_LEN])
{
	uint8_t *p = out;

	memcpy(p, "KHRC", 4);
	p[4] = 1;
	p += 5;
	memcpy(p, r->id, sizeof r->id);
	p += sizeof r->id;
	kh_put_be64(p, r->account);
	kh_put_be32(p + 8, r->program);
	kh_put_be32(p + 12, r->version);
	p += 16;
	memcpy(p, r->fp, sizeof r->fp);
	p += sizeof r->fp;
	kh_put_be32(p, r->price);
	kh_put_be64(p + 4, r->time);
	kh_put_be32(p + 12, r->server);
	CHECK(p + 16 == out + KH_DIST_RECEIPT_BODY_LEN);
}

/* Our signature over a receipt's body: Ed25519 of the label and the body. */
static void receipt_sig(const uint8_t sk[static KH_ED25519_SK_LEN], const uint8_t *body, uint8_t sig[static 64])
{
	static const char label[] = "keyhole dist v1 receipt";
	uint8_t msg[sizeof label - 1 + KH_DIST_RECEIPT_BODY_LEN];

	memcpy(msg, label, sizeof label - 1);
	memcpy(msg + sizeof label - 1, body, KH_DIST_RECEIPT_BODY_LEN);
	CHECK(kh_ed25519_sign(sk, msg, sizeof msg, sig) == KH_OK);
}

/* Two receipts with the same fields (compared as written out: the struct has padding). */
static int same_receipt(const struct kh_dist_receipt *a, const struct kh_dist_receipt *b)
{
	uint8_t x[KH_DIST_RECEIPT_BODY_LEN], y[KH_DIST_RECEIPT_BODY_LEN];

	receipt_body(a, x);
	receipt_body(b, y);
	return memcmp(x, y, sizeof x) == 0;
}

static void receipt(const uint8_t *d, size_t n)
{
	static uint8_t sk[KH_ED25519_SK_LEN], pk[KH_ED25519_PK_LEN], other_pk[KH_ED25519_PK_LEN];
	static int ready;
	struct kh_dist_receipt r, rk, pat;
	uint8_t body[KH_DIST_RECEIPT_BODY_LEN], sig[KH_ED25519_SIG_LEN], good[KH_DIST_RECEIPT_BYTES],
		again[KH_DIST_RECEIPT_BYTES];
	const uint8_t *b;
	size_t pos;
	uint8_t flip;
	kh_err want, e;

	if (!ready) {
		uint8_t other[KH_ED25519_SK_LEN];
		memset(sk, FZ_DIST_SK_BYTE, sizeof sk);
		memset(other, FZ_DIST_SK_BYTE + 1, sizeof other);
		CHECK(kh_ed25519_public(sk, pk) == KH_OK && kh_ed25519_public(other, other_pk) == KH_OK);
		ready = 1;
	}
	if (n < 1)
		return;
	flip = d[0];
	b = d + 1;
	n--;
	/* the framing: length, magic, version, and nothing else */
	want = n != KH_DIST_RECEIPT_BYTES || memcmp(b, "KHRC", 4) != 0 ? KH_ERR_FORMAT
	       : b[4] != 1					     ? KH_ERR_VERSION
								     : KH_OK;
	memset(&pat, 0xC5, sizeof pat);
	memcpy(&r, &pat, sizeof pat);
	e = kh_dist_receipt_parse(b, n, NULL, &r);
	CHECK(e == want);
	memcpy(&rk, &pat, sizeof pat);
	if (e != KH_OK) {
		CHECK(memcmp(&r, &pat, sizeof r) == 0);
		CHECK(kh_dist_receipt_parse(b, n, pk, &rk) == want);
		CHECK(memcmp(&rk, &pat, sizeof rk) == 0);
		return;
	}
	/* read without a key: the fields are the body's bytes */
	receipt_body(&r, body);
	CHECK(memcmp(body, b, sizeof body) == 0);
	/* with the key: only our own signature over exactly this body */
	receipt_sig(sk, b, sig);
	e = kh_dist_receipt_parse(b, n, pk, &rk);
	if (memcmp(sig, b + KH_DIST_RECEIPT_BODY_LEN, sizeof sig) == 0) {
		CHECK(e == KH_OK && same_receipt(&rk, &r));
	} else {
		CHECK(e == KH_ERR_DIST_SIGNATURE);
		CHECK(memcmp(&rk, &pat, sizeof rk) == 0);
	}
	/* our signature put in: it verifies, and the signer writes these very bytes */
	memcpy(good, b, KH_DIST_RECEIPT_BODY_LEN);
	memcpy(good + KH_DIST_RECEIPT_BODY_LEN, sig, sizeof sig);
	memcpy(&rk, &pat, sizeof pat);
	CHECK(kh_dist_receipt_parse(good, sizeof good, pk, &rk) == KH_OK && same_receipt(&rk, &r));
	CHECK(kh_dist_receipt_sign(&r, sk, again) == KH_OK && memcmp(again, good, sizeof good) == 0);
	memcpy(&rk, &pat, sizeof pat);
	CHECK(kh_dist_receipt_parse(good, sizeof good, other_pk, &rk) == KH_ERR_DIST_SIGNATURE);
	CHECK(memcmp(&rk, &pat, sizeof rk) == 0);
	/* one bit flipped: refused, with the error its place calls for */
	pos = flip % KH_DIST_RECEIPT_BYTES;
	good[pos] ^= (uint8_t)(1u << (flip % 8));
	want = pos < 4 ? KH_ERR_FORMAT : pos == 4 ? KH_ERR_VERSION : KH_ERR_DIST_SIGNATURE;
	CHECK(kh_dist_receipt_parse(good, sizeof good, pk, &rk) == want);
	CHECK(memcmp(&rk, &pat, sizeof rk) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 6) {
	case 0: package(data + 1, size - 1); break;
	case 1: manifest(data + 1, size - 1); break;
	case 2:
	case 3: server_side((uint8_t)(data[0] % 6), data + 1, size - 1); break;
	case 4: chunk(data + 1, size - 1); break;
	default: receipt(data + 1, size - 1); break;
	}
	return 0;
}
