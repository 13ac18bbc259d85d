package proc

import (
	"bytes"
	"os"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

func addFixtureSeeds(f *testing.F, name string) {
	data, err := os.ReadFile("testdata/fixture/4242/" + name)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
}

func FuzzParseStatus(f *testing.F) {
	addFixtureSeeds(f, "status")
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseStatus(bytes.NewReader(data))
	})
}

func FuzzScanMaps(f *testing.F) {
	addFixtureSeeds(f, "maps")
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ScanMaps(bytes.NewReader(data), nil, func(m *Mapping) error {
			if len(m.Perms) != 4 {
				t.Fatalf("accepted bad perms %q", m.Perms)
			}
			return nil
		})
	})
}

func FuzzParseEnviron(f *testing.F) {
	addFixtureSeeds(f, "environ")
	f.Fuzz(func(t *testing.T, data []byte) {
		env := parseEnviron(data)
		// Nothing is lost: every non-NUL byte of the input is in the output.
		n := 0
		for _, kv := range env {
			n += len(kv)
		}
		if n != len(data)-bytes.Count(data, []byte{0}) {
			t.Fatalf("lost bytes: %d of %d", n, len(data)-bytes.Count(data, []byte{0}))
		}
	})
}

func FuzzParseStat(f *testing.F) {
	addFixtureSeeds(f, "stat")
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseStat(data)
	})
}

func FuzzParseSyscall(f *testing.F) {
	for _, s := range []string{"202 0x7f00 0x80 0x0 0x0 0x0 0x0 0x7ffd10 0x7f0010", "-1 0x1 0x2", "running"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseSyscall(s) })
}

// FuzzParsePerfData: any bytes give counters or an error, never a panic
// or an out-of-range read (the file is the target's).
func FuzzParsePerfData(f *testing.F) {
	if seed, err := os.ReadFile("testdata/hsperfdata/jdk17.bin"); err == nil {
		f.Add(seed)
		f.Add(seed[:100])
	}
	f.Add([]byte{0xca, 0xfe, 0xc0, 0xc0, 1, 2, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParsePerfData(data)
	})
}

// FuzzPerfDataLong: the polled entry point never panics or reads past its
// bound, and on any image ParsePerfData accepts (within the scan's
// bounds) it finds what ParsePerfData finds.
func FuzzPerfDataLong(f *testing.F) {
	if seed, err := os.ReadFile("testdata/hsperfdata/jdk17.bin"); err == nil {
		f.Add(seed)
		f.Add(seed[:500])
	}
	f.Add(testenv.HostilePerfData(3, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		pd, perr := ParsePerfData(data)
		for _, name := range []string{"sun.rt.createVmEndTime", "sun.rt.hostile.0"} {
			r := &countingReaderAt{r: bytes.NewReader(data)}
			v, found, err := PerfDataLong(r, int64(len(data)), name)
			if r.bytes > MaxPerfDataScan {
				t.Fatalf("read %d bytes", r.bytes)
			}
			if perr != nil || len(data) > MaxPerfDataScan || len(pd.Longs)+len(pd.Strings) > maxPerfScanEntries {
				continue
			}
			want, ok := pd.Longs[name]
			if err != nil || found != ok {
				t.Fatalf("%s: found %v (%v), ParsePerfData: %v", name, found, err, ok)
			}
			// With one entry of that name, the two agree on its value
			// (ParsePerfData keeps the last of several, PerfDataLong the
			// first).
			if found && bytes.Count(data, []byte(name+"\x00")) == 1 && v != want {
				t.Fatalf("%s: %d, ParsePerfData: %d", name, v, want)
			}
		}
	})
}
