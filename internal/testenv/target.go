package testenv

import (
	"crypto/sha256"
	"encoding/hex"
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

// PodIDs are a pod UID and a container ID of the test's own, derived
// from its name: two tests that each model a pod never share a cgroup
// or resolve each other's JVM.
func PodIDs(t testing.TB) (podUID, containerID string) {
	sum := sha256.Sum256([]byte(t.Name()))
	h := hex.EncodeToString(sum[:])
	return fmt.Sprintf("%s-%s-4%s-9%s-%s", h[:8], h[8:12], h[13:16], h[17:20], h[20:32]), h
}
