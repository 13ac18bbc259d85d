package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/internal/testenv/kubeapi"
)

// onDemandClient is an HTTPS client that trusts exactly the certificate
// whose SHA-256 the daemon logged, and the address it serves on.
func onDemandClient(t *testing.T, log string) (*http.Client, string) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "on-demand API serving" {
			continue
		}
		pin, _ := rec["self_signed_sha256"].(string)
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // the pin below is the check
			VerifyConnection: func(cs tls.ConnectionState) error {
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if hex.EncodeToString(sum[:]) != pin {
					return errors.New("not the certificate the daemon logged")
				}
				return nil
			},
		}}}, "https://" + rec["addr"].(string)
	}
	t.Fatalf("the on-demand API's address is not logged:\n%s", tail(log, 3000))
	return nil, ""
}

// TestDaemonOnDemand: the binary, off-cluster with the chart's RBAC
// (its ServiceAccount's token), serves the on-demand API over HTTPS with
// a self-signed certificate whose fingerprint it logs: a team's token
// bound to create profiles.safeattach.io gets a collapsed profile of its
// pod's JVM and an Event on the pod says who took it, a request without
// a token is 401, and /metrics counts both;
// SIGTERM ends a profile running, and the node agent stops at once.
func TestDaemonOnDemand(t *testing.T) {
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	bin := buildDaemon(t)
	ns := api.Namespace(t)
	node := kubeapi.Name("node")
	token := applyRBAC(t, api, ns)
	// What a team binds: a Role that lets its ServiceAccount create
	// profiles.safeattach.io in its namespace.
	team := api.ServiceAccountToken(t, ns, "team", rbacv1.PolicyRule{APIGroups: []string{fleet.OnDemandGroup}, Resources: []string{fleet.OnDemandResource}, Verbs: []string{fleet.OnDemandVerb}})
	pod := api.Pod(t, ns, "orders", node, nil)
	id := strings.Repeat("f3", 32)
	wrap, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
	testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+string(pod.UID)+"/"+id, wrap, jvm)
	api.Running(t, ns, "orders", "containerd://"+id)

	counter := newAPICounter(t, api)
	config := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(config, []byte(fmt.Sprintf(`{"agent": %q, "on_demand": {"listen": "127.0.0.1:0", "max_duration": "1m"}}`, lib)), 0o644)
	d := startKubeDaemon(t, bin, config, counter.kubeconfig(t, token), node, nil)
	client, base := onDemandClient(t, d.Output())

	url := base + "/apis/safeattach.io/v1/namespaces/" + ns + "/pods/orders/profile?duration=1s&format=collapsed&event=itimer"
	do := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// The pod reaches the daemon's watch soon after it started.
	status, body := do(team)
	for deadline := time.Now().Add(20 * time.Second); status == http.StatusNotFound && time.Now().Before(deadline); status, body = do(team) {
		time.Sleep(200 * time.Millisecond)
	}
	if status != http.StatusOK || !strings.Contains(body, "[itimer]") {
		t.Fatalf("the team's profile: %d\n%.2000s\n%s", status, body, tail(d.Output(), 3000))
	}
	// An Event on the pod, recorded with the chart's RBAC, says who.
	var events *eventsv1.EventList
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if events, err = api.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if len(events.Items) > 0 {
			break
		}
	}
	if len(events.Items) != 1 || events.Items[0].Reason != "Profiled" || events.Items[0].Regarding.UID != pod.UID ||
		!strings.Contains(events.Items[0].Note, "by system:serviceaccount:"+ns+":team") {
		t.Errorf("the pod's events: %+v\n%s", events.Items, tail(d.Output(), 2000))
	}
	if status, body := do(""); status != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401\n%s", status, body)
	}
	metrics := scrape(t, d.Output())
	for _, want := range []string{`safeattach_ondemand_requests_total{result="ok"} 1`, `safeattach_ondemand_requests_total{result="unauthenticated"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A signal ends the profiles running: a 60 s one does not hold the
	// node agent's shutdown (10 s at most) back.
	url = strings.Replace(url, "duration=1s", "duration=60s", 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		req.Header.Set("Authorization", "Bearer "+team)
		if resp, err := client.Do(req); err == nil { // a cut stream, or no answer: the node agent stops
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(scrape(t, d.Output()), "safeattach_ondemand_profiles_running 1"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the 60 s profile is not running:\n%s", tail(d.Output(), 3000))
		}
	}
	time.Sleep(time.Second) // well into the profile
	began := time.Now()
	stopDaemon(t, d, 40*time.Second)
	<-ended
	if took := time.Since(began); took > 8*time.Second {
		t.Errorf("the node agent took %v to stop with an on-demand profile running, want it cancelled at once", took.Round(time.Millisecond))
	}
	if !strings.Contains(d.Output(), `"result":"cancelled"`) {
		t.Errorf("the cancelled profile is not logged as such:\n%s", tail(d.Output(), 3000))
	}
}

// TestOnDemandConnectionsAreBounded: one source's connections are
// capped at maxConnsPerSource — past it a connection is closed at once —
// while another source is still served; a caller refused (401) is not
// kept connected; the node agent's descriptors do not grow with the
// connections tried (before the caps, 3000 connections held idle after
// a 401 took 128 MiB, the manifests' limit).
func TestOnDemandConnectionsAreBounded(t *testing.T) {
	api := kubeapi.Server(t)
	testenv.RequireRoot(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	bin := buildDaemon(t)
	ns := api.Namespace(t)
	token := applyRBAC(t, api, ns)
	counter := newAPICounter(t, api)
	config := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`{"agent": %q, "on_demand": {"listen": "127.0.0.1:0"}}`, lib)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startKubeDaemon(t, bin, config, counter.kubeconfig(t, token), kubeapi.Name("node"), nil)
	t.Cleanup(func() { stopDaemon(t, d, 40*time.Second) })
	_, base := onDemandClient(t, d.Output())
	addr := strings.TrimPrefix(base, "https://")
	// handshake opens a TLS connection from src and sends nothing: the
	// connection is held until the server's header timeout.
	handshake := func(src string) (*tls.Conn, bool) {
		dialer := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			return nil, false
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, false
		}
		return tc, true
	}
	const tried = maxConnsPerSource + 32
	var (
		mu    sync.Mutex
		conns []*tls.Conn
		wg    sync.WaitGroup
	)
	for range tried {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, ok := handshake("127.0.0.1"); ok {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID))
	t.Logf("%d of %d connections from one source served; the node agent has %d descriptors open", len(conns), tried, len(fds))
	if len(conns) > maxConnsPerSource {
		t.Errorf("%d connections from one source served at once, want at most %d", len(conns), maxConnsPerSource)
	}
	if len(fds) > maxConnsPerSource+64 {
		t.Errorf("the node agent holds %d descriptors", len(fds))
	}
	if len(conns) > 0 && conns[0].ConnectionState().NegotiatedProtocol == "h2" {
		t.Error("HTTP/2 negotiated: its streams would get past the connection caps")
	}
	// Another source is served meanwhile, and a refused caller is not
	// kept connected.
	c, ok := handshake("127.0.0.2")
	if !ok {
		t.Fatal("another source refused while the first holds its share")
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /apis/safeattach.io/v1/namespaces/x/pods/y/status HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("a request without a token: %v %v, want 401 and the connection closed", resp, err)
	}
}
