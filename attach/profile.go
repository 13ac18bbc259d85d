package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/preflight"
)

// ProfileRequest is an async-profiler session, as asprof users know it.
type ProfileRequest struct {
	// Lib is the async-profiler library; empty means the installed one
	// ($ASYNC_PROFILER_HOME, asprof on PATH, /opt/async-profiler).
	Lib string
	// Event is what to sample: cpu (default), alloc, lock, wall, itimer...
	Event string
	// Duration is how long to profile (default 10s). Cancelling ctx ends
	// the profile early; it is still stopped cleanly and written.
	Duration time.Duration
	// Interval is the sampling interval in async-profiler's syntax
	// ("10ms", "500us"); empty keeps the profiler's default.
	Interval string
	// Output is where the result is written on this machine.
	Output string
	// Format is flamegraph, collapsed, tree, jfr, ...; empty picks it
	// from Output's extension as asprof does.
	Format string
	// Extra is appended to the start options verbatim (e.g. "threads").
	Extra string
	// Progress, if set, is called about once a second while profiling.
	Progress func(elapsed, total time.Duration)
	// Options are the attach options; Timeout, if set, bounds the whole
	// session including Duration.
	Options Options
}

// ProfileResult is a finished profile.
type ProfileResult struct {
	Result
	Output string `json:"output"`
	Bytes  int64  `json:"bytes"`
	// Cancelled is set when ctx ended the profile before Duration.
	Cancelled bool `json:"cancelled,omitempty"`
}

// formatFor maps an output name to async-profiler's format option.
func formatFor(req ProfileRequest) string {
	if req.Format != "" {
		return req.Format
	}
	switch strings.ToLower(filepath.Ext(req.Output)) {
	case ".html":
		return "flamegraph"
	case ".jfr":
		return "jfr"
	case ".txt", ".collapsed":
		return "collapsed"
	}
	return "collapsed"
}

// stopGrace bounds stopping the profiler after a cancelled profile.
const stopGrace = 30 * time.Second

// Profile runs async-profiler in the JVM pid for req.Duration and writes
// the result to req.Output, if the knowledge base finds the combination
// safe. The file the profiler writes inside the target is read back
// through /proc/<pid>/root, so targets in containers work too.
func Profile(ctx context.Context, pid int, req ProfileRequest) (res *ProfileResult, err error) {
	if req.Output == "" {
		return nil, errors.New("profile: no output file given")
	}
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	if req.Event == "" {
		req.Event = "cpu"
	}
	lib := req.Lib
	if lib == "" {
		var searched []string
		if lib, searched = preflight.FindAsyncProfiler(); lib == "" {
			return nil, fmt.Errorf("profile: no async-profiler found (searched %s); give its library with --lib", strings.Join(searched, ", "))
		}
	}
	opts := req.Options
	c := newCall("profile", pid, opts)
	defer func() { c.finish(err) }()
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = req.Duration + DefaultLoadTimeout
	}
	// The session's own deadline; cancelling the caller's ctx ends only
	// the waiting, not the clean stop.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	c.deadline, _ = sctx.Deadline()

	if c.agent, err = preflight.InspectAgent(lib); err != nil {
		return nil, err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	ext := filepath.Ext(req.Output)
	inTarget := fmt.Sprintf("/tmp/.safeattach-profile-%s%s", hex.EncodeToString(rnd[:]), ext)
	start := fmt.Sprintf("start,event=%s,file=%s", req.Event, inTarget)
	if req.Interval != "" {
		start += ",interval=" + req.Interval
	}
	if req.Extra != "" {
		start += "," + req.Extra
	}
	c.agent.Options = start
	if err := c.judge(sctx, preflight.Options{}); err != nil {
		return nil, err
	}
	pctx, pcancel := c.protocolContext(sctx)
	defer pcancel()
	s, err := c.open(pctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	hostFile := filepath.Join(c.report.Process.Root, inTarget)
	defer os.Remove(hostFile)

	res = &ProfileResult{Result: Result{PID: pid, Verdict: c.verdict, Agent: c.agent}}
	if out, err := s.load(pctx, start); err != nil {
		res.Output = out
		return res, err
	}
	res.Cancelled = wait(ctx, pctx, req)
	stopCtx := pctx
	if res.Cancelled {
		var stopCancel context.CancelFunc
		stopCtx, stopCancel = context.WithTimeout(pctx, stopGrace)
		defer stopCancel()
	}
	if _, err := s.load(stopCtx, fmt.Sprintf("stop,file=%s,%s", inTarget, formatFor(req))); err != nil {
		return res, err
	}
	n, err := copyOut(hostFile, req.Output)
	if err != nil {
		return res, fmt.Errorf("profile: %w", err)
	}
	res.Output, res.Bytes = req.Output, n
	if err := c.healthCheck(pctx, s.client); err != nil {
		return res, err
	}
	res.Healthy = true
	res.Duration = time.Since(c.start)
	return res, nil
}

// wait sleeps for the profile's duration, reporting progress, and returns
// early (true) when the caller cancels.
func wait(callerCtx, sessionCtx context.Context, req ProfileRequest) (cancelled bool) {
	start := time.Now()
	end := start.Add(req.Duration)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		timer := time.NewTimer(left)
		select {
		case <-timer.C:
			return false
		case <-callerCtx.Done():
			timer.Stop()
			return true
		case <-sessionCtx.Done():
			timer.Stop()
			return true
		case <-tick.C:
			timer.Stop()
			if req.Progress != nil {
				req.Progress(time.Since(start), req.Duration)
			}
		}
	}
}

// copyOut copies the profile to its destination without ever leaving a
// partial file there: it writes a temporary file beside it and renames it
// into place only when complete (a full disk loses nothing that was
// there before).
func copyOut(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("the profiler wrote no output: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, in)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, fmt.Errorf("write %s: %w", dst, err)
	}
	return n, nil
}
