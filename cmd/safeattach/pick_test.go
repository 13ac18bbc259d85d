package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestPickAgentCLI: on a JVM under tcmalloc's heap profiler the affected
// look-alike is refused and the refusal names the fixed build installed
// in $ASYNC_PROFILER_HOME (text and --json alternatives); --pick-agent
// profiles, loads and checks with the fixed build instead, saying so on
// stderr and in --json's picked_agent. Not parallel: it sets
// ASYNC_PROFILER_HOME.
func TestPickAgentCLI(t *testing.T) {
	affected, installed, p := testenv.FixedBuildInstalled(t)
	pid := fmt.Sprint(p.PID)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	allowed := fmt.Sprintf("async-profiler 4.5 at %s is allowed here: --agent %s", installed, installed)
	picked := fmt.Sprintf("async-profiler 3.0-2dba71f at %s was refused here (rules tcmalloc-heap-profiler); using async-profiler 4.5 at %s (--pick-agent)", affected, installed)
	// Once the fixed build is loaded, the affected one is refused for
	// that too (profiler-already-loaded): the rules listed grow.
	pickedAgain := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("async-profiler 3.0-2dba71f at %s was refused here (rules ", affected)) +
		"[a-z, -]*tcmalloc-heap-profiler[a-z, -]*" + regexp.QuoteMeta(fmt.Sprintf("); using async-profiler 4.5 at %s (--pick-agent)", installed)))

	stdout, stderr, code := runCLI(t, "profile", "--agent", affected, "-d", "1", "-f", out, pid)
	if code != exitRefused || !strings.Contains(stderr, allowed) {
		t.Errorf("refused: exit %d, want %d and %q in\n%s%s", code, exitRefused, allowed, stdout, stderr)
	}
	if maps := testenv.Maps(t, p.PID); strings.Contains(maps, "libasyncProfiler") || strings.Contains(maps, "lookalike") {
		t.Fatalf("refused, yet the JVM maps a build:\n%s", maps)
	}
	stdout, _, code = runCLI(t, "profile", "--json", "--agent", affected, "-d", "1", "-f", out, pid)
	var refused struct {
		Outcome      string `json:"outcome"`
		Error        string `json:"error"`
		Alternatives []struct {
			Path, Version, Found string
		} `json:"alternatives"`
	}
	if err := json.Unmarshal([]byte(stdout), &refused); err != nil || code != exitRefused || refused.Outcome != "refused" ||
		len(refused.Alternatives) == 0 || refused.Alternatives[0].Path != installed || refused.Alternatives[0].Version != "4.5" ||
		refused.Alternatives[0].Found != "$ASYNC_PROFILER_HOME" || !strings.Contains(refused.Error, allowed) {
		t.Errorf("--json refused: exit %d %v\n%s", code, err, stdout)
	}

	stdout, stderr, code = runCLI(t, "profile", "--pick-agent", "--agent", affected, "-d", "1", "-f", out, pid)
	if code != exitOK || !strings.Contains(stderr, picked) {
		t.Errorf("--pick-agent: exit %d, want 0 and %q in\n%s%s", code, picked, stdout, stderr)
	}
	type pick struct {
		Refused, Picked struct{ Path, Version string }
		Rules           []string
	}
	var res struct {
		Outcome     string `json:"outcome"`
		PickedAgent *pick  `json:"picked_agent"`
		Agent       struct{ Path, Version string }
	}
	stdout, stderr, code = runCLI(t, "profile", "--json", "--pick-agent", "--agent", affected, "-d", "1", "-f", out, pid)
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != exitOK || res.PickedAgent == nil ||
		res.PickedAgent.Refused.Path != affected || res.PickedAgent.Refused.Version != "3.0-2dba71f" ||
		res.PickedAgent.Picked.Path != installed || res.PickedAgent.Picked.Version != "4.5" ||
		!slices.Contains(res.PickedAgent.Rules, "tcmalloc-heap-profiler") || res.Agent.Path != installed || !pickedAgain.MatchString(stderr) {
		t.Errorf("--json --pick-agent: exit %d %v\n%s\n%s", code, err, stdout, stderr)
	}

	stdout, stderr, code = runCLI(t, "load", "--pick-agent", pid, affected, "status")
	if code != exitOK || !pickedAgain.MatchString(stderr) || !strings.Contains(stdout, "loaded "+installed) {
		t.Errorf("load --pick-agent: exit %d\n%s%s", code, stdout, stderr)
	}
	var checked struct {
		Allowed     bool  `json:"allowed"`
		PickedAgent *pick `json:"picked_agent"`
	}
	stdout, stderr, code = runCLI(t, "check", "--json", "--pick-agent", "--agent", affected, pid)
	if err := json.Unmarshal([]byte(stdout), &checked); err != nil || code != exitOK || !checked.Allowed || checked.PickedAgent == nil ||
		checked.PickedAgent.Picked.Path != installed || !pickedAgain.MatchString(stderr) {
		t.Errorf("check --pick-agent: exit %d %v\n%s%s", code, err, stdout, stderr)
	}
}
