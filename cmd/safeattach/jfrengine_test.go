package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling"
)

// TestLiveFallbackToFlightRecorder: on every JDK here, an async-profiler
// the operator denies (--deny-agent) is refused (agent-denylisted); with
// --fallback jfr the profile is taken by the JVM's own Flight Recorder
// instead — a recording, and a pprof profile holding the workload's hot
// method — and says which rule sent it there. The recording is the
// pod's file, read back and removed. A JVM whose tcmalloc runs its heap
// profiler is refused to async-profiler's affected build
// (tcmalloc-heap-profiler) and to the Flight Recorder too
// (jfr-libunwind-heap-profiler: its first command crashed such JVMs
// here): refused with both rules, and the JVM still answers.
func TestLiveFallbackToFlightRecorder(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	tcmalloc := []string{"LD_PRELOAD=" + testenv.Library(t, "libtcmalloc.so.4"), "HEAPPROFILE=hp"}
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String()+"/heap-profiler", func(t *testing.T) {
			t.Parallel()
			p := testenv.StartPod(t, testenv.PodSpec{JDK: jdk, Env: tcmalloc, Workers: 2})
			pid := fmt.Sprint(p.PID)
			_, stderr, code := cli(t, nil, "profile", "--agent", lib, "--fallback", "jfr", "-d", "2", "-f", filepath.Join(t.TempDir(), "fr.jfr"), pid)
			if code != exitRefused || !strings.Contains(stderr, "tcmalloc-heap-profiler") || !strings.Contains(stderr, "jfr-libunwind-heap-profiler") {
				t.Fatalf("--fallback jfr on JDK %d with tcmalloc's heap profiler: exit %d: %s", jdk.Feature, code, stderr)
			}
			if _, _, code := cli(t, nil, "jcmd", pid, "VM.version"); code != 0 {
				t.Fatal("the JVM does not answer after the refusal")
			}
		})
		t.Run(jdk.String()+"/denied", func(t *testing.T) {
			t.Parallel()
			// A pod: its /tmp is its own, so what is left there is this
			// test's.
			p := testenv.StartPod(t, testenv.PodSpec{JDK: jdk, Workers: 2, Mode: "spin", JVMArgs: c1Only})
			pid := fmt.Sprint(p.PID)
			dir := t.TempDir()
			if _, stderr, code := cli(t, nil, "profile", "--agent", lib, "--deny-agent", lib, "-d", "1", "-f", filepath.Join(dir, "refused.jfr"), pid); code != exitRefused || !strings.Contains(stderr, "--fallback jfr") {
				t.Fatalf("without --fallback: exit %d, want refused, pointing to --fallback jfr: %s", code, stderr)
			}
			rec := filepath.Join(dir, "fr.jfr")
			_, stderr, code := cli(t, nil, "profile", "--agent", lib, "--deny-agent", lib, "--fallback", "jfr", "-d", "2", "-f", rec, pid)
			if code != 0 || !strings.Contains(stderr, "refused by agent-denylisted") || !strings.Contains(stderr, "Flight Recorder") {
				t.Fatalf("--fallback jfr: exit %d: %s", code, stderr)
			}
			if data, _ := os.ReadFile(rec); len(data) < 1000 || string(data[:4]) != "FLR\x00" {
				t.Errorf("the recording: %d bytes", len(data))
			}
			// A pprof profile holding the workload's frames: a loaded
			// machine can delay the recording's first samples, so up to
			// three profiles are taken.
			var r struct {
				Profile profiling.JSONProfile `json:"profile"`
			}
			hot := false
			for attempt := 0; attempt < 3 && !hot; attempt++ {
				pb := filepath.Join(dir, fmt.Sprintf("fr-%d.pb.gz", attempt))
				stdout, stderr, code := cli(t, nil, "profile", "--json", "--agent", lib, "--deny-agent", lib, "--fallback", "jfr", "-d", "3", "-f", pb, pid)
				if code == exitFailed && strings.Contains(stdout, "no process_cpu profile") {
					continue // no CPU sample in this recording: another is taken
				}
				if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || r.Profile.Engine != "jfr" || strings.Join(r.Profile.FallbackFrom, ",") != "agent-denylisted" || r.Profile.Limits == "" {
					t.Fatalf("--json --fallback jfr -f x.pb.gz: exit %d: %s %s", code, stdout, stderr)
				}
				hot = pprofHas(t, pb, "Target")
			}
			if !hot {
				t.Error("no frame of the workload (Target) in three pprof profiles")
			}
			// The recording is not left in the JVM's /tmp.
			if r.Profile.Recording == "" {
				t.Error("the result names no recording")
			} else if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", p.PID, r.Profile.Recording)); err == nil {
				t.Errorf("%s left in the JVM's /tmp", r.Profile.Recording)
			}
		})
	}
}

// TestLiveFlightRecorderStartStop: `profile start --engine jfr` in one
// invocation, `profile status`, `dump` and `stop` in later ones without
// naming the engine (the start's own state says it was the Flight
// Recorder): the stop writes the file the start named, in the format its
// name asks for (a flame graph); --loop windows with the Flight Recorder
// write one recording per window.
func TestLiveFlightRecorderStartStop(t *testing.T) {
	t.Parallel()
	p := testenv.StartPod(t, testenv.PodSpec{Workers: 2, Mode: "spin", JVMArgs: c1Only})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	html := filepath.Join(dir, "later.html")
	env := []string{"PATH=" + filepath.Dir(testenv.Converter(t)) + ":" + os.Getenv("PATH")}
	if _, stderr, code := cli(t, env, "profile", "start", "--engine", "jfr", "-f", html, pid); code != 0 {
		t.Fatalf("start: exit %d: %s", code, stderr)
	}
	if stdout, stderr, code := cli(t, env, "profile", "status", pid); code != 0 || !strings.Contains(stdout, "safeattach-") {
		t.Errorf("status: exit %d: %s %s", code, stdout, stderr)
	}
	// Dumps until the workload's frames are in one: the recording samples
	// every 10 ms, but a loaded machine delays them.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		stdout, stderr, code := cli(t, env, "profile", "dump", "-o", "collapsed", pid)
		// A recording with no CPU sample yet cannot be made a CPU profile
		// (exit 3, saying so): a later dump may.
		if code != 0 && !strings.Contains(stderr, "no process_cpu profile") {
			t.Fatalf("dump: exit %d: %s", code, stderr)
		}
		if strings.Contains(stdout, "Target") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dump in 30 s holds the workload's frames: %d bytes", len(stdout))
		}
	}
	stdout, stderr, code := cli(t, env, "profile", "stop", "--json", pid)
	var r struct {
		Profile profiling.JSONProfile `json:"profile"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || r.Profile.File != html || r.Profile.Engine != "jfr" || r.Profile.Format != "flamegraph" {
		t.Fatalf("stop: exit %d: %s %s", code, stdout, stderr)
	}
	if data, err := os.ReadFile(html); err != nil || !strings.Contains(string(data), "<html") || !strings.Contains(string(data), "Target") {
		t.Errorf("%s: %v, %d bytes", html, err, len(data))
	}
	if _, _, code := cli(t, env, "profile", "stop", "--engine", "jfr", pid); code == 0 {
		t.Error("a second stop succeeded")
	}
	stdout, stderr, code = cli(t, env, "profile", "--json", "--engine", "jfr", "--loop", "1s", "-d", "3", "-f", filepath.Join(dir, "w-%n.jfr"), pid)
	windows, _ := filepath.Glob(filepath.Join(dir, "w-*.jfr"))
	var loop struct {
		Outcome string                 `json:"outcome"`
		Windows []profiling.JSONWindow `json:"windows"`
	}
	if code != 0 || len(windows) < 2 || json.Unmarshal([]byte(stdout), &loop) != nil || loop.Outcome != "ok" || len(loop.Windows) != len(windows) {
		t.Fatalf("--json --loop with the Flight Recorder: exit %d, %d windows: %s %s", code, len(windows), stdout, stderr)
	}
	for _, w := range windows {
		if data, _ := os.ReadFile(w); len(data) < 4 || string(data[:4]) != "FLR\x00" {
			t.Errorf("%s is not a recording", w)
		}
	}
	if left, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-jfr-*", p.PID)); len(left) > 0 {
		t.Errorf("left in the pod's /tmp: %v", left)
	}
}

// pprofHas reports whether the gzipped pprof profile at path has a frame
// whose function name contains name.
func pprofHas(t *testing.T, path, name string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prof, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range prof.Sample {
		for _, l := range s.Location {
			for _, ln := range l.Line {
				if strings.Contains(ln.Function.Name, name) {
					return true
				}
			}
		}
	}
	return false
}

// c1Only: see package profiling's tests — the Flight Recorder samples a
// workload's tight loop only as C1 compiles it.
var c1Only = []string{"-XX:TieredStopAtLevel=1"}

// TestLiveOneDetachedStartPerJVM: a detached start of one engine refuses
// a detached start of the other on the same JVM (a later stop finds one
// start), saying which runs; once it is stopped, the other starts.
func TestLiveOneDetachedStartPerJVM(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	if _, stderr, code := cli(t, nil, "profile", "start", "--engine", "jfr", pid); code != 0 {
		t.Fatalf("jfr start: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", pid); code != exitRefused || !strings.Contains(stderr, "a detached start of yours with jfr runs there") {
		t.Errorf("async-profiler start beside it: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "profile", "stop", "-o", "jfr", "-f", filepath.Join(t.TempDir(), "x.jfr"), pid); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", pid); code != 0 {
		t.Errorf("async-profiler start after the stop: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "profile", "start", "--engine", "jfr", pid); code != exitRefused || !strings.Contains(stderr, "a detached start of yours with async-profiler runs there") {
		t.Errorf("jfr start beside it: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "profile", "stop", "--agent", lib, pid); code != 0 {
		t.Errorf("stop: exit %d: %s", code, stderr)
	}
}
