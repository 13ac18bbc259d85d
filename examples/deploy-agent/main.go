// Command deploy-agent is a small daemon as a deployment agent would embed
// safeattach: an HTTP API on a loopback address to list the JVMs on the
// host, judge an attach, and take profiles, with a limit on concurrent
// profiles, one attach at a time per JVM, graceful shutdown that stops
// running profiles cleanly, and a JSON-lines audit log.
//
//	go run ./examples/deploy-agent -listen 127.0.0.1:7070 -lib /opt/async-profiler/lib/libasyncProfiler.so -audit audit.jsonl
//
//	GET  /jvms            every JVM with its verdict
//	GET  /check?pid=N     the full verdict for N
//	POST /profile         {"pid":N,"event":"cpu","duration":"10s","format":"collapsed"}
//	                      → 200 with the profile, or 409 with the refusal's findings
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7070", "address to serve on (keep it on loopback)")
	lib := flag.String("lib", "", "async-profiler library (default: the installed one)")
	auditPath := flag.String("audit", "audit.jsonl", "audit log file (JSON lines)")
	maxProfiles := flag.Int("max-profiles", 2, "profiles that may run at once")
	converter := flag.String("converter", "", "safeattach-pprof, for pprof output (default: beside this program or on PATH)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	audit, err := os.OpenFile(*auditPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		log.Error("audit log", "error", err)
		os.Exit(1)
	}
	defer audit.Close()
	srv := newServer(config{Lib: *lib, Converter: *converter, MaxProfiles: *maxProfiles, Audit: audit, Logger: log})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "error", err)
		os.Exit(1)
	}
	log.Info("deploy-agent serving", "addr", l.Addr().String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		log.Error("serve", "error", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	log.Info("shutting down: stopping running profiles")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("shutdown", "error", err)
	}
}
