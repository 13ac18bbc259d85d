package conflicts

import (
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
)

// RuleSet is a checked, compiled, immutable set of rules: every fact name,
// test and template verified, every version constraint and number parsed
// once. Make one with Compile, Load or Default; the zero value and nil are
// not usable (Policy.Rules nil means Default()). A RuleSet is safe for
// concurrent use and shares nothing with the Rule values it was built
// from.
type RuleSet struct {
	rules []*compiledRule
	byID  map[string]*compiledRule
}

// compiledRule is a rule ready to evaluate, with its source kept for
// display.
type compiledRule struct {
	spec  Rule // a deep copy of the input, never handed out by reference
	cases []compiledCase
}

type compiledCase struct {
	severity        Severity
	when            *cond // nil: always
	message, remedy string
}

// cond is a compiled Condition.
type cond struct {
	all, any   []*cond
	not        *cond
	fact, op   string
	args       []string
	orUnknown  bool
	constraint *constraint // op "version"
	number     int         // ops "above", "below"
}

var leafOps = []string{"equals", "equals_fact", "one_of", "contains", "present", "version", "above", "below"}

const maxConditionDepth = 32

// Compile checks and compiles rules into a RuleSet. Every problem — an
// unknown fact, a test that does not suit the fact's type, a bad version
// constraint, a template naming an unknown fact, a block without a
// remedy, a duplicate ID — is an error naming the rule's source and line.
func Compile(rules ...Rule) (*RuleSet, error) {
	return compile(rules, false)
}

// compile compiles rules; owned rules (the embedded ones, static data
// never written) are referenced rather than deep-copied first.
func compile(rules []Rule, owned bool) (*RuleSet, error) {
	s := &RuleSet{byID: make(map[string]*compiledRule, len(rules))}
	for i := range rules {
		cr, err := compileRule(&rules[i], owned)
		if err != nil {
			return nil, err
		}
		if prev, dup := s.byID[cr.spec.ID]; dup {
			return nil, errAt(cr.spec.Source, 0, "rule %q is already defined at %s", cr.spec.ID, prev.spec.Source)
		}
		s.rules = append(s.rules, cr)
		s.byID[cr.spec.ID] = cr
	}
	return s, nil
}

// validID reports whether id is lower-case words joined by single '-'.
func validID(id string) bool {
	if id == "" || id[0] == '-' || id[len(id)-1] == '-' || strings.Contains(id, "--") {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < 'a' || c > 'z') && !isDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

func compileRule(r *Rule, owned bool) (*compiledRule, error) {
	src := r.Source
	if src == "" {
		src = "rule " + r.ID
	}
	switch {
	case !validID(r.ID):
		return nil, errAt(src, 0, "rule id %q: use lower-case words joined by '-'", r.ID)
	case r.Title == "":
		return nil, errAt(src, 0, "rule %s: no title", r.ID)
	case len(r.Cases) == 0:
		return nil, errAt(src, 0, "rule %s: want a non-empty 'cases:' list", r.ID)
	case slices.Contains(r.Cases, nil):
		return nil, errAt(src, 0, "rule %s: a nil case", r.ID)
	}
	// The compiled form refers to its own copy of the rule (its argument
	// lists, its strings): nothing the caller keeps can change it.
	cr := &compiledRule{spec: *r}
	if !owned {
		cr.spec = cloneRule(r)
	}
	for _, c := range cr.spec.Cases {
		var sev Severity
		if err := sev.UnmarshalText([]byte(c.Severity)); err != nil {
			return nil, errAt(src, c.Line, "%v", err)
		}
		if c.Severity != Info && c.Remedy == "" {
			return nil, errAt(src, c.Line, "a %s case needs a remedy", c.Severity)
		}
		for _, t := range []string{c.Message, c.Remedy} {
			if err := checkTemplate(t); err != nil {
				return nil, errAt(src, c.Line, "%v", err)
			}
		}
		cc := compiledCase{severity: c.Severity, message: c.Message, remedy: c.Remedy}
		if c.When != nil {
			w, err := compileCond(src, c.When, 0, owned)
			if err != nil {
				return nil, err
			}
			cc.when = w
		}
		cr.cases = append(cr.cases, cc)
	}
	return cr, nil
}

func compileCond(src string, c *Condition, depth int, owned bool) (*cond, error) {
	if depth > maxConditionDepth {
		return nil, errAt(src, c.Line, "conditions nested deeper than %d", maxConditionDepth)
	}
	kinds := 0
	out := &cond{}
	for _, part := range []struct {
		list []*Condition
		dst  *[]*cond
	}{{c.All, &out.all}, {c.Any, &out.any}} {
		if part.list == nil {
			continue
		}
		kinds++
		if len(part.list) == 0 {
			return nil, errAt(src, c.Line, "all/any: want a non-empty list of conditions")
		}
		for _, sub := range part.list {
			if sub == nil {
				return nil, errAt(src, c.Line, "a nil condition")
			}
			sc, err := compileCond(src, sub, depth+1, owned)
			if err != nil {
				return nil, err
			}
			*part.dst = append(*part.dst, sc)
		}
	}
	if c.Not != nil {
		kinds++
		n, err := compileCond(src, c.Not, depth+1, owned)
		if err != nil {
			return nil, err
		}
		out.not = n
	}
	if c.Fact != "" {
		kinds++
		if err := compileLeaf(src, c, out, owned); err != nil {
			return nil, err
		}
	} else if c.Op != "" || c.OrUnknown {
		return nil, errAt(src, c.Line, "%q needs a 'fact:' in the same condition", c.Op)
	}
	if kinds != 1 {
		return nil, errAt(src, c.Line, "a condition is exactly one of all, any, not or fact (found %d)", kinds)
	}
	return out, nil
}

// compileLeaf checks and compiles one test. A version constraint of the
// embedded rules (owned) is compiled on first use: they were checked when
// generated (TestEmbeddedSetIsTheCompiledData compiles them all).
func compileLeaf(src string, c *Condition, out *cond, owned bool) error {
	info, ok := lookupInfo(c.Fact)
	if !ok {
		return errAt(src, c.Line, "unknown fact %q%s", c.Fact, suggest(c.Fact))
	}
	out.fact, out.op, out.args, out.orUnknown = c.Fact, c.Op, c.Args, c.OrUnknown
	known := false
	for _, op := range leafOps {
		known = known || op == c.Op
	}
	switch {
	case c.Op == "":
		return errAt(src, c.Line, "fact %s: want one test of %s", c.Fact, strings.Join(leafOps, ", "))
	case !known:
		return errAt(src, c.Line, "fact %s: unknown test %q (want one of %s)", c.Fact, c.Op, strings.Join(leafOps, ", "))
	case c.Op != "one_of" && len(c.Args) != 1:
		return errAt(src, c.Line, "%s: want exactly one argument", c.Op)
	case c.Op == "one_of" && len(c.Args) == 0:
		return errAt(src, c.Line, "one_of: want a non-empty list")
	}
	arg := ""
	if len(c.Args) > 0 {
		arg = c.Args[0]
	}
	var err error
	switch c.Op {
	case "present":
		if arg != "true" && arg != "false" {
			return errAt(src, c.Line, "present: want true or false")
		}
	case "version":
		if info.Type != "version" {
			return errAt(src, c.Line, "version: fact %s is a %s, not a version", c.Fact, info.Type)
		}
		if owned {
			out.constraint = lazyConstraint(arg)
		} else if out.constraint, err = parseConstraint(arg); err != nil {
			return errAt(src, c.Line, "version constraint %q: %v", arg, err)
		}
	case "above", "below":
		if info.Type != "int" {
			return errAt(src, c.Line, "%s: fact %s is a %s, not a number", c.Op, c.Fact, info.Type)
		}
		if out.number, err = strconv.Atoi(arg); err != nil {
			return errAt(src, c.Line, "%s: want a whole number", c.Op)
		}
	case "equals_fact":
		if _, ok := lookupInfo(arg); !ok {
			return errAt(src, c.Line, "equals_fact: unknown fact %q%s", arg, suggest(arg))
		}
	case "contains":
		if info.Type != "list" && info.Type != "string" {
			return errAt(src, c.Line, "contains: fact %s is a %s", c.Fact, info.Type)
		}
	}
	return nil
}

// checkTemplate checks that every {fact} placeholder names a known fact.
func checkTemplate(s string) error {
	for name := range placeholders(s) {
		if _, ok := lookupInfo(strings.TrimSuffix(name, ".note")); !ok {
			return fmt.Errorf("template names unknown fact {%s}", name)
		}
	}
	return nil
}

// placeholders yields the names of the placeholders in s, in order.
func placeholders(s string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for {
			_, name, after, ok := cutPlaceholder(s)
			if !ok || !yield(name) {
				return
			}
			s = after
		}
	}
}

// cutPlaceholder finds the first placeholder in s — a '{' followed by no
// brace up to the next '}' — and returns the text before it, its name and
// the text after it. Braces that open no placeholder stay in before.
func cutPlaceholder(s string) (before, name, after string, found bool) {
	from := 0
	for {
		open := strings.IndexByte(s[from:], '{')
		if open < 0 {
			return s, "", "", false
		}
		open += from
		end := strings.IndexAny(s[open+1:], "{}")
		if end < 0 {
			return s, "", "", false
		}
		end += open + 1
		if s[end] == '{' {
			from = end
			continue
		}
		return s[:open], s[open+1 : end], s[end+1:], true
	}
}

// errAt makes a ParseError from a rule's "file:line" source and a line
// within it (0: the rule's own line).
func errAt(source string, line int, format string, args ...any) error {
	file, ruleLine := source, 0
	if i := strings.LastIndexByte(source, ':'); i > 0 {
		if n, err := strconv.Atoi(source[i+1:]); err == nil {
			file, ruleLine = source[:i], n
		}
	}
	if line == 0 {
		line = ruleLine
	}
	return &ParseError{File: file, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// cloneRule deep-copies a rule, so that a RuleSet shares nothing with
// its caller.
func cloneRule(r *Rule) Rule {
	c := *r
	c.References = append([]string(nil), r.References...)
	c.Cases = nil
	for _, k := range r.Cases {
		kc := *k
		kc.When = cloneCondition(k.When)
		c.Cases = append(c.Cases, &kc)
	}
	return c
}

func cloneCondition(c *Condition) *Condition {
	if c == nil {
		return nil
	}
	out := *c
	out.Args = append([]string(nil), c.Args...)
	out.Not = cloneCondition(c.Not)
	out.All, out.Any = nil, nil
	for _, s := range c.All {
		out.All = append(out.All, cloneCondition(s))
	}
	for _, s := range c.Any {
		out.Any = append(out.Any, cloneCondition(s))
	}
	return &out
}

// Rules returns copies of the rules in the set, in order.
func (s *RuleSet) Rules() []Rule {
	out := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = cloneRule(&r.spec)
	}
	return out
}

// Rule returns a copy of the rule with the given ID.
func (s *RuleSet) Rule(id string) (Rule, bool) {
	r, ok := s.byID[id]
	if !ok {
		return Rule{}, false
	}
	return cloneRule(&r.spec), true
}

// Len is the number of rules.
func (s *RuleSet) Len() int { return len(s.rules) }

// CheckAcks rejects acknowledgements that name no rule, or a hard rule:
// an --ack that cannot take effect must not look as if it did.
func (s *RuleSet) CheckAcks(acks []string) error {
	ids := make([]string, 0, len(s.rules))
	for _, r := range s.rules {
		ids = append(ids, r.spec.ID)
	}
	for _, a := range acks {
		r, ok := s.byID[a]
		switch {
		case a == RuleAgentDenylisted || a == RuleAgentNotAllowlisted || a == RuleNoReport:
			return fmt.Errorf("--ack %s: the operator's own policy cannot be acknowledged away", a)
		case !ok:
			return fmt.Errorf("--ack %s: no such rule%s", a, suggestAmong(a, ids))
		case r.spec.Hard:
			return fmt.Errorf("--ack %s: this rule protects the target itself (%s) and cannot be acknowledged", a, strings.ToLower(r.spec.Title))
		}
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
