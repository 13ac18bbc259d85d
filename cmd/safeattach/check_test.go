package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

type checkJSON struct {
	PID      int  `json:"pid"`
	Allowed  bool `json:"allowed"`
	Findings []struct {
		Rule, Severity, Message, Remedy string
		Evidence                        []string
	} `json:"findings"`
	JVM struct {
		Kind, Version string
	} `json:"jvm"`
	Libraries []struct{ Kind, Path, Version string } `json:"libraries"`
}

func (c checkJSON) severityOf(rule string) string {
	for _, f := range c.Findings {
		if f.Rule == rule {
			return f.Severity
		}
	}
	return ""
}

// TestCheckLiveIncidentCombinations checks real JVMs, started with the
// allocator set-ups of the incident, against the two look-alike agents:
// the verdicts must agree with what the reproducer does to such JVMs.
func TestCheckLiveIncidentCombinations(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	uw := testenv.Library(t, "libunwind.so.8")
	tc := testenv.Library(t, "libtcmalloc.so.4")
	tcMin := testenv.Library(t, "libtcmalloc_minimal.so.4")
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	cases := []struct {
		name string
		env  []string
		rule string
		// severity of rule's finding for the affected and fixed look-alikes
		affected, fixed string
	}{
		{"jemalloc-libunwind-active", []string{"LD_PRELOAD=" + uw + " " + je, "MALLOC_CONF=prof:true"}, "jemalloc-heap-profiler", "block", "info"},
		{"jemalloc-libgcc-active", []string{"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true"}, "jemalloc-heap-profiler", "warn", "info"},
		{"jemalloc-idle", []string{"LD_PRELOAD=" + uw + " " + je, "MALLOC_CONF=prof:true,prof_active:false"}, "jemalloc-heap-profiler", "warn", "info"},
		{"jemalloc-off", []string{"LD_PRELOAD=" + je}, "jemalloc-heap-profiler", "", ""},
		{"tcmalloc-heapprofile", []string{"LD_PRELOAD=" + tc, "HEAPPROFILE=hp"}, "tcmalloc-heap-profiler", "block", "info"},
		{"tcmalloc-full-2.10", []string{"LD_PRELOAD=" + tc}, "tcmalloc-heap-profiler", "block", "info"},
		{"tcmalloc-minimal", []string{"LD_PRELOAD=" + tcMin, "HEAPPROFILE=hp"}, "tcmalloc-heap-profiler", "", ""},
		{"glibc", nil, "jemalloc-heap-profiler", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{Env: c.env, Workers: 1})
			for _, a := range []struct{ path, want string }{{affected, c.affected}, {fixed, c.fixed}} {
				stdout, stderr, code := runCLI(t, "check", "--json", "--agent", a.path, fmt.Sprint(p.PID))
				var out checkJSON
				if err := json.Unmarshal([]byte(stdout), &out); err != nil {
					t.Fatalf("not JSON (%v): %s %s", err, stdout, stderr)
				}
				if got := out.severityOf(c.rule); got != a.want {
					t.Errorf("%s: %s = %q, want %q; findings %+v", a.path, c.rule, got, a.want, out.Findings)
				}
				wantCode := exitOK
				if a.want == "block" {
					wantCode = exitRefused
				}
				if code != wantCode || out.Allowed != (wantCode == exitOK) {
					t.Errorf("exit %d allowed %v, want exit %d; stderr %s", code, out.Allowed, wantCode, stderr)
				}
				if out.PID != p.PID || out.JVM.Kind != "hotspot" || out.JVM.Version == "" {
					t.Errorf("contract fields: %+v", out)
				}
			}
		})
	}
}

func TestCheckHumanOutputAndAck(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	uw := testenv.Library(t, "libunwind.so.8")
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + uw + " " + je, "MALLOC_CONF=prof:true"}})
	pid := fmt.Sprint(p.PID)
	stdout, stderr, code := runCLI(t, "check", "--agent", affected, pid)
	first, _, _ := strings.Cut(stdout, "\n")
	if code != exitRefused || !strings.HasPrefix(first, "REFUSED") || !strings.Contains(first, "jemalloc-heap-profiler") {
		t.Errorf("exit %d, first line %q", code, first)
	}
	for _, want := range []string{"remedy: Use async-profiler 4.0 or later", "MALLOC_CONF=prof:true", "libunwind", "issues/1147"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("human output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "refused by jemalloc-heap-profiler") {
		t.Errorf("stderr %q", stderr)
	}
	stdout, _, code = runCLI(t, "check", "--agent", affected, "--ack", "jemalloc-heap-profiler", pid)
	if code != exitOK || !strings.HasPrefix(stdout, "ALLOWED") || !strings.Contains(stdout, "[warn, acknowledged] jemalloc-heap-profiler") {
		t.Errorf("ack: exit %d\n%s", code, stdout)
	}
	// No blanket override exists.
	if _, _, code := runCLI(t, "check", "--force", pid); code != exitError {
		t.Errorf("--force accepted: exit %d", code)
	}
	// Without --agent and no installation, the worst plausible agent is
	// assumed and the output says so.
	t.Setenv("ASYNC_PROFILER_HOME", t.TempDir())
	t.Setenv("PATH", "/usr/bin:/bin")
	stdout, _, code = runCLI(t, "check", pid)
	if code != exitRefused || !strings.Contains(stdout, "assumed") {
		t.Errorf("no agent: exit %d\n%s", code, stdout)
	}
}

func TestCheckRefusesNonJVMAndBadRules(t *testing.T) {
	p := testenv.StartSleeper(t)
	stdout, _, code := runCLI(t, "check", "--json", fmt.Sprint(p.PID))
	var out checkJSON
	json.Unmarshal([]byte(stdout), &out)
	if code != exitRefused || out.severityOf("not-a-jvm") != "block" || out.JVM.Kind != "none" {
		t.Errorf("non-JVM: exit %d %+v", code, out)
	}
	bad := t.TempDir() + "/bad.yaml"
	writeFile(t, bad, "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: block\n        when: {fact: jvm.knd, equals: x}\n        message: m\n        remedy: r\n")
	_, stderr, code := runCLI(t, "check", "--rules", bad, fmt.Sprint(p.PID))
	if code != exitError || !strings.Contains(stderr, "bad.yaml:6: unknown fact \"jvm.knd\"") {
		t.Errorf("bad rules: exit %d %q", code, stderr)
	}
}

func TestRulesCommand(t *testing.T) {
	stdout, _, code := runCLI(t, "rules")
	if code != exitOK || !strings.Contains(stdout, "jemalloc-heap-profiler") {
		t.Fatalf("exit %d\n%s", code, stdout)
	}
	stdout, _, _ = runCLI(t, "rules", "tcmalloc-heap-profiler")
	if !strings.Contains(stdout, "gperftools/issues/1159") || !strings.Contains(stdout, "case 2: block") {
		t.Errorf("explain:\n%s", stdout)
	}
	stdout, _, _ = runCLI(t, "rules", "--json")
	var rules []struct{ ID string }
	if err := json.Unmarshal([]byte(stdout), &rules); err != nil || len(rules) < 12 {
		t.Errorf("json: %v %d", err, len(rules))
	}
	stdout, _, _ = runCLI(t, "rules", "--facts")
	if !strings.Contains(stdout, "jemalloc.prof.state") {
		t.Errorf("facts:\n%s", stdout)
	}
	if _, stderr, code := runCLI(t, "rules", "no-such-rule"); code != exitError || !strings.Contains(stderr, "no rule") {
		t.Errorf("unknown rule: %d %q", code, stderr)
	}
	ids := []string{}
	for _, r := range rules {
		ids = append(ids, r.ID)
	}
	if !slices.Contains(ids, "credentials-mismatch") {
		t.Errorf("ids %v", ids)
	}
}

func TestScanCommand(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	uw := testenv.Library(t, "libunwind.so.8")
	plain := testenv.StartJVM(t, testenv.JVMSpec{})
	risky := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + uw + " " + je, "MALLOC_CONF=prof:true"}})
	stdout, _, code := runCLI(t, "scan", "--json", "--agent", testenv.BuildAgent(t, testenv.AgentAffectedLookalike))
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var out struct {
		JVMs []struct {
			PID     int
			Verdict string
			Rules   []string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatal(err)
	}
	verdicts := map[int]string{}
	for _, j := range out.JVMs {
		verdicts[j.PID] = j.Verdict + " " + strings.Join(j.Rules, ",")
	}
	if v := verdicts[risky.PID]; !strings.HasPrefix(v, "refused") || !strings.Contains(v, "jemalloc-heap-profiler") {
		t.Errorf("risky JVM: %q", v)
	}
	if v := verdicts[plain.PID]; !strings.HasPrefix(v, "allowed") {
		t.Errorf("plain JVM: %q", v)
	}
	human, _, _ := runCLI(t, "scan", "--agent", testenv.BuildAgent(t, testenv.AgentAffectedLookalike))
	if !strings.Contains(human, fmt.Sprint(risky.PID)) || !strings.Contains(human, "VERDICT") {
		t.Errorf("human:\n%s", human)
	}
}

// TestJSONEnvelope: every --json command answers with the one envelope
// (schema_version, command, outcome, exit_code, error), also when it
// fails before it has a report (check and inspect of an unknown pid
// printed only text).
func TestJSONEnvelope(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	for _, c := range []struct {
		args []string
		code int
		pid  bool
	}{
		{[]string{"check", "--json", "999999999"}, exitError, true},
		{[]string{"inspect", "--json", "999999999"}, exitError, true},
		{[]string{"diagnose", "--json", "--sample", "100ms", "999999999"}, exitError, true},
		{[]string{"check", "--json", fmt.Sprint(p.PID)}, -1, true},
		{[]string{"inspect", "--json", fmt.Sprint(p.PID)}, exitOK, true},
		{[]string{"scan", "--json"}, exitOK, false},
	} {
		stdout, _, code := runCLI(t, c.args...)
		var out map[string]any
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Errorf("%v: not JSON (%v): %q", c.args, err, stdout)
			continue
		}
		if out["schema_version"] != float64(1) || out["command"] != c.args[0] || out["exit_code"] != float64(code) && c.code >= 0 || out["outcome"] == nil {
			t.Errorf("%v: exit %d, envelope %v %v %v %v", c.args, code, out["schema_version"], out["command"], out["exit_code"], out["outcome"])
		}
		if c.code >= 0 && code != c.code {
			t.Errorf("%v: exit %d, want %d", c.args, code, c.code)
		}
		if out["exit_code"] != float64(code) {
			t.Errorf("%v: exit_code %v, the process exited %d", c.args, out["exit_code"], code)
		}
		if _, ok := out["pid"]; c.pid && !ok {
			t.Errorf("%v: no pid", c.args)
		}
		if code != exitOK && out["error"] == nil {
			t.Errorf("%v: exit %d without an error", c.args, code)
		}
	}
}
