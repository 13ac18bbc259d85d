package fleet

import (
	"reflect"
	"strings"
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
	}
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: "unused"}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range d.selectPods(pods) {
		keys = append(keys, k)
	}
	if want := []string{"a/app"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("selected %v, want %v", keys, want)
	}
}

func TestMetricsText(t *testing.T) {
	var m Metrics
	m.attach("ok")
	m.attach("refused")
	m.refusal("jemalloc-prof-active")
	m.refusal(`we"ird\rule`)
	m.window("ok")
	var b strings.Builder
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE safeattach_attaches_total counter\n",
		`safeattach_attaches_total{outcome="refused"} 1` + "\n",
		`safeattach_refusals_total{rule="jemalloc-prof-active"} 1` + "\n",
		`safeattach_refusals_total{rule="we\"ird\\rule"} 1` + "\n",
		"safeattach_sessions_active 0\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}
