#!/bin/sh
# A blank module as a file (`card blank`), personalised where it is (`card issue --card SPEC`),
# without a reader (the PC/SC case: test_pcsc_issue.sh):
# - `card blank` writes FILE, its key and FILE.ctr (0600), never over existing files; `card info`
#   on it says lifecycle blank, role none, unique address 00000000;
# - `card issue --card FILE` personalises the file in-process: `card info` shows the role and the
#   unique address printed, both certificates pass `openssl verify`; --key names a key file
#   elsewhere; --ua picks the address;
# - served with `card serve --socket`, a blank module is personalised through unix:PATH;
# - a module past blank (issued with --out, or personalised before) is refused with one line and
#   exit 1, and the authority is left exactly as it was (next-ua, issued/); so are a missing
#   file, a UA that is taken and a module file another process holds;
# - usage: --out and --card together, neither, an option twice, card blank without --out.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init card_blank
kh_need openssl
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# verify ROLE UA: both certificates of the module pass openssl verify against the root.
verify()
{
	for use in sign pair; do
		crt=auth/issued/$1-$2-$use.crt
		[ -s "$crt" ] || kh_fail "no $crt"
		openssl verify -CAfile auth/root.crt "$crt" >"$KH_META/verify.out" 2>&1 ||
			kh_fail "openssl verify -CAfile root.crt $crt: $(cat "$KH_META/verify.out")"
	done
}

# issued_ua: the UA of the last 'issued ROLE UA: ...' line.
issued_ua()
{
	sed -n 's/^issued [a-z]* \([0-9A-F]\{8\}\): .*/\1/p' "$KH_OUT"
}

kh_expect_ok authority init auth

# ---- card blank
kh_expect_ok card blank --out a.card
kh_out_has '^blank module: a\.card$'
kh_expect_mode a.card 600
kh_expect_mode a.key 600
kh_expect_mode a.card.ctr 600
kh_expect_ok card info --card a.card
kh_out_has '^role: none$'
kh_out_has '^unique address: 00000000$'
kh_out_has '^lifecycle: blank$'
kh_snapshot . >"$KH_META/all.snap"
kh_expect_fail card blank --out a.card
kh_err_has 'a\.card: already exists'
kh_same_snapshot "$KH_META/all.snap" . "card blank over an existing module changed files"
kh_expect_fail card blank --out nodir/x.card
[ ! -e nodir ] || kh_fail "card blank made a directory"
mkdir keys
kh_expect_ok card blank --out b.card --key keys/b.key
[ -e b.key ] && kh_fail "card blank --key wrote the default key file too"
kh_expect_mode keys/b.key 600
kh_expect_ok card blank --out c.card
kh_expect_ok card blank --out d.card

# ---- usage
kh_expect_usage card blank
kh_expect_usage card blank --out x.card --out y.card
kh_expect_usage card blank --out x.card extra
kh_expect_usage card issue --authority auth --role card
kh_expect_usage card issue --authority auth --role card --out x.card --card a.card
kh_expect_usage card issue --authority auth --role card --card a.card --card b.card
kh_expect_usage card issue --authority auth --card a.card
kh_expect_usage card issue --role card --card a.card
kh_expect_usage card issue --authority auth --role card --card pcsc:reader --key a.key
kh_expect_usage card issue --authority auth --role card --card unix:sock --key a.key
[ ! -e x.card ] || kh_fail "a usage error wrote x.card"
kh_expect_help card blank --help
kh_expect_help card issue --help
kh_out_has 'pcsc:READER'

# ---- personalised in its file
kh_snapshot auth >"$KH_META/auth.snap"
kh_expect_ok card issue --authority auth --role card --card a.card
UA_A=$(issued_ua)
[ -n "$UA_A" ] || kh_fail "card issue --card printed no 'issued card UA'"
kh_expect_ok card info --card a.card
kh_out_has '^role: card$'
kh_out_has "^unique address: $UA_A\$"
kh_out_has '^lifecycle: personalised$'
verify card "$UA_A"
kh_expect_ok card issue --authority auth --role cam --ua 0x40 --card b.card --key keys/b.key
kh_out_has '^issued cam 00000040: b\.card '
kh_expect_ok card info --card b.card --key keys/b.key
kh_out_has '^role: cam$'
verify cam 00000040

# ---- refused: past blank, missing, UA taken; the authority untouched every time
kh_expect_ok card issue --authority auth --role card --out issued.card
kh_snapshot auth >"$KH_META/auth.snap"
kh_snapshot . "./auth" >"$KH_META/cards.snap"
kh_expect_fail card issue --authority auth --role card --card a.card
kh_err_has 'already personalised'
kh_expect_fail card issue --authority auth --role card --ua 0x41 --card issued.card
kh_err_has 'already personalised'
kh_expect_fail card issue --authority auth --role card --card none.card
kh_expect_fail card issue --authority auth --role card --ua 0x40 --card c.card
kh_err_has 'already exists'
kh_same_snapshot "$KH_META/auth.snap" auth "a refused card issue --card changed the authority"
kh_same_snapshot "$KH_META/cards.snap" . "a refused card issue --card changed a module file" "./auth"
kh_expect_ok card info --card c.card
kh_out_has '^lifecycle: blank$'

# ---- a blank module behind a module daemon
kh_start_daemon SRV card serve --socket "$KH_WORK/c.sock" --card c.card
kh_wait_socket "$KH_WORK/c.sock" "$SRV"
# the file itself is held by the daemon: refused, nothing spent
kh_snapshot auth >"$KH_META/auth.snap"
kh_expect_fail card issue --authority auth --role card --card c.card
kh_err_has "held by process $SRV"
kh_same_snapshot "$KH_META/auth.snap" auth "card issue --card on a module in use changed the authority"
kh_expect_ok card issue --authority auth --role decoder --card "unix:$KH_WORK/c.sock"
UA_C=$(issued_ua)
kh_expect_ok card info --card "unix:$KH_WORK/c.sock"
kh_out_has '^role: decoder$'
kh_out_has "^unique address: $UA_C\$"
verify decoder "$UA_C"
kh_expect_fail card issue --authority auth --role card --card "unix:$KH_WORK/c.sock"
kh_err_has 'already personalised'
kh_stop "$SRV" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve: exit $KH_RC on SIGTERM"
kh_expect_ok card info --card c.card
kh_out_has '^lifecycle: personalised$'

# ---- personalised modules work: a CAM and a card issued from blanks pair
kh_expect_ok card blank --out e.card
kh_expect_ok card issue --authority auth --role cam --card e.card
kh_expect_ok card issue --authority auth --role card --card d.card
kh_expect_ok pair --cam e.card --card d.card --count 1
exit 0
