package attach

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
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
		t, err := hotspot.NewJVM(p.PID)
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

// BenchmarkLoadReusingCopy measures the whole safe-door load of an agent
// whose content-addressed copy already exists in the target (the common
// case for a daemon attaching to many JVMs): one read and hash of the
// agent, inspection, verification of the copy, load, health check.
func BenchmarkLoadReusingCopy(b *testing.B) {
	p := testenv.StartJVM(b, testenv.JVMSpec{})
	lib := testenv.BuildAgent(b, testenv.AgentRecordOptions)
	if _, err := Load(context.Background(), p.PID, lib, "", Options{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(context.Background(), p.PID, lib, "", Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliverFirstCopy measures writing and verifying a fresh copy
// of a 1 MiB agent into a store (the first load of a build into a
// container).
func BenchmarkDeliverFirstCopy(b *testing.B) {
	dir := b.TempDir()
	content := make([]byte, 1<<20)
	for i := range content {
		content[i] = byte(i * 7)
	}
	sum := sha256.Sum256(content)
	a := &preflight.Agent{RealPath: "/x/libasyncProfiler.so", SHA256: hex.EncodeToString(sum[:])}
	r := &preflight.Report{}
	r.Process.Root = dir
	b.ReportAllocs()
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		d := &delivery{}
		if err := d.storeIn(context.Background(), r, a, content, "/"); err != nil {
			b.Fatal(err)
		}
		d.release(0, false)
	}
}
