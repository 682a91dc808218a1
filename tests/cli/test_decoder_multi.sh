#!/bin/sh
# decoder play on a multiplex: three programmes (ffmpeg), each scrambled by its own run of
# `keyhole headend scramble` (its own ECM PID, product and algorithm), a card entitled to two of
# the three products. Without --service the output carries exactly the two programmes the card
# may watch, every component packet written equal to the clear source's and none scrambled; the
# third is left out with one line. --service picks; a named programme is never left out. The
# per-PID counts at the end agree with the input: descrambled = the scrambled packets of the PID
# from its programme's first ECM on, dropped = those before it.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init decoder_multi
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg/ffprobe not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need python3 grep
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ---- helpers ----

# check_pids CLEAR SCRAMBLED OUT ECM_PID PID...: for each PID, "PID scrambled before_ecm out same|DIFF":
# its scrambled packets in SCRAMBLED, those before the first packet of ECM_PID, its packets in OUT,
# and whether they are the last packets of that PID in CLEAR byte for byte. Fails when OUT holds
# a scrambled packet.
check_pids()
{
	python3 - "$@" <<'PY'
import sys

def pkts(path):
    b = open(path, "rb").read()
    per, order = {}, []
    for i in range(0, len(b) - 187, 188):
        p = b[i:i + 188]
        pid = (p[1] & 0x1F) << 8 | p[2]
        per.setdefault(pid, []).append(p)
        order.append((pid, p))
    return per, order

clear, _ = pkts(sys.argv[1])
scr, sorder = pkts(sys.argv[2])
out, oorder = pkts(sys.argv[3])
ecm = int(sys.argv[4], 0)
if any(p[3] >> 6 for _, p in oorder):
    sys.exit("a packet of the output is still scrambled")
for a in sys.argv[5:]:
    pid = int(a, 0)
    o, c = out.get(pid, []), clear[pid]
    nscr = sum(1 for p in scr[pid] if p[3] >> 6 >= 2)
    before = 0
    for q, p in sorder:
        if q == ecm:
            break
        before += q == pid and p[3] >> 6 >= 2
    same = len(o) > 0 and o == c[len(c) - len(o):]
    print(pid, nscr, before, len(o), "same" if same else "DIFF")
PY
}

# The report line of a PID in the last play's stderr (play.err): "program role in out descrambled dropped".
pid_line()
{
	sed -n "s/^keyhole: pid $1 program \([^ ]*\) \([^:]*\): in \([0-9]*\) out \([0-9]*\) descrambled \([0-9]*\) dropped \([0-9]*\)\$/\1 \2 \3 \4 \5 \6/p" \
		play.err
}

# The elementary-stream frames of programme P of a TS (video and audio, as coded): "stream size
# md5" per frame (timestamps left out: an output that starts later has them rebased).
prog_frames()
{
	ffmpeg -nostdin -v error -i "$1" -map "0:p:$2:v" -map "0:p:$2:a" -c copy -f framemd5 - 2>/dev/null |
		grep -v '^#' | awk -F', *' '{ print $1, $5, $6 }'
}

# The programmes `keyhole ts inspect` finds in a TS, one number per line.
programmes()
{
	kh_expect_ok ts inspect "$1"
	sed -n 's/^programme \([0-9]*\): .*/\1/p' "$KH_OUT"
}

# ---- a multiplex of three programmes, scrambled programme by programme ----

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=8:size=96x64:rate=25 -f lavfi -i sine=frequency=440:duration=8 \
	-f lavfi -i testsrc2=duration=8:size=96x64:rate=25 -f lavfi -i sine=frequency=660:duration=8 \
	-f lavfi -i smptebars=duration=8:size=96x64:rate=25 -f lavfi -i sine=frequency=880:duration=8 \
	-map 0:v -map 1:a -map 2:v -map 3:a -map 4:v -map 5:a -c:v mpeg2video -c:a mp2 \
	-program program_num=1:title=A:st=0:st=1 -program program_num=2:title=B:st=2:st=3 \
	-program program_num=3:title=C:st=4:st=5 -f mpegts mux.ts || kh_fail "ffmpeg could not make the multiplex"
[ "$(programmes mux.ts | tr '\n' ' ')" = "1 2 3 " ] || kh_fail "the multiplex does not hold programmes 1, 2 and 3"
# ffmpeg numbers the components from 0x100 in programme order
V1=256 A1=257 V2=258 A2=259 V3=260 A3=261

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role card --ua 0x66 --out none.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
T=$(date +%s)
# card 65: products 7 and 8, not 9; card 66: the service keys, no product
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--entitle "8:$((T - 100)):$((T + 100000))" --out sub.emm
kh_expect_ok headend emm --keys headend.keys --ua 00000066 --service-keys --out none.emm
cat sub.emm none.emm >all.emm

# The scrambler takes one programme per run and names only its own EMM PID in the CAT: the
# EMMs go with the last run.
kh_expect_ok headend scramble --keys headend.keys --in mux.ts --out s3.ts --service 3 --alg idsa --product 9 \
	--ecm-pid 0x1F2 --period 5 --time "$T"
kh_expect_ok headend scramble --keys headend.keys --in s3.ts --out s2.ts --service 2 --alg cissa --product 8 \
	--ecm-pid 0x1F1 --period 5 --time "$T"
kh_expect_ok headend scramble --keys headend.keys --in s2.ts --out mux-s.ts --service 1 --alg csa2 --product 7 \
	--ecm-pid 0x1F0 --period 5 --time "$T" --emm all.emm
kh_expect_ok ts inspect mux-s.ts
[ "$(grep -c 'CA system 0x4B48 (Keyhole) PID 0x01F' "$KH_OUT")" -eq 3 ] ||
	kh_fail "the three programmes do not each name their ECM PID"

# ---- no --service: the programmes the card has rights for ----

kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --out out.ts
cp "$KH_ERR" play.err
[ "$(grep -c 'left out of the output' play.err)" -eq 1 ] || kh_fail "not exactly one 'left out' line"
grep -q '^keyhole: programme 3: left out of the output' play.err || kh_fail "no 'programme 3: left out' line"
[ "$(programmes out.ts | tr '\n' ' ')" = "1 2 " ] || kh_fail "the output does not hold exactly programmes 1 and 2"
check_pids mux.ts mux-s.ts out.ts 0x1F0 $V1 $A1 >p1.txt || kh_fail "programme 1: $(cat p1.txt)"
check_pids mux.ts mux-s.ts out.ts 0x1F1 $V2 $A2 >p2.txt || kh_fail "programme 2: $(cat p2.txt)"
while read -r pid nscr before nout same; do
	[ "$same" = same ] || kh_fail "pid $pid: the output's packets are not the clear source's"
	[ "$nscr" -gt 100 ] || kh_fail "pid $pid: only $nscr scrambled packets in the input"
	[ "$nout" -eq $((nscr - before)) ] || kh_fail "pid $pid: $nout packets out, want $nscr - $before"
	set -- $(pid_line "$pid")
	[ "$#" -eq 6 ] || kh_fail "pid $pid: no per-PID line on stderr"
	[ "$5" -eq $((nscr - before)) ] || kh_fail "pid $pid: $5 descrambled, want $((nscr - before))"
	[ "$6" -eq "$before" ] || kh_fail "pid $pid: $6 dropped, want $before (those before the first ECM)"
	[ "$3" -eq "$nscr" ] || kh_fail "pid $pid: $3 in, want $nscr"
done <<EOT
$(cat p1.txt p2.txt)
EOT
# the last scrambler's programme has its ECM first: every one of its packets is descrambled
for pid in $V1 $A1; do
	set -- $(pid_line $pid)
	[ "$1 $6" = "1 0" ] || kh_fail "pid $pid: programme/dropped '$1 $6', want '1 0'"
done
set -- $(pid_line $V1)
[ "$2" = video ] || kh_fail "pid $V1: role $2, want video"
set -- $(pid_line $A2)
[ "$1 $2" = "2 audio" ] || kh_fail "pid $A2: '$1 $2', want '2 audio'"
for pid in $V3 $A3; do
	set -- $(pid_line $pid)
	[ "$1 $4 $5" = "3 0 0" ] || kh_fail "pid $pid (programme 3): '$1 $4 $5', want '3 0 0' (program out descrambled)"
	[ "$3" -eq "$6" ] || kh_fail "pid $pid (programme 3): $3 in but $6 dropped"
done
for pid in 496 497 498; do
	set -- $(pid_line $pid)
	[ "$2 $4" = "ECM 0" ] || kh_fail "pid $pid: '$2 $4', want 'ECM 0'"
done
# the frames: each programme's frames are the clear source's (the chained scrambler runs
# drop a programme's first packets, and a programme plays from its first ECM on)
for p in 1 2; do
	prog_frames mux.ts $p >"clear$p.md5"
	prog_frames out.ts $p >"out$p.md5"
	[ -s "clear$p.md5" ] || kh_fail "no frames decoded from programme $p of the clear multiplex"
	[ "$(wc -l <"out$p.md5")" -gt $(($(wc -l <"clear$p.md5") * 9 / 10)) ] ||
		kh_fail "programme $p: $(wc -l <"out$p.md5") frames of $(wc -l <"clear$p.md5")"
	! grep -vxFf "clear$p.md5" "out$p.md5" >/dev/null ||
		kh_fail "programme $p: a frame is not one of the clear source's"
done
kh_note "no --service: programmes 1 and 2 out ($(wc -l <out1.md5) and $(wc -l <out2.md5) frames), 3 left out"

# ---- --service picks; a named programme is never left out ----

kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --out two.ts --service 2
cp "$KH_ERR" play.err
[ "$(programmes two.ts | tr '\n' ' ')" = "2 " ] || kh_fail "--service 2: the output holds other programmes"
check_pids mux.ts mux-s.ts two.ts 0x1F1 $V2 $A2 >p2b.txt || kh_fail "--service 2: $(cat p2b.txt)"
cmp -s p2.txt p2b.txt || kh_fail "--service 2: programme 2 is not the same as without --service"
set -- $(pid_line $V1)
[ "$4" -eq 0 ] || kh_fail "--service 2: $4 packets of programme 1's video written"
! grep -q 'left out' play.err || kh_fail "--service 2: a programme was said left out"

kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --out one3.ts \
	--service 1 --service 3
cp "$KH_ERR" play.err
[ "$(programmes one3.ts | tr '\n' ' ')" = "1 3 " ] || kh_fail "--service 1 --service 3: not programmes 1 and 3"
grep -q '^keyhole: programme 3: no subscription for this channel' play.err ||
	kh_fail "programme 3 named without rights: the viewer was not told"
! grep -q 'left out' play.err || kh_fail "a named programme was left out"
set -- $(pid_line $V3)
[ "$4 $5" = "0 0" ] || kh_fail "programme 3 without rights: '$4 $5' out/descrambled"
set -- $(pid_line $V1)
[ "$6" -eq 0 ] || kh_fail "--service 1 --service 3: $6 packets of programme 1's video dropped"

# a programme the stream does not have: said; alone, play fails and writes nothing
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --out two9.ts \
	--service 2 --service 9
kh_err_has '^keyhole: warning: program 9 is not in the stream \(no PAT lists it\)$'
[ "$(programmes two9.ts | tr '\n' ' ')" = "2 " ] || kh_fail "--service 2 --service 9: not programme 2 alone"
kh_run decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --out nine.ts --service 9
[ "$KH_RC" -eq 1 ] || kh_fail "--service 9 alone: play exited $KH_RC, want 1"
[ "$(tail -n 1 "$KH_ERR")" = "keyhole: program 9 is not in the stream (no PAT lists it)" ] ||
	kh_fail "--service 9 alone: last line '$(tail -n 1 "$KH_ERR")'"
[ ! -e nine.ts ] || kh_fail "--service 9 alone: an output was written"

# a card with no product: every programme left out, and play fails saying so
kh_run decoder play --decoder dec.card --cam cam.card --card none.card --in mux-s.ts --out none.ts
[ "$KH_RC" -eq 1 ] || kh_fail "a card with no rights: play exited $KH_RC, want 1"
cp "$KH_ERR" play.err
[ "$(grep -c 'left out of the output' play.err)" -eq 3 ] || kh_fail "a card with no rights: not three 'left out' lines"
[ "$(tail -n 1 play.err)" = \
	"keyhole: not one programme of the stream is one the card has rights for (3 left out)" ] ||
	kh_fail "a card with no rights: last line '$(tail -n 1 play.err)'"
[ ! -e none.ts ] || kh_fail "a failed play left an output file"

# ---- usage ----
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --service 1 --service 1
kh_err_has 'given twice'
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --service 1 --service 0
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --ladder \
	--service 1 --service 2
kh_err_has 'ladder'
kh_expect_usage decoder buy --decoder dec.card --cam cam.card --card card.card --in mux-s.ts --service 1 --service 2
exit 0
