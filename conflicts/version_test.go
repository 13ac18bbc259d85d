package conflicts

import "testing"

func TestVersionQuirks(t *testing.T) {
	for _, c := range []struct {
		v, constraint string
		want          bool
	}{
		{"3.0-2dba71f", "< 4.0", true},
		{"3.0-2dba71f", "< 3.0", true}, // a nightly is a pre-release of 3.0
		{"3.0-2dba71f", ">= 3.0", false},
		{"3.0", "< 4.0", true},
		{"4.0", "< 4.0", false},
		{"4.5", ">= 4.0", true},
		{"4.4", "<= 4.4", true},
		{"4.1.2", ">= 4.0, < 4.2", true},
		{"1.8.0_412", "< 9", true},
		{"1.8.0_412", ">= 8.0.400", true},
		{"17.0.15", ">= 17, < 18", true},
		{"25.0.3", ">= 21", true},
		{"17.0.15+6-Debian-1deb12u1", "= 17.0.15", true},
		{"5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c", "= 5.3.0", true},
		{"2.10", "<= 2.10", true},
		{"2.10", "< 2.9", false},
		{"1.20", ">= 1.13, <= 1.28", true},
		{"1.29.1", ">= 1.13, <= 1.28", false},
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
		if got := satisfies(con, v); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.v, c.constraint, got, c.want)
		}
	}
	if _, err := ParseVersion("not a version"); err == nil {
		t.Error("garbage parsed")
	}
}
