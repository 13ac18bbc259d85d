// Command safeattach-pprof converts a JFR recording to a gzipped pprof
// profile:
//
//	safeattach-pprof [-event cpu|wall|alloc|lock] [-start UNIXNANO] [-end UNIXNANO]
//	                 [-max-input BYTES] [-max-memory BYTES] [-max-output BYTES] [IN.jfr] > OUT.pb.gz
//
// It reads the recording from IN.jfr (a regular file, read once) or from
// standard input, and writes the profile to standard output; it prints
// the metric and the number of samples on standard error as its last
// line. It never opens an output file by name. A recording is the
// target's: before it reads a byte, the converter limits itself — the
// memory it may commit (RLIMIT_DATA, so that an allocation the parser is
// tricked into asking for fails here, not in the caller), the bytes it may write
// (RLIMIT_FSIZE), and its input (-max-input) — and its caller bounds its
// time (package jfrpprof/bounded does all of it from the other side).
//
// `safeattach profile -o pprof` runs it. It is a binary of its own so that
// the JFR and protobuf libraries it needs (about 10 MiB and 10 ms of
// start-up) are not part of every safeattach invocation, and so that a
// recording that makes the parser run away costs a child process.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/profiling/jfrpprof"
	"github.com/safeattach/safeattach/profiling/jfrpprof/bounded"
)

func main() {
	event := flag.String("event", "cpu", "the event sampled: picks the profile")
	startNs := flag.Int64("start", 0, "recording start, Unix nanoseconds")
	endNs := flag.Int64("end", 0, "recording end, Unix nanoseconds")
	maxInput := flag.Int64("max-input", bounded.DefaultLimits.Input, "largest recording read, in bytes")
	maxMemory := flag.Int64("max-memory", bounded.DefaultLimits.Memory, "memory this process may commit, in bytes (RLIMIT_DATA); 0 leaves it")
	maxOutput := flag.Int64("max-output", bounded.DefaultLimits.Output, "largest profile written, in bytes (RLIMIT_FSIZE); 0 leaves it")
	flag.Parse()
	if flag.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "usage: safeattach-pprof [-event E] [-start NS] [-end NS] [-max-input B] [-max-memory B] [-max-output B] [IN.jfr] > OUT.pb.gz")
		os.Exit(2)
	}
	if err := limitSelf(*maxMemory, *maxOutput); err != nil {
		fmt.Fprintln(os.Stderr, "safeattach-pprof:", err)
		os.Exit(1)
	}
	if err := run(*event, time.Unix(0, *startNs), time.Unix(0, *endNs), flag.Arg(0), *maxInput); err != nil {
		fmt.Fprintln(os.Stderr, "safeattach-pprof:", err)
		os.Exit(1)
	}
}

// limitSelf caps this process before it touches the recording.
// RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 it counts private writable
// mappings, which is what the Go runtime commits, while the address space
// it merely reserves (PROT_NONE, about 1.5 GiB for an idle Go program
// here) would make any useful RLIMIT_AS fail at random. The soft memory
// limit makes the collector work hard well before the hard one.
func limitSelf(memory, output int64) error {
	if memory > 0 {
		debug.SetMemoryLimit(memory / 2)
		if err := unix.Setrlimit(unix.RLIMIT_DATA, &unix.Rlimit{Cur: uint64(memory), Max: uint64(memory)}); err != nil {
			return fmt.Errorf("limit memory: %w", err)
		}
	}
	if output > 0 {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(output), Max: uint64(output)}); err != nil {
			return fmt.Errorf("limit output: %w", err)
		}
	}
	return nil
}

func run(event string, start, end time.Time, in string, maxInput int64) error {
	var data []byte
	if in != "" && in != "-" {
		f, err := safefile.Read(context.Background(), in, maxInput, safefile.Options{})
		if err != nil {
			return err
		}
		data = f.Data
	} else {
		var err error
		if data, err = io.ReadAll(io.LimitReader(os.Stdin, maxInput+1)); err != nil {
			return fmt.Errorf("read the recording: %w", err)
		}
		if int64(len(data)) > maxInput {
			return fmt.Errorf("the recording is larger than %d bytes", maxInput)
		}
	}
	if !end.After(start) {
		end = time.Now()
		start = end.Add(-time.Minute)
	}
	ps, err := jfrpprof.Convert(data, start, end)
	if err != nil {
		return err
	}
	data = nil
	p := jfrpprof.Pick(ps, event)
	enc, err := jfrpprof.Encode(p.Profile)
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(enc); err != nil {
		return fmt.Errorf("write the profile: %w", err)
	}
	// The last line says what the profile holds (jfrpprof/bounded reads
	// it): METRIC STACKS TOTAL TYPE UNIT, the total of the first value
	// over every stack (a count of stacks is not a count of samples).
	var total int64
	for _, s := range p.Profile.Sample {
		if len(s.Value) > 0 {
			total += s.Value[0]
		}
	}
	typ, unit := "samples", "count"
	if len(p.Profile.SampleType) > 0 {
		typ, unit = p.Profile.SampleType[0].Type, p.Profile.SampleType[0].Unit
	}
	fmt.Fprintf(os.Stderr, "%s %d %d %s %s\n", p.Metric, len(p.Profile.Sample), total, typ, unit)
	return nil
}
