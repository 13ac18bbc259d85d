// Package fdtransfer serves async-profiler's descriptor requests for a
// JVM that may not open perf events itself (a container without
// CAP_PERFMON, perf_event_paranoid ≥ 2 for kernel samples): the role of
// asprof --fdtransfer.
//
// The agent, started with fdtransfer=@NAME, connects to an abstract unix
// socket (SOCK_SEQPACKET) in its own network namespace and asks, one
// message at a time, for a perf event descriptor for one of its threads
// (perf_event_open with the attributes it sends) or for a copy of
// /proc/kallsyms; each answer carries the descriptor (SCM_RIGHTS). The
// message layout is async-profiler's (src/fdtransfer.h), written out
// where it is parsed.
//
// What the server does for the agent is bounded by whom it serves: the
// socket is created in the target's network namespace only; the one
// peer accepted is the target process itself (SO_PEERCRED, in our pid
// namespace — anyone else who connects first is turned away and the
// server waits on); a perf event is opened only for a thread of that
// process (its thread id is translated from the target's pid namespace
// through /proc/<pid>/task/*/status, so a thread of another process, or
// -1 for "every process", is refused); the kallsyms copy is an unnamed
// memfd, never a predictable path. The server ends when the agent
// closes the connection (its profiler stopped), when the target exits,
// or when the caller's context ends.
package fdtransfer
