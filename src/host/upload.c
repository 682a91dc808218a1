/*
 * The decoder's side of the upload session (seed 001; docs/protocols/upload.md, contract in
 * include/keyhole/upload.h, decisions in docs/internals/decoder.md "The upload session"). The
 * order is the point of the seed: the replaced card's block, kept in M1, goes up inside the new
 * card's session, the center answers with the new card's EMMs (authorise export last), and only
 * after the card has taken them does M1 get a block of the new card — so the old card's data is
 * never overwritten before the center holds it. HTTP is a callback (struct kh_upload_http): this
 * file does no network I/O itself; src/host/upload_curl.c is the real client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/cas.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/http.h"
#include "keyhole/log.h"
#include "keyhole/m1.h"
#include "keyhole/upload.h"
#include "keyhole/usage.h"

#define IDEM_BYTES 16 /* 128 random bits, sent as 32 hex digits */

/* ---- URLs ---- */

kh_err kh_upload_url_check(const char *url, int insecure_http)
{
	return kh_http_url_check(url, insecure_http);
}

/* base (trailing slashes dropped) + path + optional tail; malloc'd. */
static kh_err join_url(const char *base, const char *path, const char *tail, char **out)
{
	size_t bl = strlen(base);

	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (asprintf(out, "%.*s%s%s", (int)bl, base, path, tail ? tail : "") < 0) {
		*out = NULL;
		return KH_ERR_NOMEM;
	}
	return KH_OK;
}

/* ---- answers ---- */

/* The kh_err whose JSON code is code; KH_ERR_PEER_ERROR for one this build does not know. */
static kh_err err_from_json(const char *code)
{
	if (code)
		for (int i = 1; i <= KH__ERR_COUNT; i++)
			if (strcmp(kh_err_json(-i), code) == 0)
				return -i;
	return KH_ERR_PEER_ERROR;
}

/* Copy s into out keeping printable ASCII only (the center's words reach a terminal). */
static void printable(const char *s, char *out, size_t cap)
{
	size_t j = 0;

	for (; s && *s && j + 1 < cap; s++)
		out[j++] = (*s >= 0x20 && *s < 0x7F) ? *s : '?';
	out[j] = 0;
}

/* A 4xx (or other non-2xx, non-5xx) answer: the center's error code, its words kept in res. */
static kh_err refusal(json_t *resp, int status, struct kh_upload_result *res)
{
	json_t *e = resp ? json_object_get(resp, "error") : NULL;
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	char both[KH_UPLOAD_MSG_MAX];

	snprintf(both, sizeof both, "HTTP %d%s%s%s%s", status, code ? " " : "", code ? code : "", msg ? ": " : "",
		 msg ? msg : "");
	printable(both, res->center_msg, sizeof res->center_msg);
	return code ? err_from_json(code) : KH_ERR_PEER_ERROR;
}

static void pause_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/*
 * POST body to url, retrying a missing answer, a 5xx or a 429 with the same key (at most
 * KH_UPLOAD_ATTEMPTS POSTs, backoff doubling). KH_OK: a 2xx with a JSON body in *out.
 */
static kh_err post(const struct kh_upload_config *cfg, struct kh_upload_result *res, const char *what,
		   const char *url, json_t *body, const char *key, unsigned *attempts, json_t **out)
{
	unsigned backoff = cfg->backoff_ms ? cfg->backoff_ms : KH_UPLOAD_BACKOFF_MS;
	kh_err r = KH_ERR_TRANSPORT;

	for (unsigned i = 0; i < KH_UPLOAD_ATTEMPTS; i++) {
		json_t *resp = NULL;
		int status = 0;

		if (i > 0) {
			pause_ms(backoff);
			backoff *= 2;
		}
		if (attempts)
			*attempts = i + 1;
		r = cfg->http->post_json(cfg->http->ctx, url, body, key, &status, &resp);
		if (r == KH_ERR_TRANSPORT) {
			kh_log_info("upload.retry", "what=%s attempt=%u error=transport", what, i + 1);
			continue;
		}
		if (r != KH_OK) {
			json_decref(resp);
			return r;
		}
		res->http_status = status;
		/* 429: the center's budget for this address is spent for the moment (its Retry-After
		 * is not seen through this interface): the backoff waits, the same key goes again */
		if (status >= 500 || status == 429) {
			kh_log_info("upload.retry", "what=%s attempt=%u status=%d", what, i + 1, status);
			json_decref(resp);
			r = KH_ERR_TRANSPORT;
			continue;
		}
		if (status < 200 || status > 299) {
			r = refusal(resp, status, res);
			json_decref(resp);
			kh_log_info("upload.refused", "what=%s status=%d error=%s", what, status, kh_err_name(r));
			return r;
		}
		if (!json_is_object(resp)) {
			json_decref(resp);
			return KH_ERR_FORMAT;
		}
		*out = resp;
		return KH_OK;
	}
	return r;
}

static int session_id_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > KH_UPLOAD_SESSION_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      strchr("-._~", s[i])))
			return 0;
	return 1;
}

/* A UA in an answer: "0000000A" (8 hex digits, as the open request sends it) or a number. */
static int get_u32(json_t *v, int hex, uint32_t *out)
{
	if (json_is_integer(v)) {
		json_int_t x = json_integer_value(v);
		if (x < 0 || x > 0xFFFFFFFFLL)
			return 0;
		*out = (uint32_t)x;
		return 1;
	}
	if (hex && json_is_string(v) && json_string_length(v) == 8) {
		const char *s = json_string_value(v);
		char *end;
		if (strspn(s, "0123456789abcdefABCDEF") != 8)
			return 0;
		*out = (uint32_t)strtoul(s, &end, 16);
		return 1;
	}
	return 0;
}

/* The upload's answer: verdicts into res, EMMs decoded into emms[] (all checked before any is used). */
static kh_err parse_answer(json_t *a, struct kh_upload_result *res, uint8_t (*emms)[KH_EMM_MAX], size_t *emm_len,
			   size_t *nemm)
{
	json_t *blocks = json_object_get(a, "blocks"), *list = json_object_get(a, "emms"), *v;
	size_t i;

	if (!json_is_array(blocks) || json_array_size(blocks) > KH_UPLOAD_MAX_VERDICTS)
		return KH_ERR_FORMAT;
	if (!json_is_array(list) || json_array_size(list) > KH_UPLOAD_MAX_EMMS)
		return KH_ERR_FORMAT;
	json_array_foreach(blocks, i, v) {
		struct kh_upload_verdict *d = &res->verdicts[i];
		const char *s = json_string_value(json_object_get(v, "verdict"));
		if (!json_is_object(v) || !get_u32(json_object_get(v, "ua"), 1, &d->ua) ||
		    !get_u32(json_object_get(v, "block_seq"), 0, &d->block_seq) || !s || !*s)
			return KH_ERR_FORMAT;
		printable(s, d->verdict, sizeof d->verdict);
	}
	res->nverdicts = json_array_size(blocks);
	json_array_foreach(list, i, v) {
		const char *s = json_string_value(v);
		if (!s || kh_b64url_decode(s, json_string_length(v), emms[i], KH_EMM_MAX, &emm_len[i]) != KH_OK)
			return KH_ERR_FORMAT;
	}
	*nemm = json_array_size(list);
	return KH_OK;
}

static kh_err set_b64_item(json_t *arr, const uint8_t *p, size_t n)
{
	size_t cap = kh_b64url_len(n) + 1;
	char *s = malloc(cap);
	kh_err r;

	if (!s)
		return KH_ERR_NOMEM;
	if ((r = kh_b64url_encode(p, n, s, cap)) == KH_OK && json_array_append_new(arr, json_string(s)) != 0)
		r = KH_ERR_NOMEM;
	free(s);
	return r;
}

/* ---- the card's EMMs ---- */

/*
 * Apply n EMMs to the card in sequence order (the center sends them so; in another order the
 * card would refuse the later ones as gaps).
 * *gap: the card answered EMM_GAP for one (an earlier one is missing).
 */
static void apply_emms(const struct kh_upload_config *cfg, uint8_t (*emms)[KH_EMM_MAX], const size_t *emm_len,
		       size_t n, uint8_t *resp, size_t cap, struct kh_upload_result *res, int *gap)
{
	size_t order[KH_UPLOAD_MAX_EMMS], dlen;
	uint32_t seq[KH_UPLOAD_MAX_EMMS];
	uint16_t sw;

	for (size_t i = 0; i < n; i++) {
		struct kh_emm_hdr h;
		size_t j = i;
		seq[i] = kh_emm_peek(emms[i], emm_len[i], &h) == KH_OK ? h.seq : 0;
		for (; j > 0 && seq[order[j - 1]] > seq[i]; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	for (size_t k = 0; k < n; k++) {
		size_t i = order[k];
		kh_err e = kh_host_apdu(cfg->card, KH_INS_EMM, 0, emms[i], emm_len[i], resp, cap, &dlen, &sw);
		if (e == KH_OK) {
			res->emms_applied++;
		} else if (e == KH_ERR_EMM_REPLAY) {
			res->emms_replayed++;
		} else if (e == KH_ERR_EMM_GAP) {
			res->emms_gap++;
			*gap = 1;
			kh_log_info("upload.emm_gap", "seq=%u", seq[i]);
		} else {
			res->emms_refused++;
			if (res->emm_err == KH_OK)
				res->emm_err = e;
			kh_log_warn("upload.emm_refused", "index=%zu error=%s", i, kh_err_name(e));
		}
	}
}

/* GET the card's EMMs after its last applied one: at most KH_UPLOAD_MAX_EMMS sections into emms. */
static kh_err fetch_emms(const struct kh_upload_config *cfg, uint32_t ua, uint32_t after,
			 uint8_t (*emms)[KH_EMM_MAX], size_t *emm_len, size_t *n)
{
	json_t *a = NULL, *list, *v;
	char *url = NULL, tail[64];
	int status = 0;
	size_t i;
	kh_err r;

	snprintf(tail, sizeof tail, "%08X/emm?after_seq=%u&limit=%u", ua, after, KH_UPLOAD_MAX_EMMS);
	if ((r = join_url(cfg->center, "/v1/cards/", tail, &url)) != KH_OK)
		return r;
	if ((r = cfg->http->get_json(cfg->http->ctx, url, &status, &a)) != KH_OK)
		goto out;
	list = json_object_get(a, "emms");
	r = KH_ERR_FORMAT;
	if (status != 200 || !json_is_array(list) || json_array_size(list) > KH_UPLOAD_MAX_EMMS)
		goto out;
	json_array_foreach(list, i, v) {
		json_t *sec = json_object_get(v, "section");
		const char *s = json_string_value(sec);
		if (!s || kh_b64url_decode(s, json_string_length(sec), emms[i], KH_EMM_MAX, &emm_len[i]) != KH_OK)
			goto out;
	}
	*n = json_array_size(list);
	r = KH_OK;
out:
	if (r != KH_OK)
		kh_log_warn("upload.emm_fetch_failed", "status=%d error=%s", status, kh_err_name(r));
	json_decref(a);
	free(url);
	return r;
}

/* ---- the session ---- */

struct bufs {
	uint8_t nonce[KH_HELLO_NONCE_MAX];
	uint8_t cur[KH_APDU_MAX_RESP];
	uint8_t m1[KH_USAGE_MAX];
	uint8_t emms[KH_UPLOAD_MAX_EMMS][KH_EMM_MAX];
	size_t emm_len[KH_UPLOAD_MAX_EMMS];
	uint8_t resp[KH_APDU_MAX_RESP];
};

kh_err kh_upload_run(const struct kh_upload_config *cfg, struct kh_upload_result *res)
{
	struct bufs *b = NULL;
	struct kh_module_info info;
	struct kh_usage_hdr h;
	json_t *req = NULL, *ans = NULL, *arr;
	char *url = NULL, ua_hex[9], key_open[2 * IDEM_BYTES + 1], key_up[2 * IDEM_BYTES + 1];
	uint8_t rnd[IDEM_BYTES];
	size_t nonce_len = 0, cur_len = 0, m1_len = 0, nemm = 0;
	const char *sid;
	uint32_t emm_seq = 0;
	uint16_t sw;
	kh_err r;

	if (!cfg || !res || !cfg->center || !cfg->card || !cfg->http || !cfg->http->post_json ||
	    (cfg->m1_dir && !cfg->m1_key))
		return KH_ERR_INVAL;
	memset(res, 0, sizeof *res);
	res->m1_load = KH_ERR_NOTFOUND;
	if (!(b = calloc(1, sizeof *b)))
		return KH_ERR_NOMEM;

	/* 1. Open a session for the current card. */
	if ((r = kh_host_info(cfg->card, &info)) != KH_OK)
		goto out;
	res->card_ua = info.ua;
	snprintf(ua_hex, sizeof ua_hex, "%08X", info.ua);
	if ((r = kh_random(rnd, sizeof rnd)) != KH_OK)
		goto out;
	kh_hex_encode(rnd, sizeof rnd, key_open);
	if ((r = kh_random(rnd, sizeof rnd)) != KH_OK)
		goto out;
	kh_hex_encode(rnd, sizeof rnd, key_up);
	if ((r = join_url(cfg->center, "/v1/upload/sessions", NULL, &url)) != KH_OK)
		goto out;
	if (!(req = json_pack("{s:s}", "ua", ua_hex))) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = post(cfg, res, "open", url, req, key_open, NULL, &ans)) != KH_OK)
		goto out;
	sid = json_string_value(json_object_get(ans, "session"));
	if (!sid || !session_id_ok(sid) ||
	    kh_json_get_b64(ans, "nonce", b->nonce, sizeof b->nonce, &nonce_len, 0) != KH_OK ||
	    nonce_len < KH_HELLO_NONCE_MIN) {
		r = KH_ERR_FORMAT;
		goto out;
	}
	memcpy(res->session, sid, strlen(sid) + 1);
	json_decref(ans);
	ans = NULL;
	json_decref(req);
	req = NULL;
	kh_log_info("upload.open", "ua=%s session=%s", ua_hex, res->session);

	/* 2-3. The current card's fresh block (P1=0: always allowed), bound to this session: the card
	 * signs it with the session's nonce, so it is also the card's answer to the nonce (its hello:
	 * the card is present in this session). Then M1's block. */
	if ((r = kh_host_apdu(cfg->card, KH_INS_EXPORT, 0, b->nonce, nonce_len, b->cur, sizeof b->cur, &cur_len, &sw)) !=
	    KH_OK)
		goto out;
	if ((r = kh_usage_peek(b->cur, cur_len, &h)) != KH_OK)
		goto out;
	if (h.ua != info.ua) {
		r = KH_ERR_CARD_CHANGED;
		goto out;
	}
	res->block_seq = h.block_seq;
	if (cfg->m1_dir) {
		res->m1_load = kh_m1_load(cfg->m1_dir, cfg->m1_key, b->m1, sizeof b->m1, &m1_len);
		if (res->m1_load == KH_OK && kh_usage_peek(b->m1, m1_len, &h) == KH_OK) {
			res->m1_ua = h.ua;
			res->m1_seq = h.block_seq;
			res->m1_sent = !(m1_len == cur_len && memcmp(b->m1, b->cur, cur_len) == 0);
		} else if (res->m1_load == KH_OK) {
			res->m1_load = KH_ERR_FORMAT; /* kh_m1_load peeks already: cannot happen */
		}
		if (res->m1_load != KH_OK && res->m1_load != KH_ERR_NOTFOUND)
			kh_log_warn("upload.m1_unreadable", "dir=%s error=%s", cfg->m1_dir, kh_err_name(res->m1_load));
	}

	/* 4. Upload, one idempotency key for every try. The card's last unique EMM sequence number
	 * goes along, so the center answers with every EMM queued after it, in order, not only the
	 * ones this session makes: a card applies an EMM only above its last, and one applied out of
	 * order would make it refuse the earlier ones for good. */
	{
		struct kh_host_cas direct;
		struct kh_cas_status st;
		memset(&direct, 0, sizeof direct);
		direct.card = cfg->card;
		if ((r = kh_host_cas_status(&direct, &st)) != KH_OK)
			goto out;
		emm_seq = st.seq[KH_EMM_UNIQUE];
	}
	if (!(req = json_object()) || !(arr = json_array()) || json_object_set_new(req, "blocks", arr) != 0 ||
	    json_object_set_new(req, "emm_seq", json_integer((json_int_t)emm_seq)) != 0) {
		r = KH_ERR_NOMEM;
		goto out;
	}
	if ((r = set_b64_item(arr, b->cur, cur_len)) != KH_OK ||
	    (res->m1_sent && (r = set_b64_item(arr, b->m1, m1_len)) != KH_OK))
		goto out;
	free(url);
	if ((r = join_url(cfg->center, "/v1/upload/sessions/", res->session, &url)) != KH_OK)
		goto out;
	if ((r = post(cfg, res, "upload", url, req, key_up, &res->attempts, &ans)) != KH_OK)
		goto out;
	if ((r = parse_answer(ans, res, b->emms, b->emm_len, &nemm)) != KH_OK)
		goto out;
	res->emms = (unsigned)nemm;
	kh_log_info("upload.answer", "session=%s attempts=%u verdicts=%zu emms=%zu", res->session, res->attempts,
		    res->nverdicts, nemm);

	/* 5. The EMMs to the card, before anything touches M1, in sequence order. A card applies
	 * its own EMMs only in order: when it says one is missing (EMM_GAP: the answer lost one) or
	 * the answer was full, fetch what follows its last and apply that, while it takes some. */
	{
		int gap = 0;
		apply_emms(cfg, b->emms, b->emm_len, nemm, b->resp, sizeof b->resp, res, &gap);
		for (unsigned round = 0; cfg->http->get_json && (gap || nemm == KH_UPLOAD_MAX_EMMS) &&
					 round < KH_UPLOAD_FETCH_ROUNDS;
		     round++) {
			struct kh_host_cas direct;
			struct kh_cas_status st;
			unsigned before = res->emms_applied;
			memset(&direct, 0, sizeof direct);
			direct.card = cfg->card;
			if (kh_host_cas_status(&direct, &st) != KH_OK ||
			    fetch_emms(cfg, info.ua, st.seq[KH_EMM_UNIQUE], b->emms, b->emm_len, &nemm) != KH_OK)
				break;
			res->emms_fetched += (unsigned)nemm;
			gap = 0;
			apply_emms(cfg, b->emms, b->emm_len, nemm, b->resp, sizeof b->resp, res, &gap);
			if (res->emms_applied == before)
				break;
		}
	}

	/* 6. Only now may M1 take the current card's block: the card decides (authorised or not). */
	if (cfg->m1_dir && (res->m1_load == KH_OK || res->m1_load == KH_ERR_NOTFOUND)) {
		struct kh_m1_info mi;
		res->m1_tried = 1;
		res->m1_export = kh_m1_export(cfg->card, cfg->m1_dir, cfg->m1_key, info.ua, &mi);
		if (res->m1_export == KH_OK)
			res->m1_new_seq = mi.block_seq;
	}
	r = KH_OK;
out:
	json_decref(ans);
	json_decref(req);
	free(url);
	kh_wipe(rnd, sizeof rnd);
	if (b) {
		kh_wipe(b, sizeof *b);
		free(b);
	}
	return r;
}
