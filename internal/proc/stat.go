package proc

import (
	"bytes"
	"fmt"
	"strconv"
)

// Stat is the subset of /proc/<pid>/stat safeattach reads.
type Stat struct {
	State byte
	PPid  int
	// StartTime is field 22: clock ticks after boot at which the process
	// started. (pid, StartTime) names one process for the life of the boot,
	// even after the pid is recycled.
	StartTime uint64
	// UTime and STime are fields 14 and 15, in clock ticks.
	UTime, STime uint64
}

// Stat reads /proc/<pid>/stat.
func (p Proc) Stat() (*Stat, error) {
	data, err := readCapped(p.Path("stat"), 4096)
	if err != nil {
		return nil, err
	}
	st, err := parseStat(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path("stat"), err)
	}
	return st, nil
}

// parseStat splits after the last ')': comm is chosen by the process and
// may contain spaces and parentheses.
func parseStat(data []byte) (*Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("no command terminator")
	}
	f := bytes.Fields(data[i+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return nil, fmt.Errorf("want at least 22 fields, got %d", len(f)+2)
	}
	if len(f[0]) != 1 {
		return nil, fmt.Errorf("bad state %q", f[0])
	}
	st := &Stat{State: f[0][0]}
	var err error
	if st.PPid, err = strconv.Atoi(string(f[1])); err != nil {
		return nil, fmt.Errorf("ppid: %w", err)
	}
	if st.UTime, err = strconv.ParseUint(string(f[11]), 10, 64); err != nil {
		return nil, fmt.Errorf("utime: %w", err)
	}
	if st.STime, err = strconv.ParseUint(string(f[12]), 10, 64); err != nil {
		return nil, fmt.Errorf("stime: %w", err)
	}
	if st.StartTime, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return nil, fmt.Errorf("starttime: %w", err)
	}
	return st, nil
}

// StateName spells out a State letter of /proc/<pid>/stat or status.
func StateName(c byte) string {
	switch c {
	case 'R':
		return "running"
	case 'S':
		return "sleeping"
	case 'D':
		return "disk-sleep"
	case 'T':
		return "stopped"
	case 't':
		return "traced"
	case 'Z':
		return "zombie"
	case 'X', 'x':
		return "dead"
	case 'I':
		return "idle"
	}
	return string(c)
}
