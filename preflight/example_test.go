package preflight_test

import (
	"context"
	"fmt"

	"github.com/safeattach/safeattach/preflight"
)

// Inspect describes a process from the outside. Here it reads a fixture
// tree laid out like /proc; on a host, leave ProcRoot empty.
func ExampleInspect() {
	r, err := preflight.Inspect(context.Background(), 4242, preflight.Options{ProcRoot: "../internal/proc/testdata/fixture"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("jvm:", r.JVM.Kind)
	fmt.Println("pid in its namespace:", r.Process.NSPid)
	fmt.Println("SIGQUIT caught:", r.Process.Signals.SIGQUIT.Caught)
	fmt.Println("threads:", r.Process.Threads)
	for _, p := range r.Profilers {
		fmt.Println("profiler already loaded:", p.Kind, p.Path, "deleted:", p.Deleted)
	}
	// Output:
	// jvm: hotspot
	// pid in its namespace: 7
	// SIGQUIT caught: true
	// threads: 23
	// profiler already loaded: async-profiler /opt/my app/lib dir/libasyncProfiler.so deleted: true
}
