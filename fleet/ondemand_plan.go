package fleet

import (
	"context"
	"errors"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/profiling"
	"github.com/safeattach/safeattach/profiling/flightrec"
)

// plan is how an on-demand request would profile a JVM: async-profiler
// (the first of the daemon's builds the rules allow) or the fallback
// engine, and the verdict that chose it.
type plan struct {
	builds []string
	engine profiling.Engine
	// verdict is the chosen engine's; with none allowed, the preferred
	// build's refusal.
	verdict conflicts.Verdict
	// fallbackFrom are the rules that refused every build when the
	// fallback engine was chosen.
	fallbackFrom []string
}

// allowed reports whether anything may profile the JVM.
func (p *plan) allowed() bool { return p.verdict.Allowed }

// apply makes req load what the plan chose: the session judges the
// builds again as it loads (what it loads is what it judged then).
// Where nothing is allowed, the profiling layer's refusal (with
// fallback's, if any) is the answer: what it says is what it found then.
func (p *plan) apply(req *profiling.SessionRequest, fallback profiling.Engine) {
	req.Lib, req.Builds, req.Engine = "", p.builds, p.engine
	if p.engine == profiling.FlightRecorder {
		req.Builds = nil
	}
	if !p.allowed() {
		req.Fallback = fallback
	}
}

// planFor judges the JVM pid as the continuous profiling does (sessions'
// startProfiler), sending it nothing: the daemon's builds in order of
// preference (attach.CheckBuilds); when none is allowed and a.fallback
// names the Flight Recorder, the Flight Recorder if the rules allow it.
// An error is one of the inspection (the JVM gone, unreadable).
func (o *onDemand) planFor(ctx context.Context, pid int, a *answer) (*plan, error) {
	opts := o.d.optionsFor(a.namespace)
	libs := o.d.agentLibs()
	res, err := attach.CheckBuilds(ctx, pid, libs, a.agentOptions, opts)
	if err != nil {
		return nil, err
	}
	p := &plan{builds: libs, engine: profiling.AsyncProfiler, verdict: res.Verdict}
	if p.allowed() || a.fallback != profiling.FlightRecorder {
		return p, nil
	}
	_, v, err := flightrec.Judge(ctx, pid, opts)
	var refused *attach.RefusedError
	switch {
	case err == nil:
		p.engine, p.verdict, p.fallbackFrom = profiling.FlightRecorder, v, res.Verdict.Causes()
	case errors.As(err, &refused):
		// Neither: the answer names both engines' findings.
		p.verdict.Findings = append(p.verdict.Findings, newFindings(p.verdict, refused.Verdict)...)
	default:
		return nil, err
	}
	return p, nil
}

// newFindings are the findings of v that have no finding of the same
// rule and severity in had.
func newFindings(had, v conflicts.Verdict) []conflicts.Finding {
	var out []conflicts.Finding
	for _, f := range v.Findings {
		seen := false
		for _, g := range had.Findings {
			seen = seen || (g.Rule == f.Rule && g.Severity == f.Severity)
		}
		if !seen {
			out = append(out, f)
		}
	}
	return out
}
