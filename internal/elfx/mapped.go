package elfx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MappedFile names a file as a process maps it.
type MappedFile struct {
	ProcDir    string // /proc/<pid>
	Start, End uint64
	Path       string // as printed in maps, " (deleted)" removed
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
}

// ErrReplaced is returned when the file found at a mapping's path is not
// the file that is mapped (it was replaced or deleted since).
var ErrReplaced = errors.New("file at path is not the mapped file")

// OpenMapped opens the very file behind a mapping. It tries, in order:
//  1. /proc/<pid>/map_files/<start>-<end>, which is the mapped inode itself
//     even when deleted (needs CAP_SYS_ADMIN in the initial user namespace,
//     or in recent kernels ptrace access);
//  2. /proc/<pid>/root/<path>, which resolves the path in the target's own
//     mount namespace.
//
// Either way the opened file's device and inode must match the mapping,
// so a path swapped underneath us is never mistaken for the mapped file.
// Each candidate is first opened O_PATH — which neither blocks (a FIFO)
// nor touches a device (a target can make the path a link to the host's
// /dev/watchdog) — and opened for reading only once it is the mapped
// regular file. The returned path is the one that worked.
func OpenMapped(m MappedFile) (*os.File, string, error) {
	var errs []error
	candidates := []string{
		filepath.Join(m.ProcDir, "map_files", fmt.Sprintf("%x-%x", m.Start, m.End)),
	}
	if strings.HasPrefix(m.Path, "/") {
		candidates = append(candidates, filepath.Join(m.ProcDir, "root", m.Path))
	}
	for _, p := range candidates {
		f, err := openIfMapped(p, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		return f, p, nil
	}
	return nil, "", errors.Join(errs...)
}

// openIfMapped opens p for reading if it is the regular file m maps.
func openIfMapped(p string, m MappedFile) (*os.File, error) {
	pfd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: not a regular file", ErrReplaced)
	}
	if err := sameInode(&st, m); err != nil {
		return nil, err
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	if err := sameFile(f, m); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func sameFile(f *os.File, m MappedFile) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no stat data")
	}
	return sameInode(&unix.Stat_t{Dev: st.Dev, Ino: st.Ino}, m)
}

func sameInode(st *unix.Stat_t, m MappedFile) error {
	if st.Ino != m.Inode || unix.Major(st.Dev) != m.DevMajor || unix.Minor(st.Dev) != m.DevMinor {
		return fmt.Errorf("%w: have dev %d:%d ino %d, mapping has %d:%d ino %d",
			ErrReplaced, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino, m.DevMajor, m.DevMinor, m.Inode)
	}
	return nil
}
