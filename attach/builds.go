package attach

import (
	"context"
	"errors"

	"github.com/safeattach/safeattach/conflicts"
)

// judgeLaterBuilds follows a refusal of the preferred build (refusal) by
// judging each later build of builds, in order, against the same
// inspection of the JVM, and keeps the first the rules allow: its bytes,
// as read here, are what the door delivers. A build refused for what it
// is passes to the next; a refusal of the JVM, which every build would
// meet, stops the search. With none allowed, the call is left as the
// preferred build's judgement and its refusal returned; an error reading
// a build is returned as it is. The pick says which build was refused,
// by which rules, and which is loaded instead.
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
	for _, b := range builds {
		c.log.Info("safeattach: the rules refuse this build for the JVM; judging the next of the builds given", "pid", c.pid,
			"refused", c.agent.Path, "version", c.agent.Version, "rules", c.verdict.Causes(), "next", b)
		if err := c.readAgent(ctx, b, options); err != nil {
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
	c.agent, c.content, c.verdict = agent, content, verdict
	return nil, refusal
}
