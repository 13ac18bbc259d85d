package profiling

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"

	"github.com/safeattach/safeattach/internal/companion"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/profiling/jfrpprof/bounded"
)

// PprofConverter is the converter -o pprof runs (cmd/safeattach-pprof),
// looked for beside the running program, then on PATH.
const PprofConverter = "safeattach-pprof"

// findConverter is req's converter, or the one beside this program or
// on PATH: looked for when a session opens, so that a missing converter
// is an error before anything is attached, not every window's.
func findConverter(req *SessionRequest) error {
	if req.Converter != "" {
		return nil
	}
	conv, err := companion.Find(PprofConverter, "converting a JFR recording")
	if err != nil {
		return fmt.Errorf("%w: %v", attach.ErrInvalidOptions, err)
	}
	req.Converter = conv
	return nil
}

// WantsPprof reports whether req asks for a pprof profile: -o pprof, or
// no format and an output named *.pb.gz or *.pprof.
func WantsPprof(req ProfileRequest) bool {
	return req.Format == "pprof" || req.Format == "" && wantsPprofOutput(req.Output)
}

// wantsPprofOutput reports whether an output file's name asks for pprof.
func wantsPprofOutput(name string) bool {
	return strings.HasSuffix(name, ".pb.gz") || strings.HasSuffix(name, ".pprof")
}

// profilePprof records JFR (async-profiler's richest output) and has the
// converter turn it into a gzipped profile.proto for the event sampled.
// The recording comes back from the target into an anonymous file (no
// name in any directory); the converter reads it on its standard input
// in a child process bounded in time, memory and output
// (jfrpprof/bounded) and writes into the prepared output. Nothing is
// ever named in a shared directory. The conversion runs even when ctx
// was cancelled during the profile (what was collected is written),
// within attach.StopAfterCancel of the cancellation.
func profilePprof(ctx context.Context, pid int, req ProfileRequest) (*ProfileResult, error) {
	if err := findConverter(&req.SessionRequest); err != nil {
		return nil, err
	}
	conv := req.Converter
	var sink io.Writer = req.Writer
	var out *outfile.File
	if sink == nil {
		var err error
		if out, err = outfile.Prepare(req.Output, req.OutputMode, req.OutputOwner.outfile()); err != nil {
			return nil, fmt.Errorf("%w: profile: %v", attach.ErrInvalidOptions, err)
		}
		defer out.Discard()
		sink = out
	}
	jfr, err := outfile.Anonymous(filepath.Dir(req.Output))
	if err != nil {
		return nil, err
	}
	defer jfr.Close()
	inner := req
	inner.Format, inner.Writer, inner.Output = "jfr", jfr, ""
	start := time.Now()
	res, err := asyncProfiler{}.collect(ctx, pid, inner)
	if err != nil {
		return res, err
	}
	// Bytes is what was written: the profile, not the recording it came
	// from.
	cw := &countingWriter{w: sink}
	converted, err := PprofFromJFR(ctx, jfr, cw, res.Event, start, conv)
	res.Bytes = cw.n
	if err != nil {
		return res, err
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return res, err
		}
	}
	res.Output, res.Format, res.Pprof = req.Output, "pprof", &converted
	return res, nil
}

// PprofFromJFR converts the JFR recording in jfr (read from its start)
// into a gzipped profile.proto of event, written to out (ConvertJFR).
func PprofFromJFR(ctx context.Context, jfr io.ReadSeeker, out io.Writer, event string, start time.Time, converter string) (bounded.Result, error) {
	return ConvertJFR(ctx, jfr, out, "pprof", event, start, converter)
}

// convertRecording has read write a JFR recording into an anonymous file
// (no name anyone could open), converts it to format (ConvertJFR) and
// writes the result to w: the bytes returned are the result's, not the
// recording's.
func convertRecording(ctx context.Context, w io.Writer, format, event string, since time.Time, converter string, read func(io.Writer) (int64, error)) (int64, error) {
	jfr, err := outfile.Anonymous(os.TempDir())
	if err != nil {
		return 0, err
	}
	defer jfr.Close()
	if _, err := read(jfr); err != nil {
		return 0, err
	}
	cw := &countingWriter{w: w}
	_, err = ConvertJFR(ctx, jfr, cw, format, event, since, converter)
	return cw.n, err
}

// ConvertJFR converts the JFR recording in jfr (read from its start)
// into format — pprof, collapsed, flat[=N] or html — for event, written
// to out, by converter (default PprofConverter, beside this program or
// on PATH) in a child bounded in input, time, memory and output
// (jfrpprof/bounded): a recording is the target's to shape. A profile
// stopped early by a cancel is still converted, within
// attach.StopAfterCancel of the cancellation.
func ConvertJFR(ctx context.Context, jfr io.ReadSeeker, out io.Writer, format, event string, start time.Time, converter string) (bounded.Result, error) {
	if converter == "" {
		var err error
		if converter, err = companion.Find(PprofConverter, "converting a JFR recording"); err != nil {
			return bounded.Result{}, fmt.Errorf("%w: %v", attach.ErrInvalidOptions, err)
		}
	}
	if _, err := jfr.Seek(0, io.SeekStart); err != nil {
		return bounded.Result{}, err
	}
	cctx, cancel := attach.Unwinding(ctx)
	defer cancel()
	converted, err := bounded.Convert(cctx, bounded.Request{
		Converter: converter, Format: format, Event: event, Start: start, End: time.Now(), In: jfr, Out: out,
	})
	if err != nil {
		return converted, fmt.Errorf("%w: the JFR recording to %s: %w", attach.ErrConversionFailed, format, err)
	}
	return converted, nil
}
