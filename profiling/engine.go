package profiling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/flightrec"
)

// Engine names a profiler the layer drives.
type Engine string

// The engines.
const (
	// AsyncProfiler is async-profiler, loaded through the safe door: every
	// event, native and kernel frames, every output format.
	AsyncProfiler Engine = "async-profiler"
	// FlightRecorder is the JVM's own Flight Recorder, driven with
	// diagnostic commands (JFR.start, JFR.stop): nothing native is loaded
	// into the target, so the loader lock async-profiler's hazards turn
	// on is never taken. Java frames only.
	FlightRecorder Engine = "jfr"
)

// engine is a profiler a collect can run: each takes the whole request
// (duration, output, limits) and says what it made.
type engine interface {
	collect(ctx context.Context, pid int, req ProfileRequest) (*ProfileResult, error)
}

type asyncProfiler struct{}

type flightRecorder struct{}

// engineFor is the engine named e (the default: async-profiler).
func engineFor(e Engine) (engine, error) {
	switch e {
	case "", AsyncProfiler:
		return asyncProfiler{}, nil
	case FlightRecorder:
		return flightRecorder{}, nil
	}
	return nil, fmt.Errorf("%w: engine %q: want %s or %s", attach.ErrInvalidOptions, e, AsyncProfiler, FlightRecorder)
}

// Profile profiles the JVM pid for req.Duration with req.Engine and
// writes the result to req.Output (or req.Writer), if the knowledge base
// finds it safe. The output is prepared before anything is attached;
// cancelling ctx ends the profile early, and it is still stopped cleanly
// and written. When async-profiler is refused and req.Fallback names
// another engine, that engine profiles instead and the result says which
// rules sent it there.
func Profile(ctx context.Context, pid int, req ProfileRequest) (*ProfileResult, error) {
	if req.Output == "" && req.Writer == nil {
		return nil, fmt.Errorf("%w: profile: no output file given", attach.ErrInvalidOptions)
	}
	eng, err := engineFor(req.Engine)
	if err != nil {
		return nil, err
	}
	var fallback engine
	if req.Fallback != "" {
		if fallback, err = engineFor(req.Fallback); err != nil {
			return nil, fmt.Errorf("fallback: %w", err)
		}
	}
	res, err := eng.collect(ctx, pid, req)
	var refused *attach.RefusedError
	if fallback == nil || req.Fallback == req.Engine || !errors.As(err, &refused) || refused.Reason != "" || ctx.Err() != nil {
		return res, err
	}
	causes := refused.Verdict.Causes()
	if l := req.Options.Logger; l != nil {
		l.Info("safeattach: async-profiler refused; profiling with the fallback engine", "pid", pid, "rules", causes, "engine", req.Fallback)
	}
	fb := req
	fb.Engine, fb.Fallback = req.Fallback, ""
	res, err = fallback.collect(ctx, pid, fb)
	if res != nil {
		res.FallbackFrom = causes
	}
	return res, bothRefused(refused, err)
}

// bothRefused is the fallback's error; when the rules refused the
// fallback too, one refusal with both engines' findings (and the builds
// of async-profiler they would allow), so that the caller reads why
// neither could profile.
func bothRefused(first *attach.RefusedError, err error) error {
	var second *attach.RefusedError
	if !errors.As(err, &second) || second.Reason != "" {
		return err
	}
	both := *first
	both.Verdict.Findings = slices.Clone(first.Verdict.Findings)
	for _, f := range second.Verdict.Findings {
		if !slices.ContainsFunc(both.Verdict.Findings, func(g conflicts.Finding) bool { return g.Rule == f.Rule && g.Severity == f.Severity }) {
			both.Verdict.Findings = append(both.Verdict.Findings, f)
		}
	}
	return &both
}

// FlightRecorderAllowed reports whether the rules allow the JVM's own
// Flight Recorder in pid, under opts: what a caller refused
// async-profiler may offer instead (--fallback jfr). It inspects and
// judges; nothing is sent.
func FlightRecorderAllowed(ctx context.Context, pid int, opts attach.Options) bool {
	_, v, err := flightrec.Judge(ctx, pid, opts)
	return err == nil && v.Allowed
}

// collect is the Flight Recorder's profile: a recording started with
// JFR.start, stopped after Duration, read back from the target (bounded,
// inside its root) and written as JFR, or converted in the bounded child
// (pprof).
func (flightRecorder) collect(ctx context.Context, pid int, req ProfileRequest) (*ProfileResult, error) {
	format, converted, err := flightRecorderFormat(req.SessionRequest)
	if err != nil {
		return nil, err
	}
	event, err := flightRecorderEvent(req.Profiler)
	if err != nil {
		return nil, err
	}
	var sink io.Writer = req.Writer
	var out *outfile.File
	if sink == nil {
		if out, err = outfile.Prepare(req.Output, req.OutputMode, req.OutputOwner.outfile()); err != nil {
			return nil, fmt.Errorf("%w: profile: %v", attach.ErrInvalidOptions, err)
		}
		defer out.Discard()
		sink = out
	}
	rec := sink
	var spool *os.File
	if converted != "" {
		dir := os.TempDir()
		if req.Output != "" {
			dir = filepath.Dir(req.Output)
		}
		if spool, err = outfile.Anonymous(dir); err != nil {
			return nil, err
		}
		defer spool.Close()
		rec = spool
	}
	start := time.Now()
	fr, err := flightrec.Profile(ctx, pid, flightrec.Request{Duration: req.Duration, MaxOutput: req.MaxOutput, Options: req.Options}, rec)
	if fr == nil {
		return nil, err // refused, or nothing started: the error says it all
	}
	res := &ProfileResult{Event: event, Format: format, Engine: FlightRecorder, Limits: flightrec.Limits}
	res.PID = pid
	res.Verdict, res.Bytes, res.Cancelled, res.Recording = fr.Verdict, fr.Bytes, fr.Cancelled, fr.Recording
	if err != nil {
		return res, err
	}
	if spool != nil {
		// Bytes is what was written: the profile, not the recording.
		cw := &countingWriter{w: sink}
		c, err := ConvertJFR(ctx, spool, cw, converted, event, start, req.Converter)
		res.Bytes = cw.n
		if err != nil {
			return res, err
		}
		res.Converted = &c
		if converted == "pprof" {
			res.Pprof = &c
		}
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return res, fmt.Errorf("profile: %w", err)
		}
		res.Output = req.Output
	}
	res.Healthy = true // the JVM answered JFR.stop, after the recording
	res.Duration = attach.Elapsed(time.Since(start))
	return res, nil
}

// flightRecorderFormat is the output a Flight Recorder profile is
// written as, and the converter's name for it: the recording itself
// (jfr), or converted from it in the bounded child — pprof, collapsed,
// flat[=N], or a flame graph (html, drawn by package flamegraph). The
// file's extension picks it as for async-profiler; with neither, flat.
func flightRecorderFormat(req SessionRequest) (format, converted string, err error) {
	f := req.Format
	if f == "" {
		switch {
		case wantsPprofOutput(req.Output):
			f = "pprof"
		default:
			f = formatFor(req)
		}
	}
	name, _, _ := strings.Cut(f, "=")
	switch name {
	case "jfr":
		return "jfr", "", nil
	case "pprof", "collapsed":
		return f, f, nil
	case "flat":
		return f, f, nil
	case "", "flamegraph":
		if name == "" {
			return "flat", "flat", nil
		}
		return "flamegraph", "html", nil
	}
	return "", "", fmt.Errorf("%w: the Flight Recorder's profile is written as jfr, pprof, collapsed, flat or flamegraph, not %s", attach.ErrInvalidOptions, f)
}

// flightRecorderEvent is what a Flight Recorder profile of o shows: CPU
// (jdk.ExecutionSample: Java code on CPU), allocations
// (jdk.ObjectAllocationSample from JDK 16, TLAB events before) or locks
// (jdk.JavaMonitorEnter), all recorded by the profile settings; the
// converter picks the one asked for. It has no wall-clock sampler and
// no other event async-profiler knows.
func flightRecorderEvent(o asprof.Options) (string, error) {
	switch e := o.MainEvent(); e {
	case "cpu", "itimer", "ctimer":
		return "cpu", nil
	case "alloc", "lock":
		return e, nil
	case "wall":
		return "", fmt.Errorf("%w: the Flight Recorder records no wall-clock samples (-e wall is async-profiler's): -e cpu, alloc or lock", attach.ErrInvalidOptions)
	default:
		return "", fmt.Errorf("%w: -e %s is async-profiler's: the Flight Recorder profiles cpu, alloc or lock", attach.ErrInvalidOptions, e)
	}
}

// FileOwner owns an output file the caller writes for someone else (the
// invoking user under sudo).
type FileOwner struct{ UID, GID int }

func (o *FileOwner) outfile() *outfile.Owner {
	if o == nil {
		return nil
	}
	return &outfile.Owner{UID: o.UID, GID: o.GID}
}
