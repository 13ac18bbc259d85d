package profiling

import (
	"errors"
	"testing"

	"github.com/safeattach/safeattach/attach"
)

// TestCheckFormat: asprof's -o values pass, with their counts; a typo
// is refused before anything touches the JVM (it used to write a text
// profile into the file named for the other format, exit 0).
func TestCheckFormat(t *testing.T) {
	for _, ok := range []string{"", "flat", "traces", "flat=20", "traces=5", "collapsed", "flamegraph", "tree", "jfr", "otlp"} {
		if err := CheckFormat(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"flamegrph", "html", "pprof", "flat=x", "collapsed=3", "jfr,collapsed", "FLAT"} {
		if err := CheckFormat(bad); !errors.Is(err, attach.ErrInvalidOptions) {
			t.Errorf("%q: %v, want attach.ErrInvalidOptions", bad, err)
		}
	}
	if err := CheckFormat("pprof", "pprof"); err != nil {
		t.Errorf("pprof as an extra format: %v", err)
	}
}
