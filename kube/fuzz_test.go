package kube

import (
	"bytes"
	"os"
	"testing"
)

// FuzzParsePodList (DecodePodList): a pod list is what an API server or a file says; any
// bytes give pods or an error, never a panic, and a pod's running
// containers are among the ones it declares.
func FuzzParsePodList(f *testing.F) {
	seed, err := os.ReadFile("testdata/podlist.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"kind":"PodList","items":[{"status":{"containerStatuses":[{"name":"a","containerID":"x","state":{"running":{}}}]}}]}`))
	f.Add([]byte(`{"items":[null,{},{"metadata":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		pods, err := DecodePodList(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, p := range pods {
			declared := map[string]bool{}
			for _, d := range p.Declared {
				declared[d] = true
			}
			for _, c := range p.Containers {
				if !declared[c.Name] || c.ID == "" {
					t.Fatalf("container %+v not among %v or without an ID", c, p.Declared)
				}
			}
			p.ContainerID("", "node")
		}
	})
}
