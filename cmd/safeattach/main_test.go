package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestInspectUnknownPID(t *testing.T) {
	p := testenv.StartSleeper(t)
	pid := p.PID
	p.Cmd.Process.Kill()
	<-p.Exited()
	_, stderr, code := runCLI(t, "inspect", fmt.Sprint(pid))
	if code != exitError {
		t.Errorf("exit %d", code)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "no such process") {
		t.Errorf("want one clear line, got %q", stderr)
	}
	for bad, want := range map[string]string{"0": "not a process id", "NoSuchApp": `no JVM named "NoSuchApp"`} {
		if _, stderr, code := runCLI(t, "inspect", bad); code != exitError || !strings.Contains(stderr, want) {
			t.Errorf("%s: exit %d %q", bad, code, stderr)
		}
	}
	if _, _, code := runCLI(t, "inspect"); code != exitError {
		t.Errorf("missing argument: exit %d", code)
	}
}

func TestInspectLiveJemallocJVM(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	p := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true"}})
	stdout, stderr, code := runCLI(t, "inspect", "--json", fmt.Sprint(p.PID))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r preflight.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if r.PID != p.PID || r.JVM.Kind != "hotspot" || r.Jemalloc.Prof.State != "active" {
		t.Errorf("report %+v", r)
	}
	human, _, code := runCLI(t, "inspect", fmt.Sprint(p.PID))
	if code != exitOK || !strings.Contains(human, "heap profiling active") || !strings.Contains(human, "MALLOC_CONF") {
		t.Errorf("human output:\n%s", human)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVersion(t *testing.T) {
	a, _, code := runCLI(t, "version")
	b, _, code2 := runCLI(t, "--version")
	if code != exitOK || code2 != exitOK || !strings.HasPrefix(a, "safeattach ") || a != b {
		t.Errorf("version %q (%d), --version %q (%d)", a, code, b, code2)
	}
}

// TestTargetByApplicationName: as asprof, a JVM is named by its main
// class (or jar) as jps shows it.
func TestTargetByApplicationName(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-Dsafeattach.test=byname"}})
	// Other tests' JVMs run Target too: the name may match several, which
	// is refused with the list — or exactly this one.
	stdout, stderr, code := runCLI(t, "inspect", "--json", "Target")
	switch {
	case code == exitOK && strings.Contains(stdout, fmt.Sprintf(`"pid": %d`, p.PID)):
	case code == exitOK:
	case code == exitError && strings.Contains(stderr, "JVMs named \"Target\"") && strings.Contains(stderr, fmt.Sprint(p.PID)):
	default:
		t.Errorf("inspect Target: exit %d %q %.200q", code, stderr, stdout)
	}
}

// TestSubcommandTreeIsLazy: a command run with only its own subcommand
// built behaves as in the whole tree (same help, same usage errors; a
// --version given to a subcommand is its own, never the root's, which
// the lazy tree leaves without one).
func TestSubcommandTreeIsLazy(t *testing.T) {
	for _, sc := range subcommands {
		for _, args := range [][]string{{sc.name, "--help"}, {sc.name, "--no-such-flag"}, {sc.name, "--version"}} {
			var lazyOut, lazyErr, fullOut, fullErr bytes.Buffer
			lazy := newRootCmd(&lazyOut, &lazyErr, args)
			if n := len(lazy.Commands()); n != 1 {
				t.Errorf("%v: %d subcommands built, want 1", args, n)
			}
			lazy.SetArgs(args)
			lerr := lazy.Execute()
			full := newRootCmd(&fullOut, &fullErr, nil)
			full.SetArgs(args)
			ferr := full.Execute()
			if lazyOut.String() != fullOut.String() || lazyErr.String() != fullErr.String() || fmt.Sprint(lerr) != fmt.Sprint(ferr) {
				t.Errorf("%v: lazy tree differs:\n%s%s%v\nwhole tree:\n%s%s%v", args, &lazyOut, &lazyErr, lerr, &fullOut, &fullErr, ferr)
			}
		}
	}
}
