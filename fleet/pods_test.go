package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
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

// startingWatch is a pod source that has not listed yet: a watch
// starting. asked is closed at the first Pods.
type startingWatch struct {
	asked chan struct{}
	once  sync.Once
}

func (s *startingWatch) Pods(context.Context) ([]kube.Pod, error) {
	s.once.Do(func() { close(s.asked) })
	return nil, fmt.Errorf("watch pods: %w", kube.ErrNotSynced)
}

// TestStartingWatchIsNoFailure: a sync before the watch's first list is
// neither a warning nor a counted failure, and the daemon is not ready.
func TestStartingWatchIsNoFailure(t *testing.T) {
	var logs bytes.Buffer
	src := &startingWatch{asked: make(chan struct{})}
	d, err := New(Config{Pods: src, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()
	<-src.asked
	cancel()
	<-ran
	if err := d.Sync(context.Background()); !errors.Is(err, kube.ErrNotSynced) {
		t.Errorf("Sync: %v, want ErrNotSynced", err)
	}
	if d.Ready() {
		t.Error("ready before the first list")
	}
	if got := metric(t, d.Metrics(), "safeattach_pod_sync_failures_total"); got != 0 {
		t.Errorf("%v sync failures counted for a watch starting", got)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a watch starting was warned about:\n%s", logs.String())
	}
}
