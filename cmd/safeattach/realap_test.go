package main

import (
	"fmt"
	"os"
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
	out, err := exec.Command(bin, "profile", "--agent", lib, "-e", "nosuch", "-d", "1", pid).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Unsupported event type") {
		t.Errorf("-e nosuch: %v\n%s", err, out)
	}
	pb := filepath.Join(t.TempDir(), "cpu.pb.gz")
	if out, err := exec.Command(bin, "profile", "--agent", lib, "-e", "itimer", "-d", "3", "-o", "pprof", "-f", pb, pid).CombinedOutput(); err != nil {
		t.Fatalf("-o pprof: %v\n%s", err, out)
	}
	top, err := exec.Command(testenv.LookPath(t, "go"), "tool", "pprof", "-top", pb).CombinedOutput()
	if err != nil || !strings.Contains(string(top), "Target.churn") {
		t.Errorf("go tool pprof -top: %v\n%s", err, top)
	}
	// asprof's defaults: no -o is the agent's text output (no "summary",
	// which 4.5 rejects), and --alloc alone profiles allocations only (no
	// event= is sent unless asked).
	out, err = exec.Command(bin, "profile", "--agent", lib, "-d", "1", pid).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Unknown argument") || !strings.Contains(string(out), "Total samples") {
		t.Errorf("default output: %v\n%s", err, out)
	}
	// A JVM that allocates on the Java heap: the churning one allocates
	// little there (its work is native), and on a loaded machine its few
	// TLAB refills gave no sample at all in a second.
	allocator := testenv.StartJVM(t, testenv.JVMSpec{Workers: 2, Mode: "contend"})
	alloc := filepath.Join(t.TempDir(), "alloc.collapsed")
	out, err = exec.Command(bin, "profile", "--agent", lib, "--alloc", "1", "-d", "2", "-f", alloc, fmt.Sprint(allocator.PID)).CombinedOutput()
	data, _ := os.ReadFile(alloc)
	if err != nil || !strings.Contains(string(data), "_[i]") && !strings.Contains(string(data), "_[k]") {
		t.Errorf("--alloc 1 alone: %v\n%s\n%.300s", err, out, data)
	}
}
