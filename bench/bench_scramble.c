/*
 * bench_scramble: scrambler throughput (include/keyhole/scramble.h) next to the raw primitive
 * on the same bytes, in the same run (report ratios, never a bare time).
 *
 * The stream: N (-n, default 20000) 188-byte packets of random payload, one in 20 with an
 * 8-byte adaptation field and one in 500 with an adaptation field only, as a video PID looks.
 * Per algorithm:
 *   <alg>_scramble / <alg>_descramble   kh_scr_scramble / kh_scr_descramble over the whole
 *                                       stream in one call (even key; descramble restores it)
 *   csa2_raw_bs_encrypt / _decrypt      dvbcsa_bs_encrypt/decrypt on full batches of the same
 *                                       payloads (the last batch partial, as in ours)
 *   aes_raw_cbc_encrypt / _decrypt      AES-128-CBC through EVP, one call over a buffer as long
 *                                       as the stream's payload bytes: the single-stream rate
 * Throughput is in MB/s of transport stream (N * 188 bytes per op) for every line, so a ratio
 * is the raw primitive's time over ours for the same packets. Aims (not asserted):
 * CSA2 >= 0.9x raw full batches; AES descramble >= 0.5x bulk CBC decryption; AES scramble
 * >= 1x single-stream CBC encryption.
 *
 * Every benchmark runs R rounds (-r, default 7) of ~T seconds (-t, default 0.25), interleaved
 * across benchmarks; a ratio is the median over rounds of the ratio within each round.
 * Output: bench=<name> unit=MB/s median= min= max= rounds=, ratio=<name> value= min= max=
 * rounds= aim=; '#' lines are comments. Exit status is non-zero only when an operation fails.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dvbcsa/dvbcsa.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keyhole/scramble.h"

#include "util.h"

#define PL KH_SCR_PACKET_LEN

enum {
	B_CSA_SCR, B_CSA_DESC, B_CSA_RAW_ENC, B_CSA_RAW_DEC,
	B_CISSA_SCR, B_CISSA_DESC, B_IDSA_SCR, B_IDSA_DESC,
	B_AES_RAW_ENC, B_AES_RAW_DEC,
	B_COUNT
};
static const char *bench_name[B_COUNT] = {
	"csa2_scramble", "csa2_descramble", "csa2_raw_bs_encrypt", "csa2_raw_bs_decrypt",
	"cissa_scramble", "cissa_descramble", "idsa_scramble", "idsa_descramble",
	"aes_raw_cbc_encrypt", "aes_raw_cbc_decrypt",
};
static double rate[B_COUNT][BENCH_MAX_ROUNDS];

static size_t n_pkts = 20000;
static uint8_t *ts;       /* the stream, scrambled and descrambled in place */
static uint8_t *raw;      /* a copy for the raw primitives */
static uint8_t *bulk;     /* payload bytes, contiguous, for bulk CBC */
static size_t bulk_len;
static struct dvbcsa_bs_batch_s *batches; /* all full-or-last batches, NULL-separated */
static size_t n_batches, bs;
static struct dvbcsa_bs_key_s *bskey;
static EVP_CIPHER_CTX *cbc_enc, *cbc_dec;
static struct kh_scr *scr[3];

static void make_stream(void)
{
	if (RAND_bytes(ts, (int)(n_pkts * PL)) != 1)
		exit(2);
	bench_ts_headers(ts, n_pkts);
	memcpy(raw, ts, n_pkts * PL);
}

static size_t payload(uint8_t *p, uint8_t **d)
{
	unsigned afc = (p[3] >> 4) & 3u, off;
	if (afc == 2)
		return 0;
	off = afc == 1 ? 4 : 5u + p[4];
	*d = p + off;
	return PL - off;
}

/* The batches the raw CSA calls use: the same payloads (>= 8 bytes), full batches. */
static void make_batches(void)
{
	size_t k = 0, fill = 0;
	batches = calloc(n_pkts + n_pkts / bs + 2, sizeof *batches);
	if (!batches)
		exit(2);
	bulk_len = 0;
	for (size_t i = 0; i < n_pkts; i++) {
		uint8_t *d;
		size_t len = payload(raw + i * PL, &d);
		bulk_len += len;
		if (len < 8)
			continue;
		batches[k].data = d;
		batches[k].len = (unsigned)len;
		k++;
		if (++fill == bs) {
			batches[k++].data = NULL;
			fill = 0;
			n_batches++;
		}
	}
	if (fill) {
		batches[k].data = NULL;
		n_batches++;
	}
	bulk_len -= bulk_len % 16;
	if (!(bulk = malloc(bulk_len)) || RAND_bytes(bulk, (int)bulk_len) != 1)
		exit(2);
}

static void raw_csa(int enc)
{
	struct dvbcsa_bs_batch_s *b = batches;
	for (size_t i = 0; i < n_batches; i++) {
		if (enc)
			dvbcsa_bs_encrypt(bskey, b, 184);
		else
			dvbcsa_bs_decrypt(bskey, b, 184);
		while (b->data)
			b++;
		b++;
	}
}

static void raw_cbc(int enc)
{
	static const uint8_t iv[16];
	EVP_CIPHER_CTX *c = enc ? cbc_enc : cbc_dec;
	int ol;
	if (!EVP_CipherInit_ex2(c, NULL, NULL, iv, enc, NULL) ||
	    !EVP_CipherUpdate(c, bulk, &ol, bulk, (int)bulk_len) || (size_t)ol != bulk_len) {
		fprintf(stderr, "bench_scramble: EVP failed\n");
		exit(1);
	}
}

static void must(kh_err r, const char *what)
{
	if (r != KH_OK) {
		fprintf(stderr, "bench_scramble: %s: %s\n", what, kh_strerror(r));
		exit(1);
	}
}

/* One round of an algorithm's scramble/descramble pair: alternate them for ~secs. */
static void round_ours(int a, int bs_scr, int round, double secs)
{
	double t_s = 0, t_d = 0, t0, end = bench_now_s() + secs;
	long ops = 0;
	do {
		t0 = bench_now_s();
		must(kh_scr_scramble(scr[a], ts, n_pkts, KH_SCR_EVEN), "scramble");
		t_s += bench_now_s() - t0;
		t0 = bench_now_s();
		must(kh_scr_descramble(scr[a], ts, n_pkts, NULL), "descramble");
		t_d += bench_now_s() - t0;
		ops++;
	} while (bench_now_s() < end);
	rate[bs_scr][round] = (double)ops * (double)(n_pkts * PL) / t_s / 1e6;
	rate[bs_scr + 1][round] = (double)ops * (double)(n_pkts * PL) / t_d / 1e6;
}

static void round_raw(void (*fn)(int), int b_enc, int round, double secs)
{
	double t_e = 0, t_d = 0, t0, end = bench_now_s() + secs;
	long ops = 0;
	do {
		t0 = bench_now_s();
		fn(1);
		t_e += bench_now_s() - t0;
		t0 = bench_now_s();
		fn(0);
		t_d += bench_now_s() - t0;
		ops++;
	} while (bench_now_s() < end);
	rate[b_enc][round] = (double)ops * (double)(n_pkts * PL) / t_e / 1e6;
	rate[b_enc + 1][round] = (double)ops * (double)(n_pkts * PL) / t_d / 1e6;
}

static void print_ratio(const char *name, int num, int den, int rounds, const char *aim)
{
	double v[BENCH_MAX_ROUNDS];
	struct bench_stats s;
	for (int r = 0; r < rounds; r++)
		v[r] = rate[num][r] / rate[den][r];
	s = bench_stats_of(v, rounds);
	printf("ratio=%s value=%.3f min=%.3f max=%.3f rounds=%d aim=%s\n", name, s.med, s.min, s.max,
	       rounds, aim);
}

int main(int argc, char **argv)
{
	int rounds = 7, o;
	double secs = 0.25;
	uint8_t k[16];
	static const enum kh_scr_alg algs[3] = {KH_SCR_CSA2, KH_SCR_CISSA, KH_SCR_IDSA};
	EVP_CIPHER *cbc;

	while ((o = getopt(argc, argv, "n:r:t:")) != -1) {
		if (o == 'n')
			n_pkts = strtoul(optarg, NULL, 10);
		else if (o == 'r')
			rounds = atoi(optarg);
		else if (o == 't')
			secs = atof(optarg);
		else {
			fprintf(stderr, "usage: bench_scramble [-n packets] [-r rounds] [-t secs]\n");
			return 2;
		}
	}
	if (rounds < 1 || rounds > BENCH_MAX_ROUNDS || n_pkts < 1 || n_pkts > 10000000)
		return 2;
	ts = malloc(n_pkts * PL);
	raw = malloc(n_pkts * PL);
	if (!ts || !raw)
		return 2;
	bs = dvbcsa_bs_batch_size();
	make_stream();
	make_batches();

	if (RAND_bytes(k, sizeof k) != 1)
		return 2;
	for (int a = 0; a < 3; a++) {
		must(kh_scr_new(algs[a], 0, &scr[a]), "new");
		must(kh_scr_set_key(scr[a], KH_SCR_EVEN, k, kh_scr_keylen(algs[a])), "set_key");
	}
	bskey = dvbcsa_bs_key_alloc();
	dvbcsa_bs_key_set(k, bskey);
	cbc = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
	cbc_enc = EVP_CIPHER_CTX_new();
	cbc_dec = EVP_CIPHER_CTX_new();
	if (!bskey || !cbc || !cbc_enc || !cbc_dec ||
	    !EVP_CipherInit_ex2(cbc_enc, cbc, k, NULL, 1, NULL) ||
	    !EVP_CipherInit_ex2(cbc_dec, cbc, k, NULL, 0, NULL) ||
	    !EVP_CIPHER_CTX_set_padding(cbc_enc, 0) || !EVP_CIPHER_CTX_set_padding(cbc_dec, 0))
		return 2;

	printf("# bench_scramble: %zu packets (%.2f MB of TS), %zu payload bytes for bulk CBC, "
	       "dvbcsa batch %zu (%zu batches), %d rounds of %.2fs\n",
	       n_pkts, (double)(n_pkts * PL) / 1e6, bulk_len, bs, n_batches, rounds, secs);
	for (int r = 0; r < rounds; r++) {
		round_ours(0, B_CSA_SCR, r, secs);
		round_raw(raw_csa, B_CSA_RAW_ENC, r, secs);
		round_ours(1, B_CISSA_SCR, r, secs);
		round_ours(2, B_IDSA_SCR, r, secs);
		round_raw(raw_cbc, B_AES_RAW_ENC, r, secs);
	}
	for (int b = 0; b < B_COUNT; b++)
		bench_print(bench_name[b], "MB/s", 1, rate[b], rounds);
	print_ratio("csa2_scramble_vs_raw_bs", B_CSA_SCR, B_CSA_RAW_ENC, rounds, ">=0.9");
	print_ratio("csa2_descramble_vs_raw_bs", B_CSA_DESC, B_CSA_RAW_DEC, rounds, ">=0.9");
	print_ratio("cissa_descramble_vs_bulk_cbc_dec", B_CISSA_DESC, B_AES_RAW_DEC, rounds, ">=0.5");
	print_ratio("idsa_descramble_vs_bulk_cbc_dec", B_IDSA_DESC, B_AES_RAW_DEC, rounds, ">=0.5");
	print_ratio("cissa_scramble_vs_bulk_cbc_enc", B_CISSA_SCR, B_AES_RAW_ENC, rounds, ">=1.0");
	print_ratio("idsa_scramble_vs_bulk_cbc_enc", B_IDSA_SCR, B_AES_RAW_ENC, rounds, ">=1.0");

	for (int a = 0; a < 3; a++)
		kh_scr_free(scr[a]);
	dvbcsa_bs_key_free(bskey);
	EVP_CIPHER_CTX_free(cbc_enc);
	EVP_CIPHER_CTX_free(cbc_dec);
	EVP_CIPHER_free(cbc);
	OPENSSL_cleanse(k, sizeof k);
	free(batches);
	free(bulk);
	free(ts);
	free(raw);
	return 0;
}
