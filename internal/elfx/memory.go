package elfx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNullPointer is returned when the pointer variable holds NULL.
var ErrNullPointer = errors.New("pointer is NULL")

// ReadPointedString reads a char* variable at addr in the address space of
// the process whose /proc directory is procDir, then the NUL-terminated
// string it points to, at most max bytes. It needs ptrace-read access
// (same user without dumpable restrictions, or CAP_SYS_PTRACE); it does not
// stop the process. A string longer than max is an error, not a
// shortened value.
func ReadPointedString(procDir string, addr uint64, ptrSize int, max int) (string, error) {
	f, err := os.Open(filepath.Join(procDir, "mem"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var buf [8]byte
	if ptrSize != 4 && ptrSize != 8 {
		return "", fmt.Errorf("pointer size %d", ptrSize)
	}
	if _, err := f.ReadAt(buf[:ptrSize], int64(addr)); err != nil {
		return "", fmt.Errorf("read pointer at %#x: %w", addr, err)
	}
	var ptr uint64
	if ptrSize == 8 {
		ptr = binary.LittleEndian.Uint64(buf[:])
	} else {
		ptr = uint64(binary.LittleEndian.Uint32(buf[:4]))
	}
	if ptr == 0 {
		return "", ErrNullPointer
	}
	return ReadCString(f, ptr, max)
}

// ReadCString reads a NUL-terminated string at addr from an open
// /proc/<pid>/mem, in small chunks so an unmapped page after a short
// string does not fail the read.
func ReadCString(mem *os.File, addr uint64, max int) (string, error) {
	var out []byte
	chunk := make([]byte, 256)
	for len(out) <= max {
		// Never read across a page boundary in one go: the next page may be
		// unmapped even though the string ends before it.
		n := 4096 - int(addr%4096)
		if n > len(chunk) {
			n = len(chunk)
		}
		got, err := mem.ReadAt(chunk[:n], int64(addr))
		if got == 0 && err != nil {
			return "", fmt.Errorf("read string at %#x: %w", addr, err)
		}
		if i := bytes.IndexByte(chunk[:got], 0); i >= 0 {
			out = append(out, chunk[:i]...)
			if len(out) > max {
				break
			}
			return string(out), nil
		}
		out = append(out, chunk[:got]...)
		addr += uint64(got)
	}
	return "", fmt.Errorf("string at %#x longer than %d bytes", addr, max)
}
