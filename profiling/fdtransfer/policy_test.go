package fdtransfer

import (
	"encoding/binary"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// attrWith is cpuClock with one u64 field changed.
func attrWith(off int, v uint64) []byte {
	a := cpuClock()
	binary.NativeEndian.PutUint64(a[off:], v)
	return a
}

func flagsOf(r perfRequest) uint64 { return order.Uint64(attrBytes(r.attr)[attrFlags:]) }

// TestPolicyJudgesAgainstTheOperator: a request is served only if it is
// the event the operator named, with the sample bits async-profiler sets
// for it; kernel samples and call chains only when asked for.
func TestPolicyJudgesAgainstTheOperator(t *testing.T) {
	raw := attrWith(attrSampleType, sampleCallchain|1<<10) // PERF_SAMPLE_RAW
	phys := attrWith(attrSampleType, sampleCallchain|1<<19)
	branch := attrWith(attrSampleType, sampleCallchain|sampleBranchStack)
	inherit := attrWith(attrFlags, flagDisabled|1<<1)
	sideband := attrWith(attrFlags, flagDisabled|1<<26) // context_switch records
	kernelOnly := attrWith(attrFlags, flagDisabled|flagExcludeUser)
	taskclock := attrWith(attrConfig, unix.PERF_COUNT_SW_TASK_CLOCK)
	stackUser := cpuClock()
	binary.NativeEndian.PutUint32(stackUser[attrTail:], 8192)
	withConfig1 := attrWith(attrConfig1, 0xdead)
	recordCPU := attrWith(attrSampleType, sampleCallchain|sampleCPU)
	lbr := attrWith(attrSampleType, sampleCallchain|sampleBranchStack|sampleRegsUser)
	binary.NativeEndian.PutUint64(lbr[attrBranchSample:], branchUser|branchCallStack)
	binary.NativeEndian.PutUint64(lbr[attrRegsUser:], 1<<8)
	captured, err := os.ReadFile("testdata/asprof45-perf-request.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		policy Policy
		req    []byte
		want   unix.Errno
	}{
		{"async-profiler 4.5's own request", Policy{Event: "cpu"}, captured, 0},
		{"cpu-clock", Policy{Event: "cpu"}, perfRequestBytes(1, -1, cpuClock(), ""), 0},
		{"--record-cpu", Policy{Event: "cpu"}, perfRequestBytes(1, -1, recordCPU, ""), 0},
		{"another event than -e", Policy{Event: "cpu"}, perfRequestBytes(1, -1, taskclock, ""), unix.EACCES},
		{"PERF_SAMPLE_RAW", Policy{Event: "cpu", Kernel: true}, perfRequestBytes(1, -1, raw, ""), unix.EACCES},
		{"PERF_SAMPLE_PHYS_ADDR", Policy{Event: "cpu", Kernel: true}, perfRequestBytes(1, -1, phys, ""), unix.EACCES},
		{"branch stack without lbr", Policy{Event: "cpu"}, perfRequestBytes(1, -1, branch, ""), unix.EACCES},
		{"lbr as async-profiler 3.0 asks", Policy{Event: "cpu", LBR: true}, perfRequestBytes(1, -1, lbr, ""), 0},
		{"inherit", Policy{Event: "cpu"}, perfRequestBytes(1, -1, inherit, ""), unix.EACCES},
		{"context-switch records", Policy{Event: "cpu"}, perfRequestBytes(1, -1, sideband, ""), unix.EACCES},
		{"user stack dump", Policy{Event: "cpu"}, perfRequestBytes(1, -1, stackUser, ""), unix.EACCES},
		{"config1 on cpu-clock", Policy{Event: "cpu"}, perfRequestBytes(1, -1, withConfig1, ""), unix.EACCES},
		{"kernel only, kernel not asked", Policy{Event: "cpu"}, perfRequestBytes(1, -1, kernelOnly, ""), unix.EACCES},
		{"kernel only, kernel asked", Policy{Event: "cpu", Kernel: true}, perfRequestBytes(1, -1, kernelOnly, ""), 0},
		{"itimer opens nothing", Policy{Event: "itimer"}, perfRequestBytes(1, -1, cpuClock(), ""), unix.EACCES},
		{"alloc opens nothing", Policy{Event: "none"}, perfRequestBytes(1, -1, cpuClock(), ""), unix.EACCES},
		{"a Java method opens nothing", Policy{Event: "java.util.HashMap.resize"}, perfRequestBytes(1, -1, cpuClock(), ""), unix.EACCES},
		{"rNNN", Policy{Event: "r4d2"}, perfRequestBytes(1, -1, rawEvent(0x4d2), ""), 0},
		{"another raw config", Policy{Event: "r4d2"}, perfRequestBytes(1, -1, rawEvent(0x4d3), ""), unix.EACCES},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := compile(c.policy)
			if err != nil {
				t.Fatal(err)
			}
			r, errno := parsePerfRequest(c.req)
			if errno != 0 {
				t.Fatalf("parse: %v", errno)
			}
			if got := p.judge(&r); got != c.want {
				t.Fatalf("errno %v, want %v", got, c.want)
			}
			if c.want != 0 {
				return
			}
			f := flagsOf(r)
			switch {
			case !c.policy.Kernel && f&flagExcludeKernel == 0:
				t.Error("served with kernel samples that were not asked for")
			case !c.policy.Kernel && f&flagExcludeCallchainKernel == 0:
				t.Error("served with kernel call chains that were not asked for")
			}
		})
	}
}

func rawEvent(config uint64) []byte {
	a := attrWith(attrConfig, config)
	binary.NativeEndian.PutUint32(a[attrType:], unix.PERF_TYPE_RAW)
	binary.NativeEndian.PutUint64(a[attrFlags:], flagDisabled)
	return a
}

// TestPolicyEvents: the operator's -e read as async-profiler 4.5 reads
// it (PerfEventType::forName).
func TestPolicyEvents(t *testing.T) {
	for event, want := range map[string]eventRule{
		"":                    {typ: unix.PERF_TYPE_SOFTWARE, config: unix.PERF_COUNT_SW_CPU_CLOCK},
		"cpu":                 {typ: unix.PERF_TYPE_SOFTWARE, config: unix.PERF_COUNT_SW_CPU_CLOCK},
		"cycles":              {typ: unix.PERF_TYPE_HARDWARE, config: unix.PERF_COUNT_HW_CPU_CYCLES},
		"branch-instructions": {typ: unix.PERF_TYPE_HARDWARE, config: unix.PERF_COUNT_HW_BRANCH_INSTRUCTIONS},
		"LLC-load-misses":     {typ: unix.PERF_TYPE_HW_CACHE, config: loadMiss(unix.PERF_COUNT_HW_CACHE_LL)},
		"trace:42":            {typ: unix.PERF_TYPE_TRACEPOINT, config: 42, inKernel: true},
		"mem:0x1234:w":        {typ: unix.PERF_TYPE_BREAKPOINT, anyExtra: true},
		"malloc":              {typ: unix.PERF_TYPE_BREAKPOINT, anyExtra: true},
		"wall":                {none: true},
		"ctimer":              {none: true},
	} {
		got, err := ruleFor(event)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", event, got, err, want)
		}
	}
	if _, err := ruleFor("sched:no_such_tracepoint_here"); err == nil {
		t.Error("an unknown tracepoint was taken")
	}
	if _, err := ruleFor("kprobe:"); err == nil {
		t.Error("a kprobe without a function was taken")
	}
}
