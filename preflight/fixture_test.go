package preflight

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

// fakeProc lays out /proc/<pid> for a process that does not exist, with
// maps lines naming real files (by their real device and inode), so that
// the whole of Inspect runs on a tree the test controls.
type fakeProc struct {
	t    *testing.T
	root string // the fake /proc
	dir  string // the fake /proc/<pid>
	maps strings.Builder
	addr uint64
}

const fakePID = 4242

func newFakeProc(t *testing.T) *fakeProc {
	root := t.TempDir()
	f := &fakeProc{t: t, root: root, dir: filepath.Join(root, fmt.Sprint(fakePID)), addr: 0x7f0000000000}
	must0(t, os.MkdirAll(filepath.Join(f.dir, "root", "etc"), 0o755))
	must0(t, os.Symlink("/usr", filepath.Join(f.dir, "root", "usr")))
	must0(t, os.MkdirAll(filepath.Join(f.dir, "root", "app"), 0o755))
	must0(t, os.Symlink("/app", filepath.Join(f.dir, "cwd")))
	f.write("status", "Name:\tjava\nState:\tS (sleeping)\nTgid:\t4242\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nNStgid:\t4242\t1\nThreads:\t30\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t2000000181005ccf\n")
	f.write("stat", "4242 (java) S 1 4242 4242 0 -1 0 0 0 0 0 10 10 0 0 20 0 30 0 777 0 0\n")
	f.write("cmdline", "java\x00-XX:+DisableAttachMechanism\x00-jar\x00app.jar\x00")
	return f
}

func must0(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fakeProc) write(name, content string) {
	must0(f.t, os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o644))
}

// mapFile adds an executable mapping of path; a path that does not exist
// gets made-up device numbers.
func (f *fakeProc) mapFile(path string) {
	var st unix.Stat_t
	maj, min, ino := uint32(0xfd), uint32(1), 900+f.addr>>20
	if unix.Stat(path, &st) == nil {
		maj, min, ino = unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino
	}
	fmt.Fprintf(&f.maps, "%x-%x r--p 00000000 %02x:%02x %d    %s\n", f.addr, f.addr+0x1000, maj, min, ino, path)
	fmt.Fprintf(&f.maps, "%x-%x r-xp 00001000 %02x:%02x %d    %s\n", f.addr+0x1000, f.addr+0x2000, maj, min, ino, path)
	f.addr += 0x100000
}

func (f *fakeProc) inspect() *Report {
	f.write("maps", f.maps.String())
	r, err := Inspect(context.Background(), fakePID, Options{ProcRoot: f.root})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// TestFixtureMallocConfSymlinkAndPreloadFile covers the configuration
// sources a test cannot safely change on the live host: /etc/malloc.conf
// and /etc/ld.so.preload in the target's root.
func TestFixtureMallocConfSymlinkAndPreloadFile(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	uw := testenv.Library(t, "libunwind.so.8")
	f := newFakeProc(t)
	f.mapFile(je)
	f.mapFile(uw)
	must0(t, os.Symlink("prof:true,prof_active:false", filepath.Join(f.dir, "root/etc/malloc.conf")))
	must0(t, os.WriteFile(filepath.Join(f.dir, "root/etc/ld.so.preload"), []byte(uw+"\n"+je+"\n"), 0o644))
	// The environment overrides prof_active only.
	f.write("environ", "PATH=/bin\x00MALLOC_CONF=prof_active:true\x00")
	must0(t, os.WriteFile(filepath.Join(f.dir, "root/app/jeprof.1.0.f.heap"), nil, 0o644))
	r := f.inspect()
	j := r.Jemalloc
	if !j.Present || j.Via != ViaLDSoPreload || j.Unwinder != UnwinderLibunwind {
		t.Fatalf("jemalloc %+v", j)
	}
	if j.Prof.State != ProfActive || j.Prof.Options["prof"] != "true" || j.Prof.Options["prof_active"] != "true" {
		t.Errorf("prof %+v", j.Prof)
	}
	if len(j.Dumps) != 1 || j.Dumps[0] != "/app/jeprof.1.0.f.heap" {
		t.Errorf("dumps %q", j.Dumps)
	}
	if r.Process.NSPid != 1 || r.JVM.Kind != JVMNone {
		t.Errorf("ns pid %d, kind %s", r.Process.NSPid, r.JVM.Kind)
	}
	if r.Process.UID.Effective != 1000 || r.Process.StartTime != 777 {
		t.Errorf("process %+v", r.Process)
	}
}

func TestFixtureOpenJ9AndHostileEnviron(t *testing.T) {
	f := newFakeProc(t)
	f.mapFile("/opt/openj9/lib/default/libj9vm29.so")
	f.mapFile("/opt/openj9/lib/server/libjvm.so")
	f.mapFile("/opt/vendor/lib dir/libyjpagent.so")
	// NUL-less tail, binary junk, an enormous value: nothing breaks, nothing
	// is dropped.
	f.write("environ", "A=1\x00\xff\xfe=\x01\x00JAVA_TOOL_OPTIONS=-Xrs "+strings.Repeat("x", 100000)+"\x00_JAVA_OPTIONS=-XX:+StartAttachListener")
	r := f.inspect()
	if r.JVM.Kind != JVMOpenJ9 {
		t.Errorf("kind %s: libj9vm decides, not libjvm.so", r.JVM.Kind)
	}
	if v, _ := r.JVM.Flag("DisableAttachMechanism"); !v {
		t.Errorf("cmdline flag lost: %+v", r.JVM.Flags)
	}
	if v, _ := r.JVM.Flag("StartAttachListener"); !v || r.JVM.Flags["StartAttachListener"].Source != "_JAVA_OPTIONS" {
		t.Errorf("unterminated last variable lost: %+v", r.JVM.Flags)
	}
	if v, _ := r.JVM.Flag("ReduceSignalUsage"); !v {
		t.Errorf("-Xrs from JAVA_TOOL_OPTIONS lost: %+v", r.JVM.Flags)
	}
	if r.JVM.MainClass != "-jar app.jar" {
		t.Errorf("main %q", r.JVM.MainClass)
	}
	if len(r.Profilers) != 1 || r.Profilers[0].Kind != "yourkit" || r.Profilers[0].Path != "/opt/vendor/lib dir/libyjpagent.so" {
		t.Errorf("profilers %+v", r.Profilers)
	}
}

func TestFixtureUnreadableFactsAreUnknown(t *testing.T) {
	f := newFakeProc(t)
	f.mapFile(testenv.Library(t, "libjemalloc.so.2"))
	// No environ file at all: MALLOC_CONF cannot be known.
	r := f.inspect()
	if r.Jemalloc.Prof.State != ProfUnknown || r.Jemalloc.Via != ViaMapped {
		t.Errorf("prof %+v via %s", r.Jemalloc.Prof, r.Jemalloc.Via)
	}
	facts := map[string]bool{}
	for _, u := range r.Unknowns {
		facts[u.Fact] = true
	}
	for _, want := range []string{"process.environ", "jemalloc.prof.state"} {
		if !facts[want] {
			t.Errorf("unknown fact %s not reported: %+v", want, r.Unknowns)
		}
	}
}
