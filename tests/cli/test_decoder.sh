# `keyhole decoder`: help and usage errors of play, buy and status; status of a fresh card; play
# from an empty input and over a clear clip (the engine's pass-through: the service comes out
# whole, ffprobe reads it); the output file appears only when the stream was played; a pairing
# failure leaves nothing behind. The scrambled paths are covered by tests/unit/test_decoder.c.
#
# Run by CTest as `sh test_decoder.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_decoder

cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# --- help and usage ----------------------------------------------------------------------------
for cmd in "decoder" "decoder play" "decoder buy" "decoder status"; do
	# shellcheck disable=SC2086
	kh_expect_help $cmd --help
done
kh_expect_usage decoder
kh_expect_usage decoder frob
kh_expect_usage decoder play
kh_expect_usage decoder play --root a --cam b
kh_expect_usage decoder play --root a --cam b --card c extra
kh_expect_usage decoder play --root a --cam b --card c --service 70000
kh_expect_usage decoder play --root a --cam b --card c --ca-system-id 0
kh_expect_usage decoder play --root a --cam b --card c --nope
kh_expect_usage decoder buy --root a --cam b --card c
kh_expect_usage decoder buy --root a --cam b --card c --in x --out y
kh_expect_usage decoder buy --root a --cam b --card c --in x --buy
kh_expect_usage decoder status
kh_expect_usage decoder status --card c extra
[ -z "$(ls -A "$KH_WORK")" ] || kh_fail "a usage error created files: $(ls -A "$KH_WORK")"

# --- modules -----------------------------------------------------------------------------------
kh_expect_ok authority init --name "Test operator" auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --out card.card
kh_expect_ok decoder status --card card.card
kh_out_has '^card 00000002$'
kh_out_has '^credit 0$'
kh_out_has '^group none$'
kh_out_has '^emm seq unique 0 group 0 all 0$'
kh_out_has '^purchases 0$'
kh_expect_fail decoder status --card nowhere.card

# --- play: empty stream, pairing failure -------------------------------------------------------
kh_expect_ok decoder play --root auth --cam cam.card --card card.card --out empty.ts
[ -f empty.ts ] && [ ! -s empty.ts ] || kh_fail "an empty stream did not give an empty file"
kh_expect_mode empty.ts 644
kh_expect_fail decoder play --root auth --cam card.card --card card.card --out never.ts
kh_err_has 'different role'
[ ! -e never.ts ] || kh_fail "a failed play left its output file"
[ -z "$(find . -name 'never.ts.*')" ] || kh_fail "a failed play left a temporary file"
kh_expect_fail decoder play --root auth --cam cam.card --card card.card --in nowhere.ts --out never.ts
[ ! -e never.ts ] || kh_fail "a failed play left its output file"

# --- play: a clear clip passes whole -----------------------------------------------------------
if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
	ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x48:rate=10 -t 1 -c:v mpeg2video \
		-f mpegts clip.ts || kh_fail "ffmpeg could not make a clip"
	kh_expect_ok decoder play -v --root auth --cam cam.card --card card.card --in clip.ts --out clear.ts
	kh_err_has 'descrambled'
	kh_err_has 'ECMs passed 0'
	[ "$(wc -c <clear.ts)" -eq "$(wc -c <clip.ts)" ] || kh_fail "a clear clip changed size"
	ffprobe -v error -show_entries stream=codec_name -of csv=p=0 clear.ts >"$KH_META/probe" 2>&1 ||
		kh_fail "ffprobe cannot read the output"
	grep -q mpeg2video "$KH_META/probe" || kh_fail "the video stream is missing from the output"
	kh_expect_fail decoder buy --root auth --cam cam.card --card card.card --in clip.ts
	kh_err_has 'no ECM'
else
	kh_note "ffmpeg/ffprobe not found: clear clip part skipped"
fi
kh_note ok
