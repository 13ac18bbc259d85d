package hotspot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
)

// JVM is one JVM process, pinned by its start time so that a recycled
// pid is never mistaken for it.
type JVM struct {
	PID       int    // as seen from here
	NSPid     int    // as the JVM sees itself (names its attach files)
	StartTime uint64 // clock ticks after boot, from /proc/<pid>/stat
	UID, GID  uint32 // the JVM's effective ids
	// Feature is the JDK feature release if known (0 otherwise). JDK 10
	// and older accept only a peer with exactly the JVM's uid and gid;
	// later JDKs also accept root.
	Feature int
	// TmpDir is the JVM's temporary directory inside its root: "/tmp"
	// unless it runs with -XX:AltTempDir.
	TmpDir string

	procDir string
	fsys    proc.FS

	mu sync.Mutex
	// dir is TmpDir resolved in the target's root, opened once and kept
	// (closed by Close, or when the JVM is collected).
	dir *safefile.Dir
}

// tmpDir returns the target's temporary directory, resolved inside its
// root under ctx the first time.
func (t *JVM) tmpDir(ctx context.Context) (*safefile.Dir, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dir != nil {
		return t.dir, nil
	}
	d, err := safefile.OpenDirIn(ctx, t.rootDir(), t.TmpDir)
	if err != nil {
		return nil, err
	}
	t.dir = d
	runtime.AddCleanup(t, func(d *safefile.Dir) { d.Close() }, d)
	return d, nil
}

// Close releases what the JVM holds open (its temporary directory).
// A JVM may be used again after Close; it reopens what it needs.
func (t *JVM) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dir != nil {
		t.dir.Close()
		t.dir = nil
	}
}

// NewJVM reads what the protocol needs about pid from /proc.
func NewJVM(pid int) (*JVM, error) { return NewJVMAt("", pid) }

// NewJVMAt is NewJVM on the procfs mounted at procRoot ("" is
// /proc): tests point it at fixture trees, and every later read of the
// target (status, maps, the socket under its root) goes there too.
func NewJVMAt(procRoot string, pid int) (*JVM, error) {
	fsys := proc.NewFS(procRoot)
	p := fsys.Proc(pid)
	st, err := p.Status()
	if err != nil {
		if proc.IsNotExist(err) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrTargetExited)
		}
		return nil, err
	}
	stat, err := p.Stat()
	if err != nil {
		if proc.IsNotExist(err) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrTargetExited)
		}
		return nil, err
	}
	return &JVM{
		PID: pid, NSPid: st.NSPid(), StartTime: stat.StartTime,
		UID: st.UID.Effective, GID: st.GID.Effective,
		TmpDir: "/tmp", procDir: p.Path(), fsys: fsys,
	}, nil
}

// Identity is what pins a JVM process, as an inspection already read it:
// JVMOf takes it by field name, so that two pids or two ids cannot be
// swapped unnoticed.
type Identity struct {
	PID       int    // as seen from here
	NSPid     int    // as the JVM sees itself
	StartTime uint64 // clock ticks after boot, from /proc/<pid>/stat
	UID, GID  uint32 // the JVM's effective ids
	// ProcRoot is the procfs PID is read on ("" is /proc), as NewJVMAt's
	// procRoot: every later read of the target goes there.
	ProcRoot string
}

// JVMOf builds a JVM from what an inspection already read, without
// reading /proc again.
func JVMOf(id Identity) *JVM {
	fsys := proc.NewFS(id.ProcRoot)
	return &JVM{
		PID: id.PID, NSPid: id.NSPid, StartTime: id.StartTime,
		UID: id.UID, GID: id.GID,
		TmpDir: "/tmp", procDir: fsys.Proc(id.PID).Path(), fsys: fsys,
	}
}

// proc is the target's /proc directory, on the procfs it was read from.
func (t *JVM) proc() proc.Proc { return t.fsys.Proc(t.PID) }

// rootDir is the target's root directory as seen from here: paths inside
// it are resolved with internal/safefile, never by joining.
func (t *JVM) rootDir() string { return filepath.Join(t.procDir, "root") }

// socketName is the attach socket's name in TmpDir.
func (t *JVM) socketName() string { return fmt.Sprintf(".java_pid%d", t.NSPid) }

// SocketPath names the attach socket as seen from here, for messages. It
// is not how the socket is reached: that is resolved inside the target's
// root (TmpDir may hold ".." or lead through a symlink).
func (t *JVM) SocketPath() string {
	return filepath.Join(t.rootDir(), filepath.Clean("/"+t.TmpDir), t.socketName())
}

// triggerName is the file the JVM looks for on SIGQUIT: in its working
// directory first, then in /tmp (hard-coded, not java.io.tmpdir).
func (t *JVM) triggerName() string { return fmt.Sprintf(".attach_pid%d", t.NSPid) }

// Alive reports whether the pinned process still exists (not a zombie
// and not a recycled pid).
func (t *JVM) Alive() bool { return t.alive() }

func (t *JVM) alive() bool {
	st, err := t.proc().Stat()
	if err != nil || st.StartTime != t.StartTime || st.State == 'Z' || st.State == 'X' {
		return false
	}
	// Killed and not yet a zombie, a process has already given up its
	// root directory (its files are being released): it is exiting.
	_, err = os.Readlink(t.rootDir())
	return !errors.Is(err, fs.ErrNotExist)
}

// needsExactCredentials reports whether the JVM rejects root and accepts
// only its own uid and gid (JDK 10 and older; unknown counts as old, the
// safe assumption).
func (t *JVM) needsExactCredentials() bool {
	return t.Feature == 0 || t.Feature <= 10
}
