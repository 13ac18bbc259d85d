package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

func TestInhouseTool(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "inhouse-tool")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tc := testenv.Library(t, "libtcmalloc.so.4")
	risky := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + tc, "HEAPPROFILE=hp"}})
	out, err := exec.Command(bin, fmt.Sprint(risky.PID), testenv.BuildAgent(t, testenv.AgentAffectedLookalike)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "tcmalloc-heap-profiler") {
		t.Errorf("affected agent on a tcmalloc-profiling JVM: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, fmt.Sprint(risky.PID), testenv.BuildAgent(t, testenv.AgentFixedLookalike)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the JVM answers") {
		t.Errorf("fixed agent: %v\n%s", err, out)
	}
}
