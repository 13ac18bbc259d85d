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
	flags := unix.O_PATH | unix.O_CLOEXEC
	if opts.NoFollow {
		flags |= unix.O_NOFOLLOW
	}
	// O_PATH first: a device or FIFO at path is never opened.
	pfd, err := unix.Open(path, flags, 0)
	fd := -1
	if err == nil {
		fd, err = reopenRegular(pfd)
		unix.Close(pfd)
	}
	if err != nil {
		if errors.Is(err, ErrNotRegular) {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
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
	data, err := ReadAll(FD(fd), out.Stat.Size, limit)
	switch {
	case errors.Is(err, ErrTooLarge):
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it grew past %d bytes while being read", ErrTooLarge, limit)}
	case err != nil:
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
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

// FD reads an open descriptor directly. An *os.File would try to
// register it with the runtime's poller and query its flags (an epoll_ctl
// and three fcntl calls), for files that are never pollable: regular
// files and procfs.
type FD int

// Read reads like io.Reader: io.EOF at the end, EINTR retried.
func (f FD) Read(b []byte) (int, error) {
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

// Close closes the descriptor.
func (f FD) Close() error { return unix.Close(int(f)) }

// ReadAll reads f to its end into one buffer of size+1 bytes (size: what
// fstat said, or a guess), so that the end is seen in the second read; a
// file longer than that (growing, or procfs, whose size is 0) gets a
// buffer doubled as needed, never past limit+1 bytes. More than limit
// bytes is ErrTooLarge: shortening would hide what was appended last.
func ReadAll(f FD, size, limit int64) ([]byte, error) {
	data := make([]byte, 0, min(max(size, 0), limit)+1)
	for {
		if len(data) == cap(data) {
			grown := make([]byte, len(data), min(2*int64(cap(data)), limit+1))
			copy(grown, data)
			data = grown
		}
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if int64(len(data)) > limit {
			return nil, ErrTooLarge
		}
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
