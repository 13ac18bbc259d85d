package preflight

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
)

// ELFCache memoises ELF probes by file identity, bounded in entries and
// bytes. It is safe for concurrent use. The one a daemon shares between
// inspections (and with diagnose.Options.ELFCache, which takes the same
// type) parses 200 JVMs' one libjvm.so once. The zero value holds at
// most 1024 probes and 64 MiB; NewELFCache sets other bounds.
type ELFCache struct {
	// c is held by value so that the zero ELFCache is a usable cache.
	c elfx.Cache
}

// NewELFCache returns a cache of at most maxEntries probes and maxBytes of
// estimated memory (zero: 1024 entries, 64 MiB).
func NewELFCache(maxEntries int, maxBytes int64) *ELFCache {
	e := new(ELFCache)
	e.c.SetLimits(maxEntries, maxBytes)
	return e
}

// Len returns the number of cached probes and their estimated bytes.
func (e *ELFCache) Len() (entries int, bytes int64) { return e.c.Len() }

// Stats returns the number of cache hits and misses so far.
func (e *ELFCache) Stats() (hits, misses uint64) { return e.c.Stats() }

// Reset empties the cache.
func (e *ELFCache) Reset() { e.c.Reset() }

// elfxCache is the cache to probe through: e's, or the process-wide one
// for a nil e.
func (e *ELFCache) elfxCache() *elfx.Cache {
	if e == nil {
		return elfx.Shared()
	}
	return &e.c
}

// diagnose takes an *ELFCache too and reaches the cache inside through
// elfx.Unwrap (it imports preflight, so this init has run by then).
func init() {
	elfx.Unwrap = func(wrapper any) *elfx.Cache {
		e, _ := wrapper.(*ELFCache)
		return e.elfxCache()
	}
}

// Options tunes Inspect. The zero value inspects the live /proc.
type Options struct {
	// ProcRoot is the procfs to read ("" means /proc). Tests point it at
	// fixture trees.
	ProcRoot string
	// Logger receives debug records about what could not be read.
	Logger *slog.Logger
	// SkipMemory skips reading jemalloc's malloc_conf from the target's
	// memory (the one read of /proc/<pid>/mem).
	SkipMemory bool
	// ELFCache memoises the ELF probes; nil means the process-wide one.
	ELFCache *ELFCache
	// AttachOnly limits the inspection to what an attach that loads no
	// agent (jcmd, threaddump) needs: process, JVM kind, version, flags
	// and socket. No ELF file is parsed, so it costs a fraction of a
	// millisecond even in a fresh process. Allocators and profilers are
	// left out of the report.
	AttachOnly bool
}

// mappedLib is one distinct file mapped by the target.
type mappedLib struct {
	path     string
	deleted  bool
	base     uint64 // load address: start of the mapping at file offset 0
	devMajor uint32
	devMinor uint32
	inode    uint64
	start    uint64
	end      uint64
	exec     bool
}

// inspection carries what one Inspect call has read so far.
type inspection struct {
	// mapsErr is why the memory map could not be read: then nothing
	// derived from it (the JVM's kind, its libraries) is known.
	mapsErr error
	// release is the JDK's release file, read while finding its home.
	release []byte
	opts    Options
	p       proc.Proc
	status  *proc.Status
	env     proc.Environ
	envErr  error
	args    []string
	libs    []*mappedLib
	exe     *mappedLib
	// probed memoises probe results within one inspection: the executable
	// is consulted by several sections, and each probe opens the file.
	probed map[*mappedLib]probeResult
	// preloadEnv and preloadFile are read once, on first use.
	preloadsRead bool
	// flagFiles are -XX:Flags=, -XX:VMOptionsFile= and @argfile options
	// seen, for hsperfdata to account for.
	flagFiles               []string
	preloadEnv, preloadFile []string
	r                       *Report
	log                     *slog.Logger
}

// Inspect describes the process pid. It fails only when the process does
// not exist (ErrNotFound) or its status cannot be read (ErrPermission);
// every other gap is recorded in Report.Unknowns.
func Inspect(ctx context.Context, pid int, opts Options) (*Report, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNotFound)
	}
	fsys := proc.NewFS(opts.ProcRoot)
	in := &inspection{opts: opts, p: fsys.Proc(pid), log: opts.Logger}
	if in.log == nil {
		in.log = slog.New(slog.DiscardHandler)
	}
	st, err := in.p.Status()
	if err != nil {
		switch {
		case proc.IsNotExist(err):
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNotFound)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("pid %d: %w", pid, ErrPermission)
		}
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if st.Tgid != 0 && st.Tgid != pid {
		// A thread id, not a process: /proc/<tid> exists but names a thread.
		return nil, fmt.Errorf("pid %d is a thread of process %d: %w", pid, st.Tgid, ErrNotFound)
	}
	in.status = st
	in.r = &Report{PID: pid, Inspector: Inspector{EUID: os.Geteuid(), EGID: os.Getegid()}}
	in.inspectProcess()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in.readMaps()
	if !opts.AttachOnly {
		in.inspectExecutable()
	}
	in.inspectJVM(ctx)
	if !opts.AttachOnly {
		in.inspectLibraries()
		in.inspectJemalloc(ctx)
		in.inspectTcmalloc(ctx)
		in.inspectLibunwind(ctx)
		in.inspectHost()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A process that exited while we looked yields a report about a ghost.
	if !in.p.Exists() {
		return nil, fmt.Errorf("pid %d exited during inspection: %w", pid, ErrNotFound)
	}
	return in.r, nil
}

func (in *inspection) unknown(fact string, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	in.r.Unknowns = append(in.r.Unknowns, UnknownFact{Fact: fact, Reason: reason})
	in.log.Debug("preflight: fact unknown", "pid", in.r.PID, "fact", fact, "reason", reason)
}

func ids(i proc.IDs) IDs { return IDs{i.Real, i.Effective, i.Saved, i.FS} }

func sigState(st *proc.Status, sig int) SignalState {
	return SignalState{Caught: st.SigCgt.Has(sig), Ignored: st.SigIgn.Has(sig), Blocked: st.SigBlk.Has(sig)}
}

func (in *inspection) inspectProcess() {
	st, pr := in.status, &in.r.Process
	pr.Name = st.Name
	pr.State = ProcessState(proc.StateName(st.State))
	pr.TracerPID = st.TracerPid
	if st.TracerPid != 0 && pr.State == StateSleeping {
		// A traced process that is running between stops is still traced.
		pr.State = StateTraced
	}
	pr.PPID = st.PPid
	pr.UID, pr.GID = ids(st.UID), ids(st.GID)
	pr.Threads = st.Threads
	pr.NSPid = st.NSPid()
	pr.CapEff, pr.Seccomp = st.CapEff, st.Seccomp
	pr.Signals = Signals{
		SIGQUIT:   sigState(st, proc.SIGQUIT),
		SIGPROF:   sigState(st, proc.SIGPROF),
		SIGVTALRM: sigState(st, proc.SIGVTALRM),
	}
	pr.Root = in.p.Path("root")
	if s, err := in.p.Stat(); err == nil {
		pr.StartTime = s.StartTime
	} else {
		in.unknown("process.start_time", "%v", err)
	}
	if exe, err := os.Readlink(in.p.Path("exe")); err == nil {
		pr.Exe = strings.TrimSuffix(exe, " (deleted)")
	} else if !st.Kthread {
		in.unknown("process.exe", "%v", err)
	}
	if cwd, err := os.Readlink(in.p.Path("cwd")); err == nil {
		pr.Cwd = cwd
	} else {
		in.unknown("process.cwd", "%v", err)
	}
	var err error
	if in.args, err = in.p.Cmdline(); err != nil {
		in.unknown("process.cmdline", "%v", err)
	}
	pr.Cmdline = in.args
	if in.env, err = in.p.Environ(); err != nil {
		in.envErr = err
		in.unknown("process.environ", "%v", err)
	} else if v, ok := in.env.Lookup("LD_LIBRARY_PATH"); ok {
		pr.LibraryPath = v
	}
	self := proc.NewFS(in.opts.ProcRoot).Self()
	for _, ns := range []struct {
		kind string
		id   *NamespaceID
		same *bool
	}{{"pid", &pr.PIDNamespace, &pr.SamePIDNamespace}, {"mnt", &pr.MountNamespace, &pr.SameMountNamespace}} {
		id, err := in.p.Namespace(ns.kind)
		if err != nil {
			in.unknown("process."+ns.kind+"_namespace", "%v", err)
			continue
		}
		*ns.id = NamespaceID(id)
		if mine, err := self.Namespace(ns.kind); err == nil {
			*ns.same = mine == id
		}
	}
}

// readMaps collects the distinct files the target maps, in load order.
func (in *inspection) readMaps() {
	byKey := map[[3]uint64]*mappedLib{}
	exePath := in.r.Process.Exe
	err := in.p.WalkMaps(func(path []byte) bool { return len(path) > 0 && path[0] == '/' }, func(m *proc.Mapping) error {
		if !m.IsFile() {
			return nil
		}
		key := [3]uint64{uint64(m.DevMajor)<<32 | uint64(m.DevMinor), m.Inode, 0}
		lib := byKey[key]
		if lib == nil {
			lib = &mappedLib{path: m.Path, deleted: m.Deleted, devMajor: m.DevMajor, devMinor: m.DevMinor, inode: m.Inode, start: m.Start, end: m.End}
			byKey[key] = lib
			in.libs = append(in.libs, lib)
			if lib.path == exePath {
				in.exe = lib
			}
		}
		if m.Offset == 0 && lib.base == 0 {
			lib.base = m.Start
		}
		if m.Executable() {
			lib.exec = true
		}
		return nil
	})
	if err != nil {
		in.mapsErr = err
		in.unknown("process.maps", "%v", err)
	}
	for _, l := range in.libs {
		if l.exec {
			in.r.MappedELFs++
			if !l.deleted && !in.opts.AttachOnly {
				in.r.MappedFiles = append(in.r.MappedFiles, l.path)
			}
		}
	}
}

// inspectExecutable reads the executable's architecture and C library.
// For a JVM the launcher binary is small and always the same file, so the
// probe is cached across targets.
func (in *inspection) inspectExecutable() {
	if in.exe == nil {
		in.unknown("process.machine", "executable not found among the mappings")
		return
	}
	info, err := in.probe(in.exe)
	if err != nil {
		in.unknown("process.machine", "%v", err)
		return
	}
	in.r.Process.Machine, in.r.Process.Libc = info.Machine, info.Libc()
}

// probe parses a mapped library through the shared cache.
type probeResult struct {
	info *elfx.Info
	err  error
}

func (in *inspection) probe(l *mappedLib) (*elfx.Info, error) {
	if r, ok := in.probed[l]; ok {
		return r.info, r.err
	}
	info, err := in.probeFile(l)
	if in.probed == nil {
		in.probed = map[*mappedLib]probeResult{}
	}
	in.probed[l] = probeResult{info, err}
	return info, err
}

func (in *inspection) probeFile(l *mappedLib) (*elfx.Info, error) {
	f, _, err := elfx.OpenMapped(elfx.MappedFile{
		ProcDir: in.p.Path(), Start: l.start, End: l.end, Path: l.path,
		DevMajor: l.devMajor, DevMinor: l.devMinor, Inode: l.inode,
	})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, _, err := in.opts.ELFCache.elfxCache().Probe(f, elfx.ProbeOptions{Needles: probeNeedles})
	return info, err
}

// hashMapped returns the SHA-256 of the file behind a mapping, read
// through map_files (the mapped inode itself, even if the path was
// replaced since).
func (in *inspection) hashMapped(l *mappedLib) (string, error) {
	f, _, err := elfx.OpenMapped(elfx.MappedFile{
		ProcDir: in.p.Path(), Start: l.start, End: l.end, Path: l.path,
		DevMajor: l.devMajor, DevMinor: l.devMinor, Inode: l.inode,
	})
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, MaxAgentSize+1))
	if err != nil {
		return "", err
	}
	if n > MaxAgentSize {
		return "", fmt.Errorf("larger than %d bytes", MaxAgentSize)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// inspectHost reads the kernel settings that decide what a profiler can
// do: they are host-wide, the same inside every container.
func (in *inspection) inspectHost() {
	for _, k := range []struct {
		file string
		dst  **int
	}{{"perf_event_paranoid", &in.r.Host.PerfEventParanoid}, {"kptr_restrict", &in.r.Host.KptrRestrict}} {
		path := filepath.Join(proc.NewFS(in.opts.ProcRoot).Root(), "sys/kernel", k.file)
		b, err := os.ReadFile(path)
		if err != nil {
			in.unknown("host."+k.file, "%v", err)
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			in.unknown("host."+k.file, "%s: %q", path, b)
			continue
		}
		*k.dst = &v
	}
}

// findLib returns the first mapped library whose base name satisfies match.
func (in *inspection) findLib(match func(base string) bool) *mappedLib {
	for _, l := range in.libs {
		if match(filepath.Base(l.path)) {
			return l
		}
	}
	return nil
}

// rootPath names a path inside the target's filesystem as seen from
// here, for messages. Files are opened with internal/safefile's *In
// functions, which resolve the path inside the target's root: joining
// would follow an absolute symlink in the container out of it.
func (in *inspection) rootPath(p string) string {
	return filepath.Join(in.r.Process.Root, filepath.Clean("/"+p))
}

// readConfig reads one of the target's own configuration files (its
// /etc/passwd, a JDK's release file), resolved inside its root.
func (in *inspection) readConfig(ctx context.Context, p string, limit int64) ([]byte, error) {
	f, err := safefile.ReadIn(ctx, in.r.Process.Root, p, limit, safefile.Accept{FollowLast: true})
	if err != nil {
		return nil, err
	}
	return f.Data, nil
}

// preloads returns LD_PRELOAD entries and /etc/ld.so.preload entries of
// the target, in symbol-lookup order (environment first).
func (in *inspection) preloads(ctx context.Context) (env, file []string) {
	if !in.preloadsRead {
		in.preloadsRead = true
		if v, ok := in.env.Lookup("LD_PRELOAD"); ok {
			in.preloadEnv = strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ':' || r == '\t' })
		}
		if data, err := in.readConfig(ctx, "/etc/ld.so.preload", maxTargetConfigFile); err == nil {
			in.preloadFile = strings.Fields(string(data))
		}
	}
	return in.preloadEnv, in.preloadFile
}

func (in *inspection) addLibrary(role Role, kind string, l *mappedLib, version string) {
	in.r.Libraries = append(in.r.Libraries, LoadedLibrary{Role: role, Kind: kind, Path: l.path, Version: version, Deleted: l.deleted})
}
