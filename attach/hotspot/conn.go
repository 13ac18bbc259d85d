package hotspot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
)

// openSocket opens the attach socket itself (an O_PATH descriptor of
// its inode) inside the target's root, and trusts it only if
// proc.CheckAttachSocket does (docs/safety.md, invariant 3). The
// directory is resolved with no symlink or ".." leaving the root: a
// -XX:AltTempDir of "../../run", or a /tmp the container's user made a
// symlink, cannot lead to a socket on the host. Connecting through the
// returned descriptor reaches the inode that was checked, not whatever
// the name points to by then.
func openSocket(ctx context.Context, t *JVM) (*os.File, error) {
	dir, err := t.tmpDir(ctx)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNoListener, t.SocketPath())
		}
		return nil, err
	}
	fd, err := unix.Openat(dir.FD(), t.socketName(), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNoListener, t.SocketPath())
		}
		return nil, fmt.Errorf("%s: %w", t.SocketPath(), err)
	}
	f := os.NewFile(uintptr(fd), t.SocketPath())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if err := proc.CheckAttachSocket(st.Mode&unix.S_IFMT == unix.S_IFSOCK, st.Uid, st.Mode, t.UID); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", t.SocketPath(), err)
	}
	return f, nil
}

// dial connects to the attach socket under ctx and verifies the peer.
// The listener's backlog is five connections: a busy JVM answers EAGAIN,
// which is retried with a growing pause inside the deadline, as is
// ECONNREFUSED while the process is alive (a listener being restarted).
// A JVM that is gone is ErrTargetExited, whatever the socket said.
//
// The connection is a non-blocking socket in an *os.File: the runtime's
// poller gives it deadlines, and the net package (its resolver and
// initialisation, a megabyte of binary) is not needed for one unix socket.
func dial(ctx context.Context, t *JVM) (*os.File, error) {
	pause := time.Millisecond
	for {
		conn, err := dialOnce(ctx, t)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, ErrNoListener) {
			return nil, err
		}
		if !t.alive() {
			return nil, fmt.Errorf("connect %s: pid %d: %w", t.SocketPath(), t.PID, ErrTargetExited)
		}
		if errors.Is(err, ErrNoListener) {
			return nil, err
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("%w: connect %s: the listener stayed busy (%v)", ErrTimeout, t.SocketPath(), err)
		case <-timer.C:
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
}

func dialOnce(ctx context.Context, t *JVM) (*os.File, error) {
	sock, err := openSocket(ctx, t)
	if err != nil {
		return nil, err
	}
	defer sock.Close()
	// /proc/self/fd/<n> of the O_PATH descriptor: always short enough for
	// sun_path, and it leads to the checked inode.
	path := fmt.Sprintf("/proc/self/fd/%d", sock.Fd())
	var conn *os.File
	if os.Geteuid() == 0 && (t.needsExactCredentials() || rootUnmappedIn(t.PID)) && (t.UID != 0 || t.GID != 0) {
		conn, err = dialAs(path, t.UID, t.GID)
	} else {
		conn, err = dialUnix(path)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: connect %s: %v", ErrTimeout, t.SocketPath(), ctx.Err())
		}
		return nil, fmt.Errorf("connect %s: %w", t.SocketPath(), err)
	}
	if err := checkPeer(conn, t); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// dialUnix connects a non-blocking unix socket to path. Connecting to a
// listening unix socket completes at once or fails with EAGAIN when its
// backlog is full (dial retries that); it never waits.
func dialUnix(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// checkPeer verifies with SO_PEERCRED that the listening end is the target
// process itself (pid as seen from our namespace) and runs as its user.
func checkPeer(conn *os.File, t *JVM) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return nil // the kernel gives no peer credentials here; the file checks stand
	}
	// Across pid namespaces the kernel translates the peer's pid into ours;
	// 0 means it has no pid here, which the file checks must then cover.
	if cred.Pid != 0 && int(cred.Pid) != t.PID {
		return fmt.Errorf("%w: the socket is served by pid %d, not the JVM (pid %d)", ErrUntrustedSocket, cred.Pid, t.PID)
	}
	if cred.Uid != t.UID && cred.Uid != 0 && cred.Uid != overflowUID {
		return fmt.Errorf("%w: the socket's server runs as uid %d, the JVM as uid %d", ErrUntrustedSocket, cred.Uid, t.UID)
	}
	return nil
}

// rootUnmappedIn reports whether pid runs in a user namespace where our
// root is nobody: a pod with hostUsers: false, whose root is a host uid
// of the kubelet's range (uid_map "0 2856452096 65536"). HotSpot admits
// its own uid or root as it sees them, and sees our root as the overflow
// uid: the connection must come from the JVM's own (host) uid, which is
// root in there. An unreadable map counts as mapped (the caller's
// credentials are tried as they are).
func rootUnmappedIn(pid int) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	// The kernel allows 340 extents of three 10-digit numbers a line.
	buf := make([]byte, 16<<10)
	n, _ := io.ReadFull(f, buf)
	return !mapsRoot(string(buf[:n]))
}

// mapsRoot reports whether a uid_map (inside, outside, count per line, as
// the reader's namespace sees it) maps the reader's uid 0 to uid 0.
func mapsRoot(uidMap string) bool {
	for _, line := range strings.Split(uidMap, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		inside, err0 := strconv.ParseUint(f[0], 10, 32)
		outside, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 64)
		// Our root is root in there only when it maps to uid 0: mapped to
		// another uid it is that uid to HotSpot.
		if err0 == nil && err1 == nil && err2 == nil && outside == 0 && inside == 0 && count > 0 {
			return true
		}
	}
	return false
}

// overflowUID is what a uid unmapped in our user namespace reads as.
const overflowUID = 65534

// dialAs connects with the JVM's own uid/gid, for JDKs that reject root.
// The switch is per thread: raw setresgid/setresuid on a locked OS thread
// (Go's syscall.Setuid would change every thread of the process), undone
// before the thread is released. If undoing fails the goroutine exits with
// the thread still locked, and the runtime discards that thread.
func dialAs(path string, uid, gid uint32) (*os.File, error) {
	type result struct {
		conn *os.File
		err  error
	}
	ch := make(chan result, 1)
	// Any credential change makes the process non-dumpable (a flag of
	// the whole process, not the thread): restored once the switch is
	// undone, so that the switch leaves nothing behind.
	dumpable, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	defer func() {
		if now, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); now != dumpable && dumpable == 1 {
			unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
		}
	}()
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		if err := setThreadCreds(int(uid), int(gid)); err != nil {
			restored = restoreThreadCreds() == nil
			ch <- result{err: fmt.Errorf("switch thread to uid %d gid %d: %w", uid, gid, err)}
			return
		}
		// connect(2) happens on this thread: SO_PEERCRED records the
		// credentials of the thread that connects.
		conn, err := dialUnix(path)
		restored = restoreThreadCreds() == nil
		ch <- result{conn: conn, err: err}
	}()
	r := <-ch
	return r.conn, r.err
}

func setThreadCreds(uid, gid int) error {
	// Group first: after the uid changes we may no longer change groups.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}

// restoreThreadCreds returns the thread to euid/egid 0: the saved ids are
// still 0, which is what makes the switch reversible.
func restoreThreadCreds() error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}
