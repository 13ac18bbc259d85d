#!/usr/bin/env bash
# Compares safeattach with jattach (Debian package) and the JDK's jcmd in
# one run, on throwaway JVMs this script starts and kills:
#   1. warm round trip: "VM.version" with the attach listener already up,
#      whole-process wall time, median of $RUNS;
#   2. cold attach: a fresh JVM whose listener is not started yet, 3 s and
#      0.5 s after it started (CI smoke tests attach to JVMs that have just
#      started), median of $COLD runs each (one new JVM per run);
#   3. a hung target: an agent that never returns from Agent_OnAttach,
#      with a 2 s deadline (jattach has none: it is killed after 10 s);
#   4. with a real async-profiler in $ASYNC_PROFILER_HOME (bin/asprof and
#      lib/libasyncProfiler.so; strip a source build's debug information
#      to measure a release-sized library): safeattach profile against
#      asprof on the same JVMs: status, list, stop, a -d 1 collect, and
#      the first attach to a fresh JVM (paired, alternating runs).
# Prints Markdown tables. Run via `make bench` (builds bin/safeattach).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
COLD=${COLD:-9}
BIN=${BIN:-bin/safeattach}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
JATTACH=$(command -v jattach || true)
WORK_PREFIX=safeattach-bench
source scripts/jvm.sh
gcc -shared -fPIC -o "$work/libblock.so" internal/testenv/agents/block_forever.c

now_ns() { date +%s%N; }

# cold_ms TOOL AFTER: median over $COLD fresh JVMs of one attach that
# starts the listener, AFTER seconds after the JVM printed READY.
cold_ms() {
  local times=()
  for _ in $(seq 1 "$COLD"); do
    local pid; pid=$(start_jvm bench 0)
    sleep "$2"
    local t0; t0=$(now_ns)
    case $1 in
      safeattach) "$BIN" jcmd "$pid" VM.version >/dev/null 2>&1 ;;
      jattach) "$JATTACH" "$pid" jcmd VM.version >/dev/null 2>&1 ;;
      jcmd) "$JAVA_HOME/bin/jcmd" "$pid" VM.version >/dev/null 2>&1 ;;
    esac
    times+=($(( $(now_ns) - t0 )))
    kill -9 "$pid" 2>/dev/null || true
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1e6}'
}

# hyperfine_median_ms RUNS CMD: hyperfine's median (no shell, warm-up 3),
# which excludes this script's own fork overhead.
hyperfine_median_ms() {
  local runs=$1 cmd=$2 out="$work/hf.json"
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$out" "$cmd" >/dev/null 2>&1
  sed -n 's/.*"median": *\([0-9.e-]*\).*/\1/p' "$out" | head -1 | awk '{printf "%.2f", $1*1000}'
}

warm=$(start_jvm bench 0)
"$BIN" jcmd "$warm" VM.version >/dev/null
sa_warm=$(hyperfine_median_ms "$RUNS" "$BIN jcmd $warm VM.version")
ja_warm=n/a; [ -n "$JATTACH" ] && ja_warm=$(hyperfine_median_ms "$RUNS" "$JATTACH $warm jcmd VM.version")
jc_warm=$(hyperfine_median_ms 5 "$JAVA_HOME/bin/jcmd $warm VM.version")
hello=$(hyperfine_median_ms "$RUNS" "$BIN version")

sa_cold=$(cold_ms safeattach 3)
ja_cold=n/a; [ -n "$JATTACH" ] && ja_cold=$(cold_ms jattach 3)
jc_cold=$(cold_ms jcmd 3)
sa_fresh=$(cold_ms safeattach 0.5)
ja_fresh=n/a; [ -n "$JATTACH" ] && ja_fresh=$(cold_ms jattach 0.5)
jc_fresh=$(cold_ms jcmd 0.5)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 > 0) printf "%.2f", a/b; else print "n/a" }'; }

hung=$(start_jvm bench 0)
t0=$(now_ns); "$BIN" load --timeout 2s "$hung" "$work/libblock.so" >/dev/null 2>&1 || true
sa_hung=$(( ($(now_ns) - t0) / 1000000 ))
hung2=$(start_jvm bench 0)
ja_hung=n/a
if [ -n "$JATTACH" ]; then
  t0=$(now_ns); timeout 10 "$JATTACH" "$hung2" load "$work/libblock.so" true >/dev/null 2>&1 || true
  ja_hung="$(( ($(now_ns) - t0) / 1000000 )) (killed by timeout 10 s; it has no deadline)"
fi

cat <<EOT
| measurement (wall time, ms) | safeattach | jattach | jcmd (JDK) |
|---|---|---|---|
| warm round trip, median of $RUNS (jcmd: 5) | $sa_warm | $ja_warm | $jc_warm |
| cold attach 3 s after start, median of $COLD fresh JVMs | $sa_cold | $ja_cold | $jc_cold |
| cold attach 0.5 s after start, median of $COLD fresh JVMs | $sa_fresh | $ja_fresh | $jc_fresh |
| hung agent, deadline 2 s | $sa_hung | $ja_hung | – |
| \`safeattach version\` (process start-up alone) | $hello | | |

safeattach / jattach: warm $(ratio "$sa_warm" "$ja_warm"), cold (3 s) $(ratio "$sa_cold" "$ja_cold"), cold (0.5 s) $(ratio "$sa_fresh" "$ja_fresh")
EOT

[ -n "${ASYNC_PROFILER_HOME:-}" ] && [ -x "$ASYNC_PROFILER_HOME/bin/asprof" ] || exit 0
ASPROF=$ASYNC_PROFILER_HOME/bin/asprof
APLIB=$ASYNC_PROFILER_HOME/lib/libasyncProfiler.so
PAIRS=${PAIRS:-30}

# paired NAME SETUP_A CMD_A SETUP_B CMD_B: $PAIRS alternating runs (the
# setup of each run untimed), prints "median_a median_b" in ms.
paired() {
  # $EPOCHREALTIME (microseconds, no fork): timing with date(1) added a
  # process start to every run.
  local a=() b=() t0 t1
  for _ in $(seq 1 "$PAIRS"); do
    eval "$2" >/dev/null 2>&1 || true
    t0=${EPOCHREALTIME/./}; eval "$3" >/dev/null 2>&1 || true; t1=${EPOCHREALTIME/./}; a+=($((t1 - t0)))
    eval "$4" >/dev/null 2>&1 || true
    t0=${EPOCHREALTIME/./}; eval "$5" >/dev/null 2>&1 || true; t1=${EPOCHREALTIME/./}; b+=($((t1 - t0)))
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.1f", v[int((NR+1)/2)]/1e3}'; }
  echo "$(med "${a[@]}") $(med "${b[@]}")"
}

# An idle JVM for the actions (a churning one on this 2-core machine
# measured its own CPU contention), one churning thread for collects.
jvm=$(start_jvm asprof 0)
busy=$(start_jvm asprof 1)
sa="$BIN profile --agent $APLIB"
# hyperfine_prep_ms RUNS PREPARE CMD: hyperfine's median of CMD, each run
# after an untimed PREPARE.
hyperfine_prep_ms() {
  local out="$work/hfp.json"
  hyperfine -N --runs "$1" --prepare "$2" --export-json "$out" "$3" >/dev/null 2>&1
  sed -n 's/.*"median": *\([0-9.e-]*\).*/\1/p' "$out" | head -1 | awk '{printf "%.1f", $1*1000}'
}
# Actions and collects through hyperfine (no shell: a bash fork here
# costs more than asprof's whole status), asprof then safeattach.
"$ASPROF" start -e itimer "$jvm" >/dev/null
as_status=$(hyperfine_median_ms "$PAIRS" "$ASPROF status $jvm"); sa_status=$(hyperfine_median_ms "$PAIRS" "$sa status $jvm")
as_list=$(hyperfine_median_ms "$PAIRS" "$ASPROF list $jvm"); sa_list=$(hyperfine_median_ms "$PAIRS" "$sa list $jvm")
"$ASPROF" stop "$jvm" >/dev/null 2>&1 || true
as_stop=$(hyperfine_prep_ms "$PAIRS" "$ASPROF start -e itimer $jvm" "$ASPROF stop -o collapsed $jvm")
sa_stop=$(hyperfine_prep_ms "$PAIRS" "$ASPROF start -e itimer $jvm" "$sa stop -o collapsed $jvm")
as_d1=$(hyperfine_median_ms 10 "$ASPROF -e itimer -d 1 -o collapsed -f $work/a.txt $busy")
sa_d1=$(hyperfine_median_ms 10 "$sa -e itimer -d 1 -o collapsed -f $work/s.txt $busy")
# The first attach: a fresh JVM per run, 3 s after it started (loading
# the library, starting the listener, a -d 1 collect).
# The previous fresh JVM is killed first, so only two JVMs ever run.
first() {
  [ -f "$work/first.pid" ] && kill -9 "$(cat "$work/first.pid")" 2>/dev/null
  local p; p=$(start_jvm first 1); sleep 3; echo "$p" >"$work/first.pid"
}
read -r as_first sa_first < <(PAIRS=${FIRST_PAIRS:-9} paired first first "$ASPROF -e itimer -d 1 -o collapsed -f $work/a.txt \$(cat $work/first.pid)" first "$sa -e itimer -d 1 -o collapsed -f $work/s.txt \$(cat $work/first.pid)")
cat <<EOT

| safeattach profile vs asprof $("$ASPROF" --version 2>/dev/null | head -1) (median ms; hyperfine, first attach: paired alternating runs) | asprof | safeattach | ratio |
|---|---|---|---|
| \`safeattach version\` (Go process start-up alone) | | $hello | |
| status (profiler running) | $as_status | $sa_status | $(ratio "$sa_status" "$as_status") |
| list | $as_list | $sa_list | $(ratio "$sa_list" "$as_list") |
| stop -o collapsed | $as_stop | $sa_stop | $(ratio "$sa_stop" "$as_stop") |
| -e itimer -d 1 collect | $as_d1 | $sa_d1 | $(ratio "$sa_d1" "$as_d1") |
| first attach: fresh JVM, -d 1 collect (${FIRST_PAIRS:-9} pairs) | $as_first | $sa_first | $(ratio "$sa_first" "$as_first") |
EOT
