package versions

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The formats read, and what each becomes:
//
//	async-profiler  4.5, 3.0                  as they are
//	                3.0-2dba71f               a nightly: the pre-release 3.0-2dba71f,
//	                                          ordered before 3.0
//	Java            1.8.0_412                 8.0.412 (Java 8 and before: "1.<feature>")
//	                17.0.15+6-Debian-1deb12u1 17.0.15 (build metadata dropped)
//	                25                        25
//	jemalloc        5.3.0-0-g<40 hex>         5.3.0 (git describe's suffix dropped)
//	gperftools      2.10                      as it is
//	anything        v1.2                      1.2
const (
	// MaxLen and MaxSegments bound what is read.
	MaxLen      = 128
	MaxSegments = 8
)

// ErrNotVersion: the string is none of the formats above.
var ErrNotVersion = errors.New("not a version")

// Normalize returns s in the form above, or ErrNotVersion.
func Normalize(s string) (string, error) {
	if len(s) == 0 || len(s) > MaxLen {
		return "", fmt.Errorf("version %q: %w", s, ErrNotVersion)
	}
	n := s
	if legacy, ok := javaLegacy(n); ok {
		n = legacy
	}
	n = strings.TrimPrefix(n, "v")
	if i := strings.IndexByte(n, '+'); i >= 0 {
		n = n[:i]
	}
	core, rest := leadingSegments(n)
	if core == "" || strings.Count(core, ".") >= MaxSegments {
		return "", fmt.Errorf("version %q: %w", s, ErrNotVersion)
	}
	switch {
	case rest == "":
		return core, nil
	case isGitDescribe(rest) && strings.Count(core, ".") == 2:
		return core, nil
	}
	// A pre-release: "-rc.1", "-2dba71f", or letters right after the
	// numbers ("1.0beta").
	pre := strings.TrimPrefix(rest, "-")
	if pre == rest && !isLetter(rest[0]) || pre == "" {
		return "", fmt.Errorf("version %q: %w", s, ErrNotVersion)
	}
	for _, id := range strings.Split(pre, ".") {
		if id == "" || !isIdentifier(id) {
			return "", fmt.Errorf("version %q: %w", s, ErrNotVersion)
		}
	}
	return core + "-" + pre, nil
}

// JavaFeature returns the feature release of a Java version string:
// "1.8.0_412" → 8, "17.0.15" → 17, "25" → 25; 0 if it is none.
func JavaFeature(s string) int {
	n, err := Normalize(s)
	if err != nil {
		return 0
	}
	end := strings.IndexAny(n, ".-")
	if end < 0 {
		end = len(n)
	}
	f, _ := strconv.Atoi(n[:end])
	return f
}

// leadingSegments splits off "<digits>(.<digits>)*".
func leadingSegments(s string) (core, rest string) {
	i := 0
	for {
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == i || j-i > 9 {
			return s[:max(i-1, 0)], s[max(i-1, 0):]
		}
		if j+1 < len(s) && s[j] == '.' && isDigit(s[j+1]) {
			i = j + 1
			continue
		}
		return s[:j], s[j:]
	}
}

// javaLegacy rewrites "1.<feature>.<minor>_<update>" (Java 8 and before)
// as "<feature>.<minor>.<update>".
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
