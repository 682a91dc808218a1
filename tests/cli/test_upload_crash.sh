# The crash test: `keyhole serve` is killed with SIGKILL while upload sessions are in
# flight, restarted on the same database, and every block the center acknowledged must be
# stored exactly once with verdict ok, none lost, every purchase such a block carried invoiced
# exactly once; retrying the uploads that got no answer (same Idempotency-Key and body) and new
# sessions then complete everything without a double invoice.
#
# Eight cards, each its own subscriber, buy three pay-per-view events with the center's service
# key; the helper kh_upload_load (tests/tools/upload_load.c) runs one thread per card doing
# upload sessions through the real decoder client, and journals on the client side each upload
# request before it is sent and each 200 answer (the acknowledgement) when it comes. The center
# is killed once enough answers came, whatever is in flight then. The database is read with the
# sqlite3 shell beside the running center (WAL), or psql.
#
# Run by CTest as `sh test_upload_crash.sh` with KEYHOLE, KH_SOURCE_DIR and KH_UPLOAD_LOAD set;
# again with KH_TEST_PG_URL set (cli/test_upload_crash_pg), on a PostgreSQL database of its own.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_upload_crash
kh_need curl openssl basenc sqlite3 awk
[ -x "$KH_UPLOAD_LOAD" ] || kh_fail "KH_UPLOAD_LOAD (the kh_upload_load helper) is not set or not executable"
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
kh_db_init

NCARDS=8
EVENTS=3
LOAD=$KH_UPLOAD_LOAD

# start PIDVAR: the center on a free port, four HTTP threads; sets PORT and URL
start()
{
	kh_start_serve "$1" --threads 4
	URL=http://127.0.0.1:$PORT
}

# sql QUERY: run it on the center's database (the rows on stdout)
sql()
{
	kh_sql "$1"
}

# an awk function: the value of 8 hex digits (awk itself reads no hexadecimal)
HEX='function hex(s,  i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789ABCDEF", toupper(substr(s, i, 1))) - 1; return n } '

# check_stored WHEN: every block acknowledged so far is stored exactly once with verdict ok; every
# purchase of a card with an acknowledged block invoiced exactly once; no invoice twice or for
# anything the cards did not buy.
check_stored()
{
	bad=$(awk '$1 == "ACK" && $5 != "ok"' journal.txt)
	[ -z "$bad" ] || kh_fail "$1: a fresh block was acknowledged with another verdict than ok: $bad"
	{
		echo "CREATE TEMP TABLE acked (ua BIGINT, seq BIGINT);"
		echo "CREATE TEMP TABLE bought (ua BIGINT, ev BIGINT, price BIGINT);"
		awk "$HEX"'$1 == "ACK" { printf "INSERT INTO acked VALUES (%d, %d);\n", hex($3), $4 }' journal.txt
		awk "$HEX"'$1 == "BUY" { printf "INSERT INTO bought VALUES (%d, %d, %d);\n", hex($2), $3, $4 }' \
			bought.txt
		echo "SELECT 'lost', a.ua, a.seq FROM acked a WHERE (SELECT count(*) FROM usage_blocks b"
		echo "  WHERE b.ua = a.ua AND b.block_seq = a.seq AND b.verdict = 'ok') != 1;"
		echo "SELECT 'not-invoiced-once', ua, ev FROM bought WHERE ua IN (SELECT ua FROM acked)"
		echo "  AND (SELECT count(*) FROM invoices i WHERE i.ua = bought.ua AND i.event_id = bought.ev"
		echo "  AND i.price = bought.price) != 1;"
		echo "SELECT 'purchase-not-once', ua, ev FROM bought WHERE ua IN (SELECT ua FROM acked)"
		echo "  AND (SELECT count(*) FROM purchases p JOIN usage_blocks b ON b.ua = p.block_ua"
		echo "  AND b.block_seq = p.block_seq AND b.verdict = 'ok' WHERE p.ua = bought.ua"
		echo "  AND p.event_id = bought.ev) != 1;"
		echo "SELECT 'never-bought', ua, event_id FROM invoices i WHERE NOT EXISTS"
		echo "  (SELECT 1 FROM bought b WHERE b.ua = i.ua AND b.ev = i.event_id);"
		echo "SELECT 'twice', ua, event_id FROM invoices GROUP BY ua, event_id"
		echo "  HAVING count(*) > 1;"
		echo "SELECT 'wrong-subscriber', i.ua FROM invoices i JOIN cards c ON c.ua = i.ua"
		echo "  WHERE i.subscriber_id IS DISTINCT FROM c.subscriber_id;"
	} >"$KH_META/check.sql"
	if kh_db_is_pg; then
		out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 "$KH_DB" -f "$KH_META/check.sql" 2>&1) || kh_fail "$1: psql: $out"
	else
		out=$(sqlite3 -batch -bail center.db <"$KH_META/check.sql" 2>&1) || kh_fail "$1: sqlite3: $out"
	fi
	if [ -n "$out" ]; then
		kh_fail "$1: $(echo "$out" | head -n 20)"
	fi
}

# ---- the operator, the cards, their purchases ----

kh_card_set "$NCARDS"

start PID
kh_expect_api PUT /v1/credit-policy '{"initial_credit":100,"reload_amount":0}' 200
# The events the cards buy, in the catalogue at the price their ECMs carry (the center invoices
# at its catalogue price).
kh_expect_api POST /v1/products '{"name":"PPV"}' 201
kh_expect_api POST /v1/channels '{"id":1,"name":"C","product_id":1}' 201
ev=1
while [ "$ev" -le "$EVENTS" ]; do
	kh_expect_api POST /v1/events "{\"id\":$ev,\"name\":\"E$ev\",\"price\":10,\"channel_id\":1,\"start\":0,\"end\":4102444800}" 201
	ev=$((ev + 1))
done
i=1
for c in $CARDS; do
	ua=$(kh_ua "$c")
	b64=$(openssl x509 -in "auth/issued/card-$ua-sign.crt" -outform DER | basenc --base64url | tr -d '=\n')
	[ -n "$b64" ] || kh_fail "could not encode the certificate of card $ua"
	kh_expect_api POST /v1/subscribers "{\"name\":\"S$i\"}" 201
	grep -q "^{\"id\":$i," "$KH_META/body" || kh_fail "subscriber $i: $(cat "$KH_META/body")"
	kh_expect_api POST /v1/cards "{\"certificate\":\"$b64\"}" 201
	kh_expect_api POST "/v1/cards/$ua/assign" "{\"subscriber_id\":$i}" 200
	i=$((i + 1))
done
# shellcheck disable=SC2086 # the card list is split on purpose
"$LOAD" prepare --center "$URL" --db "$KH_DB" --authority auth --decoder dec.card --cam cam.card --events "$EVENTS" $CARDS \
	>bought.txt 2>"$KH_META/load.err" || kh_fail "prepare: $(cat "$KH_META/load.err")"
[ "$(grep -c '^BUY ' bought.txt)" -eq $((NCARDS * EVENTS)) ] || kh_fail "prepare: not every purchase was made"
[ "$(sql 'SELECT count(*) FROM invoices')" -eq 0 ] || kh_fail "invoices before any upload"

# ---- uploads in flight, and kill -9 ----

: >journal.txt
# shellcheck disable=SC2086
"$LOAD" run --center "$URL" --journal journal.txt --rounds 1000 $CARDS >"$KH_META/run.out" 2>"$KH_META/run.err" &
LPID=$!
i=0
while [ "$(grep -c '^ACKED ' journal.txt)" -lt $((3 * NCARDS)) ]; do
	kill -0 "$LPID" 2>/dev/null || kh_fail "the load ended before the kill: $(cat "$KH_META/run.err")"
	[ "$i" -lt 300 ] || kh_fail "fewer than $((3 * NCARDS)) uploads acknowledged within 30 s"
	sleep 0.1
	i=$((i + 1))
done
kill -KILL "$PID" || kh_fail "kill -9 of the center"
wait "$PID"
KH_PIDS=
wait "$LPID" || kh_fail "the load failed: $(cat "$KH_META/run.err")"
acked=$(grep -c '^ACKED ' journal.txt)
sent=$(awk '$1 == "SENT" { print $2 }' journal.txt | sort -u | wc -l)
unacked=$((sent - acked))
[ "$unacked" -ge 0 ] || kh_fail "more acknowledgements ($acked) than uploads sent ($sent)"
kh_note "killed the center after $acked acknowledged uploads; $unacked sent without an answer"

# ---- restart: every acknowledged block is there, once ----

start PID
check_stored "after the restart"
n=$(sql "SELECT count(*) FROM idempotency")
[ "$n" -ge "$acked" ] || kh_fail "after the restart: $n idempotency records for $acked acknowledged uploads"

# ---- the decoders retry: the unanswered uploads with their key and body, then new sessions ----

"$LOAD" retry --center "$URL" --journal journal.txt >"$KH_META/retry.out" 2>"$KH_META/retry.err" ||
	kh_fail "retry: $(cat "$KH_META/retry.err")"
kh_note "$(cat "$KH_META/retry.out") (replayed: committed before the kill, the answer lost)"
[ "$(grep -c '^ACKED ' journal.txt)" -eq "$sent" ] || kh_fail "after the retries some upload is still unanswered"
# shellcheck disable=SC2086
"$LOAD" run --center "$URL" --journal journal.txt --rounds 1 $CARDS >"$KH_META/run.out" 2>"$KH_META/run.err" ||
	kh_fail "new sessions: $(cat "$KH_META/run.err")"
grep -q "^sessions completed $NCARDS\$" "$KH_META/run.out" || kh_fail "new sessions: $(cat "$KH_META/run.out") $(cat "$KH_META/run.err")"
check_stored "after the retries"

# every purchase invoiced exactly once, to its subscriber, as the API says too
[ "$(sql 'SELECT count(*) FROM invoices')" -eq $((NCARDS * EVENTS)) ] ||
	kh_fail "$(sql 'SELECT count(*) FROM invoices') invoices for $((NCARDS * EVENTS)) purchases"
i=1
while [ "$i" -le "$NCARDS" ]; do
	kh_expect_api GET "/v1/subscribers/$i/invoices" "" 200
	n=$(grep -o '"price":10' "$KH_META/body" | wc -l)
	[ "$n" -eq "$EVENTS" ] || kh_fail "subscriber $i: $n invoices in the API, expected $EVENTS: $(cat "$KH_META/body")"
	i=$((i + 1))
done
kh_stop "$PID" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "SIGTERM after the crash test: exit status $KH_RC"
kh_note "ok: $(grep -c '^ACKED ' journal.txt) uploads acknowledged, each block once, $((NCARDS * EVENTS)) purchases invoiced once"
