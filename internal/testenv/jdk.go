package testenv

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/versions"
)

// JDK is one Java installation.
type JDK struct {
	Home    string
	Version string // JAVA_VERSION from the release file, e.g. "17.0.15"
	Feature int    // 17, 25, ...
}

func (j JDK) String() string { return "jdk" + strconv.Itoa(j.Feature) }

// JVMRoot is where Debian and the vendors' packages install JDKs.
var JVMRoot = "/usr/lib/jvm"

// JDKs lists every distinct JDK under /usr/lib/jvm that has bin/java,
// sorted by feature version. Symlinked aliases are folded into one.
func JDKs(t testing.TB) []JDK {
	t.Helper()
	entries, _ := os.ReadDir(JVMRoot)
	seen := map[string]bool{}
	var out []JDK
	for _, e := range entries {
		home, err := filepath.EvalSymlinks(filepath.Join(JVMRoot, e.Name()))
		if err != nil || seen[home] {
			continue
		}
		if _, err := os.Stat(filepath.Join(home, "bin", "java")); err != nil {
			continue
		}
		seen[home] = true
		j := JDK{Home: home, Version: releaseVersion(home)}
		j.Feature = featureOf(j.Version)
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Feature < out[b].Feature })
	if len(out) == 0 {
		Missing(t, "a JDK under %s (make prereqs installs openjdk-17-jdk-headless)", JVMRoot)
	}
	return out
}

// JDK17 returns Debian's OpenJDK 17, the reference target.
func JDK17(t testing.TB) JDK {
	t.Helper()
	for _, j := range JDKs(t) {
		if j.Feature == 17 {
			return j
		}
	}
	Missing(t, "OpenJDK 17 under %s", JVMRoot)
	return JDK{}
}

func releaseVersion(home string) string {
	f, err := os.Open(filepath.Join(home, "release"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "JAVA_VERSION="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func featureOf(v string) int { return versions.JavaFeature(v) }
