package kube

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// apiPod renders one pod object as the API serves it.
func apiPod(ns, name, node, phase string, containers ...[3]string) string {
	var st []string
	for _, c := range containers { // name, id, state
		st = append(st, fmt.Sprintf(`{"name":%q,"containerID":%q,"state":{%q:{}}}`, c[0], c[1], c[2]))
	}
	return fmt.Sprintf(`{"kind":"Pod","metadata":{"namespace":%q,"name":%q,"uid":"u-%s"},"spec":{"nodeName":%q},"status":{"phase":%q,"containerStatuses":[%s]}}`,
		ns, name, name, node, phase, strings.Join(st, ","))
}

// TestPodLookupThroughKubeconfig: a kubeconfig with a token and the
// server's CA reaches a loopback API; each pod shape gives the container
// ID or an error that says what to do.
func TestPodLookupThroughKubeconfig(t *testing.T) {
	id := strings.Repeat("ab", 32)
	pods := map[string]string{
		"/api/v1/namespaces/shop/pods/orders": apiPod("shop", "orders", "node-1", "Running",
			[3]string{"app", "containerd://" + id, "running"}, [3]string{"envoy", "containerd://" + strings.Repeat("cd", 32), "running"},
			[3]string{"migrate", "containerd://" + strings.Repeat("ef", 32), "terminated"}),
		"/api/v1/namespaces/shop/pods/single": apiPod("shop", "single", "node-1", "Running", [3]string{"app", id, "running"}),
		"/api/v1/namespaces/shop/pods/remote": apiPod("shop", "remote", "node-2", "Running", [3]string{"app", "cri-o://" + id, "running"}),
		"/api/v1/namespaces/shop/pods/queued": apiPod("shop", "queued", "", "Pending"),
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer kc-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		body, ok := pods[r.URL.Path]
		if !ok {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	os.WriteFile(filepath.Join(dir, "token"), []byte("kc-token\n"), 0o600)
	os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: test
contexts:
- name: test
  context: {cluster: loop, user: me}
- name: other
  context: {cluster: nowhere, user: nobody}
clusters:
- name: loop
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: me
  user:
    tokenFile: token
`, srv.URL, base64.StdEncoding.EncodeToString(ca))), 0o600)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	api, err := APIClient(context.Background(), kc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pod, container, want, err string
	}{
		{"orders", "app", id, ""},
		{"orders", "", "", "has containers app, envoy, migrate: name one"},
		{"orders", "migrate", "", "container migrate is not running"},
		{"orders", "db", "", "has no container db"},
		{"single", "", id, ""}, // an ID with no runtime prefix
		{"remote", "", "", "runs on node node-2, this is node-1"},
		{"queued", "", "", "is Pending, not Running"},
		{"ghost", "", "", "not found"},
	} {
		p, err := api.Pod(context.Background(), "shop", tc.pod)
		var got string
		if err == nil {
			got, err = p.ContainerID(tc.container, "node-1")
		}
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("%s/%s: %q, %v; want %q", tc.pod, tc.container, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s/%s: %v, want an error with %q", tc.pod, tc.container, err, tc.err)
		}
		if tc.pod == "remote" && !errors.Is(err, ErrOtherNode) {
			t.Errorf("remote pod: %v is not ErrOtherNode", err)
		}
	}

	// A kubeconfig whose user has only an exec plugin is refused with a
	// reason, not run.
	os.WriteFile(kc, []byte("current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nclusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {exec: {command: /bin/false}}}]\n"), 0o600)
	if _, err := APIClient(context.Background(), kc); err == nil || !strings.Contains(err.Error(), "plugins are not run") {
		t.Errorf("exec plugin: %v", err)
	}
	os.WriteFile(kc, []byte("a: &a [*a, *a]\n"), 0o600)
	if _, err := APIClient(context.Background(), kc); err == nil {
		t.Error("a self-referencing kubeconfig was accepted")
	}
}
