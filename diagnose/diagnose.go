package diagnose

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
)

// State is the judgement on the process as a whole (its JSON name is
// "verdict").
type State string

// States of the process as a whole.
const (
	// Hung: no thread makes progress: (almost) no CPU over the sample and
	// every thread blocked.
	Hung State = "hung"
	// Busy: threads consume CPU; an unanswered request is slow, not stuck.
	Busy State = "busy"
	// Idle: little CPU but some threads are not blocked in the kernel
	// (running or runnable between samples).
	Idle State = "idle"
)

func (v State) String() string { return string(v) }

// MarshalText implements encoding.TextMarshaler.
func (v State) MarshalText() ([]byte, error) { return []byte(v), nil }

// UnmarshalText accepts only hung, busy and idle.
func (v *State) UnmarshalText(b []byte) error {
	switch x := State(b); x {
	case Hung, Busy, Idle:
		*v = x
		return nil
	}
	return fmt.Errorf("verdict %q: want hung, busy or idle", b)
}

// Patterns a report can recognise (Report.Pattern).
const (
	// PatternLoaderLock is the deadlock of async-profiler #1147/#1151: an
	// agent inside dl_iterate_phdr (holding the loader lock) waits for the
	// unwinder's or allocator's lock, whose holder waits for the loader
	// lock.
	PatternLoaderLock = "loader-lock-allocator-deadlock"
	// PatternAgentStuck is an agent that has not returned from
	// Agent_OnAttach: slow or stuck, not necessarily a deadlock.
	PatternAgentStuck = "agent-stuck-in-onattach"
)

// Options tunes Diagnose. The zero value samples for one second.
type Options struct {
	// Sample is how long CPU use is measured (default 1s).
	Sample time.Duration
	// StackScan is how many bytes above each blocked thread's stack
	// pointer are scanned for return addresses (default 32 KiB).
	StackScan int
	// MaxCallers bounds the scanned (heuristic) code words kept per
	// thread (default 64:
	// in the incident, dl_iterate_phdr sits 20 to 40 words down, among
	// stale ones).
	MaxCallers int
	// ProcRoot is the procfs to read ("" means /proc). Tests point it at
	// fixture trees.
	ProcRoot string
	// ELFCache memoises the ELF probes behind symbolisation; nil means the
	// process-wide cache shared with preflight. It is preflight's type, so
	// a daemon can share one cache between inspection and hang reports.
	ELFCache *preflight.ELFCache
}

// HangReport is a hang report.
type HangReport struct {
	PID   int    `json:"pid"`
	Name  string `json:"name"`
	State State  `json:"verdict"`
	// CPUTicks is the process's user+system time over SampleMillis, in
	// clock ticks (USER_HZ, normally 100 per second per busy CPU).
	CPUTicks     uint64       `json:"cpu_ticks"`
	SampleMillis int64        `json:"sample_ms"`
	Threads      []Thread     `json:"threads"`
	Futexes      []FutexGroup `json:"futexes,omitempty"`
	Conclusion   string       `json:"conclusion"`
	Pattern      string       `json:"pattern,omitempty"`
	// Culprits are the threads the conclusion names (the lock cycle, or
	// the thread stuck in an agent), to be read first.
	Culprits []int         `json:"culprits,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	Summary  []SummaryLine `json:"summary"`
}

// SummaryLine is one line of the plain-language overview.
type SummaryLine struct {
	Count int    `json:"count"`
	What  string `json:"what"`
}

// Thread is one thread's state as seen from outside.
type Thread struct {
	TID      int    `json:"tid"`
	Name     string `json:"name"`
	State    string `json:"state"`
	Wchan    string `json:"wchan,omitempty"`
	CPUTicks uint64 `json:"cpu_ticks"`
	// Syscall is the blocked system call's name (or number), empty when
	// the thread is running in user space.
	Syscall string    `json:"syscall,omitempty"`
	Args    [6]uint64 `json:"args"`
	PC      uint64    `json:"pc,omitempty"`
	// Where is the PC symbolised: "libc.so.6 (futex_wait+0x2c)".
	Where string `json:"where,omitempty"`
	// Callers are the thread's callers, innermost first, unwound with
	// each library's call frame information from the stack pointer and
	// program counter the kernel reports: each is a frame the walk can
	// vouch for. UnwindStop says why the walk ended before the thread's
	// first frame (JIT code, a frame that needs a register no callee
	// saved, a library without tables); empty when it reached it.
	Callers    []string `json:"callers,omitempty"`
	UnwindStop string   `json:"unwind_stop,omitempty"`
	// Scanned are the words above the stack pointer that point into
	// code: HEURISTIC (stale return addresses and function pointers
	// appear, frames are missed). The patterns are recognised from them
	// and the callers together; they are never shown as a stack.
	Scanned []string `json:"scanned,omitempty"`
	// FutexAddr is set for threads blocked in futex(2).
	FutexAddr uint64 `json:"futex_addr,omitempty"`
	// Notable marks threads worth reading first: the attach listener,
	// threads inside an agent, the loader, the unwinder or an allocator,
	// and threads using CPU.
	Notable bool `json:"notable,omitempty"`
}

// notableMarks are the code locations that make a thread worth showing.
var notableMarks = []string{"Agent_On", "dl_iterate_phdr", "libunwind", "_Unwind", "tcmalloc", "jemalloc", "libasyncProfiler", "libjavaProfiler"}

// FutexGroup is a set of threads waiting on one futex: one lock.
type FutexGroup struct {
	Addr    uint64   `json:"addr"`
	Where   string   `json:"where"`
	Threads []int    `json:"threads"`
	Names   []string `json:"names"`
}

// Diagnose samples the process pid and explains what its threads do.
func Diagnose(ctx context.Context, pid int, opts Options) (*HangReport, error) {
	opts.defaults()
	p := proc.NewFS(opts.ProcRoot).Proc(pid)
	st, err := p.Status()
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	before, err := taskTicks(p)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	select {
	case <-time.After(opts.Sample):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return analyse(p, st.Name, before, start, opts)
}

func (o *Options) defaults() {
	if o.Sample <= 0 {
		o.Sample = time.Second
	}
	if o.StackScan <= 0 {
		o.StackScan = 32 << 10
	}
	if o.MaxCallers <= 0 {
		o.MaxCallers = 64
	}
}

// analyse reads every thread now and judges the process, with CPU use
// measured from before (taken at start).
func analyse(p proc.Proc, name string, before map[int]taskSample, start time.Time, opts Options) (*HangReport, error) {
	after, err := taskTicks(p)
	if err != nil {
		return nil, err
	}
	r := &HangReport{PID: p.PID, Name: printable.Line(name), SampleMillis: time.Since(start).Milliseconds()}
	sym := newSymbolizer(p, archOf(p.Path("exe")), elfx.Unwrap(opts.ELFCache))
	defer sym.close()
	tids := make([]int, 0, len(after))
	for tid := range after {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	for _, tid := range tids {
		t := readThread(p, tid, sym, opts)
		t.CPUTicks = after[tid].ticks - before[tid].ticks
		if _, existed := before[tid]; !existed {
			t.CPUTicks = after[tid].ticks
		}
		r.CPUTicks += t.CPUTicks
		r.Threads = append(r.Threads, t)
	}
	for i := range r.Threads {
		t := &r.Threads[i]
		t.Notable = t.Name == "Attach Listener" || t.CPUTicks > 0 || t.State == "running"
		for _, m := range notableMarks {
			t.Notable = t.Notable || t.vouchedMentions(m)
		}
	}
	r.groupFutexes(sym)
	r.judge()
	return r, nil
}

type taskSample struct{ ticks uint64 }

func taskTicks(p proc.Proc) (map[int]taskSample, error) {
	entries, err := os.ReadDir(p.Path("task"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", p.PID, err)
	}
	out := map[int]taskSample{}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := p.Task(tid).Stat()
		if err != nil {
			continue // exited between readdir and read
		}
		out[tid] = taskSample{ticks: st.UTime + st.STime}
	}
	return out, nil
}

func readThread(p proc.Proc, tid int, sym *symbolizer, opts Options) Thread {
	task := p.Task(tid)
	t := Thread{TID: tid}
	// A thread names itself (prctl, pthread_setname_np, a Java thread's
	// name): the report keeps it printable, as every text in it that
	// comes from the target — wchan, and the paths and symbols describe
	// gives — since the report is shown and logged.
	if b, err := os.ReadFile(task.Path("comm")); err == nil {
		t.Name = printable.Line(strings.TrimSpace(string(b)))
	}
	if st, err := task.Stat(); err == nil {
		t.State = proc.StateName(st.State)
	}
	if b, err := os.ReadFile(task.Path("wchan")); err == nil && string(b) != "0" {
		t.Wchan = printable.Line(string(b))
	}
	sc, err := task.Syscall()
	if err != nil {
		return t
	}
	if sc.Running {
		return t
	}
	t.PC = sc.PC
	t.Where = sym.describe(sc.PC)
	if sc.Number >= 0 {
		t.Syscall = sym.arch.syscallName(sc.Number)
		t.Args = sc.Args
		if sc.Number == sym.arch.futex {
			t.FutexAddr = sc.Args[0]
		}
	}
	callers, stop := sym.unwind(sc.PC, sc.SP)
	for _, ra := range callers {
		t.Callers = append(t.Callers, sym.describe(ra))
	}
	t.UnwindStop = printable.Line(stop)
	t.Scanned = sym.scanStack(sc.SP, opts.StackScan, opts.MaxCallers)
	return t
}

func itoa(n int) string { return strconv.Itoa(n) }

func (r *HangReport) groupFutexes(sym *symbolizer) {
	byAddr := map[uint64]*FutexGroup{}
	for _, t := range r.Threads {
		if t.FutexAddr == 0 {
			continue
		}
		g := byAddr[t.FutexAddr]
		if g == nil {
			g = &FutexGroup{Addr: t.FutexAddr, Where: sym.describeData(t.FutexAddr)}
			byAddr[t.FutexAddr] = g
		}
		g.Threads = append(g.Threads, t.TID)
		g.Names = append(g.Names, t.Name)
	}
	for _, g := range byAddr {
		r.Futexes = append(r.Futexes, *g)
	}
	sort.Slice(r.Futexes, func(a, b int) bool {
		if len(r.Futexes[a].Threads) != len(r.Futexes[b].Threads) {
			return len(r.Futexes[a].Threads) > len(r.Futexes[b].Threads)
		}
		return r.Futexes[a].Addr < r.Futexes[b].Addr
	})
}

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

// symbolizer maps addresses to "library (symbol+off)" using the mapped
// ELF files' dynamic symbols.
type symbolizer struct {
	tables map[string]*ehTable
	p      proc.Proc
	maps   []proc.Mapping
	bases  map[string]uint64
	infos  map[string]*elfx.Info
	failed map[string]bool
	mem    *os.File
	arch   *arch
	cache  *elfx.Cache
}

func newSymbolizer(p proc.Proc, a *arch, cache *elfx.Cache) *symbolizer {
	s := &symbolizer{p: p, arch: a, cache: cache, bases: map[string]uint64{}, infos: map[string]*elfx.Info{}, failed: map[string]bool{}, tables: map[string]*ehTable{}}
	_ = p.WalkMaps(nil, func(m *proc.Mapping) error {
		if m.IsFile() {
			if _, ok := s.bases[m.Path]; !ok && m.Offset == 0 {
				s.bases[m.Path] = m.Start
			}
		}
		s.maps = append(s.maps, *m)
		return nil
	})
	s.mem, _ = os.Open(p.Path("mem"))
	return s
}

// close releases /proc/<pid>/mem: a daemon makes many reports.
func (s *symbolizer) close() {
	if s.mem != nil {
		s.mem.Close()
	}
	for _, t := range s.tables {
		t.close()
	}
}

func (s *symbolizer) mapping(addr uint64) *proc.Mapping {
	i := sort.Search(len(s.maps), func(k int) bool { return s.maps[k].End > addr })
	if i < len(s.maps) && s.maps[i].Start <= addr {
		return &s.maps[i]
	}
	return nil
}

func (s *symbolizer) info(m *proc.Mapping) *elfx.Info {
	if i, ok := s.infos[m.Path]; ok || s.failed[m.Path] {
		return i
	}
	f, _, err := elfx.OpenMapped(elfx.MappedFile{ProcDir: s.p.Path(), Start: m.Start, End: m.End, Path: m.Path, DevMajor: m.DevMajor, DevMinor: m.DevMinor, Inode: m.Inode})
	if err != nil {
		s.failed[m.Path] = true
		return nil
	}
	defer f.Close()
	info, _, err := s.cache.Probe(f, elfx.ProbeOptions{})
	if err != nil {
		s.failed[m.Path] = true
		return nil
	}
	s.infos[m.Path] = info
	return info
}

// describe names a code address, in printable text: the target's user
// names the files it maps and the symbols in them.
func (s *symbolizer) describe(addr uint64) string {
	m := s.mapping(addr)
	if m == nil {
		return fmt.Sprintf("%#x (unmapped)", addr)
	}
	if !m.IsFile() {
		name := m.Path
		if name == "" {
			name = "anonymous memory (JIT code?)"
		}
		return fmt.Sprintf("%#x in %s", addr, printable.Line(name))
	}
	lib := printable.Line(filepath.Base(m.Path))
	base := s.bases[m.Path]
	if info := s.info(m); info != nil {
		rel := addr - base
		if info.Type == "ET_EXEC" {
			rel = addr
		}
		if sym, ok := info.SymbolAt(rel); ok {
			return fmt.Sprintf("%s (%s+%#x)", lib, printable.Line(sym.Name), rel-sym.Value)
		}
	}
	return fmt.Sprintf("%s+%#x", lib, addr-base)
}

// describeData names a data address, such as a lock.
func (s *symbolizer) describeData(addr uint64) string {
	m := s.mapping(addr)
	if m == nil {
		return "unmapped"
	}
	if m.IsFile() {
		return s.describe(addr)
	}
	if m.Path != "" {
		return printable.Line(m.Path)
	}
	// Anonymous: a heap or a thread's data. Say which library's writable
	// data precedes it, if adjacent (.bss is often mapped anonymous).
	for i := range s.maps {
		if &s.maps[i] == m && i > 0 && s.maps[i-1].IsFile() && s.maps[i-1].End == m.Start {
			return "the .bss of " + printable.Line(filepath.Base(s.maps[i-1].Path))
		}
	}
	return "anonymous memory"
}

// scanStack reads the top of a stack and keeps words that point into
// executable file mappings: probable return addresses.
func (s *symbolizer) scanStack(sp uint64, size, maxCallers int) []string {
	if s.mem == nil || sp == 0 {
		return nil
	}
	buf := make([]byte, size)
	n, err := s.mem.ReadAt(buf, int64(sp))
	if n == 0 && err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	w := s.arch.ptrSize
	for off := 0; off+w <= n && len(out) < maxCallers; off += w {
		v := s.arch.word(buf[off:])
		m := s.mapping(v)
		if m == nil || !m.Executable() || !m.IsFile() {
			continue
		}
		d := s.describe(v)
		// A word equal to a symbol's start is a function pointer, not a
		// return address (which points after a call instruction).
		if strings.HasSuffix(d, "+0x0)") {
			continue
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
