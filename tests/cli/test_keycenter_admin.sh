# The key center's operator commands (keyhole keycenter, seed 004) across real processes:
#   - usage errors exit 2, print one line and create nothing;
#   - init makes the identity once; enrol registers key cards (files made by card issue --role
#     keycard) and shows each access code once; an address in use, a card enrolled already (here or
#     with another key center) and a module that is not a key card are refused and change neither
#     the database nor the card file;
#   - list shows the cards and their chain positions (plain and --json), log the relays;
#   - serve activates a card with its code (POST /v1/activate) and refuses a wrong one; block stops
#     a card, whose right code is then answered card_blocked; a replacement card takes the blocked
#     card's address; serve stops on SIGTERM.
#
# Run by CTest as `sh test_keycenter_admin.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_keycenter_admin
kh_need curl node

T=$KH_WORK
cd "$T" || kh_fail "cd $T"
K=$T/kc
mkdir "$K" || kh_fail "mkdir"

# --- usage: exit 2, one line, nothing created ----------------------------------------------------
for cmd in "keycenter init" "keycenter enrol" "keycenter block" "keycenter list" "keycenter log" \
	"keycenter serve"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage keycenter
kh_expect_usage keycenter init --dir "$K/id"
kh_expect_usage keycenter enrol --dir "$K/id" --db "$K/kc.db" --card c.card
kh_expect_usage keycenter enrol --dir "$K/id" --db "$K/kc.db" --card c.card --address "Not An Address"
kh_expect_usage keycenter enrol --dir "$K/id" --db "$K/kc.db" --card c.card --address a@x --replaces 12
kh_expect_usage keycenter enrol --dir "$K/id" --db "$K/kc.db" --card c.card --address a@x --address b@x
kh_expect_usage keycenter block --dir "$K/id" --db "$K/kc.db"
kh_expect_usage keycenter block --dir "$K/id" --db "$K/kc.db" 12
kh_expect_usage keycenter block --dir "$K/id" --db "$K/kc.db" 0000000C 0000000D
kh_expect_usage keycenter list
kh_expect_usage keycenter log --db "$K/kc.db" --frobnicate
kh_expect_usage keycenter serve --db "$K/kc.db" --dir "$K/id" --window 0
kh_expect_usage keycenter serve --db "$K/kc.db" --dir "$K/id" --window 4097
kh_expect_usage keycenter serve --db "$K/kc.db" --dir "$K/id" --max-document 0
[ -z "$(ls -A "$K")" ] || kh_fail "a refused command left $(ls -A "$K") behind"

# --- the parties -----------------------------------------------------------------------------------
kh_expect_ok authority init "$T/auth"
for c in c1 c2 c3 c4 c5; do
	kh_expect_ok card issue --authority "$T/auth" --role keycard --out "$T/$c.card"
done
kh_expect_ok card issue --authority "$T/auth" --role buyer --out "$T/buyer.card"
kh_expect_ok keycenter init --authority "$T/auth" --dir "$K/id"
kh_out_has '^keycenter FE[0-9A-F]{6}$'
kh_expect_fail keycenter init --authority "$T/auth" --dir "$K/id" # a key is there already
[ "$(kh_mode "$K/id/keycenter.key")" = 600 ] || kh_fail "keycenter.key is not mode 0600"

# enrol: one line, the serial as card info prints it, a code of 4 groups of Crockford base32
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c1.card" --address alice@example.org
cp "$KH_OUT" "$T/enrol1.out"
CODE1=$(sed -n 's/^.*access code: //p' "$KH_OUT")
U1=$(kh_ua "$T/c1.card")
grep -Eq "^enrolled keycard $U1 as alice@example.org; access code: [0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}\$" \
	"$T/enrol1.out" || kh_fail "enrol printed $(cat "$T/enrol1.out")"
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c2.card" --address bob@example.org
CODE2=$(sed -n 's/^.*access code: //p' "$KH_OUT")
U2=$(kh_ua "$T/c2.card")
if [ -z "$CODE1" ] || [ -z "$CODE2" ] || [ "$CODE1" = "$CODE2" ]; then
	kh_fail "two enrolments, codes '$CODE1' '$CODE2'"
fi
# the code is shown, never stored: it is nowhere in the database
if grep -qF -- "$(echo "$CODE1" | tr -d -)" "$K/kc.db"* 2>/dev/null; then
	kh_fail "the access code is in the database"
fi

# refusals change nothing: the address clash leaves the card file as it was
kh_expect_ok keycenter list --db "$K/kc.db"
cp "$KH_OUT" "$T/list.before"
SUM3=$(kh_sha "$T/c3.card")
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c3.card" --address alice@example.org
kh_err_has 'alice@example.org: the address is another card'
[ "$(kh_sha "$T/c3.card")" = "$SUM3" ] || kh_fail "a refused enrolment changed the card file"
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c1.card" --address alice2@example.org
kh_err_has 'enrolled here already'
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/buyer.card" --address buyer@example.org
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c3.card" --address carol@example.org \
	--replaces 0x7FFFFFF
kh_err_has 'no such keycard to replace'
# a card enrolled with another key center answers `enrolled`: nothing is written here
kh_expect_ok keycenter init --authority "$T/auth" --dir "$K/id2"
kh_expect_ok keycenter enrol --dir "$K/id2" --db "$K/kc2.db" --card "$T/c5.card" --address eve@example.org
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c5.card" --address eve@example.org
kh_err_has 'enrolled already'
kh_expect_ok keycenter list --db "$K/kc.db"
cmp -s "$KH_OUT" "$T/list.before" || kh_fail "a refused enrolment changed the list"

# --- list and log --------------------------------------------------------------------------------
kh_expect_ok keycenter list --db "$K/kc.db"
[ "$(wc -l <"$KH_OUT")" -eq 2 ] || kh_fail "list: expected 2 cards, got $(cat "$KH_OUT")"
kh_out_has "^$U1 alice@example.org enrolled send=1 recv=1 waiting=0\$"
kh_out_has "^$U2 bob@example.org enrolled send=1 recv=1 waiting=0\$"
kh_expect_ok keycenter list --db "$K/kc.db" --json
cp "$KH_OUT" "$T/list.json"
[ "$(kh_json "$T/list.json" 'd.length')" = 2 ] || kh_fail "list --json: not 2 cards"
[ "$(kh_json "$T/list.json" 'd[0].serial')" = "$((0x$U1))" ] || kh_fail "list --json: first serial"
[ "$(kh_json "$T/list.json" 'd[1].address')" = bob@example.org ] || kh_fail "list --json: second address"
kh_expect_ok keycenter log --db "$K/kc.db"
[ ! -s "$KH_OUT" ] || kh_fail "log: no relay yet, got $(cat "$KH_OUT")"
kh_expect_ok keycenter log --db "$K/kc.db" --json
cp "$KH_OUT" "$T/log.json"
[ "$(kh_json "$T/log.json" 'd.length')" = 0 ] || kh_fail "log --json: not empty"

# --- serve: activation ---------------------------------------------------------------------------
: >"$KH_META/daemon.out"
kh_start_daemon KC keycenter serve --db "$K/kc.db" --dir "$K/id" --listen 127.0.0.1:0 --window 8
kh_wait_listening "$KC"
kh_expect_api POST /v1/activate "{\"serial\": $((0x$U1)), \"code\": \"0000-0000-0000-0000\"}" 403 '"access_code"'
kh_expect_api POST /v1/activate "{\"serial\": $((0x$U1)), \"code\": \"$CODE1\"}" 200 '"state":"active"'
kh_expect_api GET "/v1/cards/$((0x$U1))/ack" "" 200 '"ack":null'
kh_expect_ok keycenter list --db "$K/kc.db"
kh_out_has "^$U1 alice@example.org active "

# block: the right code is then card_blocked; a replacement takes the address
kh_expect_ok keycenter block --dir "$K/id" --db "$K/kc.db" "$U2"
kh_out_has "^blocked keycard $U2\$"
kh_expect_fail keycenter block --dir "$K/id" --db "$K/kc.db" 0x7FFFFFF
kh_err_has 'no such keycard'
kh_expect_fail keycenter block --dir "$K/id" --db "$K/none.db" "$U2"
[ ! -e "$K/none.db" ] || kh_fail "a refused block left a database behind"
kh_expect_api POST /v1/activate "{\"serial\": $((0x$U2)), \"code\": \"$CODE2\"}" 403 '"card_blocked"'
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c4.card" --address bob@example.org \
	--replaces "$U2"
U4=$(kh_ua "$T/c4.card")
kh_expect_ok keycenter list --db "$K/kc.db"
kh_out_has "^$U2 - blocked "
kh_out_has "^$U4 bob@example.org enrolled "
# a card replaced once is not replaced again
kh_expect_fail keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/c3.card" --address bob@example.org \
	--replaces "$U2"

kh_stop "$KC" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "keycenter serve exited $KH_RC on SIGTERM"
exit 0
