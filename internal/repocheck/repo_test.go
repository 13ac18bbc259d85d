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
