package safefile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestDevicesAreNeverOpened: a device node a target planted where a
// regular file is expected (an image can ship one; no CAP_MKNOD is
// needed at run time) is refused without being opened — opening some
// devices acts (a watchdog arms). inotify sees every real open, and no
// O_PATH one.
func TestDevicesAreNeverOpened(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	dev := filepath.Join(dir, "record.json")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := testenv.WatchOpens(t, dev, fifo)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	for name, open := range map[string]func(string) error{
		"OpenRegularAt": func(p string) error {
			fd, err := OpenRegularAt(int(d.Fd()), filepath.Base(p))
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		"OpenIn": func(p string) error {
			h, err := OpenIn(ctx, dir, filepath.Base(p), 1<<20, Accept{})
			if err == nil {
				h.Close()
			}
			return err
		},
		"Read": func(p string) error {
			_, err := Read(ctx, p, 1<<20, Options{})
			return err
		},
	} {
		for _, p := range []string{dev, fifo} {
			if err := open(p); !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s(%s): %v, want ErrNotRegular", name, filepath.Base(p), err)
			}
			if opened() {
				t.Errorf("%s opened %s", name, filepath.Base(p))
			}
		}
	}
}
