package attach

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
)

// BenchmarkJcmdWarm measures a warm round trip (listener already up) of
// "jcmd VM.version": through the safe door (inspection + rules +
// protocol) and through the raw protocol alone. It reports the median,
// which the README quotes.
func BenchmarkJcmdWarm(b *testing.B) {
	p := testenv.StartJVM(b, testenv.JVMSpec{})
	if _, err := Jcmd(context.Background(), p.PID, "VM.version", Options{}); err != nil {
		b.Fatal(err)
	}
	b.Run("safe-door", func(b *testing.B) {
		b.ReportAllocs()
		var samples []time.Duration
		for b.Loop() {
			start := time.Now()
			if _, err := Jcmd(context.Background(), p.PID, "VM.version", Options{}); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		reportMedian(b, samples)
	})
	b.Run("protocol-only", func(b *testing.B) {
		t, err := hotspot.NewTarget(p.PID)
		if err != nil {
			b.Fatal(err)
		}
		t.Feature = 17
		c := hotspot.NewClient(t)
		b.ReportAllocs()
		var samples []time.Duration
		for b.Loop() {
			start := time.Now()
			if _, err := c.Run(context.Background(), "jcmd", "VM.version"); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
		reportMedian(b, samples)
	})
}

func reportMedian(b *testing.B, samples []time.Duration) {
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
}
