// Package hotspot speaks the HotSpot dynamic-attach protocol: it finds or
// starts a JVM's attach listener, connects to it and runs commands (load,
// jcmd, threaddump, properties, ...).
//
// It is unchecked by design: it does what it is told and knows nothing of
// allocators, agents or policy. The package attach is the safe door that
// decides whether a command may be sent. What this package does guarantee
// are the mechanics that must never go wrong:
//
//   - SIGQUIT goes only to the process that was inspected (through a pidfd
//     pinned by its start time), only when it catches SIGQUIT, and only when
//     no attach socket exists yet (a JVM with a socket would print a thread
//     dump; one that does not catch SIGQUIT would die);
//   - every blocking step (waiting for the socket, connect, write, read) is
//     bounded by the caller's context;
//   - the socket is trusted only if it is a socket owned by the target's
//     user (or root) without group/other permissions, and its peer is the
//     target process (SO_PEERCRED);
//   - the trigger file is created O_CREAT|O_EXCL|O_NOFOLLOW, owned by the
//     target's user, and always removed;
//   - no process-wide side effect: paths go through /proc/<pid>/root and
//     /proc/<pid>/cwd, and a credential switch (JDK 8/9 accept only the
//     JVM's own uid/gid) happens on one locked OS thread with raw
//     per-thread syscalls and is undone before the thread is released.
//
// Protocol versions (docs/attach-protocol.md):
//
//	v1, every JDK     "1\0" cmd "\0" a0 "\0" a1 "\0" a2 "\0"; cmd ≤ 16 bytes,
//	                  each argument ≤ 1024 bytes (longer: the JVM closes the
//	                  connection without a reply)
//	v2, JDK 24+       "2\0" <size> "\0" <cmd>[" " opts] "\0" (<arg> "\0")*,
//	                  size counts every byte after the size field, ≤ 262144;
//	                  offered when "getversion options" answers "0\n2[...]"
//	streaming, JDK 25 "<code>\n" arrives when the command starts, output
//	                  follows live (the default even for v1 clients)
package hotspot
