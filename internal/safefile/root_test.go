package safefile

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeRoot is a target's root as an attacker inside it would arrange it:
// an absolute symlink for /tmp, a relative one that climbs, a symlink
// planted where a file is expected, a FIFO, a sparse file, a hard link.
func fakeRoot(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "outside")
	for _, d := range []string{root + "/etc", root + "/var/tmp", root + "/real", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(root+"/etc/hostname", "inside\n")
	write(outside+"/secret", "outside\n")
	write(root+"/real/file", "real\n")
	links := map[string]string{
		root + "/tmp":           "/var/tmp",      // absolute: must mean root/var/tmp
		root + "/up":            "../../outside", // relative, climbing
		root + "/abs-out":       outside,         // absolute host path: root+outside inside
		root + "/var/tmp/plant": outside + "/secret",
		root + "/var/tmp/dir":   "/real",
	}
	for link, to := range links {
		if err := os.Symlink(to, link); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(root+"/var/tmp/fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(root + "/var/tmp/sparse")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(900 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Link(root+"/real/file", root+"/var/tmp/hardlink"); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

// inBothModes runs f with openat2 and with the component walk that
// kernels without it get.
func inBothModes(t *testing.T, f func(t *testing.T, walk bool)) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) {
			forceWalk = walk
			t.Cleanup(func() { forceWalk = false })
			f(t, walk)
		})
	}
}

func TestNothingLeavesTheRoot(t *testing.T) {
	root, _ := fakeRoot(t)
	ctx := context.Background()
	inBothModes(t, func(t *testing.T, walk bool) {
		for _, name := range []string{"../../outside/secret", "/../../outside/secret", "up/secret", "abs-out/secret", "tmp/plant", "var/tmp/plant"} {
			f, err := ReadIn(ctx, root, name, 1<<20, Accept{})
			if err == nil {
				t.Errorf("%s: read %q, want an error", name, f.Data)
			}
			if err != nil && strings.Contains(err.Error(), "outside") && !strings.Contains(err.Error(), root) {
				t.Errorf("%s: %v names a path outside root", name, err)
			}
		}
		// Inside the root, through a symlink that stays inside.
		f, err := ReadIn(ctx, root, "/../etc/hostname", 1<<20, Accept{})
		if err != nil || string(f.Data) != "inside\n" {
			t.Fatalf("etc/hostname: %v %v", err, f)
		}
		d, err := OpenDirIn(ctx, root, "/tmp")
		if walk {
			if !errors.Is(err, ErrEscapes) {
				t.Fatalf("walk: /tmp (a symlink) = %v, want ErrEscapes", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		// /tmp -> /var/tmp resolved inside root: the FIFO is there.
		if st, err := d.Lstat("fifo"); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Fatalf("fifo through /tmp: %v", err)
		}
	})
}

func TestOpenInRefusesWhatIsNotAPlainFile(t *testing.T) {
	root, _ := fakeRoot(t)
	inBothModes(t, func(t *testing.T, walk bool) {
		for _, tc := range []struct {
			name  string
			owner Accept
			want  error
		}{
			{"var/tmp/fifo", Accept{}, ErrNotRegular},
			{"var/tmp/sparse", Accept{}, ErrTooLarge},
			{"var/tmp/hardlink", Accept{SingleLink: true}, ErrForeign},
			{"etc/hostname", Accept{UIDs: []uint32{12345}}, ErrForeign},
			{"var/tmp/dir", Accept{}, nil}, // a symlink: refused either way
			{"var/tmp", Accept{}, ErrNotRegular},
			{"var/tmp/missing", Accept{}, os.ErrNotExist},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h, err := OpenIn(ctx, root, tc.name, 1<<20, tc.owner)
			cancel()
			if err == nil {
				h.Close()
				t.Errorf("%s: opened, want an error", tc.name)
				continue
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
	})
}

func TestHandleReaderStopsAtTheLimit(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "grows")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := OpenIn(context.Background(), root, "grows", 10, Accept{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// It grows after the size was checked.
	if err := os.WriteFile(p, []byte("0123456789abcdef"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(h.Reader(10))
	if !errors.Is(err, ErrTooLarge) || len(data) != 10 {
		t.Fatalf("read %d bytes, %v; want 10 and ErrTooLarge", len(data), err)
	}
}

func TestRemoveInRemovesTheLinkNotItsTarget(t *testing.T) {
	root, outside := fakeRoot(t)
	inBothModes(t, func(t *testing.T, walk bool) {
		if err := os.Symlink(outside+"/secret", root+"/var/tmp/plant2"); err != nil {
			t.Fatal(err)
		}
		if err := RemoveIn(context.Background(), root, "/var/tmp/plant2"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(outside + "/secret"); err != nil {
			t.Fatalf("the link's target went: %v", err)
		}
		if err := RemoveIn(context.Background(), root, "/up/secret"); err == nil {
			t.Fatal("removed a file through a climbing symlink")
		}
		if _, err := os.Stat(outside + "/secret"); err != nil {
			t.Fatalf("a file outside root went: %v", err)
		}
	})
}
