// Package companion finds safeattach's helper programs — the pprof
// converter, the pod: lookup helper — beside the running program, else
// on PATH. They are separate binaries so that their heavy dependencies
// (jfr-parser, client-go) stay out of the CLI's start-up.
package companion
