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
	{"agent.kind", "string", "async-profiler, datadog-java-profiler, jvmti or not-an-agent"},
	{"agent.version", "version", "the agent's version (async-profiler's bare literal, e.g. 3.0-2dba71f)"},
	{"agent.imports", "list", "imported symbols the rules reason about (dl_iterate_phdr...)"},
	{"agent.exports_onattach", "bool", "exports Agent_OnAttach"},
	{"agent.machine", "string", "agent's architecture"},
	{"agent.libc", "string", "C library the agent needs: glibc, musl or empty"},
	{"agent.foreign_writers", "list", "who other than root and the target's user could modify the agent"},
	{"agent.options.keys", "list", "option names given to the agent (event, alloc, nativemem, jfrsync...)"},
	{"agent.events", "list", "profiling events requested (cpu, alloc, lock, nativemem...)"},
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
	f := Facts{}
	unknowns := map[string]string{}
	for _, u := range r.Unknowns {
		if _, dup := unknowns[u.Fact]; !dup {
			unknowns[u.Fact] = u.Reason
		}
	}
	set := func(name string, v any, note string) { f[name] = Fact{Value: factValue(v), Note: note} }
	unknown := func(name, reason string) { f[name] = Fact{Unknown: reason} }
	// maybe sets a string fact whose report value may be "unknown"
	// (preflight.Unknown and preflight.ProfUnknown are the same word).
	maybe := func(name string, v fmt.Stringer, note, reason string) {
		if v.String() == string(preflight.Unknown) {
			unknown(name, reason)
		} else {
			set(name, v, note)
		}
	}
	str := func(name, v, unknownFact string) {
		switch {
		case v != "":
			set(name, v, "")
		case unknowns[unknownFact] != "":
			unknown(name, unknowns[unknownFact])
		}
	}

	p := r.Process
	set("process.state", p.State, "")
	set("process.euid", int(p.UID.Effective), "")
	set("process.egid", int(p.GID.Effective), "")
	str("process.machine", p.Machine, "process.machine")
	str("process.libc", p.Libc, "process.machine")
	set("process.sigquit.caught", p.Signals.SIGQUIT.Caught, "")
	set("process.sigquit.ignored", p.Signals.SIGQUIT.Ignored, "")
	set("process.sigprof.caught", p.Signals.SIGPROF.Caught, "")
	set("process.sigvtalrm.caught", p.Signals.SIGVTALRM.Caught, "")
	set("process.same_mount_namespace", p.SameMountNamespace, "")
	set("process.mapped_elfs", r.MappedELFs, "")
	set("inspector.is_root", r.Inspector.EUID == 0, "")
	set("inspector.same_user", r.Inspector.EUID == int(p.UID.Effective), "")
	set("workload.crashed_after_attach", r.PriorCrash != "", r.PriorCrash)
	const capSysAdmin, capPerfmon = 21, 38
	set("process.cap_perfmon", p.CapEff&(1<<capSysAdmin|1<<capPerfmon) != 0, fmt.Sprintf("CapEff=%016x", p.CapEff))
	if p.Seccomp >= 0 {
		set("process.seccomp", p.Seccomp, "")
	} else {
		unknown("process.seccomp", "the kernel does not report it")
	}
	for name, v := range map[string]*int{"host.perf_event_paranoid": r.Host.PerfEventParanoid, "host.kptr_restrict": r.Host.KptrRestrict} {
		if v != nil {
			set(name, *v, "")
		} else if reason, ok := unknowns[name]; ok {
			unknown(name, reason)
		}
	}

	j := r.JVM
	if reason := unknowns["jvm.kind"]; reason != "" && j.Kind == preflight.JVMNone {
		unknown("jvm.kind", reason)
	} else {
		set("jvm.kind", j.Kind, strings.Join(j.Evidence, "; "))
	}
	str("jvm.version", j.Version, "jvm.version")
	if j.Feature > 0 {
		set("jvm.feature", j.Feature, "")
	} else if reason := unknowns["jvm.version"]; reason != "" {
		unknown("jvm.feature", reason)
	}
	for name, fl := range j.Flags {
		set("jvm.flags."+name, fl.Value, fmt.Sprintf("%s=%s from %s", name, fl.Value, fl.Source))
	}
	if j.Kind != preflight.JVMNone {
		s := j.AttachSocket
		set("jvm.attach_socket.exists", s.Exists, s.Path)
		if s.Exists {
			// The protocol's own trust check, applied to the report.
			note := fmt.Sprintf("%s socket=%v uid=%d mode=%04o", s.Path, s.IsSocket, s.UID, s.Mode)
			err := proc.CheckAttachSocket(s.IsSocket, s.UID, uint32(s.Mode), p.UID.Effective)
			if err != nil {
				note += ": " + err.Error()
			}
			set("jvm.attach_socket.trusted", err == nil, note)
		}
	}

	je := r.Jemalloc
	set("jemalloc.present", je.Present, je.Path)
	if je.Present {
		set("jemalloc.via", je.Via, "")
		str("jemalloc.version", je.Version, "jemalloc.version")
		set("jemalloc.prof_built", je.ProfBuilt, "")
		maybe("jemalloc.unwinder", plain(je.Unwinder), lastOr(je.Evidence, ""),
			orDefault(unknowns["jemalloc.unwinder"], "which unwinder serves jemalloc's backtraces could not be determined"))
		maybe("jemalloc.prof.state", je.Prof.State, profNote(je.Prof), je.Prof.Reason)
	}
	tc := r.Tcmalloc
	set("tcmalloc.present", tc.Present, tc.Path)
	if tc.Present {
		set("tcmalloc.via", tc.Via, "")
		str("tcmalloc.version", tc.Version, "tcmalloc.version")
		set("tcmalloc.flavor", tc.Flavor, "")
		maybe("tcmalloc.heap_profiler", tc.HeapProfiler, strings.Join(tc.HeapProfilerBy, "; "),
			orDefault(unknowns["tcmalloc.heap_profiler"], "the environment could not be read"))
		set("tcmalloc.unwinder", tc.Unwinder, "")
	}
	set("libunwind.present", r.Libunwind.Present, r.Libunwind.Path)
	if r.Libunwind.Version != "" {
		set("libunwind.version", r.Libunwind.Version, r.Libunwind.VersionMethod)
	}

	kinds, apPaths := []string{}, []string{}
	for _, l := range r.Profilers {
		if l.Kind == string(preflight.AgentAsyncProfiler) {
			apPaths = append(apPaths, l.Path)
		} else {
			kinds = append(kinds, l.Kind)
		}
	}
	set("profilers.kinds", kinds, strings.Join(kinds, ", "))
	set("profilers.async_profiler.paths", apPaths, strings.Join(apPaths, ", "))
	agentFacts(f, r, agent, apPaths)
	return f
}

func agentFacts(f Facts, r *preflight.Report, a *preflight.Agent, apPaths []string) {
	set := func(name string, v any, note string) { f[name] = Fact{Value: v, Note: note} }
	if a == nil {
		return
	}
	set("agent.assumed", a.Assumed, strings.Join(a.Evidence, "; "))
	set("agent.description", describeAgent(a), "")
	if a.Kind != "" {
		set("agent.kind", a.Kind, strings.Join(a.Evidence, "; "))
	}
	if a.Version != "" {
		set("agent.version", a.Version, "")
	} else if a.VersionReason != "" {
		f["agent.version"] = Fact{Unknown: a.VersionReason}
	}
	imports := a.Imports
	if imports == nil {
		imports = []string{}
	}
	set("agent.imports", imports, "")
	events, keys := parseAgentOptions(a.Options)
	set("agent.options.keys", keys, a.Options)
	set("agent.events", events, a.Options)
	if a.Assumed {
		return
	}
	set("agent.path", a.Path, "")
	set("agent.exists", a.Exists, a.Error)
	set("agent.regular", a.Regular, a.Error)
	set("agent.exports_onattach", a.ExportsOnAttach, "")
	if a.Machine != "" {
		set("agent.machine", a.Machine, "")
	}
	set("agent.libc", a.Libc, strings.Join(a.Needed, " "))
	if a.SHA256 != "" {
		set("agent.sha256", a.SHA256, "")
	}
	var foreign []string
	for _, w := range a.WritableBy {
		if w.Kind == "uid" && w.ID == r.Process.UID.Effective {
			continue
		}
		foreign = append(foreign, w.String())
	}
	if foreign == nil {
		foreign = []string{}
	}
	if l := a.Loadability; l != nil {
		switch l.Loadable {
		case preflight.Yes:
			set("agent.loadable", true, fmt.Sprintf("resolved %d libraries", len(l.Resolved)))
		case preflight.No:
			set("agent.loadable", false, l.Summary())
		default:
			f["agent.loadable"] = Fact{Unknown: l.Reason}
		}
	}
	set("agent.foreign_writers", foreign, strings.Join(foreign, "; "))
	// A loaded copy is "the same" only with the same bytes: the loader
	// would reuse it (safeattach sends its path). Where the copy's hash
	// could not be read, the path decides, as the loader's name match would.
	other, same := false, false
	for _, l := range r.Profilers {
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
	set("profilers.async_profiler.other_copy", other, strings.Join(apPaths, ", "))
	set("profilers.async_profiler.same_copy", same, strings.Join(apPaths, ", "))
}

func describeAgent(a *preflight.Agent) string {
	switch {
	case a.Assumed:
		return "(none given; assumed an affected async-profiler build)"
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
