package flightrec

import (
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// TestHazard: the Flight Recorder is refused on JDK 25 and later when an
// allocator captures stacks with libunwind (JFR.start crashed such a JVM
// here), and only there.
func TestHazard(t *testing.T) {
	tcm := func(v string) *preflight.Report {
		r := &preflight.Report{}
		r.JVM.Version = v
		r.Tcmalloc.HeapProfiler = preflight.Yes
		return r
	}
	jem := func(v, unwinder string) *preflight.Report {
		r := &preflight.Report{}
		r.JVM.Version = v
		r.Jemalloc.Prof.State, r.Jemalloc.Unwinder = preflight.ProfActive, unwinder
		return r
	}
	plain := &preflight.Report{}
	plain.JVM.Version = "25.0.3+9-LTS"
	for _, c := range []struct {
		name    string
		r       *preflight.Report
		refused bool
	}{
		{"tcmalloc heap profiler, JDK 25", tcm("25.0.3+9-LTS"), true},
		{"tcmalloc heap profiler, JDK 26", tcm("26-ea+5"), true},
		{"tcmalloc heap profiler, JDK 17", tcm("17.0.15+6-Debian-1deb12u1"), false},
		{"tcmalloc heap profiler, JDK 8", tcm("1.8.0_412-b08"), false},
		{"jemalloc prof with libunwind, JDK 25", jem("25.0.3+9-LTS", preflight.UnwinderLibunwind), true},
		{"jemalloc prof with libgcc, JDK 25", jem("25.0.3+9-LTS", "libgcc"), false},
		{"no heap profiler, JDK 25", plain, false},
	} {
		if got := hazard(c.r) != ""; got != c.refused {
			t.Errorf("%s: refused %v, want %v", c.name, got, c.refused)
		}
	}
}
