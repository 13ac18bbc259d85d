package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/attach"
	"github.com/spf13/cobra"
)

func newProfileCmd() *cobra.Command {
	var (
		af       attachFlags
		req      attach.ProfileRequest
		duration string
		asJSON   bool
		progress bool
		modeFlag string
		loop     string
		extra    asprofFlags
	)
	cmd := &cobra.Command{
		Use:   "profile [ACTION] [--lib PATH] [-e EVENT] [-d DURATION] [-i INTERVAL] [-f FILE] [-o FORMAT] [--loop WINDOW] [--timeout DUR] PID",
		Short: "Profile a JVM with async-profiler if it is safe, as asprof does; Ctrl-C stops early and still writes the profile",
		Long: `Profile a JVM with async-profiler, after the same checks as load.

ACTION is asprof's: collect (the default: start, wait -d, stop), start,
resume, stop, dump, status, list, meminfo, check. The agent's own messages
are printed on stderr; start/status/dump/stop work across invocations (the
profiler keeps running in the JVM between them).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			action := "collect"
			if len(args) == 2 {
				action = args[0]
				args = args[1:]
			}
			if !slices.Contains(profileActions, action) {
				return fmt.Errorf("unknown action %q: want one of %s", action, strings.Join(profileActions, ", "))
			}
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			req.Extra = extra.options(req.Extra)
			if req.Duration, err = parseDuration(duration); err != nil {
				return fmt.Errorf("-d %s: %v", duration, err)
			}
			// As asprof: no -f (or -f -) prints to standard output.
			switch req.Output {
			case "", "-":
				if asJSON {
					return fmt.Errorf("--json prints the result on standard output; give the profile a file with -f")
				}
				req.Output, req.Writer = "", cmd.OutOrStdout()
			default:
				if loop == "" { // --loop names each window's file itself
					req.Output = attach.ExpandOutputName(req.Output, pid, time.Now(), 0)
				}
			}
			mode, err := strconv.ParseUint(modeFlag, 8, 32)
			if err != nil || mode > 0o777 {
				return fmt.Errorf("--mode %q: want octal permission bits such as 0644", modeFlag)
			}
			req.OutputMode = os.FileMode(mode)
			req.OutputOwner = sudoOwner()
			if req.Options, err = af.options(cmd); err != nil {
				return err
			}
			req.Options.Timeout = 0
			if cmd.Flags().Changed("timeout") {
				if af.timeout < req.Duration+attach.MinProfileOverhead {
					return fmt.Errorf("--timeout %v is shorter than -d %v plus the %v it takes to start and stop; give at least %v", af.timeout, req.Duration, attach.MinProfileOverhead, req.Duration+attach.MinProfileOverhead)
				}
				req.Options.Timeout = af.timeout
			}
			stderr := cmd.ErrOrStderr()
			if progress || isTerminal(stderr) {
				req.Progress = func(elapsed, total time.Duration) {
					fmt.Fprintf(stderr, "\rprofiling pid %d (%s): %d/%d s ", pid, req.Event, int(elapsed.Seconds()), int(total.Seconds()))
				}
			}
			if loop != "" {
				window, err := parseDuration(loop)
				if err != nil {
					return fmt.Errorf("--loop %s: %v", loop, err)
				}
				if req.Writer != nil {
					return fmt.Errorf("--loop writes one file per window: give -f with %%t or %%n in the name")
				}
				total := time.Duration(0)
				if cmd.Flags().Changed("duration") {
					total = req.Duration
				}
				return profileLoop(cmd, pid, req, window, total)
			}
			if action != "collect" {
				return profileAction(cmd, pid, action, req)
			}
			if wantsPprof(req) {
				return profilePprof(cmd, pid, req)
			}
			// Ctrl-C (the root context) ends the wait; the profiler is
			// still stopped and its output written.
			requested := req.Event
			start := time.Now()
			res, perr := attach.Profile(cmd.Context(), pid, req)
			if req.Progress != nil {
				fmt.Fprintln(stderr)
			}
			// The agent's own messages, on the caller's terminal (not in the
			// application's log).
			if res != nil && !asJSON {
				for _, line := range res.AgentLog {
					fmt.Fprintln(stderr, line)
				}
			}
			w := cmd.OutOrStdout()
			err = attachError(w, perr, asJSON)
			if asJSON {
				var base *attach.Result
				if res != nil {
					base = &res.Result
				}
				r := newResult("profile", pid, start, base, perr)
				if res != nil {
					r.AgentLog = res.AgentLog
					r.Profile = &profileResult{File: res.Output, Bytes: res.Bytes, Event: res.Event, Format: res.Format, Cancelled: res.Cancelled}
				}
				writeResult(w, r, err)
				return err
			}
			if err != nil {
				return err
			}
			if req.Writer != nil {
				return nil
			}
			note := ""
			if res.Cancelled {
				note = " (stopped early)"
			}
			if res.Event != "" && res.Event != requested {
				note += fmt.Sprintf(" (sampled with %s: the target cannot open perf events)", res.Event)
			}
			fmt.Fprintf(w, "wrote %s (%d bytes)%s; the JVM answers\n", res.Output, res.Bytes, note)
			printFindings(w, res.Verdict.Findings)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Lib, "lib", "", "async-profiler library (default: $ASYNC_PROFILER_HOME, asprof on PATH, /opt/async-profiler)")
	f.StringVarP(&req.Event, "event", "e", "cpu", "event to sample: cpu, alloc, lock, wall, itimer, ...")
	f.StringVarP(&duration, "duration", "d", "10", "profiling duration: seconds (30) or with a unit (30s, 5m)")
	f.StringVarP(&req.Interval, "interval", "i", "", "sampling interval (e.g. 10ms)")
	f.StringVarP(&req.Output, "file", "f", "", "output file (%p pid, %t time, %n{MAX} sequence); none or - for standard output; a symlink, device or FIFO there is refused")
	f.StringVar(&modeFlag, "mode", "0644", "permission bits of the output file")
	f.StringVarP(&req.Format, "output", "o", "", "output format: summary, traces, flat, collapsed, flamegraph, tree, jfr (default: from the file name's extension, else the text summary)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&progress, "progress", false, "print progress even when stderr is not a terminal")
	f.BoolVar(&req.EventFallback, "event-fallback", false, "if -e cpu cannot open perf events in the target, sample with ctimer (async-profiler 3.0+) or itimer instead")
	f.StringVar(&loop, "loop", "", "continuous profiling: a new profile every WINDOW (30s, 1m) until Ctrl-C, or until -d if given; -f names each window's file (%t, %n{MAX})")
	extra.register(f)
	af.register(cmd, 0)
	return cmd
}

// wantsPprof: -o pprof, or an output named *.pb.gz or *.pprof.
func wantsPprof(req attach.ProfileRequest) bool {
	return req.Format == "pprof" || req.Format == "" && (strings.HasSuffix(req.Output, ".pb.gz") || strings.HasSuffix(req.Output, ".pprof"))
}

// profilePprof records JFR (async-profiler's richest output) and has
// safeattach-pprof convert it to a gzipped profile.proto for the event
// sampled. The converter is a binary of its own: its JFR and protobuf
// libraries would cost every safeattach invocation ~10 ms of start-up.
func profilePprof(cmd *cobra.Command, pid int, req attach.ProfileRequest) error {
	if req.Writer != nil {
		return fmt.Errorf("-o pprof writes a binary profile: give it a file with -f")
	}
	conv, err := companion("safeattach-pprof", "-o pprof files")
	if err != nil {
		return err
	}
	sink, err := newFileSink(req)
	if err != nil {
		return err
	}
	defer sink.discard()
	tmp, err := os.CreateTemp("", "safeattach-*.jfr")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	req.Format, req.Writer, req.Output = "jfr", tmp, ""
	start := time.Now()
	res, err := attach.Profile(cmd.Context(), pid, req)
	if res != nil {
		for _, line := range res.AgentLog {
			fmt.Fprintln(cmd.ErrOrStderr(), line)
		}
	}
	if err != nil {
		return attachError(cmd.OutOrStdout(), err, false)
	}
	pb := tmp.Name() + ".pb.gz"
	defer os.Remove(pb)
	out, err := exec.Command(conv, "-event", res.Event, "-start", strconv.FormatInt(start.UnixNano(), 10), "-end", strconv.FormatInt(time.Now().UnixNano(), 10), tmp.Name(), pb).CombinedOutput()
	if err != nil {
		return withCode(exitFailed, fmt.Errorf("converting the profiler's JFR to pprof: %s", bytes.TrimSpace(out)))
	}
	data, err := os.ReadFile(pb)
	if err != nil {
		return err
	}
	n, err := sink.commit(data)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (pprof, %s samples; %d bytes); the JVM answers\n", sink.out.Name(), strings.TrimSpace(string(out)), n)
	return nil
}

// companion finds one of safeattach's helper binaries beside this one,
// else on PATH; what names the feature that needs it.
func companion(name, what string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s need %s beside safeattach or on PATH (make build builds it)", what, name)
	}
	return p, nil
}

// profileActions are asprof's actions.
var profileActions = []string{"collect", "start", "resume", "stop", "dump", "status", "list", "meminfo", "check"}

// profileAction runs one asprof action other than collect through an
// attach.Session: the profiler keeps its state in the JVM between
// invocations.
func profileAction(cmd *cobra.Command, pid int, action string, req attach.ProfileRequest) error {
	w, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var out interface {
		commit(data []byte) (int64, error)
	} = stdoutSink{w}
	if action == "stop" || action == "dump" {
		if req.Writer == nil {
			file, err := newFileSink(req)
			if err != nil {
				return err
			}
			defer file.discard()
			out = file
		}
	}
	ss, err := attach.OpenSession(cmd.Context(), pid, req)
	if err != nil {
		return attachError(w, err, false)
	}
	defer ss.Close()
	defer func() {
		for _, line := range ss.Log {
			fmt.Fprintln(stderr, line)
		}
	}()
	var data []byte
	switch action {
	case "start":
		err = ss.Start(cmd.Context())
	case "resume":
		err = ss.Resume(cmd.Context())
	case "stop":
		data, err = ss.Stop(cmd.Context())
	case "dump":
		data, err = ss.Dump(cmd.Context())
	case "check":
		data, _, err = ss.Command(cmd.Context(), "check,event="+ss.Event())
	default: // status, list, meminfo
		data, _, err = ss.Command(cmd.Context(), action)
	}
	if err != nil {
		return attachError(w, err, false)
	}
	if data != nil {
		if _, err := out.commit(data); err != nil {
			return err
		}
	}
	return nil
}

// profileLoop is --loop: one profile per window, each to its own file,
// until Ctrl-C or the total duration.
func profileLoop(cmd *cobra.Command, pid int, req attach.ProfileRequest, window, total time.Duration) error {
	ctx := cmd.Context()
	// The first window's file proves the output writable before the
	// profiler is touched.
	probe, err := newFileSink(attach.ProfileRequest{Output: attach.ExpandOutputName(req.Output, pid, time.Now(), 0), OutputMode: req.OutputMode, OutputOwner: req.OutputOwner})
	if err != nil {
		return err
	}
	probe.discard()
	ss, err := attach.OpenSession(ctx, pid, req)
	if err != nil {
		return attachError(cmd.OutOrStdout(), err, false)
	}
	defer ss.Close()
	stderr := cmd.ErrOrStderr()
	if err := ss.Start(ctx); err != nil {
		return attachError(cmd.OutOrStdout(), err, false)
	}
	start := time.Now()
	for n := 0; ; n++ {
		windowStart := time.Now()
		last := total > 0 && time.Since(start)+window >= total
		timer := time.NewTimer(window)
		interrupted := false
		select {
		case <-timer.C:
		case <-ctx.Done():
			interrupted = true
		}
		timer.Stop()
		// The profiler is stopped cleanly even after Ctrl-C.
		sctx := context.WithoutCancel(ctx)
		var data []byte
		if last || interrupted {
			data, err = ss.Stop(sctx)
		} else {
			data, err = ss.Rotate(sctx)
		}
		if err != nil {
			return attachError(cmd.OutOrStdout(), err, false)
		}
		name := attach.ExpandOutputName(req.Output, pid, windowStart, n)
		sink, err := newFileSink(attach.ProfileRequest{Output: name, OutputMode: req.OutputMode, OutputOwner: req.OutputOwner})
		if err != nil {
			return err
		}
		_, err = sink.commit(data)
		sink.discard()
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "window %d: wrote %s (%d bytes)\n", n, name, len(data))
		if last || interrupted {
			return nil
		}
	}
}

// stdoutSink writes a command's output to standard output.
type stdoutSink struct{ w io.Writer }

func (s stdoutSink) commit(data []byte) (int64, error) {
	n, err := s.w.Write(data)
	return int64(n), err
}

// fileSink is an output file prepared before the profiler is touched.
type fileSink struct{ out *attach.OutputFile }

func newFileSink(req attach.ProfileRequest) (*fileSink, error) {
	out, err := attach.PrepareOutput(req.Output, req.OutputMode, req.OutputOwner)
	if err != nil {
		return nil, err
	}
	return &fileSink{out}, nil
}

func (f *fileSink) commit(data []byte) (int64, error) { return f.out.Commit(data) }
func (f *fileSink) discard()                          { f.out.Discard() }

// parseDuration takes asprof's form (whole seconds: 30) and Go's (30s,
// 5m, 1h30m); zero and negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.Atoi(s); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("want seconds (30) or a duration (30s, 5m)")
	}
	if d <= 0 {
		return 0, fmt.Errorf("want a positive duration")
	}
	return d, nil
}

// sudoOwner is the invoking user under sudo, who should own the profile
// rather than root.
func sudoOwner() *attach.Owner {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || uid <= 0 {
		return nil
	}
	return &attach.Owner{UID: uid, GID: gid}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
