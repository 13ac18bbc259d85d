package conflicts

import "testing"

func TestDefaultRulesParse(t *testing.T) {
	rules, err := DefaultRules()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range rules {
		ids[r.ID] = true
	}
	// The stable rule IDs (docs/rules.md): users and tests depend on them.
	for _, id := range []string{"jemalloc-heap-profiler", "tcmalloc-heap-profiler", "not-a-jvm",
		"attach-disabled", "sigquit-not-handled", "process-stopped",
		"dynamic-agent-loading-disabled", "agent-arch-mismatch",
		"agent-libc-mismatch", "profiler-already-loaded", "agent-untrusted",
		"credentials-mismatch"} {
		if !ids[id] {
			t.Errorf("rule %s missing", id)
		}
	}
}
