# What the `keyhole` command writes and reads: the authority directory (key files 0600, refused
# when group or others can read them, certificates that `openssl verify` accepts and whose subject
# names role and unique address), card files (0600, never overwritten), and every way a card file
# can be bad (corrupted, truncated, wrong key, rolled back, missing, foreign operator). A refused
# command exits 1 with one line on stderr and leaves every file exactly as it was.
#
# Run by CTest as `sh test_cli_files.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_cli_files
kh_need openssl sha256sum stat od dd find

T=$KH_WORK
AUTH=$T/auth
cd "$T" || kh_fail "cd $T"

# --- authority init ----------------------------------------------------------------------------
kh_expect_ok authority init --name "Test operator" "$AUTH"
[ ! -s "$KH_ERR" ] || kh_fail "authority init printed on stderr"
kh_expect_mode "$AUTH/root.key" 600
kh_expect_mode "$AUTH/master.key" 600
[ -s "$AUTH/root.crt" ] || kh_fail "authority init wrote no root.crt"
openssl x509 -noout -in "$AUTH/root.crt" 2>/dev/null || kh_fail "root.crt is not a PEM certificate openssl reads"
openssl verify -CAfile "$AUTH/root.crt" "$AUTH/root.crt" >/dev/null 2>&1 ||
	kh_fail "openssl verify does not accept the self-signed root.crt"
openssl x509 -noout -subject -in "$AUTH/root.crt" | grep -q "Test operator" ||
	kh_fail "root.crt subject does not carry the operator name"

# Key files are private whatever the caller's umask.
(umask 000 && "$KEYHOLE" authority init "$T/auth0" >/dev/null) || kh_fail "authority init under umask 000"
kh_expect_mode "$T/auth0/root.key" 600
kh_expect_mode "$T/auth0/master.key" 600
(umask 000 && "$KEYHOLE" card issue --authority "$T/auth0" --role card --out "$T/u0.card" >/dev/null) ||
	kh_fail "card issue under umask 000"
kh_expect_mode "$T/u0.card" 600
kh_expect_mode "$T/u0.key" 600
kh_expect_mode "$T/u0.card.ctr" 600
rm -rf "$T/auth0" "$T"/u0.*

# Again on the same directory: refused, nothing touched.
kh_snapshot "$AUTH" >"$KH_META/auth.snap"
kh_expect_fail authority init "$AUTH"
kh_same_snapshot "$KH_META/auth.snap" "$AUTH" "authority init on an existing authority changed its files"
kh_expect_fail authority init --name "Another" "$AUTH"
kh_same_snapshot "$KH_META/auth.snap" "$AUTH" "authority init --name on an existing authority changed its files"

kh_expect_ok authority show "$AUTH"
kh_out_has "Test operator"
kh_out_has "[0-9a-f]{64}"

# --- card issue --------------------------------------------------------------------------------
kh_expect_ok card issue --authority "$AUTH" --role cam --out "$T/cam.card"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card1.card"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card2.card"
kh_expect_ok card issue --authority "$AUTH" --role decoder --out "$T/dec.card"
for f in cam card1 card2 dec; do
	kh_expect_mode "$T/$f.card" 600
	kh_expect_mode "$T/$f.key" 600
	kh_expect_mode "$T/$f.card.ctr" 600
done
# --key puts the root key where it is asked to.
mkdir "$T/keys" || kh_fail "mkdir"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card3.card" --key "$T/keys/card3.root"
kh_expect_mode "$T/keys/card3.root" 600
[ ! -e "$T/card3.key" ] || kh_fail "card issue --key also wrote the default key file"
kh_expect_ok card info --card "$T/card3.card" --key "$T/keys/card3.root"
kh_out_has "^role: card$"

UA_CAM=$(kh_ua "$T/cam.card") || exit 1
UA1=$(kh_ua "$T/card1.card") || exit 1
UA2=$(kh_ua "$T/card2.card") || exit 1
[ "$UA1" != "$UA2" ] && [ "$UA1" != "$UA_CAM" ] && [ "$UA2" != "$UA_CAM" ] ||
	kh_fail "two modules got the same unique address ($UA_CAM $UA1 $UA2)"

kh_expect_ok card info --card "$T/card1.card"
kh_out_has "^role: card$"
kh_out_has "^unique address: $UA1$"
kh_expect_ok card info --card "$T/cam.card"
kh_out_has "^role: cam$"
kh_out_has "^unique address: $UA_CAM$"

# Certificates: every one issued verifies against the root; the subject names role and UA.
n=0
for crt in "$AUTH"/issued/*.crt; do
	[ -f "$crt" ] || kh_fail "no certificates in $AUTH/issued"
	openssl verify -CAfile "$AUTH/root.crt" "$crt" >"$KH_META/verify.out" 2>&1 ||
		kh_fail "openssl verify -CAfile root.crt $crt: $(cat "$KH_META/verify.out")"
	n=$((n + 1))
done
[ "$n" -ge 8 ] || kh_fail "expected at least 8 issued certificates (2 per module), found $n"
for use in sign pair; do
	for pair in "cam $UA_CAM" "card $UA1" "card $UA2"; do
		role=${pair% *}
		ua=${pair#* }
		crt=$AUTH/issued/$role-$ua-$use.crt
		[ -f "$crt" ] || kh_fail "missing certificate $crt"
		subj=$(openssl x509 -noout -subject -in "$crt") || kh_fail "openssl x509 -subject $crt"
		echo "$subj" | grep -q "OU = $role," || kh_fail "$crt subject '$subj' does not name OU = $role"
		echo "$subj" | grep -q "$ua" || kh_fail "$crt subject '$subj' does not name UA $ua"
		echo "$subj" | grep -q "O = Test operator" || kh_fail "$crt subject '$subj' lacks the operator"
	done
done
openssl x509 -noout -subject -in "$AUTH/issued/card-$UA1-sign.crt" | grep -q "OU = cam" &&
	kh_fail "a card certificate names OU = cam"
openssl x509 -noout -subject -in "$AUTH/issued/cam-$UA_CAM-sign.crt" | grep -q "OU = card" &&
	kh_fail "a CAM certificate names OU = card"

# A unique address is written in hexadecimal, as 'card info' shows it: 8 digits, or 0x and up to 8.
# A short form without 0x (12, 010, 0C) is refused: it would read someone's decimal as hexadecimal.
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/ua12.card" --ua 0xC
UA12=$(kh_ua "$T/ua12.card") || exit 1
[ "$UA12" = "0000000C" ] || kh_fail "--ua 0xC gave unique address $UA12, expected 0000000C"
openssl x509 -noout -subject -in "$AUTH/issued/card-0000000C-sign.crt" | grep -q 0000000C ||
	kh_fail "certificate for --ua 0xC does not name 0000000C"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/ua8.card" --ua 0000000d
UA8=$(kh_ua "$T/ua8.card") || exit 1
[ "$UA8" = "0000000D" ] || kh_fail "--ua 0000000d gave unique address $UA8, expected 0000000D"
for ua in 12 010 0C 00000000C 0x 0x123456789; do
	kh_expect_usage card issue --authority "$AUTH" --role card --out "$T/uabad.card" --ua "$ua"
	kh_err_has "8 hexadecimal digits"
done
[ ! -e "$T/uabad.card" ] || kh_fail "a refused --ua left a card file"
# The same UA twice is refused, without touching the existing card.
kh_snapshot "$T/ua12.card" >"$KH_META/ua12.snap"
kh_expect_fail card issue --authority "$AUTH" --role card --out "$T/ua12b.card" --ua 0000000C
[ ! -e "$T/ua12b.card" ] && [ ! -e "$T/ua12b.key" ] || kh_fail "a refused duplicate UA left a card or key file"
kh_same_snapshot "$KH_META/ua12.snap" "$T/ua12.card" "a refused duplicate UA changed the first card"
# A unique address names one module whatever its role (the diversified keys derive from the UA
# alone): a CAM with the UA of an existing card is refused, and no certificate is written for it.
kh_issue_refused_ua()
{
	kh_snapshot "$AUTH" >"$KH_META/auth.snap"
	kh_expect_fail card issue --authority "$AUTH" --role "$1" --out "$T/dupua.card" --ua "$2"
	[ ! -e "$T/dupua.card" ] && [ ! -e "$T/dupua.key" ] || kh_fail "a refused UA $2 ($1) left module files"
	kh_same_snapshot "$KH_META/auth.snap" "$AUTH" "a refused UA $2 ($1) still wrote certificates"
}
kh_issue_refused_ua cam "$UA1"
kh_issue_refused_ua card "$UA_CAM"
# An explicit --ua equal to the authority's next one must not make the following automatic
# issue fail: either the explicit one is refused or the allocator steps over it.
NEXT=$(printf '0x%X' "$(tr -d ' \n' <"$AUTH/next-ua")")
kh_run card issue --authority "$AUTH" --role card --out "$T/explicit.card" --ua "$NEXT"
if [ "$KH_RC" -ne 0 ]; then
	[ "$KH_RC" -eq 1 ] || kh_fail "--ua (the next free one): expected exit 0 or 1, got $KH_RC"
	kh_check_one_line
fi
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/auto.card"

# --- card issue never overwrites, and a refused issue changes nothing --------------------------
# The module files are compared first; then the authority, which must not have handed out a
# unique address or written certificates for a card that was never created.
# kh_issue_refused ARGS...: card issue ARGS exits 1 with one line and changes no file at all.
kh_issue_refused()
{
	kh_snapshot "$T" "$AUTH" >"$KH_META/cards.snap"
	kh_snapshot "$AUTH" >"$KH_META/auth.snap"
	kh_expect_fail card issue --authority "$AUTH" "$@"
	kh_same_snapshot "$KH_META/cards.snap" "$T" "refused 'card issue $*' changed existing module files" "$AUTH"
	kh_same_snapshot "$KH_META/auth.snap" "$AUTH" \
		"refused 'card issue $*' still changed the authority (took a UA / wrote certificates)"
}
kh_issue_refused --role card --out "$T/card1.card"
kh_issue_refused --role cam --out "$T/card1.card"
# An existing key file (default name or --key) is never overwritten either.
printf 'not a key\n' >"$T/lonely.key"
kh_issue_refused --role card --out "$T/lonely.card"
[ ! -e "$T/lonely.card" ] || kh_fail "card issue wrote a card beside an existing key file"
kh_issue_refused --role card --out "$T/other.card" --key "$T/card2.key"
[ ! -e "$T/other.card" ] || kh_fail "card issue --key EXISTING still wrote the card file"
# Nor an existing counter file: it holds some card's rollback protection ("Existing files are
# never overwritten", card issue --help).
printf '7\n' >"$T/ctronly.card.ctr"
kh_issue_refused --role card --out "$T/ctronly.card"
[ ! -e "$T/ctronly.card" ] || kh_fail "card issue wrote a card beside an existing counter file"
rm -f "$T/ctronly.card.ctr" "$T/lonely.key"
# A directory that does not exist.
kh_snapshot "$AUTH" >"$KH_META/auth.snap"
kh_expect_fail card issue --authority "$AUTH" --role card --out "$T/no/such/dir/x.card"
kh_same_snapshot "$KH_META/auth.snap" "$AUTH" "card issue into a missing directory changed the authority"
kh_expect_fail card issue --authority "$T/no-authority" --role card --out "$T/x.card"
[ ! -e "$T/x.card" ] || kh_fail "card issue from a missing authority wrote a card"
kh_no_tmp_files "$T"

# --- key files that group or others can read ---------------------------------------------------
for k in root.key master.key; do
	kh_snapshot "$AUTH" >"$KH_META/auth.snap"
	chmod 644 "$AUTH/$k"
	kh_expect_fail authority show "$AUTH"
	kh_err_has "group|others"
	kh_expect_fail card issue --authority "$AUTH" --role card --out "$T/perm.card"
	kh_err_has "group|others"
	[ ! -e "$T/perm.card" ] && [ ! -e "$T/perm.key" ] || kh_fail "card issue with a readable $k wrote a card"
	chmod 640 "$AUTH/$k"
	kh_expect_fail authority show "$AUTH"
	kh_err_has "group|others"
	chmod 600 "$AUTH/$k"
	kh_same_snapshot "$KH_META/auth.snap" "$AUTH" "a refused authority with readable $k changed its files"
done
kh_expect_ok authority show "$AUTH"
kh_card_copy "$T/card1" "$T/loose"
chmod 644 "$T/loose.key"
kh_snapshot "$T" >"$KH_META/all.snap"
kh_expect_fail card info --card "$T/loose.card"
kh_err_has "group|others"
kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/loose.card"
kh_err_has "group|others"
kh_same_snapshot "$KH_META/all.snap" "$T" "a refused card with a readable key changed files"

# --- bad card files: exit 1, one line, file byte-identical, no temporary file left -------------
# kh_bad_card NAME WHAT: card info and pair (as card, and as CAM) refuse NAME.card and change nothing.
kh_bad_card()
{
	kh_snapshot "$T" >"$KH_META/bad.snap"
	kh_expect_fail card info --card "$T/$1.card"
	kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/$1.card"
	kh_expect_fail pair --authority "$AUTH" --cam "$T/$1.card" --card "$T/card2.card" --decoder "$T/dec.card"
	kh_expect_fail card serve --socket "$T/bad.sock" --card "$T/$1.card"
	[ ! -e "$T/bad.sock" ] || kh_fail "card serve of a bad card ($2) left a socket"
	kh_same_snapshot "$KH_META/bad.snap" "$T" "$2: a refused card file changed files"
	kh_no_tmp_files "$T"
}

size=$(kh_size "$T/card1.card")
for off in 0 5 16 100 $((size / 2)) $((size - 1)); do
	kh_card_copy "$T/card1" "$T/flip"
	kh_flip_byte "$T/flip.card" "$off"
	kh_bad_card flip "card file with byte $off changed"
	rm -f "$T"/flip.*
done

kh_card_copy "$T/card1" "$T/trunc"
head -c $((size / 2)) "$T/card1.card" >"$T/trunc.card"
kh_bad_card trunc "card file cut in half"
head -c 3 "$T/card1.card" >"$T/trunc.card"
kh_bad_card trunc "card file cut to 3 bytes"
: >"$T/trunc.card"
kh_bad_card trunc "empty card file"
cat "$T/card1.card" "$T/card1.card" >"$T/trunc.card"
kh_bad_card trunc "card file with trailing bytes"
rm -f "$T"/trunc.*

# A card file with the key of another card.
kh_card_copy "$T/card1" "$T/swap"
cp -p "$T/card2.key" "$T/swap.key"
kh_bad_card swap "card file with another card's key"
kh_snapshot "$T" >"$KH_META/all.snap"
kh_expect_fail card info --card "$T/card1.card" --key "$T/card2.key"
kh_same_snapshot "$KH_META/all.snap" "$T" "card info --key OTHER changed files"
# A key file that is not a key.
printf 'zz\n' >"$T/swap.key"
kh_bad_card swap "card file with a malformed key file"
rm -f "$T"/swap.*

# A card file older than the counter beside it says it must be.
kh_card_copy "$T/card1" "$T/old"
ctr=$(tr -d ' \n' <"$T/old.card.ctr")
case $ctr in
'' | *[!0-9]*) kh_fail "card1.card.ctr does not hold a decimal counter: '$ctr'" ;;
esac
printf '%s\n' $((ctr + 5)) >"$T/old.card.ctr"
kh_bad_card old "card file older than its counter"
kh_expect_fail card info --card "$T/old.card"
kh_err_has "older"
printf 'garbage\n' >"$T/old.card.ctr"
kh_bad_card old "card file with a garbled counter file"
rm -f "$T"/old.*

# Missing files.
kh_expect_fail card info --card "$T/missing.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/missing.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/missing.card" --card "$T/card1.card"
kh_expect_fail pair --authority "$T/missing-authority" --cam "$T/cam.card" --card "$T/card1.card"
kh_card_copy "$T/card1" "$T/nokey"
rm -f "$T/nokey.key"
kh_bad_card nokey "card file without its key file"
rm -f "$T"/nokey.*
# The message names the file that is missing, not the card beside it.
kh_expect_fail card info --card "$T/card1.card" --key "$T/missing.key"
kh_err_has "missing\.key"
[ ! -e "$T/missing.card" ] && [ ! -e "$T/missing.key" ] || kh_fail "a failed command created a missing file"

# --- pair --------------------------------------------------------------------------------------
kh_snapshot "$T" >"$KH_META/all.snap"
kh_expect_ok pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/card1.card" --decoder "$T/dec.card" --count 3
[ ! -s "$KH_ERR" ] || kh_fail "a successful pair printed on stderr"
kh_out_has "$UA_CAM"
kh_out_has "$UA1"
[ "$(grep -c 'sealed command' "$KH_OUT")" -eq 3 ] || kh_fail "pair --count 3 did not report 3 sealed commands"
kh_expect_ok pair --authority "$AUTH/root.crt" --cam "$T/cam.card" --card "$T/card2.card" --count 1
kh_out_has "$UA2"
kh_expect_ok pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/card1.card" --count 0
kh_no_tmp_files "$T"

# Wrong roles: a card in the CAM's place, a CAM in the card's.
kh_expect_fail pair --authority "$AUTH" --cam "$T/card1.card" --card "$T/card2.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/cam.card"
# A root that is not a certificate.
kh_expect_fail pair --authority "$AUTH/next-ua" --cam "$T/cam.card" --card "$T/card1.card"

# A foreign operator's modules and root.
FOREIGN=$T/foreign
kh_expect_ok authority init --name "Foreign operator" "$FOREIGN"
kh_expect_ok card issue --authority "$FOREIGN" --role card --out "$T/fcard.card"
kh_expect_ok card issue --authority "$FOREIGN" --role cam --out "$T/fcam.card"
kh_expect_ok card issue --authority "$FOREIGN" --role decoder --out "$T/fdec.card"
kh_snapshot "$T" >"$KH_META/all.snap"
kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/fcard.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/fcard.card" --decoder "$T/dec.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/fcam.card" --card "$T/card1.card" --decoder "$T/dec.card"
kh_expect_fail pair --authority "$AUTH" --cam "$T/fcam.card" --card "$T/card1.card"
kh_expect_fail pair --cam "$T/cam.card" --card "$T/card1.card" --decoder "$T/fdec.card"
kh_same_snapshot "$KH_META/all.snap" "$T" "a refused pairing changed files"
# Its certificates do not verify against our root.
openssl verify -CAfile "$AUTH/root.crt" "$FOREIGN"/issued/*.crt >/dev/null 2>&1 &&
	kh_fail "openssl verify accepted a foreign certificate against our root"

# --- demo --------------------------------------------------------------------------------------
kh_expect_ok demo --keep "$T/demo"
[ -f "$T/demo/authority/root.crt" ] || kh_fail "demo --keep DIR kept no authority in DIR"
[ -f "$T/demo/decoder.card" ] || kh_fail "demo --keep DIR kept no decoder module in DIR"
kh_out_has '^ *[0-9]+\. done: '
# the decoder program without a certificate gets no control words; the decoder module proves itself
kh_out_has 'holds no certificate: an ECM it sends the CAM .* is refused'
kh_out_has 'decoder module [0-9A-F]{8} paired with CAM [0-9A-F]{8} and proved its decoder certificate'
if command -v ffmpeg >/dev/null 2>&1; then
	kh_out_has 'key ladder: card [0-9A-F]{8} .* bit-exact'
fi
# the escrow act: bought once, opened, refused elsewhere, the ledger audited
kh_out_has 'buyer buy: .* said delivered: shop is paid 1250$'
kh_out_has 'the licence opens on no other device; escrow audit: '
cmp -s "$T/demo/bea/song.txt" "$T/demo/shop/song.txt" || kh_fail "the demo's buyer did not open the seller's song"
[ ! -e "$T/demo/secmod.sock" ] || kh_fail "the demo left the signing process's socket (the process still running?)"
# the key center act: ana's letter relayed to ben and opened by his card, a replay refused, two keys
kh_out_has 'replay: .* the center refuses it \(replay\)'
kh_out_has "two keys: ana's card sealed the postscript under [0-9a-f]{16}\\.\\.\\., ben's card opened it under [0-9a-f]{16}"
cmp -s "$T/demo/ana/letter.txt" "$T/demo/ben/letter.txt" || kh_fail "the demo's letter did not reach ben intact"
if grep -rqF "only his key card can open it" "$T/demo/keycenter.db"* "$T/demo/ben/inbox"; then
	kh_fail "the demo's letter is in clear in the key center's database or ben's inbox"
fi
kh_snapshot "$T/demo" >"$KH_META/demo.snap"
kh_expect_fail demo --keep "$T/demo"
kh_same_snapshot "$KH_META/demo.snap" "$T/demo" "demo --keep on an existing directory changed it"

kh_no_tmp_files "$T"
kh_note "ok"
