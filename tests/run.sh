#!/bin/sh
# Runs the C tests (build/tests/test_*) and the busted specs, then prints one
# summary line "N passed, N failed" (the line CI reads). Each C test program
# ends its output with its own "N passed, N failed" line. Skipped tests (a C
# test's "skip: ..." lines, busted's pending ones, "ok N - # SKIP ..." in
# TAP: fixtures absent) count as neither; the line before the summary says
# how many there were.
# Env: BUILD (build dir), SLM_PRELOAD (sanitizer runtimes for lua5.4).
BUILD=${BUILD:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
passed=0
failed=0
skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  echo "== $t"
  "$t" >"$log" 2>&1
  rc=$?
  cat "$log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  if [ -z "$line" ]; then p=0; f=1; echo "$t: no summary line (exit $rc)"; fi
  if [ $rc -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; echo "$t: exit status $rc"; fi
  passed=$((passed + p)); failed=$((failed + f))
  skipped=$((skipped + $(grep -c '^skip' "$log")))
done

echo "== busted"
preload=""
[ -n "$SLM_PRELOAD" ] && preload=$(echo $SLM_PRELOAD | tr ' ' ':')
LD_PRELOAD="$preload" lua5.4 /usr/bin/busted --cpath="$BUILD/?.so" -o TAP "$@" >"$log" 2>&1
rc=$?
cat "$log"
s=$(grep -cE '^ok [0-9]+ - # SKIP' "$log")
p=$(($(grep -cE '^ok [0-9]+' "$log") - s))
f=$(grep -cE '^not ok [0-9]+' "$log")
if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "busted: exit status $rc"; fi
passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))

echo "$skipped skipped (each says why above: a fixture not found, ...)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
