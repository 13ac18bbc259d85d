package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartContainerJVM starts a JVM the way a container runs one: in its own
// pid and mount namespaces, behind a shell entrypoint that first runs
// setup (mounts: "mount -t tmpfs tmpfs /tmp"). It returns the pid of the
// wrapper (unshare) and of the JVM as the host sees them. The classes
// live in /var/cache, which such set-ups leave alone.
func StartContainerJVM(t testing.TB, setup string) (wrapper, jvm int) {
	t.Helper()
	return StartContainerJVMWorkers(t, setup, 0)
}

// StartContainerJVMWorkers is StartContainerJVM with busy worker threads
// (Target's churn), for tests that need samples.
func StartContainerJVMWorkers(t testing.TB, setup string, workers int) (wrapper, jvm int) {
	t.Helper()
	RequireRoot(t)
	unshare := LookPath(t, "unshare")
	jdk := JDK17(t)
	dir, err := os.MkdirTemp("/var/cache", "safeattach-container-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	class, err := os.ReadFile(filepath.Join(TargetClasspath(t, jdk), "Target.class"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Target.class"), class, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--pid", "--mount", "--fork", "--propagation", "private", "sh", "-c",
		setup+" && "+filepath.Join(jdk.Home, "bin/java")+" -Xmx64m -XX:+UseSerialGC -cp "+dir+" Target "+strconv.Itoa(workers))
	cmd.Dir = dir
	p := Start(t, cmd)
	p.WaitOutput(t, "READY", 60*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, d := range descendants(p.PID) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", d)); strings.HasSuffix(exe, "/java") {
				return p.PID, d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no java under the container's entrypoint")
	return 0, 0
}

func descendants(pid int) []int {
	var out []int
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(data)) {
		c, _ := strconv.Atoi(f)
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// KubeletCgroup creates a cgroup directory named as kubelet and its
// runtime name it (rel, under the v1 hierarchy mounted at
// /sys/fs/cgroup/<hierarchy>), moves the pids into it, and at cleanup
// moves them back and removes every level it created.
func KubeletCgroup(t testing.TB, hierarchy, rel string, pids ...int) {
	t.Helper()
	root := filepath.Join("/sys/fs/cgroup", hierarchy)
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		Missing(t, "cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		}
		for d := dir; d != root && d != "/"; d = filepath.Dir(d) {
			for i := 0; i < 50; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	for _, pid := range pids {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move %d into %s: %v", pid, dir, err)
		}
	}
}
