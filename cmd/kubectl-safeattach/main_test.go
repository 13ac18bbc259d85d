package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
	"github.com/safeattach/safeattach/kube/podwatch"
)

// lockedBuffer is the agent's log, written by its handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agent serves the on-demand API of a node running pod orders of
// namespace a (a JVM in its kubelet-named cgroup) and pod idle of a
// (Pending), as safeattach-daemon does, over TLS; caFile is the PEM of
// its certificate.
func agent(t *testing.T, api *kubeapi.API, a string) (srv *httptest.Server, caFile string, log *lockedBuffer) {
	t.Helper()
	node := kubeapi.Name("node")
	pod := api.Pod(t, a, "orders", node, nil)
	api.Pod(t, a, "idle", node, nil)
	_, sum := testenv.PodIDs(t)
	wrap, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+string(pod.UID)+"/"+sum, wrap, jvm)
	api.Running(t, a, "orders", "containerd://"+sum)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	watch, err := podwatch.Start(ctx, api.Config, node)
	if err != nil {
		t.Fatal(err)
	}
	log = &lockedBuffer{}
	d, err := fleet.New(fleet.Config{Node: node, Pods: watch, Lib: testenv.BuildAgent(t, testenv.AgentFixedLookalike),
		Logger: slog.New(slog.NewJSONHandler(log, nil)), Metrics: fleet.NewMetrics()})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		pods, err := watch.Pods(ctx)
		if err == nil && len(pods) == 2 && (pods[0].Phase == "Running" || pods[1].Phase == "Running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node's watch has not seen its pods in 30 s: %v %v", pods, err)
		}
	}
	authn, authz, err := fleet.DelegatingAuth(ctx, api.Client, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.OnDemandHandler(fleet.OnDemandConfig{Authenticator: authn, Authorizer: authz})
	if err != nil {
		t.Fatal(err)
	}
	// As the node agent serves it: a client certificate asked for, and
	// verified by the authenticator against the cluster's client CA.
	srv = httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "agent-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, log
}

// testVersion is the version the tests build the plugin with.
const testVersion = "v0.0.0-test"

var (
	pluginOnce sync.Once
	pluginPath string
	pluginErr  error
)

// plugin builds kubectl-safeattach once per test process.
func plugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kubectl-safeattach-")
		if err != nil {
			pluginErr = err
			return
		}
		pluginPath = filepath.Join(dir, "kubectl-safeattach")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+testVersion, "-o", pluginPath, "github.com/safeattach/safeattach/cmd/kubectl-safeattach")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginErr = errors.New("go build kubectl-safeattach: " + err.Error() + "\n" + string(out))
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginPath
}

type ran struct {
	code           int
	stdout, stderr string
}

// kubectl runs the plugin with args and $KUBECONFIG=kubeconfig.
func kubectl(t *testing.T, kubeconfig string, args ...string) ran {
	t.Helper()
	cmd := exec.Command(plugin(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := ran{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// TestLiveProfile: kubectl safeattach profile, as a ServiceAccount bound
// to create profiles.safeattach.io in namespace a, through the node
// agent's on-demand API checked by the real API server: with the
// kubeconfig's token it writes the pod's profile to -f (and nothing
// else in that directory); with an exec credential plugin's token and
// the context's namespace it writes it to stdout; in namespace b it
// exits 1 naming the missing permission, leaving no file; a token the
// API server does not know exits 1 (401); the agent's refusal of a pod
// not running exits 2, with --json its JSON result on stdout.
func TestLiveProfile(t *testing.T) {
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	a, b := api.Namespace(t), api.Namespace(t)
	srv, ca, log := agent(t, api, a)
	token := api.ServiceAccountToken(t, a, "profiler", rbacv1.PolicyRule{
		APIGroups: []string{"safeattach.io"}, Resources: []string{"profiles"}, Verbs: []string{"create"}})
	tokenUser := api.UserKubeconfig(t, "", &clientcmdapi.AuthInfo{Token: token})
	direct := []string{"--direct", srv.URL, "--agent-ca", ca, "-e", "itimer", "-d", "2s", "-o", "collapsed"}

	dir := t.TempDir()
	out := filepath.Join(dir, "orders.collapsed")
	r := kubectl(t, tokenUser, append([]string{"profile", "-n", a, "orders", "-f", out}, direct...)...)
	profile, err := os.ReadFile(out)
	if r.code != 0 || err != nil || !strings.Contains(string(profile), "[itimer]") {
		t.Fatalf("profile -n %s orders -f: exit %d, %v\nstderr: %s\nfile: %.1000s\nagent log:\n%s", a, r.code, err, r.stderr, profile, log)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("-f left more than the profile in its directory: %v", entries)
	}

	// An exec credential plugin presents the same token; the context's
	// namespace is the default.
	marker := filepath.Join(t.TempDir(), "ran")
	script := filepath.Join(t.TempDir(), "credential")
	cred := `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"` + token + `"}}`
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\necho '"+cred+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	execUser := api.UserKubeconfig(t, a, &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		APIVersion: "client.authentication.k8s.io/v1", Command: script, InteractiveMode: clientcmdapi.NeverExecInteractiveMode}})
	r = kubectl(t, execUser, append([]string{"profile", "orders"}, direct...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "[itimer]") {
		t.Errorf("profile orders as an exec plugin's user: exit %d\nstderr: %s\nstdout: %.1000s\nagent log:\n%s", r.code, r.stderr, r.stdout, log)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the exec credential plugin did not run: %v", err)
	}

	// A client-certificate user of a group bound in a: the agent
	// verifies the certificate against the client CA the API server
	// publishes, and asks about the group.
	if _, err := api.Client.RbacV1().RoleBindings(a).Create(context.Background(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "team-a"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "profiler"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", Name: "team-a", APIGroup: "rbac.authorization.k8s.io"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	certUser := api.UserKubeconfig(t, a, api.ClientCertUser(t, "alice", "team-a"))
	r = kubectl(t, certUser, append([]string{"profile", "orders"}, direct...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "[itimer]") {
		t.Errorf("profile orders as a client-certificate user: exit %d\nstderr: %s\nagent log:\n%s", r.code, r.stderr, log)
	}
	// A certificate the cluster's CA did not sign is nobody.
	r = kubectl(t, api.UserKubeconfig(t, a, kubeapi.SelfSignedCertUser(t, "mallory", "team-a")), append([]string{"profile", "orders"}, direct...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "unauthenticated (401)") {
		t.Errorf("profile with a self-signed client certificate: exit %d, want 1 (401)\nstderr: %s", r.code, r.stderr)
	}

	// check: the same permission and judgement, nothing sent.
	checkFlags := []string{"--direct", srv.URL, "--agent-ca", ca, "-e", "itimer"}
	r = kubectl(t, tokenUser, append([]string{"check", "-n", a, "orders"}, checkFlags...)...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ALLOWED  "+a+"/orders") {
		t.Errorf("check -n %s orders: exit %d, want 0 and ALLOWED\nstdout: %s\nstderr: %s", a, r.code, r.stdout, r.stderr)
	}
	r = kubectl(t, tokenUser, append([]string{"check", "-n", b, "orders"}, checkFlags...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "forbidden (403)") {
		t.Errorf("check -n %s orders: exit %d, want 1 (403)\nstderr: %s", b, r.code, r.stderr)
	}

	outB := filepath.Join(dir, "b.collapsed")
	r = kubectl(t, tokenUser, append([]string{"profile", "-n", b, "orders", "-f", outB}, direct...)...)
	want := `forbidden (403): user "system:serviceaccount:` + a + `:profiler" cannot create profiles.safeattach.io "orders" in namespace "` + b + `"`
	if r.code != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
		t.Errorf("profile -n %s orders: exit %d, want 1 with %s\nstderr: %s", b, r.code, want, r.stderr)
	}
	if _, err := os.Stat(outB); !os.IsNotExist(err) {
		t.Errorf("a refused profile left %s: %v", outB, err)
	}

	bad := api.UserKubeconfig(t, a, &clientcmdapi.AuthInfo{Token: "garbage"})
	r = kubectl(t, bad, append([]string{"profile", "orders"}, direct...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "unauthenticated (401)") {
		t.Errorf("profile with a bad token: exit %d, want 1 (401)\nstderr: %s", r.code, r.stderr)
	}

	r = kubectl(t, tokenUser, append([]string{"profile", "-n", a, "idle", "--json"}, direct...)...)
	var res map[string]any
	if r.code != 2 || json.Unmarshal([]byte(r.stdout), &res) != nil || res["exit_code"] != 2.0 || res["command"] != "profile" || !strings.Contains(r.stderr, "not Running") {
		t.Errorf("profile --json of a pod not running: exit %d, want 2 (refused) and the agent's JSON on stdout\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// --json: a 403's exit code in the JSON is the plugin's.
	r = kubectl(t, tokenUser, append([]string{"check", "-n", b, "orders", "--json"}, checkFlags...)...)
	if r.code != 1 || json.Unmarshal([]byte(r.stdout), &res) != nil || res["exit_code"] != 1.0 || res["command"] != "check" {
		t.Errorf("check --json -n %s orders: exit %d, want 1 and the agent's JSON saying 1\nstdout: %s\nstderr: %s", b, r.code, r.stdout, r.stderr)
	}

	// Without --direct the plugin finds the agent through the API server
	// (the port-forward itself runs against a real kubelet, in
	// internal/realnode): a user who may not read the pod is told so.
	r = kubectl(t, tokenUser, "profile", "-n", a, "orders")
	if r.code != 1 || !strings.Contains(r.stderr, `cannot get resource "pods"`) {
		t.Errorf("profile without --direct, no get on pods: exit %d, want 1 naming the permission\nstderr: %s", r.code, r.stderr)
	}
}
