package testenv

import (
	"encoding/binary"
	"fmt"
)

// HostilePerfData is an hsperfdata image (format 2.0, little-endian, as
// HotSpot writes it on x86) of entries scalar counters, the one at index
// endAt being sun.rt.createVmEndTime = 0 ("not initialised"; endAt < 0
// leaves it out), the others sun.rt.hostile.<i>: what a pod's user can
// put in place of its JVM's file. 65,535 entries make 3.6 MB.
func HostilePerfData(entries, endAt int) []byte {
	const entryLen = 56 // header 20, name up to 27 with its NUL, data at 48
	b := make([]byte, 32, 32+entries*entryLen)
	binary.BigEndian.PutUint32(b, 0xcafec0c0)
	b[4], b[5], b[6], b[7] = 1, 2, 0, 1 // little-endian, 2.0, accessible
	le := binary.LittleEndian
	le.PutUint32(b[8:], uint32(32+entries*entryLen)) // used
	le.PutUint32(b[24:], 32)                         // entry_offset
	le.PutUint32(b[28:], uint32(entries))            // num_entries
	for i := range entries {
		name := fmt.Sprintf("sun.rt.hostile.%d", i)
		if i == endAt {
			name = "sun.rt.createVmEndTime"
		}
		e := make([]byte, entryLen)
		le.PutUint32(e, entryLen)
		le.PutUint32(e[4:], 20) // name_offset
		le.PutUint32(e[8:], 0)  // vector_length: a scalar
		e[12], e[13], e[14], e[15] = 'J', 0, 1, 3
		le.PutUint32(e[16:], 48) // data_offset; the value stays 0
		copy(e[20:47], name)
		b = append(b, e...)
	}
	return b
}
