// Package preflight inspects a target process and an agent library from the
// outside and describes them as a Report: plain, JSON-serialisable data with
// no live handles.
//
// Inspection is read-only. It reads /proc/<pid>/{status,stat,maps,environ,
// cmdline,ns/*}, the ELF files the target maps (through
// /proc/<pid>/map_files or /proc/<pid>/root, identity-checked), at most one
// pointer-sized variable and the string it points to through
// /proc/<pid>/mem, and a few files under /proc/<pid>/root. It sends no
// signal, opens no socket and creates no file.
//
// Every conclusion carries its evidence, and a fact that cannot be
// determined is recorded as unknown with the reason: one unreadable file
// never fails the whole Report. Only a target that does not exist, or that
// cannot be read at all, is an error.
package preflight
