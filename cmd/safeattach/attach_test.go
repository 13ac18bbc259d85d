package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
)

func TestLoadExitCodes(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	rec := filepath.Join(p.Dir, "o.txt")
	stdout, stderr, code := runCLI(t, "load", pid, testenv.BuildAgent(t, testenv.AgentRecordOptions), "out="+rec)
	if code != exitOK || !strings.Contains(stdout, "the JVM answers") {
		t.Errorf("load: exit %d %q %q", code, stdout, stderr)
	}
	if _, stderr, code := runCLI(t, "load", pid, testenv.BuildAgent(t, testenv.AgentFailRC)); code != exitFailed || !strings.Contains(stderr, "return code 42") {
		t.Errorf("failing agent: exit %d %q", code, stderr)
	}
	if stdout, stderr, code := runCLI(t, "load", pid, filepath.Join(p.Dir, "missing.so")); code != exitError || !strings.Contains(stderr, "missing.so: no such file") {
		t.Errorf("missing agent: exit %d %q %q", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, "load", "--timeout", "3s", pid, testenv.BuildAgent(t, testenv.AgentBlockForever))
	if code != exitTimedOut || !strings.Contains(stdout, "HANG REPORT") || !strings.Contains(stdout, "Attach Listener") {
		t.Errorf("hung agent: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestJcmdAndProfileCLI(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	pid := fmt.Sprint(p.PID)
	stdout, _, code := runCLI(t, "jcmd", pid, "VM.version")
	if code != exitOK || !strings.Contains(stdout, "JDK 17") {
		t.Errorf("jcmd: %d %q", code, stdout)
	}
	// Arguments after the command belong to it.
	stdout, _, code = runCLI(t, "jcmd", pid, "Thread.print", "-l")
	if code != exitOK || !strings.Contains(stdout, "Locked ownable synchronizers") {
		t.Errorf("jcmd Thread.print -l: %d", code)
	}
	if _, _, code := runCLI(t, "jcmd", pid, "No.such.command"); code != exitFailed {
		t.Errorf("unknown jcmd: exit %d", code)
	}
	out := filepath.Join(t.TempDir(), "p.collapsed")
	stdout, stderr, code := runCLI(t, "profile", "--agent", testenv.BuildAgent(t, testenv.AgentFixedLookalike), "-d", "2", "-e", "cpu", "-f", out, "--progress", pid)
	if code != exitOK || !strings.Contains(stderr, "wrote "+out) || !strings.Contains(stderr, "profiling pid") {
		t.Errorf("profile: exit %d %q %q", code, stdout, stderr)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "Target.churn") {
		t.Errorf("profile file %q", data)
	}
	// A mistyped --agent says so (exit 1), not a refusal of the target.
	if _, stderr, code := runCLI(t, "profile", "--agent", filepath.Join(t.TempDir(), "none.so"), "-d", "1", "-f", out, pid); code != exitError || !strings.Contains(stderr, "none.so: no such file") {
		t.Errorf("missing profiler: exit %d %q", code, stderr)
	}
	// -f - writes the profile itself to stdout.
	stdout, stderr, code = runCLI(t, "profile", "--agent", testenv.BuildAgent(t, testenv.AgentFixedLookalike), "-d", "1", "-f", "-", pid)
	if code != exitOK || !strings.HasPrefix(stdout, "java.lang.Thread.run;Target.churn") {
		t.Errorf("profile -f -: exit %d %q %q", code, stdout, stderr)
	}
}

// TestProfileOutputOwnedBySudoUser: under sudo the profile belongs to the
// user who ran sudo, with the mode asked for.
func TestProfileOutputOwnedBySudoUser(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	out := filepath.Join(t.TempDir(), "p.collapsed")
	cmd := exec.Command(testenv.BuildCLI(t), "profile", "--agent", testenv.BuildAgent(t, testenv.AgentFixedLookalike), "-d", "1", "--mode", "0640", "-f", out, fmt.Sprint(p.PID))
	cmd.Env = append(os.Environ(), "SUDO_UID=65534", "SUDO_GID=65534")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil || st.Uid != 65534 || st.Gid != 65534 || st.Mode&0o777 != 0o640 {
		t.Errorf("uid %d gid %d mode %o (%v)", st.Uid, st.Gid, st.Mode&0o777, err)
	}
}

func TestDiagnoseCLI(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	stdout, _, code := runCLI(t, "diagnose", "--sample", "300ms", fmt.Sprint(p.PID))
	if code != exitOK || !strings.HasPrefix(stdout, "DIAGNOSIS") || !strings.Contains(stdout, "not hung") || strings.Contains(stdout, "HANG REPORT") || strings.Contains(stdout, "HUNG") {
		t.Errorf("idle JVM: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runCLI(t, "diagnose", "--json", "--sample", "100ms", fmt.Sprint(p.PID))
	if code != exitOK || !strings.Contains(stdout, `"verdict": "idle"`) {
		t.Errorf("json: exit %d %.200s", code, stdout)
	}
}

// TestDiagnoseWatchCLI: diagnose --watch gives the attach watcher's
// judgement for a process someone else attached to: nothing on a healthy
// JVM, and the loader-lock deadlock within seconds on a JVM that an
// unchecked attach (the protocol alone, as jattach does) has hung.
func TestDiagnoseWatchCLI(t *testing.T) {
	t.Parallel()
	healthy := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	if stdout, _, code := runCLI(t, "diagnose", "--watch", "1s", fmt.Sprint(healthy.PID)); code != exitOK || !strings.Contains(stdout, "no deadlock recognised") {
		t.Errorf("healthy JVM: exit %d %q", code, stdout)
	}
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 4, Env: []string{"LD_PRELOAD=" + testenv.Library(t, "libtcmalloc.so.4"), "HEAPPROFILE=hp"}})
	tg, err := hotspot.NewJVM(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	tg.Feature = 17
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		if hotspot.EnsureListener(ctx, tg) == nil {
			hotspot.NewClient(tg).Load(ctx, testenv.BuildAgent(t, testenv.AgentAffectedLookalike), "")
		}
	}()
	stdout, _, code := runCLI(t, "diagnose", "--watch", "20s", fmt.Sprint(p.PID))
	if code != exitTimedOut || !strings.Contains(stdout, "deadlock recognised after") || !strings.Contains(stdout, "loader lock") {
		t.Errorf("hung JVM: exit %d\n%s", code, stdout)
	}
}

// TestProfileAsAsprof: the agent's messages reach the caller (and an
// agent error is the error, exit 3, with nothing in the application's
// log), -d takes asprof's and Go's forms, and %p/%t expand in -f.
func TestProfileAsAsprof(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	_, stderr, code := runCLI(t, "profile", "--agent", lib, "-e", "nosuch", "-d", "1", pid)
	if code != exitFailed || !strings.Contains(stderr, "[ERROR] Unsupported event type") || !strings.Contains(stderr, "safeattach: Unsupported event type") {
		t.Errorf("-e nosuch: exit %d\n%s", code, stderr)
	}
	dir := t.TempDir()
	stdout, stderr, code := runCLI(t, "profile", "--agent", lib, "-d", "1s", "-f", filepath.Join(dir, "p-%p-%t.collapsed"), pid)
	if code != exitOK || !strings.Contains(stderr, "Profiling started") {
		t.Errorf("profile: exit %d %q %q", code, stdout, stderr)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "p-"+pid+"-2*.collapsed")); len(m) != 1 {
		t.Errorf("placeholders not expanded: %v", testenv.DirEntries(t, dir))
	}
	if strings.Contains(p.Output(), "Profiling started") || strings.Contains(p.Output(), "Unsupported") {
		t.Errorf("the agent's messages reached the application's output:\n%s", p.Output())
	}
}
