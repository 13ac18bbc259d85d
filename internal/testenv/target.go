package testenv

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// PodIDs are a pod UID and a container ID of the call's own, from the
// test's name and a random salt: two tests that each model a pod, in
// this process or in another test run beside it, never share a cgroup
// or resolve each other's JVM.
func PodIDs(t testing.TB) (podUID, containerID string) {
	var salt [8]byte
	rand.Read(salt[:])
	sum := sha256.Sum256(append([]byte(t.Name()), salt[:]...))
	h := hex.EncodeToString(sum[:])
	return fmt.Sprintf("%s-%s-4%s-9%s-%s", h[:8], h[8:12], h[13:16], h[17:20], h[20:32]), h
}

// StartAttachImpostor starts a JVM (JDK 17, as nobody) whose own code has
// taken over its attach socket and answers as mode says (flood: endless
// bytes; forge: Flight Recorder answers with terminal escapes and forged
// lines): what a pod's user can make of its JVM. It returns once the
// impostor listens; the test's cleanup kills it.
func StartAttachImpostor(t testing.TB, mode string) *Process {
	t.Helper()
	RequireRoot(t)
	jdk := JDK17(t)
	src, err := sources.ReadFile("java/AttachImpostor.java")
	if err != nil {
		t.Fatal(err)
	}
	classes := cached(t, "java-impostor-"+contentKey(string(src)), func(dir string) error {
		p := filepath.Join(dir, "AttachImpostor.java")
		if err := os.WriteFile(p, src, 0o644); err != nil {
			return err
		}
		if out, err := exec.Command(filepath.Join(jdk.Home, "bin", "javac"), "--release", "17", "-d", dir, p).CombinedOutput(); err != nil {
			return fmt.Errorf("javac: %v\n%s", err, out)
		}
		return nil
	})
	cmd := exec.Command(filepath.Join(jdk.Home, "bin", "java"), "-Xmx64m", "-XX:+UseSerialGC", "-cp", classes, "AttachImpostor", mode)
	cmd.Dir = os.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	p := Start(t, cmd)
	p.WaitOutput(t, "READY", 60*time.Second)
	return p
}
