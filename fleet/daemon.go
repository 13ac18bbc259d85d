package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safeattach/safeattach/kube"
)

// Daemon profiles the opted-in JVMs of one node.
type Daemon struct {
	cfg   Config
	ready atomic.Bool

	mu       sync.Mutex
	sessions map[string]*profiled // by pod UID/container name
	// judged remembers, by pod UID/container name, the JVM that was
	// refused or failed, so that it is not retried until it changes.
	judged  map[string]jvmID
	unfound map[string]string // the last resolution error logged
	// onDemand names, by JVM, the user an on-demand profile runs for.
	onDemand map[jvmID]string
	// stopOnDemand stop the profiles started on demand (one for each
	// on-demand handler), when the profilers are stopped.
	stopOnDemand []func()
	wg           sync.WaitGroup
}

type jvmID struct {
	pid   int
	start uint64
}

type profiled struct {
	jvm    jvmID
	cancel context.CancelFunc
	done   chan struct{}
}

// Metrics returns the daemon's counters.
func (d *Daemon) Metrics() *Metrics { return d.cfg.Metrics }

// Ready reports whether one pod list has been read.
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Run synchronises every SyncInterval until ctx ends, then stops every
// profiler (each takes its last partial window, which Drain then waits
// to see pushed).
// A source that is a kube.Notifier (a watch) is also synchronised at
// each change: a pod that starts running is profiled, and a deleted
// pod's profiler stopped, as soon as the API server says so; the timer
// then only catches what the API cannot see (a JVM restarted inside its
// container), and costs the API server nothing (the pods come from the
// watch's cache).
func (d *Daemon) Run(ctx context.Context) {
	tick := time.NewTicker(d.cfg.SyncInterval)
	defer tick.Stop()
	var changes <-chan struct{}
	if n, ok := d.cfg.Pods.(kube.Notifier); ok {
		changes = n.Changes()
	}
	for {
		switch err := d.Sync(ctx); {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, kube.ErrNotSynced):
			// A watch still taking its first list in: it wakes this
			// loop when it has.
			d.cfg.Logger.Debug("pods not listed yet", "err", err)
		default:
			d.cfg.Logger.Warn("pod sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			d.StopAll()
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

// Drain is the node agent's shutdown, in its order: it stops every
// profiler and waits for their last windows (StopAll), then waits until
// the pusher has sent every queued window or given up on it
// (pyroscope.Pusher.Drain). The other order would stop pushing before
// the last windows were queued. It returns nil when both are done, or an
// error once ctx ends first (the profilers go on stopping). Call it after
// Run has returned (Run stops the profilers itself; Drain finds none) and
// while the pusher's Run still runs; stop the pusher after it.
func (d *Daemon) Drain(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() {
		d.StopAll()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		return fmt.Errorf("fleet: profilers not stopped yet: %w", ctx.Err())
	}
	if d.cfg.Pusher == nil {
		return nil
	}
	return d.cfg.Pusher.Drain(ctx)
}

// StopAll stops every profiler and waits for their last windows. It
// ends on-demand profiling for good: the profiles started on demand are
// stopped and discarded, and a start after it is answered 503.
func (d *Daemon) StopAll() {
	d.mu.Lock()
	for key, s := range d.sessions {
		s.cancel()
		delete(d.sessions, key)
	}
	d.cfg.Metrics.setActive(0)
	stopOnDemand := d.stopOnDemand
	d.mu.Unlock()
	for _, stop := range stopOnDemand {
		stop()
	}
	d.wg.Wait()
}
