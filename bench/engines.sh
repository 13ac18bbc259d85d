#!/usr/bin/env bash
# Compares the two profiling engines on one workload, in one run, on a
# throwaway JVM this script starts and kills (the Java target with one
# busy worker thread: a core of headroom for what the profilers cost):
#   1. the target's CPU (utime + stime from /proc/<pid>/stat) over a
#      $SECONDS_PER_RUN s profile with async-profiler (itimer, 10 ms) and
#      with the JVM's Flight Recorder (settings=profile), against the same
#      span unprofiled; median of $ROUNDS alternating rounds;
#   2. samples per second each engine recorded (the collapsed profile's
#      total, converted by safeattach-pprof for the Flight Recorder);
#   3. the first window: from `profile --loop` starting to its first
#      window written, for each engine, with a 5 s window.
# Needs bin/safeattach and bin/safeattach-pprof (make build) and a real
# async-profiler in $ASYNC_PROFILER_HOME. Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
BIN=${BIN:-bin/safeattach}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
: "${ASYNC_PROFILER_HOME:?set ASYNC_PROFILER_HOME to an async-profiler install (lib/libasyncProfiler.so)}"
WORK_PREFIX=safeattach-engines
source scripts/jvm.sh
export PATH="$PWD/bin:$PATH" ASYNC_PROFILER_HOME

hz=$(getconf CLK_TCK)
# cpu_ticks PID: the process's user + system time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# total FILE: the sum of a collapsed profile's counts.
total() { awk '{s += $NF} END {print s + 0}' "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# run PID ARGS...: one safeattach profile of PID, its messages shown if
# it fails.
run() {
  local pid=$1; shift
  "$BIN" profile "$@" "$pid" >"$work/run.log" 2>&1 || { echo "safeattach profile $*:" >&2; cat "$work/run.log" >&2; exit 1; }
}

pct() { awk -v t="$1" -v s="$SECONDS_PER_RUN" -v hz="$hz" 'BEGIN {printf "%.1f", 100 * t / hz / s}'; }

# measure MODE: the table's rows for the target running one worker in
# MODE (spin: Java code; churn: native memory through Deflater, which the
# Flight Recorder's Java-only sampler does not see).
measure() {
  local pid r t0 t1 idle=() ap=() jfr=() ap_rate=() jfr_rate=()
  pid=$(TARGET_MODE=$1 start_jvm "engines-$1" 1)
  # Warm both engines once (agent delivery, JFR's first start), untimed.
  run "$pid" -e itimer -d 1 -o collapsed -f "$work/warm.collapsed"
  run "$pid" --engine jfr -d 1 -o collapsed -f "$work/warm-jfr.collapsed"
  for r in $(seq 1 "$ROUNDS"); do
    t0=$(cpu_ticks "$pid"); sleep "$SECONDS_PER_RUN"; t1=$(cpu_ticks "$pid")
    idle+=($(( t1 - t0 )))
    t0=$(cpu_ticks "$pid")
    run "$pid" -e itimer -d "$SECONDS_PER_RUN" -o collapsed -f "$work/ap-$r.collapsed"
    t1=$(cpu_ticks "$pid")
    ap+=($(( t1 - t0 ))); ap_rate+=($(( $(total "$work/ap-$r.collapsed") / SECONDS_PER_RUN )))
    t0=$(cpu_ticks "$pid")
    run "$pid" --engine jfr -d "$SECONDS_PER_RUN" -o collapsed -f "$work/jfr-$r.collapsed"
    t1=$(cpu_ticks "$pid")
    jfr+=($(( t1 - t0 ))); jfr_rate+=($(( $(total "$work/jfr-$r.collapsed") / SECONDS_PER_RUN )))
  done
  local m_idle m_ap m_jfr
  m_idle=$(printf '%s\n' "${idle[@]}" | median)
  m_ap=$(printf '%s\n' "${ap[@]}" | median)
  m_jfr=$(printf '%s\n' "${jfr[@]}" | median)
  echo "| $1 | unprofiled | $(pct "$m_idle") | — | — |"
  echo "| $1 | async-profiler (itimer, 10 ms) | $(pct "$m_ap") | $(pct $(( m_ap - m_idle ))) | $(printf '%s\n' "${ap_rate[@]}" | median) |"
  echo "| $1 | Flight Recorder (settings=profile) | $(pct "$m_jfr") | $(pct $(( m_jfr - m_idle ))) | $(printf '%s\n' "${jfr_rate[@]}" | median) |"
}

echo "| workload (1 thread) | ${SECONDS_PER_RUN} s, median of $ROUNDS | target CPU (% of one core) | over unprofiled | samples/s recorded |"
echo "|---|---|---|---|---|"
measure spin
measure churn
pid=$(TARGET_MODE=spin start_jvm engines-window 1)

# first_window ENGINE-ARGS...: seconds from `profile --loop 5s` starting
# to its first window written (a 5 s window plus the engine's own cost).
first_window() {
  local t0 t1 log="$work/loop.$RANDOM.log"
  : >"$log"
  t0=$(date +%s%N)
  "$BIN" profile "$@" --loop 5s -d 30 -o collapsed -f "$work/w-%n.collapsed" "$pid" >"$log" 2>&1 &
  local loop=$!
  until grep -q "window 0: wrote" "$log" 2>/dev/null; do
    kill -0 "$loop" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.02
  done
  t1=$(date +%s%N)
  kill -INT "$loop"; wait "$loop" || true
  rm -f "$work"/w-*.collapsed
  awk -v d=$(( t1 - t0 )) 'BEGIN {printf "%.2f", d / 1e9}'
}
echo
echo "| first window of a 5 s --loop | seconds to the first window written |"
echo "|---|---|"
echo "| async-profiler | $(first_window -e itimer) |"
echo "| Flight Recorder | $(first_window --engine jfr) |"
