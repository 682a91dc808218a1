# `keyhole decoder`: help and usage errors of play, buy, status, init and m1; status of a fresh
# card; play from an empty input and over a clear clip (the engine's pass-through: the service
# comes out whole, ffprobe reads it); the output file appears only when the stream was played; a
# pairing failure leaves nothing behind, a CAM in the decoder module's place (--decoder) included,
# with or without --ladder, and buys nothing. The decoder's memory M1 (seed 001): init, a card
# authorised to export fills it through play and buy, a replacement card not yet authorised
# leaves it alone, the authorising EMM lets the new card's block in; a changed M1 file is
# refused and never overwritten. The scrambled paths are covered by tests/unit/test_decoder.c and,
# with and without the key ladder, by test_broadcast.sh; M1's rules by tests/unit/test_m1.c.
#
# Run by CTest as `sh test_decoder.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_decoder

cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# --- help and usage ----------------------------------------------------------------------------
for cmd in "decoder" "decoder play" "decoder buy" "decoder status" "decoder init" "decoder m1"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage decoder
kh_expect_usage decoder frob
kh_expect_usage decoder play
kh_expect_usage decoder play --decoder d --cam b
kh_expect_usage decoder play --cam b --card c
kh_expect_usage decoder play --cam b --card c --ladder
kh_expect_usage decoder play --root a --cam b --card c
kh_expect_usage decoder play --root a --decoder d --cam b --card c
kh_expect_usage decoder play --decoder d --cam b --card c extra
kh_expect_usage decoder play --decoder d --cam b --card c --service 70000
kh_expect_usage decoder play --decoder d --cam b --card c --ca-system-id 0
kh_expect_usage decoder play --decoder d --cam b --card c --nope
kh_expect_usage decoder play --decoder d --cam b --card c --ladder=1
kh_expect_usage decoder play --cam b --card c --decoder
kh_expect_usage decoder buy --decoder d --cam b --card c
kh_expect_usage decoder buy --cam b --card c --in x
kh_expect_usage decoder buy --root a --decoder d --cam b --card c --in x
kh_expect_usage decoder buy --decoder d --cam b --card c --in x --out y
kh_expect_usage decoder buy --decoder d --cam b --card c --in x --buy
kh_expect_usage decoder buy --decoder d --cam b --card c --in x --ladder
kh_expect_usage decoder status
kh_expect_usage decoder status --card c extra
kh_expect_usage decoder play --decoder d --cam b --card c --m1 ''
kh_expect_usage decoder init
kh_expect_usage decoder init --m1 d extra
kh_expect_usage decoder init --m1 d --m1 e extra
kh_expect_usage decoder m1
kh_expect_usage decoder m1 --dir d
[ -z "$(ls -A "$KH_WORK")" ] || kh_fail "a usage error created files: $(ls -A "$KH_WORK")"

# --- modules -----------------------------------------------------------------------------------
kh_expect_ok authority init --name "Test operator" auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok card issue --authority auth --role cam --out cam2.card
kh_expect_ok card info --card dec.card
kh_out_has '^role: *decoder$'
kh_expect_ok decoder status --card card.card
kh_out_has '^card 00000002$'
kh_out_has '^credit 0$'
kh_out_has '^group none$'
kh_out_has '^emm seq unique 0 group 0 all 0$'
kh_out_has '^purchases 0$'
kh_expect_fail decoder status --card nowhere.card

# --- M1: init, empty ---------------------------------------------------------------------------
kh_expect_ok decoder m1 --m1 nom1
kh_out_has '^m1 empty$'
[ ! -e nom1 ] || kh_fail "'decoder m1' created its directory"
kh_expect_ok decoder init --m1 m1d
kh_expect_mode m1d 700
kh_expect_mode m1d/m1.key 600
kh_expect_fail decoder init --m1 m1d
kh_err_has 'already exists'
kh_expect_ok decoder m1 --m1 m1d
kh_out_has '^m1 empty$'
chmod 644 m1d/m1.key
kh_expect_fail decoder m1 --m1 m1d
kh_err_has 'not private'
chmod 600 m1d/m1.key

# --- play: empty stream, pairing failure -------------------------------------------------------
# nothing on standard input is no transport stream: exit 1, no output file
kh_expect_fail decoder play --decoder dec.card --cam cam.card --card card.card --out empty.ts
kh_err_has '^keyhole: standard input: not a transport stream'
[ ! -e empty.ts ] || kh_fail "an empty stream left an output file"
[ -z "$(find . -name 'empty.ts.*')" ] || kh_fail "an empty stream left a temporary file"
kh_expect_fail decoder play --decoder dec.card --cam card.card --card cam.card --out never.ts
kh_err_has 'different role'
[ ! -e never.ts ] || kh_fail "a failed play left its output file"
[ -z "$(find . -name 'never.ts.*')" ] || kh_fail "a failed play left a temporary file"
kh_expect_fail decoder play --decoder dec.card --cam cam.card --card card.card --in nowhere.ts --out never.ts
[ ! -e never.ts ] || kh_fail "a failed play left its output file"
# a CAM is no decoder module: it cannot prove a decoder certificate, so nothing plays, with or
# without the key ladder
for ladder in "" --ladder; do
	# shellcheck disable=SC2086
	kh_expect_fail decoder play --decoder cam2.card --cam cam.card --card card.card $ladder --out never.ts
	kh_err_has '^keyhole: pairing decoder, CAM and card: '
	[ ! -e never.ts ] || kh_fail "play with a CAM as its decoder module left its output file"
	[ -z "$(find . -name 'never.ts.*')" ] || kh_fail "play with a CAM as its decoder module left a temporary file"
done

# --- play: a transport stream is never written to a terminal unless asked ---------------------
if command -v script >/dev/null 2>&1; then
	: >empty.in
	cp card.card card.before
	script -qec "\"$KEYHOLE\" decoder play --decoder dec.card --cam cam.card --card card.card --in empty.in" \
		/dev/null </dev/null >"$KH_META/tty.out" 2>&1
	rc=$?
	[ "$rc" -eq 2 ] || kh_fail "play to a terminal without --out: exit $rc, not 2: $(cat "$KH_META/tty.out")"
	grep -q '^keyhole decoder play: refusing to write a transport stream to a terminal' "$KH_META/tty.out" ||
		kh_fail "play to a terminal without --out: $(cat "$KH_META/tty.out")"
	[ "$(grep -c . "$KH_META/tty.out")" -eq 1 ] || kh_fail "the refusal is not one line: $(cat "$KH_META/tty.out")"
	cmp -s card.card card.before || kh_fail "a refused play changed the card"
	# --out - is asked for: it goes ahead (and finds no transport stream in an empty input)
	script -qec "\"$KEYHOLE\" decoder play --decoder dec.card --cam cam.card --card card.card --in empty.in --out -" \
		/dev/null </dev/null >"$KH_META/tty.out" 2>&1
	rc=$?
	[ "$rc" -eq 1 ] || kh_fail "play --out - on a terminal: exit $rc, not 1: $(cat "$KH_META/tty.out")"
	grep -q 'not a transport stream' "$KH_META/tty.out" || kh_fail "play --out - on a terminal: $(cat "$KH_META/tty.out")"
	rm -f empty.in card.before
else
	kh_note "no script: the terminal checks are skipped"
fi

# --- play: a clear clip passes whole -----------------------------------------------------------
if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
	ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x48:rate=10 -t 1 -c:v mpeg2video \
		-f mpegts clip.ts || kh_fail "ffmpeg could not make a clip"
	# a stream clear to begin with plays (exit 0): only scrambled packets need a key
	kh_expect_ok decoder play -v --decoder dec.card --cam cam.card --card card.card --in clip.ts --out clear.ts
	kh_expect_mode clear.ts 644
	kh_err_has 'descrambled'
	kh_err_has 'ECMs passed 0'
	[ "$(wc -c <clear.ts)" -eq "$(wc -c <clip.ts)" ] || kh_fail "a clear clip changed size"
	# a named pipe and a device are written in place: the reader gets every byte, /dev/null
	# stays a device
	mkfifo out.fifo
	cat out.fifo >fifo.ts &
	reader=$!
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in clip.ts --out out.fifo
	wait $reader || kh_fail "the reader of the named pipe failed"
	[ -p out.fifo ] || kh_fail "decoder play replaced the named pipe with a file"
	cmp -s fifo.ts clear.ts || kh_fail "the named pipe's reader did not get the whole stream"
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in clip.ts --out /dev/null
	[ -c /dev/null ] || kh_fail "decoder play --out /dev/null replaced /dev/null with a regular file"
	ffprobe -v error -show_entries stream=codec_name -of csv=p=0 clear.ts >"$KH_META/probe" 2>&1 ||
		kh_fail "ffprobe cannot read the output"
	grep -q mpeg2video "$KH_META/probe" || kh_fail "the video stream is missing from the output"
	kh_expect_fail decoder buy --decoder dec.card --cam cam.card --card card.card --in clip.ts
	kh_err_has 'no ECM'

	# --- M1 (seed 001): the old card fills it, the new one only once authorised -----------
	kh_expect_ok card issue --authority auth --role card --ua 0xC9 --out old.card
	kh_expect_ok card issue --authority auth --role card --ua 0xCA --out new.card
	kh_expect_ok headend keys init --authority auth --out headend.keys
	# the old card: authorised to export, 100 credits; a PPV event at 30
	kh_expect_ok headend emm --keys headend.keys --ua 000000C9 --service-keys --credit 100:1 \
		--auth-export 1 --out old.emm
	kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-old.ts --alg csa2 \
		--event 77 --price 30 --period 5 --emm old.emm
	# the event is not bought yet: not one packet descrambled, so exit 1 with the reason and no
	# output file; the card and M1 are kept up to date all the same
	KEYHOLE_LOG=info kh_run decoder play --decoder dec.card --cam cam.card --card old.card --in s-old.ts \
		--out c-old.ts --m1 m1d
	[ "$KH_RC" -eq 1 ] || kh_fail "a pay-per-view event not bought: play exited $KH_RC, want 1"
	[ "$(tail -n 1 "$KH_ERR")" = "keyhole: program 1: not one packet could be descrambled: pay-per-view event 77: price 30, credit 100 — run 'keyhole decoder buy'" ] ||
		kh_fail "a pay-per-view event not bought: the last line does not say why"
	[ ! -e c-old.ts ] || kh_fail "nothing descrambled, yet an output file was written"
	# refreshed when the card accepted the EMM, and at the end of the stream
	kh_err_has 'event=decoder.m1 why=emm ua=000000C9'
	kh_err_has 'event=decoder.m1 why=end ua=000000C9'
	kh_expect_ok decoder m1 --m1 m1d
	kh_out_has '^card 000000C9$'
	kh_out_has '^size [0-9]+$'
	seq1=$(sed -n 's/^block_seq //p' "$KH_OUT")
	[ -n "$seq1" ] && [ "$seq1" -ge 1 ] || kh_fail "M1: no block_seq after play"
	kh_expect_mode m1d/m1 600
	# a CAM in the decoder module's place buys nothing
	kh_expect_fail decoder buy --decoder cam2.card --cam cam.card --card old.card --in s-old.ts --m1 m1d
	kh_err_has '^keyhole: pairing decoder, CAM and card: '
	kh_expect_ok decoder m1 --m1 m1d
	kh_out_has "^block_seq $seq1\$"
	kh_expect_ok decoder buy --decoder dec.card --cam cam.card --card old.card --in s-old.ts --m1 m1d
	kh_out_has '^bought event 77 for 30; credit now 70$'
	kh_expect_ok decoder m1 --m1 m1d
	kh_out_has '^card 000000C9$'
	seq2=$(sed -n 's/^block_seq //p' "$KH_OUT")
	[ "$seq2" -gt "$seq1" ] || kh_fail "M1: the purchase did not refresh M1 ($seq1 then $seq2)"
	kh_no_tmp_files m1d

	# the card is replaced: the new one is not authorised, M1 keeps the old card's block
	kh_expect_ok headend emm --keys headend.keys --ua 000000CA --service-keys --credit 100:2 --out new.emm
	kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-new.ts --alg csa2 \
		--event 78 --price 30 --period 5 --emm new.emm
	kh_snapshot m1d >"$KH_META/m1.before"
	KEYHOLE_LOG=info kh_run decoder play --decoder dec.card --cam cam.card --card new.card --in s-new.ts \
		--out c-new.ts --m1 m1d
	[ "$KH_RC" -eq 1 ] || kh_fail "event 78 not bought: play exited $KH_RC, want 1"
	kh_err_has 'm1_kept.*EXPORT_DENIED'
	kh_expect_ok decoder buy --decoder dec.card --cam cam.card --card new.card --in s-new.ts --m1 m1d
	kh_out_has '^bought event 78'
	kh_same_snapshot "$KH_META/m1.before" m1d "M1 changed although the new card is not authorised"
	kh_expect_ok decoder m1 --m1 m1d
	kh_out_has '^card 000000C9$'

	# the center has recovered the old card's block and authorises the new card
	kh_expect_ok headend emm --keys headend.keys --ua 000000CA --auth-export 1 --out auth.emm
	kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s-auth.ts --alg csa2 \
		--event 78 --price 30 --period 5 --emm auth.emm
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card new.card --in s-auth.ts --out c-auth.ts \
		--m1 m1d
	kh_expect_ok decoder m1 --m1 m1d
	kh_out_has '^card 000000CA$'
	kh_no_tmp_files m1d

	# a changed M1 file: refused, and play leaves it as it is (told once on stderr)
	kh_flip_byte m1d/m1 30
	kh_snapshot m1d >"$KH_META/m1.before"
	kh_expect_fail decoder m1 --m1 m1d
	kh_err_has 'authentication'
	kh_expect_ok decoder play --decoder dec.card --cam cam.card --card new.card --in s-auth.ts --out c-auth2.ts \
		--m1 m1d
	kh_err_has 'M1 m1d: authentication tag mismatch; M1 left as it was'
	[ "$(grep -c 'M1 m1d' "$KH_ERR")" -eq 1 ] || kh_fail "M1 trouble told more than once"
	kh_same_snapshot "$KH_META/m1.before" m1d "a play overwrote an M1 file it could not open"
else
	kh_note "ffmpeg/ffprobe not found: clear clip part skipped"
fi
kh_note ok
