/*
 * Binary fields of the JSON API: unpadded base64url, RFC 4648 §5, as JOSE
 * writes it (RFC 7515 §2). Decoding is strict so that every byte string has exactly one
 * accepted spelling: no padding, no whitespace, no '+' or '/', no stray bits in the last
 * character. Plus the error body every service answers with.
 */
#include <stdlib.h>
#include <string.h>

#include "keyhole/http.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t kh_b64url_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

kh_err kh_b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t i, o = 0;

	if (!out || (n && !in) || n > (SIZE_MAX - 1) / 4 * 3 - 3)
		return KH_ERR_INVAL;
	if (cap < kh_b64url_len(n) + 1)
		return KH_ERR_BUF;
	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
		out[o++] = alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
	return KH_OK;
}

static int value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

kh_err kh_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t i, n, o = 0, rem = inlen % 4;
	uint32_t acc = 0;
	int bits = 0;

	if ((inlen && !in) || !outlen || (cap && !out))
		return KH_ERR_INVAL;
	if (rem == 1)
		return KH_ERR_INVAL;
	n = inlen / 4 * 3 + (rem ? rem - 1 : 0);
	/* Check every character first: out is written only on success. */
	for (i = 0; i < inlen; i++)
		if (value((unsigned char)in[i]) < 0)
			return KH_ERR_INVAL;
	/* The unused low bits of a final 2- or 3-character group must be zero. */
	if (rem == 2 && (value((unsigned char)in[inlen - 1]) & 0x0F))
		return KH_ERR_INVAL;
	if (rem == 3 && (value((unsigned char)in[inlen - 1]) & 0x03))
		return KH_ERR_INVAL;
	if (n > cap)
		return KH_ERR_BUF;
	for (i = 0; i < inlen; i++) {
		acc = acc << 6 | (uint32_t)value((unsigned char)in[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*outlen = o;
	return KH_OK;
}

kh_err kh_json_get_b64(const json_t *obj, const char *key, uint8_t *out, size_t cap, size_t *outlen,
		       int exact)
{
	const json_t *v;
	size_t n;
	kh_err r;

	if (!json_is_object(obj) || !key || !outlen)
		return KH_ERR_INVAL;
	v = json_object_get(obj, key);
	if (!v)
		return KH_ERR_NOTFOUND;
	if (!json_is_string(v))
		return KH_ERR_INVAL;
	r = kh_b64url_decode(json_string_value(v), json_string_length(v), out, cap, &n);
	if (r != KH_OK)
		return r;
	if (exact && n != cap)
		return KH_ERR_INVAL;
	*outlen = n;
	return KH_OK;
}

kh_err kh_json_set_b64(json_t *obj, const char *key, const uint8_t *in, size_t n)
{
	size_t len = kh_b64url_len(n) + 1;
	char *s;
	kh_err r;

	if (!json_is_object(obj) || !key)
		return KH_ERR_INVAL;
	s = malloc(len);
	if (!s)
		return KH_ERR_NOMEM;
	r = kh_b64url_encode(in, n, s, len);
	if (r == KH_OK && json_object_set_new(obj, key, json_string(s)) != 0)
		r = KH_ERR_NOMEM;
	free(s);
	return r;
}

json_t *kh_json_error(kh_err e, const char *msg)
{
	return json_pack("{s:{s:s,s:s}}", "error", "code", kh_err_json(e), "message",
			 msg ? msg : kh_strerror(e));
}
