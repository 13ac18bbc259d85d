package target

import "testing"

const (
	cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	uid = "6e0c2b1a-3f4d-4e5f-8a9b-0c1d2e3f4a5b"
	usc = "6e0c2b1a_3f4d_4e5f_8a9b_0c1d2e3f4a5b"
)

// TestParseCgroupLayouts: every layout kubelet and the runtimes create,
// cgroup v1 (one line per hierarchy) and v2 (one 0:: line).
func TestParseCgroupLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, data       string
		runtime, podUID  string
		wantContainerIDs bool
	}{
		{"v1 cgroupfs burstable", "12:pids:/kubepods/burstable/pod" + uid + "/" + cid + "\n11:cpu:/kubepods/burstable/pod" + uid + "/" + cid + "\n", "", uid, true},
		{"v1 cgroupfs guaranteed", "4:memory:/kubepods/pod" + uid + "/" + cid + "\n", "", uid, true},
		{"v2 systemd containerd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + usc + ".slice/cri-containerd-" + cid + ".scope\n", "cri-containerd", uid, true},
		{"v2 systemd cri-o besteffort", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + usc + ".slice/crio-" + cid + ".scope\n", "crio", uid, true},
		{"v2 systemd guaranteed docker", "0::/kubepods.slice/kubepods-pod" + usc + ".slice/docker-" + cid + ".scope\n", "docker", uid, true},
		{"podman", "0::/machine.slice/libpod-" + cid + ".scope\n", "libpod", "", true},
		{"docker alone v1", "9:name=systemd:/docker/" + cid + "\n", "", "", true},
		{"host process", "9:name=systemd:/\n0::/user.slice/user-0.slice/session-1.scope\n", "", "", false},
		{"pod level only", "0::/kubepods.slice/kubepods-pod" + usc + ".slice\n", "", uid, false},
	} {
		l := ParseCgroup(tc.data)
		if (l.ContainerID == cid) != tc.wantContainerIDs || l.Runtime != tc.runtime || l.PodUID != tc.podUID {
			t.Errorf("%s: %+v", tc.name, l)
		}
	}
}

func TestNormalizeContainerID(t *testing.T) {
	for in, want := range map[string]string{"containerd://" + cid: cid, "cri-o://ABCDEF012345": "abcdef012345", "docker://" + cid[:12]: cid[:12], cid: cid} {
		if got := NormalizeContainerID(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}

// FuzzParseCgroup: hostile /proc/<pid>/cgroup content never panics.
func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-pod" + usc + ".slice/cri-containerd-" + cid + ".scope\n")
	f.Add("12:pids:/kubepods/burstable/pod" + uid + "/" + cid)
	f.Fuzz(func(t *testing.T, s string) { ParseCgroup(s) })
}
