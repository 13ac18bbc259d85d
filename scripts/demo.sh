#!/usr/bin/env bash
# The built-in demo: start a throwaway JVM the way a service with jemalloc
# heap profiling runs, and show what safeattach sees from the outside.
# Every process it starts is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/safeattach}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
LIB=/usr/lib/x86_64-linux-gnu
work=$(mktemp -d /tmp/safeattach-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The demo target: the same Java program the tests use.
cp internal/testenv/java/Target.java "$work/"
"$JAVA_HOME/bin/javac" --release 11 -d "$work" "$work/Target.java"

# start_jvm LOGNAME ENV... : starts the target with the given environment
# and waits until it is ready; prints its pid.
start_jvm() {
  local log="$work/$1.log"; shift
  (cd "$work" && exec env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "$@" \
     "$JAVA_HOME/bin/java" -Xmx64m -XX:+UseSerialGC -cp "$work" Target 4 >"$log" 2>&1) &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    grep -q READY "$log" 2>/dev/null && { echo "$pid"; return; }
    sleep 0.1
  done
  echo "demo JVM did not start:" >&2; cat "$log" >&2; exit 1
}

say "A JVM with jemalloc heap profiling on (LD_PRELOAD=libjemalloc.so.2, MALLOC_CONF=prof:true)"
pid=$(start_jvm jemalloc LD_PRELOAD=$LIB/libjemalloc.so.2 MALLOC_CONF=prof:true,lg_prof_sample:19)
echo "started pid $pid"

say "safeattach inspect $pid   (read-only: no signal, no socket, no file created)"
"$BIN" inspect "$pid"

say "The same JVM with libunwind preloaded first: jemalloc's backtraces now take libunwind's global lock"
pid2=$(start_jvm jemalloc-libunwind "LD_PRELOAD=$LIB/libunwind.so.8 $LIB/libjemalloc.so.2" MALLOC_CONF=prof:true)
"$BIN" inspect "$pid2" | grep -E '^(jvm|jemalloc|libunwind)|unwind'

say "Done: every demo JVM is killed on exit."
