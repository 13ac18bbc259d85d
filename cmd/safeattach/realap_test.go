package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestRealAsyncProfiler runs the asprof-parity paths against a real
// async-profiler build ($ASYNC_PROFILER_HOME): the agent's own reason for
// a bad event, and -o pprof read by go tool pprof.
func TestRealAsyncProfiler(t *testing.T) {
	lib := testenv.AsyncProfiler(t)
	t.Parallel()
	bin := testenv.BuildCLI(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 2})
	pid := fmt.Sprint(p.PID)
	out, err := exec.Command(bin, "profile", "--lib", lib, "-e", "nosuch", "-d", "1", pid).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Unsupported event type") {
		t.Errorf("-e nosuch: %v\n%s", err, out)
	}
	pb := filepath.Join(t.TempDir(), "cpu.pb.gz")
	if out, err := exec.Command(bin, "profile", "--lib", lib, "-e", "itimer", "-d", "3", "-o", "pprof", "-f", pb, pid).CombinedOutput(); err != nil {
		t.Fatalf("-o pprof: %v\n%s", err, out)
	}
	top, err := exec.Command(testenv.LookPath(t, "go"), "tool", "pprof", "-top", pb).CombinedOutput()
	if err != nil || !strings.Contains(string(top), "Target.churn") {
		t.Errorf("go tool pprof -top: %v\n%s", err, top)
	}
}
