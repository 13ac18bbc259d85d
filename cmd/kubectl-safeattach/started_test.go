package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// TestLiveStartStatusStopInspect: a user who may create and get profiles
// of pod orders starts a profile, sees it in status while it runs after
// the plugin has exited, stops it into a file, and inspects the JVM; a
// user who may only get profiles sees the status and the inspection but
// may not start one (403, exit 1); a second stop exits 1 (404); every
// line the plugin prints names the pod.
func TestLiveStartStatusStopInspect(t *testing.T) {
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	a := api.Namespace(t)
	srv, ca, log := agent(t, api, a)
	rule := func(verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{"safeattach.io"}, Resources: []string{"profiles"}, Verbs: verbs}
	}
	alice := api.UserKubeconfig(t, a, &clientcmdapi.AuthInfo{Token: api.ServiceAccountToken(t, a, "alice", rule("create", "get"))})
	viewer := api.UserKubeconfig(t, a, &clientcmdapi.AuthInfo{Token: api.ServiceAccountToken(t, a, "viewer", rule("get"))})
	direct := []string{"--direct", srv.URL, "--agent-ca", ca}

	if r := kubectl(t, viewer, append([]string{"start", "orders", "-e", "itimer"}, direct...)...); r.code != 1 ||
		!strings.Contains(r.stderr, `forbidden (403): user "system:serviceaccount:`+a+`:viewer" cannot create profiles.safeattach.io "orders"`) {
		t.Errorf("start as a viewer: exit %d, want 1 (403)\nstderr: %s", r.code, r.stderr)
	}
	r := kubectl(t, alice, append([]string{"start", "orders", "-e", "itimer", "-o", "collapsed", "--discard-after", "2m"}, direct...)...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "started: "+a+"/orders container app, async-profiler, event itimer, format collapsed, by system:serviceaccount:"+a+":alice since ") ||
		!strings.Contains(r.stdout, "kubectl safeattach stop -n "+a+" orders -f FILE") {
		t.Fatalf("start: exit %d\nstdout: %s\nstderr: %s\nagent log:\n%s", r.code, r.stdout, r.stderr, log)
	}
	t.Logf("start:\n%s", r.stdout)
	r = kubectl(t, viewer, append([]string{"status", "orders"}, direct...)...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, a+"/orders container app: async-profiler, event itimer, format collapsed, by system:serviceaccount:"+a+":alice") {
		t.Errorf("status as a viewer: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("status:\n%s", r.stdout)

	r = kubectl(t, viewer, append([]string{"inspect", "orders"}, direct...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "jvm        hotspot 17") || !strings.Contains(r.stdout, "profilers  async-profiler") {
		t.Errorf("inspect while the profile runs: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("inspect:\n%s", r.stdout)
	r = kubectl(t, viewer, append([]string{"inspect", "orders", "--json"}, direct...)...)
	var report map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &report) != nil || report["command"] != "inspect" || report["jvm"] == nil {
		t.Errorf("inspect --json: exit %d\nstdout: %.2000s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	// A -f that cannot be written is said before the agent is asked:
	// the started profile is not lost to it.
	for _, bad := range []string{filepath.Join(t.TempDir(), "no-such-dir", "x.collapsed"), t.TempDir()} {
		if r := kubectl(t, alice, append([]string{"stop", "orders", "-f", bad}, direct...)...); r.code != 1 || !strings.Contains(r.stderr, "-f "+bad) {
			t.Errorf("stop -f %s: exit %d, want 1 naming the path\nstderr: %s", bad, r.code, r.stderr)
		}
	}
	if r := kubectl(t, alice, append([]string{"status", "orders"}, direct...)...); r.code != 0 || !strings.Contains(r.stdout, "container app: async-profiler") {
		t.Fatalf("status after the refused -f: the started profile is gone: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	time.Sleep(time.Second) // samples
	out := filepath.Join(t.TempDir(), "orders.collapsed")
	r = kubectl(t, alice, append([]string{"stop", "orders", "-f", out}, direct...)...)
	profile, err := os.ReadFile(out)
	if r.code != 0 || err != nil || !strings.Contains(string(profile), "[itimer]") || !strings.Contains(r.stderr, "wrote "+out+" (") {
		t.Fatalf("stop -f: exit %d, %v\nstderr: %s\nfile: %.1000s\nagent log:\n%s", r.code, err, r.stderr, profile, log)
	}
	r = kubectl(t, alice, append([]string{"status", "orders"}, direct...)...)
	if r.code != 0 || r.stdout != a+"/orders: no profile started on demand\n" {
		t.Errorf("status after stop: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = kubectl(t, alice, append([]string{"stop", "orders"}, direct...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "no profile started on demand in pod "+a+"/orders") {
		t.Errorf("a second stop: exit %d, want 1\nstderr: %s", r.code, r.stderr)
	}
	for _, bad := range [][]string{{"start", "orders", "-o", "svg"}, {"start", "orders", "--discard-after", "10ms"}, {"start", "orders", "--fallback", "perf"}} {
		if r := kubectl(t, alice, append(bad, direct...)...); r.code != 1 || r.stdout != "" {
			t.Errorf("%v: exit %d, want 1 before asking the agent\nstderr: %s", bad, r.code, r.stderr)
		}
	}
}
