// Package elfx probes ELF files for the few facts safeattach needs:
// identity (machine, class, libc), SONAME and DT_NEEDED, defined and
// imported dynamic symbols, short strings in read-only data, and the value
// of a char* variable inside a live process.
//
// ELF files mapped by a target are hostile input. Every entry point
// recovers panics from debug/elf into errors, and every size taken from
// the file (sections, symbol tables, strings) is capped before anything is
// allocated for it. Results are cached by file identity (device, inode,
// size, mtime), so a host with 200 JVMs parses its one libjvm.so once.
package elfx
