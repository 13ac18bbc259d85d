package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// buildDaemon builds the daemon; SAFEATTACH_DAEMON_BIN, if set, names a
// binary to test instead (to measure an older build in the same run).
func buildDaemon(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SAFEATTACH_DAEMON_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "safeattach-daemon")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDaemonServesAndStops: the binary serves its three endpoints,
// becomes ready once it has read the pod list, logs each request as JSON,
// and exits 0 on SIGTERM.
func TestDaemonServesAndStops(t *testing.T) {
	bin := buildDaemon(t)
	pods := filepath.Join(t.TempDir(), "pods.json")
	os.WriteFile(pods, []byte(`{"kind":"PodList","items":[]}`), 0o644)
	cmd := exec.Command(bin, "--pods-file", pods, "--node", "node-1", "--listen", "127.0.0.1:0")
	p := testenv.Start(t, cmd)
	p.WaitOutput(t, "safeattach-daemon serving", 20*time.Second)
	var addr string
	for _, line := range strings.Split(p.Output(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "safeattach-daemon serving" {
			addr, _ = rec["addr"].(string)
		}
	}
	if addr == "" {
		t.Fatalf("no address in the log:\n%s", p.Output())
	}
	get := func(path string) (int, string, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, _, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for code, _, _ := get("/readyz"); code != 200 && time.Now().Before(deadline); code, _, _ = get("/readyz") {
		time.Sleep(50 * time.Millisecond)
	}
	if code, ct, body := get("/metrics"); code != 200 || !strings.HasPrefix(ct, "text/plain; version=0.0.4") || !strings.Contains(body, "safeattach_pod_syncs_total") {
		t.Errorf("/metrics: %d %s\n%s", code, ct, body)
	}
	// The access log line is written once the response is complete.
	p.WaitOutput(t, `"msg":"http","method":"GET","path":"/metrics","status":200`, 10*time.Second)
	syscall.Kill(p.PID, syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20 s after SIGTERM")
	}
	if st := p.ExitState(); st.ExitCode() != 0 {
		t.Errorf("exit %v after SIGTERM; output %s", st, p.Output())
	}
}

// TestDaemonConfigErrors: a misspelt setting, a FIFO, a missing file,
// and agent beside agents are errors that name the problem, and nothing
// hangs.
func TestDaemonConfigErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.json")
	os.WriteFile(typo, []byte(`{"windw": "60s"}`), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	badWindow := filepath.Join(dir, "window.json")
	os.WriteFile(badWindow, []byte(`{"window": 60}`), 0o644)
	both := filepath.Join(dir, "both.json")
	os.WriteFile(both, []byte(`{"agent": "/opt/ap/lib/libasyncProfiler.so", "agents": ["/opt/ap-4.5/lib/libasyncProfiler.so"]}`), 0o644)
	emptyAgent := filepath.Join(dir, "empty-agent.json")
	os.WriteFile(emptyAgent, []byte(`{"agents": ["/opt/ap-4.5", ""]}`), 0o644)
	badFallback := filepath.Join(dir, "fallback.json")
	os.WriteFile(badFallback, []byte(`{"fallback": "async-profiler"}`), 0o644)
	for path, want := range map[string]string{typo: `unknown field "windw"`, fifo: "not a regular file", filepath.Join(dir, "none"): "no such file", badWindow: "duration",
		both: "give agent (one build) or agents", emptyAgent: "agents: an empty path", badFallback: `fallback "async-profiler": want jfr or none`} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := loadConfig(ctx, path)
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", filepath.Base(path), err, want)
		}
	}
	out, err := exec.Command(buildDaemon(t), "--config", typo).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "windw") {
		t.Errorf("bad config: %v %s", err, out)
	}
}
