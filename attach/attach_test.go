package attach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

func socketPath(pid int) string { return fmt.Sprintf("/tmp/.java_pid%d", pid) }

// requireNothingSent: no listener was started and no trigger file left.
func requireNothingSent(t *testing.T, p *testenv.Process) {
	t.Helper()
	for _, f := range []string{socketPath(p.PID), fmt.Sprintf("/tmp/.attach_pid%d", p.PID), filepath.Join(p.Dir, fmt.Sprintf(".attach_pid%d", p.PID))} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s exists: something was sent to the target", f)
		}
	}
}

func refusedBy(t *testing.T, err error, rule string) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
		t.Fatalf("want a refusal by %s, got %v", rule, err)
	}
	if !slices.Contains(re.Verdict.Blocking(), rule) {
		t.Fatalf("refused by %v, want %s", re.Verdict.Blocking(), rule)
	}
}

func TestLiveLoadAndJcmd(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	var audit []AuditRecord
	var mu sync.Mutex
	opts := Options{Audit: func(r AuditRecord) { mu.Lock(); audit = append(audit, r); mu.Unlock() }, Caller: "test"}
	res, err := Jcmd(context.Background(), p.PID, "VM.version", opts)
	if err != nil || !strings.Contains(res.Output, "JDK 17") {
		t.Fatalf("jcmd: %v %+v", err, res)
	}
	// Invariant 4: the trigger file is always removed.
	for _, f := range []string{fmt.Sprintf("/tmp/.attach_pid%d", p.PID), filepath.Join(p.Dir, fmt.Sprintf(".attach_pid%d", p.PID))} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("trigger file %s left behind", f)
		}
	}
	// Invariant 1: with the socket present, no further SIGQUIT is sent (a
	// JVM prints a full thread dump for each one it gets): counted when
	// the JVM ends, below.
	for i := 0; i < 3; i++ {
		if _, err := Jcmd(context.Background(), p.PID, "VM.uptime", Options{}); err != nil {
			t.Fatal(err)
		}
	}
	agent := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	rec := filepath.Join(p.Dir, "opts.txt")
	res, err = Load(context.Background(), p.PID, agent, "out="+rec, opts)
	if err != nil || !res.Healthy {
		t.Fatalf("load: %v %+v", err, res)
	}
	if got, _ := os.ReadFile(rec); string(got) != "out="+rec {
		t.Errorf("options %q", got)
	}
	_, err = Load(context.Background(), p.PID, testenv.BuildAgent(t, testenv.AgentFailRC), "", opts)
	var ae *hotspot.AgentError
	if !errors.As(err, &ae) || ae.ReturnCode != 42 {
		t.Errorf("failing agent: %v", err)
	}
	mu.Lock()
	if len(audit) != 3 || audit[0].Outcome != "ok" || audit[1].AgentSHA256 == "" || audit[2].Outcome != "failed" || audit[1].Caller != "test" {
		t.Errorf("audit trail %+v", audit)
	}
	mu.Unlock()
	// The one SIGQUIT the JVM got is the first jcmd's, which started its
	// listener and printed no dump; any other since would have.
	if n := testenv.DumpingSIGQUITs(t, p); n != 0 {
		t.Errorf("the JVM printed %d thread dumps: it received SIGQUIT although its socket existed", n)
	}
}

// The refusals: each is decided before anything reaches the target.
func TestLiveRefusals(t *testing.T) {
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	t.Run("missing-agent", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		_, err := Load(context.Background(), p.PID, filepath.Join(p.Dir, "nope.so"), "", Options{})
		if OutcomeOf(err) != OutcomeInvalid || !strings.Contains(err.Error(), "nope.so: no such file") {
			t.Fatalf("a missing agent: %v", err)
		}
		requireNothingSent(t, p)
	})
	t.Run("no-Agent_OnAttach", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		_, err := Load(context.Background(), p.PID, testenv.BuildAgent(t, testenv.AgentNoOnAttach), "", Options{})
		refusedBy(t, err, "agent-untrusted")
		requireNothingSent(t, p)
	})
	// Invariant 6: an agent file someone else could have replaced is
	// never loaded.
	t.Run("world-writable-agent", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		dir, err := os.MkdirTemp("/var/tmp", "safeattach-ww-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		data, _ := os.ReadFile(fixed)
		ww := filepath.Join(dir, "libagent.so")
		os.WriteFile(ww, data, 0o755)
		os.Chmod(ww, 0o777)
		_, err = Load(context.Background(), p.PID, ww, "", Options{})
		refusedBy(t, err, "agent-untrusted")
		requireNothingSent(t, p)
	})
	t.Run("DisableAttachMechanism", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+DisableAttachMechanism"}})
		_, err := Load(context.Background(), p.PID, fixed, "", Options{})
		refusedBy(t, err, "attach-disabled")
		requireNothingSent(t, p)
	})
	// Invariant: a JVM with -Xrs must still be alive after we were asked
	// to attach to it.
	t.Run("Xrs-without-socket", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-Xrs"}})
		waitFile(t, socketPath(p.PID))
		os.Remove(socketPath(p.PID))
		_, err := Jcmd(context.Background(), p.PID, "VM.version", Options{})
		refusedBy(t, err, "sigquit-not-handled")
		_, err = Load(context.Background(), p.PID, fixed, "", Options{})
		refusedBy(t, err, "sigquit-not-handled")
		testenv.RequireNoSIGQUITTaken(t, p)
	})
	t.Run("Xrs-with-socket-works", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-Xrs"}})
		waitFile(t, socketPath(p.PID))
		if _, err := Jcmd(context.Background(), p.PID, "VM.version", Options{}); err != nil {
			t.Fatal(err)
		}
	})
	// Invariant: a non-JVM must never receive SIGQUIT.
	t.Run("non-JVM", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartSigquitCatcher(t)
		_, err := Load(context.Background(), p.PID, fixed, "", Options{})
		refusedBy(t, err, "not-a-jvm")
		_, err = Jcmd(context.Background(), p.PID, "VM.version", Options{})
		refusedBy(t, err, "not-a-jvm")
		testenv.SettleSigquitCatcher(t, p)
		if strings.Contains(p.Output(), testenv.SigquitMarker) {
			t.Fatal("the non-JVM received SIGQUIT")
		}
	})
	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		syscall.Kill(p.PID, syscall.SIGSTOP)
		waitState(t, p.PID, 'T')
		start := time.Now()
		_, err := Jcmd(context.Background(), p.PID, "VM.version", Options{Timeout: 30 * time.Second})
		refusedBy(t, err, "process-stopped")
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("refusing a stopped JVM took %v", took)
		}
		requireNothingSent(t, p)
	})
	t.Run("foreign-socket", func(t *testing.T) {
		t.Parallel()
		testenv.RequireRoot(t)
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		f, err := os.Create(socketPath(p.PID))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { os.Remove(socketPath(p.PID)) })
		os.Chown(socketPath(p.PID), 1234, 1234)
		_, err = Jcmd(context.Background(), p.PID, "VM.version", Options{})
		refusedBy(t, err, "attach-socket-untrusted")
	})
	t.Run("unknown-pid", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartSleeper(t)
		pid := p.PID
		p.Cmd.Process.Kill()
		<-p.Exited()
		if _, err := Jcmd(context.Background(), pid, "VM.version", Options{}); err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("dead pid: %v", err)
		}
	})
}

// Invariant: a hung agent costs the caller only its deadline, and the
// caller gets a hang report naming the agent's thread.
func TestLiveHungAgent(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	deadline := 3 * time.Second
	start := time.Now()
	_, err := Load(context.Background(), p.PID, testenv.BuildAgent(t, testenv.AgentBlockForever), "", Options{Timeout: deadline})
	took := time.Since(start)
	var he *HangError
	if !errors.As(err, &he) || !errors.Is(err, hotspot.ErrTimeout) {
		t.Fatalf("want a HangError, got %v", err)
	}
	if took > deadline+3*time.Second {
		t.Errorf("a %v deadline cost %v", deadline, took)
	}
	if he.Report == nil || he.Report.Pattern != "agent-stuck-in-onattach" || !strings.Contains(he.Report.Conclusion, "Attach Listener") || !strings.Contains(he.Report.Conclusion, "libblock_forever.so") {
		t.Errorf("hang report: %+v", he.Report)
	}
	if !p.Alive() {
		t.Error("the JVM died")
	}
}

func TestLiveJVMExitsMidLoad(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	done := make(chan error, 1)
	go func() {
		_, err := Load(context.Background(), p.PID, testenv.BuildAgent(t, testenv.AgentBlockForever), "", Options{Timeout: 60 * time.Second})
		done <- err
	}()
	// In flight: the JVM has mapped the agent, whose Agent_OnAttach
	// never returns.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(mapsOfPID(t, p.PID), "libblock_forever.so") {
		if time.Now().After(deadline) {
			t.Fatal("the JVM never loaded the agent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(p.PID, syscall.SIGKILL)
	select {
	case err := <-done:
		if !errors.Is(err, hotspot.ErrTargetExited) && !errors.Is(err, hotspot.ErrConnectionClosed) {
			t.Errorf("want target exited, got %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no return after the JVM died")
	}
}

func TestLiveAckIsExplicit(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+DisableAttachMechanism"}})
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	// Acknowledging another rule does not help.
	_, err := Load(context.Background(), p.PID, fixed, "", Options{Acks: []string{"jemalloc-heap-profiler"}})
	refusedBy(t, err, "attach-disabled")
	// Rules that protect the target cannot be acknowledged at all: the
	// call fails before anything is read, and says why.
	for _, hard := range []string{"attach-disabled", "not-a-jvm", "sigquit-not-handled"} {
		_, err = Load(context.Background(), p.PID, fixed, "", Options{Acks: []string{hard}, Timeout: 3 * time.Second})
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "cannot be acknowledged") {
			t.Errorf("--ack %s: %v", hard, err)
		}
	}
	if !p.Alive() {
		t.Error("JVM died")
	}
}

// TestLiveContainer attaches to a JVM in its own pid and mount namespaces
// with a private /tmp, as in a container: the namespace pid names its
// files, paths go through /proc/<pid>/root, and the agent is delivered
// into the container's content-addressed store.
func TestLiveContainer(t *testing.T) {
	t.Parallel()
	jvm := startContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	r, err := Jcmd(context.Background(), jvm, "VM.version", Options{})
	if err != nil {
		t.Fatalf("jcmd into the container: %v", err)
	}
	if !strings.Contains(r.Output, "JDK 17") {
		t.Errorf("output %q", r.Output)
	}
	if _, err := os.Stat(socketPath(1)); err == nil && jvm != 1 {
		t.Error("the container's socket leaked into the host's /tmp")
	}
	agent := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	// The agent writes into its /tmp, which is the container's.
	res, err := Load(context.Background(), jvm, agent, "out=/tmp/opts.txt", Options{})
	if err != nil || !res.Healthy {
		t.Fatalf("load into the container: %v", err)
	}
	root := fmt.Sprintf("/proc/%d/root/tmp", jvm)
	if got, _ := os.ReadFile(root + "/opts.txt"); string(got) != "out=/tmp/opts.txt" {
		t.Errorf("agent options inside the container: %q", got)
	}
	// The copy stays, content-addressed, while the JVM maps it.
	if !strings.HasPrefix(res.LoadedFrom, "/tmp/.safeattach/"+sha256File(t, agent)+"/") {
		t.Errorf("loaded from %q", res.LoadedFrom)
	}
	if got := storeEntries(jvm, "/tmp"); len(got) != 1 {
		t.Errorf("copies in the container: %v", got)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Lstat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

func waitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == state {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %c", pid, state)
}

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
