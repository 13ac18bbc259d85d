package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveInterruptedProfileStopsTheProfiler: `profile -d 30` interrupted
// once profiling runs (its first --progress line) by several signals —
// SIGINT to the process, then to its process group, as `timeout -s INT`
// sends them (the second taken on its own, not merged into the first:
// what happened one time in three); SIGINT and SIGTERM at once; five
// SIGINTs each taken on its own; four spread over 8 ms (the stop takes
// milliseconds) — exits 0 within stopBound, having written what was
// collected ("stopped early"), says at most once that it is already
// stopping, and leaves no profiler running: `profile status` says it is
// not active. A second signal used to exit at once (130/143) with no
// file, leaving the profiler running until its timeout= (~40 s), which
// refused the next profile of the JVM.
func TestLiveInterruptedProfileStopsTheProfiler(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildCLI(t)
	lib := testenv.ProfilerOrLookalike(t)
	type shot struct {
		sig   syscall.Signal
		group bool          // to the process group, not the process
		after time.Duration // after the previous one
		taken bool          // once the previous one was taken by the process
	}
	int2 := shot{syscall.SIGINT, true, 0, true}
	for _, c := range []struct {
		name  string
		shots []shot
	}{
		{"timeout-s-INT", []shot{{syscall.SIGINT, false, 0, false}, int2}},
		{"SIGINT-and-SIGTERM", []shot{{syscall.SIGINT, false, 0, false}, {syscall.SIGTERM, false, 0, false}}},
		{"five-SIGINT", []shot{{syscall.SIGINT, true, 0, false}, int2, int2, int2, int2}},
		{"spread", []shot{{syscall.SIGINT, false, 0, false}, {syscall.SIGINT, true, time.Millisecond, false}, {syscall.SIGTERM, false, 2 * time.Millisecond, false}, {syscall.SIGINT, true, 5 * time.Millisecond, false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pid, run, out := startProfile(t, bin, lib, false)
			from := time.Now()
			var last syscall.Signal
			for _, s := range c.shots {
				time.Sleep(s.after)
				for s.taken && pending(run.PID, last) && time.Since(from) < 5*time.Second {
					runtime.Gosched()
				}
				last = s.sig
				target := run.PID
				if s.group {
					target = -run.PID
				}
				// A spread-out signal may come after the exit.
				if err := syscall.Kill(target, s.sig); err != nil && err != syscall.ESRCH {
					t.Fatal(err)
				}
			}
			code, output, took := exitAfter(t, run, from)
			data, _ := os.ReadFile(out)
			t.Logf("exit %d after %v, %d bytes written", code, took.Round(time.Millisecond), len(data))
			if code != exitOK || !strings.Contains(output, "(stopped early)") || len(data) == 0 {
				t.Errorf("exit %d, %d bytes in %s:\n%s", code, len(data), out, output)
			}
			if n := strings.Count(output, "already stopping"); n > 1 {
				t.Errorf("said %d times that it is already stopping:\n%s", n, output)
			}
			if took > stopBound {
				t.Errorf("stopped %v after the first signal, over the stated %v", took, stopBound)
			}
			stdout, stderr, scode := cli(t, nil, "profile", "status", "--agent", lib, fmt.Sprint(pid))
			if scode != exitOK || !strings.Contains(stdout, "not active") {
				t.Errorf("status after the interrupted profile: exit %d %q %q", scode, stdout, stderr)
			}
		})
	}
}

// startProfile starts a JVM (in a pod of its own, with its own /tmp,
// when inPod) and `profile -d 30` of it into out, and returns once
// profiling runs (the first --progress line). testenv.Start puts the CLI
// in a process group of its own, as timeout(1) does for its child.
func startProfile(t *testing.T, bin, lib string, inPod bool) (pid int, run *testenv.Process, out string) {
	t.Helper()
	if inPod {
		pid = testenv.StartPod(t, testenv.PodSpec{Workers: 1}).PID
	} else {
		pid = testenv.StartJVM(t, testenv.JVMSpec{Workers: 1}).PID
	}
	out = filepath.Join(t.TempDir(), "out.collapsed")
	run = testenv.Start(t, exec.Command(bin, "profile", "--agent", lib, "-e", "itimer", "--progress", "-d", "30", "-f", out, fmt.Sprint(pid)))
	run.WaitOutput(t, "profiling pid", 60*time.Second)
	return pid, run, out
}

// exitAfter waits for the interrupted run to end (a bound far past
// stopBound, not a measure) and returns how and how long after from.
func exitAfter(t *testing.T, run *testenv.Process, from time.Time) (code int, output string, took time.Duration) {
	t.Helper()
	select {
	case <-run.Exited():
	case <-time.After(stopBound + 30*time.Second):
		t.Fatalf("still running %v after the signals:\n%s", time.Since(from), run.Output())
	}
	return run.ExitState().ExitCode(), run.Output(), time.Since(from)
}

// pending reports whether sig waits in pid's shared pending set: sent
// to the process and not yet taken by one of its threads (a second one
// sent meanwhile is merged into it).
func pending(pid int, sig syscall.Signal) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n&(1<<(sig-1)) != 0
		}
	}
	return false
}

// TestLiveInterruptedProfileOfAFrozenJVMSaysWhy: when the profiler cannot
// be stopped — its JVM is frozen (SIGSTOP) when SIGINT and SIGTERM come —
// the command still ends within stopBound, exits 130 and says why (the
// stop did not succeed within attach.StopAfterCancel, and the profiler's
// own timeout= ends it), with no partial output file.
func TestLiveInterruptedProfileOfAFrozenJVMSaysWhy(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildCLI(t)
	lib := testenv.ProfilerOrLookalike(t)
	// In a pod: the stop the frozen JVM takes once thawed writes a file
	// in its /tmp that no one is left to remove.
	pid, run, out := startProfile(t, bin, lib, true)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	for st, _ := (proc.FS{}).Proc(pid).Stat(); st != nil && st.State != 'T'; st, _ = (proc.FS{}).Proc(pid).Stat() {
		runtime.Gosched()
	}
	from := time.Now()
	syscall.Kill(run.PID, syscall.SIGINT)
	syscall.Kill(run.PID, syscall.SIGTERM)
	code, output, took := exitAfter(t, run, from)
	t.Logf("exit %d after %v", code, took.Round(time.Millisecond))
	if code != exitSignalBase+int(syscall.SIGINT) || !strings.Contains(output, "stop did not succeed within") || !strings.Contains(output, "timeout=") {
		t.Errorf("exit %d:\n%s", code, output)
	}
	if took > stopBound {
		t.Errorf("ended %v after the first signal, over the stated %v", took, stopBound)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s was written", out)
	}
}

// TestSignalsHardBound: a clean-up still running the bound after the
// first signal ends the process with 128 + that signal, saying so;
// further signals before then only say once that it is stopping. The
// test binary runs itself as the child: withSignals with a 300 ms bound
// and a clean-up that never ends.
func TestSignalsHardBound(t *testing.T) {
	if os.Getenv("SAFEATTACH_SIGNALS_CHILD") == "1" {
		ctx, _ := withSignals(os.Stderr, 300*time.Millisecond)
		fmt.Println("READY")
		<-ctx.Done()
		fmt.Println("CANCELLED")
		select {} // a clean-up that never ends
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalsHardBound$")
	cmd.Env = append(os.Environ(), "SAFEATTACH_SIGNALS_CHILD=1")
	child := testenv.Start(t, cmd)
	child.WaitOutput(t, "READY", 30*time.Second)
	from := time.Now()
	syscall.Kill(child.PID, syscall.SIGTERM)
	child.WaitOutput(t, "CANCELLED", 30*time.Second)
	for range 3 {
		syscall.Kill(child.PID, syscall.SIGINT)
	}
	select {
	case <-child.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("not ended:\n%s", child.Output())
	}
	code, output := child.ExitState().ExitCode(), child.Output()
	t.Logf("exit %d after %v", code, time.Since(from).Round(time.Millisecond))
	if code != exitSignalBase+int(syscall.SIGTERM) || !strings.Contains(output, "did not finish within 300ms") || strings.Count(output, "already stopping") != 1 {
		t.Errorf("exit %d:\n%s", code, output)
	}
	if took := time.Since(from); took < 300*time.Millisecond {
		t.Errorf("ended %v after the signal, before its bound", took)
	}
}
