package attach

import (
	"context"
	"errors"
	"path/filepath"
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
		_, err = OpenDoor(ctx, p.PID, DoorRequest{Builds: []string{affected, fixed}, Options: deny})
		refusedBy(t, err, "tcmalloc-heap-profiler")
		requireNothingSent(t, p)
		requireNotMapped(t, p.PID, sha256File(t, affected), sha256File(t, fixed))
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
