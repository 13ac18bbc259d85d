// Package diagnose explains, from the outside, a process that no longer
// answers: per thread its state, kernel wait channel, blocked system call
// and arguments, user-space program counter symbolised against the mapped
// libraries' dynamic symbols, and its callers unwound with the libraries'
// call frame information (.eh_frame, through delve's DWARF frame package)
// from the stack pointer and program counter the kernel reports: only
// frames the walk can vouch for, and where and why it stopped. Threads
// waiting on the same futex are grouped, and known deadlock patterns get a
// plain-language conclusion (from the unwound frames and a scan of the
// stack's words, a heuristic never shown as a stack).
//
// It reads /proc/<pid>/task/*/{stat,comm,wchan,syscall} and
// /proc/<pid>/mem. It never stops, signals or attaches to the process, so
// it works on a JVM whose attach listener and signal dispatcher are stuck,
// where jstack hangs. Reading syscall and mem needs ptrace access (root,
// or the same user without restrictions).
//
// It is a package of its own, beside preflight, because it answers a
// different question (what is this process doing now, rather than is it
// safe to attach) and is used after an attach as well as on demand.
package diagnose
