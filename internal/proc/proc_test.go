package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

var fixture = NewFS("testdata/fixture")

func TestStatusFixture(t *testing.T) {
	st, err := fixture.Proc(4242).Status()
	if err != nil {
		t.Fatal(err)
	}
	want := &Status{
		Name: "java", State: 'S', StateText: "sleeping", Tgid: 4242, PPid: 1,
		UID: IDs{1000, 1001, 1002, 1003}, GID: IDs{2000, 2001, 2002, 2003},
		NStgid: []int{4242, 7}, NSpid: []int{4242, 7}, Threads: 23,
		SigIgn: 0x1000, SigCgt: 0x2000000181005ccf, CapEff: 0xa80425fb, Seccomp: 2,
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got %+v\nwant %+v", st, want)
	}
	if st.NSPid() != 7 {
		t.Errorf("NSPid = %d, want 7", st.NSPid())
	}
	if !st.SigCgt.Has(SIGQUIT) || st.SigIgn.Has(SIGQUIT) {
		t.Errorf("SIGQUIT should be caught, not ignored")
	}
	if st.SigCgt.Has(SIGPROF) || st.SigCgt.Has(SIGVTALRM) {
		t.Errorf("SIGPROF/SIGVTALRM not caught in fixture")
	}
}

func TestParseStatusErrors(t *testing.T) {
	for name, in := range map[string]string{
		"missing SigCgt": "Name:\tx\nState:\tR (running)\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nSigIgn:\t0000000000000000\n",
		"short mask":     "Name:\tx\nState:\tR\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nSigIgn:\t00\nSigCgt:\t0000000000000000\n",
		"three uids":     "Name:\tx\nState:\tR\nUid:\t0 0 0\n",
		"bad tgid":       "Tgid:\tabc\n",
		"empty state":    "State:\t\n",
	} {
		if _, err := parseStatus(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSigSetBounds(t *testing.T) {
	s := SigSet(^uint64(0))
	if s.Has(0) || s.Has(65) || !s.Has(64) || !s.Has(1) {
		t.Fatal("bounds")
	}
}

func TestMapsFixture(t *testing.T) {
	var got []Mapping
	err := fixture.Proc(4242).WalkMaps(nil, func(m *Mapping) error {
		got = append(got, *m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 {
		t.Fatalf("got %d mappings", len(got))
	}
	ap := got[3]
	if ap.Path != "/opt/my app/lib dir/libasyncProfiler.so" || !ap.Deleted || !ap.Executable() || !ap.IsFile() {
		t.Errorf("spaces/deleted: %+v", ap)
	}
	if ap.DevMajor != 0xfd || ap.DevMinor != 1 || ap.Inode != 99 || ap.Start != 0x7f1c32000000 {
		t.Errorf("columns: %+v", ap)
	}
	if got[4].Path != "/memfd:jit-cache" || got[4].IsFile() || !got[4].Deleted {
		t.Errorf("memfd: %+v", got[4])
	}
	if got[1].Path != "" || got[1].IsFile() {
		t.Errorf("anonymous: %+v", got[1])
	}
	if got[7].Path != "[vdso]" || got[7].IsFile() {
		t.Errorf("vdso: %+v", got[7])
	}
	if got[8].Start != 0xffffffffff600000 {
		t.Errorf("vsyscall start %x", got[8].Start)
	}
}

func TestMapsEarlyFilterAndStop(t *testing.T) {
	n := 0
	keep := func(p []byte) bool { return bytes.Contains(p, []byte(".so")) }
	err := fixture.Proc(4242).WalkMaps(keep, func(m *Mapping) error {
		n++
		if strings.Contains(m.Path, "libjvm") {
			return ErrStop
		}
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	boom := errors.New("boom")
	err = fixture.Proc(4242).WalkMaps(nil, func(*Mapping) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("callback error lost: %v", err)
	}
}

func TestScanMapsErrors(t *testing.T) {
	for _, in := range []string{
		"zzzz-1 r-xp 0 00:00 0\n",
		"1000-2000 r-x 0 00:00 0\n",
		"1000-2000 r-xp 0 0000 0\n",
		"1000-2000 r-xp 0 00:00 x\n",
		"1000 r-xp 0 00:00 0\n",
		"1000-2000 r-xp 0 00:00 99999999999999999999999\n",
		"10000000000000000-2000 r-xp 0 00:00 0\n",
		"1000-2000 r-xp 0 00:00 0 " + strings.Repeat("a", maxMapsLine) + "\n",
	} {
		if err := ScanMaps(strings.NewReader(in), nil, func(*Mapping) error { return nil }); err == nil {
			t.Errorf("no error for %.60q", in)
		}
	}
}

func TestEnvironFixture(t *testing.T) {
	env, err := fixture.Proc(4242).Environ()
	if err != nil {
		t.Fatal(err)
	}
	want := Environ{"PATH=/usr/bin", "MALLOC_CONF=prof:true", "WITH SPACE=a b", "MALLOC_CONF=second", "TRAILING=no-nul"}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("got %q", env)
	}
	if v, _ := env.Lookup("MALLOC_CONF"); v != "prof:true" {
		t.Errorf("first definition wins in glibc, got %q", v)
	}
	if _, ok := env.Lookup("MALLOC"); ok {
		t.Error("prefix matched")
	}
	if strings.Contains(env.String(), "prof:true") {
		t.Error("String leaks values")
	}
}

func TestCmdlineFixture(t *testing.T) {
	args, err := fixture.Proc(4242).Cmdline()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"java", "-Xmx1g", "", "-jar", "my app.jar"}
	if !reflect.DeepEqual(args, want) {
		t.Fatalf("got %q", args)
	}
	if parseCmdline(nil) != nil {
		t.Error("empty cmdline")
	}
}

func TestStatFixture(t *testing.T) {
	st, err := fixture.Proc(4242).Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'S' || st.PPid != 1 || st.StartTime != 123456 || st.UTime != 150 || st.STime != 30 {
		t.Fatalf("%+v", st)
	}
	for _, in := range []string{"1 (x S 1", "1 (x) S 1 2", "1 (x) SS 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"} {
		if _, err := parseStat([]byte(in)); err == nil {
			t.Errorf("no error for %q", in)
		}
	}
}

func TestReadCappedTooLarge(t *testing.T) {
	p := t.TempDir() + "/big"
	if err := os.WriteFile(p, make([]byte, 101), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCapped(p, 100); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
}

// TestReadCappedSizes reads files around the initial buffer and the limit:
// the bytes come back whole up to the limit, and one more is refused.
func TestReadCappedSizes(t *testing.T) {
	dir := t.TempDir()
	const limit = 10000
	for _, size := range []int{0, 1, 4095, 4096, 4097, 8192, limit} {
		p := fmt.Sprintf("%s/f%d", dir, size)
		want := bytes.Repeat([]byte("ab"), size)[:size]
		if err := os.WriteFile(p, want, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readCapped(p, limit)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("size %d: %d bytes, %v", size, len(got), err)
		}
	}
	p := dir + "/over"
	if err := os.WriteFile(p, make([]byte, limit+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCapped(p, limit); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("limit+1 bytes: want ErrTooLarge, got %v", err)
	}
	if _, err := readCapped(dir+"/missing", limit); !IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestMissingProcess(t *testing.T) {
	p := fixture.Proc(99999999)
	if p.Exists() {
		t.Fatal("exists")
	}
	_, err := p.Status()
	if !IsNotExist(err) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("want not-exist, got %v", err)
	}
}

// The live tests read this test binary's own /proc entry: a real process
// whose facts we know.
func TestLiveSelf(t *testing.T) {
	self := FS{}.Self()
	st, err := self.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Tgid != os.Getpid() || int(st.UID.Effective) != os.Geteuid() || st.Threads < 1 {
		t.Fatalf("%+v", st)
	}
	// The Go runtime installs handlers for SIGQUIT and SIGPROF.
	if !st.SigCgt.Has(SIGQUIT) || !st.SigCgt.Has(SIGPROF) {
		t.Errorf("Go runtime handlers not seen: SigCgt=%x", st.SigCgt)
	}
	found := false
	if err := self.WalkMaps(nil, func(m *Mapping) error {
		if m.Path == "[stack]" {
			found = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Error("no [stack] mapping")
	}
	env, err := self.Environ()
	if err != nil || len(env) == 0 {
		t.Fatalf("environ: %v %d", err, len(env))
	}
	args, err := self.Cmdline()
	if err != nil || len(args) == 0 || args[0] != os.Args[0] {
		t.Fatalf("cmdline %q %v", args, err)
	}
	a, err := self.Namespace("mnt")
	if err != nil || a.IsZero() {
		t.Fatalf("ns: %v %v", a, err)
	}
	b, _ := FS{}.Proc(1).Namespace("mnt")
	_ = b // may differ inside a container; only that it reads without error matters here
	sst, err := self.Stat()
	if err != nil || sst.StartTime == 0 {
		t.Fatalf("stat %+v %v", sst, err)
	}
}

func TestParseSyscall(t *testing.T) {
	sc, err := parseSyscall("202 0x7f00 0x80 0x0 0x0 0x0 0x0 0x7ffd10 0x7f0010\n")
	if err != nil || sc.Number != 202 || sc.Args[0] != 0x7f00 || sc.SP != 0x7ffd10 || sc.PC != 0x7f0010 || sc.Running {
		t.Fatalf("%+v %v", sc, err)
	}
	sc, err = parseSyscall("-1 0x7ffd10 0x7f0010")
	if err != nil || sc.Number != -1 || sc.PC != 0x7f0010 {
		t.Fatalf("%+v %v", sc, err)
	}
	if sc, err := parseSyscall("running\n"); err != nil || !sc.Running {
		t.Fatalf("%+v %v", sc, err)
	}
	for _, bad := range []string{"", "5 0x1 0x2", "x 0 0 0 0 0 0 0 0", "202 zz 0 0 0 0 0 0 0", "1 2"} {
		if _, err := parseSyscall(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// jdk17PerfData is a real JDK 17 hsperfdata file, and what ParsePerfData
// makes of it.
func jdk17PerfData(t *testing.T) ([]byte, *PerfData) {
	t.Helper()
	data, err := os.ReadFile("testdata/hsperfdata/jdk17.bin")
	if err != nil {
		t.Fatal(err)
	}
	pd, err := ParsePerfData(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, pd
}

// TestParsePerfData reads a real JDK 17 hsperfdata file.
func TestParsePerfData(t *testing.T) {
	data, pd := jdk17PerfData(t)
	if !strings.Contains(pd.Strings["java.rt.vmArgs"], "-XX:+UsePerfData") || !strings.Contains(pd.Strings["sun.rt.javaCommand"], "Target") {
		t.Errorf("vmArgs %q, command %q", pd.Strings["java.rt.vmArgs"], pd.Strings["sun.rt.javaCommand"])
	}
	// The scalar counters: a running JVM has finished initialising.
	if pd.Longs["sun.rt.createVmEndTime"] <= 0 || pd.Longs["sun.os.hrt.frequency"] <= 0 {
		t.Errorf("longs: createVmEndTime %d, hrt.frequency %d (of %d)", pd.Longs["sun.rt.createVmEndTime"], pd.Longs["sun.os.hrt.frequency"], len(pd.Longs))
	}
	for _, bad := range [][]byte{nil, data[:31], append([]byte{0, 0, 0, 0}, data[4:]...)} {
		if _, err := ParsePerfData(bad); err == nil {
			t.Errorf("accepted %d bad bytes", len(bad))
		}
	}
}

// countingReaderAt counts the bytes and calls a reader is asked for.
type countingReaderAt struct {
	r            io.ReaderAt
	calls, bytes int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	n, err := c.r.ReadAt(p, off)
	c.bytes += n
	return n, err
}

// TestPerfDataLong: the polled counter is found in a real JDK 17 file as
// ParsePerfData finds it, and a hostile file (a pod's: 65,535 entries,
// 3.6 MB) costs one read of at most MaxPerfDataScan bytes — a counter
// past it is not found, which is no error.
func TestPerfDataLong(t *testing.T) {
	data, pd := jdk17PerfData(t)
	for _, name := range []string{"sun.rt.createVmEndTime", "sun.os.hrt.frequency", "sun.rt.vmInitDoneTime"} {
		v, found, err := PerfDataLong(bytes.NewReader(data), int64(len(data)), name)
		if err != nil || !found || v != pd.Longs[name] || v <= 0 {
			t.Errorf("%s: %d %v %v, ParsePerfData says %d", name, v, found, err, pd.Longs[name])
		}
	}
	if _, found, err := PerfDataLong(bytes.NewReader(data), int64(len(data)), "java.rt.vmArgs"); found || err != nil {
		t.Errorf("a string counter read as a long: %v %v", found, err)
	}
	for _, c := range []struct {
		endAt int
		found bool
	}{{0, true}, {2000, true}, {maxPerfScanEntries, false}, {65534, false}, {-1, false}} {
		img := testenv.HostilePerfData(65535, c.endAt)
		if len(img) < 3<<20 {
			t.Fatalf("the hostile image is %d bytes", len(img))
		}
		r := &countingReaderAt{r: bytes.NewReader(img)}
		v, found, err := PerfDataLong(r, int64(len(img)), "sun.rt.createVmEndTime")
		if err != nil || found != c.found || v != 0 {
			t.Errorf("createVmEndTime at %d: %d %v %v", c.endAt, v, found, err)
		}
		if r.calls != 1 || r.bytes > MaxPerfDataScan {
			t.Errorf("createVmEndTime at %d: %d reads, %d bytes", c.endAt, r.calls, r.bytes)
		}
	}
	// Within the bytes read, a file must be well formed.
	for _, bad := range [][]byte{nil, data[:31], append([]byte{0, 0, 0, 0}, data[4:]...), data[:500]} {
		if _, _, err := PerfDataLong(bytes.NewReader(bad), int64(len(bad)), "sun.rt.createVmEndTime"); err == nil {
			t.Errorf("accepted %d bad bytes", len(bad))
		}
	}
	// A file that shrank since its size was taken is read as it is.
	if _, _, err := PerfDataLong(bytes.NewReader(data[:400]), int64(len(data)), "sun.rt.createVmEndTime"); err == nil {
		t.Error("accepted a file cut inside an entry")
	}
}
