package conflicts

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestRulesCatalogue keeps docs/rules.md, the rule catalogue, generated
// from the rule data. Regenerate with:
// go test ./conflicts -run RulesCatalogue -update
func TestRulesCatalogue(t *testing.T) {
	rules := Default().Rules()
	var b bytes.Buffer
	b.WriteString("# Rule catalogue\n\n")
	b.WriteString("Generated from `conflicts/rules/*.yaml` by `go test ./conflicts -run RulesCatalogue -update`; do not edit.\n")
	b.WriteString("Rule IDs are stable. A **hard** rule protects the target itself and cannot be acknowledged with `--ack`.\n\n")
	b.WriteString("| rule | strongest | hard | title |\n|---|---|---|---|\n")
	for _, r := range rules {
		hard := ""
		if r.Hard {
			hard = "hard"
		}
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s | %s |\n", r.ID, r.ID, r.Severity(), hard, r.Title)
	}
	for _, r := range rules {
		fmt.Fprintf(&b, "\n## %s\n\n%s.", r.ID, r.Title)
		if r.Hard {
			b.WriteString(" **Hard**: cannot be acknowledged.")
		}
		b.WriteString("\n")
		if r.Description != "" {
			fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(r.Description))
		}
		b.WriteString("\n| severity | message | remedy |\n|---|---|---|\n")
		for _, c := range r.Cases {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Severity, cell(c.Message), cell(c.Remedy))
		}
		if len(r.References) > 0 {
			b.WriteString("\nReferences: ")
			for i, ref := range r.References {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("<" + ref + ">")
			}
			b.WriteString("\n")
		}
	}
	const path = "../docs/rules.md"
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("%s is out of date with the rule data: go test ./conflicts -run RulesCatalogue -update (%v)", path, err)
	}
}

func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}
