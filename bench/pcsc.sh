#!/bin/sh
# Run a benchmark with a pcscd of its own for its PC/SC part (docs/performance.md "ECM to control
# word through PC/SC"):
#   sh bench/pcsc.sh PROGRAM [ARGS...]
# runs PROGRAM ARGS -V PORT -N NAME while a private pcscd runs the vsmartcard-vpcd reader driver
# with its two slots on 127.0.0.1:PORT and PORT+1 (readers "NAME 00 00" and "NAME 00 01"); bench/run.sh
# runs bench_cas so, and tests/cli/test_bench_smoke.sh once with the smallest sizes.
#
# pcsc-lite 1.9.9's pcscd always makes its socket at /run/pcscd/pcscd.comm, so, as
# tests/cli/pcsc_lib.sh does for the tests, this script runs itself again under unshare with a
# private mount namespace (a tmpfs on /run: this pcscd never meets the machine's, and its
# reader.conf and log vanish with it) and a private PID namespace, with its own /proc (which
# LeakSanitizer reads), whose first process dies with unshare (--kill-child): when PROGRAM ends,
# or this script is killed, pcscd and every card side die with the namespace. Nothing is left
# running.
#
# Where that cannot be (no pcscd, no driver, no namespaces, a pcscd that exits at once) it prints
# one line "# ecm_cw_pcsc skipped by bench/pcsc.sh: WHY" and runs PROGRAM ARGS as they are. Its
# exit status is PROGRAM's.
set -eu

if [ $# -lt 1 ]; then
	echo "usage: sh bench/pcsc.sh PROGRAM [ARGS...]" >&2
	exit 2
fi
# the driver's path and kh_pcsc_free_port, shared with the tests
. "$(dirname "$0")/../tests/cli/pcsc_lib.sh"
vpcd_lib=$KH_VPCD_LIB
name="Keyhole bench"

skip_line()
{
	echo "# ecm_cw_pcsc skipped by bench/pcsc.sh: $1"
}

if [ -z "${KH_BENCH_PCSC_NS:-}" ]; then
	why=
	if ! command -v pcscd >/dev/null 2>&1; then
		why="no pcscd (scripts/install-deps installs it)"
	elif [ ! -e "$vpcd_lib" ]; then
		why="no vsmartcard-vpcd reader driver at $vpcd_lib (scripts/install-deps installs it)"
	elif ! command -v unshare >/dev/null 2>&1 ||
		! unshare -m -p -f --kill-child --mount-proc sh -c 'mount -t tmpfs tmpfs /run' 2>/dev/null; then
		why="no private mount and PID namespace here (unshare -m -p -f: needs root or user namespaces)"
	fi
	if [ -n "$why" ]; then
		skip_line "$why"
		exec "$@"
	fi
	# shellcheck disable=SC2016 # $0 and $@ are for the inner sh
	KH_BENCH_PCSC_NS=1 exec unshare -m -p -f --kill-child --mount-proc sh -c \
		'mount -t tmpfs -o mode=0755 tmpfs /run && exec sh "$0" "$@"' "$0" "$@"
fi

# ---- inside the namespaces: /run is ours
dir=/run/kh-bench-pcsc
mkdir -p /run/pcscd "$dir/conf"

port=$(kh_pcsc_free_port) # the port and the next one (the driver's second slot) free
printf 'FRIENDLYNAME "%s"\nDEVICENAME /dev/null:0x%X\nLIBPATH %s\nCHANNELID 0x%X\n' \
	"$name" "$port" "$vpcd_lib" "$port" >"$dir/conf/vpcd"

pcscd -f -c "$dir/conf" >"$dir/pcscd.log" 2>&1 </dev/null &
pcscd_pid=$!
i=0
until [ -S /run/pcscd/pcscd.comm ]; do
	if ! kill -0 "$pcscd_pid" 2>/dev/null; then
		rc=0
		wait "$pcscd_pid" || rc=$?
		skip_line "pcscd cannot run here (it exited $rc)"
		sed 's/^/#   pcscd| /' "$dir/pcscd.log"
		exec "$@"
	fi
	if [ "$i" -ge 100 ]; then
		echo "bench/pcsc.sh: pcscd made no socket within 10 s" >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
done

rc=0
"$@" -V "$port" -N "$name" || rc=$?
kill "$pcscd_pid" 2>/dev/null || true
wait "$pcscd_pid" 2>/dev/null || true
exit "$rc"
