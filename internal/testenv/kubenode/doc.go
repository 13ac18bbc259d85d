// Package kubenode gives tests the real node that scripts/kube-node.sh
// starts beside the API server (a kubelet over containerd and runc): images
// built from this machine's files and imported into containerd (no registry
// is reachable), pods bound to the node and waited on until they run, and
// the host pids of their containers.
package kubenode
