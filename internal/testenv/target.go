package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Nobody is the uid (and gid) of the unprivileged user the tests run
// targets and attackers as.
const Nobody = 65534

// Maps is /proc/<pid>/maps, for tests that look for what a JVM mapped.
func Maps(t testing.TB, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// StoreEntries lists <dir>/.safeattach/*/* inside pid's root: the
// copies of agents delivered there.
func StoreEntries(pid int, dir string) []string {
	m, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root%s/.safeattach/*/*", pid, dir))
	return m
}
