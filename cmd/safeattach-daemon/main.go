// Command safeattach-daemon is the node agent: run on every node (the
// DaemonSet in deploy/kubernetes), it profiles the JVMs of the pods on its
// node that opt in with the annotation profiles.safeattach.io/enabled:
// "true", refuses the ones the rules find dangerous, and pushes each
// profile window to Pyroscope. It serves /healthz, /readyz and /metrics.
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
	configPath := flag.String("config", "", "configuration file (JSON; see docs/kubernetes.md and deploy/helm/safeattach/values.yaml)")
	listen := flag.String("listen", "", "address for /healthz, /readyz, /metrics (default "+DefaultListen+")")
	podsFile := flag.String("pods-file", "", "read pods from this PodList file instead of the Kubernetes API")
	node := flag.String("node", "", "this node's name (default $NODE_NAME)")
	pyroURL := flag.String("pyroscope", "", "Pyroscope's base URL (default: the config's; none: windows are only counted)")
	pprofListen := flag.String("pprof-listen", "", "serve Go's /debug/pprof on this address (for diagnosing the daemon; keep it on loopback)")
	kubeconfig := flag.String("kubeconfig", "", "run off-cluster with this kubeconfig (default: $KUBECONFIG or ~/.kube/config when not in a pod)")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	// What comes back from the JVMs is bounded by a budget sized from the
	// daemon's own memory limit, and the collector is told the limit too
	// (unless GOMEMLIMIT says otherwise), so that garbage is collected
	// before the kernel's OOM killer is the one to act.
	readBack := budget.New(fleet.DefaultBudget())
	if limit, err := budget.Limit(""); err == nil {
		if os.Getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(limit * 3 / 4)
		}
		log.Info("memory limit", "bytes", limit, "read_back_budget", readBack.Total())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	cfg, err := loadConfig(startCtx, *configPath)
	if err != nil {
		return err
	}
	for _, o := range []struct{ flag, field *string }{{listen, &cfg.Listen}, {podsFile, &cfg.PodsFile}, {node, &cfg.Node}, {pyroURL, &cfg.Pyroscope.URL}} {
		if *o.flag != "" {
			*o.field = *o.flag
		}
	}
	if cfg.Node == "" {
		cfg.Node = os.Getenv("NODE_NAME")
	}

	var pods kube.PodSource
	if cfg.PodsFile != "" {
		pods = kube.FilePods{Path: cfg.PodsFile}
	} else {
		rc, err := podwatch.Config(*kubeconfig, "")
		if err != nil {
			return err
		}
		// One LIST then a WATCH of this node's pods for the daemon's
		// life; the profilers follow each change.
		w, err := podwatch.Start(ctx, rc, cfg.Node)
		if err != nil {
			return err
		}
		pods = w
	}

	metrics := fleet.NewMetrics()
	var pusher *pyroscope.Pusher
	if cfg.Pyroscope.URL != "" {
		password, err := readSecret(startCtx, cfg.Pyroscope.PasswordFile)
		if err != nil {
			return err
		}
		token, err := readSecret(startCtx, cfg.Pyroscope.TokenFile)
		if err != nil {
			return err
		}
		pusher, err = pyroscope.NewPusher(pyroscope.Config{
			URL: cfg.Pyroscope.URL, TenantID: cfg.Pyroscope.TenantID,
			BasicUser: cfg.Pyroscope.BasicUser, BasicPassword: password, BearerToken: token,
			QueueSize: cfg.Pyroscope.QueueSize, Logger: log, Observe: metrics.ObservePush,
		})
		if err != nil {
			return err
		}
	}

	opts := attach.Options{RuleFiles: cfg.RuleFiles, Timeout: time.Duration(cfg.AttachTimeout), Logger: log}
	if cfg.CrashMemory != "" {
		// Crashes are followed for as long as the daemon runs.
		opts.CrashMemory, opts.CrashFollow = crashmem.Open(cfg.CrashMemory), ctx
	}
	d, err := fleet.New(fleet.Config{
		Node: cfg.Node, Pods: pods, Lib: cfg.Agent, Format: cfg.Format, Event: cfg.Event,
		Window: time.Duration(cfg.Window), SyncInterval: time.Duration(cfg.SyncInterval),
		Pusher: pusher, Options: opts, Logger: log, Metrics: metrics,
		Budget: readBack, MaxWindowBytes: cfg.MaxWindowBytes,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("safeattach-daemon serving", "addr", l.Addr().String(), "node", cfg.Node, "pyroscope", cfg.Pyroscope.URL != "")

	if *pprofListen != "" {
		dl, err := net.Listen("tcp", *pprofListen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		log.Info("pprof serving", "addr", dl.Addr().String())
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(dl)
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	// The pusher outlives the profilers: their last windows, taken at
	// shutdown, are sent before it stops (within drainTimeout).
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
