package proc

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
)

// Signal numbers on Linux (x86-64 and arm64 agree for these).
const (
	SIGQUIT   = 3
	SIGVTALRM = 26
	SIGPROF   = 27
)

// SigSet is a signal mask as printed in /proc/<pid>/status: bit n-1 is
// signal n.
type SigSet uint64

// Has reports whether signal sig is in the set.
func (s SigSet) Has(sig int) bool {
	if sig < 1 || sig > 64 {
		return false
	}
	return s&(1<<(sig-1)) != 0
}

// IDs are the four Linux credentials in /proc order: real, effective,
// saved set, filesystem.
type IDs struct {
	Real, Effective, Saved, FS uint32
}

// Status is the subset of /proc/<pid>/status that safeattach reads.
type Status struct {
	Name      string
	State     byte // R, S, D, T, t, Z, X, I
	StateText string
	Tgid      int
	PPid      int
	TracerPid int
	UID, GID  IDs
	// NStgid lists the thread-group id in each nested pid namespace, outermost
	// first; the last entry is the pid as the process itself sees it.
	NStgid  []int
	NSpid   []int
	Threads int
	SigBlk  SigSet
	SigIgn  SigSet
	SigCgt  SigSet
	// Kthread is set for kernel threads (Linux 6.x prints "Kthread: 1").
	Kthread bool
	// CapEff is the effective capability set; Seccomp the seccomp mode
	// (0 none, 1 strict, 2 filter; -1 when the kernel does not say).
	CapEff  uint64
	Seccomp int
}

// NSPid returns the pid in the process's own (innermost) pid namespace.
func (s *Status) NSPid() int {
	if len(s.NStgid) == 0 {
		return s.Tgid
	}
	return s.NStgid[len(s.NStgid)-1]
}

const maxStatusSize = 64 << 10

// Status reads /proc/<pid>/status.
func (p Proc) Status() (*Status, error) {
	data, err := readCapped(p.Path("status"), maxStatusSize)
	if err != nil {
		return nil, err
	}
	st, err := parseStatus(strings.NewReader(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path("status"), err)
	}
	return st, nil
}

func parseStatus(r io.Reader) (*Status, error) {
	st := &Status{Seccomp: -1}
	sc := bufio.NewScanner(r)
	seen := map[string]bool{}
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "Name":
			// The kernel escapes '\n' and '\\' in comm; keep it as printed.
			st.Name = val
		case "State":
			if val == "" {
				return nil, fmt.Errorf("empty State")
			}
			st.State = val[0]
			if i := strings.IndexByte(val, '('); i >= 0 {
				st.StateText = strings.TrimSuffix(val[i+1:], ")")
			}
		case "Tgid":
			st.Tgid, err = strconv.Atoi(val)
		case "PPid":
			st.PPid, err = strconv.Atoi(val)
		case "TracerPid":
			st.TracerPid, err = strconv.Atoi(val)
		case "Uid":
			st.UID, err = parseIDs(val)
		case "Gid":
			st.GID, err = parseIDs(val)
		case "NStgid":
			st.NStgid, err = parseInts(val)
		case "NSpid":
			st.NSpid, err = parseInts(val)
		case "Threads":
			st.Threads, err = strconv.Atoi(val)
		case "SigBlk":
			st.SigBlk, err = parseSigSet(val)
		case "SigIgn":
			st.SigIgn, err = parseSigSet(val)
		case "SigCgt":
			st.SigCgt, err = parseSigSet(val)
		case "Kthread":
			st.Kthread = val == "1"
		case "CapEff":
			var v SigSet
			v, err = parseSigSet(val)
			st.CapEff = uint64(v)
		case "Seccomp":
			st.Seccomp, err = strconv.Atoi(val)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", key, err)
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, k := range []string{"Name", "State", "Uid", "Gid", "SigCgt", "SigIgn"} {
		if !seen[k] {
			return nil, fmt.Errorf("missing field %s", k)
		}
	}
	return st, nil
}

func parseIDs(s string) (IDs, error) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return IDs{}, fmt.Errorf("want 4 ids, got %d", len(f))
	}
	var v [4]uint32
	for i, x := range f {
		n, err := strconv.ParseUint(x, 10, 32)
		if err != nil {
			return IDs{}, err
		}
		v[i] = uint32(n)
	}
	return IDs{v[0], v[1], v[2], v[3]}, nil
}

func parseInts(s string) ([]int, error) {
	f := strings.Fields(s)
	out := make([]int, 0, len(f))
	for _, x := range f {
		n, err := strconv.Atoi(x)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func parseSigSet(s string) (SigSet, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("signal mask %q: want 16 hex digits", s)
	}
	n, err := strconv.ParseUint(s, 16, 64)
	return SigSet(n), err
}

var errESRCH = syscall.ESRCH
