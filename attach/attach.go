package attach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach/crashmem"
	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/diagnose"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
)

// Result is a completed attach.
type Result struct {
	PID     int               `json:"pid"`
	Verdict conflicts.Verdict `json:"verdict"`
	Agent   *preflight.Agent  `json:"agent,omitempty"`
	// Output is what the JVM replied (the load's return text, the jcmd
	// output).
	Output string `json:"output"`
	// Duration is the whole call's.
	Duration Elapsed `json:"duration_ms"`
	// LoadedFrom is the path the JVM was told to load (inside its own
	// root): the content-addressed copy of the judged bytes, the copy it
	// already had, or the original where only root can change it.
	LoadedFrom string `json:"loaded_from,omitempty"`
	// Healthy is set when the post-attach check got an answer.
	Healthy bool `json:"healthy"`
	// Picked is set when the agent given was refused here and another
	// build the rules allow was loaded instead (DoorRequest.PickAgent, or
	// a later one of DoorRequest.Builds): Agent is then the build picked.
	Picked *AgentPick `json:"picked_agent,omitempty"`
}

// Elapsed is a duration that JSON writes in whole milliseconds, the unit
// of every duration safeattach prints or logs.
type Elapsed time.Duration

func (e Elapsed) String() string { return time.Duration(e).String() }

// MarshalJSON writes the milliseconds.
func (e Elapsed) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, time.Duration(e).Milliseconds(), 10), nil
}

// call is one attach operation in progress.
type call struct {
	op       string
	deadline time.Time // the caller's; the protocol stops short of it
	pid      int
	opts     Options
	log      *slog.Logger
	start    time.Time
	report   *preflight.Report
	agent    *preflight.Agent
	// content is the agent's bytes as read and judged: what is delivered.
	content []byte
	verdict conflicts.Verdict
	// loaded is the path of the copy the JVM already maps, when the call
	// talks only to it (SessionRequest.LoadedOnly).
	loaded string
	// passedOver are the builds refused before the one judged now
	// (DoorRequest.Builds, PickAgent), for the audit record.
	passedOver []string
}

func newCall(op string, pid int, opts Options) *call {
	return &call{op: op, pid: pid, opts: opts, log: opts.logger(), start: time.Now()}
}

// readAgent reads the agent once: the description is judged and the
// bytes are what will be delivered. A build of a list (oneOfBuilds)
// that is not there is described for the rules to refuse, as Check
// describes it, and the next build judged; a single agent that is not
// there is the caller's error.
func (c *call) readAgent(ctx context.Context, path, options string, oneOfBuilds bool) error {
	a, content, err := preflight.ReadAgent(ctx, installLibrary(path))
	if err != nil {
		return c.deadlineError(ctx, "reading the agent", err)
	}
	if !a.Exists && !oneOfBuilds {
		// A mistyped path is the caller's error, not a refusal of the
		// target: nothing to judge.
		return fmt.Errorf("%w: agent %s: no such file", ErrInvalidOptions, a.Path)
	}
	a.Options = options
	c.agent, c.content = a, content
	return nil
}

// deadlineError turns the deadline ending a read-only step into a hang
// error, which a caller sees as a time-out like any other step's.
func (c *call) deadlineError(ctx context.Context, step string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
		return c.hang(ctx, step, fmt.Errorf("%w: %s: %v", hotspot.ErrTimeout, step, err))
	}
	return err
}

// judge inspects and evaluates; a refusal returns *RefusedError.
func (c *call) judge(ctx context.Context, inspect preflight.Options) error {
	policy, err := c.opts.Policy(ctx)
	if err != nil {
		return c.deadlineError(ctx, "reading the rules", err)
	}
	for poll, waited := startPoll, false; ; poll, waited = min(2*poll, maxInitPoll), true {
		c.report, err = preflight.Inspect(ctx, c.pid, inspect)
		if err != nil {
			return c.deadlineError(ctx, "inspection", err)
		}
		c.opts.complete(ctx, c.report, c.agent, c.log)
		c.verdict = conflicts.Evaluate(c.report, c.agent, policy)
		if c.verdict.Allowed || !stillStarting(c.report, c.verdict) {
			break
		}
		if !waited {
			c.log.Info("safeattach: the JVM is still starting (no libjvm or no SIGQUIT handler yet): waiting", "pid", c.pid)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.deadlineError(ctx, "waiting for the JVM to start", ctx.Err())
		case <-t.C:
		}
	}
	attrs := []any{"pid", c.pid, "op", c.op, "allowed", c.verdict.Allowed, "blocking", c.verdict.Blocking()}
	if c.agent != nil {
		attrs = append(attrs, "agent", c.agent.Path, "sha256", c.agent.SHA256)
	}
	if len(c.verdict.Acknowledged) > 0 {
		attrs = append(attrs, "acks", c.verdict.Acknowledged)
	}
	c.log.Info("safeattach: verdict", attrs...)
	if !c.verdict.Allowed {
		// A process that died while it was being inspected reads as
		// "not a JVM"; it is a JVM that exited, an attach failure.
		if !c.stillRunning() {
			return fmt.Errorf("pid %d: %w during inspection", c.pid, hotspot.ErrTargetExited)
		}
		return &RefusedError{PID: c.pid, Verdict: c.verdict}
	}
	return nil
}

// stillRunning reports whether the inspected process is still there: the
// same start time, neither a zombie nor dead, and with an address space
// (an exiting process loses its mappings before it becomes a zombie,
// which is when it reads as "not a JVM").
func (c *call) stillRunning() bool {
	p := proc.FS{}.Proc(c.pid)
	st, err := p.Stat()
	if err != nil || st.StartTime != c.report.Process.StartTime || st.State == 'Z' || st.State == 'X' {
		return false
	}
	statm, err := os.ReadFile(p.Path("statm"))
	return err == nil && !bytes.HasPrefix(statm, []byte("0 "))
}

// target builds the protocol's view of the inspected JVM, pinned to the
// process that was inspected.
func (c *call) target() (*hotspot.JVM, error) {
	pr := c.report.Process
	t := hotspot.JVMOf(hotspot.Identity{
		PID: c.pid, NSPid: pr.NSPid, StartTime: pr.StartTime,
		UID: pr.UID.Effective, GID: pr.GID.Effective,
	})
	t.Feature = c.report.JVM.Feature
	if f, ok := c.report.JVM.Flags["AltTempDir"]; ok && f.Value != "" {
		t.TmpDir = f.Value
	}
	return t, nil
}

// settle classifies an error no step recognised: if the inspected process
// is gone by now, it exited during the call — an attach failure.
func (c *call) settle(err error) error {
	// A pid never seen alive (no report) is an unknown pid, not an exit.
	if err == nil || c.report == nil || OutcomeOf(err) != OutcomeError {
		return err
	}
	if st, serr := (proc.FS{}).Proc(c.pid).Stat(); serr != nil || st.State == 'Z' || st.State == 'X' || st.StartTime != c.report.Process.StartTime {
		return fmt.Errorf("pid %d: %w: %v", c.pid, hotspot.ErrTargetExited, err)
	}
	return err
}

// finish logs and audits the outcome.
func (c *call) finish(err error) {
	outcome := OutcomeOf(err)
	d := time.Since(c.start)
	level := slog.LevelInfo
	if err != nil && outcome != OutcomeRefused {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, "safeattach: "+c.op, "pid", c.pid, "outcome", outcome, "duration", d, "error", errString(err))
	if c.opts.Audit == nil {
		return
	}
	rec := AuditRecord{
		Time: c.start.UTC(), Caller: c.opts.Caller, Operation: c.op, PID: c.pid,
		Allowed: c.verdict.Allowed, Acks: c.verdict.Acknowledged, Outcome: outcome,
		Error: errString(err), DurationMS: d.Milliseconds(),
	}
	if c.report != nil {
		rec.JVM = printable.Line(string(c.report.JVM.Kind) + " " + c.report.JVM.Version)
	}
	if c.agent != nil {
		rec.Agent, rec.AgentSHA256, rec.AgentOptions = c.agent.Path, c.agent.SHA256, c.agent.Options
	}
	rec.PassedOver = c.passedOver
	rec.Verdict = "allowed"
	for _, f := range c.verdict.Findings {
		if f.Severity != conflicts.Info {
			rec.Rules = append(rec.Rules, f.Rule)
			rec.Verdict = "allowed-with-warnings"
		}
	}
	switch {
	case c.report == nil:
		rec.Verdict = "none" // ended before the judgement
	case !c.verdict.Allowed:
		rec.Verdict = "refused"
	}
	c.opts.Audit(rec)
}

// errString is err for a log or an audit record: its text can quote the
// target (a path it mapped, its JDK's version string), so it is escaped.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return printable.Line(err.Error())
}

// reserve is the part of the deadline kept for a hang report: the
// protocol gives up that much earlier, so that a hung target costs the
// caller its deadline and not a moment more.
func (c *call) reserve() time.Duration {
	sample := c.opts.DiagnoseSample
	if sample <= 0 {
		sample = time.Second
	}
	if total := time.Until(c.deadline); sample > total/4 {
		sample = total / 4
	}
	return sample
}

// protocolContext ends early enough to leave the reserve.
func (c *call) protocolContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, c.deadline.Add(-c.reserve()))
}

// hang turns a timeout into a *HangError with a report made from outside,
// sampled in the time left before the caller's deadline.
func (c *call) hang(ctx context.Context, step string, err error) error {
	var recognised *HangError
	if errors.As(err, &recognised) {
		return err // the watcher's report, made while it happened
	}
	if !errors.Is(err, hotspot.ErrTimeout) {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		// The caller gave up (a signal, a shutdown): the step's context
		// was cancelled, not timed out. Not a hang, and no time is spent
		// on a report.
		return fmt.Errorf("%s: %w", step, context.Canceled)
	}
	// Reading every thread's files takes a few milliseconds; sample for
	// the rest of the budget.
	sample := time.Until(c.deadline) - 30*time.Millisecond
	if sample < 50*time.Millisecond {
		sample = 50 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), sample+time.Second)
	defer cancel()
	rep, derr := diagnose.Diagnose(ctx, c.pid, diagnose.Options{Sample: sample})
	if derr != nil {
		c.log.Warn("safeattach: no hang report", "pid", c.pid, "error", derr)
	}
	return &HangError{PID: c.pid, Step: step, Report: rep, Err: err}
}

// watched runs one blocking protocol step with the watcher beside it
// (diagnose.Watch): a deadlock it recognises ends the step at once with
// its report as a *HangError, instead of at the deadline.
func (c *call) watched(ctx context.Context, step string, fn func(context.Context) error) error {
	if c.opts.NoWatch {
		return fn(ctx)
	}
	interval := c.opts.WatchInterval
	if interval <= 0 {
		interval = diagnose.DefaultWatchInterval
	}
	wctx, cancel := context.WithCancel(ctx)
	var report *diagnose.HangReport
	done := make(chan struct{})
	// The watcher starts only once the step has lasted one interval:
	// most steps take a millisecond, and a goroutine started for each
	// of them costs a thread wake-up in every CLI run.
	watcher := time.AfterFunc(interval, func() {
		defer close(done)
		r, _ := diagnose.Watch(wctx, c.pid, diagnose.WatchOptions{Interval: interval})
		if r != nil {
			report = r
			cancel()
		}
	})
	err := fn(wctx)
	cancel()
	if !watcher.Stop() {
		<-done // it started: wait for it to see the cancel
	}
	if report != nil {
		c.log.Warn("safeattach: deadlock recognised", "pid", c.pid, "step", step, "pattern", report.Pattern)
		return &HangError{PID: c.pid, Step: step, Report: report,
			Err: fmt.Errorf("%w: the watcher recognised a deadlock after %v", hotspot.ErrTimeout, time.Since(c.start).Round(time.Millisecond))}
	}
	return err
}

// healthCheck asks the JVM for its version with a short deadline: a JVM
// that answers is alive after the attach.
func (c *call) healthCheck(ctx context.Context, client *hotspot.Client) error {
	d := c.opts.HealthTimeout
	if d <= 0 {
		d = DefaultHealthTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var out bytes.Buffer
	if err := c.watched(hctx, "health check", func(ctx context.Context) error {
		_, err := client.Jcmd(ctx, &out, "VM.version")
		return err
	}); err != nil {
		return c.hang(ctx, "health check", err)
	}
	return nil
}

// Jcmd runs a diagnostic command (e.g. "VM.version", "Thread.print -l") on
// the JVM pid through the safe door. The inspection it needs parses no ELF
// file: jcmd loads nothing, so only the JVM-level rules apply.
func Jcmd(ctx context.Context, pid int, command string, opts Options) (res *Result, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := newCall("jcmd", pid, opts)
	defer func() { err = c.settle(err); c.finish(err) }()
	ctx, cancel := opts.withDeadline(ctx, DefaultJcmdTimeout)
	defer cancel()
	c.deadline, _ = ctx.Deadline()
	if err := c.judge(ctx, preflight.Options{AttachOnly: true}); err != nil {
		return nil, err
	}
	t, err := c.target()
	if err != nil {
		return nil, err
	}
	pctx, pcancel := c.protocolContext(ctx)
	defer pcancel()
	if err := c.watched(pctx, "attach listener", func(ctx context.Context) error { return hotspot.EnsureListener(ctx, t) }); err != nil {
		return nil, c.hang(ctx, "attach listener", err)
	}
	var out bytes.Buffer
	var code int
	if err := c.watched(pctx, "jcmd "+command, func(ctx context.Context) (err error) {
		code, err = hotspot.NewClient(t).Jcmd(ctx, &out, command)
		return err
	}); err != nil {
		return nil, c.hang(pctx, "jcmd "+command, err)
	}
	res = &Result{PID: pid, Verdict: c.verdict, Output: out.String(), Healthy: true}
	res.took(c.start)
	if code != 0 {
		return res, &hotspot.CommandError{Code: code, Command: "jcmd " + command, Message: out.String()}
	}
	return res, nil
}

// Load loads the JVMTI agent at agentPath into the JVM pid with options,
// if the knowledge base finds it safe, then checks that the JVM still
// answers.
func Load(ctx context.Context, pid int, agentPath, agentOptions string, opts Options) (res *Result, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := newCall("load", pid, opts)
	defer func() { err = c.settle(err); c.finish(err) }()
	ctx, cancel := opts.withDeadline(ctx, DefaultLoadTimeout)
	defer cancel()
	c.deadline, _ = ctx.Deadline()
	if err := c.readAgent(ctx, agentPath, agentOptions, false); err != nil {
		return nil, err
	}
	if err := c.judge(ctx, preflight.Options{}); err != nil {
		_, err = c.nameAlternatives(ctx, err, false, agentSources{})
		return nil, err
	}
	pctx, pcancel := c.protocolContext(ctx)
	defer pcancel()
	s, err := c.open(pctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	out, err := s.load(pctx, agentOptions)
	res = &Result{PID: pid, Verdict: c.verdict, Agent: c.agent, Output: out, LoadedFrom: s.agentPath}
	res.took(c.start)
	if err != nil {
		return res, err
	}
	if err := c.healthCheck(pctx, s.client); err != nil {
		return res, err
	}
	res.Healthy = true
	res.took(c.start)
	return res, nil
}

// took records the call's duration.
func (r *Result) took(start time.Time) {
	r.Duration = Elapsed(time.Since(start))
}

// session is an open attach to a judged target with the agent delivered.
type session struct {
	c         *call
	client    *hotspot.Client
	agentPath string // as the JVM sees it
	delivery  *delivery
	loaded    bool // a load succeeded: the JVM maps the delivered copy
}

func (c *call) open(ctx context.Context) (*session, error) {
	t, err := c.target()
	if err != nil {
		return nil, err
	}
	var d *delivery
	if c.loaded != "" {
		d = &delivery{inTarget: c.loaded, reused: true} // LoadedOnly: the JVM's own copy
	} else {
		d, err = deliver(ctx, c.report, c.agent, c.content)
		// Delivered (or not): the bytes are in the target now, and a
		// session lives as long as its profiler — a daemon with 50
		// would hold 50 copies of the library (measured: 31 MB).
		c.content = nil
	}
	if err != nil {
		if !t.Alive() {
			return nil, fmt.Errorf("pid %d: %w while delivering the agent", c.pid, hotspot.ErrTargetExited)
		}
		if cerr := ctx.Err(); cerr != nil {
			// Cut short (a signal, the caller's deadline): no judgement
			// of the target's directories, not a refusal.
			return nil, fmt.Errorf("pid %d: delivering the agent: %w", c.pid, cerr)
		}
		return nil, &RefusedError{PID: c.pid, Verdict: c.verdict, Reason: err.Error()}
	}
	switch {
	case d.reused:
		c.log.Info("safeattach: the target already maps these bytes; loading that copy", "pid", c.pid, "path", d.inTarget)
	case d.inPlace:
		c.log.Info("safeattach: agent loaded in place (only root can change it)", "pid", c.pid, "path", d.inTarget)
	default:
		c.log.Info("safeattach: agent delivered", "pid", c.pid, "path", d.inTarget, "created", d.created, "rejected", d.why)
	}
	s := &session{c: c, client: hotspot.NewClient(t), agentPath: d.inTarget, delivery: d}
	// Before the listener: a listener a JVM starts while it initialises
	// runs agents on a thread the VM cannot yet serve (async-profiler
	// then fails with "JVM does not support Tool Interface", measured).
	if err := c.waitInitialised(ctx); err != nil {
		s.close()
		return nil, c.hang(ctx, "the JVM's initialisation", err)
	}
	if err := c.watched(ctx, "attach listener", func(ctx context.Context) error { return hotspot.EnsureListener(ctx, t) }); err != nil {
		s.close()
		return nil, c.hang(ctx, "attach listener", err)
	}
	return s, nil
}

// A JVM attached to the moment it starts (a CI smoke test's) maps no
// libjvm yet, then has not installed its SIGQUIT handler: not-a-jvm and
// sigquit-not-handled, rightly (SIGQUIT would kill it). For startGrace
// after its start, a java process refused only for those is inspected
// again instead — startPoll later, then at intervals doubling up to
// maxInitPoll; nothing is sent meanwhile — unless it runs with -Xrs,
// whose SIGQUIT never comes.
const (
	startGrace = 10 * time.Second
	startPoll  = 20 * time.Millisecond
)

func stillStarting(r *preflight.Report, v conflicts.Verdict) bool {
	for _, rule := range v.Blocking() {
		if rule != "not-a-jvm" && rule != "sigquit-not-handled" {
			return false
		}
	}
	if f, ok := r.JVM.Flags["ReduceSignalUsage"]; ok && f.Value == "true" {
		return false
	}
	if r.JVM.Kind != preflight.JVMHotSpot && !strings.HasPrefix(filepath.Base(r.Process.Exe), "java") {
		return false
	}
	age, err := processAge(r.Process.StartTime)
	return err == nil && age < startGrace
}

// processAge is how long ago a process started (its start time in clock
// ticks after boot, against /proc/uptime; the kernel's USER_HZ is 100 on
// every Linux architecture safeattach runs on).
func processAge(startTicks uint64) (time.Duration, error) {
	data, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	up, err := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(up*float64(time.Second)) - time.Duration(startTicks)*10*time.Millisecond, nil
}

// A starting JVM's hsperfdata is read first initPoll after the agent
// began to wait, then at intervals doubling up to maxInitPoll: a JVM
// launched a moment ago (a CI smoke test's) is seen initialised within
// a few milliseconds, and a wait that lasts costs a read of at most
// proc.MaxPerfDataScan bytes every maxInitPoll (the file is its user's,
// who can make it any size: invariant 9 of docs/safety.md).
const (
	initPoll    = 5 * time.Millisecond
	maxInitPoll = 200 * time.Millisecond
)

// waitInitialised holds an agent back until the JVM has finished
// initialising, as its own hsperfdata says (a CI smoke test attaches to
// a JVM it has just started; the attach listener answers before the VM
// is ready for an agent). A JVM run with -XX:-UsePerfData is not waited
// for, nor one whose hsperfdata is missing. The wait lasts until the JVM
// is startGrace old at most: a JVM starts in well under that, and one
// whose file still says "not initialised" then is refused at once (a
// *RefusedError), not waited on until the caller's deadline — the file
// is its user's to rewrite, and an agent would not have been loaded into
// a JVM saying so anyway.
func (c *call) waitInitialised(ctx context.Context) error {
	logged := false
	if f, ok := c.report.JVM.Flags["UsePerfData"]; ok && f.Value == "false" {
		return nil
	}
	watch := preflight.NewInitWatch(c.report)
	for poll := initPoll; ; poll = min(2*poll, maxInitPoll) {
		done, known := watch.Initialised(ctx)
		if done {
			return nil
		}
		age, err := processAge(c.report.Process.StartTime)
		if err != nil || age >= startGrace {
			if !known {
				return nil // no hsperfdata to tell: a JVM this old has made it
			}
			return &RefusedError{PID: c.pid, Verdict: c.verdict, Reason: fmt.Sprintf(
				"the JVM's hsperfdata still says it has not finished initialising (sun.rt.createVmEndTime is 0) %v after it started; a JVM starts within %v, so the file is not its own or the JVM is stuck: no agent is loaded into it",
				age.Round(time.Millisecond), startGrace)}
		}
		if !logged {
			c.log.Info("safeattach: waiting for the JVM to finish initialising before loading the agent", "pid", c.pid, "age", age.Round(time.Millisecond))
			logged = true
		}
		t := time.NewTimer(min(poll, startGrace-age))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: the JVM did not finish initialising (%v)", hotspot.ErrTimeout, ctx.Err())
		case <-t.C:
		}
		if !c.stillRunning() {
			return fmt.Errorf("pid %d: %w while initialising", c.pid, hotspot.ErrTargetExited)
		}
	}
}

func (s *session) close() {
	s.client.JVM.Close()
	s.delivery.release(s.c.pid, s.loaded)
	if s.loaded && s.c.opts.CrashMemory != nil && s.c.opts.CrashFollowUntil != nil {
		window := s.c.opts.CrashWindow
		if window <= 0 {
			window = DefaultCrashWindow
		}
		go followCrash(s.c.opts.CrashFollowUntil, s.c.opts.CrashMemory, s.c.report, s.c.agent, s.c.opts.CrashScope, window)
	}
}

// followCrash runs crashmem.Watch on the JVM r describes for at most
// window, under a context cancelled when until is closed. The goroutine
// tying that context to until ends with the watch, whichever ends it
// first: the window's end, the JVM's exit or until's closing.
func followCrash(until <-chan struct{}, store *crashmem.Store, r *preflight.Report, agent *preflight.Agent, scope string, window time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-until:
			cancel()
		case <-ctx.Done():
		}
	}()
	crashmem.Watch(ctx, store, r, agent, scope, window)
}

// DefaultCrashWindow is how long a JVM is followed after an attach for a
// crash to be blamed on it.
const DefaultCrashWindow = 10 * time.Minute

// load sends one load command with the agent's in-target path.
func (s *session) load(ctx context.Context, options string) (string, error) {
	var r *hotspot.Response
	err := s.c.watched(ctx, "load of "+s.c.agent.Path, func(ctx context.Context) (err error) {
		r, err = s.client.Load(ctx, s.agentPath, options)
		return err
	})
	out := ""
	if r != nil {
		out = string(r.Output)
	}
	if err != nil {
		return out, s.c.hang(ctx, "load of "+s.c.agent.Path, err)
	}
	s.loaded = true
	return out, nil
}
