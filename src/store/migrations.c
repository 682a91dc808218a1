/*
 * The store's schema as an ordered list of migrations (docs/internals/store.md). Each entry is
 * applied once, in its own transaction, and recorded in schema_migrations; an applied entry is
 * never edited: a change is a new entry at the end. The SQL is SQLite's dialect (STRICT tables),
 * run as it is on SQLite; on PostgreSQL, kh__ddl_pg at the end of this file translates it, and
 * its rules are the whole of the difference between the two schemas.
 *
 * Numbers that travel in EMMs, ECMs and usage blocks (UA, product, event, price, seq) are u32 on
 * the wire; CHECK constraints keep them in range so a row can always be sent. Times are Unix
 * seconds. Ids other services or clients refer to (subscribers, invoices, the EMM queue, upload
 * sessions) are AUTOINCREMENT so a deleted id is never handed out again.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define U32(col) "CHECK (" col " BETWEEN 0 AND 4294967295)"

static const char migration_1[] =
	"PRAGMA application_id = 1263026993;\n" /* KH__STORE_APP_ID, "KHC1" */

	"CREATE TABLE subscribers (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  name TEXT NOT NULL,\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT;\n"

	"CREATE TABLE cards (\n"
	"  ua INTEGER PRIMARY KEY " U32("ua") ",\n"
	"  role TEXT NOT NULL CHECK (role IN ('card', 'cam')),\n"
	"  cert BLOB NOT NULL,\n"
	"  subscriber_id INTEGER REFERENCES subscribers(id),\n"
	"  state TEXT NOT NULL DEFAULT 'issued'\n"
	"    CHECK (state IN ('issued', 'active', 'replaced', 'closed')),\n"
	"  export_authorised INTEGER NOT NULL DEFAULT 0 CHECK (export_authorised IN (0, 1)),\n"
	"  replaced_by INTEGER REFERENCES cards(ua),\n"
	"  closed_reason TEXT,\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE INDEX cards_subscriber ON cards(subscriber_id);\n"

	"CREATE TABLE products (\n"
	"  id INTEGER PRIMARY KEY " U32("id") ",\n"
	"  name TEXT NOT NULL\n"
	") STRICT;\n"

	"CREATE TABLE channels (\n"
	"  id INTEGER PRIMARY KEY " U32("id") ",\n"
	"  name TEXT NOT NULL,\n"
	"  product_id INTEGER REFERENCES products(id)\n"
	") STRICT;\n"
	"CREATE INDEX channels_product ON channels(product_id);\n"

	"CREATE TABLE events (\n"
	"  id INTEGER PRIMARY KEY " U32("id") ",\n"
	"  name TEXT NOT NULL,\n"
	"  price INTEGER NOT NULL " U32("price") ",\n"
	"  channel_id INTEGER NOT NULL REFERENCES channels(id),\n"
	"  start_time INTEGER NOT NULL,\n"
	"  end_time INTEGER NOT NULL,\n"
	"  CHECK (start_time < end_time)\n"
	") STRICT;\n"
	"CREATE INDEX events_channel ON events(channel_id, start_time);\n"

	"CREATE TABLE subscriptions (\n"
	"  subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),\n"
	"  product_id INTEGER NOT NULL REFERENCES products(id),\n"
	"  start_time INTEGER NOT NULL,\n"
	"  end_time INTEGER NOT NULL,\n"
	"  CHECK (start_time < end_time),\n"
	"  PRIMARY KEY (subscriber_id, product_id)\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX subscriptions_product ON subscriptions(product_id);\n"

	"CREATE TABLE credit_policy (\n"
	"  id INTEGER PRIMARY KEY CHECK (id = 1),\n"
	"  initial_credit INTEGER NOT NULL " U32("initial_credit") ",\n"
	"  reload_amount INTEGER NOT NULL " U32("reload_amount") "\n"
	") STRICT;\n"
	"INSERT INTO credit_policy (id, initial_credit, reload_amount) VALUES (1, 0, 0);\n"

	/* Secret: the database file is created 0600 and refused when others can read it. */
	"CREATE TABLE service_keys (\n"
	"  key_id INTEGER NOT NULL CHECK (key_id BETWEEN 0 AND 255),\n"
	"  version INTEGER NOT NULL " U32("version") ",\n"
	"  key BLOB NOT NULL CHECK (length(key) = 32),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  PRIMARY KEY (key_id, version)\n"
	") STRICT, WITHOUT ROWID;\n"

	"CREATE TABLE emm_queue (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  address_type INTEGER NOT NULL CHECK (address_type IN (0, 1, 2)),\n"
	"  address INTEGER NOT NULL " U32("address") ",\n"
	"  seq INTEGER NOT NULL CHECK (seq BETWEEN 1 AND 4294967295),\n"
	"  section BLOB NOT NULL CHECK (length(section) BETWEEN 1 AND 1024),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  fetched_at INTEGER,\n"
	"  UNIQUE (address_type, address, seq)\n"
	") STRICT;\n"

	"CREATE TABLE emm_seq (\n"
	"  address_type INTEGER NOT NULL CHECK (address_type IN (0, 1, 2)),\n"
	"  address INTEGER NOT NULL " U32("address") ",\n"
	"  last_seq INTEGER NOT NULL CHECK (last_seq BETWEEN 1 AND 4294967295),\n"
	"  PRIMARY KEY (address_type, address)\n"
	") STRICT, WITHOUT ROWID;\n"

	"CREATE TABLE upload_sessions (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  ua INTEGER NOT NULL " U32("ua") ",\n"
	"  nonce BLOB NOT NULL UNIQUE CHECK (length(nonce) BETWEEN 16 AND 64),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  closed_at INTEGER\n"
	") STRICT;\n"
	"CREATE INDEX upload_sessions_ua ON upload_sessions(ua);\n"

	/* No reference to cards: a foreign block names a UA the center does not know. */
	"CREATE TABLE usage_blocks (\n"
	"  ua INTEGER NOT NULL " U32("ua") ",\n"
	"  block_seq INTEGER NOT NULL " U32("block_seq") ",\n"
	"  received_at INTEGER NOT NULL,\n"
	"  verdict TEXT NOT NULL CHECK (verdict IN ('ok', 'tampered', 'foreign', 'truncated')),\n"
	"  session_id INTEGER REFERENCES upload_sessions(id),\n"
	"  PRIMARY KEY (ua, block_seq)\n"
	") STRICT, WITHOUT ROWID;\n"

	/* event_id has no reference: the card's authenticated word is recorded even for an
	 * event the center no longer lists. */
	"CREATE TABLE purchases (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  ua INTEGER NOT NULL REFERENCES cards(ua),\n"
	"  event_id INTEGER NOT NULL " U32("event_id") ",\n"
	"  price INTEGER NOT NULL " U32("price") ",\n"
	"  time INTEGER NOT NULL,\n"
	"  block_ua INTEGER NOT NULL,\n"
	"  block_seq INTEGER NOT NULL,\n"
	"  UNIQUE (ua, event_id, time),\n"
	"  FOREIGN KEY (block_ua, block_seq) REFERENCES usage_blocks(ua, block_seq)\n"
	") STRICT;\n"
	"CREATE INDEX purchases_block ON purchases(block_ua, block_seq);\n"

	"CREATE TABLE invoices (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  subscriber_id INTEGER REFERENCES subscribers(id),\n"
	"  ua INTEGER NOT NULL " U32("ua") ",\n"
	"  event_id INTEGER NOT NULL " U32("event_id") ",\n"
	"  price INTEGER NOT NULL " U32("price") ",\n"
	"  time INTEGER NOT NULL,\n"
	"  created_at INTEGER NOT NULL,\n"
	"  UNIQUE (ua, event_id, time)\n"
	") STRICT;\n"
	"CREATE INDEX invoices_subscriber ON invoices(subscriber_id, time);\n"

	"CREATE TABLE idempotency (\n"
	"  key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),\n"
	"  request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),\n"
	"  response BLOB NOT NULL,\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX idempotency_created ON idempotency(created_at);\n";

/*
 * 2 (management center): each card's credit reload counter (the reload id of
 * ADD CREDIT, which a card applies once and only increasing), and an index for a decoder
 * fetching one card's EMMs in queue order.
 */
static const char migration_2[] =
	"ALTER TABLE cards ADD COLUMN last_reload_id INTEGER NOT NULL DEFAULT 0\n"
	"  " U32("last_reload_id") ";\n"
	"CREATE INDEX emm_queue_address ON emm_queue(address_type, address, id);\n";

/*
 * 3 (bulk subscription, docs/internals/sms.md "Subscribing a product to all"): the progress of
 * one POST /v1/products/{id}/subscriptions under its idempotency key. The job walks subscribers
 * by id and commits in chunks; each chunk's transaction moves last_subscriber_id and the counts
 * with the rows it wrote, so a retry with the same key resumes after the last committed chunk.
 * max_subscriber_id bounds the set a job covers ("all": the highest subscriber id when the job
 * started). Rows are kept like idempotency rows: the finished answer lives in idempotency.
 */
static const char migration_3[] =
	"CREATE TABLE bulk_jobs (\n"
	"  key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),\n"
	"  request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),\n"
	"  product_id INTEGER NOT NULL REFERENCES products(id),\n"
	"  start_time INTEGER NOT NULL,\n"
	"  end_time INTEGER NOT NULL,\n"
	"  all_subscribers INTEGER NOT NULL CHECK (all_subscribers IN (0, 1)),\n"
	"  max_subscriber_id INTEGER NOT NULL CHECK (max_subscriber_id >= 0),\n"
	"  last_subscriber_id INTEGER NOT NULL CHECK (last_subscriber_id >= 0),\n"
	"  subscribers INTEGER NOT NULL CHECK (subscribers >= 0),\n"
	"  emms_queued INTEGER NOT NULL CHECK (emms_queued >= 0),\n"
	"  skipped INTEGER NOT NULL CHECK (skipped >= 0),\n"
	"  chunks INTEGER NOT NULL CHECK (chunks >= 0),\n"
	"  done INTEGER NOT NULL CHECK (done IN (0, 1)),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  updated_at INTEGER NOT NULL,\n"
	"  CHECK (start_time < end_time)\n"
	") STRICT, WITHOUT ROWID;\n";

/*
 * 4 (service key rotation in chunks, docs/internals/sms.md): the progress of rotating key_id to
 * version: SET KEY queued for every active card with a UA up to last_ua, emms so far, done. Each
 * chunk's transaction moves it with the EMMs it queued, so a rotation interrupted (a crash, a
 * failed chunk) resumes where it stopped when the operator asks to rotate that id again.
 */
static const char migration_4[] =
	"CREATE TABLE rotation_jobs (\n"
	"  key_id INTEGER NOT NULL CHECK (key_id BETWEEN 0 AND 255),\n"
	"  version INTEGER NOT NULL " U32("version") ",\n"
	"  last_ua INTEGER NOT NULL " U32("last_ua") ",\n"
	"  emms INTEGER NOT NULL CHECK (emms >= 0),\n"
	"  done INTEGER NOT NULL CHECK (done IN (0, 1)),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  PRIMARY KEY (key_id, version),\n"
	"  FOREIGN KEY (key_id, version) REFERENCES service_keys(key_id, version)\n"
	") STRICT, WITHOUT ROWID;\n";

/*
 * 5 (usage review: credit pumping, catalogue price, rolled-back cards; docs/internals/sms.md):
 *   - usage_blocks.hash, the SHA-256 of the whole block: the same (ua, block_seq) with another
 *     hash is a second, different block under a known number (a card restored from a copy of
 *     its files); credit and last_reload, what an accepted block reported (NULL: before this
 *     migration, or a refused block), so the center knows the card's credit as it last said;
 *   - invoices.block_price, the price the card's block stated, and invoices.flag when the center
 *     invoiced otherwise (its catalogue price, or 0 for an event its catalogue does not know);
 *   - cards.clone_alarm_at / clone_block_seq: when a second different block under a known
 *     number came in, and which number (NULL: never);
 *   - credit_reloads, each ADD CREDIT queued with its amount, so the reloads a card has not yet
 *     reported applied (reload id above its block's last_reload) are known: "in flight";
 *   - usage_clones, each other genuine block seen under a (ua, block_seq) already accepted, by
 *     hash: the same clone again is a duplicate, and the operator can list them.
 */
static const char migration_5[] =
	"ALTER TABLE usage_blocks ADD COLUMN hash BLOB CHECK (hash IS NULL OR length(hash) = 32);\n"
	"ALTER TABLE usage_blocks ADD COLUMN credit INTEGER " U32("credit") ";\n"
	"ALTER TABLE usage_blocks ADD COLUMN last_reload INTEGER " U32("last_reload") ";\n"
	"ALTER TABLE invoices ADD COLUMN block_price INTEGER " U32("block_price") ";\n"
	"ALTER TABLE invoices ADD COLUMN flag TEXT\n"
	"  CHECK (flag IS NULL OR flag IN ('price_mismatch', 'unknown_event'));\n"
	"ALTER TABLE cards ADD COLUMN clone_alarm_at INTEGER;\n"
	"ALTER TABLE cards ADD COLUMN clone_block_seq INTEGER " U32("clone_block_seq") ";\n"
	"CREATE TABLE credit_reloads (\n"
	"  ua INTEGER NOT NULL REFERENCES cards(ua),\n"
	"  reload_id INTEGER NOT NULL CHECK (reload_id BETWEEN 1 AND 4294967295),\n"
	"  amount INTEGER NOT NULL " U32("amount") ",\n"
	"  created_at INTEGER NOT NULL,\n"
	"  PRIMARY KEY (ua, reload_id)\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE TABLE usage_clones (\n"
	"  ua INTEGER NOT NULL " U32("ua") ",\n"
	"  block_seq INTEGER NOT NULL " U32("block_seq") ",\n"
	"  hash BLOB NOT NULL CHECK (length(hash) = 32),\n"
	"  session_id INTEGER REFERENCES upload_sessions(id),\n"
	"  received_at INTEGER NOT NULL,\n"
	"  PRIMARY KEY (ua, block_seq, hash),\n"
	"  FOREIGN KEY (ua, block_seq) REFERENCES usage_blocks(ua, block_seq)\n"
	") STRICT, WITHOUT ROWID;\n";

/*
 * 6 (the operator's lists, closing and deleting; docs/internals/store.md "Lists"):
 *   - subscribers.closed_at: a closed subscriber is kept for its invoices and takes no new card
 *     or subscription (NULL: open);
 *   - the indexes the lists' filters walk in key order. SQLite puts the rowid after an index's
 *     columns, and the rowid is the id (the UA for cards), so each index gives its rows in the
 *     order the list pages them: cards by state or role in UA order, invoices by time then id
 *     (invoices_subscriber already does it for one subscriber); subscribers by name (a
 *     name_prefix is a range of it); events by start time (since, until); purchases by event
 *     (whether any card bought an event, before its price or times change or it is deleted).
 * Indexes are created IF NOT EXISTS; the migration runs once, recorded with its version.
 */
static const char migration_6[] =
	"ALTER TABLE subscribers ADD COLUMN closed_at INTEGER;\n"
	"CREATE INDEX IF NOT EXISTS subscribers_name ON subscribers(name);\n"
	"CREATE INDEX IF NOT EXISTS cards_state ON cards(state);\n"
	"CREATE INDEX IF NOT EXISTS cards_role ON cards(role);\n"
	"CREATE INDEX IF NOT EXISTS events_start ON events(start_time);\n"
	"CREATE INDEX IF NOT EXISTS invoices_time ON invoices(time);\n"
	"CREATE INDEX IF NOT EXISTS purchases_event ON purchases(event_id);\n";

/*
 * 7 (several centers on one database; docs/internals/store.md "The EMM queue's cursor"): the
 * queue's position, the global cursor of GET /v1/emm, handed out in commit order.
 *   - emm_queue.pos: the EMM's place in the queue as readers page it (NULL: not numbered yet);
 *     every row queued so far keeps its id as its position;
 *   - emm_order: one row, the last position handed out. A backend with one writer at a time
 *     (SQLite) numbers each EMM as it queues it; on one with concurrent writers (PostgreSQL) the
 *     reader numbers, in a short transaction of its own, the committed EMMs not numbered yet.
 */
static const char migration_7[] =
	"CREATE TABLE emm_order (\n"
	"  id INTEGER PRIMARY KEY CHECK (id = 1),\n"
	"  last_pos INTEGER NOT NULL CHECK (last_pos >= 0)\n"
	") STRICT;\n"
	"INSERT INTO emm_order (id, last_pos) SELECT 1, COALESCE(max(id), 0) FROM emm_queue;\n"
	"ALTER TABLE emm_queue ADD COLUMN pos INTEGER CHECK (pos IS NULL OR pos >= 1);\n"
	"UPDATE emm_queue SET pos = id;\n"
	"CREATE UNIQUE INDEX emm_queue_pos ON emm_queue(pos);\n"
	"CREATE INDEX emm_queue_unnumbered ON emm_queue(id) WHERE pos IS NULL;\n";

/*
 * 8 (the distribution server, `keyhole dist serve`; docs/protocols/distribution.md):
 *   - dist_accounts: the buyers, with their password's scrypt hash and salt, and their balance,
 *     which never goes below zero;
 *   - dist_sessions: a login's token, kept as its SHA-256 (a stolen database logs nobody in);
 *   - dist_programs: the catalogue, one row per program and version, with the manifest and the
 *     program itself (the vendor's own server holds it in clear: it makes each delivery's
 *     package from it);
 *   - dist_deliveries: one run of the second path, moving forward only (hello, proven, keyed,
 *     charged), with the server's half of the session (nothing secret) and the delivery's
 *     one-time key Kx sealed at rest; refetch: the receipt a delivery was started on (free);
 *   - dist_receipts: what a charge bought, once per delivery (the unique delivery_id is what
 *     makes a repeated charge answer the same receipt), its 16-byte id the processor sees;
 *   - dist_ledger: every movement of money, deposits (+) and charges (-, with their receipt):
 *     an account's balance is the sum of its entries.
 */
static const char migration_8[] =
	"CREATE TABLE dist_accounts (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),\n"
	"  pw_salt BLOB NOT NULL CHECK (length(pw_salt) = 16),\n"
	"  pw_hash BLOB NOT NULL CHECK (length(pw_hash) = 32),\n"
	"  balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE TABLE dist_sessions (\n"
	"  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),\n"
	"  account_id INTEGER NOT NULL REFERENCES dist_accounts(id),\n"
	"  expires_at INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX dist_sessions_account ON dist_sessions(account_id);\n"
	"CREATE TABLE dist_programs (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),\n"
	"  version INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),\n"
	"  price INTEGER NOT NULL " U32("price") ",\n"
	"  manifest BLOB NOT NULL,\n"
	"  program BLOB NOT NULL,\n"
	"  created_at INTEGER NOT NULL,\n"
	"  UNIQUE (name, version)\n"
	") STRICT;\n"
	"CREATE TABLE dist_deliveries (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  account_id INTEGER NOT NULL REFERENCES dist_accounts(id),\n"
	"  program_id INTEGER NOT NULL REFERENCES dist_programs(id),\n"
	"  state TEXT NOT NULL CHECK (state IN ('hello', 'proven', 'keyed', 'charged')),\n"
	"  fp BLOB NOT NULL CHECK (length(fp) = 32),\n"
	"  peer BLOB NOT NULL,\n"
	"  kx_sealed BLOB,\n"
	"  refetch BLOB CHECK (refetch IS NULL OR length(refetch) = 16),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  updated_at INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE INDEX dist_deliveries_account ON dist_deliveries(account_id);\n"
	"CREATE TABLE dist_receipts (\n"
	"  id BLOB PRIMARY KEY CHECK (length(id) = 16),\n"
	"  delivery_id INTEGER NOT NULL UNIQUE REFERENCES dist_deliveries(id),\n"
	"  account_id INTEGER NOT NULL REFERENCES dist_accounts(id),\n"
	"  program_id INTEGER NOT NULL REFERENCES dist_programs(id),\n"
	"  fp BLOB NOT NULL CHECK (length(fp) = 32),\n"
	"  price INTEGER NOT NULL " U32("price") ",\n"
	"  time INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE TABLE dist_ledger (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  account_id INTEGER NOT NULL REFERENCES dist_accounts(id),\n"
	"  amount INTEGER NOT NULL CHECK (amount <> 0),\n"
	"  receipt_id BLOB UNIQUE REFERENCES dist_receipts(id),\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE INDEX dist_ledger_account ON dist_ledger(account_id);\n";

/*
 * The escrow (include/keyhole/store_escrow.h, docs/internals/ledger.md): accounts in one
 * currency each (a user's, or the currency's one `outside` account, whose name is NULL), the
 * cached balance of each bucket, the sellers' listings, the buyers' purchases, and the double-entry
 * ledger: one movement per transaction, its entries summing to zero. Amounts are 1..2^53; no
 * user bucket below zero, the outside bucket never above.
 */
#define ESCROW_AMOUNT(col) "CHECK (" col " BETWEEN 1 AND 9007199254740992)"
#define ESCROW_CURRENCY(col)                                                                            \
	"CHECK (length(" col ") = 3 AND substr(" col ", 1, 1) BETWEEN 'A' AND 'Z' AND substr(" col           \
	", 2, 1) BETWEEN 'A' AND 'Z' AND substr(" col ", 3, 1) BETWEEN 'A' AND 'Z')"
#define ESCROW_ID(col) "CHECK (length(" col ") = 16)"

static const char migration_9[] =
	"CREATE TABLE escrow_accounts (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  name TEXT UNIQUE CHECK (length(name) BETWEEN 1 AND 64),\n"
	"  kind TEXT NOT NULL CHECK (kind IN ('user', 'outside')),\n"
	"  currency TEXT NOT NULL " ESCROW_CURRENCY("currency") ",\n"
	"  created_at INTEGER NOT NULL,\n"
	"  CHECK ((kind = 'user') = (name IS NOT NULL))\n"
	") STRICT;\n"
	"CREATE UNIQUE INDEX escrow_accounts_outside ON escrow_accounts(currency) WHERE kind = 'outside';\n"
	"CREATE TABLE escrow_balances (\n"
	"  account_id INTEGER NOT NULL REFERENCES escrow_accounts(id),\n"
	"  bucket TEXT NOT NULL CHECK (bucket IN ('available', 'held', 'outside')),\n"
	"  balance INTEGER NOT NULL CHECK (balance BETWEEN -4611686018427387904 AND 4611686018427387904),\n"
	"  CHECK (bucket = 'outside' OR balance >= 0),\n"
	"  CHECK (bucket <> 'outside' OR balance <= 0),\n"
	"  PRIMARY KEY (account_id, bucket)\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE TABLE escrow_listings (\n"
	"  id BLOB PRIMARY KEY " ESCROW_ID("id") ",\n"
	"  seller_id INTEGER NOT NULL REFERENCES escrow_accounts(id),\n"
	"  content_id TEXT NOT NULL CHECK (length(content_id) BETWEEN 1 AND 64),\n"
	"  price INTEGER NOT NULL " ESCROW_AMOUNT("price") ",\n"
	"  currency TEXT NOT NULL " ESCROW_CURRENCY("currency") ",\n"
	"  deadline_secs INTEGER NOT NULL CHECK (deadline_secs > 0),\n"
	"  key_id BLOB NOT NULL " ESCROW_ID("key_id") ",\n"
	"  public_key BLOB NOT NULL CHECK (length(public_key) BETWEEN 1 AND 1024),\n"
	"  signed BLOB NOT NULL CHECK (length(signed) BETWEEN 1 AND 2048),\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX escrow_listings_seller ON escrow_listings(seller_id, id);\n"
	"CREATE TABLE escrow_purchases (\n"
	"  id BLOB PRIMARY KEY " ESCROW_ID("id") ",\n"
	"  listing_id BLOB NOT NULL REFERENCES escrow_listings(id),\n"
	"  buyer_id INTEGER NOT NULL REFERENCES escrow_accounts(id),\n"
	"  seller_id INTEGER NOT NULL REFERENCES escrow_accounts(id),\n"
	"  price INTEGER NOT NULL " ESCROW_AMOUNT("price") ",\n"
	"  device_ua INTEGER NOT NULL " U32("device_ua") ",\n"
	"  request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),\n"
	"  request BLOB NOT NULL CHECK (length(request) BETWEEN 1 AND 1200),\n"
	"  idem_key BLOB NOT NULL UNIQUE " ESCROW_ID("idem_key") ",\n"
	"  state TEXT NOT NULL CHECK (state IN ('held', 'delivered', 'failed', 'swept')),\n"
	"  deadline INTEGER NOT NULL,\n"
	"  answer BLOB CHECK (answer IS NULL OR length(answer) BETWEEN 1 AND 1200),\n"
	"  notice BLOB CHECK (notice IS NULL OR length(notice) BETWEEN 1 AND 512),\n"
	"  created_at INTEGER NOT NULL,\n"
	"  settled_at INTEGER,\n"
	"  CHECK ((state = 'held') = (settled_at IS NULL))\n"
	") STRICT, WITHOUT ROWID;\n"
	"CREATE INDEX escrow_purchases_due ON escrow_purchases(state, deadline);\n"
	"CREATE INDEX escrow_purchases_buyer ON escrow_purchases(buyer_id, id);\n"
	"CREATE INDEX escrow_purchases_seller ON escrow_purchases(seller_id, id);\n"
	"CREATE TABLE escrow_movements (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  kind TEXT NOT NULL CHECK (kind IN ('deposit', 'withdraw', 'hold', 'post', 'void')),\n"
	"  account_id INTEGER NOT NULL REFERENCES escrow_accounts(id),\n"
	"  purchase_id BLOB REFERENCES escrow_purchases(id),\n"
	"  amount INTEGER NOT NULL " ESCROW_AMOUNT("amount") ",\n"
	"  idem_key BLOB UNIQUE CHECK (idem_key IS NULL OR length(idem_key) = 16),\n"
	"  available_after INTEGER,\n"
	"  created_at INTEGER NOT NULL,\n"
	"  CHECK ((kind IN ('deposit', 'withdraw')) = (purchase_id IS NULL)),\n"
	"  UNIQUE (purchase_id, kind)\n"
	") STRICT;\n"
	"CREATE INDEX escrow_movements_account ON escrow_movements(account_id, kind);\n"
	"CREATE TABLE escrow_entries (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  movement_id INTEGER NOT NULL REFERENCES escrow_movements(id),\n"
	"  account_id INTEGER NOT NULL,\n"
	"  bucket TEXT NOT NULL CHECK (bucket IN ('available', 'held', 'outside')),\n"
	"  amount INTEGER NOT NULL CHECK (amount <> 0 AND amount BETWEEN -9007199254740992 AND 9007199254740992),\n"
	"  FOREIGN KEY (account_id, bucket) REFERENCES escrow_balances(account_id, bucket)\n"
	") STRICT;\n"
	"CREATE INDEX escrow_entries_movement ON escrow_entries(movement_id);\n"
	"CREATE INDEX escrow_entries_bucket ON escrow_entries(account_id, bucket);\n"
	"CREATE TABLE escrow_tokens (\n"
	"  account_id INTEGER PRIMARY KEY REFERENCES escrow_accounts(id),\n"
	"  token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),\n"
	"  created_at INTEGER NOT NULL\n"
	") STRICT;\n";

/*
 * The key center's (migration 10; include/keyhole/store_keycenter.h): the key cards it enrolled,
 * their chains' states sealed at rest beside their public positions, the deliveries waiting,
 * the relay log (no key, no content) and the mailbox sessions' token hashes.
 */
#define KC_SEALED(col) "CHECK (length(" col ") = 60)"

static const char migration_10[] =
	"CREATE TABLE kc_cards (\n"
	"  serial INTEGER NOT NULL PRIMARY KEY CHECK (serial >= 1),\n"
	"  address TEXT UNIQUE CHECK (address IS NULL OR length(address) BETWEEN 1 AND 64),\n"
	"  state TEXT NOT NULL CHECK (state IN ('enrolled', 'active', 'blocked')),\n"
	"  sign_cert BLOB NOT NULL CHECK (length(sign_cert) BETWEEN 1 AND 1024),\n"
	"  code_mac BLOB NOT NULL CHECK (length(code_mac) = 32),\n"
	"  code_fails INTEGER NOT NULL CHECK (code_fails >= 0),\n"
	"  code_window_start INTEGER NOT NULL,\n"
	"  send_pos INTEGER NOT NULL CHECK (send_pos >= 1),\n"
	"  send_state BLOB NOT NULL " KC_SEALED("send_state") ",\n"
	"  recv_pos INTEGER NOT NULL CHECK (recv_pos >= 1),\n"
	"  recv_state BLOB NOT NULL " KC_SEALED("recv_state") ",\n"
	"  last_post_hash BLOB CHECK (last_post_hash IS NULL OR length(last_post_hash) = 32),\n"
	"  hello_time INTEGER NOT NULL,\n"
	"  replaced_by INTEGER,\n"
	"  created INTEGER NOT NULL,\n"
	"  activated INTEGER\n"
	") STRICT;\n"
	"CREATE TABLE kc_mailbox (\n"
	"  recipient INTEGER NOT NULL REFERENCES kc_cards(serial),\n"
	"  idx INTEGER NOT NULL CHECK (idx >= 1),\n"
	"  sender INTEGER NOT NULL,\n"
	"  sender_address TEXT NOT NULL CHECK (length(sender_address) BETWEEN 1 AND 64),\n"
	"  msg BLOB NOT NULL,\n"
	"  key_sealed BLOB CHECK (key_sealed IS NULL OR length(key_sealed) = 60),\n"
	"  size INTEGER NOT NULL CHECK (size >= 0),\n"
	"  created INTEGER NOT NULL,\n"
	"  PRIMARY KEY (recipient, idx)\n"
	") STRICT;\n"
	"CREATE TABLE kc_relays (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  sender INTEGER NOT NULL,\n"
	"  send_idx INTEGER NOT NULL CHECK (send_idx >= 1),\n"
	"  recipient INTEGER,\n"
	"  recv_idx INTEGER,\n"
	"  size INTEGER NOT NULL CHECK (size >= 0),\n"
	"  time INTEGER NOT NULL,\n"
	"  CHECK ((recipient IS NULL) = (recv_idx IS NULL))\n"
	") STRICT;\n"
	"CREATE TABLE kc_sessions (\n"
	"  token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),\n"
	"  serial INTEGER NOT NULL REFERENCES kc_cards(serial),\n"
	"  expires INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE INDEX kc_sessions_serial ON kc_sessions(serial, expires);\n";

const struct kh__migration kh__migrations[] = {
	{1, migration_1},
	{2, migration_2},
	{3, migration_3},
	{4, migration_4},
	{5, migration_5},
	{6, migration_6},
	{7, migration_7},
	{8, migration_8},
	{9, migration_9},
	{10, migration_10},
};
const size_t kh__migrations_count = sizeof kh__migrations / sizeof kh__migrations[0];

/*
 * ---- PostgreSQL's dialect ----
 *
 * The migrations above are written once, in SQLite's dialect, and SQLite runs them as they are
 * (so a store made by an older release migrates forward through the very text that made it).
 * PostgreSQL runs each one translated by the rules below, applied word by word outside quoted
 * text; the typed operations' SQL is common to both and needs none. A new migration uses only
 * what these rules cover, or adds a rule here.
 *
 *   PRAGMA application_id = N;     CREATE TABLE application_id (value BIGINT NOT NULL);
 *                                  INSERT INTO application_id (value) VALUES (N);
 *                                  (what the store checks to know a schema is its own)
 *   INTEGER PRIMARY KEY [AUTOINCREMENT]
 *                                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY
 *                                  (SQLite's INTEGER PRIMARY KEY is the rowid: an id is given when
 *                                  the INSERT names none; a sequence, like AUTOINCREMENT, never
 *                                  hands one out twice)
 *   INTEGER                        BIGINT (SQLite's integers are 64-bit, PostgreSQL's INTEGER 32)
 *   BLOB                           BYTEA
 *   TEXT                           TEXT COLLATE "C" (bytewise order and comparison, SQLite's
 *                                  BINARY: the lists page by key and match name prefixes)
 *   STRICT, WITHOUT ROWID          dropped (table options; PostgreSQL's types are strict)
 */

struct out {
	char *p;
	size_t n, cap;
	int oom;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->oom)
		return;
	if (o->n + n + 1 > o->cap) {
		size_t cap = (o->n + n + 1) * 2;
		char *p = realloc(o->p, cap);
		if (p == NULL) {
			o->oom = 1;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->n, s, n);
	o->n += n;
	o->p[o->n] = '\0';
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static int is_word(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static const char *skip_space(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t')
		p++;
	return p;
}

/* The word w at p (whole), after spaces: where it ends, else NULL. */
static const char *word_at(const char *p, const char *w)
{
	size_t n = strlen(w);

	p = skip_space(p);
	return strncmp(p, w, n) == 0 && !is_word(p[n]) ? p + n : NULL;
}

char *kh__ddl_pg(const char *sql)
{
	struct out o = {0};
	const char *p = sql, *q;

	puts_(&o, "");
	while (*p) {
		if (*p == '\'' || *p == '"') { /* quoted: as it is, to the closing quote */
			q = strchr(p + 1, *p);
			q = q ? q + 1 : p + strlen(p);
			put(&o, p, (size_t)(q - p));
			p = q;
			continue;
		}
		if (!is_word(*p)) {
			put(&o, p, 1);
			p++;
			continue;
		}
		for (q = p; is_word(*q); q++)
			;
		if ((size_t)(q - p) == 6 && strncmp(p, "PRAGMA", 6) == 0 && (q = word_at(q, "application_id")) &&
		    *(q = skip_space(q)) == '=') {
			const char *num = skip_space(q + 1), *end = num;
			while (*end >= '0' && *end <= '9')
				end++;
			puts_(&o, "CREATE TABLE application_id (value BIGINT NOT NULL);\n"
				  "INSERT INTO application_id (value) VALUES (");
			put(&o, num, (size_t)(end - num));
			puts_(&o, ")");
			p = end;
		} else if ((size_t)(q - p) == 7 && strncmp(p, "INTEGER", 7) == 0) {
			const char *pk = word_at(q, "PRIMARY");
			if (pk && (pk = word_at(pk, "KEY")) != NULL) {
				const char *ai = word_at(pk, "AUTOINCREMENT");
				puts_(&o, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
				p = ai ? ai : pk;
			} else {
				puts_(&o, "BIGINT");
				p = q;
			}
		} else if ((size_t)(q - p) == 4 && strncmp(p, "BLOB", 4) == 0) {
			puts_(&o, "BYTEA");
			p = q;
		} else if ((size_t)(q - p) == 4 && strncmp(p, "TEXT", 4) == 0) {
			puts_(&o, "TEXT COLLATE \"C\"");
			p = q;
		} else if ((size_t)(q - p) == 6 && strncmp(p, "STRICT", 6) == 0) {
			p = skip_space(q);
			if (*p == ',')
				p++;
		} else if ((size_t)(q - p) == 7 && strncmp(p, "WITHOUT", 7) == 0 && word_at(q, "ROWID")) {
			p = word_at(q, "ROWID");
		} else {
			put(&o, p, (size_t)(q - p));
			p = q;
		}
	}
	if (o.oom) {
		free(o.p);
		return NULL;
	}
	return o.p;
}
