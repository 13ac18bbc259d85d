// Package kube is the part of Kubernetes the agent needs without a
// client library: the Pod as the agent sees it (its safeattach
// annotations and running containers), a PodSource and Notifier for
// where pods come from, a pod list decoded as it is read from a file
// (bounded: only what Pod holds is kept), and the choice of a pod's
// container for an attach.
//
// The Kubernetes API itself is spoken by package kube/podwatch with
// client-go, linked only into the binaries that talk to an API server
// (safeattach-daemon, safeattach-kube), never into safeattach.
package kube
