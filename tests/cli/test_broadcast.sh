#!/bin/sh
# The broadcast path on real media, end to end: an ffmpeg clip (MPEG-2 video, MP2
# audio) scrambled by `keyhole headend scramble` with each algorithm, watched through
# `keyhole decoder play` (decoder module -> CAM -> card, all in-process modules), and proved with
# ffmpeg's framemd5: every decoded video and audio frame equals the clear input's; with the key
# ladder (the decoder module descrambles) the clear stream is the same, byte for byte. Then the rights
# rules on the same clip: a subscription that ends mid-stream, a channel not subscribed, a
# pay-per-view event bought once from credit, one the credit does not cover, and EMMs replayed or
# forged changing nothing.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init broadcast
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg/ffprobe not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need od awk cmp
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ---- helpers ----

# Number of video frames ffmpeg decodes from a file (0 when none).
video_frames()
{
	ffmpeg -nostdin -v error -i "$1" -map 0:v -f framemd5 - 2>/dev/null | grep -vc '^#' || true
}

# Component PIDs of the clip (decimal), one per line.
component_pids()
{
	ffprobe -v error -show_entries stream=id -of csv=p=0 "$1" | tr -d ', ' | grep . | sort -u |
		while read -r id; do printf '%d\n' "$id"; done
}

# For each packet of the given PIDs that carries a payload: its transport_scrambling_control.
# Prints "<total> <scrambled>" (scrambled: TSC 10 or 11).
tsc_census()
{
	od -An -v -tu1 -w188 "$1" | awk -v pids="$2" '
		BEGIN { n = split(pids, p, " "); for (i = 1; i <= n; i++) want[p[i]] = 1 }
		{
			pid = ($2 % 32) * 256 + $3
			if (!(pid in want)) next
			afc = int($4 / 16) % 4
			if (afc != 1 && afc != 3) next
			total++
			if (int($4 / 64) >= 2) scr++
		}
		END { printf "%d %d\n", total, scr }'
}

# A value from `keyhole decoder status`: the line "NAME VALUE".
status_of()
{
	kh_expect_ok decoder status --card "$1"
	sed -n "s/^$2 //p" "$KH_OUT" | head -n 1
}

# ---- the operator, the modules, the clip ----

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=12:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=12 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"
pids=$(component_pids clip.ts | tr '\n' ' ')
[ -n "$pids" ] || kh_fail "ffprobe found no streams in the clip"
kh_frames clip.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
for ua in 101 102 103 104 105; do
	kh_expect_ok card issue --authority auth --role card --ua "$(printf 0x%X "$ua")" --out "card$ua.card"
done
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
T=$(date +%s)

# card 101: subscribed to product 7 for a long time, and 100 credits
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--credit 100:1 --out sub.emm

# ---- every algorithm: scramble, check the bits, descramble, compare every frame ----

for alg in csa2 cissa idsa; do
	kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out "s-$alg.ts" --alg "$alg" --product 7 \
		--period 5 --time "$T" --emm sub.emm --cw-log "cw-$alg.txt"
	set -- $(tsc_census "s-$alg.ts" "$pids")
	[ "$1" -gt 100 ] || kh_fail "$alg: only $1 component packets with payload"
	[ "$1" -eq "$2" ] || kh_fail "$alg: $2 of $1 component packets with payload are scrambled"
	[ "$(wc -l <"cw-$alg.txt")" -eq 3 ] || kh_fail "$alg: the CW log has $(wc -l <"cw-$alg.txt") lines, want 3 periods"
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card101.card --in "s-$alg.ts" --out "c-$alg.ts"
	set -- $(tsc_census "c-$alg.ts" "$pids")
	[ "$2" -eq 0 ] || kh_fail "$alg: the decoder output still has $2 scrambled packets"
	kh_frames "c-$alg.ts" >"c-$alg.md5"
	cmp -s clear.md5 "c-$alg.md5" || kh_fail "$alg: decoded frames differ from the clear clip's"
	# the key ladder: the control words reach only the decoder module, which descrambles; the
	# clear stream is the same, byte for byte
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card101.card --ladder --in "s-$alg.ts" \
		--out "l-$alg.ts"
	cmp -s "c-$alg.ts" "l-$alg.ts" || kh_fail "$alg: play --ladder gave another clear stream than play"
	ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "l-$alg.ts" >"$KH_META/probe" 2>&1 ||
		kh_fail "$alg: ffprobe cannot read the output of play --ladder"
	grep -q mpeg2video "$KH_META/probe" && grep -q mp2 "$KH_META/probe" ||
		kh_fail "$alg: ffprobe finds no MPEG-2 video or MP2 audio in the output of play --ladder"
	kh_note "$alg: $1 packets scrambled, $(wc -l <clear.md5) frames bit-exact after descrambling, with and without the key ladder"
done

# ---- the operator's ladder-only policy, signed in the ECMs ----
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-lo.ts --alg cissa --product 7 \
	--period 5 --time "$T" --emm sub.emm --ladder-only
# a decoder without the ladder gets no control word: the viewer is told why, no component is output
kh_run decoder play --decoder dec.card --cam cam.card --card card101.card --in s-lo.ts --out c-lo.ts
[ "$KH_RC" -eq 1 ] || kh_fail "ladder-only: play without the ladder exited $KH_RC, want 1"
grep -q "key ladder" "$KH_ERR" || kh_fail "ladder-only: the viewer was not told the channel needs the key ladder"
[ ! -e c-lo.ts ] || kh_fail "ladder-only: a decoder without the ladder wrote an output file"
# with the ladder, the same clear stream as before
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card101.card --ladder --in s-lo.ts --out l-lo.ts
kh_frames l-lo.ts >l-lo.md5
cmp -s clear.md5 l-lo.md5 || kh_fail "ladder-only: play --ladder frames differ from the clear clip's"
kh_note "ladder-only: refused without the key ladder, $(wc -l <l-lo.md5) frames bit-exact with it"

# ---- the same through module daemons on UNIX sockets: the same bytes out ----
S1=$KH_TMP/card.sock
S2=$KH_TMP/cam.sock
S3=$KH_TMP/dec.sock
kh_start_daemon P1 card serve --socket "$S1" --card card101.card
kh_start_daemon P2 card serve --socket "$S2" --card cam.card
kh_start_daemon P3 card serve --socket "$S3" --card dec.card
kh_wait_socket "$S1" "$P1"
kh_wait_socket "$S2" "$P2"
kh_wait_socket "$S3" "$P3"
kh_expect_ok decoder play --decoder "unix:$S3" --cam "unix:$S2" --card "unix:$S1" --in s-cissa.ts --out c-sock.ts
cmp -s c-cissa.ts c-sock.ts || kh_fail "through sockets the decoder's output differs from in-process"
# the decoder module's daemon descrambles every packet the ladder gives it
kh_expect_ok decoder play --decoder "unix:$S3" --cam "unix:$S2" --card "unix:$S1" --ladder --in s-cissa.ts \
	--out l-sock.ts
cmp -s c-cissa.ts l-sock.ts || kh_fail "through sockets play --ladder gave another clear stream"
kh_stop "$P1" TERM
kh_stop "$P2" TERM
kh_stop "$P3" TERM

# ---- service key rotation without a gap ----
# version 2 is made and sent to the card while the channel still runs on version 1; then the
# channel switches to version 2 with no EMM in the stream, and the card already holds it.
kh_expect_ok headend keys rotate --keys headend.keys --key-id 1
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys --out rot.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-rot1.ts --alg cissa --product 7 \
	--period 5 --time "$T" --key-version 1 --emm rot.emm
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card101.card --in s-rot1.ts --out c-rot1.ts
kh_frames c-rot1.ts >c-rot1.md5
cmp -s clear.md5 c-rot1.md5 || kh_fail "rotation: the stream under the old key did not play whole"
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-rot2.ts --alg cissa --product 7 \
	--period 5 --time "$T"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card101.card --in s-rot2.ts --out c-rot2.ts
kh_frames c-rot2.ts >c-rot2.md5
cmp -s clear.md5 c-rot2.md5 || kh_fail "rotation: the stream under the new key did not play whole"

# ---- a subscription that ends mid-stream ----
# periods start at T, T+5, T+10; the right ends at T+6: periods 0 and 1 play, period 2 does not.
kh_expect_ok headend emm --keys headend.keys --ua 00000066 --service-keys --entitle "7:$((T - 100)):$((T + 6))" \
	--out exp.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-exp.ts --alg cissa --product 7 --period 5 \
	--time "$T" --emm exp.emm
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card102.card --in s-exp.ts --out c-exp.ts
grep -q "expired" "$KH_ERR" || kh_fail "expired subscription: the viewer was not told"
n=$(video_frames c-exp.ts)
all=$(video_frames clip.ts)
[ "$n" -gt 0 ] && [ "$n" -lt "$all" ] || kh_fail "expired subscription: $n of $all frames played"
[ "$n" -le $((all * 11 / 12)) ] || kh_fail "expired subscription: $n of $all frames played after the end"

# ---- a channel not subscribed ----
kh_expect_ok headend emm --keys headend.keys --ua 00000067 --service-keys --entitle "8:$((T - 100)):$((T + 100000))" \
	--out other.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-none.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm other.emm
# not one packet descrambled: exit 1 with the reason, and no output file
kh_run decoder play --decoder dec.card --cam cam.card --card card103.card --in s-none.ts --out c-none.ts
[ "$KH_RC" -eq 1 ] || kh_fail "unsubscribed: exit $KH_RC, want 1"
grep -q "no subscription" "$KH_ERR" || kh_fail "unsubscribed: the viewer was not told"
[ ! -e c-none.ts ] || kh_fail "unsubscribed: an output file was written"

# ---- pay-per-view ----
kh_expect_ok headend emm --keys headend.keys --ua 00000068 --service-keys --credit 100:1 --out ppv.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-ppv.ts --alg idsa --event 55 --price 30 \
	--period 5 --time "$T" --emm ppv.emm
kh_run decoder play --decoder dec.card --cam cam.card --card card104.card --in s-ppv.ts --out c-ppv0.ts
[ "$KH_RC" -eq 1 ] || kh_fail "PPV not bought: exit $KH_RC, want 1"
grep -q "30" "$KH_ERR" || kh_fail "PPV: the viewer was not told the price"
[ ! -e c-ppv0.ts ] || kh_fail "PPV not bought: an output file was written"
[ "$(status_of card104.card credit)" = 100 ] || kh_fail "PPV: credit changed before any purchase"
kh_expect_ok decoder buy --decoder dec.card --cam cam.card --card card104.card --in s-ppv.ts
[ "$(status_of card104.card credit)" = 70 ] || kh_fail "PPV: credit after one purchase is not 70"
kh_expect_ok decoder buy --decoder dec.card --cam cam.card --card card104.card --in s-ppv.ts
[ "$(status_of card104.card credit)" = 70 ] || kh_fail "PPV: a second purchase of the same event charged again"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card104.card --in s-ppv.ts --out c-ppv.ts
kh_frames c-ppv.ts >c-ppv.md5
cmp -s clear.md5 c-ppv.md5 || kh_fail "PPV: the bought event does not play bit-exactly"
# the stream carried the credit EMM again (carousel) three times now: still 70
[ "$(status_of card104.card credit)" = 70 ] || kh_fail "PPV: a replayed EMM changed the credit"

# too little credit: refused, credit unchanged, nothing plays
kh_expect_ok headend emm --keys headend.keys --ua 00000069 --service-keys --credit 10:1 --out poor.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-poor.ts --alg idsa --event 55 --price 30 \
	--period 5 --time "$T" --emm poor.emm
kh_run decoder play --decoder dec.card --cam cam.card --card card105.card --in s-poor.ts --out c-poor.ts
[ "$KH_RC" -eq 1 ] || kh_fail "PPV with too little credit: exit $KH_RC, want 1"
grep -q "credit" "$KH_ERR" || kh_fail "PPV with too little credit: the viewer was not told"
[ ! -e c-poor.ts ] || kh_fail "PPV with too little credit: an output file was written"
[ "$(status_of card105.card credit)" = 10 ] || kh_fail "PPV: the card did not get its 10 credits"
kh_expect_fail decoder buy --decoder dec.card --cam cam.card --card card105.card --in s-poor.ts
grep -q "30" "$KH_ERR" || kh_fail "PPV with too little credit: the refusal does not name the price"
[ "$(status_of card105.card credit)" = 10 ] || kh_fail "PPV: a refused purchase changed the credit"
[ "$(status_of card105.card purchases)" = 0 ] || kh_fail "PPV: a refused purchase was logged"

# ---- a forged EMM changes nothing ----
kh_expect_ok headend emm --keys headend.keys --ua 00000069 --credit 1000:2 --out rich.emm
# flip one bit of the ciphertext (byte 30 of the section)
b=$(od -An -tu1 -j30 -N1 rich.emm | tr -d ' ')
printf "\\$(printf %o $((b ^ 1)))" | dd of=rich.emm bs=1 seek=30 count=1 conv=notrunc 2>/dev/null
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-forged.ts --alg idsa --event 55 --price 30 \
	--period 5 --time "$T" --emm rich.emm
kh_run decoder play --decoder dec.card --cam cam.card --card card105.card --in s-forged.ts --out c-forged.ts
[ "$KH_RC" -eq 1 ] || kh_fail "forged EMM: the event played ($KH_RC)"
[ "$(status_of card105.card credit)" = 10 ] || kh_fail "a forged EMM changed the credit"

kh_note "every algorithm bit-exact; expiry, no right, PPV once, low credit, replayed and forged EMMs hold"
