package diagnose

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/proc"
)

// Callers are unwound, not guessed: from the two registers the kernel
// reports for a thread blocked in a system call (/proc/<tid>/syscall: the
// stack pointer and the program counter), each frame's call frame
// information (the library's .eh_frame, found through .eh_frame_hdr's
// sorted table, interpreted by delve's DWARF frame package) says where the
// return address and the caller's saved registers are. A frame is listed
// only when its rules could be followed with registers that are known;
// the walk stops, and says why, at the first frame that needs one that is
// not (a frame-pointer frame whose rbp no callee saved), at JIT code
// (Java frames have no .eh_frame), or at a library without tables.
// Nothing is stopped or signalled: the stack is read through
// /proc/<pid>/mem while the thread sleeps in the kernel.

// Limits on what a hostile library or stack can make the walk read.
const (
	maxUnwindFrames = 48
	maxFDECount     = 1 << 20 // libjvm has about 43,000
	maxEntryBytes   = 64 << 10
)

// DWARF register numbers the walk tracks.
type unwindRegs struct {
	sp uint64
	// calleeSaved survive calls unless a frame's rules say otherwise.
	calleeSaved []uint64
}

// The registers of each arch are static data, chosen by a switch: a map
// would be built at the start of every command, as the arch tables would.
var (
	unwindRegsX8664   = unwindRegs{sp: 7, calleeSaved: []uint64{3, 6, 12, 13, 14, 15}}                        // rbx rbp r12-r15
	unwindRegsAArch64 = unwindRegs{sp: 31, calleeSaved: []uint64{19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29}} // x19-x29
)

// unwindRegsOf returns the registers the walk tracks on the named arch.
func unwindRegsOf(arch string) (unwindRegs, bool) {
	switch arch {
	case archX8664.name:
		return unwindRegsX8664, true
	case archAArch64.name:
		return unwindRegsAArch64, true
	}
	return unwindRegs{}, false
}

// ehTable is one library's .eh_frame_hdr search table, read once per
// report from the mapped file (device and inode checked).
type ehTable struct {
	f       *os.File
	bias    uint64 // load address minus link-time address
	hdrAddr uint64 // link-time address of .eh_frame_hdr
	loads   []elf.ProgHeader
	table   []ehEntry // sorted by pc
	err     error
}

type ehEntry struct{ pc, fde uint64 } // link-time addresses

// unwind walks the stack of a thread stopped at pc with stack pointer sp.
// It returns the return addresses it could vouch for, innermost first,
// and why it stopped (empty when it reached the outermost frame).
func (s *symbolizer) unwind(pc, sp uint64) (callers []uint64, stop string) {
	regs, ok := unwindRegsOf(s.arch.name)
	if !ok || s.mem == nil {
		return nil, "no unwinder for " + s.arch.name
	}
	known := map[uint64]uint64{regs.sp: sp}
	for i := 0; i < maxUnwindFrames; i++ {
		ctx, stop := s.frameRules(pc, i > 0)
		if ctx == nil {
			return callers, stop
		}
		base, ok := known[ctx.CFA.Reg]
		if !ok {
			return callers, fmt.Sprintf("%s: its frame is addressed from register %d, which no callee saved", s.describe(pc), ctx.CFA.Reg)
		}
		cfa := uint64(int64(base) + ctx.CFA.Offset)
		next, stop := s.callerRegisters(pc, ctx, cfa, known, regs.calleeSaved)
		if next == nil {
			return callers, stop
		}
		if rule, ok := ctx.Regs[ctx.RetAddrReg]; ok && rule.Rule == frame.RuleUndefined {
			return callers, "" // the outermost frame says so (_start, clone)
		}
		ra, ok := next[ctx.RetAddrReg]
		if !ok {
			return callers, fmt.Sprintf("%s: its return address is not saved where its rules say", s.describe(pc))
		}
		if ra == 0 {
			return callers, "" // the outermost frame (thread start)
		}
		if cfa <= known[regs.sp] {
			return callers, fmt.Sprintf("%s: the stack does not grow towards its callers", s.describe(pc))
		}
		next[regs.sp] = cfa
		delete(next, ctx.RetAddrReg)
		callers = append(callers, ra)
		pc, known = ra, next
	}
	return callers, fmt.Sprintf("stopped after %d frames", maxUnwindFrames)
}

// frameRules are the unwind rules of the frame executing at pc, from the
// mapped file's .eh_frame; nil, and why the unwinding stops there, when
// there are none it can follow. isCaller says pc is a return address.
func (s *symbolizer) frameRules(pc uint64, isCaller bool) (*frame.FrameContext, string) {
	m := s.mapping(pc)
	if m == nil || !m.IsFile() {
		return nil, fmt.Sprintf("%s has no unwind tables (JIT or generated code)", s.describe(pc))
	}
	t := s.ehTable(m)
	if t.err != nil {
		return nil, fmt.Sprintf("%s: %v", s.describe(pc), t.err)
	}
	// A return address may be one past the end of a call that never
	// returns: its caller's rules are those of the call instruction.
	at := pc - t.bias
	if isCaller {
		at--
	}
	ctx, err := t.frameAt(at, s.arch)
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", s.describe(pc), err)
	}
	if ctx.CFA.Rule != frame.RuleCFA {
		return nil, fmt.Sprintf("%s: its frame address is a DWARF expression", s.describe(pc))
	}
	return ctx, ""
}

// callerRegisters are the registers known in the caller of the frame at
// pc, whose frame address is cfa: the callee-saved ones known here, as
// the frame's rules restore or move them (a saved one is read from the
// stack). Registers the rules leave undefined are not known. nil, and
// why, when a saved register cannot be read.
func (s *symbolizer) callerRegisters(pc uint64, ctx *frame.FrameContext, cfa uint64, known map[uint64]uint64, calleeSaved []uint64) (map[uint64]uint64, string) {
	next := map[uint64]uint64{}
	for _, r := range calleeSaved {
		if v, ok := known[r]; ok {
			next[r] = v
		}
	}
	for r, rule := range ctx.Regs {
		switch rule.Rule {
		case frame.RuleOffset:
			v, err := s.readWord(uint64(int64(cfa) + rule.Offset))
			if err != nil {
				return nil, fmt.Sprintf("%s: reading its saved register %d: %v", s.describe(pc), r, err)
			}
			next[r] = v
		case frame.RuleValOffset:
			next[r] = uint64(int64(cfa) + rule.Offset)
		case frame.RuleSameVal:
			if v, ok := known[r]; ok {
				next[r] = v
			}
		case frame.RuleRegister:
			if v, ok := known[rule.Reg]; ok {
				next[r] = v
			} else {
				delete(next, r)
			}
		default:
			delete(next, r)
		}
	}
	return next, ""
}

func (s *symbolizer) readWord(addr uint64) (uint64, error) {
	b := make([]byte, s.arch.ptrSize)
	if _, err := s.mem.ReadAt(b, int64(addr)); err != nil {
		return 0, err
	}
	return s.arch.word(b), nil
}

// ehTable opens m's file and reads its .eh_frame_hdr table, once per
// report.
func (s *symbolizer) ehTable(m *proc.Mapping) *ehTable {
	if t, ok := s.tables[m.Path]; ok {
		return t
	}
	t := &ehTable{}
	s.tables[m.Path] = t
	f, _, err := elfx.OpenMapped(elfx.MappedFile{ProcDir: s.p.Path(), Start: m.Start, End: m.End, Path: m.Path, DevMajor: m.DevMajor, DevMinor: m.DevMinor, Inode: m.Inode})
	if err != nil {
		t.err = err
		return t
	}
	t.f = f
	t.err = t.load(f, s.bases[m.Path], s.arch)
	return t
}

func (t *ehTable) close() {
	if t.f != nil {
		t.f.Close()
	}
}

// load reads the program headers and the search table. The table must be
// the form every linker writes (DW_EH_PE_datarel|sdata4 pairs); others
// are refused rather than guessed at.
func (t *ehTable) load(f *os.File, base uint64, a *arch) (err error) {
	defer func() {
		if r := recover(); r != nil { // debug/elf on a hostile file
			err = fmt.Errorf("malformed ELF: %v", r)
		}
	}()
	ef, err := elf.NewFile(f)
	if err != nil {
		return err
	}
	var hdr *elf.Prog
	firstLoad := true
	for _, p := range ef.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			if firstLoad {
				// The mapping at file offset 0 starts where the first
				// segment's file offset 0 would be.
				t.bias = base - (p.Vaddr - p.Off)
				firstLoad = false
			}
			t.loads = append(t.loads, p.ProgHeader)
		case elf.PT_GNU_EH_FRAME:
			hdr = p
		}
	}
	if ef.Type == elf.ET_EXEC {
		t.bias = 0
	}
	if hdr == nil {
		return errors.New("no .eh_frame_hdr")
	}
	t.hdrAddr = hdr.Vaddr
	var head [12]byte
	if _, err := hdr.ReadAt(head[:], 0); err != nil {
		return fmt.Errorf(".eh_frame_hdr: %w", err)
	}
	const pcrelSdata4, udata4, datarelSdata4 = 0x1b, 0x03, 0x3b
	if head[0] != 1 || head[1] != pcrelSdata4 || head[2] != udata4 || head[3] != datarelSdata4 {
		return fmt.Errorf(".eh_frame_hdr: version %d, encodings %#x %#x %#x not read", head[0], head[1], head[2], head[3])
	}
	n := binary.LittleEndian.Uint32(head[8:12])
	if a.order == binary.BigEndian {
		n = binary.BigEndian.Uint32(head[8:12])
	}
	if n > maxFDECount || uint64(n)*8 > hdr.Filesz {
		return fmt.Errorf(".eh_frame_hdr: %d entries in %d bytes", n, hdr.Filesz)
	}
	raw := make([]byte, int(n)*8)
	if _, err := hdr.ReadAt(raw, 12); err != nil {
		return fmt.Errorf(".eh_frame_hdr table: %w", err)
	}
	t.table = make([]ehEntry, n)
	for i := range t.table {
		pc := int32(a.order.Uint32(raw[i*8:]))
		fde := int32(a.order.Uint32(raw[i*8+4:]))
		t.table[i] = ehEntry{pc: uint64(int64(t.hdrAddr) + int64(pc)), fde: uint64(int64(t.hdrAddr) + int64(fde))}
	}
	return nil
}

// read reads n bytes at a link-time address from the file.
func (t *ehTable) read(addr uint64, n int) ([]byte, error) {
	for _, p := range t.loads {
		if addr >= p.Vaddr && addr+uint64(n) <= p.Vaddr+p.Filesz {
			b := make([]byte, n)
			_, err := t.f.ReadAt(b, int64(p.Off+addr-p.Vaddr))
			return b, err
		}
	}
	return nil, fmt.Errorf("address %#x is in no loaded segment", addr)
}

// entry reads the length-prefixed CIE or FDE at addr (32-bit DWARF only).
func (t *ehTable) entry(addr uint64, order binary.ByteOrder) ([]byte, error) {
	l, err := t.read(addr, 4)
	if err != nil {
		return nil, err
	}
	n := order.Uint32(l)
	if n == 0xffffffff || n < 8 || n > maxEntryBytes {
		return nil, fmt.Errorf("entry at %#x: length %#x", addr, n)
	}
	return t.read(addr, int(n)+4)
}

// frameAt returns the unwind rules in force at the link-time address pc.
func (t *ehTable) frameAt(pc uint64, a *arch) (ctx *frame.FrameContext, err error) {
	i := sort.Search(len(t.table), func(i int) bool { return t.table[i].pc > pc }) - 1
	if i < 0 {
		return nil, errors.New("no unwind entry covers it")
	}
	fdeAddr := t.table[i].fde
	fde, err := t.entry(fdeAddr, a.order)
	if err != nil {
		return nil, err
	}
	cieAddr := fdeAddr + 4 - uint64(a.order.Uint32(fde[4:8]))
	cie, err := t.entry(cieAddr, a.order)
	if err != nil {
		return nil, err
	}
	// The FDE and its CIE, side by side, parsed as a two-entry .eh_frame
	// placed so that the FDE's pc-relative addresses decode as in the
	// file: the CIE pointer is rewritten to point back to offset 0.
	buf := make([]byte, 0, len(cie)+len(fde))
	buf = append(buf, cie...)
	buf = append(buf, fde...)
	a.order.PutUint32(buf[len(cie)+4:], uint32(len(cie)+4))
	defer func() {
		if r := recover(); r != nil { // frame programs are the library's data
			ctx, err = nil, fmt.Errorf("malformed unwind entry at %#x: %v", fdeAddr, r)
		}
	}()
	fdes, err := frame.Parse(buf, a.order, 0, a.ptrSize, fdeAddr-uint64(len(cie)))
	if err != nil {
		return nil, err
	}
	if len(fdes) != 1 || !fdes[0].Cover(pc) {
		return nil, errors.New("no unwind entry covers it")
	}
	return fdes[0].EstablishFrame(pc)
}
