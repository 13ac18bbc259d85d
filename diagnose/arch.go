package diagnose

import (
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"runtime"
)

// arch is what reading a thread's state depends on: system call numbers
// differ per architecture, and stack words are read in its pointer size
// and byte order. The architecture is the target's (its executable's ELF
// header), not ours, so a report from a fixture tree or an arm64 process
// read by an amd64 tool names the right calls. The tables live in
// arch_x86_64.go and arch_aarch64.go; they are not build-constrained
// (a _amd64.go suffix would compile only one of them), so both are
// tested on every machine.
//
// The tables are slices and the lookup a switch, not maps: a map literal
// is built by code at every start of every command that links this
// package, and only a hang report (diagnose, a timed-out attach) reads
// them.
type arch struct {
	name     string
	ptrSize  int
	order    binary.ByteOrder
	syscalls []syscallRow
	futex    int // the futex(2) number: its first argument is the lock
}

// syscallRow is one row of an arch's table.
type syscallRow struct {
	number int
	name   string
}

// archByMachine is the arch of an ELF e_machine, nil for one not known.
func archByMachine(m elf.Machine) *arch {
	switch m {
	case elf.EM_X86_64:
		return &archX8664
	case elf.EM_AARCH64:
		return &archAArch64
	}
	return nil
}

// hostArch is the fallback when the target's executable cannot be read.
func hostArch() *arch {
	if runtime.GOARCH == "arm64" {
		return &archAArch64
	}
	return &archX8664
}

// archOf reads the ELF header of exe (the target's /proc/<pid>/exe).
func archOf(exe string) *arch {
	f, err := os.Open(exe)
	if err != nil {
		return hostArch()
	}
	defer f.Close()
	var hdr [20]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[:4]) != elf.ELFMAG {
		return hostArch()
	}
	var order binary.ByteOrder = binary.LittleEndian
	if elf.Data(hdr[elf.EI_DATA]) == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	if a := archByMachine(elf.Machine(order.Uint16(hdr[18:20]))); a != nil {
		return a
	}
	return hostArch()
}

// syscallName names a system call number on this architecture.
func (a *arch) syscallName(n int) string {
	for _, s := range a.syscalls {
		if s.number == n {
			return s.name
		}
	}
	return "syscall " + itoa(n)
}

// word reads one pointer-sized word.
func (a *arch) word(b []byte) uint64 {
	if a.ptrSize == 4 {
		return uint64(a.order.Uint32(b))
	}
	return a.order.Uint64(b)
}
