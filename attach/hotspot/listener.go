package hotspot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
)

// sigquitBit is SIGQUIT's bit in the /proc status masks.
const sigquitBit = 1 << (3 - 1)

// ErrUnsafeSignal is returned instead of sending SIGQUIT to a process that
// would not survive it or would only print a thread dump.
var ErrUnsafeSignal = errors.New("refusing to send SIGQUIT")

// EnsureListener makes sure the target's attach listener runs: if its
// socket exists it returns at once; otherwise it creates the trigger file,
// sends SIGQUIT through a pidfd and waits for the socket under ctx.
func EnsureListener(ctx context.Context, t *JVM) error {
	dir, err := t.tmpDir(ctx)
	if err != nil {
		return fmt.Errorf("%w: the JVM's temporary directory: %w", ErrNoListener, err)
	}
	if socketIn(dir, t) {
		return nil
	}
	pidfd, err := openPinned(t)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	removeTrigger, err := createTrigger(ctx, t)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoListener, err)
	}
	defer removeTrigger()
	if err := checkSignalSafe(t); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGQUIT, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", t.PID, ErrTargetExited)
		}
		return fmt.Errorf("pidfd_send_signal: %w", err)
	}
	return waitForSocket(ctx, t, dir, pidfd)
}

// socketIn reports whether the socket's name exists in dir (the JVM's
// temporary directory, resolved in its root).
func socketIn(dir *safefile.Dir, t *JVM) bool {
	_, err := dir.Lstat(t.socketName())
	return err == nil
}

// openPinned opens a pidfd and then checks that it names the inspected
// process: a pid recycled between inspection and signal has another start
// time, and the pidfd keeps naming the process it was opened for.
func openPinned(t *JVM) (int, error) {
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
func checkSignalSafe(t *JVM) error {
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
func isHotSpot(t *JVM) bool {
	kind, _, err := t.proc().JVMKind()
	return err == nil && kind == proc.JVMHotSpot
}

// createTrigger creates .attach_pid<nspid> where the JVM looks for it,
// owned by the JVM's user (JDK 8/9 check st_uid == geteuid()): in its
// working directory, else in /tmp resolved inside its root. The file is
// created relative to the directory's descriptor, never through a
// symlink, and the returned function removes it from that same directory.
func createTrigger(ctx context.Context, t *JVM) (remove func(), err error) {
	var errs []error
	name := t.triggerName()
	for _, where := range []string{"cwd", "/tmp"} {
		var dir *safefile.Dir
		if where == "cwd" {
			// The working directory is the process's own (the magic link
			// is followed on purpose: it names the JVM's cwd).
			dir, err = safefile.OpenDirIn(ctx, filepath.Join(t.procDir, "cwd"), ".")
		} else {
			dir, err = safefile.OpenDirIn(ctx, t.rootDir(), where)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := filepath.Join(dir.Root, dir.Path, name)
		fd, err := unix.Openat(dir.FD(), name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			dir.Close()
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		err = unix.Fchown(fd, int(t.UID), int(t.GID))
		unix.Close(fd)
		if err != nil && os.Geteuid() == 0 {
			dir.Remove(name)
			dir.Close()
			errs = append(errs, fmt.Errorf("chown %s: %w", p, err))
			continue
		}
		return func() { dir.Remove(name); dir.Close() }, nil
	}
	return nil, errors.Join(errs...)
}

// Socket polling. An idle JVM binds its socket 2-4 ms after SIGQUIT, a
// busy one can take hundreds of milliseconds. The path is checked every
// pollFine for the first pollFineFor, then at intervals growing by half up
// to pollCoarse: a socket is seen within half a millisecond when it comes
// quickly, and a slow JVM costs a few dozen stat calls. (inotify on the
// directory was used before: closing an inotify instance waits for an
// SRCU grace period in the kernel, 4-24 ms measured here, paid on every
// cold attach, and again at exit if the fd is left open.)
const (
	pollFine    = 500 * time.Microsecond
	pollFineFor = 50 * time.Millisecond
	pollCoarse  = 20 * time.Millisecond
)

// waitForSocket waits until the socket exists, the target exits (its pidfd
// becomes readable) or ctx ends.
func waitForSocket(ctx context.Context, t *JVM, dir *safefile.Dir, pidfd int) error {
	start := time.Now()
	delay := pollFine
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if socketIn(dir, t) {
			return nil
		}
		if time.Since(start) >= pollFineFor {
			delay = min(delay*3/2, pollCoarse)
		}
		d, err := pollInterval(ctx, delay)
		if err != nil {
			return fmt.Errorf("%w: no attach socket at %s (%v)", ErrTimeout, t.SocketPath(), err)
		}
		ts := unix.NsecToTimespec(d.Nanoseconds())
		n, err := unix.Ppoll(fds, &ts, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 && fds[0].Revents&unix.POLLIN != 0 {
			return fmt.Errorf("pid %d: %w while starting its attach listener", t.PID, ErrTargetExited)
		}
	}
}

// pollInterval is the time to wait before the next check: max, or what is
// left of ctx when that is less; ctx's error once it is over.
func pollInterval(ctx context.Context, max time.Duration) (time.Duration, error) {
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
	return d, nil
}
