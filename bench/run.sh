#!/bin/sh
# Run the benchmarks of bench/ against a build directory and print what they print, after a
# few lines about the machine (as '#' comments, so the output stays machine-readable).
#   sh bench/run.sh BUILD_DIR [bench_pair options, e.g. -r 9 -t 0.5]
# bench_pair runs first, then bench_cas with the same options (it understands -r -n -p -b and
# ignores -t: its rounds are counted in ECMs and EMMs; through bench/pcsc.sh, which gives it a
# private pcscd for its PC/SC benchmark where one can run), then bench_dist (-r -t -p; it ignores -n
# -b), then bench_sms (-r -t -b; it ignores -n -p -e -m), then, when a PostgreSQL server is
# installed, bench_sms -P: the center as `keyhole serve` processes on SQLite and on a throwaway
# PostgreSQL cluster it starts (one and two instances on one database), with the same options.
# KH_BENCH_PG_URL=URL runs that part on an existing server instead (a role that may CREATE
# DATABASE); KH_BENCH_PG=0 skips it.
# `make bench` runs `sh bench/run.sh build`. See docs/performance.md.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: sh bench/run.sh BUILD_DIR [bench_pair options]" >&2
	exit 2
fi
build=$1
shift
bin=$build/bench_pair
if [ ! -x "$bin" ]; then
	echo "bench/run.sh: $bin not found or not executable; build it first:" >&2
	echo "  cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build $build --target bench_pair" >&2
	exit 1
fi

model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# machine: nproc=$(nproc 2>/dev/null || echo '?') cpu=\"${model:-unknown}\" kernel=$(uname -r)"
echo "# openssl: $(openssl version 2>/dev/null || echo 'openssl command not found')"
if [ -r /proc/loadavg ]; then
	echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
status=0
# Run one benchmark of the build with the options given, or say how to build it.
run_bench() {
	one=$build/$1
	shift
	if [ -x "$one" ]; then
		if [ -r /proc/loadavg ]; then
			echo "# loadavg before $(basename "$one"): $(cut -d' ' -f1-3 /proc/loadavg)"
		fi
		"$one" "$@" || status=$?
	else
		echo "bench/run.sh: $one not found or not executable; build it with --target $(basename "$one")" >&2
		status=1
	fi
}

"$bin" "$@" || status=$?

# ECM to control word, and EMMs (docs/performance.md "ECM to control word"), with ecm_cw_pcsc
# in the same run: bench/pcsc.sh runs bench_cas with a pcscd of its own (vpcd reader driver) in a
# private mount and PID namespace, so that nothing it starts outlives it. Where pcscd, the driver
# or unshare -m -p -f is missing it prints one '#' line saying so and runs bench_cas without it.
if [ -x "$build/bench_cas" ]; then
	if [ -r /proc/loadavg ]; then
		echo "# loadavg before bench_cas: $(cut -d' ' -f1-3 /proc/loadavg)"
	fi
	sh "$(dirname "$0")/pcsc.sh" "$build/bench_cas" "$@" || status=$?
else
	run_bench bench_cas "$@"
fi
# Program distribution: a 10 MiB delivery against raw AES-256-GCM on the same chunks, and the
# handshake against the primitives it is made of; it ignores -n and -b.
run_bench bench_dist "$@"
# The management center: upload ingestion and EMM generation (docs/performance.md "Management
# center"). Its set-up issues 100 000 card certificates (~2 minutes); pass -c C for fewer.
sms=$build/bench_sms
run_bench bench_sms "$@"
# The management center on PostgreSQL (docs/performance.md "Management center on PostgreSQL").
if [ -x "$sms" ] && [ "${KH_BENCH_PG:-1}" != 0 ]; then
	if [ -n "${KH_BENCH_PG_URL:-}" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
		if [ -r /proc/loadavg ]; then
			echo "# loadavg before bench_sms on PostgreSQL: $(cut -d' ' -f1-3 /proc/loadavg)"
		fi
		if [ -n "${KH_BENCH_PG_URL:-}" ]; then
			"$sms" -D "$KH_BENCH_PG_URL" "$@" || status=$?
		else
			"$sms" -P "$@" || status=$?
		fi
	else
		echo "# bench_sms on PostgreSQL skipped: no server in /usr/lib/postgresql/*/bin (scripts/install-deps)"
	fi
fi
# The distribution server: whole deliveries per second from 32 clients (docs/performance.md
# "Distribution server"). It takes -r and -t.
run_bench bench_distsrv -r 5 -t 3
# The headend's scrambler: services scrambled per core in real time on a 40 Mbit/s multiplex, per
# algorithm, against kh_scr_scramble on the same packets (docs/performance.md "Headend: a 40 Mbit/s
# multiplex"). It takes -r and -s (stream seconds).
run_bench bench_headend -r 7 -s 10
# The escrow: whole purchases per second from 32 devices and hosts, against raw RSA; the device's
# blinding against BIGNUM (docs/performance.md "Escrow").
run_bench bench_escrow -r 5 -t 1 -c 32
# The key center relay: 1 KB posts relayed per second from 32 cards' hosts over HTTP, durable, against
# the raw work of a relay (two HKDF, a GCM open and a seal); the key card's KC SEND and KC OPEN
# against their derivations (docs/performance.md "Key center relay").
run_bench bench_keycard -r 5 -t 1 -c 32
# The SimulCrypt ECMG: CW_provision -> ECM_response over loopback TCP to `keyhole ecmg serve`, 7
# SCS connections x 15 streams, against raw ECM sealing (docs/performance.md "SimulCrypt ECMG").
run_bench bench_ecmg -r 7 -t 1
if [ -r /proc/loadavg ]; then
	echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
exit $status
