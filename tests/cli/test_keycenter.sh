# The key center relay of seed 004 across real processes: the key center over HTTPS (keyhole
# keycenter serve --cert --key), the users' key cards as module daemons (keyhole card serve) and
# two hosts running keyhole keycard:
#   - the seed's whole sequence: enrolment (the access code shown once), activation, a document
#     sent by alice, relayed, fetched and opened by bob, byte for byte, written nowhere else;
#   - a card not activated cannot post; a wrong access code is refused, and the limit holds;
#   - a host that asks bob's card for an older message than the last it opened gets nothing, and
#     no file; a delivery flipped on bob's disk does not open and moves nothing;
#   - an unknown and a blocked recipient: refused, nothing queued, the sender's index spent and
#     acknowledged (card and center agree);
#   - a rolled-back key card file is refused;
#   - the key center killed with -9 while two senders post: after a restart every post is relayed
#     at most once (no sender index twice in the log, no receive index twice), every document
#     arrives, and cards and center agree on every chain.
#
# Run by CTest as `sh test_keycenter.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_keycenter
kh_need openssl sqlite3 cmp

T=$KH_WORK
cd "$T" || kh_fail "cd $T"
K=$T/kc # the key center's side
A=$T/alice
B=$T/bob
C=$T/carol
mkdir "$K" "$A" "$B" "$C" "$B/inbox" "$B/inbox2" || kh_fail "mkdir"
MARK=KEYHOLE-KEYCENTER-DOCUMENT-MARKER-5e1d

# --- the parties -----------------------------------------------------------------------------------
kh_expect_ok authority init "$T/auth"
for u in alice bob carol; do
	kh_expect_ok card issue --authority "$T/auth" --role keycard --out "$T/$u/$u.card"
done
kh_expect_ok keycenter init --authority "$T/auth" --dir "$K/id"
code_of()
{
	sed -n 's/^enrolled keycard [0-9A-F]* as [^;]*; access code: //p' "$KH_OUT"
}
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$A/alice.card" --address alice@kc.test
CODE_A=$(code_of)
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$B/bob.card" --address bob@kc.test
CODE_B=$(code_of)
kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$C/carol.card" --address carol@kc.test
CODE_C=$(code_of)
[ -n "$CODE_A" ] && [ -n "$CODE_B" ] && [ -n "$CODE_C" ] || kh_fail "enrol showed no access code"
UA_A=$(kh_ua "$A/alice.card")
UA_B=$(kh_ua "$B/bob.card")

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$K/tls.key" \
	-out "$K/tls.crt" -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 "$K/tls.key"
CA=$K/tls.crt
: >"$KH_META/daemon.out"
kh_start_daemon KS keycenter serve --db "$K/kc.db" --dir "$K/id" --listen 127.0.0.1:0 --cert "$K/tls.crt" \
	--key "$K/tls.key"
kh_wait_listening "$KS"
KPORT=$PORT
URL=https://127.0.0.1:$KPORT

for u in alice bob carol; do
	kh_start_daemon "PID_$u" card serve --card "$T/$u/$u.card" --socket "$T/$u/$u.sock"
done
# shellcheck disable=SC2154 # set by kh_start_daemon through eval
{
	kh_wait_socket "$A/alice.sock" "$PID_alice"
	kh_wait_socket "$B/bob.sock" "$PID_bob"
	kh_wait_socket "$C/carol.sock" "$PID_carol"
}
CA_=unix:$A/alice.sock
CB_=unix:$B/bob.sock
CC_=unix:$C/carol.sock

{
	i=0
	while [ "$i" -lt 4000 ]; do
		echo "$MARK line $i of a document only bob may read"
		i=$((i + 1))
	done
} >"$A/letter.txt" # ~230 KB: four chunks

# --- activation --------------------------------------------------------------------------------------
# not activated yet: alice's post is refused, and nothing is queued for bob
kh_expect_fail keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to bob@kc.test --in "$A/letter.txt"
kh_err_has 'not activated'
kh_expect_fail keycard activate --center "$URL" --cacert "$CA" --card "$CA_" --code AAAA-BBBB-CCCC-DDDD
kh_err_has 'wrong access code'
kh_expect_ok keycard activate --center "$URL" --cacert "$CA" --card "$CA_" --code "$CODE_A"
kh_out_has "^activated $UA_A as alice@kc.test$"
# bob's code from a file only he may read (out of the process list): a file others may read is refused
(umask 077 && echo "$CODE_B" >"$B/code")
cp "$B/code" "$B/code-open"
chmod 644 "$B/code-open"
kh_expect_usage keycard activate --center "$URL" --cacert "$CA" --card "$CB_" --code "$CODE_B" --code-file "$B/code"
kh_expect_fail keycard activate --center "$URL" --cacert "$CA" --card "$CB_" --code-file "$B/code-open"
kh_expect_ok keycard activate --center "$URL" --cacert "$CA" --card "$CB_" --code-file "$B/code"
kh_out_has "^activated $UA_B as bob@kc.test$"
# carol's code guessed five times wrong: the sixth attempt is refused even with the right code
n=0
while [ "$n" -lt 5 ]; do
	kh_expect_fail keycard activate --center "$URL" --cacert "$CA" --card "$CC_" --code 0000-0000-0000-0000
	n=$((n + 1))
done
kh_expect_fail keycard activate --center "$URL" --cacert "$CA" --card "$CC_" --code "$CODE_C"
kh_err_has 'too many'

# --- the seed's sequence: send, relay, fetch, open -----------------------------------------------------
kh_expect_ok keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to bob@kc.test --in "$A/letter.txt"
kh_out_has "^sent 2 to bob@kc.test \\($(kh_size "$A/letter.txt") bytes\\)$" # index 1 went to the refused post
kh_expect_ok keycard status --card "$CA_"
kh_out_has '^acked: 2$'
kh_expect_ok keycard fetch --center "$URL" --cacert "$CA" --card "$CB_" --out-dir "$B/inbox"
kh_out_has '^1 from alice@kc.test '
[ -f "$B/inbox/1.khm" ] || kh_fail "fetch wrote $(ls "$B/inbox")"
kh_expect_mode "$B/inbox/1.khm" 600
# the mailbox is empty once fetched
kh_expect_ok keycard fetch --center "$URL" --cacert "$CA" --card "$CB_" --out-dir "$B/inbox2"
[ -z "$(ls -A "$B/inbox2" 2>/dev/null)" ] || kh_fail "a second fetch got $(ls "$B/inbox2")"
# the center, the network and bob's disk hold no plaintext: only what bob opens does
if grep -rqF "$MARK" "$K" "$B/inbox"; then
	kh_fail "the document is in clear on the center's or bob's disk"
fi
kh_expect_ok keycard open --card "$CB_" --in "$B/inbox/1.khm" --out "$B/letter.txt"
kh_out_has '^opened 1 from alice@kc.test '
cmp -s "$A/letter.txt" "$B/letter.txt" || kh_fail "bob's letter is not alice's"
[ "$(grep -rlF "$MARK" "$B" | wc -l)" -eq 1 ] || kh_fail "the document is on bob's side more than once"
# opening it again works (the card gives the key of the last message again, for those bytes only)
kh_expect_ok keycard open --card "$CB_" --in "$B/inbox/1.khm" --out "$B/letter-again.txt"
cmp -s "$A/letter.txt" "$B/letter-again.txt" || kh_fail "the second open differs"

# --- a key behind the card's position, and a forged delivery -------------------------------------------
echo "second note" >"$A/note2.txt"
echo "third note" >"$A/note3.txt"
kh_expect_ok keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to bob@kc.test --in "$A/note2.txt"
kh_expect_ok keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to bob@kc.test --in "$A/note3.txt"
kh_expect_ok keycard fetch --center "$URL" --cacert "$CA" --card "$CB_" --out-dir "$B/inbox"
[ -f "$B/inbox/2.khm" ] && [ -f "$B/inbox/3.khm" ] || kh_fail "fetch wrote $(ls "$B/inbox")"
# a byte of 3's first chunk flipped on bob's disk: refused, no file, bob's card did not move
cp "$B/inbox/3.khm" "$B/forged.khm"
kh_flip_byte "$B/forged.khm" 30
kh_expect_fail keycard open --card "$CB_" --in "$B/forged.khm" --out "$B/forged.txt"
[ ! -e "$B/forged.txt" ] || kh_fail "a forged delivery left a file"
kh_expect_ok keycard status --card "$CB_"
kh_out_has '^recv: 2$'
# bob's card file now, for the rollback below
cp -p "$B/bob.card" "$B/bob.card.before"
# 3 opens; then 2, behind it, is refused: the card forgot that key
kh_expect_ok keycard open --card "$CB_" --in "$B/inbox/3.khm" --out "$B/note3.txt"
cmp -s "$A/note3.txt" "$B/note3.txt" || kh_fail "note 3 differs"
kh_expect_fail keycard open --card "$CB_" --in "$B/inbox/2.khm" --out "$B/note2.txt"
kh_err_has 'behind'
[ ! -e "$B/note2.txt" ] || kh_fail "a refused open left a file"

# --- a rolled-back key card file ----------------------------------------------------------------------
kh_stop "$PID_bob" TERM
cp -p "$B/bob.card" "$B/bob.card.now"
cp -p "$B/bob.card.before" "$B/bob.card"
kh_expect_fail keycard status --card "$B/bob.card"
kh_err_has 'older'
cp -p "$B/bob.card.now" "$B/bob.card"
kh_start_daemon PID_bob card serve --card "$B/bob.card" --socket "$B/bob.sock"
kh_wait_socket "$B/bob.sock" "$PID_bob"

# --- unknown and blocked recipients ------------------------------------------------------------------
kh_expect_ok keycard status --card "$CA_"
SEND_BEFORE=$(sed -n 's/^send: //p' "$KH_OUT")
kh_expect_fail keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to nobody@kc.test --in "$A/note2.txt"
kh_err_has 'no active key card has the address .*spent'
kh_expect_ok keycard status --card "$CA_"
kh_out_has "^send: $((SEND_BEFORE + 1))$"
kh_out_has "^acked: $SEND_BEFORE$" # the spent index acknowledged: card and center agree
kh_expect_ok keycenter block --dir "$K/id" --db "$K/kc.db" "$UA_B"
kh_expect_fail keycard send --center "$URL" --cacert "$CA" --card "$CA_" --to bob@kc.test --in "$A/note2.txt"
kh_err_has 'no active key card has the address .*spent'
kh_expect_ok keycenter list --db "$K/kc.db"
kh_out_has "^$UA_B bob@kc.test blocked .*waiting=0$"
kh_expect_ok keycenter log --db "$K/kc.db"
[ "$(grep -c -- "-> refused" "$KH_OUT")" -eq 2 ] || kh_fail "two refused posts expected in the log"

# --- the key center killed with -9 while two senders post ---------------------------------------------
# dave and erin (enrolled and activated now) each post 8 notes to fay; the center is killed under
# them and started again on the same port. A send that fails is run again, as a user would.
for u in dave erin fay; do
	mkdir "$T/$u" "$T/$u/inbox"
	kh_expect_ok card issue --authority "$T/auth" --role keycard --out "$T/$u/$u.card"
	kh_expect_ok keycenter enrol --dir "$K/id" --db "$K/kc.db" --card "$T/$u/$u.card" --address "$u@kc.test"
	code=$(code_of)
	kh_start_daemon "PID_$u" card serve --card "$T/$u/$u.card" --socket "$T/$u/$u.sock"
	eval "kh_wait_socket \"$T/$u/$u.sock\" \"\$PID_$u\""
	kh_expect_ok keycard activate --center "$URL" --cacert "$CA" --card "unix:$T/$u/$u.sock" --code "$code"
done
send_loop()
{
	u=$1
	n=0
	while [ "$n" -lt 8 ]; do
		echo "note $n from $u $MARK" >"$T/$u/note-$n.txt"
		tries=0
		until "$KEYHOLE" keycard send --center "$URL" --cacert "$CA" --card "unix:$T/$u/$u.sock" \
			--to fay@kc.test --in "$T/$u/note-$n.txt" >>"$KH_META/load-$u.out" 2>>"$KH_META/load-$u.err"; do
			tries=$((tries + 1))
			[ "$tries" -lt 100 ] || {
				echo "gave up on $u $n" >>"$KH_META/load-$u.err"
				return 1
			}
			sleep 0.2
		done
		n=$((n + 1))
	done
}
send_loop dave &
L1=$!
send_loop erin &
L2=$!
i=0
until [ "$(cat "$KH_META"/load-*.out 2>/dev/null | grep -c '^sent ')" -ge 3 ]; do
	[ "$i" -lt 300 ] || kh_fail "no post went through within 30 s"
	sleep 0.1
	i=$((i + 1))
done
kill -KILL "$KS" 2>/dev/null || kh_fail "the key center was not running"
wait "$KS" 2>/dev/null
: >"$KH_META/daemon.out"
kh_start_daemon KS keycenter serve --db "$K/kc.db" --dir "$K/id" --listen "127.0.0.1:$KPORT" \
	--cert "$K/tls.crt" --key "$K/tls.key"
kh_wait_listening "$KS"
wait "$L1" || kh_fail "dave's posts did not all go ($(tail -n 3 "$KH_META/load-dave.err"))"
wait "$L2" || kh_fail "erin's posts did not all go ($(tail -n 3 "$KH_META/load-erin.err"))"
# never twice: no sender index and no receive index twice in the relay log
n=$(sqlite3 "$K/kc.db" "SELECT count(*) FROM (SELECT sender, send_idx FROM kc_relays GROUP BY sender, send_idx
	HAVING count(*) > 1)")
[ "$n" -eq 0 ] || kh_fail "$n sender indexes relayed twice"
n=$(sqlite3 "$K/kc.db" "SELECT count(*) FROM (SELECT recipient, recv_idx FROM kc_relays WHERE recipient IS NOT NULL
	GROUP BY recipient, recv_idx HAVING count(*) > 1)")
[ "$n" -eq 0 ] || kh_fail "$n receive indexes used twice"
# every note arrives and opens, in index order; each at least once
kh_expect_ok keycard fetch --center "$URL" --cacert "$CA" --card "unix:$T/fay/fay.sock" --out-dir "$T/fay/inbox"
for f in $(ls "$T/fay/inbox" | sort -n); do
	kh_expect_ok keycard open --card "unix:$T/fay/fay.sock" --in "$T/fay/inbox/$f" --out "$T/fay/${f%.khm}.txt"
done
for u in dave erin; do
	n=0
	while [ "$n" -lt 8 ]; do
		grep -lxF "note $n from $u $MARK" "$T"/fay/*.txt >/dev/null || kh_fail "note $n from $u never arrived"
		n=$((n + 1))
	done
	# card and center agree: the center's last relayed post of the sender is one the card gave, and
	# every post the card saw acknowledged is on the center's record
	kh_expect_ok keycard status --card "unix:$T/$u/$u.sock"
	send=$(sed -n 's/^send: //p' "$KH_OUT")
	acked=$(sed -n 's/^acked: //p' "$KH_OUT")
	ua=$(sed -n 's/^serial: //p' "$KH_OUT")
	kh_expect_ok keycenter list --db "$K/kc.db"
	csend=$(sed -n "s/^$ua $u@kc.test active send=\\([0-9]*\\) .*/\\1/p" "$KH_OUT")
	[ -n "$csend" ] && [ "$csend" -le "$send" ] && [ "$acked" -le $((csend - 1)) ] ||
		kh_fail "$u: card send=$send acked=$acked, center send=$csend"
done
kh_note "posts retried by the user after the kill: $(cat "$KH_META"/load-*.err | grep -c . || true); answered as duplicates: $(cat "$KH_META"/load-*.out | grep -c "had it already" || true)"

kh_stop "$KS" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "keycenter serve exited $KH_RC on SIGTERM"
exit 0
