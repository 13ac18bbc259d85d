// Package proc reads the few /proc files safeattach needs, one small parser
// per file, rooted in an FS value so that tests run on fixture trees as well
// as on the live /proc.
//
// Every parser is written for hostile input: the contents of /proc/<pid>/
// environ and cmdline are chosen by the target, and path names in maps may
// contain anything but a newline. Parsers never truncate silently, never
// panic, and always report the scanner's error. Sizes are capped; a file
// over its cap is an error, not a shortened result.
package proc
