/*
 * The key center's key sequences (include/keyhole/keyseq.h): every state and key checked against
 * the formulas computed here with OpenSSL's HKDF directly (an implementation of its own, not
 * kh_hkdf); the two chains of a card and the chains of two cards apart; keys ahead within the
 * window and none beyond it; nothing behind the position, ever, after a move; a refused move
 * changes nothing.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "keyhole/buf.h"
#include "keyhole/keyseq.h"
#include "testutil.h"

#define L KH_KEYSEQ_LEN

static const uint8_t seed[L] = {0x5e, 0xed, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
				15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30};
#define SERIAL UINT64_C(0x0102030405060708)

/* HKDF-SHA256(ikm, no salt, info) into 32 bytes, through EVP_KDF. */
static void hkdf(const uint8_t *ikm, const uint8_t *info, size_t infolen, uint8_t out[static L])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
	OSSL_PARAM p[4];

	assert_non_null(ctx);
	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, L);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
	p[3] = OSSL_PARAM_construct_end();
	assert_int_equal(EVP_KDF_derive(ctx, out, L, p), 1);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
}

/* s_pos of the chain (dir) of (seed, serial), by the formulas. */
static void model_state(uint64_t serial, uint8_t dir, uint64_t pos, uint8_t s[static L])
{
	uint8_t info[64];
	size_t n = strlen("keyhole keyseq chain v1");

	memcpy(info, "keyhole keyseq chain v1", n);
	kh_put_be64(info + n, serial);
	info[n + 8] = dir;
	hkdf(seed, info, n + 9, s);
	for (uint64_t i = 1; i < pos; i++)
		hkdf(s, (const uint8_t *)"keyhole keyseq next v1", strlen("keyhole keyseq next v1"), s);
}

static void model_key(uint64_t serial, uint8_t dir, uint64_t j, uint8_t key[static L])
{
	uint8_t s[L], info[64];
	size_t n = strlen("keyhole keyseq key v1");

	model_state(serial, dir, j, s);
	memcpy(info, "keyhole keyseq key v1", n);
	kh_put_be64(info + n, serial);
	info[n + 8] = dir;
	kh_put_be64(info + n + 9, j);
	hkdf(s, info, n + 17, key);
}

static void test_formulas(void **state)
{
	struct kh_keyseq c;
	uint8_t s[L], k[L], want[L];

	(void)state;
	for (uint8_t dir = 0; dir < 2; dir++) {
		assert_int_equal(kh_keyseq_init(seed, SERIAL, dir, &c), KH_OK);
		assert_int_equal(c.pos, 1);
		model_state(SERIAL, dir, 1, s);
		assert_memory_equal(c.s, s, L);
		for (uint64_t j = 1; j <= 10; j++) {
			assert_int_equal(kh_keyseq_key(&c, j, KH_KEYSEQ_WINDOW, k), KH_OK);
			model_key(SERIAL, dir, j, want);
			assert_memory_equal(k, want, L);
		}
		/* after a move the chain holds s_7 and nothing else */
		assert_int_equal(kh_keyseq_advance(&c, 7, KH_KEYSEQ_WINDOW), KH_OK);
		assert_int_equal(c.pos, 7);
		model_state(SERIAL, dir, 7, s);
		assert_memory_equal(c.s, s, L);
		assert_int_equal(kh_keyseq_key(&c, 9, KH_KEYSEQ_WINDOW, k), KH_OK);
		model_key(SERIAL, dir, 9, want);
		assert_memory_equal(k, want, L);
	}
}

static void test_apart(void **state)
{
	struct kh_keyseq a, b, c;
	uint8_t ka[L], kb[L], kc[L];

	(void)state;
	assert_int_equal(kh_keyseq_init(seed, SERIAL, KH_KEYSEQ_SEND, &a), KH_OK);
	assert_int_equal(kh_keyseq_init(seed, SERIAL, KH_KEYSEQ_RECV, &b), KH_OK);
	assert_int_equal(kh_keyseq_init(seed, SERIAL + 1, KH_KEYSEQ_SEND, &c), KH_OK);
	for (uint64_t j = 1; j <= 5; j++) {
		assert_int_equal(kh_keyseq_key(&a, j, 8, ka), KH_OK);
		assert_int_equal(kh_keyseq_key(&b, j, 8, kb), KH_OK);
		assert_int_equal(kh_keyseq_key(&c, j, 8, kc), KH_OK);
		assert_memory_not_equal(ka, kb, L);
		assert_memory_not_equal(ka, kc, L);
		/* a key is not the chain's state */
		assert_memory_not_equal(ka, a.s, L);
	}
	assert_int_equal(kh_keyseq_init(seed, SERIAL, 2, &c), KH_ERR_INVAL);
}

static void test_window(void **state)
{
	struct kh_keyseq c, before;
	uint8_t k[L], k2[L];

	(void)state;
	assert_int_equal(kh_keyseq_init(seed, SERIAL, KH_KEYSEQ_RECV, &c), KH_OK);
	assert_int_equal(kh_keyseq_advance(&c, 5, 16), KH_OK);
	before = c;
	/* keys: [pos, pos + W - 1] */
	assert_int_equal(kh_keyseq_key(&c, 4, 16, k), KH_ERR_KEY_BEHIND);
	assert_int_equal(kh_keyseq_key(&c, 1, 16, k), KH_ERR_KEY_BEHIND);
	assert_int_equal(kh_keyseq_key(&c, 5, 16, k), KH_OK);
	assert_int_equal(kh_keyseq_key(&c, 20, 16, k2), KH_OK);
	assert_int_equal(kh_keyseq_key(&c, 21, 16, k2), KH_ERR_KEY_AHEAD);
	assert_int_equal(kh_keyseq_key(&c, 5, 0, k2), KH_ERR_INVAL);
	assert_int_equal(kh_keyseq_key(&c, 5, KH_KEYSEQ_WINDOW_MAX + 1, k2), KH_ERR_INVAL);
	/* moves: (pos, pos + W]; a refused one changes nothing */
	assert_int_equal(kh_keyseq_advance(&c, 5, 16), KH_ERR_KEY_BEHIND);
	assert_int_equal(kh_keyseq_advance(&c, 3, 16), KH_ERR_KEY_BEHIND);
	assert_int_equal(kh_keyseq_advance(&c, 22, 16), KH_ERR_KEY_AHEAD);
	assert_int_equal(kh_keyseq_advance(&c, 6, 0), KH_ERR_INVAL);
	assert_memory_equal(&c, &before, sizeof c);
	/* past key 5: it is gone, for good */
	assert_int_equal(kh_keyseq_advance(&c, 6, 16), KH_OK);
	assert_int_equal(kh_keyseq_key(&c, 5, 16, k2), KH_ERR_KEY_BEHIND);
	assert_int_equal(kh_keyseq_advance(&c, 21, 15), KH_OK);
	assert_int_equal(c.pos, 21);
	assert_int_equal(kh_keyseq_advance(&c, 21 + KH_KEYSEQ_WINDOW_MAX, KH_KEYSEQ_WINDOW_MAX), KH_OK);
}

/* No chain runs past KH_KEYSEQ_POS_MAX: nothing wraps. */
static void test_end(void **state)
{
	struct kh_keyseq c;
	uint8_t k[L];

	(void)state;
	assert_int_equal(kh_keyseq_init(seed, SERIAL, KH_KEYSEQ_SEND, &c), KH_OK);
	c.pos = KH_KEYSEQ_POS_MAX;
	assert_int_equal(kh_keyseq_key(&c, KH_KEYSEQ_POS_MAX, 4, k), KH_OK);
	assert_int_equal(kh_keyseq_key(&c, KH_KEYSEQ_POS_MAX + 1, 4, k), KH_ERR_KEY_AHEAD);
	assert_int_equal(kh_keyseq_advance(&c, KH_KEYSEQ_POS_MAX + 1, 4), KH_ERR_KEY_AHEAD);
	assert_int_equal(kh_keyseq_key(&c, UINT64_MAX, KH_KEYSEQ_WINDOW_MAX, k), KH_ERR_KEY_AHEAD);
	c.pos = 0; /* a chain that was never started */
	assert_int_equal(kh_keyseq_key(&c, 1, 4, k), KH_ERR_INVAL);
	assert_int_equal(kh_keyseq_advance(&c, 1, 4), KH_ERR_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_formulas),
	    cmocka_unit_test(test_apart),
	    cmocka_unit_test(test_window),
	    cmocka_unit_test(test_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
