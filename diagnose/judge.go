package diagnose

import (
	"fmt"
	"strings"
)

// ticksPerSecondHung is the CPU use below which a process whose threads
// are all blocked counts as making no progress. A hung JVM measured here
// used 0–8 ticks per 5 s; a healthy one under load ~1000.
const ticksPerSecondHung = 3

// judge sets the verdict and conclusion from the threads.
func (r *HangReport) judge() {
	blocked, running, inFutex := 0, 0, 0
	for _, t := range r.Threads {
		switch {
		case t.State == "running":
			running++
		case t.Syscall != "":
			blocked++
		}
		if t.FutexAddr != 0 {
			inFutex++
		}
	}
	perSecond := float64(r.CPUTicks) / (float64(r.SampleMillis) / 1000)
	r.Pattern, r.Conclusion, r.Culprits = r.recognise(perSecond <= ticksPerSecondHung)
	switch {
	case perSecond >= 20, running > 0 && perSecond > ticksPerSecondHung:
		// Using CPU, or wanting it: threads in state R on a loaded
		// machine get fewer ticks than they ask for, and are not idle.
		r.State = Busy
	case perSecond <= ticksPerSecondHung && (r.Pattern != "" || r.contended()):
		// No progress, and threads queue on a shared lock (or a known
		// pattern): stuck. An idle process also uses no CPU, but its
		// threads each wait on their own condition.
		r.State = Hung
	default:
		r.State = Idle
	}
	r.Summary = append(r.Summary, SummaryLine{len(r.Threads), "threads"})
	r.Summary = append(r.Summary, SummaryLine{inFutex, "waiting on a futex"})
	r.Summary = append(r.Summary, SummaryLine{running, "running"})
	for _, lib := range []string{"libunwind", "dl_iterate_phdr", "tcmalloc", "jemalloc", "libasyncProfiler"} {
		n := 0
		for _, t := range r.Threads {
			if t.mentions(lib) {
				n++
			}
		}
		if n > 0 {
			r.Summary = append(r.Summary, SummaryLine{n, "with " + lib + " on the stack"})
		}
	}
	if r.Conclusion == "" {
		switch r.State {
		case Hung:
			r.Conclusion = fmt.Sprintf("no progress: %d ticks of CPU in %d ms and every thread blocked (%d on futexes); the process is deadlocked or waiting for something outside it", r.CPUTicks, r.SampleMillis, inFutex)
		case Busy:
			r.Conclusion = fmt.Sprintf("busy: %d ticks of CPU in %d ms; an unanswered request is slow, not stuck", r.CPUTicks, r.SampleMillis)
		default:
			r.Conclusion = fmt.Sprintf("idle but not stuck: %d ticks of CPU in %d ms, %d threads running", r.CPUTicks, r.SampleMillis, running)
		}
	}
}

// vouchedMentions is mentions over the frames unwound, for choosing what
// to show; a thread whose walk stopped at once is judged by its scan.
func (t Thread) vouchedMentions(s string) bool {
	if len(t.Callers) == 0 {
		return t.mentions(s)
	}
	if strings.Contains(t.Where, s) {
		return true
	}
	for _, c := range t.Callers {
		if strings.Contains(c, s) {
			return true
		}
	}
	return false
}

// mentions is whether s appears at the thread's PC, among its callers or
// in its scanned stack words: evidence for the patterns.
func (t Thread) mentions(s string) bool {
	if strings.Contains(t.Where, s) {
		return true
	}
	for _, c := range t.Callers {
		if strings.Contains(c, s) {
			return true
		}
	}
	for _, c := range t.Scanned {
		if strings.Contains(c, s) {
			return true
		}
	}
	return false
}

// contended reports whether three or more threads wait on one futex
// inside a library's memory: a lock, not a private condition variable.
func (r *HangReport) contended() bool {
	for _, g := range r.Futexes {
		if len(g.Threads) >= 3 && strings.Contains(g.Where, ".so") {
			return true
		}
	}
	return false
}

// recognise matches the incident's lock cycle (async-profiler #1147 and
// #1151): thread A, inside dl_iterate_phdr and so holding glibc's loader
// lock, waits for a lock of the unwinder or the allocator (lock B); a
// thread holding B, inside the unwinder, waits for the loader lock
// (a futex in ld-linux's _rtld_global). Other threads queue on B.
func (r *HangReport) recognise(noProgress bool) (pattern, conclusion string, culprits []int) {
	if !noProgress {
		return r.recogniseStuckAgent()
	}
	var loaderWaiters []Thread
	for _, t := range r.Threads {
		if t.FutexAddr != 0 && r.futexWhere(t.FutexAddr, "ld-linux", "_rtld_global") {
			loaderWaiters = append(loaderWaiters, t)
		}
	}
	allocatorFrames := func(t Thread) bool {
		return t.mentions("libunwind") || t.mentions("_Unwind") || t.mentions("tcmalloc") || t.mentions("jemalloc")
	}
	// The loader-lock holder: a thread blocked on another lock with
	// dl_iterate_phdr and the allocator on its stack. The stack scan can
	// miss the dl_iterate_phdr frame under stale words; the attach
	// listener blocked in the allocator is then the holder (it runs the
	// agent, the only code that walks libraries at that moment).
	var holder *Thread
	for _, pass := range []func(Thread) bool{
		func(t Thread) bool { return t.mentions("dl_iterate_phdr") && allocatorFrames(t) },
		func(t Thread) bool { return t.Name == "Attach Listener" && allocatorFrames(t) },
	} {
		for i, t := range r.Threads {
			if holder == nil && t.FutexAddr != 0 && !r.futexWhere(t.FutexAddr, "ld-linux", "_rtld_global") && pass(t) {
				holder = &r.Threads[i]
			}
		}
	}
	if holder == nil || len(loaderWaiters) == 0 {
		return r.recogniseStuckAgent()
	}
	// Its lock must be held by a thread that waits for the loader lock,
	// or this is not the cycle.
	cycle := false
	for _, w := range loaderWaiters {
		cycle = cycle || allocatorFrames(w)
	}
	if !cycle {
		return r.recogniseStuckAgent()
	}
	lockB := ""
	queued := 0
	for _, g := range r.Futexes {
		if g.Addr == holder.FutexAddr {
			lockB, queued = g.Where, len(g.Threads)-1
		}
	}
	owner := "the allocator's"
	issue := "#1147 (jemalloc)"
	switch {
	case strings.Contains(lockB, "libunwind") || holder.mentions("libunwind"):
		owner = "libunwind's"
	}
	if holder.mentions("tcmalloc") {
		issue = "#1151 (tcmalloc)"
	}
	var names []string
	culprits = []int{holder.TID}
	for _, t := range loaderWaiters {
		names = append(names, fmt.Sprintf("%d (%s)", t.TID, t.Name))
		culprits = append(culprits, t.TID)
	}
	return PatternLoaderLock, fmt.Sprintf(
		"deadlock: thread %d (%s) holds the loader lock inside dl_iterate_phdr and waits for %s lock (%s), while thread %s holding that lock waits for the loader lock; %d more threads queue behind them. This is the deadlock of async-profiler %s: an agent allocating under the loader lock in a JVM whose allocator captures stacks. Only killing the process ends it",
		holder.TID, holder.Name, owner, lockB, strings.Join(names, ", "), queued, issue), culprits
}

func (r *HangReport) futexWhere(addr uint64, marks ...string) bool {
	for _, g := range r.Futexes {
		if g.Addr != addr {
			continue
		}
		for _, m := range marks {
			if strings.Contains(g.Where, m) {
				return true
			}
		}
	}
	return false
}

// recogniseStuckAgent names an agent that never returned from
// Agent_OnAttach: the Attach Listener thread has it on its stack.
func (r *HangReport) recogniseStuckAgent() (pattern, conclusion string, culprits []int) {
	for _, t := range r.Threads {
		if t.Name != "Attach Listener" {
			continue
		}
		for _, c := range append(append([]string{t.Where}, t.Callers...), t.Scanned...) {
			if strings.Contains(c, "Agent_OnAttach") || strings.Contains(c, "Agent_OnLoad") {
				what := t.Syscall
				if what == "" {
					what = t.State
				}
				return PatternAgentStuck, fmt.Sprintf(
					"the agent has not returned from its attach entry point: thread %d (Attach Listener) is blocked in %s inside %s, so the JVM answers no further attach request; %d CPU ticks in %d ms",
					t.TID, what, c, r.CPUTicks, r.SampleMillis), []int{t.TID}
			}
		}
	}
	return "", "", nil
}
