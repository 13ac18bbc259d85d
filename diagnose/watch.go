package diagnose

import (
	"context"
	"fmt"
	"time"

	"github.com/safeattach/safeattach/internal/proc"
)

// DefaultWatchInterval is Watch's time between samples.
const DefaultWatchInterval = 250 * time.Millisecond

// WatchOptions tune Watch. The zero value samples every 250 ms and
// confirms a deadlock over one second.
type WatchOptions struct {
	// Interval is the time between cheap samples (per-thread CPU ticks
	// and states from /proc/<pid>/task/*/stat).
	Interval time.Duration
	// Confirm is how long a recognised deadlock must persist, with no CPU
	// progress at all, before Watch reports it.
	Confirm time.Duration
	// Options are used for the full analyses (symbolisation, stack scan).
	Options
}

// Watch samples pid until ctx ends and returns a hang report as soon as
// it sees a known deadlock persist: the loader-lock cycle of
// async-profiler #1147/#1151 (an agent inside dl_iterate_phdr waiting for
// the unwinder's or allocator's lock, whose holder waits for the loader
// lock), with the whole process making no CPU progress for Confirm. Any
// other stall — a slow agent, a long GC, an idle JVM — is not reported:
// slow is not hung, and the caller's deadline decides. It returns nil, nil
// when ctx ends first. It reads /proc only and sends the process nothing.
//
// Cost: a cheap sample reads one small file per thread; a full analysis
// (every thread's syscall, wait channel, symbolised PC and stack) runs
// only while the process makes no progress.
func Watch(ctx context.Context, pid int, opts WatchOptions) (*HangReport, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultWatchInterval
	}
	if opts.Confirm <= 0 {
		opts.Confirm = time.Second
	}
	opts.defaults()
	p := proc.NewFS(opts.ProcRoot).Proc(pid)
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	var (
		last      map[int]taskSample
		stillFrom time.Time // the first sample of the current run with no progress
		stillBase map[int]taskSample
		seenSince time.Time // when the deadlock was first recognised
	)
	for first := true; ; first = false {
		// The first sample is taken at once: a caller that starts Watch
		// only once its step has run for a while (attach does) loses no
		// time.
		if !first {
			select {
			case <-ctx.Done():
				return nil, nil
			case <-tick.C:
			}
		} else if ctx.Err() != nil {
			return nil, nil
		}
		now, err := taskTicks(p)
		if err != nil {
			return nil, nil // the process is gone: not a hang
		}
		if last == nil || progressed(last, now) {
			last, stillFrom, stillBase, seenSince = now, time.Time{}, nil, time.Time{}
			continue
		}
		last = now
		if stillFrom.IsZero() {
			stillFrom, stillBase = time.Now(), now
			continue
		}
		// A full analysis over the still period: is it the known cycle?
		name := ""
		if st, err := p.Status(); err == nil {
			name = st.Name
		}
		r, err := analyse(p, name, stillBase, stillFrom, opts.Options)
		if err != nil || r.State != Hung || r.Pattern != PatternLoaderLock {
			seenSince = time.Time{}
			continue
		}
		if seenSince.IsZero() {
			seenSince = time.Now()
		}
		if time.Since(stillFrom) >= opts.Confirm && time.Since(seenSince) >= opts.Interval {
			r.Notes = append(r.Notes, fmt.Sprintf("recognised while attaching: no CPU progress for %d ms and the same lock cycle in consecutive samples", time.Since(stillFrom).Milliseconds()))
			return r, nil
		}
	}
}

// progressed reports whether any thread used CPU between two samples, or
// threads came or went (a JVM that creates threads is not deadlocked).
func progressed(a, b map[int]taskSample) bool {
	if len(a) != len(b) {
		return true
	}
	for tid, s := range b {
		if prev, ok := a[tid]; !ok || prev.ticks != s.ticks {
			return true
		}
	}
	return false
}
