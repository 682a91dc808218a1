#!/bin/sh
# The SimulCrypt EMMG and the mux side of EMMG<->MUX end to end: a real `keyhole serve` with
# broadcast EMMs queued (a card assigned and subscribed through the API); `keyhole headend mux
# --emmg-listen --regulate --wait-emmg` on a constant-bitrate clip (ffmpeg -muxrate); `keyhole
# emmg --once` against it through a recording TCP relay (python3). The output has the input's
# size, every PCR at the same packet index with the same value, the EMM PID carries exactly the
# center's EMM sections in queue order (bytes compared, continuity counters unbroken, `ts inspect
# --json` reads them as Keyhole EMMs), the CAT names the EMM PID. Wireshark's simulcrypt dissector
# (tshark) decodes the recorded session with no malformed message. Usage errors exit 2; an
# unreachable mux with --once exits 1.
#
# Run by CTest as `sh test_emmg.sh` with KEYHOLE and KH_SOURCE_DIR set.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_emmg
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs it)"
	exit 0
fi
kh_need python3 curl od awk cmp
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ---- usage ----
kh_expect_usage emmg --mux 127.0.0.1:1
kh_expect_usage emmg --center http://127.0.0.1:1
kh_expect_usage emmg --center http://192.0.2.1:1 --mux 127.0.0.1:1
kh_expect_usage emmg --center http://127.0.0.1:1 --mux 127.0.0.1:1 --bandwidth 0
kh_expect_usage emmg --center http://127.0.0.1:1 --mux 127.0.0.1:1 --protocol-version 4
kh_expect_usage headend mux --in a.ts --out b.ts --emmg-listen 127.0.0.1:0
kh_expect_usage headend mux --in a.ts --out b.ts --emm-pid 0x100
kh_expect_usage headend mux --in a.ts --out b.ts --emmg-listen 127.0.0.1:0 --emm-pid 5
kh_expect_usage headend mux --in a.ts --out b.ts --emmg-listen 127.0.0.1:0 --emm-pid 0x1FFF
kh_expect_usage headend mux --in a.ts --out b.ts --emmg-listen 127.0.0.1:0 --emm-pid 0x100 --max-bandwidth 0

# ---- the center, with broadcast EMMs queued ----
kh_db_init
kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role card --out c1.card
UA1=$(kh_ua c1.card)
kh_start_serve SPID
C=http://127.0.0.1:$PORT
T=$(date +%s)
kh_expect_api PUT /v1/credit-policy '{"initial_credit":100,"reload_amount":50}' 200
kh_expect_api POST /v1/subscribers '{"name":"Alice"}' 201
kh_expect_api POST /v1/cards "{\"certificate\":\"$(kh_cert_b64 "$UA1")\"}" 201
kh_expect_api POST /v1/products '{"id":7,"name":"Sports"}' 201
kh_expect_api POST "/v1/cards/$UA1/assign" '{"subscriber_id":1}' 200
SUB="{\"product_id\":7,\"start\":$((T - 100)),\"end\":$((T + 86400))}"
kh_expect_api POST /v1/subscribers/1/subscriptions "$SUB" 201

# the queue's sections, in order, as the EMMG will fetch them
curl -s --noproxy '*' "$C/v1/emm?since=0&limit=1000" >queue.json || kh_fail "GET /v1/emm failed"
python3 - queue.json center.emm <<'PYEOF' || kh_fail "the center's queue: $(cat queue.json)"
import base64, json, sys
d = json.load(open(sys.argv[1]))
assert d["emms"], "empty queue"
unb64 = lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
open(sys.argv[2], "wb").write(b"".join(unb64(e["section"]) for e in d["emms"]))
print(len(d["emms"]))
PYEOF
NEMM=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["emms"]))' queue.json)
[ "$NEMM" -ge 2 ] || kh_fail "the center queued $NEMM EMMs, want at least 2"

# ---- an unreachable mux: --once fails ----
kh_expect_fail emmg --center "$C" --mux 127.0.0.1:1 --once

# ---- the clip: constant bitrate, null packets to carry the EMMs ----
ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=3:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=3 -c:v mpeg2video -c:a mp2 -muxrate 1500000 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"

# ---- the relay: forwards EMMG<->mux and writes the session as a pcap ----
cat >relay.py <<'PYEOF'
import socket, struct, sys, threading

lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(1)
print("relay=%d" % lst.getsockname()[1], flush=True)
a, _ = lst.accept()
b = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
log, lock = [], threading.Lock()

def pump(src, dst, fwd):
    while True:
        d = src.recv(65536)
        if not d:
            break
        with lock:
            log.append((fwd, d))
        dst.sendall(d)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

t1 = threading.Thread(target=pump, args=(a, b, 1))
t2 = threading.Thread(target=pump, args=(b, a, 0))
t1.start(); t2.start(); t1.join(); t2.join()

def frame(fwd, flags, seq, ack, data):
    src, dst = (b"\x0a\0\0\x01", b"\x0a\0\0\x02") if fwd else (b"\x0a\0\0\x02", b"\x0a\0\0\x01")
    sp, dp = (40000, 5000) if fwd else (5000, 40000)
    tcp = struct.pack(">HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    return b"\0\0\0\0\0\x02" + b"\0\0\0\0\0\x01" + b"\x08\x00" + ip + tcp

seq = {1: 1000, 0: 5000}
frames = [frame(1, 0x02, 999, 0, b""), frame(0, 0x12, 4999, 1000, b""), frame(1, 0x10, 1000, 5000, b"")]
for fwd, d in log:
    for i in range(0, len(d), 1400):
        part = d[i:i + 1400]
        frames.append(frame(fwd, 0x18, seq[fwd], seq[1 - fwd], part))
        seq[fwd] += len(part)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, fr in enumerate(frames):
        f.write(struct.pack("<IIII", i, 0, len(fr), len(fr)) + fr)
PYEOF

# ---- the mux, the relay, the EMMG ----
: >"$KH_META/daemon.out"
kh_start_daemon MPID headend mux --in clip.ts --out out.ts --emmg-listen 127.0.0.1:0 --emm-pid 0x0123 \
	--max-bandwidth 500 --regulate --wait-emmg 30
kh_wait_listening "$MPID"
MUXPORT=$PORT
python3 relay.py "$MUXPORT" session.pcap >relay.out 2>relay.err &
RPID=$!
KH_PIDS="$KH_PIDS $RPID"
i=0
while ! grep -q '^relay=' relay.out; do
	[ "$i" -lt 50 ] || kh_fail "the relay did not start: $(cat relay.err)"
	sleep 0.1
	i=$((i + 1))
done
RPORT=$(sed -n 's/^relay=//p' relay.out)
kh_expect_ok emmg --center "$C" --mux "127.0.0.1:$RPORT" --client-id 0x4B480000 --data-id 3 --bandwidth 2000 \
	--once
kh_out_has "^sections=$NEMM "

# the mux ends with its input (about 3 s of stream time)
i=0
while kill -0 "$MPID" 2>/dev/null; do
	[ "$i" -lt 300 ] || kh_fail "headend mux did not end with its input"
	sleep 0.1
	i=$((i + 1))
done
wait "$MPID"
RC=$?
[ "$RC" = 0 ] || kh_fail "headend mux exited $RC: $(cat "$KH_META/daemon.err")"
grep -q "emm_sections=$NEMM emm_packets=[1-9][0-9]* emm_left=0 dropped_sections=0 " "$KH_META/daemon.err" ||
	kh_fail "headend mux counts: $(cat "$KH_META/daemon.err")"
wait "$RPID" || kh_fail "the relay failed: $(cat relay.err)"

# ---- the output: same size, same PCRs, the center's sections on the EMM PID, the CAT ----
[ "$(kh_size out.ts)" = "$(kh_size clip.ts)" ] || kh_fail "the output's size differs from the input's"
pcrs()
{
	od -An -v -tu1 -w188 "$1" | awk '
		int($4 / 16) % 4 >= 2 && $5 >= 7 && int($6 / 16) % 2 == 1 {
			printf "%d %d %d %d %d %d %d %d\n", NR - 1, ($2 % 32) * 256 + $3, $7, $8, $9, $10, $11, $12
		}'
}
pcrs clip.ts >in.pcr
pcrs out.ts >out.pcr
[ -s in.pcr ] || kh_fail "the clip has no PCR"
cmp -s in.pcr out.pcr || kh_fail "a PCR moved or changed: $(diff in.pcr out.pcr | head -5)"

python3 - out.ts center.emm <<'PYEOF' || kh_fail "the EMM PID or the CAT is wrong"
import sys
ts, want = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
secs, cur, cc, cat, catcc = [], None, None, None, None
for i in range(0, len(ts), 188):
    p = ts[i:i + 188]
    pid = (p[1] & 0x1F) << 8 | p[2]
    if pid == 1:
        if catcc is not None and (p[3] & 0x0F) != ((catcc + 1) & 0x0F):
            sys.exit("the CAT's continuity counter jumps at packet %d" % (i // 188))
        catcc = p[3] & 0x0F
    if pid == 1 and p[1] & 0x40:
        cat = p[5:5 + 3 + ((p[6] & 0x0F) << 8 | p[7])]
    if pid != 0x123:
        continue
    if cc is not None and (p[3] & 0x0F) != ((cc + 1) & 0x0F):
        sys.exit("continuity counter jumps at packet %d" % (i // 188))
    cc = p[3] & 0x0F
    if p[1] & 0x40:
        cur = bytearray(p[5:])
    else:
        cur += p[4:]
    n = 3 + ((cur[1] & 0x0F) << 8 | cur[2])
    if len(cur) >= n:
        secs.append(bytes(cur[:n]))
        cur = None
got = b"".join(secs)
if got != want:
    sys.exit("EMM PID: %d sections, %d bytes; the center's: %d bytes" % (len(secs), len(got), len(want)))
if cat is None or bytes.fromhex("09044b48e123") not in cat:
    sys.exit("the CAT does not name EMM PID 0x0123: %r" % cat)
PYEOF
kh_expect_ok ts inspect out.ts --json
python3 - "$KH_OUT" "$NEMM" <<'PYEOF' || kh_fail "ts inspect: $(head -c 600 "$KH_OUT")"
import json, sys
d = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
e = [p for p in d["pids"] if p["pid"] == 0x123]
assert e and e[0]["role"] == "EMM" and e[0]["continuity_errors"] == 0, "EMM PID"
assert any(c["ca_pid"] == 0x123 and c["ca_system_id"] == 0x4B48 for c in d["cat"]), "CAT"
c = [p for p in d["ca_pids"] if p["pid"] == 0x123][0]
assert c["sections"] == n and c["malformed"] == 0, "sections"
u = c["emm"]["unique"]
assert u["count"] == n and u["first"]["seq"] == 1 and u["last"]["seq"] == n, "EMM headers"
PYEOF

# ---- an independent decoder of the session: Wireshark's simulcrypt dissector ----
if command -v tshark >/dev/null 2>&1; then
	HOME=$KH_WORK XDG_CONFIG_HOME=$KH_WORK tshark -r session.pcap -d "tcp.port==5000,simulcrypt" \
		-T fields -E separator=";" -e simulcrypt.message.type -e _ws.malformed \
		2>"$KH_META/tshark.err" | grep -v '^;*$' >"$KH_META/tshark.out" ||
		kh_fail "tshark: $(cat "$KH_META/tshark.err")"
	grep -q malformed "$KH_META/tshark.out" &&
		kh_fail "tshark finds a malformed message: $(cat "$KH_META/tshark.out")"
	for t in 0x0011 0x0013 0x0111 0x0113 0x0117 0x0118 0x0211 0x0014; do
		grep -q "$t" "$KH_META/tshark.out" ||
			kh_fail "tshark does not see message $t: $(cat "$KH_META/tshark.out")"
	done
else
	kh_note "tshark not installed: the session's decode is skipped"
fi
# ---- the daemon: started before its mux, it connects again after a back-off and cycles ----
MPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
: >"$KH_META/daemon.err"
kh_start_daemon EPID emmg --center "$C" --mux "127.0.0.1:$MPORT" --bandwidth 300 --poll 1 --protocol-version 3
i=0
until grep -q 'event=emmg.session_failed .*cannot connect' "$KH_META/daemon.err"; do
	[ "$i" -lt 100 ] || kh_fail "emmg did not report the refused connection: $(cat "$KH_META/daemon.err")"
	sleep 0.1
	i=$((i + 1))
done
: >"$KH_META/daemon.out"
kh_start_daemon MPID headend mux --in clip.ts --out cyc.ts --emmg-listen "127.0.0.1:$MPORT" --emm-pid 0x0124 \
	--max-bandwidth 100 --regulate --wait-emmg 30
i=0
while kill -0 "$MPID" 2>/dev/null; do
	[ "$i" -lt 400 ] || kh_fail "headend mux did not end with its input (with the daemon)"
	sleep 0.1
	i=$((i + 1))
done
wait "$MPID" || kh_fail "headend mux exited $?: $(cat "$KH_META/daemon.err")"
kill -0 "$EPID" 2>/dev/null || kh_fail "emmg ended when its mux went away: $(cat "$KH_META/daemon.err")"
kh_stop "$EPID" TERM
[ "$KH_RC" = 0 ] || kh_fail "emmg exited $KH_RC on SIGTERM"
[ "$(kh_size cyc.ts)" = "$(kh_size clip.ts)" ] || kh_fail "the cycled output's size differs from the input's"
# the carousel: every section one of the center's, each of them there, the first ones again
python3 - cyc.ts queue.json <<'PYEOF' || kh_fail "the carousel on the EMM PID is wrong"
import base64, json, sys
ts = open(sys.argv[1], "rb").read()
unb64 = lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
q = [unb64(e["section"]) for e in json.load(open(sys.argv[2]))["emms"]]
secs, cur = [], None
for i in range(0, len(ts), 188):
    p = ts[i:i + 188]
    if (p[1] & 0x1F) << 8 | p[2] != 0x124:
        continue
    cur = bytearray(p[5:]) if p[1] & 0x40 else cur + p[4:]
    n = 3 + ((cur[1] & 0x0F) << 8 | cur[2])
    if len(cur) >= n:
        secs.append(bytes(cur[:n]))
for s in secs:
    assert s in q, "a section that is not the center's"
assert secs[:len(q)] == q, "the first cycle is not the queue in order"
assert len(secs) > len(q), "the queue was not cycled (%d sections)" % len(secs)
PYEOF

kh_stop "$SPID" TERM
exit 0
