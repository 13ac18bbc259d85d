// Package crashmem is a deployment agent's memory of JVMs that crashed
// after it attached to them: a small state file the node agent owns. Watch
// follows a JVM for a window after an attach and records a crash (the JVM
// exited leaving an hs_err_pid<pid>.log); attach.Options.CrashMemory
// consults the store, and the rule crashed-after-attach refuses later
// attaches to the same workload until an operator acknowledges it (--ack)
// or forgets the entry.
package crashmem
