/*
 * The real HTTP side of the upload session (include/keyhole/upload.h, struct kh_upload_http):
 * one JSON POST (and the GET of the card's EMMs after a gap) over the service layer's client (kh_http_client, src/net/http_client.c), which
 * holds the transport rules: TLS always verifies the center's certificate chain and name
 * (against --cacert's private CA when given), no redirects, an answer larger than
 * KH_UPLOAD_RESP_MAX cut off as a transport failure. Plain http is refused here except to the
 * loopback host unless the caller allowed it (kh_upload_url_check).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "keyhole/http.h"
#include "keyhole/upload.h"

struct kh_upload_curl {
	struct kh_http_client *client;
	int insecure_http;
	char err[CURL_ERROR_SIZE];
};

static kh_err post_json(void *ctx, const char *url, json_t *body, const char *idem_key, int *status, json_t **resp)
{
	struct kh_upload_curl *c = ctx;
	const char *headers[4] = {"Content-Type: application/json", "Accept: application/json", NULL, NULL};
	char *text = NULL, *idem = NULL;
	long code = 0;
	kh_err r;

	*resp = NULL;
	*status = 0;
	c->err[0] = 0;
	if (kh_upload_url_check(url, c->insecure_http) != KH_OK)
		return KH_ERR_INVAL;
	if (!(text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER)))
		return KH_ERR_NOMEM;
	r = KH_ERR_NOMEM;
	if (idem_key) {
		if (asprintf(&idem, "Idempotency-Key: %s", idem_key) < 0) {
			idem = NULL;
			goto out;
		}
		headers[2] = idem;
	}
	if ((r = kh_http_client_request(c->client, url, headers, text, &code, resp, c->err, sizeof c->err)) != KH_OK)
		goto out;
	*status = (int)code;
	r = KH_OK;
out:
	free(idem);
	free(text);
	return r;
}

static kh_err get_json(void *ctx, const char *url, int *status, json_t **resp)
{
	struct kh_upload_curl *c = ctx;
	static const char *const headers[] = {"Accept: application/json", NULL};
	const char *q;
	char *base;
	long code = 0;
	kh_err r;

	*resp = NULL;
	*status = 0;
	c->err[0] = 0;
	/* The rules are the base URL's: the query this client adds is checked apart from it. */
	q = strchr(url, '?');
	if (!(base = strndup(url, q ? (size_t)(q - url) : strlen(url))))
		return KH_ERR_NOMEM;
	r = kh_upload_url_check(base, c->insecure_http);
	free(base);
	if (r != KH_OK || (q && strspn(q + 1, "abcdefghijklmnopqrstuvwxyz_=&0123456789") != strlen(q + 1)))
		return KH_ERR_INVAL;
	if ((r = kh_http_client_request(c->client, url, headers, NULL, &code, resp, c->err, sizeof c->err)) != KH_OK)
		return r;
	*status = (int)code;
	return KH_OK;
}

kh_err kh_upload_curl_new(const char *cacert, int insecure_http, struct kh_upload_curl **out,
			  struct kh_upload_http *http)
{
	struct kh_upload_curl *c;
	kh_err r;

	if (!out || !http)
		return KH_ERR_INVAL;
	if (!(c = calloc(1, sizeof *c)))
		return KH_ERR_NOMEM;
	if ((r = kh_http_client_new(cacert, "keyhole/" KH_VERSION, KH_UPLOAD_RESP_MAX, &c->client)) != KH_OK) {
		free(c);
		return r;
	}
	c->insecure_http = insecure_http;
	http->post_json = post_json;
	http->get_json = get_json;
	http->ctx = c;
	*out = c;
	return KH_OK;
}

void kh_upload_curl_free(struct kh_upload_curl *c)
{
	if (!c)
		return;
	kh_http_client_free(c->client);
	free(c);
}

const char *kh_upload_curl_error(const struct kh_upload_curl *c)
{
	return c ? c->err : "";
}
