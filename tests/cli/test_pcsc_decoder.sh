#!/bin/sh
# The decoder with its CAM and card in PC/SC readers (docs/internals/pcsc.md), through a private
# pcscd and the vpcd driver (tests/cli/pcsc_lib.sh):
# - `pair` through the readers;
# - the broadcast round trip: `decoder play --cam pcsc:... --card pcsc:...` gives byte for byte
#   the stream the same modules give as files (and the same frames as ffmpeg decodes them);
# - one stream played through a FIFO in four parts, the card changed between them:
#     part 1 card A; then card A taken out and card B (with the right) put in the same reader;
#     part 2; then pcscd killed and started again (the decoder reports the readers gone, waits,
#     and goes on when they are back); part 3; then card C (no right) in place of B; part 4.
#   The output must be exactly the reference output less, after each change, the component
#   packets from the change to the first ECM after it (after C: all of them): no packet is
#   descrambled under a channel that ended, none is written scrambled, and card B's and the
#   restarted readers' packets are there;
# - an unknown reader, a reader with no card, and a card another program holds fail with one
#   line each.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
. "$KH_SOURCE_DIR/tests/cli/pcsc_lib.sh"
kh_pcsc_private "$0"

kh_init pcsc_decoder
kh_pcsc_init
kh_need ffmpeg python3 mkfifo dd
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
CARDR=$READER0
CAMR=$READER1

# ---- the operator, the modules, the stream (cards A and B entitled to product 7, C not)
kh_expect_ok authority init auth
for m in a:card b:card c:card cam:cam dec:decoder; do
	kh_expect_ok card issue --authority auth --role "${m#*:}" --out "${m%%:*}.card"
done
UA_A=$(kh_ua a.card)
UA_B=$(kh_ua b.card)
UA_C=$(kh_ua c.card)
kh_expect_ok headend keys init --authority auth --out h.keys
for c in a b; do
	ua=$(kh_ua $c.card)
	kh_expect_ok headend emm --keys h.keys --ua "$ua" --service-keys --entitle 7:now:now+86400 --out $c.emm
done
ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=12:size=320x240:rate=25 -f lavfi -i sine=duration=12 \
	-c:v mpeg2video -c:a mp2 -f mpegts clip.ts || kh_fail "ffmpeg could not make the clip"
kh_expect_ok headend scramble --keys h.keys --alg cissa --product 7 --period 5 --emm a.emm --emm b.emm \
	--in clip.ts --out s.ts
# card B takes its rights from the stream once, as files; card A's come in the round trip below
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card b.card --in s.ts --out b-ref.ts

# ---- errors: no such reader; a reader with no card (pcscd up, nothing served on slot 0)
kh_pcsc_start 3>&-
kh_expect_fail card info --card "pcsc:No such reader"
kh_err_has "reader 'No such reader': no such smart-card reader"
kh_expect_fail card info --card "pcsc:$CARDR"
kh_err_has "no card in the reader"

# ---- the round trip: card A and the CAM in readers, against the same modules as files
kh_card_copy a a0
kh_card_copy cam cam0
kh_expect_ok decoder play --decoder dec.card --cam cam0.card --card a0.card --in s.ts --out ref.ts
kh_start_daemon SA card serve --vpcd "$PORT" --card a.card
kh_start_daemon SCAM card serve --vpcd $((PORT + 1)) --card cam.card
kh_pcsc_wait_card "$CARDR" inserted
kh_pcsc_wait_card "$CAMR" inserted
kh_expect_ok pair --cam "pcsc:$CAMR" --card "pcsc:$CARDR" --decoder dec.card --count 2
kh_out_has "CAM paired with card $UA_A"
kh_expect_ok decoder play -v --decoder dec.card --cam "pcsc:$CAMR" --card "pcsc:$CARDR" --in s.ts --out rt.ts
grep -q "EMMs passed [1-9][0-9]*, accepted [1-9]" "$KH_ERR" || kh_fail "card A took no EMM through its reader"
cmp -s ref.ts rt.ts || kh_fail "through PC/SC readers the clear stream differs from the one the files give"
[ "$(kh_size rt.ts)" -gt 500000 ] || kh_fail "the round trip played almost nothing ($(kh_size rt.ts) bytes)"
kh_frames clip.ts | tail -n 200 >"$KH_META/clip.frames"
kh_frames rt.ts | tail -n 200 >"$KH_META/rt.frames"
cmp -s "$KH_META/clip.frames" "$KH_META/rt.frames" || kh_fail "the last 200 frames do not decode as the clip's"
kh_expect_ok decoder play --decoder dec.card --cam "pcsc:$CAMR" --card "pcsc:" --ladder --in s.ts --out rt2.ts
cmp -s ref.ts rt2.ts || kh_fail "with --ladder and pcsc: (the first reader with a card) the stream differs"

# ---- one stream in four parts through a FIFO, with the card changed between them
# the reference: card A's play of the whole stream (ref.ts); the split points, in packets
# (each halfway between two ECM packets near 30, 50 and 70 % of the stream, so that every change
# has component packets before the next ECM)
NPKT=$(($(kh_size s.ts) / 188))
# shellcheck disable=SC2046 # three numbers
set -- $(python3 - s.ts <<'EOF'
import sys
b = open(sys.argv[1], "rb").read()
pk = [b[i:i + 188] for i in range(0, len(b), 188)]
def first_table(p):
    afc = (p[3] >> 4) & 3
    pl = p[4 + (1 + p[4] if afc & 2 else 0):] if afc & 1 else b""
    return pl[1 + pl[0]] if (p[1] & 0x40) and len(pl) > 1 + pl[0] else None
ecm = [i for i, p in enumerate(pk) if first_table(p) in (0x80, 0x81)]
# the first packet of each new ECM (table_id and the section's bytes): the card is asked only then
seen, new = set(), []
for i in ecm:
    key = pk[i][4:]
    if key not in seen:
        seen.add(key)
        new.append(i)
# a split halfway between two ECM packets, near f of the stream, with no new ECM in the 700
# packets before it: the decoder's last read before a change asks the card nothing, so the
# change never meets an APDU in flight
mids = [(a + z) // 2 for a, z in zip(ecm, ecm[1:])]
for f in (0.3, 0.5, 0.7):
    t = int(len(pk) * f)
    ok = [m for m in mids if not any(m - 700 <= n < m for n in new)]
    print(min(ok, key=lambda m: abs(m - t)))
EOF
)
[ $# -eq 3 ] || kh_fail "could not find the split points in s.ts"
K1=$1
K2=$2
K3=$3
mkfifo in.fifo
"$KEYHOLE" decoder play --decoder dec.card --cam "pcsc:$CAMR" --card "pcsc:$CARDR" --service 1 \
	--in in.fifo --out - >live.ts 2>"$KH_META/live.err" </dev/null &
PLAY=$!
KH_PIDS="$KH_PIDS $PLAY"
# (every process started from here on gets 3>&-: a writer left open would keep the FIFO from ending;
# opened read-write so that it cannot block on a decoder that died before opening its input)
exec 3<>in.fifo

# drained: until the decoder has read everything written to the FIFO (FIONREAD 0)
drained()
{
	python3 - in.fifo <<'EOF' || kh_fail "the decoder did not read its input within 20 s"
import fcntl, os, struct, sys, termios, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
for _ in range(400):
    n = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    if n == 0:
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
EOF
}

# mark: from now on, said looks only at what the decoder says after this point
MARK=0
mark()
{
	MARK=$(wc -l <"$KH_META/live.err")
}

# said TEXT COUNT: until the decoder has said TEXT on COUNT lines of its stderr since the mark
said()
{
	i=0
	until [ "$(tail -n +$((MARK + 1)) "$KH_META/live.err" | grep -c -F "$1")" -ge "$2" ]; do
		kill -0 "$PLAY" 2>/dev/null || { sed 's/^/  play| /' "$KH_META/live.err" >&2; kh_fail "decoder play ended"; }
		[ "$i" -lt 100 ] || { sed 's/^/  play| /' "$KH_META/live.err" >&2; kh_fail "the decoder never said '$1'"; }
		sleep 0.1
		i=$((i + 1))
	done
}

# part PKT_FROM PKT_TO: that part of the stream into the FIFO, then until the decoder read it all
part()
{
	kill -0 "$PLAY" 2>/dev/null || { sed 's/^/  play| /' "$KH_META/live.err" >&2; kh_fail "decoder play ended"; }
	timeout 60 dd if=s.ts bs=188 skip="$1" count=$(($2 - $1)) status=none >&3 ||
		kh_fail "writing the FIFO (the decoder no longer reads it?)"
	drained
}

part 0 "$K1"
# the decoder holds its card: another program is refused, and the decoder is not disturbed
kh_expect_fail card info --card "pcsc:$CARDR" 3>&-
kh_err_has "reader '$CARDR': another program holds the card in that reader"
# card A out, card B in the same reader
mark
kill -USR1 "$SA"
said "the card was taken out of reader '$CARDR'" 1
kh_stop "$SA" TERM
mark
kh_start_daemon SB card serve --vpcd "$PORT" --card b.card 3>&-
said "a card is in reader '$CARDR'" 1
part "$K1" "$K2"
# pcscd killed: both readers go; the decoder waits for them and pairs again when they are back
# (SIGKILL in our own namespace; where the machine's /run/pcscd is used, SIGTERM, so that pcscd
# removes its own socket)
mark
if [ -n "$KH_PCSC_PRIVATE" ]; then
	kill -KILL "$PCSCD"
else
	kill -TERM "$PCSCD"
fi
said "reader '$CARDR' is gone" 1
said "reader '$CAMR' is gone" 1
wait "$PCSCD" 2>/dev/null
[ -z "$KH_PCSC_PRIVATE" ] || rm -f /run/pcscd/pcscd.comm /run/pcscd/pcscd.pid # our /run, a tmpfs
kh_pcsc_start 3>&-
said "a card is in reader '$CARDR'" 1
said "a CAM is in reader '$CAMR'" 1
part "$K2" "$K3"
# card B out, card C (no right to product 7) in
mark
kill -USR1 "$SB"
said "the card was taken out of reader '$CARDR'" 1
kh_stop "$SB" TERM
mark
kh_start_daemon SC card serve --vpcd "$PORT" --card c.card 3>&-
said "a card is in reader '$CARDR'" 1
part "$K3" "$NPKT"
exec 3>&-
i=0
while kill -0 "$PLAY" 2>/dev/null; do
	[ "$i" -lt 300 ] || { sed "s/^/  play| /" "$KH_META/live.err" >&2; kh_fail "decoder play did not end with its input"; }
	sleep 0.1
	i=$((i + 1))
done
wait "$PLAY"
rc=$?
[ "$rc" -eq 0 ] || { sed 's/^/  play| /' "$KH_META/live.err" >&2; kh_fail "decoder play: exit $rc"; }
grep -q "paired with card $UA_B" "$KH_META/live.err" || kh_fail "the decoder never paired with card B"
grep -q "paired with card $UA_C" "$KH_META/live.err" || kh_fail "the decoder never paired with card C"

# The exact output expected: ref.ts less, after each change at packet K (the packet before K too:
# the engine takes a packet when the next one's sync byte has come), the component packets up to
# the packet that completes the first ECM after it; after card C, every component packet.
python3 - s.ts ref.ts live.ts $((K1 - 1)) $((K2 - 1)) $((K3 - 1)) <<'EOF' || kh_fail "the output around the card changes is not what it must be"
import sys
def pkts(path):
    b = open(path, "rb").read()
    assert len(b) % 188 == 0, path
    return [b[i:i + 188] for i in range(0, len(b), 188)]
def pid(p): return ((p[1] & 0x1F) << 8) | p[2]
def tsc(p): return p[3] >> 6
def pusi(p): return p[1] & 0x40
inp, ref, out = pkts(sys.argv[1]), pkts(sys.argv[2]), pkts(sys.argv[3])
starts = [int(x) for x in sys.argv[4:]]
comp = {pid(p) for p in inp if tsc(p)}
# the ECM PID: the one in the PMT's CA descriptor would do; here, the PID whose sections carry
# table_id 0x80/0x81 and that is not a component
def payload(p):
    afc = (p[3] >> 4) & 3
    off = 4 + (1 + p[4] if afc & 2 else 0)
    return p[off:] if afc & 1 else b""
ecm_pids = {pid(p) for p in inp if pusi(p) and pid(p) not in comp and len(payload(p)) > 1
            and payload(p)[1 + payload(p)[0]] in (0x80, 0x81)}
assert len(ecm_pids) == 1, ecm_pids
(ecm_pid,) = ecm_pids
# the packets that complete an ECM section (an ECM may take more than one packet)
ecm_done, need = [], 0
for i, p in enumerate(inp):
    if pid(p) != ecm_pid:
        continue
    pl = payload(p)
    if pusi(p):
        sec = pl[1 + pl[0]:]
        need = ((sec[1] & 0x0F) << 8 | sec[2]) + 3 - len(sec)
    elif need > 0:
        need -= len(pl)
    else:
        continue
    if need <= 0:
        ecm_done.append(i)
def ecm_done_after(k):
    """index of the first packet at or after k that completes an ECM section"""
    return next((i for i in ecm_done if i >= k), len(inp))
windows = [(starts[0], ecm_done_after(starts[0])), (starts[1], ecm_done_after(starts[1])), (starts[2], len(inp))]
# map each reference packet of a component PID to its input index: the reference lost only the
# first packets of each PID (before the first ECM)
idx = {}
for i, p in enumerate(inp):
    if pid(p) in comp:
        idx.setdefault(pid(p), []).append(i)
seen = {q: 0 for q in comp}
nref = {q: sum(1 for p in ref if pid(p) == q) for q in comp}
expect, dropped = [], 0
for p in ref:
    q = pid(p)
    if q in comp:
        i = idx[q][len(idx[q]) - nref[q] + seen[q]]
        seen[q] += 1
        if any(a <= i < b for a, b in windows):
            dropped += 1
            continue
    expect.append(p)
bad = [i for i, p in enumerate(out) if tsc(p)]
if bad:
    sys.exit("%d scrambled packet(s) written, the first at output packet %d" % (len(bad), bad[0]))
if out != expect:
    n = next((i for i in range(min(len(out), len(expect))) if out[i] != expect[i]), min(len(out), len(expect)))
    where = {}
    for q in comp:
        k = 0
        for p in ref:
            if pid(p) == q:
                where[p] = idx[q][len(idx[q]) - nref[q] + k]
                k += 1
    def desc(p):
        return "pid %d input packet %s" % (pid(p), where.get(p, "-"))
    sys.exit("output differs from the expected at packet %d (%d written, %d expected, %d dropped by the changes; "
             "changes at input packets %s): written %s, expected %s"
             % (n, len(out), len(expect), dropped, windows, desc(out[n]) if n < len(out) else "none",
                desc(expect[n]) if n < len(expect) else "none"))
gaps = [sum(1 for i in idx[q] if a <= i < b) for a, b in windows[:2] for q in comp]
if min(sum(gaps[:len(comp)]), sum(gaps[len(comp):])) == 0:
    sys.exit("a change came right before an ECM: the test proves nothing (move the split points)")
print("ok: %d packets written, %d dropped by the card changes" % (len(out), dropped))
EOF
exit 0
