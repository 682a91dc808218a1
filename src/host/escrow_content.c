/*
 * The escrowed content's files (include/keyhole/escrowclient.h, docs/protocols/escrow.md "The
 * content container"): the seller's encryption of a file under a fresh K into the container and
 * the offer, and the buyer's decryption through the device, chunk by chunk. K exists only in the
 * seller's process while it encrypts, and never in the buyer's host: the device opens each chunk.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/cert.h"
#include "keyhole/escrowclient.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/shamir.h"

/* The largest file sealed in one go (the container is built in memory). */
#define SEAL_MAX (1024u * 1024u * 1024u)

/* The container of the file in for content id under K: header and chunks, in *out (malloc'd). */
static kh_err seal_container(const char *content, const char *in, uint32_t chunk,
			     const uint8_t k[static KH_ESCROW_KEY_LEN], uint8_t **out, size_t *outlen)
{
	struct kh_escrow_header h;
	uint8_t ck[KH_KEY_LEN], *pt = NULL, *o = NULL;
	size_t ptlen = 0, cap, at;
	struct kh_wr w;
	kh_err r;

	if (!chunk)
		chunk = KH_ESCROW_CHUNK_MAX;
	if (chunk > KH_ESCROW_CHUNK_MAX)
		return KH_ERR_INVAL;
	if ((r = kh_file_read(in, SEAL_MAX, &pt, &ptlen)) != KH_OK)
		return r;
	if (!ptlen) {
		r = KH_ERR_INVAL; /* nothing to sell */
		goto out;
	}
	cap = KH_ESCROW_HEADER_MAX + ptlen + ((ptlen - 1) / chunk + 1) * KH_TAG_LEN;
	if (!(o = malloc(cap))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	kh_wr_init(&w, o, cap);
	if ((r = kh_escrow_header_make(content, chunk, ptlen, k, &w)) != KH_OK ||
	    (r = kh_escrow_header_parse(o, w.len, &h)) != KH_OK || (r = kh_escrow_chunk_key(k, ck)) != KH_OK)
		goto out;
	at = w.len;
	for (uint64_t i = 0, off = 0; i < h.chunks; i++) {
		size_t n = kh_escrow_chunk_len(&h, i);
		if ((r = kh_escrow_chunk_seal(ck, &h, i, pt + off, n, o + at)) != KH_OK)
			goto out;
		off += n;
		at += n + KH_TAG_LEN;
	}
	*out = o;
	*outlen = at;
	o = NULL;
out:
	kh_wipe(ck, sizeof ck);
	if (pt)
		kh_file_free(pt, ptlen);
	free(o);
	return r;
}

/* offer = the listing and c = RSA-OAEP(listing key, m, label = listing id), into buf (KH_ESCROW_OFFER_MAX). */
static kh_err make_offer(const uint8_t *listing, size_t llen, const struct kh_escrow_listing *l, const uint8_t *m,
			 size_t mlen, uint8_t *buf, size_t *len)
{
	uint8_t c[KH_RSA_MAX_LEN];
	size_t clen = 0;
	struct kh_wr w;
	kh_err r;

	if ((r = kh_rsa_oaep_encrypt(l->key, l->keylen, l->id, sizeof l->id, m, mlen, c, &clen)) != KH_OK)
		return r;
	kh_wr_init(&w, buf, KH_ESCROW_OFFER_MAX);
	r = kh_escrow_offer_make(listing, llen, c, clen, &w);
	*len = w.len;
	return r;
}

kh_err kh_escrow_seal_content(const uint8_t *listing, size_t llen, const char *in, uint32_t chunk,
			      const char *content_out, const char *offer_out)
{
	struct kh_escrow_listing l;
	uint8_t k[KH_ESCROW_KEY_LEN], offer[KH_ESCROW_OFFER_MAX];
	uint8_t *out = NULL;
	size_t outlen = 0, olen = 0;
	kh_err r;

	if ((r = kh_escrow_listing_parse(listing, llen, NULL, &l)) != KH_OK)
		return r;
	if ((r = kh_random(k, sizeof k)) != KH_OK || (r = seal_container(l.content, in, chunk, k, &out, &outlen)) != KH_OK ||
	    (r = make_offer(listing, llen, &l, k, sizeof k, offer, &olen)) != KH_OK)
		goto out;
	if ((r = kh_file_write_new(content_out, out, outlen, 0644)) != KH_OK)
		goto out;
	if ((r = kh_file_write_new(offer_out, offer, olen, 0644)) != KH_OK)
		(void)unlink(content_out); /* one without the other sells nothing */
out:
	kh_wipe(k, sizeof k);
	free(out);
	return r;
}

kh_err kh_escrow_header_read(const char *content, uint8_t hb[static KH_ESCROW_HEADER_MAX], struct kh_escrow_header *h)
{
	FILE *f = fopen(content, "rb");
	size_t n;

	if (!f)
		return KH_ERR_IO;
	n = fread(hb, 1, KH_ESCROW_HEADER_MAX, f);
	fclose(f);
	return kh_escrow_header_parse(hb, n, h);
}

/* ---------------------------------------------------------------- the split key */

kh_err kh_escrow_seal_split(const uint8_t *const *listings, const size_t *llens, size_t nl, unsigned need,
			    const char *in, uint32_t chunk, const char *content_out, const char *const *offer_outs,
			    const char *share_out)
{
	struct kh_escrow_listing l[KH_SHAMIR_MAX_N - 1];
	struct kh_shamir_share sh[KH_SHAMIR_MAX_N];
	struct kh_shamir_rec rec;
	uint8_t k[KH_SHAMIR_LEN], m[KH_SHAMIR_REC_LEN], offer[KH_ESCROW_OFFER_MAX];
	uint8_t *out = NULL;
	size_t outlen = 0, olen = 0, written = 0;
	int content_made = 0, share_made = 0;
	kh_err r;

	if (nl < 1 || nl > KH_SHAMIR_MAX_N - 1 || need < 1 || need > nl)
		return KH_ERR_INVAL;
	for (size_t i = 0; i < nl; i++) {
		if ((r = kh_escrow_listing_parse(listings[i], llens[i], NULL, &l[i])) != KH_OK)
			return r;
		/* one content, and each share at an escrow of its own: two at one escrow would give it more */
		if (strcmp(l[i].content, l[0].content) != 0)
			return KH_ERR_INVAL;
		for (size_t j = 0; j < i; j++)
			if (l[j].escrow == l[i].escrow)
				return KH_ERR_INVAL;
	}
	memset(&rec, 0, sizeof rec);
	/* any `need` escrows with the device: threshold need + 1 of nl + 1 shares, the device's first */
	if ((r = kh_shamir_random_secret(k)) != KH_OK || (r = kh_shamir_split(k, need + 1, (unsigned)nl + 1, sh)) != KH_OK ||
	    (r = seal_container(l[0].content, in, chunk, k, &out, &outlen)) != KH_OK)
		goto out;
	rec.t = (uint8_t)(need + 1);
	rec.n = (uint8_t)(nl + 1);
	if ((r = kh_file_write_new(content_out, out, outlen, 0644)) != KH_OK)
		goto out;
	content_made = 1;
	for (; written < nl; written++) {
		rec.index = (uint8_t)(written + 2);
		rec.s = sh[written + 1];
		memcpy(rec.id, l[written].id, sizeof rec.id);
		if ((r = kh_shamir_rec_encode(&rec, m)) != KH_OK ||
		    (r = make_offer(listings[written], llens[written], &l[written], m, sizeof m, offer, &olen)) != KH_OK ||
		    (r = kh_file_write_new(offer_outs[written], offer, olen, 0644)) != KH_OK)
			goto out;
	}
	/* the device's share: the seller's to grant to each buyer's device (id set then) */
	rec.index = 1;
	rec.s = sh[0];
	memset(rec.id, 0, sizeof rec.id);
	if ((r = kh_shamir_rec_encode(&rec, m)) != KH_OK || (r = kh_file_write_new(share_out, m, sizeof m, 0600)) != KH_OK)
		goto out;
	share_made = 1;
out:
	if (!share_made) {
		/* all or nothing: offers without the device's share sell nothing */
		for (size_t i = 0; i < written; i++)
			(void)unlink(offer_outs[i]);
		if (content_made)
			(void)unlink(content_out);
	}
	kh_wipe(k, sizeof k);
	kh_wipe(sh, sizeof sh);
	kh_wipe(&rec, sizeof rec);
	kh_wipe(m, sizeof m);
	free(out);
	return r;
}

kh_err kh_escrow_grant(const char *share_file, const char *content, const uint8_t *cert, size_t certlen,
		       const uint8_t root_pk[static 32], const char *out, uint32_t *device)
{
	struct kh_cert_info ci;
	struct kh_escrow_header h;
	struct kh_shamir_rec rec;
	uint8_t *b = NULL, hb[KH_ESCROW_HEADER_MAX], sealed[KH_SHAMIR_SEALED_LEN];
	size_t n = 0;
	kh_err r;

	memset(&rec, 0, sizeof rec);
	if ((r = kh_cert_check(cert, certlen, root_pk, KH_ROLE_BUYER, KH_CERT_KEY_X25519, (uint64_t)time(NULL), &ci)) !=
	    KH_OK)
		return r;
	if ((r = kh_escrow_header_read(content, hb, &h)) != KH_OK)
		return r;
	if ((r = kh_keyfile_read(share_file, KH_SHAMIR_REC_LEN + 1, &b, &n)) != KH_OK)
		return r;
	if ((r = kh_shamir_rec_parse(b, n, &rec)) != KH_OK)
		goto out;
	if (rec.index != 1) {
		r = KH_ERR_FORMAT; /* an escrow's share, not the device's */
		goto out;
	}
	kh_escrow_device_share_id(ci.ua, rec.id);
	if ((r = kh_shamir_share_seal(ci.pub, h.hash, sizeof h.hash, &rec, sealed)) != KH_OK ||
	    (r = kh_file_write_new(out, sealed, sizeof sealed, 0644)) != KH_OK)
		goto out;
	*device = ci.ua;
out:
	kh_wipe(&rec, sizeof rec);
	kh_file_free(b, n);
	return r;
}

/* ---------------------------------------------------------------- the buyer's decryption */

__attribute__((format(printf, 3, 4))) static void note(char *msg, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (!msg || !cap)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, cap, fmt, ap);
	va_end(ap);
}

/* Write all n bytes to fd. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Where the plaintext goes: a FIFO, a device or standard output as it comes; a regular file
 * through a temporary one beside it, renamed into place once whole. */
struct sink {
	int fd, direct;
	char *tmp;
};

static kh_err sink_open(const char *out, struct sink *s)
{
	struct stat st;

	memset(s, 0, sizeof *s);
	s->fd = -1;
	if (strcmp(out, "-") == 0) {
		s->fd = STDOUT_FILENO;
		s->direct = 1;
		return KH_OK;
	}
	if (stat(out, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		s->direct = 1;
		s->fd = open(out, O_WRONLY | O_CLOEXEC);
		return s->fd >= 0 ? KH_OK : KH_ERR_IO;
	}
	if (asprintf(&s->tmp, "%s.partXXXXXX", out) < 0) {
		s->tmp = NULL;
		return KH_ERR_NOMEM;
	}
	if ((s->fd = mkostemp(s->tmp, O_CLOEXEC)) < 0) {
		free(s->tmp);
		s->tmp = NULL;
		return KH_ERR_IO;
	}
	return KH_OK;
}

/* ok: put the file in place; else remove what was written (a regular file's temporary). */
static kh_err sink_close(struct sink *s, const char *out, int ok)
{
	kh_err r = KH_OK;

	if (s->tmp) {
		if (ok && (fsync(s->fd) != 0 || fchmod(s->fd, 0600) != 0))
			r = KH_ERR_IO;
		close(s->fd);
		if (ok && r == KH_OK && rename(s->tmp, out) != 0)
			r = KH_ERR_IO;
		if (!ok || r != KH_OK)
			(void)unlink(s->tmp);
		free(s->tmp);
	} else if (s->fd > STDERR_FILENO) {
		close(s->fd);
	}
	s->fd = -1;
	return r;
}

kh_err kh_escrow_open(struct kh_transport *dev, const char *licence, const char *content, const char *out, char *msg,
		      size_t msgcap)
{
	uint8_t *lic = NULL, *d = NULL, *resp = NULL, hb[KH_ESCROW_HEADER_MAX];
	size_t liclen = 0, dl = 0;
	struct kh_escrow_header h;
	struct sink s = {.fd = -1};
	uint16_t sw = 0;
	int opened = 0, ok = 0;
	FILE *f = NULL;
	struct kh_wr w;
	kh_err r;

	note(msg, msgcap, "%s", "");
	if ((r = kh_file_read(licence, 4096, &lic, &liclen)) != KH_OK) {
		note(msg, msgcap, "%s: cannot read the licence", licence);
		return r;
	}
	if (!(d = malloc(KH_APDU_MAX_DATA)) || !(resp = malloc(KH_APDU_MAX_RESP))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_escrow_header_read(content, hb, &h)) != KH_OK) {
		note(msg, msgcap, r == KH_ERR_IO ? "%s: cannot open the content" : "%s: not escrowed content", content);
		goto out;
	}
	if (!(f = fopen(content, "rb"))) {
		note(msg, msgcap, "%s: cannot open the content", content);
		r = KH_ERR_IO;
		goto out;
	}
	if (fseek(f, (long)h.len, SEEK_SET) != 0) {
		r = KH_ERR_IO;
		goto out;
	}
	kh_wr_init(&w, d, KH_APDU_MAX_DATA);
	kh_tlv_put(&w, KH_ESCROW_T_LICENCE, lic, liclen);
	kh_tlv_put(&w, KH_ESCROW_T_HEADER, hb, h.len);
	if ((r = w.err) != KH_OK ||
	    (r = kh_host_apdu(dev, KH_INS_CONTENT_OPEN, 0, d, w.len, resp, KH_APDU_MAX_RESP, &dl, &sw)) != KH_OK) {
		note(msg, msgcap, "the device refused the licence: %s", kh_strerror(r));
		goto out;
	}
	opened = 1;
	if ((r = sink_open(out, &s)) != KH_OK) {
		note(msg, msgcap, "%s: cannot write there", out);
		goto out;
	}
	for (uint64_t i = 0; i < h.chunks; i++) {
		size_t cl = kh_escrow_chunk_len(&h, i) + KH_TAG_LEN;
		kh_put_be32(d, (uint32_t)i);
		if (fread(d + 4, 1, cl, f) != cl) {
			note(msg, msgcap, "%s: cut short at chunk %llu", content, (unsigned long long)i);
			r = KH_ERR_TRUNCATED;
			goto out;
		}
		if ((r = kh_host_apdu(dev, KH_INS_CONTENT_CHUNK, 0, d, 4 + cl, resp, KH_APDU_MAX_RESP, &dl, &sw)) != KH_OK) {
			note(msg, msgcap, "%s: chunk %llu refused by the device: %s", content, (unsigned long long)i,
			     kh_strerror(r));
			goto out;
		}
		if (write_all(s.fd, resp, dl) != 0) {
			note(msg, msgcap, "%s: cannot write there", out);
			r = KH_ERR_IO;
			goto out;
		}
		kh_wipe(resp, dl);
	}
	if (fgetc(f) != EOF) {
		note(msg, msgcap, "%s: bytes after the last chunk", content);
		r = KH_ERR_TRAILING;
		goto out;
	}
	ok = 1;
out:
	/* the device forgets the key; a failure to say so leaves it until the next CONTENT OPEN */
	if (opened && kh_host_apdu(dev, KH_INS_CONTENT_CLOSE, 0, NULL, 0, resp, KH_APDU_MAX_RESP, &dl, &sw) != KH_OK &&
	    r == KH_OK)
		note(msg, msgcap, "%s", "the device did not close the content");
	if (s.fd >= 0) {
		kh_err cr = sink_close(&s, out, ok);
		if (r == KH_OK && cr != KH_OK) {
			note(msg, msgcap, "%s: cannot put the file in place", out);
			r = cr;
		}
	}
	if (f)
		fclose(f);
	if (resp)
		kh_wipe(resp, KH_APDU_MAX_RESP);
	free(resp);
	free(d);
	kh_file_free(lic, liclen);
	return r;
}
