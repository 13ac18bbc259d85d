package diagnose

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/preflight"
)

// writeFixture builds a procfs tree for one process with three threads,
// each blocked in system call nr with a futex-like first argument inside
// the anonymous memory that follows libunwind's mappings, and an
// executable whose ELF header names machine.
func writeFixture(t *testing.T, machine elf.Machine, nr int) string {
	t.Helper()
	return writeNamedFixture(t, machine, nr, fixtureNames{"java", "/usr/lib/libunwind.so.8.0.1", []string{"java", "worker-1", "worker-2"}, "futex_wait_queue"})
}

// fixtureNames are the names a fixture's process gives: its own, the
// library it maps, its threads', and the kernel's wait channel.
type fixtureNames struct {
	process, lib string
	threads      []string
	wchan        string
}

func writeNamedFixture(t *testing.T, machine elf.Machine, nr int, n fixtureNames) string {
	t.Helper()
	root := t.TempDir()
	const pid = 4242
	dir := filepath.Join(root, fmt.Sprint(pid))
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("status", "Name:\t"+n.process+"\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t4242\nThreads:\t3\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000004\n")
	write("maps", "7f0000000000-7f0000010000 r-xp 00000000 08:01 1234 "+n.lib+"\n"+
		"7f0000010000-7f0000020000 rw-p 00010000 08:01 1234 "+n.lib+"\n"+
		"7f0000020000-7f0000030000 rw-p 00000000 00:00 0 \n")
	hdr := make([]byte, 64)
	copy(hdr, elf.ELFMAG)
	hdr[elf.EI_CLASS], hdr[elf.EI_DATA], hdr[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	binary.LittleEndian.PutUint16(hdr[16:], uint16(elf.ET_EXEC))
	binary.LittleEndian.PutUint16(hdr[18:], uint16(machine))
	write("exe", string(hdr))
	for i, tid := range []int{4242, 4243, 4244} {
		name := n.threads[i]
		task := filepath.Join("task", fmt.Sprint(tid))
		write(filepath.Join(task, "comm"), name+"\n")
		write(filepath.Join(task, "wchan"), n.wchan)
		write(filepath.Join(task, "stat"), fmt.Sprintf("%d (%s) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 100 0 0\n", tid, name))
		write(filepath.Join(task, "syscall"), fmt.Sprintf("%d 0x7f0000020100 0x80 0x2 0x0 0x0 0x0 0x7ffd00000000 0x7f0000001234\n", nr))
	}
	return root
}

// TestFixtureSyscallTablesPerArchitecture: the call a thread is blocked
// in is named with the target's table (from its executable's ELF header),
// and three threads queued on one lock in libunwind's data with no CPU
// are a hang, on x86-64 and on arm64 alike.
func TestFixtureSyscallTablesPerArchitecture(t *testing.T) {
	for _, tc := range []struct {
		machine elf.Machine
		nr      int
		name    string
		futex   bool
	}{
		{elf.EM_X86_64, 202, "futex", true},
		{elf.EM_AARCH64, 98, "futex", true},
		{elf.EM_AARCH64, 202, "accept", false}, // 202 is futex only on x86-64
		{elf.EM_X86_64, 98, "syscall 98", false},
	} {
		t.Run(fmt.Sprintf("%v-%d", tc.machine, tc.nr), func(t *testing.T) {
			root := writeFixture(t, tc.machine, tc.nr)
			r, err := Diagnose(context.Background(), 4242, Options{ProcRoot: root, Sample: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Threads) != 3 {
				t.Fatalf("threads %+v", r.Threads)
			}
			for _, th := range r.Threads {
				if th.Syscall != tc.name || (th.FutexAddr != 0) != tc.futex {
					t.Errorf("thread %d: syscall %q futex %#x", th.TID, th.Syscall, th.FutexAddr)
				}
			}
			if tc.futex {
				if r.State != Hung || len(r.Futexes) != 1 || r.Futexes[0].Where != "the .bss of libunwind.so.8.0.1" {
					t.Errorf("verdict %s, futexes %+v", r.State, r.Futexes)
				}
			} else if r.State == Hung {
				t.Errorf("no lock, yet %s: %s", r.State, r.Conclusion)
			}
		})
	}
}

func TestArchWord(t *testing.T) {
	b := []byte{1, 0, 0, 0, 0, 0, 0, 0x80}
	if got := archAArch64.word(b); got != 0x8000000000000001 {
		t.Errorf("%#x", got)
	}
	if archOf("/nonexistent") != hostArch() {
		t.Error("an unreadable executable must fall back to the host's architecture")
	}
}

// TestDiagnoseLeaksNoDescriptors: a daemon makes many hang reports; each
// closes what it opened (it used to keep /proc/<pid>/mem open).
func TestDiagnoseLeaksNoDescriptors(t *testing.T) {
	fds := func() int {
		es, _ := os.ReadDir("/proc/self/fd")
		return len(es)
	}
	pid := os.Getpid()
	Diagnose(context.Background(), pid, Options{Sample: time.Millisecond})
	before := fds()
	for i := 0; i < 50; i++ {
		if _, err := Diagnose(context.Background(), pid, Options{Sample: time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	if after := fds(); after > before+10 {
		t.Errorf("descriptors grew from %d to %d over 50 reports", before, after)
	}
}

// TestHangReportIsPrintable (the way back): a process names itself,
// its threads and the files it maps; none of it reaches a hang report —
// shown on a terminal, logged in a HangError — as a control character,
// and what was escaped is still there to read.
func TestHangReportIsPrintable(t *testing.T) {
	const osc52 = "\x1b]52;c;aGk=\x07"
	root := writeNamedFixture(t, elf.EM_X86_64, 202, fixtureNames{
		process: "ja\x1b[2Jva",
		lib:     "/tmp/lib" + osc52 + "\u009b2J.so",
		threads: []string{"java", "w\x1b]0;owned\x07", "w\r\xff"},
		wchan:   "futex\x1b[31m",
	})
	r, err := Diagnose(context.Background(), 4242, Options{ProcRoot: root, Sample: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("%+v", *r)
	if testenv.HasControl(text) {
		t.Fatalf("a control character in the report: %q", text)
	}
	for _, want := range []string{`ja\x1b[2Jva`, `lib\x1b]52;c;aGk=\x07\u009b2J.so+0x1234`, `the .bss of lib\x1b]52`, `w\x1b]0;owned\x07`, `w\x0d\xff`, `futex\x1b[31m`} {
		if !strings.Contains(text, want) {
			t.Errorf("%q is not in the report: %s", want, text)
		}
	}
}

// TestProbesGoThroughTheCacheGiven: a daemon shares one
// preflight.ELFCache between inspections and hang reports; the libraries
// a report symbolises against are probed through that cache, not the
// process-wide one.
func TestProbesGoThroughTheCacheGiven(t *testing.T) {
	c := preflight.NewELFCache(8, 0)
	if _, err := Diagnose(context.Background(), os.Getpid(), Options{Sample: time.Millisecond, ELFCache: c}); err != nil {
		t.Fatal(err)
	}
	if _, misses := c.Stats(); misses == 0 {
		t.Error("the hang report probed no library through the cache it was given")
	}
}
