#!/usr/bin/env bash
# The built-in demo: the incident safeattach exists for, on throwaway JVMs
# this script starts and always kills.
#   1. a JVM with tcmalloc's heap profiler, as a service would run it;
#   2. safeattach inspects it and refuses an agent that would deadlock it;
#   3. a fixed agent attaches cleanly;
#   4. safeattach profile writes a flame graph of it, as asprof would;
#   5. clearly labelled: what an unchecked attach (jattach) does to a
#      second such JVM, and safeattach's hang report of it;
#   6. forced past the rules, safeattach sees the deadlock and returns.
# The agents are look-alikes compiled here from internal/testenv/agents:
# they carry async-profiler's markers and reproduce the behaviour of an
# affected (3.0-<hex> nightly) and a fixed (4.5) build. Nothing is sampled:
# the look-alike's flame graph says its stacks are made up. With a real
# async-profiler 4.x in $ASYNC_PROFILER_HOME, step 4 profiles with it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/safeattach}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
LIB=/usr/lib/x86_64-linux-gnu
WORK_PREFIX=safeattach-demo
source scripts/jvm.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

for a in lookalike_affected lookalike_fixed; do
  gcc -shared -fPIC -O1 -o "$work/lib$a.so" "internal/testenv/agents/$a.c"
done
AFFECTED=$work/liblookalike_affected.so
FIXED=$work/liblookalike_fixed.so

say "1. A JVM whose allocator is gperftools tcmalloc with its heap profiler on"
echo "   LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp java ... Target"
pid=$(start_jvm service 4 LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp)
echo "   started pid $pid"
run "$BIN" inspect "$pid" | grep -E '^(pid|jvm|tcmalloc|libunwind|profilers)|heap profiler on'

say "2. Is it safe to attach an affected async-profiler build (look-alike of 3.0-2dba71f)?"
run "$BIN" check --agent "$AFFECTED" "$pid" || echo "   (exit $? = refused)"
run "$BIN" load "$pid" "$AFFECTED" || echo "   (exit $? = refused; nothing was sent to the JVM)"
run "$BIN" jcmd "$pid" VM.uptime

say "3. A fixed build (look-alike of 4.5) attaches to the same JVM"
run "$BIN" load "$pid" "$FIXED"
run "$BIN" jcmd "$pid" VM.uptime

say "4. Profile it for 2 seconds into a flame graph, as asprof would"
PROFILER=$FIXED
if [ -n "${ASYNC_PROFILER_HOME:-}" ] && [ -f "$ASYNC_PROFILER_HOME/lib/libasyncProfiler.so" ]; then
  PROFILER=$ASYNC_PROFILER_HOME/lib/libasyncProfiler.so
  echo "   with the real async-profiler in $ASYNC_PROFILER_HOME"
else
  echo "   with the fixed look-alike (set ASYNC_PROFILER_HOME to a real async-profiler 4.x for real stacks)"
fi
mkdir -p bin
run "$BIN" profile --agent "$PROFILER" -d 2 -f bin/demo-flame.html "$pid"
echo "   open bin/demo-flame.html in a browser"

say "5. WHAT THE UNCHECKED ATTACH DOES (jattach, on a second throwaway JVM)"
victim=$(start_jvm victim 4 LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp2)
sleep 1
echo "   started pid $victim; jattach loads the affected build with no checks, given 8 s:"
if command -v jattach >/dev/null; then
  printf '\033[2m$ timeout 8 jattach %s load %s true\033[0m\n' "$victim" "$AFFECTED"
  # SIGTERM, not SIGKILL: timeout re-raises a KILL on itself and the
  # shell would print "Killed".
  rc=0; timeout 8 jattach "$victim" load "$AFFECTED" true >/dev/null 2>&1 || rc=$?
  if [ "$rc" = 124 ]; then
    echo "   jattach never returned: the JVM is deadlocked (jcmd and jstack would hang too)"
  else
    echo "   jattach returned with exit $rc (this time the JVM survived)"
  fi
else
  echo "   (jattach is not installed; make prereqs installs it)"
fi
echo "   safeattach explains the hang from outside (no signal, no attach):"
run "$BIN" diagnose "$victim" 2>&1 | head -40 || true

say "6. Forced past the rules (--ack), safeattach sees the deadlock form and returns in seconds"
forced=$(start_jvm forced 4 LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp3)
sleep 1
t0=$(date +%s%N)
rc=0; run "$BIN" load --ack tcmalloc-heap-profiler "$forced" "$AFFECTED" >"$work/forced.out" 2>&1 || rc=$?
grep -E '^(HANG REPORT|  deadlock|safeattach:)' "$work/forced.out" || true
echo "   returned after $(( ($(date +%s%N) - t0) / 1000000 )) ms with exit $rc and the report (the deadline was 2 minutes)"

say "Done: every demo JVM is killed on exit."
