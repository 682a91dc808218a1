# Shared helpers for the PC/SC tests (docs/internals/pcsc.md): a private pcscd with the vpcd
# reader driver, and waiting on what it says. Sourced after lib.sh, before kh_init:
#     . "$KH_SOURCE_DIR/tests/cli/lib.sh"
#     . "$KH_SOURCE_DIR/tests/cli/pcsc_lib.sh"
#     kh_pcsc_private "$0"      # runs the test again in its own namespaces (returns if it cannot)
#     kh_init NAME
#     kh_pcsc_init              # skips the test when pcscd cannot run here; sets PORT, READER0/1
#     kh_pcsc_start             # a pcscd in the foreground, its pid in PCSCD
#
# pcsc-lite 1.9.9's pcscd always makes its socket at /run/pcscd/pcscd.comm (only the client
# library reads PCSCLITE_CSOCK_NAME), so a test runs itself again under unshare with a private
# mount namespace and a tmpfs on /run: its pcscd never meets the machine's. It also gets its own
# PID namespace (with its own /proc, which LeakSanitizer reads), whose first process dies with
# unshare (--kill-child): if the harness kills the test from outside, every pcscd and card it
# started dies with it. Without namespaces the test uses /run/pcscd only when no pcscd is there.

KH_VPCD_LIB=/usr/lib/pcsc/drivers/serial/libifdvpcd.so

# kh_pcsc_private SCRIPT: run SCRIPT again in private namespaces, unless already there or they
# cannot be made (then return, and kh_pcsc_init decides).
kh_pcsc_private()
{
	[ -z "$KH_PCSC_PRIVATE" ] || return 0
	command -v unshare >/dev/null 2>&1 || return 0
	unshare -m -p -f --kill-child --mount-proc sh -c 'mount -t tmpfs tmpfs /run' 2>/dev/null || return 0
	# shellcheck disable=SC2016 # $0 is for the inner sh
	KH_PCSC_PRIVATE=1 exec unshare -m -p -f --kill-child --mount-proc sh -c \
		'mount -t tmpfs -o mode=0755 tmpfs /run && exec sh "$0"' "$1"
}

kh_pcsc_skip()
{
	kh_note "SKIPPED: $*"
	exit 0
}

# kh_pcsc_free_port: a loopback TCP port, with the next one (the driver's second slot), that
# nothing uses.
kh_pcsc_free_port()
{
	while :; do
		kh_fp=$(($(od -An -tu2 -N2 /dev/urandom | tr -d ' \n') % 12000 + 20000))
		kh_fh=$(printf '%04X|%04X' "$kh_fp" $((kh_fp + 1)))
		cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
			awk -v h="$kh_fh" '$2 ~ (":(" h ")$") { f = 1 } END { exit !f }' || break
	done
	echo "$kh_fp"
}

# kh_pcsc_init: skip where pcscd cannot run; write $KH_WORK/conf/vpcd (a reader.conf entry on a
# free port); set PORT (slot 0; slot 1 is PORT+1), READER0 and READER1 (the two slots' names).
kh_pcsc_init()
{
	command -v pcscd >/dev/null 2>&1 || kh_pcsc_skip "no pcscd (run scripts/install-deps)"
	[ -e "$KH_VPCD_LIB" ] || kh_pcsc_skip "no vsmartcard-vpcd driver at $KH_VPCD_LIB (run scripts/install-deps)"
	kh_need pcsc_scan od awk timeout
	if [ -z "$KH_PCSC_PRIVATE" ]; then
		[ -e /run/pcscd/pcscd.comm ] &&
			kh_pcsc_skip "no private mount namespace, and a pcscd already owns /run/pcscd"
		kh_note "no private mount namespace: using /run/pcscd (no other pcscd there)"
	fi
	mkdir -p /run/pcscd 2>/dev/null || kh_pcsc_skip "cannot create /run/pcscd for pcscd's socket"
	# pcsc_scan keeps its ATR list under $HOME; -n keeps it from fetching one.
	HOME=$KH_WORK
	export HOME
	PORT=$(kh_pcsc_free_port)
	mkdir -p "$KH_WORK/conf"
	printf 'FRIENDLYNAME "Keyhole test"\nDEVICENAME /dev/null:0x%X\nLIBPATH %s\nCHANNELID 0x%X\n' \
		"$PORT" "$KH_VPCD_LIB" "$PORT" >"$KH_WORK/conf/vpcd"
	READER0="Keyhole test 00 00"
	READER1="Keyhole test 00 01"
}

# kh_pcsc_start: a pcscd in the foreground on $KH_WORK/conf, its pid in PCSCD; waits until it
# lists the reader.
kh_pcsc_start()
{
	pcscd -f -c "$KH_WORK/conf" >>"$KH_META/pcscd.log" 2>&1 </dev/null &
	PCSCD=$!
	KH_PIDS="$KH_PIDS $PCSCD"
	kh_i=0
	until timeout 5 pcsc_scan -r 2>/dev/null | grep -q "$READER0"; do
		if ! kill -0 "$PCSCD" 2>/dev/null; then
			wait "$PCSCD"
			kh_prc=$?
			sed 's/^/  pcscd| /' "$KH_META/pcscd.log" >&2
			kh_pcsc_skip "pcscd cannot run here (exit $kh_prc)"
		fi
		[ "$kh_i" -lt 50 ] || kh_fail "pcscd did not list '$READER0' within 5 s"
		sleep 0.1
		kh_i=$((kh_i + 1))
	done
}

# kh_pcsc_scan READER: one pass of pcsc_scan over the readers into $KH_META/scan; READER's block
# (from its line to the next reader's) into $KH_META/slot.
kh_pcsc_scan()
{
	timeout 10 pcsc_scan -n -t 1 >"$KH_META/scan" 2>&1 </dev/null
	awk -v r="$1" 'index($0, "Reader ") && index($0, r) { on = 1; next }
		/ Reader [0-9]+:/ { on = 0 } on' "$KH_META/scan" >"$KH_META/slot"
}

# kh_pcsc_wait_card READER inserted|removed [ATR]: until pcsc_scan shows READER with a card (with
# ATR, when given) or without one; fails after 40 looks (each a pcsc_scan of about a second).
kh_pcsc_wait_card()
{
	kh_i=0
	while :; do
		kh_pcsc_scan "$1"
		if [ "$2" = inserted ]; then
			grep -q 'Card inserted' "$KH_META/slot" &&
				{ [ -z "$3" ] || grep -q "ATR: $3" "$KH_META/slot"; } && return 0
		else
			grep -q 'Card removed' "$KH_META/slot" && ! grep -q 'ATR:' "$KH_META/slot" && return 0
		fi
		if [ "$kh_i" -ge 40 ]; then
			sed 's/^/  pcsc_scan| /' "$KH_META/scan" >&2
			kh_fail "pcsc_scan: no card $2 in '$1'"
		fi
		sleep 0.2
		kh_i=$((kh_i + 1))
	done
}
