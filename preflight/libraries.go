package preflight

import (
	"path/filepath"
	"strings"
)

// Profilers recognised by library file name (docs/detection.md, "Other
// profilers seen in maps"). async-profiler is also recognised by
// its exports and strings, because vendors embed it under other names.
var profilerNames = []struct {
	prefix string
	kind   string
}{
	{"libasyncProfiler", string(AgentAsyncProfiler)},
	{"libjavaProfiler", string(AgentDatadog)},
	{"libyjpagent", "yourkit"},
	{"libjprofilerti", "jprofiler"},
	{"liblagent", "honest-profiler"},
	{"libperfmap", "perf-map-agent"},
	{"libprofiler.so", "gperftools-cpu-profiler"},
	{"libtcmalloc_and_profiler", "gperftools-cpu-profiler"},
	{"libheaptrack_preload", "heaptrack"},
	{"libbytehound", "bytehound"},
}

// inspectLibraries identifies profilers among the mapped files. Files
// inside the JVM's own home are the JDK's and are not probed.
func (in *inspection) inspectLibraries() {
	home := in.r.JVM.Home
	for _, l := range in.libs {
		if !l.exec {
			continue
		}
		base := filepath.Base(l.path)
		kind := ""
		for _, p := range profilerNames {
			if strings.HasPrefix(base, p.prefix) {
				kind = p.kind
				break
			}
		}
		if kind == "" && home != "" && strings.HasPrefix(l.path, home+"/") {
			continue
		}
		if kind == "" && isCoreSystemLibrary(base) {
			continue
		}
		version := ""
		if kind == "" || kind == string(AgentAsyncProfiler) || kind == string(AgentDatadog) {
			info, err := in.probe(l)
			if err != nil {
				if kind == "" {
					continue
				}
				in.unknown("profilers."+kind+".version", "%s: %v", l.path, err)
			} else {
				k, v, _, _ := classifyAgent(info)
				if k == AgentAsyncProfiler || k == AgentDatadog {
					kind, version = string(k), v
				}
			}
		}
		if kind == "" {
			continue
		}
		lib := LoadedLibrary{Role: RoleProfiler, Kind: kind, Path: l.path, Version: version, Deleted: l.deleted}
		if kind == string(AgentAsyncProfiler) {
			lib.Role = RoleAsyncProfiler
			// Two copies of async-profiler in one JVM crash it, and the
			// same bytes under another path are another copy to the
			// loader: only the content tells whether a load would reuse
			// the copy already there.
			if sum, err := in.hashMapped(l); err != nil {
				in.unknown("profilers.async_profiler.sha256", "%s: %v", l.path, err)
			} else {
				lib.SHA256 = sum
			}
		}
		in.r.Profilers = append(in.r.Profilers, lib)
		in.r.Libraries = append(in.r.Libraries, lib)
	}
}

// isCoreSystemLibrary names glibc's and the toolchain's own libraries,
// which are never a renamed profiler; skipping them keeps a cold
// inspection cheap.
func isCoreSystemLibrary(base string) bool {
	for _, p := range []string{"libc.so", "libm.so", "libpthread", "libdl.so", "librt.so", "ld-linux", "ld-musl", "libstdc++", "libgcc_s", "libz.so", "libresolv", "libnss_", "libselinux", "libcrypt"} {
		if strings.HasPrefix(base, p) {
			return true
		}
	}
	return false
}
