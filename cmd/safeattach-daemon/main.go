// Command safeattach-daemon is the node agent: run on every node (the
// DaemonSet in deploy/kubernetes), it profiles the JVMs of the pods on its
// node that opt in with the annotation profiles.safeattach.io/enabled:
// "true", refuses the ones the rules find dangerous, and pushes each
// profile window to Pyroscope. It serves /healthz, /readyz and /metrics,
// and, configured with on_demand, the on-demand profiling API over HTTPS
// for callers the API server authenticates and authorises.
//
//	safeattach-daemon --config /etc/safeattach/daemon.json
//	safeattach-daemon --pods-file pods.json --node node-1 --pyroscope http://127.0.0.1:4040
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/attach/crashmem"
	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/kube/podwatch"
	"github.com/safeattach/safeattach/profiling"
	"github.com/safeattach/safeattach/profiling/budget"
	"github.com/safeattach/safeattach/pyroscope"
)

// drainTimeout bounds the wait for the last windows to be pushed at
// shutdown (Kubernetes' default grace period is 30 s).
const drainTimeout = 15 * time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "safeattach-daemon:", err)
		os.Exit(1)
	}
}

func run() error {
	fl := parseFlags()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	readBack := readBackBudget(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	cfg, err := loadConfig(startCtx, fl.config)
	if err != nil {
		return err
	}
	fl.override(cfg)
	pods, err := podSource(ctx, cfg, fl.kubeconfig)
	if err != nil {
		return err
	}
	metrics := fleet.NewMetrics()
	pusher, err := newPusher(startCtx, cfg, log, metrics)
	if err != nil {
		return err
	}
	d, err := newAgent(ctx, cfg, pods, pusher, readBack, log, metrics)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	stopOnDemand, err := serveOnDemand(ctx, cfg, fl.kubeconfig, d, log)
	if err != nil {
		return err
	}
	defer stopOnDemand()
	srv := boundedServer(d.Handler())
	log.Info("safeattach-daemon serving", "addr", l.Addr().String(), "node", cfg.Node, "pyroscope", cfg.Pyroscope.URL != "")
	if fl.pprofListen != "" {
		if err := servePprof(fl.pprofListen, log); err != nil {
			return err
		}
	}
	return serveUntilStopped(ctx, stop, srv, boundedListener(l), d, pusher, log)
}

// flags are the command line; a flag given overrides the configuration
// file's setting.
type flags struct {
	config, listen, podsFile, node, pyroURL, pprofListen, kubeconfig string
}

func parseFlags() flags {
	var f flags
	flag.StringVar(&f.config, "config", "", "configuration file (JSON; see docs/kubernetes.md and deploy/helm/safeattach/values.yaml)")
	flag.StringVar(&f.listen, "listen", "", "address for /healthz, /readyz, /metrics (default "+DefaultListen+")")
	flag.StringVar(&f.podsFile, "pods-file", "", "read pods from this PodList file instead of the Kubernetes API")
	flag.StringVar(&f.node, "node", "", "this node's name (default $NODE_NAME)")
	flag.StringVar(&f.pyroURL, "pyroscope", "", "Pyroscope's base URL (default: the config's; none: windows are only counted)")
	flag.StringVar(&f.pprofListen, "pprof-listen", "", "serve Go's /debug/pprof on this address (for diagnosing the node agent; keep it on loopback)")
	flag.StringVar(&f.kubeconfig, "kubeconfig", "", "run off-cluster with this kubeconfig (default: $KUBECONFIG or ~/.kube/config when not in a pod)")
	flag.Parse()
	return f
}

// override puts the flags given over cfg's settings; the node's name
// falls back to $NODE_NAME (the downward API's).
func (f flags) override(cfg *config) {
	for _, o := range []struct{ flag, field *string }{{&f.listen, &cfg.Listen}, {&f.podsFile, &cfg.PodsFile}, {&f.node, &cfg.Node}, {&f.pyroURL, &cfg.Pyroscope.URL}} {
		if *o.flag != "" {
			*o.field = *o.flag
		}
	}
	if cfg.Node == "" {
		cfg.Node = os.Getenv("NODE_NAME")
	}
}

// readBackBudget bounds what comes back from the JVMs by a budget sized
// from the node agent's own memory limit, and tells the collector the
// limit too (unless GOMEMLIMIT says otherwise), so that garbage is
// collected before the kernel's OOM killer is the one to act.
func readBackBudget(log *slog.Logger) *budget.Budget {
	readBack := budget.New(fleet.DefaultBudget())
	if limit, err := budget.Limit(""); err == nil {
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(limit * 3 / 4)
		}
		log.Info("memory limit", "bytes", limit, "read_back_budget", readBack.Total())
	}
	return readBack
}

// podSource is where the pods come from: a PodList file, or one LIST then
// a WATCH of this node's pods for the daemon's life (the profilers
// follow each change).
func podSource(ctx context.Context, cfg *config, kubeconfig string) (kube.PodSource, error) {
	if cfg.PodsFile != "" {
		return kube.FilePods{Path: cfg.PodsFile}, nil
	}
	rc, err := podwatch.Config(kubeconfig, "")
	if err != nil {
		return nil, err
	}
	return podwatch.Start(ctx, rc, cfg.Node)
}

// newPusher is the Pyroscope client, with its secrets read from their
// files; nil when no URL is configured (windows are only counted).
func newPusher(ctx context.Context, cfg *config, log *slog.Logger, metrics *fleet.Metrics) (*pyroscope.Pusher, error) {
	if cfg.Pyroscope.URL == "" {
		return nil, nil
	}
	password, err := readSecret(ctx, cfg.Pyroscope.PasswordFile)
	if err != nil {
		return nil, err
	}
	token, err := readSecret(ctx, cfg.Pyroscope.TokenFile)
	if err != nil {
		return nil, err
	}
	return pyroscope.NewPusher(pyroscope.Config{
		URL: cfg.Pyroscope.URL, TenantID: cfg.Pyroscope.TenantID,
		BasicUser: cfg.Pyroscope.BasicUser, BasicPassword: password, BearerToken: token,
		QueueSize: cfg.Pyroscope.QueueSize, Logger: log, Observe: metrics.ObservePush,
	})
}

// newAgent is the node agent's core, configured from cfg.
func newAgent(ctx context.Context, cfg *config, pods kube.PodSource, pusher *pyroscope.Pusher, readBack *budget.Budget, log *slog.Logger, metrics *fleet.Metrics) (*fleet.Daemon, error) {
	opts := attach.Options{RuleFiles: cfg.RuleFiles, Timeout: time.Duration(cfg.AttachTimeout), Logger: log}
	if cfg.CrashMemory != "" {
		// Crashes are followed for as long as the daemon runs.
		opts.CrashMemory, opts.CrashFollowUntil = crashmem.Open(cfg.CrashMemory), ctx.Done()
	}
	return fleet.New(fleet.Config{
		Node: cfg.Node, Pods: pods, Lib: cfg.Agent, Agents: cfg.Agents, Format: cfg.Format, Event: cfg.Event, Fallback: fallbackEngine(cfg.Fallback),
		Window: time.Duration(cfg.Window), SyncInterval: time.Duration(cfg.SyncInterval),
		Pusher: pusher, Options: opts, Logger: log, Metrics: metrics,
		Budget: readBack, MaxWindowBytes: cfg.MaxWindowBytes,
		// The kubelet gives every container this variable: a pod,
		// whose loopback a port-forward reaches.
		InPod: os.Getenv("KUBERNETES_SERVICE_HOST") != "",
	})
}

// servePprof serves Go's /debug/pprof on addr for the process's life.
func servePprof(addr string, log *slog.Logger) error {
	dl, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	log.Info("pprof serving", "addr", dl.Addr().String())
	go boundedServer(mux).Serve(dl)
	return nil
}

// serveUntilStopped runs the endpoints, the node agent and its pusher
// until ctx ends (a signal) or the server fails, then shuts down in
// order: the profilers stop and their last windows are pushed (Drain,
// within drainTimeout), then the pusher and the server stop.
func serveUntilStopped(ctx context.Context, stop context.CancelFunc, srv *http.Server, l net.Listener, d *fleet.Daemon, pusher *pyroscope.Pusher, log *slog.Logger) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	// The pusher outlives the profilers: their last windows, taken at
	// shutdown, are sent before it stops.
	pushCtx, stopPushing := context.WithCancel(context.Background())
	defer stopPushing()
	pushed := make(chan struct{})
	if pusher != nil {
		go func() { pusher.Run(pushCtx); close(pushed) }()
	} else {
		close(pushed)
	}
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()

	select {
	case err := <-served:
		stop()
		<-ran
		stopPushing()
		<-pushed
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: stopping profilers")
	<-ran
	drain, cancelDrain := context.WithTimeout(context.Background(), drainTimeout)
	if err := d.Drain(drain); err != nil {
		log.Warn("shutting down before every window was sent", "err", err)
	}
	cancelDrain()
	stopPushing()
	<-pushed
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fallbackEngine is the configuration's fallback as an engine ("none"
// and empty: none).
func fallbackEngine(s string) profiling.Engine {
	if s == "none" {
		return ""
	}
	return profiling.Engine(s)
}
