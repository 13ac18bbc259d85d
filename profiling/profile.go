package profiling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/fdtransfer"
	"github.com/safeattach/safeattach/profiling/jfrpprof/bounded"
)

// SessionRequest is what a Session needs: which async-profiler, what to
// profile, how the output looks, and who the session is.
type SessionRequest struct {
	// Lib is the async-profiler library or an install's directory; empty
	// means the installed one ($ASYNC_PROFILER_HOME, asprof on PATH,
	// async-profiler*/ under /opt, /usr/local, /usr/lib, /usr/share or the
	// home directory), else the one the JVM maps.
	Lib string
	// Builds are async-profiler builds in order of preference, for a
	// request with no Lib: the session loads the first the rules allow
	// for the JVM, moving past one refused for what it is (its version,
	// what it imports) and stopping at a refusal of the JVM; with none
	// allowed, the preferred build's refusal is the error
	// (attach.DoorRequest.Builds).
	Builds []string
	// PickAgent: when the rules refuse Lib (or the installed build) for
	// what it is and allow another async-profiler build on this host,
	// the session loads the first such build instead, logs it, and its
	// Result says so (attach.Result.Picked; attach.DoorRequest.PickAgent).
	PickAgent bool
	// Profiler is async-profiler's configuration as asprof's options
	// give it (event, interval, depth, include/exclude, thresholds…),
	// checked and turned into the agent's options by package asprof. No
	// event is sent unless Profiler.Event is set: the agent then profiles
	// CPU, unless an option such as Alloc asks for something else.
	Profiler asprof.Options
	// Format is flamegraph, collapsed, tree, jfr, ... as async-profiler
	// writes them, or pprof (recorded as JFR and converted by Converter
	// whenever a profile is read back: Stop, Dump, every window); empty
	// picks it from Output's extension as asprof does.
	Format string
	// Output names the file the profile is for on this machine: its
	// extension picks the format when Format is empty, and a Detached
	// start records it for the session that stops it.
	Output string
	// EventFallback switches CPU profiling (-e cpu, or no event) to a
	// timer-based event (ctimer for async-profiler 3.0+, else itimer)
	// when the rules find that the target cannot open perf events.
	EventFallback bool
	// MaxOutput caps what one command's output may be when it is read
	// back from the target (default DefaultMaxOutput): a larger file —
	// the target's user can swap in a sparse 900 MiB one — is refused
	// before a byte is read, and one that grows past it while being read
	// fails with safefile.ErrTooLarge.
	MaxOutput int64
	// Owner names the caller in the record a running profiler carries
	// in the target (default "safeattach"): what a refused session is
	// told about who runs the profiler.
	Owner string
	// Takeover stops a profiler that another session or tool runs
	// instead of refusing with a *BusyError; ReclaimOwn does so only for
	// profilers whose record names this same Owner (a node agent
	// restarted on its node taking back what it started).
	Takeover, ReclaimOwn bool
	// Detached marks a Start meant to be finished by a later session
	// (profile start, then profile stop in another process): any session
	// may then stop it, and its record keeps Output for that session.
	Detached bool
	// AutoStop makes the profiler stop by itself this long after each
	// start (async-profiler's timeout=), so a caller killed mid-profile
	// cannot leave it running. Profile and Session.Windows set it; a Start
	// without it runs until stopped.
	AutoStop time.Duration
	// FdTransfer serves the agent's perf event and kallsyms requests from
	// this process (package fdtransfer; asprof --fdtransfer), for a JVM
	// that may not open perf events itself: every start and resume
	// passes the server's socket as fdtransfer=. The server lives as long
	// as the session; a Detached start's outlives it, as a process of its
	// own (FdTransferHelper).
	FdTransfer bool
	// FdTransferHelper is the command a Detached start with FdTransfer
	// runs as its descriptor server, which must outlive the caller: the
	// caller's own program with a subcommand that calls ServeFdTransfer
	// (it gets HelperArgs appended). The CLI's is `safeattach
	// fdtransfer-serve`.
	FdTransferHelper []string
	// FdTransferKernel lets the descriptor server (FdTransfer, or the
	// CLI's own) serve kernel samples, kernel call stacks and kallsyms
	// with real addresses: the target learns the kernel's layout. Off,
	// the server opens every event user-only (docs/fdtransfer.md).
	FdTransferKernel bool
	// LoadedOnly says the session only talks to a profiler the JVM has
	// already loaded (status, list, metrics, meminfo, stop, dump). When
	// the JVM maps an async-profiler — a copy safeattach delivered, whose
	// bytes were hashed, judged and verified then, or a
	// libasyncProfiler*.so another tool loaded — the library is not read,
	// hashed or judged again (its hazards were in the load, which has
	// happened), the inspection is what a jcmd needs, and commands go to
	// it by the name the loader knows it by, so dlopen returns the loaded
	// object and opens no file. Otherwise the session opens as usual.
	LoadedOnly bool
	// Engine is the profiler (default AsyncProfiler). Fallback is the
	// engine taken instead when the rules refuse async-profiler (empty:
	// none, the refusal is the answer): the result then names the rules
	// (FallbackFrom). A rule that protects the JVM itself (not a JVM,
	// SIGQUIT not handled) refuses the fallback too.
	Engine, Fallback Engine
	// Converter is the JFR to pprof converter a pprof profile runs
	// (Format pprof, or an output named *.pb.gz or *.pprof); default
	// PprofConverter beside this program or on PATH.
	Converter string
	// Options are the attach options (each command's deadline, rules,
	// acknowledgements, logging, audit).
	Options attach.Options
}

// ProfileRequest is one profile, as asprof's collect makes it: a
// session, a duration, and where the result goes.
type ProfileRequest struct {
	SessionRequest
	// Duration is how long to profile (default 10s). Cancelling ctx ends
	// the profile early; it is still stopped cleanly and written.
	Duration time.Duration
	// Writer, if set, receives the result instead of the file Output
	// names (which must otherwise be absent or a regular file: a symlink,
	// device or FIFO there is refused before anything is attached, and
	// the result replaces a regular file only once complete).
	Writer io.Writer
	// OutputMode is the new file's permission bits (default 0644).
	OutputMode os.FileMode
	// OutputOwner, if set, owns the new file (the invoking user under
	// sudo); otherwise it belongs to the caller.
	OutputOwner *FileOwner
	// Progress, if set, is called about once a second while profiling.
	Progress func(elapsed, total time.Duration)
}

// ProfileResult is a finished profile.
type ProfileResult struct {
	attach.Result
	Output string `json:"output"`
	Bytes  int64  `json:"bytes"`
	// Event is what was sampled (after any fallback); Format what was
	// written.
	Event  string `json:"event"`
	Format string `json:"format,omitempty"`
	// AgentLog holds the agent's own messages (async-profiler's log= file,
	// read back after each command): "Profiling started", warnings, and
	// the reason of a failure.
	AgentLog []string `json:"agent_log,omitempty"`
	// Cancelled is set when ctx ended the profile before Duration.
	Cancelled bool `json:"cancelled,omitempty"`
	// Exited is set when the JVM exited during the profile: the profile
	// is what the agent wrote as the JVM exited.
	Exited bool `json:"exited,omitempty"`
	// Pprof is what a pprof profile holds (Format pprof); Converted what
	// any profile converted from a JFR recording holds (the Flight
	// Recorder's collapsed, flat, flame graph or pprof).
	Pprof     *bounded.Result `json:"pprof,omitempty"`
	Converted *bounded.Result `json:"-"`
	// Engine is the profiler that made it; FallbackFrom the rules that
	// refused async-profiler when the Fallback made it; Recording the
	// Flight Recorder's file in the target (removed once read); Limits
	// what the engine's profile leaves out.
	Engine       Engine   `json:"engine,omitempty"`
	FallbackFrom []string `json:"fallback_from,omitempty"`
	Recording    string   `json:"recording,omitempty"`
	Limits       string   `json:"limits,omitempty"`
	// FdTransfer is what the descriptor server did (FdTransfer): events
	// and kallsyms copies served, requests refused and denied.
	FdTransfer *fdtransfer.Stats `json:"fdtransfer,omitempty"`
}

// formatFor picks the output format as asprof does: -o first (JFR when
// --jfrsync or --jfropts ask for it); else the file name's extension
// (.html flamegraph, .jfr jfr, .collapsed and .folded collapsed); else
// none, which the agent takes as its text output (flat and traces) — the
// agent's own default, what asprof prints without -o.
func formatFor(req SessionRequest) string {
	if req.Format != "" {
		return req.Format
	}
	if req.Profiler.WantsJFR() {
		return "jfr"
	}
	switch strings.ToLower(filepath.Ext(req.Output)) {
	case ".html":
		return "flamegraph"
	case ".jfr":
		return "jfr"
	case ".collapsed", ".folded":
		return "collapsed"
	}
	return ""
}

// formats are async-profiler's output formats (asprof -o): flat and
// traces take a count (flat=20).
var formats = []string{"flat", "traces", "collapsed", "flamegraph", "tree", "jfr", "otlp"}

// CheckFormat refuses an output format async-profiler does not know (a
// typo would otherwise be a text profile in the file named for another
// format); extra are formats the caller converts itself (the CLI's
// pprof).
func CheckFormat(format string, extra ...string) error {
	if format == "" {
		return nil
	}
	name, n, counted := strings.Cut(format, "=")
	switch {
	case counted && (name == "flat" || name == "traces"):
		if _, err := strconv.ParseUint(n, 10, 31); err == nil {
			return nil
		}
	case !counted && (slices.Contains(formats, name) || slices.Contains(extra, name)):
		return nil
	}
	return fmt.Errorf("%w: output format %q: want one of %s (flat and traces take a count: flat=20)", attach.ErrInvalidOptions, format, strings.Join(append(slices.Clone(formats), extra...), ", "))
}

// extensionFor is the extension of the file the profiler writes inside
// the target: async-profiler also looks at it, so it must agree with the
// format.
func extensionFor(format string) string {
	switch f, _, _ := strings.Cut(format, ","); f {
	case "jfr":
		return ".jfr"
	case "flamegraph", "tree":
		return ".html"
	case "collapsed":
		return ".collapsed"
	}
	return ".txt"
}

// wait sleeps for the profile's duration, reporting progress, and returns
// early when the caller cancels (cancelled) or the JVM exits (exited).
func wait(callerCtx, sessionCtx context.Context, req ProfileRequest, jvmExit <-chan struct{}) (cancelled, exited bool) {
	start := time.Now()
	end := start.Add(req.Duration)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return false, false
		}
		timer := time.NewTimer(left)
		select {
		case <-timer.C:
			return false, false
		case <-jvmExit:
			timer.Stop()
			return false, true
		case <-callerCtx.Done():
			timer.Stop()
			return true, false
		case <-sessionCtx.Done():
			timer.Stop()
			return true, false
		case <-tick.C:
			timer.Stop()
			if req.Progress != nil {
				req.Progress(time.Since(start), req.Duration)
			}
		}
	}
}

// RulePerfEventsUnavailable is the rule that finds -e cpu cannot work.
const RulePerfEventsUnavailable = "perf-events-unavailable"

func hasFinding(v conflicts.Verdict, rule string) bool {
	for _, f := range v.Findings {
		if f.Rule == rule && f.Severity != conflicts.Info {
			return true
		}
	}
	return false
}

// timerEvent is the CPU event that needs no perf events: ctimer (per
// thread CPU timers, accurate) from async-profiler 3.0, itimer before.
func timerEvent(a *preflight.Agent) string {
	if v, err := conflicts.ParseVersion(a.Version); err == nil && v.Major() >= 3 {
		return "ctimer"
	}
	return "itimer"
}

// DefaultMaxOutput is ProfileRequest.MaxOutput's default: a day-long
// JFR of a busy service is a few hundred MiB.
const DefaultMaxOutput = 1 << 30

// AgentSaidError is a failed agent command with the agent's own reason
// (Said: its [ERROR] lines, escaped as LastLog is).
type AgentSaidError struct {
	Said string
	Err  error
}

// Error is what the agent said, with its return code: the library was
// loaded (or already was); the command is what failed, so "agent load
// failed" would mislead.
func (e *AgentSaidError) Error() string {
	var ae *hotspot.AgentError
	if errors.As(e.Err, &ae) && ae.ReturnCode != 0 {
		return fmt.Sprintf("%s (async-profiler's answer, return code %d)", e.Said, ae.ReturnCode)
	}
	return e.Said + " (" + e.Err.Error() + ")"
}
func (e *AgentSaidError) Unwrap() error { return e.Err }

// MinProfileOverhead is the least time a profile needs beyond its
// duration: inspection, delivery, start, stop and the health check of an
// idle JVM take well under a second here; twice that leaves room.
const MinProfileOverhead = 2 * time.Second

// withTimeout bounds ctx by timeout, or by def when timeout is zero (the
// zero value of attach.Options.Timeout means the default).
func withTimeout(ctx context.Context, timeout, def time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		timeout = def
	}
	return context.WithTimeout(ctx, timeout)
}
