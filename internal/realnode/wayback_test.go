package realnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// TestWaybackAttackersInRealContainers: the way back, attacked from a
// container the runtime made. A sidecar shares the JVM's /tmp (an
// emptyDir, as the kubelet mounts it) and, as the pod's root (uid 0, no
// user namespace: what most images run as) or as nobody, turns each
// output the profiler closes into a 900 MiB sparse file or a symbolic
// link to /etc/shadow renamed over it, and appends terminal sequences to
// agent logs. Every profile either is the agent's small profile or fails
// (exit 3) saying why with the destination untouched; /etc/shadow is never read,
// nothing large is read, no control byte reaches stderr.
func TestWaybackAttackersInRealContainers(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	jvm := n.JVMImage(t, testenv.JDK17(t))
	attacker := n.Image(t, "wayback", []string{"/wayback"}, kubenode.Files{"/wayback": testenv.BuildWaybackAttacker(t), "/tmp": ""})
	agent := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	shadow, _ := os.ReadFile("/etc/shadow")
	for _, who := range []struct {
		name string
		uid  int64
	}{{"root", 0}, {"nobody", 65534}} {
		t.Run(who.name, func(t *testing.T) {
			t.Parallel()
			p := jvmPod(ns, "wayback-"+who.name, jvm, "2", "spin")
			tmp := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
			p.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = tmp
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
				Name: "attacker", Image: attacker, ImagePullPolicy: corev1.PullNever,
				Args: []string{"sparse", "link", "escapes"}, VolumeMounts: tmp,
				SecurityContext: &corev1.SecurityContext{RunAsUser: &who.uid},
			})
			pod := runJVM(t, n, p)
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(n.Logs(ns, pod.Name, "attacker"), "WATCHING"); {
				if time.Now().After(deadline) {
					t.Fatalf("the attacker does not watch /tmp: %s", n.Logs(ns, pod.Name, "attacker"))
				}
				time.Sleep(100 * time.Millisecond)
			}
			target := "pod:" + ns + "/" + pod.Name + "/app"
			out := filepath.Join(t.TempDir(), "p.collapsed")
			reached := 0
			for i := 0; i < 10; i++ {
				os.WriteFile(out, []byte("previous"), 0o644)
				_, errOut, code := cli(t, n, "profile", "--agent", agent, "-e", "itimer", "-d", "300ms", "-o", "collapsed", "-f", out, target)
				data, _ := os.ReadFile(out)
				if testenv.HasControl(errOut) {
					t.Fatalf("profile %d: a control byte reached stderr: %q", i, errOut)
				}
				if len(shadow) > 0 && strings.Contains(string(data), strings.SplitN(string(shadow), "\n", 2)[0]) {
					t.Fatalf("profile %d: /etc/shadow was read into the profile", i)
				}
				switch {
				case code == 0 && len(data) < 1<<20 && strings.Contains(string(data), "[itimer]"):
					// the attacker lost this race
				case code == 3 && string(data) == "previous" && strings.Contains(errOut, "refused"):
					// a failure of the profile (3), not of its caller's
					// input (1)
					reached++
					t.Logf("profile %d: exit %d: %s", i, code, lastLine(errOut))
				default:
					t.Fatalf("profile %d: exit %d, destination %d bytes\n%s", i, code, len(data), errOut)
				}
			}
			if reached == 0 {
				t.Fatal("the attacker never reached an output in 10 profiles")
			}
			if _, err := os.Stat("/proc/" + itoa(kubenode.HostPID(t, kubenode.ContainerID(pod, "app"), "/java"))); err != nil {
				t.Fatal("the JVM is gone")
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
