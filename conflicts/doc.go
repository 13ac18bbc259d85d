// Package conflicts is safeattach's knowledge base of dangerous
// combinations and the engine that applies it.
//
// Rules are data: YAML files (the defaults are embedded from rules/) whose
// conditions test named facts about a preflight.Report and a
// preflight.Agent. Evaluate is a pure function of the report, the agent
// and the policy; it opens nothing and sends nothing.
//
// Three-valued logic keeps "cannot tell" from passing as "safe": a fact
// that could not be determined makes the conditions that test it unknown,
// and a block case whose condition is unknown still yields a warning that
// says what could not be determined and why.
package conflicts
