/*
 * The key center relay's records (include/keyhole/keycard.h): messages chunked under one key,
 * the center's acks and enrolment key, a card's hello. Allocation-free: the key card calls the
 * chunk functions on the delivery it checks before it gives a receive key.
 */
#include <string.h>

#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/hpke.h"
#include "keyhole/keycard.h"

static const uint8_t msg_magic[4] = {'K', 'H', 'K', 'M'};
static const uint8_t ack_magic[4] = {'K', 'H', 'K', 'A'};
static const uint8_t enrolkey_magic[4] = {'K', 'H', 'K', 'E'};
static const char label_ack[] = "keyhole keycenter ack v1";
static const char label_enrolkey[] = "keyhole keycenter enrol key v1";
static const char label_enrol_derive[] = "keyhole keycenter enrol v1";
static const char label_enrol_info[] = "keyhole keycard enrol v1";
static const char label_hello[] = "keyhole keycard hello v1";

#define VERSION 1
#define LAST 0x01

_Static_assert(sizeof label_enrol_info - 1 + 4 + 8 == KH_KC_ENROL_INFO_LEN, "enrol info length");
_Static_assert(sizeof label_hello - 1 + 4 + 8 + KH_KC_NONCE_LEN == KH_KC_HELLO_MSG_LEN, "hello length");

void kh_kc_header_write(const struct kh_kc_header *h, uint8_t out[static KH_KC_HEADER_LEN])
{
	memcpy(out, msg_magic, 4);
	out[4] = VERSION;
	out[5] = h->dir;
	kh_put_be64(out + 6, h->serial);
	kh_put_be64(out + 14, h->index);
}

kh_err kh_kc_header_parse(const uint8_t *in, size_t n, struct kh_kc_header *h)
{
	if (n < KH_KC_HEADER_LEN)
		return KH_ERR_TRUNCATED;
	if (memcmp(in, msg_magic, 4) != 0)
		return KH_ERR_FORMAT;
	if (in[4] != VERSION)
		return KH_ERR_VERSION;
	if (in[5] != KH_KC_POST && in[5] != KH_KC_DELIVERY)
		return KH_ERR_FORMAT;
	if (kh_get_be64(in + 14) == 0)
		return KH_ERR_FORMAT; /* before h is written: a refused header leaves it as it was */
	h->dir = in[5];
	h->serial = kh_get_be64(in + 6);
	h->index = kh_get_be64(in + 14);
	return KH_OK;
}

kh_err kh_kc_addr_check(const char *addr, size_t len)
{
	int at = 0;

	if (len < 1 || len > KH_KC_ADDR_MAX)
		return KH_ERR_FORMAT;
	for (size_t k = 0; k < len; k++) {
		char c = addr[k];
		if (c == '@')
			at++;
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' ||
			   c == '-'))
			return KH_ERR_FORMAT;
	}
	/* one '@', neither first nor last */
	return at == 1 && addr[0] != '@' && addr[len - 1] != '@' ? KH_OK : KH_ERR_FORMAT;
}

kh_err kh_kc_envelope_write(const char *addr, uint64_t length, uint8_t *out, size_t *len)
{
	size_t al = strnlen(addr, KH_KC_ADDR_MAX + 1);

	if (kh_kc_addr_check(addr, al) != KH_OK)
		return KH_ERR_FORMAT;
	out[0] = VERSION;
	out[1] = (uint8_t)al;
	memcpy(out + 2, addr, al);
	kh_put_be64(out + 2 + al, length);
	*len = 2 + al + 8;
	return KH_OK;
}

kh_err kh_kc_envelope_parse(const uint8_t *in, size_t n, struct kh_kc_envelope *e)
{
	if (n < 2)
		return KH_ERR_TRUNCATED;
	if (in[0] != VERSION)
		return KH_ERR_VERSION;
	if (n < (size_t)2 + in[1] + 8)
		return KH_ERR_TRUNCATED;
	if (n > (size_t)2 + in[1] + 8)
		return KH_ERR_TRAILING;
	if (kh_kc_addr_check((const char *)in + 2, in[1]) != KH_OK)
		return KH_ERR_FORMAT;
	e->addr_len = in[1];
	memcpy(e->addr, in + 2, in[1]);
	e->addr[in[1]] = '\0';
	e->length = kh_get_be64(in + 2 + in[1]);
	return KH_OK;
}

uint64_t kh_kc_doc_chunks(uint64_t length)
{
	return length / KH_KC_CHUNK + (length % KH_KC_CHUNK != 0);
}

size_t kh_kc_chunk_len(uint64_t length, uint64_t k)
{
	uint64_t n = kh_kc_doc_chunks(length);

	if (k < 1 || k > n)
		return 0;
	if (k < n)
		return KH_KC_CHUNK;
	return (size_t)(length - (n - 1) * KH_KC_CHUNK);
}

static void chunk_iv_aad(const uint8_t hdr[static KH_KC_HEADER_LEN], uint64_t k, uint8_t flags,
			 uint8_t nonce[static KH_NONCE_LEN], uint8_t aad[static KH_KC_HEADER_LEN + 9])
{
	memset(nonce, 0, 4);
	kh_put_be64(nonce + 4, k);
	memcpy(aad, hdr, KH_KC_HEADER_LEN);
	kh_put_be64(aad + KH_KC_HEADER_LEN, k);
	aad[KH_KC_HEADER_LEN + 8] = flags;
}

kh_err kh_kc_chunk_seal(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN], uint64_t k,
			int last, const uint8_t *pt, size_t ptlen, uint8_t *out)
{
	uint8_t nonce[KH_NONCE_LEN], aad[KH_KC_HEADER_LEN + 9], flags = last ? LAST : 0;

	if (ptlen > KH_KC_CHUNK)
		return KH_ERR_TOO_LARGE;
	chunk_iv_aad(hdr, k, flags, nonce, aad);
	out[0] = flags;
	kh_put_be32(out + 1, (uint32_t)(ptlen + KH_TAG_LEN));
	return kh_aead_seal(key, nonce, aad, sizeof aad, pt, ptlen, out + KH_KC_CHUNK_HDR_LEN);
}

kh_err kh_kc_chunk_frame(const uint8_t *in, size_t n, size_t *ctlen, int *last)
{
	uint32_t len;

	if (n < KH_KC_CHUNK_HDR_LEN)
		return KH_ERR_TRUNCATED;
	if (in[0] & ~LAST)
		return KH_ERR_FORMAT;
	len = kh_get_be32(in + 1);
	if (len < KH_TAG_LEN || len > KH_KC_CHUNK + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	if (n - KH_KC_CHUNK_HDR_LEN < len)
		return KH_ERR_TRUNCATED;
	*ctlen = len;
	*last = (in[0] & LAST) != 0;
	return KH_OK;
}

kh_err kh_kc_chunk_open(const uint8_t key[static 32], const uint8_t hdr[static KH_KC_HEADER_LEN], uint64_t k,
			const uint8_t *in, size_t n, uint8_t *pt, size_t *ptlen)
{
	uint8_t nonce[KH_NONCE_LEN], aad[KH_KC_HEADER_LEN + 9];
	size_t ctlen;
	int last;
	kh_err r;

	if ((r = kh_kc_chunk_frame(in, n, &ctlen, &last)) != KH_OK)
		return r;
	chunk_iv_aad(hdr, k, in[0], nonce, aad);
	if ((r = kh_aead_open(key, nonce, aad, sizeof aad, in + KH_KC_CHUNK_HDR_LEN, ctlen, pt)) != KH_OK)
		return r;
	*ptlen = ctlen - KH_TAG_LEN;
	return KH_OK;
}

uint64_t kh_kc_msg_size(size_t addr_len, uint64_t length)
{
	uint64_t chunks = kh_kc_doc_chunks(length);

	return KH_KC_HEADER_LEN + KH_KC_CHUNK_HDR_LEN + (2 + addr_len + 8) + KH_TAG_LEN +
	       chunks * (KH_KC_CHUNK_HDR_LEN + KH_TAG_LEN) + length;
}

kh_err kh_kc_msg_seal(const uint8_t key[static 32], const struct kh_kc_header *h, const char *addr,
		      const uint8_t *doc, size_t doclen, uint8_t *out, size_t cap, size_t *outlen)
{
	uint8_t env[KH_KC_ENVELOPE_MAX];
	uint64_t chunks = kh_kc_doc_chunks(doclen);
	size_t envlen, at, off = 0;
	kh_err r;

	if ((r = kh_kc_envelope_write(addr, doclen, env, &envlen)) != KH_OK)
		return r;
	if (kh_kc_msg_size(envlen - 10, doclen) > cap)
		return KH_ERR_BUF;
	kh_kc_header_write(h, out);
	at = KH_KC_HEADER_LEN;
	if ((r = kh_kc_chunk_seal(key, out, 0, chunks == 0, env, envlen, out + at)) != KH_OK)
		return r;
	at += KH_KC_CHUNK_HDR_LEN + envlen + KH_TAG_LEN;
	for (uint64_t k = 1; k <= chunks; k++) {
		size_t len = kh_kc_chunk_len(doclen, k);
		if ((r = kh_kc_chunk_seal(key, out, k, k == chunks, doc + off, len, out + at)) != KH_OK)
			return r;
		off += len;
		at += KH_KC_CHUNK_HDR_LEN + len + KH_TAG_LEN;
	}
	*outlen = at;
	return KH_OK;
}

kh_err kh_kc_msg_open(const uint8_t key[static 32], const uint8_t *msg, size_t n, struct kh_kc_header *hout,
		      struct kh_kc_envelope *eout, uint8_t *doc, size_t cap, size_t *doclen)
{
	/* read here, given out only with the document: a refused message names no sender */
	struct kh_kc_header hh, *h = &hh;
	struct kh_kc_envelope ee, *e = &ee;
	uint8_t env[KH_KC_ENVELOPE_MAX];
	size_t at, ctlen, ptlen, off = 0;
	uint64_t chunks;
	int last;
	kh_err r;

	if ((r = kh_kc_header_parse(msg, n, h)) != KH_OK)
		return r;
	at = KH_KC_HEADER_LEN;
	if ((r = kh_kc_chunk_frame(msg + at, n - at, &ctlen, &last)) != KH_OK)
		return r;
	if (ctlen > KH_KC_ENVELOPE_MAX + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	if ((r = kh_kc_chunk_open(key, msg, 0, msg + at, n - at, env, &ptlen)) != KH_OK)
		return r;
	r = kh_kc_envelope_parse(env, ptlen, e);
	kh_wipe(env, ptlen);
	if (r != KH_OK)
		return r;
	at += KH_KC_CHUNK_HDR_LEN + ctlen;
	chunks = kh_kc_doc_chunks(e->length);
	if (last != (chunks == 0))
		return KH_ERR_FORMAT;
	if (e->length > cap)
		return KH_ERR_TOO_LARGE;
	for (uint64_t k = 1; k <= chunks; k++) {
		if ((r = kh_kc_chunk_frame(msg + at, n - at, &ctlen, &last)) != KH_OK)
			goto fail;
		if (ctlen - KH_TAG_LEN != kh_kc_chunk_len(e->length, k) || last != (k == chunks)) {
			r = KH_ERR_FORMAT;
			goto fail;
		}
		if ((r = kh_kc_chunk_open(key, msg, k, msg + at, n - at, doc + off, &ptlen)) != KH_OK)
			goto fail;
		off += ptlen;
		at += KH_KC_CHUNK_HDR_LEN + ctlen;
	}
	if (at != n) {
		r = KH_ERR_TRAILING;
		goto fail;
	}
	*doclen = off;
	*hout = hh;
	*eout = ee;
	return KH_OK;
fail:
	kh_wipe(doc, off);
	return r;
}

/* ---- signed records ---- */

/* Sign label | body; pk, when not NULL, is sk's public key (kh_ed25519_sign_kp). */
static kh_err sign_labelled(const uint8_t sk[static 32], const uint8_t *pk, const char *label, size_t llen,
			    const uint8_t *body, size_t blen, uint8_t sig[static KH_ED25519_SIG_LEN])
{
	uint8_t m[64 + KH_KC_ACK_LEN + KH_KC_ENROLKEY_LEN];

	memcpy(m, label, llen);
	memcpy(m + llen, body, blen);
	return pk ? kh_ed25519_sign_kp(sk, pk, m, llen + blen, sig) : kh_ed25519_sign(sk, m, llen + blen, sig);
}

static kh_err verify_labelled(const uint8_t pk[static 32], const char *label, size_t llen, const uint8_t *body,
			      size_t blen, const uint8_t sig[static KH_ED25519_SIG_LEN])
{
	uint8_t m[64 + KH_KC_ACK_LEN + KH_KC_ENROLKEY_LEN];

	memcpy(m, label, llen);
	memcpy(m + llen, body, blen);
	return kh_ed25519_verify(pk, m, llen + blen, sig) == KH_OK ? KH_OK : KH_ERR_SIGNATURE;
}

static kh_err record_shape(const uint8_t *in, size_t n, const uint8_t magic[static 4], size_t len)
{
	if (n < 5)
		return KH_ERR_TRUNCATED;
	if (memcmp(in, magic, 4) != 0)
		return KH_ERR_FORMAT;
	if (in[4] != VERSION)
		return KH_ERR_VERSION;
	if (n < len)
		return KH_ERR_TRUNCATED;
	return n > len ? KH_ERR_TRAILING : KH_OK;
}

static kh_err ack_sign(const uint8_t sk[static 32], const uint8_t *pk, uint32_t center, uint64_t serial,
		       uint64_t index, uint8_t out[static KH_KC_ACK_LEN])
{
	const size_t body = KH_KC_ACK_LEN - KH_ED25519_SIG_LEN;

	memcpy(out, ack_magic, 4);
	out[4] = VERSION;
	kh_put_be32(out + 5, center);
	kh_put_be64(out + 9, serial);
	kh_put_be64(out + 17, index);
	return sign_labelled(sk, pk, label_ack, sizeof label_ack - 1, out, body, out + body);
}

kh_err kh_kc_ack_sign(const uint8_t sk[static 32], uint32_t center, uint64_t serial, uint64_t index,
		      uint8_t out[static KH_KC_ACK_LEN])
{
	return ack_sign(sk, NULL, center, serial, index, out);
}

kh_err kh_kc_ack_sign_kp(const uint8_t sk[static 32], const uint8_t pk[static 32], uint32_t center, uint64_t serial,
			 uint64_t index, uint8_t out[static KH_KC_ACK_LEN])
{
	return ack_sign(sk, pk, center, serial, index, out);
}

kh_err kh_kc_ack_verify(const uint8_t pk[static 32], const uint8_t *in, size_t n, uint32_t *center,
			uint64_t *serial, uint64_t *index)
{
	const size_t body = KH_KC_ACK_LEN - KH_ED25519_SIG_LEN;
	kh_err r;

	if ((r = record_shape(in, n, ack_magic, KH_KC_ACK_LEN)) != KH_OK)
		return r;
	if ((r = verify_labelled(pk, label_ack, sizeof label_ack - 1, in, body, in + body)) != KH_OK)
		return r;
	*center = kh_get_be32(in + 5);
	*serial = kh_get_be64(in + 9);
	*index = kh_get_be64(in + 17);
	return KH_OK;
}

kh_err kh_kc_enrol_keypair(const uint8_t sk[static 32], uint8_t xsk[static 32], uint8_t xpk[static 32])
{
	uint8_t ikm[32];
	kh_err r;

	if ((r = kh_hkdf(sk, 32, NULL, 0, (const uint8_t *)label_enrol_derive, sizeof label_enrol_derive - 1, ikm,
			 sizeof ikm)) == KH_OK)
		r = kh_hpke_derive_keypair(ikm, sizeof ikm, xsk, xpk);
	kh_wipe(ikm, sizeof ikm);
	return r;
}

kh_err kh_kc_enrolkey_sign(const uint8_t sk[static 32], uint32_t center, const uint8_t xpk[static 32],
			   uint8_t out[static KH_KC_ENROLKEY_LEN])
{
	const size_t body = KH_KC_ENROLKEY_LEN - KH_ED25519_SIG_LEN;

	memcpy(out, enrolkey_magic, 4);
	out[4] = VERSION;
	kh_put_be32(out + 5, center);
	memcpy(out + 9, xpk, 32);
	return sign_labelled(sk, NULL, label_enrolkey, sizeof label_enrolkey - 1, out, body, out + body);
}

kh_err kh_kc_enrolkey_verify(const uint8_t pk[static 32], const uint8_t *in, size_t n, uint32_t *center,
			     uint8_t xpk[static 32])
{
	const size_t body = KH_KC_ENROLKEY_LEN - KH_ED25519_SIG_LEN;
	kh_err r;

	if ((r = record_shape(in, n, enrolkey_magic, KH_KC_ENROLKEY_LEN)) != KH_OK)
		return r;
	if ((r = verify_labelled(pk, label_enrolkey, sizeof label_enrolkey - 1, in, body, in + body)) != KH_OK)
		return r;
	*center = kh_get_be32(in + 5);
	memcpy(xpk, in + 9, 32);
	return KH_OK;
}

void kh_kc_enrol_info(uint32_t center, uint64_t serial, uint8_t info[static KH_KC_ENROL_INFO_LEN])
{
	memcpy(info, label_enrol_info, sizeof label_enrol_info - 1);
	kh_put_be32(info + sizeof label_enrol_info - 1, center);
	kh_put_be64(info + sizeof label_enrol_info - 1 + 4, serial);
}

void kh_kc_hello_msg(uint32_t center, uint64_t serial, const uint8_t nonce[static KH_KC_NONCE_LEN],
		     uint8_t msg[static KH_KC_HELLO_MSG_LEN])
{
	const size_t l = sizeof label_hello - 1;

	memcpy(msg, label_hello, l);
	kh_put_be32(msg + l, center);
	kh_put_be64(msg + l + 4, serial);
	memcpy(msg + l + 12, nonce, KH_KC_NONCE_LEN);
}
