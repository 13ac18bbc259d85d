package attach

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/diagnose"
	"github.com/safeattach/safeattach/internal/testenv"
)

// The incident (docs/deadlocks.md, "The incident"), reproduced with
// Debian's own allocators and the look-alike of an affected
// async-profiler build: an agent that allocates inside dl_iterate_phdr,
// attached to a JVM whose allocator captures stacks with libunwind, while
// four threads churn native memory.
type incidentSetup struct {
	name string
	env  func(t *testing.T) []string
	rule string
	// hangs says whether the unchecked attach deadlocks this set-up
	// (measured: tcmalloc+HEAPPROFILE 5/5, libunwind-first jemalloc with
	// prof:true 3/3; prof_active:false, libgcc jemalloc, glibc 0/3).
	hangs bool
}

var incidentSetups = []incidentSetup{
	{"tcmalloc-heapprofile", func(t *testing.T) []string {
		return []string{"LD_PRELOAD=" + testenv.Library(t, "libtcmalloc.so.4"), "HEAPPROFILE=hp"}
	}, "tcmalloc-heap-profiler", true},
	{"jemalloc-libunwind-prof", func(t *testing.T) []string {
		return []string{"LD_PRELOAD=" + testenv.Library(t, "libunwind.so.8") + " " + testenv.Library(t, "libjemalloc.so.2"), "MALLOC_CONF=prof:true"}
	}, "jemalloc-heap-profiler", true},
	{"jemalloc-prof-idle", func(t *testing.T) []string {
		return []string{"LD_PRELOAD=" + testenv.Library(t, "libunwind.so.8") + " " + testenv.Library(t, "libjemalloc.so.2"), "MALLOC_CONF=prof:true,prof_active:false"}
	}, "", false},
	{"jemalloc-libgcc-prof", func(t *testing.T) []string {
		return []string{"LD_PRELOAD=" + testenv.Library(t, "libjemalloc.so.2"), "MALLOC_CONF=prof:true,lg_prof_sample:0"}
	}, "", false},
	{"glibc", func(t *testing.T) []string { return nil }, "", false},
}

const churnWorkers = 4

func startIncidentJVM(t *testing.T, s incidentSetup) *testenv.Process {
	return testenv.StartJVM(t, testenv.JVMSpec{Env: s.env(t), Workers: churnWorkers})
}

// rawLoad is the unchecked path: the protocol alone, as jattach would do.
func rawLoad(t *testing.T, pid int, agent string, deadline time.Duration) error {
	tg, err := hotspot.NewJVM(pid)
	if err != nil {
		t.Fatal(err)
	}
	tg.Feature = 17
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := hotspot.EnsureListener(ctx, tg); err != nil {
		return err
	}
	_, err = hotspot.NewClient(tg).Load(ctx, agent, "")
	return err
}

// progress reads the target's worker progress counter through the attach
// socket (jcmd VM.system_properties): it answers, and its threads work.
func progress(t *testing.T, pid int) int64 {
	t.Helper()
	// A JVM under tcmalloc's heap profiler, on a machine running the
	// whole suite, can take many seconds to answer: slow, not hung. The
	// deadline only has to tell that apart from a JVM that never answers.
	res, err := Jcmd(context.Background(), pid, "VM.system_properties", Options{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("the JVM no longer answers jcmd: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(res.Output))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "safeattach.progress="); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

// requireServing: jcmd answers and the workers make progress (the JVM's
// main thread publishes their count every second), polled until it
// grows, bounded at 60 s.
func requireServing(t *testing.T, pid int) {
	t.Helper()
	a := progress(t, pid)
	deadline := time.Now().Add(60 * time.Second)
	for {
		time.Sleep(250 * time.Millisecond)
		b := progress(t, pid)
		if b > a {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers made no progress in 60 s: %d then %d", a, b)
		}
	}
}

// TestIncident proves the protection against the real failure, per
// set-up: (1) the unchecked attach of the affected look-alike hangs the
// JVM where the knowledge base says it will, and the hang report explains
// it; (2) attach.Load refuses it, sends nothing, and the JVM keeps
// serving; (3) the fixed-build look-alike attaches and the JVM stays
// healthy. Where the set-up is safe, the unchecked attach completes.
func TestIncident(t *testing.T) {
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	for _, s := range incidentSetups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			if !s.hangs {
				p := startIncidentJVM(t, s)
				if err := rawLoad(t, p.PID, affected, 60*time.Second); err != nil {
					t.Fatalf("the unchecked attach failed where it should complete: %v", err)
				}
				requireServing(t, p.PID)
				return
			}
			t.Run("control-unchecked-attach-hangs", func(t *testing.T) {
				// Up to three fresh JVMs: the reproducer hung 5 of 5 and 3 of 3
				// here; one hang proves it is real.
				for attempt := 1; attempt <= 3; attempt++ {
					p := startIncidentJVM(t, s)
					time.Sleep(time.Second)
					err := rawLoad(t, p.PID, affected, 8*time.Second)
					if err == nil {
						t.Logf("attempt %d: the unchecked attach completed", attempt)
						p.Cmd.Process.Kill()
						continue
					}
					if !errors.Is(err, hotspot.ErrTimeout) {
						t.Fatalf("attempt %d: %v", attempt, err)
					}
					rep, derr := diagnose.Diagnose(context.Background(), p.PID, diagnose.Options{Sample: time.Second})
					if derr != nil {
						t.Fatal(derr)
					}
					if rep.State != diagnose.Hung || rep.Pattern != "loader-lock-allocator-deadlock" {
						js, _ := json.MarshalIndent(rep, "", " ")
						t.Errorf("hang report: verdict %s pattern %q: %s\n%s", rep.State, rep.Pattern, rep.Conclusion, js)
					}
					// jcmd stops answering too: the listener is stuck in the load.
					if _, err := Jcmd(context.Background(), p.PID, "VM.version", Options{Timeout: 2 * time.Second}); err == nil {
						t.Error("a hung JVM answered jcmd")
					}
					t.Logf("attempt %d: hung; %s", attempt, rep.Conclusion)
					return // cleanup kills the hung JVM
				}
				t.Fatal("the reproducer did not hang in 3 attempts")
			})
			t.Run("safe-door-refuses-and-fixed-build-attaches", func(t *testing.T) {
				p := startIncidentJVM(t, s)
				_, err := Load(context.Background(), p.PID, affected, "", Options{})
				refusedBy(t, err, s.rule)
				requireNothingSent(t, p)
				requireServing(t, p.PID)
				res, err := Load(context.Background(), p.PID, fixed, "", Options{})
				if err != nil || !res.Healthy {
					t.Fatalf("fixed look-alike: %v", err)
				}
				if !hasInfo(res, s.rule) {
					t.Errorf("no info finding from %s explaining why the fixed build is safe: %+v", s.rule, res.Verdict.Findings)
				}
				requireServing(t, p.PID)
			})
		})
	}
}

func hasInfo(r *Result, rule string) bool {
	for _, f := range r.Verdict.Findings {
		if f.Rule == rule && f.Severity == "info" {
			return true
		}
	}
	return false
}

// TestIncidentHangRate measures how often the unchecked attach hangs each
// set-up. It is a measurement, run on demand:
//
//	SAFEATTACH_HANG_ATTEMPTS=5 go test ./attach -run HangRate -v -timeout 30m
func TestIncidentHangRate(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SAFEATTACH_HANG_ATTEMPTS"))
	if n <= 0 {
		testenv.Optional(t, "a measurement: set SAFEATTACH_HANG_ATTEMPTS to run it")
	}
	affected := testenv.BuildAgent(t, testenv.AgentAffectedLookalike)
	var table bytes.Buffer
	fmt.Fprintf(&table, "| set-up | attempts | hung |\n|---|---|---|\n")
	for _, s := range incidentSetups {
		hung := 0
		for i := 0; i < n; i++ {
			func() {
				p := startIncidentJVM(t, s)
				defer p.Cmd.Process.Kill()
				time.Sleep(time.Second)
				if err := rawLoad(t, p.PID, affected, 15*time.Second); errors.Is(err, hotspot.ErrTimeout) {
					hung++
				}
			}()
		}
		fmt.Fprintf(&table, "| %s | %d | %d |\n", s.name, n, hung)
	}
	t.Log("\n" + table.String())
}
