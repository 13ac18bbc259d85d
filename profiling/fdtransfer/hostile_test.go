package fdtransfer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/testenv"
)

// The pod's own user as a hostile agent (internal/testenv/attackers/
// fdtclient.c), as uid 0 with every capability dropped and as nobody:
// each case asks the server for what no profile needs.

// serveClient starts the client in the pod with args, serves it under
// policy and returns its results and the server's stats.
func serveClient(t *testing.T, pod *testenv.Pod, uid uint32, policy Policy, args ...string) (map[string]string, Stats, *testenv.FdTransferClient) {
	t.Helper()
	c := pod.StartFdTransferClient(t, uid, args...)
	srv, err := Listen(c.HostPID, policy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	c.Connect(t, srv.Name())
	res := c.Results(t, 60*time.Second)
	st := srv.Stats()
	t.Cleanup(func() {
		c.Release()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not end when the client hung up")
		}
	})
	return res, st, c
}

func attackers(t *testing.T, run func(t *testing.T, pod *testenv.Pod, uid uint32)) {
	testenv.RequireRoot(t)
	pod := testenv.StartPod(t, testenv.PodSpec{NetNS: true})
	for _, uid := range []uint32{0, 65534} {
		t.Run(fmt.Sprintf("uid%d", uid), func(t *testing.T) { run(t, pod, uid) })
	}
}

// TestHostileKallsyms: kallsyms is served once per connection, only when
// kernel frames were asked for, sealed and read-only (it was served 40
// times to a pod that kept the copies, 208 MiB of shmem charged to the
// server, and writable).
func TestHostileKallsyms(t *testing.T) {
	t.Parallel()
	attackers(t, func(t *testing.T, pod *testenv.Pod, uid uint32) {
		res, st, _ := serveClient(t, pod, uid, Policy{Event: "cpu", Kernel: true}, "kallsyms", "40")
		ks, _ := os.ReadFile("/proc/kallsyms")
		t.Logf("40 kallsyms requests held by the pod: %s copies of %.1f MiB charged to the server", res["kallsyms_granted"], float64(len(ks))/(1<<20))
		if res["kallsyms_granted"] != "1" || st.Kallsyms != 1 {
			t.Errorf("kallsyms copies: %s (server: %d), want 1", res["kallsyms_granted"], st.Kallsyms)
		}
		if res["kallsyms_second"] != "EPERM" {
			t.Errorf("second request: %s", res["kallsyms_second"])
		}
		if res["kallsyms_write"] != "EBADF" {
			t.Errorf("writing the copy: %s, want EBADF (read-only)", res["kallsyms_write"])
		}
		seals, _ := strconv.Atoi(res["kallsyms_seals"])
		if want := unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL; seals&want != want {
			t.Errorf("seals %#x, want %#x", seals, want)
		}
		res, st, _ = serveClient(t, pod, uid, Policy{Event: "cpu"}, "kallsyms", "3")
		if res["kallsyms_granted"] != "0" || res["kallsyms_first"] != "EPERM" || st.Kallsyms != 0 {
			t.Errorf("without kernel frames: %v, server %d", res, st.Kallsyms)
		}
	})
}

// TestHostileSampleBits: a tracepoint with PERF_SAMPLE_RAW (a
// sched_switch's records name host processes) and physical addresses are
// never served; a tracepoint only when the operator named it.
func TestHostileSampleBits(t *testing.T) {
	t.Parallel()
	id := tracepointForTest(t, "sched", "sched_switch")
	attackers(t, func(t *testing.T, pod *testenv.Pod, uid uint32) {
		res, _, _ := serveClient(t, pod, uid, Policy{Event: "cpu", Kernel: true}, "tracepoint", id)
		if res["tracepoint_raw"] != "EACCES" || res["tracepoint"] != "EACCES" {
			t.Errorf("a tracepoint the operator did not name: %v", res)
		}
		res, _, _ = serveClient(t, pod, uid, Policy{Event: "sched:sched_switch"}, "tracepoint", id)
		if res["tracepoint_raw"] != "EACCES" || res["tracepoint"] != "ok" {
			t.Errorf("the named tracepoint: %v (want RAW refused, the event served)", res)
		}
		res, _, _ = serveClient(t, pod, uid, Policy{Event: "page-faults", Kernel: true}, "physaddr")
		if res["physaddr"] != "EACCES" {
			t.Errorf("PERF_SAMPLE_PHYS_ADDR: %v", res)
		}
	})
}

// tracepointForTest is a tracepoint's id, with tracefs mounted where the
// kernel has it (the agent reads the same files).
func tracepointForTest(t *testing.T, system, name string) string {
	t.Helper()
	file := "/sys/kernel/tracing/events/" + system + "/" + name + "/id"
	if _, err := os.Stat(file); err != nil {
		testenv.RequireRoot(t)
		if out, err := exec.Command("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing").CombinedOutput(); err != nil {
			testenv.Missing(t, "tracefs cannot be mounted here: %v %s", err, out)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		testenv.Missing(t, "no tracepoint %s:%s: %v", system, name, err)
	}
	return strings.TrimSpace(string(b))
}

// TestHostileThreads: one event per thread and at most MaxDescriptors a
// connection (~21,500 rings were pinned through the server before); an
// event asked for again, or with inherit, is refused.
func TestHostileThreads(t *testing.T) {
	t.Parallel()
	attackers(t, func(t *testing.T, pod *testenv.Pod, uid uint32) {
		res, _, _ := serveClient(t, pod, uid, Policy{Event: "cpu"}, "cpu")
		if res["cpu"] != "ok" || res["cpu_again"] != "EBUSY" || res["cpu_inherit"] != "EACCES" {
			t.Errorf("one thread: %v", res)
		}
		n := MaxDescriptors + 50
		res, st, _ := serveClient(t, pod, uid, Policy{Event: "cpu"}, "threads", strconv.Itoa(n))
		t.Logf("%d threads asking: %s events, %s refused; the server's VmPin %d KiB", n, res["granted"], res["refused"], statusKB(t, "VmPin"))

		// A second connection (the next start) counts what the target
		// kept from the first.
		c := pod.StartFdTransferClient(t, uid, "again", "3000")
		srv, err := Listen(c.HostPID, Policy{Event: "cpu"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go func() {
			for range 2 {
				if srv.Serve(context.Background()) != nil {
					return
				}
			}
		}()
		c.Connect(t, srv.Name())
		again := c.Results(t, 60*time.Second)
		c.Release()
		if again["granted1"] != "3000" || again["granted2"] != strconv.Itoa(MaxDescriptors-3000) {
			t.Errorf("two connections of 3,000 threads each: %v", again)
		}
		if res["granted"] != strconv.Itoa(MaxDescriptors) || res["refused_eperm"] != "50" || st.PerfFDs != MaxDescriptors {
			t.Errorf("%d threads: %v, server gave %d", n, res, st.PerfFDs)
		}
	})
}

// TestHostileUnknownThreads: requests for thread ids the pod does not
// have, with 4,000 threads alive, cost at most ten listings of its
// threads a second (they cost ~165 ms of root's CPU each, every status
// re-read): ≤ 5 % of a core once the map is built (once a server).
func TestHostileUnknownThreads(t *testing.T) {
	// Not parallel: the server's CPU time is this process's.
	attackers(t, func(t *testing.T, pod *testenv.Pod, uid uint32) {
		const misses, threads = 25, 4000
		c := pod.StartFdTransferClient(t, uid, "unknown", strconv.Itoa(misses), strconv.Itoa(threads))
		srv, err := Listen(c.HostPID, Policy{Event: "cpu"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go srv.Serve(context.Background())
		c.Connect(t, srv.Name())
		c.WaitOutput(t, "THREADS", 30*time.Second)
		before, start := cpuTime(t), time.Now()
		res := c.Results(t, 60*time.Second)
		used, wall := cpuTime(t)-before, time.Since(start)
		c.Release()
		if res["esrch"] != strconv.Itoa(misses) {
			t.Errorf("answers: %v", res)
		}
		share := used.Seconds() / wall.Seconds()
		t.Logf("%d misses with %d threads: %v of CPU over %v (%.1f %% of a core), %d listings (the first built the map)",
			misses, threads, used, wall.Round(time.Millisecond), 100*share, srv.Stats().TIDScans)
		if share > 0.05 {
			t.Errorf("the misses cost %.1f %% of a core", 100*share)
		}
	})
}

// statusKB is a "kB" field of this process's status.
func statusKB(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is this process's CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	st, err := proc.FS{}.Proc(os.Getpid()).Stat()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(st.UTime+st.STime) * 10 * time.Millisecond
}
