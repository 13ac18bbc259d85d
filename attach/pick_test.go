package attach

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/testenv"
)

// requireNotMapped: the JVM maps neither look-alike.
func requireNotMapped(t *testing.T, pid int, sums ...string) {
	t.Helper()
	maps := mappedHashes(t, pid)
	for _, s := range sums {
		if path, ok := maps[s]; ok {
			t.Errorf("the JVM maps %s (sha256 %s)", path, s)
		}
	}
}

// TestLivePickAgentFromHome: the affected look-alike given with --agent
// is refused on a JVM under tcmalloc's heap profiler; the fixed one
// installed in $ASYNC_PROFILER_HOME is named in the refusal, and nothing
// is loaded (a). With PickAgent the door loads the fixed build instead,
// and its result says which build was refused, by which rule, and which
// was loaded (b). Not parallel: it sets ASYNC_PROFILER_HOME.
func TestLivePickAgentFromHome(t *testing.T) {
	affected, installed, p := testenv.FixedBuildInstalled(t)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	_, err := OpenDoor(ctx, p.PID, DoorRequest{Lib: affected, Options: Options{Timeout: 60 * time.Second}})
	refusedBy(t, err, "tcmalloc-heap-profiler")
	var re *RefusedError
	errors.As(err, &re)
	if !re.ByAgent() || len(re.Alternatives) == 0 {
		t.Fatalf("no alternatives named: %v", err)
	}
	alt := re.Alternatives[0]
	if alt.Path != installed || alt.Version != "4.5" || alt.Found != "$ASYNC_PROFILER_HOME" || alt.SHA256 != sha256File(t, fixed) {
		t.Errorf("first alternative %+v, want the fixed build at %s", alt, installed)
	}
	want := fmt.Sprintf("async-profiler 4.5 at %s is allowed here: --agent %s", installed, installed)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("the refusal does not name the allowed build:\n%v\nwant %q", err, want)
	}
	requireNothingSent(t, p)
	requireNotMapped(t, p.PID, sha256File(t, affected), sha256File(t, fixed))

	d, err := OpenDoor(ctx, p.PID, DoorRequest{Lib: affected, PickAgent: true, Options: Options{Timeout: 60 * time.Second}})
	if err != nil {
		t.Fatalf("PickAgent: %v", err)
	}
	out, err := d.Load(ctx, "status")
	d.Finish(err)
	d.Close()
	if err != nil {
		t.Fatalf("load of the picked build: %q %v", out, err)
	}
	res := d.Result()
	pick := res.Picked
	if pick == nil || pick.Refused.Version != "3.0-2dba71f" || pick.Picked.Path != installed || pick.Picked.Version != "4.5" ||
		len(pick.Rules) == 0 || pick.Rules[0] != "tcmalloc-heap-profiler" {
		t.Fatalf("the result does not say what was picked: %+v", pick)
	}
	if res.Agent.Path != installed || !res.Verdict.Allowed {
		t.Errorf("the door judged %s (allowed %v), want the picked %s", res.Agent.Path, res.Verdict.Allowed, installed)
	}
	if s := pick.String(); !strings.Contains(s, "async-profiler 3.0-2dba71f at "+affected+" was refused here (rules tcmalloc-heap-profiler); using async-profiler 4.5 at "+installed) {
		t.Errorf("pick: %q", s)
	}
	maps := mappedHashes(t, p.PID)
	if _, ok := maps[sha256File(t, fixed)]; !ok {
		t.Error("the fixed build is not mapped")
	}
	if path, ok := maps[sha256File(t, affected)]; ok {
		t.Errorf("the refused build is mapped: %s", path)
	}
}

// TestLiveMappedBuildIsACandidate: a build another JVM maps (the fixed
// look-alike, loaded into it first) is a candidate, found in that JVM's
// maps, and named for a JVM that refuses the affected build even with
// discovery's places left out (d).
func TestLiveMappedBuildIsACandidate(t *testing.T) {
	t.Parallel()
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	fixedSum := sha256File(t, fixed)
	_, installed := testenv.AgentHome(t, fixed)
	other := testenv.StartJVM(t, testenv.JVMSpec{})
	risky := testenv.StartHeapProfiledJVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := Load(ctx, other.PID, installed, "status", Options{}); err != nil {
		t.Fatalf("loading the fixed build into the other JVM: %v", err)
	}
	t.Logf("the other JVM maps %s", strings.TrimSpace(grepMaps(t, other.PID, asyncProfilerLib)))
	found := false
	for _, c := range mappedAgents(ctx) {
		if c.how == fmt.Sprintf("mapped by pid %d", other.PID) && sha256File(t, c.path) == fixedSum {
			found = true
		}
	}
	if !found {
		t.Fatalf("the build pid %d maps is not a candidate: %+v", other.PID, mappedAgents(ctx))
	}
	_, err := OpenDoor(ctx, risky.PID, DoorRequest{Lib: affected, Options: Options{Timeout: 60 * time.Second}, sources: agentSources{noDiscovery: true}})
	refusedBy(t, err, "tcmalloc-heap-profiler")
	var re *RefusedError
	errors.As(err, &re)
	named := false
	for _, a := range re.Alternatives {
		if a.SHA256 == fixedSum && a.Found == fmt.Sprintf("mapped by pid %d", other.PID) && strings.HasSuffix(a.Path, "/"+asyncProfilerLib) {
			named = true
		}
		if a.SHA256 == sha256File(t, affected) {
			t.Errorf("the refused build is named as an alternative: %+v", a)
		}
	}
	if !named {
		t.Errorf("the other JVM's build is not named: %+v", re.Alternatives)
	}
	requireNothingSent(t, risky)
	requireNotMapped(t, risky.PID, fixedSum, sha256File(t, affected))
}

func grepMaps(t *testing.T, pid int, s string) string {
	var out []string
	for _, l := range strings.Split(testenv.Maps(t, pid), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRefusedByAgent: alternatives are looked for only when every rule
// that refused looked at the agent.
func TestRefusedByAgent(t *testing.T) {
	agentBlock := conflicts.Finding{Rule: "tcmalloc-heap-profiler", Severity: conflicts.Block, Evidence: []string{"tcmalloc.present = true", "agent.version = 3.0"}}
	jvmBlock := conflicts.Finding{Rule: "attach-disabled", Severity: conflicts.Block, Evidence: []string{"jvm.flags.DisableAttachMechanism = true"}}
	deny := conflicts.Finding{Rule: conflicts.RuleAgentDenylisted, Severity: conflicts.Block, Evidence: []string{"agent.path = /x"}}
	warn := conflicts.Finding{Rule: "w", Severity: conflicts.Warn}
	for _, tc := range []struct {
		findings []conflicts.Finding
		want     bool
	}{
		{[]conflicts.Finding{agentBlock, warn}, true},
		{[]conflicts.Finding{deny}, true},
		{[]conflicts.Finding{agentBlock, jvmBlock}, false},
		{[]conflicts.Finding{jvmBlock}, false},
		{[]conflicts.Finding{warn}, false},
	} {
		if got := (&RefusedError{Verdict: conflicts.Verdict{Findings: tc.findings}}).ByAgent(); got != tc.want {
			t.Errorf("%+v: ByAgent %v, want %v", tc.findings, got, tc.want)
		}
	}
	if (&RefusedError{Verdict: conflicts.Verdict{Findings: []conflicts.Finding{agentBlock}}, Reason: "no place"}).ByAgent() {
		t.Error("a delivery refusal is not the rules' judgement of the agent")
	}
}
