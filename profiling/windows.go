package profiling

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/outfile"
)

// MinWindow is the shortest window Session.Windows cuts: each window
// costs a stop and a start, two commands through the JVM's
// single-threaded attach listener.
const MinWindow = time.Second

// stopTimeout bounds the final stop of a window loop whose context ended.
const stopTimeout = 30 * time.Second

// Window is one finished window of Session.Windows.
type Window struct {
	// N counts windows from 0; From and Until bound the window.
	N           int
	From, Until time.Time
	// Output streams the window's profile straight from the target,
	// within SessionRequest.MaxOutput; it is valid only during the call
	// that receives the Window. Size is the file's size as the target's
	// file system reported it before a byte was read.
	Output io.Reader
	Size   int64
	// Err is set, and Output nil, when the window cannot be read back:
	// larger than MaxOutput (safefile.ErrTooLarge), not a regular file of
	// the JVM's user, missing (ErrNoOutput).
	Err error
	// Log is what the agent logged for the window's stop and the next
	// start.
	Log []string
	// Last is set on the window that ends the loop.
	Last bool
}

// Windows profiles in windows of every (at least MinWindow) until ctx
// ends: it starts the profiler (or continues the one this session's
// Start started, whose first window it then is), and at the end of each
// window stops it,
// starts the next window at once, then hands the finished one to fn and
// removes it from the target. When ctx ends, the profiler is stopped
// (within stopTimeout, ctx's cancellation notwithstanding; a rotation
// under way runs to its end first), the partial window handed to fn
// with Last set, and Windows returns nil. An error
// from a command ends the loop with that error, the profiler stopped if
// it can be; an error from fn ends it the same way. Each start carries
// a timeout= of every plus a slack, so a caller killed mid-loop leaves
// no profiler running for long.
func (ss *Session) Windows(ctx context.Context, every time.Duration, fn func(*Window) error) error {
	if every < MinWindow {
		return fmt.Errorf("%w: a window of %v is shorter than %v", attach.ErrInvalidOptions, every, MinWindow)
	}
	ss.req.AutoStop = AutoStopFor(every)
	ss.action = "windows"
	if ss.owned == nil || ss.owned.Session != ss.id {
		if err := ss.Start(ctx); err != nil {
			return err
		}
	}
	from := time.Now()
	for n := 0; ; n++ {
		end := from.Add(every)
		// A deadline at or before the window's end makes this the last
		// window, ended by the deadline: a loop of -d 10 in 2 s windows
		// is five windows, never a sixth of a few milliseconds.
		final := false
		if dl, ok := ctx.Deadline(); ok && !end.Before(dl) {
			final = true
		}
		timer := time.NewTimer(time.Until(end))
		if final {
			timer.Stop()
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
		last := ctx.Err() != nil
		// A window's rotation (this one's stop, the next one's start,
		// the read-back) runs to its end once begun, each step within
		// its own bound (a command's attach timeout, the converter's
		// limits): cut off by ctx mid-command, the window would be lost
		// and a start the JVM ran after its caller gave up would leave a
		// profiler running that nobody stops. ctx ending meanwhile makes
		// the next turn the last, whose stop is bounded by stopTimeout.
		cctx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
		if last {
			cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		}
		err := ss.window(cctx, n, from, last, fn)
		cancel()
		if last || err != nil {
			return err
		}
		from = from.Add(every)
		if now := time.Now(); now.After(from.Add(every)) {
			from = now // a window that took longer than a window: no catching up
		}
	}
}

// window ends window n: stop, start the next unless last, hand the
// finished one to fn, remove it.
func (ss *Session) window(ctx context.Context, n int, from time.Time, last bool, fn func(*Window) error) error {
	file, err := ss.stop(ctx)
	until := time.Now()
	if err != nil {
		ss.release(ctx)
		return err
	}
	defer ss.removeInTarget(ctx, file)
	log := ss.LastLog()
	var startErr error
	if !last {
		startErr = ss.begin(ctx, "start", true)
		log = append(log, ss.LastLog()...)
	} else {
		// Released once the window is read: for JFR the stop's file is
		// the recording, which a release removes.
		defer ss.release(ctx)
	}
	w := &Window{N: n, From: from, Until: until, Log: log, Last: last || startErr != nil}
	if ss.pprof {
		if f, err := ss.convertedWindow(ctx, file, from); err != nil {
			w.Err = err
		} else {
			defer f.Close()
			w.Output = f
			if fi, err := f.Stat(); err == nil {
				w.Size = fi.Size()
			}
		}
	} else if h, err := ss.openOutput(ctx, file); err != nil {
		w.Err = err
	} else {
		defer h.Close()
		w.Output, w.Size = h.Reader(ss.req.MaxOutput), h.Stat.Size
	}
	ferr := fn(w)
	if startErr != nil {
		return startErr
	}
	if ferr != nil {
		if !last {
			if sf, err := ss.stop(context.WithoutCancel(ctx)); err == nil {
				ss.removeInTarget(ctx, sf)
			}
			ss.release(ctx)
		}
		return ferr
	}
	return nil
}

// convertedWindow is a pprof session's window: its JFR recording read
// back and converted (readProfile) into an anonymous file, rewound.
func (ss *Session) convertedWindow(ctx context.Context, file string, from time.Time) (*os.File, error) {
	f, err := outfile.Anonymous(os.TempDir())
	if err != nil {
		return nil, err
	}
	if _, err := ss.readProfile(ctx, file, f, from); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
