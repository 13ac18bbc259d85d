package conflicts

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

var update = flag.Bool("update", false, "rewrite the golden verdicts in testdata/golden")

type goldenCase struct {
	name   string
	report string // testdata/reports/<report>.json
	agent  string // testdata/agents/<agent>.json; "" for none; "assumed" is what attach.FindAgent assumes when none is given; "jfr" is preflight.FlightRecorderAgent()
	policy Policy
	// The rule IDs that must appear with each severity, beyond the golden
	// file itself: the golden file pins the wording, this pins the intent.
	block, warn, info []string
	allowed           bool
}

var goldenCases = []goldenCase{
	// The incident: jemalloc.
	{name: "jemalloc-libunwind-affected", report: "jemalloc-libunwind-active", agent: "lookalike_affected", block: []string{"jemalloc-heap-profiler"}},
	{name: "jemalloc-libunwind-fixed", report: "jemalloc-libunwind-active", agent: "lookalike_fixed", info: []string{"jemalloc-heap-profiler"}, allowed: true},
	{name: "jemalloc-libgcc-affected", report: "jemalloc-prof-active", agent: "lookalike_affected", warn: []string{"jemalloc-heap-profiler"}, allowed: true},
	{name: "jemalloc-idle-affected", report: "jemalloc-prof-idle", agent: "lookalike_affected", warn: []string{"jemalloc-heap-profiler"}, allowed: true},
	{name: "jemalloc-no-prof-affected", report: "jemalloc-no-prof", agent: "lookalike_affected", allowed: true},
	{name: "jemalloc-unknown-affected", report: "jemalloc-environ-unreadable", agent: "lookalike_affected", warn: []string{"jemalloc-heap-profiler"}, allowed: true},
	{name: "jemalloc-libunwind-unversioned", report: "jemalloc-libunwind-active", agent: "async-profiler-unversioned", block: []string{"jemalloc-heap-profiler"}},
	{name: "jemalloc-libunwind-3.0-release", report: "jemalloc-libunwind-active", agent: "async-profiler-3.0-release", allowed: true},
	{name: "jemalloc-libunwind-datadog", report: "jemalloc-libunwind-active", agent: "datadog-1.20", block: []string{"jemalloc-heap-profiler"}},
	{name: "jemalloc-libunwind-no-agent-given", report: "jemalloc-libunwind-active", agent: "assumed", block: []string{"jemalloc-heap-profiler"}},
	{name: "jemalloc-libunwind-plain-agent", report: "jemalloc-libunwind-active", agent: "record_options", allowed: true},
	{name: "jemalloc-libunwind-affected-acked", report: "jemalloc-libunwind-active", agent: "lookalike_affected", policy: Policy{Acks: []string{"jemalloc-heap-profiler"}}, warn: []string{"jemalloc-heap-profiler"}, allowed: true},
	// The incident: tcmalloc.
	{name: "tcmalloc-heapprofile-affected", report: "tcmalloc-heapprofile", agent: "lookalike_affected", block: []string{"tcmalloc-heap-profiler"}},
	{name: "tcmalloc-full-affected", report: "tcmalloc-full", agent: "lookalike_affected", block: []string{"tcmalloc-heap-profiler"}},
	{name: "tcmalloc-minimal-affected", report: "tcmalloc-minimal", agent: "lookalike_affected", allowed: true},
	{name: "tcmalloc-heapprofile-fixed", report: "tcmalloc-heapprofile", agent: "lookalike_fixed", info: []string{"tcmalloc-heap-profiler"}, allowed: true},
	// One fixture per remaining rule.
	{name: "plain-affected", report: "plain-jdk17", agent: "lookalike_affected", allowed: true},
	{name: "plain-jcmd", report: "plain-jdk17", allowed: true},
	{name: "not-a-jvm", report: "not-a-jvm", agent: "lookalike_fixed", block: []string{"not-a-jvm"}},
	{name: "openj9", report: "openj9", agent: "lookalike_fixed", block: []string{"openj9-not-supported"}},
	{name: "attach-disabled", report: "disable-attach", agent: "lookalike_fixed", block: []string{"attach-disabled"}},
	{name: "xrs-with-socket", report: "xrs", agent: "lookalike_fixed", allowed: true},
	{name: "xrs-socket-deleted", report: "xrs-socket-deleted", agent: "lookalike_fixed", block: []string{"sigquit-not-handled"}},
	{name: "stopped", report: "stopped", block: []string{"process-stopped"}},
	{name: "dynamic-loading-off", report: "dynamic-loading-off", agent: "lookalike_fixed", block: []string{"dynamic-agent-loading-disabled"}},
	{name: "jdk21-jep451", report: "jdk21", agent: "lookalike_fixed", info: []string{"dynamic-agent-loading-disabled"}, allowed: true},
	{name: "arch-mismatch", report: "plain-jdk17", agent: "async-profiler-aarch64", block: []string{"agent-arch-mismatch"}},
	{name: "libc-mismatch", report: "musl-target", agent: "lookalike_fixed", block: []string{"agent-libc-mismatch"}},
	{name: "other-async-profiler-loaded", report: "other-async-profiler-loaded", agent: "lookalike_fixed", block: []string{"profiler-already-loaded"}},
	{name: "yourkit-loaded", report: "yourkit-loaded", agent: "lookalike_fixed", warn: []string{"profiler-already-loaded"}, allowed: true},
	{name: "agent-missing", report: "plain-jdk17", agent: "missing", block: []string{"agent-untrusted"}},
	{name: "agent-world-writable", report: "plain-jdk17", agent: "world-writable", block: []string{"agent-untrusted"}},
	{name: "agent-not-an-agent", report: "plain-jdk17", agent: "no_onattach", block: []string{"agent-untrusted"}},
	{name: "credentials-mismatch", report: "foreign-user", block: []string{"credentials-mismatch"}},
	{name: "spoofed-socket", report: "spoofed-socket", block: []string{"attach-socket-untrusted"}},
	{name: "nativemem-4.0-preloaded", report: "jemalloc-no-prof", agent: "async-profiler-4.0-nativemem", block: []string{"nativemem-preloaded-allocator"}, warn: []string{"signal-handler-allocator-deadlock"}},
	{name: "jfrsync-4.2", report: "plain-jdk17", agent: "async-profiler-4.2-jfrsync", warn: []string{"jfrsync-start-deadlock"}, allowed: true},
	{name: "alloc-jdk8", report: "jdk8", agent: "async-profiler-3.0-alloc", block: []string{"alloc-profiling-jdk8"}},
	{name: "many-libraries-affected", report: "many-libraries", agent: "lookalike_affected", block: []string{"too-many-libraries"}},
	{name: "sigprof-taken-3.0", report: "sigprof-taken", agent: "async-profiler-3.0-release", warn: []string{"profiling-signal-taken"}, allowed: true},
	{name: "jvm-asgct-bugs-17.0.4", report: "jdk17-0-4", agent: "lookalike_fixed", warn: []string{"jvm-asgct-guarantee-crash", "jvm-asgct-interpreter-crash"}, allowed: true},
	{name: "jvm-dynamic-code-race-jdk8", report: "jdk8", agent: "lookalike_fixed", warn: []string{"jvm-dynamic-code-race"}, allowed: true},
	{name: "perf-events-unavailable", report: "perf-restricted", agent: "lookalike_fixed_cpu", warn: []string{"perf-events-unavailable"}, allowed: true},
	{name: "perf-event-without-fallback", report: "perf-restricted", agent: "lookalike_fixed_cycles", block: []string{"perf-events-unavailable"}},
	{name: "perf-event-through-fdtransfer", report: "perf-restricted", agent: "lookalike_fixed_cycles-fdtransfer", allowed: true},
	{name: "agent-not-loadable", report: "plain-jdk17", agent: "glibc-too-new", block: []string{"agent-not-loadable"}},
	{name: "crashed-after-attach", report: "crashed-before", agent: "lookalike_fixed", block: []string{"crashed-after-attach"}},
	{name: "crashed-after-attach-acked", report: "crashed-before", agent: "lookalike_fixed", policy: Policy{Acks: []string{"crashed-after-attach"}}, warn: []string{"crashed-after-attach"}, allowed: true},
	// The JVM's Flight Recorder: its own rules, the JVM's protections, and
	// none of the library's.
	{name: "jfr-plain", report: "plain-jdk17", agent: "jfr", allowed: true},
	{name: "jfr-unavailable-8u252", report: "jdk8-252", agent: "jfr", block: []string{"jfr-unavailable-jdk8"}},
	{name: "jfr-maybe-unbuilt-8u265", report: "jdk8-265", agent: "jfr", warn: []string{"jfr-unavailable-jdk8"}, allowed: true},
	{name: "jfr-8u412", report: "jdk8", agent: "jfr", allowed: true},
	{name: "jfr-unavailable-8u252-acked", report: "jdk8-252", agent: "jfr", policy: Policy{Acks: []string{"jfr-unavailable-jdk8"}}, warn: []string{"jfr-unavailable-jdk8"}, allowed: true},
	{name: "jfr-disabled", report: "jfr-disabled", agent: "jfr", block: []string{"jfr-disabled"}},
	{name: "jfr-disabled-async-profiler", report: "jfr-disabled", agent: "lookalike_fixed", allowed: true},
	{name: "jfr-tcmalloc-heapprofile-jdk25", report: "tcmalloc-heapprofile-jdk25", agent: "jfr", block: []string{"jfr-libunwind-heap-profiler"}},
	{name: "jfr-tcmalloc-heapprofile-jdk17", report: "tcmalloc-heapprofile", agent: "jfr", block: []string{"jfr-libunwind-heap-profiler"}},
	{name: "jfr-jemalloc-libunwind-jdk25", report: "jemalloc-libunwind-active-jdk25", agent: "jfr", block: []string{"jfr-libunwind-heap-profiler"}},
	{name: "jfr-jemalloc-libgcc-jdk25", report: "jemalloc-prof-active-jdk25", agent: "jfr", allowed: true},
	{name: "jfr-tcmalloc-heapprofile-jdk25-affected-agent", report: "tcmalloc-heapprofile-jdk25", agent: "lookalike_affected", block: []string{"tcmalloc-heap-profiler"}},
	{name: "jfr-string-pool-11.0.3", report: "jdk11-0-3", agent: "jfr", warn: []string{"jfr-string-pool-deadlock"}, allowed: true},
	{name: "jfr-attach-disabled", report: "disable-attach", agent: "jfr", block: []string{"attach-disabled"}},
	{name: "jfr-xrs-socket-deleted", report: "xrs-socket-deleted", agent: "jfr", block: []string{"sigquit-not-handled"}},
	{name: "jfr-not-a-jvm", report: "not-a-jvm", agent: "jfr", block: []string{"not-a-jvm"}},
	{name: "jfr-credentials-mismatch", report: "foreign-user", agent: "jfr", block: []string{"credentials-mismatch"}},
	{name: "jfr-spoofed-socket", report: "spoofed-socket", agent: "jfr", block: []string{"attach-socket-untrusted"}},
	{name: "jfr-dynamic-loading-off", report: "dynamic-loading-off", agent: "jfr", allowed: true},
	{name: "jfr-yourkit-loaded", report: "yourkit-loaded", agent: "jfr", allowed: true},
	{name: "jfr-not-allowlisted", report: "plain-jdk17", agent: "jfr", policy: Policy{AllowAgents: []string{"0000"}}, allowed: true},
	// Policy.
	{name: "strict-escalates-warning", report: "jemalloc-prof-idle", agent: "lookalike_affected", policy: Policy{Strict: true}, block: []string{"jemalloc-heap-profiler"}},
	{name: "denylisted-by-path", report: "plain-jdk17", agent: "lookalike_fixed", policy: Policy{DenyAgents: []string{"/tmp/safeattach-testbuild/agent-659798474926e5c2/liblookalike_fixed.so"}}, block: []string{RuleAgentDenylisted}},
	{name: "not-allowlisted", report: "plain-jdk17", agent: "lookalike_fixed", policy: Policy{AllowAgents: []string{"0000"}}, block: []string{RuleAgentNotAllowlisted}},
}

func loadJSON[T any](t *testing.T, path string) *T {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &v
}

func TestGoldenVerdicts(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			report := loadJSON[preflight.Report](t, filepath.Join("testdata/reports", c.report+".json"))
			var agent *preflight.Agent
			switch c.agent {
			case "":
			case "jfr":
				agent = preflight.FlightRecorderAgent()
			default:
				agent = loadJSON[preflight.Agent](t, filepath.Join("testdata/agents", c.agent+".json"))
			}
			v := Evaluate(report, agent, c.policy)
			got, _ := json.MarshalIndent(v, "", "  ")
			got = append(got, '\n')
			golden := filepath.Join("testdata/golden", c.name+".json")
			if *update {
				os.MkdirAll("testdata/golden", 0o755)
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./conflicts -run Golden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("verdict differs from %s (rerun with -update if intended):\n%s", golden, got)
			}
			if v.Allowed != c.allowed {
				t.Errorf("allowed = %v, want %v", v.Allowed, c.allowed)
			}
			for sev, ids := range map[Severity][]string{Block: c.block, Warn: c.warn, Info: c.info} {
				for _, id := range ids {
					if !slices.ContainsFunc(v.Findings, func(f Finding) bool { return f.Rule == id && f.Severity == sev }) {
						t.Errorf("want a %s finding from %s; got %+v", sev, id, v.Findings)
					}
				}
			}
			if len(c.block) == 0 && len(v.Blocking()) > 0 {
				t.Errorf("unexpected blocks: %v", v.Blocking())
			}
		})
	}
}
