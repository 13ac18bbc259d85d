package preflight

import (
	"fmt"
	"strconv"
)

// NamespaceID identifies a namespace the way the kernel does: the device
// and inode of /proc/<pid>/ns/<kind>.
type NamespaceID struct {
	Dev   uint64 `json:"dev"`
	Inode uint64 `json:"inode"`
}

// IsZero reports whether the ID was never read.
func (n NamespaceID) IsZero() bool { return n == NamespaceID{} }

func (n NamespaceID) String() string { return fmt.Sprintf("%d:%d", n.Dev, n.Inode) }

// parseEnum accepts b only if it is one of valid, or empty (the zero
// value: not applicable, as for the state of an absent allocator): a
// report read back from JSON (a golden file, another tool's output)
// cannot carry a state that no code path handles.
func parseEnum[T ~string](what string, b []byte, valid ...T) (T, error) {
	if len(b) == 0 {
		return "", nil
	}
	for _, v := range valid {
		if string(b) == string(v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s %q: want one of %v", what, b, valid)
}

func (v Tristate) String() string               { return string(v) }
func (v Tristate) MarshalText() ([]byte, error) { return []byte(v), nil }
func (v ProcessState) String() string           { return string(v) }
func (v ProcessState) MarshalText() ([]byte, error) {
	return []byte(v), nil
}
func (v JVMKind) String() string                 { return string(v) }
func (v JVMKind) MarshalText() ([]byte, error)   { return []byte(v), nil }
func (v Via) String() string                     { return string(v) }
func (v Via) MarshalText() ([]byte, error)       { return []byte(v), nil }
func (v ProfState) String() string               { return string(v) }
func (v ProfState) MarshalText() ([]byte, error) { return []byte(v), nil }
func (v TcmallocFlavor) String() string          { return string(v) }
func (v Role) String() string                    { return string(v) }
func (v Role) MarshalText() ([]byte, error)      { return []byte(v), nil }
func (v AgentKind) String() string               { return string(v) }
func (v AgentKind) MarshalText() ([]byte, error) { return []byte(v), nil }
func (v TcmallocFlavor) MarshalText() ([]byte, error) {
	return []byte(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, accepting only the
// defined values.
func (v *Tristate) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("tristate", b, Yes, No, Unknown)
	return err
}

// UnmarshalText accepts only the defined process states.
func (v *ProcessState) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("process state", b, StateRunning, StateSleeping, StateDiskSleep, StateStopped, StateTraced, StateZombie, StateDead, StateIdle)
	return err
}

// UnmarshalText accepts only the defined JVM kinds.
func (v *JVMKind) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("JVM kind", b, JVMHotSpot, JVMOpenJ9, JVMNone)
	return err
}

// UnmarshalText accepts only the defined ways in.
func (v *Via) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("via", b, ViaMapped, ViaLDPreload, ViaLDSoPreload, ViaStatic)
	return err
}

// UnmarshalText accepts only the defined profiling states.
func (v *ProfState) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("profiling state", b, ProfActive, ProfIdle, ProfOff, ProfUnknown)
	return err
}

// UnmarshalText accepts only the defined flavours.
func (v *TcmallocFlavor) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("tcmalloc flavor", b, TcmallocFull, TcmallocMinimal, TcmallocUnknown)
	return err
}

// UnmarshalText accepts only the defined roles.
func (v *Role) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("role", b, RoleJVM, RoleAllocator, RoleUnwinder, RoleAsyncProfiler, RoleProfiler)
	return err
}

// UnmarshalText accepts only the defined agent kinds.
func (v *AgentKind) UnmarshalText(b []byte) (err error) {
	*v, err = parseEnum("agent kind", b, AgentAsyncProfiler, AgentDatadog, AgentJVMTI, AgentNotAgent)
	return err
}

// FileMode is a file's permission bits, written as an octal string
// ("0755") in JSON, as people read them.
type FileMode uint32

func (m FileMode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// MarshalText writes the octal form.
func (m FileMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads an octal string of at most 12 bits.
func (m *FileMode) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("file mode %q: want octal permission bits such as 0644", b)
	}
	*m = FileMode(v)
	return nil
}
