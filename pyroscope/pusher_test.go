package pyroscope

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ingest is a loopback server that checks each request the way
// Pyroscope's ingest handler reads it, and answers from a script.
type ingest struct {
	t       *testing.T
	mu      sync.Mutex
	script  []int // status per request; after it, 200
	got     []url.Values
	bodies  [][]byte
	headers []http.Header
	calls   atomic.Int32
	reset   int // first N requests get their connection reset
	slow    time.Duration
}

func (s *ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(s.calls.Add(1))
	if n <= s.reset {
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
		return
	}
	if s.slow > 0 && n == s.reset+1 {
		time.Sleep(s.slow)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" {
		http.Error(w, "not the ingest API", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	for _, k := range []string{"name", "from", "until", "format"} {
		if q.Get(k) == "" {
			http.Error(w, "missing "+k, http.StatusBadRequest)
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.got, s.bodies, s.headers = append(s.got, q), append(s.bodies, body), append(s.headers, r.Header.Clone())
	status := 200
	if len(s.script) > 0 {
		status, s.script = s.script[0], s.script[1:]
	}
	s.mu.Unlock()
	w.WriteHeader(status)
}

func window(i int) Window {
	return Window{App: "orders", Labels: map[string]string{"namespace": "shop", "pod": "orders-7d9f", "container": "app", "bad key": "x"},
		From: time.Unix(1700000000+int64(i)*60, 0), Until: time.Unix(1700000060+int64(i)*60, 0), Format: "jfr", Data: []byte("FLR\x00window")}
}

func start(t *testing.T, s *ingest, cfg Config) (*Pusher, context.CancelFunc) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cfg.URL = srv.URL
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = 5*time.Millisecond, 40*time.Millisecond
	}
	p, err := NewPusher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	t.Cleanup(cancel)
	return p, cancel
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPushMatchesTheIngestAPI: path, name with labels, from/until,
// format, raw body, tenant and auth headers.
func TestPushMatchesTheIngestAPI(t *testing.T) {
	s := &ingest{t: t}
	p, _ := start(t, s, Config{TenantID: "team-a", BearerToken: "s3cret"})
	p.Enqueue(window(0))
	waitFor(t, "one window", func() bool { return p.Stats().Sent == 1 })
	q, h := s.got[0], s.headers[0]
	if q.Get("name") != "orders{container=app,namespace=shop,pod=orders-7d9f}" || q.Get("from") != "1700000000" || q.Get("until") != "1700000060" || q.Get("format") != "jfr" {
		t.Errorf("query %v", q)
	}
	if string(s.bodies[0]) != "FLR\x00window" || h.Get("X-Scope-OrgID") != "team-a" || h.Get("Authorization") != "Bearer s3cret" {
		t.Errorf("body %q headers %v", s.bodies[0], h)
	}
	folded := window(1)
	folded.Format = "collapsed"
	if u := IngestURL("http://x", folded); !strings.Contains(u, "format=folded") || !strings.Contains(u, "sampleRate=100") {
		t.Errorf("folded: %s", u)
	}
}

// TestPushRetries: 429 then 200; 500 five times then 200; connections
// reset; a slow server past the request timeout — every window arrives.
func TestPushRetries(t *testing.T) {
	for name, s := range map[string]*ingest{
		"429 then 200":     {script: []int{429}},
		"500 five times":   {script: []int{500, 500, 500, 500, 500}},
		"connection reset": {reset: 3},
		"slow server":      {slow: 300 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			s.t = t
			p, _ := start(t, s, Config{Timeout: 100 * time.Millisecond, BasicUser: "u", BasicPassword: "p"})
			for i := 0; i < 3; i++ {
				p.Enqueue(window(i))
			}
			waitFor(t, "three windows", func() bool { return p.Stats().Sent == 3 })
			if st := p.Stats(); st.Dropped != 0 || st.Rejected != 0 || st.Retries == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestPushBoundedAndNonBlocking: with the backend down the queue keeps
// the newest QueueSize windows; Enqueue never blocks; a 400 is not
// retried.
func TestPushBoundedAndNonBlocking(t *testing.T) {
	down := make([]int, 1000)
	for i := range down {
		down[i] = 503
	}
	s := &ingest{script: down}
	p, _ := start(t, s, Config{QueueSize: 4, RetryBase: 50 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	// Enqueue only takes the queue's lock: were it to wait for the
	// backend, this loop would hang while every send fails and retries.
	for i := 0; i < 20; i++ {
		p.Enqueue(window(i))
	}
	if st := p.Stats(); st.Dropped != 16 || st.Queued != 4 {
		t.Errorf("stats %+v", st)
	}
	s2 := &ingest{script: []int{400}}
	p2, _ := start(t, s2, Config{})
	p2.Enqueue(window(0))
	waitFor(t, "a rejection", func() bool { return p2.Stats().Rejected == 1 })
	if int(s2.calls.Load()) != 1 {
		t.Errorf("a 400 was retried (%d calls)", s2.calls.Load())
	}
}

func TestNewPusherValidatesURL(t *testing.T) {
	for _, u := range []string{"", "pyroscope:4040", "ftp://x"} {
		if _, err := NewPusher(Config{URL: u}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// TestRedirectsKeepCredentialsHome (the way back): a server that
// answers 307 to another port (or host) gets nothing re-sent there — no
// body, no tenant, no credentials; the window is not retried. A redirect
// on the same origin is followed, with them.
func TestRedirectsKeepCredentialsHome(t *testing.T) {
	elsewhere := &ingest{t: t}
	other := httptest.NewServer(elsewhere)
	t.Cleanup(other.Close)
	home := &ingest{t: t}
	mux := http.NewServeMux()
	mux.HandleFunc("/ingest", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("moved") == "" {
			http.Redirect(w, r, other.URL+"/ingest?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
			return
		}
		home.ServeHTTP(w, r)
	})
	mux.HandleFunc("/v2/ingest", func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/ingest"
		home.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p, err := NewPusher(Config{URL: srv.URL, TenantID: "team-a", BasicUser: "u", BasicPassword: "secret", RetryBase: time.Millisecond, Client: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	released := make(chan struct{}, 2)
	p.Enqueue(Window{App: "svc", From: time.Unix(1, 0), Until: time.Unix(2, 0), Format: "jfr", Data: []byte("FLR\x00recording"), Release: func() { released <- struct{}{} }})
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatalf("the redirected window was never finished: %+v", p.Stats())
	}
	if n := elsewhere.calls.Load(); n != 0 {
		t.Fatalf("the other origin got %d requests (headers %v)", n, elsewhere.headers)
	}
	if st := p.Stats(); st.Rejected != 1 || st.Sent != 0 {
		t.Errorf("stats %+v: want the window rejected, not retried", st)
	}

	// Same origin, another path: followed, with the credentials.
	mux.HandleFunc("/same/ingest", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v2/ingest?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
	})
	p2, _ := NewPusher(Config{URL: srv.URL + "/same", TenantID: "team-a", BasicUser: "u", BasicPassword: "secret"})
	go p2.Run(ctx)
	p2.Enqueue(Window{App: "svc", From: time.Unix(1, 0), Until: time.Unix(2, 0), Format: "jfr", Data: []byte("FLR\x00recording"), Release: func() { released <- struct{}{} }})
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatalf("same-origin redirect never finished: %+v", p2.Stats())
	}
	home.mu.Lock()
	defer home.mu.Unlock()
	if len(home.headers) != 1 || home.headers[0].Get("X-Scope-OrgID") != "team-a" || home.headers[0].Get("Authorization") == "" {
		t.Fatalf("same-origin redirect: %d requests, headers %v", len(home.headers), home.headers)
	}
}

// TestDrainWaitsForTheQueue: Drain returns once every window queued so
// far has been answered (a shutdown used to poll the queue's length
// every 50 ms), and with ctx's error while one is still unanswered.
func TestDrainWaitsForTheQueue(t *testing.T) {
	s := &ingest{t: t}
	p, stop := start(t, s, Config{})
	defer stop()
	for i := range 3 {
		p.Enqueue(window(i))
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := s.calls.Load(); n != 3 {
		t.Fatalf("Drain returned after %d of 3 windows were sent", n)
	}

	release := make(chan struct{})
	blocked := &ingest{t: t}
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		blocked.ServeHTTP(w, r)
	}))
	defer held.Close()
	defer close(release)
	q, err := NewPusher(Config{URL: held.URL, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	q.Enqueue(window(0))
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := q.Drain(short); err == nil || !strings.Contains(err.Error(), "1 windows not sent") {
		t.Errorf("Drain with a window unanswered: %v", err)
	}
}
