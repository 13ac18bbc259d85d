package fleet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/pyroscope"
)

// slowPyroscope is a stand-in ingest endpoint that takes delay to answer
// each push and counts the pushes it has answered.
type slowPyroscope struct {
	delay  time.Duration
	mu     sync.Mutex
	bodies []string
}

func (s *slowPyroscope) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	select {
	case <-time.After(s.delay):
	case <-r.Context().Done():
		return
	}
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.mu.Unlock()
}

func (s *slowPyroscope) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// drainDaemon is a daemon pushing to url, with its pusher running until
// the test ends.
func drainDaemon(t *testing.T, url string) (*Daemon, *pyroscope.Pusher) {
	t.Helper()
	pusher, err := pyroscope.NewPusher(pyroscope.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: "/nonexistent"}, Format: "collapsed", Pusher: pusher})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pushed := make(chan struct{})
	go func() { pusher.Run(ctx); close(pushed) }()
	t.Cleanup(func() { cancel(); <-pushed })
	return d, pusher
}

// startStandInSession registers a session as keepProfiling does, whose
// profiler takes its last window only when it is stopped, as a real
// one's last partial window is: that window exists only if the
// profilers are stopped before the pusher is drained.
func startStandInSession(d *Daemon, w wanted, last string) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &profiled{cancel: cancel, done: make(chan struct{})}
	d.mu.Lock()
	d.sessions[w.key()] = p
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		<-ctx.Done()
		// Stopping a profiler and reading its window back takes a moment.
		time.Sleep(50 * time.Millisecond)
		now := time.Now()
		d.finished(w, &profiling.Window{From: now.Add(-time.Second), Until: now, Output: bytes.NewReader([]byte(last)), Size: int64(len(last)), Last: true}, profiling.AsyncProfiler, d.cfg.Logger)
		close(p.done)
	}()
}

// TestDrainStopsProfilersThenWaitsForThePusher: Drain returns only once
// the last window every profiler took when stopped has reached the
// backend. Were the pusher drained first, the last windows would be
// queued after it (and nothing received when Drain returns); were Drain
// to return before the pusher is drained, the slow backend would not
// have answered yet.
func TestDrainStopsProfilersThenWaitsForThePusher(t *testing.T) {
	ingest := &slowPyroscope{delay: 300 * time.Millisecond}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)
	d, pusher := drainDaemon(t, srv.URL)
	pod := kube.Pod{Namespace: "shop", Name: "orders", UID: "7f1d3c2b-4e5f-4a6b-9c8d-00000000000d", Node: "node-1"}
	startStandInSession(d, wanted{pod, kube.Container{Name: "app"}}, "main;work 7\n")
	startStandInSession(d, wanted{pod, kube.Container{Name: "sidecar"}}, "main;idle 3\n")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := d.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	took := time.Since(began)
	if got := ingest.received(); len(got) != 2 {
		t.Fatalf("when Drain returned (after %v) the backend had %d of the 2 last windows: %q", took, len(got), got)
	}
	if st := pusher.Stats(); st.Sent != 2 || st.Queued != 0 {
		t.Errorf("pusher stats %+v when Drain returned: want 2 sent, none queued", st)
	}
	d.mu.Lock()
	left := len(d.sessions)
	d.mu.Unlock()
	if left != 0 {
		t.Errorf("%d sessions left after Drain", left)
	}
	if err := d.Drain(ctx); err != nil {
		t.Errorf("a second Drain, with nothing left to do: %v", err)
	}
}

// TestDrainEndsWithItsContext: a backend that never answers holds the
// last window; Drain gives up when its context ends and says so, rather
// than holding the shutdown past the grace period.
func TestDrainEndsWithItsContext(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hold) })
	d, _ := drainDaemon(t, srv.URL)
	startStandInSession(d, wanted{kube.Pod{Namespace: "shop", Name: "orders", UID: "7f1d3c2b-4e5f-4a6b-9c8d-00000000000e"}, kube.Container{Name: "app"}}, "main;work 7\n")

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := d.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with a backend that never answers: %v, want the context's deadline", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Drain returned %v after its context ended", took)
	}
}
