package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// ingestCounter is a loopback Pyroscope that counts the JFR windows it
// is sent and keeps the largest.
type ingestCounter struct {
	mu      sync.Mutex
	windows int
	largest int
}

func (s *ingestCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<30))
	if r.URL.Query().Get("format") != "jfr" || !strings.HasPrefix(string(body), "FLR\x00") {
		http.Error(w, "not a JFR window", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.windows++
	s.largest = max(s.largest, len(body))
	s.mu.Unlock()
}

func (s *ingestCounter) count() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.windows, s.largest
}

// podList writes a PodList: the profiled pod, and filler pods on the same
// node carrying annotPerPod bytes of annotations each (legal: Kubernetes
// allows 256 KiB per object), none of them opted in.
func podList(t *testing.T, path, uid, containerID string, fillers, annotPerPod int) int64 {
	t.Helper()
	items := []any{map[string]any{
		"metadata": map[string]any{"namespace": "shop", "name": "orders", "uid": uid, "annotations": map[string]string{
			"profiles.safeattach.io/enabled": "true", "profiles.safeattach.io/window": "1s"}},
		"spec":   map[string]any{"nodeName": "node-1"},
		"status": map[string]any{"phase": "Running", "containerStatuses": []any{map[string]any{"name": "app", "containerID": containerID, "state": map[string]any{"running": map[string]any{}}}}},
	}}
	big := strings.Repeat("x", annotPerPod/4)
	// managedFields (server-side apply's bookkeeping) is not counted in
	// the 256 KiB annotation limit, and real ones run to 100 KiB and more.
	managed := []any{map[string]any{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
		"fieldsV1": map[string]any{"f:metadata": map[string]any{"f:annotations": strings.Repeat("y", 150<<10)}}}}
	for i := range fillers {
		items = append(items, map[string]any{
			"metadata": map[string]any{"namespace": "bulk", "name": fmt.Sprintf("filler-%d", i), "uid": fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
				"managedFields": managed,
				"annotations":   map[string]string{"a": big, "b": big, "c": big, "kubectl.kubernetes.io/last-applied-configuration": big}},
			"spec":   map[string]any{"nodeName": "node-1"},
			"status": map[string]any{"phase": "Running"},
		})
	}
	data, _ := json.Marshal(map[string]any{"kind": "PodList", "items": items})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return int64(len(data))
}

// TestDaemonUnderAttack (the way back): the daemon runs in
// a 128 MiB memory cgroup, as the manifests limit it, profiling a pod
// whose JVM runs as nobody in its own namespaces and root. The pod's user
// attacks the way back: every recording of the daemon's that appears in
// its /tmp is made a 900 MiB sparse file, and every agent log gets 1 MB
// appended; the node's pod list is 31 MB of legal annotations. The daemon
// must never be killed: oversized windows are dropped and counted, logs
// are capped, the list is decoded as it is read. SAFEATTACH_ATTACK picks
// one attack ("sparse", "log", "podlist") to measure it alone, with
// SAFEATTACH_DAEMON_BIN naming the build to measure.
func TestDaemonUnderAttack(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	bin := buildDaemon(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	uid, id := "7f1d3c2b-4e5f-4a6b-9c8d-00000000a77a", strings.Repeat("e9", 32) // an ID no other test uses: packages run at once
	pod := testenv.StartPod(t, testenv.PodSpec{Workers: 1})
	testenv.KubeletCgroup(t, "pids", "kubepods/besteffort/pod"+uid+"/"+id, pod.Wrapper, pod.PID)
	only := os.Getenv("SAFEATTACH_ATTACK")
	fillers := 110
	if only != "" && only != "podlist" {
		fillers = 0
	}
	pods := filepath.Join(t.TempDir(), "pods.json")
	size := podList(t, pods, uid, "containerd://"+id, fillers, 123<<10)
	t.Logf("pod list: %d MB", size>>20)

	ingest := &ingestCounter{}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)
	config := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(config, []byte(fmt.Sprintf(`{"agent": %q, "sync_interval": "1s", "window": "1s"}`, lib)), 0o644)

	// The attacker: the pod's own user, inside the pod.
	switch only {
	case "":
		pod.StartWaybackAttacker(t)
	case "sparse", "log":
		pod.StartWaybackAttacker(t, only)
	}

	mem := testenv.NewMemCgroup(t, 128<<20)
	cmd := exec.Command(bin, "--config", config, "--pods-file", pods, "--node", "node-1", "--listen", "127.0.0.1:0", "--pyroscope", srv.URL)
	mem.Wrap(cmd)
	d := testenv.Start(t, cmd)
	d.WaitOutput(t, "safeattach-daemon serving", 30*time.Second)
	time.Sleep(20 * time.Second)
	if !d.Alive() {
		t.Fatalf("the daemon died under attack (%v; OOM kills %d):\n%s", d.ExitState(), mem.OOMKills(), tail(d.Output(), 3000))
	}
	metrics := scrape(t, d.Output())
	stopDaemon(t, d, 40*time.Second)
	out := d.Output()
	windows, largest := ingest.count()
	t.Logf("peak memory of the daemon's cgroup %.1f MiB, OOM kills %d; windows pushed %d (largest %d bytes), over budget %d",
		float64(mem.Peak())/(1<<20), mem.OOMKills(), windows, largest, strings.Count(out, `"result":"over-budget"`))
	if mem.OOMKills() != 0 || d.ExitState().ExitCode() != 0 || mem.Peak() > 64<<20 {
		t.Fatalf("exit %v, OOM kills %d, peak %d MiB (more than half the limit):\n%s", d.ExitState(), mem.OOMKills(), mem.Peak()>>20, tail(out, 3000))
	}
	if (only == "" || only == "sparse") && !strings.Contains(metrics, `safeattach_profile_windows_total{engine="async-profiler",result="over-budget"}`) {
		t.Errorf("/metrics does not count the dropped windows:\n%s", metrics)
	}
	if (only == "" || only == "sparse") && !strings.Contains(out, `"result":"over-budget"`) {
		t.Errorf("no window was dropped as over budget: the attack never landed?\n%s", tail(out, 3000))
	}
	if largest > 1<<20 {
		t.Errorf("a window of %d bytes was pushed: the sparse file was read", largest)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// scrape reads the daemon's /metrics at the address its log announced.
func scrape(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "safeattach-daemon serving" {
			resp, err := http.Get("http://" + rec["addr"].(string) + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
	}
	t.Fatal("no address in the daemon's log")
	return ""
}

// stopDaemon sends SIGTERM and waits for the daemon to exit (its last
// windows pushed), failing after wait.
func stopDaemon(t *testing.T, d *testenv.Process, wait time.Duration) {
	t.Helper()
	syscall.Kill(d.PID, syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(wait):
		t.Fatalf("still running %v after SIGTERM", wait)
	}
}
