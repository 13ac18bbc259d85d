package proc

import (
	"fmt"
	"strconv"
	"strings"
)

// Task returns the /proc/<pid>/task/<tid> entry of one thread; it has the
// same files as a process entry (stat, comm, wchan, syscall...).
func (p Proc) Task(tid int) Proc {
	return Proc{PID: p.PID, dir: p.Path("task", strconv.Itoa(tid))}
}

// Syscall is /proc/<pid>/task/<tid>/syscall: what a thread is blocked in.
type Syscall struct {
	// Running is set when the thread is running ("running"): nothing else
	// is known.
	Running bool
	// Number is the system call number, -1 when the thread is blocked
	// outside a system call (then only SP and PC are known).
	Number int
	Args   [6]uint64
	SP, PC uint64
}

// Syscall reads the thread's syscall file. It needs ptrace access.
func (p Proc) Syscall() (*Syscall, error) {
	data, err := readCapped(p.Path("syscall"), 512)
	if err != nil {
		return nil, err
	}
	s, err := parseSyscall(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path("syscall"), err)
	}
	return s, nil
}

// parseSyscall reads the kernel's three formats:
//
//	running
//	-1 <sp> <pc>
//	<nr> <a0> ... <a5> <sp> <pc>
func parseSyscall(s string) (*Syscall, error) {
	f := strings.Fields(s)
	if len(f) == 1 && f[0] == "running" {
		return &Syscall{Running: true, Number: -1}, nil
	}
	if len(f) != 3 && len(f) != 9 {
		return nil, fmt.Errorf("want 1, 3 or 9 fields, got %d", len(f))
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil {
		return nil, fmt.Errorf("syscall number %q", f[0])
	}
	sc := &Syscall{Number: nr}
	hex := func(x string) (uint64, error) { return strconv.ParseUint(strings.TrimPrefix(x, "0x"), 16, 64) }
	if len(f) == 9 {
		for i := 0; i < 6; i++ {
			if sc.Args[i], err = hex(f[1+i]); err != nil {
				return nil, fmt.Errorf("argument %d: %w", i, err)
			}
		}
	} else if nr != -1 {
		return nil, fmt.Errorf("3 fields need number -1, got %d", nr)
	}
	if sc.SP, err = hex(f[len(f)-2]); err != nil {
		return nil, fmt.Errorf("sp: %w", err)
	}
	if sc.PC, err = hex(f[len(f)-1]); err != nil {
		return nil, fmt.Errorf("pc: %w", err)
	}
	return sc, nil
}
