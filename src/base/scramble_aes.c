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
 * Speed: one EVP call per packet reaches ~0.15x of bulk AES, so both directions
 * work on GROUP packets of one parity per EVP call, with AES-128-ECB as the raw block function
 * under CBC (ECB is never a mode on data here). Decryption gathers the whole ciphertext blocks
 * of the group into one buffer, decrypts them with one ECB call (every CBC block decryption is
 * independent: AES-NI pipelines them) and does the chaining XOR while writing the blocks back
 * (decrypt_group()). Encryption, which CBC makes serial within a packet, goes column by column:
 * block j of every packet in the group is XORed with its packet's block j-1 (or the IV) and
 * the column encrypted in one call, so independent packets interleave. The IDSA residue masks
 * of a group come from one ECB call too.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "keyhole/crypto.h"
#include "keyhole/scramble.h"
#include "base/scramble_int.h"

#define BLK 16
#define MAX_BLOCKS (184 / BLK) /* whole blocks of the longest payload: 11 */
/*
 * Packets per EVP call. Descrambling reads a group's packets, writes gbuf, decrypts it and
 * writes the packets again, so 64 packets (12 KiB) and their blocks (11 KiB) fit a 32 KiB L1
 * together where 128 (24 + 22 KiB) do not. Best-of-1000 descrambling times: 32 and 64 alike,
 * 128 a few per cent slower (2026-11-21, a noisy machine: a small effect).
 */
#define GROUP 64

static const uint8_t cissa_iv[BLK] = {'D', 'V', 'B', 'T', 'M', 'C', 'P', 'T',
				       'A', 'E', 'S', 'C', 'I', 'S', 'S', 'A'};
static const uint8_t zero_iv[BLK];

struct kh__scr_aes {
	int idsa;
	const uint8_t *iv;
	EVP_CIPHER_CTX *enc[2]; /* AES-128-ECB, no padding, keyed per parity */
	EVP_CIPHER_CTX *dec[2]; /* AES-128-ECB decryption, no padding, keyed per parity */
	uint8_t eiv[2][BLK];             /* IDSA: AES_K(IV), the short-payload mask */
	const struct kh__scr_item *grp[2][GROUP]; /* a group per parity */
	uint8_t gbuf[GROUP * MAX_BLOCKS * BLK];
	uint8_t rbuf[GROUP * BLK];
};

/* ---- fetched once per process ---- */

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *c_ecb;

static void fetch(void)
{
	c_ecb = EVP_CIPHER_fetch(NULL, "AES-128-ECB", NULL);
}

/*
 * One 16-byte block as two 64-bit words. memcpy keeps the packets free of alignment rules (a
 * payload starts at any offset) and compiles to one unaligned SSE2 load or store on x86-64, so
 * the XOR loops below cost a few instructions per block and no library call.
 */
struct blk {
	uint64_t w[2];
};

static inline struct blk ld(const uint8_t *p)
{
	struct blk b;

	memcpy(&b, p, BLK);
	return b;
}

static inline void st(uint8_t *p, struct blk b)
{
	memcpy(p, &b, BLK);
}

static inline struct blk bxor(struct blk a, struct blk b)
{
	a.w[0] ^= b.w[0];
	a.w[1] ^= b.w[1];
	return a;
}

/* p[0..n) ^= mask[0..n), n < 16: the IDSA residue. */
static void xor_short(uint8_t *p, const uint8_t *mask, unsigned n)
{
	unsigned j = 0;

	if (n >= 8) {
		uint64_t x, y;
		memcpy(&x, p, 8);
		memcpy(&y, mask, 8);
		x ^= y;
		memcpy(p, &x, 8);
		j = 8;
	}
	for (; j < n; j++)
		p[j] ^= mask[j];
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
	if (!c_ecb)
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
		    !EVP_CipherInit_ex2(a->dec[p], c_ecb, NULL, NULL, 0, NULL))
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
 * IDSA residues of a scrambled group: each residue is XORed with AES(C_last), its packet's last
 * whole ciphertext block, or with AES(IV) when the payload has no whole block. The C_last blocks
 * of the group are encrypted together in one ECB call.
 */
static kh_err idsa_residue_enc(struct kh__scr_aes *a, unsigned p, size_t k)
{
	const struct kh__scr_item *const *g = a->grp[p];
	size_t i, m = 0;
	kh_err r;

	for (i = 0; i < k; i++) {
		unsigned nb = g[i]->len / BLK;
		if (g[i]->len % BLK && nb)
			st(a->rbuf + m++ * BLK, ld(g[i]->data + (nb - 1) * BLK));
	}
	if ((r = ecb(a->enc[p], a->rbuf, a->rbuf, m * BLK)) != KH_OK)
		return r;
	m = 0;
	for (i = 0; i < k; i++) {
		unsigned nb = g[i]->len / BLK, rl = g[i]->len % BLK;
		if (rl)
			xor_short(g[i]->data + nb * BLK, nb ? a->rbuf + m++ * BLK : a->eiv[p], rl);
	}
	return KH_OK;
}

static kh_err encrypt_group(struct kh__scr_aes *a, unsigned p, size_t k)
{
	const struct kh__scr_item *const *g = a->grp[p];
	size_t i, m;
	kh_err r;

	for (unsigned j = 0; j < MAX_BLOCKS; j++) {
		/* Column j: block j of every packet that has one, chained on its block j-1. */
		for (i = 0, m = 0; i < k; i++) {
			const uint8_t *b = g[i]->data + j * BLK;
			if (g[i]->len / BLK <= j)
				continue;
			st(a->gbuf + m++ * BLK, bxor(ld(b), ld(j ? b - BLK : a->iv)));
		}
		if (m == 0)
			break;
		if ((r = ecb(a->enc[p], a->gbuf, a->gbuf, m * BLK)) != KH_OK)
			return r;
		for (i = 0, m = 0; i < k; i++) {
			if (g[i]->len / BLK <= j)
				continue;
			st(g[i]->data + j * BLK, ld(a->gbuf + m++ * BLK));
		}
	}
	return a->idsa ? idsa_residue_enc(a, p, k) : KH_OK;
}

/* d[j] = dec[j] XOR C_j-1 with C_-1 = iv: C_j is read from d just before it is overwritten. */
static inline void unchain(uint8_t *d, const uint8_t *dec, unsigned nb, const uint8_t *iv)
{
	struct blk chain = ld(iv), c;

	for (unsigned j = 0; j < nb; j++) {
		c = ld(d + j * BLK);
		st(d + j * BLK, bxor(ld(dec + j * BLK), chain));
		chain = c;
	}
}

/*
 * CBC decryption is P_j = AES^-1(C_j) XOR C_j-1 with C_-1 = IV, and the AES^-1 are independent
 * of one another. So the whole ciphertext blocks of the group are gathered into gbuf and
 * decrypted in place with ONE ECB call (AES-NI pipelines ECB as it does bulk CBC decryption),
 * and the chaining XOR is done on the way back into the packets, with C_j-1 read from the
 * packet itself just before it is overwritten. That leaves two passes over the payload bytes
 * (the gather copy and the XOR-scatter) and no EVP re-initialisation for the IV; the earlier
 * CBC call over gbuf needed a third pass (copy back, then a per-packet IV fix-up) and an IV
 * reset per group.
 * IDSA: the residue mask AES(C_last) needs C_last as ciphertext, so C_last is copied out during
 * the gather, the group's masks come from one ECB-encrypt call, and the residues are XORed
 * during the scatter. No path makes an EVP call per packet.
 */
static kh_err decrypt_group(struct kh__scr_aes *a, unsigned p, size_t k)
{
	const struct kh__scr_item *const *g = a->grp[p];
	size_t i, m = 0, nr = 0;
	kh_err r;

	for (i = 0; i < k; i++) {
		const uint8_t *d = g[i]->data;
		unsigned nb = g[i]->len / BLK;
		memcpy(a->gbuf + m * BLK, d, nb * BLK);
		m += nb;
		if (a->idsa && nb && g[i]->len % BLK)
			st(a->rbuf + nr++ * BLK, ld(d + (nb - 1) * BLK));
	}
	if ((r = ecb(a->enc[p], a->rbuf, a->rbuf, nr * BLK)) != KH_OK ||
	    (r = ecb(a->dec[p], a->gbuf, a->gbuf, m * BLK)) != KH_OK)
		return r;
	m = nr = 0;
	for (i = 0; i < k; i++) {
		uint8_t *d = g[i]->data;
		unsigned nb = g[i]->len / BLK, rl = g[i]->len % BLK;
		unchain(d, a->gbuf + m * BLK, nb, a->iv);
		m += nb;
		if (a->idsa && rl)
			xor_short(d + nb * BLK, nb ? a->rbuf + nr++ * BLK : a->eiv[p], rl);
	}
	return KH_OK;
}

static kh_err run_group(struct kh__scr_aes *a, int encrypt, unsigned p, size_t k)
{
	return encrypt ? encrypt_group(a, p, k) : decrypt_group(a, p, k);
}

kh_err kh__scr_aes_run(struct kh__scr_aes *a, int encrypt, const struct kh__scr_item *it,
		       size_t n)
{
	size_t k[2] = {0, 0};
	kh_err r;

	/*
	 * One pass sorts the items into a group per parity, running a group when it is full, then
	 * the two partial ones. Packets are independent, so the order they run in does not matter.
	 */
	for (size_t i = 0; i < n; i++) {
		unsigned p = it[i].parity & 1u;
		a->grp[p][k[p]++] = &it[i];
		if (k[p] == GROUP) {
			if ((r = run_group(a, encrypt, p, k[p])) != KH_OK)
				return r;
			k[p] = 0;
		}
	}
	for (unsigned p = 0; p < 2; p++)
		if (k[p] && (r = run_group(a, encrypt, p, k[p])) != KH_OK)
			return r;
	return KH_OK;
}
