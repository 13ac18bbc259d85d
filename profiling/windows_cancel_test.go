package profiling

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLiveWindowsEndedMidRotation: ctx ending while a window rotates
// (its stop waiting for the JVM's attach listener, which serves another
// agent's slow load meanwhile) does not cut the rotation off: the window
// is handed over, the loop takes its last partial window, returns nil
// and leaves no profiler running. Cut off mid-command, the rotation left
// the profiler in a state nobody knew: a node agent whose pod was
// deleted during a rotation (SIGTERM: Drain) lost the window and left a
// profiler running in the JVM until its timeout= (seen on a real node).
func TestLiveWindowsEndedMidRotation(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	slow := testenv.BuildAgent(t, testenv.AgentSleepOnAttach)
	ss, err := OpenSession(context.Background(), p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed"})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if err := ss.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first window ends at 1 s; the listener is busy from 0.6 s to
	// 2.6 s, so its stop waits; ctx ends at 1.5 s, mid-rotation.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var slowErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(600 * time.Millisecond)
		_, slowErr = attach.Load(context.Background(), p.PID, slow, "2", attach.Options{Timeout: 30 * time.Second})
	}()
	time.AfterFunc(1500*time.Millisecond, cancel)
	type got struct {
		n          int
		last       bool
		err        error
		collapsed  string
		from, upto time.Time
	}
	var windows []got
	began := time.Now()
	err = ss.Windows(ctx, time.Second, func(w *Window) error {
		g := got{n: w.N, last: w.Last, err: w.Err, from: w.From, upto: w.Until}
		if w.Output != nil {
			var b bytes.Buffer
			io.Copy(&b, w.Output)
			g.collapsed = b.String()
		}
		windows = append(windows, g)
		return nil
	})
	took := time.Since(began)
	wg.Wait()
	if slowErr != nil {
		t.Fatalf("the slow agent's load: %v", slowErr)
	}
	for _, w := range windows {
		t.Logf("window %d (last %v): %v to %v, err %v, %d bytes", w.n, w.last, w.from.Sub(began).Round(time.Millisecond), w.upto.Sub(began).Round(time.Millisecond), w.err, len(w.collapsed))
	}
	if err != nil {
		t.Fatalf("Windows ended mid-rotation returned %v after %v, want nil", err, took.Round(time.Millisecond))
	}
	if len(windows) < 2 || windows[0].n != 0 || windows[0].last || !windows[len(windows)-1].last {
		t.Fatalf("want the rotated window 0 and a last partial one; got %d windows", len(windows))
	}
	for _, w := range windows {
		if w.err != nil || !strings.Contains(w.collapsed, "[itimer]") {
			t.Errorf("window %d: err %v, profile %q", w.n, w.err, w.collapsed)
		}
	}
	var status bytes.Buffer
	if _, err := ss.Command(context.Background(), "status", &status); err != nil || !strings.Contains(status.String(), "Profiler is not active") {
		t.Errorf("status after Windows returned: %v %q, want the profiler not active", err, status.String())
	}
}
