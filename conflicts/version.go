package conflicts

import (
	"fmt"
	"regexp"
	"sync"

	version "github.com/hashicorp/go-version"
)

// Version strings as the components print them, and how they compare:
//
//	async-profiler  4.5, 3.0, 3.0-2dba71f    a nightly "<v>-<hex>" is a
//	                                         pre-release of <v>: 3.0-2dba71f < 3.0 < 4.0
//	Java            1.8.0_412, 17.0.15, 25   "1.8.0_412" compares as 8.0.412
//	jemalloc        5.3.0-0-g<40 hex>        the git-describe suffix is dropped: 5.3.0
//	gperftools      2.10                     plain
var (
	javaLegacy   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^1\.([0-9]+)\.([0-9]+)_([0-9]+)`) })
	gitDescribe  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)-[0-9]+-g[0-9a-f]+$`) })
	javaBuildTag = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]+(\.[0-9]+)*)\+.*$`) })
)

// ParseVersion parses a component version with the quirks above.
func ParseVersion(s string) (*version.Version, error) {
	n := s
	if m := javaLegacy().FindStringSubmatch(n); m != nil {
		n = m[1] + ".0." + m[3]
	} else if m := gitDescribe().FindStringSubmatch(n); m != nil {
		n = m[1]
	} else if m := javaBuildTag().FindStringSubmatch(n); m != nil {
		n = m[1]
	}
	v, err := version.NewVersion(n)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", s, err)
	}
	return v, nil
}

// parseConstraint parses a go-version constraint such as "< 4.0" or
// ">= 1.13, <= 1.28".
func parseConstraint(s string) (version.Constraints, error) {
	return version.NewConstraint(s)
}

// satisfies reports whether v meets c. go-version refuses to let a
// pre-release satisfy a constraint on a release ("3.0-2dba71f" against
// "< 4.0" would be false); for the components here a nightly is ordered
// like any version, so compare without that rule.
func satisfies(c version.Constraints, v *version.Version) bool {
	for _, one := range c {
		if !satisfiesOne(one.String(), v) {
			return false
		}
	}
	return true
}

var constraintRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\s*(>=|<=|!=|~>|=|>|<)?\s*(\S+)\s*$`) })

func satisfiesOne(c string, v *version.Version) bool {
	m := constraintRe().FindStringSubmatch(c)
	if m == nil {
		return false
	}
	target, err := version.NewVersion(m[2])
	if err != nil {
		return false
	}
	cmp := v.Compare(target)
	switch m[1] {
	case "", "=":
		return cmp == 0
	case "!=":
		return cmp != 0
	case ">":
		return cmp > 0
	case ">=":
		return cmp >= 0
	case "<":
		return cmp < 0
	case "<=":
		return cmp <= 0
	case "~>":
		// Pessimistic: >= target and below the next release of its prefix.
		segs := target.Segments()
		if cmp < 0 || len(segs) < 2 {
			return cmp >= 0
		}
		upper := make([]int, len(segs)-1)
		copy(upper, segs[:len(segs)-1])
		upper[len(upper)-1]++
		uv, _ := version.NewVersion(joinInts(upper))
		return v.Compare(uv) < 0
	}
	return false
}

func joinInts(xs []int) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += "."
		}
		s += fmt.Sprint(x)
	}
	return s
}
