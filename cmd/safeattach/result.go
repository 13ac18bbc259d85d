package main

import (
	"errors"
	"io"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/diagnose"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/fdtransfer"
)

// resultSchemaVersion is bumped when a field of result changes meaning or
// goes away (adding a field does not bump it).
const resultSchemaVersion = 1

// result is the one JSON shape of load, jcmd and profile (--json), for
// every outcome: done, refused, failed, timed out, interrupted. Fields
// that do not apply are left out; durations are milliseconds. The README
// documents it field by field.
type result struct {
	SchemaVersion int                  `json:"schema_version"`
	Command       string               `json:"command"`
	Action        string               `json:"action,omitempty"`
	PID           int                  `json:"pid"`
	Outcome       attach.Outcome       `json:"outcome"`
	ExitCode      int                  `json:"exit_code"`
	Error         string               `json:"error,omitempty"`
	Verdict       *conflicts.Verdict   `json:"verdict,omitempty"`
	Agent         *preflight.Agent     `json:"agent,omitempty"`
	LoadedFrom    string               `json:"loaded_from,omitempty"`
	Output        string               `json:"output,omitempty"`
	AgentLog      []string             `json:"agent_log,omitempty"`
	Profile       *profileResult       `json:"profile,omitempty"`
	HangReport    *diagnose.HangReport `json:"hang_report,omitempty"`
	ProfilerOwner *profiling.Owner     `json:"profiler_owner,omitempty"`
	Healthy       bool                 `json:"healthy"`
	DurationMS    int64                `json:"duration_ms"`
}

// envelope is what every --json object carries, whatever the command
// and the outcome: the same four fields as result's, so that a CI gate
// reads one shape. check, inspect, scan and diagnose put their own
// fields beside it; a command that fails before it has anything to
// report prints the envelope alone, with the pid.
type envelope struct {
	SchemaVersion int            `json:"schema_version"`
	Command       string         `json:"command"`
	Outcome       attach.Outcome `json:"outcome"`
	ExitCode      int            `json:"exit_code"`
	Error         string         `json:"error,omitempty"`
}

func newEnvelope(command string, err error) envelope {
	e := envelope{SchemaVersion: resultSchemaVersion, Command: command, Outcome: attach.OutcomeOf(err), ExitCode: exitCodeOf(err)}
	if err != nil {
		e.Error = err.Error()
	}
	return e
}

// jsonFailure prints the envelope of a --json command that failed
// before it had a report (an unknown pid, an unreadable process), and
// returns err: its exit code is the envelope's.
func jsonFailure(w io.Writer, command string, pid int, err error) error {
	_ = writeJSON(w, struct {
		envelope
		PID int `json:"pid,omitempty"`
	}{newEnvelope(command, err), pid})
	return err
}

type profileResult struct {
	File       string            `json:"file,omitempty"` // empty: standard output
	FdTransfer *fdtransfer.Stats `json:"fdtransfer,omitempty"`
	Bytes      int64             `json:"bytes"`
	Event      string            `json:"event"`
	Format     string            `json:"format"`
	Cancelled  bool              `json:"cancelled,omitempty"`
	Exited     bool              `json:"exited,omitempty"`
	// Engine is the profiler that made it when not async-profiler (jfr:
	// the JVM's own Flight Recorder), FallbackFrom the rules that refused
	// async-profiler, Limits what the engine's profile leaves out.
	Engine       string   `json:"engine,omitempty"`
	Recording    string   `json:"recording,omitempty"`
	FallbackFrom []string `json:"fallback_from,omitempty"`
	Limits       string   `json:"limits,omitempty"`
}

// newResult builds the JSON result of a command from what the library
// returned (res may be nil) and the error it ended with.
func newResult(command string, pid int, start time.Time, res *attach.Result, err error) *result {
	r := &result{SchemaVersion: resultSchemaVersion, Command: command, PID: pid, Outcome: attach.OutcomeOf(err), DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		r.Error = err.Error()
	}
	var refused *attach.RefusedError
	var hang *attach.HangError
	var busy *profiling.BusyError
	switch {
	case errors.As(err, &refused):
		r.Verdict = &refused.Verdict
	case errors.As(err, &hang):
		r.HangReport = hang.Report
	case errors.As(err, &busy):
		r.ProfilerOwner = busy.Owner
	}
	if res != nil {
		v := res.Verdict
		r.Verdict, r.Agent, r.LoadedFrom, r.Output, r.Healthy = &v, res.Agent, res.LoadedFrom, res.Output, res.Healthy
		if res.Duration > 0 {
			r.DurationMS = time.Duration(res.Duration).Milliseconds()
		}
	}
	return r
}

// writeResult prints r with the exit code err will give.
func writeResult(w io.Writer, r *result, err error) {
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
