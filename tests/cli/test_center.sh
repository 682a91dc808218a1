# keyhole center: the operator's client, driven against a real `keyhole serve` on loopback, for
# every command today's center answers. What it asserts:
# - the operator's token is required by the center (401 without it, one error line, exit 1) and
#   never printed by any command run here, failures included; a token file others can read is
#   refused before anything is sent;
# - the environment gives --center, --token-file and --cacert, and an option on the command line
#   wins over it; the common options may come before the resource;
# - a subscriber created is shown with its name, and --json is the center's answer, valid JSON,
#   with the same id; a card registered from the PEM certificate `card issue` wrote (and another
#   from DER) is shown with its UA; a refused write exits 1 with the API's status and code on one
#   line, and changes nothing; a write repeated with the same --idempotency-key is done once
#   and answered the same (the reload, the bulk subscription, a subscriber's creation: the same
#   id twice), and the key with another subscriber's name is refused (422);
# - the catalogue, credit policy, subscriptions (one, several, all), reload, service keys,
#   rights renewal, replace and forfeit, invoices, unsubscribe, each checked by what the center
#   says afterwards;
# - a write whose answer was lost is sent once more with the same (random) key and done once:
#   a reload, a creation (one subscriber more, the answer naming it), a key rotation (one
#   version more); a read is not sent again;
# - https with --cacert (and KEYHOLE_CACERT), and its refusal without; no answer at all is one
#   error line, exit 1.
#
# Run by CTest as `sh test_center.sh` with KEYHOLE and KH_SOURCE_DIR set; again with
# KH_TEST_PG_URL set (cli/test_center_pg), on a PostgreSQL database of its own.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_center
kh_need curl openssl node sqlite3
kh_db_init
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
unset KEYHOLE_CENTER KEYHOLE_CACERT KEYHOLE_TOKEN_FILE

kh_expect_ok authority init auth
for c in c1 c2 c3 c4; do
	kh_expect_ok card issue --authority auth --role card --out $c.card
done
UA1=$(kh_ua c1.card)
UA2=$(kh_ua c2.card)
UA3=$(kh_ua c3.card)
UA4=$(kh_ua c4.card)
[ -n "$UA4" ] || kh_fail "no UA for c4"
openssl x509 -in "auth/issued/card-$UA2-sign.crt" -outform DER -out c2.der || kh_fail "openssl: DER of card 2"

KH_TOKEN=an-operator-token-of-32-characters
(umask 077 && printf '%s\n' "$KH_TOKEN" >op.token && printf 'a-wrong-token-of-thirty-two-chars\n' >bad.token)
kh_start_serve PID --token-file op.token
C=http://127.0.0.1:$PORT

# ---- the token: required by the center, read from a private file, never printed ----------------
kh_center_fail --center "$C" subscriber add --name Ada
kh_err_has '^keyhole center: 401 unauthorised: '
kh_center_fail --center "$C" -T bad.token subscriber add --name Ada
kh_err_has '^keyhole center: 401 unauthorised: '
chmod 644 op.token
kh_center_fail --center "$C" -T op.token subscriber add --name Ada
kh_err_has 'op\.token'
chmod 600 op.token
kh_api GET /v1/subscribers/1
[ "$ST" = 401 ] || kh_fail "curl without a token: $ST"
N=$(kh_sql 'SELECT count(*) FROM subscribers')
[ "$N" = 0 ] || kh_fail "refused requests created $N subscriber(s)"

# ---- subscribers --------------------------------------------------------------------------------
kh_center_ok --center "$C" -T op.token subscriber add --name Ada
kh_out_has '^id: 1$'
kh_out_has '^name: Ada$'
kh_center_ok subscriber add --name "Bob Marley" --json --center "$C" --token-file op.token
cp "$KH_OUT" bob.json
[ "$(kh_json bob.json 'd.id')" = 2 ] || kh_fail "--json: not the id 2: $(cat bob.json)"
[ "$(kh_json bob.json 'd.name')" = "Bob Marley" ] || kh_fail "--json: not the name: $(cat bob.json)"
[ "$(cat bob.json)" = '{"id":2,"name":"Bob Marley"}' ] || kh_fail "--json is not the answer as it came: $(cat bob.json)"
kh_center_ok --center "$C" -T op.token subscriber show 2
kh_out_has '^id: 2$'
kh_out_has '^name: Bob Marley$'
kh_out_has '^cards: none$'
kh_center_ok --center "$C" -T op.token --json subscriber show 2
cp "$KH_OUT" show.json
[ "$(kh_json show.json 'd.id + ":" + d.name + ":" + d.cards.length')" = "2:Bob Marley:0" ] ||
	kh_fail "subscriber show --json: $(cat show.json)"
kh_center_fail --center "$C" -T op.token subscriber show 99
kh_err_has '^keyhole center: 404 not_found: subscriber not found$'
[ ! -s "$KH_OUT" ] || kh_fail "a refused show printed on stdout"

kh_center_ok --center "$C" -T op.token subscriber add --name Cy
kh_out_has '^id: 3$'
kh_center_ok --center "$C" -T op.token subscriber add --name Dee
kh_out_has '^id: 4$'

# ---- the environment, and the command line winning over it -------------------------------------
export KEYHOLE_CENTER="$C" KEYHOLE_TOKEN_FILE=op.token
kh_center_ok subscriber show 1
kh_out_has '^name: Ada$'
KEYHOLE_CENTER=http://127.0.0.1:1
kh_center_ok --center "$C" subscriber show 1
kh_out_has '^name: Ada$'
kh_center_fail subscriber show 1
kh_err_has '^keyhole center: http://127\.0\.0\.1:1: no answer'
KEYHOLE_CENTER="$C"
KEYHOLE_TOKEN_FILE=bad.token
kh_center_fail subscriber show 1
kh_err_has ' 401 unauthorised: '
kh_center_ok -T op.token subscriber show 1
kh_out_has '^name: Ada$'
KEYHOLE_TOKEN_FILE=op.token
KEYHOLE_CENTER=http://192.0.2.1:8480
kh_center subscriber show 1
[ "$KH_RC" -eq 2 ] || kh_fail "KEYHOLE_CENTER with http:// to another host: exit $KH_RC, expected 2"
kh_err_has 'KEYHOLE_CENTER'
KEYHOLE_CENTER="$C"

# ---- cards: registered from the files `card issue` wrote ----------------------------------------
kh_center_ok card register --cert "auth/issued/card-$UA1-sign.crt"
kh_out_has "^ua: $UA1$"
kh_out_has '^state: issued$'
kh_center_ok card register --cert c2.der --json
cp "$KH_OUT" c2.json
[ "$(kh_json c2.json 'd.ua + ":" + d.state + ":" + d.role')" = "$UA2:issued:card" ] ||
	kh_fail "card register --json from DER: $(cat c2.json)"
kh_center_ok card register --cert "auth/issued/card-$UA3-sign.crt"
kh_center_ok card show "$UA1"
kh_out_has "^ua: $UA1$"
kh_out_has '^role: card$'
# refused writes: exit 1, the API's status and code, nothing changed
kh_center_fail card register --cert "auth/issued/card-$UA1-sign.crt"
kh_err_has '^keyhole center: 409 exists: '
kh_center_fail card register --cert "auth/issued/card-$UA4-pair.crt"
kh_err_has '^keyhole center: 403 certificate_role: '
printf 'not a certificate\n' >junk.crt
kh_center_fail card register --cert junk.crt
kh_err_has 'junk\.crt'
kh_center_fail card assign "$UA1" --subscriber 99
kh_err_has '^keyhole center: 404 not_found: '
kh_center_ok card show "$UA1"
kh_out_has '^state: issued$'
kh_center_fail card show "$UA4"
kh_err_has '^keyhole center: 404 not_found: '

# ---- the catalogue and the credit policy --------------------------------------------------------
kh_center_ok credit-policy set --initial-credit 100 --reload-amount 50
kh_center_ok credit-policy show
kh_out_has '^initial_credit: 100$'
kh_out_has '^reload_amount: 50$'
kh_center_ok product add --product 7 --name Sports
kh_out_has '^id: 7$'
kh_center_ok product add --name News
kh_out_has '^id: 8$'
kh_center_fail product add --product 7 --name Again
kh_err_has '^keyhole center: 409 exists: '
kh_center_ok product list
[ "$(sed -n 1p "$KH_OUT")" = "ID  NAME" ] || kh_fail "product list: header: $(sed -n 1p "$KH_OUT")"
kh_out_has '^7   Sports$'
kh_out_has '^8   News$'
[ "$(wc -l <"$KH_OUT")" -eq 3 ] || kh_fail "product list: not a header and 2 rows"
kh_center_ok product list --json
cp "$KH_OUT" products.json
[ "$(kh_json products.json 'd.products.map(p => p.id).join(",")')" = "7,8" ] ||
	kh_fail "product list --json: $(cat products.json)"
kh_center_ok channel add --channel 1 --name "Sports 1" --product 7
kh_center_fail channel add --channel 2 --name Nowhere --product 99
kh_err_has '^keyhole center: 404 '
kh_center_ok channel list
kh_out_has '^1   Sports 1  7 *$'
kh_center_ok event add --event 55 --name "The Final" --price 30 --channel 1 --start now --end +7200
kh_out_has '^id: 55$'
kh_out_has '^price: 30$'
S=$(sed -n 's/^start: //p' "$KH_OUT")
E=$(sed -n 's/^end: //p' "$KH_OUT")
[ -n "$S" ] && [ $((E - S)) -eq 7200 ] || kh_fail "event add --end +7200: start $S end $E"
kh_center_ok event list --json
cp "$KH_OUT" events.json
[ "$(kh_json events.json 'd.events.length + ":" + d.events[0].id + ":" + d.events[0].name')" = "1:55:The Final" ] ||
	kh_fail "event list --json: $(cat events.json)"

# ---- cards at work: assign, subscribe, reload, replace, forfeit ---------------------------------
kh_center_ok card assign "$UA1" --subscriber 1
kh_out_has '^state: active$'
kh_out_has '^subscriber_id: 1$'
kh_center_fail card assign "$UA2" --subscriber 1
kh_err_has '^keyhole center: 409 subscriber_has_card: '
kh_center_ok card show "$UA2"
kh_out_has '^state: issued$'
kh_center_ok card assign "$UA3" --subscriber 2
kh_center_ok subscribe --subscriber 1 --product 7 --end +86400
kh_out_has '^subscriber_id: 1$'
kh_out_has '^product_id: 7$'
kh_out_has '^emms_queued: 1$'
kh_center_ok subscriber show 1
kh_out_has '^subscriptions:$'
kh_out_has '^  7  '
kh_out_has "^  $UA1  active"
# several at once: one job; all: every subscriber with an active card
# (fixed times: a repeat is the same request only with the same body)
T0=$(date +%s)
kh_center_ok subscribe --subscriber 3 --subscriber 4 --product 8 --start $((T0 + 60)) --end +3600 --idempotency-key job-34
kh_out_has '^subscribers: 2$'
kh_out_has '^emms_queued: 0$'
kh_center_ok subscribe --subscriber 3 --subscriber 4 --product 8 --start $((T0 + 60)) --end +3600 --idempotency-key job-34
kh_out_has '^subscribers: 2$'
# the key given is the key sent: the same key for another job is refused
kh_center_fail subscribe --subscriber 3 --product 8 --subscriber 1 --start $((T0 + 60)) --end +3600 --idempotency-key job-34
kh_err_has '^keyhole center: 422 idempotency_mismatch: '
kh_center_ok subscribe --all-subscribers --product 8 --end +86400 --json
cp "$KH_OUT" all.json
[ "$(kh_json all.json 'd.product + ":" + d.subscribers + ":" + d.emms_queued')" = "8:2:2" ] ||
	kh_fail "subscribe --all-subscribers: $(cat all.json)"
kh_center_fail subscribe --subscriber 1 --product 99 --end +60
kh_err_has '^keyhole center: 404 '
kh_center_ok unsubscribe --subscriber 2 --product 8
kh_out_has '^emms_queued: 1$'
kh_center_ok subscriber show 2
! grep -q '^  8  ' "$KH_OUT" || kh_fail "unsubscribe left the subscription: $(cat "$KH_OUT")"
# a reload is done once per key: the same key answers the same reload id
kh_center_ok card reload "$UA1" --idempotency-key reload-1
kh_out_has '^amount: 50$'
RID=$(sed -n 's/^reload_id: //p' "$KH_OUT")
[ -n "$RID" ] || kh_fail "card reload: no reload_id"
kh_center_ok card reload "$UA1" --idempotency-key reload-1
kh_out_has "^reload_id: $RID$"
kh_center_ok card reload "$UA1"
kh_out_has "^reload_id: $((RID + 1))$"
kh_center_ok card reload "$UA1"
kh_out_has "^reload_id: $((RID + 2))$"
kh_center_fail card reload "$UA2"
kh_err_has '^keyhole center: 409 card_state: '
kh_center_ok card replace "$UA1" --by "$UA2"
kh_out_has "^ua: $UA2$"
kh_out_has '^state: active$'
kh_center_ok card show "$UA1"
kh_out_has '^state: replaced$'
kh_out_has "^replaced_by: $UA2$"
kh_center_ok card forfeit "$UA1"
kh_out_has '^state: closed$'
kh_out_has "^export_authorised_card: $UA2$"
kh_center_fail card forfeit "$UA1"
kh_err_has '^keyhole center: 409 card_state: '

# ---- a lost answer: the write is sent once more with the same key, and done once ---------------
# A relay (node) in front of the center: it passes each connection on, but of the first it lets
# the request reach the center and drops the answer; it notes each request's Idempotency-Key.
cat >relay.js <<'EOF'
const net = require("net"), fs = require("fs");
const [, , upstream, portFile, logFile] = process.argv;
let n = 0;
net.createServer(c => {
	const drop = n++ === 0, u = net.connect(Number(upstream), "127.0.0.1");
	let head = "";
	c.on("data", d => {
		if (head.length < 8192) {
			const before = head.length;
			head += d.toString("latin1");
			const end = head.indexOf("\r\n\r\n");
			if (end >= 0 && before <= end) {
				const m = /^Idempotency-Key: *(\S+)/mi.exec(head.slice(0, end));
				fs.appendFileSync(logFile, (m ? m[1] : "-") + "\n");
			}
		}
		u.write(d);
	});
	u.on("data", d => { if (drop) c.destroy(); else c.write(d); });
	u.on("end", () => c.end());
	c.on("error", () => u.destroy());
	u.on("error", () => c.destroy());
	c.on("close", () => u.destroy());
}).listen(0, "127.0.0.1", function () { fs.writeFileSync(portFile, String(this.address().port)); });
EOF
# relay_start: a new relay in front of the center: its port in RPORT, its log relay.log
relay_start()
{
	rm -f relay.port relay.log
	node relay.js "$PORT" relay.port relay.log </dev/null >/dev/null 2>"$KH_META/relay.err" &
	RPID=$!
	KH_PIDS="$KH_PIDS $RPID"
	i=0
	while [ ! -s relay.port ]; do
		kill -0 "$RPID" 2>/dev/null || kh_fail "the relay exited: $(cat "$KH_META/relay.err")"
		[ "$i" -lt 100 ] || kh_fail "the relay did not start within 10 s"
		sleep 0.1
		i=$((i + 1))
	done
	RPORT=$(cat relay.port)
}
kh_center_ok card reload "$UA2"
R0=$(sed -n 's/^reload_id: //p' "$KH_OUT")
[ -n "$R0" ] || kh_fail "card reload: no reload_id"
relay_start
kh_center_ok card reload "$UA2" --center "http://127.0.0.1:$RPORT"
kh_out_has "^reload_id: $((R0 + 1))$"
[ "$(wc -l <relay.log)" -eq 2 ] || kh_fail "a write whose answer was lost was sent $(wc -l <relay.log) time(s), expected 2"
[ "$(sort -u relay.log | wc -l)" -eq 1 ] && grep -Eqx '[0-9a-f]{32}' relay.log ||
	kh_fail "the retry did not carry the first request's key (16 random bytes in hex): $(cat relay.log)"
kh_center_ok card reload "$UA2"
kh_out_has "^reload_id: $((R0 + 2))$"
kill "$RPID"
# a creation too: the center keeps its key, so the second sending answers the subscriber the
# first one created, and no other is made
N=$(kh_sql 'SELECT count(*) FROM subscribers')
relay_start
kh_center_ok subscriber add --name Eve --center "http://127.0.0.1:$RPORT" --json
cp "$KH_OUT" eve.json
[ "$(wc -l <relay.log)" -eq 2 ] || kh_fail "a creation whose answer was lost was sent $(wc -l <relay.log) time(s), expected 2"
[ "$(sort -u relay.log | wc -l)" -eq 1 ] || kh_fail "the creation's retry did not carry its key: $(cat relay.log)"
[ "$(kh_sql 'SELECT count(*) FROM subscribers')" -eq $((N + 1)) ] ||
	kh_fail "a creation whose answer was lost: not exactly one subscriber more"
EVE=$(kh_sql "SELECT id FROM subscribers WHERE name = 'Eve'")
[ "$(kh_json eve.json 'd.id + ":" + d.name')" = "$EVE:Eve" ] || kh_fail "the retried creation's answer: $(cat eve.json), expected id $EVE"
kill "$RPID"
# the same key given twice: one subscriber, the same answer
kh_center_ok subscriber add --name Fay --idempotency-key fay-1 --json
cp "$KH_OUT" fay1.json
kh_center_ok subscriber add --name Fay --idempotency-key fay-1 --json
cmp -s fay1.json "$KH_OUT" || kh_fail "subscriber add with one key twice: $(cat fay1.json) then $(cat "$KH_OUT")"
[ "$(kh_sql "SELECT count(*) FROM subscribers WHERE name = 'Fay'")" = 1 ] ||
	kh_fail "subscriber add with one key twice made more than one subscriber"
[ "$(kh_json fay1.json 'd.id')" = "$(kh_sql "SELECT id FROM subscribers WHERE name = 'Fay'")" ] ||
	kh_fail "subscriber add: the answer's id is not the subscriber made: $(cat fay1.json)"
kh_center_fail subscriber add --name Gus --idempotency-key fay-1
kh_err_has '^keyhole center: 422 idempotency_mismatch: '
[ "$(kh_sql "SELECT count(*) FROM subscribers WHERE name = 'Gus'")" = 0 ] ||
	kh_fail "a key used for another subscriber created one"
# a read is not sent twice: its lost answer is one error line
relay_start
kh_center_fail card show "$UA2" --center "http://127.0.0.1:$RPORT"
kh_err_has "^keyhole center: http://127\\.0\\.0\\.1:$RPORT: no answer"
[ "$(cat relay.log)" = "-" ] || kh_fail "a read whose answer was lost: relay log $(cat relay.log)"
kill "$RPID"

# ---- service keys, rights, invoices ------------------------------------------------------------
kh_center_ok service-keys list
kh_out_has '^KEY_ID +VERSION +CREATED_AT$'
kh_out_has '^1 +1 +[0-9]+$'
kh_center_ok service-keys rotate --key-id 1
kh_out_has '^version: 2$'
kh_center_ok service-keys list --json
cp "$KH_OUT" keys.json
[ "$(kh_json keys.json 'd.service_keys.map(k => k.key_id + "." + k.version).join(",")')" = "1.1,1.2" ] ||
	kh_fail "service-keys list --json: $(cat keys.json)"
! grep -q '"key"' keys.json || kh_fail "service-keys list shows a key"
# a rotation whose answer was lost is sent again with its key: one new version, not two
relay_start
kh_center_ok service-keys rotate --key-id 1 --center "http://127.0.0.1:$RPORT"
kh_out_has '^version: 3$'
[ "$(wc -l <relay.log)" -eq 2 ] || kh_fail "a rotation whose answer was lost was sent $(wc -l <relay.log) time(s), expected 2"
[ "$(kh_sql 'SELECT max(version) FROM service_keys WHERE key_id = 1')" = 3 ] ||
	kh_fail "a rotation sent twice with one key made more than one version"
kill "$RPID"
kh_center_ok rights renew
kh_out_has '^window_start: [0-9]+$'
kh_center_ok invoices --subscriber 1
kh_out_has '^no invoices$'
kh_center_ok invoices --subscriber 1 --json
cp "$KH_OUT" inv.json
[ "$(kh_json inv.json 'd.invoices.length')" = 0 ] || kh_fail "invoices --json: $(cat inv.json)"
kh_center_fail invoices --subscriber 99
kh_err_has '^keyhole center: 404 not_found: '
kh_stop "$PID" TERM

# ---- https: the center's certificate checked against --cacert or KEYHOLE_CACERT ----------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 tls.key
kh_start_serve PID --cert tls.crt --key tls.key --token-file op.token
KEYHOLE_CENTER=https://127.0.0.1:$PORT
kh_center_fail subscriber show 1
kh_err_has "^keyhole center: https://127\\.0\\.0\\.1:$PORT: no answer"
kh_center_ok subscriber show 1 --cacert tls.crt
kh_out_has '^name: Ada$'
export KEYHOLE_CACERT=tls.crt
kh_center_ok subscriber show 1
kh_out_has '^name: Ada$'
kh_center_fail subscriber show 1 --cacert auth/root.crt
kh_center_fail subscriber show 1 --cacert missing.crt
kh_err_has 'missing\.crt'
kh_stop "$PID" TERM
unset KEYHOLE_CACERT

# ---- no answer at all; http to another host only with --insecure-http --------------------------
KEYHOLE_CENTER=http://127.0.0.1:1
kh_center_fail card reload "$UA2"
kh_err_has '^keyhole center: http://127\.0\.0\.1:1: no answer'
kh_center subscriber show 1 --center http://127.0.0.2:1
[ "$KH_RC" -eq 2 ] || kh_fail "http:// to 127.0.0.2 without --insecure-http: exit $KH_RC, expected 2"
kh_center_fail subscriber show 1 --center http://127.0.0.2:1 --insecure-http
kh_err_has 'no answer'

# the token appeared in no line of the center's log either
! grep -qF "$KH_TOKEN" "$KH_META/daemon.err" "$KH_META/daemon.out" || kh_fail "the token is in the center's log"
kh_note "ok"
