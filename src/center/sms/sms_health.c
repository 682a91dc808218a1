/*
 * The center's health for whatever watches it (a load balancer, systemd, an orchestrator):
 * GET /healthz and GET /readyz, outside /v1, open (no token) and never counted against the open
 * endpoints' budget, like /metrics (docs/internals/sms.md "Health").
 *
 *   /healthz  200 {"status":"ok"} while the process serves: it touches nothing.
 *   /readyz   200 {"status":"ready"} when the database takes a write now, else 503
 *             {"status":"not_ready","reason":"..."}: the probe (kh_store_probe) checks that the
 *             file is still the one opened and still private and writable, and opens a write
 *             transaction, writes, and rolls it back, waiting for the write lock at most
 *             KH__SMS_READY_WAIT_MS, so the answer comes within about that.
 *
 * The reason is one of a few fixed sentences, never a path or the store's detail: these
 * endpoints answer anyone who reaches the port. The detail is in the log (event=store.error).
 */
#include "sms_int.h"

kh_err kh__sms_healthz(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	(void)req;
	(void)arg;
	return kh_http_reply(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static const char *reason(kh_err r)
{
	switch (r) {
	case KH_ERR_DB_GONE:
		return "the database file was deleted or replaced while in use";
	case KH_ERR_DB_BUSY:
		return "the database stayed locked by another writer";
	case KH_ERR_IO:
	case KH_ERR_KEYFILE_PERM:
	case KH_ERR_NOTFOUND:
		return "the database cannot be written (its file, directory or file system is read-only or "
		       "gone, or a file is not private)";
	default:
		return "the database failed";
	}
}

kh_err kh__sms_readyz(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	struct kh_store *s;
	kh_err r;

	(void)req;
	if ((r = kh__sms_db(arg, &s)) == KH_OK)
		r = kh_store_probe(s, KH__SMS_READY_WAIT_MS);
	if (r == KH_OK)
		return kh_http_reply(resp, 200, json_pack("{s:s}", "status", "ready"));
	if (r == KH_ERR_NOMEM)
		return r;
	return kh_http_reply(resp, 503, json_pack("{s:s,s:s}", "status", "not_ready", "reason", reason(r)));
}
