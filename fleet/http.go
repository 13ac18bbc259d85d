package fleet

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

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
	mux.Handle("GET /metrics", d.notOverPortForward(d.cfg.Metrics.Handler()))
	return accessLog(d.cfg.Logger, mux)
}

// notOverPortForward refuses (403) a request that arrived over the pod's
// loopback (Config.InPod) while the on-demand API is served. Whoever may port-forward to
// the node agent's pod, to reach that API, reaches every port of it, and
// a port-forward dials the port on the pod's loopback (containerd and
// CRI-O both do): /metrics names the pods profiled on the node, in every
// namespace, which is not theirs to see. Prometheus and the kubelet's
// probes come over the pod network and are answered as before.
func (d *Daemon) notOverPortForward(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		onDemand := len(d.stopOnDemand) > 0 && d.cfg.InPod
		d.mu.Unlock()
		if ip := net.ParseIP(remoteHost(r.RemoteAddr)); onDemand && ip != nil && ip.IsLoopback() {
			http.Error(w, "forbidden: /metrics is not served over the pod's loopback (a port-forward) while the on-demand API is on; scrape the pod's IP", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
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
