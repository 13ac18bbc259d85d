package asprof

import (
	"errors"
	"fmt"
	"strings"
)

// Options are asprof's options that reach the agent. The zero value is
// asprof's default (cpu profiling, the agent's defaults throughout).
type Options struct {
	// What to profile.
	Event       string // -e: cpu, alloc, lock, wall, itimer, ctimer, nativemem, a perf event, a tracepoint, a Java method
	Interval    string // -i: sampling interval (10ms, 1000000)
	JStackDepth string // -j: maximum Java stack depth (text, as asprof passes it)
	Threads     bool   // -t
	AllUser     bool   // --all-user
	Alloc       string // --alloc: allocation profiling interval (bytes)
	Live        bool   // --live
	TLAB        bool   // --tlab
	NativeMem   string // --nativemem
	NoFree      bool   // --nofree
	Lock        string // --lock: lock profiling threshold
	NativeLock  string // --nativelock
	Wall        string // --wall: wall clock interval
	NoBatch     bool   // --nobatch
	Trace       []string
	All         bool   // --all
	RecordCPU   bool   // --record-cpu
	Sched       bool   // --sched
	TTSP        bool   // --ttsp
	Begin, End  string // --begin, --end
	NoStop      bool   // --nostop
	CStack      string // --cstack: fp, dwarf, lbr, vm, no
	Signal      string // --signal
	Clock       string // --clock: tsc, monotonic
	TargetCPU   string // --target-cpu
	Proc        string // --proc
	MemLimit    string // --memlimit
	ChunkSize   string // --chunksize
	ChunkTime   string // --chunktime
	JFRSync     string // --jfrsync (implies JFR output)
	JFROpts     string // --jfropts (implies JFR output)
	// FdTransfer is the socket of a descriptor server (package
	// fdtransfer) the agent asks for perf events and kallsyms: @NAME.
	// asprof --fdtransfer starts one and passes its name; so does
	// profiling.SessionRequest.FdTransfer.
	FdTransfer string

	// How the output looks (sent with every command, as asprof does).
	Simple, Norm, Sig, Ann, Lib bool // -s, -n, -g, -a, -l
	Dot                         bool // --dot: dotted class names
	Include, Exclude            []string
	LogLevel                    string   // -L: debug, info, warn, error, none
	Features                    []string // -F: mixed, vtable, comptask, pcaddr
	Filter                      string   // --filter
	Title                       string   // --title
	Width, Height, MinWidth     string   // --width, --height, --minwidth
	Reverse, Inverted           bool     // --reverse, --inverted
	Samples, Total              bool     // --samples, --total
}

// MainEvent is what the agent samples first: the event asked for, else
// cpu when nothing else is (the agent's default), else the first of
// alloc, lock, wall, nativemem that is.
func (o Options) MainEvent() string {
	switch {
	case o.Event != "":
		return o.Event
	case o.Alloc == "" && o.Lock == "" && o.Wall == "" && o.NativeMem == "" && o.NativeLock == "" && len(o.Trace) == 0 || o.All:
		return "cpu"
	case o.Alloc != "":
		return "alloc"
	case o.Lock != "":
		return "lock"
	case o.Wall != "":
		return "wall"
	case o.NativeMem != "":
		return "nativemem"
	}
	return ""
}

// WantsJFR reports whether the options make the output JFR whatever
// else is asked (--jfrsync, --jfropts).
func (o Options) WantsJFR() bool { return o.JFRSync != "" || o.JFROpts != "" }

// ErrBadValue: a value that would change the agent's options beyond its
// own.
var ErrBadValue = errors.New("invalid option value")

// check refuses what the agent's option syntax cannot carry.
func check(name, v string) error {
	if strings.ContainsAny(v, ",") {
		return fmt.Errorf("%w: %s %q holds a ',' (the agent would read the rest as options of its own)", ErrBadValue, name, v)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %q holds a control character", ErrBadValue, name, v)
		}
	}
	if len(v) > 1024 {
		return fmt.Errorf("%w: %s is %d bytes (at most 1024)", ErrBadValue, name, len(v))
	}
	return nil
}

// builder joins options, remembering the first bad value.
type builder struct {
	parts []string
	err   error
}

func (b *builder) flag(on bool, key string) {
	if on {
		b.parts = append(b.parts, key)
	}
}

func (b *builder) value(name, key, v string) {
	if v == "" || b.err != nil {
		return
	}
	if err := check(name, v); err != nil {
		b.err = err
		return
	}
	b.parts = append(b.parts, key+"="+v)
}

// Event returns the event= option for e as asprof spells it: a PMU event
// "cpu/umask=0x1,event=0xd3/" has its commas turned into colons.
// (asprof also resolves a tracepoint name to trace:<id> on the caller's
// host; the agent resolves it itself inside the target.)
func eventValue(e string) string {
	if strings.Contains(e, ",") && strings.HasSuffix(e, "/") {
		return strings.ReplaceAll(e, ",", ":")
	}
	return e
}

// escapeTitle escapes a flame graph title as asprof does.
func escapeTitle(t string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", ",", "&#44;").Replace(t)
}

// Profiling returns the options that start a profile (asprof's
// "params"): empty when nothing but the defaults is asked.
func (o Options) Profiling() (string, error) {
	var b builder
	b.value("-e", "event", eventValue(o.Event))
	b.value("-i", "interval", o.Interval)
	b.value("-j", "jstackdepth", o.JStackDepth)
	b.flag(o.Threads, "threads")
	b.value("--alloc", "alloc", o.Alloc)
	b.value("--nativemem", "nativemem", o.NativeMem)
	b.value("--nativelock", "nativelock", o.NativeLock)
	b.value("--lock", "lock", o.Lock)
	b.value("--wall", "wall", o.Wall)
	for _, t := range o.Trace {
		b.value("--trace", "trace", t)
	}
	b.value("--chunksize", "chunksize", o.ChunkSize)
	b.value("--chunktime", "chunktime", o.ChunkTime)
	b.value("--cstack", "cstack", o.CStack)
	b.value("--signal", "signal", o.Signal)
	b.value("--clock", "clock", o.Clock)
	b.value("--begin", "begin", o.Begin)
	b.value("--end", "end", o.End)
	b.value("--target-cpu", "target-cpu", o.TargetCPU)
	b.value("--proc", "proc", o.Proc)
	b.value("--memlimit", "memlimit", o.MemLimit)
	b.flag(o.All, "all")
	b.flag(o.Live, "live")
	b.flag(o.NoBatch, "nobatch")
	b.flag(o.NoFree, "nofree")
	b.flag(o.NoStop, "nostop")
	b.flag(o.RecordCPU, "record-cpu")
	b.flag(o.Sched, "sched")
	b.flag(o.TLAB, "tlab")
	b.flag(o.TTSP, "ttsp")
	b.flag(o.AllUser, "alluser")
	b.value("--jfrsync", "jfrsync", o.JFRSync)
	b.value("--jfropts", "jfropts", o.JFROpts)
	b.value("--fdtransfer", "fdtransfer", o.FdTransfer)
	return strings.Join(b.parts, ","), b.err
}

// Output returns the options that shape the output (asprof's "format"),
// sent with every command.
func (o Options) Output() (string, error) {
	var b builder
	b.flag(o.Simple, "simple")
	b.flag(o.Norm, "norm")
	b.flag(o.Sig, "sig")
	b.flag(o.Ann, "ann")
	b.flag(o.Lib, "lib")
	b.flag(o.Dot, "dot")
	for _, p := range o.Include {
		b.value("-I", "include", p)
	}
	for _, p := range o.Exclude {
		b.value("-X", "exclude", p)
	}
	b.value("-L", "loglevel", o.LogLevel)
	if len(o.Features) > 0 {
		b.value("-F", "features", strings.Join(o.Features, "+"))
	}
	b.value("--filter", "filter", strings.ReplaceAll(o.Filter, ",", ";"))
	b.value("--title", "title", escapeTitle(o.Title))
	b.value("--width", "width", o.Width)
	b.value("--height", "height", o.Height)
	b.value("--minwidth", "minwidth", o.MinWidth)
	b.flag(o.Reverse, "reverse")
	b.flag(o.Inverted, "inverted")
	b.flag(o.Samples, "samples")
	b.flag(o.Total, "total")
	return strings.Join(b.parts, ","), b.err
}

// Validate checks every value.
func (o Options) Validate() error {
	if _, err := o.Profiling(); err != nil {
		return err
	}
	_, err := o.Output()
	return err
}
