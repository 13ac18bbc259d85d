package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where the kernel mounts procfs.
const DefaultRoot = "/proc"

// FS is a procfs tree. The zero value reads the live /proc.
type FS struct {
	root string
}

// NewFS returns an FS rooted at root ("" means /proc). Tests pass a fixture
// tree laid out like /proc.
func NewFS(root string) FS { return FS{root: root} }

// Root returns the directory the FS reads from.
func (f FS) Root() string {
	if f.root == "" {
		return DefaultRoot
	}
	return f.root
}

// Proc returns a handle on one process. It does not check that the process
// exists: every read reports that as an error wrapping fs.ErrNotExist.
func (f FS) Proc(pid int) Proc {
	return Proc{PID: pid, dir: filepath.Join(f.Root(), strconv.Itoa(pid))}
}

// PIDs lists the processes present now (the numeric entries of the root).
func (f FS) PIDs() ([]int, error) {
	entries, err := os.ReadDir(f.Root())
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Self returns the calling process's own entry, resolved to its pid so that
// paths built from it stay valid when handed to another process.
func (f FS) Self() Proc { return f.Proc(os.Getpid()) }

// Proc is one /proc/<pid> directory.
type Proc struct {
	PID int
	dir string
}

// Path joins elements below /proc/<pid>.
func (p Proc) Path(elem ...string) string {
	return filepath.Join(append([]string{p.dir}, elem...)...)
}

// Exists reports whether /proc/<pid> is present (the process may be a zombie).
func (p Proc) Exists() bool {
	_, err := os.Stat(p.dir)
	return err == nil
}

// ErrTooLarge is returned when a /proc file exceeds the cap for its kind.
// Shortening it instead would hide exactly the entry an attacker appended.
var ErrTooLarge = errors.New("file exceeds size limit")

// readCapped reads a whole file of at most limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One buffer sized for the common case (status, stat, cmdline are
	// under 4 KiB), grown by doubling; limit+1 bytes tell "too large".
	buf := make([]byte, 0, min(limit+1, 4<<10))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%s: %w (%d bytes)", path, ErrTooLarge, limit)
			}
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("%s: %w (%d bytes)", path, ErrTooLarge, limit)
	}
	return buf, nil
}

// rawFile reads a /proc file through its descriptor alone. An *os.File
// would try to register each one with the runtime's poller and query its
// flags (an epoll_ctl and three fcntl calls per file, a sixth of a CLI
// run's system calls); procfs files are never pollable.
type rawFile int

func openFile(path string) (rawFile, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return rawFile(fd), nil
	}
}

// Read reads like io.Reader: io.EOF at the end, EINTR retried.
func (f rawFile) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(int(f), b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f rawFile) Close() error { return unix.Close(int(f)) }

// IsNotExist reports whether err means the process or file is gone.
func IsNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errESRCH)
}
