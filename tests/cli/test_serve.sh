# keyhole serve: the management center on an ephemeral port (--listen 127.0.0.1:0, the port
# read from its 'listening=' line), driven with curl: a subscriber, a card registered from the
# signing certificate `card issue` wrote, its assignment and the EMM it queues, the error body,
# /metrics; the database created 0600; state kept across a restart; the open endpoints' budget
# (429 with Retry-After, nothing stored by openings); HTTPS with --cert/--key;
# SIGTERM and SIGINT stop it with status 0; usage errors exit 2; an unusable --db or --authority exits 1 with one line;
# the operator token behind "Bearer" in any case, blanks around the token tolerated.
#
# Run by CTest as `sh test_serve.sh` with KEYHOLE and KH_SOURCE_DIR set; again with KH_TEST_PG_URL
# set (cli/test_serve_pg), the center on a PostgreSQL database of its own: what is about a file
# (its mode) is then checked on SQLite only, and a database that cannot be reached is checked.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_serve
kh_need curl openssl basenc sqlite3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
kh_db_init

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role card --out c1.card
UA=$(kh_ua c1.card)
CERT=auth/issued/card-$UA-sign.crt
[ -f "$CERT" ] || kh_fail "card issue wrote no $CERT"
B64=$(openssl x509 -in "$CERT" -outform DER | basenc --base64url | tr -d '=\n')
[ -n "$B64" ] || kh_fail "could not encode $CERT"


kh_start_serve PID
grep -Eq 'event=serve\.start listen=127\.0\.0\.1:[0-9]+ ' "$KH_META/daemon.err" ||
	kh_fail "no serve.start log line naming the bound address"
kh_db_is_pg || kh_expect_mode center.db 600

kh_expect_api POST /v1/subscribers '{"name":"Alice"}' 201 '^\{"id":1,'
kh_expect_api POST /v1/cards "{\"certificate\":\"$B64\"}" 201 "\"ua\":\"$UA\""
kh_expect_api POST /v1/cards "{\"certificate\":\"$B64\"}" 409 '^\{"error":\{"code":"exists","message":"[^"]+"\}\}$'
kh_expect_api POST "/v1/cards/$UA/assign" '{"subscriber_id":1}' 200 '"state":"active"'
kh_expect_api GET /v1/emm "" 200 "\"address\":\"$UA\",\"seq\":1,"
kh_expect_api GET "/v1/subscribers/1" "" 200 "\"cards\":\\[\\{\"ua\":\"$UA\""
kh_expect_api GET /v1/subscribers/2 "" 404 '^\{"error":\{"code":"not_found","message":"subscriber not found"\}\}$'
kh_expect_api POST /v1/subscribers '{"name":' 400 '"code":"malformed"'
kh_expect_api GET /metrics "" 200 '^keyhole_emms_queued_total 1$'
grep -q '^keyhole_http_requests_total{method="POST",code="201"} 2$' "$KH_META/body" ||
	kh_fail "/metrics does not count the two 201 answers"

kh_stop "$PID" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "SIGTERM: exit status $KH_RC, expected 0"
grep -q 'event=serve.stop signal=TERM' "$KH_META/daemon.err" || kh_fail "no serve.stop log line"

# state survives a restart; SIGINT stops as well
kh_start_serve PID
kh_expect_api GET "/v1/cards/$UA" "" 200 '"subscriber_id":1'
kh_expect_api GET /v1/emm?since=1 "" 200 '^\{"emms":\[\],"last_id":1\}$'
kh_stop "$PID" INT
[ "$KH_RC" -eq 0 ] || kh_fail "SIGINT: exit status $KH_RC, expected 0"

# the center's limits from the command line. Opening sessions stores nothing; the open endpoints
# have a budget per client address (3 at once, then 1 a second): past it, 429 with Retry-After.
# --sessions-per-card is obsolete: accepted, and the log says it is ignored.
kh_start_serve PID --sessions-per-card 2 --session-ttl 60 --bulk-chunk 10 --rights-ttl 7 \
	--open-rate 1 --open-burst 3 --header-timeout 5 --idempotency-ttl 3600
grep -q 'event=serve.obsolete_option option=--sessions-per-card' "$KH_META/daemon.err" ||
	kh_fail "no warning that --sessions-per-card is ignored"
limited=
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
	ST=$(curl -s --noproxy '*' -D "$KH_META/headers" -o "$KH_META/body" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' -H "Idempotency-Key: open-$i" --data "{\"ua\":\"$UA\"}" \
		"http://127.0.0.1:$PORT/v1/upload/sessions")
	if [ "$ST" = 429 ]; then
		limited=$i
		break
	fi
	[ "$ST" = 201 ] || kh_fail "opening $i: status $ST: $(cat "$KH_META/body")"
done
[ -n "$limited" ] || kh_fail "--open-burst 3 --open-rate 1: twenty openings in a row, none refused"
[ "$limited" -gt 3 ] || kh_fail "--open-burst 3: refused at opening $limited"
grep -qi '^Retry-After: [1-9]' "$KH_META/headers" || kh_fail "a 429 without Retry-After"
grep -q '"code":"rate_limited"' "$KH_META/body" || kh_fail "a 429 without the code rate_limited"
N=$(kh_sql "SELECT (SELECT count(*) FROM upload_sessions) + (SELECT count(*) FROM idempotency)")
[ "$N" = 0 ] || kh_fail "openings of upload sessions stored $N rows"
# --rights-ttl 7: the windows are 3.5 days, a right reaches 7 days past its window's start; the
# server swept at start, and asked again it has nothing more to queue
kh_expect_api POST /v1/rights/renew '{}' 200 '"emms_queued":0'
WS=$(sed -n 's/.*"window_start":\([0-9]*\).*/\1/p' "$KH_META/body")
RE=$(sed -n 's/.*"rights_end":\([0-9]*\).*/\1/p' "$KH_META/body")
[ $((RE - WS)) = 604800 ] || kh_fail "--rights-ttl 7: window_start $WS, rights_end $RE"
kh_stop "$PID" TERM
grep -q 'event=sms.rights_renew ' "$KH_META/daemon.err" || kh_fail "no rights renewal sweep at start"

# HTTPS with a certificate and key (TLS 1.3)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 tls.key
kh_start_serve TPID --cert tls.crt --key tls.key
ST=$(curl -s --noproxy '*' --cacert tls.crt -o "$KH_META/body" -w '%{http_code}' "https://127.0.0.1:$PORT/v1/cards/$UA")
[ "$ST" = 200 ] || kh_fail "HTTPS GET /v1/cards/$UA: status $ST"
grep -q "\"ua\":\"$UA\"" "$KH_META/body" || kh_fail "HTTPS answer does not name the card"
# the decoder's upload session over HTTPS: the server is checked against the given CA, and a
# server it cannot check is refused before anything is sent
kh_expect_fail decoder connect --center "https://127.0.0.1:$PORT" --card c1.card --m1 m1
[ ! -e m1/m1 ] || kh_fail "a refused TLS connection still wrote M1"
kh_expect_ok decoder connect --center "https://127.0.0.1:$PORT" --card c1.card --m1 m1 --cacert tls.crt
kh_out_has "block $UA 1: ok"
kh_out_has "m1 updated: card $UA"
[ -s m1/m1 ] || kh_fail "decoder connect reported M1 updated but m1/m1 is empty"
kh_stop "$TPID" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "HTTPS server: SIGTERM exit status $KH_RC"

# usage errors
kh_expect_help serve --help
kh_expect_usage serve
kh_expect_usage serve --db center.db
kh_expect_usage serve --authority auth
kh_expect_usage serve --db center.db --authority auth --listen 8480
kh_expect_usage serve --db center.db --authority auth --listen 127.0.0.1:70000
kh_expect_usage serve --db center.db --authority auth --threads 0
kh_expect_usage serve --db center.db --authority auth --session-ttl 0
kh_expect_usage serve --db center.db --authority auth --session-ttl 86401
kh_expect_usage serve --db center.db --authority auth --sessions-per-card 65
kh_expect_usage serve --db center.db --authority auth --open-rate 100001
kh_expect_usage serve --db center.db --authority auth --open-rate -1
kh_expect_usage serve --db center.db --authority auth --open-burst 0
kh_expect_usage serve --db center.db --authority auth --header-timeout 0
kh_expect_usage serve --db center.db --authority auth --header-timeout 301
kh_expect_usage serve --db center.db --authority auth --idempotency-ttl 59
kh_expect_usage serve --db center.db --authority auth --idempotency-ttl 2592001
kh_expect_usage serve --db center.db --authority auth --bulk-chunk 100001
kh_expect_usage serve --db center.db --authority auth --bulk-chunk 2k
kh_expect_usage serve --db center.db --authority auth --rights-ttl 0
kh_expect_usage serve --db center.db --authority auth --rights-ttl 3651
kh_expect_usage serve --db center.db --authority auth --rights-ttl 31d
kh_expect_usage serve --db center.db --authority auth --cert x.pem
kh_expect_usage serve --db center.db --authority auth --bogus
kh_expect_usage serve --db center.db --authority auth extra

# an operator token: the operator API wants it, the EMM queue stays open
(umask 077 && printf 'an-operator-token-of-32-characters\n' >op.token)
kh_start_serve PID --token-file op.token
kh_api GET /v1/credit-policy
[ "$ST" = 401 ] || kh_fail "without the token the operator API answered $ST"
grep -q '"unauthorised"' "$KH_META/body" || kh_fail "a 401 without the error code unauthorised"
ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -H 'Authorization: Bearer an-operator-token-of-32-characters' \
	"http://127.0.0.1:$PORT/v1/credit-policy")
[ "$ST" = 200 ] || kh_fail "with the token the operator API answered $ST"
# The scheme in any case (RFC 9110 11.1), spaces after it and after the token tolerated; the token
# itself exact.
for H in 'Authorization: bearer an-operator-token-of-32-characters' \
	'Authorization: BEARER  an-operator-token-of-32-characters ' \
	'Authorization: Bearer an-operator-token-of-32-characters  '; do
	ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -H "$H" "http://127.0.0.1:$PORT/v1/credit-policy")
	[ "$ST" = 200 ] || kh_fail "'$H' answered $ST"
done
for H in 'Authorization: Bearer an-operator-token-of-32-characterz' \
	'Authorization: Bearer an-operator-token-of-32-character' \
	'Authorization: Bearerx an-operator-token-of-32-characters' \
	'Authorization: Basic an-operator-token-of-32-characters'; do
	ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -H "$H" "http://127.0.0.1:$PORT/v1/credit-policy")
	[ "$ST" = 401 ] || kh_fail "'$H' answered $ST, expected 401"
done
kh_api GET /v1/emm
[ "$ST" = 200 ] || kh_fail "the EMM queue wants a token ($ST)"
kh_stop "$PID" TERM
chmod 644 op.token
kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0 --token-file op.token
printf 'short\n' >short.token
chmod 600 short.token
kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0 --token-file short.token
rm -f op.token short.token
# beyond loopback: a token over TLS, or an explicit --no-operator-auth
kh_expect_usage serve --db center.db --authority auth --listen 0.0.0.0:0
(umask 077 && printf 'an-operator-token-of-32-characters\n' >op.token)
kh_expect_usage serve --db center.db --authority auth --listen 0.0.0.0:0 --token-file op.token
rm -f op.token

# failures: one line, status 1, nothing created
kh_expect_fail serve --db "$KH_WORK/no/such/dir/center.db" --authority auth --listen 127.0.0.1:0
kh_err_has 'no/such/dir/center.db'
kh_expect_fail serve --db other.db --authority no-such-authority --listen 127.0.0.1:0
[ ! -e other.db ] || kh_fail "a center that could not start created its database"
if kh_db_is_pg; then
	# a database that is not there, named with a password: one line, and never the password
	NOPE=$(printf '%s' "$KH_DB" | sed 's|^\(postgres[a-z]*://\)[^/?]*/[^?]*|\1postgres:s3cret-pw@/kh_no_such_db|')
	kh_expect_fail serve --db "$NOPE" --authority auth --listen 127.0.0.1:0
	kh_err_has 'kh_no_such_db'
	! grep -q 's3cret-pw' "$KH_ERR" "$KH_META/daemon.err" || kh_fail "serve printed the database password"
else
	chmod 644 center.db
	kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
	kh_err_has '^keyhole: center\.db: database file is not private'
	chmod 600 center.db
fi

kh_note "ok"
