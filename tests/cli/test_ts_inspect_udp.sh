#!/bin/sh
# keyhole ts inspect udp://: on loopback, the reader started first with --packets N, a clip sent
# in datagrams of 7 packets: the report counts exactly N packets and finds the clip's programme
# and PIDs, as the file's own report does; RTP (rtp=1) too. --duration with nothing sent ends
# after its time with "no packet received" (exit 1). Refusals: udp:// without a limit, a limit
# without udp://, a malformed URL, out-of-range values.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init ts_inspect_udp
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need ss python3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=2:size=96x64:rate=25 \
	-f lavfi -i sine=frequency=440:duration=2 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts || kh_fail "ffmpeg"
kh_expect_ok ts inspect clip.ts
grep '^programme \|^  component ' "$KH_OUT" >file.prog
[ -s file.prog ] || kh_fail "the clip's own report names no programme"

# ---- refusals ----
kh_expect_usage ts inspect udp://127.0.0.1:5000
kh_err_has 'give --duration or --packets'
kh_expect_usage ts inspect clip.ts --packets 10
kh_err_has 'goes with udp://'
kh_expect_usage ts inspect clip.ts --duration 1
kh_expect_usage ts inspect udp://127.0.0.1:5000 --duration 0
kh_expect_usage ts inspect udp://127.0.0.1:5000 --packets 0
kh_expect_usage ts inspect udp://127.0.0.1:5000 --duration 86401
kh_expect_usage ts inspect udp://127.0.0.1:5000 --packets 1 --packets 2
kh_run ts inspect "udp://127.0.0.1:5000?color=red" --packets 1
[ "$KH_RC" -eq 2 ] || kh_fail "an unknown URL key: exit $KH_RC, want 2"
kh_expect_usage ts inspect ftp://example/x.ts

free_port()
{
	python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_bound PID PORT: until the reader's socket is bound.
wait_bound()
{
	i=0
	until ss -Hlun "sport = :$2" | grep -q .; do
		kill -0 "$1" 2>/dev/null || { cat "$KH_META/reader.err" >&2; kh_fail "the reader exited before binding"; }
		[ "$i" -lt 100 ] || kh_fail "the reader did not bind port $2 within 10 s"
		sleep 0.1
		i=$((i + 1))
	done
}

# send PORT RTP: the clip in datagrams of 7 packets, each with an RTP header when RTP is 1; the
# clip is sent three times so that the reader has more than it asked for, whatever the kernel
# drops (the count is not asserted beyond --packets).
send()
{
	python3 - "$1" "$2" <<'PY' || kh_fail "could not send the clip"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d = open("clip.ts", "rb").read()
seq = 0
for rep in range(3):
    for i in range(0, len(d) - len(d) % 1316, 1316):
        body = d[i:i + 1316]
        if sys.argv[2] == "1":
            body = struct.pack("!BBHII", 0x80, 33, seq & 0xFFFF, seq * 3600, 0x4B48) + body
            seq += 1
        s.sendto(body, ("127.0.0.1", int(sys.argv[1])))
        if i % (1316 * 20) == 0:
            time.sleep(0.002)
PY
}

# live NAME QUERY: inspect 700 packets from udp://127.0.0.1:P, the clip sent to it.
live()
{
	P=$(free_port)
	"$KEYHOLE" ts inspect "udp://127.0.0.1:$P$2" --packets 700 --duration 60 >"$1.out" 2>"$KH_META/reader.err" </dev/null &
	rp=$!
	KH_PIDS="$KH_PIDS $rp"
	wait_bound "$rp" "$P"
	case "$2" in *rtp=1*) send "$P" 1 ;; *) send "$P" 0 ;; esac
	wait "$rp"
	rc=$?
	[ "$rc" -eq 0 ] || { cat "$KH_META/reader.err" >&2; kh_fail "$1: ts inspect udp:// exited $rc"; }
	grep -q "^file udp://127.0.0.1:$P.*: [0-9]* bytes, 700 packets," "$1.out" ||
		kh_fail "$1: the report does not count exactly 700 packets: $(head -n 1 "$1.out")"
	grep '^programme \|^  component ' "$1.out" >"$1.prog"
	cmp -s file.prog "$1.prog" || kh_fail "$1: the programme found differs from the file's"
	kh_note "$1: 700 packets inspected, the clip's programme and components found"
}

live udp ""
live rtp "?rtp=1"

# --json over the network: one JSON document
P=$(free_port)
"$KEYHOLE" ts inspect "udp://127.0.0.1:$P" --packets 100 --json >net.json 2>"$KH_META/reader.err" </dev/null &
rp=$!
KH_PIDS="$KH_PIDS $rp"
wait_bound "$rp" "$P"
send "$P" 0
wait "$rp" || kh_fail "ts inspect udp:// --json failed"
python3 -c 'import json, sys; d = json.load(open("net.json")); sys.exit(0 if d["packets"] == 100 else 1)' ||
	kh_fail "--json over udp://: not one document counting 100 packets"

# nothing sent: the time runs out
P=$(free_port)
kh_run ts inspect "udp://127.0.0.1:$P" --duration 1
[ "$KH_RC" -eq 1 ] || kh_fail "nothing received: exit $KH_RC, want 1"
kh_err_has "udp://127.0.0.1:$P: no packet received"
exit 0
