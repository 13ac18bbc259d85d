package realnode

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// chartSuffixes are the suffixes applyChart gave the chart's cluster-wide
// objects, by release namespace.
var chartSuffixes sync.Map

// chartClusterRole is the name applyChart gave the chart's ClusterRole
// base for the release in ns.
func chartClusterRole(t *testing.T, ns, base string) string {
	t.Helper()
	s, ok := chartSuffixes.Load(ns)
	if !ok {
		t.Fatalf("no chart applied in %s", ns)
	}
	return base + "-" + s.(string)
}

// TestPluginPortForward: a developer's whole way, on the real node. A
// ServiceAccount of namespace A (which enforces the restricted Pod
// Security Standard) is bound there to the chart's safeattach-profiler
// ClusterRole; the chart's Role lets every authenticated user port-forward
// to the node agent. kubectl safeattach profile, with that user's
// kubeconfig and no node address, finds the pod's node and the agent pod
// there and reaches the agent through the API server and the kubelet (a
// port-forward), and writes a flame graph; the pod gets an Event naming
// the user. On a pod of namespace B, where the same user may only read
// pods, the agent answers 403 naming the missing permission and nothing
// reaches B's JVM.
func TestPluginPortForward(t *testing.T) {
	n := kubenode.Get(t)
	ingest := newIngest(t, n.IP)
	image := daemonImage(t, n)
	jvmImage := n.JVMImage(t, testenv.JDK17(t))
	daemonNS := n.Namespace(t, nil)
	repo, tag, _ := strings.Cut(image, ":")
	template := applyChart(t, n, daemonNS, "image.repository="+repo, "image.tag="+tag, "image.pullPolicy=Never",
		"pyroscope.url="+ingest.url, "onDemand.enabled=true")
	agentPod := n.Run(t, daemonPod(template, daemonNS, "safeattach-daemon-node"))

	a := n.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	b := n.Namespace(t, nil)
	orders := runJVM(t, n, restricted(jvmPod(a, "orders", jvmImage, "2", "spin")))
	other := runJVM(t, n, jvmPod(b, "orders", jvmImage, "2", "spin"))
	otherPID := kubenode.HostPID(t, kubenode.ContainerID(other, "app"), "/java")

	// What a cluster admin runs: the chart's role bound in the team's
	// namespace; in B, the user may only read pods.
	c := n.API.Client.RbacV1()
	ctx := context.Background()
	token := n.API.ServiceAccountToken(t, a, "dev")
	dev := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "dev", Namespace: a}}
	if _, err := c.RoleBindings(a).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "team-profiles"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: chartClusterRole(t, daemonNS, "safeattach-profiler")},
		Subjects: dev}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Roles(b).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "viewer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RoleBindings(b).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "viewer"}, Subjects: dev}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The chart binds nobody to its port-forward Role: the admin binds
	// the team.
	if _, err := c.RoleBindings(daemonNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "team-pf"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "safeattach-portforward"}, Subjects: dev}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := n.API.UserKubeconfig(t, a, &clientcmdapi.AuthInfo{Token: token})
	plugin := buildPlugin(t)
	kubectl := func(args ...string) (stdout, stderr string, code int, took time.Duration) {
		t.Helper()
		cmd := exec.Command(plugin, append(args, "--kubeconfig", kubeconfig, "--agent-namespace", daemonNS)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		began := time.Now()
		cmd.Run()
		// The developer's session, as the closing note shows it.
		t.Logf("$ kubectl safeattach %s   # exit %d, %v\n%s%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(),
			time.Since(began).Round(time.Millisecond), tailText(o.String(), 600), tailText(e.String(), 600))
		return o.String(), e.String(), cmd.ProcessState.ExitCode(), time.Since(began)
	}

	flame := filepath.Join(t.TempDir(), "flame.html")
	_, errOut, code, took := kubectl("profile", "orders", "-e", "itimer", "-d", "1s", "-o", "flamegraph", "-f", flame)
	html, err := os.ReadFile(flame)
	if code != 0 || err != nil || !bytes.Contains(html, []byte("<html")) {
		t.Fatalf("kubectl safeattach profile orders: exit %d, %v\n%s\n%.300s", code, err, errOut, html)
	}
	// The first profile of the pod's JVM, started seconds ago, waits
	// until it is 10 s old (the image has no name for its uid, so the JVM
	// writes no hsperfdata to say it has initialised: docs/attach-protocol.md).
	t.Logf("kubectl safeattach profile -d 1s through the port-forward, the JVM's first: %v, %d bytes", took.Round(time.Millisecond), len(html))
	if _, errOut, code, took := kubectl("profile", "orders", "-e", "itimer", "-d", "1s", "-o", "flamegraph", "-f", flame); code != 0 {
		t.Fatalf("kubectl safeattach profile orders, again: exit %d\n%s", code, errOut)
	} else {
		t.Logf("kubectl safeattach profile -d 1s through the port-forward, the next: %v", took.Round(time.Millisecond))
	}
	// The same profile by the CLI on the node, for comparison.
	testenv.BuildCLI(t) // built before the clock starts
	began := time.Now()
	if _, errOut, code := cli(t, n, "profile", "--agent", testenv.ProfilerOrLookalike(t), "-e", "itimer", "-d", "1", "-o", "flamegraph", "-f", filepath.Join(t.TempDir(), "f.html"), "pod:"+a+"/orders"); code != 0 {
		t.Fatalf("the CLI on the node: exit %d\n%s", code, errOut)
	}
	t.Logf("safeattach profile -d 1 on the node: %v", time.Since(began).Round(time.Millisecond))

	// check through the same tunnel: the verdict, nothing sent.
	if out, errOut, code, _ := kubectl("check", "orders", "-e", "itimer"); code != 0 || !strings.HasPrefix(out, "ALLOWED  "+a+"/orders") {
		t.Fatalf("kubectl safeattach check orders: exit %d\n%s\n%s", code, out, errOut)
	}

	// start, status, inspect and stop, each through a tunnel of its
	// own: the profile runs between the plugin's runs.
	if out, errOut, code, _ := kubectl("start", "orders", "-e", "itimer", "-o", "flamegraph", "--discard-after", "2m"); code != 0 || !strings.HasPrefix(out, "started: "+a+"/orders container app, async-profiler") {
		t.Fatalf("kubectl safeattach start orders: exit %d\n%s\n%s", code, out, errOut)
	}
	if out, errOut, code, _ := kubectl("status", "orders"); code != 0 || !strings.HasPrefix(out, a+"/orders container app: async-profiler, event itimer, format flamegraph") {
		t.Fatalf("kubectl safeattach status orders: exit %d\n%s\n%s", code, out, errOut)
	}
	if out, errOut, code, _ := kubectl("inspect", "orders"); code != 0 || !strings.Contains(out, "jvm        hotspot 17") || !strings.Contains(out, "uid 1000") {
		t.Fatalf("kubectl safeattach inspect orders: exit %d\n%s\n%s", code, out, errOut)
	} else {
		t.Logf("kubectl safeattach inspect orders (restricted pod, through the port-forward):\n%s", out)
	}
	stopped := filepath.Join(t.TempDir(), "stopped.html")
	if _, errOut, code, took := kubectl("stop", "orders", "-f", stopped); code != 0 {
		t.Fatalf("kubectl safeattach stop orders: exit %d\n%s", code, errOut)
	} else if html, err := os.ReadFile(stopped); err != nil || !bytes.Contains(html, []byte("<html")) {
		t.Fatalf("stop wrote no flame graph: %v %.300s", err, html)
	} else {
		t.Logf("kubectl safeattach stop through the port-forward: %v, %d bytes", took.Round(time.Millisecond), len(html))
	}

	// kubectl describe pod shows who profiled it.
	user := "system:serviceaccount:" + a + ":dev"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ev, err := n.API.Client.CoreV1().Events(a).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=orders"})
		if err == nil && hasEvent(ev.Items, "Profiled", user) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Profiled event naming %s on %s/orders: %+v", user, a, ev)
		}
	}

	// A client-certificate user (the API server's client CA, which the
	// agent reads from kube-system), bound as a group.
	if _, err := c.RoleBindings(a).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "team-certs"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: chartClusterRole(t, daemonNS, "safeattach-profiler")},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "team-a", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RoleBindings(daemonNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "team-a-pf"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "safeattach-portforward"},
		Subjects: []rbacv1.Subject{{Kind: "Group", Name: "team-a", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	certConfig := n.API.UserKubeconfig(t, a, n.API.ClientCertUser(t, "alice", "team-a"))
	cmd := exec.Command(plugin, "profile", "orders", "-e", "itimer", "-d", "1s", "-o", "collapsed", "--kubeconfig", certConfig, "--agent-namespace", daemonNS)
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "Target") {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("a client-certificate user: %v\n%.300s\n%s", err, out, stderr)
	}

	_, errOut, code, _ = kubectl("profile", "-n", b, "orders", "-e", "itimer", "-d", "1s")
	want := `cannot create profiles.safeattach.io "orders" in namespace "` + b + `"`
	if code != 1 || !strings.Contains(errOut, "forbidden (403)") || !strings.Contains(errOut, want) {
		t.Fatalf("profile -n %s orders: exit %d, want 1 with a 403 naming %s:\n%s", b, code, want, errOut)
	}
	if maps := testenv.Maps(t, otherPID); strings.Contains(maps, "syncProfiler") || strings.Contains(maps, "lookalike") {
		t.Fatal("refused, yet an agent is in B's JVM")
	}

	// The same decisions from the API server's side: its audit log of
	// the SubjectAccessReviews the node agent sent for this user.
	decisions := accessReviews(t, n.API.Dir, user)
	allowedA := slices.ContainsFunc(decisions, func(d string) bool {
		return strings.HasPrefix(d, "create profiles.safeattach.io/orders in "+a+": allowed")
	})
	deniedB := slices.ContainsFunc(decisions, func(d string) bool {
		return strings.HasPrefix(d, "create profiles.safeattach.io/orders in "+b+": denied")
	})
	if !allowedA || !deniedB {
		t.Errorf("the API server's audit log does not show create allowed in %s and denied in %s for %s:\n%s", a, b, user, strings.Join(decisions, "\n"))
	}
	t.Logf("SubjectAccessReviews for %s, as the API server answered them:\n%s", user, strings.Join(decisions, "\n"))
	_ = orders

	// Whoever may port-forward to the agent reaches its metrics port
	// too, over the pod's loopback: /metrics, which names the pods
	// profiled on the node in every namespace, is refused there, and
	// still served over the pod network (Prometheus, the probes).
	forwarded := portForward(t, kubeconfig, daemonNS, agentPod.Name, 9464)
	resp, err := http.Get("http://" + forwarded + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("safeattach_session")) {
		t.Errorf("/metrics through a port-forward: %s, want 403:\n%.500s", resp.Status, body)
	}
	if resp, err := http.Get("http://" + forwarded + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz through a port-forward: %v %v", resp, err)
	}
	if running, err := n.API.Client.CoreV1().Pods(daemonNS).Get(ctx, agentPod.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if fams := scrapeMetrics(t, running); fams["safeattach_build_info"] == nil {
		t.Errorf("/metrics over the pod network: no safeattach_build_info")
	}

	// A pod that only looks like the agent (its label, node and port,
	// made by whoever may create pods in the agent's namespace) gets no
	// credentials: the plugin wants the DaemonSet's own pod.
	impostor := jvmPod(daemonNS, "impostor", jvmImage, "0")
	impostor.Labels = map[string]string{"app.kubernetes.io/name": "safeattach-daemon", "impostor": "yes"}
	impostor.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "on-demand", ContainerPort: 9465}}
	n.Run(t, impostor)
	_, errOut, code, _ = kubectl("profile", "orders", "-e", "itimer", "-d", "1s", "--agent-selector", "app.kubernetes.io/name=safeattach-daemon,impostor=yes")
	if code != 1 || !strings.Contains(errOut, "no DaemonSet controls it") {
		t.Fatalf("profile through an impostor agent pod: exit %d, want 1, refused before any credential is sent:\n%s", code, errOut)
	}
}

// accessReviews are the SubjectAccessReviews about user in the API
// server's audit log (scripts/kube-apiserver.sh records them), one line
// each: "VERB RESOURCE.GROUP/NAME in NAMESPACE: allowed|denied (reason)".
func accessReviews(t *testing.T, apiDir, user string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(apiDir, "run", "audit.log"))
	if err != nil {
		t.Fatalf("the API server's audit log: %v", err)
	}
	defer f.Close()
	type review struct {
		Spec struct {
			User string `json:"user"`
			RA   *struct {
				Namespace, Verb, Group, Resource, Name string
			} `json:"resourceAttributes"`
		} `json:"spec"`
		Status struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"status"`
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Stage    string `json:"stage"`
			Request  review `json:"requestObject"`
			Response review `json:"responseObject"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.Request.Spec.User != user || ev.Request.Spec.RA == nil {
			continue
		}
		ra := ev.Request.Spec.RA
		verdict := "denied"
		if ev.Response.Status.Allowed {
			verdict = "allowed"
		}
		line := fmt.Sprintf("%s %s.%s/%s in %s: %s", ra.Verb, ra.Resource, ra.Group, ra.Name, ra.Namespace, verdict)
		if r := ev.Response.Status.Reason; r != "" {
			line += " (" + r + ")"
		}
		out = append(out, line)
	}
	return out
}

// portForward forwards a loopback port to pod's port as kubeconfig's
// user, as an attacker holding only the port-forward Role would (kubectl
// port-forward reads the pod first, which that Role does not let), until
// the test ends; host:port.
func portForward(t *testing.T, kubeconfig, ns, pod string, port int) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u),
		[]string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() { close(stop); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward to %s/%s:%d: %v %s", ns, pod, port, err, errOut.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("port-forward to %s/%s:%d not ready in 20 s", ns, pod, port)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		t.Fatalf("port-forward: no local port: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
}

func hasEvent(events []corev1.Event, reason, user string) bool {
	for _, e := range events {
		if e.Reason == reason && strings.Contains(e.Message, user) {
			return true
		}
	}
	return false
}

// buildPlugin builds kubectl-safeattach, as make plugin does.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-safeattach")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/safeattach/safeattach/cmd/kubectl-safeattach")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build kubectl-safeattach: %v\n%s", err, out)
	}
	return bin
}
