// Package flightrec profiles a JVM with its own Flight Recorder, driven
// through the attach socket by diagnostic commands (JFR.start, JFR.stop)
// passed through the safe door (attach.Jcmd): nothing native is loaded
// into the target, so no loader lock is taken. It is the engine for a
// JVM where async-profiler is refused — an allocator that captures
// stacks, the deadlock async-profiler before 4.0 brings there — or
// where the operator asks for it.
//
// The recording is written by the target, into its own /tmp under a
// name no one can predict, and read back as everything from a target
// is: resolved inside its root, a regular file of the JVM's user with
// one link, within a byte budget, streamed, and removed. A recording
// runs with a duration of its own, so a caller killed mid-profile
// leaves nothing running for long.
//
// What the Flight Recorder cannot give, said in every result: native
// and kernel frames (Java frames only), and on JDK 8 before 8u262 any
// recording at all (no JFR in OpenJDK builds).
package flightrec
