package outfile

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestExpand(t *testing.T) {
	at := time.Date(2026, 12, 4, 15, 4, 5, 0, time.UTC)
	for in, want := range map[string]string{
		"p-%p.html":   "p-42.html",
		"w-%t.jfr":    "w-20261204-150405.jfr",
		"w-%n{4}.jfr": "w-3.jfr",
		"w-%n.jfr":    "w-7.jfr",
		"100%%-%x":    "100%-%x",
		"trailing%":   "trailing%",
		"%n{0}":       "7",
	} {
		if got := Expand(in, 42, at, 7); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// TestCommitReplacesOnlyWhenComplete: the destination keeps what it had
// until Commit; Discard leaves nothing behind.
func TestCommitReplacesOnlyWhenComplete(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "p.txt")
	os.WriteFile(dst, []byte("old"), 0o644)
	f, err := Prepare(dst, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("new"))
	if data, _ := os.ReadFile(dst); string(data) != "old" {
		t.Fatalf("before Commit: %q", data)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(dst); string(data) != "new" {
		t.Fatalf("after Commit: %q", data)
	}
	g, _ := Prepare(dst, 0, nil)
	g.Write([]byte("abandoned"))
	g.Discard()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left: %v", entries)
	}
}
