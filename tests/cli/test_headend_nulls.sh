#!/bin/sh
# The headend on a constant-bitrate multiplex (ffmpeg -muxrate): the ECM, EMM and PSI packets
# take the place of null packets, so the output has the input's size and every PCR is at the same
# packet index with the same value, and the descrambled stream is frame-exact through `decoder
# play`. A mux with too little null bandwidth is refused with the bandwidth needed and available
# and leaves no output file; with --grow it is scrambled, grows, and its PCRs are restamped: each
# PCR is the first plus (packets since) times one constant rate, within +-500 ns, and it still
# plays frame-exact. A foreign CA system's EMM descriptor in the input's CAT (a section made by
# hand) stays beside ours, the CAT's version moved on.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init headend_nulls
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg/ffprobe not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need od awk cmp
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# ---- helpers ----

# clip RATE OUT: a 6 s clip (MPEG-2 video, MP2 audio) muxed at constant bitrate RATE.
clip()
{
	ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=6:size=160x120:rate=25 \
		-f lavfi -i sine=frequency=440:duration=6 -c:v mpeg2video -c:a mp2 -muxrate "$1" -f mpegts "$2" ||
		kh_fail "ffmpeg could not make a clip at $1"
}

# Every PCR of a file: "<packet index> <PID> <PCR in 27 MHz ticks>", one a line.
pcrs()
{
	od -An -v -tu1 -w188 "$1" | awk '
		int($4 / 16) % 4 >= 2 && $5 >= 7 && int($6 / 16) % 2 == 1 {
			base = $7 * 33554432 + $8 * 131072 + $9 * 512 + $10 * 2 + int($11 / 128)
			printf "%d %d %.0f\n", NR - 1, ($2 % 32) * 256 + $3, base * 300 + ($11 % 2) * 256 + $12
		}'
}

# Largest distance, in ticks, of a PCR from the line through the first two (PCR against packet
# index); a constant rate gives under one tick. Prints "<PCRs> <largest distance>".
pcr_jitter()
{
	pcrs "$1" | awk '
		NR == 1 { n0 = $1; p0 = $3 }
		NR == 2 { rate = ($3 - p0) / ($1 - n0) }
		NR > 1 { d = $3 - (p0 + ($1 - n0) * rate); if (d < 0) d = -d; if (d > m) m = d }
		END { printf "%d %.1f\n", NR, m }'
}

# Number of packets on PID $2 in file $1.
count_pid()
{
	od -An -v -tu1 -w188 "$1" | awk -v want="$2" '($2 % 32) * 256 + $3 == want { n++ } END { print n + 0 }'
}

# ---- the operator and a viewer ----

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
T=$(date +%s)
kh_expect_ok headend emm --keys headend.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--out sub.emm

# frames_after CLEAR DESCRAMBLED WHAT: the programme is scrambled from its first packet, even
# before ECM 0 found a null packet to go out in, so a decoder starts a little after the clip does,
# as one tuning in would: every frame it decodes is bit-exact to the clear clip's, and it loses at
# most the frames of the first half second (25 video and audio frames)
frames_after()
{
	[ -s "$2" ] || kh_fail "$3: no frame decoded"
	if grep -vxFq -f "$1" "$2"; then
		kh_fail "$3: a decoded frame differs from the clear clip's: $(grep -vxF -f "$1" "$2" | head -n 1)"
	fi
	[ "$(wc -l <"$2")" -ge $(($(wc -l <"$1") - 25)) ] ||
		kh_fail "$3: $(wc -l <"$2") of $(wc -l <"$1") frames decoded"
}
# clear_component_packets TS: packets with a payload on the clip's video and audio PIDs (0x100,
# 0x101) whose transport_scrambling_control is 00
clear_component_packets()
{
	od -An -v -tu1 -w188 "$1" | awk '{ pid = ($2 % 32) * 256 + $3; afc = int($4 / 16) % 4 }
		(pid == 256 || pid == 257) && int($4 / 64) == 0 && (afc == 1 || afc == 3) { n++ } END { print n + 0 }'
}

# ---- a 10 Mbit/s mux: size and every PCR kept, frame-exact after descrambling ----

clip 10M cbr.ts
kh_frames cbr.ts >clear.md5
[ -s clear.md5 ] || kh_fail "no frames decoded from the clear clip"
[ "$(count_pid cbr.ts 8191)" -gt 1000 ] || kh_fail "the 10 Mbit/s clip has too few null packets for the test"
[ "$(clear_component_packets cbr.ts)" -gt 1000 ] || kh_fail "the checker finds no clear video or audio packet in the clip"
kh_expect_ok headend scramble --keys headend.keys --in cbr.ts --out s-cbr.ts --alg csa2 --product 7 --period 5 \
	--time "$T" --emm sub.emm -v
kh_err_has "replace null packets"
[ "$(wc -c <s-cbr.ts)" -eq "$(wc -c <cbr.ts)" ] ||
	kh_fail "the scrambled 10 Mbit/s mux has $(wc -c <s-cbr.ts) bytes, the input $(wc -c <cbr.ts)"
pcrs cbr.ts >in.pcr
pcrs s-cbr.ts >out.pcr
[ "$(wc -l <in.pcr)" -gt 100 ] || kh_fail "only $(wc -l <in.pcr) PCRs in the clip"
cmp -s in.pcr out.pcr || kh_fail "a PCR moved or changed: $(diff in.pcr out.pcr | head -n 4 | tr '\n' ' ')"
[ "$(count_pid s-cbr.ts 4080)" -gt 50 ] || kh_fail "too few ECM packets in the scrambled mux"
[ "$(count_pid s-cbr.ts 4081)" -gt 10 ] || kh_fail "too few EMM packets in the scrambled mux"
[ "$(count_pid s-cbr.ts 8191)" -lt "$(count_pid cbr.ts 8191)" ] || kh_fail "no null packet was replaced"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s-cbr.ts --out c-cbr.ts
[ "$(clear_component_packets s-cbr.ts)" -eq 0 ] ||
	kh_fail "10 Mbit/s: $(clear_component_packets s-cbr.ts) video or audio packets went out in clear"
kh_frames c-cbr.ts >c-cbr.md5
frames_after clear.md5 c-cbr.md5 "10 Mbit/s"
kh_note "10 Mbit/s: size and $(wc -l <in.pcr) PCRs kept, $(wc -l <c-cbr.md5) of $(wc -l <clear.md5) frames bit-exact"

# ---- another CA system's EMM PID in the input's CAT: kept beside ours ----

# A CAT section (version 3) with one CA_descriptor, CA system 0x0B00, EMM PID 0x0500, and its
# CRC, made by hand, in a packet on PID 1 that takes the place of the 40th null packet.
printf '\107\100\001\020\000\001\260\017\377\377\307\000\000\011\004\013\000\345\000\013\055\047\262' >cat.pkt
dd if=/dev/zero bs=165 count=1 2>/dev/null | tr '\000' '\377' >>cat.pkt
[ "$(wc -c <cat.pkt)" -eq 188 ] || kh_fail "the CAT packet has $(wc -c <cat.pkt) bytes"
at=$(od -An -v -tu1 -w188 cbr.ts | awk '($2 % 32) * 256 + $3 == 8191 && ++n == 40 { print NR - 1; exit }')
{
	head -c $((at * 188)) cbr.ts
	cat cat.pkt
	tail -c +$(((at + 1) * 188 + 1)) cbr.ts
} >cat-in.ts
[ "$(wc -c <cat-in.ts)" -eq "$(wc -c <cbr.ts)" ] || kh_fail "splicing the CAT in changed the size"
kh_expect_ok headend scramble --keys headend.keys --in cat-in.ts --out s-cat.ts --alg cissa --product 7 \
	--period 5 --time "$T" --emm sub.emm
[ "$(wc -c <s-cat.ts)" -eq "$(wc -c <cbr.ts)" ] || kh_fail "the mux with a CAT changed size"
od -An -v -tx1 -w188 s-cat.ts | awk '$2 == "40" && $3 == "01" { last = $0 } END { print last }' >cat.hex
grep -q "09 04 0b 00 e5 00" cat.hex ||
	kh_fail "the other CA system's EMM descriptor left the CAT: $(cut -c1-80 cat.hex)"
grep -q "09 04 4b 48 ef f1" cat.hex || kh_fail "our EMM descriptor is not in the CAT: $(cut -c1-80 cat.hex)"
grep -q "^ 47 40 01 1[0-9a-f] 00 01 b0 15 ff ff c9 " cat.hex ||
	kh_fail "the CAT is not version 4 with both descriptors: $(cut -c1-60 cat.hex)"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s-cat.ts --out c-cat.ts
kh_frames c-cat.ts >c-cat.md5
frames_after clear.md5 c-cat.md5 "with a foreign CAT"
kh_note "a foreign CA system's EMM descriptor stays in the CAT beside ours (version 3 -> 4)"

# ---- a mux with almost no null packets: refused, or grown with --grow ----

clip 700k tight.ts
kh_expect_fail headend scramble --keys headend.keys --in tight.ts --out s-tight.ts --alg csa2 --product 7 \
	--period 5 --time "$T" --emm sub.emm
kh_err_has "not enough null packets"
kh_err_has "kbit/s"
kh_err_has "--grow"
[ ! -e s-tight.ts ] || kh_fail "a refused run left an output file"
kh_expect_ok headend scramble --keys headend.keys --in tight.ts --out g-tight.ts --alg csa2 --product 7 \
	--period 5 --time "$T" --emm sub.emm --grow
[ "$(wc -c <g-tight.ts)" -gt "$(wc -c <tight.ts)" ] || kh_fail "--grow did not grow the stream"
set -- $(pcr_jitter g-tight.ts)
[ "$1" -gt 100 ] || kh_fail "--grow: only $1 PCRs"
# +-500 ns is 13.5 ticks of 27 MHz
awk -v m="$2" 'BEGIN { exit !(m <= 13.5) }' || kh_fail "--grow: a PCR is $2 ticks off the stream's constant rate"
# the check can fail: the grown stream with the input's PCRs left as they were is far off
[ "$(pcrs g-tight.ts | awk '{ print $3 }' | tail -n 1)" != "$(pcrs tight.ts | awk '{ print $3 }' | tail -n 1)" ] ||
	kh_fail "--grow: the last PCR was not restamped"
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in g-tight.ts --out c-tight.ts
kh_frames tight.ts >clear-tight.md5
kh_frames c-tight.ts >c-tight.md5
cmp -s clear-tight.md5 c-tight.md5 || kh_fail "--grow: decoded frames differ from the clear clip's"
kh_note "700 kbit/s: refused without --grow; with it $1 PCRs within $2 ticks of one rate, frame-exact"

exit 0
