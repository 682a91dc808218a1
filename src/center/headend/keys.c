/*
 * The headend key file: the operator's management master (from which every card's Kp,
 * the group keys and the broadcast key are diversified, so EMMs can be made here), the service
 * keys that seal ECMs (at most two versions per id, for rotation without a gap), and the EMM
 * sequence counters per card, per group and for all cards, which must never repeat. A small
 * line-based text file, mode 0600, replaced atomically under an flock; the format is in
 * docs/internals/headend.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/headend.h"

#define HEADER "keyhole-headend-keys"
#define FORMAT_VERSION 1
#define MAX_KEYS (256 * KH_HEADEND_KEY_VERSIONS)

struct skey {
	uint8_t id;
	uint32_t version;
	uint8_t key[KH_CAS_KEY_LEN];
};

struct seqent {
	uint8_t type; /* KH_EMM_GROUP or KH_EMM_UNIQUE */
	uint32_t addr;
	uint32_t seq;
};

/* The ECM signer (index 0) and the EMM signer (1): key, serial and certificate. */
struct hsigner {
	int have;
	struct kh_cas_signer sg;
	size_t len;
	uint8_t der[KH_CERT_MAX];
};

struct kh_headend_keys {
	uint8_t master[32];
	struct hsigner signer[2];
	size_t nkeys;
	struct skey keys[MAX_KEYS]; /* sorted by id, then version */
	uint32_t seq_all;
	uint32_t revoked_version; /* of the newest revoked list issued; every ECM asks for it */
	size_t nseq, capseq;
	struct seqent *seq; /* sorted by type, then address */
};

static struct kh_headend_keys *keys_alloc(void)
{
	return calloc(1, sizeof(struct kh_headend_keys));
}

void kh_headend_keys_free(struct kh_headend_keys *k)
{
	if (!k)
		return;
	free(k->seq);
	kh_wipe(k, sizeof *k);
	free(k);
}

static int key_cmp(const struct skey *a, uint8_t id, uint32_t version)
{
	if (a->id != id)
		return a->id < id ? -1 : 1;
	if (a->version != version)
		return a->version < version ? -1 : 1;
	return 0;
}

/* Insert keeping the order; KH_ERR_EXISTS for a duplicate, KH_ERR_TOO_LARGE when full. */
static kh_err key_insert(struct kh_headend_keys *k, uint8_t id, uint32_t version, const uint8_t key[32])
{
	size_t i = 0;
	while (i < k->nkeys && key_cmp(&k->keys[i], id, version) < 0)
		i++;
	if (i < k->nkeys && key_cmp(&k->keys[i], id, version) == 0)
		return KH_ERR_EXISTS;
	if (k->nkeys == MAX_KEYS)
		return KH_ERR_TOO_LARGE;
	memmove(&k->keys[i + 1], &k->keys[i], (k->nkeys - i) * sizeof k->keys[0]);
	k->keys[i].id = id;
	k->keys[i].version = version;
	memcpy(k->keys[i].key, key, KH_CAS_KEY_LEN);
	k->nkeys++;
	return KH_OK;
}

static size_t versions_of(const struct kh_headend_keys *k, uint8_t id, size_t *first)
{
	size_t n = 0;
	for (size_t i = 0; i < k->nkeys; i++)
		if (k->keys[i].id == id) {
			if (n == 0 && first)
				*first = i;
			n++;
		}
	return n;
}

static void key_remove(struct kh_headend_keys *k, size_t i)
{
	kh_wipe(&k->keys[i], sizeof k->keys[i]);
	memmove(&k->keys[i], &k->keys[i + 1], (k->nkeys - i - 1) * sizeof k->keys[0]);
	k->nkeys--;
	kh_wipe(&k->keys[k->nkeys], sizeof k->keys[0]);
}

kh_err kh_headend_keys_create(const uint8_t master[static 32], struct kh_headend_keys **out)
{
	struct kh_headend_keys *k = keys_alloc();
	uint8_t key[KH_CAS_KEY_LEN];
	kh_err r;

	if (!k)
		return KH_ERR_NOMEM;
	memcpy(k->master, master, 32);
	if ((r = kh_random(key, sizeof key)) != KH_OK)
		goto out;
	if ((r = key_insert(k, 1, 1, key)) != KH_OK)
		goto out;
	*out = k;
	k = NULL;
out:
	kh_wipe(key, sizeof key);
	kh_headend_keys_free(k);
	return r;
}

/* ---- sequence counters ---- */

static int seq_cmp(const struct seqent *e, uint8_t type, uint32_t addr)
{
	if (e->type != type)
		return e->type < type ? -1 : 1;
	if (e->addr != addr)
		return e->addr < addr ? -1 : 1;
	return 0;
}

/* Binary search: index of the entry, or where it would go (*found says which). */
static size_t seq_find(const struct kh_headend_keys *k, uint8_t type, uint32_t addr, int *found)
{
	size_t lo = 0, hi = k->nseq;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = seq_cmp(&k->seq[mid], type, addr);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

static kh_err seq_set(struct kh_headend_keys *k, uint8_t type, uint32_t addr, uint32_t seq, int must_be_new)
{
	int found;
	size_t i = seq_find(k, type, addr, &found);
	if (found) {
		if (must_be_new)
			return KH_ERR_EXISTS;
		k->seq[i].seq = seq;
		return KH_OK;
	}
	if (k->nseq == k->capseq) {
		size_t cap = k->capseq ? k->capseq * 2 : 16;
		struct seqent *p = realloc(k->seq, cap * sizeof *p);
		if (!p)
			return KH_ERR_NOMEM;
		k->seq = p;
		k->capseq = cap;
	}
	memmove(&k->seq[i + 1], &k->seq[i], (k->nseq - i) * sizeof k->seq[0]);
	k->seq[i].type = type;
	k->seq[i].addr = addr;
	k->seq[i].seq = seq;
	k->nseq++;
	return KH_OK;
}

uint32_t kh_headend_keys_seq(const struct kh_headend_keys *k, enum kh_emm_addr type, uint32_t addr)
{
	int found;
	size_t i;
	if (type == KH_EMM_ALL)
		return k->seq_all;
	i = seq_find(k, (uint8_t)type, addr, &found);
	return found ? k->seq[i].seq : 0;
}

kh_err kh_headend_keys_next_seq(struct kh_headend_keys *k, enum kh_emm_addr type, uint32_t addr, uint32_t *seq)
{
	uint32_t cur;
	kh_err r;

	if (type != KH_EMM_UNIQUE && type != KH_EMM_GROUP && type != KH_EMM_ALL)
		return KH_ERR_INVAL;
	if (type == KH_EMM_ALL && addr != 0)
		return KH_ERR_INVAL;
	cur = kh_headend_keys_seq(k, type, addr);
	if (cur == UINT32_MAX)
		return KH_ERR_TOO_LARGE;
	if (type == KH_EMM_ALL)
		k->seq_all = cur + 1;
	else if ((r = seq_set(k, (uint8_t)type, addr, cur + 1, 0)) != KH_OK)
		return r;
	*seq = cur + 1;
	return KH_OK;
}

size_t kh_headend_keys_seq_count(const struct kh_headend_keys *k)
{
	return k->nseq;
}

void kh_headend_keys_seq_at(const struct kh_headend_keys *k, size_t i, enum kh_emm_addr *type, uint32_t *addr,
			    uint32_t *seq)
{
	*type = (enum kh_emm_addr)k->seq[i].type;
	*addr = k->seq[i].addr;
	*seq = k->seq[i].seq;
}

/* ---- service keys ---- */

static struct hsigner *signer_slot(const struct kh_headend_keys *k, enum kh_role role)
{
	if (role != KH_ROLE_ECM_SIGNER && role != KH_ROLE_EMM_SIGNER)
		return NULL;
	return (struct hsigner *)(uintptr_t)&k->signer[role == KH_ROLE_EMM_SIGNER];
}

kh_err kh_headend_keys_signer(const struct kh_headend_keys *k, enum kh_role role, struct kh_cas_signer *sg,
			      const uint8_t **der, size_t *len)
{
	const struct hsigner *s = signer_slot(k, role);

	if (s == NULL)
		return KH_ERR_INVAL;
	if (!s->have)
		return KH_ERR_NOTFOUND;
	if (sg)
		*sg = s->sg;
	if (der) {
		*der = s->der;
		*len = s->len;
	}
	return KH_OK;
}

kh_err kh_headend_keys_set_signer(struct kh_headend_keys *k, enum kh_role role, const struct kh_cas_signer *sg,
				  const uint8_t *der, size_t len)
{
	struct hsigner *s = signer_slot(k, role);

	if (s == NULL || sg == NULL || der == NULL || len == 0)
		return KH_ERR_INVAL;
	if (len > KH_CERT_MAX)
		return KH_ERR_TOO_LARGE;
	s->sg = *sg;
	memcpy(s->der, der, len);
	s->len = len;
	s->have = 1;
	return KH_OK;
}

uint32_t kh_headend_keys_revoked(const struct kh_headend_keys *k)
{
	return k->revoked_version;
}

void kh_headend_keys_set_revoked(struct kh_headend_keys *k, uint32_t version)
{
	if (version > k->revoked_version)
		k->revoked_version = version;
}

void kh_headend_keys_master(const struct kh_headend_keys *k, uint8_t master[static 32])
{
	memcpy(master, k->master, 32);
}

size_t kh_headend_keys_count(const struct kh_headend_keys *k)
{
	return k->nkeys;
}

void kh_headend_keys_at(const struct kh_headend_keys *k, size_t i, uint8_t *id, uint32_t *version,
			uint8_t key[KH_CAS_KEY_LEN])
{
	if (id)
		*id = k->keys[i].id;
	if (version)
		*version = k->keys[i].version;
	if (key)
		memcpy(key, k->keys[i].key, KH_CAS_KEY_LEN);
}

kh_err kh_headend_keys_get(const struct kh_headend_keys *k, uint8_t id, uint32_t version,
			   uint8_t key[static KH_CAS_KEY_LEN], uint32_t *version_out)
{
	const struct skey *best = NULL;
	for (size_t i = 0; i < k->nkeys; i++) {
		if (k->keys[i].id != id)
			continue;
		if (version ? k->keys[i].version == version : (!best || k->keys[i].version > best->version))
			best = &k->keys[i];
	}
	if (!best)
		return KH_ERR_NOTFOUND;
	memcpy(key, best->key, KH_CAS_KEY_LEN);
	if (version_out)
		*version_out = best->version;
	return KH_OK;
}

kh_err kh_headend_keys_rotate(struct kh_headend_keys *k, uint8_t id, uint32_t *new_version)
{
	uint8_t key[KH_CAS_KEY_LEN];
	uint32_t v = 0;
	size_t first = 0;
	kh_err r;

	for (size_t i = 0; i < k->nkeys; i++)
		if (k->keys[i].id == id && k->keys[i].version > v)
			v = k->keys[i].version;
	if (v == UINT32_MAX)
		return KH_ERR_TOO_LARGE;
	if ((r = kh_random(key, sizeof key)) != KH_OK)
		goto out;
	/* Make room first so that a full table never loses a key for nothing. */
	while (versions_of(k, id, &first) >= KH_HEADEND_KEY_VERSIONS)
		key_remove(k, first); /* ordered by version: the first is the oldest */
	if ((r = key_insert(k, id, v + 1, key)) != KH_OK)
		goto out;
	if (new_version)
		*new_version = v + 1;
out:
	kh_wipe(key, sizeof key);
	return r;
}

kh_err kh_headend_keys_put(struct kh_headend_keys *k, uint8_t id, uint32_t version, const uint8_t key[static 32])
{
	size_t first = 0;
	kh_err r;

	if (version == 0)
		return KH_ERR_INVAL;
	for (size_t i = 0; i < k->nkeys; i++)
		if (key_cmp(&k->keys[i], id, version) == 0) {
			memcpy(k->keys[i].key, key, KH_CAS_KEY_LEN);
			return KH_OK;
		}
	if ((r = key_insert(k, id, version, key)) != KH_OK)
		return r;
	while (versions_of(k, id, &first) > KH_HEADEND_KEY_VERSIONS)
		key_remove(k, first); /* ordered by version: the first is the oldest */
	return KH_OK;
}

/* ---- text form ---- */

/* Next space-separated field of a line; NULL when there is none. Fields are separated by one
 * space exactly (the file is written by this code; a hand edit must keep the shape). */
static const char *field(const char **p, const char *end, size_t *n)
{
	const char *s = *p, *e;
	if (s >= end)
		return NULL;
	e = memchr(s, ' ', (size_t)(end - s));
	if (!e)
		e = end;
	*n = (size_t)(e - s);
	*p = e < end ? e + 1 : end;
	return *n ? s : NULL;
}

static int parse_dec(const char *s, size_t n, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;
	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (x > (max - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return 0;
}

static int parse_hex32(const char *s, size_t n, uint32_t *v)
{
	uint32_t x = 0;
	if (n != 8)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		x = x << 4 | d;
	}
	*v = x;
	return 0;
}

static int is(const char *s, size_t n, const char *word)
{
	return s && n == strlen(word) && memcmp(s, word, n) == 0;
}

/* One line (without its newline): KH_OK, or the error for it. */
static kh_err parse_line(struct kh_headend_keys *k, const char *p, const char *end, int *have_master, int *have_all)
{
	const char *w, *a, *b, *c;
	size_t wn, an, bn, cn;
	uint64_t x, y;
	uint32_t ua;
	kh_err r;

	w = field(&p, end, &wn);
	if (is(w, wn, "master")) {
		a = field(&p, end, &an);
		if (!a || an != 64 || p != end || *have_master)
			return KH_ERR_FORMAT;
		if (kh_hex_decode(a, an, k->master, 32) != KH_OK)
			return KH_ERR_FORMAT;
		*have_master = 1;
		return KH_OK;
	}
	if (is(w, wn, "service")) {
		uint8_t key[KH_CAS_KEY_LEN];
		a = field(&p, end, &an);
		b = field(&p, end, &bn);
		c = field(&p, end, &cn);
		if (!a || !b || !c || p != end || cn != 64 || parse_dec(a, an, 255, &x) != 0 ||
		    parse_dec(b, bn, UINT32_MAX, &y) != 0 || y == 0)
			return KH_ERR_FORMAT;
		if (kh_hex_decode(c, cn, key, sizeof key) != KH_OK)
			return KH_ERR_FORMAT;
		if (versions_of(k, (uint8_t)x, NULL) >= KH_HEADEND_KEY_VERSIONS)
			r = KH_ERR_FORMAT;
		else
			r = key_insert(k, (uint8_t)x, (uint32_t)y, key);
		kh_wipe(key, sizeof key);
		return r == KH_OK ? KH_OK : KH_ERR_FORMAT;
	}
	if (is(w, wn, "revoked")) {
		a = field(&p, end, &an);
		if (!a || p != end || k->revoked_version || parse_dec(a, an, UINT32_MAX, &x) != 0 || x == 0)
			return KH_ERR_FORMAT;
		k->revoked_version = (uint32_t)x;
		return KH_OK;
	}
	if (is(w, wn, "signer")) {
		struct hsigner *sg;
		a = field(&p, end, &an);
		b = field(&p, end, &bn);
		c = field(&p, end, &cn);
		w = field(&p, end, &wn);
		if (!a || !b || !c || !w || p != end || cn != 64 || wn % 2 || wn / 2 > KH_CERT_MAX || wn == 0)
			return KH_ERR_FORMAT;
		if (!is(a, an, "ecm") && !is(a, an, "emm"))
			return KH_ERR_FORMAT;
		sg = &k->signer[is(a, an, "emm")];
		if (sg->have || parse_hex32(b, bn, &sg->sg.serial) != 0 ||
		    kh_hex_decode(c, cn, sg->sg.sk, sizeof sg->sg.sk) != KH_OK ||
		    kh_hex_decode(w, wn, sg->der, wn / 2) != KH_OK)
			return KH_ERR_FORMAT;
		sg->len = wn / 2;
		/* key, serial and certificate must belong together: a hand-edited line that does not
		 * would make every card refuse what this headend signs */
		{
			struct kh_cert_info ci;
			uint8_t pk[32];
			enum kh_role want = is(a, an, "emm") ? KH_ROLE_EMM_SIGNER : KH_ROLE_ECM_SIGNER;
			if (kh_cert_read(sg->der, sg->len, &ci) != KH_OK || ci.role != want || ci.ua != sg->sg.serial ||
			    kh_ed25519_public(sg->sg.sk, pk) != KH_OK || memcmp(pk, ci.pub, 32) != 0)
				return KH_ERR_FORMAT;
		}
		sg->have = 1;
		return KH_OK;
	}
	if (is(w, wn, "seq")) {
		a = field(&p, end, &an);
		if (is(a, an, "all")) {
			b = field(&p, end, &bn);
			if (!b || p != end || *have_all || parse_dec(b, bn, UINT32_MAX, &y) != 0)
				return KH_ERR_FORMAT;
			k->seq_all = (uint32_t)y;
			*have_all = 1;
			return KH_OK;
		}
		b = field(&p, end, &bn);
		c = field(&p, end, &cn);
		if (!b || !c || p != end || parse_dec(c, cn, UINT32_MAX, &y) != 0)
			return KH_ERR_FORMAT;
		if (is(a, an, "group")) {
			if (parse_dec(b, bn, UINT32_MAX, &x) != 0)
				return KH_ERR_FORMAT;
			ua = (uint32_t)x;
		} else if (is(a, an, "card")) {
			if (parse_hex32(b, bn, &ua) != 0)
				return KH_ERR_FORMAT;
		} else {
			return KH_ERR_FORMAT;
		}
		r = seq_set(k, is(a, an, "group") ? KH_EMM_GROUP : KH_EMM_UNIQUE, ua, (uint32_t)y, 1);
		return r == KH_ERR_EXISTS ? KH_ERR_FORMAT : r;
	}
	return KH_ERR_FORMAT;
}

kh_err kh_headend_keys_parse(const uint8_t *text, size_t len, struct kh_headend_keys **out, size_t *line)
{
	const char *p = (const char *)text, *end = p + len;
	struct kh_headend_keys *k = keys_alloc();
	int have_master = 0, have_all = 0;
	size_t ln = 0;
	kh_err r = KH_OK;

	if (!k)
		return KH_ERR_NOMEM;
	if (len == 0 || text[len - 1] != '\n') {
		/* the last line is cut short (or the file is empty): name the last line */
		ln = 1;
		for (size_t i = 0; i + 1 < len; i++)
			ln += text[i] == '\n';
		r = KH_ERR_FORMAT;
		goto out;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		ln++;
		for (const char *q = p; q < nl; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7E || (*q == ' ' && q + 1 == nl)) {
				r = KH_ERR_FORMAT;
				goto out;
			}
		if (ln == 1) {
			char want[64];
			int wl = snprintf(want, sizeof want, "%s %d", HEADER, FORMAT_VERSION);
			if ((size_t)(nl - p) == (size_t)wl && memcmp(p, want, (size_t)wl) == 0) {
				p = nl + 1;
				continue;
			}
			/* the right file type with another version is a version error, not a format one */
			r = (size_t)(nl - p) > sizeof HEADER && memcmp(p, HEADER " ", sizeof HEADER) == 0
				    ? KH_ERR_VERSION
				    : KH_ERR_FORMAT;
			goto out;
		}
		if (nl > p && *p != '#' && (r = parse_line(k, p, nl, &have_master, &have_all)) != KH_OK)
			goto out;
		p = nl + 1;
	}
	if (!have_master || !have_all || k->nkeys == 0) {
		ln = 0;
		r = KH_ERR_FORMAT;
		goto out;
	}
	*out = k;
	k = NULL;
	ln = 0;
out:
	if (line)
		*line = ln;
	kh_headend_keys_free(k);
	return r;
}

kh_err kh_headend_keys_load(const char *path, struct kh_headend_keys **out, size_t *line)
{
	uint8_t *data = NULL;
	size_t len = 0;
	kh_err r;

	if (line)
		*line = 0;
	if ((r = kh_keyfile_read(path, KH_HEADEND_KEYFILE_MAX, &data, &len)) != KH_OK)
		return r;
	r = kh_headend_keys_parse(data, len, out, line);
	kh_file_free(data, len);
	return r;
}

kh_err kh_headend_keys_format(const struct kh_headend_keys *k, uint8_t **text, size_t *len)
{
	/* header + master + signers + keys + seq lines, each bounded */
	size_t cap = 64 + 8 + 65 + 2 * (20 + 65 + 2 * KH_CERT_MAX + 1) + k->nkeys * (8 + 4 + 11 + 65) + 32 +
		     k->nseq * 40 + 1;
	char *buf = malloc(cap), hex[65], cert[2 * KH_CERT_MAX + 1];
	size_t n = 0;
	int w;

	if (!buf)
		return KH_ERR_NOMEM;
	kh_hex_encode(k->master, 32, hex);
	w = snprintf(buf, cap, "%s %d\nmaster %s\n", HEADER, FORMAT_VERSION, hex);
	n += (size_t)w;
	for (size_t i = 0; i < 2; i++) {
		if (!k->signer[i].have)
			continue;
		kh_hex_encode(k->signer[i].sg.sk, 32, hex);
		kh_hex_encode(k->signer[i].der, k->signer[i].len, cert);
		w = snprintf(buf + n, cap - n, "signer %s %08lX %s %s\n", i ? "emm" : "ecm",
			     (unsigned long)k->signer[i].sg.serial, hex, cert);
		n += (size_t)w;
	}
	for (size_t i = 0; i < k->nkeys; i++) {
		kh_hex_encode(k->keys[i].key, KH_CAS_KEY_LEN, hex);
		w = snprintf(buf + n, cap - n, "service %u %lu %s\n", k->keys[i].id,
			     (unsigned long)k->keys[i].version, hex);
		n += (size_t)w;
	}
	w = snprintf(buf + n, cap - n, "seq all %lu\n", (unsigned long)k->seq_all);
	n += (size_t)w;
	if (k->revoked_version) {
		w = snprintf(buf + n, cap - n, "revoked %lu\n", (unsigned long)k->revoked_version);
		n += (size_t)w;
	}
	for (size_t i = 0; i < k->nseq; i++) {
		if (k->seq[i].type == KH_EMM_GROUP)
			w = snprintf(buf + n, cap - n, "seq group %lu %lu\n", (unsigned long)k->seq[i].addr,
				     (unsigned long)k->seq[i].seq);
		else
			w = snprintf(buf + n, cap - n, "seq card %08lX %lu\n", (unsigned long)k->seq[i].addr,
				     (unsigned long)k->seq[i].seq);
		n += (size_t)w;
	}
	kh_wipe(hex, sizeof hex);
	*text = (uint8_t *)buf;
	*len = n;
	return KH_OK;
}

static kh_err save(const struct kh_headend_keys *k, const char *path, int create)
{
	uint8_t *text;
	size_t len;
	kh_err r;

	if ((r = kh_headend_keys_format(k, &text, &len)) != KH_OK)
		return r;
	r = create ? kh_file_write_new(path, text, len, 0600) : kh_file_write_atomic(path, text, len, 0600);
	kh_file_free(text, len);
	return r;
}

kh_err kh_headend_keys_save_new(const struct kh_headend_keys *k, const char *path)
{
	return save(k, path, 1);
}

kh_err kh_headend_keys_save(const struct kh_headend_keys *k, const char *path)
{
	return save(k, path, 0);
}

kh_err kh_headend_keys_lock(const char *path, int *fd)
{
	for (int tries = 0; tries < 100; tries++) {
		struct stat a, b;
		int f = open(path, O_RDONLY | O_CLOEXEC);
		if (f < 0)
			return errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO;
		while (flock(f, LOCK_EX) != 0) {
			if (errno != EINTR) {
				close(f);
				return KH_ERR_IO;
			}
		}
		/* Another process may have replaced the file while we waited: then our lock is on
		 * an inode nobody else will lock again, so take it anew on the current file. */
		if (fstat(f, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			*fd = f;
			return KH_OK;
		}
		close(f);
	}
	return KH_ERR_IO;
}

void kh_headend_keys_unlock(int fd)
{
	if (fd >= 0) {
		flock(fd, LOCK_UN);
		close(fd);
	}
}
