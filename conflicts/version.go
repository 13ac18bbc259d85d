package conflicts

import (
	"fmt"
	"strings"
	"sync"

	version "github.com/hashicorp/go-version"

	"github.com/safeattach/safeattach/internal/versions"
)

// Versions are read with internal/versions.Normalize (the formats
// components print: Java's 1.8.0_412 and +build, nightlies' -<hex>,
// jemalloc's git describe) and ordered and constrained by
// github.com/hashicorp/go-version.
//
// One quirk is ours: go-version never lets a release constraint match a
// pre-release, and an async-profiler nightly "3.0-2dba71f" is a build
// made after the 3.0 release (its version is the last tag plus a commit),
// not a pre-release of it. A version with a pre-release part is checked
// against constraints by its release part (Version.Core): 3.0-2dba71f
// satisfies "< 4.0" and ">= 3.0". Ordering (compare) is go-version's.

// Version is a component version as the rules read it. It wraps
// go-version's type so that no third-party type is part of this
// package's API: the library behind it can change without breaking a
// caller.
type Version struct {
	v *version.Version
}

// ParseVersion parses a component version.
func ParseVersion(s string) (*Version, error) {
	n, err := versions.Normalize(s)
	if err != nil {
		return nil, err
	}
	v, err := version.NewVersion(n)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", s, versions.ErrNotVersion)
	}
	return &Version{v}, nil
}

// Major returns the version's first number: 3 for async-profiler
// 3.0-2dba71f, 8 for Java 1.8.0_412.
func (v *Version) Major() int { return v.v.Segments()[0] }

// compare returns -1, 0 or 1 as v is older than, the same as or newer
// than w (only the tests order versions: rules use constraints).
func (v *Version) compare(w *Version) int { return v.v.Compare(w.v) }

// String returns the version in its normalised form ("8.0.412" for
// 1.8.0_412).
func (v *Version) String() string { return v.v.String() }

// constraint is a rule's version test ("< 4.0", ">= 1.13, < 1.29"),
// compiled by go-version on first use: a rule whose fact is absent never
// compiles it, so a command that judges no agent pays nothing for the
// agent's version rules.
type constraint struct {
	text string
	once sync.Once
	cs   version.Constraints
	err  error
}

// parseConstraint compiles a constraint now (to check a rule file).
func parseConstraint(s string) (*constraint, error) {
	c := &constraint{text: s}
	return c, c.compile()
}

// lazyConstraint is compiled when first used (embedded rules, checked
// when they were generated and by the tests).
func lazyConstraint(s string) *constraint { return &constraint{text: s} }

func (c *constraint) compile() error {
	c.once.Do(func() {
		for _, part := range strings.Split(c.text, ",") {
			if strings.TrimSpace(part) == "" {
				c.err = fmt.Errorf("malformed constraint: %q", strings.TrimSpace(c.text))
				return
			}
		}
		c.cs, c.err = version.NewConstraint(c.text)
	})
	return c.err
}

func (c *constraint) String() string { return c.text }

// satisfies reports whether v meets the constraint (a pre-release by its
// release part, see above).
func (c *constraint) satisfies(ver *Version) (bool, error) {
	if err := c.compile(); err != nil {
		return false, err
	}
	v := ver.v
	if v.Prerelease() != "" {
		v = v.Core()
	}
	return c.cs.Check(v), nil
}
