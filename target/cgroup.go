package target

import (
	"regexp"
	"strings"
	"sync"
)

// Where runtimes put containers, in one cgroup path (v1: one line per
// hierarchy; v2: the single "0::" line):
//
//	cgroupfs driver   /kubepods[/<qos>]/pod<uid>/<64 hex>
//	systemd driver    /kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid, - as _>.slice/<runtime>-<64 hex>.scope
//	                  runtime: cri-containerd, crio, docker, libpod (podman)
//	docker alone      /docker/<64 hex>  or  /system.slice/docker-<64 hex>.scope
//
// Guaranteed pods have no <qos> level. A pod's pause container and every
// container of the pod share the pod<uid> level.
// Compiled on first use: every safeattach invocation links this package,
// few use it.
var (
	podSegment = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?$`)
	})
	containerSegment = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^(?:(cri-containerd|crio|docker|libpod)-)?([0-9a-f]{64})(?:\.scope)?$`)
	})
)

// Location is what a process's cgroup says about where it runs.
type Location struct {
	// ContainerID is the 64-hex container ID, Runtime the runtime that
	// named it in the path ("cri-containerd", "crio", "docker", "libpod",
	// or "" for the cgroupfs driver's bare ID).
	ContainerID string
	Runtime     string
	// PodUID is the Kubernetes pod UID (with dashes), if any.
	PodUID string
}

// ParseCgroup reads /proc/<pid>/cgroup content. The first line that names
// a container decides; a pod UID is taken from the same path.
func ParseCgroup(data string) Location {
	var loc Location
	for _, line := range strings.Split(data, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		l := parsePath(parts[2])
		if l.ContainerID != "" {
			return l
		}
		if loc.PodUID == "" {
			loc.PodUID = l.PodUID
		}
	}
	return loc
}

func parsePath(path string) Location {
	var loc Location
	for _, seg := range strings.Split(path, "/") {
		if m := podSegment().FindStringSubmatch(seg); m != nil {
			loc.PodUID = strings.ReplaceAll(m[1], "_", "-")
			continue
		}
		if m := containerSegment().FindStringSubmatch(seg); m != nil {
			loc.Runtime, loc.ContainerID = m[1], m[2]
		}
	}
	return loc
}

// NormalizeContainerID strips a runtime scheme (containerd://, cri-o://,
// docker://) and lower-cases the ID; it may be a prefix of the full ID.
func NormalizeContainerID(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		id = id[i+3:]
	}
	return strings.ToLower(strings.TrimSpace(id))
}
