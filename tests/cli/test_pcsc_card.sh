#!/bin/sh
# The card side of PC/SC (docs/internals/pcsc.md): `card serve --vpcd` puts a module in the
# "Virtual PCD" reader of a private pcscd, and the tools people use see it.
# - pcsc_scan lists the reader with the card in it and our ATR (T=1, "Keyhole", the role, TCK);
# - scriptor sends GET INFO (80 10 00 00 00) and the answer carries the unique address and state
#   counter that `card info` printed for the same file;
# - SIGUSR1 takes the card out (pcsc_scan: no card), SIGUSR2 puts it back (our ATR again);
# - a second card served in the same reader answers with its own unique address (a swap);
# - pcscd stopped and started again: the card side reconnects by itself;
# - bad --vpcd values are usage errors.
# The private pcscd and its namespaces: tests/cli/pcsc_lib.sh.
# Skipped (with a note) only where pcscd or the vpcd driver cannot run at all.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
. "$KH_SOURCE_DIR/tests/cli/pcsc_lib.sh"
kh_pcsc_private "$0"

kh_init pcsc_card
kh_pcsc_init
kh_need scriptor
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
READER=$READER0
start_pcscd()
{
	kh_pcsc_start
}
wait_card()
{
	kh_pcsc_wait_card "$READER" "$@"
}

# get_info: GET INFO through scriptor; the response bytes (upper-case hex, one space apart) on stdout.
get_info()
{
	echo '80 10 00 00 00' >"$KH_META/apdu"
	timeout 10 scriptor -r "$READER" "$KH_META/apdu" >"$KH_META/scriptor" 2>&1 </dev/null ||
		{ sed 's/^/  scriptor| /' "$KH_META/scriptor" >&2; kh_fail "scriptor failed"; }
	awk '/^< / { on = 1; sub(/^< /, "") } on { sub(/ :.*/, ""); printf "%s ", $0 }' "$KH_META/scriptor" |
		tr -s ' ' | sed 's/ $//'
}

# hex_be N WIDTH: N as WIDTH big-endian bytes in scriptor's form.
hex_be()
{
	printf "%0$(($2 * 2))X" "$1" | sed 's/../& /g; s/ $//'
}

# ---- the cards, and what `card info` says of them before they go in the reader
kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role card --out a.card
kh_expect_ok card issue --authority auth --role card --out b.card
UA_A=$(kh_ua a.card)
CTR_A=$(sed -n 's/^state counter: //p' "$KH_OUT")
UA_B=$(kh_ua b.card)
[ "$UA_A" != "$UA_B" ] || kh_fail "two cards with one unique address $UA_A"
# 3B 8C 01 | 80 | 57 "Keyhole" | 62 role(card = 01) version 01 | TCK
ATR="3B 8C 01 80 57 4B 65 79 68 6F 6C 65 62 01 01 61"

# ---- usage
kh_expect_usage card serve --card a.card
kh_expect_usage card serve --card a.card --vpcd 1 --socket s
kh_expect_usage card serve --card a.card --vpcd 0
kh_expect_usage card serve --card a.card --vpcd 70000
kh_expect_usage card serve --card a.card --vpcd host:
kh_expect_usage card serve --card a.card --vpcd :99
kh_expect_usage card serve --card a.card --vpcd 12x

# ---- the card in the reader
start_pcscd
kh_start_daemon SA card serve --vpcd "127.0.0.1:$PORT" --card a.card
wait_card inserted "$ATR"
# TCK: T0 through TCK XOR to zero (pcsc_scan's own analysis would fetch an ATR list from the net)
x=0
for b in ${ATR#3B }; do
	x=$((x ^ 0x$b))
done
[ "$x" -eq 0 ] || kh_fail "our ATR's TCK is wrong: T0..TCK XOR to $x"
INFO=$(get_info)
case "$INFO" in
*"02 00 04 $(hex_be $((0x$UA_A)) 4)"*) ;;
*) kh_fail "GET INFO through scriptor: no unique address $UA_A in '$INFO'" ;;
esac
case "$INFO" in
*"04 00 08 $(hex_be "$CTR_A" 8)"*" 90 00") ;;
*) kh_fail "GET INFO through scriptor: not state counter $CTR_A and 90 00 in '$INFO'" ;;
esac
grep -q 'Using T=1 protocol' "$KH_META/scriptor" || kh_fail "scriptor did not use T=1"

# ---- eject, insert
kill -USR1 "$SA"
wait_card removed
kill -USR2 "$SA"
wait_card inserted "$ATR"
case "$(get_info)" in
*"02 00 04 $(hex_be $((0x$UA_A)) 4)"*) ;;
*) kh_fail "after SIGUSR2: GET INFO does not answer with $UA_A" ;;
esac

# ---- pcscd goes away and comes back: the card side reconnects by itself
kh_stop "$PCSCD" TERM
start_pcscd
wait_card inserted "$ATR"
kill -0 "$SA" 2>/dev/null || kh_fail "card serve ended when pcscd went away"

# ---- another card in the same reader
kill -USR1 "$SA"
wait_card removed
kh_stop "$SA" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve --vpcd: exit $KH_RC on SIGTERM"
kh_start_daemon SB card serve --vpcd "$PORT" --card b.card
wait_card inserted "$ATR"
case "$(get_info)" in
*"02 00 04 $(hex_be $((0x$UA_B)) 4)"*) ;;
*) kh_fail "card b in the reader: GET INFO does not answer with $UA_B" ;;
esac
kh_stop "$SB" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve --vpcd: exit $KH_RC on SIGTERM"
kh_stop "$PCSCD" TERM
# the module file is free again: card info opens it
kh_expect_ok card info --card b.card
kh_out_has "unique address: $UA_B"
exit 0
