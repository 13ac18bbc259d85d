package fleet

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/safeattach/safeattach/pyroscope"
)

// Metrics counts what the agent did. The zero value is ready.
type Metrics struct {
	mu        sync.Mutex
	attaches  map[string]uint64 // by outcome
	refusals  map[string]uint64 // by rule ID
	windows   map[string]uint64 // by result: ok, empty, error
	hangs     uint64
	active    int
	syncs     uint64
	syncFails uint64
	pusher    *pyroscope.Pusher
}

func (m *Metrics) add(table *map[string]uint64, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if *table == nil {
		*table = map[string]uint64{}
	}
	(*table)[key]++
}

func (m *Metrics) attach(outcome string) { m.add(&m.attaches, outcome) }
func (m *Metrics) refusal(rule string)   { m.add(&m.refusals, rule) }
func (m *Metrics) window(result string)  { m.add(&m.windows, result) }

func (m *Metrics) hang() {
	m.mu.Lock()
	m.hangs++
	m.mu.Unlock()
}

func (m *Metrics) setActive(n int) {
	m.mu.Lock()
	m.active = n
	m.mu.Unlock()
}

func (m *Metrics) synced(ok bool) {
	m.mu.Lock()
	m.syncs++
	if !ok {
		m.syncFails++
	}
	m.mu.Unlock()
}

// Snapshot returns the counters by name, for tests and status pages:
// "attaches/ok", "refusals/<rule>", "windows/ok", "hangs", "active".
func (m *Metrics) Snapshot() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]uint64{"hangs": m.hangs, "active": uint64(m.active)}
	for k, v := range m.attaches {
		out["attaches/"+k] = v
	}
	for k, v := range m.refusals {
		out["refusals/"+k] = v
	}
	for k, v := range m.windows {
		out["windows/"+k] = v
	}
	return out
}

// ContentType is the Prometheus text exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteTo writes every metric in the Prometheus text format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	m.mu.Lock()
	family(&b, "safeattach_attaches_total", "counter", "Attach attempts by outcome (ok, refused, failed, timed-out, ...).", "outcome", m.attaches)
	family(&b, "safeattach_refusals_total", "counter", "Refusals by the rule that refused.", "rule", m.refusals)
	family(&b, "safeattach_profile_windows_total", "counter", "Profile windows finished, by result (ok, empty, error; over-budget and invalid: read back from the JVM and dropped).", "result", m.windows)
	scalar(&b, "safeattach_hang_reports_total", "counter", "Attaches that hung and were ended with a hang report.", m.hangs)
	scalar(&b, "safeattach_sessions_active", "gauge", "JVMs being profiled now.", uint64(m.active))
	scalar(&b, "safeattach_pod_syncs_total", "counter", "Pod list synchronisations.", m.syncs)
	scalar(&b, "safeattach_pod_sync_failures_total", "counter", "Pod list synchronisations that failed.", m.syncFails)
	pusher := m.pusher
	m.mu.Unlock()
	if pusher != nil {
		s := pusher.Stats()
		scalar(&b, "safeattach_push_sent_total", "counter", "Windows accepted by the backend.", uint64(s.Sent))
		scalar(&b, "safeattach_push_retries_total", "counter", "Push attempts retried (429, 5xx, network).", uint64(s.Retries))
		scalar(&b, "safeattach_push_failures_total", "counter", "Windows the backend rejected for good (4xx).", uint64(s.Rejected))
		scalar(&b, "safeattach_push_dropped_total", "counter", "Windows dropped oldest-first from a full queue.", uint64(s.Dropped))
		scalar(&b, "safeattach_push_queue_length", "gauge", "Windows waiting to be pushed.", uint64(s.Queued))
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func header(b *strings.Builder, name, kind, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

func scalar(b *strings.Builder, name, kind, help string, v uint64) {
	header(b, name, kind, help)
	fmt.Fprintf(b, "%s %d\n", name, v)
}

func family(b *strings.Builder, name, kind, help, label string, values map[string]uint64) {
	header(b, name, kind, help)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s{%s=%s} %d\n", name, label, quoteLabel(k), values[k])
	}
}

// quoteLabel escapes a label value as the text format requires:
// backslash, double quote and newline.
func quoteLabel(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(v) + `"`
}
