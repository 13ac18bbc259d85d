package fleet

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/preflight"
)

// TestMetricsNotOverPortForward: once the on-demand API is served,
// /metrics is refused to a request from the pod's loopback (where a
// port-forward arrives, and whoever may port-forward to reach the API
// reaches every port) and served to the pod network; the probes are
// served to both. Without the on-demand API nothing changes, nor off
// cluster (loopback is then the host's own, TestDaemonOnDemand). The
// port-forward itself runs against a real kubelet in internal/realnode
// (TestPluginPortForward).
func TestMetricsNotOverPortForward(t *testing.T) {
	d, err := New(Config{Pods: kube.FilePods{Path: "/nonexistent"}, InPod: true})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, remote string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = remote
		d.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	for _, remote := range []string{"127.0.0.1:40000", "[::1]:40000", "10.88.0.7:40000"} {
		if code := get("/metrics", remote); code != http.StatusOK {
			t.Errorf("without the on-demand API, /metrics from %s: %d", remote, code)
		}
	}
	nobody := authenticator.RequestFunc(func(*http.Request) (*authenticator.Response, bool, error) { return nil, false, nil })
	deny := authorizer.AuthorizerFunc(func(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
		return authorizer.DecisionDeny, "", nil
	})
	if _, err := d.OnDemandHandler(OnDemandConfig{Authenticator: nobody, Authorizer: deny}); err != nil {
		t.Fatal(err)
	}
	for remote, want := range map[string]int{"127.0.0.1:40000": http.StatusForbidden, "127.1.2.3:40000": http.StatusForbidden,
		"[::1]:40000": http.StatusForbidden, "10.88.0.7:40000": http.StatusOK, "[fd00::7]:40000": http.StatusOK} {
		if code := get("/metrics", remote); code != want {
			t.Errorf("with the on-demand API, /metrics from %s: %d, want %d", remote, code, want)
		}
		if code := get("/healthz", remote); code != http.StatusOK {
			t.Errorf("/healthz from %s: %d", remote, code)
		}
	}
}

// TestRedact: an inspection answered to a caller keeps which agents the
// JVM started with, not their options, nor the command line.
func TestRedact(t *testing.T) {
	r := &preflight.Report{MappedFiles: []string{"/usr/lib/libc.so.6"}}
	r.Process.Cmdline = []string{"java", "-Dpassword=hunter2", "-jar", "app.jar"}
	r.JVM.StartupAgents = []string{"-agentpath:/opt/libapm.so=api_key=SECRET", "-javaagent:/otel.jar", "-agentlib:jdwp=transport=dt_socket", "-javaagent:/x.jar="}
	redact(r)
	want := []string{"-agentpath:/opt/libapm.so=(options left out)", "-javaagent:/otel.jar", "-agentlib:jdwp=(options left out)", "-javaagent:/x.jar="}
	if !slices.Equal(r.JVM.StartupAgents, want) || r.Process.Cmdline != nil || r.MappedFiles != nil {
		t.Errorf("redacted: agents %q, cmdline %q, mapped %q", r.JVM.StartupAgents, r.Process.Cmdline, r.MappedFiles)
	}
}
