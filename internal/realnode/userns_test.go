package realnode

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// TestUserNamespacePod: a pod with hostUsers: false runs in a user
// namespace of its own: its root is an unprivileged host uid (the
// kubelet's range, 65536 and up), so every check of "owned by the
// target's user" meets a mapped uid, and the JVM would take host root's
// connection for nobody's (HotSpot admits its own uid or root, as it sees
// them). Checked and profiled from the node through pod:.
func TestUserNamespacePod(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	agent := testenv.ProfilerOrLookalike(t)
	p := jvmPod(ns, "userns", n.JVMImage(t, testenv.JDK17(t)), "2", "spin")
	p.Spec.HostUsers = ptr(false)
	pod := runJVM(t, n, p)
	pid := kubenode.HostPID(t, kubenode.ContainerID(pod, "app"), "/java")
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+itoa(pid), &st); err != nil || st.Uid < 65536 {
		t.Fatalf("the JVM runs as host uid %d (%v): want a mapped uid from the kubelet's range", st.Uid, err)
	}
	uidMap, _ := os.ReadFile("/proc/" + itoa(pid) + "/uid_map")
	t.Logf("host pid %d, host uid %d, uid_map %s", pid, st.Uid, strings.TrimSpace(string(uidMap)))

	target := "pod:" + ns + "/" + pod.Name
	if out, errOut, code := cli(t, n, "check", "--agent", agent, target); code != 0 {
		t.Fatalf("check %s: exit %d\n%s\n%s", target, code, out, errOut)
	}
	out, errOut, code := cli(t, n, "profile", "--agent", agent, "-e", "itimer", "-d", "2", "-o", "collapsed", "-f", "-", target)
	if code != 0 || !strings.Contains(out, "Target") {
		t.Fatalf("profile %s: exit %d, want 0 and the JVM's frames\n%.500s\n%s", target, code, out, errOut)
	}
	if _, err := os.Stat("/proc/" + itoa(pid)); err != nil {
		t.Fatalf("the JVM is gone:\n%s", n.Describe(ns, pod.Name, pod))
	}
}
