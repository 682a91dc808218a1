#!/bin/sh
# `keyhole decoder play --m1 DIR --export-every SECONDS` (seed 001: the card's data goes to M1
# "each time the content of M2 is modified, or at regular interval"): over an 8 s clip scrambled
# by the headend, a play with --export-every 2 stores more blocks in M1 than one without (on the
# EMM and at the end only), the extra ones marked why=period, about one per 2 s of stream time
# (the PCR, not the wall clock: a file plays in well under a second); block numbers only ever go
# up, across both runs; the -v summary counts them; and the option's usage errors.
#
# Run by CTest as `sh test_decoder_export.sh` with KEYHOLE and KH_SOURCE_DIR set.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init decoder_export
if ! command -v ffmpeg >/dev/null 2>&1; then
	kh_note "skipped: ffmpeg not installed (scripts/install-deps installs it)"
	exit 0
fi
cd "$KH_WORK" || kh_fail "cd $KH_WORK"

# the block numbers of the 'event=decoder.m1' lines of the last run, one a line
seqs()
{
	sed -n 's/.*event=decoder\.m1 why=[a-z]* ua=[0-9A-F]* seq=\([0-9][0-9]*\)$/\1/p' "$KH_ERR"
}

# every number of the file is above the one before it (and above $2)
increasing()
{
	awk -v prev="$2" '{ if ($1 + 0 <= prev + 0) { bad = 1 } prev = $1 } END { exit bad }' "$1"
}

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=8:size=160x120:rate=25 -c:v mpeg2video \
	-f mpegts clip.ts || kh_fail "ffmpeg could not make the clip"
kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x12D --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
kh_expect_ok headend keys init --authority auth --out headend.keys
kh_expect_ok headend emm --keys headend.keys --ua 0000012D --service-keys --entitle 5:now-100:now+86400 \
	--auth-export 1 --out c.emm
kh_expect_ok headend scramble --keys headend.keys --in clip.ts --out s.ts --alg cissa --product 5 --period 5 \
	--emm c.emm

# without a period: on the EMM and at the end
KEYHOLE_LOG=info kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --out c1.ts \
	--m1 m1d -v
n_plain=$(grep -c 'event=decoder\.m1 ' "$KH_ERR")
[ "$n_plain" -ge 2 ] || kh_fail "a play with M1 stored $n_plain block(s), expected at least 2 (EMM, end)"
! grep -q 'why=period' "$KH_ERR" || kh_fail "a play without --export-every exported on a period"
# the first EMMs (the operator's signers, one each) come before export is authorised: M1 is kept
n_kept=$(grep -c 'event=decoder\.m1_kept why=emm err=EXPORT_DENIED' "$KH_ERR")
[ "$n_kept" -eq 2 ] || kh_fail "M1 kept $n_kept time(s) before export was authorised, expected 2 (the signers' EMMs)"
kh_err_has "keyhole: M1: $n_plain block\(s\) stored, $n_kept kept as they were; 0 export period\(s\)"
seqs >seq1
increasing seq1 0 || kh_fail "M1 block numbers went backwards: $(tr '\n' ' ' <seq1)"
last1=$(tail -n 1 seq1)

# with one every 2 s of stream time: 8 s of clip, so 3 or 4 more (the first PCR starts the clock)
KEYHOLE_LOG=info kh_expect_ok decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --out c2.ts \
	--m1 m1d --export-every 2 -v
n_period=$(grep -c 'event=decoder\.m1 why=period' "$KH_ERR")
n_all=$(grep -c 'event=decoder\.m1 ' "$KH_ERR")
[ "$n_period" -ge 3 ] && [ "$n_period" -le 4 ] || kh_fail "--export-every 2 over 8 s: $n_period period exports"
[ "$n_all" -gt "$n_plain" ] || kh_fail "--export-every did not add M1 writes ($n_all, without: $n_plain)"
kh_err_has "keyhole: M1: $n_all block\(s\) stored, 0 kept as they were; $n_period export period\(s\) in [0-9]+ ms"
seqs >seq2
increasing seq2 "$last1" || kh_fail "M1 block numbers went backwards: $last1 then $(tr '\n' ' ' <seq2)"
kh_expect_ok decoder m1 --m1 m1d
kh_out_has "^block_seq $(tail -n 1 seq2)\$"
cmp -s c1.ts c2.ts || kh_fail "exporting on a period changed the clear output"

# usage
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --export-every 2
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --m1 m1d --export-every 0
kh_expect_usage decoder play --decoder dec.card --cam cam.card --card card.card --in s.ts --m1 m1d --export-every x
kh_expect_usage decoder buy --decoder dec.card --cam cam.card --card card.card --in s.ts --m1 m1d --export-every 2

kh_note "M1 on a period of stream time: $n_all blocks with --export-every 2, $n_plain without; never backwards"
