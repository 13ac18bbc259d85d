package attach

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

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
// the usual install locations (a release unpacked as it comes,
// async-profiler-<version>-linux-<arch>, under /opt, /usr/local or the
// home directory, as well as a plain async-profiler). It returns the
// library's path, or "" and the places it looked, as a user can act on
// them.
func findInstalled() (path string, searched []string) {
	candidates, searched := discoveryCandidates()
	for _, c := range candidates {
		p := filepath.Clean(c.path)
		if isRegular(p) {
			return p, searched
		}
		if c.how != "" {
			searched = append(searched, p+" ("+c.how+")")
		} else {
			searched = append(searched, p)
		}
	}
	return "", searched
}

// agentCandidate is a library agent discovery may name, and how it was
// found ("" for an install location).
type agentCandidate struct{ path, how string }

// discoveryCandidates are the libraries agent discovery looks at, in its
// order (findInstalled takes the first that exists), and the sources
// that named none.
func discoveryCandidates() (candidates []agentCandidate, searched []string) {
	if home := os.Getenv("ASYNC_PROFILER_HOME"); home != "" {
		for _, p := range homeLibraries(home) {
			candidates = append(candidates, agentCandidate{p, "$ASYNC_PROFILER_HOME"})
		}
	} else {
		searched = append(searched, "$ASYNC_PROFILER_HOME (not set)")
	}
	if asprof, err := exec.LookPath("asprof"); err == nil {
		if real, err := filepath.EvalSymlinks(asprof); err == nil {
			asprof = real
		}
		candidates = append(candidates, agentCandidate{filepath.Join(filepath.Dir(asprof), "..", "lib", asyncProfilerLib), "beside " + asprof})
	} else {
		searched = append(searched, "asprof on PATH (none)")
	}
	roots := []string{"/opt", "/usr/local", "/usr/lib", "/usr/share"}
	if h, err := os.UserHomeDir(); err == nil {
		roots = append(roots, h)
	}
	for _, r := range roots {
		var matches []string
		for _, pattern := range homeLibraries(filepath.Join(r, "async-profiler*")) {
			m, _ := filepath.Glob(pattern)
			matches = append(matches, m...)
		}
		if len(matches) == 0 {
			searched = append(searched, filepath.Join(r, "async-profiler*"))
		}
		// Newest first, by name: async-profiler-4.5 after -4.1.
		for i := len(matches) - 1; i >= 0; i-- {
			candidates = append(candidates, agentCandidate{matches[i], ""})
		}
	}
	return candidates, searched
}

func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// homeLibraries are where an install's directory holds the library: a
// release's lib/, or the directory itself (a build's build/lib).
func homeLibraries(home string) []string {
	return []string{filepath.Join(home, "lib", asyncProfilerLib), filepath.Join(home, asyncProfilerLib)}
}

// installLibrary turns an install's directory (what
// ASYNC_PROFILER_HOME names) into its library; any other path is
// returned as it is.
func installLibrary(path string) string {
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		return path
	}
	for _, p := range homeLibraries(path) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return path
}

// sameMountNamespace reports whether pid sees our file system: a path
// in its maps is then a path of ours.
func sameMountNamespace(pid int) bool {
	var ours, theirs unix.Stat_t
	return unix.Stat("/proc/self/ns/mnt", &ours) == nil && unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &theirs) == nil &&
		ours.Dev == theirs.Dev && ours.Ino == theirs.Ino
}

// noAgentError says what was searched and how to name the library;
// when the JVM maps an async-profiler of another tool's, where it is.
func noAgentError(pid int, searched []string) error {
	msg := fmt.Sprintf("no async-profiler found (searched %s); give its library or its install directory with --agent, or set ASYNC_PROFILER_HOME", strings.Join(searched, ", "))
	if p, _, ok := deliveredCopy(pid); ok {
		msg += fmt.Sprintf("; the JVM maps %s: --agent /proc/%d/root%s uses it", p, pid, p)
	}
	return fmt.Errorf("%w: %s", ErrInvalidOptions, msg)
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
