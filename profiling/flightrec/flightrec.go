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
const Limits = "Java frames only (no native or kernel frames); CPU samples of threads running Java code (jdk.ExecutionSample), every 10 ms with the profile settings"

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

// Profile records pid with its Flight Recorder for req.Duration and
// streams the recording (a JFR file) into w. Before anything is sent the
// rules judge the JVM's Flight Recorder (a refusal is an
// *attach.RefusedError with their verdict); a safeattach recording
// already running is ErrRecorderBusy.
func Profile(ctx context.Context, pid int, req Request, w io.Writer) (*Result, error) {
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	if req.Settings == "" {
		req.Settings = "profile"
	}
	if req.Settings != "profile" && req.Settings != "default" {
		return nil, fmt.Errorf("%w: JFR settings %q: want profile or default", attach.ErrInvalidOptions, req.Settings)
	}
	if req.MaxOutput <= 0 {
		req.MaxOutput = DefaultMaxRecording
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(rnd[:])
	res := &Result{Name: namePrefix + id, Limits: Limits}
	// In the JVM's own /tmp, as the JVM resolves it (its mount
	// namespace): the same path inside its root, for the read-back.
	file := "/tmp/.safeattach-jfr-" + id + ".jfr"
	report, verdict, err := judge(ctx, pid, req.Options)
	if err != nil {
		return nil, err
	}
	res.Verdict = verdict
	if err := notBusy(ctx, pid, req.Options); err != nil {
		return nil, err
	}
	start := fmt.Sprintf("JFR.start name=%s settings=%s filename=%s duration=%ds", res.Name, req.Settings, file,
		int((req.Duration+grace)/time.Second))
	out, err := attach.Jcmd(ctx, pid, start, req.Options)
	if err != nil {
		return nil, err
	}
	// The JVM answers status 0 whatever happened: its words say it.
	if !strings.HasPrefix(strings.TrimSpace(out.Output), "Started recording") || !strings.Contains(out.Output, file) {
		if strings.HasPrefix(strings.TrimSpace(out.Output), "Started recording") {
			stop(context.WithoutCancel(ctx), pid, res.Name, req.Options)
		}
		return nil, fmt.Errorf("%w: %s", ErrNoFlightRecorder, firstLine(out.Output))
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	defer safefile.RemoveIn(context.WithoutCancel(ctx), root, file)
	res.Recording = file

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
	if err := stop(sctx, pid, res.Name, req.Options); err != nil {
		return res, err
	}
	h, err := safefile.OpenIn(sctx, root, file, req.MaxOutput, safefile.Accept{UIDs: []uint32{report.Process.UID.Effective}, SingleLink: true})
	if err != nil {
		return res, fmt.Errorf("the recording: %w", err)
	}
	defer h.Close()
	n, err := io.Copy(w, h.Reader(req.MaxOutput))
	res.Bytes = n
	if err != nil {
		return res, fmt.Errorf("the recording: %w", err)
	}
	return res, nil
}

// judge inspects pid and evaluates the rules for its Flight Recorder
// (conflicts.Evaluate with preflight.FlightRecorderAgent, under the
// caller's policy: rule files, acks, strict): whether it has one, and
// whether starting it is known to harm this JVM. A refusal is the safe
// door's *attach.RefusedError, sent before anything reaches the JVM.
func judge(ctx context.Context, pid int, opts attach.Options) (*preflight.Report, conflicts.Verdict, error) {
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

// notBusy asks the JVM which recordings it runs (JFR.check) and refuses
// with ErrRecorderBusy when one of safeattach's is among them.
func notBusy(ctx context.Context, pid int, opts attach.Options) error {
	out, err := attach.Jcmd(ctx, pid, "JFR.check", opts)
	if err != nil {
		return err
	}
	if name, ok := runningOurs(out.Output); ok {
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
