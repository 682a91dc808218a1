/*
 * The management center's SQL store. One schema with versioned
 * migrations compiled into the binary; SQLite (WAL) by default, PostgreSQL (libpq) behind the
 * same functions. Every function that changes state runs as one transaction and returns only after
 * the commit is durable: with the default options a commit that returned survives a power loss.
 * Center zone only. See docs/internals/store.md for the schema and the contracts.
 *
 * Threads: a struct kh_store is one connection and is not thread-safe; open one per thread or
 * process. Several processes may open the same SQLite file (WAL, busy timeout, retries) or the
 * same PostgreSQL database (SERIALIZABLE transactions, retries).
 */
#ifndef KEYHOLE_STORE_H
#define KEYHOLE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

struct kh_store;

struct kh_store_opts {
	/* How long SQLite waits on a lock (PostgreSQL: lock_timeout) before answering busy; 0 means
	 * 5000 ms. */
	unsigned busy_timeout_ms;
	/*
	 * 1: PRAGMA synchronous=NORMAL. NOT DURABLE: in WAL mode a commit that returned may be lost
	 * on a power cut or kernel crash (never on a process crash). For benchmarks and throwaway
	 * databases only; the default (0) is synchronous=FULL. On PostgreSQL: synchronous_commit=off,
	 * with the same warning (a commit that returned may be lost if the server crashes).
	 */
	int sync_normal;
};

/*
 * Open (and create, mode 0600, or migrate to the latest schema) the store named by url:
 *   "PATH", "sqlite:PATH" or "sqlite://PATH"   an SQLite file (created if absent);
 *   "postgres://..." / "postgresql://..."      a PostgreSQL database, the URL given as it is to
 *                                              libpq (service files, PG* variables and ~/.pgpass
 *                                              apply); KH_ERR_NOT_BUILT in a build without libpq.
 * Other "scheme:" prefixes are KH_ERR_INVAL. On PostgreSQL the database must exist; the store
 * lives in the connection's current schema; a server that cannot be reached, or a connection
 * lost later, is KH_ERR_DB_UNAVAILABLE; no message holds the URL's password. The file rules
 * below are SQLite's. The database holds secrets (service keys): an
 * existing file, -wal or -shm that group or others can access, or that another user owns, is
 * refused with KH_ERR_KEYFILE_PERM; a -wal or -shm without its database, KH_ERR_EXISTS. A
 * database whose schema is newer than this code is refused with KH_ERR_VERSION and left
 * untouched; a database that is not a Keyhole store, KH_ERR_DB_FOREIGN. A file that cannot be
 * written (its mode, a read-only file system) or whose directory cannot be written is KH_ERR_IO,
 * at open rather than at the first write. Other failures: KH_ERR_IO (cannot create or open),
 * KH_ERR_DB, KH_ERR_DB_BUSY, KH_ERR_NOMEM. An open that fails leaves no file it created.
 *
 * Several connections of one process to one file: only the first creates or migrates it. While
 * a connection to the file is open in this process, every further open joins it: it never
 * creates a file and never migrates, and it must find at the path the very file (device and
 * inode) the first one opened, else KH_ERR_DB_GONE. Every write transaction (kh_store_begin,
 * kh_store_run_tx, the group committer) checks the same, so a database deleted, moved or
 * replaced while in use takes no write (KH_ERR_DB_GONE, logged once per connection) and is
 * never swapped for a new empty one; connections already open go on reading the file they have.
 * *out is written only on success; close it with kh_store_close.
 */
KH_WARN_UNUSED kh_err kh_store_open(const char *url, struct kh_store **out);
/*
 * url as a message may show it, into out (cap bytes, always terminated, cut if it must be): a
 * postgres:// URL's password (user:PASSWORD@ and any password= parameter) is replaced by "***";
 * anything else is copied as it is.
 */
void kh_store_url_safe(const char *url, char *out, size_t cap);
/* The same with options (opts NULL: the defaults). */
KH_WARN_UNUSED kh_err kh_store_open_opts(const char *url, const struct kh_store_opts *opts, struct kh_store **out);
/* Close; a transaction still open is rolled back. NULL does nothing. */
void kh_store_close(struct kh_store *s);

/*
 * Check, creating and changing nothing, that kh_store_open could open url for writing, or
 * create it: an existing database must be a regular file, private to its owner (who runs this
 * process) and writable; its directory must exist and be writable; a -wal or -shm beside it
 * must be private too, and none may be there without the database. *exists (may be NULL) is 1
 * when the database file exists. On failure why (cap bytes) gets one line "FILE: reason" naming
 * the file at fault, and the code is the one kh_store_open would return. Whether the file is a
 * Keyhole store is left to kh_store_open. A PostgreSQL URL has no file to check: KH_OK with
 * *exists 1 when libpq can parse it (the server says the rest at open), else KH_ERR_INVAL.
 */
KH_WARN_UNUSED kh_err kh_store_check(const char *url, int *exists, char *why, size_t cap);
/*
 * Remove the database file url names with its -wal, -shm and -journal: for a start that
 * created the database and then failed. KH_ERR_INVAL while a connection of this process has it
 * open; a file already gone is not an error. A PostgreSQL URL: KH_ERR_INVAL (a server's database
 * is the operator's to drop).
 */
KH_WARN_UNUSED kh_err kh_store_remove(const char *url);

/* Schema version of the open database, and the latest this code knows. */
KH_WARN_UNUSED kh_err kh_store_schema_version(struct kh_store *s, int *version);
int kh_store_schema_latest(void);

/*
 * The one-line detail of the last failure on s ("store /path/db: step: database is locked"),
 * or "" when none. It names the database file and the operation, never a bound value. Valid
 * until the next call on s.
 */
const char *kh_store_last_error(const struct kh_store *s);

/* ---- transactions ---- */

/*
 * Explicit transactions. kh_store_begin starts a write transaction (BEGIN IMMEDIATE: the write
 * lock is taken at once, so a transaction never fails half-way for want of it). Nesting is
 * refused with KH_ERR_INVAL. kh_store_commit returns once the commit is durable; on a failed
 * commit the transaction is rolled back. KH_ERR_DB_BUSY is the soft error to retry.
 */
KH_WARN_UNUSED kh_err kh_store_begin(struct kh_store *s);
KH_WARN_UNUSED kh_err kh_store_commit(struct kh_store *s);
/* Roll back the open transaction, if any. */
void kh_store_rollback(struct kh_store *s);
/* 1 while a transaction is open on s. */
int kh_store_in_tx(const struct kh_store *s);

/*
 * Process-wide counters of kh_store_run_tx and the group committer, for /metrics: retries is
 * how many times a transaction was run again after the soft error (SQLite busy; PostgreSQL
 * serialization failure or deadlock), gave_up how many still met it at their last attempt and
 * answered KH_ERR_DB_BUSY.
 */
struct kh_store_tx_stats {
	uint64_t retries;
	uint64_t gave_up;
};
void kh_store_tx_stats(struct kh_store_tx_stats *out);

typedef kh_err (*kh_store_tx_fn)(struct kh_store *s, void *arg);
/*
 * Run fn inside one write transaction and commit when it returns KH_OK; roll back on any other
 * code and return it. KH_ERR_DB_BUSY (from fn or the commit) rolls back and runs fn again, a
 * few times with growing random pauses, so fn must have no effect outside the store that a
 * second run would repeat. Called while a transaction is already open on s, fn simply runs in
 * it (no commit, no retry: the outermost kh_store_run_tx owns both), so the typed operations
 * below compose into one transaction.
 */
KH_WARN_UNUSED kh_err kh_store_run_tx(struct kh_store *s, kh_store_tx_fn fn, void *arg);

/* ---- group commit ---- */

/*
 * A group committer: one connection of its own that runs the transaction functions handed to it
 * by many threads, as many as are waiting at once in ONE write transaction, each inside its own
 * savepoint, then commits once. So concurrent writers share one fsync instead of queueing for
 * one each; what each caller is told still holds only once it is durable.
 *
 * kh_store_group_run returns fn's result once the transaction holding it has committed: KH_OK
 * means fn's changes are durable; another code from fn means its savepoint was rolled back (and
 * nothing of it is kept) while the others in the batch go on. If the batch's commit fails (or a
 * savepoint cannot be undone), every job of the batch gets that error and none of them is kept.
 * A busy database re-runs the whole batch, so fn must, as for kh_store_run_tx, reset its outputs
 * when it starts. fn runs on whichever caller's thread leads the batch (no thread-local state),
 * and it must not call the group again.
 *
 * There is no dedicated thread: the first caller to find no batch running leads the next one
 * (everything queued, up to max_batch jobs) and the others wait; when a batch ends, a waiting
 * caller whose job is not done leads the next. Safe to call from any number of threads.
 */
struct kh_store_group;
/* Open url for the group (options as kh_store_open_opts); max_batch 0 means 64. */
KH_WARN_UNUSED kh_err kh_store_group_new(const char *url, const struct kh_store_opts *opts, unsigned max_batch,
					 struct kh_store_group **out);
/* Close the group's connection. No call may be in progress. NULL does nothing. */
void kh_store_group_free(struct kh_store_group *g);
KH_WARN_UNUSED kh_err kh_store_group_run(struct kh_store_group *g, kh_store_tx_fn fn, void *arg);
/* Counters since creation: committed batches, jobs run, and jobs waiting right now. */
void kh_store_group_stats(struct kh_store_group *g, uint64_t *batches, uint64_t *jobs, unsigned *waiting);
/*
 * 1 when the group batches its jobs in one transaction (SQLite: one writer, one fsync per
 * commit); 0 when each job is a transaction of its own on the group's ONE connection
 * (PostgreSQL, whose server commits many connections' transactions at once). A caller with a
 * connection of its own per thread should then run kh_store_run_tx on it rather than queue
 * every writer behind the group's connection. NULL: 0.
 */
int kh_store_group_batches(const struct kh_store_group *g);

/* ---- EMM sequence numbers and queue (the protocol design "Pay-TV: ECM and EMM") ---- */

/*
 * Next sequence number for (addr_type, addr): 1 for the first, then strictly increasing, never
 * reused, durable before return. addr_type is an enum kh_emm_addr (keyhole/cas.h); anything
 * else is KH_ERR_INVAL. KH_ERR_TOO_LARGE once UINT32_MAX has been used.
 */
KH_WARN_UNUSED kh_err kh_store_next_emm_seq(struct kh_store *s, uint8_t addr_type, uint32_t addr, uint32_t *seq);

/*
 * Builds the EMM section for seq into out (cap bytes, KH_EMM_MAX) and sets *len. Any code
 * other than KH_OK abandons the enqueue: neither the seq nor the EMM is kept.
 */
typedef kh_err (*kh_store_emm_build_fn)(void *arg, uint32_t seq, uint8_t *out, size_t cap, size_t *len);
/*
 * Take the next seq for (addr_type, addr), have build make the section with it, and queue the
 * section, all in one transaction: the seq is used exactly when the EMM is queued. *seq and *id
 * (queue id; either may be NULL) are written on success. An empty or oversized section is
 * KH_ERR_INVAL / KH_ERR_TOO_LARGE. The section is written to the store as given: it is sealed.
 */
KH_WARN_UNUSED kh_err kh_store_emm_enqueue(struct kh_store *s, uint8_t addr_type, uint32_t addr,
					   kh_store_emm_build_fn build, void *arg, uint32_t *seq, int64_t *id);

struct kh_store_emm {
	int64_t id; /* the row's id: never reused; one address's EMMs commit in id order */
	uint8_t addr_type;
	uint32_t addr;
	uint32_t seq;
	const uint8_t *section; /* valid during the callback only */
	size_t len;
	int64_t created_at; /* Unix seconds */
	/* The queue position (kh_store_emm_fetch only, else 0): positions are handed out in commit
	 * order, so a cursor on them never passes an EMM that commits later, with any number of
	 * writers. On SQLite it equals id. */
	int64_t pos;
};
/* Return KH_OK to go on; any other code stops the fetch, which returns it. */
typedef kh_err (*kh_store_emm_fn)(void *arg, const struct kh_store_emm *e);
/*
 * Call fn for each queued EMM with position > since (the queue's cursor), in position order, at
 * most limit (0: no limit), from one consistent snapshot. *last_id (may be NULL) gets the
 * position of the last one passed to fn, since when none: the next call's since. On a backend
 * with concurrent writers (PostgreSQL) it first gives the committed EMMs that have no position
 * yet the next ones, in a short write transaction of its own (it joins the caller's when one is
 * open). fn must not call into s.
 */
KH_WARN_UNUSED kh_err kh_store_emm_fetch(struct kh_store *s, int64_t since_id, unsigned limit,
					 kh_store_emm_fn fn, void *arg, int64_t *last_id);

/* ---- usage blocks (seed 001) ---- */

enum kh_store_verdict {
	KH_STORE_BLOCK_OK = 0,        /* signature and tag checked against the card's certificate */
	KH_STORE_BLOCK_TAMPERED = 1,  /* signature or tag failed */
	KH_STORE_BLOCK_FOREIGN = 2,   /* unknown UA, or not this operator's card */
	KH_STORE_BLOCK_TRUNCATED = 3, /* did not parse */
};

/*
 * Record that the block (ua, block_seq) was received, with its verdict; session_id 0 means
 * none. KH_ERR_EXISTS when it was recorded before, and then nothing changes ("a block seen
 * twice changes nothing"), and *prev (may be NULL) gets the recorded verdict. One exception, so
 * that a forged copy cannot shadow the genuine block: an OK block replaces a recorded refusal
 * under the same (ua, block_seq) and returns KH_OK. Call it in the transaction that applies
 * the block's content (kh_store_run_tx), so the block and its effects commit together.
 */
KH_WARN_UNUSED kh_err kh_store_block_seen(struct kh_store *s, uint32_t ua, uint32_t block_seq,
					  enum kh_store_verdict verdict, int64_t session_id,
					  enum kh_store_verdict *prev);
/* A block as kh_store_block_record records it. */
struct kh_store_block {
	uint32_t ua, block_seq;
	enum kh_store_verdict verdict;
	int64_t session_id;  /* 0: none */
	const uint8_t *hash; /* SHA-256 of the whole block (32 bytes); NULL: not known */
	int reported;        /* an OK block: credit and last_reload are what it reported */
	uint32_t credit, last_reload;
};
/*
 * kh_store_block_seen with the block's hash and what it reported. When (ua, block_seq) was
 * recorded before: KH_ERR_EXISTS, nothing changes, *prev (may be NULL) gets the recorded verdict
 * and *same (may be NULL) is 1 when the recorded block has the same hash (or either hash is not
 * known), 0 when it is another block under the same number.
 */
KH_WARN_UNUSED kh_err kh_store_block_record(struct kh_store *s, const struct kh_store_block *b,
					    enum kh_store_verdict *prev, int *same);
/*
 * What card ua's newest accepted block reported (migration 5): *found 0 when the card has no
 * accepted block, or its newest predates the migration (then credit and last_reload are 0).
 */
KH_WARN_UNUSED kh_err kh_store_block_reported(struct kh_store *s, uint32_t ua, int *found, uint32_t *block_seq,
					      uint32_t *credit, uint32_t *last_reload);
/* Record another genuine block (hash, 32 bytes) under (ua, block_seq), already accepted: KH_OK the
 * first time, KH_ERR_EXISTS when this very block was recorded so before (nothing changes). */
KH_WARN_UNUSED kh_err kh_store_block_clone(struct kh_store *s, uint32_t ua, uint32_t block_seq,
					   const uint8_t hash[static 32], int64_t session_id);
/* Flag card ua as rolled back or cloned: a second, different block numbered block_seq. The first
 * alarm's time is kept; the number is the latest. KH_ERR_NOTFOUND for an unknown card. */
KH_WARN_UNUSED kh_err kh_store_card_clone_alarm(struct kh_store *s, uint32_t ua, uint32_t block_seq);
/*
 * Take card ua's next credit reload id (kh_store_card_next_reload) and record the reload's
 * amount with it, in the caller's transaction: every ADD CREDIT the center queues goes this way.
 */
KH_WARN_UNUSED kh_err kh_store_card_reload_add(struct kh_store *s, uint32_t ua, uint32_t amount,
					       uint32_t *reload_id);
/* *sum: the amounts of card ua's recorded reloads with a reload id above above_id. */
KH_WARN_UNUSED kh_err kh_store_card_reloads_above(struct kh_store *s, uint32_t ua, uint32_t above_id, uint64_t *sum);
/* The catalogue price of event id; KH_ERR_NOTFOUND for an event the catalogue does not list. */
KH_WARN_UNUSED kh_err kh_store_event_price(struct kh_store *s, uint32_t id, uint32_t *price);


/* ---- idempotency ---- */

#define KH_STORE_IDEM_KEY_MAX 128
#define KH_STORE_IDEM_HASH_LEN 32

/*
 * The stored answer to the request with this idempotency key (1..KH_STORE_IDEM_KEY_MAX bytes of
 * text), as a new buffer (free it with free()). KH_ERR_NOTFOUND when the key is new;
 * KH_ERR_IDEM_MISMATCH when the key was used for a request with another hash (the SHA-256 of
 * the request the service defines).
 */
KH_WARN_UNUSED kh_err kh_store_idem_get(struct kh_store *s, const char *key,
					const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], uint8_t **resp,
					size_t *len);
/*
 * Store the answer to a request: KH_ERR_EXISTS when the key already has one (the first answer
 * stays). Run it in the transaction that made the change it answers for.
 */
KH_WARN_UNUSED kh_err kh_store_idem_put(struct kh_store *s, const char *key,
					const uint8_t hash[static KH_STORE_IDEM_HASH_LEN], const uint8_t *resp,
					size_t len);
/*
 * Forget the oldest answers written before `before` (Unix seconds), at most max of them, and as
 * many finished bulk jobs (bulk_jobs, done) last moved before then: a bounded cost, run in the
 * caller's transaction by each writer of a new answer. *purged (may be NULL) gets the number of
 * answers deleted.
 */
KH_WARN_UNUSED kh_err kh_store_idem_expire(struct kh_store *s, int64_t before, unsigned max, unsigned *purged);

/* ---- management center: subscribers, cards, catalogue, rights, credit, keys ----
 *
 * Written by src/center/sms/ (docs/internals/sms.md). Each changing operation is one
 * transaction or joins the caller's (kh_store_run_tx). Listing operations call fn once per row
 * from one SELECT; fn must not call into s (the statement is still running), and strings in the
 * rows are valid during the call only. Names are 1..KH_STORE_NAME_MAX bytes of text.
 */

#define KH_STORE_NAME_MAX 200

/* Add a subscriber; *id gets its id. */
KH_WARN_UNUSED kh_err kh_store_subscriber_add(struct kh_store *s, const char *name, int64_t *id);
/* Name (into name, cap bytes, NUL terminated) and creation time; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_subscriber_get(struct kh_store *s, int64_t id, char *name, size_t cap,
					      int64_t *created_at);

/*
 * A card's state, kind and why it was closed, as the center compares them. The database and
 * the API keep their names (kh_card_state_name ...); the store converts at its boundary, and a
 * name it does not know in a row is KH_ERR_DB.
 */
enum kh_card_state { KH_CARD_ISSUED = 1, KH_CARD_ACTIVE, KH_CARD_REPLACED, KH_CARD_CLOSED };
enum kh_card_kind { KH_CARD_KIND_CARD = 1, KH_CARD_KIND_CAM };
enum kh_card_closed { KH_CARD_OPEN = 0, KH_CARD_FORFEITED, KH_CARD_RECOVERED };
/* "issued", "active", "replaced", "closed"; "card", "cam"; "", "forfeited", "recovered".
 * NULL for a value outside the enum. */
const char *kh_card_state_name(enum kh_card_state v);
const char *kh_card_kind_name(enum kh_card_kind v);
const char *kh_card_closed_name(enum kh_card_closed v);
/* The value a name stands for: KH_OK, or KH_ERR_INVAL for any other text (NULL included). */
KH_WARN_UNUSED kh_err kh_card_state_parse(const char *name, enum kh_card_state *v);
KH_WARN_UNUSED kh_err kh_card_kind_parse(const char *name, enum kh_card_kind *v);

struct kh_store_card {
	uint32_t ua;
	enum kh_card_kind kind;
	int64_t subscriber_id;  /* 0: not assigned */
	enum kh_card_state state;
	int export_authorised;  /* 0 or 1 */
	uint32_t replaced_by;   /* 0: none */
	enum kh_card_closed closed_reason;
	uint32_t last_reload_id;
	int64_t created_at;
	int64_t clone_alarm_at;   /* 0: none; else when a second, different block under a known
				   * number came in (a rolled-back or cloned card) */
	uint32_t clone_block_seq; /* that block's number */
};
typedef kh_err (*kh_store_card_fn)(void *arg, const struct kh_store_card *c);

/* Register a card (state 'issued') with its DER certificate; KH_ERR_EXISTS when ua is known. */
KH_WARN_UNUSED kh_err kh_store_card_add(struct kh_store *s, uint32_t ua, enum kh_card_kind kind,
					const uint8_t *cert, size_t len);
/* One card; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_card_get(struct kh_store *s, uint32_t ua, struct kh_store_card *c);
/* The card's certificate (DER) into der (cap bytes); KH_ERR_NOTFOUND, KH_ERR_BUF. */
KH_WARN_UNUSED kh_err kh_store_card_cert(struct kh_store *s, uint32_t ua, uint8_t *der, size_t cap, size_t *len);
/*
 * Write subscriber_id, state, export_authorised, replaced_by and closed_reason of c->ua (the
 * other fields are ignored); KH_ERR_NOTFOUND; KH_ERR_DB_CONSTRAINT for a value the schema refuses.
 */
KH_WARN_UNUSED kh_err kh_store_card_update(struct kh_store *s, const struct kh_store_card *c);
/* Take the card's next credit reload id (1, 2, ...), durable with the caller's transaction. */
KH_WARN_UNUSED kh_err kh_store_card_next_reload(struct kh_store *s, uint32_t ua, uint32_t *reload_id);
/* Cards of a subscriber (by UA). */
KH_WARN_UNUSED kh_err kh_store_cards_of(struct kh_store *s, int64_t subscriber_id, kh_store_card_fn fn, void *arg);

/* Catalogue: products, channels, pay-per-view events. An id of 0 asks for the next free one. */
struct kh_store_product {
	uint32_t id;
	const char *name;
};
struct kh_store_channel {
	uint32_t id;
	const char *name;
	uint32_t product_id;
};
struct kh_store_event {
	uint32_t id;
	const char *name;
	uint32_t price;
	uint32_t channel_id;
	int64_t start, end; /* [start, end) */
};
typedef kh_err (*kh_store_product_fn)(void *arg, const struct kh_store_product *p);
typedef kh_err (*kh_store_channel_fn)(void *arg, const struct kh_store_channel *c);
typedef kh_err (*kh_store_event_fn)(void *arg, const struct kh_store_event *e);
/*
 * Add one; *id (may be NULL) gets the id used. KH_ERR_EXISTS for an id in use, KH_ERR_NOTFOUND
 * for an unknown product (channel) or channel (event), KH_ERR_INVAL for start >= end.
 */
KH_WARN_UNUSED kh_err kh_store_product_add(struct kh_store *s, const struct kh_store_product *p, uint32_t *id);
KH_WARN_UNUSED kh_err kh_store_channel_add(struct kh_store *s, const struct kh_store_channel *c, uint32_t *id);
KH_WARN_UNUSED kh_err kh_store_event_add(struct kh_store *s, const struct kh_store_event *e, uint32_t *id);
/* Every product, by id (the operator's paged list: kh_store_products_page). */
KH_WARN_UNUSED kh_err kh_store_products(struct kh_store *s, kh_store_product_fn fn, void *arg);
/* KH_OK when the product exists, KH_ERR_NOTFOUND otherwise. */
KH_WARN_UNUSED kh_err kh_store_product_exists(struct kh_store *s, uint32_t id);

/* Subscriptions: one right per (subscriber, product), replaced by a renewal. */
struct kh_store_subscription {
	int64_t subscriber_id;
	uint32_t product_id;
	int64_t start, end; /* [start, end) */
};
typedef kh_err (*kh_store_subscription_fn)(void *arg, const struct kh_store_subscription *u);
/* Insert or replace; KH_ERR_NOTFOUND for an unknown subscriber or product, KH_ERR_INVAL start >= end. */
KH_WARN_UNUSED kh_err kh_store_subscription_put(struct kh_store *s, const struct kh_store_subscription *u);
/* Remove; KH_ERR_NOTFOUND when there was none. */
KH_WARN_UNUSED kh_err kh_store_subscription_del(struct kh_store *s, int64_t subscriber_id, uint32_t product_id);
KH_WARN_UNUSED kh_err kh_store_subscriptions_of(struct kh_store *s, int64_t subscriber_id,
						kh_store_subscription_fn fn, void *arg);

/* The credit policy (one row). */
KH_WARN_UNUSED kh_err kh_store_credit_policy_get(struct kh_store *s, uint32_t *initial_credit, uint32_t *reload_amount);
KH_WARN_UNUSED kh_err kh_store_credit_policy_set(struct kh_store *s, uint32_t initial_credit, uint32_t reload_amount);

/* Service keys (secret). */
struct kh_store_service_key {
	uint8_t key_id;
	uint32_t version;
	const uint8_t *key; /* 32 bytes; NULL in kh_store_service_key_list */
	int64_t created_at;
};
typedef kh_err (*kh_store_service_key_fn)(void *arg, const struct kh_store_service_key *k);
/* Add a version; KH_ERR_EXISTS when (key_id, version) is taken. */
KH_WARN_UNUSED kh_err kh_store_service_key_add(struct kh_store *s, uint8_t key_id, uint32_t version,
					       const uint8_t key[static 32]);
/* Highest version of key_id; KH_ERR_NOTFOUND when the id has none. */
KH_WARN_UNUSED kh_err kh_store_service_key_latest(struct kh_store *s, uint8_t key_id, uint32_t *version);
/*
 * The current keys: the two highest versions of each key id (what a card keeps), by id then
 * version, with the key bytes. The caller must not keep the key beyond the call.
 */
KH_WARN_UNUSED kh_err kh_store_service_keys_current(struct kh_store *s, kh_store_service_key_fn fn, void *arg);
/* Every (key_id, version), without the key bytes. */
KH_WARN_UNUSED kh_err kh_store_service_key_list(struct kh_store *s, kh_store_service_key_fn fn, void *arg);
/* One version's key bytes; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_service_key_get(struct kh_store *s, uint8_t key_id, uint32_t version,
					       uint8_t key[static 32]);

/* ---- service key rotation in chunks (migration 4, src/store/ops_rotation.c) ---- */

struct kh_store_rotation {
	uint8_t key_id;
	uint32_t version;
	uint32_t last_ua; /* SET KEY queued for every active card up to this UA */
	uint32_t emms;    /* queued so far */
	int done;
};
/* The job rotating key_id to version; KH_ERR_NOTFOUND when there is none. */
KH_WARN_UNUSED kh_err kh_store_rotation_get(struct kh_store *s, uint8_t key_id, uint32_t version,
					    struct kh_store_rotation *out);
/* Create or move the job (in the transaction of the EMMs it accounts for). */
KH_WARN_UNUSED kh_err kh_store_rotation_put(struct kh_store *s, const struct kh_store_rotation *j);
/* The UAs of at most max active cards above after, ascending, into ua; *n how many. */
KH_WARN_UNUSED kh_err kh_store_active_cards_after(struct kh_store *s, uint32_t after, size_t max, uint32_t *ua,
						  size_t *n);

/* Invoices of a subscriber, by time then id. */
struct kh_store_invoice {
	int64_t id;
	int64_t subscriber_id;
	uint32_t ua;
	uint32_t event_id;
	uint32_t price;
	int64_t time;
	int64_t created_at;
	uint32_t block_price; /* the price the card's block stated */
	char flag[16];        /* "" or "price_mismatch", "unknown_event" */
};
typedef kh_err (*kh_store_invoice_fn)(void *arg, const struct kh_store_invoice *i);
KH_WARN_UNUSED kh_err kh_store_invoices_of(struct kh_store *s, int64_t subscriber_id, kh_store_invoice_fn fn,
					   void *arg);

/* ---- upload sessions (seed 001, docs/protocols/upload.md) ---- */

/* Open a session for card ua with the center's nonce (16..64 bytes), made at created_at (the
 * center's clock, Unix seconds); *id gets its id. */
KH_WARN_UNUSED kh_err kh_store_upload_open(struct kh_store *s, uint32_t ua, const uint8_t *nonce, size_t n,
					   int64_t created_at, int64_t *id);
/* A session's card, opening time and closing time (0: open), in one read; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_upload_state(struct kh_store *s, int64_t id, uint32_t *ua, int64_t *created_at,
					    int64_t *closed_at);
/* *n: card ua's sessions not yet processed and opened at or after since (the unexpired ones). */
KH_WARN_UNUSED kh_err kh_store_upload_count_open(struct kh_store *s, uint32_t ua, int64_t since, unsigned *n);
/* Delete card ua's sessions never processed and opened before before; *purged (may be NULL)
 * gets how many. A processed session stays: its blocks name it. */
KH_WARN_UNUSED kh_err kh_store_upload_purge(struct kh_store *s, uint32_t ua, int64_t before, unsigned *purged);
/* Delete all but the newest keep of card ua's unprocessed sessions; *evicted (may be NULL) gets
 * how many went. */
KH_WARN_UNUSED kh_err kh_store_upload_evict(struct kh_store *s, uint32_t ua, unsigned keep, unsigned *evicted);
/* A session's card, nonce (into nonce, cap bytes) and closing time (0: open); KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_upload_get(struct kh_store *s, int64_t id, uint32_t *ua, uint8_t *nonce, size_t cap,
					  size_t *n, int64_t *closed_at);
/* Mark a session closed (its upload was processed). */
KH_WARN_UNUSED kh_err kh_store_upload_close(struct kh_store *s, int64_t id);
/*
 * Record one purchase a card's block carried, and invoice it to subscriber_id (0: nobody to
 * invoice). Both are keyed by (ua, event, time): a purchase seen again, in another block or
 * another session, changes nothing and *invoiced is 0; otherwise 1. The block (block_ua,
 * block_seq) must have been recorded with kh_store_block_seen in the same transaction.
 */
KH_WARN_UNUSED kh_err kh_store_purchase_record(struct kh_store *s, uint32_t ua, uint32_t event, uint32_t price,
					       int64_t time, uint32_t block_ua, uint32_t block_seq,
					       int64_t subscriber_id, int *invoiced);
/* One purchase, and the price the center invoices it at. */
struct kh_store_purchase {
	uint32_t ua, event;
	uint32_t price; /* what the card's block stated */
	int64_t time;
	uint32_t block_ua, block_seq;
	int64_t subscriber_id;   /* 0: nobody to invoice */
	uint32_t invoice_price;  /* the center's (its catalogue's) */
	const char *flag;        /* NULL, "price_mismatch" or "unknown_event": recorded on the invoice */
};
/* kh_store_purchase_record, invoiced at p->invoice_price with p->flag (and the block's price). */
KH_WARN_UNUSED kh_err kh_store_purchase_invoice(struct kh_store *s, const struct kh_store_purchase *p,
						int *invoiced);

/*
 * One address's EMMs with a sequence number above above_seq, in sequence order, at most limit
 * (0: no limit): what a card that has applied up to above_seq still needs.
 */
KH_WARN_UNUSED kh_err kh_store_emm_fetch_addr_seq(struct kh_store *s, uint8_t addr_type, uint32_t addr,
						  uint32_t above_seq, unsigned limit, kh_store_emm_fn fn, void *arg);
/* As kh_store_emm_fetch, for one address only (a decoder with a line fetching its card's). */
KH_WARN_UNUSED kh_err kh_store_emm_fetch_addr(struct kh_store *s, uint8_t addr_type, uint32_t addr,
					      int64_t since_id, unsigned limit, kh_store_emm_fn fn, void *arg,
					      int64_t *last_id);

/* ==== bulk subscription (src/store/ops_bulk.c; docs/internals/sms.md) ====
 *
 * POST /v1/products/{id}/subscriptions works through its subscribers by ascending id in chunks,
 * one transaction each. These operations join the caller's transaction (kh_store_run_tx): the
 * chunk's handler reads its targets, writes subscriptions and EMMs, and records its progress
 * with kh_store_bulk_job_put, all in one commit.
 */

/* One subscriber a bulk job reaches, with what the 32-rights cap needs to know. */
struct kh_store_bulk_target {
	int64_t subscriber_id;
	uint32_t ua;            /* the subscriber's active card; 0: none */
	unsigned subscriptions; /* how many products the subscriber holds now */
	int has_product;        /* 1: already holds the job's product (a renewal) */
	int closed;             /* 1: the subscriber is closed (migration 6): it takes no subscription */
};
typedef kh_err (*kh_store_bulk_target_fn)(void *arg, const struct kh_store_bulk_target *t);

/*
 * The subscribers with an active card and after_id < id <= max_id, by id, at most limit (> 0),
 * with their card and their subscriptions as they stand for product. A subscriber with two
 * active cards (the schema does not forbid it) comes once, with the lowest UA. fn must not
 * call into s.
 */
KH_WARN_UNUSED kh_err kh_store_bulk_targets_active(struct kh_store *s, uint32_t product, int64_t after_id,
						   int64_t max_id, unsigned limit, kh_store_bulk_target_fn fn,
						   void *arg);
/* The same for one subscriber, active card or not (ua 0); KH_ERR_NOTFOUND for an unknown id. */
KH_WARN_UNUSED kh_err kh_store_bulk_target(struct kh_store *s, int64_t subscriber_id, uint32_t product,
					   struct kh_store_bulk_target *t);
/* The highest subscriber id there is (0: no subscriber). */
KH_WARN_UNUSED kh_err kh_store_subscriber_max_id(struct kh_store *s, int64_t *id);

/*
 * The rights renewal (src/center/sms/sms_rights.c) walks one product's subscriptions the same way:
 * subscribers with an active card and after_id < id <= max_id, by id, at most limit (> 0), whose
 * subscription to product started before started_before and ends after ends_after.
 */
struct kh_store_renew_target {
	int64_t subscriber_id;
	uint32_t ua;        /* the subscriber's active card (the lowest UA when two) */
	int64_t start, end; /* the subscription */
};
typedef kh_err (*kh_store_renew_target_fn)(void *arg, const struct kh_store_renew_target *t);
KH_WARN_UNUSED kh_err kh_store_renew_targets(struct kh_store *s, uint32_t product, int64_t after_id, int64_t max_id,
					     int64_t started_before, int64_t ends_after, unsigned limit,
					     kh_store_renew_target_fn fn, void *arg);

/* A bulk job's progress, stored under its idempotency key. */
struct kh_store_bulk_job {
	uint32_t product_id;
	int64_t start, end;           /* the right granted, [start, end) */
	int all;                      /* 1: every subscriber with an active card; 0: a list */
	int64_t max_subscriber_id;    /* the job covers ids up to this one */
	int64_t last_subscriber_id;   /* the chunks committed so far covered ids up to this one */
	uint32_t subscribers;         /* subscriptions recorded */
	uint32_t emms_queued;
	uint32_t skipped;             /* subscribers at the cap, left as they were */
	uint32_t chunks;              /* transactions committed */
	int done;
};
/*
 * The job under key (1..KH_STORE_IDEM_KEY_MAX bytes) into *job. KH_ERR_NOTFOUND when the key has
 * no job; KH_ERR_IDEM_MISMATCH when it has one for a request with another hash.
 */
KH_WARN_UNUSED kh_err kh_store_bulk_job_get(struct kh_store *s, const char *key,
					    const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
					    struct kh_store_bulk_job *job);
/*
 * Record job under key: created on the first call, replaced by the next ones. KH_ERR_IDEM_MISMATCH
 * (nothing written) when the key holds a job for another request hash. Run it in the chunk's
 * transaction, so the progress and the rows it counts commit together.
 */
KH_WARN_UNUSED kh_err kh_store_bulk_job_put(struct kh_store *s, const char *key,
					    const uint8_t hash[static KH_STORE_IDEM_HASH_LEN],
					    const struct kh_store_bulk_job *job);

/* ==== the operator's lists, reads, renames and deletions (src/store/ops_list.c, ops_edit.c) ====
 *
 * Lists are keyset pages: each walks its rows in key order strictly after a position (the key of
 * the last row of the previous page), never by OFFSET, so a page neither repeats nor skips a
 * row when rows are added meanwhile. A call hands fn at most page->limit rows, from one SELECT
 * (fn must not call into s; strings are valid during the call), and sets *more to 1 when at
 * least one more row follows them. Filters are optional. KH_ERR_INVAL for a NULL argument or a
 * limit outside 1..KH_STORE_PAGE_MAX. Docs: docs/internals/store.md "Lists".
 */
#define KH_STORE_PAGE_MAX 1000u

struct kh_store_page {
	unsigned limit;        /* rows wanted, 1..KH_STORE_PAGE_MAX */
	int after_set;         /* 0: from the first row; 1: after the position below */
	int64_t after;         /* the last row's id (UA for cards, product id for subscriptions;
				* invoices: its time) */
	int64_t after_id;      /* invoices only: the last row's id (rows come by time, then id) */
	const char *after_key; /* bulk jobs only: the last row's key */
};

/* A subscriber as the lists show it. */
struct kh_store_subscriber {
	int64_t id;
	const char *name;
	int64_t created_at;
	int64_t closed_at; /* 0: open */
};
typedef kh_err (*kh_store_subscriber_fn)(void *arg, const struct kh_store_subscriber *u);
/* Subscribers by id; name_prefix (NULL: all) keeps those whose name starts with its bytes. */
KH_WARN_UNUSED kh_err kh_store_subscribers_page(struct kh_store *s, const char *name_prefix,
						const struct kh_store_page *page, kh_store_subscriber_fn fn,
						void *arg, int *more);
/* One subscriber (migration 6: with closed_at); KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_subscriber_read(struct kh_store *s, int64_t id, kh_store_subscriber_fn fn,
					       void *arg);
/* *closed_at: when the subscriber was closed, 0 while open; KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_subscriber_closed(struct kh_store *s, int64_t id, int64_t *closed_at);

/* Cards by UA, keeping those that match every filter given. */
struct kh_store_card_filter {
	enum kh_card_state state; /* 0: any */
	enum kh_card_kind kind;   /* 0: any */
	int64_t subscriber_id; /* 0: any */
};
KH_WARN_UNUSED kh_err kh_store_cards_page(struct kh_store *s, const struct kh_store_card_filter *f,
					  const struct kh_store_page *page, kh_store_card_fn fn, void *arg,
					  int *more);

/* The catalogue by id; channels of one product when has_product; events whose start is in
 * [since, until) (INT64_MIN, INT64_MAX: all). One row by id: KH_ERR_NOTFOUND when there is none. */
KH_WARN_UNUSED kh_err kh_store_products_page(struct kh_store *s, const struct kh_store_page *page,
					     kh_store_product_fn fn, void *arg, int *more);
KH_WARN_UNUSED kh_err kh_store_channels_page(struct kh_store *s, int has_product, uint32_t product,
					     const struct kh_store_page *page, kh_store_channel_fn fn, void *arg,
					     int *more);
KH_WARN_UNUSED kh_err kh_store_events_page(struct kh_store *s, int64_t since, int64_t until,
					   const struct kh_store_page *page, kh_store_event_fn fn, void *arg,
					   int *more);
KH_WARN_UNUSED kh_err kh_store_product_read(struct kh_store *s, uint32_t id, kh_store_product_fn fn, void *arg);
KH_WARN_UNUSED kh_err kh_store_channel_read(struct kh_store *s, uint32_t id, kh_store_channel_fn fn, void *arg);
KH_WARN_UNUSED kh_err kh_store_event_read(struct kh_store *s, uint32_t id, kh_store_event_fn fn, void *arg);

/* Invoices by time then id, of one subscriber (subscriber_id 0: everyone's, those invoiced to
 * nobody with subscriber_id 0), whose time is in [since, until). */
KH_WARN_UNUSED kh_err kh_store_invoices_page(struct kh_store *s, int64_t subscriber_id, int64_t since,
					     int64_t until, const struct kh_store_page *page,
					     kh_store_invoice_fn fn, void *arg, int *more);
/* One subscriber's subscriptions by product id. */
KH_WARN_UNUSED kh_err kh_store_subscriptions_page(struct kh_store *s, int64_t subscriber_id,
						  const struct kh_store_page *page, kh_store_subscription_fn fn,
						  void *arg, int *more);

/* An upload session as stored: only sessions whose upload was accepted are (opening one stores
 * nothing). Never its nonce. */
struct kh_store_upload_session {
	int64_t id;
	uint32_t ua;
	int64_t created_at; /* when the session was opened */
	int64_t closed_at;  /* when its upload was processed; 0: not yet */
};
typedef kh_err (*kh_store_upload_session_fn)(void *arg, const struct kh_store_upload_session *u);
/* Sessions by id; of card ua only when has_ua. */
KH_WARN_UNUSED kh_err kh_store_upload_sessions_page(struct kh_store *s, int has_ua, uint32_t ua,
						    const struct kh_store_page *page,
						    kh_store_upload_session_fn fn, void *arg, int *more);

/* A bulk job's row (bulk subscriptions and the rights renewal's progress). */
struct kh_store_bulk_job_info {
	const char *key;
	struct kh_store_bulk_job job;
	int64_t created_at, updated_at;
};
typedef kh_err (*kh_store_bulk_job_fn)(void *arg, const struct kh_store_bulk_job_info *j);
/* Jobs by key (page->after_key). One by key: KH_ERR_NOTFOUND. */
KH_WARN_UNUSED kh_err kh_store_bulk_jobs_page(struct kh_store *s, const struct kh_store_page *page,
					      kh_store_bulk_job_fn fn, void *arg, int *more);
KH_WARN_UNUSED kh_err kh_store_bulk_job_read(struct kh_store *s, const char *key, kh_store_bulk_job_fn fn,
					     void *arg);

/* ---- changes the operator makes to rows (ops_edit.c): each one transaction, or the caller's ---- */

/* What a rename or a deletion names. */
enum kh_store_row {
	KH_STORE_SUBSCRIBER,
	KH_STORE_PRODUCT,
	KH_STORE_CHANNEL,
	KH_STORE_EVENT,
	KH_STORE_CARD, /* kh_store_delete only: a card still issued */
};
/* Set the name of one row (not a card); KH_ERR_NOTFOUND, KH_ERR_INVAL for a bad name. */
KH_WARN_UNUSED kh_err kh_store_rename(struct kh_store *s, enum kh_store_row what, int64_t id, const char *name);
/*
 * Delete one product, channel, event or card (never a subscriber: they are closed), and with a
 * product its finished bulk jobs. No rule is checked here beyond the schema's: the caller checks
 * kh_store_refers in the same transaction first. A card is deleted only while issued. A row still
 * referred to is KH_ERR_DB_CONSTRAINT; KH_ERR_NOTFOUND when there is none (or the card is not issued).
 */
KH_WARN_UNUSED kh_err kh_store_delete(struct kh_store *s, enum kh_store_row what, int64_t id);
/* Close a subscriber at time at; KH_ERR_NOTFOUND, KH_ERR_EXISTS when it is closed already. */
KH_WARN_UNUSED kh_err kh_store_subscriber_close(struct kh_store *s, int64_t id, int64_t at);
/* Set an event's price and times (name, channel unchanged); KH_ERR_NOTFOUND, KH_ERR_INVAL start >= end. */
KH_WARN_UNUSED kh_err kh_store_event_update(struct kh_store *s, uint32_t id, uint32_t price, int64_t start,
					    int64_t end);

/* What may hold a row in place: *yes is 1 when at least one such row exists. */
enum kh_store_ref {
	KH_STORE_REF_ACTIVE_CARD,       /* subscriber id: one of its cards is active */
	KH_STORE_REF_RUNNING_SUB,       /* subscriber id: a subscription not ended at `now` */
	KH_STORE_REF_PRODUCT_SUB,       /* product id: a subscription to it */
	KH_STORE_REF_PRODUCT_CHANNEL,   /* product id: a channel of it */
	KH_STORE_REF_PRODUCT_JOB,       /* product id: an unfinished bulk job or renewal of it */
	KH_STORE_REF_CHANNEL_EVENT,     /* channel id: an event on it */
	KH_STORE_REF_EVENT_PURCHASE,    /* event id: a purchase of it by any card */
	KH_STORE_REF_CARD_USAGE,        /* UA: usage blocks, purchases, reloads, or a card it replaced */
};
KH_WARN_UNUSED kh_err kh_store_refers(struct kh_store *s, enum kh_store_ref what, int64_t id, int64_t now, int *yes);

/*
 * A readiness probe: whether the database takes a write now. The path still names the file this
 * connection opened (else KH_ERR_DB_GONE); it, its directory, -wal and -shm are still private and
 * writable as kh_store_check wants (KH_ERR_IO, KH_ERR_KEYFILE_PERM, KH_ERR_NOTFOUND...); and a
 * write transaction opens and writes within wait_ms (KH_ERR_DB_BUSY when the lock stays taken),
 * then is rolled back: nothing changes. KH_ERR_INVAL inside a transaction. On PostgreSQL only
 * the write, with lock_timeout at wait_ms for its transaction.
 */
KH_WARN_UNUSED kh_err kh_store_probe(struct kh_store *s, unsigned wait_ms);

/* ---- the store tools: copying and checking a store (keyhole store; src/store/copy.c, check.c) ---- */

/*
 * Open url as it is, for the tools: an SQLite file that does not exist is KH_ERR_NOTFOUND (never
 * created) and no schema is migrated (kh_store_schema_version says which it is; a newer one is
 * still KH_ERR_VERSION, another application's KH_ERR_DB_FOREIGN). Otherwise as kh_store_open.
 */
KH_WARN_UNUSED kh_err kh_store_open_as_is(const char *url, struct kh_store **out);

/* The tables a copy carries, in the order it carries them (every table before those that refer
 * to it), and their columns: i < kh_store_tables_count(); NULL beyond. cols is "a, b, c", the
 * primary key's columns first. For the test that compares them with the live schema. */
size_t kh_store_tables_count(void);
const char *kh_store_table_name(size_t i, const char **cols);

/* One table of a copy: rows and checksum read back from each side (SHA256 of the table's
 * canonical encoding, docs/internals/store.md "Copying and checking a store"). */
struct kh_store_copy_table {
	const char *table;
	int64_t rows_from, rows_to;
	uint8_t sum_from[32], sum_to[32];
	int same; /* rows and checksums equal */
};
/* Called once per table, in copy order, after the verification; return KH_OK to go on. */
typedef kh_err (*kh_store_copy_fn)(void *arg, const struct kh_store_copy_table *t);
/*
 * Copy every row of the store at from into the store at to, offline (nothing else may write to
 * either meanwhile), and verify it. from is opened as it is: its schema must be this code's
 * latest (KH_ERR_VERSION: open it with this version first); it is only read, in one read
 * transaction. to must be an empty store: a database without tables (PostgreSQL), or a file that
 * does not exist (SQLite; created 0600), are migrated first; a store at this code's version must
 * hold no row in any table but the migration's own credit policy (else KH_ERR_EXISTS), an older
 * one is refused (KH_ERR_VERSION). The same database twice is KH_ERR_INVAL. Every table is copied
 * in one transaction on to, PostgreSQL's identity sequences moved past the copied ids (and past
 * ids from's generators had handed out), then each table is read back from both sides and its
 * rows and checksum compared before the commit: a difference is KH_ERR_DB and nothing is
 * committed. fn (may be NULL) gets each table's figures. On failure why (cap bytes) holds one
 * line saying what (never a value, never a password), and a file this call created is removed.
 */
KH_WARN_UNUSED kh_err kh_store_copy(const char *from, const char *to, kh_store_copy_fn fn, void *arg, char *why,
				    size_t cap);
/* The checksum of every table of s, as kh_store_copy computes it, in one read transaction. */
KH_WARN_UNUSED kh_err kh_store_sums(struct kh_store *s, kh_store_copy_fn fn, void *arg);

/* One invariant a store check found broken. Strings are valid during the call only. */
struct kh_store_finding {
	const char *name;     /* short, stable: "emm_seq_unique", "sqlite_integrity", ... */
	const char *table;    /* the table at fault */
	const char *what;     /* one line: the rule that does not hold */
	int64_t rows;         /* how many rows (or keys) break it */
	const char *examples; /* up to three keys, "ua=12 block_seq=3; ..." (never a secret column) */
};
typedef kh_err (*kh_store_finding_fn)(void *arg, const struct kh_store_finding *f);
/*
 * Check s's integrity and the center's invariants (docs/internals/store.md, "Copying and checking
 * a store"), reading only, in one read transaction: fn (may be NULL) gets each broken one.
 * *checked counts the invariants looked at, *broken those found broken (either may be NULL). A
 * schema older than this code's is one broken invariant and nothing else is checked. KH_OK
 * whether or not some are broken; another code when the store could not be read.
 */
KH_WARN_UNUSED kh_err kh_store_invariants(struct kh_store *s, kh_store_finding_fn fn, void *arg, unsigned *checked,
					  unsigned *broken);

#endif
