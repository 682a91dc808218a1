# The benchmarks still run: each one in bench/ once, with the smallest sizes it takes, must
# exit 0, print its figures (bench= lines) and say nothing on stderr but its progress. A benchmark that a change
# broke (a module file locked by two processes, a renamed option) fails here rather than on the
# day someone measures. Nothing is timed or compared: figures belong in docs/performance.md,
# measured by `make bench`.
#
# Run by CTest as `sh test_bench_smoke.sh` with KEYHOLE and KH_SOURCE_DIR set. With
# KH_TEST_PG_URL set too (cli/test_bench_smoke_pg, on the pg fixture's cluster) it runs only
# bench_sms's PostgreSQL comparison (-D URL): `keyhole serve` on SQLite and on PostgreSQL, one and
# two instances on one database, each of its figures printed.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_bench_smoke
build=$(dirname "$KEYHOLE")
ran=0
smoke()
{
	name=$1
	shift
	bin=$build/$name
	[ -x "$bin" ] || kh_fail "$bin not built (every bench/bench_*.c is a benchmark target)"
	rc=0
	(cd "$KH_WORK" && TMPDIR=$KH_WORK "$bin" "$@" >"$KH_META/$name.out" 2>"$KH_META/$name.err") || rc=$?
	[ "$rc" -eq 0 ] || kh_fail "$name $* exited $rc: $(head -n 3 "$KH_META/$name.err" | tr '\n' ' ')"
	# progress lines ("bench_sms: round 1 of 1 done") are fine; anything else is a complaint
	grep -v -E '^bench_[a-z]+: round [0-9]+ of [0-9]+ done$' "$KH_META/$name.err" >"$KH_META/$name.complaints" || true
	[ ! -s "$KH_META/$name.complaints" ] ||
		kh_fail "$name $* wrote on stderr: $(head -n 3 "$KH_META/$name.complaints" | tr '\n' ' ')"
	grep -q '^bench=' "$KH_META/$name.out" || kh_fail "$name $* printed no figures"
	ran=$((ran + 1))
}
if [ -n "${KH_TEST_PG_URL:-}" ]; then
	smoke bench_sms -D "$KH_TEST_PG_URL" -W 0 -r 1 -t 0.02 -u 8 -M 4 -k 2 -T 4 -c 40 -s 8 -d "$KH_WORK" -A "$KH_WORK"
	for b in upload_b2_k2_sqlite upload_b2_k2_pg1 upload_b2_k2_pg2 emm_rotate_sqlite emm_rotate_pg \
		emm_subscribe_all_sqlite emm_subscribe_all_pg; do
		grep -q "^bench=$b " "$KH_META/bench_sms.out" || kh_fail "bench_sms -D printed no $b"
	done
	grep -q '^# cost upload_b2_k2_pg2: ' "$KH_META/bench_sms.out" || kh_fail "bench_sms -D said nothing of the costs"
	# it made its databases on the server and dropped them
	psql=$(ls /usr/lib/postgresql/*/bin/psql | tail -n 1)
	left=$("$psql" "$KH_TEST_PG_URL" -Atc "SELECT count(*) FROM pg_database WHERE datname LIKE 'khbench_%'" 2>&1) ||
		kh_fail "psql: $left"
	[ "$left" = 0 ] || kh_fail "bench_sms -D left $left databases on the server"
	kh_note "ok"
	exit 0
fi
smoke bench_pair -r 1 -t 0.02
grep -q '^bench=cmd_unix ' "$KH_META/bench_pair.out" || kh_fail "bench_pair ran no socket benchmark"
smoke bench_cas -r 1 -e 20 -m 5 -d 1 -s 210
grep -q '^bench=ecm_cw_unix ' "$KH_META/bench_cas.out" || kh_fail "bench_cas ran no socket benchmark"
grep -q '^# ecm_cw_pcsc skipped: no -V PORT' "$KH_META/bench_cas.out" || kh_fail "bench_cas did not say why no PC/SC"
# ECM -> CW through PC/SC once, the ECM benchmarks only, with the private pcscd of bench/pcsc.sh
# (not a smoke run of its own: it is bench_cas again); skipped where that pcscd cannot be
rc=0
(cd "$KH_WORK" && TMPDIR=$KH_WORK sh "$KH_SOURCE_DIR/bench/pcsc.sh" "$build/bench_cas" -r 1 -e 20 -m 1 -d 1 -s 21 \
	-b ecm_cw >"$KH_META/pcsc.out" 2>"$KH_META/pcsc.err") || rc=$?
[ "$rc" -eq 0 ] || kh_fail "bench/pcsc.sh bench_cas exited $rc: $(head -n 3 "$KH_META/pcsc.err" | tr '\n' ' ')"
[ ! -s "$KH_META/pcsc.err" ] || kh_fail "bench/pcsc.sh bench_cas wrote on stderr: $(head -n 3 "$KH_META/pcsc.err" | tr '\n' ' ')"
if grep -q '^# ecm_cw_pcsc skipped by bench/pcsc.sh: ' "$KH_META/pcsc.out"; then
	kh_note "SKIPPED ecm_cw_pcsc: $(sed -n 's/^# ecm_cw_pcsc skipped by bench\/pcsc.sh: //p' "$KH_META/pcsc.out")"
else
	for l in 'bench=ecm_cw_pcsc unit=us p50=' 'ratio=ecm_cw_pcsc_vs_unix ' 'ratio=ecm_cw_pcsc_vs_inproc '; do
		grep -q "^$l" "$KH_META/pcsc.out" || kh_fail "bench/pcsc.sh bench_cas printed no $l"
	done
fi
smoke bench_sms -r 1 -t 0.02 -u 8 -M 4 -k 2 -T 4 -c 40 -s 8 -d "$KH_WORK" -A "$KH_WORK"
smoke bench_scramble -n 2000 -r 1 -t 0.02
smoke bench_headend -s 0.5 -r 1
for a in csa2 cissa idsa; do
	grep -q "^bench=headend_${a}_services_per_core " "$KH_META/bench_headend.out" ||
		kh_fail "bench_headend printed no services per core for $a"
	grep -q "^ratio=headend_${a}_vs_raw " "$KH_META/bench_headend.out" || kh_fail "bench_headend printed no $a ratio"
done
smoke bench_distsrv -r 1 -t 0.2 -c 2 -s 4096
smoke bench_dist -r 1 -t 0.02 -s 100000
grep -q '^ratio=delivery_vs_raw_aes_gcm ' "$KH_META/bench_dist.out" || kh_fail "bench_dist printed no delivery ratio"
grep -q '^ratio=handshake_vs_primitives ' "$KH_META/bench_dist.out" || kh_fail "bench_dist printed no handshake ratio"
smoke bench_secmod -r 1 -t 0.02 -c 4
smoke bench_escrow -r 1 -t 0.05 -c 2
smoke bench_keycard -r 1 -t 0.05 -c 2
smoke bench_ecmg -r 1 -t 0.02 -c 2 -s 2
grep -q '^ratio=ecm_busy_vs_raw ' "$KH_META/bench_ecmg.out" || kh_fail "bench_ecmg printed no ratio"
grep -q '^bench=ecm_rtt_lone_p99 ' "$KH_META/bench_ecmg.out" || kh_fail "bench_ecmg printed no latency"
grep -q '^ratio=relay_vs_raw ' "$KH_META/bench_keycard.out" || kh_fail "bench_keycard printed no relay ratio"
grep -q '^ratio=card_open_vs_raw ' "$KH_META/bench_keycard.out" || kh_fail "bench_keycard printed no KC OPEN ratio"
grep -q '^ratio=secmod_4_vs_raw ' "$KH_META/bench_secmod.out" || kh_fail "bench_secmod printed no concurrent ratio"
# every benchmark source has its smoke run here
n=$(ls "$KH_SOURCE_DIR"/bench/bench_*.c | wc -l)
[ "$ran" -eq "$n" ] || kh_fail "$n benchmarks in bench/, $ran smoke runs: add the new one"
kh_note "ok"
