package preflight

// Tristate is yes, no or unknown.
type Tristate string

// Tristate values for facts that can be unknown.
const (
	Yes     Tristate = "yes"
	No      Tristate = "no"
	Unknown Tristate = "unknown"
)

// Report is everything Inspect learned about one process.
type Report struct {
	PID       int             `json:"pid"`
	Inspector Inspector       `json:"inspector"`
	Process   Process         `json:"process"`
	JVM       JVM             `json:"jvm"`
	Jemalloc  Jemalloc        `json:"jemalloc"`
	Tcmalloc  Tcmalloc        `json:"tcmalloc"`
	Libunwind Libunwind       `json:"libunwind"`
	Profilers []LoadedLibrary `json:"profilers"`
	// Libraries lists every library that was identified (allocators,
	// unwinders, JVMs, profilers), for reports and rules.
	Libraries []LoadedLibrary `json:"libraries"`
	// Host holds the kernel settings that limit profilers.
	Host Host `json:"host"`
	// MappedELFs counts the distinct files mapped executable.
	MappedELFs int `json:"mapped_elfs"`
	// MappedFiles are their paths (inside the target's root), for deciding
	// whether an agent's libraries are already loaded. Empty for an
	// AttachOnly inspection.
	MappedFiles []string `json:"mapped_files,omitempty"`
	// PriorCrash is set by a caller that remembers crashes (package
	// crashmem): this workload crashed after an earlier attach.
	PriorCrash string `json:"prior_crash,omitempty"`
	// Unknowns lists every fact that could not be determined, with why.
	Unknowns []UnknownFact `json:"unknowns,omitempty"`
}

// Inspector is who looked: it decides what the attach may do later.
type Inspector struct {
	EUID int `json:"euid"`
	EGID int `json:"egid"`
}

// UnknownFact names a fact and why it could not be determined.
type UnknownFact struct {
	Fact   string `json:"fact"`
	Reason string `json:"reason"`
}

// IDs are the four Linux credentials.
type IDs struct {
	Real      uint32 `json:"real"`
	Effective uint32 `json:"effective"`
	Saved     uint32 `json:"saved"`
	FS        uint32 `json:"fs"`
}

// ProcessState is a process's scheduling state.
type ProcessState string

// Process states, from the State letter in /proc/<pid>/status.
const (
	StateRunning   ProcessState = "running"
	StateSleeping  ProcessState = "sleeping"
	StateDiskSleep ProcessState = "disk-sleep"
	StateStopped   ProcessState = "stopped"
	StateTraced    ProcessState = "traced"
	StateZombie    ProcessState = "zombie"
	StateDead      ProcessState = "dead"
	StateIdle      ProcessState = "idle"
)

// Host is what the kernel allows profilers (nil: could not be read).
type Host struct {
	// PerfEventParanoid is kernel.perf_event_paranoid: above 2 (a
	// Debian/Ubuntu patch) nobody without CAP_PERFMON or CAP_SYS_ADMIN may
	// open perf events at all.
	PerfEventParanoid *int `json:"perf_event_paranoid,omitempty"`
	// KptrRestrict is kernel.kptr_restrict: above 0 hides kernel symbols.
	KptrRestrict *int `json:"kptr_restrict,omitempty"`
}

// Process is the OS-level view of the target.
type Process struct {
	Name      string       `json:"name"`
	Exe       string       `json:"exe,omitempty"`
	Cmdline   []string     `json:"cmdline,omitempty"`
	State     ProcessState `json:"state"`
	TracerPID int          `json:"tracer_pid,omitempty"`
	PPID      int          `json:"ppid"`
	UID       IDs          `json:"uid"`
	GID       IDs          `json:"gid"`
	Threads   int          `json:"threads"`
	// CapEff is the effective capability set; Seccomp the seccomp mode
	// (0 none, 1 strict, 2 filter, -1 unknown).
	CapEff  uint64 `json:"cap_eff"`
	Seccomp int    `json:"seccomp"`
	// StartTime (clock ticks after boot) pins this pid: a recycled pid has
	// a different start time.
	StartTime uint64 `json:"start_time"`
	// NSPid is the pid inside the target's own pid namespace (what it
	// calls itself, and what its attach files are named after).
	NSPid              int         `json:"ns_pid"`
	PIDNamespace       NamespaceID `json:"pid_namespace"`
	MountNamespace     NamespaceID `json:"mount_namespace"`
	SamePIDNamespace   bool        `json:"same_pid_namespace"`
	SameMountNamespace bool        `json:"same_mount_namespace"`
	// Root is the target's root directory seen from here
	// (/proc/<pid>/root); Cwd is its working directory inside that root.
	Root string `json:"root"`
	// LibraryPath is the target's LD_LIBRARY_PATH, which its dynamic
	// loader searches.
	LibraryPath string  `json:"library_path,omitempty"`
	Cwd         string  `json:"cwd,omitempty"`
	Signals     Signals `json:"signals"`
	// Machine and Libc describe the executable, for matching an agent
	// ("x86-64", "glibc" or "musl").
	Machine string `json:"machine,omitempty"`
	Libc    string `json:"libc,omitempty"`
}

// Signals holds the dispositions that matter for an attach.
type Signals struct {
	SIGQUIT   SignalState `json:"sigquit"`
	SIGPROF   SignalState `json:"sigprof"`
	SIGVTALRM SignalState `json:"sigvtalrm"`
}

// SignalState is one signal's disposition, from status' SigCgt, SigIgn
// and SigBlk (SigBlk is the main thread's mask only).
type SignalState struct {
	Caught  bool `json:"caught"`
	Ignored bool `json:"ignored"`
	Blocked bool `json:"blocked"`
}

// JVMKind is the kind of Java VM in a process.
type JVMKind string

// JVM kinds.
const (
	JVMHotSpot JVMKind = "hotspot"
	JVMOpenJ9  JVMKind = "openj9"
	JVMNone    JVMKind = "none"
)

// JVM describes the Java VM in the target, if any.
type JVM struct {
	Kind          JVMKind `json:"kind"`
	Version       string  `json:"version,omitempty"`
	VersionSource string  `json:"version_source,omitempty"`
	// Feature is the feature release (8, 11, 17, 21, 25...), 0 if unknown.
	Feature int    `json:"feature,omitempty"`
	Home    string `json:"home,omitempty"`
	LibJVM  string `json:"libjvm,omitempty"`
	// Flags are the effective VM options safeattach cares about, keyed by
	// HotSpot flag name (-Xrs is recorded as ReduceSignalUsage).
	Flags map[string]FlagSetting `json:"flags,omitempty"`
	// PerfData is the hsperfdata file the flags were completed from
	// (inside the target's root), if one was read.
	PerfData string `json:"perf_data,omitempty"`
	// MainClass is the main class or "-jar <file>" from the command line.
	MainClass string `json:"main_class,omitempty"`
	// StartupAgents are -agentpath/-agentlib/-javaagent options.
	StartupAgents []string     `json:"startup_agents,omitempty"`
	AttachSocket  AttachSocket `json:"attach_socket"`
	Evidence      []string     `json:"evidence,omitempty"`
}

// Flag returns a boolean flag's effective value and whether it was set.
func (j *JVM) Flag(name string) (value, set bool) {
	f, ok := j.Flags[name]
	return ok && f.Value == "true", ok
}

// FlagSetting is one effective VM option and where it came from.
type FlagSetting struct {
	Value  string `json:"value"`
	Source string `json:"source"` // "cmdline", "JAVA_TOOL_OPTIONS", ...
}

// AttachSocket is the state of /tmp/.java_pid<nspid> in the target's root.
type AttachSocket struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	// IsSocket, UID and Mode are set when Exists.
	IsSocket bool     `json:"is_socket,omitempty"`
	UID      uint32   `json:"uid,omitempty"`
	GID      uint32   `json:"gid,omitempty"`
	Mode     FileMode `json:"mode,omitempty"`
	// Distrust says why an existing socket is not one the JVM would have
	// created (empty when it is trustworthy).
	Distrust string `json:"distrust,omitempty"`
}

// Via is how an allocator got into the process.
type Via string

// How an allocator got into the process.
const (
	ViaMapped      Via = "mapped"        // loaded as a dependency
	ViaLDPreload   Via = "LD_PRELOAD"    // named in the environment
	ViaLDSoPreload Via = "ld.so.preload" // named in /etc/ld.so.preload
	ViaStatic      Via = "static"        // linked into the executable
)

// Unwinders an allocator may capture stacks with. The set is open:
// tcmalloc reports any TCMALLOC_STACKTRACE_METHOD value.
const (
	UnwinderLibunwind = "libunwind"
	UnwinderLibgcc    = "libgcc"
	UnwinderNone      = "none"
)

// ProfState is jemalloc's heap-profiling state.
type ProfState string

// Heap-profiling states.
const (
	ProfActive  ProfState = "active" // sampling now
	ProfIdle    ProfState = "idle"   // compiled in and enabled, prof_active:false
	ProfOff     ProfState = "off"
	ProfUnknown ProfState = "unknown"
)

// Jemalloc describes a process-wide jemalloc.
type Jemalloc struct {
	Present bool   `json:"present"`
	Via     Via    `json:"via,omitempty"`
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
	// Prefix is the symbol prefix of a prefixed build ("je_", "_rjem_").
	Prefix string `json:"prefix,omitempty"`
	// ProfBuilt says whether heap profiling was compiled in.
	ProfBuilt Tristate `json:"prof_built,omitempty"`
	// Unwinder is what serves prof_backtrace: libunwind, libgcc or unknown.
	Unwinder string   `json:"unwinder,omitempty"`
	Prof     ProfConf `json:"prof"`
	// Dumps are leftover jeprof.*.heap files in the target's cwd.
	Dumps    []string `json:"dumps,omitempty"`
	Evidence []string `json:"evidence,omitempty"`
}

// ProfConf is jemalloc's effective profiling configuration.
type ProfConf struct {
	State ProfState `json:"state"`
	// Options holds the effective value of each profiling option that any
	// source set (prof, prof_active, lg_prof_sample, prof_prefix...).
	Options map[string]string `json:"options,omitempty"`
	// Sources lists each configuration source in jemalloc's order, with
	// what it said or why it could not be read.
	Sources []ConfSource `json:"sources,omitempty"`
	Reason  string       `json:"reason,omitempty"`
}

// ConfSource is one place jemalloc reads options from.
type ConfSource struct {
	Name  string `json:"name"` // "malloc_conf symbol", "/etc/malloc.conf", "MALLOC_CONF"
	Value string `json:"value,omitempty"`
	Set   bool   `json:"set"`
	Error string `json:"error,omitempty"`
}

// TcmallocFlavor tells gperftools' full tcmalloc from the minimal one.
type TcmallocFlavor string

// tcmalloc flavours.
const (
	TcmallocFull    TcmallocFlavor = "full"
	TcmallocMinimal TcmallocFlavor = "minimal"
	TcmallocUnknown TcmallocFlavor = "unknown" // the library could not be read
)

// Tcmalloc describes gperftools' tcmalloc in the process.
type Tcmalloc struct {
	Present bool           `json:"present"`
	Via     Via            `json:"via,omitempty"`
	Path    string         `json:"path,omitempty"`
	Flavor  TcmallocFlavor `json:"flavor,omitempty"`
	Version string         `json:"version,omitempty"`
	// HeapProfiler is yes/no/unknown; HeapProfilerBy says what turned it on.
	HeapProfiler   Tristate `json:"heap_profiler,omitempty"`
	HeapProfilerBy []string `json:"heap_profiler_by,omitempty"`
	CPUProfiler    Tristate `json:"cpu_profiler,omitempty"`
	Unwinder       string   `json:"unwinder,omitempty"`
	Evidence       []string `json:"evidence,omitempty"`
}

// Libunwind describes a mapped libunwind (the nongnu.org project).
type Libunwind struct {
	Present bool   `json:"present"`
	Path    string `json:"path,omitempty"`
	// Project is "nongnu" (libunwind.so.8) or "llvm" (libunwind.so.1).
	Project string `json:"project,omitempty"`
	// Version is an estimate: a range ("1.3-1.6") or exact from a package db.
	Version       string   `json:"version,omitempty"`
	VersionMethod string   `json:"version_method,omitempty"`
	Preloaded     bool     `json:"preloaded,omitempty"`
	Evidence      []string `json:"evidence,omitempty"`
}

// Role is what an identified library does in the process.
type Role string

// Library roles.
const (
	RoleJVM           Role = "jvm"
	RoleAllocator     Role = "allocator"
	RoleUnwinder      Role = "unwinder"
	RoleAsyncProfiler Role = "async-profiler"
	RoleProfiler      Role = "profiler"
)

// LoadedLibrary is an identified library mapped in the target.
type LoadedLibrary struct {
	Role    Role   `json:"role"`
	Kind    string `json:"kind"` // "async-profiler", "jemalloc", "yourkit", ...
	Path    string `json:"path"`
	Version string `json:"version,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	// SHA256 is the content hash of an async-profiler copy (read through
	// /proc/<pid>/map_files), empty when it could not be read.
	SHA256 string `json:"sha256,omitempty"`
}
