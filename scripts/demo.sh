#!/usr/bin/env bash
# The built-in demo: the incident safeattach exists for, on throwaway JVMs
# this script starts and always kills.
#   1. a JVM with tcmalloc's heap profiler, as a service would run it;
#   2. safeattach inspects it and refuses an agent that would deadlock it;
#   3. a fixed agent attaches cleanly;
#   4. clearly labelled: what an unchecked attach (jattach) does to a
#      second such JVM, and safeattach's hang report of it.
# The agents are look-alikes compiled here from internal/testenv/agents:
# they carry async-profiler's markers and reproduce the behaviour of an
# affected (3.0-<hex> nightly) and a fixed (4.5) build. Nothing is sampled.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/safeattach}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
LIB=/usr/lib/x86_64-linux-gnu
work=$(mktemp -d /tmp/safeattach-demo.XXXXXX)
# start_jvm runs in command substitutions (subshells), so pids are kept in
# a file rather than a shell array.
cleanup() {
  [ -f "$work/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

cp internal/testenv/java/Target.java "$work/"
"$JAVA_HOME/bin/javac" --release 11 -d "$work" "$work/Target.java"
for a in lookalike_affected lookalike_fixed; do
  gcc -shared -fPIC -O1 -o "$work/lib$a.so" "internal/testenv/agents/$a.c"
done
AFFECTED=$work/liblookalike_affected.so
FIXED=$work/liblookalike_fixed.so

# start_jvm NAME ENV...: a service-like JVM with 4 threads churning native
# memory (java.util.zip.Deflater); prints its pid once it is ready.
start_jvm() {
  local log="$work/$1.log"; shift
  (cd "$work" && exec env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "$@" \
     "$JAVA_HOME/bin/java" -Xmx64m -XX:+UseSerialGC -cp "$work" Target 4 >"$log" 2>&1) &
  local pid=$!
  echo "$pid" >>"$work/pids"
  for _ in $(seq 1 300); do
    grep -q READY "$log" 2>/dev/null && { echo "$pid"; return; }
    sleep 0.1
  done
  echo "demo JVM did not start:" >&2; cat "$log" >&2; exit 1
}

say "1. A JVM whose allocator is gperftools tcmalloc with its heap profiler on"
echo "   LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp java ... Target"
pid=$(start_jvm service LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp)
echo "   started pid $pid"
run "$BIN" inspect "$pid" | grep -E '^(pid|jvm|tcmalloc|libunwind|profilers)|heap profiler on'

say "2. Is it safe to attach an affected async-profiler build (look-alike of 3.0-2dba71f)?"
run "$BIN" check --agent "$AFFECTED" "$pid" || echo "   (exit $? = refused)"
run "$BIN" load "$pid" "$AFFECTED" || echo "   (exit $? = refused; nothing was sent to the JVM)"
run "$BIN" jcmd "$pid" VM.uptime

say "3. A fixed build (look-alike of 4.5) attaches to the same JVM"
run "$BIN" load "$pid" "$FIXED"
run "$BIN" jcmd "$pid" VM.uptime

say "4. WHAT THE UNCHECKED ATTACH DOES (jattach, on a second throwaway JVM)"
victim=$(start_jvm victim LD_PRELOAD=$LIB/libtcmalloc.so.4 HEAPPROFILE=$work/hp2)
sleep 1
echo "   started pid $victim; jattach loads the affected build with no checks, given 8 s:"
if command -v jattach >/dev/null; then
  printf '\033[2m$ timeout 8 jattach %s load %s true\033[0m\n' "$victim" "$AFFECTED"
  if (timeout -s KILL 8 jattach "$victim" load "$AFFECTED" true >/dev/null 2>&1) 2>/dev/null; then
    echo "   jattach returned (this time the JVM survived)"
  else
    echo "   jattach never returned: the JVM is deadlocked (jcmd and jstack would hang too)"
  fi
else
  echo "   (jattach is not installed; make prereqs installs it)"
fi
echo "   safeattach explains the hang from outside (no signal, no attach):"
run "$BIN" diagnose "$victim" 2>&1 | head -40 || true

say "Done: every demo JVM is killed on exit."
