package preflight

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/elfx"

	"github.com/safeattach/safeattach/internal/testenv"
)

// BenchmarkInspect inspects a live, idle JDK 17 JVM. "warm" reuses the ELF
// cache as a long-running daemon does; "cold" empties it before every
// inspection, as a one-shot CLI run starts. Besides the mean (ns/op) it
// reports the median, which the README quotes.
func BenchmarkInspect(b *testing.B) {
	p := testenv.StartJVM(b, testenv.JVMSpec{})
	for _, mode := range []string{"warm", "cold"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			var samples []time.Duration
			for b.Loop() {
				if mode == "cold" {
					elfx.Shared().Reset()
				}
				start := time.Now()
				if _, err := Inspect(context.Background(), p.PID, Options{}); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
		})
	}
}
