// Package attach is the safe door to a JVM: Load, Jcmd and Profile each
// inspect the target (preflight), judge the combination (conflicts), and
// only then speak the attach protocol (attach/hotspot), followed by a
// health check — all under one context deadline. A refusal is a
// *RefusedError carrying the Verdict, returned before anything was sent to
// the target. A target that stops answering costs the caller its deadline
// and yields a *HangError carrying a hang report made from outside.
//
// The zero Options are the defaults: embedded rules, no acknowledgements,
// a deadline generous enough for a slow healthy attach (an attach under
// tcmalloc's heap profiler took 39–64 s here), no logging.
package attach
