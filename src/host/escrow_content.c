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
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/escrowclient.h"
#include "keyhole/file.h"
#include "keyhole/host.h"

/* The largest file sealed in one go (the container is built in memory). */
#define SEAL_MAX (1024u * 1024u * 1024u)

kh_err kh_escrow_seal_content(const uint8_t *listing, size_t llen, const char *in, uint32_t chunk,
			      const char *content_out, const char *offer_out)
{
	struct kh_escrow_listing l;
	struct kh_escrow_header h;
	uint8_t k[KH_ESCROW_KEY_LEN], ck[KH_KEY_LEN], c[KH_RSA_MAX_LEN], offer[KH_ESCROW_OFFER_MAX];
	uint8_t *pt = NULL, *out = NULL;
	size_t ptlen = 0, clen = 0, cap, at;
	struct kh_wr w;
	kh_err r;

	if (!chunk)
		chunk = KH_ESCROW_CHUNK_MAX;
	if (chunk > KH_ESCROW_CHUNK_MAX)
		return KH_ERR_INVAL;
	if ((r = kh_escrow_listing_parse(listing, llen, NULL, &l)) != KH_OK)
		return r;
	if ((r = kh_file_read(in, SEAL_MAX, &pt, &ptlen)) != KH_OK)
		return r;
	if (!ptlen) {
		r = KH_ERR_INVAL; /* nothing to sell */
		goto out;
	}
	cap = KH_ESCROW_HEADER_MAX + ptlen + ((ptlen - 1) / chunk + 1) * KH_TAG_LEN;
	if (!(out = malloc(cap))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = kh_random(k, sizeof k)) != KH_OK)
		goto out;
	kh_wr_init(&w, out, cap);
	if ((r = kh_escrow_header_make(l.content, chunk, ptlen, k, &w)) != KH_OK ||
	    (r = kh_escrow_header_parse(out, w.len, &h)) != KH_OK || (r = kh_escrow_chunk_key(k, ck)) != KH_OK)
		goto out;
	at = w.len;
	for (uint64_t i = 0, off = 0; i < h.chunks; i++) {
		size_t n = kh_escrow_chunk_len(&h, i);
		if ((r = kh_escrow_chunk_seal(ck, &h, i, pt + off, n, out + at)) != KH_OK)
			goto out;
		off += n;
		at += n + KH_TAG_LEN;
	}
	/* c = RSA-OAEP(listing key, K, label = listing id) */
	if ((r = kh_rsa_oaep_encrypt(l.key, l.keylen, l.id, sizeof l.id, k, sizeof k, c, &clen)) != KH_OK)
		goto out;
	kh_wr_init(&w, offer, sizeof offer);
	if ((r = kh_escrow_offer_make(listing, llen, c, clen, &w)) != KH_OK)
		goto out;
	if ((r = kh_file_write_new(content_out, out, at, 0644)) != KH_OK)
		goto out;
	if ((r = kh_file_write_new(offer_out, offer, w.len, 0644)) != KH_OK)
		(void)unlink(content_out); /* one without the other sells nothing */
out:
	kh_wipe(k, sizeof k);
	kh_wipe(ck, sizeof ck);
	if (pt)
		kh_file_free(pt, ptlen);
	free(out);
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
	size_t liclen = 0, n, dl = 0;
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
	if (!(f = fopen(content, "rb"))) {
		note(msg, msgcap, "%s: cannot open the content", content);
		r = KH_ERR_IO;
		goto out;
	}
	n = fread(hb, 1, sizeof hb, f);
	if ((r = kh_escrow_header_parse(hb, n, &h)) != KH_OK) {
		note(msg, msgcap, "%s: not escrowed content", content);
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
