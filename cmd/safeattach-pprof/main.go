// Command safeattach-pprof converts a JFR recording to a gzipped pprof
// profile, or to async-profiler's text and flame graph outputs:
//
//	safeattach-pprof [-o pprof|collapsed|flat[=N]|html] [-event cpu|wall|alloc|lock]
//	                 [-start UNIXNANO] [-end UNIXNANO]
//	                 [-max-input BYTES] [-max-memory BYTES] [-max-output BYTES] [IN.jfr] > OUT
//
// -o picks the output: pprof (the default), a gzipped profile.proto;
// collapsed, folded stacks (`frame;frame;frame count`, root first);
// flat, the N methods (default 20) with the most self samples as a text
// table; html, an interactive flame graph in one self-contained page.
// The text and HTML outputs count samples and name Java frames
// pkg.Class.method; they say which engine made the recording (the JDK's
// Flight Recorder sees Java frames only).
//
// It reads the recording from IN.jfr (a regular file, read once) or from
// standard input, and writes the output to standard output; whatever
// the format, its last line on standard error says what the profile
// holds: METRIC STACKS TOTAL TYPE UNIT. It never opens an output file by
// name. A recording is the
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
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/profiling/jfrpprof"
	"github.com/safeattach/safeattach/profiling/jfrpprof/bounded"
)

func main() {
	format := flag.String("o", "pprof", "the output: pprof, collapsed, flat[=N] or html")
	event := flag.String("event", "cpu", "the event sampled: picks the profile")
	startNs := flag.Int64("start", 0, "recording start, Unix nanoseconds")
	endNs := flag.Int64("end", 0, "recording end, Unix nanoseconds")
	maxInput := flag.Int64("max-input", bounded.DefaultLimits.Input, "largest recording read, in bytes")
	maxMemory := flag.Int64("max-memory", bounded.DefaultLimits.Memory, "memory this process may commit, in bytes (RLIMIT_DATA); 0 leaves it")
	maxOutput := flag.Int64("max-output", bounded.DefaultLimits.Output, "largest profile written, in bytes (RLIMIT_FSIZE); 0 leaves it")
	flag.Parse()
	if flag.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "usage: safeattach-pprof [-o pprof|collapsed|flat[=N]|html] [-event E] [-start NS] [-end NS] [-max-input B] [-max-memory B] [-max-output B] [IN.jfr] > OUT")
		os.Exit(2)
	}
	out, err := parseFormat(*format)
	if err != nil {
		// Exit status 1 with the reason last: what jfrpprof/bounded
		// reports as the converter's own message.
		fmt.Fprintln(os.Stderr, "safeattach-pprof:", err)
		os.Exit(1)
	}
	if err := limitSelf(*maxMemory, *maxOutput); err != nil {
		fmt.Fprintln(os.Stderr, "safeattach-pprof:", err)
		os.Exit(1)
	}
	if err := run(out, *event, time.Unix(0, *startNs), time.Unix(0, *endNs), flag.Arg(0), *maxInput); err != nil {
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

func run(out output, event string, start, end time.Time, in string, maxInput int64) error {
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
	p, err := jfrpprof.Pick(ps, event)
	if err != nil {
		return err
	}
	if err := out.write(os.Stdout, p); err != nil {
		return err
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

// output is what -o asks for.
type output struct {
	format string
	// top is how many methods flat lists.
	top int
}

func parseFormat(s string) (output, error) {
	name, arg, hasArg := strings.Cut(s, "=")
	switch {
	case name == "flat" && hasArg:
		n, err := strconv.Atoi(arg)
		if err != nil || n <= 0 {
			return output{}, fmt.Errorf("-o %s: flat=N wants a positive number of methods", s)
		}
		return output{format: name, top: n}, nil
	case !hasArg && (name == "pprof" || name == "collapsed" || name == "flat" || name == "html"):
		return output{format: name, top: jfrpprof.DefaultFlat}, nil
	}
	return output{}, fmt.Errorf("-o %s: the output is one of pprof, collapsed, flat[=N], html", s)
}

// write writes p to w in the format asked for. A failed write says so in
// words: past RLIMIT_FSIZE on a regular file the write fails with EFBIG
// (the Go runtime ignores SIGXFSZ), which is the output limit.
func (o output) write(w *os.File, p jfrpprof.Profile) error {
	var err error
	if o.format == "pprof" {
		var enc []byte
		if enc, err = jfrpprof.Encode(p.Profile); err != nil {
			return err
		}
		_, err = w.Write(enc)
	} else {
		bw := bufio.NewWriterSize(w, 64<<10)
		f := jfrpprof.Fold(p)
		switch o.format {
		case "collapsed":
			err = f.WriteCollapsed(bw)
		case "flat":
			err = f.WriteFlat(bw, o.top)
		case "html":
			err = f.WriteHTML(bw)
		}
		if err == nil {
			err = bw.Flush()
		}
	}
	switch {
	case errors.Is(err, unix.EFBIG):
		return fmt.Errorf("write the %s output: it grew past the output limit (%v)", o.format, err)
	case err != nil:
		return fmt.Errorf("write the %s output: %w", o.format, err)
	}
	return nil
}
