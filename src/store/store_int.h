/*
 * Inside the store: the small statement interface the typed operations (ops_*.c) are written
 * against, so that they hold SQL and logic but no backend calls. sqlite.c implements it over
 * SQLite; a PostgreSQL backend implements the same functions over libpq (placeholders ?N map to
 * $N) and the typed operations stay as they are.
 *
 * Statements are prepared once per connection and cached by the address of their SQL text,
 * which must therefore be a string literal. Every value is bound, never pasted into SQL.
 */
#ifndef KH_STORE_INT_H
#define KH_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/store.h"

struct kh__stmt;

/* Migrations (migrations.c): versions 1..n in order, each one SQL script. */
struct kh__migration {
	int version;
	const char *sql;
};
extern const struct kh__migration kh__migrations[];
extern const size_t kh__migrations_count;
/* PRAGMA application_id of a Keyhole store ("KHC1"). */
#define KH__STORE_APP_ID 0x4B484331

/*
 * Get the cached prepared statement for sql (a literal), reset and with no bindings. Release
 * it with kh__stmt_done on every path.
 */
KH_WARN_UNUSED kh_err kh__stmt(struct kh_store *s, const char *sql, struct kh__stmt **st);
void kh__stmt_done(struct kh__stmt *st);

/* Bind parameter idx (1-based). A NULL or empty blob binds an empty blob, never SQL NULL. */
KH_WARN_UNUSED kh_err kh__bind_i64(struct kh__stmt *st, int idx, int64_t v);
KH_WARN_UNUSED kh_err kh__bind_null(struct kh__stmt *st, int idx);
KH_WARN_UNUSED kh_err kh__bind_text(struct kh__stmt *st, int idx, const char *v);
KH_WARN_UNUSED kh_err kh__bind_blob(struct kh__stmt *st, int idx, const void *v, size_t n);

/*
 * Step: *row = 1 with a row to read, 0 when done. A unique or primary-key violation is
 * KH_ERR_EXISTS, another constraint KH_ERR_DB_CONSTRAINT, a lock KH_ERR_DB_BUSY, the rest
 * KH_ERR_DB (with the detail in kh_store_last_error).
 */
KH_WARN_UNUSED kh_err kh__step(struct kh__stmt *st, int *row);
/* Step a statement that returns no row (INSERT, UPDATE, ...). */
KH_WARN_UNUSED kh_err kh__exec(struct kh__stmt *st);

int kh__col_null(struct kh__stmt *st, int col);
int64_t kh__col_i64(struct kh__stmt *st, int col);
/* Blob or text bytes of a column, valid until the next step or kh__stmt_done; never NULL. */
const uint8_t *kh__col_blob(struct kh__stmt *st, int col, size_t *n);
/* A text column into out (cap > 0 bytes, cut to cap - 1, NUL-terminated). */
void kh__col_text(struct kh__stmt *st, int col, char *out, size_t cap);
/* A text column as a malloc'd string; NULL: out of memory. */
char *kh__col_str(struct kh__stmt *st, int col);
/* An integer column held to 0..UINT32_MAX (clamped: the schema's CHECKs keep it there). */
uint32_t kh__col_u32(struct kh__stmt *st, int col);

/*
 * Savepoints inside the open transaction (group.c): one level only. kh__savepoint_undo rolls
 * back to the savepoint and releases it. Any failure leaves the whole transaction to be rolled
 * back by the caller.
 */
KH_WARN_UNUSED kh_err kh__savepoint(struct kh_store *s);
KH_WARN_UNUSED kh_err kh__savepoint_release(struct kh_store *s);
KH_WARN_UNUSED kh_err kh__savepoint_undo(struct kh_store *s);

/* An Idempotency-Key the store accepts: 1..KH_STORE_IDEM_KEY_MAX bytes of text (ops_idem.c). */
int kh__idem_key_ok(const char *key);
/*
 * The row keyed by an Idempotency-Key: sql is a SELECT whose ?1 is the key and whose first column
 * is the stored request hash. KH_OK with *out on the row (read its other columns, then
 * kh__stmt_done), KH_ERR_NOTFOUND, or KH_ERR_IDEM_MISMATCH when the hash (compared in constant
 * time) is another request's; *out is released on every error.
 */
KH_WARN_UNUSED kh_err kh__keyed_row(struct kh_store *s, const char *sql, const char *key,
				    const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], struct kh__stmt **out);

/* A card row (ops_cards.c): the columns KH__CARD_COLS names, in that order, read into *c. */
#define KH__CARD_COLS \
	"ua, role, coalesce(subscriber_id, 0), state, export_authorised, coalesce(replaced_by, 0),\n" \
	"coalesce(closed_reason, ''), last_reload_id, created_at, coalesce(clone_alarm_at, 0),\n" \
	"coalesce(clone_block_seq, 0)"
KH_WARN_UNUSED kh_err kh__card_row(struct kh__stmt *st, struct kh_store_card *c);

/* A bulk_jobs row's columns 1..11 (product_id, start_time, end_time, all_subscribers,
 * max_subscriber_id, last_subscriber_id, subscribers, emms_queued, skipped, chunks, done) into
 * *j (ops_bulk.c); the other fields are zeroed. */
void kh__bulk_job_cols(struct kh__stmt *st, struct kh_store_bulk_job *j);

/* Rows changed by the last INSERT/UPDATE/DELETE on s. */
int64_t kh__changes(struct kh_store *s);
/* Current time for created_at columns, Unix seconds. */
int64_t kh__now(void);

/* ---- shared by the typed operations (ops_util.c) ---- */

/* A name of 1 to KH_STORE_NAME_MAX bytes. */
int kh__name_ok(const char *name);
/* 0 to UINT32_MAX. */
int kh__u32_ok(int64_t v);
/* Run a prepared statement binding a (and b when nbind > 1): KH_OK when it gave a row,
 * KH_ERR_NOTFOUND when none. */
KH_WARN_UNUSED kh_err kh__exists_query(struct kh_store *s, const char *sql, int64_t a, int64_t b, int nbind);

#endif
