# The escrow of seed 003 across real processes: the signing process (keyhole escrow secmod), the
# escrow over HTTPS (keyhole escrow serve --cert --key) on its own database, buyer devices as
# module daemons (keyhole card serve) and the seller's and buyer's commands in between:
#   - the seller lists content and encrypts it; the buyer buys it through its device: delivered,
#     the seller paid the price once, the buyer charged once; the content opens through the device
#     to the original bytes, and only through that device; the content's marker is on no file of
#     the buyer's but the one it asked for; `buyer status` shows the purchase delivered at both ends;
#   - a buyer without the funds is refused, leaves no purchase under way and is charged nothing;
#   - a seller cannot withdraw money the escrow holds; it withdraws what was posted to it, once;
#   - `escrow audit` balances after every step, and names the account when a balance is edited
#     behind the escrow's back (exit 1);
#   - the escrow killed with -9 while buyers buy: after a restart every purchase finishes (the
#     buyer's command run again resumes it), each acknowledged purchase is on record once, the
#     money adds up to the unit, and the audit balances;
#   - usage errors exit 2 and create nothing.
#
# Run by CTest as `sh test_escrow.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_escrow
kh_need openssl sqlite3 cmp

T=$KH_WORK
cd "$T" || kh_fail "cd $T"
MARK=KEYHOLE-ESCROWED-CONTENT-MARKER-77b1
PRICE=1250
E=$T/escrow # the escrow's side
S=$T/seller
B=$T/buyer
mkdir "$E" "$S" "$B" || kh_fail "mkdir"

# --- usage: exit 2, one line, nothing created ----------------------------------------------------
for cmd in "escrow init" "escrow serve" "escrow account add" "escrow account deposit" "escrow account token" \
	"escrow audit" "escrow sweep" "seller list" "seller encrypt" "seller account" "buyer buy" "buyer open" \
	"buyer status"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage escrow serve --db "$E/x.db" --dir "$E/id"
kh_expect_usage escrow serve --db "$E/x.db" --dir "$E/id" --secmod s --key-bits 1024
kh_expect_usage escrow serve --db "$E/x.db" --dir "$E/id" --secmod s --deadline 0
kh_expect_usage escrow account add --db "$E/x.db" --name a --currency eur --token-out "$E/t"
kh_expect_usage escrow account deposit --db "$E/x.db" --name a --amount 0
kh_expect_usage seller list --escrow http://127.0.0.1:1 --token-file t --content "a b" --price 1 --out o
kh_expect_usage seller list --escrow http://127.0.0.1:1 --token-file t --content a --price 0 --out o
kh_expect_usage seller account --escrow http://127.0.0.1:1 --token-file t --withdraw 5
kh_expect_usage buyer status --device x --escrow http://127.0.0.1:1
[ -z "$(ls -A "$E")" ] || kh_fail "a refused command left $(ls -A "$E") behind"

# --- the parties -----------------------------------------------------------------------------------
kh_expect_ok authority init "$T/auth"
kh_expect_ok authority init "$T/other"
for d in d1 d2 d3 d4; do
	kh_expect_ok card issue --authority "$T/auth" --role buyer --out "$B/$d.card"
done
kh_expect_ok card issue --authority "$T/other" --role buyer --out "$B/alien.card"
kh_expect_ok escrow init --authority "$T/auth" --dir "$E/id"
kh_out_has '^escrow FE[0-9A-F]{6}$'
kh_expect_fail escrow init --authority "$T/auth" --dir "$E/id" # a key is there already

kh_start_daemon SM escrow secmod --keys "$E/keys" --socket "$E/sm.sock"
i=0
while [ ! -S "$E/sm.sock" ]; do
	[ "$i" -lt 100 ] || kh_fail "the signing process made no socket within 10 s"
	sleep 0.1
	i=$((i + 1))
done
for d in d1 d2 d3 d4 alien; do
	kh_start_daemon "PID_$d" card serve --card "$B/$d.card" --socket "$B/$d.sock"
	eval "kh_wait_socket \"\$B/\$d.sock\" \"\$PID_$d\""
done

# accounts: tokens written once, private
kh_expect_ok escrow account add --db "$E/escrow.db" --name seller --currency EUR --token-out "$S/token"
kh_expect_ok escrow account add --db "$E/escrow.db" --name alice --currency EUR --token-out "$B/alice.token"
kh_expect_ok escrow account add --db "$E/escrow.db" --name bob --currency EUR --token-out "$B/bob.token"
kh_expect_ok escrow account add --db "$E/escrow.db" --name carol --currency EUR --token-out "$B/carol.token"
kh_expect_mode "$B/alice.token" 600
kh_expect_fail escrow account add --db "$E/escrow.db" --name alice --currency EUR --token-out "$B/again.token"
[ ! -e "$B/again.token" ] || kh_fail "a refused account add wrote a token"
kh_expect_ok escrow account deposit --db "$E/escrow.db" --name alice --amount 10000
kh_out_has '^available alice 10000 EUR$'
kh_expect_ok escrow account deposit --db "$E/escrow.db" --name alice --amount 500 --idempotency-key dep-1
kh_expect_ok escrow account deposit --db "$E/escrow.db" --name alice --amount 500 --idempotency-key dep-1
kh_out_has '^available alice 10500 EUR$'
kh_expect_ok escrow account deposit --db "$E/escrow.db" --name bob --amount 100
kh_expect_ok escrow account deposit --db "$E/escrow.db" --name carol --amount 100000
kh_expect_ok escrow audit --db "$E/escrow.db"
kh_out_has '^ledger balances'

# The escrow speaks HTTPS (TLS 1.3) with a certificate the clients trust through --cacert.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$E/tls.key" \
	-out "$E/tls.crt" -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 "$E/tls.key"
CA=$E/tls.crt
: >"$KH_META/daemon.out"
kh_start_daemon ES escrow serve --db "$E/escrow.db" --dir "$E/id" --secmod "$E/sm.sock" \
	--listen 127.0.0.1:0 --cert "$E/tls.crt" --key "$E/tls.key" --deadline 3600
kh_wait_listening "$ES"
EPORT=$PORT
URL=https://127.0.0.1:$EPORT

# --- the seed's sequence ---------------------------------------------------------------------------
{
	i=0
	while [ "$i" -lt 300 ]; do
		echo "$MARK line $i of the escrowed content"
		i=$((i + 1))
	done
} >"$S/song.txt"
kh_expect_ok seller list --escrow "$URL" --cacert "$CA" -T "$S/token" --content song-1 --price "$PRICE" \
	--out "$S/song.listing"
LISTING=$(sed -n 's/^listing \([0-9a-f]\{32\}\)$/\1/p' "$KH_OUT")
[ -n "$LISTING" ] || kh_fail "seller list printed no listing id"
kh_expect_ok seller encrypt --listing "$S/song.listing" --in "$S/song.txt" --out "$S/song"
! grep -q "$MARK" "$S/song.khe" "$S/song.offer" || kh_fail "the marker is in the encrypted files"
cp "$S/song.khe" "$S/song.offer" "$B/" || kh_fail "hand the buyer the files"

kh_expect_ok buyer buy --escrow "$URL" --cacert "$CA" -T "$B/alice.token" --device "unix:$B/d1.sock" \
	--offer "$B/song.offer" --content "$B/song.khe" --out "$B/alice-song"
kh_out_has "^delivered [0-9a-f]{32} escrow=delivered$"
[ -s "$B/alice-song.lic" ] && [ -s "$B/alice-song.notice" ] || kh_fail "no licence or notice"
[ ! -e "$B/alice-song.purchase" ] || kh_fail "a finished purchase left its state file"
kh_expect_ok buyer open --device "unix:$B/d1.sock" --licence "$B/alice-song.lic" --content "$B/song.khe" \
	--out "$B/song.out"
cmp -s "$B/song.out" "$S/song.txt" || kh_fail "the content did not open to the seller's bytes"
# the marker is on no file of the buyer's but the one asked for
for f in "$B"/*; do
	[ "$f" = "$B/song.out" ] || [ -S "$f" ] || ! grep -q "$MARK" "$f" || kh_fail "the content's plaintext is in $f"
done
# another device cannot open it, and leaves nothing behind
kh_expect_fail buyer open --device "unix:$B/d2.sock" --licence "$B/alice-song.lic" --content "$B/song.khe" \
	--out "$B/stolen.out"
[ ! -e "$B/stolen.out" ] || kh_fail "a refused open left a file"
kh_expect_ok buyer status --device "unix:$B/d1.sock" --escrow "$URL" --cacert "$CA" -T "$B/alice.token"
kh_out_has "^[0-9a-f]{32} $LISTING delivered escrow=delivered price=$PRICE "
kh_out_has "^account alice available=9250 held=0 deposited=10500 withdrawn=0 EUR$"
kh_expect_ok seller account --escrow "$URL" --cacert "$CA" -T "$S/token"
kh_out_has "^account seller available=$PRICE held=0 deposited=0 withdrawn=0 EUR$"
kh_expect_ok escrow audit --db "$E/escrow.db"

# another operator's device: its certificate is not from this escrow's authority
kh_expect_fail buyer buy --escrow "$URL" --cacert "$CA" -T "$B/alice.token" --device "unix:$B/alien.sock" \
	--offer "$B/song.offer" --content "$B/song.khe" --out "$B/alien-song"
kh_err_has certificate
[ ! -e "$B/alien-song.purchase" ] || kh_fail "a refused purchase stayed under way"

# bob has too little: refused, nothing held, nothing left under way
kh_expect_fail buyer buy --escrow "$URL" --cacert "$CA" -T "$B/bob.token" --device "unix:$B/d2.sock" \
	--offer "$B/song.offer" --content "$B/song.khe" --out "$B/bob-song"
kh_err_has insufficient_funds
[ ! -e "$B/bob-song.purchase" ] || kh_fail "a refused purchase stayed under way"
kh_expect_ok escrow audit --db "$E/escrow.db"
kh_out_has '^EUR deposited=110600 available=110600 held=0 withdrawn=0$'

# the seller withdraws what was posted to it, once; not a unit more
kh_expect_fail seller account --escrow "$URL" --cacert "$CA" -T "$S/token" --withdraw 1251 --idempotency-key w1
kh_err_has insufficient_funds
kh_expect_ok seller account --escrow "$URL" --cacert "$CA" -T "$S/token" --withdraw 1000 --idempotency-key w2
kh_expect_ok seller account --escrow "$URL" --cacert "$CA" -T "$S/token" --withdraw 1000 --idempotency-key w2
kh_out_has "^account seller available=250 held=0 deposited=0 withdrawn=1000 EUR$"

# --- kill -9 while buyers buy ------------------------------------------------------------------------
# Three buyers' loops of ten purchases each (carol's money, three devices); the escrow is killed with -9
# under them and started again on the same port; every command that failed is run again until it
# finishes, as a user would.
buy_loop()
{
	dev=$1
	n=0
	while [ "$n" -lt 10 ]; do
		tries=0
		until "$KEYHOLE" buyer buy --escrow "$URL" --cacert "$CA" -T "$B/carol.token" --device "unix:$B/$dev.sock" \
			--offer "$B/song.offer" --content "$B/song.khe" --out "$B/load-$dev-$n" >>"$KH_META/load-$dev.out" \
			2>>"$KH_META/load-$dev.err"; do
			tries=$((tries + 1))
			[ "$tries" -lt 200 ] || {
				echo "gave up on $dev $n" >>"$KH_META/load-$dev.err"
				return 1
			}
			sleep 0.1
		done
		n=$((n + 1))
	done
}
buy_loop d2 &
L1=$!
buy_loop d3 &
L2=$!
buy_loop d4 &
L3=$!
# the kill comes once a few purchases are through, so that others are under way
i=0
until [ "$(cat "$KH_META"/load-d?.out 2>/dev/null | grep -c '^delivered ')" -ge 4 ]; do
	[ "$i" -lt 300 ] || kh_fail "no purchase went through within 30 s"
	sleep 0.1
	i=$((i + 1))
done
kill -KILL "$ES" 2>/dev/null || kh_fail "the escrow was not running"
wait "$ES" 2>/dev/null
sleep 0.5
: >"$KH_META/daemon.out"
kh_start_daemon ES escrow serve --db "$E/escrow.db" --dir "$E/id" --secmod "$E/sm.sock" \
	--listen "127.0.0.1:$EPORT" --cert "$E/tls.crt" --key "$E/tls.key" --deadline 3600
kh_wait_listening "$ES"
wait "$L1" || kh_fail "buyer d2's purchases did not all finish ($(tail -n 3 "$KH_META/load-d2.err"))"
wait "$L2" || kh_fail "buyer d3's purchases did not all finish ($(tail -n 3 "$KH_META/load-d3.err"))"
wait "$L3" || kh_fail "buyer d4's purchases did not all finish ($(tail -n 3 "$KH_META/load-d4.err"))"
delivered=$(cat "$KH_META"/load-d?.out | grep -c '^delivered ')
[ "$delivered" -eq 30 ] || kh_fail "$delivered of 30 purchases were delivered"
# the kill came while purchases were under way: some commands failed and were run again
[ -s "$KH_META/load-d2.err" ] || [ -s "$KH_META/load-d3.err" ] || [ -s "$KH_META/load-d4.err" ] ||
	kh_fail "no purchase was under way when the escrow was killed"
resumed=$(cat "$KH_META"/load-d?.out | grep -c '(resumed)$' || true)
kh_note "purchases resumed after the kill: $resumed"
[ -z "$(ls "$B"/load-*.purchase 2>/dev/null)" ] || kh_fail "purchases are still under way: $(ls "$B"/load-*.purchase)"
# each acknowledged purchase once: carol paid 30 prices, the seller got them
kh_expect_ok escrow audit --db "$E/escrow.db"
kh_out_has '^ledger balances'
kh_out_has '^EUR deposited=110600 available=109600 held=0 withdrawn=1000$'
n=$(sqlite3 "$E/escrow.db" "SELECT count(*) FROM escrow_purchases WHERE state = 'delivered'")
[ "$n" -eq 31 ] || kh_fail "$n purchases delivered on record, 31 expected"
n=$(sqlite3 "$E/escrow.db" "SELECT count(*) FROM escrow_movements WHERE kind = 'hold'")
[ "$n" -eq 31 ] || kh_fail "$n holds on record for 31 purchases"
kh_expect_ok seller account --escrow "$URL" --cacert "$CA" -T "$S/token"
kh_out_has "^account seller available=$((250 + 30 * PRICE)) held=0 deposited=0 withdrawn=1000 EUR$"

# --- the audit sees a balance edited behind the escrow's back ------------------------------------
kh_stop "$ES" TERM
sqlite3 "$E/escrow.db" "UPDATE escrow_balances SET balance = balance + 1 WHERE bucket = 'available' AND account_id =
	(SELECT id FROM escrow_accounts WHERE name = 'bob')" || kh_fail "sqlite3 could not edit the database"
kh_expect_fail escrow audit --db "$E/escrow.db"
kh_err_has 'does not balance'
kh_expect_fail escrow audit --db "$E/nothing.db"
[ ! -e "$E/nothing.db" ] || kh_fail "escrow audit made a database"

kh_stop "$SM" TERM
exit 0
