package attach

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveBuilds: given builds in order of preference (a node agent's
// agents), the door and CheckBuilds take the first the rules allow for
// the JVM, and only that one is delivered (a); with none allowed, the
// preferred build's refusal is the answer and nothing is sent (b); a
// refusal of the JVM itself ends the search, which never reaches a
// later build (c: the later one does not exist, and no error says so).
func TestLiveBuilds(t *testing.T) {
	t.Parallel()
	affected, fixed := testenv.BuildAgent(t, testenv.AgentAffectedLookalike), testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	opts := Options{Timeout: 60 * time.Second}
	t.Run("first-allowed", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartHeapProfiledJVM(t)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		res, err := CheckBuilds(ctx, p.PID, []string{affected, fixed}, "", opts)
		if err != nil || !res.Verdict.Allowed || res.Agent.Path != fixed {
			t.Fatalf("CheckBuilds: %v, allowed %v for %s; want the second build allowed", err, res != nil && res.Verdict.Allowed, agentPath(res))
		}
		requireNothingSent(t, p)
		d, err := OpenDoor(ctx, p.PID, DoorRequest{Builds: []string{affected, fixed}, Options: opts})
		if err != nil {
			t.Fatalf("OpenDoor: %v", err)
		}
		out, err := d.Load(ctx, "status")
		d.Finish(err)
		d.Close()
		if err != nil {
			t.Fatalf("status: %q %v", out, err)
		}
		r := d.Result()
		if r.Agent.Path != fixed || r.Picked == nil || r.Picked.Refused.Path != affected || r.Picked.Picked.Path != fixed ||
			len(r.Picked.Rules) == 0 || r.Picked.Rules[0] != "tcmalloc-heap-profiler" {
			t.Errorf("result: agent %s, picked %+v; want the second build, the first refused by tcmalloc-heap-profiler", r.Agent.Path, r.Picked)
		}
		maps := mappedHashes(t, p.PID)
		if _, ok := maps[sha256File(t, fixed)]; !ok {
			t.Error("the allowed build is not mapped")
		}
		requireNotMapped(t, p.PID, sha256File(t, affected))
	})
	t.Run("none-allowed", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartHeapProfiledJVM(t)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		deny := opts
		deny.DenyAgents = []string{fixed}
		res, err := CheckBuilds(ctx, p.PID, []string{affected, fixed}, "", deny)
		if err != nil || res.Verdict.Allowed || res.Agent.Path != affected {
			t.Fatalf("CheckBuilds: %v, allowed %v for %s; want the preferred build's refusal", err, res != nil && res.Verdict.Allowed, agentPath(res))
		}
		var audit []AuditRecord
		deny.Audit = func(r AuditRecord) { audit = append(audit, r) } // OpenDoor's own goroutine
		_, err = OpenDoor(ctx, p.PID, DoorRequest{Builds: []string{affected, fixed}, Options: deny})
		refusedBy(t, err, "tcmalloc-heap-profiler")
		if len(audit) != 1 || audit[0].Agent != affected || audit[0].Verdict != "refused" || len(audit[0].PassedOver) != 0 {
			t.Errorf("audit: %+v\nwant the preferred build's refusal", audit)
		}
		requireNothingSent(t, p)
		requireNotMapped(t, p.PID, sha256File(t, affected), sha256File(t, fixed))
	})
	t.Run("missing-build-passed-over", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartHeapProfiledJVM(t)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		missing := filepath.Join(t.TempDir(), "libasyncProfiler.so")
		builds := []string{missing, affected, fixed}
		res, err := CheckBuilds(ctx, p.PID, builds, "", opts)
		if err != nil || !res.Verdict.Allowed || res.Agent.Path != fixed {
			t.Fatalf("CheckBuilds: %v for %s; want the third build allowed", err, agentPath(res))
		}
		var mu sync.Mutex
		var audit []AuditRecord
		audited := opts
		audited.Audit = func(r AuditRecord) { mu.Lock(); audit = append(audit, r); mu.Unlock() }
		d, err := OpenDoor(ctx, p.PID, DoorRequest{Builds: builds, Options: audited})
		if err != nil {
			t.Fatalf("OpenDoor: %v", err)
		}
		d.Finish(nil)
		d.Close()
		if r := d.Result(); r.Agent.Path != fixed || r.Picked == nil || r.Picked.Refused.Path != missing || !slices.Contains(r.Picked.Rules, "agent-untrusted") {
			t.Errorf("result: agent %s, picked %+v; want the third build, the missing one refused by agent-untrusted", r.Agent.Path, r.Picked)
		}
		mu.Lock()
		defer mu.Unlock()
		want := []string{missing + " (agent-untrusted)", affected + " (tcmalloc-heap-profiler)"}
		if len(audit) != 1 || audit[0].Agent != fixed || !slices.Equal(audit[0].PassedOver, want) {
			t.Errorf("audit: %+v\nwant agent %s passed over %q", audit, fixed, want)
		}
	})
	t.Run("empty-build", func(t *testing.T) {
		t.Parallel()
		if _, err := OpenDoor(context.Background(), os.Getpid(), DoorRequest{Builds: []string{fixed, ""}}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("OpenDoor with an empty build: %v", err)
		}
		if _, err := CheckBuilds(context.Background(), os.Getpid(), []string{""}, "", Options{}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("CheckBuilds with an empty build: %v", err)
		}
	})
	t.Run("refused-for-the-jvm", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+DisableAttachMechanism"}})
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		missing := filepath.Join(t.TempDir(), "libasyncProfiler.so")
		res, err := CheckBuilds(ctx, p.PID, []string{affected, missing}, "", opts)
		if err != nil || res.Verdict.Allowed || res.Agent.Path != affected {
			t.Fatalf("CheckBuilds: %v for %s; want the preferred build's refusal", err, agentPath(res))
		}
		_, err = OpenDoor(ctx, p.PID, DoorRequest{Builds: []string{affected, missing}, Options: opts})
		if errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("the search went on past a refusal of the JVM: %v", err)
		}
		refusedBy(t, err, "attach-disabled")
		requireNothingSent(t, p)
	})
}

func agentPath(res *CheckResult) string {
	if res == nil || res.Agent == nil {
		return "(none)"
	}
	return res.Agent.Path
}
