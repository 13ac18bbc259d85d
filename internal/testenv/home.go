package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// AgentHome lays the library lib out as an async-profiler release does,
// <home>/lib/libasyncProfiler.so, in a directory of its own under
// /var/tmp that only its owner can write (as an install would be; the
// rules refuse a library others could replace), and returns the home
// directory (what ASYNC_PROFILER_HOME names) and the library's path.
// Both go when the test ends.
func AgentHome(t testing.TB, lib string) (home, path string) {
	t.Helper()
	home, err := os.MkdirTemp("/var/tmp", "safeattach-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(home, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(home, "lib", "libasyncProfiler.so")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return home, path
}

// StartHeapProfiledJVM starts a JVM whose tcmalloc runs its heap
// profiler (LD_PRELOAD, HEAPPROFILE): one the rules refuse an affected
// async-profiler build for (tcmalloc-heap-profiler) and allow a fixed
// one.
func StartHeapProfiledJVM(t testing.TB) *Process {
	t.Helper()
	tcm := Library(t, "libtcmalloc.so.4")
	return StartJVM(t, JVMSpec{Env: []string{"LD_PRELOAD=" + tcm, "HEAPPROFILE=" + filepath.Join(t.TempDir(), "heap")}})
}

// FixedBuildInstalled sets up the choice the rules leave for a refused
// build: the affected look-alike (its path returned as affected), the
// fixed one installed as a release in a home ASYNC_PROFILER_HOME names
// (t.Setenv: the test must not be parallel; installed is its library's
// path), and a JVM under tcmalloc's heap profiler, which refuses the
// first and allows the second.
func FixedBuildInstalled(t testing.TB) (affected, installed string, jvm *Process) {
	t.Helper()
	affected = BuildAgent(t, AgentAffectedLookalike)
	home, installed := AgentHome(t, BuildAgent(t, AgentFixedLookalike))
	t.Setenv("ASYNC_PROFILER_HOME", home)
	return affected, installed, StartHeapProfiledJVM(t)
}
