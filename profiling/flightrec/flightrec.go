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
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/safefile"
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
	// Verdict is the rules' judgement of the JVM's Flight Recorder
	// (conflicts.Evaluate with preflight.FlightRecorderAgent): the rules
	// that protect the JVM and its attach socket, and the Flight
	// Recorder's own (its availability, its known hazards by JDK).
	Verdict conflicts.Verdict `json:"verdict"`
}

// Limits is what every Flight Recorder profile leaves out.
const Limits = "Java frames only (no native or kernel frames); CPU samples only of threads running Java code (jdk.ExecutionSample, every 10 ms with the profile settings); allocation samples (jdk.ObjectAllocationSample, JDK 16+) and monitor waits over 20 ms; no wall-clock samples"

// ErrNoFlightRecorder: the JVM answered JFR.start without starting a
// recording. The rules refuse first where they can tell (jfr-unavailable-jdk8,
// jfr-disabled); this is a JVM they could not (an 8u262-8u271 build
// without JFR, a flag set where the inspection does not see it).
var ErrNoFlightRecorder = errors.New("the JVM's Flight Recorder cannot record")

// ErrRecorderBusy: the JVM's Flight Recorder is already recording a
// safeattach profile (a recording named safeattach-*: another caller's,
// or one whose caller died before stopping it). A second would double
// the overhead on the JVM; it is refused as a profiler already running
// is (it unwraps to attach.ErrProfilerBusy), and nothing is started.
// Recordings of other names run beside ours: the Flight Recorder records
// concurrently.
var ErrRecorderBusy = fmt.Errorf("%w: the Flight Recorder is already recording a safeattach profile", attach.ErrProfilerBusy)

// namePrefix starts the name of every recording safeattach starts.
const namePrefix = "safeattach-"

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
	// Exclusive refuses with ErrRecorderBusy when a recording of
	// safeattach's already runs in the JVM (a collect, a detached start);
	// a window's next recording overlaps its last on purpose.
	Exclusive bool
}

// Start judges pid for its Flight Recorder (the rules: a refusal is an
// *attach.RefusedError, sent before anything reaches the JVM) and
// starts a recording.
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
	report, verdict, err := Judge(ctx, pid, req.Options)
	if err != nil {
		return nil, err
	}
	if req.Exclusive {
		if err := checkIdle(ctx, pid, req.Options); err != nil {
			return nil, err
		}
	}
	r := &Recording{PID: pid, Verdict: verdict, Name: namePrefix + id, File: "/tmp/.safeattach-jfr-" + id + ".jfr", UID: report.Process.UID.Effective}
	start := fmt.Sprintf("JFR.start name=%s settings=%s filename=%s maxsize=%d", r.Name, req.Settings, r.File, req.MaxSize)
	if req.Duration > 0 {
		start += fmt.Sprintf(" duration=%ds", int((req.Duration+grace)/time.Second))
	}
	out, err := attach.Jcmd(ctx, pid, start, req.Options)
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
// streams the recording (a JFR file) into w. Before anything is sent the
// rules judge the JVM's Flight Recorder (a refusal is an
// *attach.RefusedError with their verdict); a safeattach recording
// already running is ErrRecorderBusy.
func Profile(ctx context.Context, pid int, req Request, w io.Writer) (*Result, error) {
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	rec, err := Start(ctx, pid, StartRequest{Settings: req.Settings, Duration: req.Duration, MaxSize: req.MaxOutput, Options: req.Options, Exclusive: true})
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

// Judge inspects pid and evaluates the rules for its Flight Recorder
// (conflicts.Evaluate with preflight.FlightRecorderAgent, under the
// caller's policy: rule files, acks, strict): whether it has one, and
// whether starting it is known to harm this JVM. A refusal is the safe
// door's *attach.RefusedError, sent before anything reaches the JVM.
func Judge(ctx context.Context, pid int, opts attach.Options) (*preflight.Report, conflicts.Verdict, error) {
	policy, err := opts.Policy(ctx)
	if err != nil {
		return nil, conflicts.Verdict{}, err
	}
	report, err := preflight.Inspect(ctx, pid, preflight.Options{})
	if err != nil {
		return nil, conflicts.Verdict{}, err
	}
	v := conflicts.Evaluate(report, preflight.FlightRecorderAgent(), policy)
	if !v.Allowed {
		return report, v, &attach.RefusedError{PID: pid, Verdict: v}
	}
	return report, v, nil
}

// checkIdle asks the JVM which recordings it runs (JFR.check) and
// refuses with ErrRecorderBusy when one of safeattach's is among them.
func checkIdle(ctx context.Context, pid int, opts attach.Options) error {
	out, err := attach.Jcmd(ctx, pid, "JFR.check", opts)
	if err != nil {
		return err
	}
	if name, ok := runningOurs(out.Output); ok {
		// The name is the JVM's text: shown cut and escaped.
		if len(name) > 64 {
			name = name[:64] + "…"
		}
		name = printable.Line(name)
		return fmt.Errorf("pid %d: %w (recording %s); let it finish, or stop it with jcmd %d JFR.stop name=%s",
			pid, ErrRecorderBusy, name, pid, name)
	}
	return nil
}

// runningOurs finds, in JFR.check's answer, a recording of safeattach's
// that is running or about to ("Recording 3: name=safeattach-<id>
// duration=40s (running)"), and returns its name.
func runningOurs(check string) (string, bool) {
	for line := range strings.Lines(check) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Recording ")
		if !ok {
			continue
		}
		_, rest, ok = strings.Cut(rest, " name=")
		if !ok || !strings.HasPrefix(rest, namePrefix) {
			continue
		}
		if strings.Contains(rest, "(running)") || strings.Contains(rest, "(delayed)") || strings.Contains(rest, "(starting)") {
			name, _, _ := strings.Cut(rest, " ")
			return name, true
		}
	}
	return "", false
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
