#!/bin/sh
# The headend connected to the management center ("EMM delivery without a return
# line"): `keyhole serve` on an ephemeral port; a card registered from the signing certificate
# `card issue` wrote, assigned to a subscriber and subscribed to product 7 through the API;
# `headend keys import` takes the center's service keys; `headend scramble --center` fetches the
# broadcast EMM queue and carries it in a real ffmpeg clip; `decoder play` with that card gives
# every frame bit-exact (ffmpeg framemd5), and `decoder status` shows the center's right and
# credit. Then --emm and --center together, --center-since, -v; a pay-per-view event priced from
# the center's catalogue (GET /v1/events: a card pays the catalogue's price; another --price and
# an event the catalogue does not list are refused); and the refusals (plain http to a remote
# host, an unreachable center, options without --center).
#
# Run by CTest as `sh test_headend_center.sh` with KEYHOLE and KH_SOURCE_DIR set; again with
# KH_TEST_PG_URL set (cli/test_headend_center_pg), on a PostgreSQL database of its own.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init headend_center
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs it)"
	exit 0
fi
kh_need curl openssl basenc cmp
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
kh_db_init

status_of()
{
	kh_expect_ok decoder status --card "$1"
	sed -n "s/^$2 //p" "$KH_OUT" | head -n 1
}


ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=8:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=8 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --out c1.card
kh_expect_ok card issue --authority auth --role card --out c2.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
UA1=$(kh_ua c1.card)
UA2=$(kh_ua c2.card)

# ---- the center ----
kh_start_serve PID
C=http://127.0.0.1:$PORT
T=$(date +%s)

kh_expect_api PUT /v1/credit-policy '{"initial_credit":100,"reload_amount":50}' 200
kh_expect_api POST /v1/subscribers '{"name":"Alice"}' 201
kh_expect_api POST /v1/cards "{\"certificate\":\"$(kh_cert_b64 "$UA1")\"}" 201
kh_expect_api POST /v1/cards "{\"certificate\":\"$(kh_cert_b64 "$UA2")\"}" 201
kh_expect_api POST /v1/products '{"id":7,"name":"Sports"}' 201
kh_expect_api POST /v1/channels '{"id":1,"name":"Sports 1","product_id":7}' 201
kh_expect_api POST "/v1/cards/$UA1/assign" '{"subscriber_id":1}' 200
kh_expect_api POST /v1/subscribers/1/subscriptions "{\"product_id\":7,\"start\":$((T - 100)),\"end\":$((T + 86400))}" 201

# ---- the headend: the center's service keys, its EMM queue carried in the stream ----
kh_expect_ok headend keys init --authority auth --out headend.keys
kh_expect_ok headend keys import --keys headend.keys --db "$KH_DB"
kh_out_has 'service key'
kh_expect_ok headend scramble --keys headend.keys --alg cissa --product 7 --period 5 --time "$T" \
	--center "$C" -v --in clip.ts --out s.ts
grep -q 'EMM(s) from the center, last id [1-9]' "$KH_ERR" || kh_fail "-v did not say what the center gave: $(cat "$KH_ERR")"
LAST=$(sed -n 's/.*last id \([0-9][0-9]*\)$/\1/p' "$KH_ERR")

# ---- the subscriber's decoder: every frame bit-exact, the center's right and credit on the card ----
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in s.ts --out c.ts
kh_frames c.ts >c.md5
cmp -s clear.md5 c.md5 || kh_fail "the channel scrambled with the center's EMMs does not play bit-exactly"
[ "$(status_of c1.card credit)" = 100 ] || kh_fail "card 1 did not get the center's initial credit"
grep -q '^right product 7 ' "$KH_OUT" || kh_fail "card 1 holds no right to product 7: $(cat "$KH_OUT")"
grep -q '^export authorised$' "$KH_OUT" || kh_fail "card 1, the subscriber's first card, is not authorised to export"

# card 2 was never assigned: the center queued nothing for it, so it sees nothing (exit 1: not
# one packet could be descrambled)
kh_run decoder play --decoder dec.card --cam cam.card --card c2.card --in s.ts --out c2.ts
[ "$KH_RC" -eq 1 ] || kh_fail "an unassigned card: play exited $KH_RC, want 1"
grep -q 'not one packet could be descrambled' "$KH_ERR" || kh_fail "an unassigned card: $(cat "$KH_ERR")"
[ "$(status_of c2.card credit)" = 0 ] || kh_fail "an unassigned card got credit"

# ---- --center-since: only what came after; with --emm, the file's EMMs first ----
kh_expect_api POST "/v1/cards/$UA1/reload" '' 400 # no Idempotency-Key
ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X POST -H 'Idempotency-Key: r1' "$C/v1/cards/$UA1/reload")
[ "$ST" = 200 ] || [ "$ST" = 201 ] || kh_fail "reload: status $ST: $(cat "$KH_META/body")"
kh_expect_ok headend emm --keys headend.keys --ua "$UA2" --service-keys --entitle "7:$((T - 100)):$((T + 86400))" \
	--out c2.emm
kh_expect_ok headend scramble --keys headend.keys --alg cissa --product 7 --period 5 --time "$T" \
	--center "$C/" --center-since "$LAST" --emm c2.emm -v --in clip.ts --out s2.ts
grep -q "1 EMM(s) from the center, last id $((LAST + 1))" "$KH_ERR" ||
	kh_fail "--center-since $LAST: $(cat "$KH_ERR")"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in s2.ts --out c1b.ts
[ "$(status_of c1.card credit)" = 150 ] || kh_fail "the reload carried from the center did not reach card 1"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c2.card --in s2.ts --out c2b.ts
kh_frames c2b.ts >c2b.md5
cmp -s clear.md5 c2b.md5 || kh_fail "the --emm file's EMMs were not carried beside the center's"

# an empty queue page is fine: nothing above the last id
kh_expect_ok headend scramble --keys headend.keys --alg cissa --product 7 --center "$C" \
	--center-since $((LAST + 1)) -v --in clip.ts --out s3.ts
grep -q '0 EMM(s) from the center' "$KH_ERR" || kh_fail "an empty queue: $(cat "$KH_ERR")"

# ---- pay-per-view: the price is the catalogue's ----
kh_expect_api POST /v1/events "{\"id\":55,\"name\":\"The Final\",\"price\":30,\"channel_id\":1,\"start\":$((T - 100)),\"end\":$((T + 86400))}" 201
# the price comes from the center: no --price needed, and the card is asked the catalogue's
kh_expect_ok headend scramble --keys headend.keys --alg cissa --event 55 --period 5 --time "$T" --center "$C" \
	--center-since $((LAST + 1)) -v --in clip.ts --out ppv.ts
kh_err_has 'event 55 costs 30 in the center.s catalogue'
kh_expect_ok decoder buy --decoder dec.card --cam cam.card --card c1.card --in ppv.ts
kh_out_has 'bought event 55 for 30; credit now 120'
[ "$(status_of c1.card credit)" = 120 ] || kh_fail "the purchase did not cost the catalogue's price"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card c1.card --in ppv.ts --out ppv-c.ts
kh_frames ppv-c.ts >ppv.md5
cmp -s clear.md5 ppv.md5 || kh_fail "the bought event does not play bit-exactly"
# the same price given: fine; another: refused, as is an event the catalogue does not list
kh_expect_ok headend scramble --keys headend.keys --alg cissa --event 55 --price 30 --center "$C" \
	--center-since $((LAST + 1)) --in clip.ts --out ppv2.ts
kh_expect_fail headend scramble --keys headend.keys --alg cissa --event 55 --price 5 --center "$C" \
	--in clip.ts --out x.ts --cw-log x.cw
kh_err_has '--price 5 differs from the catalogue.s price of event 55 \(30\)'
kh_expect_fail headend scramble --keys headend.keys --alg cissa --event 999 --center "$C" --in clip.ts --out x.ts
kh_err_has 'event 999 is not in the center.s catalogue'
kh_expect_fail headend scramble --keys headend.keys --alg cissa --event 999 --price 30 --center "$C" \
	--in clip.ts --out x.ts
kh_err_has 'event 999 is not in the center.s catalogue'
[ ! -e x.ts ] && [ ! -e x.cw ] || kh_fail "a refused event left an output file"
# without the center, the price must be given
kh_expect_usage headend scramble --keys headend.keys --alg cissa --event 55 --in clip.ts --out x.ts
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --price 30 --in clip.ts --out x.ts
kh_expect_usage headend scramble --keys headend.keys --alg cissa --event 55 --price 30 --token-file t \
	--in clip.ts --out x.ts

# ---- refusals ----
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --center http://example.com \
	--in clip.ts --out x.ts
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --cacert x.pem --in clip.ts --out x.ts
kh_expect_usage headend scramble --keys headend.keys --alg cissa --product 7 --center "$C" --center-since -1 \
	--in clip.ts --out x.ts
kh_expect_usage headend keys import --keys headend.keys
# a database that is not there is never made, whichever way its name is written; the key file
# is left as it was
cp headend.keys headend.keys.before
for u in no-such.db sqlite:no-such.db sqlite://no-such.db; do
	kh_expect_fail headend keys import --keys headend.keys --db "$u"
	kh_err_has '^keyhole: no-such\.db: no such database'
	for f in no-such.db no-such.db-wal no-such.db-shm no-such.db-journal; do
		[ ! -e "$f" ] || kh_fail "keys import --db $u created $f"
	done
done
kh_expect_fail headend keys import --keys headend.keys --db nodir/center.db
kh_err_has '^keyhole: nodir/center\.db: '
[ ! -e nodir ] || kh_fail "keys import created a directory"
cmp -s headend.keys headend.keys.before || kh_fail "a refused keys import changed the key file"
rm -f headend.keys.before
kh_stop "$PID" TERM
kh_expect_fail headend scramble --keys headend.keys --alg cissa --product 7 --center "$C" --in clip.ts --out x.ts
kh_err_has "$C"
[ ! -e x.ts ] || kh_fail "a scramble that could not reach the center wrote output"

kh_note "center EMMs carried: frames bit-exact, right and credit from the center, since/emm/-v, refusals"
