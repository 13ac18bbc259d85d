package profiling

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLivePerfEventsUnavailable: with kernel.perf_event_paranoid at 3 (a
// Debian/Ubuntu setting; restored afterwards) a JVM without CAP_PERFMON
// cannot open perf events: -e cpu is warned about with the working
// alternatives, and --event-fallback samples with ctimer instead.
// Not parallel: the setting is host-wide.
func TestLivePerfEventsUnavailable(t *testing.T) {
	testenv.RequireRoot(t)
	const knob = "/proc/sys/kernel/perf_event_paranoid"
	old, err := os.ReadFile(knob)
	if err != nil {
		testenv.Missing(t, "%s: %v", knob, err)
	}
	if err := os.WriteFile(knob, []byte("3"), 0o644); err != nil {
		testenv.Missing(t, "cannot set %s here: %v", knob, err)
	}
	t.Cleanup(func() { os.WriteFile(knob, old, 0o644) })
	p := testenv.StartJVM(t, testenv.JVMSpec{RunAs: testenv.Nobody})
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	res, err := attach.Check(context.Background(), p.PID, lib, "start,event=cpu", attach.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range res.Verdict.Findings {
		if f.Rule == RulePerfEventsUnavailable && f.Severity == "warn" && strings.Contains(f.Remedy, "itimer") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no perf-events warning: %+v", res.Verdict.Findings)
	}
	out := filepath.Join(t.TempDir(), "p.collapsed")
	pr, err := Profile(context.Background(), p.PID, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Output: out, EventFallback: true}, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(out); pr.Event != "ctimer" || !strings.Contains(string(data), "[ctimer]") {
		t.Errorf("event %q, profile %q", pr.Event, data)
	}
}
