package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// syncMarker is what the catcher prints when it gets SIGUSR1.
const syncMarker = "SYNC"

// StartSigquitCatcher starts a non-JVM that handles SIGQUIT by printing
// SigquitMarker: the process that must never be signalled, and whose
// survival alone would not prove it was not. SettleSigquitCatcher says
// when a SIGQUIT sent to it would have shown.
func StartSigquitCatcher(t testing.TB) *Process {
	t.Helper()
	prog := BuildC(t, "sigquit_catcher", `
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void on_quit(int s) { (void)s; write(1, "`+SigquitMarker+`\n", sizeof "`+SigquitMarker+`"); }
static void on_sync(int s) { (void)s; write(1, "`+syncMarker+`\n", sizeof "`+syncMarker+`"); }
int main(void) {
	/* Each handler blocks the other: a SIGQUIT taken first is printed
	 * before a SIGUSR1 is. */
	struct sigaction quit, sync;
	memset(&quit, 0, sizeof quit);
	memset(&sync, 0, sizeof sync);
	quit.sa_handler = on_quit;
	sync.sa_handler = on_sync;
	quit.sa_flags = sync.sa_flags = SA_RESTART;
	sigemptyset(&quit.sa_mask);
	sigaddset(&quit.sa_mask, SIGUSR1);
	sigemptyset(&sync.sa_mask);
	sigaddset(&sync.sa_mask, SIGQUIT);
	sigaction(SIGQUIT, &quit, 0);
	sigaction(SIGUSR1, &sync, 0);
	printf("READY\n");
	fflush(stdout);
	for (;;) pause();
}
`)
	p := Start(t, exec.Command(prog))
	p.WaitOutput(t, "READY", 10*time.Second)
	return p
}

// SettleSigquitCatcher returns once every SIGQUIT sent to a
// StartSigquitCatcher process before the call has been handled, its
// SigquitMarker printed: it sends SIGUSR1 and waits for the catcher's
// answer. The kernel hands the catcher's one thread its pending signals
// lowest number first, SIGQUIT (3) before SIGUSR1 (10), and each handler
// blocks the other, so the answer is printed after the marker of any
// SIGQUIT sent before. It fails the test after 10 s.
func SettleSigquitCatcher(t testing.TB, p *Process) {
	t.Helper()
	before := strings.Count(p.Output(), syncMarker+"\n")
	if err := syscall.Kill(p.PID, syscall.SIGUSR1); err != nil {
		t.Fatalf("SIGUSR1 to the catcher %d: %v", p.PID, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Output(), syncMarker+"\n") == before {
		if !p.Alive() {
			t.Fatalf("the catcher %d exited (%v); output:\n%s", p.PID, p.Cmd.ProcessState, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the catcher %d did not answer SIGUSR1 within 10 s; output:\n%s", p.PID, p.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SignalPending reports whether sig is pending for the process: in its
// shared queue (a kill) or in one of its threads' own (a tgkill). A
// process that is gone has nothing pending.
func SignalPending(pid int, sig syscall.Signal) bool {
	bit := uint64(1) << (uint(sig) - 1)
	masks := func(path, field string) uint64 {
		data, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				m, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				return m
			}
		}
		return 0
	}
	if masks(fmt.Sprintf("/proc/%d/status", pid), "ShdPnd")&bit != 0 {
		return true
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		if masks(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()), "SigPnd")&bit != 0 {
			return true
		}
	}
	return false
}

// WaitSignalTaken waits until no sig is pending for the process: every
// one sent before the call has been taken by one of its threads (its
// handler has run, or its default action has begun). It fails the test
// after 10 s (a signal every thread blocks stays pending).
func WaitSignalTaken(t testing.TB, pid int, sig syscall.Signal) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for SignalPending(pid, sig) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: %v still pending after 10 s", pid, sig)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// DumpingSIGQUITs ends a HotSpot JVM (one that handles its signals: not
// run with -Xrs) and returns how many SIGQUITs sent to it before the call
// made it print a thread dump: every SIGQUIT does, unless it starts the
// attach listener (a trigger file exists, or the listener's socket is
// gone). It sends one SIGQUIT of its own first and fails the test unless
// that one shows: a zero is then not a JVM that prints no dumps.
//
// The count covers every SIGQUIT sent before the call. It waits until
// none is pending in the kernel (each has reached the JVM's handler,
// which counts it for the Signal Dispatcher thread; two pending at once
// would be one), sends its own and waits again, then sends SIGTERM. The
// dispatcher serves the counted signals lowest number first, one at a
// time, and prints a SIGQUIT's (3) dump itself before it hands SIGTERM
// (15) to the Java handler that exits: by the exit — which must be that
// handler's, 143 — every dump is in the output. It fails the test after
// 10 s of a pending signal, or 30 s without the exit.
func DumpingSIGQUITs(t testing.TB, p *Process) int {
	t.Helper()
	before := strings.Count(p.Output(), "Full thread dump")
	WaitSignalTaken(t, p.PID, syscall.SIGQUIT)
	if err := syscall.Kill(p.PID, syscall.SIGQUIT); err != nil {
		t.Fatalf("SIGQUIT to JVM %d: %v", p.PID, err)
	}
	WaitSignalTaken(t, p.PID, syscall.SIGQUIT)
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to JVM %d: %v", p.PID, err)
	}
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("JVM %d did not exit within 30 s of SIGTERM", p.PID)
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("JVM %d ended %v, not through its SIGTERM handler (exit 143): its thread dumps cannot be counted; output:\n%s", p.PID, p.Cmd.ProcessState, p.Output())
	}
	dumps := strings.Count(p.Output(), "Full thread dump")
	if dumps == before {
		t.Fatalf("JVM %d printed no thread dump for the test's own SIGQUIT: a count of its dumps would prove nothing; output:\n%s", p.PID, p.Output())
	}
	return dumps - 1
}

// RequireNoSIGQUITTaken fails the test if a SIGQUIT was sent, before the
// call, to a process that leaves SIGQUIT to its default action (a JVM
// run with -Xrs), where it ends the process: it stops the process with
// SIGSTOP, waits until it is stopped, and resumes it with SIGCONT. The
// kernel hands a thread its pending signals lowest number first, and a
// process whose SIGQUIT (3) was taken is ending and stops no more; one
// that is stopped takes no signal until SIGCONT, so a SIGQUIT that no
// thread took yet is still pending then. It fails the test after 10 s.
func RequireNoSIGQUITTaken(t testing.TB, p *Process) {
	t.Helper()
	if err := syscall.Kill(p.PID, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP to %d: %v", p.PID, err)
	}
	defer syscall.Kill(p.PID, syscall.SIGCONT)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !p.Alive() {
			t.Fatalf("pid %d ended (%v) instead of stopping: it was sent SIGQUIT; output:\n%s", p.PID, p.Cmd.ProcessState, p.Output())
		}
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == 'T' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not stop within 10 s of SIGSTOP: it was sent SIGQUIT, and is ending", p.PID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if SignalPending(p.PID, syscall.SIGQUIT) {
		t.Fatalf("pid %d has a SIGQUIT pending", p.PID)
	}
}
