package kube

import (
	"bytes"
	"os"
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
	if got, want := pods[0].Containers, []Container{
		{Name: "app", ID: "containerd://aaaa"}, {Name: "sidecar", ID: "containerd://bbbb"},
		{Name: "log-shipper", ID: "containerd://ffff"},                    // a native sidecar (running init container)
		{Name: "debugger-x7k2", ID: "containerd://2222", Ephemeral: true}, // kubectl debug
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("containers %+v, want the running ones %+v", got, want)
	}
	if got := len(pods[0].Declared); got != 6 {
		t.Errorf("declared %v, want all six", pods[0].Declared)
	}
	for _, bad := range []string{`{"kind":"Pod"}`, `[`, `{"items": 5}`} {
		if _, err := DecodePodList(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: parsed", bad)
		}
	}
}

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
