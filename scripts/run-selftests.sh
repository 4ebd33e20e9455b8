#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every kselftest binary DIR/*_test, show its TAP output and a result line per
# binary, and end with one machine-readable summary line that scripts/check.sh reads:
#   run-selftests: pass=N fail=N skip=N binaries=N
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/run-selftests.sh [-t SECS] [-f] [-g GTEST_BINARY]... [-x TAP_TEST]... [DIR]

Runs each executable DIR/*_test (kselftest_harness binaries, TAP 13 output with a
"# Totals: pass:N fail:N xfail:N xpass:N skip:N error:N" line) and reports per binary.
Counts: passed = pass + xfail; failed = fail + xpass + error; skipped = skip. A binary
that prints no Totals line, crashes or exits non-zero with no failure counted counts
as one failed test (a binary that exits 4 = KSFT_SKIP without Totals: one skipped).
Exits 1 if anything failed. Usually run inside the VM:

  scripts/vm-run.sh -- scripts/run-selftests.sh build/selftests

  -t SECS   time limit per binary (default 600)
  -f        also run DIR/*_fitest (fault injection: needs failslab and
            fail_page_alloc, i.e. the debug kernel)
  -x TEST   also run TEST, any executable with the kselftest TAP output above
            (e.g. userspace/tests/cli_vm_test.py, the CLI end to end)
  -g BIN    also run GoogleTest binary BIN (e.g. build/userspace/vmfork_vm_tests) and
            count its tests from its XML report (disabled tests count as skipped);
            VMFORK_GTEST_FILTER, if set, is its --gtest_filter
USAGE
}

per_binary_timeout=600
gtests=()
fitests=0
extra_tests=()
while getopts "hft:g:x:" opt; do
	case "$opt" in
	h) usage; exit 0 ;;
	t) per_binary_timeout=$OPTARG ;;
	f) fitests=1 ;;
	g) gtests+=("$OPTARG") ;;
	x) extra_tests+=("$OPTARG") ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || { usage >&2; exit 2; }
[ $# -eq 1 ] || [ ${#gtests[@]} -gt 0 ] || [ ${#extra_tests[@]} -gt 0 ] || { usage >&2; exit 2; }
dir=${1:-}

out=$(mktemp)
xml=$(mktemp)
trap 'rm -f "$out" "$xml"' EXIT

pass=0 fail=0 skip=0 binaries=0
bins=()
if [ -n "$dir" ]; then
	bins=("$dir"/*_test)
	[ "$fitests" = 0 ] || bins+=("$dir"/*_fitest)
fi
bins+=("${extra_tests[@]+"${extra_tests[@]}"}")
for bin in "${bins[@]}"; do
	[ -f "$bin" ] && [ -x "$bin" ] || continue
	name=$(basename "$bin")
	binaries=$((binaries + 1))
	echo "# selftests: vmfork: $name"
	rc=0
	timeout -k 10 "$per_binary_timeout" "$bin" </dev/null 2>&1 | tee "$out" || rc=${PIPESTATUS[0]}

	totals=$(grep -E '^# Totals: pass:[0-9]+ fail:[0-9]+ xfail:[0-9]+ xpass:[0-9]+ skip:[0-9]+ error:[0-9]+' "$out" | tail -n1 || true)
	if [ -n "$totals" ]; then
		read -r p f xf xp s e < <(sed -E 's/.*pass:([0-9]+) fail:([0-9]+) xfail:([0-9]+) xpass:([0-9]+) skip:([0-9]+) error:([0-9]+).*/\1 \2 \3 \4 \5 \6/' <<<"$totals")
		bp=$((p + xf)) bf=$((f + xp + e)) bs=$s
		if [ "$rc" != 0 ] && [ "$rc" != 4 ] && [ "$bf" = 0 ]; then
			echo "# $name: exit status $rc but no failed test: counted as one failure"
			bf=1
		fi
	elif [ "$rc" = 4 ]; then
		bp=0 bf=0 bs=1
	else
		case "$rc" in
		124 | 137) why="timed out after ${per_binary_timeout}s" ;;
		*) why="exit status $rc, no '# Totals' line (crashed?)" ;;
		esac
		echo "# $name: $why: counted as one failure"
		bp=0 bf=1 bs=0
	fi
	pass=$((pass + bp)) fail=$((fail + bf)) skip=$((skip + bs))
	if [ "$bf" -gt 0 ]; then
		verdict=FAIL
	elif [ "$bp" = 0 ] && [ "$bs" -gt 0 ]; then
		verdict=SKIP
	else
		verdict=ok
	fi
	echo "# selftests: vmfork: $name: $verdict (pass $bp, fail $bf, skip $bs)"
done

for bin in "${gtests[@]+"${gtests[@]}"}"; do
	name=$(basename "$bin")
	binaries=$((binaries + 1))
	echo "# gtest: $name"
	rc=0
	rm -f "$xml"
	timeout -k 10 "$per_binary_timeout" "$bin" --gtest_output="xml:$xml" \
		${VMFORK_GTEST_FILTER:+"--gtest_filter=$VMFORK_GTEST_FILTER"} </dev/null 2>&1 || rc=$?
	suite=$(tr '\n\t' '  ' <"$xml" 2>/dev/null | grep -o '<testsuites [^>]*>' | head -n1 || true)
	if [ -z "$suite" ]; then
		echo "# $name: exit status $rc, no XML report (crashed or timed out?): counted as one failure"
		bp=0 bf=1 bs=0
	else
		a() { sed -nE "s/.* $1=\"([0-9]+)\".*/\1/p" <<<"$suite"; }
		t=$(a tests) f=$(a failures) e=$(a errors) d=$(a disabled) s=$(a skipped)
		t=${t:-0} f=${f:-0} e=${e:-0} d=${d:-0} s=${s:-0}
		# "tests" includes the disabled ones.
		bf=$((f + e)) bs=$((s + d)) bp=$((t - f - e - s - d))
		if [ "$rc" != 0 ] && [ "$bf" = 0 ]; then
			echo "# $name: exit status $rc but no failed test: counted as one failure"
			bf=1
		fi
	fi
	pass=$((pass + bp)) fail=$((fail + bf)) skip=$((skip + bs))
	verdict=ok
	[ "$bf" = 0 ] || verdict=FAIL
	echo "# gtest: $name: $verdict (pass $bp, fail $bf, skip $bs)"
done

if [ "$binaries" = 0 ]; then
	echo "# no *_test binaries in $dir: counted as one failure"
	fail=1
fi
echo "run-selftests: pass=$pass fail=$fail skip=$skip binaries=$binaries"
[ "$fail" = 0 ]
