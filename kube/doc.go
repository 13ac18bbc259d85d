// Package kube reads pods from the Kubernetes API (with the pod's service
// account, or a kubeconfig's token or client certificate) or from a file
// of pod objects, and picks a pod's container for an attach.
//
// It is a few hundred lines over net/http rather than client-go: a node
// agent needs one field-selected list per sync and the CLI one GET, and
// client-go would multiply the binary's size (the numbers are in
// docs/kubernetes.md). Exec and auth-provider plugins in a kubeconfig are
// deliberately not run.
package kube
