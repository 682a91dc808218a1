# keyhole headend on a real clip made by ffmpeg: keys init/rotate/show, EMMs (and their seq
# counters), then scramble with each algorithm and 5 s crypto periods. Checked: ffprobe still
# sees the video and audio streams; a byte scan finds every packet of those PIDs that carries a
# payload scrambled (TSC 10/11) and both parities used; ECMs and EMMs are on their PIDs; the
# control-word log has one line per crypto period (12 s -> 3); usage errors exit 2; a missing or
# malformed key file exits 1; a failed run leaves no output file; an option that takes one value
# is refused when given twice, and --emm accumulates. Skipped without ffmpeg.
#
# Run by CTest as `sh test_headend.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_headend

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
	echo "test_headend: SKIP: ffmpeg/ffprobe not installed"
	exit 0
fi
kh_need od awk
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=12:size=320x240:rate=25 \
	-f lavfi -i sine=frequency=440:duration=12 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts ||
	kh_fail "ffmpeg could not make the clip"

# scan FILE PIDS...: prints "<component payload packets scrambled> <not scrambled> <even> <odd>
# <packets on 0x0FF0> <packets on 0x0FF1> <packets on PID 1>"
scan()
{
	f=$1
	shift
	od -An -tu1 -w188 -v "$f" | awk -v pids="$*" '
		BEGIN { n = split(pids, a, " "); for (i = 1; i <= n; i++) comp[a[i]] = 1 }
		{
			pid = ($2 % 32) * 256 + $3; tsc = int($4 / 64); afc = int($4 / 16) % 4
			pl = (afc == 1 || (afc == 3 && $5 < 183))
			if ((pid in comp) && pl) { if (tsc >= 2) s++; else c++; if (tsc == 2) e++; if (tsc == 3) o++ }
			if (pid == 4080) ecm++; if (pid == 4081) emm++; if (pid == 1) cat++
		}
		END { printf "%d %d %d %d %d %d %d\n", s, c, e, o, ecm, emm, cat }'
}

PIDS=
# (ffprobe lists each stream twice, once under its program: keep distinct ids)
for h in $(ffprobe -v error -show_entries stream=id -of csv=p=0 clip.ts | tr -d ',' | grep . | sort -u); do
	PIDS="$PIDS $(printf '%d' "$h")"
done
[ -n "$PIDS" ] || kh_fail "ffprobe found no streams in the clip"

# --- keys --------------------------------------------------------------------------------------
kh_expect_ok authority init auth
kh_expect_ok headend keys init --authority auth --out h.keys
kh_expect_mode h.keys 600
grep -q '^keyhole-headend-keys 1$' h.keys || kh_fail "key file has no version header"
kh_expect_fail headend keys init --authority auth --out h.keys
kh_err_has 'h.keys: already exists'
kh_expect_ok headend keys show --keys h.keys
kh_out_has '^service key 1 version 1$'
kh_out_has '^seq all 0$'
master=$(tr -d '\n' <auth/master.key)
grep -q "$master" "$KH_OUT" && kh_fail "keys show printed the master key"
key1=$(sed -n 's/^service 1 1 //p' h.keys)
grep -q "$key1" "$KH_OUT" && kh_fail "keys show printed a service key"

# --- EMMs --------------------------------------------------------------------------------------
kh_expect_ok headend emm --keys h.keys --ua 0000000A --entitle 7:now-60:now+86400 --service-keys \
	--set-group 3 --set-all-key --auth-export 1 --out card.emm
# the operator's signers first (seq 1 and 2), then the rest (seq 3), all in card.emm
kh_out_has 'seq 1: the operator.s ECM signer'
kh_out_has 'seq 2: the operator.s EMM signer'
kh_out_has 'seq 3: card.emm'
kh_expect_ok headend emm --keys h.keys --ua 0000000A --credit 500:1 --out card2.emm
kh_out_has 'seq 4'
kh_expect_ok headend emm --keys h.keys --group 3 --revoke 9 --out group.emm
kh_expect_ok headend emm --keys h.keys --all --revoked 1:0000000B,0000000C --out all.emm
# what a card accepts only under its own key is refused for a group or all cards
kh_expect_usage headend emm --keys h.keys --all --request-export --out x.emm
kh_expect_usage headend emm --keys h.keys --group 3 --credit 5:9 --out x.emm
kh_expect_usage headend emm --keys h.keys --all --revoked 0:0000000B --out x.emm
kh_expect_usage headend emm --keys h.keys --all --revoked 1:nothex --out x.emm
[ ! -e x.emm ] || kh_fail "a refused headend emm wrote x.emm"
kh_expect_ok headend keys show --keys h.keys
kh_out_has '^seq all 1$'
kh_out_has '^seq group 3 1$'
kh_out_has '^seq card 0000000A 4$'
kh_out_has '^revoked list version 1 '
kh_expect_ok headend emm --keys h.keys --ua 7E7E7E7E --credit 1:1 --out /dev/null
[ -c /dev/null ] || kh_fail "headend emm --out /dev/null replaced /dev/null with a regular file"
grep -q '^revoked 1$' h.keys || kh_fail "the key file does not keep the revoked list's version"
cat card.emm card2.emm group.emm all.emm >emms
# concurrent runs never issue one seq twice (the key file's flock)
i=1
pids=
while [ $i -le 8 ]; do
	"$KEYHOLE" headend emm --keys h.keys --ua 0000000B --revoke $i --out par$i.emm >par$i.out 2>&1 &
	pids="$pids $!"
	i=$((i + 1))
done
for p in $pids; do
	wait "$p" || kh_fail "a concurrent 'headend emm' failed: $(cat par*.out)"
done
seqs=$(sed -n 's/.*seq \([0-9]*\):.*/\1/p' par*.out | sort -n | tr '\n' ' ')
[ "$seqs" = "1 2 3 4 5 6 7 8 " ] || kh_fail "concurrent EMMs got seqs '$seqs'"
kh_expect_ok headend keys show --keys h.keys
kh_out_has '^seq card 0000000B 8$'
# rotation: two versions at most
kh_expect_ok headend keys rotate --keys h.keys --key-id 1
kh_expect_ok headend keys rotate --keys h.keys --key-id 1
kh_expect_ok headend keys show --keys h.keys
kh_out_has '^service key 1 version 2$'
kh_out_has '^service key 1 version 3$'
grep -q '^service key 1 version 1$' "$KH_OUT" && kh_fail "rotate kept a third version"
kh_expect_mode h.keys 600
kh_no_tmp_files "$KH_WORK"

# --- scramble, each algorithm ------------------------------------------------------------------
for alg in csa2 cissa idsa; do
	kh_expect_ok headend scramble --keys h.keys --in clip.ts --out $alg.ts --alg $alg --product 7 \
		--period 5 --cw-log $alg.cw --emm emms --time 1700000000
	[ ! -s "$KH_ERR" ] || kh_fail "$alg: scramble printed on stderr (not a terminal)"
	kh_expect_mode $alg.cw 600
	n=$(wc -l <$alg.cw)
	[ "$n" -eq 3 ] || kh_fail "$alg: cw-log has $n lines, expected 3 (12 s in 5 s periods)"
	len=16
	[ $alg = csa2 ] || len=32
	grep -Evq "^[0-9a-f]{$len}\$" $alg.cw && kh_fail "$alg: cw-log line is not $len lowercase hex digits"
	streams=$(ffprobe -v error -show_entries stream=codec_type -of csv=p=0 $alg.ts | tr -d ',' | grep . | sort -u | tr '\n' ' ')
	[ "$streams" = "audio video " ] || kh_fail "$alg: ffprobe sees '$streams' in the output"
	# shellcheck disable=SC2086
	set -- $(scan $alg.ts $PIDS)
	[ "$1" -gt 1000 ] || kh_fail "$alg: only $1 scrambled component packets"
	[ "$2" -eq 0 ] || kh_fail "$alg: $2 component packets with a payload are in clear"
	[ "$3" -gt 0 ] && [ "$4" -gt 0 ] || kh_fail "$alg: parities used: even $3, odd $4"
	[ "$5" -gt 100 ] || kh_fail "$alg: $5 ECM packets"
	[ "$6" -gt 100 ] || kh_fail "$alg: $6 EMM packets"
	[ "$7" -gt 0 ] || kh_fail "$alg: no CAT"
done
# --emm FILE --emm FILE carries both files' EMMs, in order: the EMM PID's packets are exactly
# those of one --emm with the two files concatenated (they do not depend on the control words)
emm_pid_packets()
{
	od -An -tu1 -w188 -v "$1" | awk '($2 % 32) * 256 + $3 == 4081'
}
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out two.ts --alg csa2 --product 7 --period 5 \
	--emm card.emm --emm group.emm --time 1700000000
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out cat.ts --alg csa2 --product 7 --period 5 \
	--emm emms --time 1700000000
cat card.emm group.emm >cg.emm
kh_expect_ok headend scramble --keys h.keys --in clip.ts --out cg.ts --alg csa2 --product 7 --period 5 \
	--emm cg.emm --time 1700000000
# the output goes away: a reader that closes the pipe, a full device: one line naming the cause
{
	"$KEYHOLE" headend scramble --keys h.keys --in clip.ts --out - --alg csa2 --product 7 2>"$KH_META/pipe.err"
	echo $? >"$KH_META/pipe.rc"
} | head -c 1000 >/dev/null
[ "$(cat "$KH_META/pipe.rc")" -eq 1 ] || kh_fail "closed pipe: exit $(cat "$KH_META/pipe.rc"), want 1"
grep -qx 'keyhole: standard output: the reader closed the pipe; stopped' "$KH_META/pipe.err" ||
	kh_fail "closed pipe: $(cat "$KH_META/pipe.err")"
if [ -c /dev/full ]; then
	kh_expect_fail headend scramble --keys h.keys --in clip.ts --out /dev/full --alg csa2 --product 7
	kh_err_has '^keyhole: /dev/full: No space left on device$'
fi
emm_pid_packets two.ts >two.emmpkts
emm_pid_packets cg.ts >cg.emmpkts
emm_pid_packets cat.ts >cat.emmpkts
[ -s two.emmpkts ] || kh_fail "no EMM packets with two --emm files"
cmp -s two.emmpkts cg.emmpkts || kh_fail "--emm a --emm b does not carry the EMMs of a then b"
cmp -s two.emmpkts cat.emmpkts && kh_fail "the EMM packets do not tell the EMM files apart (test is blind)"
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --emm card.emm \
	--emm missing.emm
kh_err_has 'missing.emm'
rm -f two.ts cat.ts cg.ts ./*.emmpkts

# the same clip from standard input to standard output
"$KEYHOLE" headend scramble --keys h.keys --alg csa2 --event 5 --price 100 --period 5 <clip.ts >pipe.ts 2>err ||
	kh_fail "scramble from stdin to stdout failed: $(cat err)"
# shellcheck disable=SC2086
set -- $(scan pipe.ts $PIDS)
[ "$2" -eq 0 ] && [ "$1" -gt 1000 ] || kh_fail "stdin/stdout: $1 scrambled, $2 clear"
kh_no_tmp_files "$KH_WORK"

# --- refusals ----------------------------------------------------------------------------------
kh_expect_usage headend
kh_expect_usage headend bogus
kh_expect_usage headend keys
kh_expect_usage headend keys init --out x.keys
kh_expect_usage headend keys rotate --keys h.keys --key-id 256
kh_expect_usage headend emm --keys h.keys --out x.emm --entitle 1:2:3
kh_expect_usage headend emm --keys h.keys --ua 0000000A --all --out x.emm --revoke 1
kh_expect_usage headend emm --keys h.keys --group 3 --set-group 4 --out x.emm
kh_expect_usage headend emm --keys h.keys --ua 0000000A --out x.emm
kh_expect_usage headend emm --keys h.keys --ua 0000000A --entitle 1:20:10 --out x.emm
kh_err_has 'END is not after START'
# --entitle's START and END: +N is N seconds from now (START) or after START (END)
kh_expect_ok headend emm --keys h.keys --ua 0000000A --entitle 7:now:+86400 --out plus.emm
[ -s plus.emm ] || kh_fail "--entitle 7:now:+86400 wrote no EMM"
kh_expect_ok headend emm --keys h.keys --ua 0000000A --entitle 7:+60:+86400 --entitle 8:1000:+5 --out plus2.emm
kh_expect_usage headend emm --keys h.keys --ua 0000000A --entitle 7:1000:+0 --out x.emm
kh_err_has 'END is not after START'
for bad in 7:now:+ 7:now:+x 7:soon:+5 7:now:++5 7:now:-5; do
	kh_expect_usage headend emm --keys h.keys --ua 0000000A --entitle "$bad" --out x.emm
	kh_err_has 'START and END are Unix seconds, now, now\+N or now-N, or \+N'
done
[ ! -e x.emm ] || kh_fail "a refused --entitle wrote x.emm"
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --product 7
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg rot13 --product 7
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --period 4
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --period 5 --lead 5000
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg cissa --product 7 --csa-reduce
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --ecm-pid 0x100 --emm-pid 0x100
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 extra
# an option that takes one value, given twice, is refused (it used to keep the last one), in
# every headend command; --emm, --entitle, --revoke and --credit accumulate, and --service names
# several programmes, each once
for o in "--keys h.keys" "--in clip.ts" "--out x.ts" "--alg csa2" "--product 7" "--service 1" "--key-id 1" \
	"--key-version 1" "--period 5" "--lead 100" "--ecm-interval 100" "--emm-interval 100" "--ecm-pid 0x200" \
	"--emm-pid 0x201" "--ca-system-id 1" "--time now" "--cw-log x.cw" "--center http://127.0.0.1:1" \
	"--cacert x.pem" "--center-since 1" "--emm-poll 1" "--token-file x.tok"; do
	# shellcheck disable=SC2086
	kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 \
		--center http://127.0.0.1:1 $o $o
	kh_err_has "${o%% *} is given twice"
done
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --event 5 --price 1 --price 2
kh_err_has '--price is given twice'
kh_expect_usage headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --event 5 --event 6 --price 1
kh_expect_usage headend scramble --keys h.keys -i clip.ts --in clip.ts --out x.ts --alg csa2 --product 7
kh_err_has '--in is given twice'
kh_expect_usage headend keys init --authority auth --authority auth --out x.keys
kh_expect_usage headend keys init --authority auth --out x.keys -o y.keys
kh_expect_usage headend keys rotate --keys h.keys --key-id 1 --key-id 2
kh_expect_usage headend keys rotate --keys h.keys --keys h.keys --key-id 1
kh_expect_usage headend keys show --keys h.keys --keys h.keys
kh_expect_usage headend keys import --keys h.keys --db a.db --db b.db
kh_expect_usage headend keys import --keys h.keys --center http://127.0.0.1:1 --center http://127.0.0.1:2
kh_expect_usage headend keys import --keys h.keys --center http://127.0.0.1:1 --token-file a --token-file b
kh_expect_usage headend keys import --keys h.keys --center http://127.0.0.1:1 --cacert a --cacert b
kh_expect_usage headend emm --keys h.keys --ua 0000000A --ua 0000000B --revoke 1 --out x.emm
kh_err_has '--ua is given twice'
kh_expect_usage headend emm --keys h.keys --group 1 --group 2 --revoke 1 --out x.emm
kh_expect_usage headend emm --keys h.keys --keys h.keys --all --revoke 1 --out x.emm
kh_expect_usage headend emm --keys h.keys --all --revoke 1 --out x.emm --out y.emm
kh_expect_usage headend emm --keys h.keys --ua 0000000A --set-group 1 --set-group 2 --out x.emm
kh_expect_usage headend emm --keys h.keys --ua 0000000A --auth-export 1 --auth-export 0 --out x.emm
kh_expect_usage headend emm --keys h.keys --all --revoked 2:0000000B --revoked 3:0000000C --out x.emm
[ ! -e x.ts ] && [ ! -e x.emm ] && [ ! -e x.keys ] && [ ! -e y.keys ] && [ ! -e y.emm ] ||
	kh_fail "a usage error created a file"
for c in "headend" "headend keys" "headend keys init" "headend keys rotate" "headend keys show" \
	"headend emm" "headend scramble"; do
	# shellcheck disable=SC2086
	kh_expect_help $c --help
done

# failures: exit 1, one line, no output file
kh_expect_fail headend scramble --keys missing.keys --in clip.ts --out x.ts --alg csa2 --product 7
kh_expect_fail headend emm --keys missing.keys --all --revoke 1 --out x.emm
chmod 644 h.keys
kh_expect_fail headend keys show --keys h.keys
kh_err_has 'not private'
chmod 600 h.keys
cp h.keys bad.keys
printf 'seq card zz 1\n' >>bad.keys
kh_expect_fail headend keys show --keys bad.keys
kh_err_has "bad.keys line $(wc -l <bad.keys): malformed"
# a signer line whose key is not its certificate's (a hand edit): refused, naming the line
awk '$1 == "signer" && $2 == "ecm" { $4 = "0000000000000000000000000000000000000000000000000000000000000001" } { print }' \
	h.keys >bad.keys
chmod 600 bad.keys
kh_expect_fail headend keys show --keys bad.keys
kh_err_has "bad.keys line $(grep -n '^signer ecm' bad.keys | cut -d: -f1): malformed"
# the ECM PID collides with a component: refused, and nothing left behind
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 \
	--ecm-pid "$(echo $PIDS | cut -d' ' -f1)" --cw-log x.cw
kh_err_has 'ecm-pid 0x0*[0-9A-F]+ is in use in the input: a component'
# not a transport stream: said so, whatever the bytes
head -c 1000 /dev/urandom >noise.ts
kh_expect_fail headend scramble --keys h.keys --in noise.ts --out x.ts --alg csa2 --product 7
kh_err_has 'not a transport stream'
: >empty.ts
kh_expect_fail headend scramble --keys h.keys --in empty.ts --out x.ts --alg csa2 --product 7
kh_err_has 'not a transport stream'
# a malformed EMM file
head -c 10 card.emm >bad.emm
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --emm bad.emm
kh_err_has 'bad.emm'
kh_expect_fail headend scramble --keys h.keys --in missing.ts --out x.ts --alg csa2 --product 7
# a key version that is not there
kh_expect_fail headend scramble --keys h.keys --in clip.ts --out x.ts --alg csa2 --product 7 --key-version 1
[ ! -e x.ts ] && [ ! -e x.cw ] && [ ! -e x.emm ] || kh_fail "a failed run left an output file"
kh_no_tmp_files "$KH_WORK"

# Memory stays flat: eight times the stream, the same peak RSS (within 1 MB of noise).
if [ -x /usr/bin/time ]; then
	rss()
	{
		/usr/bin/time -f %M -o "$KH_META/rss" "$KEYHOLE" headend scramble --keys h.keys --alg cissa --product 7 \
			--in - --out /dev/null <"$1" 2>>"$KH_META/rss.err" || kh_fail "scramble of $1 for the RSS check failed"
		tail -n 1 "$KH_META/rss"
	}
	for i in 1 2 3 4 5 6 7 8; do cat clip.ts; done >long.ts
	one=$(rss clip.ts)
	eight=$(rss long.ts)
	[ "$eight" -le $((one + 1024)) ] || kh_fail "peak RSS grew with the stream: $one KB for 1x, $eight KB for 8x"
	kh_note "peak RSS $one KB for one clip, $eight KB for eight"
	rm -f long.ts
	# /dev/null is written to, never replaced by a file renamed over it
	[ -c /dev/null ] || kh_fail "scramble --out /dev/null replaced /dev/null with a regular file"
else
	kh_note "no /usr/bin/time: RSS check skipped (scripts/install-deps installs it)"
fi

# Progress on a terminal, silence otherwise. The input arrives in two parts a second apart, so at
# least one progress interval (0.5 s) passes while the headend is running.
if command -v script >/dev/null 2>&1; then
	half=$(($(wc -c <clip.ts) / 188 / 2 * 188))
	head -c "$half" clip.ts >part1.ts
	tail -c +"$((half + 1))" clip.ts >part2.ts
	mkfifo "$KH_META/slow"
	{ cat part1.ts; sleep 1; cat part2.ts; } >"$KH_META/slow" &
	script -qec "\"$KEYHOLE\" headend scramble --keys h.keys --alg csa2 --product 7 --in $KH_META/slow --out tty.ts" \
		/dev/null </dev/null >"$KH_META/tty.out" 2>&1 || kh_fail "scramble under a terminal failed"
	wait
	grep -q 'packets, .* Mb/s, crypto period' "$KH_META/tty.out" || kh_fail "no progress line on a terminal"
	{ cat part1.ts; sleep 1; cat part2.ts; } |
		"$KEYHOLE" headend scramble --keys h.keys --alg csa2 --product 7 --in - --out notty.ts 2>"$KH_META/notty.err" ||
		kh_fail "scramble from a pipe failed"
	[ ! -s "$KH_META/notty.err" ] || kh_fail "progress printed when stderr is not a terminal"
	rm -f part1.ts part2.ts tty.ts notty.ts
	# a transport stream is never written to a terminal unless --out - asks for it: the refusal
	# comes before the key file is read or changed
	cp h.keys h.keys.before
	script -qec "\"$KEYHOLE\" headend scramble --keys h.keys --alg csa2 --product 7 --in clip.ts" \
		/dev/null </dev/null >"$KH_META/tty.out" 2>&1
	rc=$?
	[ "$rc" -eq 2 ] || kh_fail "scramble to a terminal without --out: exit $rc, not 2: $(head -c 300 "$KH_META/tty.out")"
	grep -q '^keyhole headend scramble: refusing to write a transport stream to a terminal' "$KH_META/tty.out" ||
		kh_fail "scramble to a terminal without --out: $(head -c 300 "$KH_META/tty.out")"
	[ "$(wc -l <"$KH_META/tty.out")" -eq 1 ] || kh_fail "the refusal is not one line"
	cmp -s h.keys h.keys.before || kh_fail "a refused scramble changed the key file"
	script -qec "\"$KEYHOLE\" headend scramble --keys h.keys --alg csa2 --product 7 --in clip.ts --out -" \
		/dev/null </dev/null >"$KH_META/tty.out" 2>&1 || kh_fail "scramble --out - on a terminal failed"
	[ "$(wc -c <"$KH_META/tty.out")" -ge "$(wc -c <clip.ts)" ] || kh_fail "scramble --out - on a terminal wrote too little"
	rm -f h.keys.before
fi
kh_note "ok"
