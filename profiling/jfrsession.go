package profiling

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/flightrec"
)

// flightRecorderSession is the Flight Recorder in one JVM, driven as a
// Profiler: each start is a recording of its own (flightrec.Start, judged
// each time), a stop reads it back as the target's file it is, and a
// detached start is remembered on the caller's side only (its recording's
// name and file in the start state), as async-profiler's is.
type flightRecorderSession struct {
	pid     int
	req     SessionRequest
	report  *preflight.Report
	verdict conflicts.Verdict
	// event is what the profiles show (cpu, alloc, lock).
	event string
	// format is what Stop and Dump write; converted the converter's name
	// for it ("" for the recording itself).
	format, converted string
	rec               *flightrec.Recording
	// output is what the detached start asked for (its start state).
	output       string
	fallbackFrom []string
	// rotating is set while a window's next recording starts beside the
	// last.
	rotating bool
}

var _ Profiler = (*flightRecorderSession)(nil)

// openFlightRecorder opens the Flight Recorder's session in pid; a
// LoadedOnly request takes over this caller's detached start there.
func openFlightRecorder(ctx context.Context, pid int, req SessionRequest, fallbackFrom []string) (*flightRecorderSession, error) {
	if req.MaxOutput <= 0 {
		req.MaxOutput = DefaultMaxOutput
	}
	format, converted, err := flightRecorderFormat(req)
	if err != nil {
		return nil, err
	}
	event, err := flightRecorderEvent(req.Profiler)
	if err != nil {
		return nil, err
	}
	// Judged when opened, as async-profiler's session is: a refusal ends
	// here, before anything is sent.
	report, verdict, err := flightrec.Judge(ctx, pid, req.Options)
	if err != nil {
		return nil, err
	}
	s := &flightRecorderSession{pid: pid, req: req, report: report, verdict: verdict, event: event, format: format, converted: converted, fallbackFrom: fallbackFrom}
	if st := readStartState(report, FlightRecorder); st != nil && req.LoadedOnly {
		s.rec = &flightrec.Recording{PID: pid, Name: st.Session, File: st.Recording, UID: report.Process.UID.Effective}
		s.output = st.Output
		if req.Profiler.Event == "" && st.Event != "" {
			s.event = st.Event // the start's, unless this request names one
		}
		if formatFor(req) == "" && !wantsPprofOutput(req.Output) && st.Format != "" {
			// The start's format, unless this request names one (-o, or
			// an output whose extension says it).
			s.format, s.converted, _ = flightRecorderFormat(SessionRequest{Format: st.Format})
		}
	}
	if s.converted != "" {
		if err := findConverter(&s.req); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// hasFlightRecorderStart reports whether this caller's detached start
// in pid was the Flight Recorder's.
func hasFlightRecorderStart(pid int) bool {
	id, err := identity(pid)
	return err == nil && readStartState(id, FlightRecorder) != nil
}

// identity is what names a JVM's start state (startStateName): its pid,
// start time and pid and mount namespaces, read from /proc alone — the
// question of every stop, dump and status, asked before the inspection
// the engine it finds makes.
func identity(pid int) (*preflight.Report, error) {
	p := proc.FS{}.Proc(pid)
	st, err := p.Stat()
	if err != nil {
		return nil, err
	}
	pidNS, err := p.Namespace("pid")
	if err != nil {
		return nil, err
	}
	mntNS, err := p.Namespace("mnt")
	if err != nil {
		return nil, err
	}
	r := &preflight.Report{PID: pid}
	r.Process.StartTime = st.StartTime
	r.Process.PIDNamespace.Inode, r.Process.MountNamespace.Inode = pidNS.Inode, mntNS.Inode
	return r, nil
}

// Start starts a recording; a Detached one is remembered for a later
// Open's Stop, and runs until stopped (bounded on disk by MaxOutput),
// else it ends by itself AutoStop after it started.
func (s *flightRecorderSession) Start(ctx context.Context) error {
	if st := readStartState(s.report, FlightRecorder); st != nil {
		running := &flightrec.Recording{PID: s.pid, Name: st.Session, UID: s.report.Process.UID.Effective}
		// The recording's name is ours (the start state); the JVM's answer
		// only says whether it still runs, and is not repeated.
		if ok, _, err := running.Running(ctx, s.req.Options); err == nil && ok {
			return fmt.Errorf("pid %d: %w: the Flight Recorder records %s, a detached start of yours; stop it with `safeattach profile stop %d`", s.pid, attach.ErrProfilerBusy, st.Session, s.pid)
		}
		dropEngineState(s.report, FlightRecorder, st.Session)
	}
	rec, err := flightrec.Start(ctx, s.pid, flightrec.StartRequest{Duration: s.req.AutoStop, MaxSize: s.req.MaxOutput, Options: s.req.Options, Exclusive: !s.rotating})
	if err != nil {
		return err
	}
	s.rec = rec
	if !s.req.Detached {
		return nil
	}
	st := &startState{Engine: FlightRecorder, Detached: true, Session: rec.Name, Event: s.Event(), Format: s.format, Recording: rec.File, Output: s.req.Output}
	if err := saveStartState(s.report, st); err != nil {
		rec.Stop(context.WithoutCancel(ctx), io.Discard, 1, s.req.Options)
		return err
	}
	s.output = s.req.Output
	return nil
}

// Resume: the Flight Recorder has none.
func (s *flightRecorderSession) Resume(context.Context) error {
	return fmt.Errorf("%w: the Flight Recorder has no resume: start a new recording", attach.ErrInvalidOptions)
}

// Stop ends the recording and writes it in the session's format.
func (s *flightRecorderSession) Stop(ctx context.Context, w io.Writer) (int64, error) {
	if s.rec == nil {
		return 0, fmt.Errorf("pid %d: %w: no Flight Recorder recording of yours runs there", s.pid, ErrNoOutput)
	}
	rec := s.rec
	s.rec = nil
	defer dropEngineState(s.report, FlightRecorder, rec.Name)
	return s.write(ctx, w, rec.Since, func(ctx context.Context, jfr io.Writer) (int64, error) {
		return rec.Stop(ctx, jfr, s.req.MaxOutput, s.req.Options)
	})
}

// Dump writes the recording so far, which runs on.
func (s *flightRecorderSession) Dump(ctx context.Context, w io.Writer) (int64, error) {
	if s.rec == nil {
		return 0, fmt.Errorf("pid %d: %w: no Flight Recorder recording of yours runs there", s.pid, ErrNoOutput)
	}
	return s.write(ctx, w, s.rec.Since, func(ctx context.Context, jfr io.Writer) (int64, error) {
		return s.rec.Dump(ctx, jfr, s.req.MaxOutput, s.req.Options)
	})
}

// write has read stream the recording and writes it to w: as it is, or
// converted in the bounded child from an anonymous spool.
func (s *flightRecorderSession) write(ctx context.Context, w io.Writer, since time.Time, read func(context.Context, io.Writer) (int64, error)) (int64, error) {
	if s.converted == "" {
		return read(ctx, w)
	}
	return convertRecording(ctx, w, s.converted, s.Event(), since, s.req.Converter, func(jfr io.Writer) (int64, error) {
		return read(ctx, jfr)
	})
}

// StopTo stops and writes to dst (where the detached start asked, with
// AsStarted).
func (s *flightRecorderSession) StopTo(ctx context.Context, dst Destination) (Written, error) {
	return writeTo(ctx, dst, s.output, s.Stop)
}

// DumpTo dumps to dst.
func (s *flightRecorderSession) DumpTo(ctx context.Context, dst Destination) (Written, error) {
	return writeTo(ctx, dst, s.output, s.Dump)
}

// Windows records window after window until ctx ends: each window is a
// recording of its own, the next started before the last is stopped (no
// gap), each ending by itself soon after its window should a caller die.
func (s *flightRecorderSession) Windows(ctx context.Context, every time.Duration, fn func(*Window) error) error {
	if every < MinWindow {
		return fmt.Errorf("%w: a window of %v is shorter than %v", attach.ErrInvalidOptions, every, MinWindow)
	}
	s.req.AutoStop = AutoStopFor(every)
	if s.rec == nil {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	for n := 0; ; n++ {
		last := waitWindow(ctx, s.rec.Since.Add(every))
		// A window's rotation (the next JFR.start, this one's JFR.stop and
		// read-back) runs to its end once begun, within stopTimeout: cut
		// off by ctx, the recording would be lost, or left running.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		err := s.window(wctx, n, last, fn)
		if err == nil && !last && ctx.Err() != nil && s.rec != nil {
			// ctx ended while the window rotated: the next recording,
			// a moment old, is stopped unread.
			s.rec.Stop(wctx, io.Discard, s.req.MaxOutput, s.req.Options)
			s.rec, last = nil, true
		}
		cancel()
		if last || err != nil {
			return err
		}
	}
}

// window ends window n: the next recording started unless last, the
// finished one stopped and handed to fn from an anonymous file.
func (s *flightRecorderSession) window(ctx context.Context, n int, last bool, fn func(*Window) error) error {
	done := s.rec
	var next *flightrec.Recording
	var startErr error
	if !last {
		s.rec, s.rotating = nil, true
		if startErr = s.Start(ctx); startErr == nil {
			next = s.rec
		}
		s.rotating = false
	}
	s.rec = done
	f, err := outfile.Anonymous(os.TempDir())
	if err != nil {
		return err
	}
	defer f.Close()
	_, werr := s.Stop(ctx, f)
	s.rec = next
	w := &Window{N: n, From: done.Since, Until: time.Now(), Last: last || startErr != nil}
	if werr == nil {
		_, werr = f.Seek(0, io.SeekStart)
	}
	if werr != nil {
		w.Err = werr
	} else {
		w.Output = f
		if fi, err := f.Stat(); err == nil {
			w.Size = fi.Size()
		}
	}
	ferr := fn(w)
	if startErr != nil {
		return startErr
	}
	if ferr != nil && s.rec != nil {
		s.Stop(context.WithoutCancel(ctx), io.Discard)
	}
	return ferr
}

// waitWindow waits until end or ctx's end, and says whether ctx ended
// it: the last window. A deadline at or before end makes it the last
// window, ended by the deadline (no window of a few milliseconds after).
func waitWindow(ctx context.Context, end time.Time) (last bool) {
	if dl, ok := ctx.Deadline(); ok && !end.Before(dl) {
		<-ctx.Done()
		return true
	}
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return ctx.Err() != nil
}

// Command answers status with the JVM's own JFR.check; the Flight
// Recorder has no other query.
func (s *flightRecorderSession) Command(ctx context.Context, command string, w io.Writer) (int64, error) {
	if strings.TrimSpace(command) != "status" {
		return 0, fmt.Errorf("%w: %s is async-profiler's; the Flight Recorder answers status only", attach.ErrInvalidOptions, command)
	}
	res, err := attach.Jcmd(ctx, s.pid, "JFR.check", s.req.Options)
	if err != nil {
		return 0, err
	}
	n, err := io.WriteString(w, res.Output)
	return int64(n), err
}

func (s *flightRecorderSession) Engine() Engine         { return FlightRecorder }
func (s *flightRecorderSession) Event() string          { return s.event }
func (s *flightRecorderSession) Format() string         { return s.format }
func (s *flightRecorderSession) FallbackFrom() []string { return s.fallbackFrom }
func (s *flightRecorderSession) LastLog() []string      { return nil }
func (s *flightRecorderSession) Close()                 {}

// Result is the rules' judgement of the JVM's Flight Recorder.
func (s *flightRecorderSession) Result() attach.Result {
	return attach.Result{PID: s.pid, Verdict: s.verdict}
}

// Healthy asks the JVM for its version.
func (s *flightRecorderSession) Healthy(ctx context.Context) error {
	_, err := attach.Jcmd(ctx, s.pid, "VM.version", s.req.Options)
	return err
}
