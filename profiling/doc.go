// Package profiling is everything a profile is, above the safe door
// (package attach): the CLI, the node agent, the examples and any
// embedder go through it.
//
// Two engines make profiles. AsyncProfiler is async-profiler, loaded
// through the safe door after the rules judged it; FlightRecorder is the
// JVM's own Flight Recorder, driven with diagnostic commands (nothing
// native is loaded: Java frames only). A request names one (Engine), or
// names the engine to take when the rules refuse async-profiler
// (Fallback): the result then says which rules sent it there
// (FallbackFrom).
//
// Three ways in, by what the caller needs:
//
//   - Profile: one profile — start, wait Duration, stop, write — to a
//     file (prepared before anything is attached, replaced only when
//     complete) or a writer. Ctrl-C (a cancelled context) stops it early
//     and still writes what was collected.
//   - Open: a Profiler, whatever the engine, driven command by command
//     and across processes: Start, Stop or Dump (to a writer, or StopTo
//     and DumpTo a Destination, which can be the file a detached start
//     named), Windows (continuous profiling: each finished window handed
//     to a callback, streamed from the target within MaxOutput), Command
//     (status and async-profiler's queries). A later Open of a detached
//     start finds the engine that start used.
//   - OpenSession: async-profiler's own Session, for what only it has
//     (Rotate, Owner records, the descriptor server).
//
// Every output: async-profiler's own formats; pprof, collapsed, flat and
// an HTML flame graph converted from a JFR recording by safeattach-pprof
// (SessionRequest.Converter, else found beside the program or on PATH:
// an embedder ships it) in a child bounded in input, time, memory and
// output. A pprof session converts every profile it reads back, each
// window too.
//
// What comes back from a target is the target's: read inside its root,
// a regular file of its user with one link, within a byte budget,
// streamed, and removed. A profiler is owned by the session that started
// it (others are refused with a *BusyError); what a later stop needs is
// kept on the caller's side, never taken from the target. JSONResult is
// the one JSON shape of a command's result.
package profiling
