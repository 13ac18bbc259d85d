package safefile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

func TestReadRejectsWhatIsNotARegularFile(t *testing.T) {
	dir, fifo, sparse := testenv.HostileFiles(t)
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/etc/hostname", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		opts       Options
		want       error
	}{
		{"fifo", fifo, Options{}, ErrNotRegular},
		{"directory", dir, Options{}, ErrNotRegular},
		{"device", "/dev/zero", Options{}, ErrNotRegular},
		{"sparse 8 GiB", sparse, Options{}, ErrTooLarge},
		{"symlink with NoFollow", link, Options{NoFollow: true}, ErrNotRegular},
		{"missing", filepath.Join(dir, "nope"), Options{}, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := Read(ctx, tc.path, 1<<20, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Read(%s) = %v, want %v", tc.path, err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("Read(%s) used the whole deadline", tc.path)
			}
		})
	}
}

func TestReadRegularFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := p + ".link"
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	f, err := Read(context.Background(), link, 5, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if string(f.Data) != "hello" || f.Path != p {
		t.Fatalf("got %q from %s", f.Data, f.Path)
	}
	if _, err := Read(context.Background(), p, 4, Options{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("cap of 4 bytes: %v", err)
	}
}

func TestReadHonoursAnEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Read(ctx, "/etc/hostname", 1<<20, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// TestOpenDirRefusesWhatIsNotADirectory: a FIFO named where a directory is
// expected fails at once instead of blocking the open.
func TestOpenDirRefusesWhatIsNotADirectory(t *testing.T) {
	dir, fifo, sparse := testenv.HostileFiles(t)
	for _, p := range []string{fifo, sparse, "/dev/zero"} {
		done := make(chan error, 1)
		go func() {
			f, err := OpenDir(p)
			if err == nil {
				f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: opened as a directory", p)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: OpenDir blocked", p)
		}
	}
	f, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(-1); err != nil {
		t.Fatal(err)
	}
}

// TestReadSizes: files of many sizes come back whole; a file whose size
// fstat understates (procfs says 0) is read to its end, and stopped at
// the limit.
func TestReadSizes(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, size := range []int{0, 1, 100, 65536, 70000} {
		p := filepath.Join(dir, "f")
		want := bytes.Repeat([]byte{'x'}, size)
		if err := os.WriteFile(p, want, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := Read(ctx, p, int64(size), Options{})
		if err != nil || !bytes.Equal(f.Data, want) {
			t.Fatalf("size %d with an exact limit: %v", size, err)
		}
	}
	f, err := Read(ctx, "/proc/self/status", 1<<20, Options{})
	if err != nil || !bytes.Contains(f.Data, []byte("VmRSS")) {
		t.Fatalf("/proc/self/status (fstat size 0): %d bytes, %v", len(f.Data), err)
	}
	if _, err := Read(ctx, "/proc/self/status", 100, Options{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("/proc/self/status over a 100-byte limit: %v", err)
	}
}
