/*
 * AES-128 back ends of the scrambler (scramble.c):
 *
 *   DVB-CISSA v1 (ETSI TS 103 127 V1.1.1, DVB-CISSA v1): each payload is AES-128-CBC
 *     encrypted from the fixed IV "DVBTMCPTAESCISSA" (ASCII); the residue after the last whole
 *     16-byte block, and a payload shorter than 16 bytes, stay clear.
 *   ATIS-IDSA (ATIS-0800006, which takes its chaining from ANSI/SCTE 52 = DVS-042): AES-128-CBC
 *     from an all-zero IV over the whole blocks; a residue of n < 16 bytes is XORed with the
 *     first n bytes of AES_K(C_last), the encryption of the last whole ciphertext block; a
 *     payload shorter than 16 bytes, having no such block, is XORed with AES_K(IV) = AES_K(0)
 *     (DVS-042 2003: the short-message "whitener" is the IV; SCTE 52 2008 allows a separate
 *     "whitener2" which IDSA does not define, so TSDuck's ts::IDSA also uses the IV). Every
 *     payload byte is scrambled. Descrambling is the same residue XOR, done from C_last before
 *     the whole blocks are decrypted.
 *
 * Speed (DESIGN.md §10): one EVP call per packet reaches ~0.15x of bulk AES, so both directions
 * work on GROUP packets of one parity per EVP call. Decryption gathers the whole ciphertext
 * blocks of the group into one buffer and CBC-decrypts it in one call (CBC decryption is
 * parallel: AES-NI pipelines it); each packet's first block then came out chained on the
 * previous packet's last ciphertext block rather than the IV, which one XOR corrects, and the
 * blocks are copied back. Encryption, which CBC makes serial within a packet, uses AES-128-ECB
 * as the raw block function and goes column by column: block j of every packet in the group
 * is XORed with its packet's block j-1 (or the IV) and the column encrypted in one call, so
 * independent packets interleave. The IDSA residue blocks of a group are encrypted in one ECB
 * call too. ECB is never a mode on data here, only the block function under CBC.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "keyhole/crypto.h"
#include "keyhole/scramble.h"
#include "ts/scramble_int.h"

#define BLK 16
#define MAX_BLOCKS (184 / BLK) /* whole blocks of the longest payload: 11 */
/* Packets per EVP call: 128 packets of 11 blocks make 22 KiB, inside L1; 32..256 measured. */
#define GROUP 128

static const uint8_t cissa_iv[BLK] = {'D', 'V', 'B', 'T', 'M', 'C', 'P', 'T',
				       'A', 'E', 'S', 'C', 'I', 'S', 'S', 'A'};
static const uint8_t zero_iv[BLK];

struct kh__scr_aes {
	int idsa;
	const uint8_t *iv;
	EVP_CIPHER_CTX *enc[2]; /* AES-128-ECB, no padding, keyed per parity */
	EVP_CIPHER_CTX *dec[2]; /* AES-128-CBC decryption, no padding, keyed per parity */
	uint8_t eiv[2][BLK];             /* IDSA: AES_K(IV), the short-payload mask */
	const struct kh__scr_item *grp[GROUP];
	uint8_t gbuf[GROUP * MAX_BLOCKS * BLK];
	uint8_t rbuf[GROUP * BLK];
};

/* ---- fetched once per process (DESIGN.md §10) ---- */

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *c_ecb, *c_cbc;

static void fetch(void)
{
	c_ecb = EVP_CIPHER_fetch(NULL, "AES-128-ECB", NULL);
	c_cbc = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
}

static void xor16(uint8_t *out, const uint8_t *a, const uint8_t *b)
{
	uint64_t x[2], y[2];

	memcpy(x, a, BLK);
	memcpy(y, b, BLK);
	x[0] ^= y[0];
	x[1] ^= y[1];
	memcpy(out, x, BLK);
}

/* out = AES-ECB(in) over len bytes (a multiple of 16) with one EVP call. */
static kh_err ecb(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in, size_t len)
{
	int ol = 0;

	if (len == 0)
		return KH_OK;
	if (!EVP_CipherUpdate(c, out, &ol, in, (int)len) || (size_t)ol != len)
		return KH_ERR_CRYPTO;
	return KH_OK;
}

kh_err kh__scr_aes_new(int idsa, struct kh__scr_aes **out)
{
	struct kh__scr_aes *a;
	kh_err r = KH_ERR_CRYPTO;

	pthread_once(&fetch_once, fetch);
	if (!c_ecb || !c_cbc)
		return KH_ERR_CRYPTO;
	if (!(a = calloc(1, sizeof *a)))
		return KH_ERR_NOMEM;
	a->idsa = idsa;
	a->iv = idsa ? zero_iv : cissa_iv;
	for (unsigned p = 0; p < 2; p++) {
		a->enc[p] = EVP_CIPHER_CTX_new();
		a->dec[p] = EVP_CIPHER_CTX_new();
		if (!a->enc[p] || !a->dec[p]) {
			r = KH_ERR_NOMEM;
			goto out;
		}
		/* Bind the cipher now; set_key then only re-keys, with no allocation. */
		if (!EVP_CipherInit_ex2(a->enc[p], c_ecb, NULL, NULL, 1, NULL) ||
		    !EVP_CipherInit_ex2(a->dec[p], c_cbc, NULL, NULL, 0, NULL))
			goto out;
	}
	*out = a;
	a = NULL;
	r = KH_OK;
out:
	kh__scr_aes_free(a);
	return r;
}

void kh__scr_aes_free(struct kh__scr_aes *a)
{
	if (!a)
		return;
	for (unsigned p = 0; p < 2; p++) {
		/* EVP_CIPHER_CTX_free cleanses the key schedule. */
		EVP_CIPHER_CTX_free(a->enc[p]);
		EVP_CIPHER_CTX_free(a->dec[p]);
	}
	kh_wipe(a, sizeof *a);
	free(a);
}

kh_err kh__scr_aes_set_key(struct kh__scr_aes *a, unsigned parity, const uint8_t key[static 16])
{
	if (!EVP_CipherInit_ex2(a->enc[parity], NULL, key, NULL, 1, NULL) ||
	    !EVP_CipherInit_ex2(a->dec[parity], NULL, key, NULL, 0, NULL) ||
	    !EVP_CIPHER_CTX_set_padding(a->enc[parity], 0) ||
	    !EVP_CIPHER_CTX_set_padding(a->dec[parity], 0))
		return KH_ERR_CRYPTO;
	return ecb(a->enc[parity], a->eiv[parity], a->iv, BLK);
}

void kh__scr_aes_clear_key(struct kh__scr_aes *a, unsigned parity)
{
	static const uint8_t zero[16];

	/* Overwrite the schedules with those of the zero key; nothing can fail that matters. */
	(void)EVP_CipherInit_ex2(a->enc[parity], NULL, zero, NULL, 1, NULL);
	(void)EVP_CipherInit_ex2(a->dec[parity], NULL, zero, NULL, 0, NULL);
	kh_wipe(a->eiv[parity], BLK);
}

/*
 * IDSA residues of a group, in either direction: needs the last whole block still (or already)
 * ciphertext. Residue i is XORed with AES(C_last), or with AES(IV) when there is no whole block.
 */
static kh_err idsa_residue(struct kh__scr_aes *a, unsigned p, size_t k)
{
	size_t i, m = 0;
	kh_err r;

	for (i = 0; i < k; i++) {
		unsigned nb = a->grp[i]->len / BLK;
		if (a->grp[i]->len % BLK && nb)
			memcpy(a->rbuf + m++ * BLK, a->grp[i]->data + (nb - 1) * BLK, BLK);
	}
	if ((r = ecb(a->enc[p], a->rbuf, a->rbuf, m * BLK)) != KH_OK)
		return r;
	m = 0;
	for (i = 0; i < k; i++) {
		unsigned nb = a->grp[i]->len / BLK, rl = a->grp[i]->len % BLK;
		uint8_t *res = a->grp[i]->data + nb * BLK;
		const uint8_t *mask;
		if (!rl)
			continue;
		mask = nb ? a->rbuf + m++ * BLK : a->eiv[p];
		for (unsigned j = 0; j < rl; j++)
			res[j] ^= mask[j];
	}
	return KH_OK;
}

static kh_err encrypt_group(struct kh__scr_aes *a, unsigned p, size_t k)
{
	size_t i, m;
	kh_err r;

	for (unsigned j = 0; j < MAX_BLOCKS; j++) {
		/* Column j: block j of every packet that has one, chained on its block j-1. */
		for (i = 0, m = 0; i < k; i++) {
			uint8_t *b = a->grp[i]->data + j * BLK;
			if (a->grp[i]->len / BLK <= j)
				continue;
			xor16(a->gbuf + m++ * BLK, b, j ? b - BLK : a->iv);
		}
		if (m == 0)
			break;
		if ((r = ecb(a->enc[p], a->gbuf, a->gbuf, m * BLK)) != KH_OK)
			return r;
		for (i = 0, m = 0; i < k; i++) {
			if (a->grp[i]->len / BLK <= j)
				continue;
			memcpy(a->grp[i]->data + j * BLK, a->gbuf + m++ * BLK, BLK);
		}
	}
	return a->idsa ? idsa_residue(a, p, k) : KH_OK;
}

static kh_err decrypt_group(struct kh__scr_aes *a, unsigned p, size_t k)
{
	size_t i, off = 0, m = 0;
	int ol = 0;
	kh_err r;

	/* The residue first, while the last whole block is still ciphertext. */
	if (a->idsa && (r = idsa_residue(a, p, k)) != KH_OK)
		return r;
	/*
	 * Gather the whole blocks of the group into one buffer and CBC-decrypt it in one call
	 * from the IV. Each packet's first block then came out chained on the previous packet's
	 * last ciphertext block instead of the IV: keep fix = that block XOR IV to correct it.
	 */
	for (i = 0; i < k; i++) {
		size_t nb = a->grp[i]->len / BLK;
		if (!nb)
			continue;
		if (off)
			xor16(a->rbuf + m * BLK, a->gbuf + off - BLK, a->iv);
		else
			memset(a->rbuf, 0, BLK);
		m++;
		memcpy(a->gbuf + off, a->grp[i]->data, nb * BLK);
		off += nb * BLK;
	}
	if (off == 0)
		return KH_OK;
	if (!EVP_CipherInit_ex2(a->dec[p], NULL, NULL, a->iv, 0, NULL) ||
	    !EVP_CipherUpdate(a->dec[p], a->gbuf, &ol, a->gbuf, (int)off) || (size_t)ol != off)
		return KH_ERR_CRYPTO;
	off = 0;
	m = 0;
	for (i = 0; i < k; i++) {
		size_t nb = a->grp[i]->len / BLK;
		if (!nb)
			continue;
		memcpy(a->grp[i]->data, a->gbuf + off, nb * BLK);
		xor16(a->grp[i]->data, a->grp[i]->data, a->rbuf + m++ * BLK);
		off += nb * BLK;
	}
	return KH_OK;
}

kh_err kh__scr_aes_run(struct kh__scr_aes *a, int encrypt, const struct kh__scr_item *it,
		       size_t n)
{
	kh_err r;

	for (unsigned p = 0; p < 2; p++) {
		size_t k = 0;
		for (size_t i = 0; i <= n; i++) {
			if (i < n && (it[i].parity & 1u) == p)
				a->grp[k++] = &it[i];
			if (k && (k == GROUP || i == n)) {
				r = encrypt ? encrypt_group(a, p, k) : decrypt_group(a, p, k);
				if (r != KH_OK)
					return r;
				k = 0;
			}
		}
	}
	return KH_OK;
}
