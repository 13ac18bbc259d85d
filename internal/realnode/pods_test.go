package realnode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// restricted is what a namespace enforcing the restricted Pod Security
// Standard lets a container be: not root, no privilege escalation, no
// capabilities, the runtime's seccomp profile; here also a read-only root
// filesystem with /tmp an emptyDir, as hardened images run.
func restricted(p *corev1.Pod) *corev1.Pod {
	uid := int64(1000)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot: ptr(true), RunAsUser: &uid, RunAsGroup: &uid,
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	c := &p.Spec.Containers[0]
	c.SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	return p
}

func ptr[T any](v T) *T { return &v }

// TestRestrictedPod: a JVM in a namespace that enforces the restricted
// Pod Security Standard (the API server refuses a root pod there), as
// uid 1000 with a read-only root filesystem and an emptyDir /tmp, is
// checked and profiled from the node: the attach socket and the agent's
// copy go through the emptyDir the kubelet mounted, and the JVM runs on.
func TestRestrictedPod(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	image := n.JVMImage(t, testenv.JDK17(t))
	agent := testenv.ProfilerOrLookalike(t)

	rootPod := jvmPod(ns, "as-root", image, "2", "spin")
	if _, err := n.API.Client.CoreV1().Pods(ns).Create(context.Background(), rootPod, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		n.Delete(t, ns, "as-root")
		t.Fatalf("a root pod in a restricted namespace: %v, want Forbidden (the standard is not enforced)", err)
	}

	pod := runJVM(t, n, restricted(jvmPod(ns, "orders", image, "2", "spin")))
	pid := kubenode.HostPID(t, kubenode.ContainerID(pod, "app"), "/java")
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/proc", itoa(pid)), &st); err != nil || st.Uid != 1000 {
		t.Fatalf("the JVM runs as uid %d (%v), want 1000", st.Uid, err)
	}
	target := "pod:" + ns + "/" + pod.Name
	if out, errOut, code := cli(t, n, "check", "--agent", agent, target); code != 0 {
		t.Fatalf("check %s: exit %d\n%s\n%s", target, code, out, errOut)
	}
	out, errOut, code := cli(t, n, "profile", "--agent", agent, "-d", "2", "-o", "collapsed", "-f", "-", target)
	if code != 0 || !strings.Contains(out, "Target") {
		t.Fatalf("profile %s: exit %d, want 0 and the JVM's frames\n%.500s\n%s", target, code, out, errOut)
	}
	// Nothing written outside the emptyDir: the root filesystem is
	// read-only, and the JVM still runs.
	if _, err := os.Stat(filepath.Join("/proc", itoa(pid))); err != nil {
		t.Fatalf("the JVM is gone:\n%s", n.Describe(ns, pod.Name, pod))
	}
}

// TestRestartedContainer: the kubelet restarts a container whose JVM
// died (a new container ID and pid, the same pod and name). pod: follows
// it to the new JVM; the old JVM's detached profile is not taken for the
// new one's, and the new one is profiled as any other.
func TestRestartedContainer(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	agent := testenv.ProfilerOrLookalike(t)
	pod := runJVM(t, n, jvmPod(ns, "restarts", n.JVMImage(t, testenv.JDK17(t)), "2", "spin"))
	first := kubenode.ContainerID(pod, "app")
	pid := kubenode.HostPID(t, first, "/java")
	target := "pod:" + ns + "/" + pod.Name
	if out, errOut, code := cli(t, n, "profile", "start", "--agent", agent, "-e", "itimer", target); code != 0 {
		t.Fatalf("profile start: exit %d\n%s\n%s", code, out, errOut)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pod = n.WaitRunning(t, ns, pod.Name, "containerd://"+first)
	jvmStarted(t, n, pod)
	second := kubenode.ContainerID(pod, "app")
	pid2 := kubenode.HostPID(t, second, "/java")
	if second == first || pid2 == pid {
		t.Fatalf("no new container: %s (pid %d) then %s (pid %d)", first, pid, second, pid2)
	}
	out, errOut, code := cli(t, n, "profile", "status", "--agent", agent, target)
	t.Logf("status after the restart: exit %d\n%s%s", code, out, errOut)
	if code != 0 || !strings.Contains(out, "not active") {
		t.Fatalf("status of the new JVM: exit %d, want the profiler not active\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = cli(t, n, "profile", "--agent", agent, "-e", "itimer", "-d", "2", "-o", "collapsed", "-f", "-", target)
	if code != 0 || !strings.Contains(out, "Target") {
		t.Fatalf("profile of the restarted container: exit %d\n%.500s\n%s", code, out, errOut)
	}
}
