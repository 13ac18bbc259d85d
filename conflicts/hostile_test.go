package conflicts

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

// TestHostileRuleFiles: a rule file that is a FIFO, a directory, a device,
// an 8 GiB sparse file or an alias bomb is refused promptly with a clear
// error, and none of them makes the process allocate more than a few MiB.
func TestHostileRuleFiles(t *testing.T) {
	dir, fifo, sparse := testenv.HostileFiles(t)
	for _, tc := range []struct {
		name, path, want string
		is               error
	}{
		{"fifo", fifo, "a FIFO", safefile.ErrNotRegular},
		{"directory", dir, "a directory", safefile.ErrNotRegular},
		{"/dev/zero", "/dev/zero", "a character device", safefile.ErrNotRegular},
		{"sparse 8 GiB", sparse, "file too large", safefile.ErrTooLarge},
		{"alias bomb", "testdata/hostile/alias-bomb.yaml", "expand to more than", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Load(ctx, tc.path)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Load(%s) = %v, want %q", tc.path, err, tc.want)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("error is not one line: %q", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("allocated %d MiB for a hostile rule file", grew>>20)
			}
			if ctx.Err() != nil {
				t.Error("used the whole deadline")
			}
		})
	}
}

func TestHardRulesCannotBeAcknowledged(t *testing.T) {
	for _, id := range []string{"not-a-jvm", "sigquit-not-handled", "attach-socket-untrusted", "agent-untrusted", "process-stopped", "profiler-already-loaded", "credentials-mismatch"} {
		err := Default().CheckAcks([]string{id})
		if err == nil || !strings.Contains(err.Error(), "cannot be acknowledged") {
			t.Errorf("--ack %s: %v", id, err)
		}
	}
	if err := Default().CheckAcks([]string{"jemalloc-heap-profiler", "tcmalloc-heap-profiler"}); err != nil {
		t.Errorf("hazard rules must be acknowledgeable: %v", err)
	}
	if err := Default().CheckAcks([]string{"jemalloc-heap-profiller"}); err == nil || !strings.Contains(err.Error(), "did you mean jemalloc-heap-profiler") {
		t.Errorf("misspelt ack: %v", err)
	}
	// Even if a caller skips CheckAcks, Evaluate does not honour the ack.
	r := loadJSON[preflight.Report](t, "testdata/reports/not-a-jvm.json")
	v := Evaluate(r, nil, Policy{Acks: []string{"not-a-jvm"}})
	if v.Allowed || len(v.Acknowledged) != 0 {
		t.Errorf("a hard rule was acknowledged: %+v", v)
	}
}

func TestEvaluateWithoutAReportRefuses(t *testing.T) {
	for name, r := range map[string]*preflight.Report{"nil": nil, "empty": {}} {
		v := Evaluate(r, nil, Policy{})
		if v.Allowed || len(v.Findings) != 1 || v.Findings[0].Rule != RuleNoReport || !v.Findings[0].Undetermined {
			t.Errorf("%s report: %+v", name, v)
		}
	}
}
