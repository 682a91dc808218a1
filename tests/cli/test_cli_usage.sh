# The `keyhole` command line itself: --help at every level, and every kind of bad input that
# needs no file to detect (unknown option or command, missing option, extra argument, bad value)
# ends with exit status 2, nothing on stdout and exactly one line on stderr starting with
# "keyhole". Nothing is created by a refused command.
#
# Run by CTest as `sh test_cli_usage.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_cli_usage

cd "$KH_WORK" || kh_fail "cd $KH_WORK"
# Names that must never come into being through a usage error.
D=$KH_WORK/dir
A=$KH_WORK/nowhere-authority
C=$KH_WORK/nowhere.card
S=$KH_WORK/nowhere.sock

# --- --version ---------------------------------------------------------------------------------
kh_expect_ok --version
grep -Eq '^keyhole [0-9]' "$KH_OUT" || kh_fail "--version does not print 'keyhole <version>'"
[ "$(wc -l <"$KH_OUT")" -eq 1 ] || kh_fail "--version prints more than one line"

# --- --help at every level ---------------------------------------------------------------------
for cmd in "" "authority" "authority init" "authority show" "card" "card issue" "card info" \
	"card serve" "pair" "headend" "headend keys" "headend keys init" "headend keys rotate" \
	"headend keys show" "headend emm" "headend scramble" "decoder" "decoder play" "decoder buy" \
	"decoder status" "decoder init" "decoder m1" "decoder connect" "demo" "center" "center subscriber" \
	"center card" "center product" "center channel" "center event" "center credit-policy" \
	"center service-keys" "center rights" "ts" "ts inspect"; do
	# shellcheck disable=SC2086 # word splitting of $cmd is the point
	kh_expect_help $cmd --help
	# shellcheck disable=SC2086
	kh_expect_help $cmd -h
done
# "keyhole help A B" is the help of "A B", however deep, the same bytes as "A B --help"
for cmd in "demo" "card issue" "headend scramble" "headend keys rotate" "decoder play"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
	cp "$KH_OUT" "$KH_META/help.want"
	# shellcheck disable=SC2086
	kh_expect_help help $cmd
	cmp -s "$KH_META/help.want" "$KH_OUT" || kh_fail "keyhole help $cmd differs from keyhole $cmd --help"
done
kh_expect_usage help headend nope
# The listing of a command group names each of its subcommands.
kh_expect_help --help
for sub in authority card pair headend decoder demo; do
	grep -Eq "^ +$sub " "$KH_OUT" || kh_fail "keyhole --help does not list '$sub'"
done
kh_expect_help authority --help
for sub in init show; do
	grep -Eq "^ +$sub " "$KH_OUT" || kh_fail "keyhole authority --help does not list '$sub'"
done
kh_expect_help card --help
for sub in issue info serve; do
	grep -Eq "^ +$sub " "$KH_OUT" || kh_fail "keyhole card --help does not list '$sub'"
done
# `help CMD` is the same as `CMD --help`.
kh_expect_help help
kh_expect_help help card
kh_expect_help card help issue
# Each subcommand's help names its options.
kh_expect_help card issue --help
for o in --authority --role --out --ua --key; do
	grep -q -- "$o" "$KH_OUT" || kh_fail "card issue --help does not mention $o"
done
kh_expect_help card issue --help
grep -q -- 'card|cam|decoder' "$KH_OUT" || kh_fail "card issue --help does not name the three roles"
kh_expect_help pair --help
for o in --authority --cam --card --decoder --count; do
	grep -q -- "$o" "$KH_OUT" || kh_fail "pair --help does not mention $o"
done
kh_expect_help card serve --help
for o in --socket --card --key; do
	grep -q -- "$o" "$KH_OUT" || kh_fail "card serve --help does not mention $o"
done
# play and buy take the decoder module in the place of the authority's root
for cmd in "decoder play" "decoder buy"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
	for o in --decoder --cam --card; do
		grep -q -- "$o" "$KH_OUT" || kh_fail "$cmd --help does not mention $o"
	done
	! grep -q -- --root "$KH_OUT" || kh_fail "$cmd --help still mentions --root"
done
kh_expect_help decoder play --help
grep -q -- --ladder "$KH_OUT" || kh_fail "decoder play --help does not mention --ladder"
# --help wins over everything else on the line, and runs nothing.
kh_expect_help card issue --authority "$A" --role card --out "$C" --help
kh_expect_help authority init --name X --help "$D"

# --- the top level and command groups ----------------------------------------------------------
kh_expect_usage
kh_expect_usage bogus
kh_expect_usage --bogus
kh_expect_usage help bogus
kh_expect_usage --version extra
kh_expect_usage authority
kh_expect_usage authority bogus
kh_expect_usage authority --bogus
kh_expect_usage card
kh_expect_usage card bogus
kh_expect_usage card --bogus

# --- authority init ----------------------------------------------------------------------------
kh_expect_usage authority init
kh_expect_usage authority init --bogus "$D"
kh_expect_usage authority init "$D" extra
kh_expect_usage authority init --name
kh_expect_usage authority init --name "" "$D"
kh_expect_usage authority init --name "a/b" "$D"
kh_expect_usage authority init --name "a=b" "$D"
kh_expect_usage authority init --name \
	"0123456789012345678901234567890123456789012345678901234567890123456789" "$D"
# 60 characters: one over the limit the certificates allow ("<name> root" in a 64-character CN)
kh_expect_usage authority init --name \
	"012345678901234567890123456789012345678901234567890123456789" "$D"

# --- authority show ----------------------------------------------------------------------------
kh_expect_usage authority show
kh_expect_usage authority show --bogus "$D"
kh_expect_usage authority show "$D" extra

# --- card issue --------------------------------------------------------------------------------
kh_expect_usage card issue
kh_expect_usage card issue --bogus
kh_expect_usage card issue --authority "$A" --role card --out "$C" --bogus
kh_expect_usage card issue --authority "$A" --role card --out "$C" extra
kh_expect_usage card issue --role card --out "$C"
kh_expect_usage card issue --authority "$A" --out "$C"
kh_expect_usage card issue --authority "$A" --role card
kh_expect_usage card issue --authority "$A" --role card --out
for role in foo CAM Card Decoder "" root distributor ecm-signer "card " "decoder "; do
	kh_expect_usage card issue --authority "$A" --role "$role" --out "$C"
done
for ua in 0 -1 abc 4294967296 18446744073709551617 "" 1x " " 00 12 0x 0x100000000 00000000 " 0000000C"; do
	kh_expect_usage card issue --authority "$A" --role card --out "$C" --ua "$ua"
done
kh_expect_usage card issue --authority "$A" --role card --out "$C" --ua

# --- card info ---------------------------------------------------------------------------------
kh_expect_usage card info
kh_expect_usage card info --bogus
kh_expect_usage card info --card "$C" extra
kh_expect_usage card info --card "$C" --bogus
kh_expect_usage card info --card
kh_expect_usage card info --key "$C"

# --- card serve --------------------------------------------------------------------------------
kh_expect_usage card serve
kh_expect_usage card serve --bogus
kh_expect_usage card serve --socket "$S"
kh_expect_usage card serve --card "$C"
kh_expect_usage card serve --socket "$S" --card "$C" extra
kh_expect_usage card serve --socket "$S" --card "$C" --bogus
kh_expect_usage card serve --socket "$S" --card

# --- pair --------------------------------------------------------------------------------------
kh_expect_usage pair
kh_expect_usage pair --bogus
kh_expect_usage pair --authority "$A" --cam "$C"
kh_expect_usage pair --authority "$A" --card "$C"
# --decoder takes the decoder module now; the old flag form must not read the next option as a file
kh_expect_usage pair --cam "$C" --card "$C" --decoder --count 3
kh_expect_usage pair --cam "$C" --card "$C" --decoder
kh_expect_usage pair --authority "$A" --cam "$C" --card "$C" extra
kh_expect_usage pair --authority "$A" --cam "$C" --card "$C" --bogus
kh_expect_usage pair --authority "$A" --cam "$C" --card "$C" --count
for n in -1 abc 1000001 "" 3x 99999999999999999999; do
	kh_expect_usage pair --authority "$A" --cam "$C" --card "$C" --count "$n"
done

# --- decoder play and buy ----------------------------------------------------------------------
kh_expect_usage decoder play --cam "$C" --card "$C"
kh_expect_usage decoder play --root "$A" --cam "$C" --card "$C"
kh_expect_usage decoder play --root "$A" --decoder "$C" --cam "$C" --card "$C"
kh_expect_usage decoder play --decoder "$C" --cam "$C"
kh_expect_usage decoder play --decoder "$C" --card "$C" --ladder
kh_expect_usage decoder buy --cam "$C" --card "$C" --in "$C"
kh_expect_usage decoder buy --decoder "$C" --cam "$C" --card "$C"
kh_expect_usage decoder buy --decoder "$C" --cam "$C" --card "$C" --in "$C" --ladder

# --- demo --------------------------------------------------------------------------------------
kh_expect_usage demo extra
kh_expect_usage demo --bogus
kh_expect_usage demo --keep


# --- center --------------------------------------------------------------------------------------
# The environment must not give a center here: every line below is refused before any request.
unset KEYHOLE_CENTER KEYHOLE_CACERT KEYHOLE_TOKEN_FILE
U=http://127.0.0.1:1
CENTER_CMDS="center subscriber add|center subscriber list|center subscriber show|center subscriber rename|center subscriber close|center subscriber subscriptions|center card register|center card list|center card show|center card assign|center card replace|center card forfeit|center card reload|center card delete|center card emm|center product add|center product list|center product show|center product rename|center product delete|center channel add|center channel list|center channel show|center channel rename|center channel delete|center event add|center event list|center event show|center event rename|center event delete|center credit-policy show|center credit-policy set|center service-keys list|center service-keys rotate|center rights renew|center subscribe|center unsubscribe|center invoices|center uploads|center jobs|center health"
IFS_OLD=$IFS
IFS='|'
for cmd in $CENTER_CMDS; do
	IFS=$IFS_OLD
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
	# shellcheck disable=SC2086
	kh_expect_help $cmd -h
	# shellcheck disable=SC2086
	kh_expect_usage $cmd --bogus --center "$U"
	IFS='|'
done
IFS=$IFS_OLD
kh_expect_help center subscriber add --help
cp "$KH_OUT" "$KH_META/help.want"
kh_expect_help help center subscriber add
cmp -s "$KH_META/help.want" "$KH_OUT" || kh_fail "keyhole help center subscriber add differs from --help"
kh_expect_help --help
grep -Eq '^ +center ' "$KH_OUT" || kh_fail "keyhole --help does not list 'center'"
kh_expect_help center --help
for sub in subscriber card product channel event credit-policy service-keys rights subscribe unsubscribe \
	invoices uploads jobs health; do
	grep -Eq "^ +$sub " "$KH_OUT" || kh_fail "keyhole center --help does not list '$sub'"
done
for v in KEYHOLE_CENTER KEYHOLE_CACERT KEYHOLE_TOKEN_FILE; do
	grep -q "$v" "$KH_OUT" || kh_fail "keyhole center --help does not name $v"
done
kh_expect_usage center
kh_expect_usage center bogus
kh_expect_usage center --bogus
kh_expect_usage center --center
kh_expect_usage center --json
kh_expect_usage center --center "$U" --json
kh_expect_usage center subscriber
kh_expect_usage center subscriber bogus
kh_expect_usage center --center "$U" subscriber
# no center: neither --center nor KEYHOLE_CENTER
kh_expect_usage center subscriber list
kh_expect_usage center health
# the center's URL: https, or http to loopback only unless --insecure-http; a base URL
for url in "" ftp://127.0.0.1:1 http://192.0.2.1:8480 http://example.com "http://127.0.0.1:1/?a=b" \
	"http://127.0.0.1:1/#x" "http://user@127.0.0.1:1" "https://" "127.0.0.1:8480"; do
	kh_expect_usage center subscriber show 1 --center "$url"
done
kh_expect_usage center --center http://192.0.2.1:8480 subscriber show 1
# arguments: missing, extra, malformed
kh_expect_usage center subscriber show --center "$U"
kh_expect_usage center subscriber show 1 2 --center "$U"
for id in 0 -1 abc 1x "" 9223372036854775808 " 1"; do
	kh_expect_usage center subscriber show "$id" --center "$U"
done
for ua in 0 12 0C 00000000 0x 0x100000000 xyz ""; do
	kh_expect_usage center card show "$ua" --center "$U"
done
kh_expect_usage center product show 4294967296 --center "$U"
kh_expect_usage center product show 0 --center "$U"
kh_expect_usage center jobs a b --center "$U"
# required options and their values
kh_expect_usage center subscriber add --center "$U"
kh_expect_usage center subscriber add --name "" --center "$U"
kh_expect_usage center subscriber add --name "$(printf 'a\tb')" --center "$U"
kh_expect_usage center subscriber add --name A --name B --center "$U"
kh_expect_usage center subscriber rename 1 --center "$U"
kh_expect_usage center card register --center "$U"
kh_expect_usage center card assign 0000002A --center "$U"
kh_expect_usage center card assign 0000002A --subscriber 0 --center "$U"
kh_expect_usage center card replace 0000002A --center "$U"
kh_expect_usage center card replace 0000002A --by 12 --center "$U"
kh_expect_usage center product add --center "$U"
kh_expect_usage center product add --name P --product 4294967296 --center "$U"
kh_expect_usage center channel add --name C --center "$U"
kh_expect_usage center event add --name E --price 1 --channel 1 --center "$U"
kh_expect_usage center event add --name E --price -1 --channel 1 --end +60 --center "$U"
kh_expect_usage center event add --name E --price 1 --channel 1 --start 100 --end 50 --center "$U"
kh_expect_usage center event add --name E --price 1 --channel 1 --end tomorrow --center "$U"
kh_expect_usage center credit-policy set --initial-credit 1 --center "$U"
kh_expect_usage center credit-policy set --initial-credit 1 --reload-amount 4294967296 --center "$U"
kh_expect_usage center service-keys rotate --key-id 256 --center "$U"
kh_expect_usage center service-keys rotate --center "$U"
kh_expect_usage center subscribe --product 7 --end +60 --center "$U"
kh_expect_usage center subscribe --subscriber 1 --all-subscribers --product 7 --end +60 --center "$U"
kh_expect_usage center subscribe --subscriber 1 --product 7 --center "$U"
kh_expect_usage center subscribe --subscriber 1 --end +60 --center "$U"
kh_expect_usage center subscribe --subscriber 1 --product 7 --start now --end now --center "$U"
kh_expect_usage center unsubscribe --subscriber 1 --center "$U"
kh_expect_usage center invoices --since yesterday --center "$U"
kh_expect_usage center invoices --until now+x --center "$U"
kh_expect_usage center uploads --ua 12 --center "$U"
# list options: only on lists, and bounded
for l in 0 1001 abc -1 ""; do
	kh_expect_usage center subscriber list --limit "$l" --center "$U"
done
kh_expect_usage center subscriber list --limit 5 --limit 6 --center "$U"
kh_expect_usage center subscriber list --cursor "" --center "$U"
kh_expect_usage center subscriber show 1 --limit 5 --center "$U"
kh_expect_usage center credit-policy show --all --center "$U"
kh_expect_usage center card list --state bogus --center "$U"
kh_expect_usage center card list --role decoder --center "$U"
# the Idempotency-Key: only on writes, 1 to 128 visible characters
kh_expect_usage center subscriber show 1 --idempotency-key k --center "$U"
kh_expect_usage center card reload 0000002A --idempotency-key "a b" --center "$U"
kh_expect_usage center card reload 0000002A --idempotency-key "" --center "$U"
kh_expect_usage center card reload 0000002A --center "$U" --idempotency-key \
	"$(printf '%0129d' 0)"
# a file named by an empty string
kh_expect_usage center subscriber show 1 --center "$U" --cacert ""
kh_expect_usage center subscriber show 1 --center "$U" --token-file ""

# --- manual pages: one per command, naming every option its --help names -----------------------
MAN=$KH_SOURCE_DIR/docs/man
for pair in "keyhole.1:" "keyhole-authority.1:authority init" "keyhole-authority.1:authority show" \
	"keyhole-card.1:card issue" "keyhole-card.1:card info" "keyhole-card.1:card serve" \
	"keyhole-pair.1:pair" "keyhole-demo.1:demo" "keyhole-headend.1:headend keys init" \
	"keyhole-headend.1:headend keys rotate" "keyhole-headend.1:headend keys show" \
	"keyhole-headend.1:headend keys import" "keyhole-serve.1:serve" \
	"keyhole-headend.1:headend emm" "keyhole-headend.1:headend scramble" \
	"keyhole-decoder.1:decoder play" "keyhole-decoder.1:decoder buy" "keyhole-decoder.1:decoder status" \
	"keyhole-decoder.1:decoder init" "keyhole-decoder.1:decoder m1" "keyhole-decoder.1:decoder connect" \
	"keyhole-center.1:center subscriber add" "keyhole-center.1:center subscriber list" "keyhole-center.1:center subscriber show" \
	"keyhole-center.1:center subscriber rename" "keyhole-center.1:center subscriber close" "keyhole-center.1:center subscriber subscriptions" \
	"keyhole-center.1:center card register" "keyhole-center.1:center card list" "keyhole-center.1:center card show" \
	"keyhole-center.1:center card assign" "keyhole-center.1:center card replace" "keyhole-center.1:center card forfeit" \
	"keyhole-center.1:center card reload" "keyhole-center.1:center card delete" "keyhole-center.1:center card emm" \
	"keyhole-center.1:center product add" "keyhole-center.1:center product list" "keyhole-center.1:center product show" \
	"keyhole-center.1:center product rename" "keyhole-center.1:center product delete" "keyhole-center.1:center channel add" \
	"keyhole-center.1:center channel list" "keyhole-center.1:center channel show" "keyhole-center.1:center channel rename" \
	"keyhole-center.1:center channel delete" "keyhole-center.1:center event add" "keyhole-center.1:center event list" \
	"keyhole-center.1:center event show" "keyhole-center.1:center event rename" "keyhole-center.1:center event delete" \
	"keyhole-center.1:center credit-policy show" "keyhole-center.1:center credit-policy set" "keyhole-center.1:center service-keys list" \
	"keyhole-center.1:center service-keys rotate" "keyhole-center.1:center rights renew" "keyhole-center.1:center subscribe" \
	"keyhole-center.1:center unsubscribe" "keyhole-center.1:center invoices" "keyhole-center.1:center uploads" \
	"keyhole-center.1:center jobs" "keyhole-center.1:center health" \
	"keyhole-store.1:store check" "keyhole-store.1:store copy" "keyhole-processor.1:processor serve" \
	"keyhole-dist.1:dist init" "keyhole-dist.1:dist serve" "keyhole-dist.1:dist publish" \
	"keyhole-dist.1:dist account add" "keyhole-dist.1:dist account deposit" \
	"keyhole-dist.1:dist buy" "keyhole-dist.1:dist get" "keyhole-dist.1:dist run" "keyhole-dist.1:dist list" \
	"keyhole-escrow.1:escrow secmod" "keyhole-escrow.1:escrow init" "keyhole-escrow.1:escrow serve" \
	"keyhole-escrow.1:escrow account add" "keyhole-escrow.1:escrow account deposit" \
	"keyhole-escrow.1:escrow account token" "keyhole-escrow.1:escrow audit" "keyhole-escrow.1:escrow sweep" \
	"keyhole-keycenter.1:keycenter init" "keyhole-keycenter.1:keycenter enrol" "keyhole-keycenter.1:keycenter block" \
	"keyhole-keycenter.1:keycenter list" "keyhole-keycenter.1:keycenter log" "keyhole-keycenter.1:keycenter serve" \
	"keyhole-seller.1:seller list" "keyhole-seller.1:seller encrypt" "keyhole-seller.1:seller account" \
	"keyhole-buyer.1:buyer buy" "keyhole-buyer.1:buyer open" "keyhole-buyer.1:buyer status" \
	"keyhole-keycard.1:keycard status" "keyhole-keycard.1:keycard activate" "keyhole-keycard.1:keycard send" \
	"keyhole-keycard.1:keycard fetch" "keyhole-keycard.1:keycard open" "keyhole-ts.1:ts inspect" "keyhole-ecmg.1:ecmg serve" \
	"keyhole-emmg.1:emmg" "keyhole-headend.1:headend mux"; do
	page=$MAN/${pair%%:*}
	cmd=${pair#*:}
	[ -s "$page" ] || kh_fail "missing manual page $page"
	grep -q '^\.TH ' "$page" || kh_fail "$page has no .TH line"
	grep -q '^\.SH EXIT STATUS' "$page" || kh_fail "$page has no EXIT STATUS section"
	grep -q '^\.SH SEE ALSO' "$page" || kh_fail "$page has no SEE ALSO section"
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
	for opt in $(grep -Eo -- '--[a-z][a-z-]*' "$KH_OUT" | sort -u); do
		# In roff the dashes are written \-.
		ropt=$(printf '%s' "$opt" | sed 's/-/\\\\-/g')
		grep -q -- "$ropt" "$page" || kh_fail "$page does not document $opt of 'keyhole $cmd'"
	done
	if command -v groff >/dev/null 2>&1; then
		warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
		[ -z "$warn" ] || kh_fail "groff warns about $page: $warn"
	fi
done

# --- nothing was created by any of the above ---------------------------------------------------
left=$(ls -A "$KH_WORK")
[ -z "$left" ] || kh_fail "usage errors left files behind: $left"

kh_note "ok"
