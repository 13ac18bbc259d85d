package conflicts

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// flightRecorderRules are the rules about the JVM's own Flight Recorder.
var flightRecorderRules = []string{"jfr-unavailable-jdk8", "jfr-disabled", "jfr-libunwind-heap-profiler", "jfr-string-pool-deadlock"}

// jvmProtections are the rules that protect the JVM and its attach
// socket, whatever is sent through it: they hold for the Flight
// Recorder, which JFR.start reaches through the same socket.
var jvmProtections = []string{"not-a-jvm", "openj9-not-supported", "attach-disabled", "sigquit-not-handled",
	"process-stopped", "crashed-after-attach", "credentials-mismatch", "attach-socket-untrusted"}

// TestFlightRecorderJudgedAsJcmd: for every report fixture, the JVM's
// Flight Recorder is judged as an attach that loads nothing (jcmd) is —
// the same findings, word for word — plus the Flight Recorder's own
// rules: none of the rules about an agent library (its file, its bytes,
// its loading, the JVMTI load, async-profiler's hazards) speaks for it.
// And the Flight Recorder's rules never speak for a library agent.
func TestFlightRecorderJudgedAsJcmd(t *testing.T) {
	reports, _ := filepath.Glob("testdata/reports/*.json")
	agents, _ := filepath.Glob("testdata/agents/*.json")
	if len(reports) < 30 || len(agents) < 10 {
		t.Fatalf("%d reports, %d agents: the fixtures are missing", len(reports), len(agents))
	}
	seen := map[string]bool{}
	for _, path := range reports {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		report := loadJSON[preflight.Report](t, path)
		jfr := Evaluate(report, preflight.FlightRecorderAgent(), Policy{})
		jcmd := Evaluate(report, nil, Policy{})
		var rest []Finding
		for _, f := range jfr.Findings {
			seen[f.Rule] = true
			if !slices.Contains(flightRecorderRules, f.Rule) && !slices.Contains(jvmProtections, f.Rule) {
				t.Errorf("%s: %s speaks for the Flight Recorder: %s", name, f.Rule, f.Message)
			}
			if !slices.Contains(flightRecorderRules, f.Rule) {
				rest = append(rest, f)
			}
		}
		if rest == nil {
			rest = []Finding{}
		}
		if !reflect.DeepEqual(rest, jcmd.Findings) {
			t.Errorf("%s: the Flight Recorder, its own rules aside, is judged\n%+v\nbut jcmd\n%+v", name, rest, jcmd.Findings)
		}
		for _, a := range agents {
			agent := loadJSON[preflight.Agent](t, a)
			for _, f := range Evaluate(report, agent, Policy{}).Findings {
				if slices.Contains(flightRecorderRules, f.Rule) {
					t.Errorf("%s with %s: %s speaks for a library agent", name, filepath.Base(a), f.Rule)
				}
			}
		}
	}
	// The fixtures reach every rule that should speak for it.
	for _, id := range append(slices.Clone(flightRecorderRules), jvmProtections...) {
		if !seen[id] {
			t.Errorf("no fixture makes %s speak for the Flight Recorder", id)
		}
	}
}

// TestFlightRecorderFacts: the Flight Recorder has a kind and a
// description, and none of a library's facts (no file to trust, hash or
// load, no copies to compare).
func TestFlightRecorderFacts(t *testing.T) {
	report := loadJSON[preflight.Report](t, "testdata/reports/plain-jdk17.json")
	facts := BuildFacts(report, preflight.FlightRecorderAgent())
	if got := facts["agent.kind"].Value; got != preflight.AgentFlightRecorder {
		t.Errorf("agent.kind = %v", got)
	}
	if got := facts["agent.description"].Value; got != "the JVM's Flight Recorder" {
		t.Errorf("agent.description = %v", got)
	}
	for _, name := range []string{"agent.path", "agent.exists", "agent.regular", "agent.libc", "agent.machine",
		"agent.foreign_writers", "agent.loadable", "agent.sha256", "profilers.async_profiler.other_copy", "profilers.async_profiler.same_copy"} {
		if f, ok := facts[name]; ok {
			t.Errorf("%s = %+v for the Flight Recorder, which has no library", name, f)
		}
	}
}
