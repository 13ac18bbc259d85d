package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
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

// readCapped reads a whole file of at most limit bytes, into one buffer
// sized for the common case (status, stat and cmdline are under 4 KiB).
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := safefile.ReadAll(f, 4<<10-1, limit)
	switch {
	case errors.Is(err, safefile.ErrTooLarge):
		return nil, fmt.Errorf("%s: %w (%d bytes)", path, ErrTooLarge, limit)
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// openFile opens a /proc file for reading through its descriptor alone
// (safefile.FD): procfs files are never pollable.
func openFile(path string) (safefile.FD, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return safefile.FD(fd), nil
	}
}

// IsNotExist reports whether err means the process or file is gone.
func IsNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errESRCH)
}
