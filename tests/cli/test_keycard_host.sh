#!/bin/sh
# keyhole keycard before any key center: the card's status (in-process and through a module
# daemon), every usage error, and the failures that need no center (a card not enrolled, a file
# that is not a message, a delivery for another card, a post given to open, no answer), each with
# one line on stderr and nothing written. The client against a center is in
# tests/unit/test_keycard_client.c; the end-to-end run with keycenter serve is another test's.
#
# Run by CTest as `sh test_keycard_host.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_keycard_host
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

C=http://127.0.0.1:1 # nothing listens there: the connection is refused
CODE=ABCD-EFGH-JKMN-PQRS

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role keycard --out a.card
kh_expect_ok keycard status --card a.card
kh_out_has '^serial: 00000001$'
kh_out_has '^center: 00000000$'
kh_out_has '^send: [0-9]+$'
kh_out_has '^acked: [0-9]+$'
kh_out_has '^recv: [0-9]+$'

# the same card through a module daemon
pid=
kh_start_daemon pid card serve --socket "$KH_TMP/a.sock" --card a.card
kh_wait_socket "$KH_TMP/a.sock" "$pid"
kh_expect_ok keycard status --card "unix:$KH_TMP/a.sock"
kh_out_has '^center: 00000000$'
kh_stop "$pid" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve exited $KH_RC on SIGTERM"

printf 'a document\n' >doc
kh_snapshot . >"$KH_META/before"

# usage errors
kh_expect_usage keycard
kh_expect_usage keycard sned
kh_expect_usage keycard status
kh_expect_usage keycard status --card a.card extra
kh_expect_usage keycard send --center "$C" --card a.card --to bob@kc
kh_expect_usage keycard send --center "$C" --card a.card --to Bob@kc --in doc
kh_expect_usage keycard send --center "$C" --card a.card --to bob --in doc
kh_expect_usage keycard send --center "$C" --card a.card --to bob@kc --to eve@kc --in doc
kh_expect_usage keycard send --center ftp://kc --card a.card --to bob@kc --in doc
kh_expect_usage keycard send --center http://kc.example --card a.card --to bob@kc --in doc
kh_expect_usage keycard activate --center "$C" --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 00000001 --card a.card --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 00000001 --key a.key --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 00000000 --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial -1 --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 12 --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 0x100000000 --code "$CODE"
kh_expect_usage keycard activate --center "$C" --serial 00000001 --code 'ABCD EFGH'
kh_expect_usage keycard activate --center "$C" --serial 00000001
kh_expect_usage keycard fetch --center "$C" --card a.card
kh_expect_usage keycard open --card a.card --in doc
kh_expect_usage keycard open --card a.card --out x

# failures that need no center
kh_expect_fail keycard send --center "$C" --card a.card --to bob@kc --in doc
kh_err_has 'not enrolled'
kh_expect_fail keycard send --center "$C" --card a.card --to bob@kc --in missing
kh_err_has 'missing'
kh_expect_fail keycard send --center "$C" --card a.card --to bob@kc --in .
kh_err_has 'not a regular file'
kh_expect_fail keycard fetch --center "$C" --card a.card --out-dir nodir
kh_err_has 'nodir: not a directory'
kh_expect_fail keycard fetch --center "$C" --card a.card --out-dir .
kh_err_has 'not enrolled'
kh_expect_fail keycard activate --center "$C" --serial 00000001 --code "$CODE"
kh_err_has 'no answer from http://127.0.0.1:1'
kh_expect_fail keycard activate --center "$C" --serial 0x1 --code "$CODE"
kh_err_has 'no answer'
kh_expect_fail keycard activate --center "$C" --card a.card --code "$CODE"
kh_err_has 'no answer'
kh_expect_fail keycard status --card b.card
kh_expect_fail keycard open --card a.card --in doc --out out
kh_err_has 'not a key center message'
kh_same_snapshot "$KH_META/before" . "a refused keycard command changed a file"

# a delivery's header and a chunk 0 (not a sealed one: the card is not reached for it)
# shellcheck disable=SC2059 # the format is the octal escape on purpose
byte() { printf "\\$(printf '%03o' "$1")"; }
head22() # DIR SERIAL: the 22-byte header, index 1 (a serial below 256)
{
	printf 'KHKM\001' && byte "$1" && printf '\000\000\000\000\000\000\000' && byte "$2" &&
		printf '\000\000\000\000\000\000\000\001'
}
chunk0() { printf '\001\000\000\000\040'; printf '%032d' 0 | tr 0 '\000'; }
{ head22 2 9 && chunk0; } >other.khm
{ head22 1 1 && chunk0; } >post.khm
{ head22 2 1 && chunk0; } >mine.khm
kh_snapshot . >"$KH_META/before"
kh_expect_fail keycard open --card a.card --in other.khm --out out
kh_err_has 'for key card 00000009, not this one \(00000001\)'
kh_expect_fail keycard open --card a.card --in post.khm --out out
kh_err_has 'a card.s post to the center, not a delivery'
kh_expect_fail keycard open --card a.card --in mine.khm --out out
kh_err_has 'refused to open message 1'
[ ! -e out ] || kh_fail "a refused open left its output"
kh_same_snapshot "$KH_META/before" . "a failed keycard command changed a file"

exit 0
