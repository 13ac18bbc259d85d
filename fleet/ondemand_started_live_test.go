package fleet

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling"
)

// token is a ServiceAccount of ns allowed verbs on profiles.safeattach.io.
func (e *onDemandEnv) token(t *testing.T, ns, name string, verbs ...string) string {
	t.Helper()
	return e.api.ServiceAccountToken(t, ns, name, rbacv1.PolicyRule{APIGroups: []string{OnDemandGroup}, Resources: []string{OnDemandResource}, Verbs: verbs})
}

// started are the started profiles of a start's or status's answer.
func started(r reply) []map[string]any {
	var out []map[string]any
	list, _ := r.result["started"].([]any)
	for _, s := range list {
		if m, ok := s.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// TestLiveOnDemandStartStatusStop: a profile started on demand runs
// past its request until stopped, by its starter or a teammate allowed
// to; status (get) shows who runs it and until when; a second start of
// the JVM is 409; stop streams the profile and frees the JVM; a start no
// one stops is stopped at its duration and discarded, and the JVM is
// free again. Each step needs its own verb, and the pod says who did
// what in its Events.
func TestLiveOnDemandStartStatusStop(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{MaxConcurrent: 4, MaxPerUser: 2})
	ctx := context.Background()
	alice := e.token(t, e.a, "alice", "create", "get")
	bob := e.token(t, e.a, "bob", "create")
	viewer := e.token(t, e.a, "viewer", "get")
	sa := "system:serviceaccount:" + e.a + ":"

	if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer", viewer); r.status != http.StatusForbidden ||
		!strings.Contains(r.body, `cannot create profiles.safeattach.io \"orders\"`) {
		t.Errorf("start with get only: %d, want 403:\n%s", r.status, r.body)
	}
	if r := call(t, ctx, srv, http.MethodGet, e.a, "status", "", bob); r.status != http.StatusForbidden ||
		!strings.Contains(r.body, `cannot get profiles.safeattach.io \"orders\"`) {
		t.Errorf("status with create only: %d, want 403:\n%s", r.status, r.body)
	}
	if agentMapped(t, e.jvmA, e.lib) {
		t.Fatal("a refused start loaded the agent")
	}

	r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer&format=collapsed&duration=60s", alice)
	s := started(r)
	if r.status != http.StatusOK || r.result["outcome"] != "ok" || len(s) != 1 || s[0]["by"] != sa+"alice" || s[0]["engine"] != "async-profiler" {
		t.Fatalf("start: %d\n%s\n%s", r.status, r.body, e.log())
	}
	if !agentMapped(t, e.jvmA, e.lib) {
		t.Fatalf("started, but the JVM does not map the agent:\n%s", testenv.Maps(t, e.jvmA))
	}
	since, _ := time.Parse(time.RFC3339Nano, s[0]["since"].(string))
	stopsAt, _ := time.Parse(time.RFC3339Nano, s[0]["stops_at"].(string))
	if d := stopsAt.Sub(since); d != time.Minute {
		t.Errorf("stops_at - since = %v, want the duration asked, 1m", d)
	}
	// The start's request is over; the profile runs on.
	time.Sleep(1500 * time.Millisecond)
	r = call(t, ctx, srv, http.MethodGet, e.a, "status", "", viewer)
	if s := started(r); r.status != http.StatusOK || len(s) != 1 || s[0]["container"] != "app" || s[0]["by"] != sa+"alice" {
		t.Errorf("status while it runs: %d\n%s", r.status, r.body)
	}
	if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer", bob); r.status != http.StatusConflict || !strings.Contains(r.body, "being profiled on demand by") {
		t.Errorf("a second start of the JVM: %d, want 409:\n%s", r.status, r.body)
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_profiles_running"); got != 1 {
		t.Errorf("profiles running: %v, want 1 (the started one holds its slot)", got)
	}

	// A teammate who may create profiles stops it, and gets the profile.
	r = call(t, ctx, srv, http.MethodPost, e.a, "stop", "", bob)
	if r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") {
		t.Fatalf("stop: %d\n%.2000s\n%s", r.status, r.body, e.log())
	}
	if r := call(t, ctx, srv, http.MethodGet, e.a, "status", "", alice); r.status != http.StatusOK || len(started(r)) != 0 {
		t.Errorf("status after the stop: %d\n%s", r.status, r.body)
	}
	if r := call(t, ctx, srv, http.MethodPost, e.a, "stop", "", bob); r.status != http.StatusNotFound ||
		r.result["error"] != "no profile started on demand in pod "+e.a+"/orders" {
		t.Errorf("a second stop: %d, want 404:\n%s", r.status, r.body)
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_profiles_running"); got != 0 {
		t.Errorf("profiles running after the stop: %v", got)
	}

	// Started and never stopped: stopped at its duration, discarded.
	if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer&duration=1s", alice); r.status != http.StatusOK {
		t.Fatalf("a short start: %d\n%s", r.status, r.body)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if metric(t, e.metrics, "safeattach_ondemand_profiles_running") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 1 s start still runs 30 s later:\n%s", e.log())
		}
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_requests_total", "result", "expired"); got != 1 {
		t.Errorf("expired counted %v times, want 1", got)
	}
	// What became of it is said by stop and status.
	r = call(t, ctx, srv, http.MethodPost, e.a, "stop", "", alice)
	if msg, _ := r.result["error"].(string); r.status != http.StatusNotFound ||
		!strings.Contains(msg, "the one "+sa+"alice started at ") || !strings.Contains(msg, "(not stopped within 1s)") {
		t.Errorf("stop after the discard: %d, want 404 saying it was discarded:\n%s", r.status, r.body)
	}
	r = call(t, ctx, srv, http.MethodGet, e.a, "status", "", viewer)
	if gone, _ := r.result["discarded"].([]any); r.status != http.StatusOK || len(gone) != 1 || !strings.Contains(r.body, `"discarded": "not stopped within 1s"`) {
		t.Errorf("status after the discard: %d\n%s", r.status, r.body)
	}
	// The JVM is free: a profile of it is made.
	if r := post(t, ctx, srv, e.a, "duration=1s&event=itimer", bob); r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") {
		t.Errorf("a profile after the expiry: %d\n%.2000s", r.status, r.body)
	}

	want := []string{
		"ProfileStarted: started on demand by " + sa + "alice (discarded at ",
		"Profiled: profiled on demand by " + sa + "bob (started by " + sa + "alice): container app, ",
		"ProfileExpired: started on demand by " + sa + "alice (not stopped within 1s: discarded): container app, ",
	}
	var notes []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if notes = e.events(t, e.a); all(want, notes) {
			break
		}
	}
	if !all(want, notes) {
		t.Errorf("the pod's events:\n%s\nwant each of:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
	if err := syscall.Kill(e.jvmA, 0); err != nil {
		t.Errorf("the JVM is gone: %v", err)
	}
	t.Logf("events:\n%s", strings.Join(notes, "\n"))
}

// all says whether every prefix starts one of notes.
func all(prefixes, notes []string) bool {
	for _, p := range prefixes {
		found := false
		for _, n := range notes {
			found = found || strings.HasPrefix(n, p)
		}
		if !found {
			return false
		}
	}
	return true
}

// TestLiveOnDemandStartedStopsWithTheAgent: a node agent stopping its
// profilers (its pod deleted) stops the profiles started on demand too:
// no one could stop them after. A start that comes as it stops (the
// handler still serving) stops and discards its own profile, and says
// so with 503.
func TestLiveOnDemandStartedStopsWithTheAgent(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	alice := e.token(t, e.a, "alice", "create")
	bob := e.token(t, e.b, "bob", "create")
	if r := call(t, context.Background(), srv, http.MethodPost, e.a, "start", "event=itimer&duration=5m", alice); r.status != http.StatusOK {
		t.Fatalf("start: %d\n%s", r.status, r.body)
	}
	e.d.StopAll()
	if got := metric(t, e.metrics, "safeattach_ondemand_profiles_running"); got != 0 {
		t.Errorf("profiles running after StopAll: %v", got)
	}
	r := call(t, context.Background(), srv, http.MethodPost, e.b, "start", "event=itimer&duration=5m", bob)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "the node agent is stopping") {
		t.Errorf("a start after StopAll: %d, want 503:\n%s", r.status, r.body)
	}
	if got := metric(t, e.metrics, "safeattach_ondemand_profiles_running"); got != 0 {
		t.Errorf("profiles running after a start as the agent stopped: %v", got)
	}
	log, stopped := e.log(), 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"msg":"on-demand profile stopped and discarded"`) && strings.Contains(line, `"why":"its node agent stopped"`) && !strings.Contains(line, `"err"`) {
			stopped++
		}
	}
	if stopped != 2 {
		t.Errorf("want both profiles stopped and discarded without an error, %d were:\n%s", stopped, log)
	}
}

// TestLiveOnDemandInspect: inspect (get) describes the pod's JVM — its
// JVM, allocator and the verdict's facts — without its command line and
// mapped files, touching nothing, and works while a profile runs.
func TestLiveOnDemandInspect(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	viewer := e.token(t, e.a, "viewer", "get")
	r := call(t, context.Background(), srv, http.MethodGet, e.a, "inspect", "", viewer)
	jvm, _ := r.result["jvm"].(map[string]any)
	process, _ := r.result["process"].(map[string]any)
	if r.status != http.StatusOK || r.result["outcome"] != "ok" || jvm == nil || jvm["kind"] != "hotspot" || process == nil {
		t.Fatalf("inspect: %d\n%.3000s", r.status, r.body)
	}
	if _, ok := process["cmdline"]; ok || r.result["mapped_files"] != nil {
		t.Errorf("inspect answered the command line or the mapped files:\n%.3000s", r.body)
	}
	if agentMapped(t, e.jvmA, e.lib) {
		t.Error("inspect loaded the agent")
	}
	if r := call(t, context.Background(), srv, http.MethodGet, e.b, "inspect", "", viewer); r.status != http.StatusForbidden {
		t.Errorf("inspect in namespace b: %d, want 403:\n%s", r.status, r.body)
	}
}

// TestLiveOnDemandAgentsAndFallback: the on-demand API tries the node's
// builds in order, as the continuous profiling does, and where the rules
// refuse every one, profiles with the JVM's Flight Recorder (the node's
// fallback), saying so; fallback=none asks for the refusal instead. The
// JVM then never maps async-profiler.
func TestLiveOnDemandAgentsAndFallback(t *testing.T) {
	t.Run("agents", func(t *testing.T) {
		fixed, affected := testenv.BuildAgent(t, testenv.AgentFixedLookalike), testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
		e := newOnDemandEnv(t, nil, func(c *Config) {
			c.Agents, c.Options = []string{fixed, affected}, attach.Options{DenyAgents: []string{fixed}}
		})
		srv := e.serve(t, OnDemandConfig{})
		token := e.token(t, e.a, "profiler", "create")
		r := call(t, context.Background(), srv, http.MethodPost, e.a, "check", "event=itimer", token)
		if r.status != http.StatusOK || r.result["outcome"] != "ok" || r.result["profile"] != nil {
			t.Errorf("check: %d, want allowed with async-profiler:\n%s", r.status, r.body)
		}
		r = post(t, context.Background(), srv, e.a, "duration=1s&event=itimer", token)
		if r.status != http.StatusOK || !strings.Contains(r.body, "[itimer]") || r.header.Get("X-Safeattach-Engine") != "" {
			t.Fatalf("profile: %d\n%.2000s\n%s", r.status, r.body, e.log())
		}
		if maps := testenv.Maps(t, e.jvmA); strings.Contains(maps, "lookalike_fixed") || !strings.Contains(maps, "lookalike_affected") {
			t.Errorf("want the second build loaded, the first refused; the JVM's maps:\n%s", maps)
		}
	})
	t.Run("flight-recorder", func(t *testing.T) {
		e := newOnDemandEnv(t, nil)
		e.d.cfg.Options.DenyAgents, e.d.cfg.Fallback = []string{e.lib}, profiling.FlightRecorder
		srv := e.serve(t, OnDemandConfig{Converter: testenv.Converter(t)})
		token := e.token(t, e.a, "profiler", "create")
		ctx := context.Background()
		r := call(t, ctx, srv, http.MethodPost, e.a, "check", "", token)
		profile, _ := r.result["profile"].(map[string]any)
		if r.status != http.StatusOK || r.result["outcome"] != "ok" || profile == nil || profile["engine"] != "jfr" ||
			!strings.Contains(r.body, `"agent-denylisted"`) {
			t.Errorf("check: %d, want allowed with the Flight Recorder:\n%s", r.status, r.body)
		}
		// The Flight Recorder samples Java code on CPU; these JVMs'
		// workers allocate more than they run.
		r = post(t, ctx, srv, e.a, "duration=2s&format=collapsed&event=alloc", token)
		// Collapsed stacks of Java frames (which ones a 2 s sample of
		// allocations catches varies).
		if r.status != http.StatusOK || r.header.Get("X-Safeattach-Engine") != "jfr" || r.header.Get("X-Safeattach-Fallback-From") != "agent-denylisted" ||
			!regexp.MustCompile(`(?m)^[\w$.<>/]+(;[^ ;]+)* \d+$`).MatchString(r.body) {
			t.Fatalf("profile: %d %v\n%.2000s\n%s", r.status, r.header, r.body, e.log())
		}
		r = call(t, ctx, srv, http.MethodPost, e.a, "start", "format=flamegraph&event=alloc&duration=1m", token)
		if s := started(r); r.status != http.StatusOK || len(s) != 1 || s[0]["engine"] != "jfr" {
			t.Fatalf("start: %d\n%s\n%s", r.status, r.body, e.log())
		}
		time.Sleep(2 * time.Second)
		r = call(t, ctx, srv, http.MethodPost, e.a, "stop", "", token)
		if r.status != http.StatusOK || !strings.Contains(r.body, "<html") || r.header.Get("X-Safeattach-Engine") != "jfr" {
			t.Fatalf("stop: %d\n%.1000s\n%s", r.status, r.body, e.log())
		}
		r = post(t, ctx, srv, e.a, "duration=1s&fallback=none", token)
		if r.status != http.StatusUnprocessableEntity || r.result["outcome"] != "refused" {
			t.Errorf("fallback=none: %d, want 422 refused:\n%s", r.status, r.body)
		}
		if agentMapped(t, e.jvmA, e.lib) {
			t.Errorf("the JVM maps async-profiler:\n%s", testenv.Maps(t, e.jvmA))
		}
		var notes []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if notes = e.events(t, e.a); all([]string{"Profiled: "}, notes) {
				break
			}
		}
		if !strings.Contains(strings.Join(notes, "\n"), ", by the Flight Recorder") {
			t.Errorf("the events do not say the Flight Recorder profiled:\n%s", strings.Join(notes, "\n"))
		}
	})
}

// TestLiveOnDemandStartedJVMReplaced: a profile started in a container
// whose JVM is then replaced — the container restarted, or the pod
// deleted and made again under its name — is not the new JVM's: stop
// does not take it for the new pod's, a new start in the container
// discards it, and every slot comes back (the caps would otherwise be
// held for good by a profile no one can stop).
func TestLiveOnDemandStartedJVMReplaced(t *testing.T) {
	for _, replaced := range []string{"pod-recreated", "container-restarted"} {
		t.Run(replaced, func(t *testing.T) {
			e := newOnDemandEnv(t, nil)
			srv := e.serve(t, OnDemandConfig{}) // the defaults: 2 per node, 1 per user
			ctx := context.Background()
			alice := e.token(t, e.a, "alice", "create", "get")
			bob := e.token(t, e.a, "bob", "create", "get")
			if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer&duration=1m", alice); r.status != http.StatusOK {
				t.Fatalf("alice's start: %d %s", r.status, r.body)
			}
			pod, err := e.api.Client.CoreV1().Pods(e.a).Get(ctx, "orders", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			uid := string(pod.UID)
			syscall.Kill(e.jvmA, syscall.SIGKILL) // the container dies
			if replaced == "pod-recreated" {
				if err := e.api.Delete(e.a, "orders"); err != nil {
					t.Fatal(err)
				}
				uid = string(e.api.Pod(t, e.a, "orders", e.d.cfg.Node, nil).UID)
			}
			_, id := testenv.PodIDs(t)
			wrap, jvm := testenv.StartContainerJVMWorkers(t, "mount -t tmpfs tmpfs /tmp", 1)
			testenv.KubeletCgroup(t, "pids", "kubepods/burstable/pod"+uid+"/"+id, wrap, jvm)
			e.api.Running(t, e.a, "orders", "containerd://"+id)
			e.waitPod(t, "the new container", func(p kube.Pod) bool {
				return p.UID == uid && p.Phase == "Running" && p.Containers[0].ID == "containerd://"+id
			})
			// Any request sweeps a started profile whose JVM is gone
			// (its pod left the node, or it exited): its slots come back
			// before its deadline.
			if r := call(t, ctx, srv, http.MethodGet, e.a, "status", "", bob); r.status != http.StatusOK || len(started(r)) != 0 {
				t.Errorf("status after the JVM was replaced: %d\n%s", r.status, r.body)
			}
			if got := metric(t, e.metrics, "safeattach_ondemand_profiles_running"); got != 0 {
				t.Errorf("%v slots held by a profile of a JVM gone", got)
			}
			if replaced == "pod-recreated" {
				// The new pod has nothing started: the old pod's profile is
				// not stopped as if it were the new one's.
				if r := call(t, ctx, srv, http.MethodPost, e.a, "stop", "", bob); r.status != http.StatusNotFound {
					t.Errorf("stop in the new pod: %d, want 404:\n%s", r.status, r.body)
				}
			}
			// bob starts in the container: alice's profile, of a JVM gone,
			// is discarded, and her slot given back.
			if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer&duration=1m", bob); r.status != http.StatusOK {
				t.Fatalf("bob's start: %d %s\n%s", r.status, r.body, e.log())
			}
			if r := call(t, ctx, srv, http.MethodPost, e.a, "stop", "", bob); r.status != http.StatusOK {
				t.Fatalf("bob's stop: %d %.500s", r.status, r.body)
			}
			for deadline := time.Now().Add(30 * time.Second); metric(t, e.metrics, "safeattach_ondemand_profiles_running") != 0; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("slots still held 30 s after both profiles ended:\n%s", e.log())
				}
			}
			if !strings.Contains(e.log(), `"why":"its pod left the node"`) && !strings.Contains(e.log(), `"why":"its JVM exited"`) {
				t.Errorf("alice's profile was not discarded as its JVM's gone:\n%s", e.log())
			}
			// alice's own slot is back.
			if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer&duration=5s", alice); r.status != http.StatusOK {
				t.Errorf("alice's next start: %d %s", r.status, r.body)
			}
		})
	}
}

// TestLiveOnDemandForeignContainerID: a pod whose status names another
// pod's container, or a container outside Kubernetes (whoever may write
// pods/status can make it so), is not a way to that JVM: the JVM's
// cgroup, which the kubelet made, must name the pod.
func TestLiveOnDemandForeignContainerID(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	alice := e.token(t, e.a, "alice", "create", "get")
	ctx := context.Background()
	podB, err := e.api.Client.CoreV1().Pods(e.b).Get(ctx, "orders", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	foreign := podB.Status.ContainerStatuses[0].ContainerID
	e.api.Running(t, e.a, "orders", foreign) // a's pod now names b's container
	e.waitPod(t, "the changed status", func(p kube.Pod) bool { return p.Namespace == e.a && p.Containers[0].ID == foreign })
	for _, action := range []string{"inspect", "profile"} {
		method := map[string]string{"inspect": http.MethodGet, "profile": http.MethodPost}[action]
		r := call(t, ctx, srv, method, e.a, action, "duration=1s&event=itimer", alice)
		if msg, _ := r.result["error"].(string); r.status != http.StatusNotFound || !strings.Contains(msg, "its status names a container that is not its own") {
			t.Errorf("%s of a/orders naming b's container: %d, want 404:\n%.1000s", action, r.status, r.body)
		}
	}
	if agentMapped(t, e.jvmB, e.lib) {
		t.Error("b's JVM maps the agent after a request about a's pod")
	}
	// Nor at a container outside Kubernetes, whose cgroup names no pod.
	_, id := testenv.PodIDs(t)
	wrap, outside := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "pids", "docker/"+id, wrap, outside)
	e.api.Running(t, e.a, "orders", "containerd://"+id)
	e.waitPod(t, "the changed status", func(p kube.Pod) bool { return p.Namespace == e.a && p.Containers[0].ID == "containerd://"+id })
	if r := call(t, ctx, srv, http.MethodGet, e.a, "inspect", "", alice); r.status != http.StatusNotFound || !strings.Contains(r.body, "a cgroup that names no pod") {
		t.Errorf("inspect of a/orders naming a container outside Kubernetes: %d, want 404:\n%.1000s", r.status, r.body)
	}
}

// TestLiveOnDemandEventsPerNamespace: a namespace whose requests come
// faster than its Events may (start and stop in a loop) has its own
// Events dropped past its burst — logged, not recorded — and another
// namespace's profile still gets its Event.
func TestLiveOnDemandEventsPerNamespace(t *testing.T) {
	e := newOnDemandEnv(t, nil)
	srv := e.serve(t, OnDemandConfig{})
	ctx := context.Background()
	alice := e.token(t, e.a, "alice", "create")
	bob := e.token(t, e.b, "bob", "create")
	for range namespaceEventBurst {
		if r := call(t, ctx, srv, http.MethodPost, e.a, "start", "event=itimer", alice); r.status != http.StatusOK {
			t.Fatalf("start: %d %s", r.status, r.body)
		}
		if r := call(t, ctx, srv, http.MethodPost, e.a, "stop", "", alice); r.status != http.StatusOK {
			t.Fatalf("stop: %d %.300s", r.status, r.body)
		}
	}
	if !strings.Contains(e.log(), "event not recorded: the namespace's Events come faster than one a second") {
		t.Errorf("%d Events in a row not limited:\n%s", 2*namespaceEventBurst, e.log())
	}
	if r := post(t, ctx, srv, e.b, "duration=1s&event=itimer", bob); r.status != http.StatusOK {
		t.Fatalf("bob's profile: %d %.300s", r.status, r.body)
	}
	var notes []string
	for deadline := time.Now().Add(10 * time.Second); len(notes) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		notes = e.events(t, e.b)
	}
	if len(notes) != 1 {
		t.Errorf("namespace b's Events during a's flood: %q", notes)
	}
}
