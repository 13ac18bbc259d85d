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

// Profile records pid with its Flight Recorder for req.Duration and
// streams the recording (a JFR file) into w.
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
	res := &Result{Name: "safeattach-" + id, Limits: Limits}
	// In the JVM's own /tmp, as the JVM resolves it (its mount
	// namespace): the same path inside its root, for the read-back.
	file := "/tmp/.safeattach-jfr-" + id + ".jfr"
	report, err := preflight.Inspect(ctx, pid, preflight.Options{})
	if err != nil {
		return nil, err
	}
	if why := hazard(report); why != "" {
		// A refusal, as the safe door's are: nothing was sent.
		return nil, fmt.Errorf("%w (%w): %s", ErrHazard, attach.ErrRefused, why)
	}
	start := fmt.Sprintf("JFR.start name=%s settings=%s filename=%s duration=%ds", res.Name, req.Settings, file,
		int((req.Duration+grace)/time.Second))
	out, err := attach.Jcmd(ctx, pid, start, req.Options)
	if out != nil {
		res.Verdict = out.Verdict
	}
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
