package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/preflight"
)

// Session is async-profiler in one JVM, driven command by command: what
// `safeattach profile start|status|dump|stop` does across processes, and
// what a deployment agent does for hours (Start, Rotate every window,
// Stop). OpenSession inspects, judges and delivers the agent once; every
// command then loads the same delivered copy (the JVM's loader returns
// the one already loaded) with fresh file= and log= paths in the target,
// reads both back through the target's root and removes them, so a
// session leaves no files and holds no descriptors between commands.
//
// The judgement is made once: a JVM whose allocator starts profiling
// later is not re-examined. A JVM that exits makes every later command
// fail with hotspot.ErrTargetExited; a daemon opens a new session for the
// restarted JVM's pid.
type Session struct {
	pid    int
	req    ProfileRequest
	c      *call
	s      *session
	format string
	// recording is the JFR file (in the target) of the running recording:
	// async-profiler writes a JFR to the file named at start, and at stop
	// finishes that file whatever stop names.
	recording string
	// Log is every line the agent logged, across commands.
	Log []string
}

// maxCommandOutput caps what one command's file= is read back to.
const maxCommandOutput = 1 << 30

// OpenSession prepares pid for async-profiler commands: it finds the
// library (req.Lib or the installed one), inspects and judges the target
// (a refusal is a *RefusedError), delivers the judged bytes and starts
// the attach listener. Nothing is loaded yet. req.Output, Writer and
// Duration are not used by a session. Close it when done.
func OpenSession(ctx context.Context, pid int, req ProfileRequest) (*Session, error) {
	return openSession(ctx, pid, req, "session")
}

// openSession is OpenSession audited as op.
func openSession(ctx context.Context, pid int, req ProfileRequest, op string) (*Session, error) {
	if err := req.Options.validate(); err != nil {
		return nil, err
	}
	if req.Event == "" {
		req.Event = "cpu"
	}
	lib := req.Lib
	if lib == "" {
		var searched []string
		if lib, searched = preflight.FindAsyncProfiler(); lib == "" {
			return nil, fmt.Errorf("no async-profiler found (searched %s); give its library with --lib", strings.Join(searched, ", "))
		}
	}
	c := newCall(op, pid, req.Options)
	c.ctx = ctx
	ctx, cancel := req.Options.withDeadline(ctx, DefaultLoadTimeout)
	defer cancel()
	c.deadline, _ = ctx.Deadline()
	ss := &Session{pid: pid, req: req, c: c, format: formatFor(req)}
	if err := c.readAgent(ctx, lib, ss.startOptions("")); err != nil {
		return nil, err
	}
	if err := c.judge(ctx, preflight.Options{}); err != nil {
		c.finish(err)
		return nil, err
	}
	if req.EventFallback && req.Event == "cpu" && hasFinding(c.verdict, RulePerfEventsUnavailable) {
		ss.req.Event = timerEvent(c.agent)
		c.log.Info("safeattach: perf events unavailable; sampling with a timer", "pid", pid, "event", ss.req.Event)
	}
	pctx, pcancel := c.protocolContext(ctx)
	defer pcancel()
	s, err := c.open(pctx)
	if err != nil {
		c.finish(err)
		return nil, err
	}
	ss.s = s
	return ss, nil
}

// Event is the event a Start samples (after any fallback).
func (ss *Session) Event() string { return ss.req.Event }

// Verdict is the judgement the session was opened under.
func (ss *Session) Verdict() Result {
	return Result{PID: ss.pid, Verdict: ss.c.verdict, Agent: ss.c.agent, LoadedFrom: ss.s.agentPath}
}

// startOptions are the start (or resume) command's options, as asprof
// builds them.
func (ss *Session) startOptions(action string) string {
	if action == "" {
		action = "start"
	}
	o := action + ",event=" + ss.req.Event
	if strings.HasPrefix(ss.format, "jfr") {
		o += ",jfr" // a JFR recording starts with the profiler
	}
	if ss.req.Interval != "" {
		o += ",interval=" + ss.req.Interval
	}
	if ss.req.Extra != "" {
		o += "," + ss.req.Extra
	}
	return o
}

// outputOptions are the format and the request's options, as asprof
// passes them to every command (the output ones, title or minwidth,
// matter at stop and dump).
func (ss *Session) outputOptions() string {
	if ss.req.Extra == "" {
		return ss.format
	}
	return ss.format + "," + ss.req.Extra
}

// Command sends one async-profiler command ("status", "list",
// "start,event=cpu", "dump,collapsed"...) with fresh file= and log= in
// the target, and returns what the agent wrote to file= and the lines it
// logged. A failure the agent explains is an *AgentSaidError. Each
// command is bounded by ctx and by the request's Options.Timeout
// (default DefaultLoadTimeout), with the watcher beside it.
func (ss *Session) Command(ctx context.Context, command string) (out []byte, log []string, err error) {
	return ss.command(ctx, command, "", true)
}

// newTargetFile names a fresh file in the target's /tmp.
func newTargetFile(kind, ext string) string {
	var rnd [8]byte
	rand.Read(rnd[:])
	return "/tmp/.safeattach-" + kind + "-" + hex.EncodeToString(rnd[:]) + ext
}

// command sends command with file= (a fresh one unless given) and a
// fresh log=, reads both back, and removes the log — and the file too
// unless keep is false (a JFR recording in progress).
func (ss *Session) command(ctx context.Context, command, file string, remove bool) (out []byte, log []string, err error) {
	defer func() { ss.Log = append(ss.Log, log...) }()
	if file == "" {
		file = newTargetFile("out", extensionFor(ss.format))
	}
	logFile := newTargetFile("log", "")
	root := ss.c.report.Process.Root
	hostFile, hostLog := filepath.Join(root, file), filepath.Join(root, logFile)
	if remove {
		defer os.Remove(hostFile)
	}
	defer os.Remove(hostLog)
	ctx, cancel := ss.req.Options.withDeadline(ctx, DefaultLoadTimeout)
	defer cancel()
	ss.c.deadline, _ = ctx.Deadline()
	command += ",file=" + file + ",log=" + logFile
	_, lerr := ss.s.load(ctx, command)
	log = readLog(hostLog, ss.c.report.Process.UID.Effective)
	if lerr != nil {
		return nil, log, agentReason(log, lerr)
	}
	if f, rerr := safefile.Read(ctx, hostFile, maxCommandOutput, safefile.Options{NoFollow: true}); rerr == nil {
		if f.Stat.Uid != ss.c.report.Process.UID.Effective && f.Stat.Uid != 0 {
			return nil, log, fmt.Errorf("the profiler's output %s is owned by uid %d; not reading it", file, f.Stat.Uid)
		}
		out = f.Data
	} else if !errors.Is(rerr, os.ErrNotExist) {
		return nil, log, rerr
	}
	return out, log, nil
}

// Start starts profiling with the request's event, interval and options.
// A profiler found already running (another session's, or one left by a
// caller that died) is stopped and started again with these settings.
func (ss *Session) Start(ctx context.Context) error {
	log, err := ss.start(ctx, "start")
	if err != nil && mentions(log, "already started") {
		if _, _, serr := ss.Command(ctx, "stop"); serr == nil {
			_, err = ss.start(ctx, "start")
		}
	}
	return err
}

// start sends start or resume; a JFR recording gets a file that lives
// until the recording stops.
func (ss *Session) start(ctx context.Context, action string) ([]string, error) {
	if !strings.HasPrefix(ss.format, "jfr") {
		_, log, err := ss.Command(ctx, ss.startOptions(action))
		return log, err
	}
	if ss.recording == "" {
		ss.recording = newTargetFile("rec", ".jfr")
	}
	_, log, err := ss.command(ctx, ss.startOptions(action), ss.recording, false)
	return log, err
}

// Resume continues a stopped profile, keeping what it collected.
func (ss *Session) Resume(ctx context.Context) error {
	_, err := ss.start(ctx, "resume")
	return err
}

// Dump returns the profile so far without stopping.
func (ss *Session) Dump(ctx context.Context) ([]byte, error) {
	out, _, err := ss.Command(ctx, "dump,"+ss.outputOptions())
	return out, err
}

// Stop stops profiling and returns the profile.
func (ss *Session) Stop(ctx context.Context) ([]byte, error) {
	if ss.recording != "" {
		rec := ss.recording
		ss.recording = ""
		out, _, err := ss.command(ctx, "stop,"+ss.outputOptions(), rec, true)
		return out, err
	}
	out, _, err := ss.Command(ctx, "stop,"+ss.outputOptions())
	return out, err
}

// Rotate ends the current window and starts the next: it returns the
// finished window's profile.
func (ss *Session) Rotate(ctx context.Context) ([]byte, error) {
	out, err := ss.Stop(ctx)
	if err != nil {
		return nil, err
	}
	return out, ss.Start(ctx)
}

// Healthy asks the JVM for its version.
func (ss *Session) Healthy(ctx context.Context) error {
	return ss.c.healthCheck(ctx, ss.s.client)
}

// Close ends the session on our side (the profiler keeps running if it
// was not stopped): it releases the delivered copy, which stays in the
// target while the JVM maps it.
func (ss *Session) Close() {
	ss.s.close()
}

// readLog reads the agent's log file back (the target user's file: not
// followed if a link, read only if regular and owned by that user or
// root) and removes it.
func readLog(hostLog string, targetUID uint32) []string {
	f, err := safefile.Read(context.Background(), hostLog, maxAgentLog, safefile.Options{NoFollow: true})
	os.Remove(hostLog)
	if err != nil || (f.Stat.Uid != targetUID && f.Stat.Uid != 0) {
		return nil
	}
	var lines []string
	for _, line := range strings.Split(string(f.Data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// agentReason makes the agent's own "[ERROR] ..." the message of a failed
// command.
func agentReason(log []string, err error) error {
	var said []string
	for _, l := range log {
		if strings.HasPrefix(l, "[ERROR]") {
			said = append(said, strings.TrimSpace(strings.TrimPrefix(l, "[ERROR]")))
		}
	}
	if len(said) == 0 {
		return err
	}
	return &AgentSaidError{Said: strings.Join(said, "; "), Err: err}
}

func mentions(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// Profile runs async-profiler in the JVM pid for req.Duration and writes
// the result to req.Output (or req.Writer), if the knowledge base finds
// the combination safe: a Session started, waited on, stopped. The
// output is prepared before anything is attached; cancelling ctx ends
// the profile early, and it is still stopped cleanly and written.
func Profile(ctx context.Context, pid int, req ProfileRequest) (res *ProfileResult, err error) {
	if req.Output == "" && req.Writer == nil {
		return nil, fmt.Errorf("%w: profile: no output file given", ErrInvalidOptions)
	}
	if req.Duration <= 0 {
		req.Duration = 10 * time.Second
	}
	if t := req.Options.Timeout; t < 0 || t > 0 && t < req.Duration+MinProfileOverhead {
		return nil, fmt.Errorf("%w: a timeout of %v leaves no time to start and stop a %v profile (give at least %v)", ErrInvalidOptions, t, req.Duration, req.Duration+MinProfileOverhead)
	}
	var out *OutputFile
	if req.Writer == nil {
		if out, err = prepareOutput(req.Output, req.OutputMode, req.OutputOwner); err != nil {
			return nil, fmt.Errorf("%w: profile: %v", ErrInvalidOptions, err)
		}
		defer out.discard()
	}
	// The session's own deadline covers the whole profile; cancelling the
	// caller's ctx ends only the waiting, not the clean stop.
	timeout := req.Options.Timeout
	if timeout <= 0 {
		timeout = req.Duration + DefaultLoadTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	sreq := req
	sreq.Options.Timeout = 0
	ss, err := openSession(sctx, pid, sreq, "profile")
	if err != nil {
		return nil, err
	}
	defer ss.Close()
	c := ss.c
	c.ctx = ctx
	c.deadline, _ = sctx.Deadline()
	defer func() { c.finish(err) }()
	res = &ProfileResult{Result: ss.Verdict(), Event: ss.Event(), Format: ss.format}
	defer func() { res.AgentLog = ss.Log }()
	if err := ss.Start(sctx); err != nil {
		return res, err
	}
	res.Cancelled = wait(ctx, sctx, req)
	data, err := ss.Stop(sctx)
	if err != nil {
		return res, err
	}
	if data == nil {
		return res, errors.New("profile: the profiler wrote no output")
	}
	if req.Writer != nil {
		n, err := req.Writer.Write(data)
		res.Bytes = int64(n)
		if err != nil {
			return res, fmt.Errorf("profile: %w", err)
		}
	} else {
		if res.Bytes, err = out.commit(strings.NewReader(string(data))); err != nil {
			return res, fmt.Errorf("profile: %w", err)
		}
		res.Output = req.Output
	}
	if err := ss.Healthy(sctx); err != nil {
		return res, err
	}
	res.Healthy = true
	res.took(c.start)
	return res, nil
}
