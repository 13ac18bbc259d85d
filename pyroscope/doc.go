// Package pyroscope sends finished profile windows to a Pyroscope server
// through its ingest API, the way its own Java integration does:
//
//	POST /ingest?name=<app>{k=v,...}&from=<unix s>&until=<unix s>&format=jfr|folded&sampleRate=<hz>&spyName=<name>
//
// with the profile as the raw body, an optional X-Scope-OrgID tenant
// header and basic or bearer authentication. A Pusher never blocks the
// profiler: Enqueue puts a window in a bounded queue (the oldest window
// is dropped, and counted, when the backend has been down for long), and
// Run sends them, retrying 429, 5xx and network errors with capped
// exponential backoff (as pyroscope-java does: 1 s doubling to 30 s).
// Other 4xx answers (400 bad metadata, 413 too large, 422 not ingested)
// are not retried. Secrets are never logged.
package pyroscope
