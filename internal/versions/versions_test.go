package versions

import (
	"errors"
	"testing"
)

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"1.8.0_412":                       "8.0.412",
		"1.8.0_412-b08":                   "8.0.412",
		"17.0.15+6-Debian-1deb12u1":       "17.0.15",
		"25-ea+3":                         "25-ea",
		"5.3.0-0-g54eaed1d8b56b1aa528be3": "5.3.0",
		"3.0-2dba71f":                     "3.0-2dba71f",
		"v2.10":                           "2.10",
		"1.0beta.2":                       "1.0-beta.2",
	} {
		if got, err := Normalize(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", ".1", "1.", "1..2", "1.2-", "1.2-a..b", "1.2-a$b", "1.1234567890"} {
		if got, err := Normalize(bad); !errors.Is(err, ErrNotVersion) {
			t.Errorf("%q: %q %v", bad, got, err)
		}
	}
}

func TestJavaFeature(t *testing.T) {
	for in, want := range map[string]int{"1.8.0_412": 8, "1.8.0_412-b08": 8, "11.0.25+9": 11, "17.0.15": 17, "21-ea": 21, "25": 25, "junk": 0} {
		if got := JavaFeature(in); got != want {
			t.Errorf("%s: %d, want %d", in, got, want)
		}
	}
}
