package testenv

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

//go:embed agents/*.c agents/*.h java/*.java attackers/*.c
var sources embed.FS

// Test agents, by the name of their C source in agents/.
const (
	AgentAffectedLookalike = "lookalike_affected"
	AgentFixedLookalike    = "lookalike_fixed"
	AgentRecordOptions     = "record_options"
	AgentFailRC            = "fail_rc"
	AgentBlockForever      = "block_forever"
	AgentNoOnAttach        = "no_onattach"
	AgentSleepOnAttach     = "sleep_onattach"
	AgentCrashLater        = "crash_later"
)

var buildMu sync.Mutex

// buildDir is shared by every test binary of one run and by later runs:
// outputs are content-addressed, so a cached one is always the right one.
func buildDir() string {
	if d := os.Getenv("SAFEATTACH_TEST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "safeattach-testbuild")
}

func contentKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// cached runs build into a fresh directory and renames it into place, so
// concurrent test binaries never see a half-written output.
func cached(t testing.TB, key string, build func(dir string) error) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	final := filepath.Join(buildDir(), key)
	if _, err := os.Stat(final); err == nil {
		return final
	}
	if err := os.MkdirAll(buildDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(buildDir(), "tmp-")
	if err != nil {
		t.Fatal(err)
	}
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp) // another binary won the race; use its copy
	}
	return final
}

// BuildAgent compiles the named C test agent into a shared library and
// returns its path. The library is world-readable and writable only by its
// owner, as a real agent installation would be.
func BuildAgent(t testing.TB, name string) string {
	t.Helper()
	src, err := sources.ReadFile("agents/" + name + ".c")
	if err != nil {
		t.Fatalf("no test agent %q", name)
	}
	gcc := LookPath(t, "gcc")
	flags := []string{"-shared", "-fPIC", "-O1", "-Wall", "-Werror"}
	// Every header goes with every agent: few and small, and any of them
	// may be included.
	headers, _ := fs.Glob(sources, "agents/*.h")
	jfr := recordingsHeader(t)
	key := []string{string(src), strings.Join(flags, " "), jfr}
	for _, h := range headers {
		text, _ := sources.ReadFile(h)
		key = append(key, h, string(text))
	}
	dir := cached(t, "agent-"+contentKey(key...), func(dir string) error {
		c := filepath.Join(dir, name+".c")
		if err := os.WriteFile(c, src, 0o644); err != nil {
			return err
		}
		for _, h := range headers {
			text, _ := sources.ReadFile(h)
			if err := os.WriteFile(filepath.Join(dir, path.Base(h)), text, 0o644); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "lookalike_jfr.h"), []byte(jfr), 0o644); err != nil {
			return err
		}
		args := append(append([]string{}, flags...), "-o", filepath.Join(dir, "lib"+name+".so"), c)
		out, err := exec.Command(gcc, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", name, err, out)
		}
		return os.Chmod(filepath.Join(dir, "lib"+name+".so"), 0o755)
	})
	return filepath.Join(dir, "lib"+name+".so")
}

// BuildC compiles a C program (not a library) from source text.
func BuildC(t testing.TB, name, src string, flags ...string) string {
	t.Helper()
	gcc := LookPath(t, "gcc")
	dir := cached(t, "prog-"+contentKey(name, src, strings.Join(flags, " ")), func(dir string) error {
		c := filepath.Join(dir, name+".c")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			return err
		}
		args := append([]string{"-O1", "-o", filepath.Join(dir, name), c}, flags...)
		out, err := exec.Command(gcc, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", name, err, out)
		}
		return nil
	})
	return filepath.Join(dir, name)
}

// TargetClasspath compiles the Java target program with jdk's javac (for
// release 11, so it runs on every JDK from 11 up) and returns the class
// directory.
func TargetClasspath(t testing.TB, jdk JDK) string {
	t.Helper()
	src, err := sources.ReadFile("java/Target.java")
	if err != nil {
		t.Fatal(err)
	}
	javac := filepath.Join(jdk.Home, "bin", "javac")
	if _, err := os.Stat(javac); err != nil {
		Missing(t, "javac in %s", jdk.Home)
	}
	return cached(t, "java-"+contentKey(string(src)), func(dir string) error {
		p := filepath.Join(dir, "Target.java")
		if err := os.WriteFile(p, src, 0o644); err != nil {
			return err
		}
		out, err := exec.Command(javac, "--release", "11", "-d", dir, p).CombinedOutput()
		if err != nil {
			return fmt.Errorf("javac: %v\n%s", err, out)
		}
		return nil
	})
}

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// BuildCLI builds the safeattach command once per test process (static,
// as `make build` does) and returns its path.
func BuildCLI(t testing.TB) string {
	t.Helper()
	cliOnce.Do(func() {
		// One directory per test process; those of processes that are
		// gone are removed, so runs do not accumulate binaries.
		old, _ := filepath.Glob(filepath.Join(buildDir(), "cli-*"))
		for _, o := range old {
			var pid int
			if _, err := fmt.Sscanf(filepath.Base(o), "cli-%d", &pid); err == nil && syscall.Kill(pid, 0) != nil {
				os.RemoveAll(o)
			}
		}
		dir := filepath.Join(buildDir(), fmt.Sprintf("cli-%d", os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "safeattach")
		// The helpers (pprof converter, Kubernetes lookup) are found
		// beside the CLI, as make build places them.
		for _, bin := range []string{"safeattach", "safeattach-pprof", "safeattach-kube"} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, bin), "github.com/safeattach/safeattach/cmd/"+bin)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				cliErr = fmt.Errorf("go build %s: %v\n%s", bin, err, out)
				return
			}
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// ProfilerOrLookalike returns the real async-profiler when
// ASYNC_PROFILER_HOME names one, else the fixed look-alike (which writes
// a real async-profiler 4.5 recording when asked for JFR).
func ProfilerOrLookalike(t testing.TB) string {
	t.Helper()
	if home := os.Getenv("ASYNC_PROFILER_HOME"); home != "" {
		return AsyncProfiler(t)
	}
	return BuildAgent(t, AgentFixedLookalike)
}

// AsyncProfiler returns the real async-profiler library under
// $ASYNC_PROFILER_HOME, or skips the test with one line saying so (CI has
// none: async-profiler cannot be installed from the package registries).
func AsyncProfiler(t testing.TB) string {
	t.Helper()
	home := os.Getenv("ASYNC_PROFILER_HOME")
	for _, p := range []string{filepath.Join(home, "lib", "libasyncProfiler.so"), filepath.Join(home, "libasyncProfiler.so")} {
		if home != "" {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p
			}
		}
	}
	Optional(t, "no real async-profiler: set ASYNC_PROFILER_HOME to a build of it to run this test")
	return ""
}
