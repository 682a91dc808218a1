/*
 * HPKE base mode against RFC 9180 Appendix A.1 (AES-128-GCM) and A.2 (ChaCha20-Poly1305), read
 * at run time from tests/vectors/hpke-rfc9180-x25519-base.txt, plus the failures a receiver
 * must notice: a changed ciphertext, aad, key or length fails without advancing the sequence
 * number or leaving plaintext behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/hpke.h"
#include "testutil.h"

#define VEC_FILE "tests/vectors/hpke-rfc9180-x25519-base.txt"
#define MAX_SUITES 4
#define MAX_ENCS 8
#define MAX_EXPS 4

struct field {
	uint8_t b[128];
	size_t n;
	int set;
};

struct vec_enc {
	unsigned long seq;
	struct field pt, aad, nonce, ct;
};

struct vec_exp {
	struct field ctx, value;
	unsigned long len;
};

struct vec_suite {
	unsigned long mode, kem_id, kdf_id, aead_id;
	struct field info, ikmE, pkEm, skEm, ikmR, pkRm, skRm, enc, shared_secret, ksc, secret, key,
	    base_nonce, exporter_secret;
	struct vec_enc encs[MAX_ENCS];
	size_t nenc;
	struct vec_exp exps[MAX_EXPS];
	size_t nexp;
};

struct vectors {
	struct vec_suite s[MAX_SUITES];
	size_t n;
};

static struct vectors V;

/* ---- vector file parsing ---- */

static void set_hex(struct field *f, const char *hex)
{
	long n = kh_test_unhex(hex, f->b, sizeof f->b);
	if (n < 0)
		fail_msg("bad hex value in %s: %.40s", VEC_FILE, hex);
	f->n = (size_t)n;
	f->set = 1;
}

static unsigned long dec(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (end == s || *end)
		fail_msg("bad number in %s: %.40s", VEC_FILE, s);
	return v;
}

static struct vec_suite *cur_suite(void)
{
	if (V.n == 0)
		fail_msg("%s: value before the first \"mode:\"", VEC_FILE);
	return &V.s[V.n - 1];
}

static void take(const char *name, const char *val)
{
	struct vec_suite *s;
	static const struct {
		const char *name;
		size_t off;
	} setup[] = {
	/* clang-format off */
#define F(n, m) {n, offsetof(struct vec_suite, m)}
		F("info", info), F("ikmE", ikmE), F("pkEm", pkEm), F("skEm", skEm), F("ikmR", ikmR),
		F("pkRm", pkRm), F("skRm", skRm), F("enc", enc), F("shared_secret", shared_secret),
		F("key_schedule_context", ksc), F("secret", secret), F("key", key),
		F("base_nonce", base_nonce), F("exporter_secret", exporter_secret),
#undef F
	/* clang-format on */
	};

	if (strcmp(name, "mode") == 0) {
		if (V.n == MAX_SUITES)
			fail_msg("too many suites in %s", VEC_FILE);
		s = &V.s[V.n++];
		memset(s, 0, sizeof *s);
		s->mode = dec(val);
		return;
	}
	s = cur_suite();
	if (strcmp(name, "kem_id") == 0) {
		s->kem_id = dec(val);
	} else if (strcmp(name, "kdf_id") == 0) {
		s->kdf_id = dec(val);
	} else if (strcmp(name, "aead_id") == 0) {
		s->aead_id = dec(val);
	} else if (strcmp(name, "sequence number") == 0) {
		if (s->nenc == MAX_ENCS)
			fail_msg("too many encryptions in %s", VEC_FILE);
		s->encs[s->nenc++].seq = dec(val);
	} else if (strcmp(name, "pt") == 0 || strcmp(name, "aad") == 0 ||
		   strcmp(name, "nonce") == 0 || strcmp(name, "ct") == 0) {
		struct vec_enc *e;
		if (s->nenc == 0)
			fail_msg("%s before \"sequence number\"", name);
		e = &s->encs[s->nenc - 1];
		if (strcmp(name, "pt") == 0)
			set_hex(&e->pt, val);
		else if (strcmp(name, "aad") == 0)
			set_hex(&e->aad, val);
		else if (strcmp(name, "nonce") == 0)
			set_hex(&e->nonce, val);
		else
			set_hex(&e->ct, val);
	} else if (strcmp(name, "exporter_context") == 0) {
		if (s->nexp == MAX_EXPS)
			fail_msg("too many exports in %s", VEC_FILE);
		set_hex(&s->exps[s->nexp++].ctx, val);
	} else if (strcmp(name, "L") == 0 || strcmp(name, "exported_value") == 0) {
		struct vec_exp *x;
		if (s->nexp == 0)
			fail_msg("%s before \"exporter_context\"", name);
		x = &s->exps[s->nexp - 1];
		if (name[0] == 'L')
			x->len = dec(val);
		else
			set_hex(&x->value, val);
	} else {
		for (size_t i = 0; i < sizeof setup / sizeof setup[0]; i++) {
			if (strcmp(name, setup[i].name) == 0) {
				set_hex((struct field *)((char *)s + setup[i].off), val);
				return;
			}
		}
		fail_msg("unknown field \"%s\" in %s", name, VEC_FILE);
	}
}

/* A "name:" line: letters, digits, '_' and ' ' before the first ':'. Returns the colon or NULL. */
static char *name_colon(char *line)
{
	char *p = line;
	if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		return NULL;
	for (; *p && *p != ':'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == ' '))
			return NULL;
	}
	return *p == ':' ? p : NULL;
}

/*
 * Read the file into V. A value follows "name:" on its line and continues on the following
 * lines until the next "name:" line, a blank line, a heading or a "~~~" fence.
 */
static void load_vectors(void)
{
	FILE *f = fopen(kh_test_src(VEC_FILE), "r");
	char line[512], name[64] = "", val[2048] = "";
	int have = 0;

	if (!f)
		fail_msg("cannot open %s", kh_test_src(VEC_FILE));
	memset(&V, 0, sizeof V);
	for (;;) {
		char *got = fgets(line, sizeof line, f);
		char *colon = NULL;
		size_t n;

		if (got) {
			n = strlen(line);
			if (n == sizeof line - 1 && line[n - 1] != '\n')
				fail_msg("line too long in %s", VEC_FILE);
			while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' ||
					 line[n - 1] == ' ' || line[n - 1] == '\t'))
				line[--n] = '\0';
			colon = name_colon(line);
		}
		/* End of the current value? */
		if (have && (!got || colon || line[0] == '\0' || line[0] == '#' ||
			     strncmp(line, "~~~", 3) == 0)) {
			take(name, val);
			have = 0;
		}
		if (!got)
			break;
		if (colon) {
			const char *v = colon + 1;
			*colon = '\0';
			if (strlen(line) >= sizeof name)
				fail_msg("name too long in %s", VEC_FILE);
			strcpy(name, line);
			while (*v == ' ' || *v == '\t')
				v++;
			if (strlen(v) >= sizeof val)
				fail_msg("value too long in %s", VEC_FILE);
			strcpy(val, v);
			have = 1;
		} else if (have) {
			if (strlen(val) + strlen(line) >= sizeof val)
				fail_msg("value too long in %s", VEC_FILE);
			strcat(val, line);
		}
	}
	fclose(f);
}

static int setup_vectors(void **state)
{
	(void)state;
	load_vectors();
	return 0;
}

static const struct vec_suite *suite_for(unsigned long aead_id)
{
	for (size_t i = 0; i < V.n; i++)
		if (V.s[i].aead_id == aead_id)
			return &V.s[i];
	fail_msg("no suite with aead_id %lu in %s", aead_id, VEC_FILE);
	return NULL;
}

static size_t nk_of(unsigned long aead_id)
{
	return aead_id == 1 ? 16 : 32;
}

/* ---- known answers ---- */

static void test_file_shape(void **state)
{
	(void)state;
	assert_int_equal(V.n, 2);
	for (size_t i = 0; i < V.n; i++) {
		const struct vec_suite *s = &V.s[i];
		assert_int_equal(s->mode, 0);
		assert_int_equal(s->kem_id, KH_HPKE_KEM_X25519);
		assert_int_equal(s->kdf_id, KH_HPKE_KDF_SHA256);
		assert_int_equal(s->nenc, 6);
		assert_int_equal(s->nexp, 3);
		assert_int_equal(s->info.n, 20);
		assert_int_equal(s->ikmE.n, 32);
		assert_int_equal(s->ikmR.n, 32);
		assert_int_equal(s->enc.n, KH_HPKE_ENC_LEN);
		assert_int_equal(s->ksc.n, 65);
		assert_int_equal(s->key.n, nk_of(s->aead_id));
		assert_int_equal(s->base_nonce.n, KH_NONCE_LEN);
		assert_int_equal(s->exporter_secret.n, 32);
		for (size_t j = 0; j < s->nenc; j++) {
			assert_true(s->encs[j].pt.set && s->encs[j].aad.set && s->encs[j].ct.set);
			assert_int_equal(s->encs[j].nonce.n, KH_NONCE_LEN);
			assert_int_equal(s->encs[j].ct.n, s->encs[j].pt.n + KH_TAG_LEN);
		}
		for (size_t j = 0; j < s->nexp; j++) {
			assert_true(s->exps[j].value.set);
			assert_int_equal(s->exps[j].value.n, s->exps[j].len);
		}
	}
	assert_non_null(suite_for(1));
	assert_non_null(suite_for(3));
	/* The empty exporter_context really parsed as empty. */
	assert_int_equal(suite_for(1)->exps[0].ctx.n, 0);
	assert_int_equal(suite_for(1)->exps[1].ctx.n, 1);
}

static void check_schedule(const struct vec_suite *s, const struct kh_hpke_ctx *c)
{
	assert_int_equal(c->aead, s->aead_id);
	assert_memory_equal(c->key, s->key.b, s->key.n);
	assert_memory_equal(c->base_nonce, s->base_nonce.b, KH_NONCE_LEN);
	assert_memory_equal(c->exporter_secret, s->exporter_secret.b, 32);
	assert_int_equal(c->seq, 0);
}

static void check_derive(const struct vec_suite *s)
{
	uint8_t sk[32], pk[32];

	assert_int_equal(kh_hpke_derive_keypair(s->ikmE.b, s->ikmE.n, sk, pk), KH_OK);
	assert_memory_equal(sk, s->skEm.b, 32);
	assert_memory_equal(pk, s->pkEm.b, 32);
	assert_int_equal(kh_hpke_derive_keypair(s->ikmR.b, s->ikmR.n, sk, pk), KH_OK);
	assert_memory_equal(sk, s->skRm.b, 32);
	assert_memory_equal(pk, s->pkRm.b, 32);
}

static void check_suite(unsigned long aead_id)
{
	const struct vec_suite *s = suite_for(aead_id);
	struct kh_hpke_ctx cs, cr;
	uint8_t enc[KH_HPKE_ENC_LEN], ct[160], pt[160], out[64];
	uint64_t seq = 0;

	check_derive(s);

	memset(enc, 0, sizeof enc);
	assert_int_equal(kh_hpke_setup_s(&cs, (enum kh_aead_alg)aead_id, s->pkRm.b, s->info.b,
					 s->info.n, s->skEm.b, enc),
			 KH_OK);
	assert_memory_equal(enc, s->enc.b, KH_HPKE_ENC_LEN);
	check_schedule(s, &cs);

	assert_int_equal(
	    kh_hpke_setup_r(&cr, (enum kh_aead_alg)aead_id, enc, s->skRm.b, s->info.b, s->info.n),
	    KH_OK);
	check_schedule(s, &cr);

	for (size_t i = 0; i < s->nenc; i++) {
		const struct vec_enc *e = &s->encs[i];
		uint8_t nonce[KH_NONCE_LEN];

		/* Walk both contexts through every message before this one. */
		assert_true(e->seq >= seq);
		for (; seq < e->seq; seq++) {
			static const uint8_t filler[] = "filler";
			assert_int_equal(kh_hpke_seal(&cs, NULL, 0, filler, sizeof filler, ct),
					 KH_OK);
			assert_int_equal(
			    kh_hpke_open(&cr, NULL, 0, ct, sizeof filler + KH_TAG_LEN, pt), KH_OK);
			assert_memory_equal(pt, filler, sizeof filler);
		}
		assert_int_equal(cs.seq, e->seq);
		assert_int_equal(cr.seq, e->seq);

		/* The file's nonce is base_nonce XOR seq, as ComputeNonce makes it. */
		memcpy(nonce, s->base_nonce.b, KH_NONCE_LEN);
		for (int k = 0; k < 8; k++)
			nonce[KH_NONCE_LEN - 1 - k] ^= (uint8_t)(e->seq >> (8 * k));
		assert_memory_equal(nonce, e->nonce.b, KH_NONCE_LEN);

		memset(ct, 0, sizeof ct);
		assert_int_equal(kh_hpke_seal(&cs, e->aad.b, e->aad.n, e->pt.b, e->pt.n, ct),
				 KH_OK);
		assert_memory_equal(ct, e->ct.b, e->ct.n);
		memset(pt, 0, sizeof pt);
		assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n, pt),
				 KH_OK);
		assert_memory_equal(pt, e->pt.b, e->pt.n);
		seq++;
		assert_int_equal(cs.seq, seq);
		assert_int_equal(cr.seq, seq);
	}

	/* Jumping straight to a sequence number gives the same ciphertext. */
	{
		const struct vec_enc *e = &s->encs[s->nenc - 1];
		struct kh_hpke_ctx c = cs;
		c.seq = e->seq;
		assert_int_equal(kh_hpke_seal(&c, e->aad.b, e->aad.n, e->pt.b, e->pt.n, ct), KH_OK);
		assert_memory_equal(ct, e->ct.b, e->ct.n);
		kh_hpke_ctx_wipe(&c);
	}

	for (size_t i = 0; i < s->nexp; i++) {
		const struct vec_exp *x = &s->exps[i];
		assert_true(x->len <= sizeof out);
		memset(out, 0, sizeof out);
		assert_int_equal(kh_hpke_export(&cs, x->ctx.b, x->ctx.n, out, x->len), KH_OK);
		assert_memory_equal(out, x->value.b, x->len);
		memset(out, 0, sizeof out);
		assert_int_equal(kh_hpke_export(&cr, x->ctx.b, x->ctx.n, out, x->len), KH_OK);
		assert_memory_equal(out, x->value.b, x->len);
	}

	kh_hpke_ctx_wipe(&cs);
	kh_hpke_ctx_wipe(&cr);
	{
		static const struct kh_hpke_ctx zero;
		assert_memory_equal(&cs, &zero, sizeof zero);
	}
}

static void test_a1_aes128gcm(void **state)
{
	(void)state;
	check_suite(1);
}

static void test_a2_chacha20poly1305(void **state)
{
	(void)state;
	check_suite(3);
}

/* ---- failures ---- */

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* A receiver context for A.1 and the first encryption of the file. */
static void a1_receiver(struct kh_hpke_ctx *cr, const struct vec_enc **e)
{
	const struct vec_suite *s = suite_for(1);
	assert_int_equal(
	    kh_hpke_setup_r(cr, KH_AEAD_AES128_GCM, s->enc.b, s->skRm.b, s->info.b, s->info.n),
	    KH_OK);
	*e = &s->encs[0];
	assert_int_equal((*e)->seq, 0);
}

static void test_open_flipped_bit(void **state)
{
	struct kh_hpke_ctx cr;
	const struct vec_enc *e;
	uint8_t ct[160], pt[160];
	(void)state;

	a1_receiver(&cr, &e);
	for (size_t bit = 0; bit < e->ct.n * 8; bit += 37) {
		memcpy(ct, e->ct.b, e->ct.n);
		ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		memset(pt, 0xa5, sizeof pt);
		assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, ct, e->ct.n, pt),
				 KH_ERR_AUTH);
		assert_true(all_zero(pt, e->pt.n));
		assert_int_equal(cr.seq, 0);
	}
	/* The failures left the context usable at the same sequence number. */
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n, pt), KH_OK);
	assert_memory_equal(pt, e->pt.b, e->pt.n);
	assert_int_equal(cr.seq, 1);
	kh_hpke_ctx_wipe(&cr);
}

static void test_open_wrong_aad(void **state)
{
	struct kh_hpke_ctx cr;
	const struct vec_enc *e;
	uint8_t aad[64], pt[160];
	(void)state;

	a1_receiver(&cr, &e);
	memcpy(aad, e->aad.b, e->aad.n);
	aad[e->aad.n - 1] ^= 1;
	memset(pt, 0xa5, sizeof pt);
	assert_int_equal(kh_hpke_open(&cr, aad, e->aad.n, e->ct.b, e->ct.n, pt), KH_ERR_AUTH);
	assert_true(all_zero(pt, e->pt.n));
	assert_int_equal(kh_hpke_open(&cr, NULL, 0, e->ct.b, e->ct.n, pt), KH_ERR_AUTH);
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n - 1, e->ct.b, e->ct.n, pt),
			 KH_ERR_AUTH);
	assert_int_equal(cr.seq, 0);
	kh_hpke_ctx_wipe(&cr);
}

static void test_open_wrong_key(void **state)
{
	const struct vec_suite *s = suite_for(1);
	const struct vec_enc *e = &s->encs[0];
	struct kh_hpke_ctx cr;
	uint8_t pt[160];
	(void)state;

	/* skEm is a valid X25519 key, just not the recipient's. */
	assert_int_equal(
	    kh_hpke_setup_r(&cr, KH_AEAD_AES128_GCM, s->enc.b, s->skEm.b, s->info.b, s->info.n),
	    KH_OK);
	assert_memory_not_equal(cr.key, s->key.b, s->key.n);
	memset(pt, 0xa5, sizeof pt);
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n, pt), KH_ERR_AUTH);
	assert_true(all_zero(pt, e->pt.n));
	assert_int_equal(cr.seq, 0);

	/* Right key, wrong info: a different key schedule. */
	assert_int_equal(
	    kh_hpke_setup_r(&cr, KH_AEAD_AES128_GCM, s->enc.b, s->skRm.b, s->info.b, s->info.n - 1),
	    KH_OK);
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n, pt), KH_ERR_AUTH);

	/* Right key, wrong suite. */
	assert_int_equal(
	    kh_hpke_setup_r(&cr, KH_AEAD_AES256_GCM, s->enc.b, s->skRm.b, s->info.b, s->info.n),
	    KH_OK);
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n, pt), KH_ERR_AUTH);
	kh_hpke_ctx_wipe(&cr);
}

static void test_open_truncated(void **state)
{
	struct kh_hpke_ctx cr;
	const struct vec_enc *e;
	uint8_t pt[160];
	(void)state;

	a1_receiver(&cr, &e);
	for (size_t n = 0; n < KH_TAG_LEN; n++) {
		kh_err r = kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, n, pt);
		assert_int_equal(r, KH_ERR_TRUNCATED);
		assert_int_equal(cr.seq, 0);
	}
	/* Cut inside the ciphertext: the tag no longer matches. */
	assert_int_equal(kh_hpke_open(&cr, e->aad.b, e->aad.n, e->ct.b, e->ct.n - 1, pt),
			 KH_ERR_AUTH);
	assert_int_equal(cr.seq, 0);
	kh_hpke_ctx_wipe(&cr);
}

static void test_seq_limit(void **state)
{
	const struct vec_suite *s = suite_for(1);
	struct kh_hpke_ctx c;
	uint8_t enc[KH_HPKE_ENC_LEN], ct[64], pt[64];
	static const uint8_t msg[] = "last";
	(void)state;

	assert_int_equal(
	    kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, s->pkRm.b, NULL, 0, s->skEm.b, enc), KH_OK);
	c.seq = UINT64_MAX - 1;
	assert_int_equal(kh_hpke_seal(&c, NULL, 0, msg, sizeof msg, ct), KH_OK);
	assert_int_equal(c.seq, UINT64_MAX);
	assert_int_not_equal(kh_hpke_seal(&c, NULL, 0, msg, sizeof msg, ct), KH_OK);
	assert_int_equal(c.seq, UINT64_MAX);
	assert_int_not_equal(kh_hpke_open(&c, NULL, 0, ct, sizeof msg + KH_TAG_LEN, pt), KH_OK);
	assert_int_equal(c.seq, UINT64_MAX);
	kh_hpke_ctx_wipe(&c);
}

static void test_bad_arguments(void **state)
{
	const struct vec_suite *s = suite_for(1);
	struct kh_hpke_ctx c, before;
	uint8_t enc[KH_HPKE_ENC_LEN], sk[32], pk[32], out[32];
	static const uint8_t zero[32];
	static uint8_t big[4096];
	(void)state;

	/* Unknown AEAD ids. */
	assert_int_equal(
	    kh_hpke_setup_s(&c, (enum kh_aead_alg)0, s->pkRm.b, NULL, 0, s->skEm.b, enc),
	    KH_ERR_INVAL);
	assert_int_equal(kh_hpke_setup_r(&c, (enum kh_aead_alg)4, s->enc.b, s->skRm.b, NULL, 0),
			 KH_ERR_INVAL);

	/* A low-order public key (all zero) makes a zero DH output: refused both ways. */
	memset(&c, 0x5a, sizeof c);
	memcpy(&before, &c, sizeof c);
	memset(enc, 0x33, sizeof enc);
	assert_int_equal(kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, zero, NULL, 0, s->skEm.b, enc),
			 KH_ERR_CRYPTO);
	assert_memory_equal(&c, &before, sizeof c); /* outputs only on success */
	for (size_t i = 0; i < sizeof enc; i++)
		assert_int_equal(enc[i], 0x33);
	assert_int_equal(kh_hpke_setup_r(&c, KH_AEAD_AES128_GCM, zero, s->skRm.b, NULL, 0),
			 KH_ERR_CRYPTO);
	assert_memory_equal(&c, &before, sizeof c);

	/* Bounded labeled inputs. */
	assert_int_equal(
	    kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, s->pkRm.b, big, sizeof big, s->skEm.b, enc),
	    KH_ERR_TOO_LARGE);
	assert_int_equal(
	    kh_hpke_setup_r(&c, KH_AEAD_AES128_GCM, s->enc.b, s->skRm.b, big, sizeof big),
	    KH_ERR_TOO_LARGE);
	assert_int_equal(
	    kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, s->pkRm.b, big, 64, s->skEm.b, enc), KH_OK);
	assert_int_equal(kh_hpke_export(&c, big, sizeof big, out, sizeof out), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_hpke_export(&c, big, 64, out, sizeof out), KH_OK);
	assert_int_equal(kh_hpke_derive_keypair(big, sizeof big, sk, pk), KH_ERR_TOO_LARGE);
	/* Too little input keying material. */
	assert_int_equal(kh_hpke_derive_keypair(s->ikmE.b, 31, sk, pk), KH_ERR_INVAL);
	/* NULL with a length. */
	assert_int_equal(
	    kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, s->pkRm.b, NULL, 3, s->skEm.b, enc),
	    KH_ERR_INVAL);
	kh_hpke_ctx_wipe(&c);
}

/* ---- single-shot API ---- */

static void test_single_shot(void **state)
{
	static const uint8_t info[] = "keyhole pair v1";
	static const uint8_t aad[] = "initiator-id";
	uint8_t skR[32], pkR[32], skX[32], pkX[32];
	uint8_t msg[48], enc[KH_HPKE_ENC_LEN], ct[48 + KH_TAG_LEN], pt[48], buf[48 + KH_TAG_LEN];
	(void)state;

	assert_int_equal(kh_x25519_keygen(skR, pkR), KH_OK);
	assert_int_equal(kh_x25519_keygen(skX, pkX), KH_OK);
	assert_int_equal(kh_random(msg, sizeof msg), KH_OK);

	assert_int_equal(kh_hpke_seal_base(pkR, info, sizeof info - 1, aad, sizeof aad - 1, msg,
					   sizeof msg, enc, ct),
			 KH_OK);
	memset(pt, 0, sizeof pt);
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 1, ct,
					   sizeof ct, pt),
			 KH_OK);
	assert_memory_equal(pt, msg, sizeof msg);

	/* In place. */
	memcpy(buf, ct, sizeof ct);
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 1,
					   buf, sizeof buf, buf),
			 KH_OK);
	assert_memory_equal(buf, msg, sizeof msg);

	/* Each of these must fail, with nothing of the plaintext left. */
	memset(pt, 0xa5, sizeof pt);
	assert_int_equal(kh_hpke_open_base(skX, enc, info, sizeof info - 1, aad, sizeof aad - 1, ct,
					   sizeof ct, pt),
			 KH_ERR_AUTH);
	assert_true(all_zero(pt, sizeof pt));
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 2, aad, sizeof aad - 1, ct,
					   sizeof ct, pt),
			 KH_ERR_AUTH);
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 2, ct,
					   sizeof ct, pt),
			 KH_ERR_AUTH);
	enc[0] ^= 0x40;
	assert_int_not_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 1,
					       ct, sizeof ct, pt),
			     KH_OK);
	enc[0] ^= 0x40;
	ct[sizeof ct - 1] ^= 1;
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 1, ct,
					   sizeof ct, pt),
			 KH_ERR_AUTH);
	assert_int_equal(kh_hpke_open_base(skR, enc, info, sizeof info - 1, aad, sizeof aad - 1, ct,
					   KH_TAG_LEN - 1, pt),
			 KH_ERR_TRUNCATED);

	/* Two seals to the same key never share an encapsulation. */
	{
		uint8_t enc2[KH_HPKE_ENC_LEN], ct2[sizeof ct];
		assert_int_equal(kh_hpke_seal_base(pkR, info, sizeof info - 1, aad, sizeof aad - 1,
						   msg, sizeof msg, enc2, ct2),
				 KH_OK);
		assert_memory_not_equal(enc, enc2, sizeof enc);
	}
	kh_wipe(skR, sizeof skR);
	kh_wipe(skX, sizeof skX);
}

/* seal_base is SetupBaseS with a fresh ephemeral key and AES-128-GCM, then one Seal. */
static void test_single_shot_is_aes128gcm_context(void **state)
{
	static const uint8_t seed[] = "hpke single shot";
	static const uint8_t info[] = "keyhole pair v1";
	static const uint8_t msg[] = "Ci and A";
	const struct vec_suite *s = suite_for(1);
	struct kh_rng_det d;
	struct kh_hpke_ctx c;
	uint8_t skE[32], enc1[KH_HPKE_ENC_LEN], enc2[KH_HPKE_ENC_LEN];
	uint8_t ct1[sizeof msg + KH_TAG_LEN], ct2[sizeof msg + KH_TAG_LEN];
	(void)state;

	kh_rng_det_init(&d, seed, sizeof seed);
	kh_rng_set(kh_rng_det_fn, &d);
	assert_int_equal(kh_hpke_seal_base(s->pkRm.b, info, sizeof info - 1, NULL, 0, msg,
					   sizeof msg, enc1, ct1),
			 KH_OK);
	kh_rng_det_init(&d, seed, sizeof seed);
	assert_int_equal(kh_random(skE, sizeof skE), KH_OK);
	kh_rng_set(NULL, NULL);

	assert_int_equal(
	    kh_hpke_setup_s(&c, KH_AEAD_AES128_GCM, s->pkRm.b, info, sizeof info - 1, skE, enc2),
	    KH_OK);
	assert_int_equal(kh_hpke_seal(&c, NULL, 0, msg, sizeof msg, ct2), KH_OK);
	assert_memory_equal(enc1, enc2, sizeof enc1);
	assert_memory_equal(ct1, ct2, sizeof ct1);
	kh_hpke_ctx_wipe(&c);
	kh_wipe(skE, sizeof skE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_file_shape),
	    cmocka_unit_test(test_a1_aes128gcm),
	    cmocka_unit_test(test_a2_chacha20poly1305),
	    cmocka_unit_test(test_open_flipped_bit),
	    cmocka_unit_test(test_open_wrong_aad),
	    cmocka_unit_test(test_open_wrong_key),
	    cmocka_unit_test(test_open_truncated),
	    cmocka_unit_test(test_seq_limit),
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_single_shot),
	    cmocka_unit_test(test_single_shot_is_aes128gcm_context),
	};
	return cmocka_run_group_tests(tests, setup_vectors, NULL);
}
