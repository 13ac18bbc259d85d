package hotspot

import "testing"

func TestMapsRoot(t *testing.T) {
	for _, c := range []struct {
		uidMap string
		want   bool
	}{
		{"         0          0 4294967295\n", true},                    // the initial namespace
		{"         0 2856452096      65536\n", false},                   // a pod with hostUsers: false
		{"         0     100000      65536\n", false},                   // a rootless container
		{"      1000          0          1\n         0 1 999\n", false}, // our root is 1000 in there
		{"", false},
		{"garbage\n0 0\n", false},
	} {
		if got := mapsRoot(c.uidMap); got != c.want {
			t.Errorf("mapsRoot(%q) = %v, want %v", c.uidMap, got, c.want)
		}
	}
}
