// Package jfrpprof converts a JFR recording — async-profiler's `-o jfr`
// output, or the JDK's own Flight Recorder file — into gzipped pprof
// profiles (profile.proto) that `go tool pprof` and every pprof consumer
// read. The JFR is decoded by github.com/grafana/jfr-parser (the parser
// Pyroscope's ingest uses) and the result validated and written by
// github.com/google/pprof/profile; nothing here parses JFR or encodes
// protobuf by hand. Fold turns the same parsed profile into folded
// stacks for async-profiler's other outputs — collapsed, flat and an
// HTML flame graph (drawn by package flamegraph) — whose headings say
// which engine made the recording, since the JDK's Flight Recorder sees
// Java frames only. It lives apart from the attach packages so that
// library users who never convert do not link either dependency.
//
// Convert runs in the caller's process and trusts its input's shape: a
// damaged recording can make the parser run forever or ask for more
// memory than there is, a fatal error no recover catches. A recording
// that came back from a target is untrusted: convert it with
// jfrpprof/bounded, which runs cmd/safeattach-pprof as a child under
// limits of size, time, memory and output.
package jfrpprof
