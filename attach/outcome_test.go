package attach

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/safeattach/safeattach/attach/hotspot"
)

// TestOutcomeOf: one classification for the CLI's exit codes and the
// audit record; a hang unwraps to the time-out and to its cause.
func TestOutcomeOf(t *testing.T) {
	cause := fmt.Errorf("load: %w", hotspot.ErrTimeout)
	hang := &HangError{PID: 1, Step: "load", Err: cause}
	if !errors.Is(hang, hotspot.ErrTimeout) || !errors.Is(hang, cause) {
		t.Error("HangError must unwrap to ErrTimeout and to its cause")
	}
	for err, want := range map[error]Outcome{
		nil:                                    OutcomeOK,
		&RefusedError{PID: 1}:                  OutcomeRefused,
		fmt.Errorf("%w: x", ErrInvalidOptions): OutcomeInvalid,
		hang:                                   OutcomeTimedOut,
		fmt.Errorf("x: %w", context.Canceled):  OutcomeInterrupted,
		&hotspot.AgentError{ReturnCode: 1}:     OutcomeFailed,
		fmt.Errorf("pid 1: %w", hotspot.ErrTargetExited): OutcomeFailed,
		errors.New("something else"):                     OutcomeError,
	} {
		if got := OutcomeOf(err); got != want {
			t.Errorf("OutcomeOf(%v) = %s, want %s", err, got, want)
		}
	}
}
