package flightrec

import (
	"slices"
	"testing"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/versions"
	"github.com/safeattach/safeattach/preflight"
)

// TestHazard: the Flight Recorder is refused, whatever the JDK, when an
// allocator captures stacks with libunwind (its first command crashed
// such JVMs here, JDK 17 and 25 alike), and only there — by the rule
// jfr-libunwind-heap-profiler, which Start evaluates before it sends
// anything.
func TestHazard(t *testing.T) {
	base := func(v string) *preflight.Report {
		r := &preflight.Report{PID: 4242}
		r.JVM.Kind, r.JVM.Version = preflight.JVMHotSpot, v
		r.JVM.AttachSocket = preflight.AttachSocket{Path: "/tmp/.java_pid4242", Exists: true, IsSocket: true, Mode: 0o600}
		r.JVM.Feature = versions.JavaFeature(v)
		return r
	}
	tcm := func(v string) *preflight.Report {
		r := base(v)
		r.Tcmalloc.Present, r.Tcmalloc.Flavor, r.Tcmalloc.HeapProfiler = true, preflight.TcmallocFull, preflight.Yes
		return r
	}
	jem := func(v, unwinder string) *preflight.Report {
		r := base(v)
		r.Jemalloc.Present = true
		r.Jemalloc.Prof.State, r.Jemalloc.Unwinder = preflight.ProfActive, unwinder
		return r
	}
	for _, c := range []struct {
		name    string
		r       *preflight.Report
		refused bool
	}{
		{"tcmalloc heap profiler, JDK 25", tcm("25.0.3+9-LTS"), true},
		{"tcmalloc heap profiler, JDK 26", tcm("26-ea+5"), true},
		{"tcmalloc heap profiler, JDK 17", tcm("17.0.15+6-Debian-1deb12u1"), true},
		{"tcmalloc heap profiler, JDK 8", tcm("1.8.0_412-b08"), true},
		{"jemalloc prof with libunwind, JDK 25", jem("25.0.3+9-LTS", preflight.UnwinderLibunwind), true},
		{"jemalloc prof with libgcc, JDK 25", jem("25.0.3+9-LTS", "libgcc"), false},
		{"no heap profiler, JDK 25", base("25.0.3+9-LTS"), false},
	} {
		v := conflicts.Evaluate(c.r, preflight.FlightRecorderAgent(), conflicts.Policy{})
		if got := slices.Contains(v.Blocking(), "jfr-libunwind-heap-profiler"); got != c.refused {
			t.Errorf("%s: refused %v, want %v (%+v)", c.name, got, c.refused, v.Findings)
		}
		if want := !c.refused; v.Allowed != want {
			t.Errorf("%s: allowed %v, want %v: %+v", c.name, v.Allowed, want, v.Findings)
		}
	}
}

// TestRunningOurs: JFR.check's answer names a running safeattach
// recording (busy), and no other: another user's recordings, and ours
// once stopped, run beside a new one.
func TestRunningOurs(t *testing.T) {
	for _, c := range []struct {
		check, name string
	}{
		{"24294:\nNo available recordings.\n\nUse jcmd 24294 JFR.start to start a recording.\n", ""},
		{"24294:\nRecording 1: name=safeattach-0011aabb duration=40s (running)\n\nRecording 2: name=other duration=30s (running)\n", "safeattach-0011aabb"},
		{"24294:\nRecording 2: name=other duration=30s (running)\n\nRecording 3: name=3 duration=30s (running)\n", ""},
		{"24294:\nRecording 1: name=safeattach-0011aabb duration=40s (stopped)\n", ""},
		{"24294:\nRecording 4: name=safeattach-ff delay=10s (delayed)\n", "safeattach-ff"},
		{"24294:\nRecording 5: name=mysafeattach-1 (running)\n", ""},
		{"24294:\nFlight Recorder is disabled.\n", ""},
	} {
		name, ok := runningOurs(c.check)
		if name != c.name || ok != (c.name != "") {
			t.Errorf("runningOurs(%q) = %q, %v; want %q", c.check, name, ok, c.name)
		}
	}
}
