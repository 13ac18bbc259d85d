package podwatch

import (
	"context"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// TestFirstListIsAChange, against a real API server: once the first
// list is in, the watch says so on Changes, and Pods answers from then
// on — for a node with no pods (no pod event to wake anyone: without
// that change this case fails) as for one with a pod, whose event
// the informer may hand out while it still takes the list in, so before
// Pods answers (a race this test seldom wins; the node agent on a real
// node lost it about one start in five, and its DaemonSet pod was Ready
// only after its 15 s timer's sync and the next probe, 20 s).
func TestFirstListIsAChange(t *testing.T) {
	api := kubeapi.Server(t)
	ns := api.Namespace(t)
	cfg, err := Config(api.Kubeconfig, "")
	if err != nil {
		t.Fatal(err)
	}
	// The node agent's own pod: on a fresh node, often the only one.
	one := kubeapi.Name("node")
	api.Pod(t, ns, "safeattach-daemon", one, nil)
	for what, node := range map[string]string{"a node with no pods": kubeapi.Name("node"), "a node with one pod": one} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		w, err := Start(ctx, cfg, node)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		start := time.Now()
		for {
			select {
			case <-w.Changes():
			case <-ctx.Done():
				cancel()
				t.Fatalf("%s: no change after which Pods answers in 20 s", what)
			}
			if _, err := w.Pods(ctx); err == nil {
				break
			}
		}
		t.Logf("%s: Pods answers after the change %v after Start", what, time.Since(start).Round(time.Millisecond))
		cancel()
	}
}
