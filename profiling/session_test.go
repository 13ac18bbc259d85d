package profiling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLiveSessionRotates100Windows: a daemon's continuous profiling — one
// session rotating a hundred windows on one JVM — leaks no descriptor,
// leaves no command file or log in the target, and keeps one copy of the
// agent. The JVM runs as a pod, with a /tmp of its own: what is left
// there is this test's, not another test's in flight or a killed run's.
//
// Not parallel: it counts this process's descriptors, and the other
// tests of the package, which run in parallel, open theirs meanwhile.
func TestLiveSessionRotates100Windows(t *testing.T) {
	p := testenv.StartPod(t, testenv.PodSpec{})
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	fds := func() int {
		es, _ := os.ReadDir("/proc/self/fd")
		return len(es)
	}
	ctx := context.Background()
	ss, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed"})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	before := fds()
	for i := 0; i < 100; i++ {
		var data bytes.Buffer
		if _, err := ss.Rotate(ctx, &data); err != nil {
			t.Fatalf("window %d: %v", i, err)
		}
		if !strings.Contains(data.String(), "[itimer]") {
			t.Fatalf("window %d: %q", i, data.String())
		}
	}
	if _, err := ss.Stop(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
	// A leak per window would show as a hundred; the runtime and the
	// race detector may open a few of their own.
	if after := fds(); after > before+10 {
		t.Errorf("descriptors grew from %d to %d over 100 windows", before, after)
	}

	// Every command's files (newTargetFile: .safeattach-<kind>-<random>)
	// are gone once it returned.
	left, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-*-*", p.PID))
	for _, f := range left {
		t.Errorf("left in the target's /tmp: %s", f)
	}
	if maps := testenv.Maps(t, p.PID); strings.Count(maps, "liblookalike_fixed.so") == 0 {
		t.Error("the agent is not mapped")
	}
	if res := ss.Result(); !strings.HasPrefix(res.LoadedFrom, "/") {
		t.Errorf("loaded from %q", res.LoadedFrom)
	}
	// A profiler another session runs is not restarted: it is refused
	// with who runs it (TestLiveOneOwnerPerProfiler has the rest).
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "wall"}, Format: "collapsed"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var busy *BusyError
	if err := other.Start(ctx); !errors.As(err, &busy) || busy.Owner == nil {
		t.Fatalf("start over a running profiler: %v", err)
	}
	if _, err := ss.Stop(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
}
