package conflicts

import (
	"os"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/preflight"
)

// TestVersionQuirks: every format the rules read, against constraints
// as rules write them.
func TestVersionQuirks(t *testing.T) {
	for _, c := range []struct {
		v, constraint string
		want          bool
	}{
		// async-profiler: releases and nightlies (a nightly is built after
		// the release it names, and is checked by that release).
		{"3.0-2dba71f", "< 4.0", true},
		{"3.0-2dba71f", ">= 3.0", true},
		{"3.0-2dba71f", "< 3.0", false},
		{"4.4-e6e0494", "<= 4.4", true},
		{"3.0", "< 4.0", true},
		{"4.0", "< 4.0", false},
		{"4.5", ">= 4.0", true},
		{"4.4", "<= 4.4", true},
		{"4.1.2", ">= 4.0, < 4.2", true},
		// Datadog's java-profiler releases.
		{"1.20", ">= 1.13, < 1.29", true},
		{"1.29.1", ">= 1.13, <= 1.28", false},
		// Java: legacy, feature, update, build metadata, early access.
		{"1.8.0_412", "< 9", true},
		{"1.8.0_412", ">= 8.0.400", true},
		{"1.8.0_412-b08", ">= 8, < 8.0.472", true},
		{"17.0.15", ">= 17, < 18", true},
		{"17.0.15+6-Debian-1deb12u1", "= 17.0.15", true},
		{"11.0.25+9-post-Debian-1deb12u1", ">= 11, < 11.0.29", true},
		{"21.0.5+11-LTS", ">= 18, < 21.0.1", false},
		{"25.0.3", ">= 21", true},
		{"25", ">= 21", true},
		{"25-ea+3", ">= 25", true},
		// jemalloc's git describe, gperftools.
		{"5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c", "= 5.3.0", true},
		{"2.10", "<= 2.10", true},
		{"2.10", "< 2.9", false},
		// Pessimistic.
		{"4.2.1", "~> 4.2", true},
		{"5.0", "~> 4.2", false},
	} {
		v, err := ParseVersion(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.v, err)
		}
		con, err := parseConstraint(c.constraint)
		if err != nil {
			t.Fatalf("%s: %v", c.constraint, err)
		}
		if got, _ := con.satisfies(v); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.v, c.constraint, got, c.want)
		}
	}
	if _, err := ParseVersion("not a version"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestVersionParsing(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"1.8.0_412", "8.0.412"},
		{"1.8.0_412-b08", "8.0.412"},
		{"17.0.15+6-Debian-1deb12u1", "17.0.15"},
		{"5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c", "5.3.0"},
		{"3.0-2dba71f", "3.0.0-2dba71f"},
		{"21-ea", "21.0.0-ea"},
		{"v2.10", "2.10.0"},
		{"1.0beta.2", "1.0.0-beta.2"},
		{"25", "25.0.0"},
	} {
		v, err := ParseVersion(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if v.String() != c.want {
			t.Errorf("%s parsed as %s, want %s", c.in, v, c.want)
		}
	}
	for _, bad := range []string{"", "x", ".1", "1.", "1..2", "1.2-", "1.2-a..b", "1.2-a$b",
		"99999999999999999999999", "1.2.3.4.5.6.7.8.9", strings.Repeat("1", 200)} {
		if v, err := ParseVersion(bad); err == nil {
			t.Errorf("%q parsed as %s", bad, v)
		}
	}
}

// TestVersionMajor: the first number, in every format (attach picks the
// CPU timer event by async-profiler's).
func TestVersionMajor(t *testing.T) {
	for in, want := range map[string]int{"3.0-2dba71f": 3, "2.9": 2, "4.1.2": 4, "1.8.0_412": 8, "25-ea+3": 25, "v2.10": 2} {
		if got := mustParse(t, in).Major(); got != want {
			t.Errorf("%s: Major() = %d, want %d", in, got, want)
		}
	}
}

func TestVersionOrder(t *testing.T) {
	// Each is older than the next (go-version's order).
	order := []string{"3.0-2dba71f", "3.0", "3.0.1", "4.0-rc.1", "4.0-rc.2", "4.0-rc.10", "4.0-rc.a", "4.0", "1.8.0_412", "17", "17.0.1"}
	for i := range order {
		for j := range order {
			a, _ := ParseVersion(order[i])
			b, _ := ParseVersion(order[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.compare(b); got != want {
				t.Errorf("%s vs %s = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	for _, bad := range []string{">= 1.0, ", "<< 4", "~> ", "> four"} {
		if _, err := parseConstraint(bad); err == nil {
			t.Errorf("constraint %q accepted", bad)
		}
	}
}

// FuzzParseVersion (seeds: testdata/versions.txt): any input parses or
// fails without panicking, and a parsed version reads back as itself and
// equals itself.
func FuzzParseVersion(f *testing.F) {
	seeds, err := os.ReadFile("testdata/versions.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range strings.Split(strings.TrimSpace(string(seeds)), "\n") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			if c, err := parseConstraint(s); err == nil {
				c.satisfies(mustParse(t, "1.0"))
			}
			return
		}
		w, err := ParseVersion(v.String())
		if err != nil {
			t.Fatalf("%q → %q does not parse: %v", s, v, err)
		}
		if v.compare(w) != 0 || w.compare(v) != 0 {
			t.Fatalf("%q → %q compares unequal to itself", s, v)
		}
	})
}

func mustParse(t *testing.T, s string) *Version {
	v, err := ParseVersion(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestJcmdCompilesNoConstraint: judging a JVM with no agent (what jcmd
// does) evaluates no version rule whose fact is absent, so go-version
// compiles nothing: the CLI's warm path does not pay for it.
func TestJcmdCompilesNoConstraint(t *testing.T) {
	set, err := compile(embeddedRules(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"plain-jdk17", "jdk8", "jdk21", "jemalloc-libunwind-active"} {
		report := loadJSON[preflight.Report](t, "testdata/reports/"+name+".json")
		Evaluate(report, nil, Policy{Rules: set})
	}
	compiled := 0
	var walk func(c *cond)
	walk = func(c *cond) {
		if c == nil {
			return
		}
		if c.constraint != nil && (c.constraint.cs != nil || c.constraint.err != nil) {
			compiled++
			t.Logf("compiled: %s %s", c.fact, c.constraint)
		}
		for _, sub := range append(append([]*cond{}, c.all...), c.any...) {
			walk(sub)
		}
		walk(c.not)
	}
	for _, r := range set.rules {
		for _, cc := range r.cases {
			walk(cc.when)
		}
	}
	if compiled != 0 {
		t.Errorf("%d constraints compiled judging JVMs with no agent", compiled)
	}
}
