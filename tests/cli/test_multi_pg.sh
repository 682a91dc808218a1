# Several `keyhole serve` on one PostgreSQL database (docs/internals/sms.md "Several centers on one
# database"): the real binary, loopback HTTP, real cards and the real decoder client.
#
# 1. Two instances, A and B, on one database of the shared test cluster (KH_TEST_PG_URL). 32
#    cards, each its own subscriber, upload usage sessions (tests/tools/upload_load.c, one client
#    thread per card: 16 against A, 16 against B) while the operator, spread over both, subscribes
#    every subscriber to a product, replaces a card and runs a bulk subscription; Idempotency-Keys
#    are sent to one instance and again to the other; many reloads of one card race on both until
#    a transaction retry shows in /metrics. In the middle of it A is killed with SIGKILL: B keeps
#    answering, the uploads A never answered are retried on B with their keys and bodies.
#    Afterwards, with SQL on the database itself: per-card EMM sequence numbers 1..n with no gap
#    and no duplicate, in queue order; every acknowledged block stored once with verdict ok; every
#    purchase invoiced once; every reload id once and every 200 reload answer present; the EMM
#    queue read by its cursor through B gives every EMM exactly once.
# 2. The database goes away: a PRIVATE cluster (tests/tools/pgtmp.sh in this test's own directory)
#    is stopped while requests run against a serve on it: they fail with 503 database_unavailable,
#    /readyz says not ready, every 2xx answer's write is there afterwards, and once the cluster is
#    back the same serve process answers 2xx.
#
# Run by CTest as `sh test_multi_pg.sh` with KEYHOLE, KH_SOURCE_DIR, KH_UPLOAD_LOAD and
# KH_TEST_PG_URL set (FIXTURES_REQUIRED pg).

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_multi_pg
kh_need curl openssl basenc psql awk
[ -x "$KH_UPLOAD_LOAD" ] || kh_fail "KH_UPLOAD_LOAD (the kh_upload_load helper) is not set or not executable"
[ -n "$KH_TEST_PG_URL" ] || kh_fail "KH_TEST_PG_URL is not set (the pg fixture)"
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

LOAD=$KH_UPLOAD_LOAD
NCARDS=32
EVENTS=2
DBNAME=kh_multi_$$_$(date +%s)
PRIV=

# The shared cluster's database of this test, and the private cluster, go with the test.
mp_cleanup()
{
	mp_rc=$?
	for kh_p in $KH_PIDS; do
		kill -KILL "$kh_p" 2>/dev/null
		wait "$kh_p" 2>/dev/null
	done
	KH_PIDS=
	psql "$KH_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" >/dev/null 2>&1
	[ -n "$PRIV" ] && (cd / && sh "$KH_SOURCE_DIR/tests/tools/pgtmp.sh" stop "$PRIV") >/dev/null 2>&1
	kh_cleanup
	return "$mp_rc"
}
trap mp_cleanup EXIT

# url_of ADMIN_URL DB: the URL of database DB on the cluster of ADMIN_URL (.../postgres?...)
url_of()
{
	echo "$1" | sed "s|:///postgres?|:///$2?|"
}

psql "$KH_TEST_PG_URL" -qc "CREATE DATABASE $DBNAME" >/dev/null 2>"$KH_META/psql.err" ||
	kh_fail "CREATE DATABASE: $(cat "$KH_META/psql.err")"
DB=$(url_of "$KH_TEST_PG_URL" "$DBNAME")

# sql QUERY: run it on the database (unaligned, tuples only)
sql()
{
	psql "$DB" -XAtq -v ON_ERROR_STOP=1 -c "$1" 2>"$KH_META/sql.err" || kh_fail "psql: $(cat "$KH_META/sql.err")"
}

# serve_on PIDVAR PORTVAR DBURL: `keyhole serve` on DBURL, a free loopback port; 96 threads, since
# a client address may hold a quarter of them (the 16 load clients and the operator share one)
serve_on()
{
	: >"$KH_META/daemon.out"
	kh_start_daemon "$1" serve --db "$3" --authority auth --listen 127.0.0.1:0 --threads 96
	eval "kh_wait_listening \$$1"
	eval "$2=\$PORT"
}

# api PORT METHOD PATH [BODY [KEY]]: one request to the instance on PORT, with an Idempotency-Key
# when KEY is given; the status in $ST, the body in $KH_META/body.
api()
{
	if [ -n "$5" ]; then
		ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X "$2" -H 'Content-Type: application/json' \
			-H "Idempotency-Key: $5" --data "$4" "http://127.0.0.1:$1$3")
	elif [ -n "$4" ]; then
		ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X "$2" -H 'Content-Type: application/json' \
			--data "$4" "http://127.0.0.1:$1$3")
	else
		ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X "$2" "http://127.0.0.1:$1$3")
	fi
}

# expect PORT METHOD PATH BODY KEY STATUS: api, then the status
expect()
{
	api "$1" "$2" "$3" "$4" "$5"
	[ "$ST" = "$6" ] || kh_fail "$2 $3 on :$1: status $ST, expected $6: $(cat "$KH_META/body")"
}

# metric PORT NAME: the value of an unlabelled metric
metric()
{
	curl -s --noproxy '*' "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

# ======================================================== 1. two instances on one database

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
CARDS=
i=1
while [ "$i" -le $((NCARDS + 2)) ]; do
	kh_expect_ok card issue --authority auth --role card --out "c$i.card"
	[ "$i" -le "$NCARDS" ] && CARDS="$CARDS c$i.card"
	i=$((i + 1))
done

serve_on PA PORTA "$DB"
serve_on PB PORTB "$DB"
[ "$(sql 'SELECT count(*) FROM service_keys')" -eq 1 ] || kh_fail "two instances starting made $(sql 'SELECT count(*) FROM service_keys') first service keys"

expect "$PORTA" PUT /v1/credit-policy '{"initial_credit":100,"reload_amount":5}' "" 200
expect "$PORTB" POST /v1/products '{"name":"PPV"}' "" 201
expect "$PORTA" POST /v1/products '{"name":"Sports"}' "" 201
expect "$PORTB" POST /v1/products '{"name":"Movies"}' "" 201
expect "$PORTA" POST /v1/channels '{"id":1,"name":"C","product_id":1}' "" 201
ev=1
while [ "$ev" -le "$EVENTS" ]; do
	expect "$PORTB" POST /v1/events "{\"id\":$ev,\"name\":\"E$ev\",\"price\":10,\"channel_id\":1,\"start\":0,\"end\":4102444800}" "" 201
	ev=$((ev + 1))
done
# every card registered and assigned, on A and B in turn
i=1
while [ "$i" -le $((NCARDS + 2)) ]; do
	if [ $((i % 2)) -eq 0 ]; then P=$PORTA; else P=$PORTB; fi
	ua=$(kh_ua "c$i.card")
	expect "$P" POST /v1/cards "{\"certificate\":\"$(kh_cert_b64 "$ua")\"}" "" 201
	if [ "$i" -le $((NCARDS + 1)) ]; then
		expect "$P" POST /v1/subscribers "{\"name\":\"S$i\"}" "" 201
		sid=$(kh_json "$KH_META/body" d.id)
		expect "$P" POST "/v1/cards/$ua/assign" "{\"subscriber_id\":$sid}" "" 200
	fi
	i=$((i + 1))
done

# Idempotency-Keys honoured across instances: the same key and body on B get A's stored answer,
# another body 422.
expect "$PORTA" POST /v1/subscribers '{"name":"K"}' idem-sub-1 201
cp "$KH_META/body" first.json
expect "$PORTB" POST /v1/subscribers '{"name":"K"}' idem-sub-1 201
cmp -s first.json "$KH_META/body" || kh_fail "the same key on B: another answer than A's: $(cat "$KH_META/body")"
expect "$PORTB" POST /v1/subscribers '{"name":"L"}' idem-sub-1 422
[ "$(sql "SELECT count(*) FROM subscribers WHERE name IN ('K', 'L')")" -eq 1 ] || kh_fail "a key's write done twice"

# shellcheck disable=SC2086 # the card list is split on purpose
"$LOAD" prepare --center "http://127.0.0.1:$PORTA" --db "$DB" --authority auth --decoder dec.card --cam cam.card \
	--events "$EVENTS" $CARDS >bought.txt 2>"$KH_META/load.err" || kh_fail "prepare: $(cat "$KH_META/load.err")"
[ "$(grep -c '^BUY ' bought.txt)" -eq $((NCARDS * EVENTS)) ] || kh_fail "prepare: not every purchase was made"

# ---- the load: 16 clients on each instance ----
CA=
CB=
i=1
for c in $CARDS; do
	if [ $((i % 2)) -eq 0 ]; then CA="$CA $c"; else CB="$CB $c"; fi
	i=$((i + 1))
done
: >journal-a.txt
: >journal-b.txt
# shellcheck disable=SC2086
"$LOAD" run --center "http://127.0.0.1:$PORTA" --journal journal-a.txt --rounds 1000 $CA >"$KH_META/run-a.out" 2>"$KH_META/run-a.err" &
LA=$!
# shellcheck disable=SC2086
"$LOAD" run --center "http://127.0.0.1:$PORTB" --journal journal-b.txt --rounds 6 $CB >"$KH_META/run-b.out" 2>"$KH_META/run-b.err" &
LB=$!
KH_PIDS="$KH_PIDS $LA $LB"

# the operator meanwhile, on both: a subscription per subscriber, a replacement, a bulk job
i=1
while [ "$i" -le "$NCARDS" ]; do
	if [ $((i % 2)) -eq 0 ]; then P=$PORTA; else P=$PORTB; fi
	expect "$P" POST "/v1/subscribers/$i/subscriptions" '{"product_id":2,"start":0,"end":4102444800}' "" 201
	i=$((i + 1))
done
old=$(kh_ua "c$((NCARDS + 1)).card")
new=$(kh_ua "c$((NCARDS + 2)).card")
expect "$PORTB" POST "/v1/cards/$old/replace" "{\"new_ua\":\"$new\"}" "" 200
expect "$PORTA" POST /v1/products/3/subscriptions '{"start":0,"end":4102444800,"all":true}' bulk-1 201
cp "$KH_META/body" bulk.json
expect "$PORTB" POST /v1/products/3/subscriptions '{"start":0,"end":4102444800,"all":true}' bulk-1 200
[ "$(kh_json "$KH_META/body" d.emms_queued)" = "$(kh_json bulk.json d.emms_queued)" ] ||
	kh_fail "the bulk job replayed on B: $(cat "$KH_META/body"), A answered $(cat bulk.json)"

# Reloads of one card race on both instances (each its own key) until a retry shows in /metrics.
RUA=$(kh_ua c$((NCARDS + 2)).card)
: >reloads.txt
round=0
retries=0
while [ "$retries" -eq 0 ]; do
	[ "$round" -lt 20 ] || kh_fail "no transaction retry after 20 rounds of 16 concurrent reloads of one card"
	k=0
	CP=
	while [ "$k" -lt 16 ]; do
		if [ $((k % 2)) -eq 0 ]; then P=$PORTA; else P=$PORTB; fi
		curl -s --noproxy '*' -o "$KH_META/reload-$round-$k" -w '%{http_code}' -X POST \
			-H "Idempotency-Key: reload-$round-$k" "http://127.0.0.1:$P/v1/cards/$RUA/reload" \
			>"$KH_META/reload-st-$round-$k" &
		CP="$CP $!"
		k=$((k + 1))
	done
	for p in $CP; do
		wait "$p"
	done
	k=0
	while [ "$k" -lt 16 ]; do
		if [ "$(cat "$KH_META/reload-st-$round-$k")" = 200 ]; then
			kh_json "$KH_META/reload-$round-$k" d.reload_id >>reloads.txt
		fi
		k=$((k + 1))
	done
	retries=$(($(metric "$PORTA" keyhole_store_tx_retries_total) + $(metric "$PORTB" keyhole_store_tx_retries_total)))
	round=$((round + 1))
done
kh_note "a transaction retry showed in /metrics after $round rounds of concurrent reloads ($retries retries)"

# ---- kill -9 of A in the middle of the load ----
i=0
while [ "$(grep -c '^ACKED ' journal-a.txt)" -lt 16 ]; do
	kill -0 "$LA" 2>/dev/null || kh_fail "A's load ended before the kill: $(cat "$KH_META/run-a.err")"
	[ "$i" -lt 600 ] || kh_fail "fewer than 16 uploads acknowledged by A within 60 s"
	sleep 0.1
	i=$((i + 1))
done
kill -KILL "$PA" || kh_fail "kill -9 of A"
wait "$PA" 2>/dev/null
# B keeps answering, reads and writes
expect "$PORTB" GET /readyz "" "" 200
expect "$PORTB" POST /v1/subscribers '{"name":"after the kill"}' after-kill 201
wait "$LA"
wait "$LB" || kh_fail "B's load failed: $(cat "$KH_META/run-b.err")"
grep -q "^sessions completed $((NCARDS / 2 * 6))\$" "$KH_META/run-b.out" ||
	kh_fail "B's clients: $(cat "$KH_META/run-b.out") $(cat "$KH_META/run-b.err")"
# the uploads A never answered, retried on B with their keys and bodies
"$LOAD" retry --center "http://127.0.0.1:$PORTB" --journal journal-a.txt >"$KH_META/retry.out" 2>"$KH_META/retry.err" ||
	kh_fail "retry on B: $(cat "$KH_META/retry.err")"
kh_note "A killed after $(grep -c '^ACKED ' journal-a.txt) answers; on B: $(cat "$KH_META/retry.out")"
# an upload A acknowledged, sent again to B with its key: B answers it from the store
key=$(awk '$1 == "ACKED" { print $2; exit }' journal-a.txt)
line=$(grep "^SENT $key " journal-a.txt | head -n 1)
body=${line#SENT "$key" * }
path=$(echo "$line" | awk '{ print $3 }' | sed 's|^http://[^/]*||')
curl -s --noproxy '*' -D "$KH_META/hdr" -o "$KH_META/body" -X POST -H 'Content-Type: application/json' \
	-H "Idempotency-Key: $key" --data "$body" "http://127.0.0.1:$PORTB$path" >/dev/null
grep -qi '^Idempotent-Replayed: true' "$KH_META/hdr" || kh_fail "an upload A acknowledged, sent again to B, was not replayed: $(cat "$KH_META/hdr")"

# ---- the invariants, on the database itself ----
cat journal-a.txt journal-b.txt >journal.txt
HEX='function hex(s,  i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789ABCDEF", toupper(substr(s, i, 1))) - 1; return n } '
{
	echo "CREATE TEMP TABLE acked (ua BIGINT, seq BIGINT);"
	echo "CREATE TEMP TABLE bought (ua BIGINT, ev BIGINT, price BIGINT);"
	echo "CREATE TEMP TABLE reloaded (id BIGINT);"
	awk "$HEX"'$1 == "ACK" { printf "INSERT INTO acked VALUES (%d, %d);\n", hex($3), $4 }' journal.txt
	awk "$HEX"'$1 == "BUY" { printf "INSERT INTO bought VALUES (%d, %d, %d);\n", hex($2), $3, $4 }' bought.txt
	awk '{ printf "INSERT INTO reloaded VALUES (%d);\n", $1 }' reloads.txt
	# per-card EMM sequence numbers: 1..n, each once, the counter at n, increasing in queue order
	echo "SELECT 'seq-not-1..n', address FROM emm_queue GROUP BY address_type, address"
	echo "  HAVING count(*) <> max(seq) OR count(DISTINCT seq) <> count(*) OR min(seq) <> 1;"
	echo "SELECT 'seq-counter', q.address FROM emm_seq s JOIN (SELECT address_type, address, max(seq) AS m"
	echo "  FROM emm_queue GROUP BY address_type, address) q USING (address_type, address) WHERE s.last_seq <> q.m;"
	echo "SELECT 'seq-order', a.address FROM emm_queue a JOIN emm_queue b ON a.address_type = b.address_type"
	echo "  AND a.address = b.address AND a.id < b.id AND a.seq > b.seq LIMIT 5;"
	# every acknowledged block once, ok; every purchase of a card with an acknowledged block invoiced once
	echo "SELECT 'lost', a.ua, a.seq FROM acked a WHERE (SELECT count(*) FROM usage_blocks b"
	echo "  WHERE b.ua = a.ua AND b.block_seq = a.seq AND b.verdict = 'ok') <> 1;"
	echo "SELECT 'ack-not-ok', ua, seq FROM acked a WHERE NOT EXISTS (SELECT 1 FROM usage_blocks b"
	echo "  WHERE b.ua = a.ua AND b.block_seq = a.seq AND b.verdict = 'ok');"
	echo "SELECT 'not-invoiced-once', ua, ev FROM bought WHERE ua IN (SELECT ua FROM acked)"
	echo "  AND (SELECT count(*) FROM invoices i WHERE i.ua = bought.ua AND i.event_id = bought.ev) <> 1;"
	echo "SELECT 'twice', ua, event_id FROM invoices GROUP BY ua, event_id HAVING count(*) > 1;"
	echo "SELECT 'purchase-twice', ua, event_id FROM purchases GROUP BY ua, event_id HAVING count(*) > 1;"
	# credit: every reload answered 200 is there, each reload id once, the counter at the last
	echo "SELECT 'reload-lost', id FROM reloaded r WHERE NOT EXISTS (SELECT 1 FROM credit_reloads c"
	echo "  WHERE c.ua = $(printf '%d' "0x$RUA") AND c.reload_id = r.id);"
	echo "SELECT 'reload-answered-twice', id FROM reloaded GROUP BY id HAVING count(*) > 1;"
	echo "SELECT 'reload-counter', ua FROM cards c WHERE last_reload_id <> (SELECT count(*) FROM credit_reloads r"
	echo "  WHERE r.ua = c.ua);"
	# the replacement and the bulk job, once
	echo "SELECT 'replace', ua FROM cards WHERE ua = $(printf '%d' "0x$old") AND (state <> 'replaced'"
	echo "  OR replaced_by <> $(printf '%d' "0x$new"));"
	echo "SELECT 'bulk', key FROM bulk_jobs WHERE key LIKE '%bulk-1%' AND done <> 1;"
	echo "SELECT 'subscriptions', count(*) FROM subscriptions WHERE product_id = 2 HAVING count(*) <> $NCARDS;"
} >check.sql
out=$(psql "$DB" -XAtq -v ON_ERROR_STOP=1 -f check.sql 2>&1) || kh_fail "check: $out"
[ -z "$out" ] || kh_fail "invariants broken: $(echo "$out" | head -n 20)"
# and as an operator checks them: keyhole store check, every rule of the center
kh_expect_ok store check --db "$DB"
kh_out_has '^ok: '
[ "$(sql 'SELECT count(*) FROM idempotency')" -gt 0 ] || kh_fail "no idempotency record"

# The queue by its cursor, through B: every EMM exactly once.
since=0
: >emm-ids.txt
while :; do
	expect "$PORTB" GET "/v1/emm?since=$since&limit=1000" "" "" 200
	kh_json "$KH_META/body" 'd.emms.map(e => e.id).join("\n")' | grep . >>emm-ids.txt
	next=$(kh_json "$KH_META/body" d.last_id)
	[ "$next" = "$since" ] && break
	since=$next
done
n=$(sql 'SELECT count(*) FROM emm_queue')
[ "$(wc -l <emm-ids.txt)" -eq "$n" ] || kh_fail "the queue's cursor gave $(wc -l <emm-ids.txt) EMMs, the queue has $n"
[ "$(sort -u emm-ids.txt | wc -l)" -eq "$n" ] || kh_fail "the queue's cursor gave an EMM twice"
kh_stop "$PB" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "B on SIGTERM: exit status $KH_RC"
kh_note "two instances: $(grep -c '^ACKED ' journal.txt) uploads acknowledged, $n EMMs, every invariant held"

# ======================================================== 2. the database goes away

# As root the cluster runs as the user postgres, who must reach inside this test's directory.
[ "$(id -u)" -eq 0 ] && chmod 0711 "$KH_TMP"
PRIV=$KH_TMP/pg
PURL=$(cd / && sh "$KH_SOURCE_DIR/tests/tools/pgtmp.sh" start "$PRIV" 2>"$KH_META/pgtmp.err") ||
	kh_fail "private cluster: $(cat "$KH_META/pgtmp.err")"
psql "$PURL" -qc "CREATE DATABASE outage" >/dev/null 2>"$KH_META/psql.err" || kh_fail "CREATE DATABASE: $(cat "$KH_META/psql.err")"
ODB=$(url_of "$PURL" outage)
BINDIR=
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n); do
	[ -x "$d/pg_ctl" ] && BINDIR=$d
done
# pgctl ARGS...: pg_ctl on the private cluster, as the user it runs as (pgtmp.sh's rule)
pgctl()
{
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && runuser -u postgres -- "$BINDIR/pg_ctl" -D "$PRIV/data" "$@")
	else
		"$BINDIR/pg_ctl" -D "$PRIV/data" "$@"
	fi
}
serve_on PC PORTC "$ODB"
expect "$PORTC" GET /readyz "" "" 200
expect "$PORTC" POST /v1/products '{"name":"before"}' "" 201

# requests run (a writer in the background, one subscriber each) while the cluster is stopped
: >outage.txt
(
	n=0
	while [ "$n" -lt 400 ] && [ ! -f "$KH_META/stop-writer" ]; do
		st=$(curl -s --noproxy '*' -o "$KH_META/w-body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
			--data "{\"name\":\"w$n\"}" "http://127.0.0.1:$PORTC/v1/subscribers")
		echo "$n $st $(tr -d '\n' <"$KH_META/w-body")" >>outage.txt
		n=$((n + 1))
		sleep 0.05
	done
) &
WP=$!
KH_PIDS="$KH_PIDS $WP"
sleep 0.5
pgctl -m fast -w stop >/dev/null || kh_fail "could not stop the private cluster"
api "$PORTC" POST /v1/subscribers '{"name":"while down"}'
[ "$ST" = 503 ] || kh_fail "a write with the database down: status $ST: $(cat "$KH_META/body")"
grep -q '"database_unavailable"' "$KH_META/body" || kh_fail "a write with the database down: $(cat "$KH_META/body")"
api "$PORTC" GET /readyz
[ "$ST" = 503 ] || kh_fail "/readyz with the database down: status $ST: $(cat "$KH_META/body")"
api "$PORTC" GET /v1/products
[ "$ST" = 503 ] || kh_fail "a read with the database down: status $ST: $(cat "$KH_META/body")"
sleep 1
pgctl -l "$PRIV/data/server.log" -w -t 60 start >/dev/null || kh_fail "could not start the private cluster again"
# the same process answers again (each connection is made again at its next transaction)
i=0
while :; do
	api "$PORTC" GET /readyz
	[ "$ST" = 200 ] && break
	[ "$i" -lt 100 ] || kh_fail "/readyz after the database came back: $ST $(cat "$KH_META/body")"
	sleep 0.1
	i=$((i + 1))
done
expect "$PORTC" POST /v1/products '{"name":"after"}' "" 201
sleep 0.3
: >"$KH_META/stop-writer"
wait "$WP"
grep -q ' 503 .*database_unavailable' outage.txt || kh_fail "no request of the writer met the outage: $(head -n 5 outage.txt)"
bad=$(awk '$2 != 201 && $2 != 503' outage.txt)
[ -z "$bad" ] || kh_fail "answers other than 201 or 503 during the outage: $(echo "$bad" | head -n 5)"
# nothing acknowledged that was not committed (a 503 whose commit the server made before the
# connection broke may still be stored: the client cannot know, and retries with its key)
awk '$2 == 201 { print $1 }' outage.txt | sort >acked-w.txt
psql "$ODB" -XAtq -c "SELECT substr(name, 2) FROM subscribers WHERE name LIKE 'w%'" 2>"$KH_META/psql.err" | sort >stored-w.txt ||
	kh_fail "psql: $(cat "$KH_META/psql.err")"
lost=$(comm -23 acked-w.txt stored-w.txt)
[ -z "$lost" ] || kh_fail "acknowledged (201) but not stored: $(echo "$lost" | tr '\n' ' ')"
[ "$(sort -u stored-w.txt | wc -l)" -eq "$(wc -l <stored-w.txt)" ] || kh_fail "a write stored twice"
kh_expect_ok store check --db "$ODB"
kh_out_has '^ok: '
kh_stop "$PC" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "the serve of the outage on SIGTERM: exit status $KH_RC"
kh_note "outage: $(grep -c ' 503 ' outage.txt) requests refused with 503, $(wc -l <acked-w.txt) acknowledged and stored; the same process served again"
