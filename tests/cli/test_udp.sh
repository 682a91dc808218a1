#!/bin/sh
# A transport stream over UDP and RTP on loopback: `decoder play --in udp://127.0.0.1:P` started
# first, then `headend scramble --in clip.ts --out udp://127.0.0.1:P --regulate` sends the clip at
# its PCR rate; the reader ends by its --idle-timeout after the last datagram, and every frame it
# decoded is bit-exact to the clear clip's (it may miss the very first ones, as one tuning in).
# Plain UDP, then RTP (rtp=1 on the sender; the reader finds RTP by version 2 and payload type 33).
# `headend scramble --in udp://` ends cleanly (exit 0, output kept) on SIGTERM.
# Refusals: a malformed URL and unknown query keys (usage), --regulate and --idle-timeout without
# a network end. IPv6 unicast on [::1]. Multicast: tried on 239.255.x.x and on ff02::4b48 when the
# sandbox routes it, else skipped (said).
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init udp
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need ss python3
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=3:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=3 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts || kh_fail "ffmpeg"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames in the clear clip"

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
T=$(date +%s)
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--out sub.emm

# ---- refusals ----
DEC="--decoder dec.card --cam cam.card --card card.card"
kh_expect_usage decoder play $DEC --in udp://127.0.0.1 --out x.ts
kh_err_has "udp://"
kh_expect_usage decoder play $DEC --in "udp://127.0.0.1:5000?color=red" --out x.ts
kh_expect_usage decoder play $DEC --in "udp://127.0.0.1:5000?pkts=9" --out x.ts
kh_expect_usage decoder play $DEC --in clip.ts --idle-timeout 2 --out x.ts
kh_expect_usage headend scramble --keys headend.keys --in clip.ts --out o.ts --alg csa2 --product 7 --regulate
kh_expect_usage headend scramble --keys headend.keys --in clip.ts --out "udp://127.0.0.1:5000?ttl=0" --alg csa2 \
	--product 7
[ ! -e x.ts ] && [ ! -e o.ts ] || kh_fail "a refused run left an output"

free_port()
{
	python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_bound PID PORT: until the reader's socket is bound (it opens the modules first).
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

# frames_after CLEAR DECODED WHAT: every decoded frame is the clear clip's; at most the first
# second (25 video and audio frames) is missed.
frames_after()
{
	[ -s "$2" ] || kh_fail "$3: no frame decoded"
	if grep -vxFq -f "$1" "$2"; then
		kh_fail "$3: a decoded frame differs from the clear clip's: $(grep -vxF -f "$1" "$2" | head -n 1)"
	fi
	[ "$(wc -l <"$2")" -ge $(($(wc -l <"$1") - 50)) ] || kh_fail "$3: $(wc -l <"$2") of $(wc -l <"$1") frames decoded"
}

# live NAME HOST QUERY [RQUERY]: the reader on udp://HOST:P[RQUERY], the headend sending to
# udp://HOST:P[QUERY]. A reader that does not end within 30 s of the sender is stopped and fails.
live()
{
	P=$(free_port)
	"$KEYHOLE" decoder play $DEC --in "udp://$2:$P${4:-}" --idle-timeout 2 --out "$1.ts" \
		>"$KH_META/reader.out" 2>"$KH_META/reader.err" </dev/null &
	rp=$!
	KH_PIDS="$KH_PIDS $rp"
	wait_bound "$rp" "$P"
	kh_expect_ok headend scramble --keys headend.keys --emm sub.emm --in clip.ts --out "udp://$2:$P$3" --regulate \
		--alg csa2 --product 7 --period 5 --ecm-interval 50 --emm-interval 50
	i=0
	while kill -0 "$rp" 2>/dev/null; do
		[ "$i" -lt 300 ] || { kill -TERM "$rp"; cat "$KH_META/reader.err" >&2; kh_fail "$1: the reader did not end"; }
		sleep 0.1
		i=$((i + 1))
	done
	wait "$rp"
	rc=$?
	[ "$rc" -eq 0 ] || { cat "$KH_META/reader.err" >&2; kh_fail "$1: the reader exited with $rc"; }
	kh_frames "$1.ts" >"$1.md5"
	frames_after clear.md5 "$1.md5" "$1"
}

live udp 127.0.0.1 ""
live rtp 127.0.0.1 "?rtp=1&pkts=7"
live rtp4 127.0.0.1 "?rtp=1&pkts=4"
live udp6 "[::1]" "?rtp=1"
# IPv6 multicast: a link-local group on the loopback interface, when this machine carries it
if python3 -c '
import socket, struct
idx = socket.if_nametoindex("lo")
r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
r.bind(("::", 0))
r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, "ff02::4b48") + struct.pack("@I", idx))
r.settimeout(1)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.sendto(b"x", ("ff02::4b48", r.getsockname()[1], 0, idx))
r.recv(1)
' 2>/dev/null; then
	live mcast6 "[ff02::4b48]" "?local=lo" "?local=lo"
else
	kh_note "IPv6 multicast skipped: this machine does not deliver ff02::4b48 on loopback"
fi

# ---- the headend reading the network: SIGTERM ends its input as a file's end would ----
P=$(free_port)
"$KEYHOLE" headend scramble --keys headend.keys --in "udp://127.0.0.1:$P" --out s-net.ts --alg csa2 --product 7 \
	>"$KH_META/reader.out" 2>"$KH_META/reader.err" </dev/null &
rp=$!
KH_PIDS="$KH_PIDS $rp"
wait_bound "$rp" "$P"
python3 - "$P" <<'PY' || kh_fail "could not send the clip"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d = open("clip.ts", "rb").read()
for i in range(0, len(d) - len(d) % 1316, 1316):
    s.sendto(d[i:i + 1316], ("127.0.0.1", int(sys.argv[1])))
PY
sleep 1 # time to take in what the kernel holds (how much arrived is not asserted)
kill -TERM "$rp"
wait "$rp"
rc=$?
[ "$rc" -eq 0 ] || { cat "$KH_META/reader.err" >&2; kh_fail "headend --in udp:// stopped by SIGTERM exited with $rc"; }
[ -s s-net.ts ] || kh_fail "headend --in udp://: no output after SIGTERM"

# ---- multicast, when this sandbox has a route for it ----
if ip route get 239.255.42.42 >/dev/null 2>&1 && python3 -c '
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("239.255.42.42"), socket.inet_aton("127.0.0.1")))
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
r.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
r.sendto(b"x", ("239.255.42.42", s.getsockname()[1]))
s.settimeout(2)
s.recv(10)
' 2>/dev/null; then
	live mcast 239.255.42.42 "?local=127.0.0.1&ttl=1&rtp=1" "?local=127.0.0.1"
else
	kh_note "multicast skipped: this sandbox does not deliver 239.255.42.42 on loopback"
fi
exit 0
