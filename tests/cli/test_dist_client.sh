# The buyer's side of program distribution (keyhole dist list | buy | get | run), against the real
# distribution server over HTTPS (keyhole dist serve --cert --key) and two real processor daemons
# (keyhole processor serve):
#   - the catalogue lists the program published; a purchase writes the package, the licence and a
#     149-byte receipt, charges the price once and leaves no state file; the package runs, with
#     its arguments, its exit status, and its working directory;
#   - with package and licence gone, the receipt fetches them again, charged nothing (the balance
#     read from the server is unchanged), and they run again;
#   - the licence and package taken to the other processor are refused there, and so is the
#     receipt; another user's receipt is refused; a package with one byte flipped runs nothing;
#   - a purchase that fails after its charge was asked leaves only BASE.part and says to run the
#     command again; that run finishes it with the same receipt and no second debit;
#   - a failure before the charge (funds short) leaves nothing;
#   - the program's plaintext (it carries a marker) is never in the client's memory while it runs
#     (the running `dist run`, stopped and read through /proc/PID/mem), nor on the client's disk;
#   - usage errors exit 2 and create nothing.
#
# Run by CTest as `sh test_dist_client.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_dist_client
kh_need curl node od sha256sum python3 openssl

T=$KH_WORK
cd "$T" || kh_fail "cd $T"
MARK=KEYHOLE-PROGRAM-PLAINTEXT-MARKER-5d1c9e
SRV=$T/server # the vendor's side: the program in clear lives only here
C=$T/client   # the buyer's files
mkdir "$SRV" "$C" "$C/w1" "$C/w2" || kh_fail "mkdir"
# A daemon that runs as root runs programs as nobody: their working directories must be theirs.
if [ "$(id -u)" -eq 0 ]; then
	chown 65534:65534 "$C/w1" "$C/w2" || kh_fail "chown the working directories to nobody"
fi

# only_files DIR NAME...: DIR holds exactly these names.
only_files()
{
	d=$1
	shift
	want=
	[ "$#" -eq 0 ] || want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
	got=$(ls -A "$d" | sort | tr '\n' ' ')
	[ "$got" = "$want" ] || kh_fail "$d holds '$got', expected '$want'"
}

# --- usage: exit 2, one line, nothing created ------------------------------------------------------
U=http://127.0.0.1:1
for cmd in "dist list" "dist buy" "dist get" "dist run"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage dist list
kh_expect_usage dist list --server http://192.0.2.1:8480
kh_expect_usage dist list --server "$U" --server "$U"
kh_expect_usage dist list --server "$U" extra
kh_expect_usage dist list --server "$U" --program 1
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor unix:s --out "$C/x"
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor unix:s --program 0 --out "$C/x"
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor unix:s --program x1 --out "$C/x"
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor "$T/p.sock" --program 1 --out "$C/x"
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor unix:s --program 1
kh_expect_usage dist buy --server "$U" --user a --password-file pw --processor unix:s --program 1 --out "$C/x" \
	--receipt r
kh_expect_usage dist get --server "$U" --user a --password-file pw --processor unix:s --out "$C/x"
kh_expect_usage dist get --server ftp://127.0.0.1 --user a --password-file pw --processor unix:s --receipt r \
	--out "$C/x"
kh_expect_usage dist run --processor unix:s --package p
kh_expect_usage dist run --processor unix:s --package p --licence l world
kh_expect_usage dist run --package p --licence l
kh_expect_usage dist run --processor unix:s --package p --licence l --server "$U"
only_files "$C" w1 w2
only_files "$C/w1"

# --- the authority, two processors, the server, a program, two accounts ----------------------------
kh_expect_ok authority init "$T/auth"
kh_expect_ok card issue --authority "$T/auth" --role processor --out "$T/p1.card"
kh_expect_ok card issue --authority "$T/auth" --role processor --out "$T/p2.card"
kh_start_daemon P1 processor serve --module "$T/p1.card" --socket "$T/p1.sock"
kh_start_daemon P2 processor serve --module "$T/p2.card" --socket "$T/p2.sock"
kh_wait_socket "$T/p1.sock" "$P1"
kh_wait_socket "$T/p2.sock" "$P2"

kh_expect_ok dist init --authority "$T/auth" --dir "$SRV/id"
cat >"$SRV/hello.manifest" <<'EOF'
name: hello
version: 1
kind: script
interpreter: /bin/sh
EOF
# The program: its text carries the marker, which it never prints.
cat >"$SRV/hello.sh" <<EOF
# $MARK
echo "hello \$1"
case \$1 in
seven) exit 7 ;;
touch) echo ran >ran.txt ;;
wait) read -r go; echo "done \$go" ;;
esac
exit 0
EOF
kh_expect_ok dist publish --db "$SRV/dist.db" --manifest "$SRV/hello.manifest" --program "$SRV/hello.sh" --price 30
ID=$(sed -n 's/^published program \([0-9][0-9]*\) hello 1$/\1/p' "$KH_OUT")
[ -n "$ID" ] || kh_fail "publish printed no 'published program ID hello 1'"
printf 'ann secret\n' >"$C/ann.pw"
printf 'bob secret\n' >"$C/bob.pw"
chmod 600 "$C/ann.pw" "$C/bob.pw"
kh_expect_ok dist account add --db "$SRV/dist.db" --name ann --password-file "$C/ann.pw"
kh_expect_ok dist account add --db "$SRV/dist.db" --name bob --password-file "$C/bob.pw"
kh_expect_ok dist account deposit --db "$SRV/dist.db" --name ann --amount 100
kh_expect_ok dist account deposit --db "$SRV/dist.db" --name bob --amount 10

# The server speaks HTTPS (TLS 1.3), with a certificate the client trusts through --cacert.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$SRV/tls.key" \
	-out "$SRV/tls.crt" -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 2>/dev/null ||
	kh_fail "openssl could not make a TLS certificate"
chmod 600 "$SRV/tls.key"
cp "$SRV/tls.crt" "$T/ca.crt" || kh_fail "copy the CA certificate"
: >"$KH_META/daemon.out"
kh_start_daemon S dist serve --db "$SRV/dist.db" --dir "$SRV/id" --listen 127.0.0.1:0 \
	--cert "$SRV/tls.crt" --key "$SRV/tls.key"
kh_wait_listening "$S"
URL=https://127.0.0.1:$PORT
CA=$T/ca.crt
# without --cacert the client cannot verify the server, and refuses it
kh_expect_fail dist list --server "$URL"

# balance NAME: the account's balance as the server reads it (GET /v1/account).
balance()
{
	st=$(curl -s --noproxy '*' --cacert "$CA" -o "$KH_META/login" -w '%{http_code}' -H 'Content-Type: application/json' \
		--data "{\"name\":\"$1\",\"password\":\"$1 secret\"}" "$URL/v1/sessions")
	[ "$st" = 201 ] || kh_fail "log in as $1: status $st"
	tok=$(kh_json "$KH_META/login" d.token)
	st=$(curl -s --noproxy '*' --cacert "$CA" -o "$KH_META/account" -w '%{http_code}' -H "Authorization: Bearer $tok" \
		"$URL/v1/account")
	[ "$st" = 200 ] || kh_fail "GET /v1/account as $1: status $st"
	kh_json "$KH_META/account" d.balance
}

buy() # USER PROCESSOR BASE
{
	kh_run dist buy --server "$URL" --cacert "$CA" --user "$1" --password-file "$C/$1.pw" --processor "unix:$T/$2.sock" \
		--program "$ID" --out "$3"
}
get() # USER PROCESSOR RECEIPT BASE
{
	kh_run dist get --server "$URL" --cacert "$CA" --user "$1" --password-file "$C/$1.pw" --processor "unix:$T/$2.sock" \
		--receipt "$3" --out "$4"
}
run() # PROCESSOR BASE [--workdir DIR] -- ARGS
{
	p=$1
	b=$2
	shift 2
	kh_run dist run --processor "unix:$T/$p.sock" --package "$b.khpk" --licence "$b.lic" "$@"
}

# --- the catalogue --------------------------------------------------------------------------------
kh_expect_ok dist list --server "$URL" --cacert "$CA"
kh_out_has "^$ID hello 1 30$"
[ "$(wc -l <"$KH_OUT")" -eq 1 ] || kh_fail "dist list printed more than the one program"

# --- buy, run ---------------------------------------------------------------------------------------
mkdir "$C/a"
buy ann p1 "$C/a/hello"
[ "$KH_RC" -eq 0 ] || kh_fail "dist buy: exit $KH_RC: $(cat "$KH_ERR")"
kh_out_has "^bought program $ID version 1 price 30 receipt [0-9a-f]{32} balance 70$"
RID=$(sed -n 's/.* receipt \([0-9a-f]*\) .*/\1/p' "$KH_OUT")
only_files "$C/a" hello.khpk hello.lic hello.receipt
[ "$(kh_size "$C/a/hello.receipt")" -eq 149 ] || kh_fail "the receipt is not 149 bytes"
[ "$(od -An -tx1 -j5 -N16 "$C/a/hello.receipt" | tr -d ' \n')" = "$RID" ] ||
	kh_fail "the receipt id printed is not bytes 5..20 of the receipt"
[ "$(balance ann)" = 70 ] || kh_fail "ann's balance is not 70 after one purchase"

run p1 "$C/a/hello" -- world
[ "$KH_RC" -eq 0 ] || kh_fail "dist run: exit $KH_RC: $(cat "$KH_ERR")"
[ "$(cat "$KH_OUT")" = "hello world" ] || kh_fail "the program printed '$(cat "$KH_OUT")'"
run p1 "$C/a/hello" -- seven
[ "$KH_RC" -eq 7 ] || kh_fail "dist run: exit $KH_RC, the program's was 7"
run p1 "$C/a/hello" --workdir "$C/w1" -- touch
[ "$KH_RC" -eq 0 ] || kh_fail "dist run --workdir: exit $KH_RC: $(cat "$KH_ERR")"
[ "$(cat "$C/w1/ran.txt")" = ran ] || kh_fail "the program did not write in its working directory"

# --- fetched again on the receipt, charged nothing --------------------------------------------------
rm "$C/a/hello.khpk" "$C/a/hello.lic"
get ann p1 "$C/a/hello.receipt" "$C/a/again"
[ "$KH_RC" -eq 0 ] || kh_fail "dist get: exit $KH_RC: $(cat "$KH_ERR")"
kh_out_has "^fetched program $ID version 1 receipt $RID charged 0$"
cmp -s "$C/a/hello.receipt" "$C/a/again.receipt" || kh_fail "dist get wrote another receipt"
[ "$(balance ann)" = 70 ] || kh_fail "fetching again moved money"
run p1 "$C/a/again" -- again
[ "$KH_RC" -eq 0 ] && [ "$(cat "$KH_OUT")" = "hello again" ] || kh_fail "the package fetched again does not run"

# --- another processor, another user, a flipped byte --------------------------------------------
run p2 "$C/a/again" -- world
[ "$KH_RC" -eq 1 ] || kh_fail "another processor's licence: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "^keyhole: dist run: .*licence"
[ ! -s "$KH_OUT" ] || kh_fail "another processor's licence ran something"
mkdir "$C/p2"
get ann p2 "$C/a/hello.receipt" "$C/p2/hello"
[ "$KH_RC" -eq 1 ] || kh_fail "a receipt on another processor: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "receipt"
only_files "$C/p2"
mkdir "$C/b"
get bob p1 "$C/a/hello.receipt" "$C/b/stolen"
[ "$KH_RC" -eq 1 ] || kh_fail "another user's receipt: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "receipt"
only_files "$C/b"
[ "$(balance bob)" = 10 ] || kh_fail "a refused receipt moved bob's money"

cp "$C/a/again.khpk" "$C/a/flip.khpk"
cp "$C/a/again.lic" "$C/a/flip.lic"
kh_flip_byte "$C/a/flip.khpk" $(($(kh_size "$C/a/flip.khpk") - 20))
run p1 "$C/a/flip" --workdir "$C/w2" -- touch
[ "$KH_RC" -eq 1 ] || kh_fail "a flipped package: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "^keyhole: dist run: .*(authentication tag|chunk)"
[ ! -s "$KH_OUT" ] && [ ! -e "$C/w2/ran.txt" ] || kh_fail "a flipped package ran"

# --- funds short: refused before any charge, nothing left -----------------------------------------
buy bob p1 "$C/b/hello"
[ "$KH_RC" -eq 1 ] || kh_fail "a purchase beyond the balance: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "insufficient_funds"
only_files "$C/b"

# --- a failure after the charge: BASE.part, then the same command finishes it ---------------------
mkdir "$C/c" "$C/c/hello.lic" # the licence cannot be written: the purchase fails after its charge
buy ann p1 "$C/c/hello"
[ "$KH_RC" -eq 1 ] || kh_fail "a purchase whose licence cannot be written: exit $KH_RC, expected 1"
kh_check_one_line
kh_err_has "run the same command again to finish"
only_files "$C/c" hello.lic hello.part
[ "$(balance ann)" = 40 ] || kh_fail "the charge was not made once"
kh_no_tmp_files "$C/c"
rmdir "$C/c/hello.lic"
buy ann p1 "$C/c/hello"
[ "$KH_RC" -eq 0 ] || kh_fail "finishing the purchase: exit $KH_RC: $(cat "$KH_ERR")"
kh_out_has "^bought program $ID version 1 price 30 receipt [0-9a-f]{32} balance 40$"
only_files "$C/c" hello.khpk hello.lic hello.receipt
[ "$(balance ann)" = 40 ] || kh_fail "finishing a purchase charged it again"
run p1 "$C/c/hello" -- finished
[ "$KH_RC" -eq 0 ] && [ "$(cat "$KH_OUT")" = "hello finished" ] || kh_fail "the finished purchase does not run"
# a receipt already there is never replaced by another purchase
buy ann p1 "$C/c/hello"
[ "$KH_RC" -eq 1 ] || kh_fail "a purchase over another receipt: exit $KH_RC, expected 1"
kh_check_one_line
[ "$(balance ann)" = 40 ] || kh_fail "a purchase refused up front moved money"

# --- the plaintext is never in the client's memory, nor on its disk -------------------------------
# The program waits for a line on its standard input, a FIFO the test holds open (fd 3): were the
# test to end early, the FIFO's end of file ends the program too.
mkfifo "$KH_META/go" || kh_fail "mkfifo"
exec 3<>"$KH_META/go"
"$KEYHOLE" dist run --processor "unix:$T/p1.sock" --package "$C/a/again.khpk" --licence "$C/a/again.lic" \
	-- wait >"$KH_META/run.out" 2>"$KH_META/run.err" <"$KH_META/go" &
R=$!
KH_PIDS="$KH_PIDS $R"
i=0
until grep -q '^hello wait$' "$KH_META/run.out"; do
	kill -0 "$R" 2>/dev/null || kh_fail "dist run ended early: $(cat "$KH_META/run.err")"
	[ "$i" -lt 100 ] || kh_fail "the program did not start within 10 s"
	sleep 0.1
	i=$((i + 1))
done
# The program runs now, and the client waits for it. Its memory is searched in place, stopped,
# through /proc/PID/mem (no image is written to disk: a sanitizer's shadow would make one huge):
# every readable mapping of up to 64 MiB, which holds all it allocated and read.
python3 - "$R" "$MARK" "$T/p1.sock" >"$KH_META/scan" 2>"$KH_META/scan.err" <<'EOF' ||
import os, signal, sys
pid, needles = int(sys.argv[1]), [n.encode() for n in sys.argv[2:]]
found = [0] * len(needles)
os.kill(pid, signal.SIGSTOP)
try:
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            f = line.split()
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if "r" not in f[1] or hi - lo > 64 << 20:
                continue
            try:
                mem.seek(lo)
                b = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            for i, n in enumerate(needles):
                found[i] += b.count(n)
finally:
    os.kill(pid, signal.SIGCONT)
print(" ".join(str(x) for x in found))
EOF
	kh_fail "reading the client's memory: $(cat "$KH_META/scan.err")"
read -r n_mark n_sock <"$KH_META/scan"
# the memory read is the client's: it holds the socket path it was given (the scan is not vacuous)
[ "${n_sock:-0}" -gt 0 ] || kh_fail "the client's memory does not hold its own arguments: the scan saw nothing"
[ "${n_mark:-1}" -eq 0 ] || kh_fail "the program's plaintext is in the client's memory ($n_mark times)"
echo go >&3
exec 3>&-
wait "$R"
rc=$?
[ "$rc" -eq 0 ] || kh_fail "the waiting run exited $rc: $(cat "$KH_META/run.err")"
grep -q '^done go$' "$KH_META/run.out" || kh_fail "the waiting program did not finish"
# nothing the client wrote holds the plaintext
if grep -rlaF "$MARK" "$C"; then
	kh_fail "the program's plaintext reached the client's disk"
fi
# (and the test can see it where it is: the vendor's copy)
grep -qaF "$MARK" "$SRV/hello.sh" || kh_fail "the marker is not in the program published"

kh_stop "$S" TERM
kh_note "ok"
