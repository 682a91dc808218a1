# The escrow's split-key variant across real processes: three escrows of three operators (each
# its own identity, signing process, database and `keyhole escrow serve`), a buyer device as a
# module daemon, the seller's and the buyer's commands:
#   - the seller lists one content at each escrow and splits its key: the device's share and any 2
#     of the 3 escrows' recover it; the content's marker is in none of the files made; the
#     device's share is private (0600); a split that would give one escrow two shares, or a
#     content split for listings of other content, is refused and makes nothing;
#   - the seller grants the device's share to the buyer's device from its pairing certificate
#     (which `openssl verify` accepts against the authority's root); not to a device of another
#     authority;
#   - one escrow down: the buyer buys a share from each of the other two; one share alone does
#     not combine (nothing settles, the money stays held); two do: delivered, each of the two
#     escrows pays the seller once and charges the buyer once, the escrow that was down holds
#     nothing; the content opens through the device to the seller's bytes;
#   - another device of the same authority, with the first device's grant, recovers nothing and
#     settles nothing; a combine run again is a repeat that moves no money; a share given up
#     (`buyer cancel`) is refunded; a purchase whose escrow is down stays under way;
#   - `escrow audit` balances on every escrow; usage errors exit 2.
#
# Run by CTest as `sh test_escrow_split.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_escrow_split
kh_need openssl cmp

T=$KH_WORK
cd "$T" || kh_fail "cd $T"
MARK=KEYHOLE-SPLIT-CONTENT-MARKER-5c0e
PRICE=400
S=$T/seller
B=$T/buyer
mkdir "$S" "$B" || kh_fail "mkdir"

for cmd in "seller split" "seller grant" "buyer cert" "buyer combine" "buyer cancel"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage seller split --listings a,,b --need 1 --in x --out "$S/x"
kh_expect_usage seller split --listings a,b --need 3 --in x --out "$S/x"
kh_expect_usage seller split --listings a,b --need 0 --in x --out "$S/x"
kh_expect_usage buyer combine --device d --grant g --content c --parts a,b --escrow http://127.0.0.1:1 -T t,u \
	--out o
[ -z "$(ls -A "$S")" ] || kh_fail "a refused command left $(ls -A "$S") behind"

# --- three escrows, one authority ------------------------------------------------------------------
kh_expect_ok authority init "$T/auth"
kh_expect_ok authority init "$T/other"
kh_expect_ok card issue --authority "$T/auth" --role buyer --out "$B/d1.card"
kh_expect_ok card issue --authority "$T/auth" --role buyer --out "$B/d2.card"
kh_expect_ok card issue --authority "$T/other" --role buyer --out "$B/alien.card"
for d in d1 d2; do
	kh_start_daemon "PID_$d" card serve --card "$B/$d.card" --socket "$B/$d.sock"
	eval "kh_wait_socket \"\$B/\$d.sock\" \"\$PID_$d\""
done
for e in 1 2 3; do
	E=$T/escrow$e
	mkdir "$E" || kh_fail "mkdir $E"
	kh_expect_ok escrow init --authority "$T/auth" --dir "$E/id"
	kh_start_daemon "SM$e" escrow secmod --keys "$E/keys" --socket "$E/sm.sock"
	i=0
	while [ ! -S "$E/sm.sock" ]; do
		[ "$i" -lt 100 ] || kh_fail "signing process $e made no socket within 10 s"
		sleep 0.1
		i=$((i + 1))
	done
	kh_expect_ok escrow account add --db "$E/escrow.db" --name seller --currency EUR --token-out "$S/token$e"
	kh_expect_ok escrow account add --db "$E/escrow.db" --name alice --currency EUR --token-out "$B/alice$e"
	kh_expect_ok escrow account deposit --db "$E/escrow.db" --name alice --amount 1000
	: >"$KH_META/daemon.out"
	kh_start_daemon "ES$e" escrow serve --db "$E/escrow.db" --dir "$E/id" --secmod "$E/sm.sock" \
		--listen 127.0.0.1:0 --deadline 3600
	eval "kh_wait_listening \"\$ES$e\""
	eval "URL$e=http://127.0.0.1:$PORT"
done
[ "$(cat "$T/escrow1/id/escrow.crt")" != "$(cat "$T/escrow2/id/escrow.crt")" ] ||
	kh_fail "two escrows have one identity"

# --- the seller: one listing per escrow, the key split 2 of 3 (with the device's share) ------------
{
	i=0
	while [ "$i" -lt 500 ]; do
		echo "$MARK line $i of the split content"
		i=$((i + 1))
	done
} >"$S/film.txt"
for e in 1 2 3; do
	eval "u=\$URL$e"
	kh_expect_ok seller list --escrow "$u" -T "$S/token$e" --content film-1 --price "$PRICE" --out "$S/film$e.listing"
done
kh_expect_ok seller list --escrow "$URL1" -T "$S/token1" --content film-2 --price "$PRICE" --out "$S/other.listing"
# two shares at one escrow, or listings of two contents: refused, nothing made
kh_expect_fail seller split --listings "$S/film1.listing,$S/film1.listing" --need 1 --in "$S/film.txt" \
	--out "$S/bad"
kh_expect_fail seller split --listings "$S/film1.listing,$S/other.listing" --need 1 --in "$S/film.txt" \
	--out "$S/bad"
[ -z "$(ls "$S" | grep '^bad')" ] || kh_fail "a refused split left files"
kh_expect_ok seller split --listings "$S/film1.listing,$S/film2.listing,$S/film3.listing" --need 2 \
	--in "$S/film.txt" --out "$S/film"
kh_out_has "^content $S/film.khe offers 3 need 2$"
kh_expect_mode "$S/film.share" 600
for f in "$S/film.khe" "$S/film.1.offer" "$S/film.2.offer" "$S/film.3.offer" "$S/film.share"; do
	[ -s "$f" ] || kh_fail "seller split did not write $f"
	! grep -q "$MARK" "$f" || kh_fail "the marker is in $f"
done
# again: every file is there already, nothing is replaced
kh_expect_fail seller split --listings "$S/film1.listing,$S/film2.listing,$S/film3.listing" --need 2 \
	--in "$S/film.txt" --out "$S/film"

# --- the grant: the device's share sealed to the buyer's device --------------------------------------
kh_expect_ok buyer cert --device "unix:$B/d1.sock" --out "$B/d1.pem"
kh_out_has '^device [0-9]+$'
openssl verify -CAfile "$T/auth/root.crt" "$B/d1.pem" >/dev/null 2>&1 ||
	kh_fail "openssl does not verify the device's pairing certificate"
kh_expect_ok buyer cert --device "$B/alien.card" --out "$B/alien.pem"
kh_expect_fail seller grant --share "$S/film.share" --content "$S/film.khe" --cert "$B/alien.pem" \
	--authority "$T/auth" --out "$B/alien.grant"
[ ! -e "$B/alien.grant" ] || kh_fail "a refused grant was written"
kh_expect_ok seller grant --share "$S/film.share" --content "$S/film.khe" --cert "$B/d1.pem" \
	--authority "$T/auth/root.crt" --out "$B/d1.grant"
kh_out_has "^grant $B/d1.grant device [0-9]+$"
cp "$S/film.khe" "$S/film.1.offer" "$S/film.2.offer" "$S/film.3.offer" "$B/" || kh_fail "hand the files over"

# --- escrow 2 is down; the buyer buys the shares of escrows 1 and 3 ----------------------------------
kh_stop "$ES2" TERM
kh_expect_fail buyer buy --escrow "$URL2" -T "$B/alice2" --device "unix:$B/d1.sock" --offer "$B/film.2.offer" \
	--content "$B/film.khe" --out "$B/p2"
kh_expect_ok buyer buy --escrow "$URL1" -T "$B/alice1" --device "unix:$B/d1.sock" --offer "$B/film.1.offer" \
	--content "$B/film.khe" --out "$B/p1"
kh_out_has '^share [0-9a-f]{32} held on the device'
[ -s "$B/p1.purchase" ] || kh_fail "a share held left no purchase under way"
# one escrow's share and the device's: too few, nothing settles, the money stays held
kh_expect_fail buyer combine --device "unix:$B/d1.sock" --grant "$B/d1.grant" --content "$B/film.khe" \
	--parts "$B/p1" --escrow "$URL1" -T "$B/alice1" --out "$B/film"
kh_err_has 'too few'
[ ! -e "$B/film.lic" ] || kh_fail "a licence from too few shares"
kh_expect_ok buyer status --device "unix:$B/d1.sock" --escrow "$URL1" -T "$B/alice1"
kh_out_has " share escrow=held price=$PRICE "
kh_expect_ok buyer buy --escrow "$URL3" -T "$B/alice3" --device "unix:$B/d1.sock" --offer "$B/film.3.offer" \
	--content "$B/film.khe" --out "$B/p3"
kh_out_has '^share [0-9a-f]{32} held on the device'

# another device of the same authority cannot use d1's grant: nothing recovered, nothing settled
kh_expect_ok buyer buy --escrow "$URL1" -T "$B/alice1" --device "unix:$B/d2.sock" --offer "$B/film.1.offer" \
	--content "$B/film.khe" --out "$B/q1"
kh_expect_ok buyer buy --escrow "$URL3" -T "$B/alice3" --device "unix:$B/d2.sock" --offer "$B/film.3.offer" \
	--content "$B/film.khe" --out "$B/q3"
kh_expect_fail buyer combine --device "unix:$B/d2.sock" --grant "$B/d1.grant" --content "$B/film.khe" \
	--parts "$B/q1,$B/q3" --escrow "$URL1,$URL3" -T "$B/alice1,$B/alice3" --out "$B/stolen"
kh_err_has 'another device'
[ ! -e "$B/stolen.lic" ] || kh_fail "a licence from another device's grant"
[ -s "$B/q1.purchase" ] && [ -s "$B/q3.purchase" ] || kh_fail "a refused combine settled a part"

# the two shares and the device's: delivered
kh_expect_ok buyer combine --device "unix:$B/d1.sock" --grant "$B/d1.grant" --content "$B/film.khe" \
	--parts "$B/p1,$B/p3" --escrow "$URL1,$URL3" -T "$B/alice1,$B/alice3" --out "$B/film"
kh_out_has "^delivered $B/film.lic escrows=2$"
[ ! -e "$B/p1.purchase" ] && [ ! -e "$B/p3.purchase" ] || kh_fail "settled parts left their state"
[ -s "$B/p1.notice" ] && [ -s "$B/p3.notice" ] || kh_fail "no notice kept for a part"
kh_expect_ok buyer open --device "unix:$B/d1.sock" --licence "$B/film.lic" --content "$B/film.khe" \
	--out "$B/film.out"
cmp -s "$B/film.out" "$S/film.txt" || kh_fail "the split content did not open to the seller's bytes"
# the licence is the device's alone
kh_expect_fail buyer open --device "unix:$B/d2.sock" --licence "$B/film.lic" --content "$B/film.khe" \
	--out "$B/stolen.out"
[ ! -e "$B/stolen.out" ] || kh_fail "another device opened the licence"
# a repeat settles nothing twice
kh_expect_fail buyer combine --device "unix:$B/d1.sock" --grant "$B/d1.grant" --content "$B/film.khe" \
	--parts "$B/p1,$B/p3" --escrow "$URL1,$URL3" -T "$B/alice1,$B/alice3" --out "$B/film"

# --- the money: each escrow that answered paid the seller once; the one down holds nothing ----------
for e in 1 3; do
	eval "u=\$URL$e"
	kh_expect_ok seller account --escrow "$u" -T "$S/token$e"
	kh_out_has "^account seller available=$PRICE held=0 deposited=0 withdrawn=0 EUR$"
done
# d2's two purchases are still held (its parts never combined) at escrows 1 and 3
kh_expect_ok seller account --escrow "$URL1" -T "$B/alice1"
kh_out_has "^account alice available=200 held=$PRICE deposited=1000 withdrawn=0 EUR$"
# d2 gives its share up: the escrow refunds it, the device no longer holds it
kh_expect_ok buyer cancel --escrow "$URL1" -T "$B/alice1" --device "unix:$B/d2.sock" --out "$B/q1"
kh_out_has '^cancelled [0-9a-f]{32} escrow=failed$'
[ ! -e "$B/q1.purchase" ] && [ -s "$B/q1.notice" ] || kh_fail "a cancelled purchase left its state or no notice"
kh_expect_ok seller account --escrow "$URL1" -T "$B/alice1"
kh_out_has "^account alice available=600 held=0 deposited=1000 withdrawn=0 EUR$"
kh_expect_fail buyer cancel --escrow "$URL1" -T "$B/alice1" --device "unix:$B/d2.sock" --out "$B/q1"
# a purchase whose escrow is down cannot be given up yet: it stays under way
kh_expect_fail buyer cancel --escrow "$URL2" -T "$B/alice2" --device "unix:$B/d1.sock" --out "$B/p2"
[ -s "$B/p2.purchase" ] || kh_fail "a cancel with its escrow down dropped the purchase under way"
for e in 1 2 3; do
	kh_expect_ok escrow audit --db "$T/escrow$e/escrow.db"
	kh_out_has '^ledger balances'
done
kh_expect_ok escrow audit --db "$T/escrow2/escrow.db"
kh_out_has '^EUR deposited=1000 available=1000 held=0 withdrawn=0$'

exit 0
