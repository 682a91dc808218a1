# The docs are tested: a doc that drifts from the code fails here.
#
# 1. The docs stand alone: every README.md and docs/**/*.md links only to files that exist (a
#    markdown link, or a repository path in backquotes such as `docs/protocols/cas.md`), never to
#    a page outside the repository, and mentions no design document that is not in it (the
#    pattern below names them) nor the project's issues ("issue 4").
# 2. The error table of docs/operator-guide.md section 2 lists every error code the management
#    center answers with beside the registry's (the codes written in src/center/sms/ and
#    src/net/http_*.c: the server, its answers, its connections).
# 3. The shell blocks of README.md, then those of docs/operator-guide.md, run in order, each
#    document in one shell (dash, `set -e`) in a fresh empty directory, with `keyhole` on the
#    PATH resolving to $KEYHOLE. What the test changes and adds, and only that:
#    - Every 127.0.0.1:PORT the blocks name gets a free loopback port instead.
#    - With KH_TEST_PG_URL set (cli/test_docs_pg), `--db center.db` (and `--from center.db`) names a fresh PostgreSQL
#      database instead, one per document: the center the docs drive then runs on PostgreSQL.
#    - After a line that starts `keyhole serve ... &` (or `card serve`, `dist serve`, `processor serve`,
#      `escrow serve`, `escrow secmod`, `keycenter serve`, `ecmg serve`), the script
#      waits until that daemon answers (it fails if the daemon exits); what is still running
#      at the end is stopped by its pid.
#    - `curl` fails on an HTTP error (--fail-with-body), unless the line right after the
#      command shows the error the doc expects, as `# {"error":{"code":"CODE"...`: then it must
#      fail with that code. A curl that fails inside a pipe or a $(...) is caught too.
#    A block preceded by the line `<!-- not run: REASON -->` is skipped (make demo, make check,
#    a build). A block preceded by `<!-- needs pcscd -->` runs with a pcscd the test starts in
#    its own namespaces (tests/cli/pcsc_lib.sh), whose vpcd readers are named as Debian's
#    ("Virtual PCD 00 00" and "00 01") on a free pair of ports that `--vpcd 35963` and
#    `--vpcd 35964` are rewritten to; where no pcscd can run, such a block is skipped with a note. Then the state the docs promise is checked against the centers they left
#    running: the invoices, the replaced card recovered, the new card authorised.
#
# Run by CTest as `sh test_docs.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
. "$KH_SOURCE_DIR/tests/cli/pcsc_lib.sh"
kh_pcsc_private "$0"
kh_init test_docs
# stop_doc_daemons: stop what the docs left running: the daemons whose pids were noted when they
# started, and any other process still working inside this test's directory (only processes
# this test started can be there).
stop_doc_daemons()
{
	case $KH_TMP in
	/tmp/keyhole-test.?*) ;;
	*) return 0 ;;
	esac
	for dp in $(cat "$KH_META/doc.pids" 2>/dev/null) /proc/[0-9]*; do
		dp=${dp#/proc/}
		[ "$dp" != "$$" ] || continue
		case $(readlink "/proc/$dp/cwd" 2>/dev/null) in
		"$KH_TMP"/*) ;;
		*) continue ;;
		esac
		kill -TERM "$dp" 2>/dev/null || continue
		di=0
		while kill -0 "$dp" 2>/dev/null && [ "$di" -lt 50 ]; do
			sleep 0.1
			di=$((di + 1))
		done
		kill -0 "$dp" 2>/dev/null && kill -KILL "$dp" 2>/dev/null
	done
	: >"$KH_META/doc.pids" 2>/dev/null
}

# whatever ends the test, the daemons the docs started are stopped before the directory goes
# shellcheck disable=SC2154 # kh_docs_rc is set inside the trap
trap 'kh_docs_rc=$?; stop_doc_daemons; (exit "$kh_docs_rc"); kh_cleanup' EXIT
kh_need curl openssl basenc ffmpeg awk sed grep od timeout
S=$KH_SOURCE_DIR

# Every README.md and every markdown file under docs/ (not build trees, not installed tools).
find "$S" \( -path "$S/.git" -o -path "$S/build*" -o -path "$S/tools" -o -path "$S/fuzz/out" \) -prune -o \
	\( -name README.md -o -path "$S/docs/*.md" \) -type f -print | sort >"$KH_META/docs"
grep -qx "$S/README.md" "$KH_META/docs" || kh_fail "README.md not found under $S"
grep -qx "$S/docs/operator-guide.md" "$KH_META/docs" || kh_fail "docs/operator-guide.md not found"

# ------------------------------------------------------------------ 1. the docs stand alone

: >"$KH_META/problems"
while read -r f; do
	rel=${f#"$S"/}
	dir=$(dirname "$f")
	# markdown links [text](target): outside the repository never; inside, the file must exist
	grep -no '\]([^)]*)' "$f" | sed 's/^\([0-9]*\):](\(.*\))$/\1 \2/' | while read -r ln target; do
		target=${target%% *}
		case $target in
		http:* | https:* | ftp:* | mailto:* | //*)
			echo "$rel:$ln: links outside the repository: $target" ;;
		'#'*) ;;
		*)
			p=${target%%#*}
			[ -e "$dir/$p" ] || echo "$rel:$ln: link to a file that does not exist: $target" ;;
		esac
	done >>"$KH_META/problems"
	# repository paths in backquotes: relative to the repository or to the doc's folder
	grep -noE '`[A-Za-z0-9_./-]+`' "$f" | tr -d '`' | while IFS=: read -r ln p; do
		case $p in
		docs/* | src/* | include/* | tests/* | scripts/* | bench/* | fuzz/* | *.md) ;;
		*) continue ;;
		esac
		case $p in
		*/issued/* | */node_modules/*) continue ;;
		esac
		[ -e "$S/$p" ] || [ -e "$dir/$p" ] || echo "$rel:$ln: names a file that does not exist: $p"
	done >>"$KH_META/problems"
done <"$KH_META/docs"
# Words: the design documents and the issues are not the reader's. The man pages and the
# OpenAPI file are held to this too.
{
	cat "$KH_META/docs"
	find "$S/docs" -type f \( -name '*.1' -o -name '*.yaml' \) | sort
} | while read -r f; do
	rel=${f#"$S"/}
	grep -nE 'DESIGN\.md|PROTOCOLS\.md|\.\./shared|STYLE\.md' "$f" | sed "s|^|$rel:|; s|\$| (a document outside the repository)|"
	grep -niE '\bissues? +#?[0-9]+|\b(the|this|that|next|an?) issue\b|\bissue'"'"'s\b|^#+ .*\bissues?\b' "$f" |
		sed "s|^|$rel:|; s|\$| (the docs speak to users, not of the project's issues)|"
done >>"$KH_META/problems"
if [ -s "$KH_META/problems" ]; then
	sed 's/^/  /' "$KH_META/problems" >&2
	kh_fail "the docs do not stand alone ($(wc -l <"$KH_META/problems") problem(s) above)"
fi

# ------------------------------------------------------------------ 2. the error table

G=$S/docs/operator-guide.md
# the table of section 2, up to the next section
sed -n '/^## 2\. /,/^## 3\. /p' "$G" | grep '^|' >"$KH_META/errtable"
[ -s "$KH_META/errtable" ] || kh_fail "docs/operator-guide.md: no error table in section 2"
{
	grep -rhoE 'kh__sms_why\([^,]+, *[A-Za-z_]+, *"[a-z_]+"' "$S/src/center/sms" | sed -E 's/.*"([a-z_]+)"$/\1/'
	grep -hv '^ *\(/\*\|\*\)' "$S"/src/net/http_*.c | # code, not comments
		grep -oE '"code", "[a-z_]+"|\<[45][0-9][0-9], *"[a-z]+(_[a-z]+)*"' |
		sed -E 's/.*"([a-z_]+)"$/\1/'
	# and the registry's codes an operator meets: the request, the token, the card's
	# certificate, the state, the idempotency key, the store
	for code in invalid_argument malformed too_large unauthorised not_found certificate \
		certificate_role certificate_expired exists idempotency_mismatch database database_busy; do
		grep -q "\"$code\"," "$S/include/keyhole/err.h" || kh_fail "include/keyhole/err.h has no code $code"
		echo "$code"
	done
} | sort -u >"$KH_META/codes"
[ -s "$KH_META/codes" ] || kh_fail "found no error codes in src/center/sms/ and src/net/http_*.c"
while read -r code; do
	grep -q "\`$code\`" "$KH_META/errtable" || echo "$code"
done <"$KH_META/codes" >"$KH_META/missing"
[ ! -s "$KH_META/missing" ] ||
	kh_fail "docs/operator-guide.md section 2 does not list the code(s): $(tr '\n' ' ' <"$KH_META/missing")"
# and each code the table names is one the center can answer: the registry's or those above
grep -oE '`[a-z_]+`' "$KH_META/errtable" | tr -d '`' | sort -u | while read -r code; do
	grep -qx "$code" "$KH_META/codes" || grep -q "\"$code\"," "$S/include/keyhole/err.h" || echo "$code"
done >"$KH_META/unknown"
[ ! -s "$KH_META/unknown" ] ||
	kh_fail "docs/operator-guide.md section 2 names code(s) the center never answers: $(tr '\n' ' ' <"$KH_META/unknown")"

# ------------------------------------------------------------------ 3. the shell blocks run

BIN=$KH_TMP/bin
mkdir "$BIN" || kh_fail "mkdir $BIN"
ln -s "$KEYHOLE" "$BIN/keyhole" || kh_fail "ln -s $KEYHOLE"
: >"$KH_META/doc.pids"
: >"$KH_META/used.ports"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
NO_PROXY='*'
no_proxy='*'
export NO_PROXY no_proxy

# pcsc_for_docs: a pcscd for the blocks marked <!-- needs pcscd --> (PCSC=1 and VP, the first
# reader's port), started outside the docs' directories so that nothing stops it but the end.
PCSC=0
VP=
pcsc_for_docs()
{
	if ! command -v pcscd >/dev/null 2>&1 || [ ! -e "$KH_VPCD_LIB" ] || ! command -v pcsc_scan >/dev/null 2>&1 ||
		! command -v scriptor >/dev/null 2>&1; then
		kh_note "no pcscd with the vpcd driver: the blocks that need pcscd are skipped"
		return 0
	fi
	if [ -z "$KH_PCSC_PRIVATE" ]; then
		kh_note "no private namespace for a pcscd: the blocks that need pcscd are skipped"
		return 0
	fi
	mkdir -p /run/pcscd "$KH_META/pcsc" || return 0
	VP=$(kh_pcsc_free_port)
	echo "$VP" >>"$KH_META/used.ports"
	echo $((VP + 1)) >>"$KH_META/used.ports"
	printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x%X\nLIBPATH %s\nCHANNELID 0x%X\n' \
		"$VP" "$KH_VPCD_LIB" "$VP" >"$KH_META/pcsc/vpcd"
	(cd / && exec pcscd -f -c "$KH_META/pcsc") >"$KH_META/pcscd.log" 2>&1 </dev/null &
	KH_PIDS="$KH_PIDS $!"
	pi=0
	until timeout 5 pcsc_scan -r 2>/dev/null | grep -q "Virtual PCD 00 00"; do
		if [ "$pi" -ge 50 ]; then
			kh_note "pcscd did not start: the blocks that need pcscd are skipped"
			sed 's/^/  pcscd| /' "$KH_META/pcscd.log"
			return 0
		fi
		sleep 0.1
		pi=$((pi + 1))
	done
	PCSC=1
}

# doc_blocks FILE: the shell blocks of FILE that run, each after a line '#@block FILE:LINE'.
doc_blocks()
{
	awk -v name="${1#"$S"/}" -v pcsc="$PCSC" '
		/^```/ && !inblock {
			lang = substr($0, 4); sub(/[ \t].*/, "", lang)
			inblock = 1; start = NR
			run = (lang == "sh" || lang == "bash" || lang == "shell")
			if (run && prev ~ /^<!-- not run: [^ ].*-->[ \t]*$/) run = 0
			if (run && prev ~ /^<!-- needs pcscd -->[ \t]*$/ && !pcsc) { print "#@skipped " name ":" NR; run = 0 }
			if (run && prev ~ /^<!-- not run/) { print "#@bad " name ":" NR ": malformed marker: " prev; run = 0 }
			if (run) print "#@block " name ":" NR
			next
		}
		/^```[ \t]*$/ && inblock { inblock = 0; prev = ""; next }
		inblock { if (run) print; next }
		/[^ \t]/ { prev = $0 }
	' "$1"
}

# free_port: a loopback TCP port below the kernel's ephemeral range that no socket here uses.
free_port()
{
	while :; do
		fp=$(($(od -An -tu2 -N2 /dev/urandom | tr -d ' \n') % 12000 + 20000))
		grep -qx "$fp" "$KH_META/used.ports" && continue
		fh=$(printf '%04X' "$fp")
		cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$fh" '$2 ~ (":" h "$") { f = 1 } END { exit !f }' &&
			continue
		echo "$fp" >>"$KH_META/used.ports"
		echo "$fp"
		return
	done
}

# doc_script FILE OUT: the blocks of FILE as one script, ports rewritten, waits and curl checks
# added (see the head of this file).
doc_script()
{
	doc_blocks "$1" >"$KH_META/raw"
	if grep '^#@bad ' "$KH_META/raw" >&2; then
		kh_fail "a not-run marker must read '<!-- not run: REASON -->'"
	fi
	grep -q '^#@block ' "$KH_META/raw" || kh_fail "${1#"$S"/}: no shell block to run"
	sed -n 's/^#@skipped /skipped, no pcscd: the block at /p' "$KH_META/raw" | while read -r l; do kh_note "$l"; done
	sed -i '/^#@skipped /d' "$KH_META/raw"
	: >"$KH_META/sed"
	: >"$KH_META/ports"
	for dp in $(grep -oE '127\.0\.0\.1:[1-9][0-9]*' "$KH_META/raw" | sed 's/.*://' | sort -u); do
		np=$(free_port)
		echo "$dp $np" >>"$KH_META/ports"
		printf 's/127\\.0\\.0\\.1:%s\\b/127.0.0.1:%s/g\n' "$dp" "$np" >>"$KH_META/sed"
	done
	# The vpcd readers of the test's pcscd.
	if [ "$PCSC" = 1 ]; then
		printf 's/--vpcd 35963\\b/--vpcd %s/g\ns/--vpcd 35964\\b/--vpcd %s/g\n' "$VP" $((VP + 1)) >>"$KH_META/sed"
	fi
	# On PostgreSQL (cli/test_docs_pg): the doc's center.db is a database of its own.
	if [ -n "${KH_TEST_PG_URL:-}" ]; then
		kh_pg_new
		printf 's#--\\(db\\|from\\) center\\.db\\b#--\\1 "%s"#g\n' "$(printf '%s' "$KH_PG_URL" | sed 's/[&#\\]/\\&/g')" \
			>>"$KH_META/sed"
	fi
	: >"$KH_META/structure"
	sed -f "$KH_META/sed" "$KH_META/raw" | awk -v errs="$KH_META/structure" '
		# a logical command (continuation lines joined) is complete: what is it?
		function analyse() {
			daemon = 0
			if (logical ~ /(^|[;&|({][ \t]*)keyhole (((card|dist|processor|escrow|keycenter|ecmg) )?serve|escrow secmod) / &&
			    logical ~ /[^&]&[ \t]*($|#|[A-Za-z_][A-Za-z_0-9]*=\$!)/) {
				daemon = 1
				if (logical ~ /keyhole serve / && logical !~ /--listen[ =]127\.0\.0\.1:[1-9]/)
					print where ": keyhole serve without --listen 127.0.0.1:PORT (the test gives each port a free one)" > errs
				pending = where
			} else if (logical ~ /^[ \t]*[A-Za-z_][A-Za-z_0-9]*=/ && logical !~ /\$\(|`/) {
				# plain assignments (PID=$!, C=URL) may come before the wait
			} else if (pending != "" && logical ~ /(^|[ \t;])until |--retry-connrefused/) {
				pending = ""
			} else if (pending != "") {
				print pending ": a daemon started here is used before the block waits until it answers" > errs
				pending = ""
			}
		}
		function flush(   i) {
			if (!n) return
			if (expect != "") print "KH_DOC_EXPECT=" expect
			for (i = 1; i <= n; i++) print buf[i]
			if (daemon) print "kh_doc_started $!"
			n = 0; expect = ""; daemon = 0; cont = 0
		}
		function endblock() {
			if (pending != "") print pending ": a daemon started here is never waited for" > errs
			pending = ""
		}
		/^#@block / {
			flush(); endblock(); block = substr($0, 9); sub(/:[0-9]+$/, "", block); base = substr($0, 9)
			sub(/^.*:/, "", base); print "kh_doc_block \047" substr($0, 9) "\047"; nr = 0; next
		}
		{ nr++; where = block ":" (base + nr) }
		cont { buf[++n] = $0; logical = logical " " $0; cont = ($0 ~ /\\$/); if (!cont) analyse(); next }
		/^[ \t]*# *\{"error": *\{"code": *"[a-z_]+"/ && n {
			c = $0; sub(/^[^{]*\{"error": *\{"code": *"/, "", c); sub(/".*/, "", c)
			expect = c; flush(); print; next
		}
		{ flush() }
		/^[ \t]*(#.*)?$/ { print; next }
		{ n = 1; buf[1] = $0; logical = $0; cont = ($0 ~ /\\$/); if (!cont) analyse() }
		END { flush(); endblock() }
	' >"$KH_META/body.sh"
	if [ -s "$KH_META/structure" ]; then
		sed 's/^/  /' "$KH_META/structure" >&2
		kh_fail "${1#"$S"/}: a daemon in a block is not started or waited for as a reader needs"
	fi
	{
		cat <<EOF
set -e
PATH='$BIN':\$PATH
KH_DOC_META='$KH_META'
EOF
		cat <<'EOF'
KH_DOC_EXPECT=
kh_doc_block()
{
	echo "$1" >"$KH_DOC_META/doc.block"
}
kh_doc_bad()
{
	echo "$*" >>"$KH_DOC_META/doc.failed"
	echo "DOC: $*" >&2
}
# curl, failing on an HTTP error unless the doc shows the one it expects
curl()
{
	kh_doc_e=$KH_DOC_EXPECT
	KH_DOC_EXPECT=
	kh_doc_o=$(mktemp "$KH_DOC_META/curl.XXXXXX")
	kh_doc_rc=0
	command curl --noproxy '*' --fail-with-body "$@" >"$kh_doc_o" || kh_doc_rc=$?
	cat "$kh_doc_o"
	kh_doc_body=$(head -c 300 "$kh_doc_o")
	rm -f "$kh_doc_o"
	if [ -n "$kh_doc_e" ]; then
		if [ "$kh_doc_rc" -ne 22 ]; then
			kh_doc_bad "curl $*: the doc expects error $kh_doc_e, got exit $kh_doc_rc"
			return 1
		fi
		if ! printf '%s' "$kh_doc_body" | grep -q "\"code\": *\"$kh_doc_e\""; then
			kh_doc_bad "curl $*: the doc expects error $kh_doc_e, got: $kh_doc_body"
			return 1
		fi
		return 0
	fi
	if [ "$kh_doc_rc" -ne 0 ]; then
		kh_doc_bad "curl $*: exit $kh_doc_rc: $kh_doc_body"
		return "$kh_doc_rc"
	fi
}
# kh_doc_started PID: a daemon the doc started, stopped by the test at the end
kh_doc_started()
{
	echo "$1" >>"$KH_DOC_META/doc.pids"
}
EOF
		cat "$KH_META/body.sh"
	} >"$2"
}

# run_doc FILE DIR: run the blocks of FILE in the new directory DIR (what they print in
# $KH_META/DIR-NAME.out and .err).
run_doc()
{
	mkdir "$2" || kh_fail "mkdir $2"
	rd_log=$KH_META/$(basename "$2")
	doc_script "$1" "$rd_log.sh"
	: >"$KH_META/doc.failed"
	: >"$KH_META/doc.block"
	# a watchdog only: a doc waiting forever for a daemon that died would hang the suite
	(cd "$2" && timeout -s KILL 1200 sh -x "$rd_log.sh" >"$rd_log.out" 2>"$rd_log.err" </dev/null)
	rc=$?
	if [ "$rc" -ne 0 ] || [ -s "$KH_META/doc.failed" ]; then
		echo "  --- the last lines the doc's commands printed:" >&2
		tail -n 15 "$rd_log.out" | sed 's/^/  out| /' >&2
		echo "  --- the trace and errors (sh -x), daemons' log lines left out:" >&2
		grep -v '^ts=' "$rd_log.err" | tail -n 30 | sed 's/^/  err| /' >&2
		if [ -s "$KH_META/doc.failed" ]; then
			kh_fail "${1#"$S"/}: in the block at $(cat "$KH_META/doc.block"): $(head -n 1 "$KH_META/doc.failed")"
		fi
		kh_fail "${1#"$S"/}: the block at $(cat "$KH_META/doc.block") failed (exit $rc)"
	fi
}

# api URL: GET a doc's center; the body in $KH_META/api
api()
{
	command curl -sk --noproxy '*' --fail-with-body -o "$KH_META/api" "$@" ||
		kh_fail "GET $*: $(cat "$KH_META/api" 2>/dev/null)"
}

# README.md: the quick tour, then the management center
run_doc "$S/README.md" "$KH_WORK/readme"
kh_note "README.md: every block ran"
# the center it left running holds card 2's purchase of event 55, invoiced once at 30
RP=$(awk '$1 == 8480 { print $2 }' "$KH_META/ports")
[ -n "$RP" ] || kh_fail "README.md: no center on 127.0.0.1:8480"
api "http://127.0.0.1:$RP/v1/subscribers/1/invoices"
grep -q '"event_id":55,"price":30,' "$KH_META/api" ||
	kh_fail "README.md: the center did not invoice event 55 at 30: $(cat "$KH_META/api")"
[ "$(grep -o '"event_id"' "$KH_META/api" | wc -l)" -eq 1 ] ||
	kh_fail "README.md: not exactly one invoice: $(cat "$KH_META/api")"
# on PostgreSQL, that center's rows are in the database made for it, not in a file
if [ -n "${KH_TEST_PG_URL:-}" ]; then
	[ ! -e "$KH_WORK/readme/center.db" ] || kh_fail "README.md: --db center.db was not moved to PostgreSQL"
	n=$(psql -X -A -t "$KH_PG_URL" -c 'SELECT count(*) FROM invoices' 2>&1)
	[ "$n" = 1 ] || kh_fail "README.md on PostgreSQL: $n invoice row(s) in its database, expected 1"
fi
stop_doc_daemons

# docs/operator-guide.md, from an empty directory
pcsc_for_docs
run_doc "$G" "$KH_WORK/guide"
kh_note "docs/operator-guide.md: every block ran"
# the HTTPS center of section 12 still runs on the same database
GP=$(awk '$1 == 8443 { print $2 }' "$KH_META/ports")
[ -n "$GP" ] || kh_fail "docs/operator-guide.md: no center on 127.0.0.1:8443"
TOKEN=$(cat "$KH_WORK/guide/operator.token")
UA1=$("$KEYHOLE" card info --card "$KH_WORK/guide/card1.card" | sed -n 's/^unique address: //p')
UA2=$("$KEYHOLE" card info --card "$KH_WORK/guide/card2.card" | sed -n 's/^unique address: //p')
api -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GP/v1/cards/$UA1"
grep -q '"state":"closed"' "$KH_META/api" && grep -q '"closed_reason":"recovered"' "$KH_META/api" ||
	kh_fail "operator guide section 10: card 1 is not closed as recovered: $(cat "$KH_META/api")"
api -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GP/v1/cards/$UA2"
grep -q '"state":"active"' "$KH_META/api" && grep -q '"export_authorised":true' "$KH_META/api" ||
	kh_fail "operator guide section 10: card 2 is not active and authorised: $(cat "$KH_META/api")"
api -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GP/v1/subscribers/1/invoices"
[ "$(grep -o '"event_id":55,"price":30,' "$KH_META/api" | wc -l)" -eq 1 ] ||
	kh_fail "operator guide section 10: event 55 not invoiced exactly once at 30: $(cat "$KH_META/api")"
# section 16: the creation sent to two centers with one key made one subscriber
api -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GP/v1/subscribers?name_prefix=Ann"
[ "$(grep -o '"name":"Ann"' "$KH_META/api" | wc -l)" -eq 1 ] ||
	kh_fail "operator guide section 16: not exactly one subscriber Ann: $(cat "$KH_META/api")"
stop_doc_daemons

kh_note "ok"
