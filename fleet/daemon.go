package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/budget"
	"github.com/safeattach/safeattach/pyroscope"
	"github.com/safeattach/safeattach/target"
)

// The annotations a pod opts in with. Only "enabled" is required.
const (
	AnnotationEnabled   = "profiles.safeattach.io/enabled"      // "true"
	AnnotationEvent     = "profiles.safeattach.io/event"        // cpu, itimer, alloc, wall, ...
	AnnotationWindow    = "profiles.safeattach.io/window"       // a Go duration, 1s to 10m
	AnnotationContainer = "profiles.safeattach.io/container"    // which container; default all
	AnnotationService   = "profiles.safeattach.io/service-name" // default <namespace>/<container>
)

// RefusalProfilerBusy counts JVMs not profiled because another session
// or tool runs their profiler (refusals{rule="profiler-busy"}).
const RefusalProfilerBusy = "profiler-busy"

// DefaultAttachTimeout bounds each attach command the daemon sends.
const DefaultAttachTimeout = 30 * time.Second

// Window bounds an annotation may ask for.
const (
	MinWindow = profiling.MinWindow
	MaxWindow = 10 * time.Minute
)

// Config configures a Daemon. Pods is required.
type Config struct {
	// Node is this node's name; pods elsewhere are ignored. Empty takes
	// every pod the source lists (a source already filtered by node).
	Node string
	Pods kube.PodSource
	// Lib is the async-profiler library (empty: the installed one).
	Lib string
	// Format is what each window is: "jfr" (default) or "collapsed".
	Format string
	// Event and Window are the defaults for pods that do not say
	// (cpu, with the timer fallback where perf events are unavailable;
	// 60 s).
	Event  string
	Window time.Duration
	// SyncInterval is how often the pods are read (default 15 s); a
	// source that is a kube.Notifier is read at each change too.
	SyncInterval time.Duration
	// Budget bounds the memory held by windows read back from targets
	// and waiting to be pushed (default: a quarter of this process's
	// cgroup memory limit, else DefaultBudget). MaxWindowBytes caps one
	// window (default: half the budget). A window over either is dropped,
	// counted (safeattach_profile_windows_total{result="over-budget"}) and logged with its pod;
	// the profiler goes on.
	Budget         *budget.Budget
	MaxWindowBytes int64
	// Pusher receives every finished window; nil counts and drops them.
	Pusher *pyroscope.Pusher
	// Options are the attach options (rules, timeouts, watcher...).
	Options  attach.Options
	ProcRoot string
	Logger   *slog.Logger
	Metrics  *Metrics
}

// Daemon profiles the opted-in JVMs of one node.
type Daemon struct {
	cfg   Config
	ready atomic.Bool

	mu       sync.Mutex
	sessions map[string]*profiled // by pod UID/container name
	// judged remembers, by pod UID/container name, the JVM that was
	// refused or failed, so that it is not retried until it changes.
	judged  map[string]jvmID
	unfound map[string]string // the last resolution error logged
	wg      sync.WaitGroup
}

type jvmID struct {
	pid   int
	start uint64
}

type profiled struct {
	jvm    jvmID
	cancel context.CancelFunc
	done   chan struct{}
}

// New validates cfg.
func New(cfg Config) (*Daemon, error) {
	if cfg.Pods == nil {
		return nil, errors.New("fleet: no pod source")
	}
	switch cfg.Format {
	case "":
		cfg.Format = "jfr"
	case "jfr", "collapsed":
	default:
		return nil, fmt.Errorf("fleet: format %q: want jfr or collapsed", cfg.Format)
	}
	if cfg.Event == "" {
		cfg.Event = "cpu"
	}
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	if cfg.Window < MinWindow || cfg.Window > MaxWindow {
		return nil, fmt.Errorf("fleet: window %v: want %v to %v", cfg.Window, MinWindow, MaxWindow)
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 15 * time.Second
	}
	if cfg.Options.Timeout == 0 {
		// Attaches run one at a time per sync: a JVM that never answers
		// (a hang the watcher cannot name ends at the deadline) must not
		// hold the other pods back for attach's 2-minute default.
		cfg.Options.Timeout = DefaultAttachTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Budget == nil {
		cfg.Budget = budget.New(DefaultBudget())
	}
	if cfg.MaxWindowBytes <= 0 || cfg.MaxWindowBytes > cfg.Budget.Total() {
		cfg.MaxWindowBytes = cfg.Budget.Total() / 2
	}
	cfg.Metrics.watchPusher(cfg.Pusher)
	return &Daemon{cfg: cfg, sessions: map[string]*profiled{}, judged: map[string]jvmID{}, unfound: map[string]string{}}, nil
}

// DefaultBudget is the read-back budget when Config.Budget is not given:
// a quarter of this process's memory limit (the rest is the Go runtime,
// its collector's headroom, and the daemon's own state), or 256 MiB
// when there is no limit.
func DefaultBudget() int64 {
	if limit, err := budget.Limit(""); err == nil {
		return limit / 4
	}
	return 256 << 20
}

// Metrics returns the daemon's counters.
func (d *Daemon) Metrics() *Metrics { return d.cfg.Metrics }

// Ready reports whether one pod list has been read.
func (d *Daemon) Ready() bool { return d.ready.Load() }

// Run synchronises every SyncInterval until ctx ends, then stops every
// profiler (each last partial window is still pushed) within stopTimeout.
// A source that is a kube.Notifier (a watch) is also synchronised at
// each change: a pod that starts running is profiled, and a deleted
// pod's profiler stopped, as soon as the API server says so; the timer
// then only catches what the API cannot see (a JVM restarted inside its
// container), and costs the API server nothing (the pods come from the
// watch's cache).
func (d *Daemon) Run(ctx context.Context) {
	tick := time.NewTicker(d.cfg.SyncInterval)
	defer tick.Stop()
	var changes <-chan struct{}
	if n, ok := d.cfg.Pods.(kube.Notifier); ok {
		changes = n.Changes()
	}
	for {
		if err := d.Sync(ctx); err != nil && ctx.Err() == nil {
			d.cfg.Logger.Warn("pod sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			d.StopAll()
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

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
	d.cfg.Metrics.synced(err == nil)
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
	key := w.key()
	log := d.cfg.Logger.With("namespace", w.pod.Namespace, "pod", w.pod.Name, "container", w.container.Name)
	jvm, id, err := d.resolve(procs, w.container.ID)
	d.mu.Lock()
	if s, running := d.sessions[key]; running {
		if err != nil || s.jvm == id {
			d.mu.Unlock()
			return
		}
		s.cancel() // a new JVM in the container: the old one is gone
		delete(d.sessions, key)
	}
	if err != nil {
		if d.unfound[key] != err.Error() {
			d.unfound[key] = err.Error()
			log.Info("no JVM to profile in container", "err", logText(err))
		}
		d.mu.Unlock()
		return
	}
	delete(d.unfound, key)
	if prev, seen := d.judged[key]; seen && prev == id {
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()

	event, refused := eventAnnotation(w.pod.Annotations, d.cfg.Event)
	refused.log(log, event)
	window, refused := windowAnnotation(w.pod.Annotations, d.cfg.Window)
	refused.log(log, window)
	// A profiler this node's daemon left running (killed before it could
	// stop it) is taken back; anyone else's is refused.
	began := time.Now()
	ss, err := profiling.OpenSession(ctx, jvm.PID, profiling.SessionRequest{
		Lib: d.cfg.Lib, Profiler: asprof.Options{Event: event}, Format: d.cfg.Format, EventFallback: true, Options: d.cfg.Options,
		Owner: d.owner(), ReclaimOwn: true, MaxOutput: d.cfg.MaxWindowBytes, AutoStop: profiling.AutoStopFor(window),
	})
	if err == nil {
		if err = ss.Start(ctx); err != nil {
			ss.Close()
		}
	}
	outcome := attach.OutcomeOf(err)
	d.cfg.Metrics.attach(outcome.String(), time.Since(began))
	if err != nil {
		var refused *attach.RefusedError
		var busy *profiling.BusyError
		rules := []string{}
		switch {
		case errors.As(err, &refused):
			rules = refused.Verdict.Causes()
			if len(rules) == 0 {
				rules = []string{"delivery"}
			}
		case errors.As(err, &busy):
			// Someone else's profiler: refused, and not retried until the
			// JVM changes (a new pid, or the pod goes and comes back).
			rules = []string{RefusalProfilerBusy}
		}
		for _, r := range rules {
			d.cfg.Metrics.refusal(r)
		}
		if outcome == attach.OutcomeTimedOut {
			d.cfg.Metrics.hang()
		}
		if ctx.Err() != nil && outcome == attach.OutcomeInterrupted {
			return // shutting down: judge it again next time
		}
		d.mu.Lock()
		d.judged[key] = id
		d.mu.Unlock()
		log.Warn("JVM not profiled", "pid", jvm.PID, "outcome", outcome.String(), "rules", rules, "err", logText(err))
		return
	}
	log.Info("profiling", "pid", jvm.PID, "event", ss.Event(), "window", window.String(), "format", d.cfg.Format)
	sctx, cancel := context.WithCancel(context.Background())
	p := &profiled{jvm: id, cancel: cancel, done: make(chan struct{})}
	d.mu.Lock()
	d.sessions[key] = p
	d.mu.Unlock()
	d.wg.Add(1)
	d.cfg.Metrics.sessionStarted(w)
	go func() {
		defer d.wg.Done()
		defer d.cfg.Metrics.sessionEnded(w)
		defer ss.Close()
		err := ss.Windows(sctx, window, func(win *profiling.Window) error {
			d.finished(w, win, log)
			return nil
		})
		close(p.done)
		if err != nil {
			d.cfg.Metrics.window("error")
			if attach.OutcomeOf(err) == attach.OutcomeTimedOut {
				d.cfg.Metrics.hang()
			}
			var busy *profiling.BusyError
			if errors.As(err, &busy) {
				d.cfg.Metrics.refusal(RefusalProfilerBusy)
			}
			log.Warn("profiling of this JVM ends", "pid", jvm.PID, "err", logText(err))
			d.mu.Lock()
			d.judged[key] = id
			d.mu.Unlock()
		}
	}()
}

// owner is the name the daemon's profilers carry in their records.
func (d *Daemon) owner() string {
	if d.cfg.Node == "" {
		return "safeattach-daemon"
	}
	return "safeattach-daemon " + d.cfg.Node
}

// logValue is a value a pod's author wrote (an annotation), as logged:
// cut, and printable. slog's JSON handler escapes C0 controls but writes
// C1 controls (an 8-bit CSI) and DEL as they are, and a terminal tailing
// the log obeys them.
func logValue(s string) string { return printable.Line(truncate(s, 80)) }

// logText is an error as logged: its text can quote the target (a path
// it maps, a name it chose), escaped for the same reason.
func logText(err error) string { return printable.Line(err.Error()) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (d *Daemon) resolve(procs []target.Candidate, containerID string) (target.Candidate, jvmID, error) {
	ps, err := target.InContainer(procs, containerID, target.Options{ProcRoot: d.cfg.ProcRoot})
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	jvm, err := target.PickJVM(ps)
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	st, err := proc.NewFS(d.cfg.ProcRoot).Proc(jvm.PID).Stat()
	if err != nil {
		return target.Candidate{}, jvmID{}, err
	}
	return jvm, jvmID{jvm.PID, st.StartTime}, nil
}

// finished takes one window: read into a buffer charged to the budget
// (over budget, it is dropped, counted and logged with its pod — the
// profiler goes on) and queued for the pusher, which releases it.
func (d *Daemon) finished(w wanted, win *profiling.Window, log *slog.Logger) {
	if win.Err != nil {
		if errors.Is(win.Err, profiling.ErrNoOutput) {
			d.cfg.Metrics.window("empty")
			log.Warn("profile window empty")
			return
		}
		d.dropped(win, win.Err, log)
		return
	}
	buf := d.cfg.Budget.Buffer(d.cfg.MaxWindowBytes)
	err := buf.Reserve(win.Size)
	if err == nil {
		_, err = io.Copy(buf, win.Output)
	}
	if err != nil {
		buf.Release()
		d.dropped(win, err, log)
		return
	}
	if buf.Len() == 0 {
		buf.Release()
		d.cfg.Metrics.window("empty")
		log.Warn("profile window empty")
		return
	}
	d.cfg.Metrics.window("ok")
	if d.cfg.Pusher == nil {
		buf.Release()
		return
	}
	format := "jfr"
	if d.cfg.Format == "collapsed" {
		format = "folded"
	}
	service, refused := serviceAnnotation(w.pod, w.container.Name)
	refused.log(log, service)
	labels := map[string]string{"namespace": w.pod.Namespace, "pod": w.pod.Name, "container": w.container.Name}
	if w.pod.Node != "" {
		labels["node"] = w.pod.Node
	}
	if d.cfg.Pusher.Enqueue(pyroscope.Window{App: service, Labels: labels, From: win.From, Until: win.Until, Format: format, Data: buf.Bytes(), Release: buf.Release}) {
		log.Warn("push queue full: oldest window dropped")
	}
}

// dropped counts and logs a window that could not be taken.
func (d *Daemon) dropped(win *profiling.Window, err error, log *slog.Logger) {
	result := "invalid"
	if errors.Is(err, budget.ErrExhausted) || errors.Is(err, budget.ErrTooLarge) || errors.Is(err, safefile.ErrTooLarge) {
		result = "over-budget"
	}
	d.cfg.Metrics.window(result)
	log.Warn("profile window dropped", "result", result, "window", win.N, "bytes", win.Size, "err", logText(err))
}

// StopAll stops every profiler and waits for their last windows.
func (d *Daemon) StopAll() {
	d.mu.Lock()
	for key, s := range d.sessions {
		s.cancel()
		delete(d.sessions, key)
	}
	d.cfg.Metrics.setActive(0)
	d.mu.Unlock()
	d.wg.Wait()
}

// Handler serves /healthz, /readyz and /metrics, with one JSON access log
// line per request.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !d.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "pod list not read yet")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", d.cfg.Metrics.Handler())
	return accessLog(d.cfg.Logger, mux)
}

func remoteHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Info("http", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"remote", remoteHost(r.RemoteAddr), "duration_ms", time.Since(start).Milliseconds())
	})
}
