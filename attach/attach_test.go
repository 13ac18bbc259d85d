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

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
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
		// A door (what a profiling session opens) says so in its audit too.
		var audit []AuditRecord
		_, err = OpenDoor(context.Background(), p.PID, DoorRequest{Lib: filepath.Join(p.Dir, "nope.so"),
			Options: Options{Audit: func(r AuditRecord) { audit = append(audit, r) }}})
		if OutcomeOf(err) != OutcomeInvalid || len(audit) != 1 || audit[0].Outcome != OutcomeInvalid || audit[0].Verdict != "none" {
			t.Errorf("a door to a missing agent: %v, audit %+v", err, audit)
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
	for !strings.Contains(testenv.Maps(t, p.PID), "libblock_forever.so") {
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
	_, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
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
	if got := testenv.StoreEntries(jvm, "/tmp"); len(got) != 1 {
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
