package attach

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/preflight"
)

// deliverAgent copies the agent into a target that lives in another mount
// namespace (a container), where our path means nothing (DESIGN.md
// invariant 6): created O_EXCL|O_NOFOLLOW under the target's /tmp, owned
// by the target's user so it can read it, verified byte for byte. The
// returned cleanup removes it.
func deliverAgent(r *preflight.Report, a *preflight.Agent) (inTarget string, cleanup func(), err error) {
	src, err := os.ReadFile(a.RealPath)
	if err != nil {
		return "", nil, err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	inTarget = fmt.Sprintf("/tmp/.safeattach-%s-%s", hex.EncodeToString(rnd[:]), filepath.Base(a.RealPath))
	host := filepath.Join(r.Process.Root, inTarget)
	fd, err := unix.Open(host, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("copy agent into the target: %s: %w", host, err)
	}
	f := os.NewFile(uintptr(fd), host)
	cleanup = func() { os.Remove(host) }
	_, werr := f.Write(src)
	if werr == nil {
		werr = f.Chown(int(r.Process.UID.Effective), int(r.Process.GID.Effective))
		if werr != nil && os.Geteuid() != 0 {
			werr = nil // not root: the file is ours and world-readable
		}
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = verifyCopy(host, src)
	}
	if werr != nil {
		cleanup()
		return "", nil, fmt.Errorf("copy agent into the target: %w", werr)
	}
	return inTarget, cleanup, nil
}

func verifyCopy(path string, want []byte) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.ReadAll(io.LimitReader(f, int64(len(want))+1))
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s differs from the agent after copying", path)
	}
	return nil
}
