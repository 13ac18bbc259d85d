// Package testenv holds test-only helpers: finding JDKs and Debian's
// allocator libraries, compiling the C test agents and the Java target
// program, and starting target processes that the calling test always
// kills.
//
// Missing prerequisites skip a test on a developer's machine and fail it in
// CI (CI=true), so that a skip can never hide a regression there.
package testenv
