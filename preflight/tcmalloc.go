package preflight

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/safeattach/safeattach/internal/safefile"
)

// gperftools facts (docs/detection.md, "gperftools"):
//
//	libtcmalloc.so.4, libtcmalloc_and_profiler.so.4, libtcmalloc_debug.so.4
//	    full: heap profiler and stack capture (libunwind by default in
//	    Debian's 2.10)
//	libtcmalloc_minimal*.so.4
//	    no stack capture, no heap profiler
//	heap profiler on: HEAPPROFILE=<prefix>, HEAPCHECK=<mode>, or the program
//	    calls HeapProfilerStart (visible as an import)
//	version: the string "gperftools X.Y" in read-only data (the .so suffix
//	    does not follow releases)
//	unwinder: TCMALLOC_STACKTRACE_METHOD, else libunwind when linked
func (in *inspection) inspectTcmalloc(ctx context.Context) {
	t := &in.r.Tcmalloc
	l := in.findLib(func(b string) bool { return strings.HasPrefix(b, "libtcmalloc") })
	if l == nil {
		if in.exe != nil {
			if info, err := in.probe(in.exe); err == nil && info.Defines("tc_malloc") {
				t.Present, t.Via, t.Path = true, ViaStatic, in.exe.path
				t.Evidence = append(t.Evidence, in.exe.path+" defines tc_malloc")
				in.tcmallocFacts(ctx, in.exe)
			}
		}
		return
	}
	t.Present, t.Path = true, l.path
	t.Via = in.via(ctx, l)
	t.Evidence = append(t.Evidence, "maps "+l.path)
	in.tcmallocFacts(ctx, l)
	in.addLibrary(RoleAllocator, "tcmalloc", l, t.Version)
}

func (in *inspection) tcmallocFacts(ctx context.Context, l *mappedLib) {
	t := &in.r.Tcmalloc
	info, err := in.probe(l)
	if err != nil {
		in.unknown("tcmalloc.flavor", "%s: %v", l.path, err)
		t.Flavor = TcmallocUnknown
	} else {
		if s := info.Needles["gperftools "]; s != "" {
			t.Version = strings.TrimSpace(strings.TrimPrefix(s[strings.Index(s, "gperftools "):], "gperftools "))
			t.Evidence = append(t.Evidence, fmt.Sprintf("read-only data contains %q", s))
		}
		_, linksUnwind := info.NeedsPrefix("libunwind.so")
		switch {
		case strings.Contains(filepath.Base(l.path), "minimal"):
			t.Flavor = TcmallocMinimal
			t.Evidence = append(t.Evidence, "file name says minimal")
		case info.Defines("HeapProfilerStart") || linksUnwind:
			t.Flavor = TcmallocFull
			t.Evidence = append(t.Evidence, "exports HeapProfilerStart (full build with stack capture)")
		default:
			t.Flavor = TcmallocMinimal
			t.Evidence = append(t.Evidence, "no HeapProfilerStart export")
		}
		t.Unwinder = UnwinderNone
		if t.Flavor == TcmallocFull {
			t.Unwinder = string(Unknown)
			if linksUnwind {
				t.Unwinder = UnwinderLibunwind
			}
		}
	}
	if m, ok := in.env.Lookup("TCMALLOC_STACKTRACE_METHOD"); ok && t.Flavor == TcmallocFull {
		t.Unwinder = m
		t.Evidence = append(t.Evidence, "TCMALLOC_STACKTRACE_METHOD="+m)
	}
	t.HeapProfiler, t.CPUProfiler = No, No
	if t.Flavor == TcmallocMinimal {
		return
	}
	if in.envErr != nil {
		t.HeapProfiler, t.CPUProfiler = Unknown, Unknown
		in.unknown("tcmalloc.heap_profiler", "environment unreadable: %v", in.envErr)
	}
	for _, v := range []string{"HEAPPROFILE", "HEAPCHECK"} {
		if raw, ok := in.env.Lookup(v); ok && raw != "" {
			val, consumed := gperftoolsEnvValue(raw)
			t.HeapProfiler = Yes
			by := v + "=" + val
			if consumed {
				by += " (marked consumed: the heap profiler started)"
			}
			t.HeapProfilerBy = append(t.HeapProfilerBy, by)
			if v == "HEAPPROFILE" {
				for _, d := range in.heapDumps(ctx, val, 3) {
					t.Evidence = append(t.Evidence, "heap profile written: "+d)
				}
			}
		}
	}
	if in.exe != nil {
		if info, err := in.probe(in.exe); err == nil && info.Imports("HeapProfilerStart") {
			t.HeapProfiler = Yes
			t.HeapProfilerBy = append(t.HeapProfilerBy, in.exe.path+" imports HeapProfilerStart")
		}
	}
	if v, ok := in.env.Lookup("CPUPROFILE"); ok && v != "" {
		t.CPUProfiler = Yes
		t.Evidence = append(t.Evidence, "CPUPROFILE="+v)
	}
}

// gperftools' heap profiler, once started, sets the high bit of the first
// byte of HEAPPROFILE in the process's own environment block so that child
// processes do not inherit it (seen with Debian's gperftools 2.10: "hp"
// reads back as "\xe8p"). The mark is evidence that the profiler really
// runs; the value is restored for reporting.
func gperftoolsEnvValue(raw string) (value string, consumed bool) {
	if raw[0] < 0x80 {
		return raw, false
	}
	return string(raw[0]&0x7f) + raw[1:], true
}

// heapDumps lists, as paths inside the target, up to max files named
// <prefix>.*.heap that a heap profiler already wrote: jemalloc's
// jeprof.<pid>.<seq>.*.heap and gperftools' <HEAPPROFILE>.NNNN.heap are
// both evidence that profiling really runs. A relative prefix is
// resolved in the target's working directory.
func (in *inspection) heapDumps(ctx context.Context, prefix string, max int) []string {
	p := prefix
	if !filepath.IsAbs(p) {
		p = filepath.Join(in.r.Process.Cwd, p)
	}
	dir := filepath.Dir(p)
	names, err := safefile.ListIn(ctx, in.r.Process.Root, dir, 4096)
	if err != nil {
		return nil
	}
	var out []string
	base := filepath.Base(p) + "."
	for _, n := range names {
		if strings.HasPrefix(n, base) && strings.HasSuffix(n, ".heap") {
			out = append(out, filepath.Join(dir, n))
			if len(out) == max {
				break
			}
		}
	}
	return out
}

// via says how a mapped library got into the process.
func (in *inspection) via(ctx context.Context, l *mappedLib) Via {
	env, file := in.preloads(ctx)
	base := filepath.Base(l.path)
	for _, p := range env {
		if p == l.path || filepath.Base(p) == base || in.sameFile(ctx, p, l) {
			return ViaLDPreload
		}
	}
	for _, p := range file {
		if p == l.path || filepath.Base(p) == base || in.sameFile(ctx, p, l) {
			return ViaLDSoPreload
		}
	}
	return ViaMapped
}
