package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/safeattach/safeattach/profiling/asprof"
)

// asprofFlags registers asprof 4.x's options, spelled as its launcher
// spells them, into o (package asprof turns them into the agent's
// options, the way the launcher does). What safeattach does differently
// is in the README's table: --agent for the library (asprof's --libpath
// would load a second copy and is refused), --loop cuts windows itself,
// --timeout is the whole command's deadline.
func asprofFlags(f *pflag.FlagSet, o *asprof.Options, features *string) {
	f.StringVarP(&o.Event, "event", "e", "", "profiling event: cpu (default), alloc, nativemem, lock, wall, itimer, ctimer, cache-misses, a tracepoint, a Java method ...")
	f.StringVarP(&o.Interval, "interval", "i", "", "sampling interval (nanoseconds, or with a unit: 10ms)")
	f.StringVarP(&o.JStackDepth, "jstackdepth", "j", "", "maximum Java stack depth")
	f.BoolVarP(&o.Threads, "threads", "t", false, "profile different threads separately")
	f.BoolVarP(&o.Simple, "simple", "s", false, "simple class names instead of FQN")
	f.BoolVarP(&o.Norm, "norm", "n", false, "normalize names of hidden classes / lambdas")
	f.BoolVarP(&o.Sig, "sig", "g", false, "print method signatures")
	f.BoolVarP(&o.Ann, "ann", "a", false, "annotate Java methods")
	f.BoolVarP(&o.Lib, "lib", "l", false, "prepend library names (the library to load is --agent)")
	f.BoolVar(&o.Dot, "dot", false, "dotted class names")
	f.StringArrayVarP(&o.Include, "include", "I", nil, "output only stack traces containing the pattern (repeatable)")
	f.StringArrayVarP(&o.Exclude, "exclude", "X", nil, "exclude stack traces with the pattern (repeatable)")
	f.StringVarP(&o.LogLevel, "log", "L", "", "log level: debug, info, warn, error, none")
	f.StringVarP(features, "features", "F", "", "advanced stack trace features: mixed, vtable, comptask, pcaddr (comma-separated)")
	f.StringVar(&o.Filter, "filter", "", "thread filter")
	f.StringVar(&o.Title, "title", "", "flame graph title")
	f.StringVar(&o.Width, "width", "", "flame graph width")
	f.StringVar(&o.Height, "height", "", "flame graph frame height")
	f.StringVar(&o.MinWidth, "minwidth", "", "skip frames smaller than PCT%")
	f.BoolVar(&o.Reverse, "reverse", false, "stack-reversed flame graph / call tree")
	f.BoolVar(&o.Inverted, "inverted", false, "toggle the layout between icicle and flame graph")
	f.BoolVar(&o.Samples, "samples", false, "count samples (the default)")
	f.BoolVar(&o.Total, "total", false, "accumulate the total value (time, bytes) instead of samples")
	f.StringVar(&o.Alloc, "alloc", "", "allocation profiling interval in bytes")
	f.BoolVar(&o.TLAB, "tlab", false, "use TLAB events for allocation profiling")
	f.BoolVar(&o.Live, "live", false, "build the allocation profile from live objects only")
	f.StringVar(&o.NativeMem, "nativemem", "", "native allocation profiling interval in bytes")
	f.BoolVar(&o.NoFree, "nofree", false, "do not collect free calls in native allocation profiling")
	f.StringArrayVar(&o.Trace, "trace", nil, "method to instrument, with an optional latency threshold (repeatable)")
	f.StringVar(&o.Lock, "lock", "", "lock profiling threshold in nanoseconds")
	f.StringVar(&o.NativeLock, "nativelock", "", "pthread mutex/rwlock profiling threshold in nanoseconds")
	f.StringVar(&o.Wall, "wall", "", "wall clock profiling interval")
	f.BoolVar(&o.NoBatch, "nobatch", false, "legacy wall clock sampling without batch events")
	f.StringVar(&o.Proc, "proc", "", "process sampling interval")
	f.BoolVar(&o.All, "all", false, "cpu, wall, alloc, live, nativemem and lock profiling at once")
	f.BoolVar(&o.AllUser, "all-user", false, "only include user-mode events")
	f.BoolVar(&o.Sched, "sched", false, "group threads by scheduling policy")
	f.StringVar(&o.CStack, "cstack", "", "how to walk native frames: fp, dwarf, vm, no")
	f.StringVar(&o.Signal, "signal", "", "alternative signal for cpu or wall clock profiling")
	f.StringVar(&o.Clock, "clock", "", "clock source for JFR timestamps: tsc, monotonic")
	f.StringVar(&o.Begin, "begin", "", "begin profiling when this function is executed")
	f.StringVar(&o.End, "end", "", "end profiling when this function is executed")
	f.BoolVar(&o.TTSP, "ttsp", false, "time-to-safepoint profiling only")
	f.BoolVar(&o.NoStop, "nostop", false, "do not stop profiling outside --begin/--end")
	f.BoolVar(&o.RecordCPU, "record-cpu", false, "record the CPU of each sample (JFR)")
	f.StringVar(&o.MemLimit, "memlimit", "", "limit the size of the stack trace storage")
	f.StringVar(&o.TargetCPU, "target-cpu", "", "sample threads on one CPU (perf events only)")
	f.StringVar(&o.ChunkSize, "chunksize", "", "approximate size of a JFR chunk")
	f.StringVar(&o.ChunkTime, "chunktime", "", "duration of a JFR chunk")
	f.StringVar(&o.JFRSync, "jfrsync", "", "synchronize with a JFR recording using CONFIG (implies -o jfr)")
	f.StringVar(&o.JFROpts, "jfropts", "", "JFR recording options (implies -o jfr)")
}

// splitFeatures is -F's comma-separated list (asprof joins it with '+').
func splitFeatures(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
