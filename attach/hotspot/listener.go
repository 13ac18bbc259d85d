package hotspot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
)

// useInotify is false only in tests of the polling fallback.
var useInotify = true

// sigquitBit is SIGQUIT's bit in the /proc status masks.
const sigquitBit = 1 << (3 - 1)

// ErrUnsafeSignal is returned instead of sending SIGQUIT to a process that
// would not survive it or would only print a thread dump.
var ErrUnsafeSignal = errors.New("refusing to send SIGQUIT")

// EnsureListener makes sure the target's attach listener runs: if its
// socket exists it returns at once; otherwise it creates the trigger file,
// sends SIGQUIT through a pidfd and waits for the socket under ctx.
func EnsureListener(ctx context.Context, t *Target) error {
	if socketExists(t) {
		return nil
	}
	pidfd, err := openPinned(t)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	// Watch before signalling, so the socket cannot appear unseen.
	w, werr := newSocketWatcher(t)
	if !useInotify && werr == nil {
		w.close()
		werr = errors.New("inotify disabled")
	}
	if werr == nil {
		defer w.close()
	}
	if socketExists(t) {
		return nil
	}
	trigger, err := createTrigger(t)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoListener, err)
	}
	defer os.Remove(trigger)
	if err := checkSignalSafe(t); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGQUIT, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", t.PID, ErrTargetExited)
		}
		return fmt.Errorf("pidfd_send_signal: %w", err)
	}
	if werr != nil {
		return pollSocket(ctx, t, pidfd)
	}
	return w.wait(ctx, t, pidfd)
}

func socketExists(t *Target) bool {
	var st unix.Stat_t
	return unix.Lstat(t.SocketPath(), &st) == nil
}

// openPinned opens a pidfd and then checks that it names the inspected
// process: a pid recycled between inspection and signal has another start
// time, and the pidfd keeps naming the process it was opened for.
func openPinned(t *Target) (int, error) {
	fd, err := unix.PidfdOpen(t.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, fmt.Errorf("pid %d: %w", t.PID, ErrTargetExited)
		}
		return -1, fmt.Errorf("pidfd_open(%d): %w", t.PID, err)
	}
	if !t.alive() {
		unix.Close(fd)
		return -1, fmt.Errorf("pid %d: %w (or its pid was reused)", t.PID, ErrTargetExited)
	}
	return fd, nil
}

// checkSignalSafe re-reads the target's status right before the signal:
// SIGQUIT must be caught and not ignored (docs/safety.md, invariant 1; the
// JDK's own client checks the same since JDK-8342449).
func checkSignalSafe(t *Target) error {
	st, err := t.proc().Status()
	if err != nil {
		return fmt.Errorf("pid %d: %w", t.PID, ErrTargetExited)
	}
	if st.SigCgt&sigquitBit == 0 || st.SigIgn&sigquitBit != 0 {
		return fmt.Errorf("%w: pid %d does not handle SIGQUIT (SigCgt=%016x SigIgn=%016x); it would be killed", ErrUnsafeSignal, t.PID, uint64(st.SigCgt), uint64(st.SigIgn))
	}
	if !isHotSpot(t) {
		return fmt.Errorf("%w: pid %d maps no libjvm.so (or is OpenJ9); SIGQUIT would kill it", ErrUnsafeSignal, t.PID)
	}
	return nil
}

// isHotSpot reports whether the target is a HotSpot JVM by its maps
// (proc.JVMKind: libjvm.so mapped, and not OpenJ9's libj9vm).
func isHotSpot(t *Target) bool {
	kind, _, err := t.proc().JVMKind()
	return err == nil && kind == proc.JVMHotSpot
}

// createTrigger creates .attach_pid<nspid> where the JVM looks for it,
// owned by the JVM's user (JDK 8/9 check st_uid == geteuid()).
func createTrigger(t *Target) (string, error) {
	var errs []error
	for _, p := range t.triggerPaths() {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		err = unix.Fchown(fd, int(t.UID), int(t.GID))
		unix.Close(fd)
		if err != nil && os.Geteuid() == 0 {
			os.Remove(p)
			errs = append(errs, fmt.Errorf("chown %s: %w", p, err))
			continue
		}
		return p, nil
	}
	return "", errors.Join(errs...)
}

// socketWatcher waits for the socket with inotify on its directory (the
// JVM binds <name>.tmp and renames it: IN_MOVED_TO; IN_CREATE covers a
// direct bind).
type socketWatcher struct {
	fd int
}

func newSocketWatcher(t *Target) (*socketWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	dir := t.root(t.TmpDir)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify %s: %w", dir, err)
	}
	return &socketWatcher{fd: fd}, nil
}

func (w *socketWatcher) close() { unix.Close(w.fd) }

// wait blocks until the socket exists, the target exits or ctx ends.
func (w *socketWatcher) wait(ctx context.Context, t *Target, pidfd int) error {
	buf := make([]byte, 4096)
	for {
		if socketExists(t) {
			return nil
		}
		timeout, err := pollTimeout(ctx, 50*time.Millisecond)
		if err != nil {
			return fmt.Errorf("%w: no attach socket at %s (%v)", ErrTimeout, t.SocketPath(), err)
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(pidfd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if fds[1].Revents&unix.POLLIN != 0 {
			return fmt.Errorf("pid %d: %w while starting its attach listener", t.PID, ErrTargetExited)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			_, _ = unix.Read(w.fd, buf) // drain; the loop re-checks the path
		}
	}
}

// pollSocket is the fallback where inotify is unavailable: short sleeps
// growing to 20 ms, never longer, so an idle JVM (socket ~1 ms after
// SIGQUIT) is seen within a few milliseconds.
func pollSocket(ctx context.Context, t *Target, pidfd int) error {
	delay := time.Millisecond
	for {
		if socketExists(t) {
			return nil
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		timeout, err := pollTimeout(ctx, delay)
		if err != nil {
			return fmt.Errorf("%w: no attach socket at %s (%v)", ErrTimeout, t.SocketPath(), err)
		}
		if n, _ := unix.Poll(fds, timeout); n > 0 {
			return fmt.Errorf("pid %d: %w while starting its attach listener", t.PID, ErrTargetExited)
		}
		delay = min(delay*2, 20*time.Millisecond)
	}
}

// pollTimeout converts the time left in ctx into a poll(2) timeout capped
// at max, or returns ctx's error when it is over.
func pollTimeout(ctx context.Context, max time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d := max
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			d = left
		}
	}
	if d <= 0 {
		return 0, context.DeadlineExceeded
	}
	ms := int(d / time.Millisecond)
	if ms == 0 {
		ms = 1
	}
	return ms, nil
}
