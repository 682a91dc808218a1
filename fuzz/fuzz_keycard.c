/*
 * libFuzzer harness: the key center relay's records (include/keyhole/keycard.h,
 * docs/protocols/keycenter.md), which the key center reads from hosts and the key card and its
 * host read from the center. The first byte chooses the reader: message header, envelope, chunk
 * (framing, then opened under fz_kc_key and the fixed header, at the chunk number the next byte
 * names), whole message (kh_kc_msg_open under fz_kc_key into a bounded buffer), ack and
 * enrolment key (verified with the fixed center's key).
 *
 * Invariants: every reader answers the code a model of the format written here calls for (the
 * framing; for the signed records, KH_OK exactly when the trailer holds the signature worked out
 * here with the fixed center's key over the record's label and body), and a refusal leaves every
 * output untouched (prefilled with 0xA5), except that what a refused open decrypted is wiped to
 * zero. What is accepted is written again by its own writer to the same bytes: the header, the
 * envelope, a chunk resealed at its number, an ack or enrolment key signed again; an opened
 * message sealed again with kh_kc_msg_seal under the same key and header is the input byte for
 * byte (one encoding per document), its chunks tile the input and the document has the
 * envelope's length. A signed record does not verify under another center's key, nor with a
 * byte of its signature flipped.
 */
#include <string.h>

#include "keyhole/keycard.h"

#include "fuzz_common.h"

/* The largest document the message reader takes (kh_kc_msg_open's cap): three chunks. */
#define DOC_CAP (3u * KH_KC_CHUNK)
#define MSG_CAP (KH_KC_HEADER_LEN + KH_KC_CHUNK0_MAX + 3u * (KH_KC_CHUNK_HDR_LEN + KH_KC_CHUNK + KH_TAG_LEN))

/* What the signatures cover, after the label: every byte of the record before the signature. */
static const char label_ack[] = "keyhole keycenter ack v1";
static const char label_enrolkey[] = "keyhole keycenter enrol key v1";

static uint8_t center_pk[32], other_pk[32], fixed_hdr[KH_KC_HEADER_LEN];
static uint8_t doc[DOC_CAP], out[MSG_CAP], pt[KH_KC_CHUNK + KH_TAG_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct kh_kc_header h = {KH_KC_DELIVERY, FZ_KC_SERIAL, FZ_KC_INDEX};

	(void)argc;
	(void)argv;
	CHECK(kh_ed25519_public(fz_kc_center_sk, center_pk) == KH_OK);
	CHECK(kh_ed25519_public(fz_kc_other_sk, other_pk) == KH_OK);
	kh_kc_header_write(&h, fixed_hdr);
	return 0;
}

static int all_are(const void *o, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (((const uint8_t *)o)[i] != v)
			return 0;
	return 1;
}

static void untouched(const void *o, size_t n)
{
	CHECK(all_are(o, n, 0xA5));
}

/* ---- header ---- */

static kh_err header_expect(const uint8_t *d, size_t n)
{
	if (n < KH_KC_HEADER_LEN)
		return KH_ERR_TRUNCATED;
	if (memcmp(d, "KHKM", 4) != 0)
		return KH_ERR_FORMAT;
	if (d[4] != 1)
		return KH_ERR_VERSION;
	if (d[5] != KH_KC_POST && d[5] != KH_KC_DELIVERY)
		return KH_ERR_FORMAT;
	return kh_get_be64(d + 14) == 0 ? KH_ERR_FORMAT : KH_OK;
}

static void header(const uint8_t *d, size_t n)
{
	struct kh_kc_header h;
	uint8_t w[KH_KC_HEADER_LEN];
	kh_err r;

	memset(&h, 0xA5, sizeof h);
	r = kh_kc_header_parse(d, n, &h);
	CHECK(r == header_expect(d, n));
	if (r != KH_OK) {
		untouched(&h, sizeof h);
		return;
	}
	CHECK(h.serial == kh_get_be64(d + 6) && h.index == kh_get_be64(d + 14) && h.index != 0);
	kh_kc_header_write(&h, w);
	CHECK(memcmp(w, d, sizeof w) == 0); /* the bytes after a header are the message's, not its */
}

/* ---- envelope ---- */

/* An address as the format states it: 1..64 of [a-z0-9._+-@], one '@', neither first nor last. */
static int addr_ok(const uint8_t *a, size_t n)
{
	size_t at = 0;

	if (n < 1 || n > KH_KC_ADDR_MAX || a[0] == '@' || a[n - 1] == '@')
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i] == '@')
			at++;
		else if (!memchr("abcdefghijklmnopqrstuvwxyz0123456789._+-", a[i], 40))
			return 0;
	}
	return at == 1;
}

static kh_err envelope_expect(const uint8_t *d, size_t n)
{
	if (n < 2)
		return KH_ERR_TRUNCATED;
	if (d[0] != 1)
		return KH_ERR_VERSION;
	if (n != (size_t)2 + d[1] + 8)
		return n < (size_t)2 + d[1] + 8 ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	return addr_ok(d + 2, d[1]) ? KH_OK : KH_ERR_FORMAT;
}

static void envelope(const uint8_t *d, size_t n)
{
	struct kh_kc_envelope e;
	uint8_t w[KH_KC_ENVELOPE_MAX];
	size_t wlen = 0;
	kh_err r;

	memset(&e, 0xA5, sizeof e);
	r = kh_kc_envelope_parse(d, n, &e);
	CHECK(r == envelope_expect(d, n));
	if (r != KH_OK) {
		untouched(&e, sizeof e);
		return;
	}
	CHECK(e.addr_len == d[1] && memcmp(e.addr, d + 2, e.addr_len) == 0 && e.addr[e.addr_len] == '\0');
	CHECK(kh_kc_envelope_write(e.addr, e.length, w, &wlen) == KH_OK);
	CHECK(wlen == n && memcmp(w, d, n) == 0);
}

/* ---- chunk ---- */

static kh_err frame_expect(const uint8_t *d, size_t n)
{
	uint32_t len;

	if (n < KH_KC_CHUNK_HDR_LEN)
		return KH_ERR_TRUNCATED;
	if (d[0] & ~1u)
		return KH_ERR_FORMAT;
	len = kh_get_be32(d + 1);
	if (len < KH_TAG_LEN || len > KH_KC_CHUNK + KH_TAG_LEN)
		return KH_ERR_FORMAT;
	return n - KH_KC_CHUNK_HDR_LEN < len ? KH_ERR_TRUNCATED : KH_OK;
}

/* Chunk k (the first byte) under the fixed key and header. */
static void chunk(const uint8_t *d, size_t n)
{
	uint8_t k, key2[32];
	size_t ctlen, ptlen, ptlen2;
	int last;
	kh_err r, ro;

	if (n < 1)
		return;
	k = d[0];
	d++, n--;
	memset(&ctlen, 0xA5, sizeof ctlen);
	memset(&last, 0xA5, sizeof last);
	memset(&ptlen, 0xA5, sizeof ptlen);
	memset(pt, 0xA5, sizeof pt);
	r = kh_kc_chunk_frame(d, n, &ctlen, &last);
	CHECK(r == frame_expect(d, n));
	ro = kh_kc_chunk_open(fz_kc_key, fixed_hdr, k, d, n, pt, &ptlen);
	if (r != KH_OK) {
		untouched(&ctlen, sizeof ctlen);
		untouched(&last, sizeof last);
		CHECK(ro == r); /* the same framing, refused the same way, before any decryption */
		untouched(&ptlen, sizeof ptlen);
		untouched(pt, sizeof pt);
		return;
	}
	CHECK(ctlen == kh_get_be32(d + 1) && KH_KC_CHUNK_HDR_LEN + ctlen <= n && last == (d[0] & 1));
	CHECK(ro == KH_OK || ro == KH_ERR_AUTH);
	if (ro != KH_OK) {
		/* what was decrypted is never left behind, nor any length given */
		untouched(&ptlen, sizeof ptlen);
		ptlen2 = ctlen - KH_TAG_LEN;
		CHECK(all_are(pt, ptlen2, 0) && all_are(pt + ptlen2, sizeof pt - ptlen2, 0xA5));
		return;
	}
	CHECK(ptlen == ctlen - KH_TAG_LEN);
	/* sealed again at its number, under its flag: the same bytes */
	CHECK(kh_kc_chunk_seal(fz_kc_key, fixed_hdr, k, last, pt, ptlen, out) == KH_OK);
	CHECK(memcmp(out, d, KH_KC_CHUNK_HDR_LEN + ctlen) == 0);
	/* at another number, or under another key: not this chunk */
	CHECK(kh_kc_chunk_open(fz_kc_key, fixed_hdr, (uint64_t)k + 1, d, n, pt, &ptlen2) == KH_ERR_AUTH);
	memcpy(key2, fz_kc_key, sizeof key2);
	key2[k % sizeof key2] ^= 0x01;
	CHECK(kh_kc_chunk_open(key2, fixed_hdr, k, d, n, pt, &ptlen2) == KH_ERR_AUTH);
}

/* ---- whole message ---- */

/* The chunks of an opened message tile the input: chunk 0 and the document's, each inside it. */
static void tiles(const uint8_t *d, size_t n, uint64_t length)
{
	uint64_t chunks = kh_kc_doc_chunks(length);
	size_t at = KH_KC_HEADER_LEN, ctlen;
	int last;

	for (uint64_t k = 0; k <= chunks; k++) {
		CHECK(kh_kc_chunk_frame(d + at, n - at, &ctlen, &last) == KH_OK);
		CHECK(at + KH_KC_CHUNK_HDR_LEN + ctlen <= n && last == (k == chunks));
		CHECK(k == 0 || ctlen - KH_TAG_LEN == kh_kc_chunk_len(length, k));
		at += KH_KC_CHUNK_HDR_LEN + ctlen;
	}
	CHECK(at == n);
}

static void message(const uint8_t *d, size_t n)
{
	static struct kh_kc_header h, h2;
	static struct kh_kc_envelope e, e2;
	size_t doclen, doclen2, wlen = 0, z = 0;
	uint8_t key2[32];
	kh_err r;

	memset(&h, 0xA5, sizeof h);
	memset(&e, 0xA5, sizeof e);
	memset(&doclen, 0xA5, sizeof doclen);
	memset(doc, 0xA5, sizeof doc);
	r = kh_kc_msg_open(fz_kc_key, d, n, &h, &e, doc, sizeof doc, &doclen);
	if (r != KH_OK) {
		CHECK(r == KH_ERR_TRUNCATED || r == KH_ERR_FORMAT || r == KH_ERR_VERSION || r == KH_ERR_TRAILING ||
		      r == KH_ERR_AUTH || r == KH_ERR_TOO_LARGE);
		CHECK(r == header_expect(d, n) || header_expect(d, n) == KH_OK);
		untouched(&h, sizeof h);
		untouched(&e, sizeof e);
		untouched(&doclen, sizeof doclen);
		/* what was opened before the refusal is wiped (zero), the rest never written */
		while (z < sizeof doc && doc[z] == 0)
			z++;
		untouched(doc + z, sizeof doc - z);
		return;
	}
	CHECK(header_expect(d, n) == KH_OK && doclen == e.length && doclen <= sizeof doc);
	CHECK(e.addr_len >= 1 && e.addr_len <= KH_KC_ADDR_MAX && addr_ok((const uint8_t *)e.addr, e.addr_len));
	CHECK(n == kh_kc_msg_size(e.addr_len, e.length));
	tiles(d, n, e.length);
	/* one encoding per document: sealed again under the same key and header, the input */
	CHECK(kh_kc_msg_seal(fz_kc_key, &h, e.addr, doc, doclen, out, sizeof out, &wlen) == KH_OK);
	CHECK(wlen == n && memcmp(out, d, n) == 0);
	/* a buffer one byte short of the document: TOO_LARGE, nothing written */
	if (doclen > 0) {
		memset(out, 0xA5, doclen);
		CHECK(kh_kc_msg_open(fz_kc_key, d, n, &h2, &e2, out, doclen - 1, &doclen2) == KH_ERR_TOO_LARGE);
		untouched(out, doclen);
	}
	/* under another key: nothing opens */
	memcpy(key2, fz_kc_key, sizeof key2);
	key2[n % sizeof key2] ^= 0x80;
	CHECK(kh_kc_msg_open(key2, d, n, &h2, &e2, out, sizeof out, &doclen2) == KH_ERR_AUTH);
}

/* ---- signed records ---- */

/* The framing code a signed record of len bytes with this magic must get. */
static kh_err shape_expect(const uint8_t *d, size_t n, const char *magic, size_t len)
{
	if (n < 5)
		return KH_ERR_TRUNCATED;
	if (memcmp(d, magic, 4) != 0)
		return KH_ERR_FORMAT;
	if (d[4] != 1)
		return KH_ERR_VERSION;
	if (n != len)
		return n < len ? KH_ERR_TRUNCATED : KH_ERR_TRAILING;
	return KH_OK;
}

/* The fixed center's signature over label | the body of a record of len bytes, into sig. */
static void sign_expect(const char *label, const uint8_t *d, size_t len, uint8_t sig[static KH_ED25519_SIG_LEN])
{
	uint8_t m[64 + KH_KC_ENROLKEY_LEN];
	size_t ll = strlen(label), body = len - KH_ED25519_SIG_LEN;

	memcpy(m, label, ll);
	memcpy(m + ll, d, body);
	CHECK(kh_ed25519_sign(fz_kc_center_sk, m, ll + body, sig) == KH_OK);
}

/*
 * What a signed record's verifier answered (r, for d of n bytes) against the model: the framing,
 * then KH_OK exactly when the trailer holds the signature worked out here. For a record of the
 * right shape: with that signature put in it verifies (cp: a copy of len bytes), under another
 * center's key it never does, nor with a byte of the signature (picked by the input) flipped.
 */
static int signed_checks(kh_err r, const uint8_t *d, size_t n, const char *magic, size_t len, const char *label,
			 kh_err (*verify)(const uint8_t *pk, const uint8_t *in, size_t n), uint8_t *cp)
{
	uint8_t sig[KH_ED25519_SIG_LEN];
	kh_err shape = shape_expect(d, n, magic, len);
	size_t at;

	if (shape != KH_OK) {
		CHECK(r == shape);
		return 0;
	}
	sign_expect(label, d, len, sig);
	CHECK((r == KH_OK) == (memcmp(sig, d + len - sizeof sig, sizeof sig) == 0));
	CHECK(r == KH_OK || r == KH_ERR_SIGNATURE);
	memcpy(cp, d, len);
	memcpy(cp + len - sizeof sig, sig, sizeof sig);
	CHECK(verify(center_pk, cp, len) == KH_OK);
	CHECK(verify(other_pk, cp, len) == KH_ERR_SIGNATURE);
	at = len - sizeof sig + d[len - 1] % sizeof sig;
	cp[at] ^= 0x04;
	CHECK(verify(center_pk, cp, len) == KH_ERR_SIGNATURE);
	return r == KH_OK;
}

static kh_err ack_verify(const uint8_t *pk, const uint8_t *in, size_t n)
{
	uint64_t s, i;
	uint32_t c;

	return kh_kc_ack_verify(pk, in, n, &c, &s, &i);
}

static void ack(const uint8_t *d, size_t n)
{
	struct {
		uint32_t center;
		uint64_t serial, index;
	} o;
	uint8_t cp[KH_KC_ACK_LEN], w[KH_KC_ACK_LEN];
	kh_err r;

	memset(&o, 0xA5, sizeof o);
	r = kh_kc_ack_verify(center_pk, d, n, &o.center, &o.serial, &o.index);
	if (!signed_checks(r, d, n, "KHKA", KH_KC_ACK_LEN, label_ack, ack_verify, cp)) {
		untouched(&o, sizeof o);
		return;
	}
	CHECK(o.center == kh_get_be32(d + 5) && o.serial == kh_get_be64(d + 9) && o.index == kh_get_be64(d + 17));
	CHECK(kh_kc_ack_sign(fz_kc_center_sk, o.center, o.serial, o.index, w) == KH_OK);
	CHECK(memcmp(w, d, sizeof w) == 0);
}

static kh_err enrolkey_verify(const uint8_t *pk, const uint8_t *in, size_t n)
{
	uint8_t xpk[32];
	uint32_t c;

	return kh_kc_enrolkey_verify(pk, in, n, &c, xpk);
}

static void enrolkey(const uint8_t *d, size_t n)
{
	struct {
		uint32_t center;
		uint8_t xpk[32];
	} o;
	uint8_t cp[KH_KC_ENROLKEY_LEN], w[KH_KC_ENROLKEY_LEN];
	kh_err r;

	memset(&o, 0xA5, sizeof o);
	r = kh_kc_enrolkey_verify(center_pk, d, n, &o.center, o.xpk);
	if (!signed_checks(r, d, n, "KHKE", KH_KC_ENROLKEY_LEN, label_enrolkey, enrolkey_verify, cp)) {
		untouched(&o, sizeof o);
		return;
	}
	CHECK(o.center == kh_get_be32(d + 5) && memcmp(o.xpk, d + 9, 32) == 0);
	CHECK(kh_kc_enrolkey_sign(fz_kc_center_sk, o.center, o.xpk, w) == KH_OK);
	CHECK(memcmp(w, d, sizeof w) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static void (*const readers[])(const uint8_t *, size_t) = {header, envelope, chunk, message, ack, enrolkey};

	if (size < 1 || size - 1 > MSG_CAP)
		return 0;
	readers[data[0] % (sizeof readers / sizeof readers[0])](data + 1, size - 1);
	return 0;
}
