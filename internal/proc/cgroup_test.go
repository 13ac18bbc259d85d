package proc

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPIDsAndCgroup: only numeric entries are processes, and a cgroup
// file over its cap is an error (read no further), not a truncated list.
func TestPIDsAndCgroup(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"1", "42", "self", "sys", "0"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "1", "cgroup"), []byte("0::/init.scope\n"), 0o644)
	os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte(strings.Repeat("x", maxCgroupSize+1)), 0o644)
	fsys := NewFS(root)
	pids, err := fsys.PIDs()
	if err != nil || !reflect.DeepEqual(pids, []int{1, 42}) {
		t.Fatalf("PIDs %v %v", pids, err)
	}
	if data, err := fsys.Proc(1).Cgroup(); err != nil || string(data) != "0::/init.scope\n" {
		t.Errorf("cgroup of 1: %q %v", data, err)
	}
	if _, err := fsys.Proc(42).Cgroup(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("an oversized cgroup file: %v", err)
	}
}
