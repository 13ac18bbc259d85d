package diagnose

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestUnwoundCallersAreCallSites: every caller a live report names is a
// return address — the bytes before it in the target's memory are a call
// instruction — and the launcher's main thread unwinds to its first frame
// (__libc_start_main, _start) with nothing left unexplained. The stack
// scan this replaced failed both: it listed function pointers and stale
// words (fnmatch "called" from tcmalloc's PageHeap::Carve).
func TestUnwoundCallersAreCallSites(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1, Mode: "wait"})
	time.Sleep(500 * time.Millisecond)
	r, err := Diagnose(context.Background(), p.PID, Options{Sample: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pr := proc.FS{}.Proc(p.PID)
	sym := newSymbolizer(pr, archOf(pr.Path("exe")), nil)
	defer sym.close()
	if sym.arch.name != "x86-64" {
		t.Logf("call-site check written for x86-64; this is %s (unwinding still checked)", sym.arch.name)
	}
	unwound := 0
	for _, th := range r.Threads {
		if th.PC == 0 {
			continue
		}
		callers, stop := sym.unwind(th.PC, threadSP(t, p.PID, th.TID))
		unwound += len(callers)
		for _, ra := range callers {
			if sym.arch.name == "x86-64" && !followsCall(t, sym, ra) {
				t.Errorf("thread %d %q: %s does not follow a call instruction", th.TID, th.Name, sym.describe(ra))
			}
		}
		if th.TID == p.PID {
			joined := strings.Join(th.Callers, " <- ")
			if stop != "" || !strings.Contains(joined, "JLI_Launch") || !strings.Contains(joined, "__libc_start_main") {
				t.Errorf("main thread: stopped %q\n%s", stop, joined)
			}
		}
	}
	if unwound < 20 {
		t.Errorf("only %d frames unwound over %d threads", unwound, len(r.Threads))
	}
}

func threadSP(t *testing.T, pid, tid int) uint64 {
	sc, err := proc.FS{}.Proc(pid).Task(tid).Syscall()
	if err != nil {
		t.Fatal(err)
	}
	return sc.SP
}

// followsCall decodes the x86-64 call forms a return address can follow:
// E8 rel32, and FF /2 (indirect, with any ModRM/SIB/displacement).
func followsCall(t *testing.T, s *symbolizer, ra uint64) bool {
	var b [8]byte
	if _, err := s.mem.ReadAt(b[:], int64(ra-8)); err != nil {
		t.Fatalf("reading before %#x: %v", ra, err)
	}
	if b[3] == 0xe8 {
		return true
	}
	for k := 2; k <= 7; k++ {
		op, modrm := b[8-k], b[8-k+1]
		if op != 0xff || (modrm>>3)&7 != 2 {
			continue
		}
		mod, rm := modrm>>6, modrm&7
		n := 2
		if mod != 3 && rm == 4 {
			n++ // SIB
			if mod == 0 && b[8-k+2]&7 == 5 {
				n += 4
			}
		}
		switch {
		case mod == 0 && rm == 5:
			n += 4
		case mod == 1:
			n++
		case mod == 2:
			n += 4
		}
		if n == k {
			return true
		}
	}
	return false
}

// TestUnwindTablesFromHostileFiles: a library whose unwind tables are
// garbage makes the walk stop with a reason, never panic or loop.
func TestUnwindTablesFromHostileFiles(t *testing.T) {
	libc := testenv.Library(t, "libc.so.6")
	data, err := os.ReadFile(libc)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.NewFile(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	sec := ef.Section(".eh_frame")
	if sec == nil {
		t.Fatal("libc has no .eh_frame")
	}
	ehOff, ehEnd := sec.Offset, sec.Offset+sec.Size
	walked, parsed := 0, 0
	for seed := range 4 {
		bad := append([]byte(nil), data...)
		// The search table intact, the entries it points to scrambled:
		// lengths, CIE pointers, augmentations and frame programs.
		for i := ehOff + uint64(seed); i < ehEnd; i += 13 + uint64(seed)*5 {
			bad[i] ^= byte(0x5a + seed*31)
		}
		path := filepath.Join(t.TempDir(), "libc.so.6")
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		tab := &ehTable{f: f}
		if err := tab.load(f, 0x7f0000000000, &archX8664); err != nil {
			f.Close()
			continue // refused whole: fine
		}
		for i := 0; i < len(tab.table); i += 97 {
			walked++
			if _, err := tab.frameAt(tab.table[i].pc, &archX8664); err == nil {
				parsed++ // must return, not panic
			}
		}
		f.Close()
	}
	if walked == 0 {
		t.Fatal("no scrambled table was read: the test tested nothing")
	}
	t.Logf("%d entries of scrambled tables looked up, %d parsed", walked, parsed)
}
