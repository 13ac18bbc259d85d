package realnode

import (
	"context"
	"strings"
	"sync"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// A peer is another tool that profiles (or debugs) a pod's process: the
// pod it makes on the target's node, in the namespace it works in, and
// whether it submits that pod as a Job's template. The specs below are
// written from what the tools' sources set, field by field where Pod
// Security admission looks; what admission ignores (the agent's
// arguments, resources, image pull secrets) is left out.
type peer struct {
	name string
	// job: the tool creates a batch/v1 Job whose controller makes the
	// pod (no controller runs here: the test creates the pod itself).
	job bool
	pod func(ns, node string) *corev1.Pod
	// container and hostPath name what admission must name.
	container, hostPath string
	// hostNamespaces is what the API server lists under "host
	// namespaces"; capabilities, the added capabilities it names.
	hostNamespaces, capabilities string
}

// kubectlFlame is kubectl-flame's JVM profiling pod (v0.2.5, the last
// release; github.com/yahoo/kubectl-flame, formerly VerizonMedia):
//   - cli/cmd/kubernetes/job/jvm.go:40: the Job goes in JobConfig.Namespace,
//     which cli/cmd/logic.go:28 sets to the kubeconfig's namespace (the
//     target's, unless --target-namespace names another, added so that the
//     Job can run where privileged pods are allowed:
//     github.com/yahoo/kubectl-flame/pull/64);
//   - jvm.go:67 hostPID; jvm.go:73 a hostPath volume "target-filesystem" of
//     --docker-path (cli/cmd/root.go:108, default /var/lib/docker/; the
//     README tells containerd clusters to pass /run/containerd) mounted at
//     /var/lib/docker (jvm.go:90); jvm.go:94 privileged: true; jvm.go:99-100
//     restartPolicy Never and nodeName the target's node;
//   - cli/cmd/kubernetes/job/root.go:16-17 image verizondigital/kubectl-flame
//     (tag "<release>-jvm", .github/workflows/release.yml), container
//     "kubectl-flame", pulled Always.
func kubectlFlame(ns, node string) *corev1.Pod {
	name := kubeapi.Name("kubectl-flame")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:      map[string]string{"kubectl-flame/id": strings.TrimPrefix(name, "kubectl-flame-")},
			Annotations: map[string]string{"sidecar.istio.io/inject": "false"}},
		Spec: corev1.PodSpec{
			HostPID:  true,
			NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Volumes: []corev1.Volume{{Name: "target-filesystem",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/containerd"}}}},
			Containers: []corev1.Container{{
				Name: "kubectl-flame", Image: "verizondigital/kubectl-flame:v0.2.5-jvm", ImagePullPolicy: corev1.PullAlways,
				Command:         []string{"/app/agent"},
				VolumeMounts:    []corev1.VolumeMount{{Name: "target-filesystem", MountPath: "/var/lib/docker"}},
				SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)},
			}},
		},
	}
}

// kubectlProf is kubectl-prof's JVM profiling pod for a containerd node
// (2.2.0; github.com/josepdcs/kubectl-prof):
//   - internal/cli/cmd/profile.go:195: the Job goes in the kubeconfig's
//     namespace (the target's unless --target-namespace);
//     internal/cli/kubernetes/job/jvm.go:121 puts it there;
//   - jvm.go:55 hostPID; jvm.go:62 and :79 a hostPath volume
//     "target-filesystem" of the runtime's root, mounted at the same path
//     (api/runtimes.go:28: /run/containerd for containerd, the default
//     runtime, internal/cli/cmd/profile.go:26);
//   - jvm.go:83 privileged from --privileged, true by default
//     (internal/cli/cmd/profile.go:242); jvm.go:18 and :85 capabilities
//     PERFMON and SYSLOG added; jvm.go:91-92 restartPolicy Never, nodeName
//     the target's node;
//   - internal/cli/kubernetes/job/job_factory.go:14-16 image
//     josepdcs/kubectl-prof ("<release>-jvm"), container "kubectl-prof",
//     command /app/agent; pulled IfNotPresent (profile.go:31).
//
// It then reads the agent's output through pods/log and copies results
// with pods/exec (internal/cli/profiler/api/profiling_container.go).
func kubectlProf(ns, node string) *corev1.Pod {
	name := kubeapi.Name("kubectl-prof-jvm")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:      map[string]string{"kubectl-prof/id": strings.TrimPrefix(name, "kubectl-prof-jvm-")},
			Annotations: map[string]string{"sidecar.istio.io/inject": "false", "linkerd.io/inject": "disabled"}},
		Spec: corev1.PodSpec{
			HostPID:  true,
			NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Volumes: []corev1.Volume{{Name: "target-filesystem",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/containerd"}}}},
			Containers: []corev1.Container{{
				Name: "kubectl-prof", Image: "josepdcs/kubectl-prof:2.2.0-jvm", ImagePullPolicy: corev1.PullIfNotPresent,
				Command:      []string{"/app/agent"},
				VolumeMounts: []corev1.VolumeMount{{Name: "target-filesystem", MountPath: "/run/containerd"}},
				SecurityContext: &corev1.SecurityContext{Privileged: ptr(true),
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"PERFMON", "SYSLOG"}}},
			}},
		},
	}
}

// kubectlDebugNode is the pod of `kubectl debug node/NODE -it
// --image=busybox --profile=sysadmin` (k8s.io/kubectl v0.37.2,
// pkg/cmd/debug):
//   - debug.go:259 and :461: a bare Pod in the kubeconfig's namespace
//     (kubectl reads the Node first: get on nodes, a cluster-scoped
//     resource no namespaced Role grants);
//   - debug.go:710 generateNodeDebugPod: container "debugger", labels
//     app.kubernetes.io/managed-by=kubectl-debug, nodeName the node,
//     restartPolicy Never, a toleration of every taint;
//   - profiles.go:297 the sysadmin profile: setPrivileged (:374),
//     useHostNamespaces (:348: hostNetwork, hostPID, hostIPC) and
//     mountRootPartition (:326: hostPath "/" at /host, volume "host-root").
func kubectlDebugNode(ns, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kubeapi.Name("node-debugger-" + node),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "kubectl-debug"}},
		Spec: corev1.PodSpec{
			HostNetwork: true, HostPID: true, HostIPC: true,
			NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Volumes: []corev1.Volume{{Name: "host-root",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
			Containers: []corev1.Container{{
				Name: "debugger", Image: "busybox", Stdin: true, TTY: true,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				VolumeMounts:             []corev1.VolumeMount{{Name: "host-root", MountPath: "/host"}},
				SecurityContext:          &corev1.SecurityContext{Privileged: ptr(true)},
			}},
		},
	}
}

var peers = []peer{
	{name: "kubectl-flame", job: true, pod: kubectlFlame, container: "kubectl-flame", hostPath: "target-filesystem", hostNamespaces: "hostPID=true"},
	{name: "kubectl-prof", job: true, pod: kubectlProf, container: "kubectl-prof", hostPath: "target-filesystem", hostNamespaces: "hostPID=true",
		capabilities: `"PERFMON", "SYSLOG"`},
	{name: "kubectl debug node --profile=sysadmin", pod: kubectlDebugNode, container: "debugger", hostPath: "host-root",
		hostNamespaces: "hostNetwork=true, hostPID=true, hostIPC=true"},
}

// unprivileged is p without privileged: true, the one field a server
// started without --allow-privileged refuses before Pod Security
// admission sees the pod.
func unprivileged(p *corev1.Pod) *corev1.Pod {
	for i := range p.Spec.Containers {
		if sc := p.Spec.Containers[i].SecurityContext; sc != nil {
			sc.Privileged = nil
		}
	}
	return p
}

// disallowedPrivileged is what an API server started without
// --allow-privileged (kube-apiserver's default; kubeadm, and so kind,
// passes true) answers a privileged container, in
// validation, before any admission plugin.
const disallowedPrivileged = "securityContext.privileged: Forbidden: disallowed by cluster policy"

// privilegedAllowed tells whether the API server accepts privileged
// containers at all, by a server-side dry run in ns (which must admit
// privileged pods).
func privilegedAllowed(t *testing.T, n *kubenode.Node, ns string) bool {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "privileged-probe"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}}}
	_, err := n.API.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil:
		return true
	case apierrors.IsInvalid(err) && strings.Contains(err.Error(), disallowedPrivileged):
		return false
	}
	t.Fatalf("a privileged pod in a privileged namespace (dry run): %v", err)
	return false
}

// warnings collects the Warning headers the API server sends one client.
type warnings struct {
	mu    sync.Mutex
	texts []string
}

func (w *warnings) HandleWarningHeader(_ int, _, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.texts = append(w.texts, text)
}

func (w *warnings) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.texts, "\n")
}

// TestPeersNeedWhatRestrictedRefuses: what the other tools would create
// to profile a pod of a namespace enforcing the restricted Pod Security
// Standard (kubectl-flame's and kubectl-prof's agent pods for a
// containerd node, kubectl debug node's sysadmin pod), created there by a
// cluster admin: the API server refuses each at admission, before any
// image is pulled, naming the privileged container, the host namespaces
// and the hostPath volume (and kubectl-prof's added capabilities). A
// namespace enforcing baseline refuses them too; only a privileged one
// admits them (a server-side dry run, nothing made). The Jobs
// kubectl-flame and kubectl-prof submit are admitted with a warning only:
// the refusal would come later, to the Job controller, as a FailedCreate
// event on the Job. safeattach's plugin makes no pod at all
// (TestPluginPortForward).
//
// An API server started without --allow-privileged (kube-apiserver's
// default; scripts/kube-apiserver.sh allows them) refuses privileged: true in validation, before Pod
// Security admission: there the full spec is shown refused for that, and
// the spec without it is shown refused by Pod Security for all the rest.
func TestPeersNeedWhatRestrictedRefuses(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ctx := context.Background()
	enforce := func(level string) string {
		return n.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": level})
	}
	levels := []struct{ level, ns string }{{"restricted", enforce("restricted")}, {"baseline", enforce("baseline")}}
	privileged := enforce("privileged")
	allowed := privilegedAllowed(t, n, privileged)
	if !allowed {
		t.Logf("this API server runs without --allow-privileged: privileged containers are refused everywhere (%q), before Pod Security admission; the specs without privileged: true are shown to Pod Security", disallowedPrivileged)
	}
	// spec is the peer's pod as this server can judge it under Pod
	// Security: all of it where privileged containers are allowed.
	spec := func(p peer, ns string) *corev1.Pod {
		if allowed {
			return p.pod(ns, n.Name)
		}
		return unprivileged(p.pod(ns, n.Name))
	}

	for _, p := range peers {
		t.Run(strings.ReplaceAll(p.name, " ", "_"), func(t *testing.T) {
			pods := n.API.Client.CoreV1().Pods
			for _, l := range levels {
				if !allowed {
					pod := p.pod(l.ns, n.Name)
					_, err := pods(l.ns).Create(ctx, pod, metav1.CreateOptions{})
					if err == nil {
						n.Delete(t, l.ns, pod.Name)
					}
					t.Logf("%s's pod, %s namespace: %v", p.name, l.level, err)
					if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), disallowedPrivileged) {
						t.Errorf("%s's privileged pod on a server without --allow-privileged: %v, want Invalid: %s", p.name, err, disallowedPrivileged)
					}
				}
				pod := spec(p, l.ns)
				_, err := pods(l.ns).Create(ctx, pod, metav1.CreateOptions{})
				if err == nil {
					n.Delete(t, l.ns, pod.Name)
					t.Fatalf("%s's pod admitted in a namespace enforcing %s", p.name, l.level)
				}
				what := "pod"
				if !allowed {
					what = "pod without privileged: true"
				}
				t.Logf("%s's %s, %s namespace: %v", p.name, what, l.level, err)
				want := []string{`violates PodSecurity "` + l.level + `:latest"`, `host namespaces (` + p.hostNamespaces + `)`}
				if allowed {
					want = append(want, `privileged (container "`+p.container+`" must not set securityContext.privileged=true)`)
				}
				if l.level == "restricted" {
					want = append(want, `restricted volume types (volume "`+p.hostPath+`" uses restricted volume type "hostPath")`)
				} else {
					want = append(want, `hostPath volumes (volume "`+p.hostPath+`")`)
				}
				if p.capabilities != "" {
					want = append(want, `container "`+p.container+`" must not include `+p.capabilities+` in securityContext.capabilities.add`)
				}
				for _, w := range want {
					if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), w) {
						t.Errorf("%s's pod in a %s namespace: %v\nwant Forbidden, naming %s", p.name, l.level, err, w)
					}
				}
			}

			// The spec is valid otherwise: a privileged namespace admits
			// it (a dry run: nothing is stored, nothing runs).
			if _, err := pods(privileged).Create(ctx, spec(p, privileged), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s's pod in a privileged namespace (dry run): %v", p.name, err)
			}

			if !p.job {
				return
			}
			// The Job itself is admitted in the restricted namespace, with
			// the API server's warning; its controller's pod would be
			// refused as above.
			ns := levels[0].ns
			var w warnings
			cfg := rest.CopyConfig(n.API.Config)
			cfg.WarningHandler = &w
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := spec(p, ns)
			job := &batchv1.Job{
				ObjectMeta: *tmpl.ObjectMeta.DeepCopy(),
				Spec: batchv1.JobSpec{Parallelism: ptr(int32(1)), Completions: ptr(int32(1)), BackoffLimit: ptr(int32(2)),
					TTLSecondsAfterFinished: ptr(int32(5)),
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations},
						Spec: tmpl.Spec}},
			}
			jobs := n.API.Client.BatchV1().Jobs(ns)
			if _, err := client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s's Job in the restricted namespace: %v", p.name, err)
			}
			t.Cleanup(func() {
				// Background: batch/v1 Jobs orphan by default, through a
				// finalizer only the garbage collector (not running
				// here) would remove.
				bg := metav1.DeletePropagationBackground
				if err := jobs.Delete(context.Background(), job.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
					t.Errorf("delete Job %s/%s: %v", ns, job.Name, err)
				}
				if _, err := jobs.Get(context.Background(), job.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("Job %s/%s still there after its deletion: %v", ns, job.Name, err)
				}
			})
			t.Logf("%s's Job, restricted namespace: admitted, with the warning %q", p.name, &w)
			if got := w.String(); !strings.Contains(got, `would violate PodSecurity "restricted:latest"`) || !strings.Contains(got, "host namespaces") {
				t.Errorf("%s's Job: no PodSecurity warning naming host namespaces: %q", p.name, got)
			}
		})
	}
}
