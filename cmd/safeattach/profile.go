package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/outfile"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/profiling/fdtransfer"
)

// profileCLI is the profile command's flags and the request they make.
type profileCLI struct {
	af       attachFlags
	req      profiling.ProfileRequest
	duration string
	asJSON   bool
	progress bool
	modeFlag string
	loop     string
	features string
	// showVersion is asprof's --version: which async-profiler would be
	// used, beside safeattach's own version.
	showVersion bool
	// engine is the profiler (async-profiler, jfr); fallback the engine
	// taken when async-profiler is refused (jfr, none).
	engine, fallback string
}

func newProfileCmd() *cobra.Command {
	p := &profileCLI{}
	cmd := &cobra.Command{
		Use:   "profile [ACTION] [--agent PATH | --pick-agent] [--engine jfr | --fallback jfr] [asprof options] [-d DURATION] [-f FILE] [-o FORMAT] [--loop WINDOW] [--timeout DUR] PID",
		Short: "Profile a JVM with async-profiler if it is safe, as asprof does; Ctrl-C stops early and still writes the profile",
		Long: `Profile a JVM with async-profiler, after the same checks as load.

ACTION is asprof's: collect (the default: start, wait -d, stop), start,
resume, stop, dump, status, metrics, list, meminfo, check. asprof's
jattach actions are commands of their own: safeattach jcmd, safeattach
load. The agent's own messages
are printed on stderr; start/status/dump/stop work across invocations (the
profiler keeps running in the JVM between them).

Ctrl-C (SIGINT) or SIGTERM, once or any number of times, stops the
profiler and writes what it collected within ` + stopBound.String() + ` of the first signal
(exit 0, "stopped early"); a signal before the profiler started exits
130/143 with nothing collected. Should the stop not finish within that
bound, safeattach exits 130/143 saying why, and the profiler's own
timeout (started with every collect: -d plus 10 s or more) ends it.`,
		Example: `  safeattach profile -d 30 -f profile.html 3456         # a flame graph of 30 s of CPU
  safeattach profile -e alloc -d 10 -f alloc.jfr MyApp   # allocations, by application name
  safeattach profile --alloc 1 -f alloc.collapsed jps    # asprof's options as asprof spells them
  safeattach profile start -o jfr 3456                   # start now ...
  safeattach profile stop -f rec.jfr 3456                # ... stop later, from another shell
  safeattach profile --loop 1m -f 'cpu-%t.jfr' pod:shop/orders
  safeattach profile -o pprof -f cpu.pb.gz 3456          # for go tool pprof`,
		Args: p.checkArgs,
		RunE: p.run,
	}
	f := cmd.Flags()
	f.StringVar(&p.req.Lib, "agent", "", "async-profiler library or install directory (default: $ASYNC_PROFILER_HOME, asprof on PATH, async-profiler*/ under /opt, /usr/local, /usr/lib, /usr/share, ~; else the one the JVM maps)")
	f.StringVarP(&p.duration, "duration", "d", "60", "profiling duration: seconds (30) or with a unit (30s, 5m)")
	f.StringVarP(&p.req.Output, "file", "f", "", "output file (%p pid, %t time, %n{MAX} sequence); none or - for standard output; a symlink, device or FIFO there is refused")
	f.StringVar(&p.modeFlag, "mode", "0644", "permission bits of the output file")
	f.StringVarP(&p.req.Format, "output", "o", "", "output format: flat[=N], traces[=N], collapsed, flamegraph, tree, jfr, otlp, pprof (default: from the file name's extension, else flat and traces); another is refused")
	f.BoolVar(&p.asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&p.req.PickAgent, "pick-agent", false, "when the rules refuse the agent for what it is (e.g. its version) and allow another async-profiler build on this host (discovery's places, a build another JVM maps), use the first such build and say so on stderr")
	f.BoolVar(&p.progress, "progress", false, "print progress even when stderr is not a terminal")
	f.BoolVar(&p.req.EventFallback, "event-fallback", false, "if -e cpu cannot open perf events in the target, sample with ctimer (async-profiler 3.0+) or itimer instead")
	f.BoolVar(&p.req.Takeover, "takeover", false, "stop a profiler that another session or tool runs in the JVM instead of refusing (exit 2)")
	f.StringVar(&p.loop, "loop", "", "continuous profiling: a new profile every WINDOW (30s, 1m) until Ctrl-C, or until -d if given; -f names each window's file (%t, %n{MAX})")
	asprofFlags(f, &p.req.Profiler, &p.features)
	// asprof options safeattach refuses, with the reason, rather than
	// "unknown flag".
	f.String("libpath", "", "refused: the library loaded is the one judged (--agent)")
	f.BoolVar(&p.req.FdTransfer, "fdtransfer", false, "serve the JVM's perf event requests from here (root), for a JVM that cannot open perf events itself: only the -e event, user-space frames only")
	f.BoolVar(&p.req.FdTransferKernel, "fdtransfer-kernel", false, "--fdtransfer, also serving kernel samples, kernel stacks and kallsyms with real addresses (the JVM learns the kernel's layout)")
	p.af.register(cmd, 0)
	f.StringVar(&p.engine, "engine", "async-profiler", "the profiler: async-profiler, or jfr (the JVM's own Flight Recorder through jcmd: nothing native is loaded; Java frames only; -o jfr, pprof, collapsed, flat or flamegraph)")
	f.StringVar(&p.fallback, "fallback", "none", "when async-profiler is refused: jfr profiles with the JVM's own Flight Recorder instead and says which rule sent it there; none refuses")
	f.BoolVar(&p.showVersion, "version", false, "print safeattach's version and the async-profiler version --agent (or discovery) finds, as asprof --version does")
	cmd.SetUsageFunc(groupedUsage(profileFlagGroups))
	return cmd
}

func (p *profileCLI) checkArgs(cmd *cobra.Command, args []string) error {
	if p.showVersion {
		return nil
	}
	if len(args) > 0 {
		if hint, ok := jattachAction(args[0]); ok {
			return fmt.Errorf("%s is asprof's jattach action; safeattach has it as a command of its own: %s", args[0], hint)
		}
	}
	switch {
	case len(args) == 0:
		return fmt.Errorf("profile needs a target: safeattach profile [ACTION] [options] PID (a pid, jps, an application name, container:ID, pod:NS/NAME); see --help")
	case len(args) > 2:
		return fmt.Errorf("profile takes [ACTION] PID, got %d arguments: %s", len(args), strings.Join(args, " "))
	}
	return nil
}

// run parses the action and the target, makes the request, and hands it
// to the loop, an action or a collect.
func (p *profileCLI) run(cmd *cobra.Command, args []string) error {
	if p.showVersion {
		return printVersions(cmd, p.req.Lib)
	}
	action := "collect"
	if len(args) == 2 {
		action = args[0]
		args = args[1:]
	}
	if !slices.Contains(profiling.Actions, action) {
		if strings.HasSuffix(action, ".so") {
			return fmt.Errorf("%s: -l/--lib is asprof's \"prepend library names\"; give the library with --agent", action)
		}
		return fmt.Errorf("unknown action %q: want one of %s", action, strings.Join(profiling.Actions, ", "))
	}
	if p.req.FdTransferKernel {
		p.req.FdTransfer = true // --fdtransfer-kernel is --fdtransfer with kernel frames
	}
	if p.req.FdTransfer {
		if perf, err := profiling.FdTransferPolicy(p.req.SessionRequest).OpensPerfEvents(); err != nil {
			return fmt.Errorf("--fdtransfer: %w", err)
		} else if !perf {
			fmt.Fprintf(cmd.ErrOrStderr(), "note: -e %s is not a perf event: --fdtransfer serves nothing\n", p.req.Profiler.MainEvent())
		}
	}
	if cmd.Flags().Changed("libpath") {
		return fmt.Errorf("--libpath is refused: safeattach loads the library it judged (--agent), copied into the target by its content; another path would load a second copy of async-profiler beside it")
	}
	pid, err := parsePID(args[0])
	if err != nil {
		return err
	}
	if err := p.makeRequest(cmd, pid, action); err != nil {
		return err
	}
	if p.loop != "" {
		window, err := profiling.ParseDuration(p.loop)
		if err != nil {
			return fmt.Errorf("--loop %s: %v", p.loop, err)
		}
		if p.req.Writer != nil {
			return fmt.Errorf("--loop writes one file per window: give -f with %%t or %%n in the name")
		}
		total := time.Duration(0)
		if cmd.Flags().Changed("duration") {
			total = p.req.Duration
		}
		return profileLoop(cmd, pid, p.req, window, total, p.asJSON)
	}
	if action != "collect" {
		return profileAction(cmd, pid, action, p.req, p.asJSON)
	}
	return p.collect(cmd, pid)
}

// makeRequest checks the flags and fills p.req for action on pid.
func (p *profileCLI) makeRequest(cmd *cobra.Command, pid int, action string) error {
	var err error
	switch {
	case p.engine != string(profiling.AsyncProfiler) && p.engine != string(profiling.FlightRecorder):
		return fmt.Errorf("--engine %q: want async-profiler or jfr", p.engine)
	case p.fallback != "none" && p.fallback != string(profiling.FlightRecorder):
		return fmt.Errorf("--fallback %q: want jfr or none", p.fallback)
	}
	// An engine only when asked for: a stop, dump or status then finds
	// the one the start used.
	if cmd.Flags().Changed("engine") {
		p.req.Engine = profiling.Engine(p.engine)
	}
	if p.fallback != "none" {
		p.req.Fallback = profiling.Engine(p.fallback)
	}
	if err := profiling.CheckFormat(p.req.Format, "pprof"); err != nil {
		return err
	}
	p.req.Profiler.Features = splitFeatures(p.features)
	if err := p.req.Profiler.Validate(); err != nil {
		return err
	}
	if p.req.Duration, err = profiling.ParseDuration(p.duration); err != nil {
		return fmt.Errorf("-d %s: %v", p.duration, err)
	}
	// As asprof: no -f (or -f -) prints to standard output
	// (escaped by run when it is a terminal: the profile's text
	// is the target's).
	switch p.req.Output {
	case "", "-":
		switch {
		case p.asJSON && action == "collect":
			return fmt.Errorf("--json prints the result on standard output; give the profile a file with -f")
		case p.asJSON && (action == "stop" || action == "dump"):
			// The file the start named, or a clear error: the result has
			// standard output.
			p.req.Output, p.req.Writer = "", nil
		default:
			p.req.Output, p.req.Writer = "", cmd.OutOrStdout()
		}
	default:
		if p.loop == "" { // --loop names each window's file itself
			p.req.Output = outfile.Expand(p.req.Output, pid, time.Now(), 0)
		}
	}
	mode, err := strconv.ParseUint(p.modeFlag, 8, 32)
	if err != nil || mode > 0o777 {
		return fmt.Errorf("--mode %q: want octal permission bits such as 0644", p.modeFlag)
	}
	p.req.OutputMode = os.FileMode(mode)
	p.req.OutputOwner = sudoOwner()
	p.req.Owner = "safeattach profile"
	if p.req.Options, err = p.af.options(cmd); err != nil {
		return err
	}
	p.req.Options.Timeout = 0
	if cmd.Flags().Changed("timeout") {
		if err := profiling.CheckTimeout(p.af.timeout, p.req.Duration); err != nil {
			return fmt.Errorf("--timeout %v, -d %v: %w", p.af.timeout, p.req.Duration, err)
		}
		p.req.Options.Timeout = p.af.timeout
	}
	stderr := cmd.ErrOrStderr()
	if p.progress || isTerminal(stderr) {
		event := p.req.Profiler.MainEvent()
		p.req.Progress = func(elapsed, total time.Duration) {
			fmt.Fprintf(stderr, "\rprofiling pid %d (%s): %d/%d s ", pid, event, int(elapsed.Seconds()), int(total.Seconds()))
		}
	}
	return nil
}

// collect is the default action: start, wait -d, stop, write (the
// library's Profile, with the engine and fallback asked for).
func (p *profileCLI) collect(cmd *cobra.Command, pid int) error {
	req := p.req
	stderr := cmd.ErrOrStderr()
	if profiling.WantsPprof(req) && req.Writer != nil {
		return fmt.Errorf("-o pprof writes a binary profile: give it a file with -f")
	}
	// Ctrl-C (the root context) ends the wait; the profiler is
	// still stopped and its output written.
	requested := req.Profiler.Event
	start := time.Now()
	// A profile for standard output waits in an anonymous file
	// until the agent's messages are out: read together (2>&1),
	// they come first, as asprof's do.
	var spool *os.File
	var err error
	if stdout := req.Writer; stdout != nil {
		if spool, err = outfile.Anonymous(os.TempDir()); err != nil {
			return err
		}
		defer spool.Close()
		req.Writer = spool
	}
	res, perr := profiling.Profile(cmd.Context(), pid, req)
	notePickFound(stderr, req.PickAgent, perr)
	if !p.asJSON {
		noteFallbackPossible(cmd.Context(), stderr, pid, req.SessionRequest, perr)
	}
	if req.Progress != nil {
		fmt.Fprintln(stderr)
	}
	if res != nil {
		printPick(stderr, res.Picked)
	}
	// The agent's own messages, on the caller's terminal (not in the
	// application's log).
	if res != nil && !p.asJSON {
		if len(res.FallbackFrom) > 0 {
			fmt.Fprintf(stderr, "async-profiler refused by %s: profiled with the JVM's own Flight Recorder instead (%s)\n", strings.Join(res.FallbackFrom, ", "), res.Limits)
		}
		for _, line := range res.AgentLog {
			fmt.Fprintln(stderr, line)
		}
	}
	if spool != nil {
		req.Writer = cmd.OutOrStdout()
		if _, serr := spool.Seek(0, io.SeekStart); serr != nil {
			return serr
		}
		if _, cerr := io.Copy(req.Writer, spool); cerr != nil && perr == nil {
			return fmt.Errorf("writing the profile to standard output: %w", cerr)
		}
	}
	w := cmd.OutOrStdout()
	err = attachError(w, perr, p.asJSON)
	if p.asJSON {
		var base *attach.Result
		if res != nil {
			base = &res.Result
		}
		r := newResult("profile", pid, start, base, perr)
		if res != nil {
			r.AgentLog = res.AgentLog
			r.Profile = profiling.JSONProfileOf(res)
		}
		writeResult(w, r, err)
		return err
	}
	if err != nil {
		return err
	}
	if req.Writer != nil {
		// The profile went to standard output; what to act on still
		// goes to stderr (a timer sampling for -e cpu, say).
		printFindings(stderr, withoutInfo(res.Verdict))
		return nil
	}
	reportProfile(stderr, res, requested)
	return nil
}

// reportProfile says on stderr what a collect wrote, as asprof's status
// lines do (stdout is the profile's when no -f is given, and scripts
// read it), and the findings to act on.
func reportProfile(stderr io.Writer, res *profiling.ProfileResult, requested string) {
	note := ""
	if res.Cancelled {
		note = " (stopped early)"
	}
	if res.Event != "" && requested != "" && res.Event != requested {
		note += fmt.Sprintf(" (sampled with %s: the target cannot open perf events)", res.Event)
	}
	if res.Exited {
		fmt.Fprintf(stderr, "the JVM exited during the profile; wrote %s (%d bytes), what the profiler had when it exited\n", res.Output, res.Bytes)
		return
	}
	what := fmt.Sprintf("%d bytes", res.Bytes)
	switch {
	case res.Engine == profiling.FlightRecorder && res.Converted != nil:
		what = fmt.Sprintf("%s from the JVM's Flight Recorder, %s", res.Format, res.Converted)
	case res.Engine == profiling.FlightRecorder:
		what = fmt.Sprintf("jfr, the JVM's Flight Recorder, %d bytes", res.Bytes)
	case res.Pprof != nil:
		what = "pprof, " + res.Pprof.String()
	}
	fmt.Fprintf(stderr, "wrote %s (%s)%s; the JVM answers\n", res.Output, what, note)
	// A profile that ran says only what should be acted on:
	// information (the profiler this JVM already maps, at every
	// repeat) is for check and --json.
	printFindings(stderr, withoutInfo(res.Verdict))
}

// printVersions prints safeattach's version and that of the
// async-profiler it would load.
func printVersions(cmd *cobra.Command, lib string) error {
	w := cmd.OutOrStdout()
	fmt.Fprintln(w, versionString())
	a, err := attach.FindAgent(cmd.Context(), lib)
	switch {
	case err != nil:
		return err
	case a.Assumed:
		fmt.Fprintln(w, "async-profiler: none found (give --agent, or set ASYNC_PROFILER_HOME)")
	case a.Version != "":
		fmt.Fprintf(w, "async-profiler %s (%s)\n", a.Version, a.Path)
	default:
		fmt.Fprintf(w, "async-profiler of an unknown version (%s): %s\n", a.Path, a.VersionReason)
	}
	return nil
}

// withoutInfo is v with its informational findings left out.
func withoutInfo(v conflicts.Verdict) conflicts.Verdict {
	var kept []conflicts.Finding
	for _, f := range v.Findings {
		if f.Severity != conflicts.Info {
			kept = append(kept, f)
		}
	}
	v.Findings = kept
	return v
}

// jattachAction returns, for one of asprof's actions that pass through
// to jattach, the safeattach command that does it. A switch, not a map:
// a map literal is built at the start of every command.
func jattachAction(action string) (hint string, ok bool) {
	switch action {
	case "jcmd":
		return "safeattach jcmd PID COMMAND [ARGS...]", true
	case "load":
		return "safeattach load PID AGENT_PATH [OPTIONS]", true
	case "threaddump":
		return "safeattach jcmd PID Thread.print", true
	case "dumpheap":
		return "safeattach jcmd PID GC.heap_dump FILE", true
	case "inspectheap":
		return "safeattach jcmd PID GC.class_histogram", true
	}
	return "", false
}

// profileAction runs one asprof action other than collect through an
// profiling.Session: the profiler keeps its state in the JVM between
// invocations. A start is detached: the later stop (any invocation) may
// finish it, and writes the file the start named when stop names none.
func profileAction(cmd *cobra.Command, pid int, action string, req profiling.ProfileRequest, asJSON bool) error {
	ctx := cmd.Context()
	run := newActionRun(cmd, pid, action, asJSON)
	req, err := actionRequest(req, action)
	if err != nil {
		return err
	}
	ss, err := profiling.Open(ctx, pid, req.SessionRequest)
	if err != nil {
		notePickFound(run.stderr, req.PickAgent, err)
		return run.finish(err)
	}
	defer ss.Close()
	r := ss.Result()
	run.res = &r
	noteFallback(run.stderr, ss, asJSON)
	printPick(run.stderr, r.Picked)
	// A command that changes the profiler runs to its end once sent, even
	// if interrupted (then within attach.StopAfterCancel): cut off
	// half-way, the profiler may have started or stopped without this
	// process knowing, or its profile be left unread.
	uctx, unwound := attach.Unwinding(ctx)
	defer unwound()
	switch action {
	case "start", "resume":
		err = startAction(ctx, uctx, ss, action)
		if err == nil {
			run.started(ss)
		}
	case "stop", "dump":
		named := cmd.Flags().Changed("file") || cmd.Flags().Changed("output")
		err = run.write(uctx, ss, req, named)
	case "check":
		_, err = ss.Command(ctx, "check,event="+ss.Event(), run.answer)
	default: // status, metrics, list, meminfo
		_, err = ss.Command(ctx, action, run.answer)
	}
	if cerr := run.answer.Close(); err == nil {
		err = cerr
	}
	if err == nil && asJSON {
		// "healthy" says the JVM answered after the action, as it does
		// after a collect (it read false for every action).
		run.res.Healthy = ss.Healthy(ctx) == nil
	}
	run.log = ss.LastLog()
	if !asJSON {
		for _, line := range run.log {
			fmt.Fprintln(run.stderr, line)
		}
	}
	return run.finish(err)
}

// actionRequest is req for action: a start (or resume) is detached —
// the later stop, from any invocation, may finish it and writes the
// file it named (made absolute here, as the stop may run elsewhere) —
// and everything else talks to a profiler already loaded: when it is
// safeattach's delivered copy, nothing is read, hashed or judged again
// (asprof's speed for status, stop, dump).
func actionRequest(req profiling.ProfileRequest, action string) (profiling.ProfileRequest, error) {
	starts := action == "start" || action == "resume"
	if starts {
		req.Detached = true
		if req.Output != "" {
			abs, err := filepath.Abs(req.Output)
			if err != nil {
				return req, err
			}
			req.Output, req.Writer = abs, nil
		}
	}
	req.LoadedOnly = !starts
	// A detached start's descriptor server is this program's own
	// fdtransfer-serve, a process of its own that outlives this one.
	if exe, err := os.Executable(); err == nil {
		req.FdTransferHelper = []string{exe, "fdtransfer-serve"}
	}
	return req, nil
}

// startAction starts (or resumes) under uctx; if the caller was
// interrupted meanwhile (ctx), nothing is left running.
func startAction(ctx, uctx context.Context, ss profiling.Profiler, action string) error {
	var err error
	if action == "start" {
		err = ss.Start(uctx)
	} else {
		err = ss.Resume(uctx)
	}
	if err != nil || ctx.Err() == nil {
		return err
	}
	if _, serr := ss.Stop(uctx, io.Discard); serr != nil {
		return fmt.Errorf("interrupted: the profiler was started, and could not be stopped again (%v); 'safeattach profile stop' stops it: %w", serr, ctx.Err())
	}
	return fmt.Errorf("interrupted: the profiler was started, and stopped again: %w", ctx.Err())
}

// actionRun is what an action prints: with --json one result, the
// agent's answer inside it; else the answer on standard output and the
// agent's log on standard error. Either way the answer is a message
// (status, list, meminfo, metrics, check), not a profile, and the
// target's text: escaped even into a pipe.
type actionRun struct {
	pid       int
	action    string
	asJSON    bool
	start     time.Time
	w, stderr io.Writer
	text      bytes.Buffer
	answer    *printable.Writer
	res       *attach.Result
	prof      *profiling.JSONProfile
	log       []string
}

func newActionRun(cmd *cobra.Command, pid int, action string, asJSON bool) *actionRun {
	r := &actionRun{pid: pid, action: action, asJSON: asJSON, start: time.Now(), w: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr()}
	if asJSON {
		r.answer = printable.NewWriter(&r.text)
	} else {
		r.answer = printable.NewWriter(r.w)
	}
	return r
}

// write is stop or dump: -f or -o name where it goes (-f - and -o alone:
// standard output); else the file the detached start named; else
// standard output.
func (r *actionRun) write(ctx context.Context, ss profiling.Profiler, req profiling.ProfileRequest, named bool) error {
	dst := profiling.Destination{Path: req.Output, Writer: req.Writer, Mode: req.OutputMode, Owner: req.OutputOwner, AsStarted: !named}
	run := ss.StopTo
	if r.action == "dump" {
		run = ss.DumpTo
	}
	wrote, err := run(ctx, dst)
	if wrote.AsStarted {
		fmt.Fprintf(r.stderr, "writing %s, as the start asked\n", wrote.File)
	}
	if err != nil {
		return err
	}
	if wrote.File != "" {
		fmt.Fprintf(r.stderr, "wrote %s (%d bytes)\n", wrote.File, wrote.Bytes)
	}
	r.prof = &profiling.JSONProfile{File: wrote.File, Bytes: wrote.Bytes, Event: ss.Event(), Format: ss.Format(), FallbackFrom: ss.FallbackFrom()}
	if ss.Engine() != profiling.AsyncProfiler {
		r.prof.Engine = ss.Engine()
	}
	return nil
}

// started says what runs now: async-profiler's own log says it
// started; the Flight Recorder says nothing, so this does. The JSON
// result names the engine either way.
func (r *actionRun) started(ss profiling.Profiler) {
	r.prof = &profiling.JSONProfile{Event: ss.Event(), Format: ss.Format()}
	if ss.Engine() == profiling.AsyncProfiler {
		return
	}
	r.prof.Engine = ss.Engine()
	if !r.asJSON {
		fmt.Fprintf(r.stderr, "the JVM's Flight Recorder records (%s, written as %s); `safeattach profile stop %d` stops it and writes the profile\n", ss.Event(), ss.Format(), r.pid)
	}
}

// finish prints the outcome and returns the error the CLI exits with.
func (r *actionRun) finish(err error) error {
	cerr := attachError(r.w, err, r.asJSON)
	if !r.asJSON {
		return cerr
	}
	res := newResult("profile", r.pid, r.start, r.res, err)
	res.Action, res.Output, res.AgentLog, res.Profile = r.action, strings.TrimSpace(r.text.String()), r.log, r.prof
	writeResult(r.w, res, cerr)
	return cerr
}

// profileLoop is --loop: one profile per window, each to its own file
// (profiling.WindowFiles), until Ctrl-C or the total duration. Windows
// are profiling.Session.Windows' (at least profiling.MinWindow). With
// --json the windows are reported in the one result, at the end.
func profileLoop(cmd *cobra.Command, pid int, req profiling.ProfileRequest, window, total time.Duration, asJSON bool) error {
	if window < profiling.MinWindow {
		return fmt.Errorf("--loop %v: the shortest window is %v (each window is a stop and a start in the JVM)", window, profiling.MinWindow)
	}
	ctx, w, stderr := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	start := time.Now()
	var res *attach.Result
	var windows []profiling.JSONWindow
	finish := func(err error) error {
		cerr := attachError(w, err, asJSON)
		if asJSON {
			r := newResult("profile", pid, start, res, err)
			r.Windows = windows
			writeResult(w, r, cerr)
		}
		return cerr
	}
	// The first window's file proves the output writable before the
	// profiler is touched.
	files, err := profiling.NewWindowFiles(req.Output, pid, req.OutputMode, req.OutputOwner)
	if err != nil {
		return fmt.Errorf("--loop writes one file per window: %w", err)
	}
	ss, err := profiling.Open(ctx, pid, req.SessionRequest)
	if err != nil {
		return finish(err)
	}
	defer ss.Close()
	r := ss.Result()
	res = &r
	noteFallback(stderr, ss, asJSON)
	printPick(stderr, r.Picked)
	if total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, total)
		defer cancel()
	}
	err = ss.Windows(ctx, window, func(win *profiling.Window) error {
		if !asJSON {
			for _, line := range win.Log {
				fmt.Fprintln(stderr, line)
			}
		}
		if win.Err != nil {
			fmt.Fprintf(stderr, "window %d dropped: %v\n", win.N, win.Err)
			windows = append(windows, profiling.JSONWindow{N: win.N, Error: printable.Line(win.Err.Error())})
			return nil
		}
		wrote, err := files.Write(win)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "window %d: wrote %s (%d bytes)\n", win.N, wrote.File, wrote.Bytes)
		windows = append(windows, profiling.JSONWindow{N: win.N, File: wrote.File, Bytes: wrote.Bytes})
		return nil
	})
	if err == nil && asJSON {
		res.Healthy = ss.Healthy(cmd.Context()) == nil
	}
	return finish(err)
}

// sudoOwner is the invoking user under sudo, who should own the profile
// rather than root.
func sudoOwner() *profiling.FileOwner {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || uid <= 0 {
		return nil
	}
	return &profiling.FileOwner{UID: uid, GID: gid}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newFdTransferServeCmd() *cobra.Command {
	var policy fdtransfer.Policy
	cmd := &cobra.Command{
		Use:    "fdtransfer-serve [--event E] [--kernel] [--lbr] PID",
		Short:  "Serve a JVM's async-profiler perf event requests (run by profile start --fdtransfer)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "error:", err) // the caller's first line
				return err
			}
			return profiling.ServeFdTransfer(cmd.Context(), pid, policy, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy.Event, "event", "cpu", "the only event served (the profile's -e)")
	f.BoolVar(&policy.Kernel, "kernel", false, "serve kernel samples, kernel stacks and kallsyms")
	f.BoolVar(&policy.LBR, "lbr", false, "allow branch stacks (--cstack lbr)")
	return cmd
}

// noteFallbackPossible says, after a refusal of async-profiler by the
// rules, when the JVM's own Flight Recorder would be allowed there (and
// was not asked for): the user may want --fallback jfr.
func noteFallbackPossible(ctx context.Context, stderr io.Writer, pid int, req profiling.SessionRequest, err error) {
	var refused *attach.RefusedError
	if req.Engine == profiling.FlightRecorder || req.Fallback != "" || !errors.As(err, &refused) || refused.Reason != "" || ctx.Err() != nil {
		return
	}
	if profiling.FlightRecorderAllowed(ctx, pid, req.Options) {
		fmt.Fprintln(stderr, "the JVM's own Flight Recorder is allowed here: --fallback jfr (or --engine jfr) profiles it instead, Java frames only")
	}
}

// notePickFound says, for --pick-agent, that no other build was allowed
// (the refusal itself names one when there is).
func notePickFound(stderr io.Writer, pick bool, err error) {
	var refused *attach.RefusedError
	if pick && errors.As(err, &refused) && refused.ByAgent() && len(refused.Alternatives) == 0 {
		fmt.Fprintln(stderr, "--pick-agent: no other async-profiler build on this host is allowed here (searched agent discovery's places and the builds other JVMs map); async-profiler 4.0 or later is safe with a heap profiler")
	}
}

// noteFallback says on stderr that the Flight Recorder stands in for a
// refused async-profiler, and why.
func noteFallback(stderr io.Writer, ss profiling.Profiler, asJSON bool) {
	if causes := ss.FallbackFrom(); len(causes) > 0 && !asJSON {
		fmt.Fprintf(stderr, "async-profiler refused by %s: the JVM's own Flight Recorder instead (Java frames only)\n", strings.Join(causes, ", "))
	}
}
