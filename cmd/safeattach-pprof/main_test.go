package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/jfrpprof"
)

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]output{
		"pprof": {"pprof", jfrpprof.DefaultFlat}, "collapsed": {"collapsed", jfrpprof.DefaultFlat},
		"flat": {"flat", jfrpprof.DefaultFlat}, "flat=7": {"flat", 7}, "html": {"html", jfrpprof.DefaultFlat},
	} {
		if got, err := parseFormat(in); err != nil || got != want {
			t.Errorf("%q: %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "svg", "flat=", "flat=0", "flat=-3", "flat=x", "html=2", "jfr"} {
		if _, err := parseFormat(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// runConverter runs the converter on the test recording, named as a file, with
// stdout going to out.
func runConverter(t *testing.T, out *os.File, args ...string) (stderr string, err error) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.jfr")
	if err := os.WriteFile(in, testenv.Recording(t, testenv.RecordingCPUAllocLock), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Converter(t), append(args, in)...)
	var e bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &e
	err = cmd.Run()
	return e.String(), err
}

func outFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestDefaultIsPprof: without -o the output is still the gzipped
// profile, and the last line on stderr still the summary.
func TestDefaultIsPprof(t *testing.T) {
	t.Parallel()
	out := outFile(t)
	stderr, err := runConverter(t, out)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	data, _ := os.ReadFile(out.Name())
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b || !strings.HasPrefix(stderr, "process_cpu ") {
		t.Errorf("%d bytes (want gzip), stderr %q", len(data), stderr)
	}
}

// TestOutputLimitOnAFile: written to a regular file, an output past
// -max-output meets RLIMIT_FSIZE, and the converter says so (the Go
// runtime ignores SIGXFSZ: the write fails with EFBIG) instead of
// leaving a cut page without a word.
func TestOutputLimitOnAFile(t *testing.T) {
	t.Parallel()
	out := outFile(t)
	stderr, err := runConverter(t, out, "-o", "html", "-max-output", "2000")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr, "write the html output: it grew past the output limit") {
		t.Fatalf("%v: %q", err, stderr)
	}
	if fi, err := out.Stat(); err != nil || fi.Size() > 2000 {
		t.Errorf("the output is %d bytes, past its limit", fi.Size())
	}
}
