package elfx

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

var needles = []string{"Async-profiler", "gperftools "}

func TestProbeTiny(t *testing.T) {
	info, err := ProbeFile("testdata/tiny.so", ProbeOptions{Needles: needles})
	if err != nil {
		t.Fatal(err)
	}
	if info.Machine != "x86-64" || info.Class != 64 || info.Type != "ET_DYN" {
		t.Errorf("identity: %+v", info)
	}
	if info.Libc() != "glibc" {
		t.Errorf("libc %q", info.Libc())
	}
	if !info.Imports("dl_iterate_phdr") || info.Imports("nope") {
		t.Errorf("imports: %v", info.Imported)
	}
	if !info.Defines("Agent_OnAttach") || !info.Defines("malloc_conf") || info.Defines("dl_iterate_phdr") {
		t.Errorf("defines: %v", info.Defined)
	}
	if got := info.Needles["Async-profiler"]; got != "Async-profiler Server" {
		t.Errorf("needle context %q", got)
	}
	if _, ok := info.Needles["gperftools "]; ok {
		t.Error("found a needle that is not there")
	}
	found := false
	for _, v := range info.VersionLiterals {
		found = found || v == "3.0-2dba71f"
	}
	if !found {
		t.Errorf("version literal missing from %q", info.VersionLiterals)
	}
}

func TestProbeBadInput(t *testing.T) {
	if _, err := ProbeFile("testdata/notelf.bin", ProbeOptions{}); !errors.Is(err, ErrNotELF) {
		t.Errorf("not ELF: %v", err)
	}
	if _, err := ProbeFile("testdata/truncated.so", ProbeOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := ProbeFile("testdata", ProbeOptions{}); err == nil {
		t.Error("directory accepted")
	}
	if _, err := ProbeFile("testdata/missing.so", ProbeOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	// A section header claiming a huge size must be refused before anything
	// of that size is allocated.
	data, err := os.ReadFile("testdata/tiny.so")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ProbeReader(bytes.NewReader(data), MaxFileSize+1, ProbeOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversize: %v", err)
	}
}

func TestIsVersionLiteral(t *testing.T) {
	for s, want := range map[string]bool{
		"3.0": true, "4.5": true, "3.0-2dba71f": true, "4.1.2": true,
		"5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c": true,
		"17.0.15+6-Debian-1deb12u1":                         true, "1.8.0_412-b08": true,
		"3": false, "3.": false, ".3": false, "3.0-": false, "0.00%u": false,
		"3.0 beta": false, "1.2.3.4.5": false, "12345.1": false, "a3.0": false,
	} {
		if got := IsVersionLiteral([]byte(s)); got != want {
			t.Errorf("IsVersionLiteral(%q) = %v", s, got)
		}
	}
}

func TestCacheSharesProbes(t *testing.T) {
	var c Cache
	open := func() *os.File {
		f, err := os.Open("testdata/tiny.so")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, _, err := c.Probe(open(), ProbeOptions{Needles: needles})
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := c.Probe(open(), ProbeOptions{Needles: needles})
	if a != b {
		t.Error("second probe of the same file was not cached")
	}
	if h, m := c.Stats(); h != 1 || m != 1 {
		t.Errorf("hits %d misses %d", h, m)
	}
	// A replaced file (new mtime) is probed again.
	cp := filepath.Join(t.TempDir(), "tiny.so")
	data, _ := os.ReadFile("testdata/tiny.so")
	os.WriteFile(cp, data, 0o644)
	f, _ := os.Open(cp)
	defer f.Close()
	d, _, _ := c.Probe(f, ProbeOptions{Needles: needles})
	if d == a {
		t.Error("different file shared a cache entry")
	}
}

// TestLiveDebianLibraries probes the real allocator libraries from
// Debian's packages: the facts preflight relies on must hold for them.
func TestLiveDebianLibraries(t *testing.T) {
	je, err := ProbeFile(testenv.Library(t, "libjemalloc.so.2"), ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !je.Imports("_Unwind_Backtrace") || !je.Defines("malloc_conf") || je.SONAME != "libjemalloc.so.2" {
		t.Errorf("jemalloc: imports _Unwind_Backtrace=%v defines malloc_conf=%v soname=%q", je.Imports("_Unwind_Backtrace"), je.Defines("malloc_conf"), je.SONAME)
	}
	if !containsPrefix(je.VersionLiterals, "5.3.0-0-g") {
		t.Errorf("jemalloc version literal missing: %q", je.VersionLiterals)
	}
	tc, err := ProbeFile(testenv.Library(t, "libtcmalloc.so.4"), ProbeOptions{Needles: needles})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tc.NeedsPrefix("libunwind.so"); !ok || !tc.Defines("HeapProfilerStart") {
		t.Errorf("full tcmalloc: needed %v", tc.Needed)
	}
	if !strings.HasPrefix(tc.Needles["gperftools "], "gperftools 2.") {
		t.Errorf("gperftools version string: %q", tc.Needles["gperftools "])
	}
	mini, err := ProbeFile(testenv.Library(t, "libtcmalloc_minimal.so.4"), ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mini.NeedsPrefix("libunwind"); ok || mini.Defines("HeapProfilerStart") {
		t.Error("minimal tcmalloc should have neither libunwind nor the heap profiler")
	}
	uw, err := ProbeFile(testenv.Library(t, "libunwind.so.8"), ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !uw.Defines("_ULx86_64_init_local2") || !uw.Defines("_Unwind_Backtrace") {
		t.Error("libunwind fingerprints missing")
	}
}

func TestLiveLibJVM(t *testing.T) {
	jdk := testenv.JDK17(t)
	info, err := ProbeFile(filepath.Join(jdk.Home, "lib/server/libjvm.so"), ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Defines("JNI_CreateJavaVM") || !containsPrefix(info.VersionLiterals, jdk.Version+"+") {
		t.Errorf("libjvm: JNI_CreateJavaVM=%v literals=%q", info.Defines("JNI_CreateJavaVM"), info.VersionLiterals)
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestOpenMappedSelf opens this test binary's own mapping of libc and
// checks identity, then shows a replaced path is refused.
func TestOpenMappedSelf(t *testing.T) {
	exe, _ := os.Executable()
	var st = mustStat(t, exe)
	m := MappedFile{ProcDir: "/proc/self", Path: exe, DevMajor: unix.Major(st.Dev), DevMinor: unix.Minor(st.Dev), Inode: st.Ino}
	// No map_files range: the /proc/self/root path must work and match.
	f, via, err := OpenMapped(m)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !strings.Contains(via, "/root/") {
		t.Errorf("opened via %s", via)
	}
	m.Inode++
	if _, _, err := OpenMapped(m); !errors.Is(err, ErrReplaced) {
		t.Errorf("wrong inode accepted: %v", err)
	}
}

func TestReadPointedStringSelf(t *testing.T) {
	s := []byte("prof:true,lg_prof_sample:0\x00")
	ptr := &s[0]
	holder := uintptr(unsafe.Pointer(ptr))
	got, err := ReadPointedString("/proc/self", uint64(uintptr(unsafe.Pointer(&holder))), 8, 4096)
	runtime.KeepAlive(s)
	if err != nil || got != "prof:true,lg_prof_sample:0" {
		t.Fatalf("got %q, %v", got, err)
	}
	var null uintptr
	if _, err := ReadPointedString("/proc/self", uint64(uintptr(unsafe.Pointer(&null))), 8, 4096); !errors.Is(err, ErrNullPointer) {
		t.Errorf("null: %v", err)
	}
	if _, err := ReadPointedString("/proc/self", uint64(uintptr(unsafe.Pointer(&holder))), 8, 5); err == nil {
		t.Error("overlong string accepted")
	}
}

// TestCacheIsBounded: past its entry bound the oldest probes go first, and
// the byte estimate follows.
func TestCacheIsBounded(t *testing.T) {
	libs := []string{"/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libpthread.so.0"}
	c := NewCache(2, 0)
	for _, p := range libs {
		f, err := os.Open(p)
		if err != nil {
			testenv.Missing(t, "glibc's libraries: %v", err)
		}
		if _, _, err := c.Probe(f, ProbeOptions{}); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if n, b := c.Len(); n != 2 || b <= 0 {
		t.Errorf("entries %d bytes %d", n, b)
	}
	small := NewCache(100, 1)
	f, _ := os.Open(libs[0])
	defer f.Close()
	small.Probe(f, ProbeOptions{})
	if n, _ := small.Len(); n != 0 {
		t.Errorf("a probe larger than the byte bound was kept")
	}
}
