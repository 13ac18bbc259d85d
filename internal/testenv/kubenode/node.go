package kubenode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// Node is the running node: its name, containerd's socket and the API
// server it registered with.
type Node struct {
	API    *kubeapi.API
	Name   string
	Socket string
	// IP is the node's address: pods on the bridge reach the host's
	// listeners there (10.0.0.1:443 reaches the API server from any pod).
	IP string
	// Ctr is the containerd client of the node's containerd version.
	Ctr string
}

// How long a pod may take to run, or to go once deleted: image unpacking
// and a JVM's start on a loaded 2-core machine take seconds, not minutes.
const (
	runTimeout    = 2 * time.Minute
	deleteTimeout = time.Minute
)

// Get returns the node started beside the API server of
// $SAFEATTACH_KUBE_APISERVER (make test starts both). Without one the test
// skips, or fails in CI, where make test always starts it.
func Get(t testing.TB) *Node {
	t.Helper()
	testenv.RequireRoot(t)
	api := kubeapi.Server(t)
	env, err := os.ReadFile(filepath.Join(api.Dir, "run", "node", "env"))
	if err != nil {
		testenv.Missing(t, "a real node beside the API server: %v (scripts/kube-apiserver.sh build DIR builds it, start DIR starts it unless KUBE_NODE=0 or the CNI plugins or iptables are missing: scripts/prereqs.sh installs them)", err)
	}
	n := &Node{API: api, Ctr: "ctr"}
	sc := bufio.NewScanner(strings.NewReader(string(env)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "NODE_NAME":
			n.Name = v
		case "CONTAINERD_SOCKET":
			n.Socket = v
		case "NODE_IP":
			n.IP = v
		case "CTR":
			n.Ctr = v
		}
	}
	if n.Name == "" || n.Socket == "" {
		t.Fatalf("%s/run/node/env: no NODE_NAME or CONTAINERD_SOCKET:\n%s", api.Dir, env)
	}
	return n
}

// Namespace creates a namespace of the test's own, labelled with labels
// (a Pod Security Standard, say), with what the controllers that do not
// run here would have made: the default ServiceAccount and the
// kube-root-ca.crt ConfigMap that every pod's token volume needs.
func (n *Node) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	ns := kubeapi.Name("sa-node")
	c := n.API.Client.CoreV1()
	if _, err := c.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := c.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(n.API.Dir, "run", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
		Data: map[string]string{"ca.crt": string(ca)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// Run creates pod on the node and waits until every container runs and
// is ready; cleanup deletes it and waits until the kubelet has stopped it.
func (n *Node) Run(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	pod.Spec.NodeName = n.Name
	if pod.Spec.TerminationGracePeriodSeconds == nil {
		pod.Spec.TerminationGracePeriodSeconds = new(int64)
	}
	pods := n.API.Client.CoreV1().Pods(pod.Namespace)
	created, err := pods.Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete(t, created.Namespace, created.Name) })
	return n.WaitRunning(t, created.Namespace, created.Name, "")
}

// WaitRunning waits until the pod's containers all run and are ready and,
// if notContainer is set, until none of them has that container ID (a
// restart). It fails with the pod's status and events when they do not.
func (n *Node) WaitRunning(t testing.TB, ns, name, notContainer string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var last *corev1.Pod
	for {
		p, err := n.API.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if running(p, notContainer) {
				return p
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not running after %v:\n%s", ns, name, runTimeout, n.Describe(ns, name, last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func running(p *corev1.Pod, notContainer string) bool {
	if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil || !c.Ready || (notContainer != "" && c.ContainerID == notContainer) {
			return false
		}
	}
	return true
}

// Describe is what kubectl describe would tell of a pod that did not run:
// its container states and its events.
func (n *Node) Describe(ns, name string, p *corev1.Pod) string {
	var b strings.Builder
	if p != nil {
		fmt.Fprintf(&b, "phase %s\n", p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "container %s: %+v (restarts %d)\n", c.Name, c.State, c.RestartCount)
		}
	}
	ev, err := n.API.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		for _, e := range ev.Items {
			fmt.Fprintf(&b, "event %s %s: %s\n", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// Delete deletes a pod and waits until it is gone (the kubelet confirms
// only once its containers stopped).
func (n *Node) Delete(t testing.TB, ns, name string) {
	pods := n.API.Client.CoreV1().Pods(ns)
	zero := int64(0)
	if err := pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); apierrors.IsNotFound(err) {
		return
	}
	deadline := time.Now().Add(deleteTimeout)
	for time.Now().Before(deadline) {
		if _, err := pods.Get(context.Background(), name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("pod %s/%s still there %v after its deletion", ns, name, deleteTimeout)
}

// ContainerID is the runtime's ID of a pod's container, without the
// "containerd://" scheme.
func ContainerID(p *corev1.Pod, container string) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == container {
			_, id, _ := strings.Cut(c.ContainerID, "://")
			return id
		}
	}
	return ""
}

// HostPID is the host pid of the process of a container whose executable
// ends in exe ("/java"), found as a node agent finds it: by the
// container ID in /proc/<pid>/cgroup. It waits for the process (a JVM
// forks nothing, but its container's shell may exec it a moment later).
func HostPID(t testing.TB, containerID, exe string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if err != nil || !strings.Contains(string(cg), containerID) {
				continue
			}
			if path, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.HasSuffix(path, exe) {
				return pid
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s process in container %s", exe, containerID)
	return 0
}

// Logs is the kubelet's log of a container, through the API server (as
// kubectl logs reads it).
func (n *Node) Logs(ns, name, container string) string {
	b, err := n.API.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return "logs: " + err.Error()
	}
	return string(b)
}

// ldd lists the shared libraries a binary loads, as host paths.
func ldd(t testing.TB, bins ...string) []string {
	t.Helper()
	var libs []string
	for _, b := range bins {
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			continue // not dynamic
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					libs = append(libs, f)
				}
			}
		}
	}
	return libs
}
