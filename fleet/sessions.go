package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/target"
)

// wanted is one annotated container.
type wanted struct {
	pod       kube.Pod
	container kube.Container
}

func (w wanted) key() string { return w.pod.UID + "/" + w.container.Name }

func (d *Daemon) selectPods(pods []kube.Pod) map[string]wanted {
	out := map[string]wanted{}
	for _, p := range pods {
		if (d.cfg.Node != "" && p.Node != d.cfg.Node) || p.Phase != "Running" || p.Annotations[AnnotationEnabled] != "true" {
			continue
		}
		only := p.Annotations[AnnotationContainer]
		for _, c := range p.Containers {
			// A kubectl debug container is a tool beside the
			// application: profiled only when named.
			if only == c.Name || (only == "" && !c.Ephemeral) {
				w := wanted{p, c}
				out[w.key()] = w
			}
		}
	}
	return out
}

// Sync reads the pod list once and starts and stops profilers to match.
// Run calls it in turn; it is not meant to be called concurrently.
func (d *Daemon) Sync(ctx context.Context) error {
	pods, err := d.cfg.Pods.Pods(ctx)
	if !errors.Is(err, kube.ErrNotSynced) { // a watch starting has not failed
		d.cfg.Metrics.synced(err == nil)
	}
	if err != nil {
		return err
	}
	d.ready.Store(true)
	want := d.selectPods(pods)
	d.mu.Lock()
	for key, s := range d.sessions {
		ended := false
		select {
		case <-s.done:
			ended = true
		default:
		}
		if _, ok := want[key]; !ok || ended {
			s.cancel()
			if !ended {
				d.cfg.Logger.Info("pod left or opted out: profiler stopped", "key", key)
			}
			delete(d.sessions, key)
		}
	}
	for key := range d.judged {
		if _, ok := want[key]; !ok {
			delete(d.judged, key)
		}
	}
	d.mu.Unlock()

	if len(want) == 0 {
		d.cfg.Metrics.setActive(0)
		return nil
	}
	// One read of every process's cgroup serves every container.
	procs, err := target.All(target.Options{ProcRoot: d.cfg.ProcRoot})
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.consider(ctx, want[key], procs)
	}
	d.mu.Lock()
	d.cfg.Metrics.setActive(len(d.sessions))
	d.mu.Unlock()
	return nil
}

// consider starts profiling one container's JVM unless it is already
// profiled or was judged before.
func (d *Daemon) consider(ctx context.Context, w wanted, procs []target.Candidate) {
	log := d.cfg.Logger.With("namespace", w.pod.Namespace, "pod", w.pod.Name, "container", w.container.Name)
	jvm, id, ok := d.jvmToProfile(w, procs, log)
	if !ok {
		return
	}
	event, refused := eventAnnotation(w.pod.Annotations, d.cfg.Event)
	refused.log(log, event)
	window, refused := windowAnnotation(w.pod.Annotations, d.cfg.Window)
	refused.log(log, window)
	fallback, refused := fallbackAnnotation(w.pod.Annotations, d.cfg.Fallback)
	refused.log(log, fallback)
	ss, err := d.startProfiler(ctx, jvm.PID, w.pod.Namespace, event, window, fallback, log)
	if err != nil {
		d.notProfiled(ctx, w.key(), id, jvm.PID, err, log)
		return
	}
	log.Info("profiling", "pid", jvm.PID, "engine", ss.Engine(), "event", ss.Event(), "window", window.String(), "format", ss.Format())
	d.keepProfiling(w, id, ss, window, log)
}

// jvmToProfile resolves the container's JVM and says whether a profiler
// should be started in it: not when one already runs in that JVM, nor
// when this JVM was judged before (a refusal is not retried until the
// container runs a new JVM). A session whose container now runs another
// JVM is stopped here: the old JVM is gone. That no JVM was found is
// logged once per distinct reason, not at every sync.
func (d *Daemon) jvmToProfile(w wanted, procs []target.Candidate, log *slog.Logger) (target.Candidate, jvmID, bool) {
	key := w.key()
	jvm, id, err := d.resolve(procs, w.pod.UID, w.container.ID)
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, running := d.sessions[key]; running {
		if err != nil || s.jvm == id {
			return jvm, id, false
		}
		s.cancel() // a new JVM in the container: the old one is gone
		delete(d.sessions, key)
	}
	if err != nil {
		if d.unfound[key] != err.Error() {
			d.unfound[key] = err.Error()
			log.Info("no JVM to profile in container", "err", logText(err))
		}
		return jvm, id, false
	}
	delete(d.unfound, key)
	if prev, seen := d.judged[key]; seen && prev == id {
		return jvm, id, false
	}
	return jvm, id, true
}

// startProfiler opens a session on the JVM and starts its profiler,
// counting the attach by outcome and latency. A profiler this node's
// node agent left running (killed before it could stop it) is taken
// back; anyone else's is refused. With Config.Agents, the builds are
// tried in order until the rules allow one. Where the rules refuse
// async-profiler (every build) and fallback names another engine, that
// engine profiles the JVM instead: the refusing rules are counted as
// refusals and as fallbacks.
func (d *Daemon) startProfiler(ctx context.Context, pid int, namespace, event string, window time.Duration, fallback profiling.Engine, log *slog.Logger) (profiling.Profiler, error) {
	began := time.Now()
	req := profiling.SessionRequest{
		Profiler: asprof.Options{Event: event}, Format: d.cfg.Format, EventFallback: true, Options: d.optionsFor(namespace),
		Owner: d.owner(), ReclaimOwn: true, MaxOutput: d.cfg.MaxWindowBytes, AutoStop: profiling.AutoStopFor(window),
	}
	ss, err := d.startAsyncProfiler(ctx, pid, req, log)
	var refused *attach.RefusedError
	if fallback != "" && errors.As(err, &refused) && refused.Reason == "" && ctx.Err() == nil {
		rules := refused.Verdict.Causes()
		for _, r := range rules {
			d.cfg.Metrics.refusal(r)
			d.cfg.Metrics.fallback(r, fallback)
		}
		log.Info("async-profiler refused: profiling with the fallback engine", "pid", pid, "rules", rules, "engine", fallback)
		// The Flight Recorder's windows are its own recordings.
		req.Lib, req.Engine, req.Format = "", fallback, "jfr"
		ss, err = startEngine(ctx, pid, req)
	}
	d.cfg.Metrics.attach(attach.OutcomeOf(err).String(), time.Since(began))
	return ss, err
}

// running reports whether the JVM id still runs (its pid, with the same
// start time: not a process that took the pid over).
func (d *Daemon) running(id jvmID) bool {
	st, err := proc.NewFS(d.cfg.ProcRoot).Proc(id.pid).Stat()
	return err == nil && st.StartTime == id.start
}

// optionsFor are the attach options for a JVM of a pod in namespace:
// the crash memory is kept per namespace (attach.Options.CrashScope).
func (d *Daemon) optionsFor(namespace string) attach.Options {
	opts := d.cfg.Options
	opts.CrashScope = namespace
	return opts
}

// agentLibs are the async-profiler builds to try, preferred first:
// Config.Agents, or Config.Lib alone; none is the installed one.
func (d *Daemon) agentLibs() []string {
	switch {
	case len(d.cfg.Agents) > 0:
		return d.cfg.Agents
	case d.cfg.Lib != "":
		return []string{d.cfg.Lib}
	}
	return nil
}

// startAsyncProfiler starts async-profiler with the first build of
// Config.Agents the rules allow for the JVM (or Config.Lib); when none
// is allowed, the preferred build's refusal is the answer
// (profiling.SessionRequest.Builds).
func (d *Daemon) startAsyncProfiler(ctx context.Context, pid int, req profiling.SessionRequest, log *slog.Logger) (profiling.Profiler, error) {
	req.Lib, req.Builds = "", d.agentLibs()
	ss, err := startEngine(ctx, pid, req)
	if err == nil && len(d.cfg.Agents) > 0 {
		res := ss.Result()
		if p := res.Picked; p != nil {
			log.Info("the rules refuse the preferred build of agents for this JVM: a later one is used", "pid", pid, "refused", p.Refused.Path, "rules", p.Rules)
		}
		used := res.Agent
		log.Info("agent chosen from agents", "pid", pid, "agent", used.Path, "version", used.Version)
		d.cfg.Metrics.build(configured(d.cfg.Agents, used))
	}
	return ss, err
}

// configured is the entry of agents that names a (the metric's label: a
// path from the configuration, not one the target could choose).
func configured(agents []string, a *preflight.Agent) string {
	for _, p := range agents {
		if abs, err := filepath.Abs(p); err == nil && (abs == a.Path || strings.HasPrefix(a.Path, abs+"/")) {
			return p
		}
	}
	return "other"
}

// startEngine opens req's profiler in pid and starts it.
func startEngine(ctx context.Context, pid int, req profiling.SessionRequest) (profiling.Profiler, error) {
	ss, err := profiling.Open(ctx, pid, req)
	if err != nil {
		return nil, err
	}
	if err := ss.Start(ctx); err != nil {
		ss.Close()
		return nil, err
	}
	return ss, nil
}

// notProfiled counts and logs why a JVM was not profiled, and remembers
// the JVM as judged so that later syncs do not try it again, unless the
// attach was only interrupted by the daemon shutting down.
func (d *Daemon) notProfiled(ctx context.Context, key string, id jvmID, pid int, err error, log *slog.Logger) {
	outcome := attach.OutcomeOf(err)
	rules := refusalRules(err)
	for _, r := range rules {
		d.cfg.Metrics.refusal(r)
	}
	if outcome == attach.OutcomeTimedOut {
		d.cfg.Metrics.hang()
	}
	if ctx.Err() != nil && outcome == attach.OutcomeInterrupted {
		return // shutting down: judge it again next time
	}
	d.judge(key, id)
	log.Warn("JVM not profiled", "pid", pid, "outcome", outcome.String(), "rules", rules, "err", logText(err))
}

// refusalRules are the rule IDs a failed attach is counted under in
// safeattach_refusals_total: the rules that refused it, "delivery" for a
// refusal no rule made (the agent could not be delivered safely),
// RefusalProfilerBusy for someone else's profiler, and none for a plain
// failure.
func refusalRules(err error) []string {
	var refused *attach.RefusedError
	var busy *profiling.BusyError
	switch {
	case errors.As(err, &refused):
		if rules := refused.Verdict.Causes(); len(rules) > 0 {
			return rules
		}
		return []string{"delivery"}
	case errors.As(err, &busy):
		// Someone else's profiler: refused, and not retried until the
		// JVM changes (a new pid, or the pod goes and comes back).
		return []string{RefusalProfilerBusy}
	}
	return []string{}
}

// judge remembers the container's JVM as refused or failed.
func (d *Daemon) judge(key string, id jvmID) {
	d.mu.Lock()
	d.judged[key] = id
	d.mu.Unlock()
}

// keepProfiling registers the session and rotates its windows in a
// goroutine of its own until it is cancelled (its pod left, a new JVM,
// StopAll) or fails; StopAll waits for it through d.wg, so that its last
// window is taken before the daemon stops.
func (d *Daemon) keepProfiling(w wanted, id jvmID, ss profiling.Profiler, window time.Duration, log *slog.Logger) {
	// Not the sync's context: a session outlives the sync that started it.
	sctx, cancel := context.WithCancel(context.Background())
	p := &profiled{jvm: id, cancel: cancel, done: make(chan struct{})}
	d.wg.Add(1) // before the session can be seen: StopAll waits for what it sees
	d.mu.Lock()
	d.sessions[w.key()] = p
	d.mu.Unlock()
	d.cfg.Metrics.sessionStarted(w)
	go func() {
		defer d.wg.Done()
		defer d.cfg.Metrics.sessionEnded(w)
		defer ss.Close()
		err := ss.Windows(sctx, window, func(win *profiling.Window) error {
			d.finished(w, win, ss.Engine(), log)
			return nil
		})
		close(p.done)
		if err != nil {
			d.profilingEnded(w.key(), id, ss.Engine(), err, log)
		}
	}()
}

// profilingEnded counts and logs a session that failed, and remembers
// its JVM as judged: it is not profiled again until the container runs a
// new JVM.
func (d *Daemon) profilingEnded(key string, id jvmID, engine profiling.Engine, err error, log *slog.Logger) {
	d.cfg.Metrics.window("error", engine)
	if attach.OutcomeOf(err) == attach.OutcomeTimedOut {
		d.cfg.Metrics.hang()
	}
	var busy *profiling.BusyError
	if errors.As(err, &busy) {
		d.cfg.Metrics.refusal(RefusalProfilerBusy)
	}
	log.Warn("profiling of this JVM ends", "pid", id.pid, "err", logText(err))
	d.judge(key, id)
}

// owner is the name the daemon's profilers carry in their records.
func (d *Daemon) owner() string {
	if d.cfg.Node == "" {
		return "safeattach-daemon"
	}
	return "safeattach-daemon " + d.cfg.Node
}

func (d *Daemon) resolve(procs []target.Candidate, podUID, containerID string) (target.Candidate, jvmID, error) {
	ps, err := target.InContainer(procs, containerID, target.Options{ProcRoot: d.cfg.ProcRoot})
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	jvm, err := target.PickJVM(ps)
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	// The container ID comes from the pod's status, which whoever may
	// write pods/status can point at another pod's container, or at a
	// container outside Kubernetes: the process's cgroup, which the
	// kubelet made, must name the pod. (A static pod's cgroup names its
	// manifest's hash, not its mirror's UID: not profiled.)
	switch {
	case podUID == "":
		// A pod source without UIDs (a pods file written by hand).
	case jvm.PodUID == "":
		return target.Candidate{}, jvmID{}, fmt.Errorf("container %s runs in a cgroup that names no pod (a static pod, or a container outside Kubernetes): its status names a container that is not its own", containerID)
	case jvm.PodUID != podUID:
		return target.Candidate{}, jvmID{}, fmt.Errorf("container %s runs in the cgroup of pod %s, not of this pod (%s): its status names a container that is not its own", containerID, jvm.PodUID, podUID)
	}
	st, err := proc.NewFS(d.cfg.ProcRoot).Proc(jvm.PID).Stat()
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	return jvm, jvmID{jvm.PID, st.StartTime}, nil
}
