package attach

import (
	"os"
	"os/exec"
	"path/filepath"

	"github.com/safeattach/safeattach/preflight"
)

// Which agent a call is about, when the caller names none: the user's
// async-profiler installation, else the worst plausible agent. FindAgent
// (check.go) is the one public door to both.

// asyncProfilerLib is the library's name inside every async-profiler
// distribution (lib/ next to bin/asprof).
const asyncProfilerLib = "libasyncProfiler.so"

// findInstalled looks for the user's async-profiler installation, in
// the order users expect: $ASYNC_PROFILER_HOME, an asprof on PATH, then
// the usual install locations. It returns the library's path, or "" and
// the places it looked.
func findInstalled() (path string, searched []string) {
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

// assumedAgent stands in for an agent that was not given (check without
// --agent and no async-profiler installation found): the worst plausible
// one, an affected pre-4.0 async-profiler build, so that the
// agent-dependent rules still speak, and say that they assumed.
func assumedAgent() *preflight.Agent {
	return &preflight.Agent{
		Kind:             preflight.AgentAsyncProfiler,
		Assumed:          true,
		ImportsDlIterate: true,
		Imports:          []string{"dl_iterate_phdr"},
		Evidence:         []string{"no agent given and none installed: assuming the worst plausible agent, an async-profiler build that allocates under the loader lock"},
	}
}
