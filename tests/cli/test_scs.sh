#!/bin/sh
# The scrambler as a SimulCrypt SCS: `keyhole headend scramble --ecmg HOST:PORT --super-cas-id ID`
# takes every ECM from `keyhole ecmg serve` over TCP, and `keyhole decoder play` gives every video
# and audio frame of the clear clip back (ffmpeg framemd5), in section and in TS-packet mode. The
# session passes through a relay written here in python3, which writes it as a pcap: with tshark,
# Wireshark's simulcrypt dissector decodes every message both ways, none malformed. Then the
# relay kills the ECMG mid-run (right after the second ECM it passed on): the scrambler says it
# kept the control word of the periods it could not renew, exits 0, and its output still plays,
# frame-exact; likewise when the relay stops passing the ECMG's answers on (the SCS waits
# max_comp_time + 200 ms, then goes on degraded). Refusals: --ecmg without --super-cas-id and the
# reverse (usage), an ECMG nobody serves at the start (failure), a Super_CAS_id the ECMG refuses.
#
# Run by CTest as `sh test_scs.sh` with KEYHOLE and KH_SOURCE_DIR set. Skipped without ffmpeg.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_scs
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg/ffprobe not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need python3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
CAS=0x4B480000

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=20:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=20 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out h.keys
T=$(date +%s)
kh_expect_ok headend emm --keys h.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--out sub.emm

# usage: the two options go together
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --product 7 --ecmg 127.0.0.1:1
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --product 7 --super-cas-id "$CAS"
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --product 7 --ecmg nowhere \
	--super-cas-id "$CAS"

# A relay between the SCS and the ECMG: listens on a free port (printed), takes one connection,
# passes both directions through, then writes the session as a pcap (SCS 10.0.0.1:40000, ECMG
# 10.0.0.2:5000) for tshark. With a third and fourth argument N PID, it kills the ECMG (PID)
# with SIGKILL right after relaying the Nth ECM_response, and stops: the ECMG dies mid-run at a
# point of the stream the test knows, whatever the machine's speed. With N 0, it passes nothing
# more from the ECMG after the Nth ECM_response (an ECMG that stopped answering) until the SCS
# hangs up.
cat >relay.py <<'PYEOF'
import os, select, signal, socket, struct, sys
ecmg_port, pcap = int(sys.argv[1]), sys.argv[2]
kill_after, ecmg_pid = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (0, 0)
stall = ecmg_pid == 0 and kill_after > 0  # PID 0: the ECMG is not killed, its answers stop coming
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
print("listening=127.0.0.1:%d" % ls.getsockname()[1], flush=True)
a, _ = ls.accept()
ls.close()
b = socket.create_connection(("127.0.0.1", ecmg_port))
log = []
peer = {a: b, b: a}
back = b""  # the ECMG's bytes not yet framed
ecms = 0
open_ = True
while open_:
    for s in select.select([a, b], [], [], 30)[0]:
        d = s.recv(65536)
        if not d:
            open_ = False
            break
        if s is b and stall and ecms >= kill_after:
            continue  # swallowed: the SCS waits in vain
        log.append((s is a, d))
        peer[s].sendall(d)
        if s is b:
            back += d
            while len(back) >= 5 and len(back) >= 5 + struct.unpack(">H", back[3:5])[0]:
                n = 5 + struct.unpack(">H", back[3:5])[0]
                ecms += struct.unpack(">H", back[1:3])[0] == 0x0202
                back = back[n:]
            if kill_after and ecms >= kill_after and not stall:
                os.kill(ecmg_pid, signal.SIGKILL)
                a.close()
                sys.exit(0)
def frame(fwd, flags, seq, ack, data):
    src, dst = (b"\x0a\0\0\x01", b"\x0a\0\0\x02") if fwd else (b"\x0a\0\0\x02", b"\x0a\0\0\x01")
    sp, dp = (40000, 5000) if fwd else (5000, 40000)
    tcp = struct.pack(">HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    return b"\0\0\0\0\0\x02" + b"\0\0\0\0\0\x01" + b"\x08\x00" + ip + tcp
seq = {True: 1000, False: 5000}
frames = [frame(True, 0x02, 999, 0, b""), frame(False, 0x12, 4999, 1000, b""), frame(True, 0x10, 1000, 5000, b"")]
for fwd, d in log:
    for i in range(0, len(d), 1400):  # segments of an Ethernet's size; tshark reassembles them
        part = d[i:i + 1400]
        frames.append(frame(fwd, 0x18, seq[fwd], seq[not fwd], part))
        seq[fwd] += len(part)
with open(pcap, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, fr in enumerate(frames):
        f.write(struct.pack("<IIII", i, 0, len(fr), len(fr)) + fr)
PYEOF

relay()
{
	: >relay.out
	python3 relay.py "$@" >relay.out 2>relay.err &
	RELAY=$!
	i=0
	until grep -q '^listening=' relay.out 2>/dev/null; do
		[ "$i" -lt 100 ] || kh_fail "the relay did not start: $(cat relay.err)"
		sleep 0.1
		i=$((i + 1))
	done
	RPORT=$(sed -n 's/^listening=127\.0\.0\.1://p' relay.out)
}

# played: the decoder's output is frame-exact against the clear clip
played()
{
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in "$1" --out "c-$1"
	kh_frames "c-$1" >"c-$1.md5"
	cmp -s clear.md5 "c-$1.md5" || kh_fail "$1: decoded frames differ from the clear clip's"
}

# ---- sections, through the relay ----
kh_start_daemon ECMG ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 7
kh_wait_listening "$ECMG"
EPORT=$PORT
relay "$EPORT" session.pcap
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out s-sec.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm --ecmg "127.0.0.1:$RPORT" --super-cas-id "$CAS"
wait "$RELAY" || kh_fail "the relay failed: $(cat relay.err)"
played s-sec.ts
kh_note "sections: $(wc -l <clear.md5) frames frame-exact with ECMs from the ECMG"

# tshark: every message of the session decoded, none malformed; the exchange an SCS makes
if command -v tshark >/dev/null 2>&1; then
	HOME=$KH_WORK XDG_CONFIG_HOME=$KH_WORK tshark -r session.pcap -d "tcp.port==5000,simulcrypt" \
		-T fields -E separator=";" -e simulcrypt.message.type -e _ws.malformed \
		2>"$KH_META/tshark.err" | grep -v '^;' | tr ',' '\n' | grep . >"$KH_META/tshark.out" ||
		kh_fail "tshark: $(cat "$KH_META/tshark.err")"
	! grep -qi malformed "$KH_META/tshark.out" ||
		kh_fail "tshark finds a malformed message: $(grep -i malformed "$KH_META/tshark.out" | head -n 3)"
	for t in 0x0001 0x0003 0x0101 0x0103 0x0201 0x0202 0x0004; do
		grep -q "^$t" "$KH_META/tshark.out" || kh_fail "tshark finds no message of type $t in the session"
	done
	n201=$(grep -c '^0x0201' "$KH_META/tshark.out")
	n202=$(grep -c '^0x0202' "$KH_META/tshark.out")
	[ "$n201" -ge 4 ] && [ "$n201" -eq "$n202" ] ||
		kh_fail "tshark: $n201 CW_provisions, $n202 ECM_responses (want 4 or more, as many of each)"
else
	kh_note "tshark not installed: the session's decode is skipped"
fi
kh_stop "$ECMG" TERM

# ---- 16-byte control words: an ECMG for IDSA ----
: >"$KH_META/daemon.out"
kh_start_daemon ECMG ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 7 --alg idsa
kh_wait_listening "$ECMG"
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out s-idsa.ts --alg idsa --product 7 --period 5 \
	--time "$T" --emm sub.emm --ecmg "127.0.0.1:$PORT" --super-cas-id "$CAS"
played s-idsa.ts
kh_stop "$ECMG" TERM

# ---- TS packets ----
: >"$KH_META/daemon.out"
kh_start_daemon ECMG ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 7 --ts-packets
kh_wait_listening "$ECMG"
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out s-ts.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm --ecmg "127.0.0.1:$PORT" --super-cas-id "$CAS"
played s-ts.ts
# a Super_CAS_id the ECMG does not serve: refused at the start, nothing written
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out s-bad.ts --alg csa2 --product 7 \
	--ecmg "127.0.0.1:$PORT" --super-cas-id 0x12340000
kh_err_has "0x0005"
[ ! -e s-bad.ts ] || kh_fail "a refused --super-cas-id wrote an output"

# ---- the ECMG killed mid-run (after the second ECM) ----
relay "$PORT" kill.pcap 2 "$ECMG"
kh_run headend scramble --keys h.keys --in clip.ts --out s-kill.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm --ecmg "127.0.0.1:$RPORT" --super-cas-id "$CAS"
[ "$KH_RC" = 0 ] || kh_fail "the scrambler exited $KH_RC after the ECMG died: $(cat "$KH_ERR")"
wait "$RELAY" || kh_fail "the relay failed: $(cat relay.err)"
wait "$ECMG" 2>/dev/null
kill -0 "$ECMG" 2>/dev/null && kh_fail "the ECMG was not killed"
KH_PIDS=$(echo "$KH_PIDS" | sed "s/ $ECMG\b//")
grep -q "ECMG late: kept the control word of period [0-9]" "$KH_ERR" ||
	kh_fail "the scrambler did not say it went degraded: $(cat "$KH_ERR")"
grep -q "ECMG late: [0-9]* ECM request(s) not answered, [1-9][0-9]* period start(s) with the control word kept" \
	"$KH_ERR" || kh_fail "the scrambler did not count the degraded periods: $(cat "$KH_ERR")"
late=$(grep -c 'ECMG late: kept' "$KH_ERR")
played s-kill.ts
kh_note "ECMG killed after the second ECM: $late degraded line(s), the output still plays"

# ---- an ECMG that stops answering (after the second ECM): the SCS gives up waiting ----
: >"$KH_META/daemon.out"
kh_start_daemon ECMG ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 7
kh_wait_listening "$ECMG"
relay "$PORT" stall.pcap 2 0
kh_run headend scramble --keys h.keys --in clip.ts --out s-stall.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm --ecmg "127.0.0.1:$RPORT" --super-cas-id "$CAS"
[ "$KH_RC" = 0 ] || kh_fail "the scrambler exited $KH_RC when the ECMG stopped answering: $(cat "$KH_ERR")"
wait "$RELAY" || kh_fail "the relay failed: $(cat relay.err)"
# the relay ended: the SCS hung up the stalled connection (it did not wait for ever); the line
# names the last failure: the wait, or (on a slow machine, a second later) the new connection
late='ECMG late: kept the control word of period 2 \(program [0-9]+\)'
grep -E -q "$late: (no answer from the ECMG in time|cannot connect)" "$KH_ERR" ||
	kh_fail "the scrambler did not say the ECMG was late: $(cat "$KH_ERR")"
played s-stall.ts
kh_stop "$ECMG" TERM

# ---- nobody at the ECMG's address at the start ----
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out s-none.ts --alg csa2 --product 7 \
	--ecmg "127.0.0.1:$PORT" --super-cas-id "$CAS"
kh_err_has "127.0.0.1:$PORT"
[ ! -e s-none.ts ] || kh_fail "scramble with no ECMG wrote an output"

kh_note "ok"
exit 0
