package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Mapping is one line of /proc/<pid>/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // e.g. "r-xp"
	Offset     uint64
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
	// Path is the pathname column with spaces kept and a trailing
	// " (deleted)" removed; pseudo-paths such as "[vdso]" and memfd names
	// ("/memfd:name") are kept as printed.
	Path    string
	Deleted bool
}

// IsFile reports whether the mapping is backed by a file on a device
// (not anonymous, not a kernel pseudo-mapping, not a memfd).
func (m *Mapping) IsFile() bool {
	return m.Inode != 0 && len(m.Path) > 0 && m.Path[0] == '/' && !bytes.HasPrefix([]byte(m.Path), []byte("/memfd:"))
}

// Executable reports whether the mapping is executable.
func (m *Mapping) Executable() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// ErrStop may be returned by a WalkMaps callback to end the walk early
// without an error.
var ErrStop = errors.New("stop")

// maxMapsLine bounds one maps line: 4 KiB PATH_MAX plus the fixed columns.
const maxMapsLine = 8 << 10

// WalkMaps streams /proc/<pid>/maps. keep, if not nil, sees the raw path
// column before anything is allocated for the line; returning false skips
// it. fn receives a Mapping that is reused between calls: copy it to keep it.
func (p Proc) WalkMaps(keep func(path []byte) bool, fn func(*Mapping) error) error {
	f, err := openFile(p.Path("maps"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := ScanMaps(f, keep, fn); err != nil {
		return fmt.Errorf("%s: %w", p.Path("maps"), err)
	}
	return nil
}

// ScanMaps parses maps-format text from r; see WalkMaps.
func ScanMaps(r io.Reader, keep func(path []byte) bool, fn func(*Mapping) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMapsLine)
	var m Mapping
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		path, err := parseMapsLine(line, &m)
		if err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		if keep != nil && !keep(path) {
			continue
		}
		m.Deleted = false
		if bytes.HasSuffix(path, []byte(" (deleted)")) {
			path = path[:len(path)-len(" (deleted)")]
			m.Deleted = true
		}
		m.Path = string(path)
		if err := fn(&m); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return sc.Err()
}

// parseMapsLine fills m's fixed columns and returns the raw path column.
// It allocates nothing except the Perms string, which is interned.
func parseMapsLine(line []byte, m *Mapping) ([]byte, error) {
	var ok bool
	var field []byte
	field, line = nextField(line)
	dash := bytes.IndexByte(field, '-')
	if dash < 0 {
		return nil, fmt.Errorf("bad address range %q", field)
	}
	if m.Start, ok = parseHex(field[:dash]); !ok {
		return nil, fmt.Errorf("bad start address %q", field)
	}
	if m.End, ok = parseHex(field[dash+1:]); !ok {
		return nil, fmt.Errorf("bad end address %q", field)
	}
	field, line = nextField(line)
	if len(field) != 4 {
		return nil, fmt.Errorf("bad perms %q", field)
	}
	m.Perms = internPerms(field)
	field, line = nextField(line)
	if m.Offset, ok = parseHex(field); !ok {
		return nil, fmt.Errorf("bad offset %q", field)
	}
	field, line = nextField(line)
	colon := bytes.IndexByte(field, ':')
	if colon < 0 {
		return nil, fmt.Errorf("bad device %q", field)
	}
	maj, ok1 := parseHex(field[:colon])
	min, ok2 := parseHex(field[colon+1:])
	if !ok1 || !ok2 || maj > 0xffffffff || min > 0xffffffff {
		return nil, fmt.Errorf("bad device %q", field)
	}
	m.DevMajor, m.DevMinor = uint32(maj), uint32(min)
	field, line = nextField(line)
	if m.Inode, ok = parseDec(field); !ok {
		return nil, fmt.Errorf("bad inode %q", field)
	}
	// The path is everything after the padding; it may contain spaces.
	return bytes.TrimLeft(line, " "), nil
}

func nextField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " ")
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(c)
	}
	return n, true
}

func parseDec(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

var commonPerms = []string{"r--p", "r-xp", "rw-p", "---p", "rwxp", "r--s", "rw-s", "r-xs", "--xp", "-w-p", "-wxp", "rwxs", "---s"}

func internPerms(b []byte) string {
	for _, p := range commonPerms {
		if string(b) == p {
			return p
		}
	}
	return string(b)
}
