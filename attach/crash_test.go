package attach

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/crashmem"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

// TestLiveCrashMemory: a JVM that dies with a HotSpot crash log soon
// after an attach is remembered; the next JVM of the same workload is
// refused by crashed-after-attach until acknowledged, and attaches again
// once the entry is forgotten. The memory is kept by scope: the same
// workload in another scope (a node agent's other namespace) is neither
// told of the crash nor refused for it.
func TestLiveCrashMemory(t *testing.T) {
	t.Parallel()
	store := crashmem.Open(filepath.Join(t.TempDir(), "crashes.json"))
	opts := Options{CrashMemory: store, CrashFollowUntil: t.Context().Done(), CrashWindow: 30 * time.Second, CrashScope: "team-a"}
	other := Options{CrashMemory: store, CrashScope: "team-b"}
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	crasher := testenv.BuildAgent(t, testenv.AgentCrashLater)
	if _, err := Load(context.Background(), p.PID, crasher, "1", opts); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("the JVM did not crash")
	}
	// The watcher records the crash shortly after the exit.
	var workload string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && workload == "" {
		q := testenv.StartJVM(t, testenv.JVMSpec{})
		res, err := Check(context.Background(), q.PID, testenv.BuildAgent(t, testenv.AgentFixedLookalike), "", opts)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Verdict.Allowed {
			workload = crashmem.Workload(res.Report, "team-a")
			if res, err := Check(context.Background(), q.PID, testenv.BuildAgent(t, testenv.AgentFixedLookalike), "", other); err != nil || !res.Verdict.Allowed || res.Report.PriorCrash != "" {
				t.Errorf("another scope is told of the crash, or refused for it: %v %v", res, err)
			}
			if b := res.Verdict.Blocking(); len(b) != 1 || b[0] != "crashed-after-attach" {
				t.Fatalf("refused by %v", b)
			}
			for _, f := range res.Verdict.Findings {
				if f.Rule == "crashed-after-attach" && !strings.Contains(f.Message, "hs_err_pid") {
					t.Errorf("finding without the crash log: %s", f.Message)
				}
			}
			// Acknowledged, the attach goes ahead; forgotten, it is not refused.
			if _, err := Load(context.Background(), q.PID, testenv.BuildAgent(t, testenv.AgentFixedLookalike), "", Options{CrashMemory: store, Acks: []string{"crashed-after-attach"}}); err != nil {
				t.Errorf("acknowledged: %v", err)
			}
			if err := store.Forget(workload); err != nil {
				t.Fatal(err)
			}
			if res, _ := Check(context.Background(), q.PID, testenv.BuildAgent(t, testenv.AgentFixedLookalike), "", opts); !res.Verdict.Allowed {
				t.Errorf("still refused after Forget: %v", res.Verdict.Blocking())
			}
		}
		q.Cmd.Process.Kill()
		if workload == "" {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if workload == "" {
		t.Fatal("the crash was never remembered")
	}
}

// TestCrashFollowEnds: the crash watcher started after a load ends when
// the caller's channel is closed, and at the window's end when it is
// never closed (followed here: this test's own process, which lives on).
func TestCrashFollowEnds(t *testing.T) {
	t.Parallel()
	store := crashmem.Open(filepath.Join(t.TempDir(), "crashes.json"))
	pid := os.Getpid()
	r := &preflight.Report{PID: pid, Process: preflight.Process{Root: fmt.Sprintf("/proc/%d/root", pid)}}
	ends := func(what string, until <-chan struct{}, window time.Duration, then func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			followCrash(until, store, r, nil, "", window)
		}()
		then()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the watcher did not end", what)
		}
	}
	until := make(chan struct{})
	ends("until closed", until, time.Hour, func() { time.Sleep(100 * time.Millisecond); close(until) })
	ends("window over", make(chan struct{}), 200*time.Millisecond, func() {})
}
