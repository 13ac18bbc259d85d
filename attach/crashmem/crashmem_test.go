package crashmem

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/preflight"
)

// TestOneScopeCannotFillTheStore: a tenant that crashes its own JVMs
// again and again, with a long executable path and a long crash log,
// keeps only its share of the store: another scope's crash is still
// found, every lookup still works, and the file stays readable.
func TestOneScopeCannotFillTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crashes.json")
	s := Open(path)
	report := func(exe string) *preflight.Report {
		r := &preflight.Report{}
		r.Process.Exe, r.JVM.MainClass = exe, "Main"
		return r
	}
	victim := Workload(report("/usr/bin/java"), "team-b")
	if err := s.Record(Entry{Workload: victim, Scope: "team-b", Time: time.Now().Add(-time.Hour), Evidence: "hs_err_pid1.log"}); err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("x", 3000)
	for i := range 3 * maxPerScope {
		w := Workload(report(long+string(rune('a'+i%26))+strings.Repeat("y", i)), "team-a")
		if len(w) > maxWorkloadKey {
			t.Fatalf("a workload key of %d bytes", len(w))
		}
		if err := s.Record(Entry{Workload: w, Scope: "team-a", Time: time.Now(), Evidence: strings.Repeat("z", 100_000)}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	e, err := s.Lookup(victim)
	if err != nil || e == nil {
		t.Fatalf("team-b's crash after team-a's flood: %v %v", e, err)
	}
	es, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range es {
		if x.Scope == "team-a" {
			n++
		}
		if len(x.Evidence) > maxEvidence+len("…") {
			t.Errorf("evidence of %d bytes kept", len(x.Evidence))
		}
	}
	if n > maxPerScope {
		t.Errorf("team-a keeps %d entries, want at most %d", n, maxPerScope)
	}
	if fi, _ := os.Stat(path); fi.Size() > maxStoreSize {
		t.Errorf("the store grew to %d bytes", fi.Size())
	}
	// The same long workload is the same key: a lookup finds it.
	w := Workload(report(long+"a"), "team-a")
	if Workload(report(long+"a"), "team-a") != w || Workload(report(long+"b"), "team-a") == w {
		t.Error("long workload keys are not one per workload")
	}
}
