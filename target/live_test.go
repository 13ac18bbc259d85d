package target

import (
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveKubeletCgroups: JVMs in their own namespaces, moved into real
// kernel cgroups named as kubelet names them — the cgroupfs driver in the
// pids hierarchy, the systemd driver with containerd in the name=systemd
// one — are found by container ID (full, URI, prefix) and by pod UID, and
// the JVM is told from its shell wrapper.
func TestLiveKubeletCgroups(t *testing.T) {
	podA, idA := "6e0c2b1a-3f4d-4e5f-8a9b-000000000001", strings.Repeat("a1", 32)
	podB, idB := "6e0c2b1a-3f4d-4e5f-8a9b-000000000002", strings.Repeat("b2", 32)
	wrapA, jvmA := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+podA+"/"+idA, wrapA, jvmA)
	wrapB, jvmB := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	sliced := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(podB, "-", "_") + ".slice/cri-containerd-" + idB + ".scope"
	testenv.KubeletCgroup(t, "systemd", sliced, wrapB, jvmB)

	for _, tc := range []struct {
		name string
		find func() ([]Candidate, error)
		jvm  int
	}{
		{"container A full ID", func() ([]Candidate, error) { return ByContainer(idA, Options{}) }, jvmA},
		{"container A as containerd URI prefix", func() ([]Candidate, error) { return ByContainer("containerd://"+idA[:12], Options{}) }, jvmA},
		{"pod A", func() ([]Candidate, error) { return ByPodUID(podA, Options{}) }, jvmA},
		{"container B (systemd driver)", func() ([]Candidate, error) { return ByContainer("cri-o://"+idB, Options{}) }, jvmB},
		{"pod B", func() ([]Candidate, error) { return ByPodUID(podB, Options{}) }, jvmB},
	} {
		ps, err := tc.find()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		jvm, err := PickJVM(ps)
		if err != nil || jvm.PID != tc.jvm {
			t.Errorf("%s: picked %+v (%v) from %+v, want pid %d", tc.name, jvm, err, ps, tc.jvm)
		}
	}
	if _, err := ByContainer(strings.Repeat("c3", 32), Options{}); err == nil {
		t.Error("a container that does not exist was found")
	}
}
