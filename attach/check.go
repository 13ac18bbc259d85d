package attach

import (
	"context"
	"strings"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
)

// FindAgent describes the agent a call is about: the library at path;
// with no path, the installed async-profiler ($ASYNC_PROFILER_HOME, asprof
// on PATH, the usual install locations); with none installed, the worst
// plausible agent (assumedAgent), whose evidence says what was
// searched. Only a path that cannot be read at all under ctx is an error;
// a missing or unusable file is described for the rules to refuse.
func FindAgent(ctx context.Context, path string) (*preflight.Agent, error) {
	if path == "" {
		found, searched := findInstalled()
		if found == "" {
			a := assumedAgent()
			a.Evidence = append(a.Evidence, "searched "+strings.Join(searched, ", "))
			return a, nil
		}
		path = found
	}
	return preflight.InspectAgent(ctx, installLibrary(path))
}

// CheckResult is a dry run's judgement.
type CheckResult struct {
	Report  *preflight.Report `json:"report"`
	Agent   *preflight.Agent  `json:"agent"`
	Verdict conflicts.Verdict `json:"verdict"`
	// Alternatives are, for a refusal by the rules' judgement of the
	// agent, the other async-profiler builds on this host they allow
	// (see RefusedError.Alternatives).
	Alternatives []Alternative `json:"alternatives,omitempty"`
}

// Check is Load without the load: it finds and reads the agent
// (FindAgent; agentPath may be empty), inspects pid and evaluates the
// rules under opts, and returns the verdict. Nothing is sent to the
// target. A refusal is not an error here: it is in Verdict.
func Check(ctx context.Context, pid int, agentPath, agentOptions string, opts Options) (*CheckResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := opts.withDeadline(ctx, DefaultJcmdTimeout)
	defer cancel()
	policy, err := opts.Policy(ctx)
	if err != nil {
		return nil, err
	}
	agent, err := FindAgent(ctx, agentPath)
	if err != nil {
		return nil, err
	}
	agent.Options = agentOptions
	report, err := preflight.Inspect(ctx, pid, preflight.Options{})
	if err != nil {
		return nil, err
	}
	opts.complete(ctx, report, agent, opts.logger())
	res := &CheckResult{Report: report, Agent: agent, Verdict: conflicts.Evaluate(report, agent, policy)}
	res.Alternatives = alternatives(ctx, report, agent, res.Verdict, policy, agentSources{})
	return res, nil
}
