package elfx

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
)

// Caps on what a file may make us read. A real libjvm.so is ~25 MiB with
// under 1 MiB of .rodata and a few hundred dynamic symbols; these leave
// two orders of magnitude of room and still bound a hostile file.
const (
	MaxFileSize      = 1 << 30
	maxROData        = 64 << 20
	maxDynSyms       = 1 << 20
	maxDynStrings    = 4096 // DT_NEEDED and friends
	maxVersionLits   = 128
	maxLiteralLen    = 96
	maxNeedleContext = 160
)

// ErrNotELF is returned for files that are not ELF at all.
var ErrNotELF = errors.New("not an ELF file")

// ErrMalformed wraps every other parse failure, including recovered panics.
var ErrMalformed = errors.New("malformed ELF")

// Symbol is a defined dynamic symbol.
type Symbol struct {
	Name  string
	Value uint64
	Size  uint64
}

// Info is what a probe learned about one file. It holds no file handle.
type Info struct {
	Machine string // "x86-64", "aarch64", ... (debug/elf's name without EM_)
	Class   int    // 32 or 64
	Type    string // "ET_DYN", "ET_EXEC"
	Interp  string // PT_INTERP, empty for shared libraries and static executables
	SONAME  string
	Needed  []string
	// Defined and Imported are sorted by name. Imported symbols are names
	// only; versions (malloc@GLIBC_2.2.5) are dropped.
	Defined  []Symbol
	Imported []string
	// VersionLiterals are the NUL-delimited strings in read-only data shaped
	// like a bare version ("3.0", "4.5", "3.0-2dba71f",
	// "5.3.0-0-g54eaed1d…", "17.0.15+6-Debian-1deb12u1"), in file order,
	// at most maxVersionLits of them.
	VersionLiterals []string
	// Needles maps each requested needle found in read-only data to the
	// whole NUL-delimited string that contains its first occurrence.
	Needles map[string]string
	// RunPath is DT_RUNPATH, or DT_RPATH where there is no RUNPATH, split
	// at ':' (entries may contain $ORIGIN).
	RunPath []string
	// VersionNeeds maps each needed library to the symbol versions the
	// file requires from it (GLIBC_2.34, GLIBCXX_3.4.29...).
	VersionNeeds map[string][]string
	// VersionDefs are the symbol versions this file defines.
	VersionDefs []string
	// Truncated names anything that hit a cap, so a caller can say
	// "unknown" rather than "absent".
	Truncated []string

	byAddrOnce sync.Once
	byAddr     []Symbol
}

// Defines reports whether name is a defined dynamic symbol.
func (i *Info) Defines(name string) bool {
	_, ok := i.Symbol(name)
	return ok
}

// Symbol returns the defined dynamic symbol called name.
func (i *Info) Symbol(name string) (Symbol, bool) {
	j := sort.Search(len(i.Defined), func(k int) bool { return i.Defined[k].Name >= name })
	if j < len(i.Defined) && i.Defined[j].Name == name {
		return i.Defined[j], true
	}
	return Symbol{}, false
}

// Imports reports whether name is an undefined (imported) dynamic symbol.
func (i *Info) Imports(name string) bool {
	j := sort.SearchStrings(i.Imported, name)
	return j < len(i.Imported) && i.Imported[j] == name
}

// NeedsPrefix returns the first DT_NEEDED entry starting with prefix.
func (i *Info) NeedsPrefix(prefix string) (string, bool) {
	for _, n := range i.Needed {
		if strings.HasPrefix(n, prefix) {
			return n, true
		}
	}
	return "", false
}

// Libc classifies the C library the file was built for, from its
// interpreter or its DT_NEEDED entries: "glibc", "musl", or "" when it
// names neither (a static binary, or a library with no libc dependency).
func (i *Info) Libc() string {
	switch {
	case strings.Contains(i.Interp, "ld-musl"):
		return "musl"
	case strings.Contains(i.Interp, "ld-linux"):
		return "glibc"
	}
	for _, n := range i.Needed {
		switch {
		case strings.HasPrefix(n, "libc.musl") || strings.HasPrefix(n, "ld-musl"):
			return "musl"
		case n == "libc.so.6" || strings.HasPrefix(n, "ld-linux"):
			return "glibc"
		case n == "libc.so":
			// musl's libc is called libc.so; glibc's is always libc.so.6.
			return "musl"
		}
	}
	return ""
}

// ProbeOptions selects the optional, costlier parts of a probe.
type ProbeOptions struct {
	// Needles are substrings to look for in read-only data.
	Needles []string
	// VersionsOnly reads the header, the dynamic section and the symbol
	// version definitions and needs, and nothing else (no symbols, no
	// read-only data): what a loadability check asks of libc, at a tenth
	// of the cost.
	VersionsOnly bool
}

// ProbeReader probes an ELF image. r must support ReadAt over size bytes.
func ProbeReader(r io.ReaderAt, size int64, opts ProbeOptions) (info *Info, err error) {
	defer func() {
		if p := recover(); p != nil {
			info, err = nil, fmt.Errorf("%w: debug/elf panicked: %v", ErrMalformed, p)
		}
	}()
	if size > MaxFileSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, size, MaxFileSize)
	}
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, ErrNotELF
	}
	// Every section must lie inside the file before debug/elf is allowed to
	// allocate a buffer of the size it claims.
	sr := io.NewSectionReader(r, 0, size)
	f, err := elf.NewFile(sr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Size > 0 && (s.Offset > uint64(size) || s.Size > uint64(size)-s.Offset) {
			return nil, fmt.Errorf("%w: section %q lies outside the file", ErrMalformed, s.Name)
		}
	}
	info = &Info{
		Machine: strings.TrimPrefix(f.Machine.String(), "EM_"),
		Type:    f.Type.String(),
	}
	switch f.Class {
	case elf.ELFCLASS32:
		info.Class = 32
	case elf.ELFCLASS64:
		info.Class = 64
	}
	info.Machine = machineName(f.Machine)
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			if p.Filesz > 4096 {
				return nil, fmt.Errorf("%w: PT_INTERP of %d bytes", ErrMalformed, p.Filesz)
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%w: PT_INTERP: %v", ErrMalformed, err)
			}
			info.Interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	if err := probeDynamic(f, info, opts.VersionsOnly); err != nil {
		return nil, err
	}
	if opts.VersionsOnly {
		return info, nil
	}
	if err := probeROData(f, info, opts); err != nil {
		return nil, err
	}
	return info, nil
}

func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_AARCH64:
		return "aarch64"
	case elf.EM_386:
		return "i386"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_RISCV:
		return "riscv"
	case elf.EM_PPC64:
		return "ppc64"
	case elf.EM_S390:
		return "s390"
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

func probeDynamic(f *elf.File, info *Info, versionsOnly bool) error {
	if ds := f.SectionByType(elf.SHT_DYNAMIC); ds == nil {
		return nil // static executable
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		return fmt.Errorf("%w: DT_NEEDED: %v", ErrMalformed, err)
	}
	if len(needed) > maxDynStrings {
		return fmt.Errorf("%w: %d DT_NEEDED entries", ErrMalformed, len(needed))
	}
	info.Needed = needed
	if so, err := f.DynString(elf.DT_SONAME); err == nil && len(so) > 0 {
		info.SONAME = so[0]
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		if rp, err := f.DynString(tag); err == nil && len(rp) > 0 {
			for _, e := range rp {
				info.RunPath = append(info.RunPath, strings.Split(e, ":")...)
			}
			break
		}
	}
	if len(info.RunPath) > maxDynStrings {
		return fmt.Errorf("%w: %d run-path entries", ErrMalformed, len(info.RunPath))
	}
	// Symbol versioning (SHT_GNU_verneed, SHT_GNU_verdef): what the loader
	// checks before it runs a line of the library.
	if needs, err := f.DynamicVersionNeeds(); err == nil {
		for _, n := range needs {
			if len(info.VersionNeeds) >= maxDynStrings {
				break
			}
			if info.VersionNeeds == nil {
				info.VersionNeeds = map[string][]string{}
			}
			for _, d := range n.Needs {
				info.VersionNeeds[n.Name] = append(info.VersionNeeds[n.Name], d.Dep)
			}
		}
	}
	if defs, err := f.DynamicVersions(); err == nil {
		for _, d := range defs {
			if len(info.VersionDefs) >= maxDynSyms {
				break
			}
			info.VersionDefs = append(info.VersionDefs, d.Name)
		}
	}
	if versionsOnly {
		return nil
	}
	if s := f.SectionByType(elf.SHT_DYNSYM); s != nil {
		if s.Entsize != 0 && s.Size/s.Entsize > maxDynSyms {
			return fmt.Errorf("%w: %d dynamic symbols", ErrMalformed, s.Size/s.Entsize)
		}
	}
	syms, err := f.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("%w: dynamic symbols: %v", ErrMalformed, err)
	}
	for _, s := range syms {
		if s.Name == "" {
			continue
		}
		if s.Section == elf.SHN_UNDEF {
			info.Imported = append(info.Imported, s.Name)
			continue
		}
		info.Defined = append(info.Defined, Symbol{Name: s.Name, Value: s.Value, Size: s.Size})
	}
	sort.Slice(info.Defined, func(a, b int) bool { return info.Defined[a].Name < info.Defined[b].Name })
	sort.Strings(info.Imported)
	info.Imported = compactStrings(info.Imported)
	return nil
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// probeROData scans allocated, read-only, non-executable PROGBITS sections
// (.rodata and friends) for version literals and needles.
func probeROData(f *elf.File, info *Info, opts ProbeOptions) error {
	var budget int64 = maxROData
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&(elf.SHF_WRITE|elf.SHF_EXECINSTR) != 0 {
			continue
		}
		if int64(s.Size) > budget {
			info.Truncated = append(info.Truncated, "read-only data over "+fmt.Sprint(maxROData>>20)+" MiB")
			break
		}
		budget -= int64(s.Size)
		data, err := s.Data()
		if err != nil {
			return fmt.Errorf("%w: section %s: %v", ErrMalformed, s.Name, err)
		}
		scanStrings(data, info, opts.Needles)
	}
	return nil
}

func scanStrings(data []byte, info *Info, needles []string) {
	for _, n := range needles {
		if _, done := info.Needles[n]; done || n == "" {
			continue
		}
		if i := bytes.Index(data, []byte(n)); i >= 0 {
			if info.Needles == nil {
				info.Needles = map[string]string{}
			}
			info.Needles[n] = enclosingString(data, i, len(n))
		}
	}
	for len(data) > 0 {
		end := bytes.IndexByte(data, 0)
		if end < 0 {
			end = len(data)
		}
		s := data[:end]
		if len(s) >= 3 && len(s) <= maxLiteralLen && s[0] >= '0' && s[0] <= '9' && IsVersionLiteral(s) {
			if len(info.VersionLiterals) >= maxVersionLits {
				info.Truncated = append(info.Truncated, "version literals")
				return
			}
			info.VersionLiterals = append(info.VersionLiterals, string(s))
		}
		if end == len(data) {
			break
		}
		data = data[end+1:]
	}
}

// enclosingString widens [i, i+n) to the NUL-delimited string around it,
// capped so a needle inside a huge blob yields a bounded excerpt.
func enclosingString(data []byte, i, n int) string {
	start := bytes.LastIndexByte(data[:i], 0) + 1
	if i-start > maxNeedleContext {
		start = i - maxNeedleContext
	}
	end := i + n
	if j := bytes.IndexByte(data[end:], 0); j >= 0 {
		end += j
	} else {
		end = len(data)
	}
	if end-(i+n) > maxNeedleContext {
		end = i + n + maxNeedleContext
	}
	return string(data[start:end])
}

// IsVersionLiteral reports whether s has the shape of a bare version:
// digits '.' digits (up to four dot-separated numbers), then optionally a
// suffix introduced by '-', '+' or '_' made of letters, digits and
// ".+-_". Examples: 3.0, 4.5, 3.0-2dba71f, 17.0.15+6-Debian-1deb12u1,
// 1.8.0_412-b08, 5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c.
func IsVersionLiteral(s []byte) bool {
	i, nums := 0, 0
	for {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start || i-start > 4 {
			return false
		}
		nums++
		if i < len(s) && s[i] == '.' && nums < 4 {
			i++
			continue
		}
		break
	}
	if nums < 2 {
		return false
	}
	if i == len(s) {
		return true
	}
	if s[i] != '-' && s[i] != '+' && s[i] != '_' || i+1 == len(s) {
		return false
	}
	for _, c := range s[i+1:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '+' || c == '_') {
			return false
		}
	}
	return true
}

// ProbeFile opens and probes path, uncached.
func ProbeFile(path string, opts ProbeOptions) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	info, err := ProbeReader(f, st.Size(), opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// SymbolAt returns the defined dynamic symbol containing addr (an address
// relative to the file's load base), or the nearest one below it when
// sizes are missing. Used to symbolise program counters and data
// addresses from a live process.
func (i *Info) SymbolAt(addr uint64) (Symbol, bool) {
	i.byAddrOnce.Do(func() {
		i.byAddr = make([]Symbol, 0, len(i.Defined))
		for _, s := range i.Defined {
			if s.Value != 0 {
				i.byAddr = append(i.byAddr, s)
			}
		}
		sort.Slice(i.byAddr, func(a, b int) bool { return i.byAddr[a].Value < i.byAddr[b].Value })
	})
	j := sort.Search(len(i.byAddr), func(k int) bool { return i.byAddr[k].Value > addr }) - 1
	if j < 0 {
		return Symbol{}, false
	}
	s := i.byAddr[j]
	if s.Size != 0 && addr >= s.Value+s.Size {
		// Inside a gap after a sized symbol: a local function we cannot name.
		return s, false
	}
	return s, true
}
