package diagnose

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/proc"
)

// symbolizer maps addresses to "library (symbol+off)" using the mapped
// ELF files' dynamic symbols.
type symbolizer struct {
	tables map[string]*ehTable
	p      proc.Proc
	maps   []proc.Mapping
	bases  map[string]uint64
	infos  map[string]*elfx.Info
	failed map[string]bool
	mem    *os.File
	arch   *arch
	cache  *elfx.Cache
}

func newSymbolizer(p proc.Proc, a *arch, cache *elfx.Cache) *symbolizer {
	s := &symbolizer{p: p, arch: a, cache: cache, bases: map[string]uint64{}, infos: map[string]*elfx.Info{}, failed: map[string]bool{}, tables: map[string]*ehTable{}}
	_ = p.WalkMaps(nil, func(m *proc.Mapping) error {
		if m.IsFile() {
			if _, ok := s.bases[m.Path]; !ok && m.Offset == 0 {
				s.bases[m.Path] = m.Start
			}
		}
		s.maps = append(s.maps, *m)
		return nil
	})
	s.mem, _ = os.Open(p.Path("mem"))
	return s
}

// close releases /proc/<pid>/mem: a daemon makes many reports.
func (s *symbolizer) close() {
	if s.mem != nil {
		s.mem.Close()
	}
	for _, t := range s.tables {
		t.close()
	}
}

func (s *symbolizer) mapping(addr uint64) *proc.Mapping {
	i := sort.Search(len(s.maps), func(k int) bool { return s.maps[k].End > addr })
	if i < len(s.maps) && s.maps[i].Start <= addr {
		return &s.maps[i]
	}
	return nil
}

func (s *symbolizer) info(m *proc.Mapping) *elfx.Info {
	if i, ok := s.infos[m.Path]; ok || s.failed[m.Path] {
		return i
	}
	f, _, err := elfx.OpenMapped(elfx.MappedFile{ProcDir: s.p.Path(), Start: m.Start, End: m.End, Path: m.Path, DevMajor: m.DevMajor, DevMinor: m.DevMinor, Inode: m.Inode})
	if err != nil {
		s.failed[m.Path] = true
		return nil
	}
	defer f.Close()
	info, _, err := s.cache.Probe(f, elfx.ProbeOptions{})
	if err != nil {
		s.failed[m.Path] = true
		return nil
	}
	s.infos[m.Path] = info
	return info
}

// describe names a code address, in printable text: the target's user
// names the files it maps and the symbols in them.
func (s *symbolizer) describe(addr uint64) string {
	m := s.mapping(addr)
	if m == nil {
		return fmt.Sprintf("%#x (unmapped)", addr)
	}
	if !m.IsFile() {
		name := m.Path
		if name == "" {
			name = "anonymous memory (JIT code?)"
		}
		return fmt.Sprintf("%#x in %s", addr, printable.Line(name))
	}
	lib := printable.Line(filepath.Base(m.Path))
	base := s.bases[m.Path]
	if info := s.info(m); info != nil {
		rel := addr - base
		if info.Type == "ET_EXEC" {
			rel = addr
		}
		if sym, ok := info.SymbolAt(rel); ok {
			return fmt.Sprintf("%s (%s+%#x)", lib, printable.Line(sym.Name), rel-sym.Value)
		}
	}
	return fmt.Sprintf("%s+%#x", lib, addr-base)
}

// describeData names a data address, such as a lock.
func (s *symbolizer) describeData(addr uint64) string {
	m := s.mapping(addr)
	if m == nil {
		return "unmapped"
	}
	if m.IsFile() {
		return s.describe(addr)
	}
	if m.Path != "" {
		return printable.Line(m.Path)
	}
	// Anonymous: a heap or a thread's data. Say which library's writable
	// data precedes it, if adjacent (.bss is often mapped anonymous).
	for i := range s.maps {
		if &s.maps[i] == m && i > 0 && s.maps[i-1].IsFile() && s.maps[i-1].End == m.Start {
			return "the .bss of " + printable.Line(filepath.Base(s.maps[i-1].Path))
		}
	}
	return "anonymous memory"
}

// scanStack reads the top of a stack and keeps words that point into
// executable file mappings: probable return addresses.
func (s *symbolizer) scanStack(sp uint64, size, maxCallers int) []string {
	if s.mem == nil || sp == 0 {
		return nil
	}
	buf := make([]byte, size)
	n, err := s.mem.ReadAt(buf, int64(sp))
	if n == 0 && err != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	w := s.arch.ptrSize
	for off := 0; off+w <= n && len(out) < maxCallers; off += w {
		v := s.arch.word(buf[off:])
		m := s.mapping(v)
		if m == nil || !m.Executable() || !m.IsFile() {
			continue
		}
		d := s.describe(v)
		// A word equal to a symbol's start is a function pointer, not a
		// return address (which points after a call instruction).
		if strings.HasSuffix(d, "+0x0)") {
			continue
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
