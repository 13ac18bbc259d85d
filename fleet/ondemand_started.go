package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling"
)

// StartedProfile is a profile started on demand and not yet stopped, as
// start and status answer it.
type StartedProfile struct {
	Namespace string           `json:"namespace"`
	Pod       string           `json:"pod"`
	Container string           `json:"container"`
	By        string           `json:"by"`
	Engine    profiling.Engine `json:"engine"`
	Event     string           `json:"event"`
	Format    string           `json:"format"`
	// FallbackFrom are the rules that refused async-profiler when the
	// Flight Recorder profiles instead.
	FallbackFrom []string  `json:"fallback_from,omitempty"`
	Since        time.Time `json:"since"`
	// StopsAt is when the node agent stops it and keeps nothing, if no
	// one stopped it before; for a discarded one, when it was.
	StopsAt time.Time `json:"stops_at"`
	// Discarded says why a discarded one was: not stopped by its
	// deadline, or its node agent stopping.
	Discarded string `json:"discarded,omitempty"`
}

// OnDemandState is the answer to start and status.
type OnDemandState struct {
	attach.Envelope
	// Verdict is the judgement a start was made under.
	Verdict *conflicts.Verdict `json:"verdict,omitempty"`
	// Started are the profiles started on demand in the pod (status), or
	// the one just started (start).
	Started []StartedProfile `json:"started"`
	// Discarded are the pod's profiles started on demand and discarded
	// in the last hour, because no one stopped them by StopsAt (status).
	Discarded []StartedProfile `json:"discarded,omitempty"`
	// Continuous are the pod's containers the node agent profiles
	// continuously (the pod's annotations asked for it).
	Continuous []string `json:"continuous,omitempty"`
}

// discarded remembers a started profile discarded at its deadline, for
// stop and status to say what became of it.
type discarded struct {
	StartedProfile
	podUID string
}

// Discarded profiles are remembered this long, and so many at most.
const (
	discardedFor  = time.Hour
	discardedKept = 256
)

// rememberDiscarded notes sp, forgetting what is older than
// discardedFor and the oldest past discardedKept; d.mu held.
func (o *onDemand) rememberDiscarded(sp *startedProfile, why string) {
	now := time.Now()
	kept := o.discarded[:0]
	for _, x := range o.discarded {
		if now.Sub(x.StopsAt) < discardedFor {
			kept = append(kept, x)
		}
	}
	if len(kept) >= discardedKept {
		kept = kept[len(kept)-discardedKept+1:]
	}
	x := discarded{StartedProfile: sp.StartedProfile, podUID: sp.start.podUID}
	x.StopsAt, x.Discarded = now, why
	o.discarded = append(kept, x)
}

// discardedIn are the discarded profiles of a's pod (its container, if
// a names one) of the last hour; d.mu held.
func (o *onDemand) discardedIn(a *answer, podUID string) []StartedProfile {
	var out []StartedProfile
	for _, x := range o.discarded {
		if x.Namespace == a.namespace && x.Pod == a.pod && (podUID == "" || x.podUID == podUID) &&
			(a.container == "" || x.Container == a.container) && time.Since(x.StopsAt) < discardedFor {
			out = append(out, x.StartedProfile)
		}
	}
	return out
}

// startedProfile is a started profile's session and what it holds.
type startedProfile struct {
	StartedProfile
	ss    profiling.Profiler
	start *answer // the start's request
	pid   int
	jvm   jvmID
	done  func() // gives back the slots and the JVM
	timer *time.Timer
}

// start starts a profile that runs until stop, or until its duration,
// when the node agent stops it and discards it.
func (o *onDemand) start(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, ok := o.authorize(w, r, began, "start", OnDemandVerb)
	if !ok {
		return
	}
	if err := o.options(r.URL.Query(), a, o.cfg.MaxDuration); err != nil {
		a.status, a.result, a.err = http.StatusBadRequest, "bad-request", err
		o.fail(w, r, a, began)
		return
	}
	// claim sweeps first: a profile started in this container before
	// its JVM was replaced (a restart, a pod made again under its name)
	// gives its slots back before this one takes them.
	pid, id, done, ok := o.claim(w, r, a, began, true)
	if !ok {
		return
	}
	// The session outlives this request; the start does not outlive the
	// client, nor the attach deadline.
	ctx, cancel := context.WithTimeout(r.Context(), o.d.cfg.Options.Timeout+time.Minute)
	defer cancel()
	sp, err := o.startAsPlanned(ctx, pid, a)
	if err != nil {
		done()
		a.err = err
		a.status, a.result = statusOf(err)
		o.log(r, a, began, pid)
		writeJSON(w, a.status, profiling.NewJSONResult("start", pid, began, nil, err))
		o.recordEvent(a, "")
		return
	}
	since := time.Now()
	sp.done = sync.OnceFunc(done) // given back once, whoever ends it
	sp.jvm = id
	sp.StartedProfile = StartedProfile{
		Namespace: a.namespace, Pod: a.pod, Container: a.container, By: a.user.GetName(),
		Engine: sp.ss.Engine(), Event: sp.ss.Event(), Format: sp.ss.Format(), FallbackFrom: sp.FallbackFrom,
		Since: since, StopsAt: since.Add(a.duration),
	}
	// The profile keeps its own copy of the start's request: this
	// handler goes on writing a's outcome after the profile is
	// published, and whoever stops or discards it reads it then.
	origin := *a
	sp.start = &origin
	verdict := sp.ss.Result().Verdict
	key := a.namespace + "/" + a.pod + "/" + a.container
	expired := "not stopped within " + a.duration.String()
	o.d.mu.Lock()
	if o.stopping {
		// Started as the node agent stopped: no one could stop it after.
		o.d.mu.Unlock()
		o.discard(sp, "its node agent stopped")
		a.status, a.result, a.err = http.StatusServiceUnavailable, "cancelled", errors.New("the node agent is stopping: the profile was stopped and discarded")
		o.fail(w, r, a, began)
		return
	}
	// One started profile per container: one still there is of the
	// container's JVM before this one (a restart, or a pod recreated
	// under the same name), which no one can stop any more. Whoever
	// takes a profile out of started stops it and gives its slots back.
	replaced := o.started[key]
	if replaced != nil {
		delete(o.started, key)
		replaced.timer.Stop()
		o.discards.Add(1)
	}
	o.started[key] = sp
	sp.timer = time.AfterFunc(sp.StopsAt.Sub(since), func() { o.expire(key, sp, expired) })
	o.d.mu.Unlock()
	if replaced != nil {
		go func() {
			defer o.discards.Done()
			o.discard(replaced, "its container's JVM was replaced")
		}()
	}
	a.status, a.result = http.StatusOK, "started"
	o.log(r, a, began, pid)
	o.recordEvent(a, fmt.Sprintf("discarded at %s unless stopped", sp.StopsAt.UTC().Format(time.RFC3339)))
	writeJSON(w, a.status, &OnDemandState{Envelope: attach.NewEnvelope("start", nil), Verdict: &verdict, Started: []StartedProfile{sp.StartedProfile}})
}

// startAsPlanned opens the engine planFor chooses and starts it, with
// the profiler's own stop (async-profiler's timeout=, the recording's
// duration) past the node agent's, so that a node agent gone before it
// stops the profile does not leave it running.
func (o *onDemand) startAsPlanned(ctx context.Context, pid int, a *answer) (*startedProfile, error) {
	p, err := o.planFor(ctx, pid, a)
	if err != nil {
		return nil, err
	}
	req := o.sessionRequest(a, o.d.optionsFor(a.namespace))
	req.AutoStop = profiling.AutoStopFor(a.duration)
	p.apply(&req, a.fallback)
	ss, err := startEngine(ctx, pid, req)
	if err != nil {
		return nil, err
	}
	a.engine = ss.Engine()
	sp := &startedProfile{ss: ss, start: a, pid: pid}
	sp.FallbackFrom = p.fallbackFrom
	return sp, nil
}

// stop stops a started profile and streams it.
func (o *onDemand) stop(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, podUID, ok := o.ofPod(w, r, began, "stop", OnDemandVerb)
	if !ok {
		return
	}
	sp, err := o.takeStarted(a, podUID)
	if err != nil {
		a.status, a.result, a.err = http.StatusNotFound, "not-found", err
		o.fail(w, r, a, began)
		return
	}
	defer sp.done()
	s := sp.start
	a.container, a.podUID, a.format, a.event, a.engine = s.container, s.podUID, sp.Format, sp.Event, sp.Engine
	a.duration = time.Since(sp.Since)
	out := &lazyWriter{w: w, contentType: contentTypes[sp.Format]}
	if sp.Engine == profiling.FlightRecorder {
		out.fallback(sp.Engine, sp.FallbackFrom)
	}
	// The profiler is stopped even when the client leaves mid-stream:
	// no one could stop it after.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), o.d.cfg.Options.Timeout+time.Minute)
	defer cancel()
	n, err := sp.ss.Stop(ctx, out)
	sp.ss.Close()
	a.bytes = n
	if err == nil && r.Context().Err() != nil {
		err = r.Context().Err()
	}
	defer o.recordStopped(a, sp, "")
	if err == nil {
		a.status, a.result = http.StatusOK, "ok"
		if !out.started {
			out.start()
		}
		o.log(r, a, began, sp.pid)
		return
	}
	a.err = err
	a.status, a.result = statusOf(err)
	o.log(r, a, began, sp.pid)
	if out.started {
		panic(http.ErrAbortHandler)
	}
	writeJSON(w, a.status, profiling.NewJSONResult("stop", sp.pid, began, nil, err))
}

// sweep discards the started profiles whose pod has left this node or
// whose JVM has exited: no one can stop them any more, and they hold
// slots of the caps until their deadline. It runs before each request
// takes slots, and before status answers.
func (o *onDemand) sweep(ctx context.Context) {
	pods, err := o.d.cfg.Pods.Pods(ctx)
	if err != nil {
		return
	}
	here := map[string]bool{}
	for _, p := range pods {
		here[p.UID] = true
	}
	type gone struct {
		sp  *startedProfile
		why string
	}
	var swept []gone
	o.d.mu.Lock()
	if o.stopping {
		o.d.mu.Unlock()
		return // stopStarted discards them all
	}
	for key, sp := range o.started {
		why := ""
		switch {
		case !here[sp.start.podUID]:
			why = "its pod left the node"
		case !o.d.running(sp.jvm):
			why = "its JVM exited"
		default:
			continue
		}
		delete(o.started, key)
		sp.timer.Stop()
		swept = append(swept, gone{sp, why})
		o.discards.Add(1)
	}
	o.d.mu.Unlock()
	for _, g := range swept {
		g.sp.done()
		go func() {
			defer o.discards.Done()
			o.discard(g.sp, g.why)
		}()
	}
}

// takeStarted removes from the started profiles the one a names (its
// container, or the pod's only one) in the pod of that UID (not one of
// an earlier pod of the same name) and returns it: whoever takes it
// stops it.
func (o *onDemand) takeStarted(a *answer, podUID string) (*startedProfile, error) {
	o.d.mu.Lock()
	defer o.d.mu.Unlock()
	var keys []string
	for key, sp := range o.started {
		if sp.Namespace == a.namespace && sp.Pod == a.pod && sp.start.podUID == podUID && (a.container == "" || sp.Container == a.container) {
			keys = append(keys, key)
		}
	}
	switch len(keys) {
	case 0:
		if gone := o.discardedIn(a, podUID); len(gone) > 0 {
			x := gone[len(gone)-1]
			return nil, fmt.Errorf("no profile started on demand in pod %s/%s%s: the one %s started at %s UTC was discarded at %s UTC (%s)",
				a.namespace, a.pod, inContainer(a.container), x.By, x.Since.UTC().Format(time.TimeOnly), x.StopsAt.UTC().Format(time.TimeOnly), x.Discarded)
		}
		return nil, fmt.Errorf("no profile started on demand in pod %s/%s%s", a.namespace, a.pod, inContainer(a.container))
	case 1:
	default:
		slices.Sort(keys)
		return nil, fmt.Errorf("pod %s/%s has %d profiles started on demand (%s): name the container", a.namespace, a.pod, len(keys), strings.Join(keys, ", "))
	}
	sp := o.started[keys[0]]
	delete(o.started, keys[0])
	sp.timer.Stop()
	return sp, nil
}

func inContainer(c string) string {
	if c == "" {
		return ""
	}
	return " container " + c
}

// expire stops a started profile no one stopped in its duration (or
// that no one could stop after: why says which), and discards it.
func (o *onDemand) expire(key string, sp *startedProfile, why string) {
	o.d.mu.Lock()
	if o.started[key] != sp || o.stopping {
		o.d.mu.Unlock()
		return // taken meanwhile (its taker stops it), or stopStarted stops it
	}
	delete(o.started, key)
	o.discards.Add(1)
	o.d.mu.Unlock()
	defer o.discards.Done()
	o.discard(sp, why)
}

// discard stops a started profile taken out of started, discards it,
// and gives back its slots.
func (o *onDemand) discard(sp *startedProfile, why string) {
	o.d.mu.Lock()
	o.rememberDiscarded(sp, why)
	o.d.mu.Unlock()
	defer sp.done()
	ctx, cancel := context.WithTimeout(context.Background(), o.d.cfg.Options.Timeout+time.Minute)
	defer cancel()
	_, err := sp.ss.Stop(ctx, io.Discard)
	sp.ss.Close()
	a := *sp.start
	a.action, a.result, a.status, a.err, a.duration = "expire", "expired", http.StatusGone, err, time.Since(sp.Since)
	attrs := []any{"result", a.result, "namespace", a.namespace, "pod", a.pod, "container", a.container, "user", a.user.GetName(), "pid", sp.pid,
		"ran", a.duration.Round(time.Second).String(), "why", why}
	if err != nil {
		attrs = append(attrs, "err", logText(err))
	}
	o.d.cfg.Metrics.onDemand(a.result)
	o.d.cfg.Logger.Info("on-demand profile stopped and discarded", attrs...)
	o.recordStopped(&a, sp, why)
}

// stopStarted stops every started profile and discards them: the node
// agent is going away, and no one could stop them after.
// A start that comes after discards its own profile; a discard already
// running (a deadline, a sweep) is waited for, so that no profiler is
// left in a target when the node agent exits.
func (o *onDemand) stopStarted() {
	o.d.mu.Lock()
	o.stopping = true
	var all []*startedProfile
	for key, sp := range o.started {
		delete(o.started, key)
		sp.timer.Stop()
		all = append(all, sp)
	}
	o.d.mu.Unlock()
	for _, sp := range all {
		o.discard(sp, "its node agent stopped")
	}
	o.discards.Wait()
}

// status answers what runs on demand in the pod, and which of its
// containers the node agent profiles continuously.
func (o *onDemand) status(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, podUID, ok := o.ofPod(w, r, began, "status", OnDemandReadVerb)
	if !ok {
		return
	}
	o.sweep(r.Context())
	st := &OnDemandState{Envelope: attach.NewEnvelope("status", nil), Started: []StartedProfile{}}
	o.d.mu.Lock()
	for _, sp := range o.started {
		if sp.Namespace == a.namespace && sp.Pod == a.pod && sp.start.podUID == podUID && (a.container == "" || sp.Container == a.container) {
			st.Started = append(st.Started, sp.StartedProfile)
		}
	}
	for key := range o.d.sessions {
		if uid, container, _ := strings.Cut(key, "/"); uid == podUID && (a.container == "" || container == a.container) {
			st.Continuous = append(st.Continuous, container)
		}
	}
	st.Discarded = o.discardedIn(a, podUID)
	o.d.mu.Unlock()
	slices.SortFunc(st.Started, func(x, y StartedProfile) int { return strings.Compare(x.Container, y.Container) })
	slices.Sort(st.Continuous)
	a.status, a.result = http.StatusOK, "ok"
	o.log(r, a, began, 0)
	writeJSON(w, a.status, st)
}

// ofPod authorises a request about a pod's started profiles (its
// container=, if any) and finds the pod's UID among this node's, or
// answers why not.
func (o *onDemand) ofPod(w http.ResponseWriter, r *http.Request, began time.Time, action, verb string) (*answer, string, bool) {
	a, ok := o.authorize(w, r, began, action, verb)
	if !ok {
		return nil, "", false
	}
	a.container = r.URL.Query().Get("container")
	podUID, status, err := o.podUID(r.Context(), a)
	if err != nil {
		a.status, a.result, a.err = status, "not-found", err
		o.fail(w, r, a, began)
		return nil, "", false
	}
	return a, podUID, true
}

// podUID is the UID of a's pod among this node's, or why not (503 while
// the pods are not known, 404).
func (o *onDemand) podUID(ctx context.Context, a *answer) (string, int, error) {
	pods, err := o.d.cfg.Pods.Pods(ctx)
	if err != nil {
		return "", http.StatusServiceUnavailable, fmt.Errorf("this node's pods are not known yet: %w", err)
	}
	for _, p := range pods {
		if p.Namespace == a.namespace && p.Name == a.pod && (o.d.cfg.Node == "" || p.Node == o.d.cfg.Node) {
			return p.UID, 0, nil
		}
	}
	return "", http.StatusNotFound, fmt.Errorf("pod %s/%s is not on this node", a.namespace, a.pod)
}

// InspectAnswer is the answer to inspect: the inspection of the pod's
// JVM, without its command line and its startup agents' options
// (secrets are passed there) and the files it maps.
type InspectAnswer struct {
	attach.Envelope
	*preflight.Report
}

// inspect describes the pod's JVM from the outside, touching nothing.
// It takes no slot of the caps and does not make the JVM busy (it is
// what a user looks at while a profile runs); each user inspects one
// JVM at a time.
func (o *onDemand) inspect(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, ok := o.authorize(w, r, began, "inspect", OnDemandReadVerb)
	if !ok {
		return
	}
	a.container = r.URL.Query().Get("container")
	name := a.user.GetName()
	o.d.mu.Lock()
	busy := o.inspecting[name]
	if !busy {
		o.inspecting[name] = true
	}
	o.d.mu.Unlock()
	if busy {
		a.status, a.result, a.err = http.StatusTooManyRequests, "too-many", fmt.Errorf("user %q already inspects a JVM on this node", name)
		o.fail(w, r, a, began)
		return
	}
	defer func() {
		o.d.mu.Lock()
		delete(o.inspecting, name)
		o.d.mu.Unlock()
	}()
	jvm, _, status, err := o.findJVM(r.Context(), a)
	if err != nil {
		a.status, a.result, a.err = status, "not-found", err
		o.fail(w, r, a, began)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), o.d.cfg.Options.Timeout)
	defer cancel()
	report, err := preflight.Inspect(ctx, jvm.PID, preflight.Options{})
	if err != nil {
		a.err = err
		a.status, a.result = statusOf(err)
		o.log(r, a, began, jvm.PID)
		writeJSON(w, a.status, profiling.NewJSONResult("inspect", jvm.PID, began, nil, err))
		return
	}
	redact(report)
	a.status, a.result = http.StatusOK, "ok"
	o.log(r, a, began, jvm.PID)
	writeJSON(w, a.status, &InspectAnswer{Envelope: attach.NewEnvelope("inspect", nil), Report: report})
}

// redact leaves out of an inspection what the pod's owners may have put
// there for the JVM alone: the command line, and the startup agents'
// options (-agentpath:lib=api_key=…, often from a Secret through
// JAVA_TOOL_OPTIONS), keeping each agent's option name and library; and
// the mapped files (a long list of no use to the caller).
func redact(r *preflight.Report) {
	r.Process.Cmdline, r.MappedFiles = nil, nil
	for i, a := range r.JVM.StartupAgents {
		if lib, opts, ok := strings.Cut(a, "="); ok && opts != "" {
			r.JVM.StartupAgents[i] = lib + "=(options left out)"
		}
	}
}

// recordStopped records on the pod how a started profile ended.
func (o *onDemand) recordStopped(a *answer, sp *startedProfile, why string) {
	stopped := *a
	stopped.format, stopped.event, stopped.engine, stopped.container = sp.Format, sp.Event, sp.Engine, sp.Container
	extra := "started by " + sp.By
	if a.action == "expire" {
		extra = why + ": discarded"
	}
	o.recordEvent(&stopped, extra)
}
