package testenv

import (
	"embed"
	"path/filepath"
	"testing"
)

//go:embed testdata/*.jfr
var recordings embed.FS

// Recordings made by the real async-profiler 4.5 (testdata/README.md).
const (
	RecordingCPUAllocLock = "asprof-4.5-cpu-alloc-lock.jfr"
	RecordingWall         = "asprof-4.5-wall.jfr"
)

// Recording returns the bytes of one of the recordings above.
func Recording(t testing.TB, name string) []byte {
	t.Helper()
	data, err := recordings.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatalf("recording %s: %v", name, err)
	}
	return data
}

// Converter returns the safeattach-pprof binary, built beside the CLI.
func Converter(t testing.TB) string {
	t.Helper()
	return filepath.Join(filepath.Dir(BuildCLI(t)), "safeattach-pprof")
}
