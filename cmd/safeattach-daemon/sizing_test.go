package main

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestSizing measures the daemon on a node with N profiled JVMs
// (SAFEATTACH_SIZING=1,10,50; skipped without it: it takes minutes and
// gigabytes): each JVM in its own pid and mount namespaces inside a
// kubelet-named cgroup, 10 s windows of itimer samples pushed to a
// loopback Pyroscope, the real async-profiler when ASYNC_PROFILER_HOME
// names one. Once every JVM is profiled, the daemon's CPU time and RSS
// are read from /proc over SAFEATTACH_SIZING_SECONDS (default 60). The
// numbers go to docs/kubernetes.md; nothing is asserted but that every
// JVM is profiled and windows arrive.
func TestSizing(t *testing.T) {
	spec := os.Getenv("SAFEATTACH_SIZING")
	if spec == "" {
		testenv.Optional(t, "SAFEATTACH_SIZING unset (e.g. 1,10,50): the daemon's sizing is measured on demand")
	}
	testenv.RequireRoot(t)
	seconds := 60
	if s, err := strconv.Atoi(os.Getenv("SAFEATTACH_SIZING_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	lib := ""
	if home := os.Getenv("ASYNC_PROFILER_HOME"); home != "" {
		lib = filepath.Join(home, "lib", "libasyncProfiler.so")
	} else {
		lib = testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	}
	bin := buildDaemon(t)
	var jvms int
	for _, field := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(field)
		if err != nil || n < 1 {
			t.Fatalf("SAFEATTACH_SIZING=%s: want counts such as 1,10,50", spec)
		}
		// JVMs are added to those already running: 1, then 9 more, ...
		for ; jvms < n; jvms++ {
			startSizingPod(t, jvms)
		}
		t.Run(fmt.Sprintf("jvms=%d", n), func(t *testing.T) {
			measureDaemon(t, bin, lib, n, seconds)
		})
	}
}

func sizingPod(i int) (uid, id string) {
	return fmt.Sprintf("5e5e5e5e-0000-4000-8000-%012d", i), fmt.Sprintf("%064x", 0xfeed0000+i)
}

func startSizingPod(t *testing.T, i int) {
	uid, id := sizingPod(i)
	wrap, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+uid+"/"+id, wrap, jvm)
}

func measureDaemon(t *testing.T, bin, lib string, n, seconds int) {
	var items []any
	for i := range n {
		uid, id := sizingPod(i)
		items = append(items, map[string]any{
			"metadata": map[string]any{"namespace": "sizing", "name": fmt.Sprintf("app-%d", i), "uid": uid, "annotations": map[string]string{
				"profiles.safeattach.io/enabled": "true", "profiles.safeattach.io/event": "itimer"}},
			"spec":   map[string]any{"nodeName": "node-1"},
			"status": map[string]any{"phase": "Running", "containerStatuses": []any{map[string]any{"name": "app", "containerID": "containerd://" + id, "state": map[string]any{"running": map[string]any{}}}}},
		})
	}
	data, _ := json.Marshal(map[string]any{"kind": "PodList", "items": items})
	pods := filepath.Join(t.TempDir(), "pods.json")
	os.WriteFile(pods, data, 0o644)
	config := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(config, []byte(fmt.Sprintf(`{"agent": %q, "window": "10s", "format": "jfr"}`, lib)), 0o644)
	ingest := &ingestCounter{}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)

	mem := testenv.NewMemCgroup(t, 128<<20) // as the chart limits it
	cmd := exec.Command(bin, "--config", config, "--pods-file", pods, "--node", "node-1", "--listen", "127.0.0.1:0", "--pyroscope", srv.URL)
	if addr := os.Getenv("SAFEATTACH_SIZING_PPROF"); addr != "" {
		cmd.Args = append(cmd.Args, "--pprof-listen", addr) // go tool pprof http://ADDR/debug/pprof/heap while it runs
	}
	mem.Wrap(cmd)
	d := testenv.Start(t, cmd)
	// Attaches are one at a time, each a first attach (judged, delivered)
	// to a JVM sharing two cores with 49 others here.
	deadline := time.Now().Add(time.Duration(30+6*n) * time.Second)
	for strings.Count(d.Output(), `"msg":"profiling"`) < n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := strings.Count(d.Output(), `"msg":"profiling"`); got < n {
		t.Fatalf("%d of %d JVMs profiled:\n%s", got, n, tail(d.Output(), 3000))
	}
	cpu0, at0 := cpuTime(t, d.PID), time.Now()
	windows0, _ := ingest.count()
	var rssMax int64
	for end := at0.Add(time.Duration(seconds) * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		rssMax = max(rssMax, rss(t, d.PID))
	}
	cpu1, at1 := cpuTime(t, d.PID), time.Now()
	windows1, _ := ingest.count()
	share := (cpu1 - cpu0).Seconds() / at1.Sub(at0).Seconds() * 100
	t.Logf("SIZING jvms=%d: CPU %.2f%% of one core, RSS max %.1f MiB (cgroup peak %.1f MiB), %d windows pushed in %v",
		n, share, float64(rssMax)/(1<<20), float64(mem.Peak())/(1<<20), windows1-windows0, at1.Sub(at0).Round(time.Second))
	if windows1 == windows0 {
		t.Errorf("no window pushed while measuring:\n%s", tail(d.Output(), 3000))
	}
	stopDaemon(t, d, 60*time.Second)
}

// cpuTime is a process's user + system time (clock ticks of 1/100 s).
func cpuTime(t *testing.T, pid int) time.Duration {
	st, err := proc.FS{}.Proc(pid).Stat()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(st.UTime+st.STime) * 10 * time.Millisecond
}

func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
