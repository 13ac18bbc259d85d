package conflicts

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

func TestParseErrorsHaveFileAndLine(t *testing.T) {
	for _, c := range []struct {
		name, src, want string
	}{
		{"typo in key", "rules:\n  - id: x\n    title: t\n    casez: []\n", "bad.yaml:4: unknown key \"casez\""},
		{"unknown fact", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: block\n        when: {fact: jemalloc.prof.stat, equals: active}\n        message: m\n        remedy: r\n", "bad.yaml:6: unknown fact \"jemalloc.prof.stat\" (did you mean jemalloc.prof.state?)"},
		{"bad severity", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: fatal\n        message: m\n        remedy: r\n", "bad.yaml:5: severity \"fatal\""},
		{"bad constraint", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: warn\n        when: {fact: agent.version, version: \"<<4\"}\n        message: m\n        remedy: r\n", "bad.yaml:6: version constraint"},
		{"version on non-version", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: warn\n        when: {fact: agent.kind, version: \"< 4\"}\n        message: m\n        remedy: r\n", "not a version"},
		{"two tests", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: warn\n        when: {fact: agent.kind, equals: a, one_of: [b]}\n        message: m\n        remedy: r\n", "one test per condition"},
		{"template names unknown fact", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: info\n        message: hello {agent.versoin}\n", "bad.yaml:5: template names unknown fact {agent.versoin}"},
		{"block without remedy", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: block\n        message: m\n", "needs a remedy"},
		{"bad id", "rules:\n  - id: Bad_ID\n    title: t\n    cases:\n      - severity: info\n        message: m\n", "bad.yaml:2: rule id"},
		{"duplicate id", "rules:\n  - id: x\n    title: t\n    cases: [{severity: info, message: m}]\n  - id: x\n    title: t\n    cases: [{severity: info, message: m}]\n", "already defined at bad.yaml:2"},
		{"yaml syntax", "rules:\n  - id: [\n", "bad.yaml:"},
		{"empty", "", "bad.yaml:1: empty rule file"},
		{"no rules list", "rulez: []\n", "unknown key \"rulez\""},
		{"combinator and leaf", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: warn\n        when: {fact: agent.kind, equals: a, all: [{fact: agent.kind, equals: b}]}\n        message: m\n        remedy: r\n", "exactly one of"},
		{"or_unknown without fact", "rules:\n  - id: x\n    title: t\n    cases:\n      - severity: warn\n        when: {or_unknown: true, all: [{fact: agent.kind, equals: b}]}\n        message: m\n        remedy: r\n", "needs a 'fact:'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRules("bad.yaml", []byte(c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line == 0 {
				t.Errorf("no file:line in %v", err)
			}
		})
	}
}

func TestOperatorRuleFile(t *testing.T) {
	rules, err := Load(context.Background(), "testdata/rules/custom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	report := loadJSON[preflight.Report](t, "testdata/reports/jdk8.json")
	v := Evaluate(report, nil, Policy{Rules: rules})
	if v.Allowed || v.Findings[0].Rule != "site-no-old-jvms" || v.Findings[0].Message != "JDK 1.8.0_412 is older than our minimum" {
		t.Fatalf("%+v", v)
	}
	// Redefining a default rule is refused, not silently merged.
	dup := filepath.Join(t.TempDir(), "dup.yaml")
	os.WriteFile(dup, []byte("rules:\n  - id: not-a-jvm\n    title: t\n    cases: [{severity: info, message: m}]\n"), 0o644)
	if _, err := Load(context.Background(), dup); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Errorf("duplicate of a default rule: %v", err)
	}
	if _, err := Load(context.Background(), "testdata/rules/missing.yaml"); err == nil {
		t.Error("missing rule file accepted")
	}
}

func TestEvaluateIsPure(t *testing.T) {
	report := loadJSON[preflight.Report](t, "testdata/reports/jemalloc-libunwind-active.json")
	agent := loadJSON[preflight.Agent](t, "testdata/agents/lookalike_affected.json")
	a := Evaluate(report, agent, Policy{})
	b := Evaluate(report, agent, Policy{})
	if len(a.Findings) != len(b.Findings) || a.Allowed != b.Allowed {
		t.Fatal("two evaluations of the same inputs differ")
	}
	// An unused ack changes nothing and is not recorded.
	c := Evaluate(report, agent, Policy{Acks: []string{"not-a-jvm"}})
	if c.Allowed || len(c.Acknowledged) != 0 {
		t.Errorf("unused ack: %+v", c)
	}
}
