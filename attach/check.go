package attach

import (
	"context"
	"fmt"
	"slices"
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
	var builds []string
	if agentPath != "" {
		builds = []string{agentPath}
	}
	return CheckBuilds(ctx, pid, builds, agentOptions, opts)
}

// CheckBuilds is Check for the first of several async-profiler builds,
// in order of preference, that the rules allow for pid (what a door
// given DoorRequest.Builds would load): pid is inspected once and each
// build judged against that inspection, moving past a build refused for
// what it is (RefusedError.ByAgent) and stopping at a refusal of the
// JVM, which every build would meet. With none allowed, the result is
// the preferred build's, with the alternatives on this host. No builds
// is the installed one (FindAgent); none may be empty.
func CheckBuilds(ctx context.Context, pid int, builds []string, agentOptions string, opts Options) (*CheckResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if slices.Contains(builds, "") {
		return nil, fmt.Errorf("%w: an empty path among the builds", ErrInvalidOptions)
	}
	if len(builds) == 0 {
		builds = []string{""}
	}
	ctx, cancel := opts.withDeadline(ctx, DefaultJcmdTimeout)
	defer cancel()
	policy, err := opts.Policy(ctx)
	if err != nil {
		return nil, err
	}
	var report *preflight.Report
	var preferred *CheckResult
	for _, b := range builds {
		agent, err := FindAgent(ctx, b)
		if err != nil {
			return nil, err
		}
		agent.Options = agentOptions
		if report == nil {
			if report, err = preflight.Inspect(ctx, pid, preflight.Options{}); err != nil {
				return nil, err
			}
		}
		opts.complete(ctx, report, agent, opts.logger())
		res := &CheckResult{Report: report, Agent: agent, Verdict: conflicts.Evaluate(report, agent, policy)}
		if res.Verdict.Allowed {
			return res, nil
		}
		if preferred == nil {
			preferred = res
		}
		if !refusedByAgent(res.Verdict) {
			break
		}
	}
	preferred.Alternatives = alternatives(ctx, report, preferred.Agent, preferred.Verdict, policy, agentSources{})
	return preferred, nil
}
