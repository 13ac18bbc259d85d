package kube

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestAnnotationsKeepOnlyOursCut: of a pod's annotations, only those
// under AnnotationPrefix are kept (the prefix is matched exactly, case
// included), each value cut at maxAnnotationValue bytes; the same from
// an API object's map (Annotations) and from a pod list's JSON (the
// annotations decoder), which never decodes the others' values.
func TestAnnotationsKeepOnlyOursCut(t *testing.T) {
	long := strings.Repeat("x", maxAnnotationValue+500)
	for _, c := range []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"none", nil, nil},
		{"others only", map[string]string{"kubectl.kubernetes.io/last-applied-configuration": long, "app": "orders"}, nil},
		{"ours kept", map[string]string{AnnotationPrefix + "enabled": "true", AnnotationPrefix + "event": "itimer", "app": "orders"},
			map[string]string{AnnotationPrefix + "enabled": "true", AnnotationPrefix + "event": "itimer"}},
		{"empty value", map[string]string{AnnotationPrefix + "service-name": ""}, map[string]string{AnnotationPrefix + "service-name": ""}},
		{"at the limit", map[string]string{AnnotationPrefix + "event": long[:maxAnnotationValue]}, map[string]string{AnnotationPrefix + "event": long[:maxAnnotationValue]}},
		{"over the limit, cut", map[string]string{AnnotationPrefix + "event": long}, map[string]string{AnnotationPrefix + "event": long[:maxAnnotationValue]}},
		{"control characters kept as written", map[string]string{AnnotationPrefix + "event": "wall\x1b[2J\u009b"}, map[string]string{AnnotationPrefix + "event": "wall\x1b[2J\u009b"}},
		{"not quite the prefix", map[string]string{
			"Profiles.safeattach.io/enabled": "true", "profiles.safeattach.io.evil/enabled": "true",
			"x.profiles.safeattach.io/enabled": "true", "profiles.safeattach.io": "true"}, nil},
	} {
		if got := Annotations(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Annotations kept %q, want %q", c.name, got, c.want)
		}
		data, _ := json.Marshal(c.in)
		var got annotations
		if err := json.Unmarshal(data, &got); err != nil {
			t.Errorf("%s: decode: %v", c.name, err)
			continue
		}
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(map[string]string(got), c.want) {
			t.Errorf("%s: decoded %q, want %q", c.name, got, c.want)
		}
	}
	for _, c := range []struct {
		json string
		ok   bool
	}{
		{`null`, true},
		{`{"app": {"nested": [1, 2]}, "n": 5}`, true}, // others' values are skipped, whatever they are
		{`{"profiles.safeattach.io/event": 5}`, false},
		{`{"profiles.safeattach.io/event": null}`, true},
		{`[]`, false},
		{`"x"`, false},
	} {
		var got annotations
		if err := json.Unmarshal([]byte(c.json), &got); (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", c.json, err, c.ok)
		}
	}
}
