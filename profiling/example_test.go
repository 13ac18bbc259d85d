package profiling_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/safeattach/safeattach/profiling"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// A pprof profile of a JVM, by the JVM's own Flight Recorder where the
// rules refuse async-profiler.
func ExampleProfile() {
	pid := 12345
	res, err := profiling.Profile(context.Background(), pid, profiling.ProfileRequest{
		SessionRequest: profiling.SessionRequest{
			Format:   "pprof",
			Profiler: asprof.Options{Event: "cpu"},
			Fallback: profiling.FlightRecorder,
			Output:   "cpu.pb.gz",
		},
		Duration: 30 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // a refusal is an *attach.RefusedError with the rules' verdict
		return
	}
	fmt.Println(res.Engine, res.FallbackFrom, res.Bytes)
}

// Continuous profiling: one window of pprof a minute until ctx ends,
// whatever engine profiles the JVM.
func ExampleOpen() {
	ctx := context.Background()
	p, err := profiling.Open(ctx, 12345, profiling.SessionRequest{Format: "pprof", Fallback: profiling.FlightRecorder})
	if err != nil {
		return
	}
	defer p.Close()
	_ = p.Windows(ctx, time.Minute, func(w *profiling.Window) error {
		if w.Err != nil {
			return nil // a window that could not be read back: dropped, the profiler goes on
		}
		_, err := io.Copy(io.Discard, w.Output) // push it somewhere
		return err
	})
}
