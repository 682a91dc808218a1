#!/bin/sh
# A whole multiplex in one run: three programmes of a constant-bitrate mux (ffmpeg -muxrate,
# `-program`), each scrambled with its own algorithm (CSA2, CISSA, IDSA), product and ECM PID.
# The output has the input's size, every PCR of every programme at the same packet index with the
# same value; each programme played alone (`decoder play --service N`) is frame-exact against the
# clear clip's programme, and the three played at once give the same frames. ECMs are placed by packet time (interpolated between PCRs), not held for
# the next PCR packet: their repetition stays near the interval asked for, and they do not sit in
# front of PCR packets. Components are chosen (components=video leaves the audio in clear); a
# programme the PAT does not list, an ECM PID the input uses, one given twice are refused.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init headend_multi
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg or python3 not installed (scripts/install-deps installs them)"
	exit 0
fi
kh_need od awk cmp
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# three programmes (service ids 1, 2, 3), each MPEG-2 video and MP2 audio, 10 Mbit/s CBR
ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=6:size=160x120:rate=25 -f lavfi -i sine=frequency=440:duration=6 \
	-f lavfi -i testsrc2=duration=6:size=160x120:rate=25 -f lavfi -i sine=frequency=660:duration=6 \
	-f lavfi -i smptebars=duration=6:size=160x120:rate=25 -f lavfi -i sine=frequency=880:duration=6 \
	-map 0 -map 1 -map 2 -map 3 -map 4 -map 5 -c:v mpeg2video -c:a mp2 \
	-program title=A:st=0:st=1 -program title=B:st=2:st=3 -program title=C:st=4:st=5 -muxrate 10M -f mpegts m3.ts ||
	kh_fail "ffmpeg could not make the three-programme mux"

# frames PROGRAM TS: framemd5 of one programme's video and audio
frames()
{
	ffmpeg -nostdin -v error -i "$2" -map "0:p:$1:v" -map "0:p:$1:a" -f framemd5 - 2>"$KH_META/ffmpeg.err" |
		grep -v '^#' || true
}

# Every PCR of a file: "<packet index> <PID> <PCR>", one a line.
pcrs()
{
	od -An -v -tu1 -w188 "$1" | awk '
		int($4 / 16) % 4 >= 2 && $5 >= 7 && int($6 / 16) % 2 == 1 {
			base = $7 * 33554432 + $8 * 131072 + $9 * 512 + $10 * 2 + int($11 / 128)
			printf "%d %d %.0f\n", NR - 1, ($2 % 32) * 256 + $3, base * 300 + ($11 % 2) * 256 + $12
		}'
}

# ecm_timing TS ECM_PID PCR_PID: "<sections> <median interval ms> <in front of a PCR packet>" of the
# ECM sections on ECM_PID, each section's time its first packet's, interpolated between the PCRs of
# PCR_PID around it.
ecm_timing()
{
	python3 - "$@" <<'PY'
import statistics, sys
f, epid, ppid = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
d = open(f, 'rb').read()
pcr, ecm = [], []
for i in range(len(d) // 188):
    p = d[i * 188:i * 188 + 188]
    pid = (p[1] & 31) << 8 | p[2]
    if pid == ppid and (p[3] >> 4) & 2 and p[4] >= 7 and p[5] & 0x10:
        b = p[6] << 25 | p[7] << 17 | p[8] << 9 | p[9] << 1 | p[10] >> 7
        pcr.append((i, b * 300 + ((p[10] & 1) << 8) + p[11]))
    if pid == epid and p[1] & 0x40:
        ecm.append(i)
def t(i):
    for k in range(1, len(pcr)):
        if pcr[k][0] >= i:
            (a, pa), (b, pb) = pcr[k - 1], pcr[k]
            return (pa + (pb - pa) * (i - a) / (b - a)) / 27000.0
times = [t(i) for i in ecm if pcr[0][0] <= i <= pcr[-1][0]]
iv = [times[k] - times[k - 1] for k in range(1, len(times))]
at = set(i for i, _ in pcr)
print(len(times), "%.1f" % statistics.median(iv), sum(1 for i in ecm if i + 1 in at))
PY
}

# ecm_lead TS ECM_PID COMPONENT_PID PCR_PID: for each new crypto period, the time from the first
# ECM section of the new table_id to the first component packet of the new parity, in ms.
ecm_lead()
{
	python3 - "$@" <<'PY'
import sys
f, epid, cpid, ppid = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), int(sys.argv[4], 0)
d = open(f, 'rb').read()
pcr, ecm, comp = [], [], []
for i in range(len(d) // 188):
    p = d[i * 188:i * 188 + 188]
    pid = (p[1] & 31) << 8 | p[2]
    if pid == ppid and (p[3] >> 4) & 2 and p[4] >= 7 and p[5] & 0x10:
        b = p[6] << 25 | p[7] << 17 | p[8] << 9 | p[9] << 1 | p[10] >> 7
        pcr.append((i, b * 300 + ((p[10] & 1) << 8) + p[11]))
    if pid == epid and p[1] & 0x40:
        ecm.append((i, p[5]))
    if pid == cpid and p[3] >> 6 >= 2 and (p[3] >> 4) & 1:
        comp.append((i, p[3] >> 6))
def t(i):
    for k in range(1, len(pcr)):
        if pcr[k][0] >= i:
            (a, pa), (b, pb) = pcr[k - 1], pcr[k]
            return (pa + (pb - pa) * (i - a) / (b - a)) / 27000.0
ch = [ecm[k][0] for k in range(1, len(ecm)) if ecm[k][1] != ecm[k - 1][1]]
pc = [comp[k][0] for k in range(1, len(comp)) if comp[k][1] != comp[k - 1][1]]
print(" ".join("%.1f" % (t(c) - t(e)) for e, c in zip(ch, pc)))
PY
}

kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x65 --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out h.keys
T=$(date +%s)
kh_expect_ok headend emm --keys h.keys --ua 00000065 --service-keys --entitle "7:$((T - 100)):$((T + 100000))" \
	--entitle "8:$((T - 100)):$((T + 100000))" --entitle "9:$((T - 100)):$((T + 100000))" --out sub.emm

# ---- three programmes, three algorithms, one run ----

kh_expect_ok headend scramble --keys h.keys --in m3.ts --out s3.ts --service 1:alg=csa2,product=7 \
	--service 2:alg=cissa,product=8 --service 3:alg=idsa,product=9 --period 5 --time "$T" --emm sub.emm -v
kh_err_has 'ECM PID 0x0FF0 \(program 1\), ECM PID 0x0FF2 \(program 2\), ECM PID 0x0FF3 \(program 3\), EMM PID 0x0FF1'
kh_err_has "replace null packets"
[ "$(wc -c <s3.ts)" -eq "$(wc -c <m3.ts)" ] || kh_fail "the mux has $(wc -c <s3.ts) bytes scrambled, $(wc -c <m3.ts) clear"
pcrs m3.ts >in.pcr
pcrs s3.ts >out.pcr
[ "$(awk '{ print $2 }' in.pcr | sort -u | wc -l)" -eq 3 ] || kh_fail "the mux does not have three PCR PIDs"
cmp -s in.pcr out.pcr || kh_fail "a PCR moved or changed: $(diff in.pcr out.pcr | head -n 4 | tr '\n' ' ')"
kh_expect_ok ts inspect s3.ts
for pid in 0x0100 0x0101 0x0102 0x0103 0x0104 0x0105; do
	kh_out_has "pid $pid .* scrambled even\\+odd \\(clear 0 "
done
kh_out_has 'programme 2: .*'
kh_out_has 'CA system 0x4B48 \(Keyhole\) PID 0x0FF2'
n=1
for alg in csa2 cissa idsa; do
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s3.ts --out "c$n.ts" --service $n
	frames $n m3.ts >"clear$n.md5"
	frames $n "c$n.ts" >"got$n.md5"
	[ "$(wc -l <"clear$n.md5")" -gt 300 ] || kh_fail "programme $n: the clear clip has too few frames"
	if grep -vxFq -f "clear$n.md5" "got$n.md5"; then
		kh_fail "programme $n ($alg): a decoded frame differs from the clear clip's"
	fi
	# scrambled from its first packet, before ECM 0 finds a null packet: the first frames are lost,
	# as to a receiver tuning in, at most half a second's
	[ "$(wc -l <"got$n.md5")" -ge $(($(wc -l <"clear$n.md5") - 25)) ] ||
		kh_fail "programme $n ($alg): $(wc -l <"got$n.md5") of $(wc -l <"clear$n.md5") frames decoded"
	kh_note "programme $n ($alg): $(wc -l <"got$n.md5") of $(wc -l <"clear$n.md5") frames bit-exact"
	n=$((n + 1))
done
# the three at once: the decoder plays every programme the card has rights for
kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s3.ts --out all.ts
for n in 1 2 3; do
	frames $n all.ts >"all$n.md5"
	cmp -s "got$n.md5" "all$n.md5" || kh_fail "programme $n played with the others differs from it played alone"
done

# ---- ECM timing: by packet time, not at PCR packets ----

for e in "0x0FF0 0x0100" "0x0FF2 0x0102" "0x0FF3 0x0104"; do
	# shellcheck disable=SC2086
	set -- $(ecm_timing s3.ts $e)
	[ "$1" -ge 50 ] || kh_fail "ECM PID ${e% *}: only $1 ECM sections"
	# 100 ms asked; a null packet to go out in comes within a few ms on this mux
	awk -v m="$2" 'BEGIN { exit !(m >= 97 && m <= 103) }' || kh_fail "ECM PID ${e% *}: median repetition $2 ms"
	[ "$3" -le $(($1 / 10)) ] || kh_fail "ECM PID ${e% *}: $3 of $1 ECMs sit right before a PCR packet"
	kh_note "ECM PID ${e% *}: $1 sections, median repetition $2 ms, $3 right before a PCR packet"
done

# the lead asked (1000 ms, the default): never more than that, less only by the wait for a null
# packet
for e in "0x0FF0 0x0100" "0x0FF2 0x0102" "0x0FF3 0x0104"; do
	# shellcheck disable=SC2086
	leads=$(ecm_lead s3.ts ${e% *} ${e#* } ${e#* })
	[ -n "$leads" ] || kh_fail "ECM PID ${e% *}: no crypto period change to measure the lead on"
	for l in $leads; do
		awk -v l="$l" 'BEGIN { exit !(l >= 990 && l <= 1000.2) }' || kh_fail "ECM PID ${e% *}: lead $l ms, 1000 asked"
	done
	kh_note "ECM PID ${e% *}: lead $leads ms (1000 asked)"
done

# ---- components chosen: video only, audio in clear ----

kh_expect_ok headend scramble --keys h.keys --in m3.ts --out v.ts --service 1:alg=csa2,product=7,components=video \
	--service 2:alg=csa2,product=8 --no-audio --period 5 --time "$T"
kh_expect_ok ts inspect v.ts
kh_out_has 'pid 0x0100 .* scrambled even\+odd \(clear 0 '
kh_out_has 'pid 0x0101 .* clear \(clear 1610 '
kh_out_has 'pid 0x0102 .* scrambled even\+odd \(clear 0 '
kh_out_has 'pid 0x0103 .* clear \(clear 1610 '
kh_out_has 'pid 0x0104 .* clear \(clear [0-9]* even 0 odd 0 '

# ---- refused ----

kh_expect_fail headend scramble --keys h.keys --in m3.ts --out x.ts --service 1:alg=csa2,product=7 \
	--service 9:alg=csa2,product=8
kh_err_has 'program 9 is not in the PAT'
[ ! -e x.ts ] || kh_fail "a refused run left its output"
kh_expect_fail headend scramble --keys h.keys --in m3.ts --out x.ts --service 1:alg=csa2,product=7 \
	--service 2:alg=csa2,product=8,ecm-pid=0x0103
kh_err_has 'ecm-pid= 0x0103 is in use in the input: a component \(program 2\)'
kh_expect_usage headend scramble --keys h.keys --in m3.ts --out x.ts --service 1:alg=csa2,product=7,ecm-pid=0x300 \
	--service 2:alg=csa2,product=8,ecm-pid=0x300
kh_err_has 'ECM PID 0x0300 is given to two services'
kh_expect_usage headend scramble --keys h.keys --in m3.ts --out x.ts --service 1:alg=csa2 --service 2:alg=csa2,product=8
kh_err_has 'give either --product or --event'
kh_expect_usage headend scramble --keys h.keys --in m3.ts --out x.ts --alg csa2 --product 7 --service 1:colour=red
kh_err_has "unknown setting 'colour'"
kh_expect_usage headend scramble --keys h.keys --in m3.ts --out x.ts --alg csa2 --product 7 --no-video --no-audio \
	--no-subtitles
kh_err_has 'leave nothing to scramble'
exit 0
