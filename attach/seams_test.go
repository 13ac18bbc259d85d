package attach

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// mappedHashes returns the SHA-256 of every file the process maps
// executable whose name ends in .so, read through map_files.
func mappedHashes(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.Contains(f[1], "x") || !strings.Contains(f[5], ".so") {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/map_files/%s", pid, f[0]))
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		out[hex.EncodeToString(sum[:])] = strings.Join(f[5:], " ")
	}
	return out
}

func copyFile(t *testing.T, src, dst string, uid int) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestLiveSwappedAgentLoadsTheJudgedBytes is the incident at the seam: a
// JVM running as nobody under tcmalloc's heap profiler, the fixed
// look-alike in a directory nobody owns (which agent-untrusted allows:
// it is the JVM's own user), and a helper that renames the affected
// look-alike over it the moment safeattach has read it — after a delay
// that differs each run. The JVM must load the bytes that were judged,
// every time, and keep answering.
func TestLiveSwappedAgentLoadsTheJudgedBytes(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	tcm := testenv.Library(t, "libtcmalloc.so.4")
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	fixedSum, affectedSum := sha256File(t, fixed), sha256File(t, affected)

	dir, err := os.MkdirTemp("/var/tmp", "safeattach-swap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, testenv.Nobody, testenv.Nobody); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartJVM(t, testenv.JVMSpec{RunAs: testenv.Nobody, Workers: 4,
		Env: []string{"LD_PRELOAD=" + tcm, "HEAPPROFILE=" + filepath.Join(dir, "heap")}})
	agent := filepath.Join(dir, "libasyncProfiler.so")
	staged := filepath.Join(dir, "staged.so")

	const runs = 20
	swapped := 0
	for i := 0; i < runs; i++ {
		copyFile(t, fixed, agent, testenv.Nobody)
		copyFile(t, affected, staged, testenv.Nobody)
		// The swapper waits for safeattach to close the agent after reading
		// it, then renames the affected build over it after i*3/2 ms.
		delay := time.Duration(i) * 1500 * time.Microsecond
		done := make(chan bool, 1)
		ino, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.InotifyAddWatch(ino, agent, unix.IN_CLOSE_NOWRITE); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer unix.Close(ino)
			buf := make([]byte, 4096)
			if _, err := unix.Read(ino, buf); err != nil {
				done <- false
				return
			}
			time.Sleep(delay)
			done <- os.Rename(staged, agent) == nil
		}()
		var audit AuditRecord
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		res, err := Load(ctx, p.PID, agent, "", Options{Audit: func(r AuditRecord) { audit = r }})
		cancel()
		if err != nil {
			t.Fatalf("run %d (swap after %v): %v", i, delay, err)
		}
		select {
		case ok := <-done:
			if ok {
				swapped++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: the swapper never saw the agent read", i)
		}
		if audit.AgentSHA256 != fixedSum {
			t.Errorf("run %d: audit hash %s, want the fixed build's %s", i, audit.AgentSHA256, fixedSum)
		}
		if strings.HasPrefix(res.LoadedFrom, dir) {
			t.Errorf("run %d: loaded from the writable directory: %s", i, res.LoadedFrom)
		}
		maps := mappedHashes(t, p.PID)
		if path, bad := maps[affectedSum]; bad {
			t.Fatalf("run %d: the JVM mapped the swapped-in affected build (%s)", i, path)
		}
		if _, ok := maps[fixedSum]; !ok {
			t.Fatalf("run %d: the fixed build is not mapped", i)
		}
		if _, err := Jcmd(context.Background(), p.PID, "VM.version", Options{Timeout: 10 * time.Second}); err != nil {
			t.Fatalf("run %d: the JVM no longer answers: %v", i, err)
		}
	}
	if swapped != runs {
		t.Errorf("only %d of %d runs swapped the file", swapped, runs)
	}
	t.Logf("%d runs, %d swaps, the JVM loaded the judged bytes and answered every time", runs, swapped)
}

// TestLiveContainerNoexecTmp: with /tmp mounted noexec the loader could
// not map the agent from there; another directory is chosen. With every
// candidate unusable, the attach is refused before anything is sent,
// naming each candidate and why.
func TestLiveContainerNoexecTmp(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	_, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs -o noexec tmpfs /tmp && mount -t tmpfs tmpfs /var/tmp")
	res, err := Load(context.Background(), jvm, lib, "", Options{})
	if err != nil {
		t.Fatalf("load with /tmp noexec: %v", err)
	}
	if !strings.HasPrefix(res.LoadedFrom, "/var/tmp/.safeattach/") {
		t.Errorf("loaded from %q, want /var/tmp", res.LoadedFrom)
	}

	_, none := testenv.StartContainerJVM(t, "mount -t tmpfs -o noexec tmpfs /tmp && mount -t tmpfs -o ro tmpfs /var/tmp && mount -t tmpfs -o noexec tmpfs /dev/shm")
	_, err = Load(context.Background(), none, lib, "", Options{})
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
		t.Fatalf("want a refusal, got %v", err)
	}
	for _, want := range []string{"/tmp: mounted noexec", "/var/tmp: mounted read-only", "/dev/shm: mounted noexec"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/root/tmp", none))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".safeattach") || strings.HasPrefix(e.Name(), ".attach_pid") {
			t.Errorf("left in the container's /tmp: %s", e.Name())
		}
	}
}

// TestLiveUnreadableAgentIsDelivered: root loads an agent kept in a 0700
// root directory into a JVM running as nobody. The JVM could not open the
// original; it gets a copy it can read, never the dlopen error.
func TestLiveUnreadableAgentIsDelivered(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{RunAs: testenv.Nobody})
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(private, "librecord.so")
	copyFile(t, testenv.BuildAgent(t, testenv.AgentRecordOptions), agent, 0)
	out := filepath.Join(p.Dir, "opts.txt")
	res, err := Load(context.Background(), p.PID, agent, "out="+out, Options{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !strings.HasPrefix(res.LoadedFrom, "/tmp/.safeattach/") {
		t.Errorf("loaded from %q", res.LoadedFrom)
	}
	if got, _ := os.ReadFile(out); string(got) != "out="+out {
		t.Errorf("the agent did not run as testenv.Nobody: %q", got)
	}
	// The copy is root's, readable by all, writable by none but root.
	var st unix.Stat_t
	if err := unix.Stat(res.LoadedFrom, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o644 {
		t.Errorf("copy %s: uid %d mode %o (%v)", res.LoadedFrom, st.Uid, st.Mode&0o777, err)
	}
}

// TestDeliveryRefusesAForeignStore: a store directory planted by another
// user (who could then swap what is loaded) is not used.
func TestDeliveryRefusesAForeignStore(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	planted := filepath.Join(root, storeDir)
	if err := os.Mkdir(planted, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chown(planted, testenv.Nobody, testenv.Nobody)
	base, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(base)
	if _, err := ownDir(base, storeDir); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("planted store: %v", err)
	}
	os.Remove(planted)
	os.Symlink("/etc", planted)
	if _, err := ownDir(base, storeDir); err == nil {
		t.Error("a symlinked store was used")
	}
}

// TestDeliveryOneCopyPerContent: the same bytes delivered under two file
// names make one copy; the second delivery finds the first.
func TestDeliveryOneCopyPerContent(t *testing.T) {
	root := t.TempDir()
	content := []byte("\x7fELF the same agent bytes")
	sum := sha256.Sum256(content)
	r := &preflight.Report{}
	r.Process.Root = root
	first := &delivery{}
	if err := first.storeIn(context.Background(), r, &preflight.Agent{RealPath: "/a/libasyncProfiler.so", SHA256: hex.EncodeToString(sum[:])}, content, "/"); err != nil {
		t.Fatal(err)
	}
	defer first.lock.Close()
	second := &delivery{}
	if err := second.storeIn(context.Background(), r, &preflight.Agent{RealPath: "/b/renamed-profiler.so", SHA256: hex.EncodeToString(sum[:])}, content, "/"); err != nil {
		t.Fatal(err)
	}
	defer second.lock.Close()
	if second.inTarget != first.inTarget || second.created {
		t.Errorf("second delivery %s (created %v), first %s", second.inTarget, second.created, first.inTarget)
	}
}
