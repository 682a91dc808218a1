# contrib/keyhole-center.service, the systemd unit for `keyhole serve`:
# - it says what it must: a dedicated user, no capability and none to gain, the file system read
#   only but for its state directory, its own /tmp, no home, the address families it needs, the
#   system-service system calls, a restart on failure, the token from a file;
# - its ExecStart, run as written with its paths moved into this test's directory (the authority
#   and the token in "/etc/keyhole", the database in "/var/lib/keyhole"), serves: /healthz and
#   /readyz answer, the operator API wants the token, SIGTERM stops it with status 0;
# - `systemd-analyze verify` has nothing to say about it (ExecStart pointed at the built binary
#   in a copy, since verify wants the command to exist; its man page found in a man tree made
#   here), and does say something about a copy with a misspelt key, so the check is known to
#   bite. Only this part is skipped, with a note, when systemd-analyze is not installed
#   (scripts/install-deps installs it).
#
# Run by CTest as `sh test_systemd.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_systemd
kh_need sed grep curl openssl
UNIT=$KH_SOURCE_DIR/contrib/keyhole-center.service
[ -f "$UNIT" ] || kh_fail "no unit at contrib/keyhole-center.service"
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ------------------------------------------------------------------ what the unit says

for want in 'User=keyhole' 'Group=keyhole' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'AmbientCapabilities=' \
	'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' 'StateDirectory=keyhole' \
	'ConfigurationDirectory=keyhole' 'SystemCallFilter=@system-service' 'Restart=on-failure' \
	'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'UMask=0077'; do
	grep -qx "$want" "$UNIT" || kh_fail "the unit does not say $want"
done
grep -q '^DynamicUser=' "$UNIT" && kh_fail "the unit uses DynamicUser= (its key files need a stable owner)"
grep -q '^#.*DynamicUser=' "$UNIT" || kh_fail "the unit does not say why it has User= and not DynamicUser="
[ "$(grep -c '^ExecStart=' "$UNIT")" = 1 ] || kh_fail "the unit has not exactly one ExecStart="
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
case $EXEC in
"/usr/local/bin/keyhole serve "*) ;;
*) kh_fail "ExecStart does not run /usr/local/bin/keyhole serve: $EXEC" ;;
esac
for want in '--db /var/lib/keyhole/' '--authority /etc/keyhole/' '--token-file /etc/keyhole/'; do
	case $EXEC in
	*"$want"*) ;;
	*) kh_fail "ExecStart has no $want...: the database goes in StateDirectory, the authority and token in ConfigurationDirectory" ;;
	esac
done

# ------------------------------------------------------------------ its ExecStart serves

mkdir -p etc/keyhole state || kh_fail "mkdir"
chmod 700 etc/keyhole state
kh_expect_ok authority init --name "Unit test" etc/keyhole/authority
(umask 077 && openssl rand -hex 32 >etc/keyhole/operator.token) || kh_fail "making the token"
# the unit's command line, its paths moved here, on a free loopback port
CMD=$(printf '%s\n' "$EXEC" | sed -e "s|^/usr/local/bin/keyhole |$KEYHOLE |" -e "s|/etc/keyhole|$KH_WORK/etc/keyhole|g" \
	-e "s|/var/lib/keyhole|$KH_WORK/state|g" -e 's|--listen 127\.0\.0\.1:[0-9]*|--listen 127.0.0.1:0|')
case $CMD in
*"--listen 127.0.0.1:0"*) ;;
*) kh_fail "ExecStart does not listen on 127.0.0.1:PORT: $EXEC" ;;
esac
: >"$KH_META/daemon.out"
# the unit's words after the binary, as systemd splits them (the unit has no quotes)
# shellcheck disable=SC2086
kh_start_daemon SRV ${CMD#"$KEYHOLE "}
kh_wait_listening "$SRV"
kh_expect_api GET /healthz "" 200 '^\{"status":"ok"\}$'
kh_expect_api GET /readyz "" 200 '^\{"status":"ready"\}$'
kh_expect_api GET /v1/subscribers "" 401 '"code":"unauthorised"'
ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' \
	-H "Authorization: Bearer $(cat etc/keyhole/operator.token)" "http://127.0.0.1:$PORT/v1/subscribers")
[ "$ST" = 200 ] || kh_fail "GET /v1/subscribers with the token: status $ST: $(cat "$KH_META/body")"
[ "$(kh_mode state/center.db)" = 600 ] || kh_fail "the database in the state directory is not 0600"
kh_stop "$SRV" TERM
[ "$KH_RC" = 0 ] || kh_fail "the unit's ExecStart exited $KH_RC on SIGTERM (systemd would see a failure)"

# ------------------------------------------------------------------ systemd-analyze verify

if ! command -v systemd-analyze >/dev/null 2>&1; then
	kh_note "skipped systemd-analyze verify: systemd-analyze is not installed (scripts/install-deps installs systemd); the rest passed"
	exit 0
fi
# verify wants ExecStart's command to exist, and checks Documentation=man:... with man(1)
mkdir -p unit man/man1 || kh_fail "mkdir"
sed "s|^ExecStart=/usr/local/bin/keyhole |ExecStart=$KEYHOLE |" "$UNIT" >unit/keyhole-center.service
grep -q "^ExecStart=$KEYHOLE serve " unit/keyhole-center.service || kh_fail "could not point ExecStart at $KEYHOLE"
cp "$KH_SOURCE_DIR/docs/man/keyhole-serve.1" man/man1/ || kh_fail "copy the man page"
MAN=yes
command -v man >/dev/null 2>&1 || {
	MAN=no
	kh_note "man is not installed: Documentation= is not checked"
}
# verify_unit FILE: its output in $KH_META/verify, its status returned
verify_unit()
{
	MANPATH=$KH_WORK/man SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man="$MAN" "$1" >"$KH_META/verify" 2>&1
}
verify_unit unit/keyhole-center.service
rc=$?
if [ "$rc" != 0 ] || grep -q 'keyhole-center' "$KH_META/verify"; then
	sed 's/^/  verify| /' "$KH_META/verify" >&2
	kh_fail "systemd-analyze verify finds fault with contrib/keyhole-center.service (status $rc)"
fi
if [ -s "$KH_META/verify" ]; then
	kh_note "systemd-analyze verify said, of other units: $(tr '\n' ' ' <"$KH_META/verify")"
fi
# ... and it bites: a misspelt key is reported, naming the unit
sed 's/^ProtectSystem=strict$/ProtectSytem=strict/' unit/keyhole-center.service >unit/keyhole-typo.service
cmp -s unit/keyhole-center.service unit/keyhole-typo.service && kh_fail "could not plant a typo in a copy of the unit"
verify_unit unit/keyhole-typo.service
grep -q 'keyhole-typo.service.*ProtectSytem' "$KH_META/verify" ||
	kh_fail "systemd-analyze verify did not report a misspelt key: $(cat "$KH_META/verify")"

kh_note "ok: the unit verifies, and its ExecStart serves"
