package realnode

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// TestHelmInstall: the chart installed as an operator installs it, with
// helm install against the API server (the only test that does: its
// cluster-wide objects have fixed names), and its DaemonSet's pod — made
// from the installed DaemonSet, as its controller would — run by the
// kubelet until the kubelet's readiness probe passes; helm uninstall
// removes what was installed.
func TestHelmInstall(t *testing.T) {
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	image := daemonImage(t, n)
	ingest := newIngest(t, n.IP)
	repo, tag, _ := strings.Cut(image, ":")
	helm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(helmPath(t), append(args, "--kubeconfig", n.API.Kubeconfig, "--namespace", ns)...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := helm("install", "safeattach", chartDir(t), "--set-string", "image.repository="+repo, "--set-string", "image.tag="+tag,
		"--set-string", "image.pullPolicy=Never", "--set-string", "pyroscope.url="+ingest.url, "--set", "onDemand.enabled=true")
	t.Cleanup(func() {
		exec.Command(helmPath(t), "uninstall", "safeattach", "--kubeconfig", n.API.Kubeconfig, "--namespace", ns).Run()
	})
	if !strings.Contains(out, "STATUS: deployed") {
		t.Fatalf("helm install:\n%s", out)
	}
	ctx := context.Background()
	ds, err := n.API.Client.AppsV1().DaemonSets(ns).Get(ctx, "safeattach-daemon", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"safeattach-daemon", "safeattach-profiler"} {
		if _, err := n.API.Client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("ClusterRole %s: %v", name, err)
		}
	}
	if _, err := n.API.Client.RbacV1().Roles(ns).Get(ctx, "safeattach-portforward", metav1.GetOptions{}); err != nil {
		t.Errorf("Role safeattach-portforward: %v", err)
	}
	daemonSets.Store(ns, ds)
	pod := n.Run(t, daemonPod(ds.Spec.Template, ns, "safeattach-daemon-"+n.Name))
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != ds.UID {
		t.Errorf("the pod is not the DaemonSet's: %+v", ref)
	}
	t.Logf("helm install: DaemonSet %s/%s, its pod %s Running and Ready at %s", ns, ds.Name, pod.Name, pod.Status.PodIP)
	n.Delete(t, ns, pod.Name)
	helm("uninstall", "safeattach")
	if _, err := n.API.Client.RbacV1().ClusterRoles().Get(ctx, "safeattach-profiler", metav1.GetOptions{}); err == nil {
		t.Error("helm uninstall left the ClusterRole safeattach-profiler")
	}
}
