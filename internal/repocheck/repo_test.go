package repocheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// trackedFiles lists the files git tracks, relative to the repository root.
func trackedFiles(t *testing.T) (root string, files []string) {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		testenv.Missing(t, "not a git checkout: %v", err)
	}
	root = strings.TrimSpace(string(out))
	out, err = exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range bytes.Split(out, []byte{0}) {
		if len(f) > 0 {
			files = append(files, string(f))
		}
	}
	return root, files
}

// TestNoBuildOutputTracked fails if a tracked file is an executable binary
// (ELF, other than a small parser fixture under testdata/) or a profile
// (other than a small recording under testdata/).
func TestNoBuildOutputTracked(t *testing.T) {
	root, files := trackedFiles(t)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // deleted in the work tree
		}
		// Small ELF fixtures for the parsers' tests and fuzzing are data.
		fixture := strings.Contains(f, "/testdata/") && len(data) < 64<<10
		if bytes.HasPrefix(data, []byte("\x7fELF")) && !fixture {
			t.Errorf("%s is an ELF binary: build output is never committed", f)
		}
		// Small recordings under testdata/ are test data (testdata's
		// README says how they were made); anywhere else a profile is
		// output someone forgot.
		if ext := filepath.Ext(f); ext == ".prof" || ext == ".test" || ext == ".jfr" && !fixture {
			t.Errorf("%s looks like build or profile output", f)
		}
	}
}

var docRef = regexp.MustCompile(`docs/[A-Za-z0-9_-]+\.md`)

// TestDocLinksResolve fails if a source file points to a document that is
// not in the repository — the design notes the project was started from
// live outside it, and what the code relies on must be in docs/.
func TestDocLinksResolve(t *testing.T) {
	root, files := trackedFiles(t)
	outside := regexp.MustCompile(`\b(DESIGN|KNOWLEDGE)\.md\b|\.\./shared/`)
	for _, f := range files {
		switch filepath.Ext(f) {
		case ".go", ".yaml", ".sh", ".md", ".c", ".java":
		default:
			if filepath.Base(f) != "Makefile" {
				continue
			}
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		if m := outside.Find(data); m != nil && f != "internal/repocheck/repo_test.go" {
			t.Errorf("%s cites %s, which is not part of the repository", f, m)
		}
		for _, ref := range docRef.FindAll(data, -1) {
			if _, err := os.Stat(filepath.Join(root, string(ref))); err != nil {
				t.Errorf("%s points to %s, which does not exist", f, ref)
			}
		}
	}
}

var bareSkip = regexp.MustCompile(`\b[tbf]\.Skip(f|Now)?\(`)

// TestNoBareSkips fails if a test skips itself other than through
// internal/testenv (Missing: a failure in CI; Optional: a measurement or
// a test of something CI cannot have): a bare t.Skip could hide a
// regression in CI.
func TestNoBareSkips(t *testing.T) {
	root, files := trackedFiles(t)
	for _, f := range files {
		if !strings.HasSuffix(f, ".go") || strings.HasPrefix(f, "internal/testenv/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			if bareSkip.MatchString(line) {
				t.Errorf("%s:%d: %s (use testenv.Missing or testenv.Optional)", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}

// trackerRef is a reference to this project's issue tracker: "issue 17",
// "issues 17 and 19", "(case 7)" standing for one of an issue's cases.
// Upstream references ("async-profiler #1147", ".../issues/1159") name
// another project, and stay.
var trackerRef = regexp.MustCompile(`(?i)\bissues? #?[0-9]+\b|\((?:issue|cases?|item) [0-9]+\b`)

// TestNoTrackerReferences fails if code or documentation points to the
// project's tracker instead of saying what it means: the tracker is not
// part of the repository, and its numbers mean nothing to a reader of
// the code.
func TestNoTrackerReferences(t *testing.T) {
	root, files := trackedFiles(t)
	for _, f := range files {
		switch filepath.Ext(f) {
		case ".go", ".md", ".c", ".h", ".java", ".sh", ".yaml", ".yml":
		default:
			if filepath.Base(f) != "Makefile" {
				continue
			}
		}
		if f == "internal/repocheck/repo_test.go" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			if m := trackerRef.FindString(line); m != "" {
				t.Errorf("%s:%d: %q refers to the tracker: say what is meant", f, i+1, m)
			}
		}
	}
}

// layers are the library's layers, lowest first (docs/architecture.md):
// a package may import only packages of its own layer or below, so that
// the safe door knows nothing of profiles, and the profiling layer
// nothing of the node agent. A package is in the layer of its longest
// listed prefix.
var layers = [][]string{
	{"internal/"},
	{"preflight", "target", "internal/reporttext"},
	{"conflicts", "diagnose"},
	{"attach"},
	{"profiling"},
	{"kube", "pyroscope"},
	{"fleet"},
	{"cmd/", "examples/"},
}

// within are imports a layer's own packages may not make of each other:
// the raw protocol is unchecked by design and knows no policy.
var within = map[string][]string{
	"attach/hotspot":             {"attach", "attach/crashmem"},
	"attach/crashmem":            {"attach", "attach/hotspot"},
	"profiling/asprof":           {"profiling"},
	"profiling/fdtransfer":       {"profiling"},
	"profiling/flightrec":        {"profiling"},
	"profiling/jfrpprof":         {"profiling"},
	"profiling/jfrpprof/bounded": {"profiling"},
	"profiling/flamegraph":       {"profiling"},
	"profiling/budget":           {"profiling"},
}

func layerOf(pkg string) int {
	best, layer := -1, -1
	for i, prefixes := range layers {
		for _, p := range prefixes {
			if (pkg == strings.TrimSuffix(p, "/") || strings.HasPrefix(pkg, strings.TrimSuffix(p, "/")+"/")) && len(p) > best {
				best, layer = len(p), i
			}
		}
	}
	return layer
}

// TestLayers: no package imports up the layers, nor across them where
// within forbids it, and the examples use public packages only.
func TestLayers(t *testing.T) {
	root, _ := trackedFiles(t)
	const module = "github.com/safeattach/safeattach/"
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasPrefix(pkg, "internal/testenv") || strings.HasPrefix(pkg, "internal/repocheck") {
			continue // test helpers: they drive every layer
		}
		from := layerOf(pkg)
		if from < 0 {
			t.Errorf("%s is in no layer: add it to layers (and docs/architecture.md)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			checked++
			if to := layerOf(dep); to > from {
				t.Errorf("%s (layer %d) imports %s (layer %d): an import up the layers", pkg, from, dep, to)
			}
			for _, banned := range within[pkg] {
				if dep == banned {
					t.Errorf("%s imports %s, which its layer forbids", pkg, dep)
				}
			}
			if strings.HasPrefix(pkg, "examples/") && strings.HasPrefix(dep, "internal/") {
				t.Errorf("%s imports %s: the examples use public packages only", pkg, dep)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no imports checked: go list printed nothing usable")
	}
}
