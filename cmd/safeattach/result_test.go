package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// resultFields are the documented fields of the JSON result (README).
var resultFields = []string{"schema_version", "command", "pid", "outcome", "exit_code", "error", "verdict", "agent",
	"loaded_from", "output", "agent_log", "profile", "hang_report", "healthy", "duration_ms"}

// TestJSONResultShape: load, jcmd and profile print one JSON shape for
// every outcome, with the outcome and the exit code the process gives.
func TestJSONResultShape(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	sleeper := testenv.StartSleeper(t)
	for _, tc := range []struct {
		name    string
		args    []string
		outcome string
		code    int
		has     []string
	}{
		{"load ok", []string{"load", "--json", pid, testenv.BuildAgent(t, testenv.AgentRecordOptions), "x=1"}, "ok", exitOK, []string{"verdict", "agent", "loaded_from"}},
		{"load refused", []string{"load", "--json", fmt.Sprint(sleeper.PID), fixed}, "refused", exitRefused, []string{"verdict", "error"}},
		{"load failed", []string{"load", "--json", pid, testenv.BuildAgent(t, testenv.AgentFailRC)}, "failed", exitFailed, []string{"error", "agent"}},
		{"jcmd ok", []string{"jcmd", "--json", pid, "VM.version"}, "ok", exitOK, []string{"output"}},
		{"profile ok", []string{"profile", "--json", "--agent", fixed, "-d", "1", "-f", out, pid}, "ok", exitOK, []string{"profile", "agent_log"}},
		{"profile agent error", []string{"profile", "--json", "--agent", fixed, "-e", "nosuch", "-d", "1", "-f", out, pid}, "failed", exitFailed, []string{"agent_log", "error"}},
		{"load timed out", []string{"load", "--json", "--timeout", "3s", pid, testenv.BuildAgent(t, testenv.AgentBlockForever)}, "timed-out", exitTimedOut, []string{"hang_report", "error"}},
	} {
		stdout, stderr, code := runCLI(t, tc.args...)
		var m map[string]any
		if err := json.Unmarshal([]byte(stdout), &m); err != nil {
			t.Errorf("%s: not one JSON object (%v):\n%s\n%s", tc.name, err, stdout, stderr)
			continue
		}
		if code != tc.code || m["outcome"] != tc.outcome || m["exit_code"] != float64(code) || m["schema_version"] != float64(1) {
			t.Errorf("%s: exit %d, result outcome %v exit_code %v schema %v", tc.name, code, m["outcome"], m["exit_code"], m["schema_version"])
		}
		for k := range m {
			if !slices.Contains(resultFields, k) {
				t.Errorf("%s: undocumented field %q", tc.name, k)
			}
		}
		for _, k := range tc.has {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %s", tc.name, k, stdout)
			}
		}
		if d, ok := m["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("%s: duration_ms %v", tc.name, m["duration_ms"])
		}
	}
}
