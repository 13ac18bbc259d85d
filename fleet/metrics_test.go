package fleet

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling"
)

// scrape parses what h serves on /metrics, as Prometheus would.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return testenv.ParseMetrics(t, rec.Body)
}

// metric is the value now of the sample of m named name with the given
// labels, read from m's registry as a scrape would (0 when there is no
// such sample: a counter never incremented has none). Tests read the
// metrics this way, through the registry the agent serves, not through
// an accessor of their own.
func metric(t testing.TB, m *Metrics, name string, labels ...string) float64 {
	t.Helper()
	v, _ := testenv.MetricValue(gathered(t, m), name, labels...)
	return v
}

// gathered is what m's registry holds now, by family name.
func gathered(t testing.TB, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gathering the metrics: %v", err)
	}
	fams := make(map[string]*dto.MetricFamily, len(list))
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// ownMetrics is the agent's own samples (safeattach_*) in the text
// format, for a failure message.
func ownMetrics(t testing.TB, m *Metrics) string {
	t.Helper()
	var b strings.Builder
	fams := gathered(t, m)
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		if strings.HasPrefix(name, "safeattach_") {
			if _, err := expfmt.MetricFamilyToText(&b, fams[name]); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	return b.String()
}

// TestMetricsExposition: the counters, the latency histograms, the
// sessions by pod, build_info and the process and Go collectors are all
// served and parse; a label value with quotes and backslashes survives.
func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.attach("ok", 40*time.Millisecond)
	m.attach("refused", 5*time.Millisecond)
	m.refusal("jemalloc-prof-active")
	m.refusal(`we"ird\rule`)
	m.window("ok", profiling.AsyncProfiler)
	m.ObservePush(12*time.Millisecond, 200, nil)
	m.ObservePush(time.Second, 503, nil)
	w := wanted{}
	w.pod.Namespace, w.pod.Name, w.container.Name = "shop", "orders-1", "app"
	m.sessionStarted(w)
	fams := scrape(t, m.Handler())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"safeattach_attaches_total", []string{"outcome", "refused"}, 1},
		{"safeattach_refusals_total", []string{"rule", "jemalloc-prof-active"}, 1},
		{"safeattach_refusals_total", []string{"rule", `we"ird\rule`}, 1},
		{"safeattach_attach_duration_seconds", []string{"outcome", "ok"}, 1},
		{"safeattach_push_duration_seconds", []string{"result", "retry"}, 1},
		{"safeattach_push_duration_seconds", []string{"result", "ok"}, 1},
		{"safeattach_session", []string{"namespace", "shop", "pod", "orders-1", "container", "app"}, 1},
		{"safeattach_sessions_active", nil, 0},
		{"safeattach_build_info", nil, 1},
	} {
		if got, ok := testenv.MetricValue(fams, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s is not exported", name)
		}
	}
	m.sessionEnded(w)
	if _, ok := testenv.MetricValue(scrape(t, m.Handler()), "safeattach_session", "pod", "orders-1"); ok {
		t.Error("an ended session is still exported")
	}
	if metric(t, m, "safeattach_attaches_total", "outcome", "ok") != 1 ||
		metric(t, m, "safeattach_refusals_total", "rule", "jemalloc-prof-active") != 1 ||
		metric(t, m, "safeattach_profile_windows_total", "result", "ok") != 1 {
		t.Errorf("the registry does not hold what was counted:\n%s", ownMetrics(t, m))
	}
	var b strings.Builder
	for name := range fams {
		b.WriteString(name + " ")
	}
	t.Logf("families: %s", b.String())
}
