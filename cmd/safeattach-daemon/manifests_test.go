package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/internal/testenv"
)

const manifests = "../../deploy/kubernetes"

// objects decodes every document of every manifest.
func objects(t *testing.T) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	var out []map[string]any
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeObjects(t, f, data)...)
	}
	return out
}

// decodeObjects decodes every document of a YAML stream.
func decodeObjects(t *testing.T, name string, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

// dig walks maps and the first element of lists by key.
func dig(v any, path ...string) any {
	for _, k := range path {
		switch m := v.(type) {
		case map[string]any:
			v = m[k]
		case []any:
			if len(m) == 0 {
				return nil
			}
			v = m[0].(map[string]any)[k]
		default:
			return nil
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestManifestsInStepWithCode: the DaemonSet runs the image, port,
// capabilities and probe paths the code defines, and the ConfigMap's
// configuration loads with the daemon's own strict loader.
func TestManifestsInStepWithCode(t *testing.T) {
	byKind := map[string]map[string]any{}
	for _, o := range objects(t) {
		// The ClusterRole a team binds (safeattach-profiler) is not the
		// node agent's own.
		if dig(o, "metadata", "name") == "safeattach-profiler" {
			continue
		}
		byKind[o["kind"].(string)] = o
	}
	ds := byKind["DaemonSet"]
	pod := dig(ds, "spec", "template", "spec")
	c := dig(pod, "containers").([]any)[0]
	if got := dig(c, "image"); got != Image {
		t.Errorf("DaemonSet image %v, the code says %s", got, Image)
	}
	_, port, _ := net.SplitHostPort(DefaultListen)
	if got := dig(c, "ports", "containerPort"); fmt.Sprint(got) != port {
		t.Errorf("containerPort %v, DefaultListen %s", got, DefaultListen)
	}
	add := strs(dig(c, "securityContext", "capabilities", "add"))
	want := append([]string(nil), Capabilities...)
	sort.Strings(add)
	sort.Strings(want)
	if !reflect.DeepEqual(add, want) {
		t.Errorf("capabilities added %v, the code needs %v", add, want)
	}
	if drop := strs(dig(c, "securityContext", "capabilities", "drop")); !reflect.DeepEqual(drop, []string{"ALL"}) {
		t.Errorf("capabilities dropped %v, want ALL", drop)
	}
	if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(pod, "hostPID") != true {
		t.Error("want a read-only root filesystem and hostPID")
	}
	if dig(c, "env", "name") != "NODE_NAME" || dig(c, "env", "valueFrom", "fieldRef", "fieldPath") != "spec.nodeName" {
		t.Error("NODE_NAME must come from spec.nodeName")
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := dig(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v, want %s", probe, got, path)
		}
	}
	if dig(pod, "serviceAccountName") != dig(byKind["ServiceAccount"], "metadata", "name") {
		t.Error("the DaemonSet does not run as the ServiceAccount the RBAC binds")
	}
	rule := dig(byKind["ClusterRole"], "rules")
	if !reflect.DeepEqual(strs(dig(rule, "resources")), []string{"pods"}) || !reflect.DeepEqual(strs(dig(rule, "verbs")), []string{"get", "list", "watch"}) {
		t.Errorf("ClusterRole rules %v: want read-only access to pods only", rule)
	}
	cfgText, _ := dig(byKind["ConfigMap"], "data", "daemon.json").(string)
	path := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(path, []byte(cfgText), 0o644)
	cfg, err := loadConfig(context.Background(), path)
	if err != nil {
		t.Fatalf("the ConfigMap's daemon.json: %v", err)
	}
	if cfg.Listen != DefaultListen {
		t.Errorf("config listens on %s, the port is %s", cfg.Listen, DefaultListen)
	}
	if !strings.Contains(readFile(t, filepath.Join(manifests, "Containerfile")), cfg.Agent) {
		t.Errorf("the image does not put async-profiler at %s", cfg.Agent)
	}
}

// TestDemoPodUsesTheDaemonsAnnotations: the walkthrough's pod opts in
// with the annotations the daemon reads.
func TestDemoPodUsesTheDaemonsAnnotations(t *testing.T) {
	demo := readFile(t, "../../deploy/demo/demo-jvm.yaml")
	for _, a := range []string{fleet.AnnotationEnabled + `: "true"`, fleet.AnnotationEvent, fleet.AnnotationWindow, fleet.AnnotationService} {
		if !strings.Contains(demo, a) {
			t.Errorf("the demo pod lacks %s", a)
		}
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type resource struct {
	name, kind string
	namespaced bool
}

// discovery is the part of an API server kubectl reads to map each kind
// to a resource: enough for `kubectl apply --dry-run=client`.
var discovery = map[string]string{
	"/api":  `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}`,
	"/apis": `{"kind":"APIGroupList","apiVersion":"v1","groups":[` + group("apps") + `,` + group("rbac.authorization.k8s.io") + `]}`,
	"/api/v1": resources("v1", resource{"serviceaccounts", "ServiceAccount", true}, resource{"configmaps", "ConfigMap", true},
		resource{"namespaces", "Namespace", false}, resource{"secrets", "Secret", true}, resource{"pods", "Pod", true}),
	"/apis/apps/v1": resources("apps/v1", resource{"daemonsets", "DaemonSet", true}),
	"/apis/rbac.authorization.k8s.io/v1": resources("rbac.authorization.k8s.io/v1",
		resource{"clusterroles", "ClusterRole", false}, resource{"clusterrolebindings", "ClusterRoleBinding", false}),
}

func group(name string) string {
	gv := `{"groupVersion":"` + name + `/v1","version":"v1"}`
	return `{"name":"` + name + `","versions":[` + gv + `],"preferredVersion":` + gv + `}`
}

func resources(gv string, rs ...resource) string {
	var items []any
	for _, r := range rs {
		items = append(items, map[string]any{"name": r.name, "singularName": strings.ToLower(r.kind), "namespaced": r.namespaced,
			"kind": r.kind, "verbs": []string{"create", "get", "list", "patch", "watch"}})
	}
	return jsonOf(map[string]any{"kind": "APIResourceList", "groupVersion": gv, "resources": items})
}

// TestKubectlDryRun: kubectl parses every manifest and maps every kind
// (`apply --dry-run=client`). No API server runs here, so kubectl talks
// to a loopback server that answers discovery and says every object is
// new; schema validation needs the server's OpenAPI document, which is
// why --validate=false (TestManifestsInStepWithCode checks the fields
// that matter).
func TestKubectlDryRun(t *testing.T) {
	kubectl := testenv.LookPath(t, "kubectl")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if body, ok := discovery[r.URL.Path]; ok {
			io.WriteString(w, body)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
	}))
	defer srv.Close()
	cmd := exec.Command(kubectl, "--server", srv.URL, "apply", "--dry-run=client", "--validate=false", "-f", manifests, "-f", "../../deploy/demo")
	cmd.Env = append(os.Environ(), "KUBECONFIG=/dev/null", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=client: %v\n%s", err, out)
	}
	for _, want := range []string{"namespace/safeattach", "serviceaccount/safeattach-daemon", "clusterrole.rbac.authorization.k8s.io/safeattach-daemon",
		"clusterrolebinding.rbac.authorization.k8s.io/safeattach-daemon", "configmap/safeattach-daemon", "daemonset.apps/safeattach-daemon", "configmap/busy-source", "pod/busy"} {
		if !strings.Contains(string(out), want+" created (dry run)") {
			t.Errorf("kubectl did not take %s:\n%s", want, out)
		}
	}
	t.Logf("kubectl apply --dry-run=client:\n%s", out)
}
