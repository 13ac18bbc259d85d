package proc

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// BenchmarkScanMaps20k parses a 20,000-line maps file, the size of a large
// JVM with many JIT and thread-stack mappings, keeping only executable
// file mappings the way preflight does.
func BenchmarkScanMaps20k(b *testing.B) {
	var buf bytes.Buffer
	for i := 0; i < 20000; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&buf, "%012x-%012x r-xp 00000000 fd:01 %d                    /usr/lib/x86_64-linux-gnu/lib%d.so\n", 0x7f0000000000+i*0x10000, 0x7f0000000000+i*0x10000+0x1000, 1000+i, i)
		case 1:
			fmt.Fprintf(&buf, "%012x-%012x rw-p 00000000 00:00 0 \n", 0x7f0000000000+i*0x10000, 0x7f0000000000+i*0x10000+0x1000)
		default:
			fmt.Fprintf(&buf, "%012x-%012x r--p 00001000 fd:01 %d                    /usr/lib/jvm/java-17-openjdk-amd64/lib/libfoo%d.so\n", 0x7f0000000000+i*0x10000, 0x7f0000000000+i*0x10000+0x1000, 1000+i, i)
		}
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := ScanMaps(bytes.NewReader(data), func(p []byte) bool { return len(p) > 0 && p[0] == '/' }, func(m *Mapping) error {
			if m.Executable() {
				n++
			}
			return nil
		})
		if err != nil || n != 5000 {
			b.Fatal(err, n)
		}
	}
}

// BenchmarkPerfDataHostile is one poll of a hostile hsperfdata file
// (a pod's: 65,535 entries, 3.6 MB, createVmEndTime = 0 first): the whole
// parse the wait used to repeat every 5 ms, and the bounded look-up that
// replaced it.
func BenchmarkPerfDataHostile(b *testing.B) {
	img := testenv.HostilePerfData(65535, 0)
	b.Run("ParsePerfData", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParsePerfData(img); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PerfDataLong", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(img)
		for b.Loop() {
			if _, found, err := PerfDataLong(r, int64(len(img)), "sun.rt.createVmEndTime"); !found || err != nil {
				b.Fatal(found, err)
			}
		}
	})
}
