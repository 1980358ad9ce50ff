#!/usr/bin/env bash
# Runs the whole suite: unit tests (release and ASan+UBSan builds), the PyTorch
# reference tests and the integration tests. Each program prints "ok - ..." /
# "not ok - ..." lines; this script counts them and ends with "N passed, N failed".
# A program that exits non-zero counts as one more failure. A program that cannot
# run its checks here (test_cluster.sh without network namespaces) prints
# "skip - why" lines instead: counted as skipped, neither passed nor failed, and
# listed before the closing line. Usage:
#   bash tests/run_tests.sh [FILTER]   (FILTER: substring of the test's name)
set -u
cd "$(dirname "$0")/.."
FILTER="${1:-}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export DDPM_TEST_TMP="$(mktemp -d /tmp/ddpm-test.XXXXXX)"
trap 'rm -rf "$DDPM_TEST_TMP"' EXIT

passed=0; failed=0; skipped=0; SKIPS=""
LOG="$DDPM_TEST_TMP/log"
run_one() {   # label, command...
    local label="$1"; shift
    case "$label" in *"$FILTER"*) ;; *) return ;; esac
    echo "== $label"
    local t0=$(date +%s)
    "$@" >"$LOG" 2>&1
    local rc=$?
    cat "$LOG"
    local p f s
    p=$(grep -c '^ok - ' "$LOG")
    f=$(grep -c '^not ok - ' "$LOG")
    s=$(grep -c '^skip - ' "$LOG")
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    [ "$s" -gt 0 ] && SKIPS+="$(grep '^skip - ' "$LOG" | sed "s|^skip - |  $label: |")"$'\n'
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $label exited with status $rc"
        failed=$((failed + 1))
    elif [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
        echo "not ok - $label ran no check"
        failed=$((failed + 1))
    fi
    echo "== $label: $p passed, $f failed,$( [ "$s" -gt 0 ] && echo " $s skipped,") rc $rc, $(( $(date +%s) - t0 )) s"
}

for t in build/tests/test_*; do
    [ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"
done
for t in build-san/tests/test_*; do
    [ -x "$t" ] && run_one "unit-san/$(basename "$t")" "$t"
done
for t in tests/ref/test_*.sh tests/integration/test_*.sh; do
    [ -f "$t" ] && run_one "${t#tests/}" bash "$t"
done

echo
[ "$skipped" -gt 0 ] && printf '%s skipped (not run here, neither passed nor failed):\n%s' "$skipped" "$SKIPS"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
