// Package conflicts is safeattach's knowledge base of dangerous
// combinations and the engine that applies it.
//
// Rules are data: YAML files (the defaults, rules/*.yaml, are compiled
// into the binary as Go data by go generate) whose conditions test named
// facts about a preflight.Report and a preflight.Agent. A RuleSet is the
// checked, compiled, immutable form: Default for the embedded rules, Load
// to add operator rule files (read as hostile input, bounded in size and
// in alias expansion), Compile for rules built in Go. Evaluate is a pure
// function of the report, the agent and the policy; it opens nothing and
// sends nothing.
//
// Three-valued logic keeps "cannot tell" from passing as "safe": a fact
// that could not be determined makes the conditions that test it unknown,
// and a block case whose condition is unknown still yields a warning that
// says what could not be determined and why. Hard rules — those that
// protect the target itself — cannot be acknowledged.
//
// The rule catalogue is docs/rules.md.
package conflicts
