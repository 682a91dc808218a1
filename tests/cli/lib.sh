# Shared helpers for the shell tests of the `keyhole` command (tests/cli/test_*.sh).
#
# Sourced, not run: each test does
#     . "$KH_SOURCE_DIR/tests/cli/lib.sh"
#     kh_init test_name
# CTest provides KEYHOLE (the binary) and KH_SOURCE_DIR. Plain POSIX sh (dash): no bashisms.
#
# What every test relies on:
#   kh_run ARGS...         run "$KEYHOLE" ARGS, stdout to $KH_OUT, stderr to $KH_ERR, status in $KH_RC
#   kh_expect_ok ...       status 0
#   kh_expect_fail ...     status 1 and exactly one line on stderr starting with "keyhole"
#   kh_expect_usage ...    status 2, exactly one such line, nothing on stdout
#   kh_expect_help ...     status 0, "usage:" at the start of stdout, nothing on stderr
#   kh_snapshot DIR        path, mode and SHA-256 of every file below DIR (to compare before/after)
#   $KH_WORK               the directory a test works in; $KH_META holds the harness's own files
#                          (captured output, snapshots), so snapshots of $KH_WORK never see them
# The first broken expectation ends the test with "FAIL: <test>: <what>" and status 1.

KH_TEST=${KH_TEST:-cli}
KH_TMP=
KH_PIDS=

kh_fail()
{
	printf 'FAIL: %s: %s\n' "$KH_TEST" "$*" >&2
	if [ -n "$KH_TMP" ] && [ -f "$KH_META/last" ]; then
		printf '  last keyhole command run: %s\n' "$(cat "$KH_META/last")" >&2
		sed 's/^/  stdout| /' "$KH_OUT" >&2
		sed 's/^/  stderr| /' "$KH_ERR" >&2
	fi
	exit 1
}

kh_note()
{
	printf '%s: %s\n' "$KH_TEST" "$*"
}

kh_cleanup()
{
	kh_rc=$?
	for kh_p in $KH_PIDS; do
		if kill -0 "$kh_p" 2>/dev/null; then
			kill -TERM "$kh_p" 2>/dev/null
			kh_i=0
			while kill -0 "$kh_p" 2>/dev/null && [ "$kh_i" -lt 30 ]; do
				sleep 0.1
				kh_i=$((kh_i + 1))
			done
			kill -KILL "$kh_p" 2>/dev/null
		fi
	done
	KH_PIDS=
	kh_db_drop
	if [ -n "$KH_TMP" ]; then
		chmod -R u+rwX "$KH_TMP" 2>/dev/null
		rm -rf "$KH_TMP"
	fi
	KH_TMP=
	# Whatever the test did, the machine's /dev/null is still the device (a tool that renamed a
	# file over its --out once turned it into a regular file).
	if [ ! -c /dev/null ]; then
		echo "FAIL: ${KH_TEST:-test}: /dev/null is no longer a character device" >&2
		exit 1
	fi
	return "$kh_rc"
}

# kh_init NAME: check the environment, make the temporary directories, arrange their removal.
kh_init()
{
	KH_TEST=$1
	[ -n "$KEYHOLE" ] || { echo "FAIL: $KH_TEST: KEYHOLE (path to the keyhole binary) is not set" >&2; exit 1; }
	[ -x "$KEYHOLE" ] || { echo "FAIL: $KH_TEST: $KEYHOLE is not an executable" >&2; exit 1; }
	[ -n "$KH_SOURCE_DIR" ] || { echo "FAIL: $KH_TEST: KH_SOURCE_DIR is not set" >&2; exit 1; }
	# /tmp rather than $TMPDIR: UNIX socket paths must stay under 108 bytes.
	KH_TMP=$(mktemp -d /tmp/keyhole-test.XXXXXX) || { echo "FAIL: $KH_TEST: mktemp -d" >&2; exit 1; }
	KH_META=$KH_TMP/meta
	KH_WORK=$KH_TMP/work
	mkdir "$KH_META" "$KH_WORK" || { echo "FAIL: $KH_TEST: mkdir in $KH_TMP" >&2; rm -rf "$KH_TMP"; exit 1; }
	trap kh_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	KH_OUT=$KH_META/out
	KH_ERR=$KH_META/err
	# Keep the environment from changing what the binary prints or how it runs.
	LC_ALL=C
	export LC_ALL
	unset KEYHOLE_LOG
	umask 022
}

kh_need()
{
	for kh_c in "$@"; do
		command -v "$kh_c" >/dev/null 2>&1 || kh_fail "this test needs '$kh_c' in PATH"
	done
}

# kh_run ARGS...: run keyhole; never fails by itself.
kh_run()
{
	"$KEYHOLE" "$@" >"$KH_OUT" 2>"$KH_ERR" </dev/null
	KH_RC=$?
	# In a file, not a variable: kh_fail also reports runs made in a $(...) subshell.
	printf 'keyhole %s (exit %s)\n' "$*" "$KH_RC" >"$KH_META/last"
}

# Exactly one line on stderr (ending in a newline), starting with "keyhole".
kh_check_one_line()
{
	[ -s "$KH_ERR" ] || kh_fail "expected a one-line message on stderr, got nothing"
	kh_n=$(wc -l <"$KH_ERR")
	[ "$kh_n" -eq 1 ] || kh_fail "expected exactly one line on stderr, got $kh_n"
	[ -z "$(tail -c 1 "$KH_ERR")" ] || kh_fail "stderr message does not end with a newline"
	case $(cat "$KH_ERR") in
	keyhole*) ;;
	*) kh_fail "stderr message does not start with 'keyhole'" ;;
	esac
}

kh_expect_ok()
{
	kh_run "$@"
	[ "$KH_RC" -eq 0 ] || kh_fail "expected exit status 0, got $KH_RC"
}

kh_expect_fail()
{
	kh_run "$@"
	[ "$KH_RC" -eq 1 ] || kh_fail "expected exit status 1 (failure), got $KH_RC"
	kh_check_one_line
}

kh_expect_usage()
{
	kh_run "$@"
	[ "$KH_RC" -eq 2 ] || kh_fail "expected exit status 2 (usage), got $KH_RC"
	kh_check_one_line
	[ ! -s "$KH_OUT" ] || kh_fail "a usage error printed something on stdout"
}

kh_expect_help()
{
	kh_run "$@"
	[ "$KH_RC" -eq 0 ] || kh_fail "--help: expected exit status 0, got $KH_RC"
	grep -q '^usage:' "$KH_OUT" || kh_fail "--help: no line starting with 'usage:' on stdout"
	[ ! -s "$KH_ERR" ] || kh_fail "--help printed something on stderr"
}

# kh_out_has / kh_err_has EXTENDED-REGEX: the last run's stdout / stderr matches.
kh_out_has()
{
	grep -Eq -- "$1" "$KH_OUT" || kh_fail "stdout does not match /$1/"
}

kh_err_has()
{
	grep -Eq -- "$1" "$KH_ERR" || kh_fail "stderr does not match /$1/"
}

# kh_snapshot DIR [EXCLUDE]: one line per regular file below DIR (leaving out the tree EXCLUDE):
# mode and path, then SHA-256 and path; sorted by path.
kh_snapshot()
{
	if [ -n "$2" ]; then
		find "$1" -path "$2" -prune -o -type f -exec stat -c '%a %n' {} + | sort -k2
		find "$1" -path "$2" -prune -o -type f -exec sha256sum {} + | sort -k2
	else
		find "$1" -type f -exec stat -c '%a %n' {} + | sort -k2
		find "$1" -type f -exec sha256sum {} + | sort -k2
	fi
}

# kh_same_snapshot BEFORE-FILE DIR WHAT [EXCLUDE]: DIR still matches the snapshot in BEFORE-FILE.
kh_same_snapshot()
{
	kh_snapshot "$2" "$4" >"$1.after"
	if ! cmp -s "$1" "$1.after"; then
		diff "$1" "$1.after" | sed 's/^/  /' >&2
		kh_fail "$3"
	fi
	rm -f "$1.after"
}

kh_sha()
{
	sha256sum <"$1" | cut -d' ' -f1
}

kh_mode()
{
	stat -c '%a' "$1"
}

kh_expect_mode()
{
	[ -e "$1" ] || kh_fail "$1 was not created"
	kh_m=$(kh_mode "$1")
	[ "$kh_m" = "$2" ] || kh_fail "$1 has mode $kh_m, expected $2"
}

# No temporary file of an atomic write may survive (kh_file_write_atomic uses NAME.tmp.XXXXXX).
kh_no_tmp_files()
{
	kh_t=$(find "$1" -name '*.tmp.*' 2>/dev/null)
	[ -z "$kh_t" ] || kh_fail "stray temporary files left behind: $kh_t"
}

# kh_flip_byte FILE OFFSET: change the byte at OFFSET in place (file size unchanged).
kh_flip_byte()
{
	kh_b=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' \n')
	[ -n "$kh_b" ] || kh_fail "kh_flip_byte: $1 has no byte at offset $2"
	kh_b=$(((kh_b + 1) % 256))
	# shellcheck disable=SC2059 # the format is the octal escape on purpose
	printf "\\$(printf '%03o' "$kh_b")" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null ||
		kh_fail "kh_flip_byte: dd into $1"
}

kh_size()
{
	wc -c <"$1" | tr -d ' '
}

# kh_card_copy SRC DST: copy a card file with its key and counter (DST.card, DST.key, DST.card.ctr).
kh_card_copy()
{
	cp -p "$1.card" "$2.card" && cp -p "$1.key" "$2.key" && cp -p "$1.card.ctr" "$2.card.ctr" ||
		kh_fail "copying card $1 to $2"
}

# kh_ua CARDSPEC: the unique address (8 hex digits) a module reports through `card info`.
kh_ua()
{
	kh_expect_ok card info --card "$1"
	kh_u=$(sed -n 's/^unique address: *\([0-9A-Fa-f]\{8\}\)$/\1/p' "$KH_OUT")
	[ -n "$kh_u" ] || kh_fail "card info --card $1: no 'unique address: XXXXXXXX' line"
	echo "$kh_u"
}

# kh_start_daemon PIDVAR ARGS...: start keyhole ARGS in the background, remember its pid.
kh_start_daemon()
{
	kh_var=$1
	shift
	"$KEYHOLE" "$@" >>"$KH_META/daemon.out" 2>>"$KH_META/daemon.err" </dev/null &
	kh_p=$!
	KH_PIDS="$KH_PIDS $kh_p"
	eval "$kh_var=\$kh_p"
}

# kh_wait_socket PATH PID: wait up to ~5 s until the daemon PID answers on the socket PATH (a
# socket file alone is not enough: it exists between bind and listen, and a stale one may be
# left by a daemon that was killed).
kh_wait_socket()
{
	kh_i=0
	while :; do
		if [ -S "$1" ] && "$KEYHOLE" card info --card "unix:$1" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$2" 2>/dev/null || {
			sed 's/^/  daemon| /' "$KH_META/daemon.err" >&2
			kh_fail "daemon $2 exited before answering on $1"
		}
		[ "$kh_i" -lt 50 ] || kh_fail "daemon $2 did not answer on $1 within 5 s"
		sleep 0.1
		kh_i=$((kh_i + 1))
	done
}

# kh_stop PID SIGNAL: send SIGNAL, wait up to ~5 s, set KH_RC to the daemon's exit status.
kh_stop()
{
	kill -"$2" "$1" 2>/dev/null || kh_fail "daemon $1 is not running"
	kh_i=0
	while kill -0 "$1" 2>/dev/null; do
		if [ "$kh_i" -ge 50 ]; then
			kill -KILL "$1" 2>/dev/null
			kh_fail "daemon $1 did not stop within 5 s of SIG$2"
		fi
		sleep 0.1
		kh_i=$((kh_i + 1))
	done
	wait "$1"
	KH_RC=$?
	kh_np=
	for kh_p in $KH_PIDS; do
		[ "$kh_p" = "$1" ] || kh_np="$kh_np $kh_p"
	done
	KH_PIDS=$kh_np
}

# kh_frames FILE: framemd5 of every video and audio frame of a TS, without the header lines (they
# name the file); what the pay-TV tests compare to show a descrambled stream plays bit-exactly.
kh_frames()
{
	ffmpeg -nostdin -v error -i "$1" -map 0:v -map 0:a -f framemd5 - 2>"$KH_META/ffmpeg.err" | grep -v '^#' ||
		true
}

# kh_cert_b64 UA: card UA's signing certificate (auth/issued/), DER in unpadded base64url, as
# POST /v1/cards takes it.
kh_cert_b64()
{
	openssl x509 -in "auth/issued/card-$1-sign.crt" -outform DER | basenc --base64url | tr -d '=\n'
}

# kh_api METHOD PATH [BODY]: one request to the management center at 127.0.0.1:$PORT (curl);
# the status in $ST, the body in $KH_META/body.
kh_api()
{
	if [ -n "$3" ]; then
		ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X "$1" \
			-H 'Content-Type: application/json' --data "$3" "http://127.0.0.1:$PORT$2")
	else
		ST=$(curl -s --noproxy '*' -o "$KH_META/body" -w '%{http_code}' -X "$1" "http://127.0.0.1:$PORT$2")
	fi
}

# kh_expect_api METHOD PATH BODY STATUS [REGEX]: kh_api, then the status, and the body matching.
kh_expect_api()
{
	kh_api "$1" "$2" "$3"
	[ "$ST" = "$4" ] || kh_fail "$1 $2: status $ST, expected $4: $(cat "$KH_META/body")"
	if [ -n "$5" ]; then
		grep -Eq -- "$5" "$KH_META/body" || kh_fail "$1 $2: body does not match /$5/: $(cat "$KH_META/body")"
	fi
}

# kh_card_set N: an authority `auth`, a CAM (cam.card), a decoder's module (dec.card) and N cards
# c1.card .. cN.card; CARDS lists the cards' files (for kh_upload_load).
kh_card_set()
{
	kh_expect_ok authority init auth
	kh_expect_ok card issue --authority auth --role cam --out cam.card
	kh_expect_ok card issue --authority auth --role decoder --out dec.card
	CARDS=
	kh_i=1
	while [ "$kh_i" -le "$1" ]; do
		kh_expect_ok card issue --authority auth --role card --out "c$kh_i.card"
		CARDS="$CARDS c$kh_i.card"
		kh_i=$((kh_i + 1))
	done
}

# ---- the center's database: SQLite, or PostgreSQL when CTest's pg fixture runs the test ----
#   kh_db_init        sets KH_DB: center.db (in $KH_WORK), or with KH_TEST_PG_URL set (the test
#                     cluster's admin URL) a fresh database made for this test, dropped at exit
#   kh_sql SQL        SQL on $KH_DB by sqlite3 or psql: rows one per line, fields joined by '|'
#   kh_db_is_pg       true when $KH_DB is PostgreSQL (for the few checks that are about a file)
#   kh_pg_new         another fresh database on the test cluster: KH_PG_NAME, KH_PG_URL
KH_DB=
KH_PG_DB=
KH_PG_DBS=
kh_db_init()
{
	if [ -z "${KH_TEST_PG_URL:-}" ]; then
		KH_DB=center.db
		return 0
	fi
	kh_pg_new
	KH_DB=$KH_PG_URL
	KH_PG_DB=$KH_PG_NAME
}

# kh_pg_new: one more fresh database on the test cluster, dropped at exit; sets KH_PG_NAME and
# KH_PG_URL (KH_TEST_PG_URL with that database).
kh_pg_new()
{
	kh_need psql
	KH_PG_NAME=kh_cli_$(echo "$KH_TEST" | tr -c 'a-z0-9\n' '_')_$$_$(echo "$KH_PG_DBS" | wc -w)
	psql -X -q -v ON_ERROR_STOP=1 "$KH_TEST_PG_URL" -c "CREATE DATABASE $KH_PG_NAME" >/dev/null 2>"$KH_META/psql.err" ||
		kh_fail "could not create the test database: $(cat "$KH_META/psql.err")"
	KH_PG_DBS="$KH_PG_DBS $KH_PG_NAME"
	KH_PG_URL=$(printf '%s' "$KH_TEST_PG_URL" | sed "s|^\(postgres[a-z]*://[^/?]*\)/[^?]*|\1/$KH_PG_NAME|")
}

kh_db_is_pg()
{
	[ -n "$KH_PG_DB" ]
}

kh_sql()
{
	if kh_db_is_pg; then
		psql -X -q -A -t -v ON_ERROR_STOP=1 "$KH_DB" -c "$1" 2>"$KH_META/sql.err" ||
			kh_fail "psql: $1: $(cat "$KH_META/sql.err")"
	else
		sqlite3 -batch -bail "$KH_WORK/$KH_DB" "$1" 2>"$KH_META/sql.err" ||
			kh_fail "sqlite3: $1: $(cat "$KH_META/sql.err")"
	fi
}

# The test's database goes (kh_cleanup): after its processes stopped, so nothing holds it.
kh_db_drop()
{
	for kh_d in $KH_PG_DBS; do
		psql -X -q "$KH_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $kh_d WITH (FORCE)" >/dev/null 2>&1 ||
			echo "$KH_TEST: could not drop the test database $kh_d" >&2
	done
	KH_PG_DBS=
	KH_PG_DB=
}

# kh_start_serve PIDVAR [OPTIONS]: `keyhole serve --db $KH_DB --authority auth` (kh_db_init;
# center.db when it was not called) on a free loopback port, with OPTIONS; sets PORT once the
# server printed its 'listening=' line.
kh_start_serve()
{
	kh_sv=$1
	shift
	: >"$KH_META/daemon.out"
	kh_start_daemon "$kh_sv" serve --db "${KH_DB:-center.db}" --authority auth --listen 127.0.0.1:0 "$@"
	eval "kh_pid=\$$kh_sv"
	kh_wait_listening "$kh_pid"
}

# kh_wait_listening PID: wait until the serve started as PID (its stdout in $KH_META/daemon.out,
# emptied before it started) printed its 'listening=127.0.0.1:PORT' line; sets PORT.
kh_wait_listening()
{
	kh_i=0
	PORT=
	while [ -z "$PORT" ]; do
		PORT=$(sed -n 's/^listening=127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$KH_META/daemon.out")
		[ -n "$PORT" ] && break
		kill -0 "$1" 2>/dev/null || {
			sed 's/^/  daemon| /' "$KH_META/daemon.err" >&2
			kh_fail "serve exited before it was ready"
		}
		[ "$kh_i" -lt 100 ] || kh_fail "serve printed no 'listening=' line within 10 s"
		sleep 0.1
		kh_i=$((kh_i + 1))
	done
	[ "$PORT" -gt 0 ] || kh_fail "serve reported port $PORT"
}

# kh_json FILE EXPR: FILE parsed as one JSON document (by node, so strictly), then the JavaScript
# expression EXPR of it (the document is `d`) printed: a string as it is, anything else as JSON.
# A FILE that is not one JSON document, or an EXPR that throws, fails the test (in a $(...), the
# caller sees an empty string: compare the result, never only its presence).
kh_json()
{
	node -e '
		const fs = require("fs");
		let d;
		try { d = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); }
		catch (e) { console.error("not JSON: " + e.message); process.exit(3); }
		const v = (new Function("d", "return (" + process.argv[2] + ");"))(d);
		console.log(typeof v === "string" ? v : JSON.stringify(v));' "$1" "$2" ||
		kh_fail "kh_json $1 '$2': $(head -c 300 "$1")"
}

# kh_center_no_token: the operator's token, when $KH_TOKEN holds it, is in neither the output nor
# the error line of the last run.
kh_center_no_token()
{
	if [ -n "$KH_TOKEN" ] && grep -qF -- "$KH_TOKEN" "$KH_OUT" "$KH_ERR"; then
		kh_fail "the operator's token appears in what keyhole printed"
	fi
}

# kh_center ARGS...: `keyhole center ARGS` (kh_run), and the token is not printed.
kh_center()
{
	kh_run center "$@"
	kh_center_no_token
}

# kh_center_ok / kh_center_fail ARGS...: `keyhole center ARGS` exits 0 / exits 1 with one error
# line (kh_expect_ok / kh_expect_fail), and the token is not printed.
kh_center_ok()
{
	kh_expect_ok center "$@"
	kh_center_no_token
}

kh_center_fail()
{
	kh_expect_fail center "$@"
	kh_center_no_token
}
