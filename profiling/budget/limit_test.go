package budget

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLimitInAContainer: a container without a cgroup namespace (every
// container on cgroup v1; on v2 one with the host's) reads its group's
// path from the host's root in /proc/self/cgroup, while the runtime
// mounts that group itself at /sys/fs/cgroup/memory (v1) or
// /sys/fs/cgroup (v2), as runc does for a kubelet's pods: the limit is
// read where mountinfo says the group is, not under the host's path,
// which the container does not have.
func TestLimitInAContainer(t *testing.T) {
	write := func(root, p, s string) {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const group = "/safeattach-node/kubepods/burstable/pod1/abc"
	v1 := t.TempDir()
	write(v1, "proc/self/cgroup", "9:name=systemd:"+group+"\n4:memory:"+group+"\n1:cpu:"+group+"\n0::"+group+"\n")
	write(v1, "proc/self/mountinfo", "108 107 0:56 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"+
		"109 108 0:29 "+group+" /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu\n"+
		"112 108 0:32 "+group+" /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory\n")
	write(v1, "sys/fs/cgroup/memory/memory.stat", "cache 0\nhierarchical_memory_limit 134217728\n")
	write(v1, "sys/fs/cgroup/memory/memory.limit_in_bytes", "134217728\n")
	v2 := t.TempDir()
	write(v2, "proc/self/cgroup", "0::"+group+"\n")
	write(v2, "proc/self/mountinfo", "30 25 0:26 "+group+" /sys/fs/cgroup ro,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
	write(v2, "sys/fs/cgroup/memory.max", "268435456\n")
	// Under a cgroup namespace, the group is "/" and the mount's root
	// too: the same read as before.
	ns := t.TempDir()
	write(ns, "proc/self/cgroup", "0::/\n")
	write(ns, "proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n")
	write(ns, "sys/fs/cgroup/memory.max", "67108864\n")
	for root, want := range map[string]int64{v1: 128 << 20, v2: 256 << 20, ns: 64 << 20} {
		if got, err := Limit(root); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", root, got, err, want)
		}
	}
}
