# The module daemon (`keyhole card serve`) and the UNIX-socket transport: a pairing through two
# daemons prints exactly what the same pairing in-process prints; the socket is mode 0600; a
# second daemon on a live socket is refused; SIGTERM and SIGINT stop a daemon cleanly (exit 0,
# socket removed); a stale socket is replaced; a missing socket is a one-line failure.
#
# Run by CTest as `sh test_socket.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_socket
kh_need stat sha256sum find

T=$KH_WORK
AUTH=$T/auth
S1=$T/card1.sock
S2=$T/cam.sock
cd "$T" || kh_fail "cd $T"

kh_expect_ok authority init "$AUTH"
kh_expect_ok card issue --authority "$AUTH" --role cam --out "$T/cam.card"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card1.card"
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card2.card"
kh_expect_ok card issue --authority "$AUTH" --role decoder --out "$T/dec.card"
UA1=$(kh_ua "$T/card1.card") || exit 1
UA2=$(kh_ua "$T/card2.card") || exit 1

# The reference: the same pairing with every module in-process, before any daemon holds a file.
kh_expect_ok pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/card1.card" --decoder "$T/dec.card" --count 5
cp "$KH_OUT" "$KH_META/inproc.out"
kh_expect_ok card info --card "$T/card1.card"
cp "$KH_OUT" "$KH_META/inproc-info.out"
[ "$(grep -c 'sealed command' "$KH_META/inproc.out")" -eq 5 ] ||
	kh_fail "in-process pair --count 5 did not report 5 sealed commands"

# --- two daemons -------------------------------------------------------------------------------
kh_start_daemon P1 card serve --socket "$S1" --card "$T/card1.card"
kh_start_daemon P2 card serve --socket "$S2" --card "$T/cam.card"
kh_wait_socket "$S1" "$P1"
kh_wait_socket "$S2" "$P2"
for s in "$S1" "$S2"; do
	[ -S "$s" ] || kh_fail "$s is not a socket"
	m=$(stat -c '%a' "$s")
	[ "$m" = 600 ] || kh_fail "socket $s has mode $m ($(stat -c '%A' "$s")), expected 600 (srw-------)"
done

# Same modules, same story, same output: the transport carries the same bytes.
kh_expect_ok pair --authority "$AUTH" --cam "unix:$S2" --card "unix:$S1" --decoder "$T/dec.card" --count 5
[ ! -s "$KH_ERR" ] || kh_fail "pair through the daemons printed on stderr"
if ! cmp -s "$KH_META/inproc.out" "$KH_OUT"; then
	diff "$KH_META/inproc.out" "$KH_OUT" | sed 's/^/  /' >&2
	kh_fail "pair through the daemons printed something else than the in-process pair"
fi
kh_expect_ok card info --card "unix:$S1"
if ! cmp -s "$KH_META/inproc-info.out" "$KH_OUT"; then
	diff "$KH_META/inproc-info.out" "$KH_OUT" | sed 's/^/  /' >&2
	kh_fail "card info through the daemon differs from card info in-process"
fi
kh_out_has "^role: card$"
kh_out_has "^unique address: $UA1$"
kh_expect_ok card info --card "unix:$S2"
kh_out_has "^role: cam$"
# One module file, one process: while a daemon holds a card, the file cannot be opened again
# in-process (the lost update: both would save their own copy of the state), nor by a second
# daemon; the message names the file and the holder.
kh_expect_fail card info --card "$T/card1.card"
kh_err_has "card1.card .held by process $P1.: module file in use by another process"
kh_expect_fail card serve --socket "$T/x.sock" --card "$T/card1.card"
kh_err_has "module file in use"
[ ! -e "$T/x.sock" ] || kh_fail "a refused daemon left its socket"
# One daemon after another: the daemon serves the next host once the previous one hung up.
kh_expect_ok pair --authority "$AUTH" --cam "unix:$S2" --card "unix:$S1" --count 2
# Mixed: the CAM behind the socket, a card in-process.
kh_expect_ok pair --authority "$AUTH" --cam "unix:$S2" --card "$T/card2.card" --count 2
kh_out_has "$UA2"

# A second daemon on a live socket is refused, and the first keeps serving.
kh_expect_fail card serve --socket "$S1" --card "$T/card2.card"
kill -0 "$P1" 2>/dev/null || kh_fail "the first daemon died when a second one tried its socket"
[ -S "$S1" ] || kh_fail "a refused second daemon removed the live socket"
kh_expect_ok card info --card "unix:$S1"
kh_out_has "^unique address: $UA1$"

# A path that holds a regular file is never replaced by a socket.
printf 'keep me\n' >"$T/regular"
sum=$(kh_sha "$T/regular")
kh_expect_fail card serve --socket "$T/regular" --card "$T/card2.card"
[ -f "$T/regular" ] && [ "$(kh_sha "$T/regular")" = "$sum" ] || kh_fail "card serve replaced a regular file"

# A bad card file: the daemon refuses to start and creates no socket.
kh_expect_fail card serve --socket "$T/none.sock" --card "$T/missing.card"
[ ! -e "$T/none.sock" ] || kh_fail "card serve of a missing card created a socket"

# Connecting to nothing.
kh_expect_fail card info --card "unix:$T/missing.sock"
kh_expect_fail pair --authority "$AUTH" --cam "unix:$T/missing.sock" --card "unix:$S1"
kh_expect_fail pair --authority "$AUTH" --cam "unix:$S2" --card "unix:$T/missing.sock"
kh_expect_fail card info --card "unix:$T/regular"
[ ! -e "$T/missing.sock" ] || kh_fail "a client created the socket it tried to reach"

# A foreign card behind a daemon is refused like an in-process one.
kh_expect_ok authority init "$T/foreign"
kh_expect_ok card issue --authority "$T/foreign" --role card --out "$T/fcard.card"
kh_start_daemon P3 card serve --socket "$T/f.sock" --card "$T/fcard.card"
kh_wait_socket "$T/f.sock" "$P3"
kh_expect_fail pair --authority "$AUTH" --cam "unix:$S2" --card "unix:$T/f.sock"
kh_stop "$P3" TERM

# --- stopping ----------------------------------------------------------------------------------
kh_stop "$P1" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve exited $KH_RC on SIGTERM, expected 0"
[ ! -e "$S1" ] || kh_fail "card serve left its socket $S1 after SIGTERM"
kh_stop "$P2" INT
[ "$KH_RC" -eq 0 ] || kh_fail "card serve exited $KH_RC on SIGINT, expected 0"
[ ! -e "$S2" ] || kh_fail "card serve left its socket $S2 after SIGINT"
kh_expect_fail card info --card "unix:$S1"

# A stale socket (its daemon killed outright) is replaced by the next daemon.
kh_start_daemon P4 card serve --socket "$S1" --card "$T/card1.card"
kh_wait_socket "$S1" "$P4"
kill -KILL "$P4"
wait "$P4" 2>/dev/null
KH_PIDS=$(echo "$KH_PIDS" | sed "s/ $P4\$//; s/ $P4 / /")
[ -S "$S1" ] || kh_fail "expected a stale socket after SIGKILL"
kh_expect_fail card info --card "unix:$S1"
kh_start_daemon P5 card serve --socket "$S1" --card "$T/card1.card"
kh_wait_socket "$S1" "$P5"
kh_expect_ok card info --card "unix:$S1"
kh_out_has "^unique address: $UA1$"
kh_stop "$P5" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "card serve exited $KH_RC on SIGTERM, expected 0"
[ ! -e "$S1" ] || kh_fail "card serve left its socket after SIGTERM"

# The card files are still good after their daemons, and nothing half-written is left.
kh_expect_ok pair --authority "$AUTH" --cam "$T/cam.card" --card "$T/card1.card" --count 1
kh_no_tmp_files "$T"

kh_note "ok"
