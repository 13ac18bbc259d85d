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
	ss, err := openForCollect(ctx, sctx, pid, req)
	if err != nil {
		return nil, err
	}
	defer ss.Close()
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
		var endGrace context.CancelFunc
		sctx, endGrace = withGrace(sctx)
		defer endGrace()
	}
	c := collection{ss: ss, req: req, out: out, res: res}
	if res.Exited {
		err = c.lastProfile(sctx, pid)
	} else {
		err = c.finish(sctx, func() bool { return ctx.Err() != nil })
	}
	if err == nil {
		res.Duration = attach.Elapsed(time.Since(ss.door.Opened()))
	}
	return res, err
}

// openForCollect opens the session of a collect under sctx; the
// caller's ctx ends the opening too (nothing runs yet).
func openForCollect(ctx, sctx context.Context, pid int, req ProfileRequest) (*Session, error) {
	sreq := req.SessionRequest
	sreq.Options.Timeout = 0
	sreq.AutoStop = AutoStopFor(req.Duration)
	octx, stopOpening := context.WithCancel(sctx)
	defer stopOpening()
	unhook := context.AfterFunc(ctx, stopOpening)
	defer unhook()
	ss, err := openSession(octx, pid, sreq, "profile")
	if err != nil {
		return nil, err
	}
	ss.action, ss.keepLast = "collect", true
	return ss, nil
}

// withGrace is ctx for the stop of an interrupted profile: it ends
// attach.StopAfterCancel later in a cancellation, not a deadline, so a
// stop cut off by it was interrupted (the caller gave up), not hung, and
// no time goes into a hang report.
func withGrace(ctx context.Context) (context.Context, context.CancelFunc) {
	graced, cancel := context.WithCancel(ctx)
	grace := time.AfterFunc(attach.StopAfterCancel, cancel)
	return graced, func() { grace.Stop(); cancel() }
}

// collection is the end of a collect: its profile written where the
// request said, and the result told what happened.
type collection struct {
	ss  *Session
	req ProfileRequest
	out *outfile.File
	res *ProfileResult
}

func (c *collection) dst() io.Writer {
	if c.req.Writer != nil {
		return c.req.Writer
	}
	return c.out
}

// commit makes the prepared output file the profile.
func (c *collection) commit() error {
	if c.out == nil {
		return nil
	}
	if err := c.out.Commit(); err != nil {
		return err
	}
	c.res.Output = c.req.Output
	return nil
}

// lastProfile writes what the agent wrote as the JVM exited (seen at
// once through the pidfd): it is in the start's file, read through the
// /tmp the session holds open.
func (c *collection) lastProfile(ctx context.Context, pid int) (err error) {
	c.res.Bytes, err = c.ss.lastProfile(ctx, c.dst())
	if err == nil {
		err = c.commit()
	}
	if err != nil {
		return fmt.Errorf("pid %d: %w during the profile, and its last profile could not be read: %w", pid, hotspot.ErrTargetExited, err)
	}
	return nil
}

// finish stops the profiler, writes its profile and asks the JVM
// whether it still answers; interrupted says whether the caller gave up
// meanwhile, which words what failed.
func (c *collection) finish(ctx context.Context, interrupted func() bool) (err error) {
	c.res.Bytes, err = c.ss.Stop(ctx, c.dst())
	c.res.AgentLog = append(c.res.AgentLog, c.ss.LastLog()...)
	if c.ss.fdt != nil {
		st := c.ss.fdt.Stats()
		c.res.FdTransfer = &st
	}
	if err != nil {
		if interrupted() {
			return fmt.Errorf("profile: interrupted, and the profiler's stop did not succeed within %v (it stops by itself %v after it started, its timeout=): %w", attach.StopAfterCancel, AutoStopFor(c.req.Duration), err)
		}
		return fmt.Errorf("profile: %w", err)
	}
	if err := c.commit(); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if err := c.ss.Healthy(ctx); err != nil {
		if interrupted() {
			return fmt.Errorf("profile: interrupted; the profiler stopped and %d bytes were written, but the JVM did not answer the health check after it within %v: %w", c.res.Bytes, attach.StopAfterCancel, err)
		}
		return err
	}
	c.res.Healthy = true
	return nil
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
