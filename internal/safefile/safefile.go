package safefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotRegular: the path names a directory, FIFO, socket or device.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file is larger than the caller's cap.
	ErrTooLarge = errors.New("file too large")
)

// Options tune Read. The zero value follows symlinks.
type Options struct {
	// NoFollow refuses a symlink at the last path component (O_NOFOLLOW),
	// for files inside a directory someone else can write.
	NoFollow bool
}

// File is what Read returns: the bytes and what they were read from.
type File struct {
	// Path is the file as it was opened, after symlinks (read back from
	// the open descriptor, so it names what was read, not what the path
	// names now).
	Path string
	Data []byte
	Stat unix.Stat_t
}

// Read reads the regular file at path, at most limit bytes, under ctx.
// A file that is not regular fails with ErrNotRegular before anything is
// read, one larger than limit with ErrTooLarge (also when it grows while
// being read). When ctx ends first, Read returns ctx's error at once; the
// abandoned open or read finishes in the background and its descriptor is
// closed.
func Read(ctx context.Context, path string, limit int64, opts Options) (*File, error) {
	type result struct {
		f   *File
		err error
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ch := make(chan result, 1)
	go func() {
		f, err := read(path, limit, opts)
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", path, ctx.Err())
	}
}

func read(path string, limit int64, opts Options) (*File, error) {
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	if opts.NoFollow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) && opts.NoFollow {
			return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (a symlink)", ErrNotRegular)}
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// The descriptor is used directly: an *os.File would register it with
	// the runtime poller and query its flags, for a regular file.
	defer unix.Close(fd)
	out := &File{Path: path}
	if err := unix.Fstat(fd, &out.Stat); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if out.Stat.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, TypeName(out.Stat.Mode))}
	}
	if out.Stat.Size > limit {
		return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, out.Stat.Size, limit)}
	}
	if real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && len(real) > 0 && real[0] == '/' {
		out.Path = real
	}
	// The regular file was opened non-blocking; clear the flag so that a
	// network file system's short reads are not mistaken for EAGAIN.
	_ = unix.SetNonblock(fd, false)
	// Read into one buffer of the size fstat gave plus one byte, so that
	// the end is seen in the second read; a file growing while it is read
	// gets a larger buffer, never past limit+1 bytes.
	data := make([]byte, 0, min(out.Stat.Size, limit)+1)
	for {
		if len(data) == cap(data) {
			if int64(len(data)) > limit {
				return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it grew past %d bytes while being read", ErrTooLarge, limit)}
			}
			grown := make([]byte, len(data), min(2*int64(cap(data)), limit+1))
			copy(grown, data)
			data = grown
		}
		n, err := readFull(fd, data[len(data):cap(data)])
		data = data[:len(data)+n]
		if int64(len(data)) > limit {
			return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it grew past %d bytes while being read", ErrTooLarge, limit)}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
	}
	out.Data = data
	return out, nil
}

// TypeName names a file type for error messages.
func TypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symlink"
	}
	return fmt.Sprintf("file type %o", mode&unix.S_IFMT)
}

// OpenDir opens a directory for listing. O_DIRECTORY makes a FIFO, a
// device or a socket at path fail at once (ENOTDIR) instead of blocking in
// open(2) as a plain open of a FIFO would: directories named by other
// users (/tmp/hsperfdata_*, a target's working directory) are hostile.
func OpenDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// readFull reads like io.Reader from a blocking descriptor: io.EOF at the
// end, EINTR retried.
func readFull(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
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
