package profiling

import (
	"errors"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/diagnose"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/fdtransfer"
)

// JSONResult is the one JSON shape of load, jcmd and profile, for every
// outcome: done, refused, failed, timed out, interrupted. Fields that do
// not apply are left out; durations are milliseconds. The CLI prints it
// (--json) and the README documents it field by field; an embedder
// answering its own callers can give them the same.
type JSONResult struct {
	attach.Envelope
	Action        string               `json:"action,omitempty"`
	PID           int                  `json:"pid"`
	Verdict       *conflicts.Verdict   `json:"verdict,omitempty"`
	Agent         *preflight.Agent     `json:"agent,omitempty"`
	LoadedFrom    string               `json:"loaded_from,omitempty"`
	Output        string               `json:"output,omitempty"`
	AgentLog      []string             `json:"agent_log,omitempty"`
	Profile       *JSONProfile         `json:"profile,omitempty"`
	Windows       []JSONWindow         `json:"windows,omitempty"`
	HangReport    *diagnose.HangReport `json:"hang_report,omitempty"`
	ProfilerOwner *Owner               `json:"profiler_owner,omitempty"`
	// PickedAgent: the agent given was refused here and another build
	// loaded (--pick-agent); Alternatives: a refusal's other builds the
	// rules allow.
	PickedAgent  *attach.AgentPick    `json:"picked_agent,omitempty"`
	Alternatives []attach.Alternative `json:"alternatives,omitempty"`
	Healthy      bool                 `json:"healthy"`
	DurationMS   int64                `json:"duration_ms"`
}

// JSONProfile is what a profile wrote, in a JSONResult.
type JSONProfile struct {
	File       string            `json:"file,omitempty"` // empty: standard output
	FdTransfer *fdtransfer.Stats `json:"fdtransfer,omitempty"`
	Bytes      int64             `json:"bytes"`
	Event      string            `json:"event"`
	Format     string            `json:"format"`
	Cancelled  bool              `json:"cancelled,omitempty"`
	Exited     bool              `json:"exited,omitempty"`
	// Engine is the profiler that made it when not async-profiler (jfr:
	// the JVM's own Flight Recorder), FallbackFrom the rules that refused
	// async-profiler, Recording the Flight Recorder's file in the target,
	// Limits what the engine's profile leaves out.
	Engine       Engine   `json:"engine,omitempty"`
	Recording    string   `json:"recording,omitempty"`
	FallbackFrom []string `json:"fallback_from,omitempty"`
	Limits       string   `json:"limits,omitempty"`
}

// JSONWindow is one window of a --loop, in a JSONResult: its number,
// the file written and its size, or why it was dropped.
type JSONWindow struct {
	N     int    `json:"n"`
	File  string `json:"file,omitempty"`
	Bytes int64  `json:"bytes"`
	Error string `json:"error,omitempty"`
}

// NewJSONResult builds command's result from what the library returned
// (res may be nil) and the error it ended with; start is when the
// command began (the duration when res has none).
func NewJSONResult(command string, pid int, start time.Time, res *attach.Result, err error) *JSONResult {
	r := &JSONResult{Envelope: attach.NewEnvelope(command, err), PID: pid, DurationMS: time.Since(start).Milliseconds()}
	var refused *attach.RefusedError
	var hang *attach.HangError
	var busy *BusyError
	switch {
	case errors.As(err, &refused):
		r.Verdict, r.Alternatives = &refused.Verdict, refused.Alternatives
	case errors.As(err, &hang):
		r.HangReport = hang.Report
	case errors.As(err, &busy):
		r.ProfilerOwner = busy.Owner
	}
	if res != nil {
		v := res.Verdict
		r.Verdict, r.Agent, r.LoadedFrom, r.Output, r.Healthy = &v, res.Agent, res.LoadedFrom, res.Output, res.Healthy
		r.PickedAgent = res.Picked
		if res.Duration > 0 {
			r.DurationMS = time.Duration(res.Duration).Milliseconds()
		}
	}
	return r
}

// JSONProfileOf is what p wrote, for a JSONResult.
func JSONProfileOf(p *ProfileResult) *JSONProfile {
	j := &JSONProfile{File: p.Output, Bytes: p.Bytes, Event: p.Event, Format: p.Format, Cancelled: p.Cancelled, Exited: p.Exited, FdTransfer: p.FdTransfer,
		Recording: p.Recording, FallbackFrom: p.FallbackFrom, Limits: p.Limits}
	if p.Engine != AsyncProfiler {
		j.Engine = p.Engine
	}
	return j
}
