#!/bin/sh
# The headend connected to the management center over the API only ("EMM delivery
# without a return line"; docs/operator-guide.md "Connecting a headend to the center"):
# - GET /v1/service-keys/material: operator only (401 without the token), the two newest
#   versions of each id with their bytes, never cached;
# - `headend keys import --center` writes the same key file as `--db` (after a rotation too:
#   the newest two versions, the oldest dropped), over http to loopback and over https with
#   --cacert and --token-file; without --cacert, or without the token, it fails and the key file
#   is left byte for byte;
# - `headend scramble --center https://... --cacert` works, and without --cacert fails before
#   any output; its pay-per-view price from GET /v1/events (operator only) needs --token-file;
# - the continuous feed: a scramble reading a FIFO (the input pauses half-way) with
#   --emm-poll 1 carries an EMM the center queued during the run, which a card then applies.
#
# Run by CTest as `sh test_headend_feed.sh` with KEYHOLE and KH_SOURCE_DIR set.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init headend_feed
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs it)"
	exit 0
fi
kh_need curl openssl basenc cmp mkfifo
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

credit_of()
{
	kh_expect_ok decoder status --card "$1"
	sed -n 's/^credit //p' "$KH_OUT" | head -n 1
}

# wait_for FILE REGEX WHAT: until FILE has a line matching REGEX (a hang guard of 60 s, no timing
# is asserted), failing early when process $2 of the caller ($WAIT_PID) is gone.
wait_for()
{
	kh_i=0
	until grep -Eq -- "$2" "$1" 2>/dev/null; do
		kill -0 "$WAIT_PID" 2>/dev/null || { sed 's/^/  | /' "$1" >&2; kh_fail "$3: the process ended first"; }
		[ "$kh_i" -lt 600 ] || { sed 's/^/  | /' "$1" >&2; kh_fail "$3: not within 60 s"; }
		sleep 0.1
		kh_i=$((kh_i + 1))
	done
}

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=8:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=8 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --out c1.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
UA1=$(kh_ua c1.card)

# ---- the center over plain http on loopback, no token ----
kh_start_serve PID
C=http://127.0.0.1:$PORT
T=$(date +%s)
kh_expect_api PUT /v1/credit-policy '{"initial_credit":100,"reload_amount":50}' 200
kh_expect_api POST /v1/subscribers '{"name":"Alice"}' 201
kh_expect_api POST /v1/cards "{\"certificate\":\"$(kh_cert_b64 "$UA1")\"}" 201
kh_expect_api POST /v1/products '{"id":7,"name":"Sports"}' 201
kh_expect_api POST "/v1/cards/$UA1/assign" '{"subscriber_id":1}' 200
kh_expect_api POST /v1/subscribers/1/subscriptions "{\"product_id\":7,\"start\":$((T - 100)),\"end\":$((T + 86400))}" 201

# the material: key 1 version 1, 32 bytes in base64url (43 characters)
kh_expect_api GET /v1/service-keys/material '' 200 '^\{"service_keys":\[\{"key_id":1,"version":1,"key":"[A-Za-z0-9_-]{43}"\}\]\}$'
# ... and the listing still never shows a key
kh_expect_api GET /v1/service-keys '' 200
! grep -q '"key"' "$KH_META/body" || kh_fail "GET /v1/service-keys shows a key"

# keys import --center writes what --db writes
kh_expect_ok headend keys init --authority auth --out h.keys
cp -p h.keys a.keys && cp -p h.keys b.keys || kh_fail "copying the key file"
kh_expect_ok headend keys import --keys a.keys --db center.db
kh_expect_ok headend keys import --keys b.keys --center "$C"
kh_out_has '^1 service key\(s\) imported from the center$'
cmp -s a.keys b.keys || kh_fail "keys import --center and --db wrote different key files"
kh_expect_mode b.keys 600
kh_no_tmp_files .
# after two rotations at the center: versions 2 and 3, version 1 dropped, here as there
kh_expect_api POST /v1/service-keys/rotate '{"key_id":1}' 201 '"version":2'
kh_expect_api POST /v1/service-keys/rotate '{"key_id":1}' 201 '"version":3'
kh_expect_api GET /v1/service-keys/material '' 200 '"version":2,.*"version":3,'
kh_expect_ok headend keys import --keys a.keys --db center.db
kh_expect_ok headend keys import --keys b.keys --center "$C/"
kh_out_has '^2 service key\(s\) imported'
cmp -s a.keys b.keys || kh_fail "after rotations, keys import --center and --db differ"
kh_expect_ok headend keys show --keys b.keys
kh_out_has '^service key 1 version 2$'
kh_out_has '^service key 1 version 3$'
! grep -q '^service key 1 version 1$' "$KH_OUT" || kh_fail "version 1 was kept after two rotations"
cp -p b.keys headend.keys || kh_fail "cp"

# ---- the continuous feed: an EMM queued while the scrambler runs reaches the card ----
SIZE=$(kh_size clip.ts)
HALF=$((SIZE / 188 / 2 * 188))
mkfifo in.fifo || kh_fail "mkfifo"
# paused_source: feed in.fifo with half the clip, wait until the file `go` exists, then the rest;
# sets WPID
paused_source()
{
	(
		head -c "$HALF" clip.ts
		while [ ! -e go ]; do sleep 0.1; done
		tail -c +$((HALF + 1)) clip.ts
	) >in.fifo &
	WPID=$!
	KH_PIDS="$KH_PIDS $WPID"
}
paused_source
KEYHOLE_LOG=info "$KEYHOLE" headend scramble --keys headend.keys --alg cissa --product 7 --period 5 \
	--time "$T" --center "$C" --emm-poll 1 -v --in in.fifo --out live.ts 2>live.err &
SPID=$!
KH_PIDS="$KH_PIDS $SPID"
WAIT_PID=$SPID
wait_for live.err 'EMM\(s\) from the center, last id [1-9]' "the first fetch"
LAST=$(sed -n 's/.*EMM(s) from the center, last id \([0-9][0-9]*\)$/\1/p' live.err | head -n 1)
# the reload is queued after the first fetch: only a poll can bring it
ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X POST -H 'Idempotency-Key: live-1' \
	"$C/v1/cards/$UA1/reload")
[ "$ST" = 200 ] || [ "$ST" = 201 ] || kh_fail "reload: status $ST: $(cat "$KH_META/body")"
wait_for live.err "event=headend.emm_poll emms=1 last_id=$((LAST + 1))" "the poll of the new EMM"
touch go
wait "$SPID"
SRC=$?
wait "$WPID"
[ "$SRC" -eq 0 ] || { sed 's/^/  | /' live.err >&2; kh_fail "the live scramble exited $SRC"; }
grep -q "1 new EMM(s) from the center, last id $((LAST + 1))" live.err ||
	kh_fail "the polled EMM was not put into the carousel: $(cat live.err)"
! grep -q 'warning' live.err || kh_fail "warnings in a clean live run: $(cat live.err)"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in live.ts --out live-c.ts
kh_frames live-c.ts >live.md5
cmp -s clear.md5 live.md5 || kh_fail "the live scramble does not play bit-exactly"
[ "$(credit_of c1.card)" = 150 ] || kh_fail "the reload queued during the run did not reach the card"

# a poll that fails is a warning; the run goes on with what it has
rm -f go
paused_source
KEYHOLE_LOG=warn "$KEYHOLE" headend scramble --keys headend.keys --alg cissa --product 7 --period 5 \
	--time "$T" --center "$C" --emm-poll 1 -v --in in.fifo --out down.ts 2>down.err &
SPID=$!
KH_PIDS="$KH_PIDS $SPID"
WAIT_PID=$SPID
wait_for down.err 'EMM\(s\) from the center' "the first fetch"
kh_stop "$PID" TERM
wait_for down.err 'event=headend.emm_poll_failed' "a failed poll"
touch go
wait "$SPID"
SRC=$?
wait "$WPID"
[ "$SRC" -eq 0 ] || { sed 's/^/  | /' down.err >&2; kh_fail "a failed poll ended the run ($SRC)"; }
grep -q "keyhole: warning: $C: EMM poll failed: " down.err || kh_fail "no warning for the failed poll: $(cat down.err)"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in down.ts --out down-c.ts
kh_frames down-c.ts >down.md5
cmp -s clear.md5 down.md5 || kh_fail "the stream of a run with failed polls does not play"

# ---- HTTPS with the operator token ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 tls.key
(umask 077 && printf 'an-operator-token-of-32-characters\n' >op.token)
(umask 077 && printf 'a-wrong-token-of-32-characters-xx\n' >bad.token)
kh_start_serve TPID --cert tls.crt --key tls.key --token-file op.token
H=https://127.0.0.1:$PORT
ST=$(curl -s --noproxy '*' --cacert tls.crt -o "$KH_META/body" -w '%{http_code}' "$H/v1/service-keys/material")
[ "$ST" = 401 ] || kh_fail "the key material without the token: status $ST"
! grep -q '"key"' "$KH_META/body" || kh_fail "a 401 carried keys"
ST=$(curl -s --noproxy '*' --cacert tls.crt -D "$KH_META/headers" -o "$KH_META/body" -w '%{http_code}' \
	-H 'Authorization: Bearer an-operator-token-of-32-characters' "$H/v1/service-keys/material")
[ "$ST" = 200 ] || kh_fail "the key material with the token: status $ST"
grep -qi '^cache-control: no-store' "$KH_META/headers" || kh_fail "the key material may be cached"

kh_expect_ok headend keys rotate --keys headend.keys --key-id 1 # the headend's own version 4: to be replaced
cp -p headend.keys before.keys || kh_fail "cp"
# a server it cannot check: refused before anything is fetched, the key file byte for byte
kh_expect_fail headend keys import --keys headend.keys --center "$H" --token-file op.token
kh_err_has "$H"
cmp -s before.keys headend.keys || kh_fail "a refused TLS connection changed the key file"
# no token, a wrong one, a token file others can read
kh_expect_fail headend keys import --keys headend.keys --center "$H" --cacert tls.crt
kh_err_has 'HTTP 401'
kh_expect_fail headend keys import --keys headend.keys --center "$H" --cacert tls.crt --token-file bad.token
kh_err_has 'HTTP 401'
cmp -s before.keys headend.keys || kh_fail "a refused token changed the key file"
chmod 644 bad.token
kh_expect_fail headend keys import --keys headend.keys --center "$H" --cacert tls.crt --token-file bad.token
kh_err_has 'bad.token'
kh_expect_ok headend keys import --keys headend.keys --center "$H" --cacert tls.crt --token-file op.token
kh_out_has '^2 service key\(s\) imported'
cp -p before.keys c.keys || kh_fail "cp"
kh_expect_ok headend keys import --keys c.keys --db center.db
cmp -s c.keys headend.keys || kh_fail "keys import over https differs from --db's"

# scramble over https: the center checked against --cacert, refused without it before output
kh_expect_fail headend scramble --keys headend.keys --alg cissa --product 7 --center "$H" --in clip.ts --out x.ts
kh_err_has "$H"
[ ! -e x.ts ] || kh_fail "a scramble that could not check the center wrote output"
# (--key-version 3: version 4 is the headend's own, which no card holds)
kh_expect_ok headend scramble --keys headend.keys --alg cissa --product 7 --key-version 3 --period 5 --time "$T" \
	--center "$H" --cacert tls.crt --emm-poll 1 -v --in clip.ts --out tls.ts
kh_err_has 'EMM\(s\) from the center, last id [1-9]'
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in tls.ts --out tls-c.ts
kh_frames tls-c.ts >tls.md5
cmp -s clear.md5 tls.md5 || kh_fail "the stream scrambled with keys and EMMs over https does not play"
# a pay-per-view event's price from the catalogue, an operator endpoint: only with the token
for body in '{"id":7,"name":"Sports"}' '{"id":1,"name":"Sports 1","product_id":7}' \
	"{\"id\":55,\"name\":\"The Final\",\"price\":30,\"channel_id\":1,\"start\":$T,\"end\":$((T + 3600))}"; do
	case $body in *price*) path=events ;; *product_id*) path=channels ;; *) path=products ;; esac
	ST=$(curl -s --noproxy '*' --cacert tls.crt -o "$KH_META/body" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' -H 'Authorization: Bearer an-operator-token-of-32-characters' \
		--data "$body" "$H/v1/$path")
	[ "$ST" = 201 ] || [ "$ST" = 409 ] || kh_fail "POST /v1/$path: status $ST: $(cat "$KH_META/body")"
done
kh_expect_fail headend scramble --keys headend.keys --alg cissa --event 55 --key-version 3 --center "$H" \
	--cacert tls.crt --in clip.ts --out x.ts
kh_err_has 'HTTP 401'
[ ! -e x.ts ] || kh_fail "a scramble refused the catalogue wrote output"
kh_expect_ok headend scramble --keys headend.keys --alg cissa --event 55 --key-version 3 --center "$H" \
	--cacert tls.crt --token-file op.token --emm-poll 0 -v --in clip.ts --out tls-ppv.ts
kh_err_has 'event 55 costs 30 in the center.s catalogue'
kh_stop "$TPID" TERM

# ---- usage ----
kh_expect_usage headend keys import --keys headend.keys
kh_expect_usage headend keys import --keys headend.keys --center "$C" --db center.db
kh_expect_usage headend keys import --keys headend.keys --db center.db --cacert tls.crt
kh_expect_usage headend keys import --keys headend.keys --db center.db --token-file op.token
kh_expect_usage headend keys import --keys headend.keys --center http://example.com
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --emm-poll 5 --in clip.ts --out x.ts
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --center "$C" --emm-poll -1 \
	--in clip.ts --out x.ts
kh_expect_help headend keys import --help

kh_note "key material over the API (http, https, token), the same key file as --store, EMMs polled during a run"
