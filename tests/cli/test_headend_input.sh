#!/bin/sh
# `keyhole headend scramble` on inputs it must handle or refuse, each made from an ffmpeg clip.
#
# Damaged inputs: 100 bytes of garbage in front, one byte lost mid-stream, the scrambling bits
# set in one component packet, a final packet cut short, and all four at once. Each run ends
# with exit 0 and one warning line that counts what was skipped; the output is watched through
# `keyhole decoder play` (decoder module -> CAM -> card) and every component packet comes out
# byte for byte as in the clear clip without the one damaged packet, and ffmpeg decodes the same
# frames from both (framemd5). A programme that is scrambled already, noise and an empty file
# are refused (exit 1, no output file).
#
# PIDs: a clip of two programmes whose second one carries a component on 0x0FF0 (the default
# ECM PID). By default the headend picks free PIDs, says which with -v, and programme 2 passes
# untouched; an --ecm-pid or --emm-pid the input uses is refused (exit 1, no output file).
#
# Run by CTest as `sh test_headend_input.sh` with KEYHOLE and KH_SOURCE_DIR set.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init headend_input
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg/ffprobe not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need od awk cmp head tail dd
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# comp FILE PIDS: every packet of those PIDs (decimal), one line of decimal bytes each, in order
comp()
{
	od -An -v -tu1 -w188 "$1" | awk -v pids="$2" '
		BEGIN { n = split(pids, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
		(($2 % 32) * 256 + $3) in want'
}

# pkt_pid FILE K: the PID of packet K
pkt_pid()
{
	od -An -tu1 -j "$(($2 * 188 + 1))" -N 2 "$1" | awk '{ print ($1 % 32) * 256 + $2 }'
}

# without PACKET K: FILE with its packet K left out, into OUT
without()
{
	{ head -c "$(($2 * 188))" "$1"; tail -c +"$((($2 + 1) * 188 + 1))" "$1"; } >"$3"
}

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=8:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=8 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"
PIDS=$(ffprobe -v error -show_entries stream=id -of csv=p=0 clip.ts | tr -d ', ' | grep . | sort -u |
	while read -r id; do printf '%d ' "$id"; done)
[ -n "$PIDS" ] || kh_fail "ffprobe found no streams in the clip"
VID=$(echo "$PIDS" | cut -d' ' -f1)
NPKT=$(($(kh_size clip.ts) / 188))

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out h.keys
T=$(date +%s)
kh_expect_ok headend emm --keys h.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--out sub.emm

# a video packet in the middle of the clip: the one the damage hits
K=$((NPKT / 2))
while [ "$(pkt_pid clip.ts "$K")" -ne "$VID" ]; do
	K=$((K + 1))
done

# ---- the damaged inputs, and what should come out of each: the clip without the damaged packet ----
# (no 0x47 in the garbage, so where the packets start again is known to the byte)
head -c 1000 /dev/urandom | tr -d '\107' | head -c 100 >garbage.bin
[ "$(kh_size garbage.bin)" -eq 100 ] || kh_fail "could not make 100 bytes of garbage"
cat garbage.bin clip.ts >garbage.ts
cp clip.ts garbage.ref
# one byte of packet K lost
{ head -c "$((K * 188 + 50))" clip.ts; tail -c +"$((K * 188 + 52))" clip.ts; } >lost.ts
without clip.ts "$K" lost.ref
# packet K's transport_scrambling_control set (10: even key)
cp clip.ts tsc.ts
b=$(od -An -tu1 -j "$((K * 188 + 3))" -N 1 clip.ts | tr -d ' ')
# shellcheck disable=SC2059 # the format is the octal escape on purpose
printf "\\$(printf '%03o' "$(((b % 64) + 128))")" | dd of=tsc.ts bs=1 seek="$((K * 188 + 3))" conv=notrunc 2>/dev/null ||
	kh_fail "dd into tsc.ts"
without clip.ts "$K" tsc.ref
# the final packet cut to 100 bytes
head -c "$((NPKT * 188 - 88))" clip.ts >cut.ts
head -c "$(((NPKT - 1) * 188))" clip.ts >cut.ref
# all four: garbage, packet K - 300 loses a byte, packet K scrambled, the end cut
{
	cat garbage.bin
	head -c "$(((K - 300) * 188 + 20))" tsc.ts
	tail -c +"$(((K - 300) * 188 + 22))" tsc.ts
} >all.tmp
head -c "$(($(kh_size all.tmp) - 88))" all.tmp >all.ts
without clip.ts "$K" all.tmp
without all.tmp "$((K - 300))" all.tmp2
head -c "$(((NPKT - 3) * 188))" all.tmp2 >all.ref
rm -f all.tmp all.tmp2

for d in garbage lost tsc cut all; do
	kh_expect_ok headend scramble --keys h.keys --in "$d.ts" --out "s-$d.ts" --alg cissa --product 7 --period 5 \
		--time "$T" --emm sub.emm
	kh_check_one_line
	kh_err_has "^keyhole: warning: $d.ts: damaged input: "
	case $d in
	garbage) kh_err_has ': 100 byte\(s\) skipped in 1 place' ;;
	lost) kh_err_has ': 187 byte\(s\) skipped in 1 place' ;;
	tsc) kh_err_has ': 1 component packet\(s\) that arrived scrambled dropped' ;;
	cut) kh_err_has ': a final packet cut short \(100 bytes\) dropped' ;;
	all)
		kh_err_has '287 byte\(s\) skipped in 2 place'
		kh_err_has 'a final packet cut short \(100 bytes\)'
		kh_err_has '1 component packet\(s\) that arrived scrambled'
		;;
	esac
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in "s-$d.ts" --out "c-$d.ts"
	comp "$d.ref" "$PIDS" >want.pk
	comp "c-$d.ts" "$PIDS" >got.pk
	[ "$(wc -l <want.pk)" -gt 1000 ] || kh_fail "$d: only $(wc -l <want.pk) component packets expected"
	cmp -s want.pk got.pk ||
		kh_fail "$d: the descrambled components differ from the clip's without the damaged packet" \
			"($(wc -l <got.pk) packets, want $(wc -l <want.pk))"
	kh_frames "$d.ref" >want.md5
	kh_frames "c-$d.ts" >got.md5
	[ -s got.md5 ] && cmp -s want.md5 got.md5 || kh_fail "$d: decoded frames differ from the intact input's"
	kh_note "$d: $(wc -l <got.pk) component packets and $(wc -l <got.md5) frames as in the intact input"
done
cmp -s clear.md5 got.md5 && kh_fail "the frame comparison cannot see a lost packet (test is blind)"
kh_frames c-garbage.ts >got.md5
cmp -s clear.md5 got.md5 || kh_fail "garbage in front: the frames differ from the clear clip's"
kh_no_tmp_files "$KH_WORK"

# the same from a pipe: the warning names standard input
cat garbage.bin clip.ts | "$KEYHOLE" headend scramble --keys h.keys --alg cissa --product 7 \
	>pipe.ts 2>"$KH_META/pipe.err" || kh_fail "scramble of a damaged pipe failed: $(cat "$KH_META/pipe.err")"
grep -q '^keyhole: warning: standard input: damaged input: 100 byte(s) skipped' "$KH_META/pipe.err" ||
	kh_fail "pipe: $(cat "$KH_META/pipe.err")"
[ "$(wc -l <"$KH_META/pipe.err")" -eq 1 ] || kh_fail "pipe: more than one line on stderr"

# ---- refused: what cannot be handled safely, or is not a transport stream ----
kh_expect_fail headend scramble --keys h.keys --in s-garbage.ts --out x.ts --alg cissa --product 7 --cw-log x.cw
kh_err_has 'scrambled already'
head -c 5000 /dev/urandom >noise.ts
kh_expect_fail headend scramble --keys h.keys --in noise.ts --out x.ts --alg cissa --product 7
kh_err_has 'noise.ts: not a transport stream'
: >empty.ts
kh_expect_fail headend scramble --keys h.keys --in empty.ts --out x.ts --alg cissa --product 7
kh_err_has 'not a transport stream'
[ ! -e x.ts ] && [ ! -e x.cw ] || kh_fail "a refused input left an output file"
kh_no_tmp_files "$KH_WORK"

# ---- ECM and EMM PIDs the input uses ----
ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=6:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=6 -f lavfi -i testsrc2=duration=6:size=160x120:rate=25 \
	-map 0:v -map 1:a -map 2:v -c:v mpeg2video -c:a mp2 -streamid 0:0x100 -streamid 1:0x101 -streamid 2:0xFF0 \
	-program program_num=1:title=A:st=0:st=1 -program program_num=2:title=B:st=2 -f mpegts two.ts ||
	kh_fail "ffmpeg could not make the two-programme clip"
comp two.ts 4080 >p2.pk
[ "$(wc -l <p2.pk)" -gt 100 ] || kh_fail "the two-programme clip has only $(wc -l <p2.pk) packets on 0x0FF0"
# by default: free PIDs, told with -v; programme 2 passes untouched, programme 1 descrambles
kh_expect_ok headend scramble --keys h.keys --in two.ts --out s-two.ts --alg cissa --product 7 --period 5 \
	--time "$T" --emm sub.emm --service 1 -v
kh_err_has 'ECM PID 0x0FF2 \(0x0FF0 is in use in the input: a component \(program 2\)\), EMM PID 0x0FF1$'
comp s-two.ts 4080 >got.pk
cmp -s p2.pk got.pk || kh_fail "programme 2's component on 0x0FF0 did not pass untouched"
[ "$(comp s-two.ts 4082 | wc -l)" -gt 50 ] || kh_fail "no ECMs on the PID chosen, 0x0FF2"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s-two.ts --out c-two.ts
comp two.ts "256 257" >want.pk
comp c-two.ts "256 257" >got.pk
cmp -s want.pk got.pk || kh_fail "programme 1 did not descramble beside programme 2"
# given, and in use: refused, nothing written
kh_expect_fail headend scramble --keys h.keys --in two.ts --out x.ts --alg cissa --product 7 --ecm-pid 0x0FF0 \
	--cw-log x.cw
kh_err_has '--ecm-pid 0x0FF0 is in use in the input: a component \(program 2\)'
kh_expect_fail headend scramble --keys h.keys --in two.ts --out x.ts --alg cissa --product 7 --emm-pid 0x1000
kh_err_has '--emm-pid 0x1000 is in use in the input: the PMT PID \(program 1\)'
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg cissa --product 7 --ecm-pid 0
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg cissa --product 7 --ecm-pid 0x0FF0 \
	--emm-pid 0x0FF0
[ ! -e x.ts ] && [ ! -e x.cw ] || kh_fail "a refused PID left an output file"
# given and free: taken; the default steps aside from it
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out s-pid.ts --alg cissa --product 7 --ecm-pid 0x0FF1 -v
kh_err_has 'ECM PID 0x0FF1, EMM PID 0x0FF2$'
kh_no_tmp_files "$KH_WORK"
kh_note "damaged inputs scrambled and descrambled bit-exact where intact; PIDs in use avoided or refused"
