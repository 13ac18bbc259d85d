package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// apiCounter is a TLS proxy in front of the API server that counts the
// pod requests one client makes: LIST, WATCH (watch=true, including a
// streamed initial list), GET.
type apiCounter struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   map[string]int
	log []string
}

func newAPICounter(t *testing.T, api *kubeapi.API) *apiCounter {
	t.Helper()
	target, err := url.Parse(api.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := rest.TLSConfigFor(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: tlsConf}
	proxy.FlushInterval = -1 // a watch is a stream
	c := &apiCounter{n: map[string]int{}}
	c.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/pods") {
			verb := "LIST"
			if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
				verb = "WATCH"
			}
			c.mu.Lock()
			c.n[verb]++
			c.log = append(c.log, verb+" "+r.URL.RequestURI())
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *apiCounter) counts() (map[string]int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := map[string]int{}
	for k, v := range c.n {
		n[k] = v
	}
	return n, append([]string(nil), c.log...)
}

// kubeconfig writes a kubeconfig for the proxy with a bearer token.
func (c *apiCounter) kubeconfig(t *testing.T, token string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.srv.Certificate().Raw})
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(caFile, ca, 0o600)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, c.srv.URL, caFile, token)), 0o600)
	return kc
}

// applyRBAC creates the chart's ServiceAccount, ClusterRole and bindings
// (from deploy/kubernetes/safeattach.yaml, the chart's rendering) in ns,
// the cluster-wide ones under a name of the test's own (a binding to a
// built-in system: role binds that role), and returns a token of the
// ServiceAccount.
func applyRBAC(t *testing.T, api *kubeapi.API, ns string) string {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(manifests, "safeattach.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	suffix := kubeapi.Name("t")
	var sa string
	for _, doc := range strings.Split(string(data), "\n---") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil || string(j) == "null" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(j, nil, nil)
		if err != nil {
			t.Fatalf("manifest: %v\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			o.Namespace, sa = ns, o.Name
			_, err = api.Client.CoreV1().ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			o.Name += "-" + suffix
			_, err = api.Client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			name := o.Name
			t.Cleanup(func() { api.Client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
		case *rbacv1.ClusterRoleBinding:
			o.Name += "-" + suffix
			if !strings.HasPrefix(o.RoleRef.Name, "system:") { // a built-in role keeps its name
				o.RoleRef.Name += "-" + suffix
			}
			for i := range o.Subjects {
				o.Subjects[i].Namespace = ns
			}
			_, err = api.Client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			name := o.Name
			t.Cleanup(func() {
				api.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
			})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if sa == "" {
		t.Fatal("the manifests have no ServiceAccount")
	}
	tr, err := api.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// TestDaemonWatchesTheAPIServer: the daemon, off-cluster with the
// chart's RBAC (its ServiceAccount's token), against a real API server:
// a pod that becomes Running is profiled, a deleted pod's profiler is
// stopped, each as soon as the watch says so — and all the while the
// API server sees one WATCH (whose first events are the list) and no
// LIST per timer sync. 110 other pods with 123 KiB of annotations each
// on the node cost the daemon what their safeattach annotations cost.
func TestDaemonWatchesTheAPIServer(t *testing.T) {
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	bin := buildDaemon(t)
	ns := api.Namespace(t)
	node := kubeapi.Name("node")
	token := applyRBAC(t, api, ns)
	counter := newAPICounter(t, api)

	// Filler pods: what a busy node's list carries besides ours.
	big := strings.Repeat("x", 123<<10)
	for i := 0; i < 110; i++ {
		api.Pod(t, ns, fmt.Sprintf("filler-%03d", i), node, map[string]string{"example.com/blob": big})
	}
	pod := api.Pod(t, ns, "orders", node, map[string]string{
		fleet.AnnotationEnabled: "true", fleet.AnnotationEvent: "itimer", fleet.AnnotationWindow: "1s"})
	id := strings.Repeat("c7", 32)
	wrap, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+string(pod.UID)+"/"+id, wrap, jvm)

	config := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(config, []byte(fmt.Sprintf(`{"agent": %q, "sync_interval": "1s", "window": "1s"}`, lib)), 0o644)
	mem := testenv.NewMemCgroup(t, 128<<20)
	started := time.Now()
	d := startKubeDaemon(t, bin, config, counter.kubeconfig(t, token), node, mem.Wrap)

	began := time.Now()
	api.Running(t, ns, "orders", "containerd://"+id)
	d.WaitOutput(t, `"msg":"profiling"`, 30*time.Second)
	running := time.Since(began)
	time.Sleep(5 * time.Second) // timer syncs (every second) meanwhile
	began = time.Now()
	if err := api.Delete(ns, "orders"); err != nil {
		t.Fatal(err)
	}
	d.WaitOutput(t, "pod left or opted out: profiler stopped", 30*time.Second)
	deleted := time.Since(began)
	t.Logf("pod Running -> profiling: %v; pod deleted -> profiler stopped: %v", running.Round(time.Millisecond), deleted.Round(time.Millisecond))

	// SAFEATTACH_KUBE_SOAK (a duration) keeps the daemon watching that
	// much longer before the requests are counted: the reflector ends
	// each WATCH after 5-10 minutes and resumes it from its last
	// resourceVersion, which must not be a LIST.
	if soak, err := time.ParseDuration(os.Getenv("SAFEATTACH_KUBE_SOAK")); err == nil {
		t.Logf("soaking %v", soak)
		time.Sleep(soak)
	}
	n, log := counter.counts()
	t.Logf("pod requests through the proxy: %v\n%s", n, strings.Join(log, "\n"))
	if elapsed := time.Since(started); n["LIST"] > 1 || n["WATCH"] < 1 || n["WATCH"] > 1+int(elapsed/(5*time.Minute)) {
		t.Errorf("want at most one LIST and one WATCH per 5 minutes (the server ends a watch after 5-10); got %v in %v", n, elapsed.Round(time.Second))
	}
	for _, l := range log {
		if !strings.Contains(l, "fieldSelector=spec.nodeName%3D"+node) {
			t.Errorf("a request without the node's field selector: %s", l)
		}
	}
	peak := mem.Peak()
	t.Logf("daemon peak memory with 110 filler pods of 123 KiB annotations: %.1f MiB (OOM kills %d)", float64(peak)/(1<<20), mem.OOMKills())
	if mem.OOMKills() > 0 || !d.Alive() {
		t.Fatalf("the daemon was OOM-killed or died:\n%s", tail(d.Output(), 3000))
	}
	stopDaemon(t, d, 40*time.Second)
}

// startKubeDaemon runs the daemon with config, off-cluster against the
// API server kubeconfig names, as node, and waits until it is ready;
// wrap, if not nil, prepares the command (a memory cgroup).
func startKubeDaemon(t *testing.T, bin, config, kubeconfig, node string, wrap func(*exec.Cmd)) *testenv.Process {
	t.Helper()
	cmd := exec.Command(bin, "--config", config, "--kubeconfig", kubeconfig, "--node", node, "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "KUBECONFIG=", "KUBERNETES_SERVICE_HOST=")
	if wrap != nil {
		wrap(cmd)
	}
	d := testenv.Start(t, cmd)
	d.WaitOutput(t, "safeattach-daemon serving", 30*time.Second)
	waitReady(t, d)
	return d
}

// waitReady waits until the daemon's /readyz answers 200 (its first
// list is in).
func waitReady(t *testing.T, d *testenv.Process) {
	t.Helper()
	addr := ""
	for _, line := range strings.Split(d.Output(), "\n") {
		if i := strings.Index(line, `"addr":"`); i >= 0 && strings.Contains(line, "safeattach-daemon serving") {
			addr = strings.SplitN(line[i+8:], `"`, 2)[0]
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not ready in 30 s:\n%s", tail(d.Output(), 2000))
}
