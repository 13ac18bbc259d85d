package fdtransfer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Policy is what the operator asked the profiler for: the server opens
// only that (docs/fdtransfer.md, "What the server allows"). The server
// is root acting for a target that may not open perf events itself, so
// a request is judged against the operator's words, never taken as the
// agent's own account of what it needs.
type Policy struct {
	// Event is async-profiler's -e as the operator gave it: "cpu" (also
	// for ""), a predefined perf event (cycles, cache-misses, ...), rNNN,
	// pmu/descriptor/, mem:ADDR or a function name (a breakpoint),
	// trace:ID or a tracepoint (sched:sched_switch), kprobe:, kretprobe:,
	// uprobe:, uretprobe:. An event that is not a perf event (itimer,
	// ctimer, wall, alloc, lock, a Java method) opens nothing here.
	Event string
	// Kernel serves kernel samples and kernel call stacks, and kallsyms
	// with real addresses. Off, every event is opened with
	// exclude_kernel and exclude_callchain_kernel set and kallsyms is
	// refused: kernel addresses (the KASLR offset) and kernel stacks are
	// what perf_event_paranoid ≥ 2 withholds from the target on purpose.
	// A tracepoint or probe the operator names is sampled in the kernel
	// by nature: it may count there, but its call stacks stay user-only
	// unless Kernel is set.
	Kernel bool
	// LBR allows the branch-stack sampling async-profiler before 4.0 set
	// for --cstack lbr.
	LBR bool
}

// OpensPerfEvents reports whether the policy's event is a perf event at
// all: itimer, wall, alloc or a Java method make a server that serves
// nothing (a caller says so rather than run one for nothing).
func (p Policy) OpensPerfEvents() (bool, error) {
	r, err := ruleFor(p.Event)
	return err == nil && !r.none, err
}

// The perf_event_attr fields the policy reads, by byte offset (the
// layout of linux/perf_event.h, fixed since PERF_ATTR_SIZE_VER0 for the
// first 64 bytes; later fields only grow the struct).
const (
	attrType         = 0
	attrConfig       = 8
	attrSampleType   = 24
	attrReadFormat   = 32
	attrFlags        = 40
	attrBPType       = 52
	attrConfig1      = 56
	attrConfig2      = 64
	attrBranchSample = 72
	attrRegsUser     = 80
	attrTail         = 88 // sample_stack_user onwards: async-profiler sends zeros
)

// Sample and read-format bits (perf_event.h).
const (
	sampleCallchain   = 1 << 5
	sampleCPU         = 1 << 7
	sampleBranchStack = 1 << 11
	sampleRegsUser    = 1 << 12

	formatTotalTimeEnabled = 1 << 0
	formatTotalTimeRunning = 1 << 1

	branchUser      = 1 << 0
	branchCallStack = 1 << 11
)

// The flag bits of perf_event_attr's bit field (its u64 at byte 40).
const (
	flagDisabled               = 1 << 0
	flagExcludeUser            = 1 << 4
	flagExcludeKernel          = 1 << 5
	flagExcludeHV              = 1 << 6
	flagExcludeIdle            = 1 << 7
	flagPreciseIP              = 3 << 15
	flagExcludeCallchainKernel = 1 << 21
	flagExcludeCallchainUser   = 1 << 22
)

// What async-profiler sets, by version (src/perfEvents_linux.cpp,
// PerfEvents::createForThread):
//
//	version  sample_type                          read_format            flags
//	2.x–3.x  CALLCHAIN (+BRANCH_STACK|REGS_USER   0                      disabled, precise_ip 2 (software),
//	         for --cstack lbr)                                           exclude_kernel (--all-user),
//	                                                                     exclude_user (--all-kernel, 2.x)
//	4.0–4.5  CALLCHAIN (+CPU for --record-cpu)    TOTAL_TIME_ENABLED|    disabled, precise_ip 2 (software),
//	                                              TOTAL_TIME_RUNNING     exclude_kernel (--all-user),
//	                                                                     exclude_callchain_kernel (no kernel
//	                                                                     stacks), exclude_callchain_user
//	                                                                     (--cstack fp/dwarf/vm)
//
// Never: RAW (a tracepoint's raw record names other processes: a
// sched_switch's prev/next), PHYS_ADDR, DATA_SRC, REGS_INTR, STACK_USER,
// AUX, inherit, enable_on_exec, comm/mmap/task/context-switch side-band
// records, sigtrap.
const (
	allowedSample = sampleCallchain | sampleCPU
	allowedFormat = formatTotalTimeEnabled | formatTotalTimeRunning
	allowedFlags  = flagDisabled | flagExcludeUser | flagExcludeKernel | flagExcludeHV | flagExcludeIdle |
		flagPreciseIP | flagExcludeCallchainKernel | flagExcludeCallchainUser
)

// eventRule is the event a policy opens: its type and config, and
// which of config1/config2 the event itself sets.
type eventRule struct {
	none       bool // not a perf event: nothing is opened
	typ        uint32
	config     uint64
	anyConfig  bool // a PMU descriptor: its bits are the PMU's
	anyExtra   bool // config1/config2/bp_type are the event's (breakpoint, PMU)
	inKernel   bool // a tracepoint or probe: it fires in kernel context
	probe      string
	probeExtra uint64 // config2: the probe's offset
}

// predefined are async-profiler's named perf events (AVAILABLE_EVENTS
// up to IDX_PREDEFINED) with their type and config; 4.x renamed
// "branches" to "branch-instructions" and "cpu" to "cpu-clock" (both
// spellings are taken). A slice of constants is laid out by the linker;
// a map would be built at the start of every command that links this
// package, and only an --fdtransfer profile reads it.
var predefined = []struct {
	name string
	tc   [2]uint64
}{
	{"cpu", [2]uint64{unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CPU_CLOCK}},
	{"cpu-clock", [2]uint64{unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CPU_CLOCK}},
	{"page-faults", [2]uint64{unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_PAGE_FAULTS}},
	{"context-switches", [2]uint64{unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CONTEXT_SWITCHES}},
	{"cycles", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_CPU_CYCLES}},
	{"instructions", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_INSTRUCTIONS}},
	{"cache-references", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_CACHE_REFERENCES}},
	{"cache-misses", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_CACHE_MISSES}},
	{"branches", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_BRANCH_INSTRUCTIONS}},
	{"branch-instructions", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_BRANCH_INSTRUCTIONS}},
	{"branch-misses", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_BRANCH_MISSES}},
	{"bus-cycles", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_BUS_CYCLES}},
	{"ref-cycles", [2]uint64{unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_REF_CPU_CYCLES}},
	{"L1-dcache-load-misses", [2]uint64{unix.PERF_TYPE_HW_CACHE, loadMiss(unix.PERF_COUNT_HW_CACHE_L1D)}},
	{"LLC-load-misses", [2]uint64{unix.PERF_TYPE_HW_CACHE, loadMiss(unix.PERF_COUNT_HW_CACHE_LL)}},
	{"dTLB-load-misses", [2]uint64{unix.PERF_TYPE_HW_CACHE, loadMiss(unix.PERF_COUNT_HW_CACHE_DTLB)}},
}

func loadMiss(cache uint64) uint64 {
	return cache | unix.PERF_COUNT_HW_CACHE_OP_READ<<8 | unix.PERF_COUNT_HW_CACHE_RESULT_MISS<<16
}

// notPerf reports whether async-profiler samples event without perf
// events.
func notPerf(event string) bool {
	switch event {
	case "itimer", "ctimer", "wall", "alloc", "lock", "nativemem", "nativelock", "mmap",
		"none": // no event: allocation, lock or wall profiling only
		return true
	}
	return false
}

// ruleFor reads the operator's event as async-profiler 4.5 does
// (PerfEventType::forName), in the same order.
func ruleFor(event string) (eventRule, error) {
	if event == "" {
		event = "cpu"
	}
	if notPerf(event) || strings.Contains(event, ".") && !strings.HasPrefix(event, "uprobe:") && !strings.HasPrefix(event, "uretprobe:") && !strings.Contains(event, "/") {
		// A Java method (java.util.HashMap.resize) is instrumented in
		// the JVM, not a perf event.
		return eventRule{none: true}, nil
	}
	for _, p := range predefined {
		if p.name == event {
			return eventRule{typ: uint32(p.tc[0]), config: p.tc[1]}, nil
		}
	}
	if strings.HasPrefix(event, "mem:") {
		return eventRule{typ: unix.PERF_TYPE_BREAKPOINT, anyExtra: true}, nil
	}
	if id, ok := strings.CutPrefix(event, "trace:"); ok {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil || n == 0 {
			return eventRule{}, fmt.Errorf("fdtransfer: event %q: not a tracepoint id", event)
		}
		return eventRule{typ: unix.PERF_TYPE_TRACEPOINT, config: n, inKernel: true}, nil
	}
	for _, p := range []struct {
		prefix, pmu string
		ret         uint64
	}{{"kprobe:", "kprobe", 0}, {"uprobe:", "uprobe", 0}, {"kretprobe:", "kprobe", 1}, {"uretprobe:", "uprobe", 1}} {
		name, ok := strings.CutPrefix(event, p.prefix)
		if !ok {
			continue
		}
		typ, err := pmuType(p.pmu)
		if err != nil {
			return eventRule{}, err
		}
		r := eventRule{typ: typ, config: p.ret, inKernel: true, probe: name}
		if i := strings.LastIndexByte(name, '+'); i >= 0 {
			off, err := strconv.ParseInt(name[i+1:], 0, 64)
			if err != nil {
				return eventRule{}, fmt.Errorf("fdtransfer: event %q: offset %q", event, name[i+1:])
			}
			r.probe, r.probeExtra = name[:i], uint64(off)
		}
		if r.probe == "" || len(r.probe) >= maxProbeName {
			return eventRule{}, fmt.Errorf("fdtransfer: event %q: no probe name", event)
		}
		return r, nil
	}
	if hex, ok := strings.CutPrefix(event, "r"); ok && hex != "" && hex[0] >= '0' {
		if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
			return eventRule{typ: unix.PERF_TYPE_RAW, config: n}, nil
		}
	}
	if i := strings.IndexByte(event, '/'); i > 0 && len(event) > i+1 && strings.HasSuffix(event, "/") {
		typ, err := pmuType(event[:i])
		if err != nil {
			return eventRule{}, err
		}
		return eventRule{typ: typ, anyConfig: true, anyExtra: true}, nil
	}
	if i := strings.IndexByte(event, ':'); i >= 0 && !strings.HasPrefix(event[i:], "::") {
		id, err := tracepointID(event[:i], event[i+1:])
		if err != nil {
			return eventRule{}, err
		}
		return eventRule{typ: unix.PERF_TYPE_TRACEPOINT, config: id, inKernel: true}, nil
	}
	// A native function: an execution breakpoint at its address in the
	// target (the agent resolves it; it is the target's own memory).
	return eventRule{typ: unix.PERF_TYPE_BREAKPOINT, anyExtra: true}, nil
}

// pmuType is a dynamic PMU's event type, as the kernel numbers it.
func pmuType(name string) (uint32, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return 0, fmt.Errorf("fdtransfer: PMU %q", name)
	}
	b, err := os.ReadFile("/sys/bus/event_source/devices/" + name + "/type")
	if err != nil {
		return 0, fmt.Errorf("fdtransfer: PMU %s: %w", name, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("fdtransfer: PMU %s: type %q", name, b)
	}
	return uint32(n), nil
}

// tracepointID reads a tracepoint's id from tracefs, where the agent
// reads it (tracing, then debug/tracing).
func tracepointID(system, name string) (uint64, error) {
	for _, s := range []string{system, name} {
		if s == "" || strings.ContainsAny(s, "/.") {
			return 0, fmt.Errorf("fdtransfer: tracepoint %s:%s", system, name)
		}
	}
	var errs []error
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(dir + "/events/" + system + "/" + name + "/id")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("fdtransfer: tracepoint %s:%s: %w", system, name, errors.Join(errs...))
}

// judge checks a parsed request against the policy and sets what the
// policy imposes (exclude_kernel, exclude_callchain_kernel). A non-zero
// errno is the answer: EACCES for what the operator did not ask for,
// EINVAL for what async-profiler never sends.
func (p *compiledPolicy) judge(r *perfRequest) unix.Errno {
	a := attrBytes(r.attr)
	u64 := func(off int) uint64 { return order.Uint64(a[off:]) }
	if p.rule.none {
		return unix.EACCES
	}
	if order.Uint32(a[attrType:]) != p.rule.typ {
		return unix.EACCES
	}
	if !p.rule.anyConfig && u64(attrConfig) != p.rule.config {
		return unix.EACCES
	}
	sample := uint64(allowedSample)
	if p.LBR {
		sample |= sampleBranchStack | sampleRegsUser
	}
	if u64(attrSampleType)&^sample != 0 || u64(attrReadFormat)&^allowedFormat != 0 {
		return unix.EACCES
	}
	flags := u64(attrFlags)
	if flags&^allowedFlags != 0 {
		return unix.EACCES
	}
	switch {
	case p.LBR && u64(attrSampleType)&sampleBranchStack != 0:
		if u64(attrBranchSample)&^(branchUser|branchCallStack) != 0 || popcount(u64(attrRegsUser)) > 1 {
			return unix.EACCES
		}
	case u64(attrBranchSample) != 0 || u64(attrRegsUser) != 0:
		return unix.EACCES
	}
	for _, b := range a[attrTail:] {
		if b != 0 {
			return unix.EACCES
		}
	}
	if !p.rule.anyExtra && p.rule.probe == "" && (u64(attrConfig1) != 0 || u64(attrConfig2) != 0 || order.Uint32(a[attrBPType:]) != 0) {
		return unix.EACCES
	}
	if p.rule.probe != "" {
		if string(r.probe) != p.rule.probe+"\x00" || u64(attrConfig2) != p.rule.probeExtra {
			return unix.EACCES
		}
	}
	if !p.Kernel {
		if flags&flagExcludeUser != 0 {
			return unix.EACCES // kernel only
		}
		flags |= flagExcludeCallchainKernel
		if !p.rule.inKernel {
			flags |= flagExcludeKernel
		}
		order.PutUint64(a[attrFlags:], flags)
	}
	return 0
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// compiledPolicy is a Policy with its event read once, at Listen.
type compiledPolicy struct {
	Policy
	rule eventRule
}

func compile(p Policy) (*compiledPolicy, error) {
	r, err := ruleFor(p.Event)
	if err != nil {
		return nil, err
	}
	return &compiledPolicy{Policy: p, rule: r}, nil
}
