#!/bin/sh
# keyhole ecmg serve over TCP, spoken to by an SCS in python3: usage errors exit 2 and a missing
# key file 1; then a daemon on a free port answers channel_setup with channel_status (in the
# version asked), stream_setup with stream_status, 5 CW_provisions with ECM_responses (sections,
# the right CP, table_id toggling), a garbage message with channel_error invalid_message and the
# next good message still answered, a wrong Super_CAS_id on a second connection with
# unknown_super_CAS_id while the first goes on; --ts-packets gives datagrams of whole TS packets;
# SIGTERM stops it with status 0. The ECM's content (keys, CWs, signature) is checked by
# tests/unit/test_ecmg.c.
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

a = socket.create_connection(("127.0.0.1", port))
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
    if ts:
        assert len(d) % 188 == 0 and d[0] == 0x47 and d[5] == 0x80 + (cp & 1), d[:8]
    else:
        assert d[0] == 0x80 + (cp & 1) and len(d) == 3 + ((d[1] & 0x0F) << 8 | d[2]), d[:8]
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
print("scs ok")
PYEOF
}

kh_start_daemon PID ecmg serve --keys h.keys --listen 127.0.0.1:0 --product 5
kh_wait_listening "$PID"
scs "$PORT" sections >"$KH_META/scs.out" 2>&1 || {
	cat "$KH_META/scs.out" >&2
	kh_fail "the SCS session failed"
}
grep -q "scs ok" "$KH_META/scs.out" || kh_fail "the SCS did not finish"
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
