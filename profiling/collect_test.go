package profiling

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLiveProfile: a profile, and one cancelled early, are written, and
// leave nothing in the target. The JVM runs as a pod, with a /tmp of its
// own: what is left there is this test's, not another test's in flight
// or a killed run's.
func TestLiveProfile(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartPod(t, testenv.PodSpec{Workers: 1})
	out := filepath.Join(t.TempDir(), "profile.collapsed")
	ticks := 0
	res, err := Profile(context.Background(), p.PID, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "wall"}, Output: out}, Duration: 1500 * time.Millisecond, Progress: func(time.Duration, time.Duration) { ticks++ }})
	if err != nil {
		t.Fatalf("profile: %v", err)
	}
	data, _ := os.ReadFile(out)
	if !strings.Contains(string(data), "Target.churn") || !strings.Contains(string(data), "[wall]") || res.Bytes != int64(len(data)) || !res.Healthy {
		t.Errorf("profile output %q, result %+v", data, res)
	}
	if ticks == 0 {
		t.Error("no progress reported")
	}
	// Cancelled early (at its first progress report: it runs): still
	// stopped cleanly and written.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out2 := filepath.Join(t.TempDir(), "early.collapsed")
	res, err = Profile(ctx, p.PID, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Output: out2}, Duration: time.Minute, Progress: func(time.Duration, time.Duration) { cancel() }})
	if err != nil || !res.Cancelled {
		t.Fatalf("cancelled profile: %v %+v", err, res)
	}
	if data, _ := os.ReadFile(out2); !strings.Contains(string(data), "[cpu]") {
		t.Errorf("cancelled profile output %q", data)
	}
	// The profiler's files inside the target (its output, its log; see
	// newTargetFile) are removed.
	matches, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-*", p.PID))
	if len(matches) != 0 {
		t.Errorf("left behind: %v", matches)
	}
}

// copyTo runs the output path of Profile: the profiler's file read back
// as a session reads it (not following links), then prepare, commit.
func copyTo(src, dst string) (int64, error) {
	h, err := safefile.OpenIn(context.Background(), filepath.Dir(src), filepath.Base(src), DefaultMaxOutput, safefile.Accept{SingleLink: true})
	if err != nil {
		return 0, err
	}
	defer h.Close()
	out, err := outfile.Prepare(dst, 0, nil)
	if err != nil {
		return 0, err
	}
	defer out.Discard()
	n, err := copyOutput(out, h, DefaultMaxOutput)
	if err != nil {
		return n, err
	}
	return n, out.Commit()
}

func TestProfileWriteFailureLosesNothing(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "keep.txt")
	os.WriteFile(dst, []byte("previous profile"), 0o644)
	if _, err := copyTo(filepath.Join(dir, "missing"), dst); err == nil {
		t.Fatal("copy of a missing file succeeded")
	}
	if data, _ := os.ReadFile(dst); string(data) != "previous profile" {
		t.Errorf("destination damaged: %q", data)
	}
	// An unwritable destination directory: clear error, no stray files.
	if _, err := copyTo(dst, filepath.Join(dir, "no/such/dir/out")); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if os.Geteuid() == 0 {
		// A full disk: a 16 KiB tmpfs holding the previous profile, and a
		// new one that does not fit. The old one must survive intact.
		full := t.TempDir()
		if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=16k"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(full, unix.MNT_DETACH) })
		kept := filepath.Join(full, "profile.html")
		os.WriteFile(kept, []byte("previous profile"), 0o644)
		big := filepath.Join(dir, "big")
		os.WriteFile(big, make([]byte, 64<<10), 0o644)
		if _, err := copyTo(big, kept); err == nil || !errors.Is(err, unix.ENOSPC) {
			t.Errorf("copy onto a full disk: %v", err)
		}
		if data, _ := os.ReadFile(kept); string(data) != "previous profile" {
			t.Errorf("full disk damaged the previous file: %q", data)
		}
		if entries, _ := os.ReadDir(full); len(entries) != 1 {
			t.Errorf("full disk left %d files", len(entries))
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".keep.txt.") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestOutputDestinationsRefused: a symlink (to /dev/stdout, say), a
// device and a FIFO at the output path are refused before anything is
// attached, and left as they were.
func TestOutputDestinationsRefused(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	os.Symlink("/dev/null", link)
	fifo := filepath.Join(dir, "fifo")
	unix.Mkfifo(fifo, 0o600)
	for _, dst := range []string{link, "/dev/null", fifo, dir} {
		if _, err := outfile.Prepare(dst, 0, nil); err == nil || !strings.Contains(err.Error(), "refusing to replace") {
			t.Errorf("%s: %v", dst, err)
		}
	}
	if target, _ := os.Readlink(link); target != "/dev/null" {
		t.Errorf("symlink changed: %q", target)
	}
	var st unix.Stat_t
	if unix.Lstat(fifo, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Error("fifo replaced")
	}
	// A profile whose in-target file is a symlink (the target's user can
	// make one) is not followed.
	src := filepath.Join(dir, "src")
	os.Symlink("/etc/shadow", src)
	if _, err := copyTo(src, filepath.Join(dir, "out")); err == nil {
		t.Error("followed a symlink planted as the profiler's output")
	}
	// Mode 0644 by default, and the owner given (the sudo user).
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("profile"), 0o600)
	dst := filepath.Join(dir, "profile.txt")
	out, err := outfile.Prepare(dst, 0, &outfile.Owner{UID: 65534, GID: 65534})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write([]byte("profile")); err != nil {
		t.Fatal(err)
	}
	if err := out.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(dst, &st); err != nil || st.Mode&0o777 != 0o644 || st.Uid != 65534 && os.Geteuid() == 0 {
		t.Errorf("mode %o uid %d (%v)", st.Mode&0o777, st.Uid, err)
	}
}
