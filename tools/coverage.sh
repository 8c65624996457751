#!/bin/sh
# Line and branch coverage of the library (src/, models/) and the CLI from
# the .gcda files an instrumented `make test` left in BUILD (make coverage).
# Writes BUILD/coverage.info and BUILD/coverage/index.html; prints a summary
# per folder and the least covered files.
set -e
BUILD=${1:-build-cov}
cd "$(dirname "$0")/.."
command -v lcov >/dev/null || { echo "coverage needs lcov (apt-get install lcov)"; exit 1; }
RC="--rc lcov_branch_coverage=1"
lcov -q $RC --capture --directory "$BUILD" --base-directory . --output-file "$BUILD/all.info" 2>/dev/null
lcov -q $RC --extract "$BUILD/all.info" "$PWD/src/*" "$PWD/models/*" "$PWD/cli/*" --output-file "$BUILD/coverage.info"
genhtml -q $RC "$BUILD/coverage.info" --output-directory "$BUILD/coverage" >/dev/null 2>&1 || true
summary() { # summary LABEL PATTERN...
    label=$1; shift
    lcov -q $RC --extract "$BUILD/coverage.info" "$@" --output-file "$BUILD/part.info" >/dev/null 2>&1 || return 0
    lcov $RC --summary "$BUILD/part.info" 2>&1 | awk -v l="$label" '
        /lines/ {ln=$2" "$3" of "$5} /branches/ {br=$2" "$3" of "$5}
        END {gsub(/[()]/, "", ln); gsub(/[()]/, "", br); printf "%-22s lines %-22s branches %s\n", l, ln, br}'
}
echo "== coverage (make test on an -O0 --coverage build) =="
summary "library (src, models)" "$PWD/src/*" "$PWD/models/*"
for d in platform core io text vision api cpu; do summary "  src/$d" "$PWD/src/$d/*"; done
summary "  models" "$PWD/models/*"
summary "cli" "$PWD/cli/*"
echo "== least covered files (lines) =="
lcov $RC --list "$BUILD/coverage.info" 2>/dev/null | awk -F'|' 'NF >= 3 && $1 ~ /\.c|\.h/ {
    split($2, a, " "); if (a[2] + 0 > 0) printf "%6s of %5s lines  %s\n", a[1], a[2], $1 }' | sort -n | head -15
echo "html: $BUILD/coverage/index.html"
