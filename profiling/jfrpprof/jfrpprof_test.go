package jfrpprof

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
)

// recordJFR makes a real JFR recording of a busy JVM with the JDK's own
// Flight Recorder (the format async-profiler's -o jfr writes too).
func recordJFR(t *testing.T) (data []byte, start, end time.Time) {
	t.Helper()
	// Threads computing in Java: JFR's method sampler sees only those (a
	// thread in native code is a NativeMethodSample, not CPU time).
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 2, Mode: "spin"})
	out := filepath.Join(t.TempDir(), "rec.jfr")
	ctx := context.Background()
	start = time.Now()
	if _, err := attach.Jcmd(ctx, p.PID, "JFR.start name=t settings=profile", attach.Options{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, err := attach.Jcmd(ctx, p.PID, "JFR.dump name=t filename="+out, attach.Options{}); err != nil {
		t.Fatal(err)
	}
	end = time.Now()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data, start, end
}

// TestConvertRealRecording: a JDK Flight Recorder file becomes a pprof
// profile that go tool pprof reads, whose top frames are the JVM's busy
// code; and folded stacks that count every CPU sample in the recording,
// drawn as collapsed, flat and HTML with the busy code on top (one
// recording for all: each costs a JVM and three seconds).
func TestConvertRealRecording(t *testing.T) {
	t.Parallel()
	data, start, end := recordJFR(t)
	t.Run("folded", func(t *testing.T) { checkFolded(t, data, start, end) })
	ps, err := Convert(data, start, end)
	if err != nil {
		t.Fatal(err)
	}
	cpu := mustPick(t, ps, "cpu")
	if cpu.Metric != "process_cpu" || len(cpu.Profile.Sample) == 0 {
		var metrics []string
		for _, p := range ps {
			metrics = append(metrics, fmt.Sprintf("%s (%d samples)", p.Metric, len(p.Profile.Sample)))
		}
		t.Fatalf("cpu profile: %s; have %v", cpu.Metric, metrics)
	}
	enc, err := Encode(cpu.Profile)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cpu.pb.gz")
	if err := os.WriteFile(file, enc, 0o644); err != nil {
		t.Fatal(err)
	}
	goTool := testenv.LookPath(t, "go")
	top, err := exec.Command(goTool, "tool", "pprof", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, top)
	}
	if !strings.Contains(string(top), "Target.spin") {
		t.Errorf("the top frames are not the busy code:\n%s", top)
	}
}

func TestConvertRejectsNonJFR(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("java.lang.Thread.run;Target.churn 42\n"), []byte("FLR\x00garbage")} {
		if _, err := Convert(b, time.Now(), time.Now()); err == nil {
			t.Errorf("accepted %q", b)
		}
	}
}

// mustPick is Pick, failing the test on an error.
func mustPick(t *testing.T, ps []Profile, event string) Profile {
	t.Helper()
	p, err := Pick(ps, event)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPickRefusesAMissingEvent: a known event the recording has no
// profile of is an error naming what it has, not another metric under
// its name; an event of async-profiler's own is the first profile.
func TestPickRefusesAMissingEvent(t *testing.T) {
	ps := []Profile{{Metric: "process_cpu"}, {Metric: "memory"}}
	if _, err := Pick(ps, "wall"); err == nil || !strings.Contains(err.Error(), "process_cpu, memory") {
		t.Errorf("wall from a recording without it: %v", err)
	}
	if p, err := Pick(ps, "alloc"); err != nil || p.Metric != "memory" {
		t.Errorf("alloc: %v %v", p.Metric, err)
	}
	if p, err := Pick(ps, "page-faults"); err != nil || p.Metric != "process_cpu" {
		t.Errorf("page-faults: %v %v", p.Metric, err)
	}
}
