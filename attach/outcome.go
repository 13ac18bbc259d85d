package attach

import (
	"context"
	"errors"

	"github.com/safeattach/safeattach/attach/hotspot"
)

// Outcome classifies how a call ended. The CLI's exit codes, the audit
// record and the examples all take it from OutcomeOf, so they cannot
// disagree about what an error means.
type Outcome string

// Outcomes, with the CLI's exit code for each.
const (
	OutcomeOK          Outcome = "ok"          // 0
	OutcomeInvalid     Outcome = "invalid"     // 1: the call's own options or inputs are unusable
	OutcomeError       Outcome = "error"       // 1: anything not classified below
	OutcomeRefused     Outcome = "refused"     // 2: refused before anything was sent (or before a running profiler was disturbed)
	OutcomeFailed      Outcome = "failed"      // 3: the attach or the agent failed, or the JVM exited during it
	OutcomeTimedOut    Outcome = "timed-out"   // 4: the deadline passed (a hang report when one could be made)
	OutcomeInterrupted Outcome = "interrupted" // the caller cancelled the call
)

func (o Outcome) String() string { return string(o) }

// ErrProfilerBusy: another session or tool runs a profiler in the JVM;
// the profiling layer's refusal to disturb it (its BusyError) unwraps to
// this. It is a refusal: nothing was disturbed.
var ErrProfilerBusy = errors.New("a profiler is already running in the JVM")

// ErrConversionFailed: what the profiler wrote could not be made into
// the output asked for (a recording the bounded converter refused or
// could not read): the profiling layer wraps its converter's failures in
// it, and it is a failure of the call, as an agent's is.
var ErrConversionFailed = errors.New("the profile could not be converted")

// ErrTargetFileRefused: a file the profiler wrote in the target, to be
// read back, was not what it must be (a symbolic link, a FIFO, another
// user's, larger than the budget): someone in the target changed it. The
// profiling layer wraps that refusal in it; it is a failure of the call,
// not of its caller's input.
var ErrTargetFileRefused = errors.New("the profiler's file in the target was refused")

// OutcomeOf classifies an error returned by Load, Jcmd, Profile or Check.
func OutcomeOf(err error) Outcome {
	var ae *hotspot.AgentError
	var ce *hotspot.CommandError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrRefused), errors.Is(err, ErrProfilerBusy):
		return OutcomeRefused
	case errors.Is(err, ErrInvalidOptions):
		return OutcomeInvalid
	case errors.Is(err, context.Canceled):
		return OutcomeInterrupted
	case errors.Is(err, hotspot.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimedOut
	case errors.As(err, &ae), errors.As(err, &ce),
		errors.Is(err, hotspot.ErrTargetExited), errors.Is(err, hotspot.ErrNoListener),
		errors.Is(err, hotspot.ErrUntrustedSocket), errors.Is(err, hotspot.ErrConnectionClosed),
		errors.Is(err, hotspot.ErrRequestTooLong), errors.Is(err, hotspot.ErrReplyTooLong), errors.Is(err, hotspot.ErrUnsafeSignal),
		errors.Is(err, ErrConversionFailed), errors.Is(err, ErrTargetFileRefused):
		return OutcomeFailed
	}
	return OutcomeError
}
