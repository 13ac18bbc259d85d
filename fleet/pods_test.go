package fleet

import (
	"reflect"
	"sort"
	"testing"

	"github.com/safeattach/safeattach/kube"
)

// TestSelectPods: another node's pod, a pod not running, a pod that did
// not opt in and a container the annotation leaves out are all skipped.
func TestSelectPods(t *testing.T) {
	on := map[string]string{AnnotationEnabled: "true"}
	pods := []kube.Pod{
		{UID: "a", Node: "node-1", Phase: "Running", Annotations: map[string]string{AnnotationEnabled: "true", AnnotationContainer: "app"},
			Containers: []kube.Container{{Name: "app", ID: "containerd://aa"}, {Name: "sidecar", ID: "containerd://bb"}}},
		{UID: "b", Node: "node-2", Phase: "Running", Annotations: on, Containers: []kube.Container{{Name: "app", ID: "cri-o://cc"}}},
		{UID: "c", Node: "node-1", Phase: "Pending", Annotations: on},
		{UID: "d", Node: "node-1", Phase: "Running", Containers: []kube.Container{{Name: "app", ID: "docker://dd"}}},
		{UID: "e", Node: "node-1", Phase: "Running", Annotations: map[string]string{AnnotationEnabled: "yes"}, Containers: []kube.Container{{Name: "app", ID: "docker://ee"}}},
		// A native sidecar is profiled like any container; a kubectl
		// debug container only when the annotation names it.
		{UID: "f", Node: "node-1", Phase: "Running", Annotations: on, Containers: []kube.Container{
			{Name: "app", ID: "containerd://f1"}, {Name: "shipper", ID: "containerd://f2"}, {Name: "debugger", ID: "containerd://f3", Ephemeral: true}}},
		{UID: "g", Node: "node-1", Phase: "Running", Annotations: map[string]string{AnnotationEnabled: "true", AnnotationContainer: "debugger"}, Containers: []kube.Container{
			{Name: "app", ID: "containerd://g1"}, {Name: "debugger", ID: "containerd://g3", Ephemeral: true}}},
	}
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: "unused"}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range d.selectPods(pods) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"a/app", "f/app", "f/shipper", "g/debugger"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("selected %v, want %v", keys, want)
	}
}
