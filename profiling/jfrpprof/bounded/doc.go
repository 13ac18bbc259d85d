// Package bounded converts a JFR recording to pprof — or to collapsed
// stacks, a flat table or an HTML flame graph — in a child process
// (cmd/safeattach-pprof) under limits of input size, time, memory and
// output, and says why when the conversion fails. A recording comes back
// from a target and is the target's to shape: fed to the JFR parser in
// the caller's process, some recordings never finish, grow memory without
// end, or ask for 128 GiB at once — a fatal error no recover catches.
// In a child, each of those costs the child.
//
// It is light on purpose (no JFR or protobuf library): the safeattach CLI
// imports it and starts the converter only for the outputs a JFR
// recording must be converted to.
package bounded
