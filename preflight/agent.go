package preflight

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/safefile"
)

// AgentKind is what an agent library is.
type AgentKind string

// Agent kinds.
const (
	AgentAsyncProfiler AgentKind = "async-profiler"
	AgentDatadog       AgentKind = "datadog-java-profiler"
	AgentJVMTI         AgentKind = "jvmti"
	AgentNotAgent      AgentKind = "not-an-agent"
	// AgentFlightRecorder is the JVM's own Flight Recorder: a pseudo-agent
	// with no library, driven by diagnostic commands (FlightRecorderAgent).
	AgentFlightRecorder AgentKind = "jfr"
)

// FlightRecorderAgent is the JVM's built-in Flight Recorder as the rules
// judge it: an Agent of kind AgentFlightRecorder with no file (no Path,
// nothing to hash, load or trust), started and stopped by diagnostic
// commands (JFR.start, JFR.stop) sent through the attach socket. The
// rules about a library's file and loading do not apply to it; those
// that protect the JVM and its attach socket do.
func FlightRecorderAgent() *Agent {
	return &Agent{
		Kind:   AgentFlightRecorder,
		Exists: true,
		Evidence: []string{"the JVM's built-in Flight Recorder, driven by diagnostic commands (JFR.start, JFR.stop) " +
			"through the attach socket: no library is loaded"},
	}
}

// Agent describes an agent library file, before it is loaded anywhere.
type Agent struct {
	Path     string    `json:"path"`
	RealPath string    `json:"real_path,omitempty"`
	Exists   bool      `json:"exists"`
	Kind     AgentKind `json:"kind,omitempty"`
	Version  string    `json:"version,omitempty"`
	// VersionReason explains an empty Version.
	VersionReason string   `json:"version_reason,omitempty"`
	Machine       string   `json:"machine,omitempty"`
	Class         int      `json:"class,omitempty"`
	Libc          string   `json:"libc,omitempty"`
	Needed        []string `json:"needed,omitempty"`
	// RunPath and VersionNeeds are what the dynamic loader will look for:
	// DT_RUNPATH/DT_RPATH entries, and the symbol versions required from
	// each needed library.
	RunPath      []string            `json:"run_path,omitempty"`
	VersionNeeds map[string][]string `json:"version_needs,omitempty"`
	// Loadability is set by CheckLoadable for a given target.
	Loadability *Loadability `json:"loadability,omitempty"`
	// Imports lists the imported symbols that rules care about.
	Imports          []string `json:"imports,omitempty"`
	ImportsDlIterate bool     `json:"imports_dl_iterate_phdr"`
	ExportsOnAttach  bool     `json:"exports_agent_onattach"`
	SHA256           string   `json:"sha256,omitempty"`
	Size             int64    `json:"size,omitempty"`
	// Regular, OwnerUID, Mode and WritableBy describe who could have written
	// the file: the file itself and every directory above it.
	Regular    bool     `json:"regular"`
	OwnerUID   uint32   `json:"owner_uid"`
	Mode       FileMode `json:"mode"`
	WritableBy []Writer `json:"writable_by,omitempty"`
	Error      string   `json:"error,omitempty"`
	Evidence   []string `json:"evidence,omitempty"`
	// Options are the options the agent is to be loaded with; the caller
	// sets them (InspectAgent leaves them empty). Some hazards depend on
	// them (nativemem, alloc, jfrsync).
	Options string `json:"options,omitempty"`
	// Assumed marks a stand-in for an agent that was not given: the worst
	// plausible one, so that agent-dependent rules still speak.
	Assumed bool `json:"assumed,omitempty"`
}

// Writer is someone other than root who could modify an agent file: the
// owner of the file or of a directory above it, or its group or everyone
// when the permission bits allow.
type Writer struct {
	Kind string `json:"kind"` // "uid", "gid", "everyone"
	ID   uint32 `json:"id,omitempty"`
	Path string `json:"path"`
}

func (w Writer) String() string {
	switch w.Kind {
	case "uid":
		return fmt.Sprintf("uid %d (owner of %s)", w.ID, w.Path)
	case "gid":
		return fmt.Sprintf("gid %d (group-writable %s)", w.ID, w.Path)
	}
	return fmt.Sprintf("everyone (world-writable %s)", w.Path)
}

// Markers of async-profiler, whatever the file is called: vendors ship it
// renamed. The JNI entry point is the one every version exports.
const (
	apJNIExport  = "Java_one_profiler_AsyncProfiler_execute0"
	apC_API      = "asprof_execute"
	apServerText = "Async-profiler Server"
	ddJNIPrefix  = "Java_com_datadoghq_profiler_"
)

// agentImportsOfInterest are imports the knowledge base reasons about.
var agentImportsOfInterest = []string{"dl_iterate_phdr", "dlopen", "__tls_get_addr", "malloc", "pthread_create"}

// probeNeedles are searched in every probed library's read-only data.
var probeNeedles = []string{apServerText, "gperftools ", jemallocNeedle, jeprofNeedle}

// apVersionShape is the bare async-profiler version literal:
// <major>.<minor>[.<patch>][-<7+ hex>] (docs/detection.md, "Identifying an agent").
// The hex length is checked in isAPVersion rather than with {7,40}, which
// would make the compiled expression forty times larger at start-up.
var apVersionShape = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?(-([0-9a-f]+))?$`) })

func isAPVersion(s string) bool {
	m := apVersionShape().FindStringSubmatch(s)
	return m != nil && (m[3] == "" || len(m[3]) >= 7 && len(m[3]) <= 40)
}

// MaxAgentSize caps the agent files InspectAgent reads: async-profiler is
// about 1 MiB, the largest vendor agents seen are a few tens of MiB. A
// larger file is refused before a byte of it is read.
const MaxAgentSize = 128 << 20

// InspectAgent describes the agent library at path. A missing, unreadable
// or unusable file (not regular, too large) is not an error: the Agent
// says so (Exists false or Error set), so the rules can refuse it with a
// reason. Errors are only ctx's end and an empty path.
func InspectAgent(ctx context.Context, path string) (*Agent, error) {
	a, _, err := ReadAgent(ctx, path)
	return a, err
}

// ReadAgent is InspectAgent that also returns the bytes it judged: the
// file is opened once, and the hash, the ELF probe and the returned bytes
// all come from that one read. A caller that loads the agent must load
// these bytes, not the path, which may name another file by then. The
// bytes are nil whenever the Agent carries an Error.
func ReadAgent(ctx context.Context, path string) (*Agent, []byte, error) {
	if path == "" {
		return nil, nil, errors.New("empty agent path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	a := &Agent{Path: abs}
	f, err := safefile.Read(ctx, abs, MaxAgentSize, safefile.Options{})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, err
		}
		a.Exists = !errors.Is(err, fs.ErrNotExist)
		a.Error = describeReadError(err)
		if a.Exists {
			a.RealPath = abs
			if real, rerr := filepath.EvalSymlinks(abs); rerr == nil {
				a.RealPath = real
			}
			a.WritableBy = writers(a.RealPath)
		}
		return a, nil, nil
	}
	a.Exists, a.Regular = true, true
	a.RealPath = f.Path
	a.Mode = FileMode(f.Stat.Mode & 0o7777)
	a.OwnerUID = f.Stat.Uid
	a.WritableBy = writers(a.RealPath)
	a.Size = int64(len(f.Data))
	sum := sha256.Sum256(f.Data)
	a.SHA256 = hex.EncodeToString(sum[:])
	info, err := elfx.ProbeReader(bytes.NewReader(f.Data), a.Size, elfx.ProbeOptions{Needles: probeNeedles})
	if err != nil {
		a.Error = err.Error()
		a.Kind = AgentNotAgent
		return a, nil, nil
	}
	a.Machine, a.Class, a.Libc, a.Needed = info.Machine, info.Class, info.Libc(), info.Needed
	a.RunPath, a.VersionNeeds = info.RunPath, info.VersionNeeds
	for _, s := range agentImportsOfInterest {
		if info.Imports(s) {
			a.Imports = append(a.Imports, s)
		}
	}
	a.ImportsDlIterate = info.Imports("dl_iterate_phdr")
	a.ExportsOnAttach = info.Defines("Agent_OnAttach")
	a.Kind, a.Version, a.VersionReason, a.Evidence = classifyAgent(info)
	return a, f.Data, nil
}

// describeReadError is the one-line reason an agent file cannot be used.
func describeReadError(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, safefile.ErrNotRegular), errors.Is(err, safefile.ErrTooLarge):
		if errors.As(err, &pe) {
			return pe.Err.Error()
		}
	case errors.As(err, &pe):
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// classifyAgent names the kind of agent by its markers and, for
// async-profiler, picks the version literal.
func classifyAgent(info *elfx.Info) (kind AgentKind, version, reason string, evidence []string) {
	switch {
	case info.Defines(apJNIExport) || info.Defines(apC_API) || info.Needles[apServerText] != "":
		kind = AgentAsyncProfiler
		for _, m := range []string{apJNIExport, apC_API, "Agent_OnAttach"} {
			if info.Defines(m) {
				evidence = append(evidence, "exports "+m)
			}
		}
		if info.Needles[apServerText] != "" {
			evidence = append(evidence, fmt.Sprintf("read-only data contains %q", apServerText))
		}
	case hasPrefixSymbol(info, ddJNIPrefix):
		kind = AgentDatadog
		evidence = append(evidence, "exports "+ddJNIPrefix+"*")
	case info.Defines("Agent_OnAttach") || info.Defines("Agent_OnLoad"):
		return AgentJVMTI, "", "", []string{"exports Agent_OnAttach/Agent_OnLoad"}
	default:
		return AgentNotAgent, "", "", []string{"exports neither Agent_OnAttach nor Agent_OnLoad"}
	}
	var candidates []string
	for _, v := range info.VersionLiterals {
		if isAPVersion(v) {
			candidates = append(candidates, v)
		}
	}
	switch len(candidates) {
	case 0:
		reason = "no bare version literal in read-only data"
	case 1:
		version = candidates[0]
		evidence = append(evidence, fmt.Sprintf("version literal %q in read-only data", version))
	default:
		reason = fmt.Sprintf("ambiguous: %d version-shaped literals (%s)", len(candidates), strings.Join(candidates, ", "))
	}
	return kind, version, reason, evidence
}

func hasPrefixSymbol(info *elfx.Info, prefix string) bool {
	for _, s := range info.Defined {
		if strings.HasPrefix(s.Name, prefix) {
			return true
		}
	}
	return false
}

// writers lists who besides root could have modified the file: its owner
// if not root, and its group or everyone where the permission bits allow
// it, for the file and each directory above it (a writable directory lets
// its writer replace the file; a sticky one only lets the file's owner).
func writers(path string) []Writer {
	var out []Writer
	seen := map[Writer]bool{}
	add := func(w Writer) {
		key := Writer{Kind: w.Kind, ID: w.ID}
		if !seen[key] {
			seen[key] = true
			out = append(out, w)
		}
	}
	for p := path; ; p = filepath.Dir(p) {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err == nil {
			protected := st.Mode&syscall.S_ISVTX != 0 && p != path
			if st.Uid != 0 {
				add(Writer{Kind: "uid", ID: st.Uid, Path: p})
			}
			if st.Mode&0o020 != 0 && st.Gid != 0 && !protected {
				add(Writer{Kind: "gid", ID: st.Gid, Path: p})
			}
			if st.Mode&0o002 != 0 && !protected {
				add(Writer{Kind: "everyone", Path: p})
			}
		}
		if p == "/" || p == "." {
			break
		}
	}
	return out
}
