package podwatch

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/safeattach/safeattach/kube"
)

// Watch keeps one node's pods, as a kube.PodSource and kube.Notifier.
type Watch struct {
	store   cache.Store
	synced  cache.InformerSynced
	changes chan struct{}
}

// Start lists and watches the pods scheduled on node until ctx ends. It
// does not wait for the first list: until it is in, Pods fails (a daemon
// is not ready), and its arrival is a change; Synced waits.
func Start(ctx context.Context, cfg *rest.Config, node string) (*Watch, error) {
	if node == "" {
		return nil, errors.New("watch pods: no node name (set NODE_NAME from spec.nodeName, or --node)")
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}),
		informers.WithTransform(Slim))
	informer := factory.Core().V1().Pods().Informer()
	w := &Watch{store: informer.GetStore(), synced: informer.HasSynced, changes: make(chan struct{}, 1)}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.notify() },
		UpdateFunc: func(old, cur any) {
			// A status heartbeat that changes nothing the agent reads
			// (conditions, resourceVersion) wakes nobody.
			if !samePod(old, cur) {
				w.notify()
			}
		},
		DeleteFunc: func(any) { w.notify() },
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	// The first list is in: a change of its own. The list's pods' events
	// are no signal of it — the informer hands them out while it still
	// takes the list in (Pods fails if woken by them), and a node with no
	// pods has none — and a caller that syncs at each change would wait
	// for its timer to become ready.
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
			w.notify()
		}
	}()
	go func() {
		<-ctx.Done()
		factory.Shutdown()
	}()
	return w, nil
}

// Synced waits until the first list is in, or ctx ends.
func (w *Watch) Synced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), w.synced) {
		return fmt.Errorf("watch pods: %w before the first list", context.Cause(ctx))
	}
	return nil
}

func (w *Watch) notify() {
	select {
	case w.changes <- struct{}{}:
	default: // one pending wake-up covers any number of changes
	}
}

// Changes implements kube.Notifier.
func (w *Watch) Changes() <-chan struct{} { return w.changes }

// Pods implements kube.PodSource from the cache: no request is made.
func (w *Watch) Pods(context.Context) ([]kube.Pod, error) {
	if !w.synced() {
		return nil, fmt.Errorf("watch pods: %w", kube.ErrNotSynced)
	}
	items := w.store.List()
	pods := make([]kube.Pod, 0, len(items))
	for _, o := range items {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, FromAPI(p))
		}
	}
	return pods, nil
}

func samePod(a, b any) bool {
	pa, ok1 := a.(*corev1.Pod)
	pb, ok2 := b.(*corev1.Pod)
	return ok1 && ok2 && reflect.DeepEqual(FromAPI(pa), FromAPI(pb))
}

// Slim cuts a pod down to what FromAPI reads, before the informer caches
// it: a cache.TransformFunc. Anything else (a tombstone) passes as is.
func Slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Annotations: kube.Annotations(p.Annotations),
		},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:                      p.Status.Phase,
			ContainerStatuses:          slimStatuses(p.Status.ContainerStatuses),
			InitContainerStatuses:      slimStatuses(p.Status.InitContainerStatuses),
			EphemeralContainerStatuses: slimStatuses(p.Status.EphemeralContainerStatuses),
		},
	}
	return out, nil
}

func slimStatuses(in []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(in) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(in))
	for i, c := range in {
		out[i] = corev1.ContainerStatus{Name: c.Name, ContainerID: c.ContainerID}
		if c.State.Running != nil {
			out[i].State.Running = &corev1.ContainerStateRunning{StartedAt: c.State.Running.StartedAt}
		}
	}
	return out
}

// FromAPI is the agent's view of a pod: its safeattach annotations and
// its running containers — regular, init (a native sidecar keeps
// running), and ephemeral.
func FromAPI(p *corev1.Pod) kube.Pod {
	pod := kube.Pod{
		Namespace: p.Namespace, Name: p.Name, UID: string(p.UID),
		Node: p.Spec.NodeName, Phase: string(p.Status.Phase),
		Annotations: kube.Annotations(p.Annotations),
	}
	for i, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, c := range list {
			pod.AddStatus(c.Name, c.ContainerID, c.State.Running != nil, i == 2)
		}
	}
	return pod
}

// Lookup reads one pod (for pod:NAMESPACE/NAME targets), under ctx.
func Lookup(ctx context.Context, cfg *rest.Config, namespace, name string) (kube.Pod, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return kube.Pod{}, err
	}
	p, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return kube.Pod{}, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return FromAPI(p), nil
}
