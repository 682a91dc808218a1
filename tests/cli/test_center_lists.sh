# keyhole center against the lists, reads, renames, closes, deletes and health of the operator API
# (the endpoints beside those of test_center.sh), on a real `keyhole serve`. What it asserts:
# - health: /healthz and /readyz both answered (no token needed); with the database moved away,
#   readyz is 503 not_ready and `center health` exits 1 with one error line;
# - paging: 250 subscribers listed with --limit 100 --all are exactly 250, in id order, once
#   each (table and --json: one document, next_cursor null); page by page with --cursor, 100,
#   100, 50, and a page stays stable while rows are added; a cursor that does not decode is the
#   center's 400; filters (name prefix, percent-encoded; card state, subscriber, role; channel
#   product; event times) select exactly the items they name;
# - rename, close and delete change what a read then shows; each refusal (a subscriber with an
#   active card, a card that was used, a product still referred to) is 409 conflict, exit 1,
#   and nothing changed;
# - a card's EMM queue seen by the operator is the queue the card's open endpoint serves; the
#   subscriptions, invoices, bulk jobs and upload sessions lists answer what was done (an upload
#   session shows no nonce).
#
# Run by CTest as `sh test_center_lists.sh` with KEYHOLE and KH_SOURCE_DIR set; again with
# KH_TEST_PG_URL set (cli/test_center_lists_pg), on a PostgreSQL database of its own.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_center_lists
kh_need curl node
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
kh_db_init
unset KEYHOLE_CENTER KEYHOLE_CACERT KEYHOLE_TOKEN_FILE

kh_expect_ok authority init auth
for c in c1 c2 c3; do
	kh_expect_ok card issue --authority auth --role card --out $c.card
done
UA1=$(kh_ua c1.card)
UA2=$(kh_ua c2.card)
UA3=$(kh_ua c3.card)
[ -n "$UA3" ] || kh_fail "no UA for c3"
KH_TOKEN=an-operator-token-of-32-characters
(umask 077 && printf '%s\n' "$KH_TOKEN" >op.token)
kh_start_serve PID --token-file op.token
export KEYHOLE_CENTER="http://127.0.0.1:$PORT"

# rows: the data rows of the last table (its header and the next-cursor line left out)
rows()
{
	sed '1d; /^next cursor: /d' "$KH_OUT"
}

# ---- health: open, no token --------------------------------------------------------------------
kh_center_ok health
kh_out_has '^healthz: 200 ok$'
kh_out_has '^readyz: 200 ready$'
kh_center_ok health --json
cp "$KH_OUT" health.json
[ "$(kh_json health.json 'd.healthz.status + ":" + d.readyz.status')" = "ok:ready" ] ||
	kh_fail "health --json: $(cat health.json)"
export KEYHOLE_TOKEN_FILE=op.token

# ---- 250 subscribers, paged ----------------------------------------------------------------------
i=1
while [ "$i" -le 250 ]; do
	kh_center_ok subscriber add --name "sub-$(printf '%03d' "$i")"
	i=$((i + 1))
done
seq 1 250 >want.ids
kh_center_ok subscriber list --limit 100 --all
[ "$(sed -n 1p "$KH_OUT" | awk '{ print $1 " " $2 }')" = "ID NAME" ] || kh_fail "subscriber list: header $(sed -n 1p "$KH_OUT")"
rows | awk '{ print $1 }' >got.ids
cmp -s want.ids got.ids || kh_fail "subscriber list --limit 100 --all: not ids 1 to 250 once each, in order ($(wc -l <got.ids) rows)"
! grep -q '^next cursor' "$KH_OUT" || kh_fail "--all printed a next cursor"
kh_center_ok subscriber list --limit 100 --all --json
cp "$KH_OUT" all.json
[ "$(kh_json all.json 'd.subscribers.length')" = 250 ] || kh_fail "--all --json: not 250 subscribers"
[ "$(kh_json all.json 'd.subscribers.every((s, i) => s.id === i + 1 && s.name === "sub-" + String(i + 1).padStart(3, "0"))')" = true ] ||
	kh_fail "--all --json: not subscribers 1 to 250 in order"
[ "$(kh_json all.json 'd.next_cursor')" = null ] || kh_fail "--all --json: next_cursor is not null"
[ "$(kh_json all.json 'Object.keys(d).join(",")')" = "subscribers,next_cursor" ] ||
	kh_fail "--all --json: keys $(kh_json all.json 'Object.keys(d).join(",")')"
# page by page
kh_center_ok subscriber list --limit 100
[ "$(rows | wc -l)" -eq 100 ] || kh_fail "--limit 100: $(rows | wc -l) rows"
[ "$(rows | sed -n '1p;$p' | awk '{ print $1 }' | paste -sd,)" = "1,100" ] || kh_fail "page 1 is not ids 1 to 100"
C1=$(sed -n 's/^next cursor: \([^ ]*\) .*/\1/p' "$KH_OUT")
[ -n "$C1" ] || kh_fail "page 1: no next cursor line"
kh_center_ok subscriber list --limit 100 --cursor "$C1"
[ "$(rows | sed -n '1p;$p' | awk '{ print $1 }' | paste -sd,)" = "101,200" ] || kh_fail "page 2 is not ids 101 to 200"
C2=$(sed -n 's/^next cursor: \([^ ]*\) .*/\1/p' "$KH_OUT")
[ -n "$C2" ] && [ "$C2" != "$C1" ] || kh_fail "page 2: no new next cursor"
kh_center_ok subscriber list --limit 100 --cursor "$C2"
[ "$(rows | wc -l)" -eq 50 ] || kh_fail "page 3: $(rows | wc -l) rows, expected 50"
[ "$(rows | sed -n '1p;$p' | awk '{ print $1 }' | paste -sd,)" = "201,250" ] || kh_fail "page 3 is not ids 201 to 250"
! grep -q '^next cursor' "$KH_OUT" || kh_fail "the last page names a next cursor"
kh_center_ok subscriber list --limit 100 --json
cp "$KH_OUT" page.json
[ "$(kh_json page.json 'd.subscribers.length + ":" + typeof d.next_cursor')" = "100:string" ] ||
	kh_fail "--limit 100 --json: not one page of 100 with a next_cursor"
[ "$(kh_json page.json 'd.next_cursor')" = "$C1" ] || kh_fail "--json and the table name different cursors"
# a page is stable while rows are added (keyset, not OFFSET)
kh_center_ok subscriber add --name Zed
kh_out_has '^id: 251$'
kh_center_ok subscriber list --limit 1000 --cursor "$C1"
[ "$(rows | wc -l)" -eq 151 ] || kh_fail "after page 1, with a row added: $(rows | wc -l) rows, expected 151"
[ "$(rows | sed -n '1p;$p' | awk '{ print $1 }' | paste -sd,)" = "101,251" ] || kh_fail "the cursor moved when a row was added"
kh_center_fail subscriber list --cursor '!!not-a-cursor!!'
kh_err_has '^keyhole center: 400 invalid: '
# filters, percent-encoded
kh_center_ok subscriber list --name-prefix Ze
[ "$(rows | awk '{ print $1 ":" $2 }')" = "251:Zed" ] || kh_fail "--name-prefix Ze: $(rows)"
kh_center_ok subscriber list --name-prefix sub-00 --all --limit 3
[ "$(rows | wc -l)" -eq 9 ] || kh_fail "--name-prefix sub-00: $(rows | wc -l) rows, expected 9"
kh_center_ok subscriber add --name 'a&b=c d+e'
kh_center_ok subscriber list --name-prefix 'a&b=c d+'
[ "$(rows | wc -l)" -eq 1 ] || kh_fail "--name-prefix with & = space +: $(rows | wc -l) rows, expected 1"
kh_center_ok subscriber list --name-prefix 'a&'
[ "$(rows | wc -l)" -eq 1 ] || kh_fail "--name-prefix 'a&': $(rows | wc -l) rows"
kh_center_ok subscriber list --name-prefix nobody
kh_out_has '^no subscribers$'
# the token is still wanted
KEYHOLE_TOKEN_FILE=
kh_center_fail subscriber list
kh_err_has '^keyhole center: 401 unauthorised: '
KEYHOLE_TOKEN_FILE=op.token

# ---- the catalogue: read, rename, delete ---------------------------------------------------------
kh_center_ok product add --product 7 --name Sports
kh_center_ok product add --product 8 --name News
kh_center_ok product add --product 9 --name Spare
kh_center_ok product show 7
kh_out_has '^id: 7$'
kh_out_has '^name: Sports$'
kh_center_fail product show 99
kh_err_has '^keyhole center: 404 not_found: '
kh_center_ok product rename 8 --name "World News"
kh_out_has '^name: World News$'
kh_center_ok product show 8
kh_out_has '^name: World News$'
kh_center_ok product delete 9 --json
[ "$(cat "$KH_OUT")" = '{"deleted":true}' ] || kh_fail "product delete --json: $(cat "$KH_OUT")"
kh_center_fail product show 9
kh_err_has ' 404 not_found: '
kh_center_ok product list --limit 1 --all
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "7,8" ] || kh_fail "product list --limit 1 --all: $(rows)"
kh_center_ok channel add --channel 1 --name "Sports 1" --product 7
kh_center_ok channel add --channel 2 --name "News 1" --product 8
kh_center_ok channel add --channel 3 --name "News 2" --product 8
kh_center_ok channel list --product 8
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "2,3" ] || kh_fail "channel list --product 8: $(rows)"
kh_center_ok channel show 1
kh_out_has '^product_id: 7$'
kh_center_ok channel rename 3 --name "News Two"
kh_out_has '^name: News Two$'
kh_center_ok channel delete 3
kh_center_fail channel show 3
kh_err_has ' 404 not_found: '
kh_center_fail product delete 7
kh_err_has '^keyhole center: 409 conflict: '
kh_center_ok product show 7
kh_out_has '^name: Sports$'
kh_center_ok event add --event 55 --name Final --price 30 --channel 1 --end +7200
kh_center_ok event add --event 56 --name Later --price 20 --channel 1 --start +86400 --end +90000
kh_center_ok event list --since now+3600
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "56" ] || kh_fail "event list --since now+3600: $(rows)"
kh_center_ok event list --until now+3600
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "55" ] || kh_fail "event list --until now+3600: $(rows)"
kh_center_ok event show 55
kh_out_has '^price: 30$'
kh_center_ok event rename 55 --name "The Final"
kh_out_has '^name: The Final$'
kh_out_has '^price: 30$'
kh_center_ok event delete 56
kh_center_fail event show 56
kh_err_has ' 404 not_found: '

# ---- cards: filters, delete, the EMM queue -------------------------------------------------------
for u in "$UA1" "$UA2" "$UA3"; do
	kh_center_ok card register --cert "auth/issued/card-$u-sign.crt"
done
kh_center_ok card assign "$UA1" --subscriber 1
kh_center_ok subscribe --subscriber 1 --product 7 --end +86400
kh_center_ok card list --state issued
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "$UA2,$UA3" ] || kh_fail "card list --state issued: $(rows)"
kh_center_ok card list --state active --json
cp "$KH_OUT" active.json
[ "$(kh_json active.json 'd.cards.map(c => c.ua + "/" + c.subscriber_id).join(",")')" = "$UA1/1" ] ||
	kh_fail "card list --state active --json: $(cat active.json)"
kh_center_ok card list --subscriber 1
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "$UA1" ] || kh_fail "card list --subscriber 1: $(rows)"
kh_center_ok card list --role card --limit 1 --all
[ "$(rows | awk '{ print $1 }' | paste -sd,)" = "$UA1,$UA2,$UA3" ] || kh_fail "card list --role card --all: $(rows)"
kh_center_ok card list --role cam
kh_out_has '^no cards$'
kh_center_ok card delete "$UA3"
kh_center_fail card show "$UA3"
kh_err_has ' 404 not_found: '
kh_center_fail card delete "$UA1"
kh_err_has '^keyhole center: 409 conflict: '
kh_center_ok card show "$UA1"
kh_out_has '^state: active$'
kh_center_ok card emm "$UA1"
sed -n 1p "$KH_OUT" | grep -q 'SEQ' || kh_fail "card emm: no SEQ column: $(sed -n 1p "$KH_OUT")"
! sed -n 1p "$KH_OUT" | grep -q 'SECTION' || kh_fail "card emm shows the sections"
kh_center_ok card emm "$UA1" --all --json
cp "$KH_OUT" emm.json
curl -s --noproxy '*' -o open.json "$KEYHOLE_CENTER/v1/cards/$UA1/emm?limit=1000" || kh_fail "GET the card's open EMM queue"
OPEN=$(kh_json open.json 'd.emms.map(e => e.id + "/" + e.seq + "/" + e.section).join(",")')
[ -n "$OPEN" ] || kh_fail "the card's open EMM queue is empty"
[ "$(kh_json emm.json 'd.emms.map(e => e.id + "/" + e.seq + "/" + e.section).join(",")')" = "$OPEN" ] ||
	kh_fail "card emm --json is not the card's queue: $(cat emm.json)"

# ---- subscriber rename and close ---------------------------------------------------------------
kh_center_ok subscriber rename 1 --name "Ada Lovelace"
kh_out_has '^name: Ada Lovelace$'
kh_center_ok subscriber show 1
kh_out_has '^name: Ada Lovelace$'
kh_center_fail subscriber close 1
kh_err_has '^keyhole center: 409 conflict: '
kh_center_ok subscriber show 1
! grep -q '^closed_at' "$KH_OUT" || kh_fail "a refused close closed subscriber 1"
kh_center_ok subscriber close 2
kh_out_has '^closed_at: [0-9]+$'
kh_center_ok subscriber show 2
kh_out_has '^closed_at: [0-9]+$'
kh_center_fail card assign "$UA2" --subscriber 2
kh_err_has '^keyhole center: 409 '
kh_center_ok card show "$UA2"
kh_out_has '^state: issued$'
kh_center_fail subscribe --subscriber 2 --product 7 --end +60
kh_err_has '^keyhole center: 409 '

# ---- subscriptions, invoices, jobs, upload sessions ----------------------------------------------
kh_center_ok subscriber subscriptions 1
[ "$(rows | awk '{ print $1 }')" = 7 ] || kh_fail "subscriber subscriptions 1: $(rows)"
kh_center_ok subscriber subscriptions 1 --json
cp "$KH_OUT" subs.json
[ "$(kh_json subs.json 'd.subscriptions.length + ":" + d.subscriptions[0].product_id')" = "1:7" ] ||
	kh_fail "subscriber subscriptions --json: $(cat subs.json)"
kh_center_ok invoices
kh_out_has '^no invoices$'
kh_center_ok invoices --since 0 --until now --all --json
cp "$KH_OUT" inv.json
[ "$(kh_json inv.json 'd.invoices.length + ":" + d.next_cursor')" = "0:null" ] || kh_fail "invoices --json: $(cat inv.json)"
kh_center_ok invoices --subscriber 1 --since 0
kh_out_has '^no invoices$'
kh_center_ok subscribe --subscriber 3 --subscriber 4 --product 8 --end +3600 --idempotency-key lists-job-1
kh_center_ok jobs --json
cp "$KH_OUT" jobs.json
[ "$(kh_json jobs.json 'd.jobs.length + ":" + d.jobs[0].product + ":" + d.jobs[0].done')" = "1:8:true" ] ||
	kh_fail "jobs --json: $(cat jobs.json)"
JOB=$(kh_json jobs.json 'String(d.jobs[0].id !== undefined ? d.jobs[0].id : d.jobs[0].key)')
kh_center_ok jobs
[ "$(rows | wc -l)" -eq 1 ] || kh_fail "jobs: $(rows | wc -l) rows"
kh_center_ok jobs "$JOB" --json
cp "$KH_OUT" job.json
[ "$(kh_json job.json 'd.product + ":" + d.done')" = "8:true" ] || kh_fail "jobs $JOB --json: $(cat job.json)"
kh_center_fail jobs no-such-job
kh_err_has ' 404 not_found: '
kh_center_ok uploads
kh_out_has '^no sessions$'
kh_expect_ok decoder connect --center "$KEYHOLE_CENTER" --card c1.card --m1 m1
kh_center_ok uploads --ua "$UA1" --json
cp "$KH_OUT" up.json
[ "$(kh_json up.json 'd.sessions.length')" = 1 ] || kh_fail "uploads --ua: $(cat up.json)"
! grep -qi 'nonce' up.json || kh_fail "an upload session shows its nonce: $(cat up.json)"
kh_center_ok uploads --ua "$UA2"
kh_out_has '^no sessions$'

# ---- readyz: the database gone ------------------------------------------------------------------
# (on PostgreSQL: it takes no connection any more, and the center's are cut)
if kh_db_is_pg; then
	psql -X -q -v ON_ERROR_STOP=1 "$KH_TEST_PG_URL" -c "ALTER DATABASE $KH_PG_DB ALLOW_CONNECTIONS false" \
		-c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$KH_PG_DB'" >/dev/null ||
		kh_fail "could not close the test database"
else
	mv center.db moved.db
fi
kh_center_fail health
kh_out_has '^healthz: 200 ok$'
kh_out_has '^readyz: 503 not_ready$'
kh_err_has '^keyhole center: 503 not_ready: '
kh_stop "$PID" TERM
kh_note "ok"
