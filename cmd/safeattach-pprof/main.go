// Command safeattach-pprof converts a JFR recording to a gzipped pprof
// profile:
//
//	safeattach-pprof [-event cpu|wall|alloc|lock] [-start UNIXNANO] [-end UNIXNANO] IN.jfr OUT.pb.gz
//
// `safeattach profile -o pprof` runs it. It is a binary of its own so that
// the JFR and protobuf libraries it needs (about 10 MiB and 10 ms of
// start-up) are not part of every safeattach invocation.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/jfrpprof"
)

func main() {
	event := flag.String("event", "cpu", "the event sampled: picks the profile")
	startNs := flag.Int64("start", 0, "recording start, Unix nanoseconds")
	endNs := flag.Int64("end", 0, "recording end, Unix nanoseconds")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: safeattach-pprof [-event E] [-start NS] [-end NS] IN.jfr OUT.pb.gz")
		os.Exit(1)
	}
	if err := run(*event, time.Unix(0, *startNs), time.Unix(0, *endNs), flag.Arg(0), flag.Arg(1)); err != nil {
		fmt.Fprintln(os.Stderr, "safeattach-pprof:", err)
		os.Exit(1)
	}
}

func run(event string, start, end time.Time, in, out string) error {
	f, err := safefile.Read(context.Background(), in, jfrpprof.MaxJFR, safefile.Options{})
	if err != nil {
		return err
	}
	if end.Before(start) || end.Equal(start) {
		end = time.Now()
		start = end.Add(-time.Minute)
	}
	ps, err := jfrpprof.Convert(f.Data, start, end)
	if err != nil {
		return err
	}
	p := jfrpprof.Pick(ps, event)
	data, err := jfrpprof.Encode(p.Profile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s %d\n", p.Metric, len(p.Profile.Sample))
	return nil
}
