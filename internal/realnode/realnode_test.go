package realnode

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// jvmPod is a pod of one container "app" running the test target with
// args on image.
func jvmPod(ns, name, image string, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"-cp", "/app", "Target"}, args...),
			}},
		},
	}
}

// runJVM runs a pod of jvmPod's and waits until its JVM has started
// (the target prints READY): a JVM still starting has no SIGQUIT handler
// yet, and safeattach rightly refuses it (sigquit-not-handled).
func runJVM(t *testing.T, n *kubenode.Node, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	pod := n.Run(t, p)
	jvmStarted(t, n, pod)
	return pod
}

// jvmStarted waits until the current container of pod's "app" printed
// READY.
func jvmStarted(t *testing.T, n *kubenode.Node, pod *corev1.Pod) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(n.Logs(pod.Namespace, pod.Name, "app"), "READY "); {
		if time.Now().After(deadline) {
			t.Fatalf("the JVM of %s/%s did not start in 60 s: %s", pod.Namespace, pod.Name, n.Logs(pod.Namespace, pod.Name, "app"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cli runs the safeattach CLI on the node, as root, with the node's name
// and the API server's kubeconfig (for pod: targets).
func cli(t *testing.T, n *kubenode.Node, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCLI(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+n.API.Kubeconfig, "NODE_NAME="+n.Name, "KUBERNETES_SERVICE_HOST=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("safeattach %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// TestPodInContainerd: a JVM in a pod that the kubelet made, on every
// JDK, found by container: and pod: through the runtime's real container
// ID and cgroup, checked and profiled into a flame graph by the CLI on
// the node.
func TestPodInContainerd(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	agent := testenv.ProfilerOrLookalike(t)
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			pod := runJVM(t, n, jvmPod(ns, "orders-"+jdk.String(), n.JVMImage(t, jdk), "2", "spin"))
			id := kubenode.ContainerID(pod, "app")
			pid := kubenode.HostPID(t, id, "/java")
			cg, _ := os.ReadFile(filepath.Join("/proc", itoa(pid), "cgroup"))
			t.Logf("container %s, host pid %d, cgroup:\n%s", id, pid, cg)

			// container: with the ID the runtime reports, as kubectl
			// shows it, and its 12-character prefix.
			for _, c := range []string{"containerd://" + id, id[:12]} {
				if out, errOut, code := cli(t, n, "check", "container:"+c); code != 0 {
					t.Fatalf("check container:%s: exit %d\n%s\n%s", c, code, out, errOut)
				}
			}
			target := "pod:" + ns + "/" + pod.Name
			out, errOut, code := cli(t, n, "check", "--json", target)
			if code != 0 {
				t.Fatalf("check %s: exit %d\n%s\n%s", target, code, out, errOut)
			}
			if !strings.Contains(out, `"pid": `+itoa(pid)) && !strings.Contains(out, `"pid":`+itoa(pid)) {
				t.Errorf("check %s did not judge host pid %d:\n%s", target, pid, out)
			}
			flame := filepath.Join(t.TempDir(), "flame.html")
			out, errOut, code = cli(t, n, "profile", "--agent", agent, "-d", "2", "-f", flame, target)
			if code != 0 {
				t.Fatalf("profile %s: exit %d\n%s\n%s", target, code, out, errOut)
			}
			html, err := os.ReadFile(flame)
			if err != nil || !bytes.Contains(html, []byte("<html")) {
				t.Fatalf("no flame graph at %s: %v\n%.300s", flame, err, html)
			}
			if _, err := os.Stat(filepath.Join("/proc", itoa(pid))); err != nil {
				t.Fatalf("the JVM is gone after its profile:\n%s", n.Describe(ns, pod.Name, pod))
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
