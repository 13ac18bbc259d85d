package kube

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParsePodList(t *testing.T) {
	data, err := os.ReadFile("testdata/podlist.json")
	if err != nil {
		t.Fatal(err)
	}
	pods, err := DecodePodList(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 4 {
		t.Fatalf("%d pods, want 4", len(pods))
	}
	if got, want := pods[0].Containers, []Container{{"app", "containerd://aaaa"}, {"sidecar", "containerd://bbbb"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("containers %+v, want the running ones %+v", got, want)
	}
	for _, bad := range []string{`{"kind":"Pod"}`, `[`, `{"items": 5}`} {
		if _, err := DecodePodList(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: parsed", bad)
		}
	}
}

// TestAPIPods: the list is one GET of the node's pods, with the bearer
// token, over TLS checked against the CA given; errors say what the API
// answered.
func TestAPIPods(t *testing.T) {
	list, _ := os.ReadFile("testdata/podlist.json")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/pods" || r.URL.Query().Get("fieldSelector") != "spec.nodeName=node-1" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sa-token" {
			http.Error(w, `{"kind":"Status","message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(list)
	}))
	defer srv.Close()
	api := &APIPods{Server: srv.URL, Token: "sa-token", Node: "node-1", Client: srv.Client()}
	pods, err := api.Pods(context.Background())
	if err != nil || len(pods) != 4 {
		t.Fatalf("%d pods, %v", len(pods), err)
	}
	// A token file is read at every request: a rotated token is used.
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("old\n"), 0o600)
	rotating := &APIPods{Server: srv.URL, TokenFile: tokenFile, Node: "node-1", Client: srv.Client()}
	if _, err := rotating.Pods(context.Background()); err == nil {
		t.Error("an expired token was accepted")
	}
	os.WriteFile(tokenFile, []byte("sa-token\n"), 0o600)
	if _, err := rotating.Pods(context.Background()); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	api.Token = "wrong"
	if _, err := api.Pods(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("bad token: %v", err)
	}
	api.Token, api.Client = "sa-token", &http.Client{}
	if _, err := api.Pods(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a server the CA does not vouch for: %v", err)
	}
	if _, err := (&APIPods{Server: srv.URL}).Pods(context.Background()); err == nil {
		t.Error("no node name accepted")
	}
}

// TestParsePod: one pod object decodes as a list item does; a body that
// is not a Pod (a list, a Status, broken JSON) is an error.
func TestParsePod(t *testing.T) {
	p, err := parsePod([]byte(`{"kind":"Pod","metadata":{"namespace":"shop","name":"orders"},"spec":{"nodeName":"n"},"status":{"phase":"Running","containerStatuses":[{"name":"app","containerID":"containerd://ab","state":{"running":{}}}]}}`))
	if err != nil || p.Name != "orders" || p.Node != "n" || len(p.Containers) != 1 || p.Containers[0].ID != "containerd://ab" {
		t.Errorf("%+v %v", p, err)
	}
	for _, bad := range []string{`{"kind":"PodList","items":[{}]}`, `{"kind":"Status","code":403}`, `{}],"items":[{`} {
		if _, err := parsePod([]byte(bad)); err == nil {
			t.Errorf("%s: parsed as a pod", bad)
		}
	}
}
