package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// PerfData is what safeattach reads from a HotSpot JVM's hsperfdata file
// (/tmp/hsperfdata_<user>/<nspid> in its root): the performance counters
// the JVM keeps in shared memory, including the effective VM arguments
// and flags that the command line cannot show (-XX:Flags= files,
// -XX:VMOptionsFile=, @argfiles, options set by a launcher).
type PerfData struct {
	// Strings are the string-valued counters by name: java.rt.vmArgs,
	// java.rt.vmFlags, sun.rt.javaCommand, java.property.java.vm.version...
	Strings map[string]string
	// Longs are the scalar counters by name: sun.rt.createVmEndTime
	// (non-zero once the VM finished initialising), sun.os.hrt.ticks...
	Longs map[string]int64
}

// The PerfData layout (src/hotspot/share/runtime/perfMemory.hpp):
//
//	prologue: magic u4 (CA FE C0 C0 in file order), byte_order u1
//	          (0 big, 1 little), major u1, minor u1, accessible u1,
//	          used u4, overflow u4, mod_time_stamp u8, entry_offset u4,
//	          num_entries u4                                    — 32 bytes
//	entry:    entry_length u4, name_offset u4, vector_length u4,
//	          data_type u1 ('B' byte array, 'J' long), flags u1,
//	          data_units u1, data_variability u1, data_offset u4 — then
//	          the NUL-terminated name and the data, inside entry_length.
//
// Version 2.0 has been the format since JDK 6 and is still JDK 25's. The
// file is PerfDataMemorySize (32 KiB by default; 64 KiB at most in the
// JVMs seen) and the counters a caller polls come first: JDK 17 writes
// sun.rt.createVmBeginTime, createVmEndTime and vmInitDoneTime as its
// entries 7 to 9, within the first 600 bytes.
const (
	perfMagic        = 0xcafec0c0
	perfPrologueSize = 32
	perfEntryHeader  = 20
	maxPerfEntries   = 1 << 16
	maxPerfString    = 64 << 10
)

// Bounds of PerfDataLong, which is polled: at most this much of the
// file is read, and at most this many entries are looked at, whatever
// the file (the target's, which its user may replace) holds.
const (
	MaxPerfDataScan    = 128 << 10
	maxPerfScanEntries = 4096
)

// perfPrologue checks an image's prologue and returns its byte order,
// the first entry's offset and the number of entries.
func perfPrologue(b []byte) (order binary.ByteOrder, off, n int, err error) {
	if len(b) < perfPrologueSize {
		return nil, 0, 0, errors.New("hsperfdata: shorter than its prologue")
	}
	if binary.BigEndian.Uint32(b) != perfMagic {
		return nil, 0, 0, errors.New("hsperfdata: bad magic")
	}
	order = binary.BigEndian
	if b[4] == 1 {
		order = binary.LittleEndian
	}
	if b[5] != 2 {
		return nil, 0, 0, fmt.Errorf("hsperfdata: version %d.%d not supported", b[5], b[6])
	}
	off = int(order.Uint32(b[24:]))
	n = int(order.Uint32(b[28:]))
	if n > maxPerfEntries {
		return nil, 0, 0, fmt.Errorf("hsperfdata: %d entries", n)
	}
	return order, off, n, nil
}

// perfEntry is one decoded entry: its name (up to its NUL), its type,
// its vector length and its data (from data_offset to the entry's end).
type perfEntry struct {
	name     []byte
	dataType byte
	vecLen   int
	data     []byte
	length   int
}

// errOutside: an entry's header does not fit in the bytes given.
var errOutside = errors.New("outside the file")

// decodePerfEntry decodes entry i at off, every offset and length checked
// against b.
func decodePerfEntry(b []byte, order binary.ByteOrder, off, i int) (perfEntry, error) {
	if off < 0 || off+perfEntryHeader > len(b) {
		return perfEntry{}, fmt.Errorf("hsperfdata: entry %d %w", i, errOutside)
	}
	e := b[off:]
	length := int(order.Uint32(e))
	nameOff := int(order.Uint32(e[4:]))
	vecLen := int(order.Uint32(e[8:]))
	dataOff := int(order.Uint32(e[16:]))
	if length < perfEntryHeader || length > len(e) || nameOff >= length || dataOff > length {
		if length > len(e) && length >= perfEntryHeader && nameOff < length && dataOff <= length {
			return perfEntry{}, fmt.Errorf("hsperfdata: entry %d %w", i, errOutside)
		}
		return perfEntry{}, fmt.Errorf("hsperfdata: entry %d is malformed", i)
	}
	entry := e[:length]
	name := entry[nameOff:]
	for j, c := range name {
		if c == 0 {
			name = name[:j]
			break
		}
	}
	return perfEntry{name: name, dataType: e[12], vecLen: vecLen, data: entry[dataOff:], length: length}, nil
}

// long is the entry's value when it is a scalar long.
func (e perfEntry) long(order binary.ByteOrder) (int64, bool) {
	if e.dataType != 'J' || e.vecLen != 0 || len(e.data) < 8 {
		return 0, false
	}
	return int64(order.Uint64(e.data)), true
}

// ParsePerfData decodes an hsperfdata image. Every offset and length is
// checked against the image: the file is the target's and may be hostile.
func ParsePerfData(b []byte) (*PerfData, error) {
	order, off, n, err := perfPrologue(b)
	if err != nil {
		return nil, err
	}
	pd := &PerfData{Strings: map[string]string{}, Longs: map[string]int64{}}
	for i := 0; i < n; i++ {
		e, err := decodePerfEntry(b, order, off, i)
		if err != nil {
			return nil, err
		}
		if e.dataType == 'B' && e.vecLen > 0 && e.vecLen <= maxPerfString && e.vecLen <= len(e.data) {
			pd.Strings[string(e.name)] = cstring(e.data[:e.vecLen])
		} else if v, ok := e.long(order); ok {
			pd.Longs[string(e.name)] = v
		}
		off += e.length
	}
	return pd, nil
}

// PerfDataLong finds the scalar counter name in the hsperfdata file r of
// size bytes, for callers that poll one counter (is the VM initialised
// yet?): it reads at most MaxPerfDataScan bytes in one read, looks at
// no more than maxPerfScanEntries entries, stops at the first entry of
// that name and builds nothing. found is false, with no error, when the
// counter is not among the entries looked at. A malformed prologue or
// entry within the bytes read is an error, as for ParsePerfData; the
// first entry in that file of the name is the one taken.
func PerfDataLong(r io.ReaderAt, size int64, name string) (v int64, found bool, err error) {
	truncated := size > MaxPerfDataScan
	b := make([]byte, min(max(size, 0), MaxPerfDataScan))
	m, err := r.ReadAt(b, 0)
	if m < len(b) && !errors.Is(err, io.EOF) {
		return 0, false, fmt.Errorf("hsperfdata: %w", err)
	}
	// A file shorter than it was is read as it is now.
	b = b[:m]
	order, off, n, err := perfPrologue(b)
	if err != nil {
		return 0, false, err
	}
	for i := 0; i < min(n, maxPerfScanEntries); i++ {
		e, err := decodePerfEntry(b, order, off, i)
		if err != nil {
			if truncated && errors.Is(err, errOutside) {
				return 0, false, nil // past the bytes read: not looked at
			}
			return 0, false, err
		}
		if string(e.name) == name {
			if v, ok := e.long(order); ok {
				return v, true, nil
			}
		}
		off += e.length
	}
	return 0, false, nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
