package podwatch

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
	"github.com/safeattach/safeattach/kube"
)

// TestSlim: what is cached of a pod is what the agent reads — its
// safeattach annotations (a value cut at 1 KiB), phase and container
// statuses — and FromAPI sees every running container: regular, native
// sidecar (a running init container), ephemeral.
func TestSlim(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	managed := &metav1.FieldsV1{}
	managed.SetRawBytes(make([]byte, 150<<10)) // server-side apply's bookkeeping, often this big
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders", UID: "u1", ResourceVersion: "7",
			Labels: map[string]string{"app": "orders"},
			Annotations: map[string]string{
				"profiles.safeattach.io/enabled":                   "true",
				"profiles.safeattach.io/event":                     strings.Repeat("x", 5000),
				"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("{}", 100000),
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", FieldsV1: managed}},
		},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "x", Env: make([]corev1.EnvVar, 100)}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "app", ContainerID: "containerd://aa", State: running, Image: "x", ImageID: "sha256:..."},
				{Name: "crashed", ContainerID: "containerd://bb", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}},
			},
			InitContainerStatuses:      []corev1.ContainerStatus{{Name: "shipper", ContainerID: "containerd://cc", State: running}},
			EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debugger", ContainerID: "containerd://dd", State: running}},
		},
	}
	o, err := Slim(p)
	if err != nil {
		t.Fatal(err)
	}
	s := o.(*corev1.Pod)
	if s.ManagedFields != nil || s.Labels != nil || len(s.Annotations) != 2 || len(s.Annotations["profiles.safeattach.io/event"]) != 1024 ||
		len(s.Spec.Containers) != 0 || s.Status.Conditions != nil || s.Status.ContainerStatuses[0].Image != "" {
		t.Errorf("slim pod keeps more than the agent reads: %+v", s)
	}
	if again, _ := Slim(s); !reflect.DeepEqual(again, s) {
		t.Error("Slim of a slim pod changes it")
	}
	got := FromAPI(s)
	want := kube.Pod{Namespace: "shop", Name: "orders", UID: "u1", Node: "node-1", Phase: "Running",
		Annotations: s.Annotations,
		Containers: []kube.Container{{Name: "app", ID: "containerd://aa"}, {Name: "shipper", ID: "containerd://cc"},
			{Name: "debugger", ID: "containerd://dd", Ephemeral: true}},
		Declared: []string{"app", "crashed", "shipper", "debugger"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromAPI:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(FromAPI(p), got) {
		t.Error("FromAPI differs on the full and the slim pod")
	}
}

// TestWatchFollowsItsNode, against a real API server: the watch sees
// this node's pods only, and each change — a pod created, running, an
// annotation changed, deleted — wakes it up.
func TestWatchFollowsItsNode(t *testing.T) {
	api := kubeapi.Server(t)
	ns := api.Namespace(t)
	node, other := kubeapi.Name("node"), kubeapi.Name("node")
	cfg, err := Config(api.Kubeconfig, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := Start(ctx, cfg, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Synced(ctx); err != nil {
		t.Fatal(err)
	}
	// waitFor waits for a change after which the pods satisfy ok, and
	// says how long it took.
	waitFor := func(what string, ok func([]kube.Pod) bool) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(20 * time.Second)
		for {
			pods, err := w.Pods(ctx)
			if err == nil && ok(pods) {
				took := time.Since(start)
				t.Logf("%s: seen after %v", what, took)
				return took
			}
			select {
			case <-w.Changes():
			case <-deadline:
				t.Fatalf("%s: not seen in 20 s; pods %+v", what, pods)
			}
		}
	}
	find := func(pods []kube.Pod, name string) *kube.Pod {
		for i := range pods {
			if pods[i].Name == name {
				return &pods[i]
			}
		}
		return nil
	}
	api.Pod(t, ns, "elsewhere", other, nil)
	api.Pod(t, ns, "orders", node, map[string]string{"profiles.safeattach.io/enabled": "true"})
	waitFor("created", func(p []kube.Pod) bool { return find(p, "orders") != nil })
	api.Running(t, ns, "orders", "containerd://"+strings.Repeat("ab", 32))
	waitFor("running", func(p []kube.Pod) bool {
		o := find(p, "orders")
		return o != nil && o.Phase == "Running" && len(o.Containers) == 1
	})
	pods, _ := w.Pods(ctx)
	if find(pods, "elsewhere") != nil {
		t.Error("a pod of another node is watched")
	}
	api.Delete(ns, "orders")
	waitFor("deleted", func(p []kube.Pod) bool { return find(p, "orders") == nil })
}
