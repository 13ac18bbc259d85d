// Package target turns what a user names — a container ID
// (containerd://…, cri-o://…, docker://…, bare 64-hex, or a unique
// prefix) or a Kubernetes pod UID — into host pids, by reading every
// /proc/<pid>/cgroup: the layouts kubelet and the common runtimes create
// under cgroup v1 and v2, with the cgroupfs and the systemd drivers, are
// parsed in one place (cgroup.go). It reads only /proc, through a
// procfs root so that tests run on fixture trees; the Kubernetes API is
// not used here (a pod named by namespace/name needs a client that
// resolves it to its UID and container IDs first).
package target
