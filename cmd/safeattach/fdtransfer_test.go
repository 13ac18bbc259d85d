package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// paranoid reads kernel.perf_event_paranoid: at 2 and above an
// unprivileged process may not count kernel time, which is what the
// look-alike asks the descriptor server for.
func paranoid(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/perf_event_paranoid")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// checkServed asserts that the agent got its perf event and kallsyms
// through the server — and, where the kernel forbids it the event
// itself, that it could not have opened it alone.
func checkServed(t *testing.T, what, log string) {
	t.Helper()
	if !strings.Contains(log, "fdtransfer: perf fd for tid") || !strings.Contains(log, ": ok") {
		t.Errorf("%s: no perf event through the server:\n%s", what, log)
	}
	if !strings.Contains(log, "fdtransfer: kallsyms: ") || strings.Contains(log, "kallsyms: No such") {
		t.Errorf("%s: no kallsyms through the server:\n%s", what, log)
	}
	if paranoid(t) >= 2 && !strings.Contains(log, "own perf_event_open: Permission denied") {
		t.Errorf("%s: the JVM's user could open the event itself (paranoid %d): the test proves nothing\n%s", what, paranoid(t), log)
	}
}

// TestFdTransferCollect: profile --fdtransfer for a JVM run by
// nobody: the agent asks safeattach's descriptor server for a perf event
// counting kernel time, which the kernel denies nobody, and for kallsyms,
// and gets both; without --fdtransfer it gets neither (no fdtransfer=).
func TestFdTransferCollect(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{RunAs: 65534})
	bin := testenv.BuildCLI(t)
	out, err := exec.Command(bin, "profile", "--agent", lib, "--fdtransfer", "--fdtransfer-kernel", "-d", "1", fmt.Sprint(p.PID)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkServed(t, "collect", string(out))
	// Without kernel frames asked for: the event still (user-only, the
	// server sets exclude_kernel), kallsyms refused.
	out, err = exec.Command(bin, "profile", "--agent", lib, "--fdtransfer", "-d", "1", fmt.Sprint(p.PID)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "perf fd for tid") || !strings.Contains(string(out), ": ok") ||
		!strings.Contains(string(out), "fdtransfer: kallsyms: Operation not permitted") {
		t.Errorf("--fdtransfer without --fdtransfer-kernel: %v\n%s", err, out)
	}
	// A perf event when -e named none is refused: the look-alike asks
	// cpu-clock whatever it samples with.
	out, err = exec.Command(bin, "profile", "--agent", lib, "--fdtransfer", "-e", "itimer", "-d", "1", fmt.Sprint(p.PID)).CombinedOutput()
	if err != nil || !regexp.MustCompile(`perf fd for tid \d+: Permission denied`).MatchString(string(out)) || !strings.Contains(string(out), "--fdtransfer serves nothing") {
		t.Errorf("-e itimer, asked cpu-clock: %v\n%s", err, out)
	}
	// --json says what the server did.
	file := filepath.Join(t.TempDir(), "p.collapsed")
	out, err = exec.Command(bin, "profile", "--json", "--agent", lib, "--fdtransfer", "-d", "1", "-f", file, fmt.Sprint(p.PID)).Output()
	var r struct {
		Profile struct {
			FdTransfer struct {
				PerfFDs  int `json:"perf_fds"`
				Kallsyms int `json:"kallsyms"`
			} `json:"fdtransfer"`
		} `json:"profile"`
	}
	if err != nil || json.Unmarshal(out, &r) != nil || r.Profile.FdTransfer.PerfFDs < 1 || r.Profile.FdTransfer.Kallsyms != 0 {
		t.Errorf("--json: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "profile", "--agent", lib, "-d", "1", fmt.Sprint(p.PID)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "fdtransfer") {
		t.Errorf("without --fdtransfer: %v\n%s", err, out)
	}
}

// TestFdTransferDetachedStart: a start outlives the command, and so does
// its descriptor server (a process of its own, as asprof's); the stop
// that ends the profile ends the server too (the agent hangs up).
func TestFdTransferDetachedStart(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{RunAs: 65534})
	bin := testenv.BuildCLI(t)
	pid := fmt.Sprint(p.PID)
	out, err := exec.Command(bin, "profile", "start", "--agent", lib, "--fdtransfer", "--fdtransfer-kernel", pid).CombinedOutput()
	if err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	checkServed(t, "start", string(out))
	servers := func() []int {
		var found []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			n, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n))
			if strings.Contains(string(cmdline), "fdtransfer-serve\x00") && strings.HasSuffix(string(cmdline), "\x00"+pid+"\x00") {
				found = append(found, n)
			}
		}
		return found
	}
	running := servers()
	if len(running) != 1 {
		t.Fatalf("descriptor servers for %s after start: %v", pid, running)
	}
	t.Cleanup(func() {
		for _, s := range servers() {
			if proc, err := os.FindProcess(s); err == nil {
				proc.Kill()
			}
		}
	})
	if out, err := exec.Command(bin, "profile", "stop", "--agent", lib, pid).CombinedOutput(); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(servers()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := servers(); len(left) > 0 {
		t.Errorf("the descriptor server outlived the profile: %v", left)
	}
}

// TestFdTransferInAPod: a JVM in a pod — its own pid, mount and network
// namespaces — asks by its own thread ids and connects in its own
// network namespace; the server is created there and translates the
// ids.
func TestFdTransferInAPod(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{NetNS: true, Workers: 1})
	out, err := exec.Command(testenv.BuildCLI(t), "profile", "--agent", lib, "--fdtransfer", "--fdtransfer-kernel", "-d", "1", fmt.Sprint(pod.PID)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkServed(t, "pod", string(out))
	// The thread id the agent asked for is its own, in the pod's
	// namespace: small, not the host's.
	m := regexp.MustCompile(`fdtransfer: perf fd for tid (\d+):`).FindStringSubmatch(string(out))
	if m == nil {
		return // reported by checkServed
	}
	if tid, _ := strconv.Atoi(m[1]); tid <= 0 || tid >= pod.PID {
		t.Errorf("tid %d is not a pod-namespace id (the JVM is host pid %d)", tid, pod.PID)
	}
}
