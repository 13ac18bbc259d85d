package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/profiling/flightrec"
	"github.com/safeattach/safeattach/profiling/jfrpprof/bounded"
)

// fallsBack reports whether a refused async-profiler is to be replaced
// by the JVM's Flight Recorder, and the rules that refused it. A rule
// that protects the JVM itself (not a JVM, SIGQUIT not handled, …)
// refuses the Flight Recorder's jcmd too: it says so then.
func (p *profileCLI) fallsBack(err error) ([]string, bool) {
	var refused *attach.RefusedError
	if p.fallback != "jfr" || !errors.As(err, &refused) {
		return nil, false
	}
	return refused.Verdict.Causes(), true
}

// collectJFR profiles with the JVM's own Flight Recorder (package
// flightrec) for -d, into -f as a JFR recording or, for -o pprof, a
// pprof profile converted in the bounded child. refusedBy are the rules
// that sent the profile here (empty for --engine jfr).
func (p *profileCLI) collectJFR(cmd *cobra.Command, pid int, refusedBy []string) error {
	req := p.req
	stderr := cmd.ErrOrStderr()
	pprof := profiling.WantsPprof(req)
	switch {
	case req.Writer != nil:
		return fmt.Errorf("the Flight Recorder writes a binary recording: give it a file with -f (.jfr, or .pb.gz for pprof)")
	case !pprof && req.Format != "" && req.Format != "jfr",
		!pprof && req.Format == "" && filepath.Ext(req.Output) != ".jfr":
		return fmt.Errorf("the Flight Recorder writes jfr or pprof (-o jfr, -o pprof, or -f x.jfr): %s needs async-profiler's own output", strings.TrimPrefix(filepath.Ext(req.Output), "."))
	}
	if len(refusedBy) > 0 {
		fmt.Fprintf(stderr, "async-profiler refused by %s: profiling with the JVM's own Flight Recorder instead (%s)\n", strings.Join(refusedBy, ", "), flightrec.Limits)
	}
	sink, err := outfile.Prepare(req.Output, req.OutputMode, req.OutputOwner)
	if err != nil {
		return err
	}
	defer sink.Discard()
	var rec io.Writer = sink
	var spool *os.File
	if pprof {
		if spool, err = outfile.Anonymous(filepath.Dir(req.Output)); err != nil {
			return err
		}
		defer spool.Close()
		rec = spool
	}
	start := time.Now()
	res, err := flightrec.Profile(cmd.Context(), pid, flightrec.Request{Duration: req.Duration, Options: req.Options}, rec)
	if errors.Is(err, flightrec.ErrHazard) {
		return withCode(exitRefused, err)
	}
	if err != nil {
		return attachError(cmd.OutOrStdout(), err, p.asJSON)
	}
	what := fmt.Sprintf("jfr, the JVM's Flight Recorder, %d bytes", res.Bytes)
	if pprof {
		c, err := profiling.PprofFromJFR(cmd.Context(), spool, sink, "cpu", start, "")
		if errors.Is(err, bounded.ErrFailed) {
			return withCode(exitFailed, err)
		}
		if err != nil {
			return err
		}
		what = fmt.Sprintf("pprof from the JVM's Flight Recorder, %s", c)
	}
	if err := sink.Commit(); err != nil {
		return err
	}
	note := ""
	if res.Cancelled {
		note = " (stopped early)"
	}
	if p.asJSON {
		r := newResult("profile", pid, start, nil, nil)
		r.Healthy = true
		r.Profile = &profileResult{File: sink.Name(), Bytes: res.Bytes, Event: "cpu", Format: map[bool]string{true: "pprof", false: "jfr"}[pprof],
			Cancelled: res.Cancelled, Engine: "jfr", Recording: res.Recording, FallbackFrom: refusedBy, Limits: flightrec.Limits}
		writeResult(cmd.OutOrStdout(), r, nil)
		return nil
	}
	fmt.Fprintf(stderr, "wrote %s (%s)%s\n", sink.Name(), what, note)
	return nil
}
