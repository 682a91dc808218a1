/*
 * Crypto facade known answers from the standards that define each primitive: SHA-256 (FIPS
 * 180-4 "abc"), HKDF-SHA256 (RFC 5869 test case 1), X25519 (RFC 7748 §6.1), Ed25519 (RFC 8032
 * §7.1 test 1), AES-256-GCM (McGrew-Viega test case 14). Then the behaviour the rest of
 * Keyhole leans on: tag failures report KH_ERR_AUTH and leave no plaintext, low-order X25519
 * peers are refused, kh_ct_eq and kh_wipe do what they say, and the test RNG is reproducible.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "testutil.h"

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	assert_int_equal(kh_test_unhex(hex, out, n), (long)n);
}

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* ---- hashing and HKDF ---- */

static void test_sha256_abc(void **state)
{
	uint8_t want[KH_SHA256_LEN], got[KH_SHA256_LEN];
	(void)state;

	unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want,
	      sizeof want);
	assert_int_equal(kh_sha256((const uint8_t *)"abc", 3, got), KH_OK);
	assert_memory_equal(got, want, sizeof want);
	/* Empty input. */
	unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want,
	      sizeof want);
	assert_int_equal(kh_sha256((const uint8_t *)"", 0, got), KH_OK);
	assert_memory_equal(got, want, sizeof want);
}

static void test_hkdf_rfc5869_case1(void **state)
{
	uint8_t ikm[22], salt[13], info[10], prk[32], okm[42], want_prk[32], want_okm[42];
	(void)state;

	memset(ikm, 0x0b, sizeof ikm);
	for (size_t i = 0; i < sizeof salt; i++)
		salt[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof info; i++)
		info[i] = (uint8_t)(0xf0 + i);
	unhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5", want_prk,
	      sizeof want_prk);
	unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
	      "34007208d5b887185865",
	      want_okm, sizeof want_okm);

	assert_int_equal(
	    kh_hkdf(ikm, sizeof ikm, salt, sizeof salt, info, sizeof info, okm, sizeof okm), KH_OK);
	assert_memory_equal(okm, want_okm, sizeof okm);

	assert_int_equal(kh_hkdf_extract(salt, sizeof salt, ikm, sizeof ikm, prk), KH_OK);
	assert_memory_equal(prk, want_prk, sizeof prk);
	memset(okm, 0, sizeof okm);
	assert_int_equal(kh_hkdf_expand(prk, info, sizeof info, okm, sizeof okm), KH_OK);
	assert_memory_equal(okm, want_okm, sizeof okm);

	/* RFC 5869: an absent salt is HashLen zeros. */
	{
		static const uint8_t zeros[32];
		uint8_t a[32], b[32];
		assert_int_equal(kh_hkdf_extract(NULL, 0, ikm, sizeof ikm, a), KH_OK);
		assert_int_equal(kh_hkdf_extract(zeros, sizeof zeros, ikm, sizeof ikm, b), KH_OK);
		assert_memory_equal(a, b, sizeof a);
	}
}

/* ---- X25519 ---- */

static const char *const alice_sk =
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
static const char *const alice_pk =
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
static const char *const bob_sk =
    "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
static const char *const bob_pk =
    "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
static const char *const alice_bob_k =
    "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

static void test_x25519_rfc7748(void **state)
{
	uint8_t ask[32], apk[32], bsk[32], bpk[32], k[32], got[32];
	(void)state;

	unhex(alice_sk, ask, 32);
	unhex(alice_pk, apk, 32);
	unhex(bob_sk, bsk, 32);
	unhex(bob_pk, bpk, 32);
	unhex(alice_bob_k, k, 32);

	assert_int_equal(kh_x25519_public(ask, got), KH_OK);
	assert_memory_equal(got, apk, 32);
	assert_int_equal(kh_x25519_public(bsk, got), KH_OK);
	assert_memory_equal(got, bpk, 32);
	memset(got, 0, sizeof got);
	assert_int_equal(kh_x25519(ask, bpk, got), KH_OK);
	assert_memory_equal(got, k, 32);
	memset(got, 0, sizeof got);
	assert_int_equal(kh_x25519(bsk, apk, got), KH_OK);
	assert_memory_equal(got, k, 32);
	/* with our public key handed in: the same secret */
	memset(got, 0, sizeof got);
	assert_int_equal(kh_x25519_kp(ask, apk, bpk, got), KH_OK);
	assert_memory_equal(got, k, 32);
	memset(got, 0, sizeof got);
	assert_int_equal(kh_x25519_kp(bsk, bpk, apk, got), KH_OK);
	assert_memory_equal(got, k, 32);
}

static void test_x25519_low_order(void **state)
{
	static const uint8_t zero[32];
	uint8_t sk[32], out[32], one[32] = {1};
	(void)state;

	unhex(alice_sk, sk, 32);
	memset(out, 0x77, sizeof out);
	assert_int_equal(kh_x25519(sk, zero, out), KH_ERR_CRYPTO);
	for (size_t i = 0; i < sizeof out; i++)
		assert_int_equal(out[i], 0x77); /* outputs only on success */
	/* u = 1 is the other small-order point every X25519 peer must refuse. */
	assert_int_equal(kh_x25519(sk, one, out), KH_ERR_CRYPTO);
	{
		uint8_t pk[32];
		assert_int_equal(kh_x25519_public(sk, pk), KH_OK);
		assert_int_equal(kh_x25519_kp(sk, pk, zero, out), KH_ERR_CRYPTO);
		assert_int_equal(out[0], 0x77);
	}
}

static void test_x25519_keygen(void **state)
{
	uint8_t ask[32], apk[32], bsk[32], bpk[32], k1[32], k2[32], pk[32];
	(void)state;

	assert_int_equal(kh_x25519_keygen(ask, apk), KH_OK);
	assert_int_equal(kh_x25519_keygen(bsk, bpk), KH_OK);
	assert_memory_not_equal(ask, bsk, 32);
	assert_int_equal(kh_x25519_public(ask, pk), KH_OK);
	assert_memory_equal(pk, apk, 32);
	assert_int_equal(kh_x25519(ask, bpk, k1), KH_OK);
	assert_int_equal(kh_x25519(bsk, apk, k2), KH_OK);
	assert_memory_equal(k1, k2, 32);
}

/* ---- Ed25519 ---- */

static void test_ed25519_rfc8032_test1(void **state)
{
	uint8_t sk[32], pk[32], want_sig[64], sig[64], got[32];
	static const uint8_t empty[1];
	(void)state;

	unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", sk, 32);
	unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", pk, 32);
	unhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
	      "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
	      want_sig, 64);

	assert_int_equal(kh_ed25519_public(sk, got), KH_OK);
	assert_memory_equal(got, pk, 32);
	assert_int_equal(kh_ed25519_sign(sk, empty, 0, sig), KH_OK);
	assert_memory_equal(sig, want_sig, 64);
	assert_int_equal(kh_ed25519_verify(pk, empty, 0, sig), KH_OK);

	for (size_t bit = 0; bit < 64 * 8; bit += 61) {
		sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(kh_ed25519_verify(pk, empty, 0, sig), KH_ERR_AUTH);
		sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	/* A different message under the same signature. */
	assert_int_equal(kh_ed25519_verify(pk, (const uint8_t *)"x", 1, sig), KH_ERR_AUTH);
	assert_int_equal(kh_ed25519_verify(pk, empty, 0, sig), KH_OK);
}

static void test_ed25519_keygen(void **state)
{
	static const uint8_t msg[] = "keyhole";
	uint8_t sk[32], pk[32], sig[64], other_sk[32], other_pk[32];
	(void)state;

	assert_int_equal(kh_ed25519_keygen(sk, pk), KH_OK);
	assert_int_equal(kh_ed25519_keygen(other_sk, other_pk), KH_OK);
	assert_int_equal(kh_ed25519_sign(sk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(kh_ed25519_verify(pk, msg, sizeof msg, sig), KH_OK);
	assert_int_equal(kh_ed25519_verify(other_pk, msg, sizeof msg, sig), KH_ERR_AUTH);
	kh_wipe(sk, sizeof sk);
	kh_wipe(other_sk, sizeof other_sk);
}

/* ---- AEAD ---- */

static void test_aes256gcm_known_answer(void **state)
{
	static const uint8_t key[32], nonce[KH_NONCE_LEN], pt[16];
	uint8_t want[16 + KH_TAG_LEN], ct[16 + KH_TAG_LEN], back[16];
	(void)state;

	unhex("cea7403d4d606b6e074ec5d3baf39d18"
	      "d0d1c8a799996bf0265b98b5d48ab919",
	      want, sizeof want);
	assert_int_equal(kh_aead_seal(key, nonce, NULL, 0, pt, sizeof pt, ct), KH_OK);
	assert_memory_equal(ct, want, sizeof want);
	memset(back, 0xa5, sizeof back);
	assert_int_equal(kh_aead_open(key, nonce, NULL, 0, ct, sizeof ct, back), KH_OK);
	assert_memory_equal(back, pt, sizeof pt);
	/* The generic entry point with the same algorithm agrees. */
	memset(ct, 0, sizeof ct);
	assert_int_equal(
	    kh_aead_seal_alg(KH_AEAD_AES256_GCM, key, nonce, NULL, 0, pt, sizeof pt, ct), KH_OK);
	assert_memory_equal(ct, want, sizeof want);
}

static void test_aes256gcm_round_trip(void **state)
{
	uint8_t key[32], nonce[KH_NONCE_LEN], pt[100], ct[100 + KH_TAG_LEN], back[100];
	static const uint8_t aad[] = "header";
	(void)state;

	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	assert_int_equal(kh_random(nonce, sizeof nonce), KH_OK);
	assert_int_equal(kh_random(pt, sizeof pt), KH_OK);

	assert_int_equal(kh_aead_seal(key, nonce, aad, sizeof aad, pt, sizeof pt, ct), KH_OK);
	assert_memory_not_equal(ct, pt, sizeof pt);
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, ct, sizeof ct, back), KH_OK);
	assert_memory_equal(back, pt, sizeof pt);

	/* Flipped tag bit: KH_ERR_AUTH and no plaintext left behind. */
	ct[sizeof ct - 1] ^= 0x80;
	memset(back, 0xa5, sizeof back);
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, ct, sizeof ct, back),
			 KH_ERR_AUTH);
	assert_true(all_zero(back, sizeof back));
	ct[sizeof ct - 1] ^= 0x80;

	/* Flipped ciphertext bit, wrong aad, wrong nonce. */
	ct[3] ^= 1;
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, ct, sizeof ct, back),
			 KH_ERR_AUTH);
	ct[3] ^= 1;
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad - 1, ct, sizeof ct, back),
			 KH_ERR_AUTH);
	nonce[0] ^= 1;
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, ct, sizeof ct, back),
			 KH_ERR_AUTH);
	nonce[0] ^= 1;

	/* Shorter than a tag. */
	assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, ct, KH_TAG_LEN - 1, back),
			 KH_ERR_TRUNCATED);

	/* In place, both ways. */
	{
		uint8_t buf[100 + KH_TAG_LEN];
		memcpy(buf, pt, sizeof pt);
		assert_int_equal(kh_aead_seal(key, nonce, aad, sizeof aad, buf, sizeof pt, buf),
				 KH_OK);
		assert_memory_equal(buf, ct, sizeof ct);
		assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, buf, sizeof buf, buf),
				 KH_OK);
		assert_memory_equal(buf, pt, sizeof pt);
	}

	/* Empty plaintext: a bare tag that still authenticates the aad. */
	{
		uint8_t tag[KH_TAG_LEN], none[1];
		assert_int_equal(kh_aead_seal(key, nonce, aad, sizeof aad, NULL, 0, tag), KH_OK);
		assert_int_equal(kh_aead_open(key, nonce, aad, sizeof aad, tag, sizeof tag, none),
				 KH_OK);
		assert_int_equal(
		    kh_aead_open(key, nonce, aad, sizeof aad - 1, tag, sizeof tag, none),
		    KH_ERR_AUTH);
	}
	kh_wipe(key, sizeof key);
}

static void test_aead_other_algs(void **state)
{
	static const enum kh_aead_alg algs[] = {KH_AEAD_AES128_GCM, KH_AEAD_CHACHA20_POLY1305};
	uint8_t key[32], nonce[KH_NONCE_LEN], pt[33], ct[33 + KH_TAG_LEN], back[33];
	(void)state;

	assert_int_equal(kh_aead_keylen(KH_AEAD_AES128_GCM), 16);
	assert_int_equal(kh_aead_keylen(KH_AEAD_AES256_GCM), 32);
	assert_int_equal(kh_aead_keylen(KH_AEAD_CHACHA20_POLY1305), 32);
	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	assert_int_equal(kh_random(nonce, sizeof nonce), KH_OK);
	assert_int_equal(kh_random(pt, sizeof pt), KH_OK);
	for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
		assert_int_equal(kh_aead_seal_alg(algs[i], key, nonce, NULL, 0, pt, sizeof pt, ct),
				 KH_OK);
		assert_int_equal(
		    kh_aead_open_alg(algs[i], key, nonce, NULL, 0, ct, sizeof ct, back), KH_OK);
		assert_memory_equal(back, pt, sizeof pt);
		ct[0] ^= 1;
		memset(back, 0xa5, sizeof back);
		assert_int_equal(
		    kh_aead_open_alg(algs[i], key, nonce, NULL, 0, ct, sizeof ct, back),
		    KH_ERR_AUTH);
		assert_true(all_zero(back, sizeof back));
	}
	kh_wipe(key, sizeof key);
}

/* ---- memory helpers ---- */

static void test_ct_eq(void **state)
{
	uint8_t a[40], b[40];
	(void)state;

	for (size_t i = 0; i < sizeof a; i++)
		a[i] = b[i] = (uint8_t)(i * 7);
	assert_int_equal(kh_ct_eq(a, b, sizeof a), 1);
	assert_int_equal(kh_ct_eq(a, b, 0), 1);
	b[0] ^= 1;
	assert_int_equal(kh_ct_eq(a, b, sizeof a), 0);
	b[0] ^= 1;
	b[sizeof b - 1] ^= 0x80;
	assert_int_equal(kh_ct_eq(a, b, sizeof a), 0);
	assert_int_equal(kh_ct_eq(a, b, sizeof a - 1), 1);
}

static void test_wipe(void **state)
{
	uint8_t buf[64];
	(void)state;

	memset(buf, 0xaa, sizeof buf);
	kh_wipe(buf + 8, 40);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], i >= 8 && i < 48 ? 0 : 0xaa);
	kh_wipe(buf, sizeof buf);
	assert_true(all_zero(buf, sizeof buf));
	kh_wipe(NULL, 0); /* harmless */
}

/* ---- random ---- */

static void test_rng_deterministic(void **state)
{
	static const uint8_t seed[] = "keyhole test seed";
	static const uint8_t seed2[] = "another seed";
	struct kh_rng_det d;
	uint8_t a[48], b[48], c[48], sk1[32], pk1[32], sk2[32], pk2[32];
	(void)state;

	kh_rng_det_init(&d, seed, sizeof seed);
	kh_rng_set(kh_rng_det_fn, &d);
	assert_int_equal(kh_random(a, sizeof a), KH_OK);
	assert_int_equal(kh_x25519_keygen(sk1, pk1), KH_OK);

	kh_rng_det_init(&d, seed, sizeof seed);
	assert_int_equal(kh_random(b, sizeof b), KH_OK);
	assert_int_equal(kh_x25519_keygen(sk2, pk2), KH_OK);
	assert_memory_equal(a, b, sizeof a);
	assert_memory_equal(sk1, sk2, sizeof sk1);
	assert_memory_equal(pk1, pk2, sizeof pk1);
	assert_false(all_zero(a, sizeof a));

	/* The stream moves on: the next draw differs from the first. */
	assert_int_equal(kh_random(c, sizeof c), KH_OK);
	assert_memory_not_equal(a, c, sizeof a);

	/* Another seed, another stream. */
	kh_rng_det_init(&d, seed2, sizeof seed2);
	assert_int_equal(kh_random(c, sizeof c), KH_OK);
	assert_memory_not_equal(a, c, sizeof a);

	/* Restored: RAND_bytes again, not the deterministic stream. */
	kh_rng_set(NULL, NULL);
	kh_rng_det_init(&d, seed, sizeof seed);
	assert_int_equal(kh_random(b, sizeof b), KH_OK);
	assert_memory_not_equal(a, b, sizeof a);
	assert_int_equal(kh_random(c, sizeof c), KH_OK);
	assert_memory_not_equal(b, c, sizeof b);
	kh_wipe(sk1, sizeof sk1);
	kh_wipe(sk2, sizeof sk2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256_abc),
	    cmocka_unit_test(test_hkdf_rfc5869_case1),
	    cmocka_unit_test(test_x25519_rfc7748),
	    cmocka_unit_test(test_x25519_low_order),
	    cmocka_unit_test(test_x25519_keygen),
	    cmocka_unit_test(test_ed25519_rfc8032_test1),
	    cmocka_unit_test(test_ed25519_keygen),
	    cmocka_unit_test(test_aes256gcm_known_answer),
	    cmocka_unit_test(test_aes256gcm_round_trip),
	    cmocka_unit_test(test_aead_other_algs),
	    cmocka_unit_test(test_ct_eq),
	    cmocka_unit_test(test_wipe),
	    cmocka_unit_test(test_rng_deterministic),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
