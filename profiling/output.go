package profiling

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/outfile"
)

// Destination is where a stop or a dump writes the profile on this
// machine: a file (prepared as Profile's output is: absent or a regular
// file, replaced only once complete) or a stream.
type Destination struct {
	// Path names the file, Writer the stream (Path is then ignored).
	Path   string
	Writer io.Writer
	// Mode is a new file's permission bits (default 0644); Owner, if
	// set, owns it.
	Mode  os.FileMode
	Owner *FileOwner
	// AsStarted writes where the detached start asked (its Output), when
	// it named a file and this caller is the one that started it: what
	// `profile stop` without -f does. Otherwise Path or Writer.
	AsStarted bool
}

// Written is what a stop or a dump wrote.
type Written struct {
	// File is the file written (empty: the Writer); Bytes its size.
	File  string
	Bytes int64
	// AsStarted is set when File is the one the start named.
	AsStarted bool
}

// StopTo stops the profiler and writes its profile to dst.
func (ss *Session) StopTo(ctx context.Context, dst Destination) (Written, error) {
	return writeTo(ctx, dst, ss.startOutput(ctx, dst), ss.Stop)
}

// DumpTo writes the profile so far to dst, the profiler running on.
func (ss *Session) DumpTo(ctx context.Context, dst Destination) (Written, error) {
	return writeTo(ctx, dst, ss.startOutput(ctx, dst), ss.Dump)
}

// startOutput is the file the detached start named, for a destination
// that asks for it. Only this caller's own state names it (the record in
// the target is the target's to write, and proves nothing).
func (ss *Session) startOutput(ctx context.Context, dst Destination) string {
	if !dst.AsStarted {
		return ""
	}
	if rec, _ := ss.Owner(ctx); rec != nil {
		return rec.Output
	}
	return ""
}

// writeTo has run write the profile to dst: the start's output when dst
// asks for it and the start named one, else dst's file or writer.
func writeTo(ctx context.Context, dst Destination, startOutput string, run func(context.Context, io.Writer) (int64, error)) (Written, error) {
	var w Written
	if dst.AsStarted && startOutput != "" {
		dst.Path, dst.Writer, w.AsStarted = startOutput, nil, true
	}
	if dst.Writer != nil {
		n, err := run(ctx, dst.Writer)
		w.Bytes = n
		return w, err
	}
	if dst.Path == "" {
		return w, fmt.Errorf("%w: no output file given (and no start named one): give one with -f", attach.ErrInvalidOptions)
	}
	out, err := outfile.Prepare(dst.Path, dst.Mode, dst.Owner.outfile())
	if err != nil {
		return w, err
	}
	defer out.Discard()
	if w.Bytes, err = run(ctx, out); err != nil {
		return w, err
	}
	if err := out.Commit(); err != nil {
		return w, err
	}
	w.File = out.Name()
	return w, nil
}

// ExpandName expands an output file name as asprof does: %p the pid, %t
// the time (YYYYMMDD-hhmmss), %n{MAX} a sequence number modulo MAX (%n:
// n itself).
func ExpandName(name string, pid int, t time.Time, n int) string {
	return outfile.Expand(name, pid, t, n)
}

// WindowFiles writes each window of a Session.Windows loop to a file of
// its own, named from a template with %t or %n: two windows never share
// a file unless the template's %n{MAX} says they should (a name already
// written gets the window's number before its extension).
type WindowFiles struct {
	template string
	pid      int
	mode     os.FileMode
	owner    *FileOwner
	used     map[string]bool
}

// NewWindowFiles checks template (it must name each window: %t or %n)
// and proves the first window's file can be written before anything is
// attached.
func NewWindowFiles(template string, pid int, mode os.FileMode, owner *FileOwner) (*WindowFiles, error) {
	if !strings.Contains(template, "%t") && !strings.Contains(template, "%n") {
		return nil, fmt.Errorf("%w: one file per window: put %%t (time) or %%n (sequence) in the name", attach.ErrInvalidOptions)
	}
	probe, err := outfile.Prepare(outfile.Expand(template, pid, time.Now(), 0), mode, owner.outfile())
	if err != nil {
		return nil, err
	}
	probe.Discard()
	return &WindowFiles{template: template, pid: pid, mode: mode, owner: owner, used: map[string]bool{}}, nil
}

// Name is the file window n, started at from, goes to.
func (f *WindowFiles) Name(from time.Time, n int) string {
	name := outfile.Expand(f.template, f.pid, from, n)
	if f.used[name] && !strings.Contains(f.template, "%n{") {
		ext := filepath.Ext(name)
		name = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(name, ext), n, ext)
	}
	f.used[name] = true
	return name
}

// Write writes window w to its file, complete or not at all.
func (f *WindowFiles) Write(w *Window) (Written, error) {
	name := f.Name(w.From, w.N)
	out, err := outfile.Prepare(name, f.mode, f.owner.outfile())
	if err != nil {
		return Written{}, err
	}
	defer out.Discard()
	n, err := io.Copy(out, w.Output)
	if err == nil {
		err = out.Commit()
	}
	if err != nil {
		return Written{Bytes: n}, fmt.Errorf("window %d: %w", w.N, err)
	}
	return Written{File: name, Bytes: n}, nil
}

// ParseDuration takes asprof's form (whole seconds: 30) and Go's (30s,
// 5m, 1h30m); zero and negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
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

// Actions are asprof's actions, as the layer runs them: collect (start,
// wait, stop: Profile), start, resume, stop, dump (a Session's), and
// the queries a Session's Command sends.
var Actions = []string{"collect", "start", "resume", "stop", "dump", "status", "metrics", "list", "meminfo", "check"}

// CheckTimeout refuses a timeout too short for a profile of d: it must
// leave MinProfileOverhead to start and stop. Zero is the default.
func CheckTimeout(timeout, d time.Duration) error {
	if timeout < 0 || timeout > 0 && timeout < d+MinProfileOverhead {
		return fmt.Errorf("%w: a timeout of %v leaves no time to start and stop a %v profile (give at least %v)", attach.ErrInvalidOptions, timeout, d, d+MinProfileOverhead)
	}
	return nil
}
