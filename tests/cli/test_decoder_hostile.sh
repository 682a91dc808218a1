#!/bin/sh
# `keyhole decoder play` on a damaged or hostile stream, with a real ffmpeg clip scrambled by
# `keyhole headend scramble`, in open mode and with the key ladder:
# - a forged ECM (one byte changed) in place of, or in front of, the first copy of each new
#   ECM, and another operator's ECMs on the ECM PID: the card refuses them, nothing changes, the
#   programme plays bit-exact with not one packet dropped (the output is byte for byte the
#   genuine stream's);
# - every ECM of one crypto period lost: that period's packets are dropped and counted, none is
#   "descrambled" with the key of two periods before (every packet out is one of the genuine
#   output's, in order);
# - 100 bytes of garbage first, a byte lost mid-stream, a cut last packet: the 188-byte cadence is
#   found again, the skipped bytes are counted; a JPEG or an empty file is "not a transport
#   stream" (exit 1, no output file);
# - nothing descrambled (no subscription): exit 1 with the reason, no output file;
# - SIGTERM or SIGINT while writing --out FILE: no FILE.tmp.XXXXXX left, the card's counters stored;
#   a reader that closes the pipe: one line, exit 1, the card's counters stored; a full device
#   and a file size limit: the file and the cause named.
# Run by CTest as `sh test_decoder_hostile.sh` with KEYHOLE and KH_SOURCE_DIR set.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init decoder_hostile
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs it)"
	exit 0
fi
kh_need od awk dd cmp diff split mkfifo
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

ECM_PID=4080 # 0x0FF0, the headend's default

# ---- helpers ----

# Each packet of FILE as one line of decimal bytes, without the null packets (PID 0x1FFF).
packets()
{
	od -An -v -tu1 -w188 "$1" | awk '(($2 % 32) * 256 + $3) != 8191'
}

# Indices (from 0) of the first packet of each new ECM section in FILE (the ECMs fit one packet).
ecm_starts()
{
	od -An -v -tu1 -w188 "$1" | awk -v pid="$ECM_PID" '
		(($2 % 32) * 256 + $3) == pid {
			k = ""; for (i = 6; i <= 80; i++) k = k " " $i
			if (k != last) print NR - 1
			last = k
		}'
}

# Indices of every ECM packet of FILE.
ecm_all()
{
	od -An -v -tu1 -w188 "$1" | awk -v pid="$ECM_PID" '(($2 % 32) * 256 + $3) == pid { print NR - 1 }'
}

# put_packet FILE INDEX SRC: packet INDEX of FILE becomes the 188 bytes of SRC.
put_packet()
{
	dd if="$3" of="$1" bs=188 seek="$2" count=1 conv=notrunc 2>/dev/null || kh_fail "dd into $1"
}

# get_packet FILE INDEX DST
get_packet()
{
	dd if="$1" of="$3" bs=188 skip="$2" count=1 2>/dev/null || kh_fail "dd from $1"
	[ "$(kh_size "$3")" -eq 188 ] || kh_fail "$1 has no packet $2"
}

# "NAME N" from the -v summary: the number before NAME ("dropped without a key", "descrambled")
# or after it ("refused", "answered").
count_before()
{
	sed -n "s/.* \\([0-9][0-9]*\\) $1.*/\\1/p" "$KH_ERR" | head -n 1
}
count_after()
{
	sed -n "s/.*$1 \\([0-9][0-9]*\\).*/\\1/p" "$KH_ERR" | head -n 1
}

status_of()
{
	kh_expect_ok decoder status --card "$1"
	sed -n "s/^$2 //p" "$KH_OUT" | head -n 1
}

# ecms counted by the card (stored counters): `decoder status` prints "ecms N cws M ..."
card_ecms()
{
	kh_expect_ok decoder status --card "$1"
	sed -n 's/^ecms \([0-9][0-9]*\) .*/\1/p' "$KH_OUT"
}

# play MODE IN OUT [more]: decoder play -v, MODE "" (open) or --ladder
play()
{
	kh_pm=$1
	shift
	# shellcheck disable=SC2086 # MODE is empty or one word
	kh_run decoder play -v --decoder dec.card --cam cam.card --card card.card $kh_pm --in "$1" --out "$2"
}

# ---- the operator, the modules, the clip ----

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=12:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=12 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"
kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role card --ua 0x66 --out none.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
T=$(date +%s)
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys \
	--entitle "7:$((T - 100)):$((T + 100000))" --out sub.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm

# the genuine stream, in both modes: the reference output
for mode in "" --ladder; do
	play "$mode" s.ts "c$mode.ts"
	[ "$KH_RC" -eq 0 ] || kh_fail "genuine stream$mode: exit $KH_RC"
	[ "$(count_before 'dropped without a key')" = 0 ] || kh_fail "genuine stream$mode: packets dropped"
done
cmp -s c.ts c--ladder.ts || kh_fail "the key ladder gave another clear stream"
kh_frames c.ts >c.md5
cmp -s clear.md5 c.md5 || kh_fail "the genuine stream does not play bit-exactly"
# shellcheck disable=SC2046 # one index per word
set -- $(ecm_starts s.ts)
[ $# -eq 3 ] || kh_fail "expected 3 ECMs (12 s in periods of 5 s), found $#"
E1=$2
E2=$3

# ---- a forged ECM (one byte changed) in place of the first copy of ECMs 1 and 2 ----
cp s.ts forged.ts
for e in "$E1" "$E2"; do
	get_packet s.ts "$e" ecm.pkt
	kh_flip_byte ecm.pkt 100
	put_packet forged.ts "$e" ecm.pkt
done
for mode in "" --ladder; do
	play "$mode" forged.ts "f$mode.ts"
	[ "$KH_RC" -eq 0 ] || kh_fail "forged ECM$mode: exit $KH_RC"
	[ "$(count_after refused)" -ge 2 ] || kh_fail "forged ECM$mode: the card did not refuse the forgeries"
	[ "$(count_before 'dropped without a key')" = 0 ] || kh_fail "forged ECM$mode: $(count_before 'dropped without a key') packets dropped"
	cmp -s c.ts "f$mode.ts" || kh_fail "forged ECM$mode: the clear stream differs from the genuine one's"
done
kh_frames f.ts >f.md5
cmp -s clear.md5 f.md5 || kh_fail "forged ECM: the frames differ from the clear clip's"
# the same forgeries added in front of the genuine first copies, with their continuity counter
# (so the genuine copy right behind looks like a duplicate and is dropped too)
cp s.ts added.ts
shift_by=0
for e in "$E1" "$E2"; do
	e=$((e + shift_by))
	get_packet added.ts "$e" ecm.pkt
	kh_flip_byte ecm.pkt 100
	{
		head -c $((e * 188)) added.ts
		cat ecm.pkt
		tail -c +$((e * 188 + 1)) added.ts
	} >added.tmp
	mv added.tmp added.ts
	shift_by=$((shift_by + 1))
done
[ "$(kh_size added.ts)" -eq $(($(kh_size s.ts) + 2 * 188)) ] || kh_fail "forged ECMs were not added"
for mode in "" --ladder; do
	play "$mode" added.ts "a$mode.ts"
	[ "$KH_RC" -eq 0 ] || kh_fail "added forged ECM$mode: exit $KH_RC"
	[ "$(count_before 'dropped without a key')" = 0 ] || kh_fail "added forged ECM$mode: packets dropped"
	cmp -s c.ts "a$mode.ts" || kh_fail "added forged ECM$mode: the clear stream differs from the genuine one's"
done
kh_note "forged ECMs: refused, the programme plays bit-exact, 0 packets dropped (open and key ladder)"

# ---- another operator's ECMs on the ECM PID ----
# every other ECM packet of our stream replaced by one of the other operator's (its continuity
# counter kept, so only the content differs): the other operator announces each period 3 s
# ahead, so its sections carry the numbers of ours to come before ours do
kh_expect_ok authority init other
kh_expect_ok headend keys init --authority other --out other.keys
kh_expect_ok headend scramble --keys other.keys --in clip.ts --out o.ts --alg cissa --product 7 --period 5 \
	--lead 3000 --time "$T"
ecm_starts o.ts >o.idx
n_other=$(wc -l <o.idx)
[ "$n_other" -ge 3 ] || kh_fail "the other operator's stream has $n_other ECMs"
cp s.ts foreign.ts
i=0
for e in $(ecm_all s.ts); do
	i=$((i + 1))
	[ $((i % 2)) -eq 0 ] || continue
	o=$(sed -n "$(((i / 2) % n_other + 1))p" o.idx)
	get_packet o.ts "$o" o.pkt
	get_packet s.ts "$e" g.pkt
	# bytes 0-2 and 4-187 from the other operator, byte 3 (flags and counter) ours
	{
		dd if=o.pkt bs=1 count=3 2>/dev/null
		dd if=g.pkt bs=1 skip=3 count=1 2>/dev/null
		dd if=o.pkt bs=1 skip=4 2>/dev/null
	} >f.pkt
	put_packet foreign.ts "$e" f.pkt
done
for mode in "" --ladder; do
	play "$mode" foreign.ts "o$mode.ts"
	[ "$KH_RC" -eq 0 ] || kh_fail "foreign ECMs$mode: exit $KH_RC"
	[ "$(count_after refused)" -ge 1 ] || kh_fail "foreign ECMs$mode: no ECM refused"
	[ "$(count_after refused)" -le "$n_other" ] ||
		kh_fail "foreign ECMs$mode: $(count_after refused) refusals: the card was asked again for the same sections"
	[ "$(count_before 'dropped without a key')" = 0 ] || kh_fail "foreign ECMs$mode: $(count_before 'dropped without a key') packets dropped"
	cmp -s c.ts "o$mode.ts" || kh_fail "foreign ECMs$mode: the clear stream differs from the genuine one's"
done
kh_frames o.ts >o.md5
cmp -s clear.md5 o.md5 || kh_fail "foreign ECMs: the frames differ from the clear clip's"
kh_note "another operator's ECMs: refused, each once; the programme plays bit-exact, 0 dropped"

# ---- every ECM of period 2 lost ----
printf '\107\037\377\020' >null.pkt
dd if=/dev/zero bs=184 count=1 2>/dev/null | tr '\000' '\377' >>null.pkt
cp s.ts lost.ts
for e in $(ecm_all s.ts); do
	[ "$e" -ge "$E2" ] && put_packet lost.ts "$e" null.pkt
done
packets c.ts >c.lines
for mode in "" --ladder; do
	play "$mode" lost.ts "x$mode.ts"
	[ "$KH_RC" -eq 0 ] || kh_fail "lost ECM$mode: exit $KH_RC"
	dropped=$(count_before 'dropped without a key')
	[ "$dropped" -gt 100 ] || kh_fail "lost ECM$mode: only $dropped packets dropped for period 2"
	noecm=$(sed -n 's/.*(\([0-9][0-9]*\) of crypto periods whose ECM did not come).*/\1/p' "$KH_ERR")
	[ "$noecm" = "$dropped" ] || kh_fail "lost ECM$mode: $dropped dropped, $noecm counted as without their ECM"
	# every packet out is one of the genuine output's, in order: only deletions
	packets "x$mode.ts" >x.lines
	diff c.lines x.lines >x.diff
	! grep -q '^>' x.diff || kh_fail "lost ECM$mode: packets out that the genuine stream does not have (a stale key)"
	[ "$(grep -c '^<' x.diff)" -eq "$dropped" ] ||
		kh_fail "lost ECM$mode: $(grep -c '^<' x.diff) packets missing, $dropped counted as dropped"
done
kh_note "lost ECM: $dropped packets of period 2 dropped and counted, none descrambled with a stale key"

# ---- resynchronisation ----
dd if=/dev/zero bs=100 count=1 2>/dev/null | tr '\000' '\252' >garbage.bin
cat garbage.bin s.ts >g.ts
play "" g.ts g-out.ts
[ "$KH_RC" -eq 0 ] || kh_fail "leading garbage: exit $KH_RC"
kh_err_has 'warning: g.ts: 100 byte\(s\) outside the 188-byte packet cadence skipped'
cmp -s c.ts g-out.ts || kh_fail "leading garbage: the clear stream differs from the genuine one's"
# one byte lost in the middle (packet 3000)
head -c $((3000 * 188 + 50)) s.ts >b.ts
tail -c +$((3000 * 188 + 52)) s.ts >>b.ts
play "" b.ts b-out.ts
[ "$KH_RC" -eq 0 ] || kh_fail "lost byte: exit $KH_RC"
kh_err_has '187 byte\(s\) outside the 188-byte packet cadence skipped \(cadence lost 1 time\(s\)\)'
packets b-out.ts >b.lines
diff c.lines b.lines >b.diff
! grep -q '^>' b.diff || kh_fail "lost byte: a damaged packet came out"
[ "$(grep -c '^<' b.diff)" -le 1 ] || kh_fail "lost byte: $(grep -c '^<' b.diff) packets lost, not one"
# a cut last packet
head -c $(($(kh_size s.ts) - 100)) s.ts >t.ts
play "" t.ts t-out.ts
[ "$KH_RC" -eq 0 ] || kh_fail "cut packet: exit $KH_RC"
kh_err_has '88 byte\(s\) outside'
# no transport stream at all: a JPEG, an empty file; nothing written
ffmpeg -nostdin -v error -f lavfi -i testsrc=size=320x240 -frames:v 1 pic.jpg || kh_fail "ffmpeg: no JPEG"
: >empty.ts
for f in pic.jpg empty.ts; do
	for mode in "" --ladder; do
		# shellcheck disable=SC2086
		kh_expect_fail decoder play --decoder dec.card --cam cam.card --card card.card $mode --in "$f" --out n.ts
		kh_err_has "^keyhole: $f: not a transport stream"
		[ ! -e n.ts ] || kh_fail "$f: an output file was written"
		[ -z "$(find . -name 'n.ts.*')" ] || kh_fail "$f: a temporary file was left"
	done
done
kh_note "resynchronised after garbage and a lost byte; a JPEG and an empty file are not transport streams"

# ---- nothing descrambled: exit 1 with the reason; a clear stream is fine ----
for mode in "" --ladder; do
	# shellcheck disable=SC2086
	kh_run decoder play --decoder dec.card --cam cam.card --card none.card $mode --in s.ts --out none.ts
	[ "$KH_RC" -eq 1 ] || kh_fail "no subscription$mode: exit $KH_RC, want 1"
	[ "$(tail -n 1 "$KH_ERR")" = "keyhole: program 1: not one packet could be descrambled: the card holds no key for this channel's ECMs (no subscription for this channel)" ] ||
		kh_fail "no subscription$mode: last line is '$(tail -n 1 "$KH_ERR")'"
	[ ! -e none.ts ] || kh_fail "no subscription$mode: an output file was written"
	[ -z "$(find . -name 'none.ts.*')" ] || kh_fail "no subscription$mode: a temporary file was left"
done
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card none.card --in clip.ts --out clear.ts
[ "$(kh_size clear.ts)" -eq "$(kh_size clip.ts)" ] || kh_fail "a clear stream did not pass whole"
kh_frames clear.ts >clear2.md5
cmp -s clear.md5 clear2.md5 || kh_fail "a clear stream did not play bit-exactly"

# ---- interrupted output ----
# The card took its EMM in the runs above: now only ECMs reach it, whose counters the card
# stores when told the stream is over (CAS FLUSH) or every 256 control words.
head -c $((3000 * 188)) s.ts >half.ts
for sig in TERM INT; do
	before=$(card_ecms card.card)
	rm -f in.fifo
	mkfifo in.fifo
	# the shell holds the FIFO open for writing: play blocks in its read, never sees the end
	exec 3<>in.fifo
	KEYHOLE_LOG=debug "$KEYHOLE" decoder play --decoder dec.card --cam cam.card --card card.card --in in.fifo \
		--out int.ts 2>int.err &
	PID=$!
	KH_PIDS="$KH_PIDS $PID"
	cat half.ts >&3
	i=0
	while [ "$(grep -c 'event=decoder.ecm ' int.err)" -lt 2 ]; do
		[ "$i" -lt 100 ] || kh_fail "SIG$sig: play did not pass two ECMs within 10 s"
		sleep 0.1
		i=$((i + 1))
	done
	passed=$(grep -c 'event=decoder.ecm ' int.err)
	kh_stop "$PID" "$sig"
	exec 3>&-
	[ "$KH_RC" -eq 1 ] || kh_fail "SIG$sig: exit $KH_RC, want 1"
	grep -q '^keyhole: decoder play: interrupted$' int.err || kh_fail "SIG$sig: not told: $(cat int.err)"
	[ ! -e int.ts ] || kh_fail "SIG$sig: a half-written output file"
	[ -z "$(find . -name 'int.ts.*')" ] || kh_fail "SIG$sig: temporary file left: $(find . -name 'int.ts.*')"
	after=$(card_ecms card.card)
	[ "$after" -eq $((before + passed)) ] ||
		kh_fail "SIG$sig: the card stored $((after - before)) of the $passed ECMs passed (no CAS FLUSH)"
done
kh_note "SIGTERM and SIGINT: no temporary file, the card's counters stored"

# a reader that goes away: one line, exit 1, the card's counters stored
before=$(card_ecms card.card)
{
	"$KEYHOLE" decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts 2>pipe.err
	echo $? >pipe.rc
} | head -c 1000 >/dev/null
[ "$(cat pipe.rc)" -eq 1 ] || kh_fail "closed pipe: exit $(cat pipe.rc), want 1 (141 is death by SIGPIPE)"
[ "$(wc -l <pipe.err)" -eq 1 ] || kh_fail "closed pipe: stderr is not one line: $(cat pipe.err)"
grep -q '^keyhole: standard output: the reader closed the pipe; stopped$' pipe.err ||
	kh_fail "closed pipe: $(cat pipe.err)"
after=$(card_ecms card.card)
[ "$after" -gt "$before" ] || kh_fail "closed pipe: the card's counters were not stored"
# a full device, a file size limit: the file and the cause
if [ -c /dev/full ]; then
	kh_expect_fail decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --out /dev/full
	kh_err_has '^keyhole: /dev/full: No space left on device$'
fi
(
	ulimit -f 200 2>/dev/null || exit 0
	"$KEYHOLE" decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --out big.ts \
		2>big.err >/dev/null
	echo $? >big.rc
)
if [ -f big.rc ]; then
	[ "$(cat big.rc)" -eq 1 ] || kh_fail "size limit: exit $(cat big.rc), want 1"
	grep -q '^keyhole: big.ts: File too large$' big.err || kh_fail "size limit: $(cat big.err)"
	[ ! -e big.ts ] || kh_fail "size limit: a half-written output file"
	[ -z "$(find . -name 'big.ts.*')" ] || kh_fail "size limit: a temporary file was left"
fi
kh_note "closed pipe, full device, size limit: told, exit 1, nothing left behind"
kh_note ok
