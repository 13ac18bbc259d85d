package conflicts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version strings as the components print them, and how they compare:
//
//	async-profiler  4.5, 3.0, 3.0-2dba71f    a nightly "<v>-<hex>" is a
//	                                         pre-release of <v>: 3.0-2dba71f < 3.0 < 4.0
//	Java            1.8.0_412, 17.0.15, 25   "1.8.0_412" compares as 8.0.412
//	                17.0.15+6-Debian-1deb12u1  build metadata after '+' is ignored
//	jemalloc        5.3.0-0-g<40 hex>        the git-describe suffix is dropped: 5.3.0
//	gperftools      2.10                     plain
//
// The parser is written here rather than taken from a version library:
// the formats above are all it must read, and the library's regular
// expressions cost more at start-up (compiled on first use, in every CLI
// process) than the whole rest of an evaluation.
type Version struct {
	segments []int
	pre      []string // dot-separated pre-release identifiers; nil: a release
}

// Version strings are read from other processes' files: bounded.
const (
	maxVersionLen      = 128
	maxVersionSegments = 8
)

var errNotVersion = errors.New("not a version")

// ParseVersion parses a component version with the quirks above.
func ParseVersion(s string) (Version, error) {
	v, err := parseVersion(s)
	if err != nil {
		return Version{}, fmt.Errorf("version %q: %w", s, err)
	}
	return v, nil
}

func parseVersion(s string) (Version, error) {
	if len(s) == 0 || len(s) > maxVersionLen {
		return Version{}, errNotVersion
	}
	if legacy, ok := javaLegacy(s); ok {
		s = legacy
	}
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i] // build metadata
	}
	var v Version
	rest := s
	for {
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 0 || len(v.segments) == maxVersionSegments {
			return Version{}, errNotVersion
		}
		x, err := strconv.Atoi(rest[:n])
		if err != nil {
			return Version{}, errNotVersion // out of range
		}
		v.segments = append(v.segments, x)
		rest = rest[n:]
		if len(rest) > 1 && rest[0] == '.' && isDigit(rest[1]) {
			rest = rest[1:]
			continue
		}
		break
	}
	if rest == "" {
		return v, nil
	}
	if isGitDescribe(rest) && len(v.segments) == 3 {
		return v, nil
	}
	// A pre-release: "-rc.1", "-2dba71f", or letters right after the
	// numbers ("1.0beta").
	if rest[0] == '-' {
		rest = rest[1:]
	} else if !isLetter(rest[0]) {
		return Version{}, errNotVersion
	}
	if rest == "" {
		return Version{}, errNotVersion
	}
	for _, id := range strings.Split(rest, ".") {
		if id == "" || !isIdentifier(id) {
			return Version{}, errNotVersion
		}
		v.pre = append(v.pre, id)
	}
	return v, nil
}

// javaLegacy rewrites "1.<major>.<minor>_<update>" (Java 8 and before) as
// "<major>.<minor>.<update>".
func javaLegacy(s string) (string, bool) {
	if !strings.HasPrefix(s, "1.") {
		return "", false
	}
	parts := strings.SplitN(s[2:], ".", 2)
	if len(parts) != 2 || !allDigits(parts[0]) {
		return "", false
	}
	minor, update, ok := strings.Cut(parts[1], "_")
	if !ok || !allDigits(minor) {
		return "", false
	}
	n := 0
	for n < len(update) && isDigit(update[n]) {
		n++
	}
	if n == 0 {
		return "", false
	}
	return parts[0] + "." + minor + "." + update[:n], true
}

// isGitDescribe matches git describe's "-<commits>-g<hex>" suffix.
func isGitDescribe(s string) bool {
	commits, hash, ok := strings.Cut(strings.TrimPrefix(s, "-"), "-g")
	return len(s) > 0 && s[0] == '-' && ok && allDigits(commits) && hash != "" && allHex(hash)
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

func isIdentifier(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && !isLetter(c) && c != '-' && c != '~' {
			return false
		}
	}
	return true
}

// Segments returns the numeric segments ("17.0.15" → 17, 0, 15).
func (v Version) Segments() []int { return append([]int(nil), v.segments...) }

// Prerelease returns the pre-release part ("3.0-2dba71f" → "2dba71f"), or
// "" for a release.
func (v Version) Prerelease() string { return strings.Join(v.pre, ".") }

// String formats the version as parsed (quirks applied).
func (v Version) String() string {
	var b strings.Builder
	for i, s := range v.segments {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(s))
	}
	if v.pre != nil {
		b.WriteByte('-')
		b.WriteString(v.Prerelease())
	}
	return b.String()
}

// Compare returns -1, 0 or 1 as v is older than, the same as or newer
// than w. Missing segments are zeros (17 = 17.0.0); a pre-release comes
// before its release (3.0-2dba71f < 3.0); pre-releases compare
// identifier by identifier, numbers numerically and below words.
func (v Version) Compare(w Version) int {
	for i := 0; i < max(len(v.segments), len(w.segments)); i++ {
		a, b := segment(v.segments, i), segment(w.segments, i)
		if a != b {
			return cmpInt(a, b)
		}
	}
	switch {
	case v.pre == nil && w.pre == nil:
		return 0
	case v.pre == nil:
		return 1
	case w.pre == nil:
		return -1
	}
	for i := 0; i < min(len(v.pre), len(w.pre)); i++ {
		if c := compareIdentifier(v.pre[i], w.pre[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(v.pre), len(w.pre))
}

func segment(s []int, i int) int {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareIdentifier(a, b string) int {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	switch {
	case ea == nil && eb == nil:
		return cmpInt(na, nb)
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// A constraint is one comparison ("< 4.0"); a constraint list ("">= 1.13,
// < 1.29") holds when every one does.
type constraint struct {
	op string // one of constraintOps
	v  Version
}

type constraints []constraint

// constraintOps, longest first so that ">=" is not read as ">".
var constraintOps = []string{">=", "<=", "!=", "~>", "=", ">", "<"}

// parseConstraint parses a constraint such as "< 4.0" or ">= 1.13, <= 1.28".
func parseConstraint(s string) (constraints, error) {
	var out constraints
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		op := "="
		for _, o := range constraintOps {
			if strings.HasPrefix(part, o) {
				op, part = o, strings.TrimSpace(part[len(o):])
				break
			}
		}
		v, err := parseVersion(part)
		if err != nil {
			return nil, fmt.Errorf("malformed constraint: %q", strings.TrimSpace(s))
		}
		if op == "~>" && len(v.segments) < 2 {
			return nil, fmt.Errorf("~> %s: want at least two segments", part)
		}
		out = append(out, constraint{op: op, v: v})
	}
	return out, nil
}

// String formats the list as it would be written in a rule.
func (cs constraints) String() string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.op + " " + c.v.String()
	}
	return strings.Join(parts, ", ")
}

// satisfies reports whether v meets every constraint. A nightly
// ("3.0-2dba71f") is ordered like any version: it satisfies "< 4.0" and
// "< 3.0" but not ">= 3.0".
func satisfies(cs constraints, v Version) bool {
	for _, c := range cs {
		if !c.holds(v) {
			return false
		}
	}
	return true
}

func (c constraint) holds(v Version) bool {
	cmp := v.Compare(c.v)
	switch c.op {
	case "=":
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
		// Pessimistic: at least the target, below the next release of
		// its prefix ("~> 4.2" is >= 4.2, < 5).
		upper := Version{segments: append([]int(nil), c.v.segments[:len(c.v.segments)-1]...)}
		upper.segments[len(upper.segments)-1]++
		return cmp >= 0 && v.Compare(upper) < 0
	}
	return false
}
