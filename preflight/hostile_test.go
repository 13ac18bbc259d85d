package preflight

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
)

// returnsWithin fails the test if fn has not returned after d: a FIFO
// opened for reading blocks until a writer comes, which never happens here.
func returnsWithin(t *testing.T, what string, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s blocked", what)
	}
}

// TestHostileTargetFilesDoNotBlock: the files inspection reads from a
// target's root (a JDK's release file, ld.so.conf and its includes, dpkg's
// status) and the directories scan lists are named by whoever controls
// that root or /tmp. A FIFO or a device in their place is skipped at once.
func TestHostileTargetFilesDoNotBlock(t *testing.T) {
	dir, fifo, sparse := testenv.HostileFiles(t)
	ctx := context.Background()
	in := &inspection{r: &Report{}}
	for _, p := range []string{fifo, sparse, "/dev/zero", dir} {
		returnsWithin(t, "release file "+p, 5*time.Second, func() {
			if data, err := in.readConfig(ctx, p, maxTargetConfigFile); err == nil {
				t.Errorf("%s: read %d bytes", p, len(data))
			}
			if v := releaseVersion(in.release); v != "" {
				t.Errorf("%s: version %q", p, v)
			}
		})
		returnsWithin(t, "ld.so.conf "+p, 5*time.Second, func() {
			if dirs := ldSoConf(ctx, "/", p, 0); len(dirs) != 0 {
				t.Errorf("%s: dirs %v", p, dirs)
			}
		})
	}
	returnsWithin(t, "a FIFO listed as a directory", 5*time.Second, func() {
		if _, err := safefile.ListIn(ctx, "/", fifo, 10); err == nil {
			t.Error("a FIFO listed")
		}
	})
	// Any user can create /tmp/hsperfdata_<name>; scan lists them all.
	evil := fmt.Sprintf("/tmp/hsperfdata_safeattach-fifo-%d", os.Getpid())
	if err := syscall.Mkfifo(evil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(evil) })
	returnsWithin(t, "perfDataPIDs with a FIFO in /tmp", 5*time.Second, func() { perfDataPIDs() })
}

// TestInitWatch: the starting JVM's hsperfdata is found by its user's
// name in the target's /etc/passwd, or else among /tmp's hsperfdata_*
// directories (made after the watch began); a real JDK 17 file says
// initialised, a hostile 3.6 MB one "not initialised" — or nothing, when
// its counter lies past the bytes read; a FIFO or an over-sized file
// says nothing.
func TestInitWatch(t *testing.T) {
	real, err := os.ReadFile("../internal/proc/testdata/hsperfdata/jdk17.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name        string
		passwd      bool
		file        []byte
		done, known bool
	}{
		{"jdk17", true, real, true, true},
		{"jdk17-no-passwd-entry", false, real, true, true},
		{"hostile-first", true, testenv.HostilePerfData(65535, 0), false, true},
		{"hostile-last", true, testenv.HostilePerfData(65535, 65534), false, false},
		{"none", true, nil, false, false},
		{"too-large", true, append(testenv.HostilePerfData(65535, 0), make([]byte, maxPerfData)...), false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(root+"/etc", 0o755)
			passwd := "root:x:0:0::/root:/bin/sh\n"
			if c.passwd {
				passwd += "app:x:1000:1000::/tmp:/bin/sh\n"
			}
			os.WriteFile(root+"/etc/passwd", []byte(passwd), 0o644)
			r := &Report{PID: 1}
			r.Process.Root, r.Process.NSPid, r.Process.UID.Effective = root, 7, 1000
			w := NewInitWatch(r)
			ctx := context.Background()
			if done, known := w.Initialised(ctx); done || known {
				t.Fatalf("no file yet: %v %v", done, known)
			}
			if c.file != nil {
				os.MkdirAll(root+"/tmp/hsperfdata_app", 0o755)
				if err := os.WriteFile(root+"/tmp/hsperfdata_app/7", c.file, 0o600); err != nil {
					t.Fatal(err)
				}
				os.Chown(root+"/tmp/hsperfdata_app/7", 1000, 1000)
			}
			if done, known := w.Initialised(ctx); done != c.done || known != c.known {
				t.Errorf("done %v known %v, want %v %v", done, known, c.done, c.known)
			}
		})
	}
	// A FIFO where the file should be fails at once.
	root := t.TempDir()
	os.MkdirAll(root+"/tmp/hsperfdata_root", 0o755)
	if err := syscall.Mkfifo(root+"/tmp/hsperfdata_root/7", 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Report{PID: 1}
	r.Process.Root, r.Process.NSPid = root, 7
	returnsWithin(t, "InitWatch on a FIFO", 5*time.Second, func() {
		if done, known := NewInitWatch(r).Initialised(context.Background()); done || known {
			t.Errorf("a FIFO: %v %v", done, known)
		}
	})
}
