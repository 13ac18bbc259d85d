package attach

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/preflight"
)

// Where the judged bytes go (docs/delivery.md). The JVM is told to load
// a path that only root — or we, when we run as the target's own user —
// can change: <dir>/.safeattach/<sha256>/<name> inside the target's root,
// written from the bytes that were hashed and probed, verified after
// writing, and reused by every later load of the same bytes. That makes
// the verdict hold for what the JVM opens (a file renamed over the
// original after it was judged is never loaded), lets a container be
// profiled any number of times (the same bytes are the same path, which
// the JVM's loader recognises as already loaded), and lets a JVM whose
// user cannot read the original still load it.

// deliveryDirs are the candidate directories inside the target's root, in
// order of preference. Each must be a real directory (not a symlink: an
// absolute link would resolve against our root, not the target's),
// writable by us, on a file system mounted without noexec and ro, with
// room for the agent.
var deliveryDirs = []string{"/tmp", "/var/tmp", "/dev/shm"}

// storeDir is the name of the content-addressed store in a delivery dir.
// When another user holds that name (anyone can create it in /tmp), the
// store is a directory named storeDir-<random> instead: found again by
// listing the delivery dir for one we own, never guessable in advance.
const storeDir = ".safeattach"

// maxStoreCandidates bounds the storeDir-* names looked at in one
// delivery dir (each costs an fstatat; anyone can create such names).
const maxStoreCandidates = 64

// delivery is an agent placed where the target can load it.
type delivery struct {
	inTarget string // the path the JVM is told to load
	// created is set when this call wrote the copy: only such a copy is
	// removed again, and only if no process maps it.
	created bool
	// inPlace: the original is loaded where it is (its location is safe).
	// reused: the target already maps these very bytes at inTarget.
	inPlace, reused bool
	// lock holds a shared flock on the copy while the JVM may still be
	// opening it; a cleanup elsewhere takes an exclusive one first.
	lock *os.File
	// store and hashDir are the store directory and its <sha256>
	// subdirectory holding the copy, kept open from delivery to release:
	// the copy is removed relative to them, never through a path.
	store, hashDir *os.File
	why            []string // the candidates rejected, for errors and logs
}

// ErrNoDeliveryDir: no directory in the target can take the agent.
var ErrNoDeliveryDir = errors.New("no usable directory in the target for the agent")

// deliver places content (the judged agent bytes) where the target r can
// load it and returns the path to send.
func deliver(ctx context.Context, r *preflight.Report, a *preflight.Agent, content []byte) (*delivery, error) {
	// The same bytes already mapped: send the path the loader knows them
	// by, so that it returns the loaded copy instead of adding a second.
	for _, l := range r.Profilers {
		if l.SHA256 != "" && l.SHA256 == a.SHA256 && !l.Deleted {
			return &delivery{inTarget: l.Path, reused: true}, nil
		}
	}
	if inPlaceSafe(r, a) {
		return &delivery{inTarget: a.RealPath, inPlace: true}, nil
	}
	d := &delivery{}
	for _, dir := range deliveryDirs {
		err := d.storeIn(ctx, r, a, content, dir)
		if err == nil {
			return d, nil
		}
		d.why = append(d.why, fmt.Sprintf("%s: %v", dir, err))
	}
	return nil, fmt.Errorf("%w: %s", ErrNoDeliveryDir, strings.Join(d.why, "; "))
}

// inPlaceSafe reports whether the original file may be loaded where it
// is: the target sees the same file at the same path, nobody but root (or
// we, running as the target's user) can change it or a directory above
// it, and the target's user can read it.
func inPlaceSafe(r *preflight.Report, a *preflight.Agent) bool {
	if !r.Process.SameMountNamespace || a.RealPath == "" {
		return false
	}
	me := uint32(os.Geteuid())
	for _, w := range a.WritableBy {
		if w.Kind != "uid" || w.ID != me || me != r.Process.UID.Effective {
			return false
		}
	}
	var ours, theirs unix.Stat_t
	if unix.Stat(a.RealPath, &ours) != nil || unix.Stat(filepath.Join(r.Process.Root, a.RealPath), &theirs) != nil {
		return false
	}
	if ours.Dev != theirs.Dev || ours.Ino != theirs.Ino {
		return false
	}
	return readableBy(a.RealPath, r.Process.UID.Effective, r.Process.GID.Effective)
}

// readableBy approximates the kernel's permission check for uid/gid
// (primary group only): r on the file and x on every directory above.
func readableBy(path string, uid, gid uint32) bool {
	need := uint32(4)
	for p := path; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			return false
		}
		var bits uint32
		switch {
		case uid == 0:
			bits = 7
		case st.Uid == uid:
			bits = st.Mode >> 6 & 7
		case st.Gid == gid:
			bits = st.Mode >> 3 & 7
		default:
			bits = st.Mode & 7
		}
		if bits&need == 0 {
			return false
		}
		need = 1
		if p == "/" || p == "." {
			return true
		}
	}
}

// storeIn writes content under dir/.safeattach/<sha256>/<name> in the
// target's root (dir resolved inside it), or verifies the copy already
// there.
func (d *delivery) storeIn(ctx context.Context, r *preflight.Report, a *preflight.Agent, content []byte, dir string) error {
	base, err := safefile.OpenDirIn(ctx, r.Process.Root, dir)
	if err != nil {
		if errors.Is(err, safefile.ErrEscapes) {
			return errors.New("a symlink (not followed on this kernel)")
		}
		return err
	}
	defer base.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(base.FD(), &fs); err != nil {
		return err
	}
	switch {
	case fs.Flags&unix.ST_RDONLY != 0:
		return errors.New("mounted read-only")
	case fs.Flags&unix.ST_NOEXEC != 0:
		return errors.New("mounted noexec (the loader cannot map code from it)")
	case uint64(fs.Bavail)*uint64(fs.Bsize) < uint64(len(content))+1<<20:
		return fmt.Errorf("full (%d bytes free, the agent needs %d)", uint64(fs.Bavail)*uint64(fs.Bsize), len(content))
	}
	store, storeName, err := openStore(ctx, r.Process.Root, base, true)
	if err != nil {
		return err
	}
	sub, err := ownDir(store, a.SHA256)
	if err != nil {
		unix.Close(store)
		return err
	}
	d.store, d.hashDir = os.NewFile(uintptr(store), storeName), os.NewFile(uintptr(sub), a.SHA256)
	fail := func(err error) error {
		d.store.Close()
		d.hashDir.Close()
		d.store, d.hashDir = nil, nil
		return err
	}
	in := filepath.Join(base.Path, storeName, a.SHA256)
	name := fileName(a.RealPath)
	// The same bytes delivered earlier under another file name are the
	// same agent: reuse that copy (one copy per content, whatever the
	// callers called it).
	if existing := existingCopy(sub, a.SHA256, int64(len(content))); existing != nil {
		d.inTarget = filepath.Join(in, existing.Name())
		d.lock = existing
		return nil
	}
	d.inTarget = filepath.Join(in, name)
	if f, err := openVerified(sub, name, a.SHA256, int64(len(content))); err == nil {
		d.lock = f
		return nil
	} else if !errors.Is(err, unix.ENOENT) {
		// Not what we would have written: someone who can write the
		// store (root) put it there; replace it rather than trust it.
		if uerr := unix.Unlinkat(sub, name, 0); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			return fail(fmt.Errorf("%s holds other bytes and cannot be replaced: %v", d.inTarget, uerr))
		}
	}
	if err := writeCopy(sub, name, content); err != nil {
		return fail(err)
	}
	f, err := openVerified(sub, name, a.SHA256, int64(len(content)))
	if err != nil {
		return fail(fmt.Errorf("verify %s after writing: %w", d.inTarget, err))
	}
	d.lock, d.created = f, true
	return nil
}

// openStore opens our store in the delivery directory base: storeDir if
// it is ours (or can be made so), else a storeDir-<random> one we made
// earlier, else (with create) a new one. Someone else's directory, file
// or symlink at storeDir — planted by another user to deny the delivery
// — is passed over, never used and never removed.
func openStore(ctx context.Context, root string, base *safefile.Dir, create bool) (fd int, name string, err error) {
	if create {
		fd, err = ownDir(base.FD(), storeDir)
	} else {
		fd, err = openOwnDir(base.FD(), storeDir)
	}
	if err == nil {
		return fd, storeDir, nil
	}
	planted := err
	names, _ := safefile.ListIn(ctx, root, base.Path, maxTmpListing)
	seen := 0
	for _, n := range names {
		if !strings.HasPrefix(n, storeDir+"-") || seen == maxStoreCandidates {
			continue
		}
		seen++
		if fd, err := openOwnDir(base.FD(), n); err == nil {
			return fd, n, nil
		}
	}
	if !create {
		return -1, "", planted
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return -1, "", err
	}
	name = storeDir + "-" + hex.EncodeToString(rnd[:])
	// mkdirat fails if the name exists: a fresh random name is ours.
	if err := unix.Mkdirat(base.FD(), name, 0o755); err != nil {
		return -1, "", fmt.Errorf("%v; and mkdir %s: %w", planted, name, err)
	}
	fd, err = openOwnDir(base.FD(), name)
	if err != nil {
		return -1, "", fmt.Errorf("%v; and %w", planted, err)
	}
	return fd, name, nil
}

// maxTmpListing bounds the entries read from a delivery directory when
// looking for our store under another name.
const maxTmpListing = 100000

// existingCopy returns a verified copy already in the hash directory,
// under whatever name, or nil. At most a few entries are looked at: the
// directory is ours and holds one copy.
func existingCopy(dir int, sum string, size int64) *os.File {
	fd, err := unix.Dup(dir)
	if err != nil {
		return nil
	}
	d := os.NewFile(uintptr(fd), "store")
	defer d.Close()
	names, _ := d.Readdirnames(8)
	for _, n := range names {
		if strings.HasPrefix(n, ".tmp-") {
			continue
		}
		if c, err := openVerified(dir, n, sum, size); err == nil {
			return c
		}
	}
	return nil
}

// ownDir opens (creating if needed) the directory name under parent and
// checks that it is a real directory that only root or we can write, and
// that everyone may traverse (the target runs as another user).
func ownDir(parent int, name string) (int, error) {
	if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("mkdir %s: %w", name, err)
	}
	return openOwnDir(parent, name)
}

// openOwnDir opens the existing directory name under parent if it is
// ours as ownDir requires.
func openOwnDir(parent int, name string) (int, error) {
	fd, err := unix.Openat(parent, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w (a symlink?)", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	me := uint32(os.Geteuid())
	switch {
	case st.Uid != me:
		// Not root-or-us: a root-owned store is no use to another user
		// (it cannot write there), and inside a target uid 0 may be the
		// pod's own user.
		unix.Close(fd)
		return -1, fmt.Errorf("%s is owned by uid %d, not us: someone else could change what is loaded", name, st.Uid)
	case st.Mode&0o022 != 0:
		unix.Close(fd)
		return -1, fmt.Errorf("%s has mode %04o: writable by others", name, st.Mode&0o7777)
	case st.Mode&0o555 != 0o555 && st.Uid == me:
		// Our umask made it private; the target must be able to traverse it.
		if err := unix.Fchmod(fd, 0o755); err != nil {
			unix.Close(fd)
			return -1, err
		}
	case st.Mode&0o555 != 0o555:
		unix.Close(fd)
		return -1, fmt.Errorf("%s has mode %04o: the target cannot read it", name, st.Mode&0o7777)
	}
	return fd, nil
}

// fileName keeps the agent's own name (async-profiler's messages and
// /proc/<pid>/maps show it) when it is a plain file name.
func fileName(p string) string {
	n := filepath.Base(p)
	if n == "." || n == "/" || len(n) > 200 || strings.ContainsFunc(n, func(r rune) bool {
		return !(r == '.' || r == '-' || r == '_' || r == '+' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return "agent.so"
	}
	return n
}

// writeCopy writes content to a fresh temporary name and links it into
// place without replacing anything: a concurrent writer of the same bytes
// wins and ours is dropped.
func writeCopy(dir int, name string, content []byte) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := ".tmp-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dir, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(0o644) // whatever our umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat2(dir, tmp, dir, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = nil // the same bytes, written by a concurrent load
		}
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
		return fmt.Errorf("write: %w", err)
	}
	unix.Unlinkat(dir, tmp, 0)
	return nil
}

// openVerified opens the copy and checks that it is a regular file only
// root or we can write, of the expected size and hash. The open file is
// returned with a shared flock held.
func openVerified(dir int, name, sum string, size int64) (*os.File, error) {
	fd, err := safefile.OpenRegularAt(dir, name)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	me := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = errors.New("not a regular file")
	case st.Uid != me:
		err = fmt.Errorf("owned by uid %d", st.Uid)
	case st.Mode&0o022 != 0:
		err = fmt.Errorf("mode %04o", st.Mode&0o7777)
	case st.Size != size:
		err = fmt.Errorf("%d bytes, want %d", st.Size, size)
	}
	if err == nil {
		h := sha256.New()
		if _, err = io.Copy(h, io.LimitReader(f, size)); err == nil && hex.EncodeToString(h.Sum(nil)) != sum {
			err = errors.New("content differs from the judged agent")
		}
	}
	if err == nil {
		err = unix.Flock(fd, unix.LOCK_SH)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// release ends the delivery. A copy this call created is removed unless
// loaded is set or a process maps it — checked under an exclusive flock,
// so a concurrent load that verified the copy and still holds its shared
// lock keeps it. It is removed relative to the directories it was
// written in, never through a path.
func (d *delivery) release(pid int, loaded bool) {
	if d == nil {
		return
	}
	defer func() {
		for _, f := range []*os.File{d.hashDir, d.store} {
			if f != nil {
				f.Close()
			}
		}
		d.hashDir, d.store = nil, nil
	}()
	if d.lock == nil {
		return
	}
	defer d.lock.Close()
	if !d.created || loaded || mapsFile(pid, d.inTarget) {
		return
	}
	if unix.Flock(int(d.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return
	}
	unix.Unlinkat(int(d.hashDir.Fd()), filepath.Base(d.inTarget), 0)
	unix.Unlinkat(int(d.store.Fd()), filepath.Base(filepath.Dir(d.inTarget)), unix.AT_REMOVEDIR) // only if empty
}

// mapsFile reports whether pid maps a file at path (its own view).
func mapsFile(pid int, path string) bool {
	found := false
	_ = proc.FS{}.Proc(pid).WalkMaps(func(p []byte) bool {
		return bytes.Equal(p, []byte(path))
	}, func(*proc.Mapping) error {
		found = true
		return proc.ErrStop
	})
	return found
}
