/*
 * The package a distribution server makes for one delivery, and its clear manifest
 * (include/keyhole/dist.h, docs/protocols/distribution.md). Both arrive from the host, which may
 * have changed any byte: every length is checked against what was given before it is used, and
 * the chunks' geometry against the file's size, so a reader never reads past what it has.
 */
#include <string.h>

#include "keyhole/dist.h"

static const uint8_t pkg_magic[4] = {'K', 'H', 'P', 'K'};

kh_err kh_dist_pkg_head(struct kh_wr *w, uint32_t program, uint32_t version, const uint8_t *manifest,
			size_t manifest_len, uint32_t n)
{
	if (!manifest || !manifest_len || manifest_len > KH_DIST_MANIFEST_MAX || !n || n > KH_DIST_CHUNKS_MAX)
		return KH_ERR_INVAL;
	kh_wr_bytes(w, pkg_magic, sizeof pkg_magic);
	kh_wr_u8(w, KH_DIST_PKG_VERSION);
	kh_wr_u32(w, program);
	kh_wr_u32(w, version);
	kh_wr_u32(w, (uint32_t)manifest_len);
	kh_wr_bytes(w, manifest, manifest_len);
	kh_wr_u32(w, n);
	return w->err;
}

kh_err kh_dist_pkg_parse(const uint8_t *b, size_t len, uint64_t file_size, struct kh_dist_pkg *p)
{
	uint64_t body, full;
	uint32_t mlen;

	memset(p, 0, sizeof *p);
	if (len < KH_DIST_PKG_HEAD_LEN)
		return KH_ERR_TRUNCATED;
	if (memcmp(b, pkg_magic, sizeof pkg_magic) != 0)
		return KH_ERR_FORMAT;
	if (b[4] != KH_DIST_PKG_VERSION)
		return KH_ERR_VERSION;
	mlen = kh_get_be32(b + 13);
	if (!mlen)
		return KH_ERR_FORMAT;
	if (mlen > KH_DIST_MANIFEST_MAX)
		return KH_ERR_TOO_LARGE;
	if (len < KH_DIST_PKG_HEAD_LEN + (size_t)mlen + 4)
		return KH_ERR_TRUNCATED;
	p->program = kh_get_be32(b + 5);
	p->version = kh_get_be32(b + 9);
	p->manifest = b + KH_DIST_PKG_HEAD_LEN;
	p->manifest_len = mlen;
	p->chunks = kh_get_be32(b + KH_DIST_PKG_HEAD_LEN + mlen);
	p->hdr_len = KH_DIST_PKG_HEAD_LEN + (size_t)mlen + 4;
	if (!p->chunks || p->chunks > KH_DIST_CHUNKS_MAX || file_size < p->hdr_len)
		return KH_ERR_FORMAT;
	/* every chunk but the last full; the last 1 to KH_DIST_CHUNK_MAX plaintext bytes */
	body = file_size - p->hdr_len;
	full = (uint64_t)(p->chunks - 1) * KH_DIST_CHUNK_CT_MAX;
	if (body <= full + KH_TAG_LEN || body > full + KH_DIST_CHUNK_CT_MAX)
		return KH_ERR_FORMAT;
	p->last_len = body - full;
	return KH_OK;
}

uint64_t kh_dist_pkg_chunk_off(const struct kh_dist_pkg *p, uint32_t i)
{
	return p->hdr_len + (uint64_t)i * KH_DIST_CHUNK_CT_MAX;
}

size_t kh_dist_pkg_chunk_len(const struct kh_dist_pkg *p, uint32_t i)
{
	return i + 1 == p->chunks ? (size_t)p->last_len : KH_DIST_CHUNK_CT_MAX;
}

/* ---- the manifest ---- */

static int name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == '+' || c == '-';
}

/* A name of 1 to KH_DIST_NAME_MAX name characters, copied with its terminator. */
static int take_name(const char *v, size_t n, char out[static KH_DIST_NAME_MAX + 1])
{
	if (!n || n > KH_DIST_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!name_char(v[i]))
			return 0;
	memcpy(out, v, n);
	out[n] = 0;
	return 1;
}

/* An absolute path: '/', then printable ASCII with no space, no "/../", no "//". */
static int take_path(const char *v, size_t n, char out[static KH_DIST_PATH_MAX + 1])
{
	if (n < 2 || n > KH_DIST_PATH_MAX || v[0] != '/')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] <= ' ' || v[i] > '~' || (v[i] == '/' && i + 1 < n && v[i + 1] == '/'))
			return 0;
	for (size_t i = 0; i + 2 < n; i++)
		if (v[i] == '/' && v[i + 1] == '.' && v[i + 2] == '.' && (i + 3 == n || v[i + 3] == '/'))
			return 0;
	memcpy(out, v, n);
	out[n] = 0;
	return 1;
}

enum { K_NAME, K_VERSION, K_KIND, K_INTERPRETER, K_ENTRY, K_REQUIRES, K_COUNT };
static const char *const keys[K_COUNT] = {"name", "version", "kind", "interpreter", "entry", "requires"};

/* One "key: value" line (without its newline) into m; seen marks the keys met. */
static int take_line(const char *l, size_t n, struct kh_dist_manifest *m, unsigned *seen)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t kl, vl;
	int k = -1;

	if (!colon || colon + 1 >= l + n || colon[1] != ' ')
		return 0;
	kl = (size_t)(colon - l);
	v = colon + 2;
	vl = n - kl - 2;
	for (int i = 0; i < K_COUNT; i++)
		if (strlen(keys[i]) == kl && memcmp(keys[i], l, kl) == 0)
			k = i;
	if (k < 0 || (k != K_REQUIRES && (*seen & (1u << k))))
		return 0;
	*seen |= 1u << k;
	switch (k) {
	case K_NAME: return take_name(v, vl, m->name);
	case K_VERSION: return take_name(v, vl, m->version);
	case K_ENTRY: return take_name(v, vl, m->entry);
	case K_INTERPRETER: return take_path(v, vl, m->interpreter);
	case K_KIND:
		if (vl == 3 && memcmp(v, "elf", 3) == 0)
			m->kind = KH_DIST_ELF;
		else if (vl == 6 && memcmp(v, "script", 6) == 0)
			m->kind = KH_DIST_SCRIPT;
		else
			return 0;
		return 1;
	default:
		if (m->nrequires >= KH_DIST_REQUIRES_MAX)
			return 0;
		return take_name(v, vl, m->requires[m->nrequires++]);
	}
}

kh_err kh_dist_manifest_parse(const uint8_t *b, size_t len, struct kh_dist_manifest *m, size_t *line)
{
	const char *s = (const char *)b;
	unsigned seen = 0;
	size_t at = 0, ln = 0;

	memset(m, 0, sizeof *m);
	if (line)
		*line = 0;
	if (!b || !len || len > KH_DIST_MANIFEST_MAX)
		goto bad;
	while (at < len) {
		const char *nl = memchr(s + at, '\n', len - at);
		size_t n;

		ln++;
		if (!nl)
			goto bad;
		n = (size_t)(nl - (s + at));
		for (size_t i = 0; i < n; i++)
			if (s[at + i] < ' ' || s[at + i] > '~')
				goto bad;
		if (!take_line(s + at, n, m, &seen))
			goto bad;
		at += n + 1;
	}
	ln++;
	/* the whole: name, version and kind; an interpreter exactly for a script */
	if ((seen & 7u) != 7u || ((seen & (1u << K_INTERPRETER)) != 0) != (m->kind == KH_DIST_SCRIPT))
		goto bad;
	if (!m->entry[0])
		memcpy(m->entry, m->name, sizeof m->entry);
	return KH_OK;
bad:
	if (line)
		*line = ln ? ln : 1;
	memset(m, 0, sizeof *m);
	return KH_ERR_FORMAT;
}
