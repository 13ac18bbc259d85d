package budget

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// noLimit is what cgroup v1 reports for an unlimited group (a page
// count's worth of bits); anything at or above 2^60 is treated as none.
const noLimit = 1 << 60

// ErrNoLimit: the process has no memory limit that could be read.
var ErrNoLimit = errors.New("no memory limit")

// Limit returns this process's memory limit from its cgroup: the
// smallest memory.max from its cgroup v2 group up to the root, or cgroup
// v1's hierarchical_memory_limit. sysRoot is where /sys/fs/cgroup and
// /proc/self/cgroup and mountinfo are read ("" is "/"), for tests.
//
// The group's directory is found through the hierarchy's mount in
// /proc/self/mountinfo: in a container without a cgroup namespace (every
// container on cgroup v1), /proc/self/cgroup names the group by its
// path from the host's root (/kubepods/burstable/pod…/<id>) while the
// runtime mounts that group itself at /sys/fs/cgroup/memory.
func Limit(sysRoot string) (int64, error) {
	data, err := os.ReadFile(filepath.Join(sysRoot, "/proc/self/cgroup"))
	if err != nil {
		return 0, err
	}
	var v1, v2 string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case hasController(parts[1], "memory"):
			v1 = parts[2]
		}
	}
	cg := filepath.Join(sysRoot, "/sys/fs/cgroup")
	mounts := cgroupMounts(sysRoot)
	if v1 != "" {
		group := filepath.Clean("/" + v1)
		for _, m := range mounts {
			if m.v1Memory {
				if rel, ok := m.relative(group); ok {
					if l, err := v1Limit(filepath.Join(sysRoot, m.point, rel)); err == nil {
						return l, nil
					}
				}
			}
		}
		if l, err := v1Limit(filepath.Join(cg, "memory", group)); err == nil {
			return l, nil
		}
	}
	if v2 != "" {
		group := filepath.Clean("/" + v2)
		for _, m := range mounts {
			if m.v2 {
				if rel, ok := m.relative(group); ok {
					if l, err := v2Limit(filepath.Join(sysRoot, m.point), rel); err == nil {
						return l, nil
					}
				}
			}
		}
		if l, err := v2Limit(cg, group); err == nil {
			return l, nil
		}
	}
	return 0, ErrNoLimit
}

// cgroupMount is a cgroup hierarchy's mount: the group it shows (root)
// and where.
type cgroupMount struct {
	root, point  string
	v1Memory, v2 bool
}

// relative is group's path under the mount, when the mount shows it.
func (m cgroupMount) relative(group string) (string, bool) {
	if m.root == "/" {
		return group, true
	}
	if group == m.root {
		return "/", true
	}
	if rest, ok := strings.CutPrefix(group, m.root+"/"); ok {
		return "/" + rest, true
	}
	return "", false
}

// cgroupMounts are the memory controller's v1 mounts and the v2 mounts
// in /proc/self/mountinfo (none when it cannot be read): "ID parent
// major:minor root point options [optional…] - fstype source super".
func cgroupMounts(sysRoot string) []cgroupMount {
	data, err := os.ReadFile(filepath.Join(sysRoot, "/proc/self/mountinfo"))
	if err != nil {
		return nil
	}
	var out []cgroupMount
	for line := range strings.Lines(string(data)) {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 {
			continue
		}
		m := cgroupMount{root: filepath.Clean(f[3]), point: filepath.Clean(f[4])}
		switch g[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			m.v1Memory = len(g) >= 3 && hasController(g[2], "memory")
		}
		if m.v1Memory || m.v2 {
			out = append(out, m)
		}
	}
	return out
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// v1Limit reads memory.stat's hierarchical_memory_limit (the effective
// limit, ancestors included), else memory.limit_in_bytes.
func v1Limit(dir string) (int64, error) {
	if data, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "hierarchical_memory_limit "); ok {
				return parseLimit(v)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "memory.limit_in_bytes"))
	if err != nil {
		return 0, err
	}
	return parseLimit(strings.TrimSpace(string(data)))
}

// v2Limit walks from the group up to the root of the mounted hierarchy,
// keeping the smallest memory.max.
func v2Limit(mount, group string) (int64, error) {
	best := int64(0)
	for dir := group; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(mount, dir, "memory.max")); err == nil {
			if l, err := parseLimit(strings.TrimSpace(string(data))); err == nil && (best == 0 || l < best) {
				best = l
			}
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	if best == 0 {
		return 0, ErrNoLimit
	}
	return best, nil
}

func parseLimit(s string) (int64, error) {
	if s == "max" {
		return 0, ErrNoLimit
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v >= noLimit {
		return 0, ErrNoLimit
	}
	return int64(v), nil
}
