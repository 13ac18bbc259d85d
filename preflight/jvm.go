package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/versions"
)

// Where VM options come from, in the order HotSpot applies them; a later
// source overrides an earlier one for the same flag:
//
//	JAVA_TOOL_OPTIONS   read by the VM before the command line
//	JDK_JAVA_OPTIONS    JDK 9+ `java` launcher, inserted before the
//	                    command-line options (not visible in cmdline)
//	cmdline             /proc/<pid>/cmdline up to the main class
//	_JAVA_OPTIONS       read by the VM after the command line
//
// -XX:Flags=, -XX:VMOptionsFile= and @argfiles can set flags too. Their
// files are not read (they may be gone, or the launcher's); what the VM
// made of them is read from its hsperfdata instead, where it publishes
// its arguments (java.rt.vmArgs) and the flags file's settings
// (java.rt.vmFlags). Those fill only what the visible sources leave unset.
var optionSources = []string{"JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "cmdline", "_JAVA_OPTIONS"}

// trackedFlag reports whether safeattach reasons about the -XX flag
// name. -Xrs is the same switch as -XX:+ReduceSignalUsage.
// FlightRecorder (-XX:-FlightRecorder) says whether the JVM's Flight
// Recorder may run at all. A switch, not
// a map: a map literal is built at the start of every command.
func trackedFlag(name string) bool {
	switch name {
	case "DisableAttachMechanism", "ReduceSignalUsage", "EnableDynamicAgentLoading",
		"StartAttachListener", "AltTempDir", "UsePerfData", "FlightRecorder":
		return true
	}
	return false
}

const maxJavaHomeDepth = 5

func (in *inspection) inspectJVM(ctx context.Context) {
	j := &in.r.JVM
	j.Kind = JVMNone
	isKind := func(kind string) func(string) bool {
		return func(b string) bool { return proc.JVMLibraryKind(b) == kind }
	}
	if l := in.findLib(isKind(proc.JVMOpenJ9)); l != nil {
		// OpenJ9 also maps a libjvm.so redirector; libj9vm decides.
		j.Kind = JVMOpenJ9
		j.LibJVM = l.path
		j.Evidence = append(j.Evidence, "maps "+l.path)
		in.addLibrary(RoleJVM, string(JVMOpenJ9), l, "")
	} else if l := in.findLib(isKind(proc.JVMHotSpot)); l != nil {
		j.Kind = JVMHotSpot
		j.LibJVM = l.path
		j.Evidence = append(j.Evidence, "maps "+l.path)
	} else {
		if in.mapsErr != nil {
			in.unknown("jvm.kind", "the memory map could not be read: %v", in.mapsErr)
		}
		return
	}
	j.Home = in.javaHome(ctx, j.LibJVM)
	in.jvmVersion()
	if j.Kind == JVMHotSpot {
		in.addLibrary(RoleJVM, string(JVMHotSpot), in.findLib(isKind(proc.JVMHotSpot)), j.Version)
	}
	in.jvmFlags(ctx)
	in.attachSocket(ctx)
}

// javaHome walks up from libjvm.so to the directory holding "release":
// lib/server/libjvm.so (9+), jre/lib/amd64/server/libjvm.so (8). The
// release file found is kept for jvmVersion: one read serves both.
func (in *inspection) javaHome(ctx context.Context, libjvm string) string {
	dir := filepath.Dir(libjvm)
	for i := 0; i < maxJavaHomeDepth && dir != "/"; i++ {
		dir = filepath.Dir(dir)
		if data, err := in.readConfig(ctx, filepath.Join(dir, "release"), maxTargetConfigFile); err == nil {
			in.release = data
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			return dir // there, but unreadable: the version comes from libjvm
		}
	}
	return ""
}

func (in *inspection) jvmVersion() {
	j := &in.r.JVM
	if j.Home != "" {
		rel := filepath.Join(j.Home, "release")
		if v := releaseVersion(in.release); v != "" {
			j.Version, j.VersionSource = v, rel
		}
	}
	if j.Version == "" && j.Kind == JVMHotSpot {
		if l := in.findLib(func(b string) bool { return b == "libjvm.so" }); l != nil {
			if info, err := in.probe(l); err == nil {
				for _, lit := range info.VersionLiterals {
					// libjvm carries its full version: 17.0.15+6-Debian-1deb12u1, 1.8.0_412-b08.
					if i := strings.IndexAny(lit, "+-"); i > 0 && strings.Count(lit[:i], ".") >= 1 && (strings.Contains(lit, "+") || strings.HasPrefix(lit, "1.8.0_")) {
						j.Version, j.VersionSource = lit[:i], l.path+" (version literal "+lit+")"
						break
					}
				}
			}
		}
	}
	if j.Version == "" {
		in.unknown("jvm.version", "no release file under the target root and no version literal in libjvm.so")
		return
	}
	j.Feature = versions.JavaFeature(j.Version) // "1.8.0_412" → 8, "17.0.15" → 17
}

// releaseVersion is JAVA_VERSION from a release file's contents.
func releaseVersion(data []byte) string {
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "JAVA_VERSION="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// maxTargetConfigFile caps the small text files read from the target's
// root (a JDK's release file, ld.so.preload, ld.so.conf).
const maxTargetConfigFile = 64 << 10

// jvmFlags computes the effective tracked flags from every option source.
func (in *inspection) jvmFlags(ctx context.Context) {
	j := &in.r.JVM
	j.Flags = map[string]FlagSetting{}
	if in.envErr != nil {
		in.unknown("jvm.flags", "environment unreadable, JAVA_TOOL_OPTIONS and _JAVA_OPTIONS unknown: %v", in.envErr)
	}
	for _, src := range optionSources {
		var opts []string
		if src == "cmdline" {
			opts, j.MainClass = proc.JavaMain(in.args)
		} else if v, ok := in.env.Lookup(src); ok {
			opts = strings.Fields(v)
		}
		for _, o := range opts {
			in.applyOption(o, src)
		}
	}
	in.perfDataFlags(ctx)
}

// maxPerfData caps the hsperfdata file read (the JVM's default is 32 KiB).
const maxPerfData = 4 << 20

// perfDataFlags reads the VM's own record of its arguments and flags from
// /tmp/hsperfdata_<user>/<nspid> under its root, for flags set where the
// command line does not show them.
func (in *inspection) perfDataFlags(ctx context.Context) {
	j := &in.r.JVM
	pending := in.flagFiles
	in.flagFiles = nil
	if len(pending) == 0 {
		return // the visible sources are the whole story: nothing to read
	}
	pd, path := in.perfData(ctx)
	j.PerfData = path
	if pd == nil {
		for _, f := range pending {
			in.unknown("jvm.flags", "%s names a file that is not read, and no hsperfdata was found (-XX:-UsePerfData?)", f)
		}
		return
	}
	for _, key := range []string{"java.rt.vmFlags", "java.rt.vmArgs"} {
		for _, o := range strings.Fields(pd.Strings[key]) {
			// The flags file says "+Name" / "-Name" / "Name=value".
			if !strings.HasPrefix(o, "-XX:") && !strings.HasPrefix(o, "-X") && !strings.HasPrefix(o, "-D") && !strings.HasPrefix(o, "-agent") && !strings.HasPrefix(o, "-javaagent") {
				o = "-XX:" + o
			}
			name := flagName(o)
			if _, set := j.Flags[name]; set && name != "" {
				continue
			}
			in.applyOption(o, "hsperfdata ("+key+")")
		}
	}
	in.flagFiles = nil
}

// perfData reads the JVM's hsperfdata (inside its root, the JVM user's or
// root's file, bounded) and returns it with its path; nil if none.
func (in *inspection) perfData(ctx context.Context) (*proc.PerfData, string) {
	for _, m := range in.perfDataPaths(ctx) {
		f, err := safefile.ReadIn(ctx, in.r.Process.Root, m, maxPerfData, safefile.Accept{UIDs: []uint32{in.r.Process.UID.Effective, 0}})
		if err != nil {
			continue
		}
		if pd, err := proc.ParsePerfData(f.Data); err == nil {
			return pd, m
		}
	}
	return nil, ""
}

// InitWatch tells whether a JVM has finished starting: its hsperfdata
// counter sun.rt.createVmEndTime is set, which JNI_CreateJavaVM does as
// it returns to the launcher. A JVM handles SIGQUIT, and could start its
// attach listener, well before that; an agent run by a listener started
// then fails (async-profiler 4.5: "JVM does not support Tool Interface",
// measured loads 140-160 ms after launch, while sun.rt.vmInitDoneTime,
// set earlier in create_vm, was already set).
//
// It is asked again and again while an agent waits, at a cost that the
// file cannot raise (its user can replace it with anything: invariant 9
// of docs/safety.md): where the file is is worked out once (the target's
// /etc/passwd, up to maxPasswd, is read once, not at every poll), and
// each call reads at most proc.MaxPerfDataScan bytes of it and decodes
// one counter (proc.PerfDataLong), building nothing.
type InitWatch struct {
	r     *Report
	paths []string
}

// NewInitWatch watches the JVM r describes.
func NewInitWatch(r *Report) *InitWatch { return &InitWatch{r: r} }

// Initialised reports whether the JVM has finished starting, now. known
// is false when the JVM has no hsperfdata to tell (-XX:-UsePerfData, or
// unreadable), or the counter is not among what is read of it.
func (w *InitWatch) Initialised(ctx context.Context) (done, known bool) {
	in := &inspection{r: w.r}
	if len(w.paths) == 0 {
		// Found by name, or else (no name for the uid) by listing /tmp:
		// listed again until a JVM this young has made its directory.
		w.paths = in.perfDataPaths(ctx)
	}
	t, ok := in.perfDataLong(ctx, w.paths, "sun.rt.createVmEndTime")
	if !ok {
		return false, false
	}
	return t != 0, true
}

// perfDataLong reads the scalar counter name from the first of paths
// that is an hsperfdata file (the JVM user's or root's, as perfData
// takes), reading at most proc.MaxPerfDataScan bytes of it.
func (in *inspection) perfDataLong(ctx context.Context, paths []string, name string) (int64, bool) {
	for _, m := range paths {
		h, err := safefile.OpenIn(ctx, in.r.Process.Root, m, maxPerfData, safefile.Accept{UIDs: []uint32{in.r.Process.UID.Effective, 0}})
		if err != nil {
			continue
		}
		f := h.File()
		v, found, err := proc.PerfDataLong(f, h.Stat.Size, name)
		f.Close()
		if err == nil {
			return v, found
		}
	}
	return 0, false
}

// perfDataPaths are where the JVM's hsperfdata file can be:
// /tmp/hsperfdata_<user>/<nspid> inside its root, the user named by the
// target's own /etc/passwd; every hsperfdata_* directory of /tmp (at
// most maxPerfDataDirs) only when that fails.
func (in *inspection) perfDataPaths(ctx context.Context) []string {
	name := fmt.Sprintf("%d", in.r.Process.NSPid)
	if user := in.userName(ctx, in.r.Process.UID.Effective); user != "" {
		return []string{filepath.Join("/tmp", "hsperfdata_"+user, name)}
	}
	names, _ := safefile.ListIn(ctx, in.r.Process.Root, "/tmp", maxTmpEntries)
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "hsperfdata_") && len(out) < maxPerfDataDirs {
			out = append(out, filepath.Join("/tmp", n, name))
		}
	}
	sort.Strings(out)
	return out
}

// Bounds on the /tmp listing when the user's name is unknown: a /tmp can
// hold millions of entries, and anyone can create hsperfdata_* there.
const (
	maxTmpEntries   = 100000
	maxPerfDataDirs = 64
)

// maxPasswd caps the target's /etc/passwd read.
const maxPasswd = 1 << 20

// userName looks uid up in the target's /etc/passwd (its root's, not
// ours: a container has its own users).
func (in *inspection) userName(ctx context.Context, uid uint32) string {
	data, err := in.readConfig(ctx, "/etc/passwd", maxPasswd)
	if err != nil {
		return ""
	}
	want := strconv.FormatUint(uint64(uid), 10)
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) > 2 && fields[2] == want && fields[0] != "" && !strings.ContainsAny(fields[0], "/.") {
			return fields[0]
		}
	}
	return ""
}

// flagName is the HotSpot flag an option sets ("" if none).
func flagName(o string) string {
	switch {
	case o == "-Xrs":
		return "ReduceSignalUsage"
	case strings.HasPrefix(o, "-XX:+") || strings.HasPrefix(o, "-XX:-"):
		return o[5:]
	case strings.HasPrefix(o, "-XX:"):
		name, _, _ := strings.Cut(o[4:], "=")
		return name
	}
	return ""
}

func (in *inspection) applyOption(o, src string) {
	j := &in.r.JVM
	set := func(name, value string) { j.Flags[name] = FlagSetting{Value: value, Source: src} }
	switch {
	case o == "-Xrs":
		set("ReduceSignalUsage", "true")
	case strings.HasPrefix(o, "-XX:+") || strings.HasPrefix(o, "-XX:-"):
		name := o[5:]
		if trackedFlag(name) {
			set(name, strconv.FormatBool(o[4] == '+'))
		}
	case strings.HasPrefix(o, "-XX:Flags=") || strings.HasPrefix(o, "-XX:VMOptionsFile="):
		in.flagFiles = append(in.flagFiles, src+" "+o)
	case strings.HasPrefix(o, "-XX:"):
		if name, val, ok := strings.Cut(o[4:], "="); ok && trackedFlag(name) {
			set(name, val)
		}
	case strings.HasPrefix(o, "@"):
		in.flagFiles = append(in.flagFiles, src+" "+o)
	case strings.HasPrefix(o, "-agentpath:") || strings.HasPrefix(o, "-agentlib:") || strings.HasPrefix(o, "-javaagent:"):
		j.StartupAgents = append(j.StartupAgents, o)
	case strings.HasPrefix(o, "-Djdk.attach."):
		name, val, _ := strings.Cut(o[2:], "=")
		set(name, val)
	}
}

// attachSocket looks for /tmp/.java_pid<nspid> in the target's root (or in
// -XX:AltTempDir when given), resolved inside that root: an AltTempDir
// with "..", or a symlink the container's user made, cannot lead out of
// it. lstat only: no connection is made.
func (in *inspection) attachSocket(ctx context.Context) {
	j := &in.r.JVM
	tmp := "/tmp"
	if f, ok := j.Flags["AltTempDir"]; ok && f.Value != "" {
		tmp = f.Value
	}
	name := fmt.Sprintf(".java_pid%d", in.r.Process.NSPid)
	j.AttachSocket.Path = filepath.Join(filepath.Clean("/"+tmp), name)
	dir, err := safefile.OpenDirIn(ctx, in.r.Process.Root, tmp)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) {
			in.unknown("jvm.attach_socket", "%s: %v", tmp, err)
		}
		return
	}
	defer dir.Close()
	st, err := dir.Lstat(name)
	if err != nil {
		if !errors.Is(err, syscall.ENOENT) {
			in.unknown("jvm.attach_socket", "lstat %s: %v", in.rootPath(j.AttachSocket.Path), err)
		}
		return
	}
	j.AttachSocket.Exists = true
	j.AttachSocket.IsSocket = st.Mode&syscall.S_IFMT == syscall.S_IFSOCK
	j.AttachSocket.UID, j.AttachSocket.GID = st.Uid, st.Gid
	j.AttachSocket.Mode = FileMode(st.Mode & 0o7777)
	if err := proc.CheckAttachSocket(j.AttachSocket.IsSocket, st.Uid, st.Mode, in.r.Process.UID.Effective); err != nil {
		j.AttachSocket.Distrust = err.Error()
	}
}
