package target

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Spec{
		"4242":                          {Kind: KindPID, PID: 4242},
		"container:containerd://abcdef": {Kind: KindContainer, ID: "containerd://abcdef"},
		"pod-uid:7f1d3c2b-4e5f":         {Kind: KindPodUID, ID: "7f1d3c2b-4e5f"},
		"pod:shop/orders":               {Kind: KindPod, Namespace: "shop", Pod: "orders"},
		"pod:shop/orders/app":           {Kind: KindPod, Namespace: "shop", Pod: "orders", Container: "app"},
		"jps":                           {Kind: KindName, ID: "jps"},
		"com.example.App":               {Kind: KindName, ID: "com.example.App"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("%s reads back as %s", in, got)
		}
	}
	for _, bad := range []string{"", "0", "-1", "-e", "container:", "pod-uid:", "pod:shop", "pod:/x", "pod:a/b/c/d", "pod:a/b/", "a b", "x/y"} {
		if s, err := Parse(bad); !errors.Is(err, ErrBadSpec) {
			t.Errorf("%q parsed as %+v (%v)", bad, s, err)
		}
	}
}

func TestMatchesApp(t *testing.T) {
	for main, name := range map[string]string{"com.example.App": "App", "-jar /srv/app/orders.jar": "orders", "-m mod/com.x.Main": "Main"} {
		if !matchesApp(main, name) {
			t.Errorf("%s does not match %s", main, name)
		}
	}
	if matchesApp("com.example.App", "Ap") {
		t.Error("a partial name matched")
	}
}

// TestLiveResolveByName: a live JVM is found by its main class, and by
// "jps" (the newest JVM) once it is the newest; a pod: target without a
// lookup says so.
func TestLiveResolveByName(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	ctx := context.Background()
	pid, err := Resolve(ctx, Spec{Kind: KindName, ID: "jps"}, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' JVMs may be newer; the newest is a JVM either way.
	if pid <= 0 {
		t.Fatalf("jps: %d", pid)
	}
	// Other packages' tests run Target JVMs at the same time: the name
	// matches this one, or several, which is refused with the list.
	pid, err = Resolve(ctx, Spec{Kind: KindName, ID: "Target"}, Options{}, nil)
	switch {
	case err == nil && pid != p.PID:
		t.Errorf("Target: %d, want %d", pid, p.PID)
	case err != nil && (!strings.Contains(err.Error(), `JVMs named "Target"`) || !strings.Contains(err.Error(), fmt.Sprint(p.PID))):
		t.Fatal(err)
	}
	if _, err := Resolve(ctx, Spec{Kind: KindName, ID: fmt.Sprintf("NoSuchApp%d", p.PID)}, Options{}, nil); err == nil {
		t.Error("a name no JVM has was found")
	}
	if _, err := Resolve(ctx, Spec{Kind: KindPod, Namespace: "a", Pod: "b"}, Options{}, nil); err == nil {
		t.Error("a pod: target without a lookup resolved")
	}
}
