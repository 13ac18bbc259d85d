package attach

import (
	"errors"
	"fmt"
	"strings"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/diagnose"
)

// ErrRefused is what every refusal unwraps to.
var ErrRefused = errors.New("refused by preflight")

// RefusedError is a refusal: nothing was sent to the target.
type RefusedError struct {
	PID     int
	Verdict conflicts.Verdict
	// Reason is set when the refusal came after the verdict allowed the
	// attach: no place in the target could take the agent's bytes.
	Reason string
	// Alternatives are the other async-profiler builds on this host the
	// rules allow for this JVM (agent discovery's places and the builds
	// other processes map), in discovery's order: set when the refusal
	// is the rules' judgement of the agent (ByAgent).
	Alternatives []Alternative
}

func (e *RefusedError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("pid %d: attach refused: %s", e.PID, e.Reason)
	}
	var msgs []string
	for _, f := range e.Verdict.Findings {
		if f.Severity == conflicts.Block {
			msgs = append(msgs, f.Rule+": "+f.Message)
		}
	}
	return fmt.Sprintf("pid %d: attach refused: %s%s", e.PID, strings.Join(msgs, "; "), e.AlternativeHint())
}

// AlternativeHint is "; async-profiler 4.5 at P is allowed here: --agent
// P", naming the first of Alternatives, or "" when there is none.
func (e *RefusedError) AlternativeHint() string {
	if len(e.Alternatives) == 0 {
		return ""
	}
	a := e.Alternatives[0]
	return fmt.Sprintf("; %s is allowed here: --agent %s", a, a.Path)
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// HangError is a target that stopped answering during or after an attach.
// It unwraps to hotspot.ErrTimeout and to the error of the step that
// waited.
type HangError struct {
	PID int
	// Step is what was waited for: "load", "health check", "jcmd"...
	Step   string
	Report *diagnose.HangReport
	Err    error
}

func (e *HangError) Error() string {
	s := fmt.Sprintf("pid %d: no answer to %s: %v", e.PID, e.Step, e.Err)
	if e.Report != nil {
		s += "; " + e.Report.Conclusion
	}
	return s
}

func (e *HangError) Unwrap() []error { return []error{hotspot.ErrTimeout, e.Err} }
