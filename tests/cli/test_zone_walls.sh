#!/bin/sh
# The walls between zones (docs/internals/layout.md), checked twice: on the sources' #include
# lines and on the built libraries' symbols.
#
# Zones and what each may use:
#   base    (src/base: kh_core + kh_sys)  nothing of ours
#   module  (src/module: kh_module)       base's core only, and libc's memory routines: no
#                                         allocation, no I/O, no file or log code
#   device  (src/device: kh_device)       base, module: the only zone that runs a module
#   ts      (src/ts: kh_ts)               base
#   store   (src/store: kh_store)         base
#   net     (src/net: kh_net)             base
#   host    (src/host: kh_host)           base, ts, net: reaches a module only through struct
#                                         kh_transport (base), never the module or the device
#   center  (src/center: kh_center)       base, ts, store, net: never host, device or module
#   cli     (src/cli: the keyhole command) everything
# A public header belongs to the zone that implements it (the table below); a header no zone
# claims fails the test, so that a new one is placed on purpose. A private header
# ("zone/x_int.h") belongs to its directory's zone.
set -eu
src=$KH_SOURCE_DIR/src
inc=$KH_SOURCE_DIR/include/keyhole
build=$(dirname "$KEYHOLE")
fail() { echo "FAIL: test_zone_walls: $*"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- the headers' zones -------------------------------------------------------------------------
zone_of_header()
{
	case $1 in
	keyhole/apdu.h | keyhole/buf.h | keyhole/cas.h | keyhole/cert.h | keyhole/crypto.h | keyhole/dist.h | keyhole/escrow.h | \
		keyhole/err.h | keyhole/file.h | keyhole/hpke.h | keyhole/keycard.h | keyhole/keyseq.h | keyhole/log.h | \
		keyhole/pair.h | keyhole/scramble.h | keyhole/shamir.h | keyhole/usage.h | keyhole/transport.h) echo base ;;
	keyhole/module.h) echo module ;;
	keyhole/device.h | keyhole/runner.h | keyhole/softmodule.h) echo device ;;
	keyhole/ts.h | keyhole/simulcrypt.h) echo ts ;;
	keyhole/store.h | keyhole/store_dist.h | keyhole/store_escrow.h | keyhole/store_keycenter.h) echo store ;;
	keyhole/http.h | keyhole/tsip.h) echo net ;;
	keyhole/host.h | keyhole/decoder.h | keyhole/distclient.h | keyhole/escrowclient.h | keyhole/keycardhost.h | \
		keyhole/keycardclient.h | keyhole/m1.h | keyhole/upload.h) echo host ;;
	keyhole/authority.h | keyhole/ecmg.h | keyhole/identity.h | keyhole/distsrv.h | keyhole/distsvc.h | keyhole/escrowsvc.h | \
		keyhole/headend.h | keyhole/keycentersvc.h | keyhole/scs.h | keyhole/secmod.h | keyhole/sms.h) echo center ;;
	keyhole/*) echo unknown ;;
	*/*) echo "${1%%/*}" ;;
	*) echo unknown ;;
	esac
}
allowed()
{
	case $1 in
	base) echo "base" ;;
	module) echo "base module" ;;
	device) echo "base module device" ;;
	ts) echo "base ts" ;;
	store) echo "base store" ;;
	net) echo "base net" ;;
	host) echo "base ts net host" ;;
	center) echo "base ts store net center" ;;
	cli) echo "base module device ts store net host center cli" ;;
	esac
}

for h in "$inc"/*.h; do
	z=$(zone_of_header "keyhole/$(basename "$h")")
	[ "$z" != unknown ] || fail "include/keyhole/$(basename "$h") belongs to no zone: add it to this test's table"
done

# check_includes ZONE FILE...: every #include "x/y.h" of the files is of an allowed zone.
check_includes()
{
	zone=$1
	shift
	ok=$(allowed "$zone")
	for f in "$@"; do
		[ -f "$f" ] || continue
		for h in $(sed -n 's/^#include "\([a-z_]*\/[a-z_]*\.h\)".*/\1/p' "$f"); do
			hz=$(zone_of_header "$h")
			[ "$hz" != unknown ] || fail "${f#"$KH_SOURCE_DIR"/} includes $h, which belongs to no zone"
			case " $ok " in
			*" $hz "*) ;;
			*) fail "${f#"$KH_SOURCE_DIR"/} ($zone) includes $h ($hz): $zone may use only: $ok" ;;
			esac
		done
		echo "$f" >>"$tmp/seen"
	done
}
: >"$tmp/seen"
for z in base module device ts store net host cli; do
	check_includes "$z" "$src/$z"/*.c "$src/$z"/*.h
done
# shellcheck disable=SC2046
check_includes center $(find "$src/center" -name '*.[ch]')
# the public headers obey their own zone's wall
for h in "$inc"/*.h; do
	check_includes "$(zone_of_header "keyhole/$(basename "$h")")" "$h"
done
# every source directory is a zone this test knows
for d in "$src"/*/; do
	d=$(basename "$d")
	[ -n "$(allowed "$d")" ] || fail "src/$d is a zone this test does not know: add it"
done
n=$(wc -l <"$tmp/seen")
[ "$n" -ge 100 ] || fail "only $n files checked: the walk is broken"

# --- the libraries' symbols ---------------------------------------------------------------------
command -v nm >/dev/null || fail "nm not found"
lib() { echo "$build/libkh_$1.a"; }
for l in core sys module device ts store net host center; do
	[ -f "$(lib $l)" ] || fail "$(lib $l) not found"
done
defined() { for l in "$@"; do nm --defined-only --format=just-symbols "$(lib "$l")" 2>/dev/null; done | grep -v ':$' | sort -u; }

# The module: everything it calls is its own, the core's, or a libc memory routine.
nm -u --format=just-symbols "$(lib module)" | sort -u >"$tmp/imports"
defined module core >"$tmp/defined"
printf '%s\n' memcpy memmove memset memcmp __stack_chk_fail __memcpy_chk __memset_chk __memmove_chk |
	sort -u >"$tmp/libc"
bad=$(comm -23 "$tmp/imports" "$tmp/defined" | comm -23 - "$tmp/libc" |
	grep -v -E '^(__asan_|__ubsan_|__sanitizer_|__sancov_|__odr_asan)' || true)
[ -z "$bad" ] || fail "src/module calls outside its wall: $(echo "$bad" | tr '\n' ' ')"
grep -q '^kh_aead_seal$' "$tmp/imports" || fail "no core imports seen in the module: the check is vacuous"

# Every other library: the kh_ functions it calls are its own or those of the zones it may use.
check_lib()
{
	l=$1
	shift
	nm -u --format=just-symbols "$(lib "$l")" | grep '^kh_' | sort -u >"$tmp/imports"
	defined "$l" "$@" >"$tmp/defined"
	bad=$(comm -23 "$tmp/imports" "$tmp/defined" || true)
	[ -z "$bad" ] || fail "libkh_$l.a calls outside its wall (may use: $*): $(echo "$bad" | head -n 8 | tr '\n' ' ')"
	[ -s "$tmp/imports" ] || [ "$l" = core ] || fail "libkh_$l.a imports nothing of ours: the check is vacuous"
}
check_lib core
check_lib sys core
check_lib device module core sys
check_lib ts core sys
check_lib store core sys
check_lib net core sys
check_lib host core sys ts net
check_lib center core sys ts store net

echo "ok: $n source files and headers within their zones; the module imports only the core and $(wc -l <"$tmp/libc") libc memory routines; every library only what its zone may use"
