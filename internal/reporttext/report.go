package reporttext

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"

	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/preflight"
)

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Write writes r as the human summary: one line per area, the evidence
// indented under it. The report's strings are the target's (its paths,
// main class, environment): each is written as printable.Line escapes
// it, so that none can break a line and forge one of the summary's
// ("profilers  none loaded"), nor reach a terminal as a control.
func Write(w io.Writer, r *preflight.Report) {
	r = escaped(r)
	p := r.Process
	fmt.Fprintf(w, "pid %d (%s)  state %s  uid %d gid %d  threads %d", r.PID, p.Name, p.State, p.UID.Effective, p.GID.Effective, p.Threads)
	if !p.SamePIDNamespace {
		fmt.Fprintf(w, "  ns-pid %d", p.NSPid)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "signals    SIGQUIT caught=%s ignored=%s  SIGPROF caught=%s  SIGVTALRM caught=%s\n",
		yesNo(p.Signals.SIGQUIT.Caught), yesNo(p.Signals.SIGQUIT.Ignored), yesNo(p.Signals.SIGPROF.Caught), yesNo(p.Signals.SIGVTALRM.Caught))
	if !p.SameMountNamespace {
		fmt.Fprintf(w, "container  own mount namespace, root %s\n", p.Root)
	}
	j := r.JVM
	switch j.Kind {
	case preflight.JVMNone:
		fmt.Fprintln(w, "jvm        none (no libjvm.so or libj9vm mapped)")
	default:
		fmt.Fprintf(w, "jvm        %s %s  (%s)\n", j.Kind, OrUnknown(j.Version), j.Home)
		if j.MainClass != "" {
			fmt.Fprintf(w, "           main %s\n", j.MainClass)
		}
		for _, name := range sortedKeys(j.Flags) {
			f := j.Flags[name]
			fmt.Fprintf(w, "           flag %s=%s (from %s)\n", name, f.Value, f.Source)
		}
		s := j.AttachSocket
		if s.Exists {
			fmt.Fprintf(w, "           attach socket %s exists (socket=%s uid=%d mode=%04o)\n", s.Path, yesNo(s.IsSocket), s.UID, s.Mode)
		} else {
			fmt.Fprintf(w, "           attach socket %s not yet created\n", s.Path)
		}
	}
	je := r.Jemalloc
	if je.Present {
		fmt.Fprintf(w, "jemalloc   %s %s via %s, prof built=%s, unwinder %s, heap profiling %s\n", OrUnknown(je.Version), je.Path, je.Via, je.ProfBuilt, OrUnknown(je.Unwinder), je.Prof.State)
		fmt.Fprintf(w, "           %s\n", je.Prof.Reason)
		for _, s := range je.Prof.Sources {
			switch {
			case s.Error != "":
				fmt.Fprintf(w, "           source %s: unreadable: %s\n", s.Name, s.Error)
			case s.Set:
				fmt.Fprintf(w, "           source %s = %q\n", s.Name, s.Value)
			}
		}
		printEvidence(w, je.Evidence)
		for _, d := range je.Dumps {
			fmt.Fprintf(w, "           dump %s\n", d)
		}
	} else {
		fmt.Fprintln(w, "jemalloc   not loaded process-wide")
	}
	t := r.Tcmalloc
	if t.Present {
		fmt.Fprintf(w, "tcmalloc   gperftools %s %s (%s) via %s, heap profiler %s, cpu profiler %s, unwinder %s\n", OrUnknown(t.Version), t.Flavor, t.Path, t.Via, t.HeapProfiler, t.CPUProfiler, OrUnknown(t.Unwinder))
		for _, b := range t.HeapProfilerBy {
			fmt.Fprintf(w, "           heap profiler on by %s\n", b)
		}
		printEvidence(w, t.Evidence)
	} else {
		fmt.Fprintln(w, "tcmalloc   not loaded")
	}
	u := r.Libunwind
	if u.Present {
		fmt.Fprintf(w, "libunwind  %s %s (by %s), preloaded=%s\n", OrUnknown(u.Version), u.Path, OrUnknown(u.VersionMethod), yesNo(u.Preloaded))
	} else {
		fmt.Fprintln(w, "libunwind  not loaded")
	}
	if len(r.Profilers) == 0 {
		fmt.Fprintln(w, "profilers  none loaded")
	}
	for _, l := range r.Profilers {
		fmt.Fprintf(w, "profilers  %s %s at %s\n", l.Kind, OrUnknown(l.Version), l.Path)
	}
	fmt.Fprintf(w, "mapped     %d executable ELF files\n", r.MappedELFs)
	for _, u := range r.Unknowns {
		fmt.Fprintf(w, "unknown    %s: %s\n", u.Fact, u.Reason)
	}
}

func printEvidence(w io.Writer, ev []string) {
	for _, e := range ev {
		fmt.Fprintf(w, "           - %s\n", e)
	}
}

// OrUnknown is s, or "(unknown)" when empty.
func OrUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// escaped is a copy of r whose every string is printable.Line's.
func escaped(r *preflight.Report) *preflight.Report {
	data, err := json.Marshal(r)
	cp := &preflight.Report{}
	if err != nil || json.Unmarshal(data, cp) != nil {
		cp = r // not expected; the copy is only a courtesy to the caller
	}
	escapeStrings(reflect.ValueOf(cp).Elem())
	return cp
}

// escapeStrings replaces every string reachable from v with its
// printable.Line.
func escapeStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(printable.Line(v.String()))
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			escapeStrings(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			escapeStrings(v.Field(i))
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			escapeStrings(v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			escapeStrings(e)
			nk := reflect.New(k.Type()).Elem()
			nk.Set(k)
			escapeStrings(nk)
			v.SetMapIndex(k, reflect.Value{})
			v.SetMapIndex(nk, e)
		}
	}
}
