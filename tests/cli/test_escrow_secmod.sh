# The escrow's signing process as an operator runs it: `keyhole escrow secmod`, a real process
# started and stopped by this test in its temporary directory, reached by a front end in
# miniature (kh_secmod_probe, the real client library). Asserts: usage errors exit 2 and make
# nothing; the socket is mode 0600 and the key directory 0700, no key file is readable by group
# or others; a key made answers z = m for c' = m^e and refuses c' = 0 and n; a second process on
# the live socket is refused and the first keeps serving; SIGTERM and SIGINT stop it (exit 0,
# socket removed) and the key is there again after a restart; the client fails while the process
# is gone; a key file or a directory others can read is refused at start with one line naming
# it; a stale socket left by a killed process is replaced; the log never shows key material.
#
# Run by CTest as `sh test_escrow_secmod.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_escrow_secmod
kh_need stat find

T=$KH_WORK
K=$T/keys
S=$T/secmod.sock
PROBE=$(dirname "$KEYHOLE")/kh_secmod_probe
[ -x "$PROBE" ] || kh_fail "$PROBE not built"
cd "$T" || kh_fail "cd $T"

# --- usage -------------------------------------------------------------------------------------
kh_expect_help escrow --help
grep -Eq '^ +secmod ' "$KH_OUT" || kh_fail "keyhole escrow --help does not list 'secmod'"
kh_expect_help escrow secmod --help
for o in --keys --socket --threads; do
	grep -q -- "$o" "$KH_OUT" || kh_fail "escrow secmod --help does not mention $o"
done
kh_expect_usage escrow
kh_expect_usage escrow bogus
kh_expect_usage escrow secmod
kh_expect_usage escrow secmod --keys "$K"
kh_expect_usage escrow secmod --socket "$S"
kh_expect_usage escrow secmod --keys "$K" --socket "$S" extra
kh_expect_usage escrow secmod --keys "$K" --socket "$S" --bogus
kh_expect_usage escrow secmod --keys "$K" --keys "$K" --socket "$S"
kh_expect_usage escrow secmod --keys "" --socket "$S"
for n in 0 1025 abc -1 "" 3x; do
	kh_expect_usage escrow secmod --keys "$K" --socket "$S" --threads "$n"
done
[ -z "$(ls -A "$T")" ] || kh_fail "usage errors left files behind: $(ls -A "$T")"

# wait_ready PID: the process answers on the socket (or died: fail).
wait_ready()
{
	i=0
	until [ -S "$S" ] && "$PROBE" "$S" ping >/dev/null 2>&1; do
		kill -0 "$1" 2>/dev/null || { sed 's/^/  daemon| /' "$KH_META/daemon.err" >&2; kh_fail "secmod exited before listening"; }
		[ "$i" -lt 100 ] || kh_fail "secmod did not listen within 10 s"
		sleep 0.1
		i=$((i + 1))
	done
}
start()
{
	# the daemon logs every event, so that the log check at the end has something to read
	KEYHOLE_LOG=debug
	export KEYHOLE_LOG
	kh_start_daemon PID escrow secmod --keys "$K" --socket "$S" --threads 4
	unset KEYHOLE_LOG
	wait_ready "$PID"
}

# --- a key, made and used ----------------------------------------------------------------------
start
[ "$(stat -c '%a' "$S")" = 600 ] || kh_fail "socket has mode $(stat -c '%a' "$S"), expected 600"
[ "$(stat -c '%a' "$K")" = 700 ] || kh_fail "key directory has mode $(stat -c '%a' "$K"), expected 700"
"$PROBE" "$S" keygen 2048 >"$KH_META/keygen.out" 2>"$KH_META/probe.err" || kh_fail "keygen: $(cat "$KH_META/probe.err")"
ID=$(sed -n 's/^id=//p' "$KH_META/keygen.out")
[ -n "$ID" ] || kh_fail "keygen printed no id"
[ -f "$K/$ID.key" ] || kh_fail "no key file $K/$ID.key"
[ "$(stat -c '%a' "$K/$ID.key")" = 600 ] || kh_fail "key file has mode $(stat -c '%a' "$K/$ID.key"), expected 600"
[ -z "$(find "$K" -perm /077)" ] || kh_fail "readable by group or others: $(find "$K" -perm /077)"
"$PROBE" "$S" check "$ID" 5 >"$KH_META/check.out" 2>"$KH_META/probe.err" || kh_fail "check: $(cat "$KH_META/probe.err")"
grep -qx ok "$KH_META/check.out" || kh_fail "check did not say ok"

# a second process on the live socket is refused; the first keeps serving
kh_expect_fail escrow secmod --keys "$K" --socket "$S"
kh_err_has "secmod.sock: already exists"
kill -0 "$PID" 2>/dev/null || kh_fail "the first process died when a second one tried its socket"
"$PROBE" "$S" check "$ID" 1 >/dev/null 2>"$KH_META/probe.err" || kh_fail "after a refused second process: $(cat "$KH_META/probe.err")"

# --- stop, restart, the key is back ------------------------------------------------------------
kh_stop "$PID" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "SIGTERM: exit status $KH_RC"
[ ! -e "$S" ] || kh_fail "the socket is still there after SIGTERM"
if "$PROBE" "$S" check "$ID" 1 >/dev/null 2>"$KH_META/probe.err"; then
	kh_fail "the client succeeded with no process"
fi
grep -q "SECMOD" "$KH_META/probe.err" || kh_fail "no process: expected SECMOD, got $(cat "$KH_META/probe.err")"
start
"$PROBE" "$S" check "$ID" 3 >/dev/null 2>"$KH_META/probe.err" || kh_fail "after restart: $(cat "$KH_META/probe.err")"
kh_stop "$PID" INT
[ "$KH_RC" -eq 0 ] || kh_fail "SIGINT: exit status $KH_RC"
[ ! -e "$S" ] || kh_fail "the socket is still there after SIGINT"

# --- refused at start: a key file or the directory open to others ------------------------------
chmod 0644 "$K/$ID.key"
kh_expect_fail escrow secmod --keys "$K" --socket "$S"
kh_err_has "$ID.key: key file is not private"
[ ! -e "$S" ] || kh_fail "a refused start made its socket"
chmod 0600 "$K/$ID.key"
chmod 0755 "$K"
kh_expect_fail escrow secmod --keys "$K" --socket "$S"
kh_err_has "keys: key file is not private"
chmod 0700 "$K"

# --- a stale socket from a killed process is replaced ------------------------------------------
start
kh_stop "$PID" KILL
[ -S "$S" ] || kh_fail "a killed process left no socket (the stale case is not tested)"
start
"$PROBE" "$S" check "$ID" 1 >/dev/null 2>"$KH_META/probe.err" || kh_fail "after a stale socket: $(cat "$KH_META/probe.err")"
kh_stop "$PID" TERM

# --- the log: events, never key material -------------------------------------------------------
cat "$KH_META/daemon.out" "$KH_META/daemon.err" >"$KH_META/all.log"
grep -q "event=secmod.keygen id=$ID bits=2048" "$KH_META/all.log" || kh_fail "the log does not show the keygen"
grep -q "event=secmod.stop" "$KH_META/all.log" || kh_fail "the log does not show the stops"
! grep -q "PRIVATE" "$KH_META/all.log" || kh_fail "the log shows a PEM key"
! grep -Eq '[0-9a-fA-F]{64}' "$KH_META/all.log" || kh_fail "the log shows a long hex string"
kh_note "ok"
