package main

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// TestExecPluginAndMergedKubeconfig: pod: lookups reach the API server
// as kubectl does — here through two kubeconfig files merged from
// $KUBECONFIG (the cluster and context in one, the user in the other)
// whose user is an exec credential plugin, as on EKS, GKE and AKS.
func TestExecPluginAndMergedKubeconfig(t *testing.T) {
	api := kubeapi.Server(t)
	ns := api.Namespace(t)
	node := kubeapi.Name("node")
	api.Pod(t, ns, "orders", node, nil)
	id := strings.Repeat("5a", 32)
	api.Running(t, ns, "orders", "containerd://"+id)

	dir := t.TempDir()
	called := filepath.Join(dir, "plugin-called")
	plugin := filepath.Join(dir, "credential-plugin")
	os.WriteFile(plugin, []byte("#!/bin/sh\ntouch "+called+"\n"+
		`echo '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": "`+api.Config.BearerToken+`"}}'`+"\n"), 0o755)
	cluster := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(cluster, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+api.Config.Host+`", certificate-authority-data: "`+base64.StdEncoding.EncodeToString(api.Config.CAData)+`"}}]
contexts: [{name: c, context: {cluster: c, user: via-plugin}}]
current-context: c
`), 0o600)
	user := filepath.Join(dir, "user.yaml")
	os.WriteFile(user, []byte(`apiVersion: v1
kind: Config
users:
- name: via-plugin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: `+plugin+`
      interactiveMode: Never
`), 0o600)

	bin := filepath.Join(t.TempDir(), "safeattach-kube")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	lookup := func(node string) (string, error) {
		cmd := exec.Command(bin, "container-id", ns+"/orders")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster+string(os.PathListSeparator)+user, "NODE_NAME="+node, "KUBERNETES_SERVICE_HOST=")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	got, err := lookup(node)
	if err != nil || got != id {
		t.Fatalf("container-id: %v, printed %q, want %q", err, got, id)
	}
	if _, err := os.Stat(called); err != nil {
		t.Error("the exec credential plugin was not run")
	}
	// Another node: refused with the reason.
	if out, err := lookup("elsewhere"); err == nil || !strings.Contains(out, "runs on node "+node) {
		t.Errorf("on another node: %v\n%s", err, out)
	}
}
