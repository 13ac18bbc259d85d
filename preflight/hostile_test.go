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
	in := &inspection{ctx: ctx, r: &Report{}}
	for _, p := range []string{fifo, sparse, "/dev/zero", dir} {
		returnsWithin(t, "release file "+p, 5*time.Second, func() {
			if data, err := in.readConfig(p, maxTargetConfigFile); err == nil {
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
