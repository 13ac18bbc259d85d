package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// InCI reports whether the tests run in CI, where every prerequisite must
// be present.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test, or fails it in CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI: "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// Optional skips a test that CI cannot run by design, with one line that
// says how to run it: a measurement (opt in with an environment variable)
// or a test of something the package registries do not have (the real
// async-profiler; the real API server is built from the module proxy by
// make test, so its tests use Missing). Every other skip goes through
// Missing; internal/repocheck refuses a bare t.Skip anywhere else.
func Optional(t testing.TB, how string) {
	t.Helper()
	t.Skip(how)
}

// RequireRoot needs euid 0 (the ptrace-free /proc reads and the map_files
// links need it, as does running targets as another user).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root")
	}
}

// LookPath finds a program or handles its absence.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s on PATH", name)
	}
	return p
}

// LibDir is where Debian installs the allocator libraries on x86-64.
const LibDir = "/usr/lib/x86_64-linux-gnu"

// Library returns the path of a Debian shared library (e.g.
// "libjemalloc.so.2"), handling its absence.
func Library(t testing.TB, soname string) string {
	t.Helper()
	p := LibDir + "/" + soname
	if _, err := os.Stat(p); err != nil {
		Missing(t, "%s (install its Debian package: make prereqs)", p)
	}
	return p
}

// HostileFiles makes a FIFO and an 8 GiB sparse file in a fresh directory
// (returned too): inputs that block a naive open or exhaust a naive read.
func HostileFiles(t testing.TB) (dir, fifo, sparse string) {
	t.Helper()
	dir = t.TempDir()
	fifo = filepath.Join(dir, "hostile.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sparse = filepath.Join(dir, "sparse.bin")
	f, err := os.Create(sparse)
	if err == nil {
		err = f.Truncate(8 << 30)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, fifo, sparse
}
