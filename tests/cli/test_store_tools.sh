# keyhole store check and keyhole store copy on a real center's database. What it asserts:
# - a store made by real use of `keyhole serve` (subscribers, cards registered and assigned, a
#   reload, a bulk subscription of all, a service key rotation, upload sessions with purchases
#   invoiced through the real decoder client) passes `store check` (exit 0, one 'ok:' line; --json
#   says ok);
# - it copies SQLite -> PostgreSQL -> SQLite with every table's rows and checksum the same at
#   each step (the per-table lines of the two copies are equal), `store check` passes on each
#   copy, and `keyhole serve` on the copied PostgreSQL answers the same lists (subscribers,
#   cards, invoices, a card's EMM queue) as the original, and the next subscriber it adds takes
#   the next id;
# - an invariant broken behind the store's back (an invoice twice, an EMM sequence number behind)
#   is named by `store check`, exit 1, on both backends;
# - the escrow's ledger in the same store (accounts and deposits made by `keyhole escrow account`)
#   is checked too: sound, `store check` passes; a cached balance changed behind the escrow's back
#   is named (escrow_balance_cache, with the account, the kept and the recomputed balance), exit
#   1, on both backends;
# - refusals leave the target unchanged: a target with rows, the same URL twice (usage, 2), the
#   same database named otherwise (1), a server that cannot be reached, a database that is not a
#   Keyhole store (its one table untouched, no table added), an SQLite source never created.
#
# Run by CTest as `sh test_store_tools.sh` with KEYHOLE, KH_SOURCE_DIR, KH_UPLOAD_LOAD and, for
# PostgreSQL, KH_TEST_PG_URL (the pg fixture's cluster) set; without it only the SQLite half runs.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_store_tools
kh_need curl openssl basenc sqlite3
[ -x "$KH_UPLOAD_LOAD" ] || kh_fail "KH_UPLOAD_LOAD (the kh_upload_load helper) is not set or not executable"
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
unset KEYHOLE_CENTER KEYHOLE_CACERT KEYHOLE_TOKEN_FILE

PGDBS=
pg_cleanup()
{
	for d in $PGDBS; do
		psql -q "$KH_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
	done
}
# pgdb NAME: a new, empty database on the test cluster; its URL
pgdb()
{
	n=kh_st_$$_$1
	psql -q "$KH_TEST_PG_URL" -c "CREATE DATABASE $n" >/dev/null 2>"$KH_META/psql.err" ||
		kh_fail "CREATE DATABASE $n: $(cat "$KH_META/psql.err")"
	PGDBS="$PGDBS $n"
	echo "$KH_TEST_PG_URL" | sed "s|/postgres?|/$n?|"
}
if [ -n "${KH_TEST_PG_URL:-}" ]; then
	kh_need psql
	trap 'pg_cleanup; kh_cleanup' EXIT
fi

# ---- a center used for real, on SQLite ---------------------------------------------------------
NCARDS=3
kh_card_set "$NCARDS"
kh_start_serve PID
URL=http://127.0.0.1:$PORT
export KEYHOLE_CENTER=$URL
kh_center_ok credit-policy set --initial-credit 100 --reload-amount 10
kh_expect_api POST /v1/products '{"name":"PPV"}' 201
kh_expect_api POST /v1/channels '{"id":1,"name":"C","product_id":1}' 201
for ev in 1 2; do
	kh_expect_api POST /v1/events "{\"id\":$ev,\"name\":\"E$ev\",\"price\":10,\"channel_id\":1,\"start\":0,\"end\":4102444800}" 201
done
i=1
for c in $CARDS; do
	ua=$(kh_ua "$c")
	kh_center_ok subscriber add --name "S$i"
	kh_center_ok card register --cert "auth/issued/card-$ua-sign.crt"
	kh_center_ok card assign "$ua" --subscriber "$i"
	i=$((i + 1))
done
UA1=$(kh_ua c1.card)
kh_center_ok card reload "$UA1" --idempotency-key reload-1
kh_center_ok subscribe --all-subscribers --product 1 --end +86400 --idempotency-key bulk-1
kh_center_ok service-keys rotate --key-id 1
# shellcheck disable=SC2086 # the card list is split on purpose
"$KH_UPLOAD_LOAD" prepare --center "$URL" --db center.db --authority auth --decoder dec.card --cam cam.card --events 2 $CARDS \
	>bought.txt 2>"$KH_META/load.err" || kh_fail "prepare: $(cat "$KH_META/load.err")"
: >journal.txt
# shellcheck disable=SC2086
"$KH_UPLOAD_LOAD" run --center "$URL" --journal journal.txt --rounds 2 $CARDS >"$KH_META/run.out" 2>"$KH_META/run.err" ||
	kh_fail "upload run: $(cat "$KH_META/run.err")"
n=$(sqlite3 -batch center.db 'SELECT count(*) FROM invoices') || kh_fail "sqlite3"
[ "$n" -eq $((NCARDS * 2)) ] || kh_fail "the uploads invoiced $n purchases, expected $((NCARDS * 2))"

# lists PORT DIR: what the center on PORT lists, into DIR (not /v1/jobs: a center that starts may
# add a job of its own, the renewal of rights)
lists()
{
	mkdir -p "$2"
	for p in /v1/subscribers /v1/cards /v1/invoices /v1/subscribers/1/subscriptions /v1/service-keys \
		"/v1/cards/$UA1/emm-queue" /v1/emm; do
		f=$2/$(echo "$p" | tr '/' '_')
		ST=$(curl -s --noproxy '*' -o "$f" -w '%{http_code}' "http://127.0.0.1:$1$p")
		[ "$ST" = 200 ] || kh_fail "GET $p: $ST $(cat "$f")"
	done
}
lists "$PORT" lists.sqlite
[ -s "lists.sqlite/_v1_cards_${UA1}_emm-queue" ] || kh_fail "no EMM queue listed"
kh_stop "$PID" TERM

# ---- the escrow's ledger in the same store ------------------------------------------------------
kh_expect_ok escrow account add --db center.db --name alice --currency EUR --token-out alice.token
kh_expect_ok escrow account add --db center.db --name bob --currency USD --token-out bob.token
kh_expect_ok escrow account deposit --db center.db --name alice --amount 1250
kh_expect_ok escrow account deposit --db center.db --name bob --amount 70
ALICE=$(sqlite3 -batch center.db "SELECT id FROM escrow_accounts WHERE name = 'alice'") || kh_fail "sqlite3"
[ -n "$ALICE" ] || kh_fail "no account alice"

# ---- check: a healthy store --------------------------------------------------------------------
kh_expect_ok store check --db center.db
kh_out_has '^ok: [0-9]+ checks hold \(schema version [0-9]+\)$'
[ ! -s "$KH_ERR" ] || kh_fail "store check wrote on stderr: $(cat "$KH_ERR")"
kh_expect_ok store check --db sqlite:center.db --json
grep -q '^{"ok":true,.*"broken":0,"findings":\[\]}$' "$KH_OUT" || kh_fail "store check --json: $(cat "$KH_OUT")"
kh_expect_usage store check
kh_expect_usage store check --db center.db --db center.db
kh_expect_usage store check --db center.db --from x
kh_expect_help store check --help
kh_expect_help store copy --help
kh_expect_fail store check --db never-made.db
[ ! -e never-made.db ] || kh_fail "store check created the database it was asked to check"

# ---- refusals that need no server --------------------------------------------------------------
kh_expect_usage store copy --from center.db
kh_expect_usage store copy --from center.db --to center.db
kh_expect_fail store copy --from center.db --to sqlite:center.db
kh_err_has 'same database'
kh_expect_fail store copy --from never-made.db --to other.db
[ ! -e never-made.db ] && [ ! -e other.db ] || kh_fail "a refused copy left a file"

# ---- broken on purpose, SQLite -----------------------------------------------------------------
cp center.db broken.db && chmod 600 broken.db || kh_fail "cp"
sqlite3 -batch broken.db "UPDATE emm_seq SET last_seq = 1 WHERE address_type = 0 AND address = $((0x$UA1))" ||
	kh_fail "sqlite3 (break)"
kh_expect_fail store check --db broken.db
kh_out_has "^broken: emm_seq_behind: table emm_seq: 1 row\(s\): .*address_type=0 address=$((0x$UA1))"
kh_err_has '1 of [0-9]+ checks broken'

# ---- the escrow's ledger tampered with, SQLite: a cached balance raised by 5 -------------------
cp center.db ledger.db && chmod 600 ledger.db || kh_fail "cp"
sqlite3 -batch ledger.db "UPDATE escrow_balances SET balance = balance + 5 WHERE account_id = $ALICE AND bucket = 'available'" ||
	kh_fail "sqlite3 (break)"
kh_expect_fail store check --db ledger.db
kh_out_has "^broken: escrow_balance_cache: table escrow_balances: 1 row\(s\): .*; e\.g\. account=$ALICE bucket=available currency=EUR cached=1255 recomputed=1250$"
[ "$(grep -c '^broken: ' "$KH_OUT")" -eq 1 ] || kh_fail "store check: more than the one finding: $(cat "$KH_OUT")"
kh_err_has '1 of [0-9]+ checks broken'
kh_expect_fail store check --db ledger.db --json
grep -q '^{"ok":false,.*"broken":1,"findings":\[{"invariant":"escrow_balance_cache","table":"escrow_balances",' "$KH_OUT" ||
	kh_fail "store check --json: $(cat "$KH_OUT")"

if [ -z "${KH_TEST_PG_URL:-}" ]; then
	kh_note "KH_TEST_PG_URL unset: the PostgreSQL half is not run"
	exit 0
fi

# ---- SQLite -> PostgreSQL -> SQLite ------------------------------------------------------------
PGA=$(pgdb a)
kh_expect_ok store copy --from center.db --to "$PGA"
kh_out_has '^copied and verified: [0-9]+ rows$'
grep -v '^copied' "$KH_OUT" >copy1.txt
[ "$(grep -c ' ok$' copy1.txt)" -ge 19 ] || kh_fail "copy: not every table said ok"
grep -q '^invoices  *6 [0-9a-f]\{64\} ok$' copy1.txt || kh_fail "copy: invoices line: $(grep invoices copy1.txt)"
kh_expect_ok store check --db "$PGA"
kh_out_has '^ok: '
kh_expect_ok store copy --from "$PGA" --to back.db --json
grep -q '^{"ok":true,"rows":[0-9]*,"tables":\[' "$KH_OUT" || kh_fail "copy --json: $(head -c 300 "$KH_OUT")"
kh_expect_ok store copy --from "$PGA" --to back2.db
grep -v '^copied' "$KH_OUT" >copy2.txt
cmp -s copy1.txt copy2.txt || { diff copy1.txt copy2.txt >&2; kh_fail "the two copies' tables differ"; }
kh_expect_mode back.db 600
kh_expect_ok store check --db back.db

# ---- serve on the copied PostgreSQL answers the same lists -------------------------------------
: >"$KH_META/daemon.out"
kh_start_daemon PID serve --db "$PGA" --authority auth --listen 127.0.0.1:0
kh_wait_listening "$PID"
lists "$PORT" lists.pg
for f in lists.sqlite/*; do
	cmp -s "$f" "lists.pg/${f#lists.sqlite/}" ||
		kh_fail "GET ${f#lists.sqlite/}: the copy on PostgreSQL answers $(head -c 400 "lists.pg/${f#lists.sqlite/}"), the original $(head -c 400 "$f")"
done
KEYHOLE_CENTER=http://127.0.0.1:$PORT
kh_center_ok subscriber add --name next
kh_out_has "^id: $((NCARDS + 1))$"
kh_stop "$PID" TERM

# ---- refusals on PostgreSQL: the target unchanged ----------------------------------------------
# pgsig URL: every table's rows, one line per table (what a refusal must not change)
pgsig()
{
	psql -At "$1" -c "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1" \
		>"$KH_META/tables" 2>"$KH_META/psql.err" || kh_fail "psql: $(cat "$KH_META/psql.err")"
	while read -r t; do
		printf '%s ' "$t"
		psql -At "$1" -c "SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM $t x"
	done <"$KH_META/tables"
}
pgsig "$PGA" >a.before
kh_expect_fail store copy --from center.db --to "$PGA"
kh_err_has 'not an empty store'
kh_expect_fail store copy --from "$PGA" --to "$PGA&connect_timeout=10"
kh_err_has 'same database'
pgsig "$PGA" >a.after
cmp -s a.before a.after || kh_fail "a refused copy changed the target"
# a server that cannot be reached
kh_expect_fail store copy --from center.db --to "postgresql:///x?host=$KH_WORK/nosock&port=5432&connect_timeout=2"
kh_err_has 'unavailable'
# a database that is not a Keyhole store
PGF=$(pgdb f)
psql -q "$PGF" -c "CREATE TABLE theirs (x int); INSERT INTO theirs VALUES (1)" || kh_fail "psql"
pgsig "$PGF" >f.before
kh_expect_fail store copy --from center.db --to "$PGF"
pgsig "$PGF" >f.after
cmp -s f.before f.after || kh_fail "a copy into a foreign database changed it"
kh_expect_fail store check --db "$PGF"
# broken on purpose, PostgreSQL: an invoice twice (its unique key dropped first)
psql -q "$PGA" -c "ALTER TABLE invoices DROP CONSTRAINT invoices_ua_event_id_time_key" \
	-c "INSERT INTO invoices (subscriber_id, ua, event_id, price, time, created_at) SELECT subscriber_id, ua, event_id, price, time, created_at FROM invoices WHERE id = (SELECT min(id) FROM invoices)" ||
	kh_fail "psql (break)"
kh_expect_fail store check --db "$PGA"
kh_out_has '^broken: invoice_once: table invoices: 1 row\(s\): '
# and the escrow's ledger: a cached balance lowered by 5
psql -q "$PGA" -c "UPDATE escrow_balances SET balance = balance - 5 WHERE account_id = $ALICE AND bucket = 'available'" ||
	kh_fail "psql (break the ledger)"
kh_expect_fail store check --db "$PGA"
kh_out_has '^broken: invoice_once: table invoices: 1 row\(s\): '
kh_out_has "^broken: escrow_balance_cache: table escrow_balances: 1 row\(s\): .*; e\.g\. account=$ALICE bucket=available currency=EUR cached=1245 recomputed=1250$"
kh_err_has '2 of [0-9]+ checks broken'
kh_note "ok: copied SQLite -> PostgreSQL -> SQLite with the same checksums; checks, lists and refusals as expected"
