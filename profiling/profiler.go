package profiling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/safeattach/safeattach/attach"
)

// Profiler is a profiler in one JVM, driven command by command, whatever
// engine runs it: a *Session (async-profiler) or the Flight Recorder's
// session. Open picks it. Everything a caller does across invocations
// (start here, stop later) and for hours (Windows) goes through it.
type Profiler interface {
	// Start starts profiling (a Detached request's start is finished by
	// a later Open's Stop); Resume continues a stopped profile where the
	// engine can.
	Start(ctx context.Context) error
	Resume(ctx context.Context) error
	// Stop ends the profile and streams it into w; Dump streams it so
	// far, the profiler running on. StopTo and DumpTo write it to a
	// Destination, which can be where the detached start asked.
	Stop(ctx context.Context, w io.Writer) (int64, error)
	Dump(ctx context.Context, w io.Writer) (int64, error)
	StopTo(ctx context.Context, dst Destination) (Written, error)
	DumpTo(ctx context.Context, dst Destination) (Written, error)
	// Windows profiles window after window until ctx ends (see
	// Session.Windows).
	Windows(ctx context.Context, every time.Duration, fn func(*Window) error) error
	// Command sends a query (status; async-profiler's list, metrics,
	// meminfo, check) and streams the answer into w.
	Command(ctx context.Context, command string, w io.Writer) (int64, error)
	// Engine is the profiler; Event what it samples; Format what Stop
	// and Dump write.
	Engine() Engine
	Event() string
	Format() string
	// FallbackFrom are the rules that refused async-profiler when the
	// request's Fallback opened this one instead.
	FallbackFrom() []string
	// Result is the judgement the profiler was opened under; LastLog what
	// the agent said at the last command (async-profiler's log).
	Result() attach.Result
	LastLog() []string
	// Healthy asks the JVM whether it still answers.
	Healthy(ctx context.Context) error
	Close()
}

// oneDetachedStart refuses a detached start while this caller's
// detached start of the other engine runs in the JVM: a later stop,
// dump or status finds one start, and would leave the other running.
func oneDetachedStart(pid int, req SessionRequest, engine Engine) error {
	if !req.Detached || req.LoadedOnly {
		return nil
	}
	id, err := identity(pid)
	if err != nil {
		return nil // the session's own inspection says what is wrong
	}
	other := FlightRecorder
	if engine == FlightRecorder {
		other = AsyncProfiler
	}
	if st := readStartState(id, other); st == nil || !st.Detached {
		return nil
	}
	return fmt.Errorf("pid %d: %w: a detached start of yours with %s runs there; stop it first (safeattach profile stop %d)", pid, attach.ErrProfilerBusy, other, pid)
}

// Engine is async-profiler's.
func (ss *Session) Engine() Engine { return AsyncProfiler }

// FallbackFrom is empty: async-profiler is what a fallback replaces.
func (ss *Session) FallbackFrom() []string { return nil }

var _ Profiler = (*Session)(nil)

// Open opens the profiler req asks for in pid: req.Engine's; for a
// request that only talks to a profiler already running (LoadedOnly:
// stop, dump, status) and names no engine, the Flight Recorder when
// this caller's detached start there was one; else async-profiler. When
// async-profiler is refused by the rules and req.Fallback names another
// engine, that one is opened instead, and says which rules sent it
// there (FallbackFrom).
func Open(ctx context.Context, pid int, req SessionRequest) (Profiler, error) {
	if _, err := engineFor(req.Engine); err != nil {
		return nil, err
	}
	if req.Fallback != "" {
		if _, err := engineFor(req.Fallback); err != nil {
			return nil, fmt.Errorf("fallback: %w", err)
		}
	}
	engine := req.Engine
	if engine == "" && req.LoadedOnly && hasFlightRecorderStart(pid) {
		engine = FlightRecorder
	}
	if err := oneDetachedStart(pid, req, engine); err != nil {
		return nil, err
	}
	if engine == FlightRecorder {
		return openFlightRecorder(ctx, pid, req, nil)
	}
	ss, err := OpenSession(ctx, pid, req)
	var refused *attach.RefusedError
	if req.Fallback == FlightRecorder && errors.As(err, &refused) && refused.Reason == "" && ctx.Err() == nil {
		causes := refused.Verdict.Causes()
		if l := req.Options.Logger; l != nil {
			l.Info("safeattach: async-profiler refused; the JVM's Flight Recorder instead", "pid", pid, "rules", causes)
		}
		fr, ferr := openFlightRecorder(ctx, pid, req, causes)
		if ferr != nil {
			return nil, bothRefused(refused, ferr)
		}
		return fr, nil
	}
	if err != nil {
		return nil, err
	}
	return ss, nil
}
