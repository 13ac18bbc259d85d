# Sourced by scripts/demo.sh and bench/compare.sh: a work directory with
# the Java target compiled, throwaway JVMs, and a cleanup that kills every
# one of them. Needs JAVA_HOME and a prefix for the work directory in
# WORK_PREFIX.

work=$(mktemp -d "/tmp/${WORK_PREFIX:-safeattach}.XXXXXX")
# start_jvm runs in command substitutions (subshells), so pids are kept in
# a file rather than a shell array.
# A JVM killed with SIGKILL cannot remove its attach socket and its
# hsperfdata file: cleanup removes them (only for pids this script
# started, and only once they are gone), so a run leaves nothing behind.
cleanup() {
  if [ -f "$work/pids" ]; then
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
    wait 2>/dev/null || true
    while read -r p; do
      while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
      rm -f "/tmp/.java_pid$p" "/tmp/.attach_pid$p" "/tmp/hsperfdata_$(id -un)/$p"
    done <"$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cp internal/testenv/java/Target.java "$work/"
"$JAVA_HOME/bin/javac" --release 11 -d "$work" "$work/Target.java"

# start_jvm NAME WORKERS [ENV...]: starts the Java target with the given
# environment (and nothing else from ours, as a service manager would) and
# WORKERS threads churning native memory (or doing what $TARGET_MODE says:
# spin, contend, wait, gc — see Target.java); prints its pid once ready.
start_jvm() {
  local log="$work/$1.$RANDOM.log" workers=$2; shift 2
  (cd "$work" && exec env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "$@" \
     "$JAVA_HOME/bin/java" -Xmx64m -XX:+UseSerialGC -cp "$work" Target "$workers" ${TARGET_MODE:-} >"$log" 2>&1) &
  local pid=$!
  echo "$pid" >>"$work/pids"
  for _ in $(seq 1 600); do
    grep -q READY "$log" 2>/dev/null && { echo "$pid"; return; }
    sleep 0.05
  done
  echo "JVM did not start:" >&2; cat "$log" >&2; exit 1
}
