/*
 * The management center's life and its route table: opening the store and the authority's
 * keys, the operator gate, the /v1 routes, and /healthz and /readyz. The endpoints are in
 * sms_<resource>.c; what each queues is in docs/internals/sms.md. The store connections, one
 * per HTTP thread, are ../pool.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "keyhole/authority.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/log.h"
#include "sms_int.h"

kh_err kh__sms_db(struct kh_sms *c, struct kh_store **s)
{
	return kh__pool_get(&c->pool, s);
}

/* Service key 1 version 1 on a store that has no service key at all. */
static kh_err count_key(void *arg, const struct kh_store_service_key *k)
{
	(void)k;
	(*(unsigned *)arg)++;
	return KH_OK;
}

static kh_err first_key_tx(struct kh_store *s, void *arg)
{
	uint8_t key[32];
	unsigned n = 0;
	kh_err r;

	(void)arg;
	if ((r = kh_store_service_key_list(s, count_key, &n)) != KH_OK || n > 0)
		return r;
	if ((r = kh_random(key, sizeof key)) == KH_OK)
		r = kh_store_service_key_add(s, 1, 1, key);
	kh_wipe(key, sizeof key);
	if (r == KH_OK)
		kh_log_info("sms.service_key", "key_id=1 version=1 created=1");
	return r;
}

static kh_err read_master(const char *dir, uint8_t master[static 32])
{
	uint8_t *data = NULL;
	size_t len = 0;
	char *path = NULL;
	kh_err r;

	if (asprintf(&path, "%s/master.key", dir) < 0)
		return KH_ERR_NOMEM;
	if ((r = kh_keyfile_read(path, 4096, &data, &len)) == KH_OK)
		r = kh_hex_decode((const char *)data, len, master, 32);
	kh_file_free(data, len);
	free(path);
	return r;
}

kh_err kh_sms_new(const struct kh_sms_config *cfg, struct kh_sms **out, const char **what)
{
	struct kh_authority *a = NULL;
	struct kh_sms *c = NULL;
	struct kh_store *s;
	const char *w = NULL;
	kh_err r;

	if (cfg == NULL || cfg->db == NULL || cfg->authority_dir == NULL || out == NULL)
		return KH_ERR_INVAL;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return KH_ERR_NOMEM;
	if (pthread_mutex_init(&c->cards.mu, NULL) != 0) {
		free(c);
		return KH_ERR_NOMEM;
	}
	c->cards.mu_ok = 1;
	if ((r = kh__pool_init(&c->pool, cfg->db, cfg->store_sync_normal)) != KH_OK)
		goto out;
	c->lim.bulk_chunk = cfg->bulk_chunk ? cfg->bulk_chunk : KH_SMS_BULK_CHUNK;
	if (c->lim.bulk_chunk > KH_SMS_BULK_CHUNK_MAX) {
		r = KH_ERR_INVAL;
		goto out;
	}
	c->lim.upload_ttl = cfg->upload_session_ttl ? cfg->upload_session_ttl : KH_SMS_UPLOAD_TTL;
	c->lim.idem_ttl = cfg->idempotency_ttl ? cfg->idempotency_ttl : KH_SMS_IDEM_TTL;
	if (c->lim.idem_ttl < KH_SMS_IDEM_TTL_MIN || c->lim.idem_ttl > KH_SMS_IDEM_TTL_MAX) {
		r = KH_ERR_INVAL;
		goto out;
	}
	c->lim.clock = cfg->clock;
	c->lim.clock_ctx = cfg->clock_ctx;
	c->lim.rights_ttl = cfg->rights_ttl ? cfg->rights_ttl : KH_SMS_RIGHTS_TTL;
	if (c->lim.rights_ttl < 2 || c->lim.rights_ttl > KH_SMS_RIGHTS_TTL_MAX) {
		r = KH_ERR_INVAL;
		goto out;
	}
	if (pthread_mutex_init(&c->renew.mu, NULL) != 0) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if (pthread_cond_init(&c->renew.cv, NULL) != 0) {
		pthread_mutex_destroy(&c->renew.mu);
		r = KH_ERR_NOMEM;
		goto out;
	}
	c->renew.ok = 1;
	if (cfg->operator_token) {
		if (cfg->token_len < 16) {
			r = KH_ERR_INVAL; /* a token a guess could find is no token */
			goto out;
		}
		if ((r = kh_sha256(cfg->operator_token, cfg->token_len, c->gate.token_hash)) != KH_OK)
			goto out;
		c->gate.token_set = 1;
	}
	/* The authority first: a store file is not created for a center that cannot start. */
	w = cfg->authority_dir;
	if ((r = kh_authority_open(cfg->authority_dir, &a)) != KH_OK)
		goto out;
	kh_authority_root_pk(a, c->k.root_pk);
	if ((r = read_master(cfg->authority_dir, c->k.master)) != KH_OK)
		goto out;
	/* The upload sessions' MAC key: from the master, so every center of the operator has it. */
	{
		static const char label[] = "keyhole upload session key v1";
		if ((r = kh_hkdf(c->k.master, sizeof c->k.master, NULL, 0, (const uint8_t *)label, sizeof label - 1,
				 c->k.session_key, sizeof c->k.session_key)) != KH_OK)
			goto out;
	}
	/* Cards believe ECMs and group EMMs only from signers they were given: every card gets both. */
	if ((r = kh_authority_signer_load(cfg->authority_dir, KH_ROLE_ECM_SIGNER, NULL, c->k.signer_der[0],
					  KH_CERT_MAX, &c->k.signer_len[0])) != KH_OK ||
	    (r = kh_authority_signer_load(cfg->authority_dir, KH_ROLE_EMM_SIGNER, NULL, c->k.signer_der[1],
					  KH_CERT_MAX, &c->k.signer_len[1])) != KH_OK)
		goto out;
	w = cfg->db;
	if ((r = kh__sms_db(c, &s)) != KH_OK || (r = kh_store_run_tx(s, first_key_tx, NULL)) != KH_OK)
		goto out;
	{
		struct kh_store_opts opts = {.sync_normal = c->pool.sync_normal};
		if ((r = kh_store_group_new(c->pool.db, &opts, 0, &c->writer)) != KH_OK)
			goto out;
	}
	*out = c;
	c = NULL;
	w = NULL;
	r = KH_OK;
out:
	kh_authority_free(a);
	kh_sms_free(c);
	if (what)
		*what = w;
	return r;
}

void kh_sms_free(struct kh_sms *c)
{
	if (c == NULL)
		return;
	if (c->renew.ok) {
		kh__sms_renew_stop(c);
		pthread_cond_destroy(&c->renew.cv);
		pthread_mutex_destroy(&c->renew.mu);
	}
	kh_store_group_free(c->writer);
	kh__pool_free(&c->pool);
	if (c->cards.mu_ok)
		pthread_mutex_destroy(&c->cards.mu);
	kh_wipe(c->k.master, sizeof c->k.master);
	kh_wipe(c->k.session_key, sizeof c->k.session_key);
	kh_wipe(c->cards.slot, sizeof c->cards.slot);
	kh_wipe(c->gate.token_hash, sizeof c->gate.token_hash);
	free(c);
}

kh_err kh__sms_write(struct kh_sms *c, kh_store_tx_fn fn, void *arg)
{
	struct kh_store *s;
	kh_err r;

	if (kh_store_group_batches(c->writer))
		return kh_store_group_run(c->writer, fn, arg);
	/* A server that commits many connections at once (PostgreSQL): the thread's own pooled
	 * connection, so writers of this process (and of every other center) run side by side. */
	if ((r = kh__sms_db(c, &s)) != KH_OK)
		return r;
	return kh_store_run_tx(s, fn, arg);
}

void kh_sms_writer_stats(struct kh_sms *c, uint64_t *batches, uint64_t *jobs)
{
	kh_store_group_stats(c->writer, batches, jobs, NULL);
}

void kh__sms_count_emms(struct kh_sms *c, unsigned n)
{
	if (c->n.emms_queued && n)
		kh_metric_add(c->n.emms_queued, n);
}

void kh__sms_count_blocks(struct kh_sms *c, unsigned n)
{
	if (c->n.blocks_ingested && n)
		kh_metric_add(c->n.blocks_ingested, n);
}

/* The store's process-wide transaction counters, read when /metrics is rendered. */
static int64_t tx_retries(void *arg)
{
	struct kh_store_tx_stats st;

	(void)arg;
	kh_store_tx_stats(&st);
	return (int64_t)st.retries;
}

static int64_t tx_gave_up(void *arg)
{
	struct kh_store_tx_stats st;

	(void)arg;
	kh_store_tx_stats(&st);
	return (int64_t)st.gave_up;
}

/*
 * The operator's endpoints want the operator's token when one is configured. The comparison is
 * of SHA-256 digests in constant time, so neither the token's bytes nor its length show in the
 * timing.
 */
static kh_err operator_only(struct kh_http_req *req, struct kh_http_resp *resp, void *arg)
{
	const struct kh__sms_op *op = arg;
	const char *auth = kh_http_header(req, "Authorization");
	uint8_t got[32];
	int ok = 0;

	if (!op->c->gate.token_set)
		return op->fn(req, resp, op->c);
	/* "Bearer" in any case (RFC 9110 11.1), then spaces, the token, and any trailing blanks. */
	if (auth && strncasecmp(auth, "Bearer", 6) == 0 && (auth[6] == ' ' || auth[6] == '\t')) {
		const char *tok = auth + 7;
		size_t n;
		while (*tok == ' ' || *tok == '\t')
			tok++;
		for (n = strlen(tok); n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'); n--)
			;
		if (kh_sha256((const uint8_t *)tok, n, got) == KH_OK)
			ok = kh_ct_eq(got, op->c->gate.token_hash, sizeof got);
	}
	kh_wipe(got, sizeof got);
	if (!ok) {
		kh_err r = kh_http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"keyhole operator\"");
		if (r != KH_OK)
			return r;
		return kh_http_reply_error(resp, KH_ERR_UNAUTHORISED, NULL);
	}
	return op->fn(req, resp, op->c);
}

kh_err kh_sms_add_routes(struct kh_sms *c, struct kh_http *h)
{
	/* The operator's back office: behind the token. */
	static const struct {
		const char *method, *path;
		kh_http_handler fn;
	} operator_routes[] = {
		{"POST", "/v1/subscribers", kh__sms_subscriber_create},
		{"GET", "/v1/subscribers", kh__sms_subscriber_list},
		{"GET", "/v1/subscribers/{id}", kh__sms_subscriber_get},
		{"PATCH", "/v1/subscribers/{id}", kh__sms_subscriber_patch},
		{"DELETE", "/v1/subscribers/{id}", kh__sms_subscriber_delete},
		{"GET", "/v1/subscribers/{id}/invoices", kh__sms_subscriber_invoices},
		{"GET", "/v1/subscribers/{id}/subscriptions", kh__sms_subscriber_subscriptions},
		{"POST", "/v1/subscribers/{id}/subscriptions", kh__sms_subscribe},
		{"DELETE", "/v1/subscribers/{id}/subscriptions/{product_id}", kh__sms_unsubscribe},
		{"POST", "/v1/cards", kh__sms_card_register},
		{"GET", "/v1/cards", kh__sms_card_list},
		{"GET", "/v1/cards/{ua}", kh__sms_card_get},
		{"DELETE", "/v1/cards/{ua}", kh__sms_card_delete},
		{"GET", "/v1/cards/{ua}/emm-queue", kh__sms_card_emm_queue},
		{"POST", "/v1/cards/{ua}/assign", kh__sms_card_assign},
		{"POST", "/v1/cards/{ua}/replace", kh__sms_card_replace},
		{"POST", "/v1/cards/{ua}/forfeit", kh__sms_card_forfeit},
		{"POST", "/v1/cards/{ua}/reload", kh__sms_card_reload},
		{"POST", "/v1/products", kh__sms_product_create},
		{"GET", "/v1/products", kh__sms_product_list},
		{"GET", "/v1/products/{id}", kh__sms_product_get},
		{"PATCH", "/v1/products/{id}", kh__sms_product_patch},
		{"DELETE", "/v1/products/{id}", kh__sms_product_delete},
		{"POST", "/v1/products/{id}/subscriptions", kh__sms_bulk_subscribe},
		{"POST", "/v1/channels", kh__sms_channel_create},
		{"GET", "/v1/channels", kh__sms_channel_list},
		{"GET", "/v1/channels/{id}", kh__sms_channel_get},
		{"PATCH", "/v1/channels/{id}", kh__sms_channel_patch},
		{"DELETE", "/v1/channels/{id}", kh__sms_channel_delete},
		{"POST", "/v1/events", kh__sms_event_create},
		{"GET", "/v1/events", kh__sms_event_list},
		{"GET", "/v1/events/{id}", kh__sms_event_get},
		{"PATCH", "/v1/events/{id}", kh__sms_event_patch},
		{"DELETE", "/v1/events/{id}", kh__sms_event_delete},
		{"GET", "/v1/invoices", kh__sms_invoice_list},
		{"GET", "/v1/upload/sessions", kh__sms_session_list},
		{"GET", "/v1/jobs", kh__sms_job_list},
		{"GET", "/v1/jobs/{id}", kh__sms_job_get},
		{"PUT", "/v1/credit-policy", kh__sms_policy_put},
		{"GET", "/v1/credit-policy", kh__sms_policy_get},
		{"POST", "/v1/service-keys/rotate", kh__sms_keys_rotate},
		{"GET", "/v1/service-keys", kh__sms_keys_list},
		{"GET", "/v1/service-keys/material", kh__sms_keys_material},
		{"POST", "/v1/rights/renew", kh__sms_rights_renew},
	};
	/* What cards, decoders and the headend use: signed or sealed end to end, open to all. */
	const struct kh_http_route open_routes[] = {
		{"GET", "/v1/cards/{ua}/emm", kh__sms_card_emm, c, KH_HTTP_ROUTE_OPEN},
		{"GET", "/v1/emm", kh__sms_emm_queue, c, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/upload/sessions", kh__sms_upload_open, c, KH_HTTP_ROUTE_OPEN},
		{"POST", "/v1/upload/sessions/{id}", kh__sms_upload, c, KH_HTTP_ROUTE_OPEN},
	};
	/* For what watches the process: no token, and never counted against the open budget. */
	const struct kh_http_route health_routes[] = {
		{"GET", "/healthz", kh__sms_healthz, c, 0},
		{"GET", "/readyz", kh__sms_readyz, c, 0},
	};
	struct kh_http_route routes[sizeof operator_routes / sizeof operator_routes[0]];
	size_t n = sizeof operator_routes / sizeof operator_routes[0];
	kh_err r;

	if (c == NULL || h == NULL || n > sizeof c->gate.ops / sizeof c->gate.ops[0])
		return KH_ERR_INVAL;
	for (size_t i = 0; i < n; i++) {
		c->gate.ops[i].fn = operator_routes[i].fn;
		c->gate.ops[i].c = c;
		routes[i] = (struct kh_http_route){operator_routes[i].method, operator_routes[i].path, operator_only,
						   &c->gate.ops[i], 0};
	}
	if ((r = kh_metrics_counter(kh_http_metrics(h), "keyhole_emms_queued_total",
				    "EMMs sealed and queued by the management center", &c->n.emms_queued)) != KH_OK)
		return r;
	if ((r = kh_metrics_counter(kh_http_metrics(h), "keyhole_blocks_ingested_total",
				    "usage blocks received in upload sessions (each verdict counts)",
				    &c->n.blocks_ingested)) != KH_OK)
		return r;
	if ((r = kh_metrics_counter(kh_http_metrics(h), "keyhole_price_mismatch_total",
				    "purchases whose block stated another price than the catalogue's (invoiced at "
				    "the catalogue's)",
				    &c->n.price_mismatches)) != KH_OK ||
	    (r = kh_metrics_counter(kh_http_metrics(h), "keyhole_unknown_event_total",
				    "purchases of an event the catalogue does not list (invoiced at 0, flagged)",
				    &c->n.unknown_events)) != KH_OK ||
	    (r = kh_metrics_counter(kh_http_metrics(h), "keyhole_clone_alarms_total",
				    "blocks showing a card rolled back or cloned (verdict clone)", &c->n.clone_alarms)) != KH_OK)
		return r;
	if ((r = kh_metrics_counter_fn(kh_http_metrics(h), "keyhole_store_tx_retries_total",
				       "store transactions run again after a busy database, a serialization "
				       "failure or a deadlock (this process)",
				       tx_retries, NULL)) != KH_OK ||
	    (r = kh_metrics_counter_fn(kh_http_metrics(h), "keyhole_store_tx_gave_up_total",
				       "store transactions that still met one at their last attempt and "
				       "answered 503 database_busy (this process)",
				       tx_gave_up, NULL)) != KH_OK)
		return r;
	if ((r = kh_http_add_routes(h, routes, n)) != KH_OK ||
	    (r = kh_http_add_routes(h, health_routes, sizeof health_routes / sizeof health_routes[0])) != KH_OK)
		return r;
	return kh_http_add_routes(h, open_routes, sizeof open_routes / sizeof open_routes[0]);
}
