// Package jfrpprof converts a JFR recording — async-profiler's `-o jfr`
// output, or the JDK's own Flight Recorder file — into gzipped pprof
// profiles (profile.proto) that `go tool pprof` and every pprof consumer
// read. The JFR is decoded by github.com/grafana/jfr-parser (the parser
// Pyroscope's ingest uses) and the result validated and written by
// github.com/google/pprof/profile; nothing here parses JFR or encodes
// protobuf by hand. It lives apart from the attach packages so that
// library users who never convert do not link either dependency.
package jfrpprof
