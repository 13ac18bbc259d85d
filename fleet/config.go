package fleet

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling/budget"
	"github.com/safeattach/safeattach/pyroscope"
)

// The annotations a pod opts in with. Only "enabled" is required.
const (
	AnnotationEnabled   = "profiles.safeattach.io/enabled"      // "true"
	AnnotationEvent     = "profiles.safeattach.io/event"        // cpu, itimer, alloc, wall, ...
	AnnotationWindow    = "profiles.safeattach.io/window"       // a Go duration, 1s to 10m
	AnnotationContainer = "profiles.safeattach.io/container"    // which container; default all
	AnnotationService   = "profiles.safeattach.io/service-name" // default <namespace>/<container>
	AnnotationFallback  = "profiles.safeattach.io/fallback"     // jfr or none: what profiles a JVM async-profiler is refused in
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
	// Agents, when not empty, are the async-profiler builds the node
	// agent may load, in order of preference (Lib is then not used): for
	// each JVM the first the rules allow is loaded. A refusal by the
	// rules' judgement of a build (its version, what it imports, its
	// file) moves on to the next; any other refusal or failure ends the
	// attempt. Which build was used is logged and counted
	// (safeattach_agent_builds_total{agent}).
	Agents []string
	// Format is what each window is: "jfr" (default) or "collapsed".
	Format string
	// Fallback is the engine that profiles a JVM where the rules refuse
	// async-profiler: profiling.FlightRecorder (the JVM's own, whose
	// windows are JFR recordings whatever Format says), or empty for
	// none (the refusal is counted, nothing profiles the JVM). A pod's
	// AnnotationFallback overrides it.
	Fallback profiling.Engine
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
	// InPod says the node agent runs in a pod, whose loopback is where
	// a port-forward to it arrives: while the on-demand API is served,
	// /metrics is then not served over loopback (see Handler). Off
	// cluster, loopback is the host's own.
	InPod bool
	// Options are the attach options (rules, timeouts, watcher...).
	Options  attach.Options
	ProcRoot string
	Logger   *slog.Logger
	Metrics  *Metrics
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
	if slices.Contains(cfg.Agents, "") {
		return nil, errors.New("fleet: agents: an empty path")
	}
	switch cfg.Fallback {
	case "", profiling.FlightRecorder:
	default:
		return nil, fmt.Errorf("fleet: fallback %q: want jfr or none", cfg.Fallback)
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
	return &Daemon{cfg: cfg, sessions: map[string]*profiled{}, judged: map[string]jvmID{}, unfound: map[string]string{}, onDemand: map[jvmID]string{}}, nil
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
