package preflight

import (
	"os"
	"os/exec"
	"path/filepath"
)

// asyncProfilerLib is the library's name inside every async-profiler
// distribution (lib/ next to bin/asprof).
const asyncProfilerLib = "libasyncProfiler.so"

// FindAsyncProfiler looks for the user's async-profiler installation, in
// the order users expect: $ASYNC_PROFILER_HOME, an asprof on PATH, then
// the usual install locations. It returns the library's path, or "" and
// the places it looked.
func FindAsyncProfiler() (path string, searched []string) {
	var candidates []string
	if home := os.Getenv("ASYNC_PROFILER_HOME"); home != "" {
		candidates = append(candidates, filepath.Join(home, "lib", asyncProfilerLib), filepath.Join(home, asyncProfilerLib))
	}
	if asprof, err := exec.LookPath("asprof"); err == nil {
		if real, err := filepath.EvalSymlinks(asprof); err == nil {
			asprof = real
		}
		candidates = append(candidates, filepath.Join(filepath.Dir(asprof), "..", "lib", asyncProfilerLib))
	}
	candidates = append(candidates,
		"/opt/async-profiler/lib/"+asyncProfilerLib,
		"/usr/local/async-profiler/lib/"+asyncProfilerLib,
		"/usr/lib/async-profiler/"+asyncProfilerLib,
	)
	for _, c := range candidates {
		c = filepath.Clean(c)
		searched = append(searched, c)
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c, searched
		}
	}
	return "", searched
}
