package profiling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// leftoverRecordings lists the Flight Recorder's files in the pod's /tmp.
func leftoverRecordings(pod *testenv.Pod) []string {
	m, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-jfr-*", pod.PID))
	return m
}

// TestLiveFlightRecorderAcrossInvocations: on every JDK here, the Flight
// Recorder is a Profiler like async-profiler: a detached start, then —
// from another Open, as another invocation would — a dump (collapsed,
// the workload's frames) and a stop that writes the file the start
// named, leaving nothing in the pod's /tmp and no recording running.
func TestLiveFlightRecorderAcrossInvocations(t *testing.T) {
	t.Parallel()
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			t.Parallel()
			pod := testenv.StartPod(t, testenv.PodSpec{JDK: jdk, Workers: 2, Mode: "spin", JVMArgs: c1Only})
			ctx := context.Background()
			out := filepath.Join(t.TempDir(), "late.collapsed")
			start, err := Open(ctx, pod.PID, SessionRequest{Engine: FlightRecorder, Detached: true, Output: out, Converter: testenv.Converter(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := start.Start(ctx); err != nil {
				t.Fatal(err)
			}
			start.Close()

			later, err := Open(ctx, pod.PID, SessionRequest{LoadedOnly: true, Format: "collapsed", Converter: testenv.Converter(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer later.Close()
			if later.Engine() != FlightRecorder {
				t.Fatalf("a later Open found %s, want the Flight Recorder its start left", later.Engine())
			}
			var status bytes.Buffer
			if _, err := later.Command(ctx, "status", &status); err != nil || !strings.Contains(status.String(), "safeattach-") {
				t.Errorf("status: %v %q", err, status.String())
			}
			// Dumps until the workload's frames are in one: the recording
			// samples every 10 ms, but a loaded machine delays them.
			var dump bytes.Buffer
			for deadline := time.Now().Add(30 * time.Second); ; {
				dump.Reset()
				_, err := later.Dump(ctx, &dump)
				// A recording with no CPU sample yet cannot be made a CPU
				// profile: a later dump may.
				if err != nil && !errors.Is(err, attach.ErrConversionFailed) {
					t.Fatalf("dump: %v", err)
				}
				if err == nil && strings.Contains(dump.String(), "Target") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no dump in 30 s holds the workload's frames: %d bytes", dump.Len())
				}
				time.Sleep(500 * time.Millisecond)
			}
			wrote, err := later.StopTo(ctx, Destination{Writer: &bytes.Buffer{}, AsStarted: true})
			if err != nil || !wrote.AsStarted || wrote.File != out {
				t.Fatalf("stop: %+v %v", wrote, err)
			}
			if data, _ := os.ReadFile(out); !strings.Contains(string(data), "Target") {
				t.Errorf("%s: %d bytes without the workload's frames", out, len(data))
			}
			if left := leftoverRecordings(pod); len(left) > 0 {
				t.Errorf("left in the pod's /tmp: %v", left)
			}
			again, err := Open(ctx, pod.PID, SessionRequest{LoadedOnly: true, Engine: FlightRecorder, Format: "jfr"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := again.Stop(ctx, &dump); err == nil {
				t.Error("a second stop found a recording to stop")
			}
		})
	}
}

// TestLiveFlightRecorderWindows: the Flight Recorder's windows, each a
// recording of its own, arrive converted to pprof. A window whose
// recording holds no CPU sample (the recorder's sampler skips threads it
// cannot walk, a tight loop compiled by C2 among them) says so; the
// others hold samples.
func TestLiveFlightRecorderWindows(t *testing.T) {
	t.Parallel()
	pod := testenv.StartPod(t, testenv.PodSpec{Workers: 2, Mode: "spin", JVMArgs: c1Only})
	ss, err := Open(context.Background(), pod.PID, SessionRequest{Engine: FlightRecorder, Format: "pprof", Converter: testenv.Converter(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// Two windows of 1.5 s at least, and a partial third: each window's
	// recording starts with a JFR.start, which a loaded machine slows.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	windows, sampled := 0, 0
	err = ss.Windows(ctx, 1500*time.Millisecond, func(w *Window) error {
		windows++
		if errors.Is(w.Err, attach.ErrConversionFailed) && strings.Contains(w.Err.Error(), "no process_cpu profile") {
			return nil
		}
		if w.Err != nil {
			t.Errorf("window %d: %v", w.N, w.Err)
			return nil
		}
		prof, err := profile.Parse(w.Output)
		if err != nil || len(prof.Sample) == 0 {
			t.Errorf("window %d is not a pprof profile with samples: %v", w.N, err)
		}
		sampled++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if windows < 2 || sampled == 0 {
		t.Errorf("%d windows, %d with CPU samples; want at least 2, one with samples", windows, sampled)
	}
	if left := leftoverRecordings(pod); len(left) > 0 {
		t.Errorf("left in the pod's /tmp: %v", left)
	}
}

// TestLiveFlightRecorderWayBack: the recording is the pod's file. Made a
// 900 MiB sparse file the moment the JVM closes it, it is refused by
// its size before a byte is read (a 64 MiB budget); replaced by a link
// to /etc/shadow, it is not followed. Either way the stop fails saying
// why, nothing is written, and the JVM still answers.
func TestLiveFlightRecorderWayBack(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"sparse", "link"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			pod := testenv.StartPod(t, testenv.PodSpec{Workers: 1})
			pod.StartWaybackAttacker(t, mode)
			ctx := context.Background()
			ss, err := Open(ctx, pod.PID, SessionRequest{Engine: FlightRecorder, Format: "jfr", MaxOutput: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			if err := ss.Start(ctx); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			_, err = ss.Stop(ctx, &out)
			switch {
			case err == nil:
				t.Fatalf("the stop read the pod's %s file: %d bytes", mode, out.Len())
			case mode == "sparse" && !errors.Is(err, safefile.ErrTooLarge):
				t.Errorf("sparse: %v, want %v", err, safefile.ErrTooLarge)
			case mode == "link" && !errors.Is(err, safefile.ErrNotRegular):
				t.Errorf("link: %v, want %v", err, safefile.ErrNotRegular)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written from the pod's file", out.Len())
			}
			if err := ss.Healthy(ctx); err != nil {
				t.Errorf("the JVM does not answer: %v", err)
			}
		})
	}
}

// TestLiveFlightRecorderEvents: the Flight Recorder's profiles of
// allocations and locks, on every JDK here, hold the workload's frames
// (threads that compute, allocate and take turns on one monitor); a
// wall-clock profile, which it cannot record, is refused before
// anything is sent.
func TestLiveFlightRecorderEvents(t *testing.T) {
	t.Parallel()
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{JDK: jdk, Workers: 3, Mode: "contend"})
			for _, event := range []string{"alloc", "lock"} {
				var out bytes.Buffer
				res, err := Profile(context.Background(), p.PID, ProfileRequest{
					SessionRequest: SessionRequest{Engine: FlightRecorder, Profiler: asprof.Options{Event: event}, Format: "collapsed", Converter: testenv.Converter(t)},
					Duration:       3 * time.Second, Writer: &out,
				})
				if err != nil {
					t.Fatalf("-e %s: %v", event, err)
				}
				if res.Event != event || !strings.Contains(out.String(), "Target") {
					t.Errorf("-e %s: event %q, %d bytes without the workload's frames: %.300s", event, res.Event, out.Len(), out.String())
				}
			}
			_, err := Profile(context.Background(), p.PID, ProfileRequest{
				SessionRequest: SessionRequest{Engine: FlightRecorder, Profiler: asprof.Options{Event: "wall"}, Format: "collapsed"},
				Duration:       time.Second, Writer: &bytes.Buffer{},
			})
			if !errors.Is(err, attach.ErrInvalidOptions) || !strings.Contains(err.Error(), "wall-clock") {
				t.Errorf("-e wall: %v", err)
			}
		})
	}
}

// TestLiveForgedRecorderAnswersStayText: a JVM that took over its own
// attach socket answers JFR.check with a running recording named as
// ours, terminal escapes and a forged "[ERROR]" line. The busy refusal
// that follows carries none of it raw: no control character, no line
// break the JVM chose.
func TestLiveForgedRecorderAnswersStayText(t *testing.T) {
	t.Parallel()
	p := testenv.StartAttachImpostor(t, "forge")
	_, err := Profile(context.Background(), p.PID, ProfileRequest{
		SessionRequest: SessionRequest{Engine: FlightRecorder},
		Duration:       time.Second, Writer: &bytes.Buffer{},
	})
	if err == nil {
		t.Fatal("profiled a JVM whose answers say our recording runs")
	}
	t.Logf("refused: %v", err)
	if msg := err.Error(); testenv.HasControl(msg) || strings.Contains(msg, "\n") || strings.Contains(msg, "[ERROR] forged") {
		t.Errorf("the refusal carries the JVM's text raw: %q", msg)
	}
}

// c1Only runs a JVM's compiled Java code as C1 compiles it: the Flight
// Recorder's sampler skips a thread whose frame it cannot walk, and a
// tight loop compiled by C2 (no call, no poll with debug information
// near) is one, so a test that wants CPU samples of its workload runs
// it with C1 only.
var c1Only = []string{"-XX:TieredStopAtLevel=1"}
