// Package realnode holds tests only: safeattach's programs against pods
// that a real kubelet runs in containerd and runc (the node of
// scripts/kube-node.sh, started by make test beside the API server), where
// the runtime, not the tests, makes the root filesystems, cgroups,
// container IDs, seccomp filters and user namespaces that the tests of
// the other packages model by hand.
//
// The tests that run a node agent (DaemonSet, port-forward, helm install)
// run one after another: an agent profiles every annotated pod on the
// node, another test's too. The others run in parallel once those are
// done, each in namespaces of its own.
package realnode
