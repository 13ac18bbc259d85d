package preflight

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

func TestLiveScan(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	plain := testenv.StartJVM(t, testenv.JVMSpec{})
	risky := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true"}})
	sleeper := testenv.StartSleeper(t)
	res, err := Scan(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, r := range res.JVMs {
		pids = append(pids, r.PID)
		if r.PID == risky.PID && r.Jemalloc.Prof.State != ProfActive {
			t.Errorf("risky JVM's report: %+v", r.Jemalloc)
		}
	}
	if !slices.Contains(pids, plain.PID) || !slices.Contains(pids, risky.PID) || slices.Contains(pids, sleeper.PID) {
		t.Errorf("scan found %v; want %d and %d, not %d", pids, plain.PID, risky.PID, sleeper.PID)
	}
	if res.Processes < 3 || res.NotJVM < 1 {
		t.Errorf("counts %+v", res)
	}
}

// BenchmarkScan300 scans a host with 300 processes: 6 JVMs (plain,
// jemalloc heap profiling, tcmalloc heap profiling) and 294 others. It
// reports the median; the README quotes it.
func BenchmarkScan300(b *testing.B) {
	je := testenv.Library(b, "libjemalloc.so.2")
	tc := testenv.Library(b, "libtcmalloc.so.4")
	envs := [][]string{nil, nil, nil, {"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true"}, {"LD_PRELOAD=" + je}, {"LD_PRELOAD=" + tc, "HEAPPROFILE=hp"}}
	for _, env := range envs {
		testenv.StartJVM(b, testenv.JVMSpec{Env: env})
	}
	res, err := Scan(context.Background(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := res.Processes; i < 300; i++ {
		testenv.Start(b, exec.Command("/bin/sleep", "3600"))
	}
	b.ResetTimer()
	b.ReportAllocs()
	var samples []time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := Scan(context.Background(), Options{})
		if err != nil || len(res.JVMs) < len(envs) {
			b.Fatalf("%v %d", err, len(res.JVMs))
		}
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
}
