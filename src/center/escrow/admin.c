/*
 * What the escrow's operator does on the store directly (include/keyhole/escrowsvc.h, `keyhole
 * escrow account ...`): accounts and their API tokens. A token is 32 random bytes shown once in
 * base64url; the store keeps its SHA-256 only, so a copy of the database logs nobody in.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/escrowsvc.h"
#include "keyhole/http.h"
#include "keyhole/store_escrow.h"

/* A fresh token into token, its hash into hash. */
static kh_err token_make(char token[static KH_ESCROW_TOKEN_B64], uint8_t hash[static KH_SHA256_LEN])
{
	uint8_t t[KH_ESCROW_TOKEN_LEN];
	kh_err r;

	if ((r = kh_random(t, sizeof t)) == KH_OK && (r = kh_sha256(t, sizeof t, hash)) == KH_OK)
		r = kh_b64url_encode(t, sizeof t, token, KH_ESCROW_TOKEN_B64);
	kh_wipe(t, sizeof t);
	return r;
}

struct new_tx {
	const char *name, *currency;
	int64_t now, id;
	const uint8_t *hash;
};

static kh_err new_tx(struct kh_store *st, void *arg)
{
	struct new_tx *t = arg;
	kh_err r = kh_store_escrow_account_add(st, t->name, t->currency, t->now, &t->id);

	return r != KH_OK ? r : kh_store_escrow_token_set(st, t->id, t->hash, t->now);
}

kh_err kh_escrow_account_new(struct kh_store *st, const char *name, const char *currency, int64_t now, int64_t *id,
			     char token[static KH_ESCROW_TOKEN_B64])
{
	uint8_t hash[KH_SHA256_LEN];
	char tok[KH_ESCROW_TOKEN_B64];
	struct new_tx t = {.name = name, .currency = currency, .now = now, .hash = hash};
	kh_err r;

	/* the account and its token in one transaction: no account without a way in */
	if ((r = token_make(tok, hash)) == KH_OK && (r = kh_store_run_tx(st, new_tx, &t)) == KH_OK) {
		memcpy(token, tok, sizeof tok);
		if (id)
			*id = t.id;
	}
	kh_wipe(tok, sizeof tok);
	return r;
}

kh_err kh_escrow_account_token(struct kh_store *st, int64_t account, int64_t now, char token[static KH_ESCROW_TOKEN_B64])
{
	uint8_t hash[KH_SHA256_LEN];
	char tok[KH_ESCROW_TOKEN_B64];
	kh_err r;

	if ((r = token_make(tok, hash)) == KH_OK && (r = kh_store_escrow_token_set(st, account, hash, now)) == KH_OK)
		memcpy(token, tok, sizeof tok);
	kh_wipe(tok, sizeof tok);
	return r;
}
