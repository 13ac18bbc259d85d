package flightrec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/versions"
	"github.com/safeattach/safeattach/preflight"
)

// Request is one Flight Recorder profile.
type Request struct {
	// Duration is how long to record (default 10s). Cancelling ctx ends
	// the recording early; it is still stopped and written.
	Duration time.Duration
	// Settings is the JFR configuration: "profile" (the default: CPU
	// samples every 10 ms, allocation and lock events) or "default".
	Settings string
	// MaxOutput bounds the recording read back (default
	// profiling.DefaultMaxOutput): the target writes it.
	MaxOutput int64
	// Options are the safe door's (deadline, rules, logger) for every
	// diagnostic command sent.
	Options attach.Options
}

// Result is a finished recording.
type Result struct {
	// Name is the recording's name in the JVM (safeattach-<random>),
	// Recording its file in the JVM's /tmp (removed once read).
	Name      string `json:"name"`
	Recording string `json:"recording"`
	// Bytes is the size of the recording written to the caller.
	Bytes int64 `json:"bytes"`
	// Cancelled is set when ctx ended the recording before Duration.
	Cancelled bool `json:"cancelled,omitempty"`
	// Limits says what a Flight Recorder profile does not hold.
	Limits string `json:"limits"`
	// Verdict is the safe door's judgement of the JVM for the diagnostic
	// commands (the JVM-level rules: nothing is loaded).
	Verdict conflicts.Verdict `json:"verdict"`
}

// Limits is what every Flight Recorder profile leaves out.
const Limits = "Java frames only (no native or kernel frames); CPU samples of threads running Java code (jdk.ExecutionSample), every 10 ms with the profile settings"

// ErrNoFlightRecorder: the JVM has no Flight Recorder to start (JDK 8
// before 8u262, -XX:-FlightRecorder, a JVM that refused the recording).
var ErrNoFlightRecorder = errors.New("the JVM's Flight Recorder cannot record")

// ErrHazard: the Flight Recorder is known to harm this JVM.
var ErrHazard = errors.New("the JVM's Flight Recorder is refused here")

// hazard says why recording pid with its Flight Recorder is refused, or
// "". The one hazard known, measured here: JFR.start on JDK 25 (Temurin
// 25.0.3) in a JVM whose allocator captures stacks with libunwind — the
// very JVMs async-profiler is refused on — crashed the JVM every time,
// in a pod and on the host alike (-Xmx64m, SerialGC, C2 on): the Attach
// Listener running JFR's start hit an uncommon trap in C2 code
// (Long.valueOf under jdk.jfr.internal.MetadataWriter), the
// deoptimization stub (UncommonTrapBlob) allocated, tcmalloc's heap
// profiler walked the stack with libunwind, and libunwind faulted
// (SIGSEGV, SEGV_MAPERR at 0x100000000, in libunwind.so.8+0x56fa).
// JDK 17 recorded the same JVM fine, and so did JDK 25 with C1 only
// (-XX:TieredStopAtLevel=1). Until it is understood, a JVM of feature
// release 25 or later with such an allocator is not recorded.
func hazard(r *preflight.Report) string {
	feature := versions.JavaFeature(r.JVM.Version)
	stacks := r.Tcmalloc.HeapProfiler == preflight.Yes ||
		r.Jemalloc.Prof.State == preflight.ProfActive && r.Jemalloc.Unwinder == preflight.UnwinderLibunwind
	if feature >= 25 && stacks {
		return fmt.Sprintf("JDK %d with an allocator that captures stacks (tcmalloc's or jemalloc's heap profiler): JFR.start crashed such a JVM here (SIGSEGV in libunwind); profile it on JDK 17 or 21, or without the heap profiler", feature)
	}
	return ""
}

// grace is how long past Duration the recording's own duration= runs:
// the caller stops it well before; a caller that died does not.
const grace = 30 * time.Second

// Recording is a recording safeattach started in a JVM: its name there
// and the file it writes in the JVM's /tmp (as the JVM resolves it, in
// its mount namespace: the same path inside its root for the read-back).
type Recording struct {
	PID  int
	Name string
	File string
	// Since is when it started; UID is the JVM's user, whose file the
	// recording must be when it is read back.
	Since time.Time
	UID   uint32
	// Verdict is the safe door's judgement of the JVM for the
	// diagnostic commands.
	Verdict conflicts.Verdict
}

// StartRequest is a recording to start.
type StartRequest struct {
	// Settings is the JFR configuration: "profile" (the default) or
	// "default".
	Settings string
	// Duration, when set, makes the recording end by itself that long
	// (plus a grace) after it starts, so a caller killed meanwhile leaves
	// nothing running for long; zero runs it until stopped (a detached
	// start), bounded on disk by MaxSize.
	Duration time.Duration
	// MaxSize bounds the recording the JVM keeps (JFR's maxsize=;
	// default DefaultMaxRecording).
	MaxSize int64
	// Options are the safe door's for every diagnostic command.
	Options attach.Options
}

// Start judges pid for its Flight Recorder and starts a recording.
func Start(ctx context.Context, pid int, req StartRequest) (*Recording, error) {
	if req.Settings == "" {
		req.Settings = "profile"
	}
	if req.Settings != "profile" && req.Settings != "default" {
		return nil, fmt.Errorf("%w: JFR settings %q: want profile or default", attach.ErrInvalidOptions, req.Settings)
	}
	if req.MaxSize <= 0 {
		req.MaxSize = DefaultMaxRecording
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	report, err := preflight.Inspect(ctx, pid, preflight.Options{})
	if err != nil {
		return nil, err
	}
	if why := hazard(report); why != "" {
		// A refusal, as the safe door's are: nothing was sent.
		return nil, fmt.Errorf("%w (%w): %s", ErrHazard, attach.ErrRefused, why)
	}
	r := &Recording{PID: pid, Name: "safeattach-" + id, File: "/tmp/.safeattach-jfr-" + id + ".jfr", UID: report.Process.UID.Effective}
	start := fmt.Sprintf("JFR.start name=%s settings=%s filename=%s maxsize=%d", r.Name, req.Settings, r.File, req.MaxSize)
	if req.Duration > 0 {
		start += fmt.Sprintf(" duration=%ds", int((req.Duration+grace)/time.Second))
	}
	out, err := attach.Jcmd(ctx, pid, start, req.Options)
	if out != nil {
		r.Verdict = out.Verdict
	}
	if err != nil {
		return nil, err
	}
	r.Since = time.Now()
	// The JVM answers status 0 whatever happened: its words say it (the
	// file is named in the answer only when a duration is given).
	if !strings.HasPrefix(strings.TrimSpace(out.Output), "Started recording") {
		return nil, fmt.Errorf("%w: %s", ErrNoFlightRecorder, firstLine(out.Output))
	}
	return r, nil
}

func randomID() (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(rnd[:]), nil
}

// Stop ends the recording and streams it into w (at most max bytes, read
// back as the target's file it is); its file is removed either way.
func (r *Recording) Stop(ctx context.Context, w io.Writer, max int64, opts attach.Options) (int64, error) {
	defer r.remove(ctx, r.File)
	if err := stop(ctx, r.PID, r.Name, opts); err != nil {
		return 0, err
	}
	return r.readBack(ctx, r.File, w, max)
}

// Dump streams the recording so far into w, the recording running on.
func (r *Recording) Dump(ctx context.Context, w io.Writer, max int64, opts attach.Options) (int64, error) {
	id, err := randomID()
	if err != nil {
		return 0, err
	}
	file := "/tmp/.safeattach-jfr-" + id + "-dump.jfr"
	defer r.remove(ctx, file)
	out, err := attach.Jcmd(ctx, r.PID, fmt.Sprintf("JFR.dump name=%s filename=%s", r.Name, file), opts)
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(strings.TrimSpace(out.Output), "Dumped recording") {
		return 0, fmt.Errorf("%w: JFR.dump: %s", ErrNoFlightRecorder, firstLine(out.Output))
	}
	return r.readBack(ctx, file, w, max)
}

// Running reports whether the JVM still has the recording (JFR.check).
func (r *Recording) Running(ctx context.Context, opts attach.Options) (bool, string, error) {
	out, err := attach.Jcmd(ctx, r.PID, "JFR.check name="+r.Name, opts)
	if err != nil {
		return false, "", err
	}
	text := strings.TrimSpace(out.Output)
	return strings.Contains(text, "name="+r.Name) && strings.Contains(text, "(running)"), text, nil
}

// readBack streams the target's file into w: resolved inside its root,
// a regular file of the JVM's user with one link, at most max bytes.
func (r *Recording) readBack(ctx context.Context, file string, w io.Writer, max int64) (int64, error) {
	if max <= 0 {
		max = DefaultMaxRecording
	}
	h, err := safefile.OpenIn(ctx, r.root(), file, max, safefile.Accept{UIDs: []uint32{r.UID}, SingleLink: true})
	if err != nil {
		return 0, fmt.Errorf("the recording: %w", err)
	}
	defer h.Close()
	n, err := io.Copy(w, h.Reader(max))
	if err != nil {
		return n, fmt.Errorf("the recording: %w", err)
	}
	return n, nil
}

func (r *Recording) root() string { return fmt.Sprintf("/proc/%d/root", r.PID) }

// remove removes a file the recording wrote in the target, even after a
// cancel.
func (r *Recording) remove(ctx context.Context, file string) {
	safefile.RemoveIn(context.WithoutCancel(ctx), r.root(), file)
}

// Profile records pid with its Flight Recorder for req.Duration and
// streams the recording (a JFR file) into w.
func Profile(ctx context.Context, pid int, req Request, w io.Writer) (*Result, error) {
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	rec, err := Start(ctx, pid, StartRequest{Settings: req.Settings, Duration: req.Duration, MaxSize: req.MaxOutput, Options: req.Options})
	if err != nil {
		return nil, err
	}
	res := &Result{Name: rec.Name, Recording: rec.File, Limits: Limits, Verdict: rec.Verdict}
	t := time.NewTimer(req.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		res.Cancelled = true
	}
	// The stop and the read-back run even after a cancel, within
	// attach.StopAfterCancel of it.
	sctx, cancel := attach.Unwinding(ctx)
	defer cancel()
	res.Bytes, err = rec.Stop(sctx, w, req.MaxOutput, req.Options)
	return res, err
}

// stop ends the recording, which writes it to its file.
func stop(ctx context.Context, pid int, name string, opts attach.Options) error {
	out, err := attach.Jcmd(ctx, pid, "JFR.stop name="+name, opts)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(strings.TrimSpace(out.Output), "Stopped recording") {
		return fmt.Errorf("%w: JFR.stop: %s", ErrNoFlightRecorder, firstLine(out.Output))
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "no answer"
	}
	return s
}

// DefaultMaxRecording is Request.MaxOutput's default: a day-long
// recording of a busy service is a few hundred MiB.
const DefaultMaxRecording = 1 << 30
