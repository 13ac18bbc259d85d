package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/kube/podwatch"
)

// onDemandEnv is a node with two pods named orders (with annotations),
// in namespaces a and b, each running a JVM in its kubelet-named cgroup, and a node agent
// whose pods come from a watch of the real API server and whose
// on-demand API asks that server who a caller is and what it may do.
type onDemandEnv struct {
	api     *kubeapi.API
	d       *Daemon
	a, b    string // namespaces
	jvmA    int
	jvmB    int
	lib     string
	logMu   sync.Mutex
	logs    bytes.Buffer
	metrics *Metrics
}

func newOnDemandEnv(t *testing.T, annotations map[string]string, configure ...func(*Config)) *onDemandEnv {
	t.Helper()
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	e := &onDemandEnv{api: api, lib: testenv.BuildAgent(t, testenv.AgentFixedLookalike), metrics: NewMetrics()}
	e.a, e.b = api.Namespace(t), api.Namespace(t)
	node := kubeapi.Name("node")
	for i, ns := range []string{e.a, e.b} {
		pod := api.Pod(t, ns, "orders", node, annotations)
		_, sum := testenv.PodIDs(t)
		wrap, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1-i)
		testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+string(pod.UID)+"/"+sum, wrap, jvm)
		api.Running(t, ns, "orders", "containerd://"+sum)
		if i == 0 {
			e.jvmA = jvm
		} else {
			e.jvmB = jvm
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	watch, err := podwatch.Start(ctx, api.Config, node)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(lockedWriter{&e.logMu, &e.logs}, nil))
	cfg := Config{Node: node, Pods: watch, Lib: e.lib, Logger: logger, Metrics: e.metrics}
	for _, c := range configure {
		c(&cfg)
	}
	if e.d, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if pods, err := watch.Pods(ctx); err == nil && len(pods) == 2 && pods[0].Phase == "Running" && pods[1].Phase == "Running" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return e
}

// serve is the on-demand API over TLS with cfg's caps.
func (e *onDemandEnv) serve(t *testing.T, cfg OnDemandConfig) *httptest.Server {
	t.Helper()
	var err error
	if cfg.Authenticator, cfg.Authorizer, err = DelegatingAuth(context.Background(), e.api.Client, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	cfg.Events = e.api.Client
	h, err := e.d.OnDemandHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// HTTP/1.1, as the node agent serves it.
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// account creates a ServiceAccount in ns and returns a token of it; with
// profile, a Role bound to it lets it create profiles.safeattach.io.
func (e *onDemandEnv) account(t *testing.T, ns, name string, profile bool) string {
	t.Helper()
	if !profile {
		return e.api.ServiceAccountToken(t, ns, name)
	}
	return e.api.ServiceAccountToken(t, ns, name, rbacv1.PolicyRule{APIGroups: []string{OnDemandGroup}, Resources: []string{OnDemandResource}, Verbs: []string{OnDemandVerb}})
}

type reply struct {
	status int
	body   string
	result map[string]any
	header http.Header
	closed bool // the server closes the connection after it
}

// post asks srv for a profile of ns/orders with token and extra headers.
func post(t *testing.T, ctx context.Context, srv *httptest.Server, ns, query, token string, headers ...string) reply {
	t.Helper()
	return call(t, ctx, srv, http.MethodPost, ns, "profile", query, token, headers...)
}

// call sends method to action (profile, start, status...) of ns/orders
// with token and extra headers.
func call(t *testing.T, ctx context.Context, srv *httptest.Server, method, ns, action, query, token string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+"/apis/safeattach.io/v1/namespaces/"+ns+"/pods/orders/"+action+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return reply{status: -1, body: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: string(body), header: resp.Header, closed: resp.Close}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		json.Unmarshal(body, &r.result)
	}
	return r
}

// events are the Events regarding ns/orders, as "reason: note".
func (e *onDemandEnv) events(t *testing.T, ns string) []string {
	t.Helper()
	list, err := e.api.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.Regarding.Kind == "Pod" && ev.Regarding.Name == "orders" {
			out = append(out, ev.Reason+": "+ev.Note)
		}
	}
	return out
}

// waitPod waits until the node agent's pods include one pred accepts
// (what names what the test changed, for a failure).
func (e *onDemandEnv) waitPod(t *testing.T, what string, pred func(kube.Pod) bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if pods, _ := e.d.cfg.Pods.Pods(context.Background()); slices.ContainsFunc(pods, pred) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node agent's pod watch never saw %s", what)
		}
	}
}

func (e *onDemandEnv) log() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.logs.String()
}

// agentMapped says whether pid maps an async-profiler (the look-alike
// agent's copy in the target's store is named as the library).
func agentMapped(t *testing.T, pid int, lib string) bool {
	maps := testenv.Maps(t, pid)
	return strings.Contains(maps, filepath.Base(lib)) || strings.Contains(maps, "asyncProfiler")
}

// TestLiveOnDemandRBAC: the on-demand API believes the API server only.
// A ServiceAccount bound to create profiles.safeattach.io in namespace a
// profiles its pod there and gets a collapsed profile; the same token on
// the pod of the same name in namespace b is answered 403 naming the
// missing permission, and b's JVM never maps the agent; no token, a
// garbage token, and forged identity headers without a token are 401;
// an unprivileged token with forged X-Remote-User and Impersonate-*
// headers is judged as its own user (403). Each request is logged with
// who asked and counted by result.
func TestLiveOnDemandRBAC(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	token := e.account(t, e.a, "profiler", true)
	nobody := e.account(t, e.a, "nobody", false)

	r := post(t, ctx, srv, e.a, "duration=2s&format=collapsed&event=itimer", token)
	if r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") {
		t.Fatalf("profile in namespace a: %d\n%.2000s\nlog:\n%s", r.status, r.body, e.log())
	}
	if !agentMapped(t, e.jvmA, e.lib) {
		t.Fatalf("a's JVM was profiled but does not map the agent:\n%s", testenv.Maps(t, e.jvmA))
	}

	r = post(t, ctx, srv, e.b, "duration=2s&format=collapsed&event=itimer", token)
	want := `user "system:serviceaccount:` + e.a + `:profiler" cannot create profiles.safeattach.io "orders" in namespace "` + e.b + `"`
	if r.status != http.StatusForbidden || r.result["outcome"] != "refused" || r.result["error"] != want {
		t.Errorf("profile in namespace b: %d, want 403 with %s:\n%s", r.status, want, r.body)
	}
	if agentMapped(t, e.jvmB, e.lib) {
		t.Errorf("b's JVM maps the agent after a forbidden request:\n%s", testenv.Maps(t, e.jvmB))
	}

	forged := []string{"X-Remote-User", "system:admin", "X-Remote-Group", "system:masters",
		"Impersonate-User", "system:admin", "Impersonate-Group", "system:masters"}
	for _, c := range []struct {
		name, token string
		headers     []string
	}{{"no token", "", nil}, {"garbage token", "garbage", nil}, {"forged headers, no token", "", forged}} {
		if r := post(t, ctx, srv, e.a, "duration=2s", c.token, c.headers...); r.status != http.StatusUnauthorized || r.result["outcome"] != "refused" ||
			r.result["error"] != "unauthenticated: a bearer token the API server accepts, or a client certificate of the cluster's client CA, is required" {
			t.Errorf("%s: %d, want 401:\n%s", c.name, r.status, r.body)
		}
	}
	r = post(t, ctx, srv, e.a, "duration=2s", nobody, forged...)
	want = `user "system:serviceaccount:` + e.a + `:nobody" cannot create profiles.safeattach.io "orders" in namespace "` + e.a + `"`
	if r.status != http.StatusForbidden || r.result["error"] != want {
		t.Errorf("an unprivileged token with forged identity headers: %d, want 403 with %s:\n%s", r.status, want, r.body)
	}

	for result, n := range map[string]float64{"ok": 1, "forbidden": 2, "unauthenticated": 3} {
		if got := metric(t, e.metrics, "safeattach_ondemand_requests_total", "result", result); got != n {
			t.Errorf("safeattach_ondemand_requests_total{result=%q} = %v, want %v", result, got, n)
		}
	}
	// The profiled pod says so in an Event; the other has none.
	var notes []string
	for deadline := time.Now().Add(10 * time.Second); len(notes) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		notes = e.events(t, e.a)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "Profiled: profiled on demand by system:serviceaccount:"+e.a+":profiler: container app, 2s, event itimer, format collapsed: ok") {
		t.Errorf("the events of the profiled pod: %q", notes)
	}
	if notes := e.events(t, e.b); len(notes) != 0 {
		t.Errorf("events on the pod the caller may not profile: %q", notes)
	}
	logged := e.log()
	if !strings.Contains(logged, `"msg":"on-demand profile","result":"ok","status":200,"namespace":"`+e.a+`","pod":"orders",`) ||
		!strings.Contains(logged, `"user":"system:serviceaccount:`+e.a+`:profiler"`) || !strings.Contains(logged, `"format":"collapsed"`) {
		t.Errorf("the profile is not logged with who asked and what:\n%s", logged)
	}
	t.Logf("log:\n%s", logged)
}

// TestLiveOnDemandCaps: past the node's cap of concurrent on-demand
// profiles, the namespace's or the user's, a request is answered 429; a second profile
// of a JVM being profiled on demand is 409; and the client going away
// ends its profile long before its duration.
func TestLiveOnDemandCaps(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	capped := e.serve(t, OnDemandConfig{MaxConcurrent: 1, MaxPerUser: 1})
	open := e.serve(t, OnDemandConfig{MaxConcurrent: 4, MaxPerUser: 4})
	first := e.account(t, e.a, "first", true)
	second := e.account(t, e.a, "second", true)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan reply, 1)
	began := time.Now()
	go func() { done <- post(t, ctx, capped, e.a, "duration=60s&event=itimer", first) }()
	deadline := time.Now().Add(30 * time.Second)
	for metric(t, e.metrics, "safeattach_ondemand_profiles_running") != 1 || !agentMapped(t, e.jvmA, e.lib) {
		if time.Now().After(deadline) {
			t.Fatalf("the first profile is not running in 30 s:\n%s", e.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	bg := context.Background()
	if r := post(t, bg, capped, e.a, "duration=2s", first); r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "the cap per user") {
		t.Errorf("the same user again: %d, want 429 (per user):\n%s", r.status, r.body)
	}
	if r := post(t, bg, capped, e.a, "duration=2s", second); r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "the cap per namespace") {
		t.Errorf("another user of the namespace: %d, want 429 (per namespace):\n%s", r.status, r.body)
	}
	if r := post(t, bg, capped, e.b, "duration=2s", e.account(t, e.b, "third", true)); r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "the cap per node") {
		t.Errorf("a user of another namespace: %d, want 429 (per node):\n%s", r.status, r.body)
	}
	if r := post(t, bg, open, e.a, "duration=2s", second); r.status != http.StatusConflict || !strings.Contains(r.body, "being profiled on demand") {
		t.Errorf("the same JVM under a higher cap: %d, want 409:\n%s", r.status, r.body)
	}
	cancel()
	cancelled := time.Now()
	select {
	case r := <-done:
		t.Logf("the first request ended %v after it began (%d)", time.Since(began).Round(time.Millisecond), r.status)
	case <-time.After(30 * time.Second):
		t.Fatal("the first request did not end 30 s after its client left")
	}
	for metric(t, e.metrics, "safeattach_ondemand_profiles_running") != 0 {
		if time.Since(cancelled) > 20*time.Second {
			t.Fatalf("the profile still runs 20 s after its client left (duration 60 s):\n%s", e.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_requests_total", "result", "too-many"); got != 3 {
		t.Errorf("too-many counted %v times, want 3", got)
	}
	// The JVM is free again: a new profile of it is made.
	if r := post(t, bg, capped, e.a, "duration=1s&event=itimer", second); r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") {
		t.Errorf("after the first left: %d\n%.2000s\n%s", r.status, r.body, e.log())
	}
	t.Logf("log:\n%s", e.log())
}

// TestLiveOnDemandProfilerOwned: a JVM whose profiler another owner runs
// (here the node agent's own continuous profiling of an annotated pod)
// is answered 409 with the running profiler's owner, and the continuous
// profiling goes on.
func TestLiveOnDemandProfilerOwned(t *testing.T) {
	e := newOnDemandEnv(t, map[string]string{AnnotationEnabled: "true", AnnotationEvent: "itimer", AnnotationWindow: "1s"})
	srv := e.serve(t, OnDemandConfig{})
	token := e.account(t, e.a, "profiler", true)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { e.d.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	for deadline := time.Now().Add(30 * time.Second); metric(t, e.metrics, "safeattach_sessions_active") != 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the annotated pods are not profiled in 30 s:\n%s", e.log())
		}
	}
	r := post(t, context.Background(), srv, e.a, "duration=1s&event=itimer", token)
	owner, _ := r.result["profiler_owner"].(map[string]any)
	if r.status != http.StatusConflict || r.result["outcome"] == "ok" || owner == nil {
		t.Fatalf("a JVM the node agent profiles continuously: %d, want 409 with the profiler's owner:\n%s\n%s", r.status, r.body, e.log())
	}
	t.Logf("409: %s", r.body)
	if got := metric(t, e.metrics, "safeattach_ondemand_requests_total", "result", "busy"); got != 1 {
		t.Errorf("busy counted %v times, want 1", got)
	}
	time.Sleep(1500 * time.Millisecond) // a window rotates
	if n := metric(t, e.metrics, "safeattach_sessions_active"); n != 2 {
		t.Errorf("%v JVMs profiled continuously after the refused on-demand profile, want 2:\n%s", n, e.log())
	}
}

// TestLiveOnDemandTokens: the API server, not the agent, says which
// tokens are good. A genuine token of a ServiceAccount allowed to
// profile, but made for another audience, is 401; one signed with the
// API server's own key and already expired is 401, while the same token
// not yet expired profiles (the control: it differs in its expiry only).
func TestLiveOnDemandTokens(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	e.account(t, e.a, "profiler", true)
	now := time.Now()
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"a token for another audience", e.api.AudienceToken(t, e.a, "profiler", "vault"), http.StatusUnauthorized},
		{"an expired token", e.api.SignedToken(t, e.a, "profiler", now.Add(-2*time.Hour), now.Add(-time.Hour)), http.StatusUnauthorized},
		{"the same token, not expired", e.api.SignedToken(t, e.a, "profiler", now.Add(-time.Minute), now.Add(time.Hour)), http.StatusOK},
	} {
		r := post(t, ctx, srv, e.a, "duration=1s&event=itimer", c.token)
		if r.status != c.want {
			t.Errorf("%s: %d, want %d\n%.1000s", c.name, r.status, c.want, r.body)
		}
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_requests_total", "result", "unauthenticated"); got != 2 {
		t.Errorf("unauthenticated counted %v times, want 2", got)
	}
	// Made-up tokens from one source each cost a TokenReview: past its
	// burst of failures the source is refused before review, and its
	// refused connections are closed.
	var (
		mu      sync.Mutex
		refused int
		kept    int
		wg      sync.WaitGroup
	)
	for i := range 3 * sourceFailureBurst { // at once, as a flood comes
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, ctx, srv, e.a, "duration=1s", fmt.Sprint("made-up-", i))
			mu.Lock()
			defer mu.Unlock()
			if r.status == http.StatusTooManyRequests && strings.Contains(r.body, "too many failed (or pending) authentications from 127.0.0.1") {
				refused++
			}
			if !r.closed {
				kept++
			}
		}()
	}
	wg.Wait()
	if kept > 0 {
		t.Errorf("%d refused requests' connections kept open", kept)
	}
	if refused == 0 {
		t.Errorf("%d made-up tokens in a row all reviewed", 3*sourceFailureBurst)
	}
	time.Sleep(2 * sourceFailureEvery) // the bucket refills
	if r := post(t, ctx, srv, e.a, "duration=1s&event=itimer", e.api.SignedToken(t, e.a, "profiler", now.Add(-time.Minute), now.Add(time.Hour))); r.status != http.StatusOK {
		t.Errorf("a good token after the flood: %d %.300s", r.status, r.body)
	}
	t.Logf("log:\n%s", e.log())
}

// TestLiveDelegatingAuthWithoutClientCA: a node agent that may not read
// the cluster's client CA (its ServiceAccount lacks the reader binding)
// says so once, and still judges bearer tokens.
func TestLiveDelegatingAuthWithoutClientCA(t *testing.T) {
	api := kubeapi.Server(t)
	ns := api.Namespace(t)
	// The agent's own identity: it may review tokens and access, not
	// read kube-system's ConfigMaps.
	agentToken := api.ServiceAccountToken(t, ns, "agent")
	if _, err := api.Client.RbacV1().ClusterRoleBindings().Create(context.Background(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: kubeapi.Name("agent-auth-delegator")},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "agent", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(api.Config)
	cfg.BearerToken = agentToken
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		logs   bytes.Buffer
		logsMu sync.Mutex
	)
	authn, _, err := DelegatingAuth(context.Background(), client, time.Second, slog.New(slog.NewTextHandler(lockedWriter{&logsMu, &logs}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	logsMu.Lock()
	logged := logs.String()
	logsMu.Unlock()
	if !strings.Contains(logged, "client certificates are not accepted (bearer tokens are)") {
		t.Errorf("no warning that client certificates are not accepted:\n%s", logged)
	}
	token := api.ServiceAccountToken(t, ns, "caller")
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, ok, err := authn.AuthenticateRequest(req); err != nil || !ok || resp.User.GetName() != "system:serviceaccount:"+ns+":caller" {
		t.Errorf("a bearer token without the client CA: %v %v %v", resp, ok, err)
	}
}

// TestLiveOnDemandUserRate: a user's burst of requests past the per-user
// rate is answered 429 (each costs the API server reviews and the node
// an inspection); another user is served meanwhile.
func TestLiveOnDemandUserRate(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	flood := e.token(t, e.a, "flood", "get")
	other := e.token(t, e.a, "other", "get")
	limited := 0
	for range userRequestBurst + 10 {
		r := call(t, ctx, srv, http.MethodGet, e.a, "status", "", flood)
		if r.status == http.StatusTooManyRequests && strings.Contains(r.body, "slow down") {
			limited++
		}
	}
	if limited == 0 {
		t.Errorf("%d requests in a row all served", userRequestBurst+10)
	}
	if r := call(t, ctx, srv, http.MethodGet, e.a, "status", "", other); r.status != http.StatusOK {
		t.Errorf("another user during the flood: %d\n%s", r.status, r.body)
	}
}

// TestLiveOnDemandInspectRedacts: what a pod's owners give their JVM
// alone — a startup agent's options (an APM key from a Secret through
// JAVA_TOOL_OPTIONS), system properties, the command line — is not in
// the inspection a caller with only get on profiles receives, though
// the agent itself is named.
func TestLiveOnDemandInspectRedacts(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	// The agent must be seen from inside the container, whose /tmp is
	// its own.
	dir, err := os.MkdirTemp("/var/cache", "safeattach-redact-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	lib := filepath.Join(dir, "libapm.so")
	data, err := os.ReadFile(e.lib)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, data, 0o755); err != nil {
		t.Fatal(err)
	}
	const agentSecret, propertySecret = "apmkey-5f3a9c", "dbpass-81be20"
	syscall.Kill(e.jvmA, syscall.SIGKILL) // the container restarts with the Secret in its environment
	_, id := testenv.PodIDs(t)
	wrap, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp && export JAVA_TOOL_OPTIONS='-Ddb.password="+propertySecret+" -agentpath:"+lib+"=api_key="+agentSecret+"'")
	pod, err := e.api.Client.CoreV1().Pods(e.a).Get(ctx, "orders", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+string(pod.UID)+"/"+id, wrap, jvm)
	e.api.Running(t, e.a, "orders", "containerd://"+id)
	e.waitPod(t, "the restarted container", func(p kube.Pod) bool {
		return p.Namespace == e.a && p.Containers[0].ID == "containerd://"+id
	})
	reader := e.token(t, e.a, "reader", "get")
	r := call(t, ctx, srv, http.MethodGet, e.a, "inspect", "", reader)
	if r.status != http.StatusOK {
		t.Fatalf("inspect: %d\n%s", r.status, r.body)
	}
	for _, secret := range []string{agentSecret, propertySecret} {
		if strings.Contains(r.body, secret) {
			t.Errorf("the inspection carries %q:\n%s", secret, r.body)
		}
	}
	if !strings.Contains(r.body, `"-agentpath:`+lib+`=(options left out)"`) {
		t.Errorf("the inspection does not name the startup agent:\n%s", r.body)
	}
}

// TestLiveOnDemandOIDCUser: a developer who logs in to the cluster with
// OpenID Connect (the API server's JWT authenticator trusts the issuer)
// and whose group is bound to profiles in namespace a profiles a's pod
// with the ID token kubectl holds: the node agent learns who it is from
// the API server's TokenReview, as for any token, and the pod's Event
// names the OIDC user. The same user is 403 in namespace b, and an ID
// token of the same issuer for another client (audience) is 401.
func TestLiveOnDemandOIDCUser(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	team, sub := kubeapi.Name("team"), kubeapi.Name("dev")
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "profilers"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{OnDemandGroup}, Resources: []string{OnDemandResource}, Verbs: []string{"create", "get"}}}}
	if _, err := e.api.Client.RbacV1().Roles(e.a).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "profilers"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "profilers"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "oidc:" + team}}}
	if _, err := e.api.Client.RbacV1().RoleBindings(e.a).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := e.api.OIDCUser(t, sub, team)
	r := post(t, ctx, srv, e.a, "duration=1s&format=collapsed&event=itimer", token)
	if r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") {
		t.Fatalf("profile with an ID token: %d\n%.2000s\nlog:\n%s", r.status, r.body, e.log())
	}
	var notes []string
	for deadline := time.Now().Add(10 * time.Second); len(notes) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		notes = e.events(t, e.a)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "Profiled: profiled on demand by oidc:"+sub+": ") {
		t.Errorf("the events of the profiled pod: %q", notes)
	}
	r = post(t, ctx, srv, e.b, "duration=1s&event=itimer", token)
	if want := `user "oidc:` + sub + `" cannot create profiles.safeattach.io "orders" in namespace "` + e.b + `"`; r.status != http.StatusForbidden || r.result["error"] != want {
		t.Errorf("the OIDC user in namespace b: %d, want 403 with %s:\n%s", r.status, want, r.body)
	}
	if agentMapped(t, e.jvmB, e.lib) {
		t.Errorf("b's JVM maps the agent after a forbidden request:\n%s", testenv.Maps(t, e.jvmB))
	}
	other := e.api.OIDCToken(t, sub, []string{team}, "another-client")
	if r := post(t, ctx, srv, e.a, "duration=1s&event=itimer", other); r.status != http.StatusUnauthorized {
		t.Errorf("an ID token for another client: %d, want 401:\n%.1000s", r.status, r.body)
	}
}
