package fleet

import (
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/safeattach/safeattach/profiling"
	"github.com/safeattach/safeattach/pyroscope"
)

// Metrics is what the agent exports on /metrics: its own counters,
// histograms of attach and push latency, the sessions by pod, and the
// process and Go runtime collectors operators alert on for a DaemonSet.
// Make one with NewMetrics; each has a registry of its own.
type Metrics struct {
	reg *prometheus.Registry

	attaches  *prometheus.CounterVec // by outcome
	refusals  *prometheus.CounterVec // by rule ID
	windows   *prometheus.CounterVec // by result and engine
	fallbacks *prometheus.CounterVec // by the rule that refused async-profiler, and the engine instead
	hangs     prometheus.Counter
	builds    *prometheus.CounterVec // by agent (Config.Agents)
	active    prometheus.Gauge
	syncs     prometheus.Counter
	syncFails prometheus.Counter
	sessions  *prometheus.GaugeVec // namespace, pod, container → 1
	attachDur *prometheus.HistogramVec
	pushDur   *prometheus.HistogramVec
	onDemands *prometheus.CounterVec // on-demand API requests by result
	onRunning prometheus.Gauge

	pusherOnce sync.Once
}

// Latency buckets: an attach is tens of milliseconds to the attach
// timeout (a hang); a push is a request to a backend, retried.
var (
	attachBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	pushBuckets   = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// NewMetrics registers every metric on a registry of its own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		attaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_attaches_total", Help: "Attach attempts by outcome (ok, refused, failed, timed-out, ...).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_refusals_total", Help: "Refusals by the rule that refused.",
		}, []string{"rule"}),
		windows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_profile_windows_total", Help: "Profile windows finished, by result (ok, empty, error; over-budget and invalid: read back from the JVM and dropped) and engine (async-profiler, jfr).",
		}, []string{"result", "engine"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_fallbacks_total", Help: "JVMs profiled by another engine because the rules refused async-profiler, by the refusing rule and the engine used instead.",
		}, []string{"rule", "engine"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_agent_builds_total", Help: "Profilers started, by the async-profiler build loaded (Config.Agents: the first the rules allow for the JVM).",
		}, []string{"agent"}),
		hangs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safeattach_hang_reports_total", Help: "Attaches that hung and were ended with a hang report.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safeattach_sessions_active", Help: "JVMs being profiled now.",
		}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safeattach_pod_syncs_total", Help: "Synchronisations of the profilers with the node's pods.",
		}),
		syncFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safeattach_pod_sync_failures_total", Help: "Synchronisations that could not read the pods.",
		}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "safeattach_session", Help: "1 for every container whose JVM is being profiled.",
		}, []string{"namespace", "pod", "container"}),
		attachDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "safeattach_attach_duration_seconds", Help: "Time from judging a JVM to its profiler started (or the refusal), by outcome.", Buckets: attachBuckets,
		}, []string{"outcome"}),
		pushDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "safeattach_push_duration_seconds", Help: "One push request to the profiling backend, by result (ok, rejected, retry).", Buckets: pushBuckets,
		}, []string{"result"}),
		onDemands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeattach_ondemand_requests_total", Help: "On-demand profiling API requests by result (ok, allowed, started, expired, unauthenticated, forbidden, bad-request, not-found, too-many, busy, refused, timed-out, cancelled, failed, error).",
		}, []string{"result"}),
		onRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safeattach_ondemand_profiles_running", Help: "On-demand profiles running now.",
		}),
	}
	version, goVersion := buildVersion()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "safeattach_build_info", Help: "1, labelled with the build's version and Go version.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, goVersion).Set(1)
	m.reg.MustRegister(m.attaches, m.refusals, m.builds, m.windows, m.fallbacks, m.hangs, m.active, m.syncs, m.syncFails,
		m.sessions, m.attachDur, m.pushDur, m.onDemands, m.onRunning, build,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

// buildVersion is the main module's version as the Go toolchain recorded
// it (a tag, or a pseudo-version from the VCS stamp), and the Go version.
func buildVersion() (version, goVersion string) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "unknown"
	}
	version = info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && (version == "" || version == "(devel)") {
			version = s.Value[:min(12, len(s.Value))]
		}
	}
	if version == "" {
		version = "(devel)"
	}
	return version, info.GoVersion
}

// Registry is where the metrics are registered: an embedder may add its
// own, or gather from it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the exposition format the scraper asks
// for (the text format by default).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) attach(outcome string, took time.Duration) {
	m.attaches.WithLabelValues(outcome).Inc()
	m.attachDur.WithLabelValues(outcome).Observe(took.Seconds())
}
func (m *Metrics) refusal(rule string) { m.refusals.WithLabelValues(rule).Inc() }
func (m *Metrics) window(result string, engine profiling.Engine) {
	m.windows.WithLabelValues(result, string(engine)).Inc()
}
func (m *Metrics) fallback(rule string, engine profiling.Engine) {
	m.fallbacks.WithLabelValues(rule, string(engine)).Inc()
}
func (m *Metrics) hang()              { m.hangs.Inc() }
func (m *Metrics) setActive(n int)    { m.active.Set(float64(n)) }
func (m *Metrics) build(agent string) { m.builds.WithLabelValues(agent).Inc() }

func (m *Metrics) onDemand(result string)    { m.onDemands.WithLabelValues(result).Inc() }
func (m *Metrics) onDemandRunning(delta int) { m.onRunning.Add(float64(delta)) }

func (m *Metrics) synced(ok bool) {
	m.syncs.Inc()
	if !ok {
		m.syncFails.Inc()
	}
}

func (m *Metrics) sessionStarted(w wanted) {
	m.sessions.WithLabelValues(w.pod.Namespace, w.pod.Name, w.container.Name).Set(1)
}

func (m *Metrics) sessionEnded(w wanted) {
	m.sessions.DeleteLabelValues(w.pod.Namespace, w.pod.Name, w.container.Name)
}

// ObservePush observes one push request: give it to the pusher as
// pyroscope.Config.Observe.
func (m *Metrics) ObservePush(took time.Duration, status int, err error) {
	result := "ok"
	switch {
	case err != nil || status == http.StatusTooManyRequests || status >= 500:
		result = "retry"
	case status >= 300:
		result = "rejected"
	}
	m.pushDur.WithLabelValues(result).Observe(took.Seconds())
}

// watchPusher exports the pusher's counters, read when scraped.
func (m *Metrics) watchPusher(p *pyroscope.Pusher) {
	if p == nil {
		return
	}
	m.pusherOnce.Do(func() {
		counter := func(name, help string, v func(pyroscope.Stats) int) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(p.Stats())) })
		}
		m.reg.MustRegister(
			counter("safeattach_push_sent_total", "Windows accepted by the backend.", func(s pyroscope.Stats) int { return s.Sent }),
			counter("safeattach_push_retries_total", "Push attempts retried (429, 5xx, network).", func(s pyroscope.Stats) int { return s.Retries }),
			counter("safeattach_push_failures_total", "Windows the backend rejected for good (4xx).", func(s pyroscope.Stats) int { return s.Rejected }),
			counter("safeattach_push_dropped_total", "Windows dropped oldest-first from a full queue.", func(s pyroscope.Stats) int { return s.Dropped }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "safeattach_push_queue_length", Help: "Windows waiting to be pushed."},
				func() float64 { return float64(p.Stats().Queued) }),
		)
	})
}
