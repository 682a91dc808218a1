#!/bin/sh
# Fuzz smoke run (make fuzz-smoke): for every fuzz_* harness in BUILD_DIR, replay its seed corpus
# fuzz/corpus/<name> once as a regression test (-runs=0), then fuzz for SECONDS starting from a
# temporary copy of it, so libFuzzer never writes into the source tree. One summary line per
# harness; exits non-zero when any harness fails (crash, sanitizer report, leak, timeout, OOM).
# Crash inputs are kept in BUILD_DIR/fuzz-artifacts/.
#
#   sh fuzz/smoke.sh BUILD_DIR [SECONDS]
set -u

build=${1:?usage: sh fuzz/smoke.sh BUILD_DIR [SECONDS]}
secs=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$build" && pwd) || exit 2
artifacts=$build/fuzz-artifacts

: "${ASAN_OPTIONS:=detect_leaks=1:abort_on_error=1:symbolize=1}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS UBSAN_OPTIONS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kh-fuzz-smoke.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir -p "$artifacts"

# The value of one of libFuzzer's final "stat::NAME: VALUE" lines in a log.
final_stat() {
	sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

# Number of files in a directory.
files() {
	find "$1" -type f | wc -l | tr -d ' '
}

# Report a failed step: what failed, and the end of its log.
fail() {
	echo "FAIL $1: $2 (log tail follows; artifacts in $artifacts)"
	tail -n 60 "$3" | sed 's/^/    /'
	failed=$((failed + 1))
}

failed=0
count=0
start_all=$(date +%s)
for bin in "$build"/fuzz_*; do
	if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
		continue
	fi
	name=$(basename "$bin")
	count=$((count + 1))
	seeds=$here/corpus/$name
	if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
		echo "FAIL $name: no seed corpus in $seeds"
		failed=$((failed + 1))
		continue
	fi
	work=$tmp/$name
	mkdir -p "$work"
	cp "$seeds"/* "$work"/
	nseeds=$(files "$work")

	# 1. Replay: every seed once, nothing written.
	log=$tmp/$name.replay.log
	if ! "$bin" -runs=0 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/$name-" \
		"$work" >"$log" 2>&1; then
		fail "$name" "corpus replay" "$log"
		continue
	fi

	# 2. Fuzz from the copy.
	log=$tmp/$name.fuzz.log
	t0=$(date +%s)
	if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$artifacts/$name-" "$work" >"$log" 2>&1; then
		fail "$name" "fuzzing" "$log"
		continue
	fi
	t1=$(date +%s)
	execs=$(final_stat number_of_executed_units "$log")
	rate=$(final_stat average_exec_per_sec "$log")
	ncorpus=$(files "$work")
	printf 'ok   %-18s replay %3s seeds, %9s execs in %3s s (%s/s), corpus %s -> %s\n' \
		"$name" "$nseeds" "${execs:-?}" "$((t1 - t0))" "${rate:-?}" "$nseeds" "$ncorpus"
done
end_all=$(date +%s)

if [ "$count" -eq 0 ]; then
	echo "fuzz smoke: no fuzz_* harness in $build (build with: make fuzz)"
	exit 1
fi
echo "fuzz smoke: $count harnesses, $failed failed, $((end_all - start_all)) s"
[ "$failed" -eq 0 ]
