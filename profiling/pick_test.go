package profiling

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLivePickAgentProfile: the affected look-alike is refused on a JVM
// under tcmalloc's heap profiler; without PickAgent the refusal names the
// fixed build installed in $ASYNC_PROFILER_HOME and nothing is loaded;
// with it the profile runs with the fixed build and the result says
// which was refused and which was used (b, c). Not parallel: it sets
// ASYNC_PROFILER_HOME.
func TestLivePickAgentProfile(t *testing.T) {
	affected, installed, p := testenv.FixedBuildInstalled(t)
	out := filepath.Join(t.TempDir(), "profile.collapsed")
	req := ProfileRequest{SessionRequest: SessionRequest{Lib: affected, Profiler: asprof.Options{Event: "wall"}, Output: out}, Duration: time.Second}

	_, err := Profile(context.Background(), p.PID, req)
	var re *attach.RefusedError
	if !errors.As(err, &re) || len(re.Alternatives) == 0 || re.Alternatives[0].Path != installed {
		t.Fatalf("want a refusal naming %s: %v", installed, err)
	}
	if maps := testenv.Maps(t, p.PID); strings.Contains(maps, "libasyncProfiler") || strings.Contains(maps, "lookalike") {
		t.Fatalf("refused, yet the JVM maps a build:\n%s", maps)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("refused, yet a profile was written")
	}

	req.PickAgent = true
	res, err := Profile(context.Background(), p.PID, req)
	if err != nil {
		t.Fatalf("PickAgent: %v", err)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "[wall]") {
		t.Errorf("profile %q", data)
	}
	if res.Picked == nil || res.Picked.Picked.Path != installed || res.Picked.Refused.Path != affected || res.Agent.Path != installed || res.Agent.Version != "4.5" {
		t.Errorf("the result does not say the fixed build was used: picked %+v, agent %s", res.Picked, res.Agent.Path)
	}
	j := NewJSONResult("profile", p.PID, time.Now(), &res.Result, nil)
	if j.PickedAgent == nil || j.PickedAgent.Picked.Version != "4.5" {
		t.Errorf("the JSON result has no picked_agent: %+v", j.PickedAgent)
	}
}
