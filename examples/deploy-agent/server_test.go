package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/safeattach/safeattach/internal/testenv"
)

// waitFor polls cond until it holds, or fails the test after timeout (a
// bound, not a performance assertion).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is the audit log in memory.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startDaemon serves the API on a real loopback socket.
func startDaemon(t *testing.T, lib string, audit io.Writer) (*server, string) {
	t.Helper()
	srv := newServer(config{Lib: lib, Converter: testenv.Converter(t), MaxProfiles: 2, Audit: audit})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	return srv, "http://" + l.Addr().String()
}

func post(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestDeployAgentAPI(t *testing.T) {
	tc := testenv.Library(t, "libtcmalloc.so.4")
	risky := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + tc, "HEAPPROFILE=hp"}, Workers: 1})
	plain := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	audit := &syncBuffer{}
	_, affectedURL := startDaemon(t, testenv.BuildAgent(t, testenv.AgentAffectedLookalike), audit)
	_, fixedURL := startDaemon(t, testenv.BuildAgent(t, testenv.AgentFixedLookalike), audit)

	// GET /jvms lists both, the risky one refused for this agent.
	resp, err := http.Get(affectedURL + "/jvms")
	if err != nil {
		t.Fatal(err)
	}
	var jvms []jvmSummary
	json.NewDecoder(resp.Body).Decode(&jvms)
	resp.Body.Close()
	seen := map[int]jvmSummary{}
	for _, j := range jvms {
		seen[j.PID] = j
	}
	if j := seen[risky.PID]; j.Allowed || !strings.Contains(strings.Join(j.Rules, ","), "tcmalloc-heap-profiler") {
		t.Errorf("risky JVM in /jvms: %+v", j)
	}
	if j := seen[plain.PID]; !j.Allowed || j.Kind != "hotspot" {
		t.Errorf("plain JVM in /jvms: %+v", j)
	}

	// GET /check.
	resp, _ = http.Get(fmt.Sprintf("%s/check?pid=%d", affectedURL, risky.PID))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"allowed": false`) {
		t.Errorf("/check: %d %s", resp.StatusCode, body)
	}
	if resp, _ := http.Get(affectedURL + "/check?pid=abc"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad pid: %d", resp.StatusCode)
	}

	// POST /profile: refused with the findings, then served by the fixed build.
	resp = post(t, affectedURL+"/profile", profileRequest{PID: risky.PID, Event: "cpu", Duration: "1s"})
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "tcmalloc-heap-profiler") || !strings.Contains(string(body), "remedy") {
		t.Errorf("refusal: %d %s", resp.StatusCode, body)
	}
	resp = post(t, fixedURL+"/profile", profileRequest{PID: risky.PID, Event: "cpu", Duration: "1s"})
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Target.churn") {
		t.Errorf("profile: %d %s", resp.StatusCode, body)
	}

	// The audit trail has one JSON line per attach decision.
	var outcomes []string
	sc := bufio.NewScanner(strings.NewReader(audit.String()))
	for sc.Scan() {
		var rec struct {
			Caller, Verdict, Outcome string
			AgentSHA256              string `json:"agent_sha256"`
			PID                      int
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		outcomes = append(outcomes, rec.Verdict+"/"+string(rec.Outcome))
		if rec.PID != risky.PID || !strings.HasPrefix(rec.Caller, "127.0.0.1:") || len(rec.AgentSHA256) != 64 {
			t.Errorf("audit record %s", sc.Text())
		}
	}
	if strings.Join(outcomes, " ") != "refused/refused allowed-with-warnings/ok" && strings.Join(outcomes, " ") != "refused/refused allowed/ok" {
		t.Errorf("audit outcomes %v\n%s", outcomes, audit.String())
	}
}

func TestDeployAgentLimitsAndShutdown(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	srv, url := startDaemon(t, testenv.BuildAgent(t, testenv.AgentFixedLookalike), io.Discard)
	type result struct {
		code  int
		early string
		body  string
	}
	done := make(chan result, 1)
	go func() {
		b, _ := json.Marshal(profileRequest{PID: p.PID, Duration: "60s"})
		resp, err := http.Post(url+"/profile", "application/json", bytes.NewReader(b))
		if err != nil {
			done <- result{code: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, resp.Header.Get("X-Profile-Stopped-Early"), string(body)}
	}()
	// The first profile runs once the JVM has mapped the agent: its
	// session is past opening and into the start, holding the JVM.
	waitFor(t, 60*time.Second, "the first profile to load the agent", func() bool {
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
		return err == nil && strings.Contains(string(maps), "liblookalike_fixed.so")
	})
	// One attach at a time per JVM.
	resp := post(t, url+"/profile", profileRequest{PID: p.PID, Duration: "1s"})
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("second profile of the same JVM: %d", resp.StatusCode)
	}
	// Graceful shutdown stops the running profile cleanly and still
	// returns it.
	start := time.Now()
	go srv.Shutdown(t.Context())
	select {
	case r := <-done:
		if r.code != 200 || r.early != "true" || !strings.Contains(r.body, "Target.churn") {
			t.Errorf("profile during shutdown: %+v", r)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("shutdown took %v", time.Since(start))
		}
	case <-time.After(45 * time.Second):
		t.Fatal("shutdown did not end the running profile")
	}
}

// TestDeployAgentContinuous: a JVM profiled window after window through
// one profiling.Session; the latest window is served, the profiler stopped
// on DELETE; a JVM the rules refuse is refused with 409.
func TestDeployAgentContinuous(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	_, url := startDaemon(t, testenv.BuildAgent(t, testenv.AgentFixedLookalike), io.Discard)
	if resp := post(t, url+"/continuous", map[string]any{"pid": p.PID, "event": "itimer", "window": "1s"}); resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("start: %d %s", resp.StatusCode, b)
	}
	// Three windows of 1 s: polled until the server counts them.
	var (
		code    int
		windows int
		body    []byte
	)
	waitFor(t, 60*time.Second, "three windows", func() bool {
		resp, err := http.Get(fmt.Sprintf("%s/continuous/%d", url, p.PID))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		code = resp.StatusCode
		switch code {
		case http.StatusAccepted: // no window finished yet
			return false
		case http.StatusOK:
		default:
			t.Fatalf("latest window: %d %q", code, body)
		}
		windows, err = strconv.Atoi(resp.Header.Get("X-Profile-Windows"))
		if err != nil {
			t.Fatalf("X-Profile-Windows %q: %v", resp.Header.Get("X-Profile-Windows"), err)
		}
		return windows >= 3
	})
	if !strings.Contains(string(body), "[itimer]") {
		t.Errorf("latest window: %d windows=%d %q", code, windows, body)
	}
	req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("%s/continuous/%d", url, p.PID), nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Errorf("stop: %v %v", err, resp)
	}
	tc := testenv.Library(t, "libtcmalloc.so.4")
	risky := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + tc, "HEAPPROFILE=hp"}})
	_, affectedURL := startDaemon(t, testenv.BuildAgent(t, testenv.AgentAffectedLookalike), io.Discard)
	if resp := post(t, affectedURL+"/continuous", map[string]any{"pid": risky.PID, "event": "itimer", "window": "1s"}); resp.StatusCode != http.StatusConflict {
		t.Errorf("risky JVM: %d", resp.StatusCode)
	}
}

// TestDeployAgentPprofWindows: the embedder's pprof windows come from the
// library alone (a session asked for pprof): each window the server
// keeps is a pprof profile with samples, and a request the server cannot
// take is answered in the library's JSON envelope.
func TestDeployAgentPprofWindows(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	_, url := startDaemon(t, testenv.BuildAgent(t, testenv.AgentFixedLookalike), io.Discard)
	if resp := post(t, url+"/continuous", map[string]any{"pid": p.PID, "event": "itimer", "window": "1s", "format": "pprof"}); resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("start: %d %s", resp.StatusCode, b)
	}
	var body []byte
	waitFor(t, 60*time.Second, "two pprof windows", func() bool {
		resp, err := http.Get(fmt.Sprintf("%s/continuous/%d", url, p.PID))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusAccepted {
			return false
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("latest window: %d %q", resp.StatusCode, body)
		}
		n, err := strconv.Atoi(resp.Header.Get("X-Profile-Windows"))
		return err == nil && n >= 2
	})
	prof, err := profile.ParseData(body)
	if err != nil || len(prof.Sample) == 0 {
		t.Fatalf("the latest window is not a pprof profile with samples: %v", err)
	}
	resp := post(t, url+"/continuous", map[string]any{"pid": p.PID, "window": "1s", "format": "flamegraph"})
	var env struct {
		SchemaVersion int    `json:"schema_version"`
		Command       string `json:"command"`
		Outcome       string `json:"outcome"`
		ExitCode      int    `json:"exit_code"`
		Error         string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != http.StatusBadRequest ||
		env.SchemaVersion != 1 || env.Command != "continuous" || env.Outcome != "invalid" || env.ExitCode != 1 || !strings.Contains(env.Error, "flamegraph") {
		t.Errorf("bad format: %d %+v %v", resp.StatusCode, env, err)
	}
}

// TestDeployAgentUntilStopping: a request's context ends when the server
// shuts down, when its parent ends, or at once when the server is
// already stopping; Shutdown may be called again.
func TestDeployAgentUntilStopping(t *testing.T) {
	ended := func(ctx context.Context) bool {
		select {
		case <-ctx.Done():
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	srv := newServer(config{})
	parent, cancelParent := context.WithCancel(t.Context())
	byParent, cancel1 := srv.untilStopping(parent)
	defer cancel1()
	cancelParent()
	if !ended(byParent) {
		t.Error("the parent ended, the request's context did not")
	}
	byStop, cancel2 := srv.untilStopping(t.Context())
	defer cancel2()
	if byStop.Err() != nil {
		t.Fatal("ended before the server stopped")
	}
	srv.Shutdown(t.Context())
	if !ended(byStop) {
		t.Error("the server stopped, the request's context did not end")
	}
	late, cancel3 := srv.untilStopping(t.Context())
	defer cancel3()
	if late.Err() == nil {
		t.Error("a context made while stopping has not ended")
	}
	srv.Shutdown(t.Context()) // a second Shutdown does not close the channel again
}
