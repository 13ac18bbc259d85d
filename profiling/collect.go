package profiling

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/safeattach/safeattach/attach"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/outfile"
)

// AutoStopFor is the AutoStop for a profile of d: d plus a slack, long
// enough for the stop that is on its way, short enough that a killed
// caller's profiler ends soon after it.
func AutoStopFor(d time.Duration) time.Duration { return d + max(10*time.Second, d/10) }

// collect is async-profiler's profile: a Session started, waited on,
// stopped, with the profile streamed from the target to its
// destination. The profiler is started to stop by itself shortly after
// Duration, so a caller killed meanwhile leaves nothing running.
func (asyncProfiler) collect(ctx context.Context, pid int, req ProfileRequest) (res *ProfileResult, err error) {
	if WantsPprof(req) {
		return profilePprof(ctx, pid, req)
	}
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	if err := CheckTimeout(req.Options.Timeout, req.Duration); err != nil {
		return nil, err
	}
	var out *outfile.File
	if req.Writer == nil {
		if out, err = outfile.Prepare(req.Output, req.OutputMode, req.OutputOwner.outfile()); err != nil {
			return nil, fmt.Errorf("%w: profile: %v", attach.ErrInvalidOptions, err)
		}
		defer out.Discard()
	}
	// The session's own deadline covers the whole profile; cancelling the
	// caller's ctx ends the opening (nothing runs yet) and the waiting,
	// not a start under way nor the clean stop, which then has
	// attach.StopAfterCancel.
	timeout := req.Options.Timeout
	if timeout <= 0 {
		timeout = req.Duration + attach.DefaultLoadTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	sreq := req
	sreq.Options.Timeout = 0
	sreq.AutoStop = AutoStopFor(req.Duration)
	octx, stopOpening := context.WithCancel(sctx)
	unhook := context.AfterFunc(ctx, stopOpening)
	ss, err := openSession(octx, pid, sreq.SessionRequest, "profile")
	unhook()
	stopOpening()
	if err != nil {
		return nil, err
	}
	defer ss.Close()
	ss.action, ss.keepLast = "collect", true
	defer func() { ss.door.Finish(err) }()
	res = &ProfileResult{Result: ss.Result(), Event: ss.Event(), Format: ss.format, Engine: AsyncProfiler}
	if ctx.Err() != nil {
		return res, fmt.Errorf("profile: %w before the profiler started: nothing was collected", ctx.Err())
	}
	err = ss.Start(sctx)
	res.AgentLog = ss.LastLog()
	if err != nil {
		return res, err
	}
	jvmExit, stopWatching := exitOf(pid)
	defer stopWatching()
	res.Cancelled, res.Exited = wait(ctx, sctx, req, jvmExit)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		// The grace ends in a cancellation, not a deadline: a stop cut
		// off by it was interrupted (the caller gave up), not hung, and
		// no time goes into a hang report.
		var graced context.Context
		graced, cancel = context.WithCancel(sctx)
		grace := time.AfterFunc(attach.StopAfterCancel, cancel)
		defer grace.Stop()
		sctx = graced
		defer cancel()
	}
	var dst io.Writer = req.Writer
	if dst == nil {
		dst = out
	}
	if res.Exited {
		// Seen at once (the pidfd): what the agent wrote as the JVM
		// exited is in the start's file, read through the /tmp the
		// session holds open.
		res.Bytes, err = ss.lastProfile(sctx, dst)
		if err == nil && out != nil {
			err = out.Commit()
			res.Output = req.Output
		}
		if err != nil {
			return res, fmt.Errorf("pid %d: %w during the profile, and its last profile could not be read: %w", pid, hotspot.ErrTargetExited, err)
		}
		res.Duration = attach.Elapsed(time.Since(ss.door.Opened()))
		return res, nil
	}
	res.Bytes, err = ss.Stop(sctx, dst)
	res.AgentLog = append(res.AgentLog, ss.LastLog()...)
	if ss.fdt != nil {
		st := ss.fdt.Stats()
		res.FdTransfer = &st
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("profile: interrupted, and the profiler's stop did not succeed within %v (it stops by itself %v after it started, its timeout=): %w", attach.StopAfterCancel, sreq.AutoStop, err)
		}
		return res, fmt.Errorf("profile: %w", err)
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return res, fmt.Errorf("profile: %w", err)
		}
		res.Output = req.Output
	}
	if err := ss.Healthy(sctx); err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("profile: interrupted; the profiler stopped and %d bytes were written, but the JVM did not answer the health check after it within %v: %w", res.Bytes, attach.StopAfterCancel, err)
		}
		return res, err
	}
	res.Healthy = true
	res.Duration = attach.Elapsed(time.Since(ss.door.Opened()))
	return res, nil
}

// exitOf returns a channel closed when the process pid exits (a pidfd
// becomes readable), and a function that stops watching.
func exitOf(pid int) (<-chan struct{}, func()) {
	exited, done := make(chan struct{}), make(chan struct{})
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return exited, func() {} // never closes: the usual stop notices
	}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			select {
			case <-done:
				return
			default:
			}
			if n, _ := unix.Poll(fds, 200); n > 0 {
				close(exited)
				return
			}
		}
	}()
	var once sync.Once
	return exited, func() { once.Do(func() { close(done) }) }
}
