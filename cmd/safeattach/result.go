package main

import (
	"errors"
	"io"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/profiling"
)

// The JSON shapes are the library's (attach.Envelope,
// profiling.JSONResult): the CLI fills them and sets the exit code it
// gives, which for a signal is 128 + its number.

func newEnvelope(command string, err error) attach.Envelope {
	e := attach.NewEnvelope(command, err)
	e.ExitCode = exitCodeOf(err)
	return e
}

// jsonFailure prints the envelope of a --json command that failed
// before it had a report (an unknown pid, an unreadable process), and
// returns err: its exit code is the envelope's.
func jsonFailure(w io.Writer, command string, pid int, err error) error {
	_ = writeJSON(w, struct {
		attach.Envelope
		PID int `json:"pid,omitempty"`
	}{newEnvelope(command, err), pid})
	return err
}

// newResult builds the JSON result of a command from what the library
// returned (res may be nil) and the error it ended with.
func newResult(command string, pid int, start time.Time, res *attach.Result, err error) *profiling.JSONResult {
	return profiling.NewJSONResult(command, pid, start, res, err)
}

// writeResult prints r with the exit code err will give.
func writeResult(w io.Writer, r *profiling.JSONResult, err error) {
	r.ExitCode = exitCodeOf(err)
	_ = writeJSON(w, r)
}

// exitCodeOf is the exit code the CLI gives err (see attachError).
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}
