package bounded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits bound one conversion. Zero fields take DefaultLimits'.
type Limits struct {
	// Input is the largest recording converted, in bytes.
	Input int64
	// Memory is what the converter may commit (RLIMIT_DATA), in bytes.
	Memory int64
	// Output is the largest profile it may write, in bytes.
	Output int64
	// Time is how long it may run.
	Time time.Duration
}

// DefaultLimits: a JFR window of a busy service is a few MiB and
// converts in well under a second; a day-long recording of a few hundred
// MiB needs about four times its size in memory.
var DefaultLimits = Limits{Input: 256 << 20, Memory: 2 << 30, Output: 256 << 20, Time: 2 * time.Minute}

func (l Limits) withDefaults() Limits {
	if l.Input <= 0 {
		l.Input = DefaultLimits.Input
	}
	if l.Memory <= 0 {
		l.Memory = DefaultLimits.Memory
	}
	if l.Output <= 0 {
		l.Output = DefaultLimits.Output
	}
	if l.Time <= 0 {
		l.Time = DefaultLimits.Time
	}
	return l
}

// Request is one conversion.
type Request struct {
	// Converter is the safeattach-pprof binary.
	Converter string
	// Format is the output, as the converter's -o takes it: pprof (when
	// empty), collapsed, flat, flat=N or html. Every format runs under
	// the same limits.
	Format string
	// Event picks the profile (cpu, wall, alloc, lock); Start and End
	// bound the recording's time.
	Event      string
	Start, End time.Time
	// In is the recording (read to its end, at most Limits.Input bytes);
	// Out receives the output: the gzipped profile for pprof.
	In  io.Reader
	Out io.Writer
	Limits
}

// Result is a finished conversion: what the profile holds, as the
// converter's last line says it.
type Result struct {
	// Metric is what was sampled (process_cpu, wall, memory, mutex...).
	Metric string
	// Stacks is how many distinct stacks the profile has (pprof's sample
	// entries: each aggregates every sample of its stack).
	Stacks int
	// Total is the sum of the first value over every stack, in Type and
	// Unit (cpu nanoseconds, alloc_in_new_tlab_objects count ...): what
	// the profile adds up to, which a count of entries is not.
	Total      int64
	Type, Unit string
}

// String is the result as a person reads it: "process_cpu: 1.04 s of
// cpu in 4 stacks", "memory: 237 alloc_in_new_tlab_objects in 2 stacks".
func (r Result) String() string {
	total := strconv.FormatInt(r.Total, 10) + " " + r.Type
	switch r.Unit {
	case "nanoseconds":
		total = time.Duration(r.Total).Round(time.Millisecond).String() + " of " + r.Type
	case "bytes":
		total = strconv.FormatInt(r.Total, 10) + " bytes of " + r.Type
	}
	return fmt.Sprintf("%s: %s in %d distinct stacks", r.Metric, total, r.Stacks)
}

// ErrFailed is what every failed conversion unwraps to.
var ErrFailed = errors.New("JFR to pprof conversion failed")

// maxStderr is how much of the converter's messages is kept, at each
// end: its last line says what it converted or why it failed; a Go
// runtime's fatal error says why on its first line, before a traceback.
const maxStderr = 4 << 10

// Convert runs the converter under the request's limits. A failure is an
// error that says why: the converter's own message, the limit it ran
// into, or the signal that ended it; never an empty reason.
func Convert(ctx context.Context, req Request) (Result, error) {
	l := req.Limits.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, l.Time)
	defer cancel()
	format := req.Format
	if format == "" {
		format = "pprof"
	}
	args := []string{
		"-o", format, "-event", req.Event,
		"-start", strconv.FormatInt(req.Start.UnixNano(), 10), "-end", strconv.FormatInt(req.End.UnixNano(), 10),
		"-max-input", strconv.FormatInt(l.Input, 10), "-max-memory", strconv.FormatInt(l.Memory, 10),
		"-max-output", strconv.FormatInt(l.Output, 10),
	}
	cmd := exec.CommandContext(ctx, req.Converter, args...)
	cmd.Stdin = io.LimitReader(req.In, l.Input+1)
	out := &capped{w: req.Out, left: l.Output}
	cmd.Stdout = out
	var stderr headTail
	cmd.Stderr = &stderr
	cmd.Env = []string{"GOTRACEBACK=none"}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	last := stderr.lastLine()
	switch {
	case out.over:
		return Result{}, fmt.Errorf("%w: %s", ErrFailed, tooLarge(format, l.Output))
	case ctx.Err() == context.DeadlineExceeded:
		return Result{}, fmt.Errorf("%w: it did not finish within %v (the recording may be malformed)", ErrFailed, l.Time)
	case ctx.Err() != nil:
		return Result{}, fmt.Errorf("%w: %v", ErrFailed, ctx.Err())
	case err != nil:
		return Result{}, fmt.Errorf("%w: %s", ErrFailed, why(err, stderr.String(), last, format, l))
	}
	// The converter's last line: METRIC STACKS TOTAL TYPE UNIT.
	var res Result
	if f := strings.Fields(last); len(f) == 5 {
		res.Metric, res.Type, res.Unit = f[0], f[3], f[4]
		res.Stacks, _ = strconv.Atoi(f[1])
		res.Total, _ = strconv.ParseInt(f[2], 10, 64)
	}
	return res, nil
}

// why turns the converter's end into a reason. The converter exits 1
// after saying why on its last line; anything else — the Go runtime's
// exit status 2 after a fatal error, or a signal — is a crash, whose
// first line says what happened. A Go runtime refused memory by its limit
// does not always say so (its collector can fault instead): a crash
// after using half the limit or more is the limit's.
func why(err error, stderr, last, format string, l Limits) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err.Error()
	}
	outOfMemory := strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory")
	crashed := ee.ExitCode() != 1
	if ru, ok := ee.SysUsage().(*syscall.Rusage); ok && crashed && ru.Maxrss*1024 >= l.Memory/2 {
		outOfMemory = true
	}
	switch ws, _ := ee.Sys().(syscall.WaitStatus); {
	case ws.Signaled() && ws.Signal() == syscall.SIGXFSZ:
		return tooLarge(format, l.Output)
	case outOfMemory:
		return fmt.Sprintf("it ran out of its %d MiB memory limit (the recording may be malformed)", l.Memory>>20)
	case ws.Signaled():
		return fmt.Sprintf("the converter was killed by %v", ws.Signal())
	case ee.ExitCode() == 1 && last != "":
		return strings.TrimPrefix(last, "safeattach-pprof: ")
	case strings.TrimSpace(stderr) != "":
		return fmt.Sprintf("the converter crashed on the recording (exit status %d): %s", ee.ExitCode(), firstLine(stderr))
	}
	return fmt.Sprintf("the converter exited with status %d and said nothing", ee.ExitCode())
}

// tooLarge says that the output met its limit, naming the output as a
// person asked for it.
func tooLarge(format string, limit int64) string {
	what := "profile"
	switch name, _, _ := strings.Cut(format, "="); name {
	case "html":
		what = "flame graph"
	case "collapsed":
		what = "collapsed stacks"
	case "flat":
		what = "flat table"
	}
	return fmt.Sprintf("the %s grew past %d bytes", what, limit)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// capped passes at most left bytes to w and notes an attempt to write more.
type capped struct {
	w    io.Writer
	left int64
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		c.over = true
		return 0, fmt.Errorf("output past its limit")
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// headTail keeps the first and the last maxStderr bytes written to it.
type headTail struct{ head, tail []byte }

func (t *headTail) Write(p []byte) (int, error) {
	n := len(p)
	if room := maxStderr - len(t.head); room > 0 {
		k := min(room, len(p))
		t.head, p = append(t.head, p[:k]...), p[k:]
	}
	t.tail = append(t.tail, p...)
	if len(t.tail) > maxStderr {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-maxStderr:]...)
	}
	return n, nil
}

func (t *headTail) String() string { return string(t.head) + "\n" + string(t.tail) }

func (t *headTail) lastLine() string {
	end := t.tail
	if len(bytes.TrimSpace(end)) == 0 {
		end = t.head
	}
	lines := bytes.Split(bytes.TrimSpace(end), []byte("\n"))
	return string(bytes.TrimSpace(lines[len(lines)-1]))
}
