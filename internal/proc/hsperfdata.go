package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
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
// Version 2.0 has been the format since JDK 6 and is still JDK 25's.
const (
	perfMagic        = 0xcafec0c0
	perfPrologueSize = 32
	perfEntryHeader  = 20
	maxPerfEntries   = 1 << 16
	maxPerfString    = 64 << 10
)

// ParsePerfData decodes an hsperfdata image. Every offset and length is
// checked against the image: the file is the target's and may be hostile.
func ParsePerfData(b []byte) (*PerfData, error) {
	if len(b) < perfPrologueSize {
		return nil, errors.New("hsperfdata: shorter than its prologue")
	}
	if binary.BigEndian.Uint32(b) != perfMagic {
		return nil, errors.New("hsperfdata: bad magic")
	}
	var order binary.ByteOrder = binary.BigEndian
	if b[4] == 1 {
		order = binary.LittleEndian
	}
	if b[5] != 2 {
		return nil, fmt.Errorf("hsperfdata: version %d.%d not supported", b[5], b[6])
	}
	off := int(order.Uint32(b[24:]))
	n := int(order.Uint32(b[28:]))
	if n > maxPerfEntries {
		return nil, fmt.Errorf("hsperfdata: %d entries", n)
	}
	pd := &PerfData{Strings: map[string]string{}, Longs: map[string]int64{}}
	for i := 0; i < n; i++ {
		if off < 0 || off+perfEntryHeader > len(b) {
			return nil, fmt.Errorf("hsperfdata: entry %d outside the file", i)
		}
		e := b[off:]
		length := int(order.Uint32(e))
		nameOff := int(order.Uint32(e[4:]))
		vecLen := int(order.Uint32(e[8:]))
		dataType := e[12]
		dataOff := int(order.Uint32(e[16:]))
		if length < perfEntryHeader || length > len(e) || nameOff >= length || dataOff > length {
			return nil, fmt.Errorf("hsperfdata: entry %d is malformed", i)
		}
		entry := e[:length]
		name := cstring(entry[nameOff:])
		switch {
		case dataType == 'B' && vecLen > 0 && vecLen <= maxPerfString && dataOff+vecLen <= length:
			pd.Strings[name] = cstring(entry[dataOff : dataOff+vecLen])
		case dataType == 'J' && vecLen == 0 && dataOff+8 <= length:
			pd.Longs[name] = int64(order.Uint64(entry[dataOff:]))
		}
		off += length
	}
	return pd, nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
