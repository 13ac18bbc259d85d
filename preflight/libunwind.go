package preflight

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/safeattach/safeattach/internal/safefile"
)

// libunwind has no version string (docs/detection.md, "libunwind's version").
// Estimates, most precise first:
//
//	package database under the target root   exact (dpkg status)
//	file name after symlinks                  libunwind.so.8.0.1 → 1.1–1.7.x
//	                                          libunwind.so.8.1.0 → 1.8.0–1.8.2
//	                                          libunwind.so.8.2.0 → 1.8.3
//	exported-symbol fingerprints (x86-64)     _ULx86_64_init_local2           ≥ 1.3
//	                                          _ULx86_64_get_proc_info_in_range ≥ 1.7
//	                                          _ULx86_64_set_iterate_phdr_function ≥ 1.8.0
//	                                          _ULx86_64_is_plt_entry          ≥ 1.8.3
//
// libunwindFileVersion is the file name's estimate, "" for a name not
// listed.
func libunwindFileVersion(name string) string {
	switch name {
	case "libunwind.so.8.0.1":
		return "1.1-1.7"
	case "libunwind.so.8.1.0":
		return "1.8.0-1.8.2"
	case "libunwind.so.8.2.0":
		return "1.8.3"
	}
	return ""
}

var libunwindFingerprints = []struct{ sym, min string }{
	{"_ULx86_64_is_plt_entry", "1.8.3"},
	{"_ULx86_64_set_iterate_phdr_function", "1.8.0"},
	{"_ULx86_64_get_proc_info_in_range", "1.7"},
	{"_ULx86_64_init_local2", "1.3"},
}

// maxDpkgStatus bounds the package database we are willing to scan.
const maxDpkgStatus = 32 << 20

func (in *inspection) inspectLibunwind(ctx context.Context) {
	u := &in.r.Libunwind
	l := in.findLib(func(b string) bool { return strings.HasPrefix(b, "libunwind.so.") })
	if l == nil {
		return
	}
	u.Present, u.Path = true, l.path
	u.Project = "nongnu"
	if strings.HasPrefix(filepath.Base(l.path), "libunwind.so.1") {
		u.Project = "llvm"
	}
	u.Preloaded = in.via(ctx, l) != ViaMapped
	u.Evidence = append(u.Evidence, "maps "+l.path)
	if u.Project == "nongnu" {
		if v := in.dpkgVersion(ctx, "libunwind8"); v != "" {
			u.Version, u.VersionMethod = v, "package database (dpkg libunwind8)"
		} else if v := libunwindFileVersion(filepath.Base(l.path)); v != "" {
			u.Version, u.VersionMethod = v, "file name "+filepath.Base(l.path)
		}
		if info, err := in.probe(l); err == nil {
			for _, fp := range libunwindFingerprints {
				if info.Defines(fp.sym) {
					u.Evidence = append(u.Evidence, fmt.Sprintf("exports %s (>= %s)", fp.sym, fp.min))
					if u.Version == "" {
						u.Version, u.VersionMethod = ">="+fp.min, "symbol fingerprint"
					}
					break
				}
			}
		}
	}
	if u.Version == "" {
		in.unknown("libunwind.version", "no package record, unknown file name and no fingerprint symbol in %s", l.path)
	}
	in.addLibrary(RoleUnwinder, "libunwind", l, u.Version)
}

// dpkgVersion reads a package's version from dpkg's status file in the
// target's root. Only installed packages count.
func (in *inspection) dpkgVersion(ctx context.Context, pkg string) string {
	// Inside the target's root: an absolute symlink there (an image can
	// ship one) must not lead to a host file.
	f, err := safefile.ReadIn(ctx, in.r.Process.Root, "/var/lib/dpkg/status", maxDpkgStatus, safefile.Accept{FollowLast: true})
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(f.Data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	inPkg := false
	version, installed := "", false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if inPkg && installed {
				return version
			}
			inPkg, version, installed = false, "", false
		case strings.HasPrefix(line, "Package: "):
			inPkg = strings.TrimPrefix(line, "Package: ") == pkg
		case inPkg && strings.HasPrefix(line, "Status: "):
			installed = strings.HasSuffix(line, " installed")
		case inPkg && strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		}
	}
	if inPkg && installed {
		return version
	}
	return ""
}
