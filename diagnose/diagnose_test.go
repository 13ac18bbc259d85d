package diagnose

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// incidentReport is a hang as sampled from a real tcmalloc deadlock,
// reduced to the threads that matter.
func incidentReport() *HangReport {
	const loaderLock, unwindLock = 0x7f0000001000, 0x7f0000002000
	r := &HangReport{PID: 1, Name: "java", CPUTicks: 0, SampleMillis: 1000, Threads: []Thread{
		{TID: 10, Name: "Attach Listener", State: "sleeping", Syscall: "futex", FutexAddr: unwindLock,
			Where: "libc.so.6+0x8612b", Callers: []string{"libunwind.so.8.0.1 (_ULx86_64_step+0x37)", "libtcmalloc.so.4.5.10+0x35c7b", "liblookalike_affected.so+0x1234", "libc.so.6 (dl_iterate_phdr+0x1a2)"}},
		{TID: 11, Name: "churn-0", State: "sleeping", Syscall: "futex", FutexAddr: loaderLock,
			Callers: []string{"libc.so.6 (dl_iterate_phdr+0x3b)", "libunwind.so.8.0.1+0xacd0", "libtcmalloc.so.4.5.10+0x35c53"}},
		{TID: 12, Name: "churn-1", State: "sleeping", Syscall: "futex", FutexAddr: unwindLock, Callers: []string{"libunwind.so.8.0.1+0xa235"}},
		{TID: 13, Name: "churn-2", State: "sleeping", Syscall: "futex", FutexAddr: unwindLock, Callers: []string{"libunwind.so.8.0.1+0xa235"}},
	}}
	r.Futexes = []FutexGroup{
		{Addr: unwindLock, Where: "the .bss of libunwind.so.8.0.1", Threads: []int{10, 12, 13}},
		{Addr: loaderLock, Where: "ld-linux-x86-64.so.2 (_rtld_global+0xa30)", Threads: []int{11}},
	}
	return r
}

func TestRecognisesTheIncident(t *testing.T) {
	r := incidentReport()
	r.judge()
	if r.State != Hung || r.Pattern != "loader-lock-allocator-deadlock" {
		t.Fatalf("verdict %s pattern %q: %s", r.State, r.Pattern, r.Conclusion)
	}
	for _, want := range []string{"thread 10 (Attach Listener)", "libunwind's lock", "11 (churn-0)", "#1151"} {
		if !strings.Contains(r.Conclusion, want) {
			t.Errorf("conclusion lacks %q: %s", want, r.Conclusion)
		}
	}
}

// TestRecognisesTheIncidentWithoutTheLoaderFrame: a real sample where the
// stack scan did not reach dl_iterate_phdr on the attach listener's stack
// (stale words came first); the lock cycle still identifies it.
func TestRecognisesTheIncidentWithoutTheLoaderFrame(t *testing.T) {
	r := incidentReport()
	r.Threads[0].Callers = []string{"libunwind.so.8.0.1 (_ULx86_64_step+0x37)", "libtcmalloc.so.4.5.10+0x35c7b", "liblookalike_affected.so+0x1139", "libjvm.so+0xea38c5"}
	r.judge()
	if r.Pattern != "loader-lock-allocator-deadlock" || !strings.Contains(r.Conclusion, "thread 10 (Attach Listener)") {
		t.Fatalf("pattern %q: %s", r.Pattern, r.Conclusion)
	}
	// Without a loader-lock waiter holding the unwinder, it is not the cycle.
	r = incidentReport()
	r.Threads[1].Callers = []string{"libc.so.6 (dl_iterate_phdr+0x3b)", "libjvm.so+0x1"}
	r.judge()
	if r.Pattern == "loader-lock-allocator-deadlock" {
		t.Fatalf("recognised a cycle without its second half: %s", r.Conclusion)
	}
}

func TestBusyIsNotHung(t *testing.T) {
	r := incidentReport()
	r.CPUTicks = 150 // the same stacks, but the process makes progress
	r.judge()
	if r.State != Busy || r.Pattern == "loader-lock-allocator-deadlock" {
		t.Fatalf("verdict %s pattern %q", r.State, r.Pattern)
	}
}

func TestIdleIsNotHung(t *testing.T) {
	// Every thread waits on its own condition: an idle process.
	r := &HangReport{SampleMillis: 1000, Threads: []Thread{
		{TID: 1, Name: "main", Syscall: "futex", FutexAddr: 0x1000},
		{TID: 2, Name: "GC", Syscall: "futex", FutexAddr: 0x2000},
		{TID: 3, Name: "VM Thread", Syscall: "futex", FutexAddr: 0x3000},
	}}
	r.Futexes = []FutexGroup{{Addr: 0x1000, Where: "[heap]", Threads: []int{1}}, {Addr: 0x2000, Where: "[heap]", Threads: []int{2}}, {Addr: 0x3000, Where: "[heap]", Threads: []int{3}}}
	r.judge()
	if r.State != Idle {
		t.Fatalf("verdict %s: %s", r.State, r.Conclusion)
	}
}

// TestStarvedThreadsAreBusy: on a loaded machine two runnable threads got
// 14 ticks in 721 ms (under the 20/s of a busy process): wanting CPU is
// busy, not idle.
func TestStarvedThreadsAreBusy(t *testing.T) {
	r := &HangReport{SampleMillis: 721, CPUTicks: 14, Threads: []Thread{
		{TID: 1, Name: "main", Syscall: "futex", FutexAddr: 0x1000},
		{TID: 20, Name: "worker-0", State: "running"},
		{TID: 21, Name: "worker-1", State: "running"},
	}}
	r.judge()
	if r.State != Busy {
		t.Fatalf("verdict %s: %s", r.State, r.Conclusion)
	}
}

func TestStuckAgent(t *testing.T) {
	r := &HangReport{SampleMillis: 1000, Threads: []Thread{
		{TID: 7, Name: "Attach Listener", Syscall: "pause", Where: "libc.so.6 (pause+0x32)", Callers: []string{"libblock.so (Agent_OnAttach+0x19)", "libjvm.so+0xa2dab3"}},
	}}
	r.judge()
	if r.State != Hung || r.Pattern != "agent-stuck-in-onattach" || !strings.Contains(r.Conclusion, "libblock.so (Agent_OnAttach+0x19)") {
		t.Fatalf("%s %s: %s", r.State, r.Pattern, r.Conclusion)
	}
}

// TestLiveIdleAndBusyJVMs: healthy JVMs are never called hung, and their
// threads and symbols are read from outside.
func TestLiveIdleAndBusyJVMs(t *testing.T) {
	for _, c := range []struct {
		workers int
		want    State
	}{{0, Idle}, {2, Busy}} {
		t.Run(string(c.want), func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{Workers: c.workers})
			time.Sleep(time.Second) // past start-up
			r, err := Diagnose(context.Background(), p.PID, Options{Sample: 700 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if r.State != c.want {
				t.Errorf("verdict %s, want %s: %s", r.State, c.want, r.Conclusion)
			}
			names := map[string]bool{}
			symbolised := false
			for _, th := range r.Threads {
				names[th.Name] = true
				symbolised = symbolised || strings.Contains(th.Where, "libc.so.6")
			}
			if !names["VM Thread"] || !symbolised {
				t.Errorf("threads %v, symbolised PCs %v", names, symbolised)
			}
		})
	}
	if _, err := Diagnose(context.Background(), 1<<30, Options{Sample: 10 * time.Millisecond}); err == nil {
		t.Error("a missing pid was diagnosed")
	}
}
