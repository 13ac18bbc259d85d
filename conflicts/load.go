package conflicts

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/safeattach/safeattach/internal/safefile"
)

//go:generate go run ./internal/rulegen -o rules_gen.go rules

// Default returns the embedded knowledge base, compiled on first use. The
// rules are compiled into the binary as Go data (rules_gen.go, generated
// from rules/*.yaml), so no YAML is parsed unless an operator gives rule
// files of their own.
func Default() *RuleSet {
	set, err := defaultSet()
	if err != nil {
		// The embedded rules are tested; a broken build must not attach.
		panic("conflicts: embedded rules: " + err.Error())
	}
	return set
}

var defaultSet = sync.OnceValues(func() (*RuleSet, error) { return compile(embeddedRules(), true) })

// Load returns the embedded rules plus the rules in files. Each file is
// read under ctx as hostile input: a FIFO, a device or a file over
// MaxRuleFileSize is refused before it is read. Any error in any file,
// and any duplicate rule ID, fails the whole load: a typo never silently
// disables a rule.
func Load(ctx context.Context, files ...string) (*RuleSet, error) {
	if len(files) == 0 {
		if _, err := defaultSet(); err != nil {
			return nil, fmt.Errorf("embedded rules: %w", err)
		}
		return Default(), nil
	}
	rules := slices.Clone(embeddedRules())
	for _, f := range files {
		rf, err := safefile.Read(ctx, f, MaxRuleFileSize, safefile.Options{})
		if err != nil {
			return nil, fmt.Errorf("rule file: %w", err)
		}
		more, err := ParseRules(f, rf.Data)
		if err != nil {
			return nil, err
		}
		rules = append(rules, more...)
	}
	return Compile(rules...)
}
