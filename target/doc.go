// Package target turns what a user names into the host pid of one JVM:
// a pid, a container ID (containerd://…, cri-o://…, docker://…, bare
// 64-hex, or a unique prefix), a Kubernetes pod UID, a pod by
// namespace/name, jps or an application's name (Parse, Resolve: the one
// grammar the CLI, the node agent and library users share). Containers and
// pods are found by reading every /proc/<pid>/cgroup: the layouts kubelet
// and the common runtimes create under cgroup v1 and v2, with the
// cgroupfs and the systemd drivers, are parsed in one place (cgroup.go).
// It reads only /proc, through a procfs root so that tests run on
// fixture trees; a pod named by namespace/name needs a PodLookup (the
// Kubernetes API lives in package kube, linked only into the binaries
// that need it).
package target
