package profiling

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLiveProfileToPprof: a pprof profile through the library alone (it
// lived in the CLI): JFR recorded, converted in the bounded child, the
// result says what the profile holds.
func TestLiveProfileToPprof(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	var out bytes.Buffer
	res, err := Profile(context.Background(), p.PID, ProfileRequest{
		SessionRequest: SessionRequest{Lib: lib, Format: "pprof", Profiler: asprof.Options{Event: "itimer"}, Converter: testenv.Converter(t)},
		Duration:       time.Second, Writer: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.Parse(&out)
	if err != nil || len(prof.Sample) == 0 {
		t.Fatalf("not a pprof profile with samples: %v", err)
	}
	if res.Format != "pprof" || res.Pprof == nil || res.Pprof.Stacks != len(prof.Sample) || res.Pprof.Total <= 0 {
		t.Errorf("result %+v, pprof %+v; the file has %d stacks", res, res.Pprof, len(prof.Sample))
	}
}

// TestLivePprofWindows: a session asked for pprof hands every window
// over as a pprof profile (recorded as JFR in the target, converted in
// the bounded child), which is what an embedder pushing windows to a
// pprof store needs from the library alone.
func TestLivePprofWindows(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	ss, err := OpenSession(context.Background(), p.PID, SessionRequest{Lib: lib, Format: "pprof", Profiler: asprof.Options{Event: "itimer"}, Converter: testenv.Converter(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if ss.Format() != "pprof" {
		t.Errorf("Format() = %q, want pprof", ss.Format())
	}
	windows := 0
	// Two windows and the partial third the deadline ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	err = ss.Windows(ctx, time.Second, func(w *Window) error {
		if w.Err != nil {
			t.Errorf("window %d: %v", w.N, w.Err)
			return nil
		}
		prof, err := profile.Parse(w.Output)
		if err != nil {
			t.Errorf("window %d is not a pprof profile: %v", w.N, err)
			return nil
		}
		if len(prof.Sample) == 0 {
			t.Errorf("window %d: no samples", w.N)
		}
		windows++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if windows < 2 {
		t.Errorf("%d windows converted, want at least 2", windows)
	}
}
