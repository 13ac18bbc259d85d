package conflicts

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/safeattach/safeattach/preflight"
)

// Policy is the operator's say over the knowledge base. The zero value
// applies the default rules with no overrides.
type Policy struct {
	// Rules to apply; nil means Default().
	Rules *RuleSet
	// Acks downgrades a block finding of each named rule to an
	// acknowledged warning. There is no blanket override.
	Acks []string
	// Strict turns every unacknowledged warning into a block.
	Strict bool
	// AllowAgents, when not empty, admits only agents whose path or
	// SHA-256 is listed. DenyAgents refuses the listed ones. Both name
	// agent libraries: the JVM's Flight Recorder, which loads none, is
	// judged by the rules alone.
	AllowAgents []string
	DenyAgents  []string
}

// Verdict is the outcome of Evaluate.
type Verdict struct {
	Allowed  bool      `json:"allowed"`
	Findings []Finding `json:"findings"`
	// Acknowledged lists the --ack rule IDs that downgraded a finding.
	Acknowledged []string `json:"acknowledged,omitempty"`
}

// Blocking returns the IDs of the rules that refuse the attach.
func (v Verdict) Blocking() []string {
	var ids []string
	for _, f := range v.Findings {
		if f.Severity == Block {
			ids = append(ids, f.Rule)
		}
	}
	return ids
}

// Causes returns the rules that explain a refusal: the blocks decided
// from what was seen. A block that only assumed the worst about a fact
// it could not read (not-a-jvm when the memory map is unreadable) is a
// consequence of the same cause, not another one — a non-root user
// against a root JVM is refused by credentials-mismatch, and that is the
// one thing to fix. When every block is undetermined, they are all the
// cause. Causes is empty when the attach is allowed.
func (v Verdict) Causes() []string {
	var decided, all []string
	for _, f := range v.Findings {
		if f.Severity != Block {
			continue
		}
		all = append(all, f.Rule)
		if !f.Undetermined {
			decided = append(decided, f.Rule)
		}
	}
	if len(decided) > 0 {
		return decided
	}
	return all
}

// Finding is one rule's conclusion about this target and agent.
type Finding struct {
	Rule       string   `json:"rule"`
	Severity   Severity `json:"severity"`
	Message    string   `json:"message"`
	Remedy     string   `json:"remedy,omitempty"`
	Evidence   []string `json:"evidence"`
	References []string `json:"references,omitempty"`
	// Acknowledged: a block downgraded by --ack. Escalated: a warning
	// made a block by --strict. Undetermined: the rule could not decide
	// because a fact it needs is unknown (a warning saying so, or a case
	// that assumes the worst with or_unknown).
	Acknowledged bool `json:"acknowledged,omitempty"`
	Escalated    bool `json:"escalated,omitempty"`
	Undetermined bool `json:"undetermined,omitempty"`
	// Hard: the rule protects the target itself; --ack cannot lift it.
	Hard bool `json:"hard,omitempty"`
}

// Rule IDs produced by the policy rather than the knowledge base.
const (
	RuleAgentDenylisted     = "agent-denylisted"
	RuleAgentNotAllowlisted = "agent-not-allowlisted"
)

// RuleNoReport is the finding for a report that says nothing about a
// process: nothing can be judged, so nothing is allowed.
const RuleNoReport = "no-report"

// Evaluate applies the rules to a report and an agent (nil when nothing
// is to be loaded, as for jcmd). It is a pure function of its inputs. A
// nil report, or one that names no process, is refused with an
// undetermined finding: the absence of evidence is never permission.
func Evaluate(report *preflight.Report, agent *preflight.Agent, policy Policy) Verdict {
	if report == nil || report.PID <= 0 {
		return Verdict{Findings: []Finding{{
			Rule: RuleNoReport, Severity: Block, Undetermined: true, Hard: true,
			Message:  "there is no inspection of the target to judge",
			Remedy:   "Inspect the process with preflight.Inspect and evaluate its report.",
			Evidence: []string{},
		}}}
	}
	rules := policy.Rules
	if rules == nil {
		rules = Default()
	}
	facts := BuildFacts(report, agent)
	var v Verdict
	for _, r := range rules.rules {
		if f, ok := evaluateRule(r, facts); ok {
			v.Findings = append(v.Findings, f)
		}
	}
	v.Findings = append(v.Findings, agentPolicy(agent, policy)...)
	for i := range v.Findings {
		f := &v.Findings[i]
		switch {
		case f.Severity == Block && !f.Hard && slices.Contains(policy.Acks, f.Rule):
			f.Severity, f.Acknowledged = Warn, true
			v.Acknowledged = append(v.Acknowledged, f.Rule)
		case f.Severity == Warn && policy.Strict:
			f.Severity, f.Escalated = Block, true
		}
	}
	sort.SliceStable(v.Findings, func(a, b int) bool {
		fa, fb := v.Findings[a], v.Findings[b]
		if rank(fa.Severity) != rank(fb.Severity) {
			return rank(fa.Severity) < rank(fb.Severity)
		}
		return fa.Rule < fb.Rule
	})
	if v.Findings == nil {
		v.Findings = []Finding{}
	}
	v.Allowed = len(v.Blocking()) == 0
	return v
}

// agentPolicy applies the allow and deny lists, which name agent
// libraries: an assumed agent and the JVM's Flight Recorder have none.
func agentPolicy(a *preflight.Agent, p Policy) []Finding {
	if a == nil || a.Assumed || a.Kind == preflight.AgentFlightRecorder || (len(p.AllowAgents) == 0 && len(p.DenyAgents) == 0) {
		return nil
	}
	matches := func(list []string) string {
		for _, x := range list {
			if x != "" && (x == a.Path || x == a.RealPath || strings.EqualFold(x, a.SHA256)) {
				return x
			}
		}
		return ""
	}
	ev := []string{"agent.path = " + a.Path, "agent.sha256 = " + a.SHA256}
	if m := matches(p.DenyAgents); m != "" {
		return []Finding{{Rule: RuleAgentDenylisted, Severity: Block, Hard: true, Evidence: ev,
			Message: fmt.Sprintf("the agent %s is on the deny list (%s)", a.Path, m),
			Remedy:  "use an agent that policy admits"}}
	}
	if len(p.AllowAgents) > 0 && matches(p.AllowAgents) == "" {
		return []Finding{{Rule: RuleAgentNotAllowlisted, Severity: Block, Hard: true, Evidence: ev,
			Message: fmt.Sprintf("the agent %s (sha256 %s) is not on the allow list", a.Path, a.SHA256),
			Remedy:  "add its path or SHA-256 to the allow list, or use an admitted agent"}}
	}
	return nil
}

type tri int8

const (
	triFalse tri = iota
	triTrue
	triUnknown
)

// evaluation collects, while a condition is evaluated, the facts it
// looked at and the unknown ones it met.
type evaluation struct {
	facts   Facts
	used    []string
	unknown []string
	// assumed: a test of an unknown fact held by or_unknown, so a case
	// that holds may hold only by assuming the worst.
	assumed bool
}

func (e *evaluation) use(name string) {
	if !slices.Contains(e.used, name) {
		e.used = append(e.used, name)
	}
}

func evaluateRule(cr *compiledRule, facts Facts) (Finding, bool) {
	r := &cr.spec
	var undetermined *Finding
	var undeterminedSeverity Severity
	for _, c := range cr.cases {
		if undetermined != nil && rank(c.severity) > rank(undeterminedSeverity) {
			// An earlier case might hold: a milder later one cannot decide.
			continue
		}
		e := &evaluation{facts: facts}
		res := triTrue
		if c.when != nil {
			res = e.eval(c.when)
		}
		switch {
		case res == triTrue:
			return Finding{
				Rule: r.ID, Severity: c.severity, Hard: r.Hard, Undetermined: e.assumed,
				Message:    render(c.message, facts),
				Remedy:     render(c.remedy, facts),
				Evidence:   e.evidence(),
				References: slices.Clone(r.References),
			}, true
		case res == triUnknown && c.severity != Info && undetermined == nil:
			// Unknown is not a pass: say what could not be determined,
			// unless a later case as severe holds (one that assumes the
			// worst with or_unknown says so in its own words).
			undetermined = &Finding{
				Rule: r.ID, Severity: Warn, Undetermined: true, Hard: r.Hard,
				Message: fmt.Sprintf("could not determine whether this applies: %s (%s)",
					strings.TrimSuffix(r.Title, "."), strings.Join(e.unknown, "; ")),
				Remedy:     render(c.remedy, facts),
				Evidence:   e.evidence(),
				References: slices.Clone(r.References),
			}
			undeterminedSeverity = c.severity
		}
	}
	if undetermined != nil {
		return *undetermined, true
	}
	return Finding{}, false
}

func (e *evaluation) addUnknown(s string) {
	if !slices.Contains(e.unknown, s) {
		e.unknown = append(e.unknown, s)
	}
}

func (e *evaluation) evidence() []string {
	out := []string{}
	for _, name := range e.used {
		f, ok := e.facts[name]
		switch {
		case !ok:
			out = append(out, name+" is not set")
		case f.Unknown != "":
			out = append(out, fmt.Sprintf("%s is unknown: %s", name, f.Unknown))
		case f.Note != "":
			out = append(out, fmt.Sprintf("%s = %s (%s)", name, f.display(), f.Note))
		default:
			out = append(out, fmt.Sprintf("%s = %s", name, f.display()))
		}
	}
	return out
}

func (e *evaluation) eval(c *cond) tri {
	switch {
	case c.all != nil:
		res := triTrue
		for _, sub := range c.all {
			switch e.eval(sub) {
			case triFalse:
				return triFalse
			case triUnknown:
				res = triUnknown
			}
		}
		return res
	case c.any != nil:
		res := triFalse
		for _, sub := range c.any {
			switch e.eval(sub) {
			case triTrue:
				return triTrue
			case triUnknown:
				res = triUnknown
			}
		}
		return res
	case c.not != nil:
		switch e.eval(c.not) {
		case triTrue:
			return triFalse
		case triFalse:
			return triTrue
		}
		return triUnknown
	}
	return e.leaf(c)
}

// leaf tests one fact. A fact the report could not read makes the test
// unknown (true under or_unknown); an absent fact fails every test but
// "present". A fact that makes a test hold is used: it becomes the
// finding's evidence.
func (e *evaluation) leaf(c *cond) tri {
	f, ok := e.facts[c.fact]
	if ok && f.Unknown != "" {
		return e.unknownFact(c, f)
	}
	if c.op == "present" {
		if ok == (c.args[0] == "true") {
			e.use(c.fact)
			return triTrue
		}
		return triFalse
	}
	if !ok {
		// Testing an absent fact: false (an unset flag does not equal true).
		return triFalse
	}
	res := e.test(c, f)
	if res == triTrue {
		e.use(c.fact)
	}
	return res
}

// unknownFact is a test of a fact the report could not read: assumed
// true under or_unknown, else unknown with the report's reason.
func (e *evaluation) unknownFact(c *cond, f Fact) tri {
	e.use(c.fact)
	if c.orUnknown {
		e.assumed = true
		return triTrue
	}
	e.addUnknown(fmt.Sprintf("%s: %s", c.fact, f.Unknown))
	return triUnknown
}

// test applies c's operator to a fact that is present and known.
func (e *evaluation) test(c *cond, f Fact) tri {
	switch c.op {
	case "equals":
		return triOf(f.display() == c.args[0])
	case "equals_fact":
		return e.equalsFact(c.args[0], f)
	case "one_of":
		return triOf(slices.Contains(c.args, f.display()))
	case "contains":
		switch v := f.Value.(type) {
		case []string:
			return triOf(slices.Contains(v, c.args[0]))
		case string:
			return triOf(strings.Contains(v, c.args[0]))
		}
	case "version":
		return e.versionTest(c, f)
	case "above", "below":
		n, _ := f.Value.(int)
		return triOf((c.op == "above" && n > c.number) || (c.op == "below" && n < c.number))
	}
	return triFalse
}

func triOf(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

// equalsFact compares f with another fact: false when that one is
// absent, unknown (with its reason) when it could not be read.
func (e *evaluation) equalsFact(name string, f Fact) tri {
	other, ok := e.facts[name]
	switch {
	case !ok:
		return triFalse
	case other.Unknown != "":
		e.use(name)
		e.addUnknown(fmt.Sprintf("%s: %s", name, other.Unknown))
		return triUnknown
	}
	return triOf(other.display() == f.display())
}

// versionTest checks the fact's version against c's constraint. A value
// that is not a version is unknown (true under or_unknown, as an unread
// fact is); so is a constraint that does not compile (an embedded
// rule's is compiled only when first used).
func (e *evaluation) versionTest(c *cond, f Fact) tri {
	s, _ := f.Value.(string)
	v, err := ParseVersion(s)
	if err != nil {
		e.use(c.fact)
		e.addUnknown(fmt.Sprintf("%s: %v", c.fact, err))
		if c.orUnknown {
			e.assumed = true
			return triTrue
		}
		return triUnknown
	}
	ok, err := c.constraint.satisfies(v)
	if err != nil {
		e.use(c.fact)
		e.addUnknown(fmt.Sprintf("%s: constraint %q: %v", c.fact, c.constraint, err))
		return triUnknown
	}
	return triOf(ok)
}

// render fills {fact} and {fact.note} placeholders (as placeholders finds
// them; other braces are kept).
func render(tmpl string, facts Facts) string {
	var b strings.Builder
	for {
		before, name, after, ok := cutPlaceholder(tmpl)
		if !ok {
			break
		}
		b.WriteString(before)
		b.WriteString(fill(name, facts))
		tmpl = after
	}
	b.WriteString(tmpl)
	return b.String()
}

func fill(name string, facts Facts) string {
	if base, ok := strings.CutSuffix(name, ".note"); ok {
		if f, ok := facts[base]; ok && f.Note != "" {
			return f.Note
		}
		return "no detail"
	}
	if f, ok := facts[name]; ok {
		return f.display()
	}
	return "(not set)"
}
