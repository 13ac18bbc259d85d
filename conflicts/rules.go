package conflicts

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Severity is how strongly a finding speaks.
type Severity string

// Severities, strongest first.
const (
	Block Severity = "block"
	Warn  Severity = "warn"
	Info  Severity = "info"
)

func (s Severity) String() string { return string(s) }

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s), nil }

// UnmarshalText accepts only the three severities.
func (s *Severity) UnmarshalText(b []byte) error {
	switch v := Severity(b); v {
	case Block, Warn, Info:
		*s = v
		return nil
	}
	return fmt.Errorf("severity %q: want block, warn or info", b)
}

// Rule is one entry of the knowledge base: an ID and ordered cases, the
// first whose condition holds decides the finding. Rule, Case and
// Condition are plain data — what a rule file says, or what a program
// builds — and only inputs to Compile, which checks them and returns the
// immutable RuleSet that Evaluate applies.
type Rule struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Description string   `json:"description,omitempty"`
	References  []string `json:"references,omitempty"`
	Cases       []*Case  `json:"cases"`
	// Hard marks a rule that protects the target itself (not-a-jvm,
	// sigquit-not-handled, agent-untrusted, ...): its block cannot be
	// acknowledged, because no operator decision makes it safe.
	Hard bool `json:"hard,omitempty"`
	// Source is "file:line" of the rule's definition.
	Source string `json:"source"`
}

// Severity is the strongest severity any case of the rule can produce.
func (r *Rule) Severity() Severity {
	best := Info
	for _, c := range r.Cases {
		if rank(c.Severity) < rank(best) {
			best = c.Severity
		}
	}
	return best
}

// Case is one outcome of a rule.
type Case struct {
	Severity Severity   `json:"severity"`
	When     *Condition `json:"when,omitempty"`
	Message  string     `json:"message"`
	Remedy   string     `json:"remedy,omitempty"`
	Line     int        `json:"line"`
}

// Condition is a node of the condition language: a combinator (all, any,
// not) or a test of one fact.
type Condition struct {
	All []*Condition `json:"all,omitempty"`
	Any []*Condition `json:"any,omitempty"`
	Not *Condition   `json:"not,omitempty"`

	Fact string `json:"fact,omitempty"`
	// Op is one of equals, equals_fact (compares with another fact),
	// one_of, contains, present, version, above, below.
	Op   string   `json:"op,omitempty"`
	Args []string `json:"args,omitempty"`
	// OrUnknown makes a test of an unknown fact hold, for rules that must
	// assume the worst ("block when the unwinder is libunwind or unknown").
	OrUnknown bool `json:"or_unknown,omitempty"`
	Line      int  `json:"line"`
}

func rank(sev Severity) int {
	switch sev {
	case Block:
		return 0
	case Warn:
		return 1
	}
	return 2
}

// ParseError locates a problem in a rule file.
type ParseError struct {
	File   string
	Line   int
	Reason string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

type parser struct {
	file string
	// nodes counts the nodes compiled, aliases expanded.
	nodes int
}

// spend charges one compiled node against the budget.
func (p *parser) spend(n *yaml.Node) error {
	p.nodes++
	if p.nodes > maxExpandedNodes {
		return p.errf(n, "the rules expand to more than %d nodes (aliases used too often?)", maxExpandedNodes)
	}
	return nil
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ParseError{File: p.file, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// MaxRuleFileSize bounds a rule file: the embedded base is about 25 KiB.
const MaxRuleFileSize = 256 << 10

// Budgets that keep a hostile rule file to a few MiB of memory. YAML
// nodes are separated by one of ",-:[{?\n", so counting those bounds the
// parse tree before it is built; maxExpandedNodes bounds what aliases
// (which the rule language allows, to share a condition) expand to when
// rules are compiled, which is what a "billion laughs" file attacks.
const (
	maxSeparators    = 50000
	maxExpandedNodes = 10000 // the embedded rules compile to about 560
)

// ParseRules parses one rule file. Every problem (a key nobody reads, an
// unknown fact, a bad version constraint, a template naming an unknown
// fact) is an error with the file and line: a typo never silently
// disables a rule.
func ParseRules(file string, data []byte) (rules []Rule, err error) {
	p := &parser{file: file}
	defer func() {
		if err == nil {
			// The meaning (facts, tests, constraints, templates) is
			// checked where Go-built rules are checked too.
			_, err = Compile(rules...)
		}
	}()
	if len(data) > MaxRuleFileSize {
		return nil, &ParseError{File: file, Line: 1, Reason: fmt.Sprintf("file larger than %d KiB", MaxRuleFileSize>>10)}
	}
	if n := bytes.Count(data, []byte(",")) + bytes.Count(data, []byte("-")) + bytes.Count(data, []byte(":")) +
		bytes.Count(data, []byte("[")) + bytes.Count(data, []byte("{")) + bytes.Count(data, []byte("?")) + bytes.Count(data, []byte("\n")); n > maxSeparators {
		return nil, &ParseError{File: file, Line: 1, Reason: fmt.Sprintf("too many YAML nodes (%d separators, at most %d)", n, maxSeparators)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &ParseError{File: file, Line: yamlErrLine(err), Reason: err.Error()}
	}
	if doc.Kind == 0 {
		return nil, &ParseError{File: file, Line: 1, Reason: "empty rule file"}
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	fields, err := p.mapping(root, "definitions", "rules")
	if err != nil {
		return nil, err
	}
	list := fields["rules"]
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, p.errf(root, "want a top-level 'rules:' list")
	}
	for _, n := range list.Content {
		r, err := p.rule(resolve(n))
		if err != nil {
			return nil, err
		}
		rules = append(rules, *r)
	}
	return rules, nil
}

var yamlLineRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`line ([0-9]+)`) })

func yamlErrLine(err error) int {
	if m := yamlLineRe().FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

// resolve follows YAML aliases (*name), which let one condition, such as
// "an affected agent build", be written once and used by several rules.
func resolve(n *yaml.Node) *yaml.Node {
	for depth := 0; n != nil && n.Kind == yaml.AliasNode && depth < 16; depth++ {
		n = n.Alias
	}
	return n
}

// mapping checks that n is a mapping whose keys are all in allowed, and
// returns the values by key.
func (p *parser) mapping(n *yaml.Node, allowed ...string) (map[string]*yaml.Node, error) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "want a mapping with keys %s", strings.Join(allowed, ", "))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if !contains(allowed, k.Value) {
			return nil, p.errf(k, "unknown key %q (want one of %s)", k.Value, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, p.errf(k, "key %q given twice", k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}

func (p *parser) str(n *yaml.Node, what string) (string, error) {
	if err := p.spend(n); err != nil {
		return "", err
	}
	if n == nil || n.Kind != yaml.ScalarNode {
		return "", p.errf(n, "%s: want a string", what)
	}
	return n.Value, nil
}

func (p *parser) strs(n *yaml.Node, what string) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s: want a list of strings", what)
	}
	var out []string
	for _, c := range n.Content {
		s, err := p.str(resolve(c), what)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) rule(n *yaml.Node) (*Rule, error) {
	f, err := p.mapping(n, "id", "title", "description", "references", "hard", "cases")
	if err != nil {
		return nil, err
	}
	r := &Rule{Source: fmt.Sprintf("%s:%d", p.file, n.Line)}
	if r.ID, err = p.str(f["id"], "id"); err != nil {
		return nil, err
	}
	if !validID(r.ID) {
		return nil, p.errf(f["id"], "rule id %q: use lower-case words joined by '-'", r.ID)
	}
	if r.Title, err = p.str(f["title"], "title"); err != nil {
		return nil, err
	}
	if d := f["description"]; d != nil {
		if r.Description, err = p.str(d, "description"); err != nil {
			return nil, err
		}
	}
	if h := f["hard"]; h != nil {
		if h.Kind != yaml.ScalarNode || (h.Value != "true" && h.Value != "false") {
			return nil, p.errf(h, "hard: want true or false")
		}
		r.Hard = h.Value == "true"
	}
	if refs := f["references"]; refs != nil {
		if r.References, err = p.strs(refs, "references"); err != nil {
			return nil, err
		}
	}
	cases := f["cases"]
	if cases == nil || cases.Kind != yaml.SequenceNode || len(cases.Content) == 0 {
		return nil, p.errf(n, "rule %s: want a non-empty 'cases:' list", r.ID)
	}
	for _, cn := range cases.Content {
		c, err := p.ruleCase(resolve(cn))
		if err != nil {
			return nil, err
		}
		r.Cases = append(r.Cases, c)
	}
	return r, nil
}

func (p *parser) ruleCase(n *yaml.Node) (*Case, error) {
	f, err := p.mapping(n, "severity", "when", "message", "remedy")
	if err != nil {
		return nil, err
	}
	c := &Case{Line: n.Line}
	sev, err := p.str(f["severity"], "severity")
	if err != nil {
		return nil, err
	}
	if err := c.Severity.UnmarshalText([]byte(sev)); err != nil {
		return nil, p.errf(f["severity"], "%v", err)
	}
	if w := f["when"]; w != nil {
		if c.When, err = p.condition(w, 0); err != nil {
			return nil, err
		}
	}
	if c.Message, err = p.str(f["message"], "message"); err != nil {
		return nil, err
	}
	if r := f["remedy"]; r != nil {
		if c.Remedy, err = p.str(r, "remedy"); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (p *parser) condition(n *yaml.Node, depth int) (*Condition, error) {
	if err := p.spend(n); err != nil {
		return nil, err
	}
	if depth > maxConditionDepth {
		return nil, p.errf(n, "conditions nested deeper than %d", maxConditionDepth)
	}
	f, err := p.mapping(n, append([]string{"all", "any", "not", "fact", "or_unknown"}, leafOps...)...)
	if err != nil {
		return nil, err
	}
	c := &Condition{Line: n.Line}
	kinds := 0
	for _, comb := range []string{"all", "any"} {
		list := f[comb]
		if list == nil {
			continue
		}
		kinds++
		if list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
			return nil, p.errf(list, "%s: want a non-empty list of conditions", comb)
		}
		for _, sub := range list.Content {
			sc, err := p.condition(resolve(sub), depth+1)
			if err != nil {
				return nil, err
			}
			if comb == "all" {
				c.All = append(c.All, sc)
			} else {
				c.Any = append(c.Any, sc)
			}
		}
	}
	if nn := f["not"]; nn != nil {
		kinds++
		if c.Not, err = p.condition(nn, depth+1); err != nil {
			return nil, err
		}
	}
	if fn := f["fact"]; fn != nil {
		kinds++
		if err := p.leaf(c, fn, f); err != nil {
			return nil, err
		}
	} else {
		for _, op := range append([]string{"or_unknown"}, leafOps...) {
			if f[op] != nil {
				return nil, p.errf(f[op], "%q needs a 'fact:' in the same condition", op)
			}
		}
	}
	if kinds != 1 {
		return nil, p.errf(n, "a condition is exactly one of all, any, not or fact (found %d)", kinds)
	}
	return c, nil
}

func (p *parser) leaf(c *Condition, fn *yaml.Node, f map[string]*yaml.Node) error {
	var err error
	if c.Fact, err = p.str(fn, "fact"); err != nil {
		return err
	}
	for _, op := range leafOps {
		if f[op] == nil {
			continue
		}
		if c.Op != "" {
			return p.errf(f[op], "one test per condition: both %s and %s given", c.Op, op)
		}
		c.Op = op
		arg := f[op]
		switch op {
		case "one_of":
			if c.Args, err = p.strs(arg, op); err != nil {
				return err
			}
		default:
			s, err := p.str(arg, op)
			if err != nil {
				return err
			}
			c.Args = []string{s}
		}
	}
	if ou := f["or_unknown"]; ou != nil {
		if ou.Kind != yaml.ScalarNode || (ou.Value != "true" && ou.Value != "false") {
			return p.errf(ou, "or_unknown: want true or false")
		}
		c.OrUnknown = ou.Value == "true"
	}
	return nil
}

// suggest names the closest vocabulary entries for a misspelt fact.
func suggest(name string) string {
	names := make([]string, len(factList))
	for i, f := range factList {
		names[i] = f.Name
	}
	if s := suggestAmong(name, names); s != "" {
		return s
	}
	return " (see 'safeattach rules --facts')"
}

// suggestAmong names the closest of names to name, if any is close.
func suggestAmong(name string, names []string) string {
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	for _, n := range names {
		if d := editDistance(name, n); d <= 3 {
			cs = append(cs, cand{n, d})
		}
	}
	if len(cs) == 0 {
		return ""
	}
	sort.Slice(cs, func(a, b int) bool { return cs[a].d < cs[b].d })
	return fmt.Sprintf(" (did you mean %s?)", cs[0].name)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
