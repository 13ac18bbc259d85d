package conflicts

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
)

// Fact is one named value a rule can test. Value is a string, bool, int or
// []string. A fact whose Unknown is set could not be determined; Note is
// the evidence behind its value, quoted in findings.
type Fact struct {
	Value   any
	Unknown string
	Note    string
}

// Facts maps fact names to values. A name missing from the map is absent
// (e.g. a VM flag nobody set).
type Facts map[string]Fact

// FactInfo documents one name of the fact vocabulary.
type FactInfo struct {
	Name        string `json:"name"`
	Type        string `json:"type"` // string, bool, int, version, list
	Description string `json:"description"`
}

// Vocabulary lists every fact a rule may name. "jvm.flags.<Name>" stands
// for any HotSpot flag. Rules naming anything else are rejected. The
// slice is the caller's own copy.
func Vocabulary() []FactInfo { return slices.Clone(factList) }

var factList = []FactInfo{
	{"process.state", "string", "running, sleeping, disk-sleep, stopped, traced, zombie, dead, idle"},
	{"process.euid", "int", "the target's effective uid"},
	{"process.egid", "int", "the target's effective gid"},
	{"process.machine", "string", "architecture of the target's executable (x86-64, aarch64...)"},
	{"process.libc", "string", "C library of the target's executable: glibc or musl"},
	{"process.sigquit.caught", "bool", "SIGQUIT has a handler (SigCgt)"},
	{"process.sigquit.ignored", "bool", "SIGQUIT is ignored (SigIgn)"},
	{"process.sigprof.caught", "bool", "SIGPROF has a handler: another profiler owns it"},
	{"process.sigvtalrm.caught", "bool", "SIGVTALRM has a handler: another profiler owns it"},
	{"process.same_mount_namespace", "bool", "the target shares our mount namespace"},
	{"process.mapped_elfs", "int", "distinct executable files mapped"},
	{"process.seccomp", "int", "seccomp mode: 0 none, 1 strict, 2 filter"},
	{"process.cap_perfmon", "bool", "the target has CAP_PERFMON or CAP_SYS_ADMIN (may open perf events whatever perf_event_paranoid says)"},
	{"host.perf_event_paranoid", "int", "kernel.perf_event_paranoid (above 2: perf events only with CAP_PERFMON)"},
	{"host.kptr_restrict", "int", "kernel.kptr_restrict (above 0: kernel symbols hidden)"},
	{"workload.crashed_after_attach", "bool", "the caller's crash memory says this workload crashed after an earlier attach"},
	{"inspector.is_root", "bool", "safeattach runs with euid 0"},
	{"inspector.same_user", "bool", "safeattach's euid equals the target's"},
	{"jvm.kind", "string", "hotspot, openj9 or none"},
	{"jvm.version", "version", "Java version (17.0.15, 1.8.0_412...)"},
	{"jvm.feature", "int", "Java feature release (8, 17, 21, 25...)"},
	{"jvm.flags.<Name>", "string", "effective value of a VM flag (true/false or its value); absent when not set"},
	{"jvm.attach_socket.exists", "bool", "the attach listener's socket exists"},
	{"jvm.attach_socket.trusted", "bool", "the socket is a socket owned by the target's user or root with no group/other bits"},
	{"jemalloc.present", "bool", "jemalloc serves the whole process"},
	{"jemalloc.via", "string", "mapped, LD_PRELOAD, ld.so.preload or static"},
	{"jemalloc.version", "version", "jemalloc version"},
	{"jemalloc.prof_built", "string", "yes/no: heap profiling compiled in"},
	{"jemalloc.unwinder", "string", "libunwind, libgcc, gcc-builtin, none or unknown"},
	{"jemalloc.prof.state", "string", "active, idle, off or unknown"},
	{"tcmalloc.present", "bool", "gperftools tcmalloc is loaded"},
	{"tcmalloc.via", "string", "mapped, LD_PRELOAD, ld.so.preload or static"},
	{"tcmalloc.flavor", "string", "full or minimal"},
	{"tcmalloc.version", "version", "gperftools version"},
	{"tcmalloc.heap_profiler", "string", "yes, no or unknown"},
	{"tcmalloc.unwinder", "string", "libunwind, none, or a TCMALLOC_STACKTRACE_METHOD value"},
	{"libunwind.present", "bool", "libunwind is mapped"},
	{"libunwind.version", "string", "estimated libunwind version"},
	{"profilers.kinds", "list", "kinds of profiler libraries loaded other than async-profiler"},
	{"profilers.async_profiler.paths", "list", "paths of async-profiler copies already loaded"},
	{"profilers.async_profiler.other_copy", "bool", "an async-profiler copy other than the agent is loaded"},
	{"profilers.async_profiler.same_copy", "bool", "the agent itself is already loaded"},
	{"agent.assumed", "bool", "no agent was given: the worst plausible one is assumed"},
	{"agent.description", "string", "kind and version for messages (\"async-profiler 3.0-2dba71f\")"},
	{"agent.path", "string", "the agent library's path"},
	{"agent.exists", "bool", "the agent file exists"},
	{"agent.regular", "bool", "the agent is a regular file"},
	{"agent.kind", "string", "async-profiler, datadog-java-profiler, jvmti, not-an-agent, or jfr (the JVM's own Flight Recorder: no library)"},
	{"agent.version", "version", "the agent's version (async-profiler's bare literal, e.g. 3.0-2dba71f)"},
	{"agent.imports", "list", "imported symbols the rules reason about (dl_iterate_phdr...)"},
	{"agent.exports_onattach", "bool", "exports Agent_OnAttach"},
	{"agent.machine", "string", "agent's architecture"},
	{"agent.libc", "string", "C library the agent needs: glibc, musl or empty"},
	{"agent.foreign_writers", "list", "who other than root and the target's user could modify the agent"},
	{"agent.options.keys", "list", "option names given to the agent (event, alloc, nativemem, jfrsync...)"},
	{"agent.events", "list", "profiling events requested (cpu, alloc, lock, nativemem...)"},
	{"agent.perf_events", "list", "requested events that only perf_event_open can sample (cycles, cpu-clock, page-faults, a tracepoint...): unlike cpu, none falls back to a timer"},
	{"agent.sha256", "string", "SHA-256 of the agent file"},
	{"agent.loadable", "bool", "the target's dynamic loader would find every library and symbol version the agent needs (absent when not checked)"},
}

// vocabulary indexes factList; built on first use, not at start-up.
var vocabulary = sync.OnceValue(func() map[string]FactInfo {
	m := map[string]FactInfo{}
	for _, f := range factList {
		m[f.Name] = f
	}
	return m
})

// lookupInfo returns the vocabulary entry for name, treating every
// jvm.flags.<Name> as valid.
func lookupInfo(name string) (FactInfo, bool) {
	if f, ok := vocabulary()[name]; ok {
		return f, true
	}
	if rest, ok := strings.CutPrefix(name, "jvm.flags."); ok && rest != "" && !strings.ContainsAny(rest, " {}") {
		return vocabulary()["jvm.flags.<Name>"], true
	}
	return FactInfo{}, false
}

// BuildFacts turns a report and an agent into the fact map rules test.
// agent may be nil (an attach that loads nothing, such as jcmd).
func BuildFacts(r *preflight.Report, agent *preflight.Agent) Facts {
	b := newFactBuilder(r)
	b.processFacts(r)
	b.jvmFacts(r.JVM, r.Process)
	b.allocatorFacts(r)
	apPaths := b.profilerFacts(r.Profilers)
	agentFacts(b.f, r, agent, apPaths)
	return b.f
}

// factBuilder fills Facts from a report. Its four setters are the ways a
// report's field becomes a fact: set (a value, stored as factValue
// makes it), unknown (a reason instead of a value), maybe (a string the
// report may give as "unknown") and str (a string that is absent when
// empty, unknown when the report says why).
type factBuilder struct {
	f Facts
	// unknowns is the first reason the report gives for each fact it
	// could not read.
	unknowns map[string]string
}

func newFactBuilder(r *preflight.Report) *factBuilder {
	b := &factBuilder{f: Facts{}, unknowns: map[string]string{}}
	for _, u := range r.Unknowns {
		if _, dup := b.unknowns[u.Fact]; !dup {
			b.unknowns[u.Fact] = u.Reason
		}
	}
	return b
}

func (b *factBuilder) set(name string, v any, note string) { b.f.put(name, factValue(v), note) }
func (b *factBuilder) unknown(name, reason string)         { b.f[name] = Fact{Unknown: reason} }

// maybe sets a string fact whose report value may be "unknown"
// (preflight.Unknown and preflight.ProfUnknown are the same word).
func (b *factBuilder) maybe(name string, v fmt.Stringer, note, reason string) {
	if v.String() == string(preflight.Unknown) {
		b.unknown(name, reason)
	} else {
		b.set(name, v, note)
	}
}

// str sets a string fact when the report has it, else the reason the
// report gives for unknownFact, else nothing.
func (b *factBuilder) str(name, v, unknownFact string) {
	switch {
	case v != "":
		b.set(name, v, "")
	case b.unknowns[unknownFact] != "":
		b.unknown(name, b.unknowns[unknownFact])
	}
}

// processFacts are the target process's, the inspector's and the host's.
func (b *factBuilder) processFacts(r *preflight.Report) {
	p := r.Process
	b.set("process.state", p.State, "")
	b.set("process.euid", int(p.UID.Effective), "")
	b.set("process.egid", int(p.GID.Effective), "")
	b.str("process.machine", p.Machine, "process.machine")
	b.str("process.libc", p.Libc, "process.machine")
	b.set("process.sigquit.caught", p.Signals.SIGQUIT.Caught, "")
	b.set("process.sigquit.ignored", p.Signals.SIGQUIT.Ignored, "")
	b.set("process.sigprof.caught", p.Signals.SIGPROF.Caught, "")
	b.set("process.sigvtalrm.caught", p.Signals.SIGVTALRM.Caught, "")
	b.set("process.same_mount_namespace", p.SameMountNamespace, "")
	b.set("process.mapped_elfs", r.MappedELFs, "")
	b.set("inspector.is_root", r.Inspector.EUID == 0, "")
	b.set("inspector.same_user", r.Inspector.EUID == int(p.UID.Effective), "")
	b.set("workload.crashed_after_attach", r.PriorCrash != "", r.PriorCrash)
	const capSysAdmin, capPerfmon = 21, 38
	b.set("process.cap_perfmon", p.CapEff&(1<<capSysAdmin|1<<capPerfmon) != 0, fmt.Sprintf("CapEff=%016x", p.CapEff))
	if p.Seccomp >= 0 {
		b.set("process.seccomp", p.Seccomp, "")
	} else {
		b.unknown("process.seccomp", "the kernel does not report it")
	}
	for name, v := range map[string]*int{"host.perf_event_paranoid": r.Host.PerfEventParanoid, "host.kptr_restrict": r.Host.KptrRestrict} {
		if v != nil {
			b.set(name, *v, "")
		} else if reason, ok := b.unknowns[name]; ok {
			b.unknown(name, reason)
		}
	}
}

// jvmFacts are the JVM's kind, version, flags and attach socket.
func (b *factBuilder) jvmFacts(j preflight.JVM, p preflight.Process) {
	if reason := b.unknowns["jvm.kind"]; reason != "" && j.Kind == preflight.JVMNone {
		b.unknown("jvm.kind", reason)
	} else {
		b.set("jvm.kind", j.Kind, strings.Join(j.Evidence, "; "))
	}
	b.str("jvm.version", j.Version, "jvm.version")
	if j.Feature > 0 {
		b.set("jvm.feature", j.Feature, "")
	} else if reason := b.unknowns["jvm.version"]; reason != "" {
		b.unknown("jvm.feature", reason)
	}
	for name, fl := range j.Flags {
		b.set("jvm.flags."+name, fl.Value, fmt.Sprintf("%s=%s from %s", name, fl.Value, fl.Source))
	}
	if j.Kind == preflight.JVMNone {
		return
	}
	s := j.AttachSocket
	b.set("jvm.attach_socket.exists", s.Exists, s.Path)
	if s.Exists {
		// The protocol's own trust check, applied to the report.
		note := fmt.Sprintf("%s socket=%v uid=%d mode=%04o", s.Path, s.IsSocket, s.UID, s.Mode)
		err := proc.CheckAttachSocket(s.IsSocket, s.UID, uint32(s.Mode), p.UID.Effective)
		if err != nil {
			note += ": " + err.Error()
		}
		b.set("jvm.attach_socket.trusted", err == nil, note)
	}
}

// allocatorFacts are jemalloc's, tcmalloc's and libunwind's: what the
// native allocator in the process does when a profiler joins it.
func (b *factBuilder) allocatorFacts(r *preflight.Report) {
	je := r.Jemalloc
	b.set("jemalloc.present", je.Present, je.Path)
	if je.Present {
		b.set("jemalloc.via", je.Via, "")
		b.str("jemalloc.version", je.Version, "jemalloc.version")
		b.set("jemalloc.prof_built", je.ProfBuilt, "")
		b.maybe("jemalloc.unwinder", plain(je.Unwinder), lastOr(je.Evidence, ""),
			orDefault(b.unknowns["jemalloc.unwinder"], "which unwinder serves jemalloc's backtraces could not be determined"))
		b.maybe("jemalloc.prof.state", je.Prof.State, profNote(je.Prof), je.Prof.Reason)
	}
	tc := r.Tcmalloc
	b.set("tcmalloc.present", tc.Present, tc.Path)
	if tc.Present {
		b.set("tcmalloc.via", tc.Via, "")
		b.str("tcmalloc.version", tc.Version, "tcmalloc.version")
		b.set("tcmalloc.flavor", tc.Flavor, "")
		b.maybe("tcmalloc.heap_profiler", tc.HeapProfiler, strings.Join(tc.HeapProfilerBy, "; "),
			orDefault(b.unknowns["tcmalloc.heap_profiler"], "the environment could not be read"))
		b.set("tcmalloc.unwinder", tc.Unwinder, "")
	}
	b.set("libunwind.present", r.Libunwind.Present, r.Libunwind.Path)
	if r.Libunwind.Version != "" {
		b.set("libunwind.version", r.Libunwind.Version, r.Libunwind.VersionMethod)
	}
}

// profilerFacts are the profilers already loaded: async-profiler's copies
// by path (returned, for the agent's facts), the others by kind.
func (b *factBuilder) profilerFacts(loaded []preflight.LoadedLibrary) []string {
	kinds, apPaths := []string{}, []string{}
	for _, l := range loaded {
		if l.Kind == string(preflight.AgentAsyncProfiler) {
			apPaths = append(apPaths, l.Path)
		} else {
			kinds = append(kinds, l.Kind)
		}
	}
	b.set("profilers.kinds", kinds, strings.Join(kinds, ", "))
	b.set("profilers.async_profiler.paths", apPaths, strings.Join(apPaths, ", "))
	return apPaths
}

// put sets a fact's value as given. The agent's facts are stored this
// way, the report's through factBuilder.set (which stores named string
// types as plain strings).
func (f Facts) put(name string, v any, note string) { f[name] = Fact{Value: v, Note: note} }

// agentFacts are the facts about the agent to load: none for an attach
// that loads nothing (a is nil), only what it was told for an assumed
// one or for the JVM's Flight Recorder (no file to read), and its file's
// and the loaded copies' for a real one.
func agentFacts(f Facts, r *preflight.Report, a *preflight.Agent, apPaths []string) {
	if a == nil {
		return
	}
	agentDescriptionFacts(f, a)
	if a.Assumed || a.Kind == preflight.AgentFlightRecorder {
		return
	}
	agentFileFacts(f, a, r.Process.UID.Effective)
	other, same := loadedCopies(r.Profilers, a)
	f.put("profilers.async_profiler.other_copy", other, strings.Join(apPaths, ", "))
	f.put("profilers.async_profiler.same_copy", same, strings.Join(apPaths, ", "))
}

// agentDescriptionFacts are what is known of the agent without its file:
// its kind and version, what it imports, the options it is given.
func agentDescriptionFacts(f Facts, a *preflight.Agent) {
	f.put("agent.assumed", a.Assumed, strings.Join(a.Evidence, "; "))
	f.put("agent.description", describeAgent(a), "")
	if a.Kind != "" {
		f.put("agent.kind", a.Kind, strings.Join(a.Evidence, "; "))
	}
	if a.Version != "" {
		f.put("agent.version", a.Version, "")
	} else if a.VersionReason != "" {
		f["agent.version"] = Fact{Unknown: a.VersionReason}
	}
	imports := a.Imports
	if imports == nil {
		imports = []string{}
	}
	f.put("agent.imports", imports, "")
	events, keys := parseAgentOptions(a.Options)
	f.put("agent.options.keys", keys, a.Options)
	f.put("agent.events", events, a.Options)
	f.put("agent.perf_events", perfOnlyEvents(events), a.Options)
}

// perfOnlyEvents are the events of an async-profiler request that only
// perf_event_open can sample. What is not one (async-profiler's
// profiler.cpp and event names):
//
//	cpu                     a perf event, but 2.9 and later fall back to
//	                        ctimer/itimer when it cannot be opened
//	wall itimer ctimer      timers
//	alloc lock nativemem    JVMTI and malloc hooks
//	nativelock              pthread hooks
//	pkg.Class.method        a Java method (instrumented): dots, no ':' or '/'
//
// Everything else is a perf event: the hardware and software counters
// (cycles, instructions, cpu-clock, page-faults, ...), mem:ADDR
// breakpoints, tracepoints (sched:sched_switch), k/uprobes and raw PMU
// events (r4d2, cpu/event=0x3c/).
func perfOnlyEvents(events []string) []string {
	out := []string{}
	for _, e := range events {
		switch e {
		case "cpu", "wall", "itimer", "ctimer", "alloc", "lock", "nativemem", "nativelock":
			continue
		}
		if strings.Contains(e, ".") && !strings.ContainsAny(e, ":/") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// agentFileFacts are the agent file's: where it is, whether it can be
// loaded into the target, and who else (than the target's user, uid)
// could write it.
func agentFileFacts(f Facts, a *preflight.Agent, uid uint32) {
	f.put("agent.path", a.Path, "")
	f.put("agent.exists", a.Exists, a.Error)
	f.put("agent.regular", a.Regular, a.Error)
	f.put("agent.exports_onattach", a.ExportsOnAttach, "")
	if a.Machine != "" {
		f.put("agent.machine", a.Machine, "")
	}
	f.put("agent.libc", a.Libc, strings.Join(a.Needed, " "))
	if a.SHA256 != "" {
		f.put("agent.sha256", a.SHA256, "")
	}
	if l := a.Loadability; l != nil {
		switch l.Loadable {
		case preflight.Yes:
			f.put("agent.loadable", true, fmt.Sprintf("resolved %d libraries", len(l.Resolved)))
		case preflight.No:
			f.put("agent.loadable", false, l.Summary())
		default:
			f["agent.loadable"] = Fact{Unknown: l.Reason}
		}
	}
	foreign := []string{}
	for _, w := range a.WritableBy {
		if w.Kind == "uid" && w.ID == uid {
			continue
		}
		foreign = append(foreign, w.String())
	}
	f.put("agent.foreign_writers", foreign, strings.Join(foreign, "; "))
}

// loadedCopies says whether the target already has async-profiler loaded
// from another copy than a, or from a itself. A loaded copy is "the
// same" only with the same bytes: the loader would reuse it (safeattach
// sends its path). Where the copy's hash could not be read, the path
// decides, as the loader's name match would.
func loadedCopies(loaded []preflight.LoadedLibrary, a *preflight.Agent) (other, same bool) {
	for _, l := range loaded {
		if l.Kind != string(preflight.AgentAsyncProfiler) {
			continue
		}
		switch {
		case l.SHA256 != "" && a.SHA256 != "":
			if l.SHA256 == a.SHA256 {
				same = true
			} else {
				other = true
			}
		case !l.Deleted && (l.Path == a.RealPath || l.Path == a.Path):
			same = true
		default:
			other = true
		}
	}
	return other, same
}

func describeAgent(a *preflight.Agent) string {
	switch {
	case a.Assumed:
		return "(none given; assumed an affected async-profiler build)"
	case a.Kind == preflight.AgentFlightRecorder:
		return "the JVM's Flight Recorder"
	case a.Version != "":
		return string(a.Kind) + " " + a.Version
	case a.Kind != "":
		return string(a.Kind) + " of unknown version"
	}
	return a.Path
}

// parseAgentOptions reads async-profiler-style options
// ("start,event=cpu,alloc=512k,file=x"): the keys given, and the events
// requested (event=... plus the alloc/lock/nativemem/wall shorthands).
func parseAgentOptions(opts string) (events, keys []string) {
	events, keys = []string{}, []string{}
	seen := map[string]bool{}
	addEvent := func(e string) {
		if e != "" && !seen[e] {
			seen[e] = true
			events = append(events, e)
		}
	}
	for _, part := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if k == "" {
			continue
		}
		keys = append(keys, k)
		switch k {
		case "event":
			addEvent(v)
		case "alloc", "lock", "nativemem", "wall":
			addEvent(k)
		case "all":
			for _, e := range []string{"cpu", "wall", "alloc", "nativemem", "lock"} {
				addEvent(e)
			}
		}
	}
	// A start that names no event and no other kind of profiling
	// profiles CPU: the agent's default (async-profiler's arguments.cpp).
	starts := slices.Contains(keys, "start") || slices.Contains(keys, "resume")
	if starts && len(events) == 0 && !slices.Contains(keys, "nativelock") && !slices.Contains(keys, "trace") {
		addEvent("cpu")
	}
	sort.Strings(keys)
	return events, keys
}

func profNote(p preflight.ProfConf) string {
	var set []string
	for _, s := range p.Sources {
		if s.Set {
			set = append(set, s.Name+"="+s.Value)
		}
	}
	if len(set) == 0 {
		return p.Reason
	}
	return strings.Join(set, "; ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func lastOr(list []string, def string) string {
	if len(list) == 0 {
		return def
	}
	return list[len(list)-1]
}

// display renders a fact value for messages and evidence.
// factValue stores the report's named string types (preflight.Via,
// JVMKind, ...) as plain strings, the type the tests compare against.
func factValue(v any) any {
	if s, ok := v.(fmt.Stringer); ok {
		return s.String()
	}
	return v
}

// plain makes a string a fmt.Stringer.
type plain string

func (p plain) String() string { return string(p) }

func (f Fact) display() string {
	if f.Unknown != "" {
		return "unknown"
	}
	switch v := f.Value.(type) {
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.Itoa(v)
	case []string:
		if len(v) == 0 {
			return "none"
		}
		return strings.Join(v, ", ")
	}
	return fmt.Sprint(f.Value)
}
