/*
 * Tables generated from KH_ERR_MAP (include/keyhole/err.h): message, name, JSON code, HTTP
 * status and status word of every error code.
 */
#include <stddef.h>

#include "keyhole/err.h"

struct errinfo {
	const char *name;
	const char *msg;
	int http;
	const char *json;
	uint16_t sw;
};

static const struct errinfo table[KH__ERR_COUNT] = {
#define XX(name, msg, http, json, sw) {#name, msg, http, json, sw},
	KH_ERR_MAP(XX)
#undef XX
};

static const struct errinfo *lookup(kh_err e)
{
	if (e >= 0 || e < -(int)KH__ERR_COUNT)
		return NULL;
	return &table[-e - 1];
}

const char *kh_strerror(kh_err e)
{
	const struct errinfo *i = lookup(e);
	if (e == KH_OK)
		return "success";
	return i ? i->msg : "unknown error";
}

const char *kh_err_name(kh_err e)
{
	const struct errinfo *i = lookup(e);
	if (e == KH_OK)
		return "OK";
	return i ? i->name : "UNKNOWN";
}

const char *kh_err_json(kh_err e)
{
	const struct errinfo *i = lookup(e);
	if (e == KH_OK)
		return "ok";
	return i ? i->json : "unknown";
}

int kh_err_http(kh_err e)
{
	const struct errinfo *i = lookup(e);
	if (e == KH_OK)
		return 200;
	return i ? i->http : 500;
}

uint16_t kh_err_to_sw(kh_err e)
{
	const struct errinfo *i = lookup(e);
	if (e == KH_OK)
		return KH_SW_OK;
	return i ? i->sw : 0x6F00;
}

kh_err kh_err_from_sw(uint16_t sw)
{
	if (sw == KH_SW_OK)
		return KH_OK;
	for (size_t k = 0; k < KH__ERR_COUNT; k++)
		if (table[k].sw == sw)
			return -(kh_err)k - 1;
	return KH_ERR_PEER_ERROR;
}
