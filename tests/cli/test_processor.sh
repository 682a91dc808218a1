# The processor daemon (`keyhole processor serve`): a processor issued by the authority is served
# on a socket of mode 0600 and answers there as a module (card info); the daemon refuses a module
# that is not a processor, and its usage errors; SIGTERM stops it and removes its socket. The
# protocol itself, the runner's confinement and the run request over the socket are
# tests/unit/test_proc.c's.
#
# Run by CTest as `sh test_processor.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_processor
kh_need stat

T=$KH_WORK
AUTH=$T/auth
S=$T/proc.sock
cd "$T" || kh_fail "cd $T"

kh_expect_ok authority init "$AUTH"
kh_expect_ok card issue --authority "$AUTH" --role processor --out "$T/proc.card"
kh_out_has "^issued processor "
kh_expect_ok card issue --authority "$AUTH" --role card --out "$T/card.card"
UA=$(kh_ua "$T/proc.card") || exit 1
kh_expect_ok card info --card "$T/proc.card"
kh_out_has "^role: processor$"

# usage
kh_expect_usage processor serve --module "$T/proc.card"
kh_expect_usage processor serve --socket "$S"
kh_expect_usage processor serve --module "$T/proc.card" --socket "$S" --socket "$S"
kh_expect_usage processor serve --module "unix:$S" --socket "$S"
kh_expect_usage processor serve --module "$T/proc.card" --socket "$S" extra
kh_expect_help processor serve --help
# a card is not a processor: refused, no socket left behind
kh_expect_fail processor serve --module "$T/card.card" --socket "$S"
kh_err_has "a card module, not a processor"
[ ! -e "$S" ] || kh_fail "a refused daemon left its socket"

kh_start_daemon P processor serve --module "$T/proc.card" --socket "$S"
kh_wait_socket "$S" "$P"
m=$(stat -c '%a' "$S")
[ "$m" = 600 ] || kh_fail "socket $S has mode $m, expected 600"
kh_expect_ok card info --card "unix:$S"
kh_out_has "^role: processor$"
kh_out_has "^unique address: $UA$"
kh_stop "$P" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "the daemon exited with $KH_RC after SIGTERM"
[ ! -e "$S" ] || kh_fail "the daemon left its socket after SIGTERM"
kh_note "ok"
