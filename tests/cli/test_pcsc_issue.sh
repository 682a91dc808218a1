#!/bin/sh
# Personalisation through a PC/SC reader (issue 17; docs/internals/pcsc.md): a blank module, as
# the plastic comes from the fab, is served as the card in a vpcd reader of a private pcscd, and
# `card issue --card pcsc:READER` personalises it there, in APDUs, as a card-issuing machine would.
# - the blank card is in the reader with an ATR naming no role (62 00 01), `card info` through the
#   reader says lifecycle blank;
# - after `card issue`, `card info` through the reader shows the role and the unique address the
#   authority printed, and the module file the reader served holds them too;
# - both certificates in DIR/issued/ pass `openssl verify -CAfile root.crt`;
# - a second issue to the same card is refused (one line, exit 1), also with --ua, and leaves the
#   authority exactly as it was (no UA taken, no certificate written);
# - a reader with no card and a reader that does not exist: exit 1, one line each, two different
#   messages, the authority unchanged.
# The private pcscd and its namespaces: tests/cli/pcsc_lib.sh.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
. "$KH_SOURCE_DIR/tests/cli/pcsc_lib.sh"
kh_pcsc_private "$0"

kh_init pcsc_issue
kh_pcsc_init
kh_need openssl
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ---- the authority and the blank module, before anything is in a reader
kh_expect_ok authority init auth
kh_expect_ok card blank --out blank.card
kh_expect_ok card info --card blank.card
kh_out_has '^lifecycle: blank$'
kh_out_has '^role: none$'
# 3B 8C 01 | 80 | 57 "Keyhole" | 62 role (none yet = 00) version 01 | TCK
ATR_BLANK="3B 8C 01 80 57 4B 65 79 68 6F 6C 65 62 00 01 60"

# ---- the blank card in the reader
kh_pcsc_start
kh_start_daemon SRV card serve --vpcd "127.0.0.1:$PORT" --card blank.card
kh_pcsc_wait_card "$READER0" inserted "$ATR_BLANK"
kh_expect_ok card info --card "pcsc:$READER0"
kh_out_has '^lifecycle: blank$'
kh_out_has '^unique address: 00000000$'

# ---- personalised through the reader
kh_snapshot auth >"$KH_META/auth.before"
kh_expect_ok card issue --authority auth --role card --card "pcsc:$READER0"
UA=$(sed -n 's/^issued card \([0-9A-F]\{8\}\): .*/\1/p' "$KH_OUT")
[ -n "$UA" ] || kh_fail "card issue printed no 'issued card UA'"
kh_snapshot auth >"$KH_META/auth.after"
cmp -s "$KH_META/auth.before" "$KH_META/auth.after" && kh_fail "a personalisation left the authority unchanged"
kh_expect_ok card info --card "pcsc:$READER0"
kh_out_has '^role: card$'
kh_out_has "^unique address: $UA\$"
kh_out_has '^lifecycle: personalised$'
for use in sign pair; do
	crt=auth/issued/card-$UA-$use.crt
	[ -s "$crt" ] || kh_fail "no $crt after card issue --card pcsc:"
	openssl verify -CAfile auth/root.crt "$crt" >"$KH_META/verify.out" 2>&1 ||
		kh_fail "openssl verify -CAfile root.crt $crt: $(cat "$KH_META/verify.out")"
done

# the ATR names the role from the next power-up on: out of the reader and in again
kill -USR1 "$SRV"
kh_pcsc_wait_card "$READER0" removed
kill -USR2 "$SRV"
kh_pcsc_wait_card "$READER0" inserted "3B 8C 01 80 57 4B 65 79 68 6F 6C 65 62 01 01 61"

# ---- a second issue to the same card: refused, the authority as it was
kh_snapshot auth >"$KH_META/auth.snap"
kh_expect_fail card issue --authority auth --role card --card "pcsc:$READER0"
kh_err_has 'already personalised'
kh_same_snapshot "$KH_META/auth.snap" auth "a refused card issue changed the authority"
kh_expect_fail card issue --authority auth --role cam --ua 0x777 --card "pcsc:$READER0"
kh_err_has 'already personalised'
kh_same_snapshot "$KH_META/auth.snap" auth "a refused card issue --ua changed the authority"

# ---- no card in the reader; no such reader
kh_expect_fail card issue --authority auth --role card --card "pcsc:$READER1"
kh_err_has 'no card in the reader'
cp "$KH_ERR" "$KH_META/nocard.err"
kh_same_snapshot "$KH_META/auth.snap" auth "card issue to an empty reader changed the authority"
kh_expect_fail card issue --authority auth --role card --card "pcsc:No such reader"
kh_err_has 'no such smart-card reader'
cmp -s "$KH_ERR" "$KH_META/nocard.err" && kh_fail "an empty reader and a missing one give the same message"
kh_same_snapshot "$KH_META/auth.snap" auth "card issue to a missing reader changed the authority"

# ---- the module file the reader served holds the personalisation
kh_stop "$SRV" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve --vpcd: exit $KH_RC on SIGTERM"
kh_expect_ok card info --card blank.card
kh_out_has '^role: card$'
kh_out_has "^unique address: $UA\$"
kh_out_has '^lifecycle: personalised$'
kh_stop "$PCSCD" TERM
exit 0
