#!/bin/sh
# keyhole ecmg serve over TCP, spoken to by an SCS in python3: usage errors exit 2 and a missing
# key file 1; then a daemon on a free port answers channel_setup with channel_status (in the
# version asked), stream_setup with stream_status, 5 CW_provisions with ECM_responses (sections,
# the right CP, table_id toggling by the label CP + 1), a garbage message with channel_error
# invalid_message and the next good message still answered, a wrong Super_CAS_id on a second
# connection with unknown_super_CAS_id while the first goes on; --ts-packets gives datagrams of whole TS packets;
# SIGTERM stops it with status 0. With tshark, the session (written as a pcap by the SCS) is
# decoded by Wireshark's simulcrypt dissector: every message, and only the garbage malformed.
# The ECM's content (keys, CWs, signature) is checked by tests/unit/test_ecmg.c.
#
# Run by CTest as `sh test_ecmg.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_ecmg
kh_need python3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

kh_expect_ok authority init auth
kh_expect_ok headend keys init --authority auth --out h.keys

kh_expect_usage ecmg serve --listen 127.0.0.1:0 --product 1
kh_expect_usage ecmg serve --keys h.keys --product 1
kh_expect_usage ecmg serve --keys h.keys --listen 127.0.0.1:0
kh_expect_usage ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 1 --event 2 --price 3
kh_expect_usage ecmg serve --keys h.keys --listen 127.0.0.1:0 --event 2
kh_expect_usage ecmg serve --keys h.keys --listen nowhere --product 1
kh_expect_usage ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 1 --max-connections 0
kh_expect_usage ecmg serve --keys h.keys --listen 127.0.0.1:0 --product x
kh_expect_fail ecmg serve --keys missing.keys --listen 127.0.0.1:0 --product 1
kh_err_has missing.keys

scs()
{
	python3 - "$@" <<'PYEOF'
import socket, struct, sys

port, ts = int(sys.argv[1]), sys.argv[2] == "ts"
pcap = sys.argv[3] if len(sys.argv) > 3 else None
log = []  # (from the SCS?, bytes) of connection a, for the pcap

class Rec:
    """A socket whose traffic is logged (connection a only)."""
    def __init__(self, s): self.s = s
    def sendall(self, b): log.append((1, b)); self.s.sendall(b)
    def recv(self, n):
        b = self.s.recv(n)
        if b: log.append((0, b))
        return b

def write_pcap(path):
    """Ethernet/IPv4/TCP frames of the session, SCS 10.0.0.1:40000 to ECMG 10.0.0.2:5000."""
    def frame(fwd, flags, seq, ack, data):
        src, dst = (b"\x0a\0\0\x01", b"\x0a\0\0\x02") if fwd else (b"\x0a\0\0\x02", b"\x0a\0\0\x01")
        sp, dp = (40000, 5000) if fwd else (5000, 40000)
        tcp = struct.pack(">HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
        return b"\0\0\0\0\0\x02" + b"\0\0\0\0\0\x01" + b"\x08\x00" + ip + tcp
    seq = {1: 1000, 0: 5000}
    frames = [frame(1, 0x02, 999, 0, b""), frame(0, 0x12, 4999, 1000, b""), frame(1, 0x10, 1000, 5000, b"")]
    for fwd, data in log:
        frames.append(frame(fwd, 0x18, seq[fwd], seq[1 - fwd], data))
        seq[fwd] += len(data)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", i, 0, len(fr), len(fr)) + fr)

def msg(v, t, params):
    body = b"".join(struct.pack(">HH", pt, len(pv)) + pv for pt, pv in params)
    return struct.pack(">BHH", v, t, len(body)) + body

def u16(x): return struct.pack(">H", x)

def recv(s):
    h = b""
    while len(h) < 5:
        c = s.recv(5 - len(h))
        if not c: raise SystemExit("connection closed")
        h += c
    v, t, n = struct.unpack(">BHH", h)
    b = b""
    while len(b) < n:
        b += s.recv(n - len(b))
    ps, i = {}, 0
    while i < n:
        pt, pl = struct.unpack(">HH", b[i:i + 4])
        ps.setdefault(pt, []).append(b[i + 4:i + 4 + pl])
        i += 4 + pl
    return v, t, ps

def expect(s, v, t):
    rv, rt, ps = recv(s)
    if (rv, rt) != (v, t):
        raise SystemExit("wanted v%d type %04x, got v%d type %04x %r" % (v, t, rv, rt, ps))
    return ps

a = Rec(socket.create_connection(("127.0.0.1", port)))
a.sendall(msg(3, 0x0001, [(0x000E, u16(7)), (0x0001, struct.pack(">I", 0x4B480000))]))
ps = expect(a, 3, 0x0003)
assert ps[0x000E][0] == u16(7) and ps[0x0002][0] == (b"\x01" if ts else b"\x00"), ps
a.sendall(msg(3, 0x0101, [(0x000E, u16(7)), (0x000F, u16(1)), (0x0019, u16(0x42)), (0x0010, u16(100))]))
ps = expect(a, 3, 0x0103)
assert ps[0x0019][0] == u16(0x42)
for cp in range(5):
    cws = [(0x0014, u16(k) + bytes([k] * 8)) for k in (cp, cp + 1)]
    a.sendall(msg(3, 0x0201, [(0x000E, u16(7)), (0x000F, u16(1)), (0x0012, u16(cp))] + cws))
    ps = expect(a, 3, 0x0202)
    assert ps[0x0012][0] == u16(cp), ps
    d = ps[0x0015][0]
    # the ECM is labelled cp + 1 (it carries CW_cp and CW_cp+1): table_id by that parity
    if ts:
        assert len(d) % 188 == 0 and d[0] == 0x47 and d[5] == 0x80 + ((cp + 1) & 1), d[:8]
    else:
        assert d[0] == 0x80 + ((cp + 1) & 1) and len(d) == 3 + ((d[1] & 0x0F) << 8 | d[2]), d[:8]
# garbage (a parameter running past the end), then a good message
a.sendall(struct.pack(">BHH", 3, 0x0002, 4) + b"\x00\x0e\x00\x09")
ps = expect(a, 3, 0x0005)
assert ps[0x7000][0] == u16(0x0001), ps
# a second SCS with the wrong Super_CAS_id
b = socket.create_connection(("127.0.0.1", port))
b.sendall(msg(2, 0x0001, [(0x000E, u16(1)), (0x0001, struct.pack(">I", 0x12345678))]))
ps = expect(b, 2, 0x0005)
assert ps[0x7000][0] == u16(0x0005), ps
a.sendall(msg(3, 0x0002, [(0x000E, u16(7))]))
expect(a, 3, 0x0003)
a.sendall(msg(3, 0x0004, [(0x000E, u16(7))]))
assert a.recv(1) == b""  # channel_close: the ECMG hangs up
if pcap:
    write_pcap(pcap)
print("scs ok")
PYEOF
}

kh_start_daemon PID ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 5
kh_wait_listening "$PID"
scs "$PORT" sections "$KH_WORK/session.pcap" >"$KH_META/scs.out" 2>&1 || {
	cat "$KH_META/scs.out" >&2
	kh_fail "the SCS session failed"
}
grep -q "scs ok" "$KH_META/scs.out" || kh_fail "the SCS did not finish"
# An independent decoder of the session the SCS saw: Wireshark's simulcrypt dissector must read
# every message, our answers included, and find only the SCS's garbage malformed.
if command -v tshark >/dev/null 2>&1; then
	HOME=$KH_WORK XDG_CONFIG_HOME=$KH_WORK tshark -r "$KH_WORK/session.pcap" -d "tcp.port==5000,simulcrypt" \
		-T fields -E separator=";" -e simulcrypt.version -e simulcrypt.message.type -e _ws.malformed \
		2>"$KH_META/tshark.err" | grep -v '^;' >"$KH_META/tshark.out" ||
		kh_fail "tshark: $(cat "$KH_META/tshark.err")"
	cw='0x03;0x0201;
0x03;0x0202;'
	cat >"$KH_META/tshark.want" <<TSHARK
0x03;0x0001;
0x03;0x0003;
0x03;0x0101;
0x03;0x0103;
$cw
$cw
$cw
$cw
$cw
0x03;0x0002;[Malformed Packet: SIMULCRYPT],_ws.malformed
0x03;0x0005;
0x03;0x0002;
0x03;0x0003;
0x03;0x0004;
TSHARK
	cmp -s "$KH_META/tshark.want" "$KH_META/tshark.out" ||
		kh_fail "tshark decodes the session otherwise: $(diff "$KH_META/tshark.want" "$KH_META/tshark.out")"
else
	kh_note "tshark not installed: the session's decode is skipped"
fi
kh_stop "$PID" TERM
[ "$KH_RC" = 0 ] || kh_fail "ecmg serve exited $KH_RC on SIGTERM"

: >"$KH_META/daemon.out"
kh_start_daemon PID ecmg serve --keys h.keys --listen 127.0.0.1:0 --event 9 --price 30 --ts-packets
kh_wait_listening "$PID"
scs "$PORT" ts >"$KH_META/scs.out" 2>&1 || {
	cat "$KH_META/scs.out" >&2
	kh_fail "the SCS session (TS packets) failed"
}
kh_stop "$PID" TERM
[ "$KH_RC" = 0 ] || kh_fail "ecmg serve exited $KH_RC on SIGTERM"

kh_note "ok"
exit 0
