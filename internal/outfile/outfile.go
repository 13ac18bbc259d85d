package outfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
)

// Owner is a file's owner.
type Owner struct{ UID, GID int }

// Expand expands asprof's placeholders in an output file name:
// %p the pid, %t the time (YYYYMMDD-hhmmss), %n{MAX} a sequence number
// modulo MAX (or n itself with a bare %n), %% a percent sign.
func Expand(name string, pid int, t time.Time, n int) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' || i+1 == len(name) {
			b.WriteByte(name[i])
			continue
		}
		i++
		switch name[i] {
		case 'p':
			fmt.Fprint(&b, pid)
		case 't':
			b.WriteString(t.Format("20060102-150405"))
		case '%':
			b.WriteByte('%')
		case 'n':
			seq := n
			if i+1 < len(name) && name[i+1] == '{' {
				if end := strings.IndexByte(name[i+1:], '}'); end > 0 {
					if max, err := strconv.Atoi(name[i+2 : i+1+end]); err == nil && max > 0 {
						seq = n % max
					}
					i += 1 + end
				}
			}
			fmt.Fprint(&b, seq)
		default:
			b.WriteByte('%')
			b.WriteByte(name[i])
		}
	}
	return b.String()
}

// File is the user's output, prepared before the attach: a
// temporary file beside the destination, renamed over it once complete
// (a full disk or an interrupted run leaves what was there before).
type File struct {
	dst string
	tmp *os.File
}

// Prepare refuses a destination that is not absent or a regular file,
// and proves the directory writable by creating the temporary file (a
// random name, O_EXCL) — before anything touches the JVM. Commit or
// Discard it. mode 0 is 0644; owner nil is the caller.
func Prepare(dst string, mode os.FileMode, owner *Owner) (*File, error) {
	if mode == 0 {
		mode = 0o644
	}
	if err := checkDestination(dst); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		// Said of the directory: the temporary file's name is ours, not
		// the user's to recognise.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot write %s: directory %s: %w", dst, filepath.Dir(dst), err)
	}
	err = tmp.Chmod(mode)
	if err == nil && owner != nil {
		err = tmp.Chown(owner.UID, owner.GID)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("prepare %s: %w", dst, err)
	}
	return &File{dst: dst, tmp: tmp}, nil
}

// checkDestination allows an absent path or a regular file, nothing that
// a rename would replace with surprising effect (a symlink to
// /dev/stdout, a device, a FIFO, a directory).
func checkDestination(dst string) error {
	var st unix.Stat_t
	err := unix.Lstat(dst, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", dst, err)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is %s; refusing to replace it (give a regular file, or - for standard output)", dst, safefile.TypeName(st.Mode))
	}
	return nil
}

// commit syncs what was written into the temporary file and renames
// it into place.
func (o *File) commit() error {
	err := o.tmp.Sync()
	if err == nil {
		err = checkDestination(o.dst)
	}
	if cerr := o.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.tmp.Name(), o.dst)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", o.dst, err)
	}
	o.tmp = nil
	return nil
}

// Name is the destination path.
func (o *File) Name() string { return o.dst }

// Write writes into the temporary file (the destination is untouched
// until Commit).
func (o *File) Write(p []byte) (int, error) { return o.tmp.Write(p) }

// Commit renames what was written into place.
func (o *File) Commit() error { return o.commit() }

// Discard removes the temporary file unless it was committed.
func (o *File) Discard() { o.discard() }

// discard removes the temporary file unless it was committed.
func (o *File) discard() {
	if o == nil || o.tmp == nil {
		return
	}
	o.tmp.Close()
	os.Remove(o.tmp.Name())
}

// Anonymous is a read-write file with no name (O_TMPFILE) in dir, else
// in the system's temporary directory: what a target sent back waits
// there (for a converter, or until it may be printed) where no one can
// open or replace it, and it is gone when closed.
func Anonymous(dir string) (*os.File, error) {
	var errs []error
	for _, d := range []string{dir, os.TempDir()} {
		fd, err := unix.Open(d, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(d, "(anonymous)")), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", d, err))
	}
	return nil, fmt.Errorf("no anonymous temporary file: %w", errors.Join(errs...))
}
