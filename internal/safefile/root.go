package safefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Files inside a target's root (docs/safety.md, invariant 11).
//
// A path under /proc/<pid>/root is not inside the target: an absolute
// symlink there (tmp -> /etc) is resolved against the caller's root, and
// ".." climbs out of it. Every function here resolves a name as if root
// were "/": with openat2(2) and RESOLVE_IN_ROOT where the kernel has it
// (5.6+), else one component at a time with O_NOFOLLOW, which refuses
// every symlink on the way rather than guess where it points. Magic
// links (/proc/self/...) are never followed inside root.

// ErrEscapes: a path that only a symlink could have resolved, on a
// kernel without openat2 (the fallback refuses symlinks).
var ErrEscapes = errors.New("a symlink on the way (refused without openat2)")

// forceWalk makes openIn take the fallback, for tests.
var forceWalk = false

// cleanIn is name as a path relative to root: ".." at the root stays
// there, as the kernel's RESOLVE_IN_ROOT does.
func cleanIn(name string) string {
	rel := strings.TrimPrefix(filepath.Clean("/"+name), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// openIn opens name inside the directory rootFD with flags (O_CLOEXEC is
// added). The last component is followed only if flags lacks O_NOFOLLOW.
func openIn(rootFD int, name string, flags int, mode uint32) (int, error) {
	rel := cleanIn(name)
	if !forceWalk {
		how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		for {
			fd, err := unix.Openat2(rootFD, rel, &how)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue // EAGAIN: a concurrent rename; the kernel asks to retry
			}
			if err != unix.ENOSYS {
				return fd, err
			}
			break
		}
	}
	return walkIn(rootFD, rel, flags, mode)
}

// walkIn is openIn without openat2: each directory is opened with
// O_NOFOLLOW|O_DIRECTORY, so a symlink anywhere fails (ELOOP or ENOTDIR)
// instead of being followed out of root. rel is clean: no "..".
func walkIn(rootFD int, rel string, flags int, mode uint32) (int, error) {
	dir, err := unix.Dup(rootFD)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		last := i == len(parts)-1
		f := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			// Not even the last component is followed here: where
			// it points cannot be resolved inside root.
			f = flags | unix.O_NOFOLLOW | unix.O_CLOEXEC
		}
		fd, err := unix.Openat(dir, part, f, mode)
		unix.Close(dir)
		if err != nil {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				var st unix.Stat_t
				if unix.Fstatat(rootFD, strings.Join(parts[:i+1], "/"), &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return -1, ErrEscapes
				}
			}
			return -1, err
		}
		dir = fd
	}
	return dir, nil
}

// rootFD opens root itself (following it: /proc/<pid>/root is the
// magic link that names the target's root; "" is "/").
func rootFD(root string) (int, error) {
	if root == "" {
		root = "/"
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	return fd, nil
}

// underCtx runs f, returning at once with ctx's error if ctx ends first;
// an abandoned f finishes in the background and cleanup gets its result.
func underCtx[T any](ctx context.Context, what string, f func() (T, error), cleanup func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil && cleanup != nil {
				cleanup(r.v)
			}
		}()
		return zero, fmt.Errorf("%s: %w", what, ctx.Err())
	}
}

// Dir is a directory inside a target's root, held open: names in it are
// created, checked and removed relative to it, so nothing on the way can
// be swapped for a symlink in between.
type Dir struct {
	fd int
	// Path is the directory as it was named inside root (clean).
	Path string
	// Root is the root it was resolved in.
	Root string
}

// OpenDirIn opens the directory name inside root (e.g. /proc/<pid>/root)
// under ctx. No symlink or ".." takes it out of root; a symlink as the
// last component is followed only inside root.
func OpenDirIn(ctx context.Context, root, name string) (*Dir, error) {
	what := filepath.Join(root, cleanIn(name))
	return underCtx(ctx, what, func() (*Dir, error) {
		r, err := rootFD(root)
		if err != nil {
			return nil, err
		}
		defer unix.Close(r)
		fd, err := openIn(r, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: what, Err: err}
		}
		return &Dir{fd: fd, Path: "/" + strings.TrimPrefix(cleanIn(name), "."), Root: root}, nil
	}, func(d *Dir) { d.Close() })
}

// FD is the directory's descriptor (an O_PATH one: usable as the dirfd
// of *at calls and with fstat/fstatfs, not for reading entries).
func (d *Dir) FD() int { return d.fd }

// ProcPath names a file in the directory through /proc/self/fd: a path
// that leads exactly where the descriptor does (for connect(2), which
// has no *at form). Short enough for a socket address.
func (d *Dir) ProcPath(name string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", d.fd, name) }

// Close closes the directory.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Lstat stats name in the directory without following a symlink.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, &os.PathError{Op: "lstat", Path: filepath.Join(d.Path, name), Err: err}
	}
	return st, nil
}

// Open opens the regular file name (one component, not a symlink) in the
// directory for reading, with OpenIn's checks. The directory's
// descriptor keeps working after the process whose root it was found in
// has exited: a JVM's last file can still be read.
func (d *Dir) Open(name string, limit int64, accept Accept) (*Handle, error) {
	what := filepath.Join(d.Root, d.Path, name)
	if strings.Contains(name, "/") || name == "" || name == "." || name == ".." {
		return nil, &os.PathError{Op: "open", Path: what, Err: errors.New("not a name in the directory")}
	}
	fd, err := OpenRegularAt(d.fd, name)
	if err != nil {
		if err == unix.ELOOP {
			err = fmt.Errorf("%w (a symlink)", ErrNotRegular)
		}
		return nil, &os.PathError{Op: "open", Path: what, Err: err}
	}
	h := &Handle{fd: FD(fd), Path: filepath.Join(d.Path, name)}
	if err := h.check(limit, accept); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: what, Err: err}
	}
	_ = unix.SetNonblock(fd, false)
	return h, nil
}

// OpenRegularAt opens name under the directory dirfd for reading — not
// following a symlink as its last component — only once it is known to
// be a regular file: it is opened O_PATH first, so a device or FIFO a
// target planted is never opened (opening some devices acts: a watchdog
// arms, a FIFO blocks).
func OpenRegularAt(dirfd int, name string) (int, error) {
	pfd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	return reopenRegular(pfd)
}

// reopenRegular opens the file an O_PATH descriptor names for reading
// (non-blocking), if it is a regular file: the inode judged is the inode
// opened.
func reopenRegular(pfd int) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, fmt.Errorf("%w (%s)", ErrNotRegular, TypeName(st.Mode))
	}
	return unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
}

// Remove removes the file name from the directory (never a directory,
// never what a symlink points to).
func (d *Dir) Remove(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "unlink", Path: filepath.Join(d.Path, name), Err: err}
	}
	return nil
}

// Handle is a regular file inside a target's root, open for reading:
// what was checked (type, owner, size) is what is read.
type Handle struct {
	fd   FD
	Path string // inside root
	Stat unix.Stat_t
}

// Accept says which files OpenIn takes. The zero value takes any
// regular file whose last path component is not a symlink.
type Accept struct {
	// UIDs that may own the file (e.g. the target's euid and root);
	// empty accepts any owner.
	UIDs []uint32
	// SingleLink refuses a file with other hard links: a name in a
	// shared directory linked to a file elsewhere in the target.
	SingleLink bool
	// FollowLast follows a symlink as the last component, inside root:
	// for the target's own configuration (/etc/passwd, a JDK's
	// release), not for files in shared directories.
	FollowLast bool
}

// OpenIn opens the regular file name inside root for reading, under
// ctx: the last component must not be a symlink, and nothing on the way
// leaves root. A FIFO or device fails at once (ErrNotRegular), a file
// owned by someone owner does not accept fails with ErrForeign, one
// larger than limit with ErrTooLarge — all before a byte is read.
func OpenIn(ctx context.Context, root, name string, limit int64, accept Accept) (*Handle, error) {
	what := filepath.Join(root, cleanIn(name))
	return underCtx(ctx, what, func() (*Handle, error) {
		r, err := rootFD(root)
		if err != nil {
			return nil, err
		}
		defer unix.Close(r)
		flags := unix.O_PATH
		if !accept.FollowLast {
			flags |= unix.O_NOFOLLOW
		}
		pfd, err := openIn(r, name, flags, 0)
		if err == nil {
			var fd int
			fd, err = reopenRegular(pfd)
			unix.Close(pfd)
			pfd = fd
		}
		fd := pfd
		if err != nil {
			if err == unix.ELOOP {
				err = fmt.Errorf("%w (a symlink)", ErrNotRegular)
			}
			return nil, &os.PathError{Op: "open", Path: what, Err: err}
		}
		h := &Handle{fd: FD(fd), Path: "/" + strings.TrimPrefix(cleanIn(name), ".")}
		if err := h.check(limit, accept); err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "open", Path: what, Err: err}
		}
		_ = unix.SetNonblock(fd, false)
		return h, nil
	}, func(h *Handle) { h.Close() })
}

// ErrForeign: the file belongs to someone the caller does not accept.
var ErrForeign = errors.New("owned by another user")

func (h *Handle) check(limit int64, owner Accept) error {
	if err := unix.Fstat(int(h.fd), &h.Stat); err != nil {
		return err
	}
	st := &h.Stat
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%w (%s)", ErrNotRegular, TypeName(st.Mode))
	}
	if len(owner.UIDs) > 0 {
		ok := false
		for _, u := range owner.UIDs {
			ok = ok || st.Uid == u
		}
		if !ok {
			return fmt.Errorf("%w (uid %d)", ErrForeign, st.Uid)
		}
	}
	if owner.SingleLink && st.Nlink != 1 {
		return fmt.Errorf("%w (%d hard links)", ErrForeign, st.Nlink)
	}
	// A sparse file's size is what it would read as: zeros count.
	if st.Size > limit {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, st.Size, limit)
	}
	return nil
}

// Reader reads the file, failing with ErrTooLarge past limit bytes (a
// file that grows while it is read): never more than limit+1 bytes are
// taken from it.
func (h *Handle) Reader(limit int64) io.Reader { return &cappedReader{r: h.fd, left: limit} }

// File hands the descriptor over as an *os.File (for readers that want
// one, such as debug/elf); the Handle is closed by closing it.
func (h *Handle) File() *os.File {
	f := os.NewFile(uintptr(h.fd), filepath.Base(h.Path))
	h.fd = -1
	return f
}

// Close closes the file.
func (h *Handle) Close() error {
	if h == nil || h.fd < 0 {
		return nil
	}
	err := h.fd.Close()
	h.fd = -1
	return err
}

type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n + int(c.left), fmt.Errorf("%w: it grew past the limit while being read", ErrTooLarge)
	}
	return n, err
}

// ReadIn reads a small regular file inside root into memory: OpenIn,
// then at most limit bytes.
func ReadIn(ctx context.Context, root, name string, limit int64, accept Accept) (*File, error) {
	h, err := OpenIn(ctx, root, name, limit, accept)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	data, err := ReadAll(h.fd, h.Stat.Size, limit)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: filepath.Join(root, h.Path), Err: err}
	}
	return &File{Path: h.Path, Data: data, Stat: h.Stat}, nil
}

// RemoveIn removes the file name inside root, never following a symlink
// out of it (the last component itself is removed, not its target).
func RemoveIn(ctx context.Context, root, name string) error {
	d, err := OpenDirIn(ctx, root, filepath.Dir(cleanIn(name)))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Remove(filepath.Base(cleanIn(name)))
}

// StatIn stats name inside root, following a last symlink inside root.
func StatIn(ctx context.Context, root, name string) (unix.Stat_t, error) {
	what := filepath.Join(root, cleanIn(name))
	return underCtx(ctx, what, func() (unix.Stat_t, error) {
		var st unix.Stat_t
		r, err := rootFD(root)
		if err != nil {
			return st, err
		}
		defer unix.Close(r)
		fd, err := openIn(r, name, unix.O_PATH, 0)
		if err != nil {
			return st, &os.PathError{Op: "stat", Path: what, Err: err}
		}
		defer unix.Close(fd)
		err = unix.Fstat(fd, &st)
		return st, err
	}, nil)
}

// ReadlinkIn reads the symlink name inside root (its text, not followed;
// capped at PATH_MAX by the kernel).
func ReadlinkIn(ctx context.Context, root, name string) (string, error) {
	d, err := OpenDirIn(ctx, root, filepath.Dir(cleanIn(name)))
	if err != nil {
		return "", err
	}
	defer d.Close()
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(d.fd, filepath.Base(cleanIn(name)), buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: filepath.Join(root, cleanIn(name)), Err: err}
	}
	return string(buf[:n]), nil
}

// ListIn returns at most max names from the directory name inside root
// (a target's directory can hold millions).
func ListIn(ctx context.Context, root, name string, max int) ([]string, error) {
	what := filepath.Join(root, cleanIn(name))
	return underCtx(ctx, what, func() ([]string, error) {
		r, err := rootFD(root)
		if err != nil {
			return nil, err
		}
		defer unix.Close(r)
		fd, err := openIn(r, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: what, Err: err}
		}
		f := os.NewFile(uintptr(fd), what)
		defer f.Close()
		names, err := f.Readdirnames(max)
		if err == io.EOF {
			err = nil
		}
		return names, err
	}, nil)
}
