package realnode

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubenode"
)

// TestRuntimeDefaultSeccomp: the runtime's default seccomp profile
// (containerd's, as RuntimeDefault asks) withholds perf_event_open from a
// container without CAP_PERFMON. A perf event with no timer to fall back
// to (cpu-clock) is refused before anything reaches the JVM, with
// --fdtransfer as the remedy; with --fdtransfer the node opens the events
// for it and the profile has the JVM's frames. -e cpu, which falls back
// to a timer, is profiled either way.
func TestRuntimeDefaultSeccomp(t *testing.T) {
	t.Parallel()
	n := kubenode.Get(t)
	ns := n.Namespace(t, nil)
	agent := testenv.ProfilerOrLookalike(t)
	p := jvmPod(ns, "seccomp", n.JVMImage(t, testenv.JDK17(t)), "2", "spin")
	p.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	pod := runJVM(t, n, p)
	pid := kubenode.HostPID(t, kubenode.ContainerID(pod, "app"), "/java")
	if st, _ := os.ReadFile("/proc/" + itoa(pid) + "/status"); !strings.Contains(string(st), "Seccomp:\t2") {
		t.Fatalf("the runtime gave the JVM no seccomp filter:\n%s", st)
	}
	target := "pod:" + ns + "/" + pod.Name

	out, errOut, code := cli(t, n, "profile", "--agent", agent, "-e", "cpu-clock", "-d", "1", "-o", "collapsed", "-f", "-", target)
	if code != 2 || !strings.Contains(out+errOut, "perf-events-unavailable") || !strings.Contains(out+errOut, "--fdtransfer") {
		t.Fatalf("-e cpu-clock without --fdtransfer: exit %d, want 2 (refused, naming --fdtransfer):\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(testenv.Maps(t, pid), "syncProfiler") || strings.Contains(testenv.Maps(t, pid), "lookalike") {
		t.Fatal("refused, yet the agent is in the JVM")
	}

	if !strings.Contains(agent, "libasyncProfiler") {
		// The look-alike opens no perf events: what --fdtransfer serves
		// is measured with the real async-profiler only.
		testenv.Optional(t, "--fdtransfer in a seccomp-filtered pod needs the real async-profiler: set ASYNC_PROFILER_HOME")
	}
	out, errOut, code = cli(t, n, "profile", "--agent", agent, "--fdtransfer", "-e", "cpu-clock", "-d", "2", "-o", "collapsed", "-f", "-", target)
	if code != 0 || !strings.Contains(out, "Target.spin") {
		t.Fatalf("-e cpu-clock --fdtransfer: exit %d, want 0 and the JVM's frames:\n%.500s\n%s", code, out, errOut)
	}
	out, errOut, code = cli(t, n, "profile", "--agent", agent, "-e", "cpu", "-d", "2", "-o", "collapsed", "-f", "-", target)
	if code != 0 || !strings.Contains(out, "Target.spin") || !strings.Contains(errOut, "perf-events-unavailable") {
		t.Fatalf("-e cpu: exit %d, want 0 with the JVM's frames and the timer fallback's warning:\n%.500s\n%s", code, out, errOut)
	}
}
