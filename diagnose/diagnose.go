package diagnose

import (
	"context"
	"fmt"
	"os"
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
