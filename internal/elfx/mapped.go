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
// The returned path is the one that worked.
func OpenMapped(m MappedFile) (*os.File, string, error) {
	var errs []error
	candidates := []string{
		filepath.Join(m.ProcDir, "map_files", fmt.Sprintf("%x-%x", m.Start, m.End)),
	}
	if strings.HasPrefix(m.Path, "/") {
		candidates = append(candidates, filepath.Join(m.ProcDir, "root", m.Path))
	}
	for _, p := range candidates {
		f, err := os.Open(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := sameFile(f, m); err != nil {
			f.Close()
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		return f, p, nil
	}
	return nil, "", errors.Join(errs...)
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
	if st.Ino != m.Inode || unix.Major(st.Dev) != m.DevMajor || unix.Minor(st.Dev) != m.DevMinor {
		return fmt.Errorf("%w: have dev %d:%d ino %d, mapping has %d:%d ino %d",
			ErrReplaced, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino, m.DevMajor, m.DevMinor, m.Inode)
	}
	return nil
}
