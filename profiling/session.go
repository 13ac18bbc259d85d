package profiling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"

	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/fdtransfer"
)

// Session is async-profiler in one JVM, driven command by command: what
// `safeattach profile start|status|dump|stop` does across processes, and
// what a deployment agent does for hours (Windows). OpenSession
// inspects, judges and delivers the agent once; every command then loads
// the same delivered copy (the JVM's loader returns the one already
// loaded) with fresh file= and log= paths in the target, reads both back
// through the target's root and removes them, so a session leaves no
// files and holds no descriptors between commands.
//
// What comes back is the target's: each file is resolved inside its
// root without following links, must be a regular file of the JVM's
// user with no other links, and is read within SessionRequest.MaxOutput,
// streamed to the caller's writer. The agent's log is kept per command,
// capped in lines and bytes (docs/safety.md, invariant 11).
//
// A session owns the profiler it starts (invariant 12): another session
// that finds it running is refused with a *BusyError naming who started
// it and when, unless it takes over.
//
// The judgement is made once: a JVM whose allocator starts profiling
// later is not re-examined. A JVM that exits makes every later command
// fail with hotspot.ErrTargetExited; a daemon opens a new session for the
// restarted JVM's pid.
type Session struct {
	pid    int
	req    SessionRequest
	door   *attach.Door
	format string
	id     string
	// owned is the record of the profiler this session started or
	// adopted, while it runs.
	owned   *Owner
	lastLog []string
	// action names what started the profiler in its record: collect
	// (Profile), windows (Windows), start.
	action string
	// tmp is the target's /tmp, resolved in its root once and held: the
	// files commands leave there are read and removed relative to it,
	// and it stays usable after the JVM exits (its last profile).
	tmp *safefile.Dir
	// keepLast gives every start a real file= (not /dev/null), so that
	// what the agent writes as the JVM exits can be read back (Profile).
	keepLast bool
	// fdt serves the agent's descriptor requests (FdTransfer); fdtServing
	// is open while a connection of it is served.
	fdt        *fdtransfer.Server
	fdtServing chan struct{}
	// pprof: the profile is asked for as pprof; the agent records JFR
	// (format is "jfr") and every profile read back is converted in the
	// bounded child (PprofFromJFR).
	pprof bool
	// helper is a detached start's descriptor server (a process of its
	// own), until the start succeeded and it was let go.
	helper *os.Process
}

// ErrNoOutput: the agent wrote no output file for a command that should
// have one.
var ErrNoOutput = errors.New("the profiler wrote no output")

// OpenSession prepares pid for async-profiler commands: it finds the
// library (req.Lib or the installed one), inspects and judges the target
// (a refusal is an *attach.RefusedError), delivers the judged bytes and starts
// the attach listener. Nothing is loaded yet. Close it when done.
func OpenSession(ctx context.Context, pid int, req SessionRequest) (*Session, error) {
	return openSession(ctx, pid, req, "session")
}

// openSession is OpenSession audited as op.
func openSession(ctx context.Context, pid int, req SessionRequest, op string) (*Session, error) {
	if req.Options.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative timeout %v", attach.ErrInvalidOptions, req.Options.Timeout)
	}
	if err := req.Profiler.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", attach.ErrInvalidOptions, err)
	}
	if err := CheckFormat(req.Format, "pprof"); err != nil {
		return nil, err
	}
	if req.MaxOutput <= 0 {
		req.MaxOutput = DefaultMaxOutput
	}
	ss := &Session{pid: pid, req: req, id: randomHex(8)}
	ss.setFormat(formatFor(req))
	if ss.pprof {
		if err := findConverter(&ss.req); err != nil {
			return nil, err
		}
	}
	judged := ss.startOptions("")
	if req.FdTransfer && req.Profiler.FdTransfer == "" {
		// The descriptor server's socket is named when it starts, after
		// the judgement; the rules must know that one will serve (a perf
		// event the JVM cannot open is then no reason to refuse).
		judged += ",fdtransfer"
	}
	d, err := attach.OpenDoor(ctx, pid, attach.DoorRequest{Lib: req.Lib, Builds: req.Builds, PickAgent: req.PickAgent, AgentOptions: judged, LoadedOnly: req.LoadedOnly, Operation: op, Options: req.Options})
	if err != nil {
		return nil, err
	}
	ss.door = d
	if req.EventFallback && profilesCPU(req.Profiler) && hasFinding(d.Verdict(), RulePerfEventsUnavailable) {
		ss.req.Profiler.Event = timerEvent(d.Agent())
		d.Logger().Info("safeattach: perf events unavailable; sampling with a timer", "pid", pid, "event", ss.req.Profiler.Event)
	}
	if dir, err := safefile.OpenDirIn(ctx, d.Report().Process.Root, "/tmp"); err == nil {
		ss.tmp = dir
	}
	return ss, nil
}

// inTmp reports whether file (a path in the target) is a name in its
// /tmp that the held directory can reach.
func (ss *Session) inTmp(file string) (string, bool) {
	if ss.tmp == nil || filepath.Dir(file) != "/tmp" {
		return "", false
	}
	return filepath.Base(file), true
}

// Event is the event a Start samples (after any fallback): the one
// asked for, or "cpu" when the options ask for no other profiling.
func (ss *Session) Event() string { return ss.req.Profiler.MainEvent() }

// profilesCPU reports whether o profiles CPU time with perf events: -e
// cpu, or no event and no other kind of profiling asked for (the agent's
// default).
func profilesCPU(o asprof.Options) bool {
	if o.Event != "" {
		return o.Event == "cpu"
	}
	return o.Alloc == "" && o.Lock == "" && o.Wall == "" && o.NativeMem == "" && o.NativeLock == "" && len(o.Trace) == 0 || o.All
}

// Format is what Stop and Dump write (for a session that adopted a
// running profile, the format it was started with).
func (ss *Session) Format() string {
	if ss.pprof {
		return "pprof"
	}
	return ss.format
}

// setFormat makes the session write format: pprof is recorded as JFR and
// converted when read back.
func (ss *Session) setFormat(format string) {
	ss.pprof = format == "pprof" || format == "" && wantsPprofOutput(ss.req.Output)
	if ss.pprof {
		format = "jfr"
	}
	ss.format = format
}

// Result is the judgement the session was opened under, the agent as
// judged and the path the JVM loads it from.
func (ss *Session) Result() attach.Result {
	return ss.door.Result()
}

// LastLog is what the agent logged for the last command (at most
// maxLogLines lines; nothing older is kept), with control characters
// and broken UTF-8 shown escaped (\x1b): the target's user can write
// to the log, and a terminal would obey them.
func (ss *Session) LastLog() []string { return ss.lastLog }

// Owner returns the record of the profiler running in the JVM, nil when
// none is known (no profiler, or one another tool started).
func (ss *Session) Owner(ctx context.Context) (*Owner, error) {
	stores, err := ss.stores(ctx, false)
	if err != nil {
		return nil, err
	}
	defer closeAll(stores)
	rec, _ := ss.readRecord(stores)
	return rec, nil
}

// startOptions are the start (or resume) command's options, as asprof
// builds them: the action, the format (jfr starts a recording), what to
// profile and how the output looks (checked when the session opened),
// and our timeout=.
func (ss *Session) startOptions(action string) string {
	if action == "" {
		action = "start"
	}
	parts := []string{action}
	if isJFR(ss.format) {
		parts = append(parts, "jfr")
	}
	if p, _ := ss.req.Profiler.Profiling(); p != "" {
		parts = append(parts, p)
	}
	if o, _ := ss.req.Profiler.Output(); o != "" {
		parts = append(parts, o)
	}
	if ss.req.AutoStop > 0 {
		parts = append(parts, "timeout="+strconv.Itoa(int((ss.req.AutoStop+time.Second-1)/time.Second)))
	}
	return strings.Join(parts, ",")
}

func isJFR(format string) bool { return strings.HasPrefix(format, "jfr") }

// outputOptions are the format and the request's options, as asprof
// passes them to every command (the output ones, title or minwidth,
// matter at stop and dump).
func (ss *Session) outputOptions() string {
	o, _ := ss.req.Profiler.Output()
	switch {
	case o == "":
		return ss.format
	case ss.format == "":
		return o
	}
	return ss.format + "," + o
}

// withOutput appends the output options to a command's verb.
func (ss *Session) withOutput(verb string) string {
	if o := ss.outputOptions(); o != "" {
		return verb + "," + o
	}
	return verb
}

// newTargetFile names a fresh file in the target's /tmp: random, so
// that no one can prepare it in advance.
func newTargetFile(kind, ext string) string {
	return "/tmp/.safeattach-" + kind + "-" + randomHex(8) + ext
}

// Command sends one async-profiler command ("status", "list",
// "dump,collapsed"...) with a fresh file= and log= in the target and
// streams what the agent wrote to file= into w (nil discards it). A
// failure the agent explains is an *AgentSaidError; its log is LastLog.
// Each command is bounded by ctx and by the request's attach.Options.Timeout
// (default attach.DefaultLoadTimeout), with the watcher beside it. Commands
// that change the profiler's state are refused here: use Start, Stop,
// Dump, Resume or Windows, which keep to its owner.
func (ss *Session) Command(ctx context.Context, command string, w io.Writer) (int64, error) {
	switch verb, _, _ := strings.Cut(command, ","); verb {
	case "start", "resume", "stop", "dump":
		return 0, fmt.Errorf("%w: %s through Command: use the Session method, which keeps to the profiler's owner", attach.ErrInvalidOptions, verb)
	}
	return ss.commandOutput(ctx, command, w)
}

// commandOutput runs command with a fresh output file and streams it to w.
func (ss *Session) commandOutput(ctx context.Context, command string, w io.Writer) (int64, error) {
	file := newTargetFile("out", extensionFor(ss.format))
	defer ss.removeInTarget(ctx, file)
	if _, err := ss.command(ctx, command, file); err != nil {
		return 0, err
	}
	if w == nil {
		w = io.Discard
	}
	n, err := ss.readBack(ctx, file, w)
	if errors.Is(err, ErrNoOutput) {
		return 0, nil // status and friends may write nothing
	}
	return n, err
}

// command sends command with file= and a fresh log=, reads the log back
// (bounded) and removes it; the output file is the caller's to read and
// remove.
func (ss *Session) command(ctx context.Context, command, file string) (log []string, err error) {
	logFile := newTargetFile("log", "")
	defer ss.removeInTarget(ctx, logFile)
	ctx, cancel := withTimeout(ctx, ss.req.Options.Timeout, attach.DefaultLoadTimeout)
	defer cancel()
	command += ",file=" + file + ",log=" + logFile
	_, lerr := ss.door.Load(ctx, command)
	log = ss.readLog(ctx, logFile)
	ss.lastLog = log
	if lerr != nil {
		return log, agentReason(log, lerr)
	}
	return log, nil
}

// readProfile streams a profile the agent wrote into w: as it is, or for
// a pprof session, converted from the JFR recording it is (read back into
// an anonymous file first, bounded as every output is; since is when the
// recording started).
func (ss *Session) readProfile(ctx context.Context, file string, w io.Writer, since time.Time) (int64, error) {
	if !ss.pprof {
		return ss.readBack(ctx, file, w)
	}
	return convertRecording(ctx, w, "pprof", ss.Event(), since, ss.req.Converter, func(jfr io.Writer) (int64, error) {
		return ss.readBack(ctx, file, jfr)
	})
}

// startedAt is when the profiler this session owns started (zero when
// another tool's runs).
func (ss *Session) startedAt() time.Time {
	if ss.owned == nil {
		return time.Time{}
	}
	return ss.owned.Since
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readBack streams the output file the agent wrote in the target into
// w: resolved inside the target's root, not a link, a regular file of
// the JVM's user with a single link, at most MaxOutput bytes (a writer
// that can take a size — a budget.Buffer — is asked for it first, so an
// output over budget is refused before a byte is read).
func (ss *Session) readBack(ctx context.Context, file string, w io.Writer) (int64, error) {
	h, err := ss.openOutput(ctx, file)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return copyOutput(w, h, ss.req.MaxOutput)
}

func (ss *Session) openOutput(ctx context.Context, file string) (*safefile.Handle, error) {
	h, err := ss.openTargetFile(ctx, file, ss.req.MaxOutput)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoOutput
	}
	if err != nil {
		return nil, fmt.Errorf("%w: its output: %w", attach.ErrTargetFileRefused, err)
	}
	return h, nil
}

// openTargetFile opens a file the JVM wrote: in the held /tmp when it is
// there, else resolved in the target's root; the JVM user's, one link.
func (ss *Session) openTargetFile(ctx context.Context, file string, limit int64) (*safefile.Handle, error) {
	pr := ss.door.Report().Process
	accept := safefile.Accept{UIDs: []uint32{pr.UID.Effective}, SingleLink: true}
	if name, ok := ss.inTmp(file); ok {
		return ss.tmp.Open(name, limit, accept)
	}
	return safefile.OpenIn(ctx, pr.Root, file, limit, accept)
}

// reserver is a writer that can be told the size to come (budget.Buffer).
type reserver interface{ Reserve(n int64) error }

func copyOutput(w io.Writer, h *safefile.Handle, max int64) (int64, error) {
	if r, ok := w.(reserver); ok {
		if err := r.Reserve(h.Stat.Size); err != nil {
			return 0, fmt.Errorf("the profiler's output (%d bytes): %w", h.Stat.Size, err)
		}
	}
	n, err := io.Copy(w, h.Reader(max))
	if err != nil {
		return n, fmt.Errorf("the profiler's output: %w", err)
	}
	return n, nil
}

// Start starts profiling with the request's event, interval and options,
// as this session's profiler. A profiler another session or tool runs is
// a *BusyError (ErrProfilerBusy), unless the request takes over.
func (ss *Session) Start(ctx context.Context) error { return ss.begin(ctx, "start", true) }

// Resume continues a stopped profile, keeping what it collected.
func (ss *Session) Resume(ctx context.Context) error { return ss.begin(ctx, "resume", true) }

// begin owns the profiler and sends start or resume; a JFR recording
// gets a file that lives until the recording stops. Another tool's
// profiler, which no record announced, is found by the agent's answer.
func (ss *Session) begin(ctx context.Context, action string, retry bool) error {
	if err := ss.acquire(ctx, action); err != nil {
		return err
	}
	// Without JFR, file= at start is only where a timeout= expiry, or
	// the JVM's exit, would make the agent write: nowhere, unless this
	// session reads a JVM's last profile (keepLast).
	file := "/dev/null"
	if ss.owned != nil && ss.owned.Recording != "" {
		file = ss.owned.Recording
	}
	if err := ss.serveFdTransfer(ctx); err != nil {
		ss.release(ctx)
		return err
	}
	log, err := ss.command(ctx, ss.startOptions(action), file)
	ss.settleHelper(err == nil)
	if err == nil {
		return nil
	}
	ss.release(ctx)
	if !mentions(log, "already started") {
		return err
	}
	if ss.req.Takeover && retry {
		ss.stopAny(ctx)
		return ss.begin(ctx, action, false)
	}
	_, status := ss.status(ctx)
	return &BusyError{PID: ss.pid, Status: status}
}

// acquire makes this session the owner of the JVM's profiler record, or
// refuses: an expired or unreadable record, or one whose profiler no
// longer runs, is cleaned up; one whose owner may be taken over has its
// profiler stopped first.
func (ss *Session) acquire(ctx context.Context, action string) error {
	if ss.owned != nil && ss.owned.Session == ss.id {
		return ss.rearm(ctx)
	}
	stores, err := ss.stores(ctx, true)
	if err != nil {
		// No place for a record: the agent's own "already started" is
		// then the only guard.
		ss.door.Logger().Warn("safeattach: profiler started without an owner record", "pid", ss.pid, "err", err)
		return nil
	}
	defer closeAll(stores)
	for range 4 {
		rec, store := ss.readRecord(stores)
		if rec == nil {
			o := ss.newOwner(action)
			ok, err := writeRecord(stores[0], ss.recordName(), o)
			if err != nil {
				return err
			}
			if ok {
				// What the stop will need, and what a later session
				// cleans up if we die, stays on our side; a detached
				// start cannot be finished without it.
				if err := saveStartState(ss.door.Report(), stateOf(o)); err != nil && o.Detached {
					removeRecordIf(stores[0], ss.recordName(), o.Session)
					return err
				}
				pruneStartStates()
			}
			if ok {
				ss.owned = o
				return nil
			}
			continue // another session wrote one meanwhile: look at it
		}
		switch {
		case rec.Session == "unreadable" || rec.expired(time.Now()):
		case ss.mayTakeOver(rec):
			ss.door.Logger().Info("safeattach: taking over the profiler", "pid", ss.pid, "owner", rec.String())
			ss.stopAny(ctx)
		default:
			if running, status := ss.status(ctx); running {
				return &BusyError{PID: ss.pid, Owner: rec, Status: status}
			}
		}
		ss.forget(ctx, store, rec)
	}
	return errors.New("the profiler's owner record kept changing; try again")
}

func (ss *Session) mayTakeOver(rec *Owner) bool {
	return ss.req.Takeover || ss.req.ReclaimOwn && ss.req.Owner != "" && rec.Tool == ss.req.Owner
}

// rearm renews our record for the next window: a fresh expiry, and a
// fresh recording file for JFR.
func (ss *Session) rearm(ctx context.Context) error {
	o := *ss.owned
	o.Since = time.Now().UTC().Truncate(time.Second)
	o.Expires = time.Time{}
	if ss.req.AutoStop > 0 {
		o.Expires = o.Since.Add(ss.req.AutoStop)
	}
	if isJFR(ss.format) {
		o.Recording = newTargetFile("rec", ".jfr")
	}
	stores, err := ss.stores(ctx, false)
	if err != nil {
		return err
	}
	defer closeAll(stores)
	if rec, store := ss.readRecord(stores); rec != nil && rec.Session == ss.id {
		if err := updateRecord(store, ss.recordName(), &o); err != nil {
			return err
		}
	}
	if err := saveStartState(ss.door.Report(), stateOf(&o)); err != nil && o.Detached {
		return err
	}
	ss.owned = &o
	return nil
}

// forget removes a record that is no one's any more, and its recording.
func (ss *Session) forget(ctx context.Context, store *os.File, rec *Owner) {
	if rec.Recording != "" {
		ss.removeInTarget(ctx, rec.Recording)
	}
	removeRecordIf(store, ss.recordName(), rec.Session)
	dropStartState(ss.door.Report(), rec.Session)
}

// release ends this session's ownership: its record and recording go.
func (ss *Session) release(ctx context.Context) {
	if ss.owned == nil {
		return
	}
	o := ss.owned
	ss.owned = nil
	stores, err := ss.stores(ctx, false)
	if err != nil {
		return
	}
	defer closeAll(stores)
	if rec, store := ss.readRecord(stores); rec != nil && rec.Session == o.Session {
		ss.forget(ctx, store, rec)
	} else if o.Recording != "" {
		ss.removeInTarget(ctx, o.Recording)
	}
	dropStartState(ss.door.Report(), o.Session)
}

// own makes sure this session may stop or dump the running profiler: its
// own, a detached one (adopted, with the format it was started with), an
// expired one, or one it may take over. Another live session's profiler
// is refused: stopping it would cut that session's profile short. A
// profiler no record announces was started by another tool (asprof, an
// -agentpath at launch): asking to stop or dump it is explicit, and it
// is done as asprof does (a start over it is still refused).
func (ss *Session) own(ctx context.Context) error {
	if ss.owned != nil {
		return nil
	}
	stores, err := ss.stores(ctx, false)
	if err != nil {
		return err
	}
	defer closeAll(stores)
	rec, store := ss.readRecord(stores)
	if rec == nil {
		// Another user's detached start is not ours to finish: its
		// output and recording are that user's to know.
		if f := ss.foreignRecord(ctx); f != nil && f.Detached && !ss.req.Takeover {
			if running, status := ss.status(ctx); running {
				return &BusyError{PID: ss.pid, Owner: f, Status: status, OtherUser: true}
			}
		}
		return nil // another tool's, or not running: the agent will say so
	}
	if !rec.Detached && rec.Session != "unreadable" && !rec.expired(time.Now()) && !ss.mayTakeOver(rec) {
		if running, status := ss.status(ctx); running {
			return &BusyError{PID: ss.pid, Owner: rec, Status: status}
		}
	}
	// Adopt it: this session finishes what the record describes.
	adopted := *rec
	adopted.Session = ss.id
	if err := updateRecord(store, ss.recordName(), &adopted); err != nil {
		return err
	}
	if rec.Format != "" || rec.Recording != "" || rec.Output != "" {
		// Our own start's state (readRecord found it): it follows the
		// record to its new session, for a later stop after a dump.
		if err := saveStartState(ss.door.Report(), stateOf(&adopted)); err != nil {
			return err
		}
	}
	// The start's format, unless this request names one (-o, or an
	// output's extension); a JFR recording stays JFR whatever is asked.
	if adopted.Format != "" && (formatFor(ss.req) == "" || isJFR(adopted.Format)) {
		ss.setFormat(adopted.Format)
	}
	ss.owned = &adopted
	return nil
}

// status asks the agent whether it profiles. The answer is the target's
// text, kept as printable: it becomes part of a BusyError's message.
func (ss *Session) status(ctx context.Context) (running bool, text string) {
	var out bytes.Buffer
	if _, err := ss.commandOutput(ctx, "status", &limitedBuffer{&out, 4096}); err != nil {
		return false, ""
	}
	text = printable.Line(strings.TrimSpace(out.String()))
	return strings.Contains(text, "is running"), text
}

// stopAny stops whatever profiler runs (taking over), discarding its
// output; "not active" is fine.
func (ss *Session) stopAny(ctx context.Context) {
	file := newTargetFile("out", ".txt")
	defer ss.removeInTarget(ctx, file)
	ss.command(ctx, "stop", file)
}

// Stop stops profiling and streams the profile into w (for a JFR
// recording, the finished recording).
func (ss *Session) Stop(ctx context.Context, w io.Writer) (int64, error) {
	if err := ss.own(ctx); err != nil {
		return 0, err
	}
	defer ss.release(ctx)
	since := ss.startedAt()
	// A JFR recording exists only if the start made one: asked for at the
	// stop (-o jfr, -f x.jfr) of a profile started as text, the agent
	// writes nothing, and says nothing.
	textStart := isJFR(ss.format) && (ss.owned == nil || ss.owned.Recording == "")
	file, err := ss.stop(ctx)
	if err != nil {
		return 0, err
	}
	defer ss.removeInTarget(ctx, file)
	n, err := ss.readProfile(ctx, file, w, since)
	if errors.Is(err, ErrNoOutput) && textStart {
		err = fmt.Errorf("%w: the profile was started without JFR, which a .jfr (or pprof) needs from the start: profile start -o jfr", err)
	}
	return n, err
}

// stop sends stop and returns the file (in the target) that holds the
// profile: the recording for JFR, else a fresh one.
func (ss *Session) stop(ctx context.Context) (string, error) {
	file := newTargetFile("out", extensionFor(ss.format))
	if ss.owned != nil && ss.owned.Recording != "" {
		file = ss.owned.Recording
	}
	if _, err := ss.command(ctx, ss.withOutput("stop"), file); err != nil {
		ss.removeInTarget(ctx, file)
		return "", err
	}
	return file, nil
}

// lastProfile streams what the agent wrote to the start's file when the
// JVM exited (async-profiler dumps a running profile at VM death) and
// forgets the profiler, which exited with it.
func (ss *Session) lastProfile(ctx context.Context, w io.Writer) (int64, error) {
	if ss.owned == nil || ss.owned.Recording == "" {
		return 0, ErrNoOutput
	}
	file := ss.owned.Recording
	ss.owned = nil
	defer ss.removeInTarget(ctx, file)
	h, err := ss.openOutput(ctx, file)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return copyOutput(w, h, ss.req.MaxOutput)
}

// Dump streams the profile so far into w without stopping.
func (ss *Session) Dump(ctx context.Context, w io.Writer) (int64, error) {
	if err := ss.own(ctx); err != nil {
		return 0, err
	}
	if isJFR(ss.format) && ss.owned != nil && ss.owned.Recording != "" {
		// A JFR dump flushes the recording into the start's file (the
		// agent writes nothing to another): the recording so far is that
		// file, read and left in place for the stop.
		if _, err := ss.command(ctx, ss.withOutput("dump"), ss.owned.Recording); err != nil {
			return 0, err
		}
		return ss.readProfile(ctx, ss.owned.Recording, w, ss.startedAt())
	}
	file := newTargetFile("out", extensionFor(ss.format))
	defer ss.removeInTarget(ctx, file)
	if _, err := ss.command(ctx, ss.withOutput("dump"), file); err != nil {
		return 0, err
	}
	return ss.readBack(ctx, file, w)
}

// Rotate ends the current window and starts the next, keeping the
// profiler's ownership throughout: the finished window is streamed into
// w after the next one started.
func (ss *Session) Rotate(ctx context.Context, w io.Writer) (int64, error) {
	if err := ss.own(ctx); err != nil {
		return 0, err
	}
	since := ss.startedAt()
	file, err := ss.stop(ctx)
	if err != nil {
		ss.release(ctx)
		return 0, err
	}
	defer ss.removeInTarget(ctx, file)
	if err := ss.begin(ctx, "start", true); err != nil {
		return 0, err
	}
	return ss.readProfile(ctx, file, w, since)
}

// Healthy asks the JVM for its version.
func (ss *Session) Healthy(ctx context.Context) error {
	return ss.door.Healthy(ctx)
}

// Close ends the session on our side (the profiler keeps running if it
// was not stopped: its record stays, and its timeout= ends it): it
// releases the delivered copy, which stays in the target while the JVM
// maps it.
func (ss *Session) Close() {
	ss.door.Close()
	ss.tmp.Close()
	if ss.fdt != nil {
		ss.fdt.Close()
	}
}

// serveFdTransfer makes sure a descriptor server waits for the agent
// before a start: the agent connects while it starts and hangs up when
// it stops, so every start (a window's too) is served anew on the same
// socket.
func (ss *Session) serveFdTransfer(ctx context.Context) error {
	if !ss.req.FdTransfer {
		return nil
	}
	if ss.req.Detached {
		name, p, err := startHelper(ctx, ss.req.FdTransferHelper, ss.pid, FdTransferPolicy(ss.req))
		if err != nil {
			return err
		}
		ss.helper, ss.req.Profiler.FdTransfer = p, name
		return nil
	}
	if ss.fdt == nil {
		srv, err := fdtransfer.Listen(ss.pid, FdTransferPolicy(ss.req))
		if err != nil {
			return err
		}
		ss.fdt = srv
		ss.req.Profiler.FdTransfer = srv.Name()
	}
	if ss.fdtServing != nil {
		select {
		case <-ss.fdtServing:
		default:
			return nil // still serving the running profiler
		}
	}
	done := make(chan struct{})
	ss.fdtServing = done
	srv := ss.fdt
	go func() {
		defer close(done)
		if err := srv.Serve(context.Background()); err != nil {
			ss.door.Logger().Debug("safeattach: fdtransfer ended", "pid", ss.pid, "err", err)
		}
	}()
	return nil
}

// settleHelper lets a detached start's descriptor server go once the
// profiler started (it serves the profiler until its stop), or ends it.
func (ss *Session) settleHelper(started bool) {
	if ss.helper == nil {
		return
	}
	if started {
		ss.helper.Release()
	} else {
		ss.helper.Kill()
		ss.helper.Wait()
	}
	ss.helper = nil
}

// FdTransferPolicy is what a descriptor server may open for a session
// of req: its event as the agent will read it (cpu when no other
// profiling is asked for), kernel frames only when asked and not
// excluded by --all-user, branch stacks only for --cstack lbr.
func FdTransferPolicy(req SessionRequest) fdtransfer.Policy {
	o := req.Profiler
	event := o.Event
	if profilesCPU(o) {
		event = "cpu"
	} else if event == "" {
		event = "none" // alloc, lock, wall...: no perf event
	}
	return fdtransfer.Policy{Event: event, Kernel: req.FdTransferKernel && !o.AllUser, LBR: o.CStack == "lbr"}
}

// Limits on what is kept of the agent's log= file per command: the
// target writes it, and its user can make it any size.
const (
	maxLogLines    = 100
	maxLogLineSize = 1024
	maxLogScan     = 16 << 20 // lines past maxLogLines are counted this far
)

// readLog reads the agent's log file back (the JVM user's file, resolved
// in its root, not followed if a link): at most maxLogLines non-empty
// lines of at most maxLogLineSize bytes, then a line saying how many
// more were dropped.
func (ss *Session) readLog(ctx context.Context, name string) []string {
	h, err := ss.openTargetFile(ctx, name, 1<<62)
	if err != nil {
		return nil
	}
	defer h.Close()
	return capLines(h.Reader(maxLogScan))
}

// capLines keeps the first maxLogLines non-empty lines of r (each cut at
// maxLogLineSize) and counts the rest. Each line is kept as printable
// (the target's user writes to the log too, and every caller shows these
// lines: LastLog, an AgentSaidError, a window's Log); the cut is made on
// the bytes read, so a kept line, escaped, may be up to four times as
// long.
func capLines(r io.Reader) []string {
	var lines []string
	dropped, cut := 0, false
	buf := make([]byte, 32<<10)
	var line []byte
	long := false
	flush := func() {
		if s := printable.Line(strings.TrimSpace(string(line))); s != "" {
			if len(lines) < maxLogLines {
				if long {
					s += " …"
				}
				lines = append(lines, s)
			} else {
				dropped++
			}
		}
		line, long = line[:0], false
	}
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b == '\n' {
				flush()
				continue
			}
			if len(line) < maxLogLineSize {
				line = append(line, b)
			} else {
				long = true
			}
		}
		if err != nil {
			cut = errors.Is(err, safefile.ErrTooLarge)
			break
		}
	}
	flush()
	switch {
	case cut:
		lines = append(lines, fmt.Sprintf("… %d more lines dropped, and the log went on past %d MiB", dropped, maxLogScan>>20))
	case dropped > 0:
		lines = append(lines, fmt.Sprintf("… %d more lines dropped", dropped))
	}
	return lines
}

// limitedBuffer keeps at most n bytes of what is written to it.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
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
