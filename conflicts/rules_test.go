package conflicts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// yamlRules parses rules/*.yaml, the source of the embedded rules.
func yamlRules(t *testing.T) []Rule {
	t.Helper()
	files, _ := filepath.Glob("rules/*.yaml")
	var all []Rule
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rules, err := ParseRules(filepath.ToSlash(f), data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rules...)
	}
	return all
}

// TestGeneratedRulesMatchYAML keeps rules_gen.go (what the binary
// carries) identical to rules/*.yaml: go generate ./conflicts.
func TestGeneratedRulesMatchYAML(t *testing.T) {
	a, _ := json.Marshal(yamlRules(t))
	b, _ := json.Marshal(embeddedRules())
	if !bytes.Equal(a, b) {
		t.Fatal("rules_gen.go is out of date with rules/*.yaml: run go generate ./conflicts")
	}
}

func TestDefaultRulesHaveTheStableIDs(t *testing.T) {
	// The stable rule IDs (docs/rules.md): users and tests depend on them.
	for _, id := range []string{"jemalloc-heap-profiler", "tcmalloc-heap-profiler", "not-a-jvm",
		"attach-disabled", "sigquit-not-handled", "process-stopped",
		"dynamic-agent-loading-disabled", "agent-arch-mismatch",
		"agent-libc-mismatch", "profiler-already-loaded", "agent-untrusted",
		"credentials-mismatch", "jfr-unavailable-jdk8", "jfr-disabled",
		"jfr-libunwind-heap-profiler", "jfr-string-pool-deadlock"} {
		if _, ok := Default().Rule(id); !ok {
			t.Errorf("rule %s missing", id)
		}
	}
}

// TestRulesBuiltInGo: rules written as Go values and compiled evaluate
// exactly as the same rules loaded from YAML — including a version
// constraint under not:, which an uncompiled constraint used to let
// through.
func TestRulesBuiltInGo(t *testing.T) {
	yaml := []byte(`rules:
  - id: old-agent
    title: Agent older than 4.0
    cases:
      - severity: block
        when:
          all:
            - {fact: agent.kind, equals: async-profiler}
            - not: {fact: agent.version, version: ">= 4.0"}
        message: "{agent.description} is too old"
        remedy: upgrade
`)
	parsed, err := ParseRules("inline.yaml", yaml)
	if err != nil {
		t.Fatal(err)
	}
	built := []Rule{{
		ID: "old-agent", Title: "Agent older than 4.0", Source: "inline.yaml:2",
		Cases: []*Case{{
			Severity: Block, Message: "{agent.description} is too old", Remedy: "upgrade", Line: 5,
			When: &Condition{Line: 7, All: []*Condition{
				{Line: 8, Fact: "agent.kind", Op: "equals", Args: []string{"async-profiler"}},
				{Line: 9, Not: &Condition{Line: 9, Fact: "agent.version", Op: "version", Args: []string{">= 4.0"}}},
			}},
		}},
	}}
	fromYAML, err := Compile(parsed...)
	if err != nil {
		t.Fatal(err)
	}
	fromGo, err := Compile(built...)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's data is not shared: changing it changes nothing.
	built[0].Cases[0].When.All[1].Not.Args[0] = ">= 0.1"
	report := loadJSON[preflight.Report](t, "testdata/reports/plain-jdk17.json")
	for _, v := range []string{"3.0", "3.0-2dba71f", "4.5"} {
		agent := &preflight.Agent{Path: "/x.so", Exists: true, Regular: true, Kind: preflight.AgentAsyncProfiler, Version: v}
		a := Evaluate(report, agent, Policy{Rules: fromYAML})
		b := Evaluate(report, agent, Policy{Rules: fromGo})
		blockedA, blockedB := contains(a.Blocking(), "old-agent"), contains(b.Blocking(), "old-agent")
		if blockedA != blockedB {
			t.Errorf("agent %s: YAML blocks %v, Go blocks %v", v, blockedA, blockedB)
		}
		if want := v != "4.5"; blockedA != want {
			t.Errorf("agent %s: blocked %v, want %v", v, blockedA, want)
		}
	}
	// A Go-built rule with a bad constraint or an unknown fact is
	// rejected, not silently satisfied.
	bad := built
	bad[0].Cases[0].When.All[1].Not.Args[0] = "<<4"
	if _, err := Compile(bad...); err == nil {
		t.Error("a bad constraint compiled")
	}
	bad[0].Cases[0].When.All[1].Not = &Condition{Fact: "agent.versoin", Op: "version", Args: []string{"< 4"}}
	if _, err := Compile(bad...); err == nil {
		t.Error("an unknown fact compiled")
	}
}

// BenchmarkDefaultRuleSet measures compiling the embedded rules as
// Default does, which the first Evaluate of a process pays.
func BenchmarkDefaultRuleSet(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compile(embeddedRules(), true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompileCopies is Compile of the same rules given by a caller,
// which deep-copies them first.
func BenchmarkCompileCopies(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(embeddedRules()...); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEmbeddedSetIsTheCompiledData: the embedded set, compiled without
// copying, equals Compile of the same rules once its version constraints
// (compiled on first use) are compiled, which they all can be; and
// compiling does not write the static data (a second compile sees the
// same rules).
func TestEmbeddedSetIsTheCompiledData(t *testing.T) {
	before := fmt.Sprint(embeddedRules())
	owned, err := compile(embeddedRules(), true)
	if err != nil {
		t.Fatal(err)
	}
	// Constraints compare by their text (a compiled one holds
	// functions, which reflect.DeepEqual never finds equal).
	var walk func(c *cond)
	walk = func(c *cond) {
		if c == nil {
			return
		}
		if c.constraint != nil {
			if err := c.constraint.compile(); err != nil {
				t.Errorf("embedded constraint %q: %v", c.constraint, err)
			}
			c.constraint = lazyConstraint(c.constraint.text)
		}
		for _, sub := range append(append([]*cond{}, c.all...), c.any...) {
			walk(sub)
		}
		walk(c.not)
	}
	copied, err := Compile(embeddedRules()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []*RuleSet{owned, copied} {
		for _, r := range set.rules {
			for _, cc := range r.cases {
				walk(cc.when)
			}
		}
	}
	if !reflect.DeepEqual(owned, copied) {
		t.Error("the embedded set differs from Compile of the same rules")
	}
	if fmt.Sprint(embeddedRules()) != before {
		t.Error("compiling changed the embedded rule data")
	}
}

// BenchmarkParseDefaultYAML is what parsing the YAML at start-up would
// cost instead.
func BenchmarkParseDefaultYAML(b *testing.B) {
	data, err := os.ReadFile("rules/default.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRules("rules/default.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPlaceholders: checking and rendering find the same placeholders; a
// brace that opens none is kept as text.
func TestPlaceholders(t *testing.T) {
	const tmpl = "a {x} b {{y} c {} d {z"
	facts := Facts{"x": {Value: "X"}, "y": {Value: "Y"}}
	if got, want := render(tmpl, facts), "a X b {Y c (not set) d {z"; got != want {
		t.Errorf("render = %q, want %q", got, want)
	}
	var names []string
	for n := range placeholders(tmpl) {
		names = append(names, n)
	}
	if got := strings.Join(names, ","); got != "x,y," {
		t.Errorf("placeholders = %q", got)
	}
}

// TestUndeterminedCases: a case whose fact is unknown does not end the
// rule when a later case, as severe, assumes the worst in its own words
// (or_unknown); that finding is a block marked undetermined, and Causes
// prefers the blocks decided from what was seen. A milder later case
// never decides past an undetermined one.
func TestUndeterminedCases(t *testing.T) {
	rules, err := ParseRules("inline.yaml", []byte(`rules:
  - id: kind
    title: kind
    cases:
      - severity: block
        when: {fact: jvm.kind, equals: none}
        message: not a JVM
        remedy: r
      - severity: block
        when: {fact: jvm.kind, equals: none, or_unknown: true}
        message: cannot tell
        remedy: r
  - id: milder
    title: milder
    cases:
      - severity: block
        when: {fact: jvm.kind, equals: none}
        message: m
        remedy: r
      - severity: info
        when: {fact: inspector.is_root, equals: "false"}
        message: m
        remedy: r
  - id: decided
    title: decided
    cases:
      - severity: block
        when: {fact: inspector.is_root, equals: "false"}
        message: decided
        remedy: r
`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile(rules...)
	if err != nil {
		t.Fatal(err)
	}
	report := loadJSON[preflight.Report](t, "testdata/reports/plain-jdk17.json")
	report.JVM.Kind = preflight.JVMNone
	report.Unknowns = append(report.Unknowns, preflight.UnknownFact{Fact: "jvm.kind", Reason: "maps: permission denied"})
	report.Inspector.EUID = 4242
	v := Evaluate(report, nil, Policy{Rules: set})
	got := map[string]Finding{}
	for _, f := range v.Findings {
		got[f.Rule] = f
	}
	if f := got["kind"]; f.Severity != Block || !f.Undetermined || f.Message != "cannot tell" {
		t.Errorf("kind: %+v", f)
	}
	if f := got["milder"]; f.Severity != Warn || !f.Undetermined {
		t.Errorf("a milder case decided past an undetermined block: %+v", f)
	}
	if c := v.Causes(); !slices.Equal(c, []string{"decided"}) {
		t.Errorf("Causes = %v, want the decided block only (Blocking %v)", c, v.Blocking())
	}
	report.Inspector.EUID = 0
	if c := Evaluate(report, nil, Policy{Rules: set}).Causes(); !slices.Equal(c, []string{"kind"}) {
		t.Errorf("with no decided block, the undetermined one is the cause: %v", c)
	}
}
