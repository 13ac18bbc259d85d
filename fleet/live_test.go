package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/profiling"

	"github.com/prometheus/common/expfmt"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/jfrpprof"
	"github.com/safeattach/safeattach/pyroscope"
)

// loopbackPyroscope accepts what Pyroscope's /ingest accepts for folded
// profiles and keeps each request's query.
type loopbackPyroscope struct {
	mu   sync.Mutex
	reqs []url.Values
	log  []string
}

func (s *loopbackPyroscope) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	// async-profiler's collapsed windows, or the Flight Recorder's
	// recordings (a JFR file starts with FLR\0).
	folded := q.Get("format") == "folded" && strings.Contains(string(body), "[itimer]")
	recording := q.Get("format") == "jfr" && bytes.HasPrefix(body, []byte("FLR\x00"))
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" || !folded && !recording || q.Get("from") == "" || q.Get("until") == "" {
		http.Error(w, "not an ingest request", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, q)
	s.log = append(s.log, fmt.Sprintf("POST %s?%s %d bytes", r.URL.Path, r.URL.RawQuery, len(body)))
	s.mu.Unlock()
}

func (s *loopbackPyroscope) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// podList writes a PodList naming the two containers.
func writePods(t *testing.T, path string, pods ...map[string]string) {
	t.Helper()
	var items []any
	for _, p := range pods {
		items = append(items, map[string]any{
			"metadata": map[string]any{"namespace": "shop", "name": p["name"], "uid": p["uid"], "annotations": map[string]string{
				AnnotationEnabled: "true", AnnotationEvent: "itimer", AnnotationWindow: "1s"}},
			"spec":   map[string]any{"nodeName": "node-1"},
			"status": map[string]any{"phase": "Running", "containerStatuses": []any{map[string]any{"name": "app", "containerID": p["id"], "state": map[string]any{"running": map[string]any{}}}}},
		})
	}
	data, _ := json.Marshal(map[string]any{"kind": "PodList", "items": items})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLiveDaemonTwoPods is the node agent end to end: two annotated pods
// whose JVMs run in their own namespaces inside kubelet-named cgroups.
// One runs tcmalloc's heap profiler: it is refused once, counted and
// logged, and not retried on later syncs. The other is profiled window
// after window, and three windows arrive at the loopback Pyroscope with
// the pod's labels.
func TestLiveDaemonTwoPods(t *testing.T) {
	t.Parallel()
	tc := testenv.Library(t, "libtcmalloc.so.4")
	podOK, idOK := testenv.PodIDs(t)
	podRisky, idRisky := testenv.PodIDs(t)
	wrapOK, jvmOK := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+podOK+"/"+idOK, wrapOK, jvmOK)
	wrapRisky, jvmRisky := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp && export LD_PRELOAD="+tc+" HEAPPROFILE=/tmp/heap")
	testenv.KubeletCgroup(t, "systemd", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+
		strings.ReplaceAll(podRisky, "-", "_")+".slice/cri-containerd-"+idRisky+".scope", wrapRisky, jvmRisky)

	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile,
		map[string]string{"name": "orders", "uid": podOK, "id": "containerd://" + idOK},
		map[string]string{"name": "billing", "uid": podRisky, "id": "containerd://" + idRisky})

	var logs bytes.Buffer
	var logMu sync.Mutex
	ingest := &loopbackPyroscope{}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)
	metrics := NewMetrics()
	pusher, err := pyroscope.NewPusher(pyroscope.Config{URL: srv.URL, Logger: slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, nil)), Observe: metrics.ObservePush})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, nil))
	d, err := New(Config{
		Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: testenv.BuildAgent(t, testenv.AgentAffectedLookalike),
		Format: "collapsed", SyncInterval: 300 * time.Millisecond, Pusher: pusher, Logger: logger, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	runDaemon(t, d, pusher)

	deadline := time.Now().Add(45 * time.Second)
	for ingest.count() < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := ingest.count(); n < 3 {
		t.Fatalf("%d windows reached Pyroscope in 45 s, want 3; metrics:\n%s\nlog:\n%s", n, ownMetrics(t, d.Metrics()), logs.String())
	}
	ingest.mu.Lock()
	for _, q := range ingest.reqs[:3] {
		if name := q.Get("name"); name != "shop/app{container=app,engine=async-profiler,namespace=shop,node=node-1,pod=orders}" {
			t.Errorf("window pushed as %q", name)
		}
	}
	t.Logf("loopback Pyroscope's request log:\n%s", strings.Join(ingest.log[:3], "\n"))
	ingest.mu.Unlock()

	fams := scrape(t, d.Handler())
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"safeattach_attaches_total", []string{"outcome", "ok"}},
		{"safeattach_attaches_total", []string{"outcome", "refused"}},
		{"safeattach_refusals_total", []string{"rule", "tcmalloc-heap-profiler"}},
		{"safeattach_sessions_active", nil},
		{"safeattach_session", []string{"namespace", "shop", "pod", "orders", "container", "app"}},
	} {
		if got, ok := testenv.MetricValue(fams, c.name, c.labels...); got != 1 {
			t.Errorf("%s%v = %v (present %v), want 1", c.name, c.labels, got, ok)
		}
	}
	if got, _ := testenv.MetricValue(fams, "safeattach_push_duration_seconds", "result", "ok"); got < 3 {
		t.Errorf("push latency observed %v times, want at least 3", got)
	}
	var text strings.Builder
	for _, f := range fams {
		expfmt.MetricFamilyToText(&text, f)
	}
	t.Logf("/metrics:\n%s", text.String())
	logMu.Lock()
	logged := logs.String()
	logMu.Unlock()
	if !strings.Contains(logged, `"msg":"JVM not profiled","namespace":"shop","pod":"billing"`) || !strings.Contains(logged, "tcmalloc-heap-profiler") {
		t.Errorf("the refusal is not logged with its pod and rule:\n%s", logged)
	}
	if err := syscall.Kill(jvmRisky, 0); err != nil {
		t.Errorf("the refused JVM is gone: %v", err)
	}

	// The orders pod leaves: its profiler is stopped at the next sync.
	writePods(t, podsFile, map[string]string{"name": "billing", "uid": podRisky, "id": "containerd://" + idRisky})
	deadline = time.Now().Add(10 * time.Second)
	for metric(t, d.Metrics(), "safeattach_sessions_active") != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := metric(t, d.Metrics(), "safeattach_sessions_active"); n != 0 {
		t.Errorf("%v profilers still active after their pod left", n)
	}
}

// TestLiveDaemonFallsBackToFlightRecorder: a pod whose JVM the rules
// refuse async-profiler to (here the operator's deny list names the
// build) is profiled by the JVM's own Flight Recorder when the node agent
// is configured to fall back: its windows arrive at the loopback
// Pyroscope as JFR recordings labelled engine=jfr, and /metrics counts
// the refusal, the fallback by rule and engine, and the windows by
// engine. The JVM lives on.
func TestLiveDaemonFallsBackToFlightRecorder(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+pod+"/"+id, wrapper, jvm)
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "billing", "uid": pod, "id": "containerd://" + id})
	ingest := &loopbackPyroscope{}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)
	metrics := NewMetrics()
	pusher, err := pyroscope.NewPusher(pyroscope.Config{URL: srv.URL, Observe: metrics.ObservePush})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{
		Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: lib, Options: attach.Options{DenyAgents: []string{lib}},
		Format: "collapsed", Fallback: profiling.FlightRecorder, SyncInterval: 300 * time.Millisecond, Pusher: pusher, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	runDaemon(t, d, pusher)
	deadline := time.Now().Add(60 * time.Second)
	for ingest.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := ingest.count(); n < 2 {
		t.Fatalf("%d windows reached Pyroscope in 60 s, want 2; metrics:\n%s", n, ownMetrics(t, d.Metrics()))
	}
	ingest.mu.Lock()
	for _, q := range ingest.reqs[:2] {
		if name, format := q.Get("name"), q.Get("format"); name != "shop/app{container=app,engine=jfr,namespace=shop,node=node-1,pod=billing}" || format != "jfr" {
			t.Errorf("window pushed as %q, format %q", name, format)
		}
	}
	ingest.mu.Unlock()
	fams := scrape(t, d.Handler())
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"safeattach_refusals_total", []string{"rule", conflicts.RuleAgentDenylisted}},
		{"safeattach_fallbacks_total", []string{"rule", conflicts.RuleAgentDenylisted, "engine", "jfr"}},
		{"safeattach_attaches_total", []string{"outcome", "ok"}},
	} {
		if got, ok := testenv.MetricValue(fams, c.name, c.labels...); got != 1 {
			t.Errorf("%s%v = %v (present %v), want 1", c.name, c.labels, got, ok)
		}
	}
	for _, line := range strings.Split(ownMetrics(t, d.Metrics()), "\n") {
		if strings.Contains(line, "fallbacks_total{") || strings.Contains(line, "windows_total{") || strings.Contains(line, "refusals_total{") {
			t.Logf("/metrics: %s", line)
		}
	}
	if got, _ := testenv.MetricValue(fams, "safeattach_profile_windows_total", "result", "ok", "engine", "jfr"); got < 2 {
		t.Errorf("windows by the Flight Recorder counted %v, want at least 2", got)
	}
	if err := syscall.Kill(jvm, 0); err != nil {
		t.Errorf("the JVM is gone: %v", err)
	}
}

// runDaemon runs d and its pusher until the test ends, then stops both
// (the daemon stops its profilers first).
func runDaemon(t *testing.T, d *Daemon, pusher *pyroscope.Pusher) {
	ctx, cancel := context.WithCancel(context.Background())
	pushed, ran := make(chan struct{}), make(chan struct{})
	go func() { pusher.Run(ctx); close(pushed) }()
	go func() { d.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran; <-pushed })
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestLiveDaemonJFRWindows: each window the daemon pushes in its default
// format is a JFR recording that Pyroscope's parser (grafana/jfr-parser,
// through jfrpprof) reads, with CPU samples: from the container's busy JVM
// with the real async-profiler when ASYNC_PROFILER_HOME names one, else a
// real async-profiler 4.5 recording written by the look-alike — so CI runs
// the JFR path too.
func TestLiveDaemonJFRWindows(t *testing.T) {
	t.Parallel()
	lib := testenv.ProfilerOrLookalike(t)
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
	testenv.KubeletCgroup(t, "pids", "kubepods/pod"+pod+"/"+id, wrapper, jvm)
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "orders", "uid": pod, "id": "containerd://" + id})

	type window struct {
		query url.Values
		body  []byte
	}
	got := make(chan window, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- window{r.URL.Query(), body}
	}))
	t.Cleanup(srv.Close)
	pusher, _ := pyroscope.NewPusher(pyroscope.Config{URL: srv.URL})
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: lib, SyncInterval: 300 * time.Millisecond, Pusher: pusher})
	if err != nil {
		t.Fatal(err)
	}
	runDaemon(t, d, pusher)
	for i := 0; i < 2; i++ {
		select {
		case w := <-got:
			if w.query.Get("format") != "jfr" {
				t.Fatalf("window %d pushed as %q", i, w.query.Get("format"))
			}
			profiles, err := jfrpprof.Convert(w.body, time.Now().Add(-time.Minute), time.Now())
			if err != nil {
				t.Fatalf("window %d (%d bytes) is not JFR Pyroscope can read: %v", i, len(w.body), err)
			}
			var samples int
			var kinds []string
			for _, p := range profiles {
				kinds = append(kinds, p.Metric)
				samples += len(p.Profile.Sample)
			}
			t.Logf("window %d: %d bytes of JFR, profiles %v, %d distinct stacks", i, len(w.body), kinds, samples)
			if samples == 0 {
				t.Errorf("window %d has no samples from a busy JVM", i)
			}
		case <-time.After(45 * time.Second):
			t.Fatalf("window %d never arrived; metrics:\n%s", i, ownMetrics(t, d.Metrics()))
		}
	}
}

// TestLiveDaemonTakesOverALeftProfiler: a profiler left running in the JVM
// by this node's daemon (killed before it could stop it) is stopped and
// restarted by the next daemon, whose windows then arrive.
func TestLiveDaemonTakesOverALeftProfiler(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/besteffort/pod"+pod+"/"+id, wrapper, jvm)
	left, err := profiling.OpenSession(context.Background(), jvm, profiling.SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed", Owner: "safeattach-daemon node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := left.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	left.Close() // never stopped

	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "orders", "uid": pod, "id": id})
	ingest := &loopbackPyroscope{}
	srv := httptest.NewServer(ingest)
	t.Cleanup(srv.Close)
	pusher, _ := pyroscope.NewPusher(pyroscope.Config{URL: srv.URL})
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: lib, Format: "collapsed", SyncInterval: 300 * time.Millisecond, Pusher: pusher})
	if err != nil {
		t.Fatal(err)
	}
	runDaemon(t, d, pusher)
	deadline := time.Now().Add(30 * time.Second)
	for ingest.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := ingest.count(); n < 2 {
		t.Fatalf("%d windows after taking over a running profiler; metrics:\n%s", n, ownMetrics(t, d.Metrics()))
	}
}

// TestLiveDaemonLeavesOthersProfilers (the way back; invariant 12): a
// profiler a colleague started in the JVM is not the daemon's to take
// over: the JVM is refused (refusals{rule="profiler-busy"}), not retried,
// and the colleague's profile keeps running and stops with all its data.
func TestLiveDaemonLeavesOthersProfilers(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/besteffort/pod"+pod+"/"+id, wrapper, jvm)
	ctx := context.Background()
	colleague, err := profiling.OpenSession(ctx, jvm, profiling.SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "wall"}, Format: "collapsed", Owner: "safeattach profile"})
	if err != nil {
		t.Fatal(err)
	}
	defer colleague.Close()
	if err := colleague.Start(ctx); err != nil {
		t.Fatal(err)
	}
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "shared", "uid": pod, "id": id})
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: lib, Format: "collapsed", Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if m := d.Metrics(); metric(t, m, "safeattach_refusals_total", "rule", RefusalProfilerBusy) != 1 ||
		metric(t, m, "safeattach_sessions_active") != 0 || metric(t, m, "safeattach_profile_windows_total", "result", "ok") != 0 {
		t.Fatalf("want one profiler-busy refusal, nothing active; metrics:\n%s", ownMetrics(t, m))
	}
	var out strings.Builder
	if _, err := colleague.Stop(ctx, &out); err != nil || !strings.Contains(out.String(), "[wall]") {
		t.Fatalf("the colleague's profile: %v %q", err, out.String())
	}
}

// TestLiveAnnotationsAreValidated (the way back): a pod annotation
// that would add options to the agent's command ("wall,interval=1,…") is
// refused with a warning naming the annotation, and the default event
// is profiled instead; a service name with label syntax is refused the
// same way. The refused values are logged printable (as
// TestLogEscapesWhatTheLogHandlersPass requires): their
// terminal sequences and C1 controls escaped.
func TestLiveAnnotationsAreValidated(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/besteffort/pod"+pod+"/"+id, wrapper, jvm)
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	data, _ := json.Marshal(map[string]any{"kind": "PodList", "items": []any{map[string]any{
		"metadata": map[string]any{"namespace": "shop", "name": "orders", "uid": pod, "annotations": map[string]string{
			AnnotationEnabled: "true", AnnotationWindow: "1s",
			AnnotationEvent:    "wall,interval=1,jstackdepth=4096,file=/etc/passwd\u009b2J",
			AnnotationService:  "svc{tenant=other}" + hostileText,
			AnnotationFallback: "jfr,settings=/etc/passwd"}},
		"spec":   map[string]any{"nodeName": "node-1"},
		"status": map[string]any{"phase": "Running", "containerStatuses": []any{map[string]any{"name": "app", "containerID": id, "state": map[string]any{"running": map[string]any{}}}}},
	}}})
	os.WriteFile(podsFile, data, 0o644)
	var bodies []string
	var names []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, names = append(bodies, string(b)), append(names, r.URL.Query().Get("name"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	var logs bytes.Buffer
	var logMu sync.Mutex
	pusher, _ := pyroscope.NewPusher(pyroscope.Config{URL: srv.URL})
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: lib, Format: "collapsed", Event: "itimer",
		SyncInterval: 300 * time.Millisecond, Pusher: pusher, Logger: slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runDaemon(t, d, pusher)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(bodies)
		mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) == 0 {
		t.Fatalf("no window; metrics:\n%s", ownMetrics(t, d.Metrics()))
	}
	if !strings.Contains(bodies[0], "[itimer]") || strings.Contains(bodies[0], "[wall]") {
		t.Errorf("the window was not profiled with the default event: %q", bodies[0])
	}
	if names[0] != "shop/app{container=app,engine=async-profiler,namespace=shop,node=node-1,pod=orders}" {
		t.Errorf("pushed as %q", names[0])
	}
	logMu.Lock()
	logged := logs.String()
	logMu.Unlock()
	for _, a := range []string{AnnotationEvent, AnnotationService, AnnotationFallback} {
		if !strings.Contains(logged, `"msg":"annotation refused"`) || !strings.Contains(logged, `"annotation":"`+a+`"`) {
			t.Errorf("no warning naming %s:\n%s", a, logged)
		}
	}
	if testenv.HasControl(logged) || !strings.Contains(logged, `svc{tenant=other}svc\\x1b]52;c;aGk=\\x07\\u009b2J`) {
		t.Errorf("the refused values are not logged escaped:\n%q", logged)
	}
}

// TestLiveDaemonHungAgentCostsItsDeadline: an agent that never returns
// from Agent_OnAttach costs one sync the attach deadline, is counted as
// timed out and judged (not retried), and the next sync goes on.
func TestLiveDaemonHungAgentCostsItsDeadline(t *testing.T) {
	t.Parallel()
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "kubepods/pod"+pod+"/"+id, wrapper, jvm)
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "stuck", "uid": pod, "id": "docker://" + id})
	d, err := New(Config{Node: "node-1", Pods: kube.FilePods{Path: podsFile}, Lib: testenv.BuildAgent(t, testenv.AgentBlockForever),
		Format: "collapsed", Options: attach.Options{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Sync(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a sync with a hung agent did not end within its 2 s attach deadline (waited 60 s)")
	}
	if m := d.Metrics(); metric(t, m, "safeattach_attaches_total", "outcome", "timed-out") != 1 || metric(t, m, "safeattach_sessions_active") != 0 {
		t.Errorf("want one timed-out attach and nothing active; metrics:\n%s", ownMetrics(t, m))
	}
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if metric(t, d.Metrics(), "safeattach_attaches_total", "outcome", "timed-out") != 1 {
		t.Errorf("the hung JVM was attached to again; metrics:\n%s", ownMetrics(t, d.Metrics()))
	}
}

// judgedPod is a container JVM of a pod in a pods file (setup runs
// before it, as the container's entrypoint would), a daemon of cfg
// watching that file, and what it logged; the daemon has synced until
// it judged the JVM.
type judgedPod struct {
	jvm  int
	d    *Daemon
	m    *Metrics
	mu   sync.Mutex
	logs bytes.Buffer
}

func (j *judgedPod) log() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.logs.String()
}

func startJudgedPod(t *testing.T, setup string, cfg Config) *judgedPod {
	t.Helper()
	pod, id := testenv.PodIDs(t)
	wrapper, jvm := testenv.StartContainerJVM(t, setup)
	testenv.KubeletCgroup(t, "pids", "kubepods/besteffort/pod"+pod+"/"+id, wrapper, jvm)
	podsFile := filepath.Join(t.TempDir(), "pods.json")
	writePods(t, podsFile, map[string]string{"name": "billing", "uid": pod, "id": id})
	j := &judgedPod{jvm: jvm}
	cfg.Node, cfg.Pods, cfg.Format, cfg.Window = "node-1", kube.FilePods{Path: podsFile}, "collapsed", time.Second
	cfg.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&j.mu, &j.logs}, nil))
	var err error
	if j.d, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.d.StopAll)
	j.m = j.d.Metrics()
	// Synced until the JVM was judged: a sync may come before the
	// container's JVM is there to find.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if err := j.d.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if metric(t, j.m, "safeattach_attaches_total", "outcome", "ok")+metric(t, j.m, "safeattach_attaches_total", "outcome", "refused") > 0 {
			break
		}
	}
	return j
}

// TestLiveDaemonAgentsPicksTheAllowedBuild: with agents [affected,
// fixed], a JVM under tcmalloc's heap profiler refuses the first (its
// version) and is profiled with the second; which build was used is
// logged and counted, and the JVM maps only that one.
func TestLiveDaemonAgentsPicksTheAllowedBuild(t *testing.T) {
	t.Parallel()
	tc := testenv.Library(t, "libtcmalloc.so.4")
	affected, fixed := testenv.BuildAgent(t, testenv.AgentAffectedLookalike), testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	j := startJudgedPod(t, "mount -t tmpfs tmpfs /tmp && export LD_PRELOAD="+tc+" HEAPPROFILE=/tmp/heap", Config{Agents: []string{affected, fixed}})
	m := j.m
	if metric(t, m, "safeattach_agent_builds_total", "agent", fixed) != 1 || metric(t, m, "safeattach_sessions_active") != 1 ||
		metric(t, m, "safeattach_attaches_total", "outcome", "ok") != 1 {
		t.Fatalf("want the JVM profiled with the second build; metrics:\n%s", ownMetrics(t, m))
	}
	logged := j.log()
	if !strings.Contains(logged, "the rules refuse the preferred build of agents for this JVM") || !strings.Contains(logged, `"msg":"agent chosen from agents"`) || !strings.Contains(logged, `"version":"4.5"`) {
		t.Errorf("the choice is not logged:\n%s", logged)
	}
	if maps := testenv.Maps(t, j.jvm); strings.Contains(maps, "lookalike_affected") || !strings.Contains(maps, "lookalike_fixed") {
		t.Errorf("the JVM's maps:\n%s", maps)
	}
}

// TestLiveDaemonInstalledBuild: a node agent given no build (neither
// agent nor agents) profiles with the installed async-profiler
// ($ASYNC_PROFILER_HOME here), judged and delivered as any build is.
// Not parallel: it sets ASYNC_PROFILER_HOME.
func TestLiveDaemonInstalledBuild(t *testing.T) {
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	home, installed := testenv.AgentHome(t, fixed)
	t.Setenv("ASYNC_PROFILER_HOME", home)
	data, err := os.ReadFile(fixed)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	j := startJudgedPod(t, "mount -t tmpfs tmpfs /tmp", Config{})
	if metric(t, j.m, "safeattach_attaches_total", "outcome", "ok") != 1 || metric(t, j.m, "safeattach_sessions_active") != 1 {
		t.Fatalf("want the JVM profiled with the installed build (%s); metrics:\n%s\nlog:\n%s", installed, ownMetrics(t, j.m), j.log())
	}
	// Its copy in the container, named by its hash.
	if maps := testenv.Maps(t, j.jvm); !strings.Contains(maps, hex.EncodeToString(sum[:])+"/libasyncProfiler.so") {
		t.Errorf("the JVM does not map the installed build:\n%s", maps)
	}
}
