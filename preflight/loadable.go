package preflight

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/safefile"
)

// Loadability says whether the target's dynamic loader could load an
// agent: its DT_NEEDED libraries found the way the loader searches inside
// the target's root, and every symbol version it requires (GLIBC_2.34,
// GLIBCXX_3.4.29, CXXABI_1.3.13...) defined by them. A `load` that fails
// here would fail in the JVM with a dlopen error (async-profiler #601,
// #767, #885, #908, #909, #940 are this); checking first turns that into
// a refusal that names the missing piece.
type Loadability struct {
	// Loadable is yes, no, or unknown (Reason says why).
	Loadable Tristate `json:"loadable"`
	// Missing lists libraries the loader would not find.
	Missing []string `json:"missing,omitempty"`
	// MissingVersions lists "GLIBC_2.99 (libc.so.6 at /usr/lib/...)".
	MissingVersions []string `json:"missing_versions,omitempty"`
	// Resolved maps each needed library to where it was found (target
	// view), or "(loaded)" when the target already maps it.
	Resolved map[string]string `json:"resolved,omitempty"`
	Reason   string            `json:"reason,omitempty"`
}

// Summary is the first problem in one line, for messages.
func (l *Loadability) Summary() string {
	var parts []string
	if len(l.Missing) > 0 {
		parts = append(parts, "not found: "+strings.Join(l.Missing, ", "))
	}
	if len(l.MissingVersions) > 0 {
		parts = append(parts, "symbol versions not defined: "+strings.Join(l.MissingVersions, ", "))
	}
	return strings.Join(parts, "; ")
}

// maxLoadableProbe bounds a library read from the target to check its
// version definitions (libc is 2 MiB, libstdc++ 2.4 MiB).
const maxLoadableProbe = 64 << 20

// CheckLoadable decides whether the target r could load the agent a, and
// records the answer in a.Loadability. It reads only the target's files
// (through its root) and the mappings r lists; ctx bounds the reads. An
// assumed agent, or one whose file could not be probed, is left unchecked.
func CheckLoadable(ctx context.Context, r *Report, a *Agent) {
	if a == nil || a.Assumed || a.Error != "" || a.Kind == AgentNotAgent || a.Machine == "" {
		return
	}
	l := &Loadability{Loadable: Yes, Resolved: map[string]string{}}
	a.Loadability = l
	root := r.Process.Root
	if root == "" {
		l.Loadable, l.Reason = Unknown, "the target's root is not known"
		return
	}
	if _, err := safefile.StatIn(ctx, root, "/"); err != nil {
		// Another user's process: its root (/proc/<pid>/root) cannot be
		// entered, and a library not found there is not missing.
		l.Loadable, l.Reason = Unknown, fmt.Sprintf("the target's root: %v", err)
		return
	}
	dirs := searchDirs(ctx, r, a)
	for _, lib := range a.Needed {
		if err := ctx.Err(); err != nil {
			l.Loadable, l.Reason = Unknown, err.Error()
			return
		}
		where := locate(ctx, r, dirs, lib)
		if where == "" {
			l.Missing = append(l.Missing, lib)
			continue
		}
		l.Resolved[lib] = where
		need := a.VersionNeeds[lib]
		if len(need) == 0 {
			continue
		}
		info, err := probeLibrary(ctx, root, where)
		if err != nil {
			l.Loadable, l.Reason = Unknown, fmt.Sprintf("%s: %v", where, err)
			continue
		}
		for _, v := range need {
			if !slices.Contains(info.VersionDefs, v) {
				l.MissingVersions = append(l.MissingVersions, fmt.Sprintf("%s (%s at %s)", v, lib, where))
			}
		}
	}
	if len(l.Missing) > 0 || len(l.MissingVersions) > 0 {
		l.Loadable = No
	}
}

// probeLibrary reads the symbol versions a library the target's loader
// would use defines: only its dynamic section and version tables, not
// its symbols or data (libc's full probe was a quarter of a first
// attach). It is opened without blocking and only if regular.
func probeLibrary(ctx context.Context, root, path string) (*elfx.Info, error) {
	h, err := safefile.OpenIn(ctx, root, path, maxLoadableProbe, safefile.Accept{FollowLast: true})
	if err != nil {
		return nil, err
	}
	f := h.File()
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return elfx.ProbeReader(f, st.Size(), elfx.ProbeOptions{VersionsOnly: true})
}

// searchDirs is the loader's search order inside the target's root:
// DT_RPATH (when there is no DT_RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH,
// then the directories ld.so.cache is built from (/etc/ld.so.conf and
// its includes) and the trusted defaults. $ORIGIN is the agent's own
// directory.
func searchDirs(ctx context.Context, r *Report, a *Agent) []string {
	var dirs []string
	origin := filepath.Dir(a.RealPath)
	expand := func(list []string) {
		for _, d := range list {
			d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	expand(a.RunPath)
	if r.Process.LibraryPath != "" {
		expand(strings.Split(r.Process.LibraryPath, ":"))
	}
	dirs = append(dirs, ldSoConf(ctx, r.Process.Root, "/etc/ld.so.conf", 0)...)
	triplet := map[string]string{"x86-64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}[a.Machine]
	if triplet != "" {
		dirs = append(dirs, "/lib/"+triplet, "/usr/lib/"+triplet)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")
}

// ldSoConf reads an ld.so.conf under root, following include lines (at
// most 4 levels deep, 256 directories); each file is read under ctx and
// capped, as anything in the target's root.
func ldSoConf(ctx context.Context, root, path string, depth int) []string {
	if depth > 4 {
		return nil
	}
	f, err := safefile.ReadIn(ctx, root, path, maxTargetConfigFile, safefile.Accept{FollowLast: true})
	if err != nil {
		return nil
	}
	var dirs []string
	sc := bufio.NewScanner(bytes.NewReader(f.Data))
	for sc.Scan() && len(dirs) < 256 {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if rest, ok := strings.CutPrefix(line, "include "); ok {
			for _, m := range globIn(ctx, root, strings.TrimSpace(rest)) {
				dirs = append(dirs, ldSoConf(ctx, root, m, depth+1)...)
			}
			continue
		}
		if strings.HasPrefix(line, "/") {
			dirs = append(dirs, line)
		}
	}
	return dirs
}

// globIn expands an ld.so.conf include pattern inside root: wildcards
// in its last component only (as every distribution writes them:
// /etc/ld.so.conf.d/*.conf), at most 256 names.
func globIn(ctx context.Context, root, pattern string) []string {
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join("/etc", pattern)
	}
	dir, base := filepath.Split(pattern)
	if strings.ContainsAny(dir, "*?[") {
		return nil
	}
	names, err := safefile.ListIn(ctx, root, dir, 256)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		if ok, _ := filepath.Match(base, n); ok {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out
}

// locate finds lib as the target's loader would: already loaded (the
// loader matches a loaded object's name first), else the first directory
// that holds it. It returns the path in the target's view (resolved in
// its root: an absolute symlink there means the target's file, not ours).
func locate(ctx context.Context, r *Report, dirs []string, lib string) (where string) {
	for _, m := range r.MappedFiles {
		base := filepath.Base(m)
		if base == lib || strings.HasPrefix(base, lib+".") {
			return m
		}
	}
	regular := func(p string) bool {
		st, err := safefile.StatIn(ctx, r.Process.Root, p)
		return err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
	}
	if strings.Contains(lib, "/") {
		if regular(lib) {
			return lib
		}
		return ""
	}
	for _, d := range dirs {
		if p := filepath.Join(d, lib); regular(p) {
			return p
		}
	}
	return ""
}
