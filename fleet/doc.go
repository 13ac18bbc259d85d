// Package fleet is the node agent's core: it profiles the JVMs of the pods
// on one node that opt in by annotation, continuously, and pushes every
// finished window to a continuous-profiling backend. The node agent's
// binary is safeattach-daemon (cmd/safeattach-daemon).
//
// A Sync runs at each change the pod source announces (the watch of
// package kube/podwatch) and on a timer. It reads the node's pods (from
// the watch's cache, or a file of pod objects), resolves each annotated
// container to its JVM through its cgroup (package target), judges it
// with the rules, and keeps one profiling.Session per JVM that rotates a window every period. A refusal is
// logged and counted once and not retried until the JVM changes (a new
// process in the container); the rules are fixed for the node agent's life, so
// a rules change is a restart, which forgets every refusal. A pod that
// leaves, or stops opting in, has its profiler stopped.
//
// On demand, the node agent profiles any pod of its node for a caller
// the API server vouches for, as the kubelet's API does (OnDemandHandler):
// the caller's bearer token is checked by TokenReview and its permission
// (create on profiles.safeattach.io named as the pod, in the pod's
// namespace) by SubjectAccessReview (DelegatingAuth), never taken from a
// header; the profiles are bounded in duration, output and number (per
// node and per user), one per JVM, and end when the caller goes away.
//
// Metrics are registered with the Prometheus client library (with the
// process and Go collectors) and served on /metrics.
package fleet
