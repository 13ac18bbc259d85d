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
		SessionRequest: SessionRequest{Lib: lib, Format: "pprof", Profiler: asprof.Options{Event: "itimer"}},
		Duration:       time.Second, Writer: &out, Converter: testenv.Converter(t),
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
