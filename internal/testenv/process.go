package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a target started by a test. The test's cleanup kills it.
type Process struct {
	Cmd *exec.Cmd
	PID int
	Dir string // its working directory, private to the test

	mu     sync.Mutex
	output bytes.Buffer
	exited chan struct{}
}

// Output returns what the process printed so far (stdout and stderr).
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// Alive reports whether the process has not exited (a zombie counts as
// exited: it was reaped by our Wait goroutine or is about to be).
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitState returns how the process ended; nil while it runs.
func (p *Process) ExitState() *os.ProcessState {
	if p.Alive() {
		return nil
	}
	return p.Cmd.ProcessState
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.output.Len() < 1<<20 {
		w.p.output.Write(b)
	}
	return len(b), nil
}

// Start runs cmd in a fresh working directory, in its own process group,
// and registers a cleanup that SIGKILLs the group and reaps it. A target
// hung on purpose is killed the same way.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	p := &Process{Cmd: cmd, Dir: cmd.Dir, exited: make(chan struct{})}
	cmd.Stdout = lockedWriter{p}
	cmd.Stderr = lockedWriter{p}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// If the test binary dies, the kernel kills the target too.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p.PID = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		select {
		case <-p.exited:
			// A JVM killed with SIGKILL leaves its attach socket in /tmp;
			// a later process given the same pid (a JVM with attach
			// disabled, or one not yet listening) would appear to have
			// been attached to.
			for _, f := range []string{".java_pid", ".attach_pid"} {
				os.Remove(fmt.Sprintf("/tmp/%s%d", f, p.PID))
			}
		case <-time.After(10 * time.Second):
			t.Errorf("pid %d did not exit after SIGKILL", p.PID)
		}
	})
	return p
}

// WaitOutput waits until the process has printed substr, or fails the test
// after timeout (a bound, not a performance assertion).
func (p *Process) WaitOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), substr) {
			return
		}
		if !p.Alive() {
			t.Fatalf("pid %d exited (%v) before printing %q; output:\n%s", p.PID, p.Cmd.ProcessState, substr, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d did not print %q within %v; output:\n%s", p.PID, substr, timeout, p.Output())
}

// JVMSpec describes a target JVM.
type JVMSpec struct {
	JDK JDK
	// Env is added to a minimal environment (PATH, HOME, LANG), the way a
	// service manager starts a service: LD_PRELOAD, MALLOC_CONF,
	// HEAPPROFILE, JAVA_TOOL_OPTIONS...
	Env []string
	// JVMArgs go before the main class (-Xrs, -XX:...).
	JVMArgs []string
	// Workers is the number of malloc-churning threads.
	Workers int
	// Mode is what the workers do instead of churning native memory:
	// "wait" (parked in Object.wait) or "gc" (back-to-back full GCs).
	Mode string
	// NoWait returns as soon as the process started, without waiting for
	// READY (for JVMs that are expected to fail or be stopped early).
	NoWait bool
	// RunAs, if not zero, is the uid (and gid) the JVM runs as, in a
	// working directory that user owns (needs root).
	RunAs uint32
}

// StartJVM starts the Java target program and waits until it prints
// READY. Small heaps keep many parallel JVMs within a CI machine.
func StartJVM(t testing.TB, spec JVMSpec) *Process {
	t.Helper()
	if spec.JDK.Home == "" {
		spec.JDK = JDK17(t)
	}
	cp := TargetClasspath(t, spec.JDK)
	args := []string{"-Xmx64m", "-Xss512k", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-cp", cp}
	args = append(args, spec.JVMArgs...)
	args = append(args, "Target", fmt.Sprint(spec.Workers))
	if spec.Mode != "" {
		args = append(args, spec.Mode)
	}
	cmd := exec.Command(filepath.Join(spec.JDK.Home, "bin", "java"), args...)
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + os.TempDir(), "LANG=C.UTF-8"}, spec.Env...)
	if spec.RunAs != 0 {
		RequireRoot(t)
		// t.TempDir's parent is private to root; this one must be the
		// JVM user's own.
		dir, err := os.MkdirTemp("", "safeattach-jvm-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		cmd.Dir = dir
		if err := os.Chown(cmd.Dir, int(spec.RunAs), int(spec.RunAs)); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: spec.RunAs, Gid: spec.RunAs}}
	}
	p := Start(t, cmd)
	if !spec.NoWait {
		p.WaitOutput(t, "READY", 60*time.Second)
	}
	return p
}

// StartSleeper starts a plain non-JVM process that sleeps.
func StartSleeper(t testing.TB) *Process {
	t.Helper()
	return Start(t, exec.Command("/bin/sleep", "3600"))
}

// Threads lists the thread names of a live process.
func Threads(pid int) []string {
	var names []string
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, task.Name()))
		if err == nil {
			names = append(names, strings.TrimSpace(string(b)))
		}
	}
	return names
}

// DirEntries lists the names in dir, for "created nothing" assertions.
func DirEntries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// SigquitMarker is what StartSigquitCatcher prints when it gets SIGQUIT.
const SigquitMarker = "GOT SIGQUIT"

// StartSigquitCatcher starts a non-JVM that handles SIGQUIT by printing
// SigquitMarker: the process that must never be signalled, and whose
// survival alone would not prove it was not.
func StartSigquitCatcher(t testing.TB) *Process {
	t.Helper()
	prog := BuildC(t, "sigquit_catcher", `
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static void on_quit(int s) { (void)s; write(1, "`+SigquitMarker+`\n", 12); }
int main(void) { signal(SIGQUIT, on_quit); printf("READY\n"); fflush(stdout); for (;;) pause(); }
`)
	p := Start(t, exec.Command(prog))
	p.WaitOutput(t, "READY", 10*time.Second)
	return p
}
