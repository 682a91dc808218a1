# keyhole ts inspect on real clips made by ffmpeg: a clear CBR mux of two programmes (MPEG-2
# video + MP2, H.264 or MPEG-2 + AAC) listed with its PIDs, stream types, no CA descriptor, all
# clear, the mux bitrate within 10 % of -muxrate; then programme 2 scrambled by `keyhole headend
# scramble` with 5 s crypto periods and EMMs: its components scrambled even and odd and never in
# clear, programme 1 still clear, the ECM PID in a Keyhole CA descriptor, the EMM PID in the CAT,
# ECM count, key id and version, crypto periods and interval as configured, the EMMs by address
# type; --json says the same (parsed by node); a damaged ECM is counted as malformed; garbage
# before the packets is skipped and counted, a packet cut short is a warning, a file that is not
# a TS, a missing file and a URL are refused. Skipped without ffmpeg.
#
# Run by CTest as `sh test_ts_inspect.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_ts_inspect

if ! command -v ffmpeg >/dev/null 2>&1; then
	echo "test_ts_inspect: SKIP: ffmpeg not installed"
	exit 0
fi
kh_need od awk dd node
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# programme 2's video: H.264 when this ffmpeg has libx264, else MPEG-2
v2=libx264
t2='0x1B H.264'
if ! ffmpeg -hide_banner -encoders 2>/dev/null | grep -q ' libx264 '; then
	v2=mpeg2video
	t2='0x02 MPEG-2 video'
fi
ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=12:size=320x240:rate=25 \
	-f lavfi -i sine=frequency=440:duration=12 -f lavfi -i testsrc2=duration=12:size=320x240:rate=25 \
	-f lavfi -i sine=frequency=880:duration=12 -map 0:v -map 1:a -map 2:v -map 3:a \
	-c:v:0 mpeg2video -c:a:0 mp2 -c:v:1 $v2 -c:a:1 aac \
	-program program_num=1:title=one:st=0:st=1 -program program_num=2:title=two:st=2:st=3 \
	-muxrate 3000000 -f mpegts clip.ts || kh_fail "ffmpeg could not make the clip"

# within PCT % of WANT
near()
{
	awk -v g="$1" -v w="$2" -v p="$3" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(w > 0 && d <= w * p / 100) }'
}

# --- the clear clip ----------------------------------------------------------------------------
kh_expect_ok ts inspect clip.ts
[ ! -s "$KH_ERR" ] || kh_fail "inspect of a clean clip printed on stderr: $(cat "$KH_ERR")"
kh_out_has '^file clip.ts: [0-9]+ bytes, [0-9]+ packets, 0 bytes skipped, 0 bytes cut short'
kh_out_has '^programme 1: PMT PID 0x1000, PCR PID 0x0100$'
kh_out_has '^programme 2: PMT PID 0x1001, PCR PID 0x0102$'
kh_out_has '^  component 0x0100 stream_type 0x02 MPEG-2 video$'
kh_out_has '^  component 0x0101 stream_type 0x03 MPEG-1 audio \(MP2\)$'
kh_out_has "^  component 0x0102 stream_type $t2\$"
kh_out_has '^  component 0x0103 stream_type 0x0F AAC$'
kh_out_has '^CAT: none$'
grep -q 'CA system' "$KH_OUT" && kh_fail "a clear clip has a CA descriptor"
grep -q 'scrambled\|mixed' "$KH_OUT" && kh_fail "a clear clip has a scrambled PID"
grep -q '^ca pid' "$KH_OUT" && kh_fail "a clear clip has a CA PID"
for pid in 0x0100 0x0101 0x0102 0x0103; do
	grep -Eq "^pid $pid [^:]*: [1-9][0-9]* packets .* clear \(clear [1-9][0-9]* even 0 odd 0 reserved 0, .*, 0 continuity errors\$" \
		"$KH_OUT" || kh_fail "pid $pid is not listed as clear with packets"
done
kh_out_has '^null packets [1-9][0-9]* '
rate=$(sed -n 's/^mux bitrate \([0-9]*\) bit\/s (PCR PID 0x0100).*/\1/p' "$KH_OUT")
near "$rate" 3000000 10 || kh_fail "mux bitrate '$rate', ffmpeg was asked for 3000000"
# the PIDs' bitrates add up to the mux's
sum=$(sed -n 's/^pid .* packets [0-9.]* %, \([0-9]*\) bit\/s.*/\1/p' "$KH_OUT" | awk '{ s += $1 } END { print s }')
near "$sum" "$rate" 1 || kh_fail "the PIDs' bitrates add up to $sum, the mux's is $rate"
# the packets add up to the file
pk=$(sed -n 's/^file clip.ts: [0-9]* bytes, \([0-9]*\) packets.*/\1/p' "$KH_OUT")
[ "$pk" -eq $(($(kh_size clip.ts) / 188)) ] || kh_fail "$pk packets in a file of $(kh_size clip.ts) bytes"

kh_expect_ok ts inspect clip.ts --json
cp "$KH_OUT" clear.json
[ "$(kh_json clear.json 'd.programmes.map(p => p.program_number + ":" + p.pmt_pid + ":" + p.pcr_pid).join(" ")')" = \
	"1:4096:256 2:4097:258" ] || kh_fail "--json programmes"
[ "$(kh_json clear.json 'd.programmes[1].components.map(c => c.pid + "/" + c.stream_type).join(" ")')" = \
	"258/$(printf '%d' "${t2%% *}") 259/15" ] || kh_fail "--json components of programme 2"
[ "$(kh_json clear.json 'd.pids.filter(p => p.scrambling !== "clear").length')" = 0 ] ||
	kh_fail "--json: a PID of the clear clip is not clear"
[ "$(kh_json clear.json 'd.cat.length + d.ca_pids.length + d.programmes[0].ca_descriptors.length')" = 0 ] ||
	kh_fail "--json: CA descriptors or CA PIDs in a clear clip"
[ "$(kh_json clear.json 'd.bitrate')" = "$rate" ] || kh_fail "--json bitrate differs from the text's"
[ "$(kh_json clear.json 'd.packets')" = "$pk" ] || kh_fail "--json packets differ from the text's"

# --- programme 2 scrambled, with EMMs ----------------------------------------------------------
kh_expect_ok authority init auth
kh_expect_ok headend keys init --authority auth --out h.keys
kh_expect_ok headend keys rotate --keys h.keys --key-id 3
kh_expect_ok headend emm --keys h.keys --ua 0000000A --entitle 7:now-60:now+86400 --service-keys --out card.emm
kh_expect_ok headend emm --keys h.keys --group 3 --revoke 9 --out group.emm
kh_expect_ok headend emm --keys h.keys --all --revoked 1:0000000B --out all.emm
cat card.emm group.emm all.emm >emms
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out s.ts --alg csa2 --product 7 --service 2 \
	--key-id 3 --period 5 --ecm-interval 200 --emm emms --time 1700000000
kh_expect_ok ts inspect s.ts
cp "$KH_OUT" s.txt
kh_out_has '^  CA system 0x4B48 \(Keyhole\) PID 0x0FF0 private 0 bytes$'
kh_out_has '^CAT: CA system 0x4B48 \(Keyhole\) PID 0x0FF1 private 0 bytes$'
[ "$(grep -c 'CA system' s.txt)" -eq 2 ] || kh_fail "expected one PMT and one CAT CA descriptor"
# the CA descriptor is in programme 2's PMT, not programme 1's
awk '/^programme 1/ { p = 1 } /^programme 2/ { p = 2 } /^  CA system/ && p == 1 { bad = 1 } END { exit bad }' s.txt ||
	kh_fail "programme 1 got a CA descriptor"
for pid in 0x0102 0x0103; do
	grep -Eq "^pid $pid [^:]*: .* scrambled even\+odd \(clear 0 even [1-9][0-9]* odd [1-9][0-9]* reserved 0," s.txt ||
		kh_fail "pid $pid is not scrambled with both parities and never in clear"
done
for pid in 0x0100 0x0101; do
	grep -Eq "^pid $pid [^:]*: .*, clear \(clear [1-9][0-9]* even 0 odd 0" s.txt || kh_fail "pid $pid (programme 1) is not clear"
done
kh_out_has '^pid 0x0FF0 ECM: '
kh_out_has '^pid 0x0FF1 EMM: '
grep -Eq '^pid .*[1-9][0-9]* continuity errors$' s.txt && kh_fail "continuity errors in the scrambled stream"
# 12 s in 5 s periods: crypto periods 0, 1, 2; key 3 version 1 as configured; one ECM per 200 ms
kh_out_has '^ca pid 0x0FF0: [0-9]+ sections, [0-9]+ ECMs, 0 EMMs .* 0 malformed, 0 other$'
kh_out_has '^  first ECM: key 3 version 1 crypto period 0 even signer [0-9A-F]{8}$'
kh_out_has '^  last ECM: key 3 version 1 crypto period 2 even signer [0-9A-F]{8}$'
kh_out_has '^  ECM interval [0-9]+ ms \(median\), 2 crypto period changes$'
iv=$(sed -n 's/^  ECM interval \([0-9]*\) ms.*/\1/p' s.txt)
near "$iv" 200 10 || kh_fail "ECM interval $iv ms, scrambled with --ecm-interval 200"
necm=$(sed -n 's/^ca pid 0x0FF0: [0-9]* sections, \([0-9]*\) ECMs.*/\1/p' s.txt)
[ "$necm" -ge 50 ] && [ "$necm" -le 70 ] || kh_fail "$necm ECMs in 12 s at one per 200 ms"
# the ECM packets counted by the byte scan agree with the ECM count (one packet each)
secm=$(od -An -tu1 -w188 -v s.ts | awk '($2 % 32) * 256 + $3 == 4080' | wc -l)
[ "$secm" -eq "$necm" ] || kh_fail "$secm ECM packets on 0x0FF0, inspect counted $necm ECMs"
# the stream cut just after its first PMT: the ECMs before the next PMT (which names their PID)
# are counted all the same, a file being read twice
cut=$(od -An -tu1 -w188 -v s.ts | awk '($2 % 32) * 256 + $3 == 4096 { print NR; exit }')
tail -c +$((cut * 188 + 1)) s.ts >cut.ts
kh_expect_ok ts inspect cut.ts
cecm=$(od -An -tu1 -w188 -v cut.ts | awk '($2 % 32) * 256 + $3 == 4080' | wc -l)
kh_out_has "^ca pid 0x0FF0: [0-9]+ sections, $cecm ECMs"
kh_out_has '^ca pid 0x0FF1: [0-9]+ sections, 0 ECMs, [0-9]+ EMMs \(unique [1-9][0-9]* group [1-9][0-9]* all [1-9][0-9]*\), 0 malformed'
kh_out_has '^  first unique EMM: address 0000000A seq 1$'
kh_out_has '^  last unique EMM: address 0000000A seq 3$'
kh_out_has '^  first group EMM: address 00000003 seq 1 signer [0-9A-F]{8}$'
kh_out_has '^  first all EMM: address 00000000 seq 1 signer [0-9A-F]{8}$'
# nothing secret: no service key of the key file appears
for key in $(awk '$1 == "service" { print $4 }' h.keys); do
	grep -qi "$key" s.txt && kh_fail "inspect printed a service key"
done

kh_expect_ok ts inspect --json s.ts
cp "$KH_OUT" s.json
[ "$(kh_json s.json 'd.programmes[1].ca_descriptors.map(c => c.level + ":" + c.ca_system_id + ":" + c.ca_pid).join()')" = \
	"programme:19272:4080" ] || kh_fail "--json: programme 2's CA descriptor"
[ "$(kh_json s.json 'd.cat.map(c => c.ca_system_id + ":" + c.ca_pid).join()')" = "19272:4081" ] || kh_fail "--json CAT"
[ "$(kh_json s.json 'd.pids.filter(p => p.pid == 258 || p.pid == 259).map(p => p.scrambling).join()')" = \
	"scrambled even+odd,scrambled even+odd" ] || kh_fail "--json scrambling of programme 2"
[ "$(kh_json s.json 'd.ca_pids[0].pid + ":" + d.ca_pids[0].ecm.count + ":" + d.ca_pids[0].ecm.first.key_id')" = \
	"4080:$necm:3" ] || kh_fail "--json ECM PID"
[ "$(kh_json s.json '[d.ca_pids[0].ecm.first.parity, d.ca_pids[0].ecm.last.crypto_period].join()')" = "even,2" ] ||
	kh_fail "--json ECM first parity / last crypto period"
[ "$(kh_json s.json 'd.ca_pids[1].emm.unique.first.address + ":" + d.ca_pids[1].emm.group.first.address')" = "10:3" ] ||
	kh_fail "--json EMM addresses"
[ "$(kh_json s.json 'Math.round(d.ca_pids[0].ecm.interval_ms / 10)')" = 20 ] || kh_fail "--json ECM interval"

# --- damage ------------------------------------------------------------------------------------
# the first ECM's version byte (header 4, pointer_field 1, section header 3) made 9: malformed,
# counted, not fatal
off=$(od -An -tu1 -w188 -v s.ts | awk '($2 % 32) * 256 + $3 == 4080 { print (NR - 1) * 188; exit }')
cp s.ts bad.ts
printf '\011' | dd of=bad.ts bs=1 seek=$((off + 8)) conv=notrunc 2>/dev/null
kh_expect_ok ts inspect bad.ts
kh_out_has "^ca pid 0x0FF0: [0-9]+ sections, $((necm - 1)) ECMs, 0 EMMs .* 1 malformed, 0 other\$"

# garbage before the packets: skipped and counted, the packets all found
head -c 1000 /dev/urandom | tr '\107' '\000' >junk.ts
cat clip.ts >>junk.ts
kh_expect_ok ts inspect junk.ts
kh_out_has "^file junk.ts: [0-9]+ bytes, $pk packets, 1000 bytes skipped"
kh_err_has '^keyhole: junk.ts: warning: 1000 bytes skipped to find packets$'
# a file cut in the middle of a packet: a warning, the whole packets reported
head -c $((188 * 1000 + 100)) clip.ts >cut.ts
kh_expect_ok ts inspect cut.ts
kh_out_has '^file cut.ts: [0-9]+ bytes, 1000 packets, 0 bytes skipped, 100 bytes cut short at the end$'
kh_err_has '^keyhole: cut.ts: warning: the last packet is cut short \(100 of 188 bytes\)$'
# not a transport stream
head -c 100000 /dev/urandom | tr '\107' '\000' >noise.bin
kh_expect_fail ts inspect noise.bin
kh_err_has '^keyhole: noise.bin: not a transport stream'
printf 'hello\n' >text.txt
kh_expect_fail ts inspect text.txt
kh_err_has '^keyhole: text.txt: not a transport stream'
: >empty.ts
kh_expect_fail ts inspect empty.ts
kh_err_has 'not a transport stream'
kh_expect_fail ts inspect missing.ts
kh_err_has '^keyhole: missing.ts: No such file'
kh_expect_fail ts inspect .
# standard input
"$KEYHOLE" ts inspect - <clip.ts >stdin.txt 2>"$KH_ERR" || kh_fail "inspect - failed: $(cat "$KH_ERR")"
grep -q "^file -: [0-9]* bytes, $pk packets" stdin.txt || kh_fail "inspect - read $(head -1 stdin.txt)"

# --- usage -------------------------------------------------------------------------------------
kh_expect_usage ts inspect udp://127.0.0.1:5000
kh_err_has 'give --duration or --packets'
kh_expect_usage ts inspect
kh_expect_usage ts inspect clip.ts other.ts
kh_expect_usage ts inspect clip.ts -C 1 -C 2
kh_expect_usage ts inspect clip.ts --ca-system-id 0x10000
kh_expect_usage ts inspect clip.ts --bogus
kh_expect_usage ts bogus
kh_expect_help ts inspect --help
# another CA system: nothing decoded, the descriptors still listed
kh_expect_ok ts inspect s.ts -C 0x0100
grep -q '^ca pid' "$KH_OUT" && kh_fail "-C 0x0100 decoded Keyhole's CA PIDs"
kh_out_has '^  CA system 0x4B48 PID 0x0FF0 private 0 bytes$'
kh_out_has '^pid 0x0FF0 CA: '
exit 0
