#!/bin/sh
# Remake the version-1 module fixtures (README.txt says what they hold). Run from a checkout
# whose sealed state is still version 1 (one from before this directory existed), with its build:
#   sh tests/data/modules-v1/make.sh build/keyhole OUTDIR
# It needs ffmpeg. The files it writes differ at every run (fresh keys, nonces, times): the
# committed fixtures are one run, and tests/unit/test_module_compat.c checks their recorded facts.
set -eu
K=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
OUT=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"

ffmpeg -nostdin -v error -f lavfi -i testsrc=duration=6:size=160x120:rate=25 \
	-f lavfi -i sine=frequency=440:duration=6 -c:v mpeg2video -c:a mp2 -f mpegts clip.ts

"$K" authority init --validity-days 7305 auth
"$K" card issue --authority auth --role card --ua 0x101 --out card.card
"$K" card issue --authority auth --role cam --ua 0x201 --out cam.card
"$K" card issue --authority auth --role decoder --ua 0x301 --out dec.card
"$K" headend keys init --authority auth --out headend.keys
"$K" headend keys rotate --keys headend.keys --key-id 1
"$K" headend keys rotate --keys headend.keys --key-id 3

T=$(date +%s)
# the card's own EMMs: signers and service keys, two rights, credit, a group, the broadcast key,
# export allowed, the operator's revoked list
"$K" headend emm --keys headend.keys --ua 0x101 --service-keys --entitle "7:$((T - 3600)):$((T + 31536000))" \
	--entitle "9:$((T + 86400)):$((T + 172800))" --credit 500:1 --out 1.emm
"$K" headend emm --keys headend.keys --ua 0x101 --set-group 5 --set-all-key --auth-export 1 \
	--revoked 3:0x0000BEEF,0x0000CAFE --credit 25:2 --out 2.emm
cat 1.emm 2.emm >all.emm

# a pay-per-view event: played with --buy, the card buys it from its credit; --m1 has it make a
# usage block (block_seq 1, the purchase exported in it)
"$K" headend scramble --keys headend.keys --in clip.ts --out ev.ts --alg cissa --event 42 --price 30 \
	--period 5 --time "$T" --emm all.emm
"$K" decoder play --decoder dec.card --cam cam.card --card card.card --in ev.ts --out ev-clear.ts --buy --m1 m1

mkdir -p "$OUT"
for m in card cam dec; do
	cp "$m.card" "$m.key" "$m.card.ctr" "$OUT/"
done
cp auth/master.key "$OUT/master.key"
{
	echo "# made $(date -u +%Y-%m-%dT%H:%M:%SZ), broadcast time T=$T"
	for m in card cam dec; do
		echo "## keyhole card info --card $m.card"
		"$K" card info --card "$m.card"
	done
	echo "## keyhole decoder status --card card.card"
	"$K" decoder status --card card.card
	for m in card cam dec; do
		echo "## $m.card: $(wc -c <"$m.card") bytes, counter $(cat "$m.card.ctr")"
	done
} >"$OUT/expected.txt"
