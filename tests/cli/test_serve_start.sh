# keyhole serve's start and its database file. Every input is checked before anything is
# created, and a start that fails leaves no file (a TLS key that is not the certificate's, one
# that is missing or readable by others, a port already taken); each failure names the file at
# fault. The database, its -wal and its -shm must be private (created so whatever the umask) and
# writable (a read-only file or directory is refused at start, checked as another user when
# run as root). --listen localhost is loopback; beyond loopback TLS is always required.
# The database deleted, or replaced, while the center serves: writes answer 503
# database_gone, /readyz answers 503 (and /healthz still 200), no read comes from a new empty
# database, no file appears at the path, and the next start does not make a new database beside
# the old WAL.
#
# Run by CTest as `sh test_serve_start.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_serve_start
kh_need curl openssl sqlite3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# nothing_at NAME WHAT: neither the database NAME nor anything SQLite makes beside it exists.
nothing_at()
{
	for f in "$1" "$1-wal" "$1-shm" "$1-journal"; do
		[ ! -e "$f" ] || kh_fail "$2: $f was left behind"
	done
}

# get_many N PATH: N requests to PATH at once, each on its own connection (so the center opens
# new store connections); their statuses in $KH_META/many.status, their bodies in
# $KH_META/many.N.
get_many()
{
	: >"$KH_META/many.status"
	gm_pids=
	gm_i=1
	while [ "$gm_i" -le "$1" ]; do
		curl -s --noproxy '*' -o "$KH_META/many.$gm_i" -w '%{http_code}\n' "http://127.0.0.1:$PORT$2" \
			>"$KH_META/many.st.$gm_i" &
		gm_pids="$gm_pids $!"
		gm_i=$((gm_i + 1))
	done
	# shellcheck disable=SC2086 # the pid list is split on purpose
	wait $gm_pids
	gm_i=1
	while [ "$gm_i" -le "$1" ]; do
		cat "$KH_META/many.st.$gm_i" >>"$KH_META/many.status"
		gm_i=$((gm_i + 1))
	done
}

# reads_not_empty N: of the last get_many of subscriber 1, each answered either Alice (from the
# file the center has open) or 503 database_gone: never 404, as a new empty database would.
reads_not_empty()
{
	rn_i=1
	while [ "$rn_i" -le "$1" ]; do
		rn_st=$(cat "$KH_META/many.st.$rn_i")
		case $rn_st in
		200) grep -q '"name":"Alice"' "$KH_META/many.$rn_i" || kh_fail "a read answered 200 without Alice: $(cat "$KH_META/many.$rn_i")" ;;
		503) grep -q '"code":"database_gone"' "$KH_META/many.$rn_i" || kh_fail "a 503 that is not database_gone: $(cat "$KH_META/many.$rn_i")" ;;
		*) kh_fail "a read answered $rn_st (a new empty database?): $(cat "$KH_META/many.$rn_i")" ;;
		esac
		rn_i=$((rn_i + 1))
	done
}

kh_expect_ok authority init auth

# ---- help, --listen ----

kh_expect_help serve --help
kh_out_has 'sqlite:FILE'

# The first start, under umask 000: the database, its -wal and its -shm are private all the same.
umask 000
kh_start_serve PID --listen localhost:0
umask 022
grep -Eq 'event=serve\.start listen=127\.0\.0\.1:[0-9]+ ' "$KH_META/daemon.err" ||
	kh_fail "--listen localhost:0 did not serve 127.0.0.1"
grep -q 'event=serve.new_database path=center.db ' "$KH_META/daemon.err" || kh_fail "no log line saying a new database was made"
kh_expect_api POST /v1/subscribers '{"name":"Alice"}' 201 '"id":1'
kh_expect_mode center.db 600
kh_expect_mode center.db-wal 600
kh_expect_mode center.db-shm 600
kh_stop "$PID" TERM
[ "$KH_RC" -eq 0 ] || kh_fail "SIGTERM: exit status $KH_RC"
cp -p center.db backup.db # whole: the last close checkpointed the WAL

kh_expect_usage serve --db new.db --authority auth --listen example.invalid:0
kh_err_has 'not a numeric address'

# Beyond loopback TLS is required whatever the operator authentication; the token and
# --no-operator-auth exclude each other.
(umask 077 && printf 'an-operator-token-of-32-characters\n' >op.token)
kh_expect_usage serve --db new.db --authority auth --listen 0.0.0.0:0 --no-operator-auth
kh_err_has 'not loopback: serve it over TLS'
kh_expect_usage serve --db new.db --authority auth --listen 0.0.0.0:0 --no-operator-auth --token-file op.token
kh_expect_usage serve --db new.db --authority auth --listen 192.0.2.1:0 --token-file op.token
kh_err_has 'TLS'
kh_expect_usage serve --db new.db --authority auth --listen '[::]:0' --no-operator-auth
kh_expect_usage serve --db new.db --authority auth --listen 127.0.0.1:0 --no-operator-auth --token-file op.token
kh_err_has 'exclude each other'
nothing_at new.db "a usage error"

# ---- TLS: checked before anything is created, the file named ----

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt \
	-subj /CN=127.0.0.1 -days 1 2>/dev/null || kh_fail "openssl could not make a TLS certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt \
	-subj /CN=127.0.0.1 -days 1 2>/dev/null || kh_fail "openssl could not make a second certificate"
chmod 600 tls.key other.key
kh_expect_fail serve --db new.db --authority auth --listen 127.0.0.1:0 --cert tls.crt --key other.key
kh_err_has '^keyhole: other\.key: .*not the key of the certificate tls\.crt'
nothing_at new.db "a key that is not the certificate's"
kh_expect_fail serve --db new.db --authority auth --listen 127.0.0.1:0 --cert tls.crt --key missing.key
kh_err_has '^keyhole: missing\.key: '
nothing_at new.db "a missing TLS key"
chmod 644 tls.key
kh_expect_fail serve --db new.db --authority auth --listen 127.0.0.1:0 --cert tls.crt --key tls.key
kh_err_has '^keyhole: tls\.key: key file is not private'
nothing_at new.db "a TLS key readable by others"
chmod 600 tls.key
printf 'not a certificate\n' >bad.crt
kh_expect_fail serve --db new.db --authority auth --listen 127.0.0.1:0 --cert bad.crt --key tls.key
kh_err_has '^keyhole: bad\.crt: not a PEM certificate'
nothing_at new.db "a file that is not a certificate"

# ---- the database's files ----

chmod 644 center.db
kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
kh_err_has '^keyhole: center\.db: database file is not private'
chmod 600 center.db

# A -wal readable by others (left by a center killed while running) is refused, and left as it is.
kh_start_serve PID
kh_stop "$PID" KILL
[ -e center.db-wal ] || kh_fail "a center killed left no -wal"
chmod 644 center.db-wal
kh_snapshot . >"$KH_META/before"
kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
kh_err_has '^keyhole: center\.db-wal: database file is not private'
kh_same_snapshot "$KH_META/before" . "a refused start changed a file"
chmod 600 center.db-wal
kh_start_serve PID
kh_expect_api GET /v1/subscribers/1 "" 200 '"name":"Alice"'
kh_stop "$PID" TERM

# A start that fails after the database was created (the port is taken) leaves no file.
kh_start_serve PID
kh_expect_fail serve --db new.db --authority auth --listen "127.0.0.1:$PORT"
nothing_at new.db "a start that could not bind"
# ... and says why, in one line naming the address: not "input/output error".
kh_err_has "^keyhole: 127\\.0\\.0\\.1:$PORT: address already in use"
kh_stop "$PID" TERM

# Read-only: the file's mode, or its directory's. Root may write anyway, so as root this runs as
# another user (nobody) in a directory of that user's.
RO_USER=
if [ "$(id -u)" -eq 0 ]; then
	if command -v setpriv >/dev/null 2>&1; then
		RO_USER=65534
		printf '#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups "%s" "$@"\n' "$KEYHOLE" \
			>"$KH_META/as-user"
		chmod 755 "$KH_META/as-user"
		chmod 711 "$KH_TMP"
	else
		kh_note "skipped the read-only database: run as root without setpriv"
	fi
fi
if [ "$(id -u)" -ne 0 ] || [ -n "$RO_USER" ]; then
	mkdir ro
	[ -z "$RO_USER" ] || chown "$RO_USER:$RO_USER" ro
	cd ro || kh_fail "cd ro"
	REAL_KEYHOLE=$KEYHOLE
	[ -z "$RO_USER" ] || KEYHOLE=$KH_META/as-user
	kh_expect_ok authority init auth
	kh_start_serve PID
	kh_stop "$PID" TERM
	chmod 400 center.db
	kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
	kh_err_has '^keyhole: center\.db: database file is read-only'
	chmod 600 center.db
	chmod 500 .
	kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
	kh_err_has "^keyhole: center\\.db: the database's directory is not writable"
	chmod 700 .
	kh_start_serve PID
	kh_stop "$PID" TERM
	[ "$KH_RC" -eq 0 ] || kh_fail "the writable database did not serve again"
	KEYHOLE=$REAL_KEYHOLE
	cd .. || kh_fail "cd .."
fi

# ---- the database deleted while the center serves ----

kh_start_serve PID
kh_expect_api GET /v1/subscribers/1 "" 200 '"name":"Alice"'
kh_expect_api GET /readyz "" 200 '^\{"status":"ready"\}$'
rm center.db
get_many 16 /v1/subscribers/1
reads_not_empty 16
# not ready (the health check says why, naming no file), yet alive
kh_expect_api GET /readyz "" 503 '^\{"status":"not_ready","reason":"[^"/]*deleted or replaced[^"/]*"\}$'
kh_expect_api GET /healthz "" 200 '^\{"status":"ok"\}$'
kh_expect_api POST /v1/subscribers '{"name":"Bob"}' 503 '^\{"error":\{"code":"database_gone","message":"[^"]*deleted or replaced'
[ ! -e center.db ] || kh_fail "a file appeared at the deleted database's path"
grep -q 'event=store.error .*err=DB_GONE .*deleted' "$KH_META/daemon.err" || kh_fail "no log line saying the database was deleted"
kh_stop "$PID" TERM
[ ! -e center.db ] || kh_fail "a file appeared at the deleted database's path when the center stopped"
# The next start makes no new database (new service keys) beside the old WAL.
[ -e center.db-wal ] || kh_fail "the deleted database's WAL is gone"
kh_expect_fail serve --db center.db --authority auth --listen 127.0.0.1:0
kh_err_has '^keyhole: center\.db-wal: left without its database'
[ ! -e center.db ] || kh_fail "a start beside the old WAL made a new database"
rm -f center.db-wal center.db-shm

# ---- the database replaced (by a copy of itself) while the center serves ----

cp -p backup.db center.db
kh_start_serve PID
kh_expect_api GET /v1/subscribers/1 "" 200 '"name":"Alice"'
sqlite3 center.db "VACUUM INTO 'copy.db'" || kh_fail "sqlite3 could not copy the database"
chmod 600 copy.db
mv copy.db center.db
kh_expect_api POST /v1/subscribers '{"name":"Bob"}' 503 '"code":"database_gone"'
get_many 16 /v1/subscribers/1
reads_not_empty 16
grep -q 'event=store.error .*err=DB_GONE .*replaced' "$KH_META/daemon.err" || kh_fail "no log line saying the database was replaced"
kh_stop "$PID" TERM
# The copy is as it was copied, not written, and not given the old file's WAL.
[ ! -e center.db-wal ] || kh_fail "the replaced database's WAL was left beside the copy"
[ "$(sqlite3 center.db 'PRAGMA integrity_check')" = ok ] || kh_fail "the copy is damaged"
[ "$(sqlite3 center.db 'SELECT group_concat(name) FROM subscribers')" = Alice ] ||
	kh_fail "the copy holds $(sqlite3 center.db 'SELECT group_concat(name) FROM subscribers')"
kh_start_serve PID
kh_expect_api GET /v1/subscribers/1 "" 200 '"name":"Alice"'
kh_expect_api POST /v1/subscribers '{"name":"Bob"}' 201 '"id":2'
kh_stop "$PID" TERM
# Through all of it the service key stayed the one the center made at its first start.
KEYS_THEN=$(sqlite3 backup.db 'SELECT key_id, version, hex(key) FROM service_keys')
KEYS_NOW=$(sqlite3 center.db 'SELECT key_id, version, hex(key) FROM service_keys')
[ -n "$KEYS_THEN" ] && [ "$KEYS_NOW" = "$KEYS_THEN" ] || kh_fail "the service keys changed: '$KEYS_THEN' then, '$KEYS_NOW' now"

kh_note "ok"
