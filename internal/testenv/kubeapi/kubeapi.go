package kubeapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/safeattach/safeattach/internal/testenv"
)

// Env names the directory of a running API server.
const Env = "SAFEATTACH_KUBE_APISERVER"

// API is a running API server with admin credentials.
type API struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config
	Client     *kubernetes.Clientset
}

// Server returns the API server named by $SAFEATTACH_KUBE_APISERVER
// (make test starts one for the run). Without the variable the test
// skips with one line, or fails in CI: make test always provides one. A
// named server that does not answer fails the test: the variable
// promised one.
func Server(t testing.TB) *API {
	t.Helper()
	dir := os.Getenv(Env)
	if dir == "" {
		testenv.Missing(t, "a Kubernetes API server: %s unset (make test starts one; by hand: scripts/kube-apiserver.sh build DIR && scripts/kube-apiserver.sh start DIR)", Env)
	}
	kc := filepath.Join(dir, "run", "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("%s=%s: %v (scripts/kube-apiserver.sh start %s)", Env, dir, err, dir)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		t.Fatalf("%s=%s: the API server does not answer: %v (scripts/kube-apiserver.sh start %s)", Env, dir, err, dir)
	}
	return &API{Dir: dir, Kubeconfig: kc, Config: cfg, Client: client}
}

// Name is a fresh name with prefix.
func Name(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Namespace creates a namespace of the test's own with its default
// ServiceAccount (no controller makes one here); cleanup deletes it.
func (a *API) Namespace(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	ns := Name("sa-test")
	if _, err := a.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := a.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// Pod creates a pod with one container "app" bound to node, Pending;
// cleanup deletes it.
func (a *API) Pod(t testing.TB, ns, name, node string, annotations map[string]string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}},
			TerminationGracePeriodSeconds: new(int64)},
	}
	got, err := a.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Delete(ns, name) })
	return got
}

// Running gives a pod the status a kubelet would once its container
// runs, with the container's runtime ID ("containerd://<hex>").
func (a *API) Running(t testing.TB, ns, name, containerID string) {
	t.Helper()
	status := corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "app", Image: "example.invalid/app", Ready: true, ContainerID: containerID,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}}}
	a.SetStatus(t, ns, name, status)
}

// SetStatus replaces a pod's status.
func (a *API) SetStatus(t testing.TB, ns, name string, status corev1.PodStatus) {
	t.Helper()
	p, err := a.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = status
	if _, err := a.Client.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Delete deletes a pod at once (no kubelet will confirm it).
func (a *API) Delete(ns, name string) error {
	zero := int64(0)
	return a.Client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
}
