package attach

import (
	"context"
	"errors"
	"strings"

	"github.com/safeattach/safeattach/conflicts"
)

// judgeLaterBuilds follows a refusal of the preferred build (refusal) by
// judging each later build of builds, in order, against the same
// inspection of the JVM, and keeps the first the rules allow: its bytes,
// as read here, are what the door delivers. A build refused for what it
// is (or not there) passes to the next; a refusal of the JVM, which
// every build would meet, stops the search. With none allowed, or an
// error reading a build, the call is left as the preferred build's
// judgement, and its refusal (or the error) returned. The pick says
// which build was refused, by which rules, and which is loaded instead.
//
// The JVM is not inspected again for each build: what a later build is
// judged against is what the preferred one was, moments before, and the
// door then checks that the JVM is the one inspected before it sends
// anything (as for any single build).
func (c *call) judgeLaterBuilds(ctx context.Context, refusal error, builds []string, options string) (*AgentPick, error) {
	var refused *RefusedError
	if !errors.As(refusal, &refused) || !refused.ByAgent() {
		return nil, refusal
	}
	policy, err := c.opts.Policy(ctx)
	if err != nil {
		return nil, refusal
	}
	pick := &AgentPick{Refused: AlternativeOf(c.agent, ""), Rules: refused.Verdict.Causes()}
	agent, content, verdict := c.agent, c.content, c.verdict
	restore := func() { c.agent, c.content, c.verdict, c.passedOver = agent, content, verdict, nil }
	for _, b := range builds {
		c.log.Info("safeattach: the rules refuse this build for the JVM; judging the next of the builds given", "pid", c.pid,
			"refused", c.agent.Path, "version", c.agent.Version, "rules", c.verdict.Causes(), "next", b)
		c.passedOver = append(c.passedOver, passedOver(c.agent.Path, c.verdict.Causes()))
		if err := c.readAgent(ctx, b, options, true); err != nil {
			restore()
			return nil, err
		}
		c.opts.complete(ctx, c.report, c.agent, c.log)
		c.verdict = conflicts.Evaluate(c.report, c.agent, policy)
		if c.verdict.Allowed {
			c.log.Info("safeattach: verdict", "pid", c.pid, "op", c.op, "allowed", true, "agent", c.agent.Path, "sha256", c.agent.SHA256)
			pick.Picked = AlternativeOf(c.agent, "given")
			return pick, nil
		}
		if !refusedByAgent(c.verdict) {
			break
		}
	}
	c.log.Info("safeattach: the rules refuse every build given for the JVM; the preferred build's refusal is the answer", "pid", c.pid,
		"builds", len(builds)+1, "last", c.agent.Path, "last_rules", c.verdict.Causes())
	restore()
	return nil, refusal
}

// passedOver is a build refused here, for the audit record.
func passedOver(path string, rules []string) string {
	return path + " (" + strings.Join(rules, ", ") + ")"
}
