package elfx

import (
	"bytes"
	"os"
	"testing"
)

// FuzzProbe feeds arbitrary bytes to the probe: it must return an error or
// an Info, never panic and never allocate beyond its caps.
func FuzzProbe(f *testing.F) {
	for _, name := range []string{"testdata/tiny.so", "testdata/truncated.so", "testdata/notelf.bin"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ProbeReader(bytes.NewReader(data), int64(len(data)), ProbeOptions{Needles: needles})
		if err == nil && info == nil {
			t.Fatal("nil info without error")
		}
	})
}

func FuzzIsVersionLiteral(f *testing.F) {
	for _, s := range []string{"3.0", "3.0-2dba71f", "5.3.0-0-g54ea", "1.8.0_412"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) { IsVersionLiteral(s) })
}
