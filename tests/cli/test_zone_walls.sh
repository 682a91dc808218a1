#!/bin/sh
# The module zone's wall, checked on the built library: everything libkh_module.a calls must be
# defined in the module itself or in libkh_core.a (codec, crypto, certificates, seed engines),
# or be one of the few libc routines that neither allocate nor do I/O. A call to malloc, printf,
# fopen, a socket, or base's file and logging code (libkh_sys.a) fails this test.
set -eu
build=$(dirname "$KEYHOLE")
mod="$build/libkh_module.a"
core="$build/libkh_core.a"
for f in "$mod" "$core"; do
	[ -f "$f" ] || { echo "FAIL: test_zone_walls: $f not found" ; exit 1; }
done
command -v nm >/dev/null || { echo "FAIL: test_zone_walls: nm not found"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -u --format=just-symbols "$mod" | sort -u >"$tmp/imports"
nm --defined-only --format=just-symbols "$mod" "$core" 2>/dev/null | grep -v ':$' | sort -u >"$tmp/defined"
# libc routines a module may use: they touch only the memory they are given.
printf '%s\n' memcpy memmove memset memcmp __stack_chk_fail __memcpy_chk __memset_chk __memmove_chk \
	| sort -u >"$tmp/libc"
bad=$(comm -23 "$tmp/imports" "$tmp/defined" | comm -23 - "$tmp/libc" |
	grep -v -E '^(__asan_|__ubsan_|__sanitizer_|__sancov_|__odr_asan)' || true)
if [ -n "$bad" ]; then
	echo "FAIL: test_zone_walls: src/module calls outside its wall:"
	echo "$bad" | sed 's/^/  /'
	exit 1
fi
# And the wall is not vacuous: the module does use the core.
grep -q '^kh_aead_seal$' "$tmp/imports" || { echo "FAIL: test_zone_walls: no core imports seen"; exit 1; }
echo "ok: libkh_module.a imports only libkh_core.a and $(wc -l <"$tmp/libc") libc memory routines"
