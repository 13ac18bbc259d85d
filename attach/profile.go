package attach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/preflight"
)

// ProfileRequest is an async-profiler session, as asprof users know it.
type ProfileRequest struct {
	// Lib is the async-profiler library; empty means the installed one
	// ($ASYNC_PROFILER_HOME, asprof on PATH, /opt/async-profiler).
	Lib string
	// Event is what to sample: cpu (default), alloc, lock, wall, itimer...
	Event string
	// Duration is how long to profile (default 10s). Cancelling ctx ends
	// the profile early; it is still stopped cleanly and written.
	Duration time.Duration
	// Interval is the sampling interval in async-profiler's syntax
	// ("10ms", "500us"); empty keeps the profiler's default.
	Interval string
	// Output is where the result is written on this machine. It must be
	// absent or a regular file: a symlink, device or FIFO there is refused
	// before anything is attached, and the result replaces a regular file
	// only once complete. Ignored when Writer is set.
	Output string
	// Writer, if set, receives the result instead of a file (stdout).
	Writer io.Writer
	// OutputMode is the new file's permission bits (default 0644).
	OutputMode os.FileMode
	// OutputOwner, if set, owns the new file (the invoking user under
	// sudo); otherwise it belongs to the caller.
	OutputOwner *Owner
	// Format is flamegraph, collapsed, tree, jfr, ...; empty picks it
	// from Output's extension as asprof does.
	Format string
	// Extra is appended to the start options verbatim (e.g. "threads").
	Extra string
	// EventFallback switches -e cpu to a timer-based event (ctimer for
	// async-profiler 3.0+, else itimer) when the rules find that the
	// target cannot open perf events.
	EventFallback bool
	// Progress, if set, is called about once a second while profiling.
	Progress func(elapsed, total time.Duration)
	// Options are the attach options; Timeout, if set, bounds the whole
	// session including Duration.
	Options Options
}

// Owner is a file's owner.
type Owner struct{ UID, GID int }

// ProfileResult is a finished profile.
type ProfileResult struct {
	Result
	Output string `json:"output"`
	Bytes  int64  `json:"bytes"`
	// Event is what was sampled (after any fallback); Format what was
	// written.
	Event  string `json:"event"`
	Format string `json:"format,omitempty"`
	// AgentLog holds the agent's own messages (async-profiler's log= file,
	// read back after each command): "Profiling started", warnings, and
	// the reason of a failure.
	AgentLog []string `json:"agent_log,omitempty"`
	// Cancelled is set when ctx ended the profile before Duration.
	Cancelled bool `json:"cancelled,omitempty"`
}

// formatFor picks the output format as asprof does: -o first; else the
// file name's extension (.html flamegraph, .jfr jfr, .collapsed and
// .folded collapsed); else asprof's text summary.
func formatFor(req ProfileRequest) string {
	if req.Format != "" {
		return req.Format
	}
	switch strings.ToLower(filepath.Ext(req.Output)) {
	case ".html":
		return "flamegraph"
	case ".jfr":
		return "jfr"
	case ".collapsed", ".folded":
		return "collapsed"
	}
	return "summary,traces=200,flat=200"
}

// extensionFor is the extension of the file the profiler writes inside
// the target: async-profiler also looks at it, so it must agree with the
// format.
func extensionFor(format string) string {
	switch f, _, _ := strings.Cut(format, ","); f {
	case "jfr":
		return ".jfr"
	case "flamegraph", "tree":
		return ".html"
	case "collapsed":
		return ".collapsed"
	}
	return ".txt"
}

// ExpandOutputName expands asprof's placeholders in an output file name:
// %p the pid, %t the time (YYYYMMDD-hhmmss), %n{MAX} a sequence number
// modulo MAX (or n itself with a bare %n), %% a percent sign.
func ExpandOutputName(name string, pid int, t time.Time, n int) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' || i+1 == len(name) {
			b.WriteByte(name[i])
			continue
		}
		i++
		switch name[i] {
		case 'p':
			fmt.Fprint(&b, pid)
		case 't':
			b.WriteString(t.Format("20060102-150405"))
		case '%':
			b.WriteByte('%')
		case 'n':
			seq := n
			if i+1 < len(name) && name[i+1] == '{' {
				if end := strings.IndexByte(name[i+1:], '}'); end > 0 {
					if max, err := strconv.Atoi(name[i+2 : i+1+end]); err == nil && max > 0 {
						seq = n % max
					}
					i += 1 + end
				}
			}
			fmt.Fprint(&b, seq)
		default:
			b.WriteByte('%')
			b.WriteByte(name[i])
		}
	}
	return b.String()
}

// stopGrace bounds stopping the profiler after a cancelled profile.
const stopGrace = 30 * time.Second

// Profile runs async-profiler in the JVM pid for req.Duration and writes
// the result to req.Output, if the knowledge base finds the combination
// safe. The file the profiler writes inside the target is read back
// through /proc/<pid>/root, so targets in containers work too.
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
	// The output is checked and reserved before anything is attached:
	// profiling for minutes and then failing to write is the worst order.
	var out *outputFile
	if req.Writer == nil {
		if out, err = prepareOutput(req.Output, req.OutputMode, req.OutputOwner); err != nil {
			return nil, fmt.Errorf("%w: profile: %v", ErrInvalidOptions, err)
		}
		defer out.discard()
	}
	if req.Event == "" {
		req.Event = "cpu"
	}
	lib := req.Lib
	if lib == "" {
		var searched []string
		if lib, searched = preflight.FindAsyncProfiler(); lib == "" {
			return nil, fmt.Errorf("profile: no async-profiler found (searched %s); give its library with --lib", strings.Join(searched, ", "))
		}
	}
	opts := req.Options
	c := newCall("profile", pid, opts)
	c.ctx = ctx
	defer func() { c.finish(err) }()
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = req.Duration + DefaultLoadTimeout
	}
	// The session's own deadline; cancelling the caller's ctx ends only
	// the waiting, not the clean stop.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	c.deadline, _ = sctx.Deadline()

	var rnd [8]byte
	rand.Read(rnd[:])
	format := formatFor(req)
	inTarget := fmt.Sprintf("/tmp/.safeattach-profile-%s%s", hex.EncodeToString(rnd[:]), extensionFor(format))
	// The agent's messages go to a log file the caller reads back, not to
	// the application's stdout.
	logInTarget := fmt.Sprintf("/tmp/.safeattach-log-%s", hex.EncodeToString(rnd[:]))
	jfr := strings.HasPrefix(format, "jfr")
	startOptions := func(event string) string {
		start := fmt.Sprintf("start,event=%s,file=%s,log=%s", event, inTarget, logInTarget)
		if jfr {
			// A JFR recording starts with the profiler, not at stop.
			start += ",jfr"
		}
		if req.Interval != "" {
			start += ",interval=" + req.Interval
		}
		if req.Extra != "" {
			start += "," + req.Extra
		}
		return start
	}
	start := startOptions(req.Event)
	if err := c.readAgent(sctx, lib, start); err != nil {
		return nil, err
	}
	if err := c.judge(sctx, preflight.Options{}); err != nil {
		return nil, err
	}
	if req.EventFallback && req.Event == "cpu" && hasFinding(c.verdict, RulePerfEventsUnavailable) {
		req.Event = timerEvent(c.agent)
		start = startOptions(req.Event)
		c.agent.Options = start
		c.log.Info("safeattach: perf events unavailable; sampling with a timer", "pid", pid, "event", req.Event)
	}
	pctx, pcancel := c.protocolContext(sctx)
	defer pcancel()
	s, err := c.open(pctx)
	if err != nil {
		return nil, err
	}
	defer s.close()
	hostFile := filepath.Join(c.report.Process.Root, inTarget)
	defer os.Remove(hostFile)
	hostLog := filepath.Join(c.report.Process.Root, logInTarget)
	defer os.Remove(hostLog)

	res = &ProfileResult{Result: Result{PID: pid, Verdict: c.verdict, Agent: c.agent, LoadedFrom: s.agentPath}, Event: req.Event}
	_, err = s.load(pctx, start)
	if err = res.agentSaid(hostLog, c.report.Process.UID.Effective, err); err != nil {
		return res, err
	}
	res.Cancelled = wait(ctx, pctx, req)
	stopCtx := pctx
	if res.Cancelled {
		var stopCancel context.CancelFunc
		stopCtx, stopCancel = context.WithTimeout(pctx, stopGrace)
		defer stopCancel()
	}
	_, err = s.load(stopCtx, fmt.Sprintf("stop,file=%s,log=%s,%s", inTarget, logInTarget, format))
	if err = res.agentSaid(hostLog, c.report.Process.UID.Effective, err); err != nil {
		return res, err
	}
	n, err := copyOut(hostFile, c.report.Process.UID.Effective, out, req.Writer)
	if err != nil {
		return res, fmt.Errorf("profile: %w", err)
	}
	res.Output, res.Bytes, res.Format = req.Output, n, format
	if err := c.healthCheck(pctx, s.client); err != nil {
		return res, err
	}
	res.Healthy = true
	res.took(c.start)
	return res, nil
}

// wait sleeps for the profile's duration, reporting progress, and returns
// early (true) when the caller cancels.
func wait(callerCtx, sessionCtx context.Context, req ProfileRequest) (cancelled bool) {
	start := time.Now()
	end := start.Add(req.Duration)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		timer := time.NewTimer(left)
		select {
		case <-timer.C:
			return false
		case <-callerCtx.Done():
			timer.Stop()
			return true
		case <-sessionCtx.Done():
			timer.Stop()
			return true
		case <-tick.C:
			timer.Stop()
			if req.Progress != nil {
				req.Progress(time.Since(start), req.Duration)
			}
		}
	}
}

// RulePerfEventsUnavailable is the rule that finds -e cpu cannot work.
const RulePerfEventsUnavailable = "perf-events-unavailable"

func hasFinding(v conflicts.Verdict, rule string) bool {
	for _, f := range v.Findings {
		if f.Rule == rule && f.Severity != conflicts.Info {
			return true
		}
	}
	return false
}

// timerEvent is the CPU event that needs no perf events: ctimer (per
// thread CPU timers, accurate) from async-profiler 3.0, itimer before.
func timerEvent(a *preflight.Agent) string {
	if v, err := conflicts.ParseVersion(a.Version); err == nil && v.Segments()[0] >= 3 {
		return "ctimer"
	}
	return "itimer"
}

// maxAgentLog caps what is read of the agent's log per command.
const maxAgentLog = 1 << 20

// agentSaid reads the agent's log file back (it is the target user's:
// opened without following links, only if regular and owned by that user
// or root), removes it, keeps its lines, and makes the agent's own
// "[ERROR] ..." the message of a failed command.
func (r *ProfileResult) agentSaid(hostLog string, targetUID uint32, err error) error {
	f, rerr := safefile.Read(context.Background(), hostLog, maxAgentLog, safefile.Options{NoFollow: true})
	os.Remove(hostLog)
	if rerr == nil && (f.Stat.Uid == targetUID || f.Stat.Uid == 0) {
		for _, line := range strings.Split(strings.TrimSpace(string(f.Data)), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				r.AgentLog = append(r.AgentLog, line)
			}
		}
	}
	if err == nil {
		return nil
	}
	var said []string
	for _, l := range r.AgentLog {
		if strings.HasPrefix(l, "[ERROR]") {
			said = append(said, strings.TrimSpace(strings.TrimPrefix(l, "[ERROR]")))
		}
	}
	if len(said) > 0 {
		return &AgentSaidError{Said: strings.Join(said, "; "), Err: err}
	}
	return err
}

// AgentSaidError is a failed agent command with the agent's own reason.
type AgentSaidError struct {
	Said string
	Err  error
}

func (e *AgentSaidError) Error() string { return e.Said + " (" + e.Err.Error() + ")" }
func (e *AgentSaidError) Unwrap() error { return e.Err }

// MinProfileOverhead is the least time a profile needs beyond its
// duration: inspection, delivery, start, stop and the health check of an
// idle JVM take well under a second here; twice that leaves room.
const MinProfileOverhead = 2 * time.Second

// maxProfileSize caps what is copied back from the target.
const maxProfileSize = 4 << 30

// copyOut copies the profile the agent wrote inside the target (a file
// the target's user could have replaced with a symlink or FIFO: opened
// without following links or blocking, and only if it is a regular file
// owned by that user or root) to the prepared output or to w.
func copyOut(src string, targetUID uint32, out *outputFile, w io.Writer) (int64, error) {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("the profiler wrote no output: %w", err)
	}
	in := os.NewFile(uintptr(fd), src)
	defer in.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (st.Uid != targetUID && st.Uid != 0) {
		return 0, fmt.Errorf("the profiler's output %s is %s owned by uid %d; not reading it", src, safefile.TypeName(st.Mode), st.Uid)
	}
	_ = unix.SetNonblock(fd, false)
	r := io.LimitReader(in, maxProfileSize)
	if w != nil {
		return io.Copy(w, r)
	}
	return out.commit(r)
}

// outputFile is the user's output, prepared before the attach: a
// temporary file beside the destination, renamed over it once complete
// (a full disk or an interrupted run leaves what was there before).
type outputFile struct {
	dst string
	tmp *os.File
}

// prepareOutput refuses a destination that is not absent or a regular
// file, and proves the directory writable by creating the temporary file.
func prepareOutput(dst string, mode os.FileMode, owner *Owner) (*outputFile, error) {
	if mode == 0 {
		mode = 0o644
	}
	if err := checkDestination(dst); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return nil, fmt.Errorf("cannot write the output: %w", err)
	}
	err = tmp.Chmod(mode)
	if err == nil && owner != nil {
		err = tmp.Chown(owner.UID, owner.GID)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("prepare %s: %w", dst, err)
	}
	return &outputFile{dst: dst, tmp: tmp}, nil
}

// checkDestination allows an absent path or a regular file, nothing that
// a rename would replace with surprising effect (a symlink to
// /dev/stdout, a device, a FIFO, a directory).
func checkDestination(dst string) error {
	var st unix.Stat_t
	err := unix.Lstat(dst, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", dst, err)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is %s; refusing to replace it (give a regular file, or - for standard output)", dst, safefile.TypeName(st.Mode))
	}
	return nil
}

// commit writes r into the temporary file and renames it into place.
func (o *outputFile) commit(r io.Reader) (int64, error) {
	n, err := io.Copy(o.tmp, r)
	if err == nil {
		err = o.tmp.Sync()
	}
	if err == nil {
		err = checkDestination(o.dst)
	}
	if cerr := o.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.tmp.Name(), o.dst)
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", o.dst, err)
	}
	o.tmp = nil
	return n, nil
}

// discard removes the temporary file unless it was committed.
func (o *outputFile) discard() {
	if o == nil || o.tmp == nil {
		return
	}
	o.tmp.Close()
	os.Remove(o.tmp.Name())
}
