#!/bin/sh
# Runs the fuzz targets built by `make fuzz-build` (make fuzz calls this):
#   sh tests/fuzz/run.sh [TARGET...]      (default: every build-fuzz/fuzz/fuzz_*)
# Env: FUZZ_SECONDS (per target, default 6), FUZZ_BUILD (build-fuzz),
# BUILD (the normal build, for the seeds script), SLM_FIXTURES.
#
# Per target: the seed corpus (tests/fuzz/seeds.lua, made once into
# $FUZZ_BUILD/seeds/) and the regression inputs are read, new inputs go to
# the working corpus $FUZZ_BUILD/corpus/TARGET (kept between runs), crashes
# to $FUZZ_BUILD/crashes/TARGET/, the log to $FUZZ_BUILD/logs/TARGET.log.
# Prints one line per target (executions, corpus size, result) and then
# "N passed, N failed": a target passes when it ran its time without a
# crash, leak, timeout or out-of-memory.
FUZZ_SECONDS=${FUZZ_SECONDS:-6}
FB=${FUZZ_BUILD:-build-fuzz}
BUILD=${BUILD:-build}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1

if [ ! -f "$FB/seeds/.done" ]; then
  rm -rf "$FB/seeds"
  LUA_CPATH="$BUILD/?.so" LUA_PATH="lua/?.lua;lua/?/init.lua;;" lua5.4 tests/fuzz/seeds.lua "$FB/seeds" \
    && touch "$FB/seeds/.done" || echo "fuzz: making the seed corpora failed; starting from the regression inputs"
fi

targets=$*
[ -n "$targets" ] || targets=$(ls "$FB"/fuzz/ 2>/dev/null | sed -n 's/^fuzz_//p')

# the longest input libFuzzer makes (0: its default, the largest seed)
max_len() {
  case $1 in
    tokenize|chat) echo 4096 ;;
    regex) echo 512 ;;
    safetensors|llama2c) echo 16384 ;;
    *) echo 0 ;;
  esac
}

passed=0
failed=0
for t in $targets; do
  bin="$FB/fuzz/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz $t: FAIL: $bin is not built (make fuzz-build)"
    failed=$((failed + 1))
    continue
  fi
  mkdir -p "$FB/corpus/$t" "$FB/crashes/$t" "$FB/logs" "$FB/seeds/$t"
  regress=""
  [ -d "tests/fuzz/regress/$t" ] && regress="tests/fuzz/regress/$t"
  case $t in tokjson|safetensors) d=json ;; *) d=$t ;; esac
  dict=""
  [ -f "tests/fuzz/$d.dict" ] && dict="-dict=tests/fuzz/$d.dict"
  log="$FB/logs/$t.log"
  start=$(date +%s)
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2560 -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$FB/crashes/$t/" $dict \
    "$FB/corpus/$t" "$FB/seeds/$t" $regress >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 | sed 's/corp: //')
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ok, ${execs:-?} executions in ${secs}s, corpus ${corp:-?} (inputs/bytes)"
    passed=$((passed + 1))
  else
    echo "fuzz $t: FAIL (exit $rc) after ${execs:-?} executions in ${secs}s; log $log"
    grep -E '^(fuzz: |SUMMARY|==[0-9]+==ERROR|.*runtime error)' "$log" | head -n 5 | sed 's/^/  > /'
    grep -qE '^(fuzz: |SUMMARY)' "$log" || tail -n 3 "$log" | sed 's/^/  > /'
    grep -E 'Test unit written to|artifact' "$log" | tail -n 2 | sed 's/^/  > /'
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
