/*
 * fuzz_secmod: the escrow signing process's frames (include/keyhole/secmod.h). The input is one
 * frame, read three ways:
 * - as a request by kh_secmod_req_parse: refused only with a framing code (TRUNCATED, TRAILING,
 *   VERSION, TOO_LARGE, APDU_INS, FORMAT) and the output untouched; accepted, it is rebuilt by
 *   kh_secmod_req_build byte for byte (one encoding per request).
 * - by the process's handler, kh_secmod_handle, over a key directory holding one fixed public
 *   test key (FZ_ID): the answer is a well-formed response frame; a refusal carries the parser's
 *   code (or NOTFOUND, BLIND_RANGE, FORMAT past it) and no body; PUBKEY answers the key's DER;
 *   a DECRYPT it accepts had 2 <= c' <= n-2 and answers z with z^e = c' mod n. KEYGEN frames are
 *   only parsed (a key costs a tenth of a second and a file).
 * - as a response by kh_secmod_resp_parse: accepted only for status 0x9000 with the body inside
 *   the frame and nothing after it.
 * Seeds (hand-made, fuzz/corpus/fuzz_secmod): each op well formed, c' at 0, 1, 2, n-2, n-1, n,
 * a c' of another length, another version, an unknown op, a length past the bound, a cut
 * frame, trailing bytes, and responses (success, refusal, refusal with a body).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fuzz_common.h"
#include "keyhole/file.h"
#include "keyhole/secmod.h"

/* a public test key: PKCS#8, 2048 bits, e = 65537; never a real escrow's */
static const char fz_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDV0AHVUX5uD6aV\n"
	"Qbo2cb+yv4BUjZ5zictBIW4bNc+dcqjpfCtcQ6yTAvnBmsHjTidzoMVOAG9UwCtE\n"
	"9q78ud23M64Yrk93Rz0GIwi6mpsOeOjD8abipULTePpAsuR6pz8DWMf0N6bD8hua\n"
	"uuzc6Svi4fxwnvcoHwrNyiCP69jBxPGISSxnfPOjpnonweO07LYZbrp//Jd4NONS\n"
	"cLyhDbiPWIM7iD5X6mgyt4JKJl+tgtvTmxg0sgmidBdqLfWhBDzOo/Mdf42qa3/2\n"
	"SMMwe8HGTQvzcCgjHHsY+xzzLQuFVyAvw3YaSNCcwXEhwckJIcI1wBWIWcDCzesi\n"
	"nL989ECzAgMBAAECggEAB11yargzbDQiz1pjwTNa4JvjHkaAkkdJVpWBtvM8Exbb\n"
	"hatuzO9R1wCPvOEJU7yh9EQx97VhIGC8PNRog7EdV42yrgv3FctA6WC0kMT5mV6F\n"
	"2hYNYxpBOoqcyDTBVQ5Ex+c7gAiYuIAy/jn5JcTsa5TQPsrjBaFIHH2dcIe1wDrp\n"
	"3r8MqBVWOHThqPVQSPq1J+YJ305jfRELErHdK0E6ZJEI58uWPkQEM0gTv2xZjMKO\n"
	"Qkium07r5PDOb3hGrLjKUgrUFCDrBg9/FbfUqiJm/NFjfRWcu2ZwULR9ocZs3z9Y\n"
	"p+rkBjBqbyMlPhiOd72+7nqS8xzFSY8FqnBqVWgQOQKBgQDqswFB0EmwqmoR3N5c\n"
	"Qil0Vb6WLUVwFuZF99TIEpeO6n05Spz+sqZiV85z/ah8Viom60Elm/BhESjYlRN0\n"
	"pYRgz4dqIKBfnIFSH6QYx31BMOSi6QpfbzPQoIkiGMMTbyb0OqS2ecRKwXpLdmf/\n"
	"rBVcW9JzRYySDvEUCvM8EdmA2wKBgQDpN7iXDn9gBwCh6vSf91PwjuDfgc2v3KAw\n"
	"oh1qph36RCKBz0v5aT9vHO8tFjgJblrNa4/Eq79smD7JF5apA0V0JC0ibCyO1+8m\n"
	"9BR9vA1JgMh7W5SVDDpYlF0TfMvCfFYr7XXYn2P2keY0Nr3pTvZvdvx/UAtWPeRM\n"
	"lDj9Zmj7CQKBgQDTjPCIIzgZDzK20TB5VoXJP/Sfp0TcyTddQAvDH8cO4lxnhNLI\n"
	"Xb3ODTmhobX6BSzPkeRSAyKETBRWTOGRlhQhs05rIeeM5yRGIxEl6MMFPQ4JridU\n"
	"aIb6+YlCe7Fy1hD1udp4RH/jpkwWsy8A7Vr/uiCTGNChYuh42Xnv3mMAWwKBgEuR\n"
	"1qp79CI1oqrU63d6OSTV52AFO5UktHON1GJeeZBCy7usZD3pMLjcc1P0wyurKpkt\n"
	"pWRhEqIpow6eKh+SA8tifY2N59JRfhjtNkaXzOZoaI4wWrEBSVaynIZYBd57U6Dg\n"
	"TTNoUofvNtzscBVNlOUBdUf7s/C6FWQLE3xo1tOhAoGAfAp3vg8sZicTP1Dh4nwc\n"
	"pKnnVsw9BNh16WMkCZJS9sB2RU070kNM9XLaBxjbUcscJ0KckUBCXMurDVu4ew7z\n"
	"n0+irBFqQ7mmqHZUII/ZxG7rxQpVkzWP19UL1qGvkSU7FiOPEGFQGpJ3B5EUDeso\n"
	"DsLNl0hAKTEKOjwGjqWE2rI=\n"
	"-----END PRIVATE KEY-----\n";
/* its id: 0x5e followed by fifteen zeros */
#define FZ_ID_HEX "5e000000000000000000000000000000"

static struct kh_secmod *sm;
static BIGNUM *fz_n, *fz_e;
static uint8_t fz_pub[1024];
static size_t fz_publen;
static BN_CTX *bnctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/kh-fuzz-secmod-XXXXXX", path[128];
	uint8_t id[KH_SECMOD_ID_LEN] = {0x5e};
	uint8_t resp[KH_SECMOD_FRAME_MAX], req[KH_SECMOD_HDR_LEN + KH_SECMOD_ID_LEN] = {KH_SECMOD_PUBKEY, 1, 0, 16};
	const uint8_t *body, *q;
	EVP_PKEY *pk;
	size_t rn;

	(void)argc;
	(void)argv;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/%s.key", dir, FZ_ID_HEX);
	CHECK(kh_file_write_new(path, (const uint8_t *)fz_key_pem, sizeof fz_key_pem - 1, 0600) == KH_OK);
	CHECK(kh_secmod_open(dir, &sm, NULL, 0) == KH_OK);
	/* every key is in memory now: the files can go */
	CHECK(unlink(path) == 0 && rmdir(dir) == 0);
	memcpy(req + KH_SECMOD_HDR_LEN, id, sizeof id);
	rn = kh_secmod_handle(sm, req, sizeof req, resp, sizeof resp);
	CHECK(kh_secmod_resp_parse(resp, rn, &body, &fz_publen) == KH_OK);
	memcpy(fz_pub, body, fz_publen);
	q = fz_pub;
	CHECK((pk = d2i_PUBKEY(NULL, &q, (long)fz_publen)) != NULL);
	CHECK(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &fz_n) == 1);
	CHECK(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &fz_e) == 1);
	EVP_PKEY_free(pk);
	CHECK((bnctx = BN_CTX_new()) != NULL);
	return 0;
}

static int framing_code(kh_err r)
{
	return r == KH_ERR_TRUNCATED || r == KH_ERR_TRAILING || r == KH_ERR_VERSION || r == KH_ERR_TOO_LARGE ||
	       r == KH_ERR_APDU_INS || r == KH_ERR_FORMAT;
}

/* z^e mod n == c, and c in [2, n-2] */
static int opens(const uint8_t *c, const uint8_t *z, size_t len)
{
	BIGNUM *bc = BN_bin2bn(c, (int)len, NULL), *bz = BN_bin2bn(z, (int)len, NULL), *v = BN_new();
	BIGNUM *nm2 = BN_dup(fz_n);
	int ok;

	CHECK(bc && bz && v && nm2 && BN_sub_word(nm2, 2));
	CHECK(BN_mod_exp(v, bz, fz_e, fz_n, bnctx));
	ok = BN_cmp(v, bc) == 0 && BN_cmp(bc, BN_value_one()) > 0 && BN_cmp(bc, nm2) <= 0;
	BN_free(bc);
	BN_free(bz);
	BN_free(v);
	BN_free(nm2);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kh_secmod_req q, pat;
	uint8_t resp[KH_SECMOD_FRAME_MAX], again[KH_SECMOD_FRAME_MAX];
	const uint8_t *body;
	size_t rn, blen, an;
	kh_err pr, r;

	/* 1. the request parser */
	memset(&q, 0xA5, sizeof q);
	pat = q;
	pr = kh_secmod_req_parse(data, size, &q);
	if (pr != KH_OK) {
		CHECK(framing_code(pr));
		CHECK(memcmp(&q, &pat, sizeof q) == 0);
	} else {
		CHECK(kh_secmod_req_build(&q, again, sizeof again, &an) == KH_OK);
		CHECK(an == size && memcmp(again, data, size) == 0);
		CHECK(kh_secmod_req_build(&q, again, size - 1, &an) == KH_ERR_BUF);
	}

	/* 2. the handler */
	if (!(pr == KH_OK && q.op == KH_SECMOD_KEYGEN)) {
		rn = kh_secmod_handle(sm, data, size, resp, sizeof resp);
		CHECK(rn >= KH_SECMOD_HDR_LEN && rn <= sizeof resp);
		r = kh_secmod_resp_parse(resp, rn, &body, &blen);
		if (pr != KH_OK) {
			CHECK(r == pr);
		} else if (q.op == KH_SECMOD_PUBKEY) {
			CHECK(r == KH_OK || r == KH_ERR_NOTFOUND);
			if (r == KH_OK)
				CHECK(blen == fz_publen && memcmp(body, fz_pub, blen) == 0);
		} else {
			CHECK(r == KH_OK || r == KH_ERR_NOTFOUND || r == KH_ERR_BLIND_RANGE || r == KH_ERR_FORMAT);
			if (r == KH_OK)
				CHECK(blen == q.clen && opens(q.c, body, blen));
			if (r == KH_ERR_FORMAT)
				CHECK(q.clen != (size_t)BN_num_bytes(fz_n));
		}
	}

	/* 3. the response parser */
	r = kh_secmod_resp_parse(data, size, &body, &blen);
	if (r == KH_OK)
		CHECK(size >= 4 && data[0] == 0x90 && data[1] == 0 && body == data + 4 && blen == size - 4);
	return 0;
}
